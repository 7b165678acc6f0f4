//! `outpostctl` against a real controller, the way a kubectl user drives
//! it: apply (files, directories, dry runs), get in every output format
//! with selectors and namespaces, describe, delete (by name, by manifest,
//! orphaning dependents), `get -w` following changes, and cordon showing in
//! `get nodes`. One agent with Docker runs the pod bound by `nodeName`.

use outpost_tests::Cluster;
use serde_json::Value;
use std::io::BufRead;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs outpostctl; it must succeed. Returns its standard output.
fn ok(c: &Cluster, args: &[&str]) -> String {
    let out = c.ctl(args);
    assert!(
        out.status.success(),
        "outpostctl {args:?} failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs outpostctl; it must fail with kubectl's exit code 1.
fn fails(c: &Cluster, args: &[&str]) -> Output {
    let out = c.ctl(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "outpostctl {args:?} should fail: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn json(c: &Cluster, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&ok(c, &a)).expect("outpostctl -o json")
}

/// The table's lines, each split into words.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// The row whose first cells are `key`.
fn row<'a>(table: &'a [Vec<String>], key: &[&str]) -> &'a Vec<String> {
    table
        .iter()
        .find(|r| r.len() >= key.len() && r[..key.len()].iter().zip(key).all(|(a, b)| a == b))
        .unwrap_or_else(|| panic!("no row {key:?} in {table:?}"))
}

/// Whether `text` has a line whose words are `words`.
fn has_line(text: &str, words: &str) -> bool {
    let want: Vec<&str> = words.split_whitespace().collect();
    text.lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == want)
}

fn write(path: &std::path::Path, body: &str) -> String {
    std::fs::write(path, body).unwrap();
    path.to_str().unwrap().to_string()
}

const PRIORITY: &str = r#"
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata:
  name: high
value: 1000
description: customer-facing
"#;

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {tier: front}
spec:
  type: NodePort
  selector: {app: web}
  ports:
    - {name: http, port: 80, targetPort: 8080, nodePort: 31080}
---
apiVersion: v1
kind: Service
metadata:
  name: db
  labels: {tier: back}
spec:
  clusterIP: None
  selector: {app: db}
  ports:
    - {port: 5432, targetPort: 5432}
"#;

const TEAM_A: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: team-a
spec:
  selector: {app: web}
  ports:
    - {port: 80, targetPort: 8080}
"#;

#[test]
fn services_and_priority_classes_apply_get_describe_delete() {
    let c = Cluster::start(outpost_tests::Timing::default());
    let dir = c.path("manifests");
    std::fs::create_dir(&dir).unwrap();
    write(&dir.join("10-priority.yaml"), PRIORITY);
    write(&dir.join("20-services.yaml"), SERVICES);
    write(&dir.join("README.txt"), "not a manifest");
    let dir = dir.to_str().unwrap().to_string();
    let team_a = write(&c.path("team-a.yaml"), TEAM_A);

    // A dry run says what would happen and changes nothing.
    let out = ok(&c, &["apply", "-f", &dir, "--dry-run"]);
    assert_eq!(
        out,
        "priorityclass.scheduling.k8s.io/high created (dry run)\n\
         service/web created (dry run)\n\
         service/db created (dry run)\n"
    );
    let empty = c.ctl(&["get", "pc,svc"]);
    assert!(empty.status.success());
    assert_eq!(text(&empty.stdout), "");
    assert_eq!(
        text(&empty.stderr).trim(),
        "No resources found in default namespace."
    );
    let missing = fails(&c, &["get", "pc", "high"]);
    assert!(
        text(&missing.stderr).starts_with("Error from server (NotFound): "),
        "{}",
        text(&missing.stderr)
    );

    // A directory applies its manifests in name order, all in one request.
    let out = ok(&c, &["apply", "-f", &dir]);
    assert_eq!(
        out,
        "priorityclass.scheduling.k8s.io/high created\nservice/web created\nservice/db created\n"
    );
    let again = ok(&c, &["apply", "-f", &dir, "--dry-run=server"]);
    assert_eq!(again.matches("unchanged (dry run)").count(), 3, "{again}");
    assert_eq!(ok(&c, &["apply", "-f", &team_a]), "service/web created\n");

    // get: kubectl's columns.
    let table = ok(&c, &["get", "svc"]);
    println!("{table}");
    let t = rows(&table);
    assert_eq!(
        t[0],
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    assert_eq!(t.len(), 3, "two services in default: {table}");
    let web = row(&t, &["web"]);
    assert_eq!((web[1].as_str(), web[3].as_str()), ("NodePort", "<none>"));
    assert_eq!(web[4], "80:31080/TCP");
    let db = row(&t, &["db"]);
    assert_eq!(&db[1..5], ["ClusterIP", "None", "<none>", "5432/TCP"]);
    let wide = rows(&ok(&c, &["get", "svc", "-o", "wide"]));
    assert_eq!(wide[0].last().unwrap(), "SELECTOR");
    assert_eq!(row(&wide, &["web"]).last().unwrap(), "app=web");
    let pcs = rows(&ok(&c, &["get", "priorityclasses"]));
    assert_eq!(pcs[0], ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE"]);
    assert_eq!(&row(&pcs, &["high"])[..3], ["high", "1000", "false"]);

    // Namespaces: -n picks one, -A shows them all with a NAMESPACE column.
    assert_eq!(
        ok(&c, &["get", "svc", "-n", "team-a", "-o", "name"]),
        "service/web\n"
    );
    let all = rows(&ok(&c, &["get", "svc", "-A"]));
    assert_eq!(all[0][..2], ["NAMESPACE", "NAME"]);
    let mut seen: Vec<(String, String)> = all[1..]
        .iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("default".to_string(), "db".to_string()),
            ("default".into(), "web".into()),
            ("team-a".into(), "web".into())
        ]
    );

    // Selectors, names, machine forms.
    assert_eq!(
        ok(&c, &["get", "svc", "-l", "tier=front", "-o", "name"]),
        "service/web\n"
    );
    assert_eq!(
        ok(&c, &["get", "svc", "-l", "tier!=front", "-o", "name"]),
        "service/db\n"
    );
    let list = json(&c, &["get", "svc"]);
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let one = json(&c, &["get", "service/web"]);
    assert_eq!(one["kind"], "Service");
    assert_eq!(one["spec"]["ports"][0]["nodePort"], 31080);
    let yaml = ok(&c, &["get", "pc", "high", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: PriorityClass") && yaml.contains("value: 1000"),
        "{yaml}"
    );
    let both = ok(&c, &["get", "pc,svc", "-o", "name"]);
    assert_eq!(
        both,
        "priorityclass.scheduling.k8s.io/high\nservice/db\nservice/web\n"
    );

    // describe, kubectl's layout, ending with the events.
    let d = ok(&c, &["describe", "svc", "web"]);
    println!("{d}");
    for line in [
        "Name: web",
        "Namespace: default",
        "Labels: tier=front",
        "Selector: app=web",
        "Type: NodePort",
        "Port: http 80/TCP",
        "TargetPort: 8080/TCP",
        "NodePort: http 31080/TCP",
        "Endpoints: <none>",
    ] {
        assert!(has_line(&d, line), "no {line:?} in\n{d}");
    }
    assert!(d.contains("Events:"), "{d}");
    let d = ok(&c, &["describe", "priorityclass", "high"]);
    for line in [
        "Value: 1000",
        "GlobalDefault: false",
        "Description: customer-facing",
    ] {
        assert!(has_line(&d, line), "no {line:?} in\n{d}");
    }

    // delete: dry run keeps it; by manifest; missing objects.
    assert_eq!(
        ok(&c, &["delete", "svc", "web", "--dry-run"]),
        "service \"web\" deleted (dry run)\n"
    );
    ok(&c, &["get", "svc", "web"]);
    assert_eq!(
        ok(&c, &["delete", "-f", &team_a]),
        "service \"web\" deleted\n"
    );
    let gone = c.ctl(&["get", "svc", "-n", "team-a"]);
    assert_eq!(
        text(&gone.stderr).trim(),
        "No resources found in team-a namespace."
    );
    assert_eq!(
        ok(&c, &["delete", "-f", &dir]),
        "priorityclass.scheduling.k8s.io \"high\" deleted\n\
         service \"web\" deleted\n\
         service \"db\" deleted\n"
    );
    assert_eq!(ok(&c, &["get", "pc,svc", "-A", "-o", "name"]), "");
    let missing = fails(&c, &["delete", "svc", "web"]);
    let err = text(&missing.stderr);
    assert!(
        err.starts_with("Error from server (NotFound): ") && err.contains("\"web\""),
        "{err}"
    );
    assert_eq!(
        err.matches("Error from server").count(),
        1,
        "printed once: {err}"
    );
    assert!(
        !err.contains("ErrorMsg") && !err.contains("code:"),
        "no Debug forms: {err}"
    );
    let ignored = c.ctl(&["delete", "svc", "web", "--ignore-not-found"]);
    assert!(ignored.status.success(), "{}", text(&ignored.stderr));
    assert_eq!(text(&ignored.stdout), "");

    // Usage errors say what to do.
    let unknown = fails(&c, &["get", "frobs"]);
    let err = text(&unknown.stderr);
    assert!(
        err.starts_with("error: the server doesn't have a resource type \"frobs\"")
            && err.contains("deployments (deploy)"),
        "{err}"
    );
    fails(&c, &["get"]);
    let both = fails(&c, &["get", "svc", "web", "-l", "tier=front"]);
    assert!(
        text(&both.stderr).starts_with("error: "),
        "{}",
        text(&both.stderr)
    );
}

fn images() {
    outpost_workloads::ensure_images().expect("building the workload images");
}

/// Removes a pod's containers when the test ends, passed or failed.
struct Cleanup(&'static str);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (_, names) = outpost_tests::docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=dev.outpost.pod={}", self.0),
            "--format",
            "{{.Names}}",
        ]);
        for n in names.lines() {
            outpost_tests::docker(&["rm", "-f", n]);
        }
    }
}

fn phase(c: &Cluster, pod: &str) -> Option<String> {
    let out = c.ctl(&["get", "pod", pod, "-o", "json"]);
    out.status.success().then(|| {
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["status"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    })
}

#[test]
fn pods_replicasets_orphans_and_cordons() {
    images();
    let _cleanup = Cleanup("web-pod");
    let c = Cluster::with_ready_agent("objects-a", &[]);
    let pod = write(
        &c.path("pod.yaml"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: web-pod
  labels: {app: web}
spec:
  nodeName: objects-a
  terminationGracePeriodSeconds: 2
  containers:
    - name: http
      image: outpost/workload-http:dev
"#,
    );
    assert_eq!(ok(&c, &["apply", "-f", &pod]), "pod/web-pod created\n");
    let took = c.wait_for("web-pod Running", Duration::from_secs(60), |c| {
        phase(c, "web-pod").as_deref() == Some("Running")
    });
    println!("pod with nodeName Running {took:.1?} after apply");
    let t = rows(&ok(&c, &["get", "pods"]));
    assert_eq!(t[0], ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "NODE"]);
    let r = row(&t, &["web-pod"]);
    assert_eq!((r[2].as_str(), r[5].as_str()), ("Running", "objects-a"));
    let wide = ok(&c, &["get", "pods", "-o", "wide"]);
    println!("{wide}");
    let t = rows(&wide);
    assert_eq!(
        t[0],
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED",
            "NODE"
        ]
    );
    let r = row(&t, &["web-pod"]);
    assert_eq!((r[6].as_str(), r[7].as_str()), ("objects-a", "<none>"));
    assert_eq!(
        ok(&c, &["get", "pods", "--node", "objects-a", "-o", "name"]),
        "pod/web-pod\n"
    );
    assert_eq!(
        ok(&c, &["get", "pods", "--node", "elsewhere", "-o", "name"]),
        ""
    );
    let d = ok(&c, &["describe", "pod", "web-pod"]);
    assert!(has_line(&d, "Node: objects-a"), "{d}");
    assert!(has_line(&d, "Status: Running"), "{d}");

    // A hand-made ReplicaSet owning a hand-made pod (nothing here creates
    // or binds pods for it).
    let rs = write(
        &c.path("rs.yaml"),
        r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: keeper
spec:
  replicas: 1
  selector: {matchLabels: {app: kept}}
  template:
    metadata: {labels: {app: kept}}
    spec:
      containers:
        - {name: http, image: outpost/workload-http:dev}
"#,
    );
    assert_eq!(
        ok(&c, &["apply", "-f", &rs]),
        "replicaset.apps/keeper created\n"
    );
    // The ReplicaSet controller creates its pod; it is the one it owns.
    c.wait_for("the replicaset's pod", Duration::from_secs(30), |c| {
        json(c, &["get", "pods", "-l", "app=kept"])["items"]
            .as_array()
            .is_some_and(|i| i.len() == 1)
    });
    let kept = json(&c, &["get", "pods", "-l", "app=kept"])["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(kept.starts_with("keeper-"), "{kept}");
    let several = ok(&c, &["get", "rs,po"]);
    println!("{several}");
    let t = rows(&several);
    assert_eq!(t[0], ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]);
    assert_eq!(row(&t, &["replicaset.apps/keeper"])[1], "1");
    row(&t, &[&format!("pod/{kept}")]);
    row(&t, &["pod/web-pod"]);
    let d = ok(&c, &["describe", "rs", "keeper"]);
    println!("{d}");
    assert!(has_line(&d, "Selector: app=kept"), "{d}");
    assert!(d.contains("Pods Status:"), "{d}");
    let d = ok(&c, &["describe", "pod", &kept]);
    assert!(has_line(&d, "Controlled By: ReplicaSet/keeper"), "{d}");

    // --cascade=orphan: the ReplicaSet goes, its pod stays without owner.
    assert_eq!(
        ok(&c, &["delete", "rs", "keeper", "--cascade=orphan"]),
        "replicaset.apps \"keeper\" deleted\n"
    );
    fails(&c, &["get", "rs", "keeper"]);
    // Long enough for the garbage collector to have acted if it would.
    std::thread::sleep(Duration::from_secs(2));
    let p = json(&c, &["get", "pod", &kept]);
    assert_eq!(p["metadata"]["name"], kept.as_str(), "the orphan stays");
    assert!(
        p["metadata"]["ownerReferences"].is_null(),
        "the orphan lost its owner reference: {p}"
    );

    // cordon and uncordon, as `get nodes` shows them.
    assert_eq!(
        ok(&c, &["cordon", "objects-a"]),
        "node/objects-a cordoned\n"
    );
    let nodes = rows(&ok(&c, &["get", "nodes"]));
    assert_eq!(
        nodes[0],
        ["NAME", "STATUS", "PRESSURE", "SITE", "ARCH", "CPU", "MEMORY", "AGE", "VERSION"]
    );
    assert_eq!(row(&nodes, &["objects-a"])[1], "Ready,SchedulingDisabled");
    assert_eq!(
        json(&c, &["get", "nodes"])["items"][0]["spec"]["unschedulable"],
        true
    );
    assert_eq!(
        ok(&c, &["cordon", "objects-a"]),
        "node/objects-a already cordoned\n"
    );
    assert_eq!(
        ok(&c, &["uncordon", "objects-a"]),
        "node/objects-a uncordoned\n"
    );
    assert_eq!(
        row(&rows(&ok(&c, &["get", "no"])), &["objects-a"])[1],
        "Ready"
    );
    let missing = fails(&c, &["cordon", "nowhere"]);
    assert!(
        text(&missing.stderr).starts_with("Error from server (NotFound): "),
        "{}",
        text(&missing.stderr)
    );

    // Deleting the bound pod: its node stops it, then it is gone.
    assert_eq!(
        ok(&c, &["delete", "pod", "web-pod", &kept]),
        format!("pod \"web-pod\" deleted\npod \"{kept}\" deleted\n")
    );
    let took = c.wait_for("web-pod gone", Duration::from_secs(30), |c| {
        phase(c, "web-pod").is_none()
    });
    println!("bound pod gone {took:.1?} after delete");
}

/// A running `outpostctl get -w` whose output lines arrive on a channel.
struct Watcher {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Watcher {
    fn start(c: &Cluster, args: &[&str]) -> Watcher {
        let mut child = Command::new(&outpost_tests::bins().ctl)
            .arg("--config")
            .arg(&c.config)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting outpostctl get -w");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines() {
                let Ok(l) = l else { return };
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Watcher { child, lines }
    }

    /// The next line that satisfies `f`, within `timeout`.
    fn line(&self, what: &str, timeout: Duration, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if f(&l) => return l,
                Ok(l) => seen.push(l),
                Err(_) => panic!("no line with {what} within {timeout:?}; saw {seen:?}"),
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn service(port: u16) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: watched
spec:
  selector: {{app: watched}}
  ports:
    - {{port: {port}, targetPort: 8080}}
"#
    )
}

#[test]
fn get_watch_prints_a_row_per_change() {
    let c = Cluster::start(outpost_tests::Timing::default());
    let file = c.path("watched.yaml");
    write(&file, &service(80));
    let file = file.to_str().unwrap().to_string();
    ok(&c, &["apply", "-f", &file]);

    let w = Watcher::start(&c, &["get", "svc", "-w"]);
    let json = Watcher::start(&c, &["get", "svc", "--watch-only", "-o", "json"]);
    let wait = Duration::from_secs(20);
    let header = w.line("the header", wait, |l| l.starts_with("NAME"));
    assert!(header.contains("PORT(S)"), "{header}");
    w.line("the current row", wait, |l| {
        l.starts_with("watched") && l.contains("80/TCP")
    });
    // Give the watch-only stream a moment to start before the change.
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    write(c.path("watched.yaml").as_path(), &service(8080));
    assert_eq!(
        ok(&c, &["apply", "-f", &file]),
        "service/watched configured\n"
    );
    // One row per change, under the header printed once.
    let no_header = |l: &str| {
        assert!(!l.starts_with("NAME"), "the header came again: {l}");
        l.starts_with("watched")
    };
    let changed = w.line("the changed row", wait, |l| {
        no_header(l) && l.contains("8080/TCP")
    });
    println!("row for the change after {:.1?}: {changed}", t.elapsed());
    let line = json.line("the change as JSON", wait, |l| l.contains("\"watched\""));
    let v: Value = serde_json::from_str(&line).expect("one JSON object per line");
    assert_eq!(v["spec"]["ports"][0]["port"], 8080, "{v}");
    assert_eq!(
        ok(&c, &["delete", "svc", "watched"]),
        "service \"watched\" deleted\n"
    );
    w.line("the deletion's row", wait, no_header);
}
