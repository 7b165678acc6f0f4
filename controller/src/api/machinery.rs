//! What the API does to an object on create, update and delete, the same
//! for operator calls and for the controllers' own writes: identity and
//! timestamps on create, generation on spec changes, graceful deletion of
//! pods a node still runs.

use super::{new_uid, Kind, Object, Time, DEFAULT_NAMESPACE};

/// Characters of generated name suffixes (Kubernetes' alphabet: no vowels,
/// so no words, and no look-alikes).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A random 5-character suffix for `generateName`.
pub fn name_suffix() -> String {
    (0..5)
        .map(|_| {
            let i = rand::random::<u32>() as usize % SUFFIX_ALPHABET.len();
            SUFFIX_ALPHABET[i] as char
        })
        .collect()
}

/// Fills what a create sets: namespace (default when namespaced and none
/// given; none for cluster-scoped kinds), a name from `generateName`, uid,
/// creation time, generation 1; clears what a client may not set.
pub fn prepare_create(obj: &mut Object, now: Time) {
    let kind = obj.kind();
    let m = obj.meta_mut();
    if kind.namespaced() {
        if m.namespace.is_empty() {
            m.namespace = DEFAULT_NAMESPACE.to_string();
        }
    } else {
        m.namespace.clear();
    }
    if m.name.is_empty() && !m.generate_name.is_empty() {
        m.name = format!("{}{}", m.generate_name, name_suffix());
    }
    m.uid = new_uid();
    m.creation_timestamp = Some(now);
    m.deletion_timestamp = None;
    m.deletion_grace_period_seconds = None;
    m.generation = 1;
    m.resource_version.clear();
}

/// The part of an object whose changes bump `metadata.generation`.
fn spec_of(obj: &Object) -> serde_json::Value {
    let mut v = obj.to_json();
    if let serde_json::Value::Object(m) = &mut v {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    v
}

/// Whether `a` and `b` differ in what bumps the generation. Pods (the
/// kind written most, by every binding and status) compare their typed
/// spec, which is what the JSON comparison amounts to, without building
/// two JSON trees per write.
pub fn spec_changed(a: &Object, b: &Object) -> bool {
    match (a, b) {
        (Object::Pod(a), Object::Pod(b)) => a.spec != b.spec,
        _ => spec_of(a) != spec_of(b),
    }
}

/// Carries identity from the stored `old` into `new` and bumps the
/// generation when the spec changed. `new.resourceVersion` stays as given:
/// the write compares on it.
pub fn prepare_update(old: &Object, new: &mut Object) {
    let bump = spec_changed(old, new);
    let o = old.meta();
    let m = new.meta_mut();
    m.uid = o.uid.clone();
    m.creation_timestamp = o.creation_timestamp;
    m.namespace = o.namespace.clone();
    m.name = o.name.clone();
    if m.deletion_timestamp.is_none() {
        m.deletion_timestamp = o.deletion_timestamp;
        m.deletion_grace_period_seconds = o.deletion_grace_period_seconds;
    }
    m.generation = if bump { o.generation + 1 } else { o.generation };
}

/// How a delete is carried out.
#[derive(Debug, Clone, PartialEq)]
pub enum Deletion {
    /// Remove the key now.
    Now,
    /// Write this copy (deletion timestamp set); the object goes once its
    /// node reports the pod stopped.
    Graceful(Box<Object>),
    /// Already being deleted: nothing to do.
    AlreadyDeleting,
}

/// A pod bound to a node is deleted gracefully (its node stops the
/// containers first and then reports it gone); everything else goes now.
pub fn deletion(obj: &Object, now: Time) -> Deletion {
    if obj.meta().is_deleting() {
        return Deletion::AlreadyDeleting;
    }
    match obj {
        Object::Pod(p) if p.node().is_some() => {
            let mut copy = p.clone();
            copy.metadata.deletion_timestamp = Some(now);
            copy.metadata.deletion_grace_period_seconds =
                Some(p.spec.termination_grace_period_seconds);
            Deletion::Graceful(Box::new(Object::Pod(copy)))
        }
        _ => Deletion::Now,
    }
}

/// Like [`deletion`], with the caller's grace period (Kubernetes'
/// `deleteOptions.gracePeriodSeconds`: an eviction's, `delete
/// --grace-period`) recorded as the pod's `deletionGracePeriodSeconds` in
/// place of its own `terminationGracePeriodSeconds`. The node stops the
/// pod's containers with it.
pub fn deletion_with_grace(obj: &Object, now: Time, grace_seconds: Option<i64>) -> Deletion {
    match deletion(obj, now) {
        Deletion::Graceful(mut obj) => {
            if let (Some(g), Object::Pod(p)) = (grace_seconds, obj.as_mut()) {
                p.metadata.deletion_grace_period_seconds = Some(g.max(0));
            }
            Deletion::Graceful(obj)
        }
        other => other,
    }
}

/// `kind/name`, or `kind/namespace/name` outside the default namespace:
/// how events and messages name an object.
pub fn object_ref(kind: Kind, namespace: &str, name: &str) -> String {
    let k = kind.name().to_lowercase();
    if namespace.is_empty() || namespace == DEFAULT_NAMESPACE {
        format!("{k}/{name}")
    } else {
        format!("{k}/{namespace}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::pod::{Container, PodSpec};
    use crate::api::{ObjectMeta, Pod};

    fn pod(node: &str) -> Object {
        Object::Pod(Pod {
            metadata: ObjectMeta {
                generate_name: "web-".into(),
                ..ObjectMeta::default()
            },
            spec: PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: "i:1".into(),
                    ..Container::default()
                }],
                node_name: node.into(),
                ..PodSpec::default()
            },
            status: Default::default(),
        })
    }

    #[test]
    fn create_update_delete() {
        let mut p = pod("");
        prepare_create(&mut p, Time(5));
        let m = p.meta();
        assert!(m.name.starts_with("web-") && m.name.len() == 9);
        assert_eq!(m.namespace, "default");
        assert_eq!(m.generation, 1);
        assert_eq!(m.uid.len(), 36);
        // A status-only change keeps the generation; a spec change bumps it.
        let mut status_only = p.clone();
        if let Object::Pod(x) = &mut status_only {
            x.status.pod_ip = "10.1.1.1".into();
            x.metadata.uid = "forged".into();
        }
        prepare_update(&p, &mut status_only);
        assert_eq!(status_only.meta().generation, 1);
        assert_eq!(status_only.meta().uid, p.meta().uid);
        let mut spec = p.clone();
        if let Object::Pod(x) = &mut spec {
            x.spec.containers[0].image = "i:2".into();
        }
        prepare_update(&p, &mut spec);
        assert_eq!(spec.meta().generation, 2);
        // Unbound pods go at once; bound ones wait for their node.
        assert_eq!(deletion(&p, Time(9)), Deletion::Now);
        let mut bound = pod("n1");
        prepare_create(&mut bound, Time(5));
        let Deletion::Graceful(g) = deletion(&bound, Time(9)) else {
            panic!("bound pods are deleted gracefully")
        };
        assert_eq!(g.meta().deletion_timestamp, Some(Time(9)));
        assert_eq!(deletion(&g, Time(10)), Deletion::AlreadyDeleting);
        assert_eq!(object_ref(Kind::Pod, "default", "a"), "pod/a");
        assert_eq!(
            object_ref(Kind::Deployment, "prod", "a"),
            "deployment/prod/a"
        );
    }
}
