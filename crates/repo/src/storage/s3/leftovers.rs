//! Multipart uploads that were started and never completed or aborted (the process was
//! killed mid-upload): S3 keeps their parts, and bills them, until someone aborts them.

use super::{S3Storage, bump};
use crate::storage::{Key, Leftover, StorageError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

impl S3Storage {
    /// ListMultipartUploads under `prefix/`, every page. A store that does not implement it
    /// (some S3-compatible servers answer 501) gives an error saying so: no listing is not
    /// the same as no leftovers.
    pub(super) async fn list_uploads(&self, prefix: &Key) -> Result<Vec<Leftover>, StorageError> {
        let full_prefix = format!("{}/", self.full(prefix.as_str()));
        let strip = if self.opts.prefix.is_empty() {
            0
        } else {
            self.opts.prefix.len() + 1
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        let (mut key_marker, mut id_marker) = (None, None);
        let mut out = Vec::new();
        loop {
            bump(&self.counters.list);
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.opts.bucket)
                .prefix(&full_prefix)
                .set_key_marker(key_marker)
                .set_upload_id_marker(id_marker)
                .send()
                .await
                .map_err(|e| self.err(prefix, e))?;
            for u in page.uploads() {
                let Some(k) = u.key() else { continue };
                let Ok(key) = Key::new(k[strip.min(k.len())..].to_string()) else {
                    continue;
                };
                let started = u.initiated().map_or(now, |t| t.secs());
                out.push(Leftover {
                    key,
                    size: None,
                    age: Duration::from_secs(now.saturating_sub(started).max(0) as u64),
                });
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(String::from);
            id_marker = page.next_upload_id_marker().map(String::from);
            if key_marker.is_none() && id_marker.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}
