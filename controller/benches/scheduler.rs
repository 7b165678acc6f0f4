//! Scheduler throughput: placements per second over the real control loop
//! (`ControlPlane` + `MemStore`) on a virtual clock, at 1,000 and 5,000
//! nodes in 20 sites, with mixed constraints.
//!
//! Run: `cargo bench -p outpost-controller --bench scheduler`
//! (or `... --bench scheduler -- 5000` for one size).
//!
//! The workload: four pods per node in 100 apps (ReplicaSet-owned, so the
//! default spread over hosts and sites applies); by app, some select
//! `disk=ssd` nodes, some tolerate disk pressure, some keep one pod per
//! host (required anti-affinity), some spread evenly over sites
//! (DoNotSchedule, maxSkew 1), some take a host port. Nodes: 2, 4 or 8
//! cpus, a fifth arm64 (holding the arm-only image some apps use), 30 %
//! `disk=ssd`, 5 % under disk pressure, 2 % cordoned.
//!
//! It prints two rates: end to end (the whole loop: watch, cache,
//! scheduler, group commit of bindings and events) and the scheduler's own
//! share (time inside `schedule` and `on_change`).

use outpost_controller::api::pod::{
    Affinity, Container, ContainerPort, PodAffinity, PodAffinityTerm, PodSpec, Protocol,
    Toleration, TolerationOperator, TopologySpreadConstraint, UnsatisfiableConstraintAction,
};
use outpost_controller::api::selector::LabelSelector;
use outpost_controller::api::{Object, ObjectMeta, OwnerReference, Pod, Resource, Time};
use outpost_controller::cache::{Cache, Change};
use outpost_controller::controllers::plane::{ControlPlane, Scheduling};
use outpost_controller::controllers::Write;
use outpost_controller::events::EventLog;
use outpost_controller::registry::NodeRecord;
use outpost_controller::scheduler::{Scheduler, SchedulerConfig};
use outpost_controller::store::mem::MemStore;
use outpost_controller::store::{keys, Op, Store, Txn};
use outpost_proto::names::{HOSTNAME_LABEL, SITE_LABEL};
use outpost_proto::{Condition, ConditionStatus, ConditionType, ImageSummary, Resources};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SITES: usize = 20;
const APPS: usize = 100;
const PODS_PER_NODE: usize = 4;

/// The scheduler, with the time spent in it measured.
struct Timed {
    inner: Scheduler,
    spent: Arc<Mutex<Duration>>,
}

impl Scheduling for Timed {
    fn on_change(&mut self, c: &Change, cache: &Cache, now: Time) {
        let t = Instant::now();
        self.inner.on_change(c, cache, now);
        *self.spent.lock().unwrap() += t.elapsed();
    }
    fn resync(&mut self, cache: &Cache, now: Time) {
        let t = Instant::now();
        self.inner.resync(cache, now);
        *self.spent.lock().unwrap() += t.elapsed();
    }
    fn schedule(&mut self, cache: &Cache, now: Time) -> Vec<Write> {
        let t = Instant::now();
        let w = self.inner.schedule(cache, now);
        *self.spent.lock().unwrap() += t.elapsed();
        w
    }
    fn written(&mut self, w: &Write, ok: bool, now: Time) {
        self.inner.written(w, ok, now);
    }
    fn next_wakeup(&self) -> Option<Time> {
        self.inner.next_wakeup()
    }
    fn pending(&self) -> usize {
        self.inner.pending()
    }
}

fn node(i: usize) -> NodeRecord {
    let name = format!("node-{i:05}");
    let mut labels = BTreeMap::new();
    labels.insert(SITE_LABEL.to_string(), format!("site-{:02}", i % SITES));
    if i % 10 < 3 {
        labels.insert("disk".to_string(), "ssd".to_string());
    }
    let mut n = NodeRecord::new(&name, labels, BTreeMap::new(), "s".into(), 0, 0);
    n.info.arch = if i % 5 == 4 { "arm64" } else { "amd64" }.into();
    n.info.os = "linux".into();
    n.info.runtime.available = true;
    let cpus = [2u64, 4, 8][i % 3];
    n.allocatable = Resources {
        cpu_millis: cpus * 1000,
        memory_bytes: (cpus * 2) << 30,
        pids: 10_000,
        ephemeral_storage_bytes: 100 << 30,
        gpus: 0,
    };
    n.capacity = n.allocatable;
    n.ready = Some(Condition {
        kind: ConditionType::Ready,
        status: ConditionStatus::True,
        reason: String::new(),
        message: String::new(),
        last_transition_ms: 1,
    });
    // Pressure and cordons spread over the sites (a whole site tainted
    // would hold every DoNotSchedule spread at skew 1).
    if (i / SITES) % 20 == 7 {
        n.conditions.push(Condition {
            kind: ConditionType::DiskPressure,
            status: ConditionStatus::True,
            reason: String::new(),
            message: String::new(),
            last_transition_ms: 1,
        });
    }
    n.unschedulable = (i / SITES) % 50 == 13;
    let mut images = vec![ImageSummary {
        names: vec!["registry.local/base:1".into()],
        size_bytes: 300 << 20,
        architecture: n.info.arch.clone(),
        os: "linux".into(),
    }];
    if n.info.arch == "arm64" {
        images.push(ImageSummary {
            names: vec!["registry.local/arm-only:1".into()],
            size_bytes: 120 << 20,
            architecture: "arm64".into(),
            os: "linux".into(),
        });
    }
    n.images = images;
    n
}

fn sel(app: &str) -> LabelSelector {
    LabelSelector::from_labels([("app".to_string(), app.to_string())].into())
}

fn pod(app_no: usize, i: usize) -> Pod {
    let app = format!("app-{app_no:03}");
    let mut meta = ObjectMeta::named("default", &format!("{app}-{i:06}"));
    meta.uid = format!("uid-{app}-{i}");
    meta.generation = 1;
    meta.creation_timestamp = Some(Time(1 + i as u64));
    meta.labels.insert("app".into(), app.clone());
    meta.owner_references.push(OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: format!("{app}-rs"),
        uid: format!("uid-{app}-rs"),
        controller: true,
        block_owner_deletion: true,
    });
    let image = if app_no % 25 == 3 {
        "registry.local/arm-only:1"
    } else {
        "registry.local/base:1"
    };
    let mut c = Container {
        name: "main".into(),
        image: image.into(),
        ..Container::default()
    };
    c.resources.requests.0.cpu_millis = [100, 250, 500][app_no % 3];
    c.resources.requests.0.memory_bytes = [128u64, 256, 512][app_no % 3] << 20;
    let mut spec = PodSpec {
        containers: vec![c],
        ..PodSpec::default()
    };
    match app_no % 10 {
        0 | 1 => {
            spec.node_selector.insert("disk".into(), "ssd".into());
        }
        2 => spec.tolerations.push(Toleration {
            key: "node.outpost.dev/disk-pressure".into(),
            operator: TolerationOperator::Exists,
            value: String::new(),
            effect: None,
            toleration_seconds: None,
        }),
        4 => {
            spec.affinity = Some(Affinity {
                pod_anti_affinity: Some(PodAffinity {
                    required_during_scheduling_ignored_during_execution: vec![PodAffinityTerm {
                        label_selector: Some(sel(&app)),
                        namespaces: Vec::new(),
                        topology_key: HOSTNAME_LABEL.into(),
                    }],
                    preferred_during_scheduling_ignored_during_execution: Vec::new(),
                }),
                ..Affinity::default()
            })
        }
        5 => spec
            .topology_spread_constraints
            .push(TopologySpreadConstraint {
                max_skew: 1,
                topology_key: SITE_LABEL.into(),
                when_unsatisfiable: UnsatisfiableConstraintAction::DoNotSchedule,
                label_selector: Some(sel(&app)),
            }),
        6 if app_no % 20 == 6 => spec.containers[0].ports.push(ContainerPort {
            name: "http".into(),
            container_port: 8080,
            host_port: Some(8080 + u16::try_from(app_no).unwrap_or(0)),
            protocol: Protocol::TCP,
        }),
        _ => {}
    }
    Pod {
        metadata: meta,
        spec,
        status: Default::default(),
    }
}

/// CPU time this thread has used (user + system), from
/// `/proc/thread-self/stat` (clock ticks of 10 ms): unlike wall time it
/// does not count the time other processes on a shared box take.
fn thread_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return Duration::ZERO;
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return Duration::ZERO;
    };
    let f: Vec<i64> = rest
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // After the command name and the state: ppid (the 4th field) on;
    // utime is the 14th field, stime the 15th.
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    Duration::from_millis(u64::try_from(ticks).unwrap_or(0) * 10)
}

struct Figures {
    nodes: usize,
    pods: usize,
    placed: usize,
    parked: usize,
    wall: Duration,
    cpu: Duration,
    sched: Duration,
    steps: usize,
}

fn run(nodes: usize) -> Figures {
    let store = Arc::new(MemStore::new());
    let txns: Vec<Txn> = (0..nodes)
        .map(|i| {
            let n = node(i);
            Txn::ops(vec![Op::put(
                keys::object("nodes", "", &n.name),
                serde_json::to_vec(&n).unwrap(),
            )])
        })
        .collect();
    store.txn_batch(txns).unwrap();
    let pods = nodes * PODS_PER_NODE;
    let txns: Vec<Txn> = (0..pods)
        .map(|i| {
            let p = pod(i % APPS, i);
            Txn::ops(vec![Op::put(p.key(), Object::Pod(p).to_stored())])
        })
        .collect();
    store.txn_batch(txns).unwrap();
    let events = Arc::new(Mutex::new(EventLog::default()));
    let mut plane = ControlPlane::new(store.clone(), events).unwrap();
    let spent = Arc::new(Mutex::new(Duration::ZERO));
    plane.set_scheduler(Box::new(Timed {
        inner: Scheduler::new(SchedulerConfig::default()),
        spent: spent.clone(),
    }));
    let mut now = Time(1_000_000);
    let start = Instant::now();
    let cpu0 = thread_cpu();
    let mut steps = 0;
    loop {
        let r = plane.step(now).unwrap();
        steps += 1;
        now = now.plus(Duration::from_millis(1));
        let due = plane.next_wakeup().is_some_and(|t| t <= now);
        if r.writes == 0 && !r.busy && !due && !plane.has_news() {
            break;
        }
    }
    let wall = start.elapsed();
    let cpu = thread_cpu() - cpu0;
    let cache = plane.cache();
    let cache = cache.read().unwrap();
    let placed = cache.pods().filter(|p| p.node().is_some()).count();
    let sched = *spent.lock().unwrap();
    if std::env::var_os("SCHED_BENCH_WHY").is_some() {
        let mut why: BTreeMap<String, usize> = BTreeMap::new();
        for p in cache.pods().filter(|p| p.node().is_none()) {
            let m = p
                .status
                .conditions
                .first()
                .map(|c| format!("{} {}", p.metadata.labels["app"], c.message))
                .unwrap_or_default();
            *why.entry(m).or_default() += 1;
        }
        for (m, n) in why {
            eprintln!("{n:>6} {m}");
        }
    }
    Figures {
        nodes,
        pods,
        placed,
        parked: plane.pending_pods(),
        wall,
        cpu,
        sched,
        steps,
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 5_000]
    } else {
        sizes
    };
    println!("command: cargo bench -p outpost-controller --bench scheduler");
    println!(
        "{:>6} {:>7} {:>7} {:>7} {:>6} {:>8} {:>8} {:>14} {:>13} {:>11}",
        "nodes",
        "pods",
        "placed",
        "parked",
        "steps",
        "wall_s",
        "cpu_s",
        "placed/s(wall)",
        "placed/s(cpu)",
        "sched_share"
    );
    for n in sizes {
        let f = run(n);
        let rate = |d: Duration| f.placed as f64 / d.as_secs_f64().max(1e-9);
        println!(
            "{:>6} {:>7} {:>7} {:>7} {:>6} {:>8.3} {:>8.2} {:>14.0} {:>13.0} {:>10.0}%",
            f.nodes,
            f.pods,
            f.placed,
            f.parked,
            f.steps,
            f.wall.as_secs_f64(),
            f.cpu.as_secs_f64(),
            rate(f.wall),
            rate(f.cpu),
            100.0 * f.sched.as_secs_f64() / f.wall.as_secs_f64().max(1e-9)
        );
    }
}
