//! Sites: `get sites`, from the nodes' site labels and Ready conditions,
//! through the same rule the node lifecycle controller raises
//! `SitePartitioned` with ([`crate::controllers::sites`]).

use super::{age, rfc3339, table};
use crate::controllers::sites::{
    site_statuses, NodeReadiness, SiteStatus, DEFAULT_PARTITION_WINDOW,
};
use outpost_proto::names::SITE_LABEL;
use outpost_proto::{ConditionStatus, ConditionType, NodeView};
use serde_json::{json, Value};

/// The sites of `nodes` (nodes without a site label belong to none).
pub fn sites_of(nodes: &[NodeView]) -> Vec<SiteStatus> {
    let readiness = nodes.iter().filter_map(|n| {
        let site = n.labels.get(SITE_LABEL)?.clone();
        let ready = n.conditions.iter().find(|c| c.kind == ConditionType::Ready);
        Some(NodeReadiness {
            site,
            ready: ready.is_some_and(|c| c.status == ConditionStatus::True),
            since_ms: ready.map_or(0, |c| c.last_transition_ms),
        })
    });
    site_statuses(readiness, DEFAULT_PARTITION_WINDOW)
}

pub fn site_json(s: &SiteStatus) -> Value {
    json!({
        "apiVersion": "outpost.dev/v1",
        "kind": "Site",
        "metadata": {"name": s.name},
        "status": {
            "nodes": s.nodes,
            "readyNodes": s.ready,
            "state": s.state.as_str(),
            "since": (s.since_ms > 0).then(|| rfc3339(s.since_ms)),
        },
    })
}

/// NAME NODES READY STATUS SINCE, as `get nodes` would print a site.
pub fn sites_table(sites: &[SiteStatus], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = sites
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.nodes.to_string(),
                format!("{}/{}", s.ready, s.nodes),
                s.state.as_str().to_string(),
                if s.since_ms == 0 {
                    "<unknown>".into()
                } else {
                    age(s.since_ms, now_ms)
                },
            ]
        })
        .collect();
    table(&["NAME", "NODES", "READY", "STATUS", "SINCE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_proto::Condition;
    use std::collections::BTreeMap;

    fn view(name: &str, site: &str, ready: bool, since_ms: u64) -> NodeView {
        NodeView {
            name: name.into(),
            labels: BTreeMap::from([(SITE_LABEL.to_string(), site.to_string())]),
            conditions: vec![Condition {
                kind: ConditionType::Ready,
                status: if ready {
                    ConditionStatus::True
                } else {
                    ConditionStatus::Unknown
                },
                reason: String::new(),
                message: String::new(),
                last_transition_ms: since_ms,
            }],
            ..crate::ctl::fixtures::node_view(name, false)
        }
    }

    #[test]
    fn a_partitioned_site_reads_as_such() {
        let nodes = vec![
            view("a1", "shop-1", false, 1_000_000),
            view("a2", "shop-1", false, 1_004_000),
            view("b1", "shop-2", true, 1_000),
        ];
        let out = sites_table(&sites_of(&nodes), 1_064_000);
        assert_eq!(
            out,
            "NAME     NODES   READY   STATUS        SINCE\n\
             shop-1   2       0/2     Partitioned   60s\n\
             shop-2   1       1/1     Ready         17m\n"
        );
        let j = site_json(&sites_of(&nodes)[0]);
        assert_eq!(j["status"]["state"], "Partitioned");
        assert_eq!(j["status"]["readyNodes"], 0);
    }
}
