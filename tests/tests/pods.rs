//! Pods end to end through the controller, on the real Docker engine:
//! a manifest applied with `outpostctl apply` runs on its node and answers on
//! its host port with its pod name; logs, top and describe come from the
//! agent; delete stops it. Autonomy: with the controller gone the agent keeps
//! the pod, restarts it per policy, survives its own restart, and converges
//! on reconnect without restarting anything. Image push: a `docker save`
//! tarball streamed over QUIC runs on the node; a push larger than the free
//! space is refused before any byte is sent.

use outpost_tests::{free_tcp_port, Cluster, Timing};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn images() {
    outpost_workloads::ensure_images().expect("building the workload images");
}

/// The docker CLI's trimmed output; callers here check it, not the status.
fn docker(args: &[&str]) -> String {
    outpost_tests::docker(args).1
}

/// Our containers of one pod (any state): (name, id).
fn containers_of(pod: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=dev.outpost.pod={pod}"),
        "--format",
        "{{.Names}}",
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

fn remove_pod_containers(pod: &str) {
    for name in containers_of(pod) {
        docker(&["rm", "-f", &name]);
    }
}

/// Removes a pod's containers when the test ends, passed or failed (pods
/// outlive their agent by design, so nothing else would).
struct Cleanup(&'static str);

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_pod_containers(self.0);
    }
}

fn pod(c: &Cluster, name: &str) -> Option<Value> {
    let out = c.ctl(&["get", "pod", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("pod json"))
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

fn first_container(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.split("\r\n\r\n").nth(1).map(str::to_string)
}

fn started_at(container: &str) -> String {
    docker(&["inspect", "-f", "{{.State.StartedAt}}", container])
}

#[test]
fn apply_run_logs_top_delete() {
    images();
    let pod_name = "web-e2e";
    remove_pod_containers(pod_name);
    let _cleanup = Cleanup(pod_name);
    let c = Cluster::with_ready_agent("pods-a", &[]);

    let port = free_tcp_port();
    let manifest = c.path("web.yaml");
    std::fs::write(
        &manifest,
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {pod_name}
  labels:
    app: web
spec:
  nodeName: pods-a
  terminationGracePeriodSeconds: 5
  containers:
    - name: http
      image: outpost/workload-http:dev
      ports:
        - containerPort: 8080
          hostPort: {port}
      resources:
        requests:
          memory: 16Mi
          cpu: 50m
        limits:
          memory: 64Mi
      readinessProbe:
        httpGet:
          path: /healthz
          port: 8080
        periodSeconds: 1
"#
        ),
    )
    .unwrap();
    let out = c.ctl(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("pod/{pod_name} created")
    );
    // Applying the same manifest again changes nothing.
    let again = c.ctl(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("unchanged"));

    let took = c.wait_for("pod Running and ready", Duration::from_secs(60), |c| {
        pod(c, pod_name)
            .is_some_and(|p| phase(&p) == "Running" && first_container(&p)["ready"] == true)
    });
    println!("pod Running and ready {took:.1?} after apply");

    // It answers on its host port with its pod name.
    let body = http_get(port, "/").expect("the pod answers on its host port");
    assert_eq!(body.trim(), pod_name);

    // The containers carry our labels.
    let names = containers_of(pod_name);
    assert_eq!(
        names.len(),
        1,
        "a one-container pod holds its own network, no pause container: {names:?}"
    );
    let labels = docker(&["inspect", "-f", "{{json .Config.Labels}}", &names[0]]);
    let labels: Value = serde_json::from_str(&labels).unwrap();
    assert_eq!(labels["dev.outpost.node"], "pods-a");
    assert_eq!(labels["dev.outpost.managed"], "true");
    assert_eq!(labels["dev.outpost.generation"], "1");

    // Logs stream from the agent.
    let logs = c.ctl(&["logs", pod_name, "--tail", "20"]);
    assert!(
        logs.status.success(),
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
    let text = String::from_utf8_lossy(&logs.stdout);
    assert!(text.contains("listening on 0.0.0.0:8080"), "{text}");
    assert!(
        text.contains("GET / HTTP"),
        "the request above is logged: {text}"
    );
    let missing = c.ctl(&["logs", pod_name, "-c", "nope"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("nope"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );

    // Usage is measured (memory working set is never zero for a live process).
    c.wait_for("usage reported", Duration::from_secs(30), |c| {
        let top = c.ctl_json(&["top", "pods"]);
        top["items"][0]["usage"]["memory"]
            .as_str()
            .is_some_and(|m| m != "0Ki")
    });
    let top_nodes = c.ctl(&["top", "nodes"]);
    assert!(String::from_utf8_lossy(&top_nodes.stdout).contains("pods-a"));

    // describe shows the node's events.
    let d = String::from_utf8_lossy(&c.ctl(&["describe", "pod", pod_name]).stdout).to_string();
    assert!(d.contains("Started"), "{d}");
    assert!(d.contains("Ready:          true"), "{d}");

    // Delete: the node stops and removes the containers, then the pod is gone.
    let out = c.ctl(&["delete", "pod", pod_name]);
    assert!(out.status.success());
    let took = c.wait_for("pod gone", Duration::from_secs(30), |c| {
        pod(c, pod_name).is_none() && containers_of(pod_name).is_empty()
    });
    println!("pod and containers gone {took:.1?} after delete");
}

#[test]
fn desired_pods_that_cannot_be_saved_are_reported_and_retried() {
    images();
    let pod_name = "save-retry";
    remove_pod_containers(pod_name);
    let _cleanup = Cleanup(pod_name);
    let c = Cluster::with_ready_agent("pods-save", &[]);
    // A directory where the agent keeps its desired pods: saving fails as
    // on a full or read-only disk.
    let blocker = c.path("agent-pods-save").join("pods.json");
    let _ = std::fs::remove_file(&blocker);
    std::fs::create_dir(&blocker).unwrap();
    let out = c.ctl(&[
        "run",
        pod_name,
        "--image",
        "outpost/workload-http:dev",
        "--node",
        "pods-save",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait_for("the failure reported", Duration::from_secs(30), |c| {
        let ev = c.ctl_json(&["get", "events", "--for", "node/pods-save"]);
        ev["items"].as_array().is_some_and(|items| {
            items.iter().any(|e| {
                e["reason"] == "FailedSync"
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("pods.json"))
            })
        })
    });
    assert!(containers_of(pod_name).is_empty(), "nothing started");
    // The disk is writable again: the next session brings the pod.
    std::fs::remove_dir(&blocker).unwrap();
    let took = c.wait_for("the pod Running", Duration::from_secs(60), |c| {
        pod(c, pod_name).is_some_and(|p| phase(&p) == "Running")
    });
    println!("pod Running {took:.1?} after the disk was writable again");
}

#[test]
fn autonomy_offline_restart_and_reconnect() {
    images();
    let pod_name = "auto-e2e";
    remove_pod_containers(pod_name);
    let _cleanup = Cleanup(pod_name);
    let agent_flags = ["--restart-backoff", "1s", "--max-restart-backoff", "4s"];
    let mut c = Cluster::with_ready_agent("pods-b", &agent_flags);
    let out = c.ctl(&[
        "run",
        pod_name,
        "--image",
        "outpost/workload-http:dev",
        "--node",
        "pods-b",
        "--grace-period",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait_for("pod Running", Duration::from_secs(60), |c| {
        pod(c, pod_name).is_some_and(|p| phase(&p) == "Running")
    });
    let p = pod(&c, pod_name).unwrap();
    let id = first_container(&p)["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("docker://")
        .to_string();
    let started = started_at(&id);

    // Controller gone, agent restarted while offline: the pod keeps running,
    // adopted, not restarted.
    c.kill_controller();
    c.kill_agent("pods-b");
    c.start_agent("pods-b", None, &agent_flags);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &id]),
        "true",
        "the pod keeps running with controller and agent gone"
    );
    assert_eq!(started_at(&id), started, "adopted, not restarted");
    assert!(
        c.agent_log("pods-b")
            .contains("running the pods saved on this box"),
        "{}",
        c.agent_log("pods-b")
    );

    // Offline, the restart policy still applies: kill the app, it comes back.
    docker(&["kill", &id]);
    let took = c.wait_for(
        "offline restart of the killed container",
        Duration::from_secs(30),
        |_| {
            docker(&[
                "ps",
                "--filter",
                &format!("label=dev.outpost.pod={pod_name}"),
                "--filter",
                "label=dev.outpost.run=1",
                "--format",
                "{{.ID}}",
            ])
            .lines()
            .count()
                == 1
        },
    );
    println!("killed container restarted offline in {took:.1?}");
    let new_id = docker(&[
        "ps",
        "--no-trunc",
        "--filter",
        &format!("label=dev.outpost.pod={pod_name}"),
        "--filter",
        "label=dev.outpost.run=1",
        "--format",
        "{{.ID}}",
    ]);
    let new_started = started_at(&new_id);

    // Controller back: the agent converges without restarting anything.
    c.start_controller();
    c.wait_for("status after reconnect", Duration::from_secs(30), |c| {
        pod(c, pod_name).is_some_and(|p| {
            p["status"]["lastReportTime"].is_string()
                && first_container(&p)["restartCount"] == 1
                && phase(&p) == "Running"
        })
    });
    std::thread::sleep(Duration::from_secs(3));
    let p = pod(&c, pod_name).unwrap();
    assert_eq!(
        first_container(&p)["containerID"].as_str().unwrap(),
        format!("docker://{new_id}")
    );
    assert_eq!(
        started_at(&new_id),
        new_started,
        "nothing restarted on reconnect"
    );
    assert_eq!(
        containers_of(pod_name).len(),
        2,
        "run 0 (kept for logs --previous) and run 1"
    );
    let prev = c.ctl(&["logs", pod_name, "--previous"]);
    assert!(
        String::from_utf8_lossy(&prev.stdout).contains("listening"),
        "{}{}",
        String::from_utf8_lossy(&prev.stdout),
        String::from_utf8_lossy(&prev.stderr)
    );

    let out = c.ctl(&["delete", "pod", pod_name]);
    assert!(out.status.success());
    c.wait_for("pod gone", Duration::from_secs(30), |c| {
        pod(c, pod_name).is_none() && containers_of(pod_name).is_empty()
    });
}

#[test]
fn image_push_runs_and_oversized_push_is_refused() {
    images();
    let pod_name = "pushed-e2e";
    remove_pod_containers(pod_name);
    let _cleanup = Cleanup(pod_name);
    let tag = format!("outpost/pushed-e2e:{}", std::process::id());
    let mut c = Cluster::start(Timing::default());
    let (token, hash) = c.token(&["--labels", "site=push-site"]);
    c.start_agent("pods-c", Some((&token, &hash)), &[]);
    c.wait_for("pods-c Ready", Duration::from_secs(30), |c| {
        c.is_ready("pods-c")
    });

    // A saved image the engine does not have any more.
    docker(&["tag", "outpost/workload-exit:dev", &tag]);
    let tar = c.path("image.tar");
    docker(&["save", "-o", tar.to_str().unwrap(), &tag]);
    docker(&["rmi", &tag]);
    assert!(docker(&["images", "-q", &tag]).is_empty());

    let out = c.ctl(&[
        "image",
        "push",
        tar.to_str().unwrap(),
        "--site",
        "push-site",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("pods-c"));
    assert!(stderr.contains("Loaded image"), "{stderr}");
    assert!(
        !docker(&["images", "-q", &tag]).is_empty(),
        "the image is loaded"
    );

    // It runs there.
    let out = c.ctl(&[
        "run",
        pod_name,
        "--image",
        &tag,
        "--node",
        "pods-c",
        "--restart",
        "Never",
        "--",
        "--after-ms",
        "200",
        "--code",
        "0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait_for(
        "pushed image ran to completion",
        Duration::from_secs(60),
        |c| pod(c, pod_name).is_some_and(|p| phase(&p) == "Succeeded"),
    );

    // A push larger than the free space is refused before any byte is sent:
    // a sparse 1 TiB file takes no disk here.
    let big = c.path("huge.tar");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(1 << 40).unwrap();
    let images_before = docker(&["images", "-q"]);
    let t = std::time::Instant::now();
    let out = c.ctl(&["image", "push", big.to_str().unwrap(), "--node", "pods-c"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "an oversized push must fail");
    assert!(
        stderr.contains("pods-c") && stderr.contains("free"),
        "{stderr}"
    );
    assert!(!stderr.contains("sent "), "no bytes were sent: {stderr}");
    println!("oversized push refused in {:.1?}: {stderr}", t.elapsed());
    assert_eq!(docker(&["images", "-q"]), images_before);

    let _ = c.ctl(&["delete", "pod", pod_name]);
    c.wait_for("pod gone", Duration::from_secs(30), |c| {
        pod(c, pod_name).is_none()
    });
    docker(&["rmi", &tag]);
}
