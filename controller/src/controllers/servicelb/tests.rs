use super::*;
use crate::api::meta::IntOrString;
use crate::controllers::testing::{self, cluster, Harness};
use crate::store::Store;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// A LoadBalancer Service `name` selecting app=`name`.
fn lb(name: &str) -> Object {
    let mut o = testing::service(name, name, IntOrString::Int(8080));
    if let Object::Service(s) = &mut o {
        s.spec.kind = ServiceType::LoadBalancer;
    }
    o
}

fn service(h: &Harness, name: &str) -> Service {
    match h.get(Kind::Service, "default", name) {
        Some(Object::Service(s)) => s,
        _ => panic!("no service {name}"),
    }
}

fn ingress(h: &Harness, name: &str) -> Vec<String> {
    service(h, name)
        .status
        .load_balancer
        .ingress
        .into_iter()
        .map(|i| i.ip)
        .collect()
}

fn set_type(h: &mut Harness, name: &str, kind: ServiceType) {
    h.update(Kind::Service, "default", name, |o| {
        if let Object::Service(s) = o {
            s.spec.kind = kind;
        }
    });
}

fn edit_node(h: &mut Harness, name: &str, f: impl FnOnce(&mut NodeRecord)) {
    let mut rec = h.node_record(name).expect("known node");
    f(&mut rec);
    h.put_node(&rec);
}

fn delete_node(h: &mut Harness, name: &str) {
    h.store
        .delete(&Kind::Node.key("", name))
        .expect("delete node");
}

fn label(h: &mut Harness, node: &str, key: &str, value: &str) {
    edit_node(h, node, |r| {
        r.token_labels.insert(key.to_string(), value.to_string());
    });
}

#[test]
fn ingress_lists_the_ready_nodes_addresses() {
    let mut h = cluster(3);
    h.create(lb("web"));
    h.create(testing::service("plain", "plain", IntOrString::Int(8080)));
    h.settle();
    assert_eq!(ingress(&h, "web"), ["127.0.1.1", "127.0.1.2", "127.0.1.3"]);
    assert!(
        ingress(&h, "plain").is_empty(),
        "a ClusterIP Service has none"
    );
    let svc = service(&h, "web");
    assert_eq!(
        svc.metadata.generation, 1,
        "a status write is not a spec change"
    );
    let ev = h.events(UPDATED);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].object, "service/web");
    assert_eq!(
        ev[0].message,
        "Updated LoadBalancer with new IPs: [] -> [127.0.1.1 127.0.1.2 127.0.1.3]"
    );
    // Nothing changed: nothing is written.
    assert_eq!(h.idle_writes(5), 0);
    // A spec change that does not touch the nodes writes no status.
    let before = h.writes;
    h.update(Kind::Service, "default", "web", |o| {
        if let Object::Service(s) = o {
            s.spec.ports[0].port = 81;
        }
    });
    h.settle();
    assert_eq!(h.writes, before, "no status write for a port change");
    assert_eq!(service(&h, "web").metadata.generation, 2);
}

#[test]
fn follows_nodes_turning_not_ready_and_back() {
    let mut h = cluster(3);
    h.create(lb("web"));
    h.settle();
    h.set_node_ready("n2", false);
    h.settle();
    assert_eq!(ingress(&h, "web"), ["127.0.1.1", "127.0.1.3"]);
    h.set_node_ready("n2", true);
    h.settle();
    assert_eq!(ingress(&h, "web"), ["127.0.1.1", "127.0.1.2", "127.0.1.3"]);
    // A cordoned node still serves (DaemonSet pods tolerate the cordon).
    edit_node(&mut h, "n3", |r| r.unschedulable = true);
    h.settle();
    assert_eq!(ingress(&h, "web").len(), 3);
    // An agent saying Ready=False (runtime down) is not Ready.
    edit_node(&mut h, "n1", |r| {
        r.conditions.push(outpost_proto::Condition {
            kind: outpost_proto::ConditionType::Ready,
            status: outpost_proto::ConditionStatus::False,
            reason: "RuntimeUnavailable".into(),
            message: String::new(),
            last_transition_ms: 0,
        });
    });
    h.settle();
    assert_eq!(ingress(&h, "web"), ["127.0.1.2", "127.0.1.3"]);
    // No node left: empty, with a warning.
    for n in ["n2", "n3"] {
        h.set_node_ready(n, false);
    }
    h.settle();
    assert!(ingress(&h, "web").is_empty());
    let warn = h.events(UNAVAILABLE);
    assert_eq!(warn.len(), 1, "{warn:?}");
    assert_eq!(warn[0].kind, EventType::Warning);
    assert_eq!(h.idle_writes(3), 0);
    assert_eq!(service(&h, "web").metadata.generation, 1);
}

#[test]
fn follows_addresses_and_deleted_nodes() {
    let mut h = cluster(3);
    h.create(lb("web"));
    h.settle();
    // The first IPv4 address counts; IPv6 ones are skipped.
    edit_node(&mut h, "n1", |r| {
        r.info.addresses = vec!["fd00::1".into(), "10.9.0.1".into(), "10.9.0.2".into()];
    });
    h.settle();
    assert_eq!(ingress(&h, "web"), ["10.9.0.1", "127.0.1.2", "127.0.1.3"]);
    // Sorted as addresses, one entry per address.
    edit_node(&mut h, "n2", |r| r.info.addresses = vec!["10.9.0.1".into()]);
    edit_node(&mut h, "n3", |r| r.info.addresses = vec!["9.9.0.1".into()]);
    h.settle();
    assert_eq!(ingress(&h, "web"), ["9.9.0.1", "10.9.0.1"]);
    // A node without an IPv4 address is not listed.
    edit_node(&mut h, "n3", |r| r.info.addresses = vec!["fd00::3".into()]);
    h.settle();
    assert_eq!(ingress(&h, "web"), ["10.9.0.1"]);
    // A deleted node goes.
    edit_node(&mut h, "n3", |r| r.info.addresses = vec!["10.9.0.3".into()]);
    h.settle();
    assert_eq!(ingress(&h, "web"), ["10.9.0.1", "10.9.0.3"]);
    delete_node(&mut h, "n3");
    h.settle();
    assert_eq!(ingress(&h, "web"), ["10.9.0.1"]);
    // Only n1 and n2 share it: losing one of them changes nothing.
    let before = h.writes;
    delete_node(&mut h, "n2");
    h.settle();
    assert_eq!(h.writes, before);
    assert_eq!(ingress(&h, "web"), ["10.9.0.1"]);
}

#[test]
fn cleared_when_the_service_stops_being_a_load_balancer() {
    let mut h = cluster(2);
    h.create(lb("web"));
    h.settle();
    assert_eq!(ingress(&h, "web").len(), 2);
    set_type(&mut h, "web", ServiceType::ClusterIP);
    h.settle();
    assert!(ingress(&h, "web").is_empty());
    let ev = h.events(DELETED);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(
        ev[0].message,
        "type is now ClusterIP: load balancer ingress [127.0.1.1 127.0.1.2] cleared"
    );
    // Node changes leave a ClusterIP Service alone.
    h.set_node_ready("n1", false);
    h.settle();
    assert!(ingress(&h, "web").is_empty());
    // NodePort has none either; LoadBalancer again gets it back.
    set_type(&mut h, "web", ServiceType::NodePort);
    h.settle();
    assert!(ingress(&h, "web").is_empty());
    set_type(&mut h, "web", ServiceType::LoadBalancer);
    h.settle();
    assert_eq!(ingress(&h, "web"), ["127.0.1.2"]);
    // Deleting the Service is the end of it (nothing left to write).
    h.delete(Kind::Service, "default", "web");
    h.settle();
    assert_eq!(h.idle_writes(2), 0);
}

#[test]
fn enablelb_and_lbpool_labels_choose_the_nodes() {
    let mut h = cluster(4);
    h.create(lb("web"));
    let mut pooled = lb("db");
    pooled
        .meta_mut()
        .labels
        .insert(LB_POOL_LABEL.into(), "p1".into());
    h.create(pooled);
    h.settle();
    // No node labelled: every node serves, the pool label is moot.
    assert_eq!(ingress(&h, "web").len(), 4);
    assert_eq!(ingress(&h, "db").len(), 4);
    // One node labelled (even `false`): only `true` nodes serve.
    label(&mut h, "n1", ENABLE_LB_LABEL, "false");
    h.settle();
    assert!(ingress(&h, "web").is_empty());
    assert!(ingress(&h, "db").is_empty());
    label(&mut h, "n2", ENABLE_LB_LABEL, "true");
    label(&mut h, "n3", ENABLE_LB_LABEL, "true");
    label(&mut h, "n3", LB_POOL_LABEL, "p1");
    label(&mut h, "n4", LB_POOL_LABEL, "p1");
    h.settle();
    assert_eq!(ingress(&h, "web"), ["127.0.1.2", "127.0.1.3"]);
    assert_eq!(
        ingress(&h, "db"),
        ["127.0.1.3"],
        "pool p1 and enablelb=true"
    );
    // The label taken off every node: all serve again.
    for n in ["n1", "n2", "n3"] {
        edit_node(&mut h, n, |r| {
            r.token_labels.remove(ENABLE_LB_LABEL);
        });
    }
    h.settle();
    assert_eq!(ingress(&h, "web").len(), 4);
    assert_eq!(ingress(&h, "db").len(), 4);
}

#[test]
fn an_applied_service_keeps_its_ingress() {
    use crate::api::admission::{admit, AdmissionConfig};
    let mut h = cluster(2);
    h.create(lb("web"));
    h.settle();
    let cache = h.snapshot();
    let stored = cache.object(Kind::Service, "default/web").expect("stored");
    // The operator applies the Service again: no status in the manifest.
    let mut again = lb("web");
    if let Object::Service(s) = &mut again {
        s.spec.cluster_ip.clear();
    }
    let admitted = admit(again, Some(&stored), &cache, &AdmissionConfig::default())
        .expect("admitted")
        .object;
    let Object::Service(s) = admitted else {
        panic!("a service")
    };
    let ips: Vec<&str> = s
        .status
        .load_balancer
        .ingress
        .iter()
        .map(|i| i.ip.as_str())
        .collect();
    assert_eq!(ips, ["127.0.1.1", "127.0.1.2"]);
}

/// What happens to the cluster in the property test.
#[derive(Debug, Clone)]
enum Op {
    Ready(usize, bool),
    /// `None`: IPv6 only.
    Address(usize, Option<u8>),
    Cordon(usize, bool),
    Delete(usize),
    Add(usize, Option<u8>),
    Type(ServiceType),
}

const NODES: usize = 4;

fn op() -> impl Strategy<Value = Op> {
    let addr = prop::option::of(1u8..5);
    let kind = prop_oneof![
        Just(ServiceType::LoadBalancer),
        Just(ServiceType::ClusterIP),
        Just(ServiceType::NodePort),
    ];
    prop_oneof![
        3 => (0..NODES, any::<bool>()).prop_map(|(n, r)| Op::Ready(n, r)),
        2 => (0..NODES, addr.clone()).prop_map(|(n, a)| Op::Address(n, a)),
        1 => (0..NODES, any::<bool>()).prop_map(|(n, c)| Op::Cordon(n, c)),
        1 => (0..NODES).prop_map(Op::Delete),
        1 => (0..NODES, addr).prop_map(|(n, a)| Op::Add(n, a)),
        1 => kind.prop_map(Op::Type),
    ]
}

fn addresses(a: Option<u8>) -> Vec<String> {
    match a {
        Some(x) => vec![format!("10.0.0.{x}"), "10.1.0.1".into()],
        None => vec!["fd00::1".into()],
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// After every change settles, the ingress is exactly the set of the
    /// present, Ready nodes' first IPv4 addresses (for a LoadBalancer;
    /// empty otherwise), and settling again writes nothing.
    #[test]
    fn ingress_is_the_ready_nodes_addresses(ops in prop::collection::vec(op(), 1..24)) {
        let mut h = Harness::new();
        // name -> (ready, first IPv4 address)
        let mut model: BTreeMap<String, (bool, Option<Ipv4Addr>)> = BTreeMap::new();
        let first = |a: Option<u8>| a.map(|x| Ipv4Addr::new(10, 0, 0, x));
        for i in 0..NODES {
            let n = format!("n{i}");
            h.add_node(&n, None);
            edit_node(&mut h, &n, |r| r.info.addresses = addresses(Some(1)));
            model.insert(n, (true, first(Some(1))));
        }
        h.create(lb("web"));
        let mut kind = ServiceType::LoadBalancer;
        // Only type changes are spec changes: the generation counts those.
        let mut generation = 1;
        h.settle();
        for op in ops {
            match op {
                Op::Ready(i, r) => {
                    let n = format!("n{i}");
                    if let Some(m) = model.get_mut(&n) {
                        h.set_node_ready(&n, r);
                        m.0 = r;
                    }
                }
                Op::Address(i, a) => {
                    let n = format!("n{i}");
                    if let Some(m) = model.get_mut(&n) {
                        edit_node(&mut h, &n, |r| r.info.addresses = addresses(a));
                        m.1 = first(a);
                    }
                }
                Op::Cordon(i, c) => {
                    let n = format!("n{i}");
                    if model.contains_key(&n) {
                        edit_node(&mut h, &n, |r| r.unschedulable = c);
                    }
                }
                Op::Delete(i) => {
                    let n = format!("n{i}");
                    if model.remove(&n).is_some() {
                        delete_node(&mut h, &n);
                    }
                }
                Op::Add(i, a) => {
                    let n = format!("n{i}");
                    if let std::collections::btree_map::Entry::Vacant(slot) = model.entry(n) {
                        h.add_node(slot.key(), None);
                        edit_node(&mut h, slot.key(), |r| r.info.addresses = addresses(a));
                        slot.insert((true, first(a)));
                    }
                }
                Op::Type(k) => {
                    set_type(&mut h, "web", k);
                    if k != kind {
                        generation += 1;
                    }
                    kind = k;
                }
            }
            h.settle();
            let want: Vec<String> = if kind == ServiceType::LoadBalancer {
                model
                    .values()
                    .filter(|(ready, _)| *ready)
                    .filter_map(|(_, a)| *a)
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .map(|a| a.to_string())
                    .collect()
            } else {
                Vec::new()
            };
            prop_assert_eq!(ingress(&h, "web"), want);
            prop_assert_eq!(h.idle_writes(2), 0);
            prop_assert_eq!(service(&h, "web").metadata.generation, generation);
        }
    }
}
