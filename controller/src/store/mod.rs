//! The revisioned store every part of the controller stands on, shaped
//! after etcd v3 so that an etcd backend is this same trait.
//!
//! - Keys are strings laid out like Kubernetes' etcd keys
//!   (`/registry/pods/NAMESPACE/NAME`, see [`keys`]); values are opaque bytes
//!   (Kubernetes-shaped JSON for objects).
//! - Every committed transaction gets the next cluster revision, one number
//!   for the whole cluster that never goes back, across restarts and
//!   deletions included (the backend persists it). Each key remembers the
//!   revision that created it, the one that last changed it
//!   (`mod_revision`, which is the object's `resourceVersion`) and how many
//!   times it changed (`version`).
//! - A transaction is etcd's: compares on keys (version, create or mod
//!   revision, value), then the success ops if all hold, else the failure
//!   ops. Optimistic concurrency is a compare on `mod_revision`.
//! - [`Store::txn_batch`] commits several independent transactions in one
//!   durable write (group commit); each still gets its own revision and
//!   its own compare.
//! - Watches deliver every change after a revision, in order, once, from a
//!   bounded in-memory history ([`watch`]); a watcher that falls behind the
//!   history (or asks for a revision from before a restart) is told the
//!   history is compacted and relists, as with etcd.
//!
//! Backends: [`mem::MemStore`] (tests, the in-memory cluster) and
//! [`redb::RedbStore`] (the embedded default, one crash-safe file).

pub mod keys;
pub mod mem;
pub mod migrate;
pub mod redb;
pub mod watch;

use std::sync::Arc;

pub use watch::{WatchEvent, WatchEventKind, Watcher};

/// A committed cluster revision. 0 means "never".
pub type Revision = u64;

/// One stored key with its bookkeeping, as etcd's `mvccpb.KeyValue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Arc<[u8]>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    /// Number of writes since creation (1 after the create).
    pub version: u64,
}

/// What a compare looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// 0 for a key that does not exist.
    Version(u64),
    /// 0 for a key that does not exist.
    CreateRevision(Revision),
    /// 0 for a key that does not exist.
    ModRevision(Revision),
    Value(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: String,
    pub op: CmpOp,
    pub target: Target,
}

impl Compare {
    /// The key does not exist.
    pub fn absent(key: impl Into<String>) -> Compare {
        Compare {
            key: key.into(),
            op: CmpOp::Equal,
            target: Target::CreateRevision(0),
        }
    }

    /// The key was last changed at `rev` (0: does not exist).
    pub fn mod_revision(key: impl Into<String>, rev: Revision) -> Compare {
        Compare {
            key: key.into(),
            op: CmpOp::Equal,
            target: Target::ModRevision(rev),
        }
    }

    /// Evaluates against the key's current state.
    pub fn holds(&self, kv: Option<&KeyValue>) -> bool {
        use std::cmp::Ordering;
        let ord = match &self.target {
            Target::Version(v) => kv.map_or(0, |k| k.version).cmp(v),
            Target::CreateRevision(r) => kv.map_or(0, |k| k.create_revision).cmp(r),
            Target::ModRevision(r) => kv.map_or(0, |k| k.mod_revision).cmp(r),
            Target::Value(v) => match kv {
                // etcd: a value compare on a missing key fails.
                None => return false,
                Some(k) => (*k.value).cmp(v.as_slice()),
            },
        };
        match self.op {
            CmpOp::Equal => ord == Ordering::Equal,
            CmpOp::NotEqual => ord != Ordering::Equal,
            CmpOp::Greater => ord == Ordering::Greater,
            CmpOp::Less => ord == Ordering::Less,
        }
    }
}

/// A write in a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
    },
    /// Deleting a missing key is not an error (etcd counts 0 deleted).
    Delete {
        key: String,
    },
}

impl Op {
    pub fn put(key: impl Into<String>, value: Vec<u8>) -> Op {
        Op::Put {
            key: key.into(),
            value,
        }
    }

    pub fn delete(key: impl Into<String>) -> Op {
        Op::Delete { key: key.into() }
    }

    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// etcd's `TxnRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl Txn {
    /// Unconditional writes.
    pub fn ops(ops: Vec<Op>) -> Txn {
        Txn {
            compare: Vec::new(),
            success: ops,
            failure: Vec::new(),
        }
    }

    /// Writes that apply only if every compare holds.
    pub fn guarded(compare: Vec<Compare>, ops: Vec<Op>) -> Txn {
        Txn {
            compare,
            success: ops,
            failure: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether the compares held (the success branch ran).
    pub succeeded: bool,
    /// The revision the transaction committed at; when it wrote nothing,
    /// the store's revision at the time (as etcd reports the header).
    pub revision: Revision,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResult {
    /// Keys in order.
    pub kvs: Vec<KeyValue>,
    /// More keys in the range than `limit` allowed.
    pub more: bool,
    /// The store's revision when read: a watch from `revision + 1` sees
    /// every later change.
    pub revision: Revision,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {message}")]
    Open { path: String, message: String },
    #[error("state store: {0}")]
    Backend(String),
    #[error("state store: key {key:?} holds damaged data: {message}")]
    Corrupt { key: String, message: String },
    #[error("state store: {0}; raise the limit or make the write smaller")]
    TooLarge(String),
}

/// Largest value accepted (etcd's default request limit is 1.5 MiB).
pub const MAX_VALUE: usize = 1536 * 1024;

/// The revisioned store.
pub trait Store: Send + Sync {
    /// Keys in `[start, end)` in order, at most `limit` (0: no limit).
    /// An empty `end` reads the single key `start`.
    fn range(&self, start: &str, end: &str, limit: usize) -> Result<RangeResult, StoreError>;

    /// Commits the transactions in order, each at its own revision, all in
    /// one durable write.
    fn txn_batch(&self, txns: Vec<Txn>) -> Result<Vec<TxnResult>, StoreError>;

    /// The latest committed revision.
    fn revision(&self) -> Revision;

    /// Changes to keys under `prefix` from revision `from` on.
    fn watch(&self, prefix: &str, from: Revision) -> Watcher;

    /// One transaction.
    fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        let mut r = self.txn_batch(vec![txn])?;
        r.pop()
            .ok_or_else(|| StoreError::Backend("transaction returned no result".into()))
    }

    /// One key.
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.range(key, "", 1)?.kvs.pop())
    }

    /// Every key under `prefix`, with the revision read at.
    fn list(&self, prefix: &str) -> Result<RangeResult, StoreError> {
        self.range(prefix, &keys::prefix_end(prefix), 0)
    }

    fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        Ok(self.txn(Txn::ops(vec![Op::put(key, value)]))?.revision)
    }

    fn delete(&self, key: &str) -> Result<Revision, StoreError> {
        Ok(self.txn(Txn::ops(vec![Op::delete(key)]))?.revision)
    }
}

/// Shared checks every backend runs on a batch before writing.
pub(crate) fn check_sizes(txns: &[Txn]) -> Result<(), StoreError> {
    for t in txns {
        for op in t.success.iter().chain(&t.failure) {
            if let Op::Put { key, value } = op {
                if value.len() > MAX_VALUE {
                    return Err(StoreError::TooLarge(format!(
                        "value of {key} is {} bytes, at most {MAX_VALUE}",
                        value.len()
                    )));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod conformance;
