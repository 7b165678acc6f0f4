//! Drains in the in-memory cluster, with the controller's default
//! durations and kubectl's retry interval: the same [`Drain`] machine
//! `outpostctl drain` runs, evicting through the same eviction check the
//! operator API uses.

use super::node::NodeSpec;
use super::testing::deployment;
use super::*;
use crate::api::pod::PodPhase;
use crate::drain::{self, Drain, DrainOptions, EvictResult, Line, PodId};
use outpost_proto::ErrorCode;

fn budget(name: &str, app: &str, min_available: usize) -> String {
    format!(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: {name}\nspec:\n  minAvailable: {min_available}\n  selector:\n    matchLabels: {{app: {app}}}\n"
    )
}

fn cluster(nodes: usize) -> Sim {
    let mut sim = Sim::standard(SimConfig::default());
    for i in 0..nodes {
        sim.add_node(NodeSpec::new(format!("n{i}"), format!("s{}", i % 2)));
    }
    sim.run_for(Duration::from_secs(1));
    sim
}

/// Ready pods of `app` not being deleted, per node.
fn ready_by_node(c: &Cache, app: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in c.pods() {
        if p.metadata.labels.get("app").map(String::as_str) == Some(app)
            && !p.metadata.is_deleting()
            && p.status.is_ready()
        {
            *m.entry(p.spec.node_name.clone()).or_insert(0) += 1;
        }
    }
    m
}

/// What a drain did.
struct Drained {
    lines: Vec<Line>,
    ok: bool,
    /// Each eviction the check allowed, with the cluster just before it.
    evictions: Vec<Evicted>,
}

struct Evicted {
    at: Time,
    /// Ready pods (not being deleted) of every app, per node.
    ready_before: BTreeMap<String, usize>,
    /// The pod's budget's `disruptionsAllowed` just before.
    allowed_before: i32,
}

/// Cordons `node` and drains it as `outpostctl drain` does; `watch` sees
/// the cache at every wake-up of the cluster.
fn run_drain(
    sim: &mut Sim,
    node: &str,
    opts: &DrainOptions,
    mut watch: impl FnMut(&Cache),
) -> Drained {
    sim.cordon(node, true);
    sim.run_for(Duration::from_millis(1));
    let mut lines = Vec::new();
    let pods: Vec<crate::api::Pod> = sim.cache().pods_on(node).map(|p| (**p).clone()).collect();
    let sel = drain::select(&pods, opts);
    if !sel.errors.is_empty() {
        let ok = drain::failure_summary(node, &sel.errors, &mut lines);
        return Drained {
            lines,
            ok,
            evictions: Vec::new(),
        };
    }
    let mut d = Drain::new(sel.pods, opts, sim.now);
    let mut evictions = Vec::new();
    let grace = opts.grace_period.map(i64::from);
    loop {
        for id in d.due(sim.now, &mut lines) {
            // The cache as of every write so far (the eviction before this
            // one included).
            sim.settle();
            let (ready_before, allowed_before) = {
                let c = sim.cache();
                let mut ready = BTreeMap::new();
                for p in c.pods() {
                    if !p.metadata.is_deleting() && p.status.is_ready() {
                        *ready.entry(p.spec.node_name.clone()).or_insert(0) += 1;
                    }
                }
                let allowed = c
                    .pod(&crate::api::ns_name(&id.namespace, &id.name))
                    .and_then(|p| {
                        c.pdbs_selecting(&id.namespace, &p.metadata.labels)
                            .first()
                            .map(|b| b.status.disruptions_allowed)
                    })
                    .unwrap_or(-1);
                (ready, allowed)
            };
            let r = match sim.evict(&id.namespace, &id.name, grace) {
                Ok(_) => {
                    evictions.push(Evicted {
                        at: sim.now,
                        ready_before,
                        allowed_before,
                    });
                    EvictResult::Evicted
                }
                Err(e) if e.code == ErrorCode::TooManyRequests => EvictResult::Retry(e.message),
                Err(e) if e.code == ErrorCode::NotFound => EvictResult::NotFound,
                Err(e) => EvictResult::Failed(e.message),
            };
            d.evicted(&id, r, sim.now, &mut lines);
        }
        if d.waiting_for_deletion() {
            let present: Vec<PodId> = sim.cache().pods_on(node).map(|p| PodId::of(p)).collect();
            d.observe(&present, sim.now, &mut lines);
        }
        let Some(wake) = d.next_wakeup(sim.now) else {
            break;
        };
        let wait = wake.since(sim.now).max(Duration::from_millis(1));
        // Not reaching the condition is the point: this only watches.
        let _ = sim.run_until(wait, |c| {
            watch(c);
            false
        });
    }
    let ok = d.summary(node, &mut lines);
    Drained {
        lines,
        ok,
        evictions,
    }
}

fn out(lines: &[Line]) -> Vec<&str> {
    lines
        .iter()
        .filter_map(|l| match l {
            Line::Out(s) => Some(s.as_str()),
            Line::Err(_) => None,
        })
        .collect()
}

fn err(lines: &[Line]) -> Vec<&str> {
    lines
        .iter()
        .filter_map(|l| match l {
            Line::Err(s) => Some(s.as_str()),
            Line::Out(_) => None,
        })
        .collect()
}

#[test]
fn a_drain_with_min_available_n_minus_1_evicts_one_at_a_time() {
    const N: usize = 9;
    let mut sim = cluster(3);
    sim.apply_yaml(&deployment("web", N)).unwrap();
    sim.apply_yaml(&budget("web", "web", N - 1)).unwrap();
    sim.run_until(Duration::from_secs(120), |c| {
        ready_by_node(c, "web").values().sum::<usize>() == N
            && c.pdb("default/web")
                .is_some_and(|b| b.status.disruptions_allowed == 1)
    })
    .unwrap();
    // Drain the node with the most replicas (9 over 3 nodes: at least 3).
    let before = ready_by_node(&sim.cache(), "web");
    let (target, on_target) = before
        .iter()
        .max_by_key(|(n, k)| (**k, std::cmp::Reverse((*n).clone())))
        .map(|(n, k)| (n.clone(), *k))
        .unwrap();
    assert!(on_target >= 3, "{before:?}");
    let elsewhere = N - on_target;
    let original: BTreeSet<String> = sim
        .cache()
        .pods_on(&target)
        .map(|p| p.metadata.uid.clone())
        .collect();
    let start = sim.now;
    let mut min_ready = usize::MAX;
    let mut new_on_target = BTreeSet::new();
    let d = run_drain(&mut sim, &target, &DrainOptions::default(), |c| {
        min_ready = min_ready.min(ready_by_node(c, "web").values().sum());
        for p in c.pods_on(&target) {
            if !original.contains(&p.metadata.uid) {
                new_on_target.insert(p.metadata.name.clone());
            }
        }
    });
    let took = sim.now.since(start);
    let gaps: Vec<Duration> = d
        .evictions
        .windows(2)
        .map(|w| w[1].at.since(w[0].at))
        .collect();
    println!(
        "drained {on_target} pods off {target} in {took:?} of cluster time; evictions at {:?} \
         after the start; fewest Ready pods during the drain {min_ready} of {N}",
        d.evictions
            .iter()
            .map(|e| e.at.since(start))
            .collect::<Vec<_>>()
    );
    assert!(d.ok, "{:?}", d.lines);
    let drained = format!("node/{target} drained");
    assert_eq!(out(&d.lines).last(), Some(&drained.as_str()));
    assert_eq!(d.evictions.len(), on_target);
    // Never more than one unavailable.
    assert_eq!(min_ready, N - 1);
    // The first try of all but one pod was refused, and retried after 5 s.
    let refusals = err(&d.lines);
    assert!(!refusals.is_empty());
    assert!(refusals.iter().all(|l| l.ends_with(
        "(will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget."
    )));
    // Each next eviction came only once the replacement of the one before
    // was Ready elsewhere: at the k-th eviction, k replacements were Ready
    // off the node on top of the pods that were there, and all N were.
    for (k, e) in d.evictions.iter().enumerate() {
        let away: usize = e
            .ready_before
            .iter()
            .filter(|(n, _)| **n != target)
            .map(|(_, k)| k)
            .sum();
        assert_eq!(away, elsewhere + k, "eviction {k}");
        assert_eq!(e.ready_before.values().sum::<usize>(), N, "eviction {k}");
        assert_eq!(e.allowed_before, 1, "eviction {k}");
    }
    // kubectl's retry interval spaces them.
    assert!(gaps.iter().all(|g| *g >= drain::EVICTION_RETRY), "{gaps:?}");
    // Every pod ends up Running elsewhere; the drained node got nothing.
    let c = sim.cache();
    let after = ready_by_node(&c, "web");
    assert_eq!(after.get(&target), None);
    assert_eq!(after.values().sum::<usize>(), N);
    assert!(c
        .pods()
        .all(|p| p.status.phase == PodPhase::Running && p.node() != Some(target.as_str())));
    assert!(
        new_on_target.is_empty(),
        "placed on the drained node: {new_on_target:?}"
    );
    assert_eq!(sim.node(&target).unwrap().pod_count(), 0);
    assert_eq!(
        c.pdb("default/web").unwrap().status.disruptions_allowed,
        1,
        "the budget is whole again"
    );
}

#[test]
fn a_budget_that_never_allows_times_the_drain_out() {
    let mut sim = cluster(2);
    sim.apply_yaml(&deployment("web", 2)).unwrap();
    sim.apply_yaml(&budget("web", "web", 2)).unwrap();
    sim.run_until(Duration::from_secs(60), |c| {
        ready_by_node(c, "web").values().sum::<usize>() == 2
            && c.pdb("default/web")
                .is_some_and(|b| b.status.observed_generation == 1)
    })
    .unwrap();
    let opts = DrainOptions {
        timeout: Some(Duration::from_secs(30)),
        ..DrainOptions::default()
    };
    let on_n0 = sim.cache().pods_on("n0").count();
    assert!(on_n0 >= 1);
    let start = sim.now;
    let d = run_drain(&mut sim, "n0", &opts, |_| {});
    assert!(!d.ok);
    assert!(d.evictions.is_empty());
    let took = sim.now.since(start);
    assert!(
        took >= Duration::from_secs(30) && took < Duration::from_secs(31),
        "{took:?}"
    );
    let e = err(&d.lines);
    // Each pod tried at 0, 5, ... 25 s: six refusals, then the timeout.
    let refusals = e
        .iter()
        .filter(|l| l.contains("will retry after 5s"))
        .count();
    assert_eq!(refusals, 6 * on_n0, "{e:?}");
    let last = e.last().unwrap();
    assert!(
        last.starts_with("error: error when evicting pods/")
            && last.contains("-n \"default\": global timeout reached: 30s"),
        "{last}"
    );
    assert_eq!(e[e.len() - 3], "There are pending nodes to be drained:");
    // Nothing was taken away; the node stays cordoned.
    assert_eq!(
        ready_by_node(&sim.cache(), "web").values().sum::<usize>(),
        2
    );
    assert!(sim.cache().node("n0").unwrap().unschedulable);
}

#[test]
fn pods_without_a_controller_need_force() {
    let mut sim = cluster(2);
    sim.apply_yaml(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bare\nspec:\n  nodeName: n0\n  containers:\n  - name: c\n    image: outpost/workload-http:dev\n",
    )
    .unwrap();
    sim.run_until(Duration::from_secs(30), |c| {
        c.pod("default/bare").is_some_and(|p| p.status.is_ready())
    })
    .unwrap();
    let d = run_drain(&mut sim, "n0", &DrainOptions::default(), |_| {});
    assert!(!d.ok);
    assert_eq!(
        err(&d.lines),
        [
            "error: unable to drain node \"n0\" due to error: cannot delete Pods that declare no controller (use --force to override): default/bare, continuing command...",
            "There are pending nodes to be drained:",
            " n0",
            "error: cannot delete Pods that declare no controller (use --force to override): default/bare",
        ]
    );
    assert!(sim.cache().pod("default/bare").is_some(), "nothing evicted");
    let forced = DrainOptions {
        force: true,
        ..DrainOptions::default()
    };
    let d = run_drain(&mut sim, "n0", &forced, |_| {});
    assert!(d.ok, "{:?}", d.lines);
    assert_eq!(
        out(&d.lines),
        [
            "evicting pod default/bare",
            "pod/bare evicted",
            "node/n0 drained"
        ]
    );
    assert!(sim.cache().pod("default/bare").is_none());
}
