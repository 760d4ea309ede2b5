//! The WAL archiver: compress, upload, verify; idempotent for identical content; never
//! overwrites different content; reads ahead the next `.ready` files so that a backlog
//! drains `parallel` uploads at a time while Postgres asks for one file at a time.

use crate::naming::{self, NotAWalFile};
use crate::ownership::{self, ClusterIdentity, OwnershipError};
use crate::pipeline::{self, Compression, KeyRing};
use crate::repository::RepositoryUrl;
use crate::store::{check_stored, ObjectMeta, Repository, S3Options, SentObject, StoreError, StoreErrorKind};
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::task::JoinHandle;

/// Everything the archiver needs from the settings, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSettings {
    pub repository: RepositoryUrl,
    pub s3: S3Options,
    pub compression: Compression,
    /// An effective level, from [`Compression::effective_level`].
    pub level: i32,
    /// Uploads in flight at most, the requested one included.
    pub parallel: usize,
    /// The key ring of an encrypted repository.
    pub encryption: Option<Arc<KeyRing>>,
}

/// One WAL file safely in the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    pub name: String,
    pub location: String,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// The repository already held this exact content (a retry after a crash between the
    /// upload and Postgres' `.done`); nothing was written.
    pub already_present: bool,
}

#[derive(Debug)]
pub enum ArchiveError {
    NotAWalFile(NotAWalFile),
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    Compress(std::io::Error),
    Store(StoreError),
    Ownership(OwnershipError),
    /// The repository holds another content under this name; it is left untouched.
    Conflict {
        location: String,
        detail: String,
    },
    /// What the store holds after the upload is not what was sent.
    Verification {
        location: String,
        detail: String,
    },
    /// An upload task panicked or was cancelled.
    Task(String),
}

impl fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArchiveError::NotAWalFile(e) => e.fmt(f),
            ArchiveError::Read { path, cause } => write!(f, "could not read {}: {cause}", path.display()),
            ArchiveError::Compress(e) => write!(f, "compression failed: {e}"),
            ArchiveError::Store(e) => e.fmt(f),
            ArchiveError::Ownership(e) => e.fmt(f),
            ArchiveError::Conflict { location, detail } => {
                write!(f, "{location} already exists with different content ({detail}); it was not overwritten")
            }
            ArchiveError::Verification { location, detail } => write!(f, "verification of {location} failed: {detail}"),
            ArchiveError::Task(e) => write!(f, "upload task failed: {e}"),
        }
    }
}

impl std::error::Error for ArchiveError {}

impl ArchiveError {
    /// A sentence on what to do, for the HINT of the WARNING.
    pub fn hint(&self) -> String {
        match self {
            ArchiveError::Store(e) => e.hint().to_string(),
            ArchiveError::Ownership(e) => e.hint(),
            ArchiveError::Conflict { .. } => {
                "Another cluster or tool wrote this WAL name. Check that pgops.repository is not shared, and inspect the object before removing it.".into()
            }
            _ => "Archiving is retried by Postgres; the WAL file is kept until it succeeds.".into(),
        }
    }
}

impl From<NotAWalFile> for ArchiveError {
    fn from(e: NotAWalFile) -> Self {
        ArchiveError::NotAWalFile(e)
    }
}

impl From<StoreError> for ArchiveError {
    fn from(e: StoreError) -> Self {
        ArchiveError::Store(e)
    }
}

impl From<OwnershipError> for ArchiveError {
    fn from(e: OwnershipError) -> Self {
        ArchiveError::Ownership(e)
    }
}

type Upload = JoinHandle<Result<Archived, ArchiveError>>;

/// Lives as long as the archiver process (or until the settings change).
pub struct WalArchiver {
    settings: ArchiveSettings,
    repo: Repository,
    cluster: ClusterIdentity,
    owner_confirmed: bool,
    /// Uploads started ahead of Postgres' request, by WAL file name.
    read_ahead: HashMap<String, Upload>,
}

impl WalArchiver {
    /// Must run inside a tokio runtime.
    pub async fn open(settings: ArchiveSettings, cluster: ClusterIdentity) -> WalArchiver {
        let repo = Repository::open(&settings.repository, &settings.s3).await.with_keys(settings.encryption.clone());
        WalArchiver { settings, repo, cluster, owner_confirmed: false, read_ahead: HashMap::new() }
    }

    pub fn settings(&self) -> &ArchiveSettings {
        &self.settings
    }

    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// Uploads started ahead that have not finished yet.
    pub fn in_flight(&self) -> usize {
        self.read_ahead.values().filter(|upload| !upload.is_finished()).count()
    }

    /// Archives the WAL file `name` found at `path` (in `pg_wal`), and starts uploading the
    /// next `.ready` files. Returns only once `name` is stored and verified.
    pub async fn archive(&mut self, name: &str, path: &Path) -> Result<Archived, ArchiveError> {
        naming::classify(name)?;
        if !self.owner_confirmed {
            // Checked until it passes once; a foreign repository is refused on every call.
            ownership::claim(&self.repo, &self.cluster).await?;
            self.owner_confirmed = true;
        }
        let started_ahead = self.read_ahead.remove(name);
        let from_read_ahead = started_ahead.is_some();
        let upload = started_ahead.unwrap_or_else(|| self.spawn_upload(name, path.to_path_buf()));
        if let Some(pg_wal) = path.parent() {
            self.start_read_ahead(name, pg_wal, !upload.is_finished());
        }
        match join(upload).await {
            // A failure from an upload started earlier may be stale (the store may be back):
            // try once more now before reporting it.
            Err(_) if from_read_ahead => join(self.spawn_upload(name, path.to_path_buf())).await,
            result => result,
        }
    }

    fn spawn_upload(&self, name: &str, path: PathBuf) -> Upload {
        let (repo, name) = (self.repo.clone(), name.to_string());
        let (compression, level) = (self.settings.compression, self.settings.level);
        tokio::spawn(async move { upload(&repo, &name, &path, compression, level).await })
    }

    /// Starts uploads of the oldest `.ready` files until `parallel` are in flight.
    fn start_read_ahead(&mut self, requested: &str, pg_wal: &Path, requested_in_flight: bool) {
        let Ok(ready) = ready_files(&pg_wal.join("archive_status")) else { return };
        let waiting: HashSet<&str> = ready.iter().map(String::as_str).collect();
        // Results for files Postgres no longer waits for are of no use.
        self.read_ahead.retain(|name, _| waiting.contains(name.as_str()));
        let mut in_flight = self.in_flight() + usize::from(requested_in_flight);
        for name in &ready {
            if in_flight >= self.settings.parallel {
                break;
            }
            if name != requested && !self.read_ahead.contains_key(name) {
                let upload = self.spawn_upload(name, pg_wal.join(name));
                self.read_ahead.insert(name.clone(), upload);
                in_flight += 1;
            }
        }
    }
}

async fn join(upload: Upload) -> Result<Archived, ArchiveError> {
    upload.await.unwrap_or_else(|e| Err(ArchiveError::Task(e.to_string())))
}

/// The WAL files waiting for archiving (`<name>.ready` in `archive_status`), in the order
/// Postgres archives them.
pub fn ready_files(archive_status: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(archive_status)?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_suffix(".ready").map(str::to_string))
        .filter(|name| naming::classify(name).is_ok())
        .collect();
    names.sort_by(|a, b| naming::archive_order_key(a).cmp(&naming::archive_order_key(b)));
    Ok(names)
}

/// A WAL file read and compressed, ready to upload.
struct Prepared {
    raw: Vec<u8>,
    packed: Vec<u8>,
    sent: SentObject,
}

async fn upload(
    repo: &Repository,
    name: &str,
    path: &Path,
    compression: Compression,
    level: i32,
) -> Result<Archived, ArchiveError> {
    let key = naming::wal_key(name, compression)?;
    let object_name = key.clone();
    let dir = naming::wal_dir(name)?;
    let location = repo.location(&key);
    let read_path = path.to_path_buf();
    let keys = repo.key_ring();
    // Reading and compressing (CPU) overlap the look-up for existing copies (network).
    // The look-up lists the name's prefix, not a HEAD of the exact key: a copy under
    // another codec's suffix (Barman's, or an earlier compression setting) must be found
    // and compared, or the repository would hold two different segments of one name.
    let prepare = tokio::task::spawn_blocking(move || -> Result<Prepared, ArchiveError> {
        let raw = std::fs::read(&read_path).map_err(|cause| ArchiveError::Read { path: read_path, cause })?;
        let packed = pipeline::encode(&raw, &object_name, compression, level, keys.as_deref())
            .map_err(ArchiveError::Compress)?;
        let sent = SentObject::of(&packed);
        Ok(Prepared { raw, packed, sent })
    });
    let (existing, prepared) = tokio::join!(repo.wal_copies(&dir, name), prepare);
    let Prepared { raw, packed, sent } = prepared.map_err(|e| ArchiveError::Task(e.to_string()))??;
    let mut already_archived = None;
    for copy in existing? {
        already_archived = Some(same_content(repo, name, &copy, &raw).await?);
    }
    if let Some(archived) = already_archived {
        return Ok(archived);
    }
    let stored_bytes = packed.len() as u64;
    // `packed` is already the pipeline's output (compressed, and encrypted in an encrypted
    // repository): stored as it is, or it would be encrypted twice.
    repo.put_as_is(&key, Bytes::from(packed)).await?;
    let stored = repo.head(&key).await?.ok_or_else(|| ArchiveError::Verification {
        location: location.clone(),
        detail: "the object is missing right after the upload".into(),
    })?;
    check_stored(&sent, &stored).map_err(|detail| ArchiveError::Verification { location: location.clone(), detail })?;
    Ok(Archived { name: name.to_string(), location, raw_bytes: raw.len() as u64, stored_bytes, already_present: false })
}

/// Success when `existing` holds exactly `raw` (a repeated archive of the same file);
/// otherwise a conflict, and the object stays as it is.
async fn same_content(
    repo: &Repository,
    name: &str,
    existing: &ObjectMeta,
    raw: &[u8],
) -> Result<Archived, ArchiveError> {
    let location = repo.store.location(&existing.key);
    let conflict = |detail: String| ArchiveError::Conflict { location: location.clone(), detail };
    let file = existing.key.rsplit('/').next().unwrap_or_default();
    let codec = Compression::of_copy(file, name).ok_or_else(|| {
        conflict("it is stored with a compression pgops cannot read, so it cannot be compared".into())
    })?;
    let content = match repo.read_object(&existing.key, codec).await {
        Ok(content) => content.ok_or_else(|| conflict("it vanished while being compared".into()))?,
        Err(e) if matches!(e.kind, StoreErrorKind::Undecodable(_)) => return Err(conflict(e.cause)),
        Err(e) => return Err(e.into()),
    };
    if content != raw {
        return Err(conflict(format!("{} bytes stored, {} bytes in the local file", content.len(), raw.len())));
    }
    Ok(Archived {
        name: name.to_string(),
        location,
        raw_bytes: raw.len() as u64,
        stored_bytes: existing.size,
        already_present: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: ClusterIdentity =
        ClusterIdentity { system_identifier: 1, pg_version_num: 150000, wal_segment_size: 1 << 16 };

    struct Fixture {
        _dirs: (tempfile::TempDir, tempfile::TempDir),
        store_root: PathBuf,
        pg_wal: PathBuf,
        settings: ArchiveSettings,
    }

    fn fixture(parallel: usize) -> Fixture {
        let (store, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let pg_wal = data.path().join("pg_wal");
        std::fs::create_dir_all(pg_wal.join("archive_status")).unwrap();
        let settings = ArchiveSettings {
            repository: format!("file://{}", store.path().display()).parse().unwrap(),
            s3: S3Options::default(),
            compression: Compression::Zstd,
            level: 3,
            parallel,
            encryption: None,
        };
        Fixture { store_root: store.path().to_path_buf(), pg_wal, settings, _dirs: (store, data) }
    }

    fn segment(no: u32) -> String {
        format!("0000000100000000{no:08X}")
    }

    /// Writes a segment and marks it ready, as Postgres does.
    fn make_ready(fx: &Fixture, name: &str, fill: u8) -> PathBuf {
        let path = fx.pg_wal.join(name);
        let mut content = vec![0u8; 1 << 16];
        content[..4096].fill(fill);
        std::fs::write(&path, content).unwrap();
        std::fs::write(fx.pg_wal.join("archive_status").join(format!("{name}.ready")), b"").unwrap();
        path
    }

    fn stored(fx: &Fixture, name: &str) -> Vec<u8> {
        let key = naming::wal_key(name, Compression::Zstd).unwrap();
        Compression::Zstd.decompress(&std::fs::read(fx.store_root.join(key)).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn archives_compressed_at_the_barman_path_and_claims_the_repository() {
        let fx = fixture(1);
        let name = segment(1);
        let path = make_ready(&fx, &name, 7);
        let mut archiver = WalArchiver::open(fx.settings.clone(), CLUSTER).await;
        let done = archiver.archive(&name, &path).await.unwrap();
        assert!(!done.already_present);
        assert_eq!(done.raw_bytes, 1 << 16);
        assert!(done.stored_bytes < done.raw_bytes / 10);
        assert!(done.location.ends_with("wals/0000000100000000/000000010000000000000001.zst"), "{}", done.location);
        assert_eq!(stored(&fx, &name), std::fs::read(&path).unwrap());
        assert!(fx.store_root.join(ownership::METADATA_OBJECT).exists());
    }

    #[tokio::test]
    async fn an_encrypted_segment_is_encrypted_once_and_its_repeat_is_recognised() {
        let mut fx = fixture(1);
        let keys_dir = tempfile::tempdir().unwrap();
        let ring = std::sync::Arc::new(crate::pipeline::cipher::test_ring(keys_dir.path(), "key"));
        fx.settings.encryption = Some(ring.clone());
        let name = segment(1);
        let path = make_ready(&fx, &name, 7);
        let mut archiver = WalArchiver::open(fx.settings.clone(), CLUSTER).await;
        let done = archiver.archive(&name, &path).await.unwrap();
        let key = naming::wal_key(&name, Compression::Zstd).unwrap();
        let stored = Bytes::from(std::fs::read(fx.store_root.join(&key)).unwrap());
        assert_eq!(done.stored_bytes, stored.len() as u64);
        let plain = pipeline::decode(stored, &key, Compression::Zstd, Some(&ring)).unwrap();
        assert_eq!(plain, std::fs::read(&path).unwrap());
        assert!(archiver.archive(&name, &path).await.unwrap().already_present);
    }

    #[tokio::test]
    async fn same_content_again_succeeds_different_content_is_refused_and_kept() {
        let fx = fixture(1);
        let name = segment(2);
        let path = make_ready(&fx, &name, 1);
        let mut archiver = WalArchiver::open(fx.settings.clone(), CLUSTER).await;
        archiver.archive(&name, &path).await.unwrap();
        assert!(archiver.archive(&name, &path).await.unwrap().already_present);

        let original = stored(&fx, &name);
        make_ready(&fx, &name, 2);
        let err = archiver.archive(&name, &path).await.unwrap_err();
        assert!(matches!(err, ArchiveError::Conflict { .. }), "{err}");
        assert!(err.to_string().contains("not overwritten"), "{err}");
        assert_eq!(stored(&fx, &name), original);

        // An object that is not even valid compressed data is a conflict too.
        let key = fx.store_root.join(naming::wal_key(&name, Compression::Zstd).unwrap());
        std::fs::write(&key, b"tampered").unwrap();
        let err = archiver.archive(&name, &path).await.unwrap_err();
        assert!(err.to_string().contains("does not decompress"), "{err}");
        assert_eq!(std::fs::read(&key).unwrap(), b"tampered");
    }

    #[tokio::test]
    async fn a_copy_under_another_suffix_counts_and_must_match() {
        let fx = fixture(1);
        let name = segment(3);
        let path = make_ready(&fx, &name, 3);
        let gz = fx.store_root.join(naming::wal_key(&name, Compression::Gzip).unwrap());
        std::fs::create_dir_all(gz.parent().unwrap()).unwrap();
        std::fs::write(&gz, Compression::Gzip.compress(&std::fs::read(&path).unwrap(), 6).unwrap()).unwrap();
        let mut archiver = WalArchiver::open(fx.settings.clone(), CLUSTER).await;
        let same = archiver.archive(&name, &path).await.unwrap();
        assert!(same.already_present && same.location.ends_with(".gz"), "{same:?}");

        make_ready(&fx, &name, 4);
        let err = archiver.archive(&name, &path).await.unwrap_err();
        assert!(matches!(err, ArchiveError::Conflict { .. }), "{err}");
        assert!(!fx.store_root.join(naming::wal_key(&name, Compression::Zstd).unwrap()).exists(), "no second copy");
    }

    #[tokio::test]
    async fn foreign_repository_is_refused_every_time() {
        let fx = fixture(1);
        let name = segment(4);
        let path = make_ready(&fx, &name, 4);
        WalArchiver::open(fx.settings.clone(), CLUSTER).await.archive(&name, &path).await.unwrap();
        let stranger = ClusterIdentity { system_identifier: 99, ..CLUSTER };
        let mut archiver = WalArchiver::open(fx.settings.clone(), stranger).await;
        for _ in 0..2 {
            let err = archiver.archive(&segment(5), &make_ready(&fx, &segment(5), 5)).await.unwrap_err();
            assert!(matches!(err, ArchiveError::Ownership(OwnershipError::Foreign { .. })), "{err}");
        }
        assert!(!fx.store_root.join(naming::wal_key(&segment(5), Compression::Zstd).unwrap()).exists());
    }

    #[tokio::test]
    async fn reads_ahead_the_oldest_ready_files_up_to_parallel() {
        let fx = fixture(3);
        let names: Vec<_> = (1..=6).map(segment).collect();
        let paths: Vec<_> = names.iter().map(|n| make_ready(&fx, n, 9)).collect();
        let mut archiver = WalArchiver::open(fx.settings.clone(), CLUSTER).await;
        archiver.archive(&names[0], &paths[0]).await.unwrap();
        // Two more (parallel 3 with the requested one) were started ahead, not the rest.
        assert_eq!(archiver.read_ahead.len(), 2);
        assert!(archiver.read_ahead.contains_key(&names[1]) && archiver.read_ahead.contains_key(&names[2]));
        for upload in archiver.read_ahead.values_mut() {
            while !upload.is_finished() {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(stored(&fx, &names[2]), std::fs::read(&paths[2]).unwrap());
        // Postgres marks the first one done; asking for the second finds it uploaded.
        std::fs::remove_file(fx.pg_wal.join("archive_status").join(format!("{}.ready", names[0]))).unwrap();
        let second = archiver.archive(&names[1], &paths[1]).await.unwrap();
        assert!(!second.already_present);
        assert!(!archiver.read_ahead.contains_key(&names[1]));
    }

    #[test]
    fn ready_files_come_in_archive_order() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "000000020000000000000003.ready",
            "00000002.history.ready",
            "000000010000000000000002.ready",
            "x.tmp",
            "000000010000000000000001.done",
        ] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        assert_eq!(
            ready_files(dir.path()).unwrap(),
            ["00000002.history", "000000010000000000000002", "000000020000000000000003"]
        );
    }
}
