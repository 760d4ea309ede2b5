//! The WAL archiver: compress, upload, verify; idempotent for identical content; never
//! overwrites different content; reads ahead the next `.ready` files so that a backlog
//! drains `parallel` uploads at a time while Postgres asks for one file at a time.

use crate::naming::{self, NotAWalFile};
use crate::ownership::{self, ClusterIdentity, OwnershipError};
use crate::pipeline::{Compression, EncodeWriter, KeyRing};
use crate::repository::RepositoryUrl;
use crate::store::reader::{decode_into, DecodeIntoError, SameAs};
use crate::store::writer::{self, ObjectWriter};
use crate::store::{ObjectMeta, Repository, S3Options, StoreError, StoreErrorKind};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::runtime::Handle;
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

/// The parts a WAL object is sent in. A 16 MiB segment nearly always compresses into one
/// part (one PUT); a larger one (`initdb --wal-segsize` up to 1 GiB) goes up in parts,
/// [`PARTS_IN_FLIGHT`] at a time, each retried on its own: an upload holds about
/// part size × (parts in flight + 1) of memory whatever the segment size.
const PART_SIZE: usize = 8 << 20;
const PARTS_IN_FLIGHT: usize = 2;
/// How much of the local file is read at a time.
const READ_SIZE: usize = 1 << 20;

async fn upload(
    repo: &Repository,
    name: &str,
    path: &Path,
    compression: Compression,
    level: i32,
) -> Result<Archived, ArchiveError> {
    let key = naming::wal_key(name, compression)?;
    let dir = naming::wal_dir(name)?;
    // The look-up lists the name's prefix, not a HEAD of the exact key: a copy under
    // another codec's suffix (Barman's, or an earlier compression setting) must be found
    // and compared, or the repository would hold two different segments of one name.
    let existing = repo.wal_copies(&dir, name).await?;
    let (repo, name, path) = (repo.clone(), name.to_string(), path.to_path_buf());
    let runtime = Handle::current();
    let streamed = tokio::task::spawn_blocking(move || {
        let mut compared = Vec::with_capacity(existing.len());
        for copy in &existing {
            compared.push(same_content(&repo, &runtime, &name, copy, &path)?);
        }
        match compared.pop() {
            Some(already_archived) => Ok(already_archived),
            None => stream_upload(&repo, &runtime, &name, &key, &path, compression, level),
        }
    });
    streamed.await.map_err(|e| ArchiveError::Task(e.to_string()))?
}

/// Reads the file at `path` piece by piece through the pipeline (compressed, encrypted in
/// an encrypted repository) into the object `key`, and checks what the store then holds.
/// Blocking.
fn stream_upload(
    repo: &Repository,
    runtime: &Handle,
    name: &str,
    key: &str,
    path: &Path,
    compression: Compression,
    level: i32,
) -> Result<Archived, ArchiveError> {
    let location = repo.location(key);
    let read_error = |cause| ArchiveError::Read { path: path.to_path_buf(), cause };
    let mut file = File::open(path).map_err(read_error)?;
    let sink = ObjectWriter::new(repo, key.to_string(), runtime.clone(), PART_SIZE, PARTS_IN_FLIGHT);
    let failure = sink.failure();
    let mut encoder =
        EncodeWriter::new(sink, key, compression, level, 0, repo.keys()).map_err(ArchiveError::Compress)?;
    // A failed write is the store's error when the sink met one, else the encoder's.
    let write_error = |e: std::io::Error| writer::take_failure(&failure).map_or(ArchiveError::Compress(e), Into::into);
    let mut buffer = vec![0u8; READ_SIZE];
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                writer::abandon(encoder);
                return Err(read_error(e));
            }
        };
        if let Err(e) = encoder.write_all(&buffer[..n]) {
            writer::abandon(encoder);
            return Err(write_error(e));
        }
    }
    let raw_bytes = encoder.plain_bytes();
    let sink = encoder.finish().map_err(write_error)?;
    let stored_bytes = sink.finish().map_err(|e| match e.kind {
        StoreErrorKind::Integrity => ArchiveError::Verification { location: location.clone(), detail: e.cause },
        _ => ArchiveError::Store(e),
    })?;
    Ok(Archived { name: name.to_string(), location, raw_bytes, stored_bytes, already_present: false })
}

/// Success when `existing` holds exactly the file at `path` (a repeated archive of the
/// same file); otherwise a conflict, and the object stays as it is. Both are read piece
/// by piece; the stored one is refused once it decodes to more than the local file.
/// Blocking.
fn same_content(
    repo: &Repository,
    runtime: &Handle,
    name: &str,
    existing: &ObjectMeta,
    path: &Path,
) -> Result<Archived, ArchiveError> {
    let location = repo.store.location(&existing.key);
    let conflict = |detail: String| ArchiveError::Conflict { location: location.clone(), detail };
    let read_error = |cause| ArchiveError::Read { path: path.to_path_buf(), cause };
    let file = existing.key.rsplit('/').next().unwrap_or_default();
    let codec = Compression::of_copy(file, name).ok_or_else(|| {
        conflict("it is stored with a compression pgops cannot read, so it cannot be compared".into())
    })?;
    let local = File::open(path).map_err(read_error)?;
    let local_size = local.metadata().map_err(read_error)?.len();
    let mut same = SameAs::new(BufReader::with_capacity(READ_SIZE, local));
    let relative = repo.relative(&existing.key).unwrap_or(&existing.key);
    let stored_size = match decode_into(repo, runtime, relative, codec, local_size, &mut same) {
        Ok(Some(size)) => size,
        Ok(None) => return Err(conflict("it vanished while being compared".into())),
        Err(DecodeIntoError::Store(e)) if matches!(e.kind, StoreErrorKind::Undecodable(_)) => {
            return Err(conflict(e.cause))
        }
        Err(DecodeIntoError::Store(e)) => return Err(e.into()),
        Err(DecodeIntoError::Sink(e)) => {
            return Err(match same.differs_at {
                Some(at) => conflict(format!("the stored content differs from the local file from byte {at}")),
                None => read_error(e),
            })
        }
    };
    if stored_size != local_size || !same.local_is_exhausted().map_err(read_error)? {
        return Err(conflict(format!("{stored_size} bytes stored, {local_size} bytes in the local file")));
    }
    Ok(Archived {
        name: name.to_string(),
        location,
        raw_bytes: local_size,
        stored_bytes: existing.size,
        already_present: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline;
    use bytes::Bytes;

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

    /// A segment larger than a part (1 GiB segments, or incompressible WAL) is streamed up in
    /// parts; archived again it is recognised, and a change anywhere in it is a conflict.
    #[tokio::test]
    async fn a_segment_larger_than_a_part_goes_up_in_parts_and_is_compared_piece_by_piece() {
        let mut fx = fixture(1);
        fx.settings.compression = Compression::None;
        let name = segment(6);
        let path = fx.pg_wal.join(&name);
        let content: Vec<u8> = (0..(2 * PART_SIZE + 12_345)).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let mut archiver = WalArchiver::open(fx.settings.clone(), CLUSTER).await;
        let done = archiver.archive(&name, &path).await.unwrap();
        assert_eq!((done.raw_bytes, done.stored_bytes), (content.len() as u64, content.len() as u64));
        let key = fx.store_root.join(naming::wal_key(&name, Compression::None).unwrap());
        assert!(std::fs::read(&key).unwrap() == content, "stored whole and in order");
        assert!(archiver.archive(&name, &path).await.unwrap().already_present);

        let mut changed = content.clone();
        changed[PART_SIZE + 3] ^= 1;
        std::fs::write(&path, &changed).unwrap();
        let err = archiver.archive(&name, &path).await.unwrap_err();
        assert!(err.to_string().contains(&format!("from byte {}", PART_SIZE + 3)), "{err}");
        std::fs::write(&path, &content[..content.len() - 1]).unwrap();
        let err = archiver.archive(&name, &path).await.unwrap_err();
        assert!(matches!(err, ArchiveError::Conflict { .. }), "a shorter local file: {err}");
        assert!(std::fs::read(&key).unwrap() == content, "never overwritten");
    }

    /// A stored copy that decodes to more than the local file (a zstd bomb in the
    /// repository) is a conflict found after reading one file's worth, not memory exhausted.
    #[tokio::test]
    async fn a_stored_copy_that_decodes_past_the_local_file_is_refused_early() {
        let fx = fixture(1);
        let name = segment(7);
        let path = make_ready(&fx, &name, 0);
        let bomb = Compression::Zstd.compress(&vec![0u8; 64 << 20], 19).unwrap();
        let key = fx.store_root.join(naming::wal_key(&name, Compression::Zstd).unwrap());
        std::fs::create_dir_all(key.parent().unwrap()).unwrap();
        std::fs::write(&key, &bomb).unwrap();
        let mut archiver = WalArchiver::open(fx.settings.clone(), CLUSTER).await;
        let err = archiver.archive(&name, &path).await.unwrap_err();
        assert!(matches!(err, ArchiveError::Conflict { .. }), "{err}");
        assert!(err.to_string().contains("decodes to more than 65536 bytes"), "{err}");
        assert_eq!(std::fs::read(&key).unwrap(), bomb);
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
