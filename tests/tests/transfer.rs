//! Logs out and images in, against the real Docker engine: `docker save`
//! tarballs streamed back through `load_image` in chunks, interrupted or
//! oversized streams that must leave no image, and the logs of containers
//! carrying the agent's labels.

use outpost_agent::runtime::transfer::{load_image, logs, LOG_CHUNK};
use outpost_agent::runtime::{
    LABEL_CONTAINER, LABEL_GENERATION, LABEL_MANAGED, LABEL_NODE, LABEL_POD, LABEL_RUN,
};
use outpost_proto::pod::{ContainerSpec, PodSpec};
use outpost_proto::LogsRequest;
use outpost_tests::{docker, docker_ok, engine};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

fn image_exists(image: &str) -> bool {
    docker(&["image", "inspect", image]).0
}

/// Removes what it names when dropped, even if the test panics.
#[derive(Default)]
struct Cleanup {
    containers: Vec<String>,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in &self.containers {
            let _ = docker(&["rm", "-f", id]);
        }
        for image in &self.images {
            let _ = docker(&["rmi", "-f", image]);
        }
    }
}

/// Feeds `bytes[..upto]` into a channel in chunks of `chunk` bytes from a
/// task, then drops the sender (closing the channel).
fn feed(bytes: Vec<u8>, upto: usize, chunk: usize) -> mpsc::Receiver<Result<Vec<u8>, String>> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        for piece in bytes[..upto].chunks(chunk) {
            if tx.send(Ok(piece.to_vec())).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// A `docker save` tarball of `image`, read into memory (the test images
/// are small) and its size.
fn save(image: &str, dir: &std::path::Path) -> Vec<u8> {
    let path = dir.join("image.tar");
    docker_ok(&["save", "-o", path.to_str().unwrap(), image]);
    std::fs::read(&path).unwrap()
}

#[tokio::test]
async fn saved_image_loads_back_in_chunks() {
    outpost_workloads::ensure_images().expect("workload images");
    let api = engine().await;
    let dir = tempfile::tempdir().unwrap();
    let copy = format!("outpost-test/transfer-{}:load", std::process::id());
    let mut cleanup = Cleanup::default();
    cleanup.images.push(copy.clone());
    docker_ok(&["tag", outpost_workloads::EXIT_IMAGE, &copy]);
    let tar = save(&copy, dir.path());
    docker_ok(&["rmi", &copy]);
    assert!(!image_exists(&copy));

    let size = u64::try_from(tar.len()).unwrap();
    let mut seen = Vec::new();
    let started = Instant::now();
    let len = tar.len();
    let message = load_image(&api, size, feed(tar, len, 64 * 1024), |n| seen.push(n))
        .await
        .expect("load");
    println!(
        "loaded {size} bytes in {} chunks, {:?}: {message}",
        seen.len(),
        started.elapsed()
    );
    assert_eq!(message, format!("Loaded image: {copy}"));
    assert!(image_exists(&copy));
    assert_eq!(seen.last(), Some(&size));
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "progress only grows");
    assert_eq!(seen.len(), tar_chunks(size, 64 * 1024));
    // Same content as the original: same image id.
    let id = |r: &str| docker_ok(&["image", "inspect", "--format", "{{.Id}}", r]);
    assert_eq!(id(&copy), id(outpost_workloads::EXIT_IMAGE));
}

fn tar_chunks(size: u64, chunk: u64) -> usize {
    usize::try_from(size.div_ceil(chunk)).unwrap()
}

/// An image whose layer exists nowhere else in the engine, so a failed load
/// cannot borrow anything and "no image" means no trace at all.
fn unique_image(dir: &std::path::Path, name: &str) -> String {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(&root).unwrap();
    // Random, incompressible, a few MiB: many chunks, distinct layer digest.
    let mut noise = vec![0u8; 3 << 20];
    let mut x: u64 = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
    for byte in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x.to_le_bytes()[0];
    }
    std::fs::write(root.join("noise"), &noise).unwrap();
    let archive = dir.join("rootfs.tar");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .unwrap();
    assert!(ok.success());
    docker_ok(&["import", archive.to_str().unwrap(), name]);
    docker_ok(&["image", "inspect", "--format", "{{.Id}}", name])
}

#[tokio::test]
async fn broken_streams_leave_no_image() {
    let api = engine().await;
    let dir = tempfile::tempdir().unwrap();
    let name = format!("outpost-test/transfer-{}:unique", std::process::id());
    let mut cleanup = Cleanup::default();
    cleanup.images.push(name.clone());
    let id = unique_image(dir.path(), &name);
    let tar = save(&name, dir.path());
    docker_ok(&["rmi", &name]);
    assert!(!image_exists(&id), "{id} still there before the test");
    let size = u64::try_from(tar.len()).unwrap();
    println!("unique image {id}, {size} bytes saved");

    // The sender hangs up halfway.
    let half = tar.len() / 2;
    let mut last = 0;
    let err = load_image(&api, size, feed(tar.clone(), half, 32 * 1024), |n| last = n)
        .await
        .expect_err("a half stream must fail");
    println!("half stream: {err}");
    assert!(
        err.contains(&format!("ended after {half} of {size} bytes")),
        "{err}"
    );
    assert_eq!(last, u64::try_from(half).unwrap());
    assert!(
        !image_exists(&name) && !image_exists(&id),
        "half a load left an image"
    );

    // A stream cut on a 512-byte tar block boundary: a tar reader alone
    // would see a clean end of archive there.
    let cut = 10 * 512;
    let err = load_image(&api, size, feed(tar.clone(), cut, 512), |_| {})
        .await
        .expect_err("a cut stream must fail");
    assert!(err.contains("ended after"), "{err}");
    assert!(!image_exists(&name) && !image_exists(&id));

    // More bytes than announced.
    let err = load_image(
        &api,
        size - 1,
        feed(tar.clone(), tar.len(), 64 * 1024),
        |_| {},
    )
    .await
    .expect_err("an oversized stream must fail");
    println!("oversized stream: {err}");
    assert!(err.contains("more than the announced"), "{err}");
    assert!(!image_exists(&name) && !image_exists(&id));

    // The engine refusing the content is reported, not hung on.
    let junk = vec![b'x'; 100_000];
    let err = load_image(&api, 100_000, feed(junk, 100_000, 8192), |_| {})
        .await
        .expect_err("junk is no image");
    println!("junk: {err}");
    assert!(err.contains("engine"), "{err}");

    // And the whole stream works.
    let message = load_image(&api, size, feed(tar.clone(), tar.len(), 32 * 1024), |_| {})
        .await
        .expect("full load");
    assert_eq!(message, format!("Loaded image: {name}"));
    assert_eq!(
        docker_ok(&["image", "inspect", "--format", "{{.Id}}", &name]),
        id
    );
}

fn pod_spec(name: &str, containers: &[&str]) -> PodSpec {
    let containers = containers
        .iter()
        .map(|c| ContainerSpec::new(*c, outpost_workloads::EXIT_IMAGE))
        .collect();
    PodSpec::new(name, containers)
}

/// Starts a container with the agent's labels; returns its id.
fn run_ours(
    node: &str,
    pod: &str,
    container: &str,
    run: u32,
    image: &str,
    args: &[&str],
) -> String {
    let labels = [
        format!("{LABEL_MANAGED}=true"),
        format!("{LABEL_NODE}={node}"),
        format!("{LABEL_POD}={pod}"),
        format!("{LABEL_CONTAINER}={container}"),
        format!("{LABEL_GENERATION}=1"),
        format!("{LABEL_RUN}={run}"),
    ];
    let mut cmd: Vec<&str> = vec!["run", "-d"];
    for l in &labels {
        cmd.extend(["--label", l]);
    }
    cmd.push(image);
    cmd.extend(args);
    docker_ok(&cmd)
}

async fn collect(
    api: &bollard::Docker,
    node: &str,
    req: &LogsRequest,
    spec: &PodSpec,
) -> Result<(String, Vec<usize>), String> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(8);
    let reader = tokio::spawn(async move {
        let mut all = Vec::new();
        let mut sizes = Vec::new();
        while let Some(chunk) = rx.recv().await {
            sizes.push(chunk.len());
            all.extend(chunk);
        }
        (String::from_utf8_lossy(&all).into_owned(), sizes)
    });
    tokio::time::timeout(Duration::from_secs(30), logs(api, node, req, spec, tx))
        .await
        .expect("logs ends")?;
    Ok(reader.await.unwrap())
}

fn wait_exited(id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while docker_ok(&["inspect", "--format", "{{.State.Status}}", id]) != "exited" {
        assert!(Instant::now() < deadline, "{id} did not exit");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn logs_of_our_containers() {
    outpost_workloads::ensure_images().expect("workload images");
    let api = engine().await;
    let node = format!("logs-node-{}", std::process::id());
    let mut cleanup = Cleanup::default();
    let exit = outpost_workloads::EXIT_IMAGE;

    // Run 0 failed on a bad flag (stderr), run 1 printed to stdout.
    let run0 = run_ours(&node, "web", "app", 0, exit, &["--bogus"]);
    cleanup.containers.push(run0.clone());
    let run1 = run_ours(&node, "web", "app", 1, exit, &["--code", "3"]);
    cleanup.containers.push(run1.clone());
    // Another node's container for the same pod is not ours to read.
    let foreign = run_ours("some-other-node", "web", "app", 9, exit, &["--code", "9"]);
    cleanup.containers.push(foreign.clone());
    for id in [&run0, &run1, &foreign] {
        wait_exited(id);
    }
    let spec = pod_spec("web", &["app"]);
    let req = |container: Option<&str>, previous: bool, tail: Option<u32>| LogsRequest {
        pod: "web".into(),
        container: container.map(str::to_string),
        follow: false,
        tail,
        previous,
    };

    let (current, _) = collect(&api, &node, &req(None, false, None), &spec)
        .await
        .unwrap();
    println!("current run:\n{current}");
    assert_eq!(
        current,
        "outpost-exit: exiting with code 3 after 0 ms\noutpost-exit: exit 3\n"
    );
    let (tail, _) = collect(&api, &node, &req(Some("app"), false, Some(1)), &spec)
        .await
        .unwrap();
    assert_eq!(tail, "outpost-exit: exit 3\n");
    let (previous, _) = collect(&api, &node, &req(None, true, None), &spec)
        .await
        .unwrap();
    println!("previous run:\n{previous}");
    assert!(
        previous.contains("bogus"),
        "stderr of the previous run: {previous}"
    );
    assert!(!previous.contains("exit 3"));

    let err = collect(&api, &node, &req(Some("db"), false, None), &spec)
        .await
        .unwrap_err();
    assert_eq!(err, "pod web has no container db (containers: app)");
    let two = pod_spec("web", &["app", "side"]);
    let err = collect(&api, &node, &req(None, false, None), &two)
        .await
        .unwrap_err();
    assert_eq!(err, "pod web has 2 containers; name one of: app, side");
    let err = collect(&api, &node, &req(Some("side"), false, None), &two)
        .await
        .unwrap_err();
    assert_eq!(err, "container side of pod web has not started yet");
    let other = LogsRequest {
        pod: "api".into(),
        ..req(None, false, None)
    };
    let err = collect(&api, &node, &other, &pod_spec("api", &["app"]))
        .await
        .unwrap_err();
    assert_eq!(err, "container app of pod api has not started yet");
}

/// Sends one GET to the test server and reads the answer.
fn get(ip: &str, path: &str) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect((ip, 8080)).expect("connect to the test server");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn follow_streams_new_output_big_logs_are_chunked() {
    outpost_workloads::ensure_images().expect("workload images");
    let api = engine().await;
    let node = format!("follow-node-{}", std::process::id());
    let mut cleanup = Cleanup::default();

    // The HTTP workload logs one line per request, echoing the path.
    let server = run_ours(&node, "srv", "http", 0, outpost_workloads::HTTP_IMAGE, &[]);
    cleanup.containers.push(server.clone());
    let ip = docker_ok(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.IPAddress}}",
        &server,
    ]);
    let spec = pod_spec("srv", &["http"]);
    let req = LogsRequest {
        pod: "srv".into(),
        container: None,
        follow: true,
        tail: None,
        previous: false,
    };
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(8);
    let api2 = api.clone();
    let (node2, req2, spec2) = (node.clone(), req.clone(), spec.clone());
    let follower = tokio::spawn(async move { logs(&api2, &node2, &req2, &spec2, tx).await });
    let first = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("the server logs something at start")
        .expect("a chunk");
    println!(
        "follow, first chunk: {}",
        String::from_utf8_lossy(&first).trim_end()
    );

    // Output written after the call started arrives on the open stream.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect((ip.as_str(), 8080)).is_err() {
        assert!(
            Instant::now() < deadline,
            "server at {ip}:8080 never listened"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    get(&ip, "/followed-request");
    let mut followed = String::new();
    while !followed.contains("/followed-request") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("the new line is streamed")
            .expect("still following");
        followed.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        !follower.is_finished(),
        "follow returned while the container runs"
    );

    // The caller hangs up: logs returns promptly, without an error.
    drop(rx);
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(5), follower)
        .await
        .expect("logs stops when the caller hangs up")
        .unwrap();
    println!("follower stopped {:?} after hang-up", started.elapsed());
    assert_eq!(result, Ok(()));

    // About 160 KiB of log: every byte arrives, in chunks of at most LOG_CHUNK.
    let long = "x".repeat(4000);
    for i in 0..40 {
        get(&ip, &format!("/big-{i:02}-{long}"));
    }
    // The server logs after answering and the engine writes logs
    // asynchronously: wait until the engine's own client shows every line.
    let engine_log = || {
        let cli = Command::new("docker")
            .args(["logs", &server])
            .output()
            .unwrap();
        let mut all = cli.stdout;
        all.extend(cli.stderr);
        String::from_utf8_lossy(&all).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !engine_log().contains(&format!("/big-39-{long}")) {
        assert!(
            Instant::now() < deadline,
            "the server never logged the last request"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let req = LogsRequest {
        follow: false,
        ..req
    };
    let (text, sizes) = collect(&api, &node, &req, &spec).await.unwrap();
    let lines = text.lines().count();
    println!(
        "non-follow: {} bytes, {lines} lines, {} chunks, largest {}",
        text.len(),
        sizes.len(),
        sizes.iter().max().unwrap()
    );
    assert!(text.len() > 160_000, "{}", text.len());
    assert!(sizes.iter().all(|n| *n > 0 && *n <= LOG_CHUNK), "{sizes:?}");
    for i in 0..40 {
        assert!(
            text.contains(&format!("/big-{i:02}-{long}")),
            "request {i} missing"
        );
    }
    assert!(text.contains("/followed-request"));
    // Every line the engine's own client shows (it splits stdout and
    // stderr; logs interleaves them as they came).
    assert_eq!(text.len(), engine_log().len());
    // Lines already at the engine travel together, not one frame each.
    assert!(sizes.len() < lines, "{sizes:?}");
}
