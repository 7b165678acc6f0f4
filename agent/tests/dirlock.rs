//! Two agent processes on one data directory: the second refuses to start.
//! Needs no controller or engine: the lock comes before enrolment, and the
//! first agent keeps retrying an enrolment nobody answers.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn agent(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_outpost-agent"));
    c.args([
        "--controller",
        "127.0.0.1:9",
        "--token",
        "abcdef.0123456789abcdef",
    ])
    .arg("--ca-hash")
    .arg(format!("sha256:{}", "0".repeat(64)))
    .arg("--data-dir")
    .arg(dir)
    .env("RUST_LOG", "error")
    .stdin(Stdio::null())
    .stdout(Stdio::null());
    c
}

#[test]
fn a_second_agent_on_one_data_directory_exits_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = agent(dir.path()).stderr(Stdio::null()).spawn().unwrap();
    let lock = dir.path().join("agent.lock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&lock).map_or(true, |s| s.trim() != first.id().to_string()) {
        assert!(
            Instant::now() < deadline,
            "the first agent never took the lock"
        );
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first agent exited"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let second = agent(dir.path()).output().unwrap();
    let took = started.elapsed();
    let _ = first.kill();
    let _ = first.wait();
    let stderr = String::from_utf8_lossy(&second.stderr);
    println!(
        "second agent exited in {took:?} with {:?}: {stderr}",
        second.status.code()
    );
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "is in use by another outpost-agent (pid {}); stop it, or give this one its own --data-dir",
            first.id()
        )),
        "{stderr}"
    );
}
