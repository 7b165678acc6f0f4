//! Property tests over random clusters and pods, through the real control
//! loop: whatever the mix, no placement breaks a filter, every pod left
//! Pending says why for every node, and preemption only ever evicts pods of
//! strictly lower priority, and only when the preemptor then fits.

use super::testing::*;
use super::SchedulerConfig;
use crate::api::pod::{PodPhase, Toleration, TolerationOperator};
use crate::api::Pod;
use crate::registry::NodeRecord;
use outpost_proto::names::{HOSTNAME_LABEL, SITE_LABEL};
use outpost_proto::{ConditionType, TaintEffect, MAX_PODS_PER_NODE};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

#[derive(Debug, Clone)]
struct NodeGen {
    cpu: u64,
    mem_gi: u64,
    site: usize,
    ssd: bool,
    arm: bool,
    pressure: Option<bool>,
    cordoned: bool,
    ready: bool,
    holds_app: bool,
}

fn node_gen() -> impl Strategy<Value = NodeGen> {
    (
        prop::sample::select(vec![1000u64, 2000, 4000]),
        1u64..=4,
        0usize..3,
        any::<bool>(),
        prop::bool::weighted(0.3),
        prop::option::weighted(0.2, any::<bool>()),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(cpu, mem_gi, site, ssd, arm, pressure, cordoned, ready, holds_app)| NodeGen {
                cpu,
                mem_gi,
                site,
                ssd,
                arm,
                pressure,
                cordoned,
                ready,
                holds_app,
            },
        )
}

fn build_node(i: usize, g: &NodeGen) -> NodeRecord {
    let mut n = with_label(node(&format!("n{i}")), SITE_LABEL, ["a", "b", "c"][g.site]);
    if g.ssd {
        n = with_label(n, "disk", "ssd");
    }
    n.info.arch = if g.arm { "arm64" } else { "amd64" }.into();
    n.allocatable.cpu_millis = g.cpu;
    n.allocatable.memory_bytes = g.mem_gi * GI;
    match g.pressure {
        Some(true) => n = with_pressure(n, ConditionType::DiskPressure),
        Some(false) => n = with_pressure(n, ConditionType::MemoryPressure),
        None => {}
    }
    n.unschedulable = g.cordoned;
    n.ready = Some(ready(g.ready));
    if g.arm {
        n = with_image(n, "app-arm:1", "arm64", 50 * MI);
    }
    if g.holds_app {
        let arch = n.info.arch.clone();
        n = with_image(n, "app:1", &arch, 200 * MI);
    }
    n
}

/// Per app, the constraints all its pods carry (so spread holds for the
/// whole group, as it does for a Deployment).
#[derive(Debug, Clone)]
struct AppGen {
    anti: Option<bool>,
    spread: bool,
    ssd: bool,
    arm_image: bool,
}

fn app_gen() -> impl Strategy<Value = AppGen> {
    (
        prop::option::weighted(0.4, any::<bool>()),
        prop::bool::weighted(0.4),
        prop::bool::weighted(0.25),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(anti, spread, ssd, arm_image)| AppGen {
            anti,
            spread,
            ssd,
            arm_image,
        })
}

#[derive(Debug, Clone)]
struct PodGen {
    app: usize,
    cpu: u64,
    mem_mi: u64,
    tolerate: bool,
    port: bool,
    priority: i32,
}

fn pod_gen(priorities: bool) -> impl Strategy<Value = PodGen> {
    (
        0usize..3,
        prop::sample::select(vec![0u64, 100, 500, 1500]),
        prop::sample::select(vec![0u64, 256, 1024]),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.15),
        if priorities {
            prop::sample::select(vec![0i32, 10, 100]).boxed()
        } else {
            Just(0).boxed()
        },
    )
        .prop_map(|(app, cpu, mem_mi, tolerate, port, priority)| PodGen {
            app,
            cpu,
            mem_mi,
            tolerate,
            port,
            priority,
        })
}

const APPS: [&str; 3] = ["web", "db", "cache"];

fn build_pod(i: usize, g: &PodGen, apps: &[AppGen]) -> Pod {
    let a = &apps[g.app];
    let app = APPS[g.app];
    let mut p = labelled(pod(&format!("p{i:03}"), g.cpu, g.mem_mi), "app", app);
    p.metadata.creation_timestamp = Some(crate::api::Time(1 + i as u64));
    p.spec.priority = Some(g.priority);
    if a.arm_image {
        p.spec.containers[0].image = "app-arm:1".into();
    }
    if g.tolerate {
        p.spec.tolerations.push(Toleration {
            key: "node.outpost.dev/disk-pressure".into(),
            operator: TolerationOperator::Exists,
            value: String::new(),
            effect: None,
            toleration_seconds: None,
        });
    }
    if g.port {
        p = host_port(p, 80);
    }
    if a.ssd {
        p.spec.node_selector.insert("disk".into(), "ssd".into());
    }
    match a.anti {
        Some(true) => p = anti_affinity(p, "app", app, HOSTNAME_LABEL),
        Some(false) => p = anti_affinity(p, "app", app, SITE_LABEL),
        None => {}
    }
    if a.spread {
        p = spread(p, "app", app, SITE_LABEL, 1, true);
    }
    p
}

fn tolerates(p: &Pod, key: &str, effect: TaintEffect) -> bool {
    let t = crate::api::pod::Taint {
        key: key.into(),
        value: String::new(),
        effect: effect.into(),
    };
    p.spec.tolerations.iter().any(|tol| tol.tolerates(&t))
}

const KNOWN_REASONS: &[&str] = &[
    "node(s) were unschedulable",
    "node(s) were not ready",
    "node(s) had untolerated taint {",
    "node(s) didn't match Pod's node affinity/selector",
    "node(s) didn't match the image's architecture (",
    "node(s) didn't have free ports for the requested pod ports",
    "Too many pods",
    "Insufficient ",
    "node(s) didn't match pod topology spread constraints",
    "node(s) didn't satisfy existing pods anti-affinity rules",
    "node(s) didn't match pod anti-affinity rules",
    "node(s) didn't match pod affinity rules",
];

/// Checks a failure message: `0/N nodes are available: a R, b R.` with
/// the counts summing to N and every reason a known one.
fn check_message(msg: &str, nodes: usize) -> Result<(), String> {
    let head = format!("0/{nodes} nodes are available: ");
    let body = msg
        .strip_prefix(&head)
        .and_then(|b| b.strip_suffix('.'))
        .ok_or_else(|| format!("{msg:?} does not start with {head:?}"))?;
    let mut sum = 0;
    for part in body.split(", ") {
        let (n, reason) = part
            .split_once(' ')
            .ok_or_else(|| format!("bad part {part:?}"))?;
        sum += n
            .parse::<usize>()
            .map_err(|_| format!("bad count in {part:?}"))?;
        if !KNOWN_REASONS.iter().any(|k| reason.starts_with(k)) {
            return Err(format!("unknown reason {reason:?}"));
        }
    }
    if sum != nodes {
        return Err(format!("{msg:?}: counts sum to {sum}, not {nodes}"));
    }
    Ok(())
}

fn all_pods(c: &Cluster) -> Vec<Arc<Pod>> {
    let cache = c.plane.cache();
    let cache = cache.read().expect("cache");
    let mut v: Vec<Arc<Pod>> = cache.pods().cloned().collect();
    v.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    v
}

fn check_placements(nodes: &[NodeRecord], apps: &[AppGen], c: &Cluster) -> Result<(), String> {
    let by_name: HashMap<&str, &NodeRecord> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let pods = all_pods(c);
    let mut image_archs: HashMap<&str, BTreeSet<String>> = HashMap::new();
    for n in nodes {
        for i in &n.images {
            image_archs
                .entry(i.names[0].as_str())
                .or_default()
                .insert(i.architecture.clone());
        }
    }
    let mut used: HashMap<&str, (u64, u64, usize)> = HashMap::new();
    let mut ports: BTreeSet<(&str, u16)> = BTreeSet::new();
    for p in &pods {
        let Some(node) = p.node() else {
            let msg = p
                .status
                .condition(crate::api::pod::POD_SCHEDULED)
                .map(|c| c.message.clone())
                .unwrap_or_default();
            check_message(&msg, nodes.len())
                .map_err(|e| format!("pending {}: {e}", p.metadata.name))?;
            continue;
        };
        let n = by_name[node];
        let name = &p.metadata.name;
        if p.is_terminal() {
            continue;
        }
        let u = used.entry(node).or_default();
        u.0 += p.requests().cpu_millis;
        u.1 += p.requests().memory_bytes;
        u.2 += 1;
        if u.0 > n.allocatable.cpu_millis
            || u.1 > n.allocatable.memory_bytes
            || u.2 > MAX_PODS_PER_NODE
        {
            return Err(format!("{node} over allocatable after {name}"));
        }
        if !n.is_ready() {
            return Err(format!("{name} on NotReady {node}"));
        }
        for t in n.taints() {
            if t.effect != TaintEffect::PreferNoSchedule && !tolerates(p, &t.key, t.effect) {
                return Err(format!("{name} on {node} with untolerated taint {}", t.key));
            }
        }
        let labels = n.labels();
        for (k, v) in &p.spec.node_selector {
            if labels.get(k) != Some(v) {
                return Err(format!("{name} on {node} without {k}={v}"));
            }
        }
        if let Some(archs) = image_archs.get(p.spec.containers[0].image.as_str()) {
            if !archs.contains(&n.info.arch) {
                return Err(format!("{name} on {node} of the wrong architecture"));
            }
        }
        for (port, _) in p.spec.host_ports() {
            if !ports.insert((node, port)) {
                return Err(format!("{name} on {node}: host port {port} taken"));
            }
        }
    }
    let placed: Vec<(&Arc<Pod>, &NodeRecord)> = pods
        .iter()
        .filter(|p| !p.is_terminal())
        .filter_map(|p| p.node().map(|n| (p, by_name[n])))
        .collect();
    for (i, app) in APPS.iter().enumerate() {
        let mine: Vec<&(&Arc<Pod>, &NodeRecord)> = placed
            .iter()
            .filter(|(p, _)| p.metadata.labels["app"] == *app)
            .collect();
        if let Some(per_host) = apps[i].anti {
            let key = if per_host { HOSTNAME_LABEL } else { SITE_LABEL };
            let mut seen = BTreeSet::new();
            for (p, n) in &mine {
                if !seen.insert(n.labels()[key].clone()) {
                    return Err(format!(
                        "anti-affinity of {app} broken by {} in {key}",
                        p.metadata.name
                    ));
                }
            }
        }
        if apps[i].spread {
            // Skew is measured over the sites with a Ready node: a site
            // whose every node is not Ready takes no pods and does not
            // hold the others back (scheduler/topology.rs).
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for n in nodes {
                let eligible = !apps[i].ssd || n.labels().get("disk").is_some_and(|d| d == "ssd");
                if eligible && n.is_ready() {
                    counts.insert(n.labels()[SITE_LABEL].clone(), 0);
                }
            }
            for (_, n) in &mine {
                *counts
                    .get_mut(&n.labels()[SITE_LABEL])
                    .ok_or("pod outside the eligible sites")? += 1;
            }
            let (min, max) = (
                counts.values().min().copied().unwrap_or(0),
                counts.values().max().copied().unwrap_or(0),
            );
            if max > min + 1 {
                return Err(format!("spread of {app} broken: {counts:?}"));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn placements_respect_every_filter(
        node_gens in prop::collection::vec(node_gen(), 1..12),
        apps in prop::collection::vec(app_gen(), 3),
        pod_gens in prop::collection::vec(pod_gen(false), 1..40),
    ) {
        let nodes: Vec<NodeRecord> = node_gens.iter().enumerate().map(|(i, g)| build_node(i, g)).collect();
        let pods: Vec<Pod> = pod_gens.iter().enumerate().map(|(i, g)| build_pod(i, g, &apps)).collect();
        let mut c = Cluster::new(&nodes, SchedulerConfig::default());
        // Half at once (decided in one call), half one by one.
        let (first, rest) = pods.split_at(pods.len() / 2);
        put_pods(c.store.as_ref(), first);
        c.settle();
        for p in rest {
            put_pods(c.store.as_ref(), std::slice::from_ref(p));
            c.settle();
        }
        if let Err(e) = check_placements(&nodes, &apps, &c) {
            prop_assert!(false, "{}", e);
        }
    }

    #[test]
    fn preemption_only_evicts_lower_priority_and_makes_room(
        node_gens in prop::collection::vec(node_gen(), 1..6),
        pod_gens in prop::collection::vec(pod_gen(true), 1..30),
    ) {
        let nodes: Vec<NodeRecord> = node_gens.iter().enumerate().map(|(i, g)| build_node(i, g)).collect();
        let plain = vec![AppGen { anti: None, spread: false, ssd: false, arm_image: false }; 3];
        let mut c = Cluster::new(&nodes, SchedulerConfig::default());
        let mut seen_events = 0;
        for (i, g) in pod_gens.iter().enumerate() {
            let mut g = g.clone();
            g.port = false;
            put_pods(c.store.as_ref(), &[build_pod(i, &g, &plain)]);
            c.settle();
            let events = c.event_list();
            for (reason, object, message) in &events[seen_events.min(events.len())..] {
                if reason != "Preempted" || !message.starts_with("Preempted by ") {
                    continue;
                }
                let victim = c.pod(object.trim_start_matches("pod/"));
                let rest = message.trim_start_matches("Preempted by default/");
                let (preemptor, node) = rest.split_once(" on node ").expect("event form");
                let preemptor = c.pod(preemptor);
                prop_assert!(victim.priority() < preemptor.priority(),
                    "{} (priority {}) evicted for {} (priority {})",
                    victim.metadata.name, victim.priority(), preemptor.metadata.name, preemptor.priority());
                prop_assert!(victim.metadata.is_deleting());
                // With the victims gone, the preemptor fits on the node.
                let n = nodes.iter().find(|n| n.name == node).expect("node");
                let staying: Vec<Arc<Pod>> = all_pods(&c)
                    .into_iter()
                    .filter(|p| p.node() == Some(node) && !p.metadata.is_deleting() && p.status.phase != PodPhase::Failed)
                    .collect();
                let cpu: u64 = staying.iter().map(|p| p.requests().cpu_millis).sum::<u64>() + preemptor.requests().cpu_millis;
                let mem: u64 = staying.iter().map(|p| p.requests().memory_bytes).sum::<u64>() + preemptor.requests().memory_bytes;
                prop_assert!(cpu <= n.allocatable.cpu_millis && mem <= n.allocatable.memory_bytes,
                    "{} does not fit on {} even without its victims", preemptor.metadata.name, node);
            }
            seen_events = events.len();
            c.purge_terminating();
            c.settle();
        }
        if let Err(e) = check_placements(&nodes, &plain, &c) {
            prop_assert!(false, "{}", e);
        }
    }
}
