//! Builds the node report and decides when it is worth sending.
//!
//! Reports go up when something an operator or the scheduler would act on
//! changed; otherwise the agent only heartbeats. That keeps a fleet on weak
//! links to a few bytes per heartbeat interval. The image list counts as
//! changed when an image, a name or a platform came or went, not when sizes
//! move (the scheduler places by name and architecture).

use outpost_proto::{ImageSummary, NodeReport, SignalObservation};
use std::collections::BTreeSet;

/// A signal moving by more than this share of its capacity is news
/// (5 %: about 200 MiB on a 4 GiB box, finer than any default threshold gap).
const SIGNAL_DRIFT_PERMILLE: u64 = 50;

/// True when `next` differs from `sent` in anything worth a report.
pub fn worth_sending(sent: Option<&NodeReport>, next: &NodeReport) -> bool {
    let Some(sent) = sent else {
        return true;
    };
    let conds = |r: &NodeReport| {
        r.conditions
            .iter()
            .map(|c| (c.kind, c.status))
            .collect::<Vec<_>>()
    };
    if sent.info != next.info
        || sent.capacity != next.capacity
        || sent.allocatable != next.allocatable
        || sent.labels != next.labels
        || conds(sent) != conds(next)
        || sent.signals.len() != next.signals.len()
        || image_set(&sent.images) != image_set(&next.images)
    {
        return true;
    }
    sent.signals
        .iter()
        .zip(&next.signals)
        .any(|(a, b)| signal_moved(a, b))
}

/// What of the image list the scheduler uses, in no particular order.
fn image_set(images: &[ImageSummary]) -> BTreeSet<(&[String], &str, &str)> {
    images
        .iter()
        .map(|i| (i.names.as_slice(), i.architecture.as_str(), i.os.as_str()))
        .collect()
}

fn signal_moved(a: &SignalObservation, b: &SignalObservation) -> bool {
    if a.signal != b.signal || a.state != b.state || a.capacity != b.capacity {
        return true;
    }
    let step = b.capacity / 1000 * SIGNAL_DRIFT_PERMILLE;
    a.available.abs_diff(b.available) > step
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_proto::{Condition, ConditionStatus, ConditionType, Signal, ThresholdState};

    fn report(mem_available: u64, pressure: bool) -> NodeReport {
        NodeReport {
            conditions: vec![Condition {
                kind: ConditionType::MemoryPressure,
                status: if pressure {
                    ConditionStatus::True
                } else {
                    ConditionStatus::False
                },
                reason: String::new(),
                message: format!("{mem_available}"),
                last_transition_ms: 0,
            }],
            signals: vec![SignalObservation {
                signal: Signal::MemoryAvailable,
                available: mem_available,
                capacity: 1_000_000,
                hard_threshold: Some(100),
                soft_threshold: None,
                state: ThresholdState::Clear,
                window_min: mem_available,
            }],
            ..NodeReport::default()
        }
    }

    #[test]
    fn table() {
        let base = report(500_000, false);
        for (next, expect, why) in [
            (report(500_000, false), false, "identical"),
            (report(540_000, false), false, "4% drift"),
            (report(560_000, false), true, "6% drift"),
            (report(500_000, true), true, "condition flipped"),
        ] {
            assert_eq!(worth_sending(Some(&base), &next), expect, "{why}");
        }
        assert!(worth_sending(None, &base), "first report always goes");
        let mut labels = base.clone();
        labels.labels.insert("a".into(), "b".into());
        assert!(worth_sending(Some(&base), &labels));
    }

    #[test]
    fn image_changes() {
        let image = |names: &[&str], size_bytes: u64, architecture: &str| ImageSummary {
            names: names.iter().map(|n| (*n).to_string()).collect(),
            size_bytes,
            architecture: architecture.into(),
            os: "linux".into(),
        };
        let with = |images: Vec<ImageSummary>| NodeReport {
            images,
            ..report(500_000, false)
        };
        let base = with(vec![
            image(&["a:1"], 100, "amd64"),
            image(&["b:1", "b@sha256:00"], 200, "arm64"),
        ]);
        for (next, expect, why) in [
            (
                vec![
                    image(&["a:1"], 100, "amd64"),
                    image(&["b:1", "b@sha256:00"], 200, "arm64"),
                ],
                false,
                "steady",
            ),
            (
                vec![
                    image(&["a:1"], 130, "amd64"),
                    image(&["b:1", "b@sha256:00"], 170, "arm64"),
                ],
                false,
                "sizes wobble",
            ),
            (
                vec![
                    image(&["b:1", "b@sha256:00"], 200, "arm64"),
                    image(&["a:1"], 100, "amd64"),
                ],
                false,
                "same set in another order",
            ),
            (vec![image(&["a:1"], 100, "amd64")], true, "an image went"),
            (
                vec![
                    image(&["a:1"], 100, "amd64"),
                    image(&["b:1", "b@sha256:00"], 200, "arm64"),
                    image(&["c:1"], 1, "amd64"),
                ],
                true,
                "an image came",
            ),
            (
                vec![
                    image(&["a:1", "a:latest"], 100, "amd64"),
                    image(&["b:1", "b@sha256:00"], 200, "arm64"),
                ],
                true,
                "a new tag",
            ),
            (
                vec![
                    image(&["a:1"], 100, "arm64"),
                    image(&["b:1", "b@sha256:00"], 200, "arm64"),
                ],
                true,
                "the architecture became known or changed",
            ),
        ] {
            assert_eq!(worth_sending(Some(&base), &with(next)), expect, "{why}");
        }
    }
}
