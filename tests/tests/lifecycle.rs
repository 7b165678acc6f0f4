//! Three agents on loopback enrol and turn Ready; an agent killed turns
//! NotReady within the grace period and Ready again after restart; the
//! controller killed and restarted brings every node back without
//! re-enrolment.

use outpost_tests::{Cluster, Timing};
use std::time::Duration;

const NODES: [&str; 3] = ["edge-a", "edge-b", "edge-c"];

#[test]
fn enrol_fail_recover_and_controller_restart() {
    let mut c = Cluster::start(Timing::default());
    let (token, hash) = c.token(&["--uses", "3", "--labels", "site=shop-1"]);
    for n in NODES {
        c.start_agent(n, Some((&token, &hash)), &[]);
    }
    let took = c.wait_for("three nodes Ready", Duration::from_secs(30), |c| {
        NODES.iter().all(|n| c.is_ready(n))
    });
    println!("three agents enrolled and Ready in {took:.1?}");

    // Real conditions and facts arrived with the report.
    let node = c.node("edge-a").unwrap();
    let conds: Vec<&str> = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        conds,
        ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"]
    );
    assert_eq!(
        node["metadata"]["labels"]["topology.outpost.dev/site"],
        "shop-1"
    );
    assert!(node["status"]["capacity"]["cpu"].as_str().unwrap() != "0");
    assert_eq!(node["status"]["signals"].as_array().unwrap().len(), 5);
    let serials: Vec<String> = NODES
        .iter()
        .map(|n| {
            c.node(n).unwrap()["status"]["certificate"]["serial"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();

    // The token is used up now.
    let tokens = c.ctl_json(&["get", "tokens"]);
    assert_eq!(tokens["items"][0]["spec"]["usesLeft"], 0);

    // Kill one agent: NotReady within the grace period (plus one lease tick).
    c.kill_agent("edge-b");
    let took = c.wait_for("edge-b NotReady", Duration::from_secs(10), |c| {
        !c.is_ready("edge-b")
    });
    println!("edge-b NotReady {took:.1?} after SIGKILL (grace 4s, heartbeat 1s)");
    // Bound: grace (4s) + up to one heartbeat interval since the last
    // heartbeat (1s) + the 1s lease tick + polling and CLI time (1s).
    assert!(
        took <= Duration::from_secs(4 + 1 + 1 + 1),
        "NotReady took {took:?}"
    );
    assert!(
        c.is_ready("edge-a") && c.is_ready("edge-c"),
        "others unaffected"
    );
    let node = c.node("edge-b").unwrap();
    let taints = node["spec"]["taints"].as_array().unwrap();
    assert!(
        taints
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable"),
        "{taints:?}"
    );

    // The controller also notices the dead link itself, within the idle
    // timeout (6s here), and says so.
    let took = c.wait_for(
        "controller to drop edge-b's connection",
        Duration::from_secs(12),
        |c| {
            c.node("edge-b")
                .is_some_and(|n| n["status"]["connection"]["connected"] == false)
        },
    );
    println!("controller dropped edge-b's dead connection {took:.1?} after NotReady");

    // Restart it without a token: it reuses its identity.
    c.start_agent("edge-b", None, &[]);
    let took = c.wait_for("edge-b Ready again", Duration::from_secs(20), |c| {
        c.is_ready("edge-b")
    });
    println!("edge-b Ready {took:.1?} after restart");

    // Kill the controller; all agents stay up and reconnect to the new one.
    c.kill_controller();
    // Each agent notices the dead link within the idle timeout and starts
    // reconnecting with back-off.
    let took = c.wait_for(
        "agents to notice the controller is gone",
        Duration::from_secs(15),
        |c| {
            NODES.iter().all(|n| {
                c.agent_log(n).contains("lost:") || c.agent_log(n).contains("cannot connect")
            })
        },
    );
    println!("all agents noticed the dead controller within {took:.1?} (idle timeout 6s)");
    c.start_controller();
    let took = c.wait_for(
        "all nodes Ready after controller restart",
        Duration::from_secs(30),
        |c| NODES.iter().all(|n| c.is_ready(n)),
    );
    println!("all three nodes Ready {took:.1?} after the controller came back");
    for (n, serial) in NODES.iter().zip(&serials) {
        let node = c.node(n).unwrap();
        assert_eq!(
            node["status"]["certificate"]["serial"].as_str().unwrap(),
            serial,
            "{n} kept its certificate (no re-enrolment)"
        );
        assert_eq!(
            node["metadata"]["labels"]["topology.outpost.dev/site"],
            "shop-1"
        );
    }
    let events = c.ctl_json(&["get", "events"]);
    let registered = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "NodeRegistered")
        .count();
    assert_eq!(
        registered, 3,
        "events survive the restart and nobody re-enrolled"
    );
    for n in NODES {
        assert!(
            !c.agent_log(n).contains("enrolled;") || n != "edge-b",
            "restarted agent must not enrol again"
        );
    }
}

#[test]
fn get_nodes_table_and_describe_show_real_conditions() {
    let c = Cluster::with_ready_agent("solo", &["--labels", "site=lab"]);
    c.wait_for("solo reported", Duration::from_secs(10), |c| {
        c.node("solo")
            .is_some_and(|n| !n["status"]["signals"].as_array().unwrap().is_empty())
    });
    let table = String::from_utf8(c.ctl(&["get", "nodes"]).stdout).unwrap();
    println!("{table}");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "STATUS", "PRESSURE", "SITE", "ARCH", "CPU", "MEMORY", "AGE", "VERSION"]
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["solo", "Ready", "None", "lab"]);
    let describe = String::from_utf8(c.ctl(&["describe", "node", "solo"]).stdout).unwrap();
    for needle in [
        "MemoryPressure",
        "DiskPressure",
        "PIDPressure",
        "memory.available",
        "pid.available",
        "Allocatable:",
    ] {
        assert!(
            describe.contains(needle),
            "describe lacks {needle}:\n{describe}"
        );
    }
    let yaml = String::from_utf8(c.ctl(&["get", "nodes", "-o", "yaml"]).stdout).unwrap();
    assert!(
        yaml.contains("kind: List") && yaml.contains("name: solo"),
        "{yaml}"
    );
    // Metrics agree.
    assert_eq!(c.metric("outpost_nodes_ready"), Some(1.0));
    assert!(c.metric("outpost_heartbeats_total").unwrap() >= 1.0);
}

#[test]
fn agent_without_docker_reports_runtime_unavailable_and_keeps_going() {
    let mut c = Cluster::start(Timing::default());
    let (token, hash) = c.token(&[]);
    let missing = c.path("no-docker.sock");
    let docker_host = format!("unix://{}", missing.display());
    c.start_agent_env(
        "nodocker",
        Some((&token, &hash)),
        &[],
        &[("DOCKER_HOST", &docker_host)],
    );
    c.wait_for("nodocker reported", Duration::from_secs(30), |c| {
        c.node("nodocker")
            .is_some_and(|n| n["status"]["nodeInfo"]["architecture"] != "")
    });
    let n = c.node("nodocker").unwrap();
    assert_eq!(n["status"]["runtime"]["available"], false);
    let message = n["status"]["runtime"]["message"].as_str().unwrap();
    assert!(message.contains("no-docker.sock"), "{message}");
    let taints = n["spec"]["taints"].as_array().unwrap();
    assert!(
        taints
            .iter()
            .any(|t| t["key"] == "node.outpost.dev/runtime-unavailable"
                && t["effect"] == "NoSchedule"),
        "{taints:?}"
    );
    assert!(c.is_ready("nodocker"), "the agent itself is healthy");
    let table = String::from_utf8(c.ctl(&["get", "nodes"]).stdout).unwrap();
    assert!(table.contains("Ready,NoRuntime"), "{table}");

    // A pod bound to it waits and says why, and the agent stays up.
    let out = c.ctl(&[
        "run",
        "waits",
        "--image",
        "outpost/workload-http:dev",
        "--node",
        "nodocker",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait_for(
        "the pod reports RuntimeUnavailable",
        Duration::from_secs(30),
        |c| {
            let out = c.ctl(&["get", "pod", "waits", "-o", "json"]);
            let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            p["status"]["phase"] == "Pending"
                && p["status"]["reason"] == "RuntimeUnavailable"
                && p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("no-docker.sock"))
        },
    );
    let pods = String::from_utf8(c.ctl(&["get", "pods"]).stdout).unwrap();
    assert!(pods.contains("RuntimeUnavailable"), "{pods}");
    assert!(c.is_ready("nodocker"));
}
