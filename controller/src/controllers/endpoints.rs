//! The endpoints controller: for every Service with a selector, an
//! `Endpoints` object of the same name listing the pods behind it, as
//! Kubernetes' endpoints controller keeps it.
//!
//! Flow in: a Service `ns/name` key, queued when the Service or its
//! Endpoints change, when a pod its selector matches (before or after the
//! change, found through the cache's selector index) changes in what
//! endpoints show, and when a node's address or site changes (for the
//! pods on it); the cache.
//!
//! Flow out: the Endpoints (created, or updated only when it differs, so
//! an unchanged world writes nothing), owned by the Service so the garbage
//! collector deletes it with the Service; deleted when the Service lost its
//! selector. A pod is listed when it is bound to a node, not finished, not
//! being deleted and has an IP: in `addresses` when Ready, in
//! `notReadyAddresses` otherwise, each address with its node, the node's
//! first address (`nodeIP`), the node's site and the host ports the pod
//! publishes for the Service's ports. Each Service port's `targetPort` is
//! resolved per pod (a number as it is; a name through the pod's container
//! ports of the same protocol, and a pod without that port is left out for
//! that port), and pods with the same resolved ports share a subset
//! (Kubernetes' `RepackSubsets`). Subsets, their ports and addresses are
//! sorted, so the same pods always give the same object, byte for byte.

use super::{Controller, Outcome, Write};
use crate::api::pod::Protocol;
use crate::api::service::{
    EndpointAddress, EndpointPort, EndpointSubset, ObjectReference, ServicePort,
};
use crate::api::{
    meta::IntOrString, ns_name, Endpoints, Kind, Object, ObjectMeta, OwnerReference, Pod, Service,
    Time,
};
use crate::cache::{Cache, Cached, Change};
use crate::registry::NodeRecord;
use outpost_proto::names::SITE_LABEL;
use std::collections::BTreeMap;

/// The endpoints controller (see the module doc). Stateless.
#[derive(Debug, Default)]
pub struct EndpointsController;

/// The part of a pod endpoints show.
fn endpoint_view(p: &Pod) -> impl PartialEq + use<'_> {
    (
        p.status.is_ready(),
        p.status.pod_ip.as_str(),
        p.spec.node_name.as_str(),
        p.is_terminal(),
        p.metadata.is_deleting(),
        &p.metadata.labels,
        // Container ports are spec: any spec change bumps the generation.
        p.metadata.generation,
        p.metadata.uid.as_str(),
    )
}

/// The part of a node endpoints show: its first address and its site.
fn node_view(n: &NodeRecord) -> (Option<&String>, Option<&String>) {
    (n.info.addresses.first(), site_of(n))
}

/// The node's site label (the token's label wins over the agent's, as in
/// [`NodeRecord::labels`]).
fn site_of(n: &NodeRecord) -> Option<&String> {
    n.token_labels
        .get(SITE_LABEL)
        .or_else(|| n.agent_labels.get(SITE_LABEL))
}

fn services_of(p: &Pod, cache: &Cache, out: &mut Vec<String>) {
    for s in cache.services_selecting(&p.metadata.namespace, &p.metadata.labels) {
        out.push(ns_name(&s.metadata.namespace, &s.metadata.name));
    }
}

/// The container port a Service port's `targetPort` means on `pod`, as
/// Kubernetes' `FindPort`: a number as it is, a name through the pod's
/// container ports of the Service port's protocol.
pub fn find_port(pod: &Pod, sp: &ServicePort) -> Option<u16> {
    match &sp.target_port {
        IntOrString::Int(n) => u16::try_from(*n).ok().filter(|n| *n > 0),
        IntOrString::String(name) => pod
            .spec
            .containers
            .iter()
            .flat_map(|c| &c.ports)
            .find(|p| &p.name == name && p.protocol == sp.protocol)
            .map(|p| p.container_port),
    }
}

/// The host port `pod` publishes for container port `port`/`protocol`.
fn host_port(pod: &Pod, port: u16, protocol: Protocol) -> Option<u16> {
    pod.spec
        .containers
        .iter()
        .flat_map(|c| &c.ports)
        .find(|p| p.container_port == port && p.protocol == protocol)
        .and_then(|p| p.host_port)
}

/// Sort key of an endpoint port.
type PortKey = (String, u16, Protocol);

/// The subsets the Service's pods make.
pub fn desired_subsets(svc: &Service, cache: &Cache) -> Vec<EndpointSubset> {
    // Resolved ports -> (ready, not ready) addresses.
    let mut groups: BTreeMap<Vec<PortKey>, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    let ns = &svc.metadata.namespace;
    for pod in cache.pods_with_labels(ns, &svc.spec.selector) {
        let Some(node_name) = pod.node() else {
            continue;
        };
        if pod.is_terminal() || pod.metadata.is_deleting() || pod.status.pod_ip.is_empty() {
            continue;
        }
        let mut ports = Vec::new();
        let mut host_ports = BTreeMap::new();
        for sp in &svc.spec.ports {
            let Some(port) = find_port(pod, sp) else {
                continue;
            };
            if let Some(hp) = host_port(pod, port, sp.protocol) {
                host_ports.insert(sp.name.clone(), hp);
            }
            ports.push((sp.name.clone(), port, sp.protocol));
        }
        // A Service with ports lists a pod only for ports it has; only a
        // headless Service lists pods without any.
        if ports.is_empty() && !(svc.spec.ports.is_empty() && svc.is_headless()) {
            continue;
        }
        ports.sort();
        ports.dedup();
        let node = cache.node(node_name);
        let addr = EndpointAddress {
            ip: pod.status.pod_ip.clone(),
            node_name: node_name.to_string(),
            target_ref: Some(ObjectReference {
                kind: Kind::Pod.name().to_string(),
                namespace: pod.metadata.namespace.clone(),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            node_ip: node
                .and_then(|n| n.info.addresses.first().cloned())
                .unwrap_or_default(),
            site: node.and_then(|n| site_of(n).cloned()).unwrap_or_default(),
            host_ports,
        };
        let group = groups.entry(ports).or_default();
        if pod.status.is_ready() {
            group.0.push(addr);
        } else {
            group.1.push(addr);
        }
    }
    groups
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            ready.sort();
            not_ready.sort();
            EndpointSubset {
                addresses: ready,
                not_ready_addresses: not_ready,
                ports: ports
                    .into_iter()
                    .map(|(name, port, protocol)| EndpointPort {
                        name,
                        port,
                        protocol,
                    })
                    .collect(),
            }
        })
        .collect()
}

fn owner_ref(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: Kind::Service.api_version().to_string(),
        kind: Kind::Service.name().to_string(),
        name: svc.metadata.name.clone(),
        uid: svc.metadata.uid.clone(),
        controller: true,
        block_owner_deletion: true,
    }
}

impl Controller for EndpointsController {
    fn name(&self) -> &'static str {
        "endpoints"
    }

    fn keys_for(&self, change: &Change, cache: &Cache, out: &mut Vec<String>) {
        match change.kind {
            Kind::Service | Kind::Endpoints => out.push(change.key.clone()),
            Kind::Pod => {
                let pod = |c: &Option<Cached>| c.as_ref().and_then(|c| c.as_pod().cloned());
                let (old, new) = (pod(&change.old), pod(&change.new));
                if let (Some(a), Some(b)) = (&old, &new) {
                    if endpoint_view(a) == endpoint_view(b) {
                        return;
                    }
                }
                for p in old.iter().chain(&new) {
                    services_of(p, cache, out);
                }
            }
            Kind::Node => {
                let node = |c: &Option<Cached>| c.as_ref().and_then(|c| c.as_node().cloned());
                let (old, new) = (node(&change.old), node(&change.new));
                if old.as_deref().map(node_view) == new.as_deref().map(node_view) {
                    return;
                }
                for p in cache.pods_on(&change.key) {
                    services_of(p, cache, out);
                }
            }
            _ => return,
        }
        out.sort_unstable();
        out.dedup();
    }

    fn all_keys(&self, cache: &Cache) -> Vec<String> {
        cache.keys(Kind::Service)
    }

    fn reconcile(&mut self, key: &str, cache: &Cache, _now: Time) -> Outcome {
        let Some(svc) = cache.service(key) else {
            // Gone: its Endpoints go with it (garbage collector).
            return Outcome::none();
        };
        let current = cache.endpoints(key);
        if svc.spec.selector.is_empty() {
            // No selector, no Endpoints of ours; hand-made ones stay.
            let ours = current.filter(|ep| {
                ep.metadata
                    .controller_ref()
                    .is_some_and(|r| r.uid == svc.metadata.uid)
            });
            return match ours {
                Some(ep) => {
                    Outcome::writes(vec![Write::delete(&Object::Endpoints((**ep).clone()))])
                }
                None => Outcome::none(),
            };
        }
        let subsets = desired_subsets(svc, cache);
        let refs = vec![owner_ref(svc)];
        let labels = &svc.metadata.labels;
        match current {
            Some(ep)
                if ep.subsets == subsets
                    && &ep.metadata.labels == labels
                    && ep.metadata.owner_references == refs =>
            {
                Outcome::none()
            }
            Some(ep) => {
                let mut copy = (**ep).clone();
                copy.subsets = subsets;
                copy.metadata.labels = labels.clone();
                copy.metadata.owner_references = refs;
                Outcome::writes(vec![Write::Update(Object::Endpoints(copy))])
            }
            None => {
                let mut meta = ObjectMeta::named(&svc.metadata.namespace, &svc.metadata.name);
                meta.labels = labels.clone();
                meta.owner_references = refs;
                Outcome::writes(vec![Write::Create(Object::Endpoints(Endpoints {
                    metadata: meta,
                    subsets,
                }))])
            }
        }
    }
}

#[cfg(test)]
mod tests;
