//! Sites: the nodes that share a `topology.outpost.dev/site` label, and
//! what their readiness together says about the site. One pure function,
//! so the node lifecycle controller (which raises `SitePartitioned` and
//! `SiteReconnected` events) and `outpostctl get sites` (which shows the
//! status) can never disagree.
//!
//! Flow in: per node, its site, whether it is Ready, and when its Ready
//! condition last changed; the partition window. Flow out: per site, its
//! node counts and a [`SiteState`].
//!
//! The rule: a site whose every node is not Ready, with at least two nodes
//! that all turned NotReady within the window of each other, lost its link
//! (a partition): boxes do not die together, an uplink does. A site whose
//! nodes went one by one, or that has a single node, is `NotReady`, which
//! says nothing about why. Some nodes down is `Degraded`.

use std::collections::BTreeMap;
use std::time::Duration;

/// How close together every node of a site must turn NotReady for the
/// site to count as partitioned. Nodes cut off at the same moment turn
/// NotReady within one heartbeat interval (5 s) plus the lease check's
/// tick (1 s) of each other; the window leaves room for that and for
/// agents that were mid-reconnect.
pub const DEFAULT_PARTITION_WINDOW: Duration = Duration::from_secs(30);

/// What a site's nodes together say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteState {
    /// Every node Ready.
    Ready,
    /// Some nodes Ready, some not.
    Degraded,
    /// No node Ready, and all of them (two or more) turned NotReady within
    /// the partition window: the site's link is down.
    Partitioned,
    /// No node Ready, not (known to be) all at once.
    NotReady,
}

impl SiteState {
    pub fn as_str(self) -> &'static str {
        match self {
            SiteState::Ready => "Ready",
            SiteState::Degraded => "Degraded",
            SiteState::Partitioned => "Partitioned",
            SiteState::NotReady => "NotReady",
        }
    }
}

/// One node, as far as its site's state goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReadiness {
    pub site: String,
    pub ready: bool,
    /// When its Ready condition last changed (ms since the epoch; 0 when
    /// never).
    pub since_ms: u64,
}

/// One site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteStatus {
    pub name: String,
    pub nodes: usize,
    pub ready: usize,
    pub state: SiteState,
    /// Since when the site has been in this state, as far as the nodes
    /// tell: the latest Ready transition among its nodes (ms; 0 unknown).
    pub since_ms: u64,
}

/// The status of every site named by `nodes` (nodes without a site label
/// are not passed in), sorted by name.
pub fn site_statuses(
    nodes: impl IntoIterator<Item = NodeReadiness>,
    window: Duration,
) -> Vec<SiteStatus> {
    #[derive(Default)]
    struct Acc {
        nodes: usize,
        ready: usize,
        first_down: u64,
        last_change: u64,
    }
    let mut by: BTreeMap<String, Acc> = BTreeMap::new();
    for n in nodes {
        let a = by.entry(n.site).or_insert_with(|| Acc {
            first_down: u64::MAX,
            ..Acc::default()
        });
        a.nodes += 1;
        a.last_change = a.last_change.max(n.since_ms);
        if n.ready {
            a.ready += 1;
        } else {
            a.first_down = a.first_down.min(n.since_ms);
        }
    }
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    by.into_iter()
        .map(|(name, a)| {
            let state = if a.ready == a.nodes {
                SiteState::Ready
            } else if a.ready > 0 {
                SiteState::Degraded
            } else if a.nodes >= 2 && a.last_change.saturating_sub(a.first_down) <= window_ms {
                SiteState::Partitioned
            } else {
                SiteState::NotReady
            };
            SiteStatus {
                name,
                nodes: a.nodes,
                ready: a.ready,
                state,
                since_ms: a.last_change,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(site: &str, ready: bool, since_ms: u64) -> NodeReadiness {
        NodeReadiness {
            site: site.into(),
            ready,
            since_ms,
        }
    }

    fn states(nodes: Vec<NodeReadiness>) -> Vec<(String, SiteState)> {
        site_statuses(nodes, DEFAULT_PARTITION_WINDOW)
            .into_iter()
            .map(|s| (s.name, s.state))
            .collect()
    }

    #[test]
    fn a_site_whose_nodes_all_go_at_once_is_partitioned() {
        let got = states(vec![
            n("a", false, 100_000),
            n("a", false, 104_000),
            n("a", false, 101_000),
            n("b", true, 0),
            n("b", false, 50_000),
            n("c", true, 0),
        ]);
        assert_eq!(
            got,
            vec![
                ("a".into(), SiteState::Partitioned),
                ("b".into(), SiteState::Degraded),
                ("c".into(), SiteState::Ready),
            ]
        );
    }

    #[test]
    fn nodes_dying_one_by_one_or_a_single_node_are_not_a_partition() {
        let got = states(vec![
            n("a", false, 100_000),
            n("a", false, 100_000 + 31_000),
            n("solo", false, 5_000),
        ]);
        assert_eq!(
            got,
            vec![
                ("a".into(), SiteState::NotReady),
                ("solo".into(), SiteState::NotReady),
            ]
        );
        // Exactly at the window's edge it still counts as at once.
        let got = states(vec![n("a", false, 0), n("a", false, 30_000)]);
        assert_eq!(got, vec![("a".into(), SiteState::Partitioned)]);
    }

    #[test]
    fn counts_and_since() {
        let s = site_statuses(
            vec![n("a", true, 7), n("a", false, 9), n("a", true, 3)],
            DEFAULT_PARTITION_WINDOW,
        );
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].nodes, s[0].ready, s[0].since_ms), (3, 2, 9));
    }
}
