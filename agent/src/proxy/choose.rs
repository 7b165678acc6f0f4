//! Which endpoint a new connection to a Service goes to: pure, so the
//! rule is tested without sockets.
//!
//! Only ready endpoints reach the agent at all (the controller sends no
//! others). Among them: this node's first, then this site's, then other
//! sites' (topology-aware routing); within the best tier, connections take
//! turns (`seq` rotates the start), so load spreads evenly over equals.
//! The rest follow in tier order as fallbacks for a connect that fails.
//! An endpoint the agent cannot reach directly (another box's pod network)
//! is listed apart, in the same order: it is reached through the relay
//! over the agents' QUIC links, after every direct one failed.

use outpost_proto::route::{RouteEndpoint, ServiceRoute};
use std::net::Ipv4Addr;

/// How close an endpoint is to this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    SameNode,
    SameSite,
    OtherSite,
}

/// This node, for the tiers.
#[derive(Debug, Clone, Copy)]
pub struct Me<'a> {
    pub node: &'a str,
    pub site: &'a str,
}

/// One place to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub pod: String,
    pub tier: Tier,
}

/// What [`candidates`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Candidates {
    /// Directly reachable, in the order to try.
    pub direct: Vec<Choice>,
    /// Ready endpoints only the relay reaches, in the same order.
    pub relay: Vec<Choice>,
}

pub fn tier(e: &RouteEndpoint, me: &Me<'_>) -> Tier {
    if e.node == me.node {
        Tier::SameNode
    } else if !me.site.is_empty() && e.site == me.site {
        Tier::SameSite
    } else {
        Tier::OtherSite
    }
}

/// The endpoints for port index `port` of `route`, in the order a new
/// connection tries them (see the module doc). `direct` says whether this
/// node reaches an endpoint's pod IP itself (its own pods always).
pub fn candidates(
    route: &ServiceRoute,
    port: usize,
    me: &Me<'_>,
    direct: impl Fn(&RouteEndpoint) -> bool,
    seq: u64,
) -> Candidates {
    let mut out = Candidates::default();
    let mut by_tier: [Vec<Choice>; 3] = Default::default();
    let mut relay_by_tier: [Vec<Choice>; 3] = Default::default();
    for e in &route.endpoints {
        let Some(&p) = e.ports.get(port) else {
            continue;
        };
        if p == 0 {
            continue;
        }
        let t = tier(e, me);
        let choice = Choice {
            ip: e.ip,
            port: p,
            pod: e.pod.clone(),
            tier: t,
        };
        if t == Tier::SameNode || direct(e) {
            by_tier[t as usize].push(choice);
        } else {
            relay_by_tier[t as usize].push(choice);
        }
    }
    out.direct = ordered(by_tier, seq);
    out.relay = ordered(relay_by_tier, seq);
    out
}

/// Tiers in order, the first non-empty one rotated by `seq`.
fn ordered(by_tier: [Vec<Choice>; 3], seq: u64) -> Vec<Choice> {
    let mut out = Vec::new();
    let mut first = true;
    for mut tier in by_tier {
        if tier.is_empty() {
            continue;
        }
        if first {
            let n = tier.len() as u64;
            tier.rotate_left(usize::try_from(seq % n).unwrap_or(0));
            first = false;
        }
        out.extend(tier);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_proto::pod::Protocol;
    use outpost_proto::route::{RoutePort, ServiceKind};
    use proptest::prelude::*;

    fn ep(node: &str, site: &str, last: u8, port: u16) -> RouteEndpoint {
        RouteEndpoint {
            ip: Ipv4Addr::new(172, 30, 0, last),
            node: node.into(),
            site: site.into(),
            pod: format!("default/p{last}"),
            ports: vec![port],
        }
    }

    fn route(endpoints: Vec<RouteEndpoint>) -> ServiceRoute {
        ServiceRoute {
            namespace: "default".into(),
            name: "web".into(),
            kind: ServiceKind::ClusterIp,
            cluster_ip: Some(Ipv4Addr::new(10, 43, 0, 1)),
            ports: vec![RoutePort {
                name: String::new(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: 0,
            }],
            endpoints,
        }
    }

    const ME: Me<'static> = Me {
        node: "n1",
        site: "a",
    };

    #[test]
    fn own_node_then_own_site_then_other_sites() {
        let r = route(vec![
            ep("n9", "b", 9, 8080),
            ep("n2", "a", 2, 8080),
            ep("n1", "a", 1, 8080),
        ]);
        let c = candidates(&r, 0, &ME, |_| true, 0);
        let tiers: Vec<Tier> = c.direct.iter().map(|c| c.tier).collect();
        assert_eq!(tiers, [Tier::SameNode, Tier::SameSite, Tier::OtherSite]);
        assert_eq!(c.direct[0].ip, Ipv4Addr::new(172, 30, 0, 1));
        assert_eq!(c.direct[0].port, 8080);
    }

    #[test]
    fn equals_take_turns_and_unreachable_ones_are_counted_apart() {
        let r = route(vec![
            ep("n2", "a", 2, 8080),
            ep("n3", "a", 3, 8080),
            ep("n9", "b", 9, 8080),
        ]);
        let reach = |e: &RouteEndpoint| e.site == "a";
        let firsts: Vec<u8> = (0..4)
            .map(|seq| candidates(&r, 0, &ME, reach, seq).direct[0].ip.octets()[3])
            .collect();
        assert_eq!(firsts, [2, 3, 2, 3]);
        let c = candidates(&r, 0, &ME, reach, 0);
        assert_eq!(c.direct.len(), 2);
        assert_eq!(c.relay.len(), 1);
        assert_eq!(c.relay[0].tier, Tier::OtherSite);
    }

    #[test]
    fn an_endpoint_without_the_port_is_never_chosen() {
        let r = route(vec![ep("n1", "a", 1, 0), ep("n2", "a", 2, 9000)]);
        let c = candidates(&r, 0, &ME, |_| true, 0);
        assert_eq!(c.direct.len(), 1);
        assert_eq!(c.direct[0].port, 9000);
        assert!(candidates(&r, 5, &ME, |_| true, 0).direct.is_empty());
        assert_eq!(
            candidates(&route(vec![]), 0, &ME, |_| true, 0),
            Candidates::default()
        );
    }

    proptest! {
        #[test]
        fn every_usable_endpoint_is_offered_once_best_tier_first(
            eps in proptest::collection::vec((0u8..4, 0u8..3, proptest::bool::ANY, 0u16..3), 0..12),
            seq in 0u64..100,
        ) {
            let endpoints: Vec<RouteEndpoint> = eps.iter().enumerate().map(|(i, (node, site, _, port))| {
                let last = u8::try_from(i).unwrap();
                ep(&format!("n{node}"), ["a", "b", "c"][usize::from(*site)], last, *port)
            }).collect();
            let reachable: Vec<bool> = eps.iter().map(|e| e.2).collect();
            let r = route(endpoints.clone());
            let c = candidates(&r, 0, &ME, |e| reachable[usize::from(e.ip.octets()[3])], seq);
            let usable = endpoints.iter().filter(|e| e.ports[0] != 0).count();
            prop_assert_eq!(c.direct.len() + c.relay.len(), usable);
            for ch in &c.relay {
                prop_assert!(ch.tier != Tier::SameNode, "own pods are always direct");
            }
            let mut seen = std::collections::HashSet::new();
            for ch in &c.direct {
                prop_assert!(ch.port != 0);
                prop_assert!(seen.insert(ch.ip));
            }
            for w in c.direct.windows(2) {
                // After the rotated first tier, tiers never go back.
                if w[0].tier != w[1].tier {
                    prop_assert!(w[0].tier < w[1].tier);
                }
            }
            let own = endpoints.iter().any(|e| e.node == "n1" && e.ports[0] != 0);
            if own {
                prop_assert_eq!(c.direct[0].tier, Tier::SameNode);
            }
        }
    }
}
