//! The thin I/O layer both sides share: frames over quinn streams and the
//! TLS/QUIC configurations.
//!
//! TLS policy lives here so it cannot drift between the agent, the controller
//! and `outpostctl`: TLS 1.3 only (QUIC requires it), ring provider only, ALPN
//! `outpost/1`, no session resumption or 0-RTT anywhere (a revoked identity
//! must meet a full handshake on its next connection).

use crate::frame::{self, FrameError, HEADER_LEN};
use crate::Message;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;
use std::time::Duration;

/// Failure moving a frame.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("reading from peer: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error("writing to peer: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream closed by peer")]
    Closed(#[from] quinn::ClosedStream),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("no complete frame within {}s", .0.as_secs())]
    TimedOut(Duration),
    #[error("the controller is busy reading {in_flight_kib} KiB of other large requests; retry this {len}-byte one in a few seconds")]
    Busy { len: usize, in_flight_kib: usize },
}

/// Payload bytes read before the buffer grows: a frame's buffer follows
/// the bytes that arrived, not the length its header announced, so a peer
/// that announces 1 MiB and sends a trickle holds a trickle.
const READ_CHUNK: usize = 64 * 1024;

/// One budget for the payload bytes of large frames being read at once,
/// shared by every stream that reads through it (the controller's
/// operator streams): a frame over [`FrameBudget::SMALL`] holds its length
/// from the budget until it is decoded. Frames up to `SMALL` (every call
/// but an apply of a big manifest) never wait for it.
#[derive(Debug)]
pub struct FrameBudget {
    kib: tokio::sync::Semaphore,
    total_kib: usize,
}

impl FrameBudget {
    /// Frames this small bypass the budget.
    pub const SMALL: usize = 64 * 1024;

    pub fn new(bytes: usize) -> FrameBudget {
        let total_kib = bytes / 1024;
        FrameBudget {
            kib: tokio::sync::Semaphore::new(total_kib),
            total_kib,
        }
    }

    /// KiB of large frames being read now.
    pub fn in_flight_kib(&self) -> usize {
        self.total_kib - self.kib.available_permits()
    }
}

/// Reads one frame as [`read_frame`] does, all of it within `within`, a
/// frame over [`FrameBudget::SMALL`] only if `budget` has room for it
/// (else [`LinkError::Busy`] at once: a waiting request would hold its
/// stream for nothing).
pub async fn read_frame_budgeted(
    recv: &mut quinn::RecvStream,
    max: usize,
    budget: &FrameBudget,
    within: Duration,
) -> Result<Option<Message>, LinkError> {
    let read = async {
        let Some(len) = read_header(recv, max).await? else {
            return Ok(None);
        };
        let _held = if len > FrameBudget::SMALL {
            let kib = u32::try_from(len.div_ceil(1024)).unwrap_or(u32::MAX);
            Some(
                budget
                    .kib
                    .try_acquire_many(kib)
                    .map_err(|_| LinkError::Busy {
                        len,
                        in_flight_kib: budget.in_flight_kib(),
                    })?,
            )
        } else {
            None
        };
        let payload = read_payload(recv, len).await?;
        Ok(Some(frame::decode(&payload)?))
    };
    tokio::time::timeout(within, read)
        .await
        .map_err(|_| LinkError::TimedOut(within))?
}

/// A frame header's payload length; `None` when the stream finished
/// cleanly before it.
async fn read_header(recv: &mut quinn::RecvStream, max: usize) -> Result<Option<usize>, LinkError> {
    let mut header = [0u8; HEADER_LEN];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    Ok(Some(frame::payload_len(header, max)?))
}

/// `len` payload bytes, the buffer growing with what arrives.
async fn read_payload(recv: &mut quinn::RecvStream, len: usize) -> Result<Vec<u8>, LinkError> {
    let mut payload = Vec::with_capacity(len.min(READ_CHUNK));
    while payload.len() < len {
        let want = (len - payload.len()).min(READ_CHUNK);
        match recv
            .read_chunk(want, true)
            .await
            .map_err(quinn::ReadExactError::ReadError)?
        {
            Some(chunk) => payload.extend_from_slice(&chunk.bytes),
            None => return Err(quinn::ReadExactError::FinishedEarly(payload.len()).into()),
        }
    }
    Ok(payload)
}

/// Reads frames one after the other from one stream, keeping its progress
/// in itself, so that [`FrameReader::next`] is cancel-safe: a `next`
/// future dropped before it is ready (the losing branch of a `select!`)
/// loses no byte, and the next call goes on where it stopped. It waits
/// only on quinn reads that complete as soon as any bytes arrive, and
/// records what each brought before it waits again.
///
/// This is what lets a session read its peer's frames in the same loop
/// that sends to it, without a task and a channel per connection between
/// the two. Between frames it holds no heap memory; during one, a buffer
/// that grows with the bytes that arrived, as [`read_frame`]'s does.
#[derive(Debug, Default)]
pub struct FrameReader {
    header: [u8; HEADER_LEN],
    /// Header bytes read so far.
    have: usize,
    /// The current frame's payload length, once its header is complete.
    len: Option<usize>,
    payload: Vec<u8>,
}

impl FrameReader {
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    /// The next frame of at most `max` payload bytes; `Ok(None)` when the
    /// peer finished the stream cleanly between frames.
    pub async fn next(
        &mut self,
        recv: &mut quinn::RecvStream,
        max: usize,
    ) -> Result<Option<Message>, LinkError> {
        let len = loop {
            if let Some(len) = self.len {
                break len;
            }
            let read = recv
                .read(&mut self.header[self.have..])
                .await
                .map_err(quinn::ReadExactError::ReadError)?;
            match read {
                Some(n) => {
                    self.have += n;
                    if self.have == HEADER_LEN {
                        let len = frame::payload_len(self.header, max)?;
                        self.len = Some(len);
                        self.payload = Vec::with_capacity(len.min(READ_CHUNK));
                    }
                }
                None if self.have == 0 => return Ok(None),
                None => return Err(quinn::ReadExactError::FinishedEarly(self.have).into()),
            }
        };
        while self.payload.len() < len {
            let want = (len - self.payload.len()).min(READ_CHUNK);
            let chunk = recv
                .read_chunk(want, true)
                .await
                .map_err(quinn::ReadExactError::ReadError)?;
            match chunk {
                Some(chunk) => self.payload.extend_from_slice(&chunk.bytes),
                None => {
                    return Err(quinn::ReadExactError::FinishedEarly(
                        HEADER_LEN + self.payload.len(),
                    )
                    .into())
                }
            }
        }
        let payload = std::mem::take(&mut self.payload);
        self.have = 0;
        self.len = None;
        Ok(Some(frame::decode(&payload)?))
    }
}

/// Writes one frame.
pub async fn write_frame(send: &mut quinn::SendStream, msg: &Message) -> Result<(), LinkError> {
    let bytes = frame::encode(msg)?;
    send.write_all(&bytes).await?;
    Ok(())
}

/// Reads one frame of at most `max` payload bytes. `Ok(None)` means the peer
/// finished the stream cleanly between frames.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<Option<Message>, LinkError> {
    let Some(len) = read_header(recv, max).await? else {
        return Ok(None);
    };
    let payload = read_payload(recv, len).await?;
    Ok(Some(frame::decode(&payload)?))
}

/// `sha256:HEX` of a DER certificate: the CA pin operators pass as `--ca-hash`.
pub fn cert_hash(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The only crypto provider Outpost uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client endpoint on an ephemeral UDP port of `remote`'s address family.
pub fn client_endpoint(remote: std::net::SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let bind = if remote.is_ipv6() {
        std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    } else {
        std::net::SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
    };
    quinn::Endpoint::client(bind)
}

/// QUIC transport settings. `idle` is how long a silent peer is tolerated;
/// keep-alives go out at a third of it so one lost packet does not kill a
/// healthy link, and a dead one is noticed on both sides within `idle`.
pub fn transport(idle: Duration, max_bidi_streams: u32) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(quinn::IdleTimeout::try_from(idle).ok());
    t.keep_alive_interval(Some(idle / 3));
    t.max_concurrent_bidi_streams(max_bidi_streams.into());
    t.max_concurrent_uni_streams(0u32.into());
    // Windows sized for control traffic: a full frame fits in one stream
    // window, and a peer cannot make us buffer much more than that.
    let frame_window = u32::try_from(frame::MAX_FRAME + HEADER_LEN).unwrap_or(u32::MAX);
    t.stream_receive_window(frame_window.into());
    t.receive_window((frame_window * 2).into());
    t.send_window(u64::from(frame_window) * 2);
    // No segmentation offload: with it, every connection keeps a send
    // buffer of up to ten datagrams (about 13 KiB), the largest single part
    // of the controller's memory per connected agent, for traffic
    // (heartbeats, reports) that never fills more than a datagram or two at
    // a time. Bulk transfers (image pushes) pay one send call per datagram.
    t.enable_segmentation_offload(false);
    t
}

/// Errors building TLS configurations from certificate material.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("QUIC crypto configuration: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// Server side: one endpoint for agents, operators and enrolment. Client
/// certificates chaining to `ca` are verified by TLS; connections without one
/// are allowed through TLS so they can enrol, and the application refuses
/// every other call on them.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ca: CertificateDer<'static>,
    transport: quinn::TransportConfig,
) -> Result<quinn::ServerConfig, TlsSetupError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    roots.add(ca)?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![crate::ALPN.to_vec()];
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    tls.max_early_data_size = 0;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}

fn client_tls(
    builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>,
    verifier: Arc<dyn ServerCertVerifier>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    transport: quinn::TransportConfig,
) -> Result<quinn::ClientConfig, TlsSetupError> {
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut tls = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![crate::ALPN.to_vec()];
    tls.resumption = rustls::client::Resumption::disabled();
    tls.enable_early_data = false;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}

/// Verifies a server certificate at `now`, or, when it is not valid yet by
/// this box's clock, at its `notBefore`. Boxes without a battery-backed
/// clock boot in the past (days, or 1970), and a controller certificate
/// issued since would lock them out until NTP comes up, which may need the
/// very link that fails. Trust still rests on the CA (the pinned hash at
/// enrolment, the saved CA after) and on every other check; a clock behind
/// a certificate's `notBefore` could not judge its expiry either, so
/// nothing a correct clock would catch is given up beyond that. The agent
/// learns the controller's time in the session's welcome and reports its
/// skew.
fn verify_despite_a_slow_clock(
    now: UnixTime,
    verify: impl Fn(UnixTime) -> Result<ServerCertVerified, rustls::Error>,
) -> Result<ServerCertVerified, rustls::Error> {
    match verify(now) {
        Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidYetContext {
            not_before,
            ..
        })) => verify(not_before),
        other => other,
    }
}

/// The CA-rooted verifier with [`verify_despite_a_slow_clock`].
#[derive(Debug)]
struct SlowClockTolerant(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for SlowClockTolerant {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify_despite_a_slow_clock(now, |at| {
            self.0
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, at)
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Client side with a known CA and, for agents and operators, a client
/// certificate. A server certificate not valid yet by this box's clock is
/// accepted (see `verify_despite_a_slow_clock`).
pub fn client_config(
    ca: CertificateDer<'static>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    transport: quinn::TransportConfig,
) -> Result<quinn::ClientConfig, TlsSetupError> {
    client_config_at(
        ca,
        identity,
        transport,
        Arc::new(rustls::time_provider::DefaultTimeProvider),
    )
}

/// [`client_config`], judging certificate validity at the time `clock`
/// says (the agent's: never below the floor learnt from the controller).
pub fn client_config_at(
    ca: CertificateDer<'static>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    transport: quinn::TransportConfig,
    clock: Arc<dyn rustls::time_provider::TimeProvider>,
) -> Result<quinn::ClientConfig, TlsSetupError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    roots.add(ca)?;
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| rustls::Error::General(e.to_string()))?;
    let builder = rustls::ClientConfig::builder_with_details(provider, clock)
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    client_tls(
        builder,
        Arc::new(SlowClockTolerant(verifier)),
        identity,
        transport,
    )
}

/// Client side for enrolment: the CA is not known yet, only its hash. The
/// controller must present a chain holding a CA certificate with that hash,
/// and its server certificate must verify against that CA (as `kubeadm join
/// --discovery-token-ca-cert-hash` does).
pub fn enrol_client_config(
    ca_hash: &str,
    transport: quinn::TransportConfig,
) -> Result<quinn::ClientConfig, TlsSetupError> {
    enrol_client_config_at(
        ca_hash,
        transport,
        Arc::new(rustls::time_provider::DefaultTimeProvider),
    )
}

/// [`enrol_client_config`], judging certificate validity at the time
/// `clock` says.
pub fn enrol_client_config_at(
    ca_hash: &str,
    transport: quinn::TransportConfig,
    clock: Arc<dyn rustls::time_provider::TimeProvider>,
) -> Result<quinn::ClientConfig, TlsSetupError> {
    let provider = provider();
    let verifier = Arc::new(PinnedCa {
        pin: ca_hash.to_ascii_lowercase(),
        provider: provider.clone(),
    });
    let builder = rustls::ClientConfig::builder_with_details(provider, clock)
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    client_tls(builder, verifier, None, transport)
}

#[derive(Debug)]
struct PinnedCa {
    pin: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| cert_hash(c) == self.pin) else {
            let seen: Vec<String> = intermediates.iter().map(|c| cert_hash(c)).collect();
            return Err(rustls::Error::General(format!(
                "the controller's CA does not match --ca-hash {} (it presented {}); \
                 check the hash printed by `outpostctl token create`",
                self.pin,
                if seen.is_empty() {
                    "no CA certificate".to_string()
                } else {
                    seen.join(", ")
                }
            )));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        verify_despite_a_slow_clock(now, |at| {
            inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, at)
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Loopback TLS for this crate's QUIC tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A server configuration for `localhost` under a throwaway CA, and a
    /// client configuration that trusts that CA.
    pub(crate) fn configs() -> (quinn::ServerConfig, quinn::ClientConfig) {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("leaf");
        let t = || transport(Duration::from_secs(10), 4);
        let server = server_config(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            ca.der().clone(),
            t(),
        )
        .expect("server config");
        let client = client_config(ca.der().clone(), None, t()).expect("client config");
        (server, client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_yet(nb: u64) -> rustls::Error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidYetContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(1)),
            not_before: UnixTime::since_unix_epoch(Duration::from_secs(nb)),
        })
    }

    /// A certificate valid from `nb` to `na` (seconds).
    fn cert(nb: u64, na: u64) -> impl Fn(UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        move |at: UnixTime| {
            let t = at.as_secs();
            if t < nb {
                Err(not_yet(nb))
            } else if t > na {
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Expired,
                ))
            } else {
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn at(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(secs))
    }

    /// A server and a client endpoint on loopback with a throwaway CA, and
    /// one connection between them.
    async fn pair() -> (
        quinn::Endpoint,
        quinn::Endpoint,
        quinn::Connection,
        quinn::Connection,
    ) {
        let (server, client_cfg) = testing::configs();
        let server = quinn::Endpoint::server(server, ([127, 0, 0, 1], 0).into()).expect("bind");
        let mut client = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).expect("bind");
        client.set_default_client_config(client_cfg);
        let addr = server.local_addr().expect("addr");
        let (c, s) = tokio::join!(
            async {
                client
                    .connect(addr, "localhost")
                    .expect("connect")
                    .await
                    .expect("handshake")
            },
            async {
                server
                    .accept()
                    .await
                    .expect("incoming")
                    .await
                    .expect("accept")
            }
        );
        (server, client, c, s)
    }

    #[tokio::test]
    async fn a_frame_reader_dropped_mid_frame_loses_nothing() {
        let (_se, _ce, client, server) = pair().await;
        let (mut send, _r) = client.open_bi().await.expect("stream");
        let first = Message::Heartbeat(crate::Heartbeat { seq: 7 });
        let second = Message::Heartbeat(crate::Heartbeat { seq: 8 });
        let mut bytes = frame::encode(&first).expect("encode");
        bytes.extend(frame::encode(&second).expect("encode"));
        // Two bytes (half a header) open the stream on the server side.
        send.write_all(&bytes[..2]).await.expect("write");
        let (_s, mut recv) = server.accept_bi().await.expect("accept");
        let mut reader = FrameReader::new();
        // Every cut point: the read is dropped whenever it has to wait,
        // then one more byte arrives.
        let mut got = Vec::new();
        let mut sent = 2;
        while got.len() < 2 {
            tokio::select! {
                m = reader.next(&mut recv, 1024) => got.push(m.expect("frame").expect("not finished")),
                () = tokio::time::sleep(Duration::from_millis(5)) => {
                    assert!(sent < bytes.len(), "every byte sent, {} frames read", got.len());
                    send.write_all(&bytes[sent..sent + 1]).await.expect("write");
                    sent += 1;
                }
            }
        }
        assert_eq!(got, vec![first, second]);
        assert_eq!(sent, bytes.len());
        // Between frames: nothing held, and a clean finish is the end.
        assert_eq!(reader.payload.capacity(), 0);
        send.finish().expect("finish");
        assert!(reader
            .next(&mut recv, 1024)
            .await
            .expect("clean end")
            .is_none());
    }

    #[tokio::test]
    async fn a_frame_reader_refuses_a_frame_over_its_bound_and_a_cut_frame() {
        let (_se, _ce, client, server) = pair().await;
        let big = Message::Heartbeat(crate::Heartbeat { seq: u64::MAX });
        let bytes = frame::encode(&big).expect("encode");
        let (mut send, _r) = client.open_bi().await.expect("stream");
        send.write_all(&bytes).await.expect("write");
        let (_s, mut recv) = server.accept_bi().await.expect("accept");
        let e = FrameReader::new().next(&mut recv, 1).await.unwrap_err();
        assert!(matches!(e, LinkError::Frame(_)), "{e}");
        // A stream finished inside a frame is an error, not the end.
        let (mut send, _r) = client.open_bi().await.expect("stream");
        send.write_all(&bytes[..bytes.len() - 1])
            .await
            .expect("write");
        send.finish().expect("finish");
        let (_s, mut recv) = server.accept_bi().await.expect("accept");
        let e = FrameReader::new().next(&mut recv, 1024).await.unwrap_err();
        assert!(
            matches!(e, LinkError::Read(quinn::ReadExactError::FinishedEarly(_))),
            "{e}"
        );
    }

    #[test]
    fn a_clock_behind_not_before_is_tolerated_an_expired_certificate_is_not() {
        // Two days behind a certificate issued an hour ago.
        assert!(verify_despite_a_slow_clock(at(1_000), cert(173_800, 10_000_000)).is_ok());
        // A box booted at 1970.
        assert!(verify_despite_a_slow_clock(at(0), cert(173_800, 10_000_000)).is_ok());
        assert!(verify_despite_a_slow_clock(at(200_000), cert(173_800, 10_000_000)).is_ok());
        let expired = verify_despite_a_slow_clock(at(20_000_000), cert(173_800, 10_000_000));
        assert!(
            matches!(
                expired,
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Expired
                ))
            ),
            "{expired:?}"
        );
        // Any other failure stands.
        let bad = verify_despite_a_slow_clock(at(1), |_| {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        });
        assert!(bad.is_err());
    }
}
