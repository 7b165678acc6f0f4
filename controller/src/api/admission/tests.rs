use super::*;
use crate::api::pod::PreemptionPolicy;
use crate::api::validate::validate;
use crate::store::mem::MemStore;
use crate::store::{Op, Store, Txn};
use serde_json::{json, Value};

/// A cache over a MemStore holding `objs` (each stamped with its
/// resourceVersion as the cache does).
fn cache(objs: &[Object]) -> Cache {
    let s = MemStore::new();
    for o in objs {
        s.txn(Txn::ops(vec![Op::put(o.key(), o.to_stored())]))
            .unwrap();
    }
    Cache::load(&s).unwrap()
}

fn obj(v: Value) -> Object {
    match validate(&v) {
        Ok(x) => x.object,
        Err(p) => panic!("{p:?}"),
    }
}

fn pod(extra: Value) -> Object {
    let mut spec = json!({"containers": [{"name": "c", "image": "i:1"}]});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    obj(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}))
}

fn class(name: &str, value: i32, global: bool) -> Object {
    obj(
        json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name}, "value": value, "globalDefault": global}),
    )
}

fn svc(name: &str, spec: Value) -> Object {
    let mut s = json!({"selector": {"app": name}, "ports": [{"port": 80}]});
    for (k, v) in spec.as_object().unwrap() {
        s[k] = v.clone();
    }
    obj(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": s}))
}

fn deploy(app: &str) -> Object {
    obj(
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": app}}, "template": {"metadata": {"labels": {"app": app}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
    )
}

fn cfg() -> AdmissionConfig {
    AdmissionConfig::default()
}

fn problems(r: Result<Admitted, AdmitError>) -> Vec<String> {
    match r {
        Ok(a) => panic!("admitted {:?}", a.object),
        Err(AdmitError::Invalid(p)) => p.iter().map(ToString::to_string).collect(),
        Err(e) => panic!("{e}"),
    }
}

fn admitted_pod(r: Result<Admitted, AdmitError>) -> Pod {
    match r.map(|a| a.object) {
        Ok(Object::Pod(p)) => p,
        other => panic!("{other:?}"),
    }
}

#[test]
fn pod_priority_table() {
    let high = class("high", 1000, false);
    let low = class("low", -5, true);
    // (classes in the cluster, pod spec extras, Ok((class name, priority)) or Err(problem))
    type Case<'a> = (Vec<Object>, Value, Result<(&'a str, Option<i32>), &'a str>);
    let cases: Vec<Case> = vec![
        (vec![high.clone()], json!({"priorityClassName": "high"}), Ok(("high", Some(1000)))),
        (vec![high.clone()], json!({"priorityClassName": "high", "priority": 1000}), Ok(("high", Some(1000)))),
        (vec![high.clone()], json!({"priorityClassName": "high", "priority": 7}), Err("spec.priority: 7 disagrees with PriorityClass high (value 1000); leave spec.priority out")),
        (vec![high.clone()], json!({"priorityClassName": "nope"}), Err("spec.priorityClassName: no PriorityClass \"nope\" exists (create it first, or leave priorityClassName out)")),
        (vec![], json!({"priorityClassName": "high"}), Err("spec.priorityClassName: no PriorityClass \"high\" exists")),
        (vec![high.clone(), low.clone()], json!({}), Ok(("low", Some(-5)))),
        (vec![high.clone(), low.clone()], json!({"priorityClassName": "high"}), Ok(("high", Some(1000)))),
        (vec![low.clone()], json!({"priority": 3}), Err("spec.priority: 3 disagrees with PriorityClass low (value -5)")),
        (vec![high.clone()], json!({"priority": 3}), Ok(("", Some(3)))),
        (vec![], json!({}), Ok(("", None))),
        (vec![high.clone()], json!({"priorityClassName": "high", "preemptionPolicy": "Never"}), Err("spec.preemptionPolicy: Never disagrees with PriorityClass high (PreemptLowerPriority); leave it out")),
    ];
    for (classes, extra, want) in cases {
        let c = cache(&classes);
        let r = admit(pod(extra.clone()), None, &c, &cfg());
        match want {
            Ok((name, prio)) => {
                let p = admitted_pod(r);
                assert_eq!(
                    (p.spec.priority_class_name.as_str(), p.spec.priority),
                    (name, prio),
                    "{extra}"
                );
                if !name.is_empty() {
                    assert_eq!(
                        p.spec.preemption_policy,
                        Some(PreemptionPolicy::PreemptLowerPriority)
                    );
                }
            }
            Err(msg) => {
                let p = problems(r);
                assert!(p.iter().any(|l| l.starts_with(msg)), "{extra}: {p:?}");
            }
        }
    }
    // The class's preemption policy comes with it.
    let never = obj(
        json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "batch"}, "value": 1, "preemptionPolicy": "Never"}),
    );
    let p = admitted_pod(admit(
        pod(json!({"priorityClassName": "batch"})),
        None,
        &cache(&[never]),
        &cfg(),
    ));
    assert_eq!(p.spec.preemption_policy, Some(PreemptionPolicy::Never));
}

#[test]
fn template_pods_are_resolved_by_the_replicaset_controller() {
    let c = cache(&[class("high", 1000, false)]);
    let Object::Pod(mut p) = pod(json!({"priorityClassName": "high"})) else {
        panic!()
    };
    admit_new_pod(&mut p, &c, &Default::default()).unwrap();
    assert_eq!(p.spec.priority, Some(1000));
    let Object::Pod(mut gone) = pod(json!({"priorityClassName": "gone"})) else {
        panic!()
    };
    let e = admit_new_pod(&mut gone, &c, &Default::default()).unwrap_err();
    assert_eq!(e[0].path, "spec.priorityClassName");
    // A Deployment naming a class not (yet) there is accepted with a warning.
    let mut d = deploy("web");
    if let Object::Deployment(x) = &mut d {
        x.spec.template.spec.priority_class_name = "later".into();
    }
    let a = admit(d, None, &c, &cfg()).unwrap();
    assert!(
        a.warnings[0].contains("no PriorityClass \"later\" exists yet"),
        "{:?}",
        a.warnings
    );
}

#[test]
fn at_most_one_global_default() {
    let c = cache(&[class("low", 1, true), class("high", 1000, false)]);
    let p = problems(admit(class("other", 5, true), None, &c, &cfg()));
    assert_eq!(
        p,
        ["globalDefault: PriorityClass low is already the global default; at most one may be"]
    );
    // The default itself may be applied again; another may not become one.
    let old = c.object(Kind::PriorityClass, "low").unwrap();
    admit(class("low", 1, true), Some(&old), &c, &cfg()).unwrap();
    let old_high = c.object(Kind::PriorityClass, "high").unwrap();
    assert!(admit(class("high", 1000, true), Some(&old_high), &c, &cfg()).is_err());
    // Its value may not change.
    let p = problems(admit(
        class("high", 2000, false),
        Some(&old_high),
        &c,
        &cfg(),
    ));
    assert_eq!(
        p,
        ["value: value is immutable; delete the PriorityClass and create it again to change it"]
    );
}

#[test]
fn one_apply_sees_its_own_objects() {
    let c = cache(&[]);
    // A class and a pod naming it, in one file.
    let out = admit_all(
        vec![
            (class("high", 10, true), None),
            (pod(json!({"priorityClassName": "high"})), None),
            (pod(json!({})), None),
        ],
        &c,
        &cfg(),
    )
    .unwrap();
    let Object::Pod(p) = &out[1].object else {
        panic!()
    };
    assert_eq!(p.spec.priority, Some(10));
    let Object::Pod(p) = &out[2].object else {
        panic!()
    };
    assert_eq!(
        (p.spec.priority_class_name.as_str(), p.spec.priority),
        ("high", Some(10)),
        "global default from the same apply"
    );
    // Two global defaults in one file: the second is refused, by index.
    let e = admit_all(
        vec![(class("a", 1, true), None), (class("b", 2, true), None)],
        &c,
        &cfg(),
    )
    .unwrap_err();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].0, 1);
    // Services in one file get distinct addresses and node ports.
    let many: Vec<(Object, Option<&Object>)> = (0..50)
        .map(|i| (svc(&format!("s{i}"), json!({"type": "NodePort"})), None))
        .collect();
    let out = admit_all(many, &c, &cfg()).unwrap();
    let mut ips = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for a in &out {
        let Object::Service(s) = &a.object else {
            panic!()
        };
        assert!(
            ips.insert(s.spec.cluster_ip.clone()),
            "{} given twice",
            s.spec.cluster_ip
        );
        assert!(ports.insert(s.spec.ports[0].node_port.unwrap()));
    }
}

#[test]
fn cluster_ips_are_allocated_in_range_and_never_shared() {
    let existing = svc("a", json!({"clusterIP": "10.43.0.10"}));
    let c = cache(&[
        existing.clone(),
        svc("headless", json!({"clusterIP": "None"})),
    ]);
    let cases: Vec<(Value, Result<Option<&str>, &str>)> = vec![
        (json!({}), Ok(None)),
        (json!({"clusterIP": "10.43.0.11"}), Ok(Some("10.43.0.11"))),
        (
            json!({"clusterIP": "10.43.0.10"}),
            Err("spec.clusterIP: 10.43.0.10 is already the cluster IP of Service default/a"),
        ),
        (
            json!({"clusterIP": "10.44.0.1"}),
            Err("spec.clusterIP: 10.44.0.1 is outside the service range 10.43.0.0/16"),
        ),
        (
            json!({"clusterIP": "10.43.0.0"}),
            Err("spec.clusterIP: 10.43.0.0 is outside the service range 10.43.0.0/16"),
        ),
        (
            json!({"clusterIP": "10.43.255.255"}),
            Err("spec.clusterIP: 10.43.255.255 is outside the service range"),
        ),
        (json!({"clusterIP": "None"}), Ok(Some("None"))),
    ];
    let cidr: Ipv4Cidr = "10.43.0.0/16".parse().unwrap();
    for (spec, want) in cases {
        let r = admit(svc("b", spec.clone()), None, &c, &cfg());
        match want {
            Ok(ip) => {
                let Object::Service(s) = r.unwrap().object else {
                    panic!()
                };
                match ip {
                    Some(ip) => assert_eq!(s.spec.cluster_ip, ip),
                    None => {
                        let a: Ipv4Addr = s.spec.cluster_ip.parse().unwrap();
                        assert!(cidr.contains(a) && a != Ipv4Addr::new(10, 43, 0, 10), "{a}");
                    }
                }
            }
            Err(msg) => {
                let p = problems(r);
                assert!(p[0].starts_with(msg), "{spec}: {p:?}");
            }
        }
    }
    // Allocation is stable: the same name gets the same address.
    let one = |c: &Cache| match admit(svc("stable", json!({})), None, c, &cfg())
        .unwrap()
        .object
    {
        Object::Service(s) => s.spec.cluster_ip,
        _ => unreachable!(),
    };
    assert_eq!(one(&c), one(&cache(&[])));
    // A full range says so.
    let tiny = AdmissionConfig {
        service_cidr: "10.9.0.0/30".parse().unwrap(),
        ..cfg()
    };
    let full = cache(&[
        svc("x", json!({"clusterIP": "10.9.0.1"})),
        svc("y", json!({"clusterIP": "10.9.0.2"})),
    ]);
    let p = problems(admit(svc("z", json!({})), None, &full, &tiny));
    assert_eq!(p, ["spec.clusterIP: no free address is left in the service range 10.9.0.0/30 (2 Services hold them all)"]);
}

#[test]
fn node_ports_are_allocated_in_range_and_unique() {
    let c = cache(&[svc(
        "a",
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
    )]);
    let cases: Vec<(Value, Result<Option<u16>, &str>)> = vec![
        (json!({"type": "NodePort"}), Ok(None)),
        (json!({"type": "LoadBalancer"}), Ok(None)),
        (
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30081}]}),
            Ok(Some(30081)),
        ),
        (
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
            Err("spec.ports[0].nodePort: 30080 is already a node port of Service default/a"),
        ),
        (
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 8080}]}),
            Err("spec.ports[0].nodePort: 8080 is outside the node port range 30000-32767"),
        ),
        (
            json!({"type": "NodePort", "ports": [{"name": "a", "port": 80, "nodePort": 30100}, {"name": "b", "port": 81, "nodePort": 30100}]}),
            Err("spec.ports[1].nodePort: 30100/TCP is given twice"),
        ),
    ];
    for (spec, want) in cases {
        let r = admit(svc("b", spec.clone()), None, &c, &cfg());
        match want {
            Ok(port) => {
                let Object::Service(s) = r.unwrap().object else {
                    panic!()
                };
                let n = s.spec.ports[0].node_port.unwrap();
                assert!(DEFAULT_NODE_PORTS.contains(&n) && n != 30080, "{n}");
                if let Some(want) = port {
                    assert_eq!(n, want);
                }
            }
            Err(msg) => {
                let p = problems(r);
                assert!(p[0].starts_with(msg), "{spec}: {p:?}");
            }
        }
    }
    // TCP and UDP of one port may share a node port (DNS on 53).
    let dns = svc(
        "dns",
        json!({"type": "NodePort", "ports": [{"name": "t", "port": 53, "nodePort": 30053}, {"name": "u", "port": 53, "protocol": "UDP", "nodePort": 30053}]}),
    );
    admit(dns, None, &c, &cfg()).unwrap();
    // A full range says so.
    let one_port = AdmissionConfig {
        node_ports: 30080..=30080,
        ..cfg()
    };
    let p = problems(admit(
        svc("b", json!({"type": "NodePort"})),
        None,
        &c,
        &one_port,
    ));
    assert_eq!(
        p,
        ["spec.ports[0].nodePort: no free node port is left in 30080-30080"]
    );
}

#[test]
fn updates_keep_what_the_server_set() {
    // A Service applied again without its cluster IP and node port keeps them.
    let c0 = cache(&[]);
    let first = admit(svc("web", json!({"type": "NodePort"})), None, &c0, &cfg())
        .unwrap()
        .object;
    let c = cache(std::slice::from_ref(&first));
    let stored = c.object(Kind::Service, "default/web").unwrap();
    let again = admit(
        svc("web", json!({"type": "NodePort"})),
        Some(&stored),
        &c,
        &cfg(),
    )
    .unwrap()
    .object;
    let (Object::Service(a), Object::Service(b)) = (&first, &again) else {
        panic!()
    };
    assert_eq!(a.spec.cluster_ip, b.spec.cluster_ip);
    assert_eq!(a.spec.ports[0].node_port, b.spec.ports[0].node_port);
    // Changing it is refused; turning it into ClusterIP drops the node port.
    let p = problems(admit(
        svc("web", json!({"clusterIP": "10.43.9.9"})),
        Some(&stored),
        &c,
        &cfg(),
    ));
    assert!(p[0].starts_with(&format!("spec.clusterIP: spec.clusterIP ({}) is immutable; delete the Service and create it again", a.spec.cluster_ip)), "{p:?}");
    let Object::Service(plain) = admit(svc("web", json!({})), Some(&stored), &c, &cfg())
        .unwrap()
        .object
    else {
        panic!()
    };
    assert_eq!(plain.spec.ports[0].node_port, None);

    // A bound pod keeps its node when the manifest has none; moving it is refused.
    let mut bound = pod(json!({}));
    if let Object::Pod(p) = &mut bound {
        p.spec.node_name = "n1".into();
        p.status.pod_ip = "10.1.0.5".into();
    }
    let c = cache(&[bound]);
    let stored = c.object(Kind::Pod, "default/p").unwrap();
    let p = admitted_pod(admit(pod(json!({})), Some(&stored), &c, &cfg()));
    assert_eq!(
        (p.spec.node_name.as_str(), p.status.pod_ip.as_str()),
        ("n1", "10.1.0.5")
    );
    let e = problems(admit(
        pod(json!({"nodeName": "n2"})),
        Some(&stored),
        &c,
        &cfg(),
    ));
    assert_eq!(e, ["spec.nodeName: spec.nodeName (bound to n1) is immutable; delete the Pod and create it again to change it"]);
    admit(pod(json!({"nodeName": "n1"})), Some(&stored), &c, &cfg()).unwrap();

    // Priority resolved at create stays, even when the class is gone.
    let c = cache(&[class("high", 9, false)]);
    let created = admit(pod(json!({"priorityClassName": "high"})), None, &c, &cfg())
        .unwrap()
        .object;
    let c = cache(&[created]);
    let stored = c.object(Kind::Pod, "default/p").unwrap();
    let p = admitted_pod(admit(
        pod(json!({"priorityClassName": "high"})),
        Some(&stored),
        &c,
        &cfg(),
    ));
    assert_eq!(p.spec.priority, Some(9));

    // Workload selectors are immutable.
    let c = cache(&[deploy("web")]);
    let stored = c.object(Kind::Deployment, "default/d").unwrap();
    admit(deploy("web"), Some(&stored), &c, &cfg()).unwrap();
    let e = problems(admit(deploy("api"), Some(&stored), &c, &cfg()));
    assert_eq!(e, ["spec.selector: spec.selector is immutable; delete the Deployment and create it again to change it"]);
}

#[test]
fn resource_versions() {
    // Something first, so the Deployment is at revision 2.
    let c = cache(&[pod(json!({})), deploy("web")]);
    let stored = c.object(Kind::Deployment, "default/d").unwrap();
    let rv = stored.meta().resource_version.clone();
    assert_eq!(rv, "2");
    let with_rv = |v: &str| {
        let mut d = deploy("web");
        d.meta_mut().resource_version = v.to_string();
        d
    };
    // The stored one, or none: admitted, guarded by the stored revision.
    for given in [rv.as_str(), ""] {
        let a = admit(with_rv(given), Some(&stored), &c, &cfg()).unwrap();
        assert_eq!(a.object.meta().resource_version, rv);
    }
    // An older one: Conflict, a distinct error.
    let e = admit(with_rv("1"), Some(&stored), &c, &cfg()).unwrap_err();
    assert_eq!(
        e,
        AdmitError::Conflict {
            object: "deployment/d".into(),
            given: "1".into(),
            current: rv.clone()
        }
    );
    assert!(e.to_string().contains("get it again and re-apply"), "{e}");
    // On create it is dropped with a warning.
    let a = admit(with_rv("7"), None, &cache(&[]), &cfg()).unwrap();
    assert_eq!(a.warnings, ["metadata.resourceVersion: ignored on create"]);
    assert!(a.object.meta().resource_version.is_empty());
    // An update of another kind under the same name is refused.
    let e = problems(admit(pod(json!({})), Some(&stored), &c, &cfg()));
    assert_eq!(e, ["kind: d exists as a Deployment, not a Pod"]);
}

#[test]
fn cidrs() {
    let c: Ipv4Cidr = "10.43.0.0/16".parse().unwrap();
    assert_eq!(c.usable(), 65534);
    assert_eq!(c, AdmissionConfig::default().service_cidr);
    assert!(c.contains(Ipv4Addr::new(10, 43, 0, 1)) && c.contains(Ipv4Addr::new(10, 43, 255, 254)));
    assert!(!c.contains(Ipv4Addr::new(10, 43, 0, 0)) && !c.contains(Ipv4Addr::new(10, 44, 0, 1)));
    for (bad, want) in [
        (
            "10.43.1.0/16",
            "10.43.1.0/16 is not a network address (did you mean 10.43.0.0/16?)",
        ),
        (
            "10.43.0.0/31",
            "10.43.0.0/31: the prefix must be from /8 to /30",
        ),
        (
            "10.43.0.0",
            "\"10.43.0.0\" is not an IPv4 network such as 10.43.0.0/16",
        ),
        ("fd00::/64", "\"fd00::/64\" is not an IPv4 network"),
    ] {
        let e = bad.parse::<Ipv4Cidr>().unwrap_err();
        assert!(e.starts_with(want), "{bad}: {e}");
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// However Services ask, no two hold one cluster IP or node port,
        /// and every one given is in its range.
        #[test]
        fn allocations_never_collide(asks in proptest::collection::vec((0u8..8, proptest::option::of(0u8..6), proptest::bool::ANY), 1..12)) {
            let cfg = AdmissionConfig {
                service_cidr: "10.9.0.0/29".parse().unwrap(),
                node_ports: 30000..=30005,
                default_tolerations: Default::default(),
            };
            let mut accepted: Vec<Object> = Vec::new();
            for (i, (ip, port, node)) in asks.iter().enumerate() {
                let mut spec = json!({});
                if *ip < 7 {
                    spec["clusterIP"] = json!(format!("10.9.0.{ip}"));
                }
                if *node {
                    spec["type"] = json!("NodePort");
                    if let Some(p) = port {
                        spec["ports"] = json!([{"port": 80, "nodePort": 29998 + u16::from(*p)}]);
                    }
                }
                // Each admitted against the cluster holding those before it.
                if let Ok(a) = admit(svc(&format!("s{i}"), spec), None, &cache(&accepted), &cfg) {
                    accepted.push(a.object);
                }
            }
            let mut ips = BTreeSet::new();
            let mut ports = BTreeSet::new();
            for a in &accepted {
                let Object::Service(s) = a else { panic!() };
                let ip: Ipv4Addr = s.spec.cluster_ip.parse().unwrap();
                prop_assert!(cfg.service_cidr.contains(ip));
                prop_assert!(ips.insert(ip));
                for p in &s.spec.ports {
                    if let Some(n) = p.node_port {
                        prop_assert!(cfg.node_ports.contains(&n));
                        prop_assert!(ports.insert(n));
                    }
                }
            }
        }
    }
}
