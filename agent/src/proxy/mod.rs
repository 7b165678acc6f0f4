//! The Service proxy: listens on each Service's cluster IP and port (and
//! node ports, load balancer ports) and forwards every connection to a
//! ready endpoint.
//!
//! Data flow: the session publishes the [`RouteTable`] on a watch channel;
//! [`run`] keeps one listener (TCP, or a UDP socket, see [`udp`]) per
//! address and port that has a ready endpoint ([`RouteTable::bindings`])
//! and none for one without, so a connect to a Service with nothing behind
//! it is refused by the kernel at once. The listeners can bind any cluster
//! IP because the agent claimed the Service range as local
//! ([`crate::netlink::claim_local`]). Each accepted connection picks its
//! endpoint with [`choose::candidates`] against the table of that moment,
//! connects (trying the next candidate when one fails, then the [`relay`]
//! for endpoints this box does not reach) and copies bytes both ways with
//! fixed buffers.
//!
//! Before the listeners, [`kernel`] hands the bindings whose endpoints
//! this box reaches itself to nf_tables DNAT (`--service-proxy`); the
//! listeners stay open for all of them, so the proxy serves a binding the
//! moment the kernel's table no longer covers it, and everything when the
//! box has no nf_tables.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] proxied connections at once (more
//! wait in the kernel's accept queue), each holding two [`BUF`] buffers:
//! 16 KiB per connection, 16 MiB at a thousand. An idle Service costs one
//! listening socket and one task.

pub mod choose;
pub mod kernel;
pub mod relay;
pub mod udp;

use crate::routes::{Binding, RouteTable};
use choose::{candidates, Me};
use outpost_proto::pod::Protocol;
use outpost_proto::route::RouteEndpoint;
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};

/// Proxied connections open at once.
pub const MAX_CONNECTIONS: usize = 4096;
/// Copy buffer per direction (tokio's default for `copy_bidirectional`).
pub const BUF: usize = 8 * 1024;
/// A connect to an endpoint that takes longer has failed: the endpoint is
/// on this box's network or its site's, a few milliseconds away.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Endpoints one connection tries before it is given up.
const MAX_ATTEMPTS: usize = 3;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    pub connections: AtomicU64,
    /// Of them, carried by the relay.
    pub relayed: AtomicU64,
    pub active: AtomicU64,
    pub failed: AtomicU64,
    pub bytes_to_endpoints: AtomicU64,
    pub bytes_from_endpoints: AtomicU64,
    pub listeners: AtomicU64,
    /// Addresses and ports the kernel forwards ([`kernel`]).
    pub kernel_frontends: AtomicU64,
    per_service: std::sync::Mutex<HashMap<String, ServiceStats>>,
    kernel: std::sync::Mutex<KernelCounts>,
}

/// Connections the kernel forwarded, by Service: `base` from tables
/// replaced since (a new table's counters start at zero), `live` as the
/// current table's counters last read.
#[derive(Debug, Default)]
struct KernelCounts {
    base: HashMap<String, u64>,
    live: HashMap<String, u64>,
}

/// One Service's traffic through this agent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServiceStats {
    /// Connections (UDP: flows) carried, direct or relayed.
    pub connections: u64,
    /// Of them, through the relay.
    pub relayed: u64,
    /// Open now.
    pub active: u64,
    /// Connections no endpoint took.
    pub failed: u64,
    /// Bytes both ways, counted as connections end (UDP: as they pass).
    /// The kernel's connections are not in it.
    pub bytes: u64,
    /// Of `connections`, DNATed by the kernel (nf_tables) without the
    /// proxy; read from the rule counters every [`COUNTER_INTERVAL`].
    pub kernel: u64,
}

impl ProxyMetrics {
    fn service(&self, service: &str, f: impl FnOnce(&mut ServiceStats)) {
        let mut m = self.per_service.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded by the route table's size; beyond it, one bucket.
        let key = if m.len() >= outpost_proto::route::MAX_ROUTES && !m.contains_key(service) {
            "other"
        } else {
            service
        };
        f(m.entry(key.to_string()).or_default());
    }

    pub(crate) fn opened(&self, service: &str, relayed: bool) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        if relayed {
            self.relayed.fetch_add(1, Ordering::Relaxed);
        }
        self.service(service, |s| {
            s.connections += 1;
            s.active += 1;
            s.relayed += u64::from(relayed);
        });
    }

    pub(crate) fn closed(&self, service: &str, to: u64, from: u64) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.bytes_to_endpoints.fetch_add(to, Ordering::Relaxed);
        self.bytes_from_endpoints.fetch_add(from, Ordering::Relaxed);
        self.service(service, |s| {
            s.active = s.active.saturating_sub(1);
            s.bytes += to + from;
        });
    }

    pub(crate) fn failed(&self, service: &str) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.service(service, |s| {
            s.connections += 1;
            s.failed += 1;
        });
    }

    /// A UDP flow began (`bytes` 0) or datagrams passed.
    pub(crate) fn udp(&self, service: &str, new_flow: bool, to: u64, from: u64) {
        if new_flow {
            self.connections.fetch_add(1, Ordering::Relaxed);
        }
        self.bytes_to_endpoints.fetch_add(to, Ordering::Relaxed);
        self.bytes_from_endpoints.fetch_add(from, Ordering::Relaxed);
        self.service(service, |s| {
            s.connections += u64::from(new_flow);
            s.bytes += to + from;
        });
    }

    /// The current kernel table's counters, by Service.
    pub(crate) fn kernel_counted(&self, live: Vec<(String, u64)>) {
        let mut k = self.kernel.lock().unwrap_or_else(|p| p.into_inner());
        k.live = live
            .into_iter()
            .take(outpost_proto::route::MAX_ROUTES)
            .collect();
    }

    /// The kernel's table is about to be replaced: keep what it counted.
    pub(crate) fn kernel_rebase(&self) {
        let mut guard = self.kernel.lock().unwrap_or_else(|p| p.into_inner());
        let k = &mut *guard;
        for (service, n) in k.live.drain() {
            // Bounded by the route table's size; beyond it, one bucket.
            let key = if k.base.len() >= outpost_proto::route::MAX_ROUTES
                && !k.base.contains_key(&service)
            {
                "other".to_string()
            } else {
                service
            };
            *k.base.entry(key).or_default() += n;
        }
    }

    /// Per Service, sorted by name.
    pub fn per_service(&self) -> Vec<(String, ServiceStats)> {
        let mut m = self
            .per_service
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        {
            let k = self.kernel.lock().unwrap_or_else(|p| p.into_inner());
            for (service, n) in k.base.iter().chain(k.live.iter()) {
                let s = m.entry(service.clone()).or_default();
                s.connections += n;
                s.kernel += n;
            }
        }
        let mut v: Vec<_> = m.iter().map(|(k, s)| (k.clone(), *s)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// Pod IPs this node reaches without the relay: its own pods and any pod
/// on the same pod network (the same Docker network of the same engine).
pub type Reachable = Arc<HashSet<Ipv4Addr>>;

/// This node, for choosing endpoints (its site comes with the table).
#[derive(Debug, Clone)]
pub struct Locality {
    pub node: String,
}

/// The agent's relay connection to the controller, while it has one.
pub type RelayLink = Option<quinn::Connection>;

/// Keeps the listeners in line with the route table until the channel
/// closes.
pub async fn run(
    me: Locality,
    mut table: watch::Receiver<Arc<RouteTable>>,
    reach: watch::Receiver<Reachable>,
    relay: watch::Receiver<RelayLink>,
    metrics: Arc<ProxyMetrics>,
    mode: kernel::Mode,
) {
    let mut nft = kernel::Kernel::new(mode);
    nft.start();
    let mut reach_changed = reach.clone();
    let mut reach_open = true;
    let node_ports = kernel::forwarding_unfiltered();
    let mut counters = tokio::time::interval(COUNTER_INTERVAL);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let me = Arc::new(me);
    let mut listeners: HashMap<Binding, tokio::task::JoinHandle<()>> = HashMap::new();
    // Bindings whose bind failed, so the warning is said once per cause.
    let mut failed: HashMap<Binding, String> = HashMap::new();
    let seq = Arc::new(AtomicU64::new(0));
    loop {
        let want: HashSet<Binding> = {
            let t = table.borrow_and_update().clone();
            let nodes = node_addresses(t.network);
            let bindings = t.bindings(&nodes);
            let r = reach_changed.borrow_and_update().clone();
            let me = Me {
                node: &me.node,
                site: &t.site,
            };
            // A few netlink messages to the kernel, done inline: the agent
            // runs one thread, and a table change is rare.
            nft.sync(&kernel::plan(&t, &bindings, &me, &r, node_ports), &metrics);
            bindings.into_iter().collect()
        };
        listeners.retain(|b, task| {
            let keep = want.contains(b) && !task.is_finished();
            if !keep {
                task.abort();
                debug!(ip = %b.front.ip, port = b.front.port, "service listener closed");
            }
            keep
        });
        failed.retain(|b, _| want.contains(b));
        for b in &want {
            if listeners.contains_key(b) {
                continue;
            }
            let addr = SocketAddr::from((b.front.ip, b.front.port));
            let ctx = Ctx {
                binding: b.clone(),
                me: me.clone(),
                table: table.clone(),
                reach: reach.clone(),
                relay: relay.clone(),
                metrics: metrics.clone(),
                seq: seq.clone(),
            };
            let bound = match b.front.protocol {
                Protocol::Tcp => std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .and_then(TcpListener::from_std)
                    .map(|l| tokio::spawn(serve(l, ctx, slots.clone()))),
                Protocol::Udp => std::net::UdpSocket::bind(addr)
                    .and_then(|s| s.set_nonblocking(true).map(|()| s))
                    .and_then(tokio::net::UdpSocket::from_std)
                    .map(|s| tokio::spawn(udp::serve(s, ctx))),
            };
            match bound {
                Ok(task) => {
                    failed.remove(b);
                    debug!(%addr, service = %b.service, "service listener open");
                    listeners.insert(b.clone(), task);
                }
                Err(e) => {
                    let why = e.to_string();
                    if failed.get(b) != Some(&why) {
                        warn!(%addr, service = %b.service, "cannot listen for the Service: {why}");
                        failed.insert(b.clone(), why);
                    }
                }
            }
        }
        metrics
            .listeners
            .store(listeners.len() as u64, Ordering::Relaxed);
        // Node addresses can change without the table: look again now and
        // then.
        let recheck = tokio::time::sleep(ADDRESS_RECHECK);
        tokio::pin!(recheck);
        let closed = loop {
            tokio::select! {
                r = table.changed() => break r.is_err(),
                r = reach_changed.changed(), if reach_open => {
                    reach_open = r.is_ok();
                    break false;
                }
                () = &mut recheck => break false,
                _ = counters.tick() => nft.count(&metrics),
            }
        };
        if closed {
            break;
        }
    }
    nft.stop();
    for (_, t) in listeners {
        t.abort();
    }
}

/// How often the kernel's per-Service counters are read for `/metrics`
/// (a scrape every 15 s is Prometheus's usual; one dump is a few
/// microseconds of netlink).
pub const COUNTER_INTERVAL: Duration = Duration::from_secs(10);

/// How often the node's addresses are read again for node ports and load
/// balancer ports when no route changes.
const ADDRESS_RECHECK: Duration = Duration::from_secs(30);

/// The node's own IPv4 addresses (not loopback, not in the Service range).
fn node_addresses(service_net: Option<outpost_proto::route::Ipv4Net>) -> Vec<Ipv4Addr> {
    crate::probe::local_ipv4()
        .into_iter()
        .filter(|a| !service_net.is_some_and(|n| n.contains(*a)))
        .collect()
}

/// What a listener's task needs.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub binding: Binding,
    pub me: Arc<Locality>,
    pub table: watch::Receiver<Arc<RouteTable>>,
    pub reach: watch::Receiver<Reachable>,
    pub relay: watch::Receiver<RelayLink>,
    pub metrics: Arc<ProxyMetrics>,
    pub seq: Arc<AtomicU64>,
}

impl Ctx {
    /// The endpoints a new connection (or UDP flow) tries, from the table
    /// of this moment; `None` when the Service or port is gone.
    pub fn choices(&self) -> Option<choose::Candidates> {
        let t = self.table.borrow();
        let r = self.reach.borrow();
        let route = t.get(&self.binding.service)?;
        let direct = |e: &RouteEndpoint| r.contains(&e.ip);
        let me = Me {
            node: &self.me.node,
            site: &t.site,
        };
        Some(candidates(
            route,
            self.binding.index,
            &me,
            direct,
            self.seq.fetch_add(1, Ordering::Relaxed),
        ))
    }
}

async fn serve(listener: TcpListener, ctx: Ctx, slots: Arc<Semaphore>) {
    let front = ctx.binding.front;
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(ip = %front.ip, port = front.port, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let choices = ctx.choices().map(|c| (ctx.binding.service.clone(), c));
        let service_port = ctx.binding.service_port;
        let metrics = ctx.metrics.clone();
        let relay_link = ctx.relay.borrow().clone();
        tokio::spawn(async move {
            let _permit = permit;
            let Some((service, c)) = choices else {
                metrics.connections.fetch_add(1, Ordering::Relaxed);
                refuse(client);
                return;
            };
            let Some((mut up, pod)) = connect_direct(&c.direct, &service).await else {
                if !c.relay.is_empty() {
                    return relayed(
                        client,
                        &service,
                        service_port,
                        &c.relay,
                        relay_link,
                        &metrics,
                    )
                    .await;
                }
                metrics.failed(&service);
                info!(%service, %peer, "no endpoint of the Service answered");
                refuse(client);
                return;
            };
            let _ = up.set_nodelay(true);
            let mut client = client;
            let _ = client.set_nodelay(true);
            metrics.opened(&service, false);
            let copied =
                tokio::io::copy_bidirectional_with_sizes(&mut client, &mut up, BUF, BUF).await;
            let (to, from) = copied.unwrap_or((0, 0));
            metrics.closed(&service, to, from);
            debug!(%service, %pod, %peer, "proxied connection ended");
        });
    }
}

/// A connection to the first of `choices` that takes one (at most
/// [`MAX_ATTEMPTS`] tried), and its pod.
async fn connect_direct(choices: &[choose::Choice], service: &str) -> Option<(TcpStream, String)> {
    for choice in choices.iter().take(MAX_ATTEMPTS) {
        let addr = SocketAddr::from((choice.ip, choice.port));
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => return Some((s, choice.pod.clone())),
            Ok(Err(e)) => debug!(%service, pod = %choice.pod, %addr, "endpoint refused: {e}"),
            Err(_) => debug!(%service, pod = %choice.pod, %addr, "endpoint connect timed out"),
        }
    }
    None
}

/// Carries `client` to the first of `choices` the relay reaches.
async fn relayed(
    client: TcpStream,
    service: &str,
    port: u16,
    choices: &[choose::Choice],
    link: RelayLink,
    metrics: &ProxyMetrics,
) {
    let Some(conn) = link else {
        metrics.failed(service);
        info!(%service, "the Service's ready endpoints are on other boxes and the controller is out of reach: refused");
        refuse(client);
        return;
    };
    for choice in choices.iter().take(MAX_ATTEMPTS) {
        match relay::dial(&conn, service, port, Protocol::Tcp, &choice.pod).await {
            Ok((send, recv)) => {
                let _ = client.set_nodelay(true);
                metrics.opened(service, true);
                let (from, to) = relay::splice(client, send, recv).await;
                metrics.closed(service, to, from);
                return;
            }
            Err(e) => debug!(%service, pod = %choice.pod, "relay refused: {e}"),
        }
    }
    metrics.failed(service);
    info!(%service, "no endpoint of the Service answered through the relay");
    refuse(client);
}

/// Closes an accepted connection with a reset, so the client sees
/// "connection refused"-like failure at once rather than an empty answer.
fn refuse(client: TcpStream) {
    let _ = client.set_zero_linger();
    drop(client);
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_proto::route::{RoutePort, RoutesUpdate, ServiceKind, ServiceRoute};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn table(endpoint: Option<SocketAddr>) -> Arc<RouteTable> {
        table_for(endpoint, Protocol::Tcp, FRONT_PORT.with(|p| *p))
    }

    fn table_for(endpoint: Option<SocketAddr>, protocol: Protocol, front: u16) -> Arc<RouteTable> {
        let mut t = RouteTable::default();
        let endpoints = endpoint
            .map(|a| {
                let SocketAddr::V4(a) = a else { unreachable!() };
                vec![RouteEndpoint {
                    ip: *a.ip(),
                    node: "n1".into(),
                    site: "a".into(),
                    pod: "default/echo".into(),
                    ports: vec![a.port()],
                }]
            })
            .unwrap_or_default();
        t.apply(RoutesUpdate {
            full: true,
            upsert: vec![ServiceRoute {
                namespace: "default".into(),
                name: "echo".into(),
                kind: ServiceKind::ClusterIp,
                // Loopback stands in for the cluster IP: what is tested is
                // the listener set and the forwarding, not the routing.
                cluster_ip: Some(Ipv4Addr::new(127, 0, 0, 1)),
                ports: vec![RoutePort {
                    name: String::new(),
                    protocol,
                    port: front,
                    node_port: 0,
                }],
                endpoints,
            }],
            ..Default::default()
        })
        .unwrap();
        Arc::new(t)
    }

    thread_local! {
        static FRONT_PORT: u16 = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
    }

    async fn connect_retrying(port: u16) -> std::io::Result<TcpStream> {
        let mut last = None;
        for _ in 0..50 {
            match TcpStream::connect(("127.0.0.1", port)).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(last.unwrap())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn forwards_to_the_endpoint_and_stops_listening_when_none_is_left() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let _ = s.write_all(&buf[..n]).await;
                });
            }
        });
        let front = FRONT_PORT.with(|p| *p);
        let (tx, rx) = watch::channel(table(Some(echo_addr)));
        let (_reach_tx, reach) = watch::channel::<Reachable>(Arc::new(HashSet::new()));
        let (_relay_tx, relay) = watch::channel::<RelayLink>(None);
        let metrics = Arc::new(ProxyMetrics::default());
        let me = Locality { node: "n1".into() };
        tokio::spawn(run(
            me,
            rx,
            reach,
            relay,
            metrics.clone(),
            kernel::Mode::Userspace,
        ));
        let mut s = connect_retrying(front).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        drop(s);

        tx.send_replace(table(None));
        let mut refused = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if TcpStream::connect(("127.0.0.1", front)).await.is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused, "no endpoint left: the listener must be gone");
        assert!(metrics.connections.load(Ordering::Relaxed) >= 1);
        assert_eq!(metrics.bytes_from_endpoints.load(Ordering::Relaxed), 4);
        let per = metrics.per_service();
        assert_eq!(per[0].0, "default/echo");
        assert_eq!(
            (per[0].1.relayed, per[0].1.bytes, per[0].1.active),
            (0, 8, 0)
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn udp_datagrams_reach_the_endpoint_and_replies_come_back_from_the_frontend() {
        let echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..n], from).await;
            }
        });
        let front = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (_tx, rx) = watch::channel(table_for(Some(echo_addr), Protocol::Udp, front));
        let (_reach_tx, reach) = watch::channel::<Reachable>(Arc::new(HashSet::new()));
        let (_relay_tx, relay) = watch::channel::<RelayLink>(None);
        let metrics = Arc::new(ProxyMetrics::default());
        tokio::spawn(run(
            Locality { node: "n1".into() },
            rx,
            reach,
            relay,
            metrics.clone(),
            kernel::Mode::Userspace,
        ));
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut got = [0u8; 16];
        let mut answered = None;
        for _ in 0..50 {
            client
                .send_to(b"hello", ("127.0.0.1", front))
                .await
                .unwrap();
            if let Ok(Ok((n, from))) =
                tokio::time::timeout(Duration::from_millis(50), client.recv_from(&mut got)).await
            {
                answered = Some((n, from));
                break;
            }
        }
        let (n, from) = answered.expect("an answer through the proxy");
        assert_eq!(&got[..n], b"hello");
        assert_eq!(
            from.port(),
            front,
            "replies come from the Service's address"
        );
        assert_eq!(metrics.connections.load(Ordering::Relaxed), 1, "one flow");
    }
}
