//! Events waiting for the controller, with when they happened.
//!
//! Every event the agent raises goes through here, whether the controller
//! is reachable or not: it is queued with the monotonic time it happened,
//! and a repeat of a queued one (the same type, reason, pod and message
//! within [`EVENT_SERIES_WINDOW_MS`] of its last occurrence, the
//! controller's series rule) only counts one more occurrence. The session
//! sends the queue in batches; each event's first and last time are put on
//! the wall clock at the moment the batch is sent (sent time minus the
//! monotonic age), so a clock that was stepped while the box was offline
//! does not move them, and the batch's `sent_ms` lets the controller
//! correct them by this box's skew.
//!
//! The queue is bounded ([`EVENT_QUEUE`] series): past it the oldest is
//! dropped (statuses, not events, carry the state).

use outpost_proto::{AgentEvent, AgentEventBatch, TimedAgentEvent, EVENT_SERIES_WINDOW_MS};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Series kept while the controller is out of reach.
pub const EVENT_QUEUE: usize = 256;

/// One queued series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub event: AgentEvent,
    pub first: Instant,
    pub last: Instant,
    pub count: u32,
}

/// The queue, without I/O: times are passed in.
#[derive(Debug)]
pub struct EventQueue {
    items: VecDeque<Queued>,
    cap: usize,
    /// Series dropped because the queue was full.
    pub dropped: u64,
}

fn same(a: &AgentEvent, b: &AgentEvent) -> bool {
    a.kind == b.kind && a.reason == b.reason && a.pod == b.pod && a.message == b.message
}

impl EventQueue {
    pub fn new(cap: usize) -> EventQueue {
        EventQueue {
            items: VecDeque::new(),
            cap: cap.max(1),
            dropped: 0,
        }
    }

    /// `event` happened at `now`.
    pub fn push(&mut self, event: AgentEvent, now: Instant) {
        let window = Duration::from_millis(EVENT_SERIES_WINDOW_MS);
        if let Some(q) = self
            .items
            .iter_mut()
            .rev()
            .find(|q| same(&q.event, &event) && now.saturating_duration_since(q.last) <= window)
        {
            q.count = q.count.saturating_add(1);
            q.last = q.last.max(now);
            return;
        }
        if self.items.len() >= self.cap {
            self.items.pop_front();
            self.dropped += 1;
        }
        self.items.push_back(Queued {
            event,
            first: now,
            last: now,
            count: 1,
        });
    }

    /// The oldest `max` series, taken off the queue.
    pub fn take(&mut self, max: usize) -> Vec<Queued> {
        let n = max.min(self.items.len());
        self.items.drain(..n).collect()
    }

    /// Series taken but not sent (the session ended) go back in front,
    /// within the bound.
    pub fn put_back(&mut self, taken: Vec<Queued>) {
        for q in taken.into_iter().rev() {
            if self.items.len() >= self.cap {
                self.dropped += 1;
                continue;
            }
            self.items.push_front(q);
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// The batch for `taken`, sent at `now` (monotonic) when this box's clock
/// reads `now_ms`: each time is `now_ms` less the series' monotonic age.
pub fn batch(taken: &[Queued], now: Instant, now_ms: u64) -> AgentEventBatch {
    let at = |t: Instant| {
        let age = u64::try_from(now.saturating_duration_since(t).as_millis()).unwrap_or(u64::MAX);
        now_ms.saturating_sub(age)
    };
    AgentEventBatch {
        sent_ms: now_ms,
        events: taken
            .iter()
            .map(|q| TimedAgentEvent {
                event: q.event.clone(),
                first_time_ms: at(q.first),
                time_ms: at(q.last),
                count: q.count.max(1),
            })
            .collect(),
    }
}

/// The queue shared by whoever raises events and the session.
#[derive(Debug)]
pub struct EventInbox {
    queue: Mutex<EventQueue>,
    /// Woken when an event is queued.
    pub ready: Notify,
}

impl Default for EventInbox {
    fn default() -> Self {
        EventInbox {
            queue: Mutex::new(EventQueue::new(EVENT_QUEUE)),
            ready: Notify::new(),
        }
    }
}

impl EventInbox {
    fn queue(&self) -> std::sync::MutexGuard<'_, EventQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `event`, raised now.
    pub fn push(&self, event: AgentEvent) {
        self.queue().push(event, Instant::now());
        self.ready.notify_one();
    }

    /// Up to `max` series, taken off the queue; the session is woken again
    /// if more are left.
    pub fn take(&self, max: usize) -> Vec<Queued> {
        let mut q = self.queue();
        let taken = q.take(max);
        if !q.is_empty() {
            self.ready.notify_one();
        }
        taken
    }

    pub fn put_back(&self, taken: Vec<Queued>) {
        let mut q = self.queue();
        q.put_back(taken);
        if !q.is_empty() {
            self.ready.notify_one();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queue().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_proto::EventType;

    fn ev(reason: &str, message: &str) -> AgentEvent {
        AgentEvent {
            kind: EventType::Warning,
            reason: reason.into(),
            pod: "web".into(),
            message: message.into(),
        }
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn an_event_raised_offline_keeps_its_time() {
        let t0 = Instant::now();
        let mut q = EventQueue::new(8);
        q.push(ev("BackOff", "m"), t0);
        // Sent 90 s later, when the clock reads T.
        const T: u64 = 1_780_000_000_000;
        let b = batch(&q.take(64), t0 + Duration::from_secs(90), T);
        assert_eq!(b.sent_ms, T);
        assert_eq!(b.events.len(), 1);
        assert_eq!(
            (b.events[0].first_time_ms, b.events[0].time_ms),
            (T - 90_000, T - 90_000)
        );
        assert!(q.is_empty());
    }

    #[test]
    fn repeats_are_one_series_by_the_controllers_rule() {
        let t0 = Instant::now();
        let mut q = EventQueue::new(8);
        for i in 0..173u32 {
            q.push(
                ev("FailedSync", "disk full"),
                t0 + Duration::from_millis(u64::from(i) * 463),
            );
        }
        q.push(ev("FailedSync", "other"), t0);
        q.push(ev("BackOff", "disk full"), t0);
        assert_eq!(q.len(), 3);
        // Past the window since its last occurrence: a new series.
        let last = t0 + Duration::from_millis(172 * 463);
        q.push(
            ev("FailedSync", "disk full"),
            last + 10 * MIN + Duration::from_millis(1),
        );
        assert_eq!(q.len(), 4);
        const T: u64 = 1_780_000_000_000;
        let now = last + 20 * MIN;
        let b = batch(&q.take(64), now, T);
        let first = &b.events[0];
        assert_eq!(first.count, 173);
        assert_eq!(first.time_ms - first.first_time_ms, 172 * 463);
        assert_eq!(first.time_ms, T - 20 * 60_000);
        assert_eq!(b.events[3].count, 1);
        assert!(b.validate().is_ok());
    }

    #[test]
    fn the_queue_is_bounded_and_keeps_what_was_not_sent() {
        let t0 = Instant::now();
        let mut q = EventQueue::new(3);
        for i in 0..5 {
            q.push(ev("R", &format!("m{i}")), t0);
        }
        assert_eq!((q.len(), q.dropped), (3, 2));
        let taken = q.take(2);
        assert_eq!(taken[0].event.message, "m2", "the oldest dropped");
        q.push(ev("R", "m5"), t0);
        q.put_back(taken);
        assert_eq!(
            (q.len(), q.dropped),
            (3, 3),
            "the oldest (m2) dropped again"
        );
        let order: Vec<String> = q.take(9).into_iter().map(|q| q.event.message).collect();
        assert_eq!(
            order,
            ["m3", "m4", "m5"],
            "put back in front, within the bound"
        );
    }

    #[test]
    fn the_inbox_wakes_the_session_while_events_are_left() {
        let inbox = EventInbox::default();
        for i in 0..70 {
            inbox.push(ev("R", &format!("m{i}")));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            inbox.ready.notified().await;
            assert_eq!(inbox.take(64).len(), 64);
            // Six left: woken again at once.
            tokio::time::timeout(Duration::from_secs(5), inbox.ready.notified())
                .await
                .unwrap();
            assert_eq!(inbox.take(64).len(), 6);
            assert!(inbox.is_empty());
        });
    }
}
