//! PriorityClasses: the `get priorityclasses` row and `describe`.

use super::{age_of, decode, Context, Describe, RenderError, Row, Subject};
use crate::api::pod::PreemptionPolicy;
use crate::api::{Kind, PriorityClass};
use serde_json::Value;

fn policy(pc: &PriorityClass) -> PreemptionPolicy {
    pc.preemption_policy.unwrap_or_default()
}

/// `get priorityclasses`: VALUE GLOBAL-DEFAULT AGE (+ PREEMPTIONPOLICY).
pub fn row(v: &Value, ctx: &Context<'_>) -> Result<Row, RenderError> {
    let pc: PriorityClass = decode(Kind::PriorityClass, v)?;
    Ok(Row::of(
        v,
        vec![
            pc.value.to_string(),
            pc.global_default.to_string(),
            age_of(pc.metadata.creation_timestamp, ctx.now_ms),
            format!("{:?}", policy(&pc)),
        ],
    ))
}

/// `describe priorityclass`.
pub fn describe(s: &Subject<'_>) -> Result<String, RenderError> {
    let pc: PriorityClass = decode(Kind::PriorityClass, s.object)?;
    let mut d = Describe::new(19);
    d.field("Name", &pc.metadata.name)
        .field("Value", pc.value)
        .field("GlobalDefault", pc.global_default)
        .field("PreemptionPolicy", format!("{:?}", policy(&pc)))
        .field("Description", super::or_none(&pc.description))
        .list(
            "Annotations",
            &super::labels_text(&pc.metadata.annotations, ": "),
        );
    let mut o = d.finish();
    super::events::section(&mut o, s.events, s.now_ms);
    Ok(o)
}
