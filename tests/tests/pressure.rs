//! Node pressure end to end, with real hogs on the real engine and the real
//! agent measuring the box: for each of memory, pids and disk, a threshold
//! just below what the box has free, a hog pod that eats through it, and a
//! quiet pod beside it. The agent raises the condition, evicts the hog (and
//! only the hog), refuses a new pod while the condition holds, and clears
//! the condition only after the transition period. For disk it first
//! reclaims: an unused image its pods once used goes before anybody is
//! evicted, and an image it never used is left alone.
//!
//! Thresholds are set relative to what the agent measured a moment before,
//! so the test works on any box; the three scenarios run one at a time
//! because the signals are the whole box's.

use outpost_tests::{docker, Cluster};
use serde_json::Value;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One scenario at a time: every hog moves the whole box's signals.
static SERIAL: Mutex<()> = Mutex::new(());

const MI: u64 = 1 << 20;
const TRANSITION: Duration = Duration::from_secs(8);
/// Size of the disk scenario's reclaimable image, above the margin below.
const BALLAST_MIB: u64 = 350;

/// Removes the scenario's containers (pods outlive their agent by design)
/// and images when the test ends, passed or failed.
struct Cleanup {
    pods: Vec<String>,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pod in &self.pods {
            let (_, ids) = docker(&[
                "ps",
                "-aq",
                "--filter",
                &format!("label=dev.outpost.pod={pod}"),
            ]);
            for id in ids.lines() {
                docker(&["rm", "-f", id]);
            }
        }
        for image in &self.images {
            docker(&["rmi", image]);
        }
    }
}

fn pod(c: &Cluster, name: &str) -> Option<Value> {
    let out = c.ctl(&["get", "pod", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

fn reason(p: &Value) -> &str {
    p["status"]["reason"].as_str().unwrap_or("")
}

/// A one-container pod manifest; `extra` goes under the container.
fn manifest(name: &str, node: &str, image: &str, args: &[&str], extra: &str) -> String {
    let args = args
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 2
  containers:
    - name: main
      image: {image}
      args: [{args}]
{extra}"#
    )
}

/// Resources block for [`manifest`].
fn requests(items: &str) -> String {
    format!("      resources:\n        requests:\n{items}")
}

/// (available, state, hard threshold) of one signal as the node reports it.
fn signal(c: &Cluster, node: &str, name: &str) -> Option<(u64, String, Option<u64>)> {
    let n = c.node(node)?;
    let s = n["status"]["signals"]
        .as_array()?
        .iter()
        .find(|s| s["signal"] == name)?
        .clone();
    Some((
        s["available"].as_u64()?,
        s["threshold"]["state"].as_str()?.to_string(),
        s["hardThreshold"].as_u64(),
    ))
}

fn running(c: &Cluster, name: &str) -> bool {
    pod(c, name).is_some_and(|p| phase(&p) == "Running")
}

fn restarts(c: &Cluster, name: &str) -> u64 {
    pod(c, name).map_or(0, |p| {
        p["status"]["containerStatuses"][0]["restartCount"]
            .as_u64()
            .unwrap_or(0)
    })
}

/// Events as `(involved object, reason, message)`, oldest first.
fn events(c: &Cluster) -> Vec<(String, String, String)> {
    let v = c.ctl_json(&["get", "events", "--limit", "500"]);
    let mut out: Vec<(u64, String, String, String)> = v["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|e| {
                    let seq = e["metadata"]["name"]
                        .as_str()
                        .and_then(|n| n.strip_prefix("event-"))
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
                    (seq, s("involvedObject"), s("reason"), s("message"))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|e| e.0);
    out.into_iter().map(|(_, o, r, m)| (o, r, m)).collect()
}

fn position(events: &[(String, String, String)], object: &str, reason: &str) -> Option<usize> {
    events
        .iter()
        .position(|(o, r, _)| o == object && r == reason)
}

/// A cluster with one node (default thresholds) and its quiet pod running.
fn start(node: &str, quiet: &str, quiet_requests: &str) -> Cluster {
    outpost_workloads::ensure_images().expect("building the workload images");
    let c = Cluster::with_ready_agent(node, &[]);
    c.apply(
        "quiet.yaml",
        &manifest(
            quiet,
            node,
            "outpost/workload-http:dev",
            &[],
            &requests(quiet_requests),
        ),
    );
    c.wait_for("quiet pod Running", Duration::from_secs(60), |c| {
        running(c, quiet)
    });
    c
}

/// Restarts the agent with `--eviction-hard signal<QUANTITY` (and the
/// test's transition period) and waits until the controller shows a report
/// made under it.
fn restart_with(c: &mut Cluster, node: &str, signal_name: &str, units: u64, unit: u64) {
    let quantity = if unit == MI {
        format!("{units}Mi")
    } else {
        units.to_string()
    };
    c.kill_agent(node);
    c.start_agent(
        node,
        None,
        &[
            "--eviction-hard",
            &format!("{signal_name}<{quantity}"),
            "--eviction-pressure-transition-period",
            &format!("{}s", TRANSITION.as_secs()),
        ],
    );
    c.wait_for(
        "a report under the new threshold",
        Duration::from_secs(30),
        |c| {
            c.is_ready(node)
                && signal(c, node, signal_name).is_some_and(|(_, _, t)| t == Some(units * unit))
        },
    );
}

/// Arms one hard threshold `below` what the agent measures now; returns it
/// in bytes (or tasks). The agent reports a signal again only when it moved
/// by a share of capacity, so the reading comes from the first report of a
/// fresh session (made under a threshold that cannot trigger). The pods
/// keep running across both restarts.
fn arm_threshold(c: &mut Cluster, node: &str, signal_name: &str, below: u64, unit: u64) -> u64 {
    restart_with(c, node, signal_name, 1, unit);
    let (available, _, _) = signal(c, node, signal_name).expect("signal reported");
    let units = (available - below) / unit;
    restart_with(c, node, signal_name, units, unit);
    let threshold = units * unit;
    println!(
        "{signal_name}: {available} available, threshold {threshold} ({} below)",
        available - threshold
    );
    threshold
}

/// After the hog's eviction: a BestEffort pod is refused while the
/// condition holds; the signal clears while the condition stays on, and the
/// condition goes False only after the transition period.
fn refuses_then_clears_after_transition(
    c: &Cluster,
    node: &str,
    condition: &str,
    signal_name: &str,
    late: &str,
    evicted_at: Instant,
) {
    assert_eq!(
        c.condition(node, condition).as_deref(),
        Some("True"),
        "{condition} still on right after the eviction"
    );
    c.apply(
        "late.yaml",
        &manifest(late, node, "outpost/workload-http:dev", &[], ""),
    );
    c.wait_for("the late pod refused", Duration::from_secs(30), |c| {
        pod(c, late).is_some_and(|p| phase(&p) == "Failed")
    });
    let p = pod(c, late).unwrap();
    assert_eq!(reason(&p), "Evicted", "{p:#}");
    let message = p["status"]["message"].as_str().unwrap_or("");
    assert!(message.contains(condition), "{message}");

    let mut held = false;
    c.wait_for(
        &format!("{condition} False"),
        Duration::from_secs(90),
        |c| {
            let cond = c.condition(node, condition);
            let clear = signal(c, node, signal_name).is_some_and(|(_, s, _)| s == "Clear");
            held |= clear && cond.as_deref() == Some("True");
            cond.as_deref() == Some("False")
        },
    );
    let gap = evicted_at.elapsed();
    println!("{condition} False {gap:.1?} after the eviction was seen");
    assert!(
        held,
        "the signal cleared while {condition} stayed True (transition period)"
    );
    // The eviction was seen up to a couple of seconds late; the condition
    // may only go False a whole transition period after the signal cleared.
    assert!(
        gap + Duration::from_secs(3) >= TRANSITION,
        "{condition} went False {gap:?} after the eviction, before the {TRANSITION:?} transition period"
    );
}

/// The hog raises `condition` and is evicted, alone, with a message naming
/// `resource`; returns when the eviction was seen and the events then.
fn only_the_hog_evicted(
    c: &Cluster,
    node: &str,
    hog: &str,
    condition: &str,
    resource: &str,
) -> (Instant, Vec<(String, String, String)>) {
    c.wait_for(&format!("{condition} True"), Duration::from_secs(60), |c| {
        c.condition(node, condition).as_deref() == Some("True")
    });
    c.wait_for("the hog evicted", Duration::from_secs(120), |c| {
        pod(c, hog).is_some_and(|p| phase(&p) == "Failed" && reason(&p) == "Evicted")
    });
    let at = Instant::now();
    let p = pod(c, hog).unwrap();
    let message = p["status"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains(resource),
        "eviction message names {resource}: {message}"
    );
    let seen = events(c);
    let evictions: Vec<_> = seen.iter().filter(|(_, r, _)| r == "Evicted").collect();
    assert_eq!(evictions.len(), 1, "one eviction, the hog: {evictions:?}");
    assert_eq!(evictions[0].0, format!("pod/{hog}"));
    println!("{}", evictions[0].2);
    (at, seen)
}

fn quiet_untouched(c: &Cluster, quiet: &str) {
    assert!(running(c, quiet), "the quiet pod is untouched");
    assert_eq!(restarts(c, quiet), 0);
}

#[test]
fn memory_hog_is_evicted_and_pressure_clears_after_transition() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (node, quiet, hog, late) = ("press-mem", "mem-quiet", "mem-hog", "mem-late");
    let _cleanup = Cleanup {
        pods: vec![quiet.into(), hog.into(), late.into()],
        images: Vec::new(),
    };
    let mut c = start(node, quiet, "          memory: 32Mi\n");
    let threshold = arm_threshold(&mut c, node, "memory.available", 300 * MI, MI);
    assert_eq!(
        c.condition(node, "MemoryPressure").as_deref(),
        Some("False")
    );

    // 800 MiB at 100 MiB/s: crosses the threshold within a few seconds.
    c.apply(
        "hog.yaml",
        &manifest(
            hog,
            node,
            "outpost/workload-hog:dev",
            &["--memory-mib-per-sec", "100", "--memory-max-mib", "800"],
            &requests("          memory: 16Mi\n"),
        ),
    );
    let (evicted_at, _) = only_the_hog_evicted(&c, node, hog, "MemoryPressure", "memory");
    println!("threshold {threshold}");

    refuses_then_clears_after_transition(
        &c,
        node,
        "MemoryPressure",
        "memory.available",
        late,
        evicted_at,
    );
    quiet_untouched(&c, quiet);
}

#[test]
fn pid_hog_is_evicted_and_pressure_clears_after_transition() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (node, quiet, hog, late) = ("press-pid", "pid-quiet", "pid-hog", "pid-late");
    let _cleanup = Cleanup {
        pods: vec![quiet.into(), hog.into(), late.into()],
        images: Vec::new(),
    };
    let mut c = start(node, quiet, "          memory: 32Mi\n");
    arm_threshold(&mut c, node, "pid.available", 300, 1);
    assert_eq!(c.condition(node, "PIDPressure").as_deref(), Some("False"));

    c.apply(
        "hog.yaml",
        &manifest(
            hog,
            node,
            "outpost/workload-hog:dev",
            &["--procs-per-sec", "200", "--procs-max", "800"],
            "",
        ),
    );
    let (evicted_at, _) = only_the_hog_evicted(&c, node, hog, "PIDPressure", "pids");

    refuses_then_clears_after_transition(
        &c,
        node,
        "PIDPressure",
        "pid.available",
        late,
        evicted_at,
    );
    quiet_untouched(&c, quiet);
}

#[test]
fn disk_reclaims_unused_images_before_evicting_the_hog() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (node, quiet, hog, late, ballast_pod) = (
        "press-disk",
        "disk-quiet",
        "disk-hog",
        "disk-late",
        "disk-ballast",
    );
    let ballast = "outpost-test/ballast:pressure";
    let foreign = "outpost-test/foreign:pressure";
    let _cleanup = Cleanup {
        pods: vec![quiet.into(), hog.into(), late.into(), ballast_pod.into()],
        images: vec![ballast.into(), foreign.into()],
    };
    let mut c = start(node, quiet, "          ephemeral-storage: 64Mi\n");

    // Two images of 350 MiB each, with their own layer: the ballast, which
    // one of our pods runs once (so Outpost brought it), and a foreign one
    // nobody on the node asked for.
    for (image, seed) in [(ballast, "ballast"), (foreign, "foreign")] {
        let ctx = c.path(&format!("ctx-{seed}"));
        std::fs::create_dir_all(&ctx).unwrap();
        // Incompressible bytes, so the layer really is that big.
        let mut f = std::fs::File::create(ctx.join("blob")).unwrap();
        let mut x: u64 = seed.bytes().fold(0x9e37_79b9_7f4a_7c15, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..BALLAST_MIB {
            for b in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
            }
            std::io::Write::write_all(&mut f, &block).unwrap();
        }
        std::fs::write(
            ctx.join("Dockerfile"),
            "FROM outpost/workload-exit:dev\nCOPY blob /blob\n",
        )
        .unwrap();
        let (ok, out) = docker(&["build", "-q", "-t", image, ctx.to_str().unwrap()]);
        assert!(ok, "building {image}: {out}");
    }
    c.apply(
        "ballast.yaml",
        &manifest(ballast_pod, node, ballast, &["--code", "0"], "")
            .replace("  containers:", "  restartPolicy: Never\n  containers:"),
    );
    c.wait_for("the ballast pod Succeeded", Duration::from_secs(60), |c| {
        pod(c, ballast_pod).is_some_and(|p| phase(&p) == "Succeeded")
    });
    assert!(c.ctl(&["delete", "pod", ballast_pod]).status.success());
    c.wait_for("the ballast pod gone", Duration::from_secs(30), |c| {
        pod(c, ballast_pod).is_none()
    });

    let threshold = arm_threshold(&mut c, node, "nodefs.available", 250 * MI, MI);
    assert_eq!(c.condition(node, "DiskPressure").as_deref(), Some("False"));

    // 1500 MiB at 60 MiB/s into its writable layer: the first 250 MiB
    // raise DiskPressure, the ballast's removal clears it, and the hog then
    // crosses the threshold again with nothing left to reclaim.
    c.apply(
        "hog.yaml",
        &manifest(
            hog,
            node,
            "outpost/workload-hog:dev",
            &["--disk-mib-per-sec", "60", "--disk-max-mib", "1500"],
            &requests("          ephemeral-storage: 16Mi\n"),
        ),
    );
    let (evicted_at, seen) =
        only_the_hog_evicted(&c, node, hog, "DiskPressure", "ephemeral-storage");
    let object = format!("node/{node}");
    let gc = position(&seen, &object, "ImageGCFreed")
        .unwrap_or_else(|| panic!("no ImageGCFreed event: {seen:#?}\n{}", c.logs()));
    let evicted = position(&seen, &format!("pod/{hog}"), "Evicted").unwrap();
    assert!(gc < evicted, "reclaim before eviction: {seen:#?}");
    assert!(seen[gc].2.contains(ballast), "{}", seen[gc].2);
    println!("threshold {threshold}: {}", seen[gc].2);

    let (ballast_left, _) = docker(&["image", "inspect", ballast]);
    assert!(!ballast_left, "the ballast image was reclaimed");
    let (foreign_left, _) = docker(&["image", "inspect", foreign]);
    assert!(foreign_left, "an image Outpost never used is left alone");
    for used in ["outpost/workload-http:dev", "outpost/workload-hog:dev"] {
        assert!(docker(&["image", "inspect", used]).0, "{used} is in use");
    }

    refuses_then_clears_after_transition(
        &c,
        node,
        "DiskPressure",
        "nodefs.available",
        late,
        evicted_at,
    );
    quiet_untouched(&c, quiet);
}
