//! Rolling updates and rollbacks end to end, on the real Docker engine with
//! three agents in containers (each its own node) on the Docker networks of
//! two sites (`outpost_tests::Sites`), all through `outpostctl rollout`:
//! - a Deployment rolled from one image tag to another completes, and
//!   `rollout status` follows it to `successfully rolled out`;
//! - a new version whose readiness probe never passes stalls with the old
//!   pods serving, `rollout status` exits 1 at the progress deadline, and
//!   `rollout undo` brings the previous version back;
//! - `rollout history` lists the revisions with their change cause,
//!   `undo --to-revision` goes to any of them and refuses one that does
//!   not exist; `restart`, `pause` and `resume` do what kubectl's do;
//! - a new image no node holds: the old pods all serve until
//!   `outpostctl image push` brings it, then the rollout completes.
//!
//! The two tags are the workload HTTP image tagged twice: the same bytes,
//! two templates, as a rollout from `:v1` to `:v2` of one program is.

use outpost_tests::{docker, docker_ok, Cluster, Sites, Timing};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Output;
use std::time::{Duration, Instant};

const V1: &str = "outpost/workload-http:rollout-v1";
const V2: &str = "outpost/workload-http:rollout-v2";
/// Loaded onto the nodes only by `outpostctl image push`.
const V3: &str = "outpost/workload-http:rollout-v3";

fn nodes() -> Vec<(&'static str, &'static str)> {
    vec![("roll-a1", "a"), ("roll-a2", "a"), ("roll-b1", "b")]
}

/// Removes the pushed image when the test ends; declared before the
/// [`Sites`], so it runs after the containers using the image are gone.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = docker(&["rmi", V3]);
    }
}

fn cluster() -> Sites {
    outpost_workloads::ensure_images().expect("building the workload images");
    for tag in [V1, V2] {
        docker_ok(&["tag", outpost_workloads::HTTP_IMAGE, tag]);
    }
    let _ = docker(&["rmi", V3]);
    Sites::start(Timing::default(), &nodes())
}

/// Deployment `roll`: 4 replicas, one surge, one unavailable, a readiness
/// probe on `probe_port` (8080 passes, 9 never does), a 20 s progress
/// deadline.
fn manifest(image: &str, cause: &str, probe_port: u16) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: roll
  annotations: {{kubernetes.io/change-cause: "{cause}"}}
spec:
  replicas: 4
  progressDeadlineSeconds: 20
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 1}}
  selector: {{matchLabels: {{app: roll}}}}
  template:
    metadata: {{labels: {{app: roll}}}}
    spec:
      containers:
      - name: http
        image: {image}
        ports: [{{containerPort: 8080, name: http}}]
        readinessProbe:
          httpGet: {{path: /healthz, port: {probe_port}}}
          periodSeconds: 1
          failureThreshold: 1
"#
    )
}

fn apply(c: &Cluster, yaml: &str) {
    c.apply("roll.yaml", yaml);
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// Runs outpostctl; (success, stdout, stderr).
fn ctl(c: &Cluster, args: &[&str]) -> (bool, String, String) {
    let out: Output = c.ctl(args);
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Images of the ready and of all active pods of `roll`.
fn pods(c: &Cluster) -> (Vec<String>, Vec<String>) {
    let v = c.ctl_json(&["get", "pods", "-l", "app=roll"]);
    let mut all = Vec::new();
    let mut ready_images = Vec::new();
    for p in v["items"].as_array().into_iter().flatten() {
        if p["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        let image = p["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if ready(p) {
            ready_images.push(image.clone());
        }
        all.push(image);
    }
    (ready_images, all)
}

/// `rollout status` until it ends; its output and how long it took.
fn status(c: &Cluster) -> (bool, String, String, Duration) {
    let t = Instant::now();
    let (ok, out, err) = ctl(
        c,
        &["rollout", "status", "deployment/roll", "--timeout", "180s"],
    );
    (ok, out, err, t.elapsed())
}

fn assert_rolled_out(c: &Cluster, image: &str, what: &str) -> Duration {
    let (ok, out, err, took) = status(c);
    assert!(
        ok,
        "{what}: rollout status failed: {out}{err}\n{}",
        c.logs()
    );
    assert_eq!(
        out.lines().last(),
        Some("deployment \"roll\" successfully rolled out"),
        "{what}: {out}"
    );
    for l in out.lines() {
        assert!(
            l.starts_with("Waiting for deployment \"roll\" rollout to finish: ")
                || l == "Waiting for deployment spec update to be observed..."
                || l == "deployment \"roll\" successfully rolled out",
            "{what}: {l:?}"
        );
    }
    let (ready_images, all) = pods(c);
    assert_eq!(all.len(), 4, "{what}: {all:?}");
    assert!(
        ready_images.len() == 4 && ready_images.iter().all(|i| i == image),
        "{what}: {ready_images:?}"
    );
    println!("{what}: rolled out in {took:.1?}; rollout status said:\n{out}");
    took
}

fn history(c: &Cluster) -> Vec<(String, String)> {
    let (ok, out, err) = ctl(c, &["rollout", "history", "deploy", "roll"]);
    assert!(ok, "{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("deployment.apps/roll "));
    assert_eq!(
        lines
            .next()
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["REVISION", "CHANGE-CAUSE"])
    );
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (r, cause) = l.split_once(' ').unwrap();
            (r.to_string(), cause.trim().to_string())
        })
        .collect()
}

fn revisions(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(r, c)| (r.to_string(), c.to_string()))
        .collect()
}

#[test]
fn rolling_update_status_history_undo_restart_pause() {
    let _cleanup = Cleanup;
    let c = cluster();
    apply(&c, &manifest(V1, "v1", 8080));
    assert_rolled_out(&c, V1, "first version");

    // v1 -> v2: availability held while the rollout runs.
    apply(&c, &manifest(V2, "v2", 8080));
    let took = assert_rolled_out(&c, V2, "v1 -> v2");
    assert!(took < Duration::from_secs(120), "{took:?}");
    assert_eq!(
        history(&c),
        revisions(&[("1", "v1"), ("2", "v2")]),
        "both revisions with their change cause"
    );

    // v3 never passes its readiness probe: the rollout stalls with at
    // least 3 of the v2 pods serving, and status fails at the deadline.
    apply(&c, &manifest(V1, "v3 broken probe", 9));
    let (ok, out, err) = ctl(&c, &["rollout", "status", "deploy/roll", "-w=false"]);
    assert!(ok, "-w=false prints the status once and succeeds: {err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("Waiting for deployment"), "{out}");
    let (ok, _, err) = ctl(&c, &["rollout", "status", "deploy/roll", "--timeout", "2s"]);
    assert!(!ok);
    assert_eq!(err.trim(), "error: timed out waiting for the condition");
    let (ok, out, err, took) = status(&c);
    assert!(!ok, "status of a stalled rollout succeeded: {out}");
    assert_eq!(
        err.trim(),
        "error: deployment \"roll\" exceeded its progress deadline",
        "{out}"
    );
    assert!(
        out.contains("Waiting for deployment \"roll\" rollout to finish"),
        "{out}"
    );
    println!("broken v3: rollout status failed after {took:.1?}:\n{out}{err}");
    let (ready_images, all) = pods(&c);
    assert!(
        ready_images.len() >= 3 && ready_images.iter().all(|i| i == V2),
        "the old pods keep serving: ready {ready_images:?} of {all:?}"
    );
    assert!(
        all.len() <= 5,
        "never more than replicas + maxSurge: {all:?}"
    );
    let events = text(&c.ctl(&["get", "events", "--for", "deployment/roll"]).stdout);
    assert!(events.contains("ProgressDeadlineExceeded"), "{events}");
    // Past the deadline nothing more is scaled down.
    std::thread::sleep(Duration::from_secs(5));
    let (ready_after, _) = pods(&c);
    assert!(
        ready_after.len() >= 3 && ready_after.iter().all(|i| i == V2),
        "{ready_after:?}"
    );

    // Undo: back to v2 (its ReplicaSet becomes revision 4).
    let (ok, out, err) = ctl(&c, &["rollout", "undo", "deployment", "roll"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "deployment.apps/roll rolled back");
    assert_rolled_out(&c, V2, "undo of the broken v3");
    assert_eq!(
        history(&c),
        revisions(&[("1", "v1"), ("3", "v3 broken probe"), ("4", "v2")])
    );
    let (ok, out, _) = ctl(
        &c,
        &["rollout", "history", "deployment/roll", "--revision", "3"],
    );
    assert!(ok);
    assert!(
        out.starts_with("deployment.apps/roll with revision #3\nPod Template:"),
        "{out}"
    );
    assert!(out.contains("http-get :9/healthz"), "{out}");

    // Undo to a revision that does not exist: a clear error, no change.
    let (ok, _, err) = ctl(
        &c,
        &[
            "rollout",
            "undo",
            "deployments",
            "roll",
            "--to-revision",
            "9",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("unable to find specified revision 9 in history"),
        "{err}"
    );
    // And to the first one.
    let (ok, out, err) = ctl(
        &c,
        &["rollout", "undo", "deploy/roll", "--to-revision", "1"],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "deployment.apps/roll rolled back");
    assert_rolled_out(&c, V1, "undo to revision 1");

    // Restart: a new template (restartedAt), every pod replaced.
    let before: BTreeSet<String> = c.ctl_json(&["get", "pods", "-l", "app=roll"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["uid"].as_str().unwrap().to_string())
        .collect();
    let (ok, out, err) = ctl(&c, &["rollout", "restart", "deployment/roll"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "deployment.apps/roll restarted");
    assert_rolled_out(&c, V1, "restart");
    let d = c.ctl_json(&["get", "deployment", "roll"]);
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string(),
        "{d}"
    );
    let after: BTreeSet<String> = c.ctl_json(&["get", "pods", "-l", "app=roll"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["uid"].as_str().unwrap().to_string())
        .collect();
    assert!(before.is_disjoint(&after), "every pod was replaced");

    // Pause: a template change waits; resume rolls it out.
    let (ok, out, err) = ctl(&c, &["rollout", "pause", "deployment/roll"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "deployment.apps/roll paused");
    let (ok, _, err) = ctl(&c, &["rollout", "pause", "deployment/roll"]);
    assert!(!ok && err.contains("is already paused"), "{err}");
    let rs_before = c.ctl_json(&["get", "rs", "-l", "app=roll"])["items"]
        .as_array()
        .unwrap()
        .len();
    let d = c.ctl_json(&["get", "deployment", "roll"]);
    let mut edited = d.clone();
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = Value::from(V2);
    // Applied as an operator would (no resourceVersion: the controller's
    // status writes would make it a Conflict).
    for k in ["uid", "creationTimestamp", "generation", "resourceVersion"] {
        edited["metadata"].as_object_mut().unwrap().remove(k);
    }
    edited.as_object_mut().unwrap().remove("status");
    apply(&c, &serde_json::to_string(&edited).unwrap());
    std::thread::sleep(Duration::from_secs(3));
    let (_, all) = pods(&c);
    assert!(
        all.iter().all(|i| i == V1),
        "nothing rolled while paused: {all:?}"
    );
    assert_eq!(
        c.ctl_json(&["get", "rs", "-l", "app=roll"])["items"]
            .as_array()
            .unwrap()
            .len(),
        rs_before
    );
    let (ok, out, err) = ctl(&c, &["rollout", "resume", "deployment/roll"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "deployment.apps/roll resumed");
    assert_rolled_out(&c, V2, "resume");
    let (ok, _, err) = ctl(&c, &["rollout", "status", "pods", "x"]);
    assert!(!ok && err.contains("rollout works on deployments"), "{err}");

    // A new image no node has (no registry here: its pull fails until it
    // is pushed over the link): the surge pod waits for it while all four
    // old pods serve (Kubernetes would stop one at once, maxUnavailable
    // 1); `image push` brings it and the rollout completes.
    let tar = c.path("v3.tar");
    docker_ok(&["tag", outpost_workloads::HTTP_IMAGE, V3]);
    docker_ok(&["save", "-o", tar.to_str().unwrap(), V3]);
    docker_ok(&["rmi", V3]);
    c.wait_image_unreported(V3);
    apply(&c, &manifest(V3, "v3 pushed", 8080));
    // Well inside the 20 s progress deadline.
    std::thread::sleep(Duration::from_secs(5));
    let (ready_images, all) = pods(&c);
    assert!(
        ready_images.len() == 4 && ready_images.iter().all(|i| i == V2),
        "every old pod serves while the image is missing: ready {ready_images:?} of {all:?}"
    );
    assert_eq!(
        all.iter().filter(|i| *i == V3).count(),
        1,
        "only the surge pod waits for the image: {all:?}"
    );
    let (ok, out, err) = ctl(
        &c,
        &["image", "push", tar.to_str().unwrap(), "--node", "roll-a1"],
    );
    assert!(ok, "image push: {out}{err}");
    assert_rolled_out(&c, V3, "image pushed");
}
