//! The behaviour every backend must have, run against each of them.

use super::*;

fn put(s: &dyn Store, k: &str, v: &str) -> Revision {
    s.put(k, v.as_bytes().to_vec()).unwrap()
}

fn val(kv: &KeyValue) -> &str {
    std::str::from_utf8(&kv.value).unwrap()
}

/// Revisions grow by one per writing transaction, deletions included, and
/// keys keep create/mod revisions and versions as etcd does.
pub fn revisions_and_versions(s: &dyn Store) {
    assert_eq!(s.revision(), 0);
    assert_eq!(put(s, "/a", "1"), 1);
    assert_eq!(put(s, "/b", "1"), 2);
    assert_eq!(put(s, "/a", "2"), 3);
    let a = s.get("/a").unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 3, 2));
    assert_eq!(val(&a), "2");
    assert_eq!(s.delete("/a").unwrap(), 4);
    assert!(s.get("/a").unwrap().is_none());
    // Deleting a missing key writes nothing.
    assert_eq!(s.delete("/a").unwrap(), 4);
    // A re-created key starts over.
    assert_eq!(put(s, "/a", "3"), 5);
    let a = s.get("/a").unwrap().unwrap();
    assert_eq!((a.create_revision, a.version), (5, 1));
    // Several ops in one transaction share one revision.
    let r = s
        .txn(Txn::ops(vec![
            Op::put("/c", b"1".to_vec()),
            Op::put("/d", b"1".to_vec()),
        ]))
        .unwrap();
    assert_eq!(r.revision, 6);
    assert_eq!(s.get("/d").unwrap().unwrap().mod_revision, 6);
}

/// A stale mod_revision is refused and changes nothing; the failure branch
/// runs instead.
pub fn compares(s: &dyn Store) {
    put(s, "/k", "1");
    let cur = s.get("/k").unwrap().unwrap().mod_revision;
    let stale = Txn::guarded(
        vec![Compare::mod_revision("/k", cur - 1)],
        vec![Op::put("/k", b"stale".to_vec())],
    );
    let r = s.txn(stale).unwrap();
    assert!(!r.succeeded);
    assert_eq!(val(&s.get("/k").unwrap().unwrap()), "1");
    assert_eq!(s.revision(), cur, "a failed compare writes nothing");
    let fresh = Txn::guarded(
        vec![Compare::mod_revision("/k", cur)],
        vec![Op::put("/k", b"2".to_vec())],
    );
    assert!(s.txn(fresh).unwrap().succeeded);
    // Create-if-absent.
    let create = || {
        Txn::guarded(
            vec![Compare::absent("/new")],
            vec![Op::put("/new", b"x".to_vec())],
        )
    };
    assert!(s.txn(create()).unwrap().succeeded);
    assert!(!s.txn(create()).unwrap().succeeded);
    // Failure branch.
    let r = s
        .txn(Txn {
            compare: vec![Compare::absent("/new")],
            success: vec![],
            failure: vec![Op::put("/other", b"y".to_vec())],
        })
        .unwrap();
    assert!(!r.succeeded);
    assert!(s.get("/other").unwrap().is_some());
    // Value compares; a value compare on a missing key fails.
    let v = Compare {
        key: "/k".into(),
        op: CmpOp::Equal,
        target: Target::Value(b"2".to_vec()),
    };
    assert!(v.holds(s.get("/k").unwrap().as_ref()));
    assert!(!v.holds(None));
    // Batches: each transaction compares on its own.
    let now = s.get("/k").unwrap().unwrap().mod_revision;
    let res = s
        .txn_batch(vec![
            Txn::guarded(
                vec![Compare::mod_revision("/k", now)],
                vec![Op::put("/k", b"3".to_vec())],
            ),
            Txn::guarded(
                vec![Compare::mod_revision("/k", now)],
                vec![Op::put("/k", b"4".to_vec())],
            ),
        ])
        .unwrap();
    assert!(res[0].succeeded && !res[1].succeeded);
    assert_eq!(val(&s.get("/k").unwrap().unwrap()), "3");
    assert_eq!(res[1].revision, res[0].revision);
}

/// Ranges are ordered, bounded and paged.
pub fn ranges(s: &dyn Store) {
    for i in 0..10 {
        put(s, &format!("/p/{i}"), "x");
    }
    put(s, "/q/0", "x");
    let all = s.list("/p/").unwrap();
    assert_eq!(all.kvs.len(), 10);
    assert!(!all.more);
    let keys: Vec<&str> = all.kvs.iter().map(|k| k.key.as_str()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    let page = s.range("/p/", &keys::prefix_end("/p/"), 4).unwrap();
    assert_eq!(page.kvs.len(), 4);
    assert!(page.more);
    let next_start = format!("{}\0", page.kvs[3].key);
    let rest = s.range(&next_start, &keys::prefix_end("/p/"), 0).unwrap();
    assert_eq!(rest.kvs.len(), 6);
    assert_eq!(all.revision, s.revision());
}

/// A watch delivers every change after its revision once, in order,
/// deletes with the last value.
pub fn watches(s: &dyn Store) {
    put(s, "/w/a", "1");
    let from = s.revision() + 1;
    let mut w = s.watch("/w/", from);
    put(s, "/w/a", "2");
    put(s, "/x/a", "2");
    s.delete("/w/a").unwrap();
    put(s, "/w/b", "1");
    let evs = w.poll(100).unwrap();
    let seen: Vec<(WatchEventKind, &str, &str)> = evs
        .iter()
        .map(|e| (e.kind, e.kv.key.as_str(), val(&e.kv)))
        .collect();
    assert_eq!(
        seen,
        vec![
            (WatchEventKind::Put, "/w/a", "2"),
            (WatchEventKind::Delete, "/w/a", "2"),
            (WatchEventKind::Put, "/w/b", "1"),
        ]
    );
    let revs: Vec<Revision> = evs.iter().map(WatchEvent::revision).collect();
    assert!(revs.windows(2).all(|p| p[0] < p[1]));
    assert!(w.poll(100).unwrap().is_empty());
}

/// Oversized values are refused whole.
pub fn limits(s: &dyn Store) {
    let big = vec![0u8; MAX_VALUE + 1];
    let r = s.txn(Txn::ops(vec![
        Op::put("/ok", b"x".to_vec()),
        Op::put("/big", big),
    ]));
    assert!(matches!(r, Err(StoreError::TooLarge(_))));
    assert!(s.get("/ok").unwrap().is_none());
}

pub fn run_all(open: &dyn Fn() -> Box<dyn Store>) {
    revisions_and_versions(open().as_ref());
    compares(open().as_ref());
    ranges(open().as_ref());
    watches(open().as_ref());
    limits(open().as_ref());
}
