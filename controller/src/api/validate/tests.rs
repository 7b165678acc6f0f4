use super::*;
use crate::api::pod::{NodeSelectorOperator, Protocol, RestartPolicy};
use crate::api::service::ServiceType;
use crate::api::{apps::StrategyType, meta::IntOrString};
use crate::manifest::documents;
use serde_json::{json, Value};

fn doc(yaml: &str) -> Value {
    let mut d = documents(yaml).unwrap();
    assert_eq!(d.len(), 1);
    d.remove(0)
}

fn ok(v: &Value) -> Validated {
    match validate(v) {
        Ok(x) => x,
        Err(p) => panic!("refused:\n{}", lines(&p).join("\n")),
    }
}

fn lines(p: &[Problem]) -> Vec<String> {
    p.iter().map(ToString::to_string).collect()
}

fn problems(v: &Value) -> Vec<String> {
    match validate(v) {
        Ok(x) => panic!("accepted: {:?}", x.object),
        Err(p) => lines(&p),
    }
}

/// `base` with `value` at each JSON pointer (intermediate mappings made).
fn with(base: &Value, changes: &[(&str, Value)]) -> Value {
    let mut v = base.clone();
    for (ptr, value) in changes {
        let mut cur = &mut v;
        let parts: Vec<String> = ptr
            .trim_start_matches('/')
            .split('/')
            .map(|p| p.replace("~1", "/").replace("~0", "~"))
            .collect();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            cur = match cur {
                Value::Array(a) => {
                    let n: usize = part.parse().unwrap();
                    if n == a.len() {
                        a.push(json!({}));
                    }
                    if last {
                        a[n] = value.clone();
                        break;
                    }
                    &mut a[n]
                }
                other => {
                    if !other.is_object() {
                        *other = json!({});
                    }
                    let m = other.as_object_mut().unwrap();
                    if last {
                        m.insert(part.clone(), value.clone());
                        break;
                    }
                    m.entry(part.clone()).or_insert(json!({}))
                }
            };
        }
    }
    v
}

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
    ports: [{name: http, containerPort: 8080, hostPort: 18080}]
    resources:
      requests: {cpu: 250m, memory: 64Mi}
      limits: {cpu: "1", memory: 128Mi, outpost.dev/pids: "100"}
    livenessProbe:
      httpGet: {path: /healthz, port: http}
      periodSeconds: 2
    readinessProbe:
      tcpSocket: {port: 8080}
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    emptyDir: {}
"#;

fn web() -> Value {
    doc(WEB)
}

#[test]
fn a_full_pod_validates_with_defaults() {
    let v = ok(&web());
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    let Object::Pod(p) = v.object else { panic!() };
    assert_eq!(p.metadata.name, "web");
    assert_eq!(p.metadata.namespace, "default");
    assert_eq!(p.spec.node_name, "edge-1");
    assert_eq!(p.spec.restart_policy, RestartPolicy::OnFailure);
    assert_eq!(p.spec.termination_grace_period_seconds, 5);
    let c = &p.spec.containers[0];
    assert_eq!(c.resources.requests.0.cpu_millis, 250);
    assert_eq!(c.resources.limits.0.cpu_millis, 1000);
    assert_eq!(c.resources.limits.0.memory_bytes, 128 << 20);
    // A limit without a request requests the limit (Kubernetes).
    assert_eq!(c.resources.requests.0.pids, 100);
    assert_eq!(c.ports[0].host_port, Some(18080));
    assert_eq!(c.ports[0].protocol, Protocol::TCP);
    // The named probe port is resolved to its number.
    let l = c.liveness_probe.as_ref().unwrap();
    assert_eq!(
        l.http_get.as_ref().map(|h| (h.path.as_str(), h.port)),
        Some(("/healthz", 8080))
    );
    assert_eq!(
        (
            l.period_seconds,
            l.failure_threshold,
            l.timeout_seconds,
            l.success_threshold
        ),
        (2, 3, 1, 1)
    );
    let r = c.readiness_probe.as_ref().unwrap();
    assert_eq!(
        (r.tcp_socket.as_ref().map(|t| t.port), r.period_seconds),
        (Some(8080), 10)
    );
    assert!(p.spec.volumes[0].empty_dir.is_some());
    assert_eq!(p.requests().memory_bytes, 64 << 20);
    // The runtime form passes the agent's own checks.
    assert_eq!(p.to_wire().validate(), Ok(()));
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
    let p = problems(&doc(&text));
    assert_eq!(
        p,
        [
            "spec.hostNetwork: not supported by Outpost (pods have their own network)",
            "spec.containers[0].securityContext: not supported by Outpost (containers run with the engine's defaults)",
        ]
    );
}

#[test]
fn problems_are_all_reported_with_paths() {
    let bad = doc(r#"
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
"#);
    let p = problems(&bad).join("\n");
    for needle in [
        "metadata.name: name \"Bad_Name\" is not a valid name",
        "spec.restartPolicy: \"Sometimes\" is not one of Always, OnFailure, Never",
        "spec.containers[0].image: is required",
        "spec.containers[0].resources.limits.cpu: \"lots\" is not a quantity",
        "spec.containers[0].livenessProbe: needs exactly one of exec, httpGet, tcpSocket",
        "spec.containers[0].livenessProbe.periodSeconds: 0 is out of range",
        "spec.containers[0].volumeMounts[0].mountPath: \"rel\" must be an absolute path",
        "spec.containers[0].volumeMounts[0].name: \"nope\" names no volume in spec.volumes",
    ] {
        assert!(p.contains(needle), "missing {needle:?} in:\n{p}");
    }
    assert_eq!(p.lines().count(), 8, "{p}");
}

#[test]
fn pod_problems_table() {
    let base = web();
    let cases: Vec<(Vec<(&str, Value)>, &str)> = vec![
        (vec![("/spec/initContainers", json!([{"name": "i", "image": "x"}]))], "spec.initContainers: not supported by Outpost"),
        (vec![("/spec/volumes/0/nfs", json!({"server": "nas", "path": "/"}))], "spec.volumes[0].nfs: not supported by Outpost (volume types: hostPath, emptyDir)"),
        (vec![("/spec/volumes/0", json!({"name": "data"}))], "spec.volumes[0]: needs a volume type (hostPath or emptyDir)"),
        (vec![("/spec/volumes/0/hostPath", json!({"path": "/x"}))], "spec.volumes[0]: needs exactly one of hostPath, emptyDir, not both"),
        (vec![("/spec/volumes/0", json!({"name": "data", "hostPath": {"path": "x"}}))], "spec.volumes[0].hostPath.path: \"x\" must be an absolute path"),
        (vec![("/spec/volumes/0", json!({"name": "data", "hostPath": {"path": "/x", "type": "File"}}))], "spec.volumes[0].hostPath.type: \"File\" is not supported by Outpost (the engine creates a missing directory; accepted: , DirectoryOrCreate)"),
        (vec![("/spec/volumes/0/emptyDir", json!({"sizeLimit": "1Gi"}))], "spec.volumes[0].emptyDir.sizeLimit: not supported by Outpost"),
        (vec![("/spec/containers", json!([]))], "spec.containers: needs at least one container"),
        (vec![("/spec/containers/0/name", json!("http")), ("/spec/containers", json!([{"name": "a", "image": "i"}, {"name": "a", "image": "i"}]))], "spec.containers[1].name: container name \"a\" is used twice"),
        (vec![("/spec/containers", json!([{"name": "a", "image": "i", "ports": [{"containerPort": 1, "hostPort": 80}]}, {"name": "b", "image": "i", "ports": [{"containerPort": 2, "hostPort": 80}]}])), ("/spec/volumes", json!([]))], "spec.containers[1].ports[0].hostPort: 80/TCP is already published by container \"a\""),
        (vec![("/spec/terminationGracePeriodSeconds", json!(-1))], "spec.terminationGracePeriodSeconds: -1 is out of range: must be from 0 to 31536000"),
        (vec![("/spec/nodeName", json!("Edge_1"))], "spec.nodeName: name \"Edge_1\" is not a valid name"),
        (vec![("/spec/nodeSelector", json!({"site": 12}))], "spec.nodeSelector[\"site\"]: must be a string, not 12 (quote it: \"12\")"),
        (vec![("/spec/nodeSelector", json!({"bad key!": "x"}))], "spec.nodeSelector: label key \"bad key!\""),
        (vec![("/spec/priority", json!("high"))], "spec.priority: must be a whole number from -2147483648 to 2147483647, not \"high\""),
        (vec![("/spec/priorityClassName", json!("High"))], "spec.priorityClassName: \"High\" is not a valid name"),
        (vec![("/spec/preemptionPolicy", json!("Always"))], "spec.preemptionPolicy: \"Always\" is not one of PreemptLowerPriority, Never"),
        (vec![("/spec/dnsPolicy", json!("Default"))], "spec.dnsPolicy: \"Default\" is not supported by Outpost"),
        (vec![("/spec/schedulerName", json!("volcano"))], "spec.schedulerName: \"volcano\" is not supported by Outpost (Outpost has one scheduler; accepted: default-scheduler)"),
        (vec![("/spec/containers/0/env/0/valueFrom", json!({"secretKeyRef": {"name": "s", "key": "k"}}))], "spec.containers[0].env[0].valueFrom: not supported by Outpost (Outpost has no ConfigMaps, Secrets or downward API yet; give value)"),
        (vec![("/spec/containers/0/env/0/value", json!(8080))], "spec.containers[0].env[0].value: must be a string, not 8080 (quote it: \"8080\")"),
        (vec![("/spec/containers/0/env/0/name", json!("A=B"))], "spec.containers[0].env[0].name: \"A=B\" is not a valid variable name (printable, without '=')"),
        (vec![("/spec/containers/0/ports/0/protocol", json!("SCTP"))], "spec.containers[0].ports[0].protocol: \"SCTP\" is not supported by Outpost (protocols: TCP, UDP)"),
        (vec![("/spec/containers/0/ports/0/containerPort", json!(70000))], "spec.containers[0].ports[0].containerPort: 70000 is out of range: must be from 1 to 65535"),
        (vec![("/spec/containers/0/ports/0/hostPort", json!(0))], "spec.containers[0].ports[0].hostPort: 0 is out of range: must be from 1 to 65535"),
        (vec![("/spec/containers/0/ports/0/hostIP", json!("0.0.0.0"))], "spec.containers[0].ports[0].hostIP: not supported by Outpost"),
        (vec![("/spec/containers/0/ports/0/name", json!("8080"))], "spec.containers[0].ports[0].name: \"8080\" is not a valid port name"),
        (vec![("/spec/containers/0/livenessProbe/httpGet/port", json!("metrics"))], "spec.containers[0].livenessProbe.httpGet.port: \"metrics\" names no port of the container (named ports: http)"),
        (vec![("/spec/containers/0/livenessProbe/successThreshold", json!(2))], "spec.containers[0].livenessProbe.successThreshold: must be 1 for a liveness probe (as in Kubernetes)"),
        (vec![("/spec/containers/0/livenessProbe/exec", json!({"command": ["true"]}))], "spec.containers[0].livenessProbe: needs exactly one of exec, httpGet, tcpSocket"),
        (vec![("/spec/containers/0/livenessProbe/httpGet/scheme", json!("HTTPS"))], "spec.containers[0].livenessProbe.httpGet.scheme: \"HTTPS\" is not supported by Outpost (probes speak plain HTTP; accepted: HTTP)"),
        (vec![("/spec/containers/0/livenessProbe/grpc", json!({"port": 1})), ("/spec/containers/0/livenessProbe/httpGet", Value::Null)], "spec.containers[0].livenessProbe.grpc: not supported by Outpost"),
        (vec![("/spec/containers/0/image", json!(""))], "spec.containers[0].image: must name an image"),
        (vec![("/spec/containers/0/workingDir", json!("/srv"))], "spec.containers[0].workingDir: not supported by Outpost"),
        (vec![("/spec/containers/0/imagePullPolicy", json!("Sometimes"))], "spec.containers[0].imagePullPolicy: \"Sometimes\" is not one of IfNotPresent, Always, Never"),
        (vec![("/spec/containers/0/volumeMounts/0/subPath", json!("x"))], "spec.containers[0].volumeMounts[0].subPath: not supported by Outpost"),
        (vec![("/spec/containers/0/resources/limits/memory", json!(1.8446744073709552e19))], "spec.containers[0].resources.limits.memory: 18446744073709552000 is out of range: must be from 6Mi to 4Pi"),
        (vec![("/spec/containers/0/resources/limits/outpost.dev~1pids", json!("18446744073709551616"))], "spec.containers[0].resources.limits.outpost.dev/pids: 18446744073709551616 is out of range: must be from 1 to 4194304"),
        (vec![("/spec/containers/0/resources/limits/memory", json!("4Mi")), ("/spec/containers/0/resources/requests/memory", json!("1Mi"))], "spec.containers[0].resources.limits.memory: 4Mi is out of range: must be from 6Mi to 4Pi (the Docker engine refuses a smaller memory limit)"),
        (vec![("/spec/containers/0/resources/requests/cpu", json!("2"))], "spec.containers[0].resources.requests.cpu: 2 is more than the limit 1 (a request may not exceed its limit)"),
        (vec![("/metadata/namespace", json!("Prod"))], "metadata.namespace: name \"Prod\" is not a valid name"),
        (vec![("/metadata/labels/app", json!(true))], "metadata.labels[\"app\"]: must be a string, not true (quote it: \"true\")"),
        (vec![("/metadata/labels/app", json!("-web"))], "metadata.labels: label app=\"-web\": value name part must be"),
        (vec![("/metadata/finalizers", json!(["x/y"]))], "metadata.finalizers: not supported by Outpost (Outpost runs no finalizers, so an object with one could never be deleted)"),
        (vec![("/metadata/resourceVersion", json!("abc"))], "metadata.resourceVersion: \"abc\" is not a resourceVersion Outpost gave (a number); leave it out"),
        (vec![("/metadata/name", Value::Null)], "metadata.name: is required (or give metadata.generateName)"),
        (vec![("/metadata/name", Value::Null), ("/metadata/generateName", json!("x".repeat(59)))], "metadata.generateName: is 59 characters; at most 58 (5 are added)"),
        (vec![("/metadata/name", Value::Null), ("/metadata/generateName", json!("Web-"))], "metadata.generateName: name \"Web-x\" is not a valid name"),
        (vec![("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms", json!([]))], "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms: needs at least one term"),
        (vec![("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms", json!([{"matchExpressions": [{"key": "arch", "operator": "In"}]}]))], "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values: In needs at least one value"),
        (vec![("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms", json!([{"matchExpressions": [{"key": "gpu", "operator": "Exists", "values": ["x"]}]}]))], "matchExpressions[0].values: must be empty with Exists"),
        (vec![("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms", json!([{"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4", "8"]}]}]))], "matchExpressions[0].values: Gt needs exactly one value, a whole number"),
        (vec![("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms", json!([{"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["many"]}]}]))], "matchExpressions[0].values: Lt needs exactly one value, a whole number"),
        (vec![("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms", json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]}]))], "nodeSelectorTerms[0].matchFields: not supported by Outpost"),
        (vec![("/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution", json!([{"weight": 0, "preference": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}]))], "preferredDuringSchedulingIgnoredDuringExecution[0].weight: 0 is out of range: must be from 1 to 100"),
        (vec![("/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution", json!([{"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "rack"}]))], "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey: \"rack\" is not a topology Outpost knows (topology keys: kubernetes.io/hostname, topology.kubernetes.io/zone, topology.outpost.dev/site)"),
        (vec![("/spec/affinity/podAffinity/preferredDuringSchedulingIgnoredDuringExecution", json!([{"weight": 10, "podAffinityTerm": {"labelSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}}]))], "podAffinityTerm.topologyKey: is required"),
        (vec![("/spec/affinity/podAffinity/requiredDuringSchedulingIgnoredDuringExecution", json!([{"namespaceSelector": {}, "topologyKey": "kubernetes.io/hostname"}]))], "requiredDuringSchedulingIgnoredDuringExecution[0].namespaceSelector: not supported by Outpost"),
        (vec![("/spec/topologySpreadConstraints", json!([{"maxSkew": 0, "topologyKey": "topology.outpost.dev/site", "whenUnsatisfiable": "DoNotSchedule"}]))], "spec.topologySpreadConstraints[0].maxSkew: 0 is out of range: must be from 1 to 2147483647"),
        (vec![("/spec/topologySpreadConstraints", json!([{"maxSkew": 1, "topologyKey": "topology.outpost.dev/site", "whenUnsatisfiable": "Maybe"}]))], "spec.topologySpreadConstraints[0].whenUnsatisfiable: \"Maybe\" is not one of DoNotSchedule, ScheduleAnyway"),
        (vec![("/spec/topologySpreadConstraints", json!([{"maxSkew": 1, "topologyKey": "topology.outpost.dev/site", "whenUnsatisfiable": "DoNotSchedule", "minDomains": 2}]))], "spec.topologySpreadConstraints[0].minDomains: not supported by Outpost"),
        (vec![("/spec/tolerations", json!([{"key": "k", "operator": "Exists", "value": "v"}]))], "spec.tolerations[0].value: must be empty with operator Exists"),
        (vec![("/spec/tolerations", json!([{"operator": "Equal", "value": "v"}]))], "spec.tolerations[0].operator: must be Exists when key is empty (that tolerates every taint)"),
        (vec![("/spec/tolerations", json!([{"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 60}]))], "spec.tolerations[0].tolerationSeconds: is only for effect NoExecute"),
        (vec![("/spec/tolerations", json!([{"key": "k", "operator": "Exists", "effect": "Sometimes"}]))], "spec.tolerations[0].effect: \"Sometimes\" is not one of , NoSchedule, PreferNoSchedule, NoExecute"),
        (vec![("/spec/tolerations", json!([{"key": "k", "operator": "Maybe"}]))], "spec.tolerations[0].operator: \"Maybe\" is not one of Equal, Exists"),
    ];
    for (changes, want) in cases {
        let p = problems(&with(&base, &changes));
        assert!(
            p.iter().any(|l| l.contains(want)),
            "{changes:?}: missing {want:?} in:\n{}",
            p.join("\n")
        );
    }
}

#[test]
fn scheduling_fields_are_kept() {
    let v = with(
        &web(),
        &[
            (
                "/spec/nodeSelector",
                json!({"topology.outpost.dev/site": "shop-1"}),
            ),
            ("/spec/priority", json!(100)),
            ("/spec/priorityClassName", json!("high")),
            ("/spec/preemptionPolicy", json!("Never")),
            (
                "/spec/affinity",
                json!({
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64", "amd64"]},
                            {"key": "gpu", "operator": "DoesNotExist"},
                            {"key": "cores", "operator": "Gt", "values": ["2"]},
                        ]}]},
                        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 50, "preference": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["slow"]}]}}],
                    },
                    "podAntiAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": {
                            "labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "topology.outpost.dev/site", "namespaces": ["default"]}}],
                    },
                    "podAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}, "topologyKey": "kubernetes.io/hostname"}],
                    },
                }),
            ),
            (
                "/spec/tolerations",
                json!([
                    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                    {"key": "dedicated", "value": "edge", "effect": "NoSchedule"},
                    {"operator": "Exists"},
                ]),
            ),
            (
                "/spec/topologySpreadConstraints",
                json!([{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "web"}}}]),
            ),
        ],
    );
    let Object::Pod(p) = ok(&v).object else {
        panic!()
    };
    let s = &p.spec;
    assert_eq!(s.priority, Some(100));
    assert_eq!(s.priority_class_name, "high");
    let na = s.affinity.as_ref().unwrap().node_affinity.as_ref().unwrap();
    let req = &na
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap()
        .node_selector_terms[0];
    assert_eq!(req.match_expressions[2].operator, NodeSelectorOperator::Gt);
    assert_eq!(
        na.preferred_during_scheduling_ignored_during_execution[0].weight,
        50
    );
    let anti = s
        .affinity
        .as_ref()
        .unwrap()
        .pod_anti_affinity
        .as_ref()
        .unwrap();
    assert_eq!(
        anti.preferred_during_scheduling_ignored_during_execution[0]
            .pod_affinity_term
            .topology_key,
        "topology.outpost.dev/site"
    );
    assert_eq!(s.tolerations.len(), 3);
    assert_eq!(s.tolerations[0].toleration_seconds, Some(300));
    assert_eq!(s.topology_spread_constraints[0].max_skew, 1);
}

/// `kubectl get pod -o yaml` of a pod Kubernetes defaulted: applies as it
/// is, the server-set and default-valued fields warned about.
#[test]
fn an_exported_pod_applies_with_warnings() {
    let exported = doc(r#"
apiVersion: v1
kind: Pod
metadata:
  creationTimestamp: "2026-01-02T03:04:05Z"
  generateName: web-
  labels: {app: web}
  managedFields: [{manager: kubectl}]
  name: web-abcde
  namespace: shop
  resourceVersion: "4711"
  uid: 0b8a6c0e-0000-0000-0000-000000000000
spec:
  containers:
  - image: nginx:1.27
    imagePullPolicy: IfNotPresent
    name: web
    resources: {}
    securityContext: {}
    terminationMessagePath: /dev/termination-log
    terminationMessagePolicy: File
  dnsPolicy: ClusterFirst
  enableServiceLinks: true
  hostNetwork: false
  restartPolicy: Always
  schedulerName: default-scheduler
  securityContext: {}
  serviceAccountName: default
  terminationGracePeriodSeconds: 30
  tolerations:
  - {effect: NoExecute, key: node.kubernetes.io/not-ready, operator: Exists, tolerationSeconds: 300}
status:
  phase: Running
  podIP: 10.0.0.5
"#);
    let v = ok(&exported);
    let Object::Pod(p) = &v.object else { panic!() };
    assert_eq!(p.metadata.namespace, "shop");
    assert_eq!(p.metadata.name, "web-abcde");
    assert_eq!(
        p.metadata.resource_version, "4711",
        "kept for admission's conflict check"
    );
    assert!(p.metadata.uid.is_empty() && p.metadata.creation_timestamp.is_none());
    assert_eq!(p.status, Default::default());
    let w = v.warnings.join("\n");
    for needle in [
        "metadata.creationTimestamp: ignored: set by Outpost",
        "metadata.managedFields: ignored",
        "metadata.uid: ignored",
        "spec.containers[0].imagePullPolicy: ignored",
        "spec.containers[0].securityContext: ignored",
        "spec.containers[0].terminationMessagePath: ignored",
        "spec.containers[0].terminationMessagePolicy: ignored",
        "spec.dnsPolicy: ignored",
        "spec.enableServiceLinks: ignored",
        "spec.hostNetwork: ignored",
        "spec.schedulerName: ignored: Outpost has one scheduler",
        "spec.securityContext: ignored",
        "spec.serviceAccountName: ignored",
        "status: ignored: status is kept by Outpost",
    ] {
        assert!(w.contains(needle), "missing {needle:?} in:\n{w}");
    }
    assert_eq!(v.warnings.len(), 14, "{w}");
}

// The seed manifests (shared/seeds/002): the blog's Deployment and Service.
const SEED_DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: my-webapp
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web-container
        image: your-docker-hub-username/my-image:latest # Replace with your image
        ports:
        - containerPort: 80
"#;

const SEED_SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web-service
spec:
  selector:
    app: web
  ports:
    - protocol: TCP
      port: 80
      targetPort: 80
  type: LoadBalancer
"#;

#[test]
fn the_seed_manifests_validate() {
    for image in ["your-docker-hub-username/my-image:latest", "nginx:1.27"] {
        let text = SEED_DEPLOYMENT.replace("your-docker-hub-username/my-image:latest", image);
        let v = ok(&doc(&text));
        assert!(v.warnings.is_empty(), "{:?}", v.warnings);
        let Object::Deployment(d) = v.object else {
            panic!()
        };
        assert_eq!(d.metadata.name, "my-webapp");
        assert_eq!(d.spec.replicas, 2);
        assert_eq!(d.spec.template.spec.containers[0].image, image);
        assert_eq!(d.spec.strategy.kind, StrategyType::RollingUpdate);
        let ru = d.spec.strategy.rolling_update.unwrap();
        assert_eq!(
            (ru.max_surge, ru.max_unavailable),
            (
                IntOrString::String("25%".into()),
                IntOrString::String("25%".into())
            )
        );
        assert_eq!(
            (
                d.spec.revision_history_limit,
                d.spec.progress_deadline_seconds
            ),
            (10, 600)
        );
    }
    let v = ok(&doc(SEED_SERVICE));
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    let Object::Service(s) = v.object else {
        panic!()
    };
    assert_eq!(s.spec.kind, ServiceType::LoadBalancer);
    assert_eq!(s.spec.ports[0].port, 80);
    assert_eq!(s.spec.ports[0].target_port, IntOrString::Int(80));
    assert!(s.spec.cluster_ip.is_empty(), "allocated at admission");
}

#[test]
fn workload_rules() {
    let base = doc(SEED_DEPLOYMENT);
    let cases: Vec<(Vec<(&str, Value)>, &str)> = vec![
        (vec![("/spec/selector", Value::Null)], "spec.selector: is required"),
        (vec![("/spec/selector", json!({}))], "spec.selector: must not be empty (it would select every pod in the namespace)"),
        (vec![("/spec/selector/matchLabels/app", json!("db"))], "spec.template.metadata.labels: `selector` does not match template `labels`"),
        (vec![("/spec/replicas", json!(-1))], "spec.replicas: -1 is out of range: must be from 0 to 2147483647"),
        (vec![("/spec/template/spec/restartPolicy", json!("Never"))], "spec.template.spec.restartPolicy: \"Never\": pods of a ReplicaSet or Deployment must restart Always (as in Kubernetes)"),
        (vec![("/spec/template/spec/containers/0/securityContext", json!({"runAsUser": 0}))], "spec.template.spec.containers[0].securityContext: not supported by Outpost"),
        (vec![("/spec/strategy", json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}))], "spec.strategy.rollingUpdate: must not be given with type Recreate"),
        (vec![("/spec/strategy", json!({"type": "Canary"}))], "spec.strategy.type: \"Canary\" is not one of RollingUpdate, Recreate"),
        (vec![("/spec/strategy", json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}))], "spec.strategy.rollingUpdate.maxUnavailable: may not be 0 when maxSurge is 0"),
        (vec![("/spec/strategy", json!({"rollingUpdate": {"maxUnavailable": "150%"}}))], "spec.strategy.rollingUpdate.maxUnavailable: 150% is out of range: must be from 0% to 100%"),
        (vec![("/spec/strategy", json!({"rollingUpdate": {"maxSurge": "lots"}}))], "spec.strategy.rollingUpdate.maxSurge: \"lots\" is neither a count (1) nor a percentage (25%)"),
        (vec![("/spec/minReadySeconds", json!(700))], "spec.progressDeadlineSeconds: 600 must be greater than minReadySeconds (700)"),
        (vec![("/spec/revisionHistoryLimit", json!(-1))], "spec.revisionHistoryLimit: -1 is out of range"),
        (vec![("/spec/paused", json!("yes"))], "spec.paused: must be true or false, not \"yes\""),
        (vec![("/metadata/name", json!("my_webapp"))], "metadata.name: \"my_webapp\" is not a valid name: use at most 253"),
        (vec![("/metadata/generateName", json!("web-"))], "metadata.generateName: not supported for Deployments; give metadata.name"),
        (vec![("/spec/template/spec/containers/0/ports/0/containerPort", json!("80"))], "containerPort: must be a whole number from 1 to 65535, not \"80\""),
    ];
    for (changes, want) in cases {
        let p = problems(&with(&base, &changes));
        assert!(
            p.iter().any(|l| l.contains(want)),
            "{changes:?}: missing {want:?} in:\n{}",
            p.join("\n")
        );
    }
    // A longer name than a pod may have is fine for a Deployment.
    let long = with(
        &base,
        &[("/metadata/name", json!(format!("{}.web", "a".repeat(100))))],
    );
    ok(&long);
    // Recreate, explicit values, template name warned.
    let d = with(
        &base,
        &[
            ("/spec/strategy", json!({"type": "Recreate"})),
            ("/spec/revisionHistoryLimit", json!(3)),
            ("/spec/paused", json!(true)),
            ("/spec/template/metadata/name", json!("x")),
        ],
    );
    let v = ok(&d);
    assert_eq!(v.warnings, ["spec.template.metadata.name: ignored: a template's pods are named after their ReplicaSet"]);
    let Object::Deployment(d) = v.object else {
        panic!()
    };
    assert_eq!(
        (d.spec.strategy.kind, d.spec.strategy.rolling_update),
        (StrategyType::Recreate, None)
    );
    assert!(d.spec.paused && d.spec.revision_history_limit == 3);

    // A ReplicaSet: the same selector rules, no strategy.
    let rs = with(
        &base,
        &[
            ("/kind", json!("ReplicaSet")),
            ("/spec/strategy", json!({})),
        ],
    );
    assert_eq!(problems(&rs), ["spec.strategy: not supported by Outpost"]);
    let rs = with(
        &base,
        &[
            ("/kind", json!("ReplicaSet")),
            ("/spec/replicas", Value::Null),
        ],
    );
    let Object::ReplicaSet(rs) = ok(&rs).object else {
        panic!()
    };
    assert_eq!(rs.spec.replicas, 1);
    let rs = with(
        &base,
        &[
            ("/kind", json!("ReplicaSet")),
            (
                "/spec/selector/matchExpressions",
                json!([{"key": "app", "operator": "NotIn", "values": ["web"]}]),
            ),
        ],
    );
    assert!(problems(&rs)
        .iter()
        .any(|p| p.contains("`selector` does not match template `labels`")));
}

#[test]
fn service_rules() {
    let base = doc(SEED_SERVICE);
    let cases: Vec<(Vec<(&str, Value)>, &str)> = vec![
        (vec![("/spec/type", json!("ExternalName"))], "spec.type: ExternalName Services are not supported by Outpost"),
        (vec![("/spec/type", json!("Ingress"))], "spec.type: \"Ingress\" is not one of ClusterIP, NodePort, LoadBalancer"),
        (vec![("/spec/ports/0/port", json!(0))], "spec.ports[0].port: 0 is out of range: must be from 1 to 65535"),
        (vec![("/spec/ports/0/port", Value::Null)], "spec.ports[0].port: is required"),
        (vec![("/spec/ports/0/protocol", json!("SCTP"))], "spec.ports[0].protocol: \"SCTP\" is not supported by Outpost"),
        (vec![("/spec/ports/0/targetPort", json!("HTTP"))], "spec.ports[0].targetPort: \"HTTP\" is not a valid port name"),
        (vec![("/spec/ports/0/targetPort", json!(65536))], "spec.ports[0].targetPort: 65536 is out of range"),
        (vec![("/spec/ports/0/nodePort", json!(30080)), ("/spec/type", json!("ClusterIP"))], "spec.ports[0].nodePort: is only for type NodePort or LoadBalancer"),
        (vec![("/spec/ports/1", json!({"port": 443}))], "spec.ports[0].name: is required when a Service has more than one port"),
        (vec![("/spec/ports", json!([{"name": "a", "port": 80}, {"name": "a", "port": 81}]))], "spec.ports[1].name: port name \"a\" is used twice"),
        (vec![("/spec/ports", json!([{"name": "a", "port": 80}, {"name": "b", "port": 80}]))], "spec.ports[1].port: 80/TCP is given twice"),
        (vec![("/spec/ports", json!([]))], "spec.ports: needs at least one port (only a headless Service may have none)"),
        (vec![("/spec/clusterIP", json!("None"))], "spec.clusterIP: None (headless) is only for type ClusterIP, not LoadBalancer"),
        (vec![("/spec/clusterIP", json!("10.43.0.300"))], "spec.clusterIP: \"10.43.0.300\" must be empty (allocated), None (headless) or an IPv4 address"),
        (vec![("/spec/clusterIP", json!("fd00::1"))], "must be empty (allocated), None (headless) or an IPv4 address"),
        (vec![("/spec/clusterIPs", json!(["10.43.0.1", "fd00::1"]))], "spec.clusterIPs: Outpost gives a Service one IPv4 cluster IP (no dual stack)"),
        (vec![("/spec/clusterIP", json!("10.43.0.2")), ("/spec/clusterIPs", json!(["10.43.0.1"]))], "spec.clusterIPs: \"10.43.0.1\" disagrees with spec.clusterIP \"10.43.0.2\""),
        (vec![("/spec/ipFamilies", json!(["IPv6"]))], "spec.ipFamilies: Outpost allocates IPv4 cluster IPs only"),
        (vec![("/spec/ipFamilyPolicy", json!("RequireDualStack"))], "spec.ipFamilyPolicy: \"RequireDualStack\" is not supported by Outpost"),
        (vec![("/spec/loadBalancerSourceRanges", json!(["10.0.0.0/8"]))], "spec.loadBalancerSourceRanges: not supported by Outpost"),
        (vec![("/spec/externalIPs", json!(["1.2.3.4"]))], "spec.externalIPs: not supported by Outpost"),
        (vec![("/spec/selector", json!({"app": 1}))], "spec.selector[\"app\"]: must be a string"),
        (vec![("/metadata/name", json!("web.service"))], "metadata.name: name \"web.service\" is not a valid name"),
    ];
    for (changes, want) in cases {
        let p = problems(&with(&base, &changes));
        assert!(
            p.iter().any(|l| l.contains(want)),
            "{changes:?}: missing {want:?} in:\n{}",
            p.join("\n")
        );
    }
    // Headless, named target ports, informational routing fields.
    let v = with(
        &base,
        &[
            ("/spec/type", json!("ClusterIP")),
            ("/spec/clusterIP", json!("None")),
            (
                "/spec/ports",
                json!([{"name": "http", "port": 80, "targetPort": "http"}, {"name": "dns", "port": 53, "protocol": "UDP", "appProtocol": "dns"}]),
            ),
            ("/spec/sessionAffinity", json!("ClientIP")),
            ("/spec/externalTrafficPolicy", json!("Local")),
            ("/spec/ipFamilies", json!(["IPv4"])),
            ("/spec/ipFamilyPolicy", json!("SingleStack")),
            ("/spec/clusterIPs", json!(["None"])),
            ("/status", json!({"loadBalancer": {}})),
        ],
    );
    let v = ok(&v);
    assert_eq!(v.warnings.len(), 7, "{:?}", v.warnings);
    let Object::Service(s) = v.object else {
        panic!()
    };
    assert!(s.is_headless());
    assert_eq!(
        s.spec.ports[0].target_port,
        IntOrString::String("http".into())
    );
    assert_eq!(s.spec.ports[1].target_port, IntOrString::Int(53));
    assert_eq!(s.spec.ports[1].protocol, Protocol::UDP);
    // clusterIPs alone gives the cluster IP (an exported Service).
    let v = with(&base, &[("/spec/clusterIPs", json!(["10.43.7.7"]))]);
    let Object::Service(s) = ok(&v).object else {
        panic!()
    };
    assert_eq!(s.spec.cluster_ip, "10.43.7.7");
    // A selector-less Service is accepted with a warning.
    let v = ok(&with(&base, &[("/spec/selector", Value::Null)]));
    assert!(
        v.warnings[0].starts_with("spec.selector: empty"),
        "{:?}",
        v.warnings
    );
}

#[test]
fn priority_classes() {
    let base = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"}, "value": 1000, "globalDefault": true, "description": "important", "preemptionPolicy": "Never"});
    let Object::PriorityClass(pc) = ok(&base).object else {
        panic!()
    };
    assert_eq!(
        (pc.value, pc.global_default, pc.description.as_str()),
        (1000, true, "important")
    );
    assert!(pc.metadata.namespace.is_empty());
    let cases: Vec<(Vec<(&str, Value)>, &str)> = vec![
        (
            vec![("/value", json!(1_000_000_001))],
            "value: 1000000001 is out of range: must be from -2147483648 to 1000000000",
        ),
        (vec![("/value", Value::Null)], "value: is required"),
        (
            vec![("/metadata/namespace", json!("default"))],
            "metadata.namespace: PriorityClass is cluster-scoped; remove metadata.namespace",
        ),
        (
            vec![("/metadata/name", json!("system-node-critical"))],
            "metadata.name: the system- prefix is reserved",
        ),
        (
            vec![("/preemptionPolicy", json!("Sometimes"))],
            "preemptionPolicy: \"Sometimes\" is not one of PreemptLowerPriority, Never",
        ),
        (vec![("/spec", json!({}))], "spec: not supported by Outpost"),
    ];
    for (changes, want) in cases {
        let p = problems(&with(&base, &changes));
        assert!(
            p.iter().any(|l| l.contains(want)),
            "{changes:?}: missing {want:?} in:\n{}",
            p.join("\n")
        );
    }
}

#[test]
fn kinds() {
    let ep = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"}});
    let p = problems(&ep);
    assert!(p[0].starts_with("kind: v1 Endpoints are not applied: Outpost's endpoints controller keeps them from each Service's selector"), "{p:?}");
    let ss = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"}});
    assert_eq!(
        problems(&ss),
        ["kind: apps/v1 StatefulSet is not supported by Outpost (supported: v1 Pod, apps/v1 Deployment, apps/v1 ReplicaSet, v1 Service, scheduling.k8s.io/v1 PriorityClass, policy/v1 PodDisruptionBudget)"]
    );
    let old = json!({"apiVersion": "extensions/v1beta1", "kind": "Deployment", "metadata": {"name": "d"}});
    assert_eq!(problems(&old), ["apiVersion: extensions/v1beta1 Deployment is not supported by Outpost; use apiVersion apps/v1"]);
    assert_eq!(
        problems(&json!({"kind": "Pod"})),
        ["apiVersion: is required"]
    );
    assert!(problems(&json!([1]))[0].starts_with("a manifest document must be a mapping"));
    assert_eq!(
        problems(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}})),
        ["spec: is required"]
    );
    assert_eq!(
        problems(
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "i"}]}, "extra": 1})
        ),
        ["extra: not supported by Outpost"]
    );
    assert_eq!(
        document_name(&doc(SEED_DEPLOYMENT)),
        "deployment.apps/my-webapp"
    );
    assert_eq!(
        document_name(
            &json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"generateName": "web-"}})
        ),
        "pod/web-*"
    );
    assert_eq!(document_name(&json!({"kind": "Widget"})), "widget");
    assert_eq!(document_name(&json!(3)), "document");
}

/// What is stored (the object's JSON) validates back to the same object.
#[test]
fn stored_forms_validate_to_themselves() {
    let pc = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"}, "value": 10});
    for d in [
        web(),
        doc(SEED_DEPLOYMENT),
        doc(SEED_SERVICE),
        with(&doc(SEED_DEPLOYMENT), &[("/kind", json!("ReplicaSet"))]),
        pc,
    ] {
        let first = ok(&d).object;
        let again = ok(&first.to_json()).object;
        assert_eq!(again, first);
    }
}

#[test]
fn generate_name_pods() {
    let v = with(
        &web(),
        &[
            ("/metadata/name", Value::Null),
            ("/metadata/generateName", json!("web-")),
        ],
    );
    let Object::Pod(p) = ok(&v).object else {
        panic!()
    };
    assert_eq!(
        (p.metadata.name.as_str(), p.metadata.generate_name.as_str()),
        ("", "web-")
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Pod documents put together from fragments, mostly valid.
    fn pod_doc() -> impl Strategy<Value = Value> {
        let name =
            prop_oneof![12 => Just(json!("web")), 1 => Just(json!("Web")), 1 => Just(json!(7))];
        let list = prop_oneof![
            16 => Just(json!({})),
            4 => Just(json!({"cpu": "250m"})),
            4 => Just(json!({"memory": "64Mi"})),
            4 => Just(json!({"cpu": 1, "memory": "128Mi", "ephemeral-storage": "1Gi"})),
            2 => Just(json!({"outpost.dev/pids": "100"})),
            2 => Just(json!({"nvidia.com/gpu": 1})),
            1 => Just(json!({"memory": "16Ei"})),
            1 => Just(json!({"memory": 1.8446744073709552e19})),
            1 => Just(json!({"cpu": "x"})),
            1 => Just(json!({"memory": "4Mi"})),
            1 => Just(json!({"cpu": "1.5", "memory": "6Mi"})),
        ];
        let resources = (list.clone(), list).prop_map(|(r, l)| json!({"requests": r, "limits": l}));
        let port = prop_oneof![12 => Just(json!(80)), 6 => Just(json!("http")), 1 => Just(json!(0)), 1 => Just(json!("nope"))];
        let container_port =
            prop_oneof![12 => Just(json!(80)), 1 => Just(json!(0)), 1 => Just(json!("http"))];
        let probe = prop_oneof![
            6 => Just(Value::Null),
            4 => port.clone().prop_map(|p| json!({"httpGet": {"port": p}})),
            4 => port.prop_map(|p| json!({"tcpSocket": {"port": p}})),
            1 => Just(json!({"tcpSocket": {"port": 80}, "periodSeconds": 0})),
            1 => Just(json!({"exec": {"command": ["true"]}, "successThreshold": 2})),
        ];
        let container = (resources, probe, proptest::bool::weighted(0.2), container_port, proptest::bool::weighted(0.05)).prop_map(
            |(r, p, host, cp, bad_name)| {
                let mut c = json!({"image": "img:1", "resources": r, "ports": [{"name": "http", "containerPort": cp}]});
                if bad_name {
                    c["name"] = json!("Bad");
                }
                if host {
                    c["ports"][0]["hostPort"] = json!(8080);
                }
                if !p.is_null() {
                    c["livenessProbe"] = p;
                }
                c
            },
        );
        let extra = prop_oneof![
            4 => Just(json!({})),
            1 => Just(json!({"hostNetwork": false})),
            1 => Just(json!({"hostNetwork": true})),
            1 => Just(json!({"priority": 10})),
            1 => Just(json!({"tolerations": [{"operator": "Exists"}]})),
            1 => Just(json!({"nodeSelector": {"kubernetes.io/arch": "arm64"}})),
            1 => Just(json!({"terminationGracePeriodSeconds": 0})),
            1 => Just(json!({"volumes": [{"name": "data", "hostPath": {"path": "/srv"}}]})),
        ];
        let containers =
            prop_oneof![1 => Just(Vec::new()), 12 => proptest::collection::vec(container, 1..4)];
        (name, containers, extra).prop_map(|(n, mut cs, extra)| {
            for (i, c) in cs.iter_mut().enumerate() {
                if c.get("name").is_none() {
                    c["name"] = json!(format!("c{i}"));
                }
            }
            let mut spec = json!({"containers": cs});
            for (k, v) in extra.as_object().unwrap() {
                spec[k] = v.clone();
            }
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": n, "labels": {"app": "web"}}, "spec": spec})
        })
    }

    /// The generator is not vacuous: it makes both accepted and refused
    /// pods.
    #[test]
    fn the_generator_makes_both_kinds() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..500 {
            let d = pod_doc().new_tree(&mut runner).unwrap().current();
            match validate(&d) {
                Ok(_) => accepted += 1,
                Err(_) => refused += 1,
            }
        }
        assert!(
            accepted > 100 && refused > 100,
            "{accepted} accepted, {refused} refused"
        );
    }

    proptest! {
        /// A pod validation accepts is one every agent accepts, and its
        /// stored JSON validates back to the same pod.
        #[test]
        fn accepted_pods_pass_the_wire_check_and_round_trip(d in pod_doc()) {
            if let Ok(v) = validate(&d) {
                let Object::Pod(p) = &v.object else { panic!() };
                prop_assert_eq!(p.to_wire().validate(), Ok(()));
                for c in &p.spec.containers {
                    let (q, l) = (c.resources.requests.0, c.resources.limits.0);
                    prop_assert!(l.memory_bytes == 0 || l.memory_bytes >= MIN_MEMORY_LIMIT);
                    prop_assert!(l.cpu_millis == 0 || q.cpu_millis <= l.cpu_millis);
                    prop_assert!(q.memory_bytes <= MAX_MEMORY && q.pids <= MAX_PIDS);
                }
                let again = validate(&v.object.to_json());
                let again = again.map_err(|p| lines(&p).join("\n"));
                prop_assert_eq!(again.as_ref().map(|a| &a.object), Ok(&v.object));
            }
        }

        /// Any JSON at all is answered, never a panic.
        #[test]
        fn arbitrary_documents_never_panic(v in arbitrary_json()) {
            let _ = validate(&v);
            for kind in ["Pod", "Deployment", "ReplicaSet", "Service", "PriorityClass"] {
                let mut d = v.clone();
                if let Value::Object(m) = &mut d {
                    m.insert("kind".into(), json!(kind));
                    m.insert("apiVersion".into(), json!(if kind == "Pod" || kind == "Service" { "v1" } else if kind == "PriorityClass" { "scheduling.k8s.io/v1" } else { "apps/v1" }));
                }
                let _ = validate(&d);
            }
        }
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("metadata"),
            Just("spec"),
            Just("name"),
            Just("containers"),
            Just("template"),
            Just("selector"),
            Just("matchLabels"),
            Just("ports"),
            Just("resources"),
            Just("limits"),
            Just("memory"),
            Just("image"),
            Just("affinity"),
            Just("nodeAffinity"),
            Just("value"),
            Just("labels"),
            Just("x"),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            "[a-z0-9%./-]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 64, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(key.clone().prop_map(String::from), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}

/// Resources that Kubernetes or the Docker engine refuse are refused at
/// apply time, from the YAML an operator writes (numbers unquoted), with
/// the field's path and the range, in a pod and in a Deployment's template.
#[test]
fn resources_the_engine_would_refuse_are_refused_from_yaml() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "limits: {memory: 1Gi}\n          requests: {memory: 2Gi}",
            "resources.requests.memory",
            "2Gi is more than the limit 1Gi (a request may not exceed its limit)",
        ),
        (
            "limits: {memory: 6291455}",
            "resources.limits.memory",
            "6291455 is out of range: must be from 6Mi to 4Pi (the Docker engine refuses a smaller memory limit)",
        ),
        (
            "limits: {memory: 18446744073709551615}",
            "resources.limits.memory",
            "18446744073709551615 is out of range: must be from 6Mi to 4Pi",
        ),
        // 2^64 unquoted: YAML reads it as a float, and the message is still
        // the field's and the range.
        (
            "limits: {outpost.dev/pids: 18446744073709551616}",
            "resources.limits.outpost.dev/pids",
            "is out of range: must be from 1 to 4194304",
        ),
        (
            "limits: {outpost.dev/pids: '18446744073709551616'}",
            "resources.limits.outpost.dev/pids",
            "18446744073709551616 is out of range: must be from 1 to 4194304",
        ),
    ];
    for (resources, field, want) in cases {
        let pod = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: w}}\nspec:\n  containers:\n    - name: c\n      image: i\n      resources:\n          {resources}\n"
        );
        let deploy = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: w}}\nspec:\n  selector: {{matchLabels: {{app: w}}}}\n  template:\n    metadata: {{labels: {{app: w}}}}\n    spec:\n      containers:\n        - name: c\n          image: i\n          resources:\n              {}\n",
            resources.replace("\n          ", "\n              ")
        );
        for (text, prefix) in [
            (pod, "spec.containers[0]."),
            (deploy, "spec.template.spec.containers[0]."),
        ] {
            let p = problems(&doc(&text));
            assert_eq!(p.len(), 1, "{p:?}");
            assert!(
                p[0].starts_with(&format!("{prefix}{field}: ")) && p[0].ends_with(want),
                "{text}\n{p:?}"
            );
            assert!(!p[0].contains("u128") && !p[0].contains("u64"), "{p:?}");
        }
    }
}
