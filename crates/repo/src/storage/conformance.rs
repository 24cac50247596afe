//! The storage conformance suite. Every backend's tests call `run_all` on a fresh, empty
//! store, so local disk and S3 are held to exactly the same behaviour. It panics (with a
//! message naming the broken rule) on the first violation, as a test should.

use super::{Key, Pieces, PutMode, STREAM_GATHER, Storage, StorageError};
use bytes::Bytes;

fn key(s: &str) -> Key {
    Key::new(s).unwrap_or_else(|e| panic!("conformance key {s}: {e}"))
}

async fn expect_ok<T>(what: &str, r: Result<T, StorageError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("conformance: {what} failed: {e}"),
    }
}

pub async fn run_all(store: &dyn Storage) {
    put_get_round_trip(store).await;
    create_only_never_replaces(store).await;
    overwrite_replaces(store).await;
    ranged_reads(store).await;
    head_and_missing(store).await;
    list_by_prefix(store).await;
    delete_is_idempotent(store).await;
    delete_many_removes_exactly_the_keys(store).await;
    streamed_puts(store).await;
    a_failing_stream_leaves_no_object(store).await;
    keys_refuse_escapes();
}

async fn put_get_round_trip(store: &dyn Storage) {
    let k = key("conf/rt/obj");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    expect_ok(
        "put",
        store
            .put(&k, Bytes::from(data.clone()), PutMode::Create)
            .await,
    )
    .await;
    let got = expect_ok("get", store.get(&k, None).await).await;
    assert_eq!(
        got.as_ref(),
        &data[..],
        "conformance: get returns what put stored"
    );
    let empty = key("conf/rt/empty");
    expect_ok(
        "put empty",
        store.put(&empty, Bytes::new(), PutMode::Create).await,
    )
    .await;
    assert!(
        expect_ok("get empty", store.get(&empty, None).await)
            .await
            .is_empty()
    );
}

async fn create_only_never_replaces(store: &dyn Storage) {
    let k = key("conf/create/obj");
    expect_ok(
        "put",
        store
            .put(&k, Bytes::from_static(b"first"), PutMode::Create)
            .await,
    )
    .await;
    let again = store
        .put(&k, Bytes::from_static(b"second"), PutMode::Create)
        .await;
    assert!(
        matches!(again, Err(StorageError::AlreadyExists { .. })),
        "conformance: create-only put of an existing key must fail with AlreadyExists, got {again:?}"
    );
    let got = expect_ok("get", store.get(&k, None).await).await;
    assert_eq!(
        got.as_ref(),
        b"first",
        "conformance: create-only put must keep the original"
    );
}

async fn overwrite_replaces(store: &dyn Storage) {
    let k = key("conf/over/obj");
    expect_ok(
        "put",
        store
            .put(&k, Bytes::from_static(b"one"), PutMode::Overwrite)
            .await,
    )
    .await;
    expect_ok(
        "put",
        store
            .put(&k, Bytes::from_static(b"two!"), PutMode::Overwrite)
            .await,
    )
    .await;
    let got = expect_ok("get", store.get(&k, None).await).await;
    assert_eq!(
        got.as_ref(),
        b"two!",
        "conformance: overwrite replaces the object"
    );
}

async fn ranged_reads(store: &dyn Storage) {
    let k = key("conf/range/obj");
    let data: Vec<u8> = (0..=255u8).collect();
    expect_ok(
        "put",
        store
            .put(&k, Bytes::from(data.clone()), PutMode::Create)
            .await,
    )
    .await;
    let got = expect_ok("ranged get", store.get(&k, Some(10..20)).await).await;
    assert_eq!(got.as_ref(), &data[10..20], "conformance: ranged get");
    let tail = expect_ok("ranged get to end", store.get(&k, Some(200..256)).await).await;
    assert_eq!(
        tail.as_ref(),
        &data[200..],
        "conformance: ranged get to the end"
    );
    assert!(
        matches!(
            store.get(&k, Some(250..300)).await,
            Err(StorageError::OutOfRange { .. })
        ),
        "conformance: a range past the end is an OutOfRange error"
    );
}

async fn head_and_missing(store: &dyn Storage) {
    let k = key("conf/head/obj");
    expect_ok(
        "put",
        store
            .put(&k, Bytes::from_static(b"12345"), PutMode::Create)
            .await,
    )
    .await;
    let meta = expect_ok("head", store.head(&k).await).await;
    assert_eq!(meta.size, 5, "conformance: head reports the size");
    let missing = key("conf/head/missing");
    assert!(
        matches!(
            store.head(&missing).await,
            Err(StorageError::NotFound { .. })
        ),
        "conformance: head of a missing object is NotFound"
    );
    assert!(
        matches!(
            store.get(&missing, None).await,
            Err(StorageError::NotFound { .. })
        ),
        "conformance: get of a missing object is NotFound"
    );
}

async fn list_by_prefix(store: &dyn Storage) {
    for k in [
        "conf/list/a/1",
        "conf/list/a/2",
        "conf/list/b/deep/3",
        "conf/listx/4",
    ] {
        expect_ok(
            "put",
            store
                .put(&key(k), Bytes::from_static(b"x"), PutMode::Create)
                .await,
        )
        .await;
    }
    let listed = expect_ok("list", store.list(&key("conf/list")).await).await;
    let names: Vec<&str> = listed.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(
        names,
        ["conf/list/a/1", "conf/list/a/2", "conf/list/b/deep/3"],
        "conformance: list returns every object under the prefix, recursively, sorted, and nothing beside it"
    );
    assert!(
        expect_ok("list missing", store.list(&key("conf/nothing-here")).await)
            .await
            .is_empty(),
        "conformance: listing an empty prefix is empty, not an error"
    );
    for (prefix, expected) in [
        ("conf/list", true),
        ("conf/list/b", true),
        ("conf/lis", false),
        ("conf/nothing-here", false),
    ] {
        assert_eq!(
            expect_ok("any", store.any(&key(prefix)).await).await,
            expected,
            "conformance: any({prefix}) says whether an object lies under {prefix}/"
        );
    }
}

async fn delete_is_idempotent(store: &dyn Storage) {
    let k = key("conf/del/obj");
    expect_ok(
        "put",
        store
            .put(&k, Bytes::from_static(b"x"), PutMode::Create)
            .await,
    )
    .await;
    expect_ok("delete", store.delete(&k).await).await;
    assert!(
        matches!(
            store.get(&k, None).await,
            Err(StorageError::NotFound { .. })
        ),
        "conformance: a deleted object is gone"
    );
    expect_ok("delete missing", store.delete(&k).await).await;
    // A deleted key can be created again.
    expect_ok(
        "re-put",
        store
            .put(&k, Bytes::from_static(b"y"), PutMode::Create)
            .await,
    )
    .await;
}

async fn delete_many_removes_exactly_the_keys(store: &dyn Storage) {
    // More than one S3 DeleteObjects batch (1000 keys), with missing keys mixed in.
    let keys: Vec<Key> = (0..1003)
        .map(|i| key(&format!("conf/many/{i:04}")))
        .collect();
    for k in keys.iter().step_by(50) {
        expect_ok(
            "put",
            store
                .put(k, Bytes::from_static(b"m"), PutMode::Create)
                .await,
        )
        .await;
    }
    let keep = key("conf/many/keep");
    expect_ok(
        "put",
        store
            .put(&keep, Bytes::from_static(b"k"), PutMode::Create)
            .await,
    )
    .await;
    expect_ok("delete_many", store.delete_many(&keys).await).await;
    let left: Vec<Key> = expect_ok("list", store.list(&key("conf/many")).await)
        .await
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(
        left,
        vec![keep.clone()],
        "conformance: delete_many removes exactly the keys it is given"
    );
    expect_ok("delete_many none", store.delete_many(&[]).await).await;
    expect_ok("delete", store.delete(&keep).await).await;
}

/// Deterministic bytes for streamed objects: position-dependent, so a part sent twice, out
/// of order or not at all changes the result.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// `data` as a stream of pieces of uneven sizes (odd sizes, some larger than an S3 part).
fn pieces(data: &[u8]) -> Pieces {
    let mut out = Vec::new();
    let mut at = 0;
    let sizes = [1, 4093, 1 << 20, 7 << 20, 17 << 20, 65_537, 0];
    let mut i = 0;
    while at < data.len() {
        let n = sizes[i % sizes.len()].min(data.len() - at);
        out.push(Ok(Bytes::copy_from_slice(&data[at..at + n])));
        at += n;
        i += 1;
    }
    Box::pin(futures_util::stream::iter(out))
}

async fn streamed_puts(store: &dyn Storage) {
    // Empty, small (one request), and larger than the gather limit (S3: a multipart upload of
    // several parts whose boundaries fall inside pieces).
    for (name, len) in [
        ("empty", 0),
        ("small", 300_000),
        ("large", STREAM_GATHER * 2 + 12_345),
    ] {
        let k = key(&format!("conf/stream/{name}"));
        let data = pattern(len, len as u32);
        expect_ok(
            "put_stream",
            store.put_stream(&k, pieces(&data), PutMode::Create).await,
        )
        .await;
        let meta = expect_ok("head", store.head(&k).await).await;
        assert_eq!(
            meta.size, len as u64,
            "conformance: a streamed put of {name} stores every byte"
        );
        let got = expect_ok("get", store.get(&k, None).await).await;
        assert!(
            got.as_ref() == &data[..],
            "conformance: get returns what the streamed put of {name} stored"
        );
        let again = store
            .put_stream(&k, pieces(&pattern(len + 1, 9)), PutMode::Create)
            .await;
        assert!(
            matches!(again, Err(StorageError::AlreadyExists { .. })),
            "conformance: a create-only streamed put of an existing key must fail with AlreadyExists, got {again:?}"
        );
        let replacement = pattern(len / 2 + 3, 7);
        expect_ok(
            "put_stream overwrite",
            store
                .put_stream(&k, pieces(&replacement), PutMode::Overwrite)
                .await,
        )
        .await;
        let got = expect_ok("get", store.get(&k, None).await).await;
        assert!(
            got.as_ref() == &replacement[..],
            "conformance: an overwriting streamed put of {name} replaces the object"
        );
        expect_ok("delete", store.delete(&k).await).await;
    }
}

async fn a_failing_stream_leaves_no_object(store: &dyn Storage) {
    for (name, before) in [("short", 1000), ("long", STREAM_GATHER * 2)] {
        let k = key(&format!("conf/stream-fail/{name}"));
        let good = pattern(before, 3);
        let body = Box::pin(futures_util::StreamExt::chain(
            pieces(&good),
            futures_util::stream::iter([Err(StorageError::Permanent {
                key: k.to_string(),
                message: "the producer failed".into(),
            })]),
        ));
        let r = store.put_stream(&k, body, PutMode::Create).await;
        assert!(
            r.is_err(),
            "conformance: a streamed put whose body fails ({name}) must fail"
        );
        assert!(
            matches!(store.head(&k).await, Err(StorageError::NotFound { .. })),
            "conformance: a streamed put whose body fails ({name}) leaves no object"
        );
    }
    assert!(
        expect_ok("list", store.list(&key("conf/stream-fail")).await)
            .await
            .is_empty(),
        "conformance: a failed streamed put leaves nothing listed"
    );
    // Nor anything half-written: a put that fails cleans up after itself (local disk: its
    // temporary file; S3: the multipart upload is aborted). A store that cannot list
    // interrupted uploads must say so, not claim there are none.
    match store.leftovers(&key("conf/stream-fail")).await {
        Ok(left) => assert!(
            left.is_empty(),
            "conformance: a failed streamed put leaves no leftover: {left:?}"
        ),
        Err(StorageError::Unsupported { .. }) => {}
        Err(e) => panic!("conformance: leftovers failed: {e}"),
    }
}

fn keys_refuse_escapes() {
    for bad in ["", "/abs", "a/../b", "..", "a//b", "a/./b", "a b", "a\\b"] {
        assert!(
            Key::new(bad).is_err(),
            "conformance: key '{bad}' must be refused"
        );
    }
}
