//! The control loop: one thread (or, in tests, one call at a time) that
//! keeps the cache current from the store's watch, drives every controller
//! and the scheduler from their queues, writes pod statuses from the
//! agents, and commits what they decide in one group commit per step.
//!
//! ```text
//!  store --watch--> cache --changes--> controllers' queues, scheduler, node wake-ups
//!                     |                     |
//!                     +--- read by ---------+--> Writes --txn_batch--> store
//! ```
//!
//! [`ControlPlane::step`] is synchronous and takes `now`: the real
//! controller calls it from its loop thread with the wall clock, the
//! in-memory cluster with a virtual one.

use super::queue::WorkQueue;
use super::status::StatusInbox;
use super::{Controller, Write};
use crate::api::machinery::{self, Deletion};
use crate::api::{Kind, Object, Time};
use crate::cache::{Cache, Change};
use crate::events::EventLog;
use crate::store::{keys, Compare, Op, Store, StoreError, Txn, Watcher};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, RwLock};

/// Keys one controller reconciles per step, so one busy controller cannot
/// hold the loop (and everyone's writes) for long.
pub const KEYS_PER_STEP: usize = 2_000;
/// Watch events folded into the cache per poll.
const EVENTS_PER_POLL: usize = 10_000;

/// The scheduler as the loop drives it.
pub trait Scheduling: Send {
    /// Folds a cache change into the scheduler's own state.
    fn on_change(&mut self, change: &Change, cache: &Cache, now: Time);
    /// Everything changed (relist): rebuild from the cache.
    fn resync(&mut self, cache: &Cache, now: Time);
    /// Decides placements for pending pods: binding writes (pod updates
    /// with `spec.nodeName`), status and event writes for pods that fit
    /// nowhere, and deletions of preemption victims.
    fn schedule(&mut self, cache: &Cache, now: Time) -> Vec<Write>;
    /// Whether a write it asked for was committed.
    fn written(&mut self, write: &Write, committed: bool, now: Time);
    /// When it next needs a `schedule` call with nothing else happening.
    fn next_wakeup(&self) -> Option<Time>;
    /// Pods waiting for a placement.
    fn pending(&self) -> usize;
}

/// Where a write came from, to route its result back.
#[derive(Debug, Clone)]
enum Origin {
    Controller(usize, String),
    Scheduler,
    Status(String, super::status::Entry),
}

/// What one step did.
#[derive(Debug, Default, Clone)]
pub struct StepReport {
    pub changes: usize,
    pub reconciles: usize,
    pub writes: usize,
    pub conflicts: usize,
    /// Nodes whose desired pods changed (their sessions should send).
    pub nodes_touched: BTreeSet<String>,
    /// Work is ready right now: call `step` again without waiting.
    pub busy: bool,
    /// The cache had to be rebuilt from a fresh list.
    pub relisted: bool,
    /// A Service or Endpoints changed (or the cache was rebuilt): the
    /// agents' Service routes may have changed.
    pub routes_changed: bool,
}

struct Slot {
    controller: Box<dyn Controller>,
    queue: WorkQueue,
}

/// The control loop's state.
pub struct ControlPlane {
    store: Arc<dyn Store>,
    cache: Arc<RwLock<Cache>>,
    watcher: Watcher,
    slots: Vec<Slot>,
    scheduler: Option<Box<dyn Scheduling>>,
    inbox: Arc<Mutex<StatusInbox>>,
    events: Arc<Mutex<EventLog>>,
    started: bool,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ControlPlane {
    /// A loop over `store`, with the cache loaded from it.
    pub fn new(
        store: Arc<dyn Store>,
        events: Arc<Mutex<EventLog>>,
    ) -> Result<ControlPlane, StoreError> {
        let cache = Cache::load(store.as_ref())?;
        let watcher = store.watch(keys::REGISTRY, cache.revision() + 1);
        Ok(ControlPlane {
            store,
            cache: Arc::new(RwLock::new(cache)),
            watcher,
            slots: Vec::new(),
            scheduler: None,
            inbox: Arc::new(Mutex::new(StatusInbox::default())),
            events,
            started: false,
        })
    }

    pub fn add_controller(&mut self, c: Box<dyn Controller>) {
        self.slots.push(Slot {
            controller: c,
            queue: WorkQueue::new(),
        });
    }

    pub fn set_scheduler(&mut self, s: Box<dyn Scheduling>) {
        self.scheduler = Some(s);
    }

    /// The cache, shared with the API and the agents' sessions (read-only
    /// for them).
    pub fn cache(&self) -> Arc<RwLock<Cache>> {
        self.cache.clone()
    }

    /// The cache's lock, borrowed.
    pub fn cache_lock(&self) -> &RwLock<Cache> {
        &self.cache
    }

    /// Work is waiting right now: store changes not yet in the cache,
    /// statuses not yet written, or ready keys.
    pub fn ready_now(&self) -> bool {
        self.watcher.has_news()
            || !lock(&self.inbox).is_empty()
            || self.slots.iter().any(|s| s.queue.ready_len() > 0)
    }

    /// Where the server drops agents' pod statuses.
    pub fn inbox(&self) -> Arc<Mutex<StatusInbox>> {
        self.inbox.clone()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whether the watch has news for the cache.
    pub fn has_news(&self) -> bool {
        self.watcher.has_news()
    }

    /// Waits until the store has a change past the cache.
    pub async fn changed(&mut self) {
        self.watcher.changed().await;
    }

    /// When the loop next has something to do with nothing else happening.
    pub fn next_wakeup(&self) -> Option<Time> {
        let q = self.slots.iter().filter_map(|s| s.queue.next_due()).min();
        let s = self.scheduler.as_ref().and_then(|s| s.next_wakeup());
        match (q, s) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Pods the scheduler still has to place.
    pub fn pending_pods(&self) -> usize {
        self.scheduler.as_ref().map_or(0, |s| s.pending())
    }

    /// Every queue is empty and nothing is delayed.
    pub fn is_idle(&self) -> bool {
        self.slots.iter().all(|s| s.queue.is_idle())
            && !self.watcher.has_news()
            && lock(&self.inbox).is_empty()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Folds the watch into the cache and fans the changes out.
    fn sync(&mut self, now: Time, report: &mut StepReport) -> Result<(), StoreError> {
        loop {
            let events = match self.watcher.poll(EVENTS_PER_POLL) {
                Ok(e) => e,
                Err(compacted) => {
                    tracing::warn!("{compacted}; rebuilding the cache");
                    let fresh = Cache::load(self.store.as_ref())?;
                    self.watcher = self.store.watch(keys::REGISTRY, fresh.revision() + 1);
                    *self.cache.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                    self.resync(now);
                    report.relisted = true;
                    report.routes_changed = true;
                    // Every node may have missed something.
                    let cache = self.read();
                    let nodes: Vec<String> = cache.keys(Kind::Node);
                    drop(cache);
                    report.nodes_touched.extend(nodes);
                    continue;
                }
            };
            if events.is_empty() {
                return Ok(());
            }
            let changes = self
                .cache
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .apply(&events);
            report.changes += changes.len();
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            let mut keys = Vec::new();
            for ch in &changes {
                for slot in &mut self.slots {
                    keys.clear();
                    slot.controller.keys_for(ch, &cache, &mut keys);
                    for k in &keys {
                        slot.queue.add(k);
                    }
                }
                if let Some(s) = &mut self.scheduler {
                    s.on_change(ch, &cache, now);
                }
                if ch.kind == Kind::Pod {
                    touched_nodes(ch, &cache, &mut report.nodes_touched);
                }
                report.routes_changed |= matches!(ch.kind, Kind::Service | Kind::Endpoints);
                if ch.kind == Kind::Deployment {
                    let deployment = |c: &Option<crate::cache::Cached>| match c {
                        Some(crate::cache::Cached::Deployment(d)) => Some(d.clone()),
                        _ => None,
                    };
                    let (old, new) = (deployment(&ch.old), deployment(&ch.new));
                    super::prefetch::touched_nodes(
                        &cache,
                        old.as_deref(),
                        new.as_deref(),
                        &mut report.nodes_touched,
                    );
                }
            }
        }
    }

    fn resync(&mut self, now: Time) {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        for slot in &mut self.slots {
            for k in slot.controller.all_keys(&cache) {
                slot.queue.add(&k);
            }
        }
        if let Some(s) = &mut self.scheduler {
            s.resync(&cache, now);
        }
    }

    /// One round: watch into cache, statuses, controllers, scheduler,
    /// commit.
    pub fn step(&mut self, now: Time) -> Result<StepReport, StoreError> {
        let mut report = StepReport::default();
        if !self.started {
            self.started = true;
            self.resync(now);
        }
        self.sync(now, &mut report)?;
        for slot in &mut self.slots {
            slot.queue.promote(now);
        }
        let mut writes: Vec<(Origin, Write)> = Vec::new();
        {
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            for (pod, entry) in lock(&self.inbox).take() {
                if let Some(w) = super::status::fold(&cache, &pod, &entry) {
                    writes.push((Origin::Status(pod, entry), w));
                }
            }
            for (i, slot) in self.slots.iter_mut().enumerate() {
                for _ in 0..KEYS_PER_STEP {
                    let Some(key) = slot.queue.pop() else { break };
                    report.reconciles += 1;
                    let out = slot.controller.reconcile(&key, &cache, now);
                    if let Some(after) = out.requeue_after {
                        slot.queue.add_at(&key, now.plus(after));
                    }
                    if out.writes.is_empty() {
                        slot.queue.forget(&key);
                    }
                    for w in out.writes {
                        writes.push((Origin::Controller(i, key.clone()), w));
                    }
                }
                report.busy |= slot.queue.ready_len() > 0;
            }
            if let Some(s) = &mut self.scheduler {
                for w in s.schedule(&cache, now) {
                    writes.push((Origin::Scheduler, w));
                }
            }
        }
        self.commit(writes, now, &mut report)?;
        report.busy |= self.watcher.has_news();
        Ok(report)
    }

    /// Turns writes into guarded transactions, commits them in one batch
    /// and routes each result back to whoever asked.
    fn commit(
        &mut self,
        writes: Vec<(Origin, Write)>,
        now: Time,
        report: &mut StepReport,
    ) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut txns = Vec::with_capacity(writes.len());
        let mut origins = Vec::with_capacity(writes.len());
        let mut settled = Vec::new();
        {
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            let mut events = lock(&self.events);
            for (origin, w) in writes {
                match to_txn(&w, &cache, &mut events, now) {
                    Some(t) => {
                        txns.push(t);
                        origins.push((origin, w));
                    }
                    // Nothing to write (already gone, already deleting):
                    // the decision holds.
                    None => settled.push((origin, w)),
                }
            }
        }
        for (origin, w) in settled {
            self.route(origin, &w, true, now);
        }
        report.writes += txns.len();
        let results = self.store.txn_batch(txns)?;
        for ((origin, w), r) in origins.into_iter().zip(results) {
            if !r.succeeded {
                report.conflicts += 1;
            }
            self.route(origin, &w, r.succeeded, now);
        }
        Ok(())
    }

    fn route(&mut self, origin: Origin, w: &Write, ok: bool, now: Time) {
        match origin {
            Origin::Controller(i, key) => {
                let q = &mut self.slots[i].queue;
                if ok {
                    q.forget(&key);
                } else {
                    let delay = q.add_failed(&key, now);
                    tracing::debug!(controller = self.slots[i].controller.name(), %key, ?delay, "write conflicted; retrying");
                }
            }
            Origin::Scheduler => {
                if let Some(s) = &mut self.scheduler {
                    s.written(w, ok, now);
                }
            }
            Origin::Status(pod, entry) => {
                if !ok {
                    lock(&self.inbox).retry(pod, entry);
                }
            }
        }
    }
}

/// Nodes that must hear about a pod change: the pod's node when what the
/// agent runs changed (spec generation, deletion, binding).
fn touched_nodes(ch: &Change, cache: &Cache, out: &mut BTreeSet<String>) {
    let node_of = |c: &Option<crate::cache::Cached>| {
        c.as_ref()
            .and_then(|c| c.as_pod())
            .and_then(|p| p.node().map(str::to_string))
    };
    let (old, new) = (node_of(&ch.old), node_of(&ch.new));
    let agent_part = |c: &Option<crate::cache::Cached>| {
        c.as_ref().and_then(|c| c.as_pod()).map(|p| {
            (
                p.metadata.generation,
                p.metadata.is_deleting(),
                p.node().map(str::to_string),
            )
        })
    };
    if agent_part(&ch.old) == agent_part(&ch.new) {
        return;
    }
    let _ = cache;
    out.extend(old);
    out.extend(new);
}

/// The guarded transaction that carries out `w`; `None` when there is
/// nothing to write.
fn to_txn(w: &Write, cache: &Cache, events: &mut EventLog, now: Time) -> Option<Txn> {
    match w {
        Write::Create(obj) => {
            let mut obj = obj.clone();
            machinery::prepare_create(&mut obj, now);
            let key = obj.key();
            Some(Txn::guarded(
                vec![Compare::absent(key.clone())],
                vec![Op::put(key, obj.to_stored())],
            ))
        }
        Write::Update(obj) => {
            let key = obj.key();
            let ns_name = crate::api::ns_name(&obj.meta().namespace, &obj.meta().name);
            let rev = obj.meta().revision();
            let mut obj = obj.clone();
            // Gone meanwhile: nothing to carry over, the compare below fails.
            if let Some(old) = cache.object(obj.kind(), &ns_name) {
                machinery::prepare_update(&old, &mut obj);
            }
            Some(Txn::guarded(
                vec![Compare::mod_revision(key.clone(), rev)],
                vec![Op::put(key, obj.to_stored())],
            ))
        }
        Write::Delete {
            kind,
            namespace,
            name,
            uid,
        } => {
            let ns_name = crate::api::ns_name(namespace, name);
            let cur = cache.object(*kind, &ns_name)?;
            if &cur.meta().uid != uid {
                return None;
            }
            let key = cur.key();
            let guard = vec![Compare::mod_revision(key.clone(), cur.meta().revision())];
            match machinery::deletion(&cur, now) {
                Deletion::Now => Some(Txn::guarded(guard, vec![Op::delete(key)])),
                Deletion::Graceful(obj) => {
                    Some(Txn::guarded(guard, vec![Op::put(key, obj.to_stored())]))
                }
                Deletion::AlreadyDeleting => None,
            }
        }
        Write::Purge {
            kind,
            namespace,
            name,
            revision,
        } => {
            let key = kind.key(namespace, name);
            Some(Txn::guarded(
                vec![Compare::mod_revision(key.clone(), *revision)],
                vec![Op::delete(key)],
            ))
        }
        Write::Event {
            kind,
            reason,
            object,
            message,
        } => Some(Txn::ops(events.record(
            *kind,
            reason,
            object.clone(),
            message.clone(),
            now.ms(),
        ))),
    }
}

/// A write's object, for routing and tests.
pub fn written_object(w: &Write) -> Option<&Object> {
    match w {
        Write::Create(o) | Write::Update(o) => Some(o),
        _ => None,
    }
}

/// Runs the control loop on its own thread with the wall clock: steps
/// whenever the store changed, a status arrived or a queued key comes due,
/// and calls `after` with each step's report (to wake agent sessions and
/// publish the cache's revision). The thread ends when `stop` is set.
pub fn run(
    mut plane: ControlPlane,
    runtime: tokio::runtime::Handle,
    inbox_notify: Arc<tokio::sync::Notify>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    mut after: impl FnMut(&StepReport, &Cache) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("control-loop".into())
        .spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let now = Time(outpost_proto::clock::now_ms());
                let report = match plane.step(now) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!("control loop: {e}; retrying in 1s");
                        std::thread::sleep(std::time::Duration::from_secs(1));
                        continue;
                    }
                };
                {
                    let cache = plane.cache.read().unwrap_or_else(|p| p.into_inner());
                    after(&report, &cache);
                }
                if report.busy {
                    continue;
                }
                // Sleep until something happens, at most a second (so a
                // stop is noticed and time-based work is never late by
                // more than that).
                let wake = plane
                    .next_wakeup()
                    .map_or(1000, |t| t.ms().saturating_sub(now.ms()))
                    .min(1000);
                let notify = inbox_notify.clone();
                runtime.block_on(async {
                    tokio::select! {
                        () = plane.changed() => {}
                        () = notify.notified() => {}
                        () = tokio::time::sleep(std::time::Duration::from_millis(wake)) => {}
                    }
                });
            }
        })
        .expect("spawning the control loop thread")
}
