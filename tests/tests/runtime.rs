//! The pod runtime against the real Docker engine, without a controller:
//! each test runs `outpost_agent::runtime::reconcile::run` for its own node
//! name (so it only ever sees its own containers), feeds it desired pods
//! and node reports through watch channels, and checks the snapshots,
//! events and the engine's containers.
//!
//! Pod names start with `rt-test-`, so containers are
//! `outpost_rt-test-..._...`; every container of the test's node is removed
//! when the test ends, even when it fails.

use outpost_agent::runtime::docker::Engine;
use outpost_agent::runtime::images::ImageCatalog;
use outpost_agent::runtime::reconcile;
use outpost_agent::runtime::{DesiredSet, RuntimeConfig, Snapshot};
use outpost_proto::pod::{
    ContainerSpec, ContainerState, DesiredPod, PodPhase, PodSpec, PodStatus, PortSpec, Probe,
    ProbeAction, Protocol, RestartPolicy, Volume, VolumeMount, VolumeSource,
};
use outpost_proto::{
    AgentEvent, Condition, ConditionStatus, ConditionType, NodeReport, Signal, SignalObservation,
    ThresholdState,
};
use outpost_tests::sites::OwnNetwork;
use outpost_tests::{docker, docker_ok, engine, free_tcp_port};
use outpost_workloads::{BURN_IMAGE, EXIT_IMAGE, HOG_IMAGE, HTTP_IMAGE, IMAGES};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// Container ids of `node` matching extra `docker ps` filters (all states).
fn containers_of(node: &str, filters: &[&str]) -> Vec<String> {
    let mut args = vec![
        "ps".to_string(),
        "-aq".into(),
        "--no-trunc".into(),
        "--filter".into(),
        format!("label=dev.outpost.node={node}"),
    ];
    for f in filters {
        args.push("--filter".into());
        args.push((*f).to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut ids: Vec<String> = docker_ok(&args).lines().map(str::to_string).collect();
    ids.sort();
    ids
}

/// Removes every container of the test's node (and any extra ones) on drop.
struct Cleanup {
    node: String,
    extra: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (_, ids) = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=dev.outpost.node={}", self.node),
        ]);
        for id in ids.lines().chain(self.extra.iter().map(String::as_str)) {
            let _ = docker(&["rm", "-f", id]);
        }
    }
}

/// One reconciler for one test node.
struct Harness {
    node: String,
    dir: PathBuf,
    desired: watch::Sender<Arc<DesiredSet>>,
    reports: watch::Sender<Option<NodeReport>>,
    status: watch::Receiver<Arc<Snapshot>>,
    events: Arc<Mutex<Vec<AgentEvent>>>,
    task: tokio::task::JoinHandle<()>,
    generation: u64,
}

fn config(node: &str, dir: &Path) -> RuntimeConfig {
    RuntimeConfig {
        node: node.into(),
        data_dir: dir.to_path_buf(),
        sync_interval: Duration::from_secs(2),
        restart_backoff: Duration::from_secs(1),
        max_restart_backoff: Duration::from_secs(4),
        cgroup_root: outpost_agent::runtime::CGROUP_ROOT.into(),
        services: None,
        pod_network: None,
    }
}

impl Harness {
    async fn start(node: &str, dir: &Path) -> Harness {
        Harness::start_with(
            node,
            dir,
            engine().await,
            Arc::new(DesiredSet::default()),
            None,
        )
    }

    fn start_with(
        node: &str,
        dir: &Path,
        docker: bollard::Docker,
        desired: Arc<DesiredSet>,
        report: Option<NodeReport>,
    ) -> Harness {
        Harness::start_with_config(config(node, dir), docker, desired, report)
    }

    fn start_with_config(
        cfg: RuntimeConfig,
        docker: bollard::Docker,
        desired: Arc<DesiredSet>,
        report: Option<NodeReport>,
    ) -> Harness {
        let (node, dir) = (cfg.node.clone(), cfg.data_dir.clone());
        let generation = desired.generation;
        let (desired_tx, desired_rx) = watch::channel(desired);
        let (reports_tx, reports_rx) = watch::channel(report);
        let (status_tx, status_rx) = watch::channel(Arc::new(Snapshot::default()));
        let (events_tx, mut events_rx) = mpsc::channel::<AgentEvent>(256);
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        tokio::spawn(async move {
            while let Some(e) = events_rx.recv().await {
                eprintln!("event {:?} {} {}: {}", e.kind, e.reason, e.pod, e.message);
                sink.lock().unwrap().push(e);
            }
        });
        let task = tokio::spawn(reconcile::run(
            cfg, docker, desired_rx, reports_rx, status_tx, events_tx,
        ));
        Harness {
            node,
            dir,
            desired: desired_tx,
            reports: reports_tx,
            status: status_rx,
            events,
            task,
            generation,
        }
    }

    /// Stops this reconciler and starts another on the same node and data
    /// directory, with the current desired set (an agent restart).
    async fn restart(self) -> Harness {
        self.task.abort();
        let _ = self.task.await;
        let desired = self.desired.borrow().clone();
        let report = self.reports.borrow().clone();
        Harness::start_with(&self.node, &self.dir, engine().await, desired, report)
    }

    fn set_pods(&mut self, pods: Vec<(PodSpec, u64)>) {
        self.generation += 1;
        let pods = pods
            .into_iter()
            .map(|(spec, generation)| (spec.key(), DesiredPod { generation, spec }))
            .collect();
        self.desired.send_replace(Arc::new(DesiredSet {
            generation: self.generation,
            pods,
            ..DesiredSet::default()
        }));
    }

    /// Waits (generously) until `pred` holds for a snapshot; panics with the
    /// last snapshot and the events on timeout.
    async fn wait_for(
        &mut self,
        what: &str,
        secs: u64,
        mut pred: impl FnMut(&Snapshot) -> bool,
    ) -> Arc<Snapshot> {
        let started = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(secs), self.status.wait_for(|s| pred(s)))
            .await
            .ok()
            .and_then(|r| r.ok().map(|s| s.clone()));
        match r {
            Some(s) => {
                eprintln!("{what}: after {:.1}s", started.elapsed().as_secs_f32());
                s
            }
            None => panic!(
                "timed out after {secs}s waiting for {what}\nlast snapshot: {:#?}\nevents: {:#?}",
                self.status.borrow(),
                self.events.lock().unwrap()
            ),
        }
    }

    async fn wait_pod(
        &mut self,
        pod: &str,
        what: &str,
        secs: u64,
        mut pred: impl FnMut(&PodStatus) -> bool,
    ) -> PodStatus {
        let s = self
            .wait_for(&format!("{pod}: {what}"), secs, |s| {
                s.pods.get(pod).is_some_and(&mut pred)
            })
            .await;
        s.pods[pod].clone()
    }

    /// Waits (generously) for an event: events travel apart from snapshots.
    async fn wait_event(&self, reason: &str, pod: &str) -> AgentEvent {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.events_with(reason, pod).pop() {
                return e;
            }
            assert!(Instant::now() < deadline, "no {reason} event for {pod}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn events_with(&self, reason: &str, pod: &str) -> Vec<AgentEvent> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.reason == reason && e.pod == pod)
            .cloned()
            .collect()
    }
}

fn container(name: &str, image: &str, args: &[&str]) -> ContainerSpec {
    ContainerSpec {
        args: args.iter().map(|a| (*a).to_string()).collect(),
        ..ContainerSpec::new(name, image)
    }
}

fn pod(name: &str, containers: Vec<ContainerSpec>) -> PodSpec {
    PodSpec {
        termination_grace_secs: 10,
        ..PodSpec::new(name, containers)
    }
}

fn http_probe(path: &str) -> Probe {
    Probe {
        action: ProbeAction::Http {
            path: path.into(),
            port: 8080,
        },
        initial_delay_secs: 0,
        period_secs: 1,
        timeout_secs: 2,
        success_threshold: 1,
        failure_threshold: 2,
    }
}

fn http_container(pod: &str) -> ContainerSpec {
    let mut c = container("web", HTTP_IMAGE, &[]);
    c.env = vec![("POD_NAME".into(), pod.into())];
    c
}

fn running(p: &PodStatus) -> bool {
    p.phase == PodPhase::Running
        && p.containers
            .iter()
            .all(|c| matches!(c.state, ContainerState::Running { .. }))
}

/// GET over plain HTTP/1.1; returns (status, trimmed body).
async fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let run = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad response {text:?}"))?;
        let body = text
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or("")
            .trim()
            .to_string();
        Ok((code, body))
    };
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap_or_else(|_| Err("timeout".into()))
}

/// The pod's IP: the bridge address of the container holding its network
/// namespace (the running pause container, or a one-container pod's own).
fn pod_ip(node: &str, pod: &str) -> String {
    let of_pod = format!("label=dev.outpost.pod={pod}");
    let mut ids = containers_of(
        node,
        &[&of_pod, "status=running", "label=dev.outpost.container=POD"],
    );
    if ids.is_empty() {
        ids = containers_of(node, &[&of_pod, "status=running"]);
    }
    assert_eq!(
        ids.len(),
        1,
        "one running container holds the network of {pod}: {ids:?}"
    );
    docker_ok(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &ids[0],
    ])
}

fn setup(node: &str) -> (Cleanup, tempfile::TempDir) {
    outpost_workloads::ensure_images().expect("workload images build");
    (
        Cleanup {
            node: node.into(),
            extra: vec![],
        },
        tempfile::tempdir().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_serves_and_removes_a_pod() {
    let node = "rt-node-start";
    let (_cleanup, dir) = setup(node);
    let mut h = Harness::start(node, dir.path()).await;
    let name = "rt-test-start";
    let host_port = free_tcp_port();
    let mut web = http_container(name);
    web.readiness = Some(http_probe("/healthz"));
    web.ports = vec![PortSpec {
        name: "http".into(),
        container_port: 8080,
        host_port: Some(host_port),
        protocol: Protocol::Tcp,
    }];
    web.resources.limits.memory_bytes = 64 << 20;
    web.resources.limits.cpu_millis = 500;
    web.volume_mounts = vec![VolumeMount {
        name: "scratch".into(),
        mount_path: "/scratch".into(),
        read_only: false,
    }];
    // A second container in the same network namespace.
    let mut side = container("side", HTTP_IMAGE, &[]);
    side.env = vec![
        ("POD_NAME".into(), format!("side-of-{name}")),
        ("PORT".into(), "8081".into()),
    ];
    let mut spec = pod(name, vec![web, side]);
    spec.volumes = vec![Volume {
        name: "scratch".into(),
        source: VolumeSource::EmptyDir,
    }];
    h.set_pods(vec![(spec, 1)]);
    let st = h
        .wait_pod(name, "Running and ready", 60, |p| running(p) && p.ready)
        .await;
    assert_eq!(st.containers[0].restart_count, 0);
    assert!(st.started_ms > 0);
    let id = st.containers[0].container_id.clone();

    // Served through the pod's IP and through the hostPort on the pause
    // container; both containers answer on the one address, which the
    // status reports.
    let ip = pod_ip(node, name);
    eprintln!("pod IP: reported {:?}, docker inspect {ip}", st.pod_ip);
    assert_eq!(st.pod_ip, ip, "the sandbox's address");
    assert_eq!(
        http_get(&format!("{ip}:8080"), "/").await,
        Ok((200, name.to_string()))
    );
    assert_eq!(
        http_get(&format!("{ip}:8081"), "/").await,
        Ok((200, format!("side-of-{name}")))
    );
    let pause = containers_of(node, &["label=dev.outpost.container=POD", "status=running"]);
    assert_eq!(pause.len(), 1, "a two-container pod has a sandbox");
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.Config.Hostname}}", &pause[0]]),
        name,
        "the pod's host name is its name"
    );
    assert_eq!(
        http_get(&format!("127.0.0.1:{host_port}"), "/").await,
        Ok((200, name.to_string()))
    );

    // What the engine was asked for.
    let fmt = "{{.Name}} {{.HostConfig.Init}} {{.HostConfig.RestartPolicy.Name}} {{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.NanoCpus}} {{index .Config.Labels \"dev.outpost.run\"}} {{index .Config.Labels \"dev.outpost.generation\"}} {{.HostConfig.NetworkMode}}";
    let got = docker_ok(&["inspect", "-f", fmt, &id]);
    eprintln!("app container: {got}");
    let f: Vec<&str> = got.split(' ').collect();
    assert_eq!(f[0], format!("/outpost_{name}_web_1_0"));
    assert_eq!(
        &f[1..8],
        ["true", "no", "67108864", "67108864", "500000000", "0", "1"]
    );
    assert!(
        f[8].starts_with("container:"),
        "joins the pause netns: {}",
        f[8]
    );
    let volume = dir
        .path()
        .join("pods")
        .join(name)
        .join("volumes")
        .join("scratch");
    assert!(volume.is_dir(), "emptyDir at {}", volume.display());

    // Usage shows up from the cgroup.
    let st = h
        .wait_pod(name, "memory usage sampled", 30, |p| {
            p.usage.memory_bytes > 0
        })
        .await;
    eprintln!(
        "usage: {:?}; node: {:?}",
        st.usage,
        h.status.borrow().node_usage
    );
    assert!(h.status.borrow().node_usage.memory_bytes > 0);

    // No longer desired: stopped, removed, volume gone.
    h.set_pods(vec![]);
    h.wait_for("pod gone from the snapshot", 30, |s| {
        !s.pods.contains_key(name)
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !containers_of(node, &[]).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        containers_of(node, &[]).is_empty(),
        "all containers removed"
    );
    assert!(!volume.exists(), "emptyDir removed with the pod");
    h.wait_event("Started", name).await;
    h.wait_event("Killing", name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_container_pod_holds_its_own_network() {
    let node = "rt-node-own";
    let (_cleanup, dir) = setup(node);
    let mut h = Harness::start(node, dir.path()).await;
    let name = "rt-test-own";
    let host_port = free_tcp_port();
    // No POD_NAME: the server answers with its host name.
    let mut web = container("web", HTTP_IMAGE, &[]);
    web.readiness = Some(http_probe("/healthz"));
    web.ports = vec![PortSpec {
        name: "http".into(),
        container_port: 8080,
        host_port: Some(host_port),
        protocol: Protocol::Tcp,
    }];
    h.set_pods(vec![(pod(name, vec![web]), 1)]);
    let st = h
        .wait_pod(
            name,
            "Running and ready (probe on its own address)",
            60,
            |p| running(p) && p.ready,
        )
        .await;
    let ids = containers_of(node, &[]);
    assert_eq!(ids.len(), 1, "no pause container: {ids:?}");
    let got = docker_ok(&[
        "inspect",
        "-f",
        "{{.HostConfig.NetworkMode}} {{.Config.Hostname}}",
        &st.containers[0].container_id,
    ]);
    let f: Vec<&str> = got.split(' ').collect();
    assert!(!f[0].starts_with("container:"), "own network: {got}");
    assert_eq!(f[1], name, "host name is the pod name");
    assert_eq!(
        http_get(&format!("127.0.0.1:{host_port}"), "/").await,
        Ok((200, name.to_string()))
    );
    let ip = pod_ip(node, name);
    assert_eq!(st.pod_ip, ip, "the container's own address");
    assert_eq!(
        http_get(&format!("{}:8080", st.pod_ip), "/").await,
        Ok((200, name.to_string()))
    );

    // Killed: back on the same host port, with a new address, which the
    // status follows.
    docker_ok(&["kill", &st.containers[0].container_id]);
    h.wait_pod(name, "running again", 60, |p| {
        running(p) && p.ready && p.containers[0].restart_count == 1
    })
    .await;
    let ip = pod_ip(node, name);
    let st = h
        .wait_pod(name, "the new address reported", 10, |p| p.pod_ip == ip)
        .await;
    eprintln!("pod IP after the restart: {}", st.pod_ip);
    assert_eq!(
        http_get(&format!("{}:8080", st.pod_ip), "/").await,
        Ok((200, name.to_string()))
    );
    assert_eq!(
        http_get(&format!("127.0.0.1:{host_port}"), "/").await,
        Ok((200, name.to_string()))
    );
}

/// `--pod-network`: the sandbox of a two-container pod and a one-container
/// pod both join the named network, and the pod IP reported is the address
/// on it; a network that does not exist is named in the pod's status and
/// event with what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_join_the_pod_network() {
    let node = "rt-node-podnet";
    let net = OwnNetwork::create("rt-podnet");
    let (_cleanup, dir) = setup(node);
    let mut cfg = config(node, dir.path());
    cfg.pod_network = Some(net.0.name.clone());
    let mut h =
        Harness::start_with_config(cfg, engine().await, Arc::new(DesiredSet::default()), None);
    let (pair, single) = ("rt-test-podnet-pair", "rt-test-podnet-one");
    let mut web = http_container(pair);
    web.readiness = Some(http_probe("/healthz"));
    let side = container("side", HTTP_IMAGE, &["--port", "8081"]);
    let mut one = http_container(single);
    one.readiness = Some(http_probe("/healthz"));
    h.set_pods(vec![
        (pod(pair, vec![web, side]), 1),
        (pod(single, vec![one]), 1),
    ]);
    for name in [pair, single] {
        let st = h
            .wait_pod(name, "Running and ready on the pod network", 60, |p| {
                running(p) && p.ready
            })
            .await;
        let ip: std::net::IpAddr = st.pod_ip.parse().expect("a pod IP");
        assert!(
            net.0.contains(ip),
            "{name}: {ip} is not on {} ({}/24)",
            net.0.name,
            net.0.subnet
        );
        assert_eq!(st.pod_ip, pod_ip(node, name), "{name}");
        assert_eq!(
            http_get(&format!("{ip}:8080"), "/").await,
            Ok((200, name.to_string()))
        );
    }
    let holders = containers_of(node, &["status=running", "label=dev.outpost.container=POD"]);
    assert_eq!(holders.len(), 1, "one sandbox, the pair's: {holders:?}");
    let networks = docker_ok(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
        &holders[0],
    ]);
    assert_eq!(
        networks.trim(),
        net.0.name,
        "the sandbox is on the pod network only"
    );

    // A pod network that is not there: the pod says so, and what to do.
    let missing = format!("{}-gone", net.0.name);
    h.set_pods(vec![]);
    h.wait_for("both pods gone", 60, |s| s.pods.is_empty())
        .await;
    h.task.abort();
    let _ = (&mut h.task).await;
    let mut cfg = config(node, dir.path());
    cfg.pod_network = Some(missing.clone());
    let mut h =
        Harness::start_with_config(cfg, engine().await, Arc::new(DesiredSet::default()), None);
    let name = "rt-test-podnet-gone";
    h.set_pods(vec![(
        pod(
            name,
            vec![
                http_container(name),
                container("side", HTTP_IMAGE, &["--port", "8081"]),
            ],
        ),
        1,
    )]);
    let want = format!("the pod network {missing:?} does not exist");
    let st = h
        .wait_pod(name, "waiting with the reason", 60, |p| {
            p.containers.iter().any(|c| {
                matches!(&c.state, ContainerState::Waiting { message, .. } if message.contains(&want))
            })
        })
        .await;
    eprintln!("{:?}", st.containers[0].state);
    let e = h.wait_event("Failed", name).await;
    assert!(e.message.contains(&want), "{}", e.message);
    assert!(
        e.message
            .contains(&format!("docker network create {missing}")),
        "{}",
        e.message
    );
    // No sandbox is left behind to keep the network busy.
    h.task.abort();
    let _ = h.task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_name_in_two_namespaces_is_two_pods() {
    let node = "rt-node-ns";
    let (_cleanup, dir) = setup(node);
    let mut h = Harness::start(node, dir.path()).await;
    let name = "rt-test-ns";
    let spec = |namespace: &str| {
        let mut web = container("web", HTTP_IMAGE, &[]);
        web.env = vec![("POD_NAME".into(), format!("{namespace}/{name}"))];
        web.volume_mounts = vec![VolumeMount {
            name: "data".into(),
            mount_path: "/data".into(),
            read_only: false,
        }];
        let mut p = pod(name, vec![web]);
        p.namespace = namespace.into();
        p.volumes = vec![Volume {
            name: "data".into(),
            source: VolumeSource::EmptyDir,
        }];
        p
    };
    let team = format!("rt-team.{name}");
    h.set_pods(vec![(spec("default"), 1), (spec("rt-team"), 1)]);
    let st = h
        .wait_for("both Running", 60, |s| {
            s.pods.len() == 2 && s.pods.values().all(running)
        })
        .await;
    assert_eq!(
        st.pods.keys().cloned().collect::<Vec<_>>(),
        [team.clone(), name.to_string()]
    );
    assert_eq!(st.pods[&team].name, team, "statuses carry the key");
    for (key, namespace) in [(name, "default"), (team.as_str(), "rt-team")] {
        let id = &st.pods[key].containers[0].container_id;
        let got = docker_ok(&[
            "inspect",
            "-f",
            "{{.Name}} {{index .Config.Labels \"dev.outpost.pod\"}} {{.Config.Hostname}}",
            id,
        ]);
        assert_eq!(
            got,
            format!("/outpost_{key}_web_1_0 {key} {name}"),
            "named and labelled by key, host name is the pod name"
        );
        let volume = dir.path().join("pods").join(key).join("volumes/data");
        assert!(volume.is_dir(), "emptyDir at {}", volume.display());
        let ip = pod_ip(node, key);
        assert_eq!(st.pods[key].pod_ip, ip);
        assert_eq!(
            http_get(&format!("{ip}:8080"), "/").await,
            Ok((200, format!("{namespace}/{name}")))
        );
    }

    // Removing one leaves the other alone.
    let kept = st.pods[name].containers[0].container_id.clone();
    h.set_pods(vec![(spec("default"), 1)]);
    h.wait_for("team pod gone", 30, |s| !s.pods.contains_key(&team))
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let of_team = format!("label=dev.outpost.pod={team}");
    while !containers_of(node, &[&of_team]).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(containers_of(node, &[&of_team]).is_empty());
    assert!(!dir.path().join("pods").join(&team).exists());
    assert_eq!(containers_of(node, &[]), vec![kept.clone()]);
    let st = h.status.borrow().pods[name].clone();
    assert!(running(&st) && st.containers[0].container_id == kept);
    assert!(dir
        .path()
        .join("pods")
        .join(name)
        .join("volumes/data")
        .is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_report_lists_the_engines_images() {
    outpost_workloads::ensure_images().expect("workload images build");
    let engine = Engine::new(engine().await, "rt-node-images");
    let mut catalog = ImageCatalog::default();
    let started = Instant::now();
    catalog.refresh(&engine).await.expect("images listed");
    let first = started.elapsed();
    let started = Instant::now();
    catalog.refresh(&engine).await.expect("images listed");
    let steady = started.elapsed();
    let list = catalog.current();
    eprintln!(
        "{} images listed; first refresh {first:.1?} (inspects), steady {steady:.1?} (one list call)",
        list.len()
    );
    let arch = outpost_agent::probe::go_arch(std::env::consts::ARCH);
    for image in IMAGES {
        let got = list
            .iter()
            .find(|i| i.names.iter().any(|n| n == image))
            .unwrap_or_else(|| panic!("{image} listed: {list:#?}"));
        assert_eq!(
            (got.architecture.as_str(), got.os.as_str()),
            (arch, "linux")
        );
        let size: u64 = docker_ok(&["image", "inspect", "-f", "{{.Size}}", image])
            .parse()
            .unwrap();
        assert_eq!(got.size_bytes, size, "{image}");
    }
    // Every named image of the engine, up to the bound, newest first.
    let named = docker_ok(&["image", "ls", "--format", "{{.ID}} {{.Repository}}"])
        .lines()
        .filter(|l| !l.ends_with(" <none>"))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert_eq!(list.len(), named.min(outpost_proto::MAX_IMAGES));
    let report = NodeReport {
        images: list.to_vec(),
        ..Default::default()
    };
    assert!(report.validate().is_ok(), "{:?}", report.validate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_comes_from_the_engine_when_cgroups_are_hidden() {
    // As for an agent in a container of its own: no container cgroups
    // where it looks.
    let node = "rt-node-stats";
    let (_cleanup, dir) = setup(node);
    let mut cfg = config(node, dir.path());
    cfg.cgroup_root = dir.path().join("no-cgroup-fs");
    let mut h =
        Harness::start_with_config(cfg, engine().await, Arc::new(DesiredSet::default()), None);
    let name = "rt-test-stats";
    // A burner, so cpu shows too.
    let burn = container("burn", BURN_IMAGE, &["--threads", "1", "--duty", "50"]);
    h.set_pods(vec![(pod(name, vec![burn]), 1)]);
    let st = h
        .wait_pod(name, "memory and cpu from the engine", 60, |p| {
            running(p) && p.usage.memory_bytes > 0 && p.usage.cpu_millis > 0
        })
        .await;
    eprintln!("usage from the stats API: {:?}", st.usage);
    // About half a core busy; the sampling is coarse, so only the order.
    assert!(
        (100..=1000).contains(&st.usage.cpu_millis),
        "{:?}",
        st.usage
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_backs_off_and_counts_restarts() {
    let node = "rt-node-crash";
    let (_cleanup, dir) = setup(node);
    let mut h = Harness::start(node, dir.path()).await;
    let name = "rt-test-crash";
    h.set_pods(vec![(
        pod(
            name,
            vec![container(
                "exit",
                EXIT_IMAGE,
                &["--code", "3", "--after-ms", "200"],
            )],
        ),
        1,
    )]);
    let st = h
        .wait_pod(name, "CrashLoopBackOff after 3 restarts", 90, |p| {
            p.containers[0].restart_count >= 3
                && p.containers[0].state.reason() == "CrashLoopBackOff"
        })
        .await;
    eprintln!("status: {st:#?}");
    let c = &st.containers[0];
    assert_eq!(st.phase, PodPhase::Running);
    assert_eq!(st.pod_ip, "", "no address while nothing of the pod runs");
    match &c.state {
        ContainerState::Waiting { message, .. } => {
            assert!(
                message.contains("restarting failed container=exit pod=rt-test-crash"),
                "{message}"
            );
        }
        s => panic!("waiting expected, got {s:?}"),
    }
    match &c.last_state {
        Some(ContainerState::Terminated {
            exit_code, reason, ..
        }) => {
            assert_eq!((*exit_code, reason.as_str()), (3, "Error"));
        }
        s => panic!("terminated last state expected, got {s:?}"),
    }
    // Back-offs grow 1s, 2s, 4s and stay at the 4s cap.
    let backoffs: Vec<String> = h
        .events_with("BackOff", name)
        .iter()
        .filter_map(|e| {
            e.message
                .rsplit("next start in ")
                .next()
                .map(str::to_string)
        })
        .collect();
    eprintln!("back-offs: {backoffs:?}");
    assert!(backoffs.len() >= 3, "{backoffs:?}");
    assert_eq!(&backoffs[..3], ["1s", "2s", "4s"]);
    // The current run and the previous one are kept, older runs removed.
    let app = containers_of(node, &["label=dev.outpost.container=exit"]);
    assert!(app.len() <= 2, "at most two runs kept: {app:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_failure_restarts_and_recovers_readiness_follows() {
    let node = "rt-node-live";
    let (_cleanup, dir) = setup(node);
    let mut h = Harness::start(node, dir.path()).await;
    let name = "rt-test-live";
    let mut web = http_container(name);
    web.liveness = Some(http_probe("/healthz"));
    let mut ready = http_probe("/healthz");
    ready.initial_delay_secs = 3;
    web.readiness = Some(ready);
    h.set_pods(vec![(pod(name, vec![web]), 1)]);

    // Readiness starts false and turns true after its initial delay.
    let first = h.wait_pod(name, "Running", 60, running).await;
    eprintln!("first running snapshot: ready={}", first.ready);
    assert!(!first.ready, "readiness starts false");
    let st = h.wait_pod(name, "ready", 30, |p| p.ready).await;
    let first_id = st.containers[0].container_id.clone();

    // Make /healthz fail: liveness kills and restarts the container.
    let ip = pod_ip(node, name);
    assert_eq!(
        http_get(&format!("{ip}:8080"), "/fail").await.map(|r| r.0),
        Ok(200)
    );
    let st = h
        .wait_pod(name, "restarted after liveness failure", 60, |p| {
            p.containers[0].restart_count == 1 && p.containers[0].container_id != first_id
        })
        .await;
    assert!(st.containers[0].last_state.is_some());
    let st = h
        .wait_pod(name, "ready again", 60, |p| running(p) && p.ready)
        .await;
    assert_eq!(st.containers[0].restart_count, 1);
    assert!(!h.events_with("Unhealthy", name).is_empty());
    assert!(h
        .events_with("Killing", name)
        .iter()
        .any(|e| e.message.contains("liveness")));
    assert_eq!(
        http_get(&format!("{}:8080", pod_ip(node, name)), "/healthz").await,
        Ok((200, "ok".to_string()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_is_reported_as_oom_killed() {
    let node = "rt-node-oom";
    let (_cleanup, dir) = setup(node);
    let mut h = Harness::start(node, dir.path()).await;
    let name = "rt-test-oom";
    let mut hog = container(
        "hog",
        HOG_IMAGE,
        &["--memory-mib-per-sec", "50", "--memory-max-mib", "200"],
    );
    hog.resources.limits.memory_bytes = 64 << 20;
    let mut spec = pod(name, vec![hog]);
    spec.restart_policy = RestartPolicy::Never;
    h.set_pods(vec![(spec, 1)]);
    let st = h
        .wait_pod(name, "Failed", 60, |p| p.phase == PodPhase::Failed)
        .await;
    match &st.containers[0].state {
        ContainerState::Terminated {
            exit_code, reason, ..
        } => {
            assert_eq!((*exit_code, reason.as_str()), (137, "OOMKilled"));
        }
        s => panic!("terminated expected, got {s:?}"),
    }
    assert_eq!(st.containers[0].restart_count, 0, "Never: no restart");
    h.wait_event("OOMKilling", name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pids_limit_is_enforced() {
    let node = "rt-node-pids";
    let (_cleanup, dir) = setup(node);
    let mut h = Harness::start(node, dir.path()).await;
    let name = "rt-test-pids";
    let mut hog = container(
        "hog",
        HOG_IMAGE,
        &["--procs-per-sec", "50", "--procs-max", "100"],
    );
    hog.resources.limits.pids = 20;
    h.set_pods(vec![(pod(name, vec![hog]), 1)]);
    let st = h.wait_pod(name, "Running", 60, running).await;
    let id = st.containers[0].container_id.clone();
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.HostConfig.PidsLimit}}", &id]),
        "20"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut logs = String::new();
    while Instant::now() < deadline {
        let out = Command::new("docker").args(["logs", &id]).output().unwrap();
        logs = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if logs.contains("procs stopped at") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let line = logs.lines().find(|l| l.contains("procs stopped at"));
    eprintln!("hog says: {line:?}");
    assert!(line.is_some(), "the hog hit the pids limit: {logs}");
    // Still running at the limit, not restarted.
    let st = h.status.borrow().pods[name].clone();
    assert!(running(&st), "{st:#?}");
    assert_eq!(st.containers[0].restart_count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_reconciler_adopts_running_containers() {
    let node = "rt-node-adopt";
    let (_cleanup, dir) = setup(node);
    let mut h = Harness::start(node, dir.path()).await;
    let name = "rt-test-adopt";
    let mut web = http_container(name);
    web.readiness = Some(http_probe("/healthz"));
    h.set_pods(vec![(pod(name, vec![web]), 1)]);
    let st = h
        .wait_pod(name, "ready", 60, |p| running(p) && p.ready)
        .await;
    let before = containers_of(node, &[]);
    let id = st.containers[0].container_id.clone();
    assert_eq!(before.len(), 1, "the pod's one container: {before:?}");

    let mut h = h.restart().await;
    let st = h
        .wait_pod(name, "ready after restart", 60, |p| running(p) && p.ready)
        .await;
    assert_eq!(st.containers[0].container_id, id, "same container adopted");
    assert_eq!(st.containers[0].restart_count, 0);
    // Let it sync a few more times; nothing is recreated.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(containers_of(node, &[]), before);
    assert!(
        h.events_with("Created", name).is_empty(),
        "nothing created after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_containers_are_left_alone() {
    let node = "rt-node-foreign";
    let (mut cleanup, dir) = setup(node);
    // One without any label, one claiming another node.
    let plain = docker_ok(&[
        "run",
        "-d",
        "--name",
        "outpost_rt-test-foreign_x_1_0",
        HTTP_IMAGE,
    ]);
    cleanup.extra.push(plain.clone());
    let other = docker_ok(&[
        "run",
        "-d",
        "--label",
        "dev.outpost.managed=true",
        "--label",
        "dev.outpost.node=rt-node-someone-else",
        "--label",
        "dev.outpost.pod=rt-test-foreign",
        "--label",
        "dev.outpost.generation=1",
        "--label",
        "dev.outpost.container=web",
        "--label",
        "dev.outpost.run=0",
        HTTP_IMAGE,
    ]);
    cleanup.extra.push(other.clone());
    let mut h = Harness::start(node, dir.path()).await;
    // A pod of the same name as the foreign containers' labels, then none.
    h.set_pods(vec![(
        pod("rt-test-foreign", vec![http_container("rt-test-foreign")]),
        1,
    )]);
    h.wait_pod("rt-test-foreign", "Running", 60, running).await;
    h.set_pods(vec![]);
    h.wait_for("pod gone", 30, |s| s.pods.is_empty()).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    for id in [&plain, &other] {
        assert_eq!(
            docker_ok(&["inspect", "-f", "{{.State.Running}}", id]),
            "true",
            "foreign container {id} untouched"
        );
    }
}

/// Labels of a container the reconciler will take for its own.
fn our_labels(node: &str, pod: &str, container: &str) -> Vec<String> {
    [
        "dev.outpost.managed=true".to_string(),
        format!("dev.outpost.node={node}"),
        format!("dev.outpost.pod={pod}"),
        "dev.outpost.generation=1".into(),
        format!("dev.outpost.container={container}"),
        "dev.outpost.run=0".into(),
    ]
    .into_iter()
    .flat_map(|l| ["--label".to_string(), l])
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn termination_grace_is_honoured() {
    let node = "rt-node-grace";
    let (_cleanup, dir) = setup(node);
    // The engine's die events for this node's containers, with exit codes.
    let mut events = tokio::process::Command::new("docker")
        .args([
            "events",
            "--filter",
            &format!("label=dev.outpost.node={node}"),
            "--filter",
            "event=die",
            "--format",
            "{{index .Actor.Attributes \"dev.outpost.pod\"}} {{index .Actor.Attributes \"dev.outpost.container\"}} {{.Actor.Attributes.exitCode}}",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let hog_args = ["--memory-mib-per-sec", "1", "--memory-max-mib", "1"];

    // "stubborn": a pod whose app ignores SIGTERM. The reconciler always
    // runs apps with an init, which forwards SIGTERM to them, so this pod's
    // containers are made here without one, with the reconciler's labels;
    // it adopts them as its own.
    let stubborn = "rt-test-grace-stubborn";
    let pause = outpost_agent::runtime::pause::ensure_pause_image(&engine().await)
        .await
        .expect("pause image");
    let mut args: Vec<String> = vec!["run".into(), "-d".into()];
    args.extend(our_labels(node, stubborn, "POD"));
    args.push(pause);
    let pause_id = docker_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut args: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        "--network".into(),
        format!("container:{pause_id}"),
    ];
    args.extend(our_labels(node, stubborn, "hog"));
    args.push(HOG_IMAGE.into());
    args.extend(hog_args.iter().map(|a| (*a).to_string()));
    let hog_id = docker_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let mut h = Harness::start(node, dir.path()).await;
    let mut s1 = pod(stubborn, vec![container("hog", HOG_IMAGE, &hog_args)]);
    s1.termination_grace_secs = 3;
    let mut s2 = pod(
        "rt-test-grace-polite",
        vec![container("hog", HOG_IMAGE, &hog_args)],
    );
    s2.termination_grace_secs = 60;
    h.set_pods(vec![(s1, 1), (s2, 1)]);
    let st = h
        .wait_for("both running", 60, |s| {
            s.pods.len() == 2 && s.pods.values().all(running)
        })
        .await;
    assert_eq!(
        st.pods[stubborn].containers[0].container_id, hog_id,
        "adopted"
    );

    let stopped = Instant::now();
    h.set_pods(vec![]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut gone = BTreeMap::new();
    while gone.len() < 2 && Instant::now() < deadline {
        for pod in [stubborn, "rt-test-grace-polite"] {
            if !gone.contains_key(pod)
                && containers_of(node, &[&format!("label=dev.outpost.pod={pod}")]).is_empty()
            {
                gone.insert(pod, stopped.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = events.start_kill();
    let mut out = String::new();
    let mut stdout = events.stdout.take().unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), stdout.read_to_string(&mut out)).await;
    eprintln!("die events:\n{out}\nremoved after: {gone:?}");
    let code = |pod: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{pod} hog ")))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_string)
    };
    // Ignores SIGTERM: killed once its 3 s grace ran out, not before.
    assert_eq!(code(stubborn).as_deref(), Some("137"));
    assert!(gone[stubborn] >= Duration::from_millis(2_500), "{gone:?}");
    // Handles SIGTERM (via init): exits at once, long before its 60 s grace.
    assert_eq!(code("rt-test-grace-polite").as_deref(), Some("143"));
    assert!(
        gone["rt-test-grace-polite"] < Duration::from_secs(30),
        "{gone:?}"
    );
}

/// ELF machine numbers (`e_machine`) of architectures this host's kernel
/// does not run, with their Go names, most likely first: a 64-bit ARM
/// binary on x86, an x86 one on ARM, then ones few boxes emulate.
fn foreign_machines() -> Vec<(u16, &'static str)> {
    let mut m = if cfg!(target_arch = "aarch64") {
        vec![(62, "amd64")]
    } else {
        vec![(183, "arm64")]
    };
    m.extend([(243, "riscv64"), (75, "vax")]);
    m
}

/// Loads `tag` into the engine as a one-layer image holding only `/app`
/// (`elf`) whose config says it is built for `arch`, as a pulled
/// single-architecture image of a static binary is: a `docker save`
/// tarball made by hand (no registry, and the classic builder cannot set
/// another platform).
fn load_image_for(tag: &str, arch: &str, elf: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("app"), elf).unwrap();
    std::fs::set_permissions(
        root.join("app"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let run = |cmd: &mut Command| {
        let out = cmd.current_dir(dir.path()).output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    run(Command::new("tar").args(["-cf", "layer.tar", "-C", "root", "app"]));
    let sum = run(Command::new("sha256sum").arg("layer.tar"));
    let sum = sum.split_whitespace().next().unwrap();
    let config = format!(
        r#"{{"architecture":"{arch}","os":"linux","config":{{"Entrypoint":["/app"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{sum}"]}}}}"#
    );
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    std::fs::write(
        dir.path().join("manifest.json"),
        format!(r#"[{{"Config":"config.json","RepoTags":["{tag}"],"Layers":["layer.tar"]}}]"#),
    )
    .unwrap();
    run(Command::new("tar").args([
        "-cf",
        "image.tar",
        "manifest.json",
        "config.json",
        "layer.tar",
    ]));
    run(Command::new("docker").args(["load", "-i", "image.tar"]));
}

/// Whether a binfmt_misc handler (qemu-user, say) would run binaries of
/// `machine`, so the kernel would not refuse them.
fn binfmt_runs(machine: u16) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc/sys/fs/binfmt_misc") else {
        return false;
    };
    // ELF e_machine is at byte 18, little-endian: hex digits 36..40 of
    // the magic.
    let want = format!("{:02x}{:02x}", machine & 0xff, machine >> 8);
    dir.flatten().any(|e| {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        text.starts_with("enabled")
            && text.lines().any(|l| {
                l.strip_prefix("magic 7f454c46")
                    .is_some_and(|m| m.get(28..32) == Some(want.as_str()))
            })
    })
}

/// A valid ELF64 executable header (and one program header) for `machine`:
/// the kernel reads this far, sees another architecture and answers ENOEXEC.
fn foreign_elf(machine: u16) -> Vec<u8> {
    let mut b = Vec::with_capacity(120);
    b.extend_from_slice(b"\x7fELF");
    b.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little-endian, version 1, SysV
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    b.extend_from_slice(&machine.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    b.extend_from_slice(&0x40_0078u64.to_le_bytes()); // entry
    b.extend_from_slice(&64u64.to_le_bytes()); // program headers at 64
    b.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    b.extend_from_slice(&0u32.to_le_bytes()); // flags
    for v in [64u16, 56, 1, 0, 0, 0] {
        // header size, phentsize, phnum, shentsize, shnum, shstrndx
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    b.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for v in [0u64, 0x40_0000, 0x40_0000, 120, 120, 0x1000] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(b.len(), 120);
    b
}

/// Removes a test image on drop (after the containers using it: declare
/// it before the test's [`Cleanup`]).
struct ImageGuard(String);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let _ = docker(&["rmi", "-f", &self.0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_for_another_architecture_fails_the_pod_once() {
    let image = "outpost/rt-test-wrong-arch:dev";
    let declared = "outpost/rt-test-declared-arch:dev";
    let _images = (ImageGuard(image.into()), ImageGuard(declared.into()));
    let node = "rt-node-arch";
    let (_cleanup, dir) = setup(node);
    let (machine, arch_name) = foreign_machines()
        .into_iter()
        .find(|(m, _)| !binfmt_runs(*m))
        .expect("an architecture this kernel does not run");
    eprintln!("the images' binaries are for {arch_name} (e_machine {machine})");
    // FROM scratch, like a real image for that architecture: its /bin/sh is
    // foreign too. (Docker's init, which the agent runs containers under,
    // execs through execvp, which retries a refused binary through
    // /bin/sh; with no /bin/sh at all that retry's ENOENT would be what it
    // reports.)
    let ctx = tempfile::tempdir().unwrap();
    let elf = foreign_elf(machine);
    for f in ["app", "sh"] {
        let path = ctx.path().join(f);
        std::fs::write(&path, &elf).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY app /app\nCOPY sh /bin/sh\nENTRYPOINT [\"/app\"]\n",
    )
    .unwrap();
    let out = Command::new("docker")
        .args(["build", "-q", "-t", image])
        .arg(ctx.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // And one as pulled for that architecture, with no shell: Docker's
    // init then reports "No such file or directory", and the image's
    // config tells the agent why.
    load_image_for(declared, arch_name, &elf);

    let mut h = Harness::start(node, dir.path()).await;
    let name = "rt-test-arch";
    let mut spec = pod(
        name,
        vec![http_container(name), container("app", image, &[])],
    );
    spec.namespace = "rt-team".into();
    let key = spec.key();
    let single = "rt-test-arch-declared";
    let started = Instant::now();
    h.set_pods(vec![
        (spec, 1),
        (pod(single, vec![container("app", declared, &[])]), 1),
    ]);
    let st = h
        .wait_pod(&key, "Failed with ExecFormatError", 60, |p| {
            p.phase == PodPhase::Failed
        })
        .await;
    eprintln!(
        "pod failed after {:.1}s: {}",
        started.elapsed().as_secs_f32(),
        st.message
    );
    let node_arch = outpost_agent::probe::go_arch(std::env::consts::ARCH);
    assert_eq!(st.reason, "ExecFormatError");
    assert!(st.message.starts_with("container app: "), "{}", st.message);
    let app = &st.containers[1];
    assert_eq!(
        app.state,
        ContainerState::Waiting {
            reason: "ExecFormatError".into(),
            message: format!(
                "image {image} does not run on this {node_arch} node: exec format error"
            ),
        }
    );
    assert_eq!(app.restart_count, 0);
    assert_eq!(st.pod_ip, "", "nothing of a failed pod runs");
    let event = h.wait_event("ExecFormatError", &key).await;
    assert_eq!(event.kind, outpost_proto::EventType::Warning);
    assert_eq!(event.message, st.message);

    // It can never work here: nothing restarts, over several syncs (every
    // 2 s here), and the rest of the pod is stopped.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let st = h.status.borrow().pods[&key].clone();
    assert_eq!(st.phase, PodPhase::Failed);
    assert_eq!(st.containers[1].state.reason(), "ExecFormatError");
    assert_eq!(st.containers[1].restart_count, 0);
    let of_pod = format!("label=dev.outpost.pod={key}");
    assert_eq!(
        containers_of(node, &[&of_pod, "label=dev.outpost.container=app"]).len(),
        1,
        "one run only"
    );
    assert!(
        containers_of(node, &[&of_pod, "status=running"]).is_empty(),
        "the web container and the sandbox are stopped"
    );
    assert!(h.events_with("BackOff", &key).is_empty());
    assert_eq!(h.events_with("ExecFormatError", &key).len(), 1);
    let st = h.status.borrow().pods[single].clone();
    assert_eq!(
        (st.phase, st.reason.as_str()),
        (PodPhase::Failed, "ExecFormatError")
    );
    assert_eq!(
        st.containers[0].state,
        ContainerState::Waiting {
            reason: "ExecFormatError".into(),
            message: format!(
                "image {declared} (built for {arch_name}) does not run on this {node_arch} node: exec format error"
            ),
        }
    );
    assert_eq!(st.containers[0].restart_count, 0);
    assert!(h.events_with("BackOff", single).is_empty());
    assert_eq!(h.events_with("ExecFormatError", single).len(), 1);
    assert_eq!(
        h.events_with("Started", &key)
            .iter()
            .filter(|e| e.message.contains("container app"))
            .count(),
        1
    );

    // An agent restart does not bring it back.
    let mut h = h.restart().await;
    let st = h
        .wait_pod(&key, "still Failed after a restart", 30, |p| {
            p.phase == PodPhase::Failed && p.containers[1].state.reason() == "ExecFormatError"
        })
        .await;
    assert_eq!(st.reason, "ExecFormatError");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        h.events_with("ExecFormatError", &key).is_empty(),
        "said once"
    );
    assert!(
        h.events_with("Created", &key).is_empty(),
        "nothing recreated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_is_err_image_pull_then_back_off() {
    let node = "rt-node-pull";
    let (_cleanup, dir) = setup(node);
    let mut h = Harness::start(node, dir.path()).await;
    let name = "rt-test-pull";
    h.set_pods(vec![(
        pod(
            name,
            vec![container("app", "outpost/rt-test-missing:1", &[])],
        ),
        1,
    )]);
    let mut seen = Vec::new();
    h.wait_pod(name, "ImagePullBackOff", 60, |p| {
        let r = p.containers[0].state.reason().to_string();
        if seen.last() != Some(&r) {
            seen.push(r.clone());
        }
        r == "ImagePullBackOff"
    })
    .await;
    eprintln!("reasons seen: {seen:?}");
    assert!(seen.contains(&"ErrImagePull".to_string()), "{seen:?}");
    let st = h.status.borrow().pods[name].clone();
    match &st.containers[0].state {
        ContainerState::Waiting { message, .. } => {
            assert!(message.contains("outpost/rt-test-missing:1"), "{message}")
        }
        s => panic!("{s:?}"),
    }
    h.wait_event("Failed", name).await;
    assert!(containers_of(node, &[]).is_empty(), "nothing created");
}

fn report(conditions: Vec<(ConditionType, bool)>, met: &[Signal]) -> NodeReport {
    NodeReport {
        conditions: conditions
            .into_iter()
            .map(|(kind, on)| Condition {
                kind,
                status: if on {
                    ConditionStatus::True
                } else {
                    ConditionStatus::False
                },
                reason: String::new(),
                message: String::new(),
                last_transition_ms: 0,
            })
            .collect(),
        signals: met
            .iter()
            .map(|s| SignalObservation {
                signal: *s,
                available: 1,
                capacity: 100,
                hard_threshold: Some(10),
                soft_threshold: None,
                state: ThresholdState::Met,
                window_min: 1,
            })
            .collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refusal_is_terminal_across_restarts() {
    let node = "rt-node-admit";
    let (_cleanup, dir) = setup(node);
    let mut h = Harness::start(node, dir.path()).await;
    h.reports
        .send_replace(Some(report(vec![(ConditionType::DiskPressure, true)], &[])));
    let name = "rt-test-admit";
    h.set_pods(vec![(pod(name, vec![http_container(name)]), 1)]);
    let st = h
        .wait_pod(name, "Failed", 30, |p| p.phase == PodPhase::Failed)
        .await;
    assert_eq!(st.reason, "Evicted");
    assert_eq!(st.message, "The node had condition: [DiskPressure].");
    h.wait_event("AdmissionRefused", name).await;
    assert!(dir.path().join("pods/terminal.json").is_file());

    // Pressure gone and the agent restarted: the decision stands.
    h.reports.send_replace(None);
    let mut h = h.restart().await;
    let st = h
        .wait_pod(name, "still Failed", 30, |p| p.phase == PodPhase::Failed)
        .await;
    assert_eq!(st.reason, "Evicted");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(containers_of(node, &[]).is_empty(), "never started");

    // A new generation of the pod is a new pod: admitted now.
    h.set_pods(vec![(pod(name, vec![http_container(name)]), 2)]);
    h.wait_pod(name, "generation 2 Running", 60, |p| {
        p.generation == 2 && running(p)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_pressure_evicts_the_biggest_pod_once() {
    let node = "rt-node-evict";
    let (_cleanup, dir) = setup(node);
    let mut h = Harness::start(node, dir.path()).await;
    let hog = container(
        "hog",
        HOG_IMAGE,
        &["--memory-mib-per-sec", "40", "--memory-max-mib", "40"],
    );
    h.set_pods(vec![
        (pod("rt-test-evict-hog", vec![hog]), 1),
        (
            pod(
                "rt-test-evict-web",
                vec![http_container("rt-test-evict-web")],
            ),
            1,
        ),
    ]);
    h.wait_for("hog using its memory", 60, |s| {
        s.pods.len() == 2
            && s.pods.values().all(running)
            && s.pods["rt-test-evict-hog"].usage.memory_bytes > 30 << 20
    })
    .await;
    h.reports.send_replace(Some(report(
        vec![(ConditionType::MemoryPressure, true)],
        &[Signal::MemoryAvailable],
    )));
    let st = h
        .wait_pod("rt-test-evict-hog", "Evicted", 30, |p| {
            p.phase == PodPhase::Failed
        })
        .await;
    assert_eq!(st.reason, "Evicted");
    assert!(
        st.message
            .starts_with("The node was low on resource: memory."),
        "{}",
        st.message
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = h.status.borrow().clone();
    assert!(running(&s.pods["rt-test-evict-web"]), "one pod per cycle");
    assert_eq!(
        containers_of(
            node,
            &["label=dev.outpost.pod=rt-test-evict-hog", "status=running"]
        ),
        Vec::<String>::new(),
        "evicted pod stopped"
    );
    h.wait_event("Evicted", "rt-test-evict-hog").await;
    assert_eq!(h.events_with("Evicted", "rt-test-evict-hog").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_engine_reports_runtime_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    // A socket file nobody listens on: every call is refused.
    let sock = dir.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let docker =
        bollard::Docker::connect_with_unix(sock.to_str().unwrap(), 5, bollard::API_DEFAULT_VERSION)
            .unwrap();
    let name = "rt-test-noengine";
    let mut pods = BTreeMap::new();
    pods.insert(
        name.to_string(),
        DesiredPod {
            generation: 1,
            spec: pod(name, vec![http_container(name)]),
        },
    );
    let mut h = Harness::start_with(
        "rt-node-noengine",
        dir.path(),
        docker,
        Arc::new(DesiredSet {
            generation: 1,
            pods,
            ..DesiredSet::default()
        }),
        None,
    );
    let st = h
        .wait_pod(name, "RuntimeUnavailable", 30, |p| {
            p.containers[0].state.reason() == "RuntimeUnavailable"
        })
        .await;
    eprintln!("{st:#?}");
    assert!(!h.task.is_finished(), "the reconciler keeps retrying");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_killed_under_it_come_back_per_policy() {
    // What an engine restart leaves behind: every container of the pod
    // exited.
    let node = "rt-node-revive";
    let (_cleanup, dir) = setup(node);
    let mut h = Harness::start(node, dir.path()).await;
    let always = "rt-test-revive-always";
    let never = "rt-test-revive-never";
    let mut n = pod(never, vec![http_container(never)]);
    n.restart_policy = RestartPolicy::Never;
    h.set_pods(vec![(pod(always, vec![http_container(always)]), 1), (n, 1)]);
    h.wait_for("both running", 60, |s| {
        s.pods.len() == 2 && s.pods.values().all(running)
    })
    .await;
    for id in containers_of(node, &["status=running"]) {
        docker_ok(&["kill", &id]);
    }
    let st = h
        .wait_pod(always, "Always: running again", 60, |p| {
            running(p) && p.containers[0].restart_count == 1
        })
        .await;
    assert!(matches!(
        st.containers[0].last_state,
        Some(ContainerState::Terminated { exit_code: 137, .. })
    ));
    let ip = pod_ip(node, always);
    assert_eq!(
        http_get(&format!("{ip}:8080"), "/").await,
        Ok((200, always.to_string()))
    );
    let st = h
        .wait_pod(never, "Never: Failed", 30, |p| p.phase == PodPhase::Failed)
        .await;
    assert_eq!(st.containers[0].restart_count, 0);
    // Nothing of it runs again (its sandbox included) once it is Failed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let left = containers_of(
        node,
        &[&format!("label=dev.outpost.pod={never}"), "status=running"],
    );
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_generation_replaces_the_containers() {
    let node = "rt-node-gen";
    let (_cleanup, dir) = setup(node);
    let mut h = Harness::start(node, dir.path()).await;
    let name = "rt-test-gen";
    h.set_pods(vec![(pod(name, vec![http_container(name)]), 1)]);
    let st = h.wait_pod(name, "generation 1 running", 60, running).await;
    let old = st.containers[0].container_id.clone();
    let mut spec = pod(name, vec![http_container(name)]);
    spec.containers[0]
        .env
        .push(("COLOUR".into(), "blue".into()));
    h.set_pods(vec![(spec, 2)]);
    let st = h
        .wait_pod(name, "generation 2 running", 60, |p| {
            p.generation == 2 && running(p)
        })
        .await;
    assert_ne!(st.containers[0].container_id, old);
    assert_eq!(st.containers[0].restart_count, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !containers_of(node, &["label=dev.outpost.generation=1"]).is_empty()
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        containers_of(node, &["label=dev.outpost.generation=1"]).is_empty(),
        "old generation removed"
    );
    let env = docker_ok(&[
        "inspect",
        "-f",
        "{{json .Config.Env}}",
        &st.containers[0].container_id,
    ]);
    assert!(env.contains("COLOUR=blue"), "{env}");
}
