//! Scores over the feasible nodes, each plugin normalised to 0–100 and
//! weighted with Kubernetes' defaults:
//!
//! | plugin | weight | raw score |
//! |---|---|---|
//! | TaintToleration | 3 | untolerated PreferNoSchedule taints (fewer is better) |
//! | NodeAffinity | 2 | sum of the weights of matching preferred terms |
//! | PodTopologySpread | 2 | matching pods in the node's domains (fewer is better); ScheduleAnyway constraints, or Outpost's default spread over hosts and sites |
//! | InterPodAffinity | 2 | preferred (anti-)affinity: weight × matching pods in the domain |
//! | NodeResourcesFit | 1 | LeastAllocated (default) or MostAllocated, cpu and memory |
//! | NodeResourcesBalancedAllocation | 1 | how evenly cpu and memory are used |
//! | ImageLocality | 1 | size of the pod's images the node holds, scaled by how many nodes hold them |
//!
//! A plugin that would give every node the same score is skipped.

use super::filter::Ctx;
use super::snapshot::NodeInfo;
use super::topology::{DomainCounts, NO_DOMAIN};
use crate::api::pod::TaintEffect;

pub const MAX_SCORE: i64 = 100;
pub const WEIGHT_TAINT: i64 = 3;
pub const WEIGHT_NODE_AFFINITY: i64 = 2;
pub const WEIGHT_SPREAD: i64 = 2;
pub const WEIGHT_POD_AFFINITY: i64 = 2;
pub const WEIGHT_FIT: i64 = 1;
pub const WEIGHT_BALANCED: i64 = 1;
pub const WEIGHT_IMAGE: i64 = 1;

/// ImageLocality's thresholds (Kubernetes): below 23 MB an image is not
/// worth preferring a node for; 1000 MB per container scores full.
const MB: u64 = 1024 * 1024;
const IMAGE_MIN: u64 = 23 * MB;
const IMAGE_MAX_PER_CONTAINER: u64 = 1000 * MB;

/// How NodeResourcesFit scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Prefer the emptiest node (spreads load; Kubernetes' default).
    #[default]
    LeastAllocated,
    /// Prefer the fullest node that fits (frees whole boxes for scale-in).
    MostAllocated,
}

/// Why a strategy name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scheduler strategy {0:?}: use least-allocated or most-allocated")]
pub struct UnknownStrategy(pub String);

impl std::str::FromStr for Strategy {
    type Err = UnknownStrategy;
    fn from_str(s: &str) -> Result<Strategy, UnknownStrategy> {
        match s {
            "least-allocated" | "LeastAllocated" => Ok(Strategy::LeastAllocated),
            "most-allocated" | "MostAllocated" => Ok(Strategy::MostAllocated),
            other => Err(UnknownStrategy(other.to_string())),
        }
    }
}

/// Scratch buffers reused across pods.
#[derive(Debug, Default)]
pub struct Scratch {
    raw: Vec<i64>,
    pub total: Vec<i64>,
}

/// Adds `weight` × `raw` normalised by `norm` into `total`.
fn add(total: &mut [i64], raw: &[i64], weight: i64, norm: impl Fn(i64, i64, i64) -> i64) {
    let (mut min, mut max) = (i64::MAX, i64::MIN);
    for r in raw {
        min = min.min(*r);
        max = max.max(*r);
    }
    for (t, r) in total.iter_mut().zip(raw) {
        *t += weight * norm(*r, min, max);
    }
}

fn fraction_score(req: u64, alloc: u64, strategy: Strategy) -> i64 {
    if alloc == 0 {
        return 0;
    }
    let req = req.min(alloc);
    let free = alloc - req;
    let v = match strategy {
        Strategy::LeastAllocated => free.saturating_mul(100) / alloc,
        Strategy::MostAllocated => req.saturating_mul(100) / alloc,
    };
    i64::try_from(v).unwrap_or(0)
}

#[allow(clippy::cast_precision_loss)]
fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        (a as f64 / b as f64).min(1.0)
    }
}

/// Ln(size + 2), Kubernetes' weight for a spread constraint by the number
/// of its domains.
#[allow(clippy::cast_precision_loss)]
fn spread_weight(domains: usize) -> f64 {
    ((domains + 2) as f64).ln()
}

/// Scores `feasible` into `scratch.total`, one per node.
pub fn score(cx: &Ctx<'_>, feasible: &[usize], strategy: Strategy, scratch: &mut Scratch) {
    let (snap, pod, plan) = (cx.snap, cx.pod, cx.plan);
    let n = feasible.len();
    scratch.total.clear();
    scratch.total.resize(n, 0);
    let raw = &mut scratch.raw;
    let node = |i: usize| snap.node(feasible[i]).expect("feasible node");

    // TaintToleration.
    if snap.prefer_taint_nodes > 0 {
        raw.clear();
        raw.extend((0..n).map(|i| {
            let c = node(i)
                .taints
                .iter()
                .filter(|t| t.effect == TaintEffect::PreferNoSchedule)
                .filter(|t| {
                    !pod.spec.tolerations.iter().any(|tol| {
                        tol.effect
                            .is_none_or(|e| e == TaintEffect::PreferNoSchedule)
                            && tol.tolerates(t)
                    })
                })
                .count();
            i64::try_from(c).unwrap_or(i64::MAX)
        }));
        add(&mut scratch.total, raw, WEIGHT_TAINT, |r, _, max| {
            if max == 0 {
                MAX_SCORE
            } else {
                MAX_SCORE - r * MAX_SCORE / max
            }
        });
    }

    // NodeAffinity (preferred terms).
    let preferred = pod
        .spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .map(|na| &na.preferred_during_scheduling_ignored_during_execution)
        .filter(|p| !p.is_empty());
    if let Some(terms) = preferred {
        raw.clear();
        raw.extend((0..n).map(|i| {
            let labels = &node(i).labels;
            terms
                .iter()
                .filter(|t| t.preference.matches(labels))
                .map(|t| i64::from(t.weight))
                .sum::<i64>()
        }));
        add(
            &mut scratch.total,
            raw,
            WEIGHT_NODE_AFFINITY,
            |r, _, max| {
                if max <= 0 {
                    0
                } else {
                    r * MAX_SCORE / max
                }
            },
        );
    }

    // PodTopologySpread (soft constraints).
    if !plan.soft_spread.is_empty() {
        let constraints: Vec<(usize, Option<&DomainCounts>, f64, f64)> = plan
            .soft_spread
            .iter()
            .map(|s| {
                (
                    s.key,
                    snap.set(s.set).domains(s.key),
                    spread_weight(snap.topo.keys[s.key].live_domain_count()),
                    f64::from(s.max_skew.saturating_sub(1)),
                )
            })
            .collect();
        raw.clear();
        raw.extend((0..n).map(|i| spread_raw(node(i), &constraints)));
        add(&mut scratch.total, raw, WEIGHT_SPREAD, |r, min, max| {
            if max == 0 {
                MAX_SCORE
            } else {
                MAX_SCORE * (max + min - r) / max
            }
        });
    }

    // InterPodAffinity (preferred terms).
    if !plan.pref_affinity.is_empty() || !plan.pref_anti.is_empty() {
        raw.clear();
        raw.extend((0..n).map(|i| {
            let nd = node(i);
            let mut s = 0i64;
            for (terms, sign) in [(&plan.pref_affinity, 1i64), (&plan.pref_anti, -1)] {
                for w in terms {
                    let d = nd.domain(w.key);
                    if d == NO_DOMAIN {
                        continue;
                    }
                    let c = snap.set(w.set).domains(w.key).map_or(0, |dc| dc.get(d));
                    s += sign * w.weight * i64::from(c);
                }
            }
            s
        }));
        add(
            &mut scratch.total,
            raw,
            WEIGHT_POD_AFFINITY,
            |r, min, max| {
                if max > min {
                    MAX_SCORE * (r - min) / (max - min)
                } else {
                    0
                }
            },
        );
    }

    // NodeResourcesFit and BalancedAllocation (cpu and memory, with the
    // pod itself and scoring's defaults for empty requests).
    let (pc, pm) = plan.non_zero;
    for (i, t) in scratch.total.iter_mut().enumerate() {
        let nd = node(i);
        let (cpu, mem) = (nd.non_zero.0 + pc, nd.non_zero.1 + pm);
        let (ac, am) = (nd.allocatable.cpu_millis, nd.allocatable.memory_bytes);
        let fit = (fraction_score(cpu, ac, strategy) + fraction_score(mem, am, strategy)) / 2;
        let std = (ratio(cpu, ac) - ratio(mem, am)).abs() / 2.0;
        #[allow(clippy::cast_possible_truncation)]
        let balanced = ((1.0 - std) * 100.0) as i64;
        *t += WEIGHT_FIT * fit + WEIGHT_BALANCED * balanced;
    }

    // ImageLocality. Images every node holds add the same to every node,
    // and when even holding every image stays under the threshold every
    // node scores 0: skipped in both cases.
    let total_nodes = u64::try_from(snap.live.max(1)).unwrap_or(1);
    let mut everywhere = 0u64;
    let mut most = 0u64;
    let mut varying: Vec<(u32, u64)> = Vec::new();
    for img in &plan.images {
        let Some(id) = snap.images.id(img) else {
            continue;
        };
        let e = snap.images.entry(id);
        if e.nodes == 0 {
            continue;
        }
        let holders = u64::from(e.nodes);
        let contribution = |size: u64| size.saturating_mul(holders) / total_nodes;
        most = most.saturating_add(contribution(e.size));
        if holders >= total_nodes {
            everywhere = everywhere.saturating_add(contribution(e.size));
        } else {
            varying.push((id, holders));
        }
    }
    if !varying.is_empty() && most > IMAGE_MIN {
        let containers = u64::try_from(plan.images.len().max(1)).unwrap_or(1);
        let max_t = IMAGE_MAX_PER_CONTAINER * containers;
        for (i, t) in scratch.total.iter_mut().enumerate() {
            let nd = node(i);
            let mut sum = everywhere;
            for (id, holders) in &varying {
                if let Some(size) = nd.image(*id) {
                    sum = sum.saturating_add(size.saturating_mul(*holders) / total_nodes);
                }
            }
            let sum = sum.clamp(IMAGE_MIN, max_t);
            let s = (sum - IMAGE_MIN).saturating_mul(100) / (max_t - IMAGE_MIN);
            *t += WEIGHT_IMAGE * i64::try_from(s).unwrap_or(0);
        }
    }
}

/// Kubernetes' PodTopologySpread raw score: matching pods in the node's
/// domain of each constraint, weighted by ln(domains + 2), plus maxSkew − 1.
fn spread_raw(nd: &NodeInfo, constraints: &[(usize, Option<&DomainCounts>, f64, f64)]) -> i64 {
    let mut s = 0f64;
    for (key, dc, weight, skew) in constraints {
        let d = nd.domain(*key);
        if d == NO_DOMAIN {
            continue;
        }
        let cnt = dc.map_or(0, |dc| dc.get(d));
        s += f64::from(cnt) * weight + skew;
    }
    #[allow(clippy::cast_possible_truncation)]
    let r = s.round() as i64;
    r
}

/// Index of the best total (the first among equals).
pub fn best(total: &[i64]) -> Option<usize> {
    let mut best: Option<(usize, i64)> = None;
    for (i, t) in total.iter().enumerate() {
        if best.is_none_or(|(_, b)| *t > b) {
            best = Some((i, *t));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_parse() {
        assert_eq!("most-allocated".parse(), Ok(Strategy::MostAllocated));
        assert_eq!("least-allocated".parse(), Ok(Strategy::LeastAllocated));
        let e = "fullest".parse::<Strategy>().unwrap_err();
        assert!(e.to_string().contains("most-allocated"));
    }

    #[test]
    fn resource_scores_follow_the_strategy() {
        let cases = [
            // (requested, allocatable, least, most)
            (0u64, 1000u64, 100i64, 0i64),
            (250, 1000, 75, 25),
            (1000, 1000, 0, 100),
            (2000, 1000, 0, 100),
            (5, 0, 0, 0),
        ];
        for (req, alloc, least, most) in cases {
            assert_eq!(
                fraction_score(req, alloc, Strategy::LeastAllocated),
                least,
                "{req}/{alloc}"
            );
            assert_eq!(
                fraction_score(req, alloc, Strategy::MostAllocated),
                most,
                "{req}/{alloc}"
            );
        }
    }

    #[test]
    fn normalisation_and_choice() {
        let mut total = vec![0; 3];
        // Reverse normalisation (fewer taints is better).
        add(&mut total, &[0, 1, 2], 3, |r, _, max| {
            MAX_SCORE - r * MAX_SCORE / max
        });
        assert_eq!(total, vec![300, 150, 0]);
        assert_eq!(best(&total), Some(0));
        assert_eq!(best(&[5, 7, 7]), Some(1), "first among equals");
        assert_eq!(best(&[]), None);
    }
}
