//! The cluster's node side and its shared handles: PKI and enrolment,
//! bootstrap tokens, node leases (the registry), and the handles the rest
//! of the controller shares (store, writer, event log, the control loop's
//! cache and status inbox, the agents' views, the object API).
//!
//! Data flow: the server (`server/`) decodes frames and calls these
//! methods; decisions come from the I/O-free parts (`registry`, `tokens`,
//! `pki`); node records, tokens and events go to the store through the
//! ordered writer. Objects (pods, deployments, ...) are not here: the API
//! (`apiserver`) writes them, the control loop (`controllers::plane`) acts
//! on them, and `agents` turns them into each node's desired pods.

use crate::agents::Agents;
use crate::cache::Cache;
use crate::controllers::status::StatusInbox;
use crate::events::{AgentClock, EventLog, Occurred};
use crate::pki::{Ca, Issued};
use crate::registry::{Change, Enrolment, LeaseConfig, NodeRecord, Registry};
use crate::store::{keys, Op, Store, StoreError};
use crate::tokens::{self, NewToken, TokenRecord};
use crate::writer::{Origin, Writer};
use outpost_proto::{
    names, AgentEvent, AgentEventBatch, ErrorCode, ErrorMsg, Event, EventType, NodeReport,
    NodeView, TokenInfo, MAX_AGENT_EVENTS,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};

const KEY_CA_CERT: &str = "/outpost/pki/ca.crt";
const KEY_CA_KEY: &str = "/outpost/pki/ca.key";
const KEY_SERVER_CERT: &str = "/outpost/pki/server.crt";
const KEY_SERVER_KEY: &str = "/outpost/pki/server.key";

/// Store key of a node's record.
pub fn node_key(name: &str) -> String {
    keys::object("nodes", "", name)
}

/// The store writes and events of registry decisions.
pub fn registry_ops(changes: Vec<Change>, events: &mut EventLog, now_ms: u64) -> Vec<Op> {
    let mut ops = Vec::new();
    for c in changes {
        match c {
            Change::Persist(rec) => match serde_json::to_vec(&rec) {
                Ok(bytes) => ops.push(Op::put(node_key(&rec.name), bytes)),
                Err(e) => tracing::error!("encoding node {}: {e}", rec.name),
            },
            Change::Event {
                kind,
                reason,
                object,
                message,
            } => ops.extend(events.record(kind, reason, object, message, now_ms)),
        }
    }
    ops
}

fn token_key(id: &str) -> String {
    format!("{}{id}", keys::TOKENS)
}

pub use outpost_proto::clock::now_ms;

/// Serve-time settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub heartbeat_interval: Duration,
    pub grace: Duration,
    pub node_cert_ttl: Duration,
    /// Service IP and node port ranges, and the like.
    pub admission: crate::api::admission::AdmissionConfig,
}

/// Errors an operation reports back to the peer.
pub fn err(code: ErrorCode, message: impl Into<String>) -> ErrorMsg {
    ErrorMsg {
        code,
        message: message.into(),
    }
}

/// What `init` wrote into the store: material the server needs.
#[derive(Debug, Clone)]
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
    if store.get(KEY_CA_CERT)?.is_some() {
        anyhow::bail!(
            "this data directory already holds a cluster; use another --data-dir, or `serve` it"
        );
    }
    let now = SystemTime::now();
    let (ca, ca_key) = Ca::generate(cluster, now)?;
    let (server, server_key) = ca.issue_server(sans, now, server_ttl)?;
    store.txn(crate::store::Txn::ops(vec![
        Op::put(KEY_CA_CERT, ca.cert_der().to_vec()),
        Op::put(KEY_CA_KEY, ca_key.into_bytes()),
        Op::put(KEY_SERVER_CERT, server.cert_der),
        Op::put(KEY_SERVER_KEY, server_key.into_bytes()),
    ]))?;
    Ok(ca)
}

/// Records the operator certificate `init` issued, so it is listed and
/// can be revoked like those `admin create` signs.
pub fn record_first_admin(store: &dyn Store, issued: &Issued, name: &str) -> anyhow::Result<()> {
    let info = outpost_proto::AdminInfo {
        name: name.to_string(),
        role: outpost_proto::AdminRole::Admin,
        serial: issued.serial.clone(),
        issued_ms: now_ms(),
        not_after_ms: issued.not_after_ms,
        issued_by: crate::admins::ISSUED_BY_INIT.into(),
        revoked_ms: None,
    };
    let op = crate::admins::record_op(&info).map_err(|e| anyhow::anyhow!(e.message))?;
    store.txn(crate::store::Txn::ops(vec![op]))?;
    Ok(())
}

/// Lifetime of a server certificate: ten years, as `init` gives it.
pub const SERVER_CERT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A new server certificate from `ca` for the names of `current` plus
/// `extra_sans`; returns it with the store writes that save it.
pub fn renew_server_identity(
    ca: &Ca,
    current: &ServerIdentity,
    extra_sans: &[String],
    lifetime: Duration,
) -> Result<(ServerIdentity, Issued, Vec<Op>), ErrorMsg> {
    let mut sans = crate::pki::server_names(&current.cert_der).map_err(|e| {
        err(
            ErrorCode::Internal,
            format!("reading the current server certificate: {e}"),
        )
    })?;
    for s in extra_sans {
        let s = s.trim();
        if s.is_empty() || s.len() > 253 || s.contains(char::is_whitespace) {
            return Err(err(
                ErrorCode::InvalidRequest,
                format!("--san {s:?} is not a DNS name or IP address"),
            ));
        }
        if !sans.iter().any(|x| x == s) {
            sans.push(s.to_string());
        }
    }
    if sans.len() > 64 {
        return Err(err(
            ErrorCode::InvalidRequest,
            format!("{} server names; at most 64", sans.len()),
        ));
    }
    let (issued, key_pem) = ca
        .issue_server(&sans, SystemTime::now(), lifetime)
        .map_err(|e| err(ErrorCode::InvalidRequest, e.to_string()))?;
    let ops = vec![
        Op::put(KEY_SERVER_CERT, issued.cert_der.clone()),
        Op::put(KEY_SERVER_KEY, key_pem.clone().into_bytes()),
    ];
    let ident = ServerIdentity {
        ca_der: current.ca_der.clone(),
        cert_der: issued.cert_der.clone(),
        key_pem,
    };
    Ok((ident, issued, ops))
}

/// Loads the CA and server identity from an initialised store.
pub fn load_pki(store: &dyn Store) -> anyhow::Result<(Ca, ServerIdentity)> {
    let get = |k: &str| -> anyhow::Result<Vec<u8>> {
        store.get(k)?.map(|kv| kv.value.to_vec()).ok_or_else(|| {
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
}

/// The node's certificate `serial` checked against its record.
fn authorize_in(inner: &Inner, node: &str, serial: &str) -> Result<(), ErrorMsg> {
    inner
        .registry
        .authorize(node, serial)
        .map_err(|e| err(ErrorCode::Unauthenticated, e.to_string()))
}

/// What [`Controller::open_session`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOpened {
    /// When the node was last heard from, if ever.
    pub last_heard_ms: Option<u64>,
    /// The node's older session, now replaced, to close.
    pub replaced: Option<u64>,
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
    /// New connections refused by handshake admission (the peer retries).
    pub handshakes_refused: AtomicU64,
    /// New connections sent a QUIC Retry (address validation) before
    /// they could wait for a setup slot.
    pub handshakes_retried: AtomicU64,
    /// New connections that waited for a setup slot.
    pub handshakes_queued: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub admin_calls: AtomicU64,
    pub admin_denied: AtomicU64,
    /// Relayed Service connections, per Service.
    pub relay: crate::relay::RelayMetrics,
    /// Agent session setup times, by stage.
    pub session_setup: crate::metrics::SessionSetup,
}

/// The controller.
pub struct Controller {
    pub settings: Settings,
    ca: Ca,
    ca_hash: String,
    store: Arc<dyn Store>,
    writer: Writer,
    inner: Mutex<Inner>,
    events: Arc<Mutex<EventLog>>,
    pub metrics: Metrics,
    next_conn: AtomicU64,
    /// Serialises token redemption: read, count a use and commit must not
    /// interleave, or two agents could both spend a token's last use.
    enrol_lock: tokio::sync::Mutex<()>,
    /// The control loop's cache (read-only here).
    pub cache: Arc<RwLock<Cache>>,
    /// Where agents' pod statuses wait for the control loop.
    pub inbox: Arc<Mutex<StatusInbox>>,
    /// Wakes the control loop when the inbox fills.
    pub inbox_notify: Arc<tokio::sync::Notify>,
    /// Per-node session wake-ups and live usage.
    pub agents: Agents,
    /// The revision the cache has reached, for read-your-writes.
    pub cache_revision: tokio::sync::watch::Sender<u64>,
    /// Bumped whenever a Service or Endpoints changed: agent sessions send
    /// the routes that changed ([`crate::routes`]).
    pub routes_changed: tokio::sync::watch::Sender<u64>,
    /// Serialises applies (admission allocates from what the cache shows).
    pub apply_lock: tokio::sync::Mutex<()>,
    /// Operator certificates on record ([`crate::admins`]).
    admins: Mutex<crate::admins::AdminBook>,
    /// Serialises changes to the operator records (decide, commit, apply).
    pub(crate) admin_lock: tokio::sync::Mutex<()>,
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
    /// Loads nodes from the store; `cache`, `inbox` and `events` are the
    /// control loop's.
    pub fn open(
        store: Arc<dyn Store>,
        ca: Ca,
        settings: Settings,
        events: Arc<Mutex<EventLog>>,
        cache: Arc<RwLock<Cache>>,
        inbox: Arc<Mutex<StatusInbox>>,
    ) -> anyhow::Result<Controller> {
        let mut records = Vec::new();
        for kv in store.list(&keys::objects("nodes", None))?.kvs {
            records.push(decode::<NodeRecord>("node", &kv.key, &kv.value)?);
        }
        let mut admins = Vec::new();
        for kv in store.list(crate::admins::PREFIX)?.kvs {
            admins.push(decode::<outpost_proto::AdminInfo>(
                "admin certificate",
                &kv.key,
                &kv.value,
            )?);
        }
        let registry = Registry::load(
            LeaseConfig {
                grace: settings.grace,
            },
            records,
            Instant::now(),
            now_ms(),
        );
        let revision = cache.read().unwrap_or_else(|p| p.into_inner()).revision();
        tracing::info!(
            nodes = registry.len(),
            pods = cache.read().unwrap_or_else(|p| p.into_inner()).pod_count(),
            revision,
            "state loaded"
        );
        Ok(Controller {
            settings,
            ca_hash: ca.hash(),
            ca,
            writer: Writer::start(store.clone()),
            store,
            inner: Mutex::new(Inner { registry }),
            events,
            metrics: Metrics::default(),
            next_conn: AtomicU64::new(1),
            enrol_lock: tokio::sync::Mutex::new(()),
            cache,
            inbox,
            inbox_notify: Arc::new(tokio::sync::Notify::new()),
            agents: Agents::default(),
            cache_revision: tokio::sync::watch::Sender::new(revision),
            routes_changed: tokio::sync::watch::Sender::new(0),
            apply_lock: tokio::sync::Mutex::new(()),
            admins: Mutex::new(crate::admins::AdminBook::load(admins)),
            admin_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    pub fn event_log(&self) -> &Arc<Mutex<EventLog>> {
        &self.events
    }

    /// Waits (up to `timeout`) until the cache reflects `revision`, so an
    /// answer given after a write shows the write.
    pub async fn caught_up(&self, revision: u64, timeout: Duration) {
        let mut rx = self.cache_revision.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision)).await;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves state that is still
        // consistent per operation; keep serving rather than cascade.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn admins_lock(&self) -> MutexGuard<'_, crate::admins::AdminBook> {
        self.admins.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn ca(&self) -> &Ca {
        &self.ca
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

    /// Turns registry changes into store ops and events.
    fn changes_to_ops(&self, changes: Vec<Change>, now_ms: u64) -> Vec<Op> {
        registry_ops(changes, &mut self.events_lock(), now_ms)
    }

    fn events_lock(&self) -> MutexGuard<'_, EventLog> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an event that did not come from the registry.
    pub async fn event(&self, kind: EventType, reason: &str, object: String, message: String) {
        let ops = self
            .events_lock()
            .record(kind, reason, object, message, now_ms());
        self.writer.submit(Origin::Controller, ops).await;
    }

    /// Applies a registry decision and queues its writes for `origin`
    /// (waiting for room in the writer's queue if `origin` has its share
    /// pending).
    async fn apply(
        &self,
        origin: Origin,
        f: impl FnOnce(&mut Registry, Instant, u64) -> Vec<Change>,
    ) {
        let now = Instant::now();
        let ms = now_ms();
        let changes = {
            let mut inner = self.lock();
            f(&mut inner.registry, now, ms)
        };
        if changes.is_empty() {
            return;
        }
        let ops = self.changes_to_ops(changes, ms);
        self.writer.submit(origin, ops).await;
    }

    // ---- enrolment ----

    fn load_token(&self, id: &str) -> Result<Option<TokenRecord>, ErrorMsg> {
        let kv = self
            .store
            .get(&token_key(id))
            .map_err(|e: StoreError| err(ErrorCode::Internal, e.to_string()))?;
        kv.map(|kv| decode::<TokenRecord>("token", id, &kv.value))
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

    /// Redeems a token for a node certificate. Idempotent for a box whose
    /// answer was lost: a node that never opened a session may enrol again,
    /// with the same key at no token use ([`Enrolment::Retry`]), or with a
    /// new key for one more use ([`Enrolment::Replace`]).
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
        let kind = self.lock().registry.enrolment(node, &issued.key_sha256);
        // The secret is checked first, so a caller without it learns
        // nothing about which names are taken.
        let checked = match kind {
            Enrolment::Retry => tokens::authenticate(token, record.as_ref()).map(|()| None),
            _ => tokens::redeem(token, record.as_ref(), now_ms()).map(Some),
        };
        let used = match checked {
            Ok(used) => used,
            Err(e) => {
                if record.is_some() {
                    self.event(
                        EventType::Warning,
                        "EnrolmentRejected",
                        format!("token/{id}"),
                        format!("node {node} was refused: {e}"),
                    )
                    .await;
                }
                return Err(err(ErrorCode::InvalidToken, e.to_string()));
            }
        };
        if kind == Enrolment::Taken {
            return Err(err(
                ErrorCode::AlreadyExists,
                format!("node {node} is already enrolled; pick another --name, or remove it first with `outpostctl delete node {node}`"),
            ));
        }
        let mut ops = Vec::new();
        if let Some(used) = &used {
            let token_bytes =
                serde_json::to_vec(used).map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
            ops.push(Op::put(token_key(&used.id), token_bytes));
        }
        // Token use and node record commit together, before the agent gets
        // its certificate: a crash cannot leave a certificate without a node.
        let (changes, labels) = {
            let mut inner = self.lock();
            let concurrent = || {
                err(
                    ErrorCode::AlreadyExists,
                    format!("node {node} was enrolled concurrently; pick another --name"),
                )
            };
            if inner.registry.enrolment(node, &issued.key_sha256) != kind {
                return Err(concurrent());
            }
            let new_record = |used: &tokens::TokenRecord| {
                let mut rec = NodeRecord::new(
                    node,
                    used.labels.clone(),
                    agent_labels.clone(),
                    issued.serial.clone(),
                    issued.not_after_ms,
                    now_ms(),
                );
                rec.enrol_key.clone_from(&issued.key_sha256);
                rec
            };
            match (kind, &used) {
                (Enrolment::New, Some(used)) => {
                    let rec = new_record(used);
                    let labels = rec.labels();
                    (
                        inner.registry.register(rec, Instant::now(), now_ms()),
                        labels,
                    )
                }
                (Enrolment::Replace, Some(used)) => {
                    let rec = new_record(used);
                    let labels = rec.labels();
                    let changes = inner.registry.enrol_replace(rec).ok_or_else(concurrent)?;
                    (changes, labels)
                }
                (Enrolment::Retry, None) => {
                    let changes = inner
                        .registry
                        .enrol_retry(node, issued.serial.clone(), issued.not_after_ms)
                        .ok_or_else(concurrent)?;
                    let labels = inner
                        .registry
                        .record(node)
                        .map(NodeRecord::labels)
                        .unwrap_or_default();
                    (changes, labels)
                }
                _ => return Err(concurrent()),
            }
        };
        ops.extend(self.changes_to_ops(changes, now_ms()));
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
        authorize_in(&self.lock(), node, serial)
    }

    /// A session's start, under one take of the lock (a reconnect storm
    /// brings thousands at once): the certificate checked against the
    /// node's record, when the node was last heard from (its offline
    /// period began then), and the session registered. Returns that time
    /// and the id of a replaced connection to close.
    pub fn open_session(
        &self,
        node: &str,
        serial: &str,
        conn_id: u64,
        remote: String,
    ) -> Result<SessionOpened, ErrorMsg> {
        let mut inner = self.lock();
        authorize_in(&inner, node, serial)?;
        let last_heard_ms = inner
            .registry
            .view(node)
            .map(|v| v.last_heartbeat_ms)
            .filter(|&t| t > 0);
        let replaced = inner.registry.connect(node, conn_id, remote);
        Ok(SessionOpened {
            last_heard_ms,
            replaced,
        })
    }

    pub fn disconnect(&self, node: &str, conn_id: u64) {
        self.lock().registry.disconnect(node, conn_id);
    }

    /// A session of protocol `version` was accepted: renews the lease like
    /// a heartbeat, without counting one, and notes the version.
    pub async fn session_started(&self, node: &str, version: u32) {
        self.apply(Origin::Node(node.to_string()), |r, now, ms| {
            let mut changes = r.session_protocol(node, version);
            changes.extend(r.heartbeat(node, now, ms));
            changes
        })
        .await;
    }

    pub async fn heartbeat(&self, node: &str) {
        self.metrics.heartbeats.fetch_add(1, Ordering::Relaxed);
        self.apply(Origin::Node(node.to_string()), |r, now, ms| {
            r.heartbeat(node, now, ms)
        })
        .await;
    }

    pub async fn report(&self, node: &str, report: NodeReport) -> Result<(), ErrorMsg> {
        report
            .validate()
            .map_err(|e| err(ErrorCode::InvalidRequest, format!("report rejected: {e}")))?;
        self.metrics.reports.fetch_add(1, Ordering::Relaxed);
        self.apply(Origin::Node(node.to_string()), |r, now, ms| {
            r.report(node, report, now, ms)
        })
        .await;
        Ok(())
    }

    /// Signs a renewal CSR for the node named by the connection's certificate.
    pub async fn renew(&self, node: &str, csr_der: &[u8]) -> Result<Issued, ErrorMsg> {
        let issued = self.sign(node, csr_der)?;
        let changes =
            self.lock()
                .registry
                .renewed(node, issued.serial.clone(), issued.not_after_ms);
        if changes.is_empty() {
            return Err(err(ErrorCode::NotFound, format!("node {node} was deleted")));
        }
        let ops = self.changes_to_ops(changes, now_ms());
        // The new serial must be durable before the agent may rely on it.
        self.writer
            .commit(ops)
            .await
            .map_err(|e| err(ErrorCode::Internal, e))?;
        self.metrics.renewals.fetch_add(1, Ordering::Relaxed);
        Ok(issued)
    }

    /// Expires leases; called about once a second.
    pub async fn tick(&self) {
        self.apply(Origin::Controller, |r, now, ms| r.tick(now, ms))
            .await;
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
        self.events_lock().list(object, limit)
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
            .commit(vec![Op::put(token_key(&record.id), bytes)])
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
        )
        .await;
        Ok((clear, record.info()))
    }

    pub fn tokens(&self) -> Result<Vec<TokenInfo>, ErrorMsg> {
        let list = self
            .store
            .list(keys::TOKENS)
            .map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
        list.kvs
            .iter()
            .map(|kv| {
                decode::<TokenRecord>("token", &kv.key, &kv.value)
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
            .commit(vec![Op::put(token_key(id), bytes)])
            .await
            .map_err(|e| err(ErrorCode::Internal, e))?;
        self.event(
            EventType::Normal,
            "TokenRevoked",
            format!("token/{id}"),
            format!("bootstrap token {id} revoked"),
        )
        .await;
        Ok(format!("token {id} revoked"))
    }

    /// Deletes a node; its certificates stop working on the next
    /// connection, and its pods go with it (nothing can stop them now).
    pub async fn delete_node(&self, name: &str) -> Result<String, ErrorMsg> {
        if self.lock().registry.remove(name).is_none() {
            return Err(err(ErrorCode::NotFound, format!("node {name:?} not found")));
        }
        let mut ops = {
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            self.agents.forget_node(name, &cache);
            node_deletion_ops(name, &cache)
        };
        ops.extend(self.events_lock().record(
            EventType::Normal,
            "NodeDeleted",
            format!("node/{name}"),
            format!("node {name} deleted; its certificates are no longer accepted"),
            now_ms(),
        ));
        let rev = self
            .writer
            .commit(ops)
            .await
            .map_err(|e| err(ErrorCode::Internal, e))?;
        self.caught_up(rev, Duration::from_secs(5)).await;
        Ok(format!("node {name} deleted"))
    }

    /// Cordons or uncordons a node.
    pub async fn set_unschedulable(&self, name: &str, on: bool) -> Result<String, ErrorMsg> {
        let changes = self.lock().registry.set_unschedulable(name, on);
        let Some(changes) = changes else {
            return Err(err(ErrorCode::NotFound, format!("node {name:?} not found")));
        };
        let verb = if on { "cordoned" } else { "uncordoned" };
        if changes.is_empty() {
            return Ok(format!("node/{name} already {verb}"));
        }
        let ops = self.changes_to_ops(changes, now_ms());
        let rev = self
            .writer
            .commit(ops)
            .await
            .map_err(|e| err(ErrorCode::Internal, e))?;
        self.caught_up(rev, Duration::from_secs(5)).await;
        Ok(format!("node/{name} {verb}"))
    }

    /// Records events an agent sent about its own pods (and itself).
    pub async fn agent_events(&self, node: &str, events: Vec<AgentEvent>) -> Result<(), ErrorMsg> {
        if events.len() > MAX_AGENT_EVENTS {
            return Err(err(
                ErrorCode::InvalidRequest,
                format!(
                    "{} events in one message; at most {MAX_AGENT_EVENTS}",
                    events.len()
                ),
            ));
        }
        // An agent older than protocol 5 says nothing of when: now.
        let now = now_ms();
        let at = Occurred {
            first_ms: now,
            last_ms: now,
            count: 1,
        };
        self.record_agent_events(node, events.into_iter().map(|e| (e, at)))
            .await;
        Ok(())
    }

    /// Events of an agent speaking protocol 5, placed on this clock
    /// (`AgentClock`: corrected by the agent's skew, bounded by the
    /// session) and filed by the series rules. `last_heard_ms`: when the
    /// node was last heard from before this session.
    pub async fn agent_events_at(
        &self,
        node: &str,
        batch: AgentEventBatch,
        last_heard_ms: Option<u64>,
    ) -> Result<(), ErrorMsg> {
        batch
            .validate()
            .map_err(|e| err(ErrorCode::InvalidRequest, e))?;
        let clock = AgentClock::new(now_ms(), batch.sent_ms, last_heard_ms);
        self.record_agent_events(
            node,
            batch.events.into_iter().map(|t| {
                let (first_ms, last_ms) = clock.place_series(t.first_time_ms, t.time_ms);
                (
                    t.event,
                    Occurred {
                        first_ms,
                        last_ms,
                        count: t.count,
                    },
                )
            }),
        )
        .await;
        Ok(())
    }

    async fn record_agent_events(
        &self,
        node: &str,
        events: impl Iterator<Item = (AgentEvent, Occurred)>,
    ) {
        let mut ops = Vec::new();
        // The cache is read in a block of its own: its guard must not be
        // held while the writes wait for room.
        {
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            for (e, at) in events {
                // Events about the node itself (image and container garbage
                // collection) carry no pod; others only about its own pods.
                let object = if e.pod.is_empty() {
                    format!("node/{node}")
                } else {
                    let key = crate::agents::pod_key(&e.pod);
                    match cache.pod(&key) {
                        Some(p) if p.node() == Some(node) => crate::api::machinery::object_ref(
                            crate::api::Kind::Pod,
                            &p.metadata.namespace,
                            &p.metadata.name,
                        ),
                        _ => continue,
                    }
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
                ops.extend(self.events_lock().record_series(
                    e.kind,
                    &reason,
                    object,
                    format!("{message} (node {node})"),
                    at,
                ));
            }
        }
        self.writer
            .submit(Origin::Node(node.to_string()), ops)
            .await;
    }
}

/// What deleting node `name` writes: its record, and every pod bound to it,
/// removed outright (nothing can stop them now), so their owners replace
/// them at once.
pub fn node_deletion_ops(name: &str, cache: &Cache) -> Vec<Op> {
    let mut ops = vec![Op::delete(node_key(name))];
    for p in cache.pods_on(name) {
        ops.push(Op::delete(crate::api::Resource::key(p.as_ref())));
    }
    ops
}
