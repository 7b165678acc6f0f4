//! Building the workload images on demand, once per test process.
//!
//! [`ensure_images`] runs `build-images.sh` (beside this crate's manifest)
//! the first time it is called and remembers the outcome, so every test in a
//! binary can call it cheaply. The script itself is quick when nothing
//! changed: cargo finds nothing to do and each image carries the checksum of
//! its binary as a label, so an up-to-date image is not rebuilt. Several
//! test processes running it at once are serialised by a lock in the script.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// HTTP server answering with its pod name; see [`crate::http`].
pub const HTTP_IMAGE: &str = "outpost/workload-http:dev";
/// CPU burner; see [`crate::burn`].
pub const BURN_IMAGE: &str = "outpost/workload-burn:dev";
/// Memory, disk and process hog; see [`crate::hog`].
pub const HOG_IMAGE: &str = "outpost/workload-hog:dev";
/// Exits with a chosen code; see [`crate::exit`].
pub const EXIT_IMAGE: &str = "outpost/workload-exit:dev";
/// The HTTP server listening on port 80 (for manifests written for one).
pub const WEB_IMAGE: &str = "outpost/workload-web:dev";
/// Every image [`ensure_images`] builds.
pub const IMAGES: [&str; 5] = [HTTP_IMAGE, BURN_IMAGE, HOG_IMAGE, EXIT_IMAGE, WEB_IMAGE];

static BUILT: OnceLock<Result<(), String>> = OnceLock::new();

/// Builds the workload images into the local Docker engine unless this
/// process already did. The error carries the script's whole output.
pub fn ensure_images() -> Result<(), String> {
    BUILT.get_or_init(build).clone()
}

fn build() -> Result<(), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("build-images.sh");
    let output = Command::new("bash")
        .arg(&script)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        // Shown by the test harness only when the calling test fails.
        eprint!("{text}");
        Ok(())
    } else {
        Err(format!(
            "building the workload images failed ({}): {}\n{text}",
            output.status,
            script.display()
        ))
    }
}
