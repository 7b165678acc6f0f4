//! The agent's life: enrol once, then keep one mutually authenticated QUIC
//! session to the controller, reconnecting with back-off when it drops.
//!
//! Data flow: the housekeeping task measures the box (and lists the
//! engine's images) every interval and publishes the latest [`NodeReport`]
//! on a watch channel; the session task
//! sends it when it is worth sending (`report::worth_sending`) and heartbeats
//! otherwise, and renews the node certificate over the live session at two
//! thirds of its lifetime. The hello names the newest protocol version; a
//! controller that refuses it (`VersionMismatch`) is greeted again one
//! version lower at once, and what the session's version lacks is left out
//! of what is sent (`NodeReport::for_protocol`: the agent's Ready).
//! Desired pods the data directory cannot take (full disk) do not end the
//! session: they stay unacknowledged and unsaved, and are saved again on
//! `podstate::SaveRetry`'s back-off with one event per distinct failure.

use crate::backoff::Backoff;
use crate::clock::AgentClock;
use crate::config::AgentConfig;
use crate::eventqueue::{self, EventInbox};
use crate::identity::{self, DataDir, Identity};
use crate::podstate::{PodState, SaveRetry};
use crate::pressure::PressureTracker;
use crate::probe::{self, Prober};
use crate::report::worth_sending;
use crate::routes::RouteTable;
use crate::runtime::docker::Engine;
use crate::runtime::images::ImageCatalog;
use crate::runtime::{self, DesiredSet, RuntimeConfig, Snapshot};
use anyhow::{anyhow, bail, Context, Result};
use outpost_proto::clock::now_ms;
use outpost_proto::link::{self, read_frame, write_frame, LinkError};
use outpost_proto::pod::DesiredPod;
use outpost_proto::pod::PodStatus;
use outpost_proto::route::Ipv4Net;
use outpost_proto::transfer::ImageStream;
use outpost_proto::units::rfc3339;
use outpost_proto::{
    close, AgentEvent, EnrolRequest, ErrorCode, EventType, Heartbeat, Hello, Message, NodeDesired,
    NodeReport, PodStatusUpdate, PodsAck, Progress, RenewRequest, MAX_AGENT_EVENTS, MAX_FRAME,
    PROTOCOL_VERSION,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

/// QUIC idle timeout on the agent side; the controller's own setting wins
/// when shorter (the lower of the two applies).
const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the controller has to answer a hello or an enrolment.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Retry a failed renewal after this long.
const RENEW_RETRY: Duration = Duration::from_secs(60);
/// Frames buffered from the reader task; the controller sends few.
const INBOX: usize = 16;
/// Pod events on their way from the runtime to the event queue.
const EVENT_CHANNEL: usize = 256;
/// Least time between two status updates: bursts of changes are batched.
const STATUS_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Streams the controller may open at once (logs, image pushes).
const CONTROLLER_STREAMS: u32 = 8;

fn hostname_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    outpost_proto::names::node_name_from_hostname(&host, "edge")
}

/// The controller's address: a literal, or a name resolved without NSS
/// (`dns::stub`: hosts file, then the node's nameservers), so a static
/// agent on any device image can be given `--controller ctl.example.net:7443`.
async fn resolve(addr: &str) -> Result<SocketAddr> {
    crate::dns::stub::lookup(
        addr,
        std::path::Path::new(crate::dns::stub::HOSTS),
        std::path::Path::new(crate::dns::HOST_RESOLV_CONF),
    )
    .await
    .with_context(|| format!("resolving controller address {addr}"))?
    .into_iter()
    .next()
    .ok_or_else(|| anyhow!("controller address {addr} resolved to nothing"))
}

/// Explains a connection failure in the operator's terms.
fn explain(e: &quinn::ConnectionError) -> String {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => {
            let reason = String::from_utf8_lossy(&c.reason);
            let code = u32::try_from(c.error_code.into_inner()).unwrap_or(u32::MAX);
            match code {
                close::DENIED => format!("controller refused this node: {reason}"),
                close::REPLACED => format!("another connection of this node took over: {reason}"),
                close::DELETED => format!("{reason}; start the agent with a new --token from `outpostctl token create` to rejoin"),
                close::SHUTDOWN => "controller is shutting down".into(),
                close::BUSY => format!("controller is busy: {reason}"),
                close::PROTOCOL_ERROR => format!("controller reported a protocol error: {reason}"),
                _ => format!("controller closed the connection: {reason}"),
            }
        }
        quinn::ConnectionError::TimedOut => {
            "no answer from the controller within the idle timeout".into()
        }
        // Handshake admission (controller/src/handshake.rs): too many
        // agents are connecting at once; the back-off spreads them.
        quinn::ConnectionError::ConnectionClosed(c)
            if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
        {
            "the controller is busy setting up other connections and refused this one; retrying after back-off".into()
        }
        quinn::ConnectionError::TransportError(t) => format!("TLS/QUIC: {t}"),
        other => other.to_string(),
    }
}

/// Sends `msg` on a new stream and waits for one answer.
pub async fn call(conn: &quinn::Connection, msg: &Message) -> Result<Message> {
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await?;
        write_frame(&mut send, msg).await?;
        let _ = send.finish();
        read_frame(&mut recv, MAX_FRAME).await
    };
    match tokio::time::timeout(ANSWER_TIMEOUT, exchange).await {
        Err(_) => bail!("the controller did not answer within {ANSWER_TIMEOUT:?}"),
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) => bail!("the controller closed the stream without answering"),
        Ok(Err(LinkError::Connection(e)))
        | Ok(Err(LinkError::Read(quinn::ReadExactError::ReadError(
            quinn::ReadError::ConnectionLost(e),
        )))) => bail!("{}", explain(&e)),
        Ok(Err(e)) => Err(e.into()),
    }
}

/// The warning for a clock `skew_ms` off the controller's (controller
/// minus local), if it is more than a minute: which way, by how much.
fn skew_warning(skew_ms: i64) -> Option<String> {
    if skew_ms.unsigned_abs() <= 60_000 {
        return None;
    }
    let way = if skew_ms < 0 { "ahead of" } else { "behind" };
    Some(format!(
        "this box's clock is {}s {way} the controller's; fix NTP (certificate checks and renewal follow the controller's clock meanwhile)",
        skew_ms.unsigned_abs() / 1000
    ))
}

/// The public ID of a bootstrap token (`ID.SECRET`); the secret is never
/// written anywhere by the agent.
fn token_id_of(token: &str) -> &str {
    token.split_once('.').map_or(token, |(id, _)| id)
}

/// What a data directory that holds an identity does with `--token`.
#[derive(Debug, PartialEq, Eq)]
enum Start {
    /// Go on with the identity.
    Keep,
    /// Enrol with the new token (the node was deleted, or the box moves to
    /// another token's labels), keeping the identity until the new one is
    /// saved, and falling back to it if the enrolment is refused.
    ReEnrol,
}

/// Whether `--token` (its ID `token`) asks for a new enrolment of a data
/// directory that enrolled with the token `enrolled_with`: only a token
/// other than the recorded one does. The same token passed on every start
/// (a unit file that keeps it) is not a request to enrol again, nor is any
/// token on a directory that never recorded one.
fn start_with(token: Option<&str>, enrolled_with: Option<&str>) -> Start {
    match (token, enrolled_with) {
        (Some(t), Some(e)) if t != e => Start::ReEnrol,
        _ => Start::Keep,
    }
}

/// Outcome of one enrolment attempt.
enum EnrolError {
    /// The controller said no: retrying will not help.
    Refused(String),
    /// Network trouble, or a busy controller: worth retrying.
    Transient(anyhow::Error),
}

/// Gets a node certificate with the bootstrap token, retrying network
/// failures with back-off. A refusal (bad token, name taken) is final.
pub async fn enrol(cfg: &AgentConfig, data: &DataDir, clock: &Arc<AgentClock>) -> Result<Identity> {
    let (Some(token), Some(ca_hash)) = (&cfg.token, &cfg.ca_hash) else {
        bail!(
            "this node is not enrolled yet ({} has no identity): pass --token and --ca-hash from `outpostctl token create`",
            data.0.display()
        );
    };
    let node = cfg.name.clone().unwrap_or_else(hostname_node_name);
    let mut backoff = Backoff::new(Duration::from_millis(500), cfg.max_backoff);
    // One key for every attempt: if the controller committed an attempt
    // whose answer never arrived, the retry with the same key is
    // recognised and answered without spending another token use.
    let pending = identity::new_key(&node)?;
    let resp = loop {
        match enrol_once(cfg, token, ca_hash, &node, &pending.csr_der, clock).await {
            Ok(resp) => break resp,
            Err(EnrolError::Refused(why)) => bail!("{why}"),
            Err(EnrolError::Transient(e)) => {
                let delay = backoff.next_delay(rand::random());
                warn!(
                    "enrolment with {} failed: {e:#}; retrying in {delay:.1?}",
                    cfg.controller
                );
                tokio::time::sleep(delay).await;
            }
        }
    };
    if link::cert_hash(&resp.ca_der) != ca_hash.to_ascii_lowercase() {
        bail!("the controller returned a CA that does not match --ca-hash");
    }
    let id = pending.complete(resp.cert_der)?;
    data.save_ca(&resp.ca_der)?;
    data.save_identity(&id)?;
    data.save_enrolled_token_id(token_id_of(token))?;
    info!(node = %id.node, labels = ?resp.labels, "enrolled; certificate valid until {}", rfc3339(id.not_after_ms));
    Ok(id)
}

/// One enrolment request for the key of `csr_der`.
async fn enrol_once(
    cfg: &AgentConfig,
    token: &str,
    ca_hash: &str,
    node: &str,
    csr_der: &[u8],
    clock: &Arc<AgentClock>,
) -> Result<outpost_proto::EnrolResponse, EnrolError> {
    let t = |e: anyhow::Error| EnrolError::Transient(e);
    let remote = resolve(&cfg.controller).await.map_err(t)?;
    let endpoint = link::client_endpoint(remote)
        .context("opening a UDP socket")
        .map_err(t)?;
    let client =
        link::enrol_client_config_at(ca_hash, link::transport(IDLE_TIMEOUT, 1), clock.clone())
            .map_err(|e| t(e.into()))?;
    let conn = endpoint
        .connect_with(client, remote, &cfg.server_name)
        .map_err(|e| t(e.into()))?
        .await
        .map_err(|e| {
            let text = explain(&e);
            if text.contains("--ca-hash") {
                EnrolError::Refused(text)
            } else {
                t(anyhow!(text))
            }
        })?;
    let reply = call(
        &conn,
        &Message::EnrolRequest(EnrolRequest {
            token: token.to_string(),
            node: node.to_string(),
            csr_der: csr_der.to_vec(),
            labels: cfg.labels.clone(),
        }),
    )
    .await
    .map_err(t)?;
    conn.close(close::DONE.into(), b"enrolled");
    endpoint.wait_idle().await;
    match reply {
        Message::EnrolResponse(r) => Ok(r),
        // Busy or failing for now: the same request later.
        Message::Error(e) if enrol_retryable(e.code) => Err(t(anyhow!("{}", e.message))),
        Message::Error(e) => Err(EnrolError::Refused(e.message)),
        other => Err(t(anyhow!(
            "unexpected {} in answer to enrolment",
            other.kind()
        ))),
    }
}

/// Whether an enrolment refusal is for now only: the controller is busy
/// or failed internally (its store), so the same request may succeed later.
fn enrol_retryable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::TooManyRequests | ErrorCode::Unavailable | ErrorCode::Internal
    )
}

/// How long one housekeeping look at the engine's images may take.
const IMAGES_TIMEOUT: Duration = Duration::from_secs(10);

/// Measures the box every housekeeping interval and publishes the report,
/// with the images the engine of node `node` holds.
pub async fn housekeeping(
    cfg: AgentConfig,
    node: String,
    clock: Arc<AgentClock>,
    tx: watch::Sender<Option<NodeReport>>,
) {
    let mut prober = Prober::new(cfg.data_dir.clone(), cfg.host.clone());
    let mut tracker = PressureTracker::new(cfg.pressure.clone());
    let mut images = ImageCatalog::default();
    // Speaking the engine's API version; dropped (and negotiated again)
    // after a failure, as the engine may come back as another version.
    let mut engine: Option<Engine> = None;
    let mut tick = tokio::time::interval(cfg.housekeeping_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut runtime_was: Option<bool> = None;
    let mut readiness = crate::readiness::Readiness::default();
    loop {
        tick.tick().await;
        let (runtime, docker_root) = probe::docker_runtime().await;
        let not_ready = readiness.observe(&runtime, clock.now_ms());
        if runtime_was != Some(runtime.available) {
            if runtime.available {
                info!(version = %runtime.version, "container runtime available");
            } else {
                warn!("container runtime unavailable: {}", runtime.message);
            }
            runtime_was = Some(runtime.available);
        }
        let obs = prober.observe(docker_root.as_deref());
        let outcome = tracker.observe(&obs, Instant::now(), clock.now_ms());
        for (kind, status) in &outcome.transitions {
            let cond = outcome.conditions.iter().find(|c| c.kind == *kind);
            let message = cond.map(|c| c.message.as_str()).unwrap_or("");
            if matches!(status, outpost_proto::ConditionStatus::True) {
                warn!(condition = kind.name(), "{message}");
            } else {
                info!(condition = kind.name(), status = status.name(), "{message}");
            }
        }
        let capacity = prober.capacity();
        let allocatable = Prober::allocatable(&capacity, &cfg.reserved, &cfg.pressure.hard);
        if runtime.available {
            refresh_images(&mut images, &mut engine, &node).await;
        }
        let mut info = prober.node_info();
        info.runtime = runtime;
        let mut conditions = outcome.conditions;
        conditions.extend(not_ready);
        let report = NodeReport {
            info,
            capacity,
            allocatable,
            conditions,
            signals: outcome.signals,
            labels: cfg.labels.clone(),
            images: images.current().to_vec(),
        };
        if let Err(e) = report.validate() {
            error!("measured report is out of bounds and was not sent: {e}");
            continue;
        }
        let _ = tx.send(Some(report));
    }
}

/// Brings the image list up to date; on failure the previous list stays.
async fn refresh_images(images: &mut ImageCatalog, engine: &mut Option<Engine>, node: &str) {
    if engine.is_none() {
        if let Ok(d) = bollard::Docker::connect_with_unix_defaults() {
            *engine = Some(Engine::new(negotiated(d).await, node));
        }
    }
    let Some(e) = engine.as_ref() else { return };
    let failed = match tokio::time::timeout(IMAGES_TIMEOUT, images.refresh(e)).await {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(err.to_string()),
        Err(_) => Some(format!("no answer within {}s", IMAGES_TIMEOUT.as_secs())),
    };
    if let Some(why) = failed {
        debug!("listing the engine's images failed: {why}; keeping the previous list");
        *engine = None;
    }
}

/// Why a session ended.
enum Ended {
    /// Shutdown was requested.
    Shutdown,
    /// The link dropped or the controller refused; reconnect.
    Lost(String),
    /// The controller does not speak this protocol version; say hello again
    /// at once in the one below.
    VersionRefused(String),
}

/// How the next connection is made: its back-off, and the protocol
/// version its hello names.
struct Dial {
    backoff: Backoff,
    /// Starts at [`PROTOCOL_VERSION`]; a refusal steps it down.
    protocol: u32,
    /// The controller's clock minus this box's, as of the last welcome
    /// (None before the first): certificate expiry is judged on the
    /// controller's clock, so a box whose clock runs ahead is not told its
    /// certificate expired.
    skew_ms: Option<i64>,
    /// This box's clock, never below the floor from the last contact:
    /// certificates are judged at its time.
    clock: Arc<AgentClock>,
}

impl Dial {
    /// The controller's clock as this box knows it: its own corrected by
    /// the skew of the last welcome, or before any welcome its clock with
    /// the floor from the last contact.
    fn controller_now_ms(&self) -> u64 {
        match self.skew_ms {
            Some(skew) => now_ms().saturating_add_signed(skew),
            None => self.clock.now_ms(),
        }
    }
}

/// The version to say hello in after `tried` was refused, if any is left.
fn older_protocol(tried: u32) -> Option<u32> {
    (tried > outpost_proto::MIN_PROTOCOL_VERSION).then(|| tried - 1)
}

/// Runs the agent until `shutdown` resolves.
pub async fn run(cfg: AgentConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let data = DataDir(cfg.data_dir.clone());
    std::fs::create_dir_all(&data.0)
        .with_context(|| format!("creating data directory {}", data.0.display()))?;
    // Held until the agent exits: a second agent on this directory would
    // take the session from this one over and over.
    let _lock = crate::dirlock::DirLock::acquire(&data.0)?;
    let token_id = cfg.token.as_deref().map(|t| token_id_of(t).to_string());
    let current = data.identity()?;
    let clock = Arc::new(AgentClock::load(
        &data.0,
        current.as_ref().map(|id| id.not_after_ms),
    ));
    let enrolled_with = data.enrolled_token_id();
    let mut id = match (
        current,
        start_with(token_id.as_deref(), enrolled_with.as_deref()),
    ) {
        (None, _) => enrol(&cfg, &data, &clock).await?,
        (Some(id), Start::Keep) => {
            if let (Some(t), None) = (&token_id, &enrolled_with) {
                // Enrolled before the token was recorded: this one is
                // taken as the one it enrolled with.
                if let Err(e) = data.save_enrolled_token_id(t) {
                    warn!("{e}");
                }
            }
            id
        }
        (Some(id), Start::ReEnrol) => {
            info!(
                "--token {} is not the token this node enrolled with ({}): enrolling again as {}; the current identity stays until the new one is saved",
                token_id.as_deref().unwrap_or(""),
                enrolled_with.as_deref().unwrap_or(""),
                id.node
            );
            let mut again = cfg.clone();
            again.name.get_or_insert_with(|| id.node.clone());
            match enrol(&again, &data, &clock).await {
                Ok(new) => new,
                Err(e) => {
                    warn!(
                        "enrolling again with the new --token failed: {e:#}; carrying on as {} with the current identity",
                        id.node
                    );
                    id
                }
            }
        }
    };
    let ca = data.ca()?.ok_or_else(|| {
        anyhow!(
            "{} has an identity but no ca.pem; move the directory away and enrol again",
            data.0.display()
        )
    })?;
    if cfg.name.as_deref().is_some_and(|n| n != id.node) {
        warn!(
            "--name {} ignored: this data directory is enrolled as {}",
            cfg.name.as_deref().unwrap_or(""),
            id.node
        );
    }
    let mut pods = PodState::load(&data.0, &id.node).map_err(|e| anyhow!(e))?;
    if !pods.set().pods.is_empty() {
        info!(
            pods = pods.set().pods.len(),
            generation = pods.generation(),
            "running the pods saved on this box until the controller says otherwise"
        );
    }
    let (report_tx, report_rx) = watch::channel(None);
    let housekeeping = tokio::spawn(housekeeping(
        cfg.clone(),
        id.node.clone(),
        clock.clone(),
        report_tx,
    ));
    let (desired_tx, desired_rx) = watch::channel(Arc::new(pods.set().clone()));
    let (status_tx, status_rx) = watch::channel(Arc::new(Snapshot::default()));
    let (events_tx, mut events_rx) = mpsc::channel::<AgentEvent>(EVENT_CHANNEL);
    // Every event is queued with when it happened, whether the controller
    // is reachable or not; the session sends the queue.
    let inbox = Arc::new(EventInbox::default());
    let forward_events = tokio::spawn({
        let inbox = inbox.clone();
        async move {
            while let Some(e) = events_rx.recv().await {
                inbox.push(e);
            }
        }
    });
    let (docker_tx, docker_rx) = watch::channel::<Option<bollard::Docker>>(None);
    let routing = cfg.service_routing;
    let (svc_tx, svc_rx) = watch::channel(Arc::new(crate::services::ServiceTable::default()));
    let (address_tx, address_rx) = watch::channel(None);
    let (sandbox_route_tx, sandbox_route_rx) = watch::channel(None);
    let host_search =
        crate::dns::read_host_resolvers(std::path::Path::new(crate::dns::HOST_RESOLV_CONF), None)
            .search;
    let runtime_cfg = RuntimeConfig {
        services: routing.then(|| runtime::PodServices {
            table: svc_rx.clone(),
            resolver: address_rx.clone(),
            sandbox_route: sandbox_route_rx,
            host_search,
        }),
        node: id.node.clone(),
        data_dir: data.0.clone(),
        sync_interval: cfg.housekeeping_interval,
        restart_backoff: cfg.restart_backoff,
        max_restart_backoff: cfg.max_restart_backoff,
        cgroup_root: runtime::CGROUP_ROOT.into(),
        pod_network: cfg.pod_network.clone(),
    };
    let (reports_for_runtime, runtime_events) = (report_rx.clone(), events_tx.clone());
    let reconciler = tokio::spawn(async move {
        let mut desired_rx = desired_rx;
        let docker = engine_client(runtime_cfg.sync_interval, &mut desired_rx, &status_tx).await;
        docker_tx.send_replace(Some(docker.clone()));
        runtime::reconcile::run(
            runtime_cfg,
            docker,
            desired_rx,
            reports_for_runtime,
            status_tx,
            runtime_events,
        )
        .await;
    });
    let (routes_tx, routes_rx) = watch::channel(Arc::new(RouteTable::default()));
    let (service_net_tx, service_net_rx) = watch::channel(None);
    let (reach_tx, reach_rx) = watch::channel(Arc::default());
    let (relay_tx, relay_rx) = watch::channel(None);
    let dns_stats = Arc::new(crate::dns::DnsStats::default());
    let resolver = tokio::spawn(crate::dns::serve_pods(
        address_rx,
        svc_rx,
        dns_stats.clone(),
    ));
    let proxy_metrics = Arc::new(crate::proxy::ProxyMetrics::default());
    if !routing {
        info!("Service routing is off (--no-service-routing): pods of this node cannot reach Services through the agent");
    }
    let proxy = tokio::spawn(crate::proxy::run(
        crate::proxy::Locality {
            node: id.node.clone(),
        },
        routes_rx.clone(),
        reach_rx,
        relay_rx,
        proxy_metrics.clone(),
        if routing {
            cfg.service_proxy
        } else {
            crate::proxy::kernel::Mode::Userspace
        },
    ));
    let metrics_server = match cfg.metrics_listen {
        Some(at) => {
            let l = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("binding --metrics-listen {at}"))?;
            info!(%at, "metrics on http://{at}/metrics");
            Some(tokio::spawn(crate::metrics::serve(
                l,
                proxy_metrics,
                dns_stats,
            )))
        }
        None => None,
    };
    let podnet = tokio::spawn(crate::podnet::run(
        id.node.clone(),
        cfg.pod_network_name().to_string(),
        docker_rx.clone(),
        service_net_rx,
        reach_tx,
        address_tx,
        sandbox_route_tx,
    ));
    let mut pod_link = PodLink {
        pods: &mut pods,
        desired: desired_tx,
        status: status_rx,
        inbox,
        events_tx,
        docker: docker_rx,
        reports: report_rx.clone(),
        routes: RoutesLink {
            table: RouteTable::default(),
            tx: routes_tx,
            network: service_net_tx,
            claimed: None,
            enabled: routing,
            relay: relay_tx,
            routes_rx,
            services: svc_tx,
        },
        save_retry: SaveRetry::default(),
    };
    tokio::pin!(shutdown);
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each connection starts with the newest version; a refusal steps down.
    let mut dial = Dial {
        backoff: Backoff::new(Duration::from_millis(500), cfg.max_backoff),
        protocol: PROTOCOL_VERSION,
        skew_ms: None,
        clock,
    };
    let result = loop {
        if id.expired(dial.controller_now_ms()) {
            let by = if dial.skew_ms.is_some() {
                "by the controller's clock"
            } else {
                "by this box's clock and the floor from its last contact (check the clock if it may be wrong)"
            };
            error!(
                "node certificate of {} expired at {} {by}; delete the node (`outpostctl delete node {}`) and start the agent with a new --token",
                id.node, rfc3339(id.not_after_ms), id.node
            );
        }
        let ended = {
            let attempt = session(
                &cfg,
                &data,
                &ca,
                &mut id,
                stop_rx.clone(),
                &mut dial,
                &mut pod_link,
            );
            tokio::pin!(attempt);
            // On shutdown the session gets a moment to say goodbye, so the
            // controller sees the agent leave at once rather than by timeout.
            tokio::select! {
                r = &mut attempt => r,
                () = &mut shutdown => {
                    let _ = stop_tx.send(true);
                    tokio::time::timeout(Duration::from_secs(2), attempt).await.unwrap_or(Ok(Ended::Shutdown)).map(|_| Ended::Shutdown)
                }
            }
        };
        match ended {
            Ok(Ended::Shutdown) => break Ok(()),
            Ok(Ended::VersionRefused(why)) => match older_protocol(dial.protocol) {
                Some(older) => {
                    info!(
                        "the controller does not speak protocol {} ({why}); trying {older}",
                        dial.protocol
                    );
                    dial.protocol = older;
                    continue;
                }
                None => {
                    warn!("the controller speaks none of this agent's protocol versions: {why}");
                    dial.protocol = PROTOCOL_VERSION;
                }
            },
            Ok(Ended::Lost(why)) => {
                warn!("connection to {} lost: {why}", cfg.controller);
                dial.protocol = PROTOCOL_VERSION;
            }
            Err(e) => {
                warn!("cannot connect to {}: {e:#}", cfg.controller);
                dial.protocol = PROTOCOL_VERSION;
            }
        }
        let delay = dial.backoff.next_delay(rand::random());
        info!("reconnecting in {delay:.1?}");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = &mut shutdown => break Ok(()),
        }
    };
    housekeeping.abort();
    forward_events.abort();
    proxy.abort();
    podnet.abort();
    resolver.abort();
    if let Some(m) = metrics_server {
        m.abort();
    }
    // Pods keep running when the agent stops: they are the box's work, and
    // the next agent start adopts them.
    reconciler.abort();
    result
}

/// The session's side of the pod runtime.
struct PodLink<'a> {
    pods: &'a mut PodState,
    desired: watch::Sender<Arc<DesiredSet>>,
    status: watch::Receiver<Arc<Snapshot>>,
    /// Events with when they happened, until sent.
    inbox: Arc<EventInbox>,
    events_tx: mpsc::Sender<AgentEvent>,
    /// The engine client, once the engine's socket exists.
    docker: watch::Receiver<Option<bollard::Docker>>,
    reports: watch::Receiver<Option<NodeReport>>,
    routes: RoutesLink,
    /// Back-off and reported failures of saving desired pods; kept across
    /// sessions so a reconnect does not repeat the event.
    save_retry: SaveRetry,
}

impl PodLink<'_> {
    /// The runtime's latest statuses, with those of the pods the node
    /// could not take (`PodState::not_accepted`) in place of whatever the
    /// runtime says of those keys.
    fn snapshot(&mut self) -> Arc<Snapshot> {
        let snap = self.status.borrow_and_update().clone();
        with_not_accepted(snap, self.pods.not_accepted())
    }

    /// The saved set changed (it was `before`, by key): the runtime gets
    /// it, and the pods it no longer has are reported gone once stopped.
    /// True when some were.
    fn saved(&mut self, before: &[String], removed: &mut BTreeSet<String>) -> bool {
        if self.save_retry.saved() {
            info!(
                generation = self.pods.generation(),
                "desired pods saved again; the node takes the pods it could not before"
            );
        }
        let after = &self.pods.set().pods;
        let was = removed.len();
        removed.extend(before.iter().filter(|k| !after.contains_key(*k)).cloned());
        self.desired.send_replace(Arc::new(self.pods.set().clone()));
        removed.len() > was
    }

    /// Saving desired pods failed with `error`: says so (once per distinct
    /// failure) and returns when to try again.
    fn save_failed(&mut self, error: &str) -> tokio::time::Instant {
        let retry = self.save_retry.failed(error, rand::random());
        match retry.event {
            Some(event) => {
                error!(
                    "desired pods not saved: {error}; the pods here keep running, retrying in {:.1?} and with back-off",
                    retry.delay
                );
                let _ = self.events_tx.try_send(event);
            }
            None => debug!(
                "desired pods still not saved: {error}; retrying in {:.1?}",
                retry.delay
            ),
        }
        tokio::time::Instant::now() + retry.delay
    }
}

/// The Service routes as the controller sends them, and where they go.
struct RoutesLink {
    table: RouteTable,
    /// Complete tables, for the proxy (and the resolver).
    tx: watch::Sender<Arc<RouteTable>>,
    /// The Service range, once a welcome said it (for the pod routes).
    network: watch::Sender<Option<Ipv4Net>>,
    /// The range claimed as local in this namespace, if any.
    claimed: Option<Ipv4Net>,
    /// `--no-service-routing` clears it: nothing is claimed or proxied.
    enabled: bool,
    /// The relay connection of the current session, for the proxy.
    relay: watch::Sender<crate::proxy::RelayLink>,
    /// The published table, for serving relayed connections.
    routes_rx: watch::Receiver<Arc<RouteTable>>,
    /// The resolver's view of the same table.
    services: watch::Sender<Arc<crate::services::ServiceTable>>,
}

impl RoutesLink {
    /// Takes the Service range and site of a full update: claims the range as
    /// local (once per range) so the proxy can listen on cluster IPs.
    fn welcome(&mut self, net: Ipv4Net, site: &str) {
        if !self.enabled {
            return;
        }
        if let Err(e) = net.validate() {
            warn!("the controller's Service range is unusable: {e}; Services are not routed");
            return;
        }
        if self.claimed != Some(net) {
            match crate::netlink::claim_local(net) {
                Ok(()) => {
                    info!(%net, "Service range claimed: the proxy listens on cluster IPs");
                    self.claimed = Some(net);
                }
                Err(e) => {
                    warn!(%net, "cannot claim the Service range, so pods cannot reach Services through this agent: {e}")
                }
            }
        }
        self.table.network = Some(net);
        self.table.site = site.to_string();
        self.network.send_replace(Some(net));
    }
}

/// What the next status message says: the statuses that differ from what
/// was last `sent`, and the pods gone. Gone are the pods reported before
/// and absent now, and the pods the controller removed (`removed`, kept
/// across messages) of which nothing is left, reported or not: one bound
/// and removed again within one status interval was never reported, and
/// the controller waits for this answer to forget a pod it deleted.
/// `removed` keeps the ones still present or desired again.
fn status_update(
    sent: &BTreeMap<String, PodStatus>,
    now: &Snapshot,
    desired: &BTreeMap<String, DesiredPod>,
    removed: &mut BTreeSet<String>,
) -> (Vec<PodStatus>, Vec<String>) {
    let changed = now
        .pods
        .values()
        .filter(|s| sent.get(&s.name) != Some(*s))
        .cloned()
        .collect();
    let mut gone: Vec<String> = sent
        .keys()
        .filter(|n| !now.pods.contains_key(*n))
        .cloned()
        .collect();
    removed.retain(|k| {
        if now.pods.contains_key(k) || desired.contains_key(k) {
            return true;
        }
        if !sent.contains_key(k) {
            gone.push(k.clone());
        }
        false
    });
    (changed, gone)
}

/// `snap` with `extra` statuses put in by key.
fn with_not_accepted(snap: Arc<Snapshot>, extra: Vec<PodStatus>) -> Arc<Snapshot> {
    if extra.is_empty() {
        return snap;
    }
    let mut snap = Arc::unwrap_or_clone(snap);
    for s in extra {
        snap.pods.insert(s.name.clone(), s);
    }
    Arc::new(snap)
}

/// A client for the engine at `DOCKER_HOST` (default the local socket),
/// speaking its API version. A box may start the agent before the engine,
/// or run without one for a while: until the socket exists this waits,
/// trying again every `retry`, says so once, and reports every desired pod
/// as waiting with `RuntimeUnavailable` (the node report meanwhile says the
/// runtime is unavailable).
async fn engine_client(
    retry: Duration,
    desired: &mut watch::Receiver<Arc<DesiredSet>>,
    status: &watch::Sender<Arc<Snapshot>>,
) -> bollard::Docker {
    let mut warned = false;
    loop {
        match bollard::Docker::connect_with_unix_defaults() {
            // Speak the engine's API version (bollard defaults to a newer
            // one than many boxes run). If the engine is down now, the
            // reconciler asks again once it is back, and each log or image
            // stream asks for itself.
            Ok(d) => return negotiated(d).await,
            Err(e) => {
                if !warned {
                    warn!("no Docker engine to run pods on yet ({e}); pods start once it is up");
                    warned = true;
                }
                let set = desired.borrow().clone();
                let snapshot = runtime::reconcile::unavailable_snapshot(
                    &set,
                    &format!("{e}; the agent keeps retrying, start the Docker service on the node"),
                );
                status.send_if_modified(|s| {
                    let changed = **s != snapshot;
                    if changed {
                        *s = Arc::new(snapshot);
                    }
                    changed
                });
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    r = desired.changed() => {
                        if r.is_err() {
                            tokio::time::sleep(retry).await;
                        }
                    }
                }
            }
        }
    }
}

/// The client speaking the engine's API version, or the client as it was
/// when the engine does not answer within a few seconds.
async fn negotiated(docker: bollard::Docker) -> bollard::Docker {
    match tokio::time::timeout(Duration::from_secs(5), docker.clone().negotiate_version()).await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            debug!("Docker API version negotiation failed: {e}");
            docker
        }
        Err(_) => docker,
    }
}

/// Serves one stream the controller opened: a log request or an image load.
async fn serve_controller_stream(
    node: String,
    docker: Option<bollard::Docker>,
    desired: Arc<DesiredSet>,
    report: Option<NodeReport>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let first = match tokio::time::timeout(ANSWER_TIMEOUT, read_frame(&mut recv, MAX_FRAME)).await {
        Ok(Ok(Some(m))) => m,
        _ => return,
    };
    let refuse = |code: ErrorCode, message: String| {
        Message::Error(outpost_proto::ErrorMsg { code, message })
    };
    let Some(docker) = docker else {
        let _ = write_frame(
            &mut send,
            &refuse(
                ErrorCode::Internal,
                format!("node {node} has no Docker engine to serve this (its socket does not exist); start the Docker service there"),
            ),
        )
        .await;
        let _ = send.finish();
        return;
    };
    let docker = negotiated(docker).await;
    match first {
        Message::LogsRequest(req) => {
            if let Err(e) = req.validate() {
                let _ = write_frame(
                    &mut send,
                    &refuse(ErrorCode::InvalidRequest, format!("bad logs request: {e}")),
                )
                .await;
                let _ = send.finish();
                return;
            }
            let Some(pod) = desired.pods.get(&req.pod) else {
                let _ = write_frame(
                    &mut send,
                    &refuse(
                        ErrorCode::NotFound,
                        format!("pod {} is not on node {node}", req.pod),
                    ),
                )
                .await;
                let _ = send.finish();
                return;
            };
            let spec = pod.spec.clone();
            let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
            let producer = async {
                let r = runtime::transfer::logs(&docker, &node, &req, &spec, tx).await;
                r
            };
            let consumer = async {
                while let Some(chunk) = rx.recv().await {
                    if write_frame(&mut send, &Message::Data(chunk)).await.is_err() {
                        break;
                    }
                }
                // Dropping the receiver tells the producer the caller left.
                drop(rx);
            };
            let (result, ()) = tokio::join!(producer, consumer);
            if let Err(e) = result {
                let _ = write_frame(&mut send, &refuse(ErrorCode::InvalidRequest, e)).await;
            }
            let _ = send.finish();
        }
        Message::ImageLoad(load) => {
            let answer =
                load_image(&node, &docker, load, report.as_ref(), &mut send, &mut recv).await;
            let frame = match answer {
                Ok(message) => Message::Progress(Progress {
                    node: node.clone(),
                    bytes: 0,
                    total: 0,
                    done: true,
                    error: None,
                    message,
                }),
                Err(e) => {
                    warn!("image load refused or failed: {e}");
                    refuse(ErrorCode::InvalidRequest, e)
                }
            };
            let _ = write_frame(&mut send, &frame).await;
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
        }
        other => {
            let _ = write_frame(
                &mut send,
                &refuse(
                    ErrorCode::InvalidRequest,
                    format!("unexpected {} on a controller stream", other.kind()),
                ),
            )
            .await;
            let _ = send.finish();
        }
    }
}

/// Checks room, accepts, and streams an image tarball into the engine.
async fn load_image(
    node: &str,
    docker: &bollard::Docker,
    load: outpost_proto::ImageLoad,
    report: Option<&NodeReport>,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
) -> Result<String, String> {
    let root = runtime::docker::Engine::new(docker.clone(), node)
        .data_root()
        .await
        .map_err(|e| format!("the Docker engine is not available on this node: {e}"))?;
    runtime::transfer::image_room(report, std::path::Path::new(&root), load.size)?;
    write_frame(
        send,
        &Message::Progress(Progress {
            node: String::new(),
            bytes: 0,
            total: load.size,
            done: false,
            error: None,
            message: "accepted".into(),
        }),
    )
    .await
    .map_err(|e| e.to_string())?;
    info!(name = %load.name, size = load.size, "loading a pushed image");
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, String>>(4);
    let mut stream = ImageStream::new(load.size);
    let forward = async move {
        loop {
            let frame = match read_frame(recv, MAX_FRAME).await {
                Ok(frame) => frame,
                // The controller aborted (a reset stream) or the link broke.
                Err(e) => {
                    let _ = tx.send(Err(format!("the image stream broke: {e}"))).await;
                    return;
                }
            };
            match stream.next(frame) {
                Ok(Some(chunk)) => {
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
                // The whole image arrived: closing the channel ends the body.
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string())).await;
                    return;
                }
            }
        }
    };
    let loading = runtime::transfer::load_image(docker, load.size, rx, |_| {});
    let ((), result) = tokio::join!(forward, loading);
    match &result {
        Ok(m) => info!(name = %load.name, "image loaded: {m}"),
        Err(e) => warn!(name = %load.name, "image load failed: {e}"),
    }
    result
}

/// Streams the controller may open on the relay connection at once: one
/// per relayed connection this node serves.
const RELAY_STREAMS: u32 = 1024;

/// Opens the relay connection (see `crate::proxy::relay`): same
/// certificate, first message `RelayHello`, answered `RelayReady`.
async fn open_relay(
    endpoint: &quinn::Endpoint,
    ca: &[u8],
    id: &Identity,
    remote: SocketAddr,
    server_name: &str,
) -> Result<quinn::Connection> {
    let client = link::client_config(
        ca.to_vec().into(),
        Some(id.tls()),
        link::transport(IDLE_TIMEOUT, RELAY_STREAMS),
    )?;
    let conn = endpoint
        .connect_with(client, remote, server_name)?
        .await
        .map_err(|e| anyhow!(explain(&e)))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| anyhow!(explain(&e)))?;
    write_frame(
        &mut send,
        &Message::RelayHello(outpost_proto::route::RelayHello {
            node: id.node.clone(),
        }),
    )
    .await?;
    match tokio::time::timeout(ANSWER_TIMEOUT, read_frame(&mut recv, MAX_FRAME)).await {
        Ok(Ok(Some(Message::RelayReady))) => Ok(conn),
        Ok(Ok(Some(Message::Error(e)))) => {
            bail!("the controller refused the relay connection: {}", e.message)
        }
        Ok(Ok(other)) => bail!(
            "unexpected {:?} in answer to the relay hello",
            other.map(|m| m.kind())
        ),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => bail!("no answer to the relay hello within {ANSWER_TIMEOUT:?}"),
    }
}

/// One connection: hello, then heartbeats, reports and renewal until it ends.
async fn session(
    cfg: &AgentConfig,
    data: &DataDir,
    ca: &[u8],
    id: &mut Identity,
    mut stop: watch::Receiver<bool>,
    dial: &mut Dial,
    pods: &mut PodLink<'_>,
) -> Result<Ended> {
    let protocol = dial.protocol;
    let mut reports = pods.reports.clone();
    let remote = resolve(&cfg.controller).await?;
    let endpoint = link::client_endpoint(remote).context("opening a UDP socket")?;
    let client = link::client_config_at(
        ca.to_vec().into(),
        Some(id.tls()),
        link::transport(IDLE_TIMEOUT, CONTROLLER_STREAMS),
        dial.clock.clone(),
    )?;
    let conn = endpoint
        .connect_with(client, remote, &cfg.server_name)?
        .await
        .map_err(|e| anyhow!(explain(&e)))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| anyhow!(explain(&e)))?;
    write_frame(
        &mut send,
        &Message::Hello(Hello {
            protocol_version: protocol,
            node: id.node.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        }),
    )
    .await?;
    let welcome = match tokio::time::timeout(ANSWER_TIMEOUT, read_frame(&mut recv, MAX_FRAME)).await
    {
        Err(_) => bail!("the controller did not answer the hello within {ANSWER_TIMEOUT:?}"),
        Ok(Ok(Some(Message::Welcome(w)))) => w,
        Ok(Ok(Some(Message::Error(e)))) if e.code == ErrorCode::VersionMismatch => {
            conn.close(
                close::DONE.into(),
                b"saying hello again in an older version",
            );
            return Ok(Ended::VersionRefused(e.message));
        }
        Ok(Ok(Some(Message::Error(e)))) => bail!("controller refused the session: {}", e.message),
        Ok(Ok(Some(other))) => bail!("unexpected {} in answer to hello", other.kind()),
        Ok(Ok(None)) => bail!("the controller closed the stream during the hello"),
        Ok(Err(LinkError::Read(quinn::ReadExactError::ReadError(
            quinn::ReadError::ConnectionLost(e),
        ))))
        | Ok(Err(LinkError::Connection(e))) => bail!("{}", explain(&e)),
        Ok(Err(e)) => return Err(e.into()),
    };
    dial.backoff.reset();
    let skew_ms =
        i64::try_from(welcome.server_time_ms).unwrap_or(0) - i64::try_from(now_ms()).unwrap_or(0);
    if let Some(w) = skew_warning(skew_ms) {
        warn!("{w}");
    }
    dial.skew_ms = Some(skew_ms);
    // The clock floor: this contact's time, kept for the next boot.
    dial.clock.observe_controller(welcome.server_time_ms);
    dial.clock.save_if_due();
    let clock = dial.clock.clone();
    let heartbeat = Duration::from_millis(welcome.heartbeat_interval_ms.clamp(100, 3_600_000));
    // The relay connection: a second one, so relayed bytes never hold up
    // this session's frames. Without it the session still runs; Services
    // then reach only endpoints this box reaches itself.
    let relay_task = if pods.routes.enabled
        && outpost_proto::version::has(protocol, outpost_proto::version::ROUTES)
    {
        match open_relay(&endpoint, ca, id, remote, &cfg.server_name).await {
            Ok(rc) => {
                pods.routes.relay.send_replace(Some(rc.clone()));
                Some((
                    rc.clone(),
                    tokio::spawn(crate::proxy::relay::serve(
                        rc,
                        id.node.clone(),
                        pods.routes.routes_rx.clone(),
                    )),
                ))
            }
            Err(e) => {
                warn!("no relay connection ({e:#}); Services reach only endpoints this box reaches directly");
                None
            }
        }
    } else {
        None
    };
    info!(node = %id.node, controller = %cfg.controller, version = %welcome.controller_version, protocol, "connected");

    // The reader runs on its own task: a frame read must never be cut in
    // half by the select below.
    let (inbox_tx, mut inbox) = mpsc::channel::<Result<Option<Message>, LinkError>>(INBOX);
    let reader = tokio::spawn(async move {
        loop {
            let r = read_frame(&mut recv, MAX_FRAME).await;
            let stop = !matches!(r, Ok(Some(_)));
            if inbox_tx.send(r).await.is_err() || stop {
                break;
            }
        }
    });
    // Where this node stands; the controller answers with what changed.
    pods.pods.new_session();
    write_frame(
        &mut send,
        &Message::PodsAck(PodsAck {
            generation: pods.pods.generation(),
        }),
    )
    .await?;
    // Pods the controller removed, until reported gone (`status_update`).
    let mut removed_since: BTreeSet<String> = BTreeSet::new();
    let mut sent_status: BTreeMap<String, PodStatus> = {
        let snap = pods.snapshot();
        write_frame(
            &mut send,
            &Message::PodStatuses(Box::new(PodStatusUpdate {
                full: true,
                pods: snap.pods.values().cloned().collect(),
                gone: Vec::new(),
                node_usage: snap.node_usage,
            })),
        )
        .await?;
        snap.pods.clone()
    };
    let mut status_due: Option<tokio::time::Instant> = None;
    let mut last_status = tokio::time::Instant::now();
    // The next try to save a desired set the disk refused (`SaveRetry`).
    let mut save_due: Option<tokio::time::Instant> = None;
    let result = async {
        let mut sent: Option<NodeReport> = None;
        let mut seq = 0u64;
        let mut next_beat = tokio::time::Instant::now();
        let controller_now = || now_ms().saturating_add_signed(skew_ms);
        let mut renew_at = tokio::time::Instant::now() + id.renew_in(controller_now());
        let mut pending_renewal: Option<identity::Pending> = None;
        reports.mark_changed();
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next_beat) => {
                    seq += 1;
                    write_frame(&mut send, &Message::Heartbeat(Heartbeat { seq })).await?;
                    next_beat = tokio::time::Instant::now() + heartbeat;
                    // At most once per FLOOR_WRITE_INTERVAL.
                    clock.save_if_due();
                }
                changed = reports.changed() => {
                    if changed.is_err() {
                        bail!("housekeeping stopped");
                    }
                    let next = reports.borrow_and_update().clone();
                    if let Some(next) = next {
                        // What this controller's version can take (an
                        // older one refuses the agent's Ready).
                        let next = next.for_protocol(protocol).into_owned();
                        if worth_sending(sent.as_ref(), &next) {
                            write_frame(&mut send, &Message::Report(Box::new(next.clone()))).await?;
                            sent = Some(next);
                            next_beat = tokio::time::Instant::now() + heartbeat;
                        }
                    }
                }
                () = tokio::time::sleep_until(renew_at), if pending_renewal.is_none() => {
                    let pending = identity::new_key(&id.node)?;
                    info!("renewing the node certificate (expires at {})", rfc3339(id.not_after_ms));
                    write_frame(&mut send, &Message::RenewRequest(RenewRequest { csr_der: pending.csr_der.clone() })).await?;
                    pending_renewal = Some(pending);
                }
                frame = inbox.recv() => match frame {
                    Some(Ok(Some(Message::RenewResponse(r)))) => {
                        let Some(pending) = pending_renewal.take() else {
                            bail!("controller sent an unrequested certificate");
                        };
                        match pending.complete(r.cert_der) {
                            Ok(new) if new.node == id.node => {
                                data.save_identity(&new)?;
                                info!(serial = %new.serial, "node certificate renewed; valid until {}", rfc3339(new.not_after_ms));
                                *id = new;
                                renew_at = tokio::time::Instant::now() + id.renew_in(controller_now()).max(RENEW_RETRY / 6);
                            }
                            Ok(new) => bail!("controller issued a certificate for {} instead of {}", new.node, id.node),
                            Err(e) => {
                                warn!("renewed certificate unusable: {e}; retrying in {RENEW_RETRY:?}");
                                renew_at = tokio::time::Instant::now() + RENEW_RETRY;
                            }
                        }
                    }
                    Some(Ok(Some(Message::Error(e)))) => {
                        if pending_renewal.take().is_some() {
                            warn!("certificate renewal refused: {}; retrying in {RENEW_RETRY:?}", e.message);
                            renew_at = tokio::time::Instant::now() + RENEW_RETRY;
                        } else if e.code == ErrorCode::InvalidRequest {
                            warn!("controller rejected a message: {}", e.message);
                        } else {
                            return Ok(Ended::Lost(e.message));
                        }
                    }
                    Some(Ok(Some(m @ (Message::PodsDesired(_) | Message::NodeDesired(_))))) => {
                        let d = match m {
                            Message::NodeDesired(d) => *d,
                            Message::PodsDesired(d) => NodeDesired::from(*d),
                            _ => bail!("unexpected {} from the controller", m.kind()),
                        };
                        if let Err(e) = d.validate() {
                            bail!("the controller sent desired state out of bounds: {e}");
                        }
                        let generation = d.generation;
                        let (full, n, r) = (d.full, d.pods.len(), d.removed.len());
                        let before: Vec<String> = pods.pods.set().pods.keys().cloned().collect();
                        let before_unsaved = pods.pods.not_accepted();
                        match pods.pods.apply(d) {
                            Ok(outcome) => {
                                let was = removed_since.len();
                                // Removals of pods never started here too:
                                // say they are gone, so the controller
                                // forgets them.
                                removed_since.extend(outcome.unknown_removals);
                                for (pod, why) in outcome.refused {
                                    warn!(%pod, "pod refused: {why}");
                                    let _ = pods.events_tx.try_send(AgentEvent {
                                        kind: EventType::Warning,
                                        reason: "FailedValidation".into(),
                                        pod,
                                        message: format!("the agent refused the pod: {why}"),
                                    });
                                }
                                match outcome.not_saved {
                                    None => {
                                        info!(generation, full, changed = n, removed = r, "desired pods updated");
                                        save_due = None;
                                        pods.saved(&before, &mut removed_since);
                                        write_frame(&mut send, &Message::PodsAck(PodsAck { generation })).await?;
                                    }
                                    // Not acknowledged: kept unsaved and
                                    // tried again on a back-off, while the
                                    // pods already here keep running.
                                    Some(e) => save_due = Some(pods.save_failed(&e)),
                                }
                                // Pods not taken are reported, and pods
                                // taken after all stop being so.
                                if removed_since.len() > was || pods.pods.unsaved().is_some() || !before_unsaved.is_empty() {
                                    status_due.get_or_insert(last_status + STATUS_MIN_INTERVAL);
                                }
                            }
                            Err(e) => {
                                // A set no retry can take (more pods than a
                                // node runs): the next session brings it
                                // again, and its back-off paces the retries.
                                error!("desired pods not applied: {e}; reconnecting to get them again");
                                let _ = pods.events_tx.try_send(AgentEvent {
                                    kind: EventType::Warning,
                                    reason: "FailedSync".into(),
                                    pod: String::new(),
                                    message: format!("the agent could not take the desired pods ({e}); it keeps the previous ones and retries"),
                                });
                                return Ok(Ended::Lost(format!("desired pods not applied: {e}")));
                            }
                        }
                    }
                    Some(Ok(Some(Message::Routes(u)))) => {
                        let (full, n, r) = (u.full, u.upsert.len(), u.removed.len());
                        if let (true, Some(net)) = (u.full, u.service_network) {
                            pods.routes.welcome(net, &u.site);
                        }
                        match pods.routes.table.apply(*u) {
                            Ok(true) if !pods.routes.enabled => {}
                            Ok(true) => {
                                debug!(full, changed = n, removed = r, routes = pods.routes.table.len(), "service routes updated");
                                pods.routes.tx.send_replace(Arc::new(pods.routes.table.clone()));
                                pods.routes.services.send_replace(Arc::new(pods.routes.table.service_table()));
                            }
                            Ok(false) => {}
                            // Deltas follow this one: without it the table
                            // would drift, so start over with a whole one.
                            Err(e) => return Ok(Ended::Lost(format!("service routes refused: {e}"))),
                        }
                    }
                    Some(Ok(Some(other))) => bail!("unexpected {} from the controller", other.kind()),
                    Some(Ok(None)) | None => return Ok(Ended::Lost("controller ended the session".into())),
                    Some(Err(LinkError::Read(quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(e))))) => {
                        return Ok(Ended::Lost(explain(&e)));
                    }
                    Some(Err(e)) => return Ok(Ended::Lost(e.to_string())),
                },
                () = async { tokio::time::sleep_until(save_due.unwrap_or_else(tokio::time::Instant::now)).await }, if save_due.is_some() => {
                    save_due = None;
                    let before: Vec<String> = pods.pods.set().pods.keys().cloned().collect();
                    match pods.pods.retry_save() {
                        None => {}
                        Some(Ok(())) => {
                            let generation = pods.pods.generation();
                            pods.saved(&before, &mut removed_since);
                            // Removed pods to report gone, and the pods no
                            // longer NodeCannotAccept.
                            status_due.get_or_insert(last_status + STATUS_MIN_INTERVAL);
                            write_frame(&mut send, &Message::PodsAck(PodsAck { generation })).await?;
                        }
                        Some(Err(e)) => save_due = Some(pods.save_failed(&e)),
                    }
                }
                changed = pods.status.changed(), if status_due.is_none() => {
                    if changed.is_err() {
                        bail!("the pod runtime stopped");
                    }
                    status_due = Some(last_status + STATUS_MIN_INTERVAL);
                }
                () = async { tokio::time::sleep_until(status_due.unwrap_or_else(tokio::time::Instant::now)).await }, if status_due.is_some() => {
                    status_due = None;
                    last_status = tokio::time::Instant::now();
                    let snap = pods.snapshot();
                    let (changed, gone) =
                        status_update(&sent_status, &snap, &pods.pods.set().pods, &mut removed_since);
                    write_frame(&mut send, &Message::PodStatuses(Box::new(PodStatusUpdate {
                        full: false,
                        pods: changed,
                        gone,
                        node_usage: snap.node_usage,
                    }))).await?;
                    sent_status = snap.pods.clone();
                }
                () = pods.inbox.ready.notified() => {
                    let taken = pods.inbox.take(MAX_AGENT_EVENTS);
                    if taken.is_empty() {
                        continue;
                    }
                    // Times as of now on this box's clock; the controller
                    // corrects them by the skew (protocol 5 on).
                    let msg = eventqueue::batch(&taken, Instant::now(), clock.now_ms()).into_message(protocol);
                    if let Err(e) = write_frame(&mut send, &msg).await {
                        pods.inbox.put_back(taken);
                        return Err(e.into());
                    }
                }
                incoming = conn.accept_bi() => {
                    let Ok((s, r)) = incoming else { continue };
                    let desired = pods.desired.borrow().clone();
                    let report = pods.reports.borrow().clone();
                    let docker = pods.docker.borrow().clone();
                    tokio::spawn(serve_controller_stream(id.node.clone(), docker, desired, report, s, r));
                }
                e = conn.closed() => return Ok(Ended::Lost(explain(&e))),
                _ = stop.changed() => return Ok(Ended::Shutdown),
            }
        }
    }
    .await;
    reader.abort();
    pods.routes.relay.send_replace(None);
    if let Some((rc, task)) = relay_task {
        task.abort();
        rc.close(close::DONE.into(), b"session ended");
    }
    let reason: &[u8] = match &result {
        Ok(Ended::Shutdown) => b"agent shutting down",
        _ => b"agent reconnecting",
    };
    conn.close(close::DONE.into(), reason);
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_is_reported_the_right_way_round() {
        assert_eq!(skew_warning(0), None);
        assert_eq!(skew_warning(-60_000), None);
        // The box is 2 days ahead: the controller's clock reads less.
        let ahead = skew_warning(-172_800_000).unwrap();
        assert!(ahead.contains("172800s ahead of"), "{ahead}");
        let behind = skew_warning(172_800_000).unwrap();
        assert!(behind.contains("172800s behind"), "{behind}");
        assert!(skew_warning(i64::MIN).unwrap().contains("ahead of"));
    }

    #[test]
    fn only_a_different_token_enrols_a_node_again() {
        assert_eq!(start_with(None, None), Start::Keep);
        assert_eq!(start_with(None, Some("abc123")), Start::Keep);
        // The unit file passes the same token on every start.
        assert_eq!(start_with(Some("abc123"), Some("abc123")), Start::Keep);
        // A directory from before the token was recorded adopts it.
        assert_eq!(start_with(Some("abc123"), None), Start::Keep);
        assert_eq!(start_with(Some("zzz999"), Some("abc123")), Start::ReEnrol);
    }
    use outpost_proto::pod::{PodPhase, PodSpec};

    fn status(key: &str) -> PodStatus {
        PodStatus {
            name: key.into(),
            generation: 1,
            phase: PodPhase::Running,
            reason: String::new(),
            message: String::new(),
            ready: true,
            started_ms: 1,
            pod_ip: String::new(),
            containers: Vec::new(),
            usage: Default::default(),
        }
    }

    fn snapshot(keys: &[&str]) -> Snapshot {
        Snapshot {
            pods: keys.iter().map(|k| (k.to_string(), status(k))).collect(),
            node_usage: Default::default(),
        }
    }

    fn desired(keys: &[&str]) -> BTreeMap<String, DesiredPod> {
        keys.iter()
            .map(|k| {
                (
                    k.to_string(),
                    DesiredPod {
                        generation: 1,
                        spec: PodSpec::new(k.to_string(), Vec::new()),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_refused_hello_steps_down_to_the_oldest_version_and_no_further() {
        let mut tried = vec![PROTOCOL_VERSION];
        while let Some(older) = older_protocol(*tried.last().unwrap()) {
            tried.push(older);
        }
        assert_eq!(tried.last(), Some(&outpost_proto::MIN_PROTOCOL_VERSION));
        assert_eq!(
            tried.len(),
            usize::try_from(PROTOCOL_VERSION - outpost_proto::MIN_PROTOCOL_VERSION).unwrap() + 1
        );
    }

    #[test]
    fn a_pod_removed_before_it_was_ever_reported_is_reported_gone() {
        // Bound and removed again within one status interval: never sent.
        let sent = snapshot(&["a"]).pods;
        let mut removed: BTreeSet<String> = ["quick".to_string()].into();
        let (changed, gone) =
            status_update(&sent, &snapshot(&["a"]), &desired(&["a"]), &mut removed);
        assert!(changed.is_empty());
        assert_eq!(gone, vec!["quick".to_string()]);
        assert!(removed.is_empty(), "said once");
    }

    #[test]
    fn a_pod_the_node_could_not_take_is_reported_so_then_gone_when_deleted() {
        let mut refused = status("new");
        refused.phase = outpost_proto::pod::PodPhase::Pending;
        refused.reason = crate::podstate::NOT_ACCEPTED.into();
        let runtime = Arc::new(snapshot(&["a"]));
        let snap = with_not_accepted(runtime.clone(), vec![refused.clone()]);
        let mut removed = BTreeSet::new();
        let (changed, gone) = status_update(&runtime.pods, &snap, &desired(&["a"]), &mut removed);
        assert_eq!(changed, vec![refused], "only the refused pod is news");
        assert!(gone.is_empty());
        // Deleted by the operator before it was taken: gone, so the
        // controller can forget it.
        let after = with_not_accepted(runtime.clone(), Vec::new());
        assert!(Arc::ptr_eq(&after, &runtime), "nothing to add: no copy");
        let (changed, gone) = status_update(&snap.pods, &after, &desired(&["a"]), &mut removed);
        assert!(changed.is_empty());
        assert_eq!(gone, vec!["new".to_string()]);
    }

    #[test]
    fn a_removed_pod_is_gone_only_once_nothing_of_it_is_left() {
        let mut removed: BTreeSet<String> = ["b".to_string()].into();
        // Still stopping (in the snapshot), never reported: not yet.
        let (changed, gone) = status_update(
            &BTreeMap::new(),
            &snapshot(&["b"]),
            &desired(&[]),
            &mut removed,
        );
        assert_eq!(changed.len(), 1);
        assert!(gone.is_empty());
        assert!(removed.contains("b"));
        // Reported, then gone from the snapshot: gone once, through `sent`.
        let sent = snapshot(&["b"]).pods;
        let (_, gone) = status_update(&sent, &snapshot(&[]), &desired(&[]), &mut removed);
        assert_eq!(gone, vec!["b".to_string()]);
        assert!(removed.is_empty());
        // Desired again before it went: kept, not gone.
        let mut removed: BTreeSet<String> = ["c".to_string()].into();
        let (_, gone) = status_update(
            &BTreeMap::new(),
            &snapshot(&[]),
            &desired(&["c"]),
            &mut removed,
        );
        assert!(gone.is_empty());
        assert!(removed.contains("c"));
    }
}
