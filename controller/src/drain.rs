//! `outpostctl drain`'s decisions, without I/O: which pods of a node are
//! evicted, when each eviction is tried again, when a pod counts as gone,
//! when the drain gives up, and what it says, all in kubectl's words.
//!
//! Flow: the caller cordons the node, lists its pods and passes them to
//! [`select`] (kubectl's filters: pods without a controller need
//! `--force`, pods with `emptyDir` data need `--delete-emptydir-data`;
//! finished pods always go). If that reports errors, nothing is evicted.
//! Otherwise a [`Drain`] runs: [`Drain::due`] names the pods whose
//! eviction is to be tried now, the caller sends each through the
//! eviction API and hands the answer to [`Drain::evicted`] (a budget's
//! refusal is retried after [`EVICTION_RETRY`], as kubectl does), then
//! reports which pods are still on the node to [`Drain::observe`] until
//! every evicted pod is gone, and sleeps until [`Drain::next_wakeup`].
//! [`Drain::summary`] ends it: `node/NAME drained`, or what could not be
//! evicted and why.
//!
//! The same machine drives the in-memory cluster's drain tests on the
//! virtual clock, so what they show is what the CLI does.

use crate::api::{Pod, Time};
use std::fmt;
use std::time::Duration;

/// How long kubectl waits before trying a refused eviction again.
pub const EVICTION_RETRY: Duration = Duration::from_secs(5);
/// How often kubectl looks whether an evicted pod is gone.
pub const DELETE_POLL: Duration = Duration::from_secs(1);

/// kubectl's message for pods without a controller.
pub const UNMANAGED_FATAL: &str =
    "cannot delete Pods that declare no controller (use --force to override)";
pub const UNMANAGED_WARNING: &str = "deleting Pods that declare no controller";
/// kubectl's message for pods with `emptyDir` volumes.
pub const LOCAL_STORAGE_FATAL: &str =
    "cannot delete Pods with local storage (use --delete-emptydir-data to override)";
pub const LOCAL_STORAGE_WARNING: &str = "deleting Pods with local storage";

/// `drain`'s flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainOptions {
    /// Evict pods without a controller too.
    pub force: bool,
    /// Evict pods with `emptyDir` volumes (their data is lost).
    pub delete_emptydir_data: bool,
    /// Seconds each pod gets to stop; `None`: its own grace period.
    pub grace_period: Option<u32>,
    /// Give up after this long; `None`: never (kubectl's 0).
    pub timeout: Option<Duration>,
}

/// One pod of the node, by identity: a pod of the same name with another
/// uid is a different pod (evicted and re-created elsewhere counts as
/// gone).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodId {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodId {
    pub fn of(p: &Pod) -> PodId {
        PodId {
            namespace: p.metadata.namespace.clone(),
            name: p.metadata.name.clone(),
            uid: p.metadata.uid.clone(),
        }
    }
}

impl fmt::Display for PodId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A line of output: standard output or standard error, as kubectl
/// splits them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Out(String),
    Err(String),
}

/// What [`select`] decided about a node's pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// The pods to evict, in the order given.
    pub pods: Vec<PodId>,
    /// `deleting Pods that declare no controller: default/a, default/b`.
    pub warnings: Vec<String>,
    /// `cannot delete Pods that declare no controller (use --force to
    /// override): default/a`: any of these and nothing is evicted.
    pub errors: Vec<String>,
}

fn group(out: &mut Vec<String>, message: &str, pods: &[String]) {
    if !pods.is_empty() {
        out.push(format!("{message}: {}", pods.join(", ")));
    }
}

/// kubectl's drain filters over the pods bound to the node.
pub fn select(pods: &[Pod], opts: &DrainOptions) -> Selection {
    let (mut local_fatal, mut local_warn, mut unmanaged_fatal, mut unmanaged_warn) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut selected = Vec::new();
    for p in pods {
        let id = PodId::of(p);
        // Finished pods hold nothing worth keeping: they always go.
        if p.is_terminal() {
            selected.push(id);
            continue;
        }
        let has_empty_dir = p.spec.volumes.iter().any(|v| v.empty_dir.is_some());
        if has_empty_dir {
            if opts.delete_emptydir_data {
                local_warn.push(id.to_string());
            } else {
                local_fatal.push(id.to_string());
                continue;
            }
        }
        if p.metadata.controller_ref().is_none() {
            if opts.force {
                unmanaged_warn.push(id.to_string());
            } else {
                unmanaged_fatal.push(id.to_string());
                continue;
            }
        }
        selected.push(id);
    }
    let mut s = Selection {
        pods: selected,
        ..Selection::default()
    };
    group(&mut s.errors, LOCAL_STORAGE_FATAL, &local_fatal);
    group(&mut s.errors, UNMANAGED_FATAL, &unmanaged_fatal);
    group(&mut s.warnings, LOCAL_STORAGE_WARNING, &local_warn);
    group(&mut s.warnings, UNMANAGED_WARNING, &unmanaged_warn);
    s
}

/// The answer to one eviction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictResult {
    /// Accepted: the pod is being deleted.
    Evicted,
    /// The pod is gone already.
    NotFound,
    /// Refused for now (a disruption budget): try again later.
    Retry(String),
    /// Refused for good.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// The eviction is to be tried at this time.
    Evict(Time),
    /// Evicted; waiting for the pod to be gone.
    Deleting,
    Done,
    Failed(String),
}

/// A drain in progress (see the module doc).
#[derive(Debug, Clone)]
pub struct Drain {
    pods: Vec<(PodId, State)>,
    deadline: Option<Time>,
    timeout: Option<Duration>,
}

/// Go's `time.Duration` text, as kubectl prints its timeout (`1m0s`).
pub fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    let ms = d.subsec_millis();
    let frac = if ms == 0 {
        String::new()
    } else {
        format!(".{ms:03}").trim_end_matches('0').to_string()
    };
    match (s / 3600, (s / 60) % 60, s % 60) {
        (0, 0, sec) => format!("{sec}{frac}s"),
        (0, m, sec) => format!("{m}m{sec}{frac}s"),
        (h, m, sec) => format!("{h}h{m}m{sec}{frac}s"),
    }
}

impl Drain {
    /// Starts evicting `pods` at `now`.
    pub fn new(pods: Vec<PodId>, opts: &DrainOptions, now: Time) -> Drain {
        Drain {
            pods: pods.into_iter().map(|p| (p, State::Evict(now))).collect(),
            deadline: opts.timeout.map(|t| now.plus(t)),
            timeout: opts.timeout,
        }
    }

    fn timed_out(&self, now: Time) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }

    fn timeout_text(&self) -> String {
        go_duration(self.timeout.unwrap_or_default())
    }

    /// Gives up on every pod not done when the timeout has passed.
    fn expire(&mut self, now: Time) {
        if !self.timed_out(now) {
            return;
        }
        let t = self.timeout_text();
        for (id, st) in &mut self.pods {
            let msg = match st {
                State::Evict(_) => format!(
                    "error when evicting pods/{:?} -n {:?}: global timeout reached: {t}",
                    id.name, id.namespace
                ),
                State::Deleting => format!(
                    "error when waiting for pod {:?} in namespace {:?} to terminate: global \
                     timeout reached: {t}",
                    id.name, id.namespace
                ),
                State::Done | State::Failed(_) => continue,
            };
            *st = State::Failed(msg);
        }
    }

    /// The pods whose eviction is to be tried now, each announced with
    /// `evicting pod NAMESPACE/NAME`.
    pub fn due(&mut self, now: Time, out: &mut Vec<Line>) -> Vec<PodId> {
        self.expire(now);
        let mut ids = Vec::new();
        for (id, st) in &self.pods {
            if matches!(st, State::Evict(at) if *at <= now) {
                out.push(Line::Out(format!("evicting pod {id}")));
                ids.push(id.clone());
            }
        }
        ids
    }

    /// Takes the answer to the eviction of `pod`.
    pub fn evicted(&mut self, pod: &PodId, result: EvictResult, now: Time, out: &mut Vec<Line>) {
        let Some((id, st)) = self.pods.iter_mut().find(|(id, _)| id == pod) else {
            return;
        };
        *st = match result {
            EvictResult::Evicted => State::Deleting,
            EvictResult::NotFound => State::Done,
            EvictResult::Retry(why) => {
                out.push(Line::Err(format!(
                    "error when evicting pods/{:?} -n {:?} (will retry after {}): {why}",
                    id.name,
                    id.namespace,
                    go_duration(EVICTION_RETRY)
                )));
                State::Evict(now.plus(EVICTION_RETRY))
            }
            EvictResult::Failed(why) => State::Failed(format!(
                "error when evicting pods/{:?} -n {:?}: {why}",
                id.name, id.namespace
            )),
        };
    }

    /// Whether some evicted pod is still to be seen gone (the caller then
    /// lists the node's pods for [`Drain::observe`]).
    pub fn waiting_for_deletion(&self) -> bool {
        self.pods.iter().any(|(_, st)| *st == State::Deleting)
    }

    /// Takes the pods now on the node: an evicted pod not among them (by
    /// uid) is gone, `pod/NAME evicted`.
    pub fn observe(&mut self, present: &[PodId], now: Time, out: &mut Vec<Line>) {
        for (id, st) in &mut self.pods {
            if *st == State::Deleting && !present.contains(id) {
                out.push(Line::Out(format!("pod/{} evicted", id.name)));
                *st = State::Done;
            }
        }
        self.expire(now);
    }

    /// Every pod is evicted and gone, or given up on.
    pub fn finished(&self) -> bool {
        self.pods
            .iter()
            .all(|(_, st)| matches!(st, State::Done | State::Failed(_)))
    }

    /// When the drain next has something to do.
    pub fn next_wakeup(&self, now: Time) -> Option<Time> {
        if self.finished() {
            return None;
        }
        let evict = self
            .pods
            .iter()
            .filter_map(|(_, st)| match st {
                State::Evict(at) => Some(*at),
                _ => None,
            })
            .min();
        let poll = self.waiting_for_deletion().then(|| now.plus(DELETE_POLL));
        [evict, poll, self.deadline]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t.max(now))
    }

    /// What could not be evicted, one message a pod.
    pub fn errors(&self) -> Vec<String> {
        self.pods
            .iter()
            .filter_map(|(_, st)| match st {
                State::Failed(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    /// The end of the drain of `node`: `node/NAME drained`, or kubectl's
    /// report of what could not be evicted; `false` when the drain failed.
    pub fn summary(&self, node: &str, out: &mut Vec<Line>) -> bool {
        failure_summary(node, &self.errors(), out)
    }
}

/// kubectl's closing lines for a drain that met `errors` (none: drained).
pub fn failure_summary(node: &str, errors: &[String], out: &mut Vec<Line>) -> bool {
    if errors.is_empty() {
        out.push(Line::Out(format!("node/{node} drained")));
        return true;
    }
    let all = if errors.len() == 1 {
        errors[0].clone()
    } else {
        format!("[{}]", errors.join(", "))
    };
    out.push(Line::Err(format!(
        "error: unable to drain node {node:?} due to error: {all}, continuing command..."
    )));
    out.push(Line::Err("There are pending nodes to be drained:".into()));
    out.push(Line::Err(format!(" {node}")));
    out.push(Line::Err(format!("error: {all}")));
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::pod::{Container, PodSpec, Volume};
    use crate::api::{ObjectMeta, OwnerReference};

    fn pod(name: &str, owned: bool, empty_dir: bool) -> Pod {
        let mut meta = ObjectMeta::named("default", name);
        meta.uid = format!("uid-{name}");
        if owned {
            meta.owner_references.push(OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: "web".into(),
                uid: "rs".into(),
                controller: true,
                block_owner_deletion: true,
            });
        }
        let mut spec = PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: "i".into(),
                ..Container::default()
            }],
            node_name: "n1".into(),
            ..PodSpec::default()
        };
        if empty_dir {
            spec.volumes.push(Volume {
                name: "scratch".into(),
                empty_dir: Some(Default::default()),
                ..Volume::default()
            });
        }
        Pod {
            metadata: meta,
            spec,
            status: Default::default(),
        }
    }

    fn id(name: &str) -> PodId {
        PodId {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        }
    }

    #[test]
    fn filters_refuse_and_warn_as_kubectl() {
        let mut finished = pod("done", false, true);
        finished.status.phase = crate::api::pod::PodPhase::Succeeded;
        let pods = [
            pod("web", true, false),
            pod("bare", false, false),
            pod("scratch", true, true),
            finished,
        ];
        let s = select(&pods, &DrainOptions::default());
        assert_eq!(
            s.errors,
            [
                "cannot delete Pods with local storage (use --delete-emptydir-data to override): default/scratch",
                "cannot delete Pods that declare no controller (use --force to override): default/bare",
            ]
        );
        assert!(s.warnings.is_empty());
        let s = select(
            &pods,
            &DrainOptions {
                force: true,
                delete_emptydir_data: true,
                ..DrainOptions::default()
            },
        );
        assert!(s.errors.is_empty());
        assert_eq!(
            s.warnings,
            [
                "deleting Pods with local storage: default/scratch",
                "deleting Pods that declare no controller: default/bare",
            ]
        );
        let names: Vec<&str> = s.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["web", "bare", "scratch", "done"]);
    }

    #[test]
    fn refused_evictions_retry_every_five_seconds_until_the_timeout() {
        let t0 = Time(1_000_000);
        let opts = DrainOptions {
            timeout: Some(Duration::from_secs(12)),
            ..DrainOptions::default()
        };
        let mut d = Drain::new(vec![id("a"), id("b")], &opts, t0);
        let mut out = Vec::new();
        assert_eq!(d.due(t0, &mut out), [id("a"), id("b")]);
        d.evicted(&id("a"), EvictResult::Evicted, t0, &mut out);
        d.evicted(
            &id("b"),
            EvictResult::Retry(crate::controllers::eviction::BUDGET_REFUSAL.into()),
            t0,
            &mut out,
        );
        assert_eq!(
            out,
            [
                Line::Out("evicting pod default/a".into()),
                Line::Out("evicting pod default/b".into()),
                Line::Err("error when evicting pods/\"b\" -n \"default\" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.".into()),
            ]
        );
        // a is polled every second; b is not tried again before 5 s.
        assert_eq!(d.next_wakeup(t0), Some(t0.plus(DELETE_POLL)));
        let t1 = t0.plus(Duration::from_secs(1));
        assert!(d.due(t1, &mut Vec::new()).is_empty());
        out.clear();
        d.observe(&[id("b")], t1, &mut out);
        assert_eq!(out, [Line::Out("pod/a evicted".into())]);
        assert_eq!(d.next_wakeup(t1), Some(t0.plus(EVICTION_RETRY)));
        // Refused at 5 s and 10 s; the next try would be at 15 s, past the
        // timeout, which gives up at 12 s.
        for s in [5, 10] {
            let t = t0.plus(Duration::from_secs(s));
            assert_eq!(d.due(t, &mut Vec::new()), [id("b")]);
            d.evicted(
                &id("b"),
                EvictResult::Retry("no".into()),
                t,
                &mut Vec::new(),
            );
        }
        let t12 = t0.plus(Duration::from_secs(12));
        assert_eq!(d.next_wakeup(t0.plus(Duration::from_secs(10))), Some(t12));
        assert!(d.due(t12, &mut Vec::new()).is_empty());
        assert!(d.finished());
        assert_eq!(
            d.errors(),
            ["error when evicting pods/\"b\" -n \"default\": global timeout reached: 12s"]
        );
        let mut out = Vec::new();
        assert!(!d.summary("n1", &mut out));
        assert_eq!(
            out.last(),
            Some(&Line::Err(
                "error: error when evicting pods/\"b\" -n \"default\": global timeout reached: 12s"
                    .into()
            ))
        );
    }

    #[test]
    fn a_pod_re_created_under_its_name_counts_as_gone() {
        let t0 = Time(5_000);
        let mut d = Drain::new(vec![id("a")], &DrainOptions::default(), t0);
        d.due(t0, &mut Vec::new());
        d.evicted(&id("a"), EvictResult::Evicted, t0, &mut Vec::new());
        let mut same_name = id("a");
        same_name.uid = "other".into();
        let mut out = Vec::new();
        d.observe(&[id("a")], t0, &mut out);
        assert!(out.is_empty() && !d.finished());
        d.observe(&[same_name], t0, &mut out);
        assert!(d.finished());
        assert!(d.summary("n1", &mut out));
        assert_eq!(out.last(), Some(&Line::Out("node/n1 drained".into())));
        // Finished: nothing left to wake up for.
        assert_eq!(d.next_wakeup(t0), None);
    }

    #[test]
    fn durations_print_as_go_does() {
        for (ms, want) in [
            (5_000, "5s"),
            (60_000, "1m0s"),
            (90_000, "1m30s"),
            (3_600_000, "1h0m0s"),
            (1_500, "1.5s"),
        ] {
            assert_eq!(go_duration(Duration::from_millis(ms)), want);
        }
    }
}
