//! Retries for every backend: transient failures (timeouts, throttling, 5xx, dropped
//! connections) are retried with capped exponential backoff and full jitter inside a total
//! time budget; permanent ones (not found, access denied, bad request) fail at once.
//! `Retrying` wraps any `Storage`; `FailFirst` is a backend that fails its first N calls, to
//! test the retrying.

use super::{Key, Leftover, ObjectMeta, Pieces, PutMode, STREAM_GATHER, Storage, StorageError};
use async_trait::async_trait;
use bytes::Bytes;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// No retry starts after this much time has passed since the first attempt.
    pub budget: Duration,
    /// Shared by every request of one job: once one request has given up, the others stop at
    /// once instead of each spending its own budget in turn (a backup to an S3 endpoint that
    /// vanished took 89 s to fail at `--io-timeout 15`, one object after another).
    pub give_up: Arc<GiveUp>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            budget: Duration::from_secs(120),
            give_up: Arc::default(),
        }
    }
}

impl RetryPolicy {
    /// The same timings with a give-up signal of its own (for an unrelated job).
    pub fn fresh(&self) -> RetryPolicy {
        RetryPolicy {
            give_up: Arc::default(),
            ..self.clone()
        }
    }
}

/// "A request gave up": set once, seen by every retry loop that shares it.
#[derive(Debug, Default)]
pub struct GiveUp {
    why: std::sync::OnceLock<String>,
    notify: tokio::sync::Notify,
}

impl GiveUp {
    fn set(&self, why: String) {
        let _ = self.why.set(why);
        self.notify.notify_waiters();
    }

    /// Why the first request gave up, once one has.
    pub fn reason(&self) -> Option<&str> {
        self.why.get().map(String::as_str)
    }

    /// Resolves once a request has given up.
    async fn wait(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.why.get().is_some() {
            return;
        }
        notified.await;
    }

    fn stopped(&self) -> StorageError {
        StorageError::Transient {
            key: String::new(),
            message: format!(
                "stopped because another request to the repository gave up: {}",
                self.reason().unwrap_or("unknown")
            ),
        }
    }
}

/// Run `op` until it succeeds, fails permanently, or the budget is spent.
pub async fn retry<T, F, Fut>(policy: &RetryPolicy, mut op: F) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    let start = Instant::now();
    let mut delay = policy.first_delay;
    let mut attempt = 1u32;
    let give_up = &policy.give_up;
    loop {
        if give_up.reason().is_some() {
            return Err(give_up.stopped());
        }
        let outcome = tokio::select! {
            r = op() => r,
            _ = give_up.wait() => return Err(give_up.stopped()),
        };
        match outcome {
            Err(e) if e.is_transient() && start.elapsed() + delay < policy.budget => {
                let sleep = delay.mul_f64(rand::random::<f64>());
                tracing::debug!("attempt {attempt} failed ({e}); retrying in {sleep:?}");
                tokio::select! {
                    _ = tokio::time::sleep(sleep) => {}
                    _ = give_up.wait() => return Err(give_up.stopped()),
                }
                delay = (delay * 2).min(policy.max_delay);
                attempt += 1;
            }
            Err(StorageError::Transient { key, message }) => {
                let message = format!(
                    "{message} (gave up after {attempt} attempts in {:.0?})",
                    start.elapsed()
                );
                tracing::debug!("request for {key} gave up: {message}");
                give_up.set(format!("{key}: {message}"));
                return Err(StorageError::Transient { key, message });
            }
            other => return other,
        }
    }
}

/// Any backend, with every call retried under `policy`.
#[derive(Debug)]
pub struct Retrying<S> {
    inner: S,
    policy: RetryPolicy,
}

impl<S: Storage> Retrying<S> {
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        Retrying { inner, policy }
    }
}

#[async_trait]
impl<S: Storage> Storage for Retrying<S> {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<(), StorageError> {
        let mut attempt = 0;
        retry(&self.policy, || {
            attempt += 1;
            let data = data.clone();
            let first = attempt == 1;
            async move {
                match self.inner.put(key, data.clone(), mode).await {
                    // A create-only put retried after a lost response may find its own
                    // object: if the bytes are ours, it succeeded.
                    Err(StorageError::AlreadyExists { .. })
                        if !first && mode == PutMode::Create =>
                    {
                        match self.inner.get(key, None).await {
                            Ok(existing) if existing == data => Ok(()),
                            _ => Err(StorageError::AlreadyExists {
                                key: key.to_string(),
                            }),
                        }
                    }
                    other => other,
                }
            }
        })
        .await
    }

    /// Objects that turn out small are gathered and put (so retried) whole; larger ones go to
    /// the backend's streaming put, which retries each part it holds.
    async fn put_stream(
        &self,
        key: &Key,
        mut body: Pieces,
        mode: PutMode,
    ) -> Result<(), StorageError> {
        use futures_util::StreamExt;
        let mut head = Vec::new();
        let mut gathered = 0;
        while gathered <= STREAM_GATHER {
            match body.next().await {
                Some(piece) => {
                    let piece = piece?;
                    gathered += piece.len();
                    head.push(piece);
                }
                None => return self.put(key, Bytes::from(head.concat()), mode).await,
            }
        }
        let head = futures_util::stream::iter(head.into_iter().map(Ok));
        self.inner
            .put_stream(key, Box::pin(head.chain(body)), mode)
            .await
    }

    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<Bytes, StorageError> {
        retry(&self.policy, || self.inner.get(key, range.clone())).await
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta, StorageError> {
        retry(&self.policy, || self.inner.head(key)).await
    }

    async fn list(&self, prefix: &Key) -> Result<Vec<ObjectMeta>, StorageError> {
        retry(&self.policy, || self.inner.list(prefix)).await
    }

    async fn any(&self, prefix: &Key) -> Result<bool, StorageError> {
        retry(&self.policy, || self.inner.any(prefix)).await
    }

    async fn leftovers(&self, prefix: &Key) -> Result<Vec<Leftover>, StorageError> {
        retry(&self.policy, || self.inner.leftovers(prefix)).await
    }

    async fn delete(&self, key: &Key) -> Result<(), StorageError> {
        retry(&self.policy, || self.inner.delete(key)).await
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<(), StorageError> {
        retry(&self.policy, || self.inner.delete_many(keys)).await
    }

    fn request_summary(&self) -> Option<String> {
        self.inner.request_summary()
    }
}

/// A backend whose first `n` calls fail with a transient error, for testing retries.
#[derive(Debug)]
pub struct FailFirst {
    inner: Arc<dyn Storage>,
    remaining: AtomicU64,
}

impl FailFirst {
    pub fn new(inner: Arc<dyn Storage>, n: u64) -> Self {
        FailFirst {
            inner,
            remaining: AtomicU64::new(n),
        }
    }

    fn fail(&self, key: &Key) -> Result<(), StorageError> {
        let took = self
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(1));
        match took {
            Ok(_) => Err(StorageError::Transient {
                key: key.to_string(),
                message: "injected failure (503 SlowDown)".into(),
            }),
            Err(_) => Ok(()),
        }
    }
}

#[async_trait]
impl Storage for FailFirst {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<(), StorageError> {
        self.fail(key)?;
        self.inner.put(key, data, mode).await
    }
    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<Bytes, StorageError> {
        self.fail(key)?;
        self.inner.get(key, range).await
    }
    async fn head(&self, key: &Key) -> Result<ObjectMeta, StorageError> {
        self.fail(key)?;
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &Key) -> Result<Vec<ObjectMeta>, StorageError> {
        self.fail(prefix)?;
        self.inner.list(prefix).await
    }
    async fn any(&self, prefix: &Key) -> Result<bool, StorageError> {
        self.fail(prefix)?;
        self.inner.any(prefix).await
    }
    async fn leftovers(&self, prefix: &Key) -> Result<Vec<Leftover>, StorageError> {
        self.fail(prefix)?;
        self.inner.leftovers(prefix).await
    }
    async fn delete(&self, key: &Key) -> Result<(), StorageError> {
        self.fail(key)?;
        self.inner.delete(key).await
    }
    async fn delete_many(&self, keys: &[Key]) -> Result<(), StorageError> {
        if let Some(k) = keys.first() {
            self.fail(k)?;
        }
        self.inner.delete_many(keys).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::local::LocalStorage;

    fn fast() -> RetryPolicy {
        RetryPolicy {
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            budget: Duration::from_secs(5),
            ..RetryPolicy::default()
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_and_the_backend_still_conforms()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let flaky = FailFirst::new(Arc::new(LocalStorage::new(dir.path())?), 7);
        let store = Retrying::new(flaky, fast());
        crate::storage::conformance::run_all(&store).await;
        Ok(())
    }

    #[tokio::test]
    async fn retries_stop_at_the_budget_and_say_so() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let dead = FailFirst::new(Arc::new(LocalStorage::new(dir.path())?), u64::MAX);
        let policy = RetryPolicy {
            budget: Duration::from_millis(50),
            ..fast()
        };
        let started = Instant::now();
        let err = Retrying::new(dead, policy)
            .head(&Key::new("x")?)
            .await
            .err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(
            matches!(&err, Some(StorageError::Transient { message, .. }) if message.contains("gave up")),
            "{err:?}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Retrying::new(
            LocalStorage::new(dir.path())?,
            RetryPolicy {
                budget: Duration::from_secs(60),
                ..fast()
            },
        );
        let started = Instant::now();
        assert!(matches!(
            store.get(&Key::new("missing")?, None).await,
            Err(StorageError::NotFound { .. })
        ));
        assert!(started.elapsed() < Duration::from_secs(1));
        Ok(())
    }
}
