//! The event log: what happened to which object, for `get events` and
//! `describe`. A bounded ring kept in memory and in the store
//! (`/outpost/events/SEQ`); old events fall off, as Kubernetes' event TTL
//! makes them.

use crate::store::{keys, Op, Store, StoreError};
use outpost_proto::{Event, EventType};
use std::collections::VecDeque;

/// Events kept (memory and store).
pub const EVENT_LOG_LEN: usize = 1000;

#[derive(Debug)]
pub struct EventLog {
    events: VecDeque<Event>,
    next: u64,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            events: VecDeque::new(),
            next: 1,
        }
    }
}

fn key(seq: u64) -> String {
    format!("{}{seq:020}", keys::EVENTS)
}

impl EventLog {
    /// Reads the stored log; an unreadable entry is skipped with a warning
    /// (events inform, they must not stop the controller).
    pub fn load(store: &dyn Store) -> Result<EventLog, StoreError> {
        let mut events = VecDeque::new();
        for kv in store.list(keys::EVENTS)?.kvs {
            match serde_json::from_slice::<Event>(&kv.value) {
                Ok(e) => events.push_back(e),
                Err(e) => tracing::warn!(key = %kv.key, "skipping an unreadable event: {e}"),
            }
        }
        let next = events.back().map_or(1, |e| e.seq + 1);
        Ok(EventLog { events, next })
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
        match kind {
            EventType::Normal => tracing::info!(%object, reason, "{message}"),
            EventType::Warning => tracing::warn!(%object, reason, "{message}"),
        }
        let ev = Event {
            seq: self.next,
            time_ms: now_ms,
            kind,
            reason: reason.to_string(),
            object,
            message,
        };
        self.next += 1;
        let mut ops = Vec::new();
        if let Ok(bytes) = serde_json::to_vec(&ev) {
            ops.push(Op::put(key(ev.seq), bytes));
        }
        self.events.push_back(ev);
        while self.events.len() > EVENT_LOG_LEN {
            if let Some(old) = self.events.pop_front() {
                ops.push(Op::delete(key(old.seq)));
            }
        }
        ops
    }

    /// The newest `limit` events, oldest first, optionally about one object.
    pub fn list(&self, object: Option<&str>, limit: usize) -> Vec<Event> {
        let mut out: Vec<Event> = self
            .events
            .iter()
            .rev()
            .filter(|e| object.is_none_or(|o| e.object == o))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
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

    #[test]
    fn ring_is_bounded_and_survives_reload() {
        let s = MemStore::new();
        let mut log = EventLog::default();
        for i in 0..EVENT_LOG_LEN + 5 {
            let ops = log.record(
                EventType::Normal,
                "R",
                format!("pod/p{}", i % 2),
                "m".into(),
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
}
