//! Fixtures for the scheduler's tests: nodes and pods in a few words, and a
//! cluster of the real control loop over a memory store on a virtual clock.

use super::{Scheduler, SchedulerConfig};
use crate::api::pod::{
    Affinity, Container, ContainerPort, PodAffinity, PodAffinityTerm, PodSpec, Protocol,
    TopologySpreadConstraint, UnsatisfiableConstraintAction,
};
use crate::api::selector::LabelSelector;
use crate::api::{Object, ObjectMeta, OwnerReference, Pod, Resource, Time};
use crate::controllers::plane::ControlPlane;
use crate::events::EventLog;
use crate::registry::NodeRecord;
use crate::store::mem::MemStore;
use crate::store::{keys, Op, Store, Txn};
use outpost_proto::{Condition, ConditionStatus, ConditionType, ImageSummary, Resources};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub const GI: u64 = 1 << 30;
pub const MI: u64 = 1 << 20;

/// A Ready amd64 node with 4 cpus and 8 GiB.
pub fn node(name: &str) -> NodeRecord {
    let mut n = NodeRecord::new(name, BTreeMap::new(), BTreeMap::new(), "s".into(), 0, 0);
    n.uid = format!("uid-{name}");
    n.info.arch = "amd64".into();
    n.info.os = "linux".into();
    n.info.runtime.available = true;
    n.allocatable = Resources {
        cpu_millis: 4000,
        memory_bytes: 8 * GI,
        pids: 10_000,
        ephemeral_storage_bytes: 100 * GI,
        gpus: 0,
    };
    n.capacity = n.allocatable;
    n.ready = Some(ready(true));
    n
}

pub fn ready(yes: bool) -> Condition {
    Condition {
        kind: ConditionType::Ready,
        status: if yes {
            ConditionStatus::True
        } else {
            ConditionStatus::Unknown
        },
        reason: String::new(),
        message: String::new(),
        last_transition_ms: 1,
    }
}

pub fn with_label(mut n: NodeRecord, k: &str, v: &str) -> NodeRecord {
    n.token_labels.insert(k.into(), v.into());
    n
}

pub fn with_pressure(mut n: NodeRecord, kind: ConditionType) -> NodeRecord {
    n.conditions.push(Condition {
        kind,
        status: ConditionStatus::True,
        reason: String::new(),
        message: String::new(),
        last_transition_ms: 1,
    });
    n
}

pub fn with_image(mut n: NodeRecord, name: &str, arch: &str, size: u64) -> NodeRecord {
    n.images.push(ImageSummary {
        names: vec![name.into()],
        size_bytes: size,
        architecture: arch.into(),
        os: "linux".into(),
    });
    n
}

/// A pod asking for `cpu` millis and `mem` MiB.
pub fn pod(name: &str, cpu: u64, mem_mi: u64) -> Pod {
    let mut meta = ObjectMeta::named("default", name);
    meta.uid = format!("uid-{name}");
    meta.generation = 1;
    meta.creation_timestamp = Some(Time(1));
    let mut c = Container {
        name: "c".into(),
        image: "app:1".into(),
        ..Container::default()
    };
    c.resources.requests.0.cpu_millis = cpu;
    c.resources.requests.0.memory_bytes = mem_mi * MI;
    Pod {
        metadata: meta,
        spec: PodSpec {
            containers: vec![c],
            ..PodSpec::default()
        },
        status: Default::default(),
    }
}

pub fn labelled(mut p: Pod, k: &str, v: &str) -> Pod {
    p.metadata.labels.insert(k.into(), v.into());
    p
}

pub fn owned(mut p: Pod, rs: &str) -> Pod {
    p.metadata.owner_references.push(OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: rs.into(),
        uid: format!("uid-{rs}"),
        controller: true,
        block_owner_deletion: true,
    });
    p
}

pub fn host_port(mut p: Pod, port: u16) -> Pod {
    p.spec.containers[0].ports.push(ContainerPort {
        name: String::new(),
        container_port: port,
        host_port: Some(port),
        protocol: Protocol::TCP,
    });
    p
}

pub fn selector(k: &str, v: &str) -> LabelSelector {
    LabelSelector::from_labels([(k.to_string(), v.to_string())].into())
}

pub fn anti_affinity(mut p: Pod, k: &str, v: &str, topology: &str) -> Pod {
    let aff = p.spec.affinity.get_or_insert_with(Affinity::default);
    aff.pod_anti_affinity
        .get_or_insert_with(PodAffinity::default)
        .required_during_scheduling_ignored_during_execution
        .push(PodAffinityTerm {
            label_selector: Some(selector(k, v)),
            namespaces: Vec::new(),
            topology_key: topology.into(),
        });
    p
}

pub fn affinity(mut p: Pod, k: &str, v: &str, topology: &str) -> Pod {
    let aff = p.spec.affinity.get_or_insert_with(Affinity::default);
    aff.pod_affinity
        .get_or_insert_with(PodAffinity::default)
        .required_during_scheduling_ignored_during_execution
        .push(PodAffinityTerm {
            label_selector: Some(selector(k, v)),
            namespaces: Vec::new(),
            topology_key: topology.into(),
        });
    p
}

pub fn spread(mut p: Pod, k: &str, v: &str, topology: &str, max_skew: i32, hard: bool) -> Pod {
    p.spec
        .topology_spread_constraints
        .push(TopologySpreadConstraint {
            max_skew,
            topology_key: topology.into(),
            when_unsatisfiable: if hard {
                UnsatisfiableConstraintAction::DoNotSchedule
            } else {
                UnsatisfiableConstraintAction::ScheduleAnyway
            },
            label_selector: Some(selector(k, v)),
        });
    p
}

pub fn bound(mut p: Pod, node: &str) -> Pod {
    p.spec.node_name = node.into();
    p
}

pub fn node_key(name: &str) -> String {
    keys::object("nodes", "", name)
}

pub fn put_node(store: &dyn Store, n: &NodeRecord) {
    store
        .put(
            &node_key(&n.name),
            serde_json::to_vec(n).expect("node json"),
        )
        .expect("put node");
}

pub fn put_pods(store: &dyn Store, pods: &[Pod]) {
    let txns = pods
        .iter()
        .map(|p| Txn::ops(vec![Op::put(p.key(), Object::Pod(p.clone()).to_stored())]))
        .collect();
    store.txn_batch(txns).expect("put pods");
}

/// The real control loop with only the scheduler, over a memory store.
pub struct Cluster {
    pub store: Arc<MemStore>,
    pub plane: ControlPlane,
    pub now: Time,
}

impl Cluster {
    pub fn new(nodes: &[NodeRecord], cfg: SchedulerConfig) -> Cluster {
        let store = Arc::new(MemStore::new());
        for n in nodes {
            put_node(store.as_ref(), n);
        }
        let events = Arc::new(Mutex::new(EventLog::default()));
        let mut plane = ControlPlane::new(store.clone(), events.clone()).expect("plane");
        plane.set_scheduler(Box::new(Scheduler::new(cfg)));
        Cluster {
            store,
            plane,
            now: Time(1_000_000),
        }
    }

    /// Steps until nothing is left to do right now.
    pub fn settle(&mut self) {
        for _ in 0..1_000 {
            let r = self.plane.step(self.now).expect("step");
            let due = self.plane.next_wakeup().is_some_and(|t| t <= self.now);
            if r.writes == 0 && !r.busy && !due && !self.plane.has_news() {
                return;
            }
        }
        panic!("the loop did not settle");
    }

    /// Moves the clock to the loop's next wake-up (if within `limit`) and
    /// settles.
    pub fn advance(&mut self, limit: std::time::Duration) -> bool {
        match self.plane.next_wakeup() {
            Some(t) if t <= self.now.plus(limit) => {
                self.now = self.now.max(t);
                self.settle();
                true
            }
            _ => false,
        }
    }

    pub fn pod(&self, name: &str) -> Arc<Pod> {
        let cache = self.plane.cache();
        let c = cache.read().expect("cache");
        c.pod(&format!("default/{name}")).expect("pod").clone()
    }

    pub fn node_of(&self, name: &str) -> Option<String> {
        self.pod(name).node().map(str::to_string)
    }

    pub fn message(&self, name: &str) -> String {
        self.pod(name)
            .status
            .condition(crate::api::pod::POD_SCHEDULED)
            .map(|c| c.message.clone())
            .unwrap_or_default()
    }

    /// Events recorded, as (reason, object, message).
    pub fn event_list(&self) -> Vec<(String, String, String)> {
        let list = self.store.list(keys::EVENTS).expect("events");
        list.kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice::<outpost_proto::Event>(&kv.value).ok())
            .map(|e| (e.reason, e.object, e.message))
            .collect()
    }

    /// Removes pods being deleted, as their nodes would once stopped.
    pub fn purge_terminating(&mut self) -> usize {
        let list = self
            .store
            .list(&crate::api::Kind::Pod.prefix(None))
            .expect("list");
        let mut n = 0;
        for kv in list.kvs {
            let Ok(Object::Pod(p)) =
                Object::decode(crate::api::Kind::Pod, &kv.value, kv.mod_revision)
            else {
                continue;
            };
            if p.metadata.is_deleting() {
                self.store.delete(&kv.key).expect("delete");
                n += 1;
            }
        }
        n
    }
}
