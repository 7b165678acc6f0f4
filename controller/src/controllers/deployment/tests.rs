use super::*;
use crate::api::meta::IntOrString;
use crate::controllers::replicas::is_active;
use crate::controllers::testing::{self, cluster, Behaviour, Harness};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn int(n: i64) -> IntOrString {
    IntOrString::Int(n)
}

fn pct(s: &str) -> IntOrString {
    IntOrString::String(s.into())
}

fn create(h: &mut Harness, d: Deployment) {
    h.create(Object::Deployment(d));
}

fn set_image(h: &mut Harness, name: &str, image: &str) {
    h.update_deployment(name, |d| {
        d.spec.template.spec.containers[0].image = image.into()
    });
}

fn image_of(p: &Pod) -> &str {
    &p.spec.containers[0].image
}

/// Active pods and available (ready) active pods of app `name`.
fn active_and_available(h: &Harness, name: &str) -> (i32, i32) {
    let pods = h.active_pods(name);
    let ready = pods.iter().filter(|p| p.status.is_ready()).count();
    (
        i32::try_from(pods.len()).unwrap(),
        i32::try_from(ready).unwrap(),
    )
}

fn cond<'a>(d: &'a Deployment, kind: &str) -> &'a WorkloadCondition {
    condition(&d.status.conditions, kind).unwrap_or_else(|| panic!("no {kind} condition"))
}

#[test]
fn template_hash_is_stable_short_and_safe() {
    let t = testing::template("web", "web:1");
    let h = pod_template_hash(&t, None);
    assert_eq!(h, pod_template_hash(&t.clone(), None));
    assert!(h.len() <= 10 && !h.is_empty());
    assert!(h.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{h}");
    assert_ne!(
        h,
        pod_template_hash(&testing::template("web", "web:2"), None)
    );
    assert_ne!(h, pod_template_hash(&t, Some(1)));
    // The hash label itself does not make templates differ.
    let mut labelled = t.clone();
    labelled.metadata.labels.insert(POD_TEMPLATE_HASH.into(), h);
    assert!(equal_ignore_hash(&t, &labelled));
    assert!(!equal_ignore_hash(&t, &testing::template("web", "web:2")));
}

#[test]
fn fenceposts_resolve_like_kubernetes() {
    let d = |r, s, u| testing::deployment("web", r, "i", s, u);
    for (dep, surge, unavailable) in [
        (d(10, pct("25%"), pct("25%")), 3, 2),
        (d(4, int(1), int(0)), 1, 0),
        (d(4, int(0), int(0)), 0, 1),
        (d(3, pct("0%"), pct("10%")), 0, 1),
        (d(2, int(0), int(5)), 0, 2),
        (d(0, pct("25%"), pct("25%")), 0, 0),
    ] {
        assert_eq!(
            (max_surge(&dep), max_unavailable(&dep)),
            (surge, unavailable),
            "{:?}",
            dep.spec.strategy
        );
    }
    let mut recreate = d(3, int(1), int(1));
    recreate.spec.strategy.kind = StrategyType::Recreate;
    assert_eq!((max_surge(&recreate), max_unavailable(&recreate)), (0, 0));
}

#[test]
fn creates_a_new_replicaset_with_every_replica() {
    let mut h = cluster(3);
    let mut d = testing::deployment("web", 3, "web:1", pct("25%"), pct("25%"));
    d.metadata
        .annotations
        .insert(CHANGE_CAUSE.into(), "first".into());
    create(&mut h, d);
    h.settle();
    let d = h.deployment("web");
    let rss = h.replicasets_of("web");
    assert_eq!(rss.len(), 1);
    let rs = &rss[0];
    let hash = pod_template_hash(&d.spec.template, None);
    assert_eq!(rs.metadata.name, format!("web-{hash}"));
    assert_eq!(rs.spec.replicas, 3);
    for labels in [
        &rs.metadata.labels,
        &rs.spec.selector.match_labels,
        &rs.spec.template.metadata.labels,
    ] {
        assert_eq!(labels.get(POD_TEMPLATE_HASH), Some(&hash));
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
    }
    let a = &rs.metadata.annotations;
    assert_eq!(a.get(REVISION_ANNOTATION).map(String::as_str), Some("1"));
    assert_eq!(
        a.get(DESIRED_REPLICAS_ANNOTATION).map(String::as_str),
        Some("3")
    );
    assert_eq!(
        a.get(MAX_REPLICAS_ANNOTATION).map(String::as_str),
        Some("4")
    );
    assert_eq!(a.get(CHANGE_CAUSE).map(String::as_str), Some("first"));
    assert_eq!(
        rs.metadata.controller_ref().map(|r| r.uid.as_str()),
        Some(d.metadata.uid.as_str())
    );
    assert_eq!(
        d.metadata
            .annotations
            .get(REVISION_ANNOTATION)
            .map(String::as_str),
        Some("1")
    );
    let st = &d.status;
    assert_eq!(
        (
            st.replicas,
            st.updated_replicas,
            st.ready_replicas,
            st.available_replicas,
            st.unavailable_replicas
        ),
        (3, 3, 3, 3, 0)
    );
    assert_eq!(st.observed_generation, d.metadata.generation);
    assert_eq!(cond(&d, AVAILABLE).reason, MINIMUM_REPLICAS_AVAILABLE);
    assert_eq!(cond(&d, PROGRESSING).reason, NEW_RS_AVAILABLE);
    assert!(cond(&d, PROGRESSING).is_true());
    let scaled = h.events(SCALING_REPLICA_SET);
    assert_eq!(scaled.len(), 1);
    assert_eq!(
        scaled[0].message,
        format!("Scaled up replica set web-{hash} to 3")
    );
    assert_eq!(scaled[0].object, "deployment/web");
    assert_eq!(h.idle_writes(5), 0, "nothing changes, nothing is written");
}

const CHANGE_CAUSE: &str = crate::api::apps::CHANGE_CAUSE_ANNOTATION;

#[test]
fn scaling_changes_the_replicaset() {
    let mut h = cluster(3);
    create(
        &mut h,
        testing::deployment("web", 3, "web:1", pct("25%"), pct("25%")),
    );
    h.settle();
    for n in [5, 1, 0, 2] {
        h.update_deployment("web", |d| d.spec.replicas = n);
        h.settle();
        let rss = h.replicasets_of("web");
        assert_eq!(rss.len(), 1);
        assert_eq!(rss[0].spec.replicas, n);
        assert_eq!(
            rss[0].metadata.annotations.get(DESIRED_REPLICAS_ANNOTATION),
            Some(&n.to_string())
        );
        assert_eq!(active_and_available(&h, "web"), (n, n));
        assert_eq!(h.deployment("web").status.available_replicas, n);
    }
    let messages: Vec<String> = h
        .events(SCALING_REPLICA_SET)
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("Scaled down replica set web-") && m.ends_with(" to 1")),
        "{messages:?}"
    );
}

/// Runs a template change to completion, checking the rolling-update
/// bounds after every step; returns the steps it took.
fn roll(h: &mut Harness, name: &str, image: &str) -> usize {
    let d = h.deployment(name);
    let r = d.spec.replicas;
    let (surge, unavailable) = (max_surge(&d), max_unavailable(&d));
    set_image(h, name, image);
    h.settle_checking(|h| {
        let (active, available) = active_and_available(h, name);
        assert!(active <= r + surge, "{active} pods, at most {r} + {surge}");
        assert!(
            available >= r - unavailable,
            "{available} available, at least {r} - {unavailable}"
        );
    })
}

#[test]
fn rolling_update_respects_surge_and_unavailable_at_every_step() {
    for (r, surge, unavailable) in [
        (4, int(1), int(0)),
        (4, int(0), int(1)),
        (5, pct("25%"), pct("25%")),
        (10, int(3), int(2)),
        (3, int(0), int(0)),
        (6, pct("50%"), pct("0%")),
    ] {
        let mut h = cluster(3);
        create(
            &mut h,
            testing::deployment("web", r, "web:1", surge.clone(), unavailable.clone()),
        );
        h.settle();
        let first = h.replicasets_of("web")[0].metadata.name.clone();
        roll(&mut h, "web", "web:2");
        let rss = h.replicasets_of("web");
        assert_eq!(rss.len(), 2, "{surge}/{unavailable}");
        assert_eq!(rss[0].metadata.name, first);
        assert_eq!(rss[0].spec.replicas, 0);
        assert_eq!(rss[1].spec.replicas, r);
        assert_eq!(revision(&rss[1]), 2);
        let pods = h.active_pods("web");
        assert_eq!(pods.len(), usize::try_from(r).unwrap());
        assert!(pods
            .iter()
            .all(|p| image_of(p) == "web:2" && p.status.is_ready()));
        let d = h.deployment("web");
        assert_eq!(
            d.metadata
                .annotations
                .get(REVISION_ANNOTATION)
                .map(String::as_str),
            Some("2")
        );
        assert_eq!(d.status.updated_replicas, r);
        assert_eq!(cond(&d, PROGRESSING).reason, NEW_RS_AVAILABLE);
        assert_eq!(h.idle_writes(3), 0);
    }
}

#[test]
fn rollback_moves_the_old_revision_forward() {
    let mut h = cluster(2);
    create(
        &mut h,
        testing::deployment("web", 2, "web:1", int(1), int(0)),
    );
    h.settle();
    roll(&mut h, "web", "web:2");
    roll(&mut h, "web", "web:1");
    let rss = h.replicasets_of("web");
    assert_eq!(rss.len(), 2, "the first ReplicaSet is reused");
    assert_eq!((revision(&rss[0]), rss[0].spec.replicas), (3, 2));
    assert_eq!((revision(&rss[1]), rss[1].spec.replicas), (2, 0));
    let d = h.deployment("web");
    assert_eq!(
        d.metadata
            .annotations
            .get(REVISION_ANNOTATION)
            .map(String::as_str),
        Some("3")
    );
}

#[test]
fn recreate_never_runs_old_and_new_pods_together() {
    let mut h = cluster(3);
    let mut d = testing::deployment("web", 3, "web:1", int(0), int(0));
    d.spec.strategy = crate::api::apps::DeploymentStrategy {
        kind: StrategyType::Recreate,
        rolling_update: None,
    };
    create(&mut h, d);
    h.settle();
    set_image(&mut h, "web", "web:2");
    let mut saw_gap = false;
    h.settle_checking(|h| {
        let cache = h.cache();
        let images: Vec<&str> = cache
            .pods()
            .filter(|p| !p.is_terminal())
            .map(|p| image_of(p))
            .collect();
        assert!(
            !(images.contains(&"web:1") && images.contains(&"web:2")),
            "old and new pods at once: {images:?}"
        );
        saw_gap |= images.is_empty();
    });
    assert!(saw_gap, "the old pods were gone before the new ones came");
    let pods = h.active_pods("web");
    assert_eq!(pods.len(), 3);
    assert!(pods.iter().all(|p| image_of(p) == "web:2"));
}

#[test]
fn scaling_mid_rollout_is_proportional() {
    // Kubernetes' documented example: 10 replicas, maxSurge 3,
    // maxUnavailable 2, a rollout stuck on pods that never get ready, then
    // a scale to 15: the 5 new replicas go 3 to the old ReplicaSet and 2
    // to the new one.
    let mut h = cluster(3);
    create(
        &mut h,
        testing::deployment("web", 10, "web:1", int(3), int(2)),
    );
    h.settle();
    h.set_image("web:broken", Behaviour::NotReady);
    set_image(&mut h, "web", "web:broken");
    h.settle();
    let sizes = |h: &Harness| -> Vec<i32> {
        h.replicasets_of("web")
            .iter()
            .map(|rs| rs.spec.replicas)
            .collect()
    };
    assert_eq!(sizes(&h), [8, 5]);
    h.update_deployment("web", |d| d.spec.replicas = 15);
    h.settle();
    assert_eq!(sizes(&h), [11, 7]);
    let (active, available) = active_and_available(&h, "web");
    assert_eq!((active, available), (18, 11));
    for rs in h.replicasets_of("web") {
        assert_eq!(
            rs.metadata
                .annotations
                .get(DESIRED_REPLICAS_ANNOTATION)
                .map(String::as_str),
            Some("15")
        );
        assert_eq!(
            rs.metadata
                .annotations
                .get(MAX_REPLICAS_ANNOTATION)
                .map(String::as_str),
            Some("18")
        );
    }
    // Scaling down cuts both in proportion (11 -> 5, 7 -> 3); the rollout
    // then goes on as far as availability allows (3 old ones must stay).
    h.update_deployment("web", |d| d.spec.replicas = 5);
    h.settle();
    assert_eq!(sizes(&h), [3, 5]);
}

#[test]
fn progress_deadline_passes_after_exactly_its_seconds() {
    let mut h = cluster(2);
    h.set_image("web:stuck", Behaviour::NotReady);
    let mut d = testing::deployment("web", 2, "web:stuck", int(1), int(0));
    d.spec.progress_deadline_seconds = 60;
    create(&mut h, d);
    h.settle();
    let d = h.deployment("web");
    let c = cond(&d, PROGRESSING);
    assert!(c.is_true(), "{c:?}");
    let last_progress = c.last_update_time.expect("update time");
    let deadline = last_progress.plus(Duration::from_secs(60));
    h.run_until(Time(deadline.ms() - 1));
    assert_ne!(cond(&h.deployment("web"), PROGRESSING).reason, TIMED_OUT);
    assert!(h.events(TIMED_OUT).is_empty());
    h.run_until(deadline);
    let d = h.deployment("web");
    let c = cond(&d, PROGRESSING);
    assert_eq!(
        (c.status, c.reason.as_str()),
        (ConditionStatus::False, TIMED_OUT)
    );
    assert_eq!(c.last_transition_time, Some(deadline));
    let events = h.events(TIMED_OUT);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventType::Warning);
    assert_eq!(events[0].time_ms, deadline.ms());
    assert_eq!(cond(&d, AVAILABLE).reason, MINIMUM_REPLICAS_UNAVAILABLE);
    // Said once; nothing more to do until something changes.
    h.advance(Duration::from_secs(600));
    assert_eq!(h.events(TIMED_OUT).len(), 1);
    assert_eq!(h.idle_writes(3), 0);
    // Progress again (the pods get ready): Progressing is true again.
    h.set_image("web:stuck", Behaviour::Ready);
    for p in h.active_pods("web") {
        h.set_pod(&format!("default/{}", p.metadata.name), Behaviour::Ready);
    }
    h.settle();
    assert_eq!(
        cond(&h.deployment("web"), PROGRESSING).reason,
        NEW_RS_AVAILABLE
    );
}

/// `spec.replicas` of the ReplicaSets of `name` running each image.
/// The images of [`stalled_past_deadline`] and the other tests below.
const OLD_NEW: [&str; 2] = ["web:1", "web:flaky"];

fn sizes<const N: usize>(h: &Harness, name: &str, images: [&str; N]) -> [i32; N] {
    let rss = h.replicasets_of(name);
    images.map(|image| {
        rss.iter()
            .find(|rs| rs.spec.template.spec.containers[0].image == image)
            .map_or(-1, |rs| rs.spec.replicas)
    })
}

/// Keys of the active pods of app `name` running `image`.
fn pods_with_image(h: &Harness, name: &str, image: &str) -> Vec<String> {
    h.active_pods(name)
        .iter()
        .filter(|p| image_of(p) == image)
        .map(|p| format!("default/{}", p.metadata.name))
        .collect()
}

/// A rollout of 4 replicas (surge 1, unavailable 1, deadline 60 s) to an
/// image that never gets ready, past its deadline: old 3, new 2.
fn stalled_past_deadline() -> Harness {
    let mut h = cluster(3);
    let mut d = testing::deployment("web", 4, "web:1", int(1), int(1));
    d.spec.progress_deadline_seconds = 60;
    create(&mut h, d);
    h.settle();
    h.set_image("web:flaky", Behaviour::NotReady);
    set_image(&mut h, "web", "web:flaky");
    h.settle();
    assert_eq!(sizes(&h, "web", OLD_NEW), [3, 2]);
    h.advance(Duration::from_secs(61));
    assert_eq!(cond(&h.deployment("web"), PROGRESSING).reason, TIMED_OUT);
    h
}

#[test]
fn past_the_deadline_old_replicasets_are_held_until_the_spec_changes() {
    let mut h = stalled_past_deadline();
    // A new pod ready for a moment: Kubernetes would scale an old one
    // away now; here the old ReplicaSet keeps its size.
    let flaky = pods_with_image(&h, "web", "web:flaky");
    assert_eq!(flaky.len(), 2);
    h.set_pod(&flaky[0], Behaviour::Ready);
    h.settle();
    assert_eq!(active_and_available(&h, "web"), (5, 4));
    assert_eq!(sizes(&h, "web", OLD_NEW), [3, 2]);
    assert_eq!(cond(&h.deployment("web"), PROGRESSING).reason, TIMED_OUT);
    h.set_pod(&flaky[0], Behaviour::NotReady);
    h.advance(Duration::from_secs(3600));
    assert_eq!(sizes(&h, "web", OLD_NEW), [3, 2]);
    assert_eq!(active_and_available(&h, "web"), (5, 3));
    let events = h.events(TIMED_OUT);
    assert_eq!(events.len(), 1, "said once");
    assert!(
        events[0].message.contains("rollout undo deployment/web"),
        "{}",
        events[0].message
    );
    // Undo (the old template again): the deadline starts over and the
    // first ReplicaSet takes every replica back.
    set_image(&mut h, "web", "web:1");
    h.settle();
    assert_eq!(sizes(&h, "web", OLD_NEW), [4, 0]);
    let d = h.deployment("web");
    assert_eq!(cond(&d, PROGRESSING).reason, NEW_RS_AVAILABLE);
    assert_eq!(d.status.available_replicas, 4);
    assert!(h.active_pods("web").iter().all(|p| image_of(p) == "web:1"));
}

#[test]
fn past_the_deadline_a_scale_or_pause_starts_the_deadline_over() {
    let mut h = stalled_past_deadline();
    let at = h.now;
    h.update_deployment("web", |d| d.spec.paused = true);
    h.settle();
    let c = cond(&h.deployment("web"), PROGRESSING).clone();
    assert_eq!(
        (c.status, c.reason.as_str()),
        (ConditionStatus::Unknown, PAUSED)
    );
    h.update_deployment("web", |d| d.spec.paused = false);
    h.settle();
    let c = cond(&h.deployment("web"), PROGRESSING).clone();
    assert_ne!(c.reason, TIMED_OUT, "{c:?}");
    assert!(c.last_update_time >= Some(at), "{c:?}");
    // Still stuck: the deadline passes again 60 s on, with a second
    // occurrence (the same message: one event, counted twice).
    h.advance(Duration::from_secs(61));
    assert_eq!(cond(&h.deployment("web"), PROGRESSING).reason, TIMED_OUT);
    let timed_out = h.events(TIMED_OUT);
    assert_eq!(
        timed_out.iter().map(|e| e.count).sum::<u32>(),
        2,
        "{timed_out:?}"
    );
    assert_eq!(sizes(&h, "web", OLD_NEW), [3, 2]);
}

#[test]
fn past_the_deadline_a_new_version_that_proves_itself_rolls_on() {
    let mut h = stalled_past_deadline();
    // Late, but every new pod gets ready: the rollout goes on and ends.
    h.set_image("web:flaky", Behaviour::Ready);
    for k in pods_with_image(&h, "web", "web:flaky") {
        h.set_pod(&k, Behaviour::Ready);
    }
    h.settle();
    assert_eq!(sizes(&h, "web", OLD_NEW), [0, 4]);
    let d = h.deployment("web");
    assert_eq!(cond(&d, PROGRESSING).reason, NEW_RS_AVAILABLE);
    assert!(h
        .active_pods("web")
        .iter()
        .all(|p| image_of(p) == "web:flaky" && p.status.is_ready()));
}

#[test]
fn old_pods_serve_until_new_ones_have_their_images() {
    // The agent says nothing of the new pods (pulling): Kubernetes would
    // stop one old pod at once (maxUnavailable 1) and start two new ones;
    // here the surge pod pulls while all four old ones serve.
    let mut h = cluster(3);
    create(
        &mut h,
        testing::deployment("web", 4, "web:1", int(1), int(1)),
    );
    h.settle();
    h.set_image("web:2", Behaviour::Silent);
    set_image(&mut h, "web", "web:2");
    h.settle();
    assert_eq!(sizes(&h, "web", ["web:1", "web:2"]), [4, 1]);
    assert_eq!(pods_with_image(&h, "web", "web:1").len(), 4);
    // Pulled: the pod runs (not ready yet); now one old pod may go.
    h.set_image("web:2", Behaviour::NotReady);
    h.settle();
    assert_eq!(sizes(&h, "web", ["web:1", "web:2"]), [3, 2]);
    // Ready: the rollout goes on and ends, never below 3 available.
    h.set_image("web:2", Behaviour::Ready);
    for k in pods_with_image(&h, "web", "web:2") {
        h.set_pod(&k, Behaviour::Ready);
    }
    h.settle_checking(|h| {
        let (active, available) = active_and_available(h, "web");
        assert!(
            active <= 5 && available >= 3,
            "{active} active, {available} available"
        );
    });
    assert_eq!(sizes(&h, "web", ["web:1", "web:2"]), [0, 4]);
}

#[test]
fn revision_history_limit_deletes_the_oldest_idle_replicasets() {
    let mut h = cluster(2);
    let mut d = testing::deployment("web", 2, "web:1", int(1), int(0));
    d.spec.revision_history_limit = 2;
    create(&mut h, d);
    h.settle();
    for v in 2..=6 {
        roll(&mut h, "web", &format!("web:{v}"));
    }
    let rss = h.replicasets_of("web");
    let revisions: Vec<i64> = rss.iter().map(|rs| revision(rs)).collect();
    // The current one and the two before it.
    let mut sorted = revisions.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [4, 5, 6]);
    let images: Vec<&str> = rss
        .iter()
        .map(|rs| rs.spec.template.spec.containers[0].image.as_str())
        .collect();
    assert!(
        images.contains(&"web:6") && !images.contains(&"web:1"),
        "{images:?}"
    );
    assert_eq!(testing::object_count(&h.store, Kind::ReplicaSet), 3);
}

#[test]
fn paused_deployments_scale_but_do_not_roll() {
    let mut h = cluster(2);
    create(
        &mut h,
        testing::deployment("web", 2, "web:1", int(1), int(0)),
    );
    h.settle();
    h.update_deployment("web", |d| d.spec.paused = true);
    h.settle();
    assert_eq!(cond(&h.deployment("web"), PROGRESSING).reason, PAUSED);
    set_image(&mut h, "web", "web:2");
    h.settle();
    assert_eq!(h.replicasets_of("web").len(), 1, "no rollout while paused");
    h.update_deployment("web", |d| d.spec.replicas = 4);
    h.settle();
    assert_eq!(
        h.replicasets_of("web")[0].spec.replicas,
        4,
        "scaling still works"
    );
    assert!(h.active_pods("web").iter().all(|p| image_of(p) == "web:1"));
    h.update_deployment("web", |d| d.spec.paused = false);
    h.settle();
    let pods = h.active_pods("web");
    assert_eq!(pods.len(), 4);
    assert!(pods.iter().all(|p| image_of(p) == "web:2"));
    assert_eq!(
        cond(&h.deployment("web"), PROGRESSING).reason,
        NEW_RS_AVAILABLE
    );
}

#[test]
fn min_ready_seconds_holds_the_rollout_back() {
    let mut h = cluster(2);
    let mut d = testing::deployment("web", 2, "web:1", int(1), int(0));
    d.spec.min_ready_seconds = 30;
    create(&mut h, d);
    h.settle();
    assert_eq!(h.deployment("web").status.available_replicas, 0);
    h.advance(Duration::from_secs(30));
    assert_eq!(h.deployment("web").status.available_replicas, 2);
    set_image(&mut h, "web", "web:2");
    h.settle();
    // One surge pod, ready but not yet available: the old ones stay.
    assert_eq!(active_and_available(&h, "web").0, 3);
    h.advance(Duration::from_secs(120));
    let pods = h.active_pods("web");
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(|p| image_of(p) == "web:2"));
}

// ---- property: random scale / template / failure / readiness events ----

#[derive(Debug, Clone)]
enum Event {
    Scale(i32),
    Template(u8),
    FailPod(usize),
    Unready(usize),
    Ready(usize),
    /// Nodes start pulling `img:N` (its new pods say nothing) ...
    Pulling(u8),
    /// ... until it is there.
    Pulled(u8),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (0i32..7).prop_map(Event::Scale),
        (0u8..3).prop_map(Event::Template),
        any::<usize>().prop_map(Event::FailPod),
        any::<usize>().prop_map(Event::Unready),
        any::<usize>().prop_map(Event::Ready),
        (0u8..3).prop_map(Event::Pulling),
        (0u8..3).prop_map(Event::Pulled),
    ]
}

fn surge_or_unavailable() -> impl Strategy<Value = IntOrString> {
    prop_oneof![
        (0i64..4).prop_map(IntOrString::Int),
        prop::sample::select(vec!["0%", "25%", "50%", "100%"]).prop_map(pct),
    ]
}

fn stored(c: &Cache) -> Arc<Deployment> {
    c.deployment("default/web")
        .cloned()
        .expect("deployment web")
}

fn bound(c: &Cache) -> (i32, i32, i32) {
    let d = stored(c);
    (d.spec.replicas, max_surge(&d), max_unavailable(&d))
}

/// Active and available (ready) pods of app web.
fn counted(c: &Cache) -> (i32, i32) {
    let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
    let pods: Vec<&Arc<Pod>> = c
        .pods_with_labels("default", &labels)
        .into_iter()
        .filter(|p| is_active(p))
        .collect();
    let ready = pods.iter().filter(|p| p.status.is_ready()).count();
    (
        i32::try_from(pods.len()).unwrap(),
        i32::try_from(ready).unwrap(),
    )
}

/// The Deployment observed its spec and no ReplicaSet holds more pods than
/// it is sized for: from here on the surge bound of the current spec holds.
fn caught_up(c: &Cache) -> bool {
    let d = stored(c);
    d.status.observed_generation == d.metadata.generation
        && c.replicasets_owned_by(&d.metadata.uid).iter().all(|rs| {
            let active = controlled_pods(c, rs)
                .iter()
                .filter(|p| is_active(p))
                .count();
            i32::try_from(active).unwrap() <= rs.spec.replicas
        })
}

fn run_events(
    r: i32,
    surge: IntOrString,
    unavailable: IntOrString,
    events: Vec<(Event, u8)>,
) -> Result<(), TestCaseError> {
    let mut h = cluster(3);
    create(
        &mut h,
        testing::deployment("web", r, "img:0", surge, unavailable),
    );
    h.settle();
    let mut disrupted: BTreeMap<String, Behaviour> = BTreeMap::new();
    let mut pulling = std::collections::BTreeSet::new();
    // The availability bound holds while a rollout started with the
    // minimum available and nothing disrupted it since.
    let mut guard_available = false;
    let (r0, s0, _) = bound(&h.snapshot());
    let mut surge_bound = r0 + s0;
    for (ev, steps) in events {
        let now = h.snapshot();
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let mut pods: Vec<String> = now
            .pods_with_labels("default", &labels)
            .into_iter()
            .filter(|p| is_active(p))
            .map(|p| format!("default/{}", p.metadata.name))
            .collect();
        pods.sort();
        let pick = |i: usize| (!pods.is_empty()).then(|| pods[i % pods.len()].clone());
        match ev {
            Event::Scale(n) => {
                h.update_deployment("web", |d| d.spec.replicas = n);
                let (r, s, _) = bound(&h.snapshot());
                surge_bound = surge_bound.max(r + s);
                guard_available = false;
            }
            Event::Template(i) => {
                let c = h.snapshot();
                let (r, _, u) = bound(&c);
                let (_, available) = counted(&c);
                if disrupted.is_empty() && available >= r - u && caught_up(&c) {
                    guard_available = true;
                }
                set_image(&mut h, "web", &format!("img:{i}"));
            }
            Event::FailPod(i) | Event::Unready(i) => {
                if let Some(k) = pick(i) {
                    let b = match ev {
                        Event::FailPod(_) => Behaviour::Fail("Evicted".into()),
                        _ => Behaviour::NotReady,
                    };
                    h.set_pod(&k, b.clone());
                    disrupted.insert(k, b);
                    guard_available = false;
                }
            }
            Event::Pulling(i) => {
                h.set_image(&format!("img:{i}"), Behaviour::Silent);
                pulling.insert(i);
                guard_available = false;
            }
            Event::Pulled(i) => {
                h.set_image(&format!("img:{i}"), Behaviour::Ready);
                pulling.remove(&i);
            }
            Event::Ready(i) => {
                let unready: Vec<String> = disrupted
                    .iter()
                    .filter(|(_, b)| **b == Behaviour::NotReady)
                    .map(|(k, _)| k.clone())
                    .collect();
                if !unready.is_empty() {
                    // Healing: over once the pod is seen ready again.
                    let k = &unready[i % unready.len()];
                    h.set_pod(k, Behaviour::Ready);
                    disrupted.insert(k.clone(), Behaviour::Ready);
                }
            }
        }
        let mut failure = None;
        for _ in 0..steps {
            h.step();
            let c = h.snapshot();
            let (r, s, u) = bound(&c);
            if caught_up(&c) {
                surge_bound = r + s;
            }
            let (active, available) = counted(&c);
            if active > surge_bound {
                failure = Some(format!("{active} pods with {r} replicas and maxSurge {s}"));
            }
            if guard_available && available < r - u {
                failure = Some(format!(
                    "{available} available with {r} replicas and maxUnavailable {u}"
                ));
            }
            // Disruptions of pods that are gone are over, and so are those
            // of pods healed and seen ready (the agent's report and the
            // store agree: no older report is still on its way).
            disrupted.retain(|k, b| {
                let healed = *b == Behaviour::Ready
                    && h.reported_ready(k) == Some(true)
                    && c.pod(k).is_some_and(|p| p.status.is_ready());
                c.pod(k).is_some_and(|p| is_active(p)) && !healed
            });
        }
        prop_assert!(failure.is_none(), "{}", failure.unwrap_or_default());
    }
    // Heal everything; the Deployment converges to exactly its replicas,
    // all of the current template.
    for k in disrupted.keys() {
        h.set_pod(k, Behaviour::Ready);
    }
    for i in pulling {
        h.set_image(&format!("img:{i}"), Behaviour::Ready);
    }
    h.settle();
    let d = h.deployment("web");
    let r = d.spec.replicas;
    let want = d.spec.template.spec.containers[0].image.clone();
    let pods = h.active_pods("web");
    prop_assert_eq!(pods.len(), usize::try_from(r).unwrap());
    let c = h.snapshot();
    let rsinfo: Vec<String> = c
        .replicasets_owned_by(&d.metadata.uid)
        .iter()
        .map(|rs| {
            let pods = controlled_pods(&c, rs);
            format!(
                "{} {} spec={} active={} ready={} ann={:?} rev={}",
                &rs.metadata.name,
                rs.spec.template.spec.containers[0].image,
                rs.spec.replicas,
                pods.iter().filter(|p| is_active(p)).count(),
                pods.iter()
                    .filter(|p| is_active(p) && p.status.is_ready())
                    .count(),
                rs.metadata.annotations.get(DESIRED_REPLICAS_ANNOTATION),
                revision(rs)
            )
        })
        .collect();
    prop_assert!(
        pods.iter()
            .all(|p| image_of(p) == want && p.status.is_ready()),
        "want {want}: {:?} {rsinfo:?} {:?}",
        pods.iter()
            .map(|p| (&p.metadata.name, image_of(p), p.status.is_ready()))
            .collect::<Vec<_>>(),
        d.status
    );
    let rss = h.replicasets_of("web");
    for rs in &rss {
        let current = equal_ignore_hash(&rs.spec.template, &d.spec.template);
        prop_assert_eq!(rs.spec.replicas, if current { r } else { 0 });
    }
    prop_assert_eq!(
        (
            d.status.replicas,
            d.status.updated_replicas,
            d.status.available_replicas
        ),
        (r, r, r)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn rolling_updates_stay_in_bounds_and_converge(
        r in 1i32..6,
        surge in surge_or_unavailable(),
        unavailable in surge_or_unavailable(),
        events in prop::collection::vec((event(), 0u8..8), 1..16),
    ) {
        run_events(r, surge, unavailable, events)?;
    }
}

#[test]
fn rolling_update_of_zero_replicas_is_immediate() {
    let mut h = cluster(1);
    create(
        &mut h,
        testing::deployment("web", 0, "web:1", pct("25%"), pct("25%")),
    );
    h.settle();
    set_image(&mut h, "web", "web:2");
    h.settle();
    let rss = h.replicasets_of("web");
    assert_eq!(rss.len(), 2);
    assert!(rss.iter().all(|rs| rs.spec.replicas == 0));
    let d = h.deployment("web");
    assert_eq!(cond(&d, AVAILABLE).reason, MINIMUM_REPLICAS_AVAILABLE);
}
