//! `ensure_images` against the real Docker engine: builds the images (or
//! finds them up to date) and runs one. Skipped, saying so, where no engine
//! is reachable.

use std::process::Command;
use std::time::Instant;

use outpost_workloads::{ensure_images, EXIT_IMAGE, IMAGES};

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs")
}

#[test]
fn builds_images_that_run() {
    if !Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("skipped: no Docker engine reachable");
        return;
    }
    let start = Instant::now();
    ensure_images().unwrap_or_else(|e| panic!("{e}"));
    println!("ensure_images took {:?}", start.elapsed());
    let again = Instant::now();
    ensure_images().unwrap();
    assert!(
        again.elapsed().as_millis() < 10,
        "the second call is cached"
    );

    for image in IMAGES {
        let out = docker(&["image", "inspect", "--format", "{{.Size}}", image]);
        assert!(out.status.success(), "{image} exists");
        println!(
            "{image}: {} bytes",
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    let out = docker(&[
        "run",
        "--rm",
        "--label",
        "outpost.test=workloads",
        EXIT_IMAGE,
        "--code",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "outpost-exit: exiting with code 3 after 0 ms\noutpost-exit: exit 3\n"
    );
}
