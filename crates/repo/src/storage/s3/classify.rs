//! Turning SDK errors into storage errors that know whether a retry can help and, when it
//! cannot, say what to fix. Throttling (503 SlowDown, 429), other 5xx, timeouts and cut
//! connections are transient; a certificate the client does not trust, wrong credentials, a
//! missing bucket or a wrong region are permanent.

use crate::storage::{Key, StorageError};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use std::error::Error as StdError;

/// The first error of type `T` in `e`'s chain of causes. `io::Error` hides its payload from
/// `source()`, so it is opened explicitly.
fn find_in_chain<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && let Some(found) = find_in_chain::<T>(inner)
        {
            return Some(found);
        }
        cur = err.source();
    }
    None
}

/// A TLS failure somewhere in `e`'s chain of causes.
fn tls_failure(e: &(dyn StdError + 'static)) -> Option<String> {
    find_in_chain::<rustls::Error>(e).map(|t| t.to_string())
}

/// `e` with its causes, `: `-separated.
fn with_causes(e: &(dyn StdError + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

const CREDENTIALS_HINT: &str = "give S3 credentials by AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, by AWS_PROFILE and the shared credentials file, by AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, or by an instance or container role";

/// A failure of the credential chain: none found or misconfigured is permanent (no retry will
/// find them); a provider that timed out or failed (STS, instance metadata) may recover.
fn credentials_failure(e: &(dyn StdError + 'static)) -> Option<(bool, String)> {
    use aws_credential_types::provider::error::CredentialsError;
    let c = find_in_chain::<CredentialsError>(e)?;
    let detail = with_causes(c);
    Some(match c {
        CredentialsError::CredentialsNotLoaded(_) | CredentialsError::InvalidConfiguration(_) => (
            false,
            format!("no usable S3 credentials ({detail}); {CREDENTIALS_HINT}"),
        ),
        _ => (
            true,
            format!("loading S3 credentials failed ({detail}); {CREDENTIALS_HINT}"),
        ),
    })
}

fn tls_hint(why: &str) -> String {
    format!(
        "TLS failure talking to the S3 endpoint ({why}); if the endpoint's certificate is signed by a private CA, give its PEM file with --s3-ca-file, and check that --s3-endpoint names the host in the certificate"
    )
}

/// Map an SDK error about `key` in `bucket` to a storage error.
pub(super) fn classify<E: ProvideErrorMetadata + StdError + 'static>(
    key: &Key,
    bucket: &str,
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
    if let Some(why) = tls_failure(&e) {
        return permanent(tls_hint(&why));
    }
    if let Some((retry, message)) = credentials_failure(&e) {
        return if retry {
            transient(message)
        } else {
            permanent(message)
        };
    }
    match &e {
        SdkError::TimeoutError(_) => transient("request timed out".into()),
        SdkError::DispatchFailure(d) => {
            let cause = d
                .as_connector_error()
                .map(|c| with_causes(c))
                .unwrap_or_else(|| format!("{d:?}"));
            transient(format!(
                "cannot reach the S3 endpoint ({cause}); check --s3-endpoint and the network, or raise --io-timeout"
            ))
        }
        SdkError::ResponseError(_) => transient(format!(
            "the response was cut or unreadable: {}",
            e.source().map(|s| s.to_string()).unwrap_or_default()
        )),
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("");
            let msg = se.err().message().unwrap_or("");
            match (status, code) {
                (404, "NoSuchBucket") => permanent(format!(
                    "bucket '{bucket}' does not exist at this endpoint; create it or fix --repo"
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
                // A store that does not implement a header we sent (If-None-Match): not worth
                // retrying as is; the caller decides whether to go on without it.
                (501, _) => StorageError::Unsupported {
                    key: key.to_string(),
                    message: format!("501 {code}: {msg}"),
                },
                (429, _) | (500..=599, _) => transient(format!("{status} {code}: {msg}")),
                (408, _) | (_, "RequestTimeout") => transient(format!("{status} {code}: {msg}")),
                _ => permanent(format!("{status} {code}: {msg}")),
            }
        }
        SdkError::ConstructionFailure(_) => permanent(format!(
            "the request could not be built: {}",
            e.source().map(|s| s.to_string()).unwrap_or_default()
        )),
        _ => permanent(format!("{e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_errors_are_found_inside_io_errors() {
        let rustls_err = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::other(rustls_err);
        let found = tls_failure(&io);
        assert!(
            found
                .as_deref()
                .is_some_and(|s| s.contains("UnknownIssuer")),
            "{found:?}"
        );
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(tls_failure(&plain), None);
    }
}
