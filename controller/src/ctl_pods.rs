//! `outpostctl` output for pods: `get pods`, `describe pod`, `top pods`,
//! `top nodes`, read from the pods' Kubernetes JSON.

use crate::api::pod::{ContainerState, Pod, Probe};
use crate::api::resources::ResourceList;
use crate::api::Time;
use crate::ctl::{age, rfc3339, table};
use outpost_proto::pod::Usage;
use outpost_proto::units::format_bytes;
use outpost_proto::{Event, NodeView};
use serde_json::{json, Value};
use std::fmt::Write as _;

fn cpu(m: u64) -> String {
    format!("{m}m")
}

fn ms(t: Option<Time>) -> u64 {
    t.map_or(0, Time::ms)
}

/// STATUS column, as kubectl derives it: Terminating, the pod's reason
/// (Evicted), the first container reason that is not Running, or the phase.
pub fn pod_status(p: &Pod) -> String {
    if p.metadata.is_deleting() {
        return "Terminating".into();
    }
    let s = &p.status;
    if p.node().is_none() {
        return if s.reason.is_empty() {
            "Pending".into()
        } else {
            s.reason.clone()
        };
    }
    if !s.reason.is_empty() {
        return s.reason.clone();
    }
    if s.container_statuses.is_empty() {
        return if s.phase == crate::api::pod::PodPhase::Pending {
            "ContainerCreating".into()
        } else {
            s.phase.name().to_string()
        };
    }
    for c in &s.container_statuses {
        if let Some(w) = &c.state.waiting {
            if !w.reason.is_empty() {
                return w.reason.clone();
            }
        }
        if let Some(t) = &c.state.terminated {
            if s.phase != crate::api::pod::PodPhase::Succeeded && !t.reason.is_empty() {
                return t.reason.clone();
            }
        }
    }
    let node_lost = s
        .condition(crate::api::pod::POD_READY)
        .is_some_and(|c| c.reason == "NodeNotReady");
    if node_lost && s.phase == crate::api::pod::PodPhase::Running {
        return "Unknown".into();
    }
    s.phase.name().to_string()
}

fn ready(p: &Pod) -> String {
    let total = p.spec.containers.len();
    let ready = p
        .status
        .container_statuses
        .iter()
        .filter(|c| c.ready)
        .count();
    format!("{ready}/{total}")
}

/// `get pods`; with `namespaces`, a NAMESPACE column first; `wide` adds
/// the pod IP.
pub fn pods_table(pods: &[Pod], now_ms: u64, namespaces: bool, wide: bool) -> String {
    let rows: Vec<Vec<String>> = pods
        .iter()
        .map(|p| {
            let mut row = Vec::new();
            if namespaces {
                row.push(p.metadata.namespace.clone());
            }
            row.extend([
                p.metadata.name.clone(),
                ready(p),
                pod_status(p),
                p.status.restarts().to_string(),
                age(ms(p.metadata.creation_timestamp), now_ms),
            ]);
            if wide {
                row.push(if p.status.pod_ip.is_empty() {
                    "<none>".into()
                } else {
                    p.status.pod_ip.clone()
                });
            }
            row.push(p.node().unwrap_or("<none>").to_string());
            row
        })
        .collect();
    let mut header = Vec::new();
    if namespaces {
        header.push("NAMESPACE");
    }
    header.extend(["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    if wide {
        header.push("IP");
    }
    header.push("NODE");
    table(&header, &rows)
}

fn state_lines(o: &mut String, label: &str, s: &ContainerState) {
    if let Some(w) = &s.waiting {
        let _ = writeln!(o, "    {label}:          Waiting");
        let _ = writeln!(o, "      Reason:       {}", w.reason);
        if !w.message.is_empty() {
            let _ = writeln!(o, "      Message:      {}", w.message);
        }
    } else if let Some(r) = &s.running {
        let _ = writeln!(o, "    {label}:          Running");
        let _ = writeln!(o, "      Started:      {}", rfc3339(ms(r.started_at)));
    } else if let Some(t) = &s.terminated {
        let _ = writeln!(o, "    {label}:          Terminated");
        let _ = writeln!(o, "      Reason:       {}", t.reason);
        let _ = writeln!(o, "      Exit Code:    {}", t.exit_code);
        if !t.message.is_empty() {
            let _ = writeln!(o, "      Message:      {}", t.message);
        }
        let _ = writeln!(o, "      Started:      {}", rfc3339(ms(t.started_at)));
        let _ = writeln!(o, "      Finished:     {}", rfc3339(ms(t.finished_at)));
    }
}

fn probe_line(p: &Probe) -> String {
    let what = if let Some(e) = &p.exec {
        format!("exec {:?}", e.command)
    } else if let Some(h) = &p.http_get {
        format!("http-get :{}{}", h.port, h.path)
    } else if let Some(t) = &p.tcp_socket {
        format!("tcp-socket :{}", t.port)
    } else {
        "<none>".into()
    };
    format!(
        "{what} delay={}s timeout={}s period={}s #success={} #failure={}",
        p.initial_delay_seconds,
        p.timeout_seconds,
        p.period_seconds,
        p.success_threshold,
        p.failure_threshold
    )
}

fn resource_line(r: &ResourceList) -> String {
    r.entries()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The events section every `describe` ends with.
pub fn events_section(o: &mut String, events: &[Event], now_ms: u64) {
    let _ = writeln!(o, "Events:");
    if events.is_empty() {
        let _ = writeln!(o, "  <none>");
        return;
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                format!("{:?}", e.kind),
                e.reason.clone(),
                age(e.time_ms, now_ms),
                e.message.clone(),
            ]
        })
        .collect();
    for line in table(&["TYPE", "REASON", "AGE", "MESSAGE"], &rows).lines() {
        let _ = writeln!(o, "  {line}");
    }
}

/// `outpostctl describe pod`.
pub fn describe_pod(p: &Pod, usage: Option<&Usage>, events: &[Event], now_ms: u64) -> String {
    let s = &p.spec;
    let st = &p.status;
    let mut o = String::new();
    let _ = writeln!(o, "Name:             {}", p.metadata.name);
    let _ = writeln!(o, "Namespace:        {}", p.metadata.namespace);
    let _ = writeln!(o, "Node:             {}", p.node().unwrap_or("<none>"));
    let created = ms(p.metadata.creation_timestamp);
    let _ = writeln!(
        o,
        "Created:          {} ({} ago)",
        rfc3339(created),
        age(created, now_ms)
    );
    let labels: Vec<String> = p
        .metadata
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = writeln!(
        o,
        "Labels:           {}",
        if labels.is_empty() {
            "<none>".into()
        } else {
            labels.join("\n                  ")
        }
    );
    if let Some(c) = p.metadata.controller_ref() {
        let _ = writeln!(o, "Controlled By:    {}/{}", c.kind, c.name);
    }
    let _ = writeln!(o, "Status:           {}", pod_status(p));
    if !st.reason.is_empty() {
        let _ = writeln!(o, "Reason:           {}", st.reason);
    }
    if !st.message.is_empty() {
        let _ = writeln!(o, "Message:          {}", st.message);
    }
    let _ = writeln!(o, "Phase:            {}", st.phase.name());
    if !st.pod_ip.is_empty() {
        let _ = writeln!(o, "IP:               {}", st.pod_ip);
    }
    let _ = writeln!(o, "Generation:       {}", p.metadata.generation);
    if st.observed_generation != 0
        && st.observed_generation != u64::try_from(p.metadata.generation).unwrap_or(0)
    {
        let _ = writeln!(
            o,
            "Running generation: {} (node has not caught up yet)",
            st.observed_generation
        );
    }
    match st.last_report_time {
        Some(t) => {
            let _ = writeln!(o, "Last report:      {} ago", age(t.ms(), now_ms));
        }
        None if p.node().is_some() => {
            let _ = writeln!(o, "Last report:      none yet");
        }
        None => {}
    }
    let _ = writeln!(o, "Restart Policy:   {:?}", s.restart_policy);
    let _ = writeln!(o, "Priority:         {}", p.priority());
    if !s.priority_class_name.is_empty() {
        let _ = writeln!(o, "Priority Class:   {}", s.priority_class_name);
    }
    let _ = writeln!(
        o,
        "Termination Grace: {}s",
        s.termination_grace_period_seconds
    );
    if !st.conditions.is_empty() {
        let _ = writeln!(o, "Conditions:");
        for c in &st.conditions {
            let _ = writeln!(
                o,
                "  {:<16} {}{}",
                c.kind,
                c.status.name(),
                if c.message.is_empty() {
                    String::new()
                } else {
                    format!("  ({}: {})", c.reason, c.message)
                }
            );
        }
    }
    let _ = writeln!(o, "Containers:");
    for c in &s.containers {
        let cs = st.container_statuses.iter().find(|x| x.name == c.name);
        let _ = writeln!(o, "  {}:", c.name);
        let _ = writeln!(o, "    Image:          {}", c.image);
        if let Some(cs) = cs {
            if !cs.container_id.is_empty() {
                let _ = writeln!(o, "    Container ID:   {}", cs.container_id);
            }
        }
        if !c.command.is_empty() {
            let _ = writeln!(o, "    Command:        {}", c.command.join(" "));
        }
        if !c.args.is_empty() {
            let _ = writeln!(o, "    Args:           {}", c.args.join(" "));
        }
        for pt in &c.ports {
            let _ = writeln!(
                o,
                "    Port:           {}/{}{}",
                pt.container_port,
                pt.protocol.name(),
                pt.host_port
                    .map(|h| format!(" (host {h})"))
                    .unwrap_or_default()
            );
        }
        match cs {
            Some(cs) => {
                state_lines(&mut o, "State", &cs.state);
                if cs.last_state != ContainerState::default() {
                    state_lines(&mut o, "Last State", &cs.last_state);
                }
                let _ = writeln!(o, "    Ready:          {}", cs.ready);
                let _ = writeln!(o, "    Restart Count:  {}", cs.restart_count);
            }
            None => {
                let _ = writeln!(o, "    State:          <not reported>");
            }
        }
        let r = &c.resources;
        if !r.limits.is_empty() {
            let _ = writeln!(o, "    Limits:         {}", resource_line(&r.limits));
        }
        if !r.requests.is_empty() {
            let _ = writeln!(o, "    Requests:       {}", resource_line(&r.requests));
        }
        if let Some(l) = &c.liveness_probe {
            let _ = writeln!(o, "    Liveness:       {}", probe_line(l));
        }
        if let Some(r) = &c.readiness_probe {
            let _ = writeln!(o, "    Readiness:      {}", probe_line(r));
        }
        for e in &c.env {
            let _ = writeln!(o, "    Env:            {}={}", e.name, e.value);
        }
        for m in &c.volume_mounts {
            let _ = writeln!(
                o,
                "    Mount:          {} from {}{}",
                m.mount_path,
                m.name,
                if m.read_only { " (ro)" } else { "" }
            );
        }
    }
    if let Some(u) = usage {
        let _ = writeln!(
            o,
            "Usage:            cpu {}, memory {}",
            cpu(u.cpu_millis),
            format_bytes(u.memory_bytes)
        );
    }
    if !s.volumes.is_empty() {
        let _ = writeln!(o, "Volumes:");
        for v in &s.volumes {
            match &v.host_path {
                Some(h) => {
                    let _ = writeln!(o, "  {}: HostPath {}", v.name, h.path);
                }
                None => {
                    let _ = writeln!(o, "  {}: EmptyDir", v.name);
                }
            }
        }
    }
    if !s.node_selector.is_empty() {
        let sel: Vec<String> = s
            .node_selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(o, "Node-Selectors:   {}", sel.join(","));
    }
    if !s.tolerations.is_empty() {
        let _ = writeln!(o, "Tolerations:      {}", s.tolerations.len());
    }
    events_section(&mut o, events, now_ms);
    o
}

/// `outpostctl top pods`.
pub fn top_pods(pods: &[(Pod, Usage)]) -> String {
    if pods.is_empty() {
        return "No usage reported yet: pods report once their node has run them.\n".into();
    }
    let rows: Vec<Vec<String>> = pods
        .iter()
        .map(|(p, u)| {
            vec![
                p.metadata.name.clone(),
                cpu(u.cpu_millis),
                format!("{}Mi", u.memory_bytes / (1024 * 1024)),
                p.node().unwrap_or_default().to_string(),
            ]
        })
        .collect();
    table(&["NAME", "CPU(cores)", "MEMORY(bytes)", "NODE"], &rows)
}

fn usage_json(u: &Usage) -> Value {
    json!({"cpu": cpu(u.cpu_millis), "memory": format!("{}Ki", u.memory_bytes / 1024)})
}

pub fn top_pods_json(pods: &[(Pod, Usage)]) -> Value {
    crate::ctl::list(
        pods.iter()
            .map(|(p, u)| {
                json!({
                    "apiVersion": "metrics.k8s.io/v1beta1",
                    "kind": "PodMetrics",
                    "metadata": {"name": p.metadata.name, "namespace": p.metadata.namespace},
                    "node": p.node(),
                    "usage": usage_json(u),
                })
            })
            .collect(),
    )
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
                cpu(u.cpu_millis),
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
    crate::ctl::list(
        nodes
            .iter()
            .map(|(n, u)| {
                json!({
                    "apiVersion": "metrics.k8s.io/v1beta1",
                    "kind": "NodeMetrics",
                    "metadata": {"name": n.name},
                    "usage": u.as_ref().map(usage_json),
                })
            })
            .collect(),
    )
}
