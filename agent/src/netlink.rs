//! The two routes Service routing needs, set through rtnetlink (no `ip`
//! binary: the agent runs from an empty image and on boxes without
//! iproute2).
//!
//! - [`claim_local`]: `ip route replace local NET dev lo table local` in the
//!   agent's own network namespace. Every address of the Service range is
//!   then local to the agent ("AnyIP"), so the proxy can listen on any
//!   cluster IP without adding one address per Service; an address nobody
//!   listens on answers a TCP connect with a reset at once. kube-proxy's
//!   IPVS mode binds cluster IPs to a dummy interface for the same reason.
//! - [`route_via_in`]: `ip route replace NET via GW` inside a pod's network
//!   namespace, when the agent is not the pods' default gateway (the agent
//!   itself runs in a container on the pods' network, as in the tests'
//!   sites). The namespace is entered on a thread of its own that ends
//!   after the one request, so no other work ever runs in it.
//!
//! Both need CAP_NET_ADMIN (entering a pod's namespace also CAP_SYS_ADMIN
//! and the host's PID view); without them the error says so. The message
//! encoding is pure and tested; the syscalls are the thin part.

use outpost_proto::route::Ipv4Net;
use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType};
use std::net::Ipv4Addr;

const RTM_NEWROUTE: u16 = 24;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const AF_INET: u8 = 2;
const RT_TABLE_MAIN: u8 = 254;
const RT_TABLE_LOCAL: u8 = 255;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_HOST: u8 = 254;
const RTN_UNICAST: u8 = 1;
const RTN_LOCAL: u8 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;

/// A route request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Every address of `net` is local, on interface `oif` (loopback).
    Local { net: Ipv4Net, oif: u32 },
    /// `net` is reached through `gateway`.
    Via { net: Ipv4Net, gateway: Ipv4Addr },
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("the kernel refused route {route}: {err}{hint}")]
    Refused {
        route: String,
        err: std::io::Error,
        hint: &'static str,
    },
    #[error("cannot enter the network namespace of process {pid}: {err} (the agent needs CAP_SYS_ADMIN and the host's PID view, `--pid host`, to route pods it does not gateway)")]
    Namespace { pid: u32, err: std::io::Error },
    #[error("netlink: {0}")]
    Io(std::io::Error),
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Local { net, oif } => write!(f, "local {net} dev #{oif} table local"),
            Route::Via { net, gateway } => write!(f, "{net} via {gateway}"),
        }
    }
}

fn attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = u16::try_from(4 + data.len()).expect("short attribute");
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// The `RTM_NEWROUTE` request (create or replace, acknowledged) for `r`.
pub fn encode(r: &Route, seq: u32) -> Vec<u8> {
    let (net, table, scope, kind) = match r {
        Route::Local { net, .. } => (net, RT_TABLE_LOCAL, RT_SCOPE_HOST, RTN_LOCAL),
        Route::Via { net, .. } => (net, RT_TABLE_MAIN, RT_SCOPE_UNIVERSE, RTN_UNICAST),
    };
    let mut m = vec![0u8; 16];
    // struct rtmsg
    m.extend_from_slice(&[AF_INET, net.prefix, 0, 0, table, RTPROT_STATIC, scope, kind]);
    m.extend_from_slice(&0u32.to_ne_bytes());
    attr(&mut m, RTA_DST, &net.addr.octets());
    match r {
        Route::Local { oif, .. } => attr(&mut m, RTA_OIF, &oif.to_ne_bytes()),
        Route::Via { gateway, .. } => attr(&mut m, RTA_GATEWAY, &gateway.octets()),
    }
    let len = u32::try_from(m.len()).expect("short message");
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m[4..6].copy_from_slice(&RTM_NEWROUTE.to_ne_bytes());
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m
}

/// The errno of the acknowledgement to request `seq` in `reply` (0: done),
/// or `None` when `reply` holds no such acknowledgement.
pub fn ack_errno(reply: &[u8], seq: u32) -> Option<i32> {
    let mut at = 0;
    while reply.len() >= at + 16 {
        let word = |o: usize| u32::from_ne_bytes(reply[o..o + 4].try_into().expect("4 bytes"));
        let len = usize::try_from(word(at)).ok()?;
        let kind = u16::from_ne_bytes([reply[at + 4], reply[at + 5]]);
        if len < 16 || at + len > reply.len() {
            return None;
        }
        if kind == NLMSG_ERROR && word(at + 8) == seq && len >= 20 {
            let e = i32::from_ne_bytes(reply[at + 16..at + 20].try_into().expect("4 bytes"));
            return Some(-e);
        }
        at += (len + 3) & !3;
    }
    None
}

/// Sends `r` on a fresh rtnetlink socket of the calling thread's network
/// namespace and waits for the kernel's answer.
fn request(r: &Route) -> Result<(), RouteError> {
    let fd = rustix::net::socket(AddressFamily::NETLINK, SocketType::RAW, None)
        .map_err(|e| RouteError::Socket(e.into()))?;
    let kernel = SocketAddrNetlink::new(0, 0);
    let seq = 1;
    rustix::net::sendto(&fd, &encode(r, seq), SendFlags::empty(), &kernel)
        .map_err(|e| RouteError::Io(e.into()))?;
    let mut buf = vec![0u8; 8192];
    for _ in 0..8 {
        let (got, _) = rustix::net::recv(&fd, &mut buf[..], RecvFlags::empty())
            .map_err(|e| RouteError::Io(e.into()))?;
        if let Some(errno) = ack_errno(&buf[..got.min(buf.len())], seq) {
            if errno == 0 {
                return Ok(());
            }
            let err = std::io::Error::from_raw_os_error(errno);
            let hint = if errno == 1 {
                " (the agent needs CAP_NET_ADMIN for Service routing)"
            } else {
                ""
            };
            return Err(RouteError::Refused {
                route: r.to_string(),
                err,
                hint,
            });
        }
    }
    Err(RouteError::Io(std::io::Error::other(
        "no acknowledgement from the kernel",
    )))
}

/// Makes every address of `net` local to this network namespace (see the
/// module doc).
pub fn claim_local(net: Ipv4Net) -> Result<(), RouteError> {
    let probe = rustix::net::socket(AddressFamily::INET, SocketType::DGRAM, None)
        .map_err(|e| RouteError::Socket(e.into()))?;
    let oif = rustix::net::netdevice::name_to_index(&probe, "lo").unwrap_or(1);
    request(&Route::Local { net, oif })
}

/// Routes `net` through `gateway` inside the network namespace of process
/// `pid` (host PID), from a thread that enters it and ends.
pub fn route_via_in(pid: u32, net: Ipv4Net, gateway: Ipv4Addr) -> Result<(), RouteError> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|err| RouteError::Namespace { pid, err })?;
    in_namespace(ns, pid, move || request(&Route::Via { net, gateway }))
}

/// Runs `f` on a new thread inside the network namespace `ns` (`pid`
/// names it in errors) and returns its result; the thread ends with it.
pub fn in_namespace<T: Send + 'static>(
    ns: std::fs::File,
    pid: u32,
    f: impl FnOnce() -> Result<T, RouteError> + Send + 'static,
) -> Result<T, RouteError> {
    std::thread::Builder::new()
        .name("pod-netns".into())
        .spawn(move || {
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(|e| RouteError::Namespace { pid, err: e.into() })?;
            f()
        })
        .map_err(RouteError::Io)?
        .join()
        .unwrap_or_else(|_| {
            Err(RouteError::Io(std::io::Error::other(
                "netns thread panicked",
            )))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn net() -> Ipv4Net {
        Ipv4Net {
            addr: Ipv4Addr::new(10, 43, 0, 0),
            prefix: 16,
        }
    }

    #[test]
    fn a_local_route_request_is_laid_out_as_iproute2_sends_it() {
        let m = encode(&Route::Local { net: net(), oif: 1 }, 7);
        // nlmsghdr 16 + rtmsg 12 + RTA_DST 8 + RTA_OIF 8
        assert_eq!(m.len(), 44);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 44);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_NEWROUTE);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), 0x505);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(&m[16..24], &[2, 16, 0, 0, 255, 4, 254, 2]);
        assert_eq!(&m[28..32], &[8, 0, 1, 0][..]);
        assert_eq!(&m[32..36], &[10, 43, 0, 0]);
        assert_eq!(&m[40..44], &1u32.to_ne_bytes());
    }

    #[test]
    fn a_gateway_route_goes_to_the_main_table() {
        let gateway = Ipv4Addr::new(172, 30, 1, 5);
        let m = encode(
            &Route::Via {
                net: net(),
                gateway,
            },
            1,
        );
        assert_eq!(&m[16..24], &[2, 16, 0, 0, 254, 4, 0, 1]);
        assert_eq!(u16::from_ne_bytes([m[38], m[39]]), RTA_GATEWAY);
        assert_eq!(&m[40..44], &gateway.octets());
    }

    fn ack(seq: u32, err: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&err.to_ne_bytes());
        m.extend_from_slice(&[0u8; 16]);
        m
    }

    #[test]
    fn a_claimed_range_is_local_in_a_namespace_of_our_own() {
        // Needs root and iproute2 (CI has both); a namespace of its own
        // keeps the host's routes untouched.
        let Some(ns) = crate::testns::TestNs::new("route") else {
            assert!(
                !std::fs::read_to_string("/proc/self/status")
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")),
                "root but `ip netns add` failed"
            );
            eprintln!("skipped: not root");
            return;
        };
        let listened = in_namespace(ns.file(), 0, || {
            let addr = SocketAddr::from(([10, 43, 0, 7], 8080));
            let before = std::net::TcpListener::bind(addr).is_ok();
            claim_local(net())?;
            claim_local(net())?; // replacing is idempotent
            let l = std::net::TcpListener::bind(addr).map_err(RouteError::Io)?;
            let c = std::net::TcpStream::connect(addr).map_err(RouteError::Io)?;
            let refused = std::net::TcpStream::connect(SocketAddr::from(([10, 43, 9, 9], 80)));
            drop((l, c));
            Ok((before, refused.map_err(|e| e.kind())))
        })
        .unwrap();
        assert!(!listened.0, "not local before the claim");
        assert_eq!(
            listened.1.unwrap_err(),
            std::io::ErrorKind::ConnectionRefused,
            "an address nobody listens on is refused at once"
        );
        let shown = std::process::Command::new("ip")
            .args(["-n", ns.name(), "route", "show", "table", "local"])
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&shown.stdout);
        assert!(shown.contains("local 10.43.0.0/16 dev lo"), "{shown}");
    }

    #[test]
    fn acknowledgements_are_read_safely() {
        assert_eq!(ack_errno(&ack(1, 0), 1), Some(0));
        assert_eq!(ack_errno(&ack(1, -1), 1), Some(1));
        assert_eq!(ack_errno(&ack(2, 0), 1), None, "another request's answer");
        assert_eq!(ack_errno(&ack(1, 0)[..10], 1), None);
        let mut bad = ack(1, 0);
        bad[0..4].copy_from_slice(&4u32.to_ne_bytes());
        assert_eq!(ack_errno(&bad, 1), None, "a length below the header");
        bad[0..4].copy_from_slice(&9999u32.to_ne_bytes());
        assert_eq!(ack_errno(&bad, 1), None, "a length beyond the buffer");
        assert_eq!(ack_errno(&[], 1), None);
    }
}
