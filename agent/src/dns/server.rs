//! The resolver on sockets: a thin loop around [`answer`].
//!
//! ```text
//!  pod --UDP--> udp loop --answer()--> Respond ------------------> pod
//!                  |                   Forward: new id, pending table
//!                  |                      |  --UDP--> node resolver
//!                  |   upstream replies <-+  (id + source + question
//!                  |                          must match) --------> pod
//!                  |   sweeper: past the deadline -> SERVFAIL ----> pod
//!  pod --TCP--> one task per connection: answer(), or forward over
//!               TCP on a fresh connection to the node resolver
//! ```
//!
//! Everything is bounded: at most [`MAX_INFLIGHT_FORWARDS`] forwards at once
//! (UDP and TCP together; a query past that is dropped and counted, the
//! client retries), [`MAX_TCP_CONNECTIONS`] TCP clients (others are closed
//! at once), [`TCP_MAX_QUERIES`] queries per connection, an idle timeout per
//! connection, a deadline per forward, queries of at most
//! [`MAX_QUERY_LEN`] bytes. Forwarded queries leave under a random id
//! (with the socket's random source port, the RFC 5452 defences), and an
//! answer is taken only from the upstream the query went to, under that id,
//! for the same question.
//!
//! Memory is bounded the same way: a pending forward holds its question
//! (at most 255 bytes of name) and a few addresses, so a full table of 150
//! stays under 64 KiB; the receive buffers are one query (1,233 bytes) for
//! the UDP socket and 64 KiB per upstream address family (an upstream
//! answers within the client's own EDNS size, up to 65,535); a TCP
//! connection holds one query and one answer at a time.
//!
//! A forward that times out moves the preferred upstream to the next one,
//! as a stub resolver moves down its nameserver list. Counters are plain
//! atomics in [`DnsStats`] for `/metrics`. Dropping the [`serve`] future
//! stops everything, TCP connection tasks included.

use super::answer::{answer, failure, Reply, ResolverConfig, Transport, MAX_QUERY_LEN};
use super::wire::{rcode, response_question, Query};
use crate::services::ServiceTable;
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

/// Deadline of one forward. Below the 5 s a glibc stub waits per try
/// (`RES_TIMEOUT`, resolv.conf(5)) and the 2.5 s after which musl resends,
/// so the pod gets our SERVFAIL before it gives up or repeats itself.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// Forwards in flight at once: dnsmasq's default `dns-forward-max` (150),
/// ample for the pods of one small box; each costs one table entry.
pub const MAX_INFLIGHT_FORWARDS: usize = 150;
/// TCP clients at once: dnsmasq's `MAX_PROCS` (20). TCP only follows a
/// truncated UDP answer, so few are ever open.
pub const MAX_TCP_CONNECTIONS: usize = 20;
/// Queries per TCP connection: dnsmasq's `TCP_MAX_QUERIES` (100).
pub const TCP_MAX_QUERIES: usize = 100;
/// A TCP connection with no query for this long is closed: miekg/dns's
/// (CoreDNS's) server default of 8 s; RFC 7766 6.2.3 asks for seconds.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(8);
/// Pause after a failed `accept` (out of file descriptors, say) so the loop
/// does not spin while UDP keeps serving.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Receive buffer for upstream answers: the largest UDP payload, because a
/// client's EDNS size reaches the upstream unchanged.
const UPSTREAM_RECV_BUF: usize = 65_535;
/// Random draws for a free forward id before giving up; with at most 150 of
/// 65,536 ids taken, 16 misses in a row do not happen.
const ID_DRAWS: usize = 16;

/// Counters for `/metrics`; every field only grows.
#[derive(Debug, Default)]
pub struct DnsStats {
    /// Messages received from clients (UDP datagrams and TCP messages).
    pub queries: AtomicU64,
    /// Responses written without asking upstream (cluster names, and error
    /// answers to malformed, oversized or unsupported queries).
    pub answered_locally: AtomicU64,
    /// Queries sent to an upstream.
    pub forwarded: AtomicU64,
    /// Forwards that ended in SERVFAIL (timeout, send error, no upstream,
    /// unusable answer).
    pub failures: AtomicU64,
    /// Queries dropped unanswered because the forward table was full, and
    /// TCP connections closed because too many were open.
    pub dropped: AtomicU64,
    /// Messages that could not be answered at all (shorter than a header,
    /// responses, oversized TCP frames).
    pub ignored: AtomicU64,
}

/// A copy of [`DnsStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsStatsSnapshot {
    pub queries: u64,
    pub answered_locally: u64,
    pub forwarded: u64,
    pub failures: u64,
    pub dropped: u64,
    pub ignored: u64,
}

impl DnsStats {
    pub fn snapshot(&self) -> DnsStatsSnapshot {
        DnsStatsSnapshot {
            queries: self.queries.load(Relaxed),
            answered_locally: self.answered_locally.load(Relaxed),
            forwarded: self.forwarded.load(Relaxed),
            failures: self.failures.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            ignored: self.ignored.load(Relaxed),
        }
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
}

/// Settings of [`serve`]; `Default` gives the documented constants.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub resolver: ResolverConfig,
    pub forward_timeout: Duration,
    pub max_inflight: usize,
    pub max_tcp_connections: usize,
    pub tcp_idle_timeout: Duration,
    /// Where the counters go; keep a clone to read them.
    pub stats: Arc<DnsStats>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            resolver: ResolverConfig::default(),
            forward_timeout: FORWARD_TIMEOUT,
            max_inflight: MAX_INFLIGHT_FORWARDS,
            max_tcp_connections: MAX_TCP_CONNECTIONS,
            tcp_idle_timeout: TCP_IDLE_TIMEOUT,
            stats: Arc::default(),
        }
    }
}

/// Why the resolver stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("opening a UDP socket for queries to the node's resolvers ({addr}): {source}")]
    UpstreamSocket { addr: SocketAddr, source: io::Error },
    #[error("the resolver's UDP socket failed: {0}")]
    Udp(io::Error),
    #[error("the socket for queries to the node's resolvers failed: {0}")]
    Upstream(io::Error),
}

/// Serves DNS on `udp` (and `tcp`), answering from the current table of
/// `table` and forwarding other names to `upstreams` (see
/// [`super::resolv::upstreams`]). Runs until a socket fails; drop the future
/// to stop it.
pub async fn serve(
    udp: UdpSocket,
    tcp: Option<TcpListener>,
    table: watch::Receiver<Arc<ServiceTable>>,
    upstreams: Vec<SocketAddr>,
    opts: ServeOptions,
) -> Result<(), ServeError> {
    let own = udp.local_addr().ok();
    let upstreams: Vec<SocketAddr> = upstreams.into_iter().filter(|u| Some(*u) != own).collect();
    let bind = |want: bool, any: SocketAddr| async move {
        if !want {
            return Ok(None);
        }
        UdpSocket::bind(any)
            .await
            .map(Some)
            .map_err(|source| ServeError::UpstreamSocket { addr: any, source })
    };
    let v4 = bind(
        upstreams.iter().any(SocketAddr::is_ipv4),
        (Ipv4Addr::UNSPECIFIED, 0).into(),
    )
    .await?;
    let v6 = bind(
        upstreams.iter().any(SocketAddr::is_ipv6),
        (Ipv6Addr::UNSPECIFIED, 0).into(),
    )
    .await?;
    let shared = Arc::new(Shared {
        table,
        permits: Arc::new(Semaphore::new(opts.max_inflight)),
        opts,
        upstreams,
        preferred: AtomicUsize::new(0),
        v4,
        v6,
        pending: Mutex::new(HashMap::new()),
        wake: Notify::new(),
    });
    let tcp_loop = async {
        match tcp {
            Some(listener) => Arc::clone(&shared).tcp_accept(listener).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = shared.udp_queries(&udp) => r,
        r = shared.upstream_replies(&udp, shared.v4.as_ref()) => r,
        r = shared.upstream_replies(&udp, shared.v6.as_ref()) => r,
        r = shared.expire(&udp) => r,
        r = tcp_loop => r,
    }
}

/// A UDP query waiting for its upstream answer.
struct Pending {
    client: SocketAddr,
    query: Query,
    upstream: SocketAddr,
    deadline: Instant,
    _permit: OwnedSemaphorePermit,
}

struct Shared {
    table: watch::Receiver<Arc<ServiceTable>>,
    opts: ServeOptions,
    permits: Arc<Semaphore>,
    upstreams: Vec<SocketAddr>,
    /// Index (modulo the count) of the upstream tried first.
    preferred: AtomicUsize,
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
    /// Forwarded UDP queries by the id they went out under.
    pending: Mutex<HashMap<u16, Pending>>,
    /// Tells the sweeper a new deadline exists.
    wake: Notify,
}

enum TcpForward {
    Answer(Vec<u8>),
    Failed,
    Dropped,
}

impl Shared {
    fn stats(&self) -> &DnsStats {
        &self.opts.stats
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<u16, Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn current_table(&self) -> Arc<ServiceTable> {
        Arc::clone(&self.table.borrow())
    }

    fn preferred_upstream(&self) -> Option<SocketAddr> {
        let n = self.upstreams.len();
        (n > 0).then(|| self.upstreams[self.preferred.load(Relaxed) % n])
    }

    /// After `failed` let a query down, try the next upstream first.
    fn move_on_from(&self, failed: SocketAddr) {
        let n = self.upstreams.len();
        let cur = self.preferred.load(Relaxed);
        if n > 1 && self.upstreams[cur % n] == failed {
            // A concurrent move already did the job when this fails.
            let _ = self
                .preferred
                .compare_exchange(cur, cur.wrapping_add(1), Relaxed, Relaxed);
        }
    }

    async fn udp_queries(&self, udp: &UdpSocket) -> Result<(), ServeError> {
        // One byte more than a query may have, to see oversized ones.
        let mut buf = vec![0u8; MAX_QUERY_LEN + 1];
        loop {
            let (n, client) = match udp.recv_from(&mut buf).await {
                Ok(got) => got,
                Err(e) if transient(&e) => continue,
                Err(e) => return Err(ServeError::Udp(e)),
            };
            DnsStats::bump(&self.stats().queries);
            let table = self.current_table();
            match answer(&buf[..n], Transport::Udp, &table, &self.opts.resolver) {
                Reply::Respond(msg) => {
                    DnsStats::bump(&self.stats().answered_locally);
                    let _ = udp.send_to(&msg, client).await;
                }
                Reply::Ignore => DnsStats::bump(&self.stats().ignored),
                Reply::Forward(query) => self.forward_udp(udp, &buf[..n], query, client).await,
            }
        }
    }

    async fn forward_udp(&self, udp: &UdpSocket, msg: &[u8], query: Query, client: SocketAddr) {
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            DnsStats::bump(&self.stats().dropped);
            return;
        };
        let route = self.preferred_upstream().and_then(|up| {
            let sock = if up.is_ipv4() { &self.v4 } else { &self.v6 };
            sock.as_ref().map(|s| (up, s))
        });
        let Some((upstream, sock)) = route else {
            DnsStats::bump(&self.stats().failures);
            let _ = udp
                .send_to(
                    &failure(&query, rcode::SERVFAIL, &self.opts.resolver),
                    client,
                )
                .await;
            return;
        };
        let id = {
            let mut pending = self.pending();
            let Some(id) = (0..ID_DRAWS)
                .map(|_| rand::random::<u16>())
                .find(|id| !pending.contains_key(id))
            else {
                DnsStats::bump(&self.stats().dropped);
                return;
            };
            pending.insert(
                id,
                Pending {
                    client,
                    query,
                    upstream,
                    deadline: Instant::now() + self.opts.forward_timeout,
                    _permit: permit,
                },
            );
            id
        };
        self.wake.notify_one();
        DnsStats::bump(&self.stats().forwarded);
        let mut out = msg.to_vec();
        out[..2].copy_from_slice(&id.to_be_bytes());
        if sock.send_to(&out, upstream).await.is_err() {
            let gone = self.pending().remove(&id);
            if let Some(p) = gone {
                self.fail(udp, p).await;
            }
        }
    }

    async fn upstream_replies(
        &self,
        udp: &UdpSocket,
        sock: Option<&UdpSocket>,
    ) -> Result<(), ServeError> {
        let Some(sock) = sock else {
            return std::future::pending().await;
        };
        let mut buf = vec![0u8; UPSTREAM_RECV_BUF];
        loop {
            let (n, from) = match sock.recv_from(&mut buf).await {
                Ok(got) => got,
                Err(e) if transient(&e) => continue,
                Err(e) => return Err(ServeError::Upstream(e)),
            };
            let msg = &mut buf[..n];
            let Some((id, question)) = response_question(msg) else {
                continue;
            };
            let found = {
                let mut pending = self.pending();
                match pending.get(&id) {
                    Some(p) if p.upstream == from && p.query.question.matches(&question) => {
                        pending.remove(&id)
                    }
                    // Late, unknown or spoofed: the real answer may still come.
                    _ => None,
                }
            };
            let Some(p) = found else {
                continue;
            };
            msg[..2].copy_from_slice(&p.query.id.to_be_bytes());
            let _ = udp.send_to(msg, p.client).await;
        }
    }

    /// Answers SERVFAIL for every forward past its deadline.
    async fn expire(&self, udp: &UdpSocket) -> Result<(), ServeError> {
        loop {
            let now = Instant::now();
            let (expired, next) = {
                let mut pending = self.pending();
                let ids: Vec<u16> = pending
                    .iter()
                    .filter(|(_, p)| p.deadline <= now)
                    .map(|(id, _)| *id)
                    .collect();
                let expired: Vec<Pending> =
                    ids.iter().filter_map(|id| pending.remove(id)).collect();
                (expired, pending.values().map(|p| p.deadline).min())
            };
            for p in expired {
                self.fail(udp, p).await;
            }
            match next {
                Some(deadline) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => {}
                        _ = self.wake.notified() => {}
                    }
                }
                None => self.wake.notified().await,
            }
        }
    }

    async fn fail(&self, udp: &UdpSocket, p: Pending) {
        DnsStats::bump(&self.stats().failures);
        self.move_on_from(p.upstream);
        let msg = failure(&p.query, rcode::SERVFAIL, &self.opts.resolver);
        let _ = udp.send_to(&msg, p.client).await;
    }

    async fn tcp_accept(self: Arc<Self>, listener: TcpListener) -> Result<(), ServeError> {
        let slots = Arc::new(Semaphore::new(self.opts.max_tcp_connections));
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => match Arc::clone(&slots).try_acquire_owned() {
                        Ok(slot) => {
                            let me = Arc::clone(&self);
                            conns.spawn(async move {
                                me.tcp_connection(stream).await;
                                drop(slot);
                            });
                        }
                        Err(_) => {
                            DnsStats::bump(&self.stats().dropped);
                            drop(stream);
                        }
                    },
                    Err(_) => tokio::time::sleep(ACCEPT_ERROR_PAUSE).await,
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    }

    async fn tcp_connection(&self, mut stream: TcpStream) {
        let idle = self.opts.tcp_idle_timeout;
        let mut buf = Vec::new();
        for _ in 0..TCP_MAX_QUERIES {
            let len = match timeout(idle, stream.read_u16()).await {
                Ok(Ok(len)) => usize::from(len),
                _ => return,
            };
            if len > MAX_QUERY_LEN {
                // Not worth reading; a query is never that large.
                DnsStats::bump(&self.stats().ignored);
                return;
            }
            buf.resize(len, 0);
            if !matches!(timeout(idle, stream.read_exact(&mut buf)).await, Ok(Ok(_))) {
                return;
            }
            DnsStats::bump(&self.stats().queries);
            let table = self.current_table();
            let reply = match answer(&buf, Transport::Tcp, &table, &self.opts.resolver) {
                Reply::Respond(msg) => {
                    DnsStats::bump(&self.stats().answered_locally);
                    msg
                }
                Reply::Ignore => {
                    DnsStats::bump(&self.stats().ignored);
                    continue;
                }
                Reply::Forward(query) => match self.forward_tcp(&buf, &query).await {
                    TcpForward::Answer(msg) => msg,
                    TcpForward::Failed => {
                        DnsStats::bump(&self.stats().failures);
                        failure(&query, rcode::SERVFAIL, &self.opts.resolver)
                    }
                    TcpForward::Dropped => {
                        DnsStats::bump(&self.stats().dropped);
                        return;
                    }
                },
            };
            let Ok(len) = u16::try_from(reply.len()) else {
                return;
            };
            let mut framed = Vec::with_capacity(reply.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&reply);
            if !matches!(timeout(idle, stream.write_all(&framed)).await, Ok(Ok(()))) {
                return;
            }
        }
    }

    /// Sends `msg` over a new TCP connection to the preferred upstream.
    async fn forward_tcp(&self, msg: &[u8], query: &Query) -> TcpForward {
        let Ok(_permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            return TcpForward::Dropped;
        };
        let Some(upstream) = self.preferred_upstream() else {
            return TcpForward::Failed;
        };
        DnsStats::bump(&self.stats().forwarded);
        let id: u16 = rand::random();
        let Ok(len) = u16::try_from(msg.len()) else {
            return TcpForward::Failed;
        };
        let exchange = async {
            let mut conn = TcpStream::connect(upstream).await?;
            let mut out = Vec::with_capacity(msg.len() + 2);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(msg);
            out[2..4].copy_from_slice(&id.to_be_bytes());
            conn.write_all(&out).await?;
            let len = usize::from(conn.read_u16().await?);
            let mut resp = vec![0u8; len];
            conn.read_exact(&mut resp).await?;
            io::Result::Ok(resp)
        };
        match timeout(self.opts.forward_timeout, exchange).await {
            Ok(Ok(mut resp))
                if response_question(&resp)
                    .is_some_and(|(rid, q)| rid == id && q.matches(&query.question)) =>
            {
                resp[..2].copy_from_slice(&query.id.to_be_bytes());
                TcpForward::Answer(resp)
            }
            _ => {
                self.move_on_from(upstream);
                TcpForward::Failed
            }
        }
    }
}

/// Errors a UDP socket reports for one earlier datagram (an ICMP error),
/// after which it keeps working.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::super::answer::tests::fixture;
    use super::super::wire::testing::{parse, query, Parsed};
    use super::super::wire::{parse_query, rtype, Builder, RData, Record, ResponseHead, Section};
    use super::*;
    use crate::services::{Endpoint, Protocol, Service, ServicePort};

    /// Every wait in these tests ends.
    const WAIT: Duration = Duration::from_secs(5);
    /// Address the fake upstream answers with (documentation range; it is
    /// only ever data in an answer, never a destination).
    const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    struct Server {
        udp: SocketAddr,
        tcp: SocketAddr,
        stats: Arc<DnsStats>,
        tables: watch::Sender<Arc<ServiceTable>>,
        task: tokio::task::JoinHandle<Result<(), ServeError>>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn start(upstreams: Vec<SocketAddr>, tweak: impl FnOnce(&mut ServeOptions)) -> Server {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        let (tables, rx) = watch::channel(Arc::new(fixture()));
        let mut opts = ServeOptions::default();
        tweak(&mut opts);
        let stats = Arc::clone(&opts.stats);
        let task = tokio::spawn(serve(udp, Some(tcp), rx, upstreams, opts));
        Server {
            udp: udp_addr,
            tcp: tcp_addr,
            stats,
            tables,
            task,
        }
    }

    /// The fake upstream's answer to `msg`: one A record.
    fn upstream_answer(msg: &[u8]) -> Vec<u8> {
        let q = parse_query(msg, 4096).unwrap();
        let mut b = Builder::new(
            ResponseHead {
                id: q.id,
                query_flags: q.flags,
                authoritative: false,
                rcode: rcode::NOERROR,
                question: Some(&q.question),
            },
            512,
            None,
        );
        assert!(b.push(
            Section::Answer,
            &Record {
                owner: q.question.name.clone(),
                ttl: 300,
                data: RData::A(UPSTREAM_ANSWER),
            }
        ));
        b.finish()
    }

    /// A UDP upstream on loopback that answers every query; it counts them.
    async fn udp_upstream() -> (SocketAddr, Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let seen = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                counter.fetch_add(1, Relaxed);
                let _ = sock.send_to(&upstream_answer(&buf[..n]), from).await;
            }
        });
        (addr, seen, task)
    }

    async fn ask_udp(server: SocketAddr, msg: &[u8]) -> Parsed {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.send_to(msg, server).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, _) = timeout(WAIT, sock.recv_from(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        parse(&buf[..n])
    }

    async fn ask_tcp(conn: &mut TcpStream, msg: &[u8]) -> Parsed {
        let mut framed = u16::try_from(msg.len()).unwrap().to_be_bytes().to_vec();
        framed.extend_from_slice(msg);
        conn.write_all(&framed).await.unwrap();
        let len = timeout(WAIT, conn.read_u16())
            .await
            .expect("in time")
            .unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        timeout(WAIT, conn.read_exact(&mut buf))
            .await
            .expect("in time")
            .unwrap();
        parse(&buf)
    }

    #[tokio::test]
    async fn answers_cluster_names_and_forwards_the_rest() {
        let (up, seen, up_task) = udp_upstream().await;
        let server = start(vec![up], |_| {}).await;

        let p = ask_udp(
            server.udp,
            &query(0x1111, "redis-master.default.svc.cluster.local", 1, None),
        )
        .await;
        assert_eq!((p.id, p.rcode), (0x1111, rcode::NOERROR));
        assert_eq!(p.answer_data(), ["10.0.0.11"]);
        assert_eq!(seen.load(Relaxed), 0, "cluster names never leave the node");

        let p = ask_udp(server.udp, &query(0x2222, "Example.com", 1, Some(1232))).await;
        assert_eq!((p.id, p.rcode), (0x2222, rcode::NOERROR), "id restored");
        assert_eq!(p.answer_data(), [UPSTREAM_ANSWER.to_string()]);
        assert_eq!(p.answers[0].name, "Example.com.");
        assert_eq!(seen.load(Relaxed), 1);

        // Unknown cluster names are answered here too (NXDOMAIN).
        let p = ask_udp(
            server.udp,
            &query(3, "nope.default.svc.cluster.local", 1, None),
        )
        .await;
        assert_eq!(p.rcode, rcode::NXDOMAIN);
        assert_eq!(seen.load(Relaxed), 1);

        let s = server.stats.snapshot();
        assert_eq!(
            (s.queries, s.answered_locally, s.forwarded, s.failures),
            (3, 2, 1, 0),
            "{s:?}"
        );
        up_task.abort();
    }

    #[tokio::test]
    async fn silent_upstream_gives_servfail_after_the_timeout() {
        // Bound and owned by the test, never read: queries to it vanish.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let timeout_ = Duration::from_millis(300);
        let server = start(vec![silent.local_addr().unwrap()], |o| {
            o.forward_timeout = timeout_
        })
        .await;
        let started = std::time::Instant::now();
        let p = ask_udp(server.udp, &query(0x3333, "example.org", 1, Some(1232))).await;
        let took = started.elapsed();
        println!("SERVFAIL after {took:?} (forward timeout {timeout_:?})");
        assert_eq!((p.id, p.rcode), (0x3333, rcode::SERVFAIL));
        assert_eq!(p.question.as_ref().unwrap().name.to_text(), "example.org.");
        assert_eq!(p.edns_payload, Some(1232));
        assert!(took >= timeout_ && took < timeout_ * 5, "{took:?}");
        let s = server.stats.snapshot();
        assert_eq!((s.forwarded, s.failures), (1, 1), "{s:?}");
    }

    #[tokio::test]
    async fn a_full_forward_table_drops_and_counts() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server = start(vec![silent.local_addr().unwrap()], |o| {
            o.max_inflight = 1;
            o.forward_timeout = Duration::from_millis(400);
        })
        .await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client
            .send_to(&query(1, "one.example", 1, None), server.udp)
            .await
            .unwrap();
        client
            .send_to(&query(2, "two.example", 1, None), server.udp)
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = timeout(WAIT, client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let p = parse(&buf[..n]);
        assert_eq!((p.id, p.rcode), (1, rcode::SERVFAIL));
        // Only one answer: the second query was dropped.
        assert!(
            timeout(Duration::from_millis(300), client.recv_from(&mut buf))
                .await
                .is_err()
        );
        let s = server.stats.snapshot();
        assert_eq!(
            (s.queries, s.forwarded, s.dropped, s.failures),
            (2, 1, 1, 1),
            "{s:?}"
        );
    }

    #[tokio::test]
    async fn a_timeout_moves_on_to_the_next_upstream() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (up, seen, up_task) = udp_upstream().await;
        let server = start(vec![silent.local_addr().unwrap(), up], |o| {
            o.forward_timeout = Duration::from_millis(200);
        })
        .await;
        let first = ask_udp(server.udp, &query(1, "a.example", 1, None)).await;
        assert_eq!(first.rcode, rcode::SERVFAIL);
        let second = ask_udp(server.udp, &query(2, "a.example", 1, None)).await;
        assert_eq!(second.rcode, rcode::NOERROR);
        assert_eq!(seen.load(Relaxed), 1);
        up_task.abort();
    }

    #[tokio::test]
    async fn answers_go_back_to_the_client_that_asked() {
        // An upstream that holds two queries and answers them in reverse.
        let up = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let up_addr = up.local_addr().unwrap();
        let up_task = tokio::spawn(async move {
            let mut held = Vec::new();
            let mut buf = vec![0u8; 4096];
            while held.len() < 2 {
                let (n, from) = up.recv_from(&mut buf).await.unwrap();
                held.push((buf[..n].to_vec(), from));
            }
            for (q, from) in held.iter().rev() {
                up.send_to(&upstream_answer(q), *from).await.unwrap();
            }
        });
        let server = start(vec![up_addr], |_| {}).await;
        // Both clients use the same id.
        let (qa, qb) = (
            query(7, "a.example", 1, None),
            query(7, "b.example", 1, None),
        );
        let (a, b) = tokio::join!(ask_udp(server.udp, &qa), ask_udp(server.udp, &qb));
        for (p, name) in [(a, "a.example."), (b, "b.example.")] {
            assert_eq!(p.id, 7);
            assert_eq!(p.question.as_ref().unwrap().name.to_text(), name);
            assert_eq!(p.answers[0].name, name);
        }
        up_task.await.unwrap();
    }

    #[tokio::test]
    async fn answers_from_anyone_but_the_upstream_are_ignored() {
        let up = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server = start(vec![up.local_addr().unwrap()], |_| {}).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client
            .send_to(&query(9, "bank.example", 1, None), server.udp)
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, forwarder) = timeout(WAIT, up.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let forwarded = buf[..n].to_vec();
        // A forged answer with the right id and question, from elsewhere.
        let forger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        forger
            .send_to(&upstream_answer(&forwarded), forwarder)
            .await
            .unwrap();
        let mut got = [0u8; 512];
        assert!(
            timeout(Duration::from_millis(300), client.recv_from(&mut got))
                .await
                .is_err(),
            "a forged answer reached the client"
        );
        // An answer for another question, from the upstream itself.
        let mut other = forwarded.clone();
        other[13] = b'c'; // "cank.example"
        up.send_to(&upstream_answer(&other), forwarder)
            .await
            .unwrap();
        assert!(
            timeout(Duration::from_millis(300), client.recv_from(&mut got))
                .await
                .is_err(),
            "an answer to another question reached the client"
        );
        // The real answer gets through.
        up.send_to(&upstream_answer(&forwarded), forwarder)
            .await
            .unwrap();
        let (n, _) = timeout(WAIT, client.recv_from(&mut got))
            .await
            .unwrap()
            .unwrap();
        let p = parse(&got[..n]);
        assert_eq!((p.id, p.answers.len()), (9, 1));
    }

    #[tokio::test]
    async fn tcp_answers_and_forwards_over_tcp() {
        // A TCP upstream on loopback, answering one query per connection.
        let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = up.local_addr().unwrap();
        let up_task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = up.accept().await {
                let Ok(len) = conn.read_u16().await else {
                    continue;
                };
                let mut buf = vec![0u8; usize::from(len)];
                if conn.read_exact(&mut buf).await.is_err() {
                    continue;
                }
                let resp = upstream_answer(&buf);
                let mut framed = u16::try_from(resp.len()).unwrap().to_be_bytes().to_vec();
                framed.extend_from_slice(&resp);
                let _ = conn.write_all(&framed).await;
            }
        });
        let server = start(vec![up_addr], |_| {}).await;
        // A headless Service too big for a classic UDP answer.
        let big = Service {
            namespace: "default".into(),
            name: "big".into(),
            cluster_ip: None,
            ports: vec![ServicePort {
                name: Some("p".into()),
                protocol: Protocol::Tcp,
                port: 1,
                target_port: 1,
            }],
            ready_endpoints: (0..60)
                .map(|i| Endpoint {
                    ip: Ipv4Addr::new(10, 4, 0, i),
                    hostname: None,
                })
                .collect(),
        };
        server
            .tables
            .send(Arc::new(
                ServiceTable::build("cluster.local", [big]).unwrap(),
            ))
            .unwrap();

        let name = "big.default.svc.cluster.local";
        let p = ask_udp(server.udp, &query(1, name, rtype::A, None)).await;
        assert!(p.tc() && p.answers.is_empty(), "UDP says: retry over TCP");

        let mut conn = TcpStream::connect(server.tcp).await.unwrap();
        let p = ask_tcp(&mut conn, &query(2, name, rtype::A, None)).await;
        assert!(!p.tc());
        assert_eq!((p.id, p.answers.len()), (2, 60));
        // Same connection: a forwarded query goes upstream over TCP.
        let p = ask_tcp(&mut conn, &query(3, "example.net", rtype::A, None)).await;
        assert_eq!((p.id, p.rcode), (3, rcode::NOERROR));
        assert_eq!(p.answer_data(), [UPSTREAM_ANSWER.to_string()]);
        let s = server.stats.snapshot();
        assert_eq!(
            (s.queries, s.answered_locally, s.forwarded),
            (3, 2, 1),
            "{s:?}"
        );
        up_task.abort();
    }

    #[tokio::test]
    async fn table_updates_reach_the_next_query() {
        let server = start(vec![], |_| {}).await;
        let name = "fresh.default.svc.cluster.local";
        assert_eq!(
            ask_udp(server.udp, &query(1, name, 1, None)).await.rcode,
            rcode::NXDOMAIN
        );
        let fresh = Service {
            namespace: "default".into(),
            name: "fresh".into(),
            cluster_ip: Some(Ipv4Addr::new(10, 0, 0, 99)),
            ports: vec![],
            ready_endpoints: vec![],
        };
        server
            .tables
            .send(Arc::new(
                ServiceTable::build("cluster.local", [fresh]).unwrap(),
            ))
            .unwrap();
        let p = ask_udp(server.udp, &query(2, name, 1, None)).await;
        assert_eq!(p.answer_data(), ["10.0.0.99"]);
        // No upstream at all: outside names fail at once.
        let p = ask_udp(server.udp, &query(3, "example.com", 1, None)).await;
        assert_eq!(p.rcode, rcode::SERVFAIL);
    }

    #[tokio::test]
    async fn tcp_connections_are_bounded_and_time_out() {
        let server = start(vec![], |o| {
            o.max_tcp_connections = 1;
            o.tcp_idle_timeout = Duration::from_secs(1);
        })
        .await;
        let mut first = TcpStream::connect(server.tcp).await.unwrap();
        let p = ask_tcp(
            &mut first,
            &query(1, "web.default.svc.cluster.local", 1, None),
        )
        .await;
        assert_eq!(p.answer_data(), ["10.0.0.20"]);
        // The one slot is taken: a second client is closed at once.
        let mut second = TcpStream::connect(server.tcp).await.unwrap();
        let mut byte = [0u8; 1];
        let n = timeout(WAIT, second.read(&mut byte))
            .await
            .expect("closed in time");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        // The idle first client is closed after the idle timeout.
        let n = timeout(WAIT, first.read(&mut byte))
            .await
            .expect("closed in time");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        // An oversized frame closes the connection without an answer.
        let mut third = TcpStream::connect(server.tcp).await.unwrap();
        third.write_all(&[0xFF, 0xFF]).await.unwrap();
        let n = timeout(WAIT, third.read(&mut byte))
            .await
            .expect("closed in time");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        let s = server.stats.snapshot();
        assert_eq!((s.dropped, s.ignored), (1, 1), "{s:?}");
    }
}
