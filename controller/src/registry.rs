//! Node registry: every enrolled node, its lease and its conditions.
//!
//! Pure state machine: callers pass `now` (monotonic, for leases) and
//! `now_ms` (wall clock, for timestamps shown to people) and get back
//! [`Change`]s to persist and events to record. Nothing here does I/O.
//!
//! Lease semantics: a node is Ready while heartbeats (or reports) arrive; when
//! none has arrived for the grace period it turns NotReady (Ready=Unknown,
//! tainted unreachable, as the Kubernetes node lifecycle controller does);
//! the next heartbeat makes it Ready again. After a controller restart every
//! node starts Unknown with a fresh grace period, so agents have time to
//! reconnect before anything is declared lost.

use outpost_proto::names::{ARCH_LABEL, HOSTNAME_LABEL, OS_LABEL};
use outpost_proto::units::rfc3339;
use outpost_proto::{
    Condition, ConditionStatus, ConditionType, EventType, ImageSummary, NodeInfo, NodeReport,
    NodeView, Resources, SignalObservation, Taint, TaintEffect,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Taint put on a node whose lease expired (Kubernetes' key, so pods'
/// tolerations written for Kubernetes apply).
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// Taint put on a node whose agent reports itself not ready (Kubernetes'
/// key).
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
/// Taint put on a cordoned node (Kubernetes' key).
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";
/// Taint put on a node whose agent cannot reach its container runtime.
pub const RUNTIME_TAINT: &str = "node.outpost.dev/runtime-unavailable";

/// How many certificate serials stay valid per node: the current one and
/// the one it replaced, so a renewal racing a reconnect cannot lock a node out.
const VALID_SERIALS: usize = 2;

/// What the store keeps about a node. Signals and the lease are live state
/// and are not persisted (no disk write per heartbeat or per sample).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct NodeRecord {
    pub name: String,
    pub created_ms: u64,
    /// Labels the agent asserts (last report).
    pub agent_labels: BTreeMap<String, String>,
    /// Labels from the bootstrap token; they win over the agent's.
    pub token_labels: BTreeMap<String, String>,
    /// Certificate serials accepted for this node, newest last.
    pub serials: Vec<String>,
    pub cert_not_after_ms: u64,
    pub info: NodeInfo,
    pub capacity: Resources,
    pub allocatable: Resources,
    /// Pressure conditions as last reported.
    pub conditions: Vec<Condition>,
    pub unschedulable: bool,
    /// This node's identity across re-enrolments under the same name.
    #[serde(default)]
    pub uid: String,
    /// The Ready condition as of its last transition (heartbeats between
    /// transitions are live state, never written).
    #[serde(default)]
    pub ready: Option<Condition>,
    /// Images the node holds, as last reported.
    #[serde(default)]
    pub images: Vec<ImageSummary>,
    /// Protocol version of the agent's last session (0: none yet), so
    /// controllers ask a node only for what its agent understands.
    #[serde(default)]
    pub protocol: u32,
    /// Hex SHA-256 of the public key the node enrolled with (empty for
    /// records from before it was kept), so a retried enrolment with the
    /// same key is recognised ([`Registry::enrolment`]).
    #[serde(default)]
    pub enrol_key: String,
}

/// What an enrolment under a name that may be taken amounts to
/// ([`Registry::enrolment`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrolment {
    /// No node of that name: a new node.
    New,
    /// The node enrolled with this very key and never opened a session: the
    /// answer to its first request was lost (the box went away, or the link
    /// dropped, after the controller committed). It gets a certificate for
    /// the same key again, without spending another token use.
    Retry,
    /// The node enrolled with another key and never opened a session (the
    /// box lost its key before its first connection, or was re-flashed):
    /// a valid token enrols it afresh, and the earlier certificate stops
    /// being accepted.
    Replace,
    /// A node that has connected holds the name.
    Taken,
}

impl NodeRecord {
    /// A node just enrolled.
    pub fn new(
        name: &str,
        token_labels: BTreeMap<String, String>,
        agent_labels: BTreeMap<String, String>,
        serial: String,
        cert_not_after_ms: u64,
        now_ms: u64,
    ) -> NodeRecord {
        NodeRecord {
            name: name.to_string(),
            created_ms: now_ms,
            agent_labels,
            token_labels,
            serials: vec![serial],
            cert_not_after_ms,
            info: NodeInfo::default(),
            capacity: Resources::default(),
            allocatable: Resources::default(),
            conditions: Vec::new(),
            unschedulable: false,
            uid: crate::api::new_uid(),
            ready: None,
            images: Vec::new(),
            protocol: 0,
            enrol_key: String::new(),
        }
    }

    /// Ready is True as of the last transition written, and the agent
    /// does not say it is not ready.
    pub fn is_ready(&self) -> bool {
        self.ready
            .as_ref()
            .is_some_and(|c| c.status == ConditionStatus::True)
            && self.reported_not_ready().is_none()
    }

    /// The agent's own `Ready=False`, if its last report carried one (a
    /// node that heartbeats but cannot run pods, as a kubelet whose
    /// runtime is down reports).
    pub fn reported_not_ready(&self) -> Option<&Condition> {
        self.conditions
            .iter()
            .find(|c| c.kind == ConditionType::Ready && c.status == ConditionStatus::False)
    }

    /// The node's taints: unreachable while not Ready, pressure while a
    /// pressure condition is on, runtime-unavailable, and unschedulable when
    /// cordoned.
    pub fn taints(&self) -> Vec<Taint> {
        let unknown = Condition {
            kind: ConditionType::Ready,
            status: ConditionStatus::Unknown,
            reason: String::new(),
            message: String::new(),
            last_transition_ms: 0,
        };
        taints_of(self, self.ready.as_ref().unwrap_or(&unknown))
    }

    /// One effective label (as [`NodeRecord::labels`] has it) without
    /// building the whole map: the token's value wins over the agent's.
    /// For agent- or token-set keys such as the site; well-known keys
    /// (hostname, arch, os) come from [`NodeRecord::labels`].
    pub fn label(&self, key: &str) -> Option<&str> {
        self.token_labels
            .get(key)
            .or_else(|| self.agent_labels.get(key))
            .map(String::as_str)
    }

    /// Effective labels: well-known ones, then the agent's, then the token's.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut l = BTreeMap::new();
        l.insert(HOSTNAME_LABEL.to_string(), self.name.clone());
        if !self.info.arch.is_empty() {
            l.insert(ARCH_LABEL.to_string(), self.info.arch.clone());
        }
        if !self.info.os.is_empty() {
            l.insert(OS_LABEL.to_string(), self.info.os.clone());
        }
        l.extend(self.agent_labels.clone());
        l.extend(self.token_labels.clone());
        l
    }
}

/// Something the caller must do after a registry decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Write this record to the store.
    Persist(Box<NodeRecord>),
    /// Record an event.
    Event {
        kind: EventType,
        reason: &'static str,
        object: String,
        message: String,
    },
}

fn event(kind: EventType, reason: &'static str, node: &str, message: String) -> Change {
    Change::Event {
        kind,
        reason,
        object: format!("node/{node}"),
        message,
    }
}

#[derive(Debug, Clone)]
struct Live {
    conn_id: u64,
    remote: String,
}

#[derive(Debug, Clone)]
struct Node {
    rec: NodeRecord,
    signals: Vec<SignalObservation>,
    ready: Condition,
    last_renewed: Instant,
    last_heartbeat_ms: u64,
    live: Option<Live>,
}

/// Registry tunables.
#[derive(Debug, Clone, Copy)]
pub struct LeaseConfig {
    /// No heartbeat for this long makes a node NotReady.
    pub grace: Duration,
}

/// All nodes.
#[derive(Debug)]
pub struct Registry {
    cfg: LeaseConfig,
    nodes: HashMap<String, Node>,
}

/// Why a connecting agent was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("node {0} is not registered (it was deleted); enrol it again: start the agent with a new --token from `outpostctl token create` (its current identity is kept until the new one is saved)")]
    UnknownNode(String),
    #[error("certificate {serial} of node {node} is no longer valid (replaced or revoked); enrol again: start the agent with a new --token from `outpostctl token create`")]
    StaleCertificate { node: String, serial: String },
}

fn ready_condition(
    status: ConditionStatus,
    reason: &str,
    message: String,
    now_ms: u64,
) -> Condition {
    Condition {
        kind: ConditionType::Ready,
        status,
        reason: reason.to_string(),
        message,
        last_transition_ms: now_ms,
    }
}

impl Node {
    /// No session of this node was ever accepted (none now, none before):
    /// the only state in which its name may be enrolled again.
    fn never_connected(&self) -> bool {
        self.rec.protocol == 0 && self.live.is_none()
    }
}

impl Registry {
    /// Rebuilds the registry from stored records at controller start. Every
    /// node gets a full grace period to reconnect.
    pub fn load(cfg: LeaseConfig, records: Vec<NodeRecord>, now: Instant, now_ms: u64) -> Registry {
        let nodes = records
            .into_iter()
            .map(|rec| {
                let node = Node {
                    ready: ready_condition(
                        ConditionStatus::Unknown,
                        "AwaitingReconnect",
                        "controller started; waiting for the agent to reconnect".into(),
                        now_ms,
                    ),
                    rec,
                    signals: Vec::new(),
                    last_renewed: now,
                    last_heartbeat_ms: 0,
                    live: None,
                };
                (node.rec.name.clone(), node)
            })
            .collect();
        Registry { cfg, nodes }
    }

    /// The stored record of `name`.
    pub fn record(&self, name: &str) -> Option<&NodeRecord> {
        self.nodes.get(name).map(|n| &n.rec)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.nodes.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// What an enrolment as `name` with the key whose SHA-256 is `key`
    /// would be. A node counts as never connected while no session of it
    /// has been accepted (`protocol` 0); records without an `enrol_key`
    /// (enrolled before it was kept) are [`Enrolment::Taken`], so nothing
    /// enrolled earlier can be taken over.
    pub fn enrolment(&self, name: &str, key: &str) -> Enrolment {
        match self.nodes.get(name) {
            None => Enrolment::New,
            Some(n) if !n.never_connected() || n.rec.enrol_key.is_empty() => Enrolment::Taken,
            Some(n) if n.rec.enrol_key == key => Enrolment::Retry,
            Some(_) => Enrolment::Replace,
        }
    }

    /// A retried enrolment ([`Enrolment::Retry`]): the new certificate's
    /// serial is accepted beside the earlier ones (all are for the same
    /// key). `None` if the node is gone or has connected since.
    pub fn enrol_retry(
        &mut self,
        name: &str,
        serial: String,
        not_after_ms: u64,
    ) -> Option<Vec<Change>> {
        let node = self.nodes.get_mut(name)?;
        if !node.never_connected() {
            return None;
        }
        node.rec.serials.push(serial);
        // A box retrying for ever must not grow its record for ever.
        let excess = node.rec.serials.len().saturating_sub(VALID_SERIALS);
        node.rec.serials.drain(..excess);
        node.rec.cert_not_after_ms = not_after_ms;
        Some(vec![
            Change::Persist(Box::new(node.rec.clone())),
            event(
                EventType::Normal,
                "NodeEnrolmentRetried",
                name,
                format!(
                    "node {name} enrolled again with the same key (the answer to its first enrolment did not reach it); certificate valid until {}",
                    rfc3339(not_after_ms)
                ),
            ),
        ])
    }

    /// A fresh enrolment of a node that never connected
    /// ([`Enrolment::Replace`]): `rec` takes its place, keeping its uid and
    /// creation time; only `rec`'s certificate is accepted from now on.
    pub fn enrol_replace(&mut self, mut rec: NodeRecord) -> Option<Vec<Change>> {
        let node = self.nodes.get_mut(&rec.name)?;
        if !node.never_connected() {
            return None;
        }
        rec.uid = std::mem::take(&mut node.rec.uid);
        rec.created_ms = node.rec.created_ms;
        let name = rec.name.clone();
        let changes = vec![
            Change::Persist(Box::new(rec.clone())),
            event(
                EventType::Normal,
                "NodeRegistered",
                &name,
                format!(
                    "node {name} enrolled again with a new key before it ever connected; the earlier certificate is no longer accepted; certificate valid until {}",
                    rfc3339(rec.cert_not_after_ms)
                ),
            ),
        ];
        node.rec = rec;
        Some(changes)
    }

    /// Adds a node that just enrolled.
    pub fn register(&mut self, rec: NodeRecord, now: Instant, now_ms: u64) -> Vec<Change> {
        let name = rec.name.clone();
        let changes = vec![
            Change::Persist(Box::new(rec.clone())),
            event(
                EventType::Normal,
                "NodeRegistered",
                &name,
                format!(
                    "node {name} enrolled; certificate valid until {}",
                    rfc3339(rec.cert_not_after_ms)
                ),
            ),
        ];
        self.nodes.insert(
            name,
            Node {
                ready: ready_condition(
                    ConditionStatus::Unknown,
                    "NodeStatusNeverUpdated",
                    "enrolled; waiting for the agent's first heartbeat".into(),
                    now_ms,
                ),
                rec,
                signals: Vec::new(),
                last_renewed: now,
                last_heartbeat_ms: 0,
                live: None,
            },
        );
        changes
    }

    /// Removes a node (its certificates stop being accepted at once).
    pub fn remove(&mut self, name: &str) -> Option<NodeRecord> {
        self.nodes.remove(name).map(|n| n.rec)
    }

    /// Checks that `serial` is a current certificate of `name`.
    pub fn authorize(&self, name: &str, serial: &str) -> Result<(), AuthError> {
        let node = self
            .nodes
            .get(name)
            .ok_or_else(|| AuthError::UnknownNode(name.to_string()))?;
        if node.rec.serials.iter().any(|s| s == serial) {
            Ok(())
        } else {
            Err(AuthError::StaleCertificate {
                node: name.to_string(),
                serial: serial.to_string(),
            })
        }
    }

    /// Records a new session; returns the connection it replaces, if any, so
    /// the caller can close it (the newest connection of a node wins).
    pub fn connect(&mut self, name: &str, conn_id: u64, remote: String) -> Option<u64> {
        let node = self.nodes.get_mut(name)?;
        node.live
            .replace(Live { conn_id, remote })
            .map(|old| old.conn_id)
            .filter(|&old| old != conn_id)
    }

    /// Forgets a session, unless a newer one replaced it already.
    pub fn disconnect(&mut self, name: &str, conn_id: u64) {
        if let Some(node) = self.nodes.get_mut(name) {
            if node.live.as_ref().is_some_and(|l| l.conn_id == conn_id) {
                node.live = None;
            }
        }
    }

    /// A heartbeat renews the lease.
    pub fn heartbeat(&mut self, name: &str, now: Instant, now_ms: u64) -> Vec<Change> {
        let Some(node) = self.nodes.get_mut(name) else {
            return Vec::new();
        };
        node.last_renewed = now;
        node.last_heartbeat_ms = now_ms;
        if node.ready.status == ConditionStatus::True {
            return Vec::new();
        }
        node.ready = ready_condition(
            ConditionStatus::True,
            "AgentReady",
            "agent is posting heartbeats".into(),
            now_ms,
        );
        node.rec.ready = Some(node.ready.clone());
        vec![
            Change::Persist(Box::new(node.rec.clone())),
            event(
                EventType::Normal,
                "NodeReady",
                name,
                format!("node {name} is Ready"),
            ),
        ]
    }

    /// A report renews the lease and updates what the node looks like.
    /// Persists only when something durable changed.
    pub fn report(
        &mut self,
        name: &str,
        report: NodeReport,
        now: Instant,
        now_ms: u64,
    ) -> Vec<Change> {
        let mut changes = self.heartbeat(name, now, now_ms);
        let Some(node) = self.nodes.get_mut(name) else {
            return changes;
        };
        for new in &report.conditions {
            let old = node.rec.conditions.iter().find(|c| c.kind == new.kind);
            let was_true = old.is_some_and(|c| c.status == ConditionStatus::True);
            let is_true = new.status == ConditionStatus::True;
            // Pressure conditions are news when they turn on (or off again);
            // the agent's Ready is news when it turns False.
            let on = if new.kind == ConditionType::Ready {
                !is_true
            } else {
                is_true
            };
            if was_true != is_true && (old.is_some() || on) {
                changes.push(event(
                    if on {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    new.kind.reason(is_true),
                    name,
                    format!(
                        "{} is now {}: {}",
                        new.kind.name(),
                        new.status.name(),
                        new.message
                    ),
                ));
            }
        }
        let runtime_was = node.rec.info.runtime.available;
        if !report.info.runtime.available && (runtime_was || node.rec.info.arch.is_empty()) {
            changes.push(event(
                EventType::Warning,
                "RuntimeUnavailable",
                name,
                format!(
                    "container runtime unavailable: {}",
                    report.info.runtime.message
                ),
            ));
        }
        let mut rec = node.rec.clone();
        rec.info = report.info;
        rec.capacity = report.capacity;
        rec.allocatable = report.allocatable;
        rec.agent_labels = report.labels;
        rec.conditions = report.conditions;
        rec.images = report.images;
        node.signals = report.signals;
        if !durable_eq(&rec, &node.rec) {
            changes.push(Change::Persist(Box::new(rec.clone())));
        }
        node.rec = rec;
        changes
    }

    /// A session of protocol `version` began: kept on the record (written
    /// when it changed, so once per agent upgrade).
    pub fn session_protocol(&mut self, name: &str, version: u32) -> Vec<Change> {
        let Some(node) = self.nodes.get_mut(name) else {
            return Vec::new();
        };
        if node.rec.protocol == version {
            return Vec::new();
        }
        node.rec.protocol = version;
        vec![Change::Persist(Box::new(node.rec.clone()))]
    }

    /// Cordons (`true`) or uncordons a node; `None` if it is not enrolled.
    pub fn set_unschedulable(&mut self, name: &str, on: bool) -> Option<Vec<Change>> {
        let node = self.nodes.get_mut(name)?;
        if node.rec.unschedulable == on {
            return Some(Vec::new());
        }
        node.rec.unschedulable = on;
        let (reason, what) = if on {
            (
                "NodeNotSchedulable",
                "cordoned: no new pods are placed on it",
            )
        } else {
            (
                "NodeSchedulable",
                "uncordoned: new pods may be placed on it again",
            )
        };
        Some(vec![
            Change::Persist(Box::new(node.rec.clone())),
            event(
                EventType::Normal,
                reason,
                name,
                format!("node {name} {what}"),
            ),
        ])
    }

    /// The node's certificate was renewed over its live session.
    pub fn renewed(&mut self, name: &str, serial: String, not_after_ms: u64) -> Vec<Change> {
        let Some(node) = self.nodes.get_mut(name) else {
            return Vec::new();
        };
        node.rec.serials.push(serial);
        let excess = node.rec.serials.len().saturating_sub(VALID_SERIALS);
        node.rec.serials.drain(..excess);
        node.rec.cert_not_after_ms = not_after_ms;
        vec![
            Change::Persist(Box::new(node.rec.clone())),
            event(
                EventType::Normal,
                "CertificateRenewed",
                name,
                format!(
                    "node certificate renewed; valid until {}",
                    rfc3339(not_after_ms)
                ),
            ),
        ]
    }

    /// Expires leases. O(nodes): at 10,000 nodes once a second this is a few
    /// hundred microseconds, cheaper than keeping a deadline index updated on
    /// every heartbeat.
    pub fn tick(&mut self, now: Instant, now_ms: u64) -> Vec<Change> {
        let grace = self.cfg.grace;
        let mut changes = Vec::new();
        for (name, node) in &mut self.nodes {
            let silent = now.saturating_duration_since(node.last_renewed);
            let already_lost = node.ready.status == ConditionStatus::Unknown
                && node.ready.reason == "NodeStatusUnknown";
            if silent <= grace || already_lost {
                continue;
            }
            let message = if node.last_heartbeat_ms == 0 {
                format!("no heartbeat from the agent for {}s", silent.as_secs())
            } else {
                format!(
                    "agent stopped posting heartbeats; last one {}s ago",
                    silent.as_secs()
                )
            };
            node.ready = ready_condition(
                ConditionStatus::Unknown,
                "NodeStatusUnknown",
                message.clone(),
                now_ms,
            );
            node.rec.ready = Some(node.ready.clone());
            changes.push(Change::Persist(Box::new(node.rec.clone())));
            changes.push(event(
                EventType::Warning,
                "NodeNotReady",
                name,
                format!("node {name} is NotReady: {message}"),
            ));
        }
        changes
    }

    /// The operator's view of one node.
    pub fn view(&self, name: &str) -> Option<NodeView> {
        self.nodes.get(name).map(view)
    }

    /// All nodes, sorted by name.
    pub fn list(&self) -> Vec<NodeView> {
        let mut out: Vec<NodeView> = self.nodes.values().map(view).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Number of nodes per Ready status, for metrics.
    pub fn ready_counts(&self) -> (usize, usize) {
        let ready = self
            .nodes
            .values()
            .filter(|n| n.ready.status == ConditionStatus::True)
            .count();
        (ready, self.nodes.len() - ready)
    }

    /// Number of nodes with a live session.
    pub fn connected(&self) -> usize {
        self.nodes.values().filter(|n| n.live.is_some()).count()
    }
}

/// Equality on what is worth a disk write: condition statuses and transition
/// times, not their messages (which carry live numbers).
fn durable_eq(a: &NodeRecord, b: &NodeRecord) -> bool {
    let conds = |r: &NodeRecord| {
        r.conditions
            .iter()
            .map(|c| (c.kind, c.status, c.last_transition_ms))
            .collect::<Vec<_>>()
    };
    fn images(r: &NodeRecord) -> Vec<(&Vec<String>, &String)> {
        r.images
            .iter()
            .map(|i| (&i.names, &i.architecture))
            .collect()
    }
    a.info == b.info
        && images(a) == images(b)
        && a.capacity == b.capacity
        && a.allocatable == b.allocatable
        && a.agent_labels == b.agent_labels
        && conds(a) == conds(b)
}

/// Taints of `rec` given its (live) Ready condition.
fn taints_of(rec: &NodeRecord, ready: &Condition) -> Vec<Taint> {
    let mut taints = Vec::new();
    if ready.status != ConditionStatus::True {
        taints.push(Taint {
            key: UNREACHABLE_TAINT.into(),
            effect: TaintEffect::NoExecute,
            since_ms: ready.last_transition_ms,
        });
    } else if let Some(c) = rec.reported_not_ready() {
        taints.push(Taint {
            key: NOT_READY_TAINT.into(),
            effect: TaintEffect::NoExecute,
            since_ms: c.last_transition_ms,
        });
    }
    for c in &rec.conditions {
        if let (ConditionStatus::True, Some(key)) = (c.status, c.kind.taint_key()) {
            taints.push(Taint {
                key: key.into(),
                effect: TaintEffect::NoSchedule,
                since_ms: c.last_transition_ms,
            });
        }
    }
    if !rec.info.arch.is_empty() && !rec.info.runtime.available {
        taints.push(Taint {
            key: RUNTIME_TAINT.into(),
            effect: TaintEffect::NoSchedule,
            since_ms: 0,
        });
    }
    if rec.unschedulable {
        taints.push(Taint {
            key: UNSCHEDULABLE_TAINT.into(),
            effect: TaintEffect::NoSchedule,
            since_ms: 0,
        });
    }
    taints
}

fn view(n: &Node) -> NodeView {
    // One Ready condition: the lease's, unless the node is heard from and
    // its agent says it is not ready.
    let ready = match n.rec.reported_not_ready() {
        Some(c) if n.ready.status == ConditionStatus::True => c.clone(),
        _ => n.ready.clone(),
    };
    let mut conditions = vec![ready];
    conditions.extend(
        n.rec
            .conditions
            .iter()
            .filter(|c| c.kind != ConditionType::Ready)
            .cloned(),
    );
    let taints = taints_of(&n.rec, &n.ready);
    NodeView {
        name: n.rec.name.clone(),
        labels: n.rec.labels(),
        created_ms: n.rec.created_ms,
        conditions,
        taints,
        capacity: n.rec.capacity,
        allocatable: n.rec.allocatable,
        info: n.rec.info.clone(),
        signals: n.signals.clone(),
        connected: n.live.is_some(),
        remote_addr: n
            .live
            .as_ref()
            .map(|l| l.remote.clone())
            .unwrap_or_default(),
        last_heartbeat_ms: n.last_heartbeat_ms,
        cert_serial: n.rec.serials.last().cloned().unwrap_or_default(),
        cert_not_after_ms: n.rec.cert_not_after_ms,
        unschedulable: n.rec.unschedulable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(20);

    #[test]
    fn enrolment_retry_and_replace_only_before_the_first_session() {
        let t0 = Instant::now();
        let mut r = Registry::load(LeaseConfig { grace: GRACE }, Vec::new(), t0, 0);
        assert_eq!(r.enrolment("a", "k1"), Enrolment::New);
        let mut rec = NodeRecord::new("a", BTreeMap::new(), BTreeMap::new(), "s1".into(), 0, 0);
        rec.enrol_key = "k1".into();
        r.register(rec, t0, 0);
        let uid = r.record("a").unwrap().uid.clone();
        // The answer was lost: the same key again, then another key.
        assert_eq!(r.enrolment("a", "k1"), Enrolment::Retry);
        assert_eq!(r.enrolment("a", "k2"), Enrolment::Replace);
        r.enrol_retry("a", "s2".into(), 5).unwrap();
        assert!(r.authorize("a", "s1").is_ok() && r.authorize("a", "s2").is_ok());
        for i in 3..10 {
            r.enrol_retry("a", format!("s{i}"), 5).unwrap();
        }
        assert_eq!(r.record("a").unwrap().serials.len(), VALID_SERIALS);
        let mut fresh = NodeRecord::new("a", BTreeMap::new(), BTreeMap::new(), "n1".into(), 7, 9);
        fresh.enrol_key = "k2".into();
        r.enrol_replace(fresh).unwrap();
        assert!(
            r.authorize("a", "s9").is_err(),
            "the earlier key's certificates go"
        );
        assert!(r.authorize("a", "n1").is_ok());
        assert_eq!(r.record("a").unwrap().uid, uid);
        assert_eq!(r.enrolment("a", "k2"), Enrolment::Retry);
        assert_eq!(r.enrolment("a", "k1"), Enrolment::Replace);
        // Connected once: taken, whatever the key; nothing can replace it.
        r.connect("a", 1, "r".into());
        assert_eq!(r.enrolment("a", "k2"), Enrolment::Taken);
        r.disconnect("a", 1);
        r.session_protocol("a", 4);
        assert_eq!(r.enrolment("a", "k2"), Enrolment::Taken);
        assert!(r.enrol_retry("a", "x".into(), 0).is_none());
        let other = NodeRecord::new("a", BTreeMap::new(), BTreeMap::new(), "y".into(), 0, 0);
        assert!(r.enrol_replace(other).is_none());
        // Records from before the key was kept are never taken over.
        let old = NodeRecord::new("b", BTreeMap::new(), BTreeMap::new(), "s".into(), 0, 0);
        r.register(old, t0, 0);
        assert_eq!(r.enrolment("b", ""), Enrolment::Taken);
        assert_eq!(r.enrolment("b", "k"), Enrolment::Taken);
    }

    fn reg_with(name: &str, t0: Instant) -> Registry {
        let mut r = Registry::load(LeaseConfig { grace: GRACE }, Vec::new(), t0, 0);
        let rec = NodeRecord::new(name, BTreeMap::new(), BTreeMap::new(), "s1".into(), 0, 0);
        r.register(rec, t0, 0);
        r
    }

    #[test]
    fn one_label_is_the_one_the_map_has() {
        let mut rec = NodeRecord::new(
            "a",
            BTreeMap::from([("site".to_string(), "from-token".to_string())]),
            BTreeMap::from([
                ("site".to_string(), "from-agent".to_string()),
                ("tier".to_string(), "edge".to_string()),
            ]),
            "s1".into(),
            0,
            0,
        );
        rec.info.arch = "arm64".into();
        for key in ["site", "tier", "missing"] {
            assert_eq!(
                rec.label(key),
                rec.labels().get(key).map(String::as_str),
                "{key}"
            );
        }
    }

    #[test]
    fn the_sessions_protocol_is_written_when_it_changes() {
        let t0 = Instant::now();
        let mut r = reg_with("a", t0);
        let persisted = |c: &[Change]| {
            c.iter()
                .filter_map(|c| match c {
                    Change::Persist(rec) => Some(rec.protocol),
                    Change::Event { .. } => None,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(persisted(&r.session_protocol("a", 4)), vec![4]);
        assert!(
            r.session_protocol("a", 4).is_empty(),
            "a reconnect writes nothing"
        );
        assert_eq!(
            persisted(&r.session_protocol("a", 3)),
            vec![3],
            "a downgrade"
        );
        assert!(r.session_protocol("unknown", 4).is_empty());
    }

    fn ready(r: &Registry, name: &str) -> ConditionStatus {
        r.view(name).unwrap().conditions[0].status
    }

    fn reasons(changes: &[Change]) -> Vec<&'static str> {
        changes
            .iter()
            .filter_map(|c| match c {
                Change::Event { reason, .. } => Some(*reason),
                Change::Persist(_) => None,
            })
            .collect()
    }

    #[test]
    fn lease_turns_not_ready_after_grace_and_back() {
        let t0 = Instant::now();
        let mut r = reg_with("a", t0);
        assert_eq!(ready(&r, "a"), ConditionStatus::Unknown);
        assert_eq!(reasons(&r.heartbeat("a", t0, 1)), vec!["NodeReady"]);
        assert!(r.heartbeat("a", t0 + Duration::from_secs(5), 2).is_empty());
        // 20 s after the last heartbeat: still within grace.
        assert!(r.tick(t0 + Duration::from_secs(25), 3).is_empty());
        assert_eq!(ready(&r, "a"), ConditionStatus::True);
        let c = r.tick(t0 + Duration::from_secs(26), 4);
        assert_eq!(reasons(&c), vec!["NodeNotReady"]);
        assert_eq!(ready(&r, "a"), ConditionStatus::Unknown);
        let v = r.view("a").unwrap();
        assert!(v.taints.iter().any(|t| t.key == UNREACHABLE_TAINT));
        // Only one event per transition.
        assert!(r.tick(t0 + Duration::from_secs(40), 5).is_empty());
        assert_eq!(
            reasons(&r.heartbeat("a", t0 + Duration::from_secs(41), 6)),
            vec!["NodeReady"]
        );
        assert!(r.view("a").unwrap().taints.is_empty());
    }

    #[test]
    fn restart_gives_a_fresh_grace_period() {
        let t0 = Instant::now();
        let rec = NodeRecord::new("a", BTreeMap::new(), BTreeMap::new(), "s1".into(), 0, 0);
        let mut r = Registry::load(LeaseConfig { grace: GRACE }, vec![rec], t0, 0);
        assert!(r.tick(t0 + GRACE, 1).is_empty());
        assert_eq!(
            reasons(&r.tick(t0 + GRACE + Duration::from_secs(1), 2)),
            vec!["NodeNotReady"]
        );
    }

    #[test]
    fn serials_rotate_and_stale_ones_are_refused() {
        let t0 = Instant::now();
        let mut r = reg_with("a", t0);
        assert!(r.authorize("a", "s1").is_ok());
        r.renewed("a", "s2".into(), 10);
        assert!(
            r.authorize("a", "s1").is_ok(),
            "previous serial stays valid"
        );
        r.renewed("a", "s3".into(), 20);
        assert!(matches!(
            r.authorize("a", "s1"),
            Err(AuthError::StaleCertificate { .. })
        ));
        assert!(r.authorize("a", "s3").is_ok());
        assert!(matches!(
            r.authorize("b", "s3"),
            Err(AuthError::UnknownNode(_))
        ));
    }

    #[test]
    fn reports_persist_only_durable_changes() {
        let t0 = Instant::now();
        let mut r = reg_with("a", t0);
        let mut rep = NodeReport::default();
        rep.info.arch = "amd64".into();
        rep.info.runtime.available = true;
        rep.conditions.push(Condition {
            kind: ConditionType::MemoryPressure,
            status: ConditionStatus::False,
            reason: "NodeHasSufficientMemory".into(),
            message: "memory.available 3Gi".into(),
            last_transition_ms: 1,
        });
        let c = r.report("a", rep.clone(), t0, 1);
        assert!(c.iter().any(|c| matches!(c, Change::Persist(_))));
        // Only the message (live numbers) changed: no write.
        rep.conditions[0].message = "memory.available 2Gi".into();
        let c = r.report("a", rep.clone(), t0, 2);
        assert!(!c.iter().any(|c| matches!(c, Change::Persist(_))));
        // Pressure turns on: persisted, event, taint.
        rep.conditions[0].status = ConditionStatus::True;
        rep.conditions[0].last_transition_ms = 3;
        let c = r.report("a", rep, t0, 3);
        assert!(c.iter().any(|c| matches!(c, Change::Persist(_))));
        assert_eq!(reasons(&c), vec!["NodeHasInsufficientMemory"]);
        let v = r.view("a").unwrap();
        assert!(v
            .taints
            .iter()
            .any(|t| t.key == "node.outpost.dev/memory-pressure"));
        assert_eq!(v.labels[ARCH_LABEL], "amd64");
    }

    #[test]
    fn newest_connection_wins() {
        let t0 = Instant::now();
        let mut r = reg_with("a", t0);
        assert_eq!(r.connect("a", 1, "x".into()), None);
        assert_eq!(r.connect("a", 2, "y".into()), Some(1));
        r.disconnect("a", 1); // late close of the old one keeps the new session
        assert!(r.view("a").unwrap().connected);
        r.disconnect("a", 2);
        assert!(!r.view("a").unwrap().connected);
    }
}
