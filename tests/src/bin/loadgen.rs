//! `outpost-loadgen`: many simulated agents in one process against a real
//! controller, for the figures in `docs/BENCHMARKS.md`.
//!
//! Each simulated agent does what `outpost-agent` does on the wire: makes its
//! own key and CSR (`outpost_agent::identity`), enrols with a bootstrap token
//! over a connection without a client certificate (CA pinned by hash), then
//! opens a mutually authenticated session (Hello -> Welcome), sends one full
//! report and heartbeats at the interval the controller asked for, with a
//! changed report every `--report-every`. The probes are simulated: signals
//! drift and a memory-pressure condition flips now and then, so the report
//! path (validation, persistence, events) is exercised too.
//!
//! Phases run one after the other so each can be timed on its own:
//! enrol all, connect all, hold all sessions for `--duration`, close all.
//! Every phase is bounded (attempts, per-attempt timeouts, `--phase-timeout`).
//! All sessions share one quinn client endpoint, so one UDP socket.
//!
//! With `--reconnect`, a session that drops comes back as the agent's does:
//! after the agent's back-off (`outpost_agent::backoff`, 500 ms doubling to
//! 30 s, equal jitter), attempt after attempt, without the loadgen's
//! connect concurrency limit (real agents do not coordinate). That is the
//! reconnect storm `bench/storm.sh` measures: kill -9 the controller under
//! every session, restart it, and time until all are back
//! (`--until-reconnected` ends the hold then).
//!
//! Progress goes to stderr once a second; the summary goes to stdout (and to
//! `--summary-json` for scripts).

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use outpost_agent::identity::{self, Identity};
use outpost_controller::clientconfig::{self, pem_der, ClientConfig};
use outpost_proto::clock::now_ms;
use outpost_proto::link::{self, read_frame, write_frame, LinkError};
use outpost_proto::names::SITE_LABEL;
use outpost_proto::pod::{ContainerState, ContainerStatus, PodPhase, PodStatus, Usage};
use outpost_proto::units::{parse_duration, parse_quantity};
use outpost_proto::{
    close, AdminRequest, AdminResponse, ApplyRequest, Condition, ConditionStatus, ConditionType,
    Document, EnrolRequest, Heartbeat, Hello, Message, NodeInfo, NodeReport, ObjectRef,
    PodStatusUpdate, PodsAck, PodsDesired, Resources, RuntimeInfo, Signal, SignalObservation,
    ThresholdState, MAX_FRAME, PROTOCOL_VERSION,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Same idle timeout as the real agent (`agent/src/session.rs`).
const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Same answer timeout as the real agent: enrolment and hello.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one whole attempt (handshake, request, answer). The handshake
/// itself is otherwise only bounded by the idle timeout.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(25);
/// How long stopped sessions get to close before the process gives up on them.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Chance per report that the simulated memory pressure flips (1 in 20): at
/// the default one report a minute that is an event and a store write per
/// node about every 20 minutes, the rest of the reports only move signals.
const PRESSURE_FLIP_ONE_IN: u32 = 20;

#[derive(Parser, Debug)]
#[command(
    name = "outpost-loadgen",
    about = "Open many simulated agent sessions from one process against a real controller"
)]
struct Args {
    /// outpostctl config (admin certificate); used to create the bootstrap
    /// token. Default: $OUTPOST_CONFIG, then ~/.outpost/config.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Number of simulated agents.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Heartbeat interval (default: what the controller's Welcome says).
    #[arg(long, value_parser = parse_duration)]
    heartbeat: Option<Duration>,
    /// How long to hold all sessions once they are up.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// How often each agent sends a changed report.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    report_every: Duration,
    /// Node names are PREFIX-00001, PREFIX-00002, ...
    #[arg(long, default_value = "load")]
    name_prefix: String,
    /// Enrolments in flight at once.
    #[arg(long, default_value_t = 64)]
    enrol_concurrency: usize,
    /// Session handshakes (connect, hello, first report) in flight at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Attempts per agent for enrolment and for connecting, before it counts
    /// as failed (the real agent retries forever with back-off).
    #[arg(long, default_value_t = 3)]
    attempts: u32,
    /// Upper bound on the enrol phase and on the connect phase each.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    phase_timeout: Duration,
    /// Receive and send buffer of the shared UDP socket (capped by
    /// net.core.rmem_max / wmem_max; the kernel reports twice the value).
    /// 0 keeps the OS default. The default is large because one socket
    /// stands in for N boxes: with the usual 208 KiB, a burst of a few
    /// hundred handshakes overflows it and the loadgen, not the controller,
    /// becomes what is measured (see docs/BENCHMARKS.md).
    #[arg(long, default_value = "4Mi", value_parser = parse_quantity)]
    udp_buffer: u64,
    /// Touch this file when all sessions are up (steady state begins), so a
    /// script can start sampling the controller.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Also write the summary here as JSON.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// Spread the agents over this many sites (`site=sNN`); 0 puts them
    /// all in site `loadgen`. Agents also get `tier=even|odd`.
    #[arg(long, default_value_t = 0)]
    sites: usize,
    /// Take part in pod sync: acknowledge desired pods and report them
    /// Running and Ready at once (as a very fast box would).
    #[arg(long)]
    pods: bool,
    /// After all sessions are up, apply Deployments with this many replicas
    /// in all (implies --pods) and time their placement end to end.
    #[arg(long, default_value_t = 0)]
    deploy: usize,
    /// How many Deployments the replicas are split over, with mixed
    /// constraints (requests; a node selector; preferred anti-affinity and
    /// site spread; a toleration and an architecture selector).
    #[arg(long, default_value_t = 4)]
    deployments: usize,
    /// Upper bound on waiting for the deployed pods.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    deploy_timeout: Duration,
    /// During the hold, a dropped session reconnects as the agent does
    /// (its back-off and jitter, attempts without limit) instead of staying
    /// down.
    #[arg(long)]
    reconnect: bool,
    /// With --reconnect: end the hold as soon as every session is back
    /// after at least half of them dropped in one episode (a reconnect
    /// storm is over), rather than at --duration.
    #[arg(long, requires = "reconnect")]
    until_reconnected: bool,
}

/// The agent's reconnect back-off (`agent/src/session.rs` and the default
/// `--max-backoff`).
const RECONNECT_BASE: Duration = Duration::from_millis(500);
const RECONNECT_CAP: Duration = Duration::from_secs(30);

fn main() {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

// ---- shared context and counters ----

/// What every simulated agent needs.
struct Ctx {
    endpoint: quinn::Endpoint,
    remote: SocketAddr,
    server_name: String,
    ca_der: Vec<u8>,
    ca_hash: String,
    token: String,
    enrol_client: quinn::ClientConfig,
    heartbeat: Option<Duration>,
    report_every: Duration,
    attempts: u32,
    stats: Stats,
    /// Live session connections, for QUIC statistics at the window edges.
    conns: Mutex<Vec<quinn::Connection>>,
    /// Set when the connect phase hit `--phase-timeout`: stragglers were
    /// counted as failed and must not join the steady state late.
    connect_phase_over: AtomicBool,
    /// Agents take part in pod sync.
    pods: bool,
    sites: usize,
    /// Dropped sessions reconnect (`--reconnect`).
    reconnect: bool,
    /// Sessions established in the connect phase (set when it ends).
    initial: AtomicUsize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Enrol,
    Connect,
    Session,
    Reconnect,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Enrol => "enrol",
            Phase::Connect => "connect",
            Phase::Session => "session",
            Phase::Reconnect => "reconnect",
        }
    }
}

#[derive(Default)]
struct Stats {
    enrolled: AtomicUsize,
    enrol_failed: AtomicUsize,
    connected: AtomicUsize,
    connect_failed: AtomicUsize,
    dropped: AtomicUsize,
    heartbeats: AtomicU64,
    reports: AtomicU64,
    /// Failed attempts grouped by phase and reason (node names replaced by
    /// `<node>` so that equal causes group together).
    failures: Mutex<BTreeMap<(Phase, String), usize>>,
    /// Interval the controller asked for in its Welcome (ms), last seen.
    welcome_heartbeat_ms: AtomicU64,
    /// Duration of each successful enrolment attempt (key generation to
    /// certificate), in ms.
    enrol_ms: Mutex<Vec<u64>>,
    /// Duration of each successful session attempt (handshake to Welcome),
    /// in ms.
    connect_ms: Mutex<Vec<u64>>,
    /// Pods the simulated agents run right now.
    pods_running: AtomicU64,
    /// Desired-pod messages received.
    pods_desired_msgs: AtomicU64,
    /// Sessions that came back after dropping (`--reconnect`).
    reconnected: AtomicUsize,
    /// Reconnect attempts, and those that failed.
    reconnect_attempts: AtomicU64,
    reconnect_failed: AtomicU64,
    /// Wall clock (Unix ms) of the first drop of the latest episode during
    /// the hold, and of the moment the last dropped session was back; 0
    /// until then. An episode begins with a drop while every session was
    /// back.
    first_drop_ms: AtomicU64,
    all_back_ms: AtomicU64,
    /// Drops in the latest episode.
    episode_drops: AtomicUsize,
    /// From a session's drop to its Welcome again, in ms.
    reconnect_ms: Mutex<Vec<u64>>,
}

impl Stats {
    fn took(list: &Mutex<Vec<u64>>, since: Instant) {
        list.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(millis(since.elapsed()));
    }

    /// Sessions live now (connected in the connect phase, minus dropped,
    /// plus back).
    fn live(&self) -> usize {
        (self.connected.load(Ordering::Relaxed) + self.reconnected.load(Ordering::Relaxed))
            .saturating_sub(self.dropped.load(Ordering::Relaxed))
    }

    fn failed(&self, phase: Phase, node: &str, why: &str) {
        let key = (phase, why.replace(node, "<node>"));
        *self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default() += 1;
    }
}

// ---- the run ----

async fn run(args: Args) -> Result<()> {
    if args.agents == 0 {
        bail!("--agents must be at least 1");
    }
    if args.enrol_concurrency == 0 || args.connect_concurrency == 0 || args.attempts == 0 {
        bail!("--enrol-concurrency, --connect-concurrency and --attempts must be at least 1");
    }
    let path = clientconfig::resolve_path(args.config.as_deref())
        .ok_or_else(|| anyhow!("no config: pass --config or set OUTPOST_CONFIG"))?;
    let cfg = ClientConfig::load(&path)?;
    let ca_der = pem_der(&cfg.ca, "CERTIFICATE").map_err(|e| anyhow!("config ca: {e}"))?;
    let ca_hash = link::cert_hash(&ca_der);
    let remote = tokio::net::lookup_host(&cfg.controller)
        .await
        .with_context(|| format!("resolving controller {}", cfg.controller))?
        .next()
        .ok_or_else(|| anyhow!("controller {} resolved to nothing", cfg.controller))?;
    let (endpoint, buffers) = shared_endpoint(remote, args.udp_buffer)?;
    let local_port = endpoint.local_addr()?.port();
    let start_drops = (udp_drops(local_port), udp_drops(remote.port()));
    eprintln!(
        "loadgen: {} agents against {} from one UDP socket (port {local_port}, receive buffer {}, send buffer {})",
        args.agents,
        remote,
        buffers.0.map_or("?".into(), |b| b.to_string()),
        buffers.1.map_or("?".into(), |b| b.to_string()),
    );

    let uses = u32::try_from(args.agents).context("--agents is too large for one token")?;
    let created = admin_call(
        &endpoint,
        &cfg,
        remote,
        AdminRequest::CreateToken {
            ttl_secs: 24 * 3600,
            uses: Some(uses),
            labels: BTreeMap::new(),
            description: format!("outpost-loadgen, {} agents", args.agents),
        },
    )
    .await
    .context("creating the bootstrap token")?;
    let AdminResponse::TokenCreated {
        token,
        ca_hash: told,
        ..
    } = created
    else {
        bail!("unexpected answer to CreateToken");
    };
    if told != ca_hash {
        bail!("the controller's CA hash {told} differs from the config's CA {ca_hash}");
    }
    let token_id = token.split('.').next().unwrap_or_default().to_string();

    let ctx = Arc::new(Ctx {
        enrol_client: link::enrol_client_config(&ca_hash, link::transport(IDLE_TIMEOUT, 1))?,
        endpoint: endpoint.clone(),
        remote,
        server_name: cfg.server_name.clone(),
        ca_der,
        ca_hash,
        token,
        heartbeat: args.heartbeat,
        report_every: args.report_every,
        attempts: args.attempts,
        stats: Stats::default(),
        conns: Mutex::new(Vec::new()),
        connect_phase_over: AtomicBool::new(false),
        pods: args.pods || args.deploy > 0,
        sites: args.sites,
        reconnect: args.reconnect,
        initial: AtomicUsize::new(0),
    });
    let names: Vec<String> = (1..=args.agents)
        .map(|i| format!("{}-{i:05}", args.name_prefix))
        .collect();

    // Phase 1: enrol everyone.
    let started = Instant::now();
    let identities = enrol_all(&ctx, &names, &args).await;
    let enrol_time = started.elapsed();
    eprintln!(
        "enrolled {}/{} in {:.1}s",
        identities.len(),
        args.agents,
        enrol_time.as_secs_f64()
    );

    // Phase 2: connect everyone; the session tasks keep running.
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let mut sessions = connect_all(&ctx, identities, &args, stop_rx).await;
    let connect_time = started.elapsed();
    let connected = ctx.stats.connected.load(Ordering::Relaxed);
    ctx.initial.store(connected, Ordering::Relaxed);
    eprintln!(
        "connected {connected}/{} in {:.1}s",
        args.agents,
        connect_time.as_secs_f64()
    );

    // Phase 2b: place pods end to end.
    let deployed = if args.deploy > 0 {
        Some(deploy(&ctx, &endpoint, &cfg, remote, &args).await)
    } else {
        None
    };

    // Phase 3: steady state.
    if let Some(p) = &args.ready_file {
        std::fs::write(p, format!("{connected}\n"))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    let w0 = Window::sample(&ctx, local_port, remote.port());
    let hold_start = Instant::now();
    let mut last = Instant::now();
    while hold_start.elapsed() < args.duration {
        let left = args.duration.saturating_sub(hold_start.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        if args.until_reconnected
            && ctx.stats.all_back_ms.load(Ordering::Relaxed) != 0
            && ctx.stats.episode_drops.load(Ordering::Relaxed) >= connected.div_ceil(2)
        {
            eprintln!("every dropped session is back; ending the hold");
            break;
        }
        let every = if ctx.reconnect && ctx.stats.live() < connected {
            1
        } else {
            10
        };
        if last.elapsed() >= Duration::from_secs(every) {
            last = Instant::now();
            eprintln!(
                "holding: {}/{} sessions live, {} heartbeats, {} reports, {} dropped, {} back ({} reconnect attempts, {} failed), {:.0}s left",
                ctx.stats.live(),
                args.agents,
                ctx.stats.heartbeats.load(Ordering::Relaxed),
                ctx.stats.reports.load(Ordering::Relaxed),
                ctx.stats.dropped.load(Ordering::Relaxed),
                ctx.stats.reconnected.load(Ordering::Relaxed),
                ctx.stats.reconnect_attempts.load(Ordering::Relaxed),
                ctx.stats.reconnect_failed.load(Ordering::Relaxed),
                args.duration
                    .saturating_sub(hold_start.elapsed())
                    .as_secs_f64()
            );
        }
    }
    let w1 = Window::sample(&ctx, local_port, remote.port());
    let live_at_end = ctx
        .conns
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|c| c.close_reason().is_none())
        .count();

    // The operator's view of a fleet this size, taken while every session is
    // still live (connected, remote address and signals filled in).
    let listing = list_nodes(&endpoint, &cfg, remote).await;

    // Phase 4: close everything, bounded.
    let close_drops = (udp_drops(local_port), udp_drops(remote.port()));
    let _ = stop_tx.send(true);
    let closing = async { while sessions.join_next().await.is_some() {} };
    if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
        eprintln!("some sessions did not stop within {CLOSE_TIMEOUT:?}; abandoning them");
        sessions.abort_all();
    }
    // Token bookkeeping as the controller recorded it (checked after all
    // enrolments committed).
    let token_used = token_use(&endpoint, &cfg, remote, &token_id).await;
    ctx.conns.lock().unwrap_or_else(|p| p.into_inner()).clear();
    endpoint.close(close::DONE.into(), b"loadgen done");
    let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.wait_idle()).await;
    let delta = |a: Option<u64>, b: Option<u64>| b.zip(a).map(|(b, a)| b.saturating_sub(a));
    let close_drops = (
        delta(close_drops.0, udp_drops(local_port)),
        delta(close_drops.1, udp_drops(remote.port())),
    );

    let mut summary = Summary::build(
        &ctx,
        &args,
        enrol_time,
        connect_time,
        live_at_end,
        start_drops,
        &w0,
        &w1,
        token_used,
        listing,
    );
    summary.drops_closing = close_drops;
    summary.deployed = deployed;
    print!("{}", summary.text());
    if let Some(p) = &args.summary_json {
        std::fs::write(p, serde_json::to_string_pretty(&summary.json())?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Receive and send buffer of a UDP socket, as the kernel reports them.
type BufferSizes = (Option<usize>, Option<usize>);

/// One client endpoint for every connection of this process. Returns the
/// socket's receive and send buffer sizes as the kernel reports them.
fn shared_endpoint(remote: SocketAddr, buffer: u64) -> Result<(quinn::Endpoint, BufferSizes)> {
    let bind: SocketAddr = if remote.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let socket = std::net::UdpSocket::bind(bind).context("opening a UDP socket")?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    if buffer > 0 {
        let bytes = usize::try_from(buffer).unwrap_or(usize::MAX);
        state
            .set_recv_buffer_size((&socket).into(), bytes)
            .context("setting the UDP receive buffer")?;
        state
            .set_send_buffer_size((&socket).into(), bytes)
            .context("setting the UDP send buffer")?;
    }
    let sizes = (
        state.recv_buffer_size((&socket).into()).ok(),
        state.send_buffer_size((&socket).into()).ok(),
    );
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        // Read on a thread of its own, as the controller's: 10,000 sessions'
        // handshakes on one runtime would otherwise starve the socket.
        outpost_proto::endpoint_thread::EndpointThread::new("quic-endpoint")
            .context("starting the QUIC endpoint's thread")?,
    )
    .context("starting the QUIC endpoint")?;
    Ok((endpoint, sizes))
}

/// Prints `what k/N` once a second until `done` says the phase is over or
/// `timeout` passes. Returns false on timeout.
async fn progress(
    what: &str,
    total: usize,
    timeout: Duration,
    counts: impl Fn() -> (usize, usize),
) -> bool {
    let start = Instant::now();
    let mut last = Instant::now();
    loop {
        let (ok, failed) = counts();
        if ok + failed >= total {
            return true;
        }
        if start.elapsed() >= timeout {
            eprintln!("{what}: phase timeout {timeout:?} reached");
            return false;
        }
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            eprintln!(
                "{what} {ok}/{total} ({failed} failed, {:.0}s)",
                start.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- phase 1: enrolment ----

async fn enrol_all(ctx: &Arc<Ctx>, names: &[String], args: &Args) -> Vec<Identity> {
    let permits = Arc::new(Semaphore::new(args.enrol_concurrency));
    let mut tasks = JoinSet::new();
    for name in names {
        let (ctx, permits, name) = (ctx.clone(), permits.clone(), name.clone());
        tasks.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return None;
            };
            for attempt in 1..=ctx.attempts {
                let since = Instant::now();
                let result = tokio::time::timeout(ATTEMPT_TIMEOUT, enrol_once(&ctx, &name))
                    .await
                    .unwrap_or_else(|_| Err(format!("no enrolment within {ATTEMPT_TIMEOUT:?}")));
                match result {
                    Ok(id) => {
                        Stats::took(&ctx.stats.enrol_ms, since);
                        ctx.stats.enrolled.fetch_add(1, Ordering::Relaxed);
                        return Some(id);
                    }
                    Err(why) => {
                        ctx.stats.failed(Phase::Enrol, &name, &why);
                        if attempt < ctx.attempts {
                            tokio::time::sleep(retry_delay(attempt)).await;
                        }
                    }
                }
            }
            ctx.stats.enrol_failed.fetch_add(1, Ordering::Relaxed);
            None
        });
    }
    let s = &ctx.stats;
    let finished = progress("enrolled", names.len(), args.phase_timeout, || {
        (
            s.enrolled.load(Ordering::Relaxed),
            s.enrol_failed.load(Ordering::Relaxed),
        )
    })
    .await;
    if !finished {
        tasks.abort_all();
    }
    let mut out = Vec::with_capacity(names.len());
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Some(id)) => out.push(id),
            Ok(None) => {}
            Err(_) => {
                s.enrol_failed.fetch_add(1, Ordering::Relaxed);
                s.failed(Phase::Enrol, "", "phase timeout (--phase-timeout)");
            }
        }
    }
    out.sort_by(|a, b| a.node.cmp(&b.node));
    out
}

/// Back-off between attempts, with jitter so retries do not bunch up.
fn retry_delay(attempt: u32) -> Duration {
    let base = 500u64 << attempt.min(5);
    Duration::from_millis(base / 2 + rand::random_range(0..=base / 2))
}

async fn enrol_once(ctx: &Ctx, name: &str) -> Result<Identity, String> {
    let pending = identity::new_key(name).map_err(|e| e.to_string())?;
    let conn = ctx
        .endpoint
        .connect_with(ctx.enrol_client.clone(), ctx.remote, &ctx.server_name)
        .map_err(|e| format!("connecting: {e}"))?
        .await
        .map_err(|e| format!("handshake: {}", explain(&e)))?;
    let reply = call(
        &conn,
        &Message::EnrolRequest(EnrolRequest {
            token: ctx.token.clone(),
            node: name.to_string(),
            csr_der: pending.csr_der.clone(),
            labels: BTreeMap::from([(SITE_LABEL.to_string(), "loadgen".to_string())]),
        }),
    )
    .await;
    conn.close(close::DONE.into(), b"enrolled");
    let resp = match reply? {
        Message::EnrolResponse(r) => r,
        Message::Error(e) => return Err(format!("refused: {e}")),
        other => {
            return Err(format!(
                "unexpected {} in answer to enrolment",
                other.kind()
            ))
        }
    };
    if link::cert_hash(&resp.ca_der) != ctx.ca_hash {
        return Err("the controller returned a CA that does not match the pin".into());
    }
    pending.complete(resp.cert_der).map_err(|e| e.to_string())
}

/// Sends `msg` on a new stream and waits for one answer, as the agent does.
async fn call(conn: &quinn::Connection, msg: &Message) -> Result<Message, String> {
    outpost_agent::session::call(conn, msg)
        .await
        .map_err(|e| format!("{e:#}"))
}

/// A connection failure in short, groupable words (the agent's `explain` is
/// private and phrased for operators).
fn explain(e: &quinn::ConnectionError) -> String {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => format!(
            "closed by the controller (code {}): {}",
            c.error_code,
            String::from_utf8_lossy(&c.reason)
        ),
        quinn::ConnectionError::TimedOut => "idle timeout".into(),
        quinn::ConnectionError::TransportError(t) => format!("TLS/QUIC: {t}"),
        other => other.to_string(),
    }
}

fn link_error(e: &LinkError) -> String {
    match e {
        LinkError::Connection(c)
        | LinkError::Read(quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(c)))
        | LinkError::Write(quinn::WriteError::ConnectionLost(c)) => explain(c),
        other => other.to_string(),
    }
}

// ---- phase 2 and 3: sessions ----

/// How a session task ended.
enum Ended {
    Stopped,
    Dropped,
}

async fn connect_all(
    ctx: &Arc<Ctx>,
    identities: Vec<Identity>,
    args: &Args,
    stop: watch::Receiver<bool>,
) -> JoinSet<Ended> {
    let total = identities.len();
    let permits = Arc::new(Semaphore::new(args.connect_concurrency));
    let mut tasks = JoinSet::new();
    for (index, id) in identities.into_iter().enumerate() {
        let (ctx, permits, stop) = (ctx.clone(), permits.clone(), stop.clone());
        tasks.spawn(async move { agent(ctx, permits, id, index, stop).await });
    }
    let s = &ctx.stats;
    let finished = progress("connected", total, args.phase_timeout, || {
        (
            s.connected.load(Ordering::Relaxed),
            s.connect_failed.load(Ordering::Relaxed),
        )
    })
    .await;
    if !finished {
        // Sessions already up keep running; the stragglers are counted as
        // failed and give up as soon as their current attempt ends.
        ctx.connect_phase_over.store(true, Ordering::Relaxed);
        let missing =
            total - s.connected.load(Ordering::Relaxed) - s.connect_failed.load(Ordering::Relaxed);
        s.connect_failed.fetch_add(missing, Ordering::Relaxed);
        for _ in 0..missing {
            s.failed(Phase::Connect, "", "phase timeout (--phase-timeout)");
        }
    }
    tasks
}

/// One simulated agent from its first connection attempt to the end.
async fn agent(
    ctx: Arc<Ctx>,
    permits: Arc<Semaphore>,
    id: Identity,
    index: usize,
    mut stop: watch::Receiver<bool>,
) -> Ended {
    let client = match link::client_config(
        ctx.ca_der.clone().into(),
        Some(id.tls()),
        link::transport(IDLE_TIMEOUT, 1),
    ) {
        Ok(c) => c,
        Err(e) => {
            ctx.stats.failed(Phase::Connect, &id.node, &e.to_string());
            ctx.stats.connect_failed.fetch_add(1, Ordering::Relaxed);
            return Ended::Dropped;
        }
    };
    let mut node = FakeNode::new(&id.node, index, ctx.sites);
    let mut live = None;
    {
        let Ok(_permit) = permits.acquire_owned().await else {
            return Ended::Dropped;
        };
        for attempt in 1..=ctx.attempts {
            let since = Instant::now();
            let result =
                tokio::time::timeout(ATTEMPT_TIMEOUT, connect_once(&ctx, &client, &id, &mut node))
                    .await
                    .unwrap_or_else(|_| Err(format!("no session within {ATTEMPT_TIMEOUT:?}")));
            match result {
                Ok(l) => {
                    Stats::took(&ctx.stats.connect_ms, since);
                    live = Some(l);
                    break;
                }
                Err(why) => {
                    ctx.stats.failed(Phase::Connect, &id.node, &why);
                    if attempt < ctx.attempts {
                        tokio::time::sleep(retry_delay(attempt)).await;
                    }
                }
            }
        }
    }
    // The receive half stays open (as in the agent, which keeps reading it):
    // dropping it would ask the controller to stop sending on the session.
    if ctx.connect_phase_over.load(Ordering::Relaxed) {
        // Already counted as failed by `connect_all`.
        if let Some(l) = live {
            l.conn.close(close::DONE.into(), b"too late");
        }
        return Ended::Dropped;
    }
    let Some(mut live) = live else {
        ctx.stats.connect_failed.fetch_add(1, Ordering::Relaxed);
        return Ended::Dropped;
    };
    ctx.stats.connected.fetch_add(1, Ordering::Relaxed);
    loop {
        ctx.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(live.conn.clone());
        let ended = hold_session(&ctx, live, &id, &mut node, index, &mut stop).await;
        if matches!(ended, Ended::Stopped) {
            return ended;
        }
        ctx.stats.dropped.fetch_add(1, Ordering::Relaxed);
        if !ctx.reconnect {
            return ended;
        }
        // Any later drop means the storm is not over yet; a drop after
        // every session was back starts a new episode (a few sessions that
        // dropped while a busy controller was taking the rest are not the
        // storm), and the figures count from its first drop.
        if ctx.stats.all_back_ms.swap(0, Ordering::Relaxed) != 0 {
            ctx.stats.first_drop_ms.store(now_ms(), Ordering::Relaxed);
            ctx.stats.episode_drops.store(0, Ordering::Relaxed);
        } else {
            let _ = ctx.stats.first_drop_ms.compare_exchange(
                0,
                now_ms(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        ctx.stats.episode_drops.fetch_add(1, Ordering::Relaxed);
        match reconnect(&ctx, &client, &id, &mut node, &mut stop).await {
            Some(l) => live = l,
            None => return Ended::Stopped,
        }
    }
}

/// Comes back after a drop as the agent does: back-off with jitter, then
/// an attempt, until one gets a Welcome (or the run stops: `None`).
async fn reconnect(
    ctx: &Ctx,
    client: &quinn::ClientConfig,
    id: &Identity,
    node: &mut FakeNode,
    stop: &mut watch::Receiver<bool>,
) -> Option<Live> {
    let dropped_at = Instant::now();
    let mut backoff = outpost_agent::backoff::Backoff::new(RECONNECT_BASE, RECONNECT_CAP);
    loop {
        let delay = backoff.next_delay(rand::random());
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return None,
        }
        if *stop.borrow() {
            return None;
        }
        ctx.stats.reconnect_attempts.fetch_add(1, Ordering::Relaxed);
        let result = tokio::time::timeout(ATTEMPT_TIMEOUT, connect_once(ctx, client, id, node))
            .await
            .unwrap_or_else(|_| Err(format!("no session within {ATTEMPT_TIMEOUT:?}")));
        match result {
            Ok(l) => {
                Stats::took(&ctx.stats.reconnect_ms, dropped_at);
                ctx.stats.reconnected.fetch_add(1, Ordering::Relaxed);
                let initial = ctx.initial.load(Ordering::Relaxed);
                if initial > 0 && ctx.stats.live() >= initial {
                    ctx.stats.all_back_ms.store(now_ms(), Ordering::Relaxed);
                }
                return Some(l);
            }
            Err(why) => {
                ctx.stats.reconnect_failed.fetch_add(1, Ordering::Relaxed);
                ctx.stats.failed(Phase::Reconnect, &id.node, &why);
            }
        }
    }
}

/// Heartbeats and reports on an established session until it drops or
/// the run stops.
async fn hold_session(
    ctx: &Ctx,
    live: Live,
    id: &Identity,
    node: &mut FakeNode,
    index: usize,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let Live {
        conn,
        mut send,
        recv,
        heartbeat_ms: welcome_ms,
    } = live;
    let beat_every = ctx
        .heartbeat
        .unwrap_or(Duration::from_millis(welcome_ms.clamp(100, 3_600_000)));
    // Jittered starts: a fleet that connected in a burst must not heartbeat
    // in lock-step.
    let jitter = |d: Duration| Duration::from_millis(rand::random_range(0..=millis(d).max(1)));
    let now = tokio::time::Instant::now();
    let mut beat = tokio::time::interval_at(now + jitter(beat_every), beat_every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The full report went out with the hello; the next changed one comes
    // at a random point of the first period, so a fleet reports at an even
    // N / period per second from the start.
    let mut report = tokio::time::interval_at(now + jitter(ctx.report_every), ctx.report_every);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    // Frames from the controller, read on their own task as the agent does
    // (a read must never be cut in half by the select below).
    let (inbox_tx, mut inbox) = tokio::sync::mpsc::channel::<Message>(8);
    let mut recv = recv;
    let reader = tokio::spawn(async move {
        while let Ok(Some(m)) = read_frame(&mut recv, MAX_FRAME).await {
            if inbox_tx.send(m).await.is_err() {
                break;
            }
        }
    });
    let mut pods = PodSet::default();
    if ctx.pods {
        if let Err(e) = write_frame(&mut send, &Message::PodsAck(PodsAck { generation: 0 })).await {
            ctx.stats.failed(Phase::Session, &id.node, &link_error(&e));
        }
    }
    let ended = loop {
        if *stop.borrow() {
            break Ended::Stopped;
        }
        let sent = tokio::select! {
            m = inbox.recv(), if ctx.pods => match m {
                Some(m @ (Message::PodsDesired(_) | Message::NodeDesired(_))) => {
                    let d = match m {
                        Message::NodeDesired(d) => d.to_pods_desired(),
                        Message::PodsDesired(d) => *d,
                        _ => unreachable!("matched above"),
                    };
                    ctx.stats.pods_desired_msgs.fetch_add(1, Ordering::Relaxed);
                    let generation = d.generation;
                    let update = pods.apply(d, index);
                    let now_running = pods.len() as u64;
                    let before = pods.reported;
                    pods.reported = now_running;
                    if now_running >= before {
                        ctx.stats.pods_running.fetch_add(now_running - before, Ordering::Relaxed);
                    } else {
                        ctx.stats.pods_running.fetch_sub(before - now_running, Ordering::Relaxed);
                    }
                    match write_frame(&mut send, &Message::PodsAck(PodsAck { generation })).await {
                        Ok(()) => write_frame(&mut send, &Message::PodStatuses(Box::new(update)))
                            .await
                            .map(|()| 0),
                        Err(e) => Err(e),
                    }
                }
                Some(_) => Ok(0),
                None => {
                    ctx.stats.failed(Phase::Session, &id.node, "the controller ended the session stream");
                    break Ended::Dropped;
                }
            },
            _ = beat.tick() => {
                seq += 1;
                write_frame(&mut send, &Message::Heartbeat(Heartbeat { seq }))
                    .await
                    .map(|()| ctx.stats.heartbeats.fetch_add(1, Ordering::Relaxed))
            }
            _ = report.tick() => {
                node.step();
                write_frame(&mut send, &Message::Report(Box::new(node.report())))
                    .await
                    .map(|()| ctx.stats.reports.fetch_add(1, Ordering::Relaxed))
            }
            e = conn.closed() => {
                ctx.stats.failed(Phase::Session, &id.node, &explain(&e));
                break Ended::Dropped;
            }
            _ = stop.changed() => break Ended::Stopped,
        };
        if let Err(e) = sent {
            ctx.stats.failed(Phase::Session, &id.node, &link_error(&e));
            break Ended::Dropped;
        }
    };
    reader.abort();
    ctx.stats
        .pods_running
        .fetch_sub(pods.reported, Ordering::Relaxed);
    // Leave as the agent does on shutdown: close the connection with DONE.
    conn.close(close::DONE.into(), b"agent shutting down");
    ended
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A session that got its Welcome.
struct Live {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    /// Heartbeat interval from the Welcome.
    heartbeat_ms: u64,
}

/// Connect, hello, welcome, first full report.
async fn connect_once(
    ctx: &Ctx,
    client: &quinn::ClientConfig,
    id: &Identity,
    node: &mut FakeNode,
) -> Result<Live, String> {
    let conn = ctx
        .endpoint
        .connect_with(client.clone(), ctx.remote, &ctx.server_name)
        .map_err(|e| format!("connecting: {e}"))?
        .await
        .map_err(|e| format!("handshake: {}", explain(&e)))?;
    let hello = async {
        let (mut send, mut recv) = conn.open_bi().await?;
        write_frame(
            &mut send,
            &Message::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                node: id.node.clone(),
                agent_version: format!("loadgen-{}", env!("CARGO_PKG_VERSION")),
            }),
        )
        .await?;
        let answer = read_frame(&mut recv, MAX_FRAME).await?;
        Ok::<_, LinkError>((send, recv, answer))
    };
    let (mut send, recv, answer) = match tokio::time::timeout(ANSWER_TIMEOUT, hello).await {
        Err(_) => {
            conn.close(close::DONE.into(), b"no welcome");
            return Err(format!("no Welcome within {ANSWER_TIMEOUT:?}"));
        }
        Ok(Err(e)) => return Err(format!("hello: {}", link_error(&e))),
        Ok(Ok(a)) => a,
    };
    let welcome = match answer {
        Some(Message::Welcome(w)) => w,
        Some(Message::Error(e)) => return Err(format!("session refused: {e}")),
        Some(other) => return Err(format!("unexpected {} in answer to hello", other.kind())),
        None => return Err("the controller closed the stream during the hello".into()),
    };
    ctx.stats
        .welcome_heartbeat_ms
        .store(welcome.heartbeat_interval_ms, Ordering::Relaxed);
    write_frame(&mut send, &Message::Report(Box::new(node.report())))
        .await
        .map_err(|e| format!("first report: {}", link_error(&e)))?;
    ctx.stats.reports.fetch_add(1, Ordering::Relaxed);
    Ok(Live {
        conn,
        send,
        recv,
        heartbeat_ms: welcome.heartbeat_interval_ms,
    })
}

// ---- pods ----

/// The pods one simulated agent runs: every desired pod is Running and
/// Ready at once (a box that starts containers instantly), so what is
/// measured is the controller's placement and delivery.
#[derive(Default)]
struct PodSet {
    pods: BTreeMap<String, u64>,
    /// Pods last counted into `Stats::pods_running`.
    reported: u64,
}

impl PodSet {
    fn len(&self) -> usize {
        self.pods.len()
    }

    /// Applies a desired-pods message; returns the status update to send.
    fn apply(&mut self, d: PodsDesired, index: usize) -> PodStatusUpdate {
        let mut gone: Vec<String> = Vec::new();
        if d.full {
            let keep: std::collections::BTreeSet<String> =
                d.pods.iter().map(|p| p.spec.key()).collect();
            let drop: Vec<String> = self
                .pods
                .keys()
                .filter(|k| !keep.contains(*k))
                .cloned()
                .collect();
            for k in drop {
                self.pods.remove(&k);
                gone.push(k);
            }
        }
        for k in d.removed {
            self.pods.remove(&k);
            gone.push(k);
        }
        let mut statuses = Vec::new();
        let now = now_ms();
        for p in d.pods {
            let key = p.spec.key();
            if self.pods.insert(key.clone(), p.generation) == Some(p.generation) {
                continue;
            }
            let n = self.pods.len();
            statuses.push(PodStatus {
                name: key,
                generation: p.generation,
                phase: PodPhase::Running,
                reason: String::new(),
                message: String::new(),
                ready: true,
                started_ms: now,
                pod_ip: format!(
                    "172.{}.{}.{}",
                    16 + (index >> 16) % 16,
                    (index >> 8) & 0xff,
                    (index + n) & 0xff
                ),
                containers: p
                    .spec
                    .containers
                    .iter()
                    .map(|c| ContainerStatus {
                        name: c.name.clone(),
                        image: c.image.clone(),
                        container_id: String::new(),
                        state: ContainerState::Running { started_ms: now },
                        last_state: None,
                        ready: true,
                        restart_count: 0,
                        usage: Usage::default(),
                    })
                    .collect(),
                usage: Usage::default(),
            });
        }
        PodStatusUpdate {
            full: false,
            pods: statuses,
            gone,
            node_usage: Usage::default(),
        }
    }
}

/// The Deployments of the placement phase: `replicas` split over `n`
/// Deployments with mixed constraints.
fn deployments(replicas: usize, n: usize) -> Vec<serde_json::Value> {
    let n = n.max(1);
    (0..n)
        .map(|i| {
            let count = replicas / n + usize::from(i < replicas % n);
            let name = format!("load-{i}");
            let mut spec = serde_json::json!({
                "containers": [{
                    "name": "app",
                    "image": "outpost/workload-http:dev",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                }],
            });
            match i % 4 {
                1 => spec["nodeSelector"] = serde_json::json!({"tier": "even"}),
                2 => {
                    spec["affinity"] = serde_json::json!({"podAntiAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [{
                            "weight": 100,
                            "podAffinityTerm": {
                                "labelSelector": {"matchLabels": {"app": name}},
                                "topologyKey": "kubernetes.io/hostname",
                            },
                        }],
                    }});
                    spec["topologySpreadConstraints"] = serde_json::json!([{
                        "maxSkew": 5,
                        "topologyKey": SITE_LABEL,
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": {"app": name}},
                    }]);
                }
                3 => {
                    spec["tolerations"] = serde_json::json!([{
                        "key": "node.outpost.dev/memory-pressure",
                        "operator": "Exists",
                        "effect": "NoSchedule",
                    }]);
                    spec["nodeSelector"] = serde_json::json!({"kubernetes.io/arch": "amd64"});
                }
                _ => {}
            }
            serde_json::json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name},
                "spec": {
                    "replicas": count,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
                },
            })
        })
        .collect()
}

/// What the placement phase measured.
struct Deployed {
    replicas: usize,
    /// Apply to every pod delivered to (and acknowledged by) its agent.
    delivered: Option<Duration>,
    /// Apply to every Deployment reporting all replicas available.
    available: Option<Duration>,
    error: Option<String>,
}

async fn deploy(
    ctx: &Ctx,
    endpoint: &quinn::Endpoint,
    cfg: &ClientConfig,
    remote: SocketAddr,
    args: &Args,
) -> Deployed {
    let docs = deployments(args.deploy, args.deployments);
    let mut out = Deployed {
        replicas: args.deploy,
        delivered: None,
        available: None,
        error: None,
    };
    let documents = docs
        .iter()
        .enumerate()
        .map(|(i, d)| Document {
            source: format!("loadgen deployment {i}"),
            json: serde_json::to_vec(d).unwrap_or_default(),
        })
        .collect();
    let base = ctx.stats.pods_running.load(Ordering::Relaxed);
    let start = Instant::now();
    if let Err(e) = admin_call(
        endpoint,
        cfg,
        remote,
        AdminRequest::Apply(ApplyRequest {
            documents,
            dry_run: false,
        }),
    )
    .await
    {
        out.error = Some(format!("apply: {e:#}"));
        return out;
    }
    eprintln!(
        "applied {} Deployments with {} replicas",
        docs.len(),
        args.deploy
    );
    let mut last = Instant::now();
    while start.elapsed() < args.deploy_timeout {
        let running = usize::try_from(
            ctx.stats
                .pods_running
                .load(Ordering::Relaxed)
                .saturating_sub(base),
        )
        .unwrap_or(usize::MAX);
        if out.delivered.is_none() && running >= args.deploy {
            out.delivered = Some(start.elapsed());
            eprintln!(
                "all {} pods delivered in {:.2}s ({:.0} placements/s end to end)",
                args.deploy,
                start.elapsed().as_secs_f64(),
                args.deploy as f64 / start.elapsed().as_secs_f64()
            );
        }
        if out.delivered.is_some() {
            let mut all = true;
            for d in &docs {
                let name = d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let want = d["spec"]["replicas"].as_u64().unwrap_or(0);
                let got = match admin_call(
                    endpoint,
                    cfg,
                    remote,
                    AdminRequest::Get(ObjectRef {
                        kind: "deployments".into(),
                        namespace: String::new(),
                        name,
                    }),
                )
                .await
                {
                    Ok(AdminResponse::Object(b)) => serde_json::from_slice::<serde_json::Value>(&b)
                        .ok()
                        .and_then(|v| v["status"]["availableReplicas"].as_u64())
                        .unwrap_or(0),
                    _ => 0,
                };
                all &= got == want;
            }
            if all {
                out.available = Some(start.elapsed());
                eprintln!(
                    "every Deployment available in {:.2}s",
                    start.elapsed().as_secs_f64()
                );
                return out;
            }
        }
        if last.elapsed() >= Duration::from_secs(5) {
            last = Instant::now();
            eprintln!("deploying: {running}/{} pods delivered", args.deploy);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out.error = Some(format!("not done within {:?}", args.deploy_timeout));
    out
}

// ---- simulated probes ----

const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;

/// A plausible small edge box whose signals drift between reports.
struct FakeNode {
    info: NodeInfo,
    capacity: Resources,
    allocatable: Resources,
    /// Available amount per signal, in `Signal::ALL` order.
    available: [u64; 5],
    /// Capacity per signal, in `Signal::ALL` order.
    signal_capacity: [u64; 5],
    memory_pressure: bool,
    pressure_since_ms: u64,
    labels: BTreeMap<String, String>,
}

impl FakeNode {
    fn new(name: &str, index: usize, sites: usize) -> FakeNode {
        // A mixed fleet: two thirds x86 boxes with 8 GiB, a third ARM boards
        // with 4 GiB.
        let arm = index % 3 == 2;
        let memory = if arm { 4 * GI } else { 8 * GI };
        let disk = if arm { 32 * GI } else { 128 * GI };
        let inodes = disk / (16 * 1024);
        let pids = 32_768;
        let capacity = Resources {
            cpu_millis: if arm { 4000 } else { 2000 },
            memory_bytes: memory,
            pids,
            ephemeral_storage_bytes: disk,
            gpus: 0,
        };
        let allocatable = Resources {
            cpu_millis: capacity.cpu_millis - 200,
            memory_bytes: memory - 356 * MI,
            pids: pids - 1000,
            ephemeral_storage_bytes: disk - disk / 10,
            gpus: 0,
        };
        let octets = index.to_be_bytes();
        let info = NodeInfo {
            arch: if arm { "arm64" } else { "amd64" }.into(),
            os: "linux".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            kernel_version: if arm {
                "6.1.0-rpi7-rpi-v8"
            } else {
                "6.1.0-18-amd64"
            }
            .into(),
            agent_version: format!("loadgen-{}", env!("CARGO_PKG_VERSION")),
            hostname: name.to_string(),
            runtime: RuntimeInfo {
                name: "docker".into(),
                version: "27.3.1".into(),
                available: true,
                message: String::new(),
            },
            addresses: vec![format!(
                "10.{}.{}.{}",
                octets[octets.len() - 3],
                octets[octets.len() - 2],
                octets[octets.len() - 1]
            )],
            boot_time_ms: now_ms().saturating_sub(3 * 24 * 3600 * 1000),
        };
        let signal_capacity = [memory, disk, inodes, disk, pids];
        let available = [
            memory / 2,
            disk * 6 / 10,
            inodes * 9 / 10,
            disk * 6 / 10,
            pids - 400,
        ];
        FakeNode {
            info,
            capacity,
            allocatable,
            available,
            signal_capacity,
            memory_pressure: false,
            pressure_since_ms: now_ms(),
            labels: BTreeMap::from([
                (
                    SITE_LABEL.to_string(),
                    if sites == 0 {
                        "loadgen".to_string()
                    } else {
                        format!("s{:02}", index % sites)
                    },
                ),
                (
                    "tier".to_string(),
                    if index.is_multiple_of(2) {
                        "even"
                    } else {
                        "odd"
                    }
                    .to_string(),
                ),
            ]),
        }
    }

    /// Moves the signals by up to ±10 % of capacity (more than the agent's
    /// 5 % "worth sending" step) and now and then flips memory pressure.
    fn step(&mut self) {
        for (a, cap) in self.available.iter_mut().zip(self.signal_capacity) {
            let span = cap / 10;
            let up = rand::random_bool(0.5);
            let by = rand::random_range(span / 2..=span.max(1));
            *a = if up {
                (*a + by).min(cap * 9 / 10)
            } else {
                a.saturating_sub(by).max(cap / 5)
            };
        }
        if rand::random_range(0..PRESSURE_FLIP_ONE_IN) == 0 {
            self.memory_pressure = !self.memory_pressure;
            self.pressure_since_ms = now_ms();
        }
        if self.memory_pressure {
            self.available[0] = rand::random_range(40 * MI..90 * MI);
        }
    }

    fn report(&self) -> NodeReport {
        let thresholds = [
            Some(100 * MI),
            Some(self.signal_capacity[1] / 10),
            Some(self.signal_capacity[2] / 20),
            Some(self.signal_capacity[3] * 15 / 100),
            Some(self.signal_capacity[4] / 10),
        ];
        let signals = Signal::ALL
            .iter()
            .enumerate()
            .map(|(i, &signal)| {
                let met = thresholds[i].is_some_and(|t| self.available[i] < t);
                SignalObservation {
                    signal,
                    available: self.available[i],
                    capacity: self.signal_capacity[i],
                    hard_threshold: thresholds[i],
                    soft_threshold: None,
                    state: if met {
                        ThresholdState::Met
                    } else {
                        ThresholdState::Clear
                    },
                    window_min: self.available[i],
                }
            })
            .collect();
        let condition =
            |kind: ConditionType, on: bool, reason_on: &str, reason_off: &str| Condition {
                kind,
                status: if on {
                    ConditionStatus::True
                } else {
                    ConditionStatus::False
                },
                reason: if on { reason_on } else { reason_off }.into(),
                message: if on {
                    "memory.available is below the hard threshold of 100Mi".into()
                } else {
                    String::new()
                },
                last_transition_ms: if kind == ConditionType::MemoryPressure {
                    self.pressure_since_ms
                } else {
                    self.info.boot_time_ms
                },
            };
        NodeReport {
            info: self.info.clone(),
            capacity: self.capacity,
            allocatable: self.allocatable,
            conditions: vec![
                condition(
                    ConditionType::MemoryPressure,
                    self.memory_pressure,
                    "NodeHasInsufficientMemory",
                    "NodeHasSufficientMemory",
                ),
                condition(
                    ConditionType::DiskPressure,
                    false,
                    "NodeHasDiskPressure",
                    "NodeHasNoDiskPressure",
                ),
                condition(
                    ConditionType::PidPressure,
                    false,
                    "NodeHasInsufficientPID",
                    "NodeHasSufficientPID",
                ),
            ],
            signals,
            labels: self.labels.clone(),
            images: Vec::new(),
        }
    }
}

// ---- operator calls ----

/// One admin call, as `outpostctl` makes it (node listings arrive paged).
async fn admin_call(
    endpoint: &quinn::Endpoint,
    cfg: &ClientConfig,
    remote: SocketAddr,
    req: AdminRequest,
) -> Result<AdminResponse> {
    outpost_controller::client::call_on(endpoint, cfg, remote, req).await
}

/// One `ListNodes` call as `outpostctl get nodes` makes it.
struct Listing {
    nodes: usize,
    /// Size of the answer's frame payload, against `MAX_FRAME`.
    frame_bytes: usize,
    took: Duration,
}

async fn list_nodes(
    endpoint: &quinn::Endpoint,
    cfg: &ClientConfig,
    remote: SocketAddr,
) -> Result<Listing, String> {
    let started = Instant::now();
    let resp = admin_call(endpoint, cfg, remote, AdminRequest::ListNodes)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let took = started.elapsed();
    let AdminResponse::Nodes(nodes) = resp else {
        return Err("unexpected answer to ListNodes".into());
    };
    // The controller sends listings in pages; add up what a page-sized
    // encoding costs (the page size does not change the per-node figure).
    let mut frame_bytes = 0;
    for page in nodes.chunks(500) {
        frame_bytes +=
            outpost_proto::frame::encode(&Message::Response(AdminResponse::Nodes(page.to_vec())))
                .map(|f| f.len() - outpost_proto::frame::HEADER_LEN)
                .map_err(|e| e.to_string())?;
    }
    Ok(Listing {
        nodes: nodes.len(),
        frame_bytes,
        took,
    })
}

/// How many uses the controller recorded on the loadgen's token.
async fn token_use(
    endpoint: &quinn::Endpoint,
    cfg: &ClientConfig,
    remote: SocketAddr,
    id: &str,
) -> Option<(u32, Option<u32>)> {
    match admin_call(endpoint, cfg, remote, AdminRequest::ListTokens).await {
        Ok(AdminResponse::Tokens(list)) => list
            .into_iter()
            .find(|t| t.id == id)
            .map(|t| (t.used, t.uses_left)),
        Ok(_) => None,
        Err(e) => {
            eprintln!("listing tokens after the run failed: {e:#}");
            None
        }
    }
}

// ---- measurements and summary ----

/// Counters sampled at the edges of the steady-state window.
struct Window {
    at: Instant,
    heartbeats: u64,
    reports: u64,
    cpu_ticks: Option<u64>,
    quic: QuicTotals,
    /// Kernel drop counters of the loadgen's and the controller's sockets.
    drops: (Option<u64>, Option<u64>),
}

#[derive(Default, Clone, Copy)]
struct QuicTotals {
    tx_datagrams: u64,
    rx_datagrams: u64,
    rx_pings: u64,
    lost_packets: u64,
}

impl Window {
    fn sample(ctx: &Ctx, local_port: u16, controller_port: u16) -> Window {
        let mut quic = QuicTotals::default();
        for c in ctx.conns.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let s = c.stats();
            quic.tx_datagrams += s.udp_tx.datagrams;
            quic.rx_datagrams += s.udp_rx.datagrams;
            quic.rx_pings += s.frame_rx.ping;
            quic.lost_packets += s.path.lost_packets;
        }
        Window {
            at: Instant::now(),
            heartbeats: ctx.stats.heartbeats.load(Ordering::Relaxed),
            reports: ctx.stats.reports.load(Ordering::Relaxed),
            cpu_ticks: own_cpu_ticks(),
            quic,
            drops: (udp_drops(local_port), udp_drops(controller_port)),
        }
    }
}

/// utime + stime of this process in clock ticks (USER_HZ, 100 on Linux).
fn own_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn own_status(field: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The kernel's drop counter of the UDP socket bound to `port` on this host
/// (last column of /proc/net/udp and udp6).
fn udp_drops(port: u16) -> Option<u64> {
    let want = format!(":{port:04X}");
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(Path::new(p)).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    let local = f.get(1)?;
                    if local.ends_with(&want) {
                        f.last()?.parse::<u64>().ok()
                    } else {
                        None
                    }
                })
                .collect::<Vec<_>>()
        })
        .reduce(|a, b| a + b)
}

/// Latency distribution of successful attempts, in ms.
#[derive(Default, Clone, Copy)]
struct Percentiles {
    p50: u64,
    p90: u64,
    p99: u64,
    max: u64,
}

impl Percentiles {
    fn of(list: &Mutex<Vec<u64>>) -> Percentiles {
        let mut v = list.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort_unstable();
        let at = |q: usize| v[(v.len() * q / 100).min(v.len() - 1)];
        Percentiles {
            p50: at(50),
            p90: at(90),
            p99: at(99),
            max: v[v.len() - 1],
        }
    }

    fn text(&self) -> String {
        format!(
            "p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
            self.p50, self.p90, self.p99, self.max
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({"p50": self.p50, "p90": self.p90, "p99": self.p99, "max": self.max})
    }
}

struct Summary {
    agents: usize,
    enrolled: usize,
    enrol_failed: usize,
    enrol_secs: f64,
    connected: usize,
    connect_failed: usize,
    connect_secs: f64,
    hold_secs: f64,
    live_at_end: usize,
    dropped: usize,
    heartbeat_ms: u64,
    heartbeats_per_sec: f64,
    reports_per_sec: f64,
    heartbeats_total: u64,
    reports_total: u64,
    loadgen_cpu_percent: Option<f64>,
    loadgen_rss_kib: Option<u64>,
    loadgen_hwm_kib: Option<u64>,
    quic_window: QuicTotals,
    drops_window: (Option<u64>, Option<u64>),
    /// Drops from the start until all sessions were up.
    drops_startup: (Option<u64>, Option<u64>),
    /// Drops while all sessions close at once.
    drops_closing: (Option<u64>, Option<u64>),
    /// QUIC packets lost (and retransmitted) on the live sessions up to the
    /// start of the window: handshakes, hellos and first reports.
    lost_startup: u64,
    enrol_ms: Percentiles,
    connect_ms: Percentiles,
    token_used: Option<(u32, Option<u32>)>,
    listing: Result<Listing, String>,
    failures: Vec<(Phase, String, usize)>,
    deployed: Option<Deployed>,
    reconnect: Option<Reconnects>,
}

/// What `--reconnect` saw.
struct Reconnects {
    back: usize,
    attempts: u64,
    failed: u64,
    /// Unix ms; 0 if it did not happen.
    first_drop_ms: u64,
    all_back_ms: u64,
    per_session_ms: Percentiles,
}

impl Summary {
    #[allow(clippy::too_many_arguments)]
    fn build(
        ctx: &Ctx,
        args: &Args,
        enrol_time: Duration,
        connect_time: Duration,
        live_at_end: usize,
        start_drops: (Option<u64>, Option<u64>),
        w0: &Window,
        w1: &Window,
        token_used: Option<(u32, Option<u32>)>,
        listing: Result<Listing, String>,
    ) -> Summary {
        let s = &ctx.stats;
        let secs = w1.at.duration_since(w0.at).as_secs_f64().max(1e-3);
        let delta = |a: Option<u64>, b: Option<u64>| b.zip(a).map(|(b, a)| b.saturating_sub(a));
        let failures = s
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((phase, why), n)| (*phase, why.clone(), *n))
            .collect();
        Summary {
            agents: args.agents,
            enrolled: s.enrolled.load(Ordering::Relaxed),
            enrol_failed: s.enrol_failed.load(Ordering::Relaxed),
            enrol_secs: enrol_time.as_secs_f64(),
            connected: s.connected.load(Ordering::Relaxed),
            connect_failed: s.connect_failed.load(Ordering::Relaxed),
            connect_secs: connect_time.as_secs_f64(),
            hold_secs: secs,
            live_at_end,
            dropped: s.dropped.load(Ordering::Relaxed),
            heartbeat_ms: ctx
                .heartbeat
                .map_or(s.welcome_heartbeat_ms.load(Ordering::Relaxed), millis),
            heartbeats_per_sec: (w1.heartbeats - w0.heartbeats) as f64 / secs,
            reports_per_sec: (w1.reports - w0.reports) as f64 / secs,
            heartbeats_total: s.heartbeats.load(Ordering::Relaxed),
            reports_total: s.reports.load(Ordering::Relaxed),
            // USER_HZ is 100 on every Linux we run on.
            loadgen_cpu_percent: delta(w0.cpu_ticks, w1.cpu_ticks).map(|t| t as f64 / secs),
            loadgen_rss_kib: own_status("VmRSS:"),
            loadgen_hwm_kib: own_status("VmHWM:"),
            quic_window: QuicTotals {
                tx_datagrams: w1.quic.tx_datagrams.saturating_sub(w0.quic.tx_datagrams),
                rx_datagrams: w1.quic.rx_datagrams.saturating_sub(w0.quic.rx_datagrams),
                rx_pings: w1.quic.rx_pings.saturating_sub(w0.quic.rx_pings),
                lost_packets: w1.quic.lost_packets.saturating_sub(w0.quic.lost_packets),
            },
            drops_window: (delta(w0.drops.0, w1.drops.0), delta(w0.drops.1, w1.drops.1)),
            drops_startup: (
                delta(start_drops.0, w0.drops.0),
                delta(start_drops.1, w0.drops.1),
            ),
            drops_closing: (None, None),
            lost_startup: w0.quic.lost_packets,
            enrol_ms: Percentiles::of(&s.enrol_ms),
            connect_ms: Percentiles::of(&s.connect_ms),
            token_used,
            listing,
            failures,
            deployed: None,
            reconnect: args.reconnect.then(|| Reconnects {
                back: s.reconnected.load(Ordering::Relaxed),
                attempts: s.reconnect_attempts.load(Ordering::Relaxed),
                failed: s.reconnect_failed.load(Ordering::Relaxed),
                first_drop_ms: s.first_drop_ms.load(Ordering::Relaxed),
                all_back_ms: s.all_back_ms.load(Ordering::Relaxed),
                per_session_ms: Percentiles::of(&s.reconnect_ms),
            }),
        }
    }

    fn text(&self) -> String {
        let opt = |v: Option<u64>| v.map_or("n/a".to_string(), |v| v.to_string());
        let mut out = String::new();
        out += &format!("outpost-loadgen summary ({} agents)\n", self.agents);
        out += &format!(
            "  enrolment:   {}/{} in {:.1}s ({:.0}/s), {} failed\n",
            self.enrolled,
            self.agents,
            self.enrol_secs,
            self.enrolled as f64 / self.enrol_secs.max(1e-3),
            self.enrol_failed
        );
        out += &format!("               per enrolment: {}\n", self.enrol_ms.text());
        out += &format!(
            "  connect:     {}/{} in {:.1}s ({:.0}/s), {} failed\n",
            self.connected,
            self.agents,
            self.connect_secs,
            self.connected as f64 / self.connect_secs.max(1e-3),
            self.connect_failed
        );
        out += &format!(
            "               per session (handshake to Welcome): {}\n",
            self.connect_ms.text()
        );
        out += &format!(
            "               {} QUIC packets lost; UDP drops: loadgen socket {}, controller socket {}\n",
            self.lost_startup,
            opt(self.drops_startup.0),
            opt(self.drops_startup.1)
        );
        out += &format!(
            "  steady:      {:.1}s, {} sessions live at the end, {} dropped\n",
            self.hold_secs, self.live_at_end, self.dropped
        );
        out += &format!(
            "  heartbeats:  every {} ms; {:.1}/s sent in the window (ideal {:.1}/s); {} in total\n",
            self.heartbeat_ms,
            self.heartbeats_per_sec,
            self.live_at_end as f64 * 1000.0 / self.heartbeat_ms.max(1) as f64,
            self.heartbeats_total
        );
        out += &format!(
            "  reports:     {:.1}/s in the window; {} in total\n",
            self.reports_per_sec, self.reports_total
        );
        let q = &self.quic_window;
        out += &format!(
            "  QUIC window: {} datagrams sent, {} received ({} keep-alive PINGs from the controller), {} packets lost\n",
            q.tx_datagrams, q.rx_datagrams, q.rx_pings, q.lost_packets
        );
        out += &format!(
            "  UDP drops in the window: loadgen socket {}, controller socket {}\n",
            opt(self.drops_window.0),
            opt(self.drops_window.1)
        );
        out += &format!(
            "  loadgen:     {} % of one core in the window, RSS {} KiB (peak {} KiB)\n",
            self.loadgen_cpu_percent
                .map_or("n/a".into(), |c| format!("{c:.1}")),
            opt(self.loadgen_rss_kib),
            opt(self.loadgen_hwm_kib)
        );
        match self.token_used {
            Some((used, left)) => {
                out += &format!(
                    "  token:       controller recorded {used} uses ({} left) for {} successful enrolments{}\n",
                    left.map_or("unlimited".into(), |l| l.to_string()),
                    self.enrolled,
                    if used as usize == self.enrolled { "" } else { "  <-- MISMATCH" }
                );
            }
            None => out += "  token:       could not read its use count\n",
        }
        out += &format!(
            "  closing:     UDP drops while all sessions closed: loadgen socket {}, controller socket {}\n",
            opt(self.drops_closing.0),
            opt(self.drops_closing.1)
        );
        match &self.listing {
            Ok(l) => {
                out += &format!(
                    "  listing:     ListNodes with all sessions live: {} nodes, {} bytes encoded \
                     ({} per node; sent in pages under the {}-byte frame limit), {} ms\n",
                    l.nodes,
                    l.frame_bytes,
                    l.frame_bytes / l.nodes.max(1),
                    MAX_FRAME,
                    l.took.as_millis()
                );
            }
            Err(e) => {
                out += &format!("  listing:     ListNodes with all sessions live FAILED: {e}\n")
            }
        }
        if let Some(r) = &self.reconnect {
            let back = if r.all_back_ms == 0 {
                "not all back".to_string()
            } else {
                format!(
                    "all back {:.1}s after the first drop (at {} Unix ms)",
                    r.all_back_ms.saturating_sub(r.first_drop_ms) as f64 / 1000.0,
                    r.all_back_ms
                )
            };
            out += &format!(
                "  reconnect:   {} dropped, {} back, {back}; {} attempts, {} failed\n",
                self.dropped, r.back, r.attempts, r.failed
            );
            out += &format!(
                "               per session (drop to Welcome again): {}\n",
                r.per_session_ms.text()
            );
        }
        if let Some(d) = &self.deployed {
            let secs = |t: Option<Duration>| {
                t.map_or("n/a".to_string(), |t| format!("{:.2}s", t.as_secs_f64()))
            };
            out += &format!(
                "  placement:   {} replicas: all delivered to their agents in {} ({}), all available in {}{}\n",
                d.replicas,
                secs(d.delivered),
                d.delivered.map_or("n/a".into(), |t| format!("{:.0} placements/s", d.replicas as f64 / t.as_secs_f64().max(1e-3))),
                secs(d.available),
                d.error.as_ref().map(|e| format!("; FAILED: {e}")).unwrap_or_default()
            );
        }
        if self.failures.is_empty() {
            out += "  failures:    none\n";
        } else {
            out += "  failed attempts by phase and reason:\n";
            for (phase, why, n) in &self.failures {
                out += &format!("    {:>6} x {:<7} {why}\n", n, phase.name());
            }
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        let q = &self.quic_window;
        serde_json::json!({
            "agents": self.agents,
            "deployReplicas": self.deployed.as_ref().map(|d| d.replicas),
            "deployDeliveredSeconds": self.deployed.as_ref().and_then(|d| d.delivered).map(|t| t.as_secs_f64()),
            "deployAvailableSeconds": self.deployed.as_ref().and_then(|d| d.available).map(|t| t.as_secs_f64()),
            "deployError": self.deployed.as_ref().and_then(|d| d.error.clone()),
            "enrolled": self.enrolled,
            "enrolFailed": self.enrol_failed,
            "enrolSeconds": self.enrol_secs,
            "enrolMs": self.enrol_ms.json(),
            "connectMs": self.connect_ms.json(),
            "startupLostPackets": self.lost_startup,
            "udpDropsClosing": {
                "loadgen": self.drops_closing.0,
                "controller": self.drops_closing.1,
            },
            "udpDropsStartup": {
                "loadgen": self.drops_startup.0,
                "controller": self.drops_startup.1,
            },
            "connected": self.connected,
            "connectFailed": self.connect_failed,
            "connectSeconds": self.connect_secs,
            "steadySeconds": self.hold_secs,
            "liveAtEnd": self.live_at_end,
            "dropped": self.dropped,
            "heartbeatMs": self.heartbeat_ms,
            "heartbeatsPerSecond": self.heartbeats_per_sec,
            "reportsPerSecond": self.reports_per_sec,
            "heartbeatsTotal": self.heartbeats_total,
            "reportsTotal": self.reports_total,
            "loadgenCpuPercent": self.loadgen_cpu_percent,
            "loadgenRssKiB": self.loadgen_rss_kib,
            "loadgenPeakRssKiB": self.loadgen_hwm_kib,
            "quicWindow": {
                "txDatagrams": q.tx_datagrams,
                "rxDatagrams": q.rx_datagrams,
                "rxPings": q.rx_pings,
                "lostPackets": q.lost_packets,
            },
            "udpDropsWindow": {
                "loadgen": self.drops_window.0,
                "controller": self.drops_window.1,
            },
            "listNodes": match &self.listing {
                Ok(l) => serde_json::json!({
                    "nodes": l.nodes,
                    "frameBytes": l.frame_bytes,
                    "ms": millis(l.took),
                }),
                Err(e) => serde_json::json!({ "error": e }),
            },
            "reconnect": self.reconnect.as_ref().map(|r| serde_json::json!({
                "back": r.back,
                "attempts": r.attempts,
                "failed": r.failed,
                "firstDropUnixMs": r.first_drop_ms,
                "allBackUnixMs": (r.all_back_ms != 0).then_some(r.all_back_ms),
                "perSessionMs": r.per_session_ms.json(),
            })),
            "tokenUsed": self.token_used.map(|t| t.0),
            "tokenUsesLeft": self.token_used.and_then(|t| t.1),
            "failures": self.failures.iter().map(|(p, why, n)| serde_json::json!({
                "phase": p.name(), "reason": why, "count": n
            })).collect::<Vec<_>>(),
        })
    }
}
