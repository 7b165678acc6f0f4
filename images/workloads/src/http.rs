//! `outpost-http`: a tiny HTTP/1.1 server that answers with its pod name.
//!
//! Every GET answers `<pod name>\n`; with `--upstream URL` (or
//! `$UPSTREAM`), a GET of `/` calls that URL ([`crate::upstream`]) and
//! answers `<pod name> -> <upstream's answer>\n`, so a chain of tiers
//! answers `frontend-x -> backend-y -> store-z`, or 502 with a one-line
//! reason (`upstream store:80: connection refused`). `/healthz` answers `ok\n` (200) or
//! `failing\n` (500); `/fail` flips between the two so a test can make
//! liveness and readiness probes fail and then recover. `outpost-http --probe`
//! asks the local server's `/healthz` and exits 0 or 1, for exec probes.
//!
//! Flow: the accept loop hands each connection to its own thread (at most
//! `--max-connections`, beyond that the client gets a 503), which reads one
//! request head of bounded size with a timeout, [`respond`]s, and closes the
//! connection. [`respond`] is pure so the routing is unit-tested without
//! sockets.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::cli::{self, Flag, Flags, Parsed, UsageError};
use crate::dns::ResolvConf;
use crate::upstream::{self, Upstream};

pub const USAGE: &str = "\
outpost-http: answers every GET with the pod name (test workload)

Usage: outpost-http [--port P] [--max-connections N] [--upstream URL]
       outpost-http --probe [--port P]
       outpost-http --once --upstream URL

  GET /healthz   200 'ok', or 500 'failing' after /fail
  GET /fail      toggles /healthz between ok and failing
  GET /          with --upstream: 200 '<pod name> -> <upstream's answer>',
                 or 502 'upstream NAME:PORT: <why>' (connect 2 s, total 5 s)
  GET <other>    200 with the pod name ($POD_NAME, else the hostname)
  UDP on P       each datagram is answered '<pod name> <datagram>'

Options:
  --port P              listen on 0.0.0.0:P (default $PORT, else 8080)
  --upstream URL        http://NAME:PORT/PATH to call on GET / (default
                        $UPSTREAM); NAME resolves by /etc/resolv.conf
  --max-connections N   connections served at once; more get 503 (default 64)
  --probe               GET /healthz on 127.0.0.1:P; exit 0 if 200, else 1
  --once                call the upstream once, at start, print its answer
                        and exit 0 if it was 200, else 1 (no server)
  -h, --help            this text
";

/// The largest request head read; a longer one gets 431. Requests here are a
/// request line and a few headers from curl or a probe.
const MAX_HEAD: usize = 8 * 1024;
/// A client that sends nothing for this long is dropped, so slow or idle
/// connections cannot pin the connection slots.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub port: u16,
    pub max_connections: usize,
    /// Check the local server's health instead of serving.
    pub probe: bool,
    /// Call the upstream once and exit instead of serving.
    pub once: bool,
    /// Called on `GET /`.
    pub upstream: Option<Upstream>,
}

/// Parses the arguments; `env_port` is `$PORT`, which `--port` overrides,
/// and `env_upstream` is `$UPSTREAM`, which `--upstream` overrides.
pub fn parse(
    args: Vec<String>,
    env_port: Option<String>,
    env_upstream: Option<String>,
) -> Result<Parsed<Config>, UsageError> {
    let mut port = None;
    let mut max_connections = 64;
    let mut probe = false;
    let mut once = false;
    let mut upstream = None;
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.next_flag()? {
        let Flag::Named { name, inline } = flag else {
            return Ok(Parsed::Help);
        };
        match name.as_str() {
            "port" => port = Some(flags.number(&name, inline, 1, 65535)?),
            "max-connections" => {
                max_connections = flags.number(&name, inline, 1, 10_000)?;
            }
            "probe" if inline.is_none() => probe = true,
            "probe" => return Err(UsageError("--probe takes no value".into())),
            "once" if inline.is_none() => once = true,
            "once" => return Err(UsageError("--once takes no value".into())),
            "upstream" => upstream = Some(flags.value(&name, inline)?),
            _ => return Err(cli::unknown(&name)),
        }
    }
    let port = match (port, env_port) {
        (Some(p), _) => p,
        (None, Some(raw)) if !raw.is_empty() => cli::number("$PORT", &raw, 1, 65535)?,
        (None, _) => 8080,
    };
    let upstream = match upstream.or(env_upstream.filter(|u| !u.trim().is_empty())) {
        Some(url) => Some(Upstream::parse(url.trim()).map_err(UsageError)?),
        None => None,
    };
    if once && upstream.is_none() {
        return Err(UsageError(
            "--once calls the upstream: give --upstream URL (or $UPSTREAM)".into(),
        ));
    }
    Ok(Parsed::Run(Config {
        port: u16::try_from(port).unwrap_or(8080),
        max_connections: usize::try_from(max_connections).unwrap_or(64),
        probe,
        once,
        upstream,
    }))
}

/// The name to answer with: `$POD_NAME`, else the kernel's hostname (the
/// container's, which Docker sets to the container id or `--hostname`).
pub fn pod_name(env_pod_name: Option<String>) -> String {
    if let Some(name) = env_pod_name.filter(|n| !n.trim().is_empty()) {
        return name.trim().to_string();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// What every connection thread shares.
#[derive(Debug)]
pub struct State {
    pub name: String,
    /// Set by `/fail`, cleared by the next `/fail`.
    pub failing: AtomicBool,
    active: AtomicUsize,
    /// Called on `GET /`.
    pub upstream: Option<Upstream>,
    /// Resolver configuration for the upstream's name: `None` reads
    /// `/etc/resolv.conf` on every call (tests give their own).
    pub resolv_conf: Option<ResolvConf>,
}

impl State {
    pub fn new(name: String) -> Self {
        State {
            name,
            failing: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            upstream: None,
            resolv_conf: None,
        }
    }

    /// This state calling `upstream` on `GET /`.
    pub fn with_upstream(mut self, upstream: Option<Upstream>) -> Self {
        self.upstream = upstream;
        self
    }

    /// The answer to `GET /`: the pod name, or the name and the upstream's
    /// answer (`--once` prints it and exits with its status).
    pub fn root(&self) -> Response {
        let Some(up) = &self.upstream else {
            return Response::new(200, format!("{}\n", self.name));
        };
        let conf = || self.resolv_conf.clone().unwrap_or_else(ResolvConf::load);
        match upstream::call(up, conf) {
            Ok(answer) => Response::new(200, format!("{} -> {answer}\n", self.name)),
            Err(why) => Response::new(502, format!("upstream {}: {why}\n", up.authority())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
    /// HEAD: send the headers only.
    pub head_only: bool,
}

impl Response {
    fn new(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            body: body.into(),
            head_only: false,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "Unknown",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.body.len()
        );
        if self.status == 405 {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        if !self.head_only {
            out.push_str(&self.body);
        }
        out.into_bytes()
    }
}

/// The answer to one request head (everything up to the blank line).
pub fn respond(state: &State, head: &[u8]) -> Response {
    let Ok(head) = std::str::from_utf8(head) else {
        return Response::new(400, "request head is not UTF-8\n");
    };
    let request_line = head.lines().next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Response::new(400, "malformed request line\n");
    };
    if !version.starts_with("HTTP/1.") {
        return Response::new(505, "only HTTP/1.x is spoken here\n");
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Response::new(405, "only GET and HEAD\n"),
    };
    let path = target.split(['?', '#']).next().unwrap_or("");
    let mut response = match path {
        "/healthz" if state.failing.load(Ordering::SeqCst) => Response::new(500, "failing\n"),
        "/healthz" => Response::new(200, "ok\n"),
        // fetch_xor returns the old value: the new one is its negation.
        "/fail" if state.failing.fetch_xor(true, Ordering::SeqCst) => {
            Response::new(200, "healthz now ok\n")
        }
        "/fail" => Response::new(200, "healthz now failing\n"),
        "/" => state.root(),
        _ => Response::new(200, format!("{}\n", state.name)),
    };
    response.head_only = head_only;
    response
}

/// Why reading a request head stopped.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    Complete(Vec<u8>),
    TooLarge,
    /// The client closed or timed out before finishing; nothing to answer.
    Abandoned,
}

/// Reads up to the end of the request head, never more than [`MAX_HEAD`].
fn read_head(stream: &mut impl Read) -> Head {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return Head::Abandoned,
            Ok(n) => n,
        };
        // Search from just before the new bytes: the terminator may straddle reads.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_end(&buf[from..]).map(|end| from + end) {
            if end > MAX_HEAD {
                return Head::TooLarge;
            }
            buf.truncate(end);
            return Head::Complete(buf);
        }
        if buf.len() > MAX_HEAD {
            return Head::TooLarge;
        }
    }
}

/// Offset just past the blank line ending a head (`\r\n\r\n`, or a bare `\n\n`).
fn find_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Releases a connection slot when the connection's thread ends, however it ends.
struct Slot(Arc<State>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn handle(mut stream: TcpStream, slot: &Slot) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    // A socket whose timeouts cannot be set would let a silent client hold a
    // slot forever; drop it instead.
    if stream.set_read_timeout(Some(IO_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(IO_TIMEOUT)).is_err()
    {
        return;
    }
    let response = match read_head(&mut stream) {
        Head::Complete(head) => {
            let response = respond(&slot.0, &head);
            let line = String::from_utf8_lossy(&head);
            let line = line.lines().next().unwrap_or("");
            crate::outln!("{peer} \"{}\" {}", line.escape_debug(), response.status);
            response
        }
        Head::TooLarge => Response::new(431, "request head too large\n"),
        Head::Abandoned => return,
    };
    let _ = stream.write_all(&response.to_bytes());
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

/// Serves forever (until killed); returns only if the port cannot be bound.
pub fn serve(config: &Config, state: Arc<State>) -> io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", config.port))?;
    let udp = std::net::UdpSocket::bind(("0.0.0.0", config.port))?;
    let name = state.name.clone();
    thread::spawn(move || udp_echo(&udp, &name));
    let calls = state
        .upstream
        .as_ref()
        .map(|u| format!(", calling http://{}{} on GET /", u.authority(), u.path))
        .unwrap_or_default();
    crate::outln!(
        "outpost-http: pod {} listening on 0.0.0.0:{} (max {} connections{calls})",
        state.name,
        config.port,
        config.max_connections
    );
    loop {
        let mut stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off rather than spin.
                crate::errln!("outpost-http: accept: {e}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if state.active.fetch_add(1, Ordering::SeqCst) >= config.max_connections {
            state.active.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = stream.write_all(&Response::new(503, "too many connections\n").to_bytes());
            continue;
        }
        let slot = Slot(Arc::clone(&state));
        if let Err(e) = thread::Builder::new().spawn(move || handle(stream, &slot)) {
            // The slot moved into the closure that was never run, and was dropped with it.
            crate::errln!("outpost-http: cannot start a connection thread: {e}");
        }
    }
}

/// Answers each datagram on `udp` with `<name> <datagram>` (for UDP
/// Service tests), until the socket fails.
fn udp_echo(udp: &std::net::UdpSocket, name: &str) {
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok((n, from)) = udp.recv_from(&mut buf) else {
            return;
        };
        let mut answer = format!("{name} ").into_bytes();
        answer.extend_from_slice(&buf[..n]);
        let _ = udp.send_to(&answer, from);
    }
}

/// `--probe`: true if the local server's `/healthz` answers 200.
pub fn probe(port: u16) -> Result<bool, String> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), IO_TIMEOUT)
        .map_err(|e| format!("connect to 127.0.0.1:{port}: {e}"))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send to 127.0.0.1:{port}: {e}"))?;
    let mut answer = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut answer)
        .map_err(|e| format!("read from 127.0.0.1:{port}: {e}"))?;
    Ok(answer.starts_with(b"HTTP/1.1 200 ") || answer.starts_with(b"HTTP/1.0 200 "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_arguments() {
        let run = |port, max, probe| {
            Ok(Parsed::Run(Config {
                port,
                max_connections: max,
                probe,
                once: false,
                upstream: None,
            }))
        };
        let cases: Vec<(&[&str], Option<&str>, cli::Expected<Config>)> = vec![
            (&[], None, run(8080, 64, false)),
            (&[], Some(""), run(8080, 64, false)),
            (&[], Some("9000"), run(9000, 64, false)),
            (&["--port", "81"], Some("9000"), run(81, 64, false)),
            (&["--port=82", "--max-connections", "2"], None, run(82, 2, false)),
            (&["--probe"], Some("9001"), run(9001, 64, true)),
            (&["--help"], None, Ok(Parsed::Help)),
            (&["--port", "1", "-h"], None, Ok(Parsed::Help)),
            (&[], Some("http"), Err("invalid value 'http' for $PORT: expected a whole number from 1 to 65535")),
            (&["--port", "0"], None, Err("invalid value '0' for --port: expected a whole number from 1 to 65535")),
            (&["--port", "65536"], None, Err("invalid value '65536' for --port: expected a whole number from 1 to 65535")),
            (&["--port"], None, Err("--port needs a value")),
            (&["--max-connections", "0"], None, Err("invalid value '0' for --max-connections: expected a whole number from 1 to 10000")),
            (&["--probe=yes"], None, Err("--probe takes no value")),
            (&["--verbose"], None, Err("unknown flag --verbose")),
            (&["8080"], None, Err("unexpected argument '8080' (every option is a --flag)")),
            (&["--once"], None, Err("--once calls the upstream: give --upstream URL (or $UPSTREAM)")),
            (&["--once=1", "--upstream", "http://a/"], None, Err("--once takes no value")),
        ];
        for (argv, env, want) in cases {
            let got = parse(args(argv), env.map(str::to_string), None).map_err(|e| e.0);
            assert_eq!(got, want.map_err(str::to_string), "{argv:?} PORT={env:?}");
        }
    }

    #[test]
    fn once_needs_an_upstream_and_keeps_it() {
        let Ok(Parsed::Run(c)) =
            parse(args(&["--once", "--upstream", "http://store/"]), None, None)
        else {
            panic!("--once with an upstream parses");
        };
        assert!(c.once);
        assert_eq!(c.upstream.map(|u| u.host), Some("store".to_string()));
        let Ok(Parsed::Run(c)) = parse(args(&["--once"]), None, Some("http://b:81/".into())) else {
            panic!("--once with $UPSTREAM parses");
        };
        assert_eq!(c.upstream.map(|u| u.port), Some(81));
    }

    #[test]
    fn pod_name_prefers_the_environment() {
        assert_eq!(pod_name(Some(" web-1 ".into())), "web-1");
        let host = pod_name(None);
        assert!(!host.is_empty());
        assert_eq!(pod_name(Some("  ".into())), host);
    }

    #[test]
    fn routes_requests() {
        let state = State::new("demo".into());
        let status_body = |req: &str| {
            let r = respond(&state, req.as_bytes());
            (r.status, r.body)
        };
        let cases: &[(&str, u16, &str)] = &[
            ("GET / HTTP/1.1\r\n\r\n", 200, "demo\n"),
            (
                "GET /anything?x=1 HTTP/1.0\r\nHost: a\r\n\r\n",
                200,
                "demo\n",
            ),
            ("GET /healthz HTTP/1.1\r\n\r\n", 200, "ok\n"),
            ("GET /healthz?probe=1 HTTP/1.1\r\n\r\n", 200, "ok\n"),
            ("POST / HTTP/1.1\r\n\r\n", 405, "only GET and HEAD\n"),
            (
                "GET / HTTP/2\r\n\r\n",
                505,
                "only HTTP/1.x is spoken here\n",
            ),
            ("GET /\r\n\r\n", 400, "malformed request line\n"),
            ("GET  / HTTP/1.1\r\n\r\n", 400, "malformed request line\n"),
            ("", 400, "malformed request line\n"),
        ];
        for (req, status, body) in cases {
            assert_eq!(status_body(req), (*status, body.to_string()), "{req:?}");
        }
        assert_eq!(respond(&state, b"\xff\xfe\r\n\r\n").status, 400);
    }

    #[test]
    fn fail_toggles_healthz() {
        let state = State::new("demo".into());
        let get = |path: &str| {
            let r = respond(&state, format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes());
            (r.status, r.body)
        };
        assert_eq!(get("/fail"), (200, "healthz now failing\n".into()));
        assert_eq!(get("/healthz"), (500, "failing\n".into()));
        assert_eq!(get("/"), (200, "demo\n".into()));
        assert_eq!(get("/fail"), (200, "healthz now ok\n".into()));
        assert_eq!(get("/healthz"), (200, "ok\n".into()));
    }

    #[test]
    fn head_sends_no_body() {
        let state = State::new("demo".into());
        let r = respond(&state, b"HEAD / HTTP/1.1\r\n\r\n");
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Length: 5\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
    }

    #[test]
    fn reads_heads_in_pieces_and_bounds_them() {
        /// Yields its data a few bytes per read, like a slow client.
        struct Trickle(Vec<u8>, usize);
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(3).min(self.0.len() - self.1);
                buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
                self.1 += n;
                Ok(n)
            }
        }
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut with_body = head.to_vec();
        with_body.extend_from_slice(b"body");
        assert_eq!(
            read_head(&mut Trickle(with_body, 0)),
            Head::Complete(head.to_vec())
        );
        assert_eq!(
            read_head(&mut &b"GET / HTTP/1.1\n\n"[..]),
            Head::Complete(b"GET / HTTP/1.1\n\n".to_vec())
        );
        assert_eq!(read_head(&mut &b"GET / HTTP/1.1\r\n"[..]), Head::Abandoned);
        assert_eq!(read_head(&mut &b""[..]), Head::Abandoned);
        let endless = vec![b'a'; MAX_HEAD * 4];
        assert_eq!(read_head(&mut &endless[..]), Head::TooLarge);
        // Just over the bound, ending in the same read as the bound is crossed.
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_HEAD - 2, b'a');
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(read_head(&mut &long[..]), Head::TooLarge);
        long.truncate(MAX_HEAD - 4);
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(read_head(&mut &long[..]), Head::Complete(long.clone()));
    }

    #[test]
    fn serves_over_tcp() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let config = Config {
            port,
            max_connections: 4,
            probe: false,
            once: false,
            upstream: None,
        };
        let state = Arc::new(State::new("tcp-test".into()));
        let served = Arc::clone(&state);
        thread::spawn(move || serve(&config, served));
        let get = |path: &str| -> Option<String> {
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes())
                .ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            Some(out)
        };
        let mut answer = None;
        for _ in 0..100 {
            answer = get("/");
            if answer.is_some() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let answer = answer.expect("server answers");
        assert!(answer.ends_with("\r\n\r\ntcp-test\n"), "{answer}");
        assert_eq!(probe(port), Ok(true));
        get("/fail").unwrap();
        assert_eq!(probe(port), Ok(false));
        get("/fail").unwrap();
        assert_eq!(probe(port), Ok(true));
        // The same port over UDP echoes with the pod name.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        udp.send_to(b"ping", ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 64];
        let n = udp.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"tcp-test ping");
    }

    #[test]
    fn parses_the_upstream() {
        let up = |argv: &[&str], env: Option<&str>| {
            parse(args(argv), None, env.map(str::to_string))
                .map(|p| match p {
                    Parsed::Run(c) => c.upstream.map(|u| u.authority() + &u.path),
                    Parsed::Help => None,
                })
                .map_err(|e| e.0)
        };
        assert_eq!(up(&[], None), Ok(None));
        assert_eq!(up(&[], Some(" ")), Ok(None));
        assert_eq!(
            up(&[], Some("http://store:80/")),
            Ok(Some("store:80/".into()))
        );
        assert_eq!(
            up(
                &["--upstream", "http://backend:8080/x"],
                Some("http://store:80/")
            ),
            Ok(Some("backend:8080/x".into())),
            "the flag wins"
        );
        assert_eq!(
            up(&["--upstream=ftp://x/"], None),
            Err("invalid upstream \"ftp://x/\": expected http://NAME:PORT/PATH".into())
        );
        assert_eq!(
            up(&["--upstream"], None),
            Err("--upstream needs a value".into())
        );
    }

    /// Serves `state` on a free loopback-reachable port; returns the port
    /// once it answers.
    fn start(state: State) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let config = Config {
            port,
            max_connections: 8,
            probe: false,
            once: false,
            upstream: None,
        };
        let state = Arc::new(state);
        thread::spawn(move || serve(&config, state));
        for _ in 0..100 {
            if probe(port).is_ok() {
                return port;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("server on {port} never answered");
    }

    fn get_root(port: u16) -> (u16, String) {
        let up = Upstream::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        match upstream::call(&up, ResolvConf::default) {
            Ok(body) => (200, body),
            Err(why) => {
                // "answered 502: <body>"
                let (status, body) = why
                    .strip_prefix("answered ")
                    .and_then(|w| w.split_once(": "))
                    .unwrap_or_else(|| panic!("{why}"));
                (status.parse().unwrap(), body.to_string())
            }
        }
    }

    #[test]
    fn a_chain_of_tiers_names_every_pod_that_answered() {
        let store = start(State::new("store-z".into()));
        // The backend calls the store by IP literal, the frontend calls the
        // backend by name through a DNS server on loopback and the search list.
        let backend = start(State::new("backend-y".into()).with_upstream(Some(
            Upstream::parse(&format!("http://127.0.0.1:{store}/")).unwrap(),
        )));
        let (dns, asked) = crate::dns::tests::fake_server(
            [(
                "backend.default.svc.cluster.local".to_string(),
                std::net::Ipv4Addr::LOCALHOST,
            )]
            .into(),
        );
        let mut frontend = State::new("frontend-x".into()).with_upstream(Some(
            Upstream::parse(&format!("http://backend:{backend}/")).unwrap(),
        ));
        frontend.resolv_conf = Some(ResolvConf {
            nameservers: vec![dns],
            search: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            ndots: 5,
            timeout: Duration::from_secs(1),
            attempts: 1,
        });
        let frontend = start(frontend);
        assert_eq!(
            get_root(frontend),
            (200, "frontend-x -> backend-y -> store-z".into())
        );
        assert_eq!(
            asked.lock().unwrap().first().map(String::as_str),
            Some("backend.default.svc.cluster.local")
        );
        // Other paths and health stay local.
        let mut s = TcpStream::connect(("127.0.0.1", frontend)).unwrap();
        s.write_all(b"GET /other HTTP/1.1\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.ends_with("\r\n\r\nfrontend-x\n"), "{out}");
        assert_eq!(probe(frontend), Ok(true));
    }

    #[test]
    fn an_upstream_failure_is_a_502_with_the_reason() {
        // A port nobody listens on.
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let backend = start(State::new("backend-y".into()).with_upstream(Some(
            Upstream::parse(&format!("http://127.0.0.1:{closed}/")).unwrap(),
        )));
        assert_eq!(
            get_root(backend),
            (
                502,
                format!("upstream 127.0.0.1:{closed}: connection refused")
            )
        );
        // One tier up, the failure is passed on with where it happened.
        let frontend = start(State::new("frontend-x".into()).with_upstream(Some(
            Upstream::parse(&format!("http://127.0.0.1:{backend}/")).unwrap(),
        )));
        assert_eq!(
            get_root(frontend),
            (
                502,
                format!("upstream 127.0.0.1:{backend}: answered 502: upstream 127.0.0.1:{closed}: connection refused")
            )
        );
        // An upstream that accepts and never answers: bounded by the total
        // timeout.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let up = Upstream::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let t = std::time::Instant::now();
        assert_eq!(
            upstream::call(&up, ResolvConf::default),
            Err("no answer within 5s".into())
        );
        let took = t.elapsed();
        assert!(
            took >= upstream::TOTAL_TIMEOUT
                && took < upstream::TOTAL_TIMEOUT + Duration::from_secs(2),
            "{took:?}"
        );
        // A name nobody knows.
        let (dns, _) = crate::dns::tests::fake_server(Default::default());
        let conf = ResolvConf {
            nameservers: vec![dns],
            ..ResolvConf::default()
        };
        let up = Upstream::parse("http://nowhere:80/").unwrap();
        assert_eq!(
            upstream::call(&up, || conf),
            Err("cannot resolve nowhere: no such host (tried nowhere)".into())
        );
    }
}
