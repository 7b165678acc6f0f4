//! `outpostctl get -w`: a watch on one kind, streamed to the operator as
//! `Response(WatchEvent)` frames (`ADDED`, `MODIFIED`, `DELETED` with the
//! object as Kubernetes JSON) until the operator hangs up.
//!
//! Without a resource version the current objects come first as `ADDED`,
//! then changes from the revision they were read at, so nothing falls in
//! between. The stream reads the store's bounded watch history through a
//! cursor and writes under QUIC flow control: a slow operator holds only
//! its cursor; one that falls behind the history gets the current objects
//! again (as kubectl's reflector relists) and carries on.

use crate::api::selector::Selector;
use crate::api::{self, Kind, Object};
use crate::cluster::{err, Controller};
use crate::store::{WatchEvent as StoreEvent, WatchEventKind};
use outpost_proto::link::write_frame;
use outpost_proto::{AdminResponse, ErrorCode, ErrorMsg, Message, WatchEvent, WatchRequest};

/// Events taken from the history per read.
const BATCH: usize = 256;

fn frame(kind: &str, object: &serde_json::Value) -> Message {
    Message::Response(AdminResponse::WatchEvent(WatchEvent {
        kind: kind.to_string(),
        object: serde_json::to_vec(object).unwrap_or_default(),
    }))
}

/// The JSON of a stored value of `kind`, or None when it is filtered out.
fn render(
    ctrl: &Controller,
    kind: Kind,
    ev: &StoreEvent,
    namespace: Option<&str>,
    selector: &Selector,
) -> Option<serde_json::Value> {
    if kind == Kind::Node {
        let rec: crate::registry::NodeRecord = serde_json::from_slice(&ev.kv.value).ok()?;
        if !selector.matches(&rec.labels()) {
            return None;
        }
        return Some(match ctrl.node(&rec.name) {
            Ok(view) => crate::ctl::node_json(&view),
            Err(_) => api::with_type(
                Kind::Node,
                serde_json::json!({"metadata": {"name": rec.name}}),
            ),
        });
    }
    let obj = Object::decode(kind, &ev.kv.value, ev.kv.mod_revision).ok()?;
    let m = obj.meta();
    if namespace.is_some_and(|ns| ns != m.namespace) || !selector.matches(&m.labels) {
        return None;
    }
    Some(obj.to_json())
}

/// Streams the watch until the operator hangs up.
pub async fn serve(
    ctrl: &Controller,
    req: WatchRequest,
    send: &mut quinn::SendStream,
) -> Result<(), ErrorMsg> {
    let kind = Kind::parse(&req.kind).ok_or_else(|| {
        err(
            ErrorCode::InvalidRequest,
            format!("unknown kind {:?}", req.kind),
        )
    })?;
    let selector = Selector::parse(&req.selector)
        .map_err(|e| err(ErrorCode::InvalidRequest, format!("-l: {e}")))?;
    let namespace = if kind.namespaced() {
        req.namespace.clone().map(|n| {
            if n.is_empty() {
                api::DEFAULT_NAMESPACE.to_string()
            } else {
                n
            }
        })
    } else {
        None
    };
    let prefix = kind.prefix(namespace.as_deref());
    let mut from = req.resource_version + 1;
    let gone = |_| err(ErrorCode::Internal, "the operator went away");
    if req.resource_version == 0 {
        from = initial(ctrl, kind, &prefix, namespace.as_deref(), &selector, send).await?;
    }
    let mut watcher = ctrl.store().watch(&prefix, from);
    loop {
        tokio::select! {
            () = watcher.changed() => {}
            _ = send.stopped() => return Ok(()),
        }
        let events = match watcher.poll(BATCH) {
            Ok(e) => e,
            Err(_) => {
                let rev =
                    initial(ctrl, kind, &prefix, namespace.as_deref(), &selector, send).await?;
                watcher = ctrl.store().watch(&prefix, rev);
                continue;
            }
        };
        for ev in events {
            let Some(obj) = render(ctrl, kind, &ev, namespace.as_deref(), &selector) else {
                continue;
            };
            let what = match (ev.kind, ev.kv.version) {
                (WatchEventKind::Delete, _) => "DELETED",
                (WatchEventKind::Put, 1) => "ADDED",
                (WatchEventKind::Put, _) => "MODIFIED",
            };
            write_frame(send, &frame(what, &obj)).await.map_err(gone)?;
        }
    }
}

/// Sends every current object as `ADDED`; returns the revision to watch from.
async fn initial(
    ctrl: &Controller,
    kind: Kind,
    prefix: &str,
    namespace: Option<&str>,
    selector: &Selector,
    send: &mut quinn::SendStream,
) -> Result<u64, ErrorMsg> {
    let list = ctrl
        .store()
        .list(prefix)
        .map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
    for kv in list.kvs {
        let ev = StoreEvent {
            kind: WatchEventKind::Put,
            kv,
        };
        if let Some(obj) = render(ctrl, kind, &ev, namespace, selector) {
            write_frame(send, &frame("ADDED", &obj))
                .await
                .map_err(|_| err(ErrorCode::Internal, "the operator went away"))?;
        }
    }
    Ok(list.revision + 1)
}
