//! Nodes: their Kubernetes-shaped JSON (what `get nodes -o json` and the
//! operator API serve), the `get nodes` row and `describe node`, all from
//! the registry's live view ([`NodeView`]: lease, measurements,
//! connection), plus `top nodes`.

use super::{age, rfc3339, table, Context, RenderError, Row, Subject};
use outpost_proto::names::SITE_LABEL;
use outpost_proto::pod::Usage;
use outpost_proto::units::format_bytes;
use outpost_proto::{
    ConditionStatus, ConditionType, NodeView, Resources, Signal, SignalObservation, ThresholdState,
};
use serde_json::{json, Value};
use std::fmt::Write as _;

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

fn or_unknown(s: &str) -> String {
    if s.is_empty() {
        "<unknown>".into()
    } else {
        s.to_string()
    }
}

/// The `get nodes` row of a node (its cells from the live view in `ctx`).
pub fn row(v: &Value, ctx: &Context<'_>) -> Result<Row, RenderError> {
    let name = super::name_of(v);
    let n = ctx
        .nodes
        .get(name)
        .ok_or_else(|| RenderError::NodeGone(name.to_string()))?;
    Ok(Row {
        namespace: String::new(),
        name: n.name.clone(),
        cells: view_cells(n, ctx.now_ms),
    })
}

fn view_cells(n: &NodeView, now_ms: u64) -> Vec<String> {
    vec![
        node_status(n),
        pressure(n),
        n.labels
            .get(SITE_LABEL)
            .cloned()
            .unwrap_or_else(|| "<none>".into()),
        or_unknown(&n.info.arch),
        cpu(n.capacity.cpu_millis),
        format_bytes(n.capacity.memory_bytes),
        age(n.created_ms, now_ms),
        or_unknown(&n.info.agent_version),
        n.info
            .addresses
            .first()
            .cloned()
            .unwrap_or_else(|| "<none>".into()),
        or_unknown(&n.info.os_image),
        or_unknown(&n.info.kernel_version),
        if n.info.runtime.available {
            format!("{}://{}", n.info.runtime.name, n.info.runtime.version)
        } else {
            "<none>".into()
        },
    ]
}

/// `get nodes` from live views, as the table has always looked.
pub fn nodes_table(nodes: &[NodeView], now_ms: u64) -> String {
    let p = super::printer(crate::api::Kind::Node);
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let row = Row {
                namespace: String::new(),
                name: n.name.clone(),
                cells: view_cells(n, now_ms),
            };
            p.cells(&row, super::Layout::default())
        })
        .collect();
    let header = p.header(super::Layout::default());
    super::Table::new(header).render(&rows, true)
}

/// `describe node`: the live view, then the node's events.
pub fn describe(s: &Subject<'_>) -> Result<String, RenderError> {
    let name = super::name_of(s.object);
    let n = s
        .node
        .ok_or_else(|| RenderError::NodeGone(name.to_string()))?;
    let mut o = describe_node(n, s.now_ms);
    super::events::section(&mut o, s.events, s.now_ms);
    Ok(o)
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

/// `outpostctl top nodes`: usage against allocatable.
pub fn top_nodes(nodes: &[(NodeView, Option<Usage>)]) -> String {
    let pct = |used: u64, of: u64| match used.saturating_mul(100).checked_div(of) {
        Some(p) => format!("{p}%"),
        None => "<unknown>".to_string(),
    };
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|(n, u)| match u {
            Some(u) => vec![
                n.name.clone(),
                format!("{}m", u.cpu_millis),
                pct(u.cpu_millis, n.allocatable.cpu_millis),
                format!("{}Mi", u.memory_bytes / (1024 * 1024)),
                pct(u.memory_bytes, n.allocatable.memory_bytes),
            ],
            None => vec![
                n.name.clone(),
                "<unknown>".into(),
                "<unknown>".into(),
                "<unknown>".into(),
                "<unknown>".into(),
            ],
        })
        .collect();
    table(
        &["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"],
        &rows,
    )
}

pub fn top_nodes_json(nodes: &[(NodeView, Option<Usage>)]) -> Value {
    super::list(
        nodes
            .iter()
            .map(|(n, u)| {
                json!({
                    "apiVersion": "metrics.k8s.io/v1beta1",
                    "kind": "NodeMetrics",
                    "metadata": {"name": n.name},
                    "usage": u.as_ref().map(super::pods::usage_json),
                })
            })
            .collect(),
    )
}
