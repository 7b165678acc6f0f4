//! Node loss, site partitions, flapping and node deletion in the in-memory
//! cluster, with the controller's default durations (heartbeat 5 s, grace
//! 20 s, tolerations 60 s).

use super::testing::{deployment_with as deployment, fleet};
use super::*;
use crate::api::pod::{PodPhase, DISRUPTION_TARGET};
use crate::api::Pod;
use crate::controllers::nodelifecycle::{
    SITE_PARTITIONED, SITE_RECONNECTED, TAINT_MANAGER_EVICTION,
};
use crate::controllers::replicas::is_active;
use outpost_proto::names::SITE_LABEL;
use std::collections::{BTreeMap, BTreeSet};

const GRACE: Duration = Duration::from_secs(20);
const TOLERATION: Duration = Duration::from_secs(60);

fn app_pods<'a>(c: &'a Cache, app: &'a str) -> impl Iterator<Item = &'a Arc<Pod>> + 'a {
    c.pods()
        .filter(move |p| p.metadata.labels.get("app").map(String::as_str) == Some(app))
}

/// Active (counted) replicas of `app` that are Ready.
fn ready_replicas(c: &Cache, app: &str) -> usize {
    app_pods(c, app)
        .filter(|p| is_active(p) && p.status.is_ready())
        .count()
}

/// Every Deployment's active pods equal its replicas and all are Ready.
fn all_at_count(c: &Cache) -> bool {
    c.deployments().all(|d| {
        let app = d.metadata.name.as_str();
        let active = app_pods(c, app).filter(|p| is_active(p)).count();
        let want = usize::try_from(d.spec.replicas).unwrap_or(0);
        active == want && ready_replicas(c, app) == want
    })
}

/// Active pods of `app` per site.
fn per_site(c: &Cache, app: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in app_pods(c, app).filter(|p| is_active(p)) {
        let Some(n) = p.node() else { continue };
        let site = c.node(n).unwrap().labels()[SITE_LABEL].clone();
        *m.entry(site).or_insert(0) += 1;
    }
    m
}

/// (uid, node, start time on that node) of each pod of `app` bound to a
/// node in `nodes`.
fn running_on(sim: &Sim, app: &str, nodes: &BTreeSet<String>) -> BTreeSet<(String, String, Time)> {
    let c = sim.cache();
    let mut out = BTreeSet::new();
    for p in app_pods(&c, app) {
        let Some(n) = p.node() else { continue };
        if !nodes.contains(n) {
            continue;
        }
        let key = p.metadata.name.clone();
        let started = sim
            .node(n)
            .and_then(|sn| sn.pods().find(|(k, _)| *k == key).map(|(_, t)| t))
            .expect("the node runs its pod");
        out.insert((p.metadata.uid.clone(), n.to_string(), started));
    }
    out
}

fn events(sim: &Sim, reason: &str) -> usize {
    sim.events(None)
        .iter()
        .filter(|e| e.reason == reason)
        .count()
}

#[test]
fn a_dead_node_is_replaced_after_its_toleration_and_not_before() {
    let mut sim = fleet(6, 2);
    sim.apply_yaml(&deployment("web", 6, "")).unwrap();
    sim.run_until(Duration::from_secs(60), all_at_count)
        .unwrap();
    let victim = "n0000";
    let original: Vec<String> = sim
        .cache()
        .pods_on(victim)
        .map(|p| p.metadata.uid.clone())
        .collect();
    assert_eq!(original.len(), 1, "one replica per node");
    // The pods got the default tolerations at admission.
    let tolerations = sim.cache().pods().next().unwrap().spec.tolerations.clone();
    assert_eq!(tolerations.len(), 2, "{tolerations:?}");
    assert!(tolerations.iter().all(|t| t.toleration_seconds == Some(60)));

    sim.set_connected(victim, false);
    let not_ready = sim
        .run_until(Duration::from_secs(60), |c| {
            c.node(victim).is_some_and(|n| !n.is_ready())
        })
        .unwrap();
    // Counted from its last heartbeat, up to one interval before the cut.
    assert!(
        not_ready + sim.cfg.heartbeat >= GRACE && not_ready <= GRACE + sim.cfg.lease_tick,
        "{not_ready:?}"
    );
    // One second before the toleration ends: nothing replaced.
    sim.run_for(TOLERATION - Duration::from_secs(1));
    {
        let c = sim.cache();
        assert_eq!(
            c.pods().count(),
            6,
            "no replacement before the toleration ends"
        );
        let p = c.pods_on(victim).next().unwrap();
        assert!(!p.status.is_ready(), "marked not ready at once");
        assert!(p.status.evicted_since().is_none());
    }
    sim.run_until(Duration::from_secs(3), |c| c.pods().count() == 7)
        .expect("a replacement right after the toleration");
    sim.run_until(Duration::from_secs(30), all_at_count)
        .unwrap();
    {
        let c = sim.cache();
        let p = c.pods_on(victim).next().expect("still bound to its node");
        assert_eq!(p.metadata.uid, original[0]);
        assert_eq!(p.status.phase, PodPhase::Unknown);
        assert!(p.status.evicted_since().is_some());
        assert!(!p.metadata.is_deleting(), "not deleted: the node keeps it");
    }
    assert_eq!(events(&sim, TAINT_MANAGER_EVICTION), 1);

    // An hour later the box comes back: one copy is kept, and it is the
    // one that ran all along (its site holds one more than its share with
    // both, the replacement shares a node).
    sim.run_for(Duration::from_secs(3600));
    sim.set_connected(victim, true);
    let healed = sim
        .run_until(Duration::from_secs(30), |c| {
            all_at_count(c) && c.pods().count() == 6
        })
        .unwrap();
    assert!(healed <= Duration::from_secs(5), "{healed:?}");
    let c = sim.cache();
    let p = c.pods_on(victim).next().expect("the original stays");
    assert_eq!(p.metadata.uid, original[0]);
    assert!(is_active(p) && p.status.is_ready());
    assert_eq!(
        p.status.condition(DISRUPTION_TARGET).map(|c| c.status),
        Some(crate::api::meta::ConditionStatus::False)
    );
}

#[test]
fn a_site_partitioned_for_two_hours_heals_without_restarting_anything() {
    // 20 sites of 50 nodes; `web` spread over all of them, `pinned` held
    // to site-00 by its selector.
    let mut sim = fleet(1000, 20);
    sim.apply_yaml(&deployment("web", 1000, "")).unwrap();
    sim.apply_yaml(&deployment(
        "pinned",
        10,
        "      nodeSelector: {topology.outpost.dev/site: site-00}\n",
    ))
    .unwrap();
    sim.run_until(Duration::from_secs(120), all_at_count)
        .unwrap();
    assert!(per_site(&sim.cache(), "web").values().all(|&n| n == 50));
    assert_eq!(per_site(&sim.cache(), "web").len(), 20);
    let site0: BTreeSet<String> = sim
        .node_names()
        .into_iter()
        .filter(|n| sim.cache().node(n).unwrap().labels()[SITE_LABEL] == "site-00")
        .collect();
    assert_eq!(site0.len(), 50);
    let web_before = running_on(&sim, "web", &site0);
    let pinned_before = running_on(&sim, "pinned", &site0);
    assert_eq!((web_before.len(), pinned_before.len()), (50, 10));

    for n in &site0 {
        sim.set_connected(n, false);
    }
    sim.run_for(Duration::from_secs(2 * 3600));
    {
        let c = sim.cache();
        // web: every replica counted and Ready, replacements spread over
        // the 19 sites left, within maxSkew 1 of each other.
        assert_eq!(ready_replicas(&c, "web"), 1000);
        let sites = per_site(&c, "web");
        let others: Vec<usize> = sites
            .iter()
            .filter(|(s, _)| *s != "site-00")
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(others.iter().sum::<usize>(), 1000);
        let (lo, hi) = (others.iter().min().unwrap(), others.iter().max().unwrap());
        assert!(hi - lo <= 1, "replacements piled up: {sites:?}");
        // pinned: nowhere to go, so its replacements wait and its pods
        // stay on their nodes.
        let pending = app_pods(&c, "pinned")
            .filter(|p| p.node().is_none())
            .count();
        assert_eq!(pending, 10);
        // Nothing of site-00 was deleted.
        for p in c
            .pods()
            .filter(|p| p.node().is_some_and(|n| site0.contains(n)))
        {
            assert!(!p.metadata.is_deleting());
            assert_eq!(p.status.phase, PodPhase::Unknown);
        }
    }
    assert_eq!(events(&sim, SITE_PARTITIONED), 1, "one event per partition");

    let wall = std::time::Instant::now();
    for n in &site0 {
        sim.set_connected(n, true);
    }
    let healed = sim
        .run_until(Duration::from_secs(60), |c| {
            all_at_count(c) && c.pods().filter(|p| p.metadata.is_deleting()).count() == 0
        })
        .unwrap();
    println!(
        "site of 50 nodes (of 1,000) healed after 2 h: every ReplicaSet at its count {healed:?} after the reconnect ({:?} wall)",
        wall.elapsed()
    );
    // Counted within one heartbeat; the surplus then stops with its grace
    // (the simulated stop takes 1 s).
    assert!(
        healed <= Duration::from_secs(5) + sim.cfg.pod_stop,
        "{healed:?}"
    );
    assert_eq!(
        running_on(&sim, "web", &site0),
        web_before,
        "nothing on site-00 restarted"
    );
    assert_eq!(
        running_on(&sim, "pinned", &site0),
        pinned_before,
        "pinned pods untouched"
    );
    let c = sim.cache();
    assert!(
        per_site(&c, "web").values().all(|&n| n == 50),
        "{:?}",
        per_site(&c, "web")
    );
    assert_eq!(app_pods(&c, "pinned").count(), 10);
    // Every node runs exactly what the controller counts.
    let running: usize = sim
        .node_names()
        .iter()
        .map(|n| sim.node(n).unwrap().pod_count())
        .sum();
    assert_eq!(running, 1010);
    drop(c);
    assert_eq!(events(&sim, SITE_RECONNECTED), 1);
}

#[test]
fn flapping_nodes_do_not_make_pods_thrash() {
    let mut sim = fleet(6, 2);
    sim.apply_yaml(&deployment("web", 6, "")).unwrap();
    sim.run_until(Duration::from_secs(60), all_at_count)
        .unwrap();
    let uids: BTreeSet<String> = sim.cache().pods().map(|p| p.metadata.uid.clone()).collect();
    let writes = sim.stats.writes;
    // Silent for 25 s (NotReady after 20), back for 5 s, for 30 minutes.
    for _ in 0..60 {
        sim.set_connected("n0000", false);
        sim.run_for(Duration::from_secs(25));
        sim.set_connected("n0000", true);
        sim.run_for(Duration::from_secs(5));
    }
    let now: BTreeSet<String> = sim.cache().pods().map(|p| p.metadata.uid.clone()).collect();
    assert_eq!(uids, now, "no pod replaced");
    assert_eq!(events(&sim, TAINT_MANAGER_EVICTION), 0);
    println!(
        "30 min of flapping: {} store writes",
        sim.stats.writes - writes
    );
}

#[test]
fn pods_of_a_deleted_node_are_replaced_at_once() {
    let mut sim = fleet(4, 2);
    sim.apply_yaml(&deployment("web", 4, "")).unwrap();
    sim.run_until(Duration::from_secs(60), all_at_count)
        .unwrap();
    sim.delete_node("n0000");
    let took = sim
        .run_until(Duration::from_secs(30), all_at_count)
        .unwrap();
    assert!(
        took <= sim.cfg.pod_start + Duration::from_secs(1),
        "{took:?}"
    );
    assert!(sim.cache().pods().all(|p| p.node() != Some("n0000")));
}

mod properties {
    //! Random sequences of node deaths, site partitions, heals (each node's
    //! report handled with its first heartbeat, or before it), scale
    //! changes and template changes over one Deployment (maxSurge and
    //! maxUnavailable 25 %): once every node is reachable again, what the
    //! boxes run never exceeds replicas + maxSurge after the controller has
    //! had a heartbeat to notice and the surplus its stop time; and after
    //! quiet time the Deployment converges to exactly its replicas, all
    //! Ready, on the current template, with each box running exactly what
    //! the controller counts.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Kill(usize),
        Partition(usize),
        /// `true`: each node's report is stored before its lease renews.
        HealAll(bool),
        Scale(i32),
        Template(u8),
        Wait(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..6).prop_map(Op::Kill),
            (0usize..3).prop_map(Op::Partition),
            any::<bool>().prop_map(Op::HealAll),
            (0i32..9).prop_map(Op::Scale),
            (0u8..3).prop_map(Op::Template),
            (1u64..200).prop_map(Op::Wait),
        ]
    }

    fn manifest(replicas: i32, tag: u8) -> String {
        deployment("web", usize::try_from(replicas).unwrap_or(0), "").replace(
            "outpost/workload-http:dev",
            &format!("outpost/workload-http:v{tag}"),
        )
    }

    /// Pods of `web` the boxes run (any state).
    fn on_boxes(sim: &Sim) -> usize {
        sim.node_names()
            .iter()
            .map(|n| {
                sim.node(n)
                    .unwrap()
                    .pods()
                    .filter(|(k, _)| k.starts_with("web-"))
                    .count()
            })
            .sum()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn counts_hold_through_failures_and_converge(ops in prop::collection::vec(op(), 1..14)) {
            let mut sim = fleet(6, 3);
            let (mut replicas, mut tag) = (4i32, 0u8);
            sim.apply_yaml(&manifest(replicas, tag)).unwrap();
            sim.run_for(Duration::from_secs(30));
            let names = sim.node_names();
            let mut down: BTreeSet<String> = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Kill(i) => {
                        sim.set_connected(&names[i], false);
                        down.insert(names[i].clone());
                    }
                    Op::Partition(site) => {
                        for (i, n) in names.iter().enumerate() {
                            if i % 3 == site {
                                sim.set_connected(n, false);
                                down.insert(n.clone());
                            }
                        }
                    }
                    Op::HealAll(report_first) => {
                        for n in std::mem::take(&mut down) {
                            if report_first {
                                sim.reconnect_reporting_first(&n);
                            } else {
                                sim.set_connected(&n, true);
                            }
                        }
                        // A heartbeat to notice, the surplus's stop time.
                        sim.run_for(sim.cfg.heartbeat + sim.cfg.pod_stop + Duration::from_secs(1));
                        let surge = (replicas + 3) / 4; // 25 %, rounded up
                        let running = on_boxes(&sim);
                        prop_assert!(
                            running <= usize::try_from(replicas + surge).unwrap_or(0),
                            "{running} pods on the boxes for {replicas} replicas (+{surge} surge) once all are reachable"
                        );
                    }
                    Op::Scale(n) => {
                        replicas = n;
                        sim.scale(Kind::Deployment, "default", "web", n).unwrap();
                    }
                    Op::Template(t) => {
                        tag = t;
                        sim.apply_yaml(&manifest(replicas, tag)).unwrap();
                    }
                    Op::Wait(s) => sim.run_for(Duration::from_secs(s)),
                }
            }
            for n in std::mem::take(&mut down) {
                sim.set_connected(&n, true);
            }
            sim.run_for(Duration::from_secs(600));
            let want = usize::try_from(replicas).unwrap_or(0);
            let c = sim.cache();
            let image = format!("outpost/workload-http:v{tag}");
            let active: Vec<&Arc<Pod>> = app_pods(&c, "web").filter(|p| is_active(p)).collect();
            prop_assert_eq!(active.len(), want);
            prop_assert!(active.iter().all(|p| p.status.is_ready() && p.spec.containers[0].image == image));
            prop_assert_eq!(app_pods(&c, "web").count(), want, "nothing left over");
            drop(c);
            prop_assert_eq!(on_boxes(&sim), want, "the boxes run what the controller counts");
        }
    }
}

#[test]
fn a_box_enrolled_again_under_its_old_name_drops_the_deleted_nodes_pods() {
    let mut sim = fleet(4, 2);
    sim.apply_yaml(&deployment("web", 4, "")).unwrap();
    sim.run_until(Duration::from_secs(60), all_at_count)
        .unwrap();
    let box_pods = |sim: &Sim| -> BTreeSet<String> {
        sim.node("n0000")
            .map(|n| n.pods().map(|(k, _)| k.to_string()).collect())
            .unwrap_or_default()
    };
    let before = box_pods(&sim);
    assert!(!before.is_empty(), "n0000 runs a replica");
    // Deleted while offline: the box never hears of it and keeps its pods.
    sim.delete_node_keeping_box("n0000");
    sim.run_until(Duration::from_secs(30), all_at_count)
        .unwrap();
    assert_eq!(box_pods(&sim), before);
    // Enrolled again (a new token, the same name): its acknowledgement is
    // the earlier node's, so it is resynced whole and stops what the
    // controller no longer has on it.
    sim.re_enrol("n0000");
    sim.run_for(Duration::from_secs(30));
    let bound: BTreeSet<String> = sim
        .cache()
        .pods_on("n0000")
        .map(|p| crate::agents::wire_key(p))
        .collect();
    let runs = box_pods(&sim);
    assert!(
        runs.is_subset(&bound),
        "the box runs {runs:?}, the controller has {bound:?} on it"
    );
    assert!(runs.is_disjoint(&before), "{runs:?} {before:?}");
    assert!(all_at_count(&sim.cache()));
}

/// The real partition scenario (tests/tests/partition.rs) on the virtual
/// clock: 4 nodes over 2 sites, `spread` 2 per site and `pinned` held to
/// the cut site; the cut site's two nodes come back one after the other,
/// `gap` apart, as two agents reconnect at their own moments. Whatever
/// the gap, the copies that ran through the partition are kept.
#[test]
fn a_site_whose_nodes_return_one_by_one_keeps_the_copies_that_ran_through() {
    for (gap_ms, report_first) in [0, 1, 300, 1_000, 2_500, 5_000, 7_000, 20_000]
        .into_iter()
        .flat_map(|g| [(g, false), (g, true)])
    {
        let mut sim = fleet(4, 2);
        sim.apply_yaml(&deployment("spread", 4, "")).unwrap();
        sim.apply_yaml(&deployment(
            "pinned",
            1,
            "      nodeSelector: {topology.outpost.dev/site: site-01}\n",
        ))
        .unwrap();
        sim.run_until(Duration::from_secs(120), all_at_count)
            .unwrap();
        assert_eq!(per_site(&sim.cache(), "spread").values().sum::<usize>(), 4);
        assert!(per_site(&sim.cache(), "spread").values().all(|&n| n == 2));
        let cut: BTreeSet<String> = ["n0001".to_string(), "n0003".to_string()].into();
        let before = running_on(&sim, "spread", &cut);
        assert_eq!(before.len(), 2);
        for n in &cut {
            sim.set_connected(n, false);
        }
        sim.run_for(GRACE + TOLERATION + Duration::from_secs(60));
        assert_eq!(per_site(&sim.cache(), "spread").get("site-00"), Some(&4));
        let reconnect = |sim: &mut Sim, n: &str| {
            if report_first {
                sim.reconnect_reporting_first(n);
            } else {
                sim.set_connected(n, true);
            }
        };
        reconnect(&mut sim, "n0001");
        sim.run_for(Duration::from_millis(gap_ms));
        reconnect(&mut sim, "n0003");
        sim.run_until(Duration::from_secs(60), |c| {
            all_at_count(c) && c.pods().filter(|p| p.metadata.is_deleting()).count() == 0
        })
        .unwrap_or_else(|e| {
            let c = sim.cache();
            let pods: Vec<String> = c
                .pods()
                .map(|p| {
                    format!(
                        "{} on {:?}: {:?} ready {} evicted {:?} deleting {}",
                        p.metadata.name,
                        p.node(),
                        p.status.phase,
                        p.status.is_ready(),
                        p.status.evicted_since(),
                        p.metadata.is_deleting()
                    )
                })
                .collect();
            panic!("gap {gap_ms} ms, report first {report_first}: {e}: {pods:#?}")
        });
        assert_eq!(
            running_on(&sim, "spread", &cut),
            before,
            "gap {gap_ms} ms, report first {report_first}: the copies that ran through the partition are kept"
        );
        assert!(per_site(&sim.cache(), "spread").values().all(|&n| n == 2));
    }
}
