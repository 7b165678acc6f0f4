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

use crate::store::{keys, Op, Store, StoreError};
use outpost_proto::{Event, EventType};
use std::collections::VecDeque;

/// Events kept (memory and store).
pub const EVENT_LOG_LEN: usize = 1000;

/// Events one object may hold: a tenth of the log.
pub const OBJECT_SHARE: usize = EVENT_LOG_LEN / 10;

/// A repeat joins its series if the series was last seen this recently.
pub const SERIES_WINDOW_MS: u64 = 10 * 60 * 1000;

#[derive(Debug)]
pub struct EventLog {
    /// In sequence (store key) order.
    events: VecDeque<Event>,
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
        for kv in store.list(keys::EVENTS)?.kvs {
            match serde_json::from_slice::<Event>(&kv.value) {
                Ok(e) => log.events.push_back(e),
                Err(e) => tracing::warn!(key = %kv.key, "skipping an unreadable event: {e}"),
            }
        }
        log.next = log.events.iter().map(|e| e.seq + 1).max().unwrap_or(1);
        let mut ops = Vec::new();
        let objects: Vec<String> = log.events.iter().map(|e| e.object.clone()).collect();
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
        self.events.iter().filter(|e| e.object == object).count()
    }

    /// Drops the event seen longest ago (of `object`, if given).
    fn evict_oldest(&mut self, object: Option<&str>, ops: &mut Vec<Op>) {
        let oldest = self
            .events
            .iter()
            .enumerate()
            .filter(|(_, e)| object.is_none_or(|o| e.object == o))
            .min_by_key(|(_, e)| (e.time_ms, e.seq))
            .map(|(i, _)| i);
        if let Some(old) = oldest.and_then(|i| self.events.remove(i)) {
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
        let mut ops = std::mem::take(&mut self.pending);
        let series = self.events.iter_mut().rev().find(|e| {
            same_series(e, kind, reason, &object, &message)
                && now_ms.saturating_sub(e.time_ms) <= SERIES_WINDOW_MS
        });
        if let Some(e) = series {
            e.first_time_ms = e.first_ms();
            e.count = e.count.max(1).saturating_add(1);
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
            count: 1,
            first_time_ms: now_ms,
        };
        self.next += 1;
        if let Ok(bytes) = serde_json::to_vec(&ev) {
            ops.push(Op::put(key(ev.seq), bytes));
        }
        self.events.push_back(ev);
        while self.events.len() > self.cap {
            self.evict_oldest(None, &mut ops);
        }
        ops
    }

    /// The newest `limit` events by last seen, oldest first, optionally
    /// about one object.
    pub fn list(&self, object: Option<&str>, limit: usize) -> Vec<Event> {
        let mut out: Vec<Event> = self
            .events
            .iter()
            .filter(|e| object.is_none_or(|o| e.object == o))
            .cloned()
            .collect();
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
                prop_assert_eq!(loaded.next, log.next);
            }
        }
    }
}
