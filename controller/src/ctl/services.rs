//! Services and Endpoints: `get` rows in kubectl's columns (ports as
//! `80:31234/TCP`, external IPs from the load balancer's ingress,
//! endpoints as `10.1.0.5:80,... + 3 more...`) and descriptions, which
//! also say which nodes (and sites) serve a Service.

use super::{age_of, decode, meta_fields, table, Context, Describe, RenderError, Row, Subject};
use crate::api::service::{EndpointAddress, ServiceType};
use crate::api::{Endpoints, Kind, Service};
use serde_json::Value;
use std::collections::BTreeSet;

/// How many endpoints `get endpoints` lists before `+ N more...`.
const MAX_LISTED_ENDPOINTS: usize = 3;
/// Longest EXTERNAL-IP cell outside `-o wide` (kubectl's limit).
const MAX_EXTERNAL_IP: usize = 16;

/// PORT(S): `80/TCP`, `80:31234/TCP` with a node port.
pub fn ports_text(s: &Service) -> String {
    if s.spec.ports.is_empty() {
        return "<none>".into();
    }
    s.spec
        .ports
        .iter()
        .map(|p| match p.node_port {
            Some(np) if np > 0 => format!("{}:{np}/{}", p.port, p.protocol.name()),
            _ => format!("{}/{}", p.port, p.protocol.name()),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// EXTERNAL-IP as kubectl derives it: the load balancer's ingress for a
/// LoadBalancer (`<pending>` until it has one), `<none>` otherwise.
pub fn external_ip(s: &Service, wide: bool) -> String {
    match s.spec.kind {
        ServiceType::ClusterIP | ServiceType::NodePort => "<none>".into(),
        ServiceType::LoadBalancer => {
            // A sorted set, as kubectl's loadBalancerStatusStringer.
            let ips: BTreeSet<&str> = s
                .status
                .load_balancer
                .ingress
                .iter()
                .map(|i| i.ip.as_str())
                .filter(|i| !i.is_empty())
                .collect();
            let text = ips.into_iter().collect::<Vec<_>>().join(",");
            if text.is_empty() {
                "<pending>".into()
            } else if !wide && text.len() > MAX_EXTERNAL_IP {
                format!("{}...", &text[..MAX_EXTERNAL_IP - 3])
            } else {
                text
            }
        }
    }
}

fn selector_text(s: &Service) -> String {
    if s.spec.selector.is_empty() {
        "<none>".into()
    } else {
        super::labels_text(&s.spec.selector, "=").join(",")
    }
}

/// `get services`: TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE (+ SELECTOR).
pub fn service_row(v: &Value, ctx: &Context<'_>) -> Result<Row, RenderError> {
    let s: Service = decode(Kind::Service, v)?;
    Ok(Row::of(
        v,
        vec![
            s.spec.kind.name().to_string(),
            super::or_none(&s.spec.cluster_ip),
            external_ip(&s, ctx.wide),
            ports_text(&s),
            age_of(s.metadata.creation_timestamp, ctx.now_ms),
            selector_text(&s),
        ],
    ))
}

/// ENDPOINTS as kubectl's `formatEndpoints`: `ip:port` for every port of
/// every ready address (just the ip where a subset has no ports), the
/// first three, then `+ N more...`; `ports` limits it to named ports.
pub fn endpoints_text(e: &Endpoints, ports: Option<&str>) -> String {
    let mut list = Vec::new();
    let mut count = 0usize;
    for ss in &e.subsets {
        if ss.ports.is_empty() {
            count += ss.addresses.len();
            for a in &ss.addresses {
                if list.len() == MAX_LISTED_ENDPOINTS {
                    break;
                }
                list.push(a.ip.clone());
            }
            continue;
        }
        for p in ss
            .ports
            .iter()
            .filter(|p| ports.is_none_or(|n| n == p.name))
        {
            count += ss.addresses.len();
            for a in &ss.addresses {
                if list.len() == MAX_LISTED_ENDPOINTS {
                    break;
                }
                list.push(if a.ip.contains(':') {
                    format!("[{}]:{}", a.ip, p.port)
                } else {
                    format!("{}:{}", a.ip, p.port)
                });
            }
        }
    }
    let text = list.join(",");
    if count > list.len() {
        format!("{text} + {} more...", count - list.len())
    } else if text.is_empty() {
        "<none>".into()
    } else {
        text
    }
}

fn ready_addresses(e: &Endpoints) -> impl Iterator<Item = &EndpointAddress> {
    e.subsets.iter().flat_map(|s| s.addresses.iter())
}

fn distinct<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let set: BTreeSet<&str> = items.filter(|s| !s.is_empty()).collect();
    if set.is_empty() {
        "<none>".into()
    } else {
        set.into_iter().collect::<Vec<_>>().join(",")
    }
}

/// `get endpoints`: ENDPOINTS AGE (+ the NODES and SITES they are on).
pub fn endpoints_row(v: &Value, ctx: &Context<'_>) -> Result<Row, RenderError> {
    let e: Endpoints = decode(Kind::Endpoints, v)?;
    Ok(Row::of(
        v,
        vec![
            endpoints_text(&e, None),
            age_of(e.metadata.creation_timestamp, ctx.now_ms),
            distinct(ready_addresses(&e).map(|a| a.node_name.as_str())),
            distinct(ready_addresses(&e).map(|a| a.site.as_str())),
        ],
    ))
}

/// The nodes behind ready endpoints, with their sites and how many
/// endpoints each holds: `edge-1 (site shop-1, 2 endpoints)`.
fn serving_nodes(e: &Endpoints) -> Vec<String> {
    let mut by_node: std::collections::BTreeMap<&str, (&str, usize)> = Default::default();
    for a in ready_addresses(e) {
        let entry = by_node
            .entry(if a.node_name.is_empty() {
                "<unknown node>"
            } else {
                a.node_name.as_str()
            })
            .or_insert((a.site.as_str(), 0));
        entry.1 += 1;
    }
    by_node
        .into_iter()
        .map(|(node, (site, n))| {
            let site = if site.is_empty() {
                "no site".to_string()
            } else {
                format!("site {site}")
            };
            let plural = if n == 1 { "" } else { "s" };
            format!("{node} ({site}, {n} endpoint{plural})")
        })
        .collect()
}

/// `describe service`, with the endpoints and the nodes that serve it.
pub fn describe_service(s: &Subject<'_>) -> Result<String, RenderError> {
    let svc: Service = decode(Kind::Service, s.object)?;
    let eps: Option<Endpoints> = s
        .related
        .first()
        .map(|v| decode(Kind::Endpoints, v))
        .transpose()?;
    let mut d = Describe::new(26);
    meta_fields(&mut d, &svc.metadata, s.now_ms);
    d.field("Selector", selector_text(&svc));
    d.field("Type", svc.spec.kind.name());
    d.field("IP", super::or_none(&svc.spec.cluster_ip));
    let ingress: Vec<String> = svc
        .status
        .load_balancer
        .ingress
        .iter()
        .map(|i| i.ip.clone())
        .collect();
    if svc.spec.kind == ServiceType::LoadBalancer {
        d.field(
            "LoadBalancer Ingress",
            if ingress.is_empty() {
                "<pending>".into()
            } else {
                ingress.join(", ")
            },
        );
    }
    for p in &svc.spec.ports {
        let name = if p.name.is_empty() {
            "<unset>"
        } else {
            p.name.as_str()
        };
        d.field("Port", format!("{name}  {}/{}", p.port, p.protocol.name()));
        d.field(
            "TargetPort",
            format!("{}/{}", p.target_port, p.protocol.name()),
        );
        if let Some(np) = p.node_port {
            d.field("NodePort", format!("{name}  {np}/{}", p.protocol.name()));
        }
        d.field(
            "Endpoints",
            eps.as_ref().map_or("<none>".into(), |e| {
                endpoints_text(e, Some(p.name.as_str()))
            }),
        );
    }
    if svc.spec.ports.is_empty() {
        d.field(
            "Endpoints",
            eps.as_ref()
                .map_or("<none>".into(), |e| endpoints_text(e, None)),
        );
    }
    d.list(
        "Served By",
        &eps.as_ref().map(serving_nodes).unwrap_or_default(),
    );
    let mut o = d.finish();
    super::events::section(&mut o, s.events, s.now_ms);
    Ok(o)
}

/// `describe endpoints`: each subset's addresses and ports, and where each
/// address runs (node, site, the node's address and host ports).
pub fn describe_endpoints(s: &Subject<'_>) -> Result<String, RenderError> {
    let e: Endpoints = decode(Kind::Endpoints, s.object)?;
    let mut d = Describe::new(14);
    meta_fields(&mut d, &e.metadata, s.now_ms);
    let mut o = d.finish();
    o.push_str("Subsets:\n");
    if e.subsets.is_empty() {
        o.push_str("  <none>\n");
    }
    for ss in &e.subsets {
        let ips = |a: &[EndpointAddress]| {
            if a.is_empty() {
                "<none>".to_string()
            } else {
                a.iter()
                    .map(|x| x.ip.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            }
        };
        let mut d = Describe::new(22);
        d.field("  Addresses", ips(&ss.addresses));
        d.field("  NotReadyAddresses", ips(&ss.not_ready_addresses));
        o.push_str(&d.finish());
        o.push_str("  Ports:\n");
        let mut rows = vec![vec!["----".into(), "----".into(), "--------".into()]];
        rows.extend(ss.ports.iter().map(|p| {
            vec![
                super::or_none(&p.name),
                p.port.to_string(),
                p.protocol.name().into(),
            ]
        }));
        for l in table(&["Name", "Port", "Protocol"], &rows).lines() {
            o.push_str(&format!("    {l}\n"));
        }
        let all: Vec<(&EndpointAddress, bool)> = ss
            .addresses
            .iter()
            .map(|a| (a, true))
            .chain(ss.not_ready_addresses.iter().map(|a| (a, false)))
            .collect();
        if !all.is_empty() {
            o.push_str("  Placement:\n");
            let mut rows = vec![vec![
                "-------".into(),
                "-----".into(),
                "----".into(),
                "----".into(),
                "-------".into(),
                "----------".into(),
            ]];
            rows.extend(all.iter().map(|(a, ready)| {
                vec![
                    a.ip.clone(),
                    if *ready { "true" } else { "false" }.into(),
                    super::or_none(&a.node_name),
                    super::or_none(&a.site),
                    super::or_none(&a.node_ip),
                    if a.host_ports.is_empty() {
                        "<none>".into()
                    } else {
                        super::labels_text(
                            &a.host_ports
                                .iter()
                                .map(|(k, v)| (k.clone(), v.to_string()))
                                .collect(),
                            "=",
                        )
                        .join(",")
                    },
                ]
            }));
            let header = ["Address", "Ready", "Node", "Site", "Node IP", "Host Ports"];
            for l in table(&header, &rows).lines() {
                o.push_str(&format!("    {l}\n"));
            }
        }
    }
    o.push('\n');
    super::events::section(&mut o, s.events, s.now_ms);
    Ok(o)
}
