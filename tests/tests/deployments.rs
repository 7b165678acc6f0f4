//! Deployments, Services and the scheduler end to end, on the real Docker
//! engine, with several agents (separate processes, each its own node) in
//! several sites:
//! - the Deployment and Service of the Kubernetes getting-started seed
//!   (`shared/seeds/002`), unchanged but for the image, run two replicas
//!   spread over the sites that each serve on their pod IP, and the
//!   Service's endpoints list both;
//! - a pod with an impossible request stays Pending with the scheduler's
//!   message, per node and reason;
//! - a cordoned node gets nothing new;
//! - endpoints follow readiness;
//! - a controller killed with SIGKILL and restarted leaves every container
//!   as it was (same ids, same start times).

use outpost_tests::{docker, running_ready, Cluster, NodeContainers, Timing};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The test's nodes and their sites: two in site a, one in site b, named
/// after the test so tests running side by side never share a node name
/// (containers are told apart by it).
fn nodes(prefix: &str) -> Vec<(String, &'static str)> {
    vec![
        (format!("{prefix}-a1"), "a"),
        (format!("{prefix}-a2"), "a"),
        (format!("{prefix}-b1"), "b"),
    ]
}

fn cluster(prefix: &str) -> Cluster {
    outpost_workloads::ensure_images().expect("building the workload images");
    Cluster::with_sites(Timing::default(), &nodes(prefix))
}

fn pods(c: &Cluster, selector: &str) -> Vec<Value> {
    c.pods(selector)
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The seed's manifests, with only the image name changed.
fn seed() -> (String, String) {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/seeds/002_cd92271855791a77.txt"),
    )
    .ok();
    let deployment = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: my-webapp
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web-container
        image: outpost/workload-web:dev # Replace with your image
        ports:
        - containerPort: 80
"#;
    let service = r#"apiVersion: v1
kind: Service
metadata:
  name: web-service
spec:
  selector:
    app: web
  ports:
    - protocol: TCP
      port: 80
      targetPort: 80
  type: LoadBalancer
"#;
    if let Some(t) = text {
        // The manifests above are the seed's, byte for byte, but the image.
        let seed_deploy = deployment.replace(
            "outpost/workload-web:dev # Replace with your image",
            "your-docker-hub-username/my-image:latest # Replace with your image",
        );
        assert!(
            t.contains(seed_deploy.trim()),
            "the seed Deployment changed"
        );
        assert!(t.contains(service.trim()), "the seed Service changed");
    }
    (deployment.to_string(), service.to_string())
}

#[test]
fn seed_deployment_and_service_run_spread_and_serve() {
    let _cleanup = NodeContainers::of(nodes("seed").into_iter().map(|(n, _)| n));
    let c = cluster("seed");
    let (deployment, service) = seed();
    let out = c.apply("deployment.yaml", &deployment);
    assert_eq!(out.trim(), "deployment.apps/my-webapp created");
    let out = c.apply("service.yaml", &service);
    assert_eq!(out.trim(), "service/web-service created");
    let took = c.wait_for(
        "two web replicas Running and Ready",
        Duration::from_secs(90),
        |c| {
            let p = pods(c, "app=web");
            p.len() == 2 && p.iter().all(running_ready)
        },
    );
    println!("seed deployment: 2 replicas Running and Ready {took:.1?} after apply");
    let p = pods(&c, "app=web");
    let on: BTreeSet<String> = p
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap().to_string())
        .collect();
    let sites: BTreeSet<&str> = on
        .iter()
        .map(|n| nodes("seed").into_iter().find(|(m, _)| m == n).unwrap().1)
        .collect();
    println!("replicas on nodes {on:?}, sites {sites:?}");
    assert_eq!(
        sites.len(),
        2,
        "the two replicas are spread over both sites"
    );
    for pod in &p {
        let ip = pod["status"]["podIP"].as_str().unwrap();
        let name = pod["metadata"]["name"].as_str().unwrap();
        let body = http_get(&format!("{ip}:80"), "/").expect("the replica answers on its pod IP");
        assert!(body.contains(name), "{name} at {ip} answered {body:?}");
    }
    // The Deployment owns a ReplicaSet which owns the pods.
    let d = c.ctl_json(&["get", "deployment", "my-webapp"]);
    assert_eq!(d["status"]["availableReplicas"], 2, "{d}");
    let rs = c.ctl_json(&["get", "rs", "-l", "app=web"]);
    assert_eq!(rs["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        rs["items"][0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    // The Service got a cluster IP and its endpoints are both replicas.
    let svc = c.ctl_json(&["get", "svc", "web-service"]);
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| !ip.is_empty()),
        "{svc}"
    );
    // A LoadBalancer, as k3s's ServiceLB: the ingress lists every Ready
    // node's first IPv4 address, and `get svc` shows them as EXTERNAL-IP.
    let node_ips: BTreeSet<String> = c.ctl_json(&["get", "nodes"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| {
            n["status"]["addresses"]
                .as_array()?
                .iter()
                .filter_map(|a| a["address"].as_str())
                .find(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
                .map(str::to_string)
        })
        .collect();
    assert!(!node_ips.is_empty(), "the nodes report addresses");
    let ingress = |c: &Cluster| -> BTreeSet<String> {
        c.ctl_json(&["get", "svc", "web-service"])["status"]["loadBalancer"]["ingress"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["ip"].as_str().map(str::to_string))
            .collect()
    };
    let took = c.wait_for("the load balancer ingress", Duration::from_secs(30), |c| {
        ingress(c) == node_ips
    });
    println!("load balancer ingress {node_ips:?} {took:.1?} after the pods were ready");
    let row = c.ctl(&["get", "svc", "web-service", "-o", "wide"]);
    let row = String::from_utf8_lossy(&row.stdout);
    let external = node_ips.iter().cloned().collect::<Vec<_>>().join(",");
    assert!(row.contains(&external), "EXTERNAL-IP {external} in {row}");
    let want: BTreeSet<String> = p
        .iter()
        .map(|p| p["status"]["podIP"].as_str().unwrap().to_string())
        .collect();
    let took = c.wait_for(
        "endpoints list both replicas",
        Duration::from_secs(30),
        |c| endpoint_ips(c, "web-service").0 == want,
    );
    println!("endpoints complete {took:.1?} after the pods were ready");
    let ep = c.ctl_json(&["get", "endpoints", "web-service"]);
    for a in ep["subsets"][0]["addresses"].as_array().unwrap() {
        assert!(on.contains(a["nodeName"].as_str().unwrap()), "{a}");
        assert!(!a["nodeIP"].as_str().unwrap_or("").is_empty(), "{a}");
    }
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], 80);
    // Scale to 4 and back to 1: the count follows.
    assert!(c
        .ctl(&["scale", "deployment", "my-webapp", "--replicas", "4"])
        .status
        .success());
    c.wait_for("4 replicas", Duration::from_secs(90), |c| {
        let p = pods(c, "app=web");
        p.len() == 4 && p.iter().all(running_ready)
    });
    assert!(c
        .ctl(&["scale", "deployment", "my-webapp", "--replicas", "1"])
        .status
        .success());
    c.wait_for("1 replica", Duration::from_secs(90), |c| {
        pods(c, "app=web").len() == 1
    });
    // Deleting the Deployment takes its ReplicaSet and pods with it.
    assert!(c
        .ctl(&["delete", "deployment", "my-webapp"])
        .status
        .success());
    c.wait_for("pods and replicasets gone", Duration::from_secs(90), |c| {
        pods(c, "app=web").is_empty()
            && c.ctl_json(&["get", "rs", "-l", "app=web"])["items"]
                .as_array()
                .is_some_and(Vec::is_empty)
    });
}

/// (ready, not ready) endpoint IPs of a Service.
fn endpoint_ips(c: &Cluster, svc: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let out = c.ctl(&["get", "endpoints", svc, "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut ready = BTreeSet::new();
    let mut not_ready = BTreeSet::new();
    for s in v["subsets"].as_array().into_iter().flatten() {
        for a in s["addresses"].as_array().into_iter().flatten() {
            ready.insert(a["ip"].as_str().unwrap_or_default().to_string());
        }
        for a in s["notReadyAddresses"].as_array().into_iter().flatten() {
            not_ready.insert(a["ip"].as_str().unwrap_or_default().to_string());
        }
    }
    (ready, not_ready)
}

#[test]
fn unschedulable_cordoned_and_readiness() {
    let _cleanup = NodeContainers::of(nodes("sched").into_iter().map(|(n, _)| n));
    let c = cluster("sched");
    // An impossible request: Pending, with the message naming every node.
    c.apply(
        "huge.yaml",
        r#"apiVersion: v1
kind: Pod
metadata: {name: huge}
spec:
  containers:
  - name: c
    image: outpost/workload-http:dev
    resources: {requests: {memory: 100Ti}}
"#,
    );
    let took = c.wait_for("the scheduler's message", Duration::from_secs(30), |c| {
        let p = c.ctl_json(&["get", "pod", "huge"]);
        p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter().any(|k| {
                k["type"] == "PodScheduled"
                    && k["status"] == "False"
                    && k["reason"] == "Unschedulable"
                    && k["message"] == "0/3 nodes are available: 3 Insufficient memory."
            })
        })
    });
    println!("unschedulable message {took:.1?} after apply");
    let d = String::from_utf8_lossy(&c.ctl(&["describe", "pod", "huge"]).stdout).to_string();
    assert!(
        d.contains("0/3 nodes are available: 3 Insufficient memory."),
        "{d}"
    );
    assert!(d.contains("FailedScheduling"), "{d}");
    let table = String::from_utf8_lossy(&c.ctl(&["get", "pods"]).stdout).to_string();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("huge") && l.contains("Pending")),
        "{table}"
    );
    assert!(c.ctl(&["delete", "pod", "huge"]).status.success());

    // A cordoned node gets nothing new.
    let out = c.ctl(&["cordon", "sched-a1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.apply(
        "ready.yaml",
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: ready}
spec:
  replicas: 4
  selector: {matchLabels: {app: ready}}
  template:
    metadata: {labels: {app: ready}}
    spec:
      containers:
      - name: http
        image: outpost/workload-http:dev
        ports: [{containerPort: 8080, name: http}]
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 1
          failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata: {name: ready}
spec:
  selector: {app: ready}
  ports: [{port: 80, targetPort: http}]
"#,
    );
    c.wait_for("4 ready pods", Duration::from_secs(90), |c| {
        let p = pods(c, "app=ready");
        p.len() == 4 && p.iter().all(running_ready)
    });
    let p = pods(&c, "app=ready");
    let on: BTreeMap<String, usize> = p.iter().fold(BTreeMap::new(), |mut m, p| {
        *m.entry(p["spec"]["nodeName"].as_str().unwrap().to_string())
            .or_default() += 1;
        m
    });
    println!("with sched-a1 cordoned: {on:?}");
    assert!(
        !on.contains_key("sched-a1"),
        "nothing new on the cordoned node: {on:?}"
    );
    let nodes = String::from_utf8_lossy(&c.ctl(&["get", "nodes"]).stdout).to_string();
    assert!(
        nodes
            .lines()
            .any(|l| l.starts_with("sched-a1") && l.contains("SchedulingDisabled")),
        "{nodes}"
    );
    assert!(c.ctl(&["uncordon", "sched-a1"]).status.success());

    // Endpoints follow readiness: fail one pod's probe, it moves to
    // notReadyAddresses; heal it, it comes back.
    let all: BTreeSet<String> = p
        .iter()
        .map(|p| p["status"]["podIP"].as_str().unwrap().to_string())
        .collect();
    c.wait_for("endpoints list the 4 pods", Duration::from_secs(30), |c| {
        endpoint_ips(c, "ready").0 == all
    });
    let victim = all.iter().next().unwrap().clone();
    http_get(&format!("{victim}:8080"), "/fail").expect("the pod takes /fail");
    let took = c.wait_for(
        "the failing pod leaves the ready endpoints",
        Duration::from_secs(30),
        |c| {
            let (ready, not_ready) = endpoint_ips(c, "ready");
            !ready.contains(&victim) && not_ready.contains(&victim) && ready.len() == 3
        },
    );
    println!("not-ready pod left the endpoints {took:.1?} after its probe started failing");
    http_get(&format!("{victim}:8080"), "/fail").expect("the pod takes /fail again");
    let took = c.wait_for("the healed pod is back", Duration::from_secs(30), |c| {
        endpoint_ips(c, "ready").0 == all
    });
    println!("healed pod back in the endpoints {took:.1?} after its probe passed");
}

/// (container id, started at) of every container of the test's nodes.
fn containers(prefix: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (n, _) in nodes(prefix) {
        let (_, ids) = docker(&[
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=dev.outpost.node={n}"),
        ]);
        for id in ids.lines() {
            let (_, started) = docker(&["inspect", "-f", "{{.State.StartedAt}}", id]);
            out.insert(id.to_string(), started);
        }
    }
    out
}

#[test]
fn controller_kill_and_restart_leaves_every_container_alone() {
    let _cleanup = NodeContainers::of(nodes("restart").into_iter().map(|(n, _)| n));
    let mut c = cluster("restart");
    c.apply(
        "steady.yaml",
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: steady}
spec:
  replicas: 5
  selector: {matchLabels: {app: steady}}
  template:
    metadata: {labels: {app: steady}}
    spec:
      containers:
      - {name: http, image: outpost/workload-http:dev}
"#,
    );
    c.wait_for("5 steady pods", Duration::from_secs(90), |c| {
        let p = pods(c, "app=steady");
        p.len() == 5 && p.iter().all(running_ready)
    });
    let before = containers("restart");
    assert_eq!(before.len(), 5, "{before:?}");
    let pods_before: BTreeSet<String> = pods(&c, "app=steady")
        .iter()
        .map(|p| p["metadata"]["uid"].as_str().unwrap().to_string())
        .collect();
    c.kill_controller();
    std::thread::sleep(Duration::from_secs(2));
    c.start_controller();
    let took = c.wait_for("every node Ready again", Duration::from_secs(60), |c| {
        nodes("restart").iter().all(|(n, _)| c.is_ready(n))
    });
    println!("all nodes Ready {took:.1?} after the restart");
    // Statuses survived the restart: Running right away, not Pending.
    let p = pods(&c, "app=steady");
    assert_eq!(p.len(), 5);
    assert!(p.iter().all(|p| p["status"]["phase"] == "Running"), "{p:?}");
    // Give the controllers time to do anything they would do.
    std::thread::sleep(Duration::from_secs(10));
    let after = containers("restart");
    assert_eq!(before, after, "same containers, same start times");
    let pods_after: BTreeSet<String> = pods(&c, "app=steady")
        .iter()
        .map(|p| p["metadata"]["uid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(pods_before, pods_after, "same pod objects");
    println!(
        "{} containers unchanged across a controller SIGKILL and restart",
        after.len()
    );
}
