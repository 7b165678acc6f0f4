//! `apps/v1 Deployment`: a ReplicaSet's fields plus how a new template is
//! rolled out.

use super::meta::{metadata, NameRule};
use super::replicaset::{min_ready_seconds, replicas, selector_and_template};
use super::walk::{join, show, Treat, Walker};
use crate::api::apps::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdate, StrategyType,
};
use crate::api::meta::IntOrString;
use crate::api::Kind;
use serde_json::Value;

/// An `apps/v1 Deployment` document.
pub fn deployment(w: &mut Walker, top: &super::walk::Obj<'_>) -> Deployment {
    let metadata = metadata(
        w,
        top.get("metadata"),
        Kind::Deployment,
        NameRule::Subdomain,
    );
    let mut d = Deployment {
        metadata,
        ..Deployment::default()
    };
    let Some(v) = w.required("", top, "spec") else {
        return d;
    };
    let Some(s) = w.obj(
        "spec",
        v,
        &[
            ("replicas", Treat::Use),
            ("selector", Treat::Use),
            ("template", Treat::Use),
            ("strategy", Treat::Use),
            ("minReadySeconds", Treat::Use),
            ("revisionHistoryLimit", Treat::Use),
            ("progressDeadlineSeconds", Treat::Use),
            ("paused", Treat::Use),
        ],
    ) else {
        return d;
    };
    let replicas = replicas(w, &s);
    let min_ready_seconds = min_ready_seconds(w, &s);
    let (selector, template) = selector_and_template(w, &s);
    let strategy = strategy(w, s.get("strategy"));
    let revision_history_limit = w
        .opt_int("spec", &s, "revisionHistoryLimit", 0, i64::from(i32::MAX))
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or(10);
    let progress_deadline_seconds = w
        .opt_int(
            "spec",
            &s,
            "progressDeadlineSeconds",
            1,
            i64::from(i32::MAX),
        )
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or(600);
    if progress_deadline_seconds <= min_ready_seconds {
        w.err(
            "spec.progressDeadlineSeconds",
            format!(
                "{progress_deadline_seconds} must be greater than minReadySeconds ({min_ready_seconds})"
            ),
        );
    }
    let paused = w.flag("spec", &s, "paused");
    d.spec = DeploymentSpec {
        replicas,
        selector,
        template,
        strategy,
        min_ready_seconds,
        revision_history_limit,
        progress_deadline_seconds,
        paused,
    };
    d
}

fn strategy(w: &mut Walker, v: Option<&Value>) -> DeploymentStrategy {
    let default = DeploymentStrategy {
        kind: StrategyType::RollingUpdate,
        rolling_update: Some(RollingUpdate::default()),
    };
    let Some(v) = v else { return default };
    let path = "spec.strategy";
    let Some(o) = w.obj(
        path,
        v,
        &[("type", Treat::Use), ("rollingUpdate", Treat::Use)],
    ) else {
        return default;
    };
    let kind = match o
        .get("type")
        .map(|t| w.one_of(&join(path, "type"), t, &["RollingUpdate", "Recreate"]))
    {
        Some(Some(t)) if t == "Recreate" => StrategyType::Recreate,
        _ => StrategyType::RollingUpdate,
    };
    let rp = join(path, "rollingUpdate");
    match (kind, o.get("rollingUpdate")) {
        (StrategyType::Recreate, Some(_)) => {
            w.err(&rp, "must not be given with type Recreate");
            DeploymentStrategy {
                kind,
                rolling_update: None,
            }
        }
        (StrategyType::Recreate, None) => DeploymentStrategy {
            kind,
            rolling_update: None,
        },
        (StrategyType::RollingUpdate, None) => default,
        (StrategyType::RollingUpdate, Some(r)) => {
            let mut ru = RollingUpdate::default();
            if let Some(ro) = w.obj(
                &rp,
                r,
                &[("maxSurge", Treat::Use), ("maxUnavailable", Treat::Use)],
            ) {
                if let Some(s) = ro
                    .get("maxSurge")
                    .and_then(|v| count_or_percent(w, &join(&rp, "maxSurge"), v, None))
                {
                    ru.max_surge = s;
                }
                if let Some(u) = ro
                    .get("maxUnavailable")
                    .and_then(|v| count_or_percent(w, &join(&rp, "maxUnavailable"), v, Some(100)))
                {
                    ru.max_unavailable = u;
                }
                if is_zero(&ru.max_surge) && is_zero(&ru.max_unavailable) {
                    w.err(
                        &join(&rp, "maxUnavailable"),
                        "may not be 0 when maxSurge is 0 (the rollout could never make progress)",
                    );
                }
            }
            DeploymentStrategy {
                kind,
                rolling_update: Some(ru),
            }
        }
    }
}

fn is_zero(v: &IntOrString) -> bool {
    matches!(v, IntOrString::Int(0)) || matches!(v, IntOrString::String(s) if s == "0%")
}

/// A count (`1`) or a percentage (`25%`), at most `max_percent` percent.
pub(super) fn count_or_percent(
    w: &mut Walker,
    path: &str,
    v: &Value,
    max_percent: Option<i64>,
) -> Option<IntOrString> {
    match v {
        Value::String(s) => {
            let p = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok());
            match p {
                Some(p) if p >= 0 && max_percent.is_none_or(|m| p <= m) => {
                    Some(IntOrString::String(s.clone()))
                }
                Some(_) => {
                    w.err(
                        path,
                        format!(
                            "{s} is out of range: must be from 0% to {}%",
                            max_percent.unwrap_or(i64::from(i32::MAX))
                        ),
                    );
                    None
                }
                None => {
                    w.err(
                        path,
                        format!("{} is neither a count (1) nor a percentage (25%)", show(v)),
                    );
                    None
                }
            }
        }
        _ => w.int(path, v, 0, i64::from(i32::MAX)).map(IntOrString::Int),
    }
}
