//! `v1 Pod`, and the pod spec of every template (ReplicaSets,
//! Deployments): what runs (containers, volumes, probes) and everything the
//! scheduler reads (resources, node selector, affinity, tolerations,
//! topology spread, priority, host ports).

use super::meta::{label_selector, labels, metadata, template_metadata, NameRule};
use super::quantity::requirements;
use super::walk::{
    dns_label, dns_subdomain, index, join, port_name, Harmless, Obj, Treat, Walker, MAX_LIST,
};
use crate::api::pod::{
    Affinity, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, ExecAction,
    HostPathVolumeSource, HttpGetAction, NodeAffinity, NodeSelector, NodeSelectorOperator,
    NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinity, PodAffinityTerm, PodSpec,
    PodTemplateSpec, PreemptionPolicy, PreferredSchedulingTerm, Probe, Protocol, RestartPolicy,
    TaintEffect, TcpSocketAction, Toleration, TolerationOperator, TopologySpreadConstraint,
    UnsatisfiableConstraintAction, Volume, VolumeMount, WeightedPodAffinityTerm,
};
use crate::api::Kind;
use outpost_proto::names::{validate_label_key, validate_label_value, HOSTNAME_LABEL, SITE_LABEL};
use outpost_proto::pod::pod_limits::{MAX_ARGS, MAX_ENV, MAX_PORTS, MAX_TEXT, MAX_VOLUMES};
use outpost_proto::pod::MAX_CONTAINERS;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Topology keys affinity and spread constraints may name: the labels
/// every node carries (or the registry sets from its site).
pub const TOPOLOGY_KEYS: [&str; 3] = [HOSTNAME_LABEL, "topology.kubernetes.io/zone", SITE_LABEL];

/// Longest termination grace period: a year. A node waits this long for a
/// container to stop; beyond it a deadline no longer fits a timer.
pub const MAX_GRACE_SECONDS: i64 = 365 * 24 * 3600;

/// Longest image reference (the wire's bound).
const MAX_IMAGE: usize = 512;

/// Where a pod spec is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecOf {
    Pod,
    /// `spec.template.spec` of a ReplicaSet or Deployment.
    Template,
}

/// A `v1 Pod` document (its `apiVersion` and `kind` already read).
pub fn pod(w: &mut Walker, top: &Obj<'_>) -> Pod {
    let metadata = metadata(w, top.get("metadata"), Kind::Pod, NameRule::Label);
    let spec = match w.required("", top, "spec") {
        Some(v) => pod_spec(w, "spec", v, SpecOf::Pod),
        None => PodSpec::default(),
    };
    Pod {
        metadata,
        spec,
        status: Default::default(),
    }
}

/// `spec.template` of a workload.
pub fn template(w: &mut Walker, path: &str, v: Option<&Value>) -> PodTemplateSpec {
    let Some(v) = v else {
        w.err(path, "is required");
        return PodTemplateSpec::default();
    };
    let Some(o) = w.obj(path, v, &[("metadata", Treat::Use), ("spec", Treat::Use)]) else {
        return PodTemplateSpec::default();
    };
    let metadata = template_metadata(w, &join(path, "metadata"), o.get("metadata"));
    let spec = match w.required(path, &o, "spec") {
        Some(s) => pod_spec(w, &join(path, "spec"), s, SpecOf::Template),
        None => PodSpec::default(),
    };
    PodTemplateSpec { metadata, spec }
}

const POD_SPEC_KEYS: &[(&str, Treat)] = &[
    ("containers", Treat::Use),
    ("restartPolicy", Treat::Use),
    ("terminationGracePeriodSeconds", Treat::Use),
    ("volumes", Treat::Use),
    ("nodeName", Treat::Use),
    ("nodeSelector", Treat::Use),
    ("affinity", Treat::Use),
    ("tolerations", Treat::Use),
    ("priority", Treat::Use),
    ("priorityClassName", Treat::Use),
    ("preemptionPolicy", Treat::Use),
    ("topologySpreadConstraints", Treat::Use),
    (
        "dnsPolicy",
        Treat::InformIf(
            Harmless::OneOf(&["ClusterFirst", "ClusterFirstWithHostNet"]),
            "pods resolve names through their node's agent, as with ClusterFirst",
        ),
    ),
    (
        "schedulerName",
        Treat::InformIf(
            Harmless::OneOf(&["default-scheduler"]),
            "Outpost has one scheduler",
        ),
    ),
    (
        "securityContext",
        Treat::InformIf(Harmless::Empty, "containers run with the engine's defaults"),
    ),
    (
        "hostNetwork",
        Treat::InformIf(Harmless::False, "pods have their own network"),
    ),
    (
        "hostPID",
        Treat::InformIf(Harmless::False, "pods have their own pid namespace"),
    ),
    (
        "hostIPC",
        Treat::InformIf(Harmless::False, "pods have their own IPC namespace"),
    ),
    (
        "shareProcessNamespace",
        Treat::InformIf(Harmless::False, "containers of a pod do not share pids"),
    ),
    (
        "enableServiceLinks",
        Treat::Inform("Outpost sets no Service environment variables"),
    ),
    (
        "serviceAccountName",
        Treat::InformIf(Harmless::OneOf(&["default"]), "pods get no API credentials"),
    ),
    (
        "serviceAccount",
        Treat::InformIf(Harmless::OneOf(&["default"]), "pods get no API credentials"),
    ),
    (
        "automountServiceAccountToken",
        Treat::InformIf(Harmless::False, "Outpost mounts no service account token"),
    ),
];

/// A pod spec at `path`.
pub fn pod_spec(w: &mut Walker, path: &str, v: &Value, of: SpecOf) -> PodSpec {
    let mut spec = PodSpec {
        termination_grace_period_seconds: 30,
        ..PodSpec::default()
    };
    let Some(s) = w.obj(path, v, POD_SPEC_KEYS) else {
        return spec;
    };
    let p = |k: &str| join(path, k);

    let volumes = volumes(w, &p("volumes"), s.get("volumes"));
    let cp = p("containers");
    let items = w.list(&cp, s.get("containers"), MAX_CONTAINERS);
    if items.is_empty() && !matches!(s.get("containers"), Some(v) if !v.is_array()) {
        w.err(&cp, "needs at least one container");
    }
    let mut names = BTreeSet::new();
    let mut host_ports: BTreeMap<(u16, Protocol), String> = BTreeMap::new();
    for (i, c) in items.iter().enumerate() {
        let path_i = index(&cp, i);
        let c = container(w, &path_i, c);
        if !c.name.is_empty() && !names.insert(c.name.clone()) {
            w.err(
                &join(&path_i, "name"),
                format!("container name {:?} is used twice", c.name),
            );
        }
        for (j, port) in c.ports.iter().enumerate() {
            if let Some(h) = port.host_port {
                if let Some(other) = host_ports.insert((h, port.protocol), c.name.clone()) {
                    w.err(
                        &join(&index(&join(&path_i, "ports"), j), "hostPort"),
                        format!(
                            "{h}/{} is already published by container {other:?}",
                            port.protocol.name()
                        ),
                    );
                }
            }
        }
        for (j, m) in c.volume_mounts.iter().enumerate() {
            if !volumes.iter().any(|v| v.name == m.name) {
                w.err(
                    &join(&index(&join(&path_i, "volumeMounts"), j), "name"),
                    format!("{:?} names no volume in {}", m.name, p("volumes")),
                );
            }
        }
        spec.containers.push(c);
    }
    spec.volumes = volumes;

    if let Some(r) = s.get("restartPolicy") {
        let rp = p("restartPolicy");
        if let Some(r) = w.one_of(&rp, r, &["Always", "OnFailure", "Never"]) {
            spec.restart_policy = match r.as_str() {
                "OnFailure" => RestartPolicy::OnFailure,
                "Never" => RestartPolicy::Never,
                _ => RestartPolicy::Always,
            };
            if of == SpecOf::Template && spec.restart_policy != RestartPolicy::Always {
                w.err(
                    &rp,
                    format!("{r:?}: pods of a ReplicaSet or Deployment must restart Always (as in Kubernetes)"),
                );
            }
        }
    }
    if let Some(g) = w.opt_int(
        path,
        &s,
        "terminationGracePeriodSeconds",
        0,
        MAX_GRACE_SECONDS,
    ) {
        spec.termination_grace_period_seconds = g;
    }
    if let Some(n) = w.opt_text(path, &s, "nodeName", 253) {
        if let Err(e) = dns_label(&n) {
            w.err(&p("nodeName"), e);
        }
        spec.node_name = n;
    }
    spec.node_selector = labels(w, &p("nodeSelector"), s.get("nodeSelector"));
    spec.affinity = s
        .get("affinity")
        .and_then(|a| affinity(w, &p("affinity"), a));
    spec.tolerations = tolerations(w, &p("tolerations"), s.get("tolerations"));
    spec.priority = w
        .opt_int(
            path,
            &s,
            "priority",
            i64::from(i32::MIN),
            i64::from(i32::MAX),
        )
        .and_then(|n| i32::try_from(n).ok());
    if let Some(n) = w.opt_text(path, &s, "priorityClassName", 253) {
        if let Err(e) = dns_subdomain(&n) {
            w.err(&p("priorityClassName"), e);
        }
        spec.priority_class_name = n;
    }
    spec.preemption_policy = s
        .get("preemptionPolicy")
        .and_then(|v| preemption_policy(w, &p("preemptionPolicy"), v));
    spec.topology_spread_constraints = spread(
        w,
        &p("topologySpreadConstraints"),
        s.get("topologySpreadConstraints"),
    );
    spec
}

/// `PreemptLowerPriority` or `Never`.
pub fn preemption_policy(w: &mut Walker, path: &str, v: &Value) -> Option<PreemptionPolicy> {
    w.one_of(path, v, &["PreemptLowerPriority", "Never"])
        .map(|s| {
            if s == "Never" {
                PreemptionPolicy::Never
            } else {
                PreemptionPolicy::PreemptLowerPriority
            }
        })
}

fn container(w: &mut Walker, path: &str, v: &Value) -> Container {
    let mut c = Container::default();
    let Some(o) = w.obj(
        path,
        v,
        &[
            ("name", Treat::Use),
            ("image", Treat::Use),
            ("command", Treat::Use),
            ("args", Treat::Use),
            ("env", Treat::Use),
            ("ports", Treat::Use),
            ("resources", Treat::Use),
            ("livenessProbe", Treat::Use),
            ("readinessProbe", Treat::Use),
            ("volumeMounts", Treat::Use),
            ("imagePullPolicy", Treat::Use),
            (
                "terminationMessagePath",
                Treat::Inform(
                    "Outpost keeps each container's exit code and reason, not a message file",
                ),
            ),
            (
                "terminationMessagePolicy",
                Treat::Inform(
                    "Outpost keeps each container's exit code and reason, not a message file",
                ),
            ),
            (
                "securityContext",
                Treat::InformIf(Harmless::Empty, "containers run with the engine's defaults"),
            ),
            (
                "stdin",
                Treat::InformIf(Harmless::False, "containers get no terminal"),
            ),
            (
                "stdinOnce",
                Treat::InformIf(Harmless::False, "containers get no terminal"),
            ),
            (
                "tty",
                Treat::InformIf(Harmless::False, "containers get no terminal"),
            ),
        ],
    ) else {
        return c;
    };
    let p = |k: &str| join(path, k);
    if let Some(n) = w
        .required(path, &o, "name")
        .and_then(|n| w.string(&p("name"), n))
    {
        if let Err(e) = dns_label(&n) {
            w.err(&p("name"), e);
        }
        c.name = n;
    }
    if let Some(i) = w
        .required(path, &o, "image")
        .and_then(|i| w.text(&p("image"), i, MAX_IMAGE))
    {
        if i.trim().is_empty() {
            w.err(&p("image"), "must name an image");
        }
        c.image = i;
    }
    if let Some(pp) = o.get("imagePullPolicy") {
        if w.one_of(
            &p("imagePullPolicy"),
            pp,
            &["IfNotPresent", "Always", "Never"],
        )
        .is_some()
        {
            w.warn(
                &p("imagePullPolicy"),
                "ignored: nodes pull an image only when they lack it (pulls over weak links are expensive)",
            );
        }
    }
    c.command = w.strings(&p("command"), o.get("command"), MAX_ARGS, MAX_TEXT);
    c.args = w.strings(&p("args"), o.get("args"), MAX_ARGS, MAX_TEXT);
    if c.command.len() + c.args.len() > MAX_ARGS {
        w.err(
            path,
            format!("command and args have more than {MAX_ARGS} entries together"),
        );
    }
    let ep = p("env");
    for (i, e) in w.list(&ep, o.get("env"), MAX_ENV).iter().enumerate() {
        let pi = index(&ep, i);
        let Some(eo) = w.obj_hint(
            &pi,
            e,
            &[("name", Treat::Use), ("value", Treat::Use)],
            " (Outpost has no ConfigMaps, Secrets or downward API yet; give value)",
        ) else {
            continue;
        };
        let name = w
            .required(&pi, &eo, "name")
            .and_then(|n| w.text(&join(&pi, "name"), n, 256));
        if let Some(n) = &name {
            if n.is_empty() || !n.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'=') {
                w.err(
                    &join(&pi, "name"),
                    format!("{n:?} is not a valid variable name (printable, without '=')"),
                );
            }
        }
        let value = w.opt_text(&pi, &eo, "value", MAX_TEXT).unwrap_or_default();
        if let Some(name) = name {
            c.env.push(EnvVar { name, value });
        }
    }
    let pp = p("ports");
    let mut port_names = BTreeSet::new();
    for (i, pv) in w.list(&pp, o.get("ports"), MAX_PORTS).iter().enumerate() {
        let pi = index(&pp, i);
        let Some(po) = w.obj(
            &pi,
            pv,
            &[
                ("name", Treat::Use),
                ("containerPort", Treat::Use),
                ("hostPort", Treat::Use),
                ("protocol", Treat::Use),
            ],
        ) else {
            continue;
        };
        let name = w.opt_text(&pi, &po, "name", 15).unwrap_or_default();
        if !name.is_empty() {
            if let Err(e) = port_name(&name) {
                w.err(&join(&pi, "name"), e);
            } else if !port_names.insert(name.clone()) {
                w.err(
                    &join(&pi, "name"),
                    format!("port name {name:?} is used twice"),
                );
            }
        }
        let protocol = po.get("protocol").map_or(Some(Protocol::TCP), |v| {
            protocol(w, &join(&pi, "protocol"), v)
        });
        let container_port = w
            .required(&pi, &po, "containerPort")
            .and_then(|v| w.port(&join(&pi, "containerPort"), v));
        let host_port = po
            .get("hostPort")
            .and_then(|v| w.port(&join(&pi, "hostPort"), v));
        if let (Some(container_port), Some(protocol)) = (container_port, protocol) {
            c.ports.push(ContainerPort {
                name,
                container_port,
                host_port,
                protocol,
            });
        }
    }
    c.resources = requirements(w, &p("resources"), o.get("resources"));
    c.liveness_probe = o
        .get("livenessProbe")
        .and_then(|v| probe(w, &p("livenessProbe"), v, &c.ports, true));
    c.readiness_probe = o
        .get("readinessProbe")
        .and_then(|v| probe(w, &p("readinessProbe"), v, &c.ports, false));
    let mp = p("volumeMounts");
    let mut mount_paths = BTreeSet::new();
    for (i, m) in w
        .list(&mp, o.get("volumeMounts"), MAX_VOLUMES)
        .iter()
        .enumerate()
    {
        let pi = index(&mp, i);
        let Some(mo) = w.obj(
            &pi,
            m,
            &[
                ("name", Treat::Use),
                ("mountPath", Treat::Use),
                ("readOnly", Treat::Use),
            ],
        ) else {
            continue;
        };
        let name = w
            .required(&pi, &mo, "name")
            .and_then(|n| w.text(&join(&pi, "name"), n, 63));
        let mount_path = w
            .required(&pi, &mo, "mountPath")
            .and_then(|n| w.text(&join(&pi, "mountPath"), n, MAX_TEXT));
        if let Some(m) = &mount_path {
            if !m.starts_with('/') {
                w.err(
                    &join(&pi, "mountPath"),
                    format!("{m:?} must be an absolute path"),
                );
            } else if !mount_paths.insert(m.clone()) {
                w.err(&join(&pi, "mountPath"), format!("{m:?} is mounted twice"));
            }
        }
        let read_only = w.flag(&pi, &mo, "readOnly");
        if let (Some(name), Some(mount_path)) = (name, mount_path) {
            c.volume_mounts.push(VolumeMount {
                name,
                mount_path,
                read_only,
            });
        }
    }
    c
}

/// `TCP` or `UDP`.
pub fn protocol(w: &mut Walker, path: &str, v: &Value) -> Option<Protocol> {
    let s = w.string(path, v)?;
    match s.as_str() {
        "TCP" => Some(Protocol::TCP),
        "UDP" => Some(Protocol::UDP),
        other => {
            w.err(
                path,
                format!("{other:?} is not supported by Outpost (protocols: TCP, UDP)"),
            );
            None
        }
    }
}

/// A probe; named ports are resolved against the container's `ports`, so
/// the stored probe always carries the number.
fn probe(
    w: &mut Walker,
    path: &str,
    v: &Value,
    ports: &[ContainerPort],
    liveness: bool,
) -> Option<Probe> {
    let o = w.obj(
        path,
        v,
        &[
            ("exec", Treat::Use),
            ("httpGet", Treat::Use),
            ("tcpSocket", Treat::Use),
            ("initialDelaySeconds", Treat::Use),
            ("periodSeconds", Treat::Use),
            ("timeoutSeconds", Treat::Use),
            ("successThreshold", Treat::Use),
            ("failureThreshold", Treat::Use),
        ],
    )?;
    let actions = ["exec", "httpGet", "tcpSocket"]
        .iter()
        .filter(|a| o.has(a))
        .count();
    if actions != 1 {
        w.err(path, "needs exactly one of exec, httpGet, tcpSocket");
    }
    let resolve = |w: &mut Walker, p: &str, v: Option<&Value>| -> Option<u16> {
        match v {
            None => {
                w.err(p, "is required");
                None
            }
            Some(Value::String(name)) => {
                match ports.iter().find(|cp| &cp.name == name) {
                    Some(cp) => Some(cp.container_port),
                    None => {
                        let named: Vec<&str> = ports
                            .iter()
                            .map(|p| p.name.as_str())
                            .filter(|n| !n.is_empty())
                            .collect();
                        w.err(
                        p,
                        if named.is_empty() {
                            format!("{name:?} names no port of the container (it has no named ports)")
                        } else {
                            format!("{name:?} names no port of the container (named ports: {})", named.join(", "))
                        },
                    );
                        None
                    }
                }
            }
            Some(v) => w.port(p, v),
        }
    };
    let mut probe = Probe {
        exec: None,
        http_get: None,
        tcp_socket: None,
        initial_delay_seconds: 0,
        period_seconds: 10,
        timeout_seconds: 1,
        success_threshold: 1,
        failure_threshold: 3,
    };
    if let Some(e) = o.get("exec") {
        let p = join(path, "exec");
        if let Some(eo) = w.obj(&p, e, &[("command", Treat::Use)]) {
            let command = w.strings(&join(&p, "command"), eo.get("command"), MAX_ARGS, MAX_TEXT);
            if command.is_empty() {
                w.err(&join(&p, "command"), "must name a command");
            }
            probe.exec = Some(ExecAction { command });
        }
    }
    if let Some(h) = o.get("httpGet") {
        let p = join(path, "httpGet");
        if let Some(ho) = w.obj(
            &p,
            h,
            &[
                ("path", Treat::Use),
                ("port", Treat::Use),
                (
                    "scheme",
                    Treat::InformIf(Harmless::OneOf(&["HTTP"]), "probes speak plain HTTP"),
                ),
            ],
        ) {
            let hpath = w
                .opt_text(&p, &ho, "path", MAX_TEXT)
                .unwrap_or_else(|| "/".into());
            if !hpath.starts_with('/') {
                w.err(&join(&p, "path"), format!("{hpath:?} must start with '/'"));
            }
            if let Some(port) = resolve(w, &join(&p, "port"), ho.get("port")) {
                probe.http_get = Some(HttpGetAction { path: hpath, port });
            }
        }
    }
    if let Some(t) = o.get("tcpSocket") {
        let p = join(path, "tcpSocket");
        if let Some(to) = w.obj(&p, t, &[("port", Treat::Use)]) {
            if let Some(port) = resolve(w, &join(&p, "port"), to.get("port")) {
                probe.tcp_socket = Some(TcpSocketAction { port });
            }
        }
    }
    let max = i64::from(u32::MAX);
    let num = |w: &mut Walker, key: &str, min: i64, into: &mut u32| {
        if let Some(n) = w.opt_int(path, &o, key, min, max) {
            *into = u32::try_from(n).unwrap_or(u32::MAX);
        }
    };
    num(
        w,
        "initialDelaySeconds",
        0,
        &mut probe.initial_delay_seconds,
    );
    num(w, "periodSeconds", 1, &mut probe.period_seconds);
    num(w, "timeoutSeconds", 1, &mut probe.timeout_seconds);
    num(w, "successThreshold", 1, &mut probe.success_threshold);
    num(w, "failureThreshold", 1, &mut probe.failure_threshold);
    if liveness && probe.success_threshold != 1 {
        w.err(
            &join(path, "successThreshold"),
            "must be 1 for a liveness probe (as in Kubernetes)",
        );
    }
    Some(probe)
}

fn volumes(w: &mut Walker, path: &str, v: Option<&Value>) -> Vec<Volume> {
    let mut out: Vec<Volume> = Vec::new();
    for (i, vv) in w.list(path, v, MAX_VOLUMES).iter().enumerate() {
        let p = index(path, i);
        let Some(o) = w.obj_hint(
            &p,
            vv,
            &[
                ("name", Treat::Use),
                ("hostPath", Treat::Use),
                ("emptyDir", Treat::Use),
            ],
            " (volume types: hostPath, emptyDir)",
        ) else {
            continue;
        };
        let name = w
            .required(&p, &o, "name")
            .and_then(|n| w.string(&join(&p, "name"), n));
        if let Some(n) = &name {
            if let Err(e) = dns_label(n) {
                w.err(&join(&p, "name"), e);
            } else if out.iter().any(|v| &v.name == n) {
                w.err(&join(&p, "name"), format!("volume {n:?} is declared twice"));
            }
        }
        // `emptyDir:` with nothing after it is YAML's null: still an emptyDir.
        let empty_dir_given = o.map.contains_key("emptyDir");
        let mut volume = Volume {
            name: name.unwrap_or_default(),
            host_path: None,
            empty_dir: None,
        };
        match (o.get("hostPath"), empty_dir_given) {
            (Some(h), false) => {
                let hp = join(&p, "hostPath");
                if let Some(ho) = w.obj(
                    &hp,
                    h,
                    &[
                        ("path", Treat::Use),
                        (
                            "type",
                            Treat::InformIf(
                                Harmless::OneOf(&["", "DirectoryOrCreate"]),
                                "the engine creates a missing directory",
                            ),
                        ),
                    ],
                ) {
                    if let Some(path) = w
                        .required(&hp, &ho, "path")
                        .and_then(|v| w.text(&join(&hp, "path"), v, MAX_TEXT))
                    {
                        if !path.starts_with('/') {
                            w.err(
                                &join(&hp, "path"),
                                format!("{path:?} must be an absolute path"),
                            );
                        }
                        volume.host_path = Some(HostPathVolumeSource { path });
                    }
                }
            }
            (None, true) => {
                if let Some(e) = o.get("emptyDir") {
                    w.obj(
                        &join(&p, "emptyDir"),
                        e,
                        &[(
                            "medium",
                            Treat::InformIf(
                                Harmless::OneOf(&[""]),
                                "emptyDir volumes are on the node's disk",
                            ),
                        )],
                    );
                }
                volume.empty_dir = Some(EmptyDirVolumeSource {});
            }
            (Some(_), true) => w.err(&p, "needs exactly one of hostPath, emptyDir, not both"),
            (None, false) => {
                // An unsupported type was named above; say what is missing only
                // when nothing was given.
                if o.map.keys().all(|k| k == "name") {
                    w.err(&p, "needs a volume type (hostPath or emptyDir)");
                }
            }
        }
        out.push(volume);
    }
    out
}

// ---- scheduling ----

fn topology_key(w: &mut Walker, path: &str, o: &Obj<'_>) -> String {
    let Some(k) = w
        .required(path, o, "topologyKey")
        .and_then(|v| w.string(&join(path, "topologyKey"), v))
    else {
        return String::new();
    };
    if !TOPOLOGY_KEYS.contains(&k.as_str()) {
        w.err(
            &join(path, "topologyKey"),
            format!(
                "{k:?} is not a topology Outpost knows (topology keys: {})",
                TOPOLOGY_KEYS.join(", ")
            ),
        );
    }
    k
}

fn weight(w: &mut Walker, path: &str, o: &Obj<'_>) -> i32 {
    w.required(path, o, "weight")
        .and_then(|v| w.int(&join(path, "weight"), v, 1, 100))
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or(1)
}

fn affinity(w: &mut Walker, path: &str, v: &Value) -> Option<Affinity> {
    let o = w.obj(
        path,
        v,
        &[
            ("nodeAffinity", Treat::Use),
            ("podAffinity", Treat::Use),
            ("podAntiAffinity", Treat::Use),
        ],
    )?;
    Some(Affinity {
        node_affinity: o
            .get("nodeAffinity")
            .and_then(|v| node_affinity(w, &join(path, "nodeAffinity"), v)),
        pod_affinity: o
            .get("podAffinity")
            .and_then(|v| pod_affinity(w, &join(path, "podAffinity"), v)),
        pod_anti_affinity: o
            .get("podAntiAffinity")
            .and_then(|v| pod_affinity(w, &join(path, "podAntiAffinity"), v)),
    })
}

const REQUIRED: &str = "requiredDuringSchedulingIgnoredDuringExecution";
const PREFERRED: &str = "preferredDuringSchedulingIgnoredDuringExecution";

fn node_affinity(w: &mut Walker, path: &str, v: &Value) -> Option<NodeAffinity> {
    let o = w.obj(path, v, &[(REQUIRED, Treat::Use), (PREFERRED, Treat::Use)])?;
    let mut out = NodeAffinity::default();
    if let Some(r) = o.get(REQUIRED) {
        let rp = join(path, REQUIRED);
        if let Some(ro) = w.obj(&rp, r, &[("nodeSelectorTerms", Treat::Use)]) {
            let tp = join(&rp, "nodeSelectorTerms");
            let terms = w.list(&tp, ro.get("nodeSelectorTerms"), MAX_LIST);
            if terms.is_empty() {
                w.err(&tp, "needs at least one term");
            }
            let node_selector_terms = terms
                .iter()
                .enumerate()
                .filter_map(|(i, t)| node_selector_term(w, &index(&tp, i), t))
                .collect();
            out.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
                node_selector_terms,
            });
        }
    }
    let pp = join(path, PREFERRED);
    for (i, t) in w.list(&pp, o.get(PREFERRED), MAX_LIST).iter().enumerate() {
        let p = index(&pp, i);
        let Some(to) = w.obj(&p, t, &[("weight", Treat::Use), ("preference", Treat::Use)]) else {
            continue;
        };
        let weight = weight(w, &p, &to);
        if let Some(preference) = w
            .required(&p, &to, "preference")
            .and_then(|t| node_selector_term(w, &join(&p, "preference"), t))
        {
            out.preferred_during_scheduling_ignored_during_execution
                .push(PreferredSchedulingTerm { weight, preference });
        }
    }
    Some(out)
}

fn node_selector_term(w: &mut Walker, path: &str, v: &Value) -> Option<NodeSelectorTerm> {
    let o = w.obj(path, v, &[("matchExpressions", Treat::Use)])?;
    let ep = join(path, "matchExpressions");
    let mut match_expressions = Vec::new();
    for (i, e) in w
        .list(&ep, o.get("matchExpressions"), MAX_LIST)
        .iter()
        .enumerate()
    {
        let p = index(&ep, i);
        let Some(eo) = w.obj(
            &p,
            e,
            &[
                ("key", Treat::Use),
                ("operator", Treat::Use),
                ("values", Treat::Use),
            ],
        ) else {
            continue;
        };
        let key = w
            .required(&p, &eo, "key")
            .and_then(|k| w.string(&join(&p, "key"), k));
        if let Some(k) = &key {
            if let Err(e) = validate_label_key(k) {
                w.err(&join(&p, "key"), e);
            }
        }
        let op = w.required(&p, &eo, "operator").and_then(|v| {
            w.one_of(
                &join(&p, "operator"),
                v,
                &["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"],
            )
        });
        let vp = join(&p, "values");
        let values = w.strings(&vp, eo.get("values"), MAX_LIST, 63);
        let Some(op) = op else { continue };
        let operator = match op.as_str() {
            "In" => NodeSelectorOperator::In,
            "NotIn" => NodeSelectorOperator::NotIn,
            "Exists" => NodeSelectorOperator::Exists,
            "DoesNotExist" => NodeSelectorOperator::DoesNotExist,
            "Gt" => NodeSelectorOperator::Gt,
            _ => NodeSelectorOperator::Lt,
        };
        match operator {
            NodeSelectorOperator::In | NodeSelectorOperator::NotIn => {
                if values.is_empty() {
                    w.err(&vp, format!("{op} needs at least one value"));
                }
                for v in &values {
                    if let Err(e) = validate_label_value(key.as_deref().unwrap_or("key"), v) {
                        w.err(&vp, e);
                    }
                }
            }
            NodeSelectorOperator::Exists | NodeSelectorOperator::DoesNotExist => {
                if !values.is_empty() {
                    w.err(&vp, format!("must be empty with {op}"));
                }
            }
            NodeSelectorOperator::Gt | NodeSelectorOperator::Lt => {
                if values.len() != 1 || values[0].parse::<i64>().is_err() {
                    w.err(&vp, format!("{op} needs exactly one value, a whole number"));
                }
            }
        }
        if let Some(key) = key {
            match_expressions.push(NodeSelectorRequirement {
                key,
                operator,
                values,
            });
        }
    }
    Some(NodeSelectorTerm { match_expressions })
}

fn pod_affinity(w: &mut Walker, path: &str, v: &Value) -> Option<PodAffinity> {
    let o = w.obj(path, v, &[(REQUIRED, Treat::Use), (PREFERRED, Treat::Use)])?;
    let mut out = PodAffinity::default();
    let rp = join(path, REQUIRED);
    for (i, t) in w.list(&rp, o.get(REQUIRED), MAX_LIST).iter().enumerate() {
        if let Some(t) = pod_affinity_term(w, &index(&rp, i), t) {
            out.required_during_scheduling_ignored_during_execution
                .push(t);
        }
    }
    let pp = join(path, PREFERRED);
    for (i, t) in w.list(&pp, o.get(PREFERRED), MAX_LIST).iter().enumerate() {
        let p = index(&pp, i);
        let Some(to) = w.obj(
            &p,
            t,
            &[("weight", Treat::Use), ("podAffinityTerm", Treat::Use)],
        ) else {
            continue;
        };
        let weight = weight(w, &p, &to);
        if let Some(term) = w
            .required(&p, &to, "podAffinityTerm")
            .and_then(|t| pod_affinity_term(w, &join(&p, "podAffinityTerm"), t))
        {
            out.preferred_during_scheduling_ignored_during_execution
                .push(WeightedPodAffinityTerm {
                    weight,
                    pod_affinity_term: term,
                });
        }
    }
    Some(out)
}

fn pod_affinity_term(w: &mut Walker, path: &str, v: &Value) -> Option<PodAffinityTerm> {
    let o = w.obj(
        path,
        v,
        &[
            ("labelSelector", Treat::Use),
            ("namespaces", Treat::Use),
            ("topologyKey", Treat::Use),
        ],
    )?;
    let label_selector = o
        .get("labelSelector")
        .and_then(|s| label_selector(w, &join(path, "labelSelector"), s));
    let np = join(path, "namespaces");
    let namespaces = w.strings(&np, o.get("namespaces"), MAX_LIST, 63);
    for n in &namespaces {
        if let Err(e) = dns_label(n) {
            w.err(&np, e);
        }
    }
    let topology_key = topology_key(w, path, &o);
    Some(PodAffinityTerm {
        label_selector,
        namespaces,
        topology_key,
    })
}

fn tolerations(w: &mut Walker, path: &str, v: Option<&Value>) -> Vec<Toleration> {
    let mut out = Vec::new();
    for (i, t) in w.list(path, v, MAX_LIST).iter().enumerate() {
        let p = index(path, i);
        let Some(o) = w.obj(
            &p,
            t,
            &[
                ("key", Treat::Use),
                ("operator", Treat::Use),
                ("value", Treat::Use),
                ("effect", Treat::Use),
                ("tolerationSeconds", Treat::Use),
            ],
        ) else {
            continue;
        };
        let key = w.opt_text(&p, &o, "key", 317).unwrap_or_default();
        if !key.is_empty() {
            if let Err(e) = validate_label_key(&key) {
                w.err(&join(&p, "key"), e);
            }
        }
        let operator = match o
            .get("operator")
            .map(|v| w.one_of(&join(&p, "operator"), v, &["Equal", "Exists"]))
        {
            Some(Some(s)) if s == "Exists" => TolerationOperator::Exists,
            _ => TolerationOperator::Equal,
        };
        let value = w.opt_text(&p, &o, "value", 63).unwrap_or_default();
        match operator {
            TolerationOperator::Exists if !value.is_empty() => {
                w.err(&join(&p, "value"), "must be empty with operator Exists");
            }
            TolerationOperator::Equal if key.is_empty() => {
                w.err(
                    &join(&p, "operator"),
                    "must be Exists when key is empty (that tolerates every taint)",
                );
            }
            TolerationOperator::Equal => {
                if let Err(e) = validate_label_value(&key, &value) {
                    w.err(&join(&p, "value"), e);
                }
            }
            TolerationOperator::Exists => {}
        }
        let effect = match o.get("effect") {
            Some(v) => match w
                .one_of(
                    &join(&p, "effect"),
                    v,
                    &["", "NoSchedule", "PreferNoSchedule", "NoExecute"],
                )
                .as_deref()
            {
                Some("NoSchedule") => Some(TaintEffect::NoSchedule),
                Some("PreferNoSchedule") => Some(TaintEffect::PreferNoSchedule),
                Some("NoExecute") => Some(TaintEffect::NoExecute),
                _ => None,
            },
            None => None,
        };
        let toleration_seconds = o
            .get("tolerationSeconds")
            .and_then(|v| w.int(&join(&p, "tolerationSeconds"), v, i64::MIN, i64::MAX));
        if toleration_seconds.is_some() && effect != Some(TaintEffect::NoExecute) {
            w.err(
                &join(&p, "tolerationSeconds"),
                "is only for effect NoExecute",
            );
        }
        out.push(Toleration {
            key,
            operator,
            value,
            effect,
            toleration_seconds,
        });
    }
    out
}

fn spread(w: &mut Walker, path: &str, v: Option<&Value>) -> Vec<TopologySpreadConstraint> {
    let mut out = Vec::new();
    for (i, c) in w.list(path, v, 16).iter().enumerate() {
        let p = index(path, i);
        let Some(o) = w.obj(
            &p,
            c,
            &[
                ("maxSkew", Treat::Use),
                ("topologyKey", Treat::Use),
                ("whenUnsatisfiable", Treat::Use),
                ("labelSelector", Treat::Use),
            ],
        ) else {
            continue;
        };
        let max_skew = w
            .required(&p, &o, "maxSkew")
            .and_then(|v| w.int(&join(&p, "maxSkew"), v, 1, i64::from(i32::MAX)))
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or(1);
        let topology_key = topology_key(w, &p, &o);
        let when_unsatisfiable = match w
            .required(&p, &o, "whenUnsatisfiable")
            .and_then(|v| {
                w.one_of(
                    &join(&p, "whenUnsatisfiable"),
                    v,
                    &["DoNotSchedule", "ScheduleAnyway"],
                )
            })
            .as_deref()
        {
            Some("ScheduleAnyway") => UnsatisfiableConstraintAction::ScheduleAnyway,
            _ => UnsatisfiableConstraintAction::DoNotSchedule,
        };
        let label_selector = o
            .get("labelSelector")
            .and_then(|s| label_selector(w, &join(&p, "labelSelector"), s));
        out.push(TopologySpreadConstraint {
            max_skew,
            topology_key,
            when_unsatisfiable,
            label_selector,
        });
    }
    out
}

/// The wire's own bounds (`PodSpec::validate`, which every agent runs), as
/// a last check: the walk above reports each with its path, so this only
/// speaks if the two ever disagree.
pub fn wire_check(w: &mut Walker, path: &str, pod: &Pod) {
    let mut copy = pod.clone();
    if copy.metadata.name.is_empty() {
        // A generated name: the prefix and the 5 characters to come (or a
        // template's pod, named later).
        copy.metadata.name = format!("{}xxxxx", copy.metadata.generate_name);
    }
    if let Err(e) = copy.to_wire().validate() {
        w.err(path, e);
    }
}
