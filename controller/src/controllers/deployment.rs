//! The Deployment controller: one ReplicaSet per pod template, rolled
//! from old to new as Kubernetes' `DeploymentController` does.
//!
//! Flow in: a Deployment `ns/name` key, the cache (the Deployment, the
//! ReplicaSets whose controller owner reference names it, their pods) and
//! `now`.
//!
//! Flow out, per reconcile (one Kubernetes `syncDeployment`):
//! - the new ReplicaSet when no ReplicaSet has the Deployment's template
//!   (name `DEPLOY-HASH`, `pod-template-hash` label on its selector,
//!   template and itself, the Deployment's annotations copied, a
//!   controller owner reference), created with as many replicas as the
//!   strategy allows;
//! - ReplicaSet updates: `spec.replicas` (scaling, rolling update,
//!   Recreate, proportional scaling mid-rollout), the `revision`,
//!   `desired-replicas` and `max-replicas` annotations, `minReadySeconds`;
//! - deletes of old ReplicaSets scaled to zero beyond
//!   `revisionHistoryLimit` (oldest revision first);
//! - the Deployment's `revision` annotation and status (replica counts,
//!   `Available`, `Progressing`, `ReplicaFailure` copied from its
//!   ReplicaSets), written only when they changed;
//! - `ScalingReplicaSet` events and a Warning when the progress deadline
//!   passes; from then on old ReplicaSets are held at their size (see
//!   `Sync::held`) until the new pods are all available or the spec
//!   changes (a new template, undo, restart, scale, pause or resume);
//! - a re-check when the next ready pod becomes available and at the
//!   progress deadline.
//!
//! Each object is written at most once per reconcile: decisions are made
//! on working copies, and what differs from the cache is written at the
//! end. Availability is counted from the pods themselves (fresher than the
//! ReplicaSets' status) and, for decisions, never above a ReplicaSet's
//! `spec.replicas`: a ReplicaSet that is about to delete pods keeps only
//! that many (its deletion order takes unavailable pods first).
//!
//! Images before old pods: with room to surge, an available old pod is
//! scaled away only while a new pod that has its images (running, or on a
//! node that reports them) stands in for it, so the surge pods pull while
//! the old ones serve and a site on a slow link does not spend its
//! maxUnavailable waiting for bytes (Kubernetes stops maxUnavailable old
//! pods at once, before any new pod is even placed).
//!
//! Without surge room (`maxSurge: 0`, Recreate), old pods are stopped only
//! once the nodes they run on hold the new template's images, or
//! `progressDeadlineSeconds` after the wait began (a Warning event says
//! so): see [`prefetch`]. The wait shows as the Deployment's
//! `ImagesPrefetched` condition (`False`, `Prefetching`, naming the nodes
//! and images still missing).
//!
//! Two departures from Kubernetes, both found by the property test in
//! `tests.rs`: room for the new ReplicaSet counts the pods a scaled-down
//! ReplicaSet still holds until they are deleted (Kubernetes counts only
//! `spec.replicas`, so a delete that lags lets the total exceed
//! `replicas + maxSurge`); and a scaling event whose one active ReplicaSet
//! already has the right size still refreshes its `desired-replicas`
//! annotation (Kubernetes leaves it stale, and every later sync is then a
//! scaling event that never resumes the rollout).

use super::prefetch;
use super::replicas::{self, controlled_pods, Counts};
use super::replicaset::REPLICA_FAILURE;
use super::{Controller, Outcome, Write};
use crate::api::apps::{
    condition, set_condition, Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
    StrategyType, WorkloadCondition, DESIRED_REPLICAS_ANNOTATION, MAX_REPLICAS_ANNOTATION,
    POD_TEMPLATE_HASH, REVISION_ANNOTATION,
};
use crate::api::machinery::object_ref;
use crate::api::meta::ConditionStatus;
use crate::api::pod::{PodPhase, PodTemplateSpec};
use crate::api::{ns_name, Kind, Object, ObjectMeta, OwnerReference, Pod, Time};
use crate::cache::{Cache, Change};
use crate::scheduler::arch::normalize;
use outpost_proto::EventType;
use std::sync::Arc;
use std::time::Duration;

/// Condition types and reasons, as Kubernetes names them.
pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";
/// Event reason of every ReplicaSet scale.
pub const SCALING_REPLICA_SET: &str = "ScalingReplicaSet";

/// Deployment annotations not copied to its ReplicaSets (Kubernetes'
/// `skipCopyAnnotation`), and kept on the Deployment by a rollback
/// (kubectl's `annotationsToSkip`, the same list).
pub const NOT_COPIED: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    "deployment.kubernetes.io/revision-history",
    DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
    "deprecated.deployment.rollback.to",
];

/// Kubernetes' alphabet for safe encodings (no vowels, no look-alikes).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The pod-template hash: FNV-1a (32 bit) of the template's stored JSON
/// and the collision count, its decimal digits mapped through Kubernetes'
/// safe alphabet (`SafeEncodeString`), as Kubernetes' `ComputeHash` makes
/// it (`7d4b9c8f5`). Stable: the JSON is canonical (fields in declaration
/// order, maps sorted, defaults omitted).
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(&serde_json::to_vec(template).unwrap_or_default());
    if let Some(c) = collision_count {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&u32::from_le_bytes(c.to_le_bytes()).to_le_bytes());
        feed(&b);
    }
    h.to_string()
        .bytes()
        .map(|d| SAFE_ALPHABET[usize::from(d) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// Whether two templates are equal but for the `pod-template-hash` label
/// (Kubernetes' `EqualIgnoreHash`).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        t.metadata.labels.remove(POD_TEMPLATE_HASH);
        t
    };
    strip(a) == strip(b)
}

/// A ReplicaSet's revision (0 when unset or unreadable).
pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .get(REVISION_ANNOTATION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn int_annotation(meta: &ObjectMeta, key: &str) -> Option<i32> {
    meta.annotations.get(key).and_then(|v| v.parse().ok())
}

/// `maxSurge` and `maxUnavailable` of a rolling update resolved against
/// `replicas` (Kubernetes' `ResolveFenceposts`): surge rounds up,
/// unavailable down, and both zero makes maxUnavailable 1. A value that
/// is neither a number nor a percentage (refused by validation) counts 0.
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    if d.spec.strategy.kind != StrategyType::RollingUpdate {
        return (0, 0);
    }
    let ru = d.spec.strategy.rolling_update.clone().unwrap_or_default();
    let r = i64::from(d.spec.replicas.max(0));
    let clamp = |v: i64| i32::try_from(v.max(0)).unwrap_or(i32::MAX);
    let surge = clamp(ru.max_surge.scaled(r, true).unwrap_or(0));
    let unavailable = clamp(ru.max_unavailable.scaled(r, false).unwrap_or(0));
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// Kubernetes' `MaxSurge`.
pub fn max_surge(d: &Deployment) -> i32 {
    fenceposts(d).0
}

/// Kubernetes' `MaxUnavailable`: never more than the replicas.
pub fn max_unavailable(d: &Deployment) -> i32 {
    if d.spec.strategy.kind != StrategyType::RollingUpdate || d.spec.replicas <= 0 {
        return 0;
    }
    fenceposts(d).1.min(d.spec.replicas)
}

/// The controller owner reference a Deployment puts on its ReplicaSets.
fn owner_ref(d: &Deployment) -> OwnerReference {
    OwnerReference {
        api_version: Kind::Deployment.api_version().to_string(),
        kind: Kind::Deployment.name().to_string(),
        name: d.metadata.name.clone(),
        uid: d.metadata.uid.clone(),
        controller: true,
        block_owner_deletion: true,
    }
}

/// Kubernetes' `DeploymentComplete`.
fn complete(d: &Deployment, st: &DeploymentStatus) -> bool {
    let r = d.spec.replicas.max(0);
    st.updated_replicas == r
        && st.replicas == r
        && st.available_replicas == r
        && st.observed_generation >= d.metadata.generation
}

/// Kubernetes' `DeploymentProgressing`: more updated, ready or available
/// pods, or fewer old ones, than the status said.
fn progressing(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let old_old = old.replicas - old.updated_replicas;
    let new_old = new.replicas - new.updated_replicas;
    new.updated_replicas > old.updated_replicas
        || new_old < old_old
        || new.ready_replicas > old.ready_replicas
        || new.available_replicas > old.available_replicas
}

/// The progress deadline (none when not positive, or "never" as
/// Kubernetes spells it: `MaxInt32`).
fn progress_deadline(d: &Deployment) -> Option<Duration> {
    let s = d.spec.progress_deadline_seconds;
    (s > 0 && s != i32::MAX).then(|| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
}

/// One ReplicaSet during a reconcile: as cached, as it will be written,
/// and its pods.
struct Rs<'a> {
    cached: Option<&'a Arc<ReplicaSet>>,
    cur: ReplicaSet,
    pods: Vec<&'a Arc<Pod>>,
    /// Of `pods`, against the Deployment's `minReadySeconds`.
    counts: Counts,
    deleted: bool,
}

impl Rs<'_> {
    fn spec(&self) -> i32 {
        self.cur.spec.replicas.max(0)
    }
}

/// One reconcile of one Deployment.
struct Sync<'a> {
    cache: &'a Cache,
    now: Time,
    cached: &'a Deployment,
    d: Deployment,
    /// Oldest first (creation time, then name).
    rss: Vec<Rs<'a>>,
    writes: Vec<Write>,
    requeue: Option<Duration>,
    me: String,
    /// Old pods were held for images this rollout and are let go now (the
    /// images came, or the wait gave up): a step, so progress.
    prefetch_ended: bool,
}

impl<'a> Sync<'a> {
    fn new(d: &'a Arc<Deployment>, cache: &'a Cache, now: Time) -> Sync<'a> {
        let uid = &d.metadata.uid;
        let min_ready = replicas::min_ready(d.spec.min_ready_seconds);
        let mut rss: Vec<Rs<'a>> = cache
            .replicasets_owned_by(uid)
            .into_iter()
            .filter(|rs| rs.metadata.controller_ref().is_some_and(|r| &r.uid == uid))
            .map(|rs| {
                let pods = controlled_pods(cache, rs);
                let counts = replicas::count(pods.iter().map(|p| p.as_ref()), min_ready, now);
                Rs {
                    cached: Some(rs),
                    cur: (**rs).clone(),
                    pods,
                    counts,
                    deleted: false,
                }
            })
            .collect();
        rss.sort_by(|a, b| {
            a.cur
                .metadata
                .creation_timestamp
                .cmp(&b.cur.metadata.creation_timestamp)
                .then_with(|| a.cur.metadata.name.cmp(&b.cur.metadata.name))
        });
        Sync {
            cache,
            now,
            cached: d,
            d: (**d).clone(),
            rss,
            writes: Vec::new(),
            requeue: None,
            me: object_ref(Kind::Deployment, &d.metadata.namespace, &d.metadata.name),
            prefetch_ended: false,
        }
    }

    fn replicas(&self) -> i32 {
        self.d.spec.replicas.max(0)
    }

    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.rss.len()).filter(|i| !self.rss[*i].deleted)
    }

    fn counts(&self, i: usize) -> Counts {
        self.rss[i].counts
    }

    /// Available pods of a ReplicaSet as far as decisions go: never more
    /// than it keeps.
    fn available(&self, i: usize) -> i32 {
        self.counts(i).available.min(self.rss[i].spec())
    }

    fn sum_spec(&self) -> i32 {
        self.live().map(|i| self.rss[i].spec()).sum()
    }

    /// Pods the ReplicaSets hold or are sized for: a ReplicaSet scaled
    /// down still holds its surplus until its controller deletes it (a
    /// step later, or later still if that delete conflicts), and growing
    /// another before then would run more than the surge allows.
    fn sum_held(&self) -> i32 {
        self.live()
            .map(|i| self.rss[i].spec().max(self.counts(i).active))
            .sum()
    }

    fn requeue_at(&mut self, at: Time) {
        let after = at.since(self.now).max(Duration::from_millis(1));
        self.requeue = Some(self.requeue.map_or(after, |r| r.min(after)));
    }

    // ---- revisions and the new ReplicaSet ----

    /// The oldest ReplicaSet with the Deployment's template.
    fn find_new(&self) -> Option<usize> {
        self.live()
            .find(|i| equal_ignore_hash(&self.rss[*i].cur.spec.template, &self.d.spec.template))
    }

    /// Copies the Deployment's annotations to a ReplicaSet; whether any
    /// changed.
    fn copy_annotations(d: &Deployment, rs: &mut ReplicaSet) -> bool {
        let mut changed = false;
        for (k, v) in &d.metadata.annotations {
            if NOT_COPIED.contains(&k.as_str()) || rs.metadata.annotations.get(k) == Some(v) {
                continue;
            }
            rs.metadata.annotations.insert(k.clone(), v.clone());
            changed = true;
        }
        changed
    }

    /// Sets the `desired-replicas` and `max-replicas` annotations of
    /// ReplicaSet `i`.
    fn set_replicas_annotations(&mut self, i: usize) {
        let r = self.replicas();
        let max = r.saturating_add(max_surge(&self.d));
        let a = &mut self.rss[i].cur.metadata.annotations;
        a.insert(DESIRED_REPLICAS_ANNOTATION.to_string(), r.to_string());
        a.insert(MAX_REPLICAS_ANNOTATION.to_string(), max.to_string());
    }

    fn set_deployment_revision(&mut self, rev: &str) {
        let a = &mut self.d.metadata.annotations;
        if a.get(REVISION_ANNOTATION).map(String::as_str) != Some(rev) {
            a.insert(REVISION_ANNOTATION.to_string(), rev.to_string());
        }
    }

    /// Kubernetes' `getNewReplicaSet`: finds the new ReplicaSet and brings
    /// its revision (past every old one: a rollback to an old template
    /// moves that ReplicaSet's revision forward), annotations and
    /// `minReadySeconds` up to date; creates it when `create` and there
    /// is none (`None` when its name is taken by another template: the
    /// collision count goes up and the next reconcile tries a new name).
    fn sync_revision(&mut self, create: bool) -> Option<usize> {
        let existing = self.find_new();
        let max_old = self
            .live()
            .filter(|i| Some(*i) != existing)
            .map(|i| revision(&self.rss[i].cur))
            .max()
            .unwrap_or(0);
        let new_rev = (max_old + 1).to_string();
        if let Some(i) = existing {
            let d = &self.d;
            let rs = &mut self.rss[i].cur;
            Self::copy_annotations(d, rs);
            if revision(rs) < max_old + 1 {
                rs.metadata
                    .annotations
                    .insert(REVISION_ANNOTATION.to_string(), new_rev);
            }
            rs.spec.min_ready_seconds = d.spec.min_ready_seconds;
            let rev = rs
                .metadata
                .annotations
                .get(REVISION_ANNOTATION)
                .cloned()
                .unwrap_or_default();
            let name = rs.metadata.name.clone();
            self.set_deployment_revision(&rev);
            if condition(&self.d.status.conditions, PROGRESSING).is_none() {
                set_condition(
                    &mut self.d.status.conditions,
                    PROGRESSING,
                    ConditionStatus::True,
                    FOUND_NEW_RS,
                    &format!("Found new replica set {name:?}"),
                    self.now,
                );
            }
            return Some(i);
        }
        if !create {
            return None;
        }
        let hash = pod_template_hash(&self.d.spec.template, self.d.status.collision_count);
        let name = format!("{}-{hash}", self.d.metadata.name);
        let ns = &self.d.metadata.namespace;
        if let Some(taken) = self.cache.replicaset(&ns_name(ns, &name)) {
            // Ours with this template would have been found; an orphan
            // with it (its Deployment deleted with orphaning) is adopted.
            let orphan = taken.metadata.controller_ref().is_none()
                && equal_ignore_hash(&taken.spec.template, &self.d.spec.template)
                && self.d.spec.selector.matches(&taken.metadata.labels);
            if orphan {
                let mut copy = (**taken).clone();
                copy.metadata.owner_references.push(owner_ref(&self.d));
                self.writes.push(Write::Update(Object::ReplicaSet(copy)));
            } else {
                let c = self.d.status.collision_count.unwrap_or(0);
                self.d.status.collision_count = Some(c.saturating_add(1));
            }
            return None;
        }
        let mut template = self.d.spec.template.clone();
        template
            .metadata
            .labels
            .insert(POD_TEMPLATE_HASH.to_string(), hash.clone());
        let mut selector = self.d.spec.selector.clone();
        selector
            .match_labels
            .insert(POD_TEMPLATE_HASH.to_string(), hash);
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: name.clone(),
                namespace: ns.clone(),
                labels: template.metadata.labels.clone(),
                owner_references: vec![owner_ref(&self.d)],
                ..ObjectMeta::default()
            },
            spec: ReplicaSetSpec {
                replicas: 0,
                min_ready_seconds: self.d.spec.min_ready_seconds,
                selector,
                template,
            },
            status: Default::default(),
        };
        Self::copy_annotations(&self.d, &mut rs);
        rs.metadata
            .annotations
            .insert(REVISION_ANNOTATION.to_string(), new_rev.clone());
        self.rss.push(Rs {
            cached: None,
            cur: rs,
            pods: Vec::new(),
            counts: Counts::default(),
            deleted: false,
        });
        let i = self.rss.len() - 1;
        self.set_replicas_annotations(i);
        let n = self.new_rs_new_replicas(i);
        self.rss[i].cur.spec.replicas = n;
        if n > 0 {
            self.event_scaled(&name, 0, n);
        }
        self.set_deployment_revision(&new_rev);
        set_condition(
            &mut self.d.status.conditions,
            PROGRESSING,
            ConditionStatus::True,
            NEW_RS_CREATED,
            &format!("Created new replica set {name:?}"),
            self.now,
        );
        Some(i)
    }

    /// Kubernetes' `NewRSNewReplicas`: how far the new ReplicaSet may grow
    /// now (counting the surplus old ReplicaSets still hold, see
    /// [`sum_held`](Self::sum_held)).
    fn new_rs_new_replicas(&self, new: usize) -> i32 {
        let cur = self.rss[new].spec();
        match self.d.spec.strategy.kind {
            StrategyType::Recreate => self.replicas(),
            StrategyType::RollingUpdate => {
                let max_total = self.replicas().saturating_add(max_surge(&self.d));
                let current = self.sum_held();
                if current >= max_total {
                    return cur;
                }
                let up = (max_total - current).min(self.replicas() - cur);
                cur + up
            }
        }
    }

    // ---- scaling ----

    fn event_scaled(&mut self, rs: &str, from: i32, to: i32) {
        let dir = if to > from { "up" } else { "down" };
        self.writes.push(Write::event(
            EventType::Normal,
            SCALING_REPLICA_SET,
            self.me.clone(),
            format!("Scaled {dir} replica set {rs} to {to}"),
        ));
    }

    /// Kubernetes' `scaleReplicaSet`: size and replicas annotations.
    fn scale_to(&mut self, i: usize, n: i32) {
        let from = self.rss[i].spec();
        self.set_replicas_annotations(i);
        self.rss[i].cur.spec.replicas = n;
        if from != n {
            let name = self.rss[i].cur.metadata.name.clone();
            self.event_scaled(&name, from, n);
        }
    }

    /// Kubernetes' `scaleReplicaSetAndRecordEvent`: scales when the size
    /// differs; whether it did.
    fn scale_if_needed(&mut self, i: usize, n: i32) -> bool {
        if self.rss[i].spec() == n {
            return false;
        }
        self.scale_to(i, n);
        true
    }

    /// Active ReplicaSets (replicas above zero), oldest first.
    fn active(&self) -> Vec<usize> {
        self.live().filter(|i| self.rss[*i].spec() > 0).collect()
    }

    fn old(&self, new: Option<usize>) -> Vec<usize> {
        self.live().filter(|i| Some(*i) != new).collect()
    }

    /// Kubernetes' `isScalingEvent`: an active ReplicaSet was sized for
    /// another replica count.
    fn is_scaling_event(&self) -> bool {
        let r = self.replicas();
        self.active().into_iter().any(|i| {
            int_annotation(&self.rss[i].cur.metadata, DESIRED_REPLICAS_ANNOTATION)
                .is_some_and(|d| d != r)
        })
    }

    /// Kubernetes' `IsSaturated`.
    fn is_saturated(&self, new: Option<usize>) -> bool {
        let Some(i) = new else { return false };
        let r = self.replicas();
        self.rss[i].spec() == r
            && int_annotation(&self.rss[i].cur.metadata, DESIRED_REPLICAS_ANNOTATION) == Some(r)
            && self.available(i) == r
    }

    /// Kubernetes' `getReplicaSetFraction`.
    fn fraction(&self, i: usize) -> i32 {
        let spec = self.rss[i].spec();
        if self.replicas() == 0 {
            return -spec;
        }
        let max_now = i64::from(self.replicas().saturating_add(max_surge(&self.d)));
        let before = int_annotation(&self.rss[i].cur.metadata, MAX_REPLICAS_ANNOTATION)
            .filter(|v| *v > 0)
            .unwrap_or(self.cached.status.replicas);
        if before <= 0 {
            return 0;
        }
        let (spec, before) = (i64::from(spec), i64::from(before));
        // Rounded half away from zero, as math.Round.
        let size = (2 * spec * max_now + before) / (2 * before);
        i32::try_from(size - spec).unwrap_or(0)
    }

    /// Kubernetes' `scale`: the one active ReplicaSet takes every replica;
    /// a saturated new ReplicaSet leaves the old ones none; otherwise a
    /// rolling Deployment spreads the change over its active ReplicaSets
    /// in proportion to their size (larger first, newer first when
    /// growing, older first when shrinking, the rounding leftover to the
    /// first).
    fn scale(&mut self, new: Option<usize>) {
        let r = self.replicas();
        if let Some(i) = self.active_or_latest(new) {
            // Kubernetes returns early when the size is already right,
            // which leaves `desired-replicas` stale: every later sync is
            // then a "scaling event" and the rollout never resumes. The
            // annotations are refreshed here either way.
            self.scale_to(i, r);
            return;
        }
        if self.is_saturated(new) {
            for i in self.old(new) {
                if self.rss[i].spec() > 0 {
                    self.scale_if_needed(i, 0);
                }
            }
            return;
        }
        if self.d.spec.strategy.kind != StrategyType::RollingUpdate {
            return;
        }
        let mut all = self.active();
        let allowed = if r > 0 {
            r.saturating_add(max_surge(&self.d))
        } else {
            0
        };
        let mut to_add = allowed - self.sum_spec();
        if to_add > 0 {
            // Never grow into pods that are still on their way out.
            to_add = to_add.min(allowed - self.sum_held()).max(0);
        }
        let created = |s: &Self, i: usize| s.rss[i].cur.metadata.creation_timestamp;
        if to_add > 0 {
            all.sort_by(|a, b| {
                self.rss[*b]
                    .spec()
                    .cmp(&self.rss[*a].spec())
                    .then(created(self, *b).cmp(&created(self, *a)))
            });
        } else if to_add < 0 {
            all.sort_by(|a, b| {
                self.rss[*b]
                    .spec()
                    .cmp(&self.rss[*a].spec())
                    .then(created(self, *a).cmp(&created(self, *b)))
            });
        }
        let mut added = 0;
        let mut sizes = Vec::with_capacity(all.len());
        for &i in &all {
            let spec = self.rss[i].spec();
            if to_add == 0 || spec == 0 || to_add == added {
                sizes.push(spec);
                continue;
            }
            let allowed_left = to_add - added;
            let p = if to_add > 0 {
                self.fraction(i).min(allowed_left)
            } else {
                self.fraction(i).max(allowed_left)
            };
            sizes.push(spec + p);
            added += p;
        }
        if let Some(first) = sizes.first_mut() {
            if to_add != 0 {
                *first = (*first + to_add - added).max(0);
            }
        }
        for (&i, n) in all.iter().zip(sizes) {
            self.scale_to(i, n);
        }
    }

    /// Kubernetes' `FindActiveOrLatest`.
    fn active_or_latest(&self, new: Option<usize>) -> Option<usize> {
        let active = self.active();
        match active.len() {
            0 => new.or_else(|| self.old(new).into_iter().next_back()),
            1 => Some(active[0]),
            _ => None,
        }
    }

    // ---- rolling update ----

    /// Kubernetes' `reconcileNewReplicaSet`.
    fn reconcile_new(&mut self, new: usize) -> bool {
        let r = self.replicas();
        let spec = self.rss[new].spec();
        if spec == r {
            return false;
        }
        if spec > r {
            return self.scale_if_needed(new, r);
        }
        let n = self.new_rs_new_replicas(new);
        self.scale_if_needed(new, n)
    }

    /// Kubernetes' `reconcileOldReplicaSets`: scales old ReplicaSets down
    /// as far as availability allows, unhealthy replicas first.
    fn reconcile_old(&mut self, new: usize) -> bool {
        let old: Vec<usize> = self.old(Some(new));
        if old.iter().all(|i| self.rss[*i].spec() == 0) {
            return false;
        }
        let min_available = self.replicas() - max_unavailable(&self.d);
        let new_unavailable = self.rss[new].spec() - self.available(new);
        let max_scaled_down = self.sum_spec() - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        // Unhealthy replicas first: scaling them away costs no
        // availability.
        let mut cleaned = 0;
        for &i in &old {
            if cleaned >= max_scaled_down {
                break;
            }
            let spec = self.rss[i].spec();
            let unhealthy = spec - self.available(i);
            if spec == 0 || unhealthy == 0 {
                continue;
            }
            let n = (max_scaled_down - cleaned).min(unhealthy);
            self.scale_if_needed(i, spec - n);
            cleaned += n;
        }
        // Then as many available ones as keep minAvailable and, with room
        // to surge, as new pods that have their images stand in for (the
        // surge pods pull while the old ones serve).
        let available: i32 = self.live().map(|i| self.available(i)).sum();
        let mut total = available - min_available;
        if max_surge(&self.d) > 0 {
            total = total.min(available - self.replicas() + self.staged_unavailable(new));
        }
        let mut scaled = 0;
        if total > 0 {
            for &i in &old {
                if scaled >= total {
                    break;
                }
                let spec = self.rss[i].spec();
                if spec == 0 {
                    continue;
                }
                let n = spec.min(total - scaled);
                self.scale_if_needed(i, spec - n);
                scaled += n;
            }
        }
        cleaned + scaled > 0
    }

    /// Whether the old ReplicaSets are held where they are: the progress
    /// deadline passed (and no spec change since, see
    /// [`reset_deadline_on_spec_change`](Self::reset_deadline_on_spec_change))
    /// and the new ReplicaSet has not proven itself (every pod it is sized
    /// for available). Kubernetes only reports the deadline and goes on
    /// scaling old pods down whenever a new one is briefly available; a
    /// new version that flaps would then eat the old one a pod at a time.
    fn held(&self, new: Option<usize>) -> bool {
        let timed_out = condition(&self.d.status.conditions, PROGRESSING)
            .is_some_and(|c| c.reason == TIMED_OUT);
        let proven = new.is_some_and(|i| {
            let spec = self.rss[i].spec();
            spec > 0 && self.available(i) == spec
        });
        timed_out && !proven
    }

    /// A spec the controller has not observed yet (a new template, an
    /// undo, a restart, a scale, a pause or resume) after the progress
    /// deadline passed: the operator acted, so the deadline starts over
    /// (the condition is dropped and set again as Kubernetes sets a
    /// missing one) and old ReplicaSets may be scaled down again.
    fn reset_deadline_on_spec_change(&mut self) {
        let changed = self.d.metadata.generation != self.d.status.observed_generation;
        let timed_out = condition(&self.d.status.conditions, PROGRESSING)
            .is_some_and(|c| c.reason == TIMED_OUT);
        if changed && timed_out {
            self.d.status.conditions.retain(|c| c.kind != PROGRESSING);
        }
    }

    /// A spec the controller has not observed yet starts the image wait
    /// over: a condition from an earlier template says nothing of this one.
    fn reset_prefetch_on_spec_change(&mut self) {
        if self.d.metadata.generation != self.d.status.observed_generation {
            self.d
                .status
                .conditions
                .retain(|c| c.kind != prefetch::IMAGES_PREFETCHED);
        }
    }

    /// Images before old pods without surge room (see [`prefetch`]):
    /// whether the old pods must keep running for now, while the nodes
    /// they run on fetch the new template's images.
    fn prefetch_holds(&mut self, new: Option<usize>) -> bool {
        let no_surge = match self.d.spec.strategy.kind {
            StrategyType::Recreate => true,
            StrategyType::RollingUpdate => max_surge(&self.d) == 0,
        };
        if !no_surge {
            return false;
        }
        let nodes: std::collections::BTreeSet<&str> = self
            .old(new)
            .into_iter()
            .flat_map(|i| self.rss[i].pods.iter())
            .filter(|p| replicas::is_active(p))
            .filter_map(|p| p.node())
            .collect();
        let images: Vec<&str> = self.d.spec.template.spec.images().collect();
        let missing = prefetch::missing(self.cache, nodes, &images);
        let cur = condition(&self.d.status.conditions, prefetch::IMAGES_PREFETCHED).cloned();
        let deadline = progress_deadline(&self.d);
        match prefetch::decide(cur.as_ref(), &missing, deadline, self.now) {
            prefetch::Decision::Go => {
                if cur.is_some_and(|c| c.reason == prefetch::PREFETCHING) {
                    set_condition(
                        &mut self.d.status.conditions,
                        prefetch::IMAGES_PREFETCHED,
                        ConditionStatus::True,
                        prefetch::IMAGES_PRESENT,
                        "Every node of an old pod holds the new images",
                        self.now,
                    );
                    self.prefetch_ended = true;
                }
                false
            }
            prefetch::Decision::Wait { until, .. } => {
                set_condition(
                    &mut self.d.status.conditions,
                    prefetch::IMAGES_PREFETCHED,
                    ConditionStatus::False,
                    prefetch::PREFETCHING,
                    &prefetch::waiting_message(&missing),
                    self.now,
                );
                self.requeue_at(until);
                true
            }
            prefetch::Decision::GiveUp { since } => {
                let message = format!(
                    "{} still missing after {}s (progressDeadlineSeconds); old pods are stopped now and the new ones pull where they land",
                    prefetch::missing_list(&missing),
                    self.now.since(since).as_secs()
                );
                set_condition(
                    &mut self.d.status.conditions,
                    prefetch::IMAGES_PREFETCHED,
                    ConditionStatus::False,
                    prefetch::PREFETCH_DEADLINE_EXCEEDED,
                    &message,
                    self.now,
                );
                self.writes.push(Write::event(
                    EventType::Warning,
                    prefetch::PREFETCH_DEADLINE_EXCEEDED,
                    self.me.clone(),
                    format!("Images not fetched in time: {message}"),
                ));
                self.prefetch_ended = true;
                false
            }
            prefetch::Decision::GaveUpBefore => false,
        }
    }

    /// New pods not yet available that have what they need to start where
    /// they are bound (see [`staged`]): the ones whose image pull is over.
    fn staged_unavailable(&self, new: usize) -> i32 {
        let rs = &self.rss[new];
        let n = rs.pods.iter().filter(|p| staged(self.cache, p)).count();
        let n = i32::try_from(n).unwrap_or(i32::MAX);
        (n - rs.counts.available).clamp(0, (rs.spec() - self.available(new)).max(0))
    }

    fn rollout_rolling(&mut self) {
        let Some(new) = self.sync_revision(true) else {
            self.sync_rollout_status(None);
            return;
        };
        let held = self.held(Some(new));
        if self.reconcile_new(new)
            || (!held && !self.prefetch_holds(Some(new)) && self.reconcile_old(new))
        {
            self.sync_rollout_status(Some(new));
            return;
        }
        if complete(&self.d, &self.d.status) {
            self.cleanup(Some(new));
        }
        self.sync_rollout_status(Some(new));
    }

    // ---- recreate ----

    /// Kubernetes' `oldPodsRunning`: an old ReplicaSet still has a pod that
    /// has not finished (being deleted counts: its node may still run it).
    fn old_pods_running(&self, new: Option<usize>) -> bool {
        self.old(new)
            .into_iter()
            .any(|i| self.rss[i].pods.iter().any(|p| !p.is_terminal()))
    }

    fn rollout_recreate(&mut self) {
        let new = self.sync_revision(false);
        if self.prefetch_holds(new) {
            self.sync_rollout_status(new);
            return;
        }
        let mut scaled_down = false;
        for i in self.old(new) {
            if self.rss[i].spec() > 0 {
                scaled_down |= self.scale_if_needed(i, 0);
            }
        }
        if scaled_down || self.old_pods_running(new) {
            self.sync_rollout_status(new);
            return;
        }
        let new = match new {
            Some(n) => n,
            None => match self.sync_revision(true) {
                Some(n) => n,
                None => {
                    self.sync_rollout_status(None);
                    return;
                }
            },
        };
        let r = self.replicas();
        self.scale_if_needed(new, r);
        if complete(&self.d, &self.d.status) {
            self.cleanup(Some(new));
        }
        self.sync_rollout_status(Some(new));
    }

    // ---- history ----

    /// Kubernetes' `cleanupDeployment`: deletes old ReplicaSets beyond
    /// `revisionHistoryLimit`, oldest revision first, only those scaled to
    /// zero with no pods and their last change observed.
    fn cleanup(&mut self, new: Option<usize>) {
        let Ok(limit) = usize::try_from(self.d.spec.revision_history_limit) else {
            return;
        };
        let mut old = self.old(new);
        if old.len() <= limit {
            return;
        }
        let excess = old.len() - limit;
        old.sort_by(|a, b| {
            let (a, b) = (&self.rss[*a].cur, &self.rss[*b].cur);
            revision(a).cmp(&revision(b)).then(
                a.metadata
                    .creation_timestamp
                    .cmp(&b.metadata.creation_timestamp),
            )
        });
        for i in old.into_iter().take(excess) {
            let rs = &self.rss[i];
            let idle = rs.spec() == 0
                && rs.cur.status.replicas == 0
                && rs.pods.iter().all(|p| !replicas::is_active(p))
                && rs.cur.metadata.generation <= rs.cur.status.observed_generation;
            if idle {
                self.rss[i].deleted = true;
            }
        }
    }

    // ---- status ----

    /// Kubernetes' `calculateStatus`, from the pods.
    fn calculate_status(&self, new: Option<usize>) -> DeploymentStatus {
        let mut total = Counts::default();
        for i in self.live() {
            let c = self.counts(i);
            total.active += c.active;
            total.ready += c.ready;
            total.available += c.available;
        }
        let updated = new.map_or(0, |i| self.counts(i).active);
        let mut st = self.d.status.clone();
        st.observed_generation = self.d.metadata.generation;
        st.replicas = total.active;
        st.updated_replicas = updated;
        st.ready_replicas = total.ready;
        st.available_replicas = total.available;
        st.unavailable_replicas = (self.sum_spec() - total.available).max(0);
        if total.available >= self.replicas() - max_unavailable(&self.d) {
            set_condition(
                &mut st.conditions,
                AVAILABLE,
                ConditionStatus::True,
                MINIMUM_REPLICAS_AVAILABLE,
                "Deployment has minimum availability.",
                self.now,
            );
        } else {
            set_condition(
                &mut st.conditions,
                AVAILABLE,
                ConditionStatus::False,
                MINIMUM_REPLICAS_UNAVAILABLE,
                "Deployment does not have minimum availability.",
                self.now,
            );
        }
        st
    }

    fn next_availability(&mut self) {
        let next = self
            .live()
            .filter_map(|i| self.counts(i).next_available)
            .min();
        if let Some(t) = next {
            self.requeue_at(t);
        }
    }

    /// Kubernetes' `syncDeploymentStatus` (no progress estimate: paused
    /// Deployments and scaling).
    fn sync_status(&mut self, new: Option<usize>) {
        self.d.status = self.calculate_status(new);
        self.next_availability();
    }

    /// Kubernetes' `syncRolloutStatus`: the status with the progress
    /// estimate and the ReplicaSets' failures.
    fn sync_rollout_status(&mut self, new: Option<usize>) {
        let mut st = self.calculate_status(new);
        let deadline = progress_deadline(&self.d);
        let name = new.map(|i| self.rss[i].cur.metadata.name.clone());
        let what = match &name {
            Some(n) => format!("ReplicaSet {n:?}"),
            None => format!("Deployment {:?}", self.d.metadata.name),
        };
        match deadline {
            None => st.conditions.retain(|c| c.kind != PROGRESSING),
            Some(deadline) => {
                let cur = condition(&self.d.status.conditions, PROGRESSING).cloned();
                let done = st.replicas == st.updated_replicas
                    && cur.as_ref().is_some_and(|c| c.reason == NEW_RS_AVAILABLE);
                if !done {
                    if complete(&self.d, &st) {
                        set_condition(
                            &mut st.conditions,
                            PROGRESSING,
                            ConditionStatus::True,
                            NEW_RS_AVAILABLE,
                            &format!("{what} has successfully progressed."),
                            self.now,
                        );
                    } else if (progressing(&self.d.status, &st) || self.prefetch_ended)
                        && !self.held(new)
                    {
                        let message = format!("{what} is progressing.");
                        let transition = cur
                            .as_ref()
                            .filter(|c| c.status == ConditionStatus::True)
                            .and_then(|c| c.last_transition_time)
                            .unwrap_or(self.now);
                        st.conditions.retain(|c| c.kind != PROGRESSING);
                        st.conditions.push(WorkloadCondition {
                            kind: PROGRESSING.to_string(),
                            status: ConditionStatus::True,
                            reason: RS_UPDATED.to_string(),
                            message,
                            last_update_time: Some(self.now),
                            last_transition_time: Some(transition),
                        });
                    } else if timed_out(&st, deadline, self.now) {
                        let already = cur.as_ref().is_some_and(|c| c.reason == TIMED_OUT);
                        let message = format!("{what} has timed out progressing.");
                        set_condition(
                            &mut st.conditions,
                            PROGRESSING,
                            ConditionStatus::False,
                            TIMED_OUT,
                            &message,
                            self.now,
                        );
                        if !already {
                            self.writes.push(Write::event(
                                EventType::Warning,
                                TIMED_OUT,
                                self.me.clone(),
                                format!(
                                    "{message} No progress for {}s (progressDeadlineSeconds); \
                                     old replica sets are no longer scaled down until the \
                                     new pods are all available or the spec changes \
                                     (`outpostctl rollout undo deployment/{}` goes back).",
                                    deadline.as_secs(),
                                    self.d.metadata.name
                                ),
                            ));
                        }
                    }
                }
                // Look again at the deadline while the rollout is stuck.
                if let Some(c) = condition(&st.conditions, PROGRESSING) {
                    let stuck = !complete(&self.d, &st) && c.reason != TIMED_OUT;
                    // Only a deadline still ahead: one already behind with
                    // no timeout set (a complete rollout that lost pods,
                    // which Kubernetes requeues rate-limited forever) would
                    // wake this key at once, every step; the pod changes
                    // that can change the answer requeue it anyway.
                    if let (true, Some(from)) = (stuck, c.last_update_time) {
                        if from.plus(deadline) > self.now {
                            self.requeue_at(from.plus(deadline));
                        }
                    }
                }
            }
        }
        // The new ReplicaSet's failure first, then any old one's.
        let failure = new
            .into_iter()
            .chain(self.live())
            .find_map(|i| condition(&self.rss[i].cur.status.conditions, REPLICA_FAILURE).cloned());
        match failure {
            Some(f) => set_condition(
                &mut st.conditions,
                REPLICA_FAILURE,
                f.status,
                &f.reason,
                &f.message,
                self.now,
            ),
            None => st.conditions.retain(|c| c.kind != REPLICA_FAILURE),
        }
        self.d.status = st;
        self.next_availability();
    }

    /// Kubernetes' `checkPausedConditions`.
    fn check_paused_conditions(&mut self) {
        if progress_deadline(&self.d).is_none() {
            return;
        }
        let cur = condition(&self.d.status.conditions, PROGRESSING);
        if cur.is_some_and(|c| c.reason == TIMED_OUT) {
            return;
        }
        let paused_set = cur.is_some_and(|c| c.reason == PAUSED);
        let (reason, message) = match (self.d.spec.paused, paused_set) {
            (true, false) => (PAUSED, "Deployment is paused"),
            (false, true) => (RESUMED, "Deployment is resumed"),
            _ => return,
        };
        set_condition(
            &mut self.d.status.conditions,
            PROGRESSING,
            ConditionStatus::Unknown,
            reason,
            message,
            self.now,
        );
    }

    /// The writes: each changed object once.
    fn finish(mut self) -> Outcome {
        let mut writes = Vec::new();
        for rs in &self.rss {
            match rs.cached {
                Some(c) if rs.deleted => {
                    writes.push(Write::delete(&Object::ReplicaSet((**c).clone())))
                }
                Some(c) if **c != rs.cur => {
                    writes.push(Write::Update(Object::ReplicaSet(rs.cur.clone())))
                }
                Some(_) => {}
                None if !rs.deleted => {
                    writes.push(Write::Create(Object::ReplicaSet(rs.cur.clone())))
                }
                None => {}
            }
        }
        if self.d != *self.cached {
            writes.push(Write::Update(Object::Deployment(self.d.clone())));
        }
        writes.append(&mut self.writes);
        Outcome {
            writes,
            requeue_after: self.requeue,
        }
    }
}

/// Whether an active pod has what it needs to start where it is bound:
/// it runs (its images are there), or its node reports every image of
/// it. A pod still pulling (or not yet bound) is not: the old pod it
/// replaces keeps serving meanwhile.
fn staged(cache: &Cache, p: &Pod) -> bool {
    if !replicas::is_active(p) {
        return false;
    }
    let Some(node) = p.node() else { return false };
    if p.status.phase == PodPhase::Running {
        return true;
    }
    let Some(node) = cache.node(node) else {
        return false;
    };
    p.spec.images().all(|image| {
        let want = normalize(image);
        node.images
            .iter()
            .any(|i| i.names.iter().any(|n| normalize(n) == want))
    })
}

/// Kubernetes' `DeploymentTimedOut`, at the deadline itself included.
fn timed_out(st: &DeploymentStatus, deadline: Duration, now: Time) -> bool {
    let Some(c) = condition(&st.conditions, PROGRESSING) else {
        return false;
    };
    if c.reason == NEW_RS_AVAILABLE {
        return false;
    }
    if c.reason == TIMED_OUT {
        return true;
    }
    c.last_update_time
        .is_some_and(|from| from.plus(deadline) <= now)
}

/// The Deployment a ReplicaSet belongs to (its controller), as a key.
fn deployment_of(rs: &ReplicaSet) -> Option<String> {
    rs.metadata
        .controller_ref()
        .filter(|r| r.kind == Kind::Deployment.name())
        .map(|r| ns_name(&rs.metadata.namespace, &r.name))
}

/// The Deployment controller (see the module doc). Stateless.
#[derive(Debug, Default)]
pub struct DeploymentController;

impl Controller for DeploymentController {
    fn name(&self) -> &'static str {
        "deployment"
    }

    fn keys_for(&self, change: &Change, cache: &Cache, out: &mut Vec<String>) {
        let both = [&change.old, &change.new];
        match change.kind {
            Kind::Deployment => out.push(change.key.clone()),
            Kind::ReplicaSet => {
                for c in both.into_iter().flatten() {
                    if let crate::cache::Cached::ReplicaSet(rs) = c {
                        out.extend(deployment_of(rs));
                    }
                }
            }
            Kind::Pod if replicas::replica_changed(change) => {
                for p in both.into_iter().flatten().filter_map(|c| c.as_pod()) {
                    let Some(r) = p.metadata.controller_ref() else {
                        continue;
                    };
                    if r.kind != Kind::ReplicaSet.name() {
                        continue;
                    }
                    let Some(rs) = cache.replicaset(&ns_name(&p.metadata.namespace, &r.name))
                    else {
                        continue;
                    };
                    if rs.metadata.uid == r.uid {
                        out.extend(deployment_of(rs));
                    }
                }
            }
            // A node's image list: a Deployment waiting for images there
            // may go on.
            Kind::Node => {
                let images = |c: &Option<crate::cache::Cached>| {
                    c.as_ref()
                        .and_then(|c| c.as_node())
                        .map(|n| n.images.clone())
                };
                if images(&change.old) != images(&change.new) {
                    out.extend(prefetch::waiting_on(cache, &change.key));
                }
            }
            _ => {}
        }
        out.sort_unstable();
        out.dedup();
    }

    fn all_keys(&self, cache: &Cache) -> Vec<String> {
        cache.keys(Kind::Deployment)
    }

    fn reconcile(&mut self, key: &str, cache: &Cache, now: Time) -> Outcome {
        let Some(d) = cache.deployment(key) else {
            // Gone: the garbage collector deletes its ReplicaSets.
            return Outcome::none();
        };
        let mut s = Sync::new(d, cache, now);
        if d.spec.selector.is_empty() {
            // Validation refuses this; say so once per generation.
            if d.status.observed_generation != d.metadata.generation {
                s.d.status.observed_generation = d.metadata.generation;
                s.writes.push(Write::event(
                    EventType::Warning,
                    "SelectorRequired",
                    s.me.clone(),
                    "This deployment selects every pod: give spec.selector the labels of its template",
                ));
            }
            return s.finish();
        }
        s.reset_deadline_on_spec_change();
        s.reset_prefetch_on_spec_change();
        s.check_paused_conditions();
        // While paused only scaling happens; a scaling event is handled
        // before any rollout step, as Kubernetes does.
        let new = s.sync_revision(false);
        if d.spec.paused || s.is_scaling_event() {
            s.scale(new);
            if d.spec.paused {
                s.cleanup(new);
            }
            s.sync_status(new);
        } else {
            match d.spec.strategy.kind {
                StrategyType::Recreate => s.rollout_recreate(),
                StrategyType::RollingUpdate => s.rollout_rolling(),
            }
        }
        s.finish()
    }
}

#[cfg(test)]
mod tests;
