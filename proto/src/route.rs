//! Service routes: what every agent needs to resolve Service names and
//! proxy a Service's cluster IP (and node ports) to its ready endpoints.
//!
//! The controller joins each `v1 Service` with its `v1 Endpoints` into one
//! [`ServiceRoute`] and sends every agent the routes as [`RoutesUpdate`]s on
//! the agent session: the whole table when the session starts (possibly in
//! several frames, `more` set on all but the last), then the routes that
//! changed and the keys of the ones that went away. The agent keeps the
//! table in memory only: a Service a pod reaches while the controller is out
//! of reach keeps its last known endpoints.
//!
//! Only ready endpoints travel (a not-ready one is never chosen), each with
//! its node and site so the agent can prefer its own node, then its site.

use crate::pod::{validate_dns_label, Protocol};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Routes in one table. Kubernetes has no hard limit; ten thousand
/// Services is beyond any edge cluster we target and bounds the agent's
/// table at a few MiB.
pub const MAX_ROUTES: usize = 10_000;
/// Ports per Service (Kubernetes sets none; real Services have a handful).
pub const MAX_ROUTE_PORTS: usize = 32;
/// Endpoints per Service: the Endpoints API truncates at 1,000
/// (`endpoints.kubernetes.io/over-capacity`), so do we.
pub const MAX_ROUTE_ENDPOINTS: usize = 1_000;
/// Encoded routes in one [`RoutesUpdate`] frame: half of
/// [`crate::MAX_FRAME`], which still holds the largest route (1,000
/// endpoints of at most ~330 bytes each) with room to spare.
pub const MAX_FRAME_ROUTE_BYTES: usize = crate::MAX_FRAME / 2;
/// Longest node, site or pod name an endpoint carries (`namespace/name`).
const MAX_NAME: usize = 127;

/// An IPv4 network: the cluster's Service range, told to agents in the
/// welcome so they claim it locally and route their pods' traffic for it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    /// A problem with the network, for a peer that sent it.
    pub fn validate(&self) -> Result<(), String> {
        let ok = (8..=30).contains(&self.prefix)
            && u32::from(self.addr) & !(u32::MAX << (32 - self.prefix)) == 0;
        if ok {
            Ok(())
        } else {
            Err(format!("{self} is not an IPv4 network from /8 to /30"))
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.prefix <= 32
            && (u32::from(ip) ^ u32::from(self.addr))
                .checked_shr(32 - u32::from(self.prefix))
                .unwrap_or(0)
                == 0
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// How a Service is exposed beyond its cluster IP.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceKind {
    #[default]
    ClusterIp,
    /// Also on every node's `node_port`.
    NodePort,
    /// Also on every node's own addresses on the Service port (k3s's
    /// ServiceLB), and on the node ports.
    LoadBalancer,
}

/// One port of a Service.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RoutePort {
    /// Empty for a Service's single unnamed port.
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    /// 0: none (ClusterIP Services).
    pub node_port: u16,
}

/// One ready pod behind a Service.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RouteEndpoint {
    /// The pod's IP on its node's pod network.
    pub ip: Ipv4Addr,
    /// The node running it.
    pub node: String,
    /// That node's site (empty when it has none).
    pub site: String,
    /// The pod, `namespace/name`.
    pub pod: String,
    /// The pod's port for each of the Service's ports, in the same order;
    /// 0 where the pod lacks it (a named `targetPort` it does not define).
    pub ports: Vec<u16>,
}

/// A Service joined with its ready endpoints.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ServiceRoute {
    pub namespace: String,
    pub name: String,
    pub kind: ServiceKind,
    /// `None` for a headless Service (`clusterIP: None`): names resolve to
    /// the endpoints, nothing is proxied.
    pub cluster_ip: Option<Ipv4Addr>,
    pub ports: Vec<RoutePort>,
    pub endpoints: Vec<RouteEndpoint>,
}

impl ServiceRoute {
    /// `namespace/name`, the key removals name.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Every problem with the route, for a peer that sent it.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Err(e) = validate_dns_label("service namespace", &self.namespace) {
            p.push(e);
        }
        if let Err(e) = validate_dns_label("service name", &self.name) {
            p.push(e);
        }
        let what = self.key();
        if self.ports.len() > MAX_ROUTE_PORTS {
            p.push(format!(
                "{what}: {} ports; at most {MAX_ROUTE_PORTS}",
                self.ports.len()
            ));
        }
        for port in &self.ports {
            if port.port == 0 {
                p.push(format!("{what}: port 0"));
            }
            if !port.name.is_empty() {
                if let Err(e) = validate_dns_label("service port name", &port.name) {
                    p.push(format!("{what}: {e}"));
                }
            }
        }
        if self.endpoints.len() > MAX_ROUTE_ENDPOINTS {
            p.push(format!(
                "{what}: {} endpoints; at most {MAX_ROUTE_ENDPOINTS}",
                self.endpoints.len()
            ));
        }
        for e in &self.endpoints {
            if e.ports.len() != self.ports.len() {
                p.push(format!(
                    "{what}: endpoint {} has {} ports for {} service ports",
                    e.pod,
                    e.ports.len(),
                    self.ports.len()
                ));
            }
            for (field, v) in [("node", &e.node), ("site", &e.site), ("pod", &e.pod)] {
                if v.len() > MAX_NAME || v.chars().any(char::is_control) {
                    p.push(format!(
                        "{what}: endpoint {field} name is too long or not text"
                    ));
                }
            }
            if e.node.is_empty() || e.pod.is_empty() {
                p.push(format!("{what}: endpoint without node or pod"));
            }
        }
        p
    }
}

/// Controller -> agent: routes that changed since the last update on this
/// session, or the whole table (`full`) at the start of one.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct RoutesUpdate {
    /// Replace the table: drop every route not in this update (and in the
    /// ones that follow while `more` is set).
    pub full: bool,
    /// On the first frame of a full update: the cluster's Service range
    /// (cluster IPs are given from it), which the agent claims locally.
    pub service_network: Option<Ipv4Net>,
    /// On the first frame of a full update: the node's site as the
    /// controller has it (empty: none), for choosing endpoints close by.
    pub site: String,
    /// More frames of the same update follow; apply when the last arrives.
    pub more: bool,
    pub upsert: Vec<ServiceRoute>,
    /// `namespace/name` of routes that are gone.
    pub removed: Vec<String>,
}

impl RoutesUpdate {
    /// Every problem with the update, for a peer that sent it.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(Err(e)) = self.service_network.map(|n| n.validate()) {
            p.push(e);
        }
        if self.site.len() > MAX_NAME || self.site.chars().any(char::is_control) {
            p.push("site name is too long or not text".into());
        }
        if self.upsert.len() + self.removed.len() > MAX_ROUTES {
            p.push(format!(
                "{} routes in one update; at most {MAX_ROUTES}",
                self.upsert.len() + self.removed.len()
            ));
            return p;
        }
        for r in &self.upsert {
            p.extend(r.validate());
        }
        for k in &self.removed {
            if !valid_key(k) {
                p.push(format!(
                    "removed route {:?} is not namespace/name",
                    k.chars().take(80).collect::<String>()
                ));
            }
        }
        p
    }

    /// Splits `routes` into frames of at most [`MAX_FRAME_ROUTE_BYTES`]
    /// encoded routes each (a route is never split), `full` on the first and
    /// `more` on all but the last. Always at least one frame, so a full
    /// update of an empty table still says so.
    pub fn chunked(
        full: bool,
        routes: Vec<ServiceRoute>,
        removed: Vec<String>,
    ) -> Vec<RoutesUpdate> {
        let mut out = vec![RoutesUpdate {
            full,
            removed,
            ..RoutesUpdate::default()
        }];
        let mut in_frame = 0;
        for r in routes {
            let n = postcard::to_allocvec(&r).map_or(MAX_FRAME_ROUTE_BYTES, |b| b.len());
            let last = out.last_mut().expect("one frame");
            if in_frame + n > MAX_FRAME_ROUTE_BYTES && !last.upsert.is_empty() {
                last.more = true;
                out.push(RoutesUpdate::default());
                in_frame = 0;
            }
            in_frame += n;
            out.last_mut().expect("one frame").upsert.push(r);
        }
        out
    }
}

/// Agent -> controller, first message of the agent's relay connection (a
/// second connection with the node certificate, so relayed bytes never
/// hold up the session's heartbeats and reports). Answered `RelayReady`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RelayHello {
    /// Must match the certificate.
    pub node: String,
}

/// Agent -> controller on a new stream of its relay connection: carry a
/// connection to `pod`, a ready endpoint of `service` on another node.
/// Answered `RelayReady` (then raw bytes both ways) or `Error`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RelayOpen {
    /// `namespace/name`.
    pub service: String,
    /// The Service port the client connected to.
    pub port: u16,
    pub protocol: Protocol,
    /// `namespace/name` of the endpoint chosen.
    pub pod: String,
}

/// Controller -> the agent running `pod`, on a new stream of that agent's
/// relay connection: connect to the pod's `target_port`. The agent checks
/// its own routes that `pod` is a ready endpoint of `service` on this node
/// with that port, so the relay never reaches anything else. Answered
/// `RelayReady` (then raw bytes both ways) or `Error`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RelayConnect {
    pub service: String,
    pub pod: String,
    pub target_port: u16,
    pub protocol: Protocol,
}

fn valid_key(k: &str) -> bool {
    k.split_once('/').is_some_and(|(ns, name)| {
        validate_dns_label("", ns).is_ok() && validate_dns_label("", name).is_ok()
    })
}

impl RelayOpen {
    pub fn validate(&self) -> Result<(), String> {
        if !valid_key(&self.service) || !valid_key(&self.pod) || self.port == 0 {
            return Err(
                "relay request must name a Service and a pod as namespace/name and a port".into(),
            );
        }
        Ok(())
    }
}

impl RelayConnect {
    pub fn validate(&self) -> Result<(), String> {
        if !valid_key(&self.service) || !valid_key(&self.pod) || self.target_port == 0 {
            return Err(
                "relay connect must name a Service and a pod as namespace/name and a port".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, endpoints: usize) -> ServiceRoute {
        ServiceRoute {
            namespace: "default".into(),
            name: name.into(),
            kind: ServiceKind::ClusterIp,
            cluster_ip: Some(Ipv4Addr::new(10, 43, 0, 1)),
            ports: vec![RoutePort {
                name: String::new(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: 0,
            }],
            endpoints: (0..endpoints)
                .map(|i| RouteEndpoint {
                    ip: Ipv4Addr::new(172, 17, 0, 2),
                    node: format!("node-{i:0>58}"),
                    site: "a".into(),
                    pod: format!("default/{name}-{i:0>50}"),
                    ports: vec![8080],
                })
                .collect(),
        }
    }

    #[test]
    fn a_valid_route_has_no_problems_and_a_bad_one_names_each() {
        assert!(route("web", 3).validate().is_empty());
        let mut r = route("Web", 1);
        r.endpoints[0].ports.clear();
        r.endpoints[0].node.clear();
        r.ports[0].port = 0;
        let p = r.validate();
        assert_eq!(p.len(), 4, "{p:?}");
        let mut big = route("big", MAX_ROUTE_ENDPOINTS + 1);
        assert!(big.validate()[0].contains("at most 1000"));
        big.endpoints.truncate(1);
        big.endpoints[0].site = "x".repeat(200);
        assert!(big.validate()[0].contains("site"));
    }

    #[test]
    fn networks_validate_and_contain() {
        let n = Ipv4Net {
            addr: Ipv4Addr::new(10, 43, 0, 0),
            prefix: 16,
        };
        assert!(n.validate().is_ok());
        assert!(n.contains(Ipv4Addr::new(10, 43, 200, 1)));
        assert!(!n.contains(Ipv4Addr::new(10, 44, 0, 1)));
        assert_eq!(n.to_string(), "10.43.0.0/16");
        let bad = Ipv4Net {
            addr: Ipv4Addr::new(10, 43, 0, 1),
            prefix: 16,
        };
        assert!(bad.validate().is_err());
        assert!(Ipv4Net { prefix: 40, ..n }.validate().is_err());
        assert!(Ipv4Net { prefix: 0, ..n }.validate().is_err());
    }

    #[test]
    fn removals_must_be_namespace_slash_name() {
        let u = RoutesUpdate {
            removed: vec!["default/web".into(), "web".into(), "a/b/c".into()],
            ..Default::default()
        };
        assert_eq!(u.validate().len(), 2);
    }

    #[test]
    fn chunks_keep_frames_bounded_and_mark_the_first_and_last() {
        let routes: Vec<_> = (0..10).map(|i| route(&format!("s{i}"), 900)).collect();
        let frames = RoutesUpdate::chunked(true, routes, vec!["default/old".into()]);
        assert!(frames.len() >= 3, "{} frames", frames.len());
        assert!(frames[0].full && frames[0].removed.len() == 1);
        assert!(frames[1..].iter().all(|f| !f.full && f.removed.is_empty()));
        let last = frames.len() - 1;
        assert!(frames[..last].iter().all(|f| f.more) && !frames[last].more);
        let total: usize = frames.iter().map(|f| f.upsert.len()).sum();
        assert_eq!(total, 10);
        for f in &frames {
            assert!(f.validate().is_empty());
            let bytes = postcard::to_allocvec(f).unwrap();
            assert!(bytes.len() < crate::MAX_FRAME, "{} bytes", bytes.len());
        }
        let empty = RoutesUpdate::chunked(true, Vec::new(), Vec::new());
        assert_eq!(empty.len(), 1);
        assert!(empty[0].full && !empty[0].more);
    }
}
