//! Enrolment against the real controller under the two failures hardening
//! found:
//! - 200 idle connections without a certificate (no stream, no request)
//!   hold no enrolment slot: a real enrolment is answered while they are
//!   all still open, and each is then dropped by the controller's deadline
//!   for anonymous connections;
//! - an enrolment whose answer never reaches the box (the controller
//!   committed it, the box went away) can be retried: with the same key and
//!   the same single-use token it gets a working certificate; a node that
//!   never connected may enrol with a new key for one more token use, and
//!   is told plainly when the token has none left; once the node has
//!   connected, the name is taken;
//! - a real agent whose node was deleted while it was offline is told, on
//!   its return, to start with a new `--token`; started with one it enrols
//!   again under the same name, and the pod the deleted node ran is
//!   stopped on the box (the new node's first desired state is whole,
//!   because the box's acknowledgement belongs to the deleted node).

use outpost_controller::clientconfig::{pem_der, ClientConfig};
use outpost_proto::link;
use outpost_proto::{EnrolRequest, ErrorCode, Hello, Message, PROTOCOL_VERSION};
use outpost_tests::raw::{frame, send_raw, Creds, Outcome};
use outpost_tests::{Cluster, NodeContainers, Timing};
use rustls::pki_types::PrivateKeyDer;
use std::net::SocketAddr;
use std::time::Duration;

/// A key and a CSR for it.
fn key() -> (rcgen::KeyPair, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec();
    (key, csr)
}

fn enrol_frame(token: &str, node: &str, csr: &[u8]) -> Vec<u8> {
    frame(&Message::EnrolRequest(EnrolRequest {
        token: token.into(),
        node: node.into(),
        csr_der: csr.to_vec(),
        labels: Default::default(),
    }))
}

fn hello(node: &str) -> Vec<u8> {
    frame(&Message::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        node: node.into(),
        agent_version: "enrolment-test".into(),
    }))
}

/// A connection without a client certificate.
async fn anonymous(addr: SocketAddr, ca: &[u8]) -> (quinn::Endpoint, quinn::Connection) {
    let client = link::client_config(
        ca.to_vec().into(),
        None,
        link::transport(Duration::from_secs(30), 2),
    )
    .unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = endpoint
        .connect_with(client, addr, "localhost")
        .unwrap()
        .await
        .expect("handshake");
    (endpoint, conn)
}

/// The certificate an enrolment answered with, with its key.
fn creds(out: &Outcome, key: &rcgen::KeyPair) -> Creds {
    match out {
        Outcome::Reply(Message::EnrolResponse(r)) => (
            vec![r.cert_der.clone().into()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        ),
        other => panic!("expected a certificate, got {}", other.text()),
    }
}

#[test]
fn idle_anonymous_connections_hold_no_enrolment_slot() {
    let c = Cluster::start(Timing::default());
    let (token, _) = c.token(&["--uses", "1"]);
    let cfg = ClientConfig::load(&c.config).unwrap();
    let ca = pem_der(&cfg.ca, "CERTIFICATE").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = c.listen;
    rt.block_on(async {
        let mut idle = Vec::new();
        for _ in 0..200 {
            idle.push(anonymous(addr, &ca).await);
        }
        let (_key, csr) = key();
        let out = send_raw(addr, &ca, None, enrol_frame(&token, "flooded", &csr)).await;
        assert!(
            matches!(out, Outcome::Reply(Message::EnrolResponse(_))),
            "enrolment behind 200 idle connections: {}",
            out.text()
        );
        let open = idle
            .iter()
            .filter(|(_, c)| c.close_reason().is_none())
            .count();
        assert_eq!(
            open, 200,
            "the enrolment was answered only after idle connections were dropped"
        );
        for (_, conn) in &idle {
            let reason = tokio::time::timeout(Duration::from_secs(30), conn.closed())
                .await
                .expect("an idle anonymous connection is dropped by the controller");
            let text = reason.to_string();
            assert!(text.contains("no request within 5s"), "{text}");
        }
        eprintln!(
            "enrolled behind 200 idle anonymous connections; all 200 dropped by the 5s deadline"
        );
    });
}

#[test]
fn a_lost_enrolment_answer_can_be_retried() {
    let c = Cluster::start(Timing::default());
    let cfg = ClientConfig::load(&c.config).unwrap();
    let ca = pem_der(&cfg.ca, "CERTIFICATE").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = c.listen;
    // Sends the request, waits until the controller has registered the
    // node, and goes away without reading the answer.
    let abandon = |token: &str, node: &str, csr: &[u8]| {
        rt.block_on(async {
            let (_endpoint, conn) = anonymous(addr, &ca).await;
            let (mut send, _recv) = conn.open_bi().await.unwrap();
            send.write_all(&enrol_frame(token, node, csr))
                .await
                .unwrap();
            send.finish().unwrap();
            for _ in 0..200 {
                if c.node(node).is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(c.node(node).is_some(), "{node} registered");
            conn.close(0u32.into(), b"box lost power");
        });
    };

    // Same key, same single-use token: a working certificate.
    let (token, _) = c.token(&["--uses", "1"]);
    let (k1, csr1) = key();
    abandon(&token, "lost", &csr1);
    let retry = rt.block_on(send_raw(
        addr,
        &ca,
        None,
        enrol_frame(&token, "lost", &csr1),
    ));
    let cert = creds(&retry, &k1);
    let session = rt.block_on(send_raw(addr, &ca, Some(cert), hello("lost")));
    assert!(
        matches!(session, Outcome::Reply(Message::Welcome(_))),
        "the retried certificate opens a session: {}",
        session.text()
    );
    // Connected once: the name is taken, even for the same key.
    let (t2, _) = c.token(&["--uses", "1"]);
    let again = rt.block_on(send_raw(addr, &ca, None, enrol_frame(&t2, "lost", &csr1)));
    match &again {
        Outcome::Reply(Message::Error(e)) => {
            assert_eq!(e.code, ErrorCode::AlreadyExists, "{e:?}");
            assert!(e.message.contains("already enrolled"), "{e:?}");
        }
        other => panic!("a connected node's name is taken: {}", other.text()),
    }

    // A new key before the first session: one more token use.
    let (t3, _) = c.token(&["--uses", "2"]);
    let (_k2, csr2) = key();
    abandon(&t3, "reflashed", &csr2);
    let (k3, csr3) = key();
    let fresh = rt.block_on(send_raw(
        addr,
        &ca,
        None,
        enrol_frame(&t3, "reflashed", &csr3),
    ));
    let cert = creds(&fresh, &k3);
    let session = rt.block_on(send_raw(addr, &ca, Some(cert), hello("reflashed")));
    assert!(
        matches!(session, Outcome::Reply(Message::Welcome(_))),
        "{}",
        session.text()
    );

    // A new key with a spent token: refused, saying why.
    let (t4, _) = c.token(&["--uses", "1"]);
    let (_k4, csr4) = key();
    abandon(&t4, "spent", &csr4);
    let (_k5, csr5) = key();
    let spent = rt.block_on(send_raw(addr, &ca, None, enrol_frame(&t4, "spent", &csr5)));
    match &spent {
        Outcome::Reply(Message::Error(e)) => {
            assert_eq!(e.code, ErrorCode::InvalidToken, "{e:?}");
            assert!(e.message.contains("no uses left"), "{e:?}");
        }
        other => panic!("a spent token with a new key: {}", other.text()),
    }
    let log = c.controller_log();
    assert!(log.contains("NodeEnrolmentRetried"), "{log}");
    eprintln!("lost answers: same key retried on a spent token, new key for one more use, spent token refused");
}

/// Running app containers of pod `key` on `node`.
fn containers(node: &str, key: &str) -> usize {
    outpost_tests::pod_containers(node, key, "main").len()
}

#[test]
fn a_deleted_node_enrols_again_with_a_new_token_and_drops_its_old_pods() {
    const NODE: &str = "reenrol-node";
    outpost_workloads::ensure_images().expect("building the workload images");
    let _cleanup = NodeContainers::of([NODE]);
    let mut c = Cluster::start(Timing::default());
    let (token, hash) = c.token(&[]);
    c.start_agent(NODE, Some((&token, &hash)), &[]);
    c.wait_for("node Ready", Duration::from_secs(30), |c| c.is_ready(NODE));
    c.apply(
        "old.yaml",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: old
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: outpost/workload-http:dev
"#
        ),
    );
    c.wait_for("old running on the box", Duration::from_secs(60), |_| {
        containers(NODE, "old") == 1
    });
    // Deleted while the box is offline: it never hears of it.
    c.kill_agent(NODE);
    let out = c.ctl(&["delete", "node", NODE]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Back with its old identity and token: refused, and told what to do.
    c.start_agent(NODE, Some((&token, &hash)), &[]);
    c.wait_for("told to use a new --token", Duration::from_secs(30), |c| {
        c.agent_log(NODE).contains("new --token")
    });
    assert!(c.node(NODE).is_none());
    assert_eq!(
        containers(NODE, "old"),
        1,
        "the box keeps its pods while cut off"
    );
    c.kill_agent(NODE);
    let (fresh, _) = c.token(&[]);
    c.start_agent(NODE, Some((&fresh, &hash)), &[]);
    c.wait_for("enrolled again and Ready", Duration::from_secs(60), |c| {
        c.is_ready(NODE)
    });
    let log = c.agent_log(NODE);
    assert!(log.contains("enrolling again"), "{log}");
    c.wait_for(
        "the deleted node's pod stopped",
        Duration::from_secs(60),
        |_| containers(NODE, "old") == 0,
    );
    eprintln!("re-enrolled {NODE} with a new token; the deleted node's pod was stopped on the box");
}
