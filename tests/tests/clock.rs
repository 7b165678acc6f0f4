//! Events raised while a box was offline, on a box whose clock is wrong,
//! against the real controller with a hand-made agent session on a real
//! node's certificate:
//! - the node's agent is killed (its offline period begins), and a while
//!   later the box comes back with its clock two days behind and sends, in
//!   protocol 5, events it raised while offline: the event shows when it
//!   happened (corrected by the box's skew), not the reconnect time, as a
//!   series with its count and first time;
//! - an event dated before the offline period began, or after the batch
//!   was sent, is clamped into the session's bounds;
//! - the same node speaking protocol 4 is still welcomed and its events
//!   (without times) are stamped on arrival.

use outpost_proto::link::{self, read_frame};
use outpost_proto::{
    AgentEvent, AgentEventBatch, EventType, Hello, Message, TimedAgentEvent, PROTOCOL_VERSION,
};
use outpost_tests::raw::{creds_from_pem, Creds};
use outpost_tests::{Cluster, Timing};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const NODE: &str = "clock-node";
const DAY: u64 = 86_400_000;

fn wall_ms() -> u64 {
    outpost_proto::clock::now_ms()
}

fn event(reason: &str, message: &str) -> AgentEvent {
    AgentEvent {
        kind: EventType::Warning,
        reason: reason.into(),
        pod: String::new(),
        message: message.into(),
    }
}

/// A session of protocol `version`: hello, then `make(welcome time)` is
/// sent; returns the controller's time in the welcome.
async fn session(
    addr: SocketAddr,
    ca: &[u8],
    creds: Creds,
    version: u32,
    make: impl FnOnce(u64) -> Message,
) -> u64 {
    let client = link::client_config(
        ca.to_vec().into(),
        Some(creds),
        link::transport(Duration::from_secs(5), 2),
    )
    .unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = endpoint
        .connect_with(client, addr, "localhost")
        .unwrap()
        .await
        .expect("connecting");
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    link::write_frame(
        &mut send,
        &Message::Hello(Hello {
            protocol_version: version,
            node: NODE.into(),
            agent_version: "clock-test".into(),
        }),
    )
    .await
    .unwrap();
    let welcome = match tokio::time::timeout(
        Duration::from_secs(10),
        read_frame(&mut recv, outpost_proto::MAX_FRAME),
    )
    .await
    {
        Ok(Ok(Some(Message::Welcome(w)))) => w,
        other => panic!("expected a welcome, got {other:?}"),
    };
    link::write_frame(&mut send, &make(welcome.server_time_ms))
        .await
        .unwrap();
    // A heartbeat after the events: once the stream has taken it, the
    // events were read before it.
    link::write_frame(
        &mut send,
        &Message::Heartbeat(outpost_proto::Heartbeat { seq: 1 }),
    )
    .await
    .unwrap();
    let _ = send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    welcome.server_time_ms
}

fn ts(v: &Value, field: &str) -> u64 {
    outpost_proto::units::parse_rfc3339(v[field].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{field} of {v}: {e}"))
}

/// The events of the node with `reason`, once there are `n`.
fn events_with(c: &Cluster, reason: &str, n: usize) -> Vec<Value> {
    let mut found = Vec::new();
    c.wait_for(
        &format!("{n} {reason} events"),
        Duration::from_secs(20),
        |c| {
            let all = c.ctl_json(&["get", "events"]);
            found = all["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e["reason"] == reason)
                .collect();
            found.len() >= n
        },
    );
    found
}

#[test]
fn events_raised_offline_keep_their_time_on_a_box_with_a_wrong_clock() {
    let mut c = Cluster::start(Timing::default());
    let (token, hash) = c.token(&[]);
    c.start_agent(NODE, Some((&token, &hash)), &[]);
    c.wait_for("clock-node Ready", Duration::from_secs(30), |c| {
        c.is_ready(NODE)
    });
    // The box goes offline; from here on the test speaks for the node.
    c.kill_agent(NODE);
    let offline_at = wall_ms();
    let cfg = outpost_controller::clientconfig::ClientConfig::load(&c.config).unwrap();
    let ca = outpost_controller::clientconfig::pem_der(&cfg.ca, "CERTIFICATE").unwrap();
    let identity = c.path(&format!("agent-{NODE}/identity.pem"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Offline for a while (no timing is asserted on: the times below are
    // the box's own, given relative to when it sends).
    std::thread::sleep(Duration::from_secs(2));

    // Back, with its clock two days behind; what it raised while offline:
    // a series 40 s to 30 s before sending (3 times), one dated a week back
    // (before the offline period), one dated a day ahead.
    let skew = 2 * DAY;
    let sent_local = Instant::now();
    let welcome = rt.block_on(session(
        c.listen,
        &ca,
        creds_from_pem(&identity),
        PROTOCOL_VERSION,
        |_| {
            let box_now = wall_ms() - skew;
            Message::AgentEventsAt(Box::new(AgentEventBatch {
                sent_ms: box_now,
                events: vec![
                    TimedAgentEvent {
                        event: event("ClockOffline", "raised while offline"),
                        first_time_ms: box_now - 40_000,
                        time_ms: box_now - 30_000,
                        count: 3,
                    },
                    TimedAgentEvent {
                        event: event("ClockAncient", "dated a week back"),
                        first_time_ms: box_now - 7 * DAY,
                        time_ms: box_now - 7 * DAY,
                        count: 1,
                    },
                    TimedAgentEvent {
                        event: event("ClockFuture", "dated a day ahead"),
                        first_time_ms: box_now + DAY,
                        time_ms: box_now + DAY,
                        count: 1,
                    },
                ],
            }))
        },
    ));
    let sent_within = sent_local.elapsed();

    let offline = &events_with(&c, "ClockOffline", 1)[0];
    let (first, last) = (ts(offline, "firstTimestamp"), ts(offline, "lastTimestamp"));
    eprintln!(
        "welcome at {welcome}, offline series first {first} last {last} (sent within {sent_within:?})"
    );
    // When it happened, on the controller's clock: 30 s before it arrived,
    // which was after the reconnect (the welcome), not the reconnect time.
    // Times read to the second; the session took `sent_within`.
    let slack = 1_000 + u64::try_from(sent_within.as_millis()).unwrap();
    assert!(
        last + 30_000 <= welcome + slack && last + 30_000 + 1_000 >= welcome,
        "last seen {last}, welcome {welcome}: the event keeps its own time"
    );
    assert!(
        last < welcome,
        "the reconnect time would be {welcome}, got {last}"
    );
    assert!(
        first + 10_000 <= last + 1_000 && first + 10_000 + 1_000 >= last,
        "first {first} last {last}"
    );
    assert_eq!(offline["count"], 3, "{offline}");

    // A week back by the box's clock: not before the offline period began
    // (less a minute's slack), nor after the reconnect.
    let ancient = &events_with(&c, "ClockAncient", 1)[0];
    let t = ts(ancient, "lastTimestamp");
    // The node was last heard from at most a heartbeat (1 s) before the
    // agent was killed; a few seconds more for a heartbeat held up by load.
    assert!(
        t + 60_000 + 5_000 >= offline_at && t + 59_000 <= offline_at,
        "clamped to the offline period less a minute: {t}, offline from {offline_at}"
    );
    // A day ahead: not after it arrived.
    let future = &events_with(&c, "ClockFuture", 1)[0];
    let t = ts(future, "lastTimestamp");
    assert!(
        t + 1_000 >= welcome && t <= wall_ms(),
        "clamped to its arrival: {t}, welcome {welcome}"
    );

    // Protocol 4: still welcomed, its bare events stamped on arrival.
    let welcome4 = rt.block_on(session(c.listen, &ca, creds_from_pem(&identity), 4, |_| {
        Message::AgentEvents(vec![event("ClockOldAgent", "from protocol 4")])
    }));
    let old = &events_with(&c, "ClockOldAgent", 1)[0];
    let t = ts(old, "lastTimestamp");
    assert!(
        t + 1_000 >= welcome4,
        "stamped on arrival: {t} vs {welcome4}"
    );
    assert_eq!(old["count"], 1);
}
