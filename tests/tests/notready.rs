//! An agent whose container runtime goes away, on real agents and the real
//! Docker engine. The agent of node `nr-lost` reaches Docker through a unix
//! socket forwarder this test owns; stopping the forwarder is the engine
//! going away under a running agent (dockerd crashed, its socket gone).
//! - the node turns `Ready=False` (reason `KubeletNotReady`, "container
//!   runtime is down"), reported by the agent, and gets the
//!   `node.kubernetes.io/not-ready:NoExecute` taint;
//! - its pod gets `DisruptionTarget=True` after its toleration (3 s here)
//!   and a replacement runs on the other node;
//! - when the forwarder is back, the node is Ready again, the taint gone,
//!   and the Deployment at its count.

use outpost_tests::{node_of, pod_condition, running_ready, Cluster, NodeContainers, Timing};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LOST: &str = "nr-lost";
const OK: &str = "nr-ok";
const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";

/// The engine's socket, as the agents would find it.
fn upstream() -> PathBuf {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if h.starts_with("unix://") => PathBuf::from(&h["unix://".len()..]),
        _ => PathBuf::from("/var/run/docker.sock"),
    }
}

/// Connections a forwarder carries, by number: clones of both ends, so
/// stopping can cut them; a connection leaves once both directions ended.
type Carried = Arc<Mutex<HashMap<u64, [UnixStream; 2]>>>;

/// Forwards connections on `path` to the engine's socket until stopped;
/// stopping closes the listener and every connection it carries.
struct Forwarder {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    conns: Carried,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Forwarder {
    fn start(path: &Path) -> Forwarder {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("binding the forwarder's socket");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Carried = Arc::default();
        let (s, c) = (stop.clone(), conns.clone());
        let accept = std::thread::spawn(move || {
            let mut next = 0u64;
            while !s.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let Ok(engine) = UnixStream::connect(upstream()) else {
                    continue;
                };
                let (Ok(c1), Ok(e1), Ok(c2), Ok(e2)) = (
                    client.try_clone(),
                    engine.try_clone(),
                    client.try_clone(),
                    engine.try_clone(),
                ) else {
                    continue;
                };
                next += 1;
                c.lock().unwrap().insert(next, [c1, e1]);
                let ended = Arc::new(AtomicUsize::new(0));
                pipe(client, engine, next, ended.clone(), c.clone());
                pipe(e2, c2, next, ended, c.clone());
            }
        });
        Forwarder {
            path: path.to_path_buf(),
            stop,
            conns,
            accept: Some(accept),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for [a, b] in std::mem::take(&mut *self.conns.lock().unwrap()).into_values() {
            let _ = a.shutdown(std::net::Shutdown::Both);
            let _ = b.shutdown(std::net::Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies `from` to `to` on a thread until either side ends; the second
/// direction of connection `id` to end drops it from `conns`.
fn pipe(
    mut from: UnixStream,
    mut to: UnixStream,
    id: u64,
    ended: Arc<AtomicUsize>,
    conns: Carried,
) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
        if ended.fetch_add(1, Ordering::SeqCst) == 1 {
            conns.lock().unwrap().remove(&id);
        }
    });
}

fn deployment() -> &'static str {
    r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: nr
spec:
  replicas: 1
  selector:
    matchLabels: {app: nr}
  template:
    metadata:
      labels: {app: nr}
    spec:
      tolerations:
      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 3}
      containers:
      - name: web
        image: outpost/workload-web:dev
"#
}

fn ready_condition(c: &Cluster, node: &str) -> Option<Value> {
    c.node(node)?["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
}

fn has_not_ready_taint(c: &Cluster, node: &str) -> bool {
    c.node(node).is_some_and(|n| {
        n["spec"]["taints"].as_array().is_some_and(|t| {
            t.iter()
                .any(|t| t["key"] == NOT_READY_TAINT && t["effect"] == "NoExecute")
        })
    })
}

#[test]
fn an_agent_that_loses_its_runtime_reports_not_ready() {
    let _cleanup = NodeContainers::of([LOST, OK]);
    outpost_workloads::ensure_images().expect("building the workload images");
    let mut c = Cluster::start(Timing::default());
    let socket = c.path("docker-forward.sock");
    let mut forwarder = Forwarder::start(&socket);
    let (token, hash) = c.token(&[]);
    let docker_host = format!("unix://{}", socket.display());
    c.start_agent_env(
        LOST,
        Some((&token, &hash)),
        &[],
        &[("DOCKER_HOST", &docker_host)],
    );
    c.wait_for("nr-lost Ready", Duration::from_secs(30), |c| {
        c.is_ready(LOST)
    });
    c.apply("nr.yaml", deployment());
    c.wait_for("the pod Running on nr-lost", Duration::from_secs(90), |c| {
        let p = c.pods("app=nr");
        p.len() == 1 && running_ready(&p[0]) && node_of(&p[0]) == LOST
    });
    c.start_agent(OK, Some((&token, &hash)), &[]);
    c.wait_for("nr-ok Ready", Duration::from_secs(30), |c| c.is_ready(OK));

    let lost_at = Instant::now();
    forwarder.stop();
    let took = c.wait_for(
        "nr-lost Ready=False with the not-ready taint",
        Duration::from_secs(30),
        |c| {
            ready_condition(c, LOST).is_some_and(|r| r["status"] == "False")
                && has_not_ready_taint(c, LOST)
        },
    );
    let ready = ready_condition(&c, LOST).unwrap();
    assert_eq!(ready["reason"], "KubeletNotReady", "{ready}");
    let message = ready["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("container runtime is down"),
        "{message}"
    );
    assert!(c.node(LOST).unwrap()["status"]["runtime"]["available"] == false);
    c.wait_for(
        "the pod on nr-lost DisruptionTarget, a replacement Running on nr-ok",
        Duration::from_secs(60),
        |c| {
            let p = c.pods("app=nr");
            p.iter()
                .any(|p| node_of(p) == LOST && pod_condition(p, "DisruptionTarget") == Some("True"))
                && p.iter().any(|p| node_of(p) == OK && running_ready(p))
        },
    );
    let replaced = lost_at.elapsed();
    let evicted = c
        .pods("app=nr")
        .into_iter()
        .find(|p| node_of(p) == LOST)
        .expect("the evicted pod stays bound to its node");
    let reason = evicted["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "DisruptionTarget")
        .unwrap()["reason"]
        .clone();
    assert_eq!(reason, "DeletionByTaintManager");
    assert!(c.is_ready(OK), "the other node is untouched");

    let _forwarder = Forwarder::start(&socket);
    let back = c.wait_for(
        "nr-lost Ready again without the taint",
        Duration::from_secs(30),
        |c| c.is_ready(LOST) && !has_not_ready_taint(c, LOST),
    );
    c.wait_for(
        "the Deployment at its count",
        Duration::from_secs(60),
        |c| {
            let p = c.pods("app=nr");
            p.len() == 1 && running_ready(&p[0])
        },
    );
    eprintln!(
        "runtime lost -> Ready=False + not-ready taint in {took:.1?}; -> pod replaced on {OK} in {replaced:.1?} (toleration 3 s); runtime back -> Ready in {back:.1?}"
    );
}
