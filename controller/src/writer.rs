//! Ordered, coalescing writes to the store on their own thread.
//!
//! Connection tasks never wait on an fsync: they hand batches to this thread,
//! which applies everything queued so far in one transaction (group commit),
//! in submission order. Callers that must know the write is durable before
//! answering (enrolment, token creation) wait for the acknowledgement.

use crate::legacy_store::{Op, Store, StoreError};
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::oneshot;

type Ack = oneshot::Sender<Result<(), String>>;

/// Handle to the writer thread.
#[derive(Clone, Debug)]
pub struct Writer {
    tx: mpsc::Sender<(Vec<Op>, Option<Ack>)>,
}

impl Writer {
    /// Starts the writer thread for `store`.
    pub fn start(store: Arc<dyn Store>) -> Writer {
        let (tx, rx) = mpsc::channel::<(Vec<Op>, Option<Ack>)>();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut ops = first.0;
                    let mut acks: Vec<Ack> = first.1.into_iter().collect();
                    // Coalesce whatever else is already queued.
                    while let Ok((more, ack)) = rx.try_recv() {
                        ops.extend(more);
                        acks.extend(ack);
                    }
                    let result = store.apply(ops).map_err(|e: StoreError| e.to_string());
                    if let Err(e) = &result {
                        tracing::error!("state store write failed: {e}");
                    }
                    for ack in acks {
                        let _ = ack.send(result.clone());
                    }
                }
            })
            .expect("spawning the store writer thread");
        Writer { tx }
    }

    /// Queues a batch; returns at once.
    pub fn submit(&self, ops: Vec<Op>) {
        if !ops.is_empty() && self.tx.send((ops, None)).is_err() {
            tracing::error!("state store writer has stopped; a write was lost");
        }
    }

    /// Queues a batch and waits until it is durable.
    pub async fn commit(&self, ops: Vec<Op>) -> Result<(), String> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send((ops, Some(ack)))
            .map_err(|_| "state store writer has stopped".to_string())?;
        done.await
            .map_err(|_| "state store writer has stopped".to_string())?
    }
}
