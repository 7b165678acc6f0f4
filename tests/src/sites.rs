//! Agents in containers on per-site Docker networks: the harness for
//! scenarios about sites (a site cut off, a box dying) and for Service
//! routing between them.
//!
//! Each site gets its own bridge network (`outpost-t-<run>-<site>`, an
//! explicit /24 that overlaps no network or route on the box). Docker keeps
//! bridge networks apart, so sites have no route between them. Each node is
//! one agent container on its site's network: a static `outpost-agent`
//! (built with the tests' profile into `target/static-agent`, so the main
//! build cache is not touched) in a FROM scratch image
//! ([`AGENT_IMAGE`]), driving the host's engine through its mounted socket, with
//! `--pod-network` set to its site's network, so its pods live there too.
//! The agent's data dir is a bind mount of a dir in the test's temp dir at
//! the same path, so the emptyDir paths it hands the engine exist on the
//! host. The controller stays a host process, bound on `0.0.0.0` (one
//! `--listen`, and the gateways exist only once the networks do); agents
//! reach it at their network's gateway, the host's address on that bridge,
//! and check its certificate for `localhost`.
//!
//! Cutting a site is `docker network disconnect` of its agents: their pods
//! keep running on the site network, the agents reach neither the
//! controller nor their pods' addresses (so a probe would fail: scenarios
//! about cuts run pods without probes). Healing reconnects each agent at
//! its old address.
//!
//! Everything made here goes when [`Sites`] is dropped, panic or not: the
//! agent containers (label [`TEST_LABEL`]),
//! every container of their nodes (the agent's node label, see
//! [`NodeContainers`]), then the networks.

use crate::{
    container_logs, docker, docker_ok, node_of, Cluster, NodeContainers, Timing, TEST_EVICTION_HARD,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The agent image the harness builds and runs.
pub const AGENT_IMAGE: &str = "outpost-agent:test";
/// Label on [`AGENT_IMAGE`]: the sha256 of the binary in it, so an image
/// that already holds this build is not built again.
const SUM_LABEL: &str = "dev.outpost.agent.sha256";
/// Label on every agent container and network a [`Sites`] makes: its run id.
pub const TEST_LABEL: &str = "dev.outpost.test";
/// The static build's target: the host's own, the one rustup target every
/// machine that builds the workspace has.
const TRIPLE: &str = "x86_64-unknown-linux-gnu";
/// Where the engine's socket is, on the host and in the agent containers.
const DOCKER_SOCK: &str = "/var/run/docker.sock";

/// Builds the static agent and [`AGENT_IMAGE`] from it (once per test
/// process; cargo and the image's checksum label make a repeat quick).
pub fn agent_image() -> &'static str {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = BUILT.get_or_init(build_agent_image) {
        panic!("{e}");
    }
    AGENT_IMAGE
}

fn build_agent_image() -> Result<(), String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let target_dir = workspace.join("target").join("static-agent");
    let mut cmd = crate::cargo();
    cmd.current_dir(workspace)
        .args(["build", "-p", "outpost-agent", "--bin", "outpost-agent"])
        .args(["--target", TRIPLE, "--target-dir"])
        .arg(&target_dir)
        // Our flags must be the only ones: CARGO_ENCODED_RUSTFLAGS would
        // win over RUSTFLAGS. With --target they apply to the agent, not to
        // build scripts and proc macros. No debug info: nobody debugs the
        // agent in its image, and it would make the build slower and the
        // binary (and every image rebuild) six times bigger (29 MB, not 180).
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env("RUSTFLAGS", "-C target-feature=+crt-static -C debuginfo=0");
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        cmd.arg("--release");
        "release"
    };
    let status = cmd.status().map_err(|e| format!("running cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the static agent failed ({status})"));
    }
    let bin = target_dir.join(TRIPLE).join(profile).join("outpost-agent");
    let bytes = std::fs::read(&bin).map_err(|e| format!("reading {}: {e}", bin.display()))?;
    if has_interpreter(&bytes) {
        return Err(format!(
            "{} is dynamically linked; a FROM scratch image needs it static (crt-static)",
            bin.display()
        ));
    }
    let sum = sha256_hex(&bin)?;
    let (_, have) = docker(&[
        "image",
        "inspect",
        "--format",
        &format!("{{{{ index .Config.Labels \"{SUM_LABEL}\" }}}}"),
        AGENT_IMAGE,
    ]);
    if have.trim() == sum {
        return Ok(());
    }
    let ctx = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::copy(&bin, ctx.path().join("outpost-agent")).map_err(|e| e.to_string())?;
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "# outpost-agent for the scenario tests' containerized nodes (tests/src/sites.rs).\n\
         FROM scratch\n\
         COPY outpost-agent /outpost-agent\n\
         ENTRYPOINT [\"/outpost-agent\"]\n",
    )
    .map_err(|e| e.to_string())?;
    // The classic builder, as images/workloads/build-images.sh: copying one
    // file into an empty image needs nothing from BuildKit.
    let out = Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "--label", &format!("{SUM_LABEL}={sum}")])
        .args(["-t", AGENT_IMAGE])
        .arg(ctx.path())
        .output()
        .map_err(|e| format!("running docker build: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "docker build of {AGENT_IMAGE} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Whether an ELF64 file asks for a program interpreter (is dynamically
/// linked): a PT_INTERP program header.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let (Some(phoff), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..usize::from(count)).any(|i| u32_at(phoff + i * usize::from(size)) == Some(PT_INTERP))
}

fn sha256_hex(path: &Path) -> Result<String, String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .map_err(|e| format!("running sha256sum: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.split_whitespace().next() {
        Some(sum) if out.status.success() && sum.len() == 64 => Ok(sum.to_string()),
        _ => Err(format!("sha256sum {} failed: {text}", path.display())),
    }
}

/// An IPv4 prefix, `(network, mask)`.
type Prefix = (u32, u32);

fn parse_prefix(s: &str) -> Option<Prefix> {
    let (addr, len) = s.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    Some((u32::from(addr) & mask, mask))
}

fn overlaps(a: Prefix, b: Prefix) -> bool {
    let mask = a.1 & b.1;
    a.0 & mask == b.0 & mask
}

/// IPv4 prefixes in use on the box: every Docker network's subnets and
/// the host's routes.
fn taken_prefixes() -> Vec<Prefix> {
    let mut text = String::new();
    let ids = docker_ok(&["network", "ls", "-q"]);
    if !ids.is_empty() {
        let mut args = vec![
            "network",
            "inspect",
            "-f",
            "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
        ];
        args.extend(ids.lines());
        text.push_str(&docker(&args).1);
    }
    if let Ok(out) = Command::new("ip").args(["-4", "route"]).output() {
        text.push(' ');
        text.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    text.split_whitespace().filter_map(parse_prefix).collect()
}

/// A /24 of the site networks' pool that no Docker network or host route
/// uses now (its first address), for a bridge made outside Docker.
pub(crate) fn free_pool_24() -> Option<Ipv4Addr> {
    free_pool_24s(std::process::id()).next()
}

/// The pool's /24s no Docker network or host route uses now (their first
/// addresses), all of them once each, starting at `seed` (modulo the pool)
/// so runs started together try different ones first.
fn free_pool_24s(seed: u32) -> impl Iterator<Item = Ipv4Addr> {
    let taken = taken_prefixes();
    (0..POOL_SIZE)
        .map(move |k| POOL_BASE + ((seed.wrapping_add(k) % POOL_SIZE) << 8))
        .filter(move |net| !taken.iter().any(|t| overlaps(*t, (*net, 0xffff_ff00))))
        .map(Ipv4Addr::from)
}

/// First /24 of the pool the site networks come from: 10.240.0.0/12,
/// 4096 /24s, far from Docker's default pools (172.17/16 and up,
/// 192.168/16).
const POOL_BASE: u32 = 0x0af0_0000;
const POOL_SIZE: u32 = 4096;
/// Networks tried before giving up (creates that lost a race to another
/// run count).
const MAX_NETWORK_TRIES: u32 = 64;

/// A site's network.
#[derive(Debug, Clone)]
pub struct SiteNetwork {
    pub name: String,
    /// The /24's first address.
    pub subnet: Ipv4Addr,
    /// The host's address on it: where the controller is reached.
    pub gateway: Ipv4Addr,
}

impl SiteNetwork {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => u32::from(v4) & 0xffff_ff00 == u32::from(self.subnet),
            IpAddr::V6(_) => false,
        }
    }

    /// The `n`th address of the /24 (1 is the gateway).
    fn host(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) | u32::from(n))
    }
}

/// One node: its agent container.
#[derive(Debug, Clone)]
pub struct AgentContainer {
    pub site: String,
    pub container: String,
    /// Its address on the site network (kept across a cut).
    pub ip: Ipv4Addr,
}

/// Removes what a [`Sites`] made, in an order that lets each step succeed.
struct Guard {
    run: String,
    nodes: Vec<String>,
    networks: Vec<String>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let label = format!("label={TEST_LABEL}={}", self.run);
        let (_, agents) = docker(&["ps", "-aq", "--filter", &label]);
        if std::thread::panicking() {
            for id in agents.lines() {
                let name = docker(&["inspect", "-f", "{{.Name}}", id]).1;
                eprintln!(
                    "---- agent container {name} ----\n{}",
                    container_logs(id, 40)
                );
            }
        }
        // The agents first, so none starts a pod once its pods are gone.
        for id in agents.lines() {
            let _ = docker(&["rm", "-f", id]);
        }
        drop(NodeContainers(std::mem::take(&mut self.nodes)));
        for n in &self.networks {
            let _ = docker(&["network", "rm", n]);
        }
    }
}

/// A host-process controller and agents in containers, one Docker network
/// per site. Derefs to the [`Cluster`] (the controller, `outpostctl`, the
/// waits).
pub struct Sites {
    // Dropped first: the containers and networks go before the controller
    // and the temp dir.
    guard: Guard,
    cluster: Cluster,
    token: (String, String),
    networks: BTreeMap<String, SiteNetwork>,
    /// The controller's `--service-cidr`.
    pub service_cidr: String,
    agents: BTreeMap<String, AgentContainer>,
}

impl std::ops::Deref for Sites {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl Sites {
    /// A controller with `timing`, a network per site and no agent yet.
    pub fn new(timing: Timing, sites: &[&str]) -> Sites {
        agent_image();
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let run = format!(
            "{:x}{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        );
        let mut guard = Guard {
            run: run.clone(),
            nodes: Vec::new(),
            networks: Vec::new(),
        };
        let mut networks = BTreeMap::new();
        for site in sites {
            let net = create_network(&run, site);
            guard.networks.push(net.name.clone());
            networks.insert((*site).to_string(), net);
        }
        // The Service range: a /24 of the harness's pool, held by a network
        // of its own that no container joins, so no other run takes it and
        // cluster IPs are addresses the project owns.
        let services = create_network(&run, "svc");
        guard.networks.push(services.name.clone());
        let service_cidr = format!("{}/24", services.subnet);
        let cluster = Cluster::start_on_with(
            timing,
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            vec!["--service-cidr".into(), service_cidr.clone()],
        );
        let token = cluster.token(&[]);
        Sites {
            guard,
            cluster,
            token,
            networks,
            service_cidr,
            agents: BTreeMap::new(),
        }
    }

    /// A controller with `timing` and one agent container per
    /// `(node, site)`, once every node is Ready.
    pub fn start<S: AsRef<str>>(timing: Timing, nodes: &[(S, &str)]) -> Sites {
        let mut sites: Vec<&str> = nodes.iter().map(|(_, s)| *s).collect();
        sites.sort_unstable();
        sites.dedup();
        let mut s = Sites::new(timing, &sites);
        for (node, site) in nodes {
            s.start_agent(node.as_ref(), site);
        }
        for (node, _) in nodes {
            s.wait_ready(node.as_ref());
        }
        s
    }

    /// Runs the agent container of `node` on `site`'s network, enrolling
    /// with the cluster's token.
    pub fn start_agent(&mut self, node: &str, site: &str) {
        self.start_agent_with(node, site, &[], &[]);
    }

    /// [`Sites::start_agent`] with more `docker run` options (before the
    /// image: mounts, `--memory`) and more agent flags.
    pub fn start_agent_with(
        &mut self,
        node: &str,
        site: &str,
        run_options: &[&str],
        agent_flags: &[&str],
    ) {
        let net = self
            .networks
            .get(site)
            .expect("a site of this harness")
            .clone();
        let in_site = self.agents.values().filter(|a| a.site == site).count();
        let ip = net.host(10 + u8::try_from(in_site).expect("fewer than 245 agents a site"));
        let container = format!("outpost-t-{}-{node}", self.guard.run);
        let data_dir: PathBuf = self.cluster.path(&format!("agent-{node}"));
        std::fs::create_dir_all(&data_dir).expect("agent data dir");
        let data = data_dir.to_str().expect("utf-8 temp dir");
        self.guard.nodes.push(node.to_string());
        let controller = format!("{}:{}", net.gateway, self.cluster.listen.port());
        let (token, hash) = &self.token;
        let ip_text = ip.to_string();
        let mount = format!("{DOCKER_SOCK}:{DOCKER_SOCK}");
        let data_mount = format!("{data}:{data}");
        let label = format!("{TEST_LABEL}={}", self.guard.run);
        let site_label = format!("site={site}");
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &container,
            "--label",
            &label,
            "--network",
            &net.name,
            "--ip",
            &ip_text,
            "-e",
            "RUST_LOG=info",
            // Service routing: the agent claims the Service range in its
            // own namespace (CAP_NET_ADMIN) and enters its pods' namespaces
            // to route them to itself (CAP_SYS_ADMIN, the host's PIDs). The
            // engine's socket it holds is root on the host anyway.
            "--cap-add",
            "NET_ADMIN",
            "--cap-add",
            "SYS_ADMIN",
            "--cap-add",
            "SYS_PTRACE",
            // The kernel's DNAT (`--service-proxy`, auto by default)
            // forwards Service connections out of the agent's namespace.
            "--sysctl",
            "net.ipv4.ip_forward=1",
            "--pid",
            "host",
            "-v",
            &mount,
            "-v",
            &data_mount,
        ];
        args.extend_from_slice(run_options);
        args.extend_from_slice(&[
            AGENT_IMAGE,
            "--controller",
            &controller,
            "--server-name",
            "localhost",
            "--data-dir",
            data,
            "--name",
            node,
            "--labels",
            &site_label,
            "--pod-network",
            &net.name,
            "--housekeeping-interval",
            "1s",
            "--max-backoff",
            "2s",
            "--eviction-hard",
            TEST_EVICTION_HARD,
            "--token",
            token,
            "--ca-hash",
            hash,
        ]);
        args.extend_from_slice(agent_flags);
        docker_ok(&args);
        self.cluster
            .agent_containers
            .insert(node.to_string(), container.clone());
        self.agents.insert(
            node.to_string(),
            AgentContainer {
                site: site.to_string(),
                container,
                ip,
            },
        );
    }

    /// Waits (60 s at most) for `node` to be Ready.
    pub fn wait_ready(&self, node: &str) {
        self.wait_for(&format!("{node} Ready"), Duration::from_secs(60), |c| {
            c.is_ready(node)
        });
    }

    pub fn network(&self, site: &str) -> &SiteNetwork {
        &self.networks[site]
    }

    pub fn agent(&self, node: &str) -> &AgentContainer {
        &self.agents[node]
    }

    /// The nodes of `site`.
    pub fn nodes_of(&self, site: &str) -> Vec<String> {
        self.agents
            .iter()
            .filter(|(_, a)| a.site == site)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// `docker kill` of a node's agent container (SIGKILL: a box losing
    /// power, as far as the controller can tell; its pods keep running).
    pub fn kill_agent(&self, node: &str) {
        docker_ok(&["kill", &self.agents[node].container]);
    }

    /// Cuts `site` off: `docker network disconnect` of each of its agents.
    pub fn cut(&self, site: &str) {
        let net = &self.networks[site].name;
        for node in self.nodes_of(site) {
            docker_ok(&["network", "disconnect", net, &self.agents[&node].container]);
        }
    }

    /// Reconnects the agents of `site` at their old addresses.
    pub fn heal(&self, site: &str) {
        let net = &self.networks[site].name;
        for node in self.nodes_of(site) {
            let a = &self.agents[&node];
            docker_ok(&[
                "network",
                "connect",
                "--ip",
                &a.ip.to_string(),
                net,
                &a.container,
            ]);
        }
    }

    /// The running containers the agent of `node` made, as Docker lists
    /// them: full id -> `POD/CONTAINER` (`POD` is the pause container).
    pub fn containers(&self, node: &str) -> BTreeMap<String, String> {
        docker_ok(&[
            "ps",
            "--no-trunc",
            "--filter",
            &format!("label=dev.outpost.node={node}"),
            "--filter",
            "status=running",
            "--format",
            "{{.ID}} {{.Label \"dev.outpost.pod\"}}/{{.Label \"dev.outpost.container\"}}",
        ])
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(id, what)| (id.to_string(), what.to_string()))
        .collect()
    }

    /// Panics unless every pod (as `get pods -o json` lists them) that
    /// has an address has it on its node's site network.
    pub fn assert_on_site_networks(&self, pods: &[Value]) {
        for p in pods {
            let Some(ip) = p["status"]["podIP"].as_str().filter(|s| !s.is_empty()) else {
                continue;
            };
            let node = node_of(p);
            let site = &self.agents[node].site;
            let net = &self.networks[site];
            let ip: IpAddr = ip.parse().expect("podIP is an address");
            assert!(
                net.contains(ip),
                "pod {} on {node} has {ip}, not an address on {} ({}/24)",
                p["metadata"]["name"],
                net.name,
                net.subnet
            );
        }
    }
}

/// A site network of its own for a test that needs no [`Sites`] (e.g. the
/// reconciler alone with `--pod-network`); removed when dropped, so drop
/// it after the containers on it.
pub struct OwnNetwork(pub SiteNetwork);

impl OwnNetwork {
    /// `outpost-t-<pid>-<name>`, as [`Sites`] makes them.
    pub fn create(name: &str) -> OwnNetwork {
        OwnNetwork(create_network(&format!("{:x}", std::process::id()), name))
    }
}

impl Drop for OwnNetwork {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.0.name]);
    }
}

/// Creates `outpost-t-<run>-<site>` on a /24 of the pool that overlaps
/// nothing on the box; another run taking the same /24 first is retried
/// on the next one.
fn create_network(run: &str, site: &str) -> SiteNetwork {
    create_network_with(&[], run, site)
}

/// [`create_network`] through the docker CLI with `cli` options first
/// (`-H unix://...` for another engine).
pub(crate) fn create_network_with(cli: &[&str], run: &str, site: &str) -> SiteNetwork {
    let name = format!("outpost-t-{run}-{site}");
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    let mut tries = 0;
    for subnet in free_pool_24s(seed) {
        let gateway = Ipv4Addr::from(u32::from(subnet) | 1);
        let label = format!("{TEST_LABEL}={run}");
        let subnet_text = format!("{subnet}/24");
        let gateway_text = gateway.to_string();
        let mut args = cli.to_vec();
        args.extend_from_slice(&[
            "network",
            "create",
            "--driver",
            "bridge",
            "--subnet",
            &subnet_text,
            "--gateway",
            &gateway_text,
            "--label",
            &label,
            &name,
        ]);
        let (ok, text) = docker(&args);
        if ok {
            return SiteNetwork {
                name,
                subnet,
                gateway,
            };
        }
        tries += 1;
        assert!(
            text.contains("overlap") && tries < MAX_NETWORK_TRIES,
            "docker network create {name} ({subnet}/24): {text}"
        );
    }
    panic!("no free /24 in 10.240.0.0/12 for {name}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_overlap_when_one_holds_the_other() {
        let p = |s| parse_prefix(s).unwrap();
        assert!(overlaps(p("10.240.3.0/24"), p("10.0.0.0/8")));
        assert!(overlaps(p("10.0.0.0/8"), p("10.240.3.0/24")));
        assert!(!overlaps(p("10.240.3.0/24"), p("10.240.4.0/24")));
        assert!(!overlaps(p("10.240.3.0/24"), p("172.17.0.0/16")));
        assert!(overlaps(p("10.240.3.0/24"), p("0.0.0.0/0")));
        assert_eq!(parse_prefix("default"), None);
        assert_eq!(parse_prefix("10.1.2.3/33"), None);
        assert_eq!(p("10.1.2.3/24"), (0x0a01_0200, 0xffff_ff00));
    }

    #[test]
    fn an_interpreter_makes_a_binary_dynamic() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // The test binary is built without crt-static.
        assert!(has_interpreter(&me));
        assert!(!has_interpreter(b"\x7fELF"));
    }

    #[test]
    fn site_networks_hold_their_own_addresses() {
        let net = SiteNetwork {
            name: "outpost-t-x-a".into(),
            subnet: Ipv4Addr::new(10, 241, 7, 0),
            gateway: Ipv4Addr::new(10, 241, 7, 1),
        };
        assert_eq!(net.host(10), Ipv4Addr::new(10, 241, 7, 10));
        assert!(net.contains("10.241.7.200".parse().unwrap()));
        assert!(!net.contains("10.241.8.2".parse().unwrap()));
        assert!(!net.contains("172.17.0.2".parse().unwrap()));
    }
}
