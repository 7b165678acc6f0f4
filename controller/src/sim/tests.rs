//! The in-memory cluster itself: bound pods run, statuses are stored,
//! deletions wait for the node, a controller restart changes nothing.

use super::node::NodeSpec;
use super::testing::{deployment, fleet};
use super::*;
use crate::api::pod::PodPhase;
use outpost_proto::names::SITE_LABEL;
use std::collections::BTreeMap;

fn bare() -> Sim {
    Sim::new(SimConfig::default(), Box::new(|| (Vec::new(), None)))
}

fn pod_yaml(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: outpost/workload-http:dev\n"
    )
}

#[test]
fn bound_pods_run_and_deletions_wait_for_the_node() {
    let mut sim = bare();
    sim.add_node(NodeSpec::new("n1", "s1"));
    sim.run_for(Duration::from_secs(1));
    assert!(sim.cache().node("n1").is_some_and(|n| n.is_ready()));
    sim.apply_yaml(&pod_yaml("a", "n1")).unwrap();
    let took = sim
        .run_until(Duration::from_secs(30), |c| {
            c.pod("default/a")
                .is_some_and(|p| p.status.phase == PodPhase::Running && p.status.is_ready())
        })
        .unwrap();
    assert!(took >= sim.cfg.pod_start, "{took:?}");
    assert!(!sim
        .cache()
        .pod("default/a")
        .unwrap()
        .status
        .pod_ip
        .is_empty());
    assert_eq!(sim.node("n1").unwrap().pod_count(), 1);
    sim.delete(Kind::Pod, "default", "a", Propagation::Background)
        .unwrap();
    sim.run_for(Duration::from_millis(10));
    assert!(sim
        .cache()
        .pod("default/a")
        .is_some_and(|p| p.metadata.is_deleting()));
    sim.run_until(Duration::from_secs(30), |c| c.pod("default/a").is_none())
        .unwrap();
    assert_eq!(sim.node("n1").unwrap().pod_count(), 0);
}

#[test]
fn a_controller_restart_writes_nothing_and_restarts_nothing() {
    let mut sim = bare();
    for i in 0..3 {
        sim.add_node(NodeSpec::new(format!("n{i}"), "s1"));
    }
    for i in 0..9 {
        sim.apply_yaml(&pod_yaml(&format!("p{i}"), &format!("n{}", i % 3)))
            .unwrap();
    }
    sim.run_until(Duration::from_secs(60), |c| {
        c.pods().filter(|p| p.status.is_ready()).count() == 9
    })
    .unwrap();
    let before: Vec<(String, String, u64)> = sim
        .cache()
        .pods()
        .map(|p| {
            (
                p.metadata.name.clone(),
                p.metadata.uid.clone(),
                p.metadata.revision(),
            )
        })
        .collect();
    let rev = sim.store().revision();
    sim.restart_controller();
    sim.run_for(Duration::from_secs(60));
    let mut after: Vec<(String, String, u64)> = sim
        .cache()
        .pods()
        .map(|p| {
            (
                p.metadata.name.clone(),
                p.metadata.uid.clone(),
                p.metadata.revision(),
            )
        })
        .collect();
    let mut before = before;
    before.sort();
    after.sort();
    assert_eq!(before, after, "no pod was rewritten");
    // Only node records (Ready after the reconnect) were written.
    let pods_written = sim
        .store()
        .list("/registry/pods/")
        .unwrap()
        .kvs
        .iter()
        .filter(|kv| kv.mod_revision > rev)
        .count();
    assert_eq!(pods_written, 0);
    for i in 0..3 {
        assert_eq!(sim.node(&format!("n{i}")).unwrap().pod_count(), 3);
    }
}

fn available(c: &Cache, name: &str) -> i32 {
    c.deployment(&format!("default/{name}"))
        .map_or(-1, |d| d.status.available_replicas)
}

/// Pods of `app` per site and per node.
fn spread(sim: &Sim, app: &str) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let c = sim.cache();
    let mut sites = BTreeMap::new();
    let mut nodes = BTreeMap::new();
    for p in c.pods() {
        if p.metadata.labels.get("app").map(String::as_str) != Some(app) {
            continue;
        }
        let Some(n) = p.node() else { continue };
        *nodes.entry(n.to_string()).or_insert(0) += 1;
        let site = c.node(n).unwrap().labels()[SITE_LABEL].clone();
        *sites.entry(site).or_insert(0) += 1;
    }
    (sites, nodes)
}

#[test]
fn a_thousand_replicas_over_500_nodes_in_20_sites_spread_evenly() {
    let mut sim = fleet(500, 20);
    let wall = std::time::Instant::now();
    sim.apply_yaml(&deployment("web", 1000)).unwrap();
    let took = sim
        .run_until(Duration::from_secs(600), |c| available(c, "web") == 1000)
        .unwrap();
    let (sites, nodes) = spread(&sim, "web");
    println!(
        "1000 replicas available after {took:?} of cluster time ({:?} wall); per site {:?}; per node {}..{}",
        wall.elapsed(),
        sites.values().collect::<Vec<_>>(),
        nodes.values().min().unwrap(),
        nodes.values().max().unwrap()
    );
    assert_eq!(sites.len(), 20);
    assert!(sites.values().all(|&n| n == 50), "{sites:?}");
    assert_eq!(nodes.len(), 500);
    assert!(nodes.values().all(|&n| n == 2), "{nodes:?}");
    // Every pod runs on its node, none twice.
    let running: usize = sim
        .node_names()
        .iter()
        .map(|n| sim.node(n).unwrap().pod_count())
        .sum();
    assert_eq!(running, 1000);
}

#[test]
fn scale_up_down_and_delete_remove_everything() {
    let mut sim = fleet(40, 4);
    sim.apply_yaml(&deployment("web", 10)).unwrap();
    sim.run_until(Duration::from_secs(120), |c| available(c, "web") == 10)
        .unwrap();
    sim.scale(Kind::Deployment, "default", "web", 100).unwrap();
    let up = sim
        .run_until(Duration::from_secs(300), |c| available(c, "web") == 100)
        .unwrap();
    let (sites, _) = spread(&sim, "web");
    println!("scaled to 100 in {up:?}: per site {sites:?}");
    assert!(sites.values().all(|&n| n == 25), "{sites:?}");
    sim.scale(Kind::Deployment, "default", "web", 3).unwrap();
    let down = sim
        .run_until(Duration::from_secs(300), |c| {
            available(c, "web") == 3 && c.pods().count() == 3
        })
        .unwrap();
    let (sites, nodes) = spread(&sim, "web");
    println!("scaled to 3 in {down:?}: per site {sites:?}");
    // Scale-down removes pods from the most crowded nodes first (as
    // Kubernetes ranks them), so the survivors are on three nodes; which
    // sites they are in is not ranked.
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    let running: usize = sim
        .node_names()
        .iter()
        .map(|n| sim.node(n).unwrap().pod_count())
        .sum();
    assert_eq!(running, 3);
    // A template change rolls out to a second ReplicaSet; then deleting the
    // Deployment takes both ReplicaSets and every pod with it.
    sim.apply_yaml(&deployment("web", 3).replace("workload-http:dev", "workload-http:v2"))
        .unwrap();
    sim.run_until(Duration::from_secs(300), |c| {
        c.replicasets().count() == 2
            && c.pods()
                .filter(|p| p.spec.containers[0].image.ends_with(":v2") && p.status.is_ready())
                .count()
                == 3
            && c.pods().count() == 3
    })
    .unwrap();
    sim.delete(Kind::Deployment, "default", "web", Propagation::Background)
        .unwrap();
    let gone = sim
        .run_until(Duration::from_secs(300), |c| {
            c.replicasets().count() == 0 && c.pods().count() == 0
        })
        .unwrap();
    println!("deployment, replicasets and pods gone {gone:?} after the delete");
    let running: usize = sim
        .node_names()
        .iter()
        .map(|n| sim.node(n).unwrap().pod_count())
        .sum();
    assert_eq!(running, 0);
}

#[test]
fn a_controller_restart_under_deployments_changes_nothing() {
    let mut sim = fleet(50, 5);
    sim.apply_yaml(&deployment("web", 200)).unwrap();
    sim.apply_yaml(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n",
    )
    .unwrap();
    sim.run_until(Duration::from_secs(300), |c| {
        available(c, "web") == 200
            && c.endpoints("default/web")
                .is_some_and(|e| e.subsets.iter().map(|s| s.addresses.len()).sum::<usize>() == 200)
    })
    .unwrap();
    sim.run_for(Duration::from_secs(30));
    let rev = sim.store().revision();
    let objects = |sim: &Sim| -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = sim
            .store()
            .list("/registry/")
            .unwrap()
            .kvs
            .iter()
            .filter(|kv| !kv.key.starts_with("/registry/nodes/"))
            .map(|kv| (kv.key.clone(), kv.mod_revision))
            .collect();
        v.sort();
        v
    };
    let before = objects(&sim);
    sim.restart_controller();
    sim.run_for(Duration::from_secs(3600));
    assert_eq!(objects(&sim), before, "no object was rewritten");
    let written: Vec<String> = sim
        .store()
        .list("/registry/")
        .unwrap()
        .kvs
        .iter()
        .filter(|kv| kv.mod_revision > rev)
        .map(|kv| kv.key.clone())
        .collect();
    assert!(
        written.iter().all(|k| k.starts_with("/registry/nodes/")),
        "{written:?}"
    );
    let running: usize = sim
        .node_names()
        .iter()
        .map(|n| sim.node(n).unwrap().pod_count())
        .sum();
    assert_eq!(running, 200);
    println!(
        "restart + 1h of cluster time: {} node writes, 0 object writes, 200 pods untouched",
        written.len()
    );
}

#[test]
fn an_orphaning_delete_raced_by_a_dependent_write_changes_nothing() {
    use outpost_proto::Propagation;
    let mut sim = fleet(4, 2);
    sim.apply_yaml(&deployment("web", 3)).unwrap();
    sim.run_until(Duration::from_secs(120), |c| available(c, "web") == 3)
        .unwrap();
    let planned = {
        let (_, planned) = sim
            .objects()
            .plan_delete(
                Kind::Deployment,
                "default",
                "web",
                Propagation::Orphan,
                None,
                sim.now,
            )
            .unwrap();
        planned.unwrap()
    };
    // The ReplicaSet's status is written between plan and commit.
    let rs_key = {
        let c = sim.cache();
        let rs = c.replicasets().next().unwrap();
        Kind::ReplicaSet.key(&rs.metadata.namespace, &rs.metadata.name)
    };
    let stored = sim.store().get(&rs_key).unwrap().unwrap();
    sim.store()
        .txn(Txn::ops(vec![crate::store::Op::put(
            rs_key.clone(),
            stored.value.to_vec(),
        )]))
        .unwrap();
    let raced = sim.commit(planned);
    assert!(raced.is_err(), "{raced:?}");
    sim.run_for(Duration::from_secs(5));
    {
        let c = sim.cache();
        assert_eq!(c.deployments().count(), 1, "the owner stays");
        let rs = c.replicasets().next().unwrap();
        assert!(!rs.metadata.owner_references.is_empty(), "still owned");
    }
    // Planned again, it goes through: the owner is gone, the rest stays.
    sim.delete(Kind::Deployment, "default", "web", Propagation::Orphan)
        .unwrap();
    sim.run_for(Duration::from_secs(30));
    let c = sim.cache();
    assert_eq!(c.deployments().count(), 0);
    let rs = c.replicasets().next().expect("the ReplicaSet is kept");
    assert!(rs.metadata.owner_references.is_empty());
    assert_eq!(c.pods().count(), 3);
}

/// The controller bounds the nesting of an apply's JSON documents itself,
/// before parsing them, whatever client sent them.
#[test]
fn the_controller_refuses_documents_nested_too_deep() {
    let mut sim = bare();
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    let doc = |json: String| outpost_proto::Document {
        source: "hand-made: document 1".into(),
        json: json.into_bytes(),
    };
    let t = std::time::Instant::now();
    let e = sim
        .apply(ApplyRequest {
            documents: vec![doc(deep)],
            dry_run: true,
        })
        .unwrap_err();
    eprintln!("refused 100,000 nested [ in {:?}", t.elapsed());
    assert_eq!(
        e.message,
        "hand-made: document 1: nested more than 32 levels deep (Kubernetes objects need at most 13)"
    );
    // Within the limit, the document reaches validation.
    let e = sim
        .apply(ApplyRequest {
            documents: vec![doc(format!(
                "{{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"x\": {}{}}}",
                "[".repeat(30),
                "]".repeat(30)
            ))],
            dry_run: true,
        })
        .unwrap_err();
    assert!(e.message.contains("x: "), "{}", e.message);
}
