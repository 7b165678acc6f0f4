//! A network namespace a test owns (`ip netns add`), removed on drop: for
//! the tests that program routes or nf_tables for real without touching
//! the host's (they need root and iproute2; CI has both).

/// One namespace, `outpost-t-PID-TAG-RANDOM`.
pub struct TestNs(String);

impl TestNs {
    /// A new namespace with `lo` up; `None` when it cannot be made (not
    /// root, no iproute2): the caller skips and says why.
    pub fn new(tag: &str) -> Option<TestNs> {
        let name = format!(
            "outpost-t-{}-{tag}-{}",
            std::process::id(),
            rand::random::<u16>()
        );
        if !ip(&["netns", "add", &name]) {
            return None;
        }
        let ns = TestNs(name);
        assert!(ip(&["-n", ns.name(), "link", "set", "lo", "up"]));
        Some(ns)
    }

    pub fn name(&self) -> &str {
        &self.0
    }

    /// The namespace's file, for `setns`.
    pub fn file(&self) -> std::fs::File {
        std::fs::File::open(format!("/run/netns/{}", self.0)).unwrap()
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "delete", &self.0]);
    }
}

fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}
