//! One set of checks that every [`Store`] backend passes, run on the embedded store and on a real
//! etcd (`llmgw_tests::etcd`), plus the tests only one backend can take (durability, a dying
//! server).

use std::time::Duration;

use futures_util::StreamExt;
use llmgw_tests::etcd::Etcd;

use super::embedded::{EmbeddedOptions, EmbeddedStore};
use super::etcd::{EtcdOptions, EtcdStore};
use super::*;

/// How long anything awaited may take before the check fails.
const PATIENCE: Duration = Duration::from_secs(15);

fn put(key: &str, value: &str) -> Op {
    Op::Put { key: key.into(), value: value.into(), lease: 0 }
}

fn get(key: &str) -> Op {
    Op::Get { key: key.into() }
}

fn cmp(key: &str, op: CompareOp, target: CompareTarget) -> Compare {
    Compare { key: key.into(), op, target }
}

async fn write(s: &dyn Store, ops: Vec<Op>) -> i64 {
    let result = s.txn(Txn { success: ops, ..Txn::default() }).await.unwrap();
    assert!(result.succeeded);
    result.revision
}

async fn value(s: &dyn Store, key: &str) -> Option<Vec<u8>> {
    s.get(key.as_bytes()).await.unwrap().map(|kv| kv.value)
}

async fn next(w: &mut WatchStream) -> WatchBatch {
    match tokio::time::timeout(PATIENCE, w.next()).await {
        Ok(Some(Ok(batch))) => batch,
        other => panic!("expected a watch batch, got {other:?}"),
    }
}

fn put_event(key: &str, value: &str, create: i64, rev: i64, version: i64) -> Event {
    Event::Put(KeyValue {
        key: key.into(),
        value: value.into(),
        create_revision: create,
        mod_revision: rev,
        version,
        lease: 0,
    })
}

/// Every check, each under its own prefix so they share one store.
async fn run_all(s: &dyn Store, compact: impl AsyncFn(i64)) {
    put_and_get(s).await;
    range_by_prefix(s).await;
    range_larger_than_a_page(s).await;
    create_if_absent(s).await;
    compare_and_swap(s).await;
    failure_branch_and_gets(s).await;
    revision_counting(s).await;
    delete_and_delete_prefix(s).await;
    watch_replays_then_streams(s).await;
    watches_opened_during_writes(s).await;
    watch_compacted(s, compact).await;
    leases(s).await;
    lease_expiry(s).await;
    txn_limits(s).await;
}

async fn put_and_get(s: &dyn Store) {
    assert_eq!(s.get(b"/pg/a").await.unwrap(), None);
    let r1 = write(s, vec![put("/pg/a", "1")]).await;
    let kv = s.get(b"/pg/a").await.unwrap().unwrap();
    let expected = KeyValue {
        key: "/pg/a".into(),
        value: "1".into(),
        create_revision: r1,
        mod_revision: r1,
        version: 1,
        lease: 0,
    };
    assert_eq!(kv, expected);
    let r2 = write(s, vec![put("/pg/a", "2")]).await;
    let kv = s.get(b"/pg/a").await.unwrap().unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision, kv.version),
        (&b"2"[..], r1, r2, 2)
    );
    assert_eq!(s.revision().await.unwrap(), r2);
}

async fn range_by_prefix(s: &dyn Store) {
    let keys = ["/rg/a/2", "/rg/ab", "/rg/a/1", "/rg/a", "/rg/a/3/x", "/rg/", "/rg/a0"];
    let rev = write(s, keys.iter().map(|k| put(k, k)).collect()).await;
    let r = s.range(b"/rg/a/").await.unwrap();
    let got: Vec<_> = r.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect();
    assert_eq!(got, ["/rg/a/1", "/rg/a/2", "/rg/a/3/x"]);
    assert!(r.kvs.iter().all(|kv| kv.value == kv.key && kv.mod_revision == rev));
    assert_eq!(r.revision, rev);
    assert_eq!(s.range(b"/rg/").await.unwrap().kvs.len(), keys.len());
    assert!(s.range(b"/rg/nothing/").await.unwrap().kvs.is_empty());
}

/// More keys than one etcd range page (1000): read at one revision, in order, none twice.
async fn range_larger_than_a_page(s: &dyn Store) {
    let keys: Vec<String> = (0..1100).map(|i| format!("/big/{i:05}")).collect();
    for chunk in keys.chunks(MAX_TXN_OPS) {
        write(s, chunk.iter().map(|k| put(k, "v")).collect()).await;
    }
    let r = s.range(b"/big/").await.unwrap();
    let got: Vec<String> = r.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect();
    assert_eq!(got, keys);
    assert_eq!(r.revision, s.revision().await.unwrap());
}

async fn create_if_absent(s: &dyn Store) {
    let create = |v: &str| Txn {
        compares: vec![cmp("/cia/k", CompareOp::Equal, CompareTarget::CreateRevision(0))],
        success: vec![put("/cia/k", v)],
        failure: vec![get("/cia/k")],
    };
    let first = s.txn(create("first")).await.unwrap();
    assert!(first.succeeded);
    assert!(first.gets.is_empty());
    let second = s.txn(create("second")).await.unwrap();
    assert!(!second.succeeded);
    assert_eq!(second.revision, first.revision, "a failed create wrote nothing");
    assert_eq!(second.gets[0].as_ref().map(|kv| kv.value.as_slice()), Some(&b"first"[..]));
    assert_eq!(value(s, "/cia/k").await.as_deref(), Some(&b"first"[..]));
}

async fn compare_and_swap(s: &dyn Store) {
    let r1 = write(s, vec![put("/cas/k", "a")]).await;
    let swap = |rev: i64, v: &str| Txn {
        compares: vec![cmp("/cas/k", CompareOp::Equal, CompareTarget::ModRevision(rev))],
        success: vec![put("/cas/k", v)],
        failure: vec![],
    };
    let ok = s.txn(swap(r1, "b")).await.unwrap();
    assert!(ok.succeeded);
    assert_eq!(ok.revision, r1 + 1);
    let stale = s.txn(swap(r1, "c")).await.unwrap();
    assert!(!stale.succeeded);
    assert_eq!(value(s, "/cas/k").await.as_deref(), Some(&b"b"[..]));

    // The other targets and operators, on the key (version 2, value "b") and an absent one.
    let cases = [
        (cmp("/cas/k", CompareOp::Equal, CompareTarget::Version(2)), true),
        (cmp("/cas/k", CompareOp::Greater, CompareTarget::Version(1)), true),
        (cmp("/cas/k", CompareOp::Less, CompareTarget::ModRevision(ok.revision)), false),
        (cmp("/cas/k", CompareOp::NotEqual, CompareTarget::CreateRevision(r1)), false),
        (cmp("/cas/k", CompareOp::Equal, CompareTarget::Value("b".into())), true),
        (cmp("/cas/k", CompareOp::Greater, CompareTarget::Value("a".into())), true),
        (cmp("/cas/k", CompareOp::NotEqual, CompareTarget::Value("b".into())), false),
        (cmp("/cas/none", CompareOp::Equal, CompareTarget::Version(0)), true),
        (cmp("/cas/none", CompareOp::Equal, CompareTarget::ModRevision(0)), true),
        // etcd: a value compare on an absent key is always false.
        (cmp("/cas/none", CompareOp::NotEqual, CompareTarget::Value("x".into())), false),
    ];
    for (compare, expected) in cases {
        let txn = Txn { compares: vec![compare.clone()], ..Txn::default() };
        assert_eq!(s.txn(txn).await.unwrap().succeeded, expected, "{compare:?}");
    }
}

async fn failure_branch_and_gets(s: &dyn Store) {
    let r1 = write(s, vec![put("/fb/a", "1")]).await;
    let txn = Txn {
        compares: vec![cmp("/fb/a", CompareOp::Equal, CompareTarget::Value("other".into()))],
        success: vec![put("/fb/success", "x")],
        failure: vec![get("/fb/a"), put("/fb/b", "2"), get("/fb/b"), get("/fb/none")],
    };
    let r = s.txn(txn).await.unwrap();
    assert!(!r.succeeded);
    assert_eq!(r.revision, r1 + 1, "the failure branch wrote");
    let values: Vec<_> = r.gets.iter().map(|kv| kv.as_ref().map(|kv| kv.value.clone())).collect();
    assert_eq!(values, [Some(b"1".to_vec()), Some(b"2".to_vec()), None], "a get sees the txn's own put");
    assert_eq!(r.gets[1].as_ref().map(|kv| kv.mod_revision), Some(r1 + 1));
    assert_eq!(value(s, "/fb/success").await, None);
}

async fn revision_counting(s: &dyn Store) {
    let r0 = s.revision().await.unwrap();
    let r = write(s, vec![put("/rc/a", "1"), put("/rc/b", "1"), put("/rc/c", "1")]).await;
    assert_eq!(r, r0 + 1, "one revision per transaction, however many keys");
    let read_only = s.txn(Txn { success: vec![get("/rc/a")], ..Txn::default() }).await.unwrap();
    assert_eq!(read_only.revision, r0 + 1);
    let failed = Txn {
        compares: vec![cmp("/rc/a", CompareOp::Equal, CompareTarget::Version(7))],
        success: vec![put("/rc/a", "2")],
        failure: vec![],
    };
    assert_eq!(s.txn(failed).await.unwrap().revision, r0 + 1);
    let noop_delete = Txn { success: vec![Op::Delete { key: "/rc/none".into() }], ..Txn::default() };
    assert_eq!(s.txn(noop_delete).await.unwrap().revision, r0 + 1, "deleting nothing writes nothing");
    assert_eq!(write(s, vec![put("/rc/a", "1")]).await, r0 + 2, "an unchanged value still writes");
    assert_eq!(s.revision().await.unwrap(), r0 + 2);
}

async fn delete_and_delete_prefix(s: &dyn Store) {
    let keys = ["/del/k", "/del/k2", "/del/p/1", "/del/p/2", "/del/p/3/x", "/del/p0", "/del/pp"];
    write(s, keys.iter().map(|k| put(k, "v")).collect()).await;
    let r = write(s, vec![Op::Delete { key: "/del/k".into() }]).await;
    assert_eq!(value(s, "/del/k").await, None);
    assert!(value(s, "/del/k2").await.is_some());
    assert_eq!(write(s, vec![Op::DeletePrefix { prefix: "/del/p/".into() }]).await, r + 1);
    let left: Vec<_> = s.range(b"/del/").await.unwrap().kvs.into_iter().map(|kv| kv.key).collect();
    assert_eq!(left, [b"/del/k2".to_vec(), b"/del/p0".to_vec(), b"/del/pp".to_vec()]);
    // Recreated after a delete, a key starts over.
    let r = write(s, vec![put("/del/k", "again")]).await;
    let kv = s.get(b"/del/k").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.version), (r, 1));
}

async fn watch_replays_then_streams(s: &dyn Store) {
    let r1 = write(s, vec![put("/w/a", "1")]).await;
    let r2 = write(s, vec![put("/w/b", "2"), put("/w/c", "3")]).await;
    write(s, vec![put("/wx", "neighbour")]).await;
    let r4 = write(s, vec![Op::Delete { key: "/w/a".into() }]).await;

    let mut w = s.watch(b"/w/", r1).await.unwrap();
    let b = next(&mut w).await;
    assert_eq!(b, WatchBatch { revision: r1, events: vec![put_event("/w/a", "1", r1, r1, 1)] });
    let b = next(&mut w).await;
    assert_eq!(b.revision, r2);
    assert_eq!(b.events, [put_event("/w/b", "2", r2, r2, 1), put_event("/w/c", "3", r2, r2, 1)]);
    let b = next(&mut w).await;
    assert_eq!(
        b,
        WatchBatch { revision: r4, events: vec![Event::Delete { key: "/w/a".into(), mod_revision: r4 }] }
    );

    // Then live, without a gap: a put, a multi-key transaction as one batch (a neighbour's
    // event filtered out), a delete prefix.
    let mut from_r2 = s.watch(b"/w/", r2).await.unwrap();
    let mut live_only = s.watch(b"/w/", 0).await.unwrap();
    let r5 = write(s, vec![put("/w/d", "4")]).await;
    assert_eq!(
        next(&mut w).await,
        WatchBatch { revision: r5, events: vec![put_event("/w/d", "4", r5, r5, 1)] }
    );
    let r6 = write(s, vec![put("/w/b", "22"), put("/wy", "x"), Op::Delete { key: "/w/c".into() }]).await;
    let b = next(&mut w).await;
    assert_eq!(b.revision, r6);
    assert_eq!(
        b.events,
        [put_event("/w/b", "22", r2, r6, 2), Event::Delete { key: "/w/c".into(), mod_revision: r6 }]
    );
    let r7 = write(s, vec![Op::DeletePrefix { prefix: "/w/".into() }]).await;
    let b = next(&mut w).await;
    assert_eq!(b.revision, r7);
    assert_eq!(b.events.iter().map(Event::key).collect::<Vec<_>>(), [&b"/w/b"[..], b"/w/d"]);

    // From an inclusive start in the middle of history; and live only.
    for expected in [r2, r4, r5, r6, r7] {
        assert_eq!(next(&mut from_r2).await.revision, expected);
    }
    assert_eq!(next(&mut live_only).await.revision, r5);
}

/// Watches opened while writes commit see every revision once, in order: no gap between the
/// history they replay and the live changes that follow.
async fn watches_opened_during_writes(s: &dyn Store) {
    const WRITES: i64 = 60;
    let first = s.revision().await.unwrap() + 1;
    let writer = async {
        for i in 0..WRITES {
            write(s, vec![put("/wdw/k", &i.to_string())]).await;
        }
    };
    let watchers = async {
        let mut watches = Vec::new();
        for i in 0..6 {
            let from = if i % 2 == 0 { first } else { 0 };
            watches.push((from, s.watch(b"/wdw/", from).await.unwrap()));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        watches
    };
    let ((), watches) = tokio::join!(writer, watchers);
    for (from, mut w) in watches {
        let mut expected = None;
        loop {
            let b = next(&mut w).await;
            let want = expected.unwrap_or(if from > 0 { from } else { b.revision });
            assert_eq!(b.revision, want, "watch from {from}: a revision was skipped or repeated");
            if b.revision == first + WRITES - 1 {
                break;
            }
            expected = Some(b.revision + 1);
        }
    }
}

async fn watch_compacted(s: &dyn Store, compact: impl AsyncFn(i64)) {
    let r1 = write(s, vec![put("/wc/k", "1")]).await;
    write(s, vec![put("/wc/k", "2")]).await;
    let r3 = write(s, vec![put("/wc/k", "3")]).await;
    compact(r3).await;
    // etcd reports a compacted start on the stream, the embedded store right away: both are
    // allowed by the trait.
    let outcome = match s.watch(b"/wc/", r1).await {
        Err(e) => e,
        Ok(mut w) => match tokio::time::timeout(PATIENCE, w.next()).await {
            Ok(Some(Err(e))) => e,
            other => panic!("expected Compacted from the stream, got {other:?}"),
        },
    };
    match outcome {
        StoreError::Compacted { requested, compact_revision } => {
            assert_eq!((requested, compact_revision), (r1, r3));
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    // The compaction revision itself is still watchable.
    let mut w = s.watch(b"/wc/", r3).await.unwrap();
    assert_eq!(
        next(&mut w).await,
        WatchBatch { revision: r3, events: vec![put_event("/wc/k", "3", r1, r3, 3)] }
    );
}

async fn leases(s: &dyn Store) {
    let lease = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    let put_leased = |key: &str| Op::Put { key: key.into(), value: "v".into(), lease };
    write(s, vec![put_leased("/l/a"), put_leased("/l/b"), put("/l/c", "unleased")]).await;
    assert_eq!(s.get(b"/l/a").await.unwrap().map(|kv| kv.lease), Some(lease));
    s.keep_alive(lease).await.unwrap();
    // A put without the lease detaches the key from it.
    write(s, vec![put("/l/b", "detached")]).await;
    let mut w = s.watch(b"/l/", 0).await.unwrap();
    s.revoke_lease(lease).await.unwrap();
    assert_eq!(value(s, "/l/a").await, None);
    assert!(value(s, "/l/b").await.is_some());
    assert!(value(s, "/l/c").await.is_some());
    let b = next(&mut w).await;
    assert_eq!(b.events, [Event::Delete { key: "/l/a".into(), mod_revision: b.revision }]);

    assert!(matches!(s.revoke_lease(lease).await, Err(StoreError::LeaseNotFound(l)) if l == lease));
    assert!(matches!(s.keep_alive(lease).await, Err(StoreError::LeaseNotFound(l)) if l == lease));
    let txn = Txn { success: vec![put_leased("/l/d")], ..Txn::default() };
    assert!(matches!(s.txn(txn).await, Err(StoreError::LeaseNotFound(l)) if l == lease));
    assert_eq!(value(s, "/l/d").await, None);
}

async fn lease_expiry(s: &dyn Store) {
    let lease = s.grant_lease(Duration::from_secs(1)).await.unwrap();
    write(s, vec![Op::Put { key: "/le/k".into(), value: "v".into(), lease }]).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while value(s, "/le/k").await.is_some() {
        assert!(tokio::time::Instant::now() < deadline, "the key outlived its lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(matches!(s.keep_alive(lease).await, Err(StoreError::LeaseNotFound(_))));
}

async fn txn_limits(s: &dyn Store) {
    let puts = |n: usize| (0..n).map(|i| put(&format!("/tl/{i:03}"), "v")).collect::<Vec<_>>();
    let r0 = s.revision().await.unwrap();
    let too_many = Txn { success: puts(MAX_TXN_OPS + 1), ..Txn::default() };
    assert!(matches!(s.txn(too_many).await, Err(StoreError::TooManyOps(129, 128))));
    assert_eq!(s.revision().await.unwrap(), r0);
    assert_eq!(write(s, puts(MAX_TXN_OPS)).await, r0 + 1);
    assert_eq!(s.range(b"/tl/").await.unwrap().kvs.len(), MAX_TXN_OPS);
    // etcd refuses a key written twice in one transaction; so does the embedded store.
    for ops in [
        vec![put("/tl/x", "1"), put("/tl/x", "2")],
        vec![put("/tl/x", "1"), Op::Delete { key: "/tl/x".into() }],
        vec![Op::DeletePrefix { prefix: "/tl/".into() }, put("/tl/x", "1")],
    ] {
        let txn = Txn { success: ops, ..Txn::default() };
        assert!(matches!(s.txn(txn).await, Err(StoreError::Other(_))));
    }
    assert_eq!(s.revision().await.unwrap(), r0 + 1);
}

#[tokio::test]
async fn embedded_store_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("store.redb")).unwrap();
    assert_eq!(store.revision().await.unwrap(), 1, "an empty store is at revision 1, as etcd");
    run_all(&store, async |rev| store.compact(rev).await.unwrap()).await;
}

#[tokio::test]
async fn etcd_store_conformance() {
    let etcd = Etcd::start().await;
    let store = EtcdStore::connect(&etcd.endpoints(), &EtcdOptions::default()).await.unwrap();
    assert_eq!(store.revision().await.unwrap(), 1, "a new etcd is at revision 1");
    run_all(&store, async |rev| store.compact(rev).await.unwrap()).await;
}

#[tokio::test]
async fn embedded_store_keeps_data_and_revision_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let store = EmbeddedStore::open(&path).unwrap();
    let r1 = write(&store, vec![put("/d/a", "1"), put("/d/b", "2")]).await;
    let r2 = write(&store, vec![Op::Delete { key: "/d/b".into() }]).await;
    drop(store);

    let store = EmbeddedStore::open(&path).unwrap();
    assert_eq!(store.revision().await.unwrap(), r2);
    let kv = store.get(b"/d/a").await.unwrap().unwrap();
    assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"1"[..], r1));
    assert_eq!(value(&store, "/d/b").await, None);
    // History survives too: a watch from before the restart replays it.
    let mut w = store.watch(b"/d/", r1).await.unwrap();
    assert_eq!(next(&mut w).await.revision, r1);
    assert_eq!(next(&mut w).await.revision, r2);

    // Leases do not survive: their keys are deleted at open, in one logged transaction.
    let lease = store.grant_lease(Duration::from_secs(3600)).await.unwrap();
    write(&store, vec![Op::Put { key: "/d/leased".into(), value: "v".into(), lease }]).await;
    let before = store.revision().await.unwrap();
    drop((w, store));
    let store = EmbeddedStore::open(&path).unwrap();
    assert_eq!(value(&store, "/d/leased").await, None);
    assert_eq!(store.revision().await.unwrap(), before + 1);
    let mut w = store.watch(b"/d/leased", before + 1).await.unwrap();
    assert!(matches!(&next(&mut w).await.events[..], [Event::Delete { .. }]));
}

/// The child half of [`embedded_store_commit_survives_abort`]: commits, then dies at once.
#[test]
fn embedded_store_crash_child() {
    let Some(path) = std::env::var_os("LLMGW_STORE_CRASH_PATH") else { return };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = EmbeddedStore::open(std::path::Path::new(&path)).unwrap();
        write(&store, vec![put("/crash/k", "committed")]).await;
    });
    // No destructor, no flush: what a kill -9 leaves.
    std::process::abort();
}

#[tokio::test]
async fn embedded_store_commit_survives_abort() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "store::conformance::embedded_store_crash_child", "--test-threads=1"])
        .env("LLMGW_STORE_CRASH_PATH", &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child should have aborted");
    let store = EmbeddedStore::open(&path).unwrap();
    assert_eq!(value(&store, "/crash/k").await.as_deref(), Some(&b"committed"[..]));
    assert_eq!(store.revision().await.unwrap(), 2);
}

#[tokio::test]
async fn embedded_store_keeps_bounded_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with(
        &dir.path().join("s.redb"),
        &EmbeddedOptions { history: 5, ..EmbeddedOptions::default() },
    )
    .unwrap();
    let mut last = 0;
    for i in 0..10 {
        last = write(&store, vec![put("/h/k", &i.to_string())]).await;
    }
    let oldest = last - 4;
    assert!(matches!(
        store.watch(b"/h/", oldest - 1).await,
        Err(StoreError::Compacted { requested, compact_revision }) if requested == oldest - 1 && compact_revision == oldest
    ));
    let mut w = store.watch(b"/h/", oldest).await.unwrap();
    assert_eq!(next(&mut w).await.revision, oldest);
}

#[tokio::test]
async fn embedded_store_watch_ends_when_store_closes() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
    let mut w = store.watch(b"/", 0).await.unwrap();
    drop(store);
    let item = tokio::time::timeout(PATIENCE, w.next()).await.unwrap();
    assert!(matches!(item, Some(Err(StoreError::Unavailable(_)))), "{item:?}");
    assert!(w.next().await.is_none());
}

#[tokio::test]
async fn embedded_store_watch_lagging_far_behind_ends_with_error() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EmbeddedOptions { watch_buffer: 16, ..EmbeddedOptions::default() };
    let store = EmbeddedStore::open_with(&dir.path().join("s.redb"), &opts).unwrap();
    let mut w = store.watch(b"/lag/", 0).await.unwrap();
    for i in 0..100 {
        write(&store, vec![put("/lag/k", &i.to_string())]).await;
    }
    let mut seen = 0;
    loop {
        match tokio::time::timeout(PATIENCE, w.next()).await.unwrap() {
            Some(Ok(_)) => seen += 1,
            Some(Err(StoreError::Unavailable(_))) => break,
            other => panic!("expected batches then Unavailable, got {other:?}"),
        }
    }
    assert!(seen < 100);
}

#[tokio::test]
async fn etcd_store_unreachable_is_unavailable() {
    let opts = EtcdOptions { connect_timeout: Duration::from_millis(500), ..EtcdOptions::default() };
    // Port 1 on loopback: nothing listens there.
    let result = EtcdStore::connect(&["http://127.0.0.1:1".to_owned()], &opts).await;
    assert!(matches!(result, Err(StoreError::Unavailable(_))), "{:?}", result.err());
}

#[tokio::test]
async fn etcd_store_watch_ends_when_etcd_dies_and_store_recovers() {
    let mut etcd = Etcd::start().await;
    let opts = EtcdOptions { request_timeout: Duration::from_secs(2), ..EtcdOptions::default() };
    let store = EtcdStore::connect(&etcd.endpoints(), &opts).await.unwrap();
    let mut w = store.watch(b"/", 0).await.unwrap();
    etcd.stop();
    let item = tokio::time::timeout(PATIENCE, w.next()).await.unwrap();
    assert!(matches!(item, Some(Err(StoreError::Unavailable(_)))), "{item:?}");
    assert!(w.next().await.is_none());
    assert!(matches!(store.revision().await, Err(StoreError::Unavailable(_))));

    etcd.restart().await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while store.revision().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the client did not reconnect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
