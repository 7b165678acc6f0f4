//! Desired pods saved on local disk, so the box keeps running its pods with
//! the controller out of reach, across agent restarts and reboots.
//!
//! One JSON file (`pods.json` in the data directory), written atomically
//! (temp file + rename) on every change the controller sends to the pods
//! (not when only the generation moved: see `PodState::save`), read once
//! at start. Pods are filed by key (`PodSpec::key`); files written before
//! namespaces existed read back with every pod in the default namespace,
//! whose keys are the bare names they were filed under. Changes are applied here first and acknowledged only once saved,
//! so an acknowledged generation is always on disk.
//!
//! A save that fails (a full data directory: ENOSPC) does not end the
//! session: the set the controller asked for is kept here as unsaved (later
//! deltas of the same session apply on top of it, as the controller sends
//! them relative to what it sent), the pods keep running as last saved, and
//! the session tries the save again on [`SaveRetry`]'s back-off (exponential,
//! capped, reset by a save that works), sending one `FailedSync` event per
//! distinct failure rather than one per try. A new session starts again from
//! what is saved: its controller sends the changes since the acknowledged
//! generation, so the unsaved set is replaced by the first of them.
//! Meanwhile the pods of the unsaved set that the node does not run are
//! reported Pending with reason `NodeCannotAccept` ([`PodState::not_accepted`]).

use crate::backoff::Backoff;
use crate::runtime::DesiredSet;
use outpost_proto::files::{read_bounded, write_private};
use outpost_proto::pod::{pod_limits, truncate, DesiredPod, PodPhase, PodStatus};
use outpost_proto::{AgentEvent, EventType};
use outpost_proto::{NodeDesired, MAX_PODS_PER_NODE};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest state file read back (110 pods of a few KiB each, with room).
const MAX_STATE: u64 = 8 << 20;
const FILE: &str = "pods.json";

/// The file's shape (written by [`PodState::save`] in the same form).
#[derive(Deserialize, Default)]
struct OnDisk {
    generation: u64,
    pods: Vec<DesiredPod>,
}

/// What applying a controller message did.
#[derive(Debug, Default, PartialEq)]
pub struct ApplyOutcome {
    /// Pods refused (bad spec, or for another node) by key, with the reason.
    pub refused: Vec<(String, String)>,
    /// Keys of pods the controller removed that this node did not have
    /// (nor had taken: a pod only in the unsaved set never started).
    pub unknown_removals: Vec<String>,
    /// Why the new set could not be saved; it is kept as unsaved
    /// ([`PodState::unsaved`]) and the saved one stays in force.
    pub not_saved: Option<String>,
}

/// A set the controller sent that is not on disk yet.
#[derive(Debug)]
struct Unsaved {
    set: DesiredSet,
    /// Why the last save failed.
    error: String,
    /// From an earlier session: what is shown until the new session's
    /// first message replaces it, never saved (see the module docs).
    stale: bool,
}

/// Reason of a pod the node could not take (its pods could not be saved).
pub const NOT_ACCEPTED: &str = "NodeCannotAccept";

/// The local copy of this node's desired pods.
#[derive(Debug)]
pub struct PodState {
    path: PathBuf,
    node: String,
    set: DesiredSet,
    unsaved: Option<Unsaved>,
    /// The pods as last written (or read back), serialized: a save whose
    /// pods are the same bytes is skipped (see [`PodState::save`]).
    written: Option<Vec<u8>>,
}

/// Decodes the bytes of a `pods.json` file into the desired set. Used by
/// [`PodState::load`] and by the `pods_json` fuzz target.
pub fn decode(bytes: &[u8]) -> Result<DesiredSet, serde_json::Error> {
    let disk: OnDisk = serde_json::from_slice(bytes)?;
    Ok(DesiredSet {
        generation: disk.generation,
        pods: disk.pods.into_iter().map(|p| (p.spec.key(), p)).collect(),
        ..DesiredSet::default()
    })
}

impl PodState {
    /// Loads the saved state; a missing file is an empty set. A file that
    /// cannot be read is an error that says what to do: pods must not be
    /// silently dropped because of a damaged file.
    pub fn load(data_dir: &Path, node: &str) -> Result<PodState, String> {
        let path = data_dir.join(FILE);
        let mut set = DesiredSet::default();
        let mut written = None;
        match read_bounded(&path, MAX_STATE) {
            Ok(text) => {
                set = decode(text.as_bytes()).map_err(|e| {
                    format!(
                        "{} is damaged ({e}); move it away to start with no local pods (the controller sends them again on connect)",
                        path.display()
                    )
                })?;
                // What the file holds, as this agent would write it.
                written = pods_json(&set).ok();
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        }
        Ok(PodState {
            path,
            node: node.to_string(),
            set,
            unsaved: None,
            written,
        })
    }

    pub fn set(&self) -> &DesiredSet {
        &self.set
    }

    pub fn generation(&self) -> u64 {
        self.set.generation
    }

    /// The set the controller asked for that could not be saved, with why.
    pub fn unsaved(&self) -> Option<(&DesiredSet, &str)> {
        self.unsaved.as_ref().map(|u| (&u.set, u.error.as_str()))
    }

    /// What to report for the pods the controller sent that this node has
    /// not taken because they could not be saved: Pending with reason
    /// [`NOT_ACCEPTED`], saying why and what to do, so the controller does
    /// not show them `ContainerCreating`. A pod already here in another
    /// generation keeps its status: it still runs as it was.
    pub fn not_accepted(&self) -> Vec<PodStatus> {
        let Some(u) = &self.unsaved else {
            return Vec::new();
        };
        u.set
            .pods
            .iter()
            .filter(|(k, _)| !self.set.pods.contains_key(*k))
            .map(|(k, d)| {
                let mut message = format!(
                    "the node cannot save the pod ({}); it starts the pod once the save works: free space in the agent's data directory",
                    u.error
                );
                truncate(&mut message, pod_limits::MAX_MESSAGE);
                PodStatus {
                    name: k.clone(),
                    generation: d.generation,
                    phase: PodPhase::Pending,
                    reason: NOT_ACCEPTED.into(),
                    message,
                    ready: false,
                    started_ms: 0,
                    pod_ip: String::new(),
                    containers: Vec::new(),
                    usage: Default::default(),
                }
            })
            .collect()
    }

    /// A new session begins: its controller sends the changes since the
    /// saved generation, so the next message applies to the saved set.
    /// Until then the unsaved set is still shown, but not saved.
    pub fn new_session(&mut self) {
        if let Some(u) = &mut self.unsaved {
            u.stale = true;
        }
    }

    /// Applies a controller message and saves the result before returning.
    /// When the save fails the result is kept as unsaved and
    /// `not_saved` says why; an `Err` is a message no retry can take.
    pub fn apply(&mut self, msg: NodeDesired) -> Result<ApplyOutcome, String> {
        let mut out = ApplyOutcome::default();
        let mut next = if msg.full {
            DesiredSet::default()
        } else {
            match &self.unsaved {
                Some(u) if !u.stale => u.set.clone(),
                _ => self.set.clone(),
            }
        };
        for r in msg.removed {
            match next.pods.remove(&r.key) {
                None => out.unknown_removals.push(r.key),
                // Only in the unsaved set: never taken, so never started.
                Some(_) if !self.set.pods.contains_key(&r.key) => {
                    out.unknown_removals.push(r.key);
                }
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
        match self.save(&next) {
            Ok(()) => {
                self.set = next;
                self.unsaved = None;
            }
            Err(error) => {
                out.not_saved = Some(error.clone());
                self.unsaved = Some(Unsaved {
                    set: next,
                    error,
                    stale: false,
                });
            }
        }
        Ok(out)
    }

    /// Tries again to save the unsaved set of this session: `None` when
    /// there is none, else whether it is saved (and now in force).
    pub fn retry_save(&mut self) -> Option<Result<(), String>> {
        let mut u = self.unsaved.take_if(|u| !u.stale)?;
        match self.save(&u.set) {
            Ok(()) => {
                self.set = u.set;
                Some(Ok(()))
            }
            Err(error) => {
                u.error.clone_from(&error);
                self.unsaved = Some(u);
                Some(Err(error))
            }
        }
    }

    /// Writes `set` unless its pods are what the file already holds.
    ///
    /// Only the generation moving (the controller's revision moves with
    /// every status write, and a reconnect resends it) is no reason to
    /// write: the file then keeps an older generation with the same pods,
    /// and an agent that reads it back acknowledges that one, so its
    /// controller sends the changes since then: nothing, or more than
    /// needed, never less. Skipping spares the flash of small boxes and
    /// keeps a full disk from failing a save that changes nothing. The
    /// bytes are kept rather than a hash so that a collision can never
    /// skip a write that mattered; they are the size of the set held anyway.
    fn save(&mut self, set: &DesiredSet) -> Result<(), String> {
        let pods = pods_json(set)?;
        if self.written.as_ref() == Some(&pods) {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(pods.len() + 40);
        bytes
            .extend_from_slice(format!("{{\"generation\":{},\"pods\":", set.generation).as_bytes());
        bytes.extend_from_slice(&pods);
        bytes.push(b'}');
        write_private(&self.path, &bytes)
            .map_err(|e| format!("saving desired pods to {}: {e}", self.path.display()))?;
        self.written = Some(pods);
        Ok(())
    }
}

/// The `pods` array of [`OnDisk`] for `set`, serialized.
fn pods_json(set: &DesiredSet) -> Result<Vec<u8>, String> {
    let pods: Vec<&DesiredPod> = set.pods.values().collect();
    serde_json::to_vec(&pods).map_err(|e| e.to_string())
}

/// First wait before saving an unsaved set again: a freed disk is used
/// within a second or two, and the status message interval is one second.
const SAVE_RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest wait: a few writes a minute at most while the disk stays full,
/// yet the pods follow within a minute of someone freeing space.
const SAVE_RETRY_CAP: Duration = Duration::from_secs(60);

/// When to try an unsaved set again, and which failures are news. Pure:
/// the session asks it after each try and sleeps for what it says.
#[derive(Debug, Clone)]
pub struct SaveRetry {
    backoff: Backoff,
    /// The failure last reported with an event, until a save works.
    reported: Option<String>,
}

impl Default for SaveRetry {
    fn default() -> SaveRetry {
        SaveRetry {
            backoff: Backoff::new(SAVE_RETRY_BASE, SAVE_RETRY_CAP),
            reported: None,
        }
    }
}

/// What to do after a failed save.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// Wait this long before the next try.
    pub delay: Duration,
    /// The event to send: only for a failure not reported already.
    pub event: Option<AgentEvent>,
}

impl SaveRetry {
    /// A save failed with `error`; `unit` is a random draw in [0, 1) for
    /// the jitter.
    pub fn failed(&mut self, error: &str, unit: f64) -> Retry {
        let delay = self.backoff.next_delay(unit);
        let event = (self.reported.as_deref() != Some(error)).then(|| {
            self.reported = Some(error.to_string());
            let mut message = format!(
                "the agent could not save the desired pods ({error}); it keeps running the pods it has, starts no new ones and retries with back-off (up to every {}s); free space in the data directory",
                SAVE_RETRY_CAP.as_secs()
            );
            truncate(&mut message, pod_limits::MAX_MESSAGE);
            AgentEvent {
                kind: EventType::Warning,
                reason: "FailedSync".into(),
                pod: String::new(),
                message,
            }
        });
        Retry { delay, event }
    }

    /// A save worked: back to the first delay, and the next failure is
    /// news again. True when a failure had been reported.
    pub fn saved(&mut self) -> bool {
        self.backoff.reset();
        self.reported.take().is_some()
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

    /// Makes every save fail (the temp file's name taken by a directory)
    /// or work again, as a full disk and one with room would.
    fn disk_full(dir: &Path, full: bool) {
        let tmp = dir.join(FILE).with_extension("tmp");
        if full {
            std::fs::create_dir_all(tmp).unwrap();
        } else {
            std::fs::remove_dir_all(tmp).unwrap();
        }
    }

    #[test]
    fn a_set_the_disk_refuses_is_kept_unsaved_and_saved_on_retry() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = PodState::load(dir.path(), "edge-1").unwrap();
        s.apply(msg(1, true, vec![pod("a", "edge-1", 1)], &[]))
            .unwrap();
        disk_full(dir.path(), true);
        let out = s
            .apply(msg(2, false, vec![pod("b", "edge-1", 1)], &[]))
            .unwrap();
        assert!(
            out.not_saved
                .as_deref()
                .is_some_and(|e| e.contains("pods.json")),
            "{out:?}"
        );
        // In force: what was saved; the controller's wish is kept.
        assert_eq!(s.generation(), 1);
        assert_eq!(s.set().pods.keys().collect::<Vec<_>>(), ["a"]);
        let (unsaved, why) = s.unsaved().unwrap();
        assert_eq!(unsaved.pods.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert!(why.contains("pods.json"), "{why}");
        // A later delta of the same session applies on top of the unsaved set.
        let out = s
            .apply(msg(3, false, vec![pod("c", "edge-1", 1)], &["a"]))
            .unwrap();
        assert!(out.not_saved.is_some());
        assert!(out.unknown_removals.is_empty(), "a was known: {out:?}");
        assert_eq!(
            s.unsaved().unwrap().0.pods.keys().collect::<Vec<_>>(),
            ["b", "c"]
        );
        assert!(s.retry_save().unwrap().is_err(), "still full");
        assert_eq!(s.generation(), 1);
        disk_full(dir.path(), false);
        assert_eq!(s.retry_save(), Some(Ok(())));
        assert!(s.unsaved().is_none());
        assert_eq!(s.generation(), 3);
        assert_eq!(s.set().pods.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(s.retry_save(), None, "nothing left to save");
        let again = PodState::load(dir.path(), "edge-1").unwrap();
        assert_eq!(again.generation(), 3);
        assert_eq!(again.set().pods.keys().collect::<Vec<_>>(), ["b", "c"]);
    }

    #[test]
    fn a_new_session_starts_again_from_the_saved_set() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = PodState::load(dir.path(), "edge-1").unwrap();
        s.apply(msg(1, true, vec![pod("a", "edge-1", 1)], &[]))
            .unwrap();
        disk_full(dir.path(), true);
        s.apply(msg(2, false, vec![pod("b", "edge-1", 1)], &[]))
            .unwrap();
        s.new_session();
        assert!(
            s.unsaved().is_some(),
            "still shown until the controller speaks"
        );
        disk_full(dir.path(), false);
        assert_eq!(s.retry_save(), None, "a stale set is never saved");
        // The new session's delta (since generation 1) applies to the saved set.
        let out = s
            .apply(msg(4, false, vec![pod("d", "edge-1", 1)], &[]))
            .unwrap();
        assert_eq!(out.not_saved, None);
        assert!(s.unsaved().is_none());
        assert_eq!(s.set().pods.keys().collect::<Vec<_>>(), ["a", "d"]);
    }

    #[test]
    fn save_retries_back_off_and_report_each_failure_once() {
        // Virtual time: the session sleeps for what each failure says.
        let mut r = SaveRetry::default();
        let full = "saving desired pods to /d/pods.json: No space left on device (os error 28)";
        let mut now = Duration::ZERO;
        let mut delays = Vec::new();
        let mut events = Vec::new();
        for _ in 0..10 {
            let retry = r.failed(full, 0.0);
            now += retry.delay;
            delays.push(retry.delay.as_millis());
            events.extend(retry.event);
        }
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000],
            "exponential, capped (equal jitter: half of 1 s doubling to 60 s)"
        );
        assert!(
            now < Duration::from_secs(200),
            "ten tries in {now:?}, not five seconds"
        );
        assert_eq!(events.len(), 1, "one event for ten tries of one failure");
        assert_eq!(events[0].kind, EventType::Warning);
        assert_eq!(events[0].reason, "FailedSync");
        assert!(events[0].pod.is_empty(), "about the node");
        assert!(events[0].message.contains(full), "{}", events[0].message);
        assert!(
            events[0].message.contains("free space"),
            "{}",
            events[0].message
        );
        // Another failure is news, once.
        let other = "saving desired pods to /d/pods.json: Read-only file system (os error 30)";
        assert!(r.failed(other, 0.0).event.is_some());
        assert!(r.failed(other, 0.0).event.is_none());
        // A save that works resets the delay, and the same failure again is news.
        assert!(r.saved());
        assert!(!r.saved(), "nothing was failing any more");
        let retry = r.failed(full, 0.0);
        assert_eq!(retry.delay, Duration::from_millis(500));
        assert!(retry.event.is_some());
    }

    #[test]
    fn pods_the_node_could_not_save_are_reported_not_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = PodState::load(dir.path(), "edge-1").unwrap();
        s.apply(msg(1, true, vec![pod("a", "edge-1", 1)], &[]))
            .unwrap();
        assert!(s.not_accepted().is_empty());
        disk_full(dir.path(), true);
        let mut other = pod("b", "edge-1", 3);
        other.spec.namespace = "team-a".into();
        s.apply(msg(2, false, vec![pod("a", "edge-1", 2), other], &[]))
            .unwrap();
        let st = s.not_accepted();
        assert_eq!(st.len(), 1, "a still runs (as generation 1): {st:?}");
        assert_eq!(st[0].name, "team-a.b");
        assert_eq!(st[0].generation, 3);
        assert_eq!(st[0].phase, PodPhase::Pending);
        assert_eq!(st[0].reason, "NodeCannotAccept");
        assert!(
            st[0]
                .message
                .starts_with("the node cannot save the pod (saving desired pods to")
                && st[0].message.contains("free space"),
            "{}",
            st[0].message
        );
        assert!(st[0].validate().is_ok(), "{:?}", st[0].validate());
        // Deleted before it was taken: nothing to report any more, and
        // never started here (so the session reports it gone).
        let out = s.apply(msg(3, false, vec![], &["team-a.b"])).unwrap();
        assert_eq!(out.unknown_removals, ["team-a.b"]);
        assert!(s.not_accepted().is_empty());
        // Taken once saved.
        s.apply(msg(4, false, vec![pod("c", "edge-1", 1)], &[]))
            .unwrap();
        assert_eq!(s.not_accepted().len(), 1);
        disk_full(dir.path(), false);
        assert_eq!(s.retry_save(), Some(Ok(())));
        assert!(s.not_accepted().is_empty());
    }

    #[test]
    fn the_file_is_rewritten_only_when_the_pods_change() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(FILE);
        // Each write is a new file renamed into place: a new inode.
        let inode = || std::fs::metadata(&file).unwrap().ino();
        let mut s = PodState::load(dir.path(), "edge-1").unwrap();
        s.apply(msg(1, true, vec![pod("a", "edge-1", 1)], &[]))
            .unwrap();
        let first = inode();
        // The same set again (a reconnect), then only the generation moving
        // and a removal of a pod never here: nothing to write. (Checked
        // after each: a write could in time reuse a freed inode number,
        // never the one the file holds while the next is renamed over it.)
        for m in [
            msg(1, true, vec![pod("a", "edge-1", 1)], &[]),
            msg(4, false, vec![], &[]),
            msg(5, false, vec![], &["zz"]),
        ] {
            s.apply(m).unwrap();
            assert_eq!(inode(), first, "no write for an unchanged set");
        }
        assert_eq!(s.generation(), 5, "in memory the generation moves");
        // An agent reading it back acknowledges the older generation, with
        // the same pods; and does not rewrite them either.
        let mut again = PodState::load(dir.path(), "edge-1").unwrap();
        assert_eq!(again.generation(), 1);
        assert_eq!(again.set().pods, s.set().pods);
        again
            .apply(msg(6, true, vec![pod("a", "edge-1", 1)], &[]))
            .unwrap();
        assert_eq!(inode(), first, "no write after a restart either");
        // A change is written.
        again
            .apply(msg(7, false, vec![pod("a", "edge-1", 2)], &[]))
            .unwrap();
        assert_ne!(inode(), first);
        let back = PodState::load(dir.path(), "edge-1").unwrap();
        assert_eq!(back.generation(), 7);
        assert_eq!(back.set().pods["a"].generation, 2);
    }

    #[test]
    fn an_unchanged_set_saves_even_on_a_full_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = PodState::load(dir.path(), "edge-1").unwrap();
        s.apply(msg(1, true, vec![pod("a", "edge-1", 1)], &[]))
            .unwrap();
        disk_full(dir.path(), true);
        let out = s
            .apply(msg(2, true, vec![pod("a", "edge-1", 1)], &[]))
            .unwrap();
        assert_eq!(out.not_saved, None, "nothing needed writing");
    }

    #[test]
    fn a_damaged_file_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let e = PodState::load(dir.path(), "edge-1").unwrap_err();
        assert!(e.contains("move it away"), "{e}");
    }
}
