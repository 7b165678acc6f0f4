//! Mixed protocol versions against the real controller, with a hand-made
//! agent session on a real node's certificate:
//! - an agent speaking protocol 3 is welcomed, gets its desired pods as
//!   `PodsDesired` (the message it knows), and its pod removal reaches it;
//! - an agent speaking protocol 4 gets `NodeDesired`, whose removal carries
//!   the deletion's grace period (`delete --grace-period 2`);
//! - a version newer than the controller's is refused by name
//!   (`VersionMismatch`), which is what makes a newer agent say hello again
//!   in the version below.

use outpost_proto::link::{self, read_frame};
use outpost_proto::{ErrorCode, Hello, Message, PodsAck, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use outpost_tests::raw::{creds_from_pem, Creds};
use outpost_tests::{Cluster, Timing};
use std::net::SocketAddr;
use std::time::Duration;

const NODE: &str = "ver-node";

/// The next frame, if one comes within 10 s.
async fn next(recv: &mut quinn::RecvStream) -> Option<Message> {
    tokio::time::timeout(
        Duration::from_secs(10),
        read_frame(recv, outpost_proto::MAX_FRAME),
    )
    .await
    .ok()
    .and_then(|r| r.ok().flatten())
}

/// A session of protocol `version` as node [`NODE`]: the hello's answer,
/// then (when welcomed) the first desired-state message after an ack of
/// `acked`, then the next one after `between` ran.
async fn session(
    addr: SocketAddr,
    ca: &[u8],
    creds: Creds,
    version: u32,
    acked: u64,
    between: impl FnOnce(),
) -> Vec<Message> {
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
    let hello = Message::Hello(Hello {
        protocol_version: version,
        node: NODE.into(),
        agent_version: "versions-test".into(),
    });
    link::write_frame(&mut send, &hello).await.unwrap();
    let mut seen = Vec::new();
    let Some(first) = next(&mut recv).await else {
        return seen;
    };
    let welcomed = matches!(first, Message::Welcome(_));
    seen.push(first);
    if welcomed {
        link::write_frame(&mut send, &Message::PodsAck(PodsAck { generation: acked }))
            .await
            .unwrap();
        let desired = |m: &Message| matches!(m, Message::PodsDesired(_) | Message::NodeDesired(_));
        let mut wanted = 2;
        let mut between = Some(between);
        for _ in 0..50 {
            let Some(m) = next(&mut recv).await else {
                break;
            };
            if desired(&m) {
                let generation = match &m {
                    Message::PodsDesired(d) => d.generation,
                    Message::NodeDesired(d) => d.generation,
                    _ => 0,
                };
                link::write_frame(&mut send, &Message::PodsAck(PodsAck { generation }))
                    .await
                    .unwrap();
                seen.push(m);
                wanted -= 1;
                if wanted == 0 {
                    break;
                }
                if let Some(b) = between.take() {
                    b();
                }
            }
        }
    }
    conn.close(0u32.into(), b"done");
    seen
}

fn pod(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 30
  containers:
  - name: main
    image: outpost/workload-http:dev
"#
    )
}

#[test]
fn older_and_newer_agents_are_spoken_to_in_their_version() {
    let mut c = Cluster::start(Timing::default());
    let (token, hash) = c.token(&[]);
    c.start_agent(NODE, Some((&token, &hash)), &[]);
    c.wait_for("ver-node Ready", Duration::from_secs(30), |c| {
        c.is_ready(NODE)
    });
    // From here on the test speaks for the node.
    c.kill_agent(NODE);
    let cfg = outpost_controller::clientconfig::ClientConfig::load(&c.config).unwrap();
    let ca = outpost_controller::clientconfig::pem_der(&cfg.ca, "CERTIFICATE").unwrap();
    let identity = c.path(&format!("agent-{NODE}/identity.pem"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = c.listen;

    // Protocol 3: PodsDesired, its removal a bare key.
    c.apply("v3.yaml", &pod("v3"));
    let v3 = rt.block_on(session(
        addr,
        &ca,
        creds_from_pem(&identity),
        MIN_PROTOCOL_VERSION,
        0,
        || {
            let out = c.ctl(&["delete", "pod", "v3", "--grace-period", "2"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        },
    ));
    assert!(matches!(v3.first(), Some(Message::Welcome(_))), "{v3:?}");
    let Some(Message::PodsDesired(full)) = v3.get(1) else {
        panic!("protocol 3 gets PodsDesired: {v3:?}")
    };
    assert!(
        full.full && full.pods.iter().any(|p| p.spec.name == "v3"),
        "{full:?}"
    );
    let Some(Message::PodsDesired(removal)) = v3.get(2) else {
        panic!("protocol 3 gets its removal as PodsDesired: {v3:?}")
    };
    assert_eq!(removal.removed, vec!["v3".to_string()]);

    // Protocol 4: NodeDesired, its removal with the delete's grace period.
    c.apply("v4.yaml", &pod("v4"));
    let v4 = rt.block_on(session(
        addr,
        &ca,
        creds_from_pem(&identity),
        PROTOCOL_VERSION,
        0,
        || {
            let out = c.ctl(&["delete", "pod", "v4", "--grace-period", "2"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        },
    ));
    // Service routes come on the same stream; the desired state in order.
    let v4: Vec<&Message> = v4
        .iter()
        .filter(|m| !matches!(m, Message::Routes(_)))
        .collect();
    let Some(Message::NodeDesired(full)) = v4.get(1).copied() else {
        panic!("protocol 4 gets NodeDesired: {v4:?}")
    };
    assert!(
        full.full && full.pods.iter().any(|p| p.spec.name == "v4"),
        "{full:?}"
    );
    let Some(Message::NodeDesired(removal)) = v4.get(2).copied() else {
        panic!("protocol 4 gets its removal as NodeDesired: {v4:?}")
    };
    let r = removal
        .removed
        .iter()
        .find(|r| r.key == "v4")
        .unwrap_or_else(|| panic!("{removal:?}"));
    assert_eq!(r.grace_period_seconds, Some(2), "{removal:?}");

    // Newer than the controller: refused by name.
    let newer = rt.block_on(session(
        addr,
        &ca,
        creds_from_pem(&identity),
        PROTOCOL_VERSION + 1,
        0,
        || {},
    ));
    match newer.first() {
        Some(Message::Error(e)) => {
            assert_eq!(e.code, ErrorCode::VersionMismatch, "{e:?}");
            assert!(
                e.message
                    .contains(&format!("{MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}")),
                "{e:?}"
            );
        }
        other => panic!("expected VersionMismatch, got {other:?}"),
    }
    eprintln!(
        "protocol {MIN_PROTOCOL_VERSION}: {} desired-state messages as PodsDesired; protocol {PROTOCOL_VERSION}: removal grace {:?}; protocol {}: refused",
        v3.len() - 1,
        r.grace_period_seconds,
        PROTOCOL_VERSION + 1
    );
}
