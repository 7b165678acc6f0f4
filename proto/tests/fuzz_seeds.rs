//! The seed corpora of the `frame` and `image_stream` fuzz targets
//! (`fuzz/corpus/<target>/seed-*.bin`) are valid encodings made here, so
//! they follow the wire format: this test fails when a committed seed no
//! longer matches what the encoder produces. Regenerate them with
//! `OUTPOST_WRITE_FUZZ_SEEDS=1 cargo test -p outpost-proto --test fuzz_seeds`.

use outpost_proto::frame::{encode, HEADER_LEN};
use outpost_proto::{
    AdminRequest, EnrolRequest, ErrorCode, ErrorMsg, Heartbeat, Hello, ImageLoad, LogsRequest,
    Message, PodsAck, Progress, Welcome,
};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `frame` seeds: one payload (no length prefix) per message, since the
/// target decodes its whole input as one payload.
fn frame_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let msgs = [
        (
            "enrol",
            Message::EnrolRequest(EnrolRequest {
                token: "opt_0123456789abcdef".into(),
                node: "edge-1".into(),
                csr_der: vec![0x30, 0x82, 0x01, 0x0a, 0x02, 0x01, 0x00],
                labels: BTreeMap::from([("site".to_string(), "berlin".to_string())]),
            }),
        ),
        (
            "hello",
            Message::Hello(Hello {
                protocol_version: outpost_proto::PROTOCOL_VERSION,
                node: "edge-1".into(),
                agent_version: "0.1.0".into(),
            }),
        ),
        (
            "welcome",
            Message::Welcome(Welcome {
                controller_version: "0.1.0".into(),
                heartbeat_interval_ms: 5_000,
                server_time_ms: 1_764_000_000_000,
            }),
        ),
        ("heartbeat", Message::Heartbeat(Heartbeat { seq: 42 })),
        ("ack", Message::PodsAck(PodsAck { generation: 7 })),
        (
            "error",
            Message::Error(ErrorMsg {
                code: ErrorCode::VersionMismatch,
                message: "protocol 9 is not spoken here".into(),
            }),
        ),
        (
            "logs",
            Message::LogsRequest(LogsRequest {
                pod: "default/web".into(),
                container: Some("app".into()),
                follow: true,
                tail: Some(100),
                previous: false,
            }),
        ),
        (
            "image-load",
            Message::ImageLoad(ImageLoad {
                size: 3,
                name: "outpost/app:1".into(),
            }),
        ),
        ("data", Message::Data(b"abc".to_vec())),
        (
            "progress",
            Message::Progress(Progress {
                node: "edge-1".into(),
                bytes: 3,
                total: 3,
                done: true,
                error: None,
                message: "Loaded image: outpost/app:1".into(),
            }),
        ),
        ("list-nodes", Message::Request(AdminRequest::ListNodes)),
        ("relay-ready", Message::RelayReady),
    ];
    msgs.into_iter()
        .map(|(name, m)| (name, encode(&m).unwrap()[HEADER_LEN..].to_vec()))
        .collect()
}

/// `image_stream` seeds: whole agent-side streams, framed as on the wire:
/// the `ImageLoad` offer, then `Data` frames.
fn image_stream_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let stream = |size: u64, chunks: &[&[u8]], tail: Option<Message>| {
        let mut out = encode(&Message::ImageLoad(ImageLoad {
            size,
            name: "outpost/app:1".into(),
        }))
        .unwrap();
        for c in chunks {
            out.extend(encode(&Message::Data(c.to_vec())).unwrap());
        }
        if let Some(m) = tail {
            out.extend(encode(&m).unwrap());
        }
        out
    };
    vec![
        ("complete", stream(8, &[b"tar-", b"ball"], None)),
        ("empty", stream(0, &[], None)),
        ("short", stream(8, &[b"tar"], None)),
        ("long", stream(2, &[b"tar"], None)),
        (
            "foreign",
            stream(4, &[b"ta"], Some(Message::Heartbeat(Heartbeat { seq: 1 }))),
        ),
    ]
}

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

#[test]
fn committed_seeds_match_the_encoder() {
    let write = std::env::var_os("OUTPOST_WRITE_FUZZ_SEEDS").is_some();
    for (target, seeds) in [
        ("frame", frame_seeds()),
        ("image_stream", image_stream_seeds()),
    ] {
        let dir = corpus(target);
        for (name, bytes) in seeds {
            let path = dir.join(format!("seed-{name}.bin"));
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            let committed = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; regenerate the seeds with OUTPOST_WRITE_FUZZ_SEEDS=1 \
                     cargo test -p outpost-proto --test fuzz_seeds",
                    path.display()
                )
            });
            assert_eq!(
                committed,
                bytes,
                "{} is not what the encoder makes now; regenerate the seeds with \
                 OUTPOST_WRITE_FUZZ_SEEDS=1 cargo test -p outpost-proto --test fuzz_seeds",
                path.display()
            );
        }
    }
}
