//! Containers whose binary is built for another architecture.
//!
//! Fleets mix ARM and x86 boxes, so an image built for one lands on the
//! other sooner or later. The kernel refuses such a binary with ENOEXEC,
//! which surfaces as "exec format error": in the engine's start error or
//! the container's `State.Error` when the runtime reports it, and otherwise
//! only in the container's own output (runc prints `exec /app: exec format
//! error`, Docker's init `exec /app failed: Exec format error`), right
//! before it exits. Restarting it can never help on this node, so the
//! reconciler reports the container `Waiting` with [`REASON`], fails the
//! pod with the same reason and stops, instead of a CrashLoopBackOff that
//! runs forever. The decisions here are pure; the reconciler reads the
//! texts.

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

/// This node's architecture, in Go spelling (`amd64`, `arm64`, `arm`).
pub fn node_arch() -> &'static str {
    crate::probe::go_arch(std::env::consts::ARCH)
}

/// The container's waiting message:
/// `image outpost/foo:dev does not run on this arm64 node: exec format error`.
pub fn container_message(image: &str, node_arch: &str) -> String {
    format!("image {image} does not run on this {node_arch} node: exec format error")
}

/// The pod's message and the event's: which container, and what to do.
pub fn pod_message(container: &str, image: &str, node_arch: &str) -> String {
    format!(
        "container {container}: {}; it is not restarted here. Use an image built for linux/{node_arch} (or a multi-architecture image), or run the pod on a node of the image's architecture.",
        container_message(image, node_arch)
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
    fn messages_name_the_image_and_the_node() {
        assert_eq!(
            container_message("outpost/foo:dev", "arm64"),
            "image outpost/foo:dev does not run on this arm64 node: exec format error"
        );
        let m = pod_message("app", "outpost/foo:dev", "arm64");
        assert!(
            m.starts_with("container app: image outpost/foo:dev does not run on this arm64 node"),
            "{m}"
        );
        assert!(m.contains("linux/arm64"), "{m}");
        assert!(m.len() <= outpost_proto::pod::pod_limits::MAX_MESSAGE);
        assert_eq!(node_arch(), crate::probe::go_arch(std::env::consts::ARCH));
    }
}
