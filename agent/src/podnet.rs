//! The pods' network as Service routing sees it: which pod IPs this node
//! reaches directly, where its pods send cluster-IP traffic, and the route
//! that sends it there.
//!
//! Every [`INTERVAL`] (and when the routes change) [`run`] inspects the
//! pods' Docker network. Its containers' IPv4 addresses are the pods this
//! node reaches without the relay: on a box of its own that is the box's
//! own pods; where several nodes share one engine and network (the tests'
//! sites) it is the whole site. The agent's own address on that network
//! (the source it would use towards the network's gateway) is where pods
//! reach it. When that is the gateway itself, the agent runs on the host,
//! the pods' default route already leads to it and nothing else is needed.
//! Otherwise (the agent in a container on the pods' network) each of this
//! node's pod sandboxes gets `SERVICE_NET via AGENT_ADDR` in its network
//! namespace ([`crate::netlink::route_via_in`]). The runtime adds it as soon
//! as the sandbox starts, before any of the pod's containers runs
//! ([`SandboxRoute`], published here), so a pod reaches Services from its
//! first instruction; the inspection routes whatever it finds unrouted
//! (sandboxes adopted from before an agent restart), once per container.
//!
//! The decisions ([`plan`]) are pure; the loop around them is thin.

use crate::netlink;
use crate::proxy::Reachable;
use crate::runtime::{LABEL_MANAGED, LABEL_NODE};
use outpost_proto::route::Ipv4Net;
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// How often the pod network is inspected for new pods.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// What one inspection of the pod network found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspection {
    pub gateway: Option<Ipv4Addr>,
    /// Container id -> its IPv4 address on the network.
    pub containers: HashMap<String, Ipv4Addr>,
}

/// What to do after an inspection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub reachable: HashSet<Ipv4Addr>,
    /// Containers to look at (ours? then route them), not seen before.
    pub new_containers: Vec<String>,
}

/// The route every pod sandbox of this node needs: `net` (the Service
/// range) via `via` (the agent's address on the pod network).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxRoute {
    pub net: Ipv4Net,
    pub via: Ipv4Addr,
}

/// Pure: the route pod sandboxes need, if any. None while the Service range
/// or the network is not known yet, and none when the agent is the pod
/// network's gateway (it runs on the host: the pods' default route already
/// leads to it).
pub fn sandbox_route(
    net: Option<Ipv4Net>,
    own: Option<Ipv4Addr>,
    gateway: Option<Ipv4Addr>,
) -> Option<SandboxRoute> {
    match (net, own, gateway) {
        (Some(net), Some(via), Some(g)) if via != g => Some(SandboxRoute { net, via }),
        _ => None,
    }
}

/// Adds `route` to the network namespace of process `pid` (a sandbox's).
pub async fn add_route(pid: u32, route: SandboxRoute) -> Result<(), String> {
    match tokio::task::spawn_blocking(move || netlink::route_via_in(pid, route.net, route.via))
        .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("pod route task failed: {e}")),
    }
}

/// Pure: the reachable set, and the containers not looked at yet.
pub fn plan(found: &Inspection, seen: &HashSet<String>) -> Plan {
    let mut new_containers: Vec<String> = found
        .containers
        .keys()
        .filter(|id| !seen.contains(*id))
        .cloned()
        .collect();
    new_containers.sort();
    Plan {
        reachable: found.containers.values().copied().collect(),
        new_containers,
    }
}

/// The address this host uses towards `gateway`: the agent's own address
/// on the pod network (the gateway itself when the agent is on the host).
/// A connected UDP socket sends nothing; the kernel only picks the route.
pub fn own_address(gateway: Ipv4Addr) -> Option<Ipv4Addr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect(SocketAddr::from((gateway, 9))).ok()?;
    match s.local_addr().ok()? {
        SocketAddr::V4(a) => Some(*a.ip()),
        SocketAddr::V6(_) => None,
    }
}

fn parse_ipv4(cidr: &str) -> Option<Ipv4Addr> {
    cidr.split('/').next()?.parse().ok()
}

async fn inspect(docker: &bollard::Docker, network: &str) -> Result<Inspection, String> {
    let n = docker
        .inspect_network(network, None)
        .await
        .map_err(|e| format!("cannot inspect the pod network {network:?}: {e}"))?;
    let gateway = n
        .ipam
        .and_then(|i| i.config)
        .unwrap_or_default()
        .iter()
        .find_map(|c| c.gateway.as_deref().and_then(|g| g.parse().ok()));
    let containers = n
        .containers
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(id, e)| Some((id, parse_ipv4(e.ipv4_address.as_deref()?)?)))
        .collect();
    Ok(Inspection {
        gateway,
        containers,
    })
}

/// The main process of container `id` if it is one of `node`'s pods.
async fn our_pid(docker: &bollard::Docker, id: &str, node: &str) -> Option<u32> {
    let c = docker.inspect_container(id, None).await.ok()?;
    let labels = c.config.and_then(|c| c.labels).unwrap_or_default();
    let ours = labels.contains_key(LABEL_MANAGED)
        && labels.get(LABEL_NODE).map(String::as_str) == Some(node);
    if !ours {
        return None;
    }
    u32::try_from(c.state.and_then(|s| s.pid)?)
        .ok()
        .filter(|p| *p > 0)
}

/// Where pods reach this agent (its resolver, and the gateway for the
/// Service range), once known.
pub type AgentAddress = Option<Ipv4Addr>;

/// Inspects the pod network until `docker` closes: publishes the reachable
/// pod IPs, this agent's address on the network and the route sandboxes
/// need, and routes this node's pods to the agent when it is not their
/// gateway.
pub async fn run(
    node: String,
    network: String,
    mut docker: watch::Receiver<Option<bollard::Docker>>,
    mut service_net: watch::Receiver<Option<Ipv4Net>>,
    reach: watch::Sender<Reachable>,
    address: watch::Sender<AgentAddress>,
    route: watch::Sender<Option<SandboxRoute>>,
) {
    let mut seen: HashSet<String> = HashSet::new();
    let mut warned = String::new();
    loop {
        let engine = docker.borrow_and_update().clone();
        let net = *service_net.borrow_and_update();
        if let Some(d) = engine {
            match inspect(&d, &network).await {
                Ok(found) => {
                    warned.clear();
                    let p = plan(&found, &seen);
                    seen.retain(|id| found.containers.contains_key(id));
                    if **reach.borrow() != p.reachable {
                        reach.send_replace(Arc::new(p.reachable));
                    }
                    let own = found.gateway.and_then(own_address);
                    address.send_if_modified(|a| {
                        let changed = *a != own;
                        *a = own;
                        changed
                    });
                    let wanted = sandbox_route(net, own, found.gateway);
                    route.send_if_modified(|r| {
                        let changed = *r != wanted;
                        *r = wanted;
                        changed
                    });
                    let needs_routes = matches!((own, found.gateway), (Some(o), Some(g)) if o != g);
                    for id in p.new_containers {
                        let (Some(wanted), true) = (wanted, needs_routes) else {
                            // Nothing to route (yet): look again next time
                            // only if a route may become needed.
                            if !needs_routes {
                                seen.insert(id);
                            }
                            continue;
                        };
                        seen.insert(id.clone());
                        let Some(pid) = our_pid(&d, &id, &node).await else {
                            continue;
                        };
                        let short: String = id.chars().take(12).collect();
                        match add_route(pid, wanted).await {
                            Ok(()) => {
                                debug!(container = %short, net = %wanted.net, via = %wanted.via, "pod routed to the agent for Services")
                            }
                            Err(e) => {
                                warn!(container = %short, "the pod cannot reach Services: {e}")
                            }
                        }
                    }
                }
                Err(e) => {
                    if warned != e {
                        warn!("{e}; Service routing waits for it");
                        warned = e;
                    }
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(INTERVAL) => {}
            r = docker.changed() => if r.is_err() { return },
            r = service_net.changed() => if r.is_err() { return } else {
                // A new range: every pod needs its route again.
                seen.clear();
                info!("Service range known; routing pods to the agent where needed");
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_on_the_network_is_reachable_and_new_ones_are_looked_at_once() {
        let found = Inspection {
            gateway: Some(Ipv4Addr::new(172, 30, 1, 1)),
            containers: HashMap::from([
                ("b".to_string(), Ipv4Addr::new(172, 30, 1, 3)),
                ("a".to_string(), Ipv4Addr::new(172, 30, 1, 2)),
            ]),
        };
        let p = plan(&found, &HashSet::new());
        assert_eq!(p.reachable.len(), 2);
        assert_eq!(p.new_containers, ["a", "b"]);
        let p = plan(&found, &HashSet::from(["a".to_string()]));
        assert_eq!(p.new_containers, ["b"]);
    }

    #[test]
    fn sandboxes_need_a_route_only_when_the_agent_is_not_their_gateway() {
        let net = Ipv4Net {
            addr: Ipv4Addr::new(10, 43, 0, 0),
            prefix: 16,
        };
        let agent = Ipv4Addr::new(172, 30, 1, 2);
        let gw = Ipv4Addr::new(172, 30, 1, 1);
        assert_eq!(
            sandbox_route(Some(net), Some(agent), Some(gw)),
            Some(SandboxRoute { net, via: agent })
        );
        assert_eq!(
            sandbox_route(Some(net), Some(gw), Some(gw)),
            None,
            "on the host"
        );
        assert_eq!(
            sandbox_route(None, Some(agent), Some(gw)),
            None,
            "range unknown"
        );
        assert_eq!(sandbox_route(Some(net), None, Some(gw)), None);
        assert_eq!(sandbox_route(Some(net), Some(agent), None), None);
    }

    #[test]
    fn addresses_are_read_without_their_prefix() {
        assert_eq!(
            parse_ipv4("172.30.1.2/24"),
            Some(Ipv4Addr::new(172, 30, 1, 2))
        );
        assert_eq!(parse_ipv4(""), None);
        assert_eq!(parse_ipv4("fd00::1/64"), None);
    }

    #[test]
    fn the_own_address_towards_loopback_is_loopback() {
        assert_eq!(
            own_address(Ipv4Addr::LOCALHOST),
            Some(Ipv4Addr::LOCALHOST),
            "the gateway is local: the agent is the gateway"
        );
    }
}
