//! The controller's state and the operations on it, independent of the
//! network: enrolment, agent sessions, certificate renewal, operator calls.
//!
//! Data flow: the server (`server.rs`) decodes frames and calls these
//! methods; decisions come from the I/O-free parts (`registry`, `tokens`,
//! `pki`); resulting writes go to the store through the ordered writer, and
//! events into a bounded log kept both in memory and in the store.

use crate::pki::{Ca, Issued};
use crate::pods::{Applied, PodChange, PodRecord, Pods};
use crate::registry::{Change, LeaseConfig, NodeRecord, Registry};
use crate::legacy_store::{Op, Store, StoreError, Table};
use crate::tokens::{self, NewToken, TokenError, TokenRecord};
use crate::writer::Writer;
use outpost_proto::pod::{PodSpec, PodView, Usage};
use outpost_proto::{
    names, AgentEvent, ErrorCode, ErrorMsg, Event, EventType, NodeReport, NodeView,
    PodStatusUpdate, PodsDesired, TokenInfo, MAX_AGENT_EVENTS,
};
use std::collections::HashMap;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// Events kept (memory and store). Old ones fall off, like Kubernetes' TTL.
pub const EVENT_LOG_LEN: usize = 1000;

const KEY_CA_CERT: &str = "ca.crt";
const KEY_CA_KEY: &str = "ca.key";
const KEY_SERVER_CERT: &str = "server.crt";
const KEY_SERVER_KEY: &str = "server.key";

pub use outpost_proto::clock::now_ms;

/// Serve-time settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub heartbeat_interval: Duration,
    pub grace: Duration,
    pub node_cert_ttl: Duration,
}

/// Errors an operation reports back to the peer.
pub fn err(code: ErrorCode, message: impl Into<String>) -> ErrorMsg {
    ErrorMsg {
        code,
        message: message.into(),
    }
}

/// What `init` wrote into the store: material the server needs.
#[derive(Debug)]
pub struct ServerIdentity {
    pub ca_der: Vec<u8>,
    pub cert_der: Vec<u8>,
    pub key_pem: String,
}

/// Creates the cluster CA and server certificate in an empty store.
/// Returns the CA so the caller can issue the admin certificate.
pub fn init_pki(
    store: &dyn Store,
    cluster: &str,
    sans: &[String],
    server_ttl: Duration,
) -> anyhow::Result<Ca> {
    if store.get(Table::Pki, KEY_CA_CERT)?.is_some() {
        anyhow::bail!(
            "this data directory already holds a cluster; use another --data-dir, or `serve` it"
        );
    }
    let now = SystemTime::now();
    let (ca, ca_key) = Ca::generate(cluster, now)?;
    let (server, server_key) = ca.issue_server(sans, now, server_ttl)?;
    store.apply(vec![
        Op::Put(Table::Pki, KEY_CA_CERT.into(), ca.cert_der().to_vec()),
        Op::Put(Table::Pki, KEY_CA_KEY.into(), ca_key.into_bytes()),
        Op::Put(Table::Pki, KEY_SERVER_CERT.into(), server.cert_der),
        Op::Put(Table::Pki, KEY_SERVER_KEY.into(), server_key.into_bytes()),
    ])?;
    Ok(ca)
}

/// Loads the CA and server identity from an initialised store.
pub fn load_pki(store: &dyn Store) -> anyhow::Result<(Ca, ServerIdentity)> {
    let get = |k: &str| -> anyhow::Result<Vec<u8>> {
        store.get(Table::Pki, k)?.ok_or_else(|| {
            anyhow::anyhow!("the state store has no {k}: run `outpost-controller init` on this data directory first")
        })
    };
    let ca_der = get(KEY_CA_CERT)?;
    let ca_key = String::from_utf8(get(KEY_CA_KEY)?)?;
    let ca = Ca::load(&ca_der, &ca_key)?;
    let ident = ServerIdentity {
        ca_der,
        cert_der: get(KEY_SERVER_CERT)?,
        key_pem: String::from_utf8(get(KEY_SERVER_KEY)?)?,
    };
    Ok((ca, ident))
}

struct Inner {
    registry: Registry,
    pods: Pods,
    events: VecDeque<Event>,
    next_event: u64,
}

/// Counters exported on /metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    pub heartbeats: AtomicU64,
    pub reports: AtomicU64,
    pub enrolments: AtomicU64,
    pub enrolments_rejected: AtomicU64,
    pub renewals: AtomicU64,
    pub sessions_rejected: AtomicU64,
    pub handshakes_failed: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub admin_calls: AtomicU64,
    pub admin_denied: AtomicU64,
}

/// The controller.
pub struct Controller {
    pub settings: Settings,
    ca: Ca,
    ca_hash: String,
    store: Arc<dyn Store>,
    writer: Writer,
    inner: Mutex<Inner>,
    pub metrics: Metrics,
    next_conn: AtomicU64,
    /// Serialises token redemption: read, count a use and commit must not
    /// interleave, or two agents could both spend a token's last use.
    enrol_lock: tokio::sync::Mutex<()>,
    /// Wakes a node's session when its desired pods change.
    pod_waker: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").finish_non_exhaustive()
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    what: &str,
    key: &str,
    bytes: &[u8],
) -> anyhow::Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| anyhow::anyhow!("state store: {what} {key:?} is unreadable: {e}"))
}

impl Controller {
    /// Loads everything from the store.
    pub fn open(store: Arc<dyn Store>, ca: Ca, settings: Settings) -> anyhow::Result<Controller> {
        let mut records = Vec::new();
        for (k, v) in store.list(Table::Nodes)? {
            records.push(decode::<NodeRecord>("node", &k, &v)?);
        }
        let mut events = VecDeque::new();
        for (k, v) in store.list(Table::Events)? {
            events.push_back(decode::<Event>("event", &k, &v)?);
        }
        let next_event = events.back().map_or(1, |e| e.seq + 1);
        let mut pod_records = Vec::new();
        for (k, v) in store.list(Table::Pods)? {
            pod_records.push(decode::<PodRecord>("pod", &k, &v)?);
        }
        let pods = Pods::load(pod_records);
        let registry = Registry::load(
            LeaseConfig {
                grace: settings.grace,
            },
            records,
            Instant::now(),
            now_ms(),
        );
        tracing::info!(
            nodes = registry.len(),
            pods = pods.len(),
            events = events.len(),
            "state loaded"
        );
        Ok(Controller {
            settings,
            ca_hash: ca.hash(),
            ca,
            writer: Writer::start(store.clone()),
            store,
            inner: Mutex::new(Inner {
                registry,
                pods,
                events,
                next_event,
            }),
            metrics: Metrics::default(),
            next_conn: AtomicU64::new(1),
            enrol_lock: tokio::sync::Mutex::new(()),
            pod_waker: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves state that is still
        // consistent per operation; keep serving rather than cascade.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// DER of the cluster CA certificate.
    pub fn ca_der(&self) -> &[u8] {
        self.ca.cert_der()
    }

    pub fn ca_hash(&self) -> &str {
        &self.ca_hash
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Turns registry changes into store ops and events (caller holds the lock).
    fn changes_to_ops(inner: &mut Inner, changes: Vec<Change>, now_ms: u64) -> Vec<Op> {
        let mut ops = Vec::new();
        for c in changes {
            match c {
                Change::Persist(rec) => match serde_json::to_vec(&rec) {
                    Ok(bytes) => ops.push(Op::Put(Table::Nodes, rec.name.clone(), bytes)),
                    Err(e) => tracing::error!("encoding node {}: {e}", rec.name),
                },
                Change::Event {
                    kind,
                    reason,
                    object,
                    message,
                } => ops.extend(Self::push_event(
                    inner, kind, reason, object, message, now_ms,
                )),
            }
        }
        ops
    }

    fn push_event(
        inner: &mut Inner,
        kind: EventType,
        reason: &str,
        object: String,
        message: String,
        now_ms: u64,
    ) -> Vec<Op> {
        match kind {
            EventType::Normal => tracing::info!(%object, reason, "{message}"),
            EventType::Warning => tracing::warn!(%object, reason, "{message}"),
        }
        let ev = Event {
            seq: inner.next_event,
            time_ms: now_ms,
            kind,
            reason: reason.to_string(),
            object,
            message,
        };
        inner.next_event += 1;
        let mut ops = Vec::new();
        if let Ok(bytes) = serde_json::to_vec(&ev) {
            ops.push(Op::Put(Table::Events, format!("{:020}", ev.seq), bytes));
        }
        inner.events.push_back(ev);
        while inner.events.len() > EVENT_LOG_LEN {
            if let Some(old) = inner.events.pop_front() {
                ops.push(Op::Delete(Table::Events, format!("{:020}", old.seq)));
            }
        }
        ops
    }

    /// Records an event that did not come from the registry.
    pub fn event(&self, kind: EventType, reason: &str, object: String, message: String) {
        let ops = {
            let mut inner = self.lock();
            Self::push_event(&mut inner, kind, reason, object, message, now_ms())
        };
        self.writer.submit(ops);
    }

    fn apply(&self, f: impl FnOnce(&mut Registry, Instant, u64) -> Vec<Change>) {
        let now = Instant::now();
        let ms = now_ms();
        let ops = {
            let mut inner = self.lock();
            let changes = f(&mut inner.registry, now, ms);
            if changes.is_empty() {
                return;
            }
            Self::changes_to_ops(&mut inner, changes, ms)
        };
        self.writer.submit(ops);
    }

    // ---- enrolment ----

    fn load_token(&self, id: &str) -> Result<Option<TokenRecord>, ErrorMsg> {
        let bytes = self
            .store
            .get(Table::Tokens, id)
            .map_err(|e: StoreError| err(ErrorCode::Internal, e.to_string()))?;
        bytes
            .map(|b| decode::<TokenRecord>("token", id, &b))
            .transpose()
            .map_err(|e| err(ErrorCode::Internal, e.to_string()))
    }

    /// Signs a node certificate for `node` from its CSR.
    fn sign(&self, node: &str, csr_der: &[u8]) -> Result<Issued, ErrorMsg> {
        self.ca
            .sign_node_csr(
                node,
                csr_der,
                SystemTime::now(),
                self.settings.node_cert_ttl,
            )
            .map_err(|e| err(ErrorCode::InvalidRequest, e.to_string()))
    }

    /// Redeems a token for a node certificate.
    pub async fn enrol(
        &self,
        token: &str,
        node: &str,
        csr_der: &[u8],
        agent_labels: BTreeMap<String, String>,
    ) -> Result<(Issued, BTreeMap<String, String>), ErrorMsg> {
        names::validate_node_name(node).map_err(|e| err(ErrorCode::InvalidRequest, e))?;
        names::validate_labels(&agent_labels).map_err(|e| err(ErrorCode::InvalidRequest, e))?;
        let id = tokens::id_of(token).map_err(|e| err(ErrorCode::InvalidToken, e.to_string()))?;
        // Signing (CPU) happens before the lock; only the token bookkeeping
        // and its commit are serialised. The certificate is handed out only
        // if the token then checks out.
        let issued = self.sign(node, csr_der)?;
        let _serial = self.enrol_lock.lock().await;
        let record = self.load_token(id)?;
        let used = tokens::redeem(token, record.as_ref(), now_ms()).map_err(|e: TokenError| {
            if record.is_some() {
                self.event(
                    EventType::Warning,
                    "EnrolmentRejected",
                    format!("token/{id}"),
                    format!("node {node} was refused: {e}"),
                );
            }
            err(ErrorCode::InvalidToken, e.to_string())
        })?;
        if self.lock().registry.contains(node) {
            return Err(err(
                ErrorCode::AlreadyExists,
                format!("node {node} is already enrolled; pick another --name, or remove it first with `outpostctl delete node {node}`"),
            ));
        }
        let rec = NodeRecord::new(
            node,
            used.labels.clone(),
            agent_labels,
            issued.serial.clone(),
            issued.not_after_ms,
            now_ms(),
        );
        let labels = rec.labels();
        let token_bytes =
            serde_json::to_vec(&used).map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
        // Token use and node record commit together, before the agent gets
        // its certificate: a crash cannot leave a certificate without a node.
        let ops = {
            let mut inner = self.lock();
            if inner.registry.contains(node) {
                return Err(err(
                    ErrorCode::AlreadyExists,
                    format!("node {node} was enrolled concurrently; pick another --name"),
                ));
            }
            let now = Instant::now();
            let changes = inner.registry.register(rec, now, now_ms());
            let mut ops = vec![Op::Put(Table::Tokens, used.id.clone(), token_bytes)];
            ops.extend(Self::changes_to_ops(&mut inner, changes, now_ms()));
            ops
        };
        self.writer
            .commit(ops)
            .await
            .map_err(|e| err(ErrorCode::Internal, e))?;
        self.metrics.enrolments.fetch_add(1, Ordering::Relaxed);
        Ok((issued, labels))
    }

    // ---- agent sessions ----

    /// Checks a node certificate at session start.
    pub fn authorize(&self, node: &str, serial: &str) -> Result<(), ErrorMsg> {
        self.lock()
            .registry
            .authorize(node, serial)
            .map_err(|e| err(ErrorCode::Unauthenticated, e.to_string()))
    }

    /// Registers a live session; returns a replaced connection id to close.
    pub fn connect(&self, node: &str, conn_id: u64, remote: String) -> Option<u64> {
        self.lock().registry.connect(node, conn_id, remote)
    }

    pub fn disconnect(&self, node: &str, conn_id: u64) {
        self.lock().registry.disconnect(node, conn_id);
    }

    /// A session was accepted: renews the lease like a heartbeat, without
    /// counting one.
    pub fn session_started(&self, node: &str) {
        self.apply(|r, now, ms| r.heartbeat(node, now, ms));
    }

    pub fn heartbeat(&self, node: &str) {
        self.metrics.heartbeats.fetch_add(1, Ordering::Relaxed);
        self.apply(|r, now, ms| r.heartbeat(node, now, ms));
    }

    pub fn report(&self, node: &str, report: NodeReport) -> Result<(), ErrorMsg> {
        report
            .validate()
            .map_err(|e| err(ErrorCode::InvalidRequest, format!("report rejected: {e}")))?;
        self.metrics.reports.fetch_add(1, Ordering::Relaxed);
        self.apply(|r, now, ms| r.report(node, report, now, ms));
        Ok(())
    }

    /// Signs a renewal CSR for the node named by the connection's certificate.
    pub async fn renew(&self, node: &str, csr_der: &[u8]) -> Result<Issued, ErrorMsg> {
        let issued = self.sign(node, csr_der)?;
        let ops = {
            let mut inner = self.lock();
            let changes = inner
                .registry
                .renewed(node, issued.serial.clone(), issued.not_after_ms);
            if changes.is_empty() {
                return Err(err(ErrorCode::NotFound, format!("node {node} was deleted")));
            }
            Self::changes_to_ops(&mut inner, changes, now_ms())
        };
        // The new serial must be durable before the agent may rely on it.
        self.writer
            .commit(ops)
            .await
            .map_err(|e| err(ErrorCode::Internal, e))?;
        self.metrics.renewals.fetch_add(1, Ordering::Relaxed);
        Ok(issued)
    }

    /// Expires leases; called about once a second.
    pub fn tick(&self) {
        self.apply(|r, now, ms| r.tick(now, ms));
    }

    // ---- operator calls ----

    pub fn nodes(&self) -> Vec<NodeView> {
        self.lock().registry.list()
    }

    pub fn node(&self, name: &str) -> Result<NodeView, ErrorMsg> {
        self.lock()
            .registry
            .view(name)
            .ok_or_else(|| err(ErrorCode::NotFound, format!("node {name:?} not found")))
    }

    /// Node counts for metrics: (ready, not ready, connected).
    pub fn node_counts(&self) -> (usize, usize, usize) {
        let inner = self.lock();
        let (ready, not_ready) = inner.registry.ready_counts();
        (ready, not_ready, inner.registry.connected())
    }

    pub fn events(&self, object: Option<&str>, limit: usize) -> Vec<Event> {
        let inner = self.lock();
        let mut out: Vec<Event> = inner
            .events
            .iter()
            .rev()
            .filter(|e| object.is_none_or(|o| e.object == o))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    pub async fn create_token(&self, new: NewToken) -> Result<(String, TokenInfo), ErrorMsg> {
        names::validate_labels(&new.labels).map_err(|e| err(ErrorCode::InvalidRequest, e))?;
        if new.description.len() > 256 {
            return Err(err(
                ErrorCode::InvalidRequest,
                "description is longer than 256 bytes",
            ));
        }
        let (clear, record) = tokens::create(new, now_ms());
        let bytes =
            serde_json::to_vec(&record).map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
        self.writer
            .commit(vec![Op::Put(Table::Tokens, record.id.clone(), bytes)])
            .await
            .map_err(|e| err(ErrorCode::Internal, e))?;
        self.event(
            EventType::Normal,
            "TokenCreated",
            format!("token/{}", record.id),
            format!(
                "bootstrap token {} created, expires at {}",
                record.id,
                outpost_proto::units::rfc3339(record.expires_ms)
            ),
        );
        Ok((clear, record.info()))
    }

    pub fn tokens(&self) -> Result<Vec<TokenInfo>, ErrorMsg> {
        let list = self
            .store
            .list(Table::Tokens)
            .map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
        list.iter()
            .map(|(k, v)| {
                decode::<TokenRecord>("token", k, v)
                    .map(|r| r.info())
                    .map_err(|e| err(ErrorCode::Internal, e.to_string()))
            })
            .collect()
    }

    pub async fn revoke_token(&self, id: &str) -> Result<String, ErrorMsg> {
        let mut rec = self
            .load_token(id)?
            .ok_or_else(|| err(ErrorCode::NotFound, format!("token {id:?} not found")))?;
        rec.revoked = true;
        let bytes =
            serde_json::to_vec(&rec).map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
        self.writer
            .commit(vec![Op::Put(Table::Tokens, id.to_string(), bytes)])
            .await
            .map_err(|e| err(ErrorCode::Internal, e))?;
        self.event(
            EventType::Normal,
            "TokenRevoked",
            format!("token/{id}"),
            format!("bootstrap token {id} revoked"),
        );
        Ok(format!("token {id} revoked"))
    }

    /// Deletes a node; its certificates stop working on the next connection.
    pub async fn delete_node(&self, name: &str) -> Result<String, ErrorMsg> {
        let ops = {
            let mut inner = self.lock();
            if inner.registry.remove(name).is_none() {
                return Err(err(ErrorCode::NotFound, format!("node {name:?} not found")));
            }
            let mut ops = vec![Op::Delete(Table::Nodes, name.to_string())];
            let changes = inner.pods.node_deleted(name);
            ops.extend(pod_ops(changes));
            ops.extend(Self::push_event(
                &mut inner,
                EventType::Normal,
                "NodeDeleted",
                format!("node/{name}"),
                format!("node {name} deleted; its certificates are no longer accepted"),
                now_ms(),
            ));
            ops
        };
        self.writer
            .commit(ops)
            .await
            .map_err(|e| err(ErrorCode::Internal, e))?;
        Ok(format!("node {name} deleted"))
    }

    // ---- pods ----

    /// The waker a node's session waits on for desired-state changes.
    pub fn pod_waker(&self, node: &str) -> Arc<tokio::sync::Notify> {
        self.pod_waker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(node.to_string())
            .or_default()
            .clone()
    }

    fn wake(&self, node: Option<&str>) {
        if let Some(n) = node {
            if let Some(w) = self
                .pod_waker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(n)
            {
                w.notify_one();
            }
        }
    }

    /// Creates or updates a pod; durable before it returns.
    pub async fn apply_pod(&self, spec: PodSpec) -> Result<String, ErrorMsg> {
        let name = spec.name.clone();
        let node = spec.node_name.clone();
        let (applied, ops) = {
            let mut inner = self.lock();
            let exists = node.as_deref().is_some_and(|n| inner.registry.contains(n));
            let (applied, changes) = inner
                .pods
                .apply(spec, exists, now_ms())
                .map_err(|e| err(ErrorCode::InvalidRequest, e))?;
            let mut ops = pod_ops(changes);
            let (reason, message) = match (&applied, node.as_deref()) {
                (Applied::Created, Some(n)) => ("Scheduled", format!("pod {name} bound to node {n}")),
                (Applied::Created, None) => (
                    "Pending",
                    format!("pod {name} created without spec.nodeName; this controller has no scheduler yet, so it stays Pending until re-created with a node"),
                ),
                (Applied::Configured, _) => ("Updated", format!("pod {name} changed; its node replaces the containers")),
                (Applied::Unchanged, _) => ("", String::new()),
            };
            if !reason.is_empty() {
                ops.extend(Self::push_event(
                    &mut inner,
                    EventType::Normal,
                    reason,
                    format!("pod/{name}"),
                    message,
                    now_ms(),
                ));
            }
            (applied, ops)
        };
        if !ops.is_empty() {
            self.writer
                .commit(ops)
                .await
                .map_err(|e| err(ErrorCode::Internal, e))?;
        }
        self.wake(node.as_deref());
        Ok(match applied {
            Applied::Created => format!("pod/{name} created"),
            Applied::Configured => format!("pod/{name} configured"),
            Applied::Unchanged => format!("pod/{name} unchanged"),
        })
    }

    pub async fn delete_pod(&self, name: &str) -> Result<String, ErrorMsg> {
        let (node, ops) = {
            let mut inner = self.lock();
            let node = inner.pods.node_of(name).map(str::to_string);
            let changes = inner
                .pods
                .delete(name)
                .map_err(|e| err(ErrorCode::NotFound, e))?;
            let mut ops = pod_ops(changes);
            ops.extend(Self::push_event(
                &mut inner,
                EventType::Normal,
                "Killing",
                format!("pod/{name}"),
                match &node {
                    Some(n) => format!("pod {name} deleted; node {n} stops its containers"),
                    None => format!("pod {name} deleted"),
                },
                now_ms(),
            ));
            (node, ops)
        };
        self.writer
            .commit(ops)
            .await
            .map_err(|e| err(ErrorCode::Internal, e))?;
        self.wake(node.as_deref());
        Ok(format!("pod \"{name}\" deleted"))
    }

    fn ready_fn(inner: &Inner) -> impl Fn(&str) -> bool + '_ {
        |n: &str| {
            inner.registry.view(n).is_some_and(|v| {
                v.conditions.iter().any(|c| {
                    c.kind == outpost_proto::ConditionType::Ready
                        && c.status == outpost_proto::ConditionStatus::True
                })
            })
        }
    }

    pub fn pods(&self, node: Option<&str>) -> Vec<PodView> {
        let inner = self.lock();
        let ready = Self::ready_fn(&inner);
        inner.pods.list(node, &ready)
    }

    pub fn pod(&self, name: &str) -> Result<PodView, ErrorMsg> {
        let inner = self.lock();
        let ready = Self::ready_fn(&inner);
        inner
            .pods
            .view(name, &ready)
            .ok_or_else(|| err(ErrorCode::NotFound, format!("pod {name:?} not found")))
    }

    /// Desired pods for `node` since the generation it acknowledged.
    pub fn desired_for(&self, node: &str, acked: u64) -> PodsDesired {
        self.lock().pods.desired_for(node, acked)
    }

    pub fn pod_statuses(&self, node: &str, update: PodStatusUpdate) -> Result<(), ErrorMsg> {
        let ops = {
            let mut inner = self.lock();
            let changes = inner.pods.statuses(node, update, now_ms()).map_err(|e| {
                err(
                    ErrorCode::InvalidRequest,
                    format!("pod status rejected: {e}"),
                )
            })?;
            pod_ops(changes)
        };
        if !ops.is_empty() {
            self.writer.submit(ops);
        }
        Ok(())
    }

    /// Records events an agent sent about its own pods.
    pub fn agent_events(&self, node: &str, events: Vec<AgentEvent>) -> Result<(), ErrorMsg> {
        if events.len() > MAX_AGENT_EVENTS {
            return Err(err(
                ErrorCode::InvalidRequest,
                format!(
                    "{} events in one message; at most {MAX_AGENT_EVENTS}",
                    events.len()
                ),
            ));
        }
        let ops = {
            let mut inner = self.lock();
            let mut ops = Vec::new();
            for e in events {
                // Events about the node itself (image and container garbage
                // collection) carry no pod; others only about its own pods.
                let object = if e.pod.is_empty() {
                    format!("node/{node}")
                } else if inner.pods.node_of(&e.pod) == Some(node) {
                    format!("pod/{}", e.pod)
                } else {
                    continue;
                };
                let reason: String = e
                    .reason
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .take(64)
                    .collect();
                let mut message = e.message;
                outpost_proto::pod::truncate(
                    &mut message,
                    outpost_proto::pod::pod_limits::MAX_MESSAGE,
                );
                ops.extend(Self::push_event(
                    &mut inner,
                    e.kind,
                    &reason,
                    object,
                    format!("{message} (node {node})"),
                    now_ms(),
                ));
            }
            ops
        };
        self.writer.submit(ops);
        Ok(())
    }

    pub fn node_usage(&self, node: &str) -> Option<Usage> {
        self.lock().pods.node_usage(node)
    }

    /// Every node's last reported usage.
    pub fn node_usages(&self) -> Vec<(String, Usage)> {
        self.lock().pods.node_usages()
    }
}

/// Store writes for pod changes.
fn pod_ops(changes: Vec<PodChange>) -> Vec<Op> {
    changes
        .into_iter()
        .filter_map(|c| match c {
            PodChange::Persist(rec) => match serde_json::to_vec(&rec) {
                Ok(bytes) => Some(Op::Put(Table::Pods, rec.spec.name.clone(), bytes)),
                Err(e) => {
                    tracing::error!("encoding pod {}: {e}", rec.spec.name);
                    None
                }
            },
            PodChange::Forget(name) => Some(Op::Delete(Table::Pods, name)),
        })
        .collect()
}
