//! The reconciler: desired pods in, containers on the local engine out.
//!
//! [`run`] loops for the life of the agent. Each sync lists our containers
//! (by label), tears down what is no longer desired (stop with the pod's
//! grace period, then remove), adopts what already runs, creates the pause
//! container and then each app container of pods that should run (a
//! one-container pod's container holds its own network instead, see
//! `own_network`), restarts exited containers per restart policy with a
//! doubling back-off (a new container per run, labelled with its run
//! number; a container whose binary is for another architecture fails its
//! pod for good instead, see `exec_format`), runs due probes, defends the
//! node under pressure (reclaim, then one eviction per cycle), samples
//! cgroup usage, and publishes a [`Snapshot`] when something changed. A
//! pod's status carries its IP while the container holding its network
//! runs (inspected once per holder, not per sync): its address on the pod
//! network (`--pod-network`, which every holder joins) or on the engine's
//! default bridge. It wakes on a new
//! desired set, a new node report, or a timer: `sync_interval` when
//! everything is settled, [`BUSY_TICK`] while a pod is starting, probing,
//! pulling or backing off.
//!
//! Decisions that need no engine (restart policy, back-off, phase, reasons,
//! names, cgroup and `/proc` parsing, the terminal-decision file) are pure
//! functions below, unit-tested. The state kept between syncs is small and
//! bounded by the desired set: one entry per pod and container, no engine
//! responses.

use super::docker::{
    pod_address, pod_network_missing, CreateSpec, Engine, EngineError, EngineUsage, Inspected,
    OurContainer, RunState,
};
use super::eviction::{self, DeadContainer, ImageInfo, PodUsage};
use super::exec_format;
use super::health::{self, ProbeKind, ProbeTracker};
use super::{DesiredSet, EventSender, RuntimeConfig, Snapshot, PAUSE_CONTAINER};
use outpost_proto::pod::{
    pod_limits, ContainerSpec, ContainerState, ContainerStatus, DesiredPod, PodPhase, PodSpec,
    PodStatus, Protocol, RestartPolicy, Usage, VolumeSource,
};
use outpost_proto::{AgentEvent, ConditionType, EventType, NodeReport, Signal};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Tick while something is in flux (starting, probing, pulling, backing
/// off, stopping): probes have a one-second resolution in Kubernetes too.
pub const BUSY_TICK: Duration = Duration::from_secs(1);
/// A container that ran this long resets its restart back-off (kubelet:
/// `backOffPeriod`-independent 10 minutes of stable running).
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);
/// Grace period for containers of a pod the agent no longer knows the spec
/// of (left over from before an agent restart): Kubernetes' default.
pub const DEFAULT_GRACE_SECS: u64 = 30;
/// Largest terminal-decisions file read back (a few hundred bytes a pod).
const MAX_TERMINAL_FILE: u64 = 1 << 20;

/// Seconds between SIGTERM and SIGKILL for containers being stopped
/// because their pod or generation is no longer wanted: a removal's own
/// grace period (the deletion's `deletionGracePeriodSeconds`, such as a
/// drain's `--grace-period`) when the pod is gone from the desired set, as
/// the kubelet uses the deletion's; else the spec the containers ran with;
/// else the new spec's; else [`DEFAULT_GRACE_SECS`].
pub fn stop_grace(ran_with: Option<u64>, new_spec: Option<u64>, removal: Option<u64>) -> u64 {
    match (new_spec, removal) {
        (None, Some(g)) => g,
        _ => ran_with.or(new_spec).unwrap_or(DEFAULT_GRACE_SECS),
    }
}

/// How long one stats call may take when usage comes from the engine.
const STATS_TIMEOUT: Duration = Duration::from_secs(3);
/// How long reading an exited container's last output may take.
const LOG_TAIL_TIMEOUT: Duration = Duration::from_secs(3);

/// Image references the node's pods have used, kept so image garbage
/// collection only ever removes images Outpost brought to the box.
const MAX_OWNED_IMAGES: usize = 256;
const MAX_OWNED_IMAGES_FILE: u64 = 256 * 1024;
/// At most this many entries are walked when sizing an emptyDir, so a
/// volume with millions of files cannot stall the loop.
const MAX_WALK_ENTRIES: usize = 100_000;

/// Runs the reconciler forever. A desired set of generation 0 means "not
/// known yet": until a set with a generation above 0 arrives, the
/// reconciler reports and adopts but stops nothing. `docker` should be version-negotiated
/// (`Docker::negotiate_version`) when the engine may be older than
/// bollard's default API version; the reconciler negotiates again after the
/// engine comes back.
pub async fn run(
    cfg: RuntimeConfig,
    docker: bollard::Docker,
    mut desired: watch::Receiver<Arc<DesiredSet>>,
    mut reports: watch::Receiver<Option<NodeReport>>,
    status: watch::Sender<Arc<Snapshot>>,
    events: EventSender,
) {
    let mut r = Reconciler::new(cfg, docker, events);
    let mut desired_open = true;
    let mut reports_open = true;
    loop {
        let set = desired.borrow_and_update().clone();
        let report = reports.borrow_and_update().clone();
        let snapshot = r.sync(&set, report.as_ref()).await;
        if let Some(s) = snapshot {
            status.send_replace(Arc::new(s));
        }
        let wait = if r.busy() {
            BUSY_TICK
        } else {
            r.cfg.sync_interval
        };
        tokio::select! {
            c = desired.changed(), if desired_open => desired_open = c.is_ok(),
            c = reports.changed(), if reports_open => {
                reports_open = c.is_ok();
                r.pressure_cycle = true;
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// A terminal decision (admission refusal, eviction, a binary for another
/// architecture), persisted so an agent restart does not bring the pod
/// back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terminal {
    pub generation: u64,
    pub reason: String,
    pub message: String,
    /// Containers shown in a state of their own while the decision stands
    /// (the one whose binary cannot run here), by name; the others show
    /// that the node stopped them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub containers: BTreeMap<String, ContainerState>,
}

/// The terminal-decisions file: pod key -> decision.
pub fn encode_terminal(t: &BTreeMap<String, Terminal>) -> Vec<u8> {
    serde_json::to_vec_pretty(t).unwrap_or_default()
}

pub fn decode_terminal(s: &str) -> Result<BTreeMap<String, Terminal>, String> {
    serde_json::from_str(s).map_err(|e| e.to_string())
}

/// Whether a container that exited with `exit_code` is restarted.
pub fn should_restart(policy: RestartPolicy, exit_code: i64) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => exit_code != 0,
        RestartPolicy::Never => false,
    }
}

/// The terminated reason Kubernetes shows.
pub fn terminated_reason(oom_killed: bool, exit_code: i64, engine_error: &str) -> &'static str {
    if oom_killed {
        "OOMKilled"
    } else if !engine_error.is_empty() {
        "ContainerCannotRun"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

/// The back-off before the next restart, and the one after it: `current`
/// (starting at `base`) doubles up to `max`, and resets to `base` after a
/// run of at least [`BACKOFF_RESET_AFTER`].
pub fn backoff_step(
    current: Duration,
    base: Duration,
    max: Duration,
    ran: Duration,
) -> (Duration, Duration) {
    let now = if ran >= BACKOFF_RESET_AFTER || current.is_zero() {
        base
    } else {
        current
    }
    .min(max);
    (now, now.saturating_mul(2).min(max))
}

/// Go's `time.Duration` text, as the kubelet prints back-offs: `10s`,
/// `1m20s`, `5m0s`, `500ms`.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let frac = d.subsec_millis();
    let s = if frac == 0 {
        format!("{}s", secs % 60)
    } else {
        let f = format!("{frac:03}");
        format!("{}.{}s", secs % 60, f.trim_end_matches('0'))
    };
    match secs / 60 {
        0 => s,
        m if m < 60 => format!("{m}m{s}"),
        m => format!("{}h{}m{s}", m / 60, m % 60),
    }
}

/// `outpost_<pod key>_<container>_<generation>_<run>`. Keys, container
/// names and numbers have no '_', so the parts stay apart.
pub fn container_name(pod: &str, container: &str, generation: u64, run: u32) -> String {
    format!("outpost_{pod}_{container}_{generation}_{run}")
}

/// The pod phase from its containers' states: any terminal pod-level
/// decision wins; then Pulling; all containers finished for good gives
/// Succeeded (all exit 0) or Failed; a container running or restarting
/// gives Running; else Pending.
pub fn pod_phase(pulling: bool, containers: &[(&ContainerState, bool, bool)]) -> PodPhase {
    // (state, done = finished and not restarted, has run before)
    if pulling {
        return PodPhase::Pulling;
    }
    if !containers.is_empty() && containers.iter().all(|(_, done, _)| *done) {
        let all_ok = containers
            .iter()
            .all(|(s, _, _)| matches!(s, ContainerState::Terminated { exit_code: 0, .. }));
        return if all_ok {
            PodPhase::Succeeded
        } else {
            PodPhase::Failed
        };
    }
    if containers
        .iter()
        .any(|(s, done, ran)| matches!(s, ContainerState::Running { .. }) || *done || *ran)
    {
        return PodPhase::Running;
    }
    PodPhase::Pending
}

/// Rounds usage so tiny changes do not cause a new snapshot: cpu to 1m is
/// already whole, memory to 1 KiB.
pub fn round_usage(u: Usage) -> Usage {
    Usage {
        cpu_millis: u.cpu_millis,
        memory_bytes: u.memory_bytes / 1024 * 1024,
    }
}

/// Millicores from two cumulative cpu readings (ns) `elapsed` apart.
pub fn millicores(prev_ns: u64, now_ns: u64, elapsed: Duration) -> u64 {
    let used = u128::from(now_ns.saturating_sub(prev_ns));
    (used * 1000)
        .checked_div(elapsed.as_nanos())
        .map_or(0, |m| u64::try_from(m).unwrap_or(u64::MAX))
}

/// `usage_usec` from a cgroup v2 `cpu.stat`, in ns.
pub fn parse_cpu_stat_usage_ns(text: &str) -> Option<u64> {
    stat_value(text, "usage_usec").map(|us| us.saturating_mul(1000))
}

/// A `key value` line's value from a cgroup stat file.
pub fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok())?
    })
}

/// Working set: usage minus inactive file pages (`inactive_file` in v2,
/// `total_inactive_file` in v1 `memory.stat`).
pub fn working_set(usage: u64, memory_stat: &str) -> u64 {
    let inactive = stat_value(memory_stat, "inactive_file")
        .or_else(|| stat_value(memory_stat, "total_inactive_file"))
        .unwrap_or(0);
    usage.saturating_sub(inactive)
}

/// `(busy, total)` jiffies from the first line of `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().next()?;
    let mut it = line.split_whitespace();
    if it.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = it.filter_map(|x| x.parse().ok()).collect();
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest is in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3].saturating_add(v.get(4).copied().unwrap_or(0));
    Some((total.saturating_sub(idle), total))
}

/// The cgroup directories of a container under `root`: v2 first (systemd
/// and cgroupfs drivers), then v1 per controller.
fn cgroup_dirs(root: &Path, id: &str, controller: &str) -> [PathBuf; 4] {
    [
        root.join("system.slice").join(format!("docker-{id}.scope")),
        root.join("docker").join(id),
        root.join(controller).join("docker").join(id),
        root.join(controller)
            .join("system.slice")
            .join(format!("docker-{id}.scope")),
    ]
}

fn read_small(path: &Path) -> Option<String> {
    outpost_proto::files::read_bounded(path, 64 * 1024).ok()
}

fn read_u64(path: &Path) -> Option<u64> {
    read_small(path)?.trim().parse().ok()
}

/// Cumulative cpu time of a container in ns, from its cgroup.
fn cgroup_cpu_ns(root: &Path, id: &str) -> Option<u64> {
    let [v2a, v2b, v1a, v1b] = cgroup_dirs(root, id, "cpuacct");
    for d in [v2a, v2b] {
        if let Some(ns) = read_small(&d.join("cpu.stat")).and_then(|t| parse_cpu_stat_usage_ns(&t))
        {
            return Some(ns);
        }
    }
    [v1a, v1b]
        .iter()
        .find_map(|d| read_u64(&d.join("cpuacct.usage")))
}

/// Memory working set of a container, from its cgroup.
fn cgroup_memory(root: &Path, id: &str) -> Option<u64> {
    let [v2a, v2b, v1a, v1b] = cgroup_dirs(root, id, "memory");
    for d in [v2a, v2b] {
        if let Some(cur) = read_u64(&d.join("memory.current")) {
            return Some(working_set(
                cur,
                &read_small(&d.join("memory.stat")).unwrap_or_default(),
            ));
        }
    }
    for d in [v1a, v1b] {
        if let Some(cur) = read_u64(&d.join("memory.usage_in_bytes")) {
            return Some(working_set(
                cur,
                &read_small(&d.join("memory.stat")).unwrap_or_default(),
            ));
        }
    }
    None
}

/// Tasks (processes and threads) in a container's cgroup.
fn cgroup_pids(root: &Path, id: &str) -> Option<u64> {
    cgroup_dirs(root, id, "pids")
        .iter()
        .find_map(|d| read_u64(&d.join("pids.current")))
}

/// Bytes under a directory (bounded walk, symlinks not followed).
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0usize;
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            seen += 1;
            if seen > MAX_WALK_ENTRIES {
                return total;
            }
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else {
                total = total.saturating_add(md.len());
            }
        }
    }
    total
}

/// What to report while there is no engine to talk to at all (its socket
/// does not exist yet): every desired pod Pending, each container waiting
/// with `RuntimeUnavailable` and `message`.
pub fn unavailable_snapshot(set: &DesiredSet, message: &str) -> Snapshot {
    let pods = set
        .pods
        .iter()
        .map(|(name, d)| {
            let containers = d
                .spec
                .containers
                .iter()
                .map(|c| ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    container_id: String::new(),
                    state: waiting("RuntimeUnavailable", message),
                    last_state: None,
                    ready: false,
                    restart_count: 0,
                    usage: Usage::default(),
                })
                .collect();
            let mut message = message.to_string();
            outpost_proto::pod::truncate(&mut message, pod_limits::MAX_MESSAGE);
            let status = PodStatus {
                name: name.clone(),
                generation: d.generation,
                phase: PodPhase::Pending,
                reason: "RuntimeUnavailable".into(),
                message,
                ready: false,
                started_ms: 0,
                pod_ip: String::new(),
                containers,
                usage: Usage::default(),
            };
            (name.clone(), status)
        })
        .collect();
    Snapshot {
        pods,
        node_usage: Usage::default(),
    }
}

fn waiting(reason: &str, message: impl Into<String>) -> ContainerState {
    let mut message = message.into();
    outpost_proto::pod::truncate(&mut message, pod_limits::MAX_MESSAGE);
    ContainerState::Waiting {
        reason: reason.into(),
        message,
    }
}

fn now_ms() -> u64 {
    outpost_proto::clock::now_ms()
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Per-container state kept between syncs.
#[derive(Debug)]
struct CState {
    /// Current run's container id (empty: none yet).
    id: String,
    /// Current (or, while backing off, last) run number.
    run: u32,
    state: ContainerState,
    last_state: Option<ContainerState>,
    liveness: Option<ProbeTracker>,
    readiness: Option<ProbeTracker>,
    /// Back-off for the next restart (zero: not started backing off).
    backoff: Duration,
    /// When the pending restart happens (ms), while backing off.
    restart_at_ms: Option<u64>,
    /// Id of the exited run already handled (inspect once per exit).
    handled_exit: String,
    /// Finished for good (no restart per policy).
    done: bool,
    /// Stopping after a failed liveness probe.
    killing: bool,
    /// Previous cpu reading (ns, when).
    cpu: Option<(u64, Instant)>,
    usage: Usage,
    pids: u64,
}

impl CState {
    fn new() -> CState {
        CState {
            id: String::new(),
            run: 0,
            state: waiting("ContainerCreating", ""),
            last_state: None,
            liveness: None,
            readiness: None,
            backoff: Duration::ZERO,
            restart_at_ms: None,
            handled_exit: String::new(),
            done: false,
            killing: false,
            cpu: None,
            usage: Usage::default(),
            pids: 0,
        }
    }

    fn ready(&self) -> bool {
        matches!(self.state, ContainerState::Running { .. })
            && !self.killing
            && self.readiness.as_ref().is_none_or(ProbeTracker::ok)
    }
}

/// What a one-container pod passes for the sandbox id: its container holds
/// its own network namespace (see [`own_network`]).
const OWN_NETWORK: &str = "-";

/// Whether the pod runs without a pause container: with a single
/// container there is nobody to share a network namespace with, so the
/// container holds its own (ports and host name on it), which starts the pod
/// in one container start instead of two. Its address changes when the
/// container restarts, which nothing in Outpost depends on. Pods with more
/// containers get the Kubernetes sandbox.
fn own_network(spec: &PodSpec) -> bool {
    spec.containers.len() == 1
}

/// `(container port, protocol, host port)` for each hostPort of `containers`.
fn host_ports<'a>(
    containers: impl IntoIterator<Item = &'a ContainerSpec>,
) -> Vec<(u16, &'static str, u16)> {
    containers
        .into_iter()
        .flat_map(|c| &c.ports)
        .filter_map(|p| {
            let proto = if p.protocol == Protocol::Udp {
                "udp"
            } else {
                "tcp"
            };
            p.host_port.map(|h| (p.container_port, proto, h))
        })
        .collect()
}

/// Per-pod state kept between syncs.
#[derive(Debug)]
struct PodState {
    generation: u64,
    spec: PodSpec,
    /// The container holding the pod's network namespace: the pause
    /// container, or a one-container pod's own container.
    pause_id: String,
    /// That container's address while it runs (the status's `pod_ip`).
    ip: Option<IpAddr>,
    started_ms: u64,
    containers: Vec<CState>,
    /// Pod-level message (pull progress, why it waits).
    message: String,
    pulling: bool,
    terminal: Option<Terminal>,
    /// The pod got containers at some point (admission done).
    admitted: bool,
}

impl PodState {
    fn new(d: &DesiredPod) -> PodState {
        PodState {
            generation: d.generation,
            spec: d.spec.clone(),
            pause_id: String::new(),
            ip: None,
            started_ms: 0,
            containers: d.spec.containers.iter().map(|_| CState::new()).collect(),
            message: String::new(),
            pulling: false,
            terminal: None,
            admitted: false,
        }
    }
}

/// A pull in flight; the task writes its outcome into `result`.
#[derive(Debug, Default)]
struct PullJob {
    progress: Arc<Mutex<String>>,
    result: Arc<Mutex<Option<Result<(), String>>>>,
}

/// A failed pull, retried with back-off.
#[derive(Debug)]
struct PullFailure {
    message: String,
    retry_at_ms: u64,
    next_backoff: Duration,
    /// ErrImagePull was reported once; later syncs say ImagePullBackOff.
    shown: bool,
}

/// A probe to run this sync.
struct ProbeJob {
    pod: String,
    index: usize,
    kind: ProbeKind,
    id: String,
    ip: Option<IpAddr>,
    action: outpost_proto::pod::ProbeAction,
    timeout: Duration,
}

struct Reconciler {
    cfg: RuntimeConfig,
    engine: Engine,
    events: EventSender,
    pods: BTreeMap<String, PodState>,
    terminal: BTreeMap<String, Terminal>,
    /// Images of each pod's previous generation (protected from GC).
    prev_images: BTreeMap<String, Vec<String>>,
    /// Images the controller asked for ahead of a rollout (last pass).
    wanted_images: BTreeSet<String>,
    /// Pulls in flight: progress text and, once finished, the outcome.
    pulls: BTreeMap<String, PullJob>,
    pull_failures: BTreeMap<String, PullFailure>,
    /// Container ids being stopped or removed in the background.
    stopping: BTreeSet<String>,
    teardowns: JoinSet<Vec<String>>,
    pause_image: Option<String>,
    /// Image references the node's pods have used ([`owned_images_path`]).
    owned_images: BTreeSet<String>,
    data_root: Option<String>,
    engine_error: Option<String>,
    /// A new node report arrived: run one pressure cycle.
    pressure_cycle: bool,
    /// Signals met at the previous pressure cycle.
    met_before: BTreeSet<Signal>,
    /// Container usage comes from the engine's stats API (cgroup files not
    /// readable); said once.
    stats_from_engine: bool,
    /// Containers of the last evicted pod still being stopped: no other pod
    /// is evicted until they are down (kubelet: wait for pod cleanup).
    evicting: BTreeSet<String>,
    /// Pressure cycles to let pass without evicting, so the next decision
    /// rests on a measurement taken after the last eviction or reclaim took
    /// effect rather than one taken before.
    settle_cycles: u8,
    /// Signals told to have no pod worth evicting, this pressure episode.
    would_not_help: eviction::EvictionWouldNotHelp,
    node_cpu: Option<(u64, u64)>,
    node_usage: Usage,
    last: Option<Snapshot>,
}

impl Reconciler {
    fn new(cfg: RuntimeConfig, docker: bollard::Docker, events: EventSender) -> Reconciler {
        let engine = Engine::new(docker, &cfg.node);
        let terminal =
            match outpost_proto::files::read_bounded(&terminal_path(&cfg), MAX_TERMINAL_FILE) {
                Ok(s) => decode_terminal(&s).unwrap_or_else(|e| {
                    tracing::warn!("ignoring {}: {e}", terminal_path(&cfg).display());
                    BTreeMap::new()
                }),
                Err(_) => BTreeMap::new(),
            };
        let owned_images = match outpost_proto::files::read_bounded(
            &owned_images_path(&cfg),
            MAX_OWNED_IMAGES_FILE,
        ) {
            Ok(s) => serde_json::from_str::<BTreeSet<String>>(&s).unwrap_or_else(|e| {
                tracing::warn!("ignoring {}: {e}", owned_images_path(&cfg).display());
                BTreeSet::new()
            }),
            Err(_) => BTreeSet::new(),
        };
        Reconciler {
            owned_images,
            cfg,
            engine,
            events,
            pods: BTreeMap::new(),
            terminal,
            prev_images: BTreeMap::new(),
            wanted_images: BTreeSet::new(),
            pulls: BTreeMap::new(),
            pull_failures: BTreeMap::new(),
            stopping: BTreeSet::new(),
            teardowns: JoinSet::new(),
            pause_image: None,
            data_root: None,
            engine_error: None,
            pressure_cycle: false,
            met_before: BTreeSet::new(),
            evicting: BTreeSet::new(),
            settle_cycles: 0,
            would_not_help: eviction::EvictionWouldNotHelp::default(),
            stats_from_engine: false,
            node_cpu: None,
            node_usage: Usage::default(),
            last: None,
        }
    }

    fn event(&self, kind: EventType, reason: &str, pod: &str, message: impl Into<String>) {
        let mut message = message.into();
        outpost_proto::pod::truncate(&mut message, pod_limits::MAX_MESSAGE);
        tracing::info!(pod, reason, "{message}");
        let _ = self.events.try_send(AgentEvent {
            kind,
            reason: reason.into(),
            pod: pod.into(),
            message,
        });
    }

    /// Whether to tick fast.
    fn busy(&self) -> bool {
        self.engine_error.is_some()
            || !self.pulls.is_empty()
            || !self.stopping.is_empty()
            || self.pods.values().any(|p| {
                p.terminal.is_none()
                    && p.containers.iter().any(|c| {
                        !c.done
                            && (!matches!(c.state, ContainerState::Running { .. })
                                || c.liveness.is_some()
                                || c.readiness.is_some()
                                || c.killing)
                    })
            })
    }

    fn emptydir(&self, pod: &str, volume: &str) -> PathBuf {
        self.cfg
            .data_dir
            .join("pods")
            .join(pod)
            .join("volumes")
            .join(volume)
    }

    /// Adds the desired pods' images to the owned set and saves it when it
    /// grew. Past [`MAX_OWNED_IMAGES`], references no pod wants any more are
    /// forgotten first (their images are then left on the box, never
    /// removed by mistake).
    fn remember_images(&mut self, set: &DesiredSet) {
        let wanted: BTreeSet<&str> = set
            .pods
            .values()
            .flat_map(|d| d.spec.containers.iter().map(|c| c.image.as_str()))
            .collect();
        // Every sync passes here; the usual answer is "nothing new".
        let new: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|i| !self.owned_images.contains(*i))
            .collect();
        if new.is_empty() {
            return;
        }
        self.owned_images
            .extend(new.into_iter().map(str::to_string));
        if self.owned_images.len() > MAX_OWNED_IMAGES {
            let stale: Vec<String> = self
                .owned_images
                .iter()
                .filter(|i| !wanted.contains(i.as_str()))
                .take(self.owned_images.len() - MAX_OWNED_IMAGES)
                .cloned()
                .collect();
            for i in stale {
                self.owned_images.remove(&i);
            }
        }
        let path = owned_images_path(&self.cfg);
        let json = serde_json::to_vec_pretty(&self.owned_images).unwrap_or_default();
        if let Err(e) = outpost_proto::files::write_private(&path, &json) {
            tracing::warn!("cannot write {}: {e}", path.display());
        }
    }

    fn persist_terminal(&self) {
        let path = terminal_path(&self.cfg);
        if let Err(e) = outpost_proto::files::write_private(&path, &encode_terminal(&self.terminal))
        {
            tracing::warn!("cannot write {}: {e}", path.display());
        }
    }

    /// One pass; returns a snapshot when it differs from the last one.
    async fn sync(&mut self, set: &DesiredSet, report: Option<&NodeReport>) -> Option<Snapshot> {
        while let Some(done) = self.teardowns.try_join_next() {
            if let Ok(ids) = done {
                for id in ids {
                    self.stopping.remove(&id);
                    if self.evicting.remove(&id) && self.evicting.is_empty() {
                        self.settle_cycles = 1;
                    }
                }
            }
        }
        self.finish_pulls();
        self.sample_node();

        // Forget terminal decisions of pods no longer desired.
        let before = self.terminal.len();
        self.terminal.retain(|p, t| {
            set.pods
                .get(p)
                .is_some_and(|d| d.generation == t.generation)
        });
        if self.terminal.len() != before {
            self.persist_terminal();
        }

        let disk_signal = report.is_some_and(|r| {
            eviction::signals_under_pressure(r)
                .iter()
                .any(|s| s.condition() == ConditionType::DiskPressure)
        });
        let listed = match self
            .engine
            .list_ours(self.pressure_cycle && disk_signal)
            .await
        {
            Ok(l) => {
                if let Some(e) = self.engine_error.take() {
                    tracing::info!("the Docker engine is back (was: {e})");
                    self.renegotiate().await;
                }
                l
            }
            Err(e) => {
                if e.is_unavailable() {
                    self.renegotiate().await;
                }
                self.runtime_unavailable(set, &e.to_string());
                return self.snapshot(set);
            }
        };

        // Generation 0 is the channel's initial value, before the agent
        // loaded its desired pods from disk or the controller: nothing is
        // known to be unwanted yet, so nothing is torn down.
        if set.generation > 0 {
            self.teardown_unwanted(set, &listed);
            self.cleanup_volumes(set, &listed);
        }
        // Forget pods no longer desired (after teardown took their grace).
        self.pods.retain(|p, _| set.pods.contains_key(p));
        self.prev_images.retain(|p, _| set.pods.contains_key(p));
        self.remember_images(set);

        let conditions = report.map(|r| r.conditions.as_slice()).unwrap_or(&[]);
        let mut probes = Vec::new();
        for (name, d) in &set.pods {
            let mine: Vec<&OurContainer> = listed.iter().filter(|c| &c.pod == name).collect();
            self.sync_pod(d, &mine, conditions, report, &mut probes)
                .await;
        }
        self.run_probes(probes).await;
        self.prefetch(set, report).await;

        if self.pressure_cycle {
            self.pressure_cycle = false;
            if let Some(r) = report {
                self.pressure(set, r, &listed).await;
            }
        }
        self.sample_usage().await;
        self.snapshot(set)
    }

    /// After the engine was unreachable it may have come back as another
    /// version: ask again which API version to speak.
    async fn renegotiate(&mut self) {
        if let Ok(d) = self.engine.docker().clone().negotiate_version().await {
            self.engine = Engine::new(d, &self.cfg.node);
        }
    }

    fn runtime_unavailable(&mut self, set: &DesiredSet, err: &str) {
        if self.engine_error.is_none() {
            tracing::warn!("{err}; retrying");
        }
        self.engine_error = Some(err.to_string());
        let msg = format!("{err}; the agent keeps retrying, check the Docker service on the node");
        for (name, d) in &set.pods {
            let st = self
                .pods
                .entry(name.clone())
                .or_insert_with(|| PodState::new(d));
            // Whether the pod's network still runs is unknown.
            st.pause_id.clear();
            st.ip = None;
            if st.terminal.is_some() {
                continue;
            }
            for c in &mut st.containers {
                c.state = waiting("RuntimeUnavailable", msg.clone());
                c.cpu = None;
                c.usage = Usage::default();
            }
        }
    }

    /// Stops and removes our containers whose pod is no longer desired or
    /// is of another generation; stops (keeps) running containers of pods
    /// that ended in a terminal decision.
    fn teardown_unwanted(&mut self, set: &DesiredSet, listed: &[OurContainer]) {
        let mut groups: BTreeMap<(String, u64), Vec<&OurContainer>> = BTreeMap::new();
        for c in listed {
            if self.stopping.contains(&c.id) {
                continue;
            }
            let wanted = set
                .pods
                .get(&c.pod)
                .is_some_and(|d| d.generation == c.generation);
            if !wanted {
                groups
                    .entry((c.pod.clone(), c.generation))
                    .or_default()
                    .push(c);
            }
        }
        for ((pod, generation), cs) in groups {
            let desired = set.pods.get(&pod);
            let grace = stop_grace(
                self.pods
                    .get(&pod)
                    .filter(|p| p.generation == generation)
                    .map(|p| p.spec.termination_grace_secs),
                desired.map(|d| d.spec.termination_grace_secs),
                set.removal_grace.get(&pod).copied(),
            );
            if let Some(d) = desired {
                // A generation change: remember the old images for GC.
                let images: Vec<String> = cs
                    .iter()
                    .filter(|c| c.container != PAUSE_CONTAINER)
                    .map(|c| c.image.clone())
                    .filter(|i| !d.spec.containers.iter().any(|s| &s.image == i))
                    .collect();
                if !images.is_empty() {
                    self.prev_images.insert(pod.clone(), images);
                }
            }
            let running: Vec<&str> = cs
                .iter()
                .filter(|c| c.state == RunState::Running && c.container != PAUSE_CONTAINER)
                .map(|c| c.container.as_str())
                .collect();
            if !running.is_empty() {
                self.event(
                    EventType::Normal,
                    "Killing",
                    &pod,
                    format!(
                        "Stopping container(s) {} of generation {generation} (grace period {grace}s): {}",
                        running.join(", "),
                        if desired.is_some() {
                            "the pod's spec changed"
                        } else {
                            "the pod is no longer desired on this node"
                        }
                    ),
                );
            }
            let volumes = desired
                .is_none()
                .then(|| self.cfg.data_dir.join("pods").join(&pod));
            self.spawn_teardown(&cs, grace, true, volumes);
        }
    }

    /// Stops `cs` (apps with `grace`, the pause container with SIGKILL) in
    /// the background and, with `remove`, removes them and `volumes`.
    fn spawn_teardown(
        &mut self,
        cs: &[&OurContainer],
        grace: u64,
        remove: bool,
        volumes: Option<PathBuf>,
    ) {
        let apps: Vec<(String, bool)> = cs
            .iter()
            .filter(|c| c.container != PAUSE_CONTAINER)
            .map(|c| (c.id.clone(), c.state == RunState::Running))
            .collect();
        let pauses: Vec<String> = cs
            .iter()
            .filter(|c| c.container == PAUSE_CONTAINER)
            .map(|c| c.id.clone())
            .collect();
        let ids: Vec<String> = cs.iter().map(|c| c.id.clone()).collect();
        if ids.is_empty() {
            return;
        }
        self.stopping.extend(ids.iter().cloned());
        let engine = self.engine.clone();
        self.teardowns.spawn(async move {
            let mut stops = JoinSet::new();
            for (id, running) in apps.iter().filter(|(_, r)| *r).cloned() {
                let e = engine.clone();
                stops.spawn(async move {
                    if running {
                        if let Err(err) = e.stop(&id, grace).await {
                            tracing::warn!("stopping {id}: {err}");
                        }
                    }
                });
            }
            while stops.join_next().await.is_some() {}
            for id in &pauses {
                let _ = engine.kill(id).await;
            }
            if remove {
                for id in &ids {
                    if let Err(err) = engine.remove(id).await {
                        tracing::warn!("removing {id}: {err}");
                    }
                }
                if let Some(v) = volumes {
                    let _ = tokio::fs::remove_dir_all(&v).await;
                }
            }
            ids
        });
    }

    /// Removes `pods/<pod>/` directories of pods neither desired nor with
    /// containers left (e.g. removed while the agent was down).
    fn cleanup_volumes(&self, set: &DesiredSet, listed: &[OurContainer]) {
        let dir = self.cfg.data_dir.join("pods");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in rd.flatten().take(1024) {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if !set.pods.contains_key(&name) && !listed.iter().any(|c| c.pod == name) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// Collects finished pulls: events, and failures with back-off.
    fn finish_pulls(&mut self) {
        let done: Vec<(String, Result<(), String>)> = self
            .pulls
            .iter()
            .filter_map(|(k, job)| Some((k.clone(), job.result.lock().ok()?.take()?)))
            .collect();
        let now = now_ms();
        for (image, result) in done {
            self.pulls.remove(&image);
            let pods: Vec<String> = self
                .pods
                .iter()
                .filter(|(_, p)| p.spec.containers.iter().any(|c| c.image == image))
                .map(|(n, _)| n.clone())
                .collect();
            // A fetch ahead of a rollout has no pod yet: the event is
            // about the node.
            let mut pods = pods;
            if pods.is_empty() && self.wanted_images.contains(&image) {
                pods.push(String::new());
            }
            match result {
                Ok(()) => {
                    self.pull_failures.remove(&image);
                    for p in &pods {
                        self.event(
                            EventType::Normal,
                            "Pulled",
                            p,
                            format!("Successfully pulled image {image:?}"),
                        );
                    }
                }
                Err(e) => {
                    let prev = self.pull_failures.remove(&image);
                    let (delay, next) = backoff_step(
                        prev.map(|p| p.next_backoff).unwrap_or(Duration::ZERO),
                        self.cfg.restart_backoff,
                        self.cfg.max_restart_backoff,
                        Duration::ZERO,
                    );
                    for p in &pods {
                        self.event(
                            EventType::Warning,
                            "Failed",
                            p,
                            format!(
                                "Failed to pull image {image:?}: {e}. Retrying in {}; load the image onto the node (outpostctl push-image) or fix the image name.",
                                go_duration(delay)
                            ),
                        );
                    }
                    self.pull_failures.insert(
                        image,
                        PullFailure {
                            message: e,
                            retry_at_ms: now.saturating_add(ms(delay)),
                            next_backoff: next,
                            shown: false,
                        },
                    );
                }
            }
        }
    }

    /// Whether the image filesystem has room for a pull; `Err` says why not.
    async fn pull_room(&mut self, report: Option<&NodeReport>) -> Result<(), String> {
        if self.data_root.is_none() {
            self.data_root = self.engine.data_root().await.ok();
        }
        let root = self.data_root.as_deref().unwrap_or("/var/lib/docker");
        super::transfer::image_room(report, Path::new(root), super::transfer::PULL_HEADROOM)
    }

    /// Makes sure `image` is present. `Ok(true)`: present; `Ok(false)`:
    /// not yet (the container state says why); `Err`: engine failure.
    async fn ensure_image(
        &mut self,
        pod: &str,
        image: &str,
        report: Option<&NodeReport>,
    ) -> Result<Result<(), ContainerState>, EngineError> {
        if let Some(job) = self.pulls.get(image) {
            let text = job.progress.lock().map(|p| p.clone()).unwrap_or_default();
            return Ok(Err(waiting("ContainerCreating", text)));
        }
        if self.engine.image_present(image).await? {
            return Ok(Ok(()));
        }
        let now = now_ms();
        if let Some(f) = self.pull_failures.get_mut(image) {
            if now < f.retry_at_ms {
                let reason = if f.shown {
                    "ImagePullBackOff"
                } else {
                    "ErrImagePull"
                };
                f.shown = true;
                let msg = if reason == "ImagePullBackOff" {
                    format!("Back-off pulling image {image:?}: {}", f.message)
                } else {
                    f.message.clone()
                };
                return Ok(Err(waiting(reason, msg)));
            }
        }
        if let Err(why) = self.pull_room(report).await {
            return Ok(Err(waiting(
                "ErrImagePull",
                format!("not pulling image {image:?}: {why}"),
            )));
        }
        self.event(
            EventType::Normal,
            "Pulling",
            pod,
            format!("Pulling image {image:?}"),
        );
        let job = PullJob::default();
        let text = format!("pulling {image}");
        if let Ok(mut g) = job.progress.lock() {
            g.clone_from(&text);
        }
        let (progress, result) = (job.progress.clone(), job.result.clone());
        let engine = self.engine.clone();
        let img = image.to_string();
        tokio::spawn(async move {
            let r = engine
                .pull(&img, |text| {
                    if let Ok(mut g) = progress.lock() {
                        *g = text;
                    }
                })
                .await
                .map_err(|e| e.to_string());
            if let Ok(mut g) = result.lock() {
                *g = Some(r);
            }
        });
        self.pulls.insert(image.to_string(), job);
        Ok(Err(waiting("ContainerCreating", text)))
    }

    /// Pulls the images the controller asks for ahead of a rollout
    /// (`DesiredSet::images`), one pull per image as for pods (failures
    /// back off the same way); events about them name the node.
    async fn prefetch(&mut self, set: &DesiredSet, report: Option<&NodeReport>) {
        self.wanted_images = set.images.iter().cloned().collect();
        for image in &set.images {
            match self.ensure_image("", image, report).await {
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(image, "prefetch: {e}");
                    break;
                }
            }
        }
    }

    async fn pause_image(&mut self) -> Result<String, String> {
        if let Some(i) = &self.pause_image {
            return Ok(i.clone());
        }
        let i = super::pause::ensure_pause_image(self.engine.docker()).await?;
        self.pause_image = Some(i.clone());
        Ok(i)
    }

    async fn sync_pod(
        &mut self,
        d: &DesiredPod,
        mine: &[&OurContainer],
        conditions: &[outpost_proto::Condition],
        report: Option<&NodeReport>,
        probes: &mut Vec<ProbeJob>,
    ) {
        let name = d.spec.key();
        let reset = self
            .pods
            .get(&name)
            .is_none_or(|p| p.generation != d.generation);
        if reset {
            self.pods.insert(name.clone(), PodState::new(d));
        }
        let current: Vec<&OurContainer> = mine
            .iter()
            .copied()
            .filter(|c| c.generation == d.generation)
            .collect();
        let others_left = mine.iter().any(|c| c.generation != d.generation);

        // Terminal: keep it stopped and Failed.
        if let Some(t) = self
            .terminal
            .get(&name)
            .filter(|t| t.generation == d.generation)
            .cloned()
        {
            let running: Vec<&OurContainer> = current
                .iter()
                .copied()
                .filter(|c| c.state == RunState::Running && !self.stopping.contains(&c.id))
                .collect();
            if !running.is_empty() {
                self.spawn_teardown(&running, d.spec.termination_grace_secs, false, None);
            }
            self.clear_network_holder(&name);
            let st = self.pods.get_mut(&name).expect("inserted above");
            st.pulling = false;
            for (spec, c) in st.spec.containers.iter().zip(&mut st.containers) {
                if let Some(own) = t.containers.get(&spec.name) {
                    c.state.clone_from(own);
                } else if matches!(
                    c.state,
                    ContainerState::Waiting { .. } | ContainerState::Running { .. }
                ) {
                    c.state = waiting("ContainerStatusUnknown", "the pod was stopped by the node");
                }
                c.usage = Usage::default();
            }
            st.terminal = Some(t);
            return;
        }

        // Admission, once, before anything of the pod exists.
        {
            let st = self.pods.get_mut(&name).expect("inserted above");
            if current.is_empty() && !st.admitted {
                if let Err(msg) = eviction::admit(&d.spec, conditions) {
                    let t = Terminal {
                        generation: d.generation,
                        reason: "Evicted".into(),
                        message: msg.clone(),
                        containers: BTreeMap::new(),
                    };
                    st.terminal = Some(t.clone());
                    self.terminal.insert(name.clone(), t);
                    self.persist_terminal();
                    self.event(
                        EventType::Warning,
                        "AdmissionRefused",
                        &name,
                        format!("{msg} The pod was not started on this node; the controller may place a replacement elsewhere."),
                    );
                    return;
                }
            }
            st.admitted = true;
        }

        if others_left {
            let st = self.pods.get_mut(&name).expect("inserted above");
            for c in &mut st.containers {
                if c.id.is_empty() {
                    c.state = waiting(
                        "ContainerCreating",
                        "waiting for the previous generation's containers to stop",
                    );
                }
            }
            return;
        }

        // Images of containers that need a (new) container.
        let mut pulling = false;
        let mut images_ready = vec![true; d.spec.containers.len()];
        let mut image_msg = String::new();
        for (i, spec) in d.spec.containers.iter().enumerate() {
            let has_running = current
                .iter()
                .any(|c| c.container == spec.name && c.state == RunState::Running);
            let done = self.pods[&name].containers[i].done;
            if has_running || done {
                continue;
            }
            match self.ensure_image(&name, &spec.image, report).await {
                Ok(Ok(())) => {}
                Ok(Err(state)) => {
                    images_ready[i] = false;
                    if let ContainerState::Waiting { reason, message } = &state {
                        if reason == "ContainerCreating" && self.pulls.contains_key(&spec.image) {
                            pulling = true;
                            image_msg = message.clone();
                        }
                    }
                    let c = &mut self.pods.get_mut(&name).expect("present").containers[i];
                    c.state = state;
                }
                Err(e) => {
                    images_ready[i] = false;
                    let c = &mut self.pods.get_mut(&name).expect("present").containers[i];
                    c.state = waiting("RuntimeUnavailable", e.to_string());
                }
            }
        }
        {
            let st = self.pods.get_mut(&name).expect("present");
            st.pulling = pulling;
            st.message = image_msg;
        }

        let pause_id = if own_network(&d.spec) {
            self.track_own_network(&name, &current).await;
            OWN_NETWORK.to_string()
        } else {
            match self.sync_sandbox(d, &current, &images_ready).await {
                Some(id) => id,
                None => return,
            }
        };

        // App containers.
        for (i, spec) in d.spec.containers.iter().enumerate() {
            let runs: Vec<&OurContainer> = current
                .iter()
                .copied()
                .filter(|c| c.container == spec.name)
                .collect();
            let latest = runs.iter().max_by_key(|c| c.run).copied();
            self.sync_container(
                d,
                i,
                spec,
                latest,
                &runs,
                &pause_id,
                images_ready[i],
                probes,
            )
            .await;
            if self.pods[&name].terminal.is_some() {
                // Decided for good (a binary that cannot run here): the
                // next sync stops the rest of the pod.
                return;
            }
        }
    }

    /// A one-container pod: its running container holds the network; track
    /// its address when it changed (a restart makes a new one), and forget
    /// it while no run of the container is up.
    async fn track_own_network(&mut self, name: &str, current: &[&OurContainer]) {
        let holder = current
            .iter()
            .filter(|c| {
                c.container != PAUSE_CONTAINER
                    && c.state == RunState::Running
                    && !self.stopping.contains(&c.id)
            })
            .max_by_key(|c| c.run)
            .copied();
        match holder {
            Some(h) if self.pods[name].pause_id != h.id => {
                let info = self.engine.inspect(&h.id).await.ok();
                self.set_network_holder(name, &h.id, info.as_ref());
            }
            Some(_) => {}
            None => self.clear_network_holder(name),
        }
    }

    /// The pod's sandbox (pause container): adopted, torn down once every
    /// container finished, or (re)created when a container needs it.
    /// Returns its id (empty: none needed now, containers wait), or `None`
    /// when this sync of the pod ends here.
    async fn sync_sandbox(
        &mut self,
        d: &DesiredPod,
        current: &[&OurContainer],
        images_ready: &[bool],
    ) -> Option<String> {
        let name = d.spec.key();
        // Needed by a container that runs or will be (re)started; an exit
        // not yet handled may turn out final, so it does not count yet.
        let needs_pause = d.spec.containers.iter().enumerate().any(|(i, spec)| {
            let cs = &self.pods[&name].containers[i];
            let latest = current
                .iter()
                .filter(|c| c.container == spec.name)
                .max_by_key(|c| c.run);
            !cs.done
                && images_ready[i]
                && latest.is_none_or(|c| c.state == RunState::Running || cs.handled_exit == c.id)
        });
        let pause = current
            .iter()
            .filter(|c| c.container == PAUSE_CONTAINER)
            .max_by_key(|c| c.run)
            .copied();
        let pause_running =
            pause.is_some_and(|p| p.state == RunState::Running && !self.stopping.contains(&p.id));
        let all_done = self.pods[&name].containers.iter().all(|c| c.done);
        if all_done {
            // Kubernetes tears the sandbox down once every container finished.
            if let Some(p) = pause.filter(|_| pause_running) {
                self.spawn_teardown(&[p], 0, false, None);
            }
        }
        if pause_running {
            let p = pause.expect("running");
            if self.pods[&name].pause_id != p.id {
                let info = self.engine.inspect(&p.id).await.ok();
                self.set_network_holder(&name, &p.id, info.as_ref());
            }
            Some(p.id.clone())
        } else if needs_pause {
            self.clear_network_holder(&name);
            // The sandbox is gone (engine restart, killed): app containers
            // still running in its namespace have lost their network.
            let orphans: Vec<&OurContainer> = current
                .iter()
                .copied()
                .filter(|c| {
                    c.container != PAUSE_CONTAINER
                        && c.state == RunState::Running
                        && !self.stopping.contains(&c.id)
                })
                .collect();
            if !orphans.is_empty() {
                self.event(
                    EventType::Normal,
                    "Killing",
                    &name,
                    "The pod's network sandbox stopped; restarting its containers",
                );
                self.spawn_teardown(&orphans, 0, false, None);
                return None;
            }
            let old: Vec<&OurContainer> = current
                .iter()
                .copied()
                .filter(|c| c.container == PAUSE_CONTAINER && !self.stopping.contains(&c.id))
                .collect();
            let run = pause.map_or(0, |p| p.run.saturating_add(1));
            for o in old {
                let _ = self.engine.remove(&o.id).await;
            }
            match self.create_pause(d, run).await {
                Ok(id) => {
                    let info = self.engine.inspect(&id).await.ok();
                    self.set_network_holder(&name, &id, info.as_ref());
                    Some(id)
                }
                Err(e) => {
                    let st = self.pods.get_mut(&name).expect("present");
                    for (i, c) in st.containers.iter_mut().enumerate() {
                        if images_ready[i] && !c.done && c.id.is_empty() {
                            c.state = waiting(
                                "CreateContainerError",
                                format!("cannot create the pod's network sandbox: {e}"),
                            );
                        }
                    }
                    self.event(
                        EventType::Warning,
                        "Failed",
                        &name,
                        format!("Failed to create the pod's network sandbox: {e}"),
                    );
                    None
                }
            }
        } else {
            // Nothing to run now; containers wait for the sandbox.
            self.clear_network_holder(&name);
            Some(String::new())
        }
    }

    /// Container `i` of `pod` runs since `started`: its state, and probe
    /// trackers that start over from then.
    fn mark_running(&mut self, pod: &str, i: usize, spec: &ContainerSpec, started: u64) {
        let cs = &mut self.pods.get_mut(pod).expect("present").containers[i];
        cs.state = ContainerState::Running {
            started_ms: started,
        };
        cs.liveness = spec
            .liveness
            .as_ref()
            .map(|p| ProbeTracker::new(ProbeKind::Liveness, p, started));
        cs.readiness = spec
            .readiness
            .as_ref()
            .map(|p| ProbeTracker::new(ProbeKind::Readiness, p, started));
    }

    /// Records the container holding a pod's network (its sandbox, or a
    /// one-container pod's own container): its address, and the pod's
    /// start time if not known yet. Without an inspect (it failed) the
    /// holder is not recorded, so the next sync asks again.
    fn set_network_holder(&mut self, pod: &str, id: &str, info: Option<&Inspected>) {
        let st = self.pods.get_mut(pod).expect("present");
        st.pause_id = if info.is_some() {
            id.to_string()
        } else {
            String::new()
        };
        st.ip = info.and_then(|i| pod_address(&i.networks, self.cfg.pod_network.as_deref()));
        if st.started_ms == 0 {
            st.started_ms = info.map_or_else(now_ms, |i| i.started_ms);
        }
    }

    /// The pod's network holder is not running (stopped, being replaced,
    /// or unknown while the engine is away): the pod has no address now.
    fn clear_network_holder(&mut self, pod: &str) {
        if let Some(st) = self.pods.get_mut(pod) {
            st.pause_id.clear();
            st.ip = None;
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn sync_container(
        &mut self,
        d: &DesiredPod,
        i: usize,
        spec: &ContainerSpec,
        latest: Option<&OurContainer>,
        runs: &[&OurContainer],
        pause_id: &str,
        image_ready: bool,
        probes: &mut Vec<ProbeJob>,
    ) {
        let key = d.spec.key();
        let pod = key.as_str();
        let now = now_ms();
        match latest {
            Some(c) if c.state == RunState::Running => {
                if self.stopping.contains(&c.id) {
                    return;
                }
                let adopt = self.pods[pod].containers[i].id != c.id;
                if adopt {
                    let started = match self.engine.inspect(&c.id).await {
                        Ok(info) => info.started_ms,
                        Err(_) => now,
                    };
                    self.mark_running(pod, i, spec, started);
                    let cs = &mut self.pods.get_mut(pod).expect("present").containers[i];
                    cs.id = c.id.clone();
                    cs.run = c.run;
                    cs.restart_at_ms = None;
                    cs.killing = false;
                    cs.cpu = None;
                }
                let ip = self.pods[pod].ip;
                let cs = &self.pods[pod].containers[i];
                if cs.killing {
                    return;
                }
                for (kind, tracker, probe) in [
                    (ProbeKind::Liveness, &cs.liveness, &spec.liveness),
                    (ProbeKind::Readiness, &cs.readiness, &spec.readiness),
                ] {
                    if let (Some(t), Some(p)) = (tracker, probe) {
                        if t.due(now) {
                            probes.push(ProbeJob {
                                pod: pod.to_string(),
                                index: i,
                                kind,
                                id: c.id.clone(),
                                ip,
                                action: p.action.clone(),
                                timeout: Duration::from_secs(u64::from(p.timeout_secs.max(1))),
                            });
                        }
                    }
                }
            }
            Some(c) => {
                // Exited (or created and never started): handle the exit once.
                if self.stopping.contains(&c.id) {
                    return;
                }
                if self.pods[pod].containers[i].handled_exit != c.id {
                    let info = match self.engine.inspect(&c.id).await {
                        Ok(info) => info,
                        Err(_) => return,
                    };
                    if let Some(evidence) = self.exec_format_error(&c.id, &info, spec).await {
                        self.fail_exec_format(d, i, spec, &evidence);
                        return;
                    }
                    let reason = terminated_reason(info.oom_killed, info.exit_code, &info.error);
                    let term = ContainerState::Terminated {
                        exit_code: info.exit_code,
                        reason: reason.into(),
                        message: self.explain(info.error.clone()),
                        started_ms: info.started_ms,
                        finished_ms: info.finished_ms,
                    };
                    if info.oom_killed {
                        let limit = spec.resources.limits.memory_bytes;
                        self.event(
                            EventType::Warning,
                            "OOMKilling",
                            pod,
                            format!(
                                "Memory cgroup out of memory: container {} was killed at its limit of {}; raise limits.memory or fix the leak",
                                spec.name,
                                outpost_proto::units::format_bytes(limit)
                            ),
                        );
                    }
                    let restart = should_restart(d.spec.restart_policy, info.exit_code);
                    let ran =
                        Duration::from_millis(info.finished_ms.saturating_sub(info.started_ms));
                    let (base, max) = (self.cfg.restart_backoff, self.cfg.max_restart_backoff);
                    let cs = &mut self.pods.get_mut(pod).expect("present").containers[i];
                    cs.handled_exit = c.id.clone();
                    cs.id = c.id.clone();
                    cs.run = c.run;
                    cs.liveness = None;
                    cs.readiness = None;
                    cs.killing = false;
                    cs.cpu = None;
                    cs.usage = Usage::default();
                    if restart {
                        let (delay, next) = backoff_step(cs.backoff, base, max, ran);
                        cs.backoff = next;
                        cs.restart_at_ms = Some(now.saturating_add(ms(delay)));
                        cs.last_state = Some(term);
                        cs.state = waiting(
                            "CrashLoopBackOff",
                            format!(
                                "back-off {} restarting failed container={} pod={pod}",
                                go_duration(delay),
                                spec.name
                            ),
                        );
                        self.event(
                            EventType::Warning,
                            "BackOff",
                            pod,
                            format!(
                                "Back-off restarting failed container {} (exit code {}, {reason}); next start in {}",
                                spec.name,
                                info.exit_code,
                                go_duration(delay)
                            ),
                        );
                    } else {
                        cs.state = term;
                        cs.done = true;
                        cs.restart_at_ms = None;
                    }
                    return;
                }
                let cs = &self.pods[pod].containers[i];
                if cs.done {
                    return;
                }
                if cs.restart_at_ms.is_some_and(|t| now >= t) && image_ready && !pause_id.is_empty()
                {
                    let next_run = c.run.saturating_add(1);
                    // Keep the previous run (logs --previous), remove older ones.
                    let older: Vec<&OurContainer> =
                        runs.iter().copied().filter(|r| r.run < c.run).collect();
                    for o in older {
                        let _ = self.engine.remove(&o.id).await;
                    }
                    self.create_and_start(d, i, spec, next_run, pause_id).await;
                }
            }
            None => {
                let cs = &self.pods[pod].containers[i];
                if cs.done || !image_ready || pause_id.is_empty() {
                    return;
                }
                if cs.restart_at_ms.is_some_and(|t| now < t) {
                    return;
                }
                // First run, or the current run's container vanished.
                let run = if cs.id.is_empty() {
                    cs.run
                } else {
                    cs.run.saturating_add(1)
                };
                self.create_and_start(d, i, spec, run, pause_id).await;
            }
        }
    }

    /// Whether an exited container's binary was refused by the kernel: its
    /// engine error says so, or, after a quick failed exit, its last output
    /// does, or Docker's init hid it and the image is built for an
    /// architecture this node does not run (see `exec_format`).
    async fn exec_format_error(
        &self,
        id: &str,
        info: &Inspected,
        spec: &ContainerSpec,
    ) -> Option<exec_format::Evidence> {
        use exec_format::Evidence;
        if exec_format::is_exec_format_error(&info.error) {
            return Some(Evidence::Refused);
        }
        let ran = Duration::from_millis(info.finished_ms.saturating_sub(info.started_ms));
        if !exec_format::worth_reading_log(info.exit_code, ran) {
            return None;
        }
        let tail =
            self.engine
                .log_tail(id, exec_format::LOG_TAIL_LINES, exec_format::LOG_TAIL_BYTES);
        let text = match tokio::time::timeout(LOG_TAIL_TIMEOUT, tail).await {
            Ok(Ok(text)) => text,
            _ => return None,
        };
        if exec_format::is_exec_format_error(&text) {
            return Some(Evidence::Refused);
        }
        if !exec_format::masked_by_init(info.exit_code, &text) {
            return None;
        }
        let platform = self.engine.image_platform(&spec.image);
        match tokio::time::timeout(LOG_TAIL_TIMEOUT, platform).await {
            Ok(Ok(p)) if exec_format::foreign_arch(&p.architecture, exec_format::node_arch()) => {
                Some(Evidence::ImageFor(p.architecture))
            }
            _ => None,
        }
    }

    /// Container `i` of the pod cannot run on this node's architecture:
    /// the container waits with [`exec_format::REASON`] for good, the pod
    /// fails with it (persisted, like an eviction), and one event says so.
    fn fail_exec_format(
        &mut self,
        d: &DesiredPod,
        i: usize,
        spec: &ContainerSpec,
        evidence: &exec_format::Evidence,
    ) {
        let key = d.spec.key();
        let arch = exec_format::node_arch();
        let state = waiting(
            exec_format::REASON,
            exec_format::container_message(&spec.image, arch, evidence),
        );
        let message = exec_format::pod_message(&spec.name, &spec.image, arch, evidence);
        let t = Terminal {
            generation: d.generation,
            reason: exec_format::REASON.into(),
            message: message.clone(),
            containers: BTreeMap::from([(spec.name.clone(), state.clone())]),
        };
        self.terminal.insert(key.clone(), t.clone());
        self.persist_terminal();
        // A failed pod has no address, though its sandbox stops only next sync.
        self.clear_network_holder(&key);
        if let Some(st) = self.pods.get_mut(&key) {
            st.terminal = Some(t);
            let cs = &mut st.containers[i];
            cs.state = state;
            cs.restart_at_ms = None;
            cs.liveness = None;
            cs.readiness = None;
            cs.usage = Usage::default();
        }
        self.event(EventType::Warning, exec_format::REASON, &key, message);
    }

    /// The engine's `message`, or what to do when it says the pod network
    /// does not exist.
    fn explain(&self, message: String) -> String {
        pod_network_missing(&message, self.cfg.pod_network.as_deref()).unwrap_or(message)
    }

    async fn create_pause(&mut self, d: &DesiredPod, run: u32) -> Result<String, String> {
        let image = self.pause_image().await?;
        let pod = &d.spec.key();
        let publish = host_ports(&d.spec.containers);
        let spec = CreateSpec {
            name: container_name(pod, PAUSE_CONTAINER, d.generation, run),
            image,
            labels: self.engine.labels(pod, d.generation, PAUSE_CONTAINER, run),
            publish,
            network_mode: self.cfg.pod_network.clone().unwrap_or_default(),
            // The host name is the pod's name, whatever its namespace.
            hostname: d.spec.name.clone(),
            dns: self.pod_dns(d),
            ..Default::default()
        };
        let id = self
            .engine
            .create(&spec)
            .await
            .map_err(|e| self.explain(e.to_string()))?;
        if let Err(e) = self.engine.start(&id).await {
            let _ = self.engine.remove(&id).await;
            return Err(self.explain(e.to_string()));
        }
        if self.routes_pods() {
            let pid = self.engine.inspect(&id).await.map_or(0, |i| i.pid);
            self.route_pod(pod, pid).await;
        }
        Ok(id)
    }

    /// Whether new pod network namespaces get the Services route here.
    fn routes_pods(&self) -> bool {
        self.cfg
            .services
            .as_ref()
            .is_some_and(|s| s.sandbox_route.borrow().is_some())
    }

    /// Routes the network namespace of process `pid` (a new sandbox, before
    /// any of the pod's containers starts; or the only container of a pod
    /// without one, right after it starts) to the agent for Services, so
    /// that the pod's first connection does not wait for the pod-network
    /// poll (see [`crate::podnet`]). A failure is a warning event: the pod
    /// runs, without Services.
    async fn route_pod(&self, pod: &str, pid: u32) {
        let Some(route) = self
            .cfg
            .services
            .as_ref()
            .and_then(|s| *s.sandbox_route.borrow())
        else {
            return;
        };
        let result = match Some(pid).filter(|p| *p > 0) {
            Some(pid) => crate::podnet::add_route(pid, route).await,
            None => Err("its process is not running".to_string()),
        };
        if let Err(e) = result {
            self.event(
                EventType::Warning,
                "FailedServiceRoute",
                pod,
                format!(
                    "The pod cannot reach Services (route {} via {}): {e}",
                    route.net, route.via
                ),
            );
        }
    }

    fn app_create_spec(
        &self,
        d: &DesiredPod,
        spec: &ContainerSpec,
        run: u32,
        pause_id: &str,
    ) -> Result<CreateSpec, String> {
        let pod = &d.spec.key();
        let mut binds = Vec::new();
        for m in &spec.volume_mounts {
            let v = d
                .spec
                .volumes
                .iter()
                .find(|v| v.name == m.name)
                .ok_or_else(|| format!("volumeMount {:?} names no volume of the pod", m.name))?;
            let host = match &v.source {
                VolumeSource::HostPath { path } => PathBuf::from(path),
                VolumeSource::EmptyDir => {
                    let dir = self.emptydir(pod, &v.name);
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| format!("cannot create emptyDir {}: {e}", dir.display()))?;
                    std::fs::canonicalize(&dir).unwrap_or(dir)
                }
            };
            binds.push(format!(
                "{}:{}{}",
                host.display(),
                m.mount_path,
                if m.read_only { ":ro" } else { "" }
            ));
        }
        let limits = spec.resources.limits;
        let (network_mode, publish, hostname, dns) = if pause_id == OWN_NETWORK {
            (
                self.cfg.pod_network.clone().unwrap_or_default(),
                host_ports([spec]),
                d.spec.name.clone(),
                self.pod_dns(d),
            )
        } else {
            (
                format!("container:{pause_id}"),
                Vec::new(),
                String::new(),
                None,
            )
        };
        let own_env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut env = self
            .cfg
            .services
            .as_ref()
            .map(|s| s.env(&d.spec.namespace, &own_env))
            .unwrap_or_default();
        env.extend(own_env);
        Ok(CreateSpec {
            name: container_name(pod, &spec.name, d.generation, run),
            image: spec.image.clone(),
            labels: self.engine.labels(pod, d.generation, &spec.name, run),
            entrypoint: spec.command.clone(),
            cmd: spec.args.clone(),
            env,
            publish,
            network_mode,
            nano_cpus: i64::try_from(limits.cpu_millis.saturating_mul(1_000_000))
                .unwrap_or(i64::MAX),
            memory_bytes: i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX),
            pids_limit: i64::try_from(limits.pids).unwrap_or(i64::MAX),
            binds,
            init: true,
            hostname,
            dns,
        })
    }

    /// Resolver settings for `d`'s network holder (the agent's resolver,
    /// once its address is known; the engine's defaults before).
    fn pod_dns(&self, d: &DesiredPod) -> Option<crate::dns::PodDnsConfig> {
        let ns = if d.spec.namespace.is_empty() {
            "default"
        } else {
            d.spec.namespace.as_str()
        };
        self.cfg.services.as_ref()?.dns(ns)
    }

    async fn create_and_start(
        &mut self,
        d: &DesiredPod,
        i: usize,
        spec: &ContainerSpec,
        run: u32,
        pause_id: &str,
    ) {
        let key = d.spec.key();
        let pod = key.as_str();
        let now = now_ms();
        let result = async {
            let cs = self.app_create_spec(d, spec, run, pause_id)?;
            let id = self.engine.create(&cs).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(id)
        }
        .await;
        let id = match result {
            Ok(id) => id,
            Err(e) => {
                let (base, max) = (self.cfg.restart_backoff, self.cfg.max_restart_backoff);
                let cs = &mut self.pods.get_mut(pod).expect("present").containers[i];
                let (delay, next) = backoff_step(cs.backoff, base, max, Duration::ZERO);
                cs.backoff = next;
                cs.restart_at_ms = Some(now.saturating_add(ms(delay)));
                cs.state = waiting("CreateContainerError", e.clone());
                self.event(
                    EventType::Warning,
                    "Failed",
                    pod,
                    format!(
                        "Error creating container {}: {e}; retrying in {}",
                        spec.name,
                        go_duration(delay)
                    ),
                );
                return;
            }
        };
        self.event(
            EventType::Normal,
            "Created",
            pod,
            format!("Created container {} (run {run})", spec.name),
        );
        {
            let cs = &mut self.pods.get_mut(pod).expect("present").containers[i];
            cs.id = id.clone();
            cs.run = run;
            cs.restart_at_ms = None;
            cs.handled_exit.clear();
            cs.cpu = None;
        }
        match self.engine.start(&id).await {
            Ok(()) => {
                let info = self.engine.inspect(&id).await.ok();
                let started = info.as_ref().map_or(now, |i| i.started_ms);
                let started = if started == 0 { now } else { started };
                if pause_id == OWN_NETWORK {
                    self.set_network_holder(pod, &id, info.as_ref());
                    self.route_pod(pod, info.as_ref().map_or(0, |i| i.pid))
                        .await;
                }
                self.mark_running(pod, i, spec, started);
                self.event(
                    EventType::Normal,
                    "Started",
                    pod,
                    format!("Started container {}", spec.name),
                );
            }
            Err(e) if exec_format::is_exec_format_error(&e.to_string()) => {
                self.fail_exec_format(d, i, spec, &exec_format::Evidence::Refused);
            }
            Err(e) => {
                // Left in "created": the next sync handles it as an exit
                // (inspect carries the engine's error) and backs off.
                self.event(
                    EventType::Warning,
                    "Failed",
                    pod,
                    format!(
                        "Error starting container {}: {}",
                        spec.name,
                        self.explain(e.to_string())
                    ),
                );
            }
        }
    }

    async fn run_probes(&mut self, jobs: Vec<ProbeJob>) {
        if jobs.is_empty() {
            return;
        }
        let mut set = JoinSet::new();
        for (n, job) in jobs.into_iter().enumerate() {
            let engine = self.engine.clone();
            set.spawn(async move {
                let r = health::check(&engine, &job.id, job.ip, &job.action, job.timeout).await;
                (n, job, r)
            });
        }
        let now = now_ms();
        let mut results = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Ok(r) = r {
                results.push(r);
            }
        }
        results.sort_by_key(|r| r.0);
        for (_, job, r) in results {
            let Some(st) = self.pods.get_mut(&job.pod) else {
                continue;
            };
            let grace = st.spec.termination_grace_secs;
            let cname = st
                .spec
                .containers
                .get(job.index)
                .map(|c| c.name.clone())
                .unwrap_or_default();
            let Some(cs) = st.containers.get_mut(job.index) else {
                continue;
            };
            if cs.id != job.id {
                continue;
            }
            let tracker = match job.kind {
                ProbeKind::Liveness => cs.liveness.as_mut(),
                ProbeKind::Readiness => cs.readiness.as_mut(),
            };
            let Some(t) = tracker else { continue };
            let flip = t.record(now, r.is_ok());
            let failures = t.failures();
            if let Err(why) = &r {
                self.event(
                    EventType::Warning,
                    "Unhealthy",
                    &job.pod,
                    format!(
                        "{} probe failed for container {cname} ({failures} in a row): {why}",
                        job.kind.name()
                    ),
                );
            }
            if job.kind == ProbeKind::Liveness && flip == Some(false) {
                self.event(
                    EventType::Normal,
                    "Killing",
                    &job.pod,
                    format!("Container {cname} failed liveness probe, will be restarted (grace period {grace}s)"),
                );
                let st = self.pods.get_mut(&job.pod).expect("present");
                st.containers[job.index].killing = true;
                let fake = OurContainer {
                    id: job.id.clone(),
                    pod: job.pod.clone(),
                    generation: st.generation,
                    container: cname,
                    run: 0,
                    image: String::new(),
                    state: RunState::Running,
                    size_rw: 0,
                };
                self.spawn_teardown(&[&fake], grace, false, None);
            }
        }
    }

    /// One pressure cycle: reclaim for disk signals, then evict one pod if
    /// a signal stayed met since the previous cycle (memory and pids: at
    /// once, there is nothing to reclaim). After a reclaim that removed
    /// something, and while the last evicted pod is still stopping (plus
    /// one cycle after), nobody is evicted: the decision waits for a
    /// measurement that shows their effect, as the kubelet waits for pod
    /// cleanup, so one hog never costs its neighbours their place. Only a
    /// pod using some of the pressured resource is evicted
    /// (`eviction::rank`); when none does for a signal, the node gets one
    /// `EvictionWouldNotHelp` warning per episode and the next met signal
    /// is tried.
    async fn pressure(&mut self, set: &DesiredSet, report: &NodeReport, listed: &[OurContainer]) {
        let met = eviction::signals_under_pressure(report);
        let met_set: BTreeSet<Signal> = met.iter().copied().collect();
        let before = std::mem::replace(&mut self.met_before, met_set);
        self.would_not_help.observe(&met);
        if met.is_empty() {
            return;
        }
        let disk: Vec<Signal> = met
            .iter()
            .copied()
            .filter(|s| s.condition() == ConditionType::DiskPressure)
            .collect();
        if !disk.is_empty() && self.reclaim(set, listed).await {
            // The report predates the reclaim: measure again before
            // deciding that the reclaim was not enough.
            self.met_before
                .retain(|s| s.condition() != ConditionType::DiskPressure);
            return;
        }
        if !self.evicting.is_empty() {
            return;
        }
        if self.settle_cycles > 0 {
            self.settle_cycles -= 1;
            return;
        }
        let evict_for: Vec<Signal> = met
            .iter()
            .copied()
            .filter(|s| s.condition() != ConditionType::DiskPressure || before.contains(s))
            .collect();
        if evict_for.is_empty() {
            return;
        }
        let usages = self.pod_usages(set, listed);
        // The first signal some pod's eviction relieves; a signal no pod
        // uses any of is said once per episode and passed over.
        let mut chosen = None;
        for signal in evict_for {
            if let Some(victim) = eviction::rank(signal, &usages).into_iter().next() {
                chosen = Some((signal, victim));
                break;
            }
            let obs = report.signals.iter().find(|o| o.signal == signal);
            if let Some(message) = self.would_not_help.nobody_helps(signal, obs) {
                self.event(EventType::Warning, eviction::WOULD_NOT_HELP, "", message);
            }
        }
        let Some((signal, victim)) = chosen else {
            return;
        };
        let Some(u) = usages.iter().find(|u| u.name == victim) else {
            return;
        };
        let message = eviction::eviction_message(signal, u);
        let Some(d) = set.pods.get(&victim) else {
            return;
        };
        let t = Terminal {
            generation: d.generation,
            reason: "Evicted".into(),
            message: message.clone(),
            containers: BTreeMap::new(),
        };
        self.terminal.insert(victim.clone(), t.clone());
        self.persist_terminal();
        self.clear_network_holder(&victim);
        if let Some(st) = self.pods.get_mut(&victim) {
            st.terminal = Some(t);
        }
        let running: Vec<&OurContainer> = listed
            .iter()
            .filter(|c| {
                c.pod == victim
                    && c.generation == d.generation
                    && c.state == RunState::Running
                    && !self.stopping.contains(&c.id)
            })
            .collect();
        self.evicting.extend(running.iter().map(|c| c.id.clone()));
        self.spawn_teardown(&running, d.spec.termination_grace_secs, false, None);
        self.event(EventType::Warning, "Evicted", &victim, message);
    }

    /// Per-pod usage of running pods for ranking.
    fn pod_usages(&self, set: &DesiredSet, listed: &[OurContainer]) -> Vec<PodUsage> {
        self.pods
            .iter()
            .filter(|(n, p)| p.terminal.is_none() && set.pods.contains_key(*n))
            .filter(|(_, p)| {
                p.containers
                    .iter()
                    .any(|c| matches!(c.state, ContainerState::Running { .. }))
            })
            .map(|(n, p)| {
                let rw: u64 = listed
                    .iter()
                    .filter(|c| &c.pod == n && c.generation == p.generation)
                    .map(|c| c.size_rw)
                    .sum();
                let empty: u64 = p
                    .spec
                    .volumes
                    .iter()
                    .filter(|v| v.source == VolumeSource::EmptyDir)
                    .map(|v| dir_size(&self.emptydir(n, &v.name)))
                    .sum();
                PodUsage {
                    name: n.clone(),
                    priority: p.spec.priority,
                    requests: p.spec.requests(),
                    memory_bytes: p.containers.iter().map(|c| c.usage.memory_bytes).sum(),
                    disk_bytes: rw.saturating_add(empty),
                    pids: p.containers.iter().map(|c| c.pids).sum(),
                }
            })
            .collect()
    }

    /// Removes dead containers, then unused images the node's pods once used
    /// (never those of the current pods, their previous generation, or the
    /// pause image; never an image Outpost did not bring).
    /// Returns whether anything was removed.
    async fn reclaim(&mut self, set: &DesiredSet, listed: &[OurContainer]) -> bool {
        let current: BTreeSet<&str> = self
            .pods
            .iter()
            .filter(|(_, p)| p.terminal.is_none())
            .flat_map(|(_, p)| {
                p.containers
                    .iter()
                    .map(|c| c.id.as_str())
                    .chain([p.pause_id.as_str()])
            })
            .collect();
        let dead: Vec<DeadContainer> = listed
            .iter()
            .filter(|c| {
                c.state != RunState::Running
                    && !current.contains(c.id.as_str())
                    && !self.stopping.contains(&c.id)
            })
            .map(|c| DeadContainer {
                id: c.id.clone(),
                pod: c.pod.clone(),
                size_bytes: c.size_rw,
            })
            .collect();
        let mut protected: BTreeSet<String> = set
            .pods
            .values()
            .flat_map(|d| d.spec.containers.iter().map(|c| c.image.clone()))
            .collect();
        protected.extend(self.prev_images.values().flatten().cloned());
        protected.extend(set.images.iter().cloned());
        protected.extend(self.pause_image.iter().cloned());
        let dead_ids: BTreeSet<String> = dead.iter().map(|d| d.id.clone()).collect();
        let images = match (
            self.engine.list_images().await,
            self.engine.image_use_counts(&dead_ids).await,
        ) {
            (Ok(images), Ok(uses)) => eviction::owned_only(
                images
                    .into_iter()
                    .map(|i| ImageInfo {
                        containers: uses.get(&i.id).copied().unwrap_or(0),
                        id: i.id,
                        tags: i.tags,
                        size_bytes: i.size_bytes,
                    })
                    .collect(),
                &self.owned_images,
            ),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("cannot list images to reclaim disk: {e}");
                Vec::new()
            }
        };
        let plan = eviction::reclaim_plan(&dead, &images, &protected);
        tracing::info!(
            dead_containers = plan.containers.len(),
            images = plan.images.len(),
            owned_images_present = images.len(),
            "disk pressure: reclaiming before any eviction"
        );
        let mut removed = 0usize;
        let mut freed = 0u64;
        for id in &plan.containers {
            if self.engine.remove(id).await.is_ok() {
                removed += 1;
                freed = freed.saturating_add(
                    dead.iter()
                        .find(|d| &d.id == id)
                        .map_or(0, |d| d.size_bytes),
                );
            }
        }
        if removed > 0 {
            self.event(
                EventType::Normal,
                "ContainerGC",
                "",
                format!(
                    "Removed {removed} exited container(s) to reclaim disk ({} freed)",
                    outpost_proto::units::format_bytes(freed)
                ),
            );
        }
        let mut freed_images = 0u64;
        let mut names = Vec::new();
        for id in &plan.images {
            match self.engine.remove_image(id).await {
                Ok(()) => {
                    if let Some(i) = images.iter().find(|i| &i.id == id) {
                        freed_images = freed_images.saturating_add(i.size_bytes);
                        names.push(i.tags.first().cloned().unwrap_or_else(|| id.clone()));
                    }
                }
                Err(e) => tracing::warn!("cannot remove unused image {id}: {e}"),
            }
        }
        if !names.is_empty() {
            self.event(
                EventType::Normal,
                "ImageGCFreed",
                "",
                format!(
                    "Removed {} unused image(s) to reclaim disk ({} freed): {}",
                    names.len(),
                    outpost_proto::units::format_bytes(freed_images),
                    names.join(", ")
                ),
            );
        }
        removed > 0 || !names.is_empty()
    }

    fn sample_node(&mut self) {
        if let Some((busy, total)) =
            read_small(Path::new("/proc/stat")).and_then(|t| parse_proc_stat(&t))
        {
            if let Some((pb, pt)) = self.node_cpu {
                let cpus =
                    u64::try_from(std::thread::available_parallelism().map_or(1, |n| n.get()))
                        .unwrap_or(1);
                if let Some(m) = busy
                    .saturating_sub(pb)
                    .saturating_mul(1000)
                    .saturating_mul(cpus)
                    .checked_div(total.saturating_sub(pt))
                {
                    self.node_usage.cpu_millis = m;
                }
            }
            self.node_cpu = Some((busy, total));
        }
        if let Some(t) = read_small(Path::new("/proc/meminfo")) {
            let kb =
                |key: &str| stat_value(&t.replace(':', ""), key).map(|v| v.saturating_mul(1024));
            if let (Some(total), Some(avail)) = (kb("MemTotal"), kb("MemAvailable")) {
                self.node_usage.memory_bytes = total.saturating_sub(avail);
            }
        }
    }

    async fn sample_usage(&mut self) {
        let now = Instant::now();
        let root = self.cfg.cgroup_root.clone();
        let mut from_engine: Vec<String> = Vec::new();
        let mut samples: BTreeMap<String, EngineUsage> = BTreeMap::new();
        for p in self.pods.values() {
            for c in &p.containers {
                if !matches!(c.state, ContainerState::Running { .. }) || c.id.is_empty() {
                    continue;
                }
                match cgroup_memory(&root, &c.id) {
                    Some(memory) => {
                        samples.insert(
                            c.id.clone(),
                            EngineUsage {
                                cpu_ns: cgroup_cpu_ns(&root, &c.id),
                                memory_working_set: Some(memory),
                                pids: cgroup_pids(&root, &c.id),
                            },
                        );
                    }
                    None => from_engine.push(c.id.clone()),
                }
            }
        }
        if !from_engine.is_empty() {
            if !self.stats_from_engine {
                tracing::info!(
                    "container cgroups are not readable under {} (is the agent in a container?); \
                     reading container usage from the engine's stats API",
                    root.display()
                );
                self.stats_from_engine = true;
            }
            let engine = &self.engine;
            let got = futures_util::future::join_all(from_engine.iter().map(|id| async move {
                let r = tokio::time::timeout(STATS_TIMEOUT, engine.stats_once(id)).await;
                (id.clone(), r)
            }))
            .await;
            for (id, r) in got {
                if let Ok(Ok(u)) = r {
                    samples.insert(id, u);
                }
            }
        }
        for p in self.pods.values_mut() {
            for c in &mut p.containers {
                if !matches!(c.state, ContainerState::Running { .. }) || c.id.is_empty() {
                    c.usage = Usage::default();
                    c.pids = 0;
                    continue;
                }
                let Some(u) = samples.get(&c.id) else {
                    continue;
                };
                if let Some(ns) = u.cpu_ns {
                    if let Some((prev, at)) = c.cpu {
                        let el = now.duration_since(at);
                        // Too short an interval gives noise; keep the last value.
                        if el >= Duration::from_millis(500) {
                            c.usage.cpu_millis = millicores(prev, ns, el);
                            c.cpu = Some((ns, now));
                        }
                    } else {
                        c.cpu = Some((ns, now));
                    }
                }
                c.usage.memory_bytes = u.memory_working_set.unwrap_or(c.usage.memory_bytes);
                c.pids = u.pids.unwrap_or(0);
            }
        }
    }

    /// Builds the snapshot; `Some` only when it changed.
    fn snapshot(&mut self, set: &DesiredSet) -> Option<Snapshot> {
        let mut pods = BTreeMap::new();
        for (name, st) in &self.pods {
            if !set.pods.contains_key(name) {
                continue;
            }
            let containers: Vec<ContainerStatus> = st
                .spec
                .containers
                .iter()
                .zip(&st.containers)
                .map(|(spec, c)| ContainerStatus {
                    name: spec.name.clone(),
                    image: spec.image.clone(),
                    container_id: c.id.clone(),
                    state: c.state.clone(),
                    last_state: c.last_state.clone(),
                    ready: st.terminal.is_none() && c.ready(),
                    restart_count: c.run,
                    usage: round_usage(c.usage),
                })
                .collect();
            let (phase, reason, message) = match &st.terminal {
                Some(t) => (PodPhase::Failed, t.reason.clone(), t.message.clone()),
                None => {
                    let states: Vec<(&ContainerState, bool, bool)> = st
                        .containers
                        .iter()
                        .map(|c| (&c.state, c.done, c.last_state.is_some() || !c.id.is_empty()))
                        .collect();
                    let phase = pod_phase(st.pulling, &states);
                    let reason = if self.engine_error.is_some() {
                        "RuntimeUnavailable"
                    } else {
                        ""
                    };
                    (phase, reason.to_string(), st.message.clone())
                }
            };
            let usage = containers.iter().fold(Usage::default(), |a, c| Usage {
                cpu_millis: a.cpu_millis.saturating_add(c.usage.cpu_millis),
                memory_bytes: a.memory_bytes.saturating_add(c.usage.memory_bytes),
            });
            let mut message = message;
            outpost_proto::pod::truncate(&mut message, pod_limits::MAX_MESSAGE);
            pods.insert(
                name.clone(),
                PodStatus {
                    name: name.clone(),
                    generation: st.generation,
                    phase,
                    reason,
                    message,
                    ready: phase == PodPhase::Running
                        && !containers.is_empty()
                        && containers.iter().all(|c| c.ready),
                    started_ms: st.started_ms,
                    pod_ip: st.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                    containers,
                    usage,
                },
            );
        }
        let snap = Snapshot {
            pods,
            node_usage: round_usage(self.node_usage),
        };
        if self.last.as_ref() == Some(&snap) {
            return None;
        }
        self.last = Some(snap.clone());
        Some(snap)
    }
}

fn terminal_path(cfg: &RuntimeConfig) -> PathBuf {
    cfg.data_dir.join("pods").join("terminal.json")
}

/// Where the owned image references are kept.
fn owned_images_path(cfg: &RuntimeConfig) -> PathBuf {
    cfg.data_dir.join("pods").join("images.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_timeout_chosen() {
        // (ran with, new spec, removal grace) -> seconds
        for (ran, new, removal, want, why) in [
            (Some(30), None, Some(2), 2, "drained with --grace-period 2"),
            (
                Some(30),
                None,
                Some(0),
                0,
                "--grace-period 0: SIGKILL at once",
            ),
            (Some(30), None, None, 30, "removed, the pod's own"),
            (
                Some(30),
                Some(10),
                None,
                30,
                "generation change: what it ran with",
            ),
            (
                Some(30),
                Some(10),
                Some(2),
                30,
                "desired again: a stale removal is ignored",
            ),
            (None, Some(10), None, 10, "unknown run: the new spec's"),
            (
                None,
                None,
                None,
                DEFAULT_GRACE_SECS,
                "left over: the default",
            ),
            (None, None, Some(5), 5, "left over but removed with a grace"),
        ] {
            assert_eq!(stop_grace(ran, new, removal), want, "{why}");
        }
    }

    #[test]
    fn without_an_engine_every_pod_waits_for_it() {
        let mut set = DesiredSet {
            generation: 3,
            ..DesiredSet::default()
        };
        let spec = PodSpec::new("web", vec![ContainerSpec::new("a", "x:1")]);
        set.pods.insert(
            "web".into(),
            DesiredPod {
                generation: 2,
                spec,
            },
        );
        let snap = unavailable_snapshot(&set, "no socket at /run/docker.sock");
        let st = &snap.pods["web"];
        assert_eq!(
            (st.phase, st.reason.as_str(), st.generation),
            (PodPhase::Pending, "RuntimeUnavailable", 2)
        );
        assert_eq!(st.containers.len(), 1);
        assert_eq!(st.containers[0].state.reason(), "RuntimeUnavailable");
        assert!(st.validate().is_ok(), "{:?}", st.validate());
        assert!(unavailable_snapshot(&DesiredSet::default(), "x")
            .pods
            .is_empty());
    }

    #[test]
    fn restart_policies() {
        let table = [
            (RestartPolicy::Always, 0, true),
            (RestartPolicy::Always, 1, true),
            (RestartPolicy::OnFailure, 0, false),
            (RestartPolicy::OnFailure, 137, true),
            (RestartPolicy::Never, 0, false),
            (RestartPolicy::Never, 1, false),
        ];
        for (policy, code, want) in table {
            assert_eq!(should_restart(policy, code), want, "{policy:?} {code}");
        }
    }

    #[test]
    fn reasons() {
        assert_eq!(terminated_reason(true, 137, ""), "OOMKilled");
        assert_eq!(terminated_reason(false, 0, ""), "Completed");
        assert_eq!(terminated_reason(false, 2, ""), "Error");
        assert_eq!(
            terminated_reason(false, 127, "exec: not found"),
            "ContainerCannotRun"
        );
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let (base, max) = (Duration::from_secs(10), Duration::from_secs(300));
        let mut cur = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..8 {
            let (now, next) = backoff_step(cur, base, max, Duration::from_secs(1));
            seen.push(now.as_secs());
            cur = next;
        }
        assert_eq!(seen, [10, 20, 40, 80, 160, 300, 300, 300]);
        // Ten minutes of running resets it.
        let (now, next) = backoff_step(cur, base, max, Duration::from_secs(600));
        assert_eq!((now.as_secs(), next.as_secs()), (10, 20));
    }

    #[test]
    fn go_durations() {
        let table = [
            (10_000, "10s"),
            (20_000, "20s"),
            (80_000, "1m20s"),
            (300_000, "5m0s"),
            (500, "500ms"),
            (3_600_000, "1h0m0s"),
            (1_500, "1.5s"),
            (61_250, "1m1.25s"),
        ];
        for (ms, want) in table {
            assert_eq!(go_duration(Duration::from_millis(ms)), want);
        }
    }

    #[test]
    fn names() {
        assert_eq!(
            container_name("web", "nginx", 3, 2),
            "outpost_web_nginx_3_2"
        );
        assert_eq!(
            container_name("web", PAUSE_CONTAINER, 3, 0),
            "outpost_web_POD_3_0"
        );
    }

    #[test]
    fn phases() {
        let running = ContainerState::Running { started_ms: 1 };
        let creating = waiting("ContainerCreating", "");
        let crash = waiting("CrashLoopBackOff", "x");
        let ok = ContainerState::Terminated {
            exit_code: 0,
            reason: "Completed".into(),
            message: String::new(),
            started_ms: 1,
            finished_ms: 2,
        };
        let bad = ContainerState::Terminated {
            exit_code: 1,
            reason: "Error".into(),
            message: String::new(),
            started_ms: 1,
            finished_ms: 2,
        };
        assert_eq!(
            pod_phase(true, &[(&creating, false, false)]),
            PodPhase::Pulling
        );
        assert_eq!(
            pod_phase(false, &[(&creating, false, false)]),
            PodPhase::Pending
        );
        assert_eq!(
            pod_phase(false, &[(&running, false, true), (&creating, false, false)]),
            PodPhase::Running
        );
        assert_eq!(
            pod_phase(false, &[(&crash, false, true)]),
            PodPhase::Running
        );
        assert_eq!(
            pod_phase(false, &[(&ok, true, true), (&ok, true, true)]),
            PodPhase::Succeeded
        );
        assert_eq!(
            pod_phase(false, &[(&ok, true, true), (&bad, true, true)]),
            PodPhase::Failed
        );
        assert_eq!(
            pod_phase(false, &[(&ok, true, true), (&running, false, true)]),
            PodPhase::Running
        );
    }

    #[test]
    fn cgroup_parsing() {
        assert_eq!(
            parse_cpu_stat_usage_ns("usage_usec 1500\nuser_usec 1000\n"),
            Some(1_500_000)
        );
        assert_eq!(working_set(10_000, "anon 5\ninactive_file 4000\n"), 6_000);
        assert_eq!(
            working_set(10_000, "cache 1\ntotal_inactive_file 3000\n"),
            7_000
        );
        assert_eq!(working_set(1_000, "inactive_file 4000\n"), 0);
        assert_eq!(millicores(0, 500_000_000, Duration::from_secs(1)), 500);
        assert_eq!(millicores(0, 3_000_000_000, Duration::from_secs(2)), 1500);
        assert_eq!(millicores(10, 5, Duration::from_secs(1)), 0);
        assert_eq!(
            parse_proc_stat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1"),
            Some((150, 1000))
        );
        assert_eq!(parse_proc_stat("intr 1"), None);
        assert_eq!(
            round_usage(Usage {
                cpu_millis: 3,
                memory_bytes: 2047
            }),
            Usage {
                cpu_millis: 3,
                memory_bytes: 1024
            }
        );
    }

    #[test]
    fn terminal_file_round_trip() {
        let mut t = BTreeMap::new();
        t.insert(
            "web".to_string(),
            Terminal {
                generation: 4,
                reason: "Evicted".into(),
                message: "The node had condition: [DiskPressure].".into(),
                containers: BTreeMap::new(),
            },
        );
        t.insert(
            "team-a.app".to_string(),
            Terminal {
                generation: 1,
                reason: exec_format::REASON.into(),
                message: "container app: ...".into(),
                containers: BTreeMap::from([(
                    "app".to_string(),
                    waiting(exec_format::REASON, "image x:1 does not run here"),
                )]),
            },
        );
        let bytes = encode_terminal(&t);
        assert_eq!(
            decode_terminal(std::str::from_utf8(&bytes).unwrap()).unwrap(),
            t
        );
        assert!(decode_terminal("{not json").is_err());
        // As written before decisions carried container states.
        let old = decode_terminal(r#"{"web":{"generation":4,"reason":"Evicted","message":"m"}}"#)
            .unwrap();
        assert!(old["web"].containers.is_empty());
    }
}
