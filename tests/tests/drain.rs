//! `outpostctl drain` end to end, on the real Docker engine with two real
//! agents in containers (one node each) on the Docker networks of two
//! sites (`outpost_tests::Sites`): a Deployment with a readiness probe and a
//! PodDisruptionBudget of `minAvailable: replicas - 1`; draining one node
//! moves every pod to the other one, one eviction at a time, never more
//! than one pod unavailable, and nothing new lands on the drained node.

use outpost_tests::{bins, docker, docker_ok, node_of, Cluster, NodeContainers, Sites, Timing};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REPLICAS: usize = 4;

fn nodes() -> [(&'static str, &'static str); 2] {
    [("drain-a1", "a"), ("drain-b1", "b")]
}

fn pods(c: &Cluster) -> Vec<Value> {
    c.pods("app=web")
}

fn running_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["metadata"]["deletionTimestamp"].is_null()
        && p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn uid_of(p: &Value) -> String {
    p["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

const MANIFESTS: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: http
        image: outpost/workload-http:dev
        ports: [{containerPort: 8080, name: http}]
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 1
          failureThreshold: 1
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec:
  minAvailable: 3
  selector: {matchLabels: {app: web}}
"#;

#[test]
fn drain_honours_the_disruption_budget() {
    outpost_workloads::ensure_images().expect("building the workload images");
    let mut c = Sites::new(Timing::default(), &["a", "b"]);
    // Only a1 at first, so every replica starts on the node to drain.
    let (a1, b1) = (nodes()[0].0, nodes()[1].0);
    c.start_agent(a1, nodes()[0].1);
    c.wait_ready(a1);
    let path = c.path("web.yaml");
    std::fs::write(&path, MANIFESTS).unwrap();
    let out = c.ctl(&["apply", "-f", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "deployment.apps/web created\npoddisruptionbudget.policy/web created"
    );
    c.wait_for("4 ready pods on a1", Duration::from_secs(120), |c| {
        let p = pods(c);
        p.len() == REPLICAS && p.iter().all(running_ready)
    });
    c.start_agent(b1, nodes()[1].1);
    c.wait_ready(b1);
    c.wait_for("the budget allows one", Duration::from_secs(30), |c| {
        c.ctl_json(&["get", "pdb", "web"])["status"]["disruptionsAllowed"] == 1
    });
    let table = String::from_utf8_lossy(&c.ctl(&["get", "pdb"]).stdout).to_string();
    println!("{table}");
    assert!(
        table.starts_with("NAME   MIN AVAILABLE   MAX UNAVAILABLE   ALLOWED DISRUPTIONS   AGE\nweb    3               N/A               1"),
        "{table}"
    );
    let original: BTreeSet<String> = pods(&c).iter().map(uid_of).collect();

    let start = Instant::now();
    let mut drain = Command::new(&bins().ctl)
        .arg("--config")
        .arg(&c.config)
        .args(["drain", a1, "--timeout", "5m"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running outpostctl drain");
    let mut fewest_ready = usize::MAX;
    let mut new_on_a1 = BTreeSet::new();
    // Counts the Ready pods and notes any new pod on a1; returns the pods.
    let mut watch = |c: &Cluster| {
        let p = pods(c);
        if !p.is_empty() {
            fewest_ready = fewest_ready.min(p.iter().filter(|p| running_ready(p)).count());
        }
        for pod in p.iter().filter(|p| node_of(p) == a1) {
            if !original.contains(&uid_of(pod)) {
                new_on_a1.insert(uid_of(pod));
            }
        }
        p
    };
    let status = loop {
        watch(&c);
        if let Some(s) = drain.try_wait().expect("waiting for drain") {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(330),
            "drain still running after 5.5 minutes\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = start.elapsed();
    // The drain ends when the last evicted pod is gone; its replacement
    // may still be starting.
    let start_after = Instant::now();
    let p = loop {
        let p = watch(&c);
        if p.len() == REPLICAS && p.iter().all(|p| running_ready(p) && node_of(p) == b1) {
            break p;
        }
        assert!(
            start_after.elapsed() < Duration::from_secs(60),
            "the last replacement is not Ready on {b1}: {p:?}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let settled = start_after.elapsed();
    let out = drain.wait_with_output().expect("drain output");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    println!("drain took {took:.1?}, the last replacement Ready {settled:.1?} later; fewest Ready pods seen {fewest_ready} of {REPLICAS}\n--- stdout\n{stdout}--- stderr\n{stderr}");
    assert!(status.success(), "drain failed\n{}", c.logs());
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&format!("node/{a1} cordoned").as_str()));
    assert_eq!(lines.last(), Some(&format!("node/{a1} drained").as_str()));
    assert_eq!(
        lines.iter().filter(|l| l.ends_with(" evicted")).count(),
        REPLICAS,
        "{stdout}"
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("evicting pod default/web-")));
    // All four were tried at once and the budget let one go at a time.
    assert!(
        stderr.contains(
            "(will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget."
        ),
        "{stderr}"
    );
    // Three evictions had to wait for a replacement each: at least three
    // retry intervals.
    assert!(took >= Duration::from_secs(15), "{took:?}");
    assert!(
        fewest_ready >= REPLICAS - 1,
        "{fewest_ready} Ready at one point"
    );
    assert!(new_on_a1.is_empty(), "new pods on the drained node");
    assert!(p.iter().all(|p| !original.contains(&uid_of(p))));
    let (_, left) = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=dev.outpost.node={a1}"),
    ]);
    assert!(left.trim().is_empty(), "containers left on {a1}: {left}");
    let nodes = String::from_utf8_lossy(&c.ctl(&["get", "nodes"]).stdout).to_string();
    assert!(
        nodes
            .lines()
            .any(|l| l.starts_with(a1) && l.contains("SchedulingDisabled")),
        "{nodes}"
    );
    let describe = String::from_utf8_lossy(&c.ctl(&["describe", "pdb", "web"]).stdout).to_string();
    assert!(describe.contains("Allowed disruptions:  1"), "{describe}");
}

/// Running app containers (not the pause container) of pod `key` on the
/// node of the agent that runs it.
fn app_containers(node: &str, key: &str) -> Vec<String> {
    outpost_tests::pod_containers(node, key, "http")
}

/// Makes the app container of pod `key` deaf to SIGTERM: its init
/// (docker-init, which forwards SIGTERM to the app) is stopped with
/// SIGSTOP, so a SIGTERM stays pending and only the SIGKILL at the end of
/// the grace period ends the container, as with a process that ignores
/// SIGTERM (the workloads are std-only and cannot install a handler).
fn ignore_sigterm(node: &str, key: &str) {
    let ids = app_containers(node, key);
    assert_eq!(ids.len(), 1, "{ids:?}");
    docker_ok(&["kill", "--signal", "STOP", &ids[0]]);
}

/// A pod whose process ignores SIGTERM and asks for 30 s to stop
/// (`terminationGracePeriodSeconds: 30`): `delete pod --grace-period 2`
/// and `drain --grace-period 2` each have it gone in about 2 s, as the
/// agent stops it with the deletion's grace period.
#[test]
fn drain_and_delete_grace_periods_reach_the_agent() {
    let node = "drain-grace";
    let _cleanup = NodeContainers::of([node]);
    outpost_workloads::ensure_images().expect("building the workload images");
    let c = Cluster::with_ready_agent(node, &[]);
    let stubborn = |kind: &str, name: &str| {
        let template = r#"    spec:
      terminationGracePeriodSeconds: 30
      containers:
      - name: http
        image: outpost/workload-http:dev
"#;
        match kind {
            "pod" => format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\n{}",
                template.replace("\n    ", "\n").trim_start()
            ),
            _ => format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n{template}"
            ),
        }
    };
    c.apply("bare.yaml", &stubborn("pod", "stubborn"));
    c.apply("owned.yaml", &stubborn("deployment", "stubborn-owned"));
    c.wait_for("both running", Duration::from_secs(90), |c| {
        app_containers(node, "stubborn").len() == 1
            && c.pods("app=stubborn-owned")
                .iter()
                .any(|p| p["status"]["phase"] == "Running")
    });

    ignore_sigterm(node, "stubborn");

    // delete --grace-period 2
    let start = Instant::now();
    let out = c.ctl(&["delete", "pod", "stubborn", "--grace-period", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deleted = c.wait_for(
        "the deleted pod's container stopped and the pod gone",
        Duration::from_secs(25),
        |c| {
            app_containers(node, "stubborn").is_empty()
                && !c.ctl(&["get", "pod", "stubborn"]).status.success()
        },
    );
    let deleted_stop = start.elapsed();

    // drain --grace-period 2
    let owned = c.pods("app=stubborn-owned");
    let key = owned[0]["metadata"]["name"].as_str().unwrap().to_string();
    ignore_sigterm(node, &key);
    let start = Instant::now();
    let out = c.ctl(&["drain", node, "--grace-period", "2", "--timeout", "60s"]);
    let drained = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("pod/{key} evicted")), "{stdout}");
    c.wait_for(
        "the drained pod's container gone",
        Duration::from_secs(40),
        |_| app_containers(node, &key).is_empty(),
    );
    let drained_stop = start.elapsed();
    let events = String::from_utf8_lossy(&c.ctl(&["get", "events"]).stdout).to_string();
    println!(
        "terminationGracePeriodSeconds 30, SIGTERM ignored: delete --grace-period 2 -> container stopped and pod gone after {deleted_stop:.1?} (polled {deleted:.1?}); drain --grace-period 2 -> drain returned after {drained:.1?}, container gone after {drained_stop:.1?}"
    );
    assert!(events.contains("(grace period 2s)"), "{events}");
    for t in [deleted_stop, drained_stop] {
        assert!(t < Duration::from_secs(15), "{t:?}: not the pod's 30 s");
        assert!(
            t >= Duration::from_millis(1900),
            "{t:?}: SIGTERM must not have stopped it; the SIGKILL after 2 s did"
        );
    }
}
