//! S3 options and the SDK client built from them: region and endpoint, the standard AWS
//! credential chain, timeouts on every request, and TLS roots (the platform's, plus a private
//! CA from `--s3-ca-file`). The SDK's own retries are off: `retry::Retrying` is the one retry
//! policy for every backend.

use crate::storage::{Key, StorageError};
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls;
use std::path::PathBuf;
use std::time::Duration;

/// The default `--io-timeout`: how long one request may wait for the server.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
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
    /// PEM file of extra trusted roots (a private CA); the platform's roots stay trusted.
    pub ca_file: Option<PathBuf>,
    /// Connect and read timeout of one request. An attempt as a whole (a 32 MiB upload on a
    /// slow link) may take five times this.
    pub io_timeout: Duration,
    /// Credentials given as options (pgBackRest's `repo1-s3-key` and `repo1-s3-key-secret`);
    /// without them, the AWS chain (environment, profile, web identity, instance role).
    pub credentials: Option<S3Credentials>,
}

/// An access key given as options.
#[derive(Clone)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            bucket: String::new(),
            prefix: String::new(),
            endpoint: None,
            region: None,
            path_style: false,
            sse: None,
            kms_key_id: None,
            ca_file: None,
            io_timeout: DEFAULT_IO_TIMEOUT,
            credentials: None,
        }
    }
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

/// Read and check `--s3-ca-file` before handing it to the SDK (which panics on a bad PEM).
fn trust_store(ca_file: &std::path::Path) -> Result<tls::TrustStore, StorageError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |message: String| StorageError::Permanent {
        key: ca_file.display().to_string(),
        message,
    };
    let pem = std::fs::read(ca_file).map_err(|e| bad(format!("cannot read --s3-ca-file: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("--s3-ca-file is not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "--s3-ca-file holds no certificate; give the PEM file of the CA that signed the endpoint's certificate".into(),
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| {
            bad(format!(
                "--s3-ca-file has a certificate that cannot be a trust root: {e}"
            ))
        })?;
    }
    Ok(tls::TrustStore::default().with_pem_certificate(pem))
}

/// Credentials half given in the environment are a mistake to report, not a reason to fall
/// through to the next source of the chain: with an empty `AWS_ACCESS_KEY_ID` the chain went on
/// to the instance metadata service, which `info` then retried for two minutes on a machine
/// that has none.
fn check_env_credentials() -> Result<(), StorageError> {
    let var = |k: &str| std::env::var_os(k).map(|v| v.to_string_lossy().trim().to_string());
    let (id, secret) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"));
    let bad = |message: String| {
        Err(StorageError::Permanent {
            key: "AWS credentials".into(),
            message,
        })
    };
    match (id.as_deref(), secret.as_deref()) {
        (Some(""), _) => bad("AWS_ACCESS_KEY_ID is set but empty: give the access key, or unset it to use a profile, web identity or an instance role".into()),
        (_, Some("")) => bad("AWS_SECRET_ACCESS_KEY is set but empty: give the secret key, or unset it (and AWS_ACCESS_KEY_ID) to use another credential source".into()),
        (Some(_), None) => bad("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not: give both, or neither".into()),
        (None, Some(_)) => bad("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not: give both, or neither".into()),
        _ => Ok(()),
    }
}

pub(super) async fn build(opts: &S3Options) -> Result<Client, StorageError> {
    if opts.credentials.is_none() {
        check_env_credentials()?;
    }
    let t = opts.io_timeout.max(Duration::from_secs(1));
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(t)
        .read_timeout(t)
        .operation_attempt_timeout(t * 5)
        .build();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts)
        .retry_config(aws_config::retry::RetryConfig::disabled());
    if let Some(ca) = &opts.ca_file {
        let context = tls::TlsContext::builder()
            .with_trust_store(trust_store(ca)?)
            .build()
            .map_err(|e| StorageError::Permanent {
                key: ca.display().to_string(),
                message: format!("cannot use --s3-ca-file: {e}"),
            })?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .tls_context(context)
            .build_https();
        loader = loader.http_client(http);
    }
    if let Some(c) = &opts.credentials {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.clone(),
            c.session_token.clone(),
            None,
            "repo1-s3-key",
        ));
    }
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
    Ok(Client::from_conf(conf.build()))
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

    #[test]
    fn a_bad_ca_file_is_refused_with_its_name() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let missing = dir.path().join("missing.pem");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n")?;
        let garbled = dir.path().join("garbled.pem");
        std::fs::write(
            &garbled,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )?;
        for (path, says) in [
            (&missing, "cannot read"),
            (&junk, "holds no certificate"),
            (&garbled, "cannot be a trust root"),
        ] {
            match trust_store(path) {
                Err(StorageError::Permanent { key, message }) => {
                    assert_eq!(key, path.display().to_string());
                    assert!(message.contains(says), "{message}");
                }
                other => panic!(
                    "{}: expected a permanent error, got {other:?}",
                    path.display()
                ),
            }
        }
        Ok(())
    }
}
