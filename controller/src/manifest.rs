//! Kubernetes-style YAML manifests into validated Outpost objects.
//!
//! Wire form (any YAML) is walked field by field against what Outpost
//! supports; every problem in a file is reported at once, each with its path
//! (`pods/web: spec.containers[0].securityContext: not supported by
//! Outpost`). A field Outpost does not support is an error, never silently
//! dropped: running a pod without the securityContext its author wrote would
//! be worse than refusing it.

use outpost_proto::names::{validate_label_key, validate_label_value, validate_node_name};
use outpost_proto::pod::{
    ContainerSpec, PodSpec, PortSpec, Probe, ProbeAction, Protocol, ResourceSpec, RestartPolicy,
    Volume, VolumeMount, VolumeSource, MAX_CONTAINERS,
};
use outpost_proto::units::parse_quantity;
use outpost_proto::Resources;
use serde_yaml::{Mapping, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Largest manifest file accepted.
pub const MAX_MANIFEST: usize = 1 << 20;

/// An object a manifest declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Pod(PodSpec),
}

/// Every problem found in a manifest, one line each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ManifestErrors(pub Vec<String>);

/// Parses a (multi-document) YAML manifest.
pub fn parse(text: &str) -> Result<Vec<Object>, ManifestErrors> {
    if text.len() > MAX_MANIFEST {
        return Err(ManifestErrors(vec![format!(
            "manifest is {} bytes; at most {MAX_MANIFEST} accepted",
            text.len()
        )]));
    }
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = match serde::Deserialize::deserialize(doc) {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                // After a syntax error the document boundaries are lost (and
                // the iterator would repeat the error): stop here.
                errors.push(format!("document {}: not valid YAML: {e}", i + 1));
                break;
            }
        };
        let mut w = Walker::new(format!("document {}", i + 1));
        if let Some(obj) = object(&mut w, &value) {
            objects.push(obj);
        }
        errors.extend(w.errors);
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(ManifestErrors(errors))
    }
}

/// TEMPORARY fallback until the rewrite of this module lands with the same
/// signature: every document of a (multi-document) YAML or JSON text as
/// JSON, empty documents skipped; errors name the document
/// (`document 2: ...`).
pub fn documents(text: &str) -> Result<Vec<serde_json::Value>, ManifestErrors> {
    if text.len() > MAX_MANIFEST {
        return Err(ManifestErrors(vec![format!(
            "manifest is {} bytes; at most {MAX_MANIFEST} accepted",
            text.len()
        )]));
    }
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        match <serde_json::Value as serde::Deserialize>::deserialize(doc) {
            Ok(serde_json::Value::Null) => {}
            Ok(v) => out.push(v),
            // The iterator would repeat a syntax error: stop at the first.
            Err(e) => {
                return Err(ManifestErrors(vec![format!(
                    "document {}: not valid YAML: {e}",
                    i + 1
                )]))
            }
        }
    }
    Ok(out)
}

/// Collects errors with paths.
struct Walker {
    prefix: String,
    errors: Vec<String>,
}

impl Walker {
    fn new(prefix: String) -> Walker {
        Walker {
            prefix,
            errors: Vec::new(),
        }
    }

    fn err(&mut self, path: &str, msg: impl std::fmt::Display) {
        self.errors.push(format!("{}: {path}: {msg}", self.prefix));
    }

    /// Opens a mapping at `path`, checking that only `known` keys are present.
    fn map<'v>(&mut self, path: &str, v: &'v Value, known: &[&str]) -> Option<Fields<'v>> {
        let Value::Mapping(m) = v else {
            self.err(path, "must be a mapping");
            return None;
        };
        let known: BTreeSet<&str> = known.iter().copied().collect();
        for k in m.keys() {
            match k.as_str() {
                Some(k) if known.contains(k) => {}
                Some(k) => self.err(&join(path, k), "not supported by Outpost"),
                None => self.err(path, "keys must be strings"),
            }
        }
        Some(Fields(m))
    }

    fn string(&mut self, path: &str, v: Option<&Value>) -> Option<String> {
        match v? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => {
                self.err(path, "must be a string");
                None
            }
        }
    }

    fn required_string(&mut self, path: &str, v: Option<&Value>) -> Option<String> {
        if v.is_none() {
            self.err(path, "is required");
        }
        self.string(path, v)
    }

    fn strings(&mut self, path: &str, v: Option<&Value>) -> Vec<String> {
        let Some(v) = v else {
            return Vec::new();
        };
        let Value::Sequence(items) = v else {
            self.err(path, "must be a list of strings");
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.string(&format!("{path}[{i}]"), Some(item)))
            .collect()
    }

    fn uint<T: TryFrom<u64>>(&mut self, path: &str, v: Option<&Value>) -> Option<T> {
        let n = match v? {
            Value::Number(n) => n.as_u64(),
            _ => None,
        };
        match n.and_then(|n| T::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                self.err(path, "must be a non-negative whole number in range");
                None
            }
        }
    }

    fn bool(&mut self, path: &str, v: Option<&Value>) -> bool {
        match v {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                self.err(path, "must be true or false");
                false
            }
        }
    }

    fn list<'v>(&mut self, path: &str, v: Option<&'v Value>) -> &'v [Value] {
        match v {
            None => &[],
            Some(Value::Sequence(s)) => s,
            Some(_) => {
                self.err(path, "must be a list");
                &[]
            }
        }
    }
}

struct Fields<'v>(&'v Mapping);

impl<'v> Fields<'v> {
    fn get(&self, key: &str) -> Option<&'v Value> {
        self.0.get(key)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn object(w: &mut Walker, v: &Value) -> Option<Object> {
    let top = w.map("", v, &["apiVersion", "kind", "metadata", "spec", "status"])?;
    let api = w.required_string("apiVersion", top.get("apiVersion"));
    let kind = w.required_string("kind", top.get("kind"));
    let name = top
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    w.prefix = format!(
        "{}/{name}",
        kind.as_deref().unwrap_or("object").to_lowercase()
    );
    match (api.as_deref(), kind.as_deref()) {
        (Some("v1"), Some("Pod")) => pod(w, &top).map(Object::Pod),
        (Some(api), Some(kind)) => {
            w.err(
                "kind",
                format!("{api} {kind} is not supported by Outpost yet (supported: v1 Pod)"),
            );
            None
        }
        _ => None,
    }
}

fn metadata(w: &mut Walker, v: Option<&Value>) -> (Option<String>, BTreeMap<String, String>) {
    let Some(v) = v else {
        w.err("metadata", "is required");
        return (None, BTreeMap::new());
    };
    let Some(m) = w.map("metadata", v, &["name", "labels", "namespace"]) else {
        return (None, BTreeMap::new());
    };
    let name = w.required_string("metadata.name", m.get("name"));
    if let Some(n) = &name {
        if let Err(e) = validate_node_name(n) {
            w.err("metadata.name", e.replace("node name", "name"));
        }
    }
    if let Some(ns) = w.string("metadata.namespace", m.get("namespace")) {
        if ns != "default" {
            w.err(
                "metadata.namespace",
                format!("{ns:?}: Outpost has no namespaces yet; use default or leave it out"),
            );
        }
    }
    let mut labels = BTreeMap::new();
    if let Some(l) = m.get("labels") {
        if let Value::Mapping(lm) = l {
            for (k, v) in lm {
                let (Some(k), Some(v)) = (
                    k.as_str(),
                    w.string(&format!("metadata.labels.{k:?}"), Some(v)),
                ) else {
                    w.err("metadata.labels", "keys and values must be strings");
                    continue;
                };
                if let Err(e) = validate_label_key(k).and_then(|()| validate_label_value(k, &v)) {
                    w.err("metadata.labels", e);
                }
                labels.insert(k.to_string(), v);
            }
        } else {
            w.err("metadata.labels", "must be a mapping");
        }
    }
    (name, labels)
}

fn cpu_millis(s: &str) -> Result<u64, String> {
    match s.strip_suffix('m') {
        Some(m) => m
            .parse::<u64>()
            .map_err(|_| format!("{s:?} is not a CPU quantity (e.g. 250m, 0.5, 2)")),
        None => {
            let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
            if (whole.is_empty() && frac.is_empty())
                || frac.len() > 3
                || !frac.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(format!("{s:?} is not a CPU quantity (e.g. 250m, 0.5, 2)"));
            }
            let whole: u64 = if whole.is_empty() {
                0
            } else {
                whole
                    .parse()
                    .map_err(|_| format!("{s:?} is not a CPU quantity (e.g. 250m, 0.5, 2)"))?
            };
            let frac_m: u64 = format!("{frac:0<3}").parse().unwrap_or(0);
            Ok(whole.saturating_mul(1000).saturating_add(frac_m))
        }
    }
}

const RESOURCE_NAMES: &[&str] = &[
    "cpu",
    "memory",
    "ephemeral-storage",
    "outpost.dev/pids",
    "nvidia.com/gpu",
];

fn resources(w: &mut Walker, path: &str, v: Option<&Value>) -> Resources {
    let mut r = Resources::default();
    let Some(v) = v else { return r };
    let Some(m) = w.map(path, v, RESOURCE_NAMES) else {
        return r;
    };
    for name in RESOURCE_NAMES {
        let p = join(path, name);
        let Some(q) = w.string(&p, m.get(name)) else {
            continue;
        };
        let parsed = match *name {
            "cpu" => cpu_millis(&q).map(|m| r.cpu_millis = m),
            "memory" => parse_quantity(&q).map(|b| r.memory_bytes = b),
            "ephemeral-storage" => parse_quantity(&q).map(|b| r.ephemeral_storage_bytes = b),
            "outpost.dev/pids" => parse_quantity(&q).map(|n| r.pids = n),
            _ => parse_quantity(&q)
                .and_then(|n| u32::try_from(n).map_err(|_| "too many GPUs".to_string()))
                .map(|n| r.gpus = n),
        };
        if let Err(e) = parsed {
            w.err(&p, e);
        }
    }
    r
}

fn probe(w: &mut Walker, path: &str, v: Option<&Value>) -> Option<Probe> {
    let m = w.map(
        path,
        v?,
        &[
            "exec",
            "httpGet",
            "tcpSocket",
            "initialDelaySeconds",
            "periodSeconds",
            "timeoutSeconds",
            "successThreshold",
            "failureThreshold",
        ],
    )?;
    let mut actions = Vec::new();
    if let Some(e) = m.get("exec") {
        if let Some(em) = w.map(&join(path, "exec"), e, &["command"]) {
            let command = w.strings(&join(path, "exec.command"), em.get("command"));
            if command.is_empty() {
                w.err(&join(path, "exec.command"), "must name a command");
            }
            actions.push(ProbeAction::Exec { command });
        }
    }
    if let Some(h) = m.get("httpGet") {
        if let Some(hm) = w.map(&join(path, "httpGet"), h, &["path", "port"]) {
            let path_s = w
                .string(&join(path, "httpGet.path"), hm.get("path"))
                .unwrap_or_else(|| "/".into());
            if let Some(port) = w.uint::<u16>(&join(path, "httpGet.port"), hm.get("port")) {
                actions.push(ProbeAction::Http { path: path_s, port });
            } else if hm.get("port").is_none() {
                w.err(&join(path, "httpGet.port"), "is required (a number)");
            }
        }
    }
    if let Some(t) = m.get("tcpSocket") {
        if let Some(tm) = w.map(&join(path, "tcpSocket"), t, &["port"]) {
            if let Some(port) = w.uint::<u16>(&join(path, "tcpSocket.port"), tm.get("port")) {
                actions.push(ProbeAction::Tcp { port });
            } else if tm.get("port").is_none() {
                w.err(&join(path, "tcpSocket.port"), "is required (a number)");
            }
        }
    }
    if actions.len() != 1 {
        w.err(path, "needs exactly one of exec, httpGet, tcpSocket");
        return None;
    }
    // Kubernetes' defaults.
    let mut num = |key: &str, default: u32, min: u32| {
        let v = w
            .uint::<u32>(&join(path, key), m.get(key))
            .unwrap_or(default);
        if v < min {
            w.err(&join(path, key), format!("must be at least {min}"));
        }
        v
    };
    Some(Probe {
        initial_delay_secs: num("initialDelaySeconds", 0, 0),
        period_secs: num("periodSeconds", 10, 1),
        timeout_secs: num("timeoutSeconds", 1, 1),
        success_threshold: num("successThreshold", 1, 1),
        failure_threshold: num("failureThreshold", 3, 1),
        action: actions.remove(0),
    })
}

fn container(w: &mut Walker, path: &str, v: &Value) -> Option<ContainerSpec> {
    let m = w.map(
        path,
        v,
        &[
            "name",
            "image",
            "command",
            "args",
            "env",
            "ports",
            "resources",
            "livenessProbe",
            "readinessProbe",
            "volumeMounts",
            "imagePullPolicy",
        ],
    )?;
    let name = w.required_string(&join(path, "name"), m.get("name"));
    if let Some(n) = &name {
        if let Err(e) = validate_node_name(n) {
            w.err(
                &join(path, "name"),
                e.replace("node name", "container name"),
            );
        }
    }
    let image = w.required_string(&join(path, "image"), m.get("image"));
    if let Some(p) = w.string(&join(path, "imagePullPolicy"), m.get("imagePullPolicy")) {
        if !matches!(p.as_str(), "IfNotPresent" | "Always" | "Never") {
            w.err(
                &join(path, "imagePullPolicy"),
                "must be IfNotPresent, Always or Never",
            );
        }
    }
    let mut env = Vec::new();
    for (i, e) in w.list(&join(path, "env"), m.get("env")).iter().enumerate() {
        let p = format!("{path}.env[{i}]");
        if let Some(em) = w.map(&p, e, &["name", "value"]) {
            if let Some(n) = w.required_string(&join(&p, "name"), em.get("name")) {
                env.push((
                    n,
                    w.string(&join(&p, "value"), em.get("value"))
                        .unwrap_or_default(),
                ));
            }
        }
    }
    let mut ports = Vec::new();
    for (i, pv) in w
        .list(&join(path, "ports"), m.get("ports"))
        .iter()
        .enumerate()
    {
        let p = format!("{path}.ports[{i}]");
        if let Some(pm) = w.map(&p, pv, &["name", "containerPort", "hostPort", "protocol"]) {
            let protocol = match w
                .string(&join(&p, "protocol"), pm.get("protocol"))
                .as_deref()
            {
                None | Some("TCP") => Protocol::Tcp,
                Some("UDP") => Protocol::Udp,
                Some(other) => {
                    w.err(&join(&p, "protocol"), format!("{other:?}: use TCP or UDP"));
                    Protocol::Tcp
                }
            };
            let Some(container_port) =
                w.uint::<u16>(&join(&p, "containerPort"), pm.get("containerPort"))
            else {
                if pm.get("containerPort").is_none() {
                    w.err(&join(&p, "containerPort"), "is required");
                }
                continue;
            };
            ports.push(PortSpec {
                name: w
                    .string(&join(&p, "name"), pm.get("name"))
                    .unwrap_or_default(),
                container_port,
                host_port: w.uint::<u16>(&join(&p, "hostPort"), pm.get("hostPort")),
                protocol,
            });
        }
    }
    let mut res = ResourceSpec::default();
    if let Some(rv) = m.get("resources") {
        let rp = join(path, "resources");
        if let Some(rm) = w.map(&rp, rv, &["requests", "limits"]) {
            res.requests = resources(w, &join(&rp, "requests"), rm.get("requests"));
            res.limits = resources(w, &join(&rp, "limits"), rm.get("limits"));
        }
    }
    let mut volume_mounts = Vec::new();
    for (i, vm) in w
        .list(&join(path, "volumeMounts"), m.get("volumeMounts"))
        .iter()
        .enumerate()
    {
        let p = format!("{path}.volumeMounts[{i}]");
        if let Some(mm) = w.map(&p, vm, &["name", "mountPath", "readOnly"]) {
            let name = w.required_string(&join(&p, "name"), mm.get("name"));
            let mount_path = w.required_string(&join(&p, "mountPath"), mm.get("mountPath"));
            if let Some(mp) = &mount_path {
                if !mp.starts_with('/') {
                    w.err(&join(&p, "mountPath"), "must be an absolute path");
                }
            }
            let read_only = w.bool(&join(&p, "readOnly"), mm.get("readOnly"));
            if let (Some(name), Some(mount_path)) = (name, mount_path) {
                volume_mounts.push(VolumeMount {
                    name,
                    mount_path,
                    read_only,
                });
            }
        }
    }
    Some(ContainerSpec {
        command: w.strings(&join(path, "command"), m.get("command")),
        args: w.strings(&join(path, "args"), m.get("args")),
        liveness: probe(w, &join(path, "livenessProbe"), m.get("livenessProbe")),
        readiness: probe(w, &join(path, "readinessProbe"), m.get("readinessProbe")),
        name: name?,
        image: image?,
        env,
        ports,
        resources: res,
        volume_mounts,
    })
}

fn pod(w: &mut Walker, top: &Fields<'_>) -> Option<PodSpec> {
    let (name, labels) = metadata(w, top.get("metadata"));
    let Some(spec) = top.get("spec") else {
        w.err("spec", "is required");
        return None;
    };
    let s = w.map(
        "spec",
        spec,
        &[
            "nodeName",
            "containers",
            "restartPolicy",
            "terminationGracePeriodSeconds",
            "volumes",
            "priority",
        ],
    )?;
    let node_name = w.string("spec.nodeName", s.get("nodeName"));
    if let Some(n) = &node_name {
        if let Err(e) = validate_node_name(n) {
            w.err("spec.nodeName", e);
        }
    }
    let restart_policy = match w
        .string("spec.restartPolicy", s.get("restartPolicy"))
        .as_deref()
    {
        None | Some("Always") => RestartPolicy::Always,
        Some("OnFailure") => RestartPolicy::OnFailure,
        Some("Never") => RestartPolicy::Never,
        Some(other) => {
            w.err(
                "spec.restartPolicy",
                format!("{other:?}: use Always, OnFailure or Never"),
            );
            RestartPolicy::Always
        }
    };
    let items = w.list("spec.containers", s.get("containers"));
    if items.is_empty() {
        w.err("spec.containers", "needs at least one container");
    }
    if items.len() > MAX_CONTAINERS {
        w.err(
            "spec.containers",
            format!("{} containers; at most {MAX_CONTAINERS}", items.len()),
        );
    }
    let containers: Vec<ContainerSpec> = items
        .iter()
        .enumerate()
        .filter_map(|(i, c)| container(w, &format!("spec.containers[{i}]"), c))
        .collect();
    let mut seen = BTreeSet::new();
    for c in &containers {
        if !seen.insert(c.name.as_str()) {
            w.err(
                "spec.containers",
                format!("container name {:?} is used twice", c.name),
            );
        }
    }
    let mut volumes = Vec::new();
    for (i, v) in w.list("spec.volumes", s.get("volumes")).iter().enumerate() {
        let p = format!("spec.volumes[{i}]");
        let Some(vm) = w.map(&p, v, &["name", "hostPath", "emptyDir"]) else {
            continue;
        };
        let Some(name) = w.required_string(&join(&p, "name"), vm.get("name")) else {
            continue;
        };
        let source = match (vm.get("hostPath"), vm.get("emptyDir")) {
            (Some(h), None) => w
                .map(&join(&p, "hostPath"), h, &["path"])
                .and_then(|hm| w.required_string(&join(&p, "hostPath.path"), hm.get("path")))
                .map(|path| VolumeSource::HostPath { path }),
            (None, Some(e)) => match e {
                Value::Null => Some(VolumeSource::EmptyDir),
                Value::Mapping(m) if m.is_empty() => Some(VolumeSource::EmptyDir),
                _ => {
                    w.err(
                        &join(&p, "emptyDir"),
                        "options (medium, sizeLimit) are not supported by Outpost; use {}",
                    );
                    None
                }
            },
            _ => {
                w.err(&p, "needs exactly one of hostPath, emptyDir");
                None
            }
        };
        if let Some(source) = source {
            volumes.push(Volume { name, source });
        }
    }
    for c in &containers {
        for m in &c.volume_mounts {
            if !volumes.iter().any(|v| v.name == m.name) {
                w.err(
                    "spec.containers",
                    format!(
                        "container {} mounts volume {:?}, which spec.volumes does not define",
                        c.name, m.name
                    ),
                );
            }
        }
    }
    let termination_grace_secs = w
        .uint::<u64>(
            "spec.terminationGracePeriodSeconds",
            s.get("terminationGracePeriodSeconds"),
        )
        .unwrap_or(outpost_proto::pod::DEFAULT_TERMINATION_GRACE_SECS);
    let priority = match s.get("priority") {
        None => 0,
        Some(v) => match v.as_i64().and_then(|n| i32::try_from(n).ok()) {
            Some(p) => p,
            None => {
                w.err("spec.priority", "must be a whole number");
                0
            }
        },
    };
    if !w.errors.is_empty() {
        return None;
    }
    Some(PodSpec {
        name: name?,
        namespace: outpost_proto::pod::DEFAULT_NAMESPACE.to_string(),
        labels,
        node_name,
        containers,
        restart_policy,
        termination_grace_secs,
        volumes,
        priority,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  nodeName: edge-1
  restartPolicy: OnFailure
  terminationGracePeriodSeconds: 5
  containers:
  - name: http
    image: outpost/workload-http:dev
    args: ["--port", "8080"]
    env: [{name: POD_NAME, value: web}]
    ports: [{containerPort: 8080, hostPort: 18080}]
    resources:
      requests: {cpu: 250m, memory: 64Mi}
      limits: {cpu: "1", memory: 128Mi, outpost.dev/pids: "100"}
    livenessProbe:
      httpGet: {path: /healthz, port: 8080}
      periodSeconds: 2
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    emptyDir: {}
"#;

    #[test]
    fn a_full_pod_parses() {
        let objs = parse(WEB).unwrap();
        let Object::Pod(p) = &objs[0];
        assert_eq!(p.name, "web");
        assert_eq!(p.node_name.as_deref(), Some("edge-1"));
        assert_eq!(p.restart_policy, RestartPolicy::OnFailure);
        assert_eq!(p.termination_grace_secs, 5);
        let c = &p.containers[0];
        assert_eq!(c.resources.requests.cpu_millis, 250);
        assert_eq!(c.resources.limits.cpu_millis, 1000);
        assert_eq!(c.resources.limits.memory_bytes, 128 << 20);
        assert_eq!(c.resources.limits.pids, 100);
        assert_eq!(c.ports[0].host_port, Some(18080));
        let l = c.liveness.as_ref().unwrap();
        assert_eq!(
            l.action,
            ProbeAction::Http {
                path: "/healthz".into(),
                port: 8080
            }
        );
        assert_eq!(
            (l.period_secs, l.failure_threshold, l.timeout_secs),
            (2, 3, 1)
        );
        assert_eq!(p.volumes[0].source, VolumeSource::EmptyDir);
        assert_eq!(p.requests().memory_bytes, 64 << 20);
    }

    #[test]
    fn every_unsupported_field_is_named() {
        let text = WEB
            .replace(
                "  restartPolicy: OnFailure",
                "  restartPolicy: OnFailure\n  hostNetwork: true",
            )
            .replace(
                "    image: outpost/workload-http:dev",
                "    image: outpost/workload-http:dev\n    securityContext: {privileged: true}",
            );
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("pod/web: spec.hostNetwork: not supported by Outpost"),
            "{err}"
        );
        assert!(
            err.contains("pod/web: spec.containers[0].securityContext: not supported by Outpost"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 2, "{err}");
    }

    #[test]
    fn problems_are_all_reported_with_paths() {
        let bad = r#"
apiVersion: v1
kind: Pod
metadata: {name: Bad_Name}
spec:
  restartPolicy: Sometimes
  containers:
  - name: a
    resources: {limits: {cpu: lots}}
    livenessProbe: {periodSeconds: 0}
    volumeMounts: [{name: nope, mountPath: rel}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
"#;
        let err = parse(bad).unwrap_err().to_string();
        for needle in [
            "pod/Bad_Name: metadata.name",
            "spec.restartPolicy: \"Sometimes\"",
            "spec.containers[0].image: is required",
            "spec.containers[0].resources.limits.cpu",
            "spec.containers[0].livenessProbe: needs exactly one of exec, httpGet, tcpSocket",
            "mountPath: must be an absolute path",
            "statefulset/db: kind: apps/v1 StatefulSet is not supported",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
    }

    #[test]
    fn cpu_quantities() {
        for (s, m) in [
            ("250m", 250),
            ("1", 1000),
            ("0.5", 500),
            ("1.25", 1250),
            (".1", 100),
        ] {
            assert_eq!(cpu_millis(s).unwrap(), m, "{s}");
        }
        for bad in ["", "x", "1.2345", "-1", "1Gi"] {
            assert!(cpu_millis(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let deep = "[".repeat(200);
        for text in [
            "",
            "---\n---\n",
            "[1,2",
            "42",
            "apiVersion: v1\nkind: Pod\nmetadata: []\nspec: 3\n",
            &deep,
        ] {
            let _ = parse(text);
        }
        assert!(parse(&"x".repeat(MAX_MANIFEST + 1)).is_err());
    }
}
