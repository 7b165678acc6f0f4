//! Every rejection the foundation promises, each with a clear error on both
//! sides, while a well-behaved agent stays Ready throughout: no client
//! certificate, a certificate from another CA, an expired certificate, node
//! A's certificate speaking for node B, expired / used-up / revoked tokens,
//! an operator call without an admin certificate, two requests on one
//! operator stream, oversized and malformed frames.

use outpost_controller::clientconfig::{pem_der, ClientConfig};
use outpost_controller::cluster::load_pki;
use outpost_controller::pki::Ca;
use outpost_controller::store::redb::RedbStore;
use outpost_proto::{AdminRequest, Hello, Message, PROTOCOL_VERSION};
use outpost_tests::raw::{creds_from_pem, frame, send_raw, Creds};
use outpost_tests::{Cluster, Timing};
use rustls::pki_types::PrivateKeyDer;
use std::time::{Duration, SystemTime};

fn hello(node: &str) -> Vec<u8> {
    frame(&Message::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        node: node.into(),
        agent_version: "test".into(),
    }))
}

/// A node certificate for `node` signed by `ca`, valid from `from` for `life`.
fn node_creds(ca: &Ca, node: &str, from: SystemTime, life: Duration) -> Creds {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec();
    let issued = ca.sign_node_csr(node, &csr, from, life).unwrap();
    (
        vec![issued.cert_der.into()],
        PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
}

#[test]
fn every_rejection_is_clear_and_harmless() {
    let mut c = Cluster::start(Timing::default());
    let (token, hash) = c.token(&["--uses", "1"]);
    c.start_agent("good", Some((&token, &hash)), &[]);
    c.wait_for("good Ready", Duration::from_secs(30), |c| {
        c.is_ready("good")
    });

    // Material for hand-made clients: the cluster CA (from the store, with
    // the controller stopped so the store is free), a foreign CA, and the
    // good agent's own identity.
    c.kill_controller();
    let store = RedbStore::open(&c.data_dir.join("state.redb")).unwrap();
    let (ca, _) = load_pki(&store).unwrap();
    drop(store);
    let expired = node_creds(
        &ca,
        "good",
        SystemTime::now() - Duration::from_secs(3 * 86_400),
        Duration::from_secs(86_400),
    );
    let (foreign_ca, _) = Ca::generate("elsewhere", SystemTime::now()).unwrap();
    let foreign = node_creds(
        &foreign_ca,
        "good",
        SystemTime::now(),
        Duration::from_secs(3600),
    );
    c.start_controller();
    c.wait_for("good Ready again", Duration::from_secs(30), |c| {
        c.is_ready("good")
    });

    let cfg = ClientConfig::load(&c.config).unwrap();
    let ca_der = pem_der(&cfg.ca, "CERTIFICATE").unwrap();
    let good_path = c.path("agent-good/identity.pem");
    let good = || creds_from_pem(&good_path);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = c.listen;
    let admin_path = c.path("admin-identity.pem");
    std::fs::write(&admin_path, format!("{}\n{}", cfg.cert, cfg.key)).unwrap();
    let admin = || creds_from_pem(&admin_path);
    let list_nodes = frame(&Message::Request(AdminRequest::ListNodes));
    let probe = |creds: Option<Creds>, bytes: Vec<u8>| {
        let out = rt.block_on(send_raw(addr, &ca_der, creds, bytes));
        out.text()
    };

    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "no client certificate",
            probe(None, hello("good")),
            &["Unauthenticated", "no client certificate"],
        ),
        (
            "operator call without a certificate",
            probe(None, frame(&Message::Request(AdminRequest::ListNodes))),
            &["Unauthenticated", "admin certificate"],
        ),
        (
            "certificate from another CA",
            probe(Some(foreign), hello("good")),
            &["certificate"],
        ),
        (
            "expired certificate",
            probe(Some(expired), hello("good")),
            &["xpired"],
        ),
        (
            "node A's certificate speaking for node B",
            probe(Some(good()), hello("other")),
            &[
                "PermissionDenied",
                "certificate is for node good",
                "\"other\"",
            ],
        ),
        (
            "operator call with a node certificate",
            probe(
                Some(good()),
                frame(&Message::Request(AdminRequest::ListNodes)),
            ),
            &["PermissionDenied", "admin certificate"],
        ),
        (
            "two requests on one operator stream",
            probe(
                Some(admin()),
                [list_nodes.clone(), list_nodes.clone()].concat(),
            ),
            &["InvalidRequest", "one request per stream", "not run"],
        ),
        (
            "oversized frame",
            probe(Some(good()), 0x7fff_ffffu32.to_be_bytes().to_vec()),
            &["exceeds the limit"],
        ),
        (
            "malformed frame",
            probe(Some(good()), vec![0, 0, 0, 3, 0xff, 0xff, 0xff]),
            &["malformed"],
        ),
    ];
    let log = c.controller_log();
    for (what, got, needles) in &cases {
        println!("{what:45} -> {got}");
        for n in *needles {
            assert!(
                got.contains(n),
                "{what}: expected {n:?} in client's view {got:?}"
            );
        }
    }
    // The controller's side of each story.
    let log_after = c.controller_log();
    for needle in [
        "no client certificate",
        "certificate is for node good",
        "exceeds the limit",
        "malformed frame",
        "connection refused during handshake",
    ] {
        assert!(
            log_after.contains(needle),
            "controller log lacks {needle:?}:\n{}",
            &log_after[log.len().saturating_sub(4000).min(log_after.len())..]
        );
    }

    // Tokens: expired, used up, revoked. Each agent exits with the reason.
    let (short, _) = c.token(&["--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    let (revoked, _) = c.token(&[]);
    let id = revoked.split('.').next().unwrap().to_string();
    assert!(c.ctl(&["token", "revoke", &id]).status.success());
    for (name, tok, reason) in [
        ("late", short.as_str(), "expired"),
        ("second", token.as_str(), "no uses left"),
        ("banned", revoked.as_str(), "revoked"),
    ] {
        c.start_agent(name, Some((tok, &hash)), &[]);
        let code = c.wait_agent_exit(name, Duration::from_secs(20));
        let log = c.agent_log(name);
        println!(
            "token {reason:12} -> agent exit {code:?}: {}",
            log.lines().last().unwrap_or("")
        );
        assert_eq!(code, Some(1), "{name} should exit with an error:\n{log}");
        assert!(
            log.contains(reason),
            "{name}'s error lacks {reason:?}:\n{log}"
        );
        assert!(c.node(name).is_none(), "{name} must not be registered");
    }
    let bad_hash = format!("sha256:{}", "0".repeat(64));
    let (fresh, _) = c.token(&[]);
    c.start_agent("pinned-wrong", Some((&fresh, &bad_hash)), &[]);
    assert_eq!(
        c.wait_agent_exit("pinned-wrong", Duration::from_secs(20)),
        Some(1)
    );
    assert!(c
        .agent_log("pinned-wrong")
        .contains("does not match --ca-hash"));

    // Through all of it the good agent stayed connected and Ready.
    assert!(c.is_ready("good"));
    let node = c.node("good").unwrap();
    assert_eq!(node["status"]["connection"]["connected"], true);
    assert!(c.metric("outpost_protocol_errors_total").unwrap() >= 2.0);
    assert!(c.metric("outpost_handshakes_failed_total").unwrap() >= 1.0);
    assert!(c.metric("outpost_enrolments_rejected_total").unwrap() >= 3.0);
    let events = c.ctl_json(&["get", "events"]);
    let rejected = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "EnrolmentRejected")
        .count();
    assert_eq!(rejected, 3, "each refused token use is an event");
}

#[test]
fn deleted_node_is_cut_off_and_cannot_come_back() {
    let mut c = Cluster::start(Timing::default());
    let (token, hash) = c.token(&[]);
    c.start_agent("gone", Some((&token, &hash)), &[]);
    c.wait_for("gone Ready", Duration::from_secs(30), |c| {
        c.is_ready("gone")
    });
    let out = c.ctl(&["delete", "node", "gone"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(c.node("gone").is_none());
    // The live session was closed and every reconnect is refused.
    c.wait_for("agent told why", Duration::from_secs(15), |c| {
        c.agent_log("gone").contains("enrol it again")
    });
    assert!(
        c.node("gone").is_none(),
        "a deleted node does not come back by itself"
    );
}

/// A box whose clock is two days behind (no battery-backed clock) still
/// connects securely: a real handshake on loopback against a server
/// certificate of the cluster CA whose validity starts two days after the
/// box's "now", both with the saved CA and at enrolment with only the CA
/// hash; a certificate from another CA is still refused.
#[test]
fn a_box_two_days_behind_connects() {
    use outpost_proto::link;
    let ahead = SystemTime::now() + Duration::from_secs(2 * 86_400);
    let (ca, _) = Ca::generate("clock", ahead).unwrap();
    let (issued, key_pem) = ca
        .issue_server(
            &["localhost".into()],
            ahead,
            Duration::from_secs(30 * 86_400),
        )
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(pem_der(&key_pem, "PRIVATE KEY").unwrap().into());
    let chain = vec![issued.cert_der.clone().into(), ca.cert_der().clone()];
    let server = link::server_config(
        chain,
        key,
        ca.cert_der().clone(),
        link::transport(Duration::from_secs(5), 1),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let endpoint = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                if let Ok(c) = incoming.await {
                    let _ = tokio::time::timeout(Duration::from_secs(2), c.closed()).await;
                }
            }
        });
        let connect = |cfg: quinn::ClientConfig| async move {
            let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            let r = client.connect_with(cfg, addr, "localhost").unwrap().await;
            if let Ok(c) = &r {
                c.close(0u32.into(), b"");
            }
            r.map(|_| ()).map_err(|e| e.to_string())
        };
        let transport = || link::transport(Duration::from_secs(5), 1);
        let with_ca = link::client_config(ca.cert_der().clone(), None, transport()).unwrap();
        connect(with_ca).await.expect("connects with the saved CA");
        let pinned = link::enrol_client_config(&ca.hash(), transport()).unwrap();
        connect(pinned).await.expect("connects at enrolment");
        let (other, _) = Ca::generate("elsewhere", SystemTime::now()).unwrap();
        let foreign = link::client_config(other.cert_der().clone(), None, transport()).unwrap();
        let refused = connect(foreign).await.expect_err("another CA is refused");
        eprintln!("two days behind: connected with the CA and at enrolment; another CA: {refused}");
        accept.abort();
    });
}
