//! `wal-fetch`: the `restore_command` side of archiving. Finds a WAL file in the
//! repository whatever codec it was stored with, decompresses it, and writes it atomically
//! (temporary file, fsync, rename), so that Postgres never reads a half-written segment.
//!
//! Prefetch (Barman's model): when the requested segment is not in the spool, it is fetched,
//! then the next N segments are fetched concurrently into the spool; the next calls are
//! served from there by a rename, without a round trip each.

use crate::compression::Compression;
use crate::naming::{self, NotAWalFile};
use crate::store::{ObjectMeta, Repository, StoreError};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

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
    /// The stored object is not valid data for its codec.
    Corrupt {
        location: String,
        cause: std::io::Error,
    },
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::NotAWalFile(e) => e.fmt(f),
            FetchError::Store(e) => write!(f, "{e}. {}", e.hint()),
            FetchError::Corrupt { location, cause } => write!(f, "{location} is corrupt: {cause}"),
            FetchError::Write { path, cause } => write!(f, "could not write {}: {cause}", path.display()),
        }
    }
}

impl std::error::Error for FetchError {}

impl From<StoreError> for FetchError {
    fn from(e: StoreError) -> Self {
        FetchError::Store(e)
    }
}

/// The object holding `name`, under any codec's suffix (Barman and pgops may have written
/// it with different compression settings).
pub async fn find_wal(repo: &Repository, name: &str) -> Result<Option<ObjectMeta>, FetchError> {
    let dir = naming::wal_dir(name).map_err(FetchError::NotAWalFile)?;
    let objects = repo.list(&format!("{dir}{name}")).await?;
    Ok(objects.into_iter().find(|object| {
        let file = object.key.rsplit('/').next().unwrap_or_default();
        Compression::split_file_name(file).0 == name
    }))
}

/// Fetches WAL file `name` into `dest`.
pub async fn fetch_wal(repo: &Repository, name: &str, dest: &Path) -> Result<Fetched, FetchError> {
    let Some(object) = find_wal(repo, name).await? else { return Ok(Fetched::NotFound) };
    let location = repo.store.location(&object.key);
    // Listed a moment ago: gone now means removed meanwhile, which is "not found" too.
    let Some(body) = repo.store.get(&object.key).await? else { return Ok(Fetched::NotFound) };
    let (_, codec) = Compression::split_file_name(&object.key);
    let content = codec.decompress(&body).map_err(|cause| FetchError::Corrupt { location: location.clone(), cause })?;
    write_atomically(dest, &content).map_err(|cause| FetchError::Write { path: dest.to_path_buf(), cause })?;
    Ok(Fetched::Written { location, bytes: content.len() as u64 })
}

/// Fetches `name` into `dest`, serving it from `spool` when a previous call prefetched it;
/// otherwise fetches it and then the `prefetch` segments after it into `spool`. The spool
/// must be on the same file system as `dest` (the hand-over is a rename).
pub async fn fetch_wal_prefetching(
    repo: &Repository,
    name: &str,
    dest: &Path,
    spool: &Path,
    prefetch: usize,
) -> Result<Fetched, FetchError> {
    let spooled = spool.join(name);
    if let Ok(meta) = std::fs::metadata(&spooled) {
        std::fs::rename(&spooled, dest).map_err(|cause| FetchError::Write { path: dest.to_path_buf(), cause })?;
        return Ok(Fetched::Written { location: spooled.display().to_string(), bytes: meta.len() });
    }
    let fetched = fetch_wal(repo, name, dest).await?;
    let Fetched::Written { bytes: segment_size, .. } = fetched else { return Ok(fetched) };
    if prefetch == 0 || naming::next_segment(name, segment_size).is_none() {
        return Ok(fetched);
    }
    std::fs::create_dir_all(spool).map_err(|cause| FetchError::Write { path: spool.to_path_buf(), cause })?;
    remove_passed(spool, name);
    let following =
        std::iter::successors(naming::next_segment(name, segment_size), |n| naming::next_segment(n, segment_size));
    let mut fetches = tokio::task::JoinSet::new();
    for next in following.take(prefetch) {
        let (repo, into) = (repo.clone(), spool.join(&next));
        // A failed prefetch costs nothing but the round trip the next call makes anyway.
        fetches.spawn(async move { fetch_wal(&repo, &next, &into).await.ok() });
    }
    fetches.join_all().await;
    Ok(fetched)
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

fn write_atomically(dest: &Path, content: &[u8]) -> std::io::Result<()> {
    let file_name = dest.file_name().ok_or_else(|| std::io::Error::other("the destination names no file"))?;
    let temp = dest.with_file_name(format!(".{}.pgops-tmp", file_name.to_string_lossy()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(content)?;
        file.sync_all()?;
        std::fs::rename(&temp, dest)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let segment = vec![7u8; 70_000];
        let gz = Compression::Gzip.compress(&segment, 6).unwrap();
        repo.put("wals/0000000100000000/000000010000000000000003.gz", Bytes::from(gz)).await.unwrap();
        // A backup history file shares the segment's prefix and must not be taken for it.
        repo.put("wals/0000000100000000/000000010000000000000003.00000028.backup", Bytes::from_static(b"x"))
            .await
            .unwrap();

        let dest = out.path().join("RECOVERYXLOG");
        let fetched = fetch_wal(&repo, "000000010000000000000003", &dest).await.unwrap();
        assert!(matches!(fetched, Fetched::Written { bytes: 70_000, .. }), "{fetched:?}");
        assert_eq!(std::fs::read(&dest).unwrap(), segment);
        assert_eq!(fetch_wal(&repo, "000000010000000000000004", &dest).await.unwrap(), Fetched::NotFound);
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
    }

    #[tokio::test]
    async fn prefetches_the_next_segments_and_serves_them_from_the_spool() {
        let (store, pg_wal) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let repo = repo(store.path());
        let segment_size = 1 << 16;
        let names: Vec<String> = (1..=6).map(|n| format!("0000000100000000{n:08X}")).collect();
        for (i, name) in names.iter().enumerate() {
            let content = vec![i as u8; segment_size];
            let key = format!("wals/0000000100000000/{name}.zst");
            repo.put(&key, Bytes::from(Compression::Zstd.compress(&content, 3).unwrap())).await.unwrap();
        }
        let (dest, spool) = (pg_wal.path().join("RECOVERYXLOG"), pg_wal.path().join("pgops-prefetch"));
        let spooled = || -> Vec<String> {
            let mut v: Vec<_> =
                std::fs::read_dir(&spool).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            v.sort();
            v
        };

        fetch_wal_prefetching(&repo, &names[0], &dest, &spool, 3).await.unwrap();
        assert_eq!(spooled(), names[1..4]);
        // Served from the spool: the repository copy is gone and it still arrives, intact.
        std::fs::remove_file(store.path().join(format!("srv/wals/0000000100000000/{}.zst", names[1]))).unwrap();
        let served = fetch_wal_prefetching(&repo, &names[1], &dest, &spool, 3).await.unwrap();
        assert!(matches!(served, Fetched::Written { .. }));
        assert_eq!(std::fs::read(&dest).unwrap(), vec![1u8; segment_size]);
        assert_eq!(spooled(), names[2..4]);
        // A miss further on drops what was passed and prefetches past the last segment
        // (not found there is fine).
        fetch_wal_prefetching(&repo, &names[4], &dest, &spool, 3).await.unwrap();
        assert_eq!(spooled(), names[5..6]);
    }
}
