//! Whether this node can run pods, as the agent's `Ready=False`.
//!
//! The controller owns Ready=True (from the lease: the agent is heard
//! from). What only the agent knows is that it is heard from but cannot run
//! pods: its container runtime answered once and answers no more (kubelet:
//! `KubeletNotReady`, "container runtime is down"). The controller then
//! taints the node `node.kubernetes.io/not-ready:NoExecute` and its pods are
//! replaced elsewhere after their toleration.
//!
//! A runtime that never answered since the agent started is not this: the
//! node has not run pods here yet, and it is reported through the runtime
//! info (the controller's `runtime-unavailable` NoSchedule taint), so a box
//! that is installed before its engine is up is not evicted from. Pure: fed
//! each housekeeping's runtime probe and the wall clock.

use outpost_proto::{Condition, ConditionStatus, ConditionType, RuntimeInfo};

/// The kubelet's reason for Ready=False.
pub const NOT_READY_REASON: &str = "KubeletNotReady";

/// Tracks the runtime across housekeeping cycles.
#[derive(Debug, Default)]
pub struct Readiness {
    /// The runtime answered at least once since the agent started.
    seen_available: bool,
    /// When the runtime was first seen gone after answering (ms).
    lost_since_ms: Option<u64>,
}

impl Readiness {
    /// Takes one runtime probe; returns the agent's Ready=False while the
    /// node cannot run pods, `None` while it can (or never could).
    pub fn observe(&mut self, runtime: &RuntimeInfo, now_ms: u64) -> Option<Condition> {
        if runtime.available {
            self.seen_available = true;
            self.lost_since_ms = None;
            return None;
        }
        if !self.seen_available {
            return None;
        }
        let since = *self.lost_since_ms.get_or_insert(now_ms);
        let mut message = String::from("container runtime is down");
        if !runtime.message.is_empty() {
            message.push_str(": ");
            message.push_str(&runtime.message);
        }
        // The report's text bound; a long engine error is cut, not refused.
        if message.len() > outpost_proto::limits::MAX_TEXT {
            let mut end = outpost_proto::limits::MAX_TEXT;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Some(Condition {
            kind: ConditionType::Ready,
            status: ConditionStatus::False,
            reason: NOT_READY_REASON.into(),
            message,
            last_transition_ms: since,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(available: bool, message: &str) -> RuntimeInfo {
        RuntimeInfo {
            name: "docker".into(),
            version: if available {
                "27.0".into()
            } else {
                String::new()
            },
            available,
            message: message.into(),
        }
    }

    #[test]
    fn not_ready_only_after_the_runtime_was_lost() {
        let mut r = Readiness::default();
        let down = runtime(false, "Docker engine not reachable at /run/docker.sock");
        assert_eq!(r.observe(&down, 1_000), None, "never seen: not a loss");
        assert_eq!(r.observe(&runtime(true, ""), 2_000), None);
        let c = r.observe(&down, 3_000).expect("lost");
        assert_eq!(
            (c.kind, c.status, c.reason.as_str()),
            (
                ConditionType::Ready,
                ConditionStatus::False,
                "KubeletNotReady"
            )
        );
        assert_eq!(
            c.message,
            "container runtime is down: Docker engine not reachable at /run/docker.sock"
        );
        assert_eq!(c.last_transition_ms, 3_000);
        let later = r.observe(&down, 9_000).expect("still lost");
        assert_eq!(later.last_transition_ms, 3_000, "since the loss, not now");
        assert_eq!(r.observe(&runtime(true, ""), 10_000), None, "back");
        let again = r.observe(&down, 11_000).expect("lost again");
        assert_eq!(again.last_transition_ms, 11_000, "a new loss");
    }

    #[test]
    fn the_message_stays_within_the_reports_bound() {
        let mut r = Readiness::default();
        r.observe(&runtime(true, ""), 0);
        let c = r
            .observe(&runtime(false, &"é".repeat(1_000)), 1)
            .expect("lost");
        assert!(c.message.len() <= outpost_proto::limits::MAX_TEXT);
        let report = outpost_proto::NodeReport {
            conditions: vec![c],
            ..outpost_proto::NodeReport::default()
        };
        assert!(report.validate().is_ok(), "{:?}", report.validate());
    }
}
