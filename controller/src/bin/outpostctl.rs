//! `outpostctl`: the operator's CLI. Every call is one request on one QUIC
//! stream to the controller, authenticated with the admin certificate from
//! the config file (`--config`, `OUTPOST_CONFIG`, or `~/.outpost/config`).

use anyhow::{anyhow, bail, Result};
use clap::{Parser, Subcommand};
use outpost_controller::api::{self, Kind};
use outpost_controller::client;
use outpost_controller::clientconfig::{self, ClientConfig};
use outpost_controller::cluster::now_ms;
use outpost_controller::ctl::{self, Format};
use outpost_controller::{ctl_pods, manifest};
use outpost_proto::units::parse_duration;
use outpost_proto::{names, AdminRequest, AdminResponse, ObjectRef};
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
    /// List objects of a kind (pods, deployments, replicasets, services,
    /// endpoints, priorityclasses, nodes, events, tokens), or one by name.
    Get {
        kind: String,
        name: Option<String>,
        #[command(flatten)]
        scope: Scope,
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
    /// Show one object in detail, with its events.
    Describe {
        kind: String,
        name: String,
        #[command(flatten)]
        scope: Scope,
    },
    /// Create or update the objects in Kubernetes-style YAML manifests
    /// (`-` reads standard input).
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Validate and say what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
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
    /// Delete an object (a node's certificates stop being accepted).
    Delete {
        kind: String,
        name: String,
        #[command(flatten)]
        scope: Scope,
    },
    /// Set the replica count of a deployment or replicaset.
    Scale {
        kind: String,
        name: String,
        #[arg(long)]
        replicas: u32,
        #[command(flatten)]
        scope: Scope,
    },
    /// Mark a node unschedulable: nothing new is placed on it.
    Cordon { node: String },
    /// Mark a node schedulable again.
    Uncordon { node: String },
}

/// Namespace selection, as kubectl's `-n` / `-A`.
#[derive(clap::Args, Debug, Clone)]
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
            scope,
            node,
            object,
            limit,
        } => match kind.as_str() {
            "events" | "event" | "ev" => {
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
            "tokens" | "token" => {
                let AdminResponse::Tokens(tokens) = call(&cfg, AdminRequest::ListTokens).await?
                else {
                    bail!("unexpected answer")
                };
                match fmt {
                    Format::Table => ctl::tokens_table(&tokens, now),
                    _ => machine(ctl::list(tokens.iter().map(ctl::token_json).collect()), fmt),
                }
            }
            _ => get(&cfg, &kind, name, &scope, node, fmt, now).await?,
        },
        Cmd::Describe { kind, name, scope } => {
            let k = Kind::parse(&kind).ok_or_else(|| anyhow!("unknown kind {kind:?}"))?;
            let ns = scope.namespace.clone().unwrap_or_default();
            let obj = get_json(&cfg, &kind, &ns, &name).await?;
            match fmt {
                Format::Table => {
                    let ev_ref = api::machinery::object_ref(k, &ns, &name);
                    let events = match call(
                        &cfg,
                        AdminRequest::ListEvents {
                            object: Some(ev_ref),
                            limit: 20,
                        },
                    )
                    .await?
                    {
                        AdminResponse::Events(e) => e,
                        _ => Vec::new(),
                    };
                    match k {
                        Kind::Node => {
                            let AdminResponse::Node(node) =
                                call(&cfg, AdminRequest::GetNode { name }).await?
                            else {
                                bail!("unexpected answer")
                            };
                            ctl::describe_node(&node, now)
                        }
                        Kind::Pod => {
                            let pod: api::Pod = serde_json::from_value(obj)?;
                            let usage = match call(&cfg, AdminRequest::PodUsage).await? {
                                AdminResponse::PodUsage(u) => u
                                    .into_iter()
                                    .find(|(k, _)| {
                                        *k == api::ns_name(
                                            &pod.metadata.namespace,
                                            &pod.metadata.name,
                                        )
                                    })
                                    .map(|(_, u)| u),
                                _ => None,
                            };
                            ctl_pods::describe_pod(&pod, usage.as_ref(), &events, now)
                        }
                        _ => {
                            let mut o = ctl::render(&obj, Format::Yaml);
                            ctl_pods::events_section(&mut o, &events, now);
                            o
                        }
                    }
                }
                _ => machine(obj, fmt),
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
        Cmd::Apply { file, dry_run } => {
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
            let name = if file.as_os_str() == "-" {
                "<stdin>".to_string()
            } else {
                file.display().to_string()
            };
            let docs = yaml_documents(&name, &text)
                .map_err(|e| anyhow!("{name} was not applied; nothing changed:\n{e}"))?;
            if docs.is_empty() {
                bail!("{name} holds no objects");
            }
            apply(&cfg, docs, dry_run)
                .await
                .map_err(|e| anyhow!("{name} was not applied; nothing changed:\n{e}"))?
        }
        Cmd::Run(flags) => {
            let doc = run_doc(flags)?;
            apply(
                &cfg,
                vec![outpost_proto::Document {
                    source: "outpostctl run".into(),
                    json: serde_json::to_vec(&doc)?,
                }],
                false,
            )
            .await?
        }
        Cmd::Logs {
            pod,
            container,
            follow,
            tail,
            previous,
            namespace,
        } => {
            use std::io::Write as _;
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
                let pods: Vec<api::Pod> = list_all(&cfg, "pods", None, "", node)
                    .await?
                    .into_iter()
                    .map(serde_json::from_value)
                    .collect::<Result<_, _>>()?;
                let AdminResponse::PodUsage(usage) = call(&cfg, AdminRequest::PodUsage).await?
                else {
                    bail!("unexpected answer")
                };
                let usage: std::collections::HashMap<String, outpost_proto::pod::Usage> =
                    usage.into_iter().collect();
                let rows: Vec<(api::Pod, outpost_proto::pod::Usage)> = pods
                    .into_iter()
                    .filter_map(|p| {
                        let u =
                            *usage.get(&api::ns_name(&p.metadata.namespace, &p.metadata.name))?;
                        Some((p, u))
                    })
                    .collect();
                match fmt {
                    Format::Table => ctl_pods::top_pods(&rows),
                    _ => machine(ctl_pods::top_pods_json(&rows), fmt),
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
        Cmd::Delete { kind, name, scope } => {
            let AdminResponse::Done { message } = call(
                &cfg,
                AdminRequest::Delete(outpost_proto::DeleteRequest {
                    object: ObjectRef {
                        kind,
                        namespace: scope.namespace.unwrap_or_default(),
                        name,
                    },
                    propagation: outpost_proto::Propagation::Background,
                    dry_run: false,
                }),
            )
            .await?
            else {
                bail!("unexpected answer")
            };
            message + "\n"
        }
        Cmd::Scale {
            kind,
            name,
            replicas,
            scope,
        } => {
            let AdminResponse::Done { message } = call(
                &cfg,
                AdminRequest::Scale(outpost_proto::ScaleRequest {
                    object: ObjectRef {
                        kind,
                        namespace: scope.namespace.unwrap_or_default(),
                        name,
                    },
                    replicas,
                }),
            )
            .await?
            else {
                bail!("unexpected answer")
            };
            message + "\n"
        }
        Cmd::Cordon { node } => cordon(&cfg, node, true).await?,
        Cmd::Uncordon { node } => cordon(&cfg, node, false).await?,
    })
}

async fn cordon(cfg: &ClientConfig, node: String, on: bool) -> Result<String> {
    let AdminResponse::Done { message } = call(
        cfg,
        AdminRequest::Cordon {
            node,
            unschedulable: on,
        },
    )
    .await?
    else {
        bail!("unexpected answer")
    };
    Ok(message + "\n")
}

/// One object as JSON.
async fn get_json(
    cfg: &ClientConfig,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<serde_json::Value> {
    let AdminResponse::Object(bytes) = call(
        cfg,
        AdminRequest::Get(ObjectRef {
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }),
    )
    .await?
    else {
        bail!("unexpected answer")
    };
    Ok(serde_json::from_slice(&bytes)?)
}

/// Every object of a kind, page by page.
async fn list_all(
    cfg: &ClientConfig,
    kind: &str,
    namespace: Option<String>,
    selector: &str,
    node: Option<String>,
) -> Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    let mut from = String::new();
    loop {
        let AdminResponse::List(page) = call(
            cfg,
            AdminRequest::List(outpost_proto::ListRequest {
                kind: kind.to_string(),
                namespace: namespace.clone(),
                selector: selector.to_string(),
                node: node.clone(),
                limit: 0,
                continue_from: from.clone(),
            }),
        )
        .await?
        else {
            bail!("unexpected answer")
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

async fn get(
    cfg: &ClientConfig,
    kind: &str,
    name: Option<String>,
    scope: &Scope,
    node: Option<String>,
    fmt: Format,
    now: u64,
) -> Result<String> {
    let k = Kind::parse(kind).ok_or_else(|| {
        anyhow!("the server doesn't have a resource type {kind:?}; try pods, deployments, replicasets, services, endpoints, priorityclasses, nodes, events or tokens")
    })?;
    let namespace = if scope.all_namespaces {
        None
    } else {
        Some(
            scope
                .namespace
                .clone()
                .unwrap_or_else(|| api::DEFAULT_NAMESPACE.into()),
        )
    };
    let items = match &name {
        Some(n) => vec![get_json(cfg, kind, namespace.as_deref().unwrap_or(""), n).await?],
        None => list_all(cfg, kind, namespace.clone(), &scope.selector, node).await?,
    };
    if fmt != Format::Table {
        return Ok(match name {
            Some(_) => machine(items.into_iter().next().unwrap_or_default(), fmt),
            None => machine(ctl::list(items), fmt),
        });
    }
    if items.is_empty() {
        return Ok(match &namespace {
            Some(ns) if k.namespaced() => format!("No resources found in {ns} namespace.\n"),
            _ => "No resources found.\n".into(),
        });
    }
    Ok(match k {
        Kind::Node => {
            let nodes: Vec<outpost_proto::NodeView> = match name {
                Some(n) => {
                    let AdminResponse::Node(node) =
                        call(cfg, AdminRequest::GetNode { name: n }).await?
                    else {
                        bail!("unexpected answer")
                    };
                    vec![*node]
                }
                None => {
                    let AdminResponse::Nodes(nodes) = call(cfg, AdminRequest::ListNodes).await?
                    else {
                        bail!("unexpected answer")
                    };
                    nodes
                }
            };
            ctl::nodes_table(&nodes, now)
        }
        Kind::Pod => {
            let pods: Vec<api::Pod> = items
                .into_iter()
                .map(serde_json::from_value)
                .collect::<Result<_, _>>()?;
            ctl_pods::pods_table(&pods, now, scope.all_namespaces, false)
        }
        _ => {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|v| {
                    vec![
                        v["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        ctl::age(
                            v["metadata"]["creationTimestamp"]
                                .as_str()
                                .and_then(|t| api::meta::parse_rfc3339(t).ok())
                                .unwrap_or(0),
                            now,
                        ),
                    ]
                })
                .collect();
            ctl::table(&["NAME", "AGE"], &rows)
        }
    })
}

async fn apply(
    cfg: &ClientConfig,
    documents: Vec<outpost_proto::Document>,
    dry_run: bool,
) -> Result<String> {
    let AdminResponse::Applied(results) = call(
        cfg,
        AdminRequest::Apply(outpost_proto::ApplyRequest { documents, dry_run }),
    )
    .await?
    else {
        bail!("unexpected answer")
    };
    let mut out = String::new();
    for r in results {
        for w in &r.warnings {
            eprintln!("Warning: {}/{}: {w}", r.kind, r.name);
        }
        out.push_str(&format!(
            "{}/{} {}{}\n",
            r.kind,
            r.name,
            r.outcome,
            if dry_run { " (dry run)" } else { "" }
        ));
    }
    Ok(out)
}

/// TEMPORARY: YAML documents as JSON, until the manifest module's
/// `documents` lands.
fn yaml_documents(name: &str, text: &str) -> Result<Vec<outpost_proto::Document>> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v: serde_json::Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| anyhow!("document {}: not valid YAML: {e}", i + 1))?;
        if v.is_null() {
            continue;
        }
        out.push(outpost_proto::Document {
            source: format!("{name}: document {}", i + 1),
            json: serde_json::to_vec(&v)?,
        });
    }
    Ok(out)
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
