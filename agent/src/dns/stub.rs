//! How the agent itself finds the controller by name, without NSS.
//!
//! A static binary has no working `getaddrinfo` for names (glibc's NSS
//! modules cannot be loaded), so `--controller controller.example.net`
//! would fail on a scratch image or a minimal device image. This is the
//! part of a stub resolver the agent needs, as glibc does it with
//! `hosts: files dns`:
//!
//! 1. an address literal (`10.0.0.5:7443`, `[fd00::5]:7443`) is used as is;
//! 2. `/etc/hosts` (first matching line, names compared ignoring case);
//! 3. the node's nameservers from `/etc/resolv.conf` (the same parse the
//!    pod resolver uses, [`super::resolv`]), in order, asked for A and then
//!    AAAA over UDP with a deadline per server, the name tried as given
//!    (the controller's address is a full name; no search list).
//!
//! Answers are checked before they are used: the id and the question must
//! be ours, the response bit set, the records bounded by the message; only
//! IN A and IN AAAA records of the answer section are taken (a CNAME chain
//! comes with its final addresses, as recursive resolvers send it).
//! Everything here but [`lookup`] is without I/O.

use super::wire::{class, rcode, rtype, Name};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// The hosts file.
pub const HOSTS: &str = "/etc/hosts";
/// How long one nameserver gets for one question.
const PER_SERVER: Duration = Duration::from_secs(2);
/// Largest UDP answer read.
const MAX_ANSWER: usize = 4096;
/// Hosts files and resolv.conf are small; more is not one.
const MAX_FILE: u64 = 1024 * 1024;

/// Why a name did not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("{0:?} is not a valid host name")]
    BadName(String),
    #[error("{0} does not exist (NXDOMAIN from {1})")]
    NoSuchName(String, SocketAddr),
    #[error("{name} did not resolve: {why}")]
    Failed { name: String, why: String },
}

/// A query for `name` of type `qtype` with recursion desired.
pub fn query(id: u16, name: &Name, qtype: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + name.as_wire().len() + 4);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    out.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(name.as_wire());
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&class::IN.to_be_bytes());
    out
}

/// What an answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The addresses (possibly none: the name exists without that type).
    Addresses(Vec<IpAddr>),
    NoSuchName,
    /// SERVFAIL, REFUSED and the like: ask the next server.
    Failure(u16),
    /// Truncated: the answer did not fit in UDP.
    Truncated,
}

fn u16_at(msg: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]))
}

/// The offset after the (possibly compressed) name at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    // A name is at most 127 labels; a loop of pointers is not followed
    // (only the first pointer matters for skipping).
    for _ in 0..128 {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xC0 == 0xC0 => return msg.get(at + 1).map(|_| at + 2),
            l if l & 0xC0 != 0 => return None,
            l => at += 1 + usize::from(l),
        }
    }
    None
}

/// Reads the answer to [`query`]`(id, name, qtype)`; `None` when `msg` is
/// not that answer (wrong id or question, not a response, malformed).
pub fn parse_answer(msg: &[u8], id: u16, name: &Name, qtype: u16) -> Option<Answer> {
    if u16_at(msg, 0)? != id {
        return None;
    }
    let flags = u16_at(msg, 2)?;
    if flags & 0x8000 == 0 {
        return None;
    }
    if u16_at(msg, 4)? != 1 {
        return None;
    }
    let answers = u16_at(msg, 6)?;
    // The question must be ours (names compared ignoring case).
    let qname = name.as_wire();
    let q = msg.get(12..12 + qname.len())?;
    if !q.eq_ignore_ascii_case(qname) {
        return None;
    }
    let mut at = 12 + qname.len();
    if u16_at(msg, at)? != qtype || u16_at(msg, at + 2)? != class::IN {
        return None;
    }
    at += 4;
    if flags & 0x0200 != 0 {
        return Some(Answer::Truncated);
    }
    match flags & 0x000F {
        rcode::NOERROR => {}
        rcode::NXDOMAIN => return Some(Answer::NoSuchName),
        other => return Some(Answer::Failure(other)),
    }
    let mut out = Vec::new();
    for _ in 0..answers {
        at = skip_name(msg, at)?;
        let rtype = u16_at(msg, at)?;
        let rclass = u16_at(msg, at + 2)?;
        let len = usize::from(u16_at(msg, at + 8)?);
        let data = msg.get(at + 10..at + 10 + len)?;
        at += 10 + len;
        if rclass != class::IN || rtype != qtype {
            continue;
        }
        match (rtype, data.len()) {
            (rtype::A, 4) => out.push(IpAddr::V4(Ipv4Addr::new(
                data[0], data[1], data[2], data[3],
            ))),
            (rtype::AAAA, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(data);
                out.push(IpAddr::V6(Ipv6Addr::from(b)));
            }
            _ => return None,
        }
    }
    Some(Answer::Addresses(out))
}

/// The addresses `/etc/hosts` text gives `name` (the first line naming it,
/// as glibc's `files` source answers).
pub fn from_hosts(text: &str, name: &str) -> Vec<IpAddr> {
    let name = name.trim_end_matches('.');
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(ip) = fields.next().and_then(|a| a.parse::<IpAddr>().ok()) else {
            continue;
        };
        if fields.any(|n| n.eq_ignore_ascii_case(name)) {
            return vec![ip];
        }
    }
    Vec::new()
}

/// Splits `host:port` (`[v6]:port` for IPv6 literals).
pub fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host, port.parse().ok()?))
}

/// Resolves `addr` (`host:port`) as the module docs say, with the hosts
/// file at `hosts` and nameservers from the resolv.conf at `resolv_conf`.
pub async fn lookup(
    addr: &str,
    hosts: &std::path::Path,
    resolv_conf: &std::path::Path,
) -> Result<Vec<SocketAddr>, LookupError> {
    let read = |p: &std::path::Path| outpost_proto::files::read_bounded(p, MAX_FILE).ok();
    let hosts = read(hosts).unwrap_or_default();
    let conf = read(resolv_conf)
        .map(|t| super::parse_resolv_conf(&t))
        .unwrap_or_default();
    lookup_with(addr, &hosts, &super::upstreams(&conf, None)).await
}

/// [`lookup`] with the hosts file's text and the nameservers given.
pub async fn lookup_with(
    addr: &str,
    hosts: &str,
    servers: &[SocketAddr],
) -> Result<Vec<SocketAddr>, LookupError> {
    let (host, port) =
        split_host_port(addr).ok_or_else(|| LookupError::BadName(addr.to_string()))?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let from_file = from_hosts(hosts, host);
    if !from_file.is_empty() {
        return Ok(from_file
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect());
    }
    let name = Name::from_text(host).ok_or_else(|| LookupError::BadName(host.to_string()))?;
    let mut why = String::from("no nameserver");
    for &server in servers {
        for qtype in [rtype::A, rtype::AAAA] {
            match ask(server, &name, qtype).await {
                Ok(Answer::Addresses(ips)) if !ips.is_empty() => {
                    return Ok(ips
                        .into_iter()
                        .map(|ip| SocketAddr::new(ip, port))
                        .collect());
                }
                Ok(Answer::Addresses(_)) => why = format!("{server} has no address for it"),
                Ok(Answer::NoSuchName) => {
                    return Err(LookupError::NoSuchName(host.to_string(), server))
                }
                Ok(Answer::Failure(code)) => {
                    why = format!("{server} answered rcode {code}");
                    break;
                }
                Ok(Answer::Truncated) => why = format!("{server} sent a truncated answer"),
                Err(e) => {
                    why = format!("{server}: {e}");
                    break;
                }
            }
        }
    }
    Err(LookupError::Failed {
        name: host.to_string(),
        why,
    })
}

/// One question to one server over UDP, within [`PER_SERVER`].
async fn ask(server: SocketAddr, name: &Name, qtype: u16) -> Result<Answer, String> {
    let bind: SocketAddr = if server.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| e.to_string())?;
    sock.connect(server).await.map_err(|e| e.to_string())?;
    let id: u16 = rand::random();
    sock.send(&query(id, name, qtype))
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; MAX_ANSWER];
    let wait = async {
        loop {
            let n = sock.recv(&mut buf).await.map_err(|e| e.to_string())?;
            // Anything else arriving on the socket is ignored.
            if let Some(a) = parse_answer(&buf[..n], id, name, qtype) {
                return Ok(a);
            }
        }
    };
    tokio::time::timeout(PER_SERVER, wait)
        .await
        .map_err(|_| format!("no answer within {}s", PER_SERVER.as_secs()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_text(s).unwrap()
    }

    /// An answer to `query(id, name, qtype)` with `records` (type, data),
    /// owner names compressed to the question; `flags` low bits = rcode.
    fn answer(id: u16, q: &Name, qtype: u16, flags: u16, records: &[(u16, &[u8])]) -> Vec<u8> {
        let mut m = query(id, q, qtype);
        m[2..4].copy_from_slice(&(0x8180u16 | flags).to_be_bytes());
        m[6..8].copy_from_slice(&u16::try_from(records.len()).unwrap().to_be_bytes());
        for (t, data) in records {
            m.extend_from_slice(&[0xC0, 12]);
            m.extend_from_slice(&t.to_be_bytes());
            m.extend_from_slice(&class::IN.to_be_bytes());
            m.extend_from_slice(&30u32.to_be_bytes());
            m.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
            m.extend_from_slice(data);
        }
        m
    }

    #[test]
    fn answers_are_read_and_checked() {
        let q = name("controller.example.net");
        // A CNAME, then the address it leads to.
        let cname_target = [3, b'l', b'b', b'1', 0xC0, 12];
        let m = answer(
            7,
            &q,
            rtype::A,
            0,
            &[(5, &cname_target), (rtype::A, &[10, 0, 0, 5])],
        );
        assert_eq!(
            parse_answer(&m, 7, &q, rtype::A),
            Some(Answer::Addresses(vec!["10.0.0.5".parse().unwrap()]))
        );
        // Case differs in the echoed question: still ours (0x20 mixing).
        let upper = name("CONTROLLER.example.NET");
        assert!(parse_answer(&m, 7, &upper, rtype::A).is_some());
        // Not ours: another id, another name, another type, a query.
        assert_eq!(parse_answer(&m, 8, &q, rtype::A), None);
        assert_eq!(
            parse_answer(&m, 7, &name("other.example.net"), rtype::A),
            None
        );
        assert_eq!(parse_answer(&m, 7, &q, rtype::AAAA), None);
        assert_eq!(parse_answer(&query(7, &q, rtype::A), 7, &q, rtype::A), None);
        let v6 = answer(
            9,
            &q,
            rtype::AAAA,
            0,
            &[(
                rtype::AAAA,
                &[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5],
            )],
        );
        assert_eq!(
            parse_answer(&v6, 9, &q, rtype::AAAA),
            Some(Answer::Addresses(vec!["fd00::5".parse().unwrap()]))
        );
        assert_eq!(
            parse_answer(&answer(1, &q, rtype::A, 3, &[]), 1, &q, rtype::A),
            Some(Answer::NoSuchName)
        );
        assert_eq!(
            parse_answer(&answer(1, &q, rtype::A, 2, &[]), 1, &q, rtype::A),
            Some(Answer::Failure(2))
        );
        assert_eq!(
            parse_answer(&answer(1, &q, rtype::A, 0x0200, &[]), 1, &q, rtype::A),
            Some(Answer::Truncated)
        );
        // An A record of the wrong length is malformed.
        assert_eq!(
            parse_answer(
                &answer(1, &q, rtype::A, 0, &[(rtype::A, &[1, 2, 3])]),
                1,
                &q,
                rtype::A
            ),
            None
        );
    }

    #[test]
    fn truncated_and_hostile_answers_never_panic() {
        let q = name("controller.example.net");
        let m = answer(7, &q, rtype::A, 0, &[(rtype::A, &[10, 0, 0, 5])]);
        for cut in 0..m.len() {
            assert!(
                parse_answer(&m[..cut], 7, &q, rtype::A).is_none(),
                "cut {cut}"
            );
        }
        // A count promising more records than there are.
        let mut lying = m.clone();
        lying[6..8].copy_from_slice(&500u16.to_be_bytes());
        assert_eq!(parse_answer(&lying, 7, &q, rtype::A), None);
        // A label with reserved high bits.
        let mut bad = m;
        let rr = 12 + q.as_wire().len() + 4;
        bad[rr] = 0x80;
        assert_eq!(parse_answer(&bad, 7, &q, rtype::A), None);
    }

    #[test]
    fn hosts_file_and_addresses() {
        let hosts = "127.0.0.1 localhost\n# 10.9.9.9 controller\n10.0.0.7  ctl controller.Example.net # the controller\nfd00::7 ctl6\n";
        assert_eq!(
            from_hosts(hosts, "controller.example.net."),
            vec!["10.0.0.7".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            from_hosts(hosts, "ctl6"),
            vec!["fd00::7".parse::<IpAddr>().unwrap()]
        );
        assert!(from_hosts(hosts, "controller").is_empty());
        assert_eq!(
            split_host_port("ctl.example.net:7443"),
            Some(("ctl.example.net", 7443))
        );
        assert_eq!(split_host_port("[fd00::5]:7443"), Some(("fd00::5", 7443)));
        assert_eq!(split_host_port("no-port"), None);
        assert_eq!(split_host_port("x:99999"), None);
    }

    /// A real exchange on loopback: a nameserver that answers A for one
    /// name and NXDOMAIN for the rest, named by a resolv.conf file.
    #[tokio::test]
    async fn lookup_asks_the_nameservers_of_resolv_conf() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let at = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = server.recv_from(&mut buf).await {
                let q = super::super::wire::parse_query(&buf[..n], 512).unwrap();
                let known = q.question.name.eq_ignore_case(&name("controller.test"));
                let id = u16::from_be_bytes([buf[0], buf[1]]);
                let reply = match (known, q.question.qtype) {
                    (true, rtype::A) => answer(
                        id,
                        &q.question.name,
                        rtype::A,
                        0,
                        &[(rtype::A, &[127, 0, 0, 9])],
                    ),
                    (true, t) => answer(id, &q.question.name, t, 0, &[]),
                    (false, t) => answer(id, &q.question.name, t, 3, &[]),
                };
                server.send_to(&reply, from).await.unwrap();
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "127.0.0.1 localhost\n10.1.2.3 from-hosts\n").unwrap();
        let nowhere = dir.path().join("missing-resolv.conf");
        assert_eq!(
            lookup("from-hosts:7443", &hosts, &nowhere).await.unwrap(),
            vec!["10.1.2.3:7443".parse().unwrap()]
        );
        assert_eq!(
            lookup("127.0.0.5:7443", &hosts, &nowhere).await.unwrap(),
            vec!["127.0.0.5:7443".parse().unwrap()]
        );
        let got = lookup_with("controller.test:7443", "", &[at])
            .await
            .unwrap();
        assert_eq!(got, vec!["127.0.0.9:7443".parse().unwrap()]);
        let missing = lookup_with("nowhere.test:7443", "", &[at])
            .await
            .unwrap_err();
        assert!(matches!(missing, LookupError::NoSuchName(..)), "{missing}");
    }
}
