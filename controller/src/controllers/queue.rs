//! A de-duplicating work queue with delayed adds and per-key back-off, as
//! client-go's rate-limited work queue: a key queued twice is processed
//! once, a key that failed waits 100 ms, 200 ms, ... up to a minute before
//! its next try, and a key can ask to be looked at again at a given time.

use crate::api::Time;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

/// First retry delay after a failed reconcile (client-go uses 5 ms; a
/// conflict here means another write landed, so a little longer is fine).
pub const BASE_BACKOFF: Duration = Duration::from_millis(100);
/// Longest retry delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct WorkQueue {
    ready: VecDeque<String>,
    queued: HashSet<String>,
    /// (due, key), with the due time of each delayed key.
    delayed: BTreeSet<(Time, String)>,
    due: HashMap<String, Time>,
    failures: HashMap<String, u32>,
}

impl WorkQueue {
    pub fn new() -> WorkQueue {
        WorkQueue::default()
    }

    /// Queues `key` now (no-op if it is already queued).
    pub fn add(&mut self, key: &str) {
        if self.queued.insert(key.to_string()) {
            self.ready.push_back(key.to_string());
        }
    }

    /// Queues `key` at `at` (keeps the earlier time if it is already delayed).
    pub fn add_at(&mut self, key: &str, at: Time) {
        if let Some(old) = self.due.get(key) {
            if *old <= at {
                return;
            }
            self.delayed.remove(&(*old, key.to_string()));
        }
        self.due.insert(key.to_string(), at);
        self.delayed.insert((at, key.to_string()));
    }

    /// Queues `key` after its back-off, which doubles with each failure.
    pub fn add_failed(&mut self, key: &str, now: Time) -> Duration {
        let n = self.failures.entry(key.to_string()).or_insert(0);
        let delay = BASE_BACKOFF
            .saturating_mul(1u32 << (*n).min(20))
            .min(MAX_BACKOFF);
        *n += 1;
        self.add_at(key, now.plus(delay));
        delay
    }

    /// The key succeeded: its back-off starts over.
    pub fn forget(&mut self, key: &str) {
        self.failures.remove(key);
    }

    /// Moves delayed keys whose time has come to the ready queue.
    pub fn promote(&mut self, now: Time) {
        while let Some((at, _)) = self.delayed.first() {
            if *at > now {
                break;
            }
            if let Some((_, key)) = self.delayed.pop_first() {
                self.due.remove(&key);
                self.add(&key);
            }
        }
    }

    /// The next ready key.
    pub fn pop(&mut self) -> Option<String> {
        let k = self.ready.pop_front()?;
        self.queued.remove(&k);
        Some(k)
    }

    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// When the earliest delayed key comes due.
    pub fn next_due(&self) -> Option<Time> {
        self.delayed.first().map(|(t, _)| *t)
    }

    pub fn is_idle(&self) -> bool {
        self.ready.is_empty() && self.delayed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedups_delays_and_backs_off() {
        let mut q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.pop().as_deref(), Some("a"));
        assert_eq!(q.pop().as_deref(), Some("b"));
        assert_eq!(q.pop(), None);
        // Back-off doubles and resets on success.
        assert_eq!(q.add_failed("a", Time(0)), Duration::from_millis(100));
        assert_eq!(q.next_due(), Some(Time(100)));
        q.promote(Time(99));
        assert_eq!(q.pop(), None);
        q.promote(Time(100));
        assert_eq!(q.pop().as_deref(), Some("a"));
        assert_eq!(q.add_failed("a", Time(100)), Duration::from_millis(200));
        q.forget("a");
        q.promote(Time(300));
        q.pop();
        assert_eq!(q.add_failed("a", Time(300)), Duration::from_millis(100));
        // The earlier of two delays wins.
        q.add_at("c", Time(1000));
        q.add_at("c", Time(500));
        q.add_at("c", Time(2000));
        q.promote(Time(400));
        q.promote(Time(500));
        let mut got = Vec::new();
        while let Some(k) = q.pop() {
            got.push(k);
        }
        assert_eq!(got, ["a", "c"]);
        let mut last = Duration::ZERO;
        for _ in 0..40 {
            last = q.add_failed("x", Time(0));
        }
        assert_eq!(last, MAX_BACKOFF);
    }
}
