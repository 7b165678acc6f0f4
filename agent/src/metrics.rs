//! The agent's `/metrics` (Prometheus text format 0.0.4), off unless
//! `--metrics-listen` names an address: the Service proxy's traffic per
//! Service (connections, direct or relayed, bytes) and the pods'
//! resolver's counters. The controller's `/metrics` has the relayed side.
//!
//! A deliberately tiny responder, as the controller's: GET only, the
//! request head read with a size cap and a timeout, one response per
//! connection.

use crate::dns::DnsStats;
use crate::proxy::ProxyMetrics;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// A scrape that takes longer is dropped.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes answered at once; more wait in the accept queue.
const MAX_SCRAPES: usize = 8;

/// Serves until the listener fails for good.
pub async fn serve(listener: TcpListener, proxy: Arc<ProxyMetrics>, dns: Arc<DnsStats>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("metrics listener: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let (proxy, dns) = (proxy.clone(), dns.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(TIMEOUT, respond(stream, &proxy, &dns)).await;
        });
    }
}

async fn respond(mut s: TcpStream, proxy: &ProxyMetrics, dns: &DnsStats) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        if len == buf.len() {
            return reply(&mut s, "431 Request Header Fields Too Large", "too large\n").await;
        }
        let n = s.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(());
        }
        len += n;
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut first = head.lines().next().unwrap_or("").split_whitespace();
    match (first.next(), first.next()) {
        (Some("GET"), Some("/metrics")) => reply(&mut s, "200 OK", &render(proxy, dns)).await,
        (Some("GET"), Some("/healthz")) => reply(&mut s, "200 OK", "ok\n").await,
        (Some("GET"), _) => reply(&mut s, "404 Not Found", "try /metrics\n").await,
        _ => reply(&mut s, "405 Method Not Allowed", "GET only\n").await,
    }
}

async fn reply(s: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    s.shutdown().await
}

/// The text of one scrape.
pub fn render(proxy: &ProxyMetrics, dns: &DnsStats) -> String {
    let mut out = String::new();
    let mut one = |name: &str, kind: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    };
    one(
        "outpost_agent_service_listeners",
        "gauge",
        "Addresses the Service proxy listens on.",
        proxy.listeners.load(Ordering::Relaxed),
    );
    one(
        "outpost_agent_service_kernel_frontends",
        "gauge",
        "Addresses and ports the kernel forwards (nf_tables DNAT, --service-proxy).",
        proxy.kernel_frontends.load(Ordering::Relaxed),
    );
    let d = dns.snapshot();
    for (name, help, v) in [
        (
            "outpost_agent_dns_queries_total",
            "Queries from pods.",
            d.queries,
        ),
        (
            "outpost_agent_dns_answered_locally_total",
            "Queries answered from the Service table.",
            d.answered_locally,
        ),
        (
            "outpost_agent_dns_forwarded_total",
            "Queries forwarded to the node's resolvers.",
            d.forwarded,
        ),
        (
            "outpost_agent_dns_failures_total",
            "Forwards that ended in SERVFAIL.",
            d.failures,
        ),
        (
            "outpost_agent_dns_dropped_total",
            "Queries dropped: too many forwards or connections at once.",
            d.dropped,
        ),
    ] {
        one(name, "counter", help, v);
    }
    let per = proxy.per_service();
    type Pick = fn(&crate::proxy::ServiceStats) -> u64;
    let series: [(&str, &str, &str, Pick); 6] = [
        (
            "outpost_agent_service_connections_total",
            "counter",
            "Connections (UDP: flows) to a Service through this agent.",
            |s| s.connections,
        ),
        (
            "outpost_agent_service_relayed_connections_total",
            "counter",
            "Of them, carried by the relay over the agents' links.",
            |s| s.relayed,
        ),
        (
            "outpost_agent_service_kernel_connections_total",
            "counter",
            "Of them, forwarded by the kernel (nf_tables DNAT) without the proxy; read every 10 s.",
            |s| s.kernel,
        ),
        (
            "outpost_agent_service_connections_active",
            "gauge",
            "Proxied connections open now.",
            |s| s.active,
        ),
        (
            "outpost_agent_service_failed_connections_total",
            "counter",
            "Connections no ready endpoint took (refused at once).",
            |s| s.failed,
        ),
        (
            "outpost_agent_service_bytes_total",
            "counter",
            "Bytes both ways through the proxy, counted as connections end (not the kernel's).",
            |s| s.bytes,
        ),
    ];
    for (name, kind, help, pick) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (service, s) in &per {
            let _ = writeln!(out, "{name}{{service=\"{service}\"}} {}", pick(s));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_lists_every_service_and_the_resolver() {
        let p = ProxyMetrics::default();
        p.opened("default/web", true);
        p.closed("default/web", 10, 20);
        p.failed("default/db");
        let d = DnsStats::default();
        d.queries.fetch_add(3, Ordering::Relaxed);
        let text = render(&p, &d);
        assert!(
            text.contains("outpost_agent_dns_queries_total 3\n"),
            "{text}"
        );
        assert!(text.contains(
            "outpost_agent_service_relayed_connections_total{service=\"default/web\"} 1\n"
        ));
        assert!(text.contains("outpost_agent_service_bytes_total{service=\"default/web\"} 30\n"));
        assert!(text.contains(
            "outpost_agent_service_failed_connections_total{service=\"default/db\"} 1\n"
        ));
        assert!(
            text.contains("outpost_agent_service_connections_active{service=\"default/web\"} 0\n")
        );
    }

    #[test]
    fn kernel_forwarded_connections_are_counted_and_survive_a_table_replacement() {
        let p = ProxyMetrics::default();
        p.opened("default/web", false);
        p.kernel_counted(vec![("default/web".into(), 5), ("default/api".into(), 2)]);
        p.kernel_rebase(); // the table is replaced: its counters start again
        p.kernel_counted(vec![("default/web".into(), 3)]);
        p.kernel_counted(vec![("default/web".into(), 4)]); // read again later
        p.kernel_frontends.store(2, Ordering::Relaxed);
        let text = render(&p, &DnsStats::default());
        for want in [
            "outpost_agent_service_kernel_connections_total{service=\"default/web\"} 9\n",
            "outpost_agent_service_connections_total{service=\"default/web\"} 10\n",
            "outpost_agent_service_kernel_connections_total{service=\"default/api\"} 2\n",
            "outpost_agent_service_connections_total{service=\"default/api\"} 2\n",
            "outpost_agent_service_relayed_connections_total{service=\"default/web\"} 0\n",
            "outpost_agent_service_kernel_frontends 2\n",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_endpoint_answers_get_metrics_only() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(serve(l, Arc::default(), Arc::default()));
        for (req, want) in [
            ("GET /metrics HTTP/1.1\r\n\r\n", "200 OK"),
            ("GET /x HTTP/1.1\r\n\r\n", "404"),
            ("POST /metrics HTTP/1.1\r\n\r\n", "405"),
        ] {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut got = String::new();
            s.read_to_string(&mut got).await.unwrap();
            assert!(got.starts_with(&format!("HTTP/1.1 {want}")), "{got}");
        }
    }
}
