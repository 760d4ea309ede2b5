//! The local-directory driver (`file:///path` repositories): each object is a file, written
//! to a temporary name, fsynced, renamed into place and its directory fsynced, so that an
//! object either exists whole and durable or not at all.

use super::{
    md5_of, sha256_of, DeleteFailure, ListPage, MultipartUpload, ObjectMeta, ObjectStore, ObjectVersion, StoreError,
    StoreErrorKind, StoreResult, UploadedPart,
};
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

    /// A failed write of `key`, saying so when the cause is that the key is also a folder
    /// of other keys (`k` and `k/x`): a directory tree, unlike S3, cannot hold both.
    fn write_error(&self, operation: &'static str, key: &str, err: io::Error) -> StoreError {
        let mut error = self.io_error(operation, key, err);
        let conflict = if self.root.join(key).is_dir() {
            Some(format!("other objects are stored below {key}/"))
        } else {
            key.match_indices('/')
                .map(|(at, _)| &key[..at])
                .find(|folder| self.root.join(folder).is_file())
                .map(|object| format!("{object} is an object"))
        };
        if let Some(conflict) = conflict {
            error.cause = format!(
                "{conflict}, and a local directory cannot hold an object that is also a folder of other objects ({})",
                error.cause
            );
        }
        error
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

/// One page of a listing from a directory tree, in the order of the keys' bytes (S3's
/// order), reading one directory at a time: memory is bounded by a page and a directory.
struct SortedWalk {
    /// Only keys starting with this are listed.
    prefix: String,
    /// Only keys after this are listed (the last key of the previous page).
    start_after: Option<String>,
    max_keys: usize,
}

impl SortedWalk {
    /// Appends to `out` the objects below `dir`, whose key (with a trailing `/`, or empty
    /// for the root) is `dir_key`; true once `out` holds a full page.
    fn walk(&self, dir: &Path, dir_key: &str, out: &mut Vec<ObjectMeta>) -> io::Result<bool> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        // A directory's keys all start with `name/`: sorting directories by that makes the
        // walk's order the keys' order (`ab.x` comes before `ab/…`).
        let mut children = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue; // temporary files of writes in progress, parts of uploads
            }
            let is_dir = entry.file_type()?.is_dir();
            let key = format!("{dir_key}{name}{}", if is_dir { "/" } else { "" });
            children.push((key, is_dir, entry.path()));
        }
        children.sort();
        for (key, is_dir, path) in children {
            if is_dir {
                let may_hold_listed_keys = key.starts_with(&self.prefix) || self.prefix.starts_with(&key);
                // Every key below is `key` plus more: all of them are at or before
                // `start_after` when it is past `key` without starting with it.
                let all_listed_before =
                    self.start_after.as_deref().is_some_and(|after| after > key.as_str() && !after.starts_with(&key));
                if may_hold_listed_keys && !all_listed_before && self.walk(&path, &key, out)? {
                    return Ok(true);
                }
            } else if key.starts_with(&self.prefix)
                && self.start_after.as_deref().is_none_or(|after| key.as_str() > after)
            {
                let meta = std::fs::metadata(&path)?;
                let modified = meta.modified().ok().map(chrono::DateTime::<chrono::Utc>::from);
                out.push(ObjectMeta { key, size: meta.len(), md5: None, sha256: None, modified, version: None });
                if out.len() >= self.max_keys {
                    return Ok(true);
                }
            }
        }
        Ok(false)
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

/// A file's version: its inode, modification time and size. Every write replaces the file
/// by a rename, which gives it a new inode while the old one is open or not reused.
fn version_of(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("{}:{}.{:09}-{}", meta.ino(), meta.mtime(), meta.mtime_nsec(), meta.len())
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, body: Bytes) -> StoreResult<()> {
        self.check_root("write", key)?;
        let path = self.path("write", key)?;
        blocking(move || Self::write_durably(&path, &body)).await.map_err(|e| self.write_error("write", key, e))
    }

    async fn get_at_most(&self, key: &str, limit: u64) -> StoreResult<Option<Bytes>> {
        self.check_root("read", key)?;
        let path = self.path("read", key)?;
        let read = blocking(move || -> io::Result<Result<Vec<u8>, u64>> {
            use std::io::Read;
            let file = std::fs::File::open(path)?;
            let size = file.metadata()?.len();
            if size > limit {
                return Ok(Err(size));
            }
            let mut data = Vec::with_capacity(size as usize);
            // Bounded also if the file grows meanwhile, and refused then.
            file.take(limit + 1).read_to_end(&mut data)?;
            if data.len() as u64 > limit {
                return Ok(Err(data.len() as u64));
            }
            Ok(Ok(data))
        });
        match read.await {
            Ok(Err(size)) => Err(super::too_large_to_read_whole(self.location(key), size, limit)),
            Ok(Ok(data)) => Ok(Some(Bytes::from(data))),
            // A directory, or a path below a file, is no object (see `write_error`).
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.io_error("read", key, e)),
        }
    }

    async fn get_range(&self, key: &str, offset: u64, length: u64, version: Option<&str>) -> StoreResult<Bytes> {
        let path = self.path("read", key)?;
        let pinned = version.map(str::to_string);
        let read = blocking(move || -> io::Result<Option<Bytes>> {
            use std::io::{Read, Seek};
            let mut file = std::fs::File::open(path)?;
            // Objects are replaced by rename: the open file is one version throughout.
            if let Some(pinned) = pinned {
                if pinned != version_of(&file.metadata()?) {
                    return Ok(None);
                }
            }
            file.seek(io::SeekFrom::Start(offset))?;
            let mut data = Vec::with_capacity(length as usize);
            file.take(length).read_to_end(&mut data)?;
            Ok(Some(Bytes::from(data)))
        })
        .await
        .map_err(|e| self.io_error("read", key, e))?;
        read.ok_or_else(|| StoreError {
            operation: "read",
            location: self.location(key),
            kind: StoreErrorKind::Changed,
            cause: format!(
                "the file is no longer version {} (rewritten since it was listed)",
                version.unwrap_or_default()
            ),
        })
    }

    async fn version(&self, key: &str) -> StoreResult<Option<ObjectVersion>> {
        let path = self.path("stat", key)?;
        match blocking(move || std::fs::metadata(path)).await {
            Ok(meta) => Ok(Some(ObjectVersion { size: meta.len(), version: Some(version_of(&meta)) })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error("stat", key, e)),
        }
    }

    async fn head(&self, key: &str) -> StoreResult<Option<ObjectMeta>> {
        Ok(self.get(key).await?.map(|data| ObjectMeta {
            key: key.to_string(),
            size: data.len() as u64,
            md5: Some(md5_of(&data)),
            sha256: Some(sha256_of(&data)),
            modified: None,
            version: None,
        }))
    }

    async fn list_page(&self, prefix: &str, continuation: Option<&str>, max_keys: usize) -> StoreResult<ListPage> {
        self.check_root("list", prefix)?;
        // Walk the deepest directory the prefix names; the walk filters on the whole prefix.
        let dir_key = prefix.rfind('/').map_or("", |i| &prefix[..=i]);
        let walk = SortedWalk {
            prefix: prefix.to_string(),
            start_after: continuation.map(str::to_string),
            max_keys: max_keys.max(1),
        };
        let dir = self.root.join(dir_key);
        let dir_key = dir_key.to_string();
        let found = blocking(move || -> io::Result<Vec<ObjectMeta>> {
            let mut objects = Vec::new();
            walk.walk(&dir, &dir_key, &mut objects)?;
            Ok(objects)
        })
        .await
        .map_err(|e| self.io_error("list", prefix, e))?;
        // A full page may have more after it; the next starts after its last key.
        let continuation = (found.len() >= max_keys.max(1)).then(|| found.last().map(|o| o.key.clone())).flatten();
        Ok(ListPage { objects: found, continuation })
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let path = self.path("delete", key)?;
        match blocking(move || std::fs::remove_file(path)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_error("delete", key, e)),
        }
    }

    async fn delete_many(&self, keys: &[String]) -> StoreResult<Vec<DeleteFailure>> {
        let mut paths = Vec::with_capacity(keys.len());
        let mut failures = Vec::new();
        for key in keys {
            match self.path("delete", key) {
                Ok(path) => paths.push((key.clone(), path)),
                Err(e) => failures.push(DeleteFailure { key: key.clone(), cause: e.cause }),
            }
        }
        let (refused, synced) = blocking(move || {
            let mut refused = Vec::new();
            let mut dirs = std::collections::BTreeSet::new();
            for (key, path) in paths {
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        dirs.insert(path.parent().expect("object paths are below the root").to_path_buf());
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => refused.push(DeleteFailure { key, cause: e.to_string() }),
                }
            }
            // A removal is durable once its directory is synced: once per directory.
            (refused, dirs.iter().try_for_each(|dir| sync_dir(dir)))
        })
        .await;
        synced.map_err(|e| self.io_error("delete", keys.first().map_or("", String::as_str), e))?;
        failures.extend(refused);
        Ok(failures)
    }

    async fn start_multipart(&self, key: &str) -> StoreResult<MultipartUpload> {
        self.check_root("start upload", key)?;
        let path = self.path("start upload", key)?;
        let dir = path.parent().expect("object paths are below the root").to_path_buf();
        blocking(move || create_dirs_durably(&dir, &mut sync_dir))
            .await
            .map_err(|e| self.write_error("start upload", key, e))?;
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
        let mut numbers: Vec<u32> = parts.iter().map(|part| part.number).collect();
        numbers.sort_unstable();
        let mut part_paths = Vec::with_capacity(parts.len());
        for number in numbers {
            part_paths.push(self.part_path(upload, number)?);
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
        .map_err(|e| self.write_error("complete upload", &upload.key, e))?;
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

    /// A key that is also a folder of other keys is refused with an error that says so,
    /// in either order, and the object already there stays.
    #[tokio::test]
    async fn a_key_that_is_also_a_folder_is_refused_with_a_clear_cause() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        store.put("r/object", Bytes::from_static(b"kept")).await.unwrap();
        let err = store.put("r/object/below", Bytes::from_static(b"x")).await.unwrap_err();
        assert!(err.cause.starts_with("r/object is an object, and a local directory cannot hold"), "{err}");
        let err = store.start_multipart("r/object/below").await.unwrap_err();
        assert!(err.cause.starts_with("r/object is an object"), "{err}");
        store.put("r/folder/below", Bytes::from_static(b"kept")).await.unwrap();
        let err = store.put("r/folder", Bytes::from_static(b"x")).await.unwrap_err();
        assert!(err.cause.starts_with("other objects are stored below r/folder/"), "{err}");
        assert_eq!(store.get("r/object").await.unwrap().as_deref(), Some(&b"kept"[..]));
        assert_eq!(store.get("r/folder/below").await.unwrap().as_deref(), Some(&b"kept"[..]));
        assert_eq!(store.get("r/folder").await.unwrap(), None, "a folder is no object");
        assert_eq!(store.get("r/object/below").await.unwrap(), None, "nothing is below an object");
    }

    /// Pages of two keys at a time list every key once, in S3's order (`ab.x` before
    /// `ab/…`, which a plain directory walk gets wrong), within the prefix only.
    #[tokio::test]
    async fn listings_come_in_pages_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let keys = ["r/ab.x", "r/ab/1", "r/ab/2", "r/ab/c/3", "r/abc", "r/b", "s/other"];
        for key in keys.iter().rev() {
            store.put(key, Bytes::from(key.to_string())).await.unwrap();
        }
        let mut listed = Vec::new();
        let mut continuation = None;
        let mut pages = 0;
        loop {
            let page = store.list_page("r/", continuation.as_deref(), 2).await.unwrap();
            assert!(page.objects.len() <= 2);
            pages += 1;
            listed.extend(page.objects.into_iter().map(|o| (o.key, o.size)));
            match page.continuation {
                Some(next) => continuation = Some(next),
                None => break,
            }
        }
        let expected: Vec<_> = keys[..6].iter().map(|k| (k.to_string(), k.len() as u64)).collect();
        assert_eq!(listed, expected);
        assert!(pages >= 3, "{pages} pages");
        let mut sorted = listed.clone();
        sorted.sort();
        assert_eq!(listed, sorted, "S3's order: by the keys' bytes");

        let under: Vec<_> = store.list("r/ab").await.unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(under, ["r/ab.x", "r/ab/1", "r/ab/2", "r/ab/c/3", "r/abc"]);
        assert!(store.list("nothing/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn batch_deletes_remove_each_file_and_skip_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        for key in ["r/a/1", "r/a/2", "r/b/3", "r/keep"] {
            store.put(key, Bytes::from_static(b"x")).await.unwrap();
        }
        let keys: Vec<String> = ["r/a/1", "r/a/2", "r/b/3", "r/missing", "r/../escape"].map(String::from).into();
        let failures = store.delete_many(&keys).await.unwrap();
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert_eq!(failures[0].key, "r/../escape");
        let left: Vec<_> = store.list("r/").await.unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(left, ["r/keep"]);
    }

    /// A crafted object too large to read whole (a sparse 1 GiB + 1 byte file here) is
    /// refused from its size, before anything is read.
    #[tokio::test]
    async fn an_object_too_large_to_read_whole_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        std::fs::create_dir_all(dir.path().join("r")).unwrap();
        let huge = std::fs::File::create(dir.path().join("r/pgops.json")).unwrap();
        huge.set_len(crate::store::WHOLE_GET_LIMIT + 1).unwrap();
        let err = store.get("r/pgops.json").await.unwrap_err();
        assert!(matches!(err.kind, StoreErrorKind::Undecodable(_)), "{err}");
        assert!(err.to_string().contains("more than the 1048576 KiB pgops reads of such an object"), "{err}");
        // Metadata (read on every wal-fetch and inside Postgres) has a limit of its own.
        huge.set_len(crate::store::METADATA_LIMIT + 1).unwrap();
        let repo = crate::store::Repository::new(std::sync::Arc::new(store), "r");
        let err = crate::ownership::owner(&repo).await.unwrap_err();
        assert!(err.to_string().contains("more than the 1024 KiB pgops reads of such an object"), "{err}");
        huge.set_len(crate::store::METADATA_LIMIT).unwrap();
        assert!(!repo.get_as_is("pgops.json").await.unwrap().unwrap().is_empty());
    }
}
