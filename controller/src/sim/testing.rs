//! What the in-memory cluster's tests share: a fleet over sites and the
//! Deployment manifest they apply.

use super::node::NodeSpec;
use super::{Sim, SimConfig};
use std::time::Duration;

/// A cluster of `nodes` nodes (`n0000`...) over `sites` sites
/// (`site-00`...), the standard controllers and scheduler, one second in.
pub fn fleet(nodes: usize, sites: usize) -> Sim {
    let mut sim = Sim::standard(SimConfig::default());
    for i in 0..nodes {
        sim.add_node(NodeSpec::new(
            format!("n{i:04}"),
            format!("site-{:02}", i % sites),
        ));
    }
    sim.run_for(Duration::from_secs(1));
    sim
}

/// A Deployment `name` of `replicas` pods labelled `app: NAME` (100m cpu,
/// 64Mi each); `extra` goes into the pod spec (indented six spaces, one
/// field per line, each ending in a newline).
pub fn deployment_with(name: &str, replicas: usize, extra: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n{extra}      containers:\n      - name: c\n        image: outpost/workload-http:dev\n        resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}\n"
    )
}

/// [`deployment_with`] and nothing extra.
pub fn deployment(name: &str, replicas: usize) -> String {
    deployment_with(name, replicas, "")
}
