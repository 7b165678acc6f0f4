use super::*;
use crate::api::pod::PodPhase;
use crate::controllers::testing::{self, cluster};

fn condition_of(p: &Pod, kind: &str) -> (ConditionStatus, String) {
    let c = p.status.condition(kind).expect("condition");
    (c.status, c.reason.clone())
}

#[test]
fn pods_of_a_node_that_is_not_ready_are_marked_not_ready() {
    let mut h = cluster(2);
    h.create(testing::replicaset("web", 4, "web:1"));
    h.settle();
    h.set_node_ready("n1", false);
    h.settle();
    let cache = h.cache();
    let mut on_n1 = 0;
    for p in cache.pods() {
        let ready = condition_of(p, POD_READY);
        let containers = condition_of(p, CONTAINERS_READY);
        if p.spec.node_name == "n1" {
            on_n1 += 1;
            let want = (ConditionStatus::False, NODE_NOT_READY.to_string());
            assert_eq!(ready, want);
            assert_eq!(containers, want);
            // Still running as far as anyone knows: only readiness changes.
            assert_eq!(p.status.phase, PodPhase::Running);
        } else {
            assert_eq!(ready.0, ConditionStatus::True);
        }
    }
    drop(cache);
    assert_eq!(on_n1, 2);
    let events = h.events(NODE_NOT_READY);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].object, "node/n1");
    assert!(
        events[0].message.contains("marked 2 pods"),
        "{}",
        events[0].message
    );
    assert_eq!(h.idle_writes(5), 0, "marked once");
    // Ready again: every pod is ready again (this harness's agent reports
    // everything anew; a real one sends only changes, and then the
    // controller lifts its own mark from the last report), written once.
    h.set_node_ready("n1", true);
    h.settle();
    assert!(h.cache().pods().all(|p| p.status.is_ready()));
    assert_eq!(h.idle_writes(5), 0, "lifted once");
}

#[test]
fn only_a_mark_over_a_ready_report_is_lifted() {
    use crate::api::pod::ContainerStatus;
    let mut p = Pod::default();
    p.status.phase = PodPhase::Running;
    p.status.container_statuses = vec![
        ContainerStatus {
            name: "a".into(),
            ready: true,
            ..Default::default()
        },
        ContainerStatus {
            name: "b".into(),
            ready: true,
            ..Default::default()
        },
    ];
    for kind in [POD_READY, CONTAINERS_READY] {
        p.status
            .set_condition(kind, ConditionStatus::False, NODE_NOT_READY, "", Time(1));
    }
    assert!(marked_over_report(&p));
    // The node said a container is not ready: that stands.
    let mut q = p.clone();
    q.status.container_statuses[1].ready = false;
    assert!(!marked_over_report(&q));
    // Not running, or no containers reported: nothing to lift to.
    let mut q = p.clone();
    q.status.phase = PodPhase::Unknown;
    assert!(!marked_over_report(&q));
    let mut q = p.clone();
    q.status.container_statuses.clear();
    assert!(!marked_over_report(&q));
    // Not ready for the node's own reason (its report): not our mark.
    let mut q = p.clone();
    for kind in [POD_READY, CONTAINERS_READY] {
        q.status.set_condition(
            kind,
            ConditionStatus::False,
            "ContainersNotReady",
            "",
            Time(2),
        );
    }
    assert!(!marked_over_report(&q));
}

#[test]
fn pods_that_never_reported_or_finished_are_left_alone() {
    let mut h = cluster(1);
    h.set_image("quiet:1", testing::Behaviour::Silent);
    h.create(testing::replicaset("quiet", 1, "quiet:1"));
    h.settle();
    h.set_node_ready("n1", false);
    h.settle();
    let cache = h.cache();
    let p = cache.pods().next().expect("the pod");
    assert!(p.status.condition(POD_READY).is_none());
    assert!(h.events(NODE_NOT_READY).is_empty());
}

fn taint(key: &str, since_ms: u64) -> outpost_proto::Taint {
    outpost_proto::Taint {
        key: key.into(),
        effect: outpost_proto::TaintEffect::NoExecute,
        since_ms,
    }
}

fn toleration(key: &str, seconds: Option<i64>) -> crate::api::pod::Toleration {
    crate::api::pod::Toleration {
        key: key.into(),
        operator: crate::api::pod::TolerationOperator::Exists,
        value: String::new(),
        effect: Some(TaintEffect::NoExecute),
        toleration_seconds: seconds,
    }
}

#[test]
fn eviction_time_follows_the_taint_manager() {
    let d = DefaultTolerations::default();
    let unreachable = [taint(UNREACHABLE_TAINT, 10_000)];
    let mut p = Pod::default();
    // No toleration at all (stored before defaults): the default 60 s.
    assert_eq!(eviction_time(&p, &unreachable, &d), Some(Time(70_000)));
    // Its own seconds win; the shortest of several matching.
    p.spec.tolerations = vec![
        toleration(UNREACHABLE_TAINT, Some(300)),
        toleration("", Some(5)),
    ];
    assert_eq!(eviction_time(&p, &unreachable, &d), Some(Time(15_000)));
    // Tolerated without seconds: never.
    p.spec.tolerations = vec![toleration(UNREACHABLE_TAINT, None)];
    assert_eq!(eviction_time(&p, &unreachable, &d), None);
    // A NoExecute taint it does not tolerate: at once (when it appeared).
    let other = [
        taint(UNREACHABLE_TAINT, 10_000),
        taint("example.com/broken", 12_000),
    ];
    assert_eq!(eviction_time(&p, &other, &d), Some(Time(12_000)));
    // NoSchedule taints never evict.
    let mut soft = taint("example.com/soft", 0);
    soft.effect = outpost_proto::TaintEffect::NoSchedule;
    assert_eq!(eviction_time(&Pod::default(), &[soft], &d), None);
    // Negative seconds count as zero.
    p.spec.tolerations = vec![toleration(UNREACHABLE_TAINT, Some(-5))];
    assert_eq!(eviction_time(&p, &unreachable, &d), Some(Time(10_000)));
}

#[test]
fn a_node_that_says_it_is_not_ready_has_its_pods_replaced_after_the_toleration() {
    let mut h = cluster(2);
    h.create(testing::replicaset("web", 2, "web:1"));
    h.settle();
    let mut rec = h.node_record("n1").expect("n1");
    rec.conditions.push(outpost_proto::Condition {
        kind: outpost_proto::ConditionType::Ready,
        status: outpost_proto::ConditionStatus::False,
        reason: "ContainerRuntimeDown".into(),
        message: "the container runtime does not answer".into(),
        last_transition_ms: h.now.ms(),
    });
    h.put_node(&rec);
    h.settle();
    assert!(rec
        .taints()
        .iter()
        .any(|t| t.key == crate::registry::NOT_READY_TAINT));
    assert_eq!(
        h.cache().pods().count(),
        2,
        "nothing replaced before the toleration"
    );
    h.advance(Duration::from_secs(61));
    h.settle();
    let cache = h.cache();
    let on_n1: Vec<_> = cache.pods_on("n1").collect();
    assert_eq!(on_n1.len(), 1);
    let p = on_n1[0];
    assert!(p.status.evicted_since().is_some());
    // Heard from, so not Unknown: only counted out.
    assert_ne!(p.status.phase, PodPhase::Unknown);
    assert_eq!(cache.pods().count(), 3, "a replacement on the other node");
    assert_eq!(cache.pods_on("n2").count(), 2);
}
