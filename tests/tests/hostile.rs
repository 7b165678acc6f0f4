//! A client holding an admin certificate that announces large request
//! frames and then trickles bytes, on 8 streams of each of 40 connections,
//! against the real controller:
//! - only 32 MiB of large requests are read at once: the streams beyond it
//!   are answered `TooManyRequests` at once, not buffered;
//! - ordinary calls (`get nodes`) are answered throughout;
//! - every trickling stream is dropped at the 30 s request deadline, and
//!   the controller's memory during and after is printed (from
//!   /proc/PID/status; figures in docs/BENCHMARKS.md, never asserted).

use outpost_controller::clientconfig::{pem_der, ClientConfig};
use outpost_proto::{link, Message};
use outpost_tests::{Cluster, Timing};
use rustls::pki_types::PrivateKeyDer;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 40;
const STREAMS: usize = 8;
/// What each stream announces.
const ANNOUNCED: u32 = 1_000_000;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn slow_large_operator_requests_are_bounded() {
    let c = Cluster::start(Timing::default());
    let pid = c.controller_pid().unwrap();
    let cfg = ClientConfig::load(&c.config).unwrap();
    let ca = pem_der(&cfg.ca, "CERTIFICATE").unwrap();
    let cert = pem_der(&cfg.cert, "CERTIFICATE").unwrap();
    let key = pem_der(&cfg.key, "PRIVATE KEY").unwrap();
    let addr = c.listen;
    let idle_kib = rss_kib(pid);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (busy, dropped, during_kib, took) = rt.block_on(async {
        let mut conns = Vec::new();
        let mut streams = Vec::new();
        for _ in 0..CONNECTIONS {
            let client = link::client_config(
                ca.clone().into(),
                Some((
                    vec![cert.clone().into()],
                    PrivateKeyDer::Pkcs8(key.clone().into()),
                )),
                link::transport(Duration::from_secs(60), 8),
            )
            .unwrap();
            let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            let conn = endpoint
                .connect_with(client, addr, "localhost")
                .unwrap()
                .await
                .expect("admin connection");
            for _ in 0..STREAMS {
                let (mut send, mut recv) = conn.open_bi().await.unwrap();
                send.write_all(&ANNOUNCED.to_be_bytes()).await.unwrap();
                // The controller may refuse on the length alone (over its
                // frame budget) and stop the stream before these bytes go
                // out: then the write ends with Stopped and the answer
                // below says why.
                let _ = send.write_all(&[0u8; 16 * 1024]).await;
                // What the controller answers, as soon as it does.
                let answer = tokio::spawn(async move {
                    tokio::time::timeout(
                        Duration::from_secs(60),
                        link::read_frame(&mut recv, outpost_proto::MAX_FRAME),
                    )
                    .await
                });
                streams.push((send, answer));
            }
            conns.push((endpoint, conn));
        }
        // A trickle on every stream for a while.
        for _ in 0..5 {
            for (send, _) in &mut streams {
                let _ = send.write_all(&[0u8; 1024]).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let during_kib = rss_kib(pid);
        let out = c.ctl(&["get", "nodes"]);
        assert!(
            out.status.success(),
            "an ordinary call during the flood: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let started = Instant::now();
        let mut busy = 0;
        let mut dropped = 0;
        // The send halves stay open until every answer is in.
        let (sends, answers): (Vec<_>, Vec<_>) = streams.into_iter().unzip();
        for answer in answers {
            match answer
                .await
                .unwrap()
                .expect("every stream is answered or dropped within the deadline")
            {
                Ok(Some(Message::Error(e)))
                    if e.code == outpost_proto::ErrorCode::TooManyRequests =>
                {
                    busy += 1
                }
                Ok(Some(Message::Error(e))) => {
                    assert!(e.message.contains("no complete frame within 30s"), "{e:?}");
                    dropped += 1
                }
                Ok(other) => panic!("unexpected answer {other:?}"),
                Err(_) => dropped += 1,
            }
        }
        drop(sends);
        (busy, dropped, during_kib, started.elapsed())
    });
    std::thread::sleep(Duration::from_secs(2));
    let after_kib = rss_kib(pid);
    let total = CONNECTIONS * STREAMS;
    // 32 MiB hold 33 frames of 1,000,000 bytes (977 KiB each).
    let held = 32 * 1024 / (ANNOUNCED as usize).div_ceil(1024);
    assert_eq!(busy, total - held, "{busy} busy, {dropped} dropped");
    assert_eq!(dropped, held);
    eprintln!(
        "{total} streams announcing {ANNOUNCED} B: {busy} answered TooManyRequests at once, {dropped} dropped at the deadline ({took:?} after the trickle); controller RSS idle {idle_kib} KiB, during {during_kib} KiB, after {after_kib} KiB"
    );
}
