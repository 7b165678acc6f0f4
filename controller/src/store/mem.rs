//! The in-memory backend: the reference semantics for the trait, used by
//! tests and by the in-memory cluster (which runs thousands of nodes on a
//! virtual clock). Nothing survives the process.

use super::watch::Hub;
use super::{
    check_sizes, KeyValue, Op, RangeResult, Revision, Store, StoreError, Txn, TxnResult,
    WatchEvent, WatchEventKind, Watcher,
};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

#[derive(Debug, Default)]
struct Data {
    kvs: BTreeMap<String, KeyValue>,
    revision: Revision,
}

/// A store in memory.
#[derive(Debug)]
pub struct MemStore {
    data: RwLock<Data>,
    hub: Arc<Hub>,
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore::new()
    }
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore {
            data: RwLock::new(Data::default()),
            hub: Hub::new(0),
        }
    }
}

/// Applies one transaction to `kvs` at `next` (the revision it commits at
/// if it writes anything). Shared by the backends that keep a map in
/// memory while they write: returns whether the compares held and the
/// events it produced.
pub(crate) fn apply_txn(
    get: &mut dyn FnMut(&str) -> Option<KeyValue>,
    set: &mut dyn FnMut(&str, Option<KeyValue>),
    txn: Txn,
    next: Revision,
) -> (bool, Vec<WatchEvent>) {
    let ok = txn.compare.iter().all(|c| c.holds(get(&c.key).as_ref()));
    let ops = if ok { txn.success } else { txn.failure };
    let mut events = Vec::new();
    for op in ops {
        match op {
            Op::Put { key, value } => {
                let old = get(&key);
                let kv = KeyValue {
                    create_revision: old.as_ref().map_or(next, |o| o.create_revision),
                    version: old.as_ref().map_or(1, |o| o.version + 1),
                    mod_revision: next,
                    value: Arc::from(value),
                    key: key.clone(),
                };
                set(&key, Some(kv.clone()));
                events.push(WatchEvent {
                    kind: WatchEventKind::Put,
                    kv,
                });
            }
            Op::Delete { key } => {
                if let Some(mut old) = get(&key) {
                    set(&key, None);
                    old.mod_revision = next;
                    events.push(WatchEvent {
                        kind: WatchEventKind::Delete,
                        kv: old,
                    });
                }
            }
        }
    }
    (ok, events)
}

impl Store for MemStore {
    fn range(&self, start: &str, end: &str, limit: usize) -> Result<RangeResult, StoreError> {
        let d = self.data.read().unwrap_or_else(|p| p.into_inner());
        let mut kvs = Vec::new();
        let mut more = false;
        if end.is_empty() {
            kvs.extend(d.kvs.get(start).cloned());
        } else if start < end {
            for (_, kv) in d.kvs.range(start.to_string()..end.to_string()) {
                if limit > 0 && kvs.len() == limit {
                    more = true;
                    break;
                }
                kvs.push(kv.clone());
            }
        }
        Ok(RangeResult {
            kvs,
            more,
            revision: d.revision,
        })
    }

    fn txn_batch(&self, txns: Vec<Txn>) -> Result<Vec<TxnResult>, StoreError> {
        check_sizes(&txns)?;
        let mut d = self.data.write().unwrap_or_else(|p| p.into_inner());
        let mut results = Vec::with_capacity(txns.len());
        let mut all = Vec::new();
        for txn in txns {
            let next = d.revision + 1;
            let (ok, events) = {
                let kvs = std::cell::RefCell::new(&mut d.kvs);
                apply_txn(
                    &mut |k| kvs.borrow().get(k).cloned(),
                    &mut |k, v| match v {
                        Some(v) => {
                            kvs.borrow_mut().insert(k.to_string(), v);
                        }
                        None => {
                            kvs.borrow_mut().remove(k);
                        }
                    },
                    txn,
                    next,
                )
            };
            if !events.is_empty() {
                d.revision = next;
            }
            results.push(TxnResult {
                succeeded: ok,
                revision: d.revision,
            });
            all.extend(events);
        }
        // Published under the write lock, so revisions reach watchers in order.
        self.hub.publish(all, d.revision);
        Ok(results)
    }

    fn revision(&self) -> Revision {
        self.data.read().unwrap_or_else(|p| p.into_inner()).revision
    }

    fn watch(&self, prefix: &str, from: Revision) -> Watcher {
        self.hub.watch(prefix, from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance() {
        super::super::conformance::run_all(&|| Box::new(MemStore::new()) as Box<dyn Store>);
    }
}
