//! docs/METRICS.md is the operator's reference for `/metrics`. Its tables
//! must match what the programs serve: every metric served has a row with
//! its type, and every row names a metric that is served. The controller's
//! metrics are read from a real controller, and the agent's from its
//! renderer.

use outpost_tests::{Cluster, Timing};
use std::collections::BTreeMap;

const DOC: &str = include_str!("../../docs/METRICS.md");

/// Metric name to type, from the rows of the table under `## {section}`.
fn documented(section: &str) -> BTreeMap<String, String> {
    let heading = format!("## {section}");
    let mut out = BTreeMap::new();
    let mut inside = false;
    for line in DOC.lines() {
        if line.starts_with("## ") {
            inside = line.trim() == heading;
            continue;
        }
        let Some(row) = line.strip_prefix("| `").filter(|_| inside) else {
            continue;
        };
        let mut cells = row.split('|').map(str::trim);
        let name = cells.next().unwrap_or("").trim_end_matches('`');
        let kind = cells.next().unwrap_or("");
        assert!(
            out.insert(name.to_string(), kind.to_string()).is_none(),
            "{name} is listed twice under {heading}"
        );
    }
    assert!(
        !out.is_empty(),
        "no table rows under {heading:?} in docs/METRICS.md"
    );
    out
}

/// Metric name to type, from a scrape's `# TYPE` lines.
fn served(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let (name, kind) = rest.split_once(' ')?;
            Some((name.to_string(), kind.trim().to_string()))
        })
        .collect()
}

fn compare(what: &str, served: &BTreeMap<String, String>, documented: &BTreeMap<String, String>) {
    let missing: Vec<_> = served
        .iter()
        .filter(|(n, k)| documented.get(*n) != Some(k))
        .collect();
    let stale: Vec<_> = documented
        .keys()
        .filter(|n| !served.contains_key(*n))
        .collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/METRICS.md does not match the {what}'s /metrics.\n\
         served but not documented with this type: {missing:?}\n\
         documented but not served: {stale:?}"
    );
}

#[test]
fn the_reference_lists_every_controller_metric() {
    let c = Cluster::start(Timing::default());
    let text = c
        .metrics_text()
        .expect("the controller's /metrics did not answer");
    compare("controller", &served(&text), &documented("Controller"));
}

#[test]
fn the_reference_lists_every_agent_metric() {
    let text = outpost_agent::metrics::render(
        &outpost_agent::proxy::ProxyMetrics::default(),
        &outpost_agent::dns::DnsStats::default(),
    );
    compare("agent", &served(&text), &documented("Agent"));
}
