//! The operator API over the object model: apply, get, list, delete,
//! watch and scale, one path for every kind.
//!
//! Flow: each manifest document is validated into a typed object (every
//! problem of every document reported at once, nothing written if any),
//! admitted against the cluster (priority classes, Service IPs, immutable
//! fields), merged with the stored object (status and identity kept) and
//! written in one batch of guarded transactions, so a concurrent change
//! makes the apply fail with a Conflict instead of being overwritten.
//! Reads come from the control loop's cache, after waiting until it has
//! caught up with the caller's own writes. Nodes are the exception: their
//! source is the registry (live lease and measurements), so they are read
//! there and changed through it (cordon, delete).
//!
//! Evictions go through [`crate::controllers::eviction::check`] over a
//! cache caught up with the store, and commit the pod's deletion and its
//! budget's new status in one guarded transaction; a guard that fails
//! (someone else changed either) is decided again.

use crate::api::admission::AdmissionConfig;
use crate::api::machinery::{self, object_ref, Deletion};
use crate::api::selector::Selector;
use crate::api::{self, Kind, Object, Time};
use crate::cache::Cache;
use crate::cluster::{err, now_ms, Controller};
use crate::controllers::eviction::{self, Allowed, Eviction, EvictionError};
use crate::store::{Compare, Op, Store, Txn};
use outpost_proto::{
    ApplyRequest, ApplyResult, DeleteRequest, ErrorCode, ErrorMsg, EvictRequest, ListRequest,
    ObjectList, ObjectRef, Propagation, ScaleRequest,
};
use std::sync::RwLock;
use std::time::Duration;

/// Items in one list page when the caller does not say (kubectl's chunk size).
pub const DEFAULT_PAGE: usize = 500;
/// Most items in one page: keeps a page under the frame limit.
pub const MAX_PAGE: usize = 1000;
/// How long an answer waits for the cache to show the caller's write.
const CATCH_UP: Duration = Duration::from_secs(5);

fn kind_of(s: &str) -> Result<Kind, ErrorMsg> {
    Kind::parse(s).ok_or_else(|| {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.resource()).collect();
        err(
            ErrorCode::InvalidRequest,
            format!(
                "the server doesn't have a resource type {s:?} (known: {})",
                known.join(", ")
            ),
        )
    })
}

fn namespace_of(kind: Kind, ns: &str) -> String {
    if !kind.namespaced() {
        String::new()
    } else if ns.is_empty() {
        api::DEFAULT_NAMESPACE.to_string()
    } else {
        ns.to_string()
    }
}

fn internal(e: impl std::fmt::Display) -> ErrorMsg {
    err(ErrorCode::Internal, e.to_string())
}

fn not_found(kind: Kind, ns: &str, name: &str) -> ErrorMsg {
    let ns = if kind.namespaced() && ns != api::DEFAULT_NAMESPACE {
        format!(" in namespace {ns:?}")
    } else {
        String::new()
    };
    err(
        ErrorCode::NotFound,
        format!("{} {name:?} not found{ns}", kind.qualified()),
    )
}

/// The stored object at `key`, fresh from the store (not the cache: a
/// write decides from what is committed).
fn stored(store: &dyn Store, kind: Kind, key: &str) -> Result<Option<Object>, ErrorMsg> {
    match store.get(key).map_err(internal)? {
        None => Ok(None),
        Some(kv) => Object::decode(kind, &kv.value, kv.mod_revision)
            .map(Some)
            .map_err(|e| internal(format!("stored {key} is unreadable: {e}"))),
    }
}

/// What apply will write for one document.
struct Plan {
    object: Object,
    /// Store revision the write is guarded by (0: must not exist).
    guard: u64,
    outcome: &'static str,
    warnings: Vec<String>,
}

/// Merges a manifest's object into the stored one: what the manifest says
/// replaces spec, labels and annotations; status, identity, owner
/// references and a binding the scheduler made stay.
fn merge(old: &Object, mut new: Object) -> Object {
    let o = old.meta();
    {
        let m = new.meta_mut();
        if m.owner_references.is_empty() {
            m.owner_references = o.owner_references.clone();
        }
        m.finalizers = o.finalizers.clone();
        m.resource_version = o.resource_version.clone();
    }
    match (old, &mut new) {
        (Object::Pod(o), Object::Pod(n)) => {
            n.status = o.status.clone();
            if n.spec.node_name.is_empty() {
                n.spec.node_name = o.spec.node_name.clone();
            }
            if n.spec.priority.is_none() {
                n.spec.priority = o.spec.priority;
            }
        }
        (Object::ReplicaSet(o), Object::ReplicaSet(n)) => n.status = o.status.clone(),
        (Object::Deployment(o), Object::Deployment(n)) => n.status = o.status.clone(),
        (Object::PodDisruptionBudget(o), Object::PodDisruptionBudget(n)) => {
            n.status = o.status.clone();
        }
        (Object::Service(o), Object::Service(n)) => {
            n.status = o.status.clone();
            if n.spec.cluster_ip.is_empty() {
                n.spec.cluster_ip = o.spec.cluster_ip.clone();
            }
            for p in &mut n.spec.ports {
                if p.node_port.is_none() {
                    p.node_port = o
                        .spec
                        .ports
                        .iter()
                        .find(|q| q.port == p.port && q.protocol == p.protocol)
                        .and_then(|q| q.node_port);
                }
            }
        }
        _ => {}
    }
    machinery::prepare_update(old, &mut new);
    new
}

/// The objects API without the network: what the operator calls decide,
/// over a store and the cache (also used by the in-memory cluster).
pub struct Objects<'a> {
    pub store: &'a dyn Store,
    pub cache: &'a RwLock<Cache>,
    pub admission: &'a AdmissionConfig,
}

/// A decided write and how to name it in messages.
pub struct Planned {
    pub txn: Txn,
    pub what: String,
}

impl Objects<'_> {
    /// Validates and admits the documents of an apply; returns what each
    /// does and the guarded writes (none for a dry run's caller to make).
    pub fn plan_apply(
        &self,
        req: &ApplyRequest,
        now: Time,
    ) -> Result<(Vec<ApplyResult>, Vec<Planned>), ErrorMsg> {
        if req.documents.is_empty() {
            return Err(err(ErrorCode::InvalidRequest, "no documents to apply"));
        }
        let mut problems = Vec::new();
        let mut validated = Vec::new();
        for doc in &req.documents {
            // Bounded before parsing: outpostctl refuses deeper manifests,
            // but the controller does not rely on the client for it.
            if crate::manifest::json_too_deep(&doc.json, crate::manifest::MAX_DEPTH) {
                problems.push(format!(
                    "{}: nested more than {} levels deep (Kubernetes objects need at most 13)",
                    doc.source,
                    crate::manifest::MAX_DEPTH
                ));
                continue;
            }
            let value: serde_json::Value = match serde_json::from_slice(&doc.json) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!("{}: not valid JSON: {e}", doc.source));
                    continue;
                }
            };
            match crate::api::validate::validate(&value) {
                Ok(v) => validated.push((doc.source.clone(), v)),
                Err(ps) => {
                    let name = crate::api::validate::document_name(&value);
                    for p in ps {
                        problems.push(format!("{}: {name}: {p}", doc.source));
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(err(ErrorCode::InvalidRequest, problems.join("\n")));
        }
        // Each object with its stored copy (read fresh from the store).
        struct Item {
            source: String,
            warnings: Vec<String>,
            kind: Kind,
            ns: String,
            name: String,
            old: Option<Object>,
        }
        let mut items = Vec::new();
        let mut objects = Vec::new();
        for (source, v) in validated {
            let mut obj = v.object;
            let kind = obj.kind();
            let ns = namespace_of(kind, &obj.meta().namespace);
            obj.meta_mut().namespace = ns.clone();
            let name = obj.meta().name.clone();
            let old = stored(self.store, kind, &kind.key(&ns, &name))?;
            if old.as_ref().is_some_and(|o| o.meta().is_deleting()) {
                problems.push(format!(
                    "{source}: {} is being deleted; wait until it is gone, then apply again",
                    object_ref(kind, &ns, &name)
                ));
            }
            objects.push(obj);
            items.push(Item {
                source,
                warnings: v.warnings,
                kind,
                ns,
                name,
                old,
            });
        }
        if !problems.is_empty() {
            return Err(err(ErrorCode::InvalidRequest, problems.join("\n")));
        }
        // Admitted in order, each seeing those before it (two Services of
        // one file get different IPs; a class and pods naming it apply
        // together).
        let admitted = {
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            let pairs = objects
                .into_iter()
                .zip(&items)
                .map(|(o, it)| (o, it.old.as_ref()))
                .collect();
            crate::api::admission::admit_all(pairs, &cache, self.admission)
        };
        let admitted = match admitted {
            Ok(a) => a,
            Err(errors) => {
                let mut conflict = None;
                for (i, e) in errors {
                    let it = &items[i];
                    match e {
                        crate::api::admission::AdmitError::Conflict { .. } => {
                            conflict = Some(format!("{}: {e}", it.source));
                        }
                        crate::api::admission::AdmitError::Invalid(ps) => {
                            for p in ps {
                                problems.push(format!(
                                    "{}: {}: {p}",
                                    it.source,
                                    object_ref(it.kind, &it.ns, &it.name)
                                ));
                            }
                        }
                    }
                }
                if problems.is_empty() {
                    if let Some(c) = conflict {
                        return Err(err(ErrorCode::Conflict, c));
                    }
                }
                return Err(err(ErrorCode::InvalidRequest, problems.join("\n")));
            }
        };
        let mut plans = Vec::new();
        for (a, it) in admitted.into_iter().zip(items) {
            let obj = a.object;
            let mut warnings = it.warnings;
            warnings.extend(a.warnings);
            let plan = match &it.old {
                Some(old) => {
                    let merged = merge(old, obj);
                    let same = {
                        let mut m = merged.clone();
                        m.meta_mut().generation = old.meta().generation;
                        m.to_stored() == old.to_stored()
                    };
                    Plan {
                        guard: old.meta().revision(),
                        outcome: if same { "unchanged" } else { "configured" },
                        object: merged,
                        warnings,
                    }
                }
                None => {
                    let mut obj = obj;
                    machinery::prepare_create(&mut obj, now);
                    Plan {
                        object: obj,
                        guard: 0,
                        outcome: "created",
                        warnings,
                    }
                }
            };
            plans.push(plan);
        }
        let results: Vec<ApplyResult> = plans
            .iter()
            .map(|p| ApplyResult {
                kind: p.object.kind().qualified(),
                namespace: p.object.meta().namespace.clone(),
                name: p.object.meta().name.clone(),
                outcome: p.outcome.to_string(),
                warnings: p.warnings.clone(),
            })
            .collect();
        let writes = plans
            .iter()
            .filter(|p| p.outcome != "unchanged")
            .map(|p| {
                let key = p.object.key();
                let m = p.object.meta();
                Planned {
                    txn: Txn::guarded(
                        vec![Compare::mod_revision(key.clone(), p.guard)],
                        vec![Op::put(key, p.object.to_stored())],
                    ),
                    what: object_ref(p.object.kind(), &m.namespace, &m.name),
                }
            })
            .collect();
        Ok((results, writes))
    }
}

/// Commits planned writes off the async threads; returns the highest
/// revision and what failed its guard.
async fn commit(ctrl: &Controller, planned: Vec<Planned>) -> Result<(u64, Vec<String>), ErrorMsg> {
    let (txns, what): (Vec<Txn>, Vec<String>) =
        planned.into_iter().map(|p| (p.txn, p.what)).unzip();
    if txns.is_empty() {
        return Ok((0, Vec::new()));
    }
    let store = ctrl.store().clone();
    let outcome = tokio::task::spawn_blocking(move || store.txn_batch(txns))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    let top = outcome.iter().map(|r| r.revision).max().unwrap_or(0);
    ctrl.caught_up(top, CATCH_UP).await;
    let failed = outcome
        .iter()
        .zip(what)
        .filter(|(r, _)| !r.succeeded)
        .map(|(_, w)| w)
        .collect();
    Ok((top, failed))
}

impl Controller {
    fn objects(&self) -> Objects<'_> {
        Objects {
            store: self.store().as_ref(),
            cache: &self.cache,
            admission: &self.settings.admission,
        }
    }
}

/// Validates, admits and writes the documents of an apply.
pub async fn apply(ctrl: &Controller, req: ApplyRequest) -> Result<Vec<ApplyResult>, ErrorMsg> {
    // One apply at a time, each seeing the one before it in the cache:
    // admission allocates Service IPs and node ports from what it sees.
    let _one = ctrl.apply_lock.lock().await;
    let (results, writes) = ctrl.objects().plan_apply(&req, Time(now_ms()))?;
    if req.dry_run {
        return Ok(results);
    }
    let (_, failed) = commit(ctrl, writes).await?;
    if !failed.is_empty() {
        return Err(err(
            ErrorCode::Conflict,
            format!(
                "changed by someone else while being applied: {}; apply again",
                failed.join(", ")
            ),
        ));
    }
    Ok(results)
}

/// One object as Kubernetes JSON.
pub fn get(ctrl: &Controller, r: &ObjectRef) -> Result<serde_json::Value, ErrorMsg> {
    let kind = kind_of(&r.kind)?;
    if kind == Kind::Node {
        return Ok(crate::ctl::node_json(&ctrl.node(&r.name)?));
    }
    let ns = namespace_of(kind, &r.namespace);
    let cache = ctrl.cache.read().unwrap_or_else(|p| p.into_inner());
    cache
        .object(kind, &api::ns_name(&ns, &r.name))
        .map(|o| o.to_json())
        .ok_or_else(|| not_found(kind, &ns, &r.name))
}

/// A page of objects of a kind.
pub fn list(ctrl: &Controller, req: &ListRequest) -> Result<ObjectList, ErrorMsg> {
    let kind = kind_of(&req.kind)?;
    let selector = Selector::parse(&req.selector)
        .map_err(|e| err(ErrorCode::InvalidRequest, format!("-l: {e}")))?;
    let limit = match req.limit as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    if kind == Kind::Node {
        let nodes = ctrl.nodes();
        let matching: Vec<&outpost_proto::NodeView> = nodes
            .iter()
            .filter(|n| n.name.as_str() > req.continue_from.as_str() && selector.matches(&n.labels))
            .collect();
        let page = &matching[..matching.len().min(limit)];
        let mut items = Vec::with_capacity(page.len());
        for n in page {
            items.push(serde_json::to_vec(&crate::ctl::node_json(n)).map_err(internal)?);
        }
        let continue_from = match page.last() {
            Some(last) if matching.len() > limit => last.name.clone(),
            _ => String::new(),
        };
        return Ok(ObjectList {
            items,
            continue_from,
            resource_version: ctrl.store().revision(),
        });
    }
    let ns = req.namespace.as_deref().map(|n| namespace_of(kind, n));
    let cache = ctrl.cache.read().unwrap_or_else(|p| p.into_inner());
    let keys: Vec<String> = match (&req.node, kind) {
        (Some(node), Kind::Pod) => {
            let mut k: Vec<String> = cache
                .pods_on(node)
                .map(|p| api::ns_name(&p.metadata.namespace, &p.metadata.name))
                .collect();
            k.sort();
            k
        }
        _ => cache.keys(kind),
    };
    let mut items = Vec::new();
    let mut continue_from = String::new();
    let mut last = String::new();
    for key in keys
        .iter()
        .filter(|k| k.as_str() > req.continue_from.as_str())
    {
        let (kns, _) = api::split_ns_name(key);
        if ns.as_deref().is_some_and(|n| kind.namespaced() && n != kns) {
            continue;
        }
        let Some(obj) = cache.object(kind, key) else {
            continue;
        };
        if !selector.matches(&obj.meta().labels) {
            continue;
        }
        if items.len() == limit {
            continue_from = last;
            break;
        }
        items.push(serde_json::to_vec(&obj.to_json()).map_err(internal)?);
        last = key.clone();
    }
    Ok(ObjectList {
        items,
        continue_from,
        resource_version: cache.revision(),
    })
}

impl Objects<'_> {
    /// The writes of a delete: the object's removal (or, for a pod a node
    /// still runs, its deletion mark) and, when orphaning, the removal of
    /// its owner reference from every dependent. `None` when it is already
    /// being deleted.
    pub fn plan_delete(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        propagation: Propagation,
        grace_seconds: Option<i64>,
        now: Time,
    ) -> Result<(Object, Option<Vec<Planned>>), ErrorMsg> {
        let key = kind.key(ns, name);
        let obj = stored(self.store, kind, &key)?.ok_or_else(|| not_found(kind, ns, name))?;
        let what = object_ref(kind, ns, name);
        let guard = vec![Compare::mod_revision(key.clone(), obj.meta().revision())];
        let txn = match machinery::deletion_with_grace(&obj, now, grace_seconds) {
            Deletion::Now => Txn::guarded(guard, vec![Op::delete(key.clone())]),
            Deletion::Graceful(g) => Txn::guarded(guard, vec![Op::put(key.clone(), g.to_stored())]),
            Deletion::AlreadyDeleting => return Ok((obj, None)),
        };
        let mut txn = txn;
        let mut what = what;
        if propagation == Propagation::Orphan {
            // One transaction: the owner goes only with every dependent
            // orphaned in the same write, or nothing happens (the garbage
            // collector must never find a dependent still owned by a
            // deleted owner).
            let uid = obj.meta().uid.clone();
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            let mut compare = Vec::new();
            let mut ops = Vec::new();
            for dk in [Kind::Pod, Kind::ReplicaSet, Kind::Endpoints] {
                for dkey in cache.owned_by(dk, &uid).cloned().collect::<Vec<_>>() {
                    let Some(mut dep) = cache.object(dk, &dkey) else {
                        continue;
                    };
                    let rev = dep.meta().revision();
                    dep.meta_mut().owner_references.retain(|r| r.uid != uid);
                    let k = dep.key();
                    compare.push(Compare::mod_revision(k.clone(), rev));
                    ops.push(Op::put(k, dep.to_stored()));
                }
            }
            if !ops.is_empty() {
                what = format!("{what} (or one of its {} dependents)", ops.len());
            }
            compare.append(&mut txn.compare);
            ops.append(&mut txn.success);
            txn = Txn::guarded(compare, ops);
        }
        let planned = vec![Planned { txn, what }];
        Ok((obj, Some(planned)))
    }

    /// The eviction of pod `ns/name`, decided from the cache, and the
    /// write that carries it out (none when the pod is already being
    /// deleted).
    pub fn plan_evict(
        &self,
        ns: &str,
        name: &str,
        grace_seconds: Option<i64>,
        now: Time,
    ) -> Result<(Eviction, Option<Planned>), ErrorMsg> {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        let ev = eviction::check(&cache, ns, name, grace_seconds, now).map_err(eviction_error)?;
        let planned = ev.txn().map(|txn| Planned {
            txn,
            what: object_ref(Kind::Pod, ns, name),
        });
        Ok((ev, planned))
    }

    /// The write that sets a Deployment's or ReplicaSet's replica count.
    pub fn plan_scale(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        replicas: i32,
    ) -> Result<Planned, ErrorMsg> {
        if !matches!(kind, Kind::Deployment | Kind::ReplicaSet) {
            return Err(err(
                ErrorCode::InvalidRequest,
                format!(
                    "{} cannot be scaled (only deployments and replicasets)",
                    kind.qualified()
                ),
            ));
        }
        let key = kind.key(ns, name);
        let obj = stored(self.store, kind, &key)?.ok_or_else(|| not_found(kind, ns, name))?;
        let rev = obj.meta().revision();
        let mut new = obj.clone();
        match &mut new {
            Object::Deployment(d) => d.spec.replicas = replicas,
            Object::ReplicaSet(r) => r.spec.replicas = replicas,
            _ => {}
        }
        machinery::prepare_update(&obj, &mut new);
        Ok(Planned {
            txn: Txn::guarded(
                vec![Compare::mod_revision(key.clone(), rev)],
                vec![Op::put(key, new.to_stored())],
            ),
            what: object_ref(kind, ns, name),
        })
    }
}

/// How often a delete is planned again when a write raced it.
const DELETE_ATTEMPTS: u64 = 5;

/// Deletes an object; a pod bound to a node is stopped with
/// `grace_seconds` (`delete --grace-period`) when given, else with its own
/// `terminationGracePeriodSeconds`.
pub async fn delete(
    ctrl: &Controller,
    req: &DeleteRequest,
    grace_seconds: Option<u32>,
) -> Result<String, ErrorMsg> {
    let kind = kind_of(&req.object.kind)?;
    let name = &req.object.name;
    if kind == Kind::Node {
        if req.dry_run {
            ctrl.node(name)?;
            return Ok(format!("node \"{name}\" deleted (dry run)"));
        }
        return ctrl.delete_node(name).await;
    }
    let ns = namespace_of(kind, &req.object.namespace);
    let done = format!("{} \"{name}\" deleted", kind.qualified());
    // The delete names no resourceVersion, so a write racing it (a status
    // update of a dependent being orphaned, most often) is not the
    // operator's conflict: planned again from what is stored now, a few
    // times, before it is reported.
    let mut attempt = 0;
    let obj = loop {
        attempt += 1;
        let (obj, planned) = ctrl.objects().plan_delete(
            kind,
            &ns,
            name,
            req.propagation,
            grace_seconds.map(i64::from),
            Time(now_ms()),
        )?;
        if req.dry_run {
            return Ok(format!("{done} (dry run)"));
        }
        let Some(planned) = planned else {
            return Ok(done);
        };
        let (_, failed) = commit(ctrl, planned).await?;
        if failed.is_empty() {
            break obj;
        }
        if attempt >= DELETE_ATTEMPTS {
            return Err(err(
                ErrorCode::Conflict,
                format!(
                    "{} changed while being deleted, {DELETE_ATTEMPTS} times in a row; try again",
                    failed.join(", ")
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
    };
    ctrl.event(
        outpost_proto::EventType::Normal,
        "Deleted",
        object_ref(kind, &ns, name),
        match &obj {
            Object::Pod(p) if p.node().is_some() => format!(
                "deletion requested; node {} stops its containers",
                p.spec.node_name
            ),
            _ if req.propagation == Propagation::Orphan => {
                "deleted; its dependents were kept (orphaned)".into()
            }
            _ => "deleted".into(),
        },
    )
    .await;
    Ok(done)
}

/// Sets the replica count of a Deployment or ReplicaSet.
pub async fn scale(ctrl: &Controller, req: &ScaleRequest) -> Result<String, ErrorMsg> {
    let kind = kind_of(&req.object.kind)?;
    let replicas = i32::try_from(req.replicas)
        .map_err(|_| err(ErrorCode::InvalidRequest, "--replicas is too large"))?;
    let ns = namespace_of(kind, &req.object.namespace);
    let name = &req.object.name;
    for _ in 0..3 {
        let planned = ctrl.objects().plan_scale(kind, &ns, name, replicas)?;
        let (_, failed) = commit(ctrl, vec![planned]).await?;
        if failed.is_empty() {
            return Ok(format!("{}/{name} scaled", kind.qualified()));
        }
    }
    Err(err(
        ErrorCode::Conflict,
        format!("{} keeps changing; try again", object_ref(kind, &ns, name)),
    ))
}

/// The operator API's answer for a refused eviction: `TooManyRequests`
/// (Kubernetes' 429) when retrying later may succeed.
pub fn eviction_error(e: EvictionError) -> ErrorMsg {
    let code = match &e {
        EvictionError::NotFound { namespace, name } => {
            return not_found(Kind::Pod, namespace, name);
        }
        EvictionError::Budget { .. } => ErrorCode::TooManyRequests,
        EvictionError::MultipleBudgets(_) => ErrorCode::InvalidRequest,
        EvictionError::TooManyDisrupted(_) => ErrorCode::PermissionDenied,
    };
    err(code, e.to_string())
}

/// What an allowed eviction's event says.
fn evicted_message(ev: &Eviction) -> String {
    let why = match &ev.allowed {
        Allowed::NotRunning(phase) => format!("the pod is {}", phase.name()),
        Allowed::AlreadyDeleting => "the pod was already being deleted".into(),
        Allowed::NoBudget => "no PodDisruptionBudget selects the pod".into(),
        Allowed::Unhealthy { budget } => {
            format!("the pod is not Ready and PodDisruptionBudget {budget} lets unhealthy pods go")
        }
        Allowed::Budget { budget } => format!("PodDisruptionBudget {budget} allowed it"),
    };
    match ev.pod.node() {
        Some(n) => format!("evicted ({why}); node {n} stops its containers"),
        None => format!("evicted ({why})"),
    }
}

/// Most times an eviction is decided again when its guard fails.
const EVICT_ATTEMPTS: usize = 5;

/// Evicts a pod (Kubernetes' `pods/eviction`): refused with
/// `TooManyRequests` while its budget allows no disruption.
pub async fn evict(ctrl: &Controller, req: &EvictRequest) -> Result<String, ErrorMsg> {
    outpost_proto::pod::validate_dns_label("pod name", &req.name)
        .map_err(|e| err(ErrorCode::InvalidRequest, e))?;
    if !req.namespace.is_empty() {
        outpost_proto::pod::validate_dns_label("namespace", &req.namespace)
            .map_err(|e| err(ErrorCode::InvalidRequest, e))?;
    }
    let ns = namespace_of(Kind::Pod, &req.namespace);
    let name = &req.name;
    let grace = req.grace_period_seconds.map(i64::from);
    for _ in 0..EVICT_ATTEMPTS {
        // Decide from a cache holding everything committed so far (a
        // budget created a moment ago included).
        ctrl.caught_up(ctrl.store().revision(), CATCH_UP).await;
        let (ev, planned) = ctrl
            .objects()
            .plan_evict(&ns, name, grace, Time(now_ms()))?;
        let what = object_ref(Kind::Pod, &ns, name);
        let Some(planned) = planned else {
            return Ok(format!("{what} is already being deleted"));
        };
        let (_, failed) = commit(ctrl, vec![planned]).await?;
        if failed.is_empty() {
            ctrl.event(
                outpost_proto::EventType::Normal,
                "Evicted",
                what.clone(),
                evicted_message(&ev),
            )
            .await;
            return Ok(format!("{what} evicted"));
        }
    }
    Err(err(
        ErrorCode::Conflict,
        format!(
            "{} or its PodDisruptionBudget keeps changing; try again",
            object_ref(Kind::Pod, &ns, name)
        ),
    ))
}
