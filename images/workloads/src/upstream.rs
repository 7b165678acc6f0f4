//! The upstream call of `outpost-http --upstream http://NAME:PORT/PATH`:
//! one bounded HTTP/1.1 GET to another Service, for chains such as
//! frontend -> backend -> store where each tier names the pod that
//! answered.
//!
//! Flow: [`Upstream::parse`] checks the URL once at start; per request,
//! [`call`] resolves the name ([`crate::dns`], since a static binary on a
//! scratch image has no working libc resolver; an IPv4 literal skips
//! DNS), connects to each address in turn (at most [`CONNECT_TIMEOUT`]
//! each), sends the GET and reads the answer (at most 64 KiB,
//! `MAX_ANSWER`), all within [`TOTAL_TIMEOUT`] of the start. It returns the
//! answer's body on a 200, else a one-line reason.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::dns::{self, ResolvConf};

/// Longest wait for one TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a whole upstream call takes (name lookup, connection, answer).
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read; the tiers answer a line each.
const MAX_ANSWER: u64 = 64 * 1024;

/// Where to call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    /// With its query, if any; `/` by default.
    pub path: String,
}

impl Upstream {
    /// `http://HOST[:PORT][/PATH]` (port 80 and path `/` by default).
    pub fn parse(url: &str) -> Result<Upstream, String> {
        let bad = |why: &str| format!("invalid upstream {url:?}: {why}");
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("expected http://NAME:PORT/PATH"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?;
                (h, port)
            }
            None => (authority, 80),
        };
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !host_ok {
            return Err(bad("the host must be a DNS name or an IPv4 address"));
        }
        if path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(bad("the path must not contain spaces"));
        }
        Ok(Upstream {
            host: host.to_ascii_lowercase(),
            port,
            path: path.to_string(),
        })
    }

    /// `NAME:PORT`, as failures name it.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A connection error as a short reason.
fn connect_reason(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => {
            format!("connect timed out after {}s", CONNECT_TIMEOUT.as_secs())
        }
        _ => format!("connect: {e}"),
    }
}

/// Calls `up`, reading the resolver configuration from `conf` when the
/// host is a name. `Ok`: the body of a 200 answer, trimmed; `Err`: why
/// not, in one line.
pub fn call(up: &Upstream, conf: impl FnOnce() -> ResolvConf) -> Result<String, String> {
    let start = Instant::now();
    let deadline = start + TOTAL_TIMEOUT;
    let addrs = match up.host.parse::<Ipv4Addr>() {
        Ok(ip) => vec![ip],
        Err(_) => dns::resolve(&up.host, &conf(), deadline).map_err(|e| e.to_string())?,
    };
    let mut last = String::from("no address");
    let mut stream = None;
    for ip in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            last = format!("no answer within {}s", TOTAL_TIMEOUT.as_secs());
            break;
        }
        match TcpStream::connect_timeout(
            &SocketAddr::from((ip, up.port)),
            CONNECT_TIMEOUT.min(left),
        ) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = connect_reason(&e),
        }
    }
    let mut stream = stream.ok_or(last)?;
    let timed_out = || format!("no answer within {}s", TOTAL_TIMEOUT.as_secs());
    let left =
        |d: Instant| Some(d.saturating_duration_since(Instant::now())).filter(|l| !l.is_zero());
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: outpost-http\r\nConnection: close\r\n\r\n",
        up.path,
        up.authority()
    );
    stream
        .set_write_timeout(Some(left(deadline).ok_or_else(timed_out)?))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let l = left(deadline).ok_or_else(timed_out)?;
        stream
            .set_read_timeout(Some(l))
            .map_err(|e| format!("read: {e}"))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&chunk[..n]);
                if answer.len() as u64 > MAX_ANSWER {
                    return Err(format!("answer over {MAX_ANSWER} bytes"));
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(timed_out());
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    parse_answer(&answer)
}

/// The body of a 200 answer (trimmed), else the status and the body's
/// first line.
pub fn parse_answer(answer: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
        .ok_or("malformed answer: no end of headers")?;
    let status = head
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.get(2..5))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("malformed answer: no HTTP/1.x status line")?;
    let body = body.trim();
    if status == 200 {
        Ok(body.to_string())
    } else {
        Err(format!(
            "answered {status}: {}",
            body.lines().next().unwrap_or("").trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let up = |host: &str, port, path: &str| {
            Ok(Upstream {
                host: host.into(),
                port,
                path: path.into(),
            })
        };
        let cases: &[(&str, Result<Upstream, String>)] = &[
            ("http://backend:8080/", up("backend", 8080, "/")),
            ("http://Store.default.svc", up("store.default.svc", 80, "/")),
            ("http://127.0.0.1:9/a/b?c=d", up("127.0.0.1", 9, "/a/b?c=d")),
            ("https://backend/", Err("invalid upstream \"https://backend/\": expected http://NAME:PORT/PATH".into())),
            ("backend:80", Err("invalid upstream \"backend:80\": expected http://NAME:PORT/PATH".into())),
            ("http://:80/", Err("invalid upstream \"http://:80/\": the host must be a DNS name or an IPv4 address".into())),
            ("http://a_b/", Err("invalid upstream \"http://a_b/\": the host must be a DNS name or an IPv4 address".into())),
            ("http://user@b/", Err("invalid upstream \"http://user@b/\": the host must be a DNS name or an IPv4 address".into())),
            ("http://b:0/", Err("invalid upstream \"http://b:0/\": the port must be a number from 1 to 65535".into())),
            ("http://b:99999/", Err("invalid upstream \"http://b:99999/\": the port must be a number from 1 to 65535".into())),
            ("http://b/x y", Err("invalid upstream \"http://b/x y\": the path must not contain spaces".into())),
        ];
        for (url, want) in cases {
            assert_eq!(&Upstream::parse(url), want, "{url}");
        }
    }

    #[test]
    fn reads_answers() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nstore-z\n",
                Ok("store-z"),
            ),
            ("HTTP/1.0 200 OK\n\nx -> y\n", Ok("x -> y")),
            (
                "HTTP/1.1 502 Bad Gateway\r\n\r\nupstream store:80: connection refused\n",
                Err("answered 502: upstream store:80: connection refused"),
            ),
            ("HTTP/1.1 503 x\r\n\r\n", Err("answered 503: ")),
            (
                "HTTP/1.1 200 OK\r\n",
                Err("malformed answer: no end of headers"),
            ),
            (
                "SSH-2.0\r\n\r\n",
                Err("malformed answer: no HTTP/1.x status line"),
            ),
            ("", Err("malformed answer: no end of headers")),
        ];
        for (raw, want) in cases {
            let want = want.map(str::to_string).map_err(str::to_string);
            assert_eq!(parse_answer(raw.as_bytes()), want, "{raw:?}");
        }
    }
}
