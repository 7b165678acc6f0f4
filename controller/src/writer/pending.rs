//! The writer's queue: store writes waiting for the next group commit,
//! coalesced per key, with a share per node. No I/O and no clock.
//!
//! Every write the writer takes is unconditional (a put or a delete of one
//! key), and a batch commits atomically, so of several pending writes to
//! one key only the last one matters: a later write replaces the pending
//! one in place (last write wins), and the queue holds at most one write
//! per key. Its length is bounded by the objects written (node records,
//! event log entries), not by the messages that wrote them; an agent that
//! repeats a status or an event (an event series rewrites one key, see
//! [`crate::events`]) only replaces its own pending write.
//!
//! On top of that, each node has a share of the queue ([`Limits::node_share`]
//! keys). A submission that would take a node past its share, or the queue
//! past [`Limits::cap`], is not taken ([`Pending::offer`] hands it back) and
//! its submitter waits for the next batch; nothing already queued is ever
//! dropped, and the writes of other nodes are taken while a flooding node
//! waits. Replacing a pending write (same key) never needs room, so a
//! node at its share can always update what it already has queued.
//!
//! A submission larger than a share (or the cap) on its own is taken when
//! its node has nothing queued (or the queue is empty): otherwise it could
//! never be taken. The queue is therefore bounded by `cap` plus one
//! submission; every submitter bounds its submissions (agent events by
//! `MAX_AGENT_EVENTS`, node records by one per node).

use crate::store::Op;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Who a write is for: a node's session, or the controller itself (its
/// tick, operator calls, enrolment).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    Controller,
    Node(String),
}

/// Bounds of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Keys pending at most (all origins).
    pub cap: usize,
    /// Keys one node may have pending. The controller's own writes are
    /// bounded by `cap` only.
    pub node_share: usize,
}

/// Why a submission was not taken; its submitter waits for a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The node already has its share of the queue pending.
    Share,
    /// The queue holds `cap` keys.
    Queue,
}

/// A submission handed back by [`Pending::offer`], to offer again later.
#[derive(Debug)]
pub struct Refused<A> {
    pub why: Full,
    pub ops: Vec<Op>,
    pub ack: Option<A>,
}

/// What the writer commits next: at most one write per key, in the order
/// their keys were first queued, and everyone waiting for it.
#[derive(Debug)]
pub struct Batch<A> {
    pub ops: Vec<Op>,
    pub acks: Vec<A>,
}

#[derive(Debug)]
struct Slot {
    op: Op,
    origin: Origin,
    /// Position in `order`.
    seq: u64,
}

/// Pending writes, one per key. `A` is what a submitter waits on (an
/// acknowledgement channel in the writer; anything in tests).
#[derive(Debug)]
pub struct Pending<A> {
    limits: Limits,
    slots: HashMap<String, Slot>,
    order: BTreeMap<u64, String>,
    held: HashMap<Origin, usize>,
    acks: Vec<A>,
    next_seq: u64,
}

impl<A> Pending<A> {
    /// An empty queue; `cap` and `node_share` are at least 1, and the
    /// share at most the cap.
    pub fn new(limits: Limits) -> Pending<A> {
        let cap = limits.cap.max(1);
        Pending {
            limits: Limits {
                cap,
                node_share: limits.node_share.clamp(1, cap),
            },
            slots: HashMap::new(),
            order: BTreeMap::new(),
            held: HashMap::new(),
            acks: Vec::new(),
            next_seq: 0,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Keys pending.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty() && self.acks.is_empty()
    }

    /// Keys pending for `origin`.
    pub fn held(&self, origin: &Origin) -> usize {
        self.held.get(origin).copied().unwrap_or(0)
    }

    /// The write pending for `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Op> {
        self.slots.get(key).map(|s| &s.op)
    }

    /// Queues `ops` for `origin` (all or nothing), replacing pending writes
    /// of the same keys; `ack` is handed back with the batch that commits
    /// them. A submission that does not fit is handed back unchanged.
    pub fn offer(
        &mut self,
        origin: &Origin,
        ops: Vec<Op>,
        ack: Option<A>,
    ) -> Result<(), Refused<A>> {
        let keys: HashSet<&str> = ops.iter().map(Op::key).collect();
        let new = keys
            .iter()
            .filter(|k| !self.slots.contains_key(**k))
            .count();
        let moved = keys
            .iter()
            .filter(|k| self.slots.get(**k).is_some_and(|s| s.origin != *origin))
            .count();
        let held = self.held(origin);
        let why = if matches!(origin, Origin::Node(_))
            && held > 0
            && held + new + moved > self.limits.node_share
        {
            Some(Full::Share)
        } else if !self.slots.is_empty() && self.slots.len() + new > self.limits.cap {
            Some(Full::Queue)
        } else {
            None
        };
        drop(keys);
        if let Some(why) = why {
            return Err(Refused { why, ops, ack });
        }
        for op in ops {
            self.put(origin, op);
        }
        if let Some(ack) = ack {
            self.acks.push(ack);
        }
        Ok(())
    }

    fn put(&mut self, origin: &Origin, op: Op) {
        let key = op.key().to_string();
        if let Some(slot) = self.slots.get_mut(&key) {
            slot.op = op;
            if slot.origin != *origin {
                let was = std::mem::replace(&mut slot.origin, origin.clone());
                Self::release(&mut self.held, &was);
                *self.held.entry(origin.clone()).or_default() += 1;
            }
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, key.clone());
        *self.held.entry(origin.clone()).or_default() += 1;
        self.slots.insert(
            key,
            Slot {
                op,
                origin: origin.clone(),
                seq,
            },
        );
    }

    fn release(held: &mut HashMap<Origin, usize>, origin: &Origin) {
        if let Some(n) = held.get_mut(origin) {
            *n -= 1;
            if *n == 0 {
                held.remove(origin);
            }
        }
    }

    /// Takes everything pending, or `None` when nothing is.
    pub fn take(&mut self) -> Option<Batch<A>> {
        if self.is_empty() {
            return None;
        }
        let mut slots = std::mem::take(&mut self.slots);
        let ops = std::mem::take(&mut self.order)
            .into_values()
            .filter_map(|k| slots.remove(&k))
            .map(|s| {
                debug_assert!(s.seq < self.next_seq);
                s.op
            })
            .collect();
        self.held.clear();
        Some(Batch {
            ops,
            acks: std::mem::take(&mut self.acks),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn node(n: &str) -> Origin {
        Origin::Node(n.into())
    }

    fn put(k: &str, v: &str) -> Op {
        Op::put(k, v.as_bytes().to_vec())
    }

    fn queue(cap: usize, share: usize) -> Pending<u32> {
        Pending::new(Limits {
            cap,
            node_share: share,
        })
    }

    #[test]
    fn a_later_write_replaces_the_pending_one() {
        let mut q = queue(8, 4);
        for i in 0..100 {
            q.offer(&node("a"), vec![put("/nodes/a", &i.to_string())], None)
                .unwrap();
        }
        q.offer(&node("a"), vec![put("/events/1", "x")], None)
            .unwrap();
        q.offer(&node("a"), vec![Op::delete("/events/1")], None)
            .unwrap();
        assert_eq!(q.len(), 2);
        let b = q.take().unwrap();
        assert_eq!(b.ops, vec![put("/nodes/a", "99"), Op::delete("/events/1")]);
        assert!(q.take().is_none());
    }

    #[test]
    fn a_node_at_its_share_waits_and_others_do_not() {
        let mut q = queue(8, 2);
        q.offer(&node("a"), vec![put("a1", "1"), put("a2", "1")], Some(1))
            .unwrap();
        let r = q
            .offer(&node("a"), vec![put("a3", "1")], Some(2))
            .unwrap_err();
        assert_eq!(r.why, Full::Share);
        assert_eq!((r.ops, r.ack), (vec![put("a3", "1")], Some(2)));
        // Its own pending writes can still be updated...
        q.offer(&node("a"), vec![put("a1", "2")], None).unwrap();
        // ...and another node is taken at once.
        q.offer(&node("b"), vec![put("b1", "1")], None).unwrap();
        // The controller has no share, only the cap.
        q.offer(
            &Origin::Controller,
            (0..5).map(|i| put(&format!("c{i}"), "1")).collect(),
            None,
        )
        .unwrap();
        let r = q.offer(&node("c"), vec![put("c9", "1")], None).unwrap_err();
        assert_eq!(r.why, Full::Queue);
        // Replacing needs no room even with the queue full.
        q.offer(&node("c"), vec![put("b1", "2")], None).unwrap();
        assert_eq!(q.held(&node("b")), 0);
        assert_eq!(q.held(&node("c")), 1);
        let b = q.take().unwrap();
        assert_eq!(b.ops.len(), 8);
        assert_eq!(b.acks, vec![1]);
        // After the batch, the waiting node gets in.
        q.offer(&node("a"), vec![put("a3", "1")], Some(2)).unwrap();
    }

    #[test]
    fn an_oversized_submission_is_taken_alone() {
        let mut q = queue(4, 2);
        let big: Vec<Op> = (0..6).map(|i| put(&format!("k{i}"), "v")).collect();
        q.offer(&node("a"), big.clone(), None).unwrap();
        assert_eq!(q.len(), 6);
        assert_eq!(
            q.offer(&node("b"), vec![put("x", "v")], None)
                .unwrap_err()
                .why,
            Full::Queue
        );
        assert_eq!(q.take().unwrap().ops, big);
    }

    /// One step of a random workload.
    #[derive(Debug, Clone)]
    enum Step {
        Offer {
            node: u8,
            keys: Vec<u8>,
            delete: bool,
        },
        Take,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u8..5, proptest::collection::vec(0u8..40, 1..6), any::<bool>())
                .prop_map(|(node, keys, delete)| Step::Offer { node, keys, delete }),
            1 => Just(Step::Take),
        ]
    }

    fn origin(n: u8) -> Origin {
        if n == 0 {
            Origin::Controller
        } else {
            Origin::Node(format!("n{n}"))
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Against a model store that applies every accepted write in order:
        /// after draining, the store is the same (last write per key wins,
        /// nothing accepted is lost); the queue never holds more than the
        /// cap (or one oversized submission) nor a node more than its share;
        /// a refused submission changes nothing.
        #[test]
        fn coalescing_is_invisible_and_bounded(
            cap in 1usize..16,
            share in 1usize..8,
            steps in proptest::collection::vec(step(), 1..200),
        ) {
            let mut q = queue(cap, share);
            let limits = q.limits();
            let mut model: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
            let mut store: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
            let mut seq = 0u32;
            let mut acked = Vec::new();
            let mut accepted = Vec::new();
            // What the queue (and each node) may hold until the next take:
            // the bound, or the one submission that went into an empty
            // queue (an empty share).
            let mut queue_bound = limits.cap;
            let mut share_bound: BTreeMap<Origin, usize> = BTreeMap::new();
            for s in steps {
                match s {
                    Step::Offer { node, keys, delete } => {
                        seq += 1;
                        let ops: Vec<Op> = keys
                            .iter()
                            .map(|k| {
                                let key = format!("k{k}");
                                if delete { Op::delete(key) } else { put(&key, &seq.to_string()) }
                            })
                            .collect();
                        let distinct: HashSet<&str> = ops.iter().map(Op::key).collect();
                        let distinct = distinct.len();
                        let before = (q.len(), q.held(&origin(node)));
                        let o = origin(node);
                        match q.offer(&o, ops.clone(), Some(seq)) {
                            Ok(()) => {
                                accepted.push(seq);
                                if before.0 == 0 {
                                    queue_bound = queue_bound.max(distinct);
                                }
                                if before.1 == 0 {
                                    let b = share_bound.entry(o.clone()).or_insert(limits.node_share);
                                    *b = (*b).max(distinct);
                                }
                                for op in &ops {
                                    let v = match op { Op::Put { value, .. } => Some(value.clone()), Op::Delete { .. } => None };
                                    model.insert(op.key().to_string(), v);
                                }
                                for op in &ops {
                                    prop_assert_eq!(q.get(op.key()).map(|o| o == ops.iter().rev().find(|x| x.key() == op.key()).unwrap()), Some(true));
                                }
                                // Bounds: the cap, or one submission on its own.
                                prop_assert!(q.len() <= queue_bound);
                                if let Origin::Node(_) = o {
                                    prop_assert!(q.held(&o) <= share_bound[&o]);
                                }
                            }
                            Err(r) => {
                                prop_assert_eq!(r.ops, ops);
                                prop_assert_eq!(r.ack, Some(seq));
                                prop_assert_eq!((q.len(), q.held(&o)), before);
                                // Refused only when there is something to wait for.
                                match r.why {
                                    Full::Share => prop_assert!(before.1 > 0 && before.1 + distinct > limits.node_share),
                                    Full::Queue => prop_assert!(before.0 > 0),
                                }
                            }
                        }
                        let total: usize = (0..5).map(|n| q.held(&origin(n))).sum();
                        prop_assert_eq!(total, q.len());
                    }
                    Step::Take => {
                        if let Some(b) = q.take() {
                            let keys: HashSet<&str> = b.ops.iter().map(Op::key).collect();
                            prop_assert_eq!(keys.len(), b.ops.len(), "one write per key");
                            for op in b.ops {
                                let v = match op { Op::Put { ref value, .. } => Some(value.clone()), Op::Delete { .. } => None };
                                store.insert(op.key().to_string(), v);
                            }
                            acked.extend(b.acks);
                        }
                        prop_assert_eq!(q.len(), 0);
                        queue_bound = limits.cap;
                        share_bound.clear();
                    }
                }
            }
            if let Some(b) = q.take() {
                for op in b.ops {
                    let v = match op { Op::Put { ref value, .. } => Some(value.clone()), Op::Delete { .. } => None };
                    store.insert(op.key().to_string(), v);
                }
                acked.extend(b.acks);
            }
            prop_assert_eq!(store, model);
            prop_assert_eq!(acked, accepted);
        }

        /// However much one node floods, a write of a node with nothing
        /// pending is taken at once as long as the other nodes hold less
        /// than `cap - share` (here: only the flooder is active).
        #[test]
        fn a_flood_never_shuts_out_another_node(
            flood in proptest::collection::vec(0u16..500, 1..300),
        ) {
            let mut q = queue(64, 8);
            for k in flood {
                let _ = q.offer(&node("flood"), vec![put(&format!("f{k}"), "v")], None);
                prop_assert!(q.held(&node("flood")) <= 8);
            }
            prop_assert!(q.offer(&node("quiet"), vec![put("q", "v")], None).is_ok());
        }
    }
}
