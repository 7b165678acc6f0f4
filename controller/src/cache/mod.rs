//! The controllers' view of the store: every object decoded once, indexed,
//! and kept current from one watch.
//!
//! Flow in: [`Cache::load`] lists everything at a revision, then
//! [`Cache::apply`] folds in each batch of watch events (in revision
//! order) and returns the [`Change`]s it made, which the control loop fans
//! out to the controllers' work queues, the scheduler and the agents'
//! sessions. Flow out: typed, read-only lookups with indexes (pods by node,
//! by owner, by label), so no decision scans every pod.
//!
//! Objects are held in `Arc`s: a change hands out the old and new copies
//! without cloning them.

use crate::api::{self, Kind, Object};
use crate::registry::NodeRecord;
use crate::store::{keys, Revision, Store, StoreError, WatchEvent, WatchEventKind};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// A cached object of any kind, nodes included.
#[derive(Debug, Clone)]
pub enum Cached {
    Pod(Arc<api::Pod>),
    ReplicaSet(Arc<api::ReplicaSet>),
    Deployment(Arc<api::Deployment>),
    Service(Arc<api::Service>),
    Endpoints(Arc<api::Endpoints>),
    PriorityClass(Arc<api::PriorityClass>),
    Node(Arc<NodeRecord>),
    PodDisruptionBudget(Arc<api::PodDisruptionBudget>),
}

impl Cached {
    pub fn kind(&self) -> Kind {
        match self {
            Cached::Pod(_) => Kind::Pod,
            Cached::ReplicaSet(_) => Kind::ReplicaSet,
            Cached::Deployment(_) => Kind::Deployment,
            Cached::Service(_) => Kind::Service,
            Cached::Endpoints(_) => Kind::Endpoints,
            Cached::PriorityClass(_) => Kind::PriorityClass,
            Cached::Node(_) => Kind::Node,
            Cached::PodDisruptionBudget(_) => Kind::PodDisruptionBudget,
        }
    }

    /// Object metadata (nodes have none of their own here).
    pub fn meta(&self) -> Option<&api::ObjectMeta> {
        Some(match self {
            Cached::Pod(o) => &o.metadata,
            Cached::ReplicaSet(o) => &o.metadata,
            Cached::Deployment(o) => &o.metadata,
            Cached::Service(o) => &o.metadata,
            Cached::Endpoints(o) => &o.metadata,
            Cached::PriorityClass(o) => &o.metadata,
            Cached::PodDisruptionBudget(o) => &o.metadata,
            Cached::Node(_) => return None,
        })
    }

    pub fn as_pod(&self) -> Option<&Arc<api::Pod>> {
        match self {
            Cached::Pod(p) => Some(p),
            _ => None,
        }
    }

    pub fn as_node(&self) -> Option<&Arc<NodeRecord>> {
        match self {
            Cached::Node(n) => Some(n),
            _ => None,
        }
    }

    fn from_object(o: Object) -> Cached {
        match o {
            Object::Pod(o) => Cached::Pod(Arc::new(o)),
            Object::ReplicaSet(o) => Cached::ReplicaSet(Arc::new(o)),
            Object::Deployment(o) => Cached::Deployment(Arc::new(o)),
            Object::Service(o) => Cached::Service(Arc::new(o)),
            Object::Endpoints(o) => Cached::Endpoints(Arc::new(o)),
            Object::PriorityClass(o) => Cached::PriorityClass(Arc::new(o)),
            Object::PodDisruptionBudget(o) => Cached::PodDisruptionBudget(Arc::new(o)),
        }
    }
}

/// One change the cache applied: `old` absent for an add, `new` absent for
/// a delete.
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: Kind,
    /// `namespace/name` (or `name`).
    pub key: String,
    pub revision: Revision,
    pub old: Option<Cached>,
    pub new: Option<Cached>,
}

impl Change {
    /// The newest copy (the deleted one for a delete).
    pub fn object(&self) -> Option<&Cached> {
        self.new.as_ref().or(self.old.as_ref())
    }
}

/// One kind's objects by cache key.
type Map<T> = HashMap<String, Arc<T>>;

/// Where a pod's agent-visible desired state last changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DesiredMark {
    revision: Revision,
    generation: i64,
    deleting: bool,
    bound: bool,
}

/// The cache.
#[derive(Debug, Default)]
pub struct Cache {
    revision: Revision,
    pods: Map<api::Pod>,
    replicasets: Map<api::ReplicaSet>,
    deployments: Map<api::Deployment>,
    services: Map<api::Service>,
    endpoints: Map<api::Endpoints>,
    priority_classes: Map<api::PriorityClass>,
    nodes: Map<NodeRecord>,
    /// The revision each node's record was created at: the start of that
    /// node's incarnation (a node deleted and enrolled again under the same
    /// name is created anew), which agent acknowledgements are checked
    /// against ([`crate::agents::desired_for`]).
    node_created: HashMap<String, Revision>,
    pdbs: Map<api::PodDisruptionBudget>,
    /// PodDisruptionBudgets by namespace (a pod change looks only at its
    /// namespace's budgets).
    pdbs_by_namespace: HashMap<String, BTreeSet<String>>,
    pods_by_node: HashMap<String, BTreeSet<String>>,
    /// Pods without a node, not being deleted: the scheduler's work.
    unbound: BTreeSet<String>,
    /// Dependents by owner uid, per kind.
    by_owner: HashMap<(Kind, String), BTreeSet<String>>,
    /// Pods by `key=value` label.
    pods_by_label: HashMap<(String, String), BTreeSet<String>>,
    /// Services and ReplicaSets by one `key=value` pair of their selector
    /// (the first), with their namespace: every object whose selector can
    /// match a label set is filed under a pair that set must contain.
    by_selector: HashMap<SelectorPair, BTreeSet<String>>,
    /// ReplicaSets whose selector has only `matchExpressions`, by namespace
    /// (matched by scanning them).
    unindexed_selectors: HashMap<(Kind, String), BTreeSet<String>>,
    desired: HashMap<String, DesiredMark>,
    /// Objects that failed to decode (logged once each).
    pub decode_errors: u64,
}

/// (kind, namespace, label key, label value).
type SelectorPair = (Kind, String, String, String);

/// Where an object is filed in the selector index.
enum SelectorSlot {
    /// Under this `key=value` pair of its selector.
    Pair(String, String),
    /// Its selector has no pairs but still selects something: scanned.
    Scan,
}

/// The selector index slot of an object; none for objects that select
/// nothing.
fn selector_slot(c: &Cached) -> Option<SelectorSlot> {
    match c {
        // A Service without selector has no endpoints kept for it.
        Cached::Service(s) => s
            .spec
            .selector
            .iter()
            .next()
            .map(|(k, v)| SelectorSlot::Pair(k.clone(), v.clone())),
        // An empty selector is refused by validation; it selects nothing here.
        Cached::ReplicaSet(rs) if rs.spec.selector.is_empty() => None,
        Cached::ReplicaSet(rs) => Some(
            rs.spec
                .selector
                .match_labels
                .iter()
                .next()
                .map_or(SelectorSlot::Scan, |(k, v)| {
                    SelectorSlot::Pair(k.clone(), v.clone())
                }),
        ),
        _ => None,
    }
}

fn owner_uids(meta: &api::ObjectMeta) -> impl Iterator<Item = &str> {
    meta.owner_references.iter().map(|r| r.uid.as_str())
}

impl Cache {
    /// Lists everything under `/registry/` from the store.
    pub fn load(store: &dyn Store) -> Result<Cache, StoreError> {
        let list = store.list(keys::REGISTRY)?;
        let mut cache = Cache::default();
        let events: Vec<WatchEvent> = list
            .kvs
            .into_iter()
            .map(|kv| WatchEvent {
                kind: WatchEventKind::Put,
                kv,
            })
            .collect();
        cache.apply(&events);
        cache.revision = list.revision;
        Ok(cache)
    }

    /// The revision the cache reflects.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Folds in watch events; returns what changed.
    pub fn apply(&mut self, events: &[WatchEvent]) -> Vec<Change> {
        let mut out = Vec::with_capacity(events.len());
        for ev in events {
            self.revision = self.revision.max(ev.revision());
            let Some((resource, ns, name)) = keys::parse_object(&ev.kv.key) else {
                continue;
            };
            let Some(kind) = Kind::of_resource(resource) else {
                continue;
            };
            let key = api::ns_name(ns, name);
            let new = match ev.kind {
                WatchEventKind::Delete => None,
                WatchEventKind::Put => {
                    match self.decode(kind, &ev.kv.key, &ev.kv.value, ev.kv.mod_revision) {
                        Some(c) => Some(c),
                        None => continue,
                    }
                }
            };
            let old = self.remove(kind, &key);
            if let Some(n) = &new {
                self.insert(kind, &key, n.clone(), ev.revision());
            } else {
                self.desired.remove(&key);
            }
            if kind == Kind::Node {
                match &new {
                    Some(_) => self.node_created.insert(key.clone(), ev.kv.create_revision),
                    None => self.node_created.remove(&key),
                };
            }
            out.push(Change {
                kind,
                key,
                revision: ev.revision(),
                old,
                new,
            });
        }
        out
    }

    fn decode(&mut self, kind: Kind, key: &str, bytes: &[u8], rev: Revision) -> Option<Cached> {
        let r = if kind == Kind::Node {
            serde_json::from_slice::<NodeRecord>(bytes)
                .map(|n| Cached::Node(Arc::new(n)))
                .map_err(|e| e.to_string())
        } else {
            Object::decode(kind, bytes, rev).map(Cached::from_object)
        };
        match r {
            Ok(c) => Some(c),
            Err(e) => {
                self.decode_errors += 1;
                tracing::error!(%key, "stored object is unreadable and is ignored: {e}");
                None
            }
        }
    }

    fn insert(&mut self, kind: Kind, key: &str, c: Cached, rev: Revision) {
        if let Some(meta) = c.meta() {
            for uid in owner_uids(meta) {
                self.by_owner
                    .entry((kind, uid.to_string()))
                    .or_default()
                    .insert(key.to_string());
            }
            match selector_slot(&c) {
                Some(SelectorSlot::Pair(k, v)) => {
                    self.by_selector
                        .entry((kind, meta.namespace.clone(), k, v))
                        .or_default()
                        .insert(key.to_string());
                }
                Some(SelectorSlot::Scan) => {
                    self.unindexed_selectors
                        .entry((kind, meta.namespace.clone()))
                        .or_default()
                        .insert(key.to_string());
                }
                None => {}
            }
        }
        match c {
            Cached::Pod(p) => {
                match p.node() {
                    Some(n) => {
                        self.pods_by_node
                            .entry(n.to_string())
                            .or_default()
                            .insert(key.to_string());
                    }
                    None if !p.metadata.is_deleting() => {
                        self.unbound.insert(key.to_string());
                    }
                    None => {}
                }
                for (k, v) in &p.metadata.labels {
                    self.pods_by_label
                        .entry((k.clone(), v.clone()))
                        .or_default()
                        .insert(key.to_string());
                }
                let mark = DesiredMark {
                    revision: rev,
                    generation: p.metadata.generation,
                    deleting: p.metadata.is_deleting(),
                    bound: p.node().is_some(),
                };
                // Status writes do not change what the agent runs: keep the
                // revision of the last change the agent must hear about.
                let keep = self.desired.get(key).is_some_and(|m| {
                    m.generation == mark.generation
                        && m.deleting == mark.deleting
                        && m.bound == mark.bound
                });
                if !keep {
                    self.desired.insert(key.to_string(), mark);
                }
                self.pods.insert(key.to_string(), p);
            }
            Cached::ReplicaSet(o) => {
                self.replicasets.insert(key.to_string(), o);
            }
            Cached::Deployment(o) => {
                self.deployments.insert(key.to_string(), o);
            }
            Cached::Service(o) => {
                self.services.insert(key.to_string(), o);
            }
            Cached::Endpoints(o) => {
                self.endpoints.insert(key.to_string(), o);
            }
            Cached::PriorityClass(o) => {
                self.priority_classes.insert(key.to_string(), o);
            }
            Cached::Node(o) => {
                self.nodes.insert(key.to_string(), o);
            }
            Cached::PodDisruptionBudget(o) => {
                self.pdbs_by_namespace
                    .entry(o.metadata.namespace.clone())
                    .or_default()
                    .insert(key.to_string());
                self.pdbs.insert(key.to_string(), o);
            }
        }
    }

    fn remove(&mut self, kind: Kind, key: &str) -> Option<Cached> {
        let old = match kind {
            Kind::Pod => self.pods.remove(key).map(Cached::Pod),
            Kind::ReplicaSet => self.replicasets.remove(key).map(Cached::ReplicaSet),
            Kind::Deployment => self.deployments.remove(key).map(Cached::Deployment),
            Kind::Service => self.services.remove(key).map(Cached::Service),
            Kind::Endpoints => self.endpoints.remove(key).map(Cached::Endpoints),
            Kind::PriorityClass => self.priority_classes.remove(key).map(Cached::PriorityClass),
            Kind::Node => self.nodes.remove(key).map(Cached::Node),
            Kind::PodDisruptionBudget => self.pdbs.remove(key).map(Cached::PodDisruptionBudget),
        }?;
        if let Cached::PodDisruptionBudget(b) = &old {
            let ns = &b.metadata.namespace;
            if let Some(set) = self.pdbs_by_namespace.get_mut(ns) {
                set.remove(key);
                if set.is_empty() {
                    self.pdbs_by_namespace.remove(ns);
                }
            }
        }
        if let Some(meta) = old.meta() {
            for uid in owner_uids(meta) {
                let k = (kind, uid.to_string());
                if let Some(set) = self.by_owner.get_mut(&k) {
                    set.remove(key);
                    if set.is_empty() {
                        self.by_owner.remove(&k);
                    }
                }
            }
            match selector_slot(&old) {
                Some(SelectorSlot::Pair(k, v)) => {
                    let slot = (kind, meta.namespace.clone(), k, v);
                    if let Some(set) = self.by_selector.get_mut(&slot) {
                        set.remove(key);
                        if set.is_empty() {
                            self.by_selector.remove(&slot);
                        }
                    }
                }
                Some(SelectorSlot::Scan) => {
                    let slot = (kind, meta.namespace.clone());
                    if let Some(set) = self.unindexed_selectors.get_mut(&slot) {
                        set.remove(key);
                        if set.is_empty() {
                            self.unindexed_selectors.remove(&slot);
                        }
                    }
                }
                None => {}
            }
        }
        if let Cached::Pod(p) = &old {
            if let Some(n) = p.node() {
                if let Some(set) = self.pods_by_node.get_mut(n) {
                    set.remove(key);
                    if set.is_empty() {
                        self.pods_by_node.remove(n);
                    }
                }
            }
            self.unbound.remove(key);
            for (k, v) in &p.metadata.labels {
                let lk = (k.clone(), v.clone());
                if let Some(set) = self.pods_by_label.get_mut(&lk) {
                    set.remove(key);
                    if set.is_empty() {
                        self.pods_by_label.remove(&lk);
                    }
                }
            }
        }
        Some(old)
    }

    // ---- lookups ----

    pub fn pod(&self, key: &str) -> Option<&Arc<api::Pod>> {
        self.pods.get(key)
    }

    pub fn pods(&self) -> impl Iterator<Item = &Arc<api::Pod>> {
        self.pods.values()
    }

    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// Pods bound to `node` (Terminating ones included).
    pub fn pods_on<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a Arc<api::Pod>> + 'a {
        self.pods_by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k))
    }

    pub fn pod_count_on(&self, node: &str) -> usize {
        self.pods_by_node.get(node).map_or(0, BTreeSet::len)
    }

    /// Keys of pods waiting for a node.
    pub fn unbound_pods(&self) -> impl Iterator<Item = &String> {
        self.unbound.iter()
    }

    /// Keys of `kind` objects with an owner reference to `uid`.
    pub fn owned_by(&self, kind: Kind, uid: &str) -> impl Iterator<Item = &String> {
        self.by_owner
            .get(&(kind, uid.to_string()))
            .into_iter()
            .flatten()
    }

    /// Pods owned by `uid`.
    pub fn pods_owned_by<'a>(&'a self, uid: &str) -> impl Iterator<Item = &'a Arc<api::Pod>> + 'a {
        self.owned_by(Kind::Pod, uid)
            .filter_map(|k| self.pods.get(k))
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// Pods in `namespace` whose labels match `selector`, found through the
    /// label index (the smallest set of one of its `matchLabels`), never by
    /// scanning every pod unless the selector has no `matchLabels`.
    pub fn pods_matching<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a crate::api::selector::LabelSelector,
    ) -> Vec<&'a Arc<api::Pod>> {
        let candidates: Box<dyn Iterator<Item = &String>> = match selector
            .match_labels
            .iter()
            .filter_map(|(k, v)| self.pods_by_label.get(&(k.clone(), v.clone())))
            .min_by_key(|s| s.len())
        {
            Some(set) => Box::new(set.iter()),
            None if !selector.match_labels.is_empty() => Box::new(std::iter::empty()),
            None => Box::new(self.pods.keys()),
        };
        candidates
            .filter_map(|k| self.pods.get(k))
            .filter(|p| p.metadata.namespace == namespace && selector.matches(&p.metadata.labels))
            .collect()
    }

    /// Pods in `namespace` whose labels contain every pair of `labels`
    /// (a Service selector).
    pub fn pods_with_labels<'a>(
        &'a self,
        namespace: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) -> Vec<&'a Arc<api::Pod>> {
        let Some(smallest) = labels
            .iter()
            .map(|(k, v)| self.pods_by_label.get(&(k.clone(), v.clone())))
            .min_by_key(|s| s.map_or(0, BTreeSet::len))
            .flatten()
        else {
            return Vec::new();
        };
        smallest
            .iter()
            .filter_map(|k| self.pods.get(k))
            .filter(|p| {
                p.metadata.namespace == namespace
                    && labels
                        .iter()
                        .all(|(k, v)| p.metadata.labels.get(k) == Some(v))
            })
            .collect()
    }

    /// Candidates among the `kind` objects (Services, ReplicaSets) in
    /// `namespace` whose selector may match `labels`, from the selector
    /// index: every object that does match is among them; callers match
    /// each candidate's selector themselves.
    fn selector_candidates<'a>(
        &'a self,
        kind: Kind,
        namespace: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a String> + 'a {
        let indexed = labels.iter().flat_map(move |(k, v)| {
            self.by_selector
                .get(&(kind, namespace.to_string(), k.clone(), v.clone()))
                .into_iter()
                .flatten()
        });
        let scanned = self
            .unindexed_selectors
            .get(&(kind, namespace.to_string()))
            .into_iter()
            .flatten();
        indexed.chain(scanned)
    }

    /// Services in `namespace` whose selector matches `labels` (a pod's),
    /// found through the selector index, never by scanning every Service.
    /// Services without a selector match nothing.
    pub fn services_selecting<'a>(
        &'a self,
        namespace: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) -> Vec<&'a Arc<api::Service>> {
        self.selector_candidates(Kind::Service, namespace, labels)
            .filter_map(|k| self.services.get(k))
            .filter(|s| {
                s.spec
                    .selector
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect()
    }

    /// ReplicaSets in `namespace` whose (non-empty) selector matches
    /// `labels`, found through the selector index.
    pub fn replicasets_selecting<'a>(
        &'a self,
        namespace: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) -> Vec<&'a Arc<api::ReplicaSet>> {
        self.selector_candidates(Kind::ReplicaSet, namespace, labels)
            .filter_map(|k| self.replicasets.get(k))
            .filter(|rs| rs.spec.selector.matches(labels))
            .collect()
    }

    pub fn replicaset(&self, key: &str) -> Option<&Arc<api::ReplicaSet>> {
        self.replicasets.get(key)
    }

    pub fn replicasets(&self) -> impl Iterator<Item = &Arc<api::ReplicaSet>> {
        self.replicasets.values()
    }

    pub fn replicasets_owned_by<'a>(&'a self, uid: &str) -> Vec<&'a Arc<api::ReplicaSet>> {
        self.owned_by(Kind::ReplicaSet, uid)
            .filter_map(|k| self.replicasets.get(k))
            .collect()
    }

    pub fn deployment(&self, key: &str) -> Option<&Arc<api::Deployment>> {
        self.deployments.get(key)
    }

    pub fn deployments(&self) -> impl Iterator<Item = &Arc<api::Deployment>> {
        self.deployments.values()
    }

    pub fn service(&self, key: &str) -> Option<&Arc<api::Service>> {
        self.services.get(key)
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<api::Service>> {
        self.services.values()
    }

    pub fn endpoints(&self, key: &str) -> Option<&Arc<api::Endpoints>> {
        self.endpoints.get(key)
    }

    pub fn all_endpoints(&self) -> impl Iterator<Item = &Arc<api::Endpoints>> {
        self.endpoints.values()
    }

    pub fn priority_class(&self, name: &str) -> Option<&Arc<api::PriorityClass>> {
        self.priority_classes.get(name)
    }

    pub fn priority_classes(&self) -> impl Iterator<Item = &Arc<api::PriorityClass>> {
        self.priority_classes.values()
    }

    pub fn pdb(&self, key: &str) -> Option<&Arc<api::PodDisruptionBudget>> {
        self.pdbs.get(key)
    }

    /// PodDisruptionBudgets of `namespace`, in name order.
    pub fn pdbs_in<'a>(
        &'a self,
        namespace: &str,
    ) -> impl Iterator<Item = &'a Arc<api::PodDisruptionBudget>> + 'a {
        self.pdbs_by_namespace
            .get(namespace)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pdbs.get(k))
    }

    /// The budgets covering a pod with these labels in `namespace`.
    pub fn pdbs_selecting<'a>(
        &'a self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<&'a Arc<api::PodDisruptionBudget>> {
        self.pdbs_in(namespace)
            .filter(|b| b.selects(labels))
            .collect()
    }

    pub fn node(&self, name: &str) -> Option<&Arc<NodeRecord>> {
        self.nodes.get(name)
    }

    /// The revision `name`'s current incarnation was created at.
    pub fn node_created(&self, name: &str) -> Option<Revision> {
        self.node_created.get(name).copied()
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Arc<NodeRecord>> {
        self.nodes.values()
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Any cached object by kind and cache key, as its API object.
    pub fn object(&self, kind: Kind, key: &str) -> Option<Object> {
        Some(match kind {
            Kind::Pod => Object::Pod((**self.pods.get(key)?).clone()),
            Kind::ReplicaSet => Object::ReplicaSet((**self.replicasets.get(key)?).clone()),
            Kind::Deployment => Object::Deployment((**self.deployments.get(key)?).clone()),
            Kind::Service => Object::Service((**self.services.get(key)?).clone()),
            Kind::Endpoints => Object::Endpoints((**self.endpoints.get(key)?).clone()),
            Kind::PriorityClass => {
                Object::PriorityClass((**self.priority_classes.get(key)?).clone())
            }
            Kind::PodDisruptionBudget => {
                Object::PodDisruptionBudget((**self.pdbs.get(key)?).clone())
            }
            Kind::Node => return None,
        })
    }

    /// How many objects of `kind` there are.
    pub fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::Pod => self.pods.len(),
            Kind::ReplicaSet => self.replicasets.len(),
            Kind::Deployment => self.deployments.len(),
            Kind::Service => self.services.len(),
            Kind::Endpoints => self.endpoints.len(),
            Kind::PriorityClass => self.priority_classes.len(),
            Kind::Node => self.nodes.len(),
            Kind::PodDisruptionBudget => self.pdbs.len(),
        }
    }

    /// Cache keys of every object of `kind`, sorted (nodes included).
    pub fn keys(&self, kind: Kind) -> Vec<String> {
        let mut v: Vec<String> = match kind {
            Kind::Pod => self.pods.keys().cloned().collect(),
            Kind::ReplicaSet => self.replicasets.keys().cloned().collect(),
            Kind::Deployment => self.deployments.keys().cloned().collect(),
            Kind::Service => self.services.keys().cloned().collect(),
            Kind::Endpoints => self.endpoints.keys().cloned().collect(),
            Kind::PriorityClass => self.priority_classes.keys().cloned().collect(),
            Kind::Node => self.nodes.keys().cloned().collect(),
            Kind::PodDisruptionBudget => self.pdbs.keys().cloned().collect(),
        };
        v.sort();
        v
    }

    /// The revision at which the part of this pod its node runs last
    /// changed (spec generation or deletion), for the agent's deltas.
    pub fn desired_revision(&self, key: &str) -> Option<Revision> {
        self.desired.get(key).map(|m| m.revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::pod::{Container, PodSpec};
    use crate::api::ObjectMeta;
    use crate::api::Resource;
    use crate::store::mem::MemStore;
    use crate::store::{Op, Txn};

    fn pod(name: &str, node: &str, labels: &[(&str, &str)], owner: Option<&str>) -> api::Pod {
        let mut meta = ObjectMeta::named("default", name);
        meta.uid = format!("uid-{name}");
        meta.generation = 1;
        for (k, v) in labels {
            meta.labels.insert(k.to_string(), v.to_string());
        }
        if let Some(o) = owner {
            meta.owner_references.push(api::OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: o.into(),
                uid: o.into(),
                controller: true,
                block_owner_deletion: true,
            });
        }
        api::Pod {
            metadata: meta,
            spec: PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: "i".into(),
                    ..Container::default()
                }],
                node_name: node.into(),
                ..PodSpec::default()
            },
            status: Default::default(),
        }
    }

    fn put(s: &MemStore, p: &api::Pod) {
        s.txn(Txn::ops(vec![Op::put(
            p.key(),
            Object::Pod(p.clone()).to_stored(),
        )]))
        .unwrap();
    }

    #[test]
    fn indexes_follow_the_watch() {
        let s = MemStore::new();
        put(&s, &pod("a", "n1", &[("app", "web")], Some("rs1")));
        let mut cache = Cache::load(&s).unwrap();
        let mut w = s.watch(keys::REGISTRY, cache.revision() + 1);
        put(&s, &pod("b", "", &[("app", "web")], Some("rs1")));
        put(&s, &pod("c", "n2", &[("app", "db")], None));
        let changes = cache.apply(&w.poll(100).unwrap());
        assert_eq!(changes.len(), 2);
        assert!(changes.iter().all(|c| c.old.is_none()));
        assert_eq!(cache.pods_on("n1").count(), 1);
        assert_eq!(cache.unbound_pods().collect::<Vec<_>>(), ["default/b"]);
        assert_eq!(cache.pods_owned_by("rs1").count(), 2);
        let sel = crate::api::selector::LabelSelector::from_labels(
            [("app".to_string(), "web".to_string())].into(),
        );
        assert_eq!(cache.pods_matching("default", &sel).len(), 2);
        assert!(cache.pods_matching("other", &sel).is_empty());
        // Binding b moves it from unbound to its node; deleting a clears it
        // from every index.
        put(&s, &pod("b", "n1", &[("app", "web")], Some("rs1")));
        s.delete(&pod("a", "", &[], None).key()).unwrap();
        let changes = cache.apply(&w.poll(100).unwrap());
        assert!(changes[1].new.is_none() && changes[1].old.is_some());
        assert_eq!(cache.unbound_pods().count(), 0);
        let on_n1: Vec<&str> = cache
            .pods_on("n1")
            .map(|p| p.metadata.name.as_str())
            .collect();
        assert_eq!(on_n1, ["b"]);
        assert_eq!(cache.pods_owned_by("rs1").count(), 1);
        assert_eq!(cache.pods_matching("default", &sel).len(), 1);
        assert_eq!(cache.revision(), s.revision());
    }

    #[test]
    fn selector_index_finds_services_and_replicasets_for_labels() {
        use crate::api::selector::{LabelSelector, LabelSelectorRequirement, Operator};
        let s = MemStore::new();
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let put_obj = |o: Object| {
            s.txn(Txn::ops(vec![Op::put(o.key(), o.to_stored())]))
                .unwrap();
        };
        let svc = |ns: &str, name: &str, sel: &[(&str, &str)]| {
            let mut svc = api::Service {
                metadata: ObjectMeta::named(ns, name),
                ..api::Service::default()
            };
            svc.spec.selector = labels(sel);
            Object::Service(svc)
        };
        put_obj(svc("default", "web", &[("app", "web"), ("tier", "front")]));
        put_obj(svc("default", "all-web", &[("app", "web")]));
        put_obj(svc("other", "web", &[("app", "web")]));
        put_obj(svc("default", "manual", &[]));
        let rs = |name: &str, sel: LabelSelector| {
            Object::ReplicaSet(api::ReplicaSet {
                metadata: ObjectMeta::named("default", name),
                spec: api::apps::ReplicaSetSpec {
                    selector: sel,
                    ..Default::default()
                },
                ..Default::default()
            })
        };
        put_obj(rs(
            "web",
            LabelSelector::from_labels(labels(&[("app", "web")])),
        ));
        put_obj(rs(
            "by-expression",
            LabelSelector {
                match_labels: BTreeMap::new(),
                match_expressions: vec![LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: Operator::Exists,
                    values: vec![],
                }],
            },
        ));
        put_obj(rs("everything", LabelSelector::default()));
        let mut cache = Cache::load(&s).unwrap();
        let pod_labels = labels(&[("app", "web"), ("tier", "front")]);
        let mut names: Vec<&str> = cache
            .services_selecting("default", &pod_labels)
            .iter()
            .map(|s| s.metadata.name.as_str())
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["all-web", "web"]);
        assert_eq!(
            cache
                .services_selecting("default", &labels(&[("app", "db")]))
                .len(),
            0
        );
        let mut names: Vec<&str> = cache
            .replicasets_selecting("default", &pod_labels)
            .iter()
            .map(|r| r.metadata.name.as_str())
            .collect();
        names.sort_unstable();
        // An empty selector selects nothing here (validation refuses it).
        assert_eq!(names, ["by-expression", "web"]);
        // Deleting takes them out of the index.
        let mut w = s.watch(keys::REGISTRY, cache.revision() + 1);
        s.delete(&Kind::Service.key("default", "all-web")).unwrap();
        s.delete(&Kind::ReplicaSet.key("default", "by-expression"))
            .unwrap();
        cache.apply(&w.poll(10).unwrap());
        assert_eq!(cache.services_selecting("default", &pod_labels).len(), 1);
        assert_eq!(cache.replicasets_selecting("default", &pod_labels).len(), 1);
        assert!(cache.by_selector.values().all(|set| !set.is_empty()));
        assert!(cache.unindexed_selectors.is_empty());
    }

    #[test]
    fn status_writes_keep_the_desired_revision() {
        let s = MemStore::new();
        let mut p = pod("a", "n1", &[], None);
        put(&s, &p);
        let mut cache = Cache::load(&s).unwrap();
        let first = cache.desired_revision("default/a").unwrap();
        let mut w = s.watch(keys::REGISTRY, cache.revision() + 1);
        p.status.pod_ip = "10.0.0.1".into();
        put(&s, &p);
        cache.apply(&w.poll(10).unwrap());
        assert_eq!(cache.desired_revision("default/a"), Some(first));
        p.metadata.generation = 2;
        put(&s, &p);
        cache.apply(&w.poll(10).unwrap());
        assert_eq!(cache.desired_revision("default/a"), Some(s.revision()));
    }
}
