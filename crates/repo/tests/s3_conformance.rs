//! The storage conformance suite against the S3 backend, talking HTTP to two real
//! S3-compatible servers started here on 127.0.0.1 (moto, and s3s-fs, which checks signatures
//! and stores on disk; `.ci/run` installs both), the retry wrapper over S3 with injected
//! transient failures, and the memory bound of streamed multipart uploads.

use cairn_repo::storage::retry::{FailFirst, RetryPolicy, Retrying};
use cairn_repo::storage::s3::{PART_CONCURRENCY, PART_SIZE, S3Options, S3Storage};
use cairn_repo::storage::{Key, PutMode, Storage, StorageError, conformance};
use std::sync::Arc;
use std::time::Duration;

#[path = "../../../tests/common/proxy.rs"]
mod proxy;
#[path = "../../../tests/common/s3.rs"]
mod s3server;
mod support {
    pub mod big_objects;
}
use proxy::{Fault, Proxy};
use s3server::{create_bucket, start_moto, start_s3s_fs};

async fn store(port: u16, bucket: &str, prefix: &str) -> Result<S3Storage, StorageError> {
    let mut o = S3Options::from_url(&format!("s3://{bucket}/{prefix}"))?;
    o.endpoint = Some(format!("http://127.0.0.1:{port}"));
    o.region = Some("us-east-1".into());
    o.path_style = true;
    S3Storage::new(o).await
}

#[tokio::test]
async fn s3_backend_against_a_real_server() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: this test binary has this one test, and sets the variables before any thread of
    // its own reads the environment.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "cairn-test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "cairn-test-secret");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    let moto = start_moto()?;
    create_bucket(moto.port, "conformance")?;

    // The same suite as the local backend, with and without a key prefix.
    conformance::run_all(&store(moto.port, "conformance", "").await?).await;
    conformance::run_all(&store(moto.port, "conformance", "nested/prefix").await?).await;

    // Pagination: more objects than one ListObjectsV2 page (1000).
    let s = store(moto.port, "conformance", "many").await?;
    for i in 0..1100 {
        s.put(
            &Key::new(format!("p/{i:05}"))?,
            bytes::Bytes::from_static(b"x"),
            PutMode::Create,
        )
        .await?;
    }
    assert_eq!(s.list(&Key::new("p")?).await?.len(), 1100);

    // Multipart: an object over the threshold round-trips, and ranged reads cross parts.
    let big: Vec<u8> = (0..(cairn_repo::storage::s3::MULTIPART_THRESHOLD + 5_000_000))
        .map(|i| (i % 251) as u8)
        .collect();
    let k = Key::new("big/object")?;
    s.put(&k, bytes::Bytes::from(big.clone()), PutMode::Create)
        .await?;
    assert_eq!(s.head(&k).await?.size, big.len() as u64);
    let r = 16 * 1024 * 1024 - 10..16 * 1024 * 1024 + 10;
    assert_eq!(
        s.get(&k, Some(r.start as u64..r.end as u64))
            .await?
            .as_ref(),
        &big[r]
    );

    let policy = RetryPolicy {
        first_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        budget: Duration::from_secs(20),
        ..RetryPolicy::default()
    };

    // A streamed object of 100 MiB goes up as multipart parts cut as they are needed: never
    // more than PART_CONCURRENCY parts held at once, whatever the object's size.
    let streamed = store(moto.port, "conformance", "streamed").await?;
    let len: u64 = 100 * 1024 * 1024 + 77;
    let produced: Vec<u8> = (0..len).map(|i| (i * 31 % 253) as u8).collect();
    let body = {
        let produced = produced.clone();
        cairn_repo::storage::pieces_from_writer(&Key::new("s/obj")?, move |w| {
            for c in produced.chunks(3 * 1024 * 1024 + 1) {
                w.write_all(c)?;
            }
            Ok(())
        })
    };
    let k = Key::new("s/obj")?;
    streamed.put_stream(&k, body, PutMode::Create).await?;
    assert!(streamed.get(&k, None).await?.as_ref() == &produced[..]);
    let bound = (PART_CONCURRENCY * PART_SIZE) as u64;
    let peak = streamed.peak_part_bytes();
    assert!(
        peak > 0 && peak <= bound,
        "parts held at once: {peak} bytes, bound {bound}"
    );
    assert!(
        streamed
            .request_summary()
            .is_some_and(|s| s.contains(" 7 part uploads")),
        "{:?}",
        streamed.request_summary()
    );

    // Faults in the middle of a multipart upload, injected by a proxy on the requests
    // themselves: the start is throttled, part 3 fails twice, and the completion's answer is
    // lost after the store acted on it (the retry finds the upload gone and confirms the
    // object by its size). Each request is retried on its own and the object is whole.
    let proxy = Proxy::start(moto.port)?;
    proxy.inject_on(&["?uploads"], &[Fault::SlowDown]);
    proxy.inject_on(&["partNumber=3&"], &[Fault::Internal, Fault::SlowDown]);
    proxy.inject_on(&["POST ", "uploadId="], &[Fault::LoseResponse]);
    let through = store(proxy.port, "conformance", "parts")
        .await?
        .with_retry(policy.fresh());
    let k = Key::new("retried/obj")?;
    let body = {
        let produced = produced.clone();
        cairn_repo::storage::pieces_from_writer(&k, move |w| w.write_all(&produced))
    };
    through.put_stream(&k, body, PutMode::Create).await?;
    assert_eq!(proxy.injected(), 4, "every injected fault was met");
    // Two starts, seven parts plus two retries of part 3, two completions.
    let summary = through.request_summary().unwrap_or_default();
    assert!(
        summary.contains("4 PUT, 9 part uploads"),
        "each failed request, and only it, was sent again: {summary}"
    );
    assert!(through.get(&k, None).await?.as_ref() == &produced[..]);

    // Transient failures (as a throttling store returns them) are retried and succeed.
    let flaky = FailFirst::new(Arc::new(store(moto.port, "conformance", "flaky").await?), 5);
    conformance::run_all(&Retrying::new(flaky, policy.fresh())).await;

    // A manifest and an index segment over SEAL_KEEP, streamed up as multipart uploads by a
    // repository on S3, behind the retry wrapper as the binary uses it.
    let repo_store = Arc::new(Retrying::new(
        store(moto.port, "conformance", "big").await?,
        policy.fresh(),
    ));
    support::big_objects::big_manifest_and_segment_round_trip(repo_store.clone()).await?;
    let summary = repo_store.request_summary().unwrap_or_default();
    assert!(
        !summary.contains(" 0 part uploads"),
        "the big objects went up in parts: {summary}"
    );

    // A multipart upload cut off by the process going away (its future dropped, as when
    // cairn is killed) is a leftover, until something aborts it.
    let s = store(moto.port, "conformance", "killed").await?;
    let first = futures_util::stream::iter([Ok(bytes::Bytes::from(vec![7u8; PART_SIZE * 5]))]);
    let body = Box::pin(futures_util::StreamExt::chain(
        first,
        futures_util::stream::pending(),
    ));
    let k = Key::new("w/obj")?;
    let cut = tokio::time::timeout(
        Duration::from_secs(3),
        s.put_stream(&k, body, PutMode::Create),
    );
    assert!(
        cut.await.is_err(),
        "the put cannot finish: its body never ends"
    );
    let left = s.leftovers(&Key::new("w")?).await?;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].key, k);
    assert!(s.list(&Key::new("w")?).await?.is_empty());

    // s3s-fs: signature checks, objects on disk, its own XML and multipart code.
    let root = tempfile::tempdir()?;
    std::fs::create_dir_all(root.path().join("conformance"))?;
    let fs_server = start_s3s_fs(root.path(), "cairn-test", "cairn-test-secret")?;
    conformance::run_all(&store(fs_server.port, "conformance", "").await?).await;
    conformance::run_all(&store(fs_server.port, "conformance", "deep/prefix").await?).await;

    // A missing bucket is a permanent error that says what to fix.
    let err = store(moto.port, "no-such-bucket", "")
        .await?
        .get(&Key::new("x")?, None)
        .await
        .err();
    assert!(
        matches!(&err, Some(StorageError::Permanent { message, .. }) if message.contains("does not exist")),
        "{err:?}"
    );
    Ok(())
}
