//! Service ports handed to the kernel: nf_tables DNAT ([`crate::nft`])
//! instead of an accept and a connect in the proxy, for connections whose
//! endpoints this box reaches itself.
//!
//! [`plan`] is pure: route table, bindings and reachable pod IPs in, the
//! ruleset and the bindings it covers out. A binding goes to the kernel
//! when it is TCP, not on loopback (a DNAT of 127.0.0.1 to a pod needs
//! `route_localnet`, which opens the box's loopback services to its
//! network), and every ready endpoint of its port is directly reachable
//! (this node's, or its site's on the shared pod network): the kernel
//! cannot fall back to the relay when a connect fails. It DNATs to the
//! best tier only (this node's pods when it has any, as
//! [`super::choose`] prefers them), uniformly. UDP stays in userspace: a
//! DNAT's conntrack entry outlives an endpoint that goes away, and
//! kube-proxy clears those by hand.
//!
//! Node ports and load balancer ports on node addresses go to the kernel
//! only when `node_ports` says so: in the host's own network namespace
//! (the agent run with `--network host`) Docker's iptables filter has a
//! FORWARD policy of DROP, which would drop a connection from outside that
//! the kernel DNATs to a pod, and an accept in our table cannot overrule
//! it. [`forwarding_unfiltered`] tells the two apart.
//!
//! [`Kernel`] is the thin part: it replaces the table when the plan
//! changes, reads the counters into [`ProxyMetrics`], and falls back to
//! the userspace proxy for everything (said once) when nf_tables or IP
//! forwarding is unavailable. The proxy keeps listening on every binding
//! either way: packets of a kernel binding are DNATed in prerouting before
//! they could reach the listener, and the listener serves again the moment
//! the table no longer covers the binding.

use super::choose::{candidates, Me};
use super::ProxyMetrics;
use crate::nft::{self, EndpointChain, KernelFrontend, Ruleset};
use crate::routes::{Binding, RouteTable};
use outpost_proto::pod::Protocol;
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use tracing::{info, warn};

/// Rules in one table at most (a frontend costs two: prerouting and
/// output; a chain one plus one per endpoint). Ports beyond stay in
/// userspace. 2,000 rules of about 600 bytes are one 1.2 MB batch, within
/// [`nft::MAX_BATCH`]; 51 Services with a node port each take about 300.
pub const MAX_RULES: usize = 2000;

/// `--service-proxy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The kernel where it can (nf_tables and forwarding work), said once
    /// and the userspace proxy for everything when it cannot.
    #[default]
    Auto,
    /// The kernel; each failure is reported and retried at the next
    /// change, with the userspace proxy serving meanwhile.
    Kernel,
    /// Only the userspace proxy (any table of an earlier run is removed).
    Userspace,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "kernel" => Ok(Mode::Kernel),
            "userspace" => Ok(Mode::Userspace),
            _ => Err(format!(
                "--service-proxy {s:?} must be auto, kernel or userspace"
            )),
        }
    }
}

/// What [`plan`] decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub ruleset: Ruleset,
    /// Bindings the ruleset covers; the others are the proxy's alone.
    pub kernel: HashSet<Binding>,
}

/// The ruleset for `bindings` of `table` (see the module doc).
pub fn plan(
    table: &RouteTable,
    bindings: &[Binding],
    me: &Me<'_>,
    reach: &HashSet<Ipv4Addr>,
    node_ports: bool,
) -> Plan {
    let mut out = Plan::default();
    let mut chain_of: HashMap<(&str, usize), usize> = HashMap::new();
    let mut rules = 0;
    for b in bindings {
        if b.front.protocol != Protocol::Tcp || b.front.ip.is_loopback() {
            continue;
        }
        let Some(route) = table.get(&b.service) else {
            continue;
        };
        if !node_ports && route.cluster_ip != Some(b.front.ip) {
            continue;
        }
        let c = candidates(route, b.index, me, |e| reach.contains(&e.ip), 0);
        let Some(best) = c.direct.first().map(|c| c.tier) else {
            continue;
        };
        if !c.relay.is_empty() {
            continue;
        }
        let chain = match chain_of.get(&(b.service.as_str(), b.index)) {
            Some(i) => *i,
            None => {
                let mut endpoints: Vec<(Ipv4Addr, u16)> = c
                    .direct
                    .iter()
                    .filter(|c| c.tier == best)
                    .map(|c| (c.ip, c.port))
                    .collect();
                endpoints.sort_unstable();
                endpoints.dedup();
                if rules + 1 + endpoints.len() + 2 > MAX_RULES {
                    continue;
                }
                rules += 1 + endpoints.len();
                let i = out.ruleset.chains.len();
                out.ruleset.chains.push(EndpointChain {
                    name: format!("svc-{i}"),
                    l4proto: 6,
                    endpoints,
                });
                chain_of.insert((b.service.as_str(), b.index), i);
                i
            }
        };
        if rules + 2 > MAX_RULES {
            continue;
        }
        rules += 2;
        out.ruleset.frontends.push(KernelFrontend {
            ip: b.front.ip,
            l4proto: 6,
            port: b.front.port,
            chain,
            comment: b.service.clone(),
        });
        out.kernel.insert(b.clone());
    }
    out
}

/// Programs the plan into this network namespace (see the module doc).
pub struct Kernel {
    mode: Mode,
    /// Auto mode gave up: the userspace proxy serves everything.
    disabled: bool,
    applied: Option<Ruleset>,
    /// The last failure said, so a retry that fails alike stays quiet.
    said: Option<String>,
}

/// Whether no Docker engine's bridge is in this network namespace (the
/// agent in a container with a network of its own): then no engine's
/// iptables filter, whose FORWARD policy is DROP, sees what the kernel
/// forwards here. Read from `/proc/self/net/dev` (this namespace's
/// interfaces); `docker0` or a user network's `br-*` means the engine's
/// namespace, and node ports stay in userspace.
pub fn forwarding_unfiltered() -> bool {
    let path = std::path::Path::new("/proc/self/net/dev");
    outpost_proto::files::read_bounded(path, 1 << 20).is_ok_and(|dev| !engine_bridge(&dev))
}

/// Whether `/proc/net/dev` text lists a Docker bridge.
fn engine_bridge(dev: &str) -> bool {
    dev.lines()
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim()))
        .any(|name| name == "docker0" || name.starts_with("br-"))
}

/// Why a change did not reach the kernel.
enum Failure {
    /// No nf_tables, no permission or no forwarding: auto mode gives up.
    Unavailable(String),
    /// Anything else: retried at the next change.
    Transient(String),
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Turns on IPv4 forwarding in this namespace when it is off.
fn ensure_forwarding() -> Result<(), String> {
    let now = std::fs::read_to_string(IP_FORWARD)
        .map_err(|e| format!("cannot read {IP_FORWARD}: {e}"))?;
    if now.trim() == "1" {
        return Ok(());
    }
    std::fs::write(IP_FORWARD, "1").map_err(|e| {
        format!("net.ipv4.ip_forward is 0 and cannot be set ({e}): run the agent's container with --sysctl net.ipv4.ip_forward=1")
    })
}

impl Kernel {
    pub fn new(mode: Mode) -> Kernel {
        Kernel {
            mode,
            disabled: mode == Mode::Userspace,
            applied: None,
            said: None,
        }
    }

    /// Removes a table an earlier run left (any mode): its rules would
    /// send connections to endpoints of another moment. Quiet when there
    /// is no nf_tables at all.
    pub fn start(&mut self) {
        if let Ok(mut s) = nft::Socket::open() {
            if let Err(e) = s.remove() {
                tracing::debug!("no nf_tables table removed: {e}");
            }
        }
        if self.mode == Mode::Userspace {
            info!("Service proxy: userspace for every Service (--service-proxy=userspace)");
        }
    }

    /// Puts `plan` in the kernel if it differs from what is there.
    pub fn sync(&mut self, plan: &Plan, metrics: &ProxyMetrics) {
        if self.disabled || self.applied.as_ref() == Some(&plan.ruleset) {
            return;
        }
        if self.applied.is_none() && plan.ruleset.frontends.is_empty() {
            return;
        }
        match self.replace(&plan.ruleset, metrics) {
            Ok(()) => {
                if self.said.take().is_some() || self.applied.is_none() {
                    info!(
                        frontends = plan.ruleset.frontends.len(),
                        "Service proxy: the kernel forwards Services whose endpoints this box reaches (nf_tables table ip {})",
                        nft::TABLE
                    );
                }
                metrics
                    .kernel_frontends
                    .store(plan.ruleset.frontends.len() as u64, Ordering::Relaxed);
                self.applied = Some(plan.ruleset.clone());
            }
            Err(e) => self.failed(e, metrics),
        }
    }

    fn replace(&mut self, r: &Ruleset, metrics: &ProxyMetrics) -> Result<(), Failure> {
        ensure_forwarding().map_err(Failure::Unavailable)?;
        // A socket per change: nothing of an earlier exchange can be left
        // in its queue.
        let mut s = nft::Socket::open().map_err(|e| Failure::Unavailable(e.to_string()))?;
        if self.applied.is_some() {
            // The new table starts its counters at zero: keep what the old
            // one counted.
            if let Ok(c) = s.counters() {
                metrics.kernel_counted(c);
            }
            metrics.kernel_rebase();
        }
        s.replace(r).map_err(|e| match &e {
            // No permission, or a kernel without the nf_tables parts.
            nft::NftError::Refused { err, .. }
                if matches!(err.raw_os_error(), Some(1 | 2 | 93 | 95 | 97)) =>
            {
                Failure::Unavailable(e.to_string())
            }
            _ => Failure::Transient(e.to_string()),
        })
    }

    fn failed(&mut self, f: Failure, metrics: &ProxyMetrics) {
        metrics.kernel_frontends.store(0, Ordering::Relaxed);
        // A refused batch changed nothing, so the table of before is still
        // in place: it must not outlive the routes it was made from.
        self.stop();
        match f {
            Failure::Unavailable(e) if self.mode == Mode::Auto => {
                warn!("Service proxy: the kernel cannot forward Services here ({e}); the userspace proxy serves every Service from now on");
                self.disabled = true;
            }
            Failure::Unavailable(e) | Failure::Transient(e) => {
                if self.said.as_deref() != Some(e.as_str()) {
                    warn!("Service proxy: cannot program nf_tables ({e}); the userspace proxy serves every Service until the next change succeeds");
                    self.said = Some(e);
                }
            }
        }
    }

    /// Reads the counters into `metrics`.
    pub fn count(&mut self, metrics: &ProxyMetrics) {
        if self.applied.is_none() {
            return;
        }
        match nft::Socket::open().and_then(|mut s| s.counters()) {
            Ok(c) => metrics.kernel_counted(c),
            Err(e) => tracing::debug!("cannot read the nf_tables counters: {e}"),
        }
    }

    /// Removes the table (the agent stops, or the kernel path failed).
    pub fn stop(&mut self) {
        if self.applied.take().is_none() && self.mode == Mode::Userspace {
            return;
        }
        if let Ok(mut s) = nft::Socket::open() {
            if let Err(e) = s.remove() {
                warn!("cannot remove nf_tables table ip {}: {e}", nft::TABLE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_proto::route::{RouteEndpoint, RoutePort, RoutesUpdate, ServiceKind, ServiceRoute};

    fn ep(node: &str, site: &str, last: u8) -> RouteEndpoint {
        RouteEndpoint {
            ip: Ipv4Addr::new(172, 30, 0, last),
            node: node.into(),
            site: site.into(),
            pod: format!("default/p{last}"),
            ports: vec![8080],
        }
    }

    fn svc(name: &str, ip: u8, protocol: Protocol, endpoints: Vec<RouteEndpoint>) -> ServiceRoute {
        ServiceRoute {
            namespace: "default".into(),
            name: name.into(),
            kind: ServiceKind::NodePort,
            cluster_ip: Some(Ipv4Addr::new(10, 43, 0, ip)),
            ports: vec![RoutePort {
                name: String::new(),
                protocol,
                port: 80,
                node_port: 30000 + u16::from(ip),
            }],
            endpoints,
        }
    }

    const ME: Me<'static> = Me {
        node: "n1",
        site: "a",
    };
    const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);

    #[test]
    fn reachable_tcp_services_go_to_the_kernel_and_the_rest_stay_in_userspace() {
        let mut t = RouteTable::default();
        t.apply(RoutesUpdate {
            full: true,
            upsert: vec![
                // this node's pod and a same-site one: the kernel, this node's only
                svc(
                    "local",
                    1,
                    Protocol::Tcp,
                    vec![ep("n1", "a", 1), ep("n2", "a", 2)],
                ),
                // two same-site pods on the shared network: the kernel, both
                svc(
                    "site",
                    2,
                    Protocol::Tcp,
                    vec![ep("n2", "a", 2), ep("n3", "a", 3)],
                ),
                // one endpoint only the relay reaches: userspace
                svc(
                    "far",
                    3,
                    Protocol::Tcp,
                    vec![ep("n2", "a", 2), ep("n9", "b", 9)],
                ),
                // UDP: userspace
                svc("dns", 4, Protocol::Udp, vec![ep("n1", "a", 1)]),
            ],
            ..Default::default()
        })
        .unwrap();
        t.site = "a".into();
        let bindings = t.bindings(&[NODE]);
        let reach: HashSet<Ipv4Addr> = [2, 3].map(|l| Ipv4Addr::new(172, 30, 0, l)).into();
        let p = plan(&t, &bindings, &ME, &reach, true);
        let mut kernel: Vec<(Ipv4Addr, u16, &str)> = p
            .kernel
            .iter()
            .map(|b| (b.front.ip, b.front.port, b.service.as_str()))
            .collect();
        kernel.sort_unstable();
        assert_eq!(
            kernel,
            [
                (Ipv4Addr::new(10, 43, 0, 1), 80, "default/local"),
                (Ipv4Addr::new(10, 43, 0, 2), 80, "default/site"),
                (NODE, 30001, "default/local"),
                (NODE, 30002, "default/site"),
            ],
            "loopback node ports, relayed and UDP Services stay in userspace"
        );
        let userspace = bindings.iter().filter(|b| !p.kernel.contains(b)).count();
        assert_eq!(userspace, bindings.len() - 4);
        let ep = |l| (Ipv4Addr::new(172, 30, 0, l), 8080);
        let chains: Vec<(&str, &[(Ipv4Addr, u16)])> = p
            .ruleset
            .chains
            .iter()
            .map(|c| (c.name.as_str(), c.endpoints.as_slice()))
            .collect();
        // Bindings are sorted by address: 10.43.0.1 (local) comes first.
        assert_eq!(
            chains,
            [("svc-0", &[ep(1)][..]), ("svc-1", &[ep(2), ep(3)][..])]
        );
        let fronts: Vec<(Ipv4Addr, u16, usize, &str)> = p
            .ruleset
            .frontends
            .iter()
            .map(|f| (f.ip, f.port, f.chain, f.comment.as_str()))
            .collect();
        assert_eq!(
            fronts,
            [
                (Ipv4Addr::new(10, 43, 0, 1), 80, 0, "default/local"),
                (Ipv4Addr::new(10, 43, 0, 2), 80, 1, "default/site"),
                (NODE, 30001, 0, "default/local"),
                (NODE, 30002, 1, "default/site"),
            ],
            "one chain per Service port, shared by its cluster IP and node port"
        );
        assert!(p.ruleset.frontends.iter().all(|f| f.l4proto == 6));
    }

    #[test]
    fn the_same_table_plans_the_same_ruleset_and_nothing_when_nothing_is_reachable() {
        let mut t = RouteTable::default();
        t.apply(RoutesUpdate {
            full: true,
            upsert: vec![svc("far", 3, Protocol::Tcp, vec![ep("n9", "b", 9)])],
            ..Default::default()
        })
        .unwrap();
        let b = t.bindings(&[NODE]);
        let none = HashSet::new();
        assert_eq!(plan(&t, &b, &ME, &none, true), Plan::default());
        let reach: HashSet<Ipv4Addr> = [Ipv4Addr::new(172, 30, 0, 9)].into();
        let a = plan(&t, &b, &ME, &reach, true);
        assert_eq!(
            a.kernel.len(),
            2,
            "reachable across sites: cluster IP and node port"
        );
        assert_eq!(
            a,
            plan(&t, &b, &ME, &reach, true),
            "deterministic, so unchanged tables are not reprogrammed"
        );
    }

    #[test]
    fn the_rule_budget_leaves_the_excess_in_userspace() {
        let mut t = RouteTable::default();
        let many: Vec<ServiceRoute> = (1..=254u8)
            .map(|i| {
                let eps = (1..=9).map(|l| ep("n1", "a", l)).collect();
                let mut s = svc(&format!("s{i}"), i, Protocol::Tcp, eps);
                s.kind = ServiceKind::ClusterIp;
                s
            })
            .collect();
        t.apply(RoutesUpdate {
            full: true,
            upsert: many,
            ..Default::default()
        })
        .unwrap();
        let b = t.bindings(&[]);
        let p = plan(&t, &b, &ME, &HashSet::new(), true);
        let rules: usize = p.ruleset.frontends.len() * 2
            + p.ruleset
                .chains
                .iter()
                .map(|c| 1 + c.endpoints.len())
                .sum::<usize>();
        assert!(rules <= MAX_RULES, "{rules}");
        assert!(p.kernel.len() < b.len(), "some stay in userspace");
        assert_eq!(p.kernel.len(), MAX_RULES / 12);
    }

    #[test]
    fn an_engine_bridge_marks_the_engines_namespace() {
        let host = "Inter-|   Receive\n face |bytes\n    lo: 1 2\n  eth0: 1 2\ndocker0: 1 2\n";
        assert!(engine_bridge(host));
        assert!(engine_bridge("br-0123abcd: 1 2\n"));
        assert!(!engine_bridge("Inter-|\n face |\n    lo: 1\n  eth0: 1\n"));
    }

    #[test]
    fn modes_parse() {
        assert_eq!("auto".parse::<Mode>(), Ok(Mode::Auto));
        assert_eq!("kernel".parse::<Mode>(), Ok(Mode::Kernel));
        assert_eq!("userspace".parse::<Mode>(), Ok(Mode::Userspace));
        assert!("iptables"
            .parse::<Mode>()
            .unwrap_err()
            .contains("auto, kernel or userspace"));
    }
}
