//! A minimal DNS A-record client (RFC 1035 over UDP), std only.
//!
//! Why: the workload binaries are static and run on `FROM scratch` images,
//! where glibc's resolver has no NSS modules to load and so cannot look
//! names up. This resolves the way a pod's libc would, from
//! `/etc/resolv.conf`: the `nameserver`s (at most three, as glibc's
//! `MAXNS`), the search list (`search`, or `domain`; the last such line
//! wins) and `options ndots:N timeout:N attempts:N`.
//!
//! Flow: [`candidates`] lists the names to try (glibc and musl order: a
//! name with at least `ndots` dots as given first, then with each search
//! domain; one with fewer dots with the search domains first; a name
//! ending in `.` only as given). For each, [`encode_query`] builds the
//! question, it goes to each server in turn (`attempts` rounds), and
//! [`parse_response`] reads the answer: addresses, no such name (try the
//! next candidate), or an error (try the next server). Everything is
//! bounded: names by RFC 1035's 255 bytes, compression pointers by
//! [`MAX_POINTERS`] and by pointing only backwards, the whole lookup by the
//! caller's deadline. Query ids are not cryptographically random (a test
//! workload; the answer must also echo the question).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// The file a pod's resolver reads.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// glibc's `MAXNS`: nameservers past the third are ignored.
const MAX_NAMESERVERS: usize = 3;
/// glibc's cap on `ndots`.
const MAX_NDOTS: u8 = 15;
/// glibc's caps on `timeout` (`RES_MAXRETRANS`) and `attempts` (`RES_MAXRETRY`).
const MAX_TIMEOUT_SECS: u64 = 30;
const MAX_ATTEMPTS: u32 = 5;
/// glibc's `MAXDNSRCH`: search domains past the sixth are ignored.
const MAX_SEARCH: usize = 6;
/// RFC 1035 2.3.4: a name is at most 255 bytes on the wire, a label 63.
const MAX_NAME: usize = 255;
const MAX_LABEL: usize = 63;
/// Compression pointers followed in one name before it is called a loop.
pub const MAX_POINTERS: usize = 16;
/// The largest resolv.conf read (real ones are a few lines).
const MAX_RESOLV_CONF: u64 = 64 * 1024;
/// RFC 1035 4.2.1: without EDNS, UDP answers are at most 512 bytes.
const MAX_UDP: usize = 512;

/// What `/etc/resolv.conf` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<SocketAddr>,
    pub search: Vec<String>,
    pub ndots: u8,
    /// How long to wait for one server's answer.
    pub timeout: Duration,
    /// Rounds over the servers.
    pub attempts: u32,
}

impl Default for ResolvConf {
    /// glibc's defaults: the local server, no search list, ndots 1,
    /// 5 s, 2 attempts.
    fn default() -> Self {
        ResolvConf {
            nameservers: vec![SocketAddr::from(([127, 0, 0, 1], 53))],
            search: Vec::new(),
            ndots: 1,
            timeout: Duration::from_secs(5),
            attempts: 2,
        }
    }
}

impl ResolvConf {
    /// Parses resolv.conf text as glibc does: unknown lines and options
    /// are ignored, `#` and `;` start comments, and without a usable
    /// `nameserver` the local one is used.
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf {
            nameservers: Vec::new(),
            ..ResolvConf::default()
        };
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    let ip = words
                        .next()
                        .and_then(|w| w.parse::<std::net::IpAddr>().ok());
                    if let Some(ip) = ip {
                        if conf.nameservers.len() < MAX_NAMESERVERS {
                            conf.nameservers.push(SocketAddr::new(ip, 53));
                        }
                    }
                }
                Some("search") => {
                    conf.search = words
                        .map(|w| w.trim_end_matches('.').to_ascii_lowercase())
                        .filter(|w| !w.is_empty())
                        .take(MAX_SEARCH)
                        .collect();
                }
                Some("domain") => {
                    conf.search = words
                        .next()
                        .map(|w| w.trim_end_matches('.').to_ascii_lowercase())
                        .filter(|w| !w.is_empty())
                        .into_iter()
                        .collect();
                }
                Some("options") => {
                    for opt in words {
                        let (key, value) = opt.split_once(':').unwrap_or((opt, ""));
                        let Ok(n) = value.parse::<u64>() else {
                            continue;
                        };
                        match key {
                            "ndots" => {
                                conf.ndots =
                                    u8::try_from(n.min(u64::from(MAX_NDOTS))).unwrap_or(MAX_NDOTS);
                            }
                            "timeout" => {
                                conf.timeout = Duration::from_secs(n.clamp(1, MAX_TIMEOUT_SECS));
                            }
                            "attempts" => {
                                conf.attempts = u32::try_from(n.clamp(1, u64::from(MAX_ATTEMPTS)))
                                    .unwrap_or(MAX_ATTEMPTS);
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if conf.nameservers.is_empty() {
            conf.nameservers = ResolvConf::default().nameservers;
        }
        conf
    }

    /// Reads [`RESOLV_CONF`] (bounded); a missing or unreadable file gives
    /// the defaults, as glibc.
    pub fn load() -> ResolvConf {
        use std::io::Read;
        let mut text = String::new();
        let read = std::fs::File::open(RESOLV_CONF)
            .and_then(|f| f.take(MAX_RESOLV_CONF).read_to_string(&mut text));
        match read {
            Ok(_) => ResolvConf::parse(&text),
            Err(_) => ResolvConf::default(),
        }
    }
}

/// The names to ask for, in order (see the module doc).
pub fn candidates(name: &str, conf: &ResolvConf) -> Vec<String> {
    if let Some(absolute) = name.strip_suffix('.') {
        return vec![absolute.to_string()];
    }
    let searched = conf.search.iter().map(|d| format!("{name}.{d}"));
    let dots = name.bytes().filter(|b| *b == b'.').count();
    if dots >= usize::from(conf.ndots) {
        std::iter::once(name.to_string()).chain(searched).collect()
    } else {
        searched.chain(std::iter::once(name.to_string())).collect()
    }
}

/// Why a query could not be built or an answer could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// The name cannot be asked for (empty label, label over 63 bytes,
    /// name over 255).
    BadName(String),
    /// The answer does not parse; what is wrong with it.
    Malformed(&'static str),
    /// Not the answer to our query (another id, or another question).
    NotOurs,
    /// The server set TC: the answer did not fit in UDP (no TCP here).
    Truncated,
    /// The server failed: its RCODE (2 SERVFAIL, 5 REFUSED, ...).
    Rcode(u8),
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsError::BadName(why) => write!(f, "bad name: {why}"),
            DnsError::Malformed(why) => write!(f, "malformed answer: {why}"),
            DnsError::NotOurs => f.write_str("answer to another query"),
            DnsError::Truncated => f.write_str("answer truncated (too large for UDP)"),
            DnsError::Rcode(2) => f.write_str("server failure (SERVFAIL)"),
            DnsError::Rcode(5) => f.write_str("query refused (REFUSED)"),
            DnsError::Rcode(n) => write!(f, "server answered RCODE {n}"),
        }
    }
}

impl std::error::Error for DnsError {}

/// What a server said about a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Addresses(Vec<Ipv4Addr>),
    /// NXDOMAIN.
    NoSuchName,
    /// The name exists but has no A record.
    NoAddress,
}

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;

/// A standard query (recursion desired) for the A records of `name`.
pub fn encode_query(id: u16, name: &str) -> Result<Vec<u8>, DnsError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut out = Vec::with_capacity(18 + name.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00]); // RD
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    if name.is_empty() {
        return Err(DnsError::BadName("empty name".into()));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(DnsError::BadName(format!("{name:?} has an empty label")));
        }
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| usize::from(*l) <= MAX_LABEL)
            .ok_or_else(|| DnsError::BadName(format!("label {label:?} is over 63 bytes")))?;
        out.push(len);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    if out.len() - 12 > MAX_NAME {
        return Err(DnsError::BadName(format!("{name:?} is over 255 bytes")));
    }
    out.extend_from_slice(&TYPE_A.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(out)
}

fn u16_at(buf: &[u8], at: usize) -> Result<u16, DnsError> {
    buf.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(DnsError::Malformed("record runs past the end"))
}

/// Reads the name at `start` (following compression pointers, only
/// backwards and at most [`MAX_POINTERS`]); returns it in lowercase,
/// dot-separated, and the offset just past it where it started.
pub fn read_name(buf: &[u8], start: usize) -> Result<(String, usize), DnsError> {
    let mut name = String::new();
    let mut pos = start;
    let mut end = None;
    let mut pointers = 0;
    let mut wire_len = 1;
    loop {
        let b = *buf
            .get(pos)
            .ok_or(DnsError::Malformed("name runs past the end"))?;
        match b & 0xC0 {
            0x00 if b == 0 => {
                return Ok((name, end.unwrap_or(pos + 1)));
            }
            0x00 => {
                let len = usize::from(b);
                let label = buf
                    .get(pos + 1..pos + 1 + len)
                    .ok_or(DnsError::Malformed("label runs past the end"))?;
                wire_len += 1 + len;
                if wire_len > MAX_NAME {
                    return Err(DnsError::Malformed("name over 255 bytes"));
                }
                if !name.is_empty() {
                    name.push('.');
                }
                name.extend(label.iter().map(|c| char::from(c.to_ascii_lowercase())));
                pos += 1 + len;
            }
            0xC0 => {
                let low = *buf
                    .get(pos + 1)
                    .ok_or(DnsError::Malformed("pointer runs past the end"))?;
                let target = (usize::from(b & 0x3F) << 8) | usize::from(low);
                if target >= pos {
                    return Err(DnsError::Malformed(
                        "compression pointer does not point back",
                    ));
                }
                pointers += 1;
                if pointers > MAX_POINTERS {
                    return Err(DnsError::Malformed("too many compression pointers"));
                }
                end.get_or_insert(pos + 2);
                pos = target;
            }
            _ => return Err(DnsError::Malformed("reserved label type")),
        }
    }
}

/// Reads the answer to query `id` for `name` (case-insensitive).
pub fn parse_response(buf: &[u8], id: u16, name: &str) -> Result<Answer, DnsError> {
    if buf.len() < 12 {
        return Err(DnsError::Malformed("shorter than a header"));
    }
    let flags = u16_at(buf, 2)?;
    if u16_at(buf, 0)? != id || flags & 0x8000 == 0 {
        return Err(DnsError::NotOurs);
    }
    let (questions, answers) = (u16_at(buf, 4)?, u16_at(buf, 6)?);
    if questions != 1 {
        return Err(DnsError::NotOurs);
    }
    let (asked, mut pos) = read_name(buf, 12)?;
    let want = name.strip_suffix('.').unwrap_or(name);
    if !asked.eq_ignore_ascii_case(want)
        || u16_at(buf, pos)? != TYPE_A
        || u16_at(buf, pos + 2)? != CLASS_IN
    {
        return Err(DnsError::NotOurs);
    }
    pos += 4;
    if flags & 0x0200 != 0 {
        return Err(DnsError::Truncated);
    }
    match u8::try_from(flags & 0x000F).unwrap_or(0) {
        0 => {}
        3 => return Ok(Answer::NoSuchName),
        rcode => return Err(DnsError::Rcode(rcode)),
    }
    let mut addrs = Vec::new();
    // Every A record of the answer section counts, whatever its owner: a
    // CNAME chain's A records are owned by its last name.
    for _ in 0..answers {
        let (_, at) = read_name(buf, pos)?;
        let (kind, class) = (u16_at(buf, at)?, u16_at(buf, at + 2)?);
        let len = usize::from(u16_at(buf, at + 8)?);
        let data = buf
            .get(at + 10..at + 10 + len)
            .ok_or(DnsError::Malformed("record data runs past the end"))?;
        if kind == TYPE_A && class == CLASS_IN {
            let octets: [u8; 4] = data
                .try_into()
                .map_err(|_| DnsError::Malformed("A record data is not 4 bytes"))?;
            addrs.push(Ipv4Addr::from(octets));
        }
        pos = at + 10 + len;
    }
    Ok(if addrs.is_empty() {
        Answer::NoAddress
    } else {
        Answer::Addresses(addrs)
    })
}

/// Why a name did not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// Every candidate is unknown (or has no address).
    NotFound { name: String, tried: Vec<String> },
    /// Some server failed or did not answer in time; the last reason.
    Failed { name: String, reason: String },
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::NotFound { name, tried } => {
                write!(
                    f,
                    "cannot resolve {name}: no such host (tried {})",
                    tried.join(", ")
                )
            }
            ResolveError::Failed { name, reason } => write!(f, "cannot resolve {name}: {reason}"),
        }
    }
}

impl std::error::Error for ResolveError {}

/// A query id: clock, process id and a per-query salt mixed (see the
/// module doc).
fn query_id(salt: u32) -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed = nanos ^ std::process::id().rotate_left(16) ^ salt.wrapping_mul(0x9E37_79B9);
    let [a, b, c, d] = mixed.to_be_bytes();
    u16::from_be_bytes([a ^ c, b ^ d])
}

/// One question to one server, waiting until `until` at most.
fn ask(server: SocketAddr, name: &str, until: Instant, salt: u32) -> Result<Answer, String> {
    let id = query_id(salt);
    let query = encode_query(id, name).map_err(|e| e.to_string())?;
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local).map_err(|e| format!("socket: {e}"))?;
    sock.connect(server)
        .and_then(|()| sock.send(&query))
        .map_err(|e| format!("send to {server}: {e}"))?;
    let mut buf = [0u8; MAX_UDP];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no answer from {server}"));
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| format!("socket: {e}"))?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("no answer from {server}"));
            }
            Err(e) => return Err(format!("{server}: {e}")),
        };
        match parse_response(&buf[..n], id, name) {
            // A stray datagram: keep waiting for ours.
            Err(DnsError::NotOurs) => {}
            Err(e) => return Err(format!("{server}: {e}")),
            Ok(a) => return Ok(a),
        }
    }
}

/// Resolves `name` to its IPv4 addresses by `conf`, giving up at
/// `deadline`. An IPv4 literal is returned as it is.
pub fn resolve(
    name: &str,
    conf: &ResolvConf,
    deadline: Instant,
) -> Result<Vec<Ipv4Addr>, ResolveError> {
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        return Ok(vec![ip]);
    }
    let tried = candidates(name, conf);
    let mut failure: Option<String> = None;
    let mut salt = 0u32;
    for candidate in &tried {
        'servers: for _ in 0..conf.attempts.max(1) {
            for server in &conf.nameservers {
                let now = Instant::now();
                if now >= deadline {
                    let reason = failure.unwrap_or_else(|| "no answer in time".into());
                    return Err(ResolveError::Failed {
                        name: name.to_string(),
                        reason: format!("{reason} (gave up at the deadline)"),
                    });
                }
                salt = salt.wrapping_add(1);
                match ask(*server, candidate, deadline.min(now + conf.timeout), salt) {
                    Ok(Answer::Addresses(a)) => return Ok(a),
                    Ok(Answer::NoSuchName | Answer::NoAddress) => break 'servers,
                    Err(e) => failure = Some(e),
                }
            }
        }
    }
    match failure {
        Some(reason) => Err(ResolveError::Failed {
            name: name.to_string(),
            reason,
        }),
        None => Err(ResolveError::NotFound {
            name: name.to_string(),
            tried,
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests;
