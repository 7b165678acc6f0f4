//! UDP Services: one socket per frontend; each client address is a flow,
//! pinned to the endpoint chosen when it began (as conntrack pins a UDP
//! "connection" for kube-proxy). A flow to an endpoint this box reaches
//! has a connected socket of its own; one to an endpoint only the relay
//! reaches has a relay stream carrying length-prefixed datagrams
//! ([`super::relay::write_datagram`]). Replies go back from the frontend
//! socket, so their source is the address the client sent to.
//!
//! Bounds: [`MAX_FLOWS`] flows per frontend (datagrams of further new
//! clients are dropped and counted), one [`MAX_DATAGRAM`] buffer per flow
//! and per frontend, [`RELAY_QUEUE`] datagrams queued per relayed flow
//! (more are dropped, as a full socket buffer drops them), flows ended
//! after [`FLOW_IDLE`] without traffic.

use super::{relay, Ctx};
use outpost_proto::pod::Protocol;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::debug;

/// Flows per frontend at once.
pub const MAX_FLOWS: usize = 1024;
/// Largest datagram carried (the UDP maximum).
pub const MAX_DATAGRAM: usize = 65_535;
/// A flow without traffic this long is forgotten: conntrack's
/// `nf_conntrack_udp_timeout` (30 s).
pub const FLOW_IDLE: Duration = Duration::from_secs(30);
/// Datagrams waiting for a relayed flow's stream.
pub const RELAY_QUEUE: usize = 64;

enum Upstream {
    Socket(Arc<UdpSocket>),
    Relay(mpsc::Sender<Vec<u8>>),
}

struct Flow {
    upstream: Upstream,
    /// Milliseconds since the frontend's start of the last datagram.
    last: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

/// Serves the frontend `sock` until the task is aborted.
pub(crate) async fn serve(sock: UdpSocket, ctx: Ctx) {
    let sock = Arc::new(sock);
    let epoch = Instant::now();
    let now_ms = move || u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut sweep = tokio::time::interval(Duration::from_secs(5));
    let service = ctx.binding.service.clone();
    loop {
        let (n, client) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    debug!("udp frontend receive failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = sweep.tick() => {
                let idle = u64::try_from(FLOW_IDLE.as_millis()).unwrap_or(u64::MAX);
                let now = now_ms();
                flows.retain(|_, f| {
                    let keep = !f.task.is_finished()
                        && now.saturating_sub(f.last.load(Ordering::Relaxed)) < idle;
                    if !keep {
                        f.task.abort();
                    }
                    keep
                });
                continue;
            }
        };
        if !flows.contains_key(&client) {
            if flows.len() >= MAX_FLOWS {
                ctx.metrics.failed(&service);
                continue;
            }
            let Some(c) = ctx.choices() else {
                ctx.metrics.failed(&service);
                continue;
            };
            let last = Arc::new(AtomicU64::new(now_ms()));
            let flow = if let Some(target) = c.direct.first() {
                let Some(up) = connected(SocketAddr::from((target.ip, target.port))).await else {
                    ctx.metrics.failed(&service);
                    continue;
                };
                let up = Arc::new(up);
                let task = tokio::spawn(replies(
                    up.clone(),
                    sock.clone(),
                    client,
                    last.clone(),
                    ctx.clone(),
                    now_ms,
                ));
                Flow {
                    upstream: Upstream::Socket(up),
                    last,
                    task,
                }
            } else if let (Some(target), Some(conn)) = (c.relay.first(), ctx.relay.borrow().clone())
            {
                let (tx, rx) = mpsc::channel(RELAY_QUEUE);
                let task = tokio::spawn(relayed(
                    conn,
                    target.pod.clone(),
                    rx,
                    sock.clone(),
                    client,
                    last.clone(),
                    ctx.clone(),
                    now_ms,
                ));
                Flow {
                    upstream: Upstream::Relay(tx),
                    last,
                    task,
                }
            } else {
                ctx.metrics.failed(&service);
                debug!(%service, "udp datagram dropped: no endpoint reachable");
                continue;
            };
            ctx.metrics.udp(&service, true, 0, 0);
            flows.insert(client, flow);
        }
        let f = flows.get(&client).expect("inserted above");
        f.last.store(now_ms(), Ordering::Relaxed);
        let sent = match &f.upstream {
            Upstream::Socket(up) => up.send(&buf[..n]).await.is_ok(),
            Upstream::Relay(tx) => tx.try_send(buf[..n].to_vec()).is_ok(),
        };
        if sent {
            ctx.metrics.udp(&service, false, n as u64, 0);
        }
    }
}

async fn connected(to: SocketAddr) -> Option<UdpSocket> {
    let s = UdpSocket::bind("0.0.0.0:0").await.ok()?;
    s.connect(to).await.ok()?;
    Some(s)
}

/// A direct flow's replies, back to `client` from the frontend.
async fn replies(
    up: Arc<UdpSocket>,
    sock: Arc<UdpSocket>,
    client: SocketAddr,
    last: Arc<AtomicU64>,
    ctx: Ctx,
    now_ms: impl Fn() -> u64,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while let Ok(n) = up.recv(&mut buf).await {
        last.store(now_ms(), Ordering::Relaxed);
        ctx.metrics.udp(&ctx.binding.service, false, 0, n as u64);
        if sock.send_to(&buf[..n], client).await.is_err() {
            break;
        }
    }
}

/// A relayed flow: the stream to `pod`'s agent, datagrams both ways.
#[allow(clippy::too_many_arguments)]
async fn relayed(
    conn: quinn::Connection,
    pod: String,
    mut rx: mpsc::Receiver<Vec<u8>>,
    sock: Arc<UdpSocket>,
    client: SocketAddr,
    last: Arc<AtomicU64>,
    ctx: Ctx,
    now_ms: impl Fn() -> u64,
) {
    let service = &ctx.binding.service;
    let (mut send, mut recv) = match relay::dial(
        &conn,
        service,
        ctx.binding.service_port,
        Protocol::Udp,
        &pod,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            debug!(%service, %pod, "relayed UDP flow refused: {e}");
            ctx.metrics.failed(service);
            return;
        }
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            d = rx.recv() => match d {
                Some(d) => if !relay::write_datagram(&mut send, &d).await { break },
                None => break,
            },
            n = relay::read_datagram(&mut recv, &mut buf) => match n {
                Some(n) => {
                    last.store(now_ms(), Ordering::Relaxed);
                    ctx.metrics.udp(service, false, 0, n as u64);
                    if sock.send_to(&buf[..n], client).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
        }
    }
    let _ = send.finish();
}
