//! The streaming object reader: an object read as `std::io::Read`, in ranges fetched ahead
//! and retried through store errors.

use crate::pipeline::{self, Compression, DecodeError};
use crate::retry::{self, Failed, Patience};
use crate::store::{ObjectStore, ObjectVersion, Repository, StoreError, StoreErrorKind};
use bytes::Bytes;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// Reads an object piece by piece: 8 MiB ranges, several fetched ahead of the one being
/// read, so that download and extraction overlap and memory stays bounded (at most
/// `RANGES_IN_FLIGHT + 1` ranges) whatever the object's size.
pub(crate) struct ObjectReader {
    repo: Repository,
    key: String,
    size: u64,
    /// The version every range is read from, when the store names one.
    version: Option<String>,
    runtime: Handle,
    chunk: Bytes,
    next_offset: u64,
    in_flight: VecDeque<JoinHandle<Result<Bytes, StoreError>>>,
}

const RANGE: u64 = 8 * 1024 * 1024;
const RANGES_IN_FLIGHT: usize = 4;

impl ObjectReader {
    /// A reader of `key`'s current version (`None` when the object is gone), asked of the
    /// store with the patience of a range.
    pub(crate) async fn open(repo: &Repository, key: String, runtime: Handle) -> Result<Option<Self>, StoreError> {
        let (store, full_key) = (repo.store.clone(), repo.key(&key));
        let version = patiently(&store, &full_key, || store.version(&full_key)).await?;
        Ok(version.map(|current| ObjectReader::new(repo, key, current, runtime)))
    }

    fn new(repo: &Repository, key: String, current: ObjectVersion, runtime: Handle) -> Self {
        let ObjectVersion { size, version } = current;
        let mut reader = ObjectReader {
            repo: repo.clone(),
            key,
            size,
            version,
            runtime,
            chunk: Bytes::new(),
            next_offset: 0,
            in_flight: VecDeque::new(),
        };
        reader.fetch_ahead();
        reader
    }

    /// The size of the version read.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    fn fetch_ahead(&mut self) {
        while self.in_flight.len() < RANGES_IN_FLIGHT && self.next_offset < self.size {
            let (store, key, offset) = (self.repo.store.clone(), self.repo.key(&self.key), self.next_offset);
            let version = self.version.clone();
            let length = RANGE.min(self.size - offset);
            self.next_offset += length;
            self.in_flight.push_back(self.runtime.spawn(read_range(store, key, offset, length, version)));
        }
    }
}

/// How long one range is retried through store errors: a restore of a large backup must
/// not be lost to a minute of throttling or a store restart.
const RANGE_PATIENCE: Duration = Duration::from_secs(120);

/// `length` bytes of `key` from `offset`, retried (with backoff, up to [`RANGE_PATIENCE`])
/// while the store fails or answers short; of `version` only, when given.
async fn read_range(
    store: Arc<dyn ObjectStore>,
    key: String,
    offset: u64,
    length: u64,
    version: Option<String>,
) -> Result<Bytes, StoreError> {
    let attempt = || async {
        let bytes = store.get_range(&key, offset, length, version.as_deref()).await?;
        match bytes.len() as u64 == length {
            true => Ok(bytes),
            false => Err(StoreError {
                operation: "GetObject",
                location: store.location(&key),
                kind: StoreErrorKind::Unreachable,
                cause: format!("{} bytes of the range {offset}+{length} arrived", bytes.len()),
            }),
        }
    };
    patiently(&store, &key, attempt).await
}

/// `attempt` on `key`, retried (with backoff, up to [`RANGE_PATIENCE`]) while the store
/// fails.
async fn patiently<T, F, Fut>(store: &Arc<dyn ObjectStore>, key: &str, attempt: F) -> Result<T, StoreError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let error = |kind, cause: String| StoreError { operation: "GetObject", location: store.location(key), kind, cause };
    // Missing bucket, refused credentials or a rewritten object do not heal by waiting.
    let transient = |e: &StoreError| {
        !matches!(e.kind, StoreErrorKind::NoSuchBucket | StoreErrorKind::AccessDenied | StoreErrorKind::Changed)
    };
    let timed_out = || error(StoreErrorKind::Unreachable, "no answer before the retry deadline".into());
    let patience = Patience::new(RANGE_PATIENCE);
    let read = retry::patiently(patience, attempt, transient, timed_out, &mut |_, _| {}).await;
    read.map_err(|failed| match failed {
        Failed::Permanent(e) => e,
        Failed::GaveUp { attempts, waited, last } => StoreError {
            cause: format!("{} (gave up after {attempts} attempts in {}s)", last.cause, waited.as_secs()),
            ..last
        },
    })
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.chunk.is_empty() {
            let Some(next) = self.in_flight.pop_front() else { return Ok(0) };
            self.chunk = self.runtime.block_on(next).map_err(io::Error::other)?.map_err(io::Error::other)?;
            self.fetch_ahead();
            if self.chunk.is_empty() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{} ended early", self.key)));
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// Why [`decode_into`] stopped.
#[derive(Debug)]
pub(crate) enum DecodeIntoError {
    /// The store failed, or the object is damaged ([`StoreErrorKind::Undecodable`]; also
    /// when it decodes to more than the limit).
    Store(StoreError),
    /// The sink refused what it was given.
    Sink(io::Error),
}

impl From<StoreError> for DecodeIntoError {
    fn from(e: StoreError) -> Self {
        DecodeIntoError::Store(e)
    }
}

/// Streams the plaintext of the object at repository path `relative` (codec `named` by its
/// name) into `sink`, ranged reads pinned to the version the store serves, and refuses it
/// once it decodes to more than `limit` bytes: a WAL file is never larger than a segment,
/// so a crafted object (a zstd bomb) fills neither memory nor disk. Returns the bytes
/// written, `None` when there is no such object. Blocking: call it outside the runtime.
pub(crate) fn decode_into(
    repo: &Repository,
    runtime: &Handle,
    relative: &str,
    named: Compression,
    limit: u64,
    sink: &mut dyn Write,
) -> Result<Option<u64>, DecodeIntoError> {
    let location = repo.location(relative);
    let Some(reader) = runtime.block_on(ObjectReader::open(repo, relative.to_string(), runtime.clone()))? else {
        return Ok(None);
    };
    // The store's own error when the reader passes one through; otherwise damage.
    let failed_reading = |e: io::Error| match e.get_ref().and_then(|inner| inner.downcast_ref::<StoreError>()) {
        Some(store) => store.clone(),
        None => StoreError::undecodable(
            location.clone(),
            DecodeError::Corrupt(match repo.keys() {
                None => format!("it does not decompress as {}: {e}", named.name()),
                Some(_) => format!("it does not decrypt and decompress: {e}"),
            }),
        ),
    };
    let mut plain = pipeline::decode_reader(reader, relative, named, repo.keys()).map_err(|e| match e {
        DecodeError::Source(e) => failed_reading(e),
        e => StoreError::undecodable(location.clone(), e),
    })?;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut written = 0u64;
    loop {
        let n = match plain.read(&mut buffer) {
            Ok(0) => return Ok(Some(written)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(failed_reading(e).into()),
        };
        written += n as u64;
        if written > limit {
            let cause = format!("it decodes to more than {limit} bytes, more than the WAL file it holds can be");
            return Err(StoreError::undecodable(location, DecodeError::Corrupt(cause)).into());
        }
        sink.write_all(&buffer[..n]).map_err(DecodeIntoError::Sink)?;
    }
}

/// A sink that compares what is written with what `local` reads, for two copies of one WAL
/// file that must agree (the repository's and the local file, or two stored copies).
pub(crate) struct SameAs<R> {
    local: R,
    compared: u64,
    scratch: Vec<u8>,
    /// Where the contents first differ, once they do.
    pub(crate) differs_at: Option<u64>,
}

impl<R: Read> SameAs<R> {
    pub(crate) fn new(local: R) -> Self {
        SameAs { local, compared: 0, scratch: Vec::new(), differs_at: None }
    }

    /// Whether `local` has nothing left once everything written matched: together with the
    /// written length, that the two are the same.
    pub(crate) fn local_is_exhausted(&mut self) -> io::Result<bool> {
        Ok(self.local.read(&mut [0u8; 1])? == 0)
    }
}

impl<R: Read> Write for SameAs<R> {
    fn write(&mut self, written: &[u8]) -> io::Result<usize> {
        self.scratch.resize(written.len(), 0);
        let mut read = 0;
        while read < written.len() {
            match self.local.read(&mut self.scratch[read..]) {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(at) = written.iter().zip(&self.scratch[..read]).position(|(a, b)| a != b).or(
            // The local copy ended first.
            (read < written.len()).then_some(read),
        ) {
            self.differs_at = Some(self.compared + at as u64);
            return Err(io::Error::other(format!("the contents differ from byte {}", self.compared + at as u64)));
        }
        self.compared += read as u64;
        Ok(read)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_read_waits_out_a_store_outage() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let root = tempfile::tempdir().unwrap();
        let outage = Arc::new(crate::store::testing::Outage::new(root.path()));
        let repo = Repository::new(outage.clone(), "srv");
        let content: Vec<u8> = (0..(RANGE as usize * 2 + 5)).map(|i| (i % 253) as u8).collect();
        runtime.block_on(repo.put("base/x/data.tar", Bytes::from(content.clone()))).unwrap();
        let current = ObjectVersion { size: content.len() as u64, version: None };
        let reader = ObjectReader::new(&repo, "base/x/data.tar".into(), current, runtime.handle().clone());
        let flip = outage.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(1200));
            flip.failing.store(false, std::sync::atomic::Ordering::SeqCst);
        });
        let mut read = Vec::new();
        let mut reader = reader;
        reader.read_to_end(&mut read).unwrap();
        assert!(read == content, "read {} bytes", read.len());
        assert!(outage.calls.load(std::sync::atomic::Ordering::SeqCst) > 3, "the store was asked again");
    }

    /// An object rewritten after it was listed: a read pinned to the listed version fails
    /// at once as `Changed` (no retries), never mixing the two versions.
    #[tokio::test]
    async fn a_range_of_a_rewritten_object_is_refused_at_once() {
        let root = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(crate::store::LocalStore::new(root.path()));
        store.put("base/x/data.tar", Bytes::from_static(b"first version")).await.unwrap();
        let listed = store.list("base/x/").await.unwrap().remove(0);
        let version =
            store.version(&listed.key).await.unwrap().unwrap().version.expect("the local driver names versions");
        let read = read_range(store.clone(), listed.key.clone(), 0, 5, Some(version.clone())).await.unwrap();
        assert_eq!(read, Bytes::from_static(b"first"));
        std::thread::sleep(Duration::from_millis(10));
        store.put("base/x/data.tar", Bytes::from_static(b"other version")).await.unwrap();
        let started = std::time::Instant::now();
        let err = read_range(store.clone(), listed.key.clone(), 5, 5, Some(version)).await.unwrap_err();
        assert_eq!(err.kind, StoreErrorKind::Changed, "{err}");
        assert!(started.elapsed() < Duration::from_secs(1), "not retried");
        let unpinned = read_range(store, listed.key, 0, 5, None).await.unwrap();
        assert_eq!(unpinned, Bytes::from_static(b"other"));
    }
}
