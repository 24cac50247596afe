//! The S3 backend (aws-sdk-s3), for AWS and S3-compatible stores (MinIO, Ceph, SeaweedFS...).
//! Credentials come from the standard AWS chain (environment, profile, web identity, instance
//! role). Every request has connect and read timeouts; the SDK's own retries are off and
//! `Retrying` (one policy for every backend) retries what is transient. Objects over
//! `MULTIPART_THRESHOLD` go up in parts; a failed multipart upload is aborted. Create-only puts
//! check with HEAD and send `If-None-Match: *`, so stores that honour conditional writes close
//! the race and stores that ignore the header still never see a sequential overwrite.

use super::{Key, ObjectMeta, PutMode, Storage, StorageError};
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use bytes::Bytes;
use std::ops::Range;
use std::time::Duration;

pub const MULTIPART_THRESHOLD: usize = 64 * 1024 * 1024;
pub const PART_SIZE: usize = 16 * 1024 * 1024;

#[derive(Clone, Debug, Default)]
pub struct S3Options {
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/` (may be empty).
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    /// `aws:kms` or `AES256`.
    pub sse: Option<String>,
    pub kms_key_id: Option<String>,
}

impl S3Options {
    /// Parse `s3://bucket[/prefix]`.
    pub fn from_url(url: &str) -> Result<S3Options, StorageError> {
        let bad = |why: &str| StorageError::Permanent {
            key: url.to_string(),
            message: format!("{why}; use s3://bucket/prefix"),
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket"));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if !prefix.is_empty() {
            Key::new(prefix.clone())
                .map_err(|_| bad("the prefix has characters cairn does not use in keys"))?;
        }
        Ok(S3Options {
            bucket: bucket.to_string(),
            prefix,
            ..Default::default()
        })
    }
}

#[derive(Debug, Clone)]
pub struct S3Storage {
    client: Client,
    opts: S3Options,
}

impl S3Storage {
    pub async fn new(opts: S3Options) -> Result<S3Storage, StorageError> {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .operation_attempt_timeout(Duration::from_secs(300))
            .build();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(timeouts)
            .retry_config(aws_config::retry::RetryConfig::disabled());
        if let Some(r) = &opts.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(e) = &opts.endpoint {
            loader = loader.endpoint_url(e);
        }
        let sdk = loader.load().await;
        let region_missing = sdk.region().is_none();
        let mut conf = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(opts.path_style);
        if region_missing {
            // S3-compatible stores rarely care; AWS itself redirects, and we report that.
            conf = conf.region(aws_config::Region::new("us-east-1"));
        }
        Ok(S3Storage {
            client: Client::from_conf(conf.build()),
            opts,
        })
    }

    fn full(&self, key: &str) -> String {
        if self.opts.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.opts.prefix)
        }
    }

    async fn put_multipart(&self, key: &Key, full: &str, data: Bytes) -> Result<(), StorageError> {
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.opts.bucket)
            .key(full);
        if let Some(sse) = &self.opts.sse {
            create = create.server_side_encryption(ServerSideEncryption::from(sse.as_str()));
            if let Some(k) = &self.opts.kms_key_id {
                create = create.ssekms_key_id(k);
            }
        }
        let upload = create.send().await.map_err(|e| classify(key, self, e))?;
        let id = upload.upload_id().unwrap_or_default().to_string();
        let result = async {
            let mut parts = Vec::new();
            for (i, chunk) in data.chunks(PART_SIZE).enumerate() {
                let n = i as i32 + 1;
                let out = self
                    .client
                    .upload_part()
                    .bucket(&self.opts.bucket)
                    .key(full)
                    .upload_id(&id)
                    .part_number(n)
                    .body(ByteStream::from(data.slice_ref(chunk)))
                    .send()
                    .await
                    .map_err(|e| classify(key, self, e))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(n)
                        .set_e_tag(out.e_tag().map(String::from))
                        .build(),
                );
            }
            let done = self
                .client
                .complete_multipart_upload()
                .bucket(&self.opts.bucket)
                .key(full)
                .upload_id(&id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await;
            match done {
                Ok(_) => Ok(()),
                // Some S3-compatible servers (moto) answer a successful completion with an XML
                // root the SDK does not accept. A 200 without an error code is success in S3;
                // confirm the object is there, whole, before believing it.
                Err(SdkError::ServiceError(se))
                    if se.raw().status().as_u16() == 200 && se.err().code().is_none() =>
                {
                    match self.head(key).await {
                        Ok(meta) if meta.size == data.len() as u64 => Ok(()),
                        _ => Err(StorageError::Transient {
                            key: key.to_string(),
                            message: "multipart upload completion could not be confirmed".into(),
                        }),
                    }
                }
                Err(e) => Err(classify(key, self, e)),
            }
        }
        .await;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.opts.bucket)
                .key(full)
                .upload_id(&id)
                .send()
                .await;
        }
        result
    }
}

/// Map an SDK error to a storage error that knows whether it is worth retrying and, when
/// permanent, says what to fix.
fn classify<E: ProvideErrorMetadata + std::fmt::Debug>(
    key: &Key,
    s3: &S3Storage,
    e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StorageError {
    let key_s = key.to_string();
    let transient = |message: String| StorageError::Transient {
        key: key_s.clone(),
        message,
    };
    let permanent = |message: String| StorageError::Permanent {
        key: key_s.clone(),
        message,
    };
    match &e {
        SdkError::TimeoutError(_) => transient("request timed out".into()),
        SdkError::DispatchFailure(d) => transient(format!("cannot reach the S3 endpoint: {d:?}")),
        SdkError::ResponseError(r) => transient(format!("bad or cut response: {r:?}")),
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("");
            let msg = se.err().message().unwrap_or("");
            match (status, code) {
                (404, "NoSuchBucket") => permanent(format!(
                    "bucket '{}' does not exist at this endpoint; create it or fix --repo",
                    s3.opts.bucket
                )),
                (404, _) => StorageError::NotFound { key: key_s },
                (412, _) => StorageError::AlreadyExists { key: key_s },
                (403, _) | (_, "InvalidAccessKeyId") | (_, "SignatureDoesNotMatch") => {
                    permanent(format!(
                        "access denied ({code}: {msg}); check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and the bucket policy"
                    ))
                }
                (301, _) | (_, "PermanentRedirect") | (_, "AuthorizationHeaderMalformed") => {
                    permanent(format!(
                        "the bucket is in another region ({code}); set --s3-region"
                    ))
                }
                (429, _) | (500..=599, _) => transient(format!("{status} {code}: {msg}")),
                _ => permanent(format!("{status} {code}: {msg}")),
            }
        }
        _ => permanent(format!("{e:?}")),
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
        let full = self.full(key.as_str());
        if mode == PutMode::Create {
            match self.head(key).await {
                Ok(_) => {
                    return Err(StorageError::AlreadyExists {
                        key: key.to_string(),
                    });
                }
                Err(StorageError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if data.len() > MULTIPART_THRESHOLD {
            return self.put_multipart(key, &full, data).await;
        }
        let mut req = self
            .client
            .put_object()
            .bucket(&self.opts.bucket)
            .key(&full)
            .body(ByteStream::from(data));
        if mode == PutMode::Create {
            req = req.if_none_match("*");
        }
        if let Some(sse) = &self.opts.sse {
            req = req.server_side_encryption(ServerSideEncryption::from(sse.as_str()));
            if let Some(k) = &self.opts.kms_key_id {
                req = req.ssekms_key_id(k);
            }
        }
        req.send().await.map_err(|e| classify(key, self, e))?;
        Ok(())
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
        let out = req.send().await.map_err(|e| match classify(key, self, e) {
            StorageError::Permanent { key, message } if message.starts_with("416") => {
                StorageError::Permanent {
                    key,
                    message: "range is outside the object".into(),
                }
            }
            other => other,
        })?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| StorageError::Transient {
                key: key.to_string(),
                message: format!("reading the body failed: {e}"),
            })?
            .into_bytes();
        if let Some(r) = range
            && body.len() as u64 != r.end - r.start
        {
            return Err(StorageError::Permanent {
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
        let out = self
            .client
            .head_object()
            .bucket(&self.opts.bucket)
            .key(self.full(key.as_str()))
            .send()
            .await
            .map_err(|e| classify(key, self, e))?;
        Ok(ObjectMeta {
            key: key.clone(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
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
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.opts.bucket)
                .prefix(&full_prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| classify(prefix, self, e))?;
            for o in page.contents() {
                let Some(k) = o.key() else { continue };
                if let Ok(key) = Key::new(k[strip.min(k.len())..].to_string()) {
                    out.push(ObjectMeta {
                        key,
                        size: o.size().unwrap_or(0).max(0) as u64,
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

    async fn delete(&self, key: &Key) -> Result<(), StorageError> {
        match self
            .client
            .delete_object()
            .bucket(&self.opts.bucket)
            .key(self.full(key.as_str()))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match classify(key, self, e) {
                StorageError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() -> Result<(), StorageError> {
        let o = S3Options::from_url("s3://bucket/some/prefix/")?;
        assert_eq!(
            (o.bucket.as_str(), o.prefix.as_str()),
            ("bucket", "some/prefix")
        );
        let o = S3Options::from_url("s3://bucket")?;
        assert_eq!(o.prefix, "");
        assert!(S3Options::from_url("s3:///x").is_err());
        assert!(S3Options::from_url("s3://b/../x").is_err());
        assert!(S3Options::from_url("/local").is_err());
        Ok(())
    }
}
