//! A forced short-lived node certificate renews over the live session at
//! about two thirds of its lifetime, without dropping the node, and the
//! renewed identity is what the agent uses after a restart.

use outpost_tests::{Cluster, Timing};
use std::time::{Duration, Instant};

#[test]
fn short_lived_certificate_renews_without_dropping_the_node() {
    let mut c = Cluster::start(Timing {
        cert_ttl: "30s",
        ..Timing::default()
    });
    let (token, hash) = c.token(&[]);
    c.start_agent("renewer", Some((&token, &hash)), &[]);
    c.wait_for("renewer Ready", Duration::from_secs(30), |c| {
        c.is_ready("renewer")
    });
    let first = c.node("renewer").unwrap();
    let serial0 = first["status"]["certificate"]["serial"]
        .as_str()
        .unwrap()
        .to_string();
    let remote0 = first["status"]["connection"]["remoteAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let enrolled = Instant::now();

    // Watch the node every 200 ms until the serial changes: it must stay
    // Ready and connected on the same connection the whole time.
    let mut samples = 0;
    let renewed = loop {
        let n = c.node("renewer").unwrap();
        samples += 1;
        assert!(
            c.is_ready("renewer"),
            "node dropped during renewal:\n{}",
            c.logs()
        );
        assert_eq!(n["status"]["connection"]["connected"], true);
        let serial = n["status"]["certificate"]["serial"].as_str().unwrap();
        if serial != serial0 {
            break n;
        }
        assert!(
            enrolled.elapsed() < Duration::from_secs(45),
            "no renewal within 45s:\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = enrolled.elapsed();
    println!(
        "renewed {took:.1?} after enrolment (ttl 30s, {samples} samples, node Ready throughout)"
    );
    assert!(
        took >= Duration::from_secs(12),
        "renewed too early: {took:?}"
    );
    assert_eq!(
        renewed["status"]["connection"]["remoteAddress"]
            .as_str()
            .unwrap(),
        remote0,
        "renewal happened over the same connection"
    );
    let log = c.agent_log("renewer");
    assert_eq!(
        log.matches(" connected").count(),
        1,
        "the agent never reconnected:\n{log}"
    );
    let events = c.ctl_json(&["get", "events", "--for", "node/renewer"]);
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"CertificateRenewed"), "{reasons:?}");
    assert!(!reasons.contains(&"NodeNotReady"), "{reasons:?}");

    // The new key and certificate are on disk (0600) and work after a restart.
    use std::os::unix::fs::PermissionsExt;
    let path = c.path("agent-renewer/identity.pem");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let serial1 = renewed["status"]["certificate"]["serial"]
        .as_str()
        .unwrap()
        .to_string();
    c.kill_agent("renewer");
    c.start_agent("renewer", None, &[]);
    c.wait_for(
        "renewer back with its renewed certificate",
        Duration::from_secs(20),
        |c| {
            c.is_ready("renewer")
                && c.node("renewer").unwrap()["status"]["connection"]["remoteAddress"]
                    != remote0.as_str()
        },
    );
    let serial_now = c.node("renewer").unwrap()["status"]["certificate"]["serial"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        serial_now == serial1 || serial_now != serial0,
        "uses the renewed identity"
    );
}
