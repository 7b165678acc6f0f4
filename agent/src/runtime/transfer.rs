//! Byte streams between the controller and the engine: container logs out,
//! image tarballs in.
//!
//! Data flow: the session reads a `LogsRequest` or an `ImageLoad` from a
//! stream the controller opened and hands this module a bounded channel.
//! [`logs`] finds the pod's container among the ones this node created and
//! pushes its output into the channel in chunks of at most [`LOG_CHUNK`]
//! bytes until the log ends or the caller hangs up. [`load_image`] forwards
//! the `docker save` tarball arriving on a channel straight into the
//! engine's `POST /images/load`, so an image is never held whole in memory.
//! [`image_room`] is the one admission check for a new image, pushed (the
//! session, before accepting) or pulled (the reconciler, before pulling).

use super::{
    LABEL_CONTAINER, LABEL_GENERATION, LABEL_MANAGED, LABEL_NODE, LABEL_POD, LABEL_RUN,
    PAUSE_CONTAINER,
};
use bollard::container::LogOutput;
use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};
use bollard::query_parameters::{
    ImportImageOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
};
use bytes::Bytes;
use futures_util::StreamExt;
use outpost_proto::pod::PodSpec;
use outpost_proto::units::format_bytes;
use outpost_proto::{ConditionStatus, ConditionType, LogsRequest, NodeReport, Signal};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;

/// Largest log chunk sent as one `Data` frame: big enough that a busy log
/// costs little framing, small enough to stay far below the frame limit
/// and to keep a follower's latency low on a slow link.
pub const LOG_CHUNK: usize = 32 * 1024;

/// Streams the stdout and stderr of a pod's container into `out`, in chunks
/// of at most [`LOG_CHUNK`] bytes, as the engine interleaves them.
///
/// Only containers this node created for the pod count (labels
/// [`LABEL_MANAGED`], [`LABEL_NODE`] = `node`, [`LABEL_POD`] = the pod key,
/// [`LABEL_CONTAINER`]). The current run is the one with the highest
/// generation and run number; `previous` picks the run before it.
/// `req.container` may be omitted when the pod has one container. With
/// `follow`, the stream lasts until the container stops. Returns `Ok` when
/// the log ends or when `out` is closed (the caller hung up).
pub async fn logs(
    docker: &bollard::Docker,
    node: &str,
    req: &LogsRequest,
    spec: &PodSpec,
    out: mpsc::Sender<Vec<u8>>,
) -> Result<(), String> {
    let pod = &req.pod;
    let container = pick_container(spec, req.container.as_deref())?;
    let filters = HashMap::from([(
        "label".to_string(),
        vec![
            format!("{LABEL_MANAGED}=true"),
            format!("{LABEL_NODE}={node}"),
            format!("{LABEL_POD}={pod}"),
            format!("{LABEL_CONTAINER}={container}"),
        ],
    )]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let found = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| format!("cannot list the containers of pod {pod}: {e}"))?;
    let id = pick_run(&found, req.previous).map_err(|why| match why {
        RunError::NotStarted => format!("container {container} of pod {pod} has not started yet"),
        RunError::NoPrevious => format!(
            "container {container} of pod {pod} has no previous run: it has not restarted \
             (or the old container was removed)"
        ),
    })?;

    let tail = req
        .tail
        .map_or_else(|| "all".to_string(), |n| n.to_string());
    let options = LogsOptionsBuilder::new()
        .follow(req.follow)
        .stdout(true)
        .stderr(true)
        .tail(&tail)
        .build();
    let mut stream = docker.logs(&id, Some(options));
    let mut buf: Vec<u8> = Vec::with_capacity(LOG_CHUNK);
    let mut ended = false;
    // How long to wait for more output before sending what there is: a
    // follower sees new lines within this; a one-shot read, whose lines are
    // all at the engine already, fills whole chunks.
    let linger = if req.follow {
        Duration::from_millis(20)
    } else {
        Duration::from_millis(500)
    };
    while !ended {
        let item = tokio::select! {
            item = stream.next() => item,
            () = out.closed() => return Ok(()),
        };
        let Some(item) = item else { break };
        let item =
            item.map_err(|e| format!("reading the log of {container} in pod {pod} failed: {e}"))?;
        buf.extend_from_slice(log_bytes(&item));
        // Coalesce what follows closely, then flush: full chunks for a busy
        // log, prompt small ones for a quiet follower. A finished stream
        // must not be polled again.
        while buf.len() < LOG_CHUNK {
            match tokio::time::timeout(linger, stream.next()).await {
                Ok(Some(Ok(more))) => buf.extend_from_slice(log_bytes(&more)),
                Ok(Some(Err(e))) => {
                    return Err(format!(
                        "reading the log of {container} in pod {pod} failed: {e}"
                    ))
                }
                Ok(None) => {
                    ended = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if !send_chunks(&out, &mut buf).await {
            return Ok(());
        }
    }
    Ok(())
}

fn log_bytes(item: &LogOutput) -> &[u8] {
    item.as_ref()
}

/// Sends `buf` in chunks of at most [`LOG_CHUNK`] and empties it; false
/// when the receiver is gone.
async fn send_chunks(out: &mpsc::Sender<Vec<u8>>, buf: &mut Vec<u8>) -> bool {
    for chunk in buf.chunks(LOG_CHUNK) {
        if out.send(chunk.to_vec()).await.is_err() {
            return false;
        }
    }
    buf.clear();
    true
}

/// The container name a logs request is about.
fn pick_container<'a>(spec: &'a PodSpec, asked: Option<&'a str>) -> Result<&'a str, String> {
    let names = || {
        spec.containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match asked {
        Some(name) if spec.containers.iter().any(|c| c.name == name) => Ok(name),
        Some(name) => Err(format!(
            "pod {} has no container {name} (containers: {})",
            spec.key(),
            names()
        )),
        None => match spec.containers.as_slice() {
            [only] => Ok(only.name.as_str()),
            _ => Err(format!(
                "pod {} has {} containers; name one of: {}",
                spec.key(),
                spec.containers.len(),
                names()
            )),
        },
    }
}

#[derive(Debug, PartialEq)]
enum RunError {
    NotStarted,
    NoPrevious,
}

/// The id of the current (or previous) run among one pod container's
/// containers, ordered by generation, run number and creation time. A run
/// the engine created but never started has no log and does not count.
fn pick_run(found: &[ContainerSummary], previous: bool) -> Result<String, RunError> {
    let number = |c: &ContainerSummary, key: &str| {
        c.labels
            .as_ref()
            .and_then(|l| l.get(key))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut runs: Vec<(u64, u64, i64, &str)> = found
        .iter()
        .filter(|c| c.state != Some(ContainerSummaryStateEnum::CREATED))
        .filter(|c| {
            // Never the pause container, whatever a filter let through.
            c.labels
                .as_ref()
                .and_then(|l| l.get(LABEL_CONTAINER))
                .is_none_or(|n| n != PAUSE_CONTAINER)
        })
        .filter_map(|c| {
            let id = c.id.as_deref()?;
            Some((
                number(c, LABEL_GENERATION),
                number(c, LABEL_RUN),
                c.created.unwrap_or(0),
                id,
            ))
        })
        .collect();
    runs.sort_unstable_by(|a, b| b.cmp(a));
    match (runs.as_slice(), previous) {
        ([], _) => Err(RunError::NotStarted),
        ([current, ..], false) => Ok(current.3.to_string()),
        ([_, before, ..], true) => Ok(before.3.to_string()),
        ([_], true) => Err(RunError::NoPrevious),
    }
}

/// What a pull is assumed to need on the image filesystem, its size being
/// unknown until it is done.
pub const PULL_HEADROOM: u64 = 64 << 20;

/// Whether the node takes in a new image of `size` bytes (a pull passes
/// [`PULL_HEADROOM`]): not while it has DiskPressure or its
/// `imagefs.available` threshold is met, and only if the image filesystem
/// under `docker_root` keeps that hard threshold free afterwards. `Err`
/// says why and what to do. A filesystem the agent cannot measure (an agent
/// in a container without the engine's data root mounted) is not refused:
/// the engine's own out-of-space error then stands.
pub fn image_room(
    report: Option<&NodeReport>,
    docker_root: &Path,
    size: u64,
) -> Result<(), String> {
    if let Some(r) = report {
        let disk = r
            .conditions
            .iter()
            .any(|c| c.kind == ConditionType::DiskPressure && c.status == ConditionStatus::True);
        if disk || super::eviction::signals_under_pressure(r).contains(&Signal::ImagefsAvailable) {
            return Err("the node has DiskPressure: it takes no new images until the condition clears; free disk space on the node (unused images, finished pods) or use another node".into());
        }
    }
    let reserve = report
        .and_then(|r| {
            r.signals
                .iter()
                .find(|s| s.signal == Signal::ImagefsAvailable)
        })
        .and_then(|s| s.hard_threshold)
        .unwrap_or(0);
    match imagefs_available(docker_root) {
        Ok((available, _)) => check_image_space(available, size, reserve),
        Err(_) => Ok(()),
    }
}

/// Refuses an image of `size` bytes unless it fits in `available_bytes`
/// with `reserve_bytes` left over (the reserve keeps the imagefs eviction
/// threshold from being crossed by the load itself).
pub fn check_image_space(
    available_bytes: u64,
    size: u64,
    reserve_bytes: u64,
) -> Result<(), String> {
    if size
        .checked_add(reserve_bytes)
        .is_some_and(|needed| needed <= available_bytes)
    {
        return Ok(());
    }
    Err(format!(
        "not enough space for the image: it needs {} plus {} kept free, but the image filesystem has {} available; \
         free space on the image filesystem or push to another node",
        format_bytes(size),
        format_bytes(reserve_bytes),
        format_bytes(available_bytes)
    ))
}

/// Available and total bytes of the filesystem holding `docker_root` (the
/// engine's data root), by `statvfs`, counting as `df` does: blocks
/// available to unprivileged users times the fragment size.
pub fn imagefs_available(docker_root: &Path) -> std::io::Result<(u64, u64)> {
    let st = rustix::fs::statvfs(docker_root)?;
    let frsize = if st.f_frsize == 0 {
        st.f_bsize
    } else {
        st.f_frsize
    };
    Ok((
        st.f_bavail.saturating_mul(frsize),
        st.f_blocks.saturating_mul(frsize),
    ))
}

/// How many body chunks may wait between the pump and the engine's
/// connection; with the caller's channel this bounds the memory a load
/// holds.
const LOAD_QUEUE: usize = 2;

/// Streams a `docker save` tarball of exactly `size` bytes from `chunks`
/// into the engine (`POST /images/load`) and returns the engine's message,
/// e.g. `Loaded image: outpost/workload-http:dev`.
///
/// The input ends when the channel closes: the caller drops its sender
/// after the last chunk (holding it while awaiting this function would
/// deadlock once `size` bytes have arrived). If the channel closes before
/// `size` bytes, more than `size` bytes arrive, or the caller sends an
/// `Err` (its stream broke, e.g. a frame that is not image data), the
/// request body is aborted so the engine fails the load and keeps no
/// partial image.
/// `progress` is called with the total bytes forwarded so far after each
/// chunk.
pub async fn load_image(
    docker: &bollard::Docker,
    size: u64,
    mut chunks: mpsc::Receiver<Result<Vec<u8>, String>>,
    mut progress: impl FnMut(u64) + Send,
) -> Result<String, String> {
    let (body_tx, body_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(LOAD_QUEUE);
    let body = futures_util::stream::unfold(body_rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });

    // Moves chunks from the caller to the request body, counting them.
    let pump = async move {
        let abort = |why: String| async {
            // An error item makes hyper abort the body mid-stream.
            let _ = body_tx.send(Err(std::io::Error::other(why.clone()))).await;
            Err::<u64, String>(why)
        };
        let mut total: u64 = 0;
        loop {
            let chunk = tokio::select! {
                chunk = chunks.recv() => chunk,
                () = body_tx.closed() => return Err("the engine stopped reading the image".to_string()),
            };
            let Some(chunk) = chunk else {
                if total == size {
                    // Dropping body_tx ends the body cleanly.
                    return Ok(total);
                }
                return abort(format!(
                    "the image stream ended after {total} of {size} bytes"
                ))
                .await;
            };
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(why) => return abort(why).await,
            };
            let len = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
            total = total.saturating_add(len);
            if total > size {
                return abort(format!(
                    "the image stream sent more than the announced {size} bytes"
                ))
                .await;
            }
            if body_tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                return Err("the engine stopped reading the image".to_string());
            }
            progress(total);
        }
    };

    let engine = async {
        let options = ImportImageOptionsBuilder::new().quiet(true).build();
        let mut replies = docker.import_image_stream(options, body, None);
        let mut lines: Vec<String> = Vec::new();
        while let Some(reply) = replies.next().await {
            let info = reply.map_err(|e| e.to_string())?;
            if let Some(text) = info.stream {
                lines.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_string),
                );
            }
        }
        Ok::<_, String>(lines)
    };

    let (pumped, loaded) = tokio::join!(pump, engine);
    match (pumped, loaded) {
        (Ok(_), Ok(lines)) if lines.is_empty() => {
            Err("the engine read the image but reported nothing loaded".to_string())
        }
        (Ok(_), Ok(lines)) => Ok(lines.join("\n")),
        (Ok(total), Err(engine)) => Err(format!(
            "the engine refused the image after {total} bytes: {engine}"
        )),
        (Err(why), Ok(_)) => Err(format!("image load aborted: {why}")),
        (Err(why), Err(engine)) => Err(format!("image load aborted: {why} (engine: {engine})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_proto::pod::ContainerSpec;

    fn spec(containers: &[&str]) -> PodSpec {
        let containers = containers
            .iter()
            .map(|n| ContainerSpec::new(*n, "img"))
            .collect();
        PodSpec::new("web", containers)
    }

    #[test]
    fn container_choice() {
        assert_eq!(pick_container(&spec(&["app"]), None), Ok("app"));
        assert_eq!(pick_container(&spec(&["app"]), Some("app")), Ok("app"));
        assert_eq!(
            pick_container(&spec(&["app", "side"]), Some("side")),
            Ok("side")
        );
        assert_eq!(
            pick_container(&spec(&["app", "side"]), Some("db")),
            Err("pod web has no container db (containers: app, side)".to_string())
        );
        assert_eq!(
            pick_container(&spec(&["app", "side"]), None),
            Err("pod web has 2 containers; name one of: app, side".to_string())
        );
        // The pause container is not the operator's to read.
        assert!(pick_container(&spec(&["app"]), Some(PAUSE_CONTAINER)).is_err());
    }

    fn summary(
        id: &str,
        generation: &str,
        run: &str,
        created: i64,
        state: ContainerSummaryStateEnum,
    ) -> ContainerSummary {
        let labels = HashMap::from([
            (LABEL_GENERATION.to_string(), generation.to_string()),
            (LABEL_RUN.to_string(), run.to_string()),
            (LABEL_CONTAINER.to_string(), "app".to_string()),
        ]);
        ContainerSummary {
            id: Some(id.into()),
            labels: Some(labels),
            created: Some(created),
            state: Some(state),
            ..Default::default()
        }
    }

    #[test]
    fn run_choice() {
        use ContainerSummaryStateEnum::{CREATED, EXITED, RUNNING};
        let runs = [
            summary("gen1-run0", "1", "0", 100, EXITED),
            summary("gen2-run0", "2", "0", 300, EXITED),
            summary("gen1-run7", "1", "7", 200, EXITED),
            summary("gen2-run1", "2", "1", 400, RUNNING),
            // Created, never started: not a run yet.
            summary("gen2-run2", "2", "2", 500, CREATED),
        ];
        assert_eq!(pick_run(&runs, false), Ok("gen2-run1".to_string()));
        assert_eq!(pick_run(&runs, true), Ok("gen2-run0".to_string()));
        // Numbers compare as numbers, not text.
        let runs = [
            summary("nine", "1", "9", 1, EXITED),
            summary("ten", "1", "10", 1, RUNNING),
        ];
        assert_eq!(pick_run(&runs, false), Ok("ten".to_string()));
        assert_eq!(pick_run(&runs, true), Ok("nine".to_string()));
        assert_eq!(pick_run(&runs[..1], true), Err(RunError::NoPrevious));
        assert_eq!(pick_run(&[], false), Err(RunError::NotStarted));
        assert_eq!(
            pick_run(&[summary("c", "1", "0", 1, CREATED)], false),
            Err(RunError::NotStarted)
        );
    }

    #[test]
    fn image_space() {
        const GI: u64 = 1 << 30;
        const MI: u64 = 1 << 20;
        assert_eq!(check_image_space(10 * GI, GI, GI), Ok(()));
        assert_eq!(check_image_space(2 * GI, GI, GI), Ok(()), "exactly fits");
        let err = check_image_space(2 * GI, GI + 1, GI).unwrap_err();
        assert_eq!(
            err,
            "not enough space for the image: it needs 1Gi plus 1Gi kept free, but the image filesystem \
             has 2Gi available; free space on the image filesystem or push to another node"
        );
        assert!(check_image_space(0, 1, 0).is_err());
        assert!(
            check_image_space(u64::MAX, u64::MAX, 1).is_err(),
            "no overflow"
        );
        assert!(check_image_space(512 * MI, 0, 512 * MI).is_ok());
    }

    #[test]
    fn imagefs_of_this_box() {
        let (available, capacity) = imagefs_available(Path::new("/")).unwrap();
        assert!(
            capacity > 0 && available <= capacity,
            "{available} of {capacity}"
        );
        let err = imagefs_available(Path::new("/nonexistent/outpost/docker")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn image_room_refuses_under_disk_pressure_and_when_it_does_not_fit() {
        use outpost_proto::{Condition, SignalObservation, ThresholdState};
        let imagefs = |state, threshold| SignalObservation {
            signal: Signal::ImagefsAvailable,
            available: 1,
            capacity: 10,
            hard_threshold: Some(threshold),
            soft_threshold: None,
            state,
            window_min: 1,
        };
        let root = Path::new("/");
        // Far more than any disk holds, so the answer cannot drift.
        let huge = u64::MAX / 2;
        let calm = NodeReport {
            signals: vec![imagefs(ThresholdState::Clear, 0)],
            ..NodeReport::default()
        };
        assert_eq!(image_room(Some(&calm), root, 1), Ok(()));
        assert_eq!(image_room(None, root, 1), Ok(()));
        let too_big = image_room(Some(&calm), root, huge).unwrap_err();
        assert!(too_big.contains("not enough space"), "{too_big}");
        // The hard threshold is kept free on top of the image.
        let reserved = NodeReport {
            signals: vec![imagefs(ThresholdState::Clear, huge)],
            ..NodeReport::default()
        };
        assert!(image_room(Some(&reserved), root, 1).is_err());
        let met = NodeReport {
            signals: vec![imagefs(ThresholdState::Met, 0)],
            ..NodeReport::default()
        };
        let pressure = NodeReport {
            conditions: vec![Condition {
                kind: ConditionType::DiskPressure,
                status: ConditionStatus::True,
                reason: "KubeletHasDiskPressure".into(),
                message: String::new(),
                last_transition_ms: 1,
            }],
            ..NodeReport::default()
        };
        for r in [&met, &pressure] {
            let e = image_room(Some(r), root, 1).unwrap_err();
            assert!(e.contains("DiskPressure"), "{e}");
        }
        // Not measurable from here: the engine's own error stands.
        assert_eq!(
            image_room(
                Some(&calm),
                Path::new("/nonexistent/outpost/docker"),
                u64::MAX
            ),
            Ok(())
        );
    }
}
