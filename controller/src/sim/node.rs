//! A simulated agent: what a real agent does with its desired pods, on the
//! virtual clock, without Docker. It takes the same desired-pod deltas a
//! real session sends (`agents::desired_for` against its acknowledged
//! revision), starts a pod after a start delay (Running and Ready, with an
//! IP), stops a removed one after a stop delay and reports it gone, and
//! answers with the same `PodStatusUpdate`s a real agent sends. A pod with
//! a container whose image is in [`SimNode::unready_images`] runs but never
//! gets Ready, as a pod whose readiness probe always fails. Images it is
//! asked to fetch ahead of a rollout arrive after the pull time (unless
//! [`SimNode::can_pull`] is off) and are reported as a real agent's
//! housekeeping reports its image list.

use crate::api::Time;
use crate::cache::Cache;
use outpost_proto::pod::{ContainerState, ContainerStatus, PodPhase, PodStatus, Usage};
use outpost_proto::{PodStatusUpdate, Resources};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What a simulated node is.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub site: String,
    pub arch: String,
    pub allocatable: Resources,
    pub labels: BTreeMap<String, String>,
    /// Images the node holds (names), with the node's architecture.
    pub images: Vec<String>,
}

impl NodeSpec {
    /// A 4-core, 8 GiB amd64 node in `site`.
    pub fn new(name: impl Into<String>, site: impl Into<String>) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            site: site.into(),
            arch: "amd64".into(),
            allocatable: Resources {
                cpu_millis: 4000,
                memory_bytes: 8 << 30,
                pids: 32_000,
                ephemeral_storage_bytes: 64 << 30,
                gpus: 0,
            },
            labels: BTreeMap::new(),
            images: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting(Time),
    Running,
    Stopping(Time),
}

#[derive(Debug, Clone)]
struct SimPod {
    generation: u64,
    containers: Vec<String>,
    state: State,
    ip: String,
    started: Time,
    /// Whether its readiness probe passes once it runs.
    passes_readiness: bool,
}

/// One simulated agent.
#[derive(Debug)]
pub struct SimNode {
    pub spec: NodeSpec,
    /// Revision of desired pods acknowledged.
    pub acked: u64,
    /// Whether it reaches the controller (a partition clears it).
    pub connected: bool,
    pods: BTreeMap<String, SimPod>,
    /// Keys whose status changed since the last report.
    dirty: BTreeSet<String>,
    gone: Vec<String>,
    ip_seq: u32,
    index: u32,
    /// Images whose containers never pass their readiness probe: pods
    /// started with one of them from now on run but stay not Ready.
    pub unready_images: BTreeSet<String>,
    /// Whether images it is asked to fetch ahead of a rollout arrive (a
    /// site without a registry or a link that never delivers: they don't).
    pub can_pull: bool,
    /// Wanted images being fetched, with when each is in.
    pulling: BTreeMap<String, Time>,
    /// An image arrived since the last report of the image list.
    images_changed: bool,
}

impl SimNode {
    pub fn new(spec: NodeSpec, index: u32) -> SimNode {
        SimNode {
            spec,
            acked: 0,
            connected: true,
            pods: BTreeMap::new(),
            dirty: BTreeSet::new(),
            gone: Vec::new(),
            ip_seq: 0,
            index,
            unready_images: BTreeSet::new(),
            can_pull: true,
            pulling: BTreeMap::new(),
            images_changed: false,
        }
    }

    /// Whether the image list changed since last asked (then the node
    /// reports it again, as a real agent's housekeeping does).
    pub fn take_images_changed(&mut self) -> bool {
        std::mem::take(&mut self.images_changed)
    }

    /// Its place in the fleet (addresses derive from it).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Pods it runs (any state).
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// Each pod it holds (any state) and when it started: a pod whose start
    /// time changes was restarted.
    pub fn pods(&self) -> impl Iterator<Item = (&str, Time)> + '_ {
        self.pods.iter().map(|(k, p)| (k.as_str(), p.started))
    }

    fn next_ip(&mut self) -> String {
        self.ip_seq += 1;
        let n = self.index;
        format!(
            "10.{}.{}.{}",
            (n >> 8) & 0xff,
            n & 0xff,
            1 + (self.ip_seq % 250)
        )
    }

    /// Takes the desired-pod delta since its acknowledged revision, and
    /// starts fetching wanted images it lacks (each takes `pull`).
    pub fn sync(
        &mut self,
        cache: &Cache,
        now: Time,
        start: Duration,
        stop: Duration,
        pull: Duration,
    ) {
        if !self.connected {
            return;
        }
        let desired = crate::agents::desired_for(cache, &self.spec.name, self.acked);
        if self.can_pull {
            for image in &desired.images {
                if !self.spec.images.contains(image) {
                    self.pulling.entry(image.clone()).or_insert(now.plus(pull));
                }
            }
        }
        if desired.full {
            let keep: BTreeSet<String> = desired.pods.iter().map(|p| p.spec.key()).collect();
            let drop: Vec<String> = self
                .pods
                .keys()
                .filter(|k| !keep.contains(*k))
                .cloned()
                .collect();
            for k in drop {
                self.stop(&k, now, stop);
            }
        }
        for r in desired.removed {
            // A deletion's grace period bounds how long the pod takes to stop.
            let took = r
                .grace_period_seconds
                .map_or(stop, |g| stop.min(Duration::from_secs(u64::from(g))));
            if self.pods.contains_key(&r.key) {
                self.stop(&r.key, now, took);
            } else {
                self.gone.push(r.key);
            }
        }
        for d in desired.pods {
            let key = d.spec.key();
            let same = self.pods.get(&key).is_some_and(|p| {
                p.generation == d.generation && !matches!(p.state, State::Stopping(_))
            });
            if same {
                continue;
            }
            let ip = self.next_ip();
            let passes_readiness = !d
                .spec
                .containers
                .iter()
                .any(|c| self.unready_images.contains(&c.image));
            self.pods.insert(
                key.clone(),
                SimPod {
                    generation: d.generation,
                    containers: d.spec.containers.iter().map(|c| c.name.clone()).collect(),
                    state: State::Starting(now.plus(start)),
                    ip,
                    started: now,
                    passes_readiness,
                },
            );
            self.dirty.insert(key);
        }
        self.acked = desired.generation;
    }

    fn stop(&mut self, key: &str, now: Time, stop: Duration) {
        if let Some(p) = self.pods.get_mut(key) {
            if !matches!(p.state, State::Stopping(_)) {
                p.state = State::Stopping(now.plus(stop));
            }
        }
    }

    /// When a pod next changes state.
    pub fn due(&self) -> Option<Time> {
        self.pods
            .values()
            .filter_map(|p| match p.state {
                State::Starting(t) | State::Stopping(t) => Some(t),
                State::Running => None,
            })
            .chain(self.pulling.values().copied())
            .min()
    }

    /// Moves pods whose time came; returns the status update to send.
    pub fn advance(&mut self, now: Time) -> Option<PodStatusUpdate> {
        let arrived: Vec<String> = self
            .pulling
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(i, _)| i.clone())
            .collect();
        for image in arrived {
            self.pulling.remove(&image);
            self.spec.images.push(image);
            self.images_changed = true;
        }
        let mut finished = Vec::new();
        for (k, p) in &mut self.pods {
            match p.state {
                State::Starting(t) if t <= now => {
                    p.state = State::Running;
                    p.started = t;
                    self.dirty.insert(k.clone());
                }
                State::Stopping(t) if t <= now => finished.push(k.clone()),
                _ => {}
            }
        }
        for k in finished {
            self.pods.remove(&k);
            self.dirty.remove(&k);
            self.gone.push(k);
        }
        if !self.connected || (self.dirty.is_empty() && self.gone.is_empty()) {
            return None;
        }
        let pods = std::mem::take(&mut self.dirty)
            .into_iter()
            .filter_map(|k| self.pods.get(&k).map(|p| status(&k, p)))
            .collect();
        Some(PodStatusUpdate {
            full: false,
            pods,
            gone: std::mem::take(&mut self.gone),
            node_usage: Usage::default(),
        })
    }

    /// Everything it runs, as a reconnecting agent sends it.
    pub fn full_status(&mut self) -> PodStatusUpdate {
        self.dirty.clear();
        PodStatusUpdate {
            full: true,
            pods: self.pods.iter().map(|(k, p)| status(k, p)).collect(),
            gone: std::mem::take(&mut self.gone),
            node_usage: Usage::default(),
        }
    }
}

fn status(key: &str, p: &SimPod) -> PodStatus {
    let running = p.state == State::Running;
    let ready = running && p.passes_readiness;
    let state = if running {
        ContainerState::Running {
            started_ms: p.started.ms(),
        }
    } else {
        ContainerState::Waiting {
            reason: "ContainerCreating".into(),
            message: String::new(),
        }
    };
    PodStatus {
        name: key.to_string(),
        generation: p.generation,
        phase: if running {
            PodPhase::Running
        } else {
            PodPhase::Pending
        },
        reason: String::new(),
        message: String::new(),
        ready,
        started_ms: if running { p.started.ms() } else { 0 },
        pod_ip: if running { p.ip.clone() } else { String::new() },
        containers: p
            .containers
            .iter()
            .map(|c| ContainerStatus {
                name: c.clone(),
                image: String::new(),
                container_id: String::new(),
                state: state.clone(),
                last_state: None,
                ready,
                restart_count: 0,
                usage: Usage::default(),
            })
            .collect(),
        usage: Usage::default(),
    }
}
