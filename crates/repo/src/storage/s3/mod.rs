//! The S3 backend (aws-sdk-s3), for AWS and S3-compatible stores (MinIO, Ceph, SeaweedFS...).
//! `client` builds the SDK client (credentials from the standard AWS chain, timeouts, TLS
//! roots), `classify` maps its errors. The SDK's own retries are off and `Retrying` (one
//! policy for every backend) retries what is transient. Objects over `MULTIPART_THRESHOLD` go
//! up in parts, a few at a time; a failed multipart upload is aborted. Create-only puts check
//! with HEAD and send `If-None-Match: *`, so stores that honour conditional writes close the
//! race, stores that ignore the header still never see a sequential overwrite, and stores that
//! refuse it (501) are asked again without it. Every request is counted, for the log.

mod classify;
mod client;
mod leftovers;

pub use client::{DEFAULT_IO_TIMEOUT, S3Credentials, S3Options};

use super::retry::{RetryPolicy, retry};
use super::{Key, Leftover, ObjectMeta, Pieces, PutMode, Storage, StorageError};
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier, ServerSideEncryption,
};
use bytes::Bytes;
use classify::classify;
use futures_util::StreamExt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub const MULTIPART_THRESHOLD: usize = 64 * 1024 * 1024;
pub const PART_SIZE: usize = 16 * 1024 * 1024;
/// Parts of one object uploaded at once.
pub const PART_CONCURRENCY: usize = 4;
/// S3's DeleteObjects limit.
const DELETE_BATCH: usize = 1000;

/// Requests sent, by kind (attempts, so a retried request counts each time).
#[derive(Debug, Default)]
struct Counters {
    put: AtomicU64,
    part: AtomicU64,
    get: AtomicU64,
    head: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[derive(Debug, Clone)]
pub struct S3Storage {
    client: Client,
    opts: S3Options,
    counters: Arc<Counters>,
    /// Set once the store has answered 501 to `If-None-Match`.
    no_conditional_put: Arc<AtomicBool>,
    /// Multipart requests are retried here, part by part: a streamed object cannot be put again
    /// whole by `Retrying`.
    retry: RetryPolicy,
    held: Arc<Gauge>,
}

impl S3Storage {
    pub async fn new(opts: S3Options) -> Result<S3Storage, StorageError> {
        Ok(S3Storage {
            client: client::build(&opts).await?,
            opts,
            counters: Arc::default(),
            no_conditional_put: Arc::default(),
            retry: RetryPolicy::default(),
            held: Arc::default(),
        })
    }

    fn full(&self, key: &str) -> String {
        if self.opts.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.opts.prefix)
        }
    }

    fn err<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        key: &Key,
        e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StorageError {
        classify(key, &self.opts.bucket, e)
    }

    async fn put_single(
        &self,
        key: &Key,
        data: Bytes,
        conditional: bool,
    ) -> Result<(), StorageError> {
        bump(&self.counters.put);
        let mut req = self
            .client
            .put_object()
            .bucket(&self.opts.bucket)
            .key(self.full(key.as_str()))
            .body(ByteStream::from(data));
        if conditional {
            req = req.if_none_match("*");
        }
        if let Some(sse) = &self.opts.sse {
            req = req.server_side_encryption(ServerSideEncryption::from(sse.as_str()));
            if let Some(k) = &self.opts.kms_key_id {
                req = req.ssekms_key_id(k);
            }
        }
        req.send().await.map_err(|e| self.err(key, e))?;
        Ok(())
    }

    async fn upload_part(
        &self,
        key: &Key,
        full: &str,
        upload_id: &str,
        n: i32,
        body: Bytes,
    ) -> Result<CompletedPart, StorageError> {
        bump(&self.counters.part);
        let out = self
            .client
            .upload_part()
            .bucket(&self.opts.bucket)
            .key(full)
            .upload_id(upload_id)
            .part_number(n)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.err(key, e))?;
        Ok(CompletedPart::builder()
            .part_number(n)
            .set_e_tag(out.e_tag().map(String::from))
            .build())
    }

    /// A single PUT; for a create-only put, with `If-None-Match: *` unless the store has
    /// refused that header (501), in which case it is sent again without it.
    async fn put_small(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<(), StorageError> {
        let conditional =
            mode == PutMode::Create && !self.no_conditional_put.load(Ordering::Relaxed);
        match self.put_single(key, data.clone(), conditional).await {
            Err(StorageError::Unsupported { .. }) if conditional => {
                tracing::warn!(
                    "this S3-compatible store does not implement conditional writes (If-None-Match): create-only writes are guarded by a HEAD first, which two writers can race, so the stanza lock cannot keep two hosts apart here; run the commands that write to a stanza (backup, expire, stanza-repair) from one host at a time"
                );
                self.no_conditional_put.store(true, Ordering::Relaxed);
                self.put_single(key, data, false).await
            }
            other => other,
        }
    }

    /// Fail with `AlreadyExists` if `key` exists (create-only puts).
    async fn refuse_existing(&self, key: &Key) -> Result<(), StorageError> {
        match self.head(key).await {
            Ok(_) => Err(StorageError::AlreadyExists {
                key: key.to_string(),
            }),
            Err(StorageError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Upload what `parts` cuts as one multipart object: parts go up `PART_CONCURRENCY` at a
    /// time and the next part is cut only when one finishes, so at most
    /// `(PART_CONCURRENCY + 1) * PART_SIZE` bytes are held whatever the object's size. Each
    /// request is retried on its own; anything that fails for good aborts the upload.
    async fn put_multipart(&self, key: &Key, mut parts: PartCutter) -> Result<(), StorageError> {
        let full = self.full(key.as_str());
        let id = retry(&self.retry, || async {
            let mut create = self
                .client
                .create_multipart_upload()
                .bucket(&self.opts.bucket)
                .key(&full);
            if let Some(sse) = &self.opts.sse {
                create = create.server_side_encryption(ServerSideEncryption::from(sse.as_str()));
                if let Some(k) = &self.opts.kms_key_id {
                    create = create.ssekms_key_id(k);
                }
            }
            bump(&self.counters.put);
            let upload = create.send().await.map_err(|e| self.err(key, e))?;
            upload
                .upload_id()
                .map(String::from)
                .ok_or_else(|| StorageError::Transient {
                    key: key.to_string(),
                    message: "the store started a multipart upload without an upload id".into(),
                })
        })
        .await?;
        let result = async {
            let mut done: Vec<CompletedPart> = Vec::new();
            let mut in_flight = futures_util::stream::FuturesUnordered::new();
            let mut total = 0u64;
            let mut n = 0i32;
            let mut more = true;
            while more || !in_flight.is_empty() {
                if more && in_flight.len() < PART_CONCURRENCY {
                    match parts.next_part().await? {
                        Some(body) => {
                            n += 1;
                            total += body.len() as u64;
                            let held = self.held.add(body.len() as u64);
                            let (number, full, id) = (n, &full, &id);
                            in_flight.push(async move {
                                let r = retry(&self.retry, || {
                                    self.upload_part(key, full, id, number, body.clone())
                                })
                                .await;
                                drop(held);
                                r
                            });
                            continue;
                        }
                        None => more = false,
                    }
                }
                if let Some(part) = in_flight.next().await {
                    done.push(part?);
                }
            }
            done.sort_by_key(|p| p.part_number());
            self.complete_multipart(key, &full, &id, done, total).await
        }
        .await;
        if result.is_err() {
            // Best effort: an upload left behind costs storage until a bucket lifecycle rule
            // (AbortIncompleteMultipartUpload) removes it, but never shows up as an object.
            bump(&self.counters.delete);
            if let Err(e) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.opts.bucket)
                .key(&full)
                .upload_id(&id)
                .send()
                .await
            {
                tracing::warn!("could not abort the multipart upload of {key}: {e}");
            }
        }
        result
    }

    async fn complete_multipart(
        &self,
        key: &Key,
        full: &str,
        id: &str,
        parts: Vec<CompletedPart>,
        total: u64,
    ) -> Result<(), StorageError> {
        // Confirm by size when the answer cannot be believed: a retried completion whose first
        // attempt succeeded finds the upload gone (404), and some S3-compatible servers (moto)
        // answer a successful completion with an XML root the SDK does not accept (a 200
        // without an error code is success in S3).
        let confirm = || async {
            match self.head(key).await {
                Ok(meta) if meta.size == total => Ok(()),
                _ => Err(StorageError::Transient {
                    key: key.to_string(),
                    message: "multipart upload completion could not be confirmed".into(),
                }),
            }
        };
        let mut attempts = 0;
        retry(&self.retry, || {
            attempts += 1;
            let (parts, first) = (parts.clone(), attempts == 1);
            async move {
                bump(&self.counters.put);
                let done = self
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.opts.bucket)
                    .key(full)
                    .upload_id(id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await;
                match done {
                    Ok(_) => Ok(()),
                    Err(SdkError::ServiceError(se))
                        if se.raw().status().as_u16() == 200 && se.err().code().is_none() =>
                    {
                        confirm().await
                    }
                    Err(e) => match self.err(key, e) {
                        StorageError::NotFound { .. } if !first => confirm().await,
                        other => Err(other),
                    },
                }
            }
        })
        .await
    }

    /// The most bytes of multipart parts held at once so far (cut and not yet uploaded).
    pub fn peak_part_bytes(&self) -> u64 {
        self.held.peak()
    }

    /// Retry multipart requests (each part, the start and the completion) under `policy`.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }
}

/// Cuts a stream of pieces into parts of exactly `PART_SIZE` bytes (the last may be shorter),
/// slicing where a piece is large enough and copying only to join small pieces.
struct PartCutter {
    body: Pieces,
    /// A part already cut, handed out first.
    pending: Option<Bytes>,
    carry: Bytes,
    ended: bool,
}

impl PartCutter {
    fn new(body: Pieces) -> Self {
        PartCutter {
            body,
            pending: None,
            carry: Bytes::new(),
            ended: false,
        }
    }

    async fn next_part(&mut self) -> Result<Option<Bytes>, StorageError> {
        if let Some(part) = self.pending.take() {
            return Ok(Some(part));
        }
        let mut part = bytes::BytesMut::new();
        loop {
            if !self.carry.is_empty() {
                let want = PART_SIZE - part.len();
                if part.is_empty() && self.carry.len() >= want {
                    return Ok(Some(self.carry.split_to(want)));
                }
                let take = want.min(self.carry.len());
                if part.capacity() == 0 {
                    part.reserve(PART_SIZE);
                }
                part.extend_from_slice(&self.carry.split_to(take));
                if part.len() == PART_SIZE {
                    return Ok(Some(part.freeze()));
                }
            }
            if self.ended {
                return Ok((!part.is_empty()).then(|| part.freeze()));
            }
            match self.body.next().await {
                Some(piece) => self.carry = piece?,
                None => self.ended = true,
            }
        }
    }
}

/// Bytes held by part buffers, and the most ever held.
#[derive(Debug, Default)]
struct Gauge {
    now: AtomicU64,
    peak: AtomicU64,
}

impl Gauge {
    fn add(&self, n: u64) -> Held<'_> {
        let now = self.now.fetch_add(n, Ordering::Relaxed) + n;
        self.peak.fetch_max(now, Ordering::Relaxed);
        Held { gauge: self, n }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

struct Held<'a> {
    gauge: &'a Gauge,
    n: u64,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.gauge.now.fetch_sub(self.n, Ordering::Relaxed);
    }
}

#[async_trait]
impl Storage for S3Storage {
    fn location(&self) -> String {
        if self.opts.prefix.is_empty() {
            format!("s3://{}", self.opts.bucket)
        } else {
            format!("s3://{}/{}", self.opts.bucket, self.opts.prefix)
        }
    }

    async fn put(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<(), StorageError> {
        if mode == PutMode::Create {
            self.refuse_existing(key).await?;
        }
        if data.len() > MULTIPART_THRESHOLD {
            let whole = futures_util::stream::iter([Ok(data)]);
            return self
                .put_multipart(key, PartCutter::new(Box::pin(whole)))
                .await;
        }
        self.put_small(key, data, mode).await
    }

    /// An object that ends within the first part is one PUT; a longer one is streamed up as
    /// a multipart upload with bounded memory.
    async fn put_stream(&self, key: &Key, body: Pieces, mode: PutMode) -> Result<(), StorageError> {
        if mode == PutMode::Create {
            self.refuse_existing(key).await?;
        }
        let mut parts = PartCutter::new(body);
        let Some(first) = parts.next_part().await? else {
            return self.put_small(key, Bytes::new(), mode).await;
        };
        if parts.ended && parts.carry.is_empty() {
            return self.put_small(key, first, mode).await;
        }
        parts.pending = Some(first);
        self.put_multipart(key, parts).await
    }

    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<Bytes, StorageError> {
        if let Some(r) = &range
            && r.start >= r.end
        {
            return if r.start == r.end {
                Ok(Bytes::new())
            } else {
                Err(StorageError::Permanent {
                    key: key.to_string(),
                    message: "empty range".into(),
                })
            };
        }
        let mut req = self
            .client
            .get_object()
            .bucket(&self.opts.bucket)
            .key(self.full(key.as_str()));
        if let Some(r) = &range {
            req = req.range(format!("bytes={}-{}", r.start, r.end - 1));
        }
        bump(&self.counters.get);
        let out = req.send().await.map_err(|e| match self.err(key, e) {
            StorageError::Permanent { key, message } if message.starts_with("416") => {
                StorageError::OutOfRange {
                    key,
                    message: "range is outside the object".into(),
                }
            }
            other => other,
        })?;
        // Read into one buffer of the announced size: collecting the body's pieces and
        // joining them would hold every pack range twice.
        let announced = out.content_length().unwrap_or(0).clamp(0, 1 << 30) as usize;
        let mut buf = bytes::BytesMut::with_capacity(announced);
        let mut body = out.body;
        while let Some(piece) = body.try_next().await.map_err(|e| StorageError::Transient {
            key: key.to_string(),
            message: format!("reading the body failed: {e}"),
        })? {
            buf.extend_from_slice(&piece);
        }
        let body = buf.freeze();
        if let Some(r) = range
            && body.len() as u64 != r.end - r.start
        {
            return Err(StorageError::OutOfRange {
                key: key.to_string(),
                message: format!(
                    "range {}..{} is outside the object ({} bytes returned)",
                    r.start,
                    r.end,
                    body.len()
                ),
            });
        }
        Ok(body)
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta, StorageError> {
        bump(&self.counters.head);
        let out = self
            .client
            .head_object()
            .bucket(&self.opts.bucket)
            .key(self.full(key.as_str()))
            .send()
            .await
            .map_err(|e| self.err(key, e))?;
        Ok(ObjectMeta {
            key: key.clone(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            modified: out.last_modified().map(|t| t.secs()),
        })
    }

    async fn list(&self, prefix: &Key) -> Result<Vec<ObjectMeta>, StorageError> {
        let mut out = Vec::new();
        let full_prefix = format!("{}/", self.full(prefix.as_str()));
        let strip = if self.opts.prefix.is_empty() {
            0
        } else {
            self.opts.prefix.len() + 1
        };
        let mut token = None;
        loop {
            bump(&self.counters.list);
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.opts.bucket)
                .prefix(&full_prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| self.err(prefix, e))?;
            for o in page.contents() {
                let Some(k) = o.key() else { continue };
                if let Ok(key) = Key::new(k[strip.min(k.len())..].to_string()) {
                    out.push(ObjectMeta {
                        key,
                        size: o.size().unwrap_or(0).max(0) as u64,
                        modified: o.last_modified().map(|t| t.secs()),
                    });
                }
            }
            token = page.next_continuation_token().map(String::from);
            if token.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn any(&self, prefix: &Key) -> Result<bool, StorageError> {
        bump(&self.counters.list);
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.opts.bucket)
            .prefix(format!("{}/", self.full(prefix.as_str())))
            .max_keys(1)
            .send()
            .await
            .map_err(|e| self.err(prefix, e))?;
        Ok(!page.contents().is_empty())
    }

    async fn leftovers(&self, prefix: &Key) -> Result<Vec<Leftover>, StorageError> {
        self.list_uploads(prefix).await
    }

    async fn delete(&self, key: &Key) -> Result<(), StorageError> {
        bump(&self.counters.delete);
        match self
            .client
            .delete_object()
            .bucket(&self.opts.bucket)
            .key(self.full(key.as_str()))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.err(key, e) {
                StorageError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<(), StorageError> {
        for batch in keys.chunks(DELETE_BATCH) {
            let Some(first) = batch.first() else { continue };
            let unbuildable = |e: aws_sdk_s3::error::BuildError| StorageError::Permanent {
                key: first.to_string(),
                message: format!("cannot build a DeleteObjects request: {e}"),
            };
            let objects = batch
                .iter()
                .map(|k| {
                    ObjectIdentifier::builder()
                        .key(self.full(k.as_str()))
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(unbuildable)?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(unbuildable)?;
            bump(&self.counters.delete);
            let out = self
                .client
                .delete_objects()
                .bucket(&self.opts.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.err(first, e))?;
            // Quiet mode lists only failures; a missing key is not one.
            if let Some(e) = out.errors().iter().find(|e| e.code() != Some("NoSuchKey")) {
                let message = format!(
                    "{}: {}",
                    e.code().unwrap_or("error"),
                    e.message().unwrap_or("")
                );
                let key = e.key().unwrap_or(first.as_str()).to_string();
                return Err(match e.code() {
                    Some("SlowDown" | "InternalError" | "ServiceUnavailable") => {
                        StorageError::Transient { key, message }
                    }
                    _ => StorageError::Permanent { key, message },
                });
            }
        }
        Ok(())
    }

    fn request_summary(&self) -> Option<String> {
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Some(format!(
            "S3 requests: {} PUT, {} part uploads, {} GET, {} HEAD, {} LIST, {} DELETE",
            n(&c.put),
            n(&c.part),
            n(&c.get),
            n(&c.head),
            n(&c.list),
            n(&c.delete)
        ))
    }
}
