//! Test doubles for the store, for unit tests of the core (real stores in the e2e tests).

use super::{
    DeleteFailure, ListPage, LocalStore, MultipartUpload, ObjectMeta, ObjectStore, ObjectVersion, StoreError,
    StoreErrorKind, StoreResult, UploadedPart,
};
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

/// A store that fails every call while `failing` is set, as one that is down would.
#[derive(Debug)]
pub struct Outage {
    inner: LocalStore,
    pub failing: AtomicBool,
    pub calls: AtomicU32,
    /// Keys ending so that reads find nothing although listings show them (an object
    /// deleted, or not yet visible, between the two).
    pub hidden: Mutex<Vec<String>>,
}

impl Outage {
    /// Over a local store at `root`, failing from the start.
    pub fn new(root: &std::path::Path) -> Outage {
        Outage { inner: LocalStore::new(root), failing: true.into(), calls: 0.into(), hidden: Mutex::default() }
    }

    fn is_hidden(&self, key: &str) -> bool {
        self.hidden.lock().unwrap().iter().any(|hidden| key.ends_with(hidden.as_str()))
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
    async fn get_at_most(&self, key: &str, limit: u64) -> StoreResult<Option<Bytes>> {
        self.check(key)?;
        if self.is_hidden(key) {
            return Ok(None);
        }
        self.inner.get_at_most(key, limit).await
    }
    async fn head(&self, key: &str) -> StoreResult<Option<ObjectMeta>> {
        self.check(key)?;
        if self.is_hidden(key) {
            return Ok(None);
        }
        self.inner.head(key).await
    }
    async fn version(&self, key: &str) -> StoreResult<Option<ObjectVersion>> {
        self.check(key)?;
        if self.is_hidden(key) {
            return Ok(None);
        }
        self.inner.version(key).await
    }
    async fn get_range(&self, key: &str, offset: u64, length: u64, version: Option<&str>) -> StoreResult<Bytes> {
        self.check(key)?;
        self.inner.get_range(key, offset, length, version).await
    }
    async fn list_page(&self, prefix: &str, continuation: Option<&str>, max_keys: usize) -> StoreResult<ListPage> {
        self.check(prefix)?;
        self.inner.list_page(prefix, continuation, max_keys).await
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.inner.delete(key).await
    }
    async fn delete_many(&self, keys: &[String]) -> StoreResult<Vec<DeleteFailure>> {
        self.inner.delete_many(keys).await
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

/// A local store that goes down in the middle of deleting: after `deletes_left` objects
/// are removed, every further delete fails (a batch fails as a whole request, after
/// removing what it could, as a dropped connection leaves it). Records each batch's size.
#[derive(Debug)]
pub struct FailingDeletes {
    inner: LocalStore,
    pub deletes_left: AtomicU64,
    pub batches: Mutex<Vec<usize>>,
}

impl FailingDeletes {
    pub fn new(root: &std::path::Path, deletes_left: u64) -> FailingDeletes {
        FailingDeletes { inner: LocalStore::new(root), deletes_left: deletes_left.into(), batches: Mutex::default() }
    }

    fn take_one(&self, key: &str) -> StoreResult<()> {
        self.deletes_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1))
            .map(drop)
            .map_err(|_| StoreError {
                operation: "DeleteObjects",
                location: key.into(),
                kind: StoreErrorKind::Unreachable,
                cause: "connection refused".into(),
            })
    }
}

#[async_trait::async_trait]
impl ObjectStore for FailingDeletes {
    async fn put(&self, key: &str, body: Bytes) -> StoreResult<()> {
        self.inner.put(key, body).await
    }
    async fn get_at_most(&self, key: &str, limit: u64) -> StoreResult<Option<Bytes>> {
        self.inner.get_at_most(key, limit).await
    }
    async fn head(&self, key: &str) -> StoreResult<Option<ObjectMeta>> {
        self.inner.head(key).await
    }
    async fn version(&self, key: &str) -> StoreResult<Option<ObjectVersion>> {
        self.inner.version(key).await
    }
    async fn get_range(&self, key: &str, offset: u64, length: u64, version: Option<&str>) -> StoreResult<Bytes> {
        self.inner.get_range(key, offset, length, version).await
    }
    async fn list_page(&self, prefix: &str, continuation: Option<&str>, max_keys: usize) -> StoreResult<ListPage> {
        self.inner.list_page(prefix, continuation, max_keys).await
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.take_one(key)?;
        self.inner.delete(key).await
    }
    async fn delete_many(&self, keys: &[String]) -> StoreResult<Vec<DeleteFailure>> {
        self.batches.lock().unwrap().push(keys.len());
        for key in keys {
            self.take_one(key)?;
            self.inner.delete(key).await?;
        }
        Ok(Vec::new())
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
