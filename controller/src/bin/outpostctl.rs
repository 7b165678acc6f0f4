//! `outpostctl`: the operator's CLI. Every call is one request on one QUIC
//! stream to the controller, authenticated with the admin certificate from
//! the config file (`--config`, `OUTPOST_CONFIG`, or `~/.outpost/config`).

use anyhow::{anyhow, bail, Result};
use clap::{Parser, Subcommand};
use outpost_controller::client;
use outpost_controller::clientconfig::{self, ClientConfig};
use outpost_controller::ctl::{self, Format};
use outpost_controller::state::now_ms;
use outpost_controller::{ctl_pods, manifest};
use outpost_proto::units::parse_duration;
use outpost_proto::{names, AdminRequest, AdminResponse};
use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "outpostctl", version, about = "Operate an Outpost cluster")]
struct Cli {
    /// Config file (default: $OUTPOST_CONFIG, then ~/.outpost/config).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Output format for listings.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    output: Format,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List objects: nodes, pods, events, tokens (or one by name).
    Get {
        #[arg(value_parser = ["nodes", "node", "no", "pods", "pod", "po", "events", "event", "ev", "tokens", "token"])]
        kind: String,
        name: Option<String>,
        /// With pods: only those bound to this node.
        #[arg(long)]
        node: Option<String>,
        /// With events: only those about this object (e.g. node/edge-1).
        #[arg(long = "for")]
        object: Option<String>,
        /// With events: how many of the newest to show.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one node or pod in detail, with its events.
    Describe {
        #[arg(value_parser = ["node", "nodes", "no", "pod", "pods", "po"])]
        kind: String,
        name: String,
    },
    /// Create or update the objects in a Kubernetes-style YAML manifest
    /// (v1 Pod; `-` reads standard input).
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Run a pod with one container on a node.
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
    },
    /// cpu and memory in use, from the agents' measurements.
    Top {
        #[arg(value_parser = ["pods", "pod", "po", "nodes", "node", "no"])]
        kind: String,
        /// With pods: only those on this node.
        #[arg(long)]
        node: Option<String>,
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
    /// Delete a node (its certificates stop being accepted) or a pod.
    Delete {
        #[arg(value_parser = ["node", "nodes", "no", "pod", "pods", "po"])]
        kind: String,
        name: String,
    },
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

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(out) => print!("{out}"),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

async fn call(cfg: &ClientConfig, req: AdminRequest) -> Result<AdminResponse> {
    client::call(cfg, req).await
}

fn machine(v: serde_json::Value, format: Format) -> String {
    ctl::render(&v, format)
}

async fn run(cli: Cli) -> Result<String> {
    let path = clientconfig::resolve_path(cli.config.as_deref())
        .ok_or_else(|| anyhow!("no config: pass --config or set OUTPOST_CONFIG"))?;
    let cfg = ClientConfig::load(&path)?;
    let now = now_ms();
    let fmt = cli.output;
    Ok(match cli.cmd {
        Cmd::Get {
            kind,
            name,
            node,
            object,
            limit,
        } => match (kind.as_str(), name) {
            ("pods" | "pod" | "po", None) => {
                let AdminResponse::Pods(pods) = call(&cfg, AdminRequest::ListPods { node }).await?
                else {
                    bail!("unexpected answer")
                };
                match fmt {
                    Format::Table if pods.is_empty() => {
                        "No pods. Create one with `outpostctl run` or `outpostctl apply -f`.\n"
                            .into()
                    }
                    Format::Table => ctl_pods::pods_table(&pods, now),
                    _ => machine(
                        ctl::list(pods.iter().map(ctl_pods::pod_json).collect()),
                        fmt,
                    ),
                }
            }
            ("pods" | "pod" | "po", Some(name)) => {
                let AdminResponse::Pod(pod) = call(&cfg, AdminRequest::GetPod { name }).await?
                else {
                    bail!("unexpected answer")
                };
                match fmt {
                    Format::Table => ctl_pods::pods_table(std::slice::from_ref(&*pod), now),
                    _ => machine(ctl_pods::pod_json(&pod), fmt),
                }
            }
            ("nodes" | "node" | "no", None) => {
                let AdminResponse::Nodes(nodes) = call(&cfg, AdminRequest::ListNodes).await? else {
                    bail!("unexpected answer")
                };
                match fmt {
                    Format::Table if nodes.is_empty() => "No nodes enrolled yet. Create a token with `outpostctl token create` and start an agent with it.\n".into(),
                    Format::Table => ctl::nodes_table(&nodes, now),
                    _ => machine(ctl::list(nodes.iter().map(ctl::node_json).collect()), fmt),
                }
            }
            ("nodes" | "node" | "no", Some(name)) => {
                let AdminResponse::Node(node) = call(&cfg, AdminRequest::GetNode { name }).await?
                else {
                    bail!("unexpected answer")
                };
                match fmt {
                    Format::Table => ctl::nodes_table(std::slice::from_ref(&*node), now),
                    _ => machine(ctl::node_json(&node), fmt),
                }
            }
            ("events" | "event" | "ev", _) => {
                let AdminResponse::Events(events) =
                    call(&cfg, AdminRequest::ListEvents { object, limit }).await?
                else {
                    bail!("unexpected answer")
                };
                match fmt {
                    Format::Table => ctl::events_table(&events, now),
                    _ => machine(ctl::list(events.iter().map(ctl::event_json).collect()), fmt),
                }
            }
            _ => {
                let AdminResponse::Tokens(tokens) = call(&cfg, AdminRequest::ListTokens).await?
                else {
                    bail!("unexpected answer")
                };
                match fmt {
                    Format::Table => ctl::tokens_table(&tokens, now),
                    _ => machine(ctl::list(tokens.iter().map(ctl::token_json).collect()), fmt),
                }
            }
        },
        Cmd::Describe { kind, name } if matches!(kind.as_str(), "pod" | "pods" | "po") => {
            let AdminResponse::Pod(pod) =
                call(&cfg, AdminRequest::GetPod { name: name.clone() }).await?
            else {
                bail!("unexpected answer")
            };
            match fmt {
                Format::Table => {
                    let events = match call(
                        &cfg,
                        AdminRequest::ListEvents {
                            object: Some(format!("pod/{name}")),
                            limit: 20,
                        },
                    )
                    .await?
                    {
                        AdminResponse::Events(e) => e,
                        _ => Vec::new(),
                    };
                    ctl_pods::describe_pod(&pod, &events, now)
                }
                _ => machine(ctl_pods::pod_json(&pod), fmt),
            }
        }
        Cmd::Describe { name, .. } => {
            let AdminResponse::Node(node) = call(&cfg, AdminRequest::GetNode { name }).await?
            else {
                bail!("unexpected answer")
            };
            match fmt {
                Format::Table => ctl::describe_node(&node, now),
                _ => machine(ctl::node_json(&node), fmt),
            }
        }
        Cmd::Token { cmd } => match cmd {
            TokenCmd::Create {
                ttl,
                uses,
                labels,
                description,
            } => {
                let labels = names::parse_labels(&labels).map_err(|e| anyhow!("--labels: {e}"))?;
                let resp = call(
                    &cfg,
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
                    bail!("unexpected answer")
                };
                match fmt {
                    Format::Table => format!(
                        "token:   {token}\nca-hash: {ca_hash}\nexpires: {}\n\nOn the edge box:\n  outpost-agent --controller {} --token {token} --ca-hash {ca_hash} --data-dir /var/lib/outpost\n",
                        ctl::rfc3339(info.expires_ms),
                        cfg.controller
                    ),
                    _ => machine(serde_json::json!({"token": token, "caHash": ca_hash, "info": ctl::token_json(&info)}), fmt),
                }
            }
            TokenCmd::List => {
                let AdminResponse::Tokens(tokens) = call(&cfg, AdminRequest::ListTokens).await?
                else {
                    bail!("unexpected answer")
                };
                match fmt {
                    Format::Table => ctl::tokens_table(&tokens, now),
                    _ => machine(ctl::list(tokens.iter().map(ctl::token_json).collect()), fmt),
                }
            }
            TokenCmd::Revoke { id } => {
                let AdminResponse::Done { message } =
                    call(&cfg, AdminRequest::RevokeToken { id }).await?
                else {
                    bail!("unexpected answer")
                };
                message + "\n"
            }
        },
        Cmd::Delete { kind, name } if matches!(kind.as_str(), "pod" | "pods" | "po") => {
            let AdminResponse::Done { message } =
                call(&cfg, AdminRequest::DeletePod { name }).await?
            else {
                bail!("unexpected answer")
            };
            message + "\n"
        }
        Cmd::Apply { file } => {
            let text = if file.as_os_str() == "-" {
                let mut t = String::new();
                std::io::Read::take(std::io::stdin(), manifest::MAX_MANIFEST as u64 + 1)
                    .read_to_string(&mut t)
                    .map_err(|e| anyhow!("reading standard input: {e}"))?;
                t
            } else {
                outpost_proto::files::read_bounded(&file, manifest::MAX_MANIFEST as u64)
                    .map_err(|e| anyhow!("reading {}: {e}", file.display()))?
            };
            let objects = manifest::parse(&text).map_err(|e| {
                anyhow!("{} was not applied; nothing changed:\n{e}", file.display())
            })?;
            if objects.is_empty() {
                bail!("{} holds no objects", file.display());
            }
            let mut out = String::new();
            for obj in objects {
                match obj {
                    manifest::Object::Pod(pod) => {
                        let AdminResponse::Done { message } =
                            call(&cfg, AdminRequest::ApplyPod { pod: Box::new(pod) }).await?
                        else {
                            bail!("unexpected answer")
                        };
                        out.push_str(&message);
                        out.push('\n');
                    }
                }
            }
            out
        }
        Cmd::Run(flags) => {
            let pod = run_spec(flags)?;
            let AdminResponse::Done { message } =
                call(&cfg, AdminRequest::ApplyPod { pod: Box::new(pod) }).await?
            else {
                bail!("unexpected answer")
            };
            message + "\n"
        }
        Cmd::Logs {
            pod,
            container,
            follow,
            tail,
            previous,
        } => {
            use std::io::Write as _;
            let req = AdminRequest::Logs(outpost_proto::LogsRequest {
                pod,
                container,
                follow,
                tail,
                previous,
            });
            let mut stdout = std::io::stdout();
            client::stream(&cfg, req, |r| {
                if let AdminResponse::Data(bytes) = r {
                    stdout.write_all(&bytes)?;
                    stdout.flush()?;
                }
                Ok(())
            })
            .await?;
            String::new()
        }
        Cmd::Top { kind, node } => {
            if matches!(kind.as_str(), "pods" | "pod" | "po") {
                let AdminResponse::Pods(pods) = call(&cfg, AdminRequest::ListPods { node }).await?
                else {
                    bail!("unexpected answer")
                };
                match fmt {
                    Format::Table => ctl_pods::top_pods(&pods),
                    _ => machine(ctl_pods::top_pods_json(&pods), fmt),
                }
            } else {
                let AdminResponse::Nodes(nodes) = call(&cfg, AdminRequest::ListNodes).await? else {
                    bail!("unexpected answer")
                };
                let usage = match call(&cfg, AdminRequest::NodeUsage).await? {
                    AdminResponse::NodeUsage(u) => u,
                    _ => Vec::new(),
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
                match fmt {
                    Format::Table => ctl_pods::top_nodes(&rows),
                    _ => machine(ctl_pods::top_nodes_json(&rows), fmt),
                }
            }
        }
        Cmd::Image {
            cmd: ImageCmd::Push { file, node, site },
        } => push(&cfg, file, node, site).await?,
        Cmd::Delete { name, .. } => {
            let AdminResponse::Done { message } =
                call(&cfg, AdminRequest::DeleteNode { name }).await?
            else {
                bail!("unexpected answer")
            };
            message + "\n"
        }
    })
}

/// `outpostctl run` flags.
#[derive(clap::Args, Debug)]
struct RunFlags {
    /// Pod name (a DNS label: lower-case letters, digits and '-').
    name: String,
    /// Image to run, as the node's engine names it (pulled if missing).
    #[arg(long)]
    image: String,
    /// Node to run on (there is no scheduler yet).
    #[arg(long)]
    node: String,
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
}

/// `outpostctl run` flags as a one-container pod, written as the manifest
/// it stands for so it goes through the same validation as `apply`.
fn run_spec(f: RunFlags) -> Result<outpost_proto::pod::PodSpec> {
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
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f.name, "labels": labels},
        "spec": {
            "nodeName": f.node,
            "restartPolicy": f.restart,
            "terminationGracePeriodSeconds": f.grace_period,
            "containers": [container],
        },
    });
    let text = serde_json::to_string(&doc)?;
    let mut objects = manifest::parse(&text).map_err(|e| anyhow!("{e}"))?;
    match objects.pop() {
        Some(manifest::Object::Pod(p)) => Ok(p),
        None => bail!("no pod"),
    }
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
