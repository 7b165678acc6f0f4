//! `outpostctl` output: Kubernetes-shaped JSON/YAML views of our wire types
//! and kubectl-like tables.
//!
//! JSON is the stable machine form: objects carry `apiVersion`, `kind`,
//! `metadata`, `spec` and `status` as in Kubernetes, quantities are strings
//! (`"2"`, `"1500m"`, `"8029172Ki"`), times RFC 3339.

use outpost_proto::names::SITE_LABEL;
use outpost_proto::units::{format_bytes, format_duration};
use outpost_proto::{
    ConditionStatus, ConditionType, Event, NodeView, Resources, Signal, SignalObservation,
    ThresholdState, TokenInfo,
};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::time::Duration;

/// Output format of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

pub use outpost_proto::units::rfc3339;

/// Age like kubectl: `45s`, `3m12s`, `5h2m`, `12d`.
pub fn age(since_ms: u64, now_ms: u64) -> String {
    if since_ms == 0 {
        return "<unknown>".into();
    }
    format_duration(Duration::from_millis(now_ms.saturating_sub(since_ms)))
}

fn cpu(m: u64) -> String {
    if m.is_multiple_of(1000) {
        (m / 1000).to_string()
    } else {
        format!("{m}m")
    }
}

fn bytes_quantity(b: u64) -> String {
    if b.is_multiple_of(1024) {
        format!("{}Ki", b / 1024)
    } else {
        b.to_string()
    }
}

fn resources(r: &Resources) -> Value {
    json!({
        "cpu": cpu(r.cpu_millis),
        "memory": bytes_quantity(r.memory_bytes),
        "pods": "110",
        "pids": r.pids.to_string(),
        "ephemeral-storage": bytes_quantity(r.ephemeral_storage_bytes),
        "outpost.dev/gpu": r.gpus.to_string(),
    })
}

fn threshold_state(s: &ThresholdState) -> Value {
    match s {
        ThresholdState::Clear => json!({"state": "Clear"}),
        ThresholdState::Met => json!({"state": "Met"}),
        ThresholdState::SoftMet {
            since_ms,
            grace_secs,
        } => json!({
            "state": "SoftMet", "since": rfc3339(*since_ms), "gracePeriodSeconds": grace_secs,
        }),
    }
}

fn signal(s: &SignalObservation) -> Value {
    json!({
        "signal": s.signal.name(),
        "available": s.available,
        "capacity": s.capacity,
        "hardThreshold": s.hard_threshold,
        "softThreshold": s.soft_threshold,
        "windowMin": s.window_min,
        "threshold": threshold_state(&s.state),
    })
}

/// A node as a Kubernetes-shaped object.
pub fn node_json(n: &NodeView) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": n.name,
            "labels": n.labels,
            "creationTimestamp": rfc3339(n.created_ms),
        },
        "spec": {
            "unschedulable": n.unschedulable,
            "taints": n.taints.iter().map(|t| json!({
                "key": t.key, "effect": format!("{:?}", t.effect), "timeAdded": rfc3339(t.since_ms),
            })).collect::<Vec<_>>(),
        },
        "status": {
            "capacity": resources(&n.capacity),
            "allocatable": resources(&n.allocatable),
            "conditions": n.conditions.iter().map(|c| json!({
                "type": c.kind.name(),
                "status": c.status.name(),
                "reason": c.reason,
                "message": c.message,
                "lastTransitionTime": rfc3339(c.last_transition_ms),
            })).collect::<Vec<_>>(),
            "addresses": n.info.addresses.iter().map(|a| json!({"type": "InternalIP", "address": a}))
                .chain(std::iter::once(json!({"type": "Hostname", "address": n.info.hostname})))
                .collect::<Vec<_>>(),
            "nodeInfo": {
                "architecture": n.info.arch,
                "operatingSystem": n.info.os,
                "osImage": n.info.os_image,
                "kernelVersion": n.info.kernel_version,
                "agentVersion": n.info.agent_version,
                "containerRuntimeVersion": if n.info.runtime.available {
                    format!("{}://{}", n.info.runtime.name, n.info.runtime.version)
                } else { String::new() },
                "bootTime": rfc3339(n.info.boot_time_ms),
            },
            "runtime": {
                "name": n.info.runtime.name,
                "version": n.info.runtime.version,
                "available": n.info.runtime.available,
                "message": n.info.runtime.message,
            },
            "signals": n.signals.iter().map(signal).collect::<Vec<_>>(),
            "connection": {
                "connected": n.connected,
                "remoteAddress": n.remote_addr,
                "lastHeartbeatTime": rfc3339(n.last_heartbeat_ms),
            },
            "certificate": {
                "serial": n.cert_serial,
                "notAfter": rfc3339(n.cert_not_after_ms),
            },
        },
    })
}

pub fn event_json(e: &Event) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("event-{}", e.seq)},
        "type": format!("{:?}", e.kind),
        "reason": e.reason,
        "involvedObject": e.object,
        "message": e.message,
        "lastTimestamp": rfc3339(e.time_ms),
    })
}

pub fn token_json(t: &TokenInfo) -> Value {
    json!({
        "apiVersion": "outpost.dev/v1",
        "kind": "BootstrapToken",
        "metadata": {"name": t.id, "creationTimestamp": rfc3339(t.created_ms)},
        "spec": {"expires": rfc3339(t.expires_ms), "usesLeft": t.uses_left, "labels": t.labels, "description": t.description},
        "status": {"used": t.used, "revoked": t.revoked},
    })
}

/// Wraps items as a `List`.
pub fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// Renders a JSON value in the chosen machine format.
pub fn render(v: &Value, format: Format) -> String {
    match format {
        Format::Yaml => serde_yaml::to_string(v).unwrap_or_default(),
        _ => serde_json::to_string_pretty(v).unwrap_or_default() + "\n",
    }
}

/// Left-aligned columns separated by three spaces, as kubectl prints.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}   ", w = widths[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

/// STATUS column: Ready/NotReady plus qualifiers.
pub fn node_status(n: &NodeView) -> String {
    let ready = n
        .conditions
        .iter()
        .find(|c| c.kind == ConditionType::Ready)
        .is_some_and(|c| c.status == ConditionStatus::True);
    let mut s = if ready { "Ready" } else { "NotReady" }.to_string();
    if n.unschedulable {
        s.push_str(",SchedulingDisabled");
    }
    if !n.info.arch.is_empty() && !n.info.runtime.available {
        s.push_str(",NoRuntime");
    }
    s
}

/// PRESSURE column: the pressure conditions that are on, or `None`.
pub fn pressure(n: &NodeView) -> String {
    let on: Vec<&str> = n
        .conditions
        .iter()
        .filter(|c| c.kind != ConditionType::Ready && c.status == ConditionStatus::True)
        .map(|c| c.kind.name())
        .collect();
    if on.is_empty() {
        "None".into()
    } else {
        on.join(",")
    }
}

pub fn nodes_table(nodes: &[NodeView], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                node_status(n),
                pressure(n),
                n.labels
                    .get(SITE_LABEL)
                    .cloned()
                    .unwrap_or_else(|| "<none>".into()),
                if n.info.arch.is_empty() {
                    "<unknown>".into()
                } else {
                    n.info.arch.clone()
                },
                cpu(n.capacity.cpu_millis),
                format_bytes(n.capacity.memory_bytes),
                age(n.created_ms, now_ms),
                if n.info.agent_version.is_empty() {
                    "<unknown>".into()
                } else {
                    n.info.agent_version.clone()
                },
            ]
        })
        .collect();
    table(
        &[
            "NAME", "STATUS", "PRESSURE", "SITE", "ARCH", "CPU", "MEMORY", "AGE", "VERSION",
        ],
        &rows,
    )
}

fn amount(s: Signal, v: u64) -> String {
    if s.is_bytes() {
        format_bytes(v)
    } else {
        v.to_string()
    }
}

/// `outpostctl describe node`.
pub fn describe_node(n: &NodeView, now_ms: u64) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "Name:               {}", n.name);
    let _ = writeln!(o, "Status:             {}", node_status(n));
    let _ = writeln!(
        o,
        "Labels:             {}",
        n.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("\n                    ")
    );
    let _ = writeln!(
        o,
        "CreationTimestamp:  {} ({} ago)",
        rfc3339(n.created_ms),
        age(n.created_ms, now_ms)
    );
    let taints: Vec<String> = n
        .taints
        .iter()
        .map(|t| format!("{}:{:?}", t.key, t.effect))
        .collect();
    let _ = writeln!(
        o,
        "Taints:             {}",
        if taints.is_empty() {
            "<none>".into()
        } else {
            taints.join("\n                    ")
        }
    );
    let _ = writeln!(o, "Unschedulable:      {}", n.unschedulable);
    let _ = writeln!(o, "Connection:");
    let _ = writeln!(
        o,
        "  Connected:        {}{}",
        n.connected,
        if n.connected {
            format!(" (from {})", n.remote_addr)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        o,
        "  LastHeartbeat:    {}",
        if n.last_heartbeat_ms == 0 {
            "<never>".into()
        } else {
            format!(
                "{} ({} ago)",
                rfc3339(n.last_heartbeat_ms),
                age(n.last_heartbeat_ms, now_ms)
            )
        }
    );
    let _ = writeln!(
        o,
        "  Certificate:      serial {}, valid until {}",
        n.cert_serial,
        rfc3339(n.cert_not_after_ms)
    );
    let _ = writeln!(o, "Conditions:");
    let rows: Vec<Vec<String>> = n
        .conditions
        .iter()
        .map(|c| {
            vec![
                format!("  {}", c.kind.name()),
                c.status.name().into(),
                rfc3339(c.last_transition_ms),
                c.reason.clone(),
                c.message.clone(),
            ]
        })
        .collect();
    o.push_str(&table(
        &[
            "  Type",
            "Status",
            "LastTransitionTime",
            "Reason",
            "Message",
        ],
        &rows,
    ));
    let _ = writeln!(o, "Signals:");
    let rows: Vec<Vec<String>> = n
        .signals
        .iter()
        .map(|s| {
            let state = match s.state {
                ThresholdState::Clear => "Clear".to_string(),
                ThresholdState::Met => "Met".to_string(),
                ThresholdState::SoftMet {
                    since_ms,
                    grace_secs,
                } => format!(
                    "SoftMet for {} (grace {grace_secs}s)",
                    age(since_ms, now_ms)
                ),
            };
            vec![
                format!("  {}", s.signal.name()),
                amount(s.signal, s.available),
                amount(s.signal, s.capacity),
                s.hard_threshold.map_or("-".into(), |t| amount(s.signal, t)),
                s.soft_threshold.map_or("-".into(), |t| amount(s.signal, t)),
                amount(s.signal, s.window_min),
                state,
            ]
        })
        .collect();
    if rows.is_empty() {
        let _ = writeln!(o, "  <no report yet>");
    } else {
        o.push_str(&table(
            &[
                "  Signal",
                "Available",
                "Capacity",
                "Hard",
                "Soft",
                "WindowMin",
                "Threshold",
            ],
            &rows,
        ));
    }
    let res = |r: &Resources| {
        format!(
            "  cpu:                {}\n  memory:             {}\n  pids:               {}\n  ephemeral-storage:  {}\n  gpu:                {}\n",
            cpu(r.cpu_millis), format_bytes(r.memory_bytes), r.pids, format_bytes(r.ephemeral_storage_bytes), r.gpus
        )
    };
    let _ = writeln!(o, "Capacity:");
    o.push_str(&res(&n.capacity));
    let _ = writeln!(o, "Allocatable:");
    o.push_str(&res(&n.allocatable));
    let i = &n.info;
    let _ = writeln!(o, "System Info:");
    let _ = writeln!(o, "  Architecture:     {}", i.arch);
    let _ = writeln!(o, "  OS Image:         {}", i.os_image);
    let _ = writeln!(o, "  Kernel Version:   {}", i.kernel_version);
    let _ = writeln!(o, "  Agent Version:    {}", i.agent_version);
    let _ = writeln!(
        o,
        "  Runtime:          {}",
        if i.runtime.available {
            format!("{} {}", i.runtime.name, i.runtime.version)
        } else {
            format!("unavailable: {}", i.runtime.message)
        }
    );
    let _ = writeln!(o, "  Hostname:         {}", i.hostname);
    let _ = writeln!(o, "  Addresses:        {}", i.addresses.join(", "));
    o
}

pub fn events_table(events: &[Event], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                age(e.time_ms, now_ms),
                format!("{:?}", e.kind),
                e.reason.clone(),
                e.object.clone(),
                e.message.clone(),
            ]
        })
        .collect();
    table(&["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], &rows)
}

pub fn tokens_table(tokens: &[TokenInfo], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            let state = if t.revoked {
                "Revoked".to_string()
            } else if now_ms >= t.expires_ms {
                "Expired".into()
            } else if t.uses_left == Some(0) {
                "UsedUp".into()
            } else {
                "Valid".into()
            };
            vec![
                t.id.clone(),
                state,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_and_trims() {
        let t = table(
            &["A", "BB"],
            &[vec!["xyz".into(), "1".into()], vec!["q".into(), "".into()]],
        );
        assert_eq!(t, "A     BB\nxyz   1\nq\n");
    }

    #[test]
    fn quantities_and_times() {
        assert_eq!(cpu(2000), "2");
        assert_eq!(cpu(1500), "1500m");
        assert_eq!(bytes_quantity(2048), "2Ki");
        assert_eq!(bytes_quantity(1000), "1000");
        assert_eq!(rfc3339(0), "");
        assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
        assert_eq!(age(1000, 61_000), "60s");
    }
}
