//! The Service relay: carries a pod's connection to a Service endpoint on
//! another node when there is no direct path (sites behind NAT reach each
//! other only through their agents' links to the controller).
//!
//! Each agent keeps a relay connection besides its session (first message
//! `RelayHello`), so relayed bytes never hold up heartbeats and reports.
//! The client's agent opens a stream on its relay connection with
//! `RelayOpen{service, port, pod}`; [`resolve`] checks it against the
//! cache (the Service has that port, the pod is one of its ready endpoints)
//! and finds the endpoint's node and target port; the controller opens a
//! stream on that node's relay connection with `RelayConnect`, whose agent
//! checks the same against its own routes, connects to its pod and answers
//! `RelayReady`. From then on both streams carry raw bytes, copied across
//! with fixed buffers; QUIC flow control bounds what each side buffers
//! (the stream and connection windows of `link::transport`).
//!
//! Authentication end to end: both relay connections carry node
//! certificates (mutual TLS, revocation checked at the hello); only a
//! ready endpoint's own agent is asked to serve it, and it refuses any pod
//! or port its routes do not list, so the relay is no open proxy.

use crate::api::ns_name;
use crate::cache::Cache;
use outpost_proto::pod::Protocol as WireProtocol;
use outpost_proto::route::{RelayConnect, RelayOpen};
use outpost_proto::{ErrorCode, ErrorMsg};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Where a relayed connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub node: String,
    pub connect: RelayConnect,
}

fn refuse(code: ErrorCode, message: String) -> ErrorMsg {
    ErrorMsg { code, message }
}

/// Pure: where `open`, asked by `from`, must go, or why it may not.
pub fn resolve(cache: &Cache, from: &str, open: &RelayOpen) -> Result<Target, ErrorMsg> {
    open.validate()
        .map_err(|e| refuse(ErrorCode::InvalidRequest, e))?;
    let (ns, name) = open.service.split_once('/').unwrap_or_default();
    let key = ns_name(ns, name);
    let svc = cache.service(&key).ok_or_else(|| {
        refuse(
            ErrorCode::NotFound,
            format!("service {} not found", open.service),
        )
    })?;
    let protocol = match open.protocol {
        WireProtocol::Tcp => crate::api::pod::Protocol::TCP,
        WireProtocol::Udp => crate::api::pod::Protocol::UDP,
    };
    let port = svc
        .spec
        .ports
        .iter()
        .find(|p| p.port == open.port && p.protocol == protocol)
        .ok_or_else(|| {
            refuse(
                ErrorCode::NotFound,
                format!("service {} has no port {}", open.service, open.port),
            )
        })?;
    let eps = cache.endpoints(&key).ok_or_else(|| {
        refuse(
            ErrorCode::Unavailable,
            format!("service {} has no endpoints", open.service),
        )
    })?;
    let (pod_ns, pod_name) = open.pod.split_once('/').unwrap_or_default();
    for subset in &eps.subsets {
        let Some(target) = subset.ports.iter().find(|p| p.name == port.name) else {
            continue;
        };
        for a in &subset.addresses {
            let is_pod = a
                .target_ref
                .as_ref()
                .is_some_and(|r| r.namespace == pod_ns && r.name == pod_name);
            if !is_pod {
                continue;
            }
            if a.node_name.is_empty() || a.node_name == from {
                return Err(refuse(
                    ErrorCode::InvalidRequest,
                    format!(
                        "pod {} is on the asking node itself; connect to it directly",
                        open.pod
                    ),
                ));
            }
            return Ok(Target {
                node: a.node_name.clone(),
                connect: RelayConnect {
                    service: open.service.clone(),
                    pod: open.pod.clone(),
                    target_port: target.port,
                    protocol: open.protocol,
                },
            });
        }
    }
    Err(refuse(
        ErrorCode::Unavailable,
        format!(
            "pod {} is not a ready endpoint of service {} port {}",
            open.pod, open.service, open.port
        ),
    ))
}

/// Relay counters per Service, for `/metrics`. Entries are kept for the
/// Services that were relayed to (bounded by the number of Services).
#[derive(Debug, Default)]
pub struct RelayMetrics {
    pub refused: AtomicU64,
    per_service: Mutex<HashMap<String, ServiceCounters>>,
}

/// One Service's relayed traffic.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCounters {
    pub connections: u64,
    pub active: u64,
    pub bytes: u64,
}

/// Most Services tracked; beyond it new ones are counted under `other`.
const MAX_TRACKED: usize = 10_000;

impl RelayMetrics {
    fn with(&self, service: &str, f: impl FnOnce(&mut ServiceCounters)) {
        let mut m = self.per_service.lock().unwrap_or_else(|p| p.into_inner());
        let key = if m.len() >= MAX_TRACKED && !m.contains_key(service) {
            "other"
        } else {
            service
        };
        f(m.entry(key.to_string()).or_default());
    }

    pub fn opened(&self, service: &str) {
        self.with(service, |c| {
            c.connections += 1;
            c.active += 1;
        });
    }

    pub fn closed(&self, service: &str, bytes: u64) {
        self.with(service, |c| {
            c.active = c.active.saturating_sub(1);
            c.bytes += bytes;
        });
    }

    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Sorted by Service.
    pub fn snapshot(&self) -> Vec<(String, ServiceCounters)> {
        let m = self.per_service.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = m.iter().map(|(k, c)| (k.clone(), *c)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::meta::IntOrString;
    use crate::api::Object;
    use crate::controllers::testing::{self, cluster};

    fn open(pod: &str, port: u16) -> RelayOpen {
        RelayOpen {
            service: "default/web".into(),
            port,
            protocol: WireProtocol::Tcp,
            pod: pod.into(),
        }
    }

    #[test]
    fn only_a_ready_endpoint_of_the_service_port_on_another_node_is_relayed() {
        let mut h = cluster(2);
        h.create(testing::replicaset("web", 2, "img:1"));
        h.create(testing::service("web", "web", IntOrString::Int(8080)));
        h.create(Object::Pod(crate::api::Pod {
            metadata: crate::api::ObjectMeta::named("default", "stray"),
            ..Default::default()
        }));
        h.settle();
        let cache = h.snapshot();
        let pods = h.active_pods("web");
        let (a, b) = (&pods[0], &pods[1]);
        let a_node = a.spec.node_name.clone();
        let b_node = b.spec.node_name.clone();
        assert_ne!(a_node, b_node);
        let target = resolve(
            &cache,
            &a_node,
            &open(&format!("default/{}", b.metadata.name), 80),
        )
        .unwrap();
        assert_eq!(target.node, b_node);
        assert_eq!(target.connect.target_port, 8080);

        let err = |o: RelayOpen, from: &str| resolve(&cache, from, &o).unwrap_err().message;
        assert!(
            err(open(&format!("default/{}", b.metadata.name), 81), &a_node).contains("no port 81")
        );
        assert!(err(open("default/stray", 80), &a_node).contains("not a ready endpoint"));
        assert!(
            err(open(&format!("default/{}", a.metadata.name), 80), &a_node).contains("asking node")
        );
        let mut other = open("default/x", 80);
        other.service = "default/nope".into();
        assert!(err(other, &a_node).contains("not found"));
        let mut bad = open("x", 80);
        bad.service = "../etc".into();
        assert!(err(bad, &a_node).contains("namespace/name"));

        // A pod turning not ready is no longer relayed to.
        h.set_pod(
            &format!("default/{}", b.metadata.name),
            testing::Behaviour::NotReady,
        );
        h.settle();
        let cache = h.snapshot();
        assert!(resolve(
            &cache,
            &a_node,
            &open(&format!("default/{}", b.metadata.name), 80)
        )
        .is_err());
    }

    #[test]
    fn counters_are_kept_per_service() {
        let m = RelayMetrics::default();
        m.opened("default/web");
        m.opened("default/web");
        m.closed("default/web", 100);
        m.opened("default/db");
        let s = m.snapshot();
        assert_eq!(s[0].0, "default/db");
        assert_eq!(
            s[1].1,
            ServiceCounters {
                connections: 2,
                active: 1,
                bytes: 100
            }
        );
    }
}
