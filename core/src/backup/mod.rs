//! Base backups, Barman Cloud's layout: `<repository>/base/<backup_id>/` holds
//! `backup.info`, `data.tar[.ext]` (split into `data_0001.tar…` past a maximum size), one
//! `<tablespace oid>.tar[.ext]` per tablespace, a PostgreSQL `backup_manifest` and
//! pgops' own `pgops-backup.json`.
//!
//! [`run_backup`] drives one backup. What only Postgres can do (pg_backup_start/stop,
//! progress reporting, noticing a shutdown) goes through [`BackupHost`], always from the
//! calling thread; reading, compressing and uploading files runs on a thread of its own,
//! which never calls the host.

pub mod catalog;
pub mod error;
pub mod info;
pub mod manifest;
pub mod owner;
pub mod queries;
pub mod upload;
pub mod walk;

use crate::naming::{self, Lsn, SegmentPosition, Timeline, WalSegment};
use crate::ownership::{self, ClusterIdentity};
use crate::store::Repository;
use chrono::{DateTime, Utc};
pub use error::{AnswerError, BackupError, HostError};
use info::{BackupInfo, BackupStatus, Tablespace};
use manifest::{ManifestFile, WalRange};
use serde::Serialize;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use upload::{BackupFileReader, StoredObject, StreamControl, TarUpload, UploadSettings};
use walk::{Entry, EntryKind};

/// The file Postgres reads last at startup; copied last, as pg_basebackup and Barman do.
const PG_CONTROL: &str = "global/pg_control";
/// pgops' metadata object, beside Barman's.
pub const PGOPS_METADATA: &str = "pgops-backup.json";

/// `backup_id`: the UTC start time, as Barman names backups.
pub fn backup_id(at: DateTime<Utc>) -> String {
    at.format("%Y%m%dT%H%M%S").to_string()
}

/// Barman's timestamp form.
pub fn barman_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string()
}

/// A backup's id: the name of its directory under `base/`. Barman Cloud and pgops name a
/// backup after its UTC start time (`%Y%m%dT%H%M%S`), so ids sort in the order backups
/// started; any single directory name is accepted, as Barman's catalog does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct BackupId(String);

/// A text that cannot name a backup directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not a backup id: a backup id is one directory name under base/, such as 20261125T020000")]
pub struct NotABackupId(pub String);

impl std::str::FromStr for BackupId {
    type Err = NotABackupId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() || text == "." || text == ".." || text.contains('/') {
            return Err(NotABackupId(text.to_string()));
        }
        Ok(BackupId(text.to_string()))
    }
}

impl BackupId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BackupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `base/<backup_id>` directory of a backup, relative to the repository.
pub fn backup_dir(backup_id: &str) -> String {
    format!("base/{backup_id}")
}

/// The cluster being backed up.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    pub system_identifier: u64,
    pub server_version_num: u32,
    pub data_directory: PathBuf,
    pub config_file: String,
    pub hba_file: String,
    pub ident_file: String,
    pub segment_size: u64,
    pub data_checksums: bool,
    pub cluster_size: u64,
}

/// A WAL position as Postgres reports it, with its segment file and offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalPosition {
    pub lsn: String,
    pub wal: String,
    pub offset: u64,
    pub timeline: u32,
    pub time: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct BackupStop {
    pub end: WalPosition,
    pub backup_label: String,
    pub tablespace_map: String,
    /// `pg_current_snapshot()` (`xmin:xmax:xip,…`) taken right after `pg_backup_stop`, so a
    /// restore can tell whether recovery from this backup can reach a transaction.
    pub end_snapshot: Option<String>,
}

/// `pg_stat_progress_basebackup`'s phases, numbered as Postgres numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    WaitCheckpoint = 1,
    EstimateSize = 2,
    Stream = 3,
    WaitWalArchive = 4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub total: Option<u64>,
    pub streamed: u64,
    pub tablespaces_total: u64,
    pub tablespaces_streamed: u64,
}

/// What a backup needs from Postgres. Every call comes from the thread running
/// [`run_backup`].
pub trait BackupHost {
    /// Non-exclusive `pg_backup_start`.
    fn start_backup(&mut self, label: &str) -> Result<WalPosition, HostError>;
    /// The tablespaces, asked after `start_backup`: pg_backup_start's checkpoint can take
    /// minutes, and a tablespace created meanwhile is in its `tablespace_map`.
    fn tablespaces(&mut self) -> Result<Vec<Tablespace>, HostError>;
    /// `pg_backup_stop` without waiting for WAL archiving: [`run_backup`] waits for the
    /// backup's last segment in the repository itself, with a deadline, answering
    /// shutdown meanwhile (Postgres' own wait has neither).
    fn stop_backup(&mut self) -> Result<BackupStop, HostError>;
    /// Ends a started backup that failed (`pg_backup_stop` without waiting for WAL).
    fn abort_backup(&mut self);
    fn progress(&mut self, phase: Phase, progress: Progress);
    /// Sleeps a little (for progress updates); [`HostError::Stop`] with the reason when the
    /// backup must stop now (shutdown, cancel).
    fn wait(&mut self) -> Result<(), HostError>;
}

/// Everything about the backup to take.
pub struct BackupJob {
    pub backup_id: String,
    pub server_name: String,
    pub cluster: ClusterInfo,
    pub upload: UploadSettings,
    /// This cluster instance, recorded with the backup (see [`owner`]).
    pub owner: owner::BackupOwner,
    /// How long the backup's last WAL segment may take to reach the repository after
    /// `pg_backup_stop` before the backup is FAILED (pgBackRest's `archive-timeout`).
    pub archive_timeout: Duration,
    pub runtime: Handle,
    /// Run first on the streaming thread (the extension blocks signals there).
    pub thread_start: fn(),
}

/// A failed backup: why, and whether the FAILED status reached the store (if not, the
/// caller retries [`record`] with `unrecorded` later).
#[derive(Debug, Clone)]
pub struct BackupFailure {
    pub error: BackupError,
    pub unrecorded: Option<Box<BackupInfo>>,
}

/// pgops' own metadata object.
#[derive(Debug, Serialize)]
struct PgopsMetadata<'a> {
    pgops_version: &'a str,
    backup_id: &'a str,
    compression: &'a str,
    /// See [`BackupStop::end_snapshot`]; read by `pgops restore --target-xid`.
    end_snapshot: Option<&'a str>,
    archives: Vec<ArchiveRecord<'a>>,
    files: Vec<FileRecord<'a>>,
}

#[derive(Debug, Serialize)]
struct ArchiveRecord<'a> {
    name: &'a str,
    stored_bytes: u64,
    tar_bytes: u64,
}

#[derive(Debug, Serialize)]
struct FileRecord<'a> {
    path: &'a str,
    size: u64,
    crc32c: String,
}

/// The longest a `backup.info` write may take. The worker waits for it on its main
/// thread, where it cannot answer a shutdown; a FAILED status that did not make it is
/// written later (by the caller, or as "interrupted" by the next worker).
const RECORD_TIME: Duration = Duration::from_secs(10);

/// How long a stopping backup waits for its streaming thread to notice; a thread stuck in
/// a store call is left behind (the process is exiting, or the store times it out).
const STREAM_STOP_TIME: Duration = Duration::from_secs(5);

/// Writes `backup.info`, once the repository's record admits this writer: a status written
/// late (a FAILED record the store refused earlier, written after a key rotation or by a
/// writer with another key file) must not be encrypted with a key the record does not list.
pub fn record(repo: &Repository, runtime: &Handle, backup_id: &str, info: &BackupInfo) -> Result<(), BackupError> {
    let admitted = runtime.block_on(async { tokio::time::timeout(RECORD_TIME, ownership::admit_writer(repo)).await });
    match admitted {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => {
            let what = "the repository's ownership record".to_string();
            return Err(BackupError::NoAnswer { what, within: RECORD_TIME });
        }
    }
    let key = format!("{}/backup.info", backup_dir(backup_id));
    put_within_record_time(repo, runtime, &key, info.to_barman().into())
}

/// Stores a small metadata object, waiting at most [`RECORD_TIME`].
fn put_within_record_time(
    repo: &Repository,
    runtime: &Handle,
    key: &str,
    body: bytes::Bytes,
) -> Result<(), BackupError> {
    match runtime.block_on(async { tokio::time::timeout(RECORD_TIME, repo.put(key, body)).await }) {
        Ok(stored) => Ok(stored?),
        Err(_) => Err(BackupError::NoAnswer { what: format!("writing {}", repo.location(key)), within: RECORD_TIME }),
    }
}

/// What streaming produced: the archives, the manifest entries and the data archive,
/// still open for `backup_label`.
struct Streamed {
    archives: Vec<StoredObject>,
    files: Vec<ManifestFile>,
    data: TarUpload,
}

/// A planned archive: its base name and the entries it holds.
struct ArchivePlan {
    base: String,
    /// Prefix of its files' paths in the manifest (`pg_tblspc/<oid>/` for a tablespace).
    manifest_prefix: String,
    entries: Vec<Entry>,
}

/// Takes one backup. On success returns the DONE `backup.info` as stored.
pub fn run_backup(host: &mut dyn BackupHost, repo: &Repository, job: &BackupJob) -> Result<BackupInfo, BackupFailure> {
    let mut info = BackupInfo {
        server_name: job.server_name.clone(),
        systemid: job.cluster.system_identifier.to_string(),
        version: job.cluster.server_version_num,
        pgdata: job.cluster.data_directory.display().to_string(),
        config_file: job.cluster.config_file.clone(),
        hba_file: job.cluster.hba_file.clone(),
        ident_file: job.cluster.ident_file.clone(),
        xlog_segment_size: job.cluster.segment_size,
        data_checksums: job.cluster.data_checksums,
        cluster_size: job.cluster.cluster_size,
        compression: Some(job.upload.compression.name().to_string()),
        ..Default::default()
    };
    let failed = |mut info: BackupInfo, error: &BackupError| {
        info.status = Some(BackupStatus::Failed);
        info.error = Some(error.to_string());
        info
    };
    let fail = |info: BackupInfo, error: BackupError| {
        let info = failed(info, &error);
        let unrecorded = record(repo, &job.runtime, &job.backup_id, &info).err().map(|_| Box::new(info));
        BackupFailure { error, unrecorded }
    };

    // Before anything is written: the repository is this cluster's, and plain or
    // encrypted (with a key that reads it) as this cluster is configured.
    let identity = ClusterIdentity {
        system_identifier: job.cluster.system_identifier,
        pg_version_num: job.cluster.server_version_num,
        wal_segment_size: job.cluster.segment_size as u32,
    };
    let (store, runtime) = (repo.clone(), job.runtime.clone());
    match off_main_thread(host, job.thread_start, move || runtime.block_on(ownership::claim(&store, &identity))) {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(BackupFailure { error: e.into(), unrecorded: None }),
        Err(Stopped::Interrupted(reason)) => {
            return Err(BackupFailure { error: BackupError::Stopped(reason), unrecorded: None })
        }
        Err(Stopped::Failed { error, .. }) => return Err(BackupFailure { error, unrecorded: None }),
    }
    // The owner first: a STARTED backup always says who may mark it FAILED.
    let (key, body) = owner::owner_object(&job.backup_id, &job.owner);
    if let Err(e) = put_within_record_time(repo, &job.runtime, &key, body) {
        return Err(fail(info, e));
    }
    // Beats until the backup ends (dropped on return), the checkpoint wait included.
    let heartbeat = owner::Heartbeat::start(repo, &job.runtime, &job.backup_id, &job.owner);
    // Listed as running from the start, the checkpoint wait included.
    info.status = Some(BackupStatus::Started);
    if let Err(e) = record(repo, &job.runtime, &job.backup_id, &info) {
        return Err(fail(info, e));
    }
    host.progress(Phase::WaitCheckpoint, Progress::default());
    let start = match host.start_backup(&format!("pgops backup {}", job.backup_id)) {
        Ok(start) => start,
        Err(cause) => return Err(fail(info, BackupError::Postgres { step: "pg_backup_start failed", cause })),
    };
    info.timeline = start.timeline;
    info.begin_time = barman_time(start.time);
    info.begin_xlog = start.lsn.clone();
    info.begin_wal = start.wal.clone();
    info.begin_offset = start.offset;
    match host.tablespaces() {
        Ok(tablespaces) => info.tablespaces = tablespaces,
        Err(cause) => {
            host.abort_backup();
            return Err(fail(info, BackupError::Postgres { step: "could not list the tablespaces", cause }));
        }
    }
    if let Err(e) = record(repo, &job.runtime, &job.backup_id, &info) {
        host.abort_backup();
        return Err(fail(info, e));
    }

    match take_backup(host, repo, job, &start, &heartbeat, &mut info) {
        Ok(()) => Ok(info),
        // Stopping (shutdown): no waiting on the store for the FAILED status; the
        // instance's next worker marks the backup FAILED as interrupted.
        Err(Stopped::Interrupted(reason)) => {
            let error = BackupError::Stopped(reason);
            let info = failed(info, &error);
            Err(BackupFailure { error, unrecorded: Some(Box::new(info)) })
        }
        Err(Stopped::Failed { error, backup_stopped }) => {
            if !backup_stopped {
                host.abort_backup();
            }
            Err(fail(info, error))
        }
    }
}

/// How [`take_backup`] ended early.
enum Stopped {
    /// The host must stop now (shutdown): Postgres ends the backup itself.
    Interrupted(String),
    /// A failure, and whether pg_backup_stop already ran.
    Failed { error: BackupError, backup_stopped: bool },
}

impl From<(BackupError, bool)> for Stopped {
    fn from((error, backup_stopped): (BackupError, bool)) -> Stopped {
        Stopped::Failed { error, backup_stopped }
    }
}

/// The part of a backup between start and DONE.
fn take_backup(
    host: &mut dyn BackupHost,
    repo: &Repository,
    job: &BackupJob,
    start: &WalPosition,
    heartbeat: &owner::Heartbeat,
    info: &mut BackupInfo,
) -> Result<(), Stopped> {
    host.progress(Phase::EstimateSize, Progress::default());
    let plan =
        plan_archives(&job.cluster, &info.tablespaces).map_err(|e| (BackupError::Local(e.to_string()), false))?;
    let progress = Progress {
        total: Some(plan.iter().flat_map(|a| &a.entries).map(|e| e.size).sum()),
        tablespaces_total: plan.len() as u64,
        ..Default::default()
    };
    host.progress(Phase::Stream, progress);

    let control = Arc::new(StreamControl::default());
    let streaming = {
        let (repo, control, dir) = (repo.clone(), control.clone(), backup_dir(&job.backup_id));
        let (settings, runtime) = (job.upload.clone(), job.runtime.clone());
        let thread_start = job.thread_start;
        std::thread::Builder::new()
            .name("pgops-backup".into())
            .spawn(move || {
                thread_start();
                stream_archives(&repo, &dir, plan, &settings, &runtime, &control)
            })
            .map_err(|e| (BackupError::Local(format!("could not start the backup thread: {e}")), false))?
    };
    let mut stopping = None;
    while !streaming.is_finished() {
        if let Err(e) = heartbeat.check() {
            // Not a shutdown: the worker goes on, so the backup is ended here.
            control.cancel.store(true, Ordering::Relaxed);
            return Err((e, false).into());
        }
        let done = plan_progress(&control, progress);
        host.progress(Phase::Stream, done);
        if let Err(reason) = host.wait() {
            control.cancel.store(true, Ordering::Relaxed);
            stopping = Some(reason.to_string());
            break;
        }
    }
    if let Some(reason) = &stopping {
        let waiting = std::time::Instant::now();
        while !streaming.is_finished() {
            if waiting.elapsed() >= STREAM_STOP_TIME {
                return Err(Stopped::Interrupted(format!("{reason} (the upload in progress was abandoned)")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let streamed = streaming.join().unwrap_or_else(|_| Err(BackupError::Local("the backup thread panicked".into())));
    if let Some(reason) = stopping {
        if let Ok(streamed) = streamed {
            streamed.data.abort();
        }
        return Err(Stopped::Interrupted(reason));
    }
    let Streamed { mut archives, mut files, mut data } = streamed.map_err(|e| (e, false))?;
    host.progress(
        Phase::Stream,
        Progress { tablespaces_streamed: progress.tablespaces_total, ..plan_progress(&control, progress) },
    );

    host.progress(Phase::WaitWalArchive, plan_progress(&control, progress));
    let stop = match host.stop_backup() {
        Ok(stop) => stop,
        Err(cause) => {
            data.abort();
            return Err((BackupError::Postgres { step: "pg_backup_stop failed", cause }, true).into());
        }
    };
    if let Err(stopped) = wait_for_end_segment(host, repo, job, &stop.end, heartbeat) {
        data.abort();
        return Err(stopped);
    }
    let now = stop.end.time.timestamp();
    let labels: Vec<(&'static str, String)> =
        [("backup_label", stop.backup_label.clone()), ("tablespace_map", stop.tablespace_map.clone())]
            .into_iter()
            .filter(|(name, content)| *name == "backup_label" || !content.is_empty())
            .collect();
    for (name, content) in &labels {
        files.push(ManifestFile {
            path: (*name).into(),
            size: content.len() as u64,
            modified: now,
            crc32c: crc32c::crc32c(content.as_bytes()),
        });
    }
    // The last parts and the completion go to the store: off the main thread, which keeps
    // answering shutdown and cancel while a frozen store holds them.
    let finished = off_main_thread(host, job.thread_start, move || -> Result<StoredObject, BackupError> {
        for (name, content) in &labels {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o600);
            header.set_mtime(now as u64);
            header.set_entry_type(tar::EntryType::Regular);
            if let Err(e) = data.builder().append_data(&mut header, name, content.as_bytes()) {
                data.abort();
                return Err(BackupError::Local(format!("could not add {name}: {e}")));
            }
        }
        Ok(data.finish()?)
    })?;
    archives.push(finished.map_err(|e| (e, true))?);

    let wal = WalRange { timeline: start.timeline, start_lsn: start.lsn.clone(), end_lsn: stop.end.lsn.clone() };
    let manifest = manifest::render(
        manifest::manifest_version(job.cluster.server_version_num),
        job.cluster.system_identifier,
        &files,
        &wal,
    );
    let metadata = PgopsMetadata {
        pgops_version: env!("CARGO_PKG_VERSION"),
        backup_id: &job.backup_id,
        compression: job.upload.compression.name(),
        end_snapshot: stop.end_snapshot.as_deref(),
        archives: archives
            .iter()
            .map(|a| ArchiveRecord { name: &a.name, stored_bytes: a.stored_bytes, tar_bytes: a.tar_bytes })
            .collect(),
        files: files
            .iter()
            .map(|f| FileRecord { path: &f.path, size: f.size, crc32c: format!("{:08x}", f.crc32c) })
            .collect(),
    };
    let metadata = serde_json::to_vec_pretty(&metadata).map_err(|e| (BackupError::Local(e.to_string()), true))?;
    let dir = backup_dir(&job.backup_id);
    let (store, runtime) = (repo.clone(), job.runtime.clone());
    let stored = off_main_thread(host, job.thread_start, move || {
        for (name, body) in [("backup_manifest", manifest.into_bytes()), (PGOPS_METADATA, metadata)] {
            runtime.block_on(store.put(&format!("{dir}/{name}"), body.into()))?;
        }
        Ok::<(), BackupError>(())
    })?;
    stored.map_err(|e| (e, true))?;

    // Not DONE unless it has been seen alive throughout: retention elsewhere may already
    // take it for abandoned.
    heartbeat.check().map_err(|e| (e, true))?;
    info.status = Some(BackupStatus::Done);
    info.end_time = Some(barman_time(stop.end.time));
    info.end_xlog = Some(stop.end.lsn.clone());
    info.end_wal = Some(stop.end.wal.clone());
    info.end_offset = Some(stop.end.offset);
    info.backup_label = Some(stop.backup_label.clone());
    info.size = Some(archives.iter().map(|a| a.tar_bytes).sum());
    record(repo, &job.runtime, &job.backup_id, info).map_err(|e| (e, true).into())
}

/// Runs `work` (store requests) on a thread of its own while the main thread answers the
/// host: a shutdown or cancel ends the wait, and a store that does not answer holds only
/// that thread (the process is exiting, or the store times the request out).
fn off_main_thread<T: Send + 'static>(
    host: &mut dyn BackupHost,
    thread_start: fn(),
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Stopped> {
    let worker = std::thread::Builder::new()
        .name("pgops-backup-store".into())
        .spawn(move || {
            thread_start();
            work()
        })
        .map_err(|e| (BackupError::Local(format!("could not start a backup thread: {e}")), true))?;
    while !worker.is_finished() {
        if let Err(reason) = host.wait() {
            return Err(Stopped::Interrupted(format!("{reason} (a store request in progress was abandoned)")));
        }
    }
    worker.join().map_err(|_| (BackupError::Local("a backup thread panicked".into()), true).into())
}

/// How long one look for the end segment may take: the main thread waits for it, and
/// answers shutdown only between looks.
const ARCHIVE_LOOK_TIME: Duration = Duration::from_secs(2);

/// Waits until the segment holding the last byte before `end` (what `pg_backup_stop`
/// itself would wait for) is in the repository, at most [`BackupJob::archive_timeout`];
/// a shutdown, a cancel or a lost heartbeat ends the wait.
fn wait_for_end_segment(
    host: &mut dyn BackupHost,
    repo: &Repository,
    job: &BackupJob,
    end: &WalPosition,
    heartbeat: &owner::Heartbeat,
) -> Result<(), Stopped> {
    let lsn: Lsn = end
        .lsn
        .parse()
        .map_err(|e: naming::NotAnLsn| (BackupError::Local(format!("pg_backup_stop returned {e}")), true))?;
    let segment = WalSegment {
        timeline: Timeline(end.timeline),
        position: SegmentPosition::of(Lsn(lsn.0.saturating_sub(1)), job.cluster.segment_size),
    };
    let name = segment.to_string();
    let dir = naming::wal_dir(&name).map_err(|e| (BackupError::Local(e.to_string()), true))?;
    let started = std::time::Instant::now();
    loop {
        let look =
            job.runtime.block_on(async { tokio::time::timeout(ARCHIVE_LOOK_TIME, repo.wal_copies(&dir, &name)).await });
        if matches!(&look, Ok(Ok(copies)) if !copies.is_empty()) {
            return Ok(());
        }
        if started.elapsed() >= job.archive_timeout {
            let cause = match look {
                Ok(Ok(_)) => "the repository does not have it".to_string(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("the store did not answer within {} s", ARCHIVE_LOOK_TIME.as_secs()),
            };
            let error = BackupError::EndSegmentNotArchived { segment: name, within: job.archive_timeout, cause };
            return Err((error, true).into());
        }
        if let Err(reason) = host.wait() {
            return Err(Stopped::Interrupted(reason.to_string()));
        }
        // Not a shutdown: the worker goes on, so the FAILED status is written now.
        heartbeat.check().map_err(|e| (e, true))?;
    }
}

fn plan_progress(control: &StreamControl, plan: Progress) -> Progress {
    Progress { streamed: control.streamed.load(Ordering::Relaxed), ..plan }
}

/// One archive per tablespace (only its `PG_<major>_*` directory, as Barman takes), then
/// the data directory, whose tablespace links are kept as links, `global/pg_control` last.
fn plan_archives(cluster: &ClusterInfo, tablespaces: &[Tablespace]) -> io::Result<Vec<ArchivePlan>> {
    let major = cluster.server_version_num / 10000;
    let mut plan = Vec::new();
    for tablespace in tablespaces {
        let mut entries = Vec::new();
        let mut version_dirs: Vec<_> = std::fs::read_dir(&tablespace.location)?
            .collect::<io::Result<Vec<_>>>()?
            .into_iter()
            .filter(|d| d.file_name().to_string_lossy().starts_with(&format!("PG_{major}_")))
            .collect();
        version_dirs.sort_by_key(|d| d.file_name());
        for dir in version_dirs {
            let name = dir.file_name().to_string_lossy().into_owned();
            entries.push(Entry { path: dir.path(), name: name.clone(), kind: EntryKind::Directory, size: 0 });
            entries.extend(walk::walk(&dir.path(), &format!("{name}/"), &[])?);
        }
        plan.push(ArchivePlan {
            base: tablespace.oid.to_string(),
            manifest_prefix: format!("pg_tblspc/{}/", tablespace.oid),
            entries,
        });
    }
    let mut entries = walk::walk(&cluster.data_directory, "", &[PG_CONTROL])?;
    let pg_control = cluster.data_directory.join(PG_CONTROL);
    let size = std::fs::metadata(&pg_control)?.len();
    entries.push(Entry { path: pg_control, name: PG_CONTROL.into(), kind: EntryKind::File, size });
    plan.push(ArchivePlan { base: "data".into(), manifest_prefix: String::new(), entries });
    Ok(plan)
}

/// The streaming thread: writes every planned archive and returns the last one (the data
/// directory's) open, for `backup_label`.
fn stream_archives(
    repo: &Repository,
    dir: &str,
    plan: Vec<ArchivePlan>,
    settings: &UploadSettings,
    runtime: &Handle,
    control: &StreamControl,
) -> Result<Streamed, BackupError> {
    let mut archives = Vec::new();
    let mut files = Vec::new();
    let mut plan = plan.into_iter().peekable();
    while let Some(archive) = plan.next() {
        let start = |index| TarUpload::start(repo, dir, &archive.base, index, runtime.clone(), settings);
        let mut index = 0;
        let mut upload = start(index).map_err(|e| BackupError::Local(e.to_string()))?;
        for entry in &archive.entries {
            if entry.kind == EntryKind::File && upload.stored_bytes() >= settings.max_archive_size {
                archives.push(upload.finish()?);
                index += 1;
                upload = start(index).map_err(|e| BackupError::Local(e.to_string()))?;
            }
            if let Err(e) = append_entry(&mut upload, entry, &archive.manifest_prefix, control, &mut files) {
                let error =
                    upload.store_failure().map_or_else(|| BackupError::Local(e.to_string()), BackupError::Store);
                upload.abort();
                return Err(error);
            }
        }
        if plan.peek().is_none() {
            return Ok(Streamed { archives, files, data: upload });
        }
        archives.push(upload.finish()?);
    }
    unreachable!("the plan always ends with the data directory")
}

/// Adds one entry to the archive, and a file to the manifest.
fn append_entry(
    upload: &mut TarUpload,
    entry: &Entry,
    manifest_prefix: &str,
    control: &StreamControl,
    files: &mut Vec<ManifestFile>,
) -> io::Result<()> {
    if control.cancel.load(Ordering::Relaxed) {
        return Err(io::Error::other("the backup was cancelled"));
    }
    let mut header = tar::Header::new_gnu();
    match &entry.kind {
        EntryKind::Directory => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o700);
            header.set_size(0);
            let modified = std::fs::symlink_metadata(&entry.path).map_or(0, |m| seconds_since_epoch(&m));
            header.set_mtime(modified as u64);
            upload.builder().append_data(&mut header, format!("{}/", entry.name), io::empty())
        }
        EntryKind::Symlink(target) => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            upload.builder().append_link(&mut header, &entry.name, target)
        }
        EntryKind::File => {
            let file = match std::fs::File::open(&entry.path) {
                Ok(file) => file,
                // Dropped since the walk (a table, a temporary file): not part of the backup.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => {
                    return Err(io::Error::new(e.kind(), format!("could not open {}: {e}", entry.path.display())))
                }
            };
            let meta = file.metadata()?;
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o600);
            header.set_size(meta.len());
            header.set_mtime(modified as u64);
            let mut reader = BackupFileReader::new(file, meta.len(), control);
            upload
                .builder()
                .append_data(&mut header, &entry.name, &mut reader)
                .map_err(|e| io::Error::new(e.kind(), format!("could not archive {}: {e}", entry.path.display())))?;
            files.push(ManifestFile {
                path: format!("{manifest_prefix}{}", entry.name),
                size: meta.len(),
                modified,
                crc32c: reader.crc32c,
            });
            Ok(())
        }
    }
}

/// A file's modification time, for tar headers and the manifest.
fn seconds_since_epoch(meta: &std::fs::Metadata) -> i64 {
    meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests;
