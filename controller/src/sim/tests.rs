//! The in-memory cluster itself: bound pods run, statuses are stored,
//! deletions wait for the node, a controller restart changes nothing.

use super::node::NodeSpec;
use super::*;
use crate::api::pod::PodPhase;

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
