//! Test doubles for the store, for unit tests of the core (real stores in the e2e tests).

use super::{
    LocalStore, MultipartUpload, ObjectMeta, ObjectStore, StoreError, StoreErrorKind, StoreResult, UploadedPart,
};
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU32};

/// A store that fails every call while `failing` is set, as one that is down would.
#[derive(Debug)]
pub struct Outage {
    inner: LocalStore,
    pub failing: AtomicBool,
    pub calls: AtomicU32,
}

impl Outage {
    /// Over a local store at `root`, failing from the start.
    pub fn new(root: &std::path::Path) -> Outage {
        Outage { inner: LocalStore::new(root), failing: true.into(), calls: 0.into() }
    }

    fn check(&self, key: &str) -> StoreResult<()> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            true => Err(StoreError {
                operation: "GetObject",
                location: key.into(),
                kind: StoreErrorKind::Other,
                cause: "SlowDown (HTTP 503)".into(),
            }),
            false => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for Outage {
    async fn put(&self, key: &str, body: Bytes) -> StoreResult<()> {
        self.inner.put(key, body).await
    }
    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>> {
        self.check(key)?;
        self.inner.get(key).await
    }
    async fn head(&self, key: &str) -> StoreResult<Option<ObjectMeta>> {
        self.check(key)?;
        self.inner.head(key).await
    }
    async fn get_range(&self, key: &str, offset: u64, length: u64) -> StoreResult<Bytes> {
        self.check(key)?;
        self.inner.get_range(key, offset, length).await
    }
    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        self.check(prefix)?;
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.inner.delete(key).await
    }
    async fn start_multipart(&self, key: &str) -> StoreResult<MultipartUpload> {
        self.inner.start_multipart(key).await
    }
    async fn put_part(&self, upload: &MultipartUpload, number: u32, body: Bytes) -> StoreResult<UploadedPart> {
        self.inner.put_part(upload, number, body).await
    }
    async fn complete_multipart(&self, upload: &MultipartUpload, parts: &[UploadedPart]) -> StoreResult<()> {
        self.inner.complete_multipart(upload, parts).await
    }
    async fn abort_multipart(&self, upload: &MultipartUpload) -> StoreResult<()> {
        self.inner.abort_multipart(upload).await
    }
    fn location(&self, key: &str) -> String {
        self.inner.location(key)
    }
}
