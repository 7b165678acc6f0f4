//! Pod status from the agents into the store, batched.
//!
//! Agents send status changes (at most one message a second each); the
//! server drops them into the [`StatusInbox`], which keeps only the latest
//! per pod, so its size is bounded by the number of pods however chatty a
//! node is. The control loop drains it each step and [`fold`] turns each
//! entry into at most one write: the pod's status in Kubernetes' shape
//! (usage is not stored: it changes every measurement), or the removal of a
//! pod its node confirmed stopped. Nothing is written when nothing changed.

use super::Write;
use crate::api::pod::PodStatus;
use crate::api::{Object, Time};
use crate::cache::Cache;
use outpost_proto::pod as wire;
use std::collections::HashMap;

/// What a node said about one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// Its current status.
    Status(Box<wire::PodStatus>),
    /// The node has nothing of it (stopped and removed, or never started).
    Gone,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub node: String,
    pub report: Report,
    pub at: Time,
}

/// Latest report per pod (`namespace/name`), waiting to be written.
#[derive(Debug, Default)]
pub struct StatusInbox {
    pending: HashMap<String, Entry>,
}

impl StatusInbox {
    pub fn put(&mut self, pod: String, entry: Entry) {
        self.pending.insert(pod, entry);
    }

    /// Takes everything pending.
    pub fn take(&mut self) -> Vec<(String, Entry)> {
        self.pending.drain().collect()
    }

    /// Puts back an entry whose write failed, unless a newer one arrived.
    pub fn retry(&mut self, pod: String, entry: Entry) {
        self.pending.entry(pod).or_insert(entry);
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// The write one report calls for, if any. Reports about pods not bound to
/// the reporting node are ignored: a node speaks only for its own pods.
pub fn fold(cache: &Cache, pod_key: &str, e: &Entry) -> Option<Write> {
    let pod = cache.pod(pod_key)?;
    if pod.node() != Some(e.node.as_str()) {
        return None;
    }
    match &e.report {
        Report::Gone if pod.metadata.is_deleting() => Some(Write::Purge {
            kind: crate::api::Kind::Pod,
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            revision: pod.metadata.revision(),
        }),
        Report::Gone => {
            // Bound here but not on the node (yet): say so, once.
            let mut status = pod.status.clone();
            status.container_statuses.clear();
            status.pod_ip.clear();
            if status.phase.is_terminal() {
                // A finished pod whose containers were cleaned up stays
                // finished.
                return None;
            }
            status.phase = crate::api::pod::PodPhase::Pending;
            status.reason.clear();
            status.message = "the node has not started the pod yet".into();
            changed(pod, status, e.at)
        }
        Report::Status(r) => {
            let host_ip = cache
                .node(&e.node)
                .and_then(|n| n.info.addresses.first().cloned())
                .unwrap_or_default();
            let mut status = pod.status.clone();
            status.apply_report(r, &host_ip, e.at);
            changed(pod, status, e.at)
        }
    }
}

fn changed(pod: &crate::api::Pod, mut status: PodStatus, now: Time) -> Option<Write> {
    if status == pod.status {
        return None;
    }
    status.last_report_time = Some(now);
    let mut copy = pod.clone();
    copy.status = status;
    Some(Write::Update(Object::Pod(copy)))
}
