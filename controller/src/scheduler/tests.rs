//! Scheduler tests: each plugin table-driven through the real control
//! loop, the queue's behaviour across calls, preemption and architecture
//! learning. Property tests live in `proptests.rs`.

use super::testing::*;
use super::{feasible_to_find, SchedulerConfig, Strategy};
use crate::api::pod::{
    Affinity, NodeAffinity, NodeSelectorOperator, NodeSelectorRequirement, NodeSelectorTerm,
    PodPhase, PreferredSchedulingTerm, TaintEffect, Toleration, TolerationOperator,
};
use crate::api::{Object, Pod, Resource};
use crate::registry::NodeRecord;
use crate::store::Store;
use outpost_proto::names::{ARCH_LABEL, HOSTNAME_LABEL, SITE_LABEL};
use outpost_proto::ConditionType;
use std::time::Duration;

/// Places `pod` among `nodes` with `placed` already bound; the node it
/// went to, or its failure message.
fn decide(nodes: &[NodeRecord], placed: &[Pod], pod: Pod) -> Result<String, String> {
    decide_with(nodes, placed, pod, SchedulerConfig::default())
}

fn decide_with(
    nodes: &[NodeRecord],
    placed: &[Pod],
    pod: Pod,
    cfg: SchedulerConfig,
) -> Result<String, String> {
    let mut c = Cluster::new(nodes, cfg);
    put_pods(c.store.as_ref(), placed);
    let name = pod.metadata.name.clone();
    put_pods(c.store.as_ref(), &[pod]);
    c.settle();
    c.node_of(&name).ok_or_else(|| c.message(&name))
}

fn tolerate(mut p: Pod, key: &str) -> Pod {
    p.spec.tolerations.push(Toleration {
        key: key.into(),
        operator: TolerationOperator::Exists,
        value: String::new(),
        effect: None,
        toleration_seconds: None,
    });
    p
}

fn select(mut p: Pod, k: &str, v: &str) -> Pod {
    p.spec.node_selector.insert(k.into(), v.into());
    p
}

fn cordoned(mut n: NodeRecord) -> NodeRecord {
    n.unschedulable = true;
    n
}

fn not_ready(mut n: NodeRecord) -> NodeRecord {
    n.ready = Some(ready(false));
    n
}

fn arch(mut n: NodeRecord, a: &str) -> NodeRecord {
    n.info.arch = a.into();
    n
}

fn site(n: NodeRecord, s: &str) -> NodeRecord {
    with_label(n, SITE_LABEL, s)
}

#[test]
fn feasible_node_sampling_follows_kubernetes() {
    for (all, want) in [
        (0, 0),
        (50, 50),
        (100, 100),
        (200, 100),
        (1_000, 420),
        (3_000, 780),
        (5_000, 500),
        (20_000, 1_000),
    ] {
        assert_eq!(feasible_to_find(all, None), want, "{all} nodes");
    }
    assert_eq!(feasible_to_find(1_000, Some(100)), 1_000);
}

#[test]
fn filters_pick_the_only_node_that_passes() {
    let web = |p: Pod| labelled(p, "app", "web");
    type Case = (&'static str, Vec<NodeRecord>, Vec<Pod>, Pod, &'static str);
    let cases: Vec<Case> = vec![
        (
            "cordoned node skipped",
            vec![cordoned(node("n1")), node("n2")],
            vec![],
            pod("p", 100, 64),
            "n2",
        ),
        (
            "cordon tolerated",
            vec![cordoned(node("n1"))],
            vec![],
            tolerate(pod("p", 100, 64), "node.kubernetes.io/unschedulable"),
            "n1",
        ),
        (
            "not ready skipped",
            vec![not_ready(node("n1")), node("n2")],
            vec![],
            pod("p", 100, 64),
            "n2",
        ),
        (
            "pressure taint",
            vec![
                with_pressure(node("n1"), ConditionType::DiskPressure),
                node("n2"),
            ],
            vec![],
            pod("p", 100, 64),
            "n2",
        ),
        (
            "pressure tolerated",
            vec![with_pressure(node("n1"), ConditionType::MemoryPressure)],
            vec![],
            tolerate(pod("p", 100, 64), "node.outpost.dev/memory-pressure"),
            "n1",
        ),
        (
            "node selector",
            vec![site(node("n1"), "b"), site(node("n2"), "a")],
            vec![],
            select(pod("p", 100, 64), SITE_LABEL, "a"),
            "n2",
        ),
        (
            "image arch inferred",
            vec![
                with_image(arch(node("n1"), "arm64"), "app:1", "arm64", 10 * MI),
                node("n2"),
            ],
            vec![],
            pod("p", 100, 64),
            "n1",
        ),
        (
            "explicit arch wins",
            vec![
                with_image(arch(node("n1"), "arm64"), "app:1", "arm64", 10 * MI),
                node("n2"),
            ],
            vec![],
            select(pod("p", 100, 64), ARCH_LABEL, "amd64"),
            "n2",
        ),
        (
            "unknown image runs anywhere",
            vec![arch(node("n1"), "arm64")],
            vec![],
            pod("p", 100, 64),
            "n1",
        ),
        (
            "host port taken",
            vec![node("n1"), node("n2")],
            vec![bound(host_port(pod("a", 10, 1), 80), "n1")],
            host_port(pod("p", 10, 1), 80),
            "n2",
        ),
        (
            "cpu",
            vec![node("n1"), node("n2")],
            vec![bound(pod("a", 3900, 1), "n1")],
            pod("p", 200, 1),
            "n2",
        ),
        (
            "memory",
            vec![node("n1"), node("n2")],
            vec![bound(pod("a", 1, 8000), "n2")],
            pod("p", 1, 500),
            "n1",
        ),
        (
            "terminal pods free their room",
            vec![node("n1")],
            vec![{
                let mut a = bound(pod("a", 4000, 1), "n1");
                a.status.phase = PodPhase::Succeeded;
                a
            }],
            pod("p", 1000, 1),
            "n1",
        ),
        (
            "anti-affinity per host",
            vec![node("n1"), node("n2")],
            vec![bound(web(pod("a", 1, 1)), "n1")],
            anti_affinity(web(pod("p", 1, 1)), "app", "web", HOSTNAME_LABEL),
            "n2",
        ),
        (
            "anti-affinity per site",
            vec![
                site(node("n1"), "a"),
                site(node("n2"), "a"),
                site(node("n3"), "b"),
            ],
            vec![bound(web(pod("a", 1, 1)), "n1")],
            anti_affinity(web(pod("p", 1, 1)), "app", "web", SITE_LABEL),
            "n3",
        ),
        (
            "existing pod's anti-affinity repels",
            vec![node("n1"), node("n2")],
            vec![bound(
                anti_affinity(pod("a", 1, 1), "app", "web", HOSTNAME_LABEL),
                "n1",
            )],
            web(pod("p", 1, 1)),
            "n2",
        ),
        (
            "affinity",
            vec![node("n1"), node("n2")],
            vec![bound(labelled(pod("a", 1, 1), "app", "db"), "n2")],
            affinity(pod("p", 1, 1), "app", "db", HOSTNAME_LABEL),
            "n2",
        ),
        (
            "first of its group",
            vec![node("n1")],
            vec![],
            affinity(web(pod("p", 1, 1)), "app", "web", HOSTNAME_LABEL),
            "n1",
        ),
        (
            "spread DoNotSchedule",
            vec![site(node("n1"), "a"), site(node("n2"), "b")],
            vec![
                bound(web(pod("a", 1, 1)), "n1"),
                bound(web(pod("b", 1, 1)), "n1"),
            ],
            spread(web(pod("p", 1, 1)), "app", "web", SITE_LABEL, 1, true),
            "n2",
        ),
        (
            "spread within the selected nodes",
            vec![
                site(with_label(node("n1"), "disk", "ssd"), "a"),
                site(with_label(node("n2"), "disk", "ssd"), "b"),
                site(node("n3"), "c"),
            ],
            vec![bound(web(pod("a", 1, 1)), "n1")],
            select(
                spread(web(pod("p", 1, 1)), "app", "web", SITE_LABEL, 1, true),
                "disk",
                "ssd",
            ),
            "n2",
        ),
    ];
    for (name, nodes, placed, p, want) in cases {
        assert_eq!(decide(&nodes, &placed, p), Ok(want.to_string()), "{name}");
    }
}

#[test]
fn failure_messages_name_the_first_filter_per_node() {
    let one = |n: NodeRecord, placed: Vec<Pod>, p: Pod| decide(&[n], &placed, p).unwrap_err();
    let cases: Vec<(String, &str)> = vec![
        (one(cordoned(node("n1")), vec![], pod("p", 1, 1)), "0/1 nodes are available: 1 node(s) were unschedulable."),
        (one(not_ready(node("n1")), vec![], pod("p", 1, 1)), "0/1 nodes are available: 1 node(s) were not ready."),
        (one(with_pressure(node("n1"), ConditionType::DiskPressure), vec![], pod("p", 1, 1)), "0/1 nodes are available: 1 node(s) had untolerated taint {node.outpost.dev/disk-pressure: }."),
        (one(node("n1"), vec![], select(pod("p", 1, 1), "disk", "ssd")), "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."),
        (one(with_image(node("n1"), "app:1", "arm64", MI), vec![], pod("p", 1, 1)), "0/1 nodes are available: 1 node(s) didn't match the image's architecture (arm64)."),
        (one(node("n1"), vec![], pod("p", 5000, 1)), "0/1 nodes are available: 1 Insufficient cpu."),
        (one(node("n1"), vec![bound(host_port(pod("a", 1, 1), 53), "n1")], host_port(pod("p", 1, 1), 53)), "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports."),
        (one(node("n1"), (0..110).map(|i| bound(pod(&format!("a{i}"), 0, 0), "n1")).collect(), pod("p", 1, 1)), "0/1 nodes are available: 1 Too many pods."),
        (one(node("n1"), vec![bound(labelled(pod("a", 1, 1), "app", "web"), "n1")], anti_affinity(pod("p", 1, 1), "app", "web", HOSTNAME_LABEL)), "0/1 nodes are available: 1 node(s) didn't match pod anti-affinity rules."),
        (one(node("n1"), vec![bound(anti_affinity(pod("a", 1, 1), "app", "web", HOSTNAME_LABEL), "n1")], labelled(pod("p", 1, 1), "app", "web")), "0/1 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity rules."),
        (one(node("n1"), vec![], affinity(pod("p", 1, 1), "app", "db", HOSTNAME_LABEL)), "0/1 nodes are available: 1 node(s) didn't match pod affinity rules."),
        (one(node("n1"), vec![], spread(pod("p", 1, 1), "app", "web", "topology.kubernetes.io/zone", 1, true)), "0/1 nodes are available: 1 node(s) didn't match pod topology spread constraints (missing required label)."),
    ];
    for (got, want) in cases {
        assert_eq!(got, want);
    }
    // Counted per reason, most frequent first.
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(site(node(&format!("mem{i}")), "a"));
    }
    for i in 0..4 {
        nodes.push(site(
            with_pressure(node(&format!("disk{i}")), ConditionType::DiskPressure),
            "a",
        ));
    }
    for i in 0..5 {
        nodes.push(site(node(&format!("other{i}")), "b"));
    }
    let placed: Vec<Pod> = (0..3)
        .map(|i| bound(pod(&format!("big{i}"), 1, 8000), &format!("mem{i}")))
        .collect();
    let got = decide(&nodes, &placed, select(pod("p", 1, 1000), SITE_LABEL, "a")).unwrap_err();
    assert_eq!(
        got,
        "0/12 nodes are available: 5 node(s) didn't match Pod's node affinity/selector, 4 node(s) had untolerated taint {node.outpost.dev/disk-pressure: }, 3 Insufficient memory."
    );
}

#[test]
fn scores_prefer_the_right_node() {
    let half = vec![bound(pod("a", 2000, 4096), "n1")];
    let two = [node("n1"), node("n2")];
    assert_eq!(
        decide(&two, &half, pod("p", 500, 512)),
        Ok("n2".into()),
        "least allocated"
    );
    let most = SchedulerConfig {
        strategy: Strategy::MostAllocated,
        ..SchedulerConfig::default()
    };
    assert_eq!(
        decide_with(&two, &half, pod("p", 500, 512), most.clone()),
        Ok("n1".into()),
        "most allocated"
    );
    let image = [
        node("n1"),
        with_image(node("n2"), "app:1", "amd64", 800 * MI),
        node("n3"),
    ];
    assert_eq!(
        decide(&image, &[], pod("p", 100, 64)),
        Ok("n2".into()),
        "image locality"
    );
    let mut p = pod("p", 100, 64);
    p.spec.affinity = Some(Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: None,
            preferred_during_scheduling_ignored_during_execution: vec![PreferredSchedulingTerm {
                weight: 50,
                preference: NodeSelectorTerm {
                    match_expressions: vec![NodeSelectorRequirement {
                        key: SITE_LABEL.into(),
                        operator: NodeSelectorOperator::In,
                        values: vec!["b".into()],
                    }],
                },
            }],
        }),
        ..Affinity::default()
    });
    assert_eq!(
        decide(&[site(node("n1"), "a"), site(node("n2"), "b")], &[], p),
        Ok("n2".into()),
        "preferred node affinity"
    );
    // Soft spread beats packing: controlled pods spread over sites even
    // under MostAllocated, bare ones pile up.
    let sites = [site(node("n1"), "a"), site(node("n2"), "b")];
    let web = |n: &str| owned(labelled(pod(n, 1000, 1024), "app", "web"), "web-rs");
    assert_eq!(
        decide_with(&sites, &[bound(web("a"), "n1")], web("p"), most.clone()),
        Ok("n2".into()),
        "default spread"
    );
    let bare = |n: &str| pod(n, 1000, 1024);
    assert_eq!(
        decide_with(&sites, &[bound(bare("a"), "n1")], bare("p"), most),
        Ok("n1".into()),
        "bare pods pack"
    );
}

#[test]
fn decisions_in_one_call_see_each_other() {
    let mut c = Cluster::new(&[node("n1")], SchedulerConfig::default());
    put_pods(
        c.store.as_ref(),
        &[pod("a", 1500, 1), pod("b", 1500, 1), pod("c", 1500, 1)],
    );
    c.settle();
    let placed = ["a", "b", "c"]
        .iter()
        .filter(|n| c.node_of(n).is_some())
        .count();
    assert_eq!(placed, 2);
    let left = ["a", "b", "c"]
        .into_iter()
        .find(|n| c.node_of(n).is_none())
        .unwrap();
    assert_eq!(
        c.message(left),
        "0/1 nodes are available: 1 Insufficient cpu."
    );
}

#[test]
fn control_plane_binds_parks_and_unparks_without_timers() {
    let nodes = [node("n1"), cordoned(node("n2"))];
    let mut c = Cluster::new(&nodes, SchedulerConfig::default());
    let pods: Vec<Pod> = (0..6).map(|i| pod(&format!("p{i}"), 500, 64)).collect();
    put_pods(c.store.as_ref(), &pods);
    c.settle();
    for i in 0..6 {
        let p = c.pod(&format!("p{i}"));
        assert_eq!(p.node(), Some("n1"), "the cordoned node gets nothing");
        let cond = p.status.condition(crate::api::pod::POD_SCHEDULED).unwrap();
        assert_eq!(
            (cond.reason.as_str(), cond.status),
            ("Scheduled", crate::api::meta::ConditionStatus::True)
        );
    }
    let events = c.event_list();
    assert!(events.iter().any(|(r, o, m)| r == "Scheduled"
        && o == "pod/p0"
        && m == "Successfully assigned default/p0 to n1"));
    // n1 has 1000m left: an impossible request and one that waits for room.
    put_pods(
        c.store.as_ref(),
        &[pod("huge", 64_000, 64), pod("later", 1500, 64)],
    );
    c.settle();
    assert_eq!(
        c.message("huge"),
        "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) were unschedulable."
    );
    assert_eq!(c.node_of("later"), None);
    let failed = |c: &Cluster| {
        c.event_list()
            .iter()
            .filter(|(r, o, _)| r == "FailedScheduling" && o == "pod/later")
            .count()
    };
    assert_eq!(failed(&c), 1);
    // Time passes with nothing happening: no retries (the next wake-up is
    // the five-minute flush), no new writes.
    let rev = c.store.revision();
    c.now = c.now.plus(Duration::from_secs(30));
    c.settle();
    assert_eq!(
        c.store.revision(),
        rev,
        "nothing written while nothing changed"
    );
    let wake = c.plane.next_wakeup().unwrap();
    assert!(
        wake >= c.now.plus(Duration::from_secs(200)),
        "no timer at a high rate: {wake:?} vs {:?}",
        c.now
    );
    // Freeing room moves the parked pod at once, without the clock moving.
    let victim = c.pod("p0");
    c.store.delete(&victim.key()).unwrap();
    c.settle();
    assert_eq!(c.node_of("later").as_deref(), Some("n1"));
    assert_eq!(c.node_of("huge"), None);
    assert_eq!(failed(&c), 1, "the message did not change: one event");
    // Uncordoning is an event too.
    c.settle();
    let mut n2 = node("n2");
    n2.unschedulable = false;
    put_node(c.store.as_ref(), &n2);
    put_pods(c.store.as_ref(), &[pod("more", 1500, 64)]);
    c.settle();
    assert_eq!(c.node_of("more").as_deref(), Some("n2"));
}

#[test]
fn a_failed_binding_is_undone_and_retried() {
    use crate::cache::Cache;
    use crate::controllers::plane::Scheduling;
    use crate::controllers::Write;
    let store = crate::store::mem::MemStore::new();
    put_node(&store, &node("n1"));
    put_pods(&store, &[pod("a", 3000, 1)]);
    let cache = Cache::load(&store).unwrap();
    let mut s = super::Scheduler::new(SchedulerConfig::default());
    let now = crate::api::Time(10_000);
    s.resync(&cache, now);
    let writes = s.schedule(&cache, now);
    let binding = writes
        .iter()
        .find(|w| matches!(w, Write::Update(Object::Pod(p)) if p.node().is_some()))
        .unwrap();
    let slot = s.snapshot().slot_of("n1").unwrap();
    assert_eq!(
        s.snapshot().node(slot).unwrap().requested.cpu_millis,
        3000,
        "assumed at once"
    );
    s.written(binding, false, now);
    assert_eq!(
        s.snapshot().node(slot).unwrap().requested.cpu_millis,
        0,
        "assumption undone"
    );
    assert_eq!(s.pending(), 1);
    assert!(s.schedule(&cache, now).is_empty(), "backing off");
    let later = now.plus(Duration::from_secs(1));
    assert_eq!(s.next_wakeup(), Some(later));
    let again = s.schedule(&cache, later);
    let binding = again
        .iter()
        .find(|w| matches!(w, Write::Update(_)))
        .unwrap();
    s.written(binding, true, later);
    assert_eq!(s.pending(), 0);
    assert_eq!(s.snapshot().node(slot).unwrap().requested.cpu_millis, 3000);
}

#[test]
fn preemption_evicts_only_lower_priority_and_holds_the_room() {
    let prio = |mut p: Pod, v: i32| {
        p.spec.priority = Some(v);
        p
    };
    let mut c = Cluster::new(&[node("n1")], SchedulerConfig::default());
    put_pods(
        c.store.as_ref(),
        &[
            bound(prio(pod("low", 1000, 1), 0), "n1"),
            bound(prio(pod("mid", 2000, 1), 50), "n1"),
            bound(prio(pod("peer", 500, 1), 100), "n1"),
        ],
    );
    c.settle();
    put_pods(c.store.as_ref(), &[prio(pod("vip", 2000, 1), 100)]);
    c.settle();
    // Evicting mid alone makes room (low is reprieved); peer has the same
    // priority and is never a victim.
    assert!(c.pod("mid").metadata.is_deleting());
    assert!(!c.pod("low").metadata.is_deleting());
    assert!(!c.pod("peer").metadata.is_deleting());
    assert_eq!(c.pod("vip").status.nominated_node_name, "n1");
    let events = c.event_list();
    assert!(events.iter().any(|(r, o, m)| r == "Preempted"
        && o == "pod/mid"
        && m == "Preempted by default/vip on node n1"));
    assert!(events
        .iter()
        .any(|(r, o, _)| r == "Preempted" && o == "pod/vip"));
    // While mid terminates, a low-priority newcomer cannot take vip's room.
    put_pods(c.store.as_ref(), &[prio(pod("sneak", 400, 1), 0)]);
    c.settle();
    assert_eq!(c.node_of("sneak"), None);
    assert_eq!(c.purge_terminating(), 1);
    c.settle();
    c.advance(Duration::from_secs(10));
    assert_eq!(c.node_of("vip").as_deref(), Some("n1"));
    assert_eq!(c.pod("vip").status.nominated_node_name, "");
    // A pod that may not preempt just waits.
    let mut never = prio(pod("never", 3000, 1), 1000);
    never.spec.preemption_policy = Some(crate::api::pod::PreemptionPolicy::Never);
    put_pods(c.store.as_ref(), &[never]);
    c.settle();
    assert!(!c.pod("low").metadata.is_deleting());
    assert_eq!(c.node_of("never"), None);
}

#[test]
fn exec_format_errors_teach_the_architecture() {
    let nodes = [arch(node("arm"), "arm64"), node("x86")];
    let mut c = Cluster::new(&nodes, SchedulerConfig::default());
    // A pod that ran on the amd64 node and failed: its binary is not amd64.
    let mut failed = owned(bound(pod("old", 100, 64), "x86"), "web-rs");
    failed.status.phase = PodPhase::Failed;
    failed.status.reason = super::arch::EXEC_FORMAT_ERROR.into();
    put_pods(c.store.as_ref(), &[bound(pod("filler", 0, 0), "arm")]);
    c.settle();
    put_pods(c.store.as_ref(), &[failed]);
    c.settle();
    let warned = c
        .event_list()
        .into_iter()
        .find(|(r, o, _)| r == "ExecFormatError" && o == "pod/old");
    let (_, _, msg) = warned.expect("a warning on the failed pod");
    assert!(msg.contains("app:1") && msg.contains("amd64"), "{msg}");
    // The replacement (and every later pod of that image) avoids amd64,
    // even though the amd64 node is emptier.
    for i in 0..3 {
        let name = format!("new{i}");
        put_pods(c.store.as_ref(), &[owned(pod(&name, 100, 64), "web-rs")]);
        c.settle();
        assert_eq!(c.node_of(&name).as_deref(), Some("arm"));
    }
    // Another image is unaffected.
    let mut other = pod("other", 100, 64);
    other.spec.containers[0].image = "db:1".into();
    put_pods(c.store.as_ref(), &[other]);
    c.settle();
    assert_eq!(c.node_of("other").as_deref(), Some("x86"));
}

#[test]
fn taint_effects_and_tolerations() {
    // NoExecute taints filter like NoSchedule; a toleration with the
    // wrong effect does not help.
    let mut p = pod("p", 1, 1);
    p.spec.tolerations.push(Toleration {
        key: "node.kubernetes.io/unreachable".into(),
        operator: TolerationOperator::Exists,
        value: String::new(),
        effect: Some(TaintEffect::NoSchedule),
        toleration_seconds: None,
    });
    let mut n = node("n1");
    n.info.runtime.available = false;
    assert_eq!(
        decide(&[n], &[], p),
        Err("0/1 nodes are available: 1 node(s) had untolerated taint {node.outpost.dev/runtime-unavailable: }.".into())
    );
}
