//! The service load balancer controller: `status.loadBalancer.ingress` of
//! every `type: LoadBalancer` Service lists the addresses of the nodes that
//! serve it, as k3s's ServiceLB (`pkg/cloudprovider/servicelb.go`) keeps
//! it. Outpost has no cloud load balancer either: the agents open a
//! LoadBalancer Service on their own node's address, so the Service's
//! external addresses are the serving nodes' addresses.
//!
//! Flow in: a Service `ns/name` key, queued when the Service changes, and
//! for every Service that is a LoadBalancer or still shows an ingress when
//! a node changes in what the ingress shows (`node_view`: readiness, its
//! address, its two labels below) or is added or deleted; the cache.
//!
//! Flow out: the Service with its `status.loadBalancer.ingress` replaced,
//! written only when it differs (an unchanged world writes nothing), with
//! an event: `UpdatedLoadBalancer` (Normal) saying old and new addresses,
//! `UnAvailableLoadBalancer` (Warning) when no node is left to serve it,
//! as k3s records them. A status-only write keeps the Service's
//! generation, and the API keeps the status when the Service is applied
//! again ([`crate::api::admission`]).
//!
//! Which nodes serve (k3s's rules, where its svclb DaemonSet pods run and
//! are Ready):
//! - every Ready node, cordoned or not (DaemonSet pods tolerate
//!   `unschedulable`; a cordon stops new pods, not traffic);
//! - if any node at all carries [`ENABLE_LB_LABEL`] (whatever its value),
//!   only nodes with `ENABLE_LB_LABEL=true`; and then, for a Service
//!   labelled [`LB_POOL_LABEL`]`=P`, only those of them labelled
//!   `LB_POOL_LABEL=P` ([`serves`]).
//!
//! Each serving node is listed under one address ([`ingress_address`]);
//! the list is sorted and deduplicated, one entry (`ip`) per address. A
//! Service that stops being a LoadBalancer has its ingress cleared.
//!
//! Where Outpost differs from k3s, and why:
//! - The label keys are `svccontroller.outpost.dev/...`, as k3s derives
//!   its own from the distribution's name (`svccontroller.k3s.cattle.io`,
//!   `svccontroller.rke2.cattle.io`).
//! - k3s lists every `ExternalIP` of the serving nodes if any of them has
//!   one, else every `InternalIP`. An Outpost node reports its local
//!   addresses only (`outpostctl get node -o json` shows them as
//!   `InternalIP`), all of them, docker bridges included; so a node is
//!   listed under its first IPv4 address, the one Endpoints show as its
//!   `nodeIP` and pods as their `hostIP`. Services are IPv4 single-stack
//!   (k3s filters by `spec.ipFamilies`), so a node with IPv6 addresses only
//!   is not listed.
//! - `externalTrafficPolicy: Local` (k3s lists only nodes with a ready
//!   endpoint) is not supported: validation accepts and ignores the field,
//!   since Outpost's proxy routes every connection to a ready endpoint
//!   wherever it runs.
//! - k3s's rootless mode (`127.0.0.1` only) has no counterpart.

use super::{Controller, Outcome, Write};
use crate::api::machinery::object_ref;
use crate::api::service::{LoadBalancerIngress, ServiceType};
use crate::api::{ns_name, Kind, Object, Service, Time};
use crate::cache::{Cache, Cached, Change};
use crate::registry::NodeRecord;
use outpost_proto::EventType;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Node label: when any node carries it, only nodes labelled `true` serve
/// LoadBalancer Services (k3s's `svccontroller.k3s.cattle.io/enablelb`).
pub const ENABLE_LB_LABEL: &str = "svccontroller.outpost.dev/enablelb";
/// Service and node label: a Service labelled with pool `P` is served only
/// by nodes labelled with pool `P`, when nodes are chosen by
/// [`ENABLE_LB_LABEL`] (k3s's `svccontroller.k3s.cattle.io/lbpool`).
pub const LB_POOL_LABEL: &str = "svccontroller.outpost.dev/lbpool";

/// Event reasons, k3s's.
pub const UPDATED: &str = "UpdatedLoadBalancer";
pub const UNAVAILABLE: &str = "UnAvailableLoadBalancer";
/// The ingress of a Service that is no longer a LoadBalancer was cleared
/// (Kubernetes' service controller's reason when it tears one down).
pub const DELETED: &str = "DeletedLoadBalancer";

/// The service load balancer controller (see the module doc). Stateless.
#[derive(Debug, Default)]
pub struct ServiceLbController;

/// The address a node is listed under: its first IPv4 address.
pub fn ingress_address(n: &NodeRecord) -> Option<Ipv4Addr> {
    n.info.addresses.iter().find_map(|a| a.parse().ok())
}

/// Whether nodes are chosen by [`ENABLE_LB_LABEL`]: some node carries it.
pub fn chosen_by_label(cache: &Cache) -> bool {
    cache.nodes().any(|n| n.label(ENABLE_LB_LABEL).is_some())
}

/// Whether `node` is one of the nodes that serve `svc` (by labels only;
/// readiness aside), `by_label` being [`chosen_by_label`].
pub fn serves(svc: &Service, node: &NodeRecord, by_label: bool) -> bool {
    if !by_label {
        return true;
    }
    if node.label(ENABLE_LB_LABEL) != Some("true") {
        return false;
    }
    match svc.metadata.labels.get(LB_POOL_LABEL) {
        Some(pool) if !pool.is_empty() => node.label(LB_POOL_LABEL) == Some(pool.as_str()),
        _ => true,
    }
}

/// The ingress `svc` should show: for a LoadBalancer, the sorted,
/// deduplicated addresses of the Ready nodes that serve it; nothing
/// otherwise.
pub fn desired_ingress(svc: &Service, cache: &Cache) -> Vec<LoadBalancerIngress> {
    if svc.spec.kind != ServiceType::LoadBalancer {
        return Vec::new();
    }
    let by_label = chosen_by_label(cache);
    let addrs: BTreeSet<Ipv4Addr> = cache
        .nodes()
        .filter(|n| n.is_ready() && serves(svc, n, by_label))
        .filter_map(|n| ingress_address(n))
        .collect();
    addrs
        .into_iter()
        .map(|ip| LoadBalancerIngress { ip: ip.to_string() })
        .collect()
}

/// The part of a node the ingress shows.
fn node_view(n: &NodeRecord) -> impl PartialEq + use<'_> {
    (
        n.is_ready(),
        ingress_address(n),
        n.label(ENABLE_LB_LABEL),
        n.label(LB_POOL_LABEL),
    )
}

fn ips(ingress: &[LoadBalancerIngress]) -> String {
    let v: Vec<&str> = ingress.iter().map(|i| i.ip.as_str()).collect();
    format!("[{}]", v.join(" "))
}

impl Controller for ServiceLbController {
    fn name(&self) -> &'static str {
        "servicelb"
    }

    fn keys_for(&self, change: &Change, cache: &Cache, out: &mut Vec<String>) {
        match change.kind {
            Kind::Service => out.push(change.key.clone()),
            Kind::Node => {
                let node = |c: &Option<Cached>| c.as_ref().and_then(|c| c.as_node().cloned());
                let (old, new) = (node(&change.old), node(&change.new));
                if old.as_deref().map(node_view) == new.as_deref().map(node_view) {
                    return;
                }
                out.extend(
                    cache
                        .services()
                        .filter(|s| {
                            s.spec.kind == ServiceType::LoadBalancer
                                || !s.status.load_balancer.ingress.is_empty()
                        })
                        .map(|s| ns_name(&s.metadata.namespace, &s.metadata.name)),
                );
                out.sort_unstable();
                out.dedup();
            }
            _ => {}
        }
    }

    fn all_keys(&self, cache: &Cache) -> Vec<String> {
        cache.keys(Kind::Service)
    }

    fn reconcile(&mut self, key: &str, cache: &Cache, _now: Time) -> Outcome {
        let Some(svc) = cache.service(key) else {
            return Outcome::none();
        };
        let want = desired_ingress(svc, cache);
        let have = &svc.status.load_balancer.ingress;
        if &want == have {
            return Outcome::none();
        }
        let object = object_ref(Kind::Service, &svc.metadata.namespace, &svc.metadata.name);
        let event = if svc.spec.kind != ServiceType::LoadBalancer {
            Write::event(
                EventType::Normal,
                DELETED,
                object,
                format!(
                    "type is now {}: load balancer ingress {} cleared",
                    svc.spec.kind.name(),
                    ips(have)
                ),
            )
        } else if want.is_empty() {
            Write::event(
                EventType::Warning,
                UNAVAILABLE,
                object,
                "There are no available nodes for LoadBalancer",
            )
        } else {
            Write::event(
                EventType::Normal,
                UPDATED,
                object,
                format!(
                    "Updated LoadBalancer with new IPs: {} -> {}",
                    ips(have),
                    ips(&want)
                ),
            )
        };
        let mut copy = (**svc).clone();
        copy.status.load_balancer.ingress = want;
        Outcome::writes(vec![Write::Update(Object::Service(copy)), event])
    }
}

#[cfg(test)]
mod tests;
