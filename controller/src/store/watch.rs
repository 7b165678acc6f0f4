//! Watch history shared by the store backends.
//!
//! Every committed change goes into one bounded, revision-ordered history
//! (a ring capped by bytes and by count). A [`Watcher`] is a cursor into it
//! with a key prefix: it reads what is new since its revision without any
//! per-watcher queue, so a slow watcher costs nothing but its cursor, and
//! memory stays bounded however many watch. A cursor the history has moved
//! past gets [`Compacted`]; its owner lists again and watches from the
//! listed revision, as etcd clients do after a compaction.

use super::{KeyValue, Revision};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

/// History kept for watchers. Sized so the controller's own cache, which
/// reads every change within milliseconds, never falls off it even during
/// a burst of 10,000 writes a second, while a fleet-sized burst cannot grow
/// the controller without bound.
pub const HISTORY_BYTES: usize = 64 << 20;
pub const HISTORY_EVENTS: usize = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEventKind {
    Put,
    Delete,
}

/// One change. For a delete, `kv.mod_revision` is the revision of the
/// delete and `kv.value` the last value the key held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: WatchEventKind,
    pub kv: KeyValue,
}

impl WatchEvent {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }

    fn bytes(&self) -> usize {
        self.kv.key.len() + self.kv.value.len() + 64
    }
}

/// The history moved past the watcher's revision: list again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("watch history compacted: changes before revision {oldest} are gone; list again")]
pub struct Compacted {
    /// The oldest revision a new watch can start from.
    pub oldest: Revision,
}

#[derive(Debug)]
struct History {
    events: VecDeque<WatchEvent>,
    bytes: usize,
    /// Every event with a revision >= `first` is still held.
    first: Revision,
    /// Latest revision published.
    last: Revision,
    max_bytes: usize,
    max_events: usize,
}

/// The history and the signal watchers wait on.
#[derive(Debug)]
pub struct Hub {
    history: Mutex<History>,
    latest: tokio::sync::watch::Sender<Revision>,
}

impl Hub {
    /// A hub for a store whose latest revision is `revision`.
    pub fn new(revision: Revision) -> Arc<Hub> {
        Hub::with_limits(revision, HISTORY_BYTES, HISTORY_EVENTS)
    }

    pub fn with_limits(revision: Revision, max_bytes: usize, max_events: usize) -> Arc<Hub> {
        Arc::new(Hub {
            history: Mutex::new(History {
                events: VecDeque::new(),
                bytes: 0,
                first: revision + 1,
                last: revision,
                max_bytes,
                max_events,
            }),
            latest: tokio::sync::watch::Sender::new(revision),
        })
    }

    fn lock(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends the changes of committed revisions (in revision order; the
    /// caller holds its write lock so publishes never interleave).
    pub fn publish(&self, events: Vec<WatchEvent>, revision: Revision) {
        {
            let mut h = self.lock();
            for e in events {
                h.bytes += e.bytes();
                h.events.push_back(e);
            }
            h.last = h.last.max(revision);
            while h.bytes > h.max_bytes || h.events.len() > h.max_events {
                let Some(old) = h.events.pop_front() else {
                    break;
                };
                h.bytes -= old.bytes();
                let rev = old.revision();
                // Never keep half a revision.
                while h.events.front().is_some_and(|e| e.revision() == rev) {
                    if let Some(e) = h.events.pop_front() {
                        h.bytes -= e.bytes();
                    }
                }
                h.first = rev + 1;
            }
        }
        self.latest.send_replace(revision);
    }

    pub fn watch(self: &Arc<Self>, prefix: &str, from: Revision) -> Watcher {
        Watcher {
            hub: self.clone(),
            prefix: prefix.to_string(),
            next: from.max(1),
            latest: self.latest.subscribe(),
        }
    }
}

/// A cursor over the history for keys under a prefix.
#[derive(Debug)]
pub struct Watcher {
    hub: Arc<Hub>,
    prefix: String,
    next: Revision,
    latest: tokio::sync::watch::Receiver<Revision>,
}

impl Watcher {
    /// The next revision this watcher will deliver.
    pub fn next_revision(&self) -> Revision {
        self.next
    }

    /// Changes since the last poll, whole revisions at a time, at least one
    /// revision and about `max` events at most.
    pub fn poll(&mut self, max: usize) -> Result<Vec<WatchEvent>, Compacted> {
        let h = self.hub.lock();
        if self.next > h.last {
            return Ok(Vec::new());
        }
        if self.next < h.first {
            return Err(Compacted { oldest: h.first });
        }
        let start = h.events.partition_point(|e| e.revision() < self.next);
        let mut out = Vec::new();
        let mut upto = h.last;
        let mut i = start;
        while i < h.events.len() {
            let rev = h.events[i].revision();
            if out.len() >= max.max(1) {
                upto = rev - 1;
                break;
            }
            while i < h.events.len() && h.events[i].revision() == rev {
                let e = &h.events[i];
                if e.kv.key.starts_with(&self.prefix) {
                    out.push(e.clone());
                }
                i += 1;
            }
        }
        self.next = upto + 1;
        Ok(out)
    }

    /// Whether changes past this watcher's cursor were committed.
    pub fn has_news(&self) -> bool {
        *self.latest.borrow() >= self.next
    }

    /// Waits until a revision at or after this watcher's cursor is
    /// committed (returns at once if one already is).
    pub async fn changed(&mut self) {
        loop {
            if *self.latest.borrow_and_update() >= self.next {
                return;
            }
            if self.latest.changed().await.is_err() {
                // The store is gone; nothing will ever come.
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, rev: Revision) -> WatchEvent {
        WatchEvent {
            kind: WatchEventKind::Put,
            kv: KeyValue {
                key: key.into(),
                value: Arc::from(&b"v"[..]),
                create_revision: rev,
                mod_revision: rev,
                version: 1,
            },
        }
    }

    #[test]
    fn watchers_see_each_change_once_in_order_and_only_their_prefix() {
        let hub = Hub::new(0);
        let mut a = hub.watch("/a/", 1);
        let mut late = hub.watch("/a/", 3);
        hub.publish(vec![put("/a/1", 1), put("/b/1", 1)], 1);
        hub.publish(vec![put("/a/2", 2)], 2);
        hub.publish(vec![put("/a/3", 3), put("/a/4", 3)], 3);
        let got: Vec<String> = a.poll(100).unwrap().into_iter().map(|e| e.kv.key).collect();
        assert_eq!(got, ["/a/1", "/a/2", "/a/3", "/a/4"]);
        assert!(a.poll(100).unwrap().is_empty());
        let got: Vec<String> = late
            .poll(100)
            .unwrap()
            .into_iter()
            .map(|e| e.kv.key)
            .collect();
        assert_eq!(got, ["/a/3", "/a/4"]);
        // Small pages never split a revision.
        let mut paged = hub.watch("/a/", 1);
        let mut all = Vec::new();
        loop {
            let page = paged.poll(1).unwrap();
            if page.is_empty() {
                break;
            }
            all.extend(page.into_iter().map(|e| e.kv.key));
        }
        assert_eq!(all, ["/a/1", "/a/2", "/a/3", "/a/4"]);
    }

    #[test]
    fn a_watcher_behind_the_history_is_told_to_relist() {
        let hub = Hub::with_limits(0, usize::MAX, 2);
        let mut w = hub.watch("/", 1);
        for rev in 1..=5 {
            hub.publish(vec![put("/k", rev)], rev);
        }
        let e = w.poll(10).unwrap_err();
        assert_eq!(e.oldest, 4);
        let mut w = hub.watch("/", e.oldest);
        assert_eq!(w.poll(10).unwrap().len(), 2);
        // Watching from before a restart (the hub starts at the store's
        // revision) is compacted too.
        let restarted = Hub::new(10);
        assert_eq!(restarted.watch("/", 5).poll(10).unwrap_err().oldest, 11);
        assert!(restarted.watch("/", 11).poll(10).unwrap().is_empty());
    }

    #[tokio::test]
    async fn changed_wakes_on_a_new_revision() {
        let hub = Hub::new(0);
        let mut w = hub.watch("/", 1);
        assert!(!w.has_news());
        let h2 = hub.clone();
        let t = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            h2.publish(vec![put("/x", 1)], 1);
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), w.changed())
            .await
            .unwrap();
        assert!(w.has_news());
        assert_eq!(w.poll(10).unwrap().len(), 1);
        t.await.unwrap();
    }
}
