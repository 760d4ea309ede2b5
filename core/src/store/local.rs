//! The local-directory driver (`file:///path` repositories): each object is a file, written
//! to a temporary name, fsynced, renamed into place and its directory fsynced, so that an
//! object either exists whole and durable or not at all.

use super::{md5_of, MultipartUpload, ObjectMeta, ObjectStore, StoreError, StoreErrorKind, StoreResult, UploadedPart};
use async_trait::async_trait;
use bytes::Bytes;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore { root: root.into() }
    }

    fn path(&self, operation: &'static str, key: &str) -> StoreResult<PathBuf> {
        if key.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
            return Err(self.error(operation, key, StoreErrorKind::Other, "invalid object key".into()));
        }
        Ok(self.root.join(key))
    }

    fn error(&self, operation: &'static str, key: &str, kind: StoreErrorKind, cause: String) -> StoreError {
        StoreError { operation, location: self.location(key), kind, cause }
    }

    fn io_error(&self, operation: &'static str, key: &str, err: io::Error) -> StoreError {
        let kind = match err.kind() {
            io::ErrorKind::PermissionDenied => StoreErrorKind::AccessDenied,
            _ => StoreErrorKind::Other,
        };
        self.error(operation, key, kind, err.to_string())
    }

    fn check_root(&self, operation: &'static str, key: &str) -> StoreResult<()> {
        if self.root.is_dir() {
            Ok(())
        } else {
            Err(self.error(
                operation,
                key,
                StoreErrorKind::NoSuchBucket,
                format!("directory {} does not exist", self.root.display()),
            ))
        }
    }

    fn write_durably(path: &Path, body: &[u8]) -> io::Result<()> {
        Self::write_durably_with(path, |file| file.write_all(body))
    }

    /// Creates `path` whole or not at all: `fill` writes a temporary file, which is then
    /// fsynced and renamed into place.
    fn write_durably_with(path: &Path, fill: impl FnOnce(&mut std::fs::File) -> io::Result<()>) -> io::Result<()> {
        let dir = path.parent().expect("object paths are below the root");
        create_dirs_durably(dir, &mut sync_dir)?;
        let name = path.file_name().expect("object paths name a file").to_string_lossy();
        let temp = dir.join(format!(
            ".{name}.pgops-tmp.{}.{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut file = std::fs::File::create(&temp)?;
            fill(&mut file)?;
            file.sync_all()?;
            std::fs::rename(&temp, path)?;
            sync_dir(dir)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }

    /// The hidden file holding part `number` of `upload` until it is completed.
    fn part_path(&self, upload: &MultipartUpload, number: u32) -> StoreResult<PathBuf> {
        let (dir, prefix) = self.part_prefix(upload)?;
        Ok(dir.join(format!("{prefix}{number:05}")))
    }

    /// The directory of the upload's parts and the name prefix they share.
    fn part_prefix(&self, upload: &MultipartUpload) -> StoreResult<(PathBuf, String)> {
        let path = self.path("upload part", &upload.key)?;
        let name = path.file_name().expect("object paths name a file").to_string_lossy().into_owned();
        let dir = path.parent().expect("object paths are below the root").to_path_buf();
        Ok((dir, format!(".{name}.pgops-part.{}.", upload.upload_id)))
    }

    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue; // temporary files of writes in progress
            }
            if entry.file_type()?.is_dir() {
                Self::walk(&entry.path(), out)?;
            } else {
                out.push(entry.path());
            }
        }
        Ok(())
    }
}

impl LocalStore {
    async fn remove_parts(&self, upload: &MultipartUpload) -> StoreResult<()> {
        let (dir, prefix) = self.part_prefix(upload)?;
        blocking(move || -> io::Result<()> {
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    std::fs::remove_file(entry.path())?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| self.io_error("remove upload parts", &upload.key, e))
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents, fsyncing the parent of each one it creates: a
/// new directory's entry is only durable once its parent is synced, and without it a
/// power loss can take an "archived" segment's whole folder (`wals/<TLI+log>/`) away.
fn create_dirs_durably(dir: &Path, sync: &mut dyn FnMut(&Path) -> io::Result<()>) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().ok_or_else(|| io::Error::other(format!("cannot create {}", dir.display())))?;
    create_dirs_durably(parent, sync)?;
    match std::fs::create_dir(dir) {
        Ok(()) => sync(parent),
        // Another writer made it meanwhile (and synced its parent).
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs blocking file I/O off the async executor's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("local store I/O task panicked")
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, body: Bytes) -> StoreResult<()> {
        self.check_root("write", key)?;
        let path = self.path("write", key)?;
        blocking(move || Self::write_durably(&path, &body)).await.map_err(|e| self.io_error("write", key, e))
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>> {
        self.check_root("read", key)?;
        let path = self.path("read", key)?;
        match blocking(move || std::fs::read(path)).await {
            Ok(data) => Ok(Some(Bytes::from(data))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error("read", key, e)),
        }
    }

    async fn get_range(&self, key: &str, offset: u64, length: u64) -> StoreResult<Bytes> {
        let path = self.path("read", key)?;
        blocking(move || -> io::Result<Bytes> {
            use std::io::{Read, Seek};
            let mut file = std::fs::File::open(path)?;
            file.seek(io::SeekFrom::Start(offset))?;
            let mut data = Vec::with_capacity(length as usize);
            file.take(length).read_to_end(&mut data)?;
            Ok(Bytes::from(data))
        })
        .await
        .map_err(|e| self.io_error("read", key, e))
    }

    async fn head(&self, key: &str) -> StoreResult<Option<ObjectMeta>> {
        Ok(self.get(key).await?.map(|data| ObjectMeta {
            key: key.to_string(),
            size: data.len() as u64,
            md5: Some(md5_of(&data)),
        }))
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        self.check_root("list", prefix)?;
        // Walk the deepest directory the prefix names, then filter on the whole prefix.
        let dir = match prefix.rfind('/') {
            Some(i) => self.root.join(&prefix[..i]),
            None => self.root.clone(),
        };
        let root = self.root.clone();
        let prefix_owned = prefix.to_string();
        let found = blocking(move || -> io::Result<Vec<ObjectMeta>> {
            let mut files = Vec::new();
            Self::walk(&dir, &mut files)?;
            let mut objects = Vec::new();
            for path in files {
                let key = path.strip_prefix(&root).expect("walked below the root").to_string_lossy().into_owned();
                if key.starts_with(&prefix_owned) {
                    let size = std::fs::metadata(&path)?.len();
                    objects.push(ObjectMeta { key, size, md5: None });
                }
            }
            objects.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(objects)
        })
        .await;
        found.map_err(|e| self.io_error("list", prefix, e))
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let path = self.path("delete", key)?;
        match blocking(move || std::fs::remove_file(path)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_error("delete", key, e)),
        }
    }

    async fn start_multipart(&self, key: &str) -> StoreResult<MultipartUpload> {
        self.check_root("start upload", key)?;
        let path = self.path("start upload", key)?;
        let dir = path.parent().expect("object paths are below the root").to_path_buf();
        blocking(move || create_dirs_durably(&dir, &mut sync_dir))
            .await
            .map_err(|e| self.io_error("start upload", key, e))?;
        let upload_id = format!("{}-{}", std::process::id(), TEMP_COUNTER.fetch_add(1, Ordering::Relaxed));
        Ok(MultipartUpload { key: key.to_string(), upload_id })
    }

    async fn put_part(&self, upload: &MultipartUpload, number: u32, body: Bytes) -> StoreResult<UploadedPart> {
        let path = self.part_path(upload, number)?;
        let size = body.len() as u64;
        let etag = hex::encode(md5_of(&body));
        blocking(move || Self::write_durably(&path, &body))
            .await
            .map_err(|e| self.io_error("upload part", &upload.key, e))?;
        Ok(UploadedPart { number, etag, size })
    }

    async fn complete_multipart(&self, upload: &MultipartUpload, parts: &[UploadedPart]) -> StoreResult<()> {
        let path = self.path("complete upload", &upload.key)?;
        let mut part_paths = Vec::with_capacity(parts.len());
        for part in parts {
            part_paths.push(self.part_path(upload, part.number)?);
        }
        let sources = part_paths.clone();
        blocking(move || {
            Self::write_durably_with(&path, |file| {
                for part in &sources {
                    io::copy(&mut std::fs::File::open(part)?, file)?;
                }
                Ok(())
            })
        })
        .await
        .map_err(|e| self.io_error("complete upload", &upload.key, e))?;
        self.remove_parts(upload).await
    }

    async fn abort_multipart(&self, upload: &MultipartUpload) -> StoreResult<()> {
        self.remove_parts(upload).await
    }

    fn location(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_head_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        store.put("repo/wals/0000000100000000/a.zst", Bytes::from_static(b"hello")).await.unwrap();
        store.put("repo/wals/b", Bytes::from_static(b"xy")).await.unwrap();
        store.put("other/c", Bytes::from_static(b"z")).await.unwrap();

        assert_eq!(store.get("repo/wals/b").await.unwrap().unwrap(), Bytes::from_static(b"xy"));
        assert_eq!(store.get("repo/missing").await.unwrap(), None);
        let meta = store.head("repo/wals/0000000100000000/a.zst").await.unwrap().unwrap();
        assert_eq!((meta.size, meta.md5), (5, Some(md5_of(b"hello"))));

        let keys: Vec<_> = store.list("repo/wals/").await.unwrap().into_iter().map(|m| m.key).collect();
        assert_eq!(keys, ["repo/wals/0000000100000000/a.zst", "repo/wals/b"]);
        let keys: Vec<_> = store.list("repo/wals/00000001").await.unwrap().into_iter().map(|m| m.key).collect();
        assert_eq!(keys, ["repo/wals/0000000100000000/a.zst"]);

        store.delete("repo/wals/b").await.unwrap();
        store.delete("repo/wals/b").await.unwrap();
        assert_eq!(store.get("repo/wals/b").await.unwrap(), None);
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(dir.path().join("repo/wals")).unwrap().count(), 1);
    }

    #[test]
    fn new_directories_are_synced_in_their_parent() {
        let root = tempfile::tempdir().unwrap();
        let mut synced = Vec::new();
        let dir = root.path().join("srv/wals/0000000100000000");
        create_dirs_durably(&dir, &mut |d| {
            synced.push(d.strip_prefix(root.path()).unwrap().to_path_buf());
            Ok(())
        })
        .unwrap();
        assert!(dir.is_dir());
        assert_eq!(synced, [PathBuf::from(""), PathBuf::from("srv"), PathBuf::from("srv/wals")]);
        synced.clear();
        create_dirs_durably(&dir, &mut |d| {
            synced.push(d.to_path_buf());
            Ok(())
        })
        .unwrap();
        assert!(synced.is_empty(), "nothing created, nothing to sync");
    }

    #[tokio::test]
    async fn missing_root_and_bad_keys_are_errors() {
        let store = LocalStore::new("/nonexistent/pgops-test-root");
        let err = store.put("k", Bytes::new()).await.unwrap_err();
        assert_eq!(err.kind, StoreErrorKind::NoSuchBucket);
        assert!(err.to_string().contains("/nonexistent/pgops-test-root"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        assert!(store.put("../escape", Bytes::new()).await.is_err());
    }
}
