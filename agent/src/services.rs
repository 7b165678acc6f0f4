//! The agent's snapshot of the cluster's Services: what the resolver
//! ([`crate::dns`]) answers from and what [`crate::service_env`] turns into
//! environment variables.
//!
//! The session fills a [`ServiceTable`] from the Service/endpoint message the
//! controller pushes, publishes it through a `tokio::sync::watch` channel as
//! an `Arc<ServiceTable>`, and readers take the current `Arc` per query: a
//! table is never changed once built, so a query never sees half an update.
//!
//! Names are stored lowercase and looked up by `(namespace, name)`; DNS
//! lookups are case-insensitive on top of that. Only IPv4 exists here: cluster
//! IPs and pod addresses on Outpost are IPv4.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Kubernetes' default cluster domain (kubelet `--cluster-domain`).
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// Longest DNS name in text form without the trailing dot (RFC 1035 2.3.4:
/// 255 octets on the wire, which is 253 characters of text).
const MAX_DOMAIN_TEXT: usize = 253;

/// Transport protocol of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// Lowercase form, as in SRV names (`_tcp`) and `tcp://` URLs.
    pub fn as_lower(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// Uppercase form, as in Kubernetes manifests and environment variables.
    pub fn as_upper(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// `spec.ports[].name`; only the first port of a Service may be unnamed.
    pub name: Option<String>,
    pub protocol: Protocol,
    /// The Service port (on the cluster IP).
    pub port: u16,
    /// The port on the endpoints (`targetPort` resolved to a number). SRV
    /// answers of headless Services carry it, since clients connect to the
    /// endpoints directly there.
    pub target_port: u16,
}

/// A ready endpoint of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    /// The pod's `spec.hostname` when it set one (with a matching
    /// `spec.subdomain`); names it in DNS as `HOSTNAME.SERVICE.NS.svc.ZONE`.
    /// Without one the dashed address (`10-0-0-1`) is its name, as in CoreDNS.
    pub hostname: Option<String>,
}

impl Endpoint {
    /// The endpoint's first DNS label: its hostname, or the dashed address.
    pub fn dns_label(&self) -> String {
        match &self.hostname {
            Some(h) => h.clone(),
            None => {
                let [a, b, c, d] = self.ip.octets();
                format!("{a}-{b}-{c}-{d}")
            }
        }
    }
}

/// One Service as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    /// `None` for a headless Service (`clusterIP: None`).
    pub cluster_ip: Option<Ipv4Addr>,
    pub ports: Vec<ServicePort>,
    /// Endpoints that are ready now; never the others.
    pub ready_endpoints: Vec<Endpoint>,
}

impl Service {
    pub fn is_headless(&self) -> bool {
        self.cluster_ip.is_none()
    }
}

/// Why a table could not be built. Entries from the controller were
/// validated there, so any of these points at a bug on the way.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("cluster domain {domain:?} is not a DNS name: {reason}")]
    ClusterDomain { domain: String, reason: String },
    #[error("the Service table has {} problem(s):\n  {}", .0.len(), .0.join("\n  "))]
    Entries(Vec<String>),
}

/// The Services of the cluster, indexed by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTable {
    cluster_domain: String,
    /// namespace -> service name -> Service. A namespace may be present with
    /// no Services (it exists, see [`ServiceTable::add_namespace`]).
    namespaces: BTreeMap<String, BTreeMap<String, Service>>,
}

impl Default for ServiceTable {
    fn default() -> Self {
        ServiceTable {
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_string(),
            namespaces: BTreeMap::new(),
        }
    }
}

impl ServiceTable {
    /// Builds a table for `cluster_domain` (a trailing dot is allowed) from
    /// `services`. Names are lowercased. Every problem is reported at once:
    /// a namespace, name or endpoint hostname that is not a DNS label, and a
    /// Service given twice.
    pub fn build(
        cluster_domain: &str,
        services: impl IntoIterator<Item = Service>,
    ) -> Result<ServiceTable, TableError> {
        let domain = cluster_domain
            .strip_suffix('.')
            .unwrap_or(cluster_domain)
            .to_ascii_lowercase();
        check_domain(&domain).map_err(|reason| TableError::ClusterDomain {
            domain: cluster_domain.to_string(),
            reason,
        })?;
        let mut table = ServiceTable {
            cluster_domain: domain,
            namespaces: BTreeMap::new(),
        };
        let mut problems = Vec::new();
        for mut svc in services {
            svc.namespace.make_ascii_lowercase();
            svc.name.make_ascii_lowercase();
            let id = format!("Service {}/{}", svc.namespace, svc.name);
            let mut ok = true;
            for (what, label) in [("namespace", &svc.namespace), ("name", &svc.name)] {
                if let Err(why) = check_label(label) {
                    problems.push(format!("{id}: {what} {why}"));
                    ok = false;
                }
            }
            for ep in &mut svc.ready_endpoints {
                if let Some(h) = &mut ep.hostname {
                    h.make_ascii_lowercase();
                    if let Err(why) = check_label(h) {
                        problems.push(format!("{id}: endpoint {} hostname {why}", ep.ip));
                        ok = false;
                    }
                }
            }
            if !ok {
                continue;
            }
            let names = table.namespaces.entry(svc.namespace.clone()).or_default();
            if names.contains_key(&svc.name) {
                problems.push(format!("{id} is given twice"));
                continue;
            }
            names.insert(svc.name.clone(), svc);
        }
        if problems.is_empty() {
            Ok(table)
        } else {
            Err(TableError::Entries(problems))
        }
    }

    /// Records that `namespace` exists even if it has no Service, so that
    /// `NAMESPACE.svc.ZONE` is an empty answer rather than NXDOMAIN (CoreDNS
    /// answers from the Namespace objects the same way).
    pub fn add_namespace(&mut self, namespace: &str) -> Result<(), TableError> {
        let ns = namespace.to_ascii_lowercase();
        check_label(&ns)
            .map_err(|why| TableError::Entries(vec![format!("namespace {namespace:?} {why}")]))?;
        self.namespaces.entry(ns).or_default();
        Ok(())
    }

    /// The cluster domain, lowercase, without a trailing dot.
    pub fn cluster_domain(&self) -> &str {
        &self.cluster_domain
    }

    /// The Service `namespace/name`; both must already be lowercase.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.namespaces.get(namespace)?.get(name)
    }

    /// Whether `namespace` (lowercase) exists.
    pub fn has_namespace(&self, namespace: &str) -> bool {
        self.namespaces.contains_key(namespace)
    }

    /// The Services of `namespace` (lowercase), by name.
    pub fn services_in<'a>(&'a self, namespace: &str) -> impl Iterator<Item = &'a Service> + 'a {
        self.namespaces
            .get(namespace)
            .into_iter()
            .flat_map(|names| names.values())
    }

    /// Number of Services in the table.
    pub fn len(&self) -> usize {
        self.namespaces.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An RFC 1123 label: lowercase letters, digits and '-', not at either end,
/// 1 to 63 characters (the rule Kubernetes applies to namespaces, Service
/// names and pod hostnames).
fn check_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err(format!("{s:?} must be 1 to 63 characters long"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!("{s:?} may contain only letters, digits and '-'"));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(format!("{s:?} must start and end with a letter or digit"));
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<(), String> {
    if domain.len() > MAX_DOMAIN_TEXT {
        return Err(format!("longer than {MAX_DOMAIN_TEXT} characters"));
    }
    // Room for the longest names under it: `_port._proto.name.ns.svc.` with
    // 63-byte labels would not fit a 255-byte name anyway, so only the
    // labels themselves are checked here.
    for label in domain.split('.') {
        check_label(label)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, ip: Option<[u8; 4]>) -> Service {
        Service {
            namespace: ns.into(),
            name: name.into(),
            cluster_ip: ip.map(Ipv4Addr::from),
            ports: vec![],
            ready_endpoints: vec![],
        }
    }

    #[test]
    fn builds_lowercase_and_indexes() {
        let t = ServiceTable::build(
            "Cluster.Local.",
            [svc("Default", "Redis-Master", Some([10, 0, 0, 11]))],
        )
        .unwrap();
        assert_eq!(t.cluster_domain(), "cluster.local");
        assert!(t.get("default", "redis-master").is_some());
        assert!(t.has_namespace("default"));
        assert!(!t.has_namespace("kube-system"));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn reports_every_problem_at_once() {
        let mut bad_ep = svc("ns", "ok", None);
        bad_ep.ready_endpoints.push(Endpoint {
            ip: Ipv4Addr::new(10, 0, 0, 1),
            hostname: Some("no_underscores".into()),
        });
        let err = ServiceTable::build(
            "cluster.local",
            [
                svc("ns", "a.b", None),
                svc("", "x", None),
                bad_ep,
                svc("ns", "dup", None),
                svc("ns", "dup", None),
            ],
        )
        .unwrap_err();
        let TableError::Entries(problems) = err else {
            panic!("{err}")
        };
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems[0].contains("name \"a.b\""), "{problems:#?}");
        assert!(problems[1].contains("namespace \"\""), "{problems:#?}");
        assert!(problems[2].contains("hostname"), "{problems:#?}");
        assert!(problems[3].contains("twice"), "{problems:#?}");
    }

    #[test]
    fn rejects_bad_cluster_domains() {
        for d in ["", "cluster..local", "-x.local", &"a".repeat(64)] {
            assert!(
                matches!(
                    ServiceTable::build(d, []),
                    Err(TableError::ClusterDomain { .. })
                ),
                "{d:?}"
            );
        }
    }

    #[test]
    fn namespaces_without_services_exist() {
        let mut t = ServiceTable::default();
        t.add_namespace("Empty").unwrap();
        assert!(t.has_namespace("empty"));
        assert!(t.is_empty());
        assert!(t.add_namespace("not ok").is_err());
    }

    #[test]
    fn endpoint_label_is_hostname_or_dashed_ip() {
        let e = Endpoint {
            ip: Ipv4Addr::new(10, 1, 2, 3),
            hostname: None,
        };
        assert_eq!(e.dns_label(), "10-1-2-3");
        let e = Endpoint {
            hostname: Some("web-0".into()),
            ..e
        };
        assert_eq!(e.dns_label(), "web-0");
    }
}
