//! Service routes for the agents: each Service joined with its Endpoints
//! (see [`outpost_proto::route`]), and what each agent session still has to
//! be told.
//!
//! Pure over the [`Cache`]. A route's revision is the later of its
//! Service's and its Endpoints' store revisions, so [`RoutesSent::diff`]
//! finds what changed since a session's last update by comparing
//! revisions, and a status-only write elsewhere resends nothing. Sessions
//! call it when the control loop says routes changed (coalesced, see
//! `server.rs`), so the cost is one pass over the Services per change
//! burst per session; an index by revision would make it proportional to
//! the changes when Services number in the tens of thousands.

use crate::api::pod::Protocol;
use crate::api::service::ServiceType;
use crate::api::{Endpoints, Service};
use crate::cache::Cache;
use outpost_proto::pod::Protocol as WireProtocol;
use outpost_proto::route::{
    RouteEndpoint, RoutePort, RoutesUpdate, ServiceKind, ServiceRoute, MAX_ROUTES,
    MAX_ROUTE_ENDPOINTS, MAX_ROUTE_PORTS,
};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// The route of `svc`, with the ready addresses of `eps` (its Endpoints,
/// if any yet).
pub fn route_of(svc: &Service, eps: Option<&Endpoints>) -> ServiceRoute {
    let ports: Vec<RoutePort> = svc
        .spec
        .ports
        .iter()
        .take(MAX_ROUTE_PORTS)
        .map(|p| RoutePort {
            name: p.name.clone(),
            protocol: match p.protocol {
                Protocol::TCP => WireProtocol::Tcp,
                Protocol::UDP => WireProtocol::Udp,
            },
            port: p.port,
            node_port: p.node_port.unwrap_or(0),
        })
        .collect();
    let mut endpoints = Vec::new();
    for subset in eps.map(|e| e.subsets.as_slice()).unwrap_or_default() {
        // The subset's port for each Service port, matched by name (a
        // single unnamed port matches the unnamed one).
        let target: Vec<u16> = ports
            .iter()
            .map(|sp| {
                subset
                    .ports
                    .iter()
                    .find(|ep| ep.name == sp.name)
                    .map_or(0, |ep| ep.port)
            })
            .collect();
        for a in &subset.addresses {
            let Ok(ip) = a.ip.parse::<Ipv4Addr>() else {
                continue;
            };
            if endpoints.len() >= MAX_ROUTE_ENDPOINTS {
                break;
            }
            let pod = a
                .target_ref
                .as_ref()
                .map(|r| format!("{}/{}", r.namespace, r.name))
                .unwrap_or_else(|| format!("{}/{}", svc.metadata.namespace, a.ip));
            endpoints.push(RouteEndpoint {
                ip,
                node: a.node_name.clone(),
                site: a.site.clone(),
                pod,
                ports: target.clone(),
            });
        }
    }
    // Endpoints without a node cannot be routed to (the controller lists
    // only bound pods; hand-made ones are not supported).
    endpoints.retain(|e| !e.node.is_empty());
    endpoints.sort_by(|a, b| (&a.node, &a.pod).cmp(&(&b.node, &b.pod)));
    ServiceRoute {
        namespace: svc.metadata.namespace.clone(),
        name: svc.metadata.name.clone(),
        kind: match svc.spec.kind {
            ServiceType::ClusterIP => ServiceKind::ClusterIp,
            ServiceType::NodePort => ServiceKind::NodePort,
            ServiceType::LoadBalancer => ServiceKind::LoadBalancer,
        },
        cluster_ip: svc.spec.cluster_ip.parse().ok(),
        ports,
        endpoints,
    }
}

fn key_of(svc: &Service) -> String {
    crate::api::ns_name(&svc.metadata.namespace, &svc.metadata.name)
}

/// The revision at which `svc`'s route last changed.
fn revision_of(cache: &Cache, svc: &Service, key: &str) -> u64 {
    let eps = cache.endpoints(key).map_or(0, |e| e.metadata.revision());
    svc.metadata.revision().max(eps)
}

/// What one agent session has been sent: each route's revision.
#[derive(Debug, Default)]
pub struct RoutesSent {
    sent: HashMap<String, u64>,
    started: bool,
}

impl RoutesSent {
    /// The frames that bring the session up to `cache`, or none when it
    /// is there already. The first call sends the whole table (`full`).
    pub fn diff(&mut self, cache: &Cache) -> Vec<RoutesUpdate> {
        let full = !self.started;
        let mut now: HashMap<String, u64> = HashMap::with_capacity(self.sent.len());
        let mut upsert = Vec::new();
        for svc in cache.services().take(MAX_ROUTES) {
            let key = key_of(svc);
            let rev = revision_of(cache, svc, &key);
            if full || self.sent.get(&key) != Some(&rev) {
                upsert.push(route_of(svc, cache.endpoints(&key).map(AsRef::as_ref)));
            }
            now.insert(key, rev);
        }
        let removed: Vec<String> = if full {
            Vec::new()
        } else {
            self.sent
                .keys()
                .filter(|k| !now.contains_key(*k))
                .cloned()
                .collect()
        };
        self.sent = now;
        if !full && upsert.is_empty() && removed.is_empty() {
            return Vec::new();
        }
        self.started = true;
        RoutesUpdate::chunked(full, upsert, removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::meta::IntOrString;
    use crate::api::service::{EndpointAddress, EndpointPort, EndpointSubset, ObjectReference};
    use crate::api::{Kind, Object};

    fn service(name: &str, ip: &str, ports: &[(&str, u16)]) -> Service {
        let mut s = Service::default();
        s.metadata.namespace = "default".into();
        s.metadata.name = name.into();
        s.spec.cluster_ip = ip.into();
        s.spec.ports = ports
            .iter()
            .map(|(n, p)| crate::api::service::ServicePort {
                name: (*n).into(),
                protocol: Protocol::TCP,
                port: *p,
                target_port: crate::api::meta::IntOrString::Int(i64::from(*p)),
                node_port: None,
            })
            .collect();
        s
    }

    fn endpoints(name: &str, pods: &[(&str, &str, &str)], ports: &[(&str, u16)]) -> Endpoints {
        let mut e = Endpoints::default();
        e.metadata.namespace = "default".into();
        e.metadata.name = name.into();
        e.subsets = vec![EndpointSubset {
            addresses: pods
                .iter()
                .map(|(pod, ip, node)| EndpointAddress {
                    ip: (*ip).into(),
                    node_name: (*node).into(),
                    target_ref: Some(ObjectReference {
                        kind: "Pod".into(),
                        namespace: "default".into(),
                        name: (*pod).into(),
                        uid: String::new(),
                    }),
                    site: "a".into(),
                    ..Default::default()
                })
                .collect(),
            not_ready_addresses: vec![EndpointAddress {
                ip: "172.17.0.99".into(),
                node_name: "n9".into(),
                ..Default::default()
            }],
            ports: ports
                .iter()
                .map(|(n, p)| EndpointPort {
                    name: (*n).into(),
                    port: *p,
                    protocol: Protocol::TCP,
                })
                .collect(),
        }];
        e
    }

    #[test]
    fn a_route_lists_ready_endpoints_with_ports_in_service_order() {
        let svc = service("web", "10.43.0.7", &[("http", 80), ("admin", 81)]);
        let eps = endpoints(
            "web",
            &[("web-b", "172.17.0.3", "n2"), ("web-a", "172.17.0.2", "n1")],
            &[("admin", 9001), ("http", 8080)],
        );
        let r = route_of(&svc, Some(&eps));
        assert_eq!(r.cluster_ip, Some(Ipv4Addr::new(10, 43, 0, 7)));
        assert_eq!(r.endpoints.len(), 2, "not-ready addresses never travel");
        assert_eq!(r.endpoints[0].pod, "default/web-a");
        assert_eq!(r.endpoints[0].ports, vec![8080, 9001]);
        assert!(r.validate().is_empty(), "{:?}", r.validate());
        let headless = route_of(&service("db", "None", &[("", 5432)]), None);
        assert_eq!(headless.cluster_ip, None);
        assert!(headless.endpoints.is_empty());
    }

    #[test]
    fn sessions_get_the_whole_table_then_only_what_changed() {
        use crate::controllers::testing::{self, cluster};
        let mut h = cluster(2);
        h.create(Object::ReplicaSet(
            match testing::replicaset("web", 2, "img:1") {
                Object::ReplicaSet(rs) => rs,
                _ => unreachable!(),
            },
        ));
        h.create(testing::service("web", "web", IntOrString::Int(8080)));
        h.create(testing::service("db", "db", IntOrString::Int(5432)));
        h.settle();
        let mut s = RoutesSent::default();
        let first = s.diff(&h.snapshot());
        assert_eq!(first.len(), 1);
        assert!(first[0].full);
        assert_eq!(first[0].upsert.len(), 2);
        let web = first[0].upsert.iter().find(|r| r.name == "web").unwrap();
        assert_eq!(web.endpoints.len(), 2, "{web:?}");
        assert!(web.endpoints.iter().all(|e| e.ports == vec![8080]));
        assert!(
            s.diff(&h.snapshot()).is_empty(),
            "nothing changed, nothing sent"
        );

        // A pod turning not ready changes the web route only.
        let pod = h.active_pods("web")[0].metadata.name.clone();
        h.set_pod(&format!("default/{pod}"), testing::Behaviour::NotReady);
        h.settle();
        let d = s.diff(&h.snapshot());
        assert_eq!(d.len(), 1);
        assert!(!d[0].full);
        assert_eq!(d[0].upsert.len(), 1);
        assert_eq!(d[0].upsert[0].name, "web");
        assert_eq!(d[0].upsert[0].endpoints.len(), 1);

        h.delete(Kind::Service, "default", "db");
        h.settle();
        let d = s.diff(&h.snapshot());
        assert_eq!(d[0].removed, vec!["default/db".to_string()]);
        assert!(d[0].upsert.is_empty());
        assert!(s.diff(&h.snapshot()).is_empty());

        // A new session starts whole again; an empty cluster still says so.
        let mut fresh = RoutesSent::default();
        let f = fresh.diff(&h.snapshot());
        assert!(f[0].full && f[0].upsert.len() == 1);
        let mut empty = RoutesSent::default();
        let e = empty.diff(&Cache::default());
        assert!(e.len() == 1 && e[0].full && e[0].upsert.is_empty());
    }
}
