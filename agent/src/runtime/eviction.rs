//! How the node defends itself under pressure, with the kubelet's eviction
//! manager semantics and no I/O.
//!
//! Data flow: `probe` measures the signals and `pressure` turns them into a
//! [`NodeReport`]'s observations and conditions. The reconciler then asks
//! this module three questions, feeding it what it read from the engine:
//!
//! 1. [`admit`]: may a new pod start on a node with these conditions?
//! 2. [`reclaim_plan`]: under disk pressure, which dead containers and unused
//!    images to remove first (reclaiming node-level resources before evicting
//!    anybody, as the kubelet does).
//! 3. [`signals_under_pressure`] and [`rank`]: if pressure remains, which pod
//!    goes first for each signal; the reconciler evicts one pod per cycle and
//!    reports it with [`eviction_message`]. Only pods using some of the
//!    resource are ranked; when none does, nobody is evicted and
//!    [`EvictionWouldNotHelp`] says so on the node once per episode.
//!
//! The rules follow `pkg/kubelet/eviction` (`eviction_manager.go` for
//! admission, `helpers.go` for ranking and messages); where Outpost differs,
//! the item says so.

use outpost_proto::pod::PodSpec;
use outpost_proto::units::format_bytes;
use outpost_proto::{
    Condition, ConditionStatus, ConditionType, NodeReport, Resources, Signal, SignalObservation,
    ThresholdState,
};
use std::cmp::Ordering;
use std::collections::BTreeSet;

/// Pods at or above this priority are admitted whatever the conditions,
/// like the kubelet's critical pods (`scheduling.SystemCriticalPriority`).
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// Quality of service class of a pod, as Kubernetes derives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    BestEffort,
    Burstable,
    Guaranteed,
}

/// Kubernetes' QoS rules over the cpu and memory of every container (zero
/// means "not set"; a request left unset defaults to its limit, as the API
/// server's defaulting does):
///
/// - Guaranteed: every container has cpu and memory limits, and its requests
///   equal them;
/// - BestEffort: no container sets any cpu or memory request or limit;
/// - Burstable: everything else.
pub fn qos(spec: &PodSpec) -> Qos {
    let mut any_set = false;
    let mut guaranteed = true;
    for c in &spec.containers {
        let (req, lim) = (&c.resources.requests, &c.resources.limits);
        let pairs = [
            (req.cpu_millis, lim.cpu_millis),
            (req.memory_bytes, lim.memory_bytes),
        ];
        for (request, limit) in pairs {
            if request != 0 || limit != 0 {
                any_set = true;
            }
            let effective_request = if request == 0 { limit } else { request };
            if limit == 0 || effective_request != limit {
                guaranteed = false;
            }
        }
    }
    if !any_set {
        Qos::BestEffort
    } else if guaranteed {
        Qos::Guaranteed
    } else {
        Qos::Burstable
    }
}

/// The pressure conditions that are True, in report order, deduplicated.
fn pressure_on(conditions: &[Condition]) -> Vec<ConditionType> {
    let mut on: Vec<ConditionType> = Vec::new();
    for c in conditions {
        if c.status == ConditionStatus::True
            && ConditionType::PRESSURE.contains(&c.kind)
            && !on.contains(&c.kind)
        {
            on.push(c.kind);
        }
    }
    on
}

/// The kubelet eviction manager's admission check for a new pod:
///
/// - no pressure condition is True: admit;
/// - only MemoryPressure: admit unless the pod is BestEffort;
/// - any other pressure (DiskPressure, PIDPressure): reject;
/// - critical pods ([`SYSTEM_CRITICAL_PRIORITY`] and above) always pass.
///
/// The error is the kubelet's message, e.g.
/// `The node had condition: [DiskPressure].` (all True pressure
/// conditions, space-separated as Go prints a slice); the pod's reason is
/// `Evicted`, as in Kubernetes.
pub fn admit(spec: &PodSpec, conditions: &[Condition]) -> Result<(), String> {
    let on = pressure_on(conditions);
    if on.is_empty() || spec.priority >= SYSTEM_CRITICAL_PRIORITY {
        return Ok(());
    }
    if on == [ConditionType::MemoryPressure] && qos(spec) != Qos::BestEffort {
        return Ok(());
    }
    let names: Vec<&str> = on.iter().map(|c| c.name()).collect();
    Err(format!("The node had condition: [{}].", names.join(" ")))
}

/// What one pod uses, as the reconciler measured it, for ranking.
#[derive(Debug, Clone)]
pub struct PodUsage {
    pub name: String,
    pub priority: i32,
    /// Sum of the containers' requests ([`PodSpec::requests`]).
    pub requests: Resources,
    /// Working set (cgroup `memory.current` minus `inactive_file`).
    pub memory_bytes: u64,
    /// Writable layers plus emptyDir volumes.
    pub disk_bytes: u64,
    /// Processes and threads.
    pub pids: u64,
}

/// Signals whose hard threshold is met, or whose soft threshold has been met
/// for its grace period ([`ThresholdState::Met`]), in report order without
/// duplicates. A soft threshold still within its grace period does not
/// count.
pub fn signals_under_pressure(report: &NodeReport) -> Vec<Signal> {
    let mut out: Vec<Signal> = Vec::new();
    for o in &report.signals {
        if o.state == ThresholdState::Met && !out.contains(&o.signal) {
            out.push(o.signal);
        }
    }
    out
}

/// The amount a pod uses and requests of the resource behind `signal`.
///
/// The nodefs and imagefs signals all measure a pod's disk bytes against its
/// ephemeral-storage request: Outpost does not count inodes per pod, so
/// `nodefs.inodesFree` ranks by bytes too (the pod writing most is the best
/// guess for the one creating most files). Pids have no request in
/// Kubernetes; Outpost's own pids request is used for the message only.
fn usage_and_request(signal: Signal, pod: &PodUsage) -> (u64, u64) {
    match signal {
        Signal::MemoryAvailable => (pod.memory_bytes, pod.requests.memory_bytes),
        Signal::NodefsAvailable | Signal::NodefsInodesFree | Signal::ImagefsAvailable => {
            (pod.disk_bytes, pod.requests.ephemeral_storage_bytes)
        }
        Signal::PidAvailable => (pod.pids, pod.requests.pids),
    }
}

/// Pod names in eviction order for `signal`, first to evict first.
///
/// - memory.available: pods using more memory than they request first, then
///   lower priority first, then larger usage above request first (kubelet's
///   `rankMemoryPressure`: `exceedMemoryRequests`, `priority`, `memory`);
/// - nodefs/imagefs signals: the same with disk bytes against the
///   ephemeral-storage request (`rankDiskPressureFunc`);
/// - pid.available: lower priority first, then more pids first
///   (`rankPIDPressure`).
///
/// Remaining ties go by name so the order is deterministic.
///
/// Only pods using some of the resource are ranked ([`relieves`]): where
/// the kubelet ranks every active pod and evicts the first, Outpost leaves
/// out a pod whose eviction frees nothing of what is short. The box is
/// shared (the agent does not own its disk or engine), so pressure from
/// outside any pod is common, and evicting a pod using none of the
/// resource costs that pod its place without relieving the node. An empty
/// order means no eviction can help ([`EvictionWouldNotHelp`]).
pub fn rank(signal: Signal, pods: &[PodUsage]) -> Vec<String> {
    let mut order: Vec<&PodUsage> = pods.iter().filter(|p| relieves(signal, p)).collect();
    let by_priority = |a: &PodUsage, b: &PodUsage| a.priority.cmp(&b.priority);
    if signal == Signal::PidAvailable {
        order.sort_by(|a, b| {
            by_priority(a, b)
                .then_with(|| b.pids.cmp(&a.pids))
                .then_with(|| a.name.cmp(&b.name))
        });
    } else {
        // Usage above request, negative when below; i128 holds any u64 difference.
        let above = |p: &PodUsage| {
            let (usage, request) = usage_and_request(signal, p);
            i128::from(usage) - i128::from(request)
        };
        let exceeds = |p: &PodUsage| above(p) > 0;
        order.sort_by(|a, b| {
            // true sorts after false, so compare b to a: exceeding pods first.
            exceeds(b)
                .cmp(&exceeds(a))
                .then_with(|| by_priority(a, b))
                .then_with(|| above(b).cmp(&above(a)))
                .then_with(|| a.name.cmp(&b.name))
        });
    }
    order.into_iter().map(|p| p.name.clone()).collect()
}

/// Whether evicting `pod` can relieve `signal`: it uses some of the
/// resource behind it (memory for memory.available, disk bytes for the
/// nodefs and imagefs signals, inodes included since they are not counted
/// per pod, pids for pid.available).
pub fn relieves(signal: Signal, pod: &PodUsage) -> bool {
    usage_and_request(signal, pod).0 > 0
}

/// Reason of the node event saying that a signal is under pressure but no
/// pod uses any of its resource, so nobody is evicted.
pub const WOULD_NOT_HELP: &str = "EvictionWouldNotHelp";

/// Tells once per pressure episode that evicting would not help a signal
/// (no pod uses its resource, see [`rank`]): an episode lasts while the
/// signal stays under pressure, cycle after cycle.
#[derive(Debug, Default)]
pub struct EvictionWouldNotHelp {
    told: BTreeSet<Signal>,
}

impl EvictionWouldNotHelp {
    /// The signals under pressure this cycle: episodes of the others ended,
    /// so a new one will be told again.
    pub fn observe(&mut self, met: &[Signal]) {
        self.told.retain(|s| met.contains(s));
    }

    /// No pod can relieve `signal` (observed as `obs`, if reported): the
    /// event message, when this episode was not told yet.
    pub fn nobody_helps(
        &mut self,
        signal: Signal,
        obs: Option<&SignalObservation>,
    ) -> Option<String> {
        if !self.told.insert(signal) {
            return None;
        }
        Some(would_not_help_message(signal, obs))
    }
}

/// `nodefs.available is 400Mi, below its threshold of 1Gi, but no pod on
/// this node uses any ephemeral-storage: evicting one would free nothing,
/// so none is evicted. Free some on the node itself (outside the pods).`
pub fn would_not_help_message(signal: Signal, obs: Option<&SignalObservation>) -> String {
    let amount = |v: u64| match signal {
        Signal::PidAvailable | Signal::NodefsInodesFree => v.to_string(),
        _ => format_bytes(v),
    };
    let observed = match obs {
        Some(o) => {
            // The threshold that is met: the hard one when it is, else the soft one.
            let threshold = o
                .hard_threshold
                .filter(|h| o.available < *h)
                .or(o.soft_threshold)
                .or(o.hard_threshold);
            match threshold {
                Some(t) => format!(
                    "{} is {}, below its threshold of {}",
                    signal.name(),
                    amount(o.available),
                    amount(t)
                ),
                None => format!("{} is {}", signal.name(), amount(o.available)),
            }
        }
        None => format!("{} is under pressure", signal.name()),
    };
    format!(
        "{observed}, but no pod on this node uses any {}: evicting one would free nothing, so none is evicted. Free some on the node itself (outside the pods).",
        resource_name(signal)
    )
}

/// The kubelet's name for the resource a signal reclaims.
fn resource_name(signal: Signal) -> &'static str {
    match signal {
        Signal::MemoryAvailable => "memory",
        Signal::NodefsAvailable | Signal::ImagefsAvailable => "ephemeral-storage",
        Signal::NodefsInodesFree => "inodes",
        Signal::PidAvailable => "pids",
    }
}

/// The eviction message, worded like the kubelet's (`evictionMessage`):
/// `The node was low on resource: memory. Pod hog was using 310Mi, request
/// is 0.` The kubelet names each container over its request; Outpost
/// measures per pod, so it names the pod.
pub fn eviction_message(signal: Signal, pod: &PodUsage) -> String {
    let (usage, request) = usage_and_request(signal, pod);
    let (usage, request, what) = match signal {
        Signal::PidAvailable => (usage.to_string(), request.to_string(), " pids"),
        Signal::NodefsInodesFree => (format_bytes(usage), format_bytes(request), " of disk"),
        _ => (format_bytes(usage), format_bytes(request), ""),
    };
    format!(
        "The node was low on resource: {}. Pod {} was using {usage}{what}, request is {request}.",
        resource_name(signal),
        pod.name
    )
}

/// An exited container of ours, removable to reclaim disk.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadContainer {
    pub id: String,
    pub pod: String,
    /// Size of its writable layer.
    pub size_bytes: u64,
}

/// An image in the engine, as the reconciler lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    /// `sha256:...`.
    pub id: String,
    /// `repo:tag` as the engine lists them (`RepoTags`).
    pub tags: Vec<String>,
    pub size_bytes: u64,
    /// Containers using it, not counting the dead containers the same plan
    /// removes; negative when the engine did not count (never removed).
    pub containers: i64,
}

/// What to remove, in order: container ids, then image ids.
#[derive(Debug, Clone, PartialEq)]
pub struct ReclaimPlan {
    pub containers: Vec<String>,
    pub images: Vec<String>,
}

/// The reclaim step before any eviction: every dead container first (they
/// are ours and exited; largest first), then images no container uses and
/// nothing protects, largest first. Ties go by id.
///
/// `protected` holds image references (`repo:tag`; a bare `repo` means
/// `repo:latest`; `docker.io/library/` prefixes are ignored) and image ids
/// (`sha256:HEX`, `HEX`, or a prefix of at least 12 hex digits): the images
/// of the node's pods and of their last rollback. A reference by digest
/// cannot be matched against tags; the caller protects such images by id.
pub fn reclaim_plan(
    dead: &[DeadContainer],
    images: &[ImageInfo],
    protected: &BTreeSet<String>,
) -> ReclaimPlan {
    let mut dead: Vec<&DeadContainer> = dead.iter().collect();
    dead.sort_by(|a, b| by_size_then_id((a.size_bytes, &a.id), (b.size_bytes, &b.id)));
    let mut containers: Vec<String> = Vec::with_capacity(dead.len());
    for d in dead {
        if !containers.contains(&d.id) {
            containers.push(d.id.clone());
        }
    }

    let refs: BTreeSet<String> = protected.iter().map(|p| normalize_ref(p)).collect();
    let ids: Vec<&str> = protected.iter().filter_map(|p| id_hex(p)).collect();
    let mut unused: Vec<&ImageInfo> = images
        .iter()
        .filter(|i| i.containers == 0)
        .filter(|i| !i.tags.iter().any(|t| refs.contains(&normalize_ref(t))))
        .filter(|i| {
            let hex = id_hex(&i.id).unwrap_or(i.id.as_str());
            !ids.iter().any(|p| hex.starts_with(p))
        })
        .collect();
    unused.sort_by(|a, b| by_size_then_id((a.size_bytes, &a.id), (b.size_bytes, &b.id)));
    let mut plan_images: Vec<String> = Vec::with_capacity(unused.len());
    for i in unused {
        if !plan_images.contains(&i.id) {
            plan_images.push(i.id.clone());
        }
    }
    ReclaimPlan {
        containers,
        images: plan_images,
    }
}

/// Only the images Outpost itself brought to the node: those with a tag
/// among `owned` (references the node's pods have used, in any spelling
/// [`reclaim_plan`] accepts). Unlike the kubelet, which owns its engine,
/// the agent shares the engine with whatever else the box runs, so an image
/// it never used is not its to remove, just as a container it did not
/// create is left alone. Untagged images are never claimed.
pub fn owned_only(images: Vec<ImageInfo>, owned: &BTreeSet<String>) -> Vec<ImageInfo> {
    let owned: BTreeSet<String> = owned.iter().map(|r| normalize_ref(r)).collect();
    images
        .into_iter()
        .filter(|i| i.tags.iter().any(|t| owned.contains(&normalize_ref(t))))
        .collect()
}

fn by_size_then_id(a: (u64, &String), b: (u64, &String)) -> Ordering {
    b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1))
}

/// The hex digits of an image id written as `sha256:HEX`, `HEX` or a short
/// id (at least 12 lower-case hex digits); `None` for anything else.
fn id_hex(s: &str) -> Option<&str> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    let is_hex = hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (is_hex && (12..=64).contains(&hex.len())).then_some(hex)
}

/// An image reference in the form the engine lists tags: Docker Hub's
/// implicit registry and `library/` namespace dropped, `:latest` added when
/// no tag or digest is given.
fn normalize_ref(r: &str) -> String {
    let mut s = r;
    for prefix in ["docker.io/", "index.docker.io/", "registry-1.docker.io/"] {
        if let Some(rest) = s.strip_prefix(prefix) {
            s = rest;
            break;
        }
    }
    if let Some(rest) = s.strip_prefix("library/") {
        s = rest;
    }
    let name_part = s.rsplit('/').next().unwrap_or(s);
    if name_part.contains(':') || s.contains('@') {
        s.to_string()
    } else {
        format!("{s}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_proto::pod::{ContainerSpec, ResourceSpec};
    use proptest::prelude::*;

    const MI: u64 = 1 << 20;
    const GI: u64 = 1 << 30;

    fn res(cpu_millis: u64, memory_bytes: u64) -> Resources {
        Resources {
            cpu_millis,
            memory_bytes,
            ..Resources::default()
        }
    }

    fn container(name: &str, requests: Resources, limits: Resources) -> ContainerSpec {
        let mut c = ContainerSpec::new(name, "outpost/workload-http:dev");
        c.resources = ResourceSpec { requests, limits };
        c
    }

    fn pod(containers: Vec<ContainerSpec>) -> PodSpec {
        PodSpec::new("p", containers)
    }

    #[test]
    fn qos_classes() {
        let none = Resources::default();
        let gi = res(500, GI);
        let cases: Vec<(&str, Vec<ContainerSpec>, Qos)> = vec![
            (
                "nothing set",
                vec![container("a", none, none)],
                Qos::BestEffort,
            ),
            (
                "nothing set anywhere",
                vec![container("a", none, none), container("b", none, none)],
                Qos::BestEffort,
            ),
            (
                "only non-cpu/memory requests",
                vec![container(
                    "a",
                    Resources {
                        pids: 10,
                        ephemeral_storage_bytes: GI,
                        gpus: 1,
                        ..none
                    },
                    none,
                )],
                Qos::BestEffort,
            ),
            (
                "limits equal requests",
                vec![container("a", gi, gi)],
                Qos::Guaranteed,
            ),
            (
                "limits only: requests default to them",
                vec![container("a", none, gi)],
                Qos::Guaranteed,
            ),
            (
                "every container guaranteed",
                vec![container("a", gi, gi), container("b", none, res(100, MI))],
                Qos::Guaranteed,
            ),
            (
                "request below limit",
                vec![container("a", res(250, GI), gi)],
                Qos::Burstable,
            ),
            (
                "requests only",
                vec![container("a", gi, none)],
                Qos::Burstable,
            ),
            (
                "memory limit missing",
                vec![container("a", none, res(500, 0))],
                Qos::Burstable,
            ),
            (
                "cpu limit missing",
                vec![container("a", none, res(0, GI))],
                Qos::Burstable,
            ),
            (
                "one best-effort container among guaranteed",
                vec![container("a", gi, gi), container("b", none, none)],
                Qos::Burstable,
            ),
            (
                "only a memory request",
                vec![container("a", res(0, MI), none)],
                Qos::Burstable,
            ),
        ];
        for (what, containers, want) in cases {
            assert_eq!(qos(&pod(containers)), want, "{what}");
        }
    }

    fn cond(kind: ConditionType, status: ConditionStatus) -> Condition {
        Condition {
            kind,
            status,
            reason: kind.reason(status == ConditionStatus::True).into(),
            message: String::new(),
            last_transition_ms: 1,
        }
    }

    #[test]
    fn admission_table() {
        use ConditionStatus::{False, True, Unknown};
        use ConditionType::{DiskPressure, MemoryPressure, PidPressure, Ready};
        let best_effort = pod(vec![container(
            "a",
            Resources::default(),
            Resources::default(),
        )]);
        let burstable = pod(vec![container("a", res(100, MI), Resources::default())]);
        let guaranteed = pod(vec![container("a", res(100, MI), res(100, MI))]);
        let mut critical = best_effort.clone();
        critical.priority = SYSTEM_CRITICAL_PRIORITY;

        let ok = || Ok(());
        let reject = |s: &str| Err::<(), String>(s.to_string());
        // What, pod, conditions, verdict.
        type Case<'a> = (&'a str, &'a PodSpec, Vec<Condition>, Result<(), String>);
        let cases: Vec<Case> = vec![
            ("no conditions", &best_effort, vec![], ok()),
            (
                "all pressure False",
                &best_effort,
                vec![
                    cond(MemoryPressure, False),
                    cond(DiskPressure, False),
                    cond(PidPressure, False),
                ],
                ok(),
            ),
            (
                "Unknown is not pressure",
                &best_effort,
                vec![cond(DiskPressure, Unknown)],
                ok(),
            ),
            (
                "Ready is not pressure",
                &best_effort,
                vec![cond(Ready, True)],
                ok(),
            ),
            (
                "memory pressure rejects best effort",
                &best_effort,
                vec![cond(MemoryPressure, True)],
                reject("The node had condition: [MemoryPressure]."),
            ),
            (
                "memory pressure admits burstable",
                &burstable,
                vec![cond(MemoryPressure, True)],
                ok(),
            ),
            (
                "memory pressure admits guaranteed",
                &guaranteed,
                vec![cond(MemoryPressure, True), cond(DiskPressure, False)],
                ok(),
            ),
            (
                "disk pressure rejects guaranteed",
                &guaranteed,
                vec![cond(DiskPressure, True)],
                reject("The node had condition: [DiskPressure]."),
            ),
            (
                "pid pressure rejects burstable",
                &burstable,
                vec![cond(PidPressure, True)],
                reject("The node had condition: [PIDPressure]."),
            ),
            (
                "memory plus disk rejects even guaranteed, naming both",
                &guaranteed,
                vec![
                    cond(MemoryPressure, True),
                    cond(DiskPressure, True),
                    cond(PidPressure, False),
                ],
                reject("The node had condition: [MemoryPressure DiskPressure]."),
            ),
            (
                "duplicates listed once",
                &burstable,
                vec![cond(DiskPressure, True), cond(DiskPressure, True)],
                reject("The node had condition: [DiskPressure]."),
            ),
            (
                "critical pods always pass",
                &critical,
                vec![
                    cond(MemoryPressure, True),
                    cond(DiskPressure, True),
                    cond(PidPressure, True),
                ],
                ok(),
            ),
        ];
        for (what, spec, conditions, want) in cases {
            assert_eq!(admit(spec, &conditions), want, "{what}");
        }
    }

    fn observation(signal: Signal, state: ThresholdState) -> SignalObservation {
        SignalObservation {
            signal,
            available: 1,
            capacity: 10,
            hard_threshold: Some(2),
            soft_threshold: None,
            state,
            window_min: 1,
        }
    }

    #[test]
    fn only_met_signals_are_under_pressure() {
        let report = NodeReport {
            signals: vec![
                observation(Signal::PidAvailable, ThresholdState::Met),
                observation(Signal::MemoryAvailable, ThresholdState::Clear),
                observation(
                    Signal::NodefsAvailable,
                    ThresholdState::SoftMet {
                        since_ms: 5,
                        grace_secs: 60,
                    },
                ),
                observation(Signal::ImagefsAvailable, ThresholdState::Met),
                observation(Signal::PidAvailable, ThresholdState::Met),
            ],
            ..NodeReport::default()
        };
        assert_eq!(
            signals_under_pressure(&report),
            [Signal::PidAvailable, Signal::ImagefsAvailable]
        );
        assert!(signals_under_pressure(&NodeReport::default()).is_empty());
    }

    fn usage(
        name: &str,
        priority: i32,
        requests: Resources,
        memory: u64,
        disk: u64,
        pids: u64,
    ) -> PodUsage {
        PodUsage {
            name: name.into(),
            priority,
            requests,
            memory_bytes: memory,
            disk_bytes: disk,
            pids,
        }
    }

    fn req(memory: u64, disk: u64) -> Resources {
        Resources {
            memory_bytes: memory,
            ephemeral_storage_bytes: disk,
            pids: 50,
            ..Resources::default()
        }
    }

    #[test]
    fn memory_ranking_exceeding_first_then_priority_then_overage() {
        let pods = [
            // Within its request: after every exceeding pod, whatever its priority.
            usage("within", -100, req(GI, 0), 900 * MI, 0, 1),
            // Exceeding, high priority: after every lower-priority exceeder.
            usage("vip", 1000, req(10 * MI, 0), 500 * MI, 0, 1),
            // Exceeding, priority 0, by 100Mi and by 300Mi.
            usage("small-over", 0, req(100 * MI, 0), 200 * MI, 0, 1),
            usage("big-over", 0, req(0, 0), 300 * MI, 0, 1),
            // Exactly at its request does not exceed.
            usage("at-request", -5, req(64 * MI, 0), 64 * MI, 0, 1),
            // Same priority and overage as big-over: name breaks the tie.
            usage("also-big", 0, req(MI, 0), 301 * MI, 0, 1),
            // Below request by less than `within`: its margin is smaller, so it goes first.
            usage("margin-small", -100, req(2 * GI, 0), 2 * GI - MI, 0, 1),
        ];
        assert_eq!(
            rank(Signal::MemoryAvailable, &pods),
            [
                "also-big",
                "big-over",
                "small-over",
                "vip",
                "margin-small",
                "within",
                "at-request"
            ]
        );
    }

    #[test]
    fn disk_ranking_uses_disk_against_ephemeral_request() {
        let pods = [
            // Huge memory overage is irrelevant to disk.
            usage("memory-hog", -10, req(0, 10 * GI), 8 * GI, GI, 1),
            usage("writer", 0, req(GI, 100 * MI), 0, 5 * GI, 1),
            usage("low-prio-writer", -1, req(GI, 0), 0, MI, 1),
        ];
        for signal in [
            Signal::NodefsAvailable,
            Signal::ImagefsAvailable,
            Signal::NodefsInodesFree,
        ] {
            assert_eq!(
                rank(signal, &pods),
                ["low-prio-writer", "writer", "memory-hog"],
                "{signal:?}"
            );
        }
        assert_eq!(
            rank(Signal::MemoryAvailable, &pods),
            ["memory-hog"],
            "the writers use no memory: evicting them frees none"
        );
    }

    #[test]
    fn pid_ranking_priority_then_pids() {
        let pods = [
            usage("forky", 10, req(0, 0), 0, 0, 5000),
            usage("quiet", 0, req(0, 0), 0, 0, 3),
            usage("busy", 0, req(0, 0), 0, 0, 300),
            usage("b-tie", 0, req(0, 0), 0, 0, 300),
        ];
        assert_eq!(
            rank(Signal::PidAvailable, &pods),
            ["b-tie", "busy", "quiet", "forky"]
        );
        assert!(rank(Signal::PidAvailable, &[]).is_empty());
    }

    #[test]
    fn ranking_survives_extreme_values() {
        let pods = [
            usage("max-request", i32::MIN, req(u64::MAX, u64::MAX), 0, 0, 0),
            usage(
                "max-usage",
                i32::MAX,
                req(0, 0),
                u64::MAX,
                u64::MAX,
                u64::MAX,
            ),
        ];
        for signal in Signal::ALL {
            assert_eq!(rank(signal, &pods), ["max-usage"], "{signal:?}");
        }
        let mut using = pods.clone();
        using[0].memory_bytes = 1;
        using[0].pids = 1;
        assert_eq!(
            rank(Signal::MemoryAvailable, &using),
            ["max-usage", "max-request"]
        );
        assert_eq!(
            rank(Signal::PidAvailable, &using),
            ["max-request", "max-usage"]
        );
    }

    #[test]
    fn eviction_messages() {
        let hog = usage("hog", 0, req(0, GI), 310 * MI, 3 * GI / 2, 120);
        let cases = [
            (
                Signal::MemoryAvailable,
                "The node was low on resource: memory. Pod hog was using 310Mi, request is 0.",
            ),
            (
                Signal::NodefsAvailable,
                "The node was low on resource: ephemeral-storage. Pod hog was using 1.5Gi, request is 1Gi.",
            ),
            (
                Signal::ImagefsAvailable,
                "The node was low on resource: ephemeral-storage. Pod hog was using 1.5Gi, request is 1Gi.",
            ),
            (
                Signal::NodefsInodesFree,
                "The node was low on resource: inodes. Pod hog was using 1.5Gi of disk, request is 1Gi.",
            ),
            (
                Signal::PidAvailable,
                "The node was low on resource: pids. Pod hog was using 120 pids, request is 50.",
            ),
        ];
        for (signal, want) in cases {
            assert_eq!(eviction_message(signal, &hog), want);
        }
    }

    #[test]
    fn pressure_from_outside_the_pods_evicts_nobody_and_says_so_once() {
        // A file written outside any container filled nodefs; the pods use
        // memory but no disk.
        let pods = [
            usage("idle", -10, req(0, 0), 50 * MI, 0, 3),
            usage("web", 0, req(GI, 0), 200 * MI, 0, 10),
        ];
        assert!(rank(Signal::NodefsAvailable, &pods).is_empty());
        assert!(rank(Signal::NodefsInodesFree, &pods).is_empty());
        assert_eq!(rank(Signal::MemoryAvailable, &pods), ["idle", "web"]);
        let obs = SignalObservation {
            signal: Signal::NodefsAvailable,
            available: 400 * MI,
            capacity: 10 * GI,
            hard_threshold: Some(GI),
            soft_threshold: None,
            state: ThresholdState::Met,
            window_min: 400 * MI,
        };
        let mut told = EvictionWouldNotHelp::default();
        let mut events = Vec::new();
        // Ten housekeeping cycles of one episode: one event.
        for _ in 0..10 {
            told.observe(&[Signal::NodefsAvailable]);
            events.extend(told.nobody_helps(Signal::NodefsAvailable, Some(&obs)));
        }
        assert_eq!(
            events,
            ["nodefs.available is 400Mi, below its threshold of 1Gi, but no pod on this node uses any ephemeral-storage: evicting one would free nothing, so none is evicted. Free some on the node itself (outside the pods)."]
        );
        // Another signal is its own episode.
        assert!(told.nobody_helps(Signal::PidAvailable, None).is_some());
        // The pressure ends, then comes back: a new episode, told again.
        told.observe(&[]);
        told.observe(&[Signal::NodefsAvailable]);
        assert!(told
            .nobody_helps(Signal::NodefsAvailable, Some(&obs))
            .is_some());
    }

    #[test]
    fn would_not_help_names_the_met_threshold() {
        let obs = |available, hard, soft| SignalObservation {
            signal: Signal::PidAvailable,
            available,
            capacity: 32768,
            hard_threshold: hard,
            soft_threshold: soft,
            state: ThresholdState::Met,
            window_min: available,
        };
        for (o, want) in [
            (
                obs(100, Some(3000), Some(5000)),
                "pid.available is 100, below its threshold of 3000,",
            ),
            (
                obs(4000, Some(3000), Some(5000)),
                "pid.available is 4000, below its threshold of 5000,",
            ),
            (obs(100, None, None), "pid.available is 100,"),
        ] {
            let m = would_not_help_message(Signal::PidAvailable, Some(&o));
            assert!(m.starts_with(want), "{m}");
            assert!(m.contains("no pod on this node uses any pids"), "{m}");
        }
    }

    fn any_signal() -> impl Strategy<Value = Signal> {
        proptest::sample::select(Signal::ALL.to_vec())
    }

    proptest! {
        /// Never ranks (so never evicts) a pod using none of the signal's
        /// resource, and ranks every pod that uses some.
        #[test]
        fn ranks_exactly_the_pods_that_relieve_the_signal(
            signal in any_signal(),
            pods in proptest::collection::vec(
                (any::<i32>(), 0u64..4, 0u64..4, 0u64..4, 0u64..4, 0u64..4),
                0..12,
            ),
        ) {
            let pods: Vec<PodUsage> = pods
                .into_iter()
                .enumerate()
                .map(|(i, (priority, memory, disk, pids, mreq, dreq))| PodUsage {
                    name: format!("p{i}"),
                    priority,
                    requests: Resources { memory_bytes: mreq, ephemeral_storage_bytes: dreq, ..Resources::default() },
                    memory_bytes: memory,
                    disk_bytes: disk,
                    pids,
                })
                .collect();
            let order = rank(signal, &pods);
            for name in &order {
                let p = pods.iter().find(|p| &p.name == name).unwrap();
                prop_assert!(usage_and_request(signal, p).0 > 0, "{signal:?} ranked {p:?}");
            }
            let relieving = pods.iter().filter(|p| relieves(signal, p)).count();
            prop_assert_eq!(order.len(), relieving);
        }
    }

    fn image(id: &str, tags: &[&str], size: u64, containers: i64) -> ImageInfo {
        ImageInfo {
            id: id.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            size_bytes: size,
            containers,
        }
    }

    fn dead(id: &str, size: u64) -> DeadContainer {
        DeadContainer {
            id: id.into(),
            pod: "p".into(),
            size_bytes: size,
        }
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    const ID_A: &str = "sha256:aaaaaaaaaaaa1111111111111111111111111111111111111111111111111111";
    const ID_B: &str = "sha256:bbbbbbbbbbbb2222222222222222222222222222222222222222222222222222";
    const ID_C: &str = "sha256:cccccccccccc3333333333333333333333333333333333333333333333333333";
    const ID_D: &str = "sha256:dddddddddddd4444444444444444444444444444444444444444444444444444";

    #[test]
    fn plan_order_dead_containers_then_unused_images_largest_first() {
        let plan = reclaim_plan(
            &[
                dead("c1", 10),
                dead("c2", 500),
                dead("c0", 10),
                dead("c2", 500),
            ],
            &[
                image(ID_A, &["small:1"], 10 * MI, 0),
                image(ID_B, &["big:1", "big:latest"], 900 * MI, 0),
                image(ID_C, &[], 300 * MI, 0),
                image(ID_D, &["same-size:1"], 300 * MI, 0),
            ],
            &BTreeSet::new(),
        );
        assert_eq!(
            plan,
            ReclaimPlan {
                containers: vec!["c2".into(), "c0".into(), "c1".into()],
                images: vec![ID_B.into(), ID_C.into(), ID_D.into(), ID_A.into()],
            }
        );
        let empty = reclaim_plan(&[], &[], &BTreeSet::new());
        assert!(empty.containers.is_empty() && empty.images.is_empty());
    }

    #[test]
    fn images_in_use_or_uncounted_are_never_planned() {
        let plan = reclaim_plan(
            &[],
            &[
                image(ID_A, &["used:1"], GI, 1),
                image(ID_B, &["uncounted:1"], GI, -1),
                image(ID_C, &["free:1"], MI, 0),
            ],
            &BTreeSet::new(),
        );
        assert_eq!(plan.images, [ID_C]);
    }

    #[test]
    fn only_images_our_pods_used_are_candidates() {
        let images = vec![
            image(ID_A, &["nginx:latest"], GI, 0),
            image(ID_B, &["someone-elses:1", "app:2"], GI, 0),
            image(ID_C, &[], GI, 0),
            image(ID_D, &["other:1"], GI, 0),
        ];
        let kept = owned_only(images, &set(&["docker.io/library/nginx", "app:2"]));
        let ids: Vec<&str> = kept.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, [ID_A, ID_B]);
        assert!(owned_only(vec![image(ID_D, &["other:1"], GI, 0)], &set(&[])).is_empty());
    }

    #[test]
    fn protected_images_are_never_planned() {
        let images = [
            image(ID_A, &["nginx:latest"], GI, 0),
            image(
                ID_B,
                &["outpost/workload-http:dev", "mirror.local/http:v2"],
                GI,
                0,
            ),
            image(ID_C, &[], GI, 0),
            image(ID_D, &["registry.local:5000/app:1.2"], GI, 0),
        ];
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("nothing protected", &[], &[ID_A, ID_B, ID_C, ID_D]),
            ("bare repo means latest", &["nginx"], &[ID_B, ID_C, ID_D]),
            (
                "docker hub spelled out",
                &["docker.io/library/nginx"],
                &[ID_B, ID_C, ID_D],
            ),
            (
                "other tag does not protect",
                &["nginx:1.25"],
                &[ID_A, ID_B, ID_C, ID_D],
            ),
            (
                "any one tag protects",
                &["mirror.local/http:v2"],
                &[ID_A, ID_C, ID_D],
            ),
            (
                "registry with port, tag kept",
                &["registry.local:5000/app:1.2"],
                &[ID_A, ID_B, ID_C],
            ),
            (
                "registry with port, no tag",
                &["registry.local:5000/app"],
                &[ID_A, ID_B, ID_C, ID_D],
            ),
            ("full id", &[ID_C], &[ID_A, ID_B, ID_D]),
            (
                "hex id",
                &["cccccccccccc3333333333333333333333333333333333333333333333333333"],
                &[ID_A, ID_B, ID_D],
            ),
            ("short id", &["cccccccccccc"], &[ID_A, ID_B, ID_D]),
            ("too short to be an id", &["ccc"], &[ID_A, ID_B, ID_C, ID_D]),
            (
                "several",
                &[
                    "nginx:latest",
                    "outpost/workload-http:dev",
                    "sha256:cccccccccccc",
                    "registry.local:5000/app:1.2",
                ],
                &[],
            ),
        ];
        for (what, protected, want) in cases {
            let plan = reclaim_plan(&[], &images, &set(protected));
            assert_eq!(plan.images, *want, "{what}");
            for p in *protected {
                assert!(!plan.images.iter().any(|i| i == p), "{what}");
            }
        }
    }

    #[test]
    fn reference_normalisation() {
        let cases = [
            ("nginx", "nginx:latest"),
            ("nginx:1", "nginx:1"),
            ("library/nginx", "nginx:latest"),
            ("docker.io/library/nginx:1", "nginx:1"),
            ("docker.io/grafana/grafana", "grafana/grafana:latest"),
            ("localhost:5000/app", "localhost:5000/app:latest"),
            ("localhost:5000/app:2", "localhost:5000/app:2"),
            ("app@sha256:abc", "app@sha256:abc"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_ref(input), want, "{input}");
        }
    }
}
