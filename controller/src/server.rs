//! The controller's QUIC endpoint: one port for agents, operators and
//! enrolment, told apart by the client certificate and the first message.
//!
//! | client certificate | first message   | outcome                               |
//! |--------------------|-----------------|---------------------------------------|
//! | none               | `EnrolRequest`  | enrolment, then the connection closes |
//! | node N             | `Hello{node:N}` | agent session for N                   |
//! | admin              | `Request`       | operator calls, one per stream        |
//! | anything else      | anything else   | `Error` frame, connection closed      |
//!
//! TLS has already verified chain and validity; this layer checks that the
//! certificate is still current for its node (revocation) and that a node
//! only speaks for itself.
//!
//! An operator stream carries one request: the client finishes its side
//! after it (outpostctl does). A second frame on the stream is answered
//! with `InvalidRequest` and the request is not run; a client that leaves
//! its side open is given `SECOND_FRAME_GRACE` (250 ms) for a frame sent with the
//! request to show.

use crate::cluster::{err, Controller};
use crate::handshake::{Admit, HandshakeLimits};
use crate::pki::{self, Role};
use crate::tokens::NewToken;
use outpost_proto::link::{read_frame, read_frame_budgeted, write_frame, FrameReader, LinkError};
use outpost_proto::{
    close, AdminRequest, AdminResponse, EnrolResponse, ErrorCode, ErrorMsg, Message, Welcome,
    MAX_FRAME, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use rustls::pki_types::CertificateDer;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

/// When a connection's setup reached each stage, for
/// [`crate::metrics::SessionSetup`].
#[derive(Debug, Clone, Copy)]
struct SetupTimes {
    /// Its first packet taken from the endpoint.
    accepted: Instant,
    /// Its TLS handshake done.
    tls_done: Instant,
}

/// An agent's session past its Welcome: what its loop needs, owned
/// ([`Server::run_session`]).
struct Established {
    conn: quinn::Connection,
    remote: SocketAddr,
    node: String,
    version: u32,
    last_heard_ms: Option<u64>,
    conn_id: u64,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

/// How long a new connection may take to send its first message.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest enrolment request (a CSR is under 1 KiB).
const MAX_ENROL_FRAME: usize = 64 * 1024;
/// How long a connection without a client certificate may take to send
/// its enrolment request (a CSR under 1 KiB, right after the handshake):
/// idle anonymous connections are dropped this soon.
const ANONYMOUS_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Enrolment requests processed at once (signing is CPU work). A slot is
/// taken only once a request has arrived, so idle anonymous connections
/// hold none.
const ENROL_SLOTS: usize = 64;
/// Connections without a client certificate open at once; more are
/// closed at once with [`close::BUSY`] (each lives at most
/// [`ANONYMOUS_REQUEST_TIMEOUT`] before its request, so a flood is bounded
/// in memory and time, and agents with certificates are never queued
/// behind it).
const ANONYMOUS_CONNECTIONS: usize = 1024;
/// How long an operator stream may take to deliver its request frame (a
/// 1 MiB apply over a slow link included); a stream that trickles is
/// dropped then, and its bytes with it.
const OPERATOR_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Payload bytes of large operator requests (over 64 KiB) read at once,
/// across every connection: 32 applies of a full 1 MiB manifest. One more
/// is answered `TooManyRequests` at once.
const REQUEST_BYTES: usize = 32 * 1024 * 1024;
/// Operator connections open at once (each has at most 8 streams); more
/// are closed with [`close::BUSY`].
const OPERATOR_CONNECTIONS: usize = 64;
/// How long a request waits for a slot before it is told to retry.
const ENROL_SLOT_WAIT: Duration = Duration::from_secs(5);
/// How long a plain operator request waits for its stream's end before
/// it runs anyway (a client that does not finish its side).
const SECOND_FRAME_GRACE: Duration = Duration::from_millis(250);
/// Most events returned by one call.
const MAX_EVENTS: u32 = 1000;
/// How long a session waits after a Service or Endpoints change before it
/// sends the routes that changed, so a rollout's burst of endpoint writes
/// goes out as one update. Well inside the heartbeat interval, which is
/// the bound the issue sets for endpoint changes to reach every node.
const ROUTES_COALESCE: Duration = Duration::from_millis(200);
/// Connections of one kind by node.
type ConnsByNode = Mutex<HashMap<String, (u64, quinn::Connection)>>;

/// Records `conn` as `node`'s, closing the one it replaces with `why`.
fn register(map: &ConnsByNode, node: &str, conn_id: u64, conn: &quinn::Connection, why: &[u8]) {
    let old = map
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(node.to_string(), (conn_id, conn.clone()));
    if let Some((_, old)) = old {
        old.close(close::REPLACED.into(), why);
    }
}

/// Largest relay handshake frame (names and a port).
const MAX_RELAY_FRAME: usize = 4 * 1024;
/// How long the endpoint's agent has to connect to its pod and say so.
const RELAY_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The network side of the controller.
pub struct Server {
    ctrl: Arc<Controller>,
    sessions: ConnsByNode,
    /// Each connected agent's relay connection ([`crate::relay`]).
    relays: ConnsByNode,
    enrol_slots: Semaphore,
    anonymous_slots: Semaphore,
    operator_slots: Semaphore,
    request_bytes: outpost_proto::link::FrameBudget,
    /// Open operator connections by certificate serial, so revoking a
    /// certificate closes them.
    operators: Mutex<HashMap<String, Vec<(u64, quinn::Connection)>>>,
    /// The endpoint and what its TLS is built from, for renewing the
    /// server certificate in place.
    tls: Mutex<Option<Tls>>,
    /// Handshake admission ([`crate::handshake`]); `None`: every
    /// connection is set up at once.
    setups: Option<Setups>,
}

/// Connections being set up, and those waiting for a slot.
struct Setups {
    limits: HandshakeLimits,
    slots: Arc<Semaphore>,
    queued: Arc<AtomicUsize>,
}

/// What the server's TLS configuration is built from.
struct Tls {
    endpoint: quinn::Endpoint,
    ident: crate::cluster::ServerIdentity,
    idle_timeout: Duration,
}

/// The QUIC server configuration for `ident`: its certificate (with the
/// CA, so enrolling agents can check the CA hash), client certificates
/// verified against the CA but optional (enrolment has none).
pub fn quic_server_config(
    ident: &crate::cluster::ServerIdentity,
    idle_timeout: Duration,
) -> anyhow::Result<quinn::ServerConfig> {
    let key = rustls::pki_types::PrivateKeyDer::try_from(
        crate::clientconfig::pem_der(&ident.key_pem, "PRIVATE KEY").map_err(anyhow::Error::msg)?,
    )
    .map_err(anyhow::Error::msg)?;
    let chain = vec![ident.cert_der.clone().into(), ident.ca_der.clone().into()];
    Ok(outpost_proto::link::server_config(
        chain,
        key,
        ident.ca_der.clone().into(),
        outpost_proto::link::transport(idle_timeout, 8),
    )?)
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

/// Why a connection is being closed, with the code the peer sees.
struct Reject {
    code: u32,
    msg: ErrorMsg,
}

impl From<LinkError> for Reject {
    fn from(e: LinkError) -> Self {
        Reject {
            code: close::PROTOCOL_ERROR,
            msg: err(ErrorCode::InvalidRequest, e.to_string()),
        }
    }
}

/// Whether a change since `since` tells the agent anything: pods to run or
/// remove, a different prefetch list, or the whole set. A revision that
/// moved only through writes the agent does not act on (its own pods'
/// statuses, mostly) is not sent, so a status report is never echoed back
/// over a slow uplink as an empty delta; the agent's acknowledged
/// generation stays a valid resume point, as nothing it would be told
/// changed after it.
fn worth_sending(desired: &outpost_proto::NodeDesired, since: u64, sent_images: &[String]) -> bool {
    desired.full
        || (desired.generation != since
            && (!desired.pods.is_empty()
                || !desired.removed.is_empty()
                || desired.images != sent_images))
}

/// The desired-state message for an agent speaking protocol `version`.
fn desired_message(desired: outpost_proto::NodeDesired, version: u32) -> Message {
    if outpost_proto::version::has(version, outpost_proto::version::NODE_DESIRED) {
        Message::NodeDesired(Box::new(desired))
    } else {
        Message::PodsDesired(Box::new(desired.to_pods_desired()))
    }
}

fn deny(code: ErrorCode, message: impl Into<String>) -> Reject {
    Reject {
        code: close::DENIED,
        msg: err(code, message),
    }
}

fn protocol(message: impl Into<String>) -> Reject {
    Reject {
        code: close::PROTOCOL_ERROR,
        msg: err(ErrorCode::InvalidRequest, message),
    }
}

fn peer_identity(conn: &quinn::Connection) -> Result<Option<pki::PeerIdentity>, String> {
    let Some(any) = conn.peer_identity() else {
        return Ok(None);
    };
    let chain = any
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| "unexpected peer identity type".to_string())?;
    match chain.first() {
        None => Ok(None),
        Some(leaf) => pki::identity(leaf).map(Some).map_err(|e| e.to_string()),
    }
}

/// Nodes per response frame: about 600 bytes each, so a page stays well
/// under [`MAX_FRAME`] whatever the fleet size.
const NODES_PER_FRAME: usize = 500;

/// Writes an operator reply. Node listings go out in pages of
/// [`NODES_PER_FRAME`], one frame each; the client reads frames until the
/// stream ends.
async fn write_reply(send: &mut quinn::SendStream, reply: Message) -> Result<(), LinkError> {
    match reply {
        Message::Response(AdminResponse::Nodes(nodes)) if nodes.len() > NODES_PER_FRAME => {
            for page in nodes.chunks(NODES_PER_FRAME) {
                write_frame(
                    send,
                    &Message::Response(AdminResponse::Nodes(page.to_vec())),
                )
                .await?;
            }
            Ok(())
        }
        other => write_frame(send, &other).await,
    }
}

impl Server {
    /// A server with handshake admission sized from this machine's cores.
    pub fn new(ctrl: Arc<Controller>) -> Arc<Server> {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Server::with_handshakes(ctrl, Some(HandshakeLimits::for_cores(cores)))
    }

    /// A server with these handshake limits (`None`: no admission control,
    /// every connection is set up at once).
    pub fn with_handshakes(ctrl: Arc<Controller>, limits: Option<HandshakeLimits>) -> Arc<Server> {
        Arc::new(Server {
            ctrl,
            sessions: Mutex::new(HashMap::new()),
            relays: Mutex::new(HashMap::new()),
            enrol_slots: Semaphore::new(ENROL_SLOTS),
            anonymous_slots: Semaphore::new(ANONYMOUS_CONNECTIONS),
            operator_slots: Semaphore::new(OPERATOR_CONNECTIONS),
            request_bytes: outpost_proto::link::FrameBudget::new(REQUEST_BYTES),
            operators: Mutex::new(HashMap::new()),
            tls: Mutex::new(None),
            setups: limits.map(|limits| Setups {
                limits,
                slots: Arc::new(Semaphore::new(limits.concurrent.max(1))),
                queued: Arc::new(AtomicUsize::new(0)),
            }),
        })
    }

    /// Lets `admin renew-server-cert` swap `endpoint`'s certificate: new
    /// handshakes use the new one, open connections keep theirs.
    pub fn serve_tls(
        &self,
        endpoint: quinn::Endpoint,
        ident: crate::cluster::ServerIdentity,
        idle_timeout: Duration,
    ) {
        *self.tls.lock().unwrap_or_else(|p| p.into_inner()) = Some(Tls {
            endpoint,
            ident,
            idle_timeout,
        });
    }

    /// Issues, saves and starts using a new server certificate.
    async fn renew_server_cert(
        &self,
        caller: &crate::admins::Caller,
        extra_sans: &[String],
        valid_for_secs: Option<u64>,
    ) -> Result<String, ErrorMsg> {
        let _one = self.ctrl.admin_lock.lock().await;
        let current = self
            .tls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|t| t.ident.clone())
            .ok_or_else(|| {
                err(
                    ErrorCode::Unavailable,
                    "this controller does not serve its own endpoint; renew the server certificate with `outpost-controller renew-server-cert` while it is stopped",
                )
            })?;
        let lifetime = match valid_for_secs {
            None => crate::cluster::SERVER_CERT_TTL,
            Some(s) if (60..=crate::cluster::SERVER_CERT_TTL.as_secs()).contains(&s) => {
                Duration::from_secs(s)
            }
            Some(s) => {
                return Err(err(
                    ErrorCode::InvalidRequest,
                    format!("--valid-for {s}s is out of range: between 60s and 10 years"),
                ))
            }
        };
        let (ident, issued, ops) =
            crate::cluster::renew_server_identity(self.ctrl.ca(), &current, extra_sans, lifetime)?;
        let names = crate::pki::server_names(&issued.cert_der).unwrap_or_default();
        let mut tls = self.tls.lock().unwrap_or_else(|p| p.into_inner()).take();
        let result = async {
            let t = tls
                .as_ref()
                .ok_or_else(|| err(ErrorCode::Internal, "endpoint gone"))?;
            let config = quic_server_config(&ident, t.idle_timeout).map_err(|e| {
                err(
                    ErrorCode::Internal,
                    format!("building the new TLS configuration: {e:#}"),
                )
            })?;
            // Saved first: a controller restarted now serves the new one.
            self.ctrl
                .writer()
                .commit(ops)
                .await
                .map_err(|e| err(ErrorCode::Internal, e))?;
            t.endpoint.set_server_config(Some(config));
            Ok::<_, ErrorMsg>(())
        }
        .await;
        if result.is_ok() {
            if let Some(t) = tls.as_mut() {
                t.ident = ident;
            }
        }
        *self.tls.lock().unwrap_or_else(|p| p.into_inner()) = tls;
        result?;
        info!(serial = %issued.serial, by = %caller.name, "server certificate renewed in place");
        self.ctrl
            .event(
                outpost_proto::EventType::Normal,
                "ServerCertificateRenewed",
                "controller".into(),
                format!(
                "server certificate renewed by {} (serial {}, expires {}); new connections use it",
                caller.name,
                issued.serial,
                outpost_proto::units::rfc3339(issued.not_after_ms)
            ),
            )
            .await;
        Ok(format!(
            "server certificate renewed: serial {}, names {}, expires {}; new connections use it, open ones (agents included) carry on",
            issued.serial,
            names.join(", "),
            outpost_proto::units::rfc3339(issued.not_after_ms)
        ))
    }

    /// Closes the open operator connections of revoked certificates
    /// (but `keep`, the connection that asked: it is answered first).
    fn close_operators(&self, serials: &[String], keep: u64) {
        let mut map = self.operators.lock().unwrap_or_else(|p| p.into_inner());
        for serial in serials {
            if let Some(conns) = map.get_mut(serial) {
                conns.retain(|(id, conn)| {
                    if *id == keep {
                        return true;
                    }
                    conn.close(
                        close::DENIED.into(),
                        b"this admin certificate was revoked; use a current config",
                    );
                    false
                });
            }
        }
        map.retain(|_, v| !v.is_empty());
    }

    fn track_operator(&self, serial: &str, id: u64, conn: Option<&quinn::Connection>) {
        let mut map = self.operators.lock().unwrap_or_else(|p| p.into_inner());
        match conn {
            Some(c) => map
                .entry(serial.to_string())
                .or_default()
                .push((id, c.clone())),
            None => {
                if let Some(v) = map.get_mut(serial) {
                    v.retain(|(i, _)| *i != id);
                    if v.is_empty() {
                        map.remove(serial);
                    }
                }
            }
        }
    }

    /// Accepts connections until the endpoint closes, admitting them as
    /// [`crate::handshake`] decides.
    pub async fn run(self: Arc<Self>, endpoint: quinn::Endpoint) {
        while let Some(incoming) = endpoint.accept().await {
            let accepted = Instant::now();
            let Some(setups) = &self.setups else {
                tokio::spawn(self.clone().handle(incoming, None, accepted));
                continue;
            };
            let running = setups
                .limits
                .concurrent
                .saturating_sub(setups.slots.available_permits());
            let queued = setups.queued.load(Ordering::Relaxed);
            let metrics = &self.ctrl.metrics;
            match setups
                .limits
                .decide(running, queued, incoming.remote_address_validated())
            {
                Admit::Start => match setups.slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        tokio::spawn(self.clone().handle(incoming, Some(slot), accepted));
                    }
                    // Only this loop takes slots without waiting, and
                    // setups only give them back: cannot happen, but
                    // refusing is the safe answer.
                    Err(_) => {
                        metrics.handshakes_refused.fetch_add(1, Ordering::Relaxed);
                        incoming.refuse();
                    }
                },
                Admit::Queue => {
                    metrics.handshakes_queued.fetch_add(1, Ordering::Relaxed);
                    setups.queued.fetch_add(1, Ordering::Relaxed);
                    let (slots, queued) = (setups.slots.clone(), setups.queued.clone());
                    let wait = setups.limits.max_wait;
                    let me = self.clone();
                    tokio::spawn(async move {
                        let slot = tokio::time::timeout(wait, slots.acquire_owned()).await;
                        queued.fetch_sub(1, Ordering::Relaxed);
                        match slot {
                            // A task of its own, so this one (and its
                            // wait) is freed now.
                            Ok(Ok(slot)) => {
                                tokio::spawn(me.handle(incoming, Some(slot), accepted));
                            }
                            _ => {
                                me.ctrl
                                    .metrics
                                    .handshakes_refused
                                    .fetch_add(1, Ordering::Relaxed);
                                incoming.refuse();
                            }
                        }
                    });
                }
                Admit::Validate => {
                    metrics.handshakes_retried.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = incoming.retry() {
                        // Already validated after all: refuse, never loop.
                        metrics.handshakes_refused.fetch_add(1, Ordering::Relaxed);
                        e.into_incoming().refuse();
                    }
                }
                Admit::Refuse => {
                    metrics.handshakes_refused.fetch_add(1, Ordering::Relaxed);
                    incoming.refuse();
                }
            }
        }
    }

    /// Closes every live session (controller shutdown).
    pub fn close_all(&self) {
        let sessions =
            std::mem::take(&mut *self.sessions.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, (_, conn)) in sessions {
            conn.close(close::SHUTDOWN.into(), b"controller shutting down");
        }
    }

    /// Sets up one connection; `slot` is its setup slot, given back once
    /// the session is established or the connection turns out to be an
    /// enrolment or operator connection (they have their own limits).
    ///
    /// Not an `async fn`: the connection's task lives as long as the
    /// connection and is allocated at the size of its future's largest
    /// state, and an `async fn` keeps its arguments for its whole life
    /// (`quinn::Incoming` is 384 bytes, kept twice). So the handshake is
    /// boxed here, and freed once it is done, as is every other await on
    /// the way to a session but the session itself.
    fn handle(
        self: Arc<Self>,
        incoming: quinn::Incoming,
        slot: Option<OwnedSemaphorePermit>,
        accepted: Instant,
    ) -> impl std::future::Future<Output = ()> + Send {
        let remote = incoming.remote_address();
        let connecting = Box::pin(std::future::IntoFuture::into_future(incoming));
        self.serve(remote, connecting, slot, accepted)
    }

    async fn serve(
        self: Arc<Self>,
        remote: SocketAddr,
        connecting: std::pin::Pin<Box<quinn::IncomingFuture>>,
        slot: Option<OwnedSemaphorePermit>,
        accepted: Instant,
    ) {
        let conn = match connecting.await {
            Ok(c) => c,
            Err(e) => {
                self.ctrl
                    .metrics
                    .handshakes_failed
                    .fetch_add(1, Ordering::Relaxed);
                warn!(%remote, "connection refused during handshake: {e}");
                return;
            }
        };
        let times = SetupTimes {
            accepted,
            tls_done: Instant::now(),
        };
        let identity = match peer_identity(&conn) {
            Ok(id) => id,
            Err(e) => {
                Box::pin(self.finish(&conn, remote, deny(ErrorCode::Unauthenticated, e), None))
                    .await;
                return;
            }
        };
        let mut slot = slot;
        if !matches!(
            identity,
            Some(pki::PeerIdentity {
                role: Role::Node(_),
                ..
            })
        ) {
            slot = None;
        }
        let result = match identity {
            None => match self.anonymous_slots.try_acquire() {
                Ok(_open) => Box::pin(self.clone().anonymous(&conn)).await,
                Err(_) => {
                    conn.close(
                        close::BUSY.into(),
                        b"too many connections without a certificate; retry in a few seconds",
                    );
                    return;
                }
            },
            Some(id) => match id.role.clone() {
                Role::Node(name) => {
                    match Box::pin(
                        self.clone()
                            .agent(&conn, remote, name, id.serial, slot, times),
                    )
                    .await
                    {
                        // The session loop gets a task of its own, holding
                        // only what it needs; this one ends here.
                        Ok(Some(session)) => {
                            tokio::spawn(self.clone().run_session(session));
                            return;
                        }
                        Ok(None) => Ok(()),
                        Err(reject) => Err(reject),
                    }
                }
                Role::Admin(_) | Role::ReadOnly(_) => match self.operator_slots.try_acquire() {
                    Ok(_open) => Box::pin(self.clone().admit_operator(&conn, remote, &id)).await,
                    Err(_) => {
                        conn.close(
                            close::BUSY.into(),
                            format!("more than {OPERATOR_CONNECTIONS} operator connections are open; retry in a few seconds").as_bytes(),
                        );
                        return;
                    }
                },
                Role::Controller => Err(deny(
                    ErrorCode::PermissionDenied,
                    "the controller's own certificate cannot be used as a client",
                )),
            },
        };
        match result {
            Ok(()) => conn.close(close::DONE.into(), b"done"),
            Err(reject) => Box::pin(self.finish(&conn, remote, reject, None)).await,
        }
    }

    /// Logs and counts the rejection, sends it as an `Error` frame on `send`
    /// when there is a stream to answer on, and closes the connection with
    /// its code and reason, so the peer sees why however it is listening.
    async fn finish(
        &self,
        conn: &quinn::Connection,
        remote: SocketAddr,
        reject: Reject,
        send: Option<&mut quinn::SendStream>,
    ) {
        match reject.code {
            close::PROTOCOL_ERROR => {
                self.ctrl
                    .metrics
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
            }
            close::DENIED => {
                self.ctrl
                    .metrics
                    .sessions_rejected
                    .fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        warn!(%remote, code = ?reject.msg.code, "closing connection: {}", reject.msg.message);
        if let Some(send) = send {
            let _ = write_frame(send, &Message::Error(reject.msg.clone())).await;
            let _ = send.finish();
            // Closing abandons unsent data: give the error frame a moment to
            // be acknowledged so the peer reads the reason, not just a code.
            let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
        }
        let reason: Vec<u8> = reject.msg.message.bytes().take(512).collect();
        conn.close(reject.code.into(), &reason);
    }

    async fn first_stream(
        conn: &quinn::Connection,
        max: usize,
        within: Duration,
    ) -> Result<(quinn::SendStream, quinn::RecvStream, Message), Reject> {
        let first = tokio::time::timeout(within, async {
            let (send, mut recv) = conn.accept_bi().await.map_err(LinkError::from)?;
            let msg = read_frame(&mut recv, max).await?;
            Ok::<_, LinkError>((send, recv, msg))
        })
        .await
        .map_err(|_| {
            protocol(format!(
                "no request within {}s of connecting",
                within.as_secs()
            ))
        })??;
        match first {
            (send, recv, Some(msg)) => Ok((send, recv, msg)),
            (_, _, None) => Err(protocol("stream closed before the first message")),
        }
    }

    /// Without a client certificate only enrolment is possible.
    async fn anonymous(self: Arc<Self>, conn: &quinn::Connection) -> Result<(), Reject> {
        let (mut send, _recv, msg) =
            Self::first_stream(conn, MAX_ENROL_FRAME, ANONYMOUS_REQUEST_TIMEOUT).await?;
        let reply = match msg {
            Message::EnrolRequest(req) => {
                let _slot = match tokio::time::timeout(ENROL_SLOT_WAIT, self.enrol_slots.acquire())
                    .await
                {
                    Ok(Ok(slot)) => slot,
                    Ok(Err(_)) => return Err(protocol("shutting down")),
                    Err(_) => {
                        let busy = err(
                            ErrorCode::TooManyRequests,
                            format!("the controller is busy enrolling {ENROL_SLOTS} other nodes; retry in a few seconds"),
                        );
                        write_frame(&mut send, &Message::Error(busy)).await?;
                        let _ = send.finish();
                        let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
                        return Ok(());
                    }
                };
                match self
                    .ctrl
                    .enrol(&req.token, &req.node, &req.csr_der, req.labels)
                    .await
                {
                    Ok((issued, labels)) => {
                        info!(node = %req.node, serial = %issued.serial, "node enrolled");
                        Message::EnrolResponse(EnrolResponse {
                            node: req.node,
                            cert_der: issued.cert_der,
                            ca_der: self.ctrl.ca_der().to_vec(),
                            labels,
                        })
                    }
                    Err(e) => {
                        self.ctrl
                            .metrics
                            .enrolments_rejected
                            .fetch_add(1, Ordering::Relaxed);
                        warn!(node = %req.node, "enrolment refused: {}", e.message);
                        let mut e = e;
                        e.message = format!("enrolment refused: {}", e.message);
                        Message::Error(e)
                    }
                }
            }
            other => {
                let what = match other {
                    Message::Request(_) => "operator calls need an admin certificate; check the outpostctl config (--config / OUTPOST_CONFIG)",
                    Message::Hello(_) => "agent sessions need the node certificate issued at enrolment; none was presented",
                    _ => "without a client certificate a connection may only enrol",
                };
                let reject = deny(
                    ErrorCode::Unauthenticated,
                    format!("no client certificate: {what}"),
                );
                self.finish(conn, conn.remote_address(), reject, Some(&mut send))
                    .await;
                return Ok(());
            }
        };
        write_frame(&mut send, &reply).await?;
        let _ = send.finish();
        // Let the agent read the answer and close first.
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
        Ok(())
    }

    /// An agent's connection: a relay, or a session up to its Welcome,
    /// handed back for [`Server::run_session`] (`None`: done here).
    async fn agent(
        self: Arc<Self>,
        conn: &quinn::Connection,
        remote: SocketAddr,
        cert_node: String,
        serial: String,
        slot: Option<OwnedSemaphorePermit>,
        times: SetupTimes,
    ) -> Result<Option<Established>, Reject> {
        let (mut send, recv, msg) =
            Box::pin(Self::first_stream(conn, MAX_FRAME, FIRST_MESSAGE_TIMEOUT)).await?;
        let result = match msg {
            Message::RelayHello(hello) => {
                drop(slot);
                Box::pin(
                    self.clone()
                        .relay_connection(conn, &cert_node, &serial, hello, &mut send),
                )
                .await
            }
            msg => {
                match Box::pin(self.establish(
                    conn, remote, &cert_node, &serial, msg, &mut send, slot, times,
                ))
                .await
                {
                    Ok((version, last_heard_ms, conn_id)) => {
                        return Ok(Some(Established {
                            conn: conn.clone(),
                            remote,
                            node: cert_node,
                            version,
                            last_heard_ms,
                            conn_id,
                            send,
                            recv,
                        }))
                    }
                    Err(reject) => Err(reject),
                }
            }
        };
        match result {
            Ok(()) => Ok(None),
            // The agent went away; already logged.
            Err(reject) if reject.code == close::DONE => Ok(None),
            Err(reject) => {
                Box::pin(self.finish(conn, remote, reject, Some(&mut send))).await;
                Ok(None)
            }
        }
    }

    /// An established session's loop, then its end: the node
    /// disconnected, a refusal sent when the session ended on one, the
    /// connection closed. Not an `async fn`, so the session's parts are
    /// kept once (an `async fn` also keeps a copy of its arguments), in a
    /// task of its own: this is what each connected agent holds for as
    /// long as it is connected.
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    fn run_session(
        self: Arc<Self>,
        mut s: Established,
    ) -> impl std::future::Future<Output = ()> + Send {
        async move {
            let result = self
                .session_frames(
                    &s.node,
                    s.version,
                    s.last_heard_ms,
                    &mut s.send,
                    &mut s.recv,
                )
                .await;
            self.end_session(&s.node, s.conn_id, &result);
            match result {
                Ok(()) => {}
                Err(reject) if reject.code == close::DONE => {}
                Err(reject) => {
                    Box::pin(self.finish(&s.conn, s.remote, reject, Some(&mut s.send))).await;
                }
            }
            s.conn.close(close::DONE.into(), b"done");
        }
    }

    /// The bookkeeping when a session ends, however it ended.
    fn end_session(&self, node: &str, conn_id: u64, result: &Result<(), Reject>) {
        self.ctrl.disconnect(node, conn_id);
        {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            if sessions.get(node).is_some_and(|(id, _)| *id == conn_id) {
                sessions.remove(node);
            }
        }
        match result {
            Ok(()) => info!(node, "agent disconnected"),
            Err(r) if r.code == close::DONE => {
                info!(node, "agent disconnected: {}", r.msg.message)
            }
            Err(_) => {}
        }
    }

    /// A session's start: the Hello checked, the node connected and
    /// registered, the Welcome sent. Returns the protocol version, when
    /// the node was last heard from and the connection's id.
    #[allow(clippy::too_many_arguments)]
    async fn establish(
        &self,
        conn: &quinn::Connection,
        remote: SocketAddr,
        cert_node: &str,
        serial: &str,
        first: Message,
        send: &mut quinn::SendStream,
        slot: Option<OwnedSemaphorePermit>,
        times: SetupTimes,
    ) -> Result<(u32, Option<u64>, u64), Reject> {
        let hello = match first {
            Message::Hello(h) => h,
            Message::Request(_) => {
                self.ctrl
                    .metrics
                    .admin_denied
                    .fetch_add(1, Ordering::Relaxed);
                return Err(deny(
                    ErrorCode::PermissionDenied,
                    format!("operator calls need an admin certificate; this connection presented the certificate of node {cert_node}"),
                ));
            }
            other => return Err(protocol(format!("expected Hello, got {}", other.kind()))),
        };
        // An older agent is spoken to in its version; a newer one is
        // refused by name, and says hello again in an older version.
        if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&hello.protocol_version) {
            return Err(deny(
                ErrorCode::VersionMismatch,
                format!(
                    "agent speaks protocol {} but this controller speaks {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}; upgrade the older side",
                    hello.protocol_version
                ),
            ));
        }
        let version = hello.protocol_version;
        if hello.node != cert_node {
            return Err(deny(
                ErrorCode::PermissionDenied,
                format!(
                    "certificate is for node {cert_node}, but the agent claims to be node {:?}; a node may only speak for itself",
                    hello.node.chars().take(64).collect::<String>()
                ),
            ));
        }
        // When the node was last heard from: its offline period began
        // then, which bounds how old its queued events may be.
        let conn_id = self.ctrl.next_conn_id();
        let opened = self
            .ctrl
            .open_session(cert_node, serial, conn_id, remote.to_string())
            .map_err(|msg| Reject {
                code: close::DENIED,
                msg,
            })?;
        let last_heard_ms = opened.last_heard_ms;
        if let Some(old) = opened.replaced {
            debug!(node = cert_node, old, "replacing older session");
        }
        register(
            &self.sessions,
            cert_node,
            conn_id,
            conn,
            b"replaced by a newer connection of the same node",
        );
        info!(node = cert_node, %remote, agent = %hello.agent_version, protocol = version, "agent connected");
        let welcome = Message::Welcome(Welcome {
            controller_version: env!("CARGO_PKG_VERSION").to_string(),
            heartbeat_interval_ms: u64::try_from(self.ctrl.settings.heartbeat_interval.as_millis())
                .unwrap_or(u64::MAX),
            server_time_ms: crate::cluster::now_ms(),
        });
        if let Err(e) = write_frame(send, &welcome).await {
            let result = Err(e.into());
            self.end_session(cert_node, conn_id, &result);
            return result.map(|()| (version, last_heard_ms, conn_id));
        }
        let setup = &self.ctrl.metrics.session_setup;
        let welcomed = Instant::now();
        setup.handshake.observe(times.tls_done - times.accepted);
        setup.welcome.observe(welcomed - times.tls_done);
        self.ctrl.session_started(cert_node, version).await;
        setup.first_write.observe(welcomed.elapsed());
        // Established: the next connection may set up.
        drop(slot);
        Ok((version, last_heard_ms, conn_id))
    }

    async fn session_frames(
        &self,
        node: &str,
        version: u32,
        last_heard_ms: Option<u64>,
        send: &mut quinn::SendStream,
        recv: &mut quinn::RecvStream,
    ) -> Result<(), Reject> {
        // Frames are read in this loop's select, which drops the read when
        // another branch wins: the reader keeps its place (a frame is never
        // cut in half) and holds nothing between frames. A task and a
        // channel per connection cost about 3 KiB per connected agent.
        let mut reader = FrameReader::new();
        let waker = self.ctrl.agents.waker(node);
        // Generation last sent; None until the agent said where it stands.
        let mut sent: Option<u64> = None;
        // The prefetch list in the last desired-state message sent.
        let mut sent_images: Vec<String> = Vec::new();
        let mut routes = crate::routes::RoutesSent::default();
        let mut routes_rx = self.ctrl.routes_changed.subscribe();
        // Agents older than the routes get none (their pods reach no
        // Service through them).
        let routes_on = outpost_proto::version::has(version, outpost_proto::version::ROUTES);
        // When to send the routes that changed (the whole table first, right
        // after the desired pods).
        let mut routes_due: Option<tokio::time::Instant> = None;
        loop {
            let msg = tokio::select! {
                () = async {
                    match routes_due {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    routes_due = None;
                    routes_rx.borrow_and_update();
                    let mut frames = {
                        let cache = self.ctrl.cache.read().unwrap_or_else(|p| p.into_inner());
                        routes.diff(&cache)
                    };
                    if let Some(first) = frames.first_mut().filter(|f| f.full) {
                        let cidr = self.ctrl.settings.admission.service_cidr;
                        first.service_network = Some(outpost_proto::route::Ipv4Net {
                            addr: cidr.network(),
                            prefix: cidr.prefix(),
                        });
                        let cache = self.ctrl.cache.read().unwrap_or_else(|p| p.into_inner());
                        first.site = cache
                            .node(node)
                            .and_then(|n| n.label(outpost_proto::names::SITE_LABEL))
                            .unwrap_or_default()
                            .to_string();
                    }
                    for f in frames {
                        debug!(node, full = f.full, routes = f.upsert.len(), removed = f.removed.len(), "sending service routes");
                        write_frame(send, &Message::Routes(Box::new(f))).await?;
                    }
                    continue;
                }
                changed = routes_rx.changed(), if routes_on && sent.is_some() && routes_due.is_none() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    routes_due = Some(tokio::time::Instant::now() + ROUTES_COALESCE);
                    continue;
                }
                frame = reader.next(recv, MAX_FRAME) => match frame {
                    Ok(Some(m)) => m,
                    Ok(None) => return Ok(()),
                    // The link going away is the agent's business, not an error.
                    Err(LinkError::Read(quinn::ReadExactError::ReadError(
                        quinn::ReadError::ConnectionLost(e),
                    ))) => {
                        return Err(Reject {
                            code: close::DONE,
                            msg: err(ErrorCode::Internal, e.to_string()),
                        })
                    }
                    Err(e) => return Err(e.into()),
                },
                () = waker.notified(), if sent.is_some() => {
                    let since = sent.unwrap_or(0);
                    let desired = self.desired_for(node, since);
                    if worth_sending(&desired, since, &sent_images) {
                        debug!(node, generation = desired.generation, pods = desired.pods.len(), removed = desired.removed.len(), "sending desired pods");
                        sent = Some(desired.generation);
                        sent_images.clone_from(&desired.images);
                        write_frame(send, &desired_message(desired, version)).await?;
                    }
                    continue;
                }
            };
            match msg {
                // The rarer and larger awaits are boxed (`Box::pin`): a
                // task is allocated at the size of its largest state, and
                // this loop's is what every connected agent holds.
                Message::Heartbeat(_) => Box::pin(self.ctrl.heartbeat(node)).await,
                Message::Report(report) => Box::pin(self.ctrl.report(node, *report))
                    .await
                    .map_err(|msg| Reject {
                        code: close::PROTOCOL_ERROR,
                        msg,
                    })?,
                Message::RenewRequest(req) => {
                    let reply = match Box::pin(self.ctrl.renew(node, &req.csr_der)).await {
                        Ok(issued) => {
                            info!(node, serial = %issued.serial, "node certificate renewed");
                            Message::RenewResponse(outpost_proto::RenewResponse {
                                cert_der: issued.cert_der,
                            })
                        }
                        Err(e) => Message::Error(e),
                    };
                    write_frame(send, &reply).await?;
                }
                Message::PodsAck(ack) => {
                    if sent.is_none() {
                        // The resume point: send what changed since (or all).
                        let desired = self.desired_for(node, ack.generation);
                        debug!(
                            node,
                            acked = ack.generation,
                            generation = desired.generation,
                            full = desired.full,
                            pods = desired.pods.len(),
                            "resuming desired pods"
                        );
                        sent = Some(desired.generation);
                        sent_images.clone_from(&desired.images);
                        write_frame(send, &desired_message(desired, version)).await?;
                        if outpost_proto::version::has(version, outpost_proto::version::ROUTES) {
                            routes_due = Some(tokio::time::Instant::now());
                        }
                    }
                }
                Message::PodStatuses(update) => {
                    self.ctrl
                        .agents
                        .statuses(
                            node,
                            *update,
                            &self.ctrl.cache,
                            &self.ctrl.inbox,
                            crate::api::Time(crate::cluster::now_ms()),
                        )
                        .map_err(|e| Reject {
                            code: close::PROTOCOL_ERROR,
                            msg: err(
                                ErrorCode::InvalidRequest,
                                format!("pod status rejected: {e}"),
                            ),
                        })?;
                    self.ctrl.inbox_notify.notify_one();
                }
                Message::AgentEvents(events) => Box::pin(self.ctrl.agent_events(node, events))
                    .await
                    .map_err(|msg| Reject {
                        code: close::PROTOCOL_ERROR,
                        msg,
                    })?,
                Message::AgentEventsAt(batch)
                    if outpost_proto::version::has(
                        version,
                        outpost_proto::version::EVENT_TIMES,
                    ) =>
                {
                    Box::pin(self.ctrl.agent_events_at(node, *batch, last_heard_ms))
                        .await
                        .map_err(|msg| Reject {
                            code: close::PROTOCOL_ERROR,
                            msg,
                        })?
                }
                other => {
                    return Err(protocol(format!(
                        "unexpected {} during an agent session",
                        other.kind()
                    )))
                }
            }
        }
    }

    fn desired_for(&self, node: &str, acked: u64) -> outpost_proto::NodeDesired {
        let cache = self.ctrl.cache.read().unwrap_or_else(|p| p.into_inner());
        crate::agents::desired_for(&cache, node, acked)
    }

    /// Checks an operator certificate against its record, then serves its
    /// calls. A refused one is told why on its first stream (outpostctl
    /// prints it as the server's error), then the connection closes.
    async fn admit_operator(
        self: Arc<Self>,
        conn: &quinn::Connection,
        remote: SocketAddr,
        id: &pki::PeerIdentity,
    ) -> Result<(), Reject> {
        let Some((name, role)) = id.role.operator() else {
            return Err(deny(
                ErrorCode::PermissionDenied,
                "not an operator certificate",
            ));
        };
        let caller = crate::admins::Caller {
            name: name.to_string(),
            role,
            serial: id.serial.clone(),
        };
        if let Err(e) = self
            .ctrl
            .admit_operator(name, role, &id.serial, id.not_after_ms)
            .await
        {
            self.ctrl
                .metrics
                .admin_denied
                .fetch_add(1, Ordering::Relaxed);
            let reject = deny(e.code, e.message);
            match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, conn.accept_bi()).await {
                Ok(Ok((mut send, _recv))) => {
                    self.finish(conn, remote, reject, Some(&mut send)).await;
                    return Ok(());
                }
                _ => return Err(reject),
            }
        }
        let conn_id = self.ctrl.next_conn_id();
        self.track_operator(&caller.serial, conn_id, Some(conn));
        let result = self.clone().operator(conn, caller.clone(), conn_id).await;
        self.track_operator(&caller.serial, conn_id, None);
        result
    }

    /// Operator calls: each bidirectional stream carries one request.
    async fn operator(
        self: Arc<Self>,
        conn: &quinn::Connection,
        caller: crate::admins::Caller,
        conn_id: u64,
    ) -> Result<(), Reject> {
        let admin = caller.name.clone();
        loop {
            let (mut send, mut recv) = match conn.accept_bi().await {
                Ok(s) => s,
                Err(_) => return Ok(()),
            };
            let me = self.clone();
            let admin = admin.clone();
            let caller = caller.clone();
            let conn = conn.clone();
            tokio::spawn(async move {
                let frame = read_frame_budgeted(
                    &mut recv,
                    MAX_FRAME,
                    &me.request_bytes,
                    OPERATOR_REQUEST_TIMEOUT,
                )
                .await;
                // Every call, streamed ones included, is checked against
                // the certificate's record (revoked since connecting?) and
                // its role.
                if let Ok(Some(Message::Request(req))) = &frame {
                    let allowed = me
                        .ctrl
                        .still_admitted(&caller)
                        .and_then(|()| crate::admins::authorize(&caller.name, caller.role, req));
                    if let Err(e) = allowed {
                        me.ctrl.metrics.admin_denied.fetch_add(1, Ordering::Relaxed);
                        warn!(%admin, role = %caller.role, "operator call refused: {}", e.message);
                        let _ = write_frame(&mut send, &Message::Error(e)).await;
                        let _ = send.finish();
                        return;
                    }
                }
                let reply = match frame {
                    Ok(Some(Message::Request(AdminRequest::Logs(req)))) => {
                        me.ctrl.metrics.admin_calls.fetch_add(1, Ordering::Relaxed);
                        match me.relay_logs(req, &mut send).await {
                            Ok(()) => {
                                let _ = send.finish();
                                return;
                            }
                            Err(e) => Message::Error(e),
                        }
                    }
                    Ok(Some(Message::Request(AdminRequest::Watch(req)))) => {
                        me.ctrl.metrics.admin_calls.fetch_add(1, Ordering::Relaxed);
                        match crate::watch::serve(&me.ctrl, req, &mut send).await {
                            Ok(()) => {
                                let _ = send.finish();
                                return;
                            }
                            Err(e) => Message::Error(e),
                        }
                    }
                    Ok(Some(Message::Request(AdminRequest::PushImage {
                        node,
                        site,
                        size,
                        name,
                    }))) => {
                        me.ctrl.metrics.admin_calls.fetch_add(1, Ordering::Relaxed);
                        info!(%admin, ?node, ?site, size, %name, "image push");
                        match me
                            .relay_image(node, site, size, name, &mut send, &mut recv)
                            .await
                        {
                            Ok(()) => {
                                let _ = send.finish();
                                return;
                            }
                            Err(e) => Message::Error(e),
                        }
                    }
                    Ok(Some(Message::Request(req))) => {
                        me.ctrl.metrics.admin_calls.fetch_add(1, Ordering::Relaxed);
                        // Within the same budget as the request itself.
                        let after = read_frame_budgeted(
                            &mut recv,
                            MAX_FRAME,
                            &me.request_bytes,
                            SECOND_FRAME_GRACE,
                        )
                        .await;
                        match one_request(after) {
                            Err(e) => {
                                warn!(%admin, "{}", e.message);
                                Message::Error(e)
                            }
                            Ok(()) => {
                                debug!(%admin, ?req, "operator call");
                                match me.admin_call(&caller, conn_id, req).await {
                                    Ok(resp) => Message::Response(resp),
                                    Err(e) => Message::Error(e),
                                }
                            }
                        }
                    }
                    Ok(Some(Message::Hello(_))) => Message::Error(err(
                        ErrorCode::PermissionDenied,
                        "an admin certificate cannot open an agent session",
                    )),
                    Ok(Some(other)) => Message::Error(err(
                        ErrorCode::InvalidRequest,
                        format!("expected Request, got {}", other.kind()),
                    )),
                    Ok(None) => return,
                    // Busy for now: this stream is told, the connection stays.
                    Err(e @ LinkError::Busy { .. }) => {
                        Message::Error(err(ErrorCode::TooManyRequests, e.to_string()))
                    }
                    Err(e) => {
                        let remote = conn.remote_address();
                        me.finish(&conn, remote, e.into(), Some(&mut send)).await;
                        return;
                    }
                };
                if let Err(e) = write_reply(&mut send, reply).await {
                    warn!(%admin, "answering an operator call failed: {e}");
                }
                let _ = send.finish();
            });
        }
    }

    async fn delete(
        &self,
        req: &outpost_proto::DeleteRequest,
        grace: Option<u32>,
    ) -> Result<AdminResponse, ErrorMsg> {
        let message = crate::apiserver::delete(&self.ctrl, req, grace).await?;
        if crate::api::Kind::parse(&req.object.kind) == Some(crate::api::Kind::Node) && !req.dry_run
        {
            self.close_session(&req.object.name);
        }
        Ok(AdminResponse::Done { message })
    }

    async fn admin_call(
        &self,
        caller: &crate::admins::Caller,
        conn_id: u64,
        req: AdminRequest,
    ) -> Result<AdminResponse, ErrorMsg> {
        Ok(match req {
            AdminRequest::CreateAdmin(req) => {
                info!(admin = %caller.name, name = %req.name, role = %req.role, "admin certificate requested");
                AdminResponse::AdminIssued(Box::new(self.ctrl.create_admin(caller, req).await?))
            }
            AdminRequest::ListAdmins => AdminResponse::Admins(self.ctrl.list_admins()),
            AdminRequest::RevokeAdmin { name } => {
                let (message, serials) = self.ctrl.revoke_admin(caller, &name).await?;
                info!(admin = %caller.name, %name, "{message}");
                self.close_operators(&serials, conn_id);
                AdminResponse::Done { message }
            }
            AdminRequest::RenewAdmin(req) => {
                let (issued, old) = self.ctrl.renew_admin(caller, req).await?;
                info!(admin = %caller.name, name = %issued.info.name, serial = %issued.info.serial, replaced = %old, "admin certificate renewed");
                self.close_operators(&[old], conn_id);
                AdminResponse::AdminIssued(Box::new(issued))
            }
            AdminRequest::RenewServerCert {
                extra_sans,
                valid_for_secs,
            } => AdminResponse::Done {
                message: self
                    .renew_server_cert(caller, &extra_sans, valid_for_secs)
                    .await?,
            },
            AdminRequest::ListNodes => AdminResponse::Nodes(self.ctrl.nodes()),
            AdminRequest::GetNode { name } => AdminResponse::Node(Box::new(self.ctrl.node(&name)?)),
            AdminRequest::ListEvents { object, limit } => AdminResponse::Events(
                self.ctrl
                    .events(object.as_deref(), limit.clamp(1, MAX_EVENTS) as usize)
                    .iter()
                    .map(outpost_proto::PlainEvent::from)
                    .collect(),
            ),
            AdminRequest::ListEventSeries { object, limit } => AdminResponse::EventSeries(
                self.ctrl
                    .events(object.as_deref(), limit.clamp(1, MAX_EVENTS) as usize),
            ),
            AdminRequest::CreateToken {
                ttl_secs,
                uses,
                labels,
                description,
            } => {
                if ttl_secs == 0 {
                    return Err(err(ErrorCode::InvalidRequest, "--ttl must be more than 0s"));
                }
                let (token, info) = self
                    .ctrl
                    .create_token(NewToken {
                        ttl_ms: ttl_secs.saturating_mul(1000),
                        uses,
                        labels,
                        description,
                    })
                    .await?;
                AdminResponse::TokenCreated {
                    token,
                    info,
                    ca_hash: self.ctrl.ca_hash().to_string(),
                }
            }
            AdminRequest::ListTokens => AdminResponse::Tokens(self.ctrl.tokens()?),
            AdminRequest::RevokeToken { id } => AdminResponse::Done {
                message: self.ctrl.revoke_token(&id).await?,
            },
            AdminRequest::DeleteNode { name } => {
                let message = self.ctrl.delete_node(&name).await?;
                self.close_session(&name);
                AdminResponse::Done { message }
            }
            AdminRequest::ApplyPod { .. }
            | AdminRequest::DeletePod { .. }
            | AdminRequest::ListPods { .. }
            | AdminRequest::GetPod { .. } => {
                return Err(err(
                    ErrorCode::VersionMismatch,
                    "this outpostctl is older than the controller (pods are now served by the generic object API); use the outpostctl that came with this controller",
                ))
            }
            AdminRequest::NodeUsage => AdminResponse::NodeUsage(self.ctrl.agents.node_usages()),
            AdminRequest::PodUsage => AdminResponse::PodUsage(self.ctrl.agents.pod_usage()),
            AdminRequest::Apply(req) => {
                AdminResponse::Applied(crate::apiserver::apply(&self.ctrl, req).await?)
            }
            AdminRequest::Get(r) => AdminResponse::Object(
                serde_json::to_vec(&crate::apiserver::get(&self.ctrl, &r)?)
                    .map_err(|e| err(ErrorCode::Internal, e.to_string()))?,
            ),
            AdminRequest::List(req) => AdminResponse::List(crate::apiserver::list(&self.ctrl, &req)?),
            AdminRequest::Delete(req) => self.delete(&req, None).await?,
            AdminRequest::DeleteWithGrace {
                request,
                grace_period_seconds,
            } => self.delete(&request, Some(grace_period_seconds)).await?,
            AdminRequest::Scale(req) => AdminResponse::Done {
                message: crate::apiserver::scale(&self.ctrl, &req).await?,
            },
            AdminRequest::Cordon { node, unschedulable } => AdminResponse::Done {
                message: self.ctrl.set_unschedulable(&node, unschedulable).await?,
            },
            AdminRequest::Evict(req) => AdminResponse::Done {
                message: crate::apiserver::evict(&self.ctrl, &req).await?,
            },
            AdminRequest::Logs(_) | AdminRequest::PushImage { .. } | AdminRequest::Watch(_) => {
                return Err(err(
                    ErrorCode::InvalidRequest,
                    "logs and image pushes are streamed, not answered in one frame",
                ))
            }
        })
    }

    /// Closes a deleted node's live session.
    fn close_session(&self, name: &str) {
        let live = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some((_, conn)) = live {
            conn.close(close::DELETED.into(), b"node deleted by an operator");
        }
    }

    /// The live connection of `node`'s agent.
    fn agent_conn(&self, node: &str) -> Result<quinn::Connection, ErrorMsg> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| {
                err(
                    ErrorCode::NotFound,
                    format!("node {node} is not connected; its agent must be online for this"),
                )
            })
    }

    /// An agent's relay connection: registered under its node, then every
    /// stream it opens is a relayed connection ([`crate::relay`]).
    async fn relay_connection(
        self: Arc<Self>,
        conn: &quinn::Connection,
        cert_node: &str,
        serial: &str,
        hello: outpost_proto::route::RelayHello,
        send: &mut quinn::SendStream,
    ) -> Result<(), Reject> {
        if hello.node != cert_node {
            return Err(deny(
                ErrorCode::PermissionDenied,
                format!("certificate is for node {cert_node}, but the relay hello names another node; a node may only speak for itself"),
            ));
        }
        self.ctrl
            .authorize(cert_node, serial)
            .map_err(|msg| Reject {
                code: close::DENIED,
                msg,
            })?;
        let conn_id = self.ctrl.next_conn_id();
        register(
            &self.relays,
            cert_node,
            conn_id,
            conn,
            b"replaced by a newer relay connection",
        );
        write_frame(send, &Message::RelayReady).await?;
        debug!(node = cert_node, "relay connection up");
        loop {
            let Ok((s, r)) = conn.accept_bi().await else {
                break;
            };
            let me = self.clone();
            let from = cert_node.to_string();
            tokio::spawn(async move { me.relay_stream(&from, s, r).await });
        }
        let mut relays = self.relays.lock().unwrap_or_else(|p| p.into_inner());
        if relays.get(cert_node).is_some_and(|(id, _)| *id == conn_id) {
            relays.remove(cert_node);
        }
        Ok(())
    }

    /// One relayed connection from `from`'s agent: check, reach the
    /// endpoint's agent, then copy bytes both ways until either side ends.
    async fn relay_stream(
        &self,
        from: &str,
        mut client_send: quinn::SendStream,
        mut client_recv: quinn::RecvStream,
    ) {
        let opened = async {
            let open = match tokio::time::timeout(
                FIRST_MESSAGE_TIMEOUT,
                read_frame(&mut client_recv, MAX_RELAY_FRAME),
            )
            .await
            {
                Ok(Ok(Some(Message::RelayOpen(o)))) => o,
                Ok(Ok(Some(other))) => {
                    return Err(err(
                        ErrorCode::InvalidRequest,
                        format!("expected RelayOpen, got {}", other.kind()),
                    ))
                }
                _ => return Err(err(ErrorCode::InvalidRequest, "no relay request")),
            };
            let target = {
                let cache = self.ctrl.cache.read().unwrap_or_else(|p| p.into_inner());
                crate::relay::resolve(&cache, from, &open)?
            };
            let conn = self
                .relays
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&target.node)
                .map(|(_, c)| c.clone())
                .ok_or_else(|| {
                    err(
                        ErrorCode::Unavailable,
                        format!(
                            "node {} (running {}) has no relay link now",
                            target.node, open.pod
                        ),
                    )
                })?;
            let (mut to_send, mut to_recv) = conn.open_bi().await.map_err(|e| {
                err(
                    ErrorCode::Unavailable,
                    format!("opening a relay stream to {}: {e}", target.node),
                )
            })?;
            write_frame(&mut to_send, &Message::RelayConnect(target.connect.clone()))
                .await
                .map_err(|e| err(ErrorCode::Unavailable, e.to_string()))?;
            match tokio::time::timeout(
                RELAY_ANSWER_TIMEOUT,
                read_frame(&mut to_recv, MAX_RELAY_FRAME),
            )
            .await
            {
                Ok(Ok(Some(Message::RelayReady))) => Ok((open.service, to_send, to_recv)),
                Ok(Ok(Some(Message::Error(e)))) => Err(e),
                Ok(Ok(_)) | Ok(Err(_)) => Err(err(
                    ErrorCode::Unavailable,
                    format!("node {} did not take the relay", target.node),
                )),
                Err(_) => Err(err(
                    ErrorCode::Unavailable,
                    format!(
                        "node {} did not answer the relay within {RELAY_ANSWER_TIMEOUT:?}",
                        target.node
                    ),
                )),
            }
        }
        .await;
        let (service, mut to_send, mut to_recv) = match opened {
            Ok(o) => o,
            Err(e) => {
                self.ctrl.metrics.relay.refused();
                debug!(node = from, "relay refused: {}", e.message);
                let _ = write_frame(&mut client_send, &Message::Error(e)).await;
                let _ = client_send.finish();
                return;
            }
        };
        if write_frame(&mut client_send, &Message::RelayReady)
            .await
            .is_err()
        {
            return;
        }
        self.ctrl.metrics.relay.opened(&service);
        let up = async {
            let n = tokio::io::copy(&mut client_recv, &mut to_send)
                .await
                .unwrap_or(0);
            let _ = to_send.finish();
            n
        };
        let down = async {
            let n = tokio::io::copy(&mut to_recv, &mut client_send)
                .await
                .unwrap_or(0);
            let _ = client_send.finish();
            n
        };
        let (a, b) = tokio::join!(up, down);
        self.ctrl.metrics.relay.closed(&service, a + b);
    }

    /// `outpostctl logs`: asks the pod's agent for the log on a stream of
    /// its own and relays the chunks until either side ends.
    async fn relay_logs(
        &self,
        req: outpost_proto::LogsRequest,
        out: &mut quinn::SendStream,
    ) -> Result<(), ErrorMsg> {
        let mut req = req;
        let key = if req.pod.contains('/') {
            req.pod.clone()
        } else {
            crate::api::ns_name(crate::api::DEFAULT_NAMESPACE, &req.pod)
        };
        let (node, wire) = {
            let cache = self.ctrl.cache.read().unwrap_or_else(|p| p.into_inner());
            let pod = cache
                .pod(&key)
                .ok_or_else(|| err(ErrorCode::NotFound, format!("pod {:?} not found", req.pod)))?;
            let node = pod.node().map(str::to_string).ok_or_else(|| {
                err(
                    ErrorCode::InvalidRequest,
                    format!(
                        "pod {} is not bound to a node yet, so it has no logs",
                        req.pod
                    ),
                )
            })?;
            (node, crate::agents::wire_key(pod))
        };
        req.pod = wire;
        let conn = self.agent_conn(&node)?;
        let (mut to_agent, mut from_agent) = conn.open_bi().await.map_err(|e| {
            err(
                ErrorCode::Internal,
                format!("opening a stream to {node}: {e}"),
            )
        })?;
        write_frame(&mut to_agent, &Message::LogsRequest(req))
            .await
            .map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
        let _ = to_agent.finish();
        loop {
            let frame = tokio::select! {
                f = read_frame(&mut from_agent, MAX_FRAME) => f,
                // The operator hung up (Ctrl-C on -f): stop asking the agent.
                _ = out.stopped() => {
                    let _ = from_agent.stop(0u32.into());
                    return Ok(());
                }
            };
            match frame {
                Ok(Some(Message::Data(bytes))) => {
                    if write_frame(out, &Message::Response(AdminResponse::Data(bytes)))
                        .await
                        .is_err()
                    {
                        let _ = from_agent.stop(0u32.into());
                        return Ok(());
                    }
                }
                Ok(Some(Message::Error(e))) => return Err(e),
                Ok(None) => return Ok(()),
                Ok(Some(other)) => {
                    return Err(err(
                        ErrorCode::Internal,
                        format!("agent of {node} sent {} instead of log data", other.kind()),
                    ))
                }
                Err(e) => {
                    return Err(err(
                        ErrorCode::Internal,
                        format!("log stream from {node} broke: {e}"),
                    ))
                }
            }
        }
    }

    /// `outpostctl image push`: relays a tarball from the operator to one
    /// node or every connected node of a site, one chunk at a time (memory
    /// stays at one chunk per node whatever the image size; the slowest
    /// node sets the pace through QUIC flow control).
    async fn relay_image(
        &self,
        node: Option<String>,
        site: Option<String>,
        size: u64,
        name: String,
        out: &mut quinn::SendStream,
        input: &mut quinn::RecvStream,
    ) -> Result<(), ErrorMsg> {
        let targets: Vec<String> = match (node, site) {
            (Some(n), None) => vec![n],
            (None, Some(site)) => {
                let t: Vec<String> = self
                    .ctrl
                    .nodes()
                    .into_iter()
                    .filter(|n| {
                        n.connected && n.labels.get(outpost_proto::names::SITE_LABEL) == Some(&site)
                    })
                    .map(|n| n.name)
                    .collect();
                if t.is_empty() {
                    return Err(err(
                        ErrorCode::NotFound,
                        format!("no connected node has site {site}"),
                    ));
                }
                t
            }
            _ => {
                return Err(err(
                    ErrorCode::InvalidRequest,
                    "name exactly one of --node or --site",
                ))
            }
        };
        let progress =
            |node: &str, bytes: u64, done: bool, error: Option<String>, message: String| {
                Message::Response(AdminResponse::Progress(outpost_proto::Progress {
                    node: node.to_string(),
                    bytes,
                    total: size,
                    done,
                    error,
                    message,
                }))
            };
        // Offer the image to every target; each checks its free space and
        // answers before any byte is sent.
        let mut streams = Vec::new();
        for t in targets {
            let offer = async {
                let conn = self.agent_conn(&t)?;
                let (mut s, mut r) = conn
                    .open_bi()
                    .await
                    .map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
                write_frame(
                    &mut s,
                    &Message::ImageLoad(outpost_proto::ImageLoad {
                        size,
                        name: name.clone(),
                    }),
                )
                .await
                .map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
                match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, read_frame(&mut r, MAX_FRAME))
                    .await
                {
                    Ok(Ok(Some(Message::Progress(_)))) => Ok((s, r)),
                    Ok(Ok(Some(Message::Error(e)))) => Err(e),
                    Ok(Ok(other)) => Err(err(
                        ErrorCode::Internal,
                        format!("unexpected answer {:?}", other.map(|m| m.kind())),
                    )),
                    Ok(Err(e)) => Err(err(ErrorCode::Internal, e.to_string())),
                    Err(_) => Err(err(
                        ErrorCode::Internal,
                        format!(
                            "the agent did not answer the offer within {}s",
                            FIRST_MESSAGE_TIMEOUT.as_secs()
                        ),
                    )),
                }
            };
            match offer.await {
                Ok((s, r)) => {
                    let _ =
                        write_frame(out, &progress(&t, 0, false, None, "accepted".into())).await;
                    streams.push((t, s, r));
                }
                Err(e) => {
                    warn!(node = %t, "image push refused: {}", e.message);
                    let _ =
                        write_frame(out, &progress(&t, 0, true, Some(e.message), String::new()))
                            .await;
                }
            }
        }
        if streams.is_empty() {
            let _ = input.stop(0u32.into());
            return Err(err(ErrorCode::InvalidRequest, "no node accepted the image"));
        }
        // Relay. Resetting a node's stream makes its agent drop the partial
        // load, so no half image is kept anywhere.
        fn abort(streams: &mut [(String, quinn::SendStream, quinn::RecvStream)]) {
            for (_, s, _) in streams {
                let _ = s.reset(1u32.into());
            }
        }
        let mut upload = outpost_proto::transfer::ImageStream::new(size);
        let mut last_report = 0u64;
        loop {
            let frame = match read_frame(input, MAX_FRAME).await {
                Ok(frame) => frame,
                Err(e) => {
                    // The operator went away mid-transfer.
                    abort(&mut streams);
                    return Err(err(ErrorCode::Internal, format!("upload interrupted: {e}")));
                }
            };
            let chunk = match upload.next(frame) {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                // A foreign frame, too many bytes or too few: every node
                // drops its partial load.
                Err(e) => {
                    abort(&mut streams);
                    return Err(err(ErrorCode::InvalidRequest, e.to_string()));
                }
            };
            let sent = upload.received();
            // Encoded once, written to every node.
            let frame = outpost_proto::frame::encode(&Message::Data(chunk))
                .map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
            let mut i = 0;
            while i < streams.len() {
                if let Err(e) = streams[i].1.write_all(&frame).await {
                    let (t, _, _) = streams.remove(i);
                    warn!(node = %t, "image push to {t} failed: {e}");
                    let _ = write_frame(
                        out,
                        &progress(
                            &t,
                            sent,
                            true,
                            Some(format!("transfer failed: {e}")),
                            String::new(),
                        ),
                    )
                    .await;
                } else {
                    i += 1;
                }
            }
            if streams.is_empty() {
                return Err(err(ErrorCode::Internal, "every node failed"));
            }
            if sent - last_report > size / 20 {
                last_report = sent;
                let _ = write_frame(out, &progress("", sent, false, None, String::new())).await;
            }
        }
        let sent = upload.received();
        for (_, s, _) in &mut streams {
            let _ = s.finish();
        }
        // Each agent loads and answers.
        for (t, _, mut r) in streams {
            let answer = loop {
                match read_frame(&mut r, MAX_FRAME).await {
                    Ok(Some(Message::Progress(p))) if p.done => break Ok(p.message),
                    Ok(Some(Message::Progress(_))) => continue,
                    Ok(Some(Message::Error(e))) => break Err(e.message),
                    Ok(other) => {
                        break Err(format!("unexpected answer {:?}", other.map(|m| m.kind())))
                    }
                    Err(e) => break Err(e.to_string()),
                }
            };
            let frame = match answer {
                Ok(m) => progress(&t, sent, true, None, m),
                Err(e) => progress(&t, sent, true, Some(e), String::new()),
            };
            let _ = write_frame(out, &frame).await;
        }
        Ok(())
    }
}

/// What followed an operator request on its stream: the stream's end,
/// nothing yet, or a reset are fine; another frame (or bytes that are no
/// frame) is an error, so the request is not run.
fn one_request(next: Result<Option<Message>, LinkError>) -> Result<(), ErrorMsg> {
    let what = match next {
        Ok(None) | Err(LinkError::Read(_) | LinkError::Connection(_) | LinkError::Closed(_)) => {
            return Ok(())
        }
        Err(LinkError::Write(_) | LinkError::TimedOut(_) | LinkError::Busy { .. }) => return Ok(()),
        Ok(Some(m)) => format!("a second frame ({})", m.kind()),
        Err(LinkError::Frame(e)) => format!("bytes that are no frame ({e})"),
    };
    Err(err(
        ErrorCode::InvalidRequest,
        format!(
            "one request per stream: {what} followed the request, which was not run; \
             open a new stream for each request and finish it after the request"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::{one_request, worth_sending};
    use outpost_proto::frame::FrameError;
    use outpost_proto::link::LinkError;
    use outpost_proto::{AdminRequest, ErrorCode, Message};

    #[test]
    fn a_second_frame_on_a_request_stream_is_refused() {
        assert!(one_request(Ok(None)).is_ok());
        let e = one_request(Ok(Some(Message::Request(AdminRequest::ListNodes)))).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(
            e.message.contains("one request per stream"),
            "{}",
            e.message
        );
        assert!(e.message.contains("not run"), "{}", e.message);
        let e = one_request(Err(LinkError::Frame(FrameError::Malformed("x".into())))).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
    }
    use outpost_proto::{NodeDesired, Removal};

    fn delta(generation: u64) -> NodeDesired {
        NodeDesired {
            generation,
            full: false,
            pods: Vec::new(),
            removed: Vec::new(),
            images: Vec::new(),
        }
    }

    #[test]
    fn empty_deltas_are_not_sent() {
        // A revision moved by status writes alone: nothing to tell.
        assert!(!worth_sending(&delta(12), 11, &[]));
        assert!(!worth_sending(&delta(11), 11, &[]));
        // The whole set always goes (the agent has nothing, or must drop).
        let mut full = delta(12);
        full.full = true;
        assert!(worth_sending(&full, 12, &[]));
        // A removal, or a prefetch list that changed (also to empty).
        let mut removal = delta(12);
        removal.removed.push(Removal {
            key: "web".into(),
            grace_period_seconds: Some(2),
        });
        assert!(worth_sending(&removal, 11, &[]));
        assert!(worth_sending(&delta(12), 11, &["img:v2".to_string()]));
        let mut same = delta(12);
        same.images = vec!["img:v2".to_string()];
        assert!(!worth_sending(&same, 11, &["img:v2".to_string()]));
    }
}
