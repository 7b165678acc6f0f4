//! Resolver settings on both sides of the agent's resolver, without I/O:
//! which upstreams it forwards to (read from the node's `/etc/resolv.conf`)
//! and what a pod's `resolv.conf` says (the kubelet's `ClusterFirst` form).
//!
//! Upstreams. The forwarder sends from the agent's own network namespace, so
//! whatever the node itself resolves with works from there, loopback stubs
//! included, and they are kept: `127.0.0.53` (systemd-resolved) keeps per-link
//! DNS and VPN routing domains working, `127.0.0.11` is Docker's embedded
//! resolver when the agent itself runs in a container. (The kubelet's advice
//! to point CoreDNS at `/run/systemd/resolve/resolv.conf` exists because
//! CoreDNS runs in a pod, where the node's loopback is not reachable; the
//! agent does not.) What is dropped: link-local IPv6 servers with a zone
//! (`fe80::1%eth0`, which a socket address cannot name without an interface
//! index), the agent's own listening address (a forwarding loop), and
//! anything after the first three servers (glibc's `MAXNS`). With nothing
//! left the node falls back to `127.0.0.1:53`, what glibc does without a
//! `nameserver` line (resolv.conf(5)).
//!
//! Pods. [`pod_dns_config`] returns the three Docker container settings
//! (`HostConfig.Dns`, `DnsSearch`, `DnsOptions`) the kubelet would write for
//! a `ClusterFirst` pod: the agent's resolver as the only nameserver; search
//! `NS.svc.ZONE svc.ZONE ZONE` followed by the node's own search domains;
//! `ndots:5`. On user-defined Docker networks the container's resolv.conf
//! names Docker's embedded resolver (`127.0.0.11`), which serves container
//! names and forwards the rest to these servers; search and options reach
//! the container unchanged.
//!
//! ndots. A stub resolver treats a name with fewer than `ndots` dots as
//! relative and tries it under each search domain before trying it as given
//! ([`PodDnsConfig::lookup_order`] shows the order). With `ndots:5` every
//! short form reaches the resolver already expanded: `redis` becomes
//! `redis.NS.svc.cluster.local`, `redis.other` is first tried as
//! `redis.other.NS.svc.cluster.local` (NXDOMAIN, answered locally) and then
//! `redis.other.svc.cluster.local`. An outside name such as `example.com`
//! costs three local NXDOMAINs (plus one per node search domain) before it
//! is forwarded; a trailing dot (`example.com.`) skips the search list.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Most nameservers a stub resolver uses (glibc `MAXNS`, resolv.conf(5)).
pub const MAX_NAMESERVERS: usize = 3;
/// `ndots` the kubelet sets for `ClusterFirst` pods.
pub const POD_NDOTS: usize = 5;
/// Kubernetes' limits on a pod's search list (`MaxDNSSearchPaths` and
/// `MaxDNSSearchListChars` in pkg/apis/core/validation, since
/// ExpandedDNSConfig went GA in 1.28).
pub const MAX_SEARCH_PATHS: usize = 32;
pub const MAX_SEARCH_CHARS: usize = 2048;
/// DNS port.
pub const DNS_PORT: u16 = 53;

/// What of a resolv.conf the agent uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines in order, those that parse as an address.
    pub nameservers: Vec<IpAddr>,
    /// The last `search` or `domain` line (they replace each other), without
    /// trailing dots and without the root `.`.
    pub search: Vec<String>,
}

/// Parses resolv.conf text the way glibc reads it: keywords at the start of
/// a line, `#` and `;` start comments, `search`/`domain` replace each other,
/// `nameserver` lines accumulate. Lines it does not understand are skipped,
/// as the stub resolver skips them.
pub fn parse_resolv_conf(text: &str) -> ResolvConf {
    let mut conf = ResolvConf::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("nameserver") => {
                if let Some(ip) = fields.next().and_then(|a| a.parse::<IpAddr>().ok()) {
                    conf.nameservers.push(ip);
                }
            }
            Some("search") | Some("domain") => {
                conf.search = fields
                    .map(|d| d.trim_end_matches('.'))
                    .filter(|d| !d.is_empty())
                    .map(str::to_string)
                    .collect();
            }
            _ => {}
        }
    }
    conf
}

/// The upstreams to forward to: the first [`MAX_NAMESERVERS`] nameservers on
/// port 53, minus `own` (the resolver's own listening address); the local
/// host when the file names none. Empty when the only server is the
/// resolver itself. See the module docs for why loopback stays.
pub fn upstreams(conf: &ResolvConf, own: Option<SocketAddr>) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = conf
        .nameservers
        .iter()
        .take(MAX_NAMESERVERS)
        .map(|ip| SocketAddr::new(*ip, DNS_PORT))
        .filter(|a| Some(*a) != own && !is_self(*a, own))
        .collect();
    out.dedup();
    if conf.nameservers.is_empty() {
        let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DNS_PORT);
        if !is_self(local, own) && Some(local) != own {
            out.push(local);
        }
    }
    out
}

/// An upstream on loopback at the port of a resolver bound to the wildcard
/// address would be the resolver itself.
fn is_self(upstream: SocketAddr, own: Option<SocketAddr>) -> bool {
    own.is_some_and(|own| {
        own.ip().is_unspecified() && upstream.ip().is_loopback() && upstream.port() == own.port()
    })
}

/// DNS settings for a pod's containers, in Docker's container-create form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDnsConfig {
    /// `HostConfig.Dns`.
    pub servers: Vec<String>,
    /// `HostConfig.DnsSearch`.
    pub search: Vec<String>,
    /// `HostConfig.DnsOptions`.
    pub options: Vec<String>,
}

/// The kubelet's `ClusterFirst` settings for a pod in `namespace`:
/// `resolver` (the agent's resolver as pods reach it) is the only server;
/// the search list is `NS.svc.ZONE svc.ZONE ZONE` and then `host_search`,
/// duplicates dropped and cut to Kubernetes' limits the way the kubelet cuts
/// it (whole domains from the end); options `ndots:5`.
pub fn pod_dns_config(
    namespace: &str,
    resolver: IpAddr,
    cluster_domain: &str,
    host_search: &[String],
) -> PodDnsConfig {
    let zone = cluster_domain.trim_end_matches('.').to_ascii_lowercase();
    let mut search: Vec<String> = Vec::new();
    let cluster = [
        format!("{}.svc.{zone}", namespace.to_ascii_lowercase()),
        format!("svc.{zone}"),
        zone.clone(),
    ];
    for d in cluster.into_iter().chain(host_search.iter().cloned()) {
        if !d.is_empty() && !search.contains(&d) {
            search.push(d);
        }
    }
    search.truncate(MAX_SEARCH_PATHS);
    while search.len() > 1 && search.join(" ").len() > MAX_SEARCH_CHARS {
        search.pop();
    }
    PodDnsConfig {
        servers: vec![resolver.to_string()],
        search,
        options: vec![format!("ndots:{POD_NDOTS}")],
    }
}

impl PodDnsConfig {
    /// The `ndots` option (1, the stub resolvers' default, when absent).
    pub fn ndots(&self) -> usize {
        self.options
            .iter()
            .find_map(|o| o.strip_prefix("ndots:")?.parse().ok())
            .unwrap_or(1)
    }

    /// The names a glibc or musl stub resolver in the pod tries for `name`,
    /// in order: as given first only when it has at least `ndots` dots (or a
    /// trailing dot, which makes it absolute and skips the search list),
    /// otherwise after every search domain.
    pub fn lookup_order(&self, name: &str) -> Vec<String> {
        if let Some(abs) = name.strip_suffix('.') {
            return vec![abs.to_string()];
        }
        let expanded = self.search.iter().map(|d| format!("{name}.{d}"));
        if name.matches('.').count() >= self.ndots() {
            std::iter::once(name.to_string()).chain(expanded).collect()
        } else {
            expanded.chain(std::iter::once(name.to_string())).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::answer::tests::{ask, fixture};
    use super::super::answer::Reply;
    use super::super::wire::testing::parse;
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_resolv_conf_like_glibc() {
        let text = "\
# Generated by NetworkManager
domain old.example
search lan. corp.example .
nameserver 192.168.1.1 # router
nameserver fe80::1%eth0
nameserver not-an-address
nameserver
 ; comment
nameserver 2001:db8::53
options edns0 trust-ad
nameserver 10.0.0.2
nameserver 10.0.0.3
";
        let c = parse_resolv_conf(text);
        assert_eq!(c.search, ["lan", "corp.example"]);
        assert_eq!(
            c.nameservers,
            ["192.168.1.1", "2001:db8::53", "10.0.0.2", "10.0.0.3"]
                .map(|s| s.parse::<IpAddr>().unwrap())
        );
        assert_eq!(
            upstreams(&c, None),
            [
                sa("192.168.1.1:53"),
                sa("[2001:db8::53]:53"),
                sa("10.0.0.2:53")
            ]
        );
    }

    #[test]
    fn upstream_choices() {
        let conf = |t: &str| parse_resolv_conf(t);
        // (resolv.conf, own address, upstreams)
        let cases: &[(&str, Option<&str>, &[&str])] = &[
            // systemd-resolved's stub: kept, the agent resolves as the node does.
            (
                "nameserver 127.0.0.53\noptions edns0",
                None,
                &["127.0.0.53:53"],
            ),
            // Docker's embedded resolver when the agent runs in a container.
            ("nameserver 127.0.0.11", None, &["127.0.0.11:53"]),
            // No nameserver line: glibc uses the local host.
            ("search lan", None, &["127.0.0.1:53"]),
            ("", None, &["127.0.0.1:53"]),
            // Never forward to ourselves.
            ("nameserver 10.0.0.9", Some("10.0.0.9:53"), &[]),
            (
                "nameserver 127.0.0.1\nnameserver 10.0.0.2",
                Some("0.0.0.0:53"),
                &["10.0.0.2:53"],
            ),
            ("", Some("127.0.0.1:53"), &[]),
            ("", Some("0.0.0.0:53"), &[]),
            (
                "nameserver 127.0.0.53",
                Some("0.0.0.0:5353"),
                &["127.0.0.53:53"],
            ),
            (
                "nameserver 10.0.0.2\nnameserver 10.0.0.2",
                None,
                &["10.0.0.2:53"],
            ),
        ];
        for &(text, own, want) in cases {
            let got = upstreams(&conf(text), own.map(sa));
            let want: Vec<SocketAddr> = want.iter().map(|s| sa(s)).collect();
            assert_eq!(got, want, "{text:?} own {own:?}");
        }
    }

    #[test]
    fn pod_settings_are_the_kubelets() {
        let c = pod_dns_config(
            "Shop",
            "172.20.0.1".parse().unwrap(),
            "cluster.local.",
            &["lan".into(), "cluster.local".into()],
        );
        assert_eq!(c.servers, ["172.20.0.1"]);
        assert_eq!(
            c.search,
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "lan"
            ]
        );
        assert_eq!(c.options, ["ndots:5"]);
        assert_eq!(c.ndots(), 5);
    }

    #[test]
    fn pod_search_lists_are_cut_to_kubernetes_limits() {
        let many: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
        let c = pod_dns_config("ns", "10.0.0.1".parse().unwrap(), "cluster.local", &many);
        assert_eq!(c.search.len(), MAX_SEARCH_PATHS);
        assert_eq!(c.search[3], "d0.example");
        let long: Vec<String> = (0..20)
            .map(|i| format!("{}{i}.example", "x".repeat(150)))
            .collect();
        let c = pod_dns_config("ns", "10.0.0.1".parse().unwrap(), "cluster.local", &long);
        assert!(c.search.join(" ").len() <= MAX_SEARCH_CHARS);
        assert_eq!(c.search.len(), 3 + 12, "{}", c.search.join(" ").len());
    }

    #[test]
    fn lookup_order_follows_ndots() {
        let c = pod_dns_config("default", "10.0.0.1".parse().unwrap(), "cluster.local", &[]);
        assert_eq!(
            c.lookup_order("redis"),
            [
                "redis.default.svc.cluster.local",
                "redis.svc.cluster.local",
                "redis.cluster.local",
                "redis"
            ]
        );
        // 5 dots make a name absolute enough to try as given first.
        let five = c.lookup_order("a.b.c.d.e.f");
        assert_eq!(five[0], "a.b.c.d.e.f");
        assert_eq!(five[1], "a.b.c.d.e.f.default.svc.cluster.local");
        let four = c.lookup_order("a.b.c.d.e");
        assert_eq!(four[0], "a.b.c.d.e.default.svc.cluster.local");
        assert_eq!(four.last().unwrap(), "a.b.c.d.e");
        assert_eq!(c.lookup_order("example.com."), ["example.com"]);
    }

    /// What a pod in `default` gets for each short form: the first name in
    /// its lookup order that the resolver answers with records, or forwards.
    #[test]
    fn short_names_resolve_through_the_search_list() {
        let table = fixture();
        let pod = pod_dns_config(
            "default",
            "10.0.0.1".parse().unwrap(),
            "cluster.local",
            &["lan".into()],
        );
        // (typed name, the name that answers, answer or "forwarded",
        //  local NXDOMAINs before it)
        let cases: &[(&str, &str, &str, usize)] = &[
            (
                "redis-master",
                "redis-master.default.svc.cluster.local",
                "10.0.0.11",
                0,
            ),
            (
                "redis-master.default",
                "redis-master.default.svc.cluster.local",
                "10.0.0.11",
                1,
            ),
            (
                "redis-master.default.svc",
                "redis-master.default.svc.cluster.local",
                "10.0.0.11",
                2,
            ),
            // A full name without the trailing dot has 4 dots, so it still
            // walks the search list, and the node's own search domain sends
            // it upstream before the name itself is tried (as in Kubernetes).
            (
                "redis-master.default.svc.cluster.local",
                "redis-master.default.svc.cluster.local.lan",
                "forwarded",
                3,
            ),
            ("api.prod", "api.prod.svc.cluster.local", "10.0.0.30", 1),
            ("api", "api.lan", "forwarded", 3),
            ("example.com", "example.com.lan", "forwarded", 3),
            ("a.b.c.d.e.example", "a.b.c.d.e.example", "forwarded", 0),
            (
                "redis-master.default.svc.cluster.local.",
                "redis-master.default.svc.cluster.local",
                "10.0.0.11",
                0,
            ),
        ];
        for &(typed, answered_by, want, misses) in cases {
            let mut nxdomains = 0;
            let mut found = None;
            for candidate in pod.lookup_order(typed) {
                match ask(&table, 0, &candidate, 1) {
                    Reply::Forward(_) => {
                        found = Some((candidate, "forwarded".to_string()));
                        break;
                    }
                    Reply::Respond(m) => {
                        let p = parse(&m);
                        if let Some(rr) = p.answers.first() {
                            found = Some((candidate, rr.data.clone()));
                            break;
                        }
                        assert_eq!(p.rcode, 3, "{typed}: {candidate} should be NXDOMAIN");
                        nxdomains += 1;
                    }
                    Reply::Ignore => panic!("{candidate}"),
                }
            }
            let (name, got) = found.unwrap_or_else(|| panic!("{typed}: nothing answered"));
            assert_eq!(
                (name.as_str(), got.as_str()),
                (answered_by, want),
                "{typed}"
            );
            assert_eq!(nxdomains, misses, "{typed}");
        }
    }
}
