//! Liveness and readiness probes with Kubernetes semantics.
//!
//! [`ProbeTracker`] is the I/O-free half: it takes `now` and each probe's
//! outcome and says when the next probe is due and when the result flips
//! (after `failureThreshold` consecutive failures or `successThreshold`
//! consecutive successes). Readiness starts false, liveness starts true.
//! [`check`] is the I/O half: one exec, HTTP GET or TCP connect with a
//! timeout. The reconciler runs due checks each tick and kills a container
//! whose liveness turned false.

use super::docker::Engine;
use outpost_proto::pod::{Probe, ProbeAction};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Which probe a tracker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Liveness,
    Readiness,
}

impl ProbeKind {
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// One probe of one container run, on a clock given by the caller (ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTracker {
    pub kind: ProbeKind,
    period_ms: u64,
    success_threshold: u32,
    failure_threshold: u32,
    next_ms: u64,
    successes: u32,
    failures: u32,
    ok: bool,
}

impl ProbeTracker {
    /// A tracker for a container that started at `started_ms`: the first
    /// probe is due `initialDelaySeconds` later.
    pub fn new(kind: ProbeKind, probe: &Probe, started_ms: u64) -> ProbeTracker {
        ProbeTracker {
            kind,
            period_ms: u64::from(probe.period_secs.max(1)) * 1000,
            // Kubernetes requires 1 for liveness; be lenient and use 1.
            success_threshold: if kind == ProbeKind::Liveness {
                1
            } else {
                probe.success_threshold.max(1)
            },
            failure_threshold: probe.failure_threshold.max(1),
            next_ms: started_ms.saturating_add(u64::from(probe.initial_delay_secs) * 1000),
            successes: 0,
            failures: 0,
            ok: kind == ProbeKind::Liveness,
        }
    }

    /// Current result: ready (readiness) or alive (liveness).
    pub fn ok(&self) -> bool {
        self.ok
    }

    pub fn due(&self, now_ms: u64) -> bool {
        now_ms >= self.next_ms
    }

    pub fn next_due_ms(&self) -> u64 {
        self.next_ms
    }

    /// Consecutive failures so far (for messages).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records one probe's outcome at `now_ms`; returns the new result when
    /// it flipped. The next probe is due one period after this one.
    pub fn record(&mut self, now_ms: u64, success: bool) -> Option<bool> {
        self.next_ms = now_ms.saturating_add(self.period_ms);
        if success {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.ok && self.successes >= self.success_threshold {
                self.ok = true;
                return Some(true);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.ok && self.failures >= self.failure_threshold {
                self.ok = false;
                return Some(false);
            }
        }
        None
    }
}

/// Most bytes read of an HTTP probe's response: the status line is enough.
const MAX_HTTP_RESPONSE_HEAD: usize = 1024;

/// Runs one probe action against a container. `ip` is the pod's address
/// (the pause container's); exec runs in `container_id`. `Err` says why the
/// probe failed, for the "Unhealthy" event.
pub async fn check(
    engine: &Engine,
    container_id: &str,
    ip: Option<IpAddr>,
    action: &ProbeAction,
    timeout: Duration,
) -> Result<(), String> {
    match action {
        ProbeAction::Exec { command } => match engine.exec(container_id, command, timeout).await {
            Ok(0) => Ok(()),
            Ok(code) => Err(format!("command {command:?} exited with {code}")),
            Err(e) => Err(format!("command {command:?} failed: {e}")),
        },
        ProbeAction::Http { path, port } => {
            let ip = ip.ok_or("the pod has no IP address yet")?;
            match http_get(SocketAddr::new(ip, *port), path, timeout).await {
                Ok(code) if (200..400).contains(&code) => Ok(()),
                Ok(code) => Err(format!("HTTP probe failed with statuscode: {code}")),
                Err(e) => Err(format!("Get \"http://{ip}:{port}{path}\": {e}")),
            }
        }
        ProbeAction::Tcp { port } => {
            let ip = ip.ok_or("the pod has no IP address yet")?;
            let addr = SocketAddr::new(ip, *port);
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("dial tcp {addr}: {e}")),
                Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
            }
        }
    }
}

/// A minimal HTTP/1.1 GET: returns the status code.
pub async fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<u16, String> {
    let run = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: outpost-probe/1\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; MAX_HTTP_RESPONSE_HEAD];
        let mut len = 0;
        loop {
            let n = s.read(&mut buf[len..]).await.map_err(|e| e.to_string())?;
            len += n;
            if n == 0 || buf[..len].contains(&b'\n') || len == buf.len() {
                break;
            }
        }
        parse_status_line(&buf[..len]).ok_or_else(|| "malformed HTTP response".to_string())
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| {
            Err("context deadline exceeded (Client.Timeout exceeded while awaiting headers)".into())
        })
}

/// `HTTP/1.1 200 OK` -> 200.
pub fn parse_status_line(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(initial: u32, period: u32, success: u32, failure: u32) -> Probe {
        Probe {
            action: ProbeAction::Tcp { port: 80 },
            initial_delay_secs: initial,
            period_secs: period,
            timeout_secs: 1,
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    /// Drives a tracker on a virtual clock: at each due time, the outcome
    /// comes from `outcome(now)`; returns the flips as (time, result).
    fn drive(
        t: &mut ProbeTracker,
        until_ms: u64,
        outcome: impl Fn(u64) -> bool,
    ) -> Vec<(u64, bool)> {
        let mut flips = Vec::new();
        let mut now = 0;
        while now <= until_ms {
            if t.due(now) {
                if let Some(r) = t.record(now, outcome(now)) {
                    flips.push((now, r));
                }
            }
            now = t.next_due_ms().max(now + 1);
        }
        flips
    }

    #[test]
    fn readiness_starts_false_and_waits_for_initial_delay() {
        let mut t = ProbeTracker::new(ProbeKind::Readiness, &probe(5, 2, 1, 3), 0);
        assert!(!t.ok());
        assert!(!t.due(4_999));
        assert!(t.due(5_000));
        let flips = drive(&mut t, 20_000, |_| true);
        assert_eq!(flips, vec![(5_000, true)]);
    }

    #[test]
    fn readiness_needs_success_threshold_in_a_row() {
        let mut t = ProbeTracker::new(ProbeKind::Readiness, &probe(0, 1, 3, 1), 0);
        // fail, ok, ok, fail, ok, ok, ok -> ready at the 3rd ok in a row (6 s).
        let script = [false, true, true, false, true, true, true];
        let flips = drive(&mut t, 6_000, |now| {
            script[usize::try_from(now / 1000).unwrap()]
        });
        assert_eq!(flips, vec![(6_000, true)]);
    }

    #[test]
    fn liveness_starts_true_and_fails_after_threshold() {
        let mut t = ProbeTracker::new(ProbeKind::Liveness, &probe(10, 5, 1, 3), 1_000);
        assert!(t.ok());
        // Healthy until 30 s, then failing: probes at 11, 16, 21, 26, 31, 36, 41 s.
        let flips = drive(&mut t, 41_000, |now| now < 30_000);
        assert_eq!(flips, vec![(41_000, false)]);
        assert_eq!(t.failures(), 3);
    }

    #[test]
    fn liveness_failures_must_be_consecutive() {
        let mut t = ProbeTracker::new(ProbeKind::Liveness, &probe(0, 1, 1, 3), 0);
        // Every third probe succeeds: never three failures in a row.
        let flips = drive(&mut t, 30_000, |now| (now / 1000).is_multiple_of(3));
        assert!(flips.is_empty());
        assert!(t.ok());
    }

    #[test]
    fn readiness_goes_false_and_back() {
        let mut t = ProbeTracker::new(ProbeKind::Readiness, &probe(0, 10, 1, 2), 0);
        let flips = drive(&mut t, 100_000, |now| !(30_000..60_000).contains(&now));
        assert_eq!(flips, vec![(0, true), (40_000, false), (60_000, true)]);
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status_line(b"HTTP/1.0 503 Service Unavailable\r\nx"),
            Some(503)
        );
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status_line(b""), None);
    }

    #[tokio::test]
    async fn http_get_against_a_local_server() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            for code in ["200 OK", "500 Internal Server Error"] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let t = Duration::from_secs(2);
        assert_eq!(http_get(addr, "/healthz", t).await, Ok(200));
        assert_eq!(http_get(addr, "/healthz", t).await, Ok(500));
    }
}
