//! `v1 Service`. The cluster IP and node ports a Service is given are
//! allocated at admission (`api::admission`), which knows the cluster;
//! here only their form is checked.

use super::meta::{labels, metadata, NameRule};
use super::pod::protocol;
use super::walk::{dns_label, index, join, port_name, show, Harmless, Obj, Treat, Walker};
use crate::api::meta::IntOrString;
use crate::api::pod::Protocol;
use crate::api::service::{Service, ServicePort, ServiceSpec, ServiceType, CLUSTER_IP_NONE};
use crate::api::Kind;
use outpost_proto::pod::pod_limits::MAX_PORTS;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

const ROUTING: &str =
    "Outpost picks an endpoint per connection: same node, then same site, then others";

/// A `v1 Service` document.
pub fn service(w: &mut Walker, top: &Obj<'_>) -> Service {
    let metadata = metadata(w, top.get("metadata"), Kind::Service, NameRule::Label);
    let mut svc = Service {
        metadata,
        ..Service::default()
    };
    let Some(v) = w.required("", top, "spec") else {
        return svc;
    };
    let Some(s) = w.obj(
        "spec",
        v,
        &[
            ("type", Treat::Use),
            ("ports", Treat::Use),
            ("selector", Treat::Use),
            ("clusterIP", Treat::Use),
            ("clusterIPs", Treat::Use),
            ("ipFamilies", Treat::Use),
            (
                "ipFamilyPolicy",
                Treat::InformIf(
                    Harmless::OneOf(&["SingleStack", "PreferDualStack"]),
                    "Services have one IPv4 cluster IP",
                ),
            ),
            ("sessionAffinity", Treat::Inform(ROUTING)),
            ("sessionAffinityConfig", Treat::Inform(ROUTING)),
            ("externalTrafficPolicy", Treat::Inform(ROUTING)),
            ("internalTrafficPolicy", Treat::Inform(ROUTING)),
            (
                "allocateLoadBalancerNodePorts",
                Treat::Inform("LoadBalancer Services always open node ports"),
            ),
            (
                "publishNotReadyAddresses",
                Treat::InformIf(Harmless::False, "only ready pods receive traffic"),
            ),
        ],
    ) else {
        return svc;
    };
    let mut spec = ServiceSpec::default();
    if let Some(t) = s.get("type") {
        match w.string("spec.type", t).as_deref() {
            Some("ClusterIP") => spec.kind = ServiceType::ClusterIP,
            Some("NodePort") => spec.kind = ServiceType::NodePort,
            Some("LoadBalancer") => spec.kind = ServiceType::LoadBalancer,
            Some("ExternalName") => w.err(
                "spec.type",
                "ExternalName Services are not supported by Outpost (types: ClusterIP, NodePort, LoadBalancer)",
            ),
            Some(other) => w.err(
                "spec.type",
                format!("{other:?} is not one of ClusterIP, NodePort, LoadBalancer"),
            ),
            None => {}
        }
    }
    spec.selector = labels(w, "spec.selector", s.get("selector"));
    if spec.selector.is_empty() && w.problems.is_empty() {
        w.warn(
            "spec.selector",
            "empty: the Service gets no endpoints (Outpost keeps endpoints only from a selector)",
        );
    }
    spec.cluster_ip = cluster_ip(w, &s, spec.kind);
    spec.ports = ports(w, s.get("ports"), spec.kind);
    if spec.ports.is_empty()
        && spec.cluster_ip != CLUSTER_IP_NONE
        && s.get("ports").is_none_or(Value::is_array)
    {
        w.err(
            "spec.ports",
            "needs at least one port (only a headless Service may have none)",
        );
    }
    svc.spec = spec;
    svc
}

fn cluster_ip(w: &mut Walker, s: &Obj<'_>, kind: ServiceType) -> String {
    let ip = s
        .get("clusterIP")
        .and_then(|v| w.text("spec.clusterIP", v, 64))
        .unwrap_or_default();
    let mut ip = match ip.as_str() {
        "" => String::new(),
        CLUSTER_IP_NONE => {
            if kind != ServiceType::ClusterIP {
                w.err(
                    "spec.clusterIP",
                    format!(
                        "None (headless) is only for type ClusterIP, not {}",
                        kind.name()
                    ),
                );
            }
            ip
        }
        other => {
            match other.parse::<Ipv4Addr>() {
                Ok(a) => a.to_string(),
                Err(_) => {
                    w.err(
                    "spec.clusterIP",
                    format!("{other:?} must be empty (allocated), None (headless) or an IPv4 address"),
                );
                    String::new()
                }
            }
        }
    };
    if let Some(v) = s.get("clusterIPs") {
        let ips = w.strings("spec.clusterIPs", Some(v), 2, 64);
        match ips.as_slice() {
            [] => {}
            [one] if ip.is_empty() || *one == ip => {
                if ip.is_empty() && (one == CLUSTER_IP_NONE || one.parse::<Ipv4Addr>().is_ok()) {
                    ip.clone_from(one);
                }
                w.warn(
                    "spec.clusterIPs",
                    "ignored: Outpost keeps the one cluster IP in spec.clusterIP",
                );
            }
            [one] => w.err(
                "spec.clusterIPs",
                format!("{one:?} disagrees with spec.clusterIP {ip:?}"),
            ),
            _ => w.err(
                "spec.clusterIPs",
                "Outpost gives a Service one IPv4 cluster IP (no dual stack)",
            ),
        }
    }
    if let Some(v) = s.get("ipFamilies") {
        let fams = w.strings("spec.ipFamilies", Some(v), 2, 8);
        if fams.iter().all(|f| f == "IPv4") {
            w.warn("spec.ipFamilies", "ignored: Services are IPv4");
        } else {
            w.err(
                "spec.ipFamilies",
                "Outpost allocates IPv4 cluster IPs only; use [IPv4]",
            );
        }
    }
    ip
}

fn ports(w: &mut Walker, v: Option<&Value>, kind: ServiceType) -> Vec<ServicePort> {
    let path = "spec.ports";
    let items = w.list(path, v, MAX_PORTS);
    let many = items.len() > 1;
    let mut out: Vec<ServicePort> = Vec::new();
    let mut names = BTreeSet::new();
    let mut pairs = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        let Some(o) = w.obj(
            &p,
            item,
            &[
                ("name", Treat::Use),
                ("protocol", Treat::Use),
                ("port", Treat::Use),
                ("targetPort", Treat::Use),
                ("nodePort", Treat::Use),
                (
                    "appProtocol",
                    Treat::Inform("Outpost forwards the bytes as they are"),
                ),
            ],
        ) else {
            continue;
        };
        let name = w.opt_text(&p, &o, "name", 63).unwrap_or_default();
        if name.is_empty() {
            if many {
                w.err(
                    &join(&p, "name"),
                    "is required when a Service has more than one port",
                );
            }
        } else if let Err(e) = dns_label(&name) {
            w.err(&join(&p, "name"), e);
        } else if !names.insert(name.clone()) {
            w.err(
                &join(&p, "name"),
                format!("port name {name:?} is used twice"),
            );
        }
        let protocol = o.get("protocol").map_or(Some(Protocol::TCP), |v| {
            protocol(w, &join(&p, "protocol"), v)
        });
        let port = w
            .required(&p, &o, "port")
            .and_then(|v| w.port(&join(&p, "port"), v));
        let target_port = match o.get("targetPort") {
            None => port.map(|n| IntOrString::Int(i64::from(n))),
            Some(Value::String(s)) => match port_name(s) {
                Ok(()) => Some(IntOrString::String(s.clone())),
                Err(e) => {
                    w.err(&join(&p, "targetPort"), e);
                    None
                }
            },
            Some(v @ Value::Number(_)) => w
                .port(&join(&p, "targetPort"), v)
                .map(|n| IntOrString::Int(i64::from(n))),
            Some(other) => {
                w.err(
                    &join(&p, "targetPort"),
                    format!("must be a port number or a port name, not {}", show(other)),
                );
                None
            }
        };
        let node_port = o.get("nodePort").and_then(|v| {
            if kind == ServiceType::ClusterIP {
                w.err(
                    &join(&p, "nodePort"),
                    "is only for type NodePort or LoadBalancer",
                );
                None
            } else {
                w.port(&join(&p, "nodePort"), v)
            }
        });
        if let (Some(protocol), Some(port), Some(target_port)) = (protocol, port, target_port) {
            if !pairs.insert((port, protocol)) {
                w.err(
                    &join(&p, "port"),
                    format!("{port}/{} is given twice", protocol.name()),
                );
            }
            out.push(ServicePort {
                name,
                protocol,
                port,
                target_port,
                node_port,
            });
        }
    }
    out
}
