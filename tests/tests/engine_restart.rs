//! A real Docker engine restart under a running pod: the test's own
//! `dockerd` (private socket, data root and exec root, see
//! `outpost_tests::dockerd`) under a host-process agent pointed at it with
//! `DOCKER_HOST`. The engine is killed (SIGKILL, live-restore off) and
//! started again: the agent reports the runtime unavailable while it is
//! down, then available and the node Ready again, and restarts the pod's
//! container per its `restartPolicy: Always` (the engine stopped it when
//! it came back).

use outpost_tests::dockerd::PrivateEngine;
use outpost_tests::{Cluster, Timing};
use serde_json::Value;
use std::time::Duration;

const NODE: &str = "er-node";
const POD: &str = "er-web";
const IMAGE: &str = "outpost/workload-http:dev";

fn pod(c: &Cluster) -> Option<Value> {
    let out = c.ctl(&["get", "pod", POD, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

fn running_with_restarts(c: &Cluster) -> Option<u64> {
    let p = pod(c)?;
    let s = &p["status"]["containerStatuses"][0];
    (p["status"]["phase"] == "Running" && s["ready"] == true && s["state"]["running"].is_object())
        .then(|| s["restartCount"].as_u64())
        .flatten()
}

fn runtime_available(c: &Cluster) -> Option<bool> {
    c.node(NODE)?["status"]["runtime"]["available"].as_bool()
}

/// Running containers of the pod on the private engine.
fn running_on(engine: &PrivateEngine) -> Vec<String> {
    engine
        .docker_ok(&[
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=dev.outpost.pod={POD}"),
        ])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_agent_reconnects_to_a_restarted_engine_and_restarts_its_pod() {
    outpost_workloads::ensure_images().expect("building the workload images");
    let mut engine = match PrivateEngine::start() {
        Ok(e) => e,
        Err(e) => panic!("a private dockerd cannot run here: {e}"),
    };
    engine.load_image(IMAGE);
    let net = engine.create_network("er");

    let mut c = Cluster::start(Timing::default());
    let (token, hash) = c.token(&[]);
    c.start_agent_env(
        NODE,
        Some((&token, &hash)),
        &["--pod-network", &net.name, "--restart-backoff", "1s"],
        &[("DOCKER_HOST", &engine.host)],
    );
    c.wait_for(
        "er-node Ready with its runtime",
        Duration::from_secs(30),
        |c| c.is_ready(NODE) && runtime_available(c) == Some(true),
    );
    c.apply(
        "er.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {POD}
spec:
  nodeName: {NODE}
  restartPolicy: Always
  terminationGracePeriodSeconds: 2
  containers:
    - name: http
      image: {IMAGE}
"#
        ),
    );
    c.wait_for("the pod Running and Ready", Duration::from_secs(30), |c| {
        running_with_restarts(c) == Some(0)
    });
    let before = running_on(&engine);
    assert_eq!(before.len(), 1, "one container on the private engine");

    engine.kill();
    c.wait_for(
        "the runtime reported unavailable",
        Duration::from_secs(20),
        |c| runtime_available(c) == Some(false),
    );
    let message = c.node(NODE).unwrap()["status"]["runtime"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains(&engine.host), "{message}");

    if let Err(e) = engine.restart() {
        panic!("restarting the private dockerd: {e}");
    }
    c.wait_for(
        "the runtime available and the node Ready again",
        Duration::from_secs(30),
        |c| c.is_ready(NODE) && runtime_available(c) == Some(true),
    );
    c.wait_for(
        "the pod restarted per policy, Running and Ready",
        Duration::from_secs(30),
        |c| running_with_restarts(c).is_some_and(|n| n >= 1),
    );
    let after = running_on(&engine);
    assert_eq!(after.len(), 1, "one container again: {after:?}");
    let log = c.agent_log(NODE);
    assert!(
        log.contains("container runtime unavailable")
            && log.contains("container runtime available"),
        "the agent logged the engine going and coming back:\n{log}\n{}",
        engine.log()
    );
}
