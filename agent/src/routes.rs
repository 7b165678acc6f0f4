//! The agent's table of Service routes, as the controller last sent it
//! ([`outpost_proto::route`]): what the resolver answers and the proxy
//! forwards to.
//!
//! Pure: [`RouteTable::apply`] folds in one `Routes` frame and says whether
//! the table is complete (a whole table may span several frames; it is
//! swapped in only when the last arrives, so the proxy never sees half of
//! one). The session publishes complete tables on a watch channel. The
//! table lives in memory only: after a restart the agent has no routes
//! until it reaches the controller, while the pods keep running.

use outpost_proto::pod::Protocol;
use outpost_proto::route::{Ipv4Net, RoutesUpdate, ServiceKind, ServiceRoute, MAX_ROUTES};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// A Service port on a cluster IP: what a proxy listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frontend {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
}

/// One thing the proxy listens on, and what it serves there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Binding {
    pub front: Frontend,
    /// `namespace/name` of the route.
    pub service: String,
    /// Index of the Service port.
    pub index: usize,
    /// That Service port's number (what a relay names).
    pub service_port: u16,
}

/// Routes by `namespace/name`, plus the cluster's Service range.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// The Service range from the controller's welcome.
    pub network: Option<Ipv4Net>,
    /// This node's site, from the welcome (empty: none).
    pub site: String,
    routes: BTreeMap<String, ServiceRoute>,
    /// A whole table arriving in several frames.
    staging: Option<BTreeMap<String, ServiceRoute>>,
}

impl RouteTable {
    /// Folds in one frame. `Ok(true)`: the table is complete and changed
    /// (publish it); `Ok(false)`: more frames of this update follow.
    /// A frame that fails validation changes nothing.
    pub fn apply(&mut self, u: RoutesUpdate) -> Result<bool, String> {
        let problems = u.validate();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        if u.full {
            self.staging = Some(BTreeMap::new());
        }
        let target = self.staging.as_mut().unwrap_or(&mut self.routes);
        for k in &u.removed {
            target.remove(k);
        }
        for r in u.upsert {
            if target.len() >= MAX_ROUTES && !target.contains_key(&r.key()) {
                return Err(format!("more than {MAX_ROUTES} Service routes"));
            }
            target.insert(r.key(), r);
        }
        if u.more {
            return Ok(false);
        }
        if let Some(whole) = self.staging.take() {
            self.routes = whole;
        }
        Ok(true)
    }

    pub fn routes(&self) -> impl Iterator<Item = &ServiceRoute> {
        self.routes.values()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The route of `namespace/name`.
    pub fn get(&self, key: &str) -> Option<&ServiceRoute> {
        self.routes.get(key)
    }

    /// Every address and port the proxy listens on, for the Service ports
    /// that have at least one ready endpoint with that port: the cluster
    /// IP and port; for NodePort and LoadBalancer Services the node port on
    /// each of `node_addresses` and on loopback; for LoadBalancer Services
    /// also the Service port on each of `node_addresses` (k3s's ServiceLB).
    /// A port without a ready endpoint gets no listener, so a connection to
    /// it is refused by the kernel at once.
    pub fn bindings(&self, node_addresses: &[Ipv4Addr]) -> Vec<Binding> {
        let mut out = Vec::new();
        for (key, r) in &self.routes {
            for (i, p) in r.ports.iter().enumerate() {
                let live = r
                    .endpoints
                    .iter()
                    .any(|e| e.ports.get(i).is_some_and(|t| *t != 0));
                if !live {
                    continue;
                }
                let mut add = |ip: Ipv4Addr, port: u16| {
                    out.push(Binding {
                        front: Frontend {
                            ip,
                            port,
                            protocol: p.protocol,
                        },
                        service: key.clone(),
                        index: i,
                        service_port: p.port,
                    });
                };
                if let Some(ip) = r.cluster_ip {
                    add(ip, p.port);
                }
                let exposed = matches!(r.kind, ServiceKind::NodePort | ServiceKind::LoadBalancer);
                if exposed && p.node_port != 0 {
                    add(Ipv4Addr::LOCALHOST, p.node_port);
                    for a in node_addresses {
                        add(*a, p.node_port);
                    }
                }
                if r.kind == ServiceKind::LoadBalancer {
                    for a in node_addresses {
                        add(*a, p.port);
                    }
                }
            }
        }
        out.sort_by_key(|b| b.front);
        // Two Services on one node address and port: the first by name
        // keeps it (the controller keeps node ports unique; load balancer
        // ports on node addresses may clash, as in ServiceLB).
        out.dedup_by(|b, a| a.front == b.front);
        out
    }
}

impl RouteTable {
    /// The resolver's and the environment variables' view of the table
    /// ([`crate::services::ServiceTable`]). A Service the resolver cannot
    /// take (bad names never pass the wire checks, so this is defensive) is
    /// left out with a warning rather than losing every name.
    pub fn service_table(&self) -> crate::services::ServiceTable {
        use crate::services::{Endpoint, Protocol as P, Service, ServicePort, ServiceTable};
        let convert = |r: &ServiceRoute| Service {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            cluster_ip: r.cluster_ip,
            ports: r
                .ports
                .iter()
                .enumerate()
                .map(|(i, p)| ServicePort {
                    name: (!p.name.is_empty()).then(|| p.name.clone()),
                    protocol: match p.protocol {
                        Protocol::Tcp => P::Tcp,
                        Protocol::Udp => P::Udp,
                    },
                    port: p.port,
                    target_port: r
                        .endpoints
                        .iter()
                        .find_map(|e| e.ports.get(i).copied().filter(|t| *t != 0))
                        .unwrap_or(p.port),
                })
                .collect(),
            ready_endpoints: r
                .endpoints
                .iter()
                .map(|e| Endpoint {
                    ip: e.ip,
                    hostname: None,
                })
                .collect(),
        };
        let domain = crate::services::DEFAULT_CLUSTER_DOMAIN;
        match ServiceTable::build(domain, self.routes.values().map(convert)) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("some Services cannot be resolved: {e}");
                let good = self
                    .routes
                    .values()
                    .filter(|r| ServiceTable::build(domain, [convert(r)]).is_ok())
                    .map(convert);
                ServiceTable::build(domain, good).unwrap_or_default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_proto::route::{RouteEndpoint, RoutePort, ServiceKind};

    fn route(name: &str, ip: u8, endpoints: usize) -> ServiceRoute {
        ServiceRoute {
            namespace: "default".into(),
            name: name.into(),
            kind: ServiceKind::ClusterIp,
            cluster_ip: Some(Ipv4Addr::new(10, 43, 0, ip)),
            ports: vec![RoutePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: 0,
            }],
            endpoints: (0..endpoints)
                .map(|i| RouteEndpoint {
                    ip: Ipv4Addr::new(172, 17, 0, 10),
                    node: format!("n{i}"),
                    site: "a".into(),
                    pod: format!("default/{name}-{i}"),
                    ports: vec![8080],
                })
                .collect(),
        }
    }

    fn f(ip: u8) -> Frontend {
        Frontend {
            ip: Ipv4Addr::new(10, 43, 0, ip),
            port: 80,
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn a_whole_table_in_several_frames_is_swapped_in_at_the_last() {
        let mut t = RouteTable::default();
        t.apply(RoutesUpdate {
            full: true,
            upsert: vec![route("old", 9, 1)],
            ..Default::default()
        })
        .unwrap();
        assert!(t.get("default/old").is_some());
        let first = RoutesUpdate {
            full: true,
            more: true,
            upsert: vec![route("web", 1, 2)],
            ..Default::default()
        };
        assert!(!t.apply(first).unwrap(), "more follows");
        assert!(
            t.get("default/old").is_some(),
            "old table until the last frame"
        );
        assert!(t.get("default/web").is_none());
        let last = RoutesUpdate {
            upsert: vec![route("db", 2, 0)],
            ..Default::default()
        };
        assert!(t.apply(last).unwrap());
        assert!(t.get("default/old").is_none(), "a full update replaces");
        assert_eq!(t.len(), 2);
        let b = t.bindings(&[]);
        assert_eq!(b.len(), 1, "db has no endpoint");
        assert_eq!(b[0].front, f(1));
        assert_eq!(
            (b[0].service.as_str(), b[0].index, b[0].service_port),
            ("default/web", 0, 80)
        );
    }

    #[test]
    fn node_ports_and_load_balancers_listen_on_the_node_addresses() {
        let mut t = RouteTable::default();
        let mut np = route("np", 2, 1);
        np.kind = ServiceKind::NodePort;
        np.ports[0].node_port = 30080;
        let mut lb = route("lb", 3, 1);
        lb.kind = ServiceKind::LoadBalancer;
        lb.ports[0].node_port = 30081;
        t.apply(RoutesUpdate {
            full: true,
            upsert: vec![np, lb, route("plain", 4, 1)],
            ..Default::default()
        })
        .unwrap();
        let node = Ipv4Addr::new(192, 168, 1, 10);
        let bindings = t.bindings(&[node]);
        let got: Vec<(Ipv4Addr, u16, &str)> = bindings
            .iter()
            .map(|b| (b.front.ip, b.front.port, b.service.as_str()))
            .collect();
        let mut want = vec![
            (Ipv4Addr::new(10, 43, 0, 2), 80, "default/np"),
            (Ipv4Addr::LOCALHOST, 30080, "default/np"),
            (node, 30080, "default/np"),
            (Ipv4Addr::new(10, 43, 0, 3), 80, "default/lb"),
            (Ipv4Addr::LOCALHOST, 30081, "default/lb"),
            (node, 30081, "default/lb"),
            (node, 80, "default/lb"),
            (Ipv4Addr::new(10, 43, 0, 4), 80, "default/plain"),
        ];
        want.sort_by_key(|(ip, port, _)| (*ip, *port));
        let mut got_sorted = got.clone();
        got_sorted.sort_by_key(|(ip, port, _)| (*ip, *port));
        assert_eq!(got_sorted, want);
        assert!(t.bindings(&[node]).iter().all(|b| b.service_port == 80));
    }

    #[test]
    fn the_resolver_view_has_every_service_with_its_target_ports() {
        let mut t = RouteTable::default();
        let mut headless = route("db", 0, 2);
        headless.cluster_ip = None;
        t.apply(RoutesUpdate {
            full: true,
            upsert: vec![route("web", 1, 1), headless],
            ..Default::default()
        })
        .unwrap();
        let s = t.service_table();
        let names: Vec<&str> = s.services_in("default").map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["db", "web"]);
        let web = s.services_in("default").find(|s| s.name == "web").unwrap();
        assert_eq!(web.ports[0].target_port, 8080);
        assert_eq!(web.ports[0].name.as_deref(), Some("http"));
        let db = s.services_in("default").find(|s| s.name == "db").unwrap();
        assert!(db.is_headless());
        assert_eq!(db.ready_endpoints.len(), 2);
    }

    #[test]
    fn deltas_upsert_and_remove_and_bad_frames_change_nothing() {
        let mut t = RouteTable::default();
        t.apply(RoutesUpdate {
            full: true,
            upsert: vec![route("web", 1, 1), route("db", 2, 1)],
            ..Default::default()
        })
        .unwrap();
        t.apply(RoutesUpdate {
            upsert: vec![route("web", 1, 0)],
            removed: vec!["default/db".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(t.len(), 1);
        assert!(t.bindings(&[]).is_empty());
        let mut bad = route("x", 3, 1);
        bad.endpoints[0].ports.clear();
        let e = t
            .apply(RoutesUpdate {
                upsert: vec![route("y", 4, 1), bad],
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.contains("ports"), "{e}");
        assert!(t.get("default/y").is_none());
    }
}
