use super::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A name on the wire, uncompressed.
fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for l in name.split('.').filter(|l| !l.is_empty()) {
        out.push(u8::try_from(l.len()).unwrap());
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
    out
}

/// A record: owner (raw wire bytes), type, data.
type Record = (Vec<u8>, u16, Vec<u8>);

/// A response to `id`/`qname` with `flags` and answer records.
fn response(id: u16, flags: u16, qname: &str, records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&u16::try_from(records.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&wire_name(qname));
    out.extend_from_slice(&[0, 1, 0, 1]);
    for (owner, kind, data) in records {
        out.extend_from_slice(owner);
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 30]);
        out.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
        out.extend_from_slice(data);
    }
    out
}

/// The question name, by pointer (it starts at offset 12).
const AT_QNAME: [u8; 2] = [0xC0, 12];
const OK: u16 = 0x8180;

#[test]
fn parses_resolv_conf() {
    let k8s = "\
# written by the agent
search default.svc.cluster.local svc.cluster.local cluster.local
nameserver 10.43.0.10
options ndots:5 timeout:2 attempts:3
";
    let c = ResolvConf::parse(k8s);
    assert_eq!(c.nameservers, [SocketAddr::from(([10, 43, 0, 10], 53))]);
    assert_eq!(
        c.search,
        [
            "default.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local"
        ]
    );
    assert_eq!(
        (c.ndots, c.timeout, c.attempts),
        (5, Duration::from_secs(2), 3)
    );

    // Nothing usable: glibc's defaults.
    assert_eq!(ResolvConf::parse(""), ResolvConf::default());
    assert_eq!(
        ResolvConf::parse("nameserver bogus\nnameserver\nfoo bar\n"),
        ResolvConf::default()
    );

    let odd = "\
nameserver 10.0.0.1 ; a comment
nameserver ::1
nameserver 10.0.0.3
nameserver 10.0.0.4
search first.example
domain Example.COM.
options ndots:99 timeout:0 attempts:100 rotate ndots:x
";
    let c = ResolvConf::parse(odd);
    assert_eq!(
        c.nameservers,
        [
            SocketAddr::from(([10, 0, 0, 1], 53)),
            SocketAddr::new("::1".parse().unwrap(), 53),
            SocketAddr::from(([10, 0, 0, 3], 53)),
        ],
        "at most three"
    );
    assert_eq!(
        c.search,
        ["example.com"],
        "the last search/domain line wins"
    );
    assert_eq!(
        (c.ndots, c.timeout, c.attempts),
        (15, Duration::from_secs(1), 5),
        "capped as glibc caps them"
    );
    let c = ResolvConf::parse("domain a.example\nsearch b.example c.example #x\n");
    assert_eq!(c.search, ["b.example", "c.example"]);
    let many = format!(
        "search {}\n",
        (0..10)
            .map(|i| format!("d{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert_eq!(ResolvConf::parse(&many).search.len(), 6);
}

#[test]
fn tries_the_search_list_as_libc_does() {
    let conf = ResolvConf::parse(
        "search default.svc.cluster.local svc.cluster.local\nnameserver 10.43.0.10\noptions ndots:5\n",
    );
    let cases: &[(&str, &[&str])] = &[
        (
            "store",
            &[
                "store.default.svc.cluster.local",
                "store.svc.cluster.local",
                "store",
            ],
        ),
        (
            "store.prod",
            &[
                "store.prod.default.svc.cluster.local",
                "store.prod.svc.cluster.local",
                "store.prod",
            ],
        ),
        (
            "a.b.c.d.e.f",
            &[
                "a.b.c.d.e.f",
                "a.b.c.d.e.f.default.svc.cluster.local",
                "a.b.c.d.e.f.svc.cluster.local",
            ],
        ),
        ("store.", &["store"]),
    ];
    for (name, want) in cases {
        assert_eq!(candidates(name, &conf), *want, "{name}");
    }
    let one = ResolvConf::parse("search lan\noptions ndots:1\n");
    assert_eq!(
        candidates("example.com", &one),
        ["example.com", "example.com.lan"]
    );
    assert_eq!(candidates("nas", &one), ["nas.lan", "nas"]);
    assert_eq!(candidates("nas", &ResolvConf::default()), ["nas"]);
}

#[test]
fn encodes_queries() {
    let q = encode_query(0xBEEF, "Store.default.").unwrap();
    let mut want = vec![0xBE, 0xEF, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    want.extend_from_slice(b"\x05Store\x07default\x00");
    want.extend_from_slice(&[0, 1, 0, 1]);
    assert_eq!(q, want);

    let bad = |name: &str| match encode_query(1, name) {
        Err(DnsError::BadName(why)) => why,
        other => panic!("{name:?}: {other:?}"),
    };
    assert_eq!(bad(""), "empty name");
    assert_eq!(bad("."), "empty name");
    assert_eq!(bad("a..b"), "\"a..b\" has an empty label");
    assert!(bad(&"x".repeat(64)).contains("over 63 bytes"));
    let long = vec!["x".repeat(63); 4].join(".");
    assert!(
        bad(&long).contains("over 255 bytes"),
        "4 x 63 + 4 + 1 = 257"
    );
    let fits = [
        "x".repeat(63),
        "x".repeat(63),
        "x".repeat(63),
        "x".repeat(61),
    ]
    .join(".");
    assert!(encode_query(1, &fits).is_ok(), "253 + 2 = 255 bytes fits");
}

#[test]
fn parses_answers() {
    let name = "store.default.svc.cluster.local";
    let a = |ip: [u8; 4]| (AT_QNAME.to_vec(), TYPE_A, ip.to_vec());
    // Two A records owned by a pointer to the question.
    let r = response(7, OK, name, &[a([10, 1, 0, 5]), a([10, 1, 0, 6])]);
    assert_eq!(
        parse_response(&r, 7, "STORE.default.svc.cluster.local."),
        Ok(Answer::Addresses(vec![
            Ipv4Addr::new(10, 1, 0, 5),
            Ipv4Addr::new(10, 1, 0, 6)
        ]))
    );
    // A CNAME, then the A record of its target (owner: a label, then a
    // pointer into the question's "cluster.local").
    let mut target = b"\x06target".to_vec();
    target.extend_from_slice(&[0xC0, 30]); // "cluster.local" in the question
    let cname = (AT_QNAME.to_vec(), 5, target.clone());
    let r = response(
        8,
        OK,
        name,
        &[cname.clone(), (target, TYPE_A, vec![192, 0, 2, 1])],
    );
    assert_eq!(
        parse_response(&r, 8, name),
        Ok(Answer::Addresses(vec![Ipv4Addr::new(192, 0, 2, 1)]))
    );
    assert_eq!(
        read_name(&r, r.len() - 23).unwrap().0,
        "target.cluster.local"
    );
    // Only a CNAME, or nothing: the name has no address.
    assert_eq!(
        parse_response(&response(9, OK, name, &[cname]), 9, name),
        Ok(Answer::NoAddress)
    );
    assert_eq!(
        parse_response(&response(9, OK, name, &[]), 9, name),
        Ok(Answer::NoAddress)
    );
    assert_eq!(
        parse_response(&response(9, 0x8183, name, &[]), 9, name),
        Ok(Answer::NoSuchName)
    );
    assert_eq!(
        parse_response(&response(9, 0x8182, name, &[]), 9, name),
        Err(DnsError::Rcode(2))
    );
    assert_eq!(
        parse_response(&response(9, 0x8385, name, &[]), 9, name),
        Err(DnsError::Truncated)
    );
    // Not ours: other id, a query rather than a response, another question.
    assert_eq!(
        parse_response(&response(9, OK, name, &[]), 10, name),
        Err(DnsError::NotOurs)
    );
    assert_eq!(
        parse_response(&response(9, 0x0100, name, &[]), 9, name),
        Err(DnsError::NotOurs)
    );
    assert_eq!(
        parse_response(&response(9, OK, "other", &[]), 9, name),
        Err(DnsError::NotOurs)
    );
}

#[test]
fn rejects_malformed_answers() {
    let name = "web";
    let malformed = |buf: &[u8]| match parse_response(buf, 1, name) {
        Err(DnsError::Malformed(why)) => why,
        other => panic!("{buf:?}: {other:?}"),
    };
    let good = response(
        1,
        OK,
        name,
        &[(AT_QNAME.to_vec(), TYPE_A, vec![10, 0, 0, 1])],
    );
    assert!(parse_response(&good, 1, name).is_ok());
    assert_eq!(malformed(&good[..11]), "shorter than a header");
    // Cut anywhere inside the answer record: an error, never a panic.
    for cut in 21..good.len() {
        let why = malformed(&good[..cut]);
        assert!(why.contains("past the end"), "cut at {cut}: {why}");
    }
    // Every byte of the answer flipped: never a panic.
    for i in 12..good.len() {
        for v in [0x00, 0x3F, 0x40, 0xC0, 0xFF] {
            let mut b = good.clone();
            b[i] = v;
            let _ = parse_response(&b, 1, name);
        }
    }
    let wrong_len = response(1, OK, name, &[(AT_QNAME.to_vec(), TYPE_A, vec![10, 0, 0])]);
    assert_eq!(malformed(&wrong_len), "A record data is not 4 bytes");
    // A pointer to itself, and one pointing forward.
    let self_ptr = response(1, OK, name, &[(vec![0xC0, 21], TYPE_A, vec![1, 2, 3, 4])]);
    assert_eq!(
        malformed(&self_ptr),
        "compression pointer does not point back"
    );
    let forward = response(1, OK, name, &[(vec![0xC0, 40], TYPE_A, vec![1, 2, 3, 4])]);
    assert_eq!(
        malformed(&forward),
        "compression pointer does not point back"
    );
    let reserved = response(1, OK, name, &[(vec![0x80, 1], TYPE_A, vec![1, 2, 3, 4])]);
    assert_eq!(malformed(&reserved), "reserved label type");
}

#[test]
fn bounds_names_and_pointer_chains() {
    // A chain of 20 pointers, each to the one before, ending at a root.
    let mut buf = vec![0u8];
    for i in 0..20u8 {
        let prev = if i == 0 { 0 } else { 1 + 2 * (i - 1) };
        buf.extend_from_slice(&[0xC0, prev]);
    }
    assert_eq!(
        read_name(&buf, 1 + 2 * 15),
        Ok((String::new(), 33)),
        "16 pointers"
    );
    assert_eq!(
        read_name(&buf, 1 + 2 * 16),
        Err(DnsError::Malformed("too many compression pointers"))
    );
    // A name over 255 bytes built from pointers back to labels.
    let mut buf = Vec::new();
    for _ in 0..5 {
        buf.push(63);
        buf.extend_from_slice(&[b'x'; 63]);
    }
    buf.push(0);
    assert_eq!(
        read_name(&buf, 0),
        Err(DnsError::Malformed("name over 255 bytes"))
    );
    assert_eq!(
        read_name(&buf, 64 * 2).unwrap().1,
        buf.len(),
        "three labels fit"
    );
}

/// A DNS server on loopback answering A queries from `names`
/// (NXDOMAIN otherwise); every name asked is recorded. It stops once idle
/// for 30 s.
pub(crate) fn fake_server(
    names: BTreeMap<String, Ipv4Addr>,
) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let addr = sock.local_addr().unwrap();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&asked);
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let q = &buf[..n];
            let Ok((name, _)) = read_name(q, 12) else {
                continue;
            };
            seen.lock().unwrap().push(name.clone());
            let id = u16::from_be_bytes([q[0], q[1]]);
            let r = match names.get(&name) {
                Some(ip) => response(
                    id,
                    OK,
                    &name,
                    &[(AT_QNAME.to_vec(), TYPE_A, ip.octets().to_vec())],
                ),
                None => response(id, 0x8183, &name, &[]),
            };
            let _ = sock.send_to(&r, from);
        }
    });
    (addr, asked)
}

fn conf_for(server: SocketAddr) -> ResolvConf {
    ResolvConf {
        nameservers: vec![server],
        search: vec![
            "default.svc.cluster.local".into(),
            "svc.cluster.local".into(),
        ],
        ndots: 5,
        timeout: Duration::from_secs(1),
        attempts: 2,
    }
}

#[test]
fn resolves_through_a_server_with_the_search_list() {
    let names = BTreeMap::from([
        (
            "store.svc.cluster.local".to_string(),
            Ipv4Addr::new(127, 0, 0, 7),
        ),
        ("example.com".to_string(), Ipv4Addr::new(127, 0, 0, 8)),
    ]);
    let (server, asked) = fake_server(names);
    let conf = conf_for(server);
    let soon = || Instant::now() + Duration::from_secs(5);
    assert_eq!(
        resolve("store", &conf, soon()),
        Ok(vec![Ipv4Addr::new(127, 0, 0, 7)])
    );
    assert_eq!(
        *asked.lock().unwrap(),
        ["store.default.svc.cluster.local", "store.svc.cluster.local"]
    );
    asked.lock().unwrap().clear();
    assert_eq!(
        resolve("example.com", &conf, soon()),
        Ok(vec![Ipv4Addr::new(127, 0, 0, 8)])
    );
    assert_eq!(
        asked.lock().unwrap().last().map(String::as_str),
        Some("example.com")
    );
    asked.lock().unwrap().clear();
    let e = resolve("nothere", &conf, soon()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot resolve nothere: no such host (tried nothere.default.svc.cluster.local, nothere.svc.cluster.local, nothere)"
    );
    assert_eq!(asked.lock().unwrap().len(), 3, "one question per candidate");
    // An IP literal asks nobody.
    asked.lock().unwrap().clear();
    assert_eq!(
        resolve("127.0.0.9", &conf, soon()),
        Ok(vec![Ipv4Addr::new(127, 0, 0, 9)])
    );
    assert!(asked.lock().unwrap().is_empty());
}

#[test]
fn a_silent_server_times_out_within_the_deadline() {
    // Bound but never answering.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let conf = conf_for(silent.local_addr().unwrap());
    let start = Instant::now();
    let e = resolve("store", &conf, start + Duration::from_millis(700)).unwrap_err();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(matches!(e, ResolveError::Failed { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("cannot resolve store: no answer from 127.0.0.1:"),
        "{e}"
    );
}
