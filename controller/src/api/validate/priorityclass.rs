//! `scheduling.k8s.io/v1 PriorityClass`. That at most one class is the
//! global default is checked at admission, which sees the others.

use super::meta::{metadata, NameRule};
use super::pod::preemption_policy;
use super::walk::{Obj, Walker};
use crate::api::scheduling::{PriorityClass, HIGHEST_USER_PRIORITY};
use crate::api::Kind;
use outpost_proto::pod::pod_limits::MAX_TEXT;

/// A `PriorityClass` document (its top-level keys already checked).
pub fn priority_class(w: &mut Walker, top: &Obj<'_>) -> PriorityClass {
    let metadata = metadata(
        w,
        top.get("metadata"),
        Kind::PriorityClass,
        NameRule::Subdomain,
    );
    if metadata.name.starts_with("system-") {
        w.err(
            "metadata.name",
            "the system- prefix is reserved for Kubernetes' own classes",
        );
    }
    let value = w
        .required("", top, "value")
        .and_then(|v| {
            w.int(
                "value",
                v,
                i64::from(i32::MIN),
                i64::from(HIGHEST_USER_PRIORITY),
            )
        })
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or(0);
    PriorityClass {
        metadata,
        value,
        global_default: w.flag("", top, "globalDefault"),
        description: w
            .opt_text("", top, "description", MAX_TEXT)
            .unwrap_or_default(),
        preemption_policy: top
            .get("preemptionPolicy")
            .and_then(|v| preemption_policy(w, "preemptionPolicy", v)),
    }
}
