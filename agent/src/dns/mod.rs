//! The resolver the agent serves to its pods: cluster names answered from
//! the agent's [`ServiceTable`](crate::services::ServiceTable), everything
//! else forwarded to the node's own resolvers.
//!
//! ```text
//!  controller --Service/endpoint message--> session --> ServiceTable
//!                                   watch::Sender<Arc<ServiceTable>>
//!                                                |
//!  pod resolv.conf (pod_dns_config)              v
//!  nameserver = agent ---UDP/TCP---> server::serve --> answer::answer
//!                                        |               (pure: parse,
//!                                        |                decide, encode)
//!                                        +--forward--> node resolvers
//!                                                      (resolv::upstreams)
//! ```
//!
//! - [`wire`]: the DNS message codec (RFC 1035, EDNS0), hand-written so the
//!   agent carries no DNS library (binary size on ARM, see `cross/build.sh`).
//! - [`answer`](mod@answer): the decision for one query, without I/O; CoreDNS
//!   `kubernetes` plugin semantics (table in its docs), TTL 5 s, TC when a
//!   UDP answer does not fit (512 bytes, or the EDNS0 size up to 1232).
//! - [`resolv`]: the node's resolv.conf into upstreams, and the Docker DNS
//!   settings of a pod (search list and `ndots:5` as the kubelet writes
//!   them; the ndots behaviour is described there).
//! - [`stub`]: how the agent itself resolves `--controller` by name
//!   (hosts file, then the node's nameservers), which a static binary
//!   cannot do through glibc's NSS.
//! - [`server`]: the thin async server: UDP and TCP, bounded forwarding
//!   with id remapping and a deadline per forward, counters in [`DnsStats`].
//!
//! Wiring (for the session): build a table, `watch::channel(Arc::new(t))`,
//! bind the sockets where pods reach the agent, read the node's resolvers
//! with [`read_host_resolvers`], spawn [`serve`] (keep a clone of
//! [`ServeOptions::stats`] for `/metrics`), send each new table on the
//! watch channel, and pass [`pod_dns_config`]'s fields to container create
//! (`HostConfig.dns`, `dns_search`, `dns_options`) together with
//! [`crate::service_env::service_env`]'s variables.

pub mod answer;
pub mod resolv;
pub mod server;
pub mod stub;
pub mod wire;

pub use answer::{answer, failure, Reply, ResolverConfig, Transport, DEFAULT_TTL};
pub use resolv::{parse_resolv_conf, pod_dns_config, upstreams, PodDnsConfig, ResolvConf};
pub use server::{serve, DnsStats, DnsStatsSnapshot, ServeError, ServeOptions};

use outpost_proto::files::BoundedReadError;
use std::net::SocketAddr;
use std::path::Path;

/// The node's resolver configuration.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// resolv.conf files are a few hundred bytes; more is not one.
const MAX_RESOLV_CONF: u64 = 64 * 1024;

/// The node's own resolver settings, as the agent uses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostResolvers {
    /// Where [`serve`] forwards names outside the cluster.
    pub upstreams: Vec<SocketAddr>,
    /// The node's search domains, which [`pod_dns_config`] appends to a
    /// pod's cluster search list as the kubelet does.
    pub search: Vec<String>,
}

/// Reads `path` (normally [`HOST_RESOLV_CONF`]); `own` is the resolver's
/// own listening address, never an upstream. A missing or unreadable file
/// counts as an empty one, as it does for glibc, which then asks the local
/// host.
pub fn read_host_resolvers(path: &Path, own: Option<SocketAddr>) -> HostResolvers {
    let conf = match outpost_proto::files::read_bounded(path, MAX_RESOLV_CONF) {
        Ok(text) => parse_resolv_conf(&text),
        Err(e) => {
            let why = match e {
                BoundedReadError::Io(e) => e.to_string(),
                BoundedReadError::TooLarge { len: n, .. } => format!("{n} bytes is too large"),
            };
            tracing::warn!(
                "reading {}: {why}; forwarding names outside the cluster to 127.0.0.1:53",
                path.display()
            );
            ResolvConf::default()
        }
    };
    HostResolvers {
        upstreams: upstreams(&conf, own),
        search: conf.search,
    }
}

/// Serves the resolver where pods reach the agent (`address`, port 53,
/// UDP and TCP), rebinding when that address changes, until the channel
/// closes. Names outside the cluster go to the node's resolvers.
pub async fn serve_pods(
    mut address: tokio::sync::watch::Receiver<Option<std::net::Ipv4Addr>>,
    table: tokio::sync::watch::Receiver<std::sync::Arc<crate::services::ServiceTable>>,
    stats: std::sync::Arc<DnsStats>,
) {
    let mut said = String::new();
    loop {
        let ip = *address.borrow_and_update();
        if let Some(ip) = ip {
            let at = SocketAddr::from((ip, 53));
            match tokio::net::UdpSocket::bind(at).await {
                Ok(udp) => {
                    let tcp = match tokio::net::TcpListener::bind(at).await {
                        Ok(t) => Some(t),
                        Err(e) => {
                            tracing::warn!(%at, "the pods' resolver answers over UDP only: TCP {e}");
                            None
                        }
                    };
                    let hosts = read_host_resolvers(Path::new(HOST_RESOLV_CONF), Some(at));
                    tracing::info!(%at, upstreams = ?hosts.upstreams, "resolver for pods listening");
                    said.clear();
                    let opts = ServeOptions {
                        stats: stats.clone(),
                        ..Default::default()
                    };
                    tokio::select! {
                        r = serve(udp, tcp, table.clone(), hosts.upstreams, opts) => {
                            if let Err(e) = r {
                                tracing::warn!("the pods' resolver stopped: {e}; restarting");
                            }
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            continue;
                        }
                        r = address.changed() => if r.is_err() { return } else { continue },
                    }
                }
                Err(e) => {
                    let why = e.to_string();
                    if said != why {
                        tracing::warn!(%at, "pods cannot resolve Service names: cannot listen for DNS: {why} (port 53 needs root or CAP_NET_BIND_SERVICE)");
                        said = why;
                    }
                }
            }
        }
        tokio::select! {
            r = address.changed() => if r.is_err() { return },
            () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_hosts_file_or_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "search lan\nnameserver 10.0.0.53\n").unwrap();
        let host = read_host_resolvers(&path, None);
        assert_eq!(
            host.upstreams,
            ["10.0.0.53:53".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(host.search, ["lan"]);
        let host = read_host_resolvers(&dir.path().join("missing"), None);
        assert_eq!(
            host.upstreams,
            ["127.0.0.1:53".parse::<SocketAddr>().unwrap()]
        );
        assert!(host.search.is_empty());
    }
}
