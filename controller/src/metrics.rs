//! `/metrics` (Prometheus text format 0.0.4) and `/healthz` over plain HTTP.
//!
//! A deliberately tiny HTTP/1.1 responder: GET only, the request head read
//! with a size cap and a timeout, one response per connection. Enough for
//! Prometheus and load balancers without pulling an HTTP stack into the
//! controller.

use crate::cluster::Controller;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head accepted.
const MAX_REQUEST: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until the listener fails.
pub async fn serve(listener: TcpListener, ctrl: Arc<Controller>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off rather
                // than spin on a listener that keeps failing.
                tracing::warn!("metrics listener: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        let ctrl = ctrl.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(READ_TIMEOUT, respond(stream, &ctrl)).await;
        });
    }
}

async fn respond(mut stream: TcpStream, ctrl: &Controller) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        if len == buf.len() {
            return write(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request too large\n",
            )
            .await;
        }
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(());
        }
        len += n;
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match (method, path) {
        ("GET", "/metrics") => {
            let body = render(ctrl);
            write(&mut stream, "200 OK", "text/plain; version=0.0.4", &body).await
        }
        ("GET", "/healthz") => write(&mut stream, "200 OK", "text/plain", "ok\n").await,
        ("GET", _) => {
            write(
                &mut stream,
                "404 Not Found",
                "text/plain",
                "try /metrics or /healthz\n",
            )
            .await
        }
        _ => {
            write(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                "GET only\n",
            )
            .await
        }
    }
}

async fn write(
    stream: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Resident set size of this process in bytes (Linux), for the load figures.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Total CPU seconds (user + system) of this process (Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which may contain spaces, in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux target we ship for.
    Some((utime + stime) / 100.0)
}

fn render(ctrl: &Controller) -> String {
    let m = &ctrl.metrics;
    let (ready, not_ready, connected) = ctrl.node_counts();
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    gauge(
        "outpost_nodes_ready",
        "Nodes whose Ready condition is True.",
        ready.to_string(),
    );
    gauge(
        "outpost_nodes_not_ready",
        "Nodes whose Ready condition is not True.",
        not_ready.to_string(),
    );
    gauge(
        "outpost_agent_sessions",
        "Agents with a live session.",
        connected.to_string(),
    );
    {
        let cache = ctrl.cache.read().unwrap_or_else(|p| p.into_inner());
        gauge(
            "outpost_store_revision",
            "Latest cluster revision the control loop's cache reflects.",
            cache.revision().to_string(),
        );
        gauge(
            "outpost_pods_unbound",
            "Pods waiting for the scheduler to place them.",
            cache.unbound_pods().count().to_string(),
        );
    }
    gauge(
        "outpost_status_inbox",
        "Pod statuses from agents waiting to be written.",
        ctrl.inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
            .to_string(),
    );
    if let Some(rss) = rss_bytes() {
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            rss.to_string(),
        );
    }
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    };
    for (name, help, v) in [
        (
            "outpost_heartbeats_total",
            "Heartbeats received from agents.",
            &m.heartbeats,
        ),
        (
            "outpost_reports_total",
            "Node reports received from agents.",
            &m.reports,
        ),
        ("outpost_enrolments_total", "Nodes enrolled.", &m.enrolments),
        (
            "outpost_enrolments_rejected_total",
            "Enrolment requests refused.",
            &m.enrolments_rejected,
        ),
        (
            "outpost_certificate_renewals_total",
            "Node certificates renewed.",
            &m.renewals,
        ),
        (
            "outpost_sessions_rejected_total",
            "Connections closed for failed authentication or authorisation.",
            &m.sessions_rejected,
        ),
        (
            "outpost_handshakes_failed_total",
            "Connections refused during the QUIC/TLS handshake.",
            &m.handshakes_failed,
        ),
        (
            "outpost_handshakes_refused_total",
            "New connections refused by handshake admission (too many being set up); the peer backs off and retries.",
            &m.handshakes_refused,
        ),
        (
            "outpost_handshakes_retried_total",
            "New connections sent a QUIC Retry (address validation) before waiting for a setup slot.",
            &m.handshakes_retried,
        ),
        (
            "outpost_handshakes_queued_total",
            "New connections that waited for a setup slot.",
            &m.handshakes_queued,
        ),
        (
            "outpost_protocol_errors_total",
            "Connections closed for oversized, malformed or unexpected frames.",
            &m.protocol_errors,
        ),
        (
            "outpost_admin_calls_total",
            "Operator calls served.",
            &m.admin_calls,
        ),
        (
            "outpost_admin_denied_total",
            "Operator calls refused for lack of an admin certificate.",
            &m.admin_denied,
        ),
    ] {
        counter(name, help, v.load(Ordering::Relaxed));
    }
    {
        let cache = ctrl.cache.read().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(
            out,
            "# HELP outpost_objects Objects in the store, by kind.\n# TYPE outpost_objects gauge"
        );
        for kind in crate::api::Kind::ALL {
            let _ = writeln!(
                out,
                "outpost_objects{{kind=\"{}\"}} {}",
                kind.resource(),
                cache.count(kind)
            );
        }
    }
    {
        let relayed = m.relay.snapshot();
        let _ = writeln!(
            out,
            "# HELP outpost_service_relay_refused_total Relay requests refused (no such Service, port or ready endpoint; node offline).\n# TYPE outpost_service_relay_refused_total counter\noutpost_service_relay_refused_total {}",
            m.relay.refused.load(Ordering::Relaxed)
        );
        for (name, help, kind, pick) in [
            (
                "outpost_service_relayed_connections_total",
                "Connections to a Service relayed between agents by the controller.",
                "counter",
                (|c: &crate::relay::ServiceCounters| c.connections)
                    as fn(&crate::relay::ServiceCounters) -> u64,
            ),
            (
                "outpost_service_relayed_connections_active",
                "Relayed connections open now.",
                "gauge",
                |c| c.active,
            ),
            (
                "outpost_service_relayed_bytes_total",
                "Bytes relayed for a Service, both directions, counted when a connection ends.",
                "counter",
                |c| c.bytes,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (service, c) in &relayed {
                let _ = writeln!(out, "{name}{{service=\"{service}\"}} {}", pick(c));
            }
        }
    }
    m.session_setup.render(&mut out);
    if let Some(cpu) = cpu_seconds() {
        let _ = writeln!(
            out,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu}"
        );
    }
    out
}

/// Upper bounds of [`Histogram`]'s buckets, in seconds: from a round trip on
/// a LAN to past an agent's 10 s answer timeout, so a storm's late answers
/// show which side of that timeout they fell on.
pub const BUCKETS_S: [f64; 12] = [
    0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0,
];

/// A Prometheus histogram of durations with the fixed [`BUCKETS_S`]:
/// lock-free, a few atomics, observed on hot paths.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is +Inf.
    counts: [AtomicU64; BUCKETS_S.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS_S
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(BUCKETS_S.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The series of `name` with `labels` (`key="value"`) in the text
    /// format: cumulative buckets, `_sum` and `_count`. The HELP and TYPE
    /// lines are the caller's (one per family).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let le = BUCKETS_S
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// How long agents' sessions took to set up, by stage.
#[derive(Debug, Default)]
pub struct SessionSetup {
    /// From the first packet to the TLS handshake done, any wait for a
    /// setup slot included.
    pub handshake: Histogram,
    /// From the handshake done to the Welcome written: the Hello read and
    /// checked, the node registered.
    pub welcome: Histogram,
    /// From the Welcome written to the session's first store write
    /// durable, when the setup slot is given back.
    pub first_write: Histogram,
}

impl SessionSetup {
    fn render(&self, out: &mut String) {
        let name = "outpost_session_setup_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Agent session setup time by stage: handshake (first packet to TLS done, slot wait included), welcome (to the Welcome written), first_write (to the session's first store write durable).\n# TYPE {name} histogram"
        );
        for (stage, h) in [
            ("handshake", &self.handshake),
            ("welcome", &self.welcome),
            ("first_write", &self.first_write),
        ] {
            h.render(out, name, &format!("stage=\"{stage}\""));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(h: &Histogram) -> Vec<String> {
        let mut out = String::new();
        h.render(&mut out, "x", "stage=\"a\"");
        out.lines().map(str::to_string).collect()
    }

    #[test]
    fn buckets_are_cumulative_and_end_at_the_count() {
        let h = Histogram::default();
        for ms in [1, 5, 6, 200, 12_000, 60_000] {
            h.observe(Duration::from_millis(ms));
        }
        let l = lines(&h);
        assert_eq!(l[0], "x_bucket{stage=\"a\",le=\"0.005\"} 2"); // 1 ms and 5 ms (inclusive bound)
        assert_eq!(l[1], "x_bucket{stage=\"a\",le=\"0.01\"} 3");
        assert_eq!(l[4], "x_bucket{stage=\"a\",le=\"0.25\"} 4");
        assert_eq!(l[9], "x_bucket{stage=\"a\",le=\"10\"} 4");
        assert_eq!(l[10], "x_bucket{stage=\"a\",le=\"15\"} 5");
        assert_eq!(l[11], "x_bucket{stage=\"a\",le=\"30\"} 5");
        assert_eq!(l[12], "x_bucket{stage=\"a\",le=\"+Inf\"} 6");
        assert_eq!(l[13], "x_sum{stage=\"a\"} 72.212");
        assert_eq!(l[14], "x_count{stage=\"a\"} 6");
        assert_eq!(h.count(), 6);
    }

    #[test]
    fn an_empty_histogram_renders_zeros() {
        let l = lines(&Histogram::default());
        assert_eq!(l.len(), BUCKETS_S.len() + 3);
        assert!(l[..=BUCKETS_S.len()].iter().all(|s| s.ends_with(" 0")));
        assert_eq!(l.last().map(String::as_str), Some("x_count{stage=\"a\"} 0"));
    }

    #[test]
    fn the_family_is_declared_once_with_every_stage() {
        let s = SessionSetup::default();
        s.welcome.observe(Duration::from_millis(20));
        let mut out = String::new();
        s.render(&mut out);
        assert_eq!(
            out.matches("# TYPE outpost_session_setup_seconds histogram")
                .count(),
            1
        );
        for stage in ["handshake", "welcome", "first_write"] {
            assert!(out.contains(&format!(
                "outpost_session_setup_seconds_count{{stage=\"{stage}\"}}"
            )));
        }
        assert!(
            out.contains("outpost_session_setup_seconds_bucket{stage=\"welcome\",le=\"0.05\"} 1")
        );
    }
}
