//! The disruption controller in the harness: statuses as Kubernetes
//! computes them, kept current as pods and controllers change, and
//! `disruptedPods` pruned after the deletion timeout.

use super::*;
use crate::api::meta::IntOrString;
use crate::api::policy::{
    PodDisruptionBudgetSpec, INSUFFICIENT_PODS, SUFFICIENT_PODS, SYNC_FAILED,
};
use crate::api::selector::LabelSelector;
use crate::api::{ObjectMeta, OwnerReference};
use crate::controllers::testing::{cluster, deployment, replicaset, Behaviour, Harness};

fn budget(name: &str, app: &str, min: Option<IntOrString>, max: Option<IntOrString>) -> Object {
    Object::PodDisruptionBudget(PodDisruptionBudget {
        metadata: ObjectMeta::named("default", name),
        spec: PodDisruptionBudgetSpec {
            min_available: min,
            max_unavailable: max,
            selector: Some(LabelSelector::from_labels(
                [("app".to_string(), app.to_string())].into(),
            )),
            unhealthy_pod_eviction_policy: None,
        },
        status: Default::default(),
    })
}

fn status(h: &Harness, name: &str) -> PodDisruptionBudgetStatus {
    match h.get(Kind::PodDisruptionBudget, "default", name) {
        Some(Object::PodDisruptionBudget(b)) => b.status,
        other => panic!("budget {name}: {other:?}"),
    }
}

/// (expected, desired, current, allowed)
fn counts(s: &PodDisruptionBudgetStatus) -> (i32, i32, i32, i32) {
    (
        s.expected_pods,
        s.desired_healthy,
        s.current_healthy,
        s.disruptions_allowed,
    )
}

fn reason(s: &PodDisruptionBudgetStatus) -> (ConditionStatus, String) {
    let c = s.condition().expect("DisruptionAllowed condition");
    (c.status, c.reason.clone())
}

#[test]
fn an_integer_min_available_counts_the_selected_pods() {
    let mut h = cluster(3);
    h.create(replicaset("web", 3, "web:1"));
    h.settle();
    h.create(budget("web", "web", Some(IntOrString::Int(2)), None));
    h.settle();
    let s = status(&h, "web");
    assert_eq!(counts(&s), (3, 2, 3, 1));
    assert_eq!(s.observed_generation, 1);
    assert_eq!(reason(&s), (ConditionStatus::True, SUFFICIENT_PODS.into()));
    assert!(s.disrupted_pods.is_empty());
    // One pod not Ready: no disruption left.
    let pod = h.active_pods("web")[0].clone();
    h.set_pod(&ns_name("default", &pod.metadata.name), Behaviour::NotReady);
    h.settle();
    let s = status(&h, "web");
    assert_eq!(counts(&s), (3, 2, 2, 0));
    assert_eq!(
        reason(&s),
        (ConditionStatus::False, INSUFFICIENT_PODS.into())
    );
    // Nothing changes, nothing is written.
    assert_eq!(h.idle_writes(5), 0);
}

#[test]
fn percentages_and_max_unavailable_count_the_controllers_replicas() {
    let mut h = cluster(4);
    h.create(Object::Deployment(deployment(
        "web",
        4,
        "web:1",
        IntOrString::Int(1),
        IntOrString::Int(0),
    )));
    h.settle();
    h.create(budget(
        "max",
        "web",
        None,
        Some(IntOrString::String("25%".into())),
    ));
    h.settle();
    // 25% of 4 rounds up to 1: 3 must stay.
    assert_eq!(counts(&status(&h, "max")), (4, 3, 4, 1));
    // The Deployment's replicas, not the pods that happen to exist, are
    // what is expected: scaled to 8, the budget follows at once, before
    // the new pods are even Ready.
    h.update_deployment("web", |d| d.spec.replicas = 8);
    h.step();
    h.step();
    let s = status(&h, "max");
    assert_eq!((s.expected_pods, s.desired_healthy), (8, 6));
    h.settle();
    assert_eq!(counts(&status(&h, "max")), (8, 6, 8, 2));
    h.delete(Kind::PodDisruptionBudget, "default", "max");
    h.create(budget(
        "min",
        "web",
        Some(IntOrString::String("50%".into())),
        None,
    ));
    h.settle();
    assert_eq!(counts(&status(&h, "min")), (8, 4, 8, 4));
}

#[test]
fn a_pod_whose_controller_is_unknown_fails_safe() {
    let mut h = cluster(2);
    h.create(replicaset("web", 2, "web:1"));
    h.settle();
    // A pod claiming a controller Outpost does not know.
    let mut stray = match h.get(Kind::Pod, "default", &h.active_pods("web")[0].metadata.name) {
        Some(Object::Pod(p)) => p,
        _ => unreachable!(),
    };
    stray.metadata = ObjectMeta::named("default", "stray");
    stray.metadata.labels = [("app".to_string(), "web".to_string())].into();
    stray.metadata.owner_references = vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "StatefulSet".into(),
        name: "db".into(),
        uid: "uid-db".into(),
        controller: true,
        block_owner_deletion: true,
    }];
    h.create(Object::Pod(stray));
    h.create(budget("web", "web", None, Some(IntOrString::Int(1))));
    h.settle();
    let s = status(&h, "web");
    assert_eq!(s.disruptions_allowed, 0);
    let c = s.condition().unwrap();
    assert_eq!(
        (c.status, c.reason.as_str()),
        (ConditionStatus::False, SYNC_FAILED)
    );
    assert_eq!(c.message, "found no controllers for pod \"stray\"");
    assert_eq!(s.observed_generation, 0, "the generation is not observed");
    assert_eq!(h.events("CalculateExpectedPodCountFailed").len(), 1);
    // An integer minAvailable needs no controllers.
    h.update(Kind::PodDisruptionBudget, "default", "web", |o| {
        if let Object::PodDisruptionBudget(b) = o {
            b.spec.max_unavailable = None;
            b.spec.min_available = Some(IntOrString::Int(2));
        }
    });
    h.settle();
    let s = status(&h, "web");
    assert_eq!(counts(&s), (3, 2, 3, 1));
    assert_eq!(s.observed_generation, 2);
}

#[test]
fn unmanaged_pods_are_left_out_of_percentages_with_a_warning() {
    let mut h = cluster(2);
    h.create(replicaset("web", 2, "web:1"));
    h.settle();
    let mut bare = match h.get(Kind::Pod, "default", &h.active_pods("web")[0].metadata.name) {
        Some(Object::Pod(p)) => p,
        _ => unreachable!(),
    };
    // Labelled apart from the ReplicaSet's selector (which would adopt
    // it), selected by the budget with the ReplicaSet's pods.
    bare.metadata = ObjectMeta::named("default", "bare");
    bare.metadata.labels = [("app".to_string(), "solo".to_string())].into();
    bare.spec.node_name.clear();
    h.create(Object::Pod(bare));
    h.settle();
    let mut b = budget("web", "web", Some(IntOrString::String("100%".into())), None);
    if let Object::PodDisruptionBudget(b) = &mut b {
        b.spec.selector = Some(LabelSelector {
            match_labels: Default::default(),
            match_expressions: vec![crate::api::selector::LabelSelectorRequirement {
                key: "app".into(),
                operator: crate::api::selector::Operator::In,
                values: vec!["web".into(), "solo".into()],
            }],
        });
    }
    h.create(b);
    h.settle();
    // Expected: the ReplicaSet's 2; healthy: all 3 selected pods.
    assert_eq!(counts(&status(&h, "web")), (2, 2, 3, 1));
    let ev = h.events("UnmanagedPods");
    assert_eq!(ev.len(), 1);
    assert!(ev[0].message.contains("(bare)"), "{}", ev[0].message);
}

/// Records an eviction of `pod` at `at` in the budget's status without
/// deleting the pod (an eviction whose deletion never happened).
fn record_disruption(h: &mut Harness, budget: &str, pod: &str, at: Time) {
    h.update(Kind::PodDisruptionBudget, "default", budget, |o| {
        if let Object::PodDisruptionBudget(b) = o {
            b.status.disrupted_pods.insert(pod.to_string(), at);
            b.status.disruptions_allowed -= 1;
        }
    });
}

#[test]
fn disrupted_pods_expire_after_two_minutes_and_go_when_deleted() {
    let mut h = cluster(3);
    h.create(replicaset("web", 3, "web:1"));
    h.settle();
    h.create(budget("web", "web", Some(IntOrString::Int(2)), None));
    h.settle();
    let pods = h.active_pods("web");
    let (a, b) = (pods[0].metadata.name.clone(), pods[1].metadata.name.clone());
    let t0 = h.now;
    record_disruption(&mut h, "web", &a, t0);
    h.settle();
    // The evicted pod is not counted healthy while its deletion is due.
    let s = status(&h, "web");
    assert_eq!(s.disrupted_pods.keys().collect::<Vec<_>>(), [&a]);
    assert_eq!(counts(&s), (3, 2, 2, 0));
    h.run_until(t0.plus(DELETION_TIMEOUT - Duration::from_millis(1)));
    assert_eq!(status(&h, "web").disrupted_pods.len(), 1);
    assert!(h.events("NotDeleted").is_empty());
    // At the timeout the controller, woken for it, drops the entry and
    // counts the pod again.
    h.run_until(t0.plus(DELETION_TIMEOUT));
    let s = status(&h, "web");
    assert!(s.disrupted_pods.is_empty());
    assert_eq!(counts(&s), (3, 2, 3, 1));
    let ev = h.events("NotDeleted");
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].object, format!("pod/{a}"));
    // An entry whose pod is seen deleting goes at once.
    let t1 = h.now;
    record_disruption(&mut h, "web", &b, t1);
    h.settle();
    assert_eq!(status(&h, "web").disrupted_pods.len(), 1);
    h.delete(Kind::Pod, "default", &b);
    h.step();
    h.step();
    assert!(status(&h, "web").disrupted_pods.is_empty());
    h.settle();
    assert_eq!(counts(&status(&h, "web")), (3, 2, 3, 1));
}

#[test]
fn a_budget_without_selector_selects_nothing_and_an_empty_one_everything() {
    let mut h = cluster(2);
    h.create(replicaset("web", 2, "web:1"));
    h.create(replicaset("db", 1, "db:1"));
    h.settle();
    let mut none = budget("none", "web", Some(IntOrString::Int(1)), None);
    let mut all = budget("all", "web", Some(IntOrString::Int(1)), None);
    if let (Object::PodDisruptionBudget(n), Object::PodDisruptionBudget(a)) = (&mut none, &mut all)
    {
        n.spec.selector = None;
        a.spec.selector = Some(LabelSelector::default());
    }
    h.create(none);
    h.create(all);
    h.settle();
    assert_eq!(counts(&status(&h, "none")), (0, 1, 0, 0));
    assert_eq!(counts(&status(&h, "all")), (3, 1, 3, 2));
}
