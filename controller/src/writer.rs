//! Ordered, coalescing writes to the store on their own thread.
//!
//! Connection tasks never wait on an fsync: they hand transactions to this
//! thread, which commits everything queued so far in one batch (group
//! commit), in submission order. Callers that must know the write is
//! durable before answering (enrolment, renewal, token creation) wait for
//! the acknowledgement. The queue is bounded: a caller that outruns the
//! disk waits (back-pressure) instead of growing the controller's memory.

use crate::store::{Revision, Store, Txn};
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::oneshot;

type Ack = oneshot::Sender<Result<Revision, String>>;

/// Batches queued before submitters wait: one second of heavy traffic.
const QUEUE: usize = 4096;

/// Handle to the writer thread.
#[derive(Clone, Debug)]
pub struct Writer {
    tx: mpsc::SyncSender<(Txn, Option<Ack>)>,
}

impl Writer {
    /// Starts the writer thread for `store`.
    pub fn start(store: Arc<dyn Store>) -> Writer {
        let (tx, rx) = mpsc::sync_channel::<(Txn, Option<Ack>)>(QUEUE);
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut txns = vec![first.0];
                    let mut acks: Vec<Option<Ack>> = vec![first.1];
                    while let Ok((t, ack)) = rx.try_recv() {
                        txns.push(t);
                        acks.push(ack);
                    }
                    let result = store.txn_batch(txns).map_err(|e| e.to_string());
                    if let Err(e) = &result {
                        tracing::error!("state store write failed: {e}");
                    }
                    for (i, ack) in acks.into_iter().enumerate() {
                        if let Some(ack) = ack {
                            let r = match &result {
                                Ok(rs) => Ok(rs.get(i).map_or(0, |r| r.revision)),
                                Err(e) => Err(e.clone()),
                            };
                            let _ = ack.send(r);
                        }
                    }
                }
            })
            .expect("spawning the store writer thread");
        Writer { tx }
    }

    /// Queues unconditional writes; returns once queued.
    pub fn submit(&self, ops: Vec<crate::store::Op>) {
        if !ops.is_empty() && self.tx.send((Txn::ops(ops), None)).is_err() {
            tracing::error!("state store writer has stopped; a write was lost");
        }
    }

    /// Queues writes and waits until they are durable; returns the
    /// revision they committed at.
    pub async fn commit(&self, ops: Vec<crate::store::Op>) -> Result<Revision, String> {
        let (ack, done) = oneshot::channel();
        let tx = self.tx.clone();
        // A full queue blocks the sender: do that off the async threads.
        tokio::task::spawn_blocking(move || tx.send((Txn::ops(ops), Some(ack))))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|_| "state store writer has stopped".to_string())?;
        done.await
            .map_err(|_| "state store writer has stopped".to_string())?
    }
}
