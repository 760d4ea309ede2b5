//! `wal-fetch`: the `restore_command` side of archiving. Finds a WAL file in the
//! repository whatever codec it was stored with, decompresses it, and writes it atomically
//! (temporary file, fsync, rename), so that Postgres never reads a half-written segment.
//!
//! "Not found" is an answer Postgres acts on: at the end of the archive it ends recovery
//! and promotes. So [`Fetched::NotFound`] means only that the store listed the WAL folder
//! and the name is under no suffix; every other failure is an error, and
//! [`fetch_wal_patiently`] retries transient ones with backoff for a bounded time.
//!
//! Prefetch (Barman's model): when the requested segment is not in the spool, it is fetched,
//! then the next N segments are fetched concurrently into the spool; the next calls are
//! served from there by a rename, without a round trip each. A failed prefetch leaves
//! nothing in the spool: the next call fetches (and reports) for itself.

use crate::naming::{self, NotAWalFile, WalFileKind};
use crate::ownership::{self, OwnershipError};
use crate::pipeline::Compression;
pub use crate::retry::Patience;
use crate::retry::{self, Failed};
use crate::store::reader::{decode_into, DecodeIntoError, SameAs};
use crate::store::{ObjectMeta, Repository, StoreError, StoreErrorKind, UndecodableReason};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// Written to the destination: where it came from and its size.
    Written { location: String, bytes: u64 },
    /// The repository has no such WAL file.
    NotFound,
}

#[derive(Debug)]
pub enum FetchError {
    NotAWalFile(NotAWalFile),
    Store(StoreError),
    /// The stored object is damaged: not valid data for its codec, or its encryption does
    /// not authenticate.
    Corrupt {
        location: String,
        cause: std::io::Error,
    },
    /// The name is stored under two suffixes with different content: which one is the
    /// cluster's WAL cannot be told.
    Conflict {
        first: String,
        second: String,
    },
    /// The object is encrypted to a key this reader does not have (or is plain where
    /// encryption is required).
    Key(StoreError),
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// Transient errors went on past the time allowed for retries.
    GaveUp {
        attempts: u32,
        waited: Duration,
        last: Box<FetchError>,
    },
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::NotAWalFile(e) => e.fmt(f),
            FetchError::Store(e) => write!(f, "{e}. {}", e.hint()),
            FetchError::Corrupt { location, cause } => write!(f, "{location} is corrupt: {cause}"),
            FetchError::Key(e) => write!(f, "{e}. {}", e.hint()),
            FetchError::Conflict { first, second } => write!(
                f,
                "{first} and {second} hold different content for the same WAL file; inspect both and remove the one that is not this cluster's"
            ),
            FetchError::Write { path, cause } => write!(f, "could not write {}: {cause}", path.display()),
            FetchError::GaveUp { attempts, waited, last } => {
                write!(f, "gave up after {attempts} attempts in {}s: {last}", waited.as_secs())
            }
        }
    }
}

impl std::error::Error for FetchError {}

impl From<StoreError> for FetchError {
    fn from(e: StoreError) -> Self {
        FetchError::Store(e)
    }
}

impl FetchError {
    /// Whether trying again may succeed: store errors (down, timeouts, 5xx, throttling,
    /// resets, a body cut short, and credentials that may be rotating). A corrupt object,
    /// a conflict, a bad name or a local write error will not heal by waiting.
    fn is_transient(&self) -> bool {
        matches!(self, FetchError::Store(_))
    }
}

/// Fetches WAL file `name` into `dest`. When it is stored under several suffixes, each
/// copy is read and they must agree. A copy is streamed to disk, never held whole, and
/// refused once it decodes to more than the repository's segment size.
pub async fn fetch_wal(repo: &Repository, name: &str, dest: &Path) -> Result<Fetched, FetchError> {
    fetch_sized(repo, name, dest, None).await
}

/// The WAL segment size `pgops.json` records (`None` for a repository without one, such as
/// Barman's): what every segment must decode to exactly, and no WAL file more than.
async fn repository_segment_size(repo: &Repository) -> Result<Option<u64>, FetchError> {
    match ownership::owner(repo).await {
        Ok(owner) => Ok(owner.map(|owner| u64::from(owner.wal_segment_size))),
        Err(OwnershipError::Store(e)) => Err(e.into()),
        // An unreadable record is the archiver's to report; the segment checks fall back
        // to what any PostgreSQL segment can be.
        Err(_) => Ok(None),
    }
}

/// PostgreSQL's largest WAL segment (`initdb --wal-segsize=1024`).
const LARGEST_SEGMENT: u64 = 1 << 30;

/// [`fetch_wal`] with the segment size when the caller knows it already (`None`: asked of
/// the repository once the file is found, so that "not in the archive" costs one listing).
async fn fetch_sized(
    repo: &Repository,
    name: &str,
    dest: &Path,
    known_segment_size: Option<u64>,
) -> Result<Fetched, FetchError> {
    let kind = naming::classify(name).map_err(FetchError::NotAWalFile)?;
    let dir = naming::wal_dir(name).map_err(FetchError::NotAWalFile)?;
    let copies = repo.wal_copies(&dir, name).await?;
    if copies.is_empty() {
        return Ok(Fetched::NotFound);
    }
    let segment_size = match known_segment_size {
        Some(size) => Some(size),
        None => repository_segment_size(repo).await?,
    };
    let temp = temporary_path(dest)?;
    // Dropped before the copy is in place (a deadline, a prefetch given up), this future
    // must leave nothing behind: the blocking thread, which cannot be stopped mid-read,
    // is told to stop at its next write and never renames; the rename is done here. The
    // file is made here, so that the guard always has it to remove, and the thread only
    // opens it (a file the guard removed is not made again).
    std::fs::File::create(&temp).map_err(|cause| FetchError::Write { path: temp.clone(), cause })?;
    let abandoned = Abandoned { cancelled: Arc::new(AtomicBool::new(false)), temp: Some(temp.clone()) };
    let (cancelled, blocking_temp) = (abandoned.cancelled.clone(), temp.clone());
    let (repo, name) = (repo.clone(), name.to_string());
    let runtime = Handle::current();
    let location = repo.location(&dir);
    let written = tokio::task::spawn_blocking(move || {
        let wanted = Wanted { name: &name, kind, copies: &copies, segment_size };
        let written = write_copies(&repo, &runtime, wanted, &blocking_temp, &cancelled);
        if written.is_err() || cancelled.load(Ordering::Acquire) {
            let _ = std::fs::remove_file(&blocking_temp);
        }
        written
    });
    let fetched = written.await.map_err(|e| {
        FetchError::Store(StoreError {
            operation: "wal-fetch",
            location,
            kind: StoreErrorKind::Other,
            cause: format!("the fetch task failed: {e}"),
        })
    })??;
    std::fs::rename(&temp, dest).map_err(|cause| FetchError::Write { path: dest.to_path_buf(), cause })?;
    abandoned.disarm();
    Ok(fetched)
}

/// The temporary file of a fetch in flight, removed (and its writer told to stop) unless
/// the fetch completes.
struct Abandoned {
    cancelled: Arc<AtomicBool>,
    temp: Option<PathBuf>,
}

impl Abandoned {
    fn disarm(mut self) {
        self.temp = None;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            self.cancelled.store(true, Ordering::Release);
            let _ = std::fs::remove_file(temp);
        }
    }
}

/// A sink that fails once its fetch was abandoned, so that the thread writing it stops.
struct StopWhenCancelled<'a, W> {
    inner: W,
    cancelled: &'a AtomicBool,
}

impl<W: Write> Write for StopWhenCancelled<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.cancelled.load(Ordering::Acquire) {
            return Err(std::io::Error::other("the fetch was abandoned (its deadline passed)"));
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Where a fetched file is written before it is renamed to `dest`: a name of its own per
/// fetch, as an abandoned fetch's thread may still be writing its own.
fn temporary_path(dest: &Path) -> Result<PathBuf, FetchError> {
    static FETCHES: AtomicU64 = AtomicU64::new(0);
    let file_name = dest.file_name().ok_or_else(|| FetchError::Write {
        path: dest.to_path_buf(),
        cause: std::io::Error::other("the destination names no file"),
    })?;
    let fetch = FETCHES.fetch_add(1, Ordering::Relaxed);
    Ok(dest.with_file_name(format!(".{}.{}-{fetch}.pgops-tmp", file_name.to_string_lossy(), std::process::id())))
}

/// The WAL file a fetch brings: its name and kind, its copies in the repository, and the
/// repository's segment size when known.
struct Wanted<'a> {
    name: &'a str,
    kind: WalFileKind,
    copies: &'a [ObjectMeta],
    segment_size: Option<u64>,
}

/// Streams the first readable copy of the wanted file into `temp` (synced), and compares
/// every other copy with it; stops writing once `cancelled`. Blocking.
fn write_copies(
    repo: &Repository,
    runtime: &Handle,
    wanted: Wanted<'_>,
    temp: &Path,
    cancelled: &AtomicBool,
) -> Result<Fetched, FetchError> {
    let Wanted { name, kind, copies, segment_size } = wanted;
    let write_error = |cause| FetchError::Write { path: temp.to_path_buf(), cause };
    let mut first: Option<(String, u64)> = None;
    let mut vanished = None;
    for object in copies {
        let location = repo.store.location(&object.key);
        let file = object.key.rsplit('/').next().unwrap_or_default();
        let Some(codec) = Compression::of_copy(file, name) else {
            return Err(FetchError::Corrupt {
                location,
                cause: std::io::Error::other(
                    "stored with a compression pgops cannot read (.zst, .gz, .lz4, .snappy or none)",
                ),
            });
        };
        let relative = repo.relative(&object.key).unwrap_or(&object.key);
        let limit = segment_size.unwrap_or(LARGEST_SEGMENT);
        let (decoded, differs_at) = match &first {
            None => {
                let file = std::fs::OpenOptions::new().write(true).truncate(true).open(temp).map_err(write_error)?;
                let mut out = StopWhenCancelled { inner: file, cancelled };
                let decoded = decode_into(repo, runtime, relative, codec, limit, &mut out);
                if matches!(decoded, Ok(Some(_))) {
                    out.inner.sync_all().map_err(write_error)?;
                }
                (decoded, None)
            }
            Some((_, size)) => {
                let local = std::io::BufReader::new(std::fs::File::open(temp).map_err(write_error)?);
                let mut same = StopWhenCancelled { inner: SameAs::new(local), cancelled };
                let decoded = decode_into(repo, runtime, relative, codec, *size, &mut same);
                (decoded, same.inner.differs_at)
            }
        };
        let bytes = match decoded {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                vanished = Some(location);
                continue;
            }
            Err(DecodeIntoError::Store(e)) if e.kind == StoreErrorKind::Undecodable(UndecodableReason::Corrupt) => {
                return Err(match &first {
                    // Past the first copy's size: not the same content.
                    Some((earlier, _)) if e.cause.contains("decodes to more than") => {
                        FetchError::Conflict { first: earlier.clone(), second: location }
                    }
                    _ => FetchError::Corrupt { location, cause: std::io::Error::other(e.cause) },
                });
            }
            Err(DecodeIntoError::Store(e)) if !e.is_transient() => return Err(FetchError::Key(e)),
            Err(DecodeIntoError::Store(e)) => return Err(e.into()),
            Err(DecodeIntoError::Sink(cause)) => {
                return Err(match (&first, differs_at) {
                    (Some((earlier, _)), Some(_)) => FetchError::Conflict { first: earlier.clone(), second: location },
                    _ => write_error(cause),
                })
            }
        };
        // A segment is a whole segment: the repository's segment size, or (when it does not
        // say) a power of two from 1 MiB to 1 GiB (initdb's --wal-segsize); anything else
        // is not what Postgres archived.
        let whole_segment = match segment_size {
            Some(size) => bytes == size,
            None => (1u64 << 20..=LARGEST_SEGMENT).contains(&bytes) && bytes.is_power_of_two(),
        };
        if kind == WalFileKind::Segment && !whole_segment {
            return Err(FetchError::Corrupt {
                location,
                cause: std::io::Error::other(format!("it holds {bytes} bytes, not a whole WAL segment")),
            });
        }
        match &first {
            None => first = Some((location, bytes)),
            Some((earlier, size)) if *size != bytes => {
                return Err(FetchError::Conflict { first: earlier.clone(), second: location })
            }
            Some(_) => {}
        }
    }
    match first {
        Some((location, bytes)) => Ok(Fetched::Written { location, bytes }),
        // Listed a moment ago, not found now: an eventually consistent store, or retention
        // deleting it meanwhile. Either way "not in the archive" is not what the store said
        // (and Postgres would end recovery on it): an error, retried as a transient one.
        None => Err(FetchError::Store(StoreError {
            operation: "GetObject",
            location: vanished.unwrap_or_default(),
            kind: StoreErrorKind::Other,
            cause: "the listing shows the object, but reading it found nothing".into(),
        })),
    }
}

/// How a `restore_command` call fetches: where prefetched segments wait, how many, and how
/// long to keep trying when the store fails.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Must be on the same file system as the destination (the hand-over is a rename).
    pub spool: PathBuf,
    pub prefetch: usize,
    pub patience: Patience,
}

/// The longest the segments after the requested one are waited for: the requested one is
/// already written, so a slow store must not hold recovery back for long.
const PREFETCH_TIME: Duration = Duration::from_secs(30);

/// Fetches `name` into `dest`, serving it from the spool when a previous call prefetched
/// it; otherwise fetches it, retrying transient errors with exponential backoff until
/// `patience.total` has passed (each attempt is cut off at the deadline too, so a frozen
/// store cannot hold it longer), and then the `prefetch` segments after it into the
/// spool. `on_retry` hears of each failed attempt and the wait before the next one.
pub async fn fetch_wal_prefetching(
    repo: &Repository,
    name: &str,
    dest: &Path,
    options: &FetchOptions,
    on_retry: &mut (dyn FnMut(&FetchError, Duration) + Send),
) -> Result<Fetched, FetchError> {
    // Validated before it names a path: the spool is looked up by this name.
    naming::classify(name).map_err(FetchError::NotAWalFile)?;
    let spooled = options.spool.join(name);
    if let Ok(meta) = std::fs::metadata(&spooled) {
        std::fs::rename(&spooled, dest).map_err(|cause| FetchError::Write { path: dest.to_path_buf(), cause })?;
        return Ok(Fetched::Written { location: spooled.display().to_string(), bytes: meta.len() });
    }
    let fetched = fetch_wal_patiently(repo, name, dest, options.patience, on_retry).await?;
    if let Fetched::Written { bytes: segment_size, .. } = fetched {
        let limit = PREFETCH_TIME.min(options.patience.total);
        // A prefetch that fails or runs out of time leaves nothing behind; the next call
        // fetches that segment itself, with retries, and reports its errors.
        prefetch_following(repo, name, segment_size, options, limit).await;
    }
    Ok(fetched)
}

async fn fetch_wal_patiently(
    repo: &Repository,
    name: &str,
    dest: &Path,
    patience: Patience,
    on_retry: &mut (dyn FnMut(&FetchError, Duration) + Send),
) -> Result<Fetched, FetchError> {
    let dir = naming::wal_dir(name).map_err(FetchError::NotAWalFile)?;
    let timed_out = || {
        FetchError::Store(StoreError {
            operation: "wal-fetch",
            location: repo.location(&dir),
            kind: StoreErrorKind::Unreachable,
            cause: "the store did not answer before the retry deadline".into(),
        })
    };
    let fetched =
        retry::patiently(patience, || fetch_wal(repo, name, dest), FetchError::is_transient, timed_out, on_retry);
    fetched.await.map_err(|failed| match failed {
        Failed::Permanent(e) => e,
        Failed::GaveUp { attempts, waited, last } => FetchError::GaveUp { attempts, waited, last: Box::new(last) },
    })
}

/// Fetches the `options.prefetch` segments after `name` into the spool, concurrently, for
/// `limit` at most; those still in flight then are dropped (each removes its temporary
/// file) before this returns.
async fn prefetch_following(repo: &Repository, name: &str, segment_size: u64, options: &FetchOptions, limit: Duration) {
    if options.prefetch == 0 || naming::next_segment(name, segment_size).is_none() {
        return;
    }
    if std::fs::create_dir_all(&options.spool).is_err() {
        return;
    }
    remove_passed(&options.spool, name);
    let following =
        std::iter::successors(naming::next_segment(name, segment_size), |n| naming::next_segment(n, segment_size));
    let mut fetches = tokio::task::JoinSet::new();
    for next in following.take(options.prefetch) {
        let (repo, into) = (repo.clone(), options.spool.join(&next));
        fetches.spawn(async move { fetch_sized(&repo, &next, &into, Some(segment_size)).await.ok() });
    }
    let _ = tokio::time::timeout(limit, async { while fetches.join_next().await.is_some() {} }).await;
    // Aborted and awaited, not just dropped: a task only marked aborted may never be polled
    // again before the process exits, and its temporary file would stay.
    fetches.shutdown().await;
}

/// Removes spooled segments Postgres has gone past (recovery moves forward only, within a
/// timeline; a spooled file of another timeline is removed too once passed by name).
fn remove_passed(spool: &Path, requested: &str) {
    let Ok(entries) = std::fs::read_dir(spool) else { return };
    for entry in entries.flatten() {
        let file = entry.file_name();
        if file.to_str().is_some_and(|f| f < requested) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::Outage;
    use crate::store::LocalStore;
    use bytes::Bytes;
    use std::sync::Arc;

    fn repo(dir: &Path) -> Repository {
        Repository::new(Arc::new(LocalStore::new(dir)), "srv")
    }

    #[tokio::test]
    async fn fetches_any_codec_and_reports_missing() {
        let (store, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let repo = repo(store.path());
        let segment = vec![7u8; 1 << 20];
        let gz = Compression::Gzip.compress(&segment, 6).unwrap();
        repo.put("wals/0000000100000000/000000010000000000000003.gz", Bytes::from(gz)).await.unwrap();
        // A backup history file shares the segment's prefix and must not be taken for it.
        repo.put("wals/0000000100000000/000000010000000000000003.00000028.backup", Bytes::from_static(b"x"))
            .await
            .unwrap();

        let dest = out.path().join("RECOVERYXLOG");
        let fetched = fetch_wal(&repo, "000000010000000000000003", &dest).await.unwrap();
        assert!(matches!(fetched, Fetched::Written { bytes: 1_048_576, .. }), "{fetched:?}");
        assert_eq!(std::fs::read(&dest).unwrap(), segment);
        assert_eq!(fetch_wal(&repo, "000000010000000000000004", &dest).await.unwrap(), Fetched::NotFound);
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1, "no temporary file left");
    }

    /// A fetch given up at its deadline (the future dropped while its thread still reads)
    /// leaves nothing: no file at the destination, then or later, and no temporary file.
    #[tokio::test]
    async fn an_abandoned_fetch_never_puts_a_file_in_place() {
        let (store, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let repo = repo(store.path());
        let segment: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
        repo.put("wals/0000000100000000/000000010000000000000003", Bytes::from(segment)).await.unwrap();
        let dest = out.path().join("RECOVERYXLOG");
        let mut abandoned = 0;
        for deadline_ms in [1u64, 2, 5, 10, 20, 50, 100, 200, 500, 2000, 10_000] {
            let fetch = fetch_wal(&repo, "000000010000000000000003", &dest);
            match tokio::time::timeout(Duration::from_millis(deadline_ms), fetch).await {
                Ok(fetched) => {
                    assert!(matches!(fetched.unwrap(), Fetched::Written { bytes: 16_777_216, .. }));
                    break;
                }
                Err(_) => abandoned += 1,
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert!(left.is_empty(), "after a fetch abandoned at {deadline_ms} ms: {left:?}");
        }
        assert!(abandoned > 0, "no deadline was short enough to abandon a fetch");
        assert!(dest.exists());
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1, "no temporary file left");
    }

    #[tokio::test]
    async fn corrupt_objects_and_bad_names_are_errors() {
        let (store, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let repo = repo(store.path());
        repo.put("wals/00000002.history.zst", Bytes::from_static(b"garbage")).await.unwrap();
        let dest = out.path().join("x");
        assert!(matches!(fetch_wal(&repo, "00000002.history", &dest).await, Err(FetchError::Corrupt { .. })));
        assert!(!dest.exists());
        assert!(matches!(fetch_wal(&repo, "../../etc", &dest).await, Err(FetchError::NotAWalFile(_))));
        // Not even a spooled file is looked up under a name that is not a WAL file's.
        std::fs::write(out.path().join("passwd"), b"x").unwrap();
        let options =
            FetchOptions { spool: out.path().join("spool"), prefetch: 0, patience: Patience::new(Duration::ZERO) };
        let served = fetch_wal_prefetching(&repo, "../passwd", &dest, &options, &mut |_, _| {}).await;
        assert!(matches!(served, Err(FetchError::NotAWalFile(_))));
        assert!(out.path().join("passwd").exists() && !dest.exists());
    }

    #[tokio::test]
    async fn prefetches_the_next_segments_and_serves_them_from_the_spool() {
        let (store, pg_wal) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let repo = repo(store.path());
        let segment_size = 1 << 20;
        let names: Vec<String> = (1..=6).map(|n| format!("0000000100000000{n:08X}")).collect();
        for (i, name) in names.iter().enumerate() {
            let content = vec![i as u8; segment_size];
            let key = format!("wals/0000000100000000/{name}.zst");
            repo.put(&key, Bytes::from(Compression::Zstd.compress(&content, 3).unwrap())).await.unwrap();
        }
        let (dest, spool) = (pg_wal.path().join("RECOVERYXLOG"), pg_wal.path().join("pgops-prefetch"));
        let options =
            FetchOptions { spool: spool.clone(), prefetch: 3, patience: Patience::new(Duration::from_secs(5)) };
        let mut no_retry = |e: &FetchError, _: Duration| panic!("no retry expected: {e}");
        let spooled = || -> Vec<String> {
            let mut v: Vec<_> =
                std::fs::read_dir(&spool).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            v.sort();
            v
        };

        fetch_wal_prefetching(&repo, &names[0], &dest, &options, &mut no_retry).await.unwrap();
        assert_eq!(spooled(), names[1..4]);
        // Served from the spool: the repository copy is gone and it still arrives, intact.
        std::fs::remove_file(store.path().join(format!("srv/wals/0000000100000000/{}.zst", names[1]))).unwrap();
        let served = fetch_wal_prefetching(&repo, &names[1], &dest, &options, &mut no_retry).await.unwrap();
        assert!(matches!(served, Fetched::Written { .. }));
        assert_eq!(std::fs::read(&dest).unwrap(), vec![1u8; segment_size]);
        assert_eq!(spooled(), names[2..4]);
        // A miss further on drops what was passed and prefetches past the last segment
        // (not found there is fine).
        fetch_wal_prefetching(&repo, &names[4], &dest, &options, &mut no_retry).await.unwrap();
        assert_eq!(spooled(), names[5..6]);
    }

    #[tokio::test]
    async fn a_copy_under_a_suffix_pgops_cannot_read_is_an_error_never_not_found() {
        let (store, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let repo = repo(store.path());
        let name = "000000010000000000000006";
        repo.put(&format!("wals/0000000100000000/{name}.bz2"), Bytes::from_static(b"BZh9...")).await.unwrap();
        // Other files' names that begin with this one are not copies of it.
        repo.put(&format!("wals/0000000100000000/{name}.partial.zst"), Bytes::from_static(b"x")).await.unwrap();
        let dest = out.path().join("RECOVERYXLOG");
        let err = fetch_wal(&repo, name, &dest).await.unwrap_err();
        assert!(matches!(err, FetchError::Corrupt { .. }) && err.to_string().contains(".bz2"), "{err}");
        assert!(!dest.exists());
        let partial_only = "000000010000000000000007";
        repo.put(&format!("wals/0000000100000000/{partial_only}.partial.zst"), Bytes::from_static(b"x")).await.unwrap();
        repo.put(&format!("wals/0000000100000000/{partial_only}.00000028.backup.gz"), Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(fetch_wal(&repo, partial_only, &dest).await.unwrap(), Fetched::NotFound);
    }

    #[tokio::test]
    async fn the_same_name_under_two_suffixes_must_hold_the_same_content() {
        let (store, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let repo = repo(store.path());
        let name = "000000010000000000000005";
        let (ours, theirs) = (vec![1u8; 1 << 20], vec![2u8; 1 << 20]);
        let key = |ext: &str| format!("wals/0000000100000000/{name}{ext}");
        repo.put(&key(".gz"), Bytes::from(Compression::Gzip.compress(&ours, 6).unwrap())).await.unwrap();
        repo.put(&key(".zst"), Bytes::from(Compression::Zstd.compress(&ours, 3).unwrap())).await.unwrap();
        let dest = out.path().join("RECOVERYXLOG");
        assert!(matches!(fetch_wal(&repo, name, &dest).await.unwrap(), Fetched::Written { bytes: 1_048_576, .. }));

        repo.put(&key(".zst"), Bytes::from(Compression::Zstd.compress(&theirs, 3).unwrap())).await.unwrap();
        std::fs::remove_file(&dest).unwrap();
        let err = fetch_wal(&repo, name, &dest).await.unwrap_err();
        assert!(matches!(err, FetchError::Conflict { .. }), "{err}");
        assert!(err.to_string().contains(".gz") && err.to_string().contains(".zst"), "{err}");
        assert!(!dest.exists());
    }

    #[tokio::test]
    async fn store_errors_are_retried_until_the_store_is_back_and_never_read_as_not_found() {
        let (store, pg_wal) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let outage = Arc::new(Outage::new(store.path()));
        let repo = Repository::new(outage.clone(), "srv");
        let name = "000000010000000000000009";
        let key = format!("wals/0000000100000000/{name}.zst");
        repo.put(&key, Bytes::from(Compression::Zstd.compress(&vec![3u8; 1 << 20], 3).unwrap())).await.unwrap();
        let dest = pg_wal.path().join("RECOVERYXLOG");
        let patience = Patience {
            total: Duration::from_secs(2),
            first_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
        };
        let options = FetchOptions { spool: pg_wal.path().join("spool"), prefetch: 2, patience };

        // Down for good: every attempt fails, then it gives up (an error, not NotFound)
        // within the time allowed.
        let started = std::time::Instant::now();
        let mut retries = 0;
        let err = fetch_wal_prefetching(&repo, name, &dest, &options, &mut |_, _| retries += 1).await.unwrap_err();
        assert!(matches!(err, FetchError::GaveUp { .. }), "{err}");
        assert!(err.to_string().contains("SlowDown"), "{err}");
        assert!(retries >= 3, "{retries} retries");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        assert!(!dest.exists());

        // Back after a while: the call that was waiting gets the segment.
        let flip = outage.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            flip.failing.store(false, std::sync::atomic::Ordering::SeqCst);
        });
        let fetched = fetch_wal_prefetching(&repo, name, &dest, &options, &mut |_, _| {}).await.unwrap();
        assert!(matches!(fetched, Fetched::Written { bytes: 1_048_576, .. }), "{fetched:?}");

        // A segment truly missing is NotFound at once, without retries.
        let calls = outage.calls.load(std::sync::atomic::Ordering::SeqCst);
        let mut no_retry = |e: &FetchError, _: Duration| panic!("retried a missing segment: {e}");
        let missing = fetch_wal_prefetching(&repo, "00000001000000000000000F", &dest, &options, &mut no_retry);
        assert_eq!(missing.await.unwrap(), Fetched::NotFound);
        assert_eq!(outage.calls.load(std::sync::atomic::Ordering::SeqCst), calls + 1, "one listing");
    }

    #[tokio::test]
    async fn a_prefetch_that_fails_leaves_nothing_to_serve() {
        let (store, pg_wal) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let repo = repo(store.path());
        let names: Vec<String> = (1..=3).map(|n| format!("0000000100000000{n:08X}")).collect();
        for name in &names {
            let key = format!("wals/0000000100000000/{name}.zst");
            repo.put(&key, Bytes::from(Compression::Zstd.compress(&vec![5u8; 1 << 20], 3).unwrap())).await.unwrap();
        }
        // The second is stored corrupt: its prefetch fails and must leave no spool file.
        repo.put(&format!("wals/0000000100000000/{}.zst", names[1]), Bytes::from_static(b"junk")).await.unwrap();
        let options = FetchOptions {
            spool: pg_wal.path().join("spool"),
            prefetch: 2,
            patience: Patience::new(Duration::from_secs(1)),
        };
        let dest = pg_wal.path().join("RECOVERYXLOG");
        fetch_wal_prefetching(&repo, &names[0], &dest, &options, &mut |_, _| {}).await.unwrap();
        assert!(!options.spool.join(&names[1]).exists());
        assert!(options.spool.join(&names[2]).exists());
        let err = fetch_wal_prefetching(&repo, &names[1], &dest, &options, &mut |_, _| {}).await.unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    /// A copy the listing shows but a GET does not find is a store inconsistency, never
    /// "not in the archive" (exit 1 would end recovery there): retried, and once it reads
    /// again, served.
    #[tokio::test]
    async fn a_listed_copy_that_reads_as_missing_is_retried_not_reported_missing() {
        let (store, pg_wal) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let outage = Arc::new(Outage::new(store.path()));
        outage.failing.store(false, std::sync::atomic::Ordering::SeqCst);
        let repo = Repository::new(outage.clone(), "srv");
        let name = "000000010000000000000009";
        repo.put(
            &format!("wals/0000000100000000/{name}.zst"),
            Bytes::from(Compression::Zstd.compress(&vec![3u8; 1 << 20], 3).unwrap()),
        )
        .await
        .unwrap();
        *outage.hidden.lock().unwrap() = vec![format!("{name}.zst")];
        let dest = pg_wal.path().join("RECOVERYXLOG");
        let err = fetch_wal(&repo, name, &dest).await.unwrap_err();
        assert!(err.is_transient() && err.to_string().contains("reading it found nothing"), "{err}");

        let patience = Patience {
            total: Duration::from_secs(5),
            first_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(50),
        };
        let options = FetchOptions { spool: pg_wal.path().join("spool"), prefetch: 0, patience };
        let (heal, healed) = (outage.clone(), std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0)));
        let counted = healed.clone();
        let fetched = fetch_wal_prefetching(&repo, name, &dest, &options, &mut move |_, _| {
            if counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 2 {
                heal.hidden.lock().unwrap().clear();
            }
        })
        .await
        .unwrap();
        assert!(matches!(fetched, Fetched::Written { bytes: 1_048_576, .. }), "{fetched:?}");
        assert!(healed.load(std::sync::atomic::Ordering::SeqCst) >= 3);
    }

    /// A crafted object, in a plain repository anyone may write: a segment that is not a
    /// whole segment, and a zstd bomb, are refused, never written or held whole.
    #[tokio::test]
    async fn a_segment_of_the_wrong_size_or_a_decompression_bomb_is_corrupt() {
        let (store, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let repo = repo(store.path());
        let dest = out.path().join("RECOVERYXLOG");
        let short = "000000010000000000000004";
        repo.put(
            &naming::wal_key(short, Compression::Zstd).unwrap(),
            Bytes::from(Compression::Zstd.compress(&[1u8; 70_000], 3).unwrap()),
        )
        .await
        .unwrap();
        let err = fetch_wal(&repo, short, &dest).await.unwrap_err();
        assert!(
            matches!(err, FetchError::Corrupt { .. }) && err.to_string().contains("not a whole WAL segment"),
            "{err}"
        );
        // 1 GiB and a byte of zeros: a few hundred KiB stored.
        let bomb = "000000010000000000000005";
        let mut encoder = zstd::stream::Encoder::new(Vec::new(), 19).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            std::io::Write::write_all(&mut encoder, &zeros).unwrap();
        }
        std::io::Write::write_all(&mut encoder, &[0]).unwrap();
        let stored = encoder.finish().unwrap();
        assert!(stored.len() < 1 << 20);
        repo.put(&naming::wal_key(bomb, Compression::Zstd).unwrap(), Bytes::from(stored)).await.unwrap();
        let err = fetch_wal(&repo, bomb, &dest).await.unwrap_err();
        assert!(err.to_string().contains("decodes to more than 1073741824 bytes"), "{err}");
        assert!(!dest.exists());

        // Where pgops.json records the segment size, that is the cap, and a segment must
        // be exactly that: 1 MiB here, so a 2 MiB one (a valid size elsewhere) is refused
        // once 1 MiB is decoded.
        let cluster =
            ownership::ClusterIdentity { system_identifier: 3, pg_version_num: 170000, wal_segment_size: 1 << 20 };
        ownership::claim(&repo, &cluster).await.unwrap();
        let larger = "000000010000000000000006";
        let two_mib = Compression::Zstd.compress(&vec![0u8; 2 << 20], 3).unwrap();
        repo.put(&naming::wal_key(larger, Compression::Zstd).unwrap(), Bytes::from(two_mib)).await.unwrap();
        let err = fetch_wal(&repo, larger, &dest).await.unwrap_err();
        assert!(err.to_string().contains("decodes to more than 1048576 bytes"), "{err}");
        assert!(!dest.exists());
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0, "no temporary file left");
    }
}
