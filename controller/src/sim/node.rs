//! A simulated agent: what a real agent does with its desired pods, on the
//! virtual clock, without Docker. It takes the same desired-pod deltas a
//! real session sends (`agents::desired_for` against its acknowledged
//! revision), starts a pod after a start delay (Running and Ready, with an
//! IP), stops a removed one after a stop delay and reports it gone, and
//! answers with the same `PodStatusUpdate`s a real agent sends. A pod with
//! a container whose image is in [`SimNode::unready_images`] runs but never
//! gets Ready, as a pod whose readiness probe always fails.

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
        }
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

    /// Takes the desired-pod delta since its acknowledged revision.
    pub fn sync(&mut self, cache: &Cache, now: Time, start: Duration, stop: Duration) {
        if !self.connected {
            return;
        }
        let desired = crate::agents::desired_for(cache, &self.spec.name, self.acked);
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
        for k in desired.removed {
            if self.pods.contains_key(&k) {
                self.stop(&k, now, stop);
            } else {
                self.gone.push(k);
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
            .min()
    }

    /// Moves pods whose time came; returns the status update to send.
    pub fn advance(&mut self, now: Time) -> Option<PodStatusUpdate> {
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
