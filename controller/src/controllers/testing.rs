//! A small cluster on a virtual clock for the controllers' tests.
//!
//! A real [`ControlPlane`] over a [`MemStore`], driven one step at a time
//! at a virtual `now` the test advances. Around it, stand-ins for what this
//! tree does not have yet or what runs elsewhere:
//! - nodes are written as [`NodeRecord`]s under `/registry/nodes/NAME`, as
//!   the registry writes them, and can be turned NotReady and back;
//! - a round-robin [`Scheduling`] binds every unbound pod to the next
//!   Ready node (no scheduler exists in this tree);
//! - after every step, simulated agents report the pods bound to their
//!   (Ready) node through [`ControlPlane::inbox`], as the server does:
//!   Running and Ready with a pod IP by default, or as a test says per pod
//!   or per image (not ready, failed with a reason); pods being deleted
//!   are reported gone, so the plane removes them. Only changed reports
//!   are sent, as agents do.
//!
//! Operator actions (create, update, delete) are written to the store the
//! way the API writes them ([`machinery`]), outside the plane.

use super::plane::{ControlPlane, Scheduling, StepReport};
use super::status::{Entry, Report};
use super::{standard, Controller, ControllersConfig, Write};
use crate::api::apps::{Deployment, DeploymentSpec, ReplicaSet, ReplicaSetSpec, RollingUpdate};
use crate::api::machinery::{self, Deletion};
use crate::api::meta::IntOrString;
use crate::api::pod::{Container, ContainerPort, PodSpec, PodTemplateSpec};
use crate::api::selector::LabelSelector;
use crate::api::service::{ServicePort, ServiceSpec};
use crate::api::{Kind, Object, ObjectMeta, Pod, Service, Time};
use crate::cache::{Cache, Change};
use crate::events::EventLog;
use crate::registry::NodeRecord;
use crate::store::mem::MemStore;
use crate::store::Store;
use outpost_proto::pod as wire;
use outpost_proto::{Condition, ConditionStatus, ConditionType, Event};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

/// Virtual time the harness starts at (well after the epoch, so times
/// subtract without saturating).
pub const START: Time = Time(1_000_000);
/// Most steps [`Harness::settle`] takes before it calls the cluster stuck.
const MAX_SETTLE_STEPS: usize = 2_000;

/// How a pod's simulated containers behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Running, every container ready (the default).
    Ready,
    /// Running, not ready.
    NotReady,
    /// Finished for good with this pod-level reason (`ExecFormatError`,
    /// `Evicted`).
    Fail(String),
    /// The agent says nothing about it.
    Silent,
}

/// Binds every unbound pod to the next Ready, schedulable node, in name
/// order.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: usize,
    pending: usize,
}

impl Scheduling for RoundRobin {
    fn on_change(&mut self, _: &Change, _: &Cache, _: Time) {}
    fn resync(&mut self, _: &Cache, _: Time) {}

    fn schedule(&mut self, cache: &Cache, _now: Time) -> Vec<Write> {
        let mut nodes: Vec<&str> = cache
            .nodes()
            .filter(|n| n.is_ready() && !n.unschedulable)
            .map(|n| n.name.as_str())
            .collect();
        nodes.sort_unstable();
        let unbound: Vec<&String> = cache.unbound_pods().collect();
        self.pending = unbound.len();
        if nodes.is_empty() {
            return Vec::new();
        }
        unbound
            .into_iter()
            .filter_map(|k| cache.pod(k))
            .map(|p| {
                let mut copy = (**p).clone();
                copy.spec.node_name = nodes[self.next % nodes.len()].to_string();
                self.next += 1;
                Write::Update(Object::Pod(copy))
            })
            .collect()
    }

    fn written(&mut self, _: &Write, _: bool, _: Time) {}

    fn next_wakeup(&self) -> Option<Time> {
        None
    }

    fn pending(&self) -> usize {
        self.pending
    }
}

/// The cluster (see the module doc).
pub struct Harness {
    pub plane: ControlPlane,
    pub store: Arc<MemStore>,
    pub events: Arc<Mutex<EventLog>>,
    cache: Arc<RwLock<Cache>>,
    pub now: Time,
    by_pod: HashMap<String, Behaviour>,
    by_image: HashMap<String, Behaviour>,
    restarts: HashMap<String, u32>,
    /// Nodes whose agent is silent (unreachable).
    silent: BTreeSet<String>,
    /// Last report sent per pod key.
    reported: HashMap<String, (String, Report)>,
    ips: HashMap<String, String>,
    /// Writes over every step so far.
    pub writes: usize,
    pub steps: usize,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// The standard controllers with their default tunables.
    pub fn new() -> Harness {
        Harness::with(standard(&ControllersConfig::default()))
    }

    pub fn with(controllers: Vec<Box<dyn Controller>>) -> Harness {
        let store = Arc::new(MemStore::new());
        let events = Arc::new(Mutex::new(EventLog::default()));
        let mut plane =
            ControlPlane::new(store.clone(), events.clone()).expect("plane over a memory store");
        for c in controllers {
            plane.add_controller(c);
        }
        plane.set_scheduler(Box::new(RoundRobin::default()));
        let cache = plane.cache();
        Harness {
            plane,
            store,
            events,
            cache,
            now: START,
            by_pod: HashMap::new(),
            by_image: HashMap::new(),
            restarts: HashMap::new(),
            silent: BTreeSet::new(),
            reported: HashMap::new(),
            ips: HashMap::new(),
            writes: 0,
            steps: 0,
        }
    }

    /// A cache loaded fresh from the store: what the last step committed
    /// and every operator write since (the plane's own cache catches up at
    /// the start of the next step).
    pub fn snapshot(&self) -> Cache {
        Cache::load(self.store.as_ref()).expect("load")
    }

    /// The plane's cache (current as of the start of the last step).
    pub fn cache(&self) -> RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(|p| p.into_inner())
    }

    // ---- nodes ----

    pub fn node_record(&self, name: &str) -> Option<NodeRecord> {
        let kv = self.store.get(&Kind::Node.key("", name)).expect("read")?;
        Some(serde_json::from_slice(&kv.value).expect("node record"))
    }

    pub fn put_node(&self, rec: &NodeRecord) {
        self.store
            .put(
                &Kind::Node.key("", &rec.name),
                serde_json::to_vec(rec).expect("json"),
            )
            .expect("write node");
    }

    /// A Ready node with address `127.0.1.N` (N its number among the
    /// nodes), in `site` when given.
    pub fn add_node(&mut self, name: &str, site: Option<&str>) {
        let n = self
            .store
            .list(&Kind::Node.prefix(None))
            .expect("list")
            .kvs
            .len()
            + 1;
        let mut labels = BTreeMap::new();
        if let Some(s) = site {
            labels.insert(outpost_proto::names::SITE_LABEL.to_string(), s.to_string());
        }
        let mut rec = NodeRecord::new(name, labels, BTreeMap::new(), "1".into(), 0, self.now.ms());
        rec.info.arch = "amd64".into();
        rec.info.os = "linux".into();
        rec.info.addresses = vec![format!("127.0.1.{n}")];
        rec.ready = Some(ready_condition(true, self.now));
        rec.protocol = outpost_proto::PROTOCOL_VERSION;
        self.put_node(&rec);
    }

    /// Turns a node Ready (its agent reports again, all of its pods at
    /// once) or NotReady (its lease expired: its agent is silent).
    pub fn set_node_ready(&mut self, name: &str, ready: bool) {
        let mut rec = self.node_record(name).expect("known node");
        rec.ready = Some(ready_condition(ready, self.now));
        self.put_node(&rec);
        if ready {
            self.silent.remove(name);
            self.reported.retain(|_, (node, _)| node != name);
        } else {
            self.silent.insert(name.to_string());
        }
    }

    // ---- behaviour ----

    pub fn set_pod(&mut self, pod_key: &str, b: Behaviour) {
        self.by_pod.insert(pod_key.to_string(), b);
    }

    pub fn set_image(&mut self, image: &str, b: Behaviour) {
        self.by_image.insert(image.to_string(), b);
    }

    pub fn set_restarts(&mut self, pod_key: &str, n: u32) {
        self.restarts.insert(pod_key.to_string(), n);
    }

    /// Whether the agent's last report on a pod said it is ready (`None`:
    /// not reported, or reported gone).
    pub fn reported_ready(&self, pod_key: &str) -> Option<bool> {
        match self.reported.get(pod_key) {
            Some((_, Report::Status(s))) => Some(s.ready),
            _ => None,
        }
    }

    fn behaviour(&self, key: &str, p: &Pod) -> Behaviour {
        if let Some(b) = self.by_pod.get(key) {
            return b.clone();
        }
        p.spec
            .images()
            .find_map(|i| self.by_image.get(i).cloned())
            .unwrap_or(Behaviour::Ready)
    }

    // ---- operator actions ----

    /// Creates `obj` as the API does; returns it as stored.
    pub fn create(&mut self, mut obj: Object) -> Object {
        machinery::prepare_create(&mut obj, self.now);
        let key = obj.key();
        assert!(
            self.store.get(&key).expect("read").is_none(),
            "{key} exists"
        );
        self.store.put(&key, obj.to_stored()).expect("write");
        obj
    }

    /// The stored object (fresher than the cache between steps).
    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<Object> {
        let kv = self.store.get(&kind.key(ns, name)).expect("read")?;
        Some(Object::decode(kind, &kv.value, kv.mod_revision).expect("decode"))
    }

    /// Changes a stored object as an operator's update does.
    pub fn update(&mut self, kind: Kind, ns: &str, name: &str, f: impl FnOnce(&mut Object)) {
        let old = self.get(kind, ns, name).expect("object to update");
        let mut new = old.clone();
        f(&mut new);
        machinery::prepare_update(&old, &mut new);
        self.store.put(&old.key(), new.to_stored()).expect("write");
    }

    pub fn update_deployment(&mut self, name: &str, f: impl FnOnce(&mut Deployment)) {
        self.update(Kind::Deployment, "default", name, |o| match o {
            Object::Deployment(d) => f(d),
            _ => unreachable!("a deployment"),
        });
    }

    /// Deletes as the API does (a bound pod gracefully).
    pub fn delete(&mut self, kind: Kind, ns: &str, name: &str) {
        let Some(obj) = self.get(kind, ns, name) else {
            return;
        };
        match machinery::deletion(&obj, self.now) {
            Deletion::Now => {
                self.store.delete(&obj.key()).expect("delete");
            }
            Deletion::Graceful(o) => {
                self.store.put(&o.key(), o.to_stored()).expect("write");
            }
            Deletion::AlreadyDeleting => {}
        }
    }

    // ---- running ----

    /// One step of the plane at `now`, then the agents report.
    pub fn step(&mut self) -> StepReport {
        let r = self.plane.step(self.now).expect("step");
        self.writes += r.writes;
        self.steps += 1;
        self.agents_report();
        r
    }

    /// Steps until nothing is left to do at `now`; returns the steps taken.
    pub fn settle(&mut self) -> usize {
        self.settle_checking(|_| {})
    }

    /// [`settle`](Self::settle), calling `check` after every step.
    pub fn settle_checking(&mut self, mut check: impl FnMut(&Harness)) -> usize {
        for n in 1..=MAX_SETTLE_STEPS {
            let r = self.step();
            check(self);
            let inbox_empty = self.plane.inbox().lock().is_ok_and(|i| i.is_empty());
            if r.writes == 0 && !r.busy && inbox_empty && !self.plane.has_news() {
                return n;
            }
        }
        panic!(
            "the cluster did not settle in {MAX_SETTLE_STEPS} steps at {}",
            self.now
        );
    }

    /// Runs until `at`: settles, jumps to each wake-up the plane asks for
    /// on the way, and ends settled at `at`.
    pub fn run_until(&mut self, at: Time) {
        self.run_until_checking(at, |_| {});
    }

    pub fn run_until_checking(&mut self, at: Time, mut check: impl FnMut(&Harness)) {
        loop {
            self.settle_checking(&mut check);
            match self.plane.next_wakeup() {
                Some(w) if w <= at => self.now = self.now.max(w),
                _ => break,
            }
        }
        self.now = self.now.max(at);
        self.settle_checking(&mut check);
    }

    pub fn advance(&mut self, d: Duration) {
        self.run_until(self.now.plus(d));
    }

    /// Agents on a fast link: every image a node is asked to fetch ahead
    /// of a rollout (`controllers::prefetch`) is in its image list by the
    /// next step.
    fn agents_fetch_images(&mut self) {
        let fetched: Vec<NodeRecord> = {
            let cache = self.cache();
            cache
                .nodes()
                .filter(|n| !self.silent.contains(&n.name))
                .filter_map(|n| {
                    let wanted = crate::controllers::prefetch::wanted_images(&cache, &n.name);
                    let mut rec = (**n).clone();
                    for image in wanted {
                        if !rec.images.iter().any(|i| i.names.contains(&image)) {
                            rec.images.push(outpost_proto::ImageSummary {
                                names: vec![image],
                                size_bytes: 1 << 20,
                                architecture: rec.info.arch.clone(),
                                os: rec.info.os.clone(),
                            });
                        }
                    }
                    (rec.images != n.images).then_some(rec)
                })
                .collect()
        };
        for rec in fetched {
            self.put_node(&rec);
        }
    }

    /// Writes over `n` steps with nothing happening (time standing still).
    pub fn idle_writes(&mut self, n: usize) -> usize {
        (0..n).map(|_| self.step().writes).sum()
    }

    fn agents_report(&mut self) {
        self.agents_fetch_images();
        let mut out: Vec<(String, Entry)> = Vec::new();
        {
            let shared = self.cache.clone();
            let cache = shared.read().unwrap_or_else(|p| p.into_inner());
            for node in cache.nodes() {
                if self.silent.contains(&node.name) {
                    continue;
                }
                for p in cache.pods_on(&node.name) {
                    let key = crate::api::ns_name(&p.metadata.namespace, &p.metadata.name);
                    let failed = |r: &(String, Report)| matches!(&r.1, Report::Status(s) if s.phase == wire::PodPhase::Failed);
                    let report = if p.metadata.is_deleting() {
                        Report::Gone
                    } else if self.reported.get(&key).is_some_and(failed) {
                        // Failed for good: an agent never runs it again.
                        continue;
                    } else {
                        match self.report(&key, p) {
                            Some(r) => Report::Status(Box::new(r)),
                            None => continue,
                        }
                    };
                    let mine = (node.name.clone(), report);
                    if self.reported.get(&key) == Some(&mine) {
                        continue;
                    }
                    self.reported.insert(key.clone(), mine.clone());
                    out.push((
                        key,
                        Entry {
                            node: mine.0,
                            report: mine.1,
                            at: self.now,
                        },
                    ));
                }
            }
        }
        let inbox = self.plane.inbox();
        let mut inbox = inbox.lock().unwrap_or_else(|p| p.into_inner());
        for (k, e) in out {
            inbox.put(k, e);
        }
    }

    /// What the agent says about a pod it runs.
    fn report(&mut self, key: &str, p: &Pod) -> Option<wire::PodStatus> {
        let b = self.behaviour(key, p);
        let n = self.ips.len();
        let ip = self
            .ips
            .entry(p.metadata.uid.clone())
            .or_insert_with(|| format!("127.2.{}.{}", n / 250, n % 250 + 1))
            .clone();
        let started = p.metadata.creation_timestamp.unwrap_or_default().ms();
        let restarts = self.restarts.get(key).copied().unwrap_or(0);
        let (phase, reason, ready, state) = match &b {
            Behaviour::Silent => return None,
            Behaviour::Ready | Behaviour::NotReady => (
                wire::PodPhase::Running,
                String::new(),
                b == Behaviour::Ready,
                wire::ContainerState::Running {
                    started_ms: started,
                },
            ),
            Behaviour::Fail(r) => (
                wire::PodPhase::Failed,
                r.clone(),
                false,
                wire::ContainerState::Terminated {
                    exit_code: 1,
                    reason: r.clone(),
                    message: String::new(),
                    started_ms: started,
                    finished_ms: started,
                },
            ),
        };
        Some(wire::PodStatus {
            name: p.metadata.name.clone(),
            pod_ip: if phase == wire::PodPhase::Running {
                ip
            } else {
                String::new()
            },
            generation: u64::try_from(p.metadata.generation).unwrap_or(0),
            phase,
            reason,
            message: String::new(),
            ready,
            started_ms: started,
            containers: p
                .spec
                .containers
                .iter()
                .map(|c| wire::ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    container_id: format!("{}-{}", p.metadata.uid, c.name),
                    state: state.clone(),
                    last_state: None,
                    ready,
                    restart_count: restarts,
                    usage: Default::default(),
                })
                .collect(),
            usage: Default::default(),
        })
    }

    // ---- reading ----

    pub fn events(&self, reason: &str) -> Vec<Event> {
        let log = self.events.lock().unwrap_or_else(|p| p.into_inner());
        log.list(None, usize::MAX)
            .into_iter()
            .filter(|e| e.reason == reason)
            .collect()
    }

    pub fn deployment(&self, name: &str) -> Arc<Deployment> {
        self.cache()
            .deployment(&format!("default/{name}"))
            .cloned()
            .unwrap_or_else(|| panic!("deployment {name}"))
    }

    pub fn replicaset(&self, name: &str) -> Arc<ReplicaSet> {
        self.cache()
            .replicaset(&format!("default/{name}"))
            .cloned()
            .unwrap_or_else(|| panic!("replicaset {name}"))
    }

    /// The ReplicaSets a Deployment controls, oldest first.
    pub fn replicasets_of(&self, deploy: &str) -> Vec<Arc<ReplicaSet>> {
        let d = self.deployment(deploy);
        let cache = self.cache();
        let mut v: Vec<Arc<ReplicaSet>> = cache
            .replicasets_owned_by(&d.metadata.uid)
            .into_iter()
            .cloned()
            .collect();
        v.sort_by_key(|rs| (rs.metadata.creation_timestamp, rs.metadata.name.clone()));
        v
    }

    /// Every pod (any state) controlled by the ReplicaSet.
    pub fn pods_of(&self, rs: &ReplicaSet) -> Vec<Arc<Pod>> {
        let cache = self.cache();
        super::replicas::controlled_pods(&cache, rs)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Active pods (not finished, not being deleted) with label app=`app`.
    pub fn active_pods(&self, app: &str) -> Vec<Arc<Pod>> {
        let cache = self.cache();
        let labels: BTreeMap<String, String> = [("app".to_string(), app.to_string())].into();
        let mut v: Vec<Arc<Pod>> = cache
            .pods_with_labels("default", &labels)
            .into_iter()
            .filter(|p| super::replicas::is_active(p))
            .cloned()
            .collect();
        v.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        v
    }
}

fn ready_condition(ready: bool, now: Time) -> Condition {
    Condition {
        kind: ConditionType::Ready,
        status: if ready {
            ConditionStatus::True
        } else {
            ConditionStatus::Unknown
        },
        reason: if ready {
            "AgentReady"
        } else {
            "NodeStatusUnknown"
        }
        .into(),
        message: String::new(),
        last_transition_ms: now.ms(),
    }
}

// ---- fixtures ----

fn app_labels(app: &str) -> BTreeMap<String, String> {
    [("app".to_string(), app.to_string())].into()
}

/// A one-container template labelled app=`app`, running `image`, with a
/// named port `http` (8080).
pub fn template(app: &str, image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: ObjectMeta {
            labels: app_labels(app),
            ..ObjectMeta::default()
        },
        spec: PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: image.into(),
                ports: vec![ContainerPort {
                    name: "http".into(),
                    container_port: 8080,
                    ..ContainerPort::default()
                }],
                ..Container::default()
            }],
            termination_grace_period_seconds: 30,
            ..PodSpec::default()
        },
    }
}

/// A ReplicaSet `name` selecting and labelling app=`name`.
pub fn replicaset(name: &str, replicas: i32, image: &str) -> Object {
    Object::ReplicaSet(ReplicaSet {
        metadata: ObjectMeta::named("default", name),
        spec: ReplicaSetSpec {
            replicas,
            min_ready_seconds: 0,
            selector: LabelSelector::from_labels(app_labels(name)),
            template: template(name, image),
        },
        status: Default::default(),
    })
}

/// A rolling Deployment `name` (maxSurge and maxUnavailable as given)
/// selecting app=`name`.
pub fn deployment(
    name: &str,
    replicas: i32,
    image: &str,
    surge: IntOrString,
    unavailable: IntOrString,
) -> Deployment {
    let mut spec = DeploymentSpec {
        replicas,
        selector: LabelSelector::from_labels(app_labels(name)),
        template: template(name, image),
        revision_history_limit: 10,
        progress_deadline_seconds: 600,
        ..DeploymentSpec::default()
    };
    spec.strategy.rolling_update = Some(RollingUpdate {
        max_surge: surge,
        max_unavailable: unavailable,
    });
    Deployment {
        metadata: ObjectMeta::named("default", name),
        spec,
        status: Default::default(),
    }
}

/// A Service `name` selecting app=`app` on port 80 to target port `target`.
pub fn service(name: &str, app: &str, target: IntOrString) -> Object {
    Object::Service(Service {
        metadata: ObjectMeta::named("default", name),
        spec: ServiceSpec {
            selector: app_labels(app),
            ports: vec![ServicePort {
                name: "web".into(),
                protocol: Default::default(),
                port: 80,
                target_port: target,
                node_port: None,
            }],
            ..ServiceSpec::default()
        },
        status: Default::default(),
    })
}

/// How many objects of `kind` the store holds.
pub fn object_count(store: &MemStore, kind: Kind) -> usize {
    store.list(&kind.prefix(None)).expect("list").kvs.len()
}

/// A harness with the standard controllers and `n` Ready nodes `n1`...,
/// alternating between sites `a` and `b`.
pub fn cluster(n: usize) -> Harness {
    let mut h = Harness::new();
    for i in 1..=n {
        let site = if i % 2 == 1 { "a" } else { "b" };
        h.add_node(&format!("n{i}"), Some(site));
    }
    h.settle();
    h
}
