//! A Recreate rollout to an image the node does not hold, on a real agent
//! and the real Docker engine: the old pods keep running (Ready) while the
//! Deployment waits for the node to fetch the new image, with the
//! `ImagesPrefetched=False` (`Prefetching`) condition naming the node and
//! the image; the agent is asked for it and tries to pull it (there is no
//! registry here, so the pull fails and backs off); `outpostctl image push`
//! brings it over the link, and only then are the old pods stopped and the
//! new ones started.

use outpost_tests::{docker, docker_ok, running_ready, Cluster, NodeContainers};
use serde_json::Value;
use std::time::{Duration, Instant};

const NODE: &str = "pf-a1";
const V1: &str = "outpost/workload-http:prefetch-v1";
/// Absent from the node until pushed.
const V2: &str = "outpost/workload-http:prefetch-v2";

/// Removes the test's containers, then its images.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        drop(NodeContainers::of([NODE]));
        let _ = docker(&["rmi", V1]);
        let _ = docker(&["rmi", V2]);
    }
}

fn manifest(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: pf}}
spec:
  replicas: 2
  progressDeadlineSeconds: 120
  strategy: {{type: Recreate}}
  selector: {{matchLabels: {{app: pf}}}}
  template:
    metadata: {{labels: {{app: pf}}}}
    spec:
      containers:
      - name: http
        image: {image}
"#
    )
}

/// Images of the Ready pods of `pf` not being deleted, and of all of them.
fn pods(c: &Cluster) -> (Vec<String>, Vec<String>) {
    let mut ready = Vec::new();
    let mut all = Vec::new();
    for p in c.pods("app=pf") {
        let image = p["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if p["metadata"]["deletionTimestamp"].is_null() && running_ready(&p) {
            ready.push(image.clone());
        }
        all.push(image);
    }
    (ready, all)
}

fn prefetched(c: &Cluster) -> Option<Value> {
    let d = c.ctl_json(&["get", "deployment", "pf"]);
    d["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "ImagesPrefetched")
        .cloned()
}

#[test]
fn recreate_keeps_the_old_pods_until_the_node_holds_the_new_image() {
    let _cleanup = Cleanup;
    outpost_workloads::ensure_images().expect("building the workload images");
    docker_ok(&["tag", outpost_workloads::HTTP_IMAGE, V1]);
    let _ = docker(&["rmi", V2]);
    let c = Cluster::with_ready_agent(NODE, &[]);
    c.apply("pf.yaml", &manifest(V1));
    c.wait_for("two old pods Ready", Duration::from_secs(90), |c| {
        pods(c).0 == vec![V1.to_string(); 2]
    });
    let tar = c.path("v2.tar");
    docker_ok(&["tag", outpost_workloads::HTTP_IMAGE, V2]);
    docker_ok(&["save", "-o", tar.to_str().unwrap(), V2]);
    docker_ok(&["rmi", V2]);
    c.wait_image_unreported(V2);

    c.apply("pf.yaml", &manifest(V2));
    c.wait_for(
        "the Deployment waiting for the image",
        Duration::from_secs(20),
        |c| prefetched(c).is_some_and(|p| p["status"] == "False" && p["reason"] == "Prefetching"),
    );
    let message = prefetched(&c).unwrap()["message"].clone();
    assert!(
        message
            .as_str()
            .is_some_and(|m| m.contains(&format!("{NODE}: {V2}"))),
        "{message}"
    );
    // The node is asked for it: its agent tries to pull it.
    c.wait_for(
        "the agent pulling the image",
        Duration::from_secs(20),
        |c| {
            let events = String::from_utf8_lossy(&c.ctl(&["get", "events"]).stdout).to_string();
            events.contains(&format!("Pulling image \"{V2}\""))
        },
    );
    // Well inside the deadline, the old pods all serve and nothing new runs.
    std::thread::sleep(Duration::from_secs(5));
    let (ready, all) = pods(&c);
    assert_eq!(ready, vec![V1.to_string(); 2], "old pods serve: {all:?}");
    assert!(all.iter().all(|i| i == V1), "no new pod yet: {all:?}");

    let pushed_at = Instant::now();
    let out = c.ctl(&["image", "push", tar.to_str().unwrap(), "--node", NODE]);
    assert!(
        out.status.success(),
        "image push: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed = pushed_at.elapsed();
    let stopped = c.wait_for(
        "the old pods stopped once the node holds the image",
        Duration::from_secs(30),
        |c| pods(c).0.iter().all(|i| i != V1),
    );
    let rolled = c.wait_for("two new pods Ready", Duration::from_secs(60), |c| {
        pods(c).0 == vec![V2.to_string(); 2]
    });
    let p = prefetched(&c).unwrap();
    assert_eq!(
        (p["status"].as_str(), p["reason"].as_str()),
        (Some("True"), Some("ImagesPresent"))
    );
    println!(
        "Recreate to an absent image: old pods served until the push ({pushed:.1?}) ended, stopped {stopped:.1?} after it, new pods Ready {rolled:.1?} later"
    );
}
