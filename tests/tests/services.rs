//! Service routing on the real engine, agents in containers on per-site
//! Docker networks with no route between them (`outpost_tests::Sites`).
//!
//! Pods reach Services by name through the agent's resolver and by cluster
//! IP through the agent's proxy; an endpoint on another site is reached
//! through the relay over the agents' links to the controller. The
//! workload calling a Service is `outpost-http --upstream`, which answers
//! `<its pod> -> <the upstream's answer>`, so each answer says where the
//! request went. The test process reaches pods at their addresses on the
//! site networks (the host is each network's gateway) and node ports at
//! the agents' addresses.

use outpost_tests::{
    docker, http_deployment, http_get, http_service, ready_pod, running_ready, Sites, Timing,
};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const HTTP_TIMEOUT: Duration = Duration::from_secs(8);

/// `outpost-http` on `site`, calling `upstream` when given.
fn deployment(name: &str, site: &str, upstream: Option<&str>) -> String {
    let args: Vec<&str> = upstream.map(|u| vec!["--upstream", u]).unwrap_or_default();
    http_deployment(name, ("topology.outpost.dev/site", site), &args, 1)
}

/// A pod on `site` that calls `url` once at start and exits (0: answered).
fn first_call_pod(name: &str, site: &str, url: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  restartPolicy: Never
  nodeSelector: {{topology.outpost.dev/site: {site}}}
  containers:
  - name: call
    image: outpost/workload-http:dev
    args: ["--once", "--upstream", "{url}"]
---
"#
    )
}

fn ready(s: &Sites, app: &str) -> Value {
    ready_pod(s, app, Duration::from_secs(90))
}

fn name_of(p: &Value) -> String {
    p["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn addr_of(p: &Value, port: u16) -> SocketAddr {
    let ip = p["status"]["podIP"].as_str().expect("a pod IP");
    SocketAddr::new(ip.parse().expect("an IP"), port)
}

/// GETs `/` from `addr` until the answer satisfies `ok` (routes and pod
/// routes settle within a few seconds), or panics with the last answer.
fn answer_until(addr: SocketAddr, what: &str, ok: impl Fn(u16, &str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut last = String::new();
    while Instant::now() < deadline {
        match http_get(addr, "/", HTTP_TIMEOUT) {
            Ok((code, body)) if ok(code, &body) => return body,
            Ok((code, body)) => last = format!("{code} {body}"),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("{what}: no expected answer from {addr} within 45 s; last: {last}");
}

#[test]
fn a_pod_reaches_a_service_on_another_site_by_name_and_follows_its_replacement() {
    outpost_workloads::ensure_images().expect("building the workload images");
    let s = Sites::start(
        Timing::default(),
        &[("svc-a1", "a"), ("svc-b1", "b"), ("svc-b2", "b")],
    );
    let mut yaml = String::new();
    yaml += &deployment("store", "b", None);
    yaml += &http_service("store", "store", 80, "ClusterIP");
    // Short name: the pod's search list makes it store.default.svc...
    yaml += &deployment("client", "a", Some("http://store/"));
    yaml += &http_service("nothing", "nobody", 80, "ClusterIP");
    yaml += &deployment(
        "lonely",
        "a",
        Some("http://nothing.default.svc.cluster.local/"),
    );
    s.apply("services.yaml", &yaml);
    let store = ready(&s, "store");
    let client = ready(&s, "client");
    let lonely = ready(&s, "lonely");
    let started = Instant::now();
    let body = answer_until(addr_of(&client, 8080), "client -> store", |code, b| {
        code == 200 && b.ends_with(&name_of(&store))
    });
    println!(
        "client on site a reached store on site b by name: {body:?} ({:.1} s after both were ready)",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(body, format!("{} -> {}", name_of(&client), name_of(&store)));

    // A pod reaches Services from its first instant: the agent routes its
    // sandbox before its container starts, so one call made at start (no
    // retry, restartPolicy Never) is answered.
    s.apply(
        "first-call.yaml",
        &first_call_pod("first-call", "a", "http://store/"),
    );
    let mut pod = Value::Null;
    s.wait_for(
        "the first-call pod to finish",
        Duration::from_secs(90),
        |c| {
            pod = c.pods("app=first-call").pop().unwrap_or_default();
            matches!(
                pod["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            )
        },
    );
    let (_, out) = docker(&[
        "ps",
        "-aq",
        "--filter",
        "label=dev.outpost.node=svc-a1",
        "--filter",
        "label=dev.outpost.pod=first-call",
        "--filter",
        "label=dev.outpost.container=call",
    ]);
    let logs = out
        .lines()
        .next()
        .map(|id| docker(&["logs", id]).1)
        .unwrap_or_default();
    assert_eq!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded"),
        "a call at the pod's start must be answered; its output: {logs:?}; the pod: {pod}"
    );
    println!("a call made at the pod's start: {:?}", logs.trim());
    let relayed = s
        .metric(r#"outpost_service_relayed_connections_total{service="default/store"}"#)
        .unwrap_or(0.0);
    assert!(
        relayed >= 1.0,
        "site a has no route to site b: the relay carried it ({relayed})"
    );

    // The endpoint dies; the Deployment's replacement, on the other node of
    // site b (its node is cordoned first), is reached without the client
    // changing anything.
    let old = name_of(&store);
    let old_node = store["spec"]["nodeName"]
        .as_str()
        .expect("bound")
        .to_string();
    let out = s.ctl(&["cordon", &old_node]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.ctl(&["delete", "pod", &old]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut replacement = None;
    s.wait_for(
        "a replacement store pod Ready",
        Duration::from_secs(90),
        |c| {
            replacement = c
                .pods("app=store")
                .into_iter()
                .find(|p| running_ready(p) && name_of(p) != old);
            replacement.is_some()
        },
    );
    let replacement = replacement.expect("waited for");
    assert_ne!(
        replacement["spec"]["nodeName"].as_str(),
        Some(old_node.as_str())
    );
    let new = name_of(&replacement);
    let switched = Instant::now();
    let body = answer_until(addr_of(&client, 8080), "client -> new store", |code, b| {
        code == 200 && b.ends_with(&new)
    });
    println!(
        "after the store pod was deleted: {body:?} ({:.1} s after the replacement was ready)",
        switched.elapsed().as_secs_f64()
    );

    // A Service with no ready endpoint refuses at once, it does not hang.
    let t = Instant::now();
    let (code, body) = http_get(addr_of(&lonely, 8080), "/", HTTP_TIMEOUT).expect("an answer");
    println!(
        "a Service with no endpoint: {code} {body:?} in {} ms",
        t.elapsed().as_millis()
    );
    assert_eq!(code, 502);
    assert!(body.contains("connection refused"), "{body}");
}

#[test]
fn a_three_tier_application_answers_through_the_frontends_node_port() {
    outpost_workloads::ensure_images().expect("building the workload images");
    let s = Sites::start(Timing::default(), &[("tier-a1", "a"), ("tier-b1", "b")]);
    let mut yaml = String::new();
    yaml += &deployment("store", "a", None);
    yaml += &http_service("store", "store", 6000, "ClusterIP");
    yaml += &deployment("backend", "b", Some("http://store:6000/"));
    yaml += &http_service("backend", "backend", 80, "ClusterIP");
    yaml += &deployment("frontend", "a", Some("http://backend/"));
    yaml += &http_service("frontend", "frontend", 8088, "LoadBalancer");
    yaml += r#"apiVersion: v1
kind: Service
metadata:
  name: store-udp
spec:
  type: NodePort
  selector: {app: store}
  ports:
  - {name: echo, protocol: UDP, port: 7000, targetPort: 8080}
"#;
    s.apply("three-tier.yaml", &yaml);
    let (store, backend, frontend) = (
        ready(&s, "store"),
        ready(&s, "backend"),
        ready(&s, "frontend"),
    );
    let svc = s.ctl_json(&["get", "svc", "frontend"]);
    let node_port = svc["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .expect("a node port");
    let want = format!(
        "{} -> {} -> {}",
        name_of(&frontend),
        name_of(&backend),
        name_of(&store)
    );
    // Every node serves the node port, also the one without a frontend.
    for node in ["tier-a1", "tier-b1"] {
        let at = SocketAddr::from((s.agent(node).ip, node_port));
        let body = answer_until(at, "three tiers through the node port", |code, b| {
            code == 200 && b == want
        });
        println!("node port {node_port} on {node}: {body:?}");
    }
    // The load balancer port on the nodes' addresses, listed in the status.
    let mut ingress = Vec::new();
    s.wait_for("load balancer ingress", Duration::from_secs(30), |c| {
        let svc = c.ctl_json(&["get", "svc", "frontend"]);
        ingress = svc["status"]["loadBalancer"]["ingress"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i["ip"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        ingress.len() == 2
    });
    for ip in &ingress {
        let at = SocketAddr::new(ip.parse().expect("an IP"), 8088);
        let body = answer_until(at, "three tiers through the load balancer", |code, b| {
            code == 200 && b == want
        });
        println!("load balancer {at}: {body:?}");
    }

    // UDP: the store's echo through its node port, on its own site's node
    // (direct) and on the other site's (the relay).
    let svc = s.ctl_json(&["get", "svc", "store-udp"]);
    let udp_port = svc["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .expect("a node port");
    for node in ["tier-a1", "tier-b1"] {
        let at = SocketAddr::from((s.agent(node).ip, udp_port));
        let got = udp_until(at, &format!("{} ping-{node}", name_of(&store)));
        println!("UDP node port {udp_port} on {node}: {got:?}");
    }
}

/// Sends `ping-NODE` datagrams to `at` until `want` comes back (45 s).
fn udp_until(at: SocketAddr, want: &str) -> String {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("a UDP socket");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let msg = want.rsplit(' ').next().unwrap_or_default().to_string();
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut last = String::new();
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        let _ = sock.send_to(msg.as_bytes(), at);
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            last = String::from_utf8_lossy(&buf[..n]).to_string();
            assert_eq!(from, at, "the answer comes from the node port");
            if last == want {
                return last;
            }
        }
    }
    panic!("no {want:?} from {at} over UDP within 45 s; last: {last:?}");
}
