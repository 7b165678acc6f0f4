//! Harness for end-to-end scenarios: real `outpost-controller`,
//! `outpost-agent` and `outpostctl` processes, real QUIC on loopback, real
//! certificates, a real store on disk.
//!
//! The binaries are built once per test run with the same cargo and profile
//! as the tests, so a scenario never runs stale code. Every process's stderr
//! goes to a file in the cluster's temp dir; a failed wait prints the tails.

use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Paths of the built binaries.
#[derive(Debug)]
pub struct Bins {
    pub controller: PathBuf,
    pub agent: PathBuf,
    pub ctl: PathBuf,
}

/// A `cargo` command (the one running the tests) without the variables
/// cargo sets for a test process (`CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`,
/// `OUT_DIR`, ...). Build scripts such as ring's rerun when those change,
/// so a build run with them would rebuild those crates, and the next
/// `cargo test` outside would rebuild them back.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (k, _) in std::env::vars_os() {
        let Some(k) = k.to_str() else { continue };
        let set_for_tests = k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_BIN_")
            || k.starts_with("CARGO_MANIFEST_")
            || matches!(
                k,
                "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            );
        if set_for_tests {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Builds the binaries (once per test process) and returns their paths.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root");
        let mut cmd = cargo();
        cmd.current_dir(workspace)
            .args(["build", "--workspace", "--bins"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build");
        assert!(status.success(), "building the outpost binaries failed");
        // target/<profile>/deps/<test> -> target/<profile>; a bench
        // binary runs from target/<profile> itself.
        let exe = std::env::current_exe().expect("current exe");
        let mut dir = exe.parent().expect("target profile dir").to_path_buf();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let b = Bins {
            controller: dir.join("outpost-controller"),
            agent: dir.join("outpost-agent"),
            ctl: dir.join("outpostctl"),
        };
        for p in [&b.controller, &b.agent, &b.ctl] {
            assert!(p.exists(), "{} missing after build", p.display());
        }
        b
    })
}

/// A UDP port nobody has bound on `ip` right now.
fn free_udp_port(ip: IpAddr) -> u16 {
    UdpSocket::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TCP port on loopback nobody listens on right now.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the docker CLI; returns success and trimmed stdout (stderr appended
/// on failure, for messages).
pub fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    let mut text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        text.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    (out.status.success(), text)
}

/// The last `lines` lines a container wrote (its stdout and stderr, as
/// `docker logs` shows them; the agent logs to stderr).
pub fn container_logs(container: &str, lines: u32) -> String {
    match Command::new("docker")
        .args(["logs", "--tail", &lines.to_string(), container])
        .output()
    {
        Ok(out) => format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => format!("docker logs {container}: {e}"),
    }
}

/// [`docker`] that must succeed; returns its trimmed stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let (ok, text) = docker(args);
    assert!(ok, "docker {args:?} failed: {text}");
    text
}

/// Removes every container of these nodes (by the agent's
/// `dev.outpost.node` label) when dropped: a scenario's cleanup, which runs
/// even when the scenario fails.
pub struct NodeContainers(pub Vec<String>);

impl NodeContainers {
    pub fn of<S: Into<String>>(nodes: impl IntoIterator<Item = S>) -> NodeContainers {
        NodeContainers(nodes.into_iter().map(Into::into).collect())
    }
}

impl Drop for NodeContainers {
    fn drop(&mut self) {
        for n in &self.0 {
            let (_, ids) = docker(&[
                "ps",
                "-aq",
                "--filter",
                &format!("label=dev.outpost.node={n}"),
            ]);
            for id in ids.lines() {
                let _ = docker(&["rm", "-f", id]);
            }
        }
    }
}

/// Running containers named `container` of pod `key` on the node `node`
/// (the agent's `dev.outpost.*` labels).
pub fn pod_containers(node: &str, key: &str, container: &str) -> Vec<String> {
    let (_, ids) = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=dev.outpost.node={node}"),
        "--filter",
        &format!("label=dev.outpost.pod={key}"),
        "--filter",
        &format!("label=dev.outpost.container={container}"),
    ]);
    ids.lines().map(str::to_string).collect()
}

/// The node a pod (as `get pods -o json` serves it) is bound to; empty
/// when unbound.
pub fn node_of(p: &Value) -> &str {
    p["spec"]["nodeName"].as_str().unwrap_or_default()
}

/// Running with its Ready condition True.
pub fn running_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running" && pod_condition(p, "Ready") == Some("True")
}

/// The status of a pod's condition of type `kind`.
pub fn pod_condition<'a>(p: &'a Value, kind: &str) -> Option<&'a str> {
    p["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str())
}

/// A client for the local engine, speaking its API version.
pub async fn engine() -> bollard::Docker {
    bollard::Docker::connect_with_unix_defaults()
        .expect("docker socket")
        .negotiate_version()
        .await
        .expect("the engine answers /version")
}

/// Controller timing for tests: short enough to see transitions quickly.
#[derive(Debug, Clone)]
pub struct Timing {
    pub heartbeat: &'static str,
    pub grace: &'static str,
    pub idle: &'static str,
    pub cert_ttl: &'static str,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat: "1s",
            grace: "4s",
            idle: "6s",
            cert_ttl: "8760h",
        }
    }
}

/// Hard eviction thresholds of test agents that do not set their own:
/// far below anything a healthy test box reaches.
pub const TEST_EVICTION_HARD: &str =
    "memory.available<1Mi,nodefs.available<1%,nodefs.inodesFree<1%,imagefs.available<1%,pid.available<1%";

/// A running agent process.
#[derive(Debug)]
pub struct AgentProc {
    pub child: Child,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

/// A controller with its agents, all real processes in one temp dir.
#[derive(Debug)]
pub struct Cluster {
    pub root: tempfile::TempDir,
    pub data_dir: PathBuf,
    /// Where agents on this host and `outpostctl` reach the controller
    /// (loopback).
    pub listen: SocketAddr,
    /// What the controller binds: `listen`, or the same port on another
    /// address ([`Cluster::start_on`]).
    bind: SocketAddr,
    /// Agents that run in containers (node -> container): their
    /// `docker logs` are part of [`Cluster::logs`].
    pub agent_containers: BTreeMap<String, String>,
    pub metrics: SocketAddr,
    pub config: PathBuf,
    pub timing: Timing,
    /// More `serve` flags, kept across controller restarts.
    pub serve_flags: Vec<String>,
    controller: Option<Child>,
    controller_runs: u32,
    pub agents: BTreeMap<String, AgentProc>,
}

impl Cluster {
    /// `init` + `serve` a fresh controller on loopback and wait until it
    /// answers.
    pub fn start(timing: Timing) -> Cluster {
        Cluster::start_on(timing, IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// [`Cluster::start`] with the controller bound to `bind` (port chosen
    /// here), e.g. `0.0.0.0` for agents in containers that reach the host
    /// at their network's gateway. `outpostctl` still goes over loopback;
    /// the certificate names `localhost` and `127.0.0.1` (agents elsewhere
    /// pass `--server-name localhost`).
    pub fn start_on(timing: Timing, bind: IpAddr) -> Cluster {
        Cluster::start_on_with(timing, bind, Vec::new())
    }

    /// [`Cluster::start_on`] with more `outpost-controller serve` flags
    /// (kept for restarts).
    pub fn start_on_with(timing: Timing, bind: IpAddr, serve_flags: Vec<String>) -> Cluster {
        let bins = bins();
        let root = tempfile::tempdir().expect("tempdir");
        let data_dir = root.path().join("controller");
        let port = free_udp_port(bind);
        let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let bind = SocketAddr::new(bind, port);
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let out = Command::new(&bins.controller)
            .args(["init", "--data-dir"])
            .arg(&data_dir)
            .args(["--advertise", &listen.to_string()])
            .arg("--admin-config")
            .arg(root.path().join("admin-default.conf"))
            .env("HOME", root.path())
            .output()
            .expect("outpost-controller init");
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut c = Cluster {
            config: data_dir.join("admin.conf"),
            root,
            data_dir,
            listen,
            bind,
            agent_containers: BTreeMap::new(),
            metrics,
            timing,
            serve_flags,
            controller: None,
            controller_runs: 0,
            agents: BTreeMap::new(),
        };
        c.start_controller();
        c
    }

    /// A cluster (default timing) with one agent enrolled as `name` with
    /// `flags`, once the node is Ready.
    pub fn with_ready_agent(name: &str, flags: &[&str]) -> Cluster {
        let mut c = Cluster::start(Timing::default());
        let (token, hash) = c.token(&[]);
        c.start_agent(name, Some((&token, &hash)), flags);
        c.wait_for(&format!("{name} Ready"), Duration::from_secs(30), |c| {
            c.is_ready(name)
        });
        c
    }

    /// A controller with `timing` and one agent per `(node, site)`
    /// (labelled `site=SITE`), once every node is Ready.
    pub fn with_sites<S: AsRef<str>>(timing: Timing, nodes: &[(S, &str)]) -> Cluster {
        let mut c = Cluster::start(timing);
        let (token, hash) = c.token(&[]);
        for (name, site) in nodes {
            c.start_agent(
                name.as_ref(),
                Some((&token, &hash)),
                &["--labels", &format!("site={site}")],
            );
        }
        for (name, _) in nodes {
            let name = name.as_ref();
            c.wait_for(&format!("{name} Ready"), Duration::from_secs(60), |c| {
                c.is_ready(name)
            });
        }
        c
    }

    /// Writes `yaml` to `file` in the test's directory and applies it with
    /// `outpostctl apply -f`; panics with its stderr unless it succeeds.
    /// Returns what it printed.
    pub fn apply(&self, file: &str, yaml: &str) -> String {
        let path = self.path(file);
        std::fs::write(&path, yaml).unwrap();
        let out = self.ctl(&["apply", "-f", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "apply {file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// Starts (or restarts) the controller process on the same data dir.
    pub fn start_controller(&mut self) {
        assert!(self.controller.is_none(), "controller already running");
        self.controller_runs += 1;
        let log = self.path(&format!("controller-{}.log", self.controller_runs));
        let child = Command::new(&bins().controller)
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", &self.bind.to_string()])
            .args(["--metrics-listen", &self.metrics.to_string()])
            .args(["--heartbeat-interval", self.timing.heartbeat])
            .args(["--node-grace-period", self.timing.grace])
            .args(["--idle-timeout", self.timing.idle])
            .args(["--node-cert-ttl", self.timing.cert_ttl])
            .args(&self.serve_flags)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting outpost-controller");
        self.controller = Some(child);
        self.wait_for("controller to answer", Duration::from_secs(20), |c| {
            c.ctl(&["get", "nodes"]).status.success()
        });
    }

    /// Kills the controller (SIGKILL: no goodbye to anyone).
    pub fn kill_controller(&mut self) {
        if let Some(mut c) = self.controller.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The newest controller log.
    /// The running controller's process id.
    pub fn controller_pid(&self) -> Option<u32> {
        self.controller.as_ref().map(Child::id)
    }

    pub fn controller_log(&self) -> String {
        std::fs::read_to_string(self.path(&format!("controller-{}.log", self.controller_runs)))
            .unwrap_or_default()
    }

    /// Runs outpostctl with the admin config.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(&bins().ctl)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("running outpostctl")
    }

    /// Runs outpostctl with `-o json` and parses the answer; panics on failure.
    /// Pods matching a label selector, as `outpostctl get pods -l SELECTOR
    /// -o json` lists them (none when the call fails).
    pub fn pods(&self, selector: &str) -> Vec<Value> {
        let out = self.ctl(&["get", "pods", "-l", selector, "-o", "json"]);
        if !out.status.success() {
            return Vec::new();
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["items"].as_array().cloned().unwrap_or_default()
    }

    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.ctl(&a);
        assert!(
            out.status.success(),
            "outpostctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("outpostctl json")
    }

    /// Creates a token; returns (token, ca_hash).
    pub fn token(&self, extra: &[&str]) -> (String, String) {
        let mut args = vec!["token", "create"];
        args.extend_from_slice(extra);
        let v = self.ctl_json(&args);
        (
            v["token"].as_str().unwrap().to_string(),
            v["caHash"].as_str().unwrap().to_string(),
        )
    }

    /// Starts an agent named `name`; enrols it with `token` when given.
    pub fn start_agent(&mut self, name: &str, token: Option<(&str, &str)>, extra: &[&str]) {
        self.start_agent_env(name, token, extra, &[]);
    }

    /// Like [`Cluster::start_agent`], with extra environment variables.
    pub fn start_agent_env(
        &mut self,
        name: &str,
        token: Option<(&str, &str)>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) {
        let data_dir = self.path(&format!("agent-{name}"));
        let runs = std::fs::read_dir(self.root.path())
            .unwrap()
            .filter(|e| {
                e.as_ref().is_ok_and(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("agent-{name}-"))
                })
            })
            .count();
        let log = self.path(&format!("agent-{name}-{}.log", runs + 1));
        let mut cmd = Command::new(&bins().agent);
        cmd.args(["--controller", &self.listen.to_string()])
            .arg("--data-dir")
            .arg(&data_dir)
            .args([
                "--name",
                name,
                "--housekeeping-interval",
                "1s",
                "--max-backoff",
                "2s",
            ])
            // Host-process agents share the host's network namespace, whose
            // routes tests never touch: Service routing is tested with
            // agents in containers (their own namespaces).
            .arg("--no-service-routing")
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some((t, h)) = token {
            cmd.args(["--token", t, "--ca-hash", h]);
        }
        if !extra.iter().any(|a| a.starts_with("--eviction-hard")) {
            // The test box's disk and memory are shared with everything
            // else on it: the kubelet's default thresholds (imagefs 15 %)
            // would put every agent under pressure whenever the disk is
            // fuller than that, and the scenario would test the disk, not
            // Outpost. Scenarios about pressure set their own thresholds.
            cmd.args(["--eviction-hard", TEST_EVICTION_HARD]);
        }
        let child = cmd.spawn().expect("starting outpost-agent");
        if let Some(mut old) = self.agents.insert(
            name.to_string(),
            AgentProc {
                child,
                data_dir,
                log,
            },
        ) {
            let _ = old.child.kill();
            let _ = old.child.wait();
        }
    }

    /// Kills an agent with SIGKILL (a crash or power loss, no goodbye).
    pub fn kill_agent(&mut self, name: &str) {
        if let Some(a) = self.agents.get_mut(name) {
            let _ = a.child.kill();
            let _ = a.child.wait();
        }
    }

    pub fn agent_log(&self, name: &str) -> String {
        self.agents
            .get(name)
            .map(|a| std::fs::read_to_string(&a.log).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Waits for an agent process to exit; returns its exit code.
    pub fn wait_agent_exit(&mut self, name: &str, timeout: Duration) -> Option<i32> {
        let a = self.agents.get_mut(name)?;
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = a.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// One node as JSON, if it exists.
    pub fn node(&self, name: &str) -> Option<Value> {
        let out = self.ctl(&["get", "node", name, "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// Status of a condition of a node ("True", "False", "Unknown").
    pub fn condition(&self, node: &str, kind: &str) -> Option<String> {
        let n = self.node(node)?;
        n["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == kind)
            .and_then(|c| c["status"].as_str().map(str::to_string))
    }

    pub fn is_ready(&self, node: &str) -> bool {
        self.condition(node, "Ready").as_deref() == Some("True")
    }

    /// Polls `f` until it holds; returns how long it took. On timeout panics
    /// with the tails of every log.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Cluster) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            if f(self) {
                return start.elapsed();
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until no node has reported `image` for longer than an image
    /// listing (housekeeping 1 s) plus a heartbeat. Every test node shares
    /// this one engine, so a node may have listed an image a test tagged
    /// for a moment (to `docker save` it) and report it a heartbeat after
    /// the `rmi`; the controller would then take the image for present.
    pub fn wait_image_unreported(&self, image: &str) {
        let mut clear_since: Option<Instant> = None;
        self.wait_for(
            &format!("no node to report {image} for 4s"),
            Duration::from_secs(40),
            |c| {
                let nodes = c.ctl_json(&["get", "nodes"]);
                let reported = nodes["items"].as_array().into_iter().flatten().any(|n| {
                    n["status"]["images"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|i| i["names"].as_array().into_iter().flatten())
                        .any(|name| name.as_str().is_some_and(|s| s.ends_with(image)))
                });
                if reported {
                    clear_since = None;
                    return false;
                }
                clear_since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(4)
            },
        );
    }

    /// Tails of all logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut entries: Vec<_> = std::fs::read_dir(self.root.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for (node, container) in &self.agent_containers {
            let text = container_logs(container, 30);
            out.push_str(&format!(
                "---- agent {node} (container {container}) ----\n{text}\n"
            ));
        }
        for e in entries {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            out.push_str(&format!(
                "---- {} ----\n{}\n",
                e.file_name().to_string_lossy(),
                tail.join("\n")
            ));
        }
        out
    }

    /// The controller's whole /metrics response (headers and body).
    pub fn metrics_text(&self) -> Option<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.metrics).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(body)
    }

    /// Reads a counter or gauge from the controller's /metrics.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics_text()?
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for a in self.agents.values_mut() {
            let _ = a.child.kill();
            let _ = a.child.wait();
        }
        self.kill_controller();
    }
}

/// A one-replica Deployment `name` of `outpost-http` (label app=`name`,
/// port `http` 8080, a readiness probe on `/healthz`) on the nodes with
/// label `selector`, started with `args`.
pub fn http_deployment(name: &str, selector: (&str, &str), args: &[&str], replicas: u32) -> String {
    let args = if args.is_empty() {
        String::new()
    } else {
        let quoted: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
        format!("        args: [{}]\n", quoted.join(", "))
    };
    let (key, value) = selector;
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
      nodeSelector: {{{key}: {value}}}
      containers:
      - name: http
        image: outpost/workload-http:dev
{args}        ports:
        - {{name: http, containerPort: 8080}}
        readinessProbe:
          httpGet: {{path: /healthz, port: 8080}}
          periodSeconds: 1
---
"#
    )
}

/// A Service `name` of `kind` for app=`app`, port `port` (named `web`) to
/// the pods' `http` port.
pub fn http_service(name: &str, app: &str, port: u16, kind: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  type: {kind}
  selector: {{app: {app}}}
  ports:
  - {{name: web, port: {port}, targetPort: http}}
---
"#
    )
}

/// The first Running and Ready pod of app=`app` that is not being deleted,
/// once there is one (`timeout` at most).
pub fn ready_pod(c: &Cluster, app: &str, timeout: Duration) -> Value {
    let mut found = None;
    c.wait_for(&format!("{app} Running and Ready"), timeout, |c| {
        found = c
            .pods(&format!("app={app}"))
            .into_iter()
            .find(|p| running_ready(p) && p["metadata"]["deletionTimestamp"].is_null());
        found.is_some()
    });
    found.expect("waited for")
}

/// `GET path` over HTTP/1.0 to `addr`: the status and the body, or why
/// there is none (connect and the whole exchange bounded by `timeout`).
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: outpost\r\n\r\n").map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.take(1 << 20)
        .read_to_end(&mut raw)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no HTTP status")?;
    Ok((status, body.trim().to_string()))
}

pub mod dockerd;
pub mod sites;
pub use sites::Sites;

/// Hand-made clients for probing the controller with bad credentials and
/// bad frames, which the real agent and CLI never send.
pub mod raw {
    use outpost_proto::link;
    use outpost_proto::Message;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::net::SocketAddr;
    use std::path::Path;
    use std::time::Duration;

    /// Certificate chain and key.
    pub type Creds = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

    /// Reads a PEM file holding a certificate and a PKCS#8 key (the agent's
    /// identity.pem).
    pub fn creds_from_pem(path: &Path) -> Creds {
        let text = std::fs::read_to_string(path).expect("reading identity");
        let blocks = pem::parse_many(text).expect("pem");
        let cert = blocks.iter().find(|b| b.tag() == "CERTIFICATE").unwrap();
        let key = blocks.iter().find(|b| b.tag() == "PRIVATE KEY").unwrap();
        (
            vec![cert.contents().to_vec().into()],
            PrivateKeyDer::Pkcs8(key.contents().to_vec().into()),
        )
    }

    /// What came back from the controller.
    #[derive(Debug)]
    pub enum Outcome {
        /// A message (e.g. an Error frame).
        Reply(Message),
        /// The connection was refused or closed; the text says why.
        Closed(String),
    }

    impl Outcome {
        /// The human-readable text of the outcome.
        pub fn text(&self) -> String {
            match self {
                Outcome::Reply(Message::Error(e)) => format!("{:?}: {}", e.code, e.message),
                Outcome::Reply(m) => format!("reply {}", m.kind()),
                Outcome::Closed(s) => s.clone(),
            }
        }
    }

    fn describe(e: &quinn::ConnectionError) -> String {
        match e {
            quinn::ConnectionError::ApplicationClosed(c) => format!(
                "closed with code {}: {}",
                c.error_code,
                String::from_utf8_lossy(&c.reason)
            ),
            other => other.to_string(),
        }
    }

    /// Connects with `creds` (or none), sends `bytes` on a new stream and
    /// returns the first answer or why the connection ended.
    pub async fn send_raw(
        controller: SocketAddr,
        ca_der: &[u8],
        creds: Option<Creds>,
        bytes: Vec<u8>,
    ) -> Outcome {
        let client = link::client_config(
            ca_der.to_vec().into(),
            creds,
            link::transport(Duration::from_secs(5), 2),
        )
        .expect("client config");
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let conn = match endpoint
            .connect_with(client, controller, "localhost")
            .unwrap()
            .await
        {
            Ok(c) => c,
            Err(e) => return Outcome::Closed(describe(&e)),
        };
        let run = async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| describe(&e))?;
            // A refusal can land while the request is still being written:
            // the connection's close reason says why, not the write error.
            send.write_all(&bytes)
                .await
                .map_err(|e| match conn.close_reason() {
                    Some(reason) => describe(&reason),
                    None => e.to_string(),
                })?;
            match link::read_frame(&mut recv, outpost_proto::MAX_FRAME).await {
                Ok(Some(m)) => Ok(Outcome::Reply(m)),
                Ok(None) => Err("stream finished without a reply".to_string()),
                Err(e) => Err(match conn.close_reason() {
                    Some(reason) => describe(&reason),
                    None => e.to_string(),
                }),
            }
        };
        let out = match tokio::time::timeout(Duration::from_secs(10), run).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => Outcome::Closed(e),
            Err(_) => Outcome::Closed("no answer within 10s".into()),
        };
        // An Error frame is followed by a close carrying the code.
        if let Outcome::Reply(Message::Error(_)) = &out {
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
        }
        conn.close(0u32.into(), b"");
        out
    }

    /// Encodes one message as a frame.
    pub fn frame(m: &Message) -> Vec<u8> {
        outpost_proto::frame::encode(m).unwrap()
    }
}
