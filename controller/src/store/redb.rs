//! The embedded default backend: one redb file, crash-safe, fsync on every
//! commit (so a batch of transactions costs one fsync: group commit).
//!
//! Layout: table `kv` maps each key to its bookkeeping (create revision,
//! mod revision, version: three little-endian u64s) followed by the value;
//! table `kv_meta` holds the cluster revision, written in the same redb
//! transaction as the keys, so it never goes back across a restart, even
//! when the newest keys were deleted. A data directory from before this
//! layout (tables per kind) is migrated on open ([`super::migrate`]).

use super::watch::Hub;
use super::{
    check_sizes, mem::apply_txn, KeyValue, RangeResult, Revision, Store, StoreError, Txn,
    TxnResult, Watcher,
};
use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("kv_meta");
const REVISION: &str = "revision";
const HEADER: usize = 24;

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn encode(kv: &KeyValue) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER + kv.value.len());
    b.extend_from_slice(&kv.create_revision.to_le_bytes());
    b.extend_from_slice(&kv.mod_revision.to_le_bytes());
    b.extend_from_slice(&kv.version.to_le_bytes());
    b.extend_from_slice(&kv.value);
    b
}

fn decode(key: &str, b: &[u8]) -> Result<KeyValue, StoreError> {
    if b.len() < HEADER {
        return Err(StoreError::Corrupt {
            key: key.to_string(),
            message: format!("record of {} bytes is shorter than its header", b.len()),
        });
    }
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i * 8..i * 8 + 8]);
        u64::from_le_bytes(w)
    };
    Ok(KeyValue {
        key: key.to_string(),
        create_revision: word(0),
        mod_revision: word(1),
        version: word(2),
        value: Arc::from(&b[HEADER..]),
    })
}

/// The store in one redb file.
pub struct RedbStore {
    db: redb::Database,
    hub: Arc<Hub>,
    revision: AtomicU64,
    /// Held from the start of a write until its events are published, so
    /// watchers see revisions in commit order.
    write: Mutex<()>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("revision", &self.revision.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Bytes of redb's page cache. redb's own default is 1 GiB, and it fills
/// with every page a write touches: with 50,000 pods placed it held about
/// 125 MiB of the controller's resident memory. The controller never
/// reads a hot path from the store (its cache, fed by the watch, answers
/// every read; ranges run at startup and for paginated lists); what a
/// small cache costs is some write speed in a burst (placing 50,000 pods
/// at once: about 3,500 placements/s end to end against about 4,150 with
/// 1 GiB; docs/BENCHMARKS.md).
pub const PAGE_CACHE_BYTES: usize = 32 << 20;

impl RedbStore {
    /// Opens (creating if needed) the store file, migrating an older layout.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let db = redb::Builder::new()
            .set_cache_size(PAGE_CACHE_BYTES)
            .create(path)
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        let txn = db.begin_write().map_err(backend)?;
        {
            txn.open_table(KV).map_err(backend)?;
            txn.open_table(META).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;
        let revision = {
            let r = db.begin_read().map_err(backend)?;
            let meta = r.open_table(META).map_err(backend)?;
            let rev = meta
                .get(REVISION)
                .map_err(backend)?
                .map_or(0, |v| v.value());
            rev
        };
        let store = RedbStore {
            db,
            hub: Hub::new(revision),
            revision: AtomicU64::new(revision),
            write: Mutex::new(()),
        };
        if revision == 0 {
            super::migrate::from_tables(&store.db, &store)?;
        }
        Ok(store)
    }
}

impl Store for RedbStore {
    fn range(&self, start: &str, end: &str, limit: usize) -> Result<RangeResult, StoreError> {
        let r = self.db.begin_read().map_err(backend)?;
        let kv = r.open_table(KV).map_err(backend)?;
        let meta = r.open_table(META).map_err(backend)?;
        let revision = meta
            .get(REVISION)
            .map_err(backend)?
            .map_or(0, |v| v.value());
        let mut kvs = Vec::new();
        let mut more = false;
        if end.is_empty() {
            if let Some(v) = kv.get(start).map_err(backend)? {
                kvs.push(decode(start, v.value())?);
            }
        } else if start < end {
            for entry in kv.range(start..end).map_err(backend)? {
                let (k, v) = entry.map_err(backend)?;
                if limit > 0 && kvs.len() == limit {
                    more = true;
                    break;
                }
                kvs.push(decode(k.value(), v.value())?);
            }
        }
        Ok(RangeResult {
            kvs,
            more,
            revision,
        })
    }

    fn txn_batch(&self, txns: Vec<Txn>) -> Result<Vec<TxnResult>, StoreError> {
        check_sizes(&txns)?;
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut revision = self.revision.load(Ordering::Acquire);
        let w = self.db.begin_write().map_err(backend)?;
        let mut results = Vec::with_capacity(txns.len());
        let mut all = Vec::new();
        {
            let mut table = w.open_table(KV).map_err(backend)?;
            // Writes of this batch not yet in the table's view are kept
            // here so later transactions in the batch compare against them.
            let mut overlay: HashMap<String, Option<KeyValue>> = HashMap::new();
            let mut err: Option<StoreError> = None;
            for txn in txns {
                let next = revision + 1;
                let (ok, events) = {
                    let table = std::cell::RefCell::new(&mut table);
                    let overlay = std::cell::RefCell::new(&mut overlay);
                    apply_txn(
                        &mut |k| {
                            if let Some(v) = overlay.borrow().get(k) {
                                return v.clone();
                            }
                            match table.borrow().get(k) {
                                Ok(Some(v)) => match decode(k, v.value()) {
                                    Ok(kv) => Some(kv),
                                    Err(e) => {
                                        err.get_or_insert(e);
                                        None
                                    }
                                },
                                Ok(None) => None,
                                Err(e) => {
                                    err.get_or_insert(backend(e));
                                    None
                                }
                            }
                        },
                        &mut |k, v| {
                            overlay.borrow_mut().insert(k.to_string(), v);
                        },
                        txn,
                        next,
                    )
                };
                if !events.is_empty() {
                    revision = next;
                }
                results.push(TxnResult {
                    succeeded: ok,
                    revision,
                });
                all.extend(events);
            }
            if let Some(e) = err {
                return Err(e);
            }
            for (k, v) in overlay {
                match v {
                    Some(kv) => {
                        table
                            .insert(k.as_str(), encode(&kv).as_slice())
                            .map_err(backend)?;
                    }
                    None => {
                        table.remove(k.as_str()).map_err(backend)?;
                    }
                }
            }
            let mut meta = w.open_table(META).map_err(backend)?;
            meta.insert(REVISION, revision).map_err(backend)?;
        }
        w.commit().map_err(backend)?;
        self.revision.store(revision, Ordering::Release);
        self.hub.publish(all, revision);
        Ok(results)
    }

    fn revision(&self) -> Revision {
        self.revision.load(Ordering::Acquire)
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
        let dir = tempfile::tempdir().unwrap();
        let n = std::sync::atomic::AtomicU32::new(0);
        super::super::conformance::run_all(&|| {
            let i = n.fetch_add(1, Ordering::Relaxed);
            Box::new(RedbStore::open(&dir.path().join(format!("s{i}.redb"))).unwrap())
                as Box<dyn Store>
        });
    }

    #[test]
    fn revision_never_goes_back_across_restart_and_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let s = RedbStore::open(&path).unwrap();
            s.put("/a", b"1".to_vec()).unwrap();
            s.put("/b", b"1".to_vec()).unwrap();
            // The newest keys are deleted: nothing surviving carries rev 4.
            s.delete("/b").unwrap();
            assert_eq!(s.revision(), 3);
        }
        let s = RedbStore::open(&path).unwrap();
        assert_eq!(s.revision(), 3);
        let a = s.get("/a").unwrap().unwrap();
        assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 1, 1));
        assert_eq!(s.put("/c", b"1".to_vec()).unwrap(), 4);
        // A watch from before the restart must relist; one from now works.
        assert!(s.watch("/", 2).poll(10).is_err());
        let mut w = s.watch("/", 5);
        s.put("/d", b"1".to_vec()).unwrap();
        assert_eq!(w.poll(10).unwrap().len(), 1);
    }
}
