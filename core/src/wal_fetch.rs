//! `wal-fetch`: the `restore_command` side of archiving. Finds a WAL file in the
//! repository whatever codec it was stored with, decompresses it, and writes it atomically
//! (temporary file, fsync, rename), so that Postgres never reads a half-written segment.

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
    use crate::repository::RepositoryUrl;
    use crate::store::LocalStore;
    use bytes::Bytes;
    use std::sync::Arc;

    fn repo(dir: &Path) -> Repository {
        Repository::new(Arc::new(LocalStore::new(dir)), "srv", RepositoryUrl::Local { root: dir.into() })
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
}
