use super::*;
use crate::api::pod::ContainerPort;
use crate::controllers::testing::{self, cluster, Behaviour, Harness};
use crate::store::Store;

fn endpoints(h: &Harness, name: &str) -> Endpoints {
    match h.get(Kind::Endpoints, "default", name) {
        Some(Object::Endpoints(e)) => e,
        _ => panic!("no endpoints {name}"),
    }
}

/// (ready, not ready) pod names.
fn names(ep: &Endpoints) -> (Vec<String>, Vec<String>) {
    let name = |a: &EndpointAddress| {
        a.target_ref
            .as_ref()
            .map(|r| r.name.clone())
            .unwrap_or_default()
    };
    let mut ready: Vec<String> = ep
        .subsets
        .iter()
        .flat_map(|s| s.addresses.iter().map(name))
        .collect();
    let mut not: Vec<String> = ep
        .subsets
        .iter()
        .flat_map(|s| s.not_ready_addresses.iter().map(name))
        .collect();
    ready.sort();
    not.sort();
    (ready, not)
}

fn key(name: &str) -> String {
    format!("default/{name}")
}

#[test]
fn lists_the_ready_pods_behind_a_service() {
    let mut h = cluster(2);
    h.create(testing::replicaset("web", 3, "web:1"));
    h.create(testing::service(
        "web",
        "web",
        IntOrString::String("http".into()),
    ));
    h.settle();
    let ep = endpoints(&h, "web");
    let svc = h.cache().service("default/web").cloned().unwrap();
    assert_eq!(ep.metadata.owner_references, vec![owner_ref(&svc)]);
    assert_eq!(ep.subsets.len(), 1);
    let s = &ep.subsets[0];
    assert_eq!(
        s.ports,
        vec![EndpointPort {
            name: "web".into(),
            port: 8080,
            protocol: Protocol::TCP,
        }]
    );
    assert_eq!(s.addresses.len(), 3);
    assert!(s.not_ready_addresses.is_empty());
    let cache = h.cache();
    for a in &s.addresses {
        let r = a.target_ref.as_ref().unwrap();
        let pod = cache.pod(&key(&r.name)).unwrap();
        assert_eq!(r.kind, "Pod");
        assert_eq!(r.uid, pod.metadata.uid);
        assert_eq!(a.ip, pod.status.pod_ip);
        assert_eq!(a.node_name, pod.spec.node_name);
        let node = cache.node(&a.node_name).unwrap();
        assert_eq!(a.node_ip, node.info.addresses[0]);
        assert_eq!(Some(&a.site), node.labels().get(SITE_LABEL));
        assert!(a.host_ports.is_empty());
    }
    // Sorted: the same pods always give the same bytes.
    let mut sorted = s.addresses.clone();
    sorted.sort();
    assert_eq!(sorted, s.addresses);
    drop(cache);
    assert_eq!(h.idle_writes(5), 0);
}

#[test]
fn follows_readiness_and_deletion() {
    let mut h = cluster(2);
    h.create(testing::replicaset("web", 2, "web:1"));
    h.create(testing::service("web", "web", IntOrString::Int(8080)));
    h.settle();
    let pods: Vec<String> = h
        .active_pods("web")
        .iter()
        .map(|p| p.metadata.name.clone())
        .collect();
    h.set_pod(&key(&pods[0]), Behaviour::NotReady);
    h.settle();
    assert_eq!(
        names(&endpoints(&h, "web")),
        (vec![pods[1].clone()], vec![pods[0].clone()])
    );
    h.set_pod(&key(&pods[0]), Behaviour::Ready);
    h.settle();
    assert_eq!(names(&endpoints(&h, "web")).0, pods);
    // Deleted: out at once (while its node still stops it), and its
    // replacement comes in when ready.
    h.delete(Kind::Pod, "default", &pods[1]);
    h.step();
    h.step();
    let (ready, _) = names(&endpoints(&h, "web"));
    assert!(!ready.contains(&pods[1]), "{ready:?}");
    h.settle();
    let (ready, not) = names(&endpoints(&h, "web"));
    assert_eq!(ready.len(), 2);
    assert!(!ready.contains(&pods[1]) && not.is_empty());
}

#[test]
fn an_unrelated_pod_change_writes_nothing() {
    let mut h = cluster(1);
    h.create(testing::replicaset("web", 2, "web:1"));
    h.create(testing::service("web", "web", IntOrString::Int(8080)));
    h.settle();
    let before = h
        .store
        .get(&Kind::Endpoints.key("default", "web"))
        .unwrap()
        .unwrap();
    // A restart count changes the pod, not what endpoints show.
    let p = h.active_pods("web")[0].clone();
    h.set_restarts(&key(&p.metadata.name), 2);
    h.settle();
    let Some(Object::Pod(changed)) = h.get(Kind::Pod, "default", &p.metadata.name) else {
        panic!("the pod")
    };
    assert_eq!(changed.status.restarts(), 2, "the pod did change");
    let after = h
        .store
        .get(&Kind::Endpoints.key("default", "web"))
        .unwrap()
        .unwrap();
    assert_eq!(before.mod_revision, after.mod_revision);
    assert_eq!(before.value, after.value);
}

#[test]
fn node_not_ready_drops_its_pods_until_the_agent_reports_again() {
    let mut h = cluster(2);
    h.create(testing::replicaset("web", 4, "web:1"));
    h.create(testing::service("web", "web", IntOrString::Int(8080)));
    h.settle();
    assert_eq!(names(&endpoints(&h, "web")).0.len(), 4);
    h.set_node_ready("n1", false);
    h.settle();
    let ep = endpoints(&h, "web");
    let ready: Vec<&EndpointAddress> = ep.subsets.iter().flat_map(|s| &s.addresses).collect();
    let not: Vec<&EndpointAddress> = ep
        .subsets
        .iter()
        .flat_map(|s| &s.not_ready_addresses)
        .collect();
    assert!(ready.iter().all(|a| a.node_name == "n2") && ready.len() == 2);
    assert!(not.iter().all(|a| a.node_name == "n1") && not.len() == 2);
    h.set_node_ready("n1", true);
    h.settle();
    assert_eq!(names(&endpoints(&h, "web")).0.len(), 4);
}

/// A ReplicaSet whose pods publish the named port or not, and a host port.
fn variant(name: &str, app: &str, http: bool, host_port: Option<u16>) -> Object {
    let Object::ReplicaSet(mut rs) = testing::replicaset(name, 1, "web:1") else {
        unreachable!()
    };
    let t = &mut rs.spec.template;
    t.metadata.labels.insert("app".into(), app.into());
    t.metadata.labels.insert("variant".into(), name.into());
    rs.spec
        .selector
        .match_labels
        .insert("variant".into(), name.into());
    rs.spec
        .selector
        .match_labels
        .insert("app".into(), app.into());
    t.spec.containers[0].ports = vec![ContainerPort {
        name: if http { "http".into() } else { "other".into() },
        container_port: 8080,
        host_port,
        ..ContainerPort::default()
    }];
    Object::ReplicaSet(rs)
}

#[test]
fn pods_group_by_the_ports_they_resolve() {
    let mut h = cluster(2);
    h.create(variant("named", "web", true, Some(30080)));
    h.create(variant("unnamed", "web", false, None));
    let Object::Service(mut svc) =
        testing::service("web", "web", IntOrString::String("http".into()))
    else {
        unreachable!()
    };
    svc.spec.ports.push(ServicePort {
        name: "metrics".into(),
        protocol: Protocol::TCP,
        port: 9090,
        target_port: IntOrString::Int(9090),
        node_port: None,
    });
    h.create(Object::Service(svc));
    h.settle();
    let ep = endpoints(&h, "web");
    assert_eq!(ep.subsets.len(), 2, "{ep:#?}");
    let ports = |s: &EndpointSubset| -> Vec<(String, u16)> {
        s.ports.iter().map(|p| (p.name.clone(), p.port)).collect()
    };
    let both = ep
        .subsets
        .iter()
        .find(|s| s.ports.len() == 2)
        .expect("the pod with both ports");
    let metrics = ep
        .subsets
        .iter()
        .find(|s| s.ports.len() == 1)
        .expect("the pod with one");
    assert_eq!(
        ports(both),
        [("metrics".to_string(), 9090), ("web".to_string(), 8080)]
    );
    assert_eq!(ports(metrics), [("metrics".to_string(), 9090)]);
    let named = &both.addresses[0];
    assert!(named
        .target_ref
        .as_ref()
        .unwrap()
        .name
        .starts_with("named-"));
    assert_eq!(named.host_ports, [("web".to_string(), 30080)].into());
    assert!(metrics.addresses[0].host_ports.is_empty());
}

#[test]
fn a_service_without_selector_keeps_no_endpoints() {
    let mut h = cluster(1);
    h.create(testing::replicaset("web", 1, "web:1"));
    h.create(testing::service("web", "web", IntOrString::Int(8080)));
    h.settle();
    assert!(h.get(Kind::Endpoints, "default", "web").is_some());
    h.update(Kind::Service, "default", "web", |o| {
        if let Object::Service(s) = o {
            s.spec.selector.clear();
        }
    });
    h.settle();
    assert!(h.get(Kind::Endpoints, "default", "web").is_none());
    h.create(testing::service("bare", "", IntOrString::Int(8080)));
    h.update(Kind::Service, "default", "bare", |o| {
        if let Object::Service(s) = o {
            s.spec.selector.clear();
        }
    });
    h.settle();
    assert!(h.get(Kind::Endpoints, "default", "bare").is_none());
}

#[test]
fn relabelled_pods_leave_and_join() {
    let mut h = cluster(1);
    h.create(testing::replicaset("web", 2, "web:1"));
    h.create(testing::service("web", "web", IntOrString::Int(8080)));
    h.create(testing::service("debug", "debug", IntOrString::Int(8080)));
    h.settle();
    let p = h.active_pods("web")[0].metadata.name.clone();
    h.update(Kind::Pod, "default", &p, |o| {
        o.meta_mut().labels.insert("app".into(), "debug".into());
    });
    h.settle();
    assert!(!names(&endpoints(&h, "web")).0.contains(&p));
    assert_eq!(names(&endpoints(&h, "debug")).0, vec![p]);
}
