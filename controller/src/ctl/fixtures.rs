//! Every kind's table row and description, from the JSON fixtures in
//! `test_data/` (objects as the operator API serves them), at a fixed
//! `now`: 2026-12-02T07:00:00Z.

use super::*;
use crate::api::meta::parse_rfc3339;
use outpost_proto::{Condition, ConditionType, EventType, NodeInfo, RuntimeInfo, TaintEffect};

fn now() -> u64 {
    parse_rfc3339("2026-12-02T07:00:00Z").unwrap()
}

fn fixture(name: &str) -> Value {
    let text = match name {
        "pod-running" => include_str!("test_data/pod-running.json"),
        "pod-pending" => include_str!("test_data/pod-pending.json"),
        "pod-terminating" => include_str!("test_data/pod-terminating.json"),
        "deployment-rollout" => include_str!("test_data/deployment-rollout.json"),
        "replicaset-old" => include_str!("test_data/replicaset-old.json"),
        "replicaset-new" => include_str!("test_data/replicaset-new.json"),
        "service-nodeport" => include_str!("test_data/service-nodeport.json"),
        "service-headless" => include_str!("test_data/service-headless.json"),
        "service-lb-pending" => include_str!("test_data/service-lb-pending.json"),
        "service-lb-ingress" => include_str!("test_data/service-lb-ingress.json"),
        "endpoints-web" => include_str!("test_data/endpoints-web.json"),
        "priorityclass" => include_str!("test_data/priorityclass.json"),
        other => panic!("no fixture {other}"),
    };
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn kind_of(v: &Value) -> Kind {
    Kind::of_manifest(
        v["apiVersion"].as_str().unwrap(),
        v["kind"].as_str().unwrap(),
    )
    .unwrap()
}

fn no_nodes() -> BTreeMap<String, NodeView> {
    BTreeMap::new()
}

#[test]
fn rows_read_like_kubectl() {
    const PLAIN: Layout = Layout {
        wide: false,
        namespaces: false,
        qualified: false,
    };
    const WIDE: Layout = Layout {
        wide: true,
        namespaces: false,
        qualified: false,
    };
    const ALL_NS: Layout = Layout {
        wide: false,
        namespaces: true,
        qualified: false,
    };
    let cases: &[(&str, Layout, &[&str])] = &[
        (
            "pod-running",
            PLAIN,
            &["web-1", "1/1", "Running", "2 (5m ago)", "60m", "edge-1"],
        ),
        (
            "pod-running",
            WIDE,
            &[
                "web-1",
                "1/1",
                "Running",
                "2 (5m ago)",
                "60m",
                "10.1.0.5",
                "edge-1",
                "<none>",
            ],
        ),
        (
            "pod-pending",
            WIDE,
            &[
                "big", "0/1", "Pending", "0", "60s", "<none>", "<none>", "edge-2",
            ],
        ),
        (
            "pod-terminating",
            ALL_NS,
            &["shop", "old", "1/1", "Terminating", "0", "24h", "edge-3"],
        ),
        (
            "deployment-rollout",
            PLAIN,
            &["web", "3/4", "2", "3", "60m"],
        ),
        (
            "deployment-rollout",
            WIDE,
            &[
                "web",
                "3/4",
                "2",
                "3",
                "60m",
                "http",
                "outpost/web:2",
                "app=web",
            ],
        ),
        (
            "deployment-rollout",
            ALL_NS,
            &["default", "web", "3/4", "2", "3", "60m"],
        ),
        ("replicaset-new", PLAIN, &["web-7d9f", "2", "2", "0", "2m"]),
        (
            "replicaset-old",
            WIDE,
            &[
                "web-5c6b",
                "3",
                "3",
                "3",
                "60m",
                "http",
                "outpost/web:1",
                "app=web,pod-template-hash=5c6b",
            ],
        ),
        (
            "service-nodeport",
            WIDE,
            &[
                "web",
                "NodePort",
                "10.96.0.12",
                "<none>",
                "80:31234/TCP,9090/TCP",
                "60m",
                "app=web",
            ],
        ),
        (
            "service-headless",
            PLAIN,
            &["db", "ClusterIP", "None", "<none>", "5432/TCP", "60m"],
        ),
        (
            "service-lb-pending",
            PLAIN,
            &[
                "front",
                "LoadBalancer",
                "10.96.0.20",
                "<pending>",
                "443:30443/TCP",
                "60m",
            ],
        ),
        (
            "service-lb-ingress",
            PLAIN,
            &[
                "front",
                "LoadBalancer",
                "10.96.0.20",
                "192.0.2.10,19...",
                "443:30443/TCP",
                "60m",
            ],
        ),
        (
            "service-lb-ingress",
            WIDE,
            &[
                "front",
                "LoadBalancer",
                "10.96.0.20",
                "192.0.2.10,192.0.2.11",
                "443:30443/TCP",
                "60m",
                "app=front",
            ],
        ),
        (
            "endpoints-web",
            PLAIN,
            &[
                "web",
                "10.1.0.5:8080,10.1.0.6:8080,10.1.1.5:8080 + 7 more...",
                "60m",
            ],
        ),
        (
            "endpoints-web",
            WIDE,
            &[
                "web",
                "10.1.0.5:8080,10.1.0.6:8080,10.1.1.5:8080 + 7 more...",
                "60m",
                "edge-1,edge-2,edge-3",
                "shop-1,shop-2",
            ],
        ),
        ("priorityclass", ALL_NS, &["high", "1000", "true", "24h"]),
        (
            "priorityclass",
            WIDE,
            &["high", "1000", "true", "24h", "Never"],
        ),
    ];
    let nodes = no_nodes();
    for (name, layout, want) in cases {
        let v = fixture(name);
        let p = printer(kind_of(&v));
        let ctx = Context {
            now_ms: now(),
            wide: layout.wide,
            nodes: &nodes,
        };
        let row = (p.row)(&v, &ctx).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            row.cells.len(),
            p.columns.len(),
            "{name}: a cell per column"
        );
        assert_eq!(p.cells(&row, *layout), *want, "{name} {layout:?}");
        assert_eq!(p.header(*layout).len(), want.len(), "{name}: header");
        // The whole table: header, then the row under it.
        let t = p.table(std::slice::from_ref(&v), &ctx, *layout).unwrap();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2, "{t}");
        assert!(lines[1].starts_with(want[0]), "{t}");
    }
}

#[test]
fn names_of_several_kinds_are_qualified() {
    let v = fixture("deployment-rollout");
    let p = printer(Kind::Deployment);
    let nodes = no_nodes();
    let ctx = Context {
        now_ms: now(),
        wide: false,
        nodes: &nodes,
    };
    let t = p
        .table(
            std::slice::from_ref(&v),
            &ctx,
            Layout {
                qualified: true,
                ..Layout::default()
            },
        )
        .unwrap();
    assert_eq!(
        t,
        "NAME                  READY   UP-TO-DATE   AVAILABLE   AGE\n\
         deployment.apps/web   3/4     2            3           60m\n"
    );
    assert_eq!(qualified_name(Kind::Deployment, &v), "deployment.apps/web");
    assert_eq!(
        qualified_name(Kind::PriorityClass, &fixture("priorityclass")),
        "priorityclass.scheduling.k8s.io/high"
    );
}

fn event(reason: &str, message: &str) -> Event {
    Event {
        seq: 7,
        time_ms: now() - 30_000,
        kind: EventType::Normal,
        reason: reason.into(),
        object: "x".into(),
        message: message.into(),
        count: 1,
        first_time_ms: now() - 30_000,
    }
}

/// The description of `name` with `related` fixtures beside it.
fn described(name: &str, related: &[&str], events: &[Event]) -> String {
    let v = fixture(name);
    let related: Vec<Value> = related.iter().map(|r| fixture(r)).collect();
    let p = printer(kind_of(&v));
    (p.describe)(&Subject {
        object: &v,
        related: &related,
        events,
        usage: None,
        node: None,
        now_ms: now(),
    })
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Whether `text` has a line whose words are `words`.
fn has_line(text: &str, words: &str) -> bool {
    let want: Vec<&str> = words.split_whitespace().collect();
    text.lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == want)
}

#[test]
fn descriptions_read_like_kubectl() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "pod-pending",
            &[],
            &[
                "Node: <none>",
                "NominatedNodeName: edge-2",
                "Status: Pending",
                "Reason: Unschedulable",
                "Message: 0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu.",
                "Priority Class: high",
                "Events: <none>",
            ],
        ),
        (
            "pod-terminating",
            &[],
            &[
                "Namespace: shop",
                "Status: Terminating (requested 10s ago)",
                "Termination Grace Period: 30s",
            ],
        ),
        (
            "pod-running",
            &[],
            &[
                "Controlled By: ReplicaSet/web-7d9f",
                "IP: 10.1.0.5",
                "Restart Count: 2",
                "Last State: Terminated",
                "Port: 8080/TCP (host 30080)",
            ],
        ),
        (
            "deployment-rollout",
            &["replicaset-old", "replicaset-new"],
            &[
                "Name: web",
                "Annotations: deployment.kubernetes.io/revision: 2",
                "Selector: app=web",
                "Replicas: 4 desired | 2 updated | 5 total | 3 available | 2 unavailable",
                "StrategyType: RollingUpdate",
                "MinReadySeconds: 0",
                "RollingUpdateStrategy: 1 max unavailable, 25% max surge",
                "Pod Template:",
                "Labels: app=web",
                "Image: outpost/web:2",
                "Available False MinimumReplicasUnavailable",
                "Progressing True ReplicaSetUpdated",
                "OldReplicaSets: web-5c6b (3/3 replicas created)",
                "NewReplicaSet: web-7d9f (2/2 replicas created)",
            ],
        ),
        (
            "replicaset-new",
            &["pod-running", "pod-pending"],
            &[
                "Selector: app=web,pod-template-hash=7d9f",
                "Controlled By: Deployment/web",
                "Replicas: 2 current / 2 desired",
                "Pods Status: 1 Running / 1 Waiting / 0 Succeeded / 0 Failed",
                "Image: outpost/web:2",
            ],
        ),
        (
            "service-nodeport",
            &["endpoints-web"],
            &[
                "Type: NodePort",
                "IP: 10.96.0.12",
                "Port: http 80/TCP",
                "TargetPort: 8080/TCP",
                "NodePort: http 31234/TCP",
                "Endpoints: 10.1.0.5:8080,10.1.0.6:8080,10.1.1.5:8080 + 2 more...",
                "Port: metrics 9090/TCP",
                "TargetPort: metrics/TCP",
                "Endpoints: 10.1.0.5:9090,10.1.0.6:9090,10.1.1.5:9090 + 2 more...",
                "Served By: edge-1 (site shop-1, 2 endpoints)",
                "edge-2 (site shop-2, 2 endpoints)",
                "edge-3 (site shop-2, 1 endpoint)",
            ],
        ),
        (
            "service-headless",
            &[],
            &["IP: None", "Endpoints: <none>", "Served By: <none>"],
        ),
        (
            "service-lb-pending",
            &[],
            &["Type: LoadBalancer", "LoadBalancer Ingress: <pending>"],
        ),
        (
            "service-lb-ingress",
            &[],
            &["LoadBalancer Ingress: 192.0.2.10, 192.0.2.11"],
        ),
        (
            "endpoints-web",
            &[],
            &[
                "Labels: app=web",
                "Addresses: 10.1.0.5,10.1.0.6,10.1.1.5,10.1.1.6,10.1.2.5",
                "NotReadyAddresses: 10.1.2.9",
                "http 8080 TCP",
                "metrics 9090 TCP",
                "10.1.0.5 true edge-1 shop-1 192.0.2.11 http=30080",
                "10.1.2.9 false edge-3 shop-2 <none> <none>",
            ],
        ),
        (
            "priorityclass",
            &[],
            &[
                "Name: high",
                "Value: 1000",
                "GlobalDefault: true",
                "PreemptionPolicy: Never",
                "Description: customer-facing",
                "Annotations: <none>",
            ],
        ),
    ];
    for (name, related, want) in cases {
        let d = described(name, related, &[]);
        for line in *want {
            assert!(has_line(&d, line), "{name}: no line {line:?} in\n{d}");
        }
        assert!(d.trim_end().ends_with("Events:  <none>"), "{name}:\n{d}");
    }
    // Every description ends with the object's events.
    let d = described(
        "service-headless",
        &[],
        &[event("Allocated", "cluster IP None (headless)")],
    );
    assert!(
        has_line(&d, "Normal Allocated 30s cluster IP None (headless)"),
        "{d}"
    );
}

#[test]
fn a_rollout_without_its_new_replicaset_says_none() {
    let d = described("deployment-rollout", &["replicaset-old"], &[]);
    assert!(has_line(&d, "NewReplicaSet: <none>"), "{d}");
    assert!(
        has_line(&d, "OldReplicaSets: web-5c6b (3/3 replicas created)"),
        "{d}"
    );
}

#[test]
fn objects_the_cli_cannot_read_are_errors_naming_them() {
    let mut v = fixture("deployment-rollout");
    v["spec"]["replicas"] = "three".into();
    let nodes = no_nodes();
    let ctx = Context {
        now_ms: now(),
        wide: false,
        nodes: &nodes,
    };
    let e = (printer(Kind::Deployment).row)(&v, &ctx)
        .unwrap_err()
        .to_string();
    assert!(e.contains("deployment.apps/web"), "{e}");
}

pub(super) fn node_view(name: &str, unschedulable: bool) -> NodeView {
    let res = outpost_proto::Resources {
        cpu_millis: 4000,
        memory_bytes: 8 << 30,
        pids: 4096,
        ephemeral_storage_bytes: 64 << 30,
        gpus: 0,
    };
    NodeView {
        name: name.into(),
        labels: [(
            outpost_proto::names::SITE_LABEL.to_string(),
            "shop-1".to_string(),
        )]
        .into_iter()
        .collect(),
        created_ms: now() - 3_600_000,
        conditions: vec![Condition {
            kind: ConditionType::Ready,
            status: outpost_proto::ConditionStatus::True,
            reason: "AgentReady".into(),
            message: "heartbeats arrive".into(),
            last_transition_ms: now() - 60_000,
        }],
        taints: vec![outpost_proto::Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: TaintEffect::NoSchedule,
            since_ms: now(),
        }],
        capacity: res,
        allocatable: res,
        info: NodeInfo {
            arch: "arm64".into(),
            os: "linux".into(),
            agent_version: "0.1.0".into(),
            os_image: "Debian 13".into(),
            kernel_version: "6.12".into(),
            hostname: name.into(),
            addresses: vec!["192.0.2.11".into()],
            runtime: RuntimeInfo {
                name: "docker".into(),
                version: "27.0".into(),
                available: true,
                message: String::new(),
            },
            ..NodeInfo::default()
        },
        signals: vec![],
        connected: true,
        remote_addr: "192.0.2.11:40000".into(),
        last_heartbeat_ms: now() - 1000,
        cert_serial: "01".into(),
        cert_not_after_ms: now() + 86_400_000,
        unschedulable,
    }
}

#[test]
fn nodes_keep_their_columns_and_show_cordons() {
    let views = [node_view("edge-1", false), node_view("edge-2", true)];
    let t = nodes::nodes_table(&views, now());
    let lines: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        lines[0],
        ["NAME", "STATUS", "PRESSURE", "SITE", "ARCH", "CPU", "MEMORY", "AGE", "VERSION"]
    );
    assert_eq!(
        lines[1],
        ["edge-1", "Ready", "None", "shop-1", "arm64", "4", "8Gi", "60m", "0.1.0"]
    );
    assert_eq!(lines[2][1], "Ready,SchedulingDisabled");
    // The same rows through the kind table, from the JSON the API serves.
    let map: BTreeMap<String, NodeView> =
        views.iter().map(|v| (v.name.clone(), v.clone())).collect();
    let json: Vec<Value> = views.iter().map(node_json).collect();
    let ctx = Context {
        now_ms: now(),
        wide: true,
        nodes: &map,
    };
    let wide = printer(Kind::Node)
        .table(
            &json,
            &ctx,
            Layout {
                wide: true,
                ..Layout::default()
            },
        )
        .unwrap();
    let lines: Vec<Vec<&str>> = wide
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        &lines[1][9..],
        ["192.0.2.11", "Debian", "13", "6.12", "docker://27.0"]
    );
    assert_eq!(json[1]["spec"]["unschedulable"], true);
    // describe: the live view, then its events.
    let d = (printer(Kind::Node).describe)(&Subject {
        object: &json[1],
        related: &[],
        events: &[event("NodeCordoned", "marked unschedulable")],
        usage: None,
        node: Some(&views[1]),
        now_ms: now(),
    })
    .unwrap();
    for line in [
        "Name: edge-2",
        "Status: Ready,SchedulingDisabled",
        "Unschedulable: true",
        "Taints: node.kubernetes.io/unschedulable:NoSchedule",
        "Normal NodeCordoned 30s marked unschedulable",
    ] {
        assert!(has_line(&d, line), "no {line:?} in\n{d}");
    }
    // A node the registry no longer has cannot be printed from its view.
    let gone = Context {
        now_ms: now(),
        wide: false,
        nodes: &BTreeMap::new(),
    };
    assert!(matches!(
        (printer(Kind::Node).row)(&json[0], &gone),
        Err(RenderError::NodeGone(_))
    ));
}
