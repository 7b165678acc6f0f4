//! Validation and defaulting of every kind an operator applies: one JSON
//! document (from [`crate::manifest::documents`]) into a typed
//! [`Object`], with every problem reported at once, each with its field
//! path (`spec.template.spec.containers[0].securityContext: not supported
//! by Outpost`).
//!
//! This is the part that needs no cluster; what needs the current cluster
//! (priority classes, cluster IPs, node ports, immutable fields,
//! `resourceVersion`) is [`crate::api::admission`]. A field Outpost does
//! not support is named by path, never silently dropped: a field that
//! changes what runs is an error (running a pod without the
//! `securityContext` its author wrote would be worse than refusing it); a
//! field that only informs is dropped with a warning. A field whose value
//! is what Outpost does anyway (`hostNetwork: false`, `securityContext:
//! {}`, `dnsPolicy: ClusterFirst`) is a warning too, so manifests exported
//! from Kubernetes apply as they are.
//!
//! Flow: [`validate`] reads `apiVersion` and `kind`, checks the top-level
//! keys, and hands the document to its kind's file (`pod.rs`,
//! `replicaset.rs`, `deployment.rs`, `service.rs`, `priorityclass.rs`,
//! `poddisruptionbudget.rs`),
//! which walk it with the shared [`walk::Walker`] (`meta.rs`: metadata and
//! selectors; `quantity.rs`: resources).
//!
//! # Supported fields
//!
//! | kind | fields |
//! |---|---|
//! | all | `metadata`: `name`, `namespace` (a DNS label, default `default`; cluster-scoped kinds refuse it), `labels` (at most 64), `annotations` (256 KiB together), `ownerReferences`, `resourceVersion` (checked at admission) |
//! | `v1 Pod` | `metadata.generateName` (at most 58 characters); `spec`: `containers` (1 to 16), `restartPolicy`, `terminationGracePeriodSeconds` (at most a year), `volumes`, `nodeName`, `nodeSelector`, `affinity`, `tolerations`, `priority`, `priorityClassName`, `preemptionPolicy`, `topologySpreadConstraints` |
//! | container | `name`, `image`, `command`, `args`, `env[].name`/`value`, `ports[]` (`name`, `containerPort`, `hostPort`, `protocol` TCP/UDP), `resources.requests`/`limits` (`cpu`, `memory`, `ephemeral-storage`, `outpost.dev/pids`, `nvidia.com/gpu`), `livenessProbe`/`readinessProbe` (`exec`, `httpGet` `path`/`port`, `tcpSocket` `port`, named ports resolved to numbers, Kubernetes' defaults), `volumeMounts[]` (`name`, `mountPath`, `readOnly`) |
//! | volume | `name` with one of `hostPath.path`, `emptyDir: {}` |
//! | affinity | `nodeAffinity` required (`nodeSelectorTerms[].matchExpressions`: In, NotIn, Exists, DoesNotExist, Gt, Lt) and preferred (weight 1 to 100); `podAffinity`/`podAntiAffinity` required and preferred (`labelSelector`, `namespaces`, `topologyKey`) |
//! | topology keys | `kubernetes.io/hostname`, `topology.kubernetes.io/zone`, `topology.outpost.dev/site` |
//! | tolerations | `key`, `operator` (Equal, Exists), `value`, `effect`, `tolerationSeconds` (NoExecute only) |
//! | spread | `maxSkew` (at least 1), `topologyKey`, `whenUnsatisfiable` (DoNotSchedule, ScheduleAnyway), `labelSelector` |
//! | `apps/v1 ReplicaSet` | `spec`: `replicas` (default 1), `minReadySeconds`, `selector` (required, must match the template's labels), `template` (`metadata.labels`/`annotations`, a pod `spec` with `restartPolicy: Always`) |
//! | `apps/v1 Deployment` | a ReplicaSet's, and `strategy` (`RollingUpdate` with `maxSurge`/`maxUnavailable`, counts or percentages, default 25%/25%, not both 0; or `Recreate`), `revisionHistoryLimit` (default 10), `progressDeadlineSeconds` (default 600, above `minReadySeconds`), `paused` |
//! | `v1 Service` | `spec`: `type` (ClusterIP, NodePort, LoadBalancer), `selector`, `clusterIP` (empty, `None` for headless ClusterIP, or IPv4), `ports[]` (`name`, required and unique with several; `protocol`; `port`; `targetPort` number or name, default `port`; `nodePort` for NodePort and LoadBalancer) |
//! | `scheduling.k8s.io/v1 PriorityClass` | `value` (at most 1,000,000,000), `globalDefault`, `description`, `preemptionPolicy` |
//! | `policy/v1 PodDisruptionBudget` | `spec`: exactly one of `minAvailable`/`maxUnavailable` (a count, or a percentage up to 100%), `selector` (none: selects no pods, with a warning; `{}`: every pod of the namespace), `unhealthyPodEvictionPolicy` (IfHealthyBudget, AlwaysAllow) |
//!
//! `v1 Endpoints` are refused: the endpoints controller keeps them from
//! each Service's selector.
//!
//! # Warnings (accepted and dropped)
//!
//! | where | field | why |
//! |---|---|---|
//! | every kind | `status` | status is kept by Outpost |
//! | metadata | `uid`, `creationTimestamp`, `generation`, `selfLink`, `managedFields`, `deletionTimestamp`, `deletionGracePeriodSeconds`, `finalizers: []` | server-set (a non-empty `finalizers` is an error: nothing would remove it) |
//! | metadata | `resourceVersion` on create | dropped at admission |
//! | template metadata | `name`, `generateName`, `namespace` | pods are named after their ReplicaSet, in its namespace |
//! | pod spec | `dnsPolicy: ClusterFirst` (or `ClusterFirstWithHostNet`), `schedulerName: default-scheduler`, `securityContext: {}`, `hostNetwork`/`hostPID`/`hostIPC`/`shareProcessNamespace: false`, `enableServiceLinks`, `serviceAccountName`/`serviceAccount: default`, `automountServiceAccountToken: false` | what Outpost does anyway; any other value is an error |
//! | container | `imagePullPolicy` (checked: IfNotPresent, Always, Never), `terminationMessagePath`, `terminationMessagePolicy`, `securityContext: {}`, `stdin`/`stdinOnce`/`tty: false` | nodes pull an image only when they lack it; exit codes and reasons are kept instead of a message file |
//! | probe | `httpGet.scheme: HTTP` | probes speak plain HTTP |
//! | volume | `hostPath.type: ""`/`DirectoryOrCreate`, `emptyDir.medium: ""` | what the engine does |
//! | Service | `sessionAffinity`, `sessionAffinityConfig`, `externalTrafficPolicy`, `internalTrafficPolicy`, `ipFamilies: [IPv4]`, `ipFamilyPolicy: SingleStack`/`PreferDualStack`, `clusterIPs` (matching `clusterIP`), `allocateLoadBalancerNodePorts`, `publishNotReadyAddresses: false`, `ports[].appProtocol` | routing picks an endpoint per connection (same node, then same site); one IPv4 cluster IP |
//! | Service | `spec.selector` empty | a warning: such a Service gets no endpoints |
//!
//! # Defaults
//!
//! Namespace `default`; Kubernetes' probe timings (period 10 s, timeout
//! 1 s, thresholds 1 and 3); `terminationGracePeriodSeconds` 30;
//! `restartPolicy` Always; a resource request not given is its limit;
//! `replicas` 1; Deployment strategy RollingUpdate 25%/25%,
//! `revisionHistoryLimit` 10, `progressDeadlineSeconds` 600; Service type
//! ClusterIP, port protocol TCP, `targetPort` = `port`.

mod deployment;
mod meta;
mod pod;
mod poddisruptionbudget;
mod priorityclass;
mod quantity;
mod replicaset;
mod service;
pub mod walk;

pub use pod::TOPOLOGY_KEYS;
pub use quantity::{
    MAX_CPU_MILLIS, MAX_GPUS, MAX_MEMORY, MAX_PIDS, MAX_STORAGE, MIN_CPU_LIMIT_MILLIS,
    MIN_MEMORY_LIMIT,
};

use crate::api::{Kind, Object};
use serde_json::Value;
use walk::{Obj, Treat, Walker};

/// One problem with a document: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `spec.template.spec.containers[0].securityContext`; empty for the
    /// whole document.
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A valid document: the object (defaults filled in) and the fields that
/// were accepted and dropped, each as `path: ignored: why`.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    pub object: Object,
    pub warnings: Vec<String>,
}

/// The kinds an operator may apply, as `apiVersion kind`.
pub const SUPPORTED: [Kind; 6] = [
    Kind::Pod,
    Kind::Deployment,
    Kind::ReplicaSet,
    Kind::Service,
    Kind::PriorityClass,
    Kind::PodDisruptionBudget,
];

const TOP_KEYS: &[(&str, Treat)] = &[
    ("apiVersion", Treat::Use),
    ("kind", Treat::Use),
    ("metadata", Treat::Use),
    ("spec", Treat::Use),
    ("status", Treat::Inform("status is kept by Outpost")),
];

const PRIORITY_CLASS_KEYS: &[(&str, Treat)] = &[
    ("apiVersion", Treat::Use),
    ("kind", Treat::Use),
    ("metadata", Treat::Use),
    ("value", Treat::Use),
    ("globalDefault", Treat::Use),
    ("description", Treat::Use),
    ("preemptionPolicy", Treat::Use),
];

fn supported_list() -> String {
    SUPPORTED
        .iter()
        .map(|k| format!("{} {}", k.api_version(), k.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Validates and defaults one manifest document.
pub fn validate(doc: &Value) -> Result<Validated, Vec<Problem>> {
    let mut w = Walker::default();
    let Value::Object(map) = doc else {
        return Err(vec![Problem::new(
            "",
            format!(
                "a manifest document must be a mapping with apiVersion and kind, not {}",
                walk::show(doc)
            ),
        )]);
    };
    let raw = Obj { map };
    let api = w
        .required("", &raw, "apiVersion")
        .and_then(|v| w.text("apiVersion", v, 253));
    let kind = w
        .required("", &raw, "kind")
        .and_then(|v| w.text("kind", v, 253));
    let (Some(api), Some(kind)) = (api, kind) else {
        return Err(w.problems);
    };
    let object = match Kind::of_manifest(&api, &kind) {
        Some(Kind::Endpoints) => {
            return Err(vec![Problem::new(
                "kind",
                "v1 Endpoints are not applied: Outpost's endpoints controller keeps them from \
                 each Service's selector (give the Service a selector instead)",
            )])
        }
        Some(k) if SUPPORTED.contains(&k) => {
            let keys = if k == Kind::PriorityClass {
                PRIORITY_CLASS_KEYS
            } else {
                TOP_KEYS
            };
            let Some(top) = w.obj("", doc, keys) else {
                return Err(w.problems);
            };
            match k {
                Kind::Pod => {
                    let p = pod::pod(&mut w, &top);
                    if w.problems.is_empty() {
                        pod::wire_check(&mut w, "spec", &p);
                    }
                    Object::Pod(p)
                }
                Kind::ReplicaSet => Object::ReplicaSet(replicaset::replicaset(&mut w, &top)),
                Kind::Deployment => Object::Deployment(deployment::deployment(&mut w, &top)),
                Kind::Service => Object::Service(service::service(&mut w, &top)),
                Kind::PodDisruptionBudget => Object::PodDisruptionBudget(
                    poddisruptionbudget::pod_disruption_budget(&mut w, &top),
                ),
                _ => Object::PriorityClass(priorityclass::priority_class(&mut w, &top)),
            }
        }
        _ => {
            let known = SUPPORTED.iter().find(|k| k.name() == kind);
            return Err(vec![match known {
                Some(k) => Problem::new(
                    "apiVersion",
                    format!(
                        "{api} {kind} is not supported by Outpost; use apiVersion {}",
                        k.api_version()
                    ),
                ),
                None => Problem::new(
                    "kind",
                    format!(
                        "{api} {kind} is not supported by Outpost (supported: {})",
                        supported_list()
                    ),
                ),
            }]);
        }
    };
    if w.problems.is_empty() {
        Ok(Validated {
            object,
            warnings: w.warnings,
        })
    } else {
        Err(w.problems)
    }
}

/// How messages name a document, valid or not: `deployment.apps/web`,
/// `pod/web` (or `pod/web-*` for a `generateName`), `document` when it
/// names nothing readable.
pub fn document_name(doc: &Value) -> String {
    let kind = doc.get("kind").and_then(Value::as_str);
    let api = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let meta = doc.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            meta.and_then(|m| m.get("generateName"))
                .and_then(Value::as_str)
                .map(|g| format!("{g}*"))
        });
    let Some(kind) = kind else {
        return "document".into();
    };
    let kind = Kind::of_manifest(api, kind).map_or_else(|| kind.to_lowercase(), Kind::qualified);
    let kind: String = kind.chars().take(64).collect();
    match name {
        Some(n) => format!("{kind}/{}", n.chars().take(253).collect::<String>()),
        None => kind,
    }
}

#[cfg(test)]
mod tests;
