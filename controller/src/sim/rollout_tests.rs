//! Rollouts in the in-memory cluster, with the controller's default
//! durations (25%/25%, progressDeadlineSeconds 600): a rollout whose new
//! version never gets ready stalls at maxUnavailable, passes its deadline
//! and stays there, and undo (as `outpostctl rollout undo` makes it)
//! brings every replica back; a rollout that works ends with availability
//! held at every instant.

use super::node::NodeSpec;
use super::*;
use crate::api::{Object, ReplicaSet};
use crate::controllers::deployment::{PROGRESSING, TIMED_OUT};
use crate::controllers::replicas::is_active;
use crate::ctl::rollout::{self, Undo};
use outpost_proto::{ApplyRequest, Document};

const REPLICAS: i32 = 100;
/// 25% of 100, rounded up (surge) and down (unavailable).
const SURGE: i32 = 25;
const UNAVAILABLE: i32 = 25;
const V1: &str = "outpost/workload-http:v1";
const V2: &str = "outpost/workload-http:v2";

/// 25 nodes over 5 sites, each holding `images`.
fn fleet(images: &[&str]) -> Sim {
    let mut sim = Sim::standard(SimConfig::default());
    for i in 0..25 {
        let mut spec = NodeSpec::new(format!("n{i:02}"), format!("site-{}", i % 5));
        spec.images = images.iter().map(|i| i.to_string()).collect();
        sim.add_node(spec);
    }
    sim.run_for(Duration::from_secs(1));
    sim
}

/// Deployment `web` of `REPLICAS` running `image`, strategy and deadline
/// left to their defaults.
fn web(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: {REPLICAS}\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: c\n        image: {image}\n        resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}\n"
    )
}

/// What one observed instant shows of app web.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    active: i32,
    available: i32,
    /// `spec.replicas` of the ReplicaSet running `image` (the new one).
    new_spec: i32,
    /// Its active pods.
    new_active: i32,
    /// Sum of `spec.replicas` over the ReplicaSets.
    spec_sum: i32,
}

fn observe(c: &Cache, image: &str) -> Seen {
    let mut i = Seen::default();
    for p in c.pods() {
        if p.metadata.labels.get("app").map(String::as_str) != Some("web") || !is_active(p) {
            continue;
        }
        i.active += 1;
        if p.status.is_ready() {
            i.available += 1;
        }
        if p.spec.containers[0].image == image {
            i.new_active += 1;
        }
    }
    for rs in c.replicasets() {
        i.spec_sum += rs.spec.replicas;
        if rs.spec.template.spec.containers[0].image == image {
            i.new_spec = rs.spec.replicas;
        }
    }
    i
}

/// The bounds of a rolling update with nodes healthy, at one instant.
fn check(i: Seen, seen: &mut Vec<String>) {
    if i.available < REPLICAS - UNAVAILABLE {
        seen.push(format!(
            "{} available, fewer than {}",
            i.available,
            REPLICAS - UNAVAILABLE
        ));
    }
    if i.active > REPLICAS + SURGE || i.spec_sum > REPLICAS + SURGE {
        seen.push(format!("{i:?}: more than {} pods", REPLICAS + SURGE));
    }
}

fn deployment_json(sim: &Sim) -> serde_json::Value {
    let d = sim.cache().deployment("default/web").cloned().expect("web");
    Object::Deployment((*d).clone()).to_json()
}

fn replicasets(sim: &Sim) -> Vec<ReplicaSet> {
    sim.cache().replicasets().map(|rs| (**rs).clone()).collect()
}

fn progressing_reason(c: &Cache) -> String {
    c.deployment("default/web")
        .and_then(|d| {
            crate::api::apps::condition(&d.status.conditions, PROGRESSING).map(|c| c.reason.clone())
        })
        .unwrap_or_default()
}

#[test]
fn a_rollout_whose_new_version_never_gets_ready_stalls_times_out_and_undo_restores() {
    let mut sim = fleet(&[V1, V2]);
    sim.set_image_never_ready(V2);
    sim.apply_yaml(&web(V1)).unwrap();
    sim.run_until(Duration::from_secs(300), |c| {
        observe(c, V1).available == REPLICAS
    })
    .unwrap();
    let start = sim.now;
    sim.apply_yaml(&web(V2)).unwrap();
    let mut bad = Vec::new();
    let mut max_new = 0;
    let took = sim
        .run_until(Duration::from_secs(3600), |c| {
            let i = observe(c, V2);
            check(i, &mut bad);
            max_new = max_new.max(i.new_spec);
            progressing_reason(c) == TIMED_OUT
        })
        .unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    // The deadline counts from the last progress: the rollout's first
    // steps, within a few seconds of the template change.
    assert!(
        took >= Duration::from_secs(600) && took <= Duration::from_secs(605),
        "{took:?}"
    );
    let stalled = observe(&sim.cache(), V2);
    assert_eq!(
        (stalled.available, stalled.new_spec, stalled.spec_sum),
        (
            REPLICAS - UNAVAILABLE,
            UNAVAILABLE + SURGE,
            REPLICAS + SURGE
        ),
        "{stalled:?}"
    );
    assert_eq!(
        max_new,
        UNAVAILABLE + SURGE,
        "the new ReplicaSet never grew past the surge"
    );
    let events: Vec<outpost_proto::Event> = sim
        .events(Some("deployment/web"))
        .into_iter()
        .filter(|e| e.reason == TIMED_OUT)
        .collect();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].time_ms,
        start.ms() + u64::try_from(took.as_millis()).unwrap()
    );
    // It stays there: an hour on, nothing more was scaled down.
    let sizes = |sim: &Sim| -> Vec<(String, i32)> {
        let mut v: Vec<(String, i32)> = replicasets(sim)
            .into_iter()
            .map(|rs| {
                (
                    rs.spec.template.spec.containers[0].image.clone(),
                    rs.spec.replicas,
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = sizes(&sim);
    sim.run_until(Duration::from_secs(3600), |c| {
        check(observe(c, V2), &mut bad);
        false
    })
    .unwrap_err();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(sizes(&sim), before);
    assert_eq!(progressing_reason(&sim.cache()), TIMED_OUT);
    // Undo as `outpostctl rollout undo deployment/web` does it: the
    // previous revision's template, applied at the resourceVersion read.
    let v = deployment_json(&sim);
    let all: Vec<serde_json::Value> = replicasets(&sim)
        .into_iter()
        .map(|rs| Object::ReplicaSet(rs).to_json())
        .collect();
    let owned = rollout::owned_replicasets(&v, &all).unwrap();
    let Undo::Apply(doc) = rollout::undo(&v, &owned, 0).unwrap() else {
        panic!("an undo to apply")
    };
    let req = ApplyRequest {
        documents: vec![Document {
            source: "undo".into(),
            json: serde_json::to_vec(&doc).unwrap(),
        }],
        dry_run: false,
    };
    sim.apply(req.clone()).unwrap();
    // The same edit again is at a resourceVersion that is gone now: a
    // Conflict, as any change made between a read and its apply is.
    let again = sim.apply(req).unwrap_err();
    assert_eq!(again.code, outpost_proto::ErrorCode::Conflict, "{again:?}");
    let back = sim
        .run_until(Duration::from_secs(600), |c| {
            let i = observe(c, V1);
            check(i, &mut bad);
            i.available == REPLICAS && i.active == REPLICAS && i.new_active == REPLICAS
        })
        .unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(
        replicasets(&sim).len(),
        2,
        "the first ReplicaSet was taken back"
    );
    sim.run_for(Duration::from_secs(5));
    let c = sim.cache();
    assert_ne!(progressing_reason(&c), TIMED_OUT);
    let d = c.deployment("default/web").unwrap();
    assert_eq!(
        d.metadata
            .annotations
            .get(crate::api::apps::REVISION_ANNOTATION)
            .map(String::as_str),
        Some("3")
    );
    println!(
        "stalled at {} available with {} new (never ready) pods; ProgressDeadlineExceeded {took:?} after the change; undo: all {REPLICAS} available on the old template {back:?} later",
        stalled.available, stalled.new_spec
    );
}

/// Rolls `web` from V1 to V2 over nodes holding `images`, checking the
/// bounds at every observed instant; (time taken, fewest available).
fn roll(images: &[&str]) -> (Duration, i32) {
    let mut sim = fleet(images);
    sim.apply_yaml(&web(V1)).unwrap();
    sim.run_until(Duration::from_secs(300), |c| {
        observe(c, V1).available == REPLICAS
    })
    .unwrap();
    sim.apply_yaml(&web(V2)).unwrap();
    let mut bad = Vec::new();
    let mut instants = 0;
    let mut min_available = REPLICAS;
    let took = sim
        .run_until(Duration::from_secs(600), |c| {
            let i = observe(c, V2);
            check(i, &mut bad);
            instants += 1;
            min_available = min_available.min(i.available);
            let done = c.deployment("default/web").is_some_and(|d| {
                rollout::status(&Object::Deployment((**d).clone()).to_json(), None)
                    .is_ok_and(|s| s.done)
            });
            done && i.new_active == REPLICAS && i.active == REPLICAS
        })
        .unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    let c = sim.cache();
    assert!(c
        .pods()
        .filter(|p| is_active(p))
        .all(|p| p.spec.containers[0].image == V2 && p.status.is_ready()));
    println!(
        "rolled {REPLICAS} replicas (nodes holding {images:?}) in {took:?} of cluster time over {instants} observed instants; never fewer than {min_available} available, never more than {} pods",
        REPLICAS + SURGE
    );
    (took, min_available)
}

#[test]
fn a_rollout_of_100_replicas_keeps_availability_at_every_step() {
    // The new image on every node: the rollout uses its whole room.
    let (_, min) = roll(&[V1, V2]);
    assert_eq!(min, REPLICAS - UNAVAILABLE, "the rollout used its room");
}

#[test]
fn old_pods_serve_while_the_new_image_is_fetched() {
    // No node reports the new image, so each new pod's start counts as
    // its pull: no old pod is stopped for a new one before it runs (a
    // simulated pod is ready as soon as it runs, so here availability
    // never dips at all), at the price of a slower rollout.
    let (took, min) = roll(&[V1]);
    assert_eq!(min, REPLICAS, "an old pod stopped before its stand-in ran");
    let (with_images, _) = roll(&[V1, V2]);
    assert!(took > with_images, "{took:?} against {with_images:?}");
}
