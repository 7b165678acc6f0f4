//! Admission: the checks and defaults that need the current cluster, run
//! on every object an operator creates or updates, after
//! [`validate`](crate::api::validate) and before the write.
//!
//! Pure over the [`Cache`]: given the object, the stored copy it replaces
//! (if any) and the cluster as the cache sees it, [`admit`] returns the
//! object to write (defaults filled in) or every reason it may not be
//! written. [`admit_all`] admits one apply's objects in order, each seeing
//! the ones before it (a PriorityClass and the pods naming it in one file;
//! two Services that must not get the same cluster IP).
//!
//! Rules:
//! - **Pods** (created directly, or by the ReplicaSet controller through
//!   [`admit_new_pod`]): `priorityClassName` resolves to `spec.priority`
//!   and the class's `preemptionPolicy`; an unknown class is refused by
//!   name. A pod naming no class gets the `globalDefault` class, if there
//!   is one. An explicit `spec.priority` (or `preemptionPolicy`) that
//!   disagrees with the class is refused, as Kubernetes refuses it; with
//!   no class at all, an explicit `spec.priority` is kept (Outpost's
//!   first manifests set it directly).
//! - **PriorityClasses**: at most one is `globalDefault`.
//! - **PodDisruptionBudgets**: an update keeps the status (the disruption
//!   controller and evictions write it); the spec may change, as in
//!   policy/v1.
//! - **Services**: `spec.clusterIP` is allocated from
//!   [`AdmissionConfig::service_cidr`], never one another Service holds;
//!   a requested address must be in the range and free. NodePort and
//!   LoadBalancer ports get a `nodePort` from
//!   [`AdmissionConfig::node_ports`], unique in the cluster; a requested
//!   one must be in the range and free. Allocation starts at a hash of
//!   the Service's name, so a Service deleted and created again tends to
//!   get its old address back, and probes upwards from there.
//! - **Updates** keep what the server set: a pod's binding and status, a
//!   Service's cluster IP and node ports (an apply that leaves them out
//!   keeps them) and its status (the load balancer ingress the servicelb
//!   controller writes). Immutable fields are refused with a message saying to
//!   delete and re-create: a bound pod's `spec.nodeName`, a ReplicaSet's
//!   or Deployment's `spec.selector`, a Service's `spec.clusterIP`, a
//!   PriorityClass's `value` and `preemptionPolicy`.
//! - `metadata.resourceVersion`: on create it is dropped with a warning;
//!   on update it must be the stored one, else [`AdmitError::Conflict`]
//!   (the API answers `Conflict`: the object changed since it was read).
//!
//! The cache may trail the store: the caller must admit and commit one
//! apply at a time, with the cache caught up to its own last commit, or
//! two applies could be given the same address.

use crate::api::apps::{DeploymentSpec, ReplicaSetSpec};
use crate::api::pod::{Pod, PodSpec};
use crate::api::service::{Service, ServiceType, CLUSTER_IP_NONE};
use crate::api::validate::Problem;
use crate::api::{ns_name, Kind, Object, PriorityClass};
use crate::cache::Cache;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

/// Kubernetes' default node port range.
pub const DEFAULT_NODE_PORTS: RangeInclusive<u16> = 30000..=32767;

/// An IPv4 network (`10.43.0.0/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// The network of `addr/prefix`; `addr` must be the network address.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Ipv4Cidr, String> {
        if !(8..=30).contains(&prefix) {
            return Err(format!(
                "{addr}/{prefix}: the prefix must be from /8 to /30 (a range with at least two addresses to give)"
            ));
        }
        let mask = u32::MAX << (32 - prefix);
        let network = Ipv4Addr::from(u32::from(addr) & mask);
        if network != addr {
            return Err(format!(
                "{addr}/{prefix} is not a network address (did you mean {network}/{prefix}?)"
            ));
        }
        Ok(Ipv4Cidr { network, prefix })
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Addresses that may be given: all but the network and broadcast
    /// addresses.
    pub fn usable(&self) -> u32 {
        (1u32 << (32 - self.prefix)) - 2
    }

    /// The `i`-th usable address (0-based).
    fn nth(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1 + i)
    }

    /// Whether `ip` is a usable address of this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let (n, a) = (u32::from(self.network), u32::from(ip));
        a > n && a - n <= self.usable()
    }
}

impl std::str::FromStr for Ipv4Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Ipv4Cidr, String> {
        let bad = || format!("{s:?} is not an IPv4 network such as 10.43.0.0/16");
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        Ipv4Cidr::new(addr, prefix)
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// What admission allocates from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Cluster IPs of Services (default `10.43.0.0/16`, as k3s).
    pub service_cidr: Ipv4Cidr,
    /// Node ports of NodePort and LoadBalancer Services (default
    /// 30000-32767, as Kubernetes).
    pub node_ports: RangeInclusive<u16>,
    /// Tolerations every pod gets for the not-ready and unreachable taints.
    pub default_tolerations: DefaultTolerations,
}

/// How long a pod stays on a node that is not ready or unreachable before
/// its owner replaces it, unless the pod says otherwise: every pod without
/// a toleration of its own for `node.kubernetes.io/not-ready` or
/// `node.kubernetes.io/unreachable` (NoExecute) gets one with these
/// seconds, as Kubernetes' `DefaultTolerationSeconds` admission plugin
/// does (300 s there; 60 s here, DESIGN.md). `outpost-controller serve
/// --default-not-ready-toleration-seconds`,
/// `--default-unreachable-toleration-seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultTolerations {
    pub not_ready_seconds: i64,
    pub unreachable_seconds: i64,
}

impl Default for DefaultTolerations {
    fn default() -> DefaultTolerations {
        DefaultTolerations {
            not_ready_seconds: 60,
            unreachable_seconds: 60,
        }
    }
}

impl DefaultTolerations {
    /// The two taints and their default seconds.
    pub fn taints(&self) -> [(&'static str, i64); 2] {
        [
            (crate::registry::NOT_READY_TAINT, self.not_ready_seconds),
            (crate::registry::UNREACHABLE_TAINT, self.unreachable_seconds),
        ]
    }

    /// Adds the default toleration for each of the two taints the spec
    /// does not already tolerate (any toleration of that key, or of every
    /// key, with effect NoExecute or every effect). Idempotent.
    pub fn apply(&self, spec: &mut PodSpec) {
        use crate::api::pod::{TaintEffect, Toleration, TolerationOperator};
        for (key, seconds) in self.taints() {
            let has = spec.tolerations.iter().any(|t| {
                (t.key == key || (t.key.is_empty() && t.operator == TolerationOperator::Exists))
                    && t.effect.is_none_or(|e| e == TaintEffect::NoExecute)
            });
            if !has {
                spec.tolerations.push(Toleration {
                    key: key.to_string(),
                    operator: TolerationOperator::Exists,
                    value: String::new(),
                    effect: Some(TaintEffect::NoExecute),
                    toleration_seconds: Some(seconds),
                });
            }
        }
    }
}

impl Default for AdmissionConfig {
    fn default() -> AdmissionConfig {
        AdmissionConfig {
            service_cidr: Ipv4Cidr {
                network: Ipv4Addr::new(10, 43, 0, 0),
                prefix: 16,
            },
            node_ports: DEFAULT_NODE_PORTS,
            default_tolerations: DefaultTolerations::default(),
        }
    }
}

/// An object admission let through, as it is to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    pub object: Object,
    /// `path: message`, as validation's warnings.
    pub warnings: Vec<String>,
}

/// Why an object may not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// Every problem found, with its field path.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
    /// The update was made from an older copy than the stored one.
    #[error(
        "{object}: metadata.resourceVersion {given} is not the stored {current}: it changed since \
         it was read; get it again and re-apply your change"
    )]
    Conflict {
        /// `deployment/web`, as events name objects.
        object: String,
        given: String,
        current: String,
    },
}

/// Admits one object: `old` is the stored copy it replaces (None for a
/// create).
pub fn admit(
    obj: Object,
    old: Option<&Object>,
    cache: &Cache,
    cfg: &AdmissionConfig,
) -> Result<Admitted, AdmitError> {
    admit_in(
        obj,
        old,
        &View {
            cache,
            pending: &[],
        },
        cfg,
    )
}

/// Admits one apply's objects in order, each seeing those admitted before
/// it. All or nothing: the errors of every refused object, by index.
pub fn admit_all(
    items: Vec<(Object, Option<&Object>)>,
    cache: &Cache,
    cfg: &AdmissionConfig,
) -> Result<Vec<Admitted>, Vec<(usize, AdmitError)>> {
    let mut pending: Vec<Object> = Vec::new();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, (obj, old)) in items.into_iter().enumerate() {
        let view = View {
            cache,
            pending: &pending,
        };
        match admit_in(obj, old, &view, cfg) {
            Ok(a) => {
                pending.push(a.object.clone());
                out.push(a);
            }
            Err(e) => errors.push((i, e)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Resolves a new pod's priority, for the ReplicaSet controller to call on
/// each pod it creates from a template (whose class may have gone since).
pub fn admit_new_pod(
    pod: &mut Pod,
    cache: &Cache,
    defaults: &DefaultTolerations,
) -> Result<(), Vec<Problem>> {
    defaults.apply(&mut pod.spec);
    let mut problems = Vec::new();
    resolve_priority(
        &mut pod.spec,
        "spec",
        &View {
            cache,
            pending: &[],
        },
        &mut problems,
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The cluster as the cache sees it, plus the objects admitted earlier in
/// the same apply (which win over the cache's copies).
struct View<'a> {
    cache: &'a Cache,
    pending: &'a [Object],
}

impl View<'_> {
    fn priority_classes(&self) -> BTreeMap<String, &PriorityClass> {
        let mut m: BTreeMap<String, &PriorityClass> = self
            .cache
            .priority_classes()
            .map(|c| (c.metadata.name.clone(), &**c))
            .collect();
        for o in self.pending {
            if let Object::PriorityClass(c) = o {
                m.insert(c.metadata.name.clone(), c);
            }
        }
        m
    }

    fn priority_class(&self, name: &str) -> Option<&PriorityClass> {
        self.pending
            .iter()
            .rev()
            .find_map(|o| match o {
                Object::PriorityClass(c) if c.metadata.name == name => Some(c),
                _ => None,
            })
            .or_else(|| self.cache.priority_class(name).map(|c| &**c))
    }

    /// Every Service by `namespace/name`.
    fn services(&self) -> BTreeMap<String, &Service> {
        let mut m: BTreeMap<String, &Service> = self
            .cache
            .services()
            .map(|s| (ns_name(&s.metadata.namespace, &s.metadata.name), &**s))
            .collect();
        for o in self.pending {
            if let Object::Service(s) = o {
                m.insert(ns_name(&s.metadata.namespace, &s.metadata.name), s);
            }
        }
        m
    }
}

fn immutable(path: &str, kind: Kind, what: &str) -> Problem {
    Problem::new(
        path,
        format!("{what} is immutable; delete the {kind} and create it again to change it"),
    )
}

fn admit_in(
    mut obj: Object,
    old: Option<&Object>,
    view: &View<'_>,
    cfg: &AdmissionConfig,
) -> Result<Admitted, AdmitError> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let kind = obj.kind();
    if let Some(o) = old {
        if o.kind() != kind {
            return Err(AdmitError::Invalid(vec![Problem::new(
                "kind",
                format!("{} exists as a {}, not a {kind}", o.meta().name, o.kind()),
            )]));
        }
    }
    let given = std::mem::take(&mut obj.meta_mut().resource_version);
    match old {
        None if !given.is_empty() => {
            warnings.push("metadata.resourceVersion: ignored on create".to_string());
        }
        Some(o) if !given.is_empty() && given != o.meta().resource_version => {
            let m = obj.meta();
            return Err(AdmitError::Conflict {
                object: crate::api::machinery::object_ref(kind, &m.namespace, &m.name),
                given,
                current: o.meta().resource_version.clone(),
            });
        }
        _ => {}
    }
    // The update compares on the stored revision either way.
    if let Some(o) = old {
        obj.meta_mut().resource_version = o.meta().resource_version.clone();
    }
    match (&mut obj, old) {
        (Object::Pod(p), old) => {
            let old = match old {
                Some(Object::Pod(o)) => Some(o),
                _ => None,
            };
            cfg.default_tolerations.apply(&mut p.spec);
            pod(p, old, view, &mut problems);
        }
        (Object::PriorityClass(c), old) => {
            let old = match old {
                Some(Object::PriorityClass(o)) => Some(o),
                _ => None,
            };
            priority_class(c, old, view, &mut problems);
        }
        (Object::Service(s), old) => {
            let old = match old {
                Some(Object::Service(o)) => Some(o),
                _ => None,
            };
            service(s, old, view, cfg, &mut problems);
        }
        (Object::Deployment(d), old) => {
            if let Some(Object::Deployment(o)) = old {
                keep_selector(&d.spec, &o.spec, Kind::Deployment, &mut problems);
                d.status = o.status.clone();
            }
            template_priority(&d.spec.template.spec, view, &mut warnings);
        }
        (Object::ReplicaSet(r), old) => {
            if let Some(Object::ReplicaSet(o)) = old {
                keep_selector_rs(&r.spec, &o.spec, &mut problems);
                r.status = o.status.clone();
            }
            template_priority(&r.spec.template.spec, view, &mut warnings);
        }
        (Object::Endpoints(_), _) => {}
        (Object::PodDisruptionBudget(b), old) => {
            // The disruption controller and evictions keep the status.
            if let Some(Object::PodDisruptionBudget(o)) = old {
                b.status = o.status.clone();
            }
        }
    }
    if problems.is_empty() {
        Ok(Admitted {
            object: obj,
            warnings,
        })
    } else {
        Err(AdmitError::Invalid(problems))
    }
}

fn keep_selector(
    new: &DeploymentSpec,
    old: &DeploymentSpec,
    kind: Kind,
    problems: &mut Vec<Problem>,
) {
    if new.selector != old.selector {
        problems.push(immutable("spec.selector", kind, "spec.selector"));
    }
}

fn keep_selector_rs(new: &ReplicaSetSpec, old: &ReplicaSetSpec, problems: &mut Vec<Problem>) {
    if new.selector != old.selector {
        problems.push(immutable(
            "spec.selector",
            Kind::ReplicaSet,
            "spec.selector",
        ));
    }
}

/// A template naming a class that does not exist (yet) is accepted: the
/// class may come later. Its pods are refused until it does.
fn template_priority(spec: &PodSpec, view: &View<'_>, warnings: &mut Vec<String>) {
    let name = &spec.priority_class_name;
    if !name.is_empty() && view.priority_class(name).is_none() {
        warnings.push(format!(
            "spec.template.spec.priorityClassName: no PriorityClass {name:?} exists yet; \
             no pod is created until it does"
        ));
    }
}

fn pod(p: &mut Pod, old: Option<&Pod>, view: &View<'_>, problems: &mut Vec<Problem>) {
    if let Some(o) = old {
        p.status = o.status.clone();
        if let Some(bound) = o.node() {
            if p.spec.node_name.is_empty() {
                // An apply of the manifest that created the pod: it keeps
                // the binding the scheduler made.
                p.spec.node_name = bound.to_string();
            } else if p.spec.node_name != bound {
                problems.push(immutable(
                    "spec.nodeName",
                    Kind::Pod,
                    &format!("spec.nodeName (bound to {bound})"),
                ));
            }
        }
        // Priority was resolved when the pod was created; it stays unless
        // the class named changes (the class may be gone by now).
        let same_class = p.spec.priority_class_name.is_empty()
            || p.spec.priority_class_name == o.spec.priority_class_name;
        if same_class && p.spec.priority.is_none_or(|x| Some(x) == o.spec.priority) {
            p.spec
                .priority_class_name
                .clone_from(&o.spec.priority_class_name);
            p.spec.priority = o.spec.priority;
            if p.spec.preemption_policy.is_none() {
                p.spec.preemption_policy = o.spec.preemption_policy;
            }
            return;
        }
    }
    resolve_priority(&mut p.spec, "spec", view, problems);
}

fn resolve_priority(spec: &mut PodSpec, path: &str, view: &View<'_>, problems: &mut Vec<Problem>) {
    let class = if spec.priority_class_name.is_empty() {
        let classes = view.priority_classes();
        let Some(default) = classes.values().find(|c| c.global_default) else {
            // No class at all: an explicit priority is kept.
            return;
        };
        spec.priority_class_name.clone_from(&default.metadata.name);
        (*default).clone()
    } else {
        match view.priority_class(&spec.priority_class_name) {
            Some(c) => c.clone(),
            None => {
                problems.push(Problem::new(
                    format!("{path}.priorityClassName"),
                    format!(
                        "no PriorityClass {:?} exists (create it first, or leave priorityClassName out)",
                        spec.priority_class_name
                    ),
                ));
                return;
            }
        }
    };
    let name = &class.metadata.name;
    match spec.priority {
        Some(x) if x != class.value => problems.push(Problem::new(
            format!("{path}.priority"),
            format!(
                "{x} disagrees with PriorityClass {name} (value {}); leave spec.priority out",
                class.value
            ),
        )),
        _ => spec.priority = Some(class.value),
    }
    let policy = class.preemption_policy.unwrap_or_default();
    match spec.preemption_policy {
        Some(p) if p != policy => problems.push(Problem::new(
            format!("{path}.preemptionPolicy"),
            format!("{p:?} disagrees with PriorityClass {name} ({policy:?}); leave it out"),
        )),
        _ => spec.preemption_policy = Some(policy),
    }
}

fn priority_class(
    c: &mut PriorityClass,
    old: Option<&PriorityClass>,
    view: &View<'_>,
    problems: &mut Vec<Problem>,
) {
    if let Some(o) = old {
        if o.value != c.value {
            problems.push(immutable("value", Kind::PriorityClass, "value"));
        }
        if o.preemption_policy.unwrap_or_default() != c.preemption_policy.unwrap_or_default() {
            problems.push(immutable(
                "preemptionPolicy",
                Kind::PriorityClass,
                "preemptionPolicy",
            ));
        }
    }
    if c.global_default {
        if let Some(other) = view
            .priority_classes()
            .values()
            .find(|o| o.global_default && o.metadata.name != c.metadata.name)
        {
            problems.push(Problem::new(
                "globalDefault",
                format!(
                    "PriorityClass {} is already the global default; at most one may be",
                    other.metadata.name
                ),
            ));
        }
    }
}

/// FNV-1a: a stable hash (the same on every build), for where allocation
/// starts.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn service(
    s: &mut Service,
    old: Option<&Service>,
    view: &View<'_>,
    cfg: &AdmissionConfig,
    problems: &mut Vec<Problem>,
) {
    let key = ns_name(&s.metadata.namespace, &s.metadata.name);
    let others: Vec<&Service> = view
        .services()
        .into_iter()
        .filter(|(k, _)| *k != key)
        .map(|(_, s)| s)
        .collect();
    if let Some(o) = old {
        s.status = o.status.clone();
        if !o.spec.cluster_ip.is_empty() {
            if s.spec.cluster_ip.is_empty() {
                s.spec.cluster_ip.clone_from(&o.spec.cluster_ip);
            } else if s.spec.cluster_ip != o.spec.cluster_ip {
                problems.push(immutable(
                    "spec.clusterIP",
                    Kind::Service,
                    &format!("spec.clusterIP ({})", o.spec.cluster_ip),
                ));
                return;
            }
        }
    }
    cluster_ip(s, old, &others, &key, cfg, problems);
    node_ports(s, old, &others, &key, cfg, problems);
}

fn cluster_ip(
    s: &mut Service,
    old: Option<&Service>,
    others: &[&Service],
    key: &str,
    cfg: &AdmissionConfig,
    problems: &mut Vec<Problem>,
) {
    let used: BTreeMap<Ipv4Addr, &Service> = others
        .iter()
        .filter_map(|o| {
            o.spec
                .cluster_ip
                .parse::<Ipv4Addr>()
                .ok()
                .map(|ip| (ip, *o))
        })
        .collect();
    let cidr = cfg.service_cidr;
    let path = "spec.clusterIP";
    match s.spec.cluster_ip.as_str() {
        CLUSTER_IP_NONE => {}
        "" => {
            let n = cidr.usable();
            let start = u32::try_from(fnv(key.as_bytes()) % u64::from(n)).unwrap_or(0);
            // At most `used.len() + 1` probes find a free address.
            let free = (0..n)
                .map(|i| cidr.nth((start + i) % n))
                .take(used.len() + 1)
                .find(|ip| !used.contains_key(ip));
            match free {
                Some(ip) => s.spec.cluster_ip = ip.to_string(),
                None => problems.push(Problem::new(
                    path,
                    format!("no free address is left in the service range {cidr} ({n} Services hold them all)"),
                )),
            }
        }
        given => {
            let Ok(ip) = given.parse::<Ipv4Addr>() else {
                problems.push(Problem::new(
                    path,
                    format!("{given:?} is not an IPv4 address"),
                ));
                return;
            };
            let kept = old.is_some_and(|o| o.spec.cluster_ip == given);
            if !kept && !cidr.contains(ip) {
                problems.push(Problem::new(
                    path,
                    format!("{ip} is outside the service range {cidr}"),
                ));
            } else if let Some(holder) = used.get(&ip) {
                problems.push(Problem::new(
                    path,
                    format!(
                        "{ip} is already the cluster IP of Service {}",
                        ns_name(&holder.metadata.namespace, &holder.metadata.name)
                    ),
                ));
            }
        }
    }
}

fn node_ports(
    s: &mut Service,
    old: Option<&Service>,
    others: &[&Service],
    key: &str,
    cfg: &AdmissionConfig,
    problems: &mut Vec<Problem>,
) {
    if s.spec.kind == ServiceType::ClusterIP {
        for p in &mut s.spec.ports {
            p.node_port = None;
        }
        return;
    }
    let used: BTreeMap<u16, &Service> = others
        .iter()
        .flat_map(|o| {
            o.spec
                .ports
                .iter()
                .filter_map(move |p| p.node_port.map(|n| (n, *o)))
        })
        .collect();
    // What this Service held: kept for ports an apply leaves without one.
    let held: Vec<(u16, crate::api::pod::Protocol, &str, u16)> = old
        .map(|o| {
            o.spec
                .ports
                .iter()
                .filter_map(|p| {
                    p.node_port
                        .map(|n| (p.port, p.protocol, p.name.as_str(), n))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut mine: BTreeSet<(u16, crate::api::pod::Protocol)> = BTreeSet::new();
    let range = &cfg.node_ports;
    let range_text = format!("{}-{}", range.start(), range.end());
    for (i, p) in s.spec.ports.iter_mut().enumerate() {
        let path = format!("spec.ports[{i}].nodePort");
        if p.node_port.is_none() {
            p.node_port = held
                .iter()
                .find(|(port, proto, name, _)| {
                    (*port == p.port && *proto == p.protocol)
                        || (!name.is_empty() && *name == p.name)
                })
                .map(|h| h.3);
        }
        let Some(n) = p.node_port else { continue };
        let was_held = held.iter().any(|h| h.3 == n);
        if !was_held && !range.contains(&n) {
            problems.push(Problem::new(
                &path,
                format!("{n} is outside the node port range {range_text}"),
            ));
        } else if let Some(holder) = used.get(&n) {
            problems.push(Problem::new(
                &path,
                format!(
                    "{n} is already a node port of Service {}",
                    ns_name(&holder.metadata.namespace, &holder.metadata.name)
                ),
            ));
        } else if !mine.insert((n, p.protocol)) {
            problems.push(Problem::new(
                &path,
                format!("{n}/{} is given twice", p.protocol.name()),
            ));
        }
    }
    let taken = |n: u16, mine: &BTreeSet<(u16, crate::api::pod::Protocol)>| {
        used.contains_key(&n) || mine.iter().any(|(m, _)| *m == n)
    };
    let size = u32::from(range.end() - range.start()) + 1;
    for (i, p) in s.spec.ports.iter_mut().enumerate() {
        if p.node_port.is_some() {
            continue;
        }
        let start =
            u32::try_from(fnv(format!("{key}/{i}").as_bytes()) % u64::from(size)).unwrap_or(0);
        let free = (0..size)
            .map(|j| {
                let off = u16::try_from((start + j) % size).unwrap_or(0);
                range.start() + off
            })
            .take(used.len() + mine.len() + 1)
            .find(|n| !taken(*n, &mine));
        match free {
            Some(n) => {
                p.node_port = Some(n);
                mine.insert((n, p.protocol));
            }
            None => problems.push(Problem::new(
                format!("spec.ports[{i}].nodePort"),
                format!("no free node port is left in {range_text}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests;
