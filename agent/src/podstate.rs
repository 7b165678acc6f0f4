//! Desired pods saved on local disk, so the box keeps running its pods with
//! the controller out of reach, across agent restarts and reboots.
//!
//! One JSON file (`pods.json` in the data directory), written atomically
//! (temp file + rename) on every change the controller sends, read once at
//! start. Pods are filed by key (`PodSpec::key`); files written before
//! namespaces existed read back with every pod in the default namespace,
//! whose keys are the bare names they were filed under. Changes are applied here first and acknowledged only once saved,
//! so an acknowledged generation is always on disk.

use crate::runtime::DesiredSet;
use outpost_proto::files::{read_bounded, write_private};
use outpost_proto::pod::DesiredPod;
use outpost_proto::{NodeDesired, MAX_PODS_PER_NODE};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Largest state file read back (110 pods of a few KiB each, with room).
const MAX_STATE: u64 = 8 << 20;
const FILE: &str = "pods.json";

#[derive(Serialize, Deserialize, Default)]
struct OnDisk {
    generation: u64,
    pods: Vec<DesiredPod>,
}

/// What applying a controller message did.
#[derive(Debug, Default, PartialEq)]
pub struct ApplyOutcome {
    /// Pods refused (bad spec, or for another node) by key, with the reason.
    pub refused: Vec<(String, String)>,
    /// Keys of pods the controller removed that this node did not have.
    pub unknown_removals: Vec<String>,
}

/// The local copy of this node's desired pods.
#[derive(Debug)]
pub struct PodState {
    path: PathBuf,
    node: String,
    set: DesiredSet,
}

/// Decodes the bytes of a `pods.json` file into the desired set. Used by
/// [`PodState::load`] and by the `pods_json` fuzz target.
pub fn decode(bytes: &[u8]) -> Result<DesiredSet, serde_json::Error> {
    let disk: OnDisk = serde_json::from_slice(bytes)?;
    let mut set = DesiredSet::default();
    set.generation = disk.generation;
    for p in disk.pods {
        set.pods.insert(p.spec.key(), p);
    }
    Ok(set)
}

impl PodState {
    /// Loads the saved state; a missing file is an empty set. A file that
    /// cannot be read is an error that says what to do: pods must not be
    /// silently dropped because of a damaged file.
    pub fn load(data_dir: &Path, node: &str) -> Result<PodState, String> {
        let path = data_dir.join(FILE);
        let mut set = DesiredSet::default();
        match read_bounded(&path, MAX_STATE) {
            Ok(text) => {
                set = decode(text.as_bytes()).map_err(|e| {
                    format!(
                        "{} is damaged ({e}); move it away to start with no local pods (the controller sends them again on connect)",
                        path.display()
                    )
                })?;
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        }
        Ok(PodState {
            path,
            node: node.to_string(),
            set,
        })
    }

    pub fn set(&self) -> &DesiredSet {
        &self.set
    }

    pub fn generation(&self) -> u64 {
        self.set.generation
    }

    /// Applies a controller message and saves the result before returning.
    pub fn apply(&mut self, msg: NodeDesired) -> Result<ApplyOutcome, String> {
        let mut out = ApplyOutcome::default();
        let mut next = if msg.full {
            DesiredSet::default()
        } else {
            self.set.clone()
        };
        for r in msg.removed {
            match next.pods.remove(&r.key) {
                None => out.unknown_removals.push(r.key),
                Some(_) => {
                    if let Some(g) = r.grace_period_seconds {
                        next.removal_grace.insert(r.key, u64::from(g));
                    }
                }
            }
        }
        for pod in msg.pods {
            let name = pod.spec.key();
            if let Err(e) = pod.spec.validate() {
                out.refused.push((name, e));
                continue;
            }
            if pod.spec.node_name.as_deref() != Some(self.node.as_str()) {
                out.refused.push((
                    name,
                    format!(
                        "bound to node {:?}, not to this node {}",
                        pod.spec.node_name, self.node
                    ),
                ));
                continue;
            }
            next.removal_grace.remove(&name);
            next.pods.insert(name, pod);
        }
        // Bounded: a removal's grace matters while its pod stops; the
        // oldest keys go first when more pods were removed than a node runs.
        while next.removal_grace.len() > MAX_PODS_PER_NODE {
            next.removal_grace.pop_first();
        }
        if next.pods.len() > MAX_PODS_PER_NODE {
            return Err(format!(
                "the controller asked for {} pods; this node runs at most {MAX_PODS_PER_NODE}",
                next.pods.len()
            ));
        }
        // The whole wanted set comes with every message.
        next.images = msg.images;
        next.generation = msg.generation;
        self.save(&next)?;
        self.set = next;
        Ok(out)
    }

    fn save(&self, set: &DesiredSet) -> Result<(), String> {
        let disk = OnDisk {
            generation: set.generation,
            pods: set.pods.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec(&disk).map_err(|e| e.to_string())?;
        write_private(&self.path, &bytes)
            .map_err(|e| format!("saving desired pods to {}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_proto::pod::{ContainerSpec, PodSpec};

    fn pod(name: &str, node: &str, generation: u64) -> DesiredPod {
        DesiredPod {
            generation,
            spec: PodSpec {
                node_name: Some(node.into()),
                termination_grace_secs: 5,
                ..PodSpec::new(name, vec![ContainerSpec::new("main", "img:1")])
            },
        }
    }

    fn msg(generation: u64, full: bool, pods: Vec<DesiredPod>, removed: &[&str]) -> NodeDesired {
        NodeDesired::from(outpost_proto::PodsDesired {
            generation,
            full,
            pods,
            removed: removed.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn a_removals_grace_period_is_kept_until_the_pod_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = PodState::load(dir.path(), "edge-1").unwrap();
        s.apply(msg(
            1,
            true,
            vec![pod("a", "edge-1", 1), pod("b", "edge-1", 1)],
            &[],
        ))
        .unwrap();
        let mut removal = msg(2, false, vec![], &[]);
        removal.removed = vec![
            outpost_proto::Removal {
                key: "a".into(),
                grace_period_seconds: Some(2),
            },
            outpost_proto::Removal {
                key: "b".into(),
                grace_period_seconds: None,
            },
            outpost_proto::Removal {
                key: "never-here".into(),
                grace_period_seconds: Some(0),
            },
        ];
        let out = s.apply(removal).unwrap();
        assert_eq!(out.unknown_removals, vec!["never-here".to_string()]);
        assert!(s.set().pods.is_empty());
        assert_eq!(
            s.set().removal_grace.iter().collect::<Vec<_>>(),
            vec![(&"a".to_string(), &2)],
            "only a pod that was here, and only with a grace of its deletion"
        );
        s.apply(msg(3, false, vec![pod("a", "edge-1", 2)], &[]))
            .unwrap();
        assert!(s.set().removal_grace.is_empty(), "the pod is desired again");
    }

    #[test]
    fn deltas_and_full_sets_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = PodState::load(dir.path(), "edge-1").unwrap();
        assert_eq!(s.generation(), 0);
        s.apply(msg(
            3,
            true,
            vec![pod("a", "edge-1", 1), pod("b", "edge-1", 1)],
            &[],
        ))
        .unwrap();
        let out = s
            .apply(msg(5, false, vec![pod("a", "edge-1", 2)], &["b", "zz"]))
            .unwrap();
        assert_eq!(out.unknown_removals, vec!["zz".to_string()]);
        let again = PodState::load(dir.path(), "edge-1").unwrap();
        assert_eq!(again.generation(), 5);
        assert_eq!(again.set().pods.len(), 1);
        assert_eq!(again.set().pods["a"].generation, 2);
        // A full set replaces everything.
        let mut again = again;
        again
            .apply(msg(6, true, vec![pod("c", "edge-1", 1)], &[]))
            .unwrap();
        assert_eq!(
            again.set().pods.keys().cloned().collect::<Vec<_>>(),
            vec!["c".to_string()]
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn bad_pods_are_refused_not_dropped_silently() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = PodState::load(dir.path(), "edge-1").unwrap();
        let mut bad = pod("BAD", "edge-1", 1);
        bad.spec.containers.clear();
        let out = s
            .apply(msg(
                2,
                true,
                vec![bad, pod("other", "edge-2", 1), pod("ok", "edge-1", 1)],
                &[],
            ))
            .unwrap();
        assert_eq!(out.refused.len(), 2);
        assert!(out
            .refused
            .iter()
            .any(|(n, e)| n == "other" && e.contains("edge-2")));
        assert_eq!(s.set().pods.len(), 1);
    }

    #[test]
    fn one_name_in_two_namespaces_is_two_pods() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = PodState::load(dir.path(), "edge-1").unwrap();
        let mut other = pod("web", "edge-1", 1);
        other.spec.namespace = "team-a".into();
        s.apply(msg(1, true, vec![pod("web", "edge-1", 1), other], &[]))
            .unwrap();
        let again = PodState::load(dir.path(), "edge-1").unwrap();
        assert_eq!(
            again.set().pods.keys().cloned().collect::<Vec<_>>(),
            vec!["team-a.web".to_string(), "web".to_string()]
        );
        assert_eq!(again.set().pods["team-a.web"].spec.namespace, "team-a");
        // Removals name keys.
        let mut again = again;
        let out = again
            .apply(msg(2, false, vec![], &["team-a.web", "team-b.web"]))
            .unwrap();
        assert_eq!(out.unknown_removals, vec!["team-b.web".to_string()]);
        assert_eq!(
            again.set().pods.keys().cloned().collect::<Vec<_>>(),
            vec!["web".to_string()]
        );
    }

    #[test]
    fn a_file_from_before_namespaces_still_loads() {
        // pods.json as the agent wrote it before pod specs had a namespace.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE),
            br#"{"generation":7,"pods":[{"generation":2,"spec":{"name":"web","labels":{},
                "node_name":"edge-1","containers":[{"name":"main","image":"img:1","command":[],
                "args":[],"env":[],"ports":[],"resources":{"requests":{"cpu_millis":0,
                "memory_bytes":0,"pids":0,"ephemeral_storage_bytes":0,"gpus":0},"limits":{
                "cpu_millis":0,"memory_bytes":0,"pids":0,"ephemeral_storage_bytes":0,"gpus":0}},
                "liveness":null,"readiness":null,"volume_mounts":[]}],"restart_policy":"Always",
                "termination_grace_secs":30,"volumes":[],"priority":0}}]}"#,
        )
        .unwrap();
        let s = PodState::load(dir.path(), "edge-1").unwrap();
        assert_eq!(s.generation(), 7);
        let web = &s.set().pods["web"];
        assert_eq!(web.spec.namespace, "default");
        assert_eq!(web.spec.key(), "web");
        assert_eq!(web.generation, 2);
        assert!(web.spec.validate().is_ok(), "{:?}", web.spec.validate());
    }

    #[test]
    fn a_damaged_file_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let e = PodState::load(dir.path(), "edge-1").unwrap_err();
        assert!(e.contains("move it away"), "{e}");
    }
}
