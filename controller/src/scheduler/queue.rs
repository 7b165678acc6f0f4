//! The scheduling queue, after Kubernetes' three queues:
//!
//! - **active**: pods to try now, highest priority first, then oldest;
//! - **backoff**: pods that failed recently and wait out their back-off
//!   (1 s doubling to 10 s per failed attempt, Kubernetes' defaults);
//! - **unschedulable**: pods that fit nowhere, parked until a cluster event
//!   that could help them ([`Queue::on_events`]: a node added or readied, a
//!   pod gone, ...), or until they have waited
//!   [`MAX_IN_UNSCHEDULABLE`] (Kubernetes' `podMaxInUnschedulablePodsDuration`),
//!   whichever comes first. No timer rescans them at a high rate.
//!
//! Heaps hold (order, sequence, key); an entry whose sequence no longer
//! matches the pod's is stale and skipped when it surfaces, so moving a pod
//! never searches a heap.

use super::snapshot::Events;
use crate::api::{Pod, Time};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// First back-off after a failed attempt (Kubernetes' `podInitialBackoffSeconds`).
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest back-off (Kubernetes' `podMaxBackoffSeconds`).
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longest a pod stays parked without a helpful event (Kubernetes'
/// `podMaxInUnschedulablePodsDuration`).
pub const MAX_IN_UNSCHEDULABLE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Active,
    Backoff,
    Unschedulable,
    /// Decided; the binding is being written.
    InFlight,
}

/// A queued pod and what the scheduler keeps with it.
#[derive(Debug)]
pub struct Entry<T> {
    pub pod: Arc<Pod>,
    pub priority: i32,
    pub created: Time,
    pub attempts: u32,
    pub state: State,
    /// Events that could help it (when parked).
    pub interest: Events,
    pub backoff_until: Time,
    seq: u64,
    pub data: T,
}

/// Back-off after `attempts` failed attempts.
pub fn backoff(attempts: u32) -> Duration {
    let mut d = INITIAL_BACKOFF;
    for _ in 1..attempts {
        d = d.saturating_mul(2);
        if d >= MAX_BACKOFF {
            return MAX_BACKOFF;
        }
    }
    d.min(MAX_BACKOFF)
}

type ActiveKey = (i32, Reverse<Time>, Reverse<u64>);

/// The queue.
#[derive(Debug)]
pub struct Queue<T> {
    entries: HashMap<Arc<str>, Entry<T>>,
    active: BinaryHeap<(ActiveKey, Arc<str>)>,
    backoff: BinaryHeap<Reverse<(Time, u64, Arc<str>)>>,
    parked: BinaryHeap<Reverse<(Time, u64, Arc<str>)>>,
    next_seq: u64,
    active_len: usize,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            entries: HashMap::new(),
            active: BinaryHeap::new(),
            backoff: BinaryHeap::new(),
            parked: BinaryHeap::new(),
            next_seq: 0,
            active_len: 0,
        }
    }
}

impl<T> Queue<T> {
    pub fn get(&self, key: &str) -> Option<&Entry<T>> {
        self.entries.get(key)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Entry<T>> {
        self.entries.get_mut(key)
    }

    pub fn key(&self, key: &str) -> Option<Arc<str>> {
        self.entries.get_key_value(key).map(|(k, _)| k.clone())
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Pods waiting (not yet decided).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn active_len(&self) -> usize {
        self.active_len
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Entry<T>)> {
        self.entries.iter()
    }

    fn set_state(&mut self, key: &Arc<str>, state: State, now: Time) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        if e.state == State::Active {
            self.active_len -= 1;
        }
        e.state = state;
        e.seq = seq;
        match state {
            State::Active => {
                self.active_len += 1;
                self.active
                    .push(((e.priority, Reverse(e.created), Reverse(seq)), key.clone()));
            }
            State::Backoff => self
                .backoff
                .push(Reverse((e.backoff_until, seq, key.clone()))),
            State::Unschedulable => {
                self.parked
                    .push(Reverse((now.plus(MAX_IN_UNSCHEDULABLE), seq, key.clone())))
            }
            State::InFlight => {}
        }
        self.prune();
    }

    /// Drops stale heap tops, so [`Queue::next_due`] names a real deadline.
    fn prune(&mut self) {
        let live = |entries: &HashMap<Arc<str>, Entry<T>>, seq: u64, key: &Arc<str>, st: State| {
            entries
                .get(key)
                .is_some_and(|e| e.seq == seq && e.state == st)
        };
        while let Some(Reverse((_, seq, key))) = self.backoff.peek() {
            if live(&self.entries, *seq, key, State::Backoff) {
                break;
            }
            self.backoff.pop();
        }
        while let Some(Reverse((_, seq, key))) = self.parked.peek() {
            if live(&self.entries, *seq, key, State::Unschedulable) {
                break;
            }
            self.parked.pop();
        }
    }

    /// A new pod to place: active at once.
    pub fn add(&mut self, key: Arc<str>, pod: Arc<Pod>, data: T, now: Time) {
        if let Some(e) = self.entries.get_mut(&key) {
            e.priority = pod.priority();
            e.pod = pod;
            e.data = data;
            return;
        }
        let created = pod.metadata.creation_timestamp.unwrap_or(now);
        self.entries.insert(
            key.clone(),
            Entry {
                priority: pod.priority(),
                pod,
                created,
                attempts: 0,
                state: State::InFlight,
                interest: 0,
                backoff_until: now,
                seq: 0,
                data,
            },
        );
        self.set_state(&key, State::Active, now);
    }

    /// A pod changed in a way that may make it fit (its spec or labels):
    /// out of the unschedulable queue.
    pub fn changed(&mut self, key: &str, now: Time) {
        let Some(k) = self.key(key) else { return };
        if self.entries[&k].state == State::Unschedulable {
            self.wake(&k, now);
        }
    }

    fn wake(&mut self, key: &Arc<str>, now: Time) {
        let until = self.entries[key].backoff_until;
        let to = if until > now {
            State::Backoff
        } else {
            State::Active
        };
        self.set_state(key, to, now);
    }

    pub fn remove(&mut self, key: &str) -> Option<Entry<T>> {
        let e = self.entries.remove(key)?;
        if e.state == State::Active {
            self.active_len -= 1;
        }
        self.prune();
        Some(e)
    }

    /// Moves what is due: backed-off pods whose time came, parked pods that
    /// waited [`MAX_IN_UNSCHEDULABLE`].
    pub fn flush(&mut self, now: Time) {
        while let Some(Reverse((at, seq, key))) = self.backoff.peek().cloned() {
            if at > now {
                break;
            }
            self.backoff.pop();
            if self
                .entries
                .get(&key)
                .is_some_and(|e| e.seq == seq && e.state == State::Backoff)
            {
                self.set_state(&key, State::Active, now);
            }
        }
        while let Some(Reverse((at, seq, key))) = self.parked.peek().cloned() {
            if at > now {
                break;
            }
            self.parked.pop();
            if self
                .entries
                .get(&key)
                .is_some_and(|e| e.seq == seq && e.state == State::Unschedulable)
            {
                self.wake(&key, now);
            }
        }
    }

    /// Parked pods a cluster event could help go back to the active (or
    /// backoff) queue.
    pub fn on_events(&mut self, events: Events, now: Time) {
        if events == 0 {
            return;
        }
        let keys: Vec<Arc<str>> = self
            .entries
            .iter()
            .filter(|(_, e)| e.state == State::Unschedulable && e.interest & events != 0)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.wake(&k, now);
        }
    }

    /// The next pod to try.
    pub fn pop(&mut self) -> Option<Arc<str>> {
        while let Some(((_, _, Reverse(seq)), key)) = self.active.pop() {
            if self
                .entries
                .get(&key)
                .is_some_and(|e| e.seq == seq && e.state == State::Active)
            {
                self.set_state(&key, State::InFlight, Time(0));
                return Some(key);
            }
        }
        None
    }

    /// The pod fits nowhere: parked until an event in `interest`.
    pub fn unschedulable(&mut self, key: &Arc<str>, interest: Events, now: Time) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        e.attempts += 1;
        e.backoff_until = now.plus(backoff(e.attempts));
        e.interest = interest;
        self.set_state(key, State::Unschedulable, now);
    }

    /// Try again after the pod's back-off (its binding failed).
    pub fn retry(&mut self, key: &Arc<str>, now: Time) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        e.attempts += 1;
        e.backoff_until = now.plus(backoff(e.attempts));
        self.set_state(key, State::Backoff, now);
    }

    /// Back to the active queue now (the attempt was cut short).
    pub fn requeue(&mut self, key: &Arc<str>, now: Time) {
        self.set_state(key, State::Active, now);
    }

    /// When something becomes due with nothing else happening.
    pub fn next_due(&self) -> Option<Time> {
        let b = self.backoff.peek().map(|Reverse((t, _, _))| *t);
        let p = self.parked.peek().map(|Reverse((t, _, _))| *t);
        match (b, p) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ObjectMeta;

    fn pod(name: &str, prio: i32, created: u64) -> Arc<Pod> {
        let mut meta = ObjectMeta::named("default", name);
        meta.creation_timestamp = Some(Time(created));
        let mut p = Pod {
            metadata: meta,
            ..Pod::default()
        };
        p.spec.priority = Some(prio);
        Arc::new(p)
    }

    #[test]
    fn backoff_doubles_to_ten_seconds() {
        let want = [1, 2, 4, 8, 10, 10];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(
                backoff(u32::try_from(i).unwrap() + 1),
                Duration::from_secs(*w),
                "attempt {}",
                i + 1
            );
        }
    }

    #[test]
    fn active_pops_by_priority_then_age() {
        let mut q: Queue<()> = Queue::default();
        let now = Time(1_000);
        for (name, prio, created) in [("a", 0, 5), ("b", 10, 9), ("c", 0, 1), ("d", 10, 3)] {
            q.add(
                Arc::from(format!("default/{name}")),
                pod(name, prio, created),
                (),
                now,
            );
        }
        let order: Vec<String> = std::iter::from_fn(|| q.pop())
            .map(|k| k.to_string())
            .collect();
        assert_eq!(order, ["default/d", "default/b", "default/c", "default/a"]);
    }

    #[test]
    fn parked_pods_wait_for_an_event_or_five_minutes() {
        let mut q: Queue<()> = Queue::default();
        let t0 = Time(0);
        let k: Arc<str> = Arc::from("default/a");
        q.add(k.clone(), pod("a", 0, 0), (), t0);
        assert_eq!(q.pop(), Some(k.clone()));
        q.unschedulable(&k, 0b10, t0);
        q.flush(Time(60_000));
        assert_eq!(q.pop(), None, "no timer before five minutes");
        q.on_events(0b01, Time(60_000));
        assert_eq!(q.pop(), None, "an event it has no interest in");
        q.on_events(0b10, Time(60_000));
        assert_eq!(
            q.pop(),
            Some(k.clone()),
            "backoff long over: active at once"
        );
        // Within the back-off window an event moves it to backoff first.
        q.unschedulable(&k, 0b10, Time(60_000));
        q.on_events(0b10, Time(60_500));
        assert_eq!(q.pop(), None);
        assert_eq!(q.next_due(), Some(Time(62_000)), "second attempt: 2 s");
        q.flush(Time(62_000));
        assert_eq!(q.pop(), Some(k.clone()));
        // Without any event: back after five minutes.
        q.unschedulable(&k, 0b10, Time(70_000));
        assert_eq!(q.next_due(), Some(Time(70_000 + 300_000)));
        q.flush(Time(369_999));
        assert_eq!(q.pop(), None);
        q.flush(Time(370_000));
        assert_eq!(q.pop(), Some(k));
    }
}
