//! Durable controller state behind a small key-value trait.
//!
//! Everything the controller must remember across restarts (PKI, bootstrap
//! tokens, nodes, events) goes through [`Store`]: named tables of string keys
//! and opaque values, with atomic batches. The embedded default is redb (one
//! file, crash-safe, fsync on commit); the trait is shaped so an etcd backend
//! (prefix = table, txn = batch) can slot in later. Writes happen on changes,
//! never per heartbeat.

use std::path::Path;

/// The tables the controller keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Meta,
    Pki,
    Tokens,
    Nodes,
    Events,
    Pods,
}

impl Table {
    pub const ALL: [Table; 6] = [
        Table::Meta,
        Table::Pki,
        Table::Tokens,
        Table::Nodes,
        Table::Events,
        Table::Pods,
    ];

    fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Pki => "pki",
            Table::Tokens => "tokens",
            Table::Nodes => "nodes",
            Table::Events => "events",
            Table::Pods => "pods",
        }
    }

    fn def(self) -> redb::TableDefinition<'static, &'static str, &'static [u8]> {
        redb::TableDefinition::new(self.name())
    }
}

/// One write in an atomic batch.
#[derive(Debug, Clone)]
pub enum Op {
    Put(Table, String, Vec<u8>),
    Delete(Table, String),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("state store: {0}")]
    Redb(#[from] redb::Error),
}

impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> Self {
        StoreError::Redb(e.into())
    }
}
impl From<redb::TableError> for StoreError {
    fn from(e: redb::TableError) -> Self {
        StoreError::Redb(e.into())
    }
}
impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        StoreError::Redb(e.into())
    }
}
impl From<redb::CommitError> for StoreError {
    fn from(e: redb::CommitError) -> Self {
        StoreError::Redb(e.into())
    }
}

/// Durable key-value state.
pub trait Store: Send + Sync {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// All entries of a table in key order.
    fn list(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Applies all ops or none.
    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError>;

    fn put(&self, table: Table, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.apply(vec![Op::Put(table, key.to_string(), value)])
    }
    fn delete(&self, table: Table, key: &str) -> Result<(), StoreError> {
        self.apply(vec![Op::Delete(table, key.to_string())])
    }
}

/// The embedded default: one redb file.
pub struct RedbStore {
    db: redb::Database,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (creating if needed) the store file and its tables.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let db = redb::Database::create(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let txn = db.begin_write()?;
        for t in Table::ALL {
            txn.open_table(t.def())?;
        }
        txn.commit()?;
        Ok(RedbStore { db })
    }
}

impl Store for RedbStore {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(table.def())?;
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    }

    fn list(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        use redb::ReadableTable;
        let txn = self.db.begin_read()?;
        let t = txn.open_table(table.def())?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        for op in ops {
            match op {
                Op::Put(t, k, v) => {
                    txn.open_table(t.def())?.insert(k.as_str(), v.as_slice())?;
                }
                Op::Delete(t, k) => {
                    txn.open_table(t.def())?.remove(k.as_str())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

// redb reads start with the ReadableDatabase trait in scope.
use redb::ReadableDatabase as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_batches_are_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let s = RedbStore::open(&path).unwrap();
            s.put(Table::Nodes, "edge-1", b"one".to_vec()).unwrap();
            s.apply(vec![
                Op::Put(Table::Events, "0001".into(), b"e1".to_vec()),
                Op::Put(Table::Events, "0002".into(), b"e2".to_vec()),
                Op::Delete(Table::Events, "0001".into()),
            ])
            .unwrap();
        }
        let s = RedbStore::open(&path).unwrap();
        assert_eq!(s.get(Table::Nodes, "edge-1").unwrap().unwrap(), b"one");
        assert_eq!(s.get(Table::Nodes, "edge-2").unwrap(), None);
        let events = s.list(Table::Events).unwrap();
        assert_eq!(events, vec![("0002".to_string(), b"e2".to_vec())]);
        s.delete(Table::Nodes, "edge-1").unwrap();
        assert!(s.list(Table::Nodes).unwrap().is_empty());
    }
}
