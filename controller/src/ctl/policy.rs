//! PodDisruptionBudgets: the `get pdb` row and `describe pdb`, as
//! kubectl prints them.

use super::{age_of, decode, meta_fields, Context, Describe, RenderError, Row, Subject};
use crate::api::{Kind, PodDisruptionBudget};
use serde_json::Value;
use std::fmt::Write as _;

fn or_na(v: Option<&crate::api::meta::IntOrString>) -> String {
    v.map_or_else(|| "N/A".to_string(), ToString::to_string)
}

/// `get poddisruptionbudgets`: MIN AVAILABLE, MAX UNAVAILABLE, ALLOWED
/// DISRUPTIONS, AGE.
pub fn row(v: &Value, ctx: &Context<'_>) -> Result<Row, RenderError> {
    let pdb: PodDisruptionBudget = decode(Kind::PodDisruptionBudget, v)?;
    Ok(Row::of(
        v,
        vec![
            or_na(pdb.spec.min_available.as_ref()),
            or_na(pdb.spec.max_unavailable.as_ref()),
            pdb.status.disruptions_allowed.to_string(),
            age_of(pdb.metadata.creation_timestamp, ctx.now_ms),
        ],
    ))
}

/// `describe poddisruptionbudget`: kubectl's fields, then the pods evicted
/// and not yet gone, the condition when it says why nothing is allowed,
/// and the events.
pub fn describe(s: &Subject<'_>) -> Result<String, RenderError> {
    let pdb: PodDisruptionBudget = decode(Kind::PodDisruptionBudget, s.object)?;
    let mut d = Describe::new(16);
    meta_fields(&mut d, &pdb.metadata, s.now_ms);
    if let Some(m) = &pdb.spec.min_available {
        d.field("Min available", m);
    } else if let Some(m) = &pdb.spec.max_unavailable {
        d.field("Max unavailable", m);
    }
    d.field(
        "Selector",
        match &pdb.spec.selector {
            None => "<unset>".to_string(),
            Some(sel) => super::or_none(&sel.to_query()),
        },
    );
    if let Some(p) = pdb.spec.unhealthy_pod_eviction_policy {
        d.field("Unhealthy pod eviction policy", format!("{p:?}"));
    }
    d.line("Status:");
    let st = &pdb.status;
    let mut status = Describe::new(22);
    status
        .field("Allowed disruptions", st.disruptions_allowed)
        .field("Current", st.current_healthy)
        .field("Desired", st.desired_healthy)
        .field("Total", st.expected_pods);
    if !st.disrupted_pods.is_empty() {
        let pods: Vec<String> = st
            .disrupted_pods
            .iter()
            .map(|(name, at)| format!("{name} (evicted {} ago)", age_of(Some(*at), s.now_ms)))
            .collect();
        status.list("Disrupted pods", &pods);
    }
    if let Some(c) = st.condition() {
        let mut text = format!("{} ({})", c.status.name(), c.reason);
        if !c.message.is_empty() {
            let _ = write!(text, ": {}", c.message);
        }
        status.field("DisruptionAllowed", text);
    }
    d.block(4, &status.finish());
    let mut o = d.finish();
    super::events::section(&mut o, s.events, s.now_ms);
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::super::{printer, Layout};
    use super::*;
    use crate::api::meta::parse_rfc3339;
    use std::collections::BTreeMap;

    fn fixture() -> Value {
        serde_json::from_str(include_str!("test_data/pdb-web.json")).unwrap()
    }

    #[test]
    fn the_table_and_description_read_like_kubectl() {
        let now = parse_rfc3339("2026-12-02T07:00:00Z").unwrap();
        let nodes = BTreeMap::new();
        let ctx = Context {
            now_ms: now,
            wide: false,
            nodes: &nodes,
        };
        let v = fixture();
        let p = printer(Kind::PodDisruptionBudget);
        assert_eq!(
            p.table(std::slice::from_ref(&v), &ctx, Layout::default())
                .unwrap(),
            "NAME   MIN AVAILABLE   MAX UNAVAILABLE   ALLOWED DISRUPTIONS   AGE\n\
             web    2               N/A               0                     10m\n"
        );
        let d = describe(&Subject {
            object: &v,
            related: &[],
            events: &[],
            usage: None,
            node: None,
            now_ms: now,
        })
        .unwrap();
        assert_eq!(
            d,
            "Name:           web\n\
             Namespace:      default\n\
             CreationTimestamp: 2026-12-02T06:50:00.000Z (10m ago)\n\
             Labels:         <none>\n\
             Annotations:    <none>\n\
             Min available:  2\n\
             Selector:       app=web\n\
             Status:\n    \
             Allowed disruptions:  0\n    \
             Current:              2\n    \
             Desired:              2\n    \
             Total:                3\n    \
             Disrupted pods:       web-7d4b9-x2kqp (evicted 30s ago)\n    \
             DisruptionAllowed:    False (InsufficientPods)\n\
             Events:  <none>\n"
        );
    }
}
