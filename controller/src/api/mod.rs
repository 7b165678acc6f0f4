//! The object model: every kind Outpost stores, in Kubernetes' JSON shape
//! (`metadata`, `spec`, `status`), and the table of kinds that names them.
//!
//! Flow: operator manifests are validated into these types (`validate`),
//! written to the store as JSON, read back through the cache by the
//! controllers and the scheduler, and rendered by `outpostctl` from the same
//! JSON. A new kind is a type here, its entry in [`Kind`], its validation,
//! its controller and its table columns.

pub mod admission;
pub mod apps;
pub mod machinery;
pub mod meta;
pub mod pod;
pub mod policy;
pub mod resources;
pub mod scheduling;
pub mod selector;
pub mod service;
pub mod validate;

pub use apps::{Deployment, ReplicaSet};
pub use meta::{ObjectMeta, OwnerReference, Time, DEFAULT_NAMESPACE};
pub use pod::Pod;
pub use policy::PodDisruptionBudget;
pub use scheduling::PriorityClass;
pub use service::{Endpoints, Service};

use crate::store::keys;
use serde::{de::DeserializeOwned, Serialize};

/// Every kind the API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Pod,
    ReplicaSet,
    Deployment,
    Service,
    Endpoints,
    PriorityClass,
    Node,
    PodDisruptionBudget,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Pod,
        Kind::ReplicaSet,
        Kind::Deployment,
        Kind::Service,
        Kind::Endpoints,
        Kind::PriorityClass,
        Kind::Node,
        Kind::PodDisruptionBudget,
    ];

    /// `Pod`, `Deployment`, ...
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Deployment => "Deployment",
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::PriorityClass => "PriorityClass",
            Kind::Node => "Node",
            Kind::PodDisruptionBudget => "PodDisruptionBudget",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Pod | Kind::Service | Kind::Endpoints | Kind::Node => "v1",
            Kind::ReplicaSet | Kind::Deployment => "apps/v1",
            Kind::PriorityClass => "scheduling.k8s.io/v1",
            Kind::PodDisruptionBudget => "policy/v1",
        }
    }

    /// The plural resource name, as in URLs and store keys.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::ReplicaSet => "replicasets",
            Kind::Deployment => "deployments",
            Kind::Service => "services",
            Kind::Endpoints => "endpoints",
            Kind::PriorityClass => "priorityclasses",
            Kind::Node => "nodes",
            Kind::PodDisruptionBudget => "poddisruptionbudgets",
        }
    }

    /// `deployment.apps`, as kubectl prints it in `deployment.apps/web created`.
    pub fn qualified(self) -> String {
        let singular = self.name().to_lowercase();
        match self.api_version().split_once('/') {
            Some((group, _)) => format!("{singular}.{group}"),
            None => singular,
        }
    }

    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::Pod => &["po"],
            Kind::ReplicaSet => &["rs"],
            Kind::Deployment => &["deploy"],
            Kind::Service => &["svc"],
            Kind::Endpoints => &["ep"],
            Kind::PriorityClass => &["pc"],
            Kind::Node => &["no"],
            Kind::PodDisruptionBudget => &["pdb"],
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::PriorityClass | Kind::Node)
    }

    /// The kind an operator typed: singular, plural, short name, or the
    /// qualified form (`deployments.apps`), any case.
    pub fn parse(s: &str) -> Option<Kind> {
        let s = s.to_ascii_lowercase();
        let base = s.split_once('.').map_or(s.as_str(), |(b, _)| b);
        Kind::ALL.into_iter().find(|k| {
            let singular = k.name().to_ascii_lowercase();
            base == singular || base == k.resource() || k.short_names().contains(&base)
        })
    }

    /// The kind of `apiVersion` + `kind` in a manifest.
    pub fn of_manifest(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == kind && k.api_version() == api_version)
    }

    /// Store key of the object `namespace/name` of this kind.
    pub fn key(self, namespace: &str, name: &str) -> String {
        keys::object(
            self.resource(),
            if self.namespaced() { namespace } else { "" },
            name,
        )
    }

    /// Store prefix of this kind (in one namespace, or all).
    pub fn prefix(self, namespace: Option<&str>) -> String {
        keys::objects(
            self.resource(),
            if self.namespaced() { namespace } else { None },
        )
    }

    /// The kind whose objects live under this resource name.
    pub fn of_resource(resource: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.resource() == resource)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What every stored kind (Node aside: the registry owns it) provides.
pub trait Resource:
    Serialize + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static
{
    const KIND: Kind;
    fn meta(&self) -> &ObjectMeta;
    fn meta_mut(&mut self) -> &mut ObjectMeta;

    /// Store key of this object.
    fn key(&self) -> String {
        Self::KIND.key(&self.meta().namespace, &self.meta().name)
    }

    /// `namespace/name` (or `name` for cluster-scoped kinds): the cache key.
    fn ns_name(&self) -> String {
        ns_name(&self.meta().namespace, &self.meta().name)
    }
}

macro_rules! resource {
    ($t:ty, $k:expr) => {
        impl Resource for $t {
            const KIND: Kind = $k;
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

resource!(Pod, Kind::Pod);
resource!(ReplicaSet, Kind::ReplicaSet);
resource!(Deployment, Kind::Deployment);
resource!(Service, Kind::Service);
resource!(Endpoints, Kind::Endpoints);
resource!(PriorityClass, Kind::PriorityClass);
resource!(PodDisruptionBudget, Kind::PodDisruptionBudget);

/// The cache key of an object: `namespace/name`, or `name` when
/// cluster-scoped.
pub fn ns_name(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}

/// Splits a cache key back into (namespace, name).
pub fn split_ns_name(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// An object of any stored kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Pod(Pod),
    ReplicaSet(ReplicaSet),
    Deployment(Deployment),
    Service(Service),
    Endpoints(Endpoints),
    PriorityClass(PriorityClass),
    PodDisruptionBudget(PodDisruptionBudget),
}

macro_rules! each {
    ($self:expr, $o:ident => $e:expr) => {
        match $self {
            Object::Pod($o) => $e,
            Object::ReplicaSet($o) => $e,
            Object::Deployment($o) => $e,
            Object::Service($o) => $e,
            Object::Endpoints($o) => $e,
            Object::PriorityClass($o) => $e,
            Object::PodDisruptionBudget($o) => $e,
        }
    };
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Pod(_) => Kind::Pod,
            Object::ReplicaSet(_) => Kind::ReplicaSet,
            Object::Deployment(_) => Kind::Deployment,
            Object::Service(_) => Kind::Service,
            Object::Endpoints(_) => Kind::Endpoints,
            Object::PriorityClass(_) => Kind::PriorityClass,
            Object::PodDisruptionBudget(_) => Kind::PodDisruptionBudget,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        each!(self, o => &o.metadata)
    }

    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        each!(self, o => &mut o.metadata)
    }

    pub fn key(&self) -> String {
        self.kind().key(&self.meta().namespace, &self.meta().name)
    }

    /// The stored form: JSON without `resourceVersion` (the store's
    /// mod_revision is the truth; it is filled in on read).
    pub fn to_stored(&self) -> Vec<u8> {
        let mut copy = self.clone();
        copy.meta_mut().resource_version.clear();
        each!(&copy, o => serde_json::to_vec(o)).unwrap_or_default()
    }

    /// The API form: `apiVersion` and `kind` first, then the object.
    pub fn to_json(&self) -> serde_json::Value {
        let body = each!(self, o => serde_json::to_value(o)).unwrap_or_default();
        with_type(self.kind(), body)
    }

    /// Decodes a stored value of `kind`, stamping `resourceVersion`.
    pub fn decode(kind: Kind, bytes: &[u8], mod_revision: u64) -> Result<Object, String> {
        fn de<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
            serde_json::from_slice(b).map_err(|e| e.to_string())
        }
        let mut o = match kind {
            Kind::Pod => Object::Pod(de(bytes)?),
            Kind::ReplicaSet => Object::ReplicaSet(de(bytes)?),
            Kind::Deployment => Object::Deployment(de(bytes)?),
            Kind::Service => Object::Service(de(bytes)?),
            Kind::Endpoints => Object::Endpoints(de(bytes)?),
            Kind::PriorityClass => Object::PriorityClass(de(bytes)?),
            Kind::PodDisruptionBudget => Object::PodDisruptionBudget(de(bytes)?),
            Kind::Node => return Err("nodes are not decoded as objects".into()),
        };
        o.meta_mut().resource_version = mod_revision.to_string();
        Ok(o)
    }
}

/// `{"apiVersion": ..., "kind": ..., ...body}`.
pub fn with_type(kind: Kind, body: serde_json::Value) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("apiVersion".into(), kind.api_version().into());
    m.insert("kind".into(), kind.name().into());
    if let serde_json::Value::Object(b) = body {
        m.extend(b);
    }
    serde_json::Value::Object(m)
}

/// A fresh object uid (random, in the UUID text form Kubernetes uses).
pub fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_the_way_kubectl_does() {
        for (s, k) in [
            ("pods", Kind::Pod),
            ("po", Kind::Pod),
            ("Pod", Kind::Pod),
            ("deploy", Kind::Deployment),
            ("deployments.apps", Kind::Deployment),
            ("rs", Kind::ReplicaSet),
            ("svc", Kind::Service),
            ("ep", Kind::Endpoints),
            ("endpoints", Kind::Endpoints),
            ("priorityclasses", Kind::PriorityClass),
            ("no", Kind::Node),
            ("pdb", Kind::PodDisruptionBudget),
            ("poddisruptionbudgets", Kind::PodDisruptionBudget),
            ("poddisruptionbudget.policy", Kind::PodDisruptionBudget),
        ] {
            assert_eq!(Kind::parse(s), Some(k), "{s}");
        }
        assert_eq!(Kind::parse("statefulsets"), None);
        assert_eq!(Kind::Deployment.qualified(), "deployment.apps");
        assert_eq!(Kind::Pod.qualified(), "pod");
        assert_eq!(
            Kind::PriorityClass.qualified(),
            "priorityclass.scheduling.k8s.io"
        );
        assert_eq!(
            Kind::Pod.key("default", "web"),
            "/registry/pods/default/web"
        );
        assert_eq!(
            Kind::PriorityClass.key("default", "high"),
            "/registry/priorityclasses/high"
        );
        assert_eq!(
            Kind::of_manifest("apps/v1", "Deployment"),
            Some(Kind::Deployment)
        );
        assert_eq!(Kind::of_manifest("v1", "Deployment"), None);
        assert_eq!(
            Kind::of_manifest("policy/v1", "PodDisruptionBudget"),
            Some(Kind::PodDisruptionBudget)
        );
        assert_eq!(
            Kind::PodDisruptionBudget.qualified(),
            "poddisruptionbudget.policy"
        );
    }

    #[test]
    fn uids_look_like_uuids() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_ne!(u, new_uid());
    }
}
