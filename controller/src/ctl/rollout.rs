//! `outpostctl rollout`: kubectl's `rollout status|history|undo|restart|
//! pause|resume` for Deployments, decided here without I/O.
//!
//! Flow: the CLI gets the Deployment (and, for history and undo, its
//! ReplicaSets) as the operator API serves them (Kubernetes JSON); the
//! functions here return what to print, or the Deployment to apply back.
//! A Deployment to apply keeps the `resourceVersion` it was read at, so
//! any write made meanwhile (another operator's, or the controller's
//! status) answers Conflict instead of being overwritten; the CLI then
//! reads again and decides again (client-go's `RetryOnConflict`).
//! Messages and checks are kubectl's (`rollout_status.go`, `history.go`,
//! `rollback.go`, `objectpauser.go`, `objectrestarter.go`).

use super::RenderError;
use crate::api::apps::{
    condition, Deployment, ReplicaSet, CHANGE_CAUSE_ANNOTATION, POD_TEMPLATE_HASH,
    REVISION_ANNOTATION,
};
use crate::api::pod::PodTemplateSpec;
use crate::api::{Kind, Time};
use crate::controllers::deployment::{equal_ignore_hash, revision, PROGRESSING, TIMED_OUT};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Annotation `rollout restart` sets on the pod template (kubectl's).
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";

/// Deployment annotations an undo keeps from the Deployment instead of
/// taking them from the ReplicaSet (kubectl's `annotationsToSkip`: the
/// ones the Deployment controller never copies to its ReplicaSets).
const KEPT_ON_UNDO: [&str; 6] = crate::controllers::deployment::NOT_COPIED;

/// Why a rollout command cannot do what was asked (kubectl's messages).
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("deployment {0:?} exceeded its progress deadline")]
    DeadlineExceeded(String),
    #[error("desired revision ({want}) is different from the running revision ({running})")]
    RevisionMismatch { want: i64, running: i64 },
    #[error("unable to find specified revision {0} in history (`outpostctl rollout history deployment/{1}` lists them)")]
    RevisionNotFound(i64, String),
    #[error("no rollout history found for deployment {0:?}: it has had one revision only")]
    NoHistory(String),
    #[error("you cannot rollback a paused deployment; resume it first with `outpostctl rollout resume deployment/{0}` and try again")]
    UndoPaused(String),
    #[error("deployments.apps {0:?} can't restart paused deployment (run `outpostctl rollout resume deployment/{0}` first)")]
    RestartPaused(String),
    #[error("deployments.apps {0:?} is already paused")]
    AlreadyPaused(String),
    #[error("deployments.apps {0:?} is not paused")]
    NotPaused(String),
    #[error(transparent)]
    Render(#[from] RenderError),
}

fn deployment(v: &Value) -> Result<Deployment, RolloutError> {
    Ok(super::decode(Kind::Deployment, v)?)
}

/// What `rollout status` says of a Deployment once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// One line, ending in a newline, as kubectl prints it.
    pub message: String,
    /// The rollout is over (successfully rolled out).
    pub done: bool,
}

/// kubectl's `DeploymentStatusViewer.Status`: the progress line, or the
/// error when the progress deadline passed; `revision` pins the revision
/// the rollout must be at (`--revision`).
pub fn status(v: &Value, revision: Option<i64>) -> Result<Status, RolloutError> {
    let d = deployment(v)?;
    let name = &d.metadata.name;
    if let Some(want) = revision.filter(|r| *r > 0) {
        let running = d
            .metadata
            .annotations
            .get(REVISION_ANNOTATION)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        if running != want {
            return Err(RolloutError::RevisionMismatch { want, running });
        }
    }
    let waiting = |message: String| {
        Ok(Status {
            message,
            done: false,
        })
    };
    if d.metadata.generation > d.status.observed_generation {
        return waiting("Waiting for deployment spec update to be observed...\n".into());
    }
    if condition(&d.status.conditions, PROGRESSING).is_some_and(|c| c.reason == TIMED_OUT) {
        return Err(RolloutError::DeadlineExceeded(name.clone()));
    }
    let (spec, st) = (d.spec.replicas, &d.status);
    if st.updated_replicas < spec {
        return waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {} out of {spec} new replicas have been updated...\n",
            st.updated_replicas
        ));
    }
    if st.replicas > st.updated_replicas {
        return waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...\n",
            st.replicas - st.updated_replicas
        ));
    }
    if st.available_replicas < st.updated_replicas {
        return waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {} of {} updated replicas are available...\n",
            st.available_replicas, st.updated_replicas
        ));
    }
    Ok(Status {
        message: format!("deployment {name:?} successfully rolled out\n"),
        done: true,
    })
}

/// The ReplicaSets among `all` whose controller is the Deployment `d`.
pub fn owned_replicasets(d: &Value, all: &[Value]) -> Result<Vec<ReplicaSet>, RolloutError> {
    let uid = d["metadata"]["uid"].as_str().unwrap_or_default();
    let mut out = Vec::new();
    for v in all {
        let rs: ReplicaSet = super::decode(Kind::ReplicaSet, v)?;
        if rs.metadata.controller_ref().is_some_and(|r| r.uid == uid) {
            out.push(rs);
        }
    }
    Ok(out)
}

/// The revisions of a Deployment's ReplicaSets with their templates (the
/// change cause of each ReplicaSet added to its template's annotations,
/// as kubectl shows it).
fn revisions(rss: &[ReplicaSet]) -> BTreeMap<i64, PodTemplateSpec> {
    let mut out = BTreeMap::new();
    for rs in rss {
        let rev = revision(rs);
        if rev <= 0 {
            continue;
        }
        let mut t = rs.spec.template.clone();
        if let Some(c) = rs
            .metadata
            .annotations
            .get(CHANGE_CAUSE_ANNOTATION)
            .filter(|c| !c.is_empty())
        {
            t.metadata
                .annotations
                .insert(CHANGE_CAUSE_ANNOTATION.to_string(), c.clone());
        }
        out.insert(rev, t);
    }
    out
}

/// `rollout history deployment NAME [--revision N]`, as kubectl prints
/// it: the name line, then the REVISION / CHANGE-CAUSE table (or one
/// revision's pod template).
pub fn history(name: &str, rss: &[ReplicaSet], rev: Option<i64>) -> Result<String, RolloutError> {
    let all = revisions(rss);
    let head = format!("{}/{name}", Kind::Deployment.qualified());
    if all.is_empty() {
        return Ok(format!("{head} \nNo rollout history found.\n"));
    }
    if let Some(r) = rev.filter(|r| *r > 0) {
        let t = all
            .get(&r)
            .ok_or_else(|| RolloutError::RevisionNotFound(r, name.to_string()))?;
        let mut o = format!("{head} with revision #{r}\n");
        super::pods::template_section(&mut o, t);
        o.push('\n');
        return Ok(o);
    }
    let rows: Vec<(String, String)> = all
        .iter()
        .map(|(r, t)| {
            let cause = t
                .metadata
                .annotations
                .get(CHANGE_CAUSE_ANNOTATION)
                .cloned()
                .unwrap_or_else(|| "<none>".into());
            (r.to_string(), cause)
        })
        .collect();
    // kubectl's tab writer here pads with two spaces.
    let width = rows
        .iter()
        .map(|(r, _)| r.len())
        .chain(["REVISION".len()])
        .max()
        .unwrap_or(0);
    let mut o = format!("{head} \n");
    let _ = writeln!(o, "{:width$}  CHANGE-CAUSE", "REVISION");
    for (r, c) in rows {
        let _ = writeln!(o, "{r:width$}  {c}");
    }
    o.push('\n');
    Ok(o)
}

/// What an undo does.
#[derive(Debug, Clone, PartialEq)]
pub enum Undo {
    /// The Deployment to apply back (the revision's template).
    Apply(Value),
    /// Nothing: the template is already that revision's; kubectl's
    /// message (`skipped rollback (current template already matches
    /// revision 2)`).
    Skipped(String),
}

/// kubectl's `deploymentRevision`: the ReplicaSet of revision `to`, or
/// (0) the one before the current revision.
fn revision_to(d: &Deployment, rss: &[ReplicaSet], to: i64) -> Result<ReplicaSet, RolloutError> {
    let name = d.metadata.name.clone();
    if to > 0 {
        return rss
            .iter()
            .find(|rs| revision(rs) == to)
            .cloned()
            .ok_or(RolloutError::RevisionNotFound(to, name));
    }
    let mut by_rev: Vec<&ReplicaSet> = rss.iter().filter(|rs| revision(rs) > 0).collect();
    by_rev.sort_by_key(|rs| std::cmp::Reverse(revision(rs)));
    by_rev
        .get(1)
        .map(|rs| (*rs).clone())
        .ok_or(RolloutError::NoHistory(name))
}

/// `rollout undo deployment NAME [--to-revision N]`, as kubectl's
/// `DeploymentRollbacker`: the revision's template without its
/// `pod-template-hash` label becomes the Deployment's template, and its
/// ReplicaSet's annotations (the change cause among them) the
/// Deployment's, but for those kubectl keeps.
pub fn undo(v: &Value, rss: &[ReplicaSet], to: i64) -> Result<Undo, RolloutError> {
    let d = deployment(v)?;
    if d.spec.paused {
        return Err(RolloutError::UndoPaused(d.metadata.name.clone()));
    }
    let rs = revision_to(&d, rss, to)?;
    if equal_ignore_hash(&rs.spec.template, &d.spec.template) {
        return Ok(Undo::Skipped(format!(
            "skipped rollback (current template already matches revision {})",
            revision(&rs)
        )));
    }
    let mut template = rs.spec.template.clone();
    template.metadata.labels.remove(POD_TEMPLATE_HASH);
    let mut annotations: BTreeMap<String, String> = d
        .metadata
        .annotations
        .iter()
        .filter(|(k, _)| KEPT_ON_UNDO.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, val) in &rs.metadata.annotations {
        if !KEPT_ON_UNDO.contains(&k.as_str()) {
            annotations.insert(k.clone(), val.clone());
        }
    }
    let mut out = v.clone();
    out["spec"]["template"] = serde_json::to_value(&template).unwrap_or_default();
    out["metadata"]["annotations"] = json!(annotations);
    Ok(Undo::Apply(for_apply(&out)))
}

/// `rollout restart`: a new `restartedAt` on the pod template (a new
/// template, so a new rollout), as kubectl's `defaultObjectRestarter`.
pub fn restart(v: &Value, now: Time) -> Result<Value, RolloutError> {
    let d = deployment(v)?;
    if d.spec.paused {
        return Err(RolloutError::RestartPaused(d.metadata.name.clone()));
    }
    let mut out = for_apply(v);
    let meta = &mut out["spec"]["template"]["metadata"];
    if !meta.is_object() {
        *meta = json!({});
    }
    if !meta["annotations"].is_object() {
        meta["annotations"] = json!({});
    }
    meta["annotations"][RESTARTED_AT_ANNOTATION] = json!(super::rfc3339(now.ms()));
    Ok(out)
}

/// `rollout pause` (`on`) or `rollout resume`.
pub fn pause(v: &Value, on: bool) -> Result<Value, RolloutError> {
    let d = deployment(v)?;
    let name = d.metadata.name.clone();
    match (on, d.spec.paused) {
        (true, true) => return Err(RolloutError::AlreadyPaused(name)),
        (false, false) => return Err(RolloutError::NotPaused(name)),
        _ => {}
    }
    let mut out = for_apply(v);
    match out["spec"].as_object_mut() {
        Some(spec) if on => {
            spec.insert("paused".into(), json!(true));
        }
        Some(spec) => {
            spec.remove("paused");
        }
        None => {}
    }
    Ok(out)
}

/// An object as the API served it, made into a manifest to apply back:
/// what the operator owns (spec, labels, annotations, owner references)
/// and the `resourceVersion` it was read at; no status and none of the
/// metadata Outpost sets.
pub fn for_apply(v: &Value) -> Value {
    let mut meta = Map::new();
    for k in [
        "name",
        "namespace",
        "labels",
        "annotations",
        "ownerReferences",
        "resourceVersion",
    ] {
        if let Some(x) = v["metadata"].get(k) {
            meta.insert(k.into(), x.clone());
        }
    }
    let mut spec = v["spec"].clone();
    // A template's metadata is its labels and annotations (the API
    // serves an empty name with it, which apply would warn about).
    if let Some(m) = spec
        .get_mut("template")
        .and_then(|t| t.get_mut("metadata"))
        .and_then(Value::as_object_mut)
    {
        m.retain(|k, _| k == "labels" || k == "annotations");
    }
    json!({
        "apiVersion": v["apiVersion"],
        "kind": v["kind"],
        "metadata": meta,
        "spec": spec,
    })
}

#[cfg(test)]
mod tests;
