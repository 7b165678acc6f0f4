//! `policy/v1 PodDisruptionBudget`: exactly one of `minAvailable` and
//! `maxUnavailable` (a count, or a percentage up to 100%), a selector,
//! and `unhealthyPodEvictionPolicy`.

use super::deployment::count_or_percent;
use super::meta::{label_selector, metadata, NameRule};
use super::walk::{join, Obj, Treat, Walker};
use crate::api::policy::{
    PodDisruptionBudget, PodDisruptionBudgetSpec, UnhealthyPodEvictionPolicy,
};
use crate::api::Kind;

/// A `PodDisruptionBudget` document (its top-level keys already checked).
pub fn pod_disruption_budget(w: &mut Walker, top: &Obj<'_>) -> PodDisruptionBudget {
    let metadata = metadata(
        w,
        top.get("metadata"),
        Kind::PodDisruptionBudget,
        NameRule::Subdomain,
    );
    let mut pdb = PodDisruptionBudget {
        metadata,
        ..PodDisruptionBudget::default()
    };
    let Some(v) = w.required("", top, "spec") else {
        return pdb;
    };
    let path = "spec";
    let Some(s) = w.obj(
        path,
        v,
        &[
            ("minAvailable", Treat::Use),
            ("maxUnavailable", Treat::Use),
            ("selector", Treat::Use),
            ("unhealthyPodEvictionPolicy", Treat::Use),
        ],
    ) else {
        return pdb;
    };
    let min_available = s
        .get("minAvailable")
        .and_then(|v| count_or_percent(w, &join(path, "minAvailable"), v, Some(100)));
    let max_unavailable = s
        .get("maxUnavailable")
        .and_then(|v| count_or_percent(w, &join(path, "maxUnavailable"), v, Some(100)));
    match (s.has("minAvailable"), s.has("maxUnavailable")) {
        (true, true) => w.err(
            &join(path, "maxUnavailable"),
            "minAvailable and maxUnavailable cannot be both set; give one of them",
        ),
        (false, false) => w.err(
            path,
            "give one of minAvailable or maxUnavailable (a count such as 2, or a percentage such as 50%)",
        ),
        _ => {}
    }
    let selector = match s.get("selector") {
        Some(v) => label_selector(w, &join(path, "selector"), v),
        None => {
            w.warn(
                &join(path, "selector"),
                "not given: this budget selects no pods (an empty selector {} selects every pod of the namespace)",
            );
            None
        }
    };
    let unhealthy_pod_eviction_policy = s
        .get("unhealthyPodEvictionPolicy")
        .and_then(|v| {
            w.one_of(
                &join(path, "unhealthyPodEvictionPolicy"),
                v,
                &["IfHealthyBudget", "AlwaysAllow"],
            )
        })
        .map(|p| match p.as_str() {
            "AlwaysAllow" => UnhealthyPodEvictionPolicy::AlwaysAllow,
            _ => UnhealthyPodEvictionPolicy::IfHealthyBudget,
        });
    pdb.spec = PodDisruptionBudgetSpec {
        min_available,
        max_unavailable,
        selector,
        unhealthy_pod_eviction_policy,
    };
    pdb
}

#[cfg(test)]
mod tests {
    use super::super::{validate, Problem};
    use crate::api::meta::IntOrString;
    use crate::api::Object;
    use serde_json::{json, Value};

    fn pdb(spec: Value) -> Value {
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
               "metadata": {"name": "web"}, "spec": spec})
    }

    fn problems(v: &Value) -> Vec<String> {
        match validate(v) {
            Ok(x) => panic!("accepted: {:?}", x.object),
            Err(p) => p.iter().map(Problem::to_string).collect(),
        }
    }

    #[test]
    fn a_budget_takes_one_count_or_percentage_and_a_selector() {
        let v = validate(&pdb(
            json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}),
        ))
        .unwrap();
        let Object::PodDisruptionBudget(b) = v.object else {
            panic!("a budget")
        };
        assert_eq!(b.metadata.namespace, "default");
        assert_eq!(b.spec.min_available, Some(IntOrString::Int(2)));
        assert_eq!(b.spec.max_unavailable, None);
        assert!(b.spec.selector.is_some());
        assert!(v.warnings.is_empty(), "{:?}", v.warnings);
        let v = validate(&pdb(json!({
            "maxUnavailable": "25%",
            "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]},
            "unhealthyPodEvictionPolicy": "AlwaysAllow"
        })))
        .unwrap();
        let Object::PodDisruptionBudget(b) = v.object else {
            panic!("a budget")
        };
        assert_eq!(
            b.spec.max_unavailable,
            Some(IntOrString::String("25%".into()))
        );
        // No selector: accepted with a warning (it selects nothing).
        let v = validate(&pdb(json!({"minAvailable": 1}))).unwrap();
        assert_eq!(v.warnings.len(), 1);
        assert!(
            v.warnings[0].starts_with("spec.selector: not given"),
            "{:?}",
            v.warnings
        );
    }

    #[test]
    fn wrong_budgets_are_refused_by_field() {
        let sel = json!({"matchLabels": {"app": "web"}});
        for (spec, want) in [
            (
                json!({"minAvailable": 1, "maxUnavailable": 1, "selector": sel}),
                "spec.maxUnavailable: minAvailable and maxUnavailable cannot be both set; give one of them",
            ),
            (
                json!({"selector": sel}),
                "spec: give one of minAvailable or maxUnavailable (a count such as 2, or a percentage such as 50%)",
            ),
            (
                json!({"minAvailable": "150%", "selector": sel}),
                "spec.minAvailable: 150% is out of range: must be from 0% to 100%",
            ),
            (
                json!({"maxUnavailable": -1, "selector": sel}),
                "spec.maxUnavailable: -1 is out of range: must be from 0 to 2147483647",
            ),
            (
                json!({"minAvailable": "half", "selector": sel}),
                "spec.minAvailable: \"half\" is neither a count (1) nor a percentage (25%)",
            ),
            (
                json!({"minAvailable": 1, "selector": sel, "unhealthyPodEvictionPolicy": "Never"}),
                "spec.unhealthyPodEvictionPolicy: \"Never\" is not one of IfHealthyBudget, AlwaysAllow",
            ),
        ] {
            assert_eq!(problems(&pdb(spec.clone())), [want], "{spec}");
        }
        let p = problems(&pdb(
            json!({"minAvailable": 1, "selector": sel, "maxDisruptions": 2}),
        ));
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("spec.maxDisruptions: not supported"),
            "{p:?}"
        );
    }
}
