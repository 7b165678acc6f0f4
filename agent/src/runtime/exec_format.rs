//! Containers whose binary is built for another architecture.
//!
//! Fleets mix ARM and x86 boxes, so an image built for one lands on the
//! other sooner or later. The kernel refuses such a binary with ENOEXEC,
//! which surfaces as "exec format error": in the engine's start error or
//! the container's `State.Error` when the runtime reports it, and otherwise
//! only in the container's own output (runc prints `exec /app: exec format
//! error`, Docker's init `exec /app failed: Exec format error`), right
//! before it exits. One case hides it: Docker's init execs with `execvp`,
//! which retries a refused binary through `/bin/sh`, so in an image without
//! a shell (a static binary on `scratch`) it reports `No such file or
//! directory` and exits 127; then the image's own config, built for an
//! architecture this node does not run, is the evidence ([`Evidence`]).
//! Restarting it can never help on this node, so the reconciler reports the
//! container `Waiting` with [`REASON`], fails the pod with the same reason
//! and stops, instead of a CrashLoopBackOff that runs forever. The
//! decisions here are pure; the reconciler reads the texts.

use std::time::Duration;

/// Container waiting reason, pod reason and event reason.
pub const REASON: &str = "ExecFormatError";

/// A container that exits with an error within this long of its start has
/// its last output read for the error. A binary the kernel refuses fails
/// within milliseconds; the margin covers an entrypoint script that execs
/// it after a little setup. A container that ran longer has shown that its
/// binary runs here.
pub const EXIT_WINDOW: Duration = Duration::from_secs(10);

/// How much of the last output is read: the error is on the last line.
pub const LOG_TAIL_LINES: u32 = 20;
pub const LOG_TAIL_BYTES: usize = 4096;

/// What showed that a container's binary is for another architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// The engine or the container said "exec format error".
    Refused,
    /// The container failed as a refused binary does under Docker's init
    /// in an image without a shell ([`masked_by_init`]), and its image is
    /// built for this architecture, which the node does not run.
    ImageFor(String),
}

/// Exit code of Docker's init (tini) when it cannot exec the entrypoint.
pub const INIT_EXEC_FAILED: i64 = 127;

/// Whether `text` (an engine error, `State.Error`, or a container's last
/// output) says the kernel refused the binary. Case-insensitive: Go and
/// libc spell it differently.
pub fn is_exec_format_error(text: &str) -> bool {
    text.to_ascii_lowercase().contains("exec format error")
}

/// Whether an exit is quick and failed enough for its output to be read
/// for [`is_exec_format_error`]. `ran` is zero for a container that never
/// started.
pub fn worth_reading_log(exit_code: i64, ran: Duration) -> bool {
    exit_code != 0 && ran <= EXIT_WINDOW
}

/// Whether a quick failed exit looks like Docker's init failing to exec the
/// entrypoint (exit 127, "No such file or directory"). A native image whose
/// entrypoint is missing looks the same, so this alone proves nothing; see
/// [`foreign_arch`].
pub fn masked_by_init(exit_code: i64, log: &str) -> bool {
    exit_code == INIT_EXEC_FAILED
        && log
            .to_ascii_lowercase()
            .contains("no such file or directory")
}

/// Whether an image built for `image_arch` (Go spelling, from its config)
/// cannot run on a `node_arch` node. Unknown (empty) is not foreign, and
/// 64-bit kernels run their 32-bit siblings (`arm` on `arm64`, `386` on
/// `amd64`).
pub fn foreign_arch(image_arch: &str, node_arch: &str) -> bool {
    !image_arch.is_empty()
        && image_arch != node_arch
        && !matches!((node_arch, image_arch), ("arm64", "arm") | ("amd64", "386"))
}

/// This node's architecture, in Go spelling (`amd64`, `arm64`, `arm`).
pub fn node_arch() -> &'static str {
    crate::probe::go_arch(std::env::consts::ARCH)
}

/// The container's waiting message:
/// `image outpost/foo:dev does not run on this arm64 node: exec format error`
/// (with `(built for amd64)` after the image when its config said so).
pub fn container_message(image: &str, node_arch: &str, evidence: &Evidence) -> String {
    match evidence {
        Evidence::Refused => {
            format!("image {image} does not run on this {node_arch} node: exec format error")
        }
        Evidence::ImageFor(arch) => format!(
            "image {image} (built for {arch}) does not run on this {node_arch} node: exec format error"
        ),
    }
}

/// The pod's message and the event's: which container, and what to do.
pub fn pod_message(container: &str, image: &str, node_arch: &str, evidence: &Evidence) -> String {
    format!(
        "container {container}: {}; it is not restarted here. Use an image built for linux/{node_arch} (or a multi-architecture image), or run the pod on a node of the image's architecture.",
        container_message(image, node_arch, evidence)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognised_in_every_spelling() {
        for (text, want) in [
            ("exec /app: exec format error", true),
            ("[FATAL tini (7)] exec /app failed: Exec format error", true),
            (
                "OCI runtime create failed: runc create failed: unable to start container process: exec: \"/app\": exec format error: unknown",
                true,
            ),
            ("EXEC FORMAT ERROR", true),
            ("[FATAL tini (7)] exec /app failed: No such file or directory", false),
            ("exec format", false),
            ("", false),
        ] {
            assert_eq!(is_exec_format_error(text), want, "{text}");
        }
    }

    #[test]
    fn only_quick_failures_are_read() {
        let s = Duration::from_secs;
        for (code, ran, want) in [
            (1, Duration::from_millis(4), true),
            (127, s(0), true),
            (255, EXIT_WINDOW, true),
            (1, EXIT_WINDOW + Duration::from_millis(1), false),
            (0, Duration::from_millis(4), false),
            (137, s(3600), false),
        ] {
            assert_eq!(worth_reading_log(code, ran), want, "{code} {ran:?}");
        }
    }

    #[test]
    fn init_masks_it_and_the_image_config_tells() {
        let masked = "[FATAL tini (6)] exec /app failed: No such file or directory";
        assert!(masked_by_init(127, masked));
        assert!(!masked_by_init(1, masked));
        assert!(!masked_by_init(127, "sh: foo: not found"));
        for (image, node, want) in [
            ("arm64", "amd64", true),
            ("amd64", "arm64", true),
            ("amd64", "arm", true),
            ("arm64", "arm", true),
            ("riscv64", "arm64", true),
            ("amd64", "amd64", false),
            ("arm", "arm64", false),
            ("386", "amd64", false),
            ("", "amd64", false),
        ] {
            assert_eq!(foreign_arch(image, node), want, "{image} on {node}");
        }
    }

    #[test]
    fn messages_name_the_image_and_the_node() {
        assert_eq!(
            container_message("outpost/foo:dev", "arm64", &Evidence::Refused),
            "image outpost/foo:dev does not run on this arm64 node: exec format error"
        );
        assert_eq!(
            container_message("outpost/foo:dev", "arm64", &Evidence::ImageFor("amd64".into())),
            "image outpost/foo:dev (built for amd64) does not run on this arm64 node: exec format error"
        );
        let m = pod_message("app", "outpost/foo:dev", "arm64", &Evidence::Refused);
        assert!(
            m.starts_with("container app: image outpost/foo:dev does not run on this arm64 node"),
            "{m}"
        );
        assert!(m.contains("linux/arm64"), "{m}");
        assert!(m.len() <= outpost_proto::pod::pod_limits::MAX_MESSAGE);
        assert_eq!(node_arch(), crate::probe::go_arch(std::env::consts::ARCH));
    }
}
