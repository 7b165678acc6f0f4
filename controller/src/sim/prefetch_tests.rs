//! Images before old pods for rollouts without surge room, in the
//! in-memory cluster with the controller's default durations
//! (progressDeadlineSeconds 600): a Recreate rollout, and a RollingUpdate
//! with `maxSurge: 0`, to an image the nodes do not hold keep every old pod
//! serving while the nodes fetch it (two minutes: a slow site), and only
//! then stop them; a node that never gets the image holds the rollout for
//! the deadline, then it proceeds with a Warning event; a node whose agent
//! speaks protocol 3 (it cannot be asked) is not waited for.

use super::node::NodeSpec;
use super::*;
use crate::api::apps::condition;
use crate::api::meta::ConditionStatus;
use crate::controllers::prefetch::{
    IMAGES_PREFETCHED, IMAGES_PRESENT, PREFETCHING, PREFETCH_DEADLINE_EXCEEDED,
};
use crate::controllers::replicas::is_active;

const REPLICAS: i32 = 10;
const V1: &str = "outpost/workload-http:v1";
const V2: &str = "outpost/workload-http:v2";
/// A slow site: two minutes to fetch an image.
const PULL: Duration = Duration::from_secs(120);

/// 5 nodes of one site holding V1 only.
fn site() -> Sim {
    let mut sim = Sim::standard(SimConfig {
        image_pull: PULL,
        ..SimConfig::default()
    });
    for i in 0..5 {
        let mut spec = NodeSpec::new(format!("n{i}"), "slow");
        spec.images = vec![V1.to_string()];
        sim.add_node(spec);
    }
    sim.run_for(Duration::from_secs(1));
    sim
}

fn web(image: &str, strategy: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: {REPLICAS}\n  strategy: {strategy}\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: c\n        image: {image}\n        resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}\n"
    )
}

/// Ready pods running `image`.
fn ready(c: &Cache, image: &str) -> i32 {
    let n = c
        .pods()
        .filter(|p| is_active(p) && p.status.is_ready() && p.spec.containers[0].image == image)
        .count();
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn prefetched(c: &Cache) -> Option<(ConditionStatus, String)> {
    let d = c.deployment("default/web")?;
    condition(&d.status.conditions, IMAGES_PREFETCHED).map(|c| (c.status, c.reason.clone()))
}

/// Runs in steps of one second until V1 is no longer fully ready; returns
/// the virtual time that took, asserting on the way that the nodes are
/// asked for V2 and the condition says why the old pods stay.
fn old_pods_kept_for(sim: &mut Sim, max: Duration) -> Duration {
    let start = sim.now;
    let mut saw_waiting = false;
    while sim.now.since(start) < max {
        {
            let c = sim.cache();
            if ready(&c, V1) < REPLICAS {
                break;
            }
            if prefetched(&c) == Some((ConditionStatus::False, PREFETCHING.into())) {
                saw_waiting = true;
                for n in c.nodes() {
                    let wanted = crate::controllers::prefetch::wanted_images(&c, &n.name);
                    let has_old = c.pods_on(&n.name).any(|p| is_active(p));
                    assert_eq!(
                        wanted.contains(&V2.to_string()),
                        has_old,
                        "{}: asked for V2 exactly when it runs an old pod",
                        n.name
                    );
                }
            }
        }
        sim.run_for(Duration::from_secs(1));
    }
    assert!(saw_waiting, "the Deployment said it waits for images");
    sim.now.since(start)
}

fn start_rollout(sim: &mut Sim, strategy: &str) {
    sim.apply_yaml(&web(V1, strategy)).unwrap();
    sim.run_until(Duration::from_secs(120), |c| ready(c, V1) == REPLICAS)
        .unwrap();
    sim.apply_yaml(&web(V2, strategy)).unwrap();
}

#[test]
fn recreate_keeps_the_old_pods_until_their_nodes_hold_the_new_image() {
    let mut sim = site();
    start_rollout(&mut sim, "{type: Recreate}");
    let start = sim.now;
    let kept = old_pods_kept_for(&mut sim, Duration::from_secs(900));
    println!("Recreate, image fetch of {PULL:?}: every old pod kept for {kept:?}");
    assert!(
        kept >= PULL,
        "old pods stopped after {kept:?}, before the fetch ended"
    );
    assert!(kept < PULL + Duration::from_secs(10), "{kept:?}");
    assert_eq!(
        prefetched(&sim.cache()),
        Some((ConditionStatus::True, IMAGES_PRESENT.into()))
    );
    let done = sim
        .run_until(Duration::from_secs(300), |c| ready(c, V2) == REPLICAS)
        .unwrap();
    println!(
        "  then every new pod ready {done:?} later ({:?} after the change)",
        sim.now.since(start)
    );
    assert!(done < Duration::from_secs(30), "{done:?}");
    assert!(
        sim.events(Some("deployment/web"))
            .iter()
            .all(|e| e.reason != PREFETCH_DEADLINE_EXCEEDED),
        "no deadline event"
    );
}

#[test]
fn max_surge_zero_keeps_the_old_pods_until_their_nodes_hold_the_new_image() {
    let mut sim = site();
    start_rollout(
        &mut sim,
        "{type: RollingUpdate, rollingUpdate: {maxSurge: 0, maxUnavailable: 2}}",
    );
    let kept = old_pods_kept_for(&mut sim, Duration::from_secs(900));
    println!("RollingUpdate maxSurge 0, image fetch of {PULL:?}: every old pod kept for {kept:?}");
    assert!(kept >= PULL, "{kept:?}");
    // The rolling update itself then goes as usual: never below
    // replicas - maxUnavailable.
    let mut fewest = REPLICAS;
    sim.run_until(Duration::from_secs(600), |c| {
        fewest = fewest.min(ready(c, V1) + ready(c, V2));
        ready(c, V2) == REPLICAS
    })
    .unwrap();
    assert!(fewest >= REPLICAS - 2, "{fewest} ready at one point");
}

#[test]
fn a_node_that_never_gets_the_image_holds_the_rollout_for_the_deadline_only() {
    let mut sim = site();
    sim.set_can_pull("n0", false);
    start_rollout(&mut sim, "{type: Recreate}");
    let kept = old_pods_kept_for(&mut sim, Duration::from_secs(900));
    println!("Recreate, node n0 never gets the image: old pods kept for {kept:?} (progressDeadlineSeconds 600)");
    assert!(kept >= Duration::from_secs(600), "{kept:?}");
    assert!(kept < Duration::from_secs(610), "{kept:?}");
    assert_eq!(
        prefetched(&sim.cache()),
        Some((ConditionStatus::False, PREFETCH_DEADLINE_EXCEEDED.into()))
    );
    let events = sim.events(Some("deployment/web"));
    let warning = events
        .iter()
        .find(|e| e.reason == PREFETCH_DEADLINE_EXCEEDED)
        .expect("a Warning event says the wait gave up");
    assert!(
        warning.message.contains("n0: outpost/workload-http:v2"),
        "{}",
        warning.message
    );
    sim.run_until(Duration::from_secs(300), |c| ready(c, V2) == REPLICAS)
        .unwrap();
}

#[test]
fn with_surge_room_nothing_waits_for_a_prefetch() {
    let mut sim = site();
    start_rollout(&mut sim, "{type: RollingUpdate}");
    sim.run_until(Duration::from_secs(600), |c| ready(c, V2) == REPLICAS)
        .unwrap();
    assert_eq!(prefetched(&sim.cache()), None);
    let c = sim.cache();
    assert!(c
        .nodes()
        .all(|n| crate::controllers::prefetch::wanted_images(&c, &n.name).is_empty()));
}

#[test]
fn a_node_whose_agent_cannot_be_asked_is_not_waited_for() {
    let mut sim = site();
    // An older agent: it never gets the request, so it never fetches.
    sim.set_can_pull("n0", false);
    sim.set_protocol("n0", outpost_proto::MIN_PROTOCOL_VERSION);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.cache().node("n0").map(|n| n.protocol), Some(3));
    start_rollout(&mut sim, "{type: Recreate}");
    let kept = old_pods_kept_for(&mut sim, Duration::from_secs(900));
    println!("Recreate, n0 on protocol 3: old pods kept for {kept:?}, the other nodes' fetch");
    assert!(
        kept >= PULL && kept < PULL + Duration::from_secs(10),
        "{kept:?}"
    );
    assert_eq!(
        prefetched(&sim.cache()),
        Some((ConditionStatus::True, IMAGES_PRESENT.into())),
        "the nodes that could be asked hold it"
    );
    assert!(sim
        .events(Some("deployment/web"))
        .iter()
        .all(|e| e.reason != PREFETCH_DEADLINE_EXCEEDED));
    sim.run_until(Duration::from_secs(300), |c| ready(c, V2) == REPLICAS)
        .unwrap();
}
