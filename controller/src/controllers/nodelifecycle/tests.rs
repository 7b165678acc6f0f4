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
    // Ready again: the controller writes nothing itself; the agent's next
    // report makes the pods ready.
    h.set_node_ready("n1", true);
    let r = h.step();
    assert_eq!(r.writes, 0, "nothing but the node changed in this step");
    h.settle();
    assert!(h.cache().pods().all(|p| p.status.is_ready()));
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
