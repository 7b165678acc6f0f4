//! The operator's side of an admin call: connect with the admin certificate
//! from a [`ClientConfig`], send one `Request` on a fresh stream, read the
//! `Response` (node listings arrive in pages until the stream ends).
//! Used by `outpostctl` and by the load generator.
//!
//! Two bounds: the controller must answer the connection attempt within
//! [`CONNECT_TIMEOUT`] (2 s), so `outpostctl` against a controller that is
//! down or unreachable says so at once (`cannot reach the controller at
//! 127.0.0.1:7443 (no answer within 2s); is it running? ...`) instead of
//! waiting out the call; the handshake and the call then have
//! [`CALL_TIMEOUT`] (15 s) together. Streamed calls (`logs -f`, `get -w`)
//! have the connect bound only.

use crate::clientconfig::{pem_der, ClientConfig};
use anyhow::{anyhow, bail, Context, Result};
use outpost_proto::link::{self, read_frame, write_frame};
use outpost_proto::{close, AdminRequest, AdminResponse, ErrorMsg, Message, MAX_FRAME};
use std::net::SocketAddr;
use std::time::Duration;

/// An error the controller answered a call with. Its Display is the
/// controller's message; the code tells callers what kind of failure it
/// was (`outpostctl` prints `Error from server (NotFound): ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.message)]
pub struct ServerError(pub ErrorMsg);

/// Says so when a controller could not decode a request because it
/// predates it (it answers `InvalidRequest: malformed frame` and closes):
/// `what` is the command, e.g. `outpostctl admin create`. Other errors
/// pass through.
pub fn older_controller(e: anyhow::Error, what: &str) -> anyhow::Error {
    let old = e
        .chain()
        .find_map(|c| c.downcast_ref::<ServerError>())
        .is_some_and(|s| {
            s.0.code == outpost_proto::ErrorCode::InvalidRequest
                && s.0.message.starts_with("malformed frame")
        });
    if !old {
        return e;
    }
    ServerError(ErrorMsg {
        code: outpost_proto::ErrorCode::VersionMismatch,
        message: format!(
            "this controller does not support `{what}`: it is older than this outpostctl and could not read the request;              upgrade the controller, or use the outpostctl of its version"
        ),
    })
    .into()
}

/// Longest wait for one call, connect included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Longest wait for the controller's first answer to a connection attempt
/// (its part of the TLS handshake). A running controller answers within
/// one round trip, which its QUIC endpoint task sends however busy the
/// rest of the controller is; quinn resends its first packet after about
/// 1 s (a PTO from its 333 ms initial RTT), so 2 s also covers one lost
/// packet. Only the first answer is bounded this tightly; the rest of the
/// handshake and the call keep [`CALL_TIMEOUT`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// TLS/QUIC client configuration with the config's admin identity.
pub fn quic_config(cfg: &ClientConfig) -> Result<quinn::ClientConfig> {
    let ca = pem_der(&cfg.ca, "CERTIFICATE").map_err(|e| anyhow!("config ca: {e}"))?;
    let cert = pem_der(&cfg.cert, "CERTIFICATE").map_err(|e| anyhow!("config cert: {e}"))?;
    let key = pem_der(&cfg.key, "PRIVATE KEY").map_err(|e| anyhow!("config key: {e}"))?;
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(key).map_err(|e| anyhow!("config key: {e}"))?;
    Ok(link::client_config(
        ca.into(),
        Some((vec![cert.into()], key)),
        link::transport(CALL_TIMEOUT, 4),
    )?)
}

/// Resolves the config's controller address.
pub async fn resolve(cfg: &ClientConfig) -> Result<SocketAddr> {
    tokio::net::lookup_host(&cfg.controller)
        .await
        .with_context(|| format!("resolving controller {}", cfg.controller))?
        .next()
        .ok_or_else(|| anyhow!("controller {} resolved to nothing", cfg.controller))
}

/// One call on a fresh connection from an existing endpoint.
pub async fn call_on(
    endpoint: &quinn::Endpoint,
    cfg: &ClientConfig,
    remote: SocketAddr,
    req: AdminRequest,
) -> Result<AdminResponse> {
    let client = quic_config(cfg)?;
    let exchange = async {
        let conn = connect(endpoint, client, cfg, remote).await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        write_frame(&mut send, &Message::Request(req)).await?;
        send.finish()?;
        let reply = read_frame(&mut recv, MAX_FRAME)
            .await
            .map_err(frame_error)?;
        let reply = match reply {
            Some(Message::Response(AdminResponse::Nodes(mut nodes))) => {
                while let Some(more) = read_frame(&mut recv, MAX_FRAME).await? {
                    match more {
                        Message::Response(AdminResponse::Nodes(page)) => nodes.extend(page),
                        other => bail!("unexpected {} in a node listing", other.kind()),
                    }
                }
                Some(Message::Response(AdminResponse::Nodes(nodes)))
            }
            other => other,
        };
        conn.close(close::DONE.into(), b"done");
        Ok::<_, anyhow::Error>(reply)
    };
    let reply = tokio::time::timeout(CALL_TIMEOUT, exchange).await.map_err(|_| {
        anyhow!(
            "no answer from the controller at {remote} within {}s (is it running, and is UDP reachable?)",
            CALL_TIMEOUT.as_secs()
        )
    })??;
    match reply {
        Some(Message::Response(r)) => Ok(r),
        Some(Message::Error(e)) => Err(ServerError(e).into()),
        Some(other) => bail!("unexpected {} from the controller", other.kind()),
        None => bail!("the controller closed the stream without answering"),
    }
}

/// Connects to the controller: its first answer within
/// [`CONNECT_TIMEOUT`], then the rest of the handshake (bounded by the
/// caller).
async fn connect(
    endpoint: &quinn::Endpoint,
    client: quinn::ClientConfig,
    cfg: &ClientConfig,
    remote: SocketAddr,
) -> Result<quinn::Connection> {
    let failed = |e: quinn::ConnectionError| {
        anyhow::Error::new(e).context(format!(
            "connecting to the controller at {} (is it running?)",
            address(cfg, remote)
        ))
    };
    let mut connecting = endpoint.connect_with(client, remote, &cfg.server_name)?;
    // Ready once the controller's first handshake flight has arrived.
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting.handshake_data()).await {
        Err(_) => return Err(unreachable(cfg, remote)),
        Ok(Err(e)) => return Err(failed(e)),
        Ok(Ok(_)) => {}
    }
    connecting.await.map_err(failed)
}

/// `127.0.0.1:7443`, or `ctl.example:7443 (10.0.0.5:7443)` for a name.
fn address(cfg: &ClientConfig, remote: SocketAddr) -> String {
    if cfg.controller == remote.to_string() {
        remote.to_string()
    } else {
        format!("{} ({remote})", cfg.controller)
    }
}

/// No answer to a connection attempt within [`CONNECT_TIMEOUT`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot reach the controller at {address} (no answer within {}s); is it running, and is UDP to it allowed? \
     (the address is `controller` in the outpostctl config: --config FILE or OUTPOST_CONFIG)",
    CONNECT_TIMEOUT.as_secs()
)]
pub struct Unreachable {
    /// `127.0.0.1:7443`, or `ctl.example:7443 (10.0.0.5:7443)`.
    pub address: String,
}

fn unreachable(cfg: &ClientConfig, remote: SocketAddr) -> anyhow::Error {
    Unreachable {
        address: address(cfg, remote),
    }
    .into()
}

/// One call with its own endpoint, as `outpostctl` makes it.
pub async fn call(cfg: &ClientConfig, req: AdminRequest) -> Result<AdminResponse> {
    let remote = resolve(cfg).await?;
    let endpoint = link::client_endpoint(remote)?;
    let result = call_on(&endpoint, cfg, remote, req).await;
    // Waiting for a clean close is for a controller that answered; one
    // that did not would only add the attempt's drain time (about 3 s).
    if !result.as_ref().is_err_and(|e| e.is::<Unreachable>()) {
        endpoint.wait_idle().await;
    }
    result
}

/// Size of the `Data` frames an image push is cut into.
pub const PUSH_CHUNK: usize = 256 * 1024;

async fn open_call(cfg: &ClientConfig) -> Result<(quinn::Endpoint, quinn::Connection, SocketAddr)> {
    let remote = resolve(cfg).await?;
    let endpoint = link::client_endpoint(remote)?;
    let client = quic_config(cfg)?;
    let conn = tokio::time::timeout(CALL_TIMEOUT, connect(&endpoint, client, cfg, remote))
        .await
        .map_err(|_| {
            anyhow!(
                "the controller at {} did not complete the connection within {}s (is it overloaded, or is UDP to it lossy?)",
                address(cfg, remote),
                CALL_TIMEOUT.as_secs()
            )
        })??;
    Ok((endpoint, conn, remote))
}

fn frame_error(e: link::LinkError) -> anyhow::Error {
    match e {
        link::LinkError::Read(quinn::ReadExactError::ReadError(
            quinn::ReadError::ConnectionLost(quinn::ConnectionError::ApplicationClosed(c)),
        )) => anyhow!(
            "controller closed the connection: {}",
            String::from_utf8_lossy(&c.reason)
        ),
        e => e.into(),
    }
}

/// A streamed call read one response at a time (`get -w`, `logs -f`):
/// no overall timeout, it runs until the stream ends or the caller closes
/// it.
pub struct Stream {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    recv: quinn::RecvStream,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("remote", &self.conn.remote_address())
            .finish()
    }
}

impl Stream {
    /// Connects and sends `req`.
    pub async fn open(cfg: &ClientConfig, req: AdminRequest) -> Result<Stream> {
        let (endpoint, conn, _) = open_call(cfg).await?;
        let opened = async {
            let (mut send, recv) = conn.open_bi().await?;
            write_frame(&mut send, &Message::Request(req)).await?;
            send.finish()?;
            Ok::<_, anyhow::Error>(recv)
        }
        .await;
        match opened {
            Ok(recv) => Ok(Stream {
                endpoint,
                conn,
                recv,
            }),
            Err(e) => {
                conn.close(close::DONE.into(), b"done");
                endpoint.wait_idle().await;
                Err(e)
            }
        }
    }

    /// The next response; `None` once the controller ended the stream.
    pub async fn next(&mut self) -> Result<Option<AdminResponse>> {
        match read_frame(&mut self.recv, MAX_FRAME)
            .await
            .map_err(frame_error)?
        {
            None => Ok(None),
            Some(Message::Response(r)) => Ok(Some(r)),
            Some(Message::Error(e)) => Err(ServerError(e).into()),
            Some(other) => bail!("unexpected {} from the controller", other.kind()),
        }
    }

    /// Hangs up (the controller stops sending) and waits for the close.
    pub async fn close(self) {
        self.conn.close(close::DONE.into(), b"done");
        self.endpoint.wait_idle().await;
    }
}

/// A streamed call (`logs`): sends `req` and hands every response frame to
/// `each` until the stream ends. No overall timeout: `logs -f` runs until
/// the container stops or the caller is interrupted.
pub async fn stream(
    cfg: &ClientConfig,
    req: AdminRequest,
    mut each: impl FnMut(AdminResponse) -> Result<()>,
) -> Result<()> {
    let mut s = Stream::open(cfg, req).await?;
    let result = async {
        while let Some(r) = s.next().await? {
            each(r)?;
        }
        Ok(())
    }
    .await;
    s.close().await;
    result
}

/// Pushes `size` bytes from `file` as an image tarball to a node or a site;
/// `each` sees every progress frame. Memory stays at one chunk.
pub async fn push_image(
    cfg: &ClientConfig,
    mut file: impl tokio::io::AsyncRead + Unpin,
    size: u64,
    name: String,
    node: Option<String>,
    site: Option<String>,
    mut each: impl FnMut(&outpost_proto::Progress),
) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let (endpoint, conn, _) = open_call(cfg).await?;
    let result = async {
        let (mut send, mut recv) = conn.open_bi().await?;
        write_frame(
            &mut send,
            &Message::Request(AdminRequest::PushImage {
                node,
                site,
                size,
                name,
            }),
        )
        .await?;
        // Progress frames are read concurrently with the upload.
        let reader = async {
            let mut failed = Vec::new();
            loop {
                match read_frame(&mut recv, MAX_FRAME).await.map_err(frame_error)? {
                    None => return Ok::<_, anyhow::Error>(failed),
                    Some(Message::Response(AdminResponse::Progress(p))) => {
                        if let Some(e) = &p.error {
                            failed.push(format!("{}: {e}", p.node));
                        }
                        each(&p);
                    }
                    Some(Message::Error(e)) => return Err(ServerError(e).into()),
                    Some(other) => bail!("unexpected {} from the controller", other.kind()),
                }
            }
        };
        let writer = async {
            let mut buf = vec![0u8; PUSH_CHUNK];
            let mut sent = 0u64;
            while sent < size {
                let want = usize::try_from((size - sent).min(PUSH_CHUNK as u64)).unwrap_or(PUSH_CHUNK);
                let n = file.read(&mut buf[..want]).await?;
                if n == 0 {
                    bail!("the file ended after {sent} of {size} bytes (was it changed while pushing?)");
                }
                sent += n as u64;
                if write_frame(&mut send, &Message::Data(buf[..n].to_vec())).await.is_err() {
                    // The controller stopped reading: its answer says why.
                    return Ok(());
                }
            }
            let _ = send.finish();
            Ok(())
        };
        let (failed, written) = tokio::join!(reader, writer);
        written?;
        let failed = failed?;
        if !failed.is_empty() {
            bail!("image push failed on {} node(s):\n  {}", failed.len(), failed.join("\n  "));
        }
        Ok(())
    }
    .await;
    conn.close(close::DONE.into(), b"done");
    endpoint.wait_idle().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clientconfig::cert_pem;
    use std::time::{Instant, SystemTime};

    fn config(controller: String) -> ClientConfig {
        let now = SystemTime::now();
        let (ca, _) = crate::pki::Ca::generate("test", now).unwrap();
        let (admin, key) = ca
            .issue_admin("admin", now, Duration::from_secs(3600))
            .unwrap();
        ClientConfig {
            controller,
            server_name: "localhost".into(),
            ca: cert_pem(ca.cert_der()),
            cert: cert_pem(&admin.cert_der),
            key,
        }
    }

    /// A controller that is down is reported within about 2 s, not after
    /// the 15 s call timeout: a UDP port kept bound but never answering
    /// (a controller that hangs, or a firewall dropping UDP), and a port
    /// with nothing bound (a controller that is not running).
    #[tokio::test]
    async fn a_controller_that_does_not_answer_is_reported_within_2s() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let closed = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        for addr in [silent.local_addr().unwrap(), closed] {
            let cfg = config(addr.to_string());
            let t = Instant::now();
            let e = call(&cfg, AdminRequest::ListNodes).await.unwrap_err();
            let took = t.elapsed();
            eprintln!("{addr}: refused in {took:?}: {e:#}");
            assert_eq!(
                format!("{e:#}"),
                format!(
                    "cannot reach the controller at {addr} (no answer within 2s); is it running, and is UDP to it allowed? \
                     (the address is `controller` in the outpostctl config: --config FILE or OUTPOST_CONFIG)"
                )
            );
            assert!(e.is::<Unreachable>(), "{e:#}");
            assert!(took < CALL_TIMEOUT, "{took:?}");
            // Streamed calls have the same bound.
            let e = Stream::open(&cfg, AdminRequest::ListNodes)
                .await
                .unwrap_err();
            assert!(
                e.to_string().starts_with("cannot reach the controller"),
                "{e:#}"
            );
        }
        drop(silent);
    }

    /// The connect bound is on the first answer only: a controller that
    /// takes longer than it to answer the call itself is waited for.
    #[tokio::test]
    async fn a_slow_answer_after_connecting_is_waited_for() {
        let now = SystemTime::now();
        let (ca, _) = crate::pki::Ca::generate("test", now).unwrap();
        let (server, server_key) = ca
            .issue_server(&["localhost".into()], now, Duration::from_secs(3600))
            .unwrap();
        let server_config = link::server_config(
            vec![server.cert_der.clone().into()],
            rustls::pki_types::PrivateKeyDer::try_from(
                pem_der(&server_key, "PRIVATE KEY").unwrap(),
            )
            .unwrap(),
            ca.cert_der().clone(),
            link::transport(CALL_TIMEOUT, 4),
        )
        .unwrap();
        let endpoint =
            quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let slow = CONNECT_TIMEOUT + Duration::from_millis(500);
        let serve = tokio::spawn(async move {
            let conn = endpoint.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let req = read_frame(&mut recv, MAX_FRAME).await.unwrap();
            assert!(matches!(
                req,
                Some(Message::Request(AdminRequest::ListTokens))
            ));
            tokio::time::sleep(slow).await;
            let done = AdminResponse::Done {
                message: "answered late".into(),
            };
            write_frame(&mut send, &Message::Response(done))
                .await
                .unwrap();
            send.finish().unwrap();
            conn.closed().await;
        });
        let mut cfg = config(addr.to_string());
        cfg.ca = cert_pem(ca.cert_der());
        let (admin, key) = ca
            .issue_admin("admin", now, Duration::from_secs(3600))
            .unwrap();
        cfg.cert = cert_pem(&admin.cert_der);
        cfg.key = key;
        let t = Instant::now();
        let r = call(&cfg, AdminRequest::ListTokens).await.unwrap();
        assert_eq!(
            r,
            AdminResponse::Done {
                message: "answered late".into()
            }
        );
        assert!(t.elapsed() >= slow, "{:?}", t.elapsed());
        serve.await.unwrap();
    }

    #[test]
    fn an_older_controller_is_named_as_the_reason() {
        let old = |message: &str| -> anyhow::Error {
            ServerError(ErrorMsg {
                code: outpost_proto::ErrorCode::InvalidRequest,
                message: message.into(),
            })
            .into()
        };
        let e = older_controller(
            old("malformed frame: Found an enum discriminant that was not expected"),
            "outpostctl admin list",
        );
        let s = e
            .chain()
            .find_map(|c| c.downcast_ref::<ServerError>())
            .unwrap();
        assert_eq!(s.0.code, outpost_proto::ErrorCode::VersionMismatch);
        assert!(
            s.0.message
                .contains("does not support `outpostctl admin list`"),
            "{}",
            s.0.message
        );
        let other = older_controller(old("--ttl must be more than 0s"), "x");
        assert_eq!(other.to_string(), "--ttl must be more than 0s");
    }

    #[test]
    fn a_named_controller_is_shown_with_its_address() {
        let addr: SocketAddr = "10.0.0.5:7443".parse().unwrap();
        let e = unreachable(&config("ctl.example:7443".into()), addr).to_string();
        assert!(
            e.starts_with("cannot reach the controller at ctl.example:7443 (10.0.0.5:7443) (no answer within 2s)"),
            "{e}"
        );
    }
}
