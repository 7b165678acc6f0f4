//! The pause image on the real Docker engine: imported with no registry, it
//! runs, blocks, dies on `docker kill`, and holds a network namespace other
//! containers join. Also runs the hand-assembled x86_64 binary on the host.

use outpost_agent::runtime::pause::{
    ensure_pause_image, import_pause_image, pause_elf, pause_image_ref,
};
use outpost_tests::{docker, docker_ok, engine};
use std::process::Command;
use std::time::{Duration, Instant};

/// Removes the containers it names when dropped, even if the test panics.
struct Containers(Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for id in &self.0 {
            let _ = docker(&["rm", "-f", id]);
        }
    }
}

/// Removes the image it names when dropped (after the containers, if
/// declared before them).
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = docker(&["rmi", "-f", &self.0]);
    }
}

#[test]
fn x86_64_pause_binary_blocks_on_this_host() {
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("not an x86_64 host; the binary cannot run here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pause");
    std::fs::write(&path, pause_elf("x86_64").unwrap()).unwrap();
    let chmod = Command::new("chmod")
        .arg("0755")
        .arg(&path)
        .status()
        .unwrap();
    assert!(chmod.success());
    let started = Instant::now();
    let status = Command::new("timeout")
        .arg("2")
        .arg(&path)
        .status()
        .unwrap();
    let took = started.elapsed();
    println!("pause binary ran {took:?}, then: {status}");
    // 124: timeout had to stop it. A crash would end it early with another
    // status (132 SIGILL, 139 SIGSEGV, 126 not executable).
    assert_eq!(status.code(), Some(124), "{status}");
    assert!(took >= Duration::from_millis(1900), "{took:?}");
}

#[tokio::test]
async fn pause_container_holds_a_shared_network_namespace() {
    let docker_api = engine().await;
    // The shared tag: present after the call, whoever imported it.
    let shared = ensure_pause_image(&docker_api).await.expect("pause image");
    assert_eq!(shared, pause_image_ref());
    assert!(docker(&["image", "inspect", &shared]).0);
    // The import itself, under a tag of this test's own, so suites running
    // at the same time keep the shared one.
    let image = format!("outpost-test/pause-{}:1", std::process::id());
    let _image_guard = Image(image.clone());
    import_pause_image(&docker_api, &image)
        .await
        .expect("import");
    let inspect = docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Cmd}} {{.Size}} {{.Os}}/{{.Architecture}}",
        &image,
    ]);
    println!("imported {image}: {inspect}");
    assert!(inspect.starts_with(r#"["/pause"] "#), "{inspect}");
    let size = pause_elf(std::env::consts::ARCH).unwrap().len();
    assert!(
        inspect.contains(&format!(" {size} ")),
        "the image is the one binary: {inspect}"
    );
    // Same content as the shared image: same root filesystem layer.
    let layers =
        |r: &str| docker_ok(&["image", "inspect", "--format", "{{json .RootFS.Layers}}", r]);
    assert_eq!(layers(&image), layers(&shared));

    outpost_workloads::ensure_images().expect("workload images");
    let http = outpost_workloads::HTTP_IMAGE;
    let tag = format!("outpost-test-pause-{}", std::process::id());
    let mut guard = Containers(Vec::new());

    let pause = docker_ok(&[
        "run",
        "-d",
        "--name",
        &tag,
        "--label",
        "dev.outpost.test=pause",
        &image,
    ]);
    guard.0.push(pause.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let state = docker_ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}} {{.State.Pid}}",
        &pause,
    ]);
    println!("pause after 2 s: {state}");
    assert!(state.starts_with("running 0 "), "{state}");

    // A server in the pause container's namespace...
    let netns = format!("container:{pause}");
    let server = docker_ok(&[
        "run",
        "-d",
        "--label",
        "dev.outpost.test=pause",
        "--network",
        &netns,
        http,
    ]);
    guard.0.push(server.clone());
    // ...answers on 127.0.0.1 to a probe in the same namespace...
    let probe_shared = || {
        docker(&[
            "run",
            "--rm",
            "--label",
            "dev.outpost.test=pause",
            "--network",
            &netns,
            http,
            "--probe",
        ])
        .0
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !probe_shared() {
        assert!(
            Instant::now() < deadline,
            "server never answered inside the pause namespace"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // ...but not to one in a namespace of its own.
    let (alone, text) = docker(&[
        "run",
        "--rm",
        "--label",
        "dev.outpost.test=pause",
        http,
        "--probe",
    ]);
    assert!(
        !alone,
        "a container outside the namespace reached the server: {text}"
    );

    // The namespace outlives the containers in it: replace the server.
    docker_ok(&["rm", "-f", &server]);
    assert!(!probe_shared(), "server removed, nothing should answer");
    let server2 = docker_ok(&[
        "run",
        "-d",
        "--label",
        "dev.outpost.test=pause",
        "--network",
        &netns,
        http,
    ]);
    guard.0.push(server2);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !probe_shared() {
        assert!(
            Instant::now() < deadline,
            "replacement server never answered"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // SIGKILL stops the pause process at once.
    let started = Instant::now();
    docker_ok(&["kill", &pause]);
    let state = docker_ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        &pause,
    ]);
    println!("pause after docker kill ({:?}): {state}", started.elapsed());
    assert_eq!(state, "exited 137");
}
