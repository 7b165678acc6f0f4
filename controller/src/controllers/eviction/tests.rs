//! The eviction check over a store and a cache loaded from it: every
//! rule of the module doc, the one-transaction guard, and a property test
//! that no interleaving of concurrent evictions takes the healthy pods
//! below the budget.

use super::*;
use crate::api::apps::{ReplicaSet, ReplicaSetSpec};
use crate::api::meta::{ConditionStatus, IntOrString};
use crate::api::pod::{Container, PodSpec, POD_READY};
use crate::api::policy::{PodDisruptionBudgetSpec, INSUFFICIENT_PODS};
use crate::api::selector::LabelSelector;
use crate::api::{Kind, ObjectMeta, OwnerReference};
use crate::controllers::disruption::DisruptionController;
use crate::controllers::{Controller, Write};
use crate::store::mem::MemStore;
use crate::store::Store;
use proptest::prelude::*;
const NOW: Time = Time(1_000_000_000);

fn labels() -> std::collections::BTreeMap<String, String> {
    [("app".to_string(), "web".to_string())].into()
}

fn rs(replicas: i32) -> ReplicaSet {
    let mut meta = ObjectMeta::named("default", "web");
    meta.uid = "uid-rs".into();
    meta.generation = 1;
    ReplicaSet {
        metadata: meta,
        spec: ReplicaSetSpec {
            replicas,
            selector: LabelSelector::from_labels(labels()),
            ..ReplicaSetSpec::default()
        },
        status: Default::default(),
    }
}

fn pod(name: &str, ready: bool) -> Pod {
    let mut meta = ObjectMeta::named("default", name);
    meta.uid = format!("uid-{name}");
    meta.generation = 1;
    meta.labels = labels();
    meta.owner_references.push(OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: "web".into(),
        uid: "uid-rs".into(),
        controller: true,
        block_owner_deletion: true,
    });
    let mut p = Pod {
        metadata: meta,
        spec: PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: "web:1".into(),
                ..Container::default()
            }],
            node_name: "n1".into(),
            termination_grace_period_seconds: 30,
            ..PodSpec::default()
        },
        status: Default::default(),
    };
    p.status.phase = PodPhase::Running;
    p.status
        .set_condition(POD_READY, ConditionStatus::from_bool(ready), "", "", NOW);
    p
}

fn budget(name: &str, min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudget {
    let mut meta = ObjectMeta::named("default", name);
    meta.uid = format!("uid-{name}");
    meta.generation = 1;
    PodDisruptionBudget {
        metadata: meta,
        spec: PodDisruptionBudgetSpec {
            min_available: min,
            max_unavailable: max,
            selector: Some(LabelSelector::from_labels(labels())),
            unhealthy_pod_eviction_policy: None,
        },
        status: Default::default(),
    }
}

fn put(store: &MemStore, o: Object) {
    store.put(&o.key(), o.to_stored()).expect("write");
}

fn cache(store: &MemStore) -> Cache {
    Cache::load(store).expect("load")
}

/// Runs the disruption controller on every budget and writes what it
/// decides, as the control loop would.
fn sync_budgets(store: &MemStore, now: Time) {
    let c = cache(store);
    let mut ctl = DisruptionController;
    for key in ctl.all_keys(&c) {
        for w in ctl.reconcile(&key, &c, now).writes {
            if let Write::Update(o) = w {
                let k = o.key();
                let t = Txn::guarded(
                    vec![Compare::mod_revision(k.clone(), o.meta().revision())],
                    vec![Op::put(k, o.to_stored())],
                );
                store.txn(t).expect("write");
            }
        }
    }
}

/// A store with the ReplicaSet, `ready` Ready pods (and `not_ready` that
/// are not) and the budget, its status synced.
fn world(ready: usize, not_ready: usize, pdb: PodDisruptionBudget) -> MemStore {
    let store = MemStore::new();
    put(
        &store,
        Object::ReplicaSet(rs(i32::try_from(ready + not_ready).unwrap())),
    );
    for i in 0..ready + not_ready {
        put(&store, Object::Pod(pod(&format!("p{i}"), i < ready)));
    }
    put(&store, Object::PodDisruptionBudget(pdb));
    sync_budgets(&store, NOW);
    store
}

fn stored_budget(store: &MemStore, name: &str) -> PodDisruptionBudget {
    match cache(store).object(Kind::PodDisruptionBudget, &format!("default/{name}")) {
        Some(Object::PodDisruptionBudget(b)) => b,
        other => panic!("{other:?}"),
    }
}

fn commit(store: &MemStore, ev: &Eviction) -> bool {
    store
        .txn(ev.txn().expect("something to write"))
        .expect("txn")
        .succeeded
}

#[test]
fn an_allowed_eviction_spends_one_disruption_in_the_same_transaction() {
    let store = world(3, 0, budget("web", Some(IntOrString::Int(2)), None));
    assert_eq!(stored_budget(&store, "web").status.disruptions_allowed, 1);
    let ev = check(&cache(&store), "default", "p0", Some(5), NOW).unwrap();
    assert_eq!(
        ev.allowed,
        Allowed::Budget {
            budget: "web".into()
        }
    );
    assert!(commit(&store, &ev));
    let c = cache(&store);
    let p = c.pod("default/p0").unwrap();
    assert_eq!(p.metadata.deletion_timestamp, Some(NOW));
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(5));
    let b = stored_budget(&store, "web");
    assert_eq!(b.status.disruptions_allowed, 0);
    assert_eq!(b.status.disrupted_pods.get("p0"), Some(&NOW));
    let cond = b.status.condition().unwrap();
    assert_eq!(
        (cond.status, cond.reason.as_str()),
        (ConditionStatus::False, INSUFFICIENT_PODS)
    );
    // The disruption is spent: the next pod waits.
    let e = check(&c, "default", "p1", None, NOW).unwrap_err();
    assert!(e.is_retryable());
    // Without a grace period the pod's own applies.
    let store = world(3, 0, budget("web", Some(IntOrString::Int(2)), None));
    let ev = check(&cache(&store), "default", "p2", None, NOW).unwrap();
    match &ev.deletion {
        Deletion::Graceful(o) => assert_eq!(o.meta().deletion_grace_period_seconds, Some(30)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_budget_at_zero_refuses_with_kubernetes_message() {
    let store = world(2, 0, budget("web", Some(IntOrString::Int(2)), None));
    let e = check(&cache(&store), "default", "p0", None, NOW).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(
        e,
        EvictionError::Budget {
            budget: "web".into(),
            cause: "The disruption budget web needs 2 healthy pods and has 2 currently".into()
        }
    );
    let msg = crate::apiserver::eviction_error(e);
    assert_eq!(msg.code, outpost_proto::ErrorCode::TooManyRequests);
}

#[test]
fn of_two_concurrent_evictions_only_one_commits() {
    let store = world(3, 0, budget("web", Some(IntOrString::Int(2)), None));
    let seen = cache(&store);
    let a = check(&seen, "default", "p0", None, NOW).unwrap();
    let b = check(&seen, "default", "p1", None, NOW).unwrap();
    assert!(commit(&store, &a));
    assert!(!commit(&store, &b), "the budget changed under b");
    // Decided again, b is refused; p1 runs on.
    assert!(check(&cache(&store), "default", "p1", None, NOW)
        .unwrap_err()
        .is_retryable());
    assert!(!cache(&store)
        .pod("default/p1")
        .unwrap()
        .metadata
        .is_deleting());
}

#[test]
fn pods_that_keep_nothing_available_go_without_a_budget() {
    let store = world(2, 0, budget("web", Some(IntOrString::Int(2)), None));
    let mut done = pod("done", false);
    done.status.phase = PodPhase::Succeeded;
    let mut pending = pod("pending", false);
    pending.status.phase = PodPhase::Pending;
    pending.spec.node_name.clear();
    put(&store, Object::Pod(done));
    put(&store, Object::Pod(pending));
    let c = cache(&store);
    let ev = check(&c, "default", "done", None, NOW).unwrap();
    assert_eq!(ev.allowed, Allowed::NotRunning(PodPhase::Succeeded));
    assert!(ev.budget.is_none());
    let ev = check(&c, "default", "pending", None, NOW).unwrap();
    assert_eq!(ev.allowed, Allowed::NotRunning(PodPhase::Pending));
    // Unbound: removed at once.
    assert!(matches!(ev.deletion, Deletion::Now));
    assert!(commit(&store, &ev));
    assert!(cache(&store).pod("default/pending").is_none());
    // Already deleting: allowed, nothing to write.
    let mut deleting = pod("deleting", true);
    deleting.metadata.deletion_timestamp = Some(NOW);
    put(&store, Object::Pod(deleting));
    let ev = check(&cache(&store), "default", "deleting", None, NOW).unwrap();
    assert_eq!(ev.allowed, Allowed::AlreadyDeleting);
    assert!(ev.txn().is_none());
    assert_eq!(
        check(&cache(&store), "default", "nope", None, NOW).unwrap_err(),
        EvictionError::NotFound {
            namespace: "default".into(),
            name: "nope".into()
        }
    );
}

#[test]
fn no_budget_means_allowed_and_two_budgets_an_error() {
    let store = MemStore::new();
    put(&store, Object::ReplicaSet(rs(1)));
    put(&store, Object::Pod(pod("p0", true)));
    let ev = check(&cache(&store), "default", "p0", None, NOW).unwrap();
    assert_eq!(ev.allowed, Allowed::NoBudget);
    put(
        &store,
        Object::PodDisruptionBudget(budget("a", Some(IntOrString::Int(0)), None)),
    );
    put(
        &store,
        Object::PodDisruptionBudget(budget("b", None, Some(IntOrString::Int(1)))),
    );
    sync_budgets(&store, NOW);
    let e = check(&cache(&store), "default", "p0", None, NOW).unwrap_err();
    assert_eq!(
        e,
        EvictionError::MultipleBudgets(vec!["a".into(), "b".into()])
    );
    assert!(e.to_string().starts_with(
        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    ));
    assert!(!e.is_retryable());
}

#[test]
fn a_budget_not_yet_synced_refuses_for_now() {
    let store = world(3, 0, budget("web", Some(IntOrString::Int(1)), None));
    let mut b = stored_budget(&store, "web");
    b.metadata.generation = 2;
    put(&store, Object::PodDisruptionBudget(b));
    match check(&cache(&store), "default", "p0", None, NOW) {
        Err(EvictionError::Budget { cause, .. }) => assert_eq!(
            cause,
            "The disruption budget web is still being processed by the server."
        ),
        other => panic!("{other:?}"),
    }
    sync_budgets(&store, NOW);
    assert!(check(&cache(&store), "default", "p0", None, NOW).is_ok());
}

#[test]
fn unready_pods_go_while_the_budget_is_met() {
    // 3 Ready, 1 not; minAvailable 3: met, no disruption allowed.
    let store = world(3, 1, budget("web", Some(IntOrString::Int(3)), None));
    let b = stored_budget(&store, "web");
    assert_eq!(
        (b.status.current_healthy, b.status.disruptions_allowed),
        (3, 0)
    );
    let c = cache(&store);
    let ev = check(&c, "default", "p3", None, NOW).unwrap();
    assert_eq!(
        ev.allowed,
        Allowed::Unhealthy {
            budget: "web".into()
        }
    );
    // Nothing is spent.
    assert!(matches!(&ev.budget, Some((_, None))));
    assert!(check(&c, "default", "p0", None, NOW).is_err());
    // Not met (minAvailable 4): the unready pod stays too...
    let store = world(3, 1, budget("web", Some(IntOrString::Int(4)), None));
    assert!(check(&cache(&store), "default", "p3", None, NOW).is_err());
    // ...unless the budget lets unhealthy pods always go.
    let mut b = stored_budget(&store, "web");
    b.spec.unhealthy_pod_eviction_policy = Some(UnhealthyPodEvictionPolicy::AlwaysAllow);
    put(&store, Object::PodDisruptionBudget(b));
    sync_budgets(&store, NOW);
    assert!(check(&cache(&store), "default", "p3", None, NOW).is_ok());
}

/// One step of the property test's world.
#[derive(Debug, Clone)]
enum Step {
    /// An eviction decided from the current snapshot, committed later.
    Check(usize),
    /// Commits the `n`-th pending eviction (mod the number pending).
    Commit(usize),
    /// The cache catches up with the store.
    Refresh,
    /// The disruption controller runs.
    Sync,
    /// A deleting pod's node confirms it gone.
    Gone(usize),
    /// The ReplicaSet's replacement pod appears, Ready.
    Replace,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0usize..16).prop_map(Step::Check),
        3 => (0usize..16).prop_map(Step::Commit),
        1 => Just(Step::Refresh),
        2 => Just(Step::Sync),
        1 => (0usize..16).prop_map(Step::Gone),
        1 => Just(Step::Replace),
    ]
}

fn healthy(store: &MemStore) -> usize {
    cache(store)
        .pods()
        .filter(|p| !p.metadata.is_deleting() && p.status.is_ready())
        .count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// However evictions are decided, interleaved and committed, and
    /// whatever the controller and the nodes do meanwhile, evictions
    /// never take the Ready pods below what the budget protects.
    #[test]
    fn concurrent_evictions_never_break_the_budget(
        n in 1usize..7,
        floor in 0usize..7,
        as_max in any::<bool>(),
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        let floor = floor.min(n);
        let pdb = if as_max {
            budget("web", None, Some(IntOrString::Int(i64::try_from(n - floor).unwrap())))
        } else {
            budget("web", Some(IntOrString::Int(i64::try_from(floor).unwrap())), None)
        };
        let store = world(n, 0, pdb);
        let mut snapshot = cache(&store);
        let mut pending: Vec<Eviction> = Vec::new();
        let mut now = NOW;
        let mut replaced = 0usize;
        let mut evicted = 0usize;
        for s in steps {
            now = now.plus(Duration::from_millis(100));
            match s {
                Step::Check(i) => {
                    let mut names: Vec<String> = snapshot
                        .pods()
                        .map(|p| p.metadata.name.clone())
                        .collect();
                    names.sort();
                    if names.is_empty() {
                        continue;
                    }
                    let name = &names[i % names.len()];
                    if let Ok(ev) = check(&snapshot, "default", name, None, now) {
                        pending.push(ev);
                    }
                }
                Step::Commit(i) if !pending.is_empty() => {
                    let ev = pending.remove(i % pending.len());
                    if let Some(t) = ev.txn() {
                        if store.txn(t).expect("txn").succeeded {
                            evicted += 1;
                        }
                    }
                }
                Step::Commit(_) => {}
                Step::Refresh => snapshot = cache(&store),
                Step::Sync => sync_budgets(&store, now),
                Step::Gone(i) => {
                    let c = cache(&store);
                    let mut deleting: Vec<&Arc<Pod>> = c
                        .pods()
                        .filter(|p| p.metadata.is_deleting())
                        .collect();
                    deleting.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
                    if !deleting.is_empty() {
                        let p = deleting[i % deleting.len()];
                        store.delete(&p.key()).expect("delete");
                    }
                }
                Step::Replace => {
                    replaced += 1;
                    put(&store, Object::Pod(pod(&format!("r{replaced}"), true)));
                }
            }
            let h = healthy(&store);
            prop_assert!(
                h >= floor,
                "{h} Ready pods left, the budget protects {floor} (n {n}, {evicted} evicted)"
            );
        }
    }
}

use std::sync::Arc;
use std::time::Duration;
