use super::*;
use crate::api::meta::ConditionStatus;
use crate::api::pod::{ContainerStatus, PodCondition, POD_READY};
use crate::api::PriorityClass;
use crate::controllers::testing::{self, cluster, Behaviour, Harness};
use crate::store::mem::MemStore;
use crate::store::{Op, Store, Txn};

fn scale(h: &mut Harness, name: &str, n: i32) {
    h.update(Kind::ReplicaSet, "default", name, |o| {
        if let Object::ReplicaSet(rs) = o {
            rs.spec.replicas = n;
        }
    });
}

fn key(p: &Pod) -> String {
    format!("default/{}", p.metadata.name)
}

#[test]
fn scales_up_and_down_and_keeps_status() {
    let mut h = cluster(3);
    h.create(testing::replicaset("web", 0, "web:1"));
    h.settle();
    assert!(h.active_pods("web").is_empty());
    for n in [5usize, 2, 0] {
        scale(&mut h, "web", i32::try_from(n).unwrap());
        h.settle();
        let pods = h.active_pods("web");
        assert_eq!(pods.len(), n, "scaled to {n}");
        // Scaled-down pods are gone for good, not just marked.
        assert_eq!(testing::object_count(&h.store, Kind::Pod), n);
        let rs = h.replicaset("web");
        let want = i32::try_from(n).unwrap();
        assert_eq!(
            (
                rs.status.replicas,
                rs.status.fully_labeled_replicas,
                rs.status.ready_replicas,
                rs.status.available_replicas,
            ),
            (want, want, want, want)
        );
        assert_eq!(rs.status.observed_generation, rs.metadata.generation);
        for p in &pods {
            assert!(p.metadata.name.starts_with("web-"), "{}", p.metadata.name);
            assert_eq!(p.metadata.generate_name, "web-");
            assert_eq!(p.metadata.namespace, "default");
            assert_eq!(p.metadata.labels, rs.spec.template.metadata.labels);
            assert_eq!(p.metadata.owner_references, vec![controller_ref(&rs)]);
            assert!(p.node().is_some() && p.status.is_ready());
            // Admitted: no classes, so no priority (0).
            assert_eq!(p.priority(), 0);
        }
    }
    assert!(!h.events("SuccessfulCreate").is_empty());
    assert!(!h.events("SuccessfulDelete").is_empty());
    assert_eq!(h.idle_writes(5), 0);
}

#[test]
fn creation_starts_slow_and_doubles() {
    let mut h = cluster(2);
    h.create(testing::replicaset("web", 20, "web:1"));
    let mut counts = vec![0usize];
    h.settle_checking(|h| {
        let n = testing::object_count(&h.store, Kind::Pod);
        if counts.last() != Some(&n) {
            counts.push(n);
        }
    });
    // One pod first, then never more than one more than run or wait for
    // a node: 1, 2, ... up to the rest.
    assert_eq!(counts[..3], [0, 1, 3]);
    for w in counts.windows(2) {
        assert!(w[1] <= 2 * w[0] + 1, "{counts:?}");
    }
    assert_eq!(counts.last(), Some(&20));
}

#[test]
fn a_template_that_fails_at_once_does_not_flood_the_store() {
    let mut h = cluster(2);
    h.set_image("bad:1", Behaviour::Fail("ExecFormatError".into()));
    h.create(testing::replicaset("web", 50, "bad:1"));
    let (mut most, mut most_active) = (0, 0);
    for _ in 0..100 {
        h.step();
        most = most.max(testing::object_count(&h.store, Kind::Pod));
        most_active = most_active.max(h.active_pods("web").len());
    }
    // About one pod at a time is tried (plus the failed ones on their way
    // out), not the 50 the ReplicaSet wants.
    eprintln!("at most {most_active} pods in flight, {most} in the store");
    assert!(most_active <= 6, "{most_active} pods in flight");
    assert!(most <= 8, "{most} pods at once");
    let replaced = h.events("SuccessfulDelete");
    assert!(replaced.len() > 5);
    assert!(
        replaced[0].message.contains("ExecFormatError"),
        "{}",
        replaced[0].message
    );
}

#[test]
fn pods_no_node_can_take_are_all_created() {
    // No node at all: every pod waits for one, where the scheduler (and
    // an autoscaler) can see it.
    let mut h = Harness::new();
    h.create(testing::replicaset("web", 40, "web:1"));
    let steps = h.settle();
    assert_eq!(h.active_pods("web").len(), 40);
    assert!(steps < 12, "{steps} steps");
    assert!(h.active_pods("web").iter().all(|p| p.node().is_none()));
}

#[test]
fn deleted_and_failed_pods_are_replaced() {
    let mut h = cluster(3);
    h.create(testing::replicaset("web", 3, "web:1"));
    h.settle();
    let before = h.active_pods("web");
    // An operator deletes one: it stops on its node, goes, and a new one
    // takes its place.
    let gone = before[0].metadata.name.clone();
    h.delete(Kind::Pod, "default", &gone);
    h.settle();
    let after = h.active_pods("web");
    assert_eq!(after.len(), 3);
    assert!(h.get(Kind::Pod, "default", &gone).is_none());
    // A pod that failed for good (wrong architecture, eviction) is deleted
    // and replaced.
    for reason in ["ExecFormatError", "Evicted"] {
        let victim = h.active_pods("web")[0].clone();
        h.set_pod(&key(&victim), Behaviour::Fail(reason.into()));
        h.settle();
        assert!(
            h.get(Kind::Pod, "default", &victim.metadata.name).is_none(),
            "{reason}"
        );
        let now = h.active_pods("web");
        assert_eq!(now.len(), 3);
        assert!(now.iter().all(|p| p.status.is_ready()));
        assert!(h
            .events("SuccessfulDelete")
            .iter()
            .any(|e| e.message.contains(reason) && e.message.contains(&victim.metadata.name)));
    }
}

#[test]
fn adopts_matching_orphans_but_not_pods_of_another_controller() {
    let mut h = cluster(2);
    let Object::ReplicaSet(rs) = testing::replicaset("web", 2, "web:1") else {
        unreachable!()
    };
    let mut orphan = pod_from_template(&rs);
    orphan.metadata.owner_references.clear();
    orphan.metadata.generate_name.clear();
    orphan.metadata.name = "hand-made".into();
    let mut foreign = orphan.clone();
    foreign.metadata.name = "someone-elses".into();
    foreign.metadata.owner_references.push(OwnerReference {
        api_version: "apps/v1".into(),
        kind: "StatefulSet".into(),
        name: "db".into(),
        uid: "other".into(),
        controller: true,
        block_owner_deletion: true,
    });
    h.create(Object::Pod(orphan));
    h.create(Object::Pod(foreign));
    h.settle();
    h.create(Object::ReplicaSet(rs));
    h.settle();
    let rs = h.replicaset("web");
    let mine: Vec<String> = h
        .pods_of(&rs)
        .iter()
        .map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(mine.len(), 2);
    assert!(mine.contains(&"hand-made".to_string()), "{mine:?}");
    assert!(!mine.contains(&"someone-elses".to_string()));
    let adopted = h.get(Kind::Pod, "default", "hand-made").unwrap();
    assert_eq!(adopted.meta().controller_ref(), Some(&controller_ref(&rs)));
    // Only one pod was created: the orphan counts.
    assert_eq!(h.active_pods("web").len(), 3);
}

#[test]
fn releases_pods_whose_labels_no_longer_match() {
    let mut h = cluster(2);
    h.create(testing::replicaset("web", 2, "web:1"));
    h.settle();
    let p = h.active_pods("web")[0].clone();
    h.update(Kind::Pod, "default", &p.metadata.name, |o| {
        o.meta_mut().labels.insert("app".into(), "debug".into());
    });
    h.settle();
    let released = h.get(Kind::Pod, "default", &p.metadata.name).unwrap();
    assert!(released.meta().owner_references.is_empty());
    assert_eq!(h.active_pods("web").len(), 2, "replaced");
}

#[test]
fn scale_down_takes_the_least_useful_pods_first() {
    let mut h = cluster(3);
    h.create(testing::replicaset("web", 4, "web:1"));
    h.settle();
    let pods = h.active_pods("web");
    h.set_pod(&key(&pods[2]), Behaviour::NotReady);
    h.settle();
    scale(&mut h, "web", 3);
    h.settle();
    let left: Vec<String> = h
        .active_pods("web")
        .iter()
        .map(|p| p.metadata.name.clone())
        .collect();
    assert!(
        !left.contains(&pods[2].metadata.name),
        "the not-ready pod goes first"
    );
    assert_eq!(left.len(), 3);
}

fn ranked(
    name: &str,
    node: &str,
    phase: PodPhase,
    ready_at: Option<u64>,
    restarts: u32,
    created: u64,
) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = name.into();
    p.metadata.creation_timestamp = Some(Time(created));
    p.spec.node_name = node.into();
    p.status.phase = phase;
    if let Some(t) = ready_at {
        p.status.conditions.push(PodCondition {
            kind: POD_READY.into(),
            status: ConditionStatus::True,
            reason: String::new(),
            message: String::new(),
            last_transition_time: Some(Time(t)),
        });
    }
    p.status.container_statuses.push(ContainerStatus {
        restart_count: restarts,
        ..ContainerStatus::default()
    });
    p
}

#[test]
fn deletion_order_is_active_pods_with_ranks() {
    use PodPhase::*;
    // (pod, rank) in the order they must go.
    let mut cost = ranked("costly", "n1", Running, Some(10), 0, 1);
    cost.metadata
        .annotations
        .insert(POD_DELETION_COST.into(), "-5".into());
    let cases = vec![
        (ranked("unscheduled", "", Pending, None, 0, 1), (0, 1)),
        (ranked("pending", "n1", Pending, None, 0, 1), (0, 1)),
        (ranked("unknown", "n1", Unknown, None, 0, 1), (0, 1)),
        (
            ranked("running-not-ready", "n1", Running, None, 0, 1),
            (0, 1),
        ),
        (cost, (0, 1)),
        (ranked("doubled-up", "n1", Running, Some(10), 0, 1), (0, 3)),
        (
            ranked("ready-recently", "n1", Running, Some(20), 0, 1),
            (0, 1),
        ),
        (ranked("restarting", "n1", Running, Some(10), 5, 1), (0, 1)),
        (ranked("newer", "n1", Running, Some(10), 0, 9), (0, 1)),
        (ranked("older-a", "n1", Running, Some(10), 0, 5), (0, 1)),
        (ranked("older-b", "n1", Running, Some(10), 0, 5), (0, 1)),
    ];
    let want: Vec<&str> = cases
        .iter()
        .map(|(p, _)| p.metadata.name.as_str())
        .collect();
    let mut shuffled: Vec<&(Pod, Rank)> = cases.iter().rev().collect();
    shuffled.rotate_left(3);
    shuffled.sort_by(|(a, ra), (b, rb)| deletion_order(a, *ra, b, *rb));
    let got: Vec<&str> = shuffled
        .iter()
        .map(|(p, _)| p.metadata.name.as_str())
        .collect();
    assert_eq!(got, want);
}

#[test]
fn available_after_min_ready_seconds_exactly() {
    let mut h = cluster(2);
    let Object::ReplicaSet(mut rs) = testing::replicaset("web", 2, "web:1") else {
        unreachable!()
    };
    rs.spec.min_ready_seconds = 10;
    h.create(Object::ReplicaSet(rs));
    h.settle();
    let rs = h.replicaset("web");
    assert_eq!(
        (rs.status.ready_replicas, rs.status.available_replicas),
        (2, 0)
    );
    let ready_at = h
        .active_pods("web")
        .iter()
        .filter_map(|p| p.status.ready_since())
        .max()
        .unwrap();
    let due = ready_at.plus(Duration::from_secs(10));
    h.run_until(Time(due.ms() - 1));
    assert_eq!(h.replicaset("web").status.available_replicas, 0);
    // The controller asked to look again at that very moment.
    assert_eq!(h.plane.next_wakeup(), Some(due));
    h.run_until(due);
    assert_eq!(h.replicaset("web").status.available_replicas, 2);
    assert_eq!(h.plane.next_wakeup(), None);
}

fn class(name: &str, value: i32, global_default: bool) -> PriorityClass {
    PriorityClass {
        metadata: ObjectMeta::named("", name),
        value,
        global_default,
        description: String::new(),
        preemption_policy: None,
    }
}

#[test]
fn admission_resolves_priority_classes() {
    let store = MemStore::new();
    for c in [
        class("high", 1000, false),
        class("low", -10, false),
        class("lower", -20, true),
    ] {
        store
            .txn(Txn::ops(vec![Op::put(
                Kind::PriorityClass.key("", &c.metadata.name),
                Object::PriorityClass(c).to_stored(),
            )]))
            .unwrap();
    }
    let cache = Cache::load(&store).unwrap();
    let Object::ReplicaSet(rs) = testing::replicaset("web", 1, "web:1") else {
        unreachable!()
    };
    let admitted = |name: &str, priority: Option<i32>| {
        let mut p = pod_from_template(&rs);
        p.spec.priority_class_name = name.into();
        p.spec.priority = priority;
        admit_pod(&mut p, &cache, &Default::default())
            .map(|()| (p.spec.priority_class_name, p.spec.priority))
    };
    assert_eq!(admitted("high", None), Ok(("high".into(), Some(1000))));
    assert_eq!(
        admitted("high", Some(1000)),
        Ok(("high".into(), Some(1000)))
    );
    // No class named: the global default.
    assert_eq!(admitted("", None), Ok(("lower".into(), Some(-20))));
    let missing = admitted("missing", None).unwrap_err().to_string();
    assert!(
        missing.contains("priorityClassName") && missing.contains("\"missing\""),
        "{missing}"
    );
    let mismatch = admitted("high", Some(5)).unwrap_err().to_string();
    assert!(
        mismatch.contains("spec.priority: 5 disagrees with PriorityClass high (value 1000)"),
        "{mismatch}"
    );
    let mut never = pod_from_template(&rs);
    never.spec.preemption_policy = Some(crate::api::pod::PreemptionPolicy::Never);
    let e = admit_pod(&mut never, &cache, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("preemptionPolicy"), "{e}");
}

#[test]
fn refused_pods_raise_replica_failure_until_they_are_admitted() {
    let mut h = cluster(2);
    let Object::ReplicaSet(mut rs) = testing::replicaset("web", 2, "web:1") else {
        unreachable!()
    };
    rs.spec.template.spec.priority_class_name = "high".into();
    h.create(Object::ReplicaSet(rs));
    h.settle();
    let rs = h.replicaset("web");
    let c = crate::api::apps::condition(&rs.status.conditions, REPLICA_FAILURE)
        .expect("ReplicaFailure");
    assert!(c.is_true());
    assert_eq!(c.reason, FAILED_CREATE);
    assert!(
        c.message.contains("no PriorityClass \"high\" exists"),
        "{}",
        c.message
    );
    assert!(h.active_pods("web").is_empty());
    // Retries back off; the condition (and its event) is not repeated.
    h.advance(Duration::from_secs(60));
    assert_eq!(h.events(FAILED_CREATE).len(), 1);
    // The class appears: the pods go in with its priority.
    h.create(Object::PriorityClass(class("high", 1000, false)));
    h.settle();
    let pods = h.active_pods("web");
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(|p| p.spec.priority == Some(1000)));
    let rs = h.replicaset("web");
    assert!(crate::api::apps::condition(&rs.status.conditions, REPLICA_FAILURE).is_none());
}

#[test]
fn names_in_events_are_bounded() {
    let names: Vec<String> = (0..13).map(|i| format!("p{i:02}")).collect();
    let s = name_list(names.iter().map(String::as_str));
    assert!(s.ends_with("p09 and 3 more"), "{s}");
    assert_eq!(name_list(["b", "a"].into_iter()), "a, b");
}
