//! Deployments and ReplicaSets: their `get` rows and descriptions, read
//! from their Kubernetes JSON (and, for descriptions, the ReplicaSets a
//! Deployment owns and the pods a ReplicaSet owns).

use super::{age_of, decode, meta_fields, table, Context, Describe, RenderError, Row, Subject};
use crate::api::apps::{WorkloadCondition, POD_TEMPLATE_HASH};
use crate::api::pod::{PodPhase, PodTemplateSpec};
use crate::api::{Deployment, Kind, Pod, ReplicaSet};
use serde_json::Value;

/// CONTAINERS, IMAGES and SELECTOR, the wide columns of both kinds.
fn wide_cells(t: &PodTemplateSpec, selector: String) -> [String; 3] {
    let names: Vec<&str> = t.spec.containers.iter().map(|c| c.name.as_str()).collect();
    let images: Vec<&str> = t.spec.containers.iter().map(|c| c.image.as_str()).collect();
    [
        names.join(","),
        images.join(","),
        if selector.is_empty() {
            "<none>".into()
        } else {
            selector
        },
    ]
}

/// `get deployments`: READY UP-TO-DATE AVAILABLE AGE (+ wide).
pub fn deployment_row(v: &Value, ctx: &Context<'_>) -> Result<Row, RenderError> {
    let d: Deployment = decode(Kind::Deployment, v)?;
    let st = &d.status;
    let mut cells = vec![
        format!("{}/{}", st.ready_replicas, d.spec.replicas),
        st.updated_replicas.to_string(),
        st.available_replicas.to_string(),
        age_of(d.metadata.creation_timestamp, ctx.now_ms),
    ];
    cells.extend(wide_cells(&d.spec.template, d.spec.selector.to_query()));
    Ok(Row::of(v, cells))
}

/// `get replicasets`: DESIRED CURRENT READY AGE (+ wide).
pub fn replicaset_row(v: &Value, ctx: &Context<'_>) -> Result<Row, RenderError> {
    let r: ReplicaSet = decode(Kind::ReplicaSet, v)?;
    let mut cells = vec![
        r.spec.replicas.to_string(),
        r.status.replicas.to_string(),
        r.status.ready_replicas.to_string(),
        age_of(r.metadata.creation_timestamp, ctx.now_ms),
    ];
    cells.extend(wide_cells(&r.spec.template, r.spec.selector.to_query()));
    Ok(Row::of(v, cells))
}

/// The `Conditions:` table of a workload.
fn conditions(o: &mut String, cs: &[WorkloadCondition]) {
    if cs.is_empty() {
        return;
    }
    o.push_str("Conditions:\n");
    let mut rows = vec![vec!["----".into(), "------".into(), "------".into()]];
    rows.extend(
        cs.iter()
            .map(|c| vec![c.kind.clone(), c.status.name().into(), c.reason.clone()]),
    );
    for l in table(&["Type", "Status", "Reason"], &rows).lines() {
        o.push_str("  ");
        o.push_str(l);
        o.push('\n');
    }
}

fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    t.metadata.labels.remove(POD_TEMPLATE_HASH);
    t
}

/// The ReplicaSet running the Deployment's current template (kubectl's
/// `FindNewReplicaSet`: equal templates, ignoring the hash label; the
/// oldest when several match).
fn new_replicaset<'a>(d: &Deployment, owned: &'a [ReplicaSet]) -> Option<&'a ReplicaSet> {
    let want = without_hash(&d.spec.template);
    owned
        .iter()
        .filter(|r| without_hash(&r.spec.template) == want)
        .min_by_key(|r| (r.metadata.creation_timestamp, r.metadata.name.clone()))
}

fn replicasets_text(rs: &[&ReplicaSet]) -> String {
    if rs.is_empty() {
        return "<none>".into();
    }
    rs.iter()
        .map(|r| {
            format!(
                "{} ({}/{} replicas created)",
                r.metadata.name, r.status.replicas, r.spec.replicas
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn decode_all<T: serde::de::DeserializeOwned>(
    kind: Kind,
    vs: &[Value],
) -> Result<Vec<T>, RenderError> {
    vs.iter().map(|v| decode(kind, v)).collect()
}

/// `describe deployment`.
pub fn describe_deployment(s: &Subject<'_>) -> Result<String, RenderError> {
    let dep: Deployment = decode(Kind::Deployment, s.object)?;
    let mut owned: Vec<ReplicaSet> = decode_all(Kind::ReplicaSet, s.related)?;
    owned.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let (spec, st) = (&dep.spec, &dep.status);
    let mut d = Describe::new(24);
    meta_fields(&mut d, &dep.metadata, s.now_ms);
    d.field("Selector", super::or_none(&spec.selector.to_query()));
    d.field(
        "Replicas",
        format!(
            "{} desired | {} updated | {} total | {} available | {} unavailable",
            spec.replicas,
            st.updated_replicas,
            st.replicas,
            st.available_replicas,
            st.unavailable_replicas
        ),
    );
    d.field("StrategyType", format!("{:?}", spec.strategy.kind));
    d.field("MinReadySeconds", spec.min_ready_seconds);
    if let Some(ru) = &spec.strategy.rolling_update {
        d.field(
            "RollingUpdateStrategy",
            format!(
                "{} max unavailable, {} max surge",
                ru.max_unavailable, ru.max_surge
            ),
        );
    }
    if spec.paused {
        d.field("Paused", "true (rollouts wait for `rollout resume`)");
    }
    let mut o = d.finish();
    super::pods::template_section(&mut o, &spec.template);
    conditions(&mut o, &st.conditions);
    let new = new_replicaset(&dep, &owned);
    let old: Vec<&ReplicaSet> = owned
        .iter()
        .filter(|r| new.is_none_or(|n| n.metadata.uid != r.metadata.uid) && r.spec.replicas != 0)
        .collect();
    let mut d = Describe::new(17);
    d.field("OldReplicaSets", replicasets_text(&old));
    d.field(
        "NewReplicaSet",
        replicasets_text(&new.into_iter().collect::<Vec<_>>()),
    );
    o.push_str(&d.finish());
    super::events::section(&mut o, s.events, s.now_ms);
    Ok(o)
}

/// `describe replicaset`.
pub fn describe_replicaset(s: &Subject<'_>) -> Result<String, RenderError> {
    let rs: ReplicaSet = decode(Kind::ReplicaSet, s.object)?;
    let pods: Vec<Pod> = decode_all(Kind::Pod, s.related)?;
    let mut d = Describe::new(16);
    meta_fields(&mut d, &rs.metadata, s.now_ms);
    d.field("Selector", super::or_none(&rs.spec.selector.to_query()));
    if let Some(c) = rs.metadata.controller_ref() {
        d.field("Controlled By", format!("{}/{}", c.kind, c.name));
    }
    d.field(
        "Replicas",
        format!(
            "{} current / {} desired",
            rs.status.replicas, rs.spec.replicas
        ),
    );
    let count = |phase: PodPhase| pods.iter().filter(|p| p.status.phase == phase).count();
    d.field(
        "Pods Status",
        format!(
            "{} Running / {} Waiting / {} Succeeded / {} Failed",
            count(PodPhase::Running),
            count(PodPhase::Pending),
            count(PodPhase::Succeeded),
            count(PodPhase::Failed)
        ),
    );
    let mut o = d.finish();
    super::pods::template_section(&mut o, &rs.spec.template);
    conditions(&mut o, &rs.status.conditions);
    super::events::section(&mut o, s.events, s.now_ms);
    Ok(o)
}
