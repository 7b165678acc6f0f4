//! Topology domains and the counting indexes inter-pod affinity and
//! topology spread read, kept incrementally so no decision scans pods.
//!
//! - [`Topology`] interns topology keys (`kubernetes.io/hostname`,
//!   `topology.kubernetes.io/zone`, `topology.outpost.dev/site`, and any
//!   other key a pod names) and their values ("domains"), and counts the
//!   nodes in each domain.
//! - A [`PodSet`] is "pods in these namespaces matching this selector": it
//!   counts its members per node and, for each topology key asked for, per
//!   domain, with a histogram of the domain counts so the least-loaded
//!   domain (what `maxSkew` is measured against) is one lookup. A pod
//!   counted on a node is added to every set it matches, found through a
//!   label index ([`LabelIndex`]), not by trying every set.
//! - An [`AntiTerm`] is a required anti-affinity term of pods already
//!   placed, with the number of such pods per domain: what repels an
//!   incoming pod that matches the term.

use crate::api::pod::Pod;
use crate::api::selector::LabelSelector;
use std::collections::{BTreeMap, HashMap};

pub type KeyId = usize;
pub type DomainId = u32;
/// A node without the key's label.
pub const NO_DOMAIN: DomainId = u32::MAX;

pub const HOSTNAME_KEY: KeyId = 0;
pub const ZONE_KEY: KeyId = 1;
pub const SITE_KEY: KeyId = 2;

/// The zone label Kubernetes defines (Outpost uses sites; zones are honoured
/// when nodes carry them).
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// One topology key and its domains.
#[derive(Debug, Default)]
pub struct TopoKey {
    pub key: String,
    values: HashMap<String, DomainId>,
    pub names: Vec<String>,
    /// Ready nodes per domain.
    pub nodes_in: Vec<u32>,
    /// Nodes that carry the key at all, Ready or not.
    pub nodes_with: usize,
    /// Domains with at least one Ready node: the "live" ones that topology
    /// spread measures skew against. A domain whose every node is not
    /// Ready (a site cut off) takes no pods, so it must not hold the
    /// others back: with it counted, the replacements of its pods could
    /// go nowhere under `maxSkew` (Kubernetes reaches the same through
    /// `nodeTaintsPolicy: Honor` and the NoSchedule twin of the
    /// unreachable taint).
    live: usize,
}

impl TopoKey {
    pub fn domain(&mut self, value: &str) -> DomainId {
        if let Some(d) = self.values.get(value) {
            return *d;
        }
        let d = DomainId::try_from(self.names.len()).unwrap_or(NO_DOMAIN - 1);
        self.values.insert(value.to_string(), d);
        self.names.push(value.to_string());
        self.nodes_in.push(0);
        d
    }

    pub fn live_domains(&self) -> impl Iterator<Item = DomainId> + '_ {
        self.nodes_in
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .filter_map(|(d, _)| DomainId::try_from(d).ok())
    }

    pub fn live_domain_count(&self) -> usize {
        self.live
    }

    /// A node in domain `d` arrived; whether the domain just became live
    /// (its first Ready node).
    pub fn node_added(&mut self, d: DomainId, ready: bool) -> bool {
        self.nodes_with += 1;
        ready && self.ready_changed(d, true)
    }

    /// A node in domain `d` left; whether the domain stopped being live
    /// (it was its last Ready node).
    pub fn node_removed(&mut self, d: DomainId, ready: bool) -> bool {
        self.nodes_with -= 1;
        ready && self.ready_changed(d, false)
    }

    /// A node in domain `d` turned Ready (`true`) or stopped being Ready;
    /// whether the domain's liveness changed.
    pub fn ready_changed(&mut self, d: DomainId, ready: bool) -> bool {
        let n = &mut self.nodes_in[d as usize];
        if ready {
            *n += 1;
            if *n == 1 {
                self.live += 1;
                return true;
            }
            false
        } else {
            *n -= 1;
            if *n == 0 {
                self.live -= 1;
                return true;
            }
            false
        }
    }
}

/// Every topology key in use.
#[derive(Debug)]
pub struct Topology {
    pub keys: Vec<TopoKey>,
    ids: HashMap<String, KeyId>,
}

impl Default for Topology {
    fn default() -> Self {
        let mut t = Topology {
            keys: Vec::new(),
            ids: HashMap::new(),
        };
        for k in [
            outpost_proto::names::HOSTNAME_LABEL,
            ZONE_LABEL,
            outpost_proto::names::SITE_LABEL,
        ] {
            t.intern(k);
        }
        t
    }
}

impl Topology {
    pub fn id(&self, key: &str) -> Option<KeyId> {
        self.ids.get(key).copied()
    }

    /// The id of `key`, and whether it is new (the caller then fills in
    /// every node's domain for it).
    pub fn intern(&mut self, key: &str) -> (KeyId, bool) {
        if let Some(id) = self.ids.get(key) {
            return (*id, false);
        }
        let id = self.keys.len();
        self.ids.insert(key.to_string(), id);
        self.keys.push(TopoKey {
            key: key.to_string(),
            ..TopoKey::default()
        });
        (id, true)
    }
}

/// Namespaces a term applies to (sorted) and its selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SetKey {
    pub namespaces: Vec<String>,
    pub selector: LabelSelector,
    /// Whether pods being deleted count (they do for affinity; topology
    /// spread skips them, as Kubernetes does).
    pub terminating: bool,
}

impl SetKey {
    pub fn matches(&self, pod: &Pod) -> bool {
        (self.terminating || !pod.metadata.is_deleting())
            && self.namespaces.contains(&pod.metadata.namespace)
            && self.selector.matches(&pod.metadata.labels)
    }
}

/// Member counts of one set per domain of one key.
#[derive(Debug, Default, Clone)]
pub struct DomainCounts {
    pub counts: Vec<u32>,
    /// Count -> number of live domains (with at least one Ready node) at
    /// that count.
    hist: BTreeMap<u32, u32>,
    /// Which domains are live.
    live: Vec<bool>,
}

impl DomainCounts {
    pub fn get(&self, d: DomainId) -> u32 {
        if d == NO_DOMAIN {
            return 0;
        }
        self.counts.get(d as usize).copied().unwrap_or(0)
    }

    /// The smallest count over domains that have nodes.
    pub fn min(&self) -> u32 {
        self.hist.keys().next().copied().unwrap_or(0)
    }

    fn slot(&mut self, d: DomainId) -> &mut u32 {
        let i = d as usize;
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        &mut self.counts[i]
    }

    fn hist_add(&mut self, count: u32, delta: i32) {
        let e = self.hist.entry(count).or_insert(0);
        *e = e.saturating_add_signed(delta);
        if *e == 0 {
            self.hist.remove(&count);
        }
    }

    fn is_live(&self, d: DomainId) -> bool {
        self.live.get(d as usize).copied().unwrap_or(false)
    }

    /// A member was added (`+1`) or removed (`-1`) in domain `d`.
    pub fn bump(&mut self, d: DomainId, delta: i32) {
        if d == NO_DOMAIN {
            return;
        }
        let c = self.slot(d);
        let old = *c;
        *c = old.saturating_add_signed(delta);
        let new = *c;
        if self.is_live(d) {
            self.hist_add(old, -1);
            self.hist_add(new, 1);
        }
    }

    /// Domain `d` became live (`true`: its first Ready node) or stopped
    /// being live. Idempotent.
    pub fn domain_live(&mut self, d: DomainId, live: bool) {
        if d == NO_DOMAIN || self.is_live(d) == live {
            return;
        }
        let i = d as usize;
        if self.live.len() <= i {
            self.live.resize(i + 1, false);
        }
        self.live[i] = live;
        let c = self.get(d);
        self.hist_add(c, if live { 1 } else { -1 });
    }
}

/// Pods matching one [`SetKey`], counted per node and per domain.
#[derive(Debug)]
pub struct PodSet {
    pub key: SetKey,
    pub per_node: Vec<u32>,
    pub total: u32,
    /// Per topology key id, built on first use.
    pub by_key: Vec<Option<DomainCounts>>,
    /// Queued pods whose plans refer to this set.
    pub pins: u32,
    pub last_used: u64,
}

impl PodSet {
    pub fn on_node(&self, slot: usize) -> u32 {
        self.per_node.get(slot).copied().unwrap_or(0)
    }

    pub fn domains(&self, k: KeyId) -> Option<&DomainCounts> {
        self.by_key.get(k).and_then(Option::as_ref)
    }
}

/// Ids of objects indexed by one `matchLabels` pair of their selector (the
/// first), or unindexed when they have none: the candidates for a pod are
/// the ids under its own label pairs plus the unindexed ones.
#[derive(Debug, Default)]
pub struct LabelIndex {
    by: HashMap<String, HashMap<String, Vec<u32>>>,
    unindexed: Vec<u32>,
}

impl LabelIndex {
    pub fn insert(&mut self, sel: &LabelSelector, id: u32) {
        match sel.match_labels.iter().next() {
            Some((k, v)) => self
                .by
                .entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .push(id),
            None => self.unindexed.push(id),
        }
    }

    pub fn remove(&mut self, sel: &LabelSelector, id: u32) {
        let list = match sel.match_labels.iter().next() {
            Some((k, v)) => match self.by.get_mut(k).and_then(|m| m.get_mut(v)) {
                Some(l) => l,
                None => return,
            },
            None => &mut self.unindexed,
        };
        if let Some(i) = list.iter().position(|x| *x == id) {
            list.swap_remove(i);
        }
    }

    /// Calls `f` with every id that may match a pod with `labels`.
    pub fn candidates(&self, labels: &BTreeMap<String, String>, mut f: impl FnMut(u32)) {
        for id in &self.unindexed {
            f(*id);
        }
        if self.by.is_empty() {
            return;
        }
        for (k, v) in labels {
            if let Some(ids) = self.by.get(k.as_str()).and_then(|m| m.get(v.as_str())) {
                for id in ids {
                    f(*id);
                }
            }
        }
    }
}

/// A required anti-affinity term of placed pods, with the placed owners
/// per domain of its key.
#[derive(Debug)]
pub struct AntiTerm {
    pub key: SetKey,
    pub topo: KeyId,
    pub owners: DomainCounts,
    pub total: u32,
}
