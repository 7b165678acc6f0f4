use super::*;
use crate::api::meta::IntOrString;
use crate::api::pod::PodSpec;
use crate::api::{Object, Pod};
use crate::controllers::testing::{self, cluster, Harness};

fn owner(kind: Kind, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: kind.api_version().into(),
        kind: kind.name().into(),
        name: name.into(),
        uid: uid.into(),
        controller: false,
        block_owner_deletion: false,
    }
}

fn bare_pod(name: &str, owners: Vec<OwnerReference>) -> Object {
    let mut meta = ObjectMeta::named("default", name);
    meta.owner_references = owners;
    Object::Pod(Pod {
        metadata: meta,
        spec: PodSpec {
            containers: testing::template("x", "x:1").spec.containers,
            ..PodSpec::default()
        },
        status: Default::default(),
    })
}

fn exists(h: &Harness, kind: Kind, name: &str) -> bool {
    h.get(kind, "default", name).is_some()
}

#[test]
fn deleting_a_replicaset_deletes_its_pods() {
    let mut h = cluster(2);
    h.create(testing::replicaset("web", 3, "web:1"));
    h.create(testing::replicaset("api", 2, "api:1"));
    h.settle();
    assert_eq!(testing::object_count(&h.store, Kind::Pod), 5);
    h.delete(Kind::ReplicaSet, "default", "web");
    h.settle();
    // The bound pods were stopped by their nodes and are gone; the other
    // ReplicaSet's pods are untouched.
    assert!(h.active_pods("web").is_empty());
    assert_eq!(testing::object_count(&h.store, Kind::Pod), 2);
    assert_eq!(h.active_pods("api").len(), 2);
    assert_eq!(h.idle_writes(3), 0);
}

#[test]
fn deleting_a_deployment_deletes_its_replicasets_and_their_pods() {
    let mut h = cluster(2);
    h.create(Object::Deployment(testing::deployment(
        "web",
        2,
        "web:1",
        IntOrString::Int(1),
        IntOrString::Int(0),
    )));
    h.settle();
    h.update_deployment("web", |d| {
        d.spec.template.spec.containers[0].image = "web:2".into()
    });
    h.settle();
    assert_eq!(testing::object_count(&h.store, Kind::ReplicaSet), 2);
    h.delete(Kind::Deployment, "default", "web");
    h.settle();
    assert_eq!(testing::object_count(&h.store, Kind::ReplicaSet), 0);
    assert_eq!(testing::object_count(&h.store, Kind::Pod), 0);
}

#[test]
fn never_deletes_what_has_an_owner() {
    let mut h = cluster(1);
    let Object::ReplicaSet(rs) = h.create(testing::replicaset("keep", 0, "x:1")) else {
        unreachable!()
    };
    let live = owner(Kind::ReplicaSet, "keep", &rs.metadata.uid);
    let dead = owner(Kind::ReplicaSet, "gone", "no-such-uid");
    // Same name as a live owner, another uid: that owner was replaced.
    let replaced = owner(Kind::ReplicaSet, "keep", "old-uid");
    let unknown = OwnerReference {
        api_version: "example.com/v1".into(),
        kind: "Widget".into(),
        ..owner(Kind::ReplicaSet, "w", "w-uid")
    };
    let node_uid = h.cache().node("n1").unwrap().uid.clone();
    let node = OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        ..owner(Kind::ReplicaSet, "n1", &node_uid)
    };
    for (name, owners) in [
        ("owned", vec![live.clone()]),
        ("half-owned", vec![dead.clone(), live.clone()]),
        ("dangling", vec![dead.clone()]),
        ("replaced", vec![replaced.clone()]),
        ("all-dead", vec![dead.clone(), replaced]),
        ("unknown-kind", vec![unknown]),
        ("node-owned", vec![node]),
        ("free", vec![]),
    ] {
        h.create(bare_pod(name, owners));
    }
    h.settle();
    for (name, kept) in [
        ("owned", true),
        ("half-owned", true),
        ("dangling", false),
        ("replaced", false),
        ("all-dead", false),
        ("unknown-kind", true),
        ("node-owned", true),
        ("free", true),
    ] {
        assert_eq!(exists(&h, Kind::Pod, name), kept, "{name}");
    }
    // The live owner stays on the half-owned pod, the dead one is dropped.
    let half = h.get(Kind::Pod, "default", "half-owned").unwrap();
    assert_eq!(half.meta().owner_references, vec![live]);
    assert_eq!(h.idle_writes(3), 0);
}

#[test]
fn a_service_takes_its_endpoints_along() {
    let mut h = cluster(1);
    h.create(testing::replicaset("web", 1, "web:1"));
    h.create(testing::service("web", "web", IntOrString::Int(8080)));
    h.settle();
    assert!(exists(&h, Kind::Endpoints, "web"));
    h.delete(Kind::Service, "default", "web");
    h.settle();
    assert!(!exists(&h, Kind::Endpoints, "web"));
}

#[test]
fn owner_kinds_resolve_by_group_not_version() {
    let r = |api_version: &str, kind: &str| OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        ..owner(Kind::Pod, "x", "u")
    };
    assert_eq!(
        owner_kind(&r("apps/v1", "ReplicaSet")),
        Some(Kind::ReplicaSet)
    );
    assert_eq!(
        owner_kind(&r("apps/v1beta2", "Deployment")),
        Some(Kind::Deployment)
    );
    assert_eq!(owner_kind(&r("v1", "Service")), Some(Kind::Service));
    assert_eq!(owner_kind(&r("v1", "ReplicaSet")), None);
    assert_eq!(owner_kind(&r("batch/v1", "Job")), None);
}
