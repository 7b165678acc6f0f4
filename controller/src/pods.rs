//! Pod registry: the pods operators asked for, bound to nodes, and what the
//! nodes say about them.
//!
//! Pure state machine like `registry`: no I/O, callers persist the returned
//! records. Desired state flows to each node with a generation: every change
//! to a pod bumps the cluster-wide revision `rev` and stamps the pod with it,
//! so "what changed for node N since generation G" is the node's pods with a
//! larger stamp. A deleted pod stays as a `deleting` record (a tombstone the
//! delta carries as a removal) until its node reports it gone, so a removal
//! cannot be lost to a disconnect or a controller restart. Statuses and usage
//! are live state, kept in memory only (no disk write per report).

use outpost_proto::pod::{DesiredPod, PodSpec, PodStatus, PodView, Usage};
use outpost_proto::{PodStatusUpdate, PodsDesired, MAX_PODS_PER_NODE};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What the store keeps about a pod.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PodRecord {
    pub spec: PodSpec,
    /// Bumped when the spec changes; the agent replaces the containers.
    pub generation: u64,
    /// Cluster revision of the last change (the delta key).
    pub rev: u64,
    pub created_ms: u64,
    pub deleting: bool,
}

/// What an operation changed, for the caller to persist and announce.
#[derive(Debug, Clone, PartialEq)]
pub enum PodChange {
    /// Write this record.
    Persist(PodRecord),
    /// Remove the record of this pod.
    Forget(String),
}

/// Result of an apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Created,
    Configured,
    Unchanged,
}

#[derive(Debug, Default)]
struct Live {
    status: Option<PodStatus>,
    status_ms: u64,
}

/// All pods, indexed by node.
#[derive(Debug, Default)]
pub struct Pods {
    records: BTreeMap<String, PodRecord>,
    by_node: HashMap<String, BTreeSet<String>>,
    live: HashMap<String, Live>,
    node_usage: HashMap<String, Usage>,
    rev: u64,
}

impl Pods {
    pub fn load(records: Vec<PodRecord>) -> Pods {
        let mut p = Pods::default();
        for r in records {
            p.rev = p.rev.max(r.rev);
            p.index(&r);
            p.records.insert(r.spec.name.clone(), r);
        }
        p
    }

    fn index(&mut self, r: &PodRecord) {
        if let Some(n) = &r.spec.node_name {
            self.by_node
                .entry(n.clone())
                .or_default()
                .insert(r.spec.name.clone());
        }
    }

    fn unindex(&mut self, name: &str, node: Option<&str>) {
        if let Some(n) = node {
            if let Some(set) = self.by_node.get_mut(n) {
                set.remove(name);
                if set.is_empty() {
                    self.by_node.remove(n);
                }
            }
        }
    }

    /// Current cluster revision: the generation agents acknowledge.
    pub fn rev(&self) -> u64 {
        self.rev
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Pods bound to `node` (including ones being deleted).
    pub fn count_on(&self, node: &str) -> usize {
        self.by_node.get(node).map_or(0, BTreeSet::len)
    }

    /// Creates or updates a pod. `node_exists` says whether its nodeName
    /// names an enrolled node.
    pub fn apply(
        &mut self,
        spec: PodSpec,
        node_exists: bool,
        now_ms: u64,
    ) -> Result<(Applied, Vec<PodChange>), String> {
        spec.validate()?;
        if let Some(n) = &spec.node_name {
            if !node_exists {
                return Err(format!(
                    "node {n:?} is not enrolled; `outpostctl get nodes` lists the nodes a pod can be bound to"
                ));
            }
        }
        let name = spec.name.clone();
        match self.records.get(&name) {
            Some(old) if old.deleting => Err(format!(
                "pod {name} is being deleted; wait until `outpostctl get pods` no longer lists it"
            )),
            Some(old) if old.spec.node_name != spec.node_name => Err(format!(
                "pod {name}: nodeName is immutable (bound to {}); delete the pod and create it again to move it",
                old.spec.node_name.as_deref().unwrap_or("no node")
            )),
            Some(old) if old.spec == spec => Ok((Applied::Unchanged, Vec::new())),
            Some(old) => {
                if let Some(n) = &spec.node_name {
                    self.check_room(n, false)?;
                }
                let mut rec = old.clone();
                self.rev += 1;
                rec.spec = spec;
                rec.generation += 1;
                rec.rev = self.rev;
                self.records.insert(name, rec.clone());
                Ok((Applied::Configured, vec![PodChange::Persist(rec)]))
            }
            None => {
                if let Some(n) = &spec.node_name {
                    self.check_room(n, true)?;
                }
                self.rev += 1;
                let rec = PodRecord {
                    spec,
                    generation: 1,
                    rev: self.rev,
                    created_ms: now_ms,
                    deleting: false,
                };
                self.index(&rec);
                self.records.insert(name, rec.clone());
                Ok((Applied::Created, vec![PodChange::Persist(rec)]))
            }
        }
    }

    fn check_room(&self, node: &str, new: bool) -> Result<(), String> {
        if new && self.count_on(node) >= MAX_PODS_PER_NODE {
            return Err(format!(
                "node {node} already has {MAX_PODS_PER_NODE} pods, the most one node runs"
            ));
        }
        Ok(())
    }

    /// Marks a pod for deletion. A pod on no node goes at once.
    pub fn delete(&mut self, name: &str) -> Result<Vec<PodChange>, String> {
        let Some(rec) = self.records.get(name) else {
            return Err(format!("pod {name:?} not found"));
        };
        if rec.deleting {
            return Ok(Vec::new());
        }
        if rec.spec.node_name.is_none() {
            self.records.remove(name);
            self.live.remove(name);
            return Ok(vec![PodChange::Forget(name.to_string())]);
        }
        self.rev += 1;
        let mut rec = rec.clone();
        rec.deleting = true;
        rec.rev = self.rev;
        self.records.insert(name.to_string(), rec.clone());
        Ok(vec![PodChange::Persist(rec)])
    }

    /// Forgets every pod of a deleted node.
    pub fn node_deleted(&mut self, node: &str) -> Vec<PodChange> {
        let names = self.by_node.remove(node).unwrap_or_default();
        self.node_usage.remove(node);
        names
            .into_iter()
            .map(|n| {
                self.records.remove(&n);
                self.live.remove(&n);
                PodChange::Forget(n)
            })
            .collect()
    }

    /// Node this pod is bound to.
    pub fn node_of(&self, name: &str) -> Option<&str> {
        self.records.get(name)?.spec.node_name.as_deref()
    }

    /// What `node` must be told, given the generation it acknowledged:
    /// everything when it has nothing (0) or a generation this controller
    /// never issued, else only the pods changed since.
    pub fn desired_for(&self, node: &str, acked: u64) -> PodsDesired {
        let full = acked == 0 || acked > self.rev;
        let mut pods = Vec::new();
        let mut removed = Vec::new();
        for name in self.by_node.get(node).into_iter().flatten() {
            let Some(r) = self.records.get(name) else {
                continue;
            };
            if !full && r.rev <= acked {
                continue;
            }
            if r.deleting {
                if !full {
                    removed.push(name.clone());
                }
            } else {
                pods.push(DesiredPod {
                    generation: r.generation,
                    spec: r.spec.clone(),
                });
            }
        }
        PodsDesired {
            generation: self.rev,
            full,
            pods,
            removed,
        }
    }

    /// Takes a status update from `node`'s agent. Only pods bound to that
    /// node are accepted; a deleting pod the agent no longer has is forgotten.
    pub fn statuses(
        &mut self,
        node: &str,
        update: PodStatusUpdate,
        now_ms: u64,
    ) -> Result<Vec<PodChange>, String> {
        if update.pods.len() > MAX_PODS_PER_NODE || update.gone.len() > MAX_PODS_PER_NODE {
            return Err(format!(
                "status update has {} pods and {} gone; at most {MAX_PODS_PER_NODE} each",
                update.pods.len(),
                update.gone.len()
            ));
        }
        for s in &update.pods {
            s.validate()
                .map_err(|e| format!("status of pod {}: {e}", s.name))?;
        }
        self.node_usage.insert(node.to_string(), update.node_usage);
        let mine = self.by_node.get(node).cloned().unwrap_or_default();
        let mut gone: BTreeSet<String> = update
            .gone
            .into_iter()
            .filter(|n| mine.contains(n))
            .collect();
        if update.full {
            let have: BTreeSet<&str> = update.pods.iter().map(|s| s.name.as_str()).collect();
            for n in &mine {
                if !have.contains(n.as_str()) {
                    if let Some(l) = self.live.get_mut(n) {
                        l.status = None;
                    }
                    gone.insert(n.clone());
                }
            }
        }
        for s in update.pods {
            if !mine.contains(&s.name) {
                // Not (or no longer) bound here: the next desired state
                // tells the agent to drop it.
                continue;
            }
            let l = self.live.entry(s.name.clone()).or_default();
            l.status = Some(s);
            l.status_ms = now_ms;
        }
        let mut changes = Vec::new();
        for n in gone {
            self.live.remove(&n);
            if self.records.get(&n).is_some_and(|r| r.deleting) {
                self.records.remove(&n);
                self.unindex(&n, Some(node));
                changes.push(PodChange::Forget(n));
            }
        }
        Ok(changes)
    }

    pub fn view(&self, name: &str, node_ready: &dyn Fn(&str) -> bool) -> Option<PodView> {
        let r = self.records.get(name)?;
        let live = self.live.get(name);
        Some(PodView {
            spec: r.spec.clone(),
            generation: r.generation,
            created_ms: r.created_ms,
            deleting: r.deleting,
            status: live.and_then(|l| l.status.clone()),
            status_ms: live.map_or(0, |l| l.status_ms),
            node_ready: r.spec.node_name.as_deref().is_some_and(node_ready),
        })
    }

    /// Pods, optionally only those on `node`, by name.
    pub fn list(&self, node: Option<&str>, node_ready: &dyn Fn(&str) -> bool) -> Vec<PodView> {
        let names: Vec<&String> = match node {
            Some(n) => self.by_node.get(n).into_iter().flatten().collect(),
            None => self.records.keys().collect(),
        };
        names
            .into_iter()
            .filter_map(|n| self.view(n, node_ready))
            .collect()
    }

    pub fn node_usage(&self, node: &str) -> Option<Usage> {
        self.node_usage.get(node).copied()
    }

    pub fn node_usages(&self) -> Vec<(String, Usage)> {
        let mut v: Vec<(String, Usage)> = self
            .node_usage
            .iter()
            .map(|(k, u)| (k.clone(), *u))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_proto::pod::{ContainerSpec, PodPhase};

    fn spec(name: &str, node: &str, image: &str) -> PodSpec {
        PodSpec {
            node_name: Some(node.into()),
            ..PodSpec::new(name, vec![ContainerSpec::new("main", image)])
        }
    }

    fn status(name: &str) -> PodStatus {
        PodStatus {
            name: name.into(),
            generation: 1,
            phase: PodPhase::Running,
            reason: String::new(),
            message: String::new(),
            ready: true,
            started_ms: 1,
            pod_ip: String::new(),
            containers: vec![],
            usage: Usage::default(),
        }
    }

    fn update(full: bool, pods: Vec<PodStatus>, gone: Vec<&str>) -> PodStatusUpdate {
        PodStatusUpdate {
            full,
            pods,
            gone: gone.into_iter().map(String::from).collect(),
            node_usage: Usage::default(),
        }
    }

    #[test]
    fn deltas_carry_only_changes_since_the_ack() {
        let mut p = Pods::default();
        p.apply(spec("a", "n1", "x:1"), true, 0).unwrap();
        p.apply(spec("b", "n1", "x:1"), true, 0).unwrap();
        p.apply(spec("c", "n2", "x:1"), true, 0).unwrap();
        let full = p.desired_for("n1", 0);
        assert!(full.full);
        assert_eq!(full.pods.len(), 2);
        assert_eq!(full.generation, 3);
        // Nothing changed since 3.
        let none = p.desired_for("n1", 3);
        assert!(!none.full && none.pods.is_empty() && none.removed.is_empty());
        // Same spec again: no new revision.
        assert_eq!(
            p.apply(spec("a", "n1", "x:1"), true, 0).unwrap().0,
            Applied::Unchanged
        );
        assert_eq!(p.rev(), 3);
        // Changed spec: new generation, in the delta.
        assert_eq!(
            p.apply(spec("a", "n1", "x:2"), true, 0).unwrap().0,
            Applied::Configured
        );
        p.delete("b").unwrap();
        let d = p.desired_for("n1", 3);
        assert!(!d.full);
        assert_eq!(d.pods.len(), 1);
        assert_eq!(d.pods[0].generation, 2);
        assert_eq!(d.removed, vec!["b".to_string()]);
        // n2 saw nothing new.
        assert!(p.desired_for("n2", 3).pods.is_empty());
        // A generation from the future (store restored from a backup): full.
        assert!(p.desired_for("n1", 99).full);
    }

    #[test]
    fn deleted_pods_stay_until_the_node_reports_them_gone() {
        let mut p = Pods::default();
        p.apply(spec("a", "n1", "x:1"), true, 0).unwrap();
        p.statuses("n1", update(false, vec![status("a")], vec![]), 5)
            .unwrap();
        p.delete("a").unwrap();
        let v = p.view("a", &|_| true).unwrap();
        assert!(v.deleting);
        assert!(v.status.is_some());
        // Re-applying a pod that is being deleted is refused.
        assert!(p.apply(spec("a", "n1", "x:1"), true, 0).is_err());
        let ch = p.statuses("n1", update(true, vec![], vec![]), 6).unwrap();
        assert_eq!(ch, vec![PodChange::Forget("a".into())]);
        assert!(p.view("a", &|_| true).is_none());
        assert_eq!(p.count_on("n1"), 0);
    }

    #[test]
    fn a_node_speaks_only_for_its_own_pods() {
        let mut p = Pods::default();
        p.apply(spec("a", "n1", "x:1"), true, 0).unwrap();
        p.apply(spec("b", "n2", "x:1"), true, 0).unwrap();
        p.delete("b").unwrap();
        // n1 reports on b (not its pod) and claims b is gone: ignored.
        let ch = p
            .statuses("n1", update(false, vec![status("b")], vec!["b"]), 1)
            .unwrap();
        assert!(ch.is_empty());
        assert!(p.view("b", &|_| true).unwrap().status.is_none());
    }

    #[test]
    fn node_name_is_immutable_and_must_exist() {
        let mut p = Pods::default();
        assert!(p
            .apply(spec("a", "n1", "x:1"), false, 0)
            .unwrap_err()
            .contains("not enrolled"));
        p.apply(spec("a", "n1", "x:1"), true, 0).unwrap();
        assert!(p
            .apply(spec("a", "n2", "x:1"), true, 0)
            .unwrap_err()
            .contains("immutable"));
        let mut bad = spec("B_ad", "n1", "x");
        bad.containers.clear();
        let e = p.apply(bad, true, 0).unwrap_err();
        assert!(
            e.contains("not a valid name") && e.contains("at least one container"),
            "{e}"
        );
    }

    #[test]
    fn reload_keeps_revision_and_tombstones() {
        let mut p = Pods::default();
        p.apply(spec("a", "n1", "x:1"), true, 0).unwrap();
        p.apply(spec("b", "n1", "x:1"), true, 0).unwrap();
        p.delete("a").unwrap();
        let recs: Vec<PodRecord> = p.records.values().cloned().collect();
        let q = Pods::load(recs);
        assert_eq!(q.rev(), 3);
        let d = q.desired_for("n1", 2);
        assert_eq!(d.removed, vec!["a".to_string()]);
        let full = q.desired_for("n1", 0);
        assert_eq!(full.pods.len(), 1);
    }
}
