//! One object-store interface, several drivers (S3 and a local directory), in the manner
//! of pgBackRest's storage layer. Keys are `/`-separated and relative to the store root
//! (bucket or directory); [`Repository`] adds the repository prefix.

#[cfg(test)]
mod contract;
mod local;
pub(crate) mod reader;
mod s3;
#[cfg(test)]
pub mod testing;
pub(crate) mod writer;

pub use local::LocalStore;
pub use s3::{S3Options, S3Store, ServerSideEncryption};

use crate::naming;
use crate::pipeline::{self, Compression, DecodeError, KeyRing};
use crate::repository::RepositoryUrl;
use async_trait::async_trait;
use bytes::Bytes;
use md5::{Digest, Md5};
use sha2::Sha256;
use std::fmt;
use std::sync::Arc;

/// What a store knows of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// MD5 of the content, when the store can tell it cheaply (an S3 ETag of a single-part
    /// upload without SSE-KMS or SSE-C; the local driver computes it).
    pub md5: Option<[u8; 16]>,
    /// SHA-256 of the content as pgops recorded it when it wrote the object (S3 user
    /// metadata [`SHA256_METADATA`]; the local driver computes it). `None` in listings and
    /// for objects written by other tools.
    pub sha256: Option<[u8; 32]>,
    /// When the object was last written, as the store says (S3 `LastModified`, the file's
    /// modification time): retention's sign of life of a directory another tool is still
    /// writing.
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
    /// This version of the object as HEAD names it (S3's ETag), for
    /// [`ObjectStore::version`]; `None` in listings (some S3-compatible stores list another
    /// ETag than they serve).
    pub version: Option<String>,
}

/// The version of an object a reader pins its ranged reads to, and its size then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    pub size: u64,
    /// What the store calls this version (S3's ETag, sent back as If-Match; the local
    /// driver's inode, modification time and size); `None` when it names none.
    pub version: Option<String>,
}

/// The S3 user metadata (`x-amz-meta-pgops-sha256`) in which pgops records the hex SHA-256
/// of every object it PUTs: unlike the ETag, it stays a digest of the content under any
/// server-side encryption.
pub const SHA256_METADATA: &str = "pgops-sha256";

/// What was sent to the store for one object, to compare with what it then says it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentObject {
    pub size: u64,
    pub md5: [u8; 16],
    pub sha256: [u8; 32],
}

impl SentObject {
    pub fn of(body: &[u8]) -> SentObject {
        SentObject { size: body.len() as u64, md5: md5_of(body), sha256: sha256_of(body) }
    }
}

/// Whether `stored` (a HEAD right after the upload) is what was `sent`: the same size, and
/// the same digest wherever the store gives one. Under SSE-KMS or SSE-C the ETag is no MD5
/// (the driver then gives none), so the SHA-256 pgops recorded in the object's metadata
/// is what is compared; the store has checked the body against Content-MD5 on receipt in
/// any case. `Err` says what differs.
pub fn check_stored(sent: &SentObject, stored: &ObjectMeta) -> Result<(), StoredMismatch> {
    if stored.size != sent.size {
        return Err(StoredMismatch::Size { stored: stored.size, sent: sent.size });
    }
    if stored.md5.is_some_and(|md5| md5 != sent.md5) {
        return Err(StoredMismatch::Md5);
    }
    if stored.sha256.is_some_and(|sha256| sha256 != sent.sha256) {
        return Err(StoredMismatch::Sha256);
    }
    Ok(())
}

/// How what the store holds right after an upload differs from what was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoredMismatch {
    #[error("the object is missing right after the upload")]
    Missing,
    #[error("stored size {stored} differs from the {sent} bytes uploaded")]
    Size { stored: u64, sent: u64 },
    #[error("stored MD5 differs from the uploaded content's")]
    Md5,
    #[error("stored SHA-256 (pgops-sha256 metadata) differs from the uploaded content's")]
    Sha256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The bucket or root directory does not exist.
    NoSuchBucket,
    /// Credentials were refused or lack permission.
    AccessDenied,
    /// The endpoint could not be reached (connect, DNS, timeout).
    Unreachable,
    /// What was stored is not what was sent.
    Integrity,
    /// The object cannot be decrypted or decompressed: damaged, altered, or encrypted to a
    /// key the reader lacks ([`crate::pipeline::DecodeError`] in the cause). Waiting does
    /// not help.
    Undecodable(UndecodableReason),
    /// The object was rewritten since it was listed (a read pinned to its version): read
    /// it again from the start. Waiting does not help.
    Changed,
    Other,
}

/// Why an object could not be read back, for the hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UndecodableReason {
    Key,
    Corrupt,
}

/// A failed store operation, with everything a DBA needs to act on it: the operation, the
/// object's location (including the endpoint) and the cause (S3 error code, HTTP status).
#[derive(Debug, Clone)]
pub struct StoreError {
    pub operation: &'static str,
    pub location: String,
    pub kind: StoreErrorKind,
    pub cause: String,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} failed: {}", self.operation, self.location, self.cause)
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    /// `error` met reading the object at `location`.
    pub fn undecodable(location: String, error: DecodeError) -> StoreError {
        let reason = match error {
            DecodeError::Corrupt(_) | DecodeError::Source(_) => UndecodableReason::Corrupt,
            DecodeError::KeyMissing(_) | DecodeError::KeyNeeded(_) | DecodeError::NotEncrypted => {
                UndecodableReason::Key
            }
        };
        StoreError { operation: "read", location, kind: StoreErrorKind::Undecodable(reason), cause: error.to_string() }
    }

    /// Whether trying again may succeed: not for an object that cannot be decoded.
    pub fn is_transient(&self) -> bool {
        !matches!(self.kind, StoreErrorKind::Undecodable(_))
    }
}

impl StoreError {
    /// A sentence on what to fix, for `pgops.check()` and error hints.
    pub fn hint(&self) -> &'static str {
        match self.kind {
            StoreErrorKind::NoSuchBucket => "Create the bucket (or directory) or fix pgops.repository.",
            StoreErrorKind::AccessDenied => {
                "Check pgops.s3_access_key_id and pgops.s3_secret_access_key (or the AWS credential chain) and the bucket policy."
            }
            StoreErrorKind::Unreachable => "Check pgops.s3_endpoint and that the object store is up and reachable.",
            StoreErrorKind::Integrity => "The object store returned different data than was written; check the store's health.",
            StoreErrorKind::Undecodable(UndecodableReason::Key) => "Check the encryption key file (pgops.encryption_key_file, or --encryption-key-file / PGOPS_ENCRYPTION_KEY_FILE for the CLI): it must hold the key the object names; older keys stay in the file below the current one.",
            StoreErrorKind::Undecodable(UndecodableReason::Corrupt) => "The stored object is not what pgops wrote (damaged in the store, or altered); use another backup or WAL copy.",
            StoreErrorKind::Changed => "Another writer replaced the object while it was read; run again to read the new copy from its start, and find out what rewrites it.",
            StoreErrorKind::Other => "See the cause above.",
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A multipart upload in progress: the object appears only when it is completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartUpload {
    pub key: String,
    pub upload_id: String,
}

/// What the store answered for one uploaded part; completing the upload needs them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedPart {
    /// From 1, as S3 numbers parts.
    pub number: u32,
    pub etag: String,
    pub size: u64,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListPage {
    /// In key order.
    pub objects: Vec<ObjectMeta>,
    /// Where the next page starts (the store's own token); `None` after the last page.
    pub continuation: Option<String>,
}

/// A key a batch delete could not remove, and why (the store's error code and message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteFailure {
    pub key: String,
    pub cause: String,
}

#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// Stores `body` under `key`, durably, replacing any object there. The driver makes the
    /// store check the content on receipt where it can (Content-MD5 on S3), and records the
    /// content's SHA-256 for [`ObjectStore::head`] to give back. A key that is also the
    /// folder of other keys (`k` and `k/x`; pgops never makes such keys) may be refused
    /// with an error, by drivers and servers that keep objects as files; the objects
    /// already there then stay as they were.
    async fn put(&self, key: &str, body: Bytes) -> StoreResult<()>;
    /// The object's content, or `None` when there is no such object. Only small objects
    /// are read whole (metadata, history files, manifests; WAL and archives are streamed):
    /// one larger than `limit` is refused ([`too_large_to_read_whole`]) before its body is
    /// held, or once its body passes `limit` when the store does not say its size first.
    async fn get_at_most(&self, key: &str, limit: u64) -> StoreResult<Option<Bytes>>;
    /// [`ObjectStore::get_at_most`] [`WHOLE_GET_LIMIT`] bytes.
    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>> {
        self.get_at_most(key, WHOLE_GET_LIMIT).await
    }
    async fn head(&self, key: &str) -> StoreResult<Option<ObjectMeta>>;
    /// The object's current version and size, as the store serves it, or `None` when there
    /// is no such object: what a ranged read pins to, so that a large object read piece by
    /// piece is never a mix of two versions.
    async fn version(&self, key: &str) -> StoreResult<Option<ObjectVersion>> {
        Ok(self.head(key).await?.map(|meta| ObjectVersion { size: meta.size, version: meta.version }))
    }
    /// `length` bytes from `offset` (fewer at the end of the object), for reading large
    /// objects piece by piece; with `version` (an [`ObjectMeta::version`]), only of that
    /// version ([`StoreErrorKind::Changed`] if the object was rewritten since).
    async fn get_range(&self, key: &str, offset: u64, length: u64, version: Option<&str>) -> StoreResult<Bytes>;
    /// At most `max_keys` (at least 1) of the objects whose key starts with `prefix`, in key
    /// order, from where the page whose `continuation` is given left off (from the first
    /// object when `None`).
    async fn list_page(&self, prefix: &str, continuation: Option<&str>, max_keys: usize) -> StoreResult<ListPage>;
    /// Every object whose key starts with `prefix`, in key order. The whole listing is held
    /// in memory: read a prefix that can hold many objects page by page
    /// ([`Repository::listing`]).
    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        let mut objects = Vec::new();
        let mut continuation = None;
        let mut order = PageOrder::default();
        loop {
            let page = self.list_page(prefix, continuation.as_deref(), LIST_PAGE_SIZE).await?;
            order.check(continuation.as_deref(), &page, || self.location(prefix))?;
            objects.extend(page.objects);
            match page.continuation {
                Some(next) => continuation = Some(next),
                None => return Ok(objects),
            }
        }
    }
    /// Removes the object; removing a missing object is not an error.
    async fn delete(&self, key: &str) -> StoreResult<()>;
    /// Removes `keys` in as few requests as the store allows (S3: [`MAX_DELETE_BATCH`] a
    /// request); missing objects are not an error. Returns the keys the store refused to
    /// remove, each with its cause. `Err` when a request as a whole failed: any of its keys
    /// may or may not be gone.
    async fn delete_many(&self, keys: &[String]) -> StoreResult<Vec<DeleteFailure>>;
    /// Starts a multipart upload of `key`. Parts may be sent concurrently and in any order;
    /// every part but the last must be at least [`MIN_PART_SIZE`] bytes.
    async fn start_multipart(&self, key: &str) -> StoreResult<MultipartUpload>;
    async fn put_part(&self, upload: &MultipartUpload, number: u32, body: Bytes) -> StoreResult<UploadedPart>;
    /// Assembles the parts into the object in number order. `parts` may be listed in any
    /// order (as concurrent uploads finish); the driver sorts them.
    async fn complete_multipart(&self, upload: &MultipartUpload, parts: &[UploadedPart]) -> StoreResult<()>;
    /// Discards the parts; the object is not created.
    async fn abort_multipart(&self, upload: &MultipartUpload) -> StoreResult<()>;
    /// Where `key` is, for messages: `s3://bucket/key at http://endpoint` or a path.
    fn location(&self, key: &str) -> String;
}

/// The largest object [`ObjectStore::get`] reads whole (a manifest of millions of files): a
/// crafted one (a 10 GiB object in a bucket others can write) must not exhaust memory.
pub const WHOLE_GET_LIMIT: u64 = pipeline::WHOLE_OBJECT_LIMIT;

/// The largest metadata object read ([`Repository::get_metadata`]): `pgops.json`,
/// `backup.info`, owner records, keep marks, history files. Read on every wal-fetch and
/// by the archiver inside Postgres, they are a few KiB when pgops or Barman wrote them.
pub const METADATA_LIMIT: u64 = 1 << 20;

/// The error of a [`ObjectStore::get_at_most`] of an object past `limit`.
pub fn too_large_to_read_whole(location: String, size: u64, limit: u64) -> StoreError {
    StoreError {
        operation: "GetObject",
        location,
        kind: StoreErrorKind::Undecodable(UndecodableReason::Corrupt),
        cause: format!(
            "it holds {size} bytes or more, more than the {} KiB pgops reads of such an object: not what pgops writes there",
            limit >> 10
        ),
    }
}

/// S3's lower bound for every part but the last.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// S3's upper bound on the number of parts of one object.
pub const MAX_PARTS: u32 = 10_000;
/// Keys per listing request (S3's maximum): a page of keys is what a listing holds in
/// memory at a time.
pub const LIST_PAGE_SIZE: usize = 1000;
/// Keys per S3 DeleteObjects request, S3's maximum.
pub const MAX_DELETE_BATCH: usize = 1000;

pub fn md5_of(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

pub fn sha256_of(data: &[u8]) -> [u8; 32] {
    // sha2 and md-5 implement different versions of the `Digest` trait.
    <Sha256 as sha2::Digest>::digest(data).into()
}

/// A repository: a store plus the key prefix under which pgops (and Barman) lay out
/// `wals/` and `base/`, plus the key ring of an encrypted repository. Objects are read and
/// written through [`crate::pipeline`]; only the ownership record is always plain.
#[derive(Debug, Clone)]
pub struct Repository {
    pub store: Arc<dyn ObjectStore>,
    prefix: String,
    keys: Option<Arc<KeyRing>>,
}

impl Repository {
    /// Opens the store behind `url`. For S3 this builds a client; no request is sent.
    pub async fn open(url: &RepositoryUrl, s3: &S3Options) -> Repository {
        match url {
            RepositoryUrl::S3 { bucket, prefix } => {
                let store = S3Store::new(bucket, s3).await;
                Repository::new(Arc::new(store), prefix)
            }
            RepositoryUrl::Local { root } => Repository::new(Arc::new(LocalStore::new(root)), ""),
        }
    }

    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Repository {
        let prefix = if prefix.is_empty() { String::new() } else { format!("{}/", prefix.trim_matches('/')) };
        Repository { store, prefix, keys: None }
    }

    /// The same repository, encrypted with `keys` (plain with `None`).
    pub fn with_keys(mut self, keys: Option<Arc<KeyRing>>) -> Repository {
        self.keys = keys;
        self
    }

    /// The key ring objects are encrypted to and read with; `None` for a plain repository.
    pub fn keys(&self) -> Option<&KeyRing> {
        self.keys.as_deref()
    }

    /// [`Repository::keys`], to hand to another thread.
    pub fn key_ring(&self) -> Option<Arc<KeyRing>> {
        self.keys.clone()
    }

    /// The store key of a repository-relative path such as `wals/…`.
    pub fn key(&self, relative: &str) -> String {
        format!("{}{relative}", self.prefix)
    }

    /// Stores a small uncompressed object (backup.info, a manifest), encrypted in an
    /// encrypted repository.
    pub async fn put(&self, relative: &str, content: Bytes) -> StoreResult<()> {
        let stored =
            match self.keys() {
                None => content,
                Some(keys) => Bytes::from(
                    pipeline::encode(&content, relative, Compression::None, 0, Some(keys)).map_err(|e| StoreError {
                        operation: "encrypt",
                        location: self.location(relative),
                        kind: StoreErrorKind::Other,
                        cause: e.to_string(),
                    })?,
                ),
            };
        self.store.put(&self.key(relative), stored).await
    }

    /// The content of a small uncompressed object written by [`Repository::put`] (a
    /// manifest: up to [`WHOLE_GET_LIMIT`]).
    pub async fn get(&self, relative: &str) -> StoreResult<Option<Bytes>> {
        self.read_object(&self.key(relative), Compression::None, WHOLE_GET_LIMIT).await
    }

    /// [`Repository::get`] of a metadata object, up to [`METADATA_LIMIT`].
    pub async fn get_metadata(&self, relative: &str) -> StoreResult<Option<Bytes>> {
        self.read_object(&self.key(relative), Compression::None, METADATA_LIMIT).await
    }

    /// The plaintext of the object at store key `key` (as a listing names it), whose name
    /// says codec `named`, stored in at most `limit` bytes.
    pub async fn read_object(&self, key: &str, named: Compression, limit: u64) -> StoreResult<Option<Bytes>> {
        let Some(stored) = self.store.get_at_most(key, limit).await? else { return Ok(None) };
        pipeline::decode(stored, self.relative(key).unwrap_or(key), named, self.keys())
            .map(Some)
            .map_err(|e| StoreError::undecodable(self.store.location(key), e))
    }

    /// Stores `content` as it is: the ownership record (readable without keys), and bytes
    /// that already went through the pipeline.
    pub async fn put_as_is(&self, relative: &str, content: Bytes) -> StoreResult<()> {
        self.store.put(&self.key(relative), content).await
    }

    /// An object stored as it is: metadata, up to [`METADATA_LIMIT`].
    pub async fn get_as_is(&self, relative: &str) -> StoreResult<Option<Bytes>> {
        self.store.get_at_most(&self.key(relative), METADATA_LIMIT).await
    }

    pub async fn head(&self, relative: &str) -> StoreResult<Option<ObjectMeta>> {
        self.store.head(&self.key(relative)).await
    }

    pub async fn list(&self, relative_prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        self.store.list(&self.key(relative_prefix)).await
    }

    /// Every object holding WAL file `name` in the folder `wal_dir` (`naming::wal_dir`),
    /// under any suffix: Barman and pgops may have stored it with different compression
    /// settings, and a second copy must be found to be compared. Copies under a suffix
    /// pgops cannot read (Barman's `.bz2`, `.xz`) are listed too
    /// ([`crate::pipeline::Compression::of_copy`] says `None`): such a file is there,
    /// and must never be taken for missing.
    pub async fn wal_copies(&self, wal_dir: &str, name: &str) -> StoreResult<Vec<ObjectMeta>> {
        let objects = self.list(&format!("{wal_dir}{name}")).await?;
        Ok(objects
            .into_iter()
            .filter(|object| {
                let file = object.key.rsplit('/').next().unwrap_or_default();
                file.strip_prefix(name).is_some_and(|suffix| !naming::continues_another_name(suffix))
            })
            .collect())
    }

    pub async fn delete(&self, relative: &str) -> StoreResult<()> {
        self.store.delete(&self.key(relative)).await
    }

    /// Removes objects by their store keys, as a listing names them (see
    /// [`ObjectStore::delete_many`]).
    pub async fn delete_many(&self, keys: &[String]) -> StoreResult<Vec<DeleteFailure>> {
        self.store.delete_many(keys).await
    }

    /// The objects under `relative_prefix`, a page at a time.
    pub fn listing(&self, relative_prefix: &str) -> Listing<'_> {
        Listing {
            store: self.store.as_ref(),
            prefix: self.key(relative_prefix),
            continuation: None,
            finished: false,
            order: PageOrder::default(),
        }
    }

    /// The repository-relative path of store key `key` (`None` for a key outside the
    /// repository).
    pub fn relative<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.prefix)
    }

    pub async fn start_multipart(&self, relative: &str) -> StoreResult<MultipartUpload> {
        self.store.start_multipart(&self.key(relative)).await
    }

    pub fn location(&self, relative: &str) -> String {
        self.store.location(&self.key(relative))
    }
}

/// A listing read page by page ([`LIST_PAGE_SIZE`] keys at most), so that memory is
/// bounded by a page however many objects the prefix holds.
#[derive(Debug)]
pub struct Listing<'a> {
    store: &'a dyn ObjectStore,
    prefix: String,
    continuation: Option<String>,
    finished: bool,
    order: PageOrder,
}

/// Where a listing's previous page ended: each page must start after it, and a token
/// must not come back as its own successor. A store that ignores the continuation token
/// would otherwise repeat a page forever (or retention count its objects twice).
#[derive(Debug, Default)]
struct PageOrder {
    last_key: Option<String>,
}

impl PageOrder {
    fn check(&mut self, sent: Option<&str>, page: &ListPage, location: impl FnOnce() -> String) -> StoreResult<()> {
        let broken = |cause: String| StoreError {
            operation: "ListObjectsV2",
            location: location(),
            kind: StoreErrorKind::Other,
            cause: format!(
                "{cause}: the store does not follow the continuation token, so the listing cannot be read completely"
            ),
        };
        if let (Some(last), Some(first)) = (&self.last_key, page.objects.first()) {
            if first.key <= *last {
                return Err(broken(format!(
                    "a page starts at {}, not after the previous page's last key {last}",
                    first.key
                )));
            }
        }
        if page.continuation.is_some() && page.continuation.as_deref() == sent {
            return Err(broken(format!(
                "the page read with token {} names the same token for the next",
                sent.unwrap_or_default()
            )));
        }
        if let Some(last) = page.objects.last() {
            self.last_key = Some(last.key.clone());
        }
        Ok(())
    }
}

impl Listing<'_> {
    /// The next page, in key order; `None` once the listing is complete.
    pub async fn next_page(&mut self) -> StoreResult<Option<Vec<ObjectMeta>>> {
        if self.finished {
            return Ok(None);
        }
        let page = self.store.list_page(&self.prefix, self.continuation.as_deref(), LIST_PAGE_SIZE).await?;
        self.order.check(self.continuation.as_deref(), &page, || self.store.location(&self.prefix))?;
        self.finished = page.continuation.is_none();
        self.continuation = page.continuation;
        Ok(Some(page.objects))
    }
}
