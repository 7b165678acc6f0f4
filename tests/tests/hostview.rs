//! An agent in a container (the agent image with the engine's socket
//! mounted) measures the host when the host's `/proc`, cgroup root and
//! Docker data root are mounted and named (`--host-proc`, `--host-cgroup`,
//! `--host-rootfs`, as images/README.md runs it), and its own container
//! without them: a container with a 128 MiB memory limit reports 128 MiB of
//! memory, the one with the host's mounts the host's MemTotal.

use outpost_proto::units::parse_quantity;
use outpost_tests::sites::Sites;
use outpost_tests::{docker_ok, Cluster, Timing};
use serde_json::Value;
use std::time::Duration;

/// The agent containers' memory limit.
const LIMIT: u64 = 128 << 20;
/// `memory.available<1Mi` of the harness's eviction thresholds: what
/// allocatable holds back from capacity.
const HARD_MEMORY: u64 = 1 << 20;

/// MemTotal of the test host, in bytes.
fn host_mem_total() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("reading /proc/meminfo");
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("MemTotal in /proc/meminfo");
    kib * 1024
}

/// The size in bytes of the filesystem holding `path` on the test host
/// (blocks times the fundamental block size, as statvfs gives them).
fn fs_capacity(path: &str) -> u64 {
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%b %S", path])
        .output()
        .expect("running stat -f");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace().map(|w| w.parse::<u64>().unwrap());
    words.next().unwrap() * words.next().unwrap()
}

/// `status.<field>.memory` of `node`, in bytes.
fn memory(node: &Value, field: &str) -> u64 {
    let q = node["status"][field]["memory"]
        .as_str()
        .unwrap_or_else(|| panic!("no status.{field}.memory in {node}"));
    parse_quantity(q).unwrap_or_else(|e| panic!("status.{field}.memory {q:?}: {e}"))
}

/// `(available, capacity)` of one signal as `node` reports it.
fn signal(node: &Value, name: &str) -> (u64, u64) {
    let s = node["status"]["signals"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["signal"] == name))
        .unwrap_or_else(|| panic!("no {name} signal in {node}"));
    (
        s["available"].as_u64().unwrap(),
        s["capacity"].as_u64().unwrap(),
    )
}

fn reported(c: &Cluster, node: &str) -> Value {
    c.wait_for(
        &format!("{node} reports its memory"),
        Duration::from_secs(30),
        |c| {
            c.node(node).is_some_and(|n| {
                n["status"]["capacity"]["memory"]
                    .as_str()
                    .is_some_and(|m| m != "0")
            })
        },
    );
    c.node(node).unwrap()
}

#[test]
fn an_agent_in_a_container_measures_the_host_through_its_mounts() {
    let docker_root = docker_ok(&["info", "-f", "{{.DockerRootDir}}"]);
    assert!(
        docker_root.starts_with('/'),
        "DockerRootDir {docker_root:?}"
    );
    let root_mount = format!("{docker_root}:/host{docker_root}:ro");
    let limit = LIMIT.to_string();
    let mut s = Sites::new(Timing::default(), &["hv"]);
    s.start_agent_with(
        "hv-host",
        "hv",
        &[
            "--memory",
            &limit,
            "-v",
            "/proc:/host/proc:ro",
            "-v",
            "/sys/fs/cgroup:/host/sys/fs/cgroup:ro",
            "-v",
            &root_mount,
        ],
        &[
            "--host-proc",
            "/host/proc",
            "--host-cgroup",
            "/host/sys/fs/cgroup",
            "--host-rootfs",
            "/host",
        ],
    );
    s.start_agent_with("hv-own", "hv", &["--memory", &limit], &[]);
    s.wait_ready("hv-host");
    s.wait_ready("hv-own");

    let total = host_mem_total();
    assert!(
        total > LIMIT,
        "the test host has more memory than the limit"
    );
    let host = reported(&s, "hv-host");
    assert_eq!(memory(&host, "capacity"), total, "the host's MemTotal");
    assert_eq!(memory(&host, "allocatable"), total - HARD_MEMORY);
    let (available, capacity) = signal(&host, "memory.available");
    assert_eq!(capacity, total);
    assert!(
        available <= total && available > LIMIT,
        "memory.available {available} of {total}: the host's, not the container's"
    );
    // The imagefs is the filesystem of the host's Docker data root.
    let (_, imagefs) = signal(&host, "imagefs.available");
    assert_eq!(
        imagefs,
        fs_capacity(&docker_root),
        "imagefs at {docker_root}"
    );

    // Without the mounts: the container's own view, its limit.
    let own = reported(&s, "hv-own");
    assert_eq!(memory(&own, "capacity"), LIMIT, "the container's limit");
    assert_eq!(memory(&own, "allocatable"), LIMIT - HARD_MEMORY);
    let (available, capacity) = signal(&own, "memory.available");
    assert_eq!(capacity, LIMIT);
    assert!(available <= LIMIT, "{available}");
}
