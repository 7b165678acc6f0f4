//! `outpostctl` output for pods: `get pods`, `describe pod`, `top pods`,
//! `top nodes`, and the Kubernetes-shaped JSON of a pod.

use crate::ctl::{age, rfc3339, table};
use outpost_proto::pod::{
    ContainerState, ContainerStatus, PodView, Probe, ProbeAction, Usage, VolumeSource,
};
use outpost_proto::units::format_bytes;
use outpost_proto::{Event, NodeView};
use serde_json::{json, Value};
use std::fmt::Write as _;

fn cpu(m: u64) -> String {
    format!("{m}m")
}

/// STATUS column, as kubectl derives it: Terminating, the pod's reason
/// (Evicted), the first container reason that is not Running, or the phase.
pub fn pod_status(p: &PodView) -> String {
    if p.deleting {
        return "Terminating".into();
    }
    let Some(s) = &p.status else {
        return if p.spec.node_name.is_none() {
            "Pending".into()
        } else if p.node_ready {
            "ContainerCreating".into()
        } else {
            "Unknown".into()
        };
    };
    if !s.reason.is_empty() {
        return s.reason.clone();
    }
    for c in &s.containers {
        match &c.state {
            ContainerState::Waiting { reason, .. } if !reason.is_empty() => return reason.clone(),
            ContainerState::Terminated { reason, .. }
                if s.phase != outpost_proto::pod::PodPhase::Succeeded && !reason.is_empty() =>
            {
                return reason.clone()
            }
            _ => {}
        }
    }
    if !p.node_ready && s.phase == outpost_proto::pod::PodPhase::Running {
        return "Unknown".into();
    }
    s.phase.name().to_string()
}

fn ready(p: &PodView) -> String {
    let total = p.spec.containers.len();
    let ready = p
        .status
        .as_ref()
        .map_or(0, |s| s.containers.iter().filter(|c| c.ready).count());
    format!("{ready}/{total}")
}

fn restarts(p: &PodView) -> String {
    p.status
        .as_ref()
        .map_or(0, outpost_proto::pod::PodStatus::restarts)
        .to_string()
}

pub fn pods_table(pods: &[PodView], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = pods
        .iter()
        .map(|p| {
            vec![
                p.spec.name.clone(),
                ready(p),
                pod_status(p),
                restarts(p),
                age(p.created_ms, now_ms),
                p.spec.node_name.clone().unwrap_or_else(|| "<none>".into()),
            ]
        })
        .collect();
    table(
        &["NAME", "READY", "STATUS", "RESTARTS", "AGE", "NODE"],
        &rows,
    )
}

fn state_json(s: &ContainerState) -> Value {
    match s {
        ContainerState::Waiting { reason, message } => {
            json!({"waiting": {"reason": reason, "message": message}})
        }
        ContainerState::Running { started_ms } => {
            json!({"running": {"startedAt": rfc3339(*started_ms)}})
        }
        ContainerState::Terminated {
            exit_code,
            reason,
            message,
            started_ms,
            finished_ms,
        } => json!({"terminated": {
            "exitCode": exit_code, "reason": reason, "message": message,
            "startedAt": rfc3339(*started_ms), "finishedAt": rfc3339(*finished_ms),
        }}),
    }
}

fn container_status_json(c: &ContainerStatus) -> Value {
    json!({
        "name": c.name,
        "image": c.image,
        "containerID": if c.container_id.is_empty() { Value::Null } else { json!(format!("docker://{}", c.container_id)) },
        "state": state_json(&c.state),
        "lastState": c.last_state.as_ref().map_or(json!({}), state_json),
        "ready": c.ready,
        "restartCount": c.restart_count,
        "usage": usage_json(&c.usage),
    })
}

fn usage_json(u: &Usage) -> Value {
    json!({"cpu": cpu(u.cpu_millis), "memory": format!("{}Ki", u.memory_bytes / 1024)})
}

fn probe_json(p: &Probe) -> Value {
    let action = match &p.action {
        ProbeAction::Exec { command } => json!({"exec": {"command": command}}),
        ProbeAction::Http { path, port } => json!({"httpGet": {"path": path, "port": port}}),
        ProbeAction::Tcp { port } => json!({"tcpSocket": {"port": port}}),
    };
    let mut v = action;
    if let Value::Object(m) = &mut v {
        m.insert("initialDelaySeconds".into(), json!(p.initial_delay_secs));
        m.insert("periodSeconds".into(), json!(p.period_secs));
        m.insert("timeoutSeconds".into(), json!(p.timeout_secs));
        m.insert("successThreshold".into(), json!(p.success_threshold));
        m.insert("failureThreshold".into(), json!(p.failure_threshold));
    }
    v
}

fn resources_json(r: &outpost_proto::Resources) -> Value {
    let mut m = serde_json::Map::new();
    if r.cpu_millis > 0 {
        m.insert("cpu".into(), json!(cpu(r.cpu_millis)));
    }
    if r.memory_bytes > 0 {
        m.insert("memory".into(), json!(r.memory_bytes.to_string()));
    }
    if r.pids > 0 {
        m.insert("outpost.dev/pids".into(), json!(r.pids.to_string()));
    }
    if r.ephemeral_storage_bytes > 0 {
        m.insert(
            "ephemeral-storage".into(),
            json!(r.ephemeral_storage_bytes.to_string()),
        );
    }
    if r.gpus > 0 {
        m.insert("nvidia.com/gpu".into(), json!(r.gpus.to_string()));
    }
    Value::Object(m)
}

/// A pod as a Kubernetes-shaped object.
pub fn pod_json(p: &PodView) -> Value {
    let s = &p.spec;
    let containers: Vec<Value> = s
        .containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "image": c.image,
                "command": c.command,
                "args": c.args,
                "env": c.env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
                "ports": c.ports.iter().map(|pt| json!({
                    "name": pt.name, "containerPort": pt.container_port, "hostPort": pt.host_port,
                    "protocol": match pt.protocol { outpost_proto::pod::Protocol::Tcp => "TCP", outpost_proto::pod::Protocol::Udp => "UDP" },
                })).collect::<Vec<_>>(),
                "resources": {"requests": resources_json(&c.resources.requests), "limits": resources_json(&c.resources.limits)},
                "livenessProbe": c.liveness.as_ref().map(probe_json),
                "readinessProbe": c.readiness.as_ref().map(probe_json),
                "volumeMounts": c.volume_mounts.iter().map(|m| json!({"name": m.name, "mountPath": m.mount_path, "readOnly": m.read_only})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let status = match &p.status {
        None => json!({"phase": if p.deleting { "Terminating" } else { "Pending" }}),
        Some(st) => json!({
            "phase": st.phase.name(),
            "reason": st.reason,
            "message": st.message,
            "startTime": if st.started_ms > 0 { json!(rfc3339(st.started_ms)) } else { Value::Null },
            "observedGeneration": st.generation,
            "conditions": [{"type": "Ready", "status": if st.ready { "True" } else { "False" }}],
            "containerStatuses": st.containers.iter().map(container_status_json).collect::<Vec<_>>(),
            "usage": usage_json(&st.usage),
            "lastReportTime": rfc3339(p.status_ms),
        }),
    };
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": s.name,
            "labels": s.labels,
            "generation": p.generation,
            "creationTimestamp": rfc3339(p.created_ms),
            "deletionRequested": p.deleting,
        },
        "spec": {
            "nodeName": s.node_name,
            "restartPolicy": s.restart_policy.name(),
            "terminationGracePeriodSeconds": s.termination_grace_secs,
            "priority": s.priority,
            "containers": containers,
            "volumes": s.volumes.iter().map(|v| match &v.source {
                VolumeSource::HostPath { path } => json!({"name": v.name, "hostPath": {"path": path}}),
                VolumeSource::EmptyDir => json!({"name": v.name, "emptyDir": {}}),
            }).collect::<Vec<_>>(),
        },
        "status": status,
    })
}

fn state_lines(o: &mut String, label: &str, s: &ContainerState) {
    match s {
        ContainerState::Waiting { reason, message } => {
            let _ = writeln!(o, "    {label}:          Waiting");
            let _ = writeln!(o, "      Reason:       {reason}");
            if !message.is_empty() {
                let _ = writeln!(o, "      Message:      {message}");
            }
        }
        ContainerState::Running { started_ms } => {
            let _ = writeln!(o, "    {label}:          Running");
            let _ = writeln!(o, "      Started:      {}", rfc3339(*started_ms));
        }
        ContainerState::Terminated {
            exit_code,
            reason,
            message,
            started_ms,
            finished_ms,
        } => {
            let _ = writeln!(o, "    {label}:          Terminated");
            let _ = writeln!(o, "      Reason:       {reason}");
            let _ = writeln!(o, "      Exit Code:    {exit_code}");
            if !message.is_empty() {
                let _ = writeln!(o, "      Message:      {message}");
            }
            let _ = writeln!(o, "      Started:      {}", rfc3339(*started_ms));
            let _ = writeln!(o, "      Finished:     {}", rfc3339(*finished_ms));
        }
    }
}

fn probe_line(p: &Probe) -> String {
    let what = match &p.action {
        ProbeAction::Exec { command } => format!("exec {:?}", command),
        ProbeAction::Http { path, port } => format!("http-get :{port}{path}"),
        ProbeAction::Tcp { port } => format!("tcp-socket :{port}"),
    };
    format!(
        "{what} delay={}s timeout={}s period={}s #success={} #failure={}",
        p.initial_delay_secs,
        p.timeout_secs,
        p.period_secs,
        p.success_threshold,
        p.failure_threshold
    )
}

/// `outpostctl describe pod`.
pub fn describe_pod(p: &PodView, events: &[Event], now_ms: u64) -> String {
    let s = &p.spec;
    let mut o = String::new();
    let _ = writeln!(o, "Name:             {}", s.name);
    let _ = writeln!(
        o,
        "Node:             {}",
        s.node_name.as_deref().unwrap_or("<none>")
    );
    let _ = writeln!(
        o,
        "Created:          {} ({} ago)",
        rfc3339(p.created_ms),
        age(p.created_ms, now_ms)
    );
    let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(
        o,
        "Labels:           {}",
        if labels.is_empty() {
            "<none>".into()
        } else {
            labels.join("\n                  ")
        }
    );
    let _ = writeln!(o, "Status:           {}", pod_status(p));
    let _ = writeln!(o, "Generation:       {}", p.generation);
    if let Some(st) = &p.status {
        if !st.reason.is_empty() {
            let _ = writeln!(o, "Reason:           {}", st.reason);
        }
        if !st.message.is_empty() {
            let _ = writeln!(o, "Message:          {}", st.message);
        }
        let _ = writeln!(o, "Phase:            {}", st.phase.name());
        if st.generation != p.generation {
            let _ = writeln!(
                o,
                "Running generation: {} (node has not caught up yet)",
                st.generation
            );
        }
        let _ = writeln!(
            o,
            "Last report:      {} ago{}",
            age(p.status_ms, now_ms),
            if p.node_ready {
                ""
            } else {
                " (node not ready: may be stale)"
            }
        );
    } else if s.node_name.is_some() {
        let _ = writeln!(o, "Last report:      none yet");
    }
    let _ = writeln!(o, "Restart Policy:   {}", s.restart_policy.name());
    let _ = writeln!(o, "Priority:         {}", s.priority);
    let _ = writeln!(o, "Termination Grace: {}s", s.termination_grace_secs);
    let _ = writeln!(o, "Containers:");
    for c in &s.containers {
        let st = p
            .status
            .as_ref()
            .and_then(|st| st.containers.iter().find(|x| x.name == c.name));
        let _ = writeln!(o, "  {}:", c.name);
        let _ = writeln!(o, "    Image:          {}", c.image);
        if let Some(st) = st {
            if !st.container_id.is_empty() {
                let _ = writeln!(o, "    Container ID:   docker://{}", st.container_id);
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
                match pt.protocol {
                    outpost_proto::pod::Protocol::Tcp => "TCP",
                    outpost_proto::pod::Protocol::Udp => "UDP",
                },
                pt.host_port
                    .map(|h| format!(" (host {h})"))
                    .unwrap_or_default()
            );
        }
        match st {
            Some(st) => {
                state_lines(&mut o, "State", &st.state);
                if let Some(last) = &st.last_state {
                    state_lines(&mut o, "Last State", last);
                }
                let _ = writeln!(o, "    Ready:          {}", st.ready);
                let _ = writeln!(o, "    Restart Count:  {}", st.restart_count);
                let _ = writeln!(
                    o,
                    "    Usage:          cpu {}, memory {}",
                    cpu(st.usage.cpu_millis),
                    format_bytes(st.usage.memory_bytes)
                );
            }
            None => {
                let _ = writeln!(o, "    State:          <not reported>");
            }
        }
        let r = &c.resources;
        if r.limits != Default::default() {
            let _ = writeln!(o, "    Limits:         {}", resources_json(&r.limits));
        }
        if r.requests != Default::default() {
            let _ = writeln!(o, "    Requests:       {}", resources_json(&r.requests));
        }
        if let Some(l) = &c.liveness {
            let _ = writeln!(o, "    Liveness:       {}", probe_line(l));
        }
        if let Some(r) = &c.readiness {
            let _ = writeln!(o, "    Readiness:      {}", probe_line(r));
        }
        for (k, v) in &c.env {
            let _ = writeln!(o, "    Env:            {k}={v}");
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
    if !s.volumes.is_empty() {
        let _ = writeln!(o, "Volumes:");
        for v in &s.volumes {
            match &v.source {
                VolumeSource::HostPath { path } => {
                    let _ = writeln!(o, "  {}: HostPath {path}", v.name);
                }
                VolumeSource::EmptyDir => {
                    let _ = writeln!(o, "  {}: EmptyDir", v.name);
                }
            }
        }
    }
    let _ = writeln!(o, "Events:");
    if events.is_empty() {
        let _ = writeln!(o, "  <none>");
    } else {
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
    o
}

/// `outpostctl top pods`: usage per pod (and per container with -c).
pub fn top_pods(pods: &[PodView]) -> String {
    let rows: Vec<Vec<String>> = pods
        .iter()
        .filter_map(|p| {
            let s = p.status.as_ref()?;
            Some(vec![
                p.spec.name.clone(),
                cpu(s.usage.cpu_millis),
                format!("{}Mi", s.usage.memory_bytes / (1024 * 1024)),
                p.spec.node_name.clone().unwrap_or_default(),
            ])
        })
        .collect();
    if rows.is_empty() {
        return "No usage reported yet: pods report once their node has run them.\n".into();
    }
    table(&["NAME", "CPU(cores)", "MEMORY(bytes)", "NODE"], &rows)
}

pub fn top_pods_json(pods: &[PodView]) -> Value {
    crate::ctl::list(
        pods.iter()
            .filter_map(|p| {
                let s = p.status.as_ref()?;
                Some(json!({
                    "apiVersion": "metrics.k8s.io/v1beta1",
                    "kind": "PodMetrics",
                    "metadata": {"name": p.spec.name},
                    "node": p.spec.node_name,
                    "usage": usage_json(&s.usage),
                    "containers": s.containers.iter().map(|c| json!({"name": c.name, "usage": usage_json(&c.usage)})).collect::<Vec<_>>(),
                }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_proto::pod::{ContainerSpec, PodPhase, PodSpec, PodStatus};

    fn view(state: ContainerState, reason: &str, phase: PodPhase) -> PodView {
        PodView {
            spec: PodSpec {
                node_name: Some("edge-1".into()),
                ..PodSpec::new("web", vec![ContainerSpec::new("main", "x")])
            },
            generation: 1,
            created_ms: 1,
            deleting: false,
            status: Some(PodStatus {
                name: "web".into(),
                generation: 1,
                phase,
                reason: reason.into(),
                message: String::new(),
                ready: false,
                started_ms: 1,
                pod_ip: String::new(),
                containers: vec![ContainerStatus {
                    name: "main".into(),
                    image: "x".into(),
                    container_id: "abc".into(),
                    state,
                    last_state: None,
                    ready: false,
                    restart_count: 4,
                    usage: Usage::default(),
                }],
                usage: Usage::default(),
            }),
            status_ms: 1,
            node_ready: true,
        }
    }

    #[test]
    fn status_column_follows_kubectl() {
        let crash = view(
            ContainerState::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: String::new(),
            },
            "",
            PodPhase::Running,
        );
        assert_eq!(pod_status(&crash), "CrashLoopBackOff");
        assert_eq!(restarts(&crash), "4");
        let evicted = view(
            ContainerState::Running { started_ms: 1 },
            "Evicted",
            PodPhase::Failed,
        );
        assert_eq!(pod_status(&evicted), "Evicted");
        let running = view(
            ContainerState::Running { started_ms: 1 },
            "",
            PodPhase::Running,
        );
        assert_eq!(pod_status(&running), "Running");
        let mut stale = running.clone();
        stale.node_ready = false;
        assert_eq!(pod_status(&stale), "Unknown");
        let mut gone = running;
        gone.deleting = true;
        assert_eq!(pod_status(&gone), "Terminating");
        let table = pods_table(&[crash], 2);
        assert!(
            table.contains("0/1") && table.contains("CrashLoopBackOff"),
            "{table}"
        );
    }
}
