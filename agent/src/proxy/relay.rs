//! The relay over the agents' links to the controller (see the
//! controller's `relay` module): the client side dials an endpoint on
//! another box through the agent's relay connection; the serving side
//! takes `RelayConnect` streams the controller opens and connects them to
//! its own pods, after checking them against its own routes.
//!
//! After the `RelayReady` answer a stream carries raw bytes. [`splice`]
//! copies a TCP connection and a QUIC stream both ways, passing each end
//! of stream on (TCP shutdown, QUIC finish), with fixed buffers; QUIC flow
//! control bounds the rest.

use crate::routes::RouteTable;
use outpost_proto::link::{read_frame, write_frame};
use outpost_proto::pod::Protocol;
use outpost_proto::route::{RelayConnect, RelayOpen};
use outpost_proto::{ErrorCode, ErrorMsg, Message};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, warn};

/// Largest relay handshake frame.
const MAX_RELAY_FRAME: usize = 4 * 1024;
/// The controller answers once the far agent connected to its pod (which
/// itself gives up after [`CONNECT_TIMEOUT`]).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(8);
/// Connect to a local pod.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Relay streams served at once; more wait for the controller to retry.
pub const MAX_SERVED: usize = 1024; // the agent allows as many controller streams (session.rs RELAY_STREAMS)

/// Opens a relayed connection to `pod` of `service` through `conn`.
pub async fn dial(
    conn: &quinn::Connection,
    service: &str,
    port: u16,
    protocol: Protocol,
    pod: &str,
) -> Result<(quinn::SendStream, quinn::RecvStream), String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let open = RelayOpen {
        service: service.to_string(),
        port,
        protocol,
        pod: pod.to_string(),
    };
    write_frame(&mut send, &Message::RelayOpen(open))
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(ANSWER_TIMEOUT, read_frame(&mut recv, MAX_RELAY_FRAME)).await {
        Ok(Ok(Some(Message::RelayReady))) => Ok((send, recv)),
        Ok(Ok(Some(Message::Error(e)))) => Err(e.message),
        Ok(Ok(_)) | Ok(Err(_)) => Err("the controller ended the relay".into()),
        Err(_) => Err(format!("no relay answer within {ANSWER_TIMEOUT:?}")),
    }
}

/// Pure: the address of `c`'s pod if `c` names a ready endpoint on `node`
/// with that target port in `table`, else why not.
pub fn check(table: &RouteTable, node: &str, c: &RelayConnect) -> Result<SocketAddr, String> {
    c.validate()?;
    let route = table
        .get(&c.service)
        .ok_or_else(|| format!("this node has no route for service {}", c.service))?;
    let ep = route
        .endpoints
        .iter()
        .find(|e| e.pod == c.pod && e.node == node)
        .ok_or_else(|| {
            format!(
                "pod {} is not a ready endpoint of {} on this node",
                c.pod, c.service
            )
        })?;
    let port_ok = route
        .ports
        .iter()
        .zip(&ep.ports)
        .any(|(p, t)| *t == c.target_port && p.protocol == c.protocol);
    if !port_ok {
        return Err(format!(
            "port {} is not a target port of {} on pod {}",
            c.target_port, c.service, c.pod
        ));
    }
    Ok(SocketAddr::from((ep.ip, c.target_port)))
}

/// Serves the streams the controller opens on the relay connection until
/// it closes.
pub async fn serve(conn: quinn::Connection, node: String, table: watch::Receiver<Arc<RouteTable>>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SERVED));
    while let Ok((send, recv)) = conn.accept_bi().await {
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            let mut send = send;
            let _ = write_frame(
                &mut send,
                &Message::Error(ErrorMsg {
                    code: ErrorCode::TooManyRequests,
                    message: format!("node {node} serves {MAX_SERVED} relayed connections already"),
                }),
            )
            .await;
            continue;
        };
        let (node, table) = (node.clone(), table.clone());
        tokio::spawn(async move {
            let _permit = permit;
            serve_one(send, recv, &node, &table).await;
        });
    }
}

async fn serve_one(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    node: &str,
    table: &watch::Receiver<Arc<RouteTable>>,
) {
    let c = match tokio::time::timeout(ANSWER_TIMEOUT, read_frame(&mut recv, MAX_RELAY_FRAME)).await
    {
        Ok(Ok(Some(Message::RelayConnect(c)))) => c,
        _ => return,
    };
    let target = check(&table.borrow(), node, &c);
    let fail = |message: String| {
        Message::Error(ErrorMsg {
            code: ErrorCode::Unavailable,
            message,
        })
    };
    let addr = match target {
        Ok(a) => a,
        Err(e) => {
            warn!(service = %c.service, pod = %c.pod, "relay refused: {e}");
            let _ = write_frame(&mut send, &fail(e)).await;
            let _ = send.finish();
            return;
        }
    };
    if c.protocol == Protocol::Udp {
        let udp = match tokio::net::UdpSocket::bind("0.0.0.0:0").await {
            Ok(u) if u.connect(addr).await.is_ok() => u,
            _ => {
                let _ = write_frame(
                    &mut send,
                    &fail(format!("pod {} at {addr}: no UDP socket", c.pod)),
                )
                .await;
                let _ = send.finish();
                return;
            }
        };
        if write_frame(&mut send, &Message::RelayReady).await.is_err() {
            return;
        }
        let (to, from) = datagrams(udp, send, recv).await;
        debug!(service = %c.service, pod = %c.pod, to, from, "relayed UDP flow served");
        return;
    }
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let _ = write_frame(&mut send, &fail(format!("pod {} at {addr}: {e}", c.pod))).await;
            let _ = send.finish();
            return;
        }
        Err(_) => {
            let _ = write_frame(
                &mut send,
                &fail(format!("pod {} at {addr}: connect timed out", c.pod)),
            )
            .await;
            let _ = send.finish();
            return;
        }
    };
    if write_frame(&mut send, &Message::RelayReady).await.is_err() {
        return;
    }
    let _ = tcp.set_nodelay(true);
    let (to, from) = splice(tcp, send, recv).await;
    debug!(service = %c.service, pod = %c.pod, to, from, "relayed connection served");
}

/// Copies `tcp` and a QUIC stream pair both ways until both directions
/// end; returns (bytes into the TCP side, bytes out of it).
pub async fn splice(
    tcp: TcpStream,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> (u64, u64) {
    let (mut r, mut w) = tcp.into_split();
    let inbound = async {
        let n = copy(&mut recv, &mut w).await;
        let _ = w.shutdown().await;
        n
    };
    let outbound = async {
        let n = copy(&mut r, &mut send).await;
        let _ = send.finish();
        n
    };
    tokio::join!(inbound, outbound)
}

/// UDP over a relay stream: each datagram as a 2-byte big-endian length
/// and its bytes. A flow ends after [`super::udp::FLOW_IDLE`] without a
/// datagram either way.
pub async fn write_datagram(send: &mut quinn::SendStream, d: &[u8]) -> bool {
    let Ok(len) = u16::try_from(d.len()) else {
        return true; // cannot be framed; dropped, as an oversized datagram is
    };
    send.write_all(&len.to_be_bytes()).await.is_ok() && send.write_all(d).await.is_ok()
}

/// The next framed datagram into `buf` (its length), or `None` at the end.
pub async fn read_datagram(recv: &mut quinn::RecvStream, buf: &mut [u8]) -> Option<usize> {
    let mut len = [0u8; 2];
    recv.read_exact(&mut len).await.ok()?;
    let n = usize::from(u16::from_be_bytes(len));
    let buf = buf.get_mut(..n)?;
    recv.read_exact(buf).await.ok()?;
    Some(n)
}

/// Serving side of a relayed UDP flow: datagrams from the stream to the
/// pod's socket and back until either side ends or the flow idles out.
/// Returns (bytes to the pod, bytes from it).
async fn datagrams(
    udp: tokio::net::UdpSocket,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> (u64, u64) {
    let (mut to, mut from) = (0u64, 0u64);
    let mut inbound = vec![0u8; super::udp::MAX_DATAGRAM];
    let mut outbound = vec![0u8; super::udp::MAX_DATAGRAM];
    loop {
        tokio::select! {
            n = read_datagram(&mut recv, &mut inbound) => match n {
                Some(n) => {
                    if udp.send(&inbound[..n]).await.is_ok() {
                        to += n as u64;
                    }
                }
                None => break,
            },
            r = udp.recv(&mut outbound) => match r {
                Ok(n) => {
                    if !write_datagram(&mut send, &outbound[..n]).await {
                        break;
                    }
                    from += n as u64;
                }
                Err(_) => break,
            },
            () = tokio::time::sleep(super::udp::FLOW_IDLE) => break,
        }
    }
    let _ = send.finish();
    (to, from)
}

/// `tokio::io::copy` with a fixed buffer of [`super::BUF`].
async fn copy<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(r: &mut R, w: &mut W) -> u64 {
    let mut buf = vec![0u8; super::BUF];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return total,
            Ok(n) => n,
        };
        if w.write_all(&buf[..n]).await.is_err() {
            return total;
        }
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_proto::route::{RouteEndpoint, RoutePort, RoutesUpdate, ServiceKind, ServiceRoute};
    use std::net::Ipv4Addr;

    fn table() -> RouteTable {
        let mut t = RouteTable::default();
        t.apply(RoutesUpdate {
            full: true,
            upsert: vec![ServiceRoute {
                namespace: "default".into(),
                name: "web".into(),
                kind: ServiceKind::ClusterIp,
                cluster_ip: Some(Ipv4Addr::new(10, 43, 0, 1)),
                ports: vec![RoutePort {
                    name: String::new(),
                    protocol: Protocol::Tcp,
                    port: 80,
                    node_port: 0,
                }],
                endpoints: vec![
                    RouteEndpoint {
                        ip: Ipv4Addr::new(172, 30, 2, 5),
                        node: "b1".into(),
                        site: "b".into(),
                        pod: "default/web-1".into(),
                        ports: vec![8080],
                    },
                    RouteEndpoint {
                        ip: Ipv4Addr::new(172, 30, 1, 5),
                        node: "a1".into(),
                        site: "a".into(),
                        pod: "default/web-2".into(),
                        ports: vec![8080],
                    },
                ],
            }],
            ..Default::default()
        })
        .unwrap();
        t
    }

    fn connect(pod: &str, port: u16) -> RelayConnect {
        RelayConnect {
            service: "default/web".into(),
            pod: pod.into(),
            target_port: port,
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn only_own_ready_endpoints_on_their_target_port_are_served() {
        let t = table();
        assert_eq!(
            check(&t, "b1", &connect("default/web-1", 8080)).unwrap(),
            SocketAddr::from(([172, 30, 2, 5], 8080))
        );
        assert!(check(&t, "b1", &connect("default/web-1", 22))
            .unwrap_err()
            .contains("not a target port"));
        assert!(check(&t, "b1", &connect("default/web-2", 8080))
            .unwrap_err()
            .contains("not a ready endpoint"));
        let mut other = connect("default/web-1", 8080);
        other.service = "default/db".into();
        assert!(check(&t, "b1", &other).unwrap_err().contains("no route"));
        let mut udp = connect("default/web-1", 8080);
        udp.protocol = Protocol::Udp;
        assert!(check(&t, "b1", &udp).is_err());
    }
}
