//! Ordered, coalescing writes to the store on their own thread.
//!
//! Connection tasks never wait on an fsync: they hand writes to this
//! thread, which commits everything queued so far in one batch (group
//! commit). Callers that must know the write is durable before answering
//! (enrolment, renewal, token creation) wait for the acknowledgement.
//!
//! The queue ([`pending`]) holds at most one write per store key: a later
//! write to a key replaces the pending one, so an agent that repeats
//! itself does not grow it. It is bounded ([`LIMITS`]), and each node has
//! a share of it; a submitter that finds no room for its writes waits
//! (asynchronously: no thread is blocked) until the next batch is taken.
//! A session that floods therefore slows down only itself (its frames stop
//! being read and QUIC flow control pushes back on the agent), while
//! other nodes' writes are taken at once.

pub mod pending;

use crate::store::{Op, Revision, Store, Txn};
pub use pending::Origin;
use pending::{Limits, Pending};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use tokio::sync::oneshot;

type Ack = oneshot::Sender<Result<Revision, String>>;

/// Keys pending at most, and per node. A node's largest submission is one
/// message of `MAX_AGENT_EVENTS` (64) events, each a put and at most two
/// evictions: under 200 keys, so a share holds two such messages. The cap
/// is 16 shares (values are under 1 KiB but for node records, so a few
/// MiB at most): a node is delayed by others' floods only when more than
/// 15 nodes flood at once, and then only until the next group commit.
pub const LIMITS: Limits = Limits {
    cap: 8192,
    node_share: 512,
};

#[derive(Debug)]
struct Shared {
    queue: Mutex<Pending<Ack>>,
    /// Wakes the writer thread when something is queued.
    work: Condvar,
    /// Wakes submitters waiting for room when a batch was taken.
    room: tokio::sync::Notify,
    stopped: AtomicBool,
    /// Submissions that had to wait for room at least once.
    waited: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending<Ack>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Stops the writer thread when the last [`Writer`] goes: it commits what
/// is queued, then ends.
#[derive(Debug)]
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::Release);
        let _q = self.0.lock();
        self.0.work.notify_all();
    }
}

/// Handle to the writer thread.
#[derive(Clone, Debug)]
pub struct Writer {
    shared: Arc<Shared>,
    _closer: Arc<Closer>,
}

/// The writer thread has stopped.
const STOPPED: &str = "state store writer has stopped";

impl Writer {
    /// Starts the writer thread for `store`.
    pub fn start(store: Arc<dyn Store>) -> Writer {
        Writer::with_limits(store, LIMITS)
    }

    /// Starts the writer thread with other bounds (tests).
    pub fn with_limits(store: Arc<dyn Store>, limits: Limits) -> Writer {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Pending::new(limits)),
            work: Condvar::new(),
            room: tokio::sync::Notify::new(),
            stopped: AtomicBool::new(false),
            waited: AtomicU64::new(0),
        });
        let thread = shared.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(&thread, store.as_ref()))
            .expect("spawning the store writer thread");
        Writer {
            _closer: Arc::new(Closer(shared.clone())),
            shared,
        }
    }

    /// Queues unconditional writes for `origin`; returns once queued,
    /// after waiting for room if `origin` has its share pending or the
    /// queue is full.
    pub async fn submit(&self, origin: Origin, ops: Vec<Op>) {
        if !ops.is_empty() && self.offer(origin, ops, None).await.is_err() {
            tracing::error!("{STOPPED}; a write was lost");
        }
    }

    /// Queues writes and waits until they are durable; returns the
    /// revision they committed at (or a later one: the batch's).
    pub async fn commit(&self, ops: Vec<Op>) -> Result<Revision, String> {
        let (ack, done) = oneshot::channel();
        self.offer(Origin::Controller, ops, Some(ack))
            .await
            .map_err(|()| STOPPED.to_string())?;
        done.await.map_err(|_| STOPPED.to_string())?
    }

    /// Keys pending now, and submissions that waited for room so far.
    pub fn stats(&self) -> (usize, u64) {
        (
            self.shared.lock().len(),
            self.shared.waited.load(Ordering::Relaxed),
        )
    }

    async fn offer(
        &self,
        origin: Origin,
        mut ops: Vec<Op>,
        mut ack: Option<Ack>,
    ) -> Result<(), ()> {
        let mut waited = false;
        loop {
            // Registered before looking, so a batch taken in between wakes it.
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut q = self.shared.lock();
                if self.shared.stopped.load(Ordering::Acquire) {
                    return Err(());
                }
                match q.offer(&origin, ops, ack) {
                    Ok(()) => {
                        self.shared.work.notify_one();
                        return Ok(());
                    }
                    Err(r) => {
                        (ops, ack) = (r.ops, r.ack);
                        if !waited {
                            waited = true;
                            self.shared.waited.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(?origin, why = ?r.why, "store writes wait for room");
                        }
                    }
                }
            }
            room.await;
        }
    }
}

/// The writer thread: takes everything queued, commits it as one
/// transaction, acknowledges, again. Ends when the last handle is dropped
/// and nothing is queued.
fn run(shared: &Shared, store: &dyn Store) {
    loop {
        let batch = {
            let mut q = shared.lock();
            loop {
                if let Some(b) = q.take() {
                    break b;
                }
                if shared.stopped.load(Ordering::Acquire) {
                    return;
                }
                q = shared.work.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        shared.room.notify_waiters();
        let result = store
            .txn_batch(vec![Txn::ops(batch.ops)])
            .map(|rs| rs.first().map_or(0, |r| r.revision))
            .map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!("state store write failed: {e}");
        }
        for ack in batch.acks {
            let _ = ack.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::mem::MemStore;
    use crate::store::{RangeResult, StoreError, TxnResult, Watcher};
    use std::future::Future;
    use std::pin::pin;
    use std::sync::mpsc;
    use std::task::{Context, Poll, Waker};

    /// A store whose commits wait for a go-ahead, so the queue fills while
    /// the writer thread is inside one.
    struct Gated {
        inner: MemStore,
        entered: Mutex<mpsc::Sender<()>>,
        go: Mutex<mpsc::Receiver<()>>,
    }

    impl Store for Gated {
        fn range(&self, start: &str, end: &str, limit: usize) -> Result<RangeResult, StoreError> {
            self.inner.range(start, end, limit)
        }
        fn txn_batch(&self, txns: Vec<Txn>) -> Result<Vec<TxnResult>, StoreError> {
            let _ = self.entered.lock().unwrap().send(());
            let _ = self.go.lock().unwrap().recv();
            self.inner.txn_batch(txns)
        }
        fn revision(&self) -> Revision {
            self.inner.revision()
        }
        fn watch(&self, prefix: &str, from: Revision) -> Watcher {
            self.inner.watch(prefix, from)
        }
    }

    fn node(n: &str) -> Origin {
        Origin::Node(n.into())
    }

    /// Polls `f` once: whether it completed without waiting.
    fn ready_at_once(f: impl Future<Output = ()>) -> bool {
        let f = pin!(f);
        matches!(
            f.poll(&mut Context::from_waker(Waker::noop())),
            Poll::Ready(())
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_from_one_node_does_not_delay_another_node() {
        let (entered_tx, entered) = mpsc::channel();
        // A rendezvous: one go-ahead per commit.
        let (go, go_rx) = mpsc::sync_channel(0);
        let store = Arc::new(Gated {
            inner: MemStore::new(),
            entered: Mutex::new(entered_tx),
            go: Mutex::new(go_rx),
        });
        let w = Writer::with_limits(
            store.clone(),
            Limits {
                cap: 64,
                node_share: 8,
            },
        );
        // The writer thread takes the first write and is held in the store.
        w.submit(node("first"), vec![Op::put("/first", b"1".to_vec())])
            .await;
        entered.recv().unwrap();

        // One node floods: 100 writes of distinct keys.
        let queued = Arc::new(AtomicU64::new(0));
        let mut flood = tokio::task::JoinSet::new();
        for i in 0..100 {
            let (w, queued) = (w.clone(), queued.clone());
            flood.spawn(async move {
                w.submit(
                    node("flood"),
                    vec![Op::put(format!("/flood/{i}"), b"v".to_vec())],
                )
                .await;
                queued.fetch_add(1, Ordering::Relaxed);
            });
        }
        // Until every one of them is queued or waiting (bounded).
        for _ in 0..100_000 {
            if w.stats() == (8, 92) && queued.load(Ordering::Relaxed) == 8 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(w.stats(), (8, 92), "the flood holds exactly its share");
        // Its repeats of what it has queued are taken at once (coalesced)...
        assert!(ready_at_once(w.submit(
            node("flood"),
            vec![Op::put("/flood/0", b"again".to_vec())]
        )));
        // ...and so is another node's write, with the flood still waiting.
        assert!(ready_at_once(
            w.submit(node("quiet"), vec![Op::put("/quiet", b"q".to_vec())])
        ));
        assert_eq!(w.stats(), (9, 92));
        assert_eq!(queued.load(Ordering::Relaxed), 8);

        // Let the writer go: everything lands, the last write of each key.
        std::thread::spawn(move || while go.send(()).is_ok() {});
        while flood.join_next().await.is_some() {}
        w.commit(Vec::new()).await.unwrap();
        let got = |k: &str| store.inner.get(k).unwrap().map(|kv| kv.value.to_vec());
        assert_eq!(got("/quiet"), Some(b"q".to_vec()));
        assert_eq!(got("/flood/0"), Some(b"again".to_vec()));
        for i in 0..100 {
            assert!(
                got(&format!("/flood/{i}")).is_some(),
                "flood write {i} lost"
            );
        }
    }

    #[tokio::test]
    async fn commit_is_acknowledged_after_coalescing() {
        let store = Arc::new(MemStore::new());
        let w = Writer::start(store.clone());
        for i in 0..50u8 {
            w.submit(node("a"), vec![Op::put("/k", vec![i])]).await;
        }
        let rev = w.commit(vec![Op::put("/j", vec![1])]).await.unwrap();
        assert!(rev >= 1);
        assert_eq!(store.get("/k").unwrap().unwrap().value.to_vec(), vec![49]);
    }
}
