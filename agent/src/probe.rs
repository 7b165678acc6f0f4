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
use sysinfo::{CpuRefreshKind, System};

use crate::pressure::{Observation, Observations, Threshold};

/// Upper bound for reading a `/proc` or `/sys` file; they are a few KiB.
const MAX_READ: u64 = 64 * 1024;

/// `/proc/net/fib_trie` lists every route; on a box with many routes it
/// outgrows [`MAX_READ`], and local addresses may sit anywhere in it.
const MAX_FIB_TRIE_READ: u64 = 1024 * 1024;

/// How long the Docker engine gets to answer `version` and `info` together.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(3);

/// The socket bollard's `connect_with_unix_defaults` uses without `DOCKER_HOST`.
const DEFAULT_DOCKER_SOCKET: &str = "unix:///var/run/docker.sock";

const CGROUP_V1_MEMORY: &str = "/sys/fs/cgroup/memory";

/// Measures this box; cheap to keep around, holds no open files.
#[derive(Debug, Clone)]
pub struct Prober {
    data_dir: PathBuf,
}

impl Prober {
    /// A prober whose nodefs is the filesystem holding `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        Prober { data_dir }
    }

    /// Measure every eviction signal. `imagefs_path` is the Docker data root;
    /// without it, or if it cannot be read, imagefs is the nodefs, as the
    /// kubelet treats a single filesystem.
    pub fn observe(&mut self, imagefs_path: Option<&Path>) -> Observations {
        let nodefs = statvfs_nearest(&self.data_dir).map(|st| fs_stats(&st));
        let imagefs = imagefs_path
            .and_then(|p| rustix::fs::statvfs(p).ok())
            .map(|st| fs_stats(&st))
            .or(nodefs);
        Observations {
            memory_available: memory_observation(),
            nodefs_available: nodefs.map(|fs| fs.bytes),
            nodefs_inodes_free: nodefs.and_then(|fs| fs.inodes),
            imagefs_available: imagefs.map(|fs| fs.bytes),
            pid_available: pid_observation(),
        }
    }

    /// The box's capacity: logical CPUs, MemTotal, the task limit, the nodefs
    /// size and NVIDIA GPUs. Unreadable parts are zero.
    pub fn capacity(&mut self) -> Resources {
        let memory_bytes = read_bounded(Path::new("/proc/meminfo"), MAX_READ)
            .ok()
            .and_then(|s| parse_meminfo(&s).mem_total)
            .unwrap_or(0);
        let ephemeral_storage_bytes = statvfs_nearest(&self.data_dir)
            .map(|st| fs_stats(&st).bytes.capacity)
            .unwrap_or(0);
        Resources {
            cpu_millis: logical_cpus().saturating_mul(1000),
            memory_bytes,
            pids: task_limit().unwrap_or(0),
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
            .find_map(|p| parse_os_release_pretty_name(&read_bounded(Path::new(p), MAX_READ).ok()?))
            .or_else(|| System::long_os_version().ok())
            .unwrap_or_default();
        NodeInfo {
            arch: go_arch(std::env::consts::ARCH).to_string(),
            os: std::env::consts::OS.to_string(),
            os_image,
            kernel_version: System::kernel_version().unwrap_or_default(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: System::host_name().unwrap_or_default(),
            runtime: RuntimeInfo::default(),
            addresses: local_addresses(),
            boot_time_ms: System::boot_time()
                .map(|s| s.saturating_mul(1000))
                .unwrap_or(0),
        }
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

/// `total_inactive_file` from a cgroup v1 `memory.stat`.
pub fn parse_memory_stat_inactive_file(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == "total_inactive_file").then_some(())?;
        words.next()?.parse().ok()
    })
}

/// `memory.available` as the kubelet computes it: MemTotal minus the working
/// set, where the working set is usage minus inactive file pages. `cgroup_v1`
/// is the root cgroup's `(usage_in_bytes, total_inactive_file)` when cgroup
/// v1 is mounted; otherwise usage is MemTotal − MemFree from meminfo.
pub fn memory_available(meminfo: &MemInfo, cgroup_v1: Option<(u64, u64)>) -> Option<Observation> {
    let total = meminfo.mem_total.filter(|&t| t > 0)?;
    let (usage, inactive_file) = match cgroup_v1 {
        Some(v1) => v1,
        None => (
            total.saturating_sub(meminfo.mem_free?),
            meminfo.inactive_file.unwrap_or(0),
        ),
    };
    let working_set = usage.saturating_sub(inactive_file);
    Some(Observation {
        available: total.saturating_sub(working_set),
        capacity: total,
    })
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

fn memory_observation() -> Option<Observation> {
    let meminfo = parse_meminfo(&read_bounded(Path::new("/proc/meminfo"), MAX_READ).ok()?);
    let v1 = Path::new(CGROUP_V1_MEMORY);
    let cgroup_v1 = read_u64(&v1.join("memory.usage_in_bytes")).map(|usage| {
        let inactive = read_bounded(&v1.join("memory.stat"), MAX_READ)
            .ok()
            .and_then(|s| parse_memory_stat_inactive_file(&s))
            .unwrap_or(0);
        (usage, inactive)
    });
    memory_available(&meminfo, cgroup_v1)
}

/// The system-wide task limit: the smaller of `kernel.pid_max` and
/// `kernel.threads-max`, as kubelet's pidlimit takes it.
fn task_limit() -> Option<u64> {
    let pid_max = read_u64(Path::new("/proc/sys/kernel/pid_max"));
    let threads_max = read_u64(Path::new("/proc/sys/kernel/threads-max"));
    match (pid_max, threads_max) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn pid_observation() -> Option<Observation> {
    let limit = task_limit()?;
    let tasks = parse_loadavg_tasks(&read_bounded(Path::new("/proc/loadavg"), MAX_READ).ok()?)?;
    Some(Observation {
        available: limit.saturating_sub(tasks),
        capacity: limit,
    })
}

fn logical_cpus() -> u64 {
    // Only the CPU list: no usage sampling, no process table.
    let from_sysinfo = System::new().ok().map(|mut sys| {
        sys.refresh_cpu_list(CpuRefreshKind::nothing());
        sys.cpus().len()
    });
    let n = match from_sysinfo {
        Some(n) if n > 0 => n,
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
        // meminfo: usage = 8000000 - 1000000, working set = usage - 2000000.
        assert_eq!(
            memory_available(&m, None),
            Some(Observation {
                available: kb(3_000_000),
                capacity: kb(8_000_000)
            })
        );
        // cgroup v1 root: usage 6 GiB, inactive 1 GiB, total ~7.6 GiB.
        assert_eq!(
            memory_available(&m, Some((6 * GI, GI))),
            Some(Observation {
                available: kb(8_000_000) - 5 * GI,
                capacity: kb(8_000_000)
            })
        );
        // Inactive above usage, usage above total: clamp, never wrap.
        assert_eq!(
            memory_available(&m, Some((GI, 2 * GI))).unwrap().available,
            kb(8_000_000)
        );
        assert_eq!(
            memory_available(&m, Some((100 * GI, 0))).unwrap().available,
            0
        );
        assert_eq!(memory_available(&MemInfo::default(), None), None);
        let no_free = MemInfo {
            mem_free: None,
            ..m
        };
        assert_eq!(memory_available(&no_free, None), None);
    }

    #[test]
    fn memory_stat_inactive_file() {
        let stat = "cache 100\ninactive_file 5\ntotal_cache 200\ntotal_inactive_file 4096\n";
        assert_eq!(parse_memory_stat_inactive_file(stat), Some(4096));
        assert_eq!(parse_memory_stat_inactive_file("inactive_file 5\n"), None);
        assert_eq!(
            parse_memory_stat_inactive_file("total_inactive_file x\n"),
            None
        );
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
        let mut prober = Prober::new(dir);
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
