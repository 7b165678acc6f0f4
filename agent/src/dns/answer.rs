//! The resolver's decision for one query, without I/O: answer it from the
//! [`ServiceTable`], or hand it on to the node's resolvers.
//!
//! Names under the cluster domain are answered here, always (NXDOMAIN
//! included: a pod's search list sends every short outside name through the
//! cluster domain first, and those misses must come back at once). The
//! semantics are those of CoreDNS's `kubernetes` plugin with its defaults
//! (`pods disabled`, no `ignore empty_service`, no wildcards), which
//! implements the Kubernetes DNS specification:
//!
//! | name (below the zone)            | A                         | SRV                               |
//! |----------------------------------|---------------------------|-----------------------------------|
//! | `SVC.NS.svc`, cluster IP         | the cluster IP            | one per port, target `SVC.NS.svc` |
//! | `SVC.NS.svc`, headless           | each ready endpoint       | endpoint x port, target `EP.SVC.NS.svc` |
//! | `_PORT._PROTO.SVC.NS.svc`        | as above if the port exists | the matching port(s) only       |
//! | `EP.SVC.NS.svc`                  | that endpoint             | that endpoint's ports             |
//! | `NS.svc`, `svc`, `pod`, the zone | empty (NOERROR)           | empty                             |
//! | `dns-version` (TXT `1.1.0`)      | empty                     | empty                             |
//! | anything else                    | NXDOMAIN                  | NXDOMAIN                          |
//!
//! A headless Service with no ready endpoint, an unknown port name and a
//! missing namespace are NXDOMAIN, as in CoreDNS. Other types on an existing
//! name (AAAA: Outpost is IPv4 only) are NOERROR with no records. Negative
//! answers carry the zone's SOA so resolvers may cache them (RFC 2308).
//! Several addresses or SRV records are rotated by the query id, a cheap
//! stand-in for CoreDNS's `loadbalance` shuffle that keeps this function
//! deterministic.

use super::wire::{
    class, parse_query, rcode, rtype, Builder, Name, Query, QueryError, Question, RData, Record,
    ResponseHead, Section, CLASSIC_UDP_LIMIT, TCP_LIMIT,
};
use crate::services::{Service, ServiceTable};
use std::net::Ipv4Addr;

/// TTL of every record served from the table: the default of CoreDNS's
/// `kubernetes` plugin (`defaultTTL = 5` in plugin/kubernetes). Note that
/// kubeadm's Corefile raises it to 30; 5 keeps endpoint changes of headless
/// Services visible within about one heartbeat.
pub const DEFAULT_TTL: u32 = 5;
/// EDNS0 UDP payload size offered, and the most a UDP answer of ours may
/// take: 1232 bytes, the DNS Flag Day 2020 value (no IP fragmentation on a
/// 1280-byte IPv6 path; dnsmasq's `EDNS_PKTSZ` default too, since its fix
/// for CVE-2023-28450).
pub const EDNS_PAYLOAD: u16 = 1232;
/// Largest query taken, over UDP or TCP. A question with a 255-byte name and
/// an OPT record with a cookie and padding stays far below it; anything
/// larger is refused rather than parsed or forwarded.
pub const MAX_QUERY_LEN: usize = 1232;
/// TTL of the `dns-version` TXT record (CoreDNS uses 28800).
const DNS_VERSION_TTL: u32 = 28_800;
/// Kubernetes DNS schema version served at `dns-version.ZONE`.
const DNS_SCHEMA_VERSION: &[u8] = b"1.1.0";
/// SOA timers as CoreDNS writes them; there are no zone transfers, so only
/// `minimum` (the negative-caching TTL, RFC 2308) matters to anyone.
const SOA_REFRESH: u32 = 7200;
const SOA_RETRY: u32 = 1800;
const SOA_EXPIRE: u32 = 86_400;
const SOA_SERIAL: u32 = 1;

/// Settings of the resolver core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConfig {
    /// TTL of the records served from the table.
    pub ttl: u32,
    /// Largest UDP answer (and the EDNS0 payload size offered).
    pub max_udp_payload: u16,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            ttl: DEFAULT_TTL,
            max_udp_payload: EDNS_PAYLOAD,
        }
    }
}

/// How the query arrived; decides the size limit of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What to do with a message.
#[derive(Debug)]
pub enum Reply {
    /// Send these bytes back to the client.
    Respond(Vec<u8>),
    /// Not a cluster name: send the query (its original bytes, under a new
    /// id) to the node's resolvers and relay their answer.
    Forward(Query),
    /// Send nothing: too short to carry an id, or a response.
    Ignore,
}

/// Decides what to do with `msg`, a message from a client.
pub fn answer(
    msg: &[u8],
    transport: Transport,
    table: &ServiceTable,
    cfg: &ResolverConfig,
) -> Reply {
    let query = match parse_query(msg, MAX_QUERY_LEN) {
        Ok(q) => q,
        Err(e) => return error_reply(e, cfg),
    };
    let q = &query.question;
    if matches!(q.qtype, rtype::AXFR | rtype::IXFR) {
        // Pods do not transfer zones; an upstream transfer would also not
        // fit the single-message relay.
        return Reply::Respond(failure(&query, rcode::REFUSED, cfg));
    }
    match below_zone(&q.name, table.cluster_domain()) {
        None => Reply::Forward(query),
        Some(rel) => Reply::Respond(local(&query, &rel, transport, table, cfg)),
    }
}

/// An error response to `query`: header, question, and an OPT record when
/// the query had one. The server uses it for SERVFAIL when forwarding fails.
pub fn failure(query: &Query, code: u16, cfg: &ResolverConfig) -> Vec<u8> {
    Builder::new(
        ResponseHead {
            id: query.id,
            query_flags: query.flags,
            authoritative: false,
            rcode: code,
            question: Some(&query.question),
        },
        TCP_LIMIT,
        query.edns.map(|e| (cfg.max_udp_payload, e.dnssec_ok)),
    )
    .finish()
}

fn error_reply(e: QueryError, cfg: &ResolverConfig) -> Reply {
    let bare = |id, flags, code| {
        let head = ResponseHead {
            id,
            query_flags: flags,
            authoritative: false,
            rcode: code,
            question: None,
        };
        Reply::Respond(Builder::new(head, CLASSIC_UDP_LIMIT, None).finish())
    };
    match e {
        QueryError::Short(_) | QueryError::Response => Reply::Ignore,
        QueryError::Oversized { id, flags, .. } => bare(id, flags, rcode::REFUSED),
        QueryError::NotImplemented { id, flags, .. } => bare(id, flags, rcode::NOTIMP),
        QueryError::Malformed { id, flags, .. } => bare(id, flags, rcode::FORMERR),
        QueryError::BadVersion {
            id,
            flags,
            question,
            edns,
        } => Reply::Respond(failure(
            &Query {
                id,
                flags,
                question,
                edns: Some(edns),
            },
            rcode::BADVERS,
            cfg,
        )),
    }
}

/// The labels of `name` in front of `zone`, or `None` when the name is not
/// in the zone.
fn below_zone<'a>(name: &'a Name, zone: &str) -> Option<Vec<&'a [u8]>> {
    let labels: Vec<&[u8]> = name.labels().collect();
    let zone: Vec<&str> = zone.split('.').collect();
    let split = labels.len().checked_sub(zone.len())?;
    labels[split..]
        .iter()
        .zip(&zone)
        .all(|(l, z)| l.eq_ignore_ascii_case(z.as_bytes()))
        .then(|| labels[..split].to_vec())
}

/// What a name in the zone stands for.
enum Node<'t, 'q> {
    Missing,
    /// Exists, but holds no records (`svc`, `NS.svc`, `pod`).
    Empty,
    Apex,
    DnsVersion,
    Service(&'t Service, Selector<'q>),
}

/// Which part of a Service a name asks for.
enum Selector<'q> {
    All,
    Endpoint(&'q [u8]),
    Port { name: &'q [u8], proto: &'q [u8] },
}

fn classify<'t, 'q>(rel: &[&'q [u8]], table: &'t ServiceTable) -> Node<'t, 'q> {
    let is = |l: &[u8], s: &str| l.eq_ignore_ascii_case(s.as_bytes());
    let Some((&last, rest)) = rel.split_last() else {
        return Node::Apex;
    };
    if rest.is_empty() && is(last, "dns-version") {
        return Node::DnsVersion;
    }
    if is(last, "pod") {
        // Pod records (`1-2-3-4.NS.pod.ZONE`) are off, as with CoreDNS's
        // default `pods disabled`.
        return if rest.is_empty() {
            Node::Empty
        } else {
            Node::Missing
        };
    }
    if !is(last, "svc") {
        return Node::Missing;
    }
    let Some((&ns, rest)) = rest.split_last() else {
        return Node::Empty;
    };
    let Some(ns) = lower(ns).filter(|ns| table.has_namespace(ns)) else {
        return Node::Missing;
    };
    let Some((&name, rest)) = rest.split_last() else {
        return Node::Empty;
    };
    let Some(svc) = lower(name).and_then(|n| table.get(&ns, &n)) else {
        return Node::Missing;
    };
    match rest {
        [] => Node::Service(svc, Selector::All),
        [ep] => Node::Service(svc, Selector::Endpoint(ep)),
        [port, proto] => Node::Service(
            svc,
            Selector::Port {
                name: strip_underscore(port),
                proto: strip_underscore(proto),
            },
        ),
        _ => Node::Missing,
    }
}

fn lower(label: &[u8]) -> Option<String> {
    std::str::from_utf8(label).ok().map(str::to_ascii_lowercase)
}

fn strip_underscore(label: &[u8]) -> &[u8] {
    label.strip_prefix(b"_").unwrap_or(label)
}

/// The records a Service name resolves to.
struct Targets {
    addrs: Vec<Ipv4Addr>,
    /// (port, target name, target address) for SRV answers.
    srv: Vec<(u16, Name, Ipv4Addr)>,
}

/// `None` when the name does not exist (NXDOMAIN). SRV targets are only
/// built when `want_srv`.
fn targets(svc: &Service, sel: &Selector<'_>, zone: &str, want_srv: bool) -> Option<Targets> {
    let ports: Vec<_> = match sel {
        Selector::Port { name, proto } => {
            let found: Vec<_> = svc
                .ports
                .iter()
                .filter(|p| {
                    p.name
                        .as_deref()
                        .is_some_and(|n| n.as_bytes().eq_ignore_ascii_case(name))
                        && p.protocol.as_lower().as_bytes().eq_ignore_ascii_case(proto)
                })
                .collect();
            if found.is_empty() {
                return None;
            }
            found
        }
        _ => svc.ports.iter().collect(),
    };
    let service_name = || Name::from_text(&format!("{}.{}.svc.{zone}", svc.name, svc.namespace));
    match (svc.cluster_ip, sel) {
        (Some(ip), Selector::All | Selector::Port { .. }) => {
            let mut srv = Vec::new();
            if want_srv {
                if let Some(target) = service_name() {
                    srv = ports.iter().map(|p| (p.port, target.clone(), ip)).collect();
                }
            }
            Some(Targets {
                addrs: vec![ip],
                srv,
            })
        }
        _ => {
            // Headless, or one endpoint by name: answers come from the ready
            // endpoints, and SRV ports are the ports on the endpoints.
            let eps: Vec<_> = svc
                .ready_endpoints
                .iter()
                .filter(|ep| match sel {
                    Selector::Endpoint(label) => {
                        ep.dns_label().as_bytes().eq_ignore_ascii_case(label)
                    }
                    _ => true,
                })
                .collect();
            if eps.is_empty() {
                return None;
            }
            let mut addrs: Vec<Ipv4Addr> = Vec::with_capacity(eps.len());
            for ep in &eps {
                if !addrs.contains(&ep.ip) {
                    addrs.push(ep.ip);
                }
            }
            let mut srv = Vec::new();
            if want_srv {
                for ep in &eps {
                    let text = format!(
                        "{}.{}.{}.svc.{zone}",
                        ep.dns_label(),
                        svc.name,
                        svc.namespace
                    );
                    let Some(target) = Name::from_text(&text) else {
                        continue;
                    };
                    for p in &ports {
                        srv.push((p.target_port, target.clone(), ep.ip));
                    }
                }
            }
            Some(Targets { addrs, srv })
        }
    }
}

fn local(
    query: &Query,
    rel: &[&[u8]],
    transport: Transport,
    table: &ServiceTable,
    cfg: &ResolverConfig,
) -> Vec<u8> {
    let q = &query.question;
    if q.qclass != class::IN && q.qclass != class::ANY {
        return failure(query, rcode::REFUSED, cfg);
    }
    let zone = table.cluster_domain();
    let ttl = cfg.ttl;
    let rotate = usize::from(query.id);
    let mut code = rcode::NOERROR;
    let mut answers = Vec::new();
    let mut additional = Vec::new();
    match classify(rel, table) {
        Node::Missing => code = rcode::NXDOMAIN,
        Node::Empty => {}
        Node::Apex => {
            if q.qtype == rtype::SOA {
                answers.extend(soa(zone, ttl));
            }
        }
        Node::DnsVersion => {
            if q.qtype == rtype::TXT {
                answers.push(Record {
                    owner: q.name.clone(),
                    ttl: DNS_VERSION_TTL,
                    data: RData::Txt(DNS_SCHEMA_VERSION.to_vec()),
                });
            }
        }
        Node::Service(svc, sel) => match targets(svc, &sel, zone, q.qtype == rtype::SRV) {
            None => code = rcode::NXDOMAIN,
            Some(mut t) => match q.qtype {
                rtype::A => {
                    let n = t.addrs.len();
                    t.addrs.rotate_left(rotate % n.max(1));
                    answers.extend(t.addrs.into_iter().map(|ip| Record {
                        owner: q.name.clone(),
                        ttl,
                        data: RData::A(ip),
                    }));
                }
                rtype::SRV => srv_records(q, t.srv, ttl, rotate, &mut answers, &mut additional),
                _ => {}
            },
        },
    }
    let authority = if answers.is_empty() {
        soa(zone, ttl)
    } else {
        None
    };
    let limit = match (transport, query.edns) {
        (Transport::Tcp, _) => TCP_LIMIT,
        (Transport::Udp, None) => CLASSIC_UDP_LIMIT,
        (Transport::Udp, Some(e)) => {
            let max = cfg.max_udp_payload.max(512);
            usize::from(e.udp_payload.clamp(512, max))
        }
    };
    let mut b = Builder::new(
        ResponseHead {
            id: query.id,
            query_flags: query.flags,
            authoritative: true,
            rcode: code,
            question: Some(q),
        },
        limit,
        query.edns.map(|e| (cfg.max_udp_payload, e.dnssec_ok)),
    );
    let fits = answers.iter().all(|r| b.push(Section::Answer, r))
        && authority.iter().all(|r| b.push(Section::Authority, r));
    if fits {
        // Additional records are a courtesy: drop what does not fit, without
        // TC (RFC 2181 section 9).
        for r in &additional {
            if !b.push(Section::Additional, r) {
                break;
            }
        }
    } else {
        // The client retries over TCP (RFC 1035 4.2.1, RFC 7766).
        b.clear_records(Some(q));
        b.set_truncated();
    }
    b.finish()
}

/// SRV answers in CoreDNS's form: priority 0, weights sharing 100, one
/// address record per distinct target in the additional section.
fn srv_records(
    q: &Question,
    mut srv: Vec<(u16, Name, Ipv4Addr)>,
    ttl: u32,
    rotate: usize,
    answers: &mut Vec<Record>,
    additional: &mut Vec<Record>,
) {
    // CoreDNS counts the records before dropping duplicates; so do we.
    let weight = u16::try_from(100 / srv.len().max(1)).unwrap_or(1).max(1);
    let mut seen: Vec<(u16, &Name)> = Vec::new();
    let n = srv.len();
    srv.rotate_left(rotate % n.max(1));
    for (port, target, _) in &srv {
        if seen
            .iter()
            .any(|(p, t)| p == port && t.eq_ignore_case(target))
        {
            continue;
        }
        seen.push((*port, target));
        answers.push(Record {
            owner: q.name.clone(),
            ttl,
            data: RData::Srv {
                priority: 0,
                weight,
                port: *port,
                target: target.clone(),
            },
        });
    }
    let mut named: Vec<&Name> = Vec::new();
    for (_, target, ip) in &srv {
        if named.iter().any(|t| t.eq_ignore_case(target)) {
            continue;
        }
        named.push(target);
        additional.push(Record {
            owner: target.clone(),
            ttl,
            data: RData::A(*ip),
        });
    }
}

/// The zone's SOA record, as CoreDNS synthesises it.
fn soa(zone: &str, ttl: u32) -> Option<Record> {
    Some(Record {
        owner: Name::from_text(zone)?,
        ttl,
        data: RData::Soa {
            mname: Name::from_text(&format!("ns.dns.{zone}"))?,
            rname: Name::from_text(&format!("hostmaster.{zone}"))?,
            serial: SOA_SERIAL,
            refresh: SOA_REFRESH,
            retry: SOA_RETRY,
            expire: SOA_EXPIRE,
            minimum: ttl,
        },
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::wire::testing::{parse, query, Parsed};
    use super::*;
    use crate::services::{Endpoint, Protocol, ServicePort};
    use proptest::prelude::*;

    fn port(name: Option<&str>, protocol: Protocol, port: u16, target_port: u16) -> ServicePort {
        ServicePort {
            name: name.map(Into::into),
            protocol,
            port,
            target_port,
        }
    }

    fn ep(ip: [u8; 4], hostname: Option<&str>) -> Endpoint {
        Endpoint {
            ip: ip.into(),
            hostname: hostname.map(Into::into),
        }
    }

    fn service(
        ns: &str,
        name: &str,
        ip: Option<[u8; 4]>,
        ports: Vec<ServicePort>,
        eps: Vec<Endpoint>,
    ) -> Service {
        Service {
            namespace: ns.into(),
            name: name.into(),
            cluster_ip: ip.map(Into::into),
            ports,
            ready_endpoints: eps,
        }
    }

    /// The table the tests answer from.
    pub(crate) fn fixture() -> ServiceTable {
        use Protocol::*;
        let mut t = ServiceTable::build(
            "cluster.local",
            [
                service(
                    "default",
                    "redis-master",
                    Some([10, 0, 0, 11]),
                    vec![port(Some("redis"), Tcp, 6379, 6379)],
                    vec![ep([10, 1, 0, 5], None)],
                ),
                // A cluster IP resolves with no ready endpoint (no
                // `ignore empty_service`).
                service(
                    "default",
                    "web",
                    Some([10, 0, 0, 20]),
                    vec![
                        port(Some("http"), Tcp, 80, 8080),
                        port(Some("metrics"), Tcp, 9090, 9090),
                        port(Some("dns"), Udp, 53, 5353),
                    ],
                    vec![],
                ),
                service(
                    "default",
                    "db",
                    None,
                    vec![port(Some("pg"), Tcp, 5432, 5432)],
                    vec![ep([10, 1, 0, 7], Some("db-0")), ep([10, 1, 0, 8], None)],
                ),
                service(
                    "default",
                    "empty-headless",
                    None,
                    vec![port(Some("x"), Tcp, 1, 1)],
                    vec![],
                ),
                service(
                    "prod",
                    "api",
                    Some([10, 0, 0, 30]),
                    vec![port(None, Tcp, 443, 8443)],
                    vec![ep([10, 2, 0, 1], None)],
                ),
            ],
        )
        .unwrap();
        t.add_namespace("quiet").unwrap();
        t
    }

    pub(crate) fn ask(table: &ServiceTable, id: u16, name: &str, qtype: u16) -> Reply {
        answer(
            &query(id, name, qtype, None),
            Transport::Udp,
            table,
            &ResolverConfig::default(),
        )
    }

    fn respond(reply: Reply) -> Parsed {
        match reply {
            Reply::Respond(m) => parse(&m),
            other => panic!("expected a response, got {other:?}"),
        }
    }

    const A: u16 = rtype::A;
    const AAAA: u16 = rtype::AAAA;
    const SRV: u16 = rtype::SRV;
    const MX: u16 = 15;
    const OK: u16 = rcode::NOERROR;
    const NX: u16 = rcode::NXDOMAIN;

    #[test]
    fn names_in_the_cluster_domain() {
        let table = fixture();
        // (name, type, rcode, answers in order for query id 0)
        let cases: &[(&str, u16, u16, &[&str])] = &[
            (
                "redis-master.default.svc.cluster.local",
                A,
                OK,
                &["10.0.0.11"],
            ),
            (
                "redis-master.default.svc.cluster.local.",
                A,
                OK,
                &["10.0.0.11"],
            ),
            (
                "REDIS-Master.Default.SVC.Cluster.LOCAL",
                A,
                OK,
                &["10.0.0.11"],
            ),
            ("web.default.svc.cluster.local", A, OK, &["10.0.0.20"]),
            (
                "_http._tcp.web.default.svc.cluster.local",
                A,
                OK,
                &["10.0.0.20"],
            ),
            ("_http._udp.web.default.svc.cluster.local", A, NX, &[]),
            ("api.prod.svc.cluster.local", A, OK, &["10.0.0.30"]),
            // Headless: the ready endpoints; by endpoint name: one of them.
            (
                "db.default.svc.cluster.local",
                A,
                OK,
                &["10.1.0.7", "10.1.0.8"],
            ),
            ("db-0.db.default.svc.cluster.local", A, OK, &["10.1.0.7"]),
            (
                "10-1-0-8.db.default.svc.cluster.local",
                A,
                OK,
                &["10.1.0.8"],
            ),
            ("db-1.db.default.svc.cluster.local", A, NX, &[]),
            (
                "10-1-0-5.redis-master.default.svc.cluster.local",
                A,
                OK,
                &["10.1.0.5"],
            ),
            ("empty-headless.default.svc.cluster.local", A, NX, &[]),
            ("empty-headless.default.svc.cluster.local", SRV, NX, &[]),
            // IPv4 only: existing names answer AAAA (and other types) empty.
            ("redis-master.default.svc.cluster.local", AAAA, OK, &[]),
            ("db.default.svc.cluster.local", AAAA, OK, &[]),
            ("redis-master.default.svc.cluster.local", MX, OK, &[]),
            ("nope.default.svc.cluster.local", AAAA, NX, &[]),
            // Unknown names, namespaces and shapes.
            ("nope.default.svc.cluster.local", A, NX, &[]),
            ("redis-master.nope.svc.cluster.local", A, NX, &[]),
            ("a.b.c.web.default.svc.cluster.local", A, NX, &[]),
            ("foo.cluster.local", A, NX, &[]),
            ("x.default.pod.cluster.local", A, NX, &[]),
            ("10-1-0-5.default.pod.cluster.local", A, NX, &[]),
            // Names that exist without records of their own.
            ("default.svc.cluster.local", A, OK, &[]),
            ("quiet.svc.cluster.local", A, OK, &[]),
            ("nope.svc.cluster.local", A, NX, &[]),
            ("svc.cluster.local", A, OK, &[]),
            ("pod.cluster.local", A, OK, &[]),
            ("cluster.local", A, OK, &[]),
            ("dns-version.cluster.local", rtype::TXT, OK, &["1.1.0"]),
            ("dns-version.cluster.local", A, OK, &[]),
        ];
        for &(name, qtype, code, want) in cases {
            let p = respond(ask(&table, 0, name, qtype));
            let what = format!("{name} type {qtype}");
            assert_eq!(p.rcode, code, "{what}");
            assert_eq!(p.answer_data(), want, "{what}");
            assert!(p.aa(), "{what}: authoritative");
            assert!(!p.tc(), "{what}");
            for rr in &p.answers {
                // Answers echo the question's case (and have its owner).
                assert_eq!(
                    rr.name.trim_end_matches('.'),
                    name.trim_end_matches('.'),
                    "{what}"
                );
                if qtype != rtype::TXT {
                    assert_eq!(rr.ttl, DEFAULT_TTL, "{what}");
                }
            }
            if want.is_empty() {
                // Negative answers carry the SOA for negative caching.
                assert_eq!(p.authority.len(), 1, "{what}");
                assert_eq!(
                    p.authority[0].data, "ns.dns.cluster.local. hostmaster.cluster.local. 5",
                    "{what}"
                );
            }
        }
    }

    #[test]
    fn the_zone_apex_has_a_soa() {
        let p = respond(ask(&fixture(), 0, "Cluster.Local", rtype::SOA));
        assert_eq!(p.rcode, OK);
        assert_eq!(p.answers.len(), 1);
        assert_eq!(p.answers[0].name, "cluster.local.");
        assert!(p.authority.is_empty());
    }

    #[test]
    fn srv_records_for_named_ports() {
        let table = fixture();
        // (name, rcode, answers, additional)
        let cases: &[(&str, u16, &[&str], &[&str])] = &[
            (
                "_redis._tcp.redis-master.default.svc.cluster.local",
                OK,
                &["0 100 6379 redis-master.default.svc.cluster.local."],
                &["redis-master.default.svc.cluster.local. 10.0.0.11"],
            ),
            (
                "_REDIS._TCP.redis-master.default.svc.cluster.local",
                OK,
                &["0 100 6379 redis-master.default.svc.cluster.local."],
                &["redis-master.default.svc.cluster.local. 10.0.0.11"],
            ),
            (
                "_redis._udp.redis-master.default.svc.cluster.local",
                NX,
                &[],
                &[],
            ),
            (
                "_nope._tcp.redis-master.default.svc.cluster.local",
                NX,
                &[],
                &[],
            ),
            (
                "_dns._udp.web.default.svc.cluster.local",
                OK,
                &["0 100 53 web.default.svc.cluster.local."],
                &["web.default.svc.cluster.local. 10.0.0.20"],
            ),
            // The bare name lists every port, weights sharing 100.
            (
                "web.default.svc.cluster.local",
                OK,
                &[
                    "0 33 80 web.default.svc.cluster.local.",
                    "0 33 9090 web.default.svc.cluster.local.",
                    "0 33 53 web.default.svc.cluster.local.",
                ],
                &["web.default.svc.cluster.local. 10.0.0.20"],
            ),
            (
                "api.prod.svc.cluster.local",
                OK,
                &["0 100 443 api.prod.svc.cluster.local."],
                &["api.prod.svc.cluster.local. 10.0.0.30"],
            ),
            // Headless: one per ready endpoint, on the endpoint port, named
            // by hostname or dashed address.
            (
                "_pg._tcp.db.default.svc.cluster.local",
                OK,
                &[
                    "0 50 5432 db-0.db.default.svc.cluster.local.",
                    "0 50 5432 10-1-0-8.db.default.svc.cluster.local.",
                ],
                &[
                    "db-0.db.default.svc.cluster.local. 10.1.0.7",
                    "10-1-0-8.db.default.svc.cluster.local. 10.1.0.8",
                ],
            ),
            (
                "db-0.db.default.svc.cluster.local",
                OK,
                &["0 100 5432 db-0.db.default.svc.cluster.local."],
                &["db-0.db.default.svc.cluster.local. 10.1.0.7"],
            ),
        ];
        for &(name, code, want, extra) in cases {
            let p = respond(ask(&table, 0, name, SRV));
            assert_eq!(p.rcode, code, "{name}");
            assert_eq!(p.answer_data(), want, "{name}");
            let got: Vec<String> = p
                .additional
                .iter()
                .map(|r| format!("{} {}", r.name, r.data))
                .collect();
            assert_eq!(got, extra, "{name}");
        }
    }

    #[test]
    fn several_answers_rotate_with_the_query_id() {
        let table = fixture();
        let order = |id| respond(ask(&table, id, "db.default.svc.cluster.local", A)).answers;
        let first: Vec<_> = order(0).into_iter().map(|r| r.data).collect();
        let second: Vec<_> = order(1).into_iter().map(|r| r.data).collect();
        assert_eq!(first, ["10.1.0.7", "10.1.0.8"]);
        assert_eq!(second, ["10.1.0.8", "10.1.0.7"]);
        assert_eq!(order(2)[0].data, "10.1.0.7");
    }

    #[test]
    fn header_echoes_id_and_flags() {
        let p = respond(ask(&fixture(), 0xABCD, "web.default.svc.cluster.local", A));
        assert_eq!(p.id, 0xABCD);
        assert_eq!(p.flags & 0x0100, 0x0100, "RD copied");
        assert_eq!(p.flags & 0x0080, 0x0080, "RA set");
        assert_eq!(
            p.question.as_ref().unwrap().name.to_text(),
            "web.default.svc.cluster.local."
        );
    }

    #[test]
    fn outside_names_are_forwarded() {
        let table = fixture();
        for name in [
            "example.com",
            "cluster.local.example.com",
            "local",
            "svc.cluster.locals",
            ".",
        ] {
            match ask(&table, 1, name, A) {
                Reply::Forward(q) => assert_eq!(q.id, 1, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
        // Zone transfers are refused everywhere.
        for name in ["example.com", "cluster.local"] {
            assert_eq!(
                respond(ask(&table, 1, name, rtype::AXFR)).rcode,
                rcode::REFUSED
            );
        }
    }

    #[test]
    fn a_different_cluster_domain() {
        let t = ServiceTable::build(
            "edge.example",
            [service("ns", "s", Some([10, 9, 0, 1]), vec![], vec![])],
        )
        .unwrap();
        assert_eq!(
            respond(ask(&t, 0, "s.ns.svc.edge.example", A)).answer_data(),
            ["10.9.0.1"]
        );
        assert!(matches!(
            ask(&t, 0, "s.ns.svc.cluster.local", A),
            Reply::Forward(_)
        ));
    }

    fn big_headless(n: u8) -> ServiceTable {
        let eps = (0..n).map(|i| ep([10, 3, 0, i], None)).collect();
        ServiceTable::build(
            "cluster.local",
            [service(
                "default",
                "big",
                None,
                vec![ServicePort {
                    name: Some("p".into()),
                    protocol: Protocol::Tcp,
                    port: 1,
                    target_port: 1,
                }],
                eps,
            )],
        )
        .unwrap()
    }

    fn ask_with(
        t: &ServiceTable,
        name: &str,
        qtype: u16,
        edns: Option<u16>,
        tr: Transport,
    ) -> Vec<u8> {
        match answer(
            &query(0, name, qtype, edns),
            tr,
            t,
            &ResolverConfig::default(),
        ) {
            Reply::Respond(m) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncates_udp_answers_that_do_not_fit() {
        let name = "big.default.svc.cluster.local";
        let t = big_headless(40);
        // (edns payload, transport, expect TC, answers, max size)
        let cases: &[(Option<u16>, Transport, bool, usize, usize)] = &[
            (None, Transport::Udp, true, 0, 512),
            (Some(512), Transport::Udp, true, 0, 512),
            (Some(100), Transport::Udp, true, 0, 512),
            (Some(1232), Transport::Udp, false, 40, 1232),
            (None, Transport::Tcp, false, 40, 65_535),
        ];
        for &(edns, tr, tc, n, max) in cases {
            let m = ask_with(&t, name, A, edns, tr);
            let p = parse(&m);
            let what = format!("{edns:?} {tr:?}");
            assert_eq!(p.tc(), tc, "{what}");
            assert_eq!(p.answers.len(), n, "{what}");
            assert!(m.len() <= max, "{what}: {} bytes", m.len());
            assert_eq!(p.edns_payload, edns.map(|_| EDNS_PAYLOAD), "{what}");
            assert_eq!(
                p.question.as_ref().unwrap().name.to_text(),
                format!("{name}.")
            );
        }
        // The cap is ours, not the client's: 4096 offered, 1232 used.
        let t = big_headless(100);
        let m = ask_with(&t, name, A, Some(4096), Transport::Udp);
        assert!(parse(&m).tc() && m.len() <= 1232);
        let m = ask_with(&t, name, A, None, Transport::Tcp);
        assert_eq!(parse(&m).answers.len(), 100);
    }

    #[test]
    fn additional_records_are_dropped_before_truncating() {
        let t = big_headless(7);
        let m = ask_with(
            &t,
            "_p._tcp.big.default.svc.cluster.local",
            SRV,
            None,
            Transport::Udp,
        );
        let p = parse(&m);
        assert!(m.len() <= 512);
        assert!(!p.tc());
        assert_eq!(p.answers.len(), 7);
        assert!(p.additional.len() < 7, "{}", p.additional.len());
    }

    #[test]
    fn malformed_oversized_and_odd_queries() {
        let table = fixture();
        let cfg = ResolverConfig::default();
        let run = |m: &[u8]| answer(m, Transport::Udp, &table, &cfg);
        assert!(matches!(run(&[]), Reply::Ignore));
        assert!(matches!(run(&[0; 11]), Reply::Ignore));
        let mut response = query(3, "a.example", A, None);
        response[2] |= 0x80;
        assert!(
            matches!(run(&response), Reply::Ignore),
            "never answer a response"
        );

        let mut bad = query(0x1234, "a.example", A, None);
        bad.truncate(bad.len() - 2);
        let p = respond(run(&bad));
        assert_eq!((p.id, p.rcode), (0x1234, rcode::FORMERR));
        assert!(p.question.is_none());

        let mut loop_ = query(0x4321, "x", A, None);
        loop_.splice(12..14, [0xC0, 12]);
        assert_eq!(respond(run(&loop_)).rcode, rcode::FORMERR);

        let mut big = query(9, "a.example", A, Some(1232));
        big.resize(2000, 0);
        assert_eq!(respond(run(&big)).rcode, rcode::REFUSED);

        let mut notify = query(9, "a.example", A, None);
        notify[2] = 0x20;
        assert_eq!(respond(run(&notify)).rcode, rcode::NOTIMP);

        let mut v1 = query(9, "a.example", A, Some(1232));
        let at = v1.len() - 5;
        v1[at] = 1;
        let p = respond(run(&v1));
        assert_eq!(p.rcode, rcode::BADVERS);
        assert_eq!(p.edns_payload, Some(EDNS_PAYLOAD));

        let mut chaos = query(9, "web.default.svc.cluster.local", A, None);
        let at = chaos.len() - 1;
        chaos[at] = 3;
        assert_eq!(respond(run(&chaos)).rcode, rcode::REFUSED);
    }

    #[test]
    fn failure_echoes_the_query() {
        let q = parse_query(&query(77, "Example.COM", A, Some(4096)), MAX_QUERY_LEN).unwrap();
        let p = parse(&failure(&q, rcode::SERVFAIL, &ResolverConfig::default()));
        assert_eq!((p.id, p.rcode), (77, rcode::SERVFAIL));
        assert_eq!(p.question.as_ref().unwrap().name.to_text(), "Example.COM.");
        assert_eq!(p.edns_payload, Some(EDNS_PAYLOAD));
        assert!(!p.aa());
    }

    fn header_then(bytes: Vec<u8>) -> Vec<u8> {
        let mut m = vec![
            0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        ];
        m.extend(bytes);
        m
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1400)) {
            let table = fixture();
            let cfg = ResolverConfig::default();
            for tr in [Transport::Udp, Transport::Tcp] {
                if let Reply::Respond(m) = answer(&bytes, tr, &table, &cfg) {
                    prop_assert!(m.len() >= 12);
                    prop_assert!(tr == Transport::Tcp || m.len() <= usize::from(EDNS_PAYLOAD));
                }
            }
        }

        #[test]
        fn never_panics_past_a_valid_header(
            tail in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(0u8), Just(0xC0u8), Just(3u8), Just(b'a')],
                0..300,
            )
        ) {
            let table = fixture();
            let _ = answer(&header_then(tail), Transport::Udp, &table, &ResolverConfig::default());
        }

        #[test]
        fn cluster_names_of_any_case_resolve(mask in any::<u64>()) {
            let name: String = "redis-master.default.svc.cluster.local"
                .chars()
                .enumerate()
                .map(|(i, c)| if mask >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c })
                .collect();
            let p = respond(ask(&fixture(), 0, &name, A));
            prop_assert_eq!(p.answer_data(), vec!["10.0.0.11"]);
            prop_assert_eq!(p.answers[0].name.trim_end_matches('.'), name.as_str());
        }
    }
}
