//! Bootstrap tokens: `get tokens` / `token list` and their JSON (never a
//! secret: the listing has none).

use super::{rfc3339, table};
use outpost_proto::units::format_duration;
use outpost_proto::TokenInfo;
use serde_json::{json, Value};
use std::time::Duration;

pub fn token_json(t: &TokenInfo) -> Value {
    json!({
        "apiVersion": "outpost.dev/v1",
        "kind": "BootstrapToken",
        "metadata": {"name": t.id, "creationTimestamp": rfc3339(t.created_ms)},
        "spec": {"expires": rfc3339(t.expires_ms), "usesLeft": t.uses_left, "labels": t.labels, "description": t.description},
        "status": {"used": t.used, "revoked": t.revoked},
    })
}

/// Valid, Expired, UsedUp or Revoked.
pub fn token_state(t: &TokenInfo, now_ms: u64) -> &'static str {
    if t.revoked {
        "Revoked"
    } else if now_ms >= t.expires_ms {
        "Expired"
    } else if t.uses_left == Some(0) {
        "UsedUp"
    } else {
        "Valid"
    }
}

pub fn tokens_table(tokens: &[TokenInfo], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                token_state(t, now_ms).to_string(),
                if now_ms >= t.expires_ms {
                    "-".into()
                } else {
                    format_duration(Duration::from_millis(t.expires_ms - now_ms))
                },
                t.uses_left.map_or("unlimited".into(), |u| u.to_string()),
                t.used.to_string(),
                t.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
                t.description.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "STATE",
            "TTL",
            "USES LEFT",
            "USED",
            "LABELS",
            "DESCRIPTION",
        ],
        &rows,
    )
}
