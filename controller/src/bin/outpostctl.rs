//! `outpostctl`: the operator's CLI. Every call is one request on one QUIC
//! stream to the controller, authenticated with the admin certificate from
//! the config file (`--config`, `OUTPOST_CONFIG`, or `~/.outpost/config`).

use anyhow::{anyhow, bail, Result};
use clap::{Parser, Subcommand};
use outpost_controller::client;
use outpost_controller::clientconfig::{self, ClientConfig};
use outpost_controller::ctl::{self, Format};
use outpost_controller::state::now_ms;
use outpost_proto::units::parse_duration;
use outpost_proto::{names, AdminRequest, AdminResponse};
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
    /// List objects: nodes, events, tokens (or one node by name).
    Get {
        #[arg(value_parser = ["nodes", "node", "no", "events", "event", "ev", "tokens", "token"])]
        kind: String,
        name: Option<String>,
        /// With events: only those about this object (e.g. node/edge-1).
        #[arg(long = "for")]
        object: Option<String>,
        /// With events: how many of the newest to show.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one node in detail: conditions, signals, capacity.
    Describe {
        #[arg(value_parser = ["node", "nodes", "no"])]
        kind: String,
        name: String,
    },
    /// Bootstrap tokens for enrolling agents.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Delete a node; its certificates stop being accepted.
    Delete {
        #[arg(value_parser = ["node", "nodes", "no"])]
        kind: String,
        name: String,
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
            object,
            limit,
        } => match (kind.as_str(), name) {
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
