//! Service environment variables, as the kubelet sets them
//! (pkg/kubelet/envvars `FromServices`), so applications written for
//! Kubernetes' environment-based discovery work unchanged.
//!
//! For every Service in the pod's namespace that has a cluster IP (headless
//! ones get nothing), with `NAME` the Service name upper-cased and `-`
//! turned into `_`:
//!
//! ```text
//! NAME_SERVICE_HOST=10.0.0.11               the cluster IP
//! NAME_SERVICE_PORT=6379                    the first port
//! NAME_SERVICE_PORT_PORTNAME=6379           each named port
//! NAME_PORT=tcp://10.0.0.11:6379            Docker links: the first port
//! NAME_PORT_6379_TCP=tcp://10.0.0.11:6379   ... and for each port:
//! NAME_PORT_6379_TCP_PROTO=tcp
//! NAME_PORT_6379_TCP_PORT=6379
//! NAME_PORT_6379_TCP_ADDR=10.0.0.11
//! ```
//!
//! The values come from the table when the pod's containers are created:
//! like the kubelet, only Services that exist then are seen, and a
//! container's own `env` entries of the same name win (the caller merges).
//! The kubelet adds the `kubernetes` Service of the `default` namespace to
//! every pod; Outpost has no API server for pods to reach, so there is none.
//! The kubelet's order is a map's (unspecified); here Services come sorted
//! by name, each Service's variables in `FromServices` order.

use crate::services::{Service, ServiceTable};

/// Environment variables for a pod in `pod_namespace`.
pub fn service_env(table: &ServiceTable, pod_namespace: &str) -> Vec<(String, String)> {
    let ns = pod_namespace.to_ascii_lowercase();
    let mut env = Vec::new();
    for svc in table.services_in(&ns) {
        push_service(&mut env, svc);
    }
    env
}

fn push_service(env: &mut Vec<(String, String)>, svc: &Service) {
    let Some(ip) = svc.cluster_ip else {
        return;
    };
    let name = env_name(&svc.name);
    env.push((format!("{name}_SERVICE_HOST"), ip.to_string()));
    let Some(first) = svc.ports.first() else {
        return;
    };
    env.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
    for p in &svc.ports {
        if let Some(port_name) = &p.name {
            env.push((
                format!("{name}_SERVICE_PORT_{}", env_name(port_name)),
                p.port.to_string(),
            ));
        }
    }
    // Docker-links style; Docker names the first port specially.
    env.push((
        format!("{name}_PORT"),
        format!("{}://{ip}:{}", first.protocol.as_lower(), first.port),
    ));
    for p in &svc.ports {
        let prefix = format!("{name}_PORT_{}_{}", p.port, p.protocol.as_upper());
        let url = format!("{}://{ip}:{}", p.protocol.as_lower(), p.port);
        env.push((prefix.clone(), url));
        env.push((format!("{prefix}_PROTO"), p.protocol.as_lower().to_string()));
        env.push((format!("{prefix}_PORT"), p.port.to_string()));
        env.push((format!("{prefix}_ADDR"), ip.to_string()));
    }
}

/// The kubelet's `makeEnvVariableName`: upper case, `-` to `_`.
fn env_name(s: &str) -> String {
    s.to_ascii_uppercase().replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::{Endpoint, Protocol, ServicePort};
    use std::net::Ipv4Addr;

    fn port(name: Option<&str>, protocol: Protocol, port: u16) -> ServicePort {
        ServicePort {
            name: name.map(Into::into),
            protocol,
            port,
            target_port: port,
        }
    }

    fn svc(ns: &str, name: &str, ip: Option<[u8; 4]>, ports: Vec<ServicePort>) -> Service {
        Service {
            namespace: ns.into(),
            name: name.into(),
            cluster_ip: ip.map(Ipv4Addr::from),
            ports,
            ready_endpoints: vec![Endpoint {
                ip: Ipv4Addr::new(10, 1, 0, 9),
                hostname: None,
            }],
        }
    }

    fn pairs(want: &[(&str, &str)]) -> Vec<(String, String)> {
        want.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The example from the Kubernetes docs ("Discovering services:
    /// environment variables"): redis-master on 10.0.0.11:6379.
    #[test]
    fn redis_master_as_in_the_kubernetes_docs() {
        let t = ServiceTable::build(
            "cluster.local",
            [svc(
                "default",
                "redis-master",
                Some([10, 0, 0, 11]),
                vec![port(None, Protocol::Tcp, 6379)],
            )],
        )
        .unwrap();
        assert_eq!(
            service_env(&t, "default"),
            pairs(&[
                ("REDIS_MASTER_SERVICE_HOST", "10.0.0.11"),
                ("REDIS_MASTER_SERVICE_PORT", "6379"),
                ("REDIS_MASTER_PORT", "tcp://10.0.0.11:6379"),
                ("REDIS_MASTER_PORT_6379_TCP", "tcp://10.0.0.11:6379"),
                ("REDIS_MASTER_PORT_6379_TCP_PROTO", "tcp"),
                ("REDIS_MASTER_PORT_6379_TCP_PORT", "6379"),
                ("REDIS_MASTER_PORT_6379_TCP_ADDR", "10.0.0.11"),
            ])
        );
    }

    /// The cases of the kubelet's own envvars_test.go (IPv4 ones).
    #[test]
    fn the_kubelets_cases() {
        use Protocol::*;
        let t = ServiceTable::build(
            "cluster.local",
            [
                svc(
                    "ns",
                    "foo-bar",
                    Some([1, 2, 3, 4]),
                    vec![port(None, Tcp, 8080)],
                ),
                svc(
                    "ns",
                    "abc-123",
                    Some([5, 6, 7, 8]),
                    vec![
                        port(Some("u-d-p"), Udp, 8081),
                        port(Some("t-c-p"), Tcp, 8081),
                    ],
                ),
                svc(
                    "ns",
                    "q-u-u-x",
                    Some([9, 8, 7, 6]),
                    vec![port(None, Tcp, 8082), port(Some("8083"), Tcp, 8083)],
                ),
                svc(
                    "ns",
                    "svrc-clusterip-none",
                    None,
                    vec![port(None, Tcp, 8082)],
                ),
                svc(
                    "other",
                    "elsewhere",
                    Some([1, 1, 1, 1]),
                    vec![port(None, Tcp, 1)],
                ),
            ],
        )
        .unwrap();
        let env = service_env(&t, "NS");
        // Services sorted by name: abc-123, foo-bar, q-u-u-x.
        let want = pairs(&[
            ("ABC_123_SERVICE_HOST", "5.6.7.8"),
            ("ABC_123_SERVICE_PORT", "8081"),
            ("ABC_123_SERVICE_PORT_U_D_P", "8081"),
            ("ABC_123_SERVICE_PORT_T_C_P", "8081"),
            ("ABC_123_PORT", "udp://5.6.7.8:8081"),
            ("ABC_123_PORT_8081_UDP", "udp://5.6.7.8:8081"),
            ("ABC_123_PORT_8081_UDP_PROTO", "udp"),
            ("ABC_123_PORT_8081_UDP_PORT", "8081"),
            ("ABC_123_PORT_8081_UDP_ADDR", "5.6.7.8"),
            ("ABC_123_PORT_8081_TCP", "tcp://5.6.7.8:8081"),
            ("ABC_123_PORT_8081_TCP_PROTO", "tcp"),
            ("ABC_123_PORT_8081_TCP_PORT", "8081"),
            ("ABC_123_PORT_8081_TCP_ADDR", "5.6.7.8"),
            ("FOO_BAR_SERVICE_HOST", "1.2.3.4"),
            ("FOO_BAR_SERVICE_PORT", "8080"),
            ("FOO_BAR_PORT", "tcp://1.2.3.4:8080"),
            ("FOO_BAR_PORT_8080_TCP", "tcp://1.2.3.4:8080"),
            ("FOO_BAR_PORT_8080_TCP_PROTO", "tcp"),
            ("FOO_BAR_PORT_8080_TCP_PORT", "8080"),
            ("FOO_BAR_PORT_8080_TCP_ADDR", "1.2.3.4"),
            ("Q_U_U_X_SERVICE_HOST", "9.8.7.6"),
            ("Q_U_U_X_SERVICE_PORT", "8082"),
            ("Q_U_U_X_SERVICE_PORT_8083", "8083"),
            ("Q_U_U_X_PORT", "tcp://9.8.7.6:8082"),
            ("Q_U_U_X_PORT_8082_TCP", "tcp://9.8.7.6:8082"),
            ("Q_U_U_X_PORT_8082_TCP_PROTO", "tcp"),
            ("Q_U_U_X_PORT_8082_TCP_PORT", "8082"),
            ("Q_U_U_X_PORT_8082_TCP_ADDR", "9.8.7.6"),
            ("Q_U_U_X_PORT_8083_TCP", "tcp://9.8.7.6:8083"),
            ("Q_U_U_X_PORT_8083_TCP_PROTO", "tcp"),
            ("Q_U_U_X_PORT_8083_TCP_PORT", "8083"),
            ("Q_U_U_X_PORT_8083_TCP_ADDR", "9.8.7.6"),
        ]);
        assert_eq!(env, want);
    }

    #[test]
    fn headless_other_namespaces_and_portless() {
        let t = ServiceTable::build(
            "cluster.local",
            [
                svc(
                    "a",
                    "headless",
                    None,
                    vec![port(Some("x"), Protocol::Tcp, 1)],
                ),
                svc("a", "bare", Some([10, 0, 0, 1]), vec![]),
                svc(
                    "b",
                    "other",
                    Some([10, 0, 0, 2]),
                    vec![port(None, Protocol::Tcp, 2)],
                ),
            ],
        )
        .unwrap();
        assert_eq!(
            service_env(&t, "a"),
            pairs(&[("BARE_SERVICE_HOST", "10.0.0.1")])
        );
        assert!(service_env(&t, "missing").is_empty());
    }
}
