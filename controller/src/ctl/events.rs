//! Events: `get events` (kubectl's columns), their JSON, and the
//! `Events:` section every description ends with. A series (an event
//! seen more than once) reads as kubectl prints it: `5s (x173 over 80s)`,
//! the last time seen, the count and the age of the first.

use super::{age, rfc3339, table};
use outpost_proto::Event;
use serde_json::{json, Value};
use std::fmt::Write as _;

pub fn event_json(e: &Event) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("event-{}", e.seq)},
        "type": format!("{:?}", e.kind),
        "reason": e.reason,
        "involvedObject": e.object,
        "message": e.message,
        "count": e.count.max(1),
        "firstTimestamp": rfc3339(e.first_ms()),
        "lastTimestamp": rfc3339(e.time_ms),
    })
}

/// When an event was seen, kubectl's way: `60s`, or `5s (x173 over 80s)`
/// for a series.
pub fn seen(e: &Event, now_ms: u64) -> String {
    let last = age(e.time_ms, now_ms);
    if e.count > 1 {
        format!("{last} (x{} over {})", e.count, age(e.first_ms(), now_ms))
    } else {
        last
    }
}

/// `get events`, oldest first as kubectl sorts them.
pub fn events_table(events: &[Event], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                seen(e, now_ms),
                format!("{:?}", e.kind),
                e.reason.clone(),
                e.object.clone(),
                e.message.clone(),
            ]
        })
        .collect();
    table(&["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], &rows)
}

/// The `Events:` section of a description, as kubectl lays it out.
pub fn section(o: &mut String, events: &[Event], now_ms: u64) {
    if events.is_empty() {
        let _ = writeln!(o, "Events:  <none>");
        return;
    }
    let _ = writeln!(o, "Events:");
    let mut rows: Vec<Vec<String>> = vec![vec![
        "----".into(),
        "------".into(),
        "----".into(),
        "-------".into(),
    ]];
    rows.extend(events.iter().map(|e| {
        vec![
            format!("{:?}", e.kind),
            e.reason.clone(),
            seen(e, now_ms),
            e.message.clone(),
        ]
    }));
    for line in table(&["Type", "Reason", "Age", "Message"], &rows).lines() {
        let _ = writeln!(o, "  {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_proto::EventType;

    fn event(seq: u64, kind: EventType, reason: &str, message: &str) -> Event {
        Event {
            seq,
            time_ms: 10_000,
            kind,
            reason: reason.into(),
            object: "pod/web".into(),
            message: message.into(),
            count: 1,
            first_time_ms: 10_000,
        }
    }

    #[test]
    fn sections_and_tables() {
        let mut o = String::new();
        section(&mut o, &[], 0);
        assert_eq!(o, "Events:  <none>\n");
        let evs = [
            event(1, EventType::Normal, "Scheduled", "assigned to edge-1"),
            event(2, EventType::Warning, "BackOff", "restarting"),
        ];
        let mut o = String::new();
        section(&mut o, &evs, 70_000);
        assert_eq!(
            o,
            "Events:\n\
             \x20 Type      Reason      Age    Message\n\
             \x20 ----      ------      ----   -------\n\
             \x20 Normal    Scheduled   60s    assigned to edge-1\n\
             \x20 Warning   BackOff     60s    restarting\n"
        );
        let t = events_table(&evs, 70_000);
        let lines: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            lines[0],
            ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
        );
        assert_eq!(
            lines[2],
            ["60s", "Warning", "BackOff", "pod/web", "restarting"]
        );
        assert_eq!(event_json(&evs[0])["metadata"]["name"], "event-1");
    }

    #[test]
    fn a_series_shows_its_count_and_span() {
        let mut e = event(1, EventType::Warning, "FailedSync", "disk full");
        e.count = 173;
        e.first_time_ms = 10_000;
        e.time_ms = 85_000;
        assert_eq!(seen(&e, 90_000), "5s (x173 over 80s)");
        let t = events_table(std::slice::from_ref(&e), 90_000);
        assert!(
            t.lines()
                .nth(1)
                .unwrap()
                .starts_with("5s (x173 over 80s)   Warning"),
            "{t}"
        );
        let mut o = String::new();
        section(&mut o, &[e.clone()], 90_000);
        assert!(
            o.contains("FailedSync   5s (x173 over 80s)   disk full"),
            "{o}"
        );
        assert_eq!(event_json(&e)["count"], 173);
    }
}
