//! A quinn runtime that reads the endpoint's UDP socket on a thread of its
//! own.
//!
//! quinn drives an endpoint with one task (its endpoint driver) that reads
//! every datagram from the socket and hands it to its connection, and one
//! task per connection (its connection driver) that does the connection's
//! work, TLS included. On a runtime busy with thousands of handshakes (a
//! fleet reconnecting after a controller restart), the endpoint driver
//! waits in the run queue behind every connection task; quinn bounds each
//! of its polls to about 50 µs of reading, so the socket drains more slowly
//! than datagrams arrive, the kernel queue fills and drops. With 10,000
//! agents reconnecting on two cores, the controller's socket dropped about
//! 22,000 datagrams per storm, and the packets of handshakes already under
//! way (a client's Finished, its Hello) waited behind seconds of new
//! Initials: Welcomes arrived after the agent's 10 s answer timeout
//! (docs/BENCHMARKS.md, "Reconnect storm after a controller restart").
//!
//! [`EndpointThread`] runs the endpoint driver alone on a current-thread
//! runtime on a thread of its own (and registers the socket with that
//! runtime's reactor), so reading is never queued behind connection work;
//! every connection driver runs on the runtime that was current when the
//! endpoint was made. quinn spawns exactly one task while it builds an
//! endpoint, its driver, and one per connection afterwards; the first task
//! spawned through an [`EndpointThread`] goes to its thread (the tests
//! below fail if a quinn release changes that). One runtime serves one
//! endpoint. The thread ends once the endpoint and its connections are
//! gone.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use quinn::{AsyncTimer, AsyncUdpSocket, Runtime, TokioRuntime};

/// A quinn [`Runtime`] for one endpoint: its driver on a thread of its
/// own, everything else on the runtime current at [`EndpointThread::new`].
pub struct EndpointThread {
    /// The endpoint's thread: its driver and the socket's reactor.
    io: tokio::runtime::Handle,
    /// Where connection drivers run.
    main: tokio::runtime::Handle,
    /// Whether the endpoint's driver was spawned (the first task).
    driver_spawned: AtomicBool,
    /// Dropped with the runtime: tells the thread to end.
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    #[cfg(test)]
    exited: Arc<AtomicBool>,
}

impl std::fmt::Debug for EndpointThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointThread")
            .field(
                "driver_spawned",
                &self.driver_spawned.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl EndpointThread {
    /// Starts the endpoint's thread, named `name`. Must be called inside a
    /// tokio runtime: connection drivers run on it.
    pub fn new(name: &str) -> std::io::Result<Arc<EndpointThread>> {
        let main = tokio::runtime::Handle::try_current()
            .map_err(|e| std::io::Error::other(format!("no tokio runtime for QUIC: {e}")))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let io = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let exited = Arc::new(AtomicBool::new(false));
        let flag = exited.clone();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                // Ends when the sender is dropped with the runtime.
                let _ = rt.block_on(stopped);
                drop(rt);
                flag.store(true, Ordering::Release);
            })?;
        #[cfg(not(test))]
        let _ = exited;
        Ok(Arc::new(EndpointThread {
            io,
            main,
            driver_spawned: AtomicBool::new(false),
            stop: Mutex::new(Some(stop)),
            #[cfg(test)]
            exited,
        }))
    }
}

impl Drop for EndpointThread {
    fn drop(&mut self) {
        let stop = match self.stop.get_mut() {
            Ok(s) => s.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        drop(stop);
    }
}

impl Runtime for EndpointThread {
    fn new_timer(&self, i: Instant) -> Pin<Box<dyn AsyncTimer>> {
        // On whichever runtime asks (both have timers): a connection's
        // timers on the main one.
        TokioRuntime.new_timer(i)
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        if self.driver_spawned.swap(true, Ordering::AcqRel) {
            drop(self.main.spawn(future));
        } else {
            drop(self.io.spawn(future));
        }
    }

    fn wrap_udp_socket(&self, t: std::net::UdpSocket) -> std::io::Result<Arc<dyn AsyncUdpSocket>> {
        // Registered with the endpoint thread's reactor, so readiness is
        // seen there even while the main runtime is saturated.
        let _enter = self.io.enter();
        TokioRuntime.wrap_udp_socket(t)
    }

    fn now(&self) -> Instant {
        TokioRuntime.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::testing::configs;
    use std::time::Duration;

    fn server(rt: Arc<EndpointThread>, config: quinn::ServerConfig) -> quinn::Endpoint {
        let socket = std::net::UdpSocket::bind(("127.0.0.1", 0)).expect("bind");
        quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(config), socket, rt)
            .expect("endpoint")
    }

    /// The point of it: the endpoint keeps reading datagrams (a client's
    /// Initial becomes an `Incoming`) while every worker of the runtime it
    /// was made on is busy. With quinn's own runtime the driver waits for
    /// a free worker, and the accept below times out.
    #[test]
    fn the_endpoint_reads_while_the_runtime_is_saturated() {
        let main = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (server_cfg, client_cfg) = configs();
        let endpoint = main.block_on(async {
            let rt = EndpointThread::new("quic-endpoint-test").expect("thread");
            server(rt, server_cfg)
        });
        let addr = endpoint.local_addr().expect("addr");
        // Hold the main runtime's only worker for 3 s.
        let (busy_tx, busy_rx) = std::sync::mpsc::channel();
        main.spawn(async move {
            busy_tx.send(()).expect("signal");
            std::thread::sleep(Duration::from_secs(3));
        });
        busy_rx.recv().expect("busy");
        // A client of its own, on a runtime of its own.
        let other = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let accepted = other.block_on(async {
            let mut client = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).expect("bind");
            client.set_default_client_config(client_cfg);
            let _connecting = client.connect(addr, "localhost").expect("connect");
            tokio::time::timeout(Duration::from_secs(1), endpoint.accept())
                .await
                .map(|i| i.is_some())
        });
        assert_eq!(
            accepted,
            Ok(true),
            "the endpoint did not read the client's Initial while the runtime was busy"
        );
        drop(endpoint);
        drop(main);
    }

    /// Connections run on the main runtime and work end to end; the
    /// endpoint's thread ends once the endpoint and its connections are
    /// gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_work_and_the_thread_ends_with_the_endpoint() {
        let (server_cfg, client_cfg) = configs();
        let rt = EndpointThread::new("quic-endpoint-test").expect("thread");
        let exited = rt.exited.clone();
        let endpoint = server(rt, server_cfg);
        let addr = endpoint.local_addr().expect("addr");
        let mut client = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).expect("bind");
        client.set_default_client_config(client_cfg);
        // Everything holding a connection (its streams too) ends with this block.
        {
            let (c, s) = tokio::join!(
                async { client.connect(addr, "localhost").expect("connect").await },
                async { endpoint.accept().await.expect("incoming").await },
            );
            let (c, s) = (c.expect("client handshake"), s.expect("server handshake"));
            let (mut send, _recv) = c.open_bi().await.expect("open");
            send.write_all(b"ping").await.expect("write");
            send.finish().expect("finish");
            let (_send, mut recv) = s.accept_bi().await.expect("accept stream");
            let got = recv.read_to_end(16).await.expect("read");
            assert_eq!(got, b"ping");
            assert!(!exited.load(Ordering::Acquire), "the thread ended early");
            c.close(0u32.into(), b"done");
            s.close(0u32.into(), b"done");
        }
        endpoint.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
        drop(endpoint);
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        while !exited.load(Ordering::Acquire) {
            assert!(
                tokio::time::Instant::now() < until,
                "the endpoint's thread still runs 5 s after the endpoint was dropped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        client.close(0u32.into(), b"done");
    }
}
