//! Pods: the `get pods` row, `describe pod` (and the pod template part
//! of workload descriptions), `top pods`, read from the pods' Kubernetes
//! JSON.

use super::{age, age_of, decode, or_none, rfc3339, table, Context, RenderError, Row, Subject};
use crate::api::pod::{ContainerState, PodSpec, PodTemplateSpec, Probe, POD_SCHEDULED};
use crate::api::resources::ResourceList;
use crate::api::{Kind, Pod, Time};
use outpost_proto::pod::Usage;
use outpost_proto::units::format_bytes;
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

/// READY: ready containers of all.
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

/// RESTARTS as kubectl prints it: the count, and how long ago the last
/// restart was when a container's previous run has ended (`2 (5m ago)`).
pub fn restarts(p: &Pod, now_ms: u64) -> String {
    let n = p.status.restarts();
    let last = p
        .status
        .container_statuses
        .iter()
        .filter_map(|c| c.last_state.terminated.as_ref()?.finished_at)
        .max();
    match last {
        Some(t) if n > 0 => format!("{n} ({} ago)", age(t.ms(), now_ms)),
        _ => n.to_string(),
    }
}

/// The `get pods` row.
pub fn row(v: &Value, ctx: &Context<'_>) -> Result<Row, RenderError> {
    let p: Pod = decode(Kind::Pod, v)?;
    Ok(Row::of(
        v,
        vec![
            ready(&p),
            pod_status(&p),
            restarts(&p, ctx.now_ms),
            age_of(p.metadata.creation_timestamp, ctx.now_ms),
            or_none(&p.status.pod_ip),
            p.node().unwrap_or("<none>").to_string(),
            or_none(&p.status.nominated_node_name),
        ],
    ))
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

/// The `Pod Template:` part of a ReplicaSet's or Deployment's description.
pub fn template_section(o: &mut String, t: &PodTemplateSpec) {
    let _ = writeln!(o, "Pod Template:");
    let labels = super::labels_text(&t.metadata.labels, "=");
    let mut d = super::Describe::new(9);
    d.list("  Labels", &labels);
    if !t.metadata.annotations.is_empty() {
        d.list(
            "  Annotations",
            &super::labels_text(&t.metadata.annotations, ": "),
        );
    }
    o.push_str(&d.finish());
    containers_section(o, &t.spec);
}

/// Containers of a pod spec as a template describes them (no statuses).
fn containers_section(o: &mut String, s: &PodSpec) {
    let _ = writeln!(o, "  Containers:");
    for c in &s.containers {
        let _ = writeln!(o, "   {}:", c.name);
        let mut d = super::Describe::new(18);
        d.field("    Image", &c.image);
        let ports: Vec<String> = c
            .ports
            .iter()
            .map(|p| format!("{}/{}", p.container_port, p.protocol.name()))
            .collect();
        d.field(
            "    Port",
            if ports.is_empty() {
                "<none>".into()
            } else {
                ports.join(", ")
            },
        );
        let host: Vec<String> = c
            .ports
            .iter()
            .filter_map(|p| Some(format!("{}/{}", p.host_port?, p.protocol.name())))
            .collect();
        if !host.is_empty() {
            d.field("    Host Port", host.join(", "));
        }
        if !c.command.is_empty() {
            d.field("    Command", c.command.join(" "));
        }
        if !c.args.is_empty() {
            d.field("    Args", c.args.join(" "));
        }
        if !c.resources.limits.is_empty() {
            d.field("    Limits", resource_line(&c.resources.limits));
        }
        if !c.resources.requests.is_empty() {
            d.field("    Requests", resource_line(&c.resources.requests));
        }
        if let Some(l) = &c.liveness_probe {
            d.field("    Liveness", probe_line(l));
        }
        if let Some(r) = &c.readiness_probe {
            d.field("    Readiness", probe_line(r));
        }
        let env: Vec<String> = c
            .env
            .iter()
            .map(|e| format!("{}={}", e.name, e.value))
            .collect();
        d.list("    Environment", &env);
        let mounts: Vec<String> = c
            .volume_mounts
            .iter()
            .map(|m| {
                format!(
                    "{} from {}{}",
                    m.mount_path,
                    m.name,
                    if m.read_only { " (ro)" } else { " (rw)" }
                )
            })
            .collect();
        d.list("    Mounts", &mounts);
        o.push_str(&d.finish());
    }
    let vols: Vec<String> = s
        .volumes
        .iter()
        .map(|v| match &v.host_path {
            Some(h) => format!("{}: HostPath {}", v.name, h.path),
            None => format!("{}: EmptyDir", v.name),
        })
        .collect();
    let mut d = super::Describe::new(18);
    d.list("  Volumes", &vols);
    if !s.node_selector.is_empty() {
        d.field(
            "  Node-Selectors",
            super::labels_text(&s.node_selector, "=").join(","),
        );
    }
    if !s.priority_class_name.is_empty() {
        d.field("  Priority Class", &s.priority_class_name);
    }
    o.push_str(&d.finish());
}

/// `describe pod`.
pub fn describe(s: &Subject<'_>) -> Result<String, RenderError> {
    let p: Pod = decode(Kind::Pod, s.object)?;
    Ok(describe_pod(&p, s.usage, s.events, s.now_ms))
}

/// `describe pod` of a decoded pod.
pub fn describe_pod(
    p: &Pod,
    usage: Option<&Usage>,
    events: &[outpost_proto::Event],
    now_ms: u64,
) -> String {
    let s = &p.spec;
    let st = &p.status;
    let mut o = String::new();
    let _ = writeln!(o, "Name:             {}", p.metadata.name);
    let _ = writeln!(o, "Namespace:        {}", p.metadata.namespace);
    let _ = writeln!(o, "Node:             {}", p.node().unwrap_or("<none>"));
    if !st.nominated_node_name.is_empty() {
        let _ = writeln!(o, "NominatedNodeName: {}", st.nominated_node_name);
    }
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
    match p.metadata.deletion_timestamp {
        Some(t) => {
            let _ = writeln!(
                o,
                "Status:           Terminating (requested {} ago)",
                age(t.ms(), now_ms)
            );
            if let Some(g) = p.metadata.deletion_grace_period_seconds {
                let _ = writeln!(o, "Termination Grace Period: {g}s");
            }
        }
        None => {
            let _ = writeln!(o, "Status:           {}", pod_status(p));
        }
    }
    // Why an unbound pod waits: the scheduler's verdict on every node
    // (`0/3 nodes are available: ...`), kept in its PodScheduled condition.
    let unschedulable = st
        .condition(POD_SCHEDULED)
        .filter(|c| p.node().is_none() && c.status != crate::api::meta::ConditionStatus::True);
    let (reason, message) = match unschedulable {
        Some(c) if st.reason.is_empty() && st.message.is_empty() => {
            (c.reason.as_str(), c.message.as_str())
        }
        _ => (st.reason.as_str(), st.message.as_str()),
    };
    if !reason.is_empty() {
        let _ = writeln!(o, "Reason:           {reason}");
    }
    if !message.is_empty() {
        let _ = writeln!(o, "Message:          {message}");
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
    super::events::section(&mut o, events, now_ms);
    o
}

/// `outpostctl top pods`.
pub fn top_pods(pods: &[(Pod, Usage)], namespaces: bool) -> String {
    if pods.is_empty() {
        return "No usage reported yet: pods report once their node has run them.\n".into();
    }
    let rows: Vec<Vec<String>> = pods
        .iter()
        .map(|(p, u)| {
            let mut row = Vec::new();
            if namespaces {
                row.push(p.metadata.namespace.clone());
            }
            row.extend([
                p.metadata.name.clone(),
                cpu(u.cpu_millis),
                format!("{}Mi", u.memory_bytes / (1024 * 1024)),
                p.node().unwrap_or_default().to_string(),
            ]);
            row
        })
        .collect();
    let mut header = Vec::new();
    if namespaces {
        header.push("NAMESPACE");
    }
    header.extend(["NAME", "CPU(cores)", "MEMORY(bytes)", "NODE"]);
    table(&header, &rows)
}

/// A usage as `metrics.k8s.io` writes it.
pub fn usage_json(u: &Usage) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_proto::pod as wire;

    #[test]
    fn a_pod_its_node_could_not_take_shows_why_not_container_creating() {
        let mut p = Pod::default();
        p.spec.node_name = "edge-1".into();
        assert_eq!(pod_status(&p), "ContainerCreating", "bound, no report yet");
        // What the agent reports when it cannot save the pod (its
        // `podstate::NOT_ACCEPTED`).
        let report = wire::PodStatus {
            name: "web".into(),
            generation: 1,
            phase: wire::PodPhase::Pending,
            reason: "NodeCannotAccept".into(),
            message: "the node cannot save the pod (saving desired pods to /var/lib/outpost/pods.json: No space left on device (os error 28)); it starts the pod once the save works: free space in the agent's data directory".into(),
            ready: false,
            started_ms: 0,
            pod_ip: String::new(),
            containers: Vec::new(),
            usage: Usage::default(),
        };
        p.status.apply_report(&report, "10.0.0.7", Time(1));
        assert_eq!(pod_status(&p), "NodeCannotAccept");
        assert_eq!(p.status.phase, crate::api::pod::PodPhase::Pending);
        assert!(p.status.message.contains("No space left on device"));
    }
}
