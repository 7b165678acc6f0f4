//! The filters: whether a pod may go to a node, in Kubernetes' plugin order
//! (the first that rejects a node names the reason the failure message
//! counts for it).
//!
//! Work is split three ways so the per-node check is a handful of lookups:
//! - a [`Plan`] is resolved once per queued pod: its requests, ports, the
//!   pinned node-affinity mask and pod sets (see
//!   [`snapshot`](super::snapshot)) its spread and affinity terms count in;
//! - a [`Cycle`] is prepared once per attempt: the least-loaded spread
//!   domains, the placed pods' anti-affinity terms the pod matches, the
//!   architectures its images run on;
//! - [`filter`] then checks one node.

use super::arch::{normalize, Learned};
use super::snapshot::{non_zero, Event, Events, MaskKey, NodeInfo, Snapshot};
use super::topology::{DomainCounts, KeyId, SetKey, HOSTNAME_KEY, NO_DOMAIN, SITE_KEY};
use crate::api::pod::{Pod, Protocol, Taint, TaintEffect, UnsatisfiableConstraintAction};
use crate::api::selector::LabelSelector;
use crate::cache::Cache;
use crate::registry::UNSCHEDULABLE_TAINT;
use outpost_proto::names::ARCH_LABEL;
use outpost_proto::{Resources, MAX_PODS_PER_NODE};
use std::collections::{BTreeMap, BTreeSet};

/// Kubernetes' default system spread constraints, with Outpost's site label
/// where Kubernetes uses the zone: (key, maxSkew).
pub const DEFAULT_SPREAD: [(KeyId, u32); 2] = [(HOSTNAME_KEY, 3), (SITE_KEY, 5)];

/// A topology spread constraint resolved against the snapshot.
#[derive(Debug, Clone)]
pub struct Spread {
    pub set: u32,
    pub key: KeyId,
    pub max_skew: u32,
    pub self_match: bool,
}

/// A required pod (anti-)affinity term.
#[derive(Debug, Clone)]
pub struct Term {
    pub set: u32,
    pub key: KeyId,
    pub self_match: bool,
}

/// A preferred pod (anti-)affinity term.
#[derive(Debug, Clone)]
pub struct Weighted {
    pub set: u32,
    pub key: KeyId,
    pub weight: i64,
}

/// What is resolved once per queued pod.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub requests: Resources,
    pub non_zero: (u64, u64),
    pub ports: Vec<(u16, Protocol)>,
    pub mask: Option<u32>,
    /// The pod names `kubernetes.io/arch` itself.
    pub explicit_arch: bool,
    pub images: Vec<String>,
    pub hard_spread: Vec<Spread>,
    pub soft_spread: Vec<Spread>,
    /// Keys every node must carry (those of DoNotSchedule constraints).
    pub spread_keys: Vec<KeyId>,
    pub affinity: Vec<Term>,
    pub anti: Vec<Term>,
    pub pref_affinity: Vec<Weighted>,
    pub pref_anti: Vec<Weighted>,
}

fn names_arch(pod: &Pod) -> bool {
    if pod.spec.node_selector.contains_key(ARCH_LABEL) {
        return true;
    }
    let Some(na) = pod
        .spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
    else {
        return false;
    };
    na.required_during_scheduling_ignored_during_execution
        .iter()
        .flat_map(|s| &s.node_selector_terms)
        .flat_map(|t| &t.match_expressions)
        .any(|r| r.key == ARCH_LABEL)
}

/// The selector Kubernetes' default spreading uses: the owning
/// ReplicaSet's, else the pod's own labels.
fn default_selector(pod: &Pod, cache: &Cache) -> Option<LabelSelector> {
    let owner = pod.metadata.controller_ref()?;
    if owner.kind == "ReplicaSet" {
        let key = crate::api::ns_name(&pod.metadata.namespace, &owner.name);
        if let Some(rs) = cache.replicaset(&key) {
            if !rs.spec.selector.is_empty() {
                return Some(rs.spec.selector.clone());
            }
        }
    }
    (!pod.metadata.labels.is_empty())
        .then(|| LabelSelector::from_labels(pod.metadata.labels.clone()))
}

impl Plan {
    /// Resolves `pod` against the snapshot (pins what it uses).
    pub fn build(pod: &Pod, snap: &mut Snapshot, cache: &Cache) -> Plan {
        let requests = pod.requests();
        let ns = pod.metadata.namespace.as_str();
        let mut plan = Plan {
            non_zero: non_zero(&requests),
            requests,
            ports: pod.spec.host_ports().collect(),
            explicit_arch: names_arch(pod),
            images: pod.spec.images().map(normalize).collect(),
            ..Plan::default()
        };
        let required = pod
            .spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|s| s.node_selector_terms.clone());
        if !pod.spec.node_selector.is_empty() || required.is_some() {
            let key: MaskKey = (pod.spec.node_selector.clone(), required);
            plan.mask = Some(snap.pin_mask(key));
        }
        let set = |snap: &mut Snapshot,
                   namespaces: Vec<String>,
                   sel: LabelSelector,
                   terminating: bool,
                   k: KeyId| {
            let id = snap.pin_set(
                SetKey {
                    namespaces,
                    selector: sel,
                    terminating,
                },
                cache,
            );
            snap.set_domains(id, k);
            id
        };
        let own = vec![ns.to_string()];
        for c in &pod.spec.topology_spread_constraints {
            let key = snap.key_id(&c.topology_key);
            let sel = c.label_selector.clone().unwrap_or_default();
            let self_match = sel.matches(&pod.metadata.labels);
            let s = Spread {
                set: set(snap, own.clone(), sel, false, key),
                key,
                max_skew: u32::try_from(c.max_skew.max(1)).unwrap_or(1),
                self_match,
            };
            match c.when_unsatisfiable {
                UnsatisfiableConstraintAction::DoNotSchedule => {
                    if !plan.spread_keys.contains(&key) {
                        plan.spread_keys.push(key);
                    }
                    plan.hard_spread.push(s);
                }
                UnsatisfiableConstraintAction::ScheduleAnyway => plan.soft_spread.push(s),
            }
        }
        if pod.spec.topology_spread_constraints.is_empty() {
            if let Some(sel) = default_selector(pod, cache) {
                let self_match = sel.matches(&pod.metadata.labels);
                for (key, max_skew) in DEFAULT_SPREAD {
                    plan.soft_spread.push(Spread {
                        set: set(snap, own.clone(), sel.clone(), false, key),
                        key,
                        max_skew,
                        self_match,
                    });
                }
            }
        }
        if let Some(aff) = &pod.spec.affinity {
            let terms = |snap: &mut Snapshot,
                         pa: &Option<crate::api::pod::PodAffinity>,
                         req: &mut Vec<Term>,
                         pref: &mut Vec<Weighted>| {
                let Some(pa) = pa else { return };
                for t in &pa.required_during_scheduling_ignored_during_execution {
                    let key = snap.key_id(&t.topology_key);
                    let sel = t.label_selector.clone().unwrap_or_default();
                    let nss = super::snapshot::namespaces(&t.namespaces, ns);
                    let self_match =
                        nss.iter().any(|n| n == ns) && sel.matches(&pod.metadata.labels);
                    req.push(Term {
                        set: set(snap, nss, sel, true, key),
                        key,
                        self_match,
                    });
                }
                for w in &pa.preferred_during_scheduling_ignored_during_execution {
                    let t = &w.pod_affinity_term;
                    let key = snap.key_id(&t.topology_key);
                    let sel = t.label_selector.clone().unwrap_or_default();
                    let nss = super::snapshot::namespaces(&t.namespaces, ns);
                    pref.push(Weighted {
                        set: set(snap, nss, sel, true, key),
                        key,
                        weight: i64::from(w.weight),
                    });
                }
            };
            terms(
                snap,
                &aff.pod_affinity,
                &mut plan.affinity,
                &mut plan.pref_affinity,
            );
            terms(
                snap,
                &aff.pod_anti_affinity,
                &mut plan.anti,
                &mut plan.pref_anti,
            );
        }
        plan
    }

    /// A copy holding its own pins.
    pub fn share(&self, snap: &mut Snapshot) -> Plan {
        if let Some(m) = self.mask {
            snap.repin_mask(m);
        }
        for id in self.sets() {
            snap.repin_set(id);
        }
        self.clone()
    }

    fn sets(&self) -> impl Iterator<Item = u32> + '_ {
        self.hard_spread
            .iter()
            .chain(&self.soft_spread)
            .map(|s| s.set)
            .chain(self.affinity.iter().chain(&self.anti).map(|t| t.set))
            .chain(
                self.pref_affinity
                    .iter()
                    .chain(&self.pref_anti)
                    .map(|w| w.set),
            )
    }

    /// Unpins what [`Plan::build`] pinned.
    pub fn release(&self, snap: &mut Snapshot) {
        if let Some(m) = self.mask {
            snap.unpin_mask(m);
        }
        for id in self.sets() {
            snap.unpin_set(id);
        }
    }
}

/// Per hard spread constraint, this attempt.
#[derive(Debug, Clone, Default)]
pub struct SpreadState<'a> {
    pub min: u32,
    /// Counts per domain over eligible nodes only, when they differ from
    /// the set's (the pod's node affinity leaves some nodes out, or not
    /// every node carries every key).
    pub counts: Option<Vec<u32>>,
    /// The set's counts otherwise.
    pub domains: Option<&'a DomainCounts>,
}

/// What is prepared once per attempt: everything the per-node checks read,
/// resolved to direct references into the snapshot.
#[derive(Debug, Clone, Default)]
pub struct Cycle<'a> {
    pub spread: Vec<SpreadState<'a>>,
    /// No pod matches the pod's required affinity terms and it matches
    /// them itself: the first of a group may go anywhere (Kubernetes' rule).
    pub affinity_exempt: bool,
    /// Anti-affinity terms of placed pods that the pod matches: their key
    /// and owners per domain.
    pub anti_against: Vec<(KeyId, &'a DomainCounts)>,
    /// The pod's own required anti-affinity and affinity terms.
    pub anti: Vec<(KeyId, Option<&'a DomainCounts>)>,
    pub affinity: Vec<(KeyId, Option<&'a DomainCounts>)>,
    /// Nodes whose architecture bit is not in `arch_allowed`, or is in
    /// `arch_excluded`, are rejected.
    pub arch_allowed: u64,
    pub arch_excluded: u64,
}

impl<'a> Cycle<'a> {
    pub fn prepare(snap: &'a Snapshot, pod: &Pod, plan: &Plan, learned: &Learned) -> Cycle<'a> {
        let mut c = Cycle::default();
        if !plan.hard_spread.is_empty() {
            let all_keys = plan
                .spread_keys
                .iter()
                .all(|k| snap.topo.keys[*k].nodes_with == snap.live);
            if plan.mask.is_none() && all_keys {
                c.spread = plan
                    .hard_spread
                    .iter()
                    .map(|s| {
                        let d = snap.set(s.set).domains(s.key);
                        SpreadState {
                            min: d.map_or(0, DomainCounts::min),
                            counts: None,
                            domains: d,
                        }
                    })
                    .collect();
            } else {
                c.spread = eligible_counts(snap, plan);
            }
        }
        if !plan.affinity.is_empty() {
            c.affinity_exempt = plan
                .affinity
                .iter()
                .all(|t| t.self_match && snap.set(t.set).total == 0);
        }
        let mut against = Vec::new();
        snap.anti_terms_against(pod, &mut against);
        c.anti_against = against
            .into_iter()
            .map(|id| {
                let a = snap.anti_term(id);
                (a.topo, &a.owners)
            })
            .collect();
        c.anti = plan
            .anti
            .iter()
            .map(|t| (t.key, snap.set(t.set).domains(t.key)))
            .collect();
        c.affinity = plan
            .affinity
            .iter()
            .map(|t| (t.key, snap.set(t.set).domains(t.key)))
            .collect();
        c.arch_allowed = u64::MAX;
        if !plan.explicit_arch {
            let mut restricted = false;
            let mut allowed = u64::MAX;
            for img in &plan.images {
                let Some(id) = snap.images.id(img) else {
                    continue;
                };
                let e = snap.images.entry(id);
                if e.nodes == 0 {
                    continue;
                }
                restricted = true;
                allowed &= e.archs.keys().fold(0, |m, a| m | snap.arch_bit(a));
            }
            if restricted {
                c.arch_allowed = allowed;
            }
            if !learned.is_empty() {
                c.arch_excluded = learned
                    .excluded(plan.images.iter().map(String::as_str))
                    .iter()
                    .fold(0, |m, a| m | snap.arch_bit(a));
            }
        }
        c
    }
}

/// Spread counts over the nodes that pass the pod's node affinity and
/// carry every spread key (Kubernetes' eligible nodes).
fn eligible_counts<'a>(snap: &'a Snapshot, plan: &Plan) -> Vec<SpreadState<'a>> {
    let mut counts: Vec<Vec<u32>> = plan
        .hard_spread
        .iter()
        .map(|s| vec![0; snap.topo.keys[s.key].names.len()])
        .collect();
    let mut seen: Vec<Vec<bool>> = counts.iter().map(|c| vec![false; c.len()]).collect();
    for (slot, n) in snap.nodes.iter().enumerate() {
        let Some(n) = n else { continue };
        if plan.mask.is_some_and(|m| !snap.mask_allows(m, slot)) {
            continue;
        }
        if plan.spread_keys.iter().any(|k| n.domain(*k) == NO_DOMAIN) {
            continue;
        }
        for (i, s) in plan.hard_spread.iter().enumerate() {
            let d = n.domain(s.key) as usize;
            counts[i][d] += snap.set(s.set).on_node(slot);
            seen[i][d] = true;
        }
    }
    counts
        .into_iter()
        .zip(seen)
        .map(|(c, seen)| SpreadState {
            min: c
                .iter()
                .zip(&seen)
                .filter(|(_, s)| **s)
                .map(|(c, _)| *c)
                .min()
                .unwrap_or(0),
            counts: Some(c),
            domains: None,
        })
        .collect()
}

/// Why a node was rejected: cheap to make (no strings); turned into
/// Kubernetes' wording only for the failure message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    Unschedulable,
    NotReady,
    /// Index into the node's taints.
    Taint(usize),
    NodeAffinity,
    Arch,
    Ports,
    TooManyPods,
    Insufficient(&'static str),
    SpreadMissingLabel,
    Spread,
    ExistingAntiAffinity,
    AntiAffinity,
    Affinity,
}

impl Reject {
    /// Whether removing pods from the node could help (preemption).
    pub fn resolvable(self) -> bool {
        matches!(
            self,
            Reject::Ports
                | Reject::TooManyPods
                | Reject::Insufficient(_)
                | Reject::Spread
                | Reject::ExistingAntiAffinity
                | Reject::AntiAffinity
        )
    }

    /// Cluster events that could undo this rejection.
    pub fn interest(self) -> Events {
        match self {
            Reject::Unschedulable => Event::NODE_SCHEDULABLE,
            Reject::NotReady => Event::NODE_READY,
            Reject::Taint(_) => Event::TAINTS,
            Reject::NodeAffinity | Reject::SpreadMissingLabel => Event::NODE_LABELS,
            Reject::Arch => Event::IMAGES | Event::NODE_LABELS,
            Reject::Ports => Event::POD_REMOVED,
            Reject::TooManyPods | Reject::Insufficient(_) => Event::POD_REMOVED | Event::RESOURCES,
            Reject::Spread => Event::POD_REMOVED | Event::POD_ADDED | Event::NODE_LABELS,
            Reject::ExistingAntiAffinity | Reject::AntiAffinity => {
                Event::POD_REMOVED | Event::NODE_LABELS
            }
            Reject::Affinity => Event::POD_ADDED | Event::NODE_LABELS,
        }
    }

    /// What the failure message counts this rejection as: the kind, plus
    /// the taint or the node's architecture where the wording names them.
    pub fn reason_key(self, node: &NodeInfo) -> (Reject, Option<&Taint>, &str) {
        match self {
            Reject::Taint(i) => (Reject::Taint(0), node.taints.get(i), ""),
            Reject::Arch => (Reject::Arch, None, node.arch.as_str()),
            r => (r, None, ""),
        }
    }

    /// Kubernetes' wording, from a [`Reject::reason_key`].
    pub fn text(
        self,
        taint: Option<&Taint>,
        arch: &str,
        archs: Option<&BTreeSet<String>>,
    ) -> String {
        match self {
            Reject::Unschedulable => "node(s) were unschedulable".into(),
            Reject::NotReady => "node(s) were not ready".into(),
            Reject::Taint(_) => match taint {
                Some(t) => format!("node(s) had untolerated taint {{{}: {}}}", t.key, t.value),
                None => "node(s) had untolerated taint".into(),
            },
            Reject::NodeAffinity => "node(s) didn't match Pod's node affinity/selector".into(),
            Reject::Arch => match archs {
                Some(a) if !a.contains(arch) => format!(
                    "node(s) didn't match the image's architecture ({})",
                    a.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
                _ => format!(
                    "node(s) didn't match the image's architecture (it does not run on {arch})"
                ),
            },
            Reject::Ports => "node(s) didn't have free ports for the requested pod ports".into(),
            Reject::TooManyPods => "Too many pods".into(),
            Reject::Insufficient(r) => format!("Insufficient {r}"),
            Reject::SpreadMissingLabel => {
                "node(s) didn't match pod topology spread constraints (missing required label)"
                    .into()
            }
            Reject::Spread => "node(s) didn't match pod topology spread constraints".into(),
            Reject::ExistingAntiAffinity => {
                "node(s) didn't satisfy existing pods anti-affinity rules".into()
            }
            Reject::AntiAffinity => "node(s) didn't match pod anti-affinity rules".into(),
            Reject::Affinity => "node(s) didn't match pod affinity rules".into(),
        }
    }
}

/// Whether the pod tolerates the cordon taint (`node.kubernetes.io/unschedulable:NoSchedule`).
fn tolerates_cordon(pod: &Pod) -> bool {
    pod.spec.tolerations.iter().any(|t| {
        t.effect.is_none_or(|e| e == TaintEffect::NoSchedule)
            && (t.key.is_empty() || t.key == UNSCHEDULABLE_TAINT)
            && match t.operator {
                crate::api::pod::TolerationOperator::Exists => true,
                crate::api::pod::TolerationOperator::Equal => t.value.is_empty(),
            }
    })
}

fn tolerated(pod: &Pod, t: &Taint) -> bool {
    pod.spec.tolerations.iter().any(|tol| tol.tolerates(t))
}

/// Room the pod has on the node: allocatable minus what is requested and
/// what nominated pods of at least its priority hold.
fn fits(node: &NodeInfo, pod_key: &str, priority: i32, plan: &Plan) -> Result<(), Reject> {
    let mut used = node.requested;
    let mut pods = node.pod_count as usize;
    for n in &node.nominated {
        if n.priority >= priority && &*n.key != pod_key {
            used = crate::api::resources::add(&used, &n.requests);
            pods += 1;
        }
    }
    if pods + 1 > MAX_PODS_PER_NODE {
        return Err(Reject::TooManyPods);
    }
    let a = &node.allocatable;
    let r = &plan.requests;
    let over = |req: u64, used: u64, alloc: u64| req > 0 && used.saturating_add(req) > alloc;
    if over(r.cpu_millis, used.cpu_millis, a.cpu_millis) {
        return Err(Reject::Insufficient("cpu"));
    }
    if over(r.memory_bytes, used.memory_bytes, a.memory_bytes) {
        return Err(Reject::Insufficient("memory"));
    }
    if over(
        r.ephemeral_storage_bytes,
        used.ephemeral_storage_bytes,
        a.ephemeral_storage_bytes,
    ) {
        return Err(Reject::Insufficient("ephemeral-storage"));
    }
    if over(r.pids, used.pids, a.pids) {
        return Err(Reject::Insufficient("outpost.dev/pids"));
    }
    if over(u64::from(r.gpus), u64::from(used.gpus), u64::from(a.gpus)) {
        return Err(Reject::Insufficient("nvidia.com/gpu"));
    }
    Ok(())
}

/// Everything a filter reads.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub snap: &'a Snapshot,
    pub pod: &'a Pod,
    pub key: &'a str,
    pub plan: &'a Plan,
    pub cycle: &'a Cycle<'a>,
}

/// Checks one node, filter by filter in a fixed order.
pub fn filter(cx: &Ctx<'_>, slot: usize, node: &NodeInfo) -> Result<(), Reject> {
    let (pod, plan, cycle, snap) = (cx.pod, cx.plan, cx.cycle, cx.snap);
    // NodeUnschedulable (a pod tolerating the cordon taint may still go).
    if node.unschedulable && !tolerates_cordon(pod) {
        return Err(Reject::Unschedulable);
    }
    // NodeReady.
    if !node.ready {
        return Err(Reject::NotReady);
    }
    // TaintToleration.
    for (i, t) in node.taints.iter().enumerate() {
        if t.effect != TaintEffect::PreferNoSchedule && !tolerated(pod, t) {
            return Err(Reject::Taint(i));
        }
    }
    // NodeAffinity (nodeSelector and required terms).
    if let Some(m) = plan.mask {
        if !snap.mask_allows(m, slot) {
            return Err(Reject::NodeAffinity);
        }
    }
    // Architecture of the images.
    if node.arch_bit & cycle.arch_allowed == 0 || node.arch_bit & cycle.arch_excluded != 0 {
        return Err(Reject::Arch);
    }
    // NodePorts.
    for (port, proto) in &plan.ports {
        if node.port_used(*port, *proto) {
            return Err(Reject::Ports);
        }
    }
    // NodeResourcesFit.
    fits(node, cx.key, pod.priority(), plan)?;
    // PodTopologySpread (DoNotSchedule).
    for k in &plan.spread_keys {
        if node.domain(*k) == NO_DOMAIN {
            return Err(Reject::SpreadMissingLabel);
        }
    }
    for (s, st) in plan.hard_spread.iter().zip(&cycle.spread) {
        let d = node.domain(s.key);
        let count = match &st.counts {
            Some(c) => c.get(d as usize).copied().unwrap_or(0),
            None => st.domains.map_or(0, |dc| dc.get(d)),
        };
        let skew = i64::from(count) + i64::from(s.self_match) - i64::from(st.min);
        if skew > i64::from(s.max_skew) {
            return Err(Reject::Spread);
        }
    }
    // InterPodAffinity: placed pods' anti-affinity, then the pod's own.
    for (k, owners) in &cycle.anti_against {
        let d = node.domain(*k);
        if d != NO_DOMAIN && owners.get(d) > 0 {
            return Err(Reject::ExistingAntiAffinity);
        }
    }
    for (k, dc) in &cycle.anti {
        let d = node.domain(*k);
        if d != NO_DOMAIN && dc.is_some_and(|dc| dc.get(d) > 0) {
            return Err(Reject::AntiAffinity);
        }
    }
    for (k, dc) in &cycle.affinity {
        let d = node.domain(*k);
        if d == NO_DOMAIN {
            return Err(Reject::Affinity);
        }
        if !cycle.affinity_exempt && dc.is_none_or(|dc| dc.get(d) == 0) {
            return Err(Reject::Affinity);
        }
    }
    Ok(())
}

/// The failure message, Kubernetes' form: `0/N nodes are available: ` and
/// one reason per node counted, most frequent first, then by text.
pub fn failure_message(total: usize, reasons: &BTreeMap<String, usize>) -> String {
    let mut v: Vec<(&String, &usize)> = reasons.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let parts: Vec<String> = v.iter().map(|(r, n)| format!("{n} {r}")).collect();
    if parts.is_empty() {
        format!("0/{total} nodes are available.")
    } else {
        format!("0/{total} nodes are available: {}.", parts.join(", "))
    }
}
