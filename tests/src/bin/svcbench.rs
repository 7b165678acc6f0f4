//! Service routing figures for docs/BENCHMARKS.md, on the scenario
//! harness: agents in containers on per-site Docker networks
//! (`outpost_tests::Sites`), the real proxy, resolver and relay.
//!
//! ```sh
//! cargo run --release -p outpost-tests --bin outpost-svcbench [-- --requests 400 --seconds 5 --service-proxy auto]
//! ```
//!
//! Three nodes: `a1` and `a2` on site a, `b1` on site b; one `outpost-http`
//! pod on `a1` behind a NodePort Service. From the host (the gateway of
//! every site network):
//! 1. latency and throughput of `GET /` on a new TCP connection each time,
//!    to the pod's own address (direct) and through the Service's node
//!    port on `a1` (endpoint on the same node), on `a2` (same site, the
//!    pod network is shared) and on `b1` (another site: the relay through
//!    the controller);
//! 2. the time from a new pod turning Ready to every node routing to it;
//! 3. the agent's RSS on `a1`: idle, with 50 Services, and with 1,000
//!    connections held open through it.
//!
//! The node port path has one hop the cluster IP path does not (host to
//! agent); the proxy's work is the same.

use outpost_tests::{
    http_deployment, http_get, http_service, ready_pod, running_ready, Sites, Timing,
};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(5);

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn deployment(name: &str, node: &str, replicas: u32) -> String {
    http_deployment(
        name,
        ("kubernetes.io/hostname", node),
        &["--max-connections", "4000"],
        replicas,
    )
}

fn node_port(s: &Sites, svc: &str) -> u16 {
    let v = s.ctl_json(&["get", "svc", svc]);
    v["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .expect("a node port")
}

fn wait_answer(at: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if matches!(http_get(at, "/", TIMEOUT), Ok((200, _))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{at} never answered");
}

/// Median and 99th percentile of `n` sequential requests, in ms.
fn latency(at: SocketAddr, n: u64) -> (f64, f64) {
    let mut ms: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let r = http_get(at, "/", TIMEOUT);
            assert!(matches!(r, Ok((200, _))), "{at}: {r:?}");
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    let pick = |per_mille: usize| ms[(ms.len() - 1) * per_mille / 1000];
    (pick(500), pick(990))
}

/// Requests per second with `threads` clients for `secs`.
fn throughput(at: SocketAddr, threads: u64, secs: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let done = done.clone();
            std::thread::spawn(move || {
                while Instant::now() < until {
                    if matches!(http_get(at, "/", TIMEOUT), Ok((200, _))) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    done.load(Ordering::Relaxed) as f64 / secs as f64
}

fn agent_rss_kib(container: &str) -> u64 {
    let (_, pid) = outpost_tests::docker(&["inspect", "-f", "{{.State.Pid}}", container]);
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let requests = arg("--requests", 400);
    let secs = arg("--seconds", 5);
    outpost_workloads::ensure_images().expect("building the workload images");
    // `--service-proxy auto|kernel|userspace`, passed to every agent.
    let args: Vec<String> = std::env::args().collect();
    let mode = args
        .iter()
        .position(|a| a == "--service-proxy")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "auto".into());
    println!("agents run with --service-proxy={mode}");
    let nodes = [("bench-a1", "a"), ("bench-a2", "a"), ("bench-b1", "b")];
    let mut s = Sites::new(Timing::default(), &["a", "b"]);
    let flag = format!("--service-proxy={mode}");
    for (node, site) in nodes {
        s.start_agent_with(node, site, &[], &[&flag]);
    }
    for (node, _) in nodes {
        s.wait_ready(node);
    }
    let a1 = s.agent("bench-a1").container.clone();
    let idle_rss = agent_rss_kib(&a1);
    let mut yaml = deployment("target", "bench-a1", 1);
    yaml += &http_service("target", "target", 80, "NodePort");
    s.apply("bench.yaml", &yaml);
    let pod = ready_pod(&s, "target", Duration::from_secs(120));
    let pod_ip: std::net::IpAddr = pod["status"]["podIP"].as_str().unwrap().parse().unwrap();
    let np = node_port(&s, "target");
    let paths = [
        ("direct to the pod", SocketAddr::new(pod_ip, 8080)),
        (
            "Service, same node",
            SocketAddr::from((s.agent("bench-a1").ip, np)),
        ),
        (
            "Service, same site",
            SocketAddr::from((s.agent("bench-a2").ip, np)),
        ),
        (
            "Service, other site (relayed)",
            SocketAddr::from((s.agent("bench-b1").ip, np)),
        ),
    ];
    for (_, at) in &paths {
        wait_answer(*at);
    }
    println!("| path | median ms | p99 ms | requests/s (8 clients) |");
    println!("| --- | --- | --- | --- |");
    let mut direct = 0.0;
    for (what, at) in &paths {
        let (p50, p99) = latency(*at, requests);
        let rps = throughput(*at, 8, secs);
        if direct == 0.0 {
            direct = p50;
        }
        println!(
            "| {what} | {p50:.2} ({:.2}x) | {p99:.2} | {rps:.0} |",
            p50 / direct
        );
    }

    // Ready to routed everywhere.
    let mut yaml = deployment("fresh", "bench-a1", 0);
    yaml += &http_service("fresh", "fresh", 80, "NodePort");
    s.apply("fresh.yaml", &yaml);
    let fresh_np = node_port(&s, "fresh");
    let out = s.ctl(&["scale", "deployment", "fresh", "--replicas", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = Instant::now();
    let nodes = ["bench-a1", "bench-a2", "bench-b1"];
    let probes: Vec<_> = nodes
        .iter()
        .map(|n| {
            let at = SocketAddr::from((s.agent(n).ip, fresh_np));
            std::thread::spawn(move || {
                while start.elapsed() < Duration::from_secs(120) {
                    if matches!(http_get(at, "/", Duration::from_secs(1)), Ok((200, _))) {
                        return start.elapsed();
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                panic!("{at} never routed");
            })
        })
        .collect();
    let mut ready_at = None;
    while ready_at.is_none() && start.elapsed() < Duration::from_secs(120) {
        if s.pods("app=fresh").iter().any(running_ready) {
            ready_at = Some(start.elapsed());
        }
    }
    let ready_at = ready_at.expect("fresh pod Ready");
    let routed: Vec<Duration> = probes.into_iter().map(|p| p.join().unwrap()).collect();
    let last = routed.iter().max().copied().unwrap_or_default();
    println!(
        "\nready -> routed on every node: pod Ready seen at {:.2} s, last node routing at {:.2} s: {:.2} s (per node: {})",
        ready_at.as_secs_f64(),
        last.as_secs_f64(),
        last.saturating_sub(ready_at).as_secs_f64(),
        routed
            .iter()
            .zip(nodes)
            .map(|(d, n)| format!("{n} {:.2} s", d.saturating_sub(ready_at).as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Agent memory: 50 Services, then 1,000 connections held through it.
    let mut yaml = String::new();
    for i in 0..50 {
        yaml += &http_service(&format!("many-{i:02}"), "target", 80, "NodePort");
    }
    s.apply("many.yaml", &yaml);
    std::thread::sleep(Duration::from_secs(5));
    let services_rss = agent_rss_kib(&a1);
    let at = SocketAddr::from((s.agent("bench-a1").ip, np));
    let held: Vec<TcpStream> = (0..1000)
        .filter_map(|_| TcpStream::connect_timeout(&at, TIMEOUT).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let conns_rss = agent_rss_kib(&a1);
    println!(
        "\nagent RSS on bench-a1: {idle_rss} KiB before any Service, {services_rss} KiB with 51 Services, {conns_rss} KiB with {} connections held open through it ({:.1} KiB per connection)",
        held.len(),
        (conns_rss.saturating_sub(services_rss)) as f64 / held.len().max(1) as f64
    );
    drop(held);
}
