//! A Docker engine of the test's own: a second `dockerd` on a private
//! socket, data root and exec root in a temp dir, beside the box's engine,
//! for scenarios that kill and restart the engine under an agent.
//!
//! It coexists with the box's engine by owning nothing the other one owns:
//! a default bridge of its own (`--bridge` to a bridge made here, with a
//! /24 of the site networks' pool; `--bridge=none` would make the daemon
//! delete the host's `docker0`), no iptables or masquerading rules,
//! its own containerd (under the exec root), the `vfs` storage driver
//! (works on any filesystem, and the workload images are one small layer),
//! and an empty config file, so the box's `/etc/docker/daemon.json` (its
//! data root, its driver) does not apply. Pods join a bridge network made
//! on it ([`PrivateEngine::create_network`]), whose /24 comes from the
//! same pool as the site networks'.
//!
//! Dropping it removes everything: its containers and networks, the
//! daemon and its containerd (SIGTERM, then SIGKILL after 15 s), mounts left
//! under its directory, and the directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the daemon gets to answer after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERM'd daemon gets before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A private `dockerd` and its directory.
pub struct PrivateEngine {
    dir: tempfile::TempDir,
    /// `unix://<dir>/docker.sock`: `DOCKER_HOST` for an agent, `-H` for the CLI.
    pub host: String,
    child: Option<Child>,
    starts: u32,
    /// Whether it ever answered (so a drop after a kill restarts it to
    /// remove what it holds).
    answered: bool,
    networks: Vec<String>,
    /// The bridge made for its default network (removed on drop).
    bridge: String,
}

impl PrivateEngine {
    /// Starts the daemon and waits until it answers. `Err` says why it
    /// could not run (no `dockerd`, not root, its log's tail).
    pub fn start() -> Result<PrivateEngine, String> {
        // Short: the daemon's and containerd's unix sockets live under it.
        let dir = tempfile::Builder::new()
            .prefix("outpost-dockerd-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("temp dir: {e}"))?;
        std::fs::write(dir.path().join("daemon.json"), "{}\n")
            .map_err(|e| format!("daemon.json: {e}"))?;
        let host = format!("unix://{}", dir.path().join("docker.sock").display());
        let bridge = make_bridge()?;
        let mut engine = PrivateEngine {
            dir,
            host,
            child: None,
            starts: 0,
            answered: false,
            networks: Vec::new(),
            bridge,
        };
        engine.spawn()?;
        Ok(engine)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn(&mut self) -> Result<(), String> {
        self.starts += 1;
        let log = self.path(&format!("dockerd-{}.log", self.starts));
        let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let d = self.dir.path();
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .args(["--host", &self.host])
            .arg("--data-root")
            .arg(d.join("root"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .args(["--bridge", &self.bridge])
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--storage-driver=vfs",
                "--live-restore=false",
            ])
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(|e| format!("running dockerd: {e} (is docker.io installed?)"))?;
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < START_TIMEOUT {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!(
                    "the private dockerd exited ({status}):\n{}",
                    tail(&log, 20)
                ));
            }
            if self
                .docker(&["version", "--format", "{{.Server.Version}}"])
                .0
            {
                self.answered = true;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!(
            "the private dockerd did not answer within {}s:\n{}",
            START_TIMEOUT.as_secs(),
            tail(&log, 20)
        ))
    }

    /// The docker CLI against this engine: success and trimmed stdout
    /// (stderr appended on failure).
    pub fn docker(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("docker")
            .args(["-H", &self.host])
            .args(args)
            .output()
            .expect("the docker CLI runs");
        let mut text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() {
            text.push_str(&String::from_utf8_lossy(&out.stderr));
        }
        (out.status.success(), text)
    }

    /// [`PrivateEngine::docker`] that must succeed.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let (ok, text) = self.docker(args);
        assert!(ok, "docker -H {} {args:?} failed: {text}", self.host);
        text
    }

    /// Copies `image` from the box's engine: `docker save | docker -H load`.
    pub fn load_image(&self, image: &str) {
        let mut save = Command::new("docker")
            .args(["save", image])
            .stdout(Stdio::piped())
            .spawn()
            .expect("docker save");
        let out = Command::new("docker")
            .args(["-H", &self.host, "load", "-q"])
            .stdin(save.stdout.take().expect("piped"))
            .output()
            .expect("docker load");
        let saved = save.wait().expect("docker save");
        assert!(
            saved.success() && out.status.success(),
            "copying {image} to the private engine: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A bridge network on this engine on a free /24 of the harness's pool;
    /// removed with the engine.
    pub fn create_network(&mut self, name: &str) -> crate::sites::SiteNetwork {
        let run = format!("{:x}", std::process::id());
        let net = crate::sites::create_network_with(&["-H", &self.host], &run, name);
        self.networks.push(net.name.clone());
        net
    }

    /// SIGKILL of the daemon (an engine crash). The daemon started its
    /// containerd with a parent-death SIGKILL, so containerd dies with it;
    /// the containers' shims stay, as they would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.forget_dead_containerd();
    }

    /// Waits for the daemon's containerd to die and removes its pid file
    /// once it has. Under an init that does not reap orphans (some
    /// container and CI sandboxes), the dead containerd stays a zombie, and
    /// a restarted daemon that finds its pid alive waits for a socket
    /// nobody serves ("timeout waiting for containerd to start"); on a box
    /// with a reaping init the pid file would name a gone process and the
    /// daemon would start a new containerd, which is what removing it does.
    fn forget_dead_containerd(&self) {
        let pid_file = self.path("exec/containerd/containerd.pid");
        let Ok(pid) = std::fs::read_to_string(&pid_file) else {
            return;
        };
        let pid = pid.trim().to_string();
        let start = Instant::now();
        while start.elapsed() < STOP_TIMEOUT {
            if !process_runs(&pid) {
                let _ = std::fs::remove_file(&pid_file);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts the daemon again on the same directories (after
    /// [`PrivateEngine::kill`]).
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn()
    }

    /// The daemon's log since its last start.
    pub fn log(&self) -> String {
        tail(&self.path(&format!("dockerd-{}.log", self.starts)), 40)
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        // Killed and not restarted (a failed scenario): start it again, so
        // it removes its containers and networks (their bridges are the
        // host's interfaces) itself.
        if self.child.is_none() && self.answered {
            let _ = self.spawn();
        }
        if self.child.is_some() {
            let ids = self.docker(&["ps", "-aq"]).1;
            for id in ids.lines() {
                let _ = self.docker(&["rm", "-f", id]);
            }
            for n in &self.networks {
                let _ = self.docker(&["network", "rm", n]);
            }
        }
        if let Some(mut c) = self.child.take() {
            signal_and_wait(&mut c);
        }
        // A containerd the daemon left behind (after a SIGKILL).
        let pid_file = self.path("exec/containerd/containerd.pid");
        if let Ok(pid) = std::fs::read_to_string(&pid_file) {
            let pid = pid.trim();
            if !pid.is_empty() && process_runs(pid) {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        unmount_under(self.dir.path());
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

/// A bridge for a private daemon's default network, up, with the gateway
/// address of a free /24 of the site networks' pool (a daemon given an
/// existing bridge takes the bridge's address as its network).
fn make_bridge() -> Result<String, String> {
    let name = format!("opd{:x}", std::process::id());
    let net = crate::sites::free_pool_24().ok_or("no free /24 for the private bridge")?;
    let gateway = std::net::Ipv4Addr::from(u32::from(net) | 1);
    let ip = |args: &[&str]| -> Result<(), String> {
        let out = Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    // A bridge of this name left by an earlier run of this very pid.
    let _ = Command::new("ip").args(["link", "del", &name]).output();
    ip(&["link", "add", &name, "type", "bridge"])?;
    let made = ip(&["addr", "add", &format!("{gateway}/24"), "dev", &name])
        .and_then(|()| ip(&["link", "set", &name, "up"]));
    if let Err(e) = made {
        let _ = Command::new("ip").args(["link", "del", &name]).output();
        return Err(e);
    }
    Ok(name)
}

/// Whether process `pid` exists and is not a zombie.
fn process_runs(pid: &str) -> bool {
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: the state follows the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`].
fn signal_and_wait(c: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status();
    let start = Instant::now();
    while start.elapsed() < STOP_TIMEOUT {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// Lazily unmounts every mount below `dir`, deepest first, so the temp dir
/// can be removed.
fn unmount_under(dir: &Path) {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", p]).status();
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
