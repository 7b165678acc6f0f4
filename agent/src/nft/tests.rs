use super::*;
use outpost_proto::route::Ipv4Net;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/test_data/nft/{name}", env!("CARGO_MANIFEST_DIR"));
    let hex = std::fs::read_to_string(&path).unwrap();
    let hex = hex.trim();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn web() -> Ruleset {
    Ruleset {
        chains: vec![EndpointChain {
            name: "svc-0".into(),
            l4proto: 6,
            endpoints: vec![
                (Ipv4Addr::new(172, 30, 0, 7), 8080),
                (Ipv4Addr::new(172, 30, 0, 8), 8080),
            ],
        }],
        frontends: vec![KernelFrontend {
            ip: Ipv4Addr::new(10, 43, 0, 5),
            l4proto: 6,
            port: 80,
            chain: 0,
            comment: "default/web".into(),
        }],
    }
}

/// (type, flags, seq, payload after the 16-byte header) of each message.
fn split(buf: &[u8]) -> Vec<(u16, u16, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let len = usize::try_from(u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap())).unwrap();
        assert!(len >= 20 && at + len <= buf.len(), "message length {len}");
        assert_eq!(len % 4, 0, "messages stay aligned");
        let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        let flags = u16::from_ne_bytes([buf[at + 6], buf[at + 7]]);
        let seq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().unwrap());
        out.push((kind, flags, seq, buf[at + 16..at + len].to_vec()));
        at += len;
    }
    out
}

#[test]
fn a_replace_batch_is_one_transaction_in_the_order_the_kernel_needs() {
    let (buf, labels) = encode_replace(&web(), 100);
    let m = split(&buf);
    let kinds: Vec<u16> = m.iter().map(|m| m.0).collect();
    let t = |k| nft_type(k);
    assert_eq!(
        kinds,
        [
            NFNL_MSG_BATCH_BEGIN,
            t(NFT_MSG_NEWTABLE),
            t(NFT_MSG_DELTABLE),
            t(NFT_MSG_NEWTABLE),
            t(NFT_MSG_NEWCHAIN), // prerouting
            t(NFT_MSG_NEWCHAIN), // output
            t(NFT_MSG_NEWCHAIN), // postrouting
            t(NFT_MSG_NEWRULE),  // masquerade
            t(NFT_MSG_NEWCHAIN), // svc-0
            t(NFT_MSG_NEWRULE),  // mark
            t(NFT_MSG_NEWRULE),  // dnat 1 of 2
            t(NFT_MSG_NEWRULE),  // dnat 2 of 2
            t(NFT_MSG_NEWRULE),  // prerouting frontend
            t(NFT_MSG_NEWRULE),  // output frontend
            NFNL_MSG_BATCH_END,
        ]
    );
    // Batch markers: AF_UNSPEC, res_id = NFNL_SUBSYS_NFTABLES big-endian.
    assert_eq!(m[0].3, [0, 0, 0, 10]);
    assert_eq!(m[14].3, [0, 0, 0, 10]);
    let seqs: Vec<u32> = m.iter().map(|m| m.2).collect();
    assert_eq!(seqs, (100..115).collect::<Vec<_>>());
    assert_eq!(
        labels.len(),
        13,
        "every message between the markers is acknowledged"
    );
    assert!(m[1..14].iter().all(|m| m.1 & NLM_F_ACK != 0));
    assert_eq!(labels[0], (101, "add table ip outpost".into()));
    assert!(labels[11]
        .1
        .contains("10.43.0.5:80/6 jump svc-0 (default/web)"));
    // NEWTABLE creates (no EXCL: an existing table is fine), DELTABLE only
    // asks; rules append.
    assert_eq!(m[1].1, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK);
    assert_eq!(m[2].1, NLM_F_REQUEST | NLM_F_ACK);
    assert_eq!(
        m[7].1,
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK
    );
}

#[test]
fn tables_and_chains_are_laid_out_as_nft_sends_them() {
    let (buf, _) = encode_replace(&web(), 1);
    let m = split(&buf);
    // nft -d mnl of `table ip outpost`: family ipv4, name, flags 0.
    let table = "020000000c0001006f7574706f7374000800020000000000";
    assert_eq!(hex(&m[1].3), table);
    assert_eq!(hex(&m[2].3), "020000000c0001006f7574706f737400");
    // Regular chain svc-0, as nft sends it.
    assert_eq!(
        hex(&m[8].3),
        "020000000c0001006f7574706f7374000a0003007376632d30000000"
    );
    // prerouting: table, name, hook {hooknum 0, priority -100}, policy
    // accept, type nat.
    let mut want = Vec::new();
    want.extend_from_slice(&[2, 0, 0, 0]);
    attr_str(&mut want, NFTA_CHAIN_TABLE, "outpost");
    attr_str(&mut want, NFTA_CHAIN_NAME, "prerouting");
    want.extend_from_slice(&20u16.to_ne_bytes());
    want.extend_from_slice(&(NFTA_CHAIN_HOOK | NLA_F_NESTED).to_ne_bytes());
    want.extend_from_slice(&8u16.to_ne_bytes());
    want.extend_from_slice(&NFTA_HOOK_HOOKNUM.to_ne_bytes());
    want.extend_from_slice(&[0, 0, 0, 0]);
    want.extend_from_slice(&8u16.to_ne_bytes());
    want.extend_from_slice(&NFTA_HOOK_PRIORITY.to_ne_bytes());
    want.extend_from_slice(&[0xff, 0xff, 0xff, 0x9c]);
    want.extend_from_slice(&8u16.to_ne_bytes());
    want.extend_from_slice(&NFTA_CHAIN_POLICY.to_ne_bytes());
    want.extend_from_slice(&[0, 0, 0, 1]);
    want.extend_from_slice(&8u16.to_ne_bytes());
    want.extend_from_slice(&NFTA_CHAIN_TYPE.to_ne_bytes());
    want.extend_from_slice(b"nat\0");
    assert_eq!(hex(&m[4].3), hex(&want));
    // postrouting: hook 4, priority +100.
    assert!(hex(&m[6].3).contains("0800010000000004080002000000006"));
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// The fixtures are `nft -d mnl -f test_data/nft/source.nft` (nftables
/// 1.0.6, on x86_64: little-endian lengths and marks), one rule each.
#[test]
#[cfg(target_endian = "little")]
fn rules_are_byte_for_byte_what_nft_sends() {
    let (buf, _) = encode_replace(&web(), 1);
    let m = split(&buf);
    assert_eq!(hex(&m[7].3), hex(&fixture("masquerade-rule.hex")));
    assert_eq!(hex(&m[9].3), hex(&fixture("mark-rule.hex")));
    assert_eq!(hex(&m[10].3), hex(&fixture("endpoint-rule.hex")));
    assert_eq!(hex(&m[12].3), hex(&fixture("frontend-rule.hex")));
    // The output chain's frontend differs only in the chain's name.
    let out = hex(&m[13].3);
    assert!(out.contains(&hex(b"output\0")), "{out}");
    // The last endpoint takes what is left: no numgen.
    assert!(!hex(&m[11].3).contains(&hex(b"numgen")));
    assert!(hex(&m[11].3).contains("ac1e0008"));
}

#[test]
fn a_remove_batch_deletes_only() {
    let (buf, labels) = encode_remove(5);
    let kinds: Vec<u16> = split(&buf).iter().map(|m| m.0).collect();
    assert_eq!(
        kinds,
        [
            NFNL_MSG_BATCH_BEGIN,
            nft_type(NFT_MSG_DELTABLE),
            NFNL_MSG_BATCH_END
        ]
    );
    assert_eq!(labels, [(6, "delete table ip outpost".to_string())]);
}

#[test]
fn long_comments_are_cut_on_a_character_boundary() {
    let mut r = web();
    r.frontends[0].comment = "é".repeat(150);
    let (buf, _) = encode_replace(&r, 1);
    let m = split(&buf);
    let body = &m[12].3[4..];
    let a = attrs(body).unwrap();
    let u = a.iter().find(|(k, _)| *k == NFTA_RULE_USERDATA).unwrap().1;
    let c = udata_comment(u).unwrap();
    assert_eq!(c.len(), MAX_COMMENT);
    assert!(c.chars().all(|ch| ch == 'é'));
}

/// A NEWRULE of a dump: comment and a counter of `packets`.
fn dumped_rule(seq: u32, comment: Option<&str>, packets: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    message(&mut buf, nft_type(NFT_MSG_NEWRULE), 2, seq, 2, 0, |b| {
        attr_str(b, NFTA_RULE_TABLE, "outpost");
        attr_str(b, NFTA_RULE_CHAIN, "prerouting");
        attr(b, 3, &9u64.to_be_bytes());
        nest(b, NFTA_RULE_EXPRESSIONS, |b| {
            nest(b, NFTA_LIST_ELEM, |b| {
                attr_str(b, NFTA_EXPR_NAME, "counter");
                nest(b, NFTA_EXPR_DATA, |b| {
                    attr(b, 1, &1500u64.to_be_bytes());
                    attr(b, NFTA_COUNTER_PACKETS, &packets.to_be_bytes());
                });
            });
            nest(b, NFTA_LIST_ELEM, |b| {
                attr_str(b, NFTA_EXPR_NAME, "immediate")
            });
        });
        if let Some(c) = comment {
            let mut u = vec![0, u8::try_from(c.len() + 1).unwrap()];
            u.extend_from_slice(c.as_bytes());
            u.push(0);
            attr(b, NFTA_RULE_USERDATA, &u);
        }
    });
    buf
}

fn done(seq: u32) -> Vec<u8> {
    let mut buf = Vec::new();
    message(&mut buf, NLMSG_DONE, 2, seq, 0, 0, |_| {});
    buf
}

#[test]
fn counters_are_summed_by_comment_from_a_dump() {
    let mut buf = dumped_rule(4, Some("default/web"), 7);
    buf.extend(dumped_rule(4, Some("default/web"), 3)); // the output chain's
    buf.extend(dumped_rule(4, Some("default/db"), 1));
    buf.extend(dumped_rule(4, None, 99)); // the masquerade rule: no comment
    buf.extend(dumped_rule(3, Some("default/old"), 5)); // another request
    let part = decode_counters(&buf, 4).unwrap();
    assert!(!part.done);
    assert_eq!(
        part.counters,
        [
            ("default/web".to_string(), 10),
            ("default/db".to_string(), 1)
        ]
    );
    assert!(decode_counters(&done(4), 4).unwrap().done);
}

#[test]
fn a_bad_dump_is_an_error_not_a_panic() {
    let good = dumped_rule(1, Some("default/web"), 7);
    for cut in [1, 15, 16, 40, good.len() - 1] {
        // A length beyond the buffer, or a message cut short: an error.
        assert!(decode_counters(&good[..cut], 1).is_err(), "cut at {cut}");
    }
    let mut bad = good.clone();
    bad[0..4].copy_from_slice(&8u32.to_ne_bytes());
    assert_eq!(decode_counters(&bad, 1), Err(DecodeError::Length));
    // An attribute claiming more than its nest holds.
    let mut bad = good.clone();
    let at = 20 + 12; // after nfgenmsg and the table attribute
    bad[at..at + 2].copy_from_slice(&200u16.to_ne_bytes());
    assert_eq!(decode_counters(&bad, 1), Err(DecodeError::Length));
    // A comment that is not a well-formed TLV: the rule is skipped.
    let mut buf = Vec::new();
    message(&mut buf, nft_type(NFT_MSG_NEWRULE), 2, 1, 2, 0, |b| {
        attr(b, NFTA_RULE_USERDATA, &[0, 200, b'x']);
    });
    assert_eq!(decode_counters(&buf, 1).unwrap().counters, []);
    // The kernel's refusal.
    let mut err = Vec::new();
    message(&mut err, NLMSG_ERROR, 0, 1, 0, 0, |_| {});
    err[16..20].copy_from_slice(&(-2i32).to_ne_bytes());
    assert_eq!(decode_counters(&err, 1), Err(DecodeError::Refused(2)));
    // Random bytes never panic.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2000 {
        let mut b = good.clone();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = usize::try_from(x % b.len() as u64).unwrap();
        b[i] = u8::try_from((x >> 32) & 0xff).unwrap();
        let _ = decode_counters(&b, 1);
    }
}

use crate::testns::TestNs;

/// `nft ARGS` inside `ns`: its output.
fn nft_in(ns: &TestNs, args: &[&str]) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns.name(), "nft"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

type NsResult<T> = Result<T, crate::netlink::RouteError>;
/// Which endpoint served each connection, the counters, whether a connect
/// was refused after the table emptied, and the refused batch's error.
type Seen = (Vec<u8>, Vec<(String, u64)>, bool, String);

fn io<E: std::fmt::Display>(e: E) -> crate::netlink::RouteError {
    crate::netlink::RouteError::Io(std::io::Error::other(e.to_string()))
}

#[test]
fn a_table_programmed_in_a_namespace_of_our_own_dnats_and_counts() {
    if !is_root() {
        eprintln!("skipped: not root (needs `ip netns add` and CAP_NET_ADMIN)");
        return;
    }
    let (Some(ns), Some(pod)) = (TestNs::new("nft"), TestNs::new("nft-pod")) else {
        panic!("root but `ip netns add` failed");
    };
    // The agent's namespace and a pod's, on a veth pair as on a bridge.
    let ip = |args: &[&str]| {
        let ok = std::process::Command::new("ip")
            .args(args)
            .status()
            .unwrap();
        assert!(ok.success(), "ip {args:?}");
    };
    ip(&[
        "-n",
        ns.name(),
        "link",
        "add",
        "va",
        "type",
        "veth",
        "peer",
        "name",
        "vb",
        "netns",
        pod.name(),
    ]);
    ip(&["-n", ns.name(), "addr", "add", "172.31.0.1/24", "dev", "va"]);
    ip(&["-n", ns.name(), "link", "set", "va", "up"]);
    ip(&[
        "-n",
        pod.name(),
        "addr",
        "add",
        "172.31.0.2/24",
        "dev",
        "vb",
    ]);
    ip(&["-n", pod.name(), "link", "set", "vb", "up"]);
    let pod_ip = Ipv4Addr::new(172, 31, 0, 2);
    let mut ports = Vec::new();
    for id in [b'a', b'b'] {
        let (tx, rx) = std::sync::mpsc::channel();
        let pod_ns = pod.file();
        std::thread::spawn(move || {
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&pod_ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap();
            let l = std::net::TcpListener::bind((pod_ip, 0)).unwrap();
            tx.send(l.local_addr().unwrap().port()).unwrap();
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let _ = std::io::Write::write_all(&mut s, &[id]);
            }
        });
        ports.push(rx.recv().unwrap());
    }
    let front = std::net::SocketAddr::from(([10, 43, 0, 5], 80));
    // Inside the agent's namespace: the Service range local (as the agent
    // claims it), the table over the pod's two endpoints.
    let (served, counted, refused_after, bad) =
        crate::netlink::in_namespace(ns.file(), 0, move || -> NsResult<Seen> {
            crate::netlink::claim_local(Ipv4Net {
                addr: Ipv4Addr::new(10, 43, 0, 0),
                prefix: 16,
            })?;
            let r = Ruleset {
                chains: vec![EndpointChain {
                    name: "svc-0".into(),
                    l4proto: 6,
                    endpoints: ports.iter().map(|p| (pod_ip, *p)).collect(),
                }],
                frontends: vec![KernelFrontend {
                    ip: Ipv4Addr::new(10, 43, 0, 5),
                    l4proto: 6,
                    port: 80,
                    chain: 0,
                    comment: "default/web".into(),
                }],
            };
            let mut s = Socket::open().map_err(io)?;
            s.remove().map_err(io)?; // nothing there yet: done
            s.replace(&r).map_err(io)?;
            s.replace(&r).map_err(io)?; // replacing is idempotent
            for _ in 0..20 {
                // As the agent does: counters now and then, and before
                // each replace.
                s.counters().map_err(io)?;
                s.counters().map_err(io)?;
                s.replace(&r).map_err(io)?;
            }
            let mut served = Vec::new();
            for _ in 0..40 {
                let mut c = std::net::TcpStream::connect_timeout(&front, Duration::from_secs(2))
                    .map_err(io)?;
                let mut b = [0u8; 1];
                std::io::Read::read_exact(&mut c, &mut b).map_err(io)?;
                served.push(b[0]);
            }
            let counted = s.counters().map_err(io)?;
            // A batch the kernel refuses changes nothing.
            let mut broken = r.clone();
            broken.chains[0].name = "x".repeat(300);
            let bad = match s.replace(&broken) {
                Err(e) => e.to_string(),
                Ok(()) => "accepted".into(),
            };
            let still =
                std::net::TcpStream::connect_timeout(&front, Duration::from_secs(2)).is_ok();
            assert!(still, "the table of before survives a refused batch");
            s.replace(&Ruleset::default()).map_err(io)?;
            let refused_after = std::net::TcpStream::connect(front).is_err();
            Ok((served, counted, refused_after, bad))
        })
        .unwrap();
    let a = served.iter().filter(|b| **b == b'a').count();
    println!(
        "40 connections through the kernel's DNAT: {a} to endpoint a, {} to b",
        40 - a
    );
    assert!(
        a > 0 && a < 40,
        "both endpoints take connections: {a} of 40"
    );
    assert_eq!(
        counted,
        [("default/web".to_string(), 40)],
        "one count per connection"
    );
    assert!(bad.contains("refused `add chain xxx"), "{bad}");
    assert!(refused_after, "an empty table forwards nothing");
    let listed = nft_in(&ns, &["list", "table", "ip", "outpost"]);
    assert!(
        listed.contains("type nat hook prerouting priority dstnat"),
        "{listed}"
    );
    assert!(
        listed.contains("meta mark & 0x00004000 != 0x00000000 masquerade"),
        "{listed}"
    );
    crate::netlink::in_namespace(ns.file(), 0, || -> NsResult<()> {
        let mut s = Socket::open().map_err(io)?;
        s.replace(&web()).map_err(io)?;
        Ok(())
    })
    .unwrap();
    let listed = nft_in(&ns, &["list", "table", "ip", "outpost"]);
    println!("{listed}");
    for want in [
        "ip daddr 10.43.0.5 tcp dport 80 counter packets 0 bytes 0 jump svc-0 comment \"default/web\"",
        "numgen random mod 2 0 meta l4proto tcp dnat to 172.30.0.7:8080",
        "meta l4proto tcp dnat to 172.30.0.8:8080",
        "meta mark set meta mark | 0x00004000",
        "type nat hook output priority -100",
        "type nat hook postrouting priority srcnat",
    ] {
        assert!(listed.contains(want), "missing {want:?} in\n{listed}");
    }
    crate::netlink::in_namespace(ns.file(), 0, || -> NsResult<()> {
        let mut s = Socket::open().map_err(io)?;
        s.remove().map_err(io)?;
        s.remove().map_err(io)?;
        Ok(())
    })
    .unwrap();
    assert_eq!(nft_in(&ns, &["list", "tables"]).trim(), "", "removed");
}
