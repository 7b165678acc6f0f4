//! The scheduler: places pending pods on nodes, after the Kubernetes
//! scheduler framework, made small. Pure: it reads the cache and `now`, and
//! returns writes; the control loop ([`crate::controllers::plane`]) commits
//! them and tells it which committed.
//!
//! ```text
//!  cache changes --on_change--> snapshot (nodes, counted pods, indexes)
//!                           \-> queue (active / backoff / unschedulable) + cluster events
//!  schedule(now): pop by priority -> Plan (once per pod) -> Cycle (per attempt)
//!                 -> filter a sample of nodes (round robin) -> score -> bind
//!                 -> or: failure message, preemption, park until an event
//! ```
//!
//! - [`snapshot`]: per-node state kept incrementally; pods count on their
//!   node from the moment the scheduler decides ("assumed"), so decisions
//!   in one call see each other; a binding that fails is undone.
//! - [`queue`]: priority order, per-pod back-off (1 s doubling to 10 s),
//!   unschedulable pods parked until a cluster event could help them or
//!   five minutes pass.
//! - [`mod@filter`] and [`score`]: the plugins, in Kubernetes' order and with
//!   its default weights, plus Outpost's default spread of controlled pods
//!   over hosts and sites.
//! - [`arch`]: which architectures a pod's images run on, inferred from the
//!   copies nodes hold and learned from `ExecFormatError` failures. A
//!   failed pod is replaced by its ReplicaSet, and the replacement avoids
//!   the architecture; a bare pod stays Failed (nothing replaces it).
//! - [`preempt`]: Kubernetes' DefaultPreemption of strictly lower-priority
//!   pods, with the preemptor's room held on its nominated node.
//!
//! Like Kubernetes with `percentageOfNodesToScore` unset, only a share of
//! the nodes is searched for feasible ones once enough are found (50 %
//! minus 1 % per 125 nodes, at least 5 %, at least 100 nodes), each
//! attempt starting where the last stopped, so large clusters stay fast
//! and every node gets its turn.
//!
//! Differences from Kubernetes worth knowing: nominated pods hold resources
//! and a pod slot on their node (not ports or affinity); soft spread and
//! preferred pod affinity count pods on all nodes, not only the feasible
//! ones; placed pods' preferred affinity terms do not score incoming pods.

pub mod arch;
pub mod filter;
pub mod preempt;
pub mod queue;
pub mod score;
pub mod snapshot;
pub mod topology;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

use crate::api::machinery::object_ref;
use crate::api::meta::ConditionStatus;
use crate::api::pod::Taint;
use crate::api::pod::POD_SCHEDULED;
use crate::api::{Kind, Object, Pod, Time};
use crate::cache::{Cache, Change};
use crate::controllers::plane::Scheduling;
use crate::controllers::Write;
use filter::{failure_message, filter, Ctx, Cycle, Plan, Reject};
use outpost_proto::EventType;
use queue::Queue;
pub use score::{Strategy, UnknownStrategy};
use snapshot::{Event, Events, Nominated, Snapshot};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Pods decided per `schedule` call, so one call cannot hold the loop (and
/// everyone's writes) for long; what is left is taken on the next step.
pub const PODS_PER_CALL: usize = 5_000;

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// NodeResourcesFit scoring (`--scheduler-strategy`).
    pub strategy: Strategy,
    pub pods_per_call: usize,
    /// Share of nodes to find feasible before scoring; `None`: Kubernetes'
    /// adaptive default.
    pub percentage_of_nodes_to_score: Option<u32>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            strategy: Strategy::LeastAllocated,
            pods_per_call: PODS_PER_CALL,
            percentage_of_nodes_to_score: None,
        }
    }
}

/// How many feasible nodes to find among `all` before scoring
/// (Kubernetes' `numFeasibleNodesToFind`).
pub fn feasible_to_find(all: usize, percentage: Option<u32>) -> usize {
    const MIN_FEASIBLE: usize = 100;
    if all < MIN_FEASIBLE {
        return all;
    }
    let pct = match percentage {
        Some(p) if p > 0 => usize::try_from(p.min(100)).unwrap_or(100),
        _ => 50usize.saturating_sub(all / 125).max(5),
    };
    (all * pct / 100).max(MIN_FEASIBLE)
}

/// What one pod's attempt decided.
enum Outcome {
    Bound,
    Unschedulable(Events),
}

/// The scheduler.
#[derive(Debug, Default)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    snap: Snapshot,
    queue: Queue<Option<Plan>>,
    learned: arch::Learned,
    /// Writes decided outside `schedule` (warnings about learned
    /// architectures), sent with the next call.
    outbox: Vec<Write>,
    /// Cluster events since the last call.
    events: Events,
    next_start: usize,
    last_now: Time,
    scratch: score::Scratch,
    feasible: Vec<usize>,
    rejected: Vec<(usize, Reject)>,
    /// Plans by controller owner uid, with the pod they were made for:
    /// the replicas of one ReplicaSet share one (checked equal first).
    plans: HashMap<String, (Arc<Pod>, Plan)>,
}

/// Owners whose plans are kept before the cache starts over.
const PLAN_CACHE: usize = 1_024;

fn key_of(pod: &Pod) -> String {
    crate::api::ns_name(&pod.metadata.namespace, &pod.metadata.name)
}

fn wants_node(p: &Pod) -> bool {
    p.node().is_none() && !p.metadata.is_deleting() && !p.is_terminal()
}

fn counts_on_node(p: &Pod) -> bool {
    p.node().is_some() && !p.is_terminal()
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig) -> Scheduler {
        Scheduler {
            cfg,
            ..Scheduler::default()
        }
    }

    /// The snapshot (for tests and diagnostics).
    pub fn snapshot(&self) -> &Snapshot {
        &self.snap
    }

    fn drop_queued(&mut self, key: &str) {
        if let Some(e) = self.queue.remove(key) {
            if let Some(plan) = e.data {
                plan.release(&mut self.snap);
            }
        }
    }

    fn pod_changed(
        &mut self,
        key: &str,
        old: Option<&Arc<Pod>>,
        new: Option<&Arc<Pod>>,
        now: Time,
    ) {
        // Accounting on nodes.
        match new.filter(|p| counts_on_node(p)) {
            Some(p) => {
                let node = p.node().unwrap_or_default().to_string();
                let was = self.snap.counted(key).is_some();
                let k: Arc<str> = Arc::from(key);
                self.snap.add_pod(k, p.clone(), &node, false);
                if !was {
                    self.events |= Event::POD_ADDED;
                }
            }
            None => {
                let in_flight = self.snap.is_assumed(key) && new.is_some_and(|p| wants_node(p));
                if !in_flight && self.snap.forget(key) {
                    self.events |= Event::POD_REMOVED;
                }
            }
        }
        // Nominations (room held by preemptors).
        let nominated = new
            .filter(|p| wants_node(p) && !p.status.nominated_node_name.is_empty())
            .map(|p| (p.status.nominated_node_name.clone(), p));
        match nominated {
            Some((node, p)) => self.snap.nominate(
                &node,
                Nominated {
                    key: Arc::from(key),
                    priority: p.priority(),
                    requests: p.requests(),
                },
            ),
            None => {
                if old.is_some_and(|o| !o.status.nominated_node_name.is_empty()) {
                    self.snap.unnominate(key);
                    self.events |= Event::POD_REMOVED;
                }
            }
        }
        // The queue.
        match new.filter(|p| wants_node(p)) {
            Some(p) => {
                if self.snap.is_assumed(key) {
                    return;
                }
                let relevant =
                    old.is_none_or(|o| o.spec != p.spec || o.metadata.labels != p.metadata.labels);
                if let Some(e) = self.queue.get_mut(key) {
                    e.pod = p.clone();
                    e.priority = p.priority();
                    if relevant {
                        if let Some(plan) = e.data.take() {
                            plan.release(&mut self.snap);
                        }
                        self.queue.changed(key, now);
                    }
                } else {
                    self.queue.add(Arc::from(key), p.clone(), None, now);
                }
            }
            None => self.drop_queued(key),
        }
        // Learning from exec format errors.
        if let Some(p) = new {
            let failed = |p: &Pod| {
                p.status.phase == crate::api::pod::PodPhase::Failed
                    && p.status.reason == arch::EXEC_FORMAT_ERROR
            };
            if failed(p) && !old.is_some_and(|o| failed(o)) {
                self.learn(p);
            }
        }
    }

    fn learn(&mut self, p: &Pod) {
        let Some(node) = p
            .node()
            .and_then(|n| self.snap.slot_of(n))
            .and_then(|s| self.snap.node(s))
        else {
            return;
        };
        let arch = node.arch.clone();
        if arch.is_empty() {
            return;
        }
        // The containers that failed so, or every image when none says.
        let failed: Vec<&str> = p
            .status
            .container_statuses
            .iter()
            .filter(|c| {
                c.state.reason() == arch::EXEC_FORMAT_ERROR
                    || c.last_state.reason() == arch::EXEC_FORMAT_ERROR
            })
            .map(|c| c.image.as_str())
            .collect();
        let images: Vec<String> = if failed.is_empty() {
            p.spec.images().map(arch::normalize).collect()
        } else {
            failed.into_iter().map(arch::normalize).collect()
        };
        let mut news = Vec::new();
        for img in &images {
            if self.learned.mark(img, &arch) {
                news.push(img.clone());
            }
        }
        if news.is_empty() {
            return;
        }
        self.outbox.push(Write::event(
            EventType::Warning,
            "ExecFormatError",
            object_ref(Kind::Pod, &p.metadata.namespace, &p.metadata.name),
            format!(
                "image {} is not built for {arch} (exec format error); a replacement pod will avoid {arch} nodes",
                news.join(", ")
            ),
        ));
    }

    fn build_all(&mut self, cache: &Cache, now: Time) {
        self.snap = Snapshot::default();
        self.queue = Queue::default();
        self.plans.clear();
        for n in cache.nodes() {
            self.snap.set_node(n, cache);
        }
        for p in cache.pods() {
            let key = key_of(p);
            if counts_on_node(p) {
                let node = p.node().unwrap_or_default().to_string();
                self.snap
                    .add_pod(Arc::from(key.as_str()), p.clone(), &node, false);
            }
        }
        for p in cache.pods() {
            if wants_node(p) {
                let key = key_of(p);
                self.pod_changed(&key, None, Some(p), now);
            }
        }
        self.events = Event::ALL;
    }

    /// One attempt at placing `key`.
    fn attempt(
        &mut self,
        key: &Arc<str>,
        pod: &Arc<Pod>,
        cache: &Cache,
        now: Time,
        out: &mut Vec<Write>,
    ) -> Outcome {
        let plan = match self.queue.get_mut(key).and_then(|e| e.data.take()) {
            Some(p) => p,
            None => self.plan_for(pod, cache),
        };
        let outcome = self.place(key, pod, &plan, now, out);
        if let Some(e) = self.queue.get_mut(key) {
            e.data = Some(plan);
        } else {
            plan.release(&mut self.snap);
        }
        outcome
    }

    /// The plan of a pod: shared with its siblings when they are alike.
    fn plan_for(&mut self, pod: &Pod, cache: &Cache) -> Plan {
        let Some(owner) = pod.metadata.controller_ref().map(|o| o.uid.clone()) else {
            return Plan::build(pod, &mut self.snap, cache);
        };
        if let Some((tpl, plan)) = self.plans.get(&owner) {
            let alike = tpl.metadata.namespace == pod.metadata.namespace
                && tpl.metadata.labels == pod.metadata.labels
                && tpl.spec == pod.spec;
            if alike {
                return plan.share(&mut self.snap);
            }
        }
        if self.plans.len() >= PLAN_CACHE {
            for (_, (_, p)) in std::mem::take(&mut self.plans) {
                p.release(&mut self.snap);
            }
        }
        let plan = Plan::build(pod, &mut self.snap, cache);
        let kept = plan.share(&mut self.snap);
        if let Some((_, old)) = self.plans.insert(owner, (Arc::new(pod.clone()), kept)) {
            old.release(&mut self.snap);
        }
        plan
    }

    fn place(
        &mut self,
        key: &Arc<str>,
        pod: &Arc<Pod>,
        plan: &Plan,
        now: Time,
        out: &mut Vec<Write>,
    ) -> Outcome {
        let cycle = Cycle::prepare(&self.snap, pod, plan, &self.learned);
        let total_slots = self.snap.nodes.len();
        let want = feasible_to_find(self.snap.live, self.cfg.percentage_of_nodes_to_score);
        self.feasible.clear();
        let cx = Ctx {
            snap: &self.snap,
            pod,
            key,
            plan,
            cycle: &cycle,
        };
        // The nominated node first: its room is held for this pod.
        let nominated = self.snap.slot_of(&pod.status.nominated_node_name);
        if let Some(slot) = nominated {
            let node = self.snap.node(slot).expect("node");
            if filter(&cx, slot, node).is_ok() {
                self.feasible.push(slot);
            }
        }
        self.rejected.clear();
        if self.feasible.is_empty() && total_slots > 0 {
            let start = self.next_start % total_slots;
            let mut visited = 0;
            for i in 0..total_slots {
                let slot = (start + i) % total_slots;
                visited = i + 1;
                let Some(node) = self.snap.node(slot) else {
                    continue;
                };
                // Nodes outside the pod's node affinity are passed over
                // first (cheaply); their real first reason is worked out
                // only if the pod fits nowhere.
                if plan.mask.is_some_and(|m| !self.snap.mask_allows(m, slot)) {
                    self.rejected.push((slot, Reject::NodeAffinity));
                    continue;
                }
                match filter(&cx, slot, node) {
                    Ok(()) => {
                        self.feasible.push(slot);
                        if self.feasible.len() >= want {
                            break;
                        }
                    }
                    Err(r) => self.rejected.push((slot, r)),
                }
            }
            self.next_start = (start + visited) % total_slots;
        }
        let chosen = match self.feasible.len() {
            0 => None,
            1 => Some(self.feasible[0]),
            _ => {
                score::score(&cx, &self.feasible, self.cfg.strategy, &mut self.scratch);
                score::best(&self.scratch.total).map(|i| self.feasible[i])
            }
        };
        if let Some(slot) = chosen {
            self.bind(key, pod, slot, now, out);
            return Outcome::Bound;
        }
        // Fits nowhere: every node was visited; one reason per node, the
        // first filter that said no.
        let mut counts: HashMap<(Reject, Option<&Taint>, &str), usize> = HashMap::new();
        let mut interest: Events = 0;
        for (slot, r) in &mut self.rejected {
            let node = self.snap.node(*slot).expect("node");
            if *r == Reject::NodeAffinity {
                *r = filter(&cx, *slot, node)
                    .err()
                    .unwrap_or(Reject::NodeAffinity);
            }
            *counts.entry(r.reason_key(node)).or_insert(0) += 1;
            interest |= r.interest();
        }
        let archs = self
            .snap
            .images
            .archs(plan.images.iter().map(String::as_str));
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for ((r, taint, arch), n) in counts {
            *reasons
                .entry(r.text(taint, arch, archs.as_ref()))
                .or_insert(0) += n;
        }
        if interest == 0 {
            interest = Event::ALL;
        }
        let message = failure_message(self.snap.live, &reasons);
        self.unschedulable(key, pod, plan, &message, now, out);
        Outcome::Unschedulable(interest)
    }

    fn bind(
        &mut self,
        key: &Arc<str>,
        pod: &Arc<Pod>,
        slot: usize,
        now: Time,
        out: &mut Vec<Write>,
    ) {
        let node = self.snap.node(slot).expect("node").name.clone();
        let mut bound = (**pod).clone();
        bound.spec.node_name = node.clone();
        bound.status.nominated_node_name.clear();
        bound
            .status
            .set_condition(POD_SCHEDULED, ConditionStatus::True, "Scheduled", "", now);
        let (ns, name) = (&pod.metadata.namespace, &pod.metadata.name);
        out.push(Write::Update(Object::Pod(bound)));
        out.push(Write::event(
            EventType::Normal,
            "Scheduled",
            object_ref(Kind::Pod, ns, name),
            format!("Successfully assigned {ns}/{name} to {node}"),
        ));
        self.snap.unnominate(key);
        self.snap.add_pod(key.clone(), pod.clone(), &node, true);
        self.events |= Event::POD_ADDED;
    }

    fn unschedulable(
        &mut self,
        key: &Arc<str>,
        pod: &Arc<Pod>,
        plan: &Plan,
        message: &str,
        now: Time,
        out: &mut Vec<Write>,
    ) {
        let mut nominate: Option<String> = None;
        let mut clear_nomination = false;
        if pod.spec.preemption_policy != Some(crate::api::pod::PreemptionPolicy::Never) {
            match self.waiting_on_victims(pod) {
                true => {}
                false => {
                    let choice = preempt::find(
                        &mut self.snap,
                        pod,
                        key,
                        plan,
                        &self.learned,
                        &self.rejected,
                    );
                    match choice {
                        Some(c) => {
                            let node = self.snap.node(c.slot).expect("node").name.clone();
                            self.preempt(pod, &node, &c.victims, out);
                            nominate = Some(node);
                        }
                        None => clear_nomination = !pod.status.nominated_node_name.is_empty(),
                    }
                }
            }
        }
        let cond = pod.status.condition(POD_SCHEDULED);
        let same = cond.is_some_and(|c| {
            c.status == ConditionStatus::False
                && c.reason == "Unschedulable"
                && c.message == message
        });
        if same && nominate.is_none() && !clear_nomination {
            return;
        }
        let mut status = pod.status.clone();
        status.set_condition(
            POD_SCHEDULED,
            ConditionStatus::False,
            "Unschedulable",
            message,
            now,
        );
        if let Some(n) = &nominate {
            status.nominated_node_name = n.clone();
            self.snap.nominate(
                n,
                Nominated {
                    key: key.clone(),
                    priority: pod.priority(),
                    requests: pod.requests(),
                },
            );
        } else if clear_nomination {
            status.nominated_node_name.clear();
            self.snap.unnominate(key);
        }
        let mut copy = (**pod).clone();
        copy.status = status;
        out.push(Write::Update(Object::Pod(copy)));
        if !same {
            out.push(Write::event(
                EventType::Warning,
                "FailedScheduling",
                object_ref(Kind::Pod, &pod.metadata.namespace, &pod.metadata.name),
                message.to_string(),
            ));
        }
    }

    /// The pod already preempted on its nominated node and lower-priority
    /// pods there are still terminating: wait for them (Kubernetes'
    /// `PodEligibleToPreemptOthers`).
    fn waiting_on_victims(&self, pod: &Pod) -> bool {
        let Some(slot) = self.snap.slot_of(&pod.status.nominated_node_name) else {
            return false;
        };
        let node = self.snap.node(slot).expect("node");
        node.pods.iter().any(|k| {
            self.snap
                .counted(k)
                .is_some_and(|c| c.pod.metadata.is_deleting() && c.pod.priority() < pod.priority())
        })
    }

    fn preempt(
        &mut self,
        pod: &Pod,
        node: &str,
        victims: &[preempt::Victim],
        out: &mut Vec<Write>,
    ) {
        let (ns, name) = (&pod.metadata.namespace, &pod.metadata.name);
        let mut names = Vec::new();
        for v in victims {
            let m = &v.pod.metadata;
            out.push(Write::Delete {
                kind: Kind::Pod,
                namespace: m.namespace.clone(),
                name: m.name.clone(),
                uid: m.uid.clone(),
            });
            out.push(Write::event(
                EventType::Normal,
                "Preempted",
                object_ref(Kind::Pod, &m.namespace, &m.name),
                format!("Preempted by {ns}/{name} on node {node}"),
            ));
            names.push(format!("{}/{}", m.namespace, m.name));
        }
        out.push(Write::event(
            EventType::Normal,
            "Preempted",
            object_ref(Kind::Pod, ns, name),
            format!(
                "Preempted {} lower-priority pod(s) on node {node} to make room: {}",
                victims.len(),
                names.join(", ")
            ),
        ));
    }
}

impl Scheduling for Scheduler {
    fn on_change(&mut self, change: &Change, _cache: &Cache, now: Time) {
        self.last_now = self.last_now.max(now);
        match change.kind {
            Kind::Pod => {
                let old = change.old.as_ref().and_then(|c| c.as_pod());
                let new = change.new.as_ref().and_then(|c| c.as_pod());
                self.pod_changed(&change.key, old, new, now);
            }
            Kind::Node => match change.new.as_ref().and_then(|c| c.as_node()) {
                Some(n) => self.events |= self.snap.set_node(n, _cache),
                None => self.snap.remove_node(&change.key),
            },
            _ => {}
        }
    }

    fn resync(&mut self, cache: &Cache, now: Time) {
        self.last_now = self.last_now.max(now);
        self.build_all(cache, now);
    }

    fn schedule(&mut self, cache: &Cache, now: Time) -> Vec<Write> {
        self.last_now = self.last_now.max(now);
        self.snap.tick += 1;
        self.queue.flush(now);
        self.queue.on_events(std::mem::take(&mut self.events), now);
        let mut out = std::mem::take(&mut self.outbox);
        for _ in 0..self.cfg.pods_per_call {
            let Some(key) = self.queue.pop() else { break };
            let pod = match cache.pod(&key) {
                Some(p) if wants_node(p) => p.clone(),
                _ => {
                    self.drop_queued(&key);
                    continue;
                }
            };
            match self.attempt(&key, &pod, cache, now, &mut out) {
                Outcome::Bound => {}
                Outcome::Unschedulable(interest) => self.queue.unschedulable(&key, interest, now),
            }
        }
        if self.snap.tick.is_multiple_of(64) {
            self.snap.sweep_sets();
        }
        out
    }

    fn written(&mut self, write: &Write, committed: bool, now: Time) {
        let Write::Update(Object::Pod(p)) = write else {
            return;
        };
        if p.spec.node_name.is_empty() {
            return;
        }
        let key = key_of(p);
        if committed {
            self.drop_queued(&key);
            return;
        }
        // The binding failed: undo the assumption and try again later.
        if self.snap.is_assumed(&key) {
            self.snap.forget(&key);
            self.events |= Event::POD_REMOVED;
        }
        if let Some(k) = self.queue.key(&key) {
            self.queue.retry(&k, now);
        }
    }

    fn next_wakeup(&self) -> Option<Time> {
        if self.queue.active_len() > 0 || !self.outbox.is_empty() || self.events != 0 {
            return Some(self.last_now);
        }
        self.queue.next_due()
    }

    fn pending(&self) -> usize {
        self.queue.len()
    }
}
