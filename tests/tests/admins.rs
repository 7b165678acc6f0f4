//! Operator certificates against the real controller: a read-only
//! certificate reads but cannot change anything, a revoked one is refused
//! (and its open watch closed), even after a restart; the last full admin
//! cannot be revoked; renewing your own certificate rewrites your config;
//! and the server certificate is renewed in place while an agent's
//! session stays up, new connections seeing the new serial.

use outpost_controller::clientconfig::{pem_der, ClientConfig};
use outpost_controller::pki;
use outpost_tests::{bins, Cluster, Timing};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn ctl_as(config: &Path, args: &[&str]) -> Output {
    Command::new(&bins().ctl)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("running outpostctl")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "outpostctl failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn refused(o: Output) -> String {
    assert!(!o.status.success(), "expected a refusal, got: {}", text(&o));
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Serial of the certificate the controller presents to a new connection.
fn server_serial(addr: SocketAddr, ca_der: &[u8]) -> (String, Vec<String>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = outpost_proto::link::client_config(
            ca_der.to_vec().into(),
            None,
            outpost_proto::link::transport(Duration::from_secs(5), 2),
        )
        .unwrap();
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let conn = endpoint
            .connect_with(client, addr, "localhost")
            .unwrap()
            .await
            .expect("handshake with the controller");
        let chain = conn
            .peer_identity()
            .unwrap()
            .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .unwrap();
        let leaf = chain[0].to_vec();
        conn.close(0u32.into(), b"");
        endpoint.wait_idle().await;
        (
            pki::identity(&leaf).unwrap().serial,
            pki::server_names(&leaf).unwrap(),
        )
    })
}

fn serial_of(config: &Path) -> String {
    let cfg = ClientConfig::load(config).unwrap();
    pki::identity(&pem_der(&cfg.cert, "CERTIFICATE").unwrap())
        .unwrap()
        .serial
}

fn agent_sessions(c: &Cluster, node: &str) -> usize {
    c.controller_log()
        .lines()
        .filter(|l| l.contains("agent connected") && l.contains(&format!("node=\"{node}\"")))
        .count()
}

#[test]
fn operator_certificates_roles_revocation_renewal_and_server_certificate() {
    let mut c = Cluster::start(Timing::default());
    let (token, hash) = c.token(&[]);
    c.start_agent("edge", Some((&token, &hash)), &[]);
    c.wait_for("edge Ready", Duration::from_secs(30), |c| {
        c.is_ready("edge")
    });

    // The certificate `init` wrote is on record as the first full admin.
    let list = ok(c.ctl(&["admin", "list"]));
    println!("{list}");
    assert!(list.starts_with("NAME"), "{list}");
    let first = list.lines().nth(1).unwrap();
    assert!(
        first.starts_with("admin")
            && first.contains(" admin ")
            && first.contains("Active")
            && first.contains("init"),
        "{list}"
    );
    let e = refused(c.ctl(&["admin", "revoke", "admin"]));
    assert!(e.contains("last active full admin"), "{e}");

    // A read-only certificate: its config is written 0600 and works.
    let viewer = c.path("viewer.conf");
    let out = ok(c.ctl(&[
        "admin",
        "create",
        "viewer",
        "--role",
        "read-only",
        "--valid-for",
        "24h",
        "--out",
        viewer.to_str().unwrap(),
    ]));
    println!("{out}");
    let mode = std::fs::metadata(&viewer).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "config mode {mode:o}");
    let e = refused(c.ctl(&[
        "admin",
        "create",
        "viewer",
        "--out",
        c.path("again.conf").to_str().unwrap(),
    ]));
    assert!(
        e.contains("AlreadyExists") && e.contains("already exists"),
        "{e}"
    );

    let nodes = ok(ctl_as(&viewer, &["get", "nodes"]));
    assert!(nodes.contains("edge"), "{nodes}");
    ok(ctl_as(&viewer, &["describe", "node", "edge"]));
    let manifest = c.path("pod.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: nope\nspec:\n  containers:\n  - name: main\n    image: busybox\n",
    )
    .unwrap();
    let e = refused(ctl_as(
        &viewer,
        &["apply", "-f", manifest.to_str().unwrap()],
    ));
    println!("viewer apply: {e}");
    assert!(
        e.starts_with("Error from server (Forbidden): ")
            && e.contains("viewer has the read-only role")
            && e.contains("not apply"),
        "{e}"
    );
    for args in [
        vec!["token", "create"],
        vec!["cordon", "edge"],
        vec![
            "admin",
            "create",
            "sneaky",
            "--out",
            "/dev/null",
            "--overwrite",
        ],
        vec!["admin", "renew-server-cert"],
    ] {
        let e = refused(ctl_as(&viewer, &args));
        assert!(
            e.contains("(Forbidden)") && e.contains("read-only"),
            "{args:?}: {e}"
        );
    }

    // Revoking closes the viewer's open watch and refuses its next call,
    // with a message that says what happened.
    let mut watch = Command::new(&bins().ctl)
        .arg("--config")
        .arg(&viewer)
        .args(["get", "nodes", "-w"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(watch.try_wait().unwrap().is_none(), "the watch ended early");
    let out = ok(c.ctl(&["admin", "revoke", "viewer"]));
    assert!(out.contains("revoked"), "{out}");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = watch.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the revoked watch kept running"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut watch_err = String::new();
    std::io::Read::read_to_string(watch.stderr.as_mut().unwrap(), &mut watch_err).unwrap();
    println!(
        "revoked watch ended ({status}) after {:?}: {watch_err}",
        t.elapsed()
    );
    assert!(!status.success());
    let e = refused(ctl_as(&viewer, &["get", "nodes"]));
    println!("revoked viewer: {e}");
    assert!(
        e.contains("Unauthorized") && e.contains("was revoked"),
        "{e}"
    );
    let list = ok(c.ctl(&["admin", "list"]));
    assert!(
        list.lines()
            .any(|l| l.starts_with("viewer") && l.contains("read-only") && l.contains("Revoked")),
        "{list}"
    );

    // A second full admin renews itself: the config is rewritten in place,
    // the new one works, a copy of the old one is refused.
    let ops = c.path("ops.conf");
    ok(c.ctl(&["admin", "create", "ops", "--out", ops.to_str().unwrap()]));
    let old_copy = c.path("ops-old.conf");
    std::fs::copy(&ops, &old_copy).unwrap();
    let before = serial_of(&ops);
    let out = ok(ctl_as(&ops, &["admin", "renew"]));
    println!("{out}");
    let after = serial_of(&ops);
    assert_ne!(before, after);
    assert!(out.contains(&after), "{out}");
    ok(ctl_as(&ops, &["get", "nodes"]));
    let e = refused(ctl_as(&old_copy, &["get", "nodes"]));
    assert!(e.contains("was revoked"), "{e}");
    // With a second admin, the first can be revoked (and renewed by name).
    let renewed = c.path("viewer2.conf");
    ok(c.ctl(&[
        "admin",
        "create",
        "viewer2",
        "--role",
        "read-only",
        "--out",
        renewed.to_str().unwrap(),
    ]));
    let v0 = serial_of(&renewed);
    ok(ctl_as(
        &ops,
        &[
            "admin",
            "renew",
            "viewer2",
            "--out",
            renewed.to_str().unwrap(),
            "--overwrite",
        ],
    ));
    assert_ne!(serial_of(&renewed), v0);
    ok(ctl_as(&renewed, &["get", "nodes"]));
    let e = refused(ctl_as(
        &renewed,
        &["apply", "-f", manifest.to_str().unwrap()],
    ));
    assert!(e.contains("read-only"), "renewal kept the role: {e}");

    // Revocations and renewals survive a restart.
    c.kill_controller();
    c.start_controller();
    assert!(refused(ctl_as(&viewer, &["get", "nodes"])).contains("was revoked"));
    assert!(refused(ctl_as(&old_copy, &["get", "nodes"])).contains("was revoked"));
    ok(ctl_as(&ops, &["get", "nodes"]));
    c.wait_for(
        "edge Ready after the restart",
        Duration::from_secs(30),
        |c| c.is_ready("edge"),
    );

    // Server certificate renewal in place, with an agent connected.
    let cfg = ClientConfig::load(&c.config).unwrap();
    let ca_der = pem_der(&cfg.ca, "CERTIFICATE").unwrap();
    let (serial0, names0) = server_serial(c.listen, &ca_der);
    let sessions0 = agent_sessions(&c, "edge");
    let remote0 = c.node("edge").unwrap()["status"]["connection"]["remoteAddress"].clone();
    let out = ok(c.ctl(&["admin", "renew-server-cert", "--san", "ctl.example.net"]));
    println!("{out}");
    let (serial1, names1) = server_serial(c.listen, &ca_der);
    println!("server certificate serial {serial0} -> {serial1}; names {names1:?}");
    assert_ne!(
        serial0, serial1,
        "a new connection still sees the old certificate"
    );
    assert!(out.contains(&serial1), "{out}");
    assert!(
        names1.starts_with(&names0) && names1.contains(&"ctl.example.net".to_string()),
        "{names1:?}"
    );
    // The agent's session carried on: still Ready, same connection, no
    // new session; and the old outpostctl configs keep working (CA pin).
    std::thread::sleep(Duration::from_secs(6));
    assert!(c.is_ready("edge"), "{}", c.logs());
    let n = c.node("edge").unwrap();
    assert_eq!(n["status"]["connection"]["connected"], true);
    assert_eq!(n["status"]["connection"]["remoteAddress"], remote0);
    assert_eq!(
        agent_sessions(&c, "edge"),
        sessions0,
        "the agent reconnected"
    );
    ok(ctl_as(&ops, &["get", "nodes"]));
    // A restarted agent handshakes against the new certificate, without
    // re-enrolling.
    c.kill_agent("edge");
    c.start_agent("edge", None, &[]);
    c.wait_for(
        "edge back with the new server certificate",
        Duration::from_secs(30),
        |c| agent_sessions(c, "edge") > sessions0 && c.is_ready("edge"),
    );

    // Offline renewal needs the store: a running controller holds it,
    // and the message points at the in-place way.
    let renew = |data_dir: &Path| {
        Command::new(&bins().controller)
            .args(["renew-server-cert", "--data-dir"])
            .arg(data_dir)
            .output()
            .unwrap()
    };
    let e = refused(renew(&c.data_dir));
    assert!(e.contains("outpostctl admin renew-server-cert"), "{e}");
    c.kill_controller();
    let out = ok(renew(&c.data_dir));
    println!("{out}");
    c.start_controller();
    let (serial2, names2) = server_serial(c.listen, &ca_der);
    assert!(out.contains(&serial2), "{out}");
    assert_eq!(names2, names1);
    c.wait_for(
        "edge Ready after the offline renewal",
        Duration::from_secs(30),
        |c| c.is_ready("edge"),
    );
}
