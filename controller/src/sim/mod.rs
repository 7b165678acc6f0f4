//! The in-memory cluster: the real store (in memory), the real control
//! loop with the real controllers and scheduler, the real registry for
//! leases, and simulated agents ([`node`]), all on a virtual clock that
//! jumps to the next thing that will happen. Thousands of nodes and hours
//! of cluster time run in seconds, with the controller's default durations.
//!
//! Only the I/O differs from the real controller: instead of QUIC sessions,
//! each simulated node reads its desired pods with the same
//! `agents::desired_for` and reports with the same `Agents::statuses`;
//! instead of the wall clock, [`Sim::now`].

pub mod node;

use crate::agents::Agents;
use crate::api::admission::AdmissionConfig;
use crate::api::{Kind, Time};
use crate::apiserver::Objects;
use crate::cache::Cache;
use crate::controllers::plane::{ControlPlane, Scheduling};
use crate::controllers::Controller;
use crate::events::EventLog;
use crate::registry::{LeaseConfig, NodeRecord, Registry};
use crate::store::mem::MemStore;
use crate::store::{Store, Txn};
use node::{NodeSpec, SimNode};
use outpost_proto::names::SITE_LABEL;
use outpost_proto::{
    ApplyRequest, ApplyResult, ErrorMsg, ImageSummary, NodeInfo, NodeReport, Propagation,
    RuntimeInfo,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLockReadGuard};
use std::time::{Duration, Instant};

/// Timings of the simulated cluster; the defaults are the controller's.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub heartbeat: Duration,
    pub grace: Duration,
    /// How long a node takes to start a pod (pull excluded).
    pub pod_start: Duration,
    /// How long a node takes to stop a pod.
    pub pod_stop: Duration,
    /// How often the registry looks for expired leases (the controller: 1 s).
    pub lease_tick: Duration,
    /// How long a node takes to fetch an image it is asked for ahead of a
    /// rollout.
    pub image_pull: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            heartbeat: Duration::from_secs(5),
            grace: Duration::from_secs(20),
            pod_start: Duration::from_secs(1),
            pod_stop: Duration::from_secs(1),
            lease_tick: Duration::from_secs(1),
            image_pull: Duration::from_secs(1),
        }
    }
}

/// What the simulation counted.
#[derive(Debug, Default, Clone)]
pub struct SimStats {
    pub steps: u64,
    pub writes: u64,
    pub conflicts: u64,
    pub reconciles: u64,
}

/// Builds the controllers and scheduler of a (re)started control loop.
pub type Builder = Box<dyn Fn() -> (Vec<Box<dyn Controller>>, Option<Box<dyn Scheduling>>)>;

/// The in-memory cluster.
pub struct Sim {
    pub cfg: SimConfig,
    pub now: Time,
    base: Instant,
    store: Arc<MemStore>,
    plane: ControlPlane,
    build: Builder,
    registry: Registry,
    events: Arc<Mutex<EventLog>>,
    agents: Agents,
    nodes: BTreeMap<String, SimNode>,
    timers: BTreeSet<(Time, String)>,
    due: BTreeMap<String, Time>,
    next_heartbeat: Time,
    next_tick: Time,
    admission: AdmissionConfig,
    /// See [`Sim::set_image_never_ready`].
    unready_images: BTreeSet<String>,
    pub stats: SimStats,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.now)
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

/// Virtual time starts at a fixed, plausible wall-clock instant.
const EPOCH_MS: u64 = 1_796_000_000_000;

impl Sim {
    /// A cluster with no nodes running the standard controllers and the
    /// scheduler.
    pub fn standard(cfg: SimConfig) -> Sim {
        Sim::new(
            cfg,
            Box::new(|| {
                (
                    crate::controllers::standard(&Default::default()),
                    Some(
                        Box::new(crate::scheduler::Scheduler::new(Default::default()))
                            as Box<dyn Scheduling>,
                    ),
                )
            }),
        )
    }

    /// A cluster with no nodes whose control loop runs what `build` makes.
    pub fn new(cfg: SimConfig, build: Builder) -> Sim {
        let store = Arc::new(MemStore::new());
        let events = Arc::new(Mutex::new(EventLog::default()));
        let plane = Self::plane(&store, &events, &build);
        let now = Time(EPOCH_MS);
        Sim {
            registry: Registry::load(
                LeaseConfig { grace: cfg.grace },
                Vec::new(),
                Instant::now(),
                now.ms(),
            ),
            base: Instant::now(),
            next_heartbeat: now,
            next_tick: now,
            cfg,
            now,
            store,
            plane,
            build,
            events,
            agents: Agents::default(),
            nodes: BTreeMap::new(),
            timers: BTreeSet::new(),
            due: BTreeMap::new(),
            admission: AdmissionConfig::default(),
            unready_images: BTreeSet::new(),
            stats: SimStats::default(),
        }
    }

    fn plane(
        store: &Arc<MemStore>,
        events: &Arc<Mutex<EventLog>>,
        build: &Builder,
    ) -> ControlPlane {
        let mut plane = ControlPlane::new(store.clone() as Arc<dyn Store>, events.clone())
            .expect("a memory store lists");
        let (controllers, scheduler) = build();
        for c in controllers {
            plane.add_controller(c);
        }
        if let Some(s) = scheduler {
            plane.set_scheduler(s);
        }
        plane
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_millis(self.now.ms() - EPOCH_MS)
    }

    pub fn store(&self) -> &Arc<MemStore> {
        &self.store
    }

    /// The control loop's cache.
    pub fn cache(&self) -> RwLockReadGuard<'_, Cache> {
        self.plane
            .cache_lock()
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Events recorded so far about `object` (`deployment/web`), oldest first.
    pub fn events(&self, object: Option<&str>) -> Vec<outpost_proto::Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .list(object, usize::MAX)
    }

    fn commit_registry(&mut self, changes: Vec<crate::registry::Change>) {
        if changes.is_empty() {
            return;
        }
        let ops = {
            let mut ev = self.events.lock().unwrap_or_else(|p| p.into_inner());
            crate::cluster::registry_ops(changes, &mut ev, self.now.ms())
        };
        self.store.txn(Txn::ops(ops)).expect("memory store writes");
    }

    /// Enrols a node, reports it and makes it Ready.
    pub fn add_node(&mut self, spec: NodeSpec) {
        let name = spec.name.clone();
        let now = self.instant();
        let mut rec = NodeRecord::new(
            &name,
            BTreeMap::new(),
            agent_labels(&spec),
            format!("serial-{name}"),
            self.now.ms() + 365 * 86_400_000,
            self.now.ms(),
        );
        // It reads `agents::desired_for` whole: the current protocol.
        rec.protocol = outpost_proto::PROTOCOL_VERSION;
        let mut changes = self.registry.register(rec, now, self.now.ms());
        let index = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
        let report = node_report(&spec, index);
        changes.extend(self.registry.report(&name, report, now, self.now.ms()));
        self.commit_registry(changes);
        let mut node = SimNode::new(spec, index);
        node.unready_images = self.unready_images.clone();
        self.nodes.insert(name, node);
    }

    /// Makes pods started from now on with `image` (on every node, those
    /// added later too) run but never pass their readiness probe.
    pub fn set_image_never_ready(&mut self, image: &str) {
        self.unready_images.insert(image.to_string());
        for n in self.nodes.values_mut() {
            n.unready_images.insert(image.to_string());
        }
    }

    /// Names of the simulated nodes.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    pub fn node(&self, name: &str) -> Option<&SimNode> {
        self.nodes.get(name)
    }

    /// Cuts a node off (no heartbeats, no syncs, no reports) or brings it
    /// back (it then resumes from its acknowledged revision and reports
    /// everything it runs, as a reconnecting agent does).
    pub fn set_connected(&mut self, name: &str, on: bool) {
        let Some(n) = self.nodes.get_mut(name) else {
            return;
        };
        let was = n.connected;
        n.connected = on;
        if on && !was {
            let full = n.full_status();
            self.report(name, full);
            let now = self.instant();
            let changes = self.registry.heartbeat(name, now, self.now.ms());
            self.commit_registry(changes);
            self.sync_node(name);
        }
    }

    /// Brings a cut-off node back with its status report handled by the
    /// control loop before its first heartbeat renews the lease: what a
    /// real controller may do with a reconnecting agent's full report,
    /// which can reach the store while the node is still NotReady.
    pub fn reconnect_reporting_first(&mut self, name: &str) {
        let Some(n) = self.nodes.get_mut(name) else {
            return;
        };
        if n.connected {
            return;
        }
        n.connected = true;
        let full = n.full_status();
        self.report(name, full);
        self.settle();
        let now = self.instant();
        let changes = self.registry.heartbeat(name, now, self.now.ms());
        self.commit_registry(changes);
        self.sync_node(name);
    }

    /// Deletes a node as `outpostctl delete node` does (its record and its
    /// pods, in one write); the simulated box is gone with it.
    pub fn delete_node(&mut self, name: &str) {
        self.registry.remove(name);
        let ops = {
            let cache = self.plane.cache();
            let c = cache.read().unwrap_or_else(|p| p.into_inner());
            self.agents.forget_node(name, &c);
            crate::cluster::node_deletion_ops(name, &c)
        };
        self.store.txn(Txn::ops(ops)).expect("memory store writes");
        self.nodes.remove(name);
        self.set_timer(name, None);
    }

    /// Deletes node `name` while its box is cut off, as `delete node` of
    /// an unreachable node does: the record and its pods go, and the box
    /// keeps running what it ran, with its acknowledged revision.
    pub fn delete_node_keeping_box(&mut self, name: &str) {
        self.set_connected(name, false);
        let box_ = self.nodes.remove(name);
        self.delete_node(name);
        if let Some(b) = box_ {
            self.nodes.insert(name.to_string(), b);
        }
    }

    /// The box of `name` enrols again under the same name (a new node
    /// record: a new incarnation) and reconnects from the revision it had
    /// acknowledged as the earlier node.
    pub fn re_enrol(&mut self, name: &str) {
        let Some(spec) = self.nodes.get(name).map(|n| n.spec.clone()) else {
            return;
        };
        let now = self.instant();
        let mut rec = NodeRecord::new(
            name,
            BTreeMap::new(),
            agent_labels(&spec),
            format!("serial-{name}-again"),
            self.now.ms() + 365 * 86_400_000,
            self.now.ms(),
        );
        rec.protocol = outpost_proto::PROTOCOL_VERSION;
        let mut changes = self.registry.register(rec, now, self.now.ms());
        let index = self.nodes.get(name).map_or(0, SimNode::index);
        changes.extend(
            self.registry
                .report(name, node_report(&spec, index), now, self.now.ms()),
        );
        self.commit_registry(changes);
        // The controller's cache sees the new record before the session.
        self.run_for(Duration::from_millis(10));
        self.set_connected(name, true);
    }

    fn report(&mut self, name: &str, update: outpost_proto::PodStatusUpdate) {
        let cache = self.plane.cache();
        let inbox = self.plane.inbox();
        if let Err(e) = self.agents.statuses(name, update, &cache, &inbox, self.now) {
            panic!("simulated node {name} sent a status the controller refused: {e}");
        }
    }

    fn sync_node(&mut self, name: &str) {
        let cache = self.plane.cache();
        let (start, stop, pull) = (self.cfg.pod_start, self.cfg.pod_stop, self.cfg.image_pull);
        let now = self.now;
        let Some(n) = self.nodes.get_mut(name) else {
            return;
        };
        {
            let c = cache.read().unwrap_or_else(|p| p.into_inner());
            n.sync(&c, now, start, stop, pull);
        }
        let due = n.due();
        self.set_timer(name, due);
        if let Some(update) = self.nodes.get_mut(name).and_then(|n| n.advance(now)) {
            self.report(name, update);
        }
        self.report_images(name);
    }

    /// Reports a node's image list again when an image arrived.
    fn report_images(&mut self, name: &str) {
        let Some(n) = self.nodes.get_mut(name) else {
            return;
        };
        // A node cut off reports its images once it is back.
        if !n.connected || !n.take_images_changed() {
            return;
        }
        let report = node_report(&n.spec, n.index());
        let at = self.instant();
        let changes = self.registry.report(name, report, at, self.now.ms());
        self.commit_registry(changes);
    }

    /// Node `name`'s agent says hello in protocol `version` (an older
    /// agent: 3 is not asked for images).
    pub fn set_protocol(&mut self, name: &str, version: u32) {
        let changes = self.registry.session_protocol(name, version);
        self.commit_registry(changes);
    }

    /// Whether node `name` gets the images it is asked to fetch (see
    /// [`SimNode::can_pull`]).
    pub fn set_can_pull(&mut self, name: &str, on: bool) {
        if let Some(n) = self.nodes.get_mut(name) {
            n.can_pull = on;
        }
    }

    fn set_timer(&mut self, name: &str, due: Option<Time>) {
        if let Some(old) = self.due.remove(name) {
            self.timers.remove(&(old, name.to_string()));
        }
        if let Some(t) = due {
            self.due.insert(name.to_string(), t);
            self.timers.insert((t, name.to_string()));
        }
    }

    /// Validates and applies manifests (YAML, one or more documents), as
    /// `outpostctl apply -f` does.
    pub fn apply_yaml(&mut self, text: &str) -> Result<Vec<ApplyResult>, ErrorMsg> {
        let docs = crate::manifest::documents(text).map_err(|e| {
            crate::cluster::err(outpost_proto::ErrorCode::InvalidRequest, e.to_string())
        })?;
        let documents = docs
            .into_iter()
            .enumerate()
            .map(|(i, v)| outpost_proto::Document {
                source: format!("document {}", i + 1),
                json: serde_json::to_vec(&v).unwrap_or_default(),
            })
            .collect();
        self.apply(ApplyRequest {
            documents,
            dry_run: false,
        })
    }

    /// The objects API over this cluster's store and cache.
    fn objects(&self) -> Objects<'_> {
        Objects {
            store: self.store.as_ref(),
            cache: self.plane.cache_lock(),
            admission: &self.admission,
        }
    }

    pub fn apply(&mut self, req: ApplyRequest) -> Result<Vec<ApplyResult>, ErrorMsg> {
        let objects = self.objects();
        let (results, writes) = objects.plan_apply(&req, self.now)?;
        self.commit(writes)?;
        Ok(results)
    }

    fn commit(&self, writes: Vec<crate::apiserver::Planned>) -> Result<(), ErrorMsg> {
        let (txns, what): (Vec<Txn>, Vec<String>) =
            writes.into_iter().map(|p| (p.txn, p.what)).unzip();
        let r = self
            .store
            .txn_batch(txns)
            .map_err(|e| crate::cluster::err(outpost_proto::ErrorCode::Internal, e.to_string()))?;
        match r.iter().zip(what).find(|(r, _)| !r.succeeded) {
            Some((_, w)) => Err(crate::cluster::err(
                outpost_proto::ErrorCode::Conflict,
                format!("{w} changed meanwhile"),
            )),
            None => Ok(()),
        }
    }

    /// Deletes an object as `outpostctl delete` does.
    pub fn delete(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        propagation: Propagation,
    ) -> Result<(), ErrorMsg> {
        let objects = self.objects();
        let (_, planned) = objects.plan_delete(kind, ns, name, propagation, None, self.now)?;
        if let Some(p) = planned {
            self.commit(p)?;
        }
        Ok(())
    }

    /// Sets a Deployment's or ReplicaSet's replicas.
    pub fn scale(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        replicas: i32,
    ) -> Result<(), ErrorMsg> {
        let objects = self.objects();
        let p = objects.plan_scale(kind, ns, name, replicas)?;
        self.commit(vec![p])
    }

    /// Marks a node (un)schedulable, as `outpostctl cordon` does.
    pub fn cordon(&mut self, name: &str, on: bool) {
        let changes = self
            .registry
            .set_unschedulable(name, on)
            .unwrap_or_else(|| panic!("no simulated node {name}"));
        self.commit_registry(changes);
    }

    /// Evicts a pod through the eviction check, as the operator API's
    /// `Evict` does: the pod's deletion and its budget's status in one
    /// guarded transaction (a failed guard is decided again, as the API
    /// does).
    pub fn evict(
        &mut self,
        ns: &str,
        name: &str,
        grace_seconds: Option<i64>,
    ) -> Result<crate::controllers::eviction::Allowed, ErrorMsg> {
        for _ in 0..5 {
            let (ev, planned) = self
                .objects()
                .plan_evict(ns, name, grace_seconds, self.now)?;
            let Some(p) = planned else {
                return Ok(ev.allowed);
            };
            match self.commit(vec![p]) {
                Ok(()) => return Ok(ev.allowed),
                Err(e) if e.code == outpost_proto::ErrorCode::Conflict => self.settle(),
                Err(e) => return Err(e),
            }
        }
        Err(crate::cluster::err(
            outpost_proto::ErrorCode::Conflict,
            format!("pod {ns}/{name} kept changing"),
        ))
    }

    /// Throws the control loop away and starts a new one over the same
    /// store, as a controller restart does (nodes keep running).
    pub fn restart_controller(&mut self) {
        let records: Vec<NodeRecord> = self
            .store
            .list(&crate::store::keys::objects("nodes", None))
            .expect("memory store lists")
            .kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect();
        self.registry = Registry::load(
            LeaseConfig {
                grace: self.cfg.grace,
            },
            records,
            self.instant(),
            self.now.ms(),
        );
        self.plane = Self::plane(&self.store, &self.events, &self.build);
        self.agents = Agents::default();
        // Agents reconnect: each reports everything it runs.
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for n in names {
            if self.nodes[&n].connected {
                let full = self.nodes.get_mut(&n).map(SimNode::full_status);
                if let Some(full) = full {
                    self.report(&n, full);
                }
            }
        }
    }

    /// Runs the control loop until nothing is ready at the current time.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let report = self.plane.step(self.now).expect("memory store writes");
            self.stats.steps += 1;
            self.stats.writes += report.writes as u64;
            self.stats.conflicts += report.conflicts as u64;
            self.stats.reconciles += report.reconciles as u64;
            let mut touched = report.nodes_touched;
            if report.relisted {
                touched.extend(self.nodes.keys().cloned());
            }
            for n in &touched {
                self.sync_node(n);
            }
            if !report.busy && touched.is_empty() && !self.plane.ready_now() {
                return;
            }
        }
        panic!(
            "the control loop did not settle at {} (10,000 steps)",
            self.now
        );
    }

    /// Advances virtual time by `d`, running everything due on the way.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now.plus(d);
        loop {
            self.settle();
            // Nodes whose pods changed state.
            let now = self.now;
            let due: Vec<String> = self
                .timers
                .iter()
                .take_while(|(t, _)| *t <= now)
                .map(|(_, n)| n.clone())
                .collect();
            for n in &due {
                let update = self.nodes.get_mut(n).and_then(|x| x.advance(now));
                let next = self.nodes.get(n).and_then(SimNode::due);
                self.set_timer(n, next);
                if let Some(u) = update {
                    self.report(n, u);
                }
                self.report_images(n);
            }
            if self.next_heartbeat <= now {
                let at = self.instant();
                let names: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|(_, n)| n.connected)
                    .map(|(k, _)| k.clone())
                    .collect();
                let mut changes = Vec::new();
                for n in names {
                    changes.extend(self.registry.heartbeat(&n, at, now.ms()));
                }
                self.commit_registry(changes);
                self.next_heartbeat = now.plus(self.cfg.heartbeat);
            }
            if self.next_tick <= now {
                let changes = self.registry.tick(self.instant(), now.ms());
                self.commit_registry(changes);
                self.next_tick = now.plus(self.cfg.lease_tick);
            }
            self.settle();
            let next = [
                self.plane.next_wakeup(),
                self.timers.first().map(|(t, _)| *t),
                Some(self.next_heartbeat),
                Some(self.next_tick),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(end);
            if next > end {
                self.now = end;
                self.settle();
                return;
            }
            // What was due now ran above; never stand still.
            self.now = next.max(self.now.plus(Duration::from_millis(1)));
        }
    }

    /// Runs until `done` holds (checked after every wake-up) or `max`
    /// virtual time passes; returns the virtual time it took.
    pub fn run_until(
        &mut self,
        max: Duration,
        mut done: impl FnMut(&Cache) -> bool,
    ) -> Result<Duration, String> {
        let start = self.now;
        let end = start.plus(max);
        loop {
            self.settle();
            if done(&self.cache()) {
                return Ok(self.now.since(start));
            }
            if self.now >= end {
                return Err(format!("not reached within {max:?} of virtual time"));
            }
            let step = [
                self.plane.next_wakeup(),
                self.timers.first().map(|(t, _)| *t),
                Some(self.next_heartbeat),
                Some(self.next_tick),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(end)
            .min(end);
            let d = step.since(self.now).max(Duration::from_millis(1));
            self.run_for(d);
        }
    }
}

/// The labels a simulated agent asserts: its own and its site.
fn agent_labels(spec: &NodeSpec) -> BTreeMap<String, String> {
    let mut labels = spec.labels.clone();
    labels.insert(SITE_LABEL.to_string(), spec.site.clone());
    labels
}

/// What a simulated agent reports: its spec's resources, labels and images.
fn node_report(spec: &NodeSpec, index: u32) -> NodeReport {
    let name = spec.name.clone();
    NodeReport {
        info: NodeInfo {
            arch: spec.arch.clone(),
            os: "linux".into(),
            hostname: name.clone(),
            agent_version: "sim".into(),
            runtime: RuntimeInfo {
                name: "sim".into(),
                version: "1".into(),
                available: true,
                message: String::new(),
            },
            addresses: vec![format!("192.168.{}.{}", (index >> 8) & 0xff, index & 0xff)],
            ..NodeInfo::default()
        },
        capacity: spec.allocatable,
        allocatable: spec.allocatable,
        conditions: Vec::new(),
        signals: Vec::new(),
        labels: agent_labels(spec),
        images: spec
            .images
            .iter()
            .map(|i| ImageSummary {
                names: vec![i.clone()],
                size_bytes: 100 << 20,
                architecture: spec.arch.clone(),
                os: "linux".into(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod drain_tests;
#[cfg(test)]
mod failure_tests;
#[cfg(test)]
mod prefetch_tests;
#[cfg(test)]
mod rollout_tests;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
