//! The event log: what happened to which object, for `get events` and
//! `describe`. A bounded ring kept in memory and in the store
//! (`/outpost/events/SEQ`); old events fall off, as Kubernetes' event TTL
//! makes them.
//!
//! Three rules keep one noisy object from flooding the log:
//!
//! - **Series** (Kubernetes' event correlator): an event with the same
//!   object, type, reason and message as one still in the log whose last
//!   occurrence is at most [`SERIES_WINDOW_MS`] (10 minutes) old is not a
//!   new event: that one's `count` grows and its `time_ms` (last seen)
//!   moves to now; `first_time_ms` stays. It is rewritten in place (same
//!   key). Past the window a repeat starts a new series.
//! - **Per-object share**: one object holds at most [`OBJECT_SHARE`]
//!   events (a tenth of the log). A new event for an object at its share
//!   drops that object's own oldest event, never another object's.
//! - **Ring**: past [`EVENT_LOG_LEN`] events the one seen longest ago (by
//!   last seen, ties by sequence) is dropped. An object whose newest event
//!   came within the last `EVENT_LOG_LEN` recorded events keeps it.
//!
//! A log loaded from an older controller is brought within these bounds;
//! the deletions go out with the next record's writes.
//!
//! Agents speaking protocol 5 send when their events happened (first and
//! last occurrence and a count, on the agent's clock): [`AgentClock`]
//! moves those times onto this clock by the agent's measured skew and
//! bounds them, and [`EventLog::record_series`] files them by the same
//! series rules, so an event raised while the box was offline keeps the
//! time it happened, not the time it arrived. Older agents' events are
//! stamped on arrival.

use crate::store::{keys, Op, Store, StoreError};
use outpost_proto::{Event, EventType};
use std::collections::{HashMap, VecDeque};

/// Events kept (memory and store).
pub const EVENT_LOG_LEN: usize = 1000;

/// Events one object may hold: a tenth of the log.
pub const OBJECT_SHARE: usize = EVENT_LOG_LEN / 10;

/// A repeat joins its series if the series was last seen this recently.
pub const SERIES_WINDOW_MS: u64 = outpost_proto::EVENT_SERIES_WINDOW_MS;

/// Oldest an agent's event may be dated: a day back. An agent keeps its
/// events in memory only, so older ones are not believed.
pub const MAX_EVENT_AGE_MS: u64 = 24 * 3600 * 1000;

/// How long before the node was last heard from an event sent in the
/// next session may have happened (it was raised just before the link
/// dropped and never arrived).
pub const OFFLINE_SLACK_MS: u64 = 60 * 1000;

/// Places an agent's event times on the controller's clock.
///
/// The batch says the agent's clock when it was sent (`sent_ms`); the
/// controller's clock when it arrived minus that is the agent's skew (plus
/// the one-way delay, milliseconds), and every time in the batch is moved
/// by it, so a box whose clock is days off still gets correct event times.
/// The result is bounded to what the session makes possible: not after
/// the batch arrived (a time in the future beyond the measured skew), and
/// not before the node's offline period began (the last time it was heard
/// from, less [`OFFLINE_SLACK_MS`]) nor more than [`MAX_EVENT_AGE_MS`] ago.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentClock {
    /// Controller clock when the batch arrived.
    pub now_ms: u64,
    /// Controller clock minus the agent's (ms).
    pub skew_ms: i64,
    /// Earliest time an event of this batch is placed at.
    pub earliest_ms: u64,
}

impl AgentClock {
    /// `last_heard_ms`: when the node was last heard from before this
    /// session (its last heartbeat), if ever.
    pub fn new(now_ms: u64, sent_ms: u64, last_heard_ms: Option<u64>) -> AgentClock {
        let skew = i128::from(now_ms) - i128::from(sent_ms);
        let skew_ms = i64::try_from(skew).unwrap_or(if skew < 0 { i64::MIN } else { i64::MAX });
        let day_ago = now_ms.saturating_sub(MAX_EVENT_AGE_MS);
        let offline = last_heard_ms
            .filter(|&t| t > 0)
            .map_or(0, |t| t.min(now_ms).saturating_sub(OFFLINE_SLACK_MS));
        AgentClock {
            now_ms,
            skew_ms,
            earliest_ms: day_ago.max(offline),
        }
    }

    /// `agent_ms` (the agent's clock) on the controller's clock, bounded.
    pub fn place(&self, agent_ms: u64) -> u64 {
        let t = i128::from(agent_ms) + i128::from(self.skew_ms);
        let t = t.clamp(i128::from(self.earliest_ms), i128::from(self.now_ms));
        u64::try_from(t).unwrap_or(self.now_ms)
    }

    /// A series' first and last occurrence, placed (first never after last).
    pub fn place_series(&self, first_ms: u64, last_ms: u64) -> (u64, u64) {
        let last = self.place(last_ms);
        (self.place(first_ms).min(last), last)
    }
}

/// When an event happened: its first and last occurrence and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occurred {
    pub first_ms: u64,
    pub last_ms: u64,
    pub count: u32,
}

#[derive(Debug)]
pub struct EventLog {
    /// In sequence (store key) order.
    events: VecDeque<Event>,
    /// Each object's events by sequence, ascending: a record looks only at
    /// its object's events (at most its share), not the whole log. Without
    /// it, 10,000 nodes reconnecting at once spent 5 % of the controller's
    /// CPU comparing event strings.
    by_object: HashMap<String, Vec<u64>>,
    next: u64,
    cap: usize,
    share: usize,
    /// Deletions found by `load` (a log past the bounds), written with the
    /// next record.
    pending: Vec<Op>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog::with_bounds(EVENT_LOG_LEN, OBJECT_SHARE)
    }
}

fn key(seq: u64) -> String {
    format!("{}{seq:020}", keys::EVENTS)
}

fn same_series(e: &Event, kind: EventType, reason: &str, object: &str, message: &str) -> bool {
    e.kind == kind && e.reason == reason && e.object == object && e.message == message
}

impl EventLog {
    /// An empty log holding at most `cap` events, `share` per object.
    pub fn with_bounds(cap: usize, share: usize) -> EventLog {
        EventLog {
            events: VecDeque::new(),
            by_object: HashMap::new(),
            next: 1,
            cap: cap.max(1),
            share: share.clamp(1, cap.max(1)),
            pending: Vec::new(),
        }
    }

    /// Reads the stored log; an unreadable entry is skipped with a warning
    /// (events inform, they must not stop the controller).
    pub fn load(store: &dyn Store) -> Result<EventLog, StoreError> {
        let mut log = EventLog::default();
        let mut read = Vec::new();
        for kv in store.list(keys::EVENTS)?.kvs {
            match serde_json::from_slice::<Event>(&kv.value) {
                Ok(e) => read.push(e),
                Err(e) => tracing::warn!(key = %kv.key, "skipping an unreadable event: {e}"),
            }
        }
        // In sequence order with each sequence once, whatever the keys say.
        read.sort_by_key(|e| e.seq);
        read.dedup_by_key(|e| e.seq);
        for e in read {
            log.push(e);
        }
        log.next = log.events.iter().map(|e| e.seq + 1).max().unwrap_or(1);
        let mut ops = Vec::new();
        let objects: Vec<String> = log.by_object.keys().cloned().collect();
        for o in objects {
            while log.held_by(&o) > log.share {
                log.evict_oldest(Some(&o), &mut ops);
            }
        }
        while log.events.len() > log.cap {
            log.evict_oldest(None, &mut ops);
        }
        log.pending = ops;
        Ok(log)
    }

    fn held_by(&self, object: &str) -> usize {
        self.by_object.get(object).map_or(0, Vec::len)
    }

    /// Where `object`'s events are in `events`, oldest sequence first.
    fn positions_of<'a>(&'a self, object: &str) -> impl DoubleEndedIterator<Item = usize> + 'a {
        self.by_object
            .get(object)
            .into_iter()
            .flatten()
            .filter_map(|&seq| self.events.binary_search_by_key(&seq, |e| e.seq).ok())
    }

    /// Appends an event (its sequence is past every other's).
    fn push(&mut self, e: Event) {
        self.by_object
            .entry(e.object.clone())
            .or_default()
            .push(e.seq);
        self.events.push_back(e);
    }

    /// Drops the event seen longest ago (of `object`, if given).
    fn evict_oldest(&mut self, object: Option<&str>, ops: &mut Vec<Op>) {
        let oldest = match object {
            None => self
                .events
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| (e.time_ms, e.seq))
                .map(|(i, _)| i),
            Some(o) => self
                .positions_of(o)
                .min_by_key(|&i| (self.events[i].time_ms, self.events[i].seq)),
        };
        if let Some(old) = oldest.and_then(|i| self.events.remove(i)) {
            if let Some(seqs) = self.by_object.get_mut(&old.object) {
                seqs.retain(|&s| s != old.seq);
                if seqs.is_empty() {
                    self.by_object.remove(&old.object);
                }
            }
            ops.push(Op::delete(key(old.seq)));
        }
    }

    /// Records an event; returns the store writes that keep the log.
    pub fn record(
        &mut self,
        kind: EventType,
        reason: &str,
        object: String,
        message: String,
        now_ms: u64,
    ) -> Vec<Op> {
        self.record_series(
            kind,
            reason,
            object,
            message,
            Occurred {
                first_ms: now_ms,
                last_ms: now_ms,
                count: 1,
            },
        )
    }

    /// Records `count` occurrences of an event from `first_ms` to
    /// `last_ms` (an agent's series, placed on this clock by
    /// [`AgentClock`]): they join a series of the log last seen at most
    /// [`SERIES_WINDOW_MS`] before `first_ms`, or start one.
    pub fn record_series(
        &mut self,
        kind: EventType,
        reason: &str,
        object: String,
        message: String,
        at: Occurred,
    ) -> Vec<Op> {
        let count = at.count.max(1);
        let (first_ms, now_ms) = (at.first_ms.min(at.last_ms), at.last_ms);
        let mut ops = std::mem::take(&mut self.pending);
        let series = self.positions_of(&object).rev().find(|&i| {
            let e = &self.events[i];
            same_series(e, kind, reason, &object, &message)
                && first_ms.saturating_sub(e.time_ms) <= SERIES_WINDOW_MS
        });
        if let Some(e) = series.map(|i| &mut self.events[i]) {
            e.first_time_ms = e.first_ms().min(first_ms);
            e.count = e.count.max(1).saturating_add(count);
            e.time_ms = e.time_ms.max(now_ms);
            // Logged at debug: the first occurrence was logged loudly.
            tracing::debug!(%object, reason, count = e.count, "{message}");
            if let Ok(bytes) = serde_json::to_vec(&*e) {
                ops.push(Op::put(key(e.seq), bytes));
            }
            return ops;
        }
        match kind {
            EventType::Normal => tracing::info!(%object, reason, "{message}"),
            EventType::Warning => tracing::warn!(%object, reason, "{message}"),
        }
        while self.held_by(&object) >= self.share {
            self.evict_oldest(Some(&object), &mut ops);
        }
        let ev = Event {
            seq: self.next,
            time_ms: now_ms,
            kind,
            reason: reason.to_string(),
            object,
            message,
            count,
            first_time_ms: first_ms,
        };
        self.next += 1;
        if let Ok(bytes) = serde_json::to_vec(&ev) {
            ops.push(Op::put(key(ev.seq), bytes));
        }
        self.push(ev);
        while self.events.len() > self.cap {
            self.evict_oldest(None, &mut ops);
        }
        ops
    }

    /// The newest `limit` events by last seen, oldest first, optionally
    /// about one object.
    pub fn list(&self, object: Option<&str>, limit: usize) -> Vec<Event> {
        let mut out: Vec<Event> = match object {
            None => self.events.iter().cloned().collect(),
            Some(o) => self
                .positions_of(o)
                .map(|i| self.events[i].clone())
                .collect(),
        };
        out.sort_by_key(|e| (e.time_ms, e.seq));
        let skip = out.len().saturating_sub(limit);
        out.split_off(skip)
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::mem::MemStore;
    use crate::store::Txn;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashMap};

    #[test]
    fn ring_is_bounded_and_survives_reload() {
        let s = MemStore::new();
        let mut log = EventLog::default();
        for i in 0..EVENT_LOG_LEN + 5 {
            let ops = log.record(
                EventType::Normal,
                "R",
                format!("pod/p{}", i % 20),
                format!("m{i}"),
                1,
            );
            s.txn(Txn::ops(ops)).unwrap();
        }
        assert_eq!(log.len(), EVENT_LOG_LEN);
        let again = EventLog::load(&s).unwrap();
        assert_eq!(again.len(), EVENT_LOG_LEN);
        assert_eq!(again.list(Some("pod/p1"), 3).len(), 3);
        assert_eq!(
            again.list(None, 5).last().unwrap().seq,
            (EVENT_LOG_LEN + 5) as u64
        );
    }

    #[test]
    fn a_repeat_is_one_event_with_a_count() {
        let s = MemStore::new();
        let mut log = EventLog::default();
        for i in 0..173u64 {
            let ops = log.record(
                EventType::Warning,
                "FailedSync",
                "node/edge-1".into(),
                "disk full".into(),
                1_000 + i * 463,
            );
            s.txn(Txn::ops(ops)).unwrap();
        }
        assert_eq!(log.len(), 1);
        let e = &log.list(None, 10)[0];
        assert_eq!((e.seq, e.count), (1, 173));
        assert_eq!((e.first_ms(), e.time_ms), (1_000, 1_000 + 172 * 463));
        assert_eq!(EventLog::load(&s).unwrap().list(None, 10), vec![e.clone()]);
        // Another message, type or object is another event.
        log.record(
            EventType::Warning,
            "FailedSync",
            "node/edge-1".into(),
            "x".into(),
            90_000,
        );
        log.record(
            EventType::Normal,
            "FailedSync",
            "node/edge-1".into(),
            "disk full".into(),
            90_000,
        );
        log.record(
            EventType::Warning,
            "FailedSync",
            "node/edge-2".into(),
            "disk full".into(),
            90_000,
        );
        assert_eq!(log.len(), 4);
    }

    #[test]
    fn a_repeat_past_the_window_starts_a_new_series() {
        let mut log = EventLog::default();
        let rec = |log: &mut EventLog, t| {
            log.record(
                EventType::Warning,
                "BackOff",
                "pod/web".into(),
                "m".into(),
                t,
            )
        };
        rec(&mut log, 0);
        rec(&mut log, SERIES_WINDOW_MS);
        assert_eq!(log.len(), 1);
        rec(&mut log, 2 * SERIES_WINDOW_MS + 1);
        let evs = log.list(None, 10);
        assert_eq!(evs.iter().map(|e| e.count).collect::<Vec<_>>(), [2, 1]);
    }

    #[test]
    fn a_noisy_object_drops_its_own_events_not_others() {
        let mut log = EventLog::default();
        log.record(
            EventType::Normal,
            "Scheduled",
            "pod/quiet".into(),
            "ok".into(),
            0,
        );
        for i in 0..EVENT_LOG_LEN as u64 * 3 {
            log.record(
                EventType::Warning,
                "FailedSync",
                "node/noisy".into(),
                format!("{i}"),
                i + 1,
            );
        }
        assert_eq!(log.list(Some("pod/quiet"), 10).len(), 1);
        let noisy = log.list(Some("node/noisy"), EVENT_LOG_LEN);
        assert_eq!(noisy.len(), OBJECT_SHARE);
        assert_eq!(
            noisy.last().unwrap().message,
            format!("{}", EVENT_LOG_LEN * 3 - 1)
        );
    }

    #[test]
    fn a_log_past_the_bounds_is_trimmed_on_load() {
        let s = MemStore::new();
        let ops: Vec<Op> = (1..=OBJECT_SHARE as u64 + 7)
            .map(|seq| {
                let e = Event {
                    seq,
                    time_ms: seq,
                    kind: EventType::Normal,
                    reason: "R".into(),
                    object: "node/a".into(),
                    message: format!("{seq}"),
                    count: 1,
                    first_time_ms: seq,
                };
                Op::put(key(seq), serde_json::to_vec(&e).unwrap())
            })
            .collect();
        s.txn(Txn::ops(ops)).unwrap();
        let mut log = EventLog::load(&s).unwrap();
        assert_eq!(log.len(), OBJECT_SHARE);
        assert_eq!(log.list(None, 1)[0].seq, OBJECT_SHARE as u64 + 7);
        let ops = log.record(EventType::Normal, "R", "node/b".into(), "m".into(), 500);
        s.txn(Txn::ops(ops)).unwrap();
        assert_eq!(EventLog::load(&s).unwrap().len(), OBJECT_SHARE + 1);
    }

    const DAY: u64 = 24 * 3600 * 1000;
    /// The controller's clock in these tests: some day in 2026.
    const NOW: u64 = 1_780_000_000_000;

    #[test]
    fn an_agents_time_is_corrected_by_its_skew() {
        // The box is two days behind: it sent at NOW - 2 days by its clock.
        let c = AgentClock::new(NOW, NOW - 2 * DAY, Some(NOW - 300_000));
        assert_eq!(c.skew_ms, i64::try_from(2 * DAY).unwrap());
        // Raised 90 s before sending, by the box's clock: 90 s ago here.
        assert_eq!(c.place(NOW - 2 * DAY - 90_000), NOW - 90_000);
        // Two days ahead: the same correction the other way.
        let ahead = AgentClock::new(NOW, NOW + 2 * DAY, Some(NOW - 300_000));
        assert_eq!(ahead.skew_ms, -i64::try_from(2 * DAY).unwrap());
        assert_eq!(ahead.place(NOW + 2 * DAY - 90_000), NOW - 90_000);
        assert_eq!(
            ahead.place_series(NOW + 2 * DAY - 200_000, NOW + 2 * DAY - 90_000),
            (NOW - 200_000, NOW - 90_000)
        );
    }

    #[test]
    fn an_agents_time_is_clamped_to_what_the_session_allows() {
        // Heard from 5 minutes ago, then offline until now.
        let c = AgentClock::new(NOW, NOW, Some(NOW - 300_000));
        assert_eq!(c.earliest_ms, NOW - 300_000 - OFFLINE_SLACK_MS);
        // In the future beyond the measured skew: now.
        assert_eq!(c.place(NOW + 1), NOW);
        assert_eq!(c.place(u64::MAX), NOW);
        // Before the offline period began (and its slack): its start.
        assert_eq!(c.place(NOW - 3_600_000), c.earliest_ms);
        assert_eq!(c.place(0), c.earliest_ms);
        // Within it: as sent.
        assert_eq!(c.place(NOW - 200_000), NOW - 200_000);
        // Never heard from (or a controller that forgot): a day back at most.
        let first = AgentClock::new(NOW, NOW, None);
        assert_eq!(first.earliest_ms, NOW - MAX_EVENT_AGE_MS);
        assert_eq!(first.place(NOW - 3 * DAY), NOW - DAY);
        // Offline for a week: still a day back at most.
        let week = AgentClock::new(NOW, NOW, Some(NOW - 7 * DAY));
        assert_eq!(week.place(NOW - 3 * DAY), NOW - DAY);
        // A last-heard time in the future (a controller clock that jumped
        // back) bounds nothing beyond the batch's arrival.
        let odd = AgentClock::new(NOW, NOW, Some(NOW + DAY));
        assert_eq!(odd.earliest_ms, NOW - OFFLINE_SLACK_MS);
        // Extreme clocks neither overflow nor escape the bounds.
        let wild = AgentClock::new(NOW, u64::MAX, Some(NOW - 300_000));
        assert_eq!(wild.place(0), wild.earliest_ms);
        assert_eq!(AgentClock::new(NOW, 0, None).place(u64::MAX), NOW);
        // A series whose first is after its last comes out in order.
        assert_eq!(
            c.place_series(NOW - 1_000, NOW - 2_000),
            (NOW - 2_000, NOW - 2_000)
        );
    }

    #[test]
    fn an_agents_series_joins_the_log_by_the_same_rules() {
        let mut log = EventLog::default();
        let at = |first_ms, last_ms, count| Occurred {
            first_ms,
            last_ms,
            count,
        };
        let rec = |log: &mut EventLog, o: Occurred| {
            log.record_series(
                EventType::Warning,
                "BackOff",
                "pod/web".into(),
                "m".into(),
                o,
            )
        };
        rec(&mut log, at(1_000, 5_000, 3));
        let e = log.list(None, 1)[0].clone();
        assert_eq!((e.first_ms(), e.time_ms, e.count), (1_000, 5_000, 3));
        // More of it within the window of the last occurrence: one series.
        rec(
            &mut log,
            at(5_000 + SERIES_WINDOW_MS, 5_000 + SERIES_WINDOW_MS, 2),
        );
        assert_eq!(log.len(), 1);
        let e = log.list(None, 1)[0].clone();
        assert_eq!(
            (e.first_ms(), e.time_ms, e.count),
            (1_000, 5_000 + SERIES_WINDOW_MS, 5)
        );
        // Past the window: a new series, with its own first and count.
        let later = 6_000 + 2 * SERIES_WINDOW_MS;
        rec(&mut log, at(later, later + 10, 4));
        let evs = log.list(None, 10);
        assert_eq!(
            evs.iter()
                .map(|e| (e.count, e.first_ms()))
                .collect::<Vec<_>>(),
            [(5, 1_000), (4, later)]
        );
        // A zero count is one occurrence.
        rec(&mut log, at(later + 20, later + 20, 0));
        assert_eq!(log.list(None, 1)[0].count, 5);
    }

    const CAP: usize = 20;
    const SHARE: usize = 4;

    proptest! {
        #[test]
        fn bounds_hold_and_the_store_mirrors_the_log(
            recs in prop::collection::vec((0u8..8, 0u8..3, 0u8..2, 0u64..3), 1..200)
        ) {
            let s = MemStore::new();
            let mut replay: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            let mut log = EventLog::with_bounds(CAP, SHARE);
            let mut now = 0;
            // object -> (index of its last record, time, reason, message)
            let mut last: HashMap<String, (usize, u64, String, String)> = HashMap::new();
            for (i, (obj, msg, reason, dt)) in recs.iter().enumerate() {
                // Strictly later each time: ties in a millisecond go by sequence.
                now += 1 + dt * SERIES_WINDOW_MS / 2;
                let (object, message, reason) =
                    (format!("pod/p{obj}"), format!("m{msg}"), format!("R{reason}"));
                let ops = log.record(EventType::Warning, &reason, object.clone(), message.clone(), now);
                for op in &ops {
                    match op {
                        Op::Put { key, value } => { replay.insert(key.clone(), value.clone()); }
                        Op::Delete { key } => { replay.remove(key); }
                    }
                }
                s.txn(Txn::ops(ops)).unwrap();
                last.insert(object, (i, now, reason, message));

                prop_assert!(log.len() <= CAP);
                let mut held: HashMap<&str, usize> = HashMap::new();
                for e in log.events.iter() {
                    *held.entry(&e.object).or_default() += 1;
                }
                prop_assert!(held.values().all(|&n| n <= SHARE), "{held:?}");
                // The per-object index is exactly the log, grouped.
                let mut grouped: HashMap<String, Vec<u64>> = HashMap::new();
                for e in log.events.iter() {
                    grouped.entry(e.object.clone()).or_default().push(e.seq);
                }
                prop_assert_eq!(&log.by_object, &grouped);
                for (o, (at, t, r, m)) in &last {
                    if i - at < CAP {
                        prop_assert!(
                            log.events.iter().any(|e| &e.object == o && e.time_ms == *t
                                && &e.reason == r && &e.message == m),
                            "{o} lost its newest event"
                        );
                    }
                }
                let mirrored: Vec<Event> = replay
                    .values()
                    .map(|v| serde_json::from_slice(v).unwrap())
                    .collect();
                prop_assert_eq!(&mirrored, &Vec::from(log.events.clone()));
                let loaded = EventLog::load(&s).unwrap();
                prop_assert_eq!(&loaded.events, &log.events);
                prop_assert_eq!(&loaded.by_object, &log.by_object);
                prop_assert_eq!(loaded.next, log.next);
            }
        }
    }
}
