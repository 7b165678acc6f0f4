//! Site partitions and node loss on the real Docker engine, with agents in
//! containers on per-site Docker networks (`outpost_tests::Sites`).
//!
//! A site cut off for a minute: both agents of site b are disconnected
//! from their site's network (`docker network disconnect`: their pods keep
//! running on it, nothing reaches the controller, as when the site's
//! uplink is cut), and reconnected 60 s later.
//! - the site shows Partitioned in `get sites`, with a `SitePartitioned`
//!   event;
//! - after the pods' toleration (5 s here, in the manifest), the spread
//!   Deployment's pods of site b are replaced in site a; the Deployment
//!   pinned to site b gets a Pending replacement that cannot run;
//! - every container of site b keeps running throughout;
//! - when the site is back, each ReplicaSet has as many Running pods as
//!   replicas and Docker runs as many containers as that, the replacements
//!   are the ones stopped, and every container of site b has the same id
//!   and start time as before: nothing that was right restarted.
//!
//! An agent killed (`docker kill` of its container), with heartbeat 1 s,
//! grace 3 s and a toleration of 0 s: its pods Running elsewhere, timed
//! for docs/BENCHMARKS.md.

use outpost_tests::{node_of, pod_condition, running_ready, Cluster, Sites, Timing};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const NODES: [(&str, &str); 4] = [
    ("cut-a1", "a"),
    ("cut-a2", "a"),
    ("cut-b1", "b"),
    ("cut-b2", "b"),
];

/// How long site b stays cut off (issue 9: "for a minute").
const CUT: Duration = Duration::from_secs(60);

/// A Deployment of the web workload (no probes: a cut-off agent cannot
/// reach its pods, and a failing probe would make the copies that ran
/// through the cut lose to the replacements on heal).
fn deployment(name: &str, replicas: u32, extra: &str, toleration_secs: u32) -> String {
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
      terminationGracePeriodSeconds: 5
{extra}      tolerations:
      - {{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: {toleration_secs}}}
      containers:
      - name: web
        image: outpost/workload-web:dev
"#
    )
}

/// Counted as a replica: not being deleted, not evicted.
fn counted(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && pod_condition(p, "DisruptionTarget") != Some("True")
}

fn pods(c: &Cluster, app: &str) -> Vec<Value> {
    c.pods(&format!("app={app}"))
}

/// Running containers of `site`'s nodes: id -> (pod/container, start time).
fn site_containers(s: &Sites, site: &str) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for node in s.nodes_of(site) {
        for (id, what) in s.containers(&node) {
            let (ok, started) =
                outpost_tests::docker(&["inspect", "-f", "{{.State.StartedAt}}", &id]);
            if ok {
                out.insert(id, (what, started));
            }
        }
    }
    out
}

/// Running containers of `app`'s pods on `site`'s nodes, as Docker lists
/// them.
fn app_containers(s: &Sites, site: &str, app: &str) -> usize {
    s.nodes_of(site)
        .iter()
        .flat_map(|n| s.containers(n).into_values())
        .filter(|what| what.starts_with(&format!("{app}-")))
        .count()
}

/// Each ReplicaSet of `app` whose Running pods differ from its replicas:
/// `(name, replicas, running)`.
fn miscounted_replicasets(c: &Cluster, app: &str) -> Vec<(String, u64, usize)> {
    let pods = pods(c, app);
    let sets = c.ctl_json(&["get", "rs", "-l", &format!("app={app}")]);
    sets["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|rs| {
            let uid = rs["metadata"]["uid"].as_str()?;
            let replicas = rs["spec"]["replicas"].as_u64().unwrap_or(0);
            let running = pods
                .iter()
                .filter(|p| {
                    p["status"]["phase"] == "Running"
                        && p["metadata"]["ownerReferences"]
                            .as_array()
                            .is_some_and(|o| o.iter().any(|o| o["uid"] == uid))
                })
                .count();
            (usize::try_from(replicas).ok() != Some(running)).then(|| {
                (
                    rs["metadata"]["name"].as_str().unwrap_or("?").to_string(),
                    replicas,
                    running,
                )
            })
        })
        .collect()
}

#[test]
fn a_site_cut_off_for_a_minute_is_replaced_elsewhere_and_comes_back_untouched() {
    outpost_workloads::ensure_images().expect("building the workload images");
    let s = Sites::start(Timing::default(), &NODES);
    s.apply(
        "manifests.yaml",
        &format!(
            "{}---\n{}",
            deployment("spread", 4, "", 5),
            deployment(
                "pinned",
                1,
                "      nodeSelector: {topology.outpost.dev/site: b}\n",
                5
            )
        ),
    );
    s.wait_for(
        "every replica Running and Ready",
        Duration::from_secs(120),
        |c| {
            let sp = pods(c, "spread");
            let p = pods(c, "pinned");
            sp.len() == 4
                && sp.iter().all(running_ready)
                && p.len() == 1
                && p.iter().all(running_ready)
        },
    );
    s.assert_on_site_networks(&pods(&s, "spread"));
    s.assert_on_site_networks(&pods(&s, "pinned"));
    let b_before = site_containers(&s, "b");
    let in_b = pods(&s, "spread")
        .iter()
        .filter(|p| node_of(p).starts_with("cut-b"))
        .count();
    assert_eq!(in_b, 2, "spread evenly: two in each site");
    assert_eq!(
        b_before.len(),
        3,
        "two spread replicas and the pinned one in site b: {b_before:?}"
    );

    // Cut site b off.
    let cut_at = Instant::now();
    s.cut("b");
    let took = s.wait_for(
        "site b Partitioned and the spread replicas replaced in site a",
        Duration::from_secs(50),
        |c| {
            let sites = String::from_utf8_lossy(&c.ctl(&["get", "sites"]).stdout).to_string();
            let partitioned = sites
                .lines()
                .any(|l| l.starts_with("b ") && l.contains("Partitioned"));
            let counted_a = pods(c, "spread")
                .iter()
                .filter(|p| counted(p) && running_ready(p) && node_of(p).starts_with("cut-a"))
                .count();
            partitioned && counted_a == 4
        },
    );
    println!("site b cut off: its spread replicas Running in site a after {took:.1?}");
    let sites = String::from_utf8_lossy(&s.ctl(&["get", "sites"]).stdout).to_string();
    println!("{sites}");
    let events = String::from_utf8_lossy(&s.ctl(&["get", "events"]).stdout).to_string();
    assert!(events.contains("SitePartitioned"), "{events}");
    s.assert_on_site_networks(&pods(&s, "spread"));
    // The pinned Deployment's replacement has nowhere to go.
    s.wait_for(
        "a Pending replacement of the pinned pod",
        Duration::from_secs(30),
        |c| {
            pods(c, "pinned")
                .iter()
                .any(|p| p["spec"]["nodeName"].is_null() && p["status"]["phase"] == "Pending")
        },
    );
    let p = pods(&s, "pinned");
    let original = p
        .iter()
        .find(|p| node_of(p).starts_with("cut-b"))
        .expect("the pinned pod stays bound");
    assert_eq!(original["status"]["phase"], "Unknown");
    assert!(original["metadata"]["deletionTimestamp"].is_null());
    // The rest of the minute, then a last look before the heal.
    std::thread::sleep(CUT.saturating_sub(cut_at.elapsed()));
    assert_eq!(
        site_containers(&s, "b"),
        b_before,
        "site b's containers keep running while cut off"
    );
    assert_eq!(app_containers(&s, "a", "spread"), 4, "the replacements run");

    // Site b comes back.
    let cut_for = cut_at.elapsed();
    let healed_at = Instant::now();
    s.heal("b");
    // `docker network connect` itself takes a while on a busy box.
    let connected = healed_at.elapsed();
    // When both agents of site b are Ready again: their reconnect.
    let mut back: Option<Duration> = None;
    s.wait_for(
        "each Deployment at its count, the replacements gone",
        Duration::from_secs(90),
        |c| {
            if back.is_none() && c.is_ready("cut-b1") && c.is_ready("cut-b2") {
                back = Some(healed_at.elapsed());
            }
            let sp = pods(c, "spread");
            let p = pods(c, "pinned");
            sp.len() == 4
                && sp.iter().all(|p| counted(p) && running_ready(p))
                && p.len() == 1
                && p.iter().all(|p| counted(p) && running_ready(p))
        },
    );
    let took = healed_at.elapsed();
    let sp = pods(&s, "spread");
    let in_b = sp
        .iter()
        .filter(|p| node_of(p).starts_with("cut-b"))
        .count();
    assert_eq!(
        in_b, 2,
        "the copies that ran through the partition are the ones kept"
    );
    let b_after = site_containers(&s, "b");
    let lost = b_before
        .keys()
        .filter(|id| !b_after.contains_key(*id))
        .count();
    println!(
        "site b back after {cut_for:.1?} cut off (reconnected by `docker network connect` in {connected:.1?}): \
         its nodes Ready {back:.1?} and every Deployment at its count {took:.1?} after the reconnect began; \
         site b pods lost or restarted: {lost}"
    );
    assert_eq!(b_after, b_before, "nothing in site b restarted");
    for app in ["spread", "pinned"] {
        assert_eq!(
            miscounted_replicasets(&s, app),
            Vec::new(),
            "{app}: Running pods per ReplicaSet equal its replicas"
        );
    }
    // The replacements' containers in site a are stopped: Docker runs as
    // many containers as there are replicas, no more.
    let stopped = s.wait_for(
        "site a runs two spread containers again",
        Duration::from_secs(60),
        |_| app_containers(&s, "a", "spread") == 2,
    );
    let converged = healed_at.elapsed();
    assert_eq!(app_containers(&s, "b", "spread"), 2);
    assert_eq!(app_containers(&s, "b", "pinned"), 1);
    assert_eq!(app_containers(&s, "a", "pinned"), 0);
    println!(
        "surplus containers stopped {stopped:.1?} later; heal: reconnect -> counts right in the API and in Docker in {converged:.1?}"
    );
    s.wait_for("site b Ready in get sites", Duration::from_secs(30), |c| {
        String::from_utf8_lossy(&c.ctl(&["get", "sites"]).stdout)
            .lines()
            .any(|l| l.starts_with("b ") && l.contains("Ready") && !l.contains("NotReady"))
    });
    s.assert_on_site_networks(&pods(&s, "spread"));
}

/// Failover, for the figure in docs/BENCHMARKS.md: heartbeat 1 s, grace
/// 3 s and a toleration of 0 s, an agent container killed, timed from the
/// kill to its pod Running and Ready on the other node. Printed, not
/// asserted against a time (the box is shared).
#[test]
fn an_agent_killed_has_its_pods_running_elsewhere() {
    const FAIL: [(&str, &str); 2] = [("fail-a1", "a"), ("fail-b1", "b")];
    outpost_workloads::ensure_images().expect("building the workload images");
    let s = Sites::start(
        Timing {
            heartbeat: "1s",
            grace: "3s",
            idle: "6s",
            cert_ttl: "8760h",
        },
        &FAIL,
    );
    s.apply("failover.yaml", &deployment("failover", 2, "", 0));
    s.wait_for(
        "two replicas Running and Ready, one per node",
        Duration::from_secs(90),
        |c| {
            let p = pods(c, "failover");
            p.len() == 2 && p.iter().all(running_ready) && p.iter().any(|p| node_of(p) == "fail-b1")
        },
    );
    s.assert_on_site_networks(&pods(&s, "failover"));
    let t0 = Instant::now();
    s.kill_agent("fail-b1");
    s.wait_for(
        "both replicas Running and Ready on fail-a1",
        Duration::from_secs(60),
        |c| {
            pods(c, "failover")
                .iter()
                .filter(|p| counted(p) && running_ready(p) && node_of(p) == "fail-a1")
                .count()
                == 2
        },
    );
    let took = t0.elapsed();
    println!(
        "failover (heartbeat 1s, grace 3s, toleration 0s): agent container killed -> its pod Running and Ready elsewhere in {took:.1?}"
    );
    let running: Vec<Value> = pods(&s, "failover")
        .into_iter()
        .filter(|p| node_of(p) == "fail-a1")
        .collect();
    s.assert_on_site_networks(&running);
    assert_eq!(
        s.containers("fail-a1")
            .values()
            .filter(|w| w.starts_with("failover-"))
            .count(),
        2,
        "Docker runs both on fail-a1"
    );
}
