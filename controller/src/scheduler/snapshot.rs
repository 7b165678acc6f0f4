//! The scheduler's picture of the cluster, kept incrementally from cache
//! changes (never rebuilt per pod): per node what the filters and scores
//! read, the pods counted on each node, and the indexes of
//! [`topology`](super::topology).
//!
//! A pod counts on its node while it is bound and not finished
//! (Terminating pods still count until they are gone, as in Kubernetes),
//! and from the moment the scheduler decides to place it ("assumed"), so
//! the next decision in the same call sees it. When the binding shows up in
//! the cache the assumed entry is replaced by the real one (same node: no
//! change in any count); when the binding fails it is forgotten.

use super::arch::{Images, NodeImage};
use super::topology::{
    AntiTerm, DomainCounts, DomainId, KeyId, LabelIndex, PodSet, SetKey, Topology, NO_DOMAIN,
};
use crate::api::pod::{NodeSelectorTerm, Pod, Protocol, Taint, TaintEffect};
use crate::api::resources::{add, sub};
use crate::cache::Cache;
use crate::registry::NodeRecord;
use outpost_proto::Resources;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Requests the scoring assumes for a pod that names none (Kubernetes'
/// `DefaultMilliCPURequest` and `DefaultMemoryRequest`), so empty pods do
/// not all pile onto one node.
pub const DEFAULT_MILLI_CPU: u64 = 100;
pub const DEFAULT_MEMORY: u64 = 200 * 1024 * 1024;

/// A pod's resources as scoring sees them: (cpu millis, memory bytes), with
/// the defaults above for zero requests.
pub fn non_zero(r: &Resources) -> (u64, u64) {
    (
        if r.cpu_millis == 0 {
            DEFAULT_MILLI_CPU
        } else {
            r.cpu_millis
        },
        if r.memory_bytes == 0 {
            DEFAULT_MEMORY
        } else {
            r.memory_bytes
        },
    )
}

/// A pod nominated to a node by preemption, holding room there.
#[derive(Debug, Clone)]
pub struct Nominated {
    pub key: Arc<str>,
    pub priority: i32,
    pub requests: Resources,
}

/// One node as the scheduler sees it. Laid out hot fields first (what the
/// filters and scores read for every node on every attempt sits in the
/// first cache lines), the rest after.
#[derive(Debug)]
#[repr(C)]
pub struct NodeInfo {
    pub ready: bool,
    pub unschedulable: bool,
    pub prefer_no_schedule: bool,
    pub pod_count: u32,
    /// The architecture as a bit (see [`Snapshot::arch_bit`]).
    pub arch_bit: u64,
    /// Domains of the well-known keys (hostname, zone, site), inline.
    fixed: [DomainId; 3],
    pub allocatable: Resources,
    /// Sum of the requests of the pods counted here.
    pub requested: Resources,
    /// The same with scoring's defaults for empty requests.
    pub non_zero: (u64, u64),
    pub taints: Vec<Taint>,
    /// Host ports in use: (port, protocol, pods using it).
    pub ports: Vec<(u16, Protocol, u32)>,
    pub nominated: Vec<Nominated>,
    /// Images held, sorted by image id.
    pub images: Vec<NodeImage>,
    /// Domain per topology key id (all keys).
    pub domains: Vec<DomainId>,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub arch: String,
    pub os: String,
    /// Keys of the pods counted here.
    pub pods: Vec<Arc<str>>,
}

impl NodeInfo {
    pub fn domain(&self, k: KeyId) -> DomainId {
        match self.fixed.get(k) {
            Some(d) => *d,
            None => self.domains.get(k).copied().unwrap_or(NO_DOMAIN),
        }
    }

    pub fn port_used(&self, port: u16, proto: Protocol) -> bool {
        self.ports.iter().any(|(p, q, _)| *p == port && *q == proto)
    }

    /// Size of image `id` if the node holds it.
    pub fn image(&self, id: u32) -> Option<u64> {
        self.images
            .binary_search_by_key(&id, |(i, _, _)| *i)
            .ok()
            .map(|i| self.images[i].1)
    }
}

/// A pod counted on a node.
#[derive(Debug)]
pub struct Counted {
    pub pod: Arc<Pod>,
    pub node: String,
    pub slot: Option<usize>,
    pub requests: Resources,
    pub non_zero: (u64, u64),
    pub assumed: bool,
    sets: Vec<(u32, u32)>,
    anti: Vec<u32>,
}

/// What a node change may have made possible, as bits of [`Event`].
pub type Events = u32;

/// Cluster events, as bits: which filters' rejections they may undo.
pub struct Event;
impl Event {
    pub const NODE_READY: Events = 1;
    pub const NODE_SCHEDULABLE: Events = 1 << 1;
    pub const TAINTS: Events = 1 << 2;
    pub const NODE_LABELS: Events = 1 << 3;
    pub const IMAGES: Events = 1 << 4;
    pub const RESOURCES: Events = 1 << 5;
    pub const PORTS: Events = 1 << 6;
    pub const POD_REMOVED: Events = 1 << 7;
    pub const POD_ADDED: Events = 1 << 8;
    pub const ALL: Events = u32::MAX;
}

/// Key of a node-affinity mask: the pod's nodeSelector and required terms.
pub type MaskKey = (BTreeMap<String, String>, Option<Vec<NodeSelectorTerm>>);

#[derive(Debug)]
struct Mask {
    key: MaskKey,
    bits: Vec<bool>,
    pins: u32,
}

fn mask_matches(key: &MaskKey, labels: &BTreeMap<String, String>) -> bool {
    key.0.iter().all(|(k, v)| labels.get(k) == Some(v))
        && key
            .1
            .as_ref()
            .is_none_or(|terms| terms.iter().any(|t| t.matches(labels)))
}

/// Unpinned sets kept for reuse before the least recently used go.
const IDLE_SETS: usize = 512;

/// The snapshot.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub nodes: Vec<Option<NodeInfo>>,
    free: Vec<usize>,
    by_name: HashMap<String, usize>,
    pub live: usize,
    pub topo: Topology,
    pods: HashMap<Arc<str>, Counted>,
    sets: Vec<Option<PodSet>>,
    set_gen: Vec<u32>,
    set_free: Vec<u32>,
    set_ids: HashMap<SetKey, u32>,
    set_index: LabelIndex,
    anti: Vec<Option<AntiTerm>>,
    anti_free: Vec<u32>,
    anti_ids: HashMap<(SetKey, KeyId), u32>,
    anti_index: LabelIndex,
    pub images: Images,
    masks: Vec<Option<Mask>>,
    mask_free: Vec<u32>,
    mask_ids: HashMap<MaskKey, u32>,
    /// Nodes with a PreferNoSchedule taint (TaintToleration scores only
    /// matter when there is one).
    pub prefer_taint_nodes: usize,
    /// Schedule calls so far (for set reuse).
    pub tick: u64,
    /// Where each nominated pod holds room.
    nominations: HashMap<Arc<str>, usize>,
    /// Architectures seen, by bit.
    archs: Vec<String>,
}

fn effect(e: outpost_proto::TaintEffect) -> TaintEffect {
    e.into()
}

impl Snapshot {
    pub fn node(&self, slot: usize) -> Option<&NodeInfo> {
        self.nodes.get(slot).and_then(Option::as_ref)
    }

    pub fn slot_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub fn counted(&self, key: &str) -> Option<&Counted> {
        self.pods.get(key)
    }

    pub fn set(&self, id: u32) -> &PodSet {
        self.sets[id as usize].as_ref().expect("pinned sets stay")
    }

    pub fn anti_term(&self, id: u32) -> &AntiTerm {
        self.anti[id as usize].as_ref().expect("live anti term")
    }

    pub fn node_count(&self) -> usize {
        self.live
    }

    /// The bit of an architecture nodes have (0 for one no node has).
    pub fn arch_bit(&self, arch: &str) -> u64 {
        self.archs
            .iter()
            .position(|a| a == arch)
            .map_or(0, |i| 1u64 << i.min(63))
    }

    fn intern_arch(&mut self, arch: &str) -> u64 {
        if !self.archs.iter().any(|a| a == arch) {
            self.archs.push(arch.to_string());
        }
        self.arch_bit(arch)
    }

    // ---- topology keys ----

    /// The id of a topology key, filling in every node's domain the first
    /// time it is named.
    pub fn key_id(&mut self, key: &str) -> KeyId {
        let (id, new) = self.topo.intern(key);
        if new {
            for n in self.nodes.iter_mut().flatten() {
                let d = match n.labels.get(key) {
                    Some(v) => {
                        let tk = &mut self.topo.keys[id];
                        let d = tk.domain(v);
                        tk.node_added(d, n.ready);
                        d
                    }
                    None => NO_DOMAIN,
                };
                n.domains.resize(id, NO_DOMAIN);
                n.domains.push(d);
            }
        }
        id
    }

    // ---- nodes ----

    /// Adds or updates a node; returns what the change may have made
    /// possible for waiting pods.
    pub fn set_node(&mut self, rec: &NodeRecord, cache: &Cache) -> Events {
        let labels = rec.labels();
        let Some(slot) = self.slot_of(&rec.name) else {
            self.add_node(rec, labels, cache);
            return Event::ALL;
        };
        let old = self.nodes[slot].as_ref().expect("indexed node");
        if old.labels != labels || old.arch != rec.info.arch {
            self.remove_node(&rec.name);
            self.add_node(rec, labels, cache);
            return Event::ALL;
        }
        let taints: Vec<Taint> = rec
            .taints()
            .into_iter()
            .map(|t| Taint {
                key: t.key,
                value: String::new(),
                effect: effect(t.effect),
            })
            .collect();
        let mut ev = 0;
        let ready = rec.is_ready();
        if ready && !old.ready {
            ev |= Event::NODE_READY;
        }
        let ready_flipped = ready != old.ready;
        if !rec.unschedulable && old.unschedulable {
            ev |= Event::NODE_SCHEDULABLE;
        }
        if old.taints.iter().any(|t| !taints.contains(t)) {
            ev |= Event::TAINTS;
        }
        let a = &rec.allocatable;
        let o = &old.allocatable;
        if a.cpu_millis > o.cpu_millis
            || a.memory_bytes > o.memory_bytes
            || a.pids > o.pids
            || a.gpus > o.gpus
            || a.ephemeral_storage_bytes > o.ephemeral_storage_bytes
        {
            ev |= Event::RESOURCES;
        }
        let old_images = if same_images(old, rec, &self.images) {
            None
        } else {
            ev |= Event::IMAGES;
            Some(std::mem::take(
                &mut self.nodes[slot].as_mut().expect("node").images,
            ))
        };
        if let Some(old_images) = old_images {
            self.images.remove_node(&old_images);
            let new = self.images.add_node(&rec.images, &rec.info.arch);
            self.nodes[slot].as_mut().expect("node").images = new;
        }
        let n = self.nodes[slot].as_mut().expect("node");
        let prefer = taints
            .iter()
            .any(|t| t.effect == TaintEffect::PreferNoSchedule);
        if prefer != n.prefer_no_schedule {
            if prefer {
                self.prefer_taint_nodes += 1;
            } else {
                self.prefer_taint_nodes -= 1;
            }
        }
        n.prefer_no_schedule = prefer;
        n.taints = taints;
        n.ready = ready;
        n.unschedulable = rec.unschedulable;
        n.os = rec.info.os.clone();
        n.allocatable = rec.allocatable;
        if ready_flipped {
            self.readiness_changed(slot, ready);
        }
        ev
    }

    /// A node's domains gain or lose a Ready node; domains that become or
    /// stop being live are told to every counting set and term.
    fn readiness_changed(&mut self, slot: usize, ready: bool) {
        let domains = self.nodes[slot].as_ref().expect("node").domains.clone();
        for (k, d) in domains.into_iter().enumerate() {
            if d == NO_DOMAIN || !self.topo.keys[k].ready_changed(d, ready) {
                continue;
            }
            for s in self.sets.iter_mut().flatten() {
                if let Some(dc) = s.by_key.get_mut(k).and_then(Option::as_mut) {
                    dc.domain_live(d, ready);
                }
            }
            for a in self.anti.iter_mut().flatten() {
                if a.topo == k {
                    a.owners.domain_live(d, ready);
                }
            }
        }
    }

    fn add_node(&mut self, rec: &NodeRecord, labels: BTreeMap<String, String>, cache: &Cache) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.nodes.push(None);
            self.nodes.len() - 1
        });
        let mut domains = Vec::with_capacity(self.topo.keys.len());
        for (k, tk) in self.topo.keys.iter_mut().enumerate() {
            let d = match labels.get(&tk.key) {
                Some(v) => {
                    let d = tk.domain(v);
                    if tk.node_added(d, rec.is_ready()) {
                        for s in self.sets.iter_mut().flatten() {
                            if let Some(dc) = s.by_key.get_mut(k).and_then(Option::as_mut) {
                                dc.domain_live(d, true);
                            }
                        }
                        for a in self.anti.iter_mut().flatten() {
                            if a.topo == k {
                                a.owners.domain_live(d, true);
                            }
                        }
                    }
                    d
                }
                None => NO_DOMAIN,
            };
            domains.push(d);
        }
        for (i, m) in self.masks.iter_mut().enumerate() {
            if let Some(m) = m {
                if m.bits.len() <= slot {
                    m.bits.resize(slot + 1, false);
                }
                m.bits[slot] = mask_matches(&m.key, &labels);
            }
            let _ = i;
        }
        let taints: Vec<Taint> = rec
            .taints()
            .into_iter()
            .map(|t| Taint {
                key: t.key,
                value: String::new(),
                effect: effect(t.effect),
            })
            .collect();
        let prefer = taints
            .iter()
            .any(|t| t.effect == TaintEffect::PreferNoSchedule);
        if prefer {
            self.prefer_taint_nodes += 1;
        }
        let images = self.images.add_node(&rec.images, &rec.info.arch);
        let arch_bit = self.intern_arch(&rec.info.arch);
        self.nodes[slot] = Some(NodeInfo {
            arch_bit,
            name: rec.name.clone(),
            labels,
            taints,
            ready: rec.is_ready(),
            unschedulable: rec.unschedulable,
            arch: rec.info.arch.clone(),
            os: rec.info.os.clone(),
            allocatable: rec.allocatable,
            requested: Resources::default(),
            non_zero: (0, 0),
            pod_count: 0,
            ports: Vec::new(),
            images,
            fixed: [
                domains.first().copied().unwrap_or(NO_DOMAIN),
                domains.get(1).copied().unwrap_or(NO_DOMAIN),
                domains.get(2).copied().unwrap_or(NO_DOMAIN),
            ],
            domains,
            pods: Vec::new(),
            nominated: Vec::new(),
            prefer_no_schedule: prefer,
        });
        self.by_name.insert(rec.name.clone(), slot);
        self.live += 1;
        // Pods already bound here (the node came back, or was relisted).
        let keys: Vec<Arc<str>> = cache
            .pods_on(&rec.name)
            .filter_map(|p| {
                let k = crate::api::ns_name(&p.metadata.namespace, &p.metadata.name);
                self.pods
                    .get_key_value(k.as_str())
                    .filter(|(_, c)| c.slot.is_none() && c.node == rec.name)
                    .map(|(k, _)| k.clone())
            })
            .collect();
        for k in keys {
            self.attach(&k, slot);
        }
    }

    /// Removes a node; its pods stay known but count nowhere.
    pub fn remove_node(&mut self, name: &str) {
        let Some(slot) = self.by_name.remove(name) else {
            return;
        };
        let pods: Vec<Arc<str>> = self.nodes[slot].as_ref().expect("node").pods.clone();
        for k in pods {
            self.detach(&k);
        }
        let n = self.nodes[slot].take().expect("node");
        for (k, d) in n.domains.iter().enumerate() {
            if *d == NO_DOMAIN {
                continue;
            }
            let tk = &mut self.topo.keys[k];
            if tk.node_removed(*d, n.ready) {
                for s in self.sets.iter_mut().flatten() {
                    if let Some(dc) = s.by_key.get_mut(k).and_then(Option::as_mut) {
                        dc.domain_live(*d, false);
                    }
                }
                for a in self.anti.iter_mut().flatten() {
                    if a.topo == k {
                        a.owners.domain_live(*d, false);
                    }
                }
            }
        }
        for m in self.masks.iter_mut().flatten() {
            if let Some(b) = m.bits.get_mut(slot) {
                *b = false;
            }
        }
        if n.prefer_no_schedule {
            self.prefer_taint_nodes -= 1;
        }
        for x in &n.nominated {
            self.nominations.remove(&x.key);
        }
        self.images.remove_node(&n.images);
        self.free.push(slot);
        self.live -= 1;
    }

    // ---- pods ----

    /// Counts `pod` on `node` (bound, or assumed by the scheduler).
    pub fn add_pod(&mut self, key: Arc<str>, pod: Arc<Pod>, node: &str, assumed: bool) {
        // The binding of an assumed pod showing up: nothing it counts in
        // changed (same node, labels, requests, ports and terms), so only
        // the copy is swapped.
        if let Some(c) = self.pods.get_mut(&*key) {
            let same = c.assumed
                && c.node == node
                && c.slot.is_some()
                && c.pod.metadata.labels == pod.metadata.labels
                && c.pod.metadata.is_deleting() == pod.metadata.is_deleting()
                && c.pod.spec.containers == pod.spec.containers
                && c.pod.spec.affinity == pod.spec.affinity;
            if same {
                c.pod = pod;
                c.assumed = assumed;
                return;
            }
        }
        self.forget(&key);
        let requests = pod.requests();
        let c = Counted {
            non_zero: non_zero(&requests),
            requests,
            node: node.to_string(),
            slot: None,
            assumed,
            sets: Vec::new(),
            anti: Vec::new(),
            pod,
        };
        self.pods.insert(key.clone(), c);
        if let Some(slot) = self.slot_of(node) {
            self.attach(&key, slot);
        }
    }

    /// Stops counting a pod; returns whether it counted somewhere.
    pub fn forget(&mut self, key: &str) -> bool {
        let Some(c) = self.pods.get(key) else {
            return false;
        };
        let was = c.slot.is_some();
        if was {
            self.detach(key);
        }
        self.pods.remove(key);
        was
    }

    /// Marks an assumed pod as confirmed (its binding is in the cache).
    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|c| c.assumed)
    }

    fn attach(&mut self, key: &str, slot: usize) {
        let Some((k, c)) = self.pods.get_key_value(key) else {
            return;
        };
        let k = k.clone();
        let pod = c.pod.clone();
        let (requests, nz) = (c.requests, c.non_zero);
        // Required anti-affinity terms of this pod, interned first (that
        // may register topology keys).
        let mut anti_ids = Vec::new();
        if let Some(terms) = pod
            .spec
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
        {
            for t in &terms.required_during_scheduling_ignored_during_execution {
                let topo = self.key_id(&t.topology_key);
                let key = SetKey {
                    namespaces: namespaces(&t.namespaces, &pod.metadata.namespace),
                    selector: t.label_selector.clone().unwrap_or_default(),
                    terminating: true,
                };
                anti_ids.push(self.anti_id(key, topo));
            }
        }
        let node = self.nodes[slot].as_mut().expect("live node");
        node.requested = add(&node.requested, &requests);
        node.non_zero.0 += nz.0;
        node.non_zero.1 += nz.1;
        node.pod_count += 1;
        for (port, proto) in pod.spec.host_ports() {
            match node
                .ports
                .iter_mut()
                .find(|(p, q, _)| *p == port && *q == proto)
            {
                Some(e) => e.2 += 1,
                None => node.ports.push((port, proto, 1)),
            }
        }
        node.pods.push(k.clone());
        let mut set_refs = Vec::new();
        let sets = &mut self.sets;
        let gens = &self.set_gen;
        let node = self.nodes[slot].as_ref().expect("live node");
        self.set_index.candidates(&pod.metadata.labels, |id| {
            let Some(s) = sets[id as usize].as_mut() else {
                return;
            };
            if !s.key.matches(&pod) {
                return;
            }
            add_member(s, slot, node, 1);
            set_refs.push((id, gens[id as usize]));
        });
        for id in &anti_ids {
            let a = self.anti[*id as usize].as_mut().expect("anti term");
            a.owners.bump(node.domain(a.topo), 1);
            a.total += 1;
        }
        let c = self.pods.get_mut(key).expect("counted pod");
        c.slot = Some(slot);
        c.sets = set_refs;
        c.anti = anti_ids;
    }

    fn detach(&mut self, key: &str) {
        let Some(c) = self.pods.get_mut(key) else {
            return;
        };
        let Some(slot) = c.slot.take() else { return };
        let sets = std::mem::take(&mut c.sets);
        let anti = std::mem::take(&mut c.anti);
        let (requests, nz) = (c.requests, c.non_zero);
        let pod = c.pod.clone();
        let node = self.nodes[slot].as_mut().expect("live node");
        node.requested = sub(&node.requested, &requests);
        node.non_zero.0 = node.non_zero.0.saturating_sub(nz.0);
        node.non_zero.1 = node.non_zero.1.saturating_sub(nz.1);
        node.pod_count = node.pod_count.saturating_sub(1);
        for (port, proto) in pod.spec.host_ports() {
            if let Some(i) = node
                .ports
                .iter()
                .position(|(p, q, _)| *p == port && *q == proto)
            {
                node.ports[i].2 -= 1;
                if node.ports[i].2 == 0 {
                    node.ports.swap_remove(i);
                }
            }
        }
        if let Some(i) = node.pods.iter().position(|k| &**k == key) {
            node.pods.swap_remove(i);
        }
        let node = self.nodes[slot].as_ref().expect("live node");
        for (id, gen) in sets {
            if self.set_gen[id as usize] != gen {
                continue;
            }
            if let Some(s) = self.sets[id as usize].as_mut() {
                add_member(s, slot, node, -1);
            }
        }
        for id in anti {
            let a = self.anti[id as usize].as_mut().expect("anti term");
            a.owners.bump(node.domain(a.topo), -1);
            a.total -= 1;
            if a.total == 0 {
                let a = self.anti[id as usize].take().expect("anti term");
                self.anti_index.remove(&a.key.selector, id);
                self.anti_ids.remove(&(a.key, a.topo));
                self.anti_free.push(id);
            }
        }
    }

    /// Temporarily takes a counted pod off its node (preemption's what-if);
    /// [`Snapshot::restore`] puts it back exactly.
    pub fn lift(&mut self, key: &str) {
        self.detach(key);
    }

    pub fn restore(&mut self, key: &str) {
        let Some(c) = self.pods.get(key) else { return };
        if c.slot.is_some() {
            return;
        }
        if let Some(slot) = self.slot_of(&c.node.clone()) {
            self.attach(key, slot);
        }
    }

    fn anti_id(&mut self, key: SetKey, topo: KeyId) -> u32 {
        if let Some(id) = self.anti_ids.get(&(key.clone(), topo)) {
            return *id;
        }
        let id = self.anti_free.pop().unwrap_or_else(|| {
            self.anti.push(None);
            u32::try_from(self.anti.len() - 1).unwrap_or(u32::MAX)
        });
        let mut owners = DomainCounts::default();
        for d in self.topo.keys[topo].live_domains() {
            owners.domain_live(d, true);
        }
        self.anti_index.insert(&key.selector, id);
        self.anti_ids.insert((key.clone(), topo), id);
        self.anti[id as usize] = Some(AntiTerm {
            key,
            topo,
            owners,
            total: 0,
        });
        id
    }

    /// Anti-affinity terms of placed pods that `pod` matches: their ids.
    pub fn anti_terms_against(&self, pod: &Pod, out: &mut Vec<u32>) {
        self.anti_index.candidates(&pod.metadata.labels, |id| {
            if let Some(a) = self.anti[id as usize].as_ref() {
                if a.total > 0 && a.key.matches(pod) {
                    out.push(id);
                }
            }
        });
    }

    // ---- pod sets ----

    /// The set for `key`, built from the cache's label index the first time
    /// (the only time its members are looked for); pinned until
    /// [`Snapshot::unpin_set`].
    pub fn pin_set(&mut self, key: SetKey, cache: &Cache) -> u32 {
        if let Some(id) = self.set_ids.get(&key).copied() {
            let s = self.sets[id as usize].as_mut().expect("indexed set");
            s.pins += 1;
            return id;
        }
        let id = self.set_free.pop().unwrap_or_else(|| {
            self.sets.push(None);
            self.set_gen.push(0);
            u32::try_from(self.sets.len() - 1).unwrap_or(u32::MAX)
        });
        self.set_gen[id as usize] = self.set_gen[id as usize].wrapping_add(1);
        let gen = self.set_gen[id as usize];
        let mut set = PodSet {
            key: key.clone(),
            per_node: vec![0; self.nodes.len()],
            total: 0,
            by_key: Vec::new(),
            pins: 1,
            last_used: self.tick,
        };
        for ns in &key.namespaces {
            for p in cache.pods_matching(ns, &key.selector) {
                let k = crate::api::ns_name(&p.metadata.namespace, &p.metadata.name);
                let Some(c) = self.pods.get_mut(k.as_str()) else {
                    continue;
                };
                let Some(slot) = c.slot else { continue };
                if !key.matches(&c.pod) {
                    continue;
                }
                set.per_node[slot] += 1;
                set.total += 1;
                c.sets.push((id, gen));
            }
        }
        self.set_index.insert(&key.selector, id);
        self.set_ids.insert(key, id);
        self.sets[id as usize] = Some(set);
        id
    }

    /// One more pin on a set already pinned.
    pub fn repin_set(&mut self, id: u32) {
        if let Some(s) = self.sets[id as usize].as_mut() {
            s.pins += 1;
        }
    }

    /// One more pin on a mask already pinned.
    pub fn repin_mask(&mut self, id: u32) {
        if let Some(m) = self.masks[id as usize].as_mut() {
            m.pins += 1;
        }
    }

    pub fn unpin_set(&mut self, id: u32) {
        if let Some(s) = self.sets[id as usize].as_mut() {
            s.pins = s.pins.saturating_sub(1);
            s.last_used = self.tick;
        }
    }

    /// Domain counts of set `id` for key `k`, built on first use.
    pub fn set_domains(&mut self, id: u32, k: KeyId) {
        let s = self.sets[id as usize].as_mut().expect("pinned set");
        s.last_used = self.tick;
        if s.by_key.get(k).is_some_and(Option::is_some) {
            return;
        }
        let mut dc = DomainCounts::default();
        for (slot, n) in self.nodes.iter().enumerate() {
            let Some(n) = n else { continue };
            let c = s.on_node(slot);
            if c > 0 {
                dc.bump(n.domain(k), i32::try_from(c).unwrap_or(i32::MAX));
            }
        }
        for d in self.topo.keys[k].live_domains() {
            dc.domain_live(d, true);
        }
        if s.by_key.len() <= k {
            s.by_key.resize_with(k + 1, || None);
        }
        s.by_key[k] = Some(dc);
    }

    /// Drops the least recently used unpinned sets when too many are idle.
    pub fn sweep_sets(&mut self) {
        let mut idle: Vec<(u64, u32)> = self
            .sets
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.as_ref()
                    .filter(|s| s.pins == 0)
                    .map(|s| (s.last_used, u32::try_from(i).unwrap_or(u32::MAX)))
            })
            .collect();
        if idle.len() <= IDLE_SETS {
            return;
        }
        idle.sort_unstable();
        for (_, id) in idle.into_iter().take(IDLE_SETS / 2) {
            let s = self.sets[id as usize].take().expect("idle set");
            self.set_index.remove(&s.key.selector, id);
            self.set_ids.remove(&s.key);
            self.set_free.push(id);
            // Members' references die with the generation.
            self.set_gen[id as usize] = self.set_gen[id as usize].wrapping_add(1);
        }
    }

    // ---- node-affinity masks ----

    /// A mask of the nodes matching a nodeSelector + required node affinity,
    /// kept current on node changes; pinned until [`Snapshot::unpin_mask`].
    pub fn pin_mask(&mut self, key: MaskKey) -> u32 {
        if let Some(id) = self.mask_ids.get(&key).copied() {
            self.masks[id as usize].as_mut().expect("mask").pins += 1;
            return id;
        }
        let bits = self
            .nodes
            .iter()
            .map(|n| n.as_ref().is_some_and(|n| mask_matches(&key, &n.labels)))
            .collect();
        let id = self.mask_free.pop().unwrap_or_else(|| {
            self.masks.push(None);
            u32::try_from(self.masks.len() - 1).unwrap_or(u32::MAX)
        });
        self.mask_ids.insert(key.clone(), id);
        self.masks[id as usize] = Some(Mask { key, bits, pins: 1 });
        id
    }

    pub fn unpin_mask(&mut self, id: u32) {
        let m = self.masks[id as usize].as_mut().expect("mask");
        m.pins -= 1;
        if m.pins == 0 {
            let m = self.masks[id as usize].take().expect("mask");
            self.mask_ids.remove(&m.key);
            self.mask_free.push(id);
        }
    }

    pub fn mask_allows(&self, id: u32, slot: usize) -> bool {
        self.masks[id as usize]
            .as_ref()
            .is_some_and(|m| m.bits.get(slot).copied().unwrap_or(false))
    }

    // ---- nominations ----

    pub fn nominate(&mut self, node: &str, n: Nominated) {
        self.unnominate(&n.key);
        if let Some(slot) = self.slot_of(node) {
            self.nominations.insert(n.key.clone(), slot);
            self.nodes[slot].as_mut().expect("node").nominated.push(n);
        }
    }

    pub fn unnominate(&mut self, key: &str) {
        if self.nominations.is_empty() {
            return;
        }
        let Some(slot) = self.nominations.remove(key) else {
            return;
        };
        if let Some(n) = self.nodes.get_mut(slot).and_then(Option::as_mut) {
            n.nominated.retain(|x| &*x.key != key);
        }
    }

    /// Every pod counted, for checks.
    pub fn counted_pods(&self) -> impl Iterator<Item = (&Arc<str>, &Counted)> {
        self.pods.iter()
    }
}

fn add_member(s: &mut PodSet, slot: usize, node: &NodeInfo, delta: i32) {
    if s.per_node.len() <= slot {
        s.per_node.resize(slot + 1, 0);
    }
    s.per_node[slot] = s.per_node[slot].saturating_add_signed(delta);
    s.total = s.total.saturating_add_signed(delta);
    for (k, dc) in s.by_key.iter_mut().enumerate() {
        if let Some(dc) = dc {
            dc.bump(node.domain(k), delta);
        }
    }
}

/// A term's namespaces: the ones it names, or the pod's own.
pub fn namespaces(named: &[String], own: &str) -> Vec<String> {
    let mut v: Vec<String> = if named.is_empty() {
        vec![own.to_string()]
    } else {
        named.to_vec()
    };
    v.sort();
    v.dedup();
    v
}

fn same_images(old: &NodeInfo, rec: &NodeRecord, images: &Images) -> bool {
    let mut n = 0;
    for img in &rec.images {
        for name in &img.names {
            let Some(id) = images.id(&super::arch::normalize(name)) else {
                return false;
            };
            if old.image(id).is_none() {
                return false;
            }
            n += 1;
        }
    }
    n >= old.images.len()
}
