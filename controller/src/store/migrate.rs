//! Migration from the first store layout (one redb table per kind: `pki`,
//! `tokens`, `nodes`, `events`, `pods`) into the revisioned key space.
//! Runs once, when the revisioned tables are still empty; copies every
//! entry under its new key (pods are turned into Kubernetes-shaped Pod
//! objects) in one transaction, then drops the old tables.

use super::redb::RedbStore;
use super::{keys, Op, Store, StoreError, Txn};
use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition, TableHandle as _};

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("migrating the old store layout: {e}"))
}

/// The old tables and where their entries go.
const OLD: [(&str, &str); 4] = [
    ("pki", keys::PKI),
    ("tokens", keys::TOKENS),
    ("nodes", "/registry/nodes/"),
    ("events", keys::EVENTS),
];

pub fn from_tables(db: &redb::Database, store: &RedbStore) -> Result<(), StoreError> {
    let r = db.begin_read().map_err(backend)?;
    let present: Vec<String> = r
        .list_tables()
        .map_err(backend)?
        .map(|t| t.name().to_string())
        .collect();
    let mut ops = Vec::new();
    let mut dropped = Vec::new();
    for (table, prefix) in OLD.iter().map(|(t, p)| (*t, *p)).chain([("pods", "")]) {
        if !present.iter().any(|p| p == table) {
            continue;
        }
        let def: TableDefinition<&str, &[u8]> = TableDefinition::new(table);
        {
            let t = r.open_table(def).map_err(backend)?;
            for entry in t.iter().map_err(backend)? {
                let (k, v) = entry.map_err(backend)?;
                let (key, value) = (k.value().to_string(), v.value().to_vec());
                if table == "pods" {
                    match crate::api::pod::migrate_record(&value) {
                        Ok(pod) => {
                            let key =
                                keys::object("pods", &pod.metadata.namespace, &pod.metadata.name);
                            ops.push(Op::put(key, serde_json::to_vec(&pod).map_err(backend)?));
                        }
                        Err(e) => tracing::warn!(
                            "old pod record {key:?} could not be migrated and is dropped: {e}"
                        ),
                    }
                } else {
                    ops.push(Op::put(format!("{prefix}{key}"), value));
                }
            }
        }
        dropped.push(def);
    }
    for def in [TableDefinition::<&str, &[u8]>::new("meta")] {
        if present.iter().any(|p| p == def.name()) {
            dropped.push(def);
        }
    }
    drop(r);
    // The copy commits first: a crash before the old tables are dropped
    // leaves them behind unused (the revision is no longer 0), never loses
    // an entry.
    if !ops.is_empty() {
        tracing::info!(
            keys = ops.len(),
            "migrated the state store to the revisioned layout"
        );
        store.txn(Txn::ops(ops))?;
    }
    if !dropped.is_empty() {
        let w = db.begin_write().map_err(backend)?;
        for def in &dropped {
            w.delete_table(*def).map_err(backend)?;
        }
        w.commit().map_err(backend)?;
    }
    Ok(())
}
