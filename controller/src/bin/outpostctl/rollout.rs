//! `outpostctl rollout status|history|undo|restart|pause|resume`: the I/O
//! around `ctl::rollout`. Reads go through the generic object API (get,
//! list, watch); changes are a get, an edit and an apply that carries the
//! `resourceVersion` it read, retried from a fresh read on Conflict.

use super::{apply_call, emit, get_json, list_all, unexpected, Reported};
use anyhow::{bail, Context as _, Result};
use outpost_controller::api::{self, Kind, Time};
use outpost_controller::client::{self, ServerError};
use outpost_controller::clientconfig::ClientConfig;
use outpost_controller::cluster::now_ms;
use outpost_controller::ctl::input::{self, Target};
use outpost_controller::ctl::rollout::{self as ro, Undo};
use outpost_proto::units::parse_duration;
use outpost_proto::{AdminRequest, AdminResponse, Document, ErrorCode};
use serde_json::Value;
use std::time::Duration;

/// Read-edit-apply attempts before a Conflict is given up on (the
/// controller writes the Deployment's status while it rolls).
const ATTEMPTS: usize = 5;

#[derive(clap::Subcommand, Debug)]
pub enum RolloutCmd {
    /// Wait for a rollout to finish, printing its progress; exits 1 when
    /// its progress deadline passes or on --timeout.
    Status(StatusArgs),
    /// Revisions of a deployment with their change cause
    /// (`kubernetes.io/change-cause`), or one revision's pod template.
    History {
        #[command(flatten)]
        target: TargetArgs,
        /// Show this revision's pod template.
        #[arg(long, default_value_t = 0)]
        revision: i64,
    },
    /// Go back to the previous revision, or to --to-revision.
    Undo {
        #[command(flatten)]
        target: TargetArgs,
        /// The revision to go back to (0: the one before the current).
        #[arg(long, default_value_t = 0)]
        to_revision: i64,
    },
    /// Restart every pod by a rolling update (sets
    /// `kubectl.kubernetes.io/restartedAt` on the pod template).
    Restart {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Stop rolling out template changes (scaling still works).
    Pause {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Roll out template changes again.
    Resume {
        #[command(flatten)]
        target: TargetArgs,
    },
}

/// `deployment NAME...`, `deploy/NAME`, `deployments NAME`, and `-n`.
#[derive(clap::Args, Debug)]
pub struct TargetArgs {
    /// `deployment NAME...` or `deployment/NAME...`.
    #[arg(required = true)]
    args: Vec<String>,
    /// Namespace (default: default).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Give up after this long (0: wait as long as it takes), e.g. 5m.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    timeout: Duration,
    /// Wait for the rollout to finish (`-w=false`: print the status once).
    #[arg(
        short = 'w',
        long,
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    watch: bool,
    /// Fail unless the rollout is at this revision (0: the latest).
    #[arg(long, default_value_t = 0)]
    revision: i64,
}

impl TargetArgs {
    fn namespace(&self) -> String {
        self.namespace
            .clone()
            .unwrap_or_else(|| api::DEFAULT_NAMESPACE.into())
    }

    /// The deployment names given.
    fn names(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for (t, ns) in input::parse_args(&self.args)? {
            match t {
                Target::Object(Kind::Deployment) => names.extend(ns),
                other => bail!(
                    "rollout works on deployments only, not {} (e.g. `outpostctl rollout status deployment/web`)",
                    other.qualified()
                ),
            }
        }
        if names.is_empty() {
            bail!("required resource name not specified, e.g. `outpostctl rollout status deployment/web`");
        }
        Ok(names)
    }

    fn one(&self) -> Result<String> {
        let mut names = self.names()?;
        if names.len() > 1 {
            bail!(
                "only one deployment at a time here; got {}",
                names.join(", ")
            );
        }
        Ok(names.remove(0))
    }
}

pub async fn run(cfg: &ClientConfig, cmd: RolloutCmd) -> Result<()> {
    match cmd {
        RolloutCmd::Status(a) => status(cfg, a).await,
        RolloutCmd::History { target, revision } => {
            let name = target.one()?;
            let ns = target.namespace();
            let (_, rss) = with_replicasets(cfg, &ns, &name).await?;
            emit(&ro::history(&name, &rss, Some(revision))?);
            Ok(())
        }
        RolloutCmd::Undo {
            target,
            to_revision,
        } => {
            if to_revision < 0 {
                bail!("--to-revision must be 0 (the previous revision) or a revision `outpostctl rollout history` lists");
            }
            let name = target.one()?;
            let ns = target.namespace();
            let said = edit(cfg, &ns, &name, true, |d, rss| {
                Ok(match ro::undo(d, rss, to_revision)? {
                    Undo::Apply(v) => Edit::Apply(v, "rolled back".into()),
                    Undo::Skipped(m) => Edit::Say(m),
                })
            })
            .await?;
            emit(&format!("{}/{name} {said}\n", Kind::Deployment.qualified()));
            Ok(())
        }
        RolloutCmd::Restart { target } => {
            each(cfg, &target, "restarted", |d| {
                ro::restart(d, Time(now_ms()))
            })
            .await
        }
        RolloutCmd::Pause { target } => each(cfg, &target, "paused", |d| ro::pause(d, true)).await,
        RolloutCmd::Resume { target } => {
            each(cfg, &target, "resumed", |d| ro::pause(d, false)).await
        }
    }
}

/// What an edit of a Deployment comes to.
enum Edit {
    /// Apply this, then say that.
    Apply(Value, String),
    /// Nothing to apply; say this.
    Say(String),
}

fn is_conflict(e: &anyhow::Error) -> bool {
    e.chain()
        .find_map(|c| c.downcast_ref::<ServerError>())
        .is_some_and(|s| s.0.code == ErrorCode::Conflict)
}

async fn with_replicasets(
    cfg: &ClientConfig,
    ns: &str,
    name: &str,
) -> Result<(Value, Vec<outpost_controller::api::ReplicaSet>)> {
    let d = get_json(cfg, Kind::Deployment, ns, name).await?;
    let all = list_all(cfg, Kind::ReplicaSet, Some(ns.to_string()), "", None).await?;
    let rss = ro::owned_replicasets(&d, &all)?;
    Ok((d, rss))
}

/// Reads the Deployment (and its ReplicaSets when `rss`), decides, and
/// applies what was decided guarded by the resourceVersion read; on a
/// Conflict, reads and decides again.
async fn edit(
    cfg: &ClientConfig,
    ns: &str,
    name: &str,
    rss: bool,
    decide: impl Fn(&Value, &[outpost_controller::api::ReplicaSet]) -> Result<Edit>,
) -> Result<String> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let (d, owned) = if rss {
            with_replicasets(cfg, ns, name).await?
        } else {
            (get_json(cfg, Kind::Deployment, ns, name).await?, Vec::new())
        };
        let (doc, said) = match decide(&d, &owned)? {
            Edit::Say(m) => return Ok(m),
            Edit::Apply(v, said) => (v, said),
        };
        let docs = vec![Document {
            source: format!("deployment/{name}"),
            json: serde_json::to_vec(&doc)?,
        }];
        match apply_call(cfg, docs, false).await {
            Ok(_) => return Ok(said),
            Err(e) if is_conflict(&e) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last
        .unwrap_or_else(|| anyhow::anyhow!("conflict"))
        .context(format!(
            "deployment {name:?} kept changing while being edited ({ATTEMPTS} attempts); try again"
        )))
}

/// Applies `f`'s edit to each named Deployment, kubectl's way: every one
/// is tried, failures are printed as they come, and any failure exits 1.
async fn each(
    cfg: &ClientConfig,
    target: &TargetArgs,
    done: &str,
    f: impl Fn(&Value) -> Result<Value, ro::RolloutError>,
) -> Result<()> {
    let names = target.names()?;
    let ns = target.namespace();
    let mut failed = false;
    for name in names {
        let r = edit(cfg, &ns, &name, false, |d, _| {
            Ok(Edit::Apply(f(d)?, done.to_string()))
        })
        .await;
        match r {
            Ok(said) => emit(&format!("{}/{name} {said}\n", Kind::Deployment.qualified())),
            Err(e) => {
                eprintln!("{}", super::report(&e));
                failed = true;
            }
        }
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}

/// `rollout status`: the status now, then (with -w) every change of it
/// from a watch on the Deployment, until it is rolled out, fails, or the
/// timeout passes.
async fn status(cfg: &ClientConfig, a: StatusArgs) -> Result<()> {
    let name = a.target.one()?;
    let ns = a.target.namespace();
    let revision = Some(a.revision);
    let d = get_json(cfg, Kind::Deployment, &ns, &name).await?;
    let first = ro::status(&d, revision)?;
    emit(&first.message);
    if first.done || !a.watch {
        return Ok(());
    }
    let wait = follow(cfg, &ns, &name, revision, first.message);
    if a.timeout.is_zero() {
        return wait.await;
    }
    match tokio::time::timeout(a.timeout, wait).await {
        Ok(r) => r,
        Err(_) => bail!("timed out waiting for the condition"),
    }
}

/// Prints each new status line of the Deployment from a watch; Ok once
/// it is rolled out.
async fn follow(
    cfg: &ClientConfig,
    ns: &str,
    name: &str,
    revision: Option<i64>,
    mut last: String,
) -> Result<()> {
    let mut stream = client::Stream::open(
        cfg,
        AdminRequest::Watch(outpost_proto::WatchRequest {
            kind: Kind::Deployment.resource().to_string(),
            namespace: Some(ns.to_string()),
            selector: String::new(),
            resource_version: 0,
        }),
    )
    .await?;
    let result = async {
        loop {
            let next = tokio::select! {
                r = stream.next() => r?,
                _ = tokio::signal::ctrl_c() => bail!("interrupted before deployment {name:?} rolled out"),
            };
            let ev = match next {
                None => bail!(
                    "the controller ended the watch before deployment {name:?} rolled out; run `outpostctl rollout status deployment/{name}` again"
                ),
                Some(AdminResponse::WatchEvent(ev)) => ev,
                Some(other) => return Err(unexpected("a watch", &other)),
            };
            let obj: Value =
                serde_json::from_slice(&ev.object).context("a watch event the controller sent")?;
            if outpost_controller::ctl::name_of(&obj) != name {
                continue;
            }
            if ev.kind == "DELETED" {
                bail!("deployment {name:?} was deleted while its rollout was watched");
            }
            let s = ro::status(&obj, revision)?;
            if s.message != last {
                emit(&s.message);
                last = s.message;
            }
            if s.done {
                return Ok(());
            }
        }
    }
    .await;
    stream.close().await;
    result
}
