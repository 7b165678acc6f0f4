//! `outpostctl`: the operator's CLI, with kubectl's habits. Every call is
//! one request on one QUIC stream to the controller, authenticated with
//! the admin certificate from the config file (`--config`,
//! `OUTPOST_CONFIG`, or `~/.outpost/config`).
//!
//! Objects travel as Kubernetes JSON over the generic object API (apply,
//! get, list, delete, watch, scale, cordon); `ctl` turns them into
//! kubectl's tables and descriptions. Errors are printed once, as kubectl
//! prints them (`Error from server (NotFound): ...`, `error: ...`), and
//! every failure exits 1.

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Parser, Subcommand};
use outpost_controller::api::selector::Selector;
use outpost_controller::api::{self, Kind};
use outpost_controller::client::{self, ServerError};
use outpost_controller::clientconfig::{self, ClientConfig};
use outpost_controller::cluster::now_ms;
use outpost_controller::ctl::input::{self, Target};
use outpost_controller::ctl::{self, Format, Layout};
use outpost_controller::drain;
use outpost_proto::units::parse_duration;
use outpost_proto::{
    names, AdminRequest, AdminResponse, ApplyResult, Document, ErrorCode, NodeView, ObjectRef,
    Propagation,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[path = "outpostctl/rollout.rs"]
mod rollout;

#[derive(Parser, Debug)]
#[command(name = "outpostctl", version, about = "Operate an Outpost cluster")]
struct Cli {
    /// Config file (default: $OUTPOST_CONFIG, then ~/.outpost/config).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Output format: kubectl's table, wide (more columns), json (the
    /// stable machine form), yaml, or name (`deployment.apps/web`).
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    output: Format,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List objects: `get TYPE[,TYPE...] [NAME...]` or `get TYPE/NAME...`.
    /// Types: pods (po), deployments (deploy), replicasets (rs), services
    /// (svc), endpoints (ep), priorityclasses (pc), poddisruptionbudgets
    /// (pdb), nodes (no), events (ev), tokens, all.
    Get(GetArgs),
    /// Show objects in detail, each with its events:
    /// `describe TYPE [NAME...]` or `describe TYPE/NAME`.
    Describe(DescribeArgs),
    /// Create or update the objects of Kubernetes manifests (YAML or JSON).
    /// Everything given is applied together: if any object is refused,
    /// nothing changes.
    Apply(ApplyArgs),
    /// Delete objects by name, by label selector, or as manifests name them
    /// (a node's certificates stop being accepted).
    Delete(DeleteArgs),
    /// Set the replica count of deployments or replicasets:
    /// `scale deployment web --replicas 3`.
    Scale(ScaleArgs),
    /// Mark nodes unschedulable: nothing new is placed on them.
    Cordon { nodes: Vec<String> },
    /// Mark nodes schedulable again.
    Uncordon { nodes: Vec<String> },
    /// Cordon a node and evict its pods through the eviction API, which
    /// honours PodDisruptionBudgets (a refused eviction is retried every
    /// 5s); waits until every evicted pod is gone.
    Drain(DrainArgs),
    /// Run a pod with one container (scheduled unless --node names one).
    Run(RunFlags),
    /// Print a container's log, streamed from its node.
    Logs {
        pod: String,
        /// Container (needed when the pod has several).
        #[arg(short = 'c', long)]
        container: Option<String>,
        /// Keep streaming new output.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<u32>,
        /// The previous run's log, after a restart.
        #[arg(short = 'p', long)]
        previous: bool,
        /// Namespace of the pod (default: default).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// cpu and memory in use, from the agents' measurements.
    Top {
        #[arg(value_parser = ["pods", "pod", "po", "nodes", "node", "no"])]
        kind: String,
        /// With pods: only those on this node.
        #[arg(long)]
        node: Option<String>,
        /// With pods: the namespace (default: default).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// With pods: every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Images on the nodes.
    Image {
        #[command(subcommand)]
        cmd: ImageCmd,
    },
    /// Bootstrap tokens for enrolling agents.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Operator certificates (named, with a role: admin or read-only) and
    /// the controller's server certificate.
    Admin {
        #[command(subcommand)]
        cmd: AdminCmd,
    },
    /// Manage the rollout of a deployment: status, history, undo,
    /// restart, pause, resume.
    Rollout {
        #[command(subcommand)]
        cmd: rollout::RolloutCmd,
    },
}

/// Namespace and label selection, as kubectl's `-n`, `-A` and `-l`.
#[derive(clap::Args, Debug, Clone, Default)]
struct Scope {
    /// Namespace (default: default).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Label selector, e.g. app=web,tier!=db.
    #[arg(short = 'l', long, default_value = "")]
    selector: String,
}

impl Scope {
    /// The one namespace named (`default` unless `-n`).
    fn namespace(&self) -> String {
        self.namespace
            .clone()
            .unwrap_or_else(|| api::DEFAULT_NAMESPACE.into())
    }

    /// What a listing asks for: one namespace, or every one with `-A`.
    fn list_namespace(&self) -> Option<String> {
        (!self.all_namespaces).then(|| self.namespace())
    }
}

/// kubectl's `--dry-run[=server|client|none]`: both dry runs ask the
/// controller, which validates and admits everything and writes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DryRun {
    None,
    Client,
    Server,
}

#[derive(clap::Args, Debug, Clone, Default)]
struct DryRunFlag {
    /// Validate and say what would change; change nothing.
    #[arg(
        long = "dry-run",
        value_enum,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "server"
    )]
    dry_run: Option<DryRun>,
}

impl DryRunFlag {
    fn on(&self) -> bool {
        matches!(self.dry_run, Some(DryRun::Client | DryRun::Server))
    }

    fn suffix(&self) -> &'static str {
        if self.on() {
            " (dry run)"
        } else {
            ""
        }
    }
}

#[derive(clap::Args, Debug)]
struct GetArgs {
    /// TYPE[,TYPE...] [NAME...], or TYPE/NAME...
    #[arg(required = true)]
    args: Vec<String>,
    #[command(flatten)]
    scope: Scope,
    /// With pods: only those bound to this node.
    #[arg(long)]
    node: Option<String>,
    /// After listing, print a row for every change, until interrupted.
    #[arg(short = 'w', long)]
    watch: bool,
    /// Print only changes from now on, until interrupted.
    #[arg(long)]
    watch_only: bool,
    /// With --watch and -o json|yaml: each change as
    /// `{"type": "MODIFIED", "object": ...}`.
    #[arg(long)]
    output_watch_events: bool,
    /// With events: only those about this object (e.g. node/edge-1).
    #[arg(long = "for")]
    object: Option<String>,
    /// With events: how many of the newest to show.
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

#[derive(clap::Args, Debug)]
struct DescribeArgs {
    /// TYPE [NAME...], or TYPE/NAME... (no name: every object of the type).
    #[arg(required = true)]
    args: Vec<String>,
    #[command(flatten)]
    scope: Scope,
}

#[derive(clap::Args, Debug)]
struct ApplyArgs {
    /// Manifest file, directory (its .yaml, .yml and .json files) or `-`
    /// for standard input; repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// Read directories' subdirectories too.
    #[arg(short = 'R', long)]
    recursive: bool,
    /// Namespace for objects whose manifests name none (default: default).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[command(flatten)]
    dry_run: DryRunFlag,
}

/// kubectl's `--cascade`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Cascade {
    /// Delete the object now and its dependents after it.
    Background,
    /// Keep the dependents (they lose their owner reference).
    Orphan,
}

#[derive(clap::Args, Debug)]
struct DeleteArgs {
    /// TYPE [NAME...], or TYPE/NAME...
    args: Vec<String>,
    /// Delete the objects these manifests name (file, directory or `-`).
    #[arg(short = 'f', long = "filename")]
    files: Vec<PathBuf>,
    /// With -f: read directories' subdirectories too.
    #[arg(short = 'R', long)]
    recursive: bool,
    #[command(flatten)]
    scope: Scope,
    /// Every object of the type (in the namespace, or every one with -A).
    #[arg(long)]
    all: bool,
    /// What happens to dependents (a Deployment's ReplicaSets, a
    /// ReplicaSet's pods).
    #[arg(long, value_enum, default_value = "background")]
    cascade: Cascade,
    #[command(flatten)]
    dry_run: DryRunFlag,
    /// An object that does not exist is not an error.
    #[arg(long)]
    ignore_not_found: bool,
    /// Seconds a pod gets to stop (recorded as its
    /// deletionGracePeriodSeconds; its node stops the containers with it).
    /// Negative: the pod's own terminationGracePeriodSeconds. 0 is taken
    /// as 1, as kubectl does without --force.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    grace_period: i64,
    /// Stop pods at once (the same as --grace-period 1).
    #[arg(long)]
    now: bool,
}

#[derive(clap::Args, Debug)]
struct DrainArgs {
    /// The node to drain.
    node: String,
    /// Give up after this long (0s: wait for ever).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    timeout: Duration,
    /// Evict pods that declare no controller too (nothing re-creates them).
    #[arg(long)]
    force: bool,
    /// Seconds each pod gets to stop, recorded on the pod as
    /// deletionGracePeriodSeconds; its node's agent stops the containers
    /// with it (-1: the pod's own terminationGracePeriodSeconds).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    grace_period: i64,
    /// Evict pods with emptyDir volumes too (their data is lost).
    #[arg(long)]
    delete_emptydir_data: bool,
    /// Accepted for kubectl's scripts: Outpost has no DaemonSets, so there
    /// is nothing to ignore.
    #[arg(long)]
    ignore_daemonsets: bool,
}

#[derive(clap::Args, Debug)]
struct ScaleArgs {
    /// TYPE NAME... or TYPE/NAME... (deployments and replicasets).
    #[arg(required = true)]
    args: Vec<String>,
    /// The new replica count.
    #[arg(long, required = true)]
    replicas: u32,
    /// Namespace (default: default).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

#[derive(Subcommand, Debug)]
enum ImageCmd {
    /// Stream a `docker save` tarball over the QUIC link to a node or every
    /// connected node of a site, which load it into their engine.
    Push {
        file: PathBuf,
        #[arg(long, conflicts_with = "site", required_unless_present = "site")]
        node: Option<String>,
        #[arg(long)]
        site: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    /// Create a token and print it with the CA hash agents pin.
    Create {
        /// How long the token stays valid.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
        /// How many nodes may enrol with it (default: unlimited until it expires).
        #[arg(long)]
        uses: Option<u32>,
        /// Labels every node enrolled with it gets, e.g. site=shop-12.
        #[arg(long, default_value = "")]
        labels: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by ID; enrolments with it are refused from now on.
    Revoke { id: String },
}

#[derive(Subcommand, Debug)]
enum AdminCmd {
    /// Issue a named operator certificate and write a ready-to-use
    /// outpostctl config for it (mode 0600). The key is made here and
    /// never sent; the controller signs it with the CA it keeps.
    Create {
        /// Name of the operator (a DNS label: lower-case letters, digits, '-').
        name: String,
        /// admin (everything) or read-only (get, describe, logs, top,
        /// events, watch: for dashboards and on-call).
        #[arg(long, default_value = "admin", value_parser = parse_role)]
        role: outpost_proto::AdminRole,
        /// How long the certificate is valid.
        #[arg(long, default_value = "8760h", value_parser = parse_duration)]
        valid_for: Duration,
        /// Where to write the config (default: ./NAME.conf). `-o` is
        /// taken by the output format.
        #[arg(long = "out", value_name = "FILE")]
        out: Option<PathBuf>,
        /// Replace an existing file at --out.
        #[arg(long)]
        overwrite: bool,
    },
    /// List operator certificates: NAME ROLE SERIAL EXPIRES STATUS.
    List,
    /// Refuse a certificate from now on (its open connections are closed).
    /// The last full admin cannot be revoked.
    Revoke { name: String },
    /// A new certificate for the same name and role; the old one is revoked
    /// once the new one is saved. Without NAME (or with your own), renews
    /// the certificate of this config and rewrites the config in place.
    Renew {
        name: Option<String>,
        /// How long the new certificate is valid (default: as long as the
        /// old one was issued for).
        #[arg(long, value_parser = parse_duration)]
        valid_for: Option<Duration>,
        /// Where to write another operator's new config (default:
        /// ./NAME.conf).
        #[arg(long = "out", value_name = "FILE")]
        out: Option<PathBuf>,
        /// Replace an existing file at --out.
        #[arg(long)]
        overwrite: bool,
    },
    /// Renew the controller's server certificate in place, from the same
    /// CA: same names plus --san. New connections get it at once; agents
    /// (which pin the CA) stay connected and need no re-enrolment.
    RenewServerCert {
        /// More DNS names or IP addresses for it.
        #[arg(long = "san", value_delimiter = ',')]
        sans: Vec<String>,
        /// Lifetime of the new certificate (default: ten years).
        #[arg(long, value_parser = parse_duration)]
        valid_for: Option<Duration>,
    },
}

fn parse_role(s: &str) -> Result<outpost_proto::AdminRole, String> {
    outpost_proto::AdminRole::parse(s)
        .ok_or_else(|| format!("{s:?} is not a role; use admin or read-only"))
}

/// A failure already printed (per object, as kubectl does): exit 1
/// without printing anything more.
#[derive(Debug, thiserror::Error)]
#[error("failed")]
struct Reported;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // Help and version are answers; every usage error exits 1 as
            // kubectl's do.
            std::process::exit(if e.use_stderr() { 1 } else { 0 });
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(cli)) {
        if !e.is::<Reported>() {
            eprintln!("{}", report(&e));
        }
        std::process::exit(1);
    }
}

/// kubectl's reason for a controller's error code.
fn reason(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::NotFound => "NotFound",
        ErrorCode::AlreadyExists => "AlreadyExists",
        ErrorCode::Conflict => "Conflict",
        ErrorCode::InvalidRequest | ErrorCode::VersionMismatch => "BadRequest",
        ErrorCode::PermissionDenied => "Forbidden",
        ErrorCode::Unauthenticated | ErrorCode::InvalidToken => "Unauthorized",
        ErrorCode::Internal => "InternalError",
        ErrorCode::TooManyRequests => "TooManyRequests",
        ErrorCode::Unavailable => "ServiceUnavailable",
    }
}

/// An error as kubectl prints it: `Error from server (NotFound): ...` for
/// the controller's answers, `error: ...` for everything else.
fn report(e: &anyhow::Error) -> String {
    match e.chain().find_map(|c| c.downcast_ref::<ServerError>()) {
        Some(s) => format!("Error from server ({}): {e:#}", reason(s.0.code)),
        None => format!("error: {e:#}"),
    }
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.chain()
        .find_map(|c| c.downcast_ref::<ServerError>())
        .is_some_and(|s| s.0.code == ErrorCode::NotFound)
}

/// Writes to standard output; a closed pipe (`| head`) ends the program.
fn emit(s: &str) {
    emit_bytes(s.as_bytes());
}

fn emit_bytes(b: &[u8]) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if out.write_all(b).and_then(|()| out.flush()).is_err() {
        std::process::exit(1);
    }
}

fn unexpected(what: &str, r: &AdminResponse) -> anyhow::Error {
    let name = format!("{r:?}");
    let name = name.split(['(', ' ', '{']).next().unwrap_or_default();
    anyhow!(
        "the controller answered {what} with {name} (is this outpostctl the controller's version?)"
    )
}

async fn call(cfg: &ClientConfig, req: AdminRequest) -> Result<AdminResponse> {
    client::call(cfg, req).await
}

/// Events with their series (`ListEventSeries`); a controller from before
/// series does not know that call and refuses it (it closes the
/// connection on the request it cannot read), so it is asked
/// `ListEvents`, whose events count once each.
async fn list_events(
    cfg: &ClientConfig,
    object: Option<String>,
    limit: u32,
) -> Result<Vec<outpost_proto::Event>> {
    let series = AdminRequest::ListEventSeries {
        object: object.clone(),
        limit,
    };
    match call(cfg, series).await {
        Ok(AdminResponse::EventSeries(e)) => return Ok(e),
        Ok(other) => return Err(unexpected("an event listing", &other)),
        // An older controller could not read the request: it answers
        // InvalidRequest and closes the connection.
        Err(e) if !e.is::<client::Unreachable>() && !refused_otherwise(&e) => {}
        Err(e) => return Err(e),
    }
    match call(cfg, AdminRequest::ListEvents { object, limit }).await? {
        AdminResponse::Events(e) => Ok(e.into_iter().map(outpost_proto::Event::from).collect()),
        other => Err(unexpected("an event listing", &other)),
    }
}

/// The controller answered with an error other than not understanding
/// the request.
fn refused_otherwise(e: &anyhow::Error) -> bool {
    e.chain()
        .find_map(|c| c.downcast_ref::<ServerError>())
        .is_some_and(|s| s.0.code != ErrorCode::InvalidRequest)
}

/// A call answered with `Done`: its message.
async fn done(cfg: &ClientConfig, what: &str, req: AdminRequest) -> Result<String> {
    match call(cfg, req).await? {
        AdminResponse::Done { message } => Ok(message),
        other => Err(unexpected(what, &other)),
    }
}

async fn run(cli: Cli) -> Result<()> {
    let path = clientconfig::resolve_path(cli.config.as_deref()).ok_or_else(|| {
        anyhow!("no config: pass --config FILE or set OUTPOST_CONFIG (`outpost-controller init` writes one)")
    })?;
    let cfg = ClientConfig::load(&path)?;
    let fmt = cli.output;
    match cli.cmd {
        Cmd::Get(args) => get(&cfg, args, fmt).await,
        Cmd::Describe(args) => describe(&cfg, args, fmt).await,
        Cmd::Apply(args) => apply(&cfg, args, fmt).await,
        Cmd::Delete(args) => delete(&cfg, args, fmt).await,
        Cmd::Scale(args) => scale(&cfg, args).await,
        Cmd::Cordon { nodes } => cordon(&cfg, nodes, true).await,
        Cmd::Uncordon { nodes } => cordon(&cfg, nodes, false).await,
        Cmd::Drain(args) => drain(&cfg, args).await,
        Cmd::Run(flags) => {
            let dry = flags.dry_run.clone();
            let doc = run_doc(flags)?;
            let results = apply_documents(
                &cfg,
                vec![Document {
                    source: "outpostctl run".into(),
                    json: serde_json::to_vec(&doc)?,
                }],
                dry.on(),
            )
            .await?;
            print_applied(&results, &dry, fmt);
            Ok(())
        }
        Cmd::Logs {
            pod,
            container,
            follow,
            tail,
            previous,
            namespace,
        } => {
            let pod = match namespace {
                Some(ns) => format!("{ns}/{pod}"),
                None => pod,
            };
            let req = AdminRequest::Logs(outpost_proto::LogsRequest {
                pod,
                container,
                follow,
                tail,
                previous,
            });
            client::stream(&cfg, req, |r| {
                if let AdminResponse::Data(bytes) = r {
                    emit_bytes(&bytes);
                }
                Ok(())
            })
            .await
        }
        Cmd::Top {
            kind,
            node,
            namespace,
            all_namespaces,
        } => top(&cfg, &kind, node, namespace, all_namespaces, fmt).await,
        Cmd::Image {
            cmd: ImageCmd::Push { file, node, site },
        } => {
            emit(&push(&cfg, file, node, site).await?);
            Ok(())
        }
        Cmd::Token { cmd } => token(&cfg, cmd, fmt).await,
        Cmd::Admin { cmd } => admin(&cfg, &path, cmd, fmt).await,
        Cmd::Rollout { cmd } => rollout::run(&cfg, cmd).await,
    }
}

// ---- reading objects ----

fn object_ref(kind: Kind, namespace: &str, name: &str) -> ObjectRef {
    ObjectRef {
        kind: kind.resource().to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

/// One object as JSON.
async fn get_json(cfg: &ClientConfig, kind: Kind, namespace: &str, name: &str) -> Result<Value> {
    match call(cfg, AdminRequest::Get(object_ref(kind, namespace, name))).await? {
        AdminResponse::Object(bytes) => Ok(serde_json::from_slice(&bytes)?),
        other => Err(unexpected("a get", &other)),
    }
}

/// Every object of a kind, page by page.
async fn list_all(
    cfg: &ClientConfig,
    kind: Kind,
    namespace: Option<String>,
    selector: &str,
    node: Option<String>,
) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut from = String::new();
    loop {
        let page = match call(
            cfg,
            AdminRequest::List(outpost_proto::ListRequest {
                kind: kind.resource().to_string(),
                namespace: namespace.clone(),
                selector: selector.to_string(),
                node: node.clone(),
                limit: 0,
                continue_from: from.clone(),
            }),
        )
        .await?
        {
            AdminResponse::List(page) => page,
            other => return Err(unexpected("a list", &other)),
        };
        for item in page.items {
            out.push(serde_json::from_slice(&item)?);
        }
        if page.continue_from.is_empty() {
            return Ok(out);
        }
        from = page.continue_from;
    }
}

async fn node_view(cfg: &ClientConfig, name: &str) -> Result<NodeView> {
    match call(
        cfg,
        AdminRequest::GetNode {
            name: name.to_string(),
        },
    )
    .await?
    {
        AdminResponse::Node(n) => Ok(*n),
        other => Err(unexpected("a node lookup", &other)),
    }
}

/// Every node the registry has whose labels match `selector`.
async fn node_views(cfg: &ClientConfig, selector: &str) -> Result<Vec<NodeView>> {
    let sel = Selector::parse(selector).map_err(|e| anyhow!("-l: {e}"))?;
    match call(cfg, AdminRequest::ListNodes).await? {
        AdminResponse::Nodes(nodes) => Ok(nodes
            .into_iter()
            .filter(|n| sel.matches(&n.labels))
            .collect()),
        other => Err(unexpected("a node listing", &other)),
    }
}

/// Prints a per-object failure now (kubectl goes on with the others).
fn print_failure(e: &anyhow::Error) {
    eprintln!("{}", report(e));
}

/// What `get` fetched for one type.
enum Fetched {
    Objects {
        kind: Kind,
        items: Vec<Value>,
        nodes: BTreeMap<String, NodeView>,
    },
    Events(Vec<outpost_proto::Event>),
    Tokens(Vec<outpost_proto::TokenInfo>),
    Sites(Vec<outpost_controller::controllers::sites::SiteStatus>),
}

impl Fetched {
    fn is_empty(&self) -> bool {
        match self {
            Fetched::Objects { items, .. } => items.is_empty(),
            Fetched::Events(e) => e.is_empty(),
            Fetched::Tokens(t) => t.is_empty(),
            Fetched::Sites(s) => s.is_empty(),
        }
    }

    fn json(&self) -> Vec<Value> {
        match self {
            Fetched::Objects { items, .. } => items.clone(),
            Fetched::Events(e) => e.iter().map(ctl::event_json).collect(),
            Fetched::Tokens(t) => t.iter().map(ctl::token_json).collect(),
            Fetched::Sites(s) => s.iter().map(ctl::sites::site_json).collect(),
        }
    }

    /// `-o name` lines.
    fn names(&self) -> Vec<String> {
        match self {
            Fetched::Objects { kind, items, .. } => items
                .iter()
                .map(|v| ctl::qualified_name(*kind, v))
                .collect(),
            other => {
                let q = match other {
                    Fetched::Events(_) => Target::Events,
                    Fetched::Sites(_) => Target::Sites,
                    _ => Target::Tokens,
                }
                .qualified();
                other
                    .json()
                    .iter()
                    .map(|v| format!("{q}/{}", ctl::name_of(v)))
                    .collect()
            }
        }
    }

    fn table(&self, layout: Layout, now: u64) -> Result<String> {
        Ok(match self {
            Fetched::Objects { kind, items, nodes } => ctl::printer(*kind).table(
                items,
                &ctl::Context {
                    now_ms: now,
                    wide: layout.wide,
                    nodes,
                },
                layout,
            )?,
            Fetched::Events(e) => ctl::events::events_table(e, now),
            Fetched::Tokens(t) => ctl::tokens::tokens_table(t, now),
            Fetched::Sites(s) => ctl::sites::sites_table(s, now),
        })
    }
}

/// Fetches one type's objects (by name, or every one the scope selects).
/// A name that is not found is reported and marks `failed`.
async fn fetch(
    cfg: &ClientConfig,
    target: Target,
    names: &[String],
    args: &GetArgs,
    failed: &mut bool,
) -> Result<Fetched> {
    let scope = &args.scope;
    let mut found = |r: Result<Value>, items: &mut Vec<Value>| -> Result<()> {
        match r {
            Ok(v) => items.push(v),
            Err(e) if is_not_found(&e) => {
                print_failure(&e);
                *failed = true;
            }
            Err(e) => return Err(e),
        }
        Ok(())
    };
    match target {
        Target::Object(Kind::Node) => {
            let views = if names.is_empty() {
                node_views(cfg, &scope.selector).await?
            } else {
                let mut views = Vec::new();
                for n in names {
                    match node_view(cfg, n).await {
                        Ok(v) => views.push(v),
                        Err(e) if is_not_found(&e) => {
                            print_failure(&e);
                            *failed = true;
                        }
                        Err(e) => return Err(e),
                    }
                }
                views
            };
            Ok(Fetched::Objects {
                kind: Kind::Node,
                items: views.iter().map(ctl::node_json).collect(),
                nodes: views.into_iter().map(|v| (v.name.clone(), v)).collect(),
            })
        }
        Target::Object(kind) => {
            let items = if names.is_empty() {
                let node = if kind == Kind::Pod {
                    args.node.clone()
                } else {
                    None
                };
                list_all(cfg, kind, scope.list_namespace(), &scope.selector, node).await?
            } else {
                let mut items = Vec::new();
                for n in names {
                    found(get_json(cfg, kind, &scope.namespace(), n).await, &mut items)?;
                }
                items
            };
            Ok(Fetched::Objects {
                kind,
                items,
                nodes: BTreeMap::new(),
            })
        }
        Target::Events => {
            let events = list_events(cfg, args.object.clone(), args.limit).await?;
            Ok(Fetched::Events(
                events
                    .into_iter()
                    .filter(|e| names.is_empty() || names.contains(&format!("event-{}", e.seq)))
                    .collect(),
            ))
        }
        Target::Sites => {
            let views = node_views(cfg, &scope.selector).await?;
            Ok(Fetched::Sites(
                ctl::sites::sites_of(&views)
                    .into_iter()
                    .filter(|s| names.is_empty() || names.contains(&s.name))
                    .collect(),
            ))
        }
        Target::Tokens => {
            let tokens = match call(cfg, AdminRequest::ListTokens).await? {
                AdminResponse::Tokens(t) => t,
                other => return Err(unexpected("a token listing", &other)),
            };
            Ok(Fetched::Tokens(
                tokens
                    .into_iter()
                    .filter(|t| names.is_empty() || names.contains(&t.id))
                    .collect(),
            ))
        }
    }
}

/// kubectl's message for an empty listing.
fn no_resources(targets: &[(Target, Vec<String>)], scope: &Scope) -> String {
    let namespaced = targets
        .iter()
        .any(|(t, _)| matches!(t, Target::Object(k) if k.namespaced()));
    if namespaced && !scope.all_namespaces {
        format!("No resources found in {} namespace.", scope.namespace())
    } else {
        "No resources found".into()
    }
}

async fn get(cfg: &ClientConfig, args: GetArgs, fmt: Format) -> Result<()> {
    let targets = input::parse_args(&args.args)?;
    let named = targets.iter().any(|(_, n)| !n.is_empty());
    if named && !args.scope.selector.is_empty() {
        bail!("a name cannot be given together with a label selector (-l); use one or the other");
    }
    if named && args.scope.all_namespaces {
        bail!(
            "an object cannot be fetched by name across all namespaces; name its namespace with -n"
        );
    }
    if args.node.is_some() && targets.iter().any(|(t, _)| *t != Target::Object(Kind::Pod)) {
        bail!("--node only selects pods (e.g. `outpostctl get pods --node edge-1`)");
    }
    if args.watch || args.watch_only {
        let [(Target::Object(kind), names)] = targets.as_slice() else {
            bail!("--watch follows one object type (not events, tokens or sites); e.g. `outpostctl get pods -w`");
        };
        return watch(cfg, *kind, names, &args, fmt).await;
    }
    let mut failed = false;
    let mut fetched = Vec::new();
    for (t, names) in &targets {
        fetched.push(fetch(cfg, *t, names, &args, &mut failed).await?);
    }
    let now = now_ms();
    match fmt {
        Format::Json | Format::Yaml => {
            let mut items: Vec<Value> = fetched.iter().flat_map(Fetched::json).collect();
            let one = targets.len() == 1 && targets[0].1.len() == 1;
            if one && items.len() == 1 {
                emit(&ctl::render(&items.remove(0), fmt));
            } else if !(one && failed) {
                emit(&ctl::render(&ctl::list(items), fmt));
            }
        }
        Format::Name => {
            for f in &fetched {
                for n in f.names() {
                    emit(&format!("{n}\n"));
                }
            }
        }
        Format::Table | Format::Wide => {
            let layout = Layout {
                wide: fmt == Format::Wide,
                namespaces: args.scope.all_namespaces,
                qualified: targets.len() > 1,
            };
            let mut sections = Vec::new();
            for f in fetched.iter().filter(|f| !f.is_empty()) {
                sections.push(f.table(layout, now)?);
            }
            if !sections.is_empty() {
                emit(&sections.join("\n"));
            } else if !failed {
                eprintln!("{}", no_resources(&targets, &args.scope));
            }
        }
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}

/// `get -w`: the rows (or JSON lines) of every change as it arrives,
/// until the operator interrupts or the controller ends the stream.
async fn watch(
    cfg: &ClientConfig,
    kind: Kind,
    names: &[String],
    args: &GetArgs,
    fmt: Format,
) -> Result<()> {
    let scope = &args.scope;
    let namespace = if kind.namespaced() {
        scope.list_namespace()
    } else {
        None
    };
    let resource_version = if args.watch_only {
        let page = match call(
            cfg,
            AdminRequest::List(outpost_proto::ListRequest {
                kind: kind.resource().to_string(),
                namespace: namespace.clone(),
                selector: scope.selector.clone(),
                node: None,
                limit: 1,
                continue_from: String::new(),
            }),
        )
        .await?
        {
            AdminResponse::List(page) => page,
            other => return Err(unexpected("a list", &other)),
        };
        page.resource_version
    } else {
        0
    };
    let printer = ctl::printer(kind);
    let layout = Layout {
        wide: fmt == Format::Wide,
        namespaces: scope.all_namespaces,
        qualified: false,
    };
    let mut table = ctl::Table::new(printer.header(layout));
    let mut header = true;
    let mut nodes = BTreeMap::new();
    let mut stream = client::Stream::open(
        cfg,
        AdminRequest::Watch(outpost_proto::WatchRequest {
            kind: kind.resource().to_string(),
            namespace,
            selector: scope.selector.clone(),
            resource_version,
        }),
    )
    .await?;
    let result = async {
        loop {
            let next = tokio::select! {
                r = stream.next() => r?,
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            let ev = match next {
                None => return Ok(()),
                Some(AdminResponse::WatchEvent(ev)) => ev,
                Some(other) => return Err(unexpected("a watch", &other)),
            };
            let obj: Value = serde_json::from_slice(&ev.object)?;
            let name = ctl::name_of(&obj).to_string();
            if !names.is_empty() && !names.contains(&name) {
                continue;
            }
            if let Some(node) = &args.node {
                if obj["spec"]["nodeName"].as_str() != Some(node.as_str()) {
                    continue;
                }
            }
            let wrapped = || serde_json::json!({"type": ev.kind, "object": obj});
            match fmt {
                Format::Json => {
                    let v = if args.output_watch_events {
                        wrapped()
                    } else {
                        obj.clone()
                    };
                    emit(&format!("{v}\n"));
                }
                Format::Yaml => {
                    let v = if args.output_watch_events {
                        wrapped()
                    } else {
                        obj.clone()
                    };
                    emit(&format!("---\n{}", ctl::render(&v, Format::Yaml)));
                }
                Format::Name => emit(&format!("{}\n", ctl::qualified_name(kind, &obj))),
                Format::Table | Format::Wide => {
                    if kind == Kind::Node {
                        // Rows of nodes come from the registry's live view;
                        // a node deleted meanwhile has none left to show.
                        match node_view(cfg, &name).await {
                            Ok(v) => {
                                nodes.insert(name.clone(), v);
                            }
                            Err(e) if is_not_found(&e) => continue,
                            Err(e) => return Err(e),
                        }
                    }
                    let ctx = ctl::Context {
                        now_ms: now_ms(),
                        wide: layout.wide,
                        nodes: &nodes,
                    };
                    let row = (printer.row)(&obj, &ctx)?;
                    emit(&table.render(&[printer.cells(&row, layout)], header));
                    header = false;
                }
            }
        }
    }
    .await;
    stream.close().await;
    result
}

// ---- describe ----

/// The objects of `kind` in `namespace` whose owner references name `uid`.
async fn owned(cfg: &ClientConfig, kind: Kind, namespace: &str, uid: &str) -> Result<Vec<Value>> {
    let all = list_all(cfg, kind, Some(namespace.to_string()), "", None).await?;
    Ok(all
        .into_iter()
        .filter(|v| {
            v["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
        })
        .collect())
}

async fn describe_one(cfg: &ClientConfig, kind: Kind, obj: &Value, now: u64) -> Result<String> {
    let printer = ctl::printer(kind);
    let ns = ctl::namespace_of(obj).to_string();
    let name = ctl::name_of(obj).to_string();
    let events = list_events(cfg, Some(api::machinery::object_ref(kind, &ns, &name)), 50).await?;
    let mut related = Vec::new();
    let mut usage = None;
    let mut node = None;
    match printer.extra {
        ctl::Extra::Nothing => {}
        ctl::Extra::Owned(k) => {
            let uid = obj["metadata"]["uid"].as_str().unwrap_or_default();
            related = owned(cfg, k, &ns, uid).await?;
        }
        ctl::Extra::Named(k) => match get_json(cfg, k, &ns, &name).await {
            Ok(v) => related.push(v),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        },
        ctl::Extra::PodUsage => {
            if let AdminResponse::PodUsage(u) = call(cfg, AdminRequest::PodUsage).await? {
                let key = api::ns_name(&ns, &name);
                usage = u.into_iter().find(|(k, _)| *k == key).map(|(_, u)| u);
            }
        }
        ctl::Extra::NodeView => node = Some(node_view(cfg, &name).await?),
    }
    Ok((printer.describe)(&ctl::Subject {
        object: obj,
        related: &related,
        events: &events,
        usage: usage.as_ref(),
        node: node.as_ref(),
        now_ms: now,
    })?)
}

async fn describe(cfg: &ClientConfig, args: DescribeArgs, fmt: Format) -> Result<()> {
    let targets = input::parse_args(&args.args)?;
    let scope = &args.scope;
    let mut failed = false;
    let mut texts = Vec::new();
    for (t, names) in targets {
        let Target::Object(kind) = t else {
            bail!("events and tokens have no description; `outpostctl get events` and `outpostctl get tokens` list them");
        };
        let mut objects = Vec::new();
        if names.is_empty() {
            objects = if kind == Kind::Node {
                node_views(cfg, &scope.selector)
                    .await?
                    .iter()
                    .map(ctl::node_json)
                    .collect()
            } else {
                list_all(cfg, kind, scope.list_namespace(), &scope.selector, None).await?
            };
        } else {
            for n in &names {
                match get_json(cfg, kind, &scope.namespace(), n).await {
                    Ok(v) => objects.push(v),
                    Err(e) if is_not_found(&e) => {
                        print_failure(&e);
                        failed = true;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        for obj in &objects {
            match fmt {
                Format::Json | Format::Yaml => texts.push(ctl::render(obj, fmt)),
                Format::Name => texts.push(format!("{}\n", ctl::qualified_name(kind, obj))),
                Format::Table | Format::Wide => {
                    texts.push(describe_one(cfg, kind, obj, now_ms()).await?);
                }
            }
        }
    }
    let sep = if fmt.is_table() { "\n" } else { "" };
    if !texts.is_empty() {
        emit(&texts.join(sep));
    } else if !failed {
        eprintln!("No resources found");
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}

// ---- apply ----

async fn apply_call(
    cfg: &ClientConfig,
    documents: Vec<Document>,
    dry_run: bool,
) -> Result<Vec<ApplyResult>> {
    match call(
        cfg,
        AdminRequest::Apply(outpost_proto::ApplyRequest { documents, dry_run }),
    )
    .await?
    {
        AdminResponse::Applied(r) => Ok(r),
        other => Err(unexpected("an apply", &other)),
    }
}

/// Applies documents as one: in one request when they fit in a frame;
/// otherwise every part is dry-run first, so a refusal anywhere changes
/// nothing, and then applied part by part.
async fn apply_documents(
    cfg: &ClientConfig,
    docs: Vec<Document>,
    dry_run: bool,
) -> Result<Vec<ApplyResult>> {
    let mut parts = input::chunks(docs, outpost_proto::MAX_FRAME)?;
    if parts.len() == 1 {
        let part = parts.remove(0);
        return apply_call(cfg, part, dry_run)
            .await
            .context("nothing was applied");
    }
    let mut checked = Vec::new();
    for p in &parts {
        checked.extend(
            apply_call(cfg, p.clone(), true)
                .await
                .context("nothing was applied")?,
        );
    }
    if dry_run {
        return Ok(checked);
    }
    let total = parts.len();
    let mut results = Vec::new();
    for (i, p) in parts.into_iter().enumerate() {
        results.extend(apply_call(cfg, p, false).await.with_context(|| {
            format!(
                "the manifests were too large for one request; {i} of {total} parts were applied before this one failed"
            )
        })?);
    }
    Ok(results)
}

fn print_applied(results: &[ApplyResult], dry: &DryRunFlag, fmt: Format) {
    for r in results {
        for w in &r.warnings {
            eprintln!("Warning: {}/{}: {w}", r.kind, r.name);
        }
        if fmt == Format::Name {
            emit(&format!("{}/{}\n", r.kind, r.name));
        } else {
            emit(&format!(
                "{}/{} {}{}\n",
                r.kind,
                r.name,
                r.outcome,
                dry.suffix()
            ));
        }
    }
}

async fn apply(cfg: &ClientConfig, args: ApplyArgs, fmt: Format) -> Result<()> {
    let sources = input::manifest_sources(&args.files, args.recursive)?;
    let docs = input::read_documents(&sources, &mut std::io::stdin().lock())
        .context("nothing was applied")?;
    let documents = docs
        .into_iter()
        .map(|(source, mut v)| {
            if let Some(ns) = &args.namespace {
                let namespaced = Kind::of_manifest(
                    v["apiVersion"].as_str().unwrap_or_default(),
                    v["kind"].as_str().unwrap_or_default(),
                )
                .is_some_and(Kind::namespaced);
                if namespaced && ctl::namespace_of(&v).is_empty() && v["metadata"].is_object() {
                    v["metadata"]["namespace"] = ns.clone().into();
                }
            }
            Ok(Document {
                source,
                json: serde_json::to_vec(&v)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let results = apply_documents(cfg, documents, args.dry_run.on()).await?;
    print_applied(&results, &args.dry_run, fmt);
    Ok(())
}

// ---- delete, scale, cordon ----

/// What the manifests of `delete -f` name: (kind, namespace, name).
fn manifest_objects(
    docs: &[(String, Value)],
    namespace: &str,
) -> Result<Vec<(Kind, String, String)>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (source, v) in docs {
        let api_version = v["apiVersion"].as_str().unwrap_or_default();
        let kind_name = v["kind"].as_str().unwrap_or_default();
        let Some(kind) = Kind::of_manifest(api_version, kind_name) else {
            problems.push(format!(
                "{source}: {api_version:?} {kind_name:?} is not a kind Outpost serves"
            ));
            continue;
        };
        let name = ctl::name_of(v);
        if name.is_empty() {
            problems.push(format!("{source}: metadata.name is missing"));
            continue;
        }
        let ns = if !kind.namespaced() {
            String::new()
        } else {
            match ctl::namespace_of(v) {
                "" => namespace.to_string(),
                ns => ns.to_string(),
            }
        };
        out.push((kind, ns, name.to_string()));
    }
    if !problems.is_empty() {
        bail!("nothing was deleted:\n{}", problems.join("\n"));
    }
    Ok(out)
}

async fn delete(cfg: &ClientConfig, args: DeleteArgs, fmt: Format) -> Result<()> {
    let scope = &args.scope;
    let mut objects: Vec<(Kind, String, String)> = Vec::new();
    if !args.files.is_empty() {
        if !args.args.is_empty() {
            bail!("with -f the manifests name what to delete; drop the TYPE and NAME arguments");
        }
        let sources = input::manifest_sources(&args.files, args.recursive)?;
        let docs = input::read_documents(&sources, &mut std::io::stdin().lock())
            .context("nothing was deleted")?;
        objects = manifest_objects(&docs, &scope.namespace())?;
    } else {
        if args.args.is_empty() {
            bail!("say what to delete: `delete TYPE NAME...`, `delete TYPE -l SELECTOR`, `delete TYPE --all` or `delete -f FILE`");
        }
        for (t, names) in input::parse_args(&args.args)? {
            let Target::Object(kind) = t else {
                bail!("events cannot be deleted, and tokens are revoked: `outpostctl token revoke ID`");
            };
            if !names.is_empty() {
                if !scope.selector.is_empty() || args.all {
                    bail!("a name cannot be given together with -l or --all; use one or the other");
                }
                let ns = scope.namespace();
                objects.extend(names.into_iter().map(|n| (kind, ns.clone(), n)));
            } else if !scope.selector.is_empty() || args.all {
                let found = if kind == Kind::Node {
                    node_views(cfg, &scope.selector)
                        .await?
                        .into_iter()
                        .map(|n| (String::new(), n.name))
                        .collect::<Vec<_>>()
                } else {
                    list_all(cfg, kind, scope.list_namespace(), &scope.selector, None)
                        .await?
                        .iter()
                        .map(|v| {
                            (
                                ctl::namespace_of(v).to_string(),
                                ctl::name_of(v).to_string(),
                            )
                        })
                        .collect()
                };
                objects.extend(found.into_iter().map(|(ns, n)| (kind, ns, n)));
            } else {
                bail!(
                    "no {} named: give NAME..., a label selector (-l), or --all",
                    kind.resource()
                );
            }
        }
        if objects.is_empty() {
            eprintln!("No resources found");
            return Ok(());
        }
    }
    let propagation = match args.cascade {
        Cascade::Background => Propagation::Background,
        Cascade::Orphan => Propagation::Orphan,
    };
    let grace = input::delete_grace(args.grace_period, args.now)?;
    if args.grace_period == 0 {
        eprintln!("warning: --grace-period 0 is taken as 1 (immediate shutdown): Outpost has no forced deletion");
    }
    let mut failed = false;
    for (kind, ns, name) in objects {
        let request = outpost_proto::DeleteRequest {
            object: object_ref(kind, &ns, &name),
            propagation,
            dry_run: args.dry_run.on(),
        };
        // A grace period is for pods; a plain delete also reaches a
        // controller older than the grace period's request.
        let req = match grace {
            Some(grace_period_seconds) if kind == Kind::Pod => AdminRequest::DeleteWithGrace {
                request,
                grace_period_seconds,
            },
            _ => AdminRequest::Delete(request),
        };
        match done(cfg, "a delete", req).await {
            Ok(_) if fmt == Format::Name => emit(&format!("{}/{name}\n", kind.qualified())),
            Ok(_) => emit(&format!(
                "{} \"{name}\" deleted{}\n",
                kind.qualified(),
                args.dry_run.suffix()
            )),
            Err(e) if is_not_found(&e) && args.ignore_not_found => {}
            Err(e) => {
                print_failure(&e);
                failed = true;
            }
        }
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}

async fn scale(cfg: &ClientConfig, args: ScaleArgs) -> Result<()> {
    let ns = args
        .namespace
        .clone()
        .unwrap_or_else(|| api::DEFAULT_NAMESPACE.into());
    let mut failed = false;
    for (t, names) in input::parse_args(&args.args)? {
        let kind = match t {
            Target::Object(k @ (Kind::Deployment | Kind::ReplicaSet)) => k,
            _ => bail!("only deployments and replicasets are scaled (e.g. `outpostctl scale deployment web --replicas 3`)"),
        };
        if names.is_empty() {
            bail!("name the {} to scale", kind.resource());
        }
        for name in names {
            let req = AdminRequest::Scale(outpost_proto::ScaleRequest {
                object: object_ref(kind, &ns, &name),
                replicas: args.replicas,
            });
            match done(cfg, "a scale", req).await {
                Ok(_) => emit(&format!("{}/{name} scaled\n", kind.qualified())),
                Err(e) => {
                    print_failure(&e);
                    failed = true;
                }
            }
        }
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}

async fn cordon(cfg: &ClientConfig, nodes: Vec<String>, on: bool) -> Result<()> {
    if nodes.is_empty() {
        bail!(
            "name the node(s) to {}cordon, e.g. `outpostctl {}cordon edge-1`",
            if on { "" } else { "un" },
            if on { "" } else { "un" }
        );
    }
    let mut failed = false;
    for node in nodes {
        let req = AdminRequest::Cordon {
            node,
            unschedulable: on,
        };
        match done(cfg, "a cordon", req).await {
            Ok(message) => emit(&format!("{message}\n")),
            Err(e) => {
                print_failure(&e);
                failed = true;
            }
        }
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}

// ---- drain ----

/// The pods bound to `node`, every namespace.
async fn pods_on(cfg: &ClientConfig, node: &str) -> Result<Vec<api::Pod>> {
    list_all(cfg, Kind::Pod, None, "", Some(node.to_string()))
        .await?
        .iter()
        .map(|v| Ok(ctl::decode::<api::Pod>(Kind::Pod, v)?))
        .collect()
}

fn print_lines(lines: &mut Vec<drain::Line>) {
    for l in lines.drain(..) {
        match l {
            drain::Line::Out(s) => emit(&format!("{s}\n")),
            drain::Line::Err(s) => eprintln!("{s}"),
        }
    }
}

/// What an eviction's answer means to the drain.
fn evict_result(r: Result<AdminResponse>) -> drain::EvictResult {
    match r {
        Ok(_) => drain::EvictResult::Evicted,
        Err(e) => match e.chain().find_map(|c| c.downcast_ref::<ServerError>()) {
            Some(s) if s.0.code == ErrorCode::TooManyRequests => {
                drain::EvictResult::Retry(s.0.message.clone())
            }
            Some(s) if s.0.code == ErrorCode::NotFound => drain::EvictResult::NotFound,
            Some(s) => drain::EvictResult::Failed(s.0.message.clone()),
            None => drain::EvictResult::Failed(format!("{e:#}")),
        },
    }
}

async fn drain(cfg: &ClientConfig, args: DrainArgs) -> Result<()> {
    let node = args.node;
    let opts = drain::DrainOptions {
        force: args.force,
        delete_emptydir_data: args.delete_emptydir_data,
        grace_period: u32::try_from(args.grace_period).ok(),
        timeout: (!args.timeout.is_zero()).then_some(args.timeout),
    };
    let cordoned = done(
        cfg,
        "a cordon",
        AdminRequest::Cordon {
            node: node.clone(),
            unschedulable: true,
        },
    )
    .await?;
    emit(&format!("{cordoned}\n"));
    let mut out = Vec::new();
    let selection = drain::select(&pods_on(cfg, &node).await?, &opts);
    if !selection.errors.is_empty() {
        drain::failure_summary(&node, &selection.errors, &mut out);
        print_lines(&mut out);
        return Err(Reported.into());
    }
    if !selection.warnings.is_empty() {
        eprintln!("Warning: {}", selection.warnings.join("; "));
    }
    let mut d = drain::Drain::new(selection.pods, &opts, api::Time(now_ms()));
    loop {
        let now = api::Time(now_ms());
        for id in d.due(now, &mut out) {
            print_lines(&mut out);
            let req = AdminRequest::Evict(outpost_proto::EvictRequest {
                namespace: id.namespace.clone(),
                name: id.name.clone(),
                grace_period_seconds: opts.grace_period,
            });
            let r = evict_result(call(cfg, req).await);
            d.evicted(&id, r, api::Time(now_ms()), &mut out);
            print_lines(&mut out);
        }
        if d.waiting_for_deletion() {
            let present: Vec<drain::PodId> = pods_on(cfg, &node)
                .await?
                .iter()
                .map(drain::PodId::of)
                .collect();
            d.observe(&present, api::Time(now_ms()), &mut out);
            print_lines(&mut out);
        }
        print_lines(&mut out);
        let now = api::Time(now_ms());
        let Some(wake) = d.next_wakeup(now) else {
            break;
        };
        tokio::time::sleep(Duration::from_millis(wake.ms().saturating_sub(now.ms()))).await;
    }
    let ok = d.summary(&node, &mut out);
    print_lines(&mut out);
    if ok {
        Ok(())
    } else {
        Err(Reported.into())
    }
}

// ---- top, token ----

async fn top(
    cfg: &ClientConfig,
    kind: &str,
    node: Option<String>,
    namespace: Option<String>,
    all_namespaces: bool,
    fmt: Format,
) -> Result<()> {
    let machine = matches!(fmt, Format::Json | Format::Yaml);
    if matches!(kind, "pods" | "pod" | "po") {
        let ns =
            (!all_namespaces).then(|| namespace.unwrap_or_else(|| api::DEFAULT_NAMESPACE.into()));
        let pods: Vec<api::Pod> = list_all(cfg, Kind::Pod, ns, "", node)
            .await?
            .iter()
            .map(|v| ctl::decode(Kind::Pod, v))
            .collect::<Result<_, _>>()?;
        let usage = match call(cfg, AdminRequest::PodUsage).await? {
            AdminResponse::PodUsage(u) => u,
            other => return Err(unexpected("a usage query", &other)),
        };
        let usage: std::collections::HashMap<String, outpost_proto::pod::Usage> =
            usage.into_iter().collect();
        let rows: Vec<(api::Pod, outpost_proto::pod::Usage)> = pods
            .into_iter()
            .filter_map(|p| {
                let u = *usage.get(&api::ns_name(&p.metadata.namespace, &p.metadata.name))?;
                Some((p, u))
            })
            .collect();
        emit(&if machine {
            ctl::render(&ctl::pods::top_pods_json(&rows), fmt)
        } else {
            ctl::pods::top_pods(&rows, all_namespaces)
        });
    } else {
        let nodes = match call(cfg, AdminRequest::ListNodes).await? {
            AdminResponse::Nodes(n) => n,
            other => return Err(unexpected("a node listing", &other)),
        };
        let usage = match call(cfg, AdminRequest::NodeUsage).await? {
            AdminResponse::NodeUsage(u) => u,
            other => return Err(unexpected("a usage query", &other)),
        };
        let rows: Vec<_> = nodes
            .into_iter()
            .map(|n| {
                let u = usage
                    .iter()
                    .find(|(name, _)| *name == n.name)
                    .map(|(_, u)| *u);
                (n, u)
            })
            .collect();
        emit(&if machine {
            ctl::render(&ctl::nodes::top_nodes_json(&rows), fmt)
        } else {
            ctl::nodes::top_nodes(&rows)
        });
    }
    Ok(())
}

async fn token(cfg: &ClientConfig, cmd: TokenCmd, fmt: Format) -> Result<()> {
    let machine = matches!(fmt, Format::Json | Format::Yaml);
    match cmd {
        TokenCmd::Create {
            ttl,
            uses,
            labels,
            description,
        } => {
            let labels = names::parse_labels(&labels).map_err(|e| anyhow!("--labels: {e}"))?;
            let resp = call(
                cfg,
                AdminRequest::CreateToken {
                    ttl_secs: ttl.as_secs().max(1),
                    uses,
                    labels,
                    description,
                },
            )
            .await?;
            let AdminResponse::TokenCreated {
                token,
                info,
                ca_hash,
            } = resp
            else {
                return Err(unexpected("a token request", &resp));
            };
            emit(&if machine {
                ctl::render(
                    &serde_json::json!({"token": token, "caHash": ca_hash, "info": ctl::token_json(&info)}),
                    fmt,
                )
            } else {
                format!(
                    "token:   {token}\nca-hash: {ca_hash}\nexpires: {}\n\nOn the edge box:\n  outpost-agent --controller {} --token {token} --ca-hash {ca_hash} --data-dir /var/lib/outpost\n",
                    ctl::rfc3339(info.expires_ms),
                    cfg.controller
                )
            });
        }
        TokenCmd::List => {
            let tokens = match call(cfg, AdminRequest::ListTokens).await? {
                AdminResponse::Tokens(t) => t,
                other => return Err(unexpected("a token listing", &other)),
            };
            emit(&if machine {
                ctl::render(
                    &ctl::list(tokens.iter().map(ctl::token_json).collect()),
                    fmt,
                )
            } else {
                ctl::tokens::tokens_table(&tokens, now_ms())
            });
        }
        TokenCmd::Revoke { id } => {
            let message = done(cfg, "a revoke", AdminRequest::RevokeToken { id }).await?;
            emit(&format!("{message}\n"));
        }
    }
    Ok(())
}

/// Writes a new config to `out` (0600, atomically); an existing file is
/// kept unless `overwrite`.
fn write_config(config: &ClientConfig, out: &std::path::Path, overwrite: bool) -> Result<()> {
    if out.exists() && !overwrite {
        bail!(
            "{} already exists; pass --overwrite to replace it, or --out FILE",
            out.display()
        );
    }
    config
        .save(out)
        .with_context(|| format!("writing {}", out.display()))
}

fn issued_summary(what: &str, i: &outpost_proto::AdminIssued, file: &std::path::Path) -> String {
    format!(
        "admin certificate {} {what} (role {}, serial {}, expires {})
config: {}
  outpostctl --config {} get nodes
",
        i.info.name,
        i.info.role,
        i.info.serial,
        ctl::rfc3339(i.info.not_after_ms),
        file.display(),
        file.display()
    )
}

async fn admin(
    cfg: &ClientConfig,
    own_path: &std::path::Path,
    cmd: AdminCmd,
    fmt: Format,
) -> Result<()> {
    let machine = matches!(fmt, Format::Json | Format::Yaml);
    let ask = |what: &'static str, req: AdminRequest| async move {
        call(cfg, req)
            .await
            .map_err(|e| client::older_controller(e, what))
    };
    match cmd {
        AdminCmd::Create {
            name,
            role,
            valid_for,
            out,
            overwrite,
        } => {
            let out = out.unwrap_or_else(|| PathBuf::from(format!("{name}.conf")));
            if out.exists() && !overwrite {
                bail!(
                    "{} already exists; pass --overwrite to replace it, or --out FILE",
                    out.display()
                );
            }
            let (key, csr_der) = ctl::admins::new_key_and_csr()?;
            let resp = ask(
                "outpostctl admin create",
                AdminRequest::CreateAdmin(outpost_proto::AdminCertRequest {
                    name,
                    role,
                    valid_for_secs: valid_for.as_secs(),
                    csr_der,
                }),
            )
            .await?;
            let AdminResponse::AdminIssued(issued) = resp else {
                return Err(unexpected("admin create", &resp));
            };
            write_config(
                &ctl::admins::config_for(cfg, &issued.cert_der, key),
                &out,
                true,
            )?;
            emit(&if machine {
                ctl::render(&ctl::admins::admin_json(&issued.info, now_ms()), fmt)
            } else {
                issued_summary("created", &issued, &out)
            });
        }
        AdminCmd::List => {
            let resp = ask("outpostctl admin list", AdminRequest::ListAdmins).await?;
            let AdminResponse::Admins(list) = resp else {
                return Err(unexpected("admin list", &resp));
            };
            let now = now_ms();
            emit(&if machine {
                ctl::render(
                    &ctl::list(
                        list.iter()
                            .map(|a| ctl::admins::admin_json(a, now))
                            .collect(),
                    ),
                    fmt,
                )
            } else {
                ctl::admins::admins_table(&list, now)
            });
        }
        AdminCmd::Revoke { name } => {
            let resp = ask(
                "outpostctl admin revoke",
                AdminRequest::RevokeAdmin { name },
            )
            .await?;
            let AdminResponse::Done { message } = resp else {
                return Err(unexpected("admin revoke", &resp));
            };
            emit(&format!(
                "{message}
"
            ));
        }
        AdminCmd::Renew {
            name,
            valid_for,
            out,
            overwrite,
        } => {
            let own = clientconfig::pem_der(&cfg.cert, "CERTIFICATE")
                .ok()
                .and_then(|der| outpost_controller::pki::identity(&der).ok())
                .and_then(|id| id.role.operator().map(|(n, _)| n.to_string()));
            let myself = name.is_none() || name == own;
            let target = if myself {
                own_path.to_path_buf()
            } else {
                let n = name.clone().unwrap_or_default();
                let out = out.unwrap_or_else(|| PathBuf::from(format!("{n}.conf")));
                if out.exists() && !overwrite {
                    bail!(
                        "{} already exists; pass --overwrite to replace it, or --out FILE",
                        out.display()
                    );
                }
                out
            };
            let (key, csr_der) = ctl::admins::new_key_and_csr()?;
            let resp = ask(
                "outpostctl admin renew",
                AdminRequest::RenewAdmin(outpost_proto::AdminRenewRequest {
                    name: if myself { None } else { name },
                    valid_for_secs: valid_for.map(|d| d.as_secs()),
                    csr_der,
                }),
            )
            .await?;
            let AdminResponse::AdminIssued(issued) = resp else {
                return Err(unexpected("admin renew", &resp));
            };
            // Written to a temporary file and renamed over the old one:
            // the old config stays whole until the new one is complete.
            write_config(&ctl::admins::config_for(cfg, &issued.cert_der, key), &target, true)
                .with_context(|| {
                    format!(
                        "the certificate was renewed (serial {}) and the old one revoked, but its config could not be saved;                          ask another admin to `outpostctl admin renew {}`",
                        issued.info.serial, issued.info.name
                    )
                })?;
            emit(&if machine {
                ctl::render(&ctl::admins::admin_json(&issued.info, now_ms()), fmt)
            } else {
                issued_summary("renewed", &issued, &target)
            });
        }
        AdminCmd::RenewServerCert { sans, valid_for } => {
            let resp = ask(
                "outpostctl admin renew-server-cert",
                AdminRequest::RenewServerCert {
                    extra_sans: sans,
                    valid_for_secs: valid_for.map(|d| d.as_secs()),
                },
            )
            .await?;
            let AdminResponse::Done { message } = resp else {
                return Err(unexpected("admin renew-server-cert", &resp));
            };
            emit(&format!(
                "{message}
"
            ));
        }
    }
    Ok(())
}

/// `outpostctl run` flags.
#[derive(clap::Args, Debug)]
struct RunFlags {
    /// Pod name (a DNS label: lower-case letters, digits and '-').
    name: String,
    /// Image to run, as the node's engine names it (pulled if missing).
    #[arg(long)]
    image: String,
    /// Node to run on; without it the scheduler places the pod.
    #[arg(long)]
    node: Option<String>,
    /// Namespace of the pod (default: default).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Ports: CONTAINER or CONTAINER:HOST (published on the node), repeatable.
    #[arg(long = "port")]
    ports: Vec<String>,
    /// Environment variables NAME=VALUE, repeatable.
    #[arg(long = "env")]
    env: Vec<String>,
    /// Always, OnFailure or Never.
    #[arg(long, default_value = "Always")]
    restart: String,
    /// Requests, e.g. cpu=100m,memory=64Mi.
    #[arg(long, default_value = "")]
    requests: String,
    /// Limits, e.g. cpu=500m,memory=128Mi,outpost.dev/pids=100.
    #[arg(long, default_value = "")]
    limits: String,
    /// Labels k=v,k2=v2.
    #[arg(long, default_value = "")]
    labels: String,
    /// Seconds between SIGTERM and SIGKILL when the pod stops.
    #[arg(long, default_value_t = outpost_proto::pod::DEFAULT_TERMINATION_GRACE_SECS)]
    grace_period: u64,
    /// Replace the image's entrypoint with the first argument after `--`.
    #[arg(long)]
    command: bool,
    /// Arguments (after `--`): the image's cmd, or with --command the whole command line.
    #[arg(last = true)]
    args: Vec<String>,
    #[command(flatten)]
    dry_run: DryRunFlag,
}

/// `outpostctl run` flags as the Pod manifest they stand for, so it goes
/// through the same validation as `apply`.
fn run_doc(f: RunFlags) -> Result<serde_json::Value> {
    use serde_json::json;
    let mut ports = Vec::new();
    for p in &f.ports {
        let (c, h) = match p.split_once(':') {
            Some((c, h)) => (c, Some(h)),
            None => (p.as_str(), None),
        };
        let c: u16 = c
            .parse()
            .map_err(|_| anyhow!("--port {p}: expected CONTAINER or CONTAINER:HOST"))?;
        let mut v = json!({"containerPort": c});
        if let Some(h) = h {
            let h: u16 = h
                .parse()
                .map_err(|_| anyhow!("--port {p}: host port is not a number"))?;
            v["hostPort"] = json!(h);
        }
        ports.push(v);
    }
    let mut env = Vec::new();
    for e in &f.env {
        let (k, v) = e
            .split_once('=')
            .ok_or_else(|| anyhow!("--env {e}: expected NAME=VALUE"))?;
        env.push(json!({"name": k, "value": v}));
    }
    let quantities =
        |flag: &str, spec: &str| -> Result<serde_json::Map<String, serde_json::Value>> {
            let mut m = serde_json::Map::new();
            for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (k, v) = part
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--{flag} {part}: expected NAME=QUANTITY"))?;
                m.insert(k.to_string(), json!(v));
            }
            Ok(m)
        };
    let mut container = json!({
        "name": f.name,
        "image": f.image,
        "ports": ports,
        "env": env,
        "resources": {"requests": quantities("requests", &f.requests)?, "limits": quantities("limits", &f.limits)?},
    });
    if f.command {
        container["command"] = json!(f.args);
    } else if !f.args.is_empty() {
        container["args"] = json!(f.args);
    }
    let labels = names::parse_labels(&f.labels).map_err(|e| anyhow!("--labels: {e}"))?;
    let mut doc = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f.name, "labels": labels, "namespace": f.namespace.unwrap_or_else(|| "default".into())},
        "spec": {
            "restartPolicy": f.restart,
            "terminationGracePeriodSeconds": f.grace_period,
            "containers": [container],
        },
    });
    if let Some(node) = f.node {
        doc["spec"]["nodeName"] = json!(node);
    }
    Ok(doc)
}

async fn push(
    cfg: &ClientConfig,
    file: PathBuf,
    node: Option<String>,
    site: Option<String>,
) -> Result<String> {
    use std::io::Write as _;
    let f = tokio::fs::File::open(&file)
        .await
        .map_err(|e| anyhow!("opening {}: {e}", file.display()))?;
    let size = f.metadata().await?.len();
    if size == 0 {
        bail!(
            "{} is empty; create it with `docker save IMAGE -o FILE.tar`",
            file.display()
        );
    }
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    eprintln!(
        "pushing {} ({})",
        file.display(),
        outpost_proto::units::format_bytes(size)
    );
    let mut done = Vec::new();
    client::push_image(
        cfg,
        tokio::io::BufReader::new(f),
        size,
        name,
        node,
        site,
        |p| {
            let mut err = std::io::stderr();
            match (&p.error, p.done, p.node.is_empty()) {
                (Some(e), _, _) => {
                    let _ = writeln!(err, "  {}: FAILED: {e}", p.node);
                }
                (None, true, false) => {
                    let _ = writeln!(err, "  {}: {}", p.node, p.message);
                    done.push(p.node.clone());
                }
                (None, false, false) => {
                    let _ = writeln!(err, "  {}: {}", p.node, p.message);
                }
                (None, _, true) => {
                    let pct = p.bytes.saturating_mul(100) / p.total.max(1);
                    let _ = writeln!(
                        err,
                        "  sent {} of {} ({pct}%)",
                        outpost_proto::units::format_bytes(p.bytes),
                        outpost_proto::units::format_bytes(p.total)
                    );
                }
            }
        },
    )
    .await?;
    Ok(format!(
        "image {} loaded on {} node(s): {}\n",
        file.display(),
        done.len(),
        done.join(", ")
    ))
}
