//! Real measurements of this Linux box: the eviction signals fed to
//! [`crate::pressure::PressureTracker`], capacity and allocatable for the node
//! report, identity facts, and whether the Docker engine answers.
//!
//! Values follow what the kubelet would report on the same box (cAdvisor's
//! working set for memory, `statvfs` for filesystems, its `pidlimit` package
//! for pids), so thresholds copied from a kubelet configuration behave the
//! same. Every file read is bounded and every parser tolerates odd content:
//! a value that cannot be read is left out, never a panic.

use std::fs::File;
use std::io::{self, Read};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use outpost_proto::{NodeInfo, Resources, RuntimeInfo, Signal};
use rustix::fs::StatVfs;

use crate::pressure::{Observation, Observations, Threshold};

/// Upper bound for reading a `/proc` or `/sys` file; they are a few KiB.
const MAX_READ: u64 = 64 * 1024;

/// `/proc/net/fib_trie` lists every route; on a box with many routes it
/// outgrows [`MAX_READ`], and local addresses may sit anywhere in it.
const MAX_FIB_TRIE_READ: u64 = 1024 * 1024;

/// `/proc/stat` has a line per CPU and an `intr` line with a count per
/// interrupt before `btime`: on a large box it outgrows [`MAX_READ`].
const MAX_PROC_STAT_READ: u64 = 1024 * 1024;

/// How long the Docker engine gets to answer `version` and `info` together.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(3);

/// The socket bollard's `connect_with_unix_defaults` uses without `DOCKER_HOST`.
const DEFAULT_DOCKER_SOCKET: &str = "unix:///var/run/docker.sock";

/// Where the host is read from. On the box itself every path is the
/// default; an agent in a container gets the host's `/proc`, cgroup root
/// and Docker data root mounted and named here (`--host-proc`,
/// `--host-cgroup`, `--host-rootfs`), so it measures the host, not its own
/// container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    /// The host's procfs (default `/proc`): `meminfo`, `loadavg`,
    /// `sys/kernel/pid_max`, `sys/kernel/threads-max`.
    pub proc: PathBuf,
    /// The host's cgroup root (default `/sys/fs/cgroup`): the root cgroup's
    /// memory usage and limit (v1 under `memory/`, or v2).
    pub cgroup: PathBuf,
    /// Where the host's `/` is seen (default `/`): paths the engine reports
    /// (its data root, the imagefs) are looked up under it.
    pub rootfs: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            proc: PathBuf::from("/proc"),
            cgroup: PathBuf::from("/sys/fs/cgroup"),
            rootfs: PathBuf::from("/"),
        }
    }
}

impl HostPaths {
    /// `path` of the host (absolute, as the engine reports it) as this
    /// process sees it: under [`HostPaths::rootfs`].
    pub fn on_host(&self, path: &Path) -> PathBuf {
        let relative = path.strip_prefix("/").unwrap_or(path);
        if relative.as_os_str().is_empty() {
            self.rootfs.clone()
        } else {
            self.rootfs.join(relative)
        }
    }

    fn proc_file(&self, name: &str) -> PathBuf {
        self.proc.join(name)
    }
}

/// Measures this box; cheap to keep around, holds no open files.
#[derive(Debug, Clone)]
pub struct Prober {
    data_dir: PathBuf,
    host: HostPaths,
}

impl Prober {
    /// A prober whose nodefs is the filesystem holding `data_dir`, reading
    /// the host from `host`.
    pub fn new(data_dir: PathBuf, host: HostPaths) -> Self {
        Prober { data_dir, host }
    }

    /// Measure every eviction signal. `imagefs_path` is the Docker data root
    /// as the engine reports it (looked up under the host's rootfs);
    /// without it, or if it cannot be read, imagefs is the nodefs, as the
    /// kubelet treats a single filesystem.
    pub fn observe(&mut self, imagefs_path: Option<&Path>) -> Observations {
        let nodefs = statvfs_nearest(&self.data_dir).map(|st| fs_stats(&st));
        let imagefs = imagefs_path
            .and_then(|p| rustix::fs::statvfs(self.host.on_host(p)).ok())
            .map(|st| fs_stats(&st))
            .or(nodefs);
        Observations {
            memory_available: memory_observation(&self.host),
            nodefs_available: nodefs.map(|fs| fs.bytes),
            nodefs_inodes_free: nodefs.and_then(|fs| fs.inodes),
            imagefs_available: imagefs.map(|fs| fs.bytes),
            pid_available: pid_observation(&self.host),
        }
    }

    /// The box's capacity: logical CPUs, memory (MemTotal, or the root
    /// cgroup's limit when that is lower: an agent in a container without
    /// the host's cgroup root sees its container's limit), the task limit,
    /// the nodefs size and NVIDIA GPUs. Unreadable parts are zero.
    pub fn capacity(&mut self) -> Resources {
        let memory_bytes = read_bounded(&self.host.proc_file("meminfo"), MAX_READ)
            .ok()
            .and_then(|s| memory_capacity(&parse_meminfo(&s), &cgroup_memory(&self.host.cgroup)))
            .unwrap_or(0);
        let ephemeral_storage_bytes = statvfs_nearest(&self.data_dir)
            .map(|st| fs_stats(&st).bytes.capacity)
            .unwrap_or(0);
        Resources {
            cpu_millis: logical_cpus(&self.proc_stat()).saturating_mul(1000),
            memory_bytes,
            pids: task_limit(&self.host).unwrap_or(0),
            ephemeral_storage_bytes,
            gpus: count_nvidia_gpus(Path::new("/dev")),
        }
    }

    /// Kubelet's Node Allocatable: capacity minus reserved minus the hard
    /// eviction threshold for `memory.available` (on memory) and
    /// `nodefs.available` (on ephemeral storage), never below zero.
    pub fn allocatable(
        capacity: &Resources,
        reserved: &Resources,
        hard: &[Threshold],
    ) -> Resources {
        let eviction = |signal: Signal, of: u64| {
            hard.iter()
                .filter(|t| t.signal == signal)
                .map(|t| t.value.resolve(of))
                .max()
                .unwrap_or(0)
        };
        Resources {
            cpu_millis: capacity.cpu_millis.saturating_sub(reserved.cpu_millis),
            memory_bytes: capacity
                .memory_bytes
                .saturating_sub(reserved.memory_bytes)
                .saturating_sub(eviction(Signal::MemoryAvailable, capacity.memory_bytes)),
            pids: capacity.pids.saturating_sub(reserved.pids),
            ephemeral_storage_bytes: capacity
                .ephemeral_storage_bytes
                .saturating_sub(reserved.ephemeral_storage_bytes)
                .saturating_sub(eviction(
                    Signal::NodefsAvailable,
                    capacity.ephemeral_storage_bytes,
                )),
            gpus: capacity.gpus.saturating_sub(reserved.gpus),
        }
    }

    /// Identity facts of the box; `runtime` is left default for the caller
    /// to fill from [`docker_runtime`].
    pub fn node_info(&mut self) -> NodeInfo {
        let os_image = ["/etc/os-release", "/usr/lib/os-release"]
            .iter()
            .find_map(|p| {
                let p = self.host.on_host(Path::new(p));
                parse_os_release_pretty_name(&read_bounded(&p, MAX_READ).ok()?)
            })
            .unwrap_or_default();
        let uname = rustix::system::uname();
        let stat = self.proc_stat();
        NodeInfo {
            arch: go_arch(std::env::consts::ARCH).to_string(),
            os: std::env::consts::OS.to_string(),
            os_image,
            kernel_version: uname.release().to_string_lossy().into_owned(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: uname.nodename().to_string_lossy().into_owned(),
            runtime: RuntimeInfo::default(),
            addresses: local_addresses(),
            boot_time_ms: stat
                .boot_time_secs
                .map(|s| s.saturating_mul(1000))
                .unwrap_or(0),
        }
    }

    /// The host's `/proc/stat`, parsed; empty when unreadable.
    fn proc_stat(&self) -> ProcStat {
        read_bounded(&self.host.proc_file("stat"), MAX_PROC_STAT_READ)
            .map(|s| parse_proc_stat(&s))
            .unwrap_or_default()
    }
}

/// Ask the Docker engine (bollard's unix defaults, honouring a `unix://`
/// `DOCKER_HOST`) for its version and data root. Never fails: an absent
/// engine yields `available: false` and a message saying what to check.
pub async fn docker_runtime() -> (RuntimeInfo, Option<PathBuf>) {
    let host = std::env::var("DOCKER_HOST").ok();
    let socket = match host.as_deref() {
        Some(h) if h.starts_with("unix://") => h.to_string(),
        _ => DEFAULT_DOCKER_SOCKET.to_string(),
    };
    let (mut info, root) =
        query_docker(bollard::Docker::connect_with_unix_defaults(), &socket).await;
    if let (false, Some(h)) = (info.available, host.as_deref()) {
        if !h.starts_with("unix://") {
            info.message.push_str(&format!(
                " (DOCKER_HOST={h} is ignored: the agent only talks to a local unix socket)"
            ));
        }
    }
    (info, root)
}

async fn query_docker(
    docker: Result<bollard::Docker, bollard::errors::Error>,
    socket: &str,
) -> (RuntimeInfo, Option<PathBuf>) {
    let unavailable = |why: String| RuntimeInfo {
        name: "docker".to_string(),
        version: String::new(),
        available: false,
        message: why,
    };
    let hint = "is dockerd running, and is its socket mounted and readable by the agent?";
    let docker = match docker {
        Ok(d) => d,
        Err(e) => {
            let why = format!("Docker engine not reachable at {socket}: {e}; {hint}");
            return (unavailable(why), None);
        }
    };
    let both =
        async { Ok::<_, bollard::errors::Error>((docker.version().await?, docker.info().await?)) };
    match tokio::time::timeout(DOCKER_TIMEOUT, both).await {
        Ok(Ok((version, info))) => (
            RuntimeInfo {
                name: "docker".to_string(),
                version: version.version.unwrap_or_default(),
                available: true,
                message: String::new(),
            },
            info.docker_root_dir.map(PathBuf::from),
        ),
        Ok(Err(e)) => {
            let why = format!("Docker engine not reachable at {socket}: {e}; {hint}");
            (unavailable(why), None)
        }
        Err(_) => {
            let why = format!(
                "Docker engine at {socket} did not answer within {}s; is dockerd healthy?",
                DOCKER_TIMEOUT.as_secs()
            );
            (unavailable(why), None)
        }
    }
}

/// The fields of `/proc/meminfo` the probe uses, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`.
    pub mem_total: Option<u64>,
    /// `MemFree`.
    pub mem_free: Option<u64>,
    /// `Inactive(file)`.
    pub inactive_file: Option<u64>,
}

/// Parse `/proc/meminfo` (`Key:   123 kB` lines); unknown or odd lines are skipped.
pub fn parse_meminfo(text: &str) -> MemInfo {
    let mut info = MemInfo::default();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key.trim() {
            "MemTotal" => &mut info.mem_total,
            "MemFree" => &mut info.mem_free,
            "Inactive(file)" => &mut info.inactive_file,
            _ => continue,
        };
        let mut words = rest.split_whitespace();
        let Some(Ok(n)) = words.next().map(str::parse::<u64>) else {
            continue;
        };
        *slot = Some(match words.next() {
            Some("kB") => n.saturating_mul(1024),
            _ => n,
        });
    }
    info
}

/// `key`'s value from a cgroup `memory.stat` (`total_inactive_file` in v1,
/// `inactive_file` in v2).
pub fn parse_memory_stat(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == key).then_some(())?;
        words.next()?.parse().ok()
    })
}

/// A cgroup memory limit file (`memory.limit_in_bytes` in v1, `memory.max`
/// in v2): `None` for no limit (`max`, or v1's page-rounded `i64::MAX`) or
/// unreadable content.
pub fn parse_memory_limit(text: &str) -> Option<u64> {
    let n: u64 = text.trim().parse().ok()?;
    // v1 writes "no limit" as i64::MAX rounded down to a page.
    (n < (1 << 62)).then_some(n)
}

/// The root cgroup's memory as this process sees it: the host's root cgroup
/// on the box (or under `--host-cgroup`), a container's own cgroup inside
/// a container that has not mounted the host's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupMemory {
    /// Usage in bytes (v1 `memory.usage_in_bytes`, v2 `memory.current`;
    /// the v2 root cgroup has none, and meminfo stands in).
    pub usage: Option<u64>,
    /// Inactive file pages in bytes, taken off usage for the working set.
    pub inactive_file: u64,
    /// The memory limit in bytes, if there is one.
    pub limit: Option<u64>,
}

/// Memory capacity: MemTotal, or the cgroup limit when it is lower.
pub fn memory_capacity(meminfo: &MemInfo, cgroup: &CgroupMemory) -> Option<u64> {
    let total = meminfo.mem_total.filter(|&t| t > 0)?;
    Some(cgroup.limit.map_or(total, |l| l.min(total)))
}

/// `memory.available` as the kubelet computes it: capacity (see
/// [`memory_capacity`]) minus the working set, where the working set is
/// usage minus inactive file pages. Usage is the cgroup's when it has one;
/// otherwise MemTotal − MemFree from meminfo, with meminfo's inactive file
/// pages.
pub fn memory_available(meminfo: &MemInfo, cgroup: &CgroupMemory) -> Option<Observation> {
    let total = memory_capacity(meminfo, cgroup)?;
    let (usage, inactive_file) = match cgroup.usage {
        Some(usage) => (usage, cgroup.inactive_file),
        None => (
            meminfo.mem_total?.saturating_sub(meminfo.mem_free?),
            meminfo.inactive_file.unwrap_or(0),
        ),
    };
    let working_set = usage.saturating_sub(inactive_file);
    Some(Observation {
        available: total.saturating_sub(working_set),
        capacity: total,
    })
}

/// What the probe takes from `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcStat {
    /// `cpuN` lines: online logical CPUs.
    pub cpus: usize,
    /// `btime`: boot time, seconds since the epoch.
    pub boot_time_secs: Option<u64>,
}

/// Parse `/proc/stat`: count `cpuN` lines (not the `cpu` total) and take
/// `btime`; other or odd lines are skipped.
pub fn parse_proc_stat(text: &str) -> ProcStat {
    let mut stat = ProcStat::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some(w)
                if w.strip_prefix("cpu")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
            {
                stat.cpus = stat.cpus.saturating_add(1);
            }
            Some("btime") => stat.boot_time_secs = words.next().and_then(|n| n.parse().ok()),
            _ => {}
        }
    }
    stat
}

/// The task count from `/proc/loadavg` (`0.1 0.2 0.3 RUNNING/TOTAL LASTPID`):
/// kubelet's pidlimit prefers it to sysinfo(2), which truncates past 65535.
pub fn parse_loadavg_tasks(text: &str) -> Option<u64> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.len() < 5 {
        return None;
    }
    let (_, total) = fields[3].split_once('/')?;
    total.parse().ok()
}

/// `PRETTY_NAME` from os-release text, unquoted; `None` if absent or empty.
pub fn parse_os_release_pretty_name(text: &str) -> Option<String> {
    let raw = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("PRETTY_NAME="))?
        .trim();
    let value = match raw.chars().next() {
        Some(q @ ('"' | '\'')) => {
            let inner = &raw[1..];
            let inner = inner.strip_suffix(q).unwrap_or(inner);
            if q == '"' {
                unescape_shell(inner)
            } else {
                inner.to_string()
            }
        }
        _ => raw.to_string(),
    };
    let value = value.trim().to_string();
    (!value.is_empty()).then_some(value)
}

/// Undo the backslash escapes os-release(5) allows inside double quotes.
fn unescape_shell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Local IPv4 addresses from `/proc/net/fib_trie`: the leaf (`|-- A.B.C.D`)
/// followed by a `/32 host LOCAL` line; loopback is skipped. Sorted, unique.
pub fn parse_fib_trie_local(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut leaf: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|--") {
            leaf = addr.trim().parse().ok();
        } else if line.starts_with("+--") || line.ends_with(':') {
            leaf = None;
        } else if let Some(addr) = leaf {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words == ["/32", "host", "LOCAL"] && !addr.is_loopback() && !out.contains(&addr) {
                out.push(addr);
            }
        }
    }
    out.sort();
    out
}

/// Global IPv6 addresses from `/proc/net/if_inet6`
/// (`ADDR IFINDEX PREFIXLEN SCOPE FLAGS IFNAME`): loopback (scope 0x10) and
/// link-local (scope 0x20) are skipped, since peers cannot reach them.
pub fn parse_if_inet6(text: &str) -> Vec<Ipv6Addr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let [hex, _, _, scope, ..] = words[..] else {
            continue;
        };
        if hex.len() != 32 {
            continue;
        }
        let (Ok(bits), Ok(scope)) = (u128::from_str_radix(hex, 16), u8::from_str_radix(scope, 16))
        else {
            continue;
        };
        let addr = Ipv6Addr::from(bits);
        if scope & 0x30 != 0 || addr.is_loopback() || addr.is_unspecified() || out.contains(&addr) {
            continue;
        }
        out.push(addr);
    }
    out.sort();
    out
}

/// `/dev/nvidia0`, `/dev/nvidia1`, ...: one per GPU (not `nvidiactl`, `nvidia-uvm`).
pub fn is_nvidia_gpu_device(name: &str) -> bool {
    name.strip_prefix("nvidia")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Go/Kubernetes spelling of a Rust `target_arch`.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "loongarch64" => "loong64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        "mips" if cfg!(target_endian = "little") => "mipsle",
        other => other,
    }
}

/// Bytes and inodes of one filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FsStats {
    bytes: Observation,
    /// `None` when the filesystem reports no inode count (btrfs, some FUSE).
    inodes: Option<Observation>,
}

fn fs_stats(st: &StatVfs) -> FsStats {
    fs_stats_from(
        st.f_frsize,
        st.f_bsize,
        st.f_bavail,
        st.f_blocks,
        st.f_ffree,
        st.f_files,
    )
}

/// cAdvisor's reading of statvfs: available = `f_bavail` (what unprivileged
/// writers get), inodes free = `f_ffree`.
fn fs_stats_from(
    frsize: u64,
    bsize: u64,
    bavail: u64,
    blocks: u64,
    ffree: u64,
    files: u64,
) -> FsStats {
    let unit = if frsize > 0 { frsize } else { bsize };
    FsStats {
        bytes: Observation {
            available: bavail.saturating_mul(unit),
            capacity: blocks.saturating_mul(unit),
        },
        inodes: (files > 0).then_some(Observation {
            available: ffree.min(files),
            capacity: files,
        }),
    }
}

/// statvfs of `path`, or of its nearest existing ancestor while the data
/// directory has not been created yet.
fn statvfs_nearest(path: &Path) -> Option<StatVfs> {
    for p in path.ancestors() {
        let p = if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        };
        match rustix::fs::statvfs(p) {
            Ok(st) => return Some(st),
            Err(rustix::io::Errno::NOENT) => continue,
            Err(_) => return None,
        }
    }
    None
}

fn read_bounded(path: &Path, limit: u64) -> io::Result<String> {
    let mut buf = Vec::new();
    File::open(path)?.take(limit).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn read_u64(path: &Path) -> Option<u64> {
    read_bounded(path, 4096).ok()?.trim().parse().ok()
}

fn memory_observation(host: &HostPaths) -> Option<Observation> {
    let meminfo = parse_meminfo(&read_bounded(&host.proc_file("meminfo"), MAX_READ).ok()?);
    memory_available(&meminfo, &cgroup_memory(&host.cgroup))
}

/// Reads the memory of the cgroup mounted at `root`: v1 when a `memory`
/// hierarchy is there, else v2 (the unified root).
fn cgroup_memory(root: &Path) -> CgroupMemory {
    let v1 = root.join("memory");
    let (dir, usage, stat_key, limit) = if v1.join("memory.usage_in_bytes").exists() {
        (
            v1,
            "memory.usage_in_bytes",
            "total_inactive_file",
            "memory.limit_in_bytes",
        )
    } else {
        (
            root.to_path_buf(),
            "memory.current",
            "inactive_file",
            "memory.max",
        )
    };
    let usage = read_u64(&dir.join(usage));
    CgroupMemory {
        usage,
        inactive_file: usage
            .and_then(|_| read_bounded(&dir.join("memory.stat"), MAX_READ).ok())
            .and_then(|s| parse_memory_stat(&s, stat_key))
            .unwrap_or(0),
        limit: read_bounded(&dir.join(limit), 4096)
            .ok()
            .and_then(|s| parse_memory_limit(&s)),
    }
}

/// The system-wide task limit: the smaller of `kernel.pid_max` and
/// `kernel.threads-max`, as kubelet's pidlimit takes it.
fn task_limit(host: &HostPaths) -> Option<u64> {
    let pid_max = read_u64(&host.proc_file("sys/kernel/pid_max"));
    let threads_max = read_u64(&host.proc_file("sys/kernel/threads-max"));
    match (pid_max, threads_max) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn pid_observation(host: &HostPaths) -> Option<Observation> {
    let limit = task_limit(host)?;
    let tasks = parse_loadavg_tasks(&read_bounded(&host.proc_file("loadavg"), MAX_READ).ok()?)?;
    Some(Observation {
        available: limit.saturating_sub(tasks),
        capacity: limit,
    })
}

/// Online logical CPUs: the `cpuN` lines of `/proc/stat`, or this
/// process's available parallelism when there are none.
fn logical_cpus(stat: &ProcStat) -> u64 {
    let n = match stat.cpus {
        n if n > 0 => n,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn count_nvidia_gpus(dev: &Path) -> u32 {
    let Ok(entries) = std::fs::read_dir(dev) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(is_nvidia_gpu_device))
        .fold(0u32, |n, _| n.saturating_add(1))
}

/// This host's own IPv4 addresses (loopback left out).
pub fn local_ipv4() -> Vec<Ipv4Addr> {
    read_bounded(Path::new("/proc/net/fib_trie"), MAX_FIB_TRIE_READ)
        .map(|s| parse_fib_trie_local(&s))
        .unwrap_or_default()
}

fn local_addresses() -> Vec<String> {
    let v4 = local_ipv4();
    let v6 = read_bounded(Path::new("/proc/net/if_inet6"), MAX_READ)
        .map(|s| parse_if_inet6(&s))
        .unwrap_or_default();
    v4.iter()
        .map(ToString::to_string)
        .chain(v6.iter().map(ToString::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pressure::{PressureConfig, ThresholdValue};

    const MI: u64 = 1 << 20;
    const GI: u64 = 1 << 30;

    const MEMINFO: &str = "\
MemTotal:        8000000 kB
MemFree:         1000000 kB
MemAvailable:    5000000 kB
Buffers:          100000 kB
Cached:          4000000 kB
Active(file):    1500000 kB
Inactive(file):  2000000 kB
HugePages_Total:       0
";

    #[test]
    fn meminfo_parses_and_tolerates_junk() {
        let m = parse_meminfo(MEMINFO);
        assert_eq!(m.mem_total, Some(8_000_000 * 1024));
        assert_eq!(m.mem_free, Some(1_000_000 * 1024));
        assert_eq!(m.inactive_file, Some(2_000_000 * 1024));

        let odd = "MemTotal: lots kB\nMemFree\n: 5 kB\nInactive(file): 99999999999999999999 kB\n\
                   MemFree:   12 kB   extra\n\u{0}\u{ff}";
        let m = parse_meminfo(odd);
        assert_eq!(
            m,
            MemInfo {
                mem_total: None,
                mem_free: Some(12 * 1024),
                inactive_file: None
            }
        );
        assert_eq!(parse_meminfo(""), MemInfo::default());
    }

    #[test]
    fn working_set_math() {
        let m = parse_meminfo(MEMINFO);
        let kb = |n: u64| n * 1024;
        let none = CgroupMemory::default();
        let v1 = |usage, inactive_file| CgroupMemory {
            usage: Some(usage),
            inactive_file,
            limit: None,
        };
        // meminfo: usage = 8000000 - 1000000, working set = usage - 2000000.
        assert_eq!(
            memory_available(&m, &none),
            Some(Observation {
                available: kb(3_000_000),
                capacity: kb(8_000_000)
            })
        );
        // cgroup v1 root: usage 6 GiB, inactive 1 GiB, total ~7.6 GiB.
        assert_eq!(
            memory_available(&m, &v1(6 * GI, GI)),
            Some(Observation {
                available: kb(8_000_000) - 5 * GI,
                capacity: kb(8_000_000)
            })
        );
        // Inactive above usage, usage above total: clamp, never wrap.
        assert_eq!(
            memory_available(&m, &v1(GI, 2 * GI)).unwrap().available,
            kb(8_000_000)
        );
        assert_eq!(memory_available(&m, &v1(100 * GI, 0)).unwrap().available, 0);
        assert_eq!(memory_available(&MemInfo::default(), &none), None);
        let no_free = MemInfo {
            mem_free: None,
            ..m
        };
        assert_eq!(memory_available(&no_free, &none), None);
        // With the cgroup's own usage, meminfo's free pages are not needed.
        assert!(memory_available(&no_free, &v1(GI, 0)).is_some());
    }

    #[test]
    fn a_cgroup_limit_below_memtotal_is_the_capacity() {
        let m = parse_meminfo(MEMINFO);
        let kb = |n: u64| n * 1024;
        // A container's own cgroup: 64 MiB limit, 10 MiB used, 2 inactive.
        let container = CgroupMemory {
            usage: Some(10 * MI),
            inactive_file: 2 * MI,
            limit: Some(64 * MI),
        };
        assert_eq!(memory_capacity(&m, &container), Some(64 * MI));
        assert_eq!(
            memory_available(&m, &container),
            Some(Observation {
                available: 56 * MI,
                capacity: 64 * MI
            })
        );
        // A limit above MemTotal (or none) leaves MemTotal.
        let loose = CgroupMemory {
            limit: Some(100 * GI),
            ..container
        };
        assert_eq!(memory_capacity(&m, &loose), Some(kb(8_000_000)));
        let unlimited = CgroupMemory {
            limit: None,
            ..container
        };
        assert_eq!(memory_capacity(&m, &unlimited), Some(kb(8_000_000)));
        assert_eq!(memory_capacity(&MemInfo::default(), &container), None);
    }

    #[test]
    fn memory_stat_and_limits() {
        let stat = "cache 100\ninactive_file 5\ntotal_cache 200\ntotal_inactive_file 4096\n";
        assert_eq!(parse_memory_stat(stat, "total_inactive_file"), Some(4096));
        assert_eq!(parse_memory_stat(stat, "inactive_file"), Some(5));
        assert_eq!(
            parse_memory_stat("inactive_file 5\n", "total_inactive_file"),
            None
        );
        assert_eq!(
            parse_memory_stat("total_inactive_file x\n", "total_inactive_file"),
            None
        );
        assert_eq!(parse_memory_limit("67108864\n"), Some(64 * MI));
        assert_eq!(parse_memory_limit("max\n"), None);
        assert_eq!(parse_memory_limit("9223372036854771712\n"), None);
        assert_eq!(parse_memory_limit("-1"), None);
        assert_eq!(parse_memory_limit(""), None);
    }

    /// A fake host: procfs and a cgroup root in a temp dir.
    fn fake_host(dir: &Path, cgroup_v1: bool) -> HostPaths {
        let proc = dir.join("proc");
        std::fs::create_dir_all(proc.join("sys/kernel")).unwrap();
        std::fs::write(proc.join("meminfo"), MEMINFO).unwrap();
        std::fs::write(proc.join("loadavg"), "0.1 0.2 0.3 2/345 999\n").unwrap();
        std::fs::write(proc.join("sys/kernel/pid_max"), "4194304\n").unwrap();
        std::fs::write(proc.join("sys/kernel/threads-max"), "1000\n").unwrap();
        let cgroup = dir.join("cgroup");
        if cgroup_v1 {
            let mem = cgroup.join("memory");
            std::fs::create_dir_all(&mem).unwrap();
            std::fs::write(mem.join("memory.usage_in_bytes"), format!("{}\n", 10 * MI)).unwrap();
            std::fs::write(
                mem.join("memory.stat"),
                format!("total_inactive_file {}\n", 2 * MI),
            )
            .unwrap();
            std::fs::write(mem.join("memory.limit_in_bytes"), format!("{}\n", 64 * MI)).unwrap();
        } else {
            // The v2 root cgroup: no memory.current, no memory.max.
            std::fs::create_dir_all(&cgroup).unwrap();
            std::fs::write(cgroup.join("memory.stat"), "inactive_file 1\n").unwrap();
        }
        let rootfs = dir.join("root");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::write(
            rootfs.join("etc/os-release"),
            "PRETTY_NAME=\"Fake Host 1\"\n",
        )
        .unwrap();
        HostPaths {
            proc,
            cgroup,
            rootfs,
        }
    }

    #[test]
    fn the_host_is_read_where_it_is_mounted() {
        let dir = tempfile::tempdir().unwrap();
        let kb = |n: u64| n * 1024;
        // v2 root: meminfo decides.
        let host = fake_host(&dir.path().join("v2"), false);
        let mut prober = Prober::new(dir.path().to_path_buf(), host.clone());
        let obs = prober.observe(None);
        assert_eq!(
            obs.memory_available,
            Some(Observation {
                available: kb(3_000_000),
                capacity: kb(8_000_000)
            })
        );
        assert_eq!(
            obs.pid_available,
            Some(Observation {
                available: 1000 - 345,
                capacity: 1000
            })
        );
        let cap = prober.capacity();
        assert_eq!(cap.memory_bytes, kb(8_000_000));
        assert_eq!(cap.pids, 1000);
        assert_eq!(prober.node_info().os_image, "Fake Host 1");
        // The engine's data root is looked up under the rootfs.
        std::fs::create_dir_all(host.rootfs.join("var/lib/docker")).unwrap();
        assert_eq!(
            host.on_host(Path::new("/var/lib/docker")),
            host.rootfs.join("var/lib/docker")
        );
        assert_eq!(host.on_host(Path::new("/")), host.rootfs);
        assert!(prober
            .observe(Some(Path::new("/var/lib/docker")))
            .imagefs_available
            .is_some());

        // v1 with a limit (a container's own cgroup): the limit is the capacity.
        let host = fake_host(&dir.path().join("v1"), true);
        let mut prober = Prober::new(dir.path().to_path_buf(), host);
        assert_eq!(
            prober.observe(None).memory_available,
            Some(Observation {
                available: 56 * MI,
                capacity: 64 * MI
            })
        );
        assert_eq!(prober.capacity().memory_bytes, 64 * MI);
    }

    #[test]
    fn proc_stat_cpus_and_boot_time() {
        let text = "cpu  10 0 5 100 0 0 0 0 0 0\ncpu0 5 0 2 50 0 0 0 0 0 0\n\
                    cpu1 5 0 3 50 0 0 0 0 0 0\nintr 1234 1 2 3\nctxt 99\nbtime 1764700000\n\
                    processes 5\ncpufreq 1\n";
        assert_eq!(
            parse_proc_stat(text),
            ProcStat {
                cpus: 2,
                boot_time_secs: Some(1_764_700_000)
            }
        );
        assert_eq!(parse_proc_stat("btime x\ncpuX 1\n"), ProcStat::default());
        assert!(logical_cpus(&ProcStat::default()) > 0);
        assert_eq!(logical_cpus(&parse_proc_stat(text)), 2);
    }

    #[test]
    fn loadavg_tasks() {
        let cases: &[(&str, Option<u64>)] = &[
            ("2.10 1.29 0.58 3/116 6855\n", Some(116)),
            ("1.36 3.49 4.53 2/3518 3715089", Some(3518)),
            ("0.00 0.00 0.00 1/70000 1", Some(70_000)),
            ("0.00 0.00 0.00 3/116", None),
            ("0.00 0.00 0.00 116 6855", None),
            ("0.00 0.00 0.00 3/x 6855", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_loadavg_tasks(text), *want, "{text:?}");
        }
    }

    #[test]
    fn os_release_pretty_name() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
                Some("Debian GNU/Linux 12 (bookworm)"),
            ),
            (
                "PRETTY_NAME='Alpine Linux v3.20'\n",
                Some("Alpine Linux v3.20"),
            ),
            ("PRETTY_NAME=Buildroot\n", Some("Buildroot")),
            ("PRETTY_NAME=\"Say \\\"hi\\\"\"\n", Some("Say \"hi\"")),
            ("PRETTY_NAME=\"unterminated\n", Some("unterminated")),
            ("PRETTY_NAME=\"\"\n", None),
            ("NAME=Foo\n", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse_os_release_pretty_name(text).as_deref(),
                *want,
                "{text:?}"
            );
        }
    }

    const FIB_TRIE: &str = "\
Main:
  +-- 0.0.0.0/0 3 0 4
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 172.17.0.0/16 2 0 2
        +-- 172.17.0.0/31 1 0 0
           |-- 172.17.0.0
              /16 link UNICAST
           |-- 172.17.0.1
              /32 host LOCAL
        |-- 172.17.255.255
           /32 link BROADCAST
     +-- 192.0.2.0/24 2 0 2
        |-- 192.0.2.2
           /24 link UNICAST
           /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 4
     |-- 192.0.2.2
        /32 host LOCAL
     |-- 10.0.0.
";

    #[test]
    fn fib_trie_local_addresses() {
        let got = parse_fib_trie_local(FIB_TRIE);
        let want: Vec<Ipv4Addr> = vec!["172.17.0.1".parse().unwrap(), "192.0.2.2".parse().unwrap()];
        assert_eq!(got, want);
        assert!(parse_fib_trie_local("garbage\n/32 host LOCAL\n|--\n").is_empty());
    }

    #[test]
    fn if_inet6_addresses() {
        let text = "\
fd000000000000000000000000000002 04 40 00 82     eth0
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
20010db8000000000000000000000001 05 40 00 80     eth1
zz000000000000000000000000000000 05 40 00 80     eth1
2001 05 40 00 80 eth1
short line
";
        let got: Vec<String> = parse_if_inet6(text)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["2001:db8::1", "fd00::2"]);
    }

    #[test]
    fn nvidia_device_names_and_arch() {
        for (name, gpu) in [
            ("nvidia0", true),
            ("nvidia12", true),
            ("nvidia", false),
            ("nvidiactl", false),
            ("nvidia-uvm", false),
            ("nvidia-caps", false),
            ("nvme0", false),
        ] {
            assert_eq!(is_nvidia_gpu_device(name), gpu, "{name}");
        }
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        assert_eq!(go_arch("arm"), "arm");
        assert_eq!(go_arch("riscv64"), "riscv64");
    }

    #[test]
    fn statvfs_reading() {
        let fs = fs_stats_from(4096, 4096, 10, 100, 7, 1000);
        assert_eq!(
            fs.bytes,
            Observation {
                available: 40960,
                capacity: 409_600
            }
        );
        assert_eq!(
            fs.inodes,
            Some(Observation {
                available: 7,
                capacity: 1000
            })
        );
        // btrfs reports no inode counts: no observation rather than "0 free".
        assert_eq!(fs_stats_from(4096, 4096, 10, 100, 0, 0).inodes, None);
        // frsize 0: fall back to bsize.
        assert_eq!(fs_stats_from(0, 512, 2, 4, 1, 1).bytes.capacity, 2048);
        assert_eq!(
            fs_stats_from(u64::MAX, 1, u64::MAX, u64::MAX, 1, 1)
                .bytes
                .capacity,
            u64::MAX
        );
    }

    #[test]
    fn allocatable_subtracts_reserved_and_hard_eviction() {
        let capacity = Resources {
            cpu_millis: 4000,
            memory_bytes: 8 * GI,
            pids: 32_768,
            ephemeral_storage_bytes: 100 * GI,
            gpus: 1,
        };
        let reserved = Resources {
            cpu_millis: 500,
            memory_bytes: GI,
            pids: 1000,
            ephemeral_storage_bytes: 0,
            gpus: 0,
        };
        let got = Prober::allocatable(&capacity, &reserved, &PressureConfig::default().hard);
        assert_eq!(
            got,
            Resources {
                cpu_millis: 3500,
                memory_bytes: 7 * GI - 100 * MI,
                pids: 31_768,
                ephemeral_storage_bytes: 90 * GI,
                gpus: 1,
            }
        );
        // Reservations larger than capacity saturate at zero.
        let huge = Resources {
            cpu_millis: u64::MAX,
            memory_bytes: u64::MAX,
            pids: u64::MAX,
            ephemeral_storage_bytes: u64::MAX,
            gpus: u32::MAX,
        };
        assert_eq!(
            Prober::allocatable(&capacity, &huge, &[]),
            Resources::default()
        );
        // No hard thresholds: only the reservation comes off.
        let hard = [Threshold {
            signal: Signal::PidAvailable,
            value: ThresholdValue::Percentage(50.0),
        }];
        assert_eq!(
            Prober::allocatable(&capacity, &reserved, &hard).memory_bytes,
            7 * GI
        );
    }

    #[test]
    fn probes_this_box() {
        let dir = std::env::temp_dir().join("outpost-probe-test-not-created");
        let mut prober = Prober::new(dir, HostPaths::default());
        let obs = prober.observe(None);
        eprintln!("observed: {obs:#?}");

        let mem = obs.memory_available.expect("memory.available on Linux");
        assert!(mem.capacity > 0 && mem.available <= mem.capacity, "{mem:?}");
        let nodefs = obs
            .nodefs_available
            .expect("nodefs from the nearest existing ancestor");
        assert!(
            nodefs.capacity > 0 && nodefs.available <= nodefs.capacity,
            "{nodefs:?}"
        );
        assert_eq!(
            obs.imagefs_available, obs.nodefs_available,
            "no imagefs: nodefs stands in"
        );
        let pid = obs.pid_available.expect("pid.available on Linux");
        assert!(pid.available > 0 && pid.available < pid.capacity, "{pid:?}");

        // An unreadable imagefs path also falls back to nodefs.
        let obs = prober.observe(Some(Path::new("/nonexistent/docker/root")));
        assert!(obs.imagefs_available.is_some());

        let cap = prober.capacity();
        assert!(
            cap.cpu_millis >= 1000 && cap.cpu_millis.is_multiple_of(1000),
            "{cap:?}"
        );
        assert_eq!(cap.memory_bytes, mem.capacity);
        assert_eq!(cap.pids, pid.capacity);
        assert!(cap.ephemeral_storage_bytes > 0);

        let info = prober.node_info();
        eprintln!("capacity: {cap:?}\nnode info: {info:#?}");
        assert_eq!(info.os, "linux");
        assert_eq!(info.arch, go_arch(std::env::consts::ARCH));
        assert_eq!(info.agent_version, env!("CARGO_PKG_VERSION"));
        assert!(!info.kernel_version.is_empty());
        assert!(
            info.boot_time_ms > 1_000_000_000_000,
            "{}",
            info.boot_time_ms
        );
        assert!(
            info.addresses
                .iter()
                .all(|a| a != "127.0.0.1" && a != "::1"),
            "{:?}",
            info.addresses
        );
    }

    #[tokio::test]
    async fn docker_absent_is_reported_not_fatal() {
        let socket = "unix:///nonexistent/outpost-test/docker.sock";
        let docker = bollard::Docker::connect_with_unix(socket, 3, bollard::API_DEFAULT_VERSION);
        let (info, root) = query_docker(docker, socket).await;
        assert!(!info.available);
        assert_eq!(root, None);
        assert!(info.version.is_empty());
        assert!(
            info.message
                .starts_with(&format!("Docker engine not reachable at {socket}: ")),
            "{}",
            info.message
        );
        assert!(
            info.message.contains("is dockerd running"),
            "{}",
            info.message
        );
    }

    #[tokio::test]
    async fn docker_runtime_is_consistent() {
        // Whether or not an engine runs here, the answer must hang together.
        let (info, root) = docker_runtime().await;
        eprintln!("docker: {info:?}, data root {root:?}");
        if info.available {
            assert!(!info.version.is_empty(), "{info:?}");
            assert!(root.is_some(), "{info:?}");
            assert!(info.message.is_empty());
        } else {
            assert!(info.message.contains("Docker engine"), "{info:?}");
            assert!(root.is_none());
        }
        assert_eq!(info.name, "docker");
    }
}
