//! `apps/v1 ReplicaSet`, and the selector and template every workload
//! has.

use super::meta::{label_selector, metadata, NameRule};
use super::pod::{template, wire_check};
use super::walk::{Obj, Treat, Walker};
use crate::api::apps::{ReplicaSet, ReplicaSetSpec};
use crate::api::pod::{Pod, PodTemplateSpec};
use crate::api::selector::LabelSelector;
use crate::api::Kind;

/// `spec.selector` and `spec.template` of a workload: the selector must
/// select the template's pods (and not every pod).
pub fn selector_and_template(w: &mut Walker, spec: &Obj<'_>) -> (LabelSelector, PodTemplateSpec) {
    let selector = match w.required("spec", spec, "selector") {
        Some(v) => label_selector(w, "spec.selector", v),
        None => None,
    };
    if selector.as_ref().is_some_and(LabelSelector::is_empty) {
        w.err(
            "spec.selector",
            "must not be empty (it would select every pod in the namespace)",
        );
    }
    let template = template(w, "spec.template", spec.get("template"));
    if let Some(s) = &selector {
        if !s.is_empty() && !s.matches(&template.metadata.labels) {
            w.err(
                "spec.template.metadata.labels",
                "`selector` does not match template `labels`",
            );
        }
    }
    let pod = Pod {
        metadata: template.metadata.clone(),
        spec: template.spec.clone(),
        status: Default::default(),
    };
    if w.problems.is_empty() {
        let mut named = pod;
        named.metadata.generate_name = "template-".into();
        wire_check(w, "spec.template", &named);
    }
    (selector.unwrap_or_default(), template)
}

/// `spec.replicas` (default 1).
pub fn replicas(w: &mut Walker, spec: &Obj<'_>) -> i32 {
    w.opt_int("spec", spec, "replicas", 0, i64::from(i32::MAX))
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or(1)
}

/// `spec.minReadySeconds` (default 0).
pub fn min_ready_seconds(w: &mut Walker, spec: &Obj<'_>) -> i32 {
    w.opt_int("spec", spec, "minReadySeconds", 0, i64::from(i32::MAX))
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or(0)
}

/// An `apps/v1 ReplicaSet` document.
pub fn replicaset(w: &mut Walker, top: &Obj<'_>) -> ReplicaSet {
    let metadata = metadata(
        w,
        top.get("metadata"),
        Kind::ReplicaSet,
        NameRule::Subdomain,
    );
    let mut rs = ReplicaSet {
        metadata,
        ..ReplicaSet::default()
    };
    let Some(v) = w.required("", top, "spec") else {
        return rs;
    };
    let Some(s) = w.obj(
        "spec",
        v,
        &[
            ("replicas", Treat::Use),
            ("minReadySeconds", Treat::Use),
            ("selector", Treat::Use),
            ("template", Treat::Use),
        ],
    ) else {
        return rs;
    };
    let replicas = replicas(w, &s);
    let min_ready_seconds = min_ready_seconds(w, &s);
    let (selector, template) = selector_and_template(w, &s);
    rs.spec = ReplicaSetSpec {
        replicas,
        min_ready_seconds,
        selector,
        template,
    };
    rs
}
