//! Manifests and index segments larger than `codec::SEAL_KEEP` on local disk: streamed to
//! the store as they are encoded, and read back equal. (`s3_conformance` runs the same over S3.)

mod support {
    pub mod big_objects;
}

use cairn_repo::storage::local::LocalStorage;
use cairn_repo::storage::retry::{RetryPolicy, Retrying};
use std::sync::Arc;

#[tokio::test]
async fn big_manifest_and_segment_on_local_disk() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Retrying::new(LocalStorage::new(dir.path())?, RetryPolicy::default());
    support::big_objects::big_manifest_and_segment_round_trip(Arc::new(store)).await
}
