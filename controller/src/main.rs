//! `outpost-controller`: create a cluster (`init`), run it (`serve`), or run
//! a whole single-box cluster with a local agent in one command (`up`).

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use outpost_controller::clientconfig::{self, cert_pem, ClientConfig};
use outpost_controller::cluster::{self as state, Controller, Settings};
use outpost_controller::controllers::plane::{self, ControlPlane};
use outpost_controller::events::EventLog;
use outpost_controller::metrics;
use outpost_controller::server::Server;
use outpost_controller::store::{redb::RedbStore, Store};
use outpost_controller::tokens::NewToken;
use outpost_proto::units::parse_duration;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::{info, warn};

#[derive(Parser, Debug)]
#[command(
    name = "outpost-controller",
    version,
    about = "Outpost regional controller"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a cluster: CA, server certificate, admin certificate and outpostctl config.
    Init(InitArgs),
    /// Serve agents and operators.
    Serve(ServeArgs),
    /// Single-box cluster: init if needed, serve, and run one agent on this host.
    Up(UpArgs),
    /// Issue a new server certificate from the cluster CA (same names, plus
    /// --san) on a stopped controller's data directory; agents pin the CA,
    /// so none needs re-enrolling. A running controller renews in place
    /// with `outpostctl admin renew-server-cert`.
    RenewServerCert(RenewServerCertArgs),
}

#[derive(Args, Debug)]
struct RenewServerCertArgs {
    #[arg(long, env = "OUTPOST_DATA_DIR")]
    data_dir: PathBuf,
    /// More DNS names or IP addresses for the new certificate (the current
    /// ones are kept).
    #[arg(long = "san", value_delimiter = ',')]
    sans: Vec<String>,
    /// Lifetime of the new certificate.
    #[arg(long, default_value = "87600h", value_parser = parse_duration)]
    valid_for: Duration,
}

#[derive(Args, Debug)]
struct InitArgs {
    /// Directory for the state store and generated files.
    #[arg(long, env = "OUTPOST_DATA_DIR")]
    data_dir: PathBuf,
    /// Extra DNS names or IP addresses agents use to reach the controller
    /// (localhost, 127.0.0.1, ::1 and this host's name are always included).
    #[arg(long = "san", value_delimiter = ',')]
    sans: Vec<String>,
    /// Cluster name, shown in the CA certificate.
    #[arg(long, default_value = "outpost")]
    cluster_name: String,
    /// Address written into the outpostctl config.
    #[arg(long, default_value = "127.0.0.1:7443")]
    advertise: String,
    /// Where to write the outpostctl config (default ~/.outpost/config; an
    /// existing file is left alone unless --overwrite-config).
    #[arg(long)]
    admin_config: Option<PathBuf>,
    /// Replace an existing outpostctl config file.
    #[arg(long)]
    overwrite_config: bool,
}

#[derive(Args, Debug, Clone)]
struct ServeArgs {
    #[arg(long, env = "OUTPOST_DATA_DIR")]
    data_dir: PathBuf,
    /// QUIC endpoint for agents and operators (UDP).
    #[arg(long, default_value = "0.0.0.0:7443")]
    listen: SocketAddr,
    /// HTTP endpoint for /metrics and /healthz; "off" disables it.
    #[arg(long, default_value = "127.0.0.1:7080")]
    metrics_listen: String,
    #[command(flatten)]
    tuning: Tuning,
}

#[derive(Args, Debug, Clone)]
struct Tuning {
    /// How often agents heartbeat.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    heartbeat_interval: Duration,
    /// A node with no heartbeat for this long turns NotReady.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    node_grace_period: Duration,
    /// A silent QUIC connection is dropped after this long (keep-alives at a third of it).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Lifetime of node certificates; agents renew at two thirds of it.
    #[arg(long, default_value = "8760h", value_parser = parse_duration)]
    node_cert_ttl: Duration,
    /// How the scheduler scores node resources: least-allocated spreads
    /// load; most-allocated packs pods onto fewer boxes (frees whole boxes
    /// for scale-in).
    #[arg(long, default_value = "least-allocated")]
    scheduler_strategy: outpost_controller::scheduler::Strategy,
    /// Range Services' cluster IPs are allocated from.
    #[arg(long, default_value = "10.43.0.0/16")]
    service_cidr: outpost_controller::api::admission::Ipv4Cidr,
    /// Range node ports of NodePort and LoadBalancer Services are allocated from.
    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
    service_node_port_range: std::ops::RangeInclusive<u16>,
    /// Seconds a pod stays counted on a node whose agent reports it not
    /// ready before its owner replaces it (the pod's own toleration of
    /// node.kubernetes.io/not-ready wins).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(i64).range(0..=31_536_000))]
    default_not_ready_toleration_seconds: i64,
    /// Seconds a pod stays counted on a node nobody hears from (lease
    /// expired) before its owner replaces it elsewhere; the pod keeps
    /// running there, and only one copy is kept when the node is back (the
    /// pod's own toleration of node.kubernetes.io/unreachable wins).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(i64).range(0..=31_536_000))]
    default_unreachable_toleration_seconds: i64,
    /// New connections set up at once (QUIC/TLS handshake to established
    /// session); ten times as many more wait up to 5 s, the rest are
    /// refused and their agents retry with back-off. Default: 1,024 per
    /// core. 0 turns handshake admission off (every connection is set up
    /// at once).
    #[arg(long)]
    handshake_limit: Option<usize>,
}

fn parse_port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let bad = || format!("{s:?} is not a port range such as 30000-32767");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u16, u16) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

#[derive(Args, Debug)]
struct UpArgs {
    /// Directory for the controller's store and the local agent's data.
    #[arg(long, default_value = ".outpost")]
    data_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:7443")]
    listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:7080")]
    metrics_listen: String,
    /// Name of the local node (default: this host's name).
    #[arg(long)]
    node_name: Option<String>,
    /// Labels for the local node, e.g. site=lab.
    #[arg(long, default_value = "site=local")]
    labels: String,
    /// The agent binary (default: outpost-agent next to this binary).
    #[arg(long)]
    agent_bin: Option<PathBuf>,
    #[command(flatten)]
    tuning: Tuning,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,quinn=warn,rustls=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Init(a) => init(&a),
        Cmd::Serve(a) => runtime().and_then(|rt| rt.block_on(serve(a, None))),
        Cmd::Up(a) => runtime().and_then(|rt| rt.block_on(up(a))),
        Cmd::RenewServerCert(a) => renew_server_cert(&a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join("state.redb")
}

fn open_store(data_dir: &Path) -> Result<Arc<dyn Store>> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let store = RedbStore::open(&store_path(data_dir)).with_context(|| {
        format!(
            "opening the state store in {} (is another outpost-controller using it?)",
            data_dir.display()
        )
    })?;
    Ok(Arc::new(store))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn init(a: &InitArgs) -> Result<()> {
    let store = open_store(&a.data_dir)?;
    let mut sans = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    let host = hostname();
    if !host.is_empty() {
        sans.push(host);
    }
    for s in &a.sans {
        if !s.is_empty() && !sans.contains(s) {
            sans.push(s.clone());
        }
    }
    let ca = state::init_pki(
        store.as_ref(),
        &a.cluster_name,
        &sans,
        Duration::from_secs(10 * 365 * 24 * 3600),
    )?;
    let (admin, admin_key) = ca.issue_admin(
        "admin",
        SystemTime::now(),
        outpost_controller::admins::DEFAULT_VALIDITY,
    )?;
    state::record_first_admin(store.as_ref(), &admin, "admin")?;
    let server_name = a
        .advertise
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
        .unwrap_or_else(|| "localhost".into());
    let config = ClientConfig {
        controller: a.advertise.clone(),
        server_name,
        ca: cert_pem(ca.cert_der()),
        cert: cert_pem(&admin.cert_der),
        key: admin_key,
    };
    let local = a.data_dir.join("admin.conf");
    config
        .save(&local)
        .with_context(|| format!("writing {}", local.display()))?;
    std::fs::write(a.data_dir.join("ca.crt"), cert_pem(ca.cert_der())).context("writing ca.crt")?;
    let target = a.admin_config.clone().or_else(clientconfig::default_path);
    let mut config_path = local.clone();
    match target {
        Some(t) if !t.exists() || a.overwrite_config => {
            config.save(&t).with_context(|| format!("writing {}", t.display()))?;
            config_path = t;
        }
        Some(t) => eprintln!(
            "note: {} already exists and was left alone; use `export OUTPOST_CONFIG={}` or re-run with --overwrite-config",
            t.display(),
            local.display()
        ),
        None => {}
    }
    let ca_hash = ca.hash();
    println!("Cluster initialised in {}", a.data_dir.display());
    println!("  CA hash:          {ca_hash}");
    println!("  server names:     {}", sans.join(", "));
    println!("  outpostctl config: {}", config_path.display());
    println!(
        "Next: outpost-controller serve --data-dir {}",
        a.data_dir.display()
    );
    Ok(())
}

fn renew_server_cert(a: &RenewServerCertArgs) -> Result<()> {
    let path = store_path(&a.data_dir);
    if !path.exists() {
        bail!(
            "{} holds no cluster; run `outpost-controller init --data-dir {}` first",
            a.data_dir.display(),
            a.data_dir.display()
        );
    }
    let store = RedbStore::open(&path).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the state store in {} ({e}); if the controller is running, renew in place with              `outpostctl admin renew-server-cert` (new connections get the new certificate, agents stay connected)",
            a.data_dir.display()
        )
    })?;
    let (ca, current) = state::load_pki(&store)?;
    let (_, issued, ops) = state::renew_server_identity(&ca, &current, &a.sans, a.valid_for)
        .map_err(|e| anyhow::anyhow!(e.message))?;
    store.txn(outpost_controller::store::Txn::ops(ops))?;
    let names = outpost_controller::pki::server_names(&issued.cert_der)?;
    println!("server certificate renewed in {}", a.data_dir.display());
    println!("  serial:  {}", issued.serial);
    println!("  names:   {}", names.join(", "));
    println!(
        "  expires: {}",
        outpost_proto::units::rfc3339(issued.not_after_ms)
    );
    println!(
        "The controller serves it from its next start; agents keep their CA pin and certificates."
    );
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// Runs the controller until a shutdown signal (or until `until` resolves).
async fn serve(
    a: ServeArgs,
    on_ready: Option<tokio::sync::oneshot::Sender<Arc<Controller>>>,
) -> Result<()> {
    let store = open_store(&a.data_dir)?;
    let (ca, ident) = state::load_pki(store.as_ref())?;
    let default_tolerations = outpost_controller::api::admission::DefaultTolerations {
        not_ready_seconds: a.tuning.default_not_ready_toleration_seconds,
        unreachable_seconds: a.tuning.default_unreachable_toleration_seconds,
    };
    let settings = Settings {
        heartbeat_interval: a.tuning.heartbeat_interval,
        grace: a.tuning.node_grace_period,
        node_cert_ttl: a.tuning.node_cert_ttl,
        admission: outpost_controller::api::admission::AdmissionConfig {
            service_cidr: a.tuning.service_cidr,
            node_ports: a.tuning.service_node_port_range.clone(),
            default_tolerations,
        },
    };
    if settings.grace <= settings.heartbeat_interval {
        bail!(
            "--node-grace-period ({:?}) must be longer than --heartbeat-interval ({:?})",
            settings.grace,
            settings.heartbeat_interval
        );
    }
    let events = Arc::new(std::sync::Mutex::new(EventLog::load(store.as_ref())?));
    let mut plane = ControlPlane::new(store.clone(), events.clone())?;
    let mut controllers = outpost_controller::controllers::ControllersConfig::default();
    controllers.replicaset.default_tolerations = default_tolerations;
    controllers.node_lifecycle.default_tolerations = default_tolerations;
    for c in outpost_controller::controllers::standard(&controllers) {
        plane.add_controller(c);
    }
    plane.set_scheduler(Box::new(outpost_controller::scheduler::Scheduler::new(
        outpost_controller::scheduler::SchedulerConfig {
            strategy: a.tuning.scheduler_strategy,
            ..Default::default()
        },
    )));
    let ctrl = Arc::new(Controller::open(
        store,
        ca,
        settings,
        events,
        plane.cache(),
        plane.inbox(),
    )?);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let control_loop = {
        let ctrl = ctrl.clone();
        plane::run(
            plane,
            tokio::runtime::Handle::current(),
            ctrl.inbox_notify.clone(),
            stop.clone(),
            move |report, cache| {
                ctrl.agents.wake(&report.nodes_touched);
                if report.routes_changed {
                    ctrl.routes_changed.send_modify(|n| *n += 1);
                }
                ctrl.cache_revision.send_replace(cache.revision());
            },
        )
    };
    let server_config =
        outpost_controller::server::quic_server_config(&ident, a.tuning.idle_timeout)?;
    let endpoint = bind_endpoint(server_config, a.listen)?;
    let server = match a.tuning.handshake_limit {
        None => Server::new(ctrl.clone()),
        Some(0) => Server::with_handshakes(ctrl.clone(), None),
        Some(n) => Server::with_handshakes(
            ctrl.clone(),
            Some(outpost_controller::handshake::HandshakeLimits::with_concurrent(n)),
        ),
    };
    server.serve_tls(endpoint.clone(), ident, a.tuning.idle_timeout);
    tokio::spawn(server.clone().run(endpoint.clone()));
    if a.metrics_listen != "off" {
        let listener = tokio::net::TcpListener::bind(&a.metrics_listen)
            .await
            .with_context(|| format!("binding --metrics-listen {}", a.metrics_listen))?;
        info!("metrics on http://{}/metrics", listener.local_addr()?);
        tokio::spawn(metrics::serve(listener, ctrl.clone()));
    }
    {
        let ctrl = ctrl.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                ctrl.tick().await;
            }
        });
    }
    info!(listen = %endpoint.local_addr()?, ca_hash = ctrl.ca_hash(), "controller serving");
    if let Some(tx) = on_ready {
        let _ = tx.send(ctrl.clone());
    }
    shutdown_signal().await;
    info!("shutting down");
    server.close_all();
    endpoint.close(
        outpost_proto::close::SHUTDOWN.into(),
        b"controller shutting down",
    );
    let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.wait_idle()).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    ctrl.inbox_notify.notify_one();
    let _ = tokio::task::spawn_blocking(move || control_loop.join()).await;
    Ok(())
}

/// UDP receive buffer asked for the controller's socket. When thousands of
/// agents reconnect at once (a controller restart) their handshakes arrive
/// faster than one core drains them; the kernel default (about 208 KiB)
/// dropped 12,831 datagrams while 5,000 agents connected (docs/BENCHMARKS.md).
const UDP_RECV_BUFFER: usize = 8 << 20;

fn bind_endpoint(config: quinn::ServerConfig, listen: SocketAddr) -> Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(listen)
        .with_context(|| format!("binding the QUIC endpoint on {listen} (UDP)"))?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    if let Err(e) = state.set_recv_buffer_size((&socket).into(), UDP_RECV_BUFFER) {
        warn!("could not enlarge the UDP receive buffer: {e}");
    }
    // Linux reports twice what it grants, and caps the request at rmem_max.
    let granted = state.recv_buffer_size((&socket).into()).unwrap_or(0) / 2;
    if granted < UDP_RECV_BUFFER / 2 {
        warn!(
            "UDP receive buffer is {granted} bytes; raise net.core.rmem_max to at least {UDP_RECV_BUFFER} so a fleet reconnecting at once is not dropped"
        );
    }
    // The socket is read on a thread of its own, so a reconnect storm's
    // handshakes cannot starve it (outpost_proto::endpoint_thread).
    let runtime = outpost_proto::endpoint_thread::EndpointThread::new("quic-endpoint")
        .context("starting the QUIC endpoint's thread")?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        runtime,
    )
    .with_context(|| format!("starting the QUIC endpoint on {listen}"))
}

fn node_name_from_host() -> String {
    outpost_proto::names::node_name_from_hostname(&hostname(), "local")
}

async fn up(a: UpArgs) -> Result<()> {
    let data_dir = std::path::absolute(&a.data_dir).context("resolving --data-dir")?;
    let agent_dir = data_dir.join("agent");
    let fresh = !store_path(&data_dir).exists();
    if fresh {
        init(&InitArgs {
            data_dir: data_dir.clone(),
            sans: Vec::new(),
            cluster_name: "outpost".into(),
            advertise: a.listen.to_string(),
            admin_config: None,
            overwrite_config: false,
        })?;
    }
    let agent_bin = match &a.agent_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("outpost-agent"))
            .context("locating outpost-agent")?,
    };
    if !agent_bin.exists() {
        bail!(
            "agent binary {} not found; build it (cargo build --release) or pass --agent-bin",
            agent_bin.display()
        );
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let serve_args = ServeArgs {
        data_dir: data_dir.clone(),
        listen: a.listen,
        metrics_listen: a.metrics_listen.clone(),
        tuning: a.tuning.clone(),
    };
    let mut serving = tokio::spawn(serve(serve_args, Some(tx)));
    let ctrl = match rx.await {
        Ok(c) => c,
        Err(_) => return (&mut serving).await.context("controller task")?,
    };
    let mut cmd = tokio::process::Command::new(&agent_bin);
    cmd.arg("--controller")
        .arg(a.listen.to_string())
        .arg("--data-dir")
        .arg(&agent_dir)
        .kill_on_drop(true);
    if !agent_dir.join("identity.pem").exists() {
        let (token, _) = ctrl
            .create_token(NewToken {
                ttl_ms: 10 * 60 * 1000,
                uses: Some(1),
                labels: Default::default(),
                description: "single-box agent (outpost-controller up)".into(),
            })
            .await
            .map_err(|e| anyhow::anyhow!("creating the local agent's token: {}", e.message))?;
        cmd.arg("--token")
            .arg(token)
            .arg("--ca-hash")
            .arg(ctrl.ca_hash())
            .arg("--name")
            .arg(a.node_name.clone().unwrap_or_else(node_name_from_host));
    }
    // Labels are the agent's own settings, asserted on every start.
    cmd.arg("--labels").arg(&a.labels);
    let mut agent = cmd
        .spawn()
        .with_context(|| format!("starting {}", agent_bin.display()))?;
    let config = clientconfig::resolve_path(None).unwrap_or_else(|| data_dir.join("admin.conf"));
    eprintln!(
        "\nOutpost is up: controller on {} (UDP), agent data in {}.\nIn another terminal: outpostctl get nodes   (config: {}; or OUTPOST_CONFIG={})\nStop with Ctrl-C.\n",
        a.listen,
        agent_dir.display(),
        config.display(),
        data_dir.join("admin.conf").display()
    );
    tokio::select! {
        res = &mut serving => {
            let _ = agent.start_kill();
            res.context("controller task")??;
        }
        status = agent.wait() => {
            warn!("the local agent exited ({}); the controller keeps serving, Ctrl-C to stop", status.map(|s| s.to_string()).unwrap_or_default());
            return serving.await.context("controller task")?;
        }
    }
    let _ = agent.wait().await;
    Ok(())
}
