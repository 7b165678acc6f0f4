//! Agent settings: command-line flags over an optional TOML file
//! (`/etc/outpost/agent.toml` or `--config`), validated into [`AgentConfig`]
//! with every problem reported at once.

use crate::pressure::{PressureConfig, PressureFlags};
use crate::probe::HostPaths;
use clap::Parser;
use outpost_proto::files::read_bounded;
use outpost_proto::names;
use outpost_proto::units::{parse_duration, parse_quantity};
use outpost_proto::Resources;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Config file read when `--config` is not given and the file exists.
pub const DEFAULT_CONFIG: &str = "/etc/outpost/agent.toml";
const MAX_CONFIG: u64 = 64 * 1024;

/// Command-line flags. Every flag can also be set in the config file under
/// the same name with underscores (`ca_hash = "sha256:..."`).
#[derive(Parser, Debug, Default)]
#[command(name = "outpost-agent", version, about = "Outpost edge agent")]
pub struct Flags {
    /// Config file (TOML). Default: /etc/outpost/agent.toml when it exists.
    #[arg(long, env = "OUTPOST_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Controller address, host:port (UDP); a name is resolved from /etc/hosts,
    /// then the nameservers of /etc/resolv.conf (no NSS needed).
    #[arg(long)]
    pub controller: Option<String>,
    /// Name the controller's certificate must carry (default: the host part of --controller).
    #[arg(long)]
    pub server_name: Option<String>,
    /// Bootstrap token for the first start (from `outpostctl token create`).
    #[arg(long, env = "OUTPOST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// sha256:HEX of the cluster CA, pinned on first contact.
    #[arg(long)]
    pub ca_hash: Option<String>,
    /// Where the key, certificate and local state live.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Node name to enrol as (default: this host's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Node labels, k=v,k2=v2 (`site=X` is short for topology.outpost.dev/site=X).
    #[arg(long)]
    pub labels: Option<String>,
    /// How often signals are measured.
    #[arg(long)]
    pub housekeeping_interval: Option<String>,
    /// Hard eviction thresholds, kubelet syntax (replaces the defaults).
    #[arg(long)]
    pub eviction_hard: Option<String>,
    /// Soft eviction thresholds, kubelet syntax.
    #[arg(long)]
    pub eviction_soft: Option<String>,
    /// Grace periods for soft thresholds, e.g. memory.available=1m30s.
    #[arg(long)]
    pub eviction_soft_grace_period: Option<String>,
    /// Minimum reclaim per signal, e.g. memory.available=100Mi.
    #[arg(long)]
    pub eviction_minimum_reclaim: Option<String>,
    /// How long a pressure condition stays on after its threshold clears.
    #[arg(long)]
    pub eviction_pressure_transition_period: Option<String>,
    /// Resources kept for the system, e.g. cpu=200m,memory=256Mi,ephemeral-storage=1Gi,pid=1000.
    #[arg(long)]
    pub system_reserved: Option<String>,
    /// Longest wait between reconnect attempts.
    #[arg(long)]
    pub max_backoff: Option<String>,
    /// First wait before restarting a crashed container; doubles per crash (kubelet: 10s).
    #[arg(long)]
    pub restart_backoff: Option<String>,
    /// Longest wait before restarting a crashed container (kubelet: 5m).
    #[arg(long)]
    pub max_restart_backoff: Option<String>,
    /// Do not serve Services to this node's pods (no proxy on cluster IPs,
    /// no claim of the Service range in this network namespace).
    #[arg(long)]
    pub no_service_routing: bool,
    /// How Service connections are forwarded: `kernel` hands Services
    /// whose endpoints this box reaches itself (its own pods, its site's
    /// on the shared pod network) to nf_tables DNAT, with the userspace
    /// proxy for the rest (the relay to other sites, loopback node ports,
    /// UDP); `userspace` proxies everything; `auto` (default) is `kernel`
    /// where nf_tables and IPv4 forwarding work (in a container:
    /// `--sysctl net.ipv4.ip_forward=1`), else `userspace`, said once.
    #[arg(long, value_name = "auto|kernel|userspace")]
    pub service_proxy: Option<String>,
    /// Serve `/metrics` (Services through this agent, the pods' resolver)
    /// on this address, e.g. 127.0.0.1:9100. Default: off.
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Docker network the pods join (their pause containers, and
    /// one-container pods that hold their own network); pod IPs are their
    /// addresses on it. Must exist on the engine (`docker network create
    /// NAME`). Default: the engine's default bridge.
    #[arg(long)]
    pub pod_network: Option<String>,
    /// The host's /proc as this agent sees it (an agent in a container:
    /// `-v /proc:/host/proc:ro` and `--host-proc /host/proc`). Memory and
    /// PID signals and capacity are read there. Default: /proc.
    #[arg(long)]
    pub host_proc: Option<PathBuf>,
    /// The host's cgroup root as this agent sees it (`-v
    /// /sys/fs/cgroup:/host/sys/fs/cgroup:ro`). The root cgroup's memory
    /// usage and limit are read there. Default: /sys/fs/cgroup.
    #[arg(long)]
    pub host_cgroup: Option<PathBuf>,
    /// Where the host's / is seen: the engine's data root (the imagefs)
    /// is looked up under it (`-v /var/lib/docker:/host/var/lib/docker:ro`
    /// and `--host-rootfs /host`). Default: /.
    #[arg(long)]
    pub host_rootfs: Option<PathBuf>,
}

/// The config file; same names as the flags.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    controller: Option<String>,
    server_name: Option<String>,
    token: Option<String>,
    ca_hash: Option<String>,
    data_dir: Option<PathBuf>,
    name: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    housekeeping_interval: Option<String>,
    eviction_hard: Option<String>,
    eviction_soft: Option<String>,
    eviction_soft_grace_period: Option<String>,
    eviction_minimum_reclaim: Option<String>,
    eviction_pressure_transition_period: Option<String>,
    system_reserved: Option<String>,
    max_backoff: Option<String>,
    restart_backoff: Option<String>,
    max_restart_backoff: Option<String>,
    service_routing: Option<bool>,
    service_proxy: Option<String>,
    metrics_listen: Option<std::net::SocketAddr>,
    pod_network: Option<String>,
    host_proc: Option<PathBuf>,
    host_cgroup: Option<PathBuf>,
    host_rootfs: Option<PathBuf>,
}

/// Validated agent settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub controller: String,
    pub server_name: String,
    pub token: Option<String>,
    pub ca_hash: Option<String>,
    pub data_dir: PathBuf,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub housekeeping_interval: Duration,
    pub pressure: PressureConfig,
    pub reserved: Resources,
    pub max_backoff: Duration,
    pub restart_backoff: Duration,
    pub max_restart_backoff: Duration,
    /// Proxy Services for this node's pods (`--no-service-routing` turns
    /// it off).
    pub service_routing: bool,
    /// `--service-proxy`: the kernel's DNAT, the userspace proxy, or the
    /// kernel where it works.
    pub service_proxy: crate::proxy::kernel::Mode,
    /// `--metrics-listen`: where `/metrics` is served, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The Docker network pods join; `None`: the engine's default bridge.
    pub pod_network: Option<String>,
    /// Where the host's /proc, cgroup root and / are read from.
    pub host: HostPaths,
}

/// Checks a `--host-*` directory: absolute and an existing directory, with
/// a hint at the mount that provides it.
fn host_dir(
    flag: &str,
    path: Option<PathBuf>,
    default: &str,
    mount: &str,
) -> Result<PathBuf, String> {
    let Some(path) = path else {
        return Ok(PathBuf::from(default));
    };
    if !path.is_absolute() {
        return Err(format!(
            "--{flag} {} must be an absolute path",
            path.display()
        ));
    }
    if !path.is_dir() {
        return Err(format!(
            "--{flag} {} is not a directory: mount the host's {default} there (docker run {mount}) or leave --{flag} unset",
            path.display()
        ));
    }
    Ok(path)
}

/// Longest `--pod-network` accepted. Docker itself sets no bound; 128 keeps
/// the name well inside the engine's messages and our pod events.
pub const MAX_POD_NETWORK: usize = 128;

/// Checks a `--pod-network` name: Docker's charset for object names
/// (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`), at most [`MAX_POD_NETWORK`] bytes, and
/// not one of the engine's special networks, which are not a network pods
/// can share with their site (`host`: the box's own stack, ports clash
/// with the agent's; `none`: no address at all).
pub fn validate_pod_network(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty (leave it unset for the engine's default bridge)".into());
    }
    if name.len() > MAX_POD_NETWORK {
        return Err(format!(
            "must be at most {MAX_POD_NETWORK} characters, not {}",
            name.len()
        ));
    }
    let bytes = name.as_bytes();
    if !bytes[0].is_ascii_alphanumeric()
        || !bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(format!(
            "{name:?} is not a Docker network name: letters, digits, '_', '.' and '-', starting with a letter or digit"
        ));
    }
    if matches!(name, "host" | "none") {
        return Err(format!(
            "{name:?} is not a network pods can join here: name a bridge network (`docker network create NAME`) or leave it unset for the default bridge"
        ));
    }
    Ok(())
}

fn load_file(path: &Path) -> Result<FileConfig, String> {
    let text =
        read_bounded(path, MAX_CONFIG).map_err(|e| format!("reading {}: {e}", path.display()))?;
    parse_file(&text).map_err(|e| format!("{} is not a valid agent config: {e}", path.display()))
}

/// Decodes the text of an agent config file (TOML). Used by the loader and
/// by the `agent_config` fuzz target.
pub fn parse_file(text: &str) -> Result<FileConfig, toml::de::Error> {
    toml::from_str(text)
}

/// Parses `cpu=200m,memory=256Mi,ephemeral-storage=1Gi,pid=1000`.
pub fn parse_reserved(spec: &str) -> Result<Resources, String> {
    let mut r = Resources::default();
    let mut problems = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            problems.push(format!("{item:?} is not name=quantity"));
            continue;
        };
        let parsed = match k {
            "cpu" => match v.strip_suffix('m') {
                Some(m) => m.parse::<u64>().map_err(|e| e.to_string()),
                None => parse_quantity(v).map(|c| c.saturating_mul(1000)),
            }
            .map(|m| r.cpu_millis = m),
            "memory" => parse_quantity(v).map(|b| r.memory_bytes = b),
            "ephemeral-storage" => parse_quantity(v).map(|b| r.ephemeral_storage_bytes = b),
            "pid" => parse_quantity(v).map(|n| r.pids = n),
            _ => Err(format!(
                "unknown resource {k:?} (cpu, memory, ephemeral-storage, pid)"
            )),
        };
        if let Err(e) = parsed {
            problems.push(format!("{k}: {e}"));
        }
    }
    if problems.is_empty() {
        Ok(r)
    } else {
        Err(problems.join("; "))
    }
}

impl Flags {
    /// Merges flags over the config file and validates the result.
    pub fn resolve(self) -> Result<AgentConfig, String> {
        let file = match &self.config {
            Some(p) => load_file(p)?,
            None if Path::new(DEFAULT_CONFIG).exists() => load_file(Path::new(DEFAULT_CONFIG))?,
            None => FileConfig::default(),
        };
        let mut problems = Vec::new();
        let controller = self.controller.or(file.controller);
        let controller = match controller {
            Some(c)
                if c.rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
            {
                c
            }
            Some(c) => {
                problems.push(format!(
                    "--controller {c:?} must be host:port, e.g. 10.0.0.5:7443"
                ));
                String::new()
            }
            None => {
                problems.push("--controller is required (host:port of the controller)".into());
                String::new()
            }
        };
        let server_name = self.server_name.or(file.server_name).unwrap_or_else(|| {
            controller
                .rsplit_once(':')
                .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
                .unwrap_or_default()
        });
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("/var/lib/outpost"));
        let ca_hash = self.ca_hash.or(file.ca_hash);
        if let Some(h) = &ca_hash {
            let hex = h.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                problems.push(format!(
                    "--ca-hash {h:?} must be sha256: followed by 64 hex digits"
                ));
            }
        }
        let name = self.name.or(file.name);
        if let Some(n) = &name {
            if let Err(e) = names::validate_node_name(n) {
                problems.push(format!("--name: {e}"));
            }
        }
        let mut labels = file.labels.unwrap_or_default();
        if let Some(spec) = &self.labels {
            match names::parse_labels(spec) {
                Ok(l) => labels.extend(l),
                Err(e) => problems.push(format!("--labels: {e}")),
            }
        } else if let Some(site) = labels.remove("site") {
            labels.insert(names::SITE_LABEL.to_string(), site);
        }
        if let Err(e) = names::validate_labels(&labels) {
            problems.push(format!("labels: {e}"));
        }
        let mut duration = |flag: &str, v: Option<String>, default: Duration| match v {
            None => default,
            Some(s) => match parse_duration(&s) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    problems.push(format!("--{flag} must be more than zero"));
                    default
                }
                Err(e) => {
                    problems.push(format!("--{flag}: {e}"));
                    default
                }
            },
        };
        let housekeeping_interval = duration(
            "housekeeping-interval",
            self.housekeeping_interval.or(file.housekeeping_interval),
            Duration::from_secs(10),
        );
        let max_backoff = duration(
            "max-backoff",
            self.max_backoff.or(file.max_backoff),
            Duration::from_secs(30),
        );
        let restart_backoff = duration(
            "restart-backoff",
            self.restart_backoff.or(file.restart_backoff),
            Duration::from_secs(10),
        );
        let max_restart_backoff = duration(
            "max-restart-backoff",
            self.max_restart_backoff.or(file.max_restart_backoff),
            Duration::from_secs(300),
        );
        if max_restart_backoff < restart_backoff {
            problems.push(format!(
                "--max-restart-backoff ({max_restart_backoff:?}) is shorter than --restart-backoff ({restart_backoff:?})"
            ));
        }
        let pressure = PressureFlags {
            eviction_hard: self.eviction_hard.or(file.eviction_hard),
            eviction_soft: self.eviction_soft.or(file.eviction_soft),
            eviction_soft_grace_period: self
                .eviction_soft_grace_period
                .or(file.eviction_soft_grace_period),
            eviction_minimum_reclaim: self
                .eviction_minimum_reclaim
                .or(file.eviction_minimum_reclaim),
            eviction_pressure_transition_period: self
                .eviction_pressure_transition_period
                .or(file.eviction_pressure_transition_period),
        }
        .validate()
        .unwrap_or_else(|e| {
            problems.push(e);
            PressureConfig::default()
        });
        let reserved = match self.system_reserved.or(file.system_reserved) {
            Some(s) => parse_reserved(&s).unwrap_or_else(|e| {
                problems.push(format!("--system-reserved: {e}"));
                Resources::default()
            }),
            None => Resources::default(),
        };
        let pod_network = self.pod_network.or(file.pod_network);
        if let Some(n) = &pod_network {
            if let Err(e) = validate_pod_network(n) {
                problems.push(format!("--pod-network: {e}"));
            }
        }
        let service_proxy = match self.service_proxy.or(file.service_proxy) {
            None => crate::proxy::kernel::Mode::default(),
            Some(m) => m.parse().unwrap_or_else(|e: String| {
                problems.push(e);
                crate::proxy::kernel::Mode::default()
            }),
        };
        let mut host = HostPaths::default();
        for (flag, value, slot, mount) in [
            (
                "host-proc",
                self.host_proc.or(file.host_proc),
                &mut host.proc,
                "-v /proc:/host/proc:ro",
            ),
            (
                "host-cgroup",
                self.host_cgroup.or(file.host_cgroup),
                &mut host.cgroup,
                "-v /sys/fs/cgroup:/host/sys/fs/cgroup:ro",
            ),
            (
                "host-rootfs",
                self.host_rootfs.or(file.host_rootfs),
                &mut host.rootfs,
                "-v /var/lib/docker:/host/var/lib/docker:ro",
            ),
        ] {
            let default = slot.to_string_lossy().into_owned();
            match host_dir(flag, value, &default, mount) {
                Ok(p) => *slot = p,
                Err(e) => problems.push(e),
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("\n"));
        }
        Ok(AgentConfig {
            controller,
            server_name,
            token: self.token.or(file.token),
            ca_hash,
            data_dir,
            name,
            labels,
            housekeeping_interval,
            pressure,
            reserved,
            max_backoff,
            restart_backoff,
            max_restart_backoff,
            service_routing: !self.no_service_routing && file.service_routing.unwrap_or(true),
            service_proxy,
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            pod_network,
            host,
        })
    }
}

impl AgentConfig {
    /// The Docker network pod sandboxes join.
    pub fn pod_network_name(&self) -> &str {
        self.pod_network.as_deref().unwrap_or("bridge")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_problems_at_once() {
        let flags = Flags {
            controller: Some("nohost".into()),
            ca_hash: Some("sha256:xyz".into()),
            name: Some("Bad_Name".into()),
            labels: Some("site=ok,=x".into()),
            housekeeping_interval: Some("ten".into()),
            eviction_hard: Some("memory.available>1".into()),
            service_proxy: Some("iptables".into()),
            ..Flags::default()
        };
        let err = flags.resolve().unwrap_err();
        for needle in [
            "--service-proxy \"iptables\" must be auto, kernel or userspace",
            "--controller",
            "--ca-hash",
            "--name",
            "--labels",
            "--housekeeping-interval",
            "--eviction-hard",
        ] {
            assert!(err.contains(needle), "{needle} missing from:\n{err}");
        }
    }

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "controller = \"10.0.0.5:7443\"\nca_hash = \"sha256:".to_string()
                + &"ab".repeat(32)
                + "\"\nlabels = { site = \"shop-1\" }\nhousekeeping_interval = \"30s\"\n",
        )
        .unwrap();
        let cfg = Flags {
            config: Some(path.clone()),
            housekeeping_interval: Some("5s".into()),
            ..Flags::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(cfg.controller, "10.0.0.5:7443");
        assert_eq!(cfg.server_name, "10.0.0.5");
        assert_eq!(cfg.housekeeping_interval, Duration::from_secs(5));
        assert_eq!(cfg.labels[names::SITE_LABEL], "shop-1");
        assert_eq!(cfg.service_proxy, crate::proxy::kernel::Mode::Auto);
        std::fs::write(&path, "controler = \"typo:1\"\n").unwrap();
        let err = Flags {
            config: Some(path),
            ..Flags::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.contains("controler"), "{err}");
    }

    #[test]
    fn pod_network_names() {
        for ok in ["outpost-t-1f-a", "site_a.pods", "bridge", "N3t"] {
            assert_eq!(validate_pod_network(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "must not be empty"),
            ("-net", "not a Docker network name"),
            ("net/a", "not a Docker network name"),
            ("container:abc", "not a Docker network name"),
            ("site a", "not a Docker network name"),
            ("host", "bridge network"),
            ("none", "bridge network"),
        ] {
            let err = validate_pod_network(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        let long = "n".repeat(MAX_POD_NETWORK + 1);
        assert!(validate_pod_network(&long)
            .unwrap_err()
            .contains("at most 128"));
        assert_eq!(validate_pod_network(&long[1..]), Ok(()));
    }

    #[test]
    fn pod_network_from_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "controller = \"10.0.0.5:7443\"\npod_network = \"site-a\"\n",
        )
        .unwrap();
        let from_file = Flags {
            config: Some(path.clone()),
            ..Flags::default()
        };
        assert_eq!(
            from_file.resolve().unwrap().pod_network.as_deref(),
            Some("site-a")
        );
        let flag = Flags {
            config: Some(path.clone()),
            pod_network: Some("site-b".into()),
            ..Flags::default()
        };
        assert_eq!(
            flag.resolve().unwrap().pod_network.as_deref(),
            Some("site-b")
        );
        let bad = Flags {
            config: Some(path.clone()),
            pod_network: Some("host".into()),
            ..Flags::default()
        };
        assert!(bad.resolve().unwrap_err().contains("--pod-network"));
        std::fs::write(&path, "controller = \"10.0.0.5:7443\"\n").unwrap();
        let unset = Flags {
            config: Some(path),
            ..Flags::default()
        };
        assert_eq!(unset.resolve().unwrap().pod_network, None, "default bridge");
    }

    #[test]
    fn host_paths_from_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        let proc = dir.path().join("proc");
        std::fs::create_dir(&proc).unwrap();
        std::fs::write(
            &path,
            format!(
                "controller = \"10.0.0.5:7443\"\nhost_proc = {:?}\nhost_rootfs = {:?}\n",
                proc.display().to_string(),
                dir.path().display().to_string()
            ),
        )
        .unwrap();
        let cfg = Flags {
            config: Some(path.clone()),
            ..Flags::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(cfg.host.proc, proc);
        assert_eq!(cfg.host.cgroup, PathBuf::from("/sys/fs/cgroup"), "default");
        assert_eq!(cfg.host.rootfs, dir.path());
        let err = Flags {
            config: Some(path.clone()),
            host_cgroup: Some(dir.path().join("missing")),
            host_proc: Some("host/proc".into()),
            ..Flags::default()
        }
        .resolve()
        .unwrap_err();
        assert!(
            err.contains("--host-cgroup")
                && err.contains("-v /sys/fs/cgroup:/host/sys/fs/cgroup:ro"),
            "{err}"
        );
        assert!(
            err.contains("--host-proc host/proc must be an absolute path"),
            "{err}"
        );
        std::fs::write(&path, "controller = \"10.0.0.5:7443\"\n").unwrap();
        let unset = Flags {
            config: Some(path),
            ..Flags::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(unset.host, HostPaths::default());
    }

    #[test]
    fn reserved() {
        let r = parse_reserved("cpu=200m,memory=256Mi,ephemeral-storage=1Gi,pid=1000").unwrap();
        assert_eq!(r.cpu_millis, 200);
        assert_eq!(r.memory_bytes, 256 << 20);
        assert_eq!(r.pids, 1000);
        assert!(parse_reserved("gpu=1,memory=x")
            .unwrap_err()
            .contains("gpu"));
    }
}
