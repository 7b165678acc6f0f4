//! A small nf_tables client over netlink (NETLINK_NETFILTER): enough to
//! replace the agent's own table `ip outpost` in one atomic batch and to
//! read its rule counters back. No C library and no `nft` binary: the agent
//! is a static binary from an empty image.
//!
//! Data flow: [`Ruleset`] (what the kernel should do, built by
//! `proxy::kernel::plan`) is encoded by [`encode_replace`] into one batch:
//! `BATCH_BEGIN`, `NEWTABLE`, `DELTABLE`, `NEWTABLE` (add first so the
//! delete never fails on a missing table, as kube-proxy's nftables mode
//! does), the chains and rules, `BATCH_END`. The kernel applies the batch
//! whole or not at all, so no stale rule survives a change and no packet
//! sees half a table. Every message asks for an acknowledgement;
//! [`Socket::replace`] waits for all of them and reports the first refusal
//! with its errno and the message it refused. [`decode_counters`] reads a
//! `GETRULE` dump: the packets of each rule's `counter` by the rule's
//! comment (the Service's `namespace/name`).
//!
//! The ruleset, in `nft` syntax (`nft list table ip outpost` shows it):
//!
//! ```text
//! chain prerouting { type nat hook prerouting priority dstnat; policy accept;
//!     ip daddr 10.43.0.5 meta l4proto tcp th dport 80 counter jump svc-0 comment "default/web" }
//! chain output { type nat hook output priority -100; ... the same frontends ... }
//! chain postrouting { type nat hook postrouting priority srcnat;
//!     meta mark & 0x4000 != 0 masquerade }
//! chain svc-0 { meta mark set meta mark | 0x4000
//!     numgen random mod 2 == 0 dnat to 172.30.0.7:8080
//!     dnat to 172.30.0.8:8080 }
//! ```
//!
//! Rule i of N picks its endpoint with probability 1/(N-i) of the
//! connections that reach it, so each of the N takes 1/N (kube-proxy's
//! iptables mode, without maps). The mark (kube-proxy's 0x4000) limits the
//! masquerade to connections this table DNATed: on a box whose agent runs
//! in the host's namespace, Docker's own published ports keep their
//! clients' addresses. NAT chains see only the first packet of a
//! connection, so a frontend rule's counter counts connections.
//!
//! Layout from linux/include/uapi/linux/netfilter/nf_tables.h and
//! nfnetlink.h: attribute values are big-endian (`nla_put_be32`) except
//! register contents, which are raw bytes (addresses and ports in network
//! order, marks in host order). Every byte read back is bounded and checked.

use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType};
use std::net::Ipv4Addr;
use std::time::Duration;

/// The table the agent owns wholly.
pub const TABLE: &str = "outpost";
/// Packet mark bit of connections to masquerade (kube-proxy's value).
pub const MASQ_MARK: u32 = 0x4000;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

const NFPROTO_IPV4: u8 = 2;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_COUNTER_PACKETS: u16 = 2;
/// libnftnl's rule comment in the user data (`NFTNL_UDATA_RULE_COMMENT`),
/// so `nft list` shows it.
const UDATA_RULE_COMMENT: u8 = 0;

const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_LOCAL_OUT: u32 = 3;
const NF_INET_POST_ROUTING: u32 = 4;
/// `NF_IP_PRI_NAT_DST` (nft's `dstnat`) and `NF_IP_PRI_NAT_SRC` (`srcnat`).
const PRIORITY_DSTNAT: i32 = -100;
const PRIORITY_SRCNAT: i32 = 100;
const NF_ACCEPT: u32 = 1;
const NFT_JUMP: i32 = -3;

const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_REG_2: u32 = 2;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_META_MARK: u32 = 3;
const NFT_META_L4PROTO: u32 = 16;
const NFT_NG_RANDOM: u32 = 1;
const NFT_NAT_DNAT: u32 = 1;

/// Longest rule comment: libnftnl's user data holds a one-byte length.
pub const MAX_COMMENT: usize = 200;
/// Most bytes one dump may return before it is given up: far above what
/// [`crate::proxy::kernel::MAX_RULES`] rules take (about 200 bytes each).
pub const MAX_DUMP: usize = 4 << 20;
/// Largest batch sent: [`crate::proxy::kernel::MAX_RULES`] rules of up to
/// about 700 bytes each fit.
pub const MAX_BATCH: usize = 2 << 20;
/// How long the kernel may take to answer before the request has failed.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// What the kernel forwards: frontends jumping to endpoint chains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// One chain per Service port, with its endpoints.
    pub chains: Vec<EndpointChain>,
    /// Addresses and ports to DNAT, in the order matched.
    pub frontends: Vec<KernelFrontend>,
}

/// A chain that marks the connection and DNATs it to one of `endpoints`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointChain {
    pub name: String,
    /// IP protocol number of its frontends.
    pub l4proto: u8,
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

/// `ip daddr IP meta l4proto PROTO th dport PORT counter jump CHAIN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFrontend {
    pub ip: Ipv4Addr,
    /// IP protocol number (6: TCP, 17: UDP).
    pub l4proto: u8,
    pub port: u16,
    /// Index into [`Ruleset::chains`].
    pub chain: usize,
    /// The rule's comment: what its counter is counted under.
    pub comment: String,
}

/// One nf_tables expression, as the kernel takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    Payload {
        base: u32,
        offset: u32,
        len: u32,
    },
    Cmp {
        op: u32,
        data: Vec<u8>,
    },
    Meta {
        key: u32,
    },
    MetaSet {
        key: u32,
    },
    /// `reg1 = (reg1 & mask) ^ xor`.
    Bitwise {
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    Counter,
    Numgen {
        modulus: u32,
    },
    Immediate {
        dreg: u32,
        data: Vec<u8>,
    },
    Jump {
        chain: String,
    },
    Dnat,
    Masq,
}

/// Appends attribute `kind` holding `data`, padded to four bytes.
fn attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = u16::try_from(4 + data.len()).expect("attribute under 64 KiB");
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    pad(buf);
}

fn pad(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

fn attr_str(buf: &mut Vec<u8>, kind: u16, s: &str) {
    let mut z = Vec::with_capacity(s.len() + 1);
    z.extend_from_slice(s.as_bytes());
    z.push(0);
    attr(buf, kind, &z);
}

fn attr_be32(buf: &mut Vec<u8>, kind: u16, v: u32) {
    attr(buf, kind, &v.to_be_bytes());
}

/// Runs `f` inside nested attribute `kind`.
fn nest(buf: &mut Vec<u8>, kind: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    f(buf);
    let len = u16::try_from(buf.len() - start).expect("nest under 64 KiB");
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

/// Appends one netlink message: header, `nfgenmsg`, then `body`.
fn message(
    buf: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    body: impl FnOnce(&mut Vec<u8>),
) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    // struct nfgenmsg: family, version (NFNETLINK_V0), res_id (big-endian)
    buf.extend_from_slice(&[family, 0]);
    buf.extend_from_slice(&res_id.to_be_bytes());
    body(buf);
    let len = u32::try_from(buf.len() - start).expect("message under 4 GiB");
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

const fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

fn data_value(buf: &mut Vec<u8>, kind: u16, v: &[u8]) {
    nest(buf, kind, |b| attr(b, NFTA_DATA_VALUE, v));
}

fn encode_expr(buf: &mut Vec<u8>, e: &Expr) {
    let name = match e {
        Expr::Payload { .. } => "payload",
        Expr::Cmp { .. } => "cmp",
        Expr::Meta { .. } | Expr::MetaSet { .. } => "meta",
        Expr::Bitwise { .. } => "bitwise",
        Expr::Counter => "counter",
        Expr::Numgen { .. } => "numgen",
        Expr::Immediate { .. } | Expr::Jump { .. } => "immediate",
        Expr::Dnat => "nat",
        Expr::Masq => "masq",
    };
    nest(buf, NFTA_LIST_ELEM, |b| {
        attr_str(b, NFTA_EXPR_NAME, name);
        nest(b, NFTA_EXPR_DATA, |b| match e {
            Expr::Payload { base, offset, len } => {
                // NFTA_PAYLOAD_DREG, _BASE, _OFFSET, _LEN
                attr_be32(b, 1, NFT_REG_1);
                attr_be32(b, 2, *base);
                attr_be32(b, 3, *offset);
                attr_be32(b, 4, *len);
            }
            Expr::Cmp { op, data } => {
                // NFTA_CMP_SREG, _OP, _DATA
                attr_be32(b, 1, NFT_REG_1);
                attr_be32(b, 2, *op);
                data_value(b, 3, data);
            }
            Expr::Meta { key } => {
                // NFTA_META_DREG, _KEY
                attr_be32(b, 2, *key);
                attr_be32(b, 1, NFT_REG_1);
            }
            Expr::MetaSet { key } => {
                // NFTA_META_KEY, _SREG
                attr_be32(b, 2, *key);
                attr_be32(b, 3, NFT_REG_1);
            }
            Expr::Bitwise { mask, xor } => {
                // NFTA_BITWISE_SREG, _DREG, _LEN, _MASK, _XOR
                // NFTA_BITWISE_OP: NFT_BITWISE_BOOL, as nft sends it
                attr_be32(b, 1, NFT_REG_1);
                attr_be32(b, 2, NFT_REG_1);
                attr_be32(b, 6, 0);
                attr_be32(b, 3, u32::try_from(mask.len()).expect("short mask"));
                data_value(b, 4, mask);
                data_value(b, 5, xor);
            }
            // Both start at zero; nft sends no attribute either.
            Expr::Counter | Expr::Masq => {}
            Expr::Numgen { modulus } => {
                // NFTA_NG_DREG, _MODULUS, _TYPE, _OFFSET
                attr_be32(b, 1, NFT_REG_1);
                attr_be32(b, 2, *modulus);
                attr_be32(b, 3, NFT_NG_RANDOM);
                attr_be32(b, 4, 0);
            }
            Expr::Immediate { dreg, data } => {
                // NFTA_IMMEDIATE_DREG, _DATA
                attr_be32(b, 1, *dreg);
                data_value(b, 2, data);
            }
            Expr::Jump { chain } => {
                attr_be32(b, 1, NFT_REG_VERDICT);
                nest(b, 2, |b| {
                    nest(b, NFTA_DATA_VERDICT, |b| {
                        attr(b, NFTA_VERDICT_CODE, &NFT_JUMP.to_be_bytes());
                        attr_str(b, NFTA_VERDICT_CHAIN, chain);
                    });
                });
            }
            Expr::Dnat => {
                // NFTA_NAT_TYPE, _FAMILY, _REG_ADDR_MIN, _REG_PROTO_MIN,
                // _FLAGS (NF_NAT_RANGE_PROTO_SPECIFIED)
                attr_be32(b, 1, NFT_NAT_DNAT);
                attr_be32(b, 2, u32::from(NFPROTO_IPV4));
                attr_be32(b, 3, NFT_REG_1);
                attr_be32(b, 5, NFT_REG_2);
                attr_be32(b, 7, 2);
            }
        });
    });
}

fn rule(buf: &mut Vec<u8>, seq: u32, chain: &str, exprs: &[Expr], comment: Option<&str>) {
    let flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK;
    message(
        buf,
        nft_type(NFT_MSG_NEWRULE),
        flags,
        seq,
        NFPROTO_IPV4,
        0,
        |b| {
            attr_str(b, NFTA_RULE_TABLE, TABLE);
            attr_str(b, NFTA_RULE_CHAIN, chain);
            nest(b, NFTA_RULE_EXPRESSIONS, |b| {
                for e in exprs {
                    encode_expr(b, e);
                }
            });
            if let Some(c) = comment {
                let mut c = c.to_string();
                outpost_proto::pod::truncate(&mut c, MAX_COMMENT);
                let mut u = vec![
                    UDATA_RULE_COMMENT,
                    u8::try_from(c.len() + 1).expect("short"),
                ];
                u.extend_from_slice(c.as_bytes());
                u.push(0);
                attr(b, NFTA_RULE_USERDATA, &u);
            }
        },
    );
}

fn base_chain(buf: &mut Vec<u8>, seq: u32, name: &str, hook: u32, priority: i32) {
    let flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK;
    message(
        buf,
        nft_type(NFT_MSG_NEWCHAIN),
        flags,
        seq,
        NFPROTO_IPV4,
        0,
        |b| {
            attr_str(b, NFTA_CHAIN_TABLE, TABLE);
            attr_str(b, NFTA_CHAIN_NAME, name);
            nest(b, NFTA_CHAIN_HOOK, |b| {
                attr_be32(b, NFTA_HOOK_HOOKNUM, hook);
                attr(b, NFTA_HOOK_PRIORITY, &priority.to_be_bytes());
            });
            attr_be32(b, NFTA_CHAIN_POLICY, NF_ACCEPT);
            attr_str(b, NFTA_CHAIN_TYPE, "nat");
        },
    );
}

fn table_message(buf: &mut Vec<u8>, seq: u32, kind: u16) {
    let flags = if kind == NFT_MSG_NEWTABLE {
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK
    } else {
        NLM_F_REQUEST | NLM_F_ACK
    };
    message(buf, nft_type(kind), flags, seq, NFPROTO_IPV4, 0, |b| {
        attr_str(b, NFTA_TABLE_NAME, TABLE);
        if kind == NFT_MSG_NEWTABLE {
            attr_be32(b, NFTA_TABLE_FLAGS, 0);
        }
    });
}

/// The expressions of a frontend's rule.
fn frontend_exprs(f: &KernelFrontend, chain: &str) -> Vec<Expr> {
    vec![
        // ip daddr: offset 16 of the IPv4 header
        Expr::Payload {
            base: NFT_PAYLOAD_NETWORK_HEADER,
            offset: 16,
            len: 4,
        },
        Expr::Cmp {
            op: NFT_CMP_EQ,
            data: f.ip.octets().to_vec(),
        },
        Expr::Meta {
            key: NFT_META_L4PROTO,
        },
        Expr::Cmp {
            op: NFT_CMP_EQ,
            data: vec![f.l4proto],
        },
        // th dport: offset 2 of the TCP and UDP headers
        Expr::Payload {
            base: NFT_PAYLOAD_TRANSPORT_HEADER,
            offset: 2,
            len: 2,
        },
        Expr::Cmp {
            op: NFT_CMP_EQ,
            data: f.port.to_be_bytes().to_vec(),
        },
        Expr::Counter,
        Expr::Jump {
            chain: chain.to_string(),
        },
    ]
}

fn masquerade_exprs() -> Vec<Expr> {
    vec![
        Expr::Meta { key: NFT_META_MARK },
        Expr::Bitwise {
            mask: MASQ_MARK.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            op: NFT_CMP_NEQ,
            data: vec![0; 4],
        },
        Expr::Masq,
    ]
}

fn mark_exprs() -> Vec<Expr> {
    vec![
        Expr::Meta { key: NFT_META_MARK },
        Expr::Bitwise {
            mask: (!MASQ_MARK).to_ne_bytes().to_vec(),
            xor: MASQ_MARK.to_ne_bytes().to_vec(),
        },
        Expr::MetaSet { key: NFT_META_MARK },
    ]
}

/// Rule `i` of `n` DNATing to `to`: `numgen random mod (n-i) == 0` first,
/// except on the last.
/// The protocol match lets `nft` list it back (a port mapping needs one).
fn endpoint_exprs(i: usize, n: usize, l4proto: u8, to: (Ipv4Addr, u16)) -> Vec<Expr> {
    let mut v = Vec::new();
    if i + 1 < n {
        v.push(Expr::Numgen {
            modulus: u32::try_from(n - i).expect("fewer than 2^32 endpoints"),
        });
        v.push(Expr::Cmp {
            op: NFT_CMP_EQ,
            data: vec![0; 4],
        });
    }
    v.push(Expr::Meta {
        key: NFT_META_L4PROTO,
    });
    v.push(Expr::Cmp {
        op: NFT_CMP_EQ,
        data: vec![l4proto],
    });
    v.push(Expr::Immediate {
        dreg: NFT_REG_1,
        data: to.0.octets().to_vec(),
    });
    v.push(Expr::Immediate {
        dreg: NFT_REG_2,
        data: to.1.to_be_bytes().to_vec(),
    });
    v.push(Expr::Dnat);
    v
}

/// What each message of a batch is, by sequence number, for errors.
pub type Labels = Vec<(u32, String)>;

/// Wraps messages built by `body` (from `seq + 1` on) in a batch.
fn batch(seq: u32, body: impl FnOnce(&mut Vec<u8>, &mut u32, &mut Labels)) -> (Vec<u8>, Labels) {
    let mut buf = Vec::new();
    let res = NFNL_SUBSYS_NFTABLES;
    message(
        &mut buf,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        res,
        |_| {},
    );
    let mut next = seq + 1;
    let mut labels = Vec::new();
    body(&mut buf, &mut next, &mut labels);
    message(
        &mut buf,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        next,
        0,
        res,
        |_| {},
    );
    (buf, labels)
}

/// The batch that replaces table `ip outpost` with `r` (see the module
/// doc), messages numbered from `seq`, and what each message is.
pub fn encode_replace(r: &Ruleset, seq: u32) -> (Vec<u8>, Labels) {
    batch(seq, |buf, next, labels| {
        let mut take = |labels: &mut Labels, what: String| {
            let s = *next;
            *next += 1;
            labels.push((s, what));
            s
        };
        let s = take(labels, format!("add table ip {TABLE}"));
        table_message(buf, s, NFT_MSG_NEWTABLE);
        let s = take(labels, format!("delete table ip {TABLE}"));
        table_message(buf, s, NFT_MSG_DELTABLE);
        let s = take(labels, format!("add table ip {TABLE}"));
        table_message(buf, s, NFT_MSG_NEWTABLE);
        for (name, hook, prio) in [
            ("prerouting", NF_INET_PRE_ROUTING, PRIORITY_DSTNAT),
            ("output", NF_INET_LOCAL_OUT, PRIORITY_DSTNAT),
            ("postrouting", NF_INET_POST_ROUTING, PRIORITY_SRCNAT),
        ] {
            let s = take(labels, format!("add chain {name} (nat hook)"));
            base_chain(buf, s, name, hook, prio);
        }
        let s = take(labels, "postrouting: masquerade marked".into());
        rule(buf, s, "postrouting", &masquerade_exprs(), None);
        for c in &r.chains {
            let s = take(labels, format!("add chain {}", c.name));
            let flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK;
            message(
                buf,
                nft_type(NFT_MSG_NEWCHAIN),
                flags,
                s,
                NFPROTO_IPV4,
                0,
                |b| {
                    attr_str(b, NFTA_CHAIN_TABLE, TABLE);
                    attr_str(b, NFTA_CHAIN_NAME, &c.name);
                },
            );
            let s = take(labels, format!("{}: mark", c.name));
            rule(buf, s, &c.name, &mark_exprs(), None);
            let n = c.endpoints.len();
            for (i, to) in c.endpoints.iter().enumerate() {
                let s = take(labels, format!("{}: dnat to {}:{}", c.name, to.0, to.1));
                rule(buf, s, &c.name, &endpoint_exprs(i, n, c.l4proto, *to), None);
            }
        }
        for hook_chain in ["prerouting", "output"] {
            for f in &r.frontends {
                let Some(c) = r.chains.get(f.chain) else {
                    continue;
                };
                let what = format!(
                    "{hook_chain}: {}:{}/{} jump {} ({})",
                    f.ip, f.port, f.l4proto, c.name, f.comment
                );
                let s = take(labels, what);
                rule(
                    buf,
                    s,
                    hook_chain,
                    &frontend_exprs(f, &c.name),
                    Some(&f.comment),
                );
            }
        }
    })
}

/// The batch that removes table `ip outpost`; the kernel answers ENOENT
/// when it is not there (taken as done by [`Socket::remove`], so a box
/// without the table is left untouched).
pub fn encode_remove(seq: u32) -> (Vec<u8>, Labels) {
    batch(seq, |buf, next, labels| {
        labels.push((*next, format!("delete table ip {TABLE}")));
        table_message(buf, *next, NFT_MSG_DELTABLE);
        *next += 1;
    })
}

/// The `GETRULE` dump request for every rule of table `ip outpost`.
pub fn encode_dump(seq: u32) -> Vec<u8> {
    let mut buf = Vec::new();
    let flags = NLM_F_REQUEST | NLM_F_DUMP;
    let kind = nft_type(NFT_MSG_GETRULE);
    message(&mut buf, kind, flags, seq, NFPROTO_IPV4, 0, |b| {
        attr_str(b, NFTA_RULE_TABLE, TABLE);
    });
    buf
}

/// One netlink message of a reply.
struct Msg<'a> {
    kind: u16,
    seq: u32,
    /// After the 16-byte header.
    payload: &'a [u8],
}

/// The messages of `buf`; an error on a length that does not fit.
fn messages(buf: &[u8]) -> Result<Vec<Msg<'_>>, DecodeError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        if rest.len() < 16 {
            return Err(DecodeError::Truncated);
        }
        let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes"));
        let len = usize::try_from(len).map_err(|_| DecodeError::Length)?;
        if len < 16 || len > rest.len() {
            return Err(DecodeError::Length);
        }
        out.push(Msg {
            kind: u16::from_ne_bytes([rest[4], rest[5]]),
            seq: u32::from_ne_bytes(rest[8..12].try_into().expect("4 bytes")),
            payload: &rest[16..len],
        });
        at += (len + 3) & !3;
    }
    Ok(out)
}

/// The attributes of `buf` as (type without flags, value).
fn attrs(buf: &[u8]) -> Result<Vec<(u16, &[u8])>, DecodeError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= buf.len() {
        let len = usize::from(u16::from_ne_bytes([buf[at], buf[at + 1]]));
        let kind = u16::from_ne_bytes([buf[at + 2], buf[at + 3]]) & NLA_TYPE_MASK;
        if len < 4 || at + len > buf.len() {
            return Err(DecodeError::Length);
        }
        out.push((kind, &buf[at + 4..at + len]));
        at += (len + 3) & !3;
    }
    Ok(out)
}

/// A reply the kernel should not have sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("a netlink message shorter than its header")]
    Truncated,
    #[error("a netlink length beyond the message")]
    Length,
    #[error("the kernel refused the rule dump: {0}")]
    Refused(i32),
    #[error("a rule dump over {MAX_DUMP} bytes")]
    TooLarge,
}

/// What one part of a `GETRULE` dump says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DumpPart {
    /// Packets of each commented rule's counter, by comment, summed.
    pub counters: Vec<(String, u64)>,
    /// `NLMSG_DONE` was in this part.
    pub done: bool,
}

/// Reads one buffer of a `GETRULE` dump to request `seq`: rules without a
/// comment or a counter are skipped; a message of another request is
/// ignored.
pub fn decode_counters(buf: &[u8], seq: u32) -> Result<DumpPart, DecodeError> {
    let mut part = DumpPart::default();
    for m in messages(buf)? {
        if m.seq != seq {
            continue;
        }
        match m.kind {
            NLMSG_DONE => part.done = true,
            NLMSG_ERROR => {
                let e = m.payload.get(0..4).ok_or(DecodeError::Truncated)?;
                let e = i32::from_ne_bytes(e.try_into().expect("4 bytes"));
                if e != 0 {
                    return Err(DecodeError::Refused(-e));
                }
            }
            k if k == nft_type(NFT_MSG_NEWRULE) => {
                let Some(body) = m.payload.get(4..) else {
                    return Err(DecodeError::Truncated);
                };
                if let Some(c) = rule_counter(body)? {
                    match part.counters.iter_mut().find(|(k, _)| *k == c.0) {
                        Some(slot) => slot.1 = slot.1.saturating_add(c.1),
                        None => part.counters.push(c),
                    }
                }
            }
            _ => {}
        }
    }
    Ok(part)
}

/// The comment and counter packets of one rule's attributes, if it has both.
fn rule_counter(body: &[u8]) -> Result<Option<(String, u64)>, DecodeError> {
    let mut comment = None;
    let mut packets = None;
    for (kind, v) in attrs(body)? {
        match kind {
            NFTA_RULE_USERDATA => comment = udata_comment(v),
            NFTA_RULE_EXPRESSIONS => {
                for (k, elem) in attrs(v)? {
                    if k != NFTA_LIST_ELEM {
                        continue;
                    }
                    let e = attrs(elem)?;
                    let is_counter = e.iter().any(|(k, v)| {
                        *k == NFTA_EXPR_NAME && v.split(|b| *b == 0).next() == Some(b"counter")
                    });
                    if !is_counter {
                        continue;
                    }
                    for (k, data) in e {
                        if k != NFTA_EXPR_DATA {
                            continue;
                        }
                        for (k, v) in attrs(data)? {
                            if k == NFTA_COUNTER_PACKETS && v.len() == 8 {
                                packets = Some(u64::from_be_bytes(v.try_into().expect("8")));
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(comment.zip(packets))
}

/// The comment in libnftnl's user data TLVs, if well formed UTF-8.
fn udata_comment(mut u: &[u8]) -> Option<String> {
    while u.len() >= 2 {
        let (kind, len) = (u[0], usize::from(u[1]));
        let value = u.get(2..2 + len)?;
        if kind == UDATA_RULE_COMMENT {
            let s = value.strip_suffix(&[0]).unwrap_or(value);
            return std::str::from_utf8(s).ok().map(str::to_string);
        }
        u = &u[2 + len..];
    }
    None
}

/// A request the kernel did not carry out.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot open a netfilter netlink socket: {0} (a kernel without nf_tables, or no CAP_NET_ADMIN)")]
    Socket(std::io::Error),
    #[error("the kernel refused `{what}`: {err}{hint}")]
    Refused {
        what: String,
        err: std::io::Error,
        hint: &'static str,
    },
    #[error("netfilter netlink: {0}")]
    Io(std::io::Error),
    #[error("netfilter netlink: {0}")]
    Decode(#[from] DecodeError),
    #[error("a ruleset of {0} bytes, over the {MAX_BATCH} one batch may take")]
    TooLarge(usize),
    #[error("netfilter netlink: no acknowledgement for {0} message(s) of the batch")]
    Unanswered(usize),
}

/// A NETLINK_NETFILTER socket of the calling thread's network namespace.
pub struct Socket {
    fd: std::os::fd::OwnedFd,
    seq: u32,
}

impl Socket {
    pub fn open() -> Result<Socket, NftError> {
        let fd = rustix::net::socket(
            AddressFamily::NETLINK,
            SocketType::RAW,
            Some(rustix::net::netlink::NETFILTER),
        )
        .map_err(|e| NftError::Socket(e.into()))?;
        rustix::net::sockopt::set_socket_timeout(
            &fd,
            rustix::net::sockopt::Timeout::Recv,
            Some(ANSWER_TIMEOUT),
        )
        .map_err(|e| NftError::Io(e.into()))?;
        // A batch is one datagram: the default send buffer (208 KiB) holds
        // about 350 rules. The kernel doubles the value it is given.
        let _ = rustix::net::sockopt::set_socket_send_buffer_size_force(&fd, MAX_BATCH / 2)
            .or_else(|_| rustix::net::sockopt::set_socket_send_buffer_size(&fd, MAX_BATCH / 2));
        // Room for every acknowledgement and a dump's buffers at once: an
        // overrun loses answers and reads back as ENOBUFS.
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size_force(&fd, 1 << 20)
            .or_else(|_| rustix::net::sockopt::set_socket_recv_buffer_size(&fd, 1 << 20));
        Ok(Socket { fd, seq: 1 })
    }

    fn next_seq(&mut self, n: usize) -> u32 {
        let s = self.seq;
        let n = u32::try_from(n).unwrap_or(u32::MAX / 2);
        self.seq = self.seq.wrapping_add(n).max(1);
        s
    }

    fn send(&self, buf: &[u8]) -> Result<(), NftError> {
        rustix::net::sendto(
            &self.fd,
            buf,
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 0),
        )
        .map_err(|e| NftError::Io(e.into()))?;
        Ok(())
    }

    fn recv<'a>(&self, buf: &'a mut [u8]) -> Result<&'a [u8], NftError> {
        let (got, _) = rustix::net::recv(&self.fd, &mut *buf, RecvFlags::empty())
            .map_err(|e| NftError::Io(e.into()))?;
        Ok(&buf[..got.min(buf.len())])
    }

    /// Sends a batch and waits for every acknowledgement.
    fn transact(&mut self, (buf, labels): (Vec<u8>, Labels)) -> Result<(), NftError> {
        self.send(&buf)?;
        let mut pending: std::collections::HashMap<u32, String> = labels.into_iter().collect();
        let mut first_error = None;
        let mut rx = vec![0u8; 64 * 1024];
        let mut failed = None;
        // Each datagram holds at least one answer: the bound is the count.
        for _ in 0..pending.len() + 1 {
            if pending.is_empty() {
                break;
            }
            let got = match self.recv(&mut rx) {
                Ok(got) => got,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            for m in messages(got)? {
                if m.kind != NLMSG_ERROR {
                    continue;
                }
                let Some(what) = pending.remove(&m.seq) else {
                    continue;
                };
                let e = m.payload.get(0..4).ok_or(DecodeError::Truncated)?;
                let errno = -i32::from_ne_bytes(e.try_into().expect("4 bytes"));
                if errno != 0 && first_error.is_none() {
                    first_error = Some((m.seq, what, errno));
                }
            }
        }
        if let Some((_, what, errno)) = first_error {
            let hint = match errno {
                1 => " (the agent needs CAP_NET_ADMIN)",
                2 | 93 | 95 => " (the kernel lacks an nf_tables module: nf_nat, nft_nat, nft_numgen, nft_masq, nft_counter)",
                _ => "",
            };
            return Err(NftError::Refused {
                what,
                err: std::io::Error::from_raw_os_error(errno),
                hint,
            });
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if !pending.is_empty() {
            return Err(NftError::Unanswered(pending.len()));
        }
        Ok(())
    }

    /// Replaces table `ip outpost` with `r` atomically.
    pub fn replace(&mut self, r: &Ruleset) -> Result<(), NftError> {
        let seq = self.next_seq(0);
        let b = encode_replace(r, seq);
        self.next_seq(b.1.len() + 2);
        if b.0.len() > MAX_BATCH {
            return Err(NftError::TooLarge(b.0.len()));
        }
        self.transact(b)
    }

    /// Removes table `ip outpost` (done when it is not there).
    pub fn remove(&mut self) -> Result<(), NftError> {
        let seq = self.next_seq(3);
        match self.transact(encode_remove(seq)) {
            Err(NftError::Refused { err, .. }) if err.raw_os_error() == Some(2) => Ok(()),
            r => r,
        }
    }

    /// Packets counted by each commented rule of table `ip outpost`.
    pub fn counters(&mut self) -> Result<Vec<(String, u64)>, NftError> {
        let seq = self.next_seq(1);
        self.send(&encode_dump(seq))?;
        let mut rx = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        let mut out: Vec<(String, u64)> = Vec::new();
        loop {
            let got = self.recv(&mut rx)?;
            total += got.len();
            if total > MAX_DUMP {
                return Err(DecodeError::TooLarge.into());
            }
            let part = decode_counters(got, seq)?;
            for (k, v) in part.counters {
                match out.iter_mut().find(|(o, _)| *o == k) {
                    Some(slot) => slot.1 = slot.1.saturating_add(v),
                    None => out.push((k, v)),
                }
            }
            if part.done {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests;
