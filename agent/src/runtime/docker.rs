//! A thin typed wrapper over the Docker Engine API (bollard), limited to what
//! the reconciler needs: our own containers (by label), create/start/stop/
//! remove, inspect, the tail of a container's output, image presence,
//! listing and pull with progress, exec for probes.
//!
//! Every listing filters on [`LABEL_MANAGED`] and [`LABEL_NODE`], and every
//! call that changes a container takes an id that came from such a listing
//! or from our own create, so the agent never touches anyone else's
//! containers. bollard responses are turned into small owned structs at once
//! and dropped, so nothing big outlives a call.

use super::{LABEL_CONTAINER, LABEL_GENERATION, LABEL_MANAGED, LABEL_NODE, LABEL_POD, LABEL_RUN};
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerStatsResponse, HostConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, KillContainerOptions,
    ListContainersOptions, ListImagesOptions, LogsOptionsBuilder, RemoveContainerOptions,
    RemoveImageOptions, StartContainerOptions, StatsOptionsBuilder, StopContainerOptions,
};
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

/// Why an engine call failed, sorted by what the caller does about it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine cannot be reached (socket missing, daemon down, timeout):
    /// retry later, report pods as `RuntimeUnavailable`.
    #[error("the Docker engine is unavailable: {0}")]
    Unavailable(String),
    /// The container, image or exec does not exist (any more).
    #[error("not found: {0}")]
    NotFound(String),
    /// The engine refused or failed the call; the message is the engine's.
    #[error("{0}")]
    Failed(String),
}

impl EngineError {
    fn from_bollard(e: BollardError) -> EngineError {
        match e {
            BollardError::DockerResponseServerError {
                status_code: 404,
                message,
            } => EngineError::NotFound(message),
            BollardError::DockerResponseServerError {
                status_code,
                message,
            } => EngineError::Failed(format!("{message} (HTTP {status_code})")),
            BollardError::DockerStreamError { error } => EngineError::Failed(error),
            BollardError::JsonDataError { message, .. } => EngineError::Failed(message),
            other => EngineError::Unavailable(other.to_string()),
        }
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, EngineError::Unavailable(_))
    }
}

type Result<T> = std::result::Result<T, EngineError>;

/// Coarse container state from a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Created but never started.
    Created,
    Running,
    /// Exited, dead or otherwise not running.
    Exited,
}

/// One of our containers, from a listing: identity from its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OurContainer {
    pub id: String,
    pub pod: String,
    pub generation: u64,
    /// Container name in the pod, or [`super::PAUSE_CONTAINER`].
    pub container: String,
    pub run: u32,
    pub image: String,
    pub state: RunState,
    /// Writable layer size; only filled when listed with `size`.
    pub size_rw: u64,
}

impl OurContainer {
    /// Reads our labels off a listing entry; `None` when a label is missing
    /// or malformed (such a container is left alone).
    fn from_summary(s: bollard::models::ContainerSummary) -> Option<OurContainer> {
        use bollard::models::ContainerSummaryStateEnum as S;
        let labels = s.labels?;
        let state = match s.state {
            Some(S::RUNNING | S::RESTARTING | S::PAUSED) => RunState::Running,
            Some(S::CREATED) => RunState::Created,
            _ => RunState::Exited,
        };
        Some(OurContainer {
            id: s.id?,
            pod: labels.get(LABEL_POD)?.clone(),
            generation: labels.get(LABEL_GENERATION)?.parse().ok()?,
            container: labels.get(LABEL_CONTAINER)?.clone(),
            run: labels.get(LABEL_RUN)?.parse().ok()?,
            image: s.image.unwrap_or_default(),
            state,
            size_rw: s.size_rw.and_then(|v| u64::try_from(v).ok()).unwrap_or(0),
        })
    }
}

/// What inspect tells about one container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inspected {
    pub running: bool,
    pub exit_code: i64,
    pub oom_killed: bool,
    /// Engine error text (e.g. a failed start), empty if none.
    pub error: String,
    pub started_ms: u64,
    pub finished_ms: u64,
    /// Its address on each network it is attached to, by network name
    /// (none for `container:` network mode); see [`pod_address`].
    pub networks: BTreeMap<String, IpAddr>,
    /// Its main process on the host, 0 when it is not running.
    pub pid: u32,
}

/// A pod's address among its network holder's networks: the one on the
/// pod network (`--pod-network`) when one is set, otherwise the first one
/// (the engine's default bridge, the only network such a holder is on).
pub fn pod_address(
    networks: &BTreeMap<String, IpAddr>,
    pod_network: Option<&str>,
) -> Option<IpAddr> {
    match pod_network {
        Some(n) => networks.get(n).copied(),
        None => networks.values().next().copied(),
    }
}

/// What to tell a person when the engine refused a pod's network holder
/// because the pod network (`--pod-network`) does not exist: its name and
/// the fix. `None` when `message` (the engine's, from a create, a start or
/// a container's recorded error) is about something else.
pub fn pod_network_missing(message: &str, pod_network: Option<&str>) -> Option<String> {
    let n = pod_network?;
    // Docker 20.10 through 27 answer a start (or, some versions, the
    // create) with 404 "network NAME not found".
    message
        .contains(&format!("network {n} not found"))
        .then(|| {
            format!(
                "the pod network {n:?} does not exist on this node's Docker engine: create it \
             (`docker network create {n}`) or start the agent with another --pod-network \
             (unset: the default bridge)"
            )
        })
}

/// Everything needed to create one container.
#[derive(Debug, Clone, Default)]
pub struct CreateSpec {
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// Entrypoint override, if not empty.
    pub entrypoint: Vec<String>,
    /// Cmd override, if not empty.
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    /// `(container port, protocol "tcp"/"udp", host port)` published.
    pub publish: Vec<(u16, &'static str, u16)>,
    /// `container:<id>` to join the pause container's netns, or the name
    /// of the network to attach to; empty: the default bridge.
    pub network_mode: String,
    pub nano_cpus: i64,
    pub memory_bytes: i64,
    pub pids_limit: i64,
    /// `host:container[:ro]`.
    pub binds: Vec<String>,
    pub init: bool,
    /// Host name inside the container; empty: the engine's default. Only
    /// the pause container sets it (to the pod name, as in Kubernetes);
    /// the pod's containers share its UTS view through its netns.
    pub hostname: String,
    /// Resolver settings (`HostConfig.Dns*`); only on the container that
    /// holds the pod's network, whose resolv.conf the others share.
    pub dns: Option<crate::dns::PodDnsConfig>,
}

/// A container's usage as the engine's stats API reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineUsage {
    /// Cumulative cpu time in ns.
    pub cpu_ns: Option<u64>,
    /// Memory usage less inactive file pages (the working set, as the
    /// kubelet and `docker stats` count it).
    pub memory_working_set: Option<u64>,
    /// Tasks (processes and threads).
    pub pids: Option<u64>,
}

/// The figures of one stats response (cgroup v2 or v1 field names).
pub fn usage_from_stats(r: &ContainerStatsResponse) -> EngineUsage {
    let memory = r.memory_stats.as_ref();
    let inactive = memory
        .and_then(|m| m.stats.as_ref())
        .and_then(|s| {
            s.get("inactive_file")
                .or_else(|| s.get("total_inactive_file"))
        })
        .copied()
        .unwrap_or(0);
    EngineUsage {
        cpu_ns: r
            .cpu_stats
            .as_ref()
            .and_then(|c| c.cpu_usage.as_ref())
            .and_then(|u| u.total_usage),
        memory_working_set: memory
            .and_then(|m| m.usage)
            .map(|u| u.saturating_sub(inactive)),
        pids: r.pids_stats.as_ref().and_then(|p| p.current),
    }
}

/// One image in the engine.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Image {
    pub id: String,
    /// Repo tags (`repo:tag`), without the engine's `<none>:<none>`.
    pub tags: Vec<String>,
    /// Repo digests (`repo@sha256:...`), without `<none>@<none>`.
    pub digests: Vec<String>,
    pub size_bytes: u64,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Containers using it; -1 when the engine did not count.
    pub containers: i64,
}

/// What an image was built for, from its config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Platform {
    /// Go spelling, as the engine reports it: `amd64`, `arm64`, `arm`.
    pub architecture: String,
    pub os: String,
}

/// The engine, for this node.
#[derive(Clone)]
pub struct Engine {
    docker: bollard::Docker,
    node: String,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("node", &self.node).finish()
    }
}

/// How long one exec probe poll waits between looks at the exec's state.
const EXEC_POLL: Duration = Duration::from_millis(100);

impl Engine {
    pub fn new(docker: bollard::Docker, node: &str) -> Engine {
        Engine {
            docker,
            node: node.to_string(),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn docker(&self) -> &bollard::Docker {
        &self.docker
    }

    /// Labels every container of ours carries.
    pub fn labels(
        &self,
        pod: &str,
        generation: u64,
        container: &str,
        run: u32,
    ) -> BTreeMap<String, String> {
        [
            (LABEL_MANAGED, "true".to_string()),
            (LABEL_NODE, self.node.clone()),
            (LABEL_POD, pod.to_string()),
            (LABEL_GENERATION, generation.to_string()),
            (LABEL_CONTAINER, container.to_string()),
            (LABEL_RUN, run.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Our containers on this node (all states). `size` asks for the
    /// writable layer sizes, which makes the call slow: only under disk
    /// pressure.
    pub async fn list_ours(&self, size: bool) -> Result<Vec<OurContainer>> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_MANAGED}=true"),
                format!("{LABEL_NODE}={}", self.node),
            ],
        )]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                size,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(EngineError::from_bollard)?;
        Ok(list
            .into_iter()
            .filter_map(OurContainer::from_summary)
            .collect())
    }

    /// Creates a container (not started) with Docker's restart policy "no":
    /// the agent restarts containers itself.
    pub async fn create(&self, spec: &CreateSpec) -> Result<String> {
        let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        let mut exposed = Vec::new();
        for (port, proto, host) in &spec.publish {
            let key = format!("{port}/{proto}");
            exposed.push(key.clone());
            port_bindings.insert(
                key,
                Some(vec![PortBinding {
                    host_ip: None,
                    host_port: Some(host.to_string()),
                }]),
            );
        }
        let positive = |v: i64| (v > 0).then_some(v);
        let host_config = HostConfig {
            network_mode: (!spec.network_mode.is_empty()).then(|| spec.network_mode.clone()),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            nano_cpus: positive(spec.nano_cpus),
            memory: positive(spec.memory_bytes),
            // Equal to memory: no swap on top of the limit.
            memory_swap: positive(spec.memory_bytes),
            pids_limit: positive(spec.pids_limit),
            binds: non_empty(&spec.binds),
            init: spec.init.then_some(true),
            dns: spec.dns.as_ref().map(|d| d.servers.clone()),
            dns_search: spec.dns.as_ref().map(|d| d.search.clone()),
            dns_options: spec.dns.as_ref().map(|d| d.options.clone()),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            hostname: (!spec.hostname.is_empty()).then(|| spec.hostname.clone()),
            entrypoint: non_empty(&spec.entrypoint),
            cmd: non_empty(&spec.cmd),
            env: non_empty(&spec.env),
            labels: Some(spec.labels.clone().into_iter().collect()),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            host_config: Some(host_config),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(spec.name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(EngineError::from_bollard)?;
        Ok(created.id)
    }

    pub async fn start(&self, id: &str) -> Result<()> {
        self.docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(EngineError::from_bollard)
    }

    /// `docker stop -t grace`: SIGTERM, then SIGKILL after `grace_secs`.
    /// A container already stopped or gone is fine.
    pub async fn stop(&self, id: &str, grace_secs: u64) -> Result<()> {
        let t = i32::try_from(grace_secs).unwrap_or(i32::MAX);
        match self
            .docker
            .stop_container(
                id,
                Some(StopContainerOptions {
                    t: Some(t),
                    signal: None,
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            // 304: already stopped.
            Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => match EngineError::from_bollard(e) {
                EngineError::NotFound(_) => Ok(()),
                e => Err(e),
            },
        }
    }

    /// SIGKILL (the pause container: nothing to shut down gracefully).
    pub async fn kill(&self, id: &str) -> Result<()> {
        match self
            .docker
            .kill_container(
                id,
                Some(KillContainerOptions {
                    signal: "SIGKILL".into(),
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            // 409: not running.
            Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => match EngineError::from_bollard(e) {
                EngineError::NotFound(_) => Ok(()),
                e => Err(e),
            },
        }
    }

    /// Removes a container (forcibly, with its anonymous volumes); gone is fine.
    pub async fn remove(&self, id: &str) -> Result<()> {
        match self
            .docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    link: false,
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => match EngineError::from_bollard(e) {
                EngineError::NotFound(_) => Ok(()),
                // 409 "removal already in progress".
                EngineError::Failed(m) if m.contains("already in progress") => Ok(()),
                e => Err(e),
            },
        }
    }

    /// One sample of a container's usage from the engine's stats API, for
    /// when its cgroup files cannot be read (an agent that runs in a
    /// container of its own sees only its own cgroup).
    pub async fn stats_once(&self, id: &str) -> Result<EngineUsage> {
        let options = StatsOptionsBuilder::new()
            .stream(false)
            .one_shot(true)
            .build();
        let mut stream = self.docker.stats(id, Some(options));
        match stream.next().await {
            Some(Ok(r)) => Ok(usage_from_stats(&r)),
            Some(Err(e)) => Err(EngineError::from_bollard(e)),
            None => Err(EngineError::Failed(format!(
                "the engine sent no stats for {id}"
            ))),
        }
    }

    pub async fn inspect(&self, id: &str) -> Result<Inspected> {
        let r = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(EngineError::from_bollard)?;
        let st = r.state.unwrap_or_default();
        let networks = r
            .network_settings
            .and_then(|n| n.networks)
            .into_iter()
            .flatten()
            .filter_map(|(name, e)| Some((name, e.ip_address?.parse::<IpAddr>().ok()?)))
            .collect();
        Ok(Inspected {
            running: st.running.unwrap_or(false),
            exit_code: st.exit_code.unwrap_or(0),
            oom_killed: st.oom_killed.unwrap_or(false),
            error: st.error.unwrap_or_default(),
            started_ms: st
                .started_at
                .as_deref()
                .and_then(parse_rfc3339_ms)
                .unwrap_or(0),
            finished_ms: st
                .finished_at
                .as_deref()
                .and_then(parse_rfc3339_ms)
                .unwrap_or(0),
            networks,
            pid: st.pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
        })
    }

    /// The last `lines` lines of a container's output (stdout and stderr),
    /// at most `max_bytes` of them, as text.
    pub async fn log_tail(&self, id: &str, lines: u32, max_bytes: usize) -> Result<String> {
        let tail = lines.to_string();
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&tail)
            .build();
        let mut stream = self.docker.logs(id, Some(options));
        let mut buf: Vec<u8> = Vec::new();
        while let Some(item) = stream.next().await {
            let item = item.map_err(EngineError::from_bollard)?;
            let bytes: &[u8] = item.as_ref();
            let room = max_bytes.saturating_sub(buf.len());
            buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
            if buf.len() >= max_bytes {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Whether the engine has the image (by reference or id).
    pub async fn image_present(&self, image: &str) -> Result<bool> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) => match EngineError::from_bollard(e) {
                EngineError::NotFound(_) => Ok(false),
                e => Err(e),
            },
        }
    }

    /// Pulls an image through the engine, calling `progress` with a line
    /// such as "pulling nginx:1: 12.3 MiB of 40.1 MiB" as layers arrive.
    pub async fn pull(&self, image: &str, mut progress: impl FnMut(String)) -> Result<()> {
        let (from_image, tag) = split_image_ref(image);
        let mut stream = self.docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(from_image.to_string()),
                tag: tag.map(str::to_string),
                ..Default::default()
            }),
            None,
            None,
        );
        // Per layer: (current, total) bytes.
        let mut layers: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(EngineError::from_bollard)?;
            if let (Some(id), Some(d)) = (info.id, info.progress_detail) {
                let cur = d.current.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
                let tot = d.total.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
                if tot > 0 && layers.len() < 256 {
                    layers.insert(id, (cur, tot));
                } else if let Some(l) = layers.get_mut(&id) {
                    // "Pull complete" and friends carry no numbers: keep the last.
                    l.0 = l.0.max(cur);
                }
                let (cur, tot) = layers.values().fold((0u64, 0u64), |(a, b), (c, t)| {
                    (a.saturating_add(*c), b.saturating_add(*t))
                });
                progress(pull_progress_text(image, cur, tot));
            }
        }
        Ok(())
    }

    /// Runs `cmd` in the container and returns its exit code, or an error
    /// when it did not finish within `timeout`.
    pub async fn exec(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<i64> {
        use bollard::exec::{CreateExecOptions, StartExecOptions};
        let run = async {
            let created = self
                .docker
                .create_exec(
                    id,
                    CreateExecOptions::<String> {
                        cmd: Some(cmd.to_vec()),
                        attach_stdout: Some(false),
                        attach_stderr: Some(false),
                        ..Default::default()
                    },
                )
                .await
                .map_err(EngineError::from_bollard)?;
            // Detached: no output stream to hold; poll the exit code.
            self.docker
                .start_exec(
                    &created.id,
                    Some(StartExecOptions {
                        detach: true,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(EngineError::from_bollard)?;
            loop {
                let st = self
                    .docker
                    .inspect_exec(&created.id)
                    .await
                    .map_err(EngineError::from_bollard)?;
                if st.running != Some(true) {
                    if let Some(code) = st.exit_code {
                        return Ok(code);
                    }
                }
                tokio::time::sleep(EXEC_POLL).await;
            }
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(EngineError::Failed(format!(
                "command timed out after {}s",
                timeout.as_secs_f32()
            ))),
        }
    }

    /// All images (one call), for garbage collection and the node report.
    pub async fn list_images(&self) -> Result<Vec<Image>> {
        let list = self
            .docker
            .list_images(Some(ListImagesOptions {
                all: false,
                ..Default::default()
            }))
            .await
            .map_err(EngineError::from_bollard)?;
        Ok(list
            .into_iter()
            .map(|i| Image {
                id: i.id,
                tags: i
                    .repo_tags
                    .into_iter()
                    .filter(|t| t != "<none>:<none>")
                    .collect(),
                digests: i
                    .repo_digests
                    .into_iter()
                    .filter(|d| d != "<none>@<none>")
                    .collect(),
                size_bytes: u64::try_from(i.size).unwrap_or(0),
                created: i.created,
                containers: i.containers,
            })
            .collect())
    }

    /// The architecture and OS an image was built for (image inspect).
    pub async fn image_platform(&self, image: &str) -> Result<Platform> {
        let i = self
            .docker
            .inspect_image(image)
            .await
            .map_err(EngineError::from_bollard)?;
        Ok(Platform {
            architecture: i.architecture.unwrap_or_default(),
            os: i.os.unwrap_or_default(),
        })
    }

    /// How many containers (anyone's, any state) use each image id, not
    /// counting `excluding` (containers about to be removed). Read-only.
    pub async fn image_use_counts(
        &self,
        excluding: &std::collections::BTreeSet<String>,
    ) -> Result<BTreeMap<String, i64>> {
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                ..Default::default()
            }))
            .await
            .map_err(EngineError::from_bollard)?;
        let mut uses = BTreeMap::new();
        for c in list {
            if c.id.as_ref().is_some_and(|id| excluding.contains(id)) {
                continue;
            }
            if let Some(image) = c.image_id {
                *uses.entry(image).or_insert(0i64) += 1;
            }
        }
        Ok(uses)
    }

    /// Removes an image (not forcibly: an image in use stays).
    pub async fn remove_image(&self, image: &str) -> Result<()> {
        self.docker
            .remove_image(
                image,
                Some(RemoveImageOptions {
                    force: false,
                    noprune: false,
                    ..Default::default()
                }),
                None,
            )
            .await
            .map(|_| ())
            .map_err(EngineError::from_bollard)
    }

    /// The engine's data root (`/var/lib/docker`), where images live.
    pub async fn data_root(&self) -> Result<String> {
        let info = self
            .docker
            .info()
            .await
            .map_err(EngineError::from_bollard)?;
        Ok(info
            .docker_root_dir
            .unwrap_or_else(|| "/var/lib/docker".into()))
    }
}

/// Splits `repo[:tag][@digest]` into what the create-image call wants: the
/// tag separately (a ':' after the last '/' is a tag, before it a port).
pub fn split_image_ref(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[slash..].rfind(':') {
        Some(i) => (&image[..slash + i], Some(&image[slash + i + 1..])),
        None => (image, Some("latest")),
    }
}

/// "pulling nginx:1: 12.3 MiB of 40.1 MiB".
pub fn pull_progress_text(image: &str, current: u64, total: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let mib = |b: u64| b as f64 / 1_048_576.0;
    if total == 0 {
        format!("pulling {image}")
    } else {
        format!(
            "pulling {image}: {:.1} MiB of {:.1} MiB",
            mib(current),
            mib(total)
        )
    }
}

/// Parses the engine's RFC 3339 timestamps (`2024-05-01T12:34:56.123456789Z`,
/// or with a `+hh:mm` offset) into Unix milliseconds. The zero time
/// (`0001-01-01T00:00:00Z`) and anything unparsable give `None`.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    outpost_proto::units::parse_rfc3339(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_address_is_the_one_on_the_pod_network() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let two = BTreeMap::from([
            ("bridge".to_string(), ip("172.17.0.4")),
            ("outpost-t-1-a".to_string(), ip("10.241.3.7")),
        ]);
        assert_eq!(
            pod_address(&two, Some("outpost-t-1-a")),
            Some(ip("10.241.3.7"))
        );
        assert_eq!(pod_address(&two, Some("elsewhere")), None);
        let bridge = BTreeMap::from([("bridge".to_string(), ip("172.17.0.4"))]);
        assert_eq!(pod_address(&bridge, None), Some(ip("172.17.0.4")));
        // `container:` network mode: no network of its own.
        assert_eq!(pod_address(&BTreeMap::new(), None), None);
    }

    #[test]
    fn a_missing_pod_network_says_what_to_do() {
        let engine = "network site-a not found (HTTP 404)";
        let why = pod_network_missing(engine, Some("site-a")).unwrap();
        assert!(why.contains("\"site-a\" does not exist"), "{why}");
        assert!(why.contains("docker network create site-a"), "{why}");
        assert!(why.contains("--pod-network"), "{why}");
        // Another network's message, another error, or no pod network set:
        // the engine's words stand.
        assert_eq!(pod_network_missing(engine, Some("site-b")), None);
        assert_eq!(
            pod_network_missing("No such image: web:1 (HTTP 404)", Some("site-a")),
            None
        );
        assert_eq!(pod_network_missing(engine, None), None);
    }

    #[test]
    fn usage_from_engine_stats() {
        // As Docker 20.10 answers on cgroup v1, trimmed.
        let v1: ContainerStatsResponse = serde_json::from_str(
            r#"{"cpu_stats":{"cpu_usage":{"total_usage":123456789}},
                "memory_stats":{"usage":10485760,"stats":{"total_inactive_file":4194304,"rss":2097152}},
                "pids_stats":{"current":7}}"#,
        )
        .unwrap();
        assert_eq!(
            usage_from_stats(&v1),
            EngineUsage {
                cpu_ns: Some(123_456_789),
                memory_working_set: Some(6 << 20),
                pids: Some(7),
            }
        );
        // cgroup v2 names; inactive above usage never underflows.
        let v2: ContainerStatsResponse = serde_json::from_str(
            r#"{"memory_stats":{"usage":1000,"stats":{"inactive_file":5000}}}"#,
        )
        .unwrap();
        assert_eq!(
            usage_from_stats(&v2),
            EngineUsage {
                cpu_ns: None,
                memory_working_set: Some(0),
                pids: None,
            }
        );
        // A stopped container: nothing.
        let empty: ContainerStatsResponse = serde_json::from_str("{}").unwrap();
        assert_eq!(usage_from_stats(&empty), EngineUsage::default());
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T12:34:56.123456789Z"),
            Some(1_714_566_896_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T14:34:56.5+02:00"),
            Some(1_714_566_896_500)
        );
        assert_eq!(parse_rfc3339_ms("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("garbage"), None);
    }

    #[test]
    fn image_refs() {
        assert_eq!(split_image_ref("nginx"), ("nginx", Some("latest")));
        assert_eq!(split_image_ref("nginx:1"), ("nginx", Some("1")));
        assert_eq!(
            split_image_ref("reg:5000/team/app:v2"),
            ("reg:5000/team/app", Some("v2"))
        );
        assert_eq!(
            split_image_ref("reg:5000/app"),
            ("reg:5000/app", Some("latest"))
        );
        assert_eq!(split_image_ref("app@sha256:ab"), ("app@sha256:ab", None));
    }

    #[test]
    fn progress_text() {
        assert_eq!(
            pull_progress_text("nginx:1", 12_897_484, 42_047_898),
            "pulling nginx:1: 12.3 MiB of 40.1 MiB"
        );
        assert_eq!(pull_progress_text("nginx:1", 0, 0), "pulling nginx:1");
    }
}
