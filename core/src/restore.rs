//! `pgops restore`: a base backup into an empty data directory, every file checked against
//! the backup's manifest (size and CRC-32C), then set up for recovery from the WAL archive
//! (recovery.signal, restore_command, recovery target).

mod durable;
mod error;
mod safe_dir;
mod target_time;

pub use error::RestoreError;
pub use target_time::{NotATime, TargetTime};

use crate::backup::catalog::{list_backups, BackupSummary};
use crate::backup::info::{BackupStatus, InfoFields};
use crate::backup::{backup_dir, BackupId, NotABackupId, PGOPS_METADATA};
use crate::naming::Lsn;
use crate::ownership::{self, OwnershipError};
use crate::pipeline::{self, Compression, DecodeError};
use crate::retry::{self, Failed, Patience};
use crate::store::{ObjectStore, Repository, StoreError, StoreErrorKind};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use safe_dir::SafeDir;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// Replay every archived WAL file.
    End,
    Time(TargetTime),
    Lsn(Lsn),
    /// A transaction id, as `xid` (32 bits) or `xid8` (with its epoch) columns show it.
    Xid(u64),
    Name(String),
    Immediate,
}

/// `recovery_target_action`: what Postgres does once it reached the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetAction {
    Pause,
    Promote,
    Shutdown,
}

impl TargetAction {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetAction::Pause => "pause",
            TargetAction::Promote => "promote",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

/// Which backup to restore (`--backup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupChoice {
    /// The one [`choose_backup`] picks for the target.
    Latest,
    Id(BackupId),
}

impl std::str::FromStr for BackupChoice {
    type Err = NotABackupId;

    fn from_str(text: &str) -> Result<BackupChoice, NotABackupId> {
        match text {
            "latest" => Ok(BackupChoice::Latest),
            id => id.parse().map(BackupChoice::Id),
        }
    }
}

/// `recovery_target_timeline`: which timeline recovery follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetTimeline {
    /// The newest the archive has (Postgres' default).
    Latest,
    /// The backup's own.
    Current,
    /// This one: only backups that can follow onto it are chosen.
    Number(u32),
}

/// Text that is not a [`TargetTimeline`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not a timeline: use latest, current or a timeline number (1, 2, …)")]
pub struct NotATimeline(pub String);

impl std::str::FromStr for TargetTimeline {
    type Err = NotATimeline;

    fn from_str(text: &str) -> Result<TargetTimeline, NotATimeline> {
        match text {
            "latest" => Ok(TargetTimeline::Latest),
            "current" => Ok(TargetTimeline::Current),
            number => match number.parse() {
                Ok(timeline) if timeline > 0 && number.bytes().all(|b| b.is_ascii_digit()) => {
                    Ok(TargetTimeline::Number(timeline))
                }
                _ => Err(NotATimeline(text.to_string())),
            },
        }
    }
}

impl std::fmt::Display for TargetTimeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetTimeline::Latest => f.write_str("latest"),
            TargetTimeline::Current => f.write_str("current"),
            TargetTimeline::Number(timeline) => write!(f, "{timeline}"),
        }
    }
}

/// What the restored cluster does with the archiving settings it was backed up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArchiveAfterRestore {
    /// `archive_mode = 'off'`, `pgops.backup_schedule = ''` and `pgops.repository = ''`: a
    /// clone never writes into the repository it was restored from.
    #[default]
    Off,
    /// As in the backup (a replacement of the lost server).
    Keep,
}

#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub pgdata: PathBuf,
    pub backup: BackupChoice,
    pub target: RecoveryTarget,
    pub target_action: Option<TargetAction>,
    pub target_timeline: Option<TargetTimeline>,
    /// Tablespace OID → directory, instead of the location it had.
    pub tablespace_map: BTreeMap<u32, PathBuf>,
    /// pg_wal on a volume of its own (`pgops restore --waldir`, CNPG's `walStorage`): an
    /// absolute path, missing or empty, that the restored `pg_wal` becomes a link to.
    pub wal_directory: Option<PathBuf>,
    /// restore_command to write (`pgops … wal-fetch %f %p` with the repository settings)
    /// with the recovery target and `recovery.signal`; `None` when the caller sets recovery
    /// up itself (CloudNativePG writes them from the Cluster once the data is restored).
    pub restore_command: Option<String>,
    pub archive: ArchiveAfterRestore,
    /// Check every file against the backup's manifest, and refuse a pgops backup whose
    /// manifest is missing or fails its own checksum (`--no-verify` turns this off).
    pub verify: bool,
    /// Fsync every restored file and directory before returning (`--no-sync` turns this
    /// off, for a scratch restore that a crash may lose).
    pub sync: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    pub backup_id: String,
    pub files: u64,
    pub bytes: u64,
    /// Files checked against a manifest (Barman Cloud backups have none).
    pub verified: bool,
    /// What the restore decided and did, for the operator: which backup and why, the
    /// recovery target instant, the archiving settings.
    pub notes: Vec<String>,
    /// What the operator must know is unchecked.
    pub warnings: Vec<String>,
}

/// A timestamp of `backup.info` (`2026-11-25 02:00:05.000000+00:00`).
pub(crate) fn barman_instant(text: &str) -> Option<DateTime<Utc>> {
    match TargetTime::parse(text)? {
        TargetTime::At(at) => Some(at),
        TargetTime::Local(_) => None,
    }
}

/// Whether a backup finished: only those can be restored.
pub(crate) fn is_done(backup: &BackupSummary) -> bool {
    BackupStatus::from_barman(backup.status()) == Some(BackupStatus::Done)
}

/// Where a backup ended (`end_xlog`); `None` for one that did not end.
fn end_lsn(backup: &BackupSummary) -> Option<Lsn> {
    backup.fields.get("end_xlog")?.parse().ok()
}

/// The backup a restore uses, and why it is that one.
#[derive(Debug)]
pub struct Choice<'a> {
    pub backup: &'a BackupSummary,
    pub reason: String,
}

/// A transaction snapshot as `pg_current_snapshot()` prints it, `xmin:xmax:xip,…`, with
/// full (64-bit) transaction ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    xmax: u64,
    running: Vec<u64>,
}

impl Snapshot {
    pub fn parse(text: &str) -> Option<Snapshot> {
        let mut parts = text.trim().split(':');
        let _xmin: u64 = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let running = match parts.next()? {
            "" => Vec::new(),
            list => list.split(',').map(|xid| xid.parse().ok()).collect::<Option<_>>()?,
        };
        parts.next().is_none().then_some(Snapshot { xmax, running })
    }

    /// Whether transaction `xid` had not completed in this snapshot (running, or not yet
    /// started): its commit, if it commits, comes later. A 32-bit id (as `xid` columns
    /// show) is taken in the epoch nearest to the snapshot's.
    fn not_completed(&self, xid: u64) -> bool {
        let full = match u32::try_from(xid) {
            Ok(short) => {
                let distance = short.wrapping_sub(self.xmax as u32) as i32;
                self.xmax.checked_add_signed(distance.into()).unwrap_or(0)
            }
            Err(_) => xid,
        };
        full >= self.xmax || self.running.contains(&full)
    }
}

/// A timeline and those it descends from, each with the LSN where it was left (its
/// history file): what `--target-timeline N` can follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineHistory {
    pub timeline: u32,
    pub ancestors: Vec<(u32, Lsn)>,
}

impl TimelineHistory {
    /// From the text of `<timeline>.history` (`parent<TAB>X/Y<TAB>reason` lines).
    pub fn parse(timeline: u32, history: &str) -> TimelineHistory {
        let ancestors = history
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
            })
            .collect();
        TimelineHistory { timeline, ancestors }
    }

    /// The history of `timeline` as the server with data directory `data_directory` keeps
    /// it (`pg_wal/<timeline>.history`; timeline 1 has none). Errors are (message, hint).
    pub fn of_server(data_directory: &Path, timeline: u32) -> Result<TimelineHistory, (String, &'static str)> {
        const HINT: &str = "Retention counts only the backups on this server's timeline history and deletes nothing \
                            without it: restore the history file into pg_wal (pgops wal-fetch can fetch it from the \
                            repository), or expire with pgops expire --timeline N (N: this server's timeline).";
        if timeline <= 1 {
            return Ok(TimelineHistory { timeline, ancestors: Vec::new() });
        }
        let path = data_directory.join("pg_wal").join(format!("{timeline:08X}.history"));
        let text = std::fs::read_to_string(&path).map_err(|e| {
            (format!("could not read the history of this server's timeline {timeline}, {}: {e}", path.display()), HINT)
        })?;
        let lineage = TimelineHistory::parse(timeline, &text);
        if lineage.ancestors.is_empty() {
            return Err((format!("{} names no parent timeline", path.display()), HINT));
        }
        Ok(lineage)
    }

    /// Whether recovery from a backup on `timeline` that ended at `end` can follow onto
    /// this timeline: it is this one, or one it descends from, left after the backup ended.
    fn reachable_from(&self, timeline: Option<u64>, end: Option<Lsn>) -> bool {
        let Some(timeline) = timeline else { return false };
        timeline == u64::from(self.timeline)
            || self
                .ancestors
                .iter()
                .any(|(ancestor, left_at)| u64::from(*ancestor) == timeline && end.is_some_and(|end| end <= *left_at))
    }
}

/// What choosing a backup can use beyond `backup.info`.
#[derive(Debug, Clone, Default)]
pub struct ChoiceContext {
    /// `--target-timeline N` (a number): only backups that can follow onto N.
    pub timeline: Option<TimelineHistory>,
    /// Backup id → the snapshot pgops recorded right after its `pg_backup_stop`.
    pub end_snapshots: HashMap<String, Snapshot>,
}

/// The hint for a key file that does not fit the repository, for the command line.
fn restore_key_hint(e: &OwnershipError) -> String {
    match e {
        OwnershipError::Encryption { repository_encrypted: true, .. } => {
            "Give the repository's key file: --encryption-key-file FILE or PGOPS_ENCRYPTION_KEY_FILE.".into()
        }
        OwnershipError::Encryption { repository_encrypted: false, .. } => {
            "The repository is not encrypted: leave out --encryption-key-file.".into()
        }
        OwnershipError::WrongKey { .. } => {
            "Give a key file holding every key the repository lists (the current key first, older ones below it)."
                .into()
        }
        e => e.hint(),
    }
}

const UNREADABLE_HINT: &str = "An encrypted repository needs its key file (--encryption-key-file or PGOPS_ENCRYPTION_KEY_FILE, with every key it lists); otherwise the backup.info is damaged: pgops verify names every object affected.";

/// The backup to restore: the named one (which must be DONE), or among the DONE backups
/// that can follow onto `--target-timeline`: for a time or LSN the newest that ended before
/// it; for a transaction the newest whose end snapshot shows it not yet completed (the
/// oldest when none tells); for a restore point the oldest (its position is not known);
/// otherwise the newest.
pub fn choose_backup<'a>(
    backups: &'a [BackupSummary],
    requested: &BackupChoice,
    target: &RecoveryTarget,
    context: &ChoiceContext,
) -> Result<Choice<'a>, RestoreError> {
    if let BackupChoice::Id(id) = requested {
        let backup = backups.iter().find(|b| b.backup_id == id.as_str()).ok_or_else(|| {
            RestoreError::refused(
                format!("no backup {id} in the repository"),
                "pgops list shows the backups there; --backup latest takes the one that can reach the target.",
            )
        })?;
        if let Some(why) = backup.unreadable() {
            return Err(RestoreError::refused(format!("backup {id}: {why}"), UNREADABLE_HINT));
        }
        if !is_done(backup) {
            return Err(RestoreError::refused(
                format!("backup {id} is {}, not DONE: it cannot be restored", backup.status()),
                "Name a DONE backup (pgops list shows their status), or --backup latest.",
            ));
        }
        return Ok(Choice { backup, reason: "named by --backup".into() });
    }
    let done: Vec<&BackupSummary> = backups
        .iter()
        .filter(|b| is_done(b))
        .filter(|b| context.timeline.as_ref().is_none_or(|t| t.reachable_from(b.fields.number("timeline"), end_lsn(b))))
        .collect();
    let on_timeline = context.timeline.as_ref().map_or(String::new(), |t| {
        format!(
            " that can follow onto timeline {} (on it, or on one it descends from before it branched off)",
            t.timeline
        )
    });
    // Backups whose backup.info cannot be read are passed over, and said.
    let passed_over: Vec<String> =
        backups.iter().filter_map(|b| b.unreadable().map(|why| format!("backup {}: {why}", b.backup_id))).collect();
    let (Some(oldest), Some(newest)) = (done.first().copied(), done.last().copied()) else {
        if let Some(first) = passed_over.first() {
            return Err(RestoreError::refused(
                format!("the repository has no readable DONE backup{on_timeline}; {first}"),
                UNREADABLE_HINT,
            ));
        }
        return Err(RestoreError::refused(
            format!("the repository has no DONE backup{on_timeline}"),
            "pgops list shows the backups there and their status; take a backup (pgops.backup_now()) first.",
        ));
    };
    let passed_over =
        if passed_over.is_empty() { String::new() } else { format!(" (passed over: {})", passed_over.join("; ")) };
    let chosen = |backup, reason: &str| Ok(Choice { backup, reason: format!("{reason}{on_timeline}{passed_over}") });
    match target {
        RecoveryTarget::Time(_) | RecoveryTarget::Lsn(_) => {
            let ends_before = |b: &BackupSummary| match target {
                RecoveryTarget::Time(at) => {
                    b.fields.get("end_time").and_then(barman_instant).is_some_and(|end| end <= at.estimate())
                }
                RecoveryTarget::Lsn(lsn) => end_lsn(b).is_some_and(|end| end <= *lsn),
                _ => unreachable!("matched above"),
            };
            match done.iter().rev().find(|b| ends_before(b)) {
                Some(backup) => chosen(backup, "the newest DONE backup that ended before the recovery target"),
                None => Err(RestoreError::refused(
                    format!(
                        "no DONE backup{on_timeline} ends before the recovery target; the oldest ends at {} ({})",
                        oldest.fields.get("end_time").unwrap_or("?"),
                        oldest.fields.get("end_xlog").unwrap_or("?")
                    ),
                    "Recovery can only stop after the end of the backup it starts from: choose a later target.",
                )),
            }
        }
        RecoveryTarget::Xid(xid) => {
            let reaches = |b: &BackupSummary| context.end_snapshots.get(&b.backup_id).map(|s| s.not_completed(*xid));
            if let Some(backup) = done.iter().rev().find(|b| reaches(b) == Some(true)) {
                return chosen(
                    backup,
                    &format!("the newest DONE backup whose end snapshot shows transaction {xid} not yet completed"),
                );
            }
            if reaches(oldest) == Some(false) {
                return Err(RestoreError::refused(
                    format!(
                        "transaction {xid} had completed before the oldest DONE backup{on_timeline} ({}) ended: no backup can recover to it",
                        oldest.backup_id
                    ),
                    "Recovery can only stop after the end of the backup it starts from: choose a later target.",
                ));
            }
            chosen(
                oldest,
                &format!(
                    "the oldest DONE backup: no backup records that transaction {xid} was still running when it ended, and the oldest can reach it if any can"
                ),
            )
        }
        RecoveryTarget::Name(name) => chosen(
            oldest,
            &format!(
                "the oldest DONE backup: where restore point '{name}' lies is not recorded, and the oldest can reach it if any can"
            ),
        ),
        RecoveryTarget::End | RecoveryTarget::Immediate => chosen(newest, "the newest DONE backup"),
    }
}

/// Reads an object piece by piece: 8 MiB ranges, several fetched ahead of the one being
/// read, so that download and extraction overlap and memory stays bounded (at most
/// `RANGES_IN_FLIGHT + 1` ranges) whatever the object's size.
struct ObjectReader {
    repo: Repository,
    key: String,
    size: u64,
    runtime: Handle,
    chunk: Bytes,
    next_offset: u64,
    in_flight: VecDeque<JoinHandle<Result<Bytes, StoreError>>>,
}

const RANGE: u64 = 8 * 1024 * 1024;
const RANGES_IN_FLIGHT: usize = 4;

impl ObjectReader {
    fn new(repo: &Repository, key: String, size: u64, runtime: Handle) -> Self {
        let mut reader = ObjectReader {
            repo: repo.clone(),
            key,
            size,
            runtime,
            chunk: Bytes::new(),
            next_offset: 0,
            in_flight: VecDeque::new(),
        };
        reader.fetch_ahead();
        reader
    }

    fn fetch_ahead(&mut self) {
        while self.in_flight.len() < RANGES_IN_FLIGHT && self.next_offset < self.size {
            let (store, key, offset) = (self.repo.store.clone(), self.repo.key(&self.key), self.next_offset);
            let length = RANGE.min(self.size - offset);
            self.next_offset += length;
            self.in_flight.push_back(self.runtime.spawn(read_range(store, key, offset, length)));
        }
    }
}

/// How long one range is retried through store errors: a restore of a large backup must
/// not be lost to a minute of throttling or a store restart.
const RANGE_PATIENCE: Duration = Duration::from_secs(120);

/// `length` bytes of `key` from `offset`, retried (with backoff, up to [`RANGE_PATIENCE`])
/// while the store fails or answers short.
async fn read_range(store: Arc<dyn ObjectStore>, key: String, offset: u64, length: u64) -> Result<Bytes, StoreError> {
    let error =
        |kind, cause: String| StoreError { operation: "GetObject", location: store.location(&key), kind, cause };
    let attempt = || async {
        let bytes = store.get_range(&key, offset, length).await?;
        match bytes.len() as u64 == length {
            true => Ok(bytes),
            false => Err(error(
                StoreErrorKind::Unreachable,
                format!("{} bytes of the range {offset}+{length} arrived", bytes.len()),
            )),
        }
    };
    // Missing bucket or refused credentials do not heal by waiting.
    let transient = |e: &StoreError| !matches!(e.kind, StoreErrorKind::NoSuchBucket | StoreErrorKind::AccessDenied);
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

/// Files a manifest lists: path → (size, CRC-32C as PostgreSQL prints it).
type ManifestFiles = HashMap<String, (u64, String)>;

/// The files of a `backup_manifest`, once its own checksum (`Manifest-Checksum`: SHA-256
/// of the text up to and including the newline before that last line, as pg_verifybackup
/// computes it) matches. The error is the cause, for the caller to say whose manifest.
fn manifest_files(manifest: &[u8]) -> Result<ManifestFiles, String> {
    let json: serde_json::Value =
        serde_json::from_slice(manifest).map_err(|e| format!("backup_manifest is not valid JSON: {e}"))?;
    let stated = json["Manifest-Checksum"].as_str().ok_or("backup_manifest has no Manifest-Checksum")?;
    let penultimate_newline =
        manifest.iter().rposition(|b| *b == b'\n').and_then(|last| manifest[..last].iter().rposition(|b| *b == b'\n'));
    let body = penultimate_newline.map_or(&manifest[..0], |at| &manifest[..=at]);
    let computed = hex::encode(Sha256::digest(body));
    if !computed.eq_ignore_ascii_case(stated) {
        return Err(format!(
            "backup_manifest fails its own checksum: Manifest-Checksum is {stated}, its text hashes to {computed} (SHA-256); \
             the manifest was changed or damaged, so the files cannot be checked against it"
        ));
    }
    let files = json["Files"].as_array().ok_or("backup_manifest has no Files")?;
    Ok(files
        .iter()
        .filter_map(|f| {
            Some((
                f["Path"].as_str()?.to_string(),
                (f["Size"].as_u64()?, f["Checksum"].as_str().unwrap_or_default().to_string()),
            ))
        })
        .collect())
}

/// A relative, `..`-free path inside `archive` (empty for the archive's root, `./`), or
/// an error.
fn safe_relative(archive: &str, path: &Path) -> Result<PathBuf, RestoreError> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            _ => return Err(RestoreError::corrupt(archive, format!("unsafe path in archive: {}", path.display()))),
        }
    }
    Ok(clean)
}

/// Which archive of a backup: the data directory's, or a tablespace's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArchiveKind {
    Data,
    Tablespace(u32),
}

impl ArchiveKind {
    /// How the manifest names the archive's files.
    fn manifest_prefix(self) -> String {
        match self {
            ArchiveKind::Data => String::new(),
            ArchiveKind::Tablespace(oid) => format!("pg_tblspc/{oid}/"),
        }
    }
}

/// What an archive member becomes on disk.
#[derive(Debug, PartialEq, Eq)]
enum Member {
    Directory,
    File,
    /// `pg_wal` stored as a link (`initdb --waldir`): a directory of the restored cluster's
    /// own, never a link to the original cluster's WAL.
    WalDirectory,
    /// A tablespace link: the restore makes it from tablespace_map.
    TablespaceLink,
    /// Archive metadata (a pax global header), nothing on disk.
    Nothing,
}

/// What `entry` of `archive` may become; links other than pg_wal and tablespace links,
/// hard links, devices, FIFOs and anything else are refused.
fn member(
    archive: &str,
    entry: &tar::Entry<impl Read>,
    relative: &Path,
    kind: ArchiveKind,
) -> Result<Member, RestoreError> {
    let name = relative.display();
    let entry_type = entry.header().entry_type();
    let refused = |cause: String| Err(RestoreError::corrupt(archive, cause));
    if relative.as_os_str().is_empty() {
        // The archive's root (`./`, as Barman's archives begin) is the directory itself.
        return match entry_type {
            tar::EntryType::Directory => Ok(Member::Nothing),
            other => {
                refused(format!("archive member \"{}\" is a {other:?} entry at the archive's root", relative.display()))
            }
        };
    }
    match entry_type {
        tar::EntryType::Directory => Ok(Member::Directory),
        tar::EntryType::Regular => Ok(Member::File),
        tar::EntryType::XGlobalHeader => Ok(Member::Nothing),
        tar::EntryType::Symlink if kind == ArchiveKind::Data && relative == Path::new("pg_wal") => {
            Ok(Member::WalDirectory)
        }
        tar::EntryType::Symlink
            if kind == ArchiveKind::Data
                && relative.parent() == Some(Path::new("pg_tblspc"))
                && relative.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.parse::<u32>().is_ok()) =>
        {
            Ok(Member::TablespaceLink)
        }
        tar::EntryType::Symlink => {
            let target = entry.link_name().ok().flatten().map_or_else(|| "?".into(), |t| t.display().to_string());
            refused(format!(
                "archive member {name} is a symbolic link to {target}: pgops restore makes no link from an archive's \
                 members, so that none can lead outside the target (tablespace links come from tablespace_map, pg_wal \
                 becomes a directory); the backup is refused. If you trust it, restore it with barman-cloud-restore \
                 and check the link yourself"
            ))
        }
        other => refused(format!(
            "archive member {name} is a {other:?} entry: pgops restore writes only directories and regular files \
             (no hard links, devices or FIFOs, which no PostgreSQL backup holds); the backup is refused"
        )),
    }
}

/// The directories of the restore, opened below the root one component at a time (see
/// [`SafeDir`]); the last one is kept, since an archive's files come directory by
/// directory.
struct Directories<'a> {
    root: &'a SafeDir,
    last: Option<(PathBuf, SafeDir)>,
}

impl Directories<'_> {
    /// `relative` below the root, created where missing.
    fn open(&mut self, relative: &Path) -> Result<&SafeDir, RestoreError> {
        if relative.as_os_str().is_empty() {
            return Ok(self.root);
        }
        if self.last.as_ref().is_none_or(|(path, _)| path != relative) {
            let mut dir: Option<SafeDir> = None;
            for part in relative.iter() {
                let parent = dir.as_ref().unwrap_or(self.root);
                let next = parent.subdir(part).map_err(RestoreError::io(parent.path()))?;
                dir = Some(next);
            }
            self.last = dir.map(|dir| (relative.to_path_buf(), dir));
        }
        Ok(&self.last.as_ref().expect("opened above").1)
    }
}

#[derive(Debug)]
struct Extracted {
    files: u64,
    bytes: u64,
}

/// Extracts one archive (named `archive_name`, for messages) into `dir` (or only reads it
/// when `dir` is `None`), checking each file against `manifest` and removing the checked
/// ones from it. A file is written under a temporary name and gets its own only once it
/// matched the manifest.
fn extract(
    archive_name: &str,
    archive: impl Read,
    dir: Option<&SafeDir>,
    kind: ArchiveKind,
    manifest: &mut Option<ManifestFiles>,
    on_file: &mut dyn FnMut(u64),
) -> Result<Extracted, RestoreError> {
    let mut done = Extracted { files: 0, bytes: 0 };
    let manifest_prefix = kind.manifest_prefix();
    let mut directories = dir.map(|root| Directories { root, last: None });
    let mut tar = tar::Archive::new(EndWatch { inner: archive, ended: false });
    let reading = |e| RestoreError::reading(archive_name, "reading the archive", e);
    for entry in tar.entries().map_err(reading)? {
        let mut entry = entry.map_err(reading)?;
        let relative = safe_relative(archive_name, &entry.path().map_err(reading)?)?;
        let name = relative.to_string_lossy().into_owned();
        let check = |manifest: &mut Option<ManifestFiles>, size, crc| {
            check_against_manifest(manifest, &manifest_prefix, &name, size, crc)
                .map_err(|cause| RestoreError::corrupt(archive_name, cause))
        };
        match (member(archive_name, &entry, &relative, kind)?, directories.as_mut()) {
            (Member::Directory, Some(directories)) => {
                directories.open(&relative)?;
            }
            (Member::WalDirectory, Some(directories)) => {
                directories.open(&Path::new("pg_wal").join("archive_status"))?;
            }
            (Member::File, directories) => {
                let size = match directories {
                    Some(directories) => {
                        let parent = directories.open(relative.parent().unwrap_or(Path::new("")))?;
                        let file_name = relative.file_name().expect("a safe relative path ends with a name");
                        write_checked(archive_name, &mut entry, parent, file_name, &name, |size, crc| {
                            check(manifest, size, crc)
                        })?
                    }
                    None => {
                        let (size, crc) =
                            checksum_entry(archive_name, &mut entry, &name, Path::new(""), &mut io::sink())?;
                        check(manifest, size, crc)?;
                        size
                    }
                };
                done.files += 1;
                done.bytes += size;
                on_file(size);
            }
            _ => {}
        }
    }
    // The tar reader stops at the end-of-archive marker (a zero block) and also, silently,
    // where the stream ends at a member boundary: an archive cut short there (or inside a
    // member, which a backup without a manifest could not tell) would restore short.
    let mut rest = tar.into_inner();
    if rest.ended {
        return Err(RestoreError::corrupt(
            archive_name,
            "the archive ends without tar's end-of-archive marker: it was cut short, and files after the cut are missing",
        ));
    }
    // Read to the end, so that whatever the stream carries after the marker is decoded
    // (and, encrypted, authenticated) too.
    io::copy(&mut rest, &mut io::sink())
        .map_err(|e| RestoreError::reading(archive_name, "reading the archive's end", e))?;
    Ok(done)
}

/// A reader that notes when its source ended (a read returned nothing).
struct EndWatch<R> {
    inner: R,
    ended: bool,
}

impl<R: Read> Read for EndWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ended |= n == 0 && !buf.is_empty();
        Ok(n)
    }
}

/// Writes an archive member as `.<file_name>.pgops-partial` in `parent`, lets `check`
/// judge its size and CRC-32C, and only then renames it to `file_name` (which must not
/// exist); a file that fails is removed and never appears under its name. Returns the size.
fn write_checked(
    archive_name: &str,
    entry: &mut impl Read,
    parent: &SafeDir,
    file_name: &OsStr,
    name: &str,
    check: impl FnOnce(u64, u32) -> Result<(), RestoreError>,
) -> Result<u64, RestoreError> {
    let mut partial = OsString::from(".");
    partial.push(file_name);
    partial.push(".pgops-partial");
    let partial_path = parent.path().join(&partial);
    let mut file = parent.create_file(&partial).map_err(RestoreError::io(&partial_path))?;
    let written = checksum_entry(archive_name, entry, name, &partial_path, &mut file)
        .and_then(|(size, crc)| check(size, crc).map(|()| size));
    drop(file);
    match written {
        Ok(size) => {
            parent.rename_new(&partial, file_name).map_err(RestoreError::io(&partial_path))?;
            Ok(size)
        }
        Err(e) => match parent.remove_file(&partial) {
            Err(remove) => Err(RestoreError::Io {
                path: partial_path,
                cause: io::Error::new(remove.kind(), format!("could not be removed ({remove}) after: {e}")),
            }),
            Ok(()) => Err(e),
        },
    }
}

/// Copies member `name` of `archive_name` to `out` (the file `out_path`); returns its size
/// and CRC-32C.
fn checksum_entry(
    archive_name: &str,
    entry: &mut impl Read,
    name: &str,
    out_path: &Path,
    out: &mut impl Write,
) -> Result<(u64, u32), RestoreError> {
    let (mut crc, mut size, mut buf) = (0u32, 0u64, vec![0u8; 256 * 1024]);
    loop {
        let n = entry
            .read(&mut buf)
            .map_err(|e| RestoreError::reading(archive_name, &format!("reading {name} from the archive"), e))?;
        if n == 0 {
            return Ok((size, crc));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        size += n as u64;
        out.write_all(&buf[..n]).map_err(RestoreError::io(out_path))?;
    }
}

/// Checks a file against the manifest (when there is one) and strikes it off; the error
/// is the mismatch, for the caller to say in which archive.
fn check_against_manifest(
    manifest: &mut Option<ManifestFiles>,
    manifest_prefix: &str,
    name: &str,
    size: u64,
    crc: u32,
) -> Result<(), String> {
    let Some(expected) = manifest.as_mut() else { return Ok(()) };
    let key = format!("{manifest_prefix}{name}");
    let (want_size, want_crc) =
        expected.remove(&key).ok_or_else(|| format!("{key} is in the archive but not in the backup's manifest"))?;
    let got_crc = hex::encode(crc.to_le_bytes());
    if size != want_size || got_crc != want_crc {
        return Err(format!(
            "{key} does not match the backup's manifest: {size} bytes with CRC-32C {got_crc}, expected {want_size} bytes with {want_crc}"
        ));
    }
    Ok(())
}

/// A backup's archives and manifest, as stored.
pub(crate) struct StoredBackup {
    pub backup_id: String,
    pub data: Vec<(String, u64)>,
    pub tablespaces: Vec<(String, u64)>,
    pub manifest_bytes: Option<Bytes>,
    /// Taken by pgops (it has pgops' metadata object, or pgops' backup label), which
    /// always writes a manifest: one without is damaged.
    pub by_pgops: bool,
    /// Where the backup is, for messages.
    location: String,
}

/// The label pgops gives its backups (`pg_backup_start`), in backup.info's backup_label.
const PGOPS_BACKUP_LABEL: &str = "LABEL: pgops backup ";

impl StoredBackup {
    pub(crate) fn load(repo: &Repository, runtime: &Handle, backup_id: &str) -> Result<StoredBackup, RestoreError> {
        let dir = backup_dir(backup_id);
        let objects = runtime.block_on(repo.list(&format!("{dir}/")))?;
        let manifest_bytes = runtime.block_on(repo.get(&format!("{dir}/backup_manifest")))?;
        let info = runtime.block_on(repo.get(&format!("{dir}/backup.info")))?;
        let fields = info.map(|text| InfoFields::parse(&String::from_utf8_lossy(&text)));
        let labelled_by_pgops = fields
            .as_ref()
            .is_some_and(|fields| fields.get("backup_label").is_some_and(|label| label.contains(PGOPS_BACKUP_LABEL)));
        let prefix = repo.key(&format!("{dir}/"));
        let names: Vec<(String, u64)> =
            objects.iter().filter_map(|o| Some((o.key.strip_prefix(&prefix)?.to_string(), o.size))).collect();
        let by_pgops = labelled_by_pgops || names.iter().any(|(name, _)| name == PGOPS_METADATA);
        let mut archives: Vec<(String, u64)> = names.into_iter().filter(|(name, _)| name.contains(".tar")).collect();
        archives.sort();
        let (data, tablespaces): (Vec<_>, Vec<_>) =
            archives.into_iter().partition(|(name, _)| name.starts_with("data"));
        if data.is_empty() {
            return Err(RestoreError::corrupt(repo.location(&dir), format!("backup {backup_id} has no data archive")));
        }
        check_chunks(&repo.location(&dir), backup_id, data.iter().chain(&tablespaces).map(|(name, _)| name.as_str()))?;
        let archived: BTreeSet<u32> =
            tablespaces.iter().map(|(name, _)| tablespace_oid(name)).collect::<Result<_, _>>()?;
        let listed = info_tablespace_oids(fields.as_ref().and_then(|fields| fields.get("tablespaces")));
        if let Some(missing) = listed.difference(&archived).next() {
            return Err(RestoreError::corrupt(
                repo.location(&dir),
                format!(
                    "backup {backup_id}'s backup.info lists tablespace {missing}, but the backup has no archive of it \
                     ({missing}.tar…): restored without it, the database would come back without that tablespace's data"
                ),
            ));
        }
        Ok(StoredBackup {
            backup_id: backup_id.to_string(),
            data,
            tablespaces,
            manifest_bytes,
            by_pgops,
            location: repo.location(&dir),
        })
    }

    /// The files to check the archives against: `None` for a backup without a manifest
    /// (Barman Cloud's); an error for a pgops backup whose manifest is missing or fails its
    /// own checksum.
    pub(crate) fn manifest(&self) -> Result<Option<ManifestFiles>, RestoreError> {
        let id = &self.backup_id;
        match &self.manifest_bytes {
            Some(bytes) => {
                manifest_files(bytes).map(Some).map_err(|cause| RestoreError::corrupt(format!("backup {id}"), cause))
            }
            None if self.by_pgops => Err(RestoreError::corrupt(
                &self.location,
                format!(
                    "backup {id} was taken by pgops but its backup_manifest is missing: its files cannot be checked"
                ),
            )),
            None => Ok(None),
        }
    }

    /// Where archive `name` of backup `backup_id` is stored, as messages name it: damage
    /// found while reading an archive is reported against the object, not a bare name
    /// that every backup shares.
    fn location(repo: &Repository, backup_id: &str, name: &str) -> String {
        repo.location(&format!("{}/{name}", backup_dir(backup_id)))
    }

    /// A decompressing reader over one of the archives.
    pub(crate) fn open(
        repo: &Repository,
        runtime: &Handle,
        backup_id: &str,
        name: &str,
        size: u64,
    ) -> Result<Box<dyn Read>, RestoreError> {
        let (_, codec) = Compression::split_file_name(name);
        let relative = format!("{}/{name}", backup_dir(backup_id));
        let reader = ObjectReader::new(repo, relative.clone(), size, runtime.clone());
        pipeline::decode_reader(reader, &relative, codec, repo.keys()).map_err(|e| match e {
            DecodeError::Source(e) => RestoreError::reading(&repo.location(&relative), "opening the archive", e),
            e => RestoreError::Store(StoreError::undecodable(StoredBackup::location(repo, backup_id, name), e)),
        })
    }
}

/// Whether the archives of a backup are whole: for `data` and each tablespace, the first
/// archive (`data.tar…`, `<oid>.tar…`) and then, past Barman's maximum archive size,
/// `data_0001.tar…`, `data_0002.tar…` without a gap, each once (one compression). A chunk
/// missing from the middle or the start would restore short without a word, for a backup
/// without a manifest (Barman's).
fn check_chunks<'a>(location: &str, backup_id: &str, names: impl Iterator<Item = &'a str>) -> Result<(), RestoreError> {
    let mut chunks: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for name in names {
        let stem = &name[..name.find(".tar").unwrap_or(name.len())];
        let (base, number) = match stem.split_once('_') {
            Some((base, number)) => match number.parse::<u32>() {
                Ok(number) if number > 0 => (base, number),
                _ => {
                    return Err(RestoreError::corrupt(
                        location,
                        format!("archive {name} is not named as Barman names chunks"),
                    ))
                }
            },
            None => (stem, 0),
        };
        chunks.entry(base).or_default().push(number);
    }
    for (base, mut numbers) in chunks {
        numbers.sort_unstable();
        let expected: Vec<u32> = (0..numbers.len() as u32).collect();
        if numbers != expected {
            let found: Vec<String> = numbers
                .iter()
                .map(|n| if *n == 0 { format!("{base}.tar") } else { format!("{base}_{n:04}.tar") })
                .collect();
            return Err(RestoreError::corrupt(
                location,
                format!(
                    "backup {backup_id}'s archives of {base} are not whole: found {} where {base}.tar and then \
                     {base}_0001.tar, {base}_0002.tar… follow without a gap, each once",
                    found.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The tablespace oids a backup's `backup.info` lists (Barman's
/// `tablespaces=[('name', oid, 'location'), …]`).
fn info_tablespace_oids(tablespaces: Option<&str>) -> BTreeSet<u32> {
    let Some(text) = tablespaces else { return BTreeSet::new() };
    // Every `, <digits>, '` is an oid between a name and a location; a name holding that
    // text adds an oid without an archive, which refuses the restore: the careful way.
    text.match_indices(", ")
        .filter_map(|(at, _)| {
            let rest = &text[at + 2..];
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            (digits > 0 && rest[digits..].starts_with(", '")).then(|| rest[..digits].parse().ok()).flatten()
        })
        .collect()
}

/// The tablespace a `<oid>.tar…` / `<oid>_0001.tar…` archive holds.
fn tablespace_oid(archive: &str) -> Result<u32, RestoreError> {
    archive.split(['.', '_']).next().and_then(|o| o.parse().ok()).ok_or_else(|| {
        RestoreError::corrupt(archive, "not an archive name pgops knows (data.tar… or <tablespace oid>.tar…)")
    })
}

/// Reads every archive of a backup and checks each file against its manifest, writing
/// nothing. Returns the number of files read and whether there was a manifest.
pub fn verify_backup(repo: &Repository, runtime: &Handle, backup_id: &str) -> Result<(u64, bool), RestoreError> {
    let stored = StoredBackup::load(repo, runtime, backup_id)?;
    let mut manifest = stored.manifest()?;
    let verified = manifest.is_some();
    let mut files = 0;
    for (name, size) in &stored.data {
        let archive = StoredBackup::open(repo, runtime, backup_id, name, *size)?;
        let location = StoredBackup::location(repo, backup_id, name);
        files += extract(&location, archive, None, ArchiveKind::Data, &mut manifest, &mut |_| {})?.files;
    }
    for (name, size) in &stored.tablespaces {
        let kind = ArchiveKind::Tablespace(tablespace_oid(name)?);
        let archive = StoredBackup::open(repo, runtime, backup_id, name, *size)?;
        let location = StoredBackup::location(repo, backup_id, name);
        files += extract(&location, archive, None, kind, &mut manifest, &mut |_| {})?.files;
    }
    all_archived(backup_id, &manifest)?;
    Ok((files, verified))
}

/// Whether every file of the manifest came in an archive (each extracted one was struck
/// off).
fn all_archived(backup_id: &str, manifest: &Option<ManifestFiles>) -> Result<(), RestoreError> {
    match manifest.as_ref().and_then(|m| m.keys().min()) {
        Some(missing) => Err(RestoreError::corrupt(
            format!("backup {backup_id}"),
            format!("{missing} is in the backup's manifest but in no archive"),
        )),
        None => Ok(()),
    }
}

/// Whether `dir` can receive a restore: missing, or an empty directory.
fn ensure_empty(dir: &Path) -> Result<(), RestoreError> {
    match std::fs::read_dir(dir).map(|mut entries| entries.next().is_some()) {
        Ok(true) => Err(RestoreError::refused(
            format!("{} is not empty: pgops restore writes only into an empty (or new) directory", dir.display()),
            "Give a new or empty directory; nothing was written.",
        )),
        Ok(false) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RestoreError::io(dir)(e)),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), RestoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(RestoreError::io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(RestoreError::io(dir))
}

/// Empties a directory this restore filled (to restore another backup into it).
fn remove_contents(dir: &Path) -> Result<(), RestoreError> {
    for entry in std::fs::read_dir(dir).map_err(RestoreError::io(dir))? {
        let path = entry.map_err(RestoreError::io(dir))?.path();
        let removed = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        removed.map_err(RestoreError::io(&path))?;
    }
    Ok(())
}

/// postgresql.auto.conf lines: recovery (`restore_command`, `recovery_target_*`, with a
/// target time as the instant `target_time`) and, unless kept, archiving turned off.
fn recovery_settings(request: &RestoreRequest, restore_command: &str, target_time: Option<DateTime<Utc>>) -> String {
    // Postgres reads backslash escapes in quoted configuration values: double them too.
    let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"));
    let mut lines = vec![format!("restore_command = {}", quote(restore_command))];
    match &request.target {
        RecoveryTarget::End => {}
        RecoveryTarget::Time(typed) => {
            let at = target_time.unwrap_or_else(|| typed.estimate());
            lines.push(format!("recovery_target_time = {}", quote(&target_time::postgres_time(at))));
        }
        RecoveryTarget::Lsn(lsn) => lines.push(format!("recovery_target_lsn = {}", quote(&lsn.to_string()))),
        RecoveryTarget::Xid(xid) => lines.push(format!("recovery_target_xid = {}", quote(&xid.to_string()))),
        RecoveryTarget::Name(name) => lines.push(format!("recovery_target_name = {}", quote(name))),
        RecoveryTarget::Immediate => lines.push("recovery_target = 'immediate'".into()),
    }
    if let Some(action) = &request.target_action {
        lines.push(format!("recovery_target_action = {}", quote(action.as_str())));
    }
    if let Some(timeline) = &request.target_timeline {
        lines.push(format!("recovery_target_timeline = {}", quote(&timeline.to_string())));
    }
    if request.archive == ArchiveAfterRestore::Off {
        lines.push("archive_mode = 'off'".into());
        lines.push("pgops.backup_schedule = ''".into());
        // The pgops worker writes into the repository too (it marks backups left STARTED
        // by its cluster FAILED when it starts): a production backup running then is ours.
        lines.push("pgops.repository = ''".into());
    }
    format!("# Added by pgops restore\n{}\n", lines.join("\n"))
}

/// What choosing a backup needs from the repository beyond backup.info: the history of a
/// numbered `--target-timeline` and, for a transaction target, the end snapshots pgops
/// recorded in its metadata objects.
fn choice_context(
    repo: &Repository,
    runtime: &Handle,
    request: &RestoreRequest,
    backups: &[BackupSummary],
) -> Result<ChoiceContext, RestoreError> {
    let mut context = ChoiceContext::default();
    match request.target_timeline {
        Some(TargetTimeline::Number(timeline)) => context.timeline = Some(timeline_history(repo, runtime, timeline)?),
        Some(TargetTimeline::Current) => {}
        // Postgres' default: from the backup's timeline, the newest one whose history file
        // the archive has; a backup of a branch that timeline does not descend from fails
        // at startup ("not a child of this server's history"), after the whole download.
        None | Some(TargetTimeline::Latest) => {
            let oldest = backups.iter().filter(|b| is_done(b)).filter_map(|b| b.fields.number("timeline")).min();
            if let Some(oldest) = oldest.and_then(|t| u32::try_from(t).ok()) {
                let newest = runtime.block_on(newest_timeline(repo, oldest))?;
                if newest.timeline > 1 {
                    context.timeline = Some(newest);
                }
            }
        }
    }
    if matches!(request.target, RecoveryTarget::Xid(_)) {
        for backup in backups.iter().filter(|b| is_done(b)) {
            let key = format!("{}/{PGOPS_METADATA}", backup_dir(&backup.backup_id));
            let Some(metadata) = runtime.block_on(repo.get(&key))? else {
                continue; // not a pgops backup
            };
            let snapshot = serde_json::from_slice::<serde_json::Value>(&metadata)
                .ok()
                .and_then(|m| m["end_snapshot"].as_str().and_then(Snapshot::parse));
            if let Some(snapshot) = snapshot {
                context.end_snapshots.insert(backup.backup_id.clone(), snapshot);
            }
        }
    }
    Ok(context)
}

/// The newest timeline recovery from a backup on `from` follows with
/// `recovery_target_timeline = 'latest'`, as Postgres finds it (`findNewestTimeLine`):
/// the history files of `from + 1`, `from + 2`, … while the repository has them.
async fn newest_timeline(repo: &Repository, from: u32) -> Result<TimelineHistory, RestoreError> {
    let own = stored_timeline_history(repo, from).await?;
    let mut newest = own.unwrap_or(TimelineHistory { timeline: from, ancestors: Vec::new() });
    while let Some(next) = newest.timeline.checked_add(1) {
        match stored_timeline_history(repo, next).await? {
            Some(history) => newest = history,
            None => break,
        }
    }
    Ok(newest)
}

/// Timeline `timeline`'s history, from its history file in the repository.
fn timeline_history(repo: &Repository, runtime: &Handle, timeline: u32) -> Result<TimelineHistory, RestoreError> {
    runtime.block_on(stored_timeline_history(repo, timeline))?.ok_or_else(|| {
        RestoreError::refused(
            format!(
                "--target-timeline {timeline}: the repository has no history file {timeline:08X}.history, so recovery cannot follow onto that timeline"
            ),
            "pgops verify lists the timelines the repository holds; give one of them, latest or current.",
        )
    })
}

/// Timeline `timeline`'s history, from its history file in the repository (`None`: the
/// repository has none; timeline 1 needs none).
pub async fn stored_timeline_history(
    repo: &Repository,
    timeline: u32,
) -> Result<Option<TimelineHistory>, RestoreError> {
    if timeline == 1 {
        return Ok(Some(TimelineHistory { timeline, ancestors: Vec::new() }));
    }
    let name = format!("{timeline:08X}.history");
    let copies = repo.wal_copies("wals/", &name).await?;
    let Some(object) = copies.into_iter().next() else { return Ok(None) };
    let relative = object.key.strip_prefix(&repo.key("")).unwrap_or(&object.key).to_string();
    let location = repo.location(&relative);
    let file = relative.rsplit('/').next().unwrap_or_default();
    let codec = Compression::of_copy(file, &name)
        .ok_or_else(|| RestoreError::corrupt(&location, "stored with a compression pgops cannot read"))?;
    let text = repo
        .read_object(&object.key, codec)
        .await?
        .ok_or_else(|| RestoreError::corrupt(&location, "vanished while it was read (deleted meanwhile)"))?;
    Ok(Some(TimelineHistory::parse(timeline, &String::from_utf8_lossy(&text))))
}

/// A target time without an offset, read in the zone of the restored configuration.
struct ResolvedTime {
    at: DateTime<Utc>,
    zone: String,
}

/// Restores a backup as `request` says. Nothing is written before the checks that can
/// refuse it (directory not empty, unknown backup, no backup before the target, a pgops
/// backup without a sound manifest) passed. `on_file` is called with each restored file's
/// size, for progress display.
pub fn restore(
    repo: &Repository,
    runtime: &Handle,
    request: &RestoreRequest,
    on_file: &mut dyn FnMut(u64),
) -> Result<RestoreReport, RestoreError> {
    ensure_empty(&request.pgdata)?;
    if let Some(dir) = &request.wal_directory {
        if !dir.is_absolute() {
            return Err(RestoreError::refused(
                format!("the WAL directory \"{}\" is not an absolute path", dir.display()),
                "Give pg_wal's directory as an absolute path; nothing was written.",
            ));
        }
        let tablespaces = request.tablespace_map.values();
        if let Some(other) = std::iter::once(&request.pgdata).chain(tablespaces).find(|other| overlap(dir, other)) {
            return Err(RestoreError::refused(
                format!(
                    "the WAL directory \"{}\" overlaps \"{}\", a directory this restore fills",
                    dir.display(),
                    other.display()
                ),
                "Give pg_wal a directory outside the data and tablespace directories (and not above them); nothing was written.",
            ));
        }
        ensure_empty(dir)?;
    }
    runtime.block_on(ownership::check_keys(repo)).map_err(|e| match e {
        OwnershipError::Store(e) => RestoreError::Store(e),
        e => RestoreError::refused(e.to_string(), restore_key_hint(&e)),
    })?;
    let backups = runtime.block_on(list_backups(repo))?;
    let context = choice_context(repo, runtime, request, &backups)?;
    let mut target = request.target.clone();
    loop {
        let choice = choose_backup(&backups, &request.backup, &target, &context)?;
        let backup = choice.backup;
        let stored = StoredBackup::load(repo, runtime, &backup.backup_id)?;
        let mut warnings = Vec::new();
        let mut manifest = if request.verify {
            stored.manifest().map_err(|e| {
                RestoreError::refused(
                    format!("{e}; pgops restore refuses it"),
                    "Restore another backup (--backup ID), or pass --no-verify to restore this one unchecked.",
                )
            })?
        } else {
            warnings.push(format!(
                "--no-verify: the files of backup {} are not checked against its backup_manifest",
                backup.backup_id
            ));
            None
        };

        create_private_dir(&request.pgdata)?;
        let root = SafeDir::open_root(&request.pgdata).map_err(RestoreError::io(&request.pgdata))?;
        let mut report = RestoreReport {
            backup_id: backup.backup_id.clone(),
            files: 0,
            bytes: 0,
            verified: manifest.is_some(),
            notes: vec![format!("backup {}: {}", backup.backup_id, choice.reason)],
            warnings,
        };
        let open = |name: &str, size: u64| StoredBackup::open(repo, runtime, &backup.backup_id, name, size);
        for (name, size) in &stored.data {
            let location = StoredBackup::location(repo, &backup.backup_id, name);
            let archive = open(name, *size)?;
            let extracted = extract(&location, archive, Some(&root), ArchiveKind::Data, &mut manifest, on_file)?;
            report.files += extracted.files;
            report.bytes += extracted.bytes;
        }

        // A time without an offset is read in the restored configuration's timezone; the
        // backup was chosen by the latest instant the time can be, so it may end after the
        // real one: then an older one, chosen by the instant, replaces it.
        let resolved = match request.target {
            RecoveryTarget::Time(TargetTime::Local(local)) => {
                let (zone, tz) = target_time::server_timezone(&request.pgdata)?;
                let at = target_time::instant_in(local, tz);
                let ends_after = backup.fields.get("end_time").and_then(barman_instant).is_none_or(|end| end > at);
                if ends_after {
                    let first_guess = target == request.target;
                    if matches!(request.backup, BackupChoice::Id(_)) || !first_guess {
                        return Err(RestoreError::refused(
                            format!(
                                "backup {} ends at {}, after the recovery target {local} {zone} ({} UTC): recovery from it cannot stop there",
                                backup.backup_id,
                                backup.fields.get("end_time").unwrap_or("?"),
                                target_time::postgres_time(at)
                            ),
                            "Choose an older backup (--backup ID), or --backup latest.",
                        ));
                    }
                    remove_contents(&request.pgdata)?;
                    target = RecoveryTarget::Time(TargetTime::At(at));
                    continue;
                }
                Some(ResolvedTime { at, zone })
            }
            _ => None,
        };
        match (&request.target, &resolved) {
            (RecoveryTarget::Time(TargetTime::Local(local)), Some(resolved)) => report.notes.push(format!(
                "recovery target: {local} in the backup's timezone {} = {} UTC (recovery_target_time)",
                resolved.zone,
                target_time::postgres_time(resolved.at)
            )),
            (RecoveryTarget::Time(typed), _) => report.notes.push(format!(
                "recovery target: {} UTC (recovery_target_time)",
                target_time::postgres_time(typed.estimate())
            )),
            _ => {}
        }

        restore_tablespaces(repo, runtime, request, &stored, &mut manifest, &mut report, on_file)?;
        all_archived(&backup.backup_id, &manifest)?;
        if let (Some(bytes), true) = (&stored.manifest_bytes, report.verified) {
            let path = request.pgdata.join("backup_manifest");
            std::fs::write(&path, bytes).map_err(RestoreError::io(path))?;
        }
        if let Some(restore_command) = &request.restore_command {
            let auto_conf = request.pgdata.join("postgresql.auto.conf");
            let mut conf = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&auto_conf)
                .map_err(RestoreError::io(&auto_conf))?;
            conf.write_all(recovery_settings(request, restore_command, resolved.map(|r| r.at)).as_bytes())
                .map_err(RestoreError::io(&auto_conf))?;
            let signal = request.pgdata.join("recovery.signal");
            std::fs::write(&signal, "").map_err(RestoreError::io(signal))?;
        }
        // Backups of a standby by other tools (or older pgops) hold its standby.signal: kept,
        // the restored cluster would stream from the original's primary instead of
        // recovering from the repository.
        let standby_signal = request.pgdata.join("standby.signal");
        if standby_signal.exists() {
            std::fs::remove_file(&standby_signal).map_err(RestoreError::io(&standby_signal))?;
            report.notes.push("standby.signal (the backup was taken on a standby) was removed: the restored cluster recovers from the repository, not as a standby of the original's primary".into());
        }
        if let Some(dir) = &request.wal_directory {
            link_wal_directory(&request.pgdata, dir)?;
        }
        match request.sync {
            true => {
                let tablespaces = request.tablespace_map.values().filter(|dir| dir.exists());
                let elsewhere = tablespaces.chain(&request.wal_directory);
                for dir in std::iter::once(&request.pgdata).chain(elsewhere) {
                    durable::sync_tree(dir).map_err(|(path, cause)| RestoreError::Io { path, cause })?;
                }
            }
            false => report.warnings.push(
                "--no-sync: the restored files were not synced to disk; a crash of this machine may lose or empty some"
                    .into(),
            ),
        }
        report.notes.push(match request.archive {
            ArchiveAfterRestore::Off => format!(
                "archiving is off in the restored cluster (archive_mode = 'off', pgops.backup_schedule = '', pgops.repository = '' \
                 appended to postgresql.auto.conf), so that it writes nothing into {}; to archive from it, \
                 ALTER SYSTEM SET pgops.repository = '<a repository of its own>'; ALTER SYSTEM RESET archive_mode; \
                 ALTER SYSTEM RESET pgops.backup_schedule; and restart",
                repo.location("")
            ),
            ArchiveAfterRestore::Keep => format!(
                "archiving settings kept as backed up (--archive keep): once recovery ends, the restored cluster archives WAL \
                 and takes scheduled backups where its configuration says, which may be {}",
                repo.location("")
            ),
        });
        return Ok(report);
    }
}

/// Whether one of two absolute directories is the other or lies below it (as written: the
/// paths are not resolved, they may not exist yet).
fn overlap(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// pg_wal on its own volume: the restored pg_wal, which holds only an empty
/// archive_status (pgops and Barman leave pg_wal's contents out of a backup; a
/// pg_basebackup `-X fetch` backup holds WAL there, and is refused), becomes a link to
/// `dir`, as `initdb --waldir` makes it. `dir` is made first, so that no moment leaves the
/// data directory without a pg_wal it can use only after the link is there.
fn link_wal_directory(pgdata: &Path, dir: &Path) -> Result<(), RestoreError> {
    let pg_wal = pgdata.join("pg_wal");
    let archive_status = pg_wal.join("archive_status");
    // What is in `dir` besides `allowed` (a missing `dir` holds nothing).
    let stray = |dir: &Path, allowed: &Path| -> Result<Option<PathBuf>, RestoreError> {
        let entries = match std::fs::read_dir(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            listed => listed.map_err(RestoreError::io(dir))?,
        };
        for entry in entries {
            let path = entry.map_err(RestoreError::io(dir))?.path();
            if path != allowed {
                return Ok(Some(path));
            }
        }
        Ok(None)
    };
    if let Some(path) = stray(&archive_status, Path::new(""))?.or(stray(&pg_wal, &archive_status)?) {
        return Err(RestoreError::refused(
            format!(
                "the restored pg_wal holds {}, which a restore into a WAL directory of its own ({}) does not move",
                path.display(),
                dir.display()
            ),
            "Empty the data directory, then restore without a WAL directory of its own and move pg_wal's contents yourself.",
        ));
    }
    // Checked empty before the restore began; checked again, as hours may have passed.
    ensure_empty(dir)?;
    create_private_dir(&dir.join("archive_status"))?;
    create_private_dir(dir)?;
    if let Some(parent) = dir.parent() {
        // The new directory's own entry made durable (sync_tree syncs what lies below dir).
        std::fs::File::open(parent).and_then(|parent| parent.sync_all()).map_err(RestoreError::io(parent))?;
    }
    for empty in [&archive_status, &pg_wal] {
        match std::fs::remove_dir(empty) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(RestoreError::io(empty)(e)),
            _ => {}
        }
    }
    std::os::unix::fs::symlink(dir, &pg_wal).map_err(RestoreError::io(&pg_wal))
}

/// Tablespaces: where tablespace_map says (or --tablespace-map), linked from pg_tblspc.
fn restore_tablespaces(
    repo: &Repository,
    runtime: &Handle,
    request: &RestoreRequest,
    stored: &StoredBackup,
    manifest: &mut Option<ManifestFiles>,
    report: &mut RestoreReport,
    on_file: &mut dyn FnMut(u64),
) -> Result<(), RestoreError> {
    let map_path = request.pgdata.join("tablespace_map");
    // Where the backup says each tablespace was: only a suggestion. Whoever can write the
    // repository writes this file, so writing there could put files anywhere the restoring
    // user may write; every location comes from --tablespace-map.
    let backed_up: BTreeMap<u32, String> = std::fs::read_to_string(&map_path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' ').and_then(|(oid, path)| Some((oid.parse().ok()?, path.to_string()))))
        .collect();
    let locations = request.tablespace_map.clone();
    let archived: BTreeSet<u32> =
        stored.tablespaces.iter().map(|(name, _)| tablespace_oid(name)).collect::<Result<_, _>>()?;
    if let Some((oid, path)) = backed_up.iter().find(|(oid, _)| !archived.contains(oid)) {
        return Err(RestoreError::corrupt(
            &stored.location,
            format!(
                "the backup's tablespace_map names tablespace {oid} (at {path}), but backup {} has no archive of it: \
                 restored without it, the database would come back without that tablespace's data, and Postgres would \
                 link {path} itself",
                stored.backup_id
            ),
        ));
    }
    let mut restored = BTreeMap::new();
    for (name, size) in &stored.tablespaces {
        let oid = tablespace_oid(name)?;
        let location = locations.get(&oid).ok_or_else(|| match backed_up.get(&oid) {
            Some(path) => RestoreError::refused(
                format!(
                    "tablespace {oid} was at {path} (the backup's tablespace_map says so, and the repository is not trusted to choose where files go)"
                ),
                format!("Pass --tablespace-map {oid}=DIR, with {path} or another directory."),
            ),
            None => RestoreError::refused(
                format!("no location for tablespace {oid}"),
                format!("Pass --tablespace-map {oid}=DIR."),
            ),
        })?;
        if !location.is_absolute() {
            return Err(RestoreError::refused(
                format!("tablespace {oid}'s location {} is not absolute", location.display()),
                format!("Pass --tablespace-map {oid}=/absolute/dir."),
            ));
        }
        // The first archive of a tablespace (they come in order: `<oid>.tar` before its chunks).
        if restored.insert(oid, location.clone()).is_none() {
            ensure_empty(location)?;
            create_private_dir(location)?;
        }
        let dir = SafeDir::open_root(location).map_err(RestoreError::io(location))?;
        let archive = StoredBackup::open(repo, runtime, &stored.backup_id, name, *size)?;
        let object = StoredBackup::location(repo, &stored.backup_id, name);
        let extracted = extract(&object, archive, Some(&dir), ArchiveKind::Tablespace(oid), manifest, on_file)?;
        report.files += extracted.files;
        report.bytes += extracted.bytes;
        let links = request.pgdata.join("pg_tblspc");
        std::fs::create_dir_all(&links).map_err(RestoreError::io(&links))?;
        let link = links.join(oid.to_string());
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(location, &link).map_err(RestoreError::io(&link))?;
    }
    // Postgres makes the links tablespace_map names: it names only the locations given
    // here, never one the repository said (on a clone next to production, that would be
    // production's tablespace).
    if map_path.exists() {
        match restored.is_empty() {
            true => std::fs::remove_file(&map_path).map_err(RestoreError::io(&map_path))?,
            false => {
                let map: String = restored.iter().map(|(oid, path)| format!("{oid} {}\n", path.display())).collect();
                std::fs::write(&map_path, map).map_err(RestoreError::io(&map_path))?;
            }
        }
    }
    Ok(())
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
        let reader = ObjectReader::new(&repo, "base/x/data.tar".into(), content.len() as u64, runtime.handle().clone());
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
    use crate::backup::manifest::{self, ManifestFile, WalRange};
    use crate::store::LocalStore;
    use std::sync::Arc;

    fn backup(id: &str, status: &str, end_time: &str, end_lsn: &str) -> BackupSummary {
        BackupSummary {
            backup_id: id.into(),
            fields: InfoFields::parse(&format!("status={status}\nend_time={end_time}\nend_xlog={end_lsn}\n")),
            stored_bytes: 1,
        }
    }

    fn time(text: &str) -> RecoveryTarget {
        RecoveryTarget::Time(TargetTime::parse(text).unwrap())
    }

    #[test]
    fn chooses_the_newest_done_backup_before_the_target() {
        let backups = [
            backup("20261125T010000", "DONE", "2026-11-25 01:00:05.000000+00:00", "0/3000000"),
            backup("20261125T020000", "DONE", "2026-11-25 02:00:05.000000+00:00", "0/5000000"),
            backup("20261125T030000", "FAILED", "None", "None"),
        ];
        let chosen = |requested: Option<&str>, target: &RecoveryTarget| {
            let requested = requested.map_or(BackupChoice::Latest, |text| text.parse().unwrap());
            choose_backup(&backups, &requested, target, &ChoiceContext::default()).map(|c| c.backup.backup_id.clone())
        };
        assert_eq!(chosen(None, &RecoveryTarget::End).unwrap(), "20261125T020000");
        assert_eq!(chosen(None, &time("2026-11-25 01:30:00+00")).unwrap(), "20261125T010000");
        assert_eq!(chosen(None, &time("2026-11-25T03:00:00Z")).unwrap(), "20261125T020000");
        let lsn = RecoveryTarget::Lsn(Lsn(0x4000000));
        assert_eq!(chosen(Some("latest"), &lsn).unwrap(), "20261125T010000");
        assert!(chosen(None, &time("2026-11-25 00:59:00+00")).unwrap_err().shown().contains("the oldest ends at"));
        // Without an offset, first by the latest instant the time can be (UTC-12).
        assert_eq!(chosen(None, &time("2026-11-24 14:30:00")).unwrap(), "20261125T020000");
        assert!(chosen(Some("20261125T030000"), &RecoveryTarget::End).unwrap_err().shown().contains("FAILED"));
        assert!(chosen(Some("nope"), &RecoveryTarget::End).unwrap_err().shown().contains("no backup nope"));
    }

    fn on_timeline(id: &str, end_lsn: &str, timeline: u32) -> BackupSummary {
        BackupSummary {
            backup_id: id.into(),
            fields: InfoFields::parse(&format!("status=DONE\nend_xlog={end_lsn}\ntimeline={timeline}\n")),
            stored_bytes: 1,
        }
    }

    /// An in-place point-in-time restore from A branched timeline 2 off timeline 1 at
    /// 0/7000000; B, taken on timeline 1 after that point, is the abandoned branch's.
    /// Without --target-timeline Postgres follows the newest timeline (latest), which B
    /// cannot reach: A is chosen, as with --target-timeline latest; current takes B.
    #[test]
    fn without_a_target_timeline_the_backup_can_follow_onto_the_newest_timeline() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let store = tempfile::tempdir().unwrap();
        let repo = Repository::new(Arc::new(LocalStore::new(store.path())), "main");
        let history = Bytes::from_static(b"1\t0/7000000\tbefore 2026-11-25 02:30:00+00\n");
        runtime.block_on(repo.put("wals/00000002.history", history)).unwrap();
        let backups = [on_timeline("20261125T010000", "0/5000000", 1), on_timeline("20261125T030000", "0/9000000", 1)];
        let pgdata = tempfile::tempdir().unwrap();
        let chosen = |timeline: Option<TargetTimeline>| {
            let request = RestoreRequest { target_timeline: timeline, ..request(pgdata.path(), RecoveryTarget::End) };
            let context = choice_context(&repo, runtime.handle(), &request, &backups).unwrap();
            choose_backup(&backups, &BackupChoice::Latest, &RecoveryTarget::End, &context)
                .unwrap()
                .backup
                .backup_id
                .clone()
        };
        assert_eq!(chosen(None), "20261125T010000");
        assert_eq!(chosen(Some(TargetTimeline::Latest)), "20261125T010000");
        assert_eq!(chosen(Some(TargetTimeline::Current)), "20261125T030000");
        // A third timeline off the second: still A (B is on no part of timeline 3's history).
        let history = Bytes::from_static(b"1\t0/7000000\tx\n2\t0/B000000\ty\n");
        runtime.block_on(repo.put("wals/00000003.history", history)).unwrap();
        assert_eq!(chosen(None), "20261125T010000");
    }

    #[test]
    fn a_transaction_or_restore_point_target_takes_a_backup_that_can_reach_it() {
        let backups = [
            on_timeline("20261125T010000", "0/3000000", 1),
            on_timeline("20261125T020000", "0/5000000", 1),
            on_timeline("20261125T030000", "0/7000000", 1),
        ];
        let xid = |x: &str| RecoveryTarget::Xid(x.parse().unwrap());
        let choose = |target: &RecoveryTarget, context: &ChoiceContext| {
            choose_backup(&backups, &BackupChoice::Latest, target, context)
                .map(|c| (c.backup.backup_id.clone(), c.reason))
        };
        // Nothing recorded (Barman's, older pgops backups): the oldest, and why.
        let (id, reason) = choose(&xid("750"), &ChoiceContext::default()).unwrap();
        assert_eq!(id, "20261125T010000");
        assert!(reason.contains("no backup records that transaction 750 was still running"), "{reason}");

        let mut context = ChoiceContext::default();
        for (id, snapshot) in
            [("20261125T010000", "700:720:"), ("20261125T020000", "740:760:750"), ("20261125T030000", "800:810:")]
        {
            context.end_snapshots.insert(id.into(), Snapshot::parse(snapshot).unwrap());
        }
        // 750 was running when the second backup ended, had completed when the third did.
        let (id, reason) = choose(&xid("750"), &context).unwrap();
        assert_eq!(id, "20261125T020000");
        assert!(reason.contains("end snapshot shows transaction 750 not yet completed"), "{reason}");
        assert_eq!(choose(&xid("815"), &context).unwrap().0, "20261125T030000");
        let err = choose(&xid("650"), &context).unwrap_err().shown();
        assert!(err.contains("transaction 650 had completed before the oldest DONE backup"), "{err}");

        // A restore point's position is not recorded: the oldest.
        let (id, reason) = choose(&RecoveryTarget::Name("before upgrade".into()), &context).unwrap();
        assert_eq!(id, "20261125T010000");
        assert!(reason.contains("restore point 'before upgrade' lies is not recorded"), "{reason}");
    }

    #[test]
    fn snapshots_read_32_bit_transaction_ids_in_their_epoch() {
        // Epoch 1: xmax is 2^32 + 714.
        let snapshot = Snapshot::parse("4294967996:4294968010:4294968000").unwrap();
        assert!(snapshot.not_completed(714) && snapshot.not_completed(4294968020));
        assert!(snapshot.not_completed(704), "running");
        assert!(!snapshot.not_completed(700) && !snapshot.not_completed(4294967990));
        assert_eq!(Snapshot::parse("1:2"), None);
        assert_eq!(Snapshot::parse("1:2:x"), None);
    }

    #[test]
    fn a_backup_is_latest_or_an_id() {
        assert_eq!("latest".parse(), Ok(BackupChoice::Latest));
        assert_eq!("20261125T020000".parse(), Ok(BackupChoice::Id("20261125T020000".parse().unwrap())));
        assert_eq!("../x".parse::<BackupChoice>(), Err(NotABackupId("../x".into())));
    }

    #[test]
    fn target_timelines_are_latest_current_or_a_number() {
        let timeline = |text: &str| text.parse::<TargetTimeline>();
        assert_eq!(timeline("latest"), Ok(TargetTimeline::Latest));
        assert_eq!(timeline("current"), Ok(TargetTimeline::Current));
        assert_eq!(timeline("3"), Ok(TargetTimeline::Number(3)));
        assert_eq!(TargetTimeline::Number(3).to_string(), "3");
        for bad in ["0", "+3", "-1", "Latest", "3 ", "", "4294967296"] {
            assert_eq!(timeline(bad), Err(NotATimeline(bad.into())), "{bad:?}");
        }
    }

    #[test]
    fn a_target_timeline_takes_only_backups_that_can_follow_onto_it() {
        let backups = [
            on_timeline("20261125T010000", "0/3000000", 1),
            on_timeline("20261125T020000", "0/5000000", 1),
            on_timeline("20261125T030000", "0/7000000", 2),
            on_timeline("20261125T040000", "0/9000000", 4),
        ];
        // Timeline 3 branched off 1 at 0/4000000 into 2, and off 2 at 0/8000000.
        let history = "1\t0/4000000\tno recovery target specified\n\n2\t0/8000000\tbefore 2026-11-25 03:30:00+00\n";
        let context = |timeline| ChoiceContext {
            timeline: Some(TimelineHistory::parse(timeline, history)),
            ..Default::default()
        };
        let choose = |target: &RecoveryTarget, context: &ChoiceContext| {
            choose_backup(&backups, &BackupChoice::Latest, target, context)
                .map(|c| (c.backup.backup_id.clone(), c.reason))
        };
        assert_eq!(choose(&RecoveryTarget::End, &ChoiceContext::default()).unwrap().0, "20261125T040000");
        let (id, reason) = choose(&RecoveryTarget::End, &context(3)).unwrap();
        assert_eq!(id, "20261125T030000", "not timeline 4's, which is not in 3's history");
        assert!(reason.contains("can follow onto timeline 3"), "{reason}");
        // The backup of timeline 1 that ended after 2 branched off cannot follow.
        let name = RecoveryTarget::Name("x".into());
        assert_eq!(choose(&RecoveryTarget::Lsn(Lsn(0x6000000)), &context(3)).unwrap().0, "20261125T010000");
        assert_eq!(choose(&name, &context(3)).unwrap().0, "20261125T010000");
        assert_eq!(choose(&RecoveryTarget::End, &context(4)).unwrap().0, "20261125T040000");
        let only_one = TimelineHistory::parse(1, "");
        let err = choose_backup(
            &backups[2..3],
            &BackupChoice::Latest,
            &RecoveryTarget::End,
            &ChoiceContext { timeline: Some(only_one), ..Default::default() },
        )
        .unwrap_err()
        .shown();
        assert!(err.contains("no DONE backup that can follow onto timeline 1"), "{err}");
    }

    fn request(pgdata: &Path, target: RecoveryTarget) -> RestoreRequest {
        RestoreRequest {
            pgdata: pgdata.into(),
            backup: BackupChoice::Latest,
            target,
            target_action: None,
            target_timeline: None,
            tablespace_map: BTreeMap::new(),
            wal_directory: None,
            restore_command: Some("pgops wal-fetch %f %p".into()),
            archive: ArchiveAfterRestore::Off,
            verify: true,
            sync: true,
        }
    }

    #[test]
    fn recovery_settings_quote_values_write_an_instant_and_turn_archiving_off() {
        let mut request = request(Path::new("/x"), RecoveryTarget::Name("before 'drop'".into()));
        request.target_action = Some(TargetAction::Promote);
        assert_eq!(
            recovery_settings(&request, "pgops wal-fetch %f %p", None),
            "# Added by pgops restore\nrestore_command = 'pgops wal-fetch %f %p'\nrecovery_target_name = 'before ''drop'''\n\
             recovery_target_action = 'promote'\narchive_mode = 'off'\npgops.backup_schedule = ''\npgops.repository = ''\n"
        );
        request.archive = ArchiveAfterRestore::Keep;
        request.target = time("2026-11-25 07:00:00-05:00");
        assert_eq!(
            recovery_settings(&request, "pgops wal-fetch %f %p", None),
            "# Added by pgops restore\nrestore_command = 'pgops wal-fetch %f %p'\n\
             recovery_target_time = '2026-11-25 12:00:00.000000+00'\nrecovery_target_action = 'promote'\n"
        );
        // A shell-quoted path with a quote in it: Postgres unescapes backslashes in the value.
        request.target = RecoveryTarget::End;
        request.target_action = None;
        assert_eq!(
            recovery_settings(&request, r"'/opt/it'\''s/pgops' wal-fetch %f %p", None),
            concat!(
                "# Added by pgops restore\n",
                r"restore_command = '''/opt/it''\\''''s/pgops'' wal-fetch %f %p'",
                "\n"
            )
        );
    }

    #[test]
    fn unsafe_archive_paths_are_refused() {
        assert!(safe_relative("data.tar", Path::new("../etc/passwd")).is_err());
        assert!(safe_relative("data.tar", Path::new("/etc/passwd")).is_err());
        assert_eq!(safe_relative("data.tar", Path::new("./")).unwrap(), PathBuf::new());
        assert_eq!(safe_relative("data.tar", Path::new("./base/1/1259")).unwrap(), PathBuf::from("base/1/1259"));
    }

    /// One member of a crafted archive.
    enum Crafted<'a> {
        Dir(&'a str),
        File(&'a str, &'a [u8]),
        Symlink(&'a str, &'a str),
        HardLink(&'a str, &'a str),
    }

    fn tar_of(members: &[Crafted]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for member in members {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o700);
            match member {
                Crafted::Dir(name) => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    builder.append_data(&mut header, name, io::empty()).unwrap();
                }
                Crafted::File(name, content) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(content.len() as u64);
                    builder.append_data(&mut header, name, *content).unwrap();
                }
                Crafted::Symlink(name, target) | Crafted::HardLink(name, target) => {
                    let kind = if matches!(member, Crafted::Symlink(..)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    };
                    header.set_entry_type(kind);
                    header.set_size(0);
                    builder.append_link(&mut header, name, target).unwrap();
                }
            }
        }
        builder.into_inner().unwrap()
    }

    /// The manifest pgops would write for the regular files among `members`.
    fn manifest_of(members: &[Crafted]) -> String {
        let files: Vec<ManifestFile> = members
            .iter()
            .filter_map(|m| match m {
                Crafted::File(name, content) => Some(ManifestFile {
                    path: name.to_string(),
                    size: content.len() as u64,
                    modified: 0,
                    crc32c: crc32c::crc32c(content),
                }),
                _ => None,
            })
            .collect();
        let wal = WalRange { timeline: 1, start_lsn: "0/2000028".into(), end_lsn: "0/2000100".into() };
        manifest::render(1, 7300, &files, &wal)
    }

    fn extract_into(dir: &Path, tar: &[u8], manifest: Option<ManifestFiles>) -> Result<Extracted, RestoreError> {
        let root = SafeDir::open_root(dir).unwrap();
        extract("data.tar", tar, Some(&root), ArchiveKind::Data, &mut manifest.clone(), &mut |_| {})
    }

    #[test]
    fn an_archive_cannot_write_outside_the_directory() {
        let target = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let evil = [Crafted::Symlink("evil", outside.path().to_str().unwrap()), Crafted::File("evil/pwned", b"owned")];
        let manifest = manifest_files(manifest_of(&evil).as_bytes()).unwrap();
        let err = extract_into(target.path(), &tar_of(&evil), Some(manifest)).unwrap_err().shown();
        assert!(err.contains("archive member evil is a symbolic link"), "{err}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        assert!(std::fs::symlink_metadata(target.path().join("evil")).is_err(), "no link was made");

        // Nor through a link that is already there.
        std::os::unix::fs::symlink(outside.path(), target.path().join("base")).unwrap();
        let err =
            extract_into(target.path(), &tar_of(&[Crafted::File("base/1/1259", b"x")]), None).unwrap_err().shown();
        assert!(err.contains("is not a directory the restore made"), "{err}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);

        let err = extract_into(target.path(), &tar_of(&[Crafted::HardLink("passwd", "/etc/passwd")]), None)
            .unwrap_err()
            .shown();
        assert!(err.contains("archive member passwd is a Link entry"), "{err}");
        let err = extract_into(target.path(), &tar_of(&[Crafted::Symlink("./", "/")]), None).unwrap_err().shown();
        assert!(err.contains("is a Symlink entry at the archive's root"), "{err}");
        assert!(!target.path().join("passwd").exists());
    }

    /// Reads as a store that refuses access, as [`ObjectReader`] reports it.
    struct Refusing;

    impl Read for Refusing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other(StoreError {
                operation: "GetObject",
                location: "s3://bucket/main/base/x/data.tar".into(),
                kind: StoreErrorKind::AccessDenied,
                cause: "HTTP 403".into(),
            }))
        }
    }

    #[test]
    fn a_store_failure_while_reading_an_archive_is_a_store_error_and_bad_bytes_are_corruption() {
        let is_denied =
            |err: &RestoreError| matches!(err, RestoreError::Store(e) if e.kind == StoreErrorKind::AccessDenied);
        let err = extract("data.tar", Refusing, None, ArchiveKind::Data, &mut None, &mut |_| {}).unwrap_err();
        assert!(is_denied(&err), "{err:?}");
        assert!(err.hint().contains("pgops.s3_secret_access_key"), "the store's hint: {}", err.hint());
        // In the middle of a member's data.
        let tar = tar_of(&[Crafted::File("PG_VERSION", b"15\n")]);
        let err = extract("data.tar", tar[..512].chain(Refusing), None, ArchiveKind::Data, &mut None, &mut |_| {})
            .unwrap_err();
        assert!(is_denied(&err), "{err:?}");

        let garbage = vec![b'A'; 1024];
        let err = extract("data.tar", &garbage[..], None, ArchiveKind::Data, &mut None, &mut |_| {}).unwrap_err();
        assert!(matches!(&err, RestoreError::Corrupt { location, .. } if location == "data.tar"), "{err:?}");
        assert!(err.hint().contains("restore another backup"), "{}", err.hint());
    }

    #[test]
    fn a_file_that_fails_the_manifest_never_appears_under_its_name() {
        let target = tempfile::tempdir().unwrap();
        let backed_up = [Crafted::Dir("./"), Crafted::Dir("base/"), Crafted::File("PG_VERSION", b"15\n")];
        let manifest = manifest_files(manifest_of(&backed_up).as_bytes()).unwrap();
        let changed = tar_of(&[Crafted::Dir("base/"), Crafted::File("PG_VERSION", b"14\n")]);
        let err = extract_into(target.path(), &changed, Some(manifest.clone())).unwrap_err().shown();
        assert!(err.contains("PG_VERSION does not match the backup's manifest"), "{err}");
        let left: Vec<_> = std::fs::read_dir(target.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["base"], "neither PG_VERSION nor its partial file is left");

        let good = tempfile::tempdir().unwrap();
        let extracted = extract_into(good.path(), &tar_of(&backed_up), Some(manifest)).unwrap();
        assert_eq!((extracted.files, extracted.bytes), (1, 3));
        assert_eq!(std::fs::read(good.path().join("PG_VERSION")).unwrap(), b"15\n");
    }

    #[test]
    fn pg_wal_stored_as_a_link_becomes_a_directory_and_tablespace_links_are_left_to_the_map() {
        let target = tempfile::tempdir().unwrap();
        let old_backup = [
            Crafted::Symlink("pg_wal", "/var/lib/postgresql/wal"),
            Crafted::Dir("pg_tblspc/"),
            Crafted::Symlink("pg_tblspc/16385", "/mnt/fast"),
        ];
        extract_into(target.path(), &tar_of(&old_backup), None).unwrap();
        let pg_wal = std::fs::symlink_metadata(target.path().join("pg_wal")).unwrap();
        assert!(pg_wal.is_dir(), "a directory, not a link");
        assert!(target.path().join("pg_wal/archive_status").is_dir());
        assert!(std::fs::symlink_metadata(target.path().join("pg_tblspc/16385")).is_err());
    }

    #[test]
    fn pg_wal_becomes_a_link_to_its_own_directory_only_when_it_holds_no_wal() {
        let target = tempfile::tempdir().unwrap();
        let (pgdata, wal) = (target.path().join("data"), target.path().join("wal/pg_wal"));
        std::fs::create_dir_all(pgdata.join("pg_wal/archive_status")).unwrap();
        link_wal_directory(&pgdata, &wal).unwrap();
        assert_eq!(std::fs::read_link(pgdata.join("pg_wal")).unwrap(), wal);
        assert!(pgdata.join("pg_wal/archive_status").is_dir());

        let other = target.path().join("other");
        std::fs::create_dir_all(other.join("pg_wal/archive_status")).unwrap();
        std::fs::write(other.join("pg_wal/000000010000000000000001"), b"wal").unwrap();
        let err = link_wal_directory(&other, &target.path().join("wal2")).unwrap_err().to_string();
        assert!(err.contains("000000010000000000000001"), "{err}");
        assert!(std::fs::symlink_metadata(other.join("pg_wal")).unwrap().is_dir(), "left as it was");
        assert!(!target.path().join("wal2").exists());

        // Filled while the restore ran: refused, pg_wal left as it was.
        let late = target.path().join("late");
        std::fs::create_dir_all(late.join("pg_wal/archive_status")).unwrap();
        std::fs::create_dir_all(target.path().join("wal3")).unwrap();
        std::fs::write(target.path().join("wal3/000000010000000000000001"), b"wal").unwrap();
        let err = link_wal_directory(&late, &target.path().join("wal3")).unwrap_err().to_string();
        assert!(err.contains("is not empty"), "{err}");
        assert!(std::fs::symlink_metadata(late.join("pg_wal")).unwrap().is_dir(), "left as it was");
    }

    #[test]
    fn a_wal_directory_overlapping_the_data_or_a_tablespace_directory_is_refused_before_anything_is_written() {
        let (_store, repo, runtime) = repository_with(CLUSTER, true);
        let target = tempfile::tempdir().unwrap();
        let pgdata = target.path().join("data");
        for wal in [pgdata.join("pg_wal"), target.path().to_path_buf(), target.path().join("ts/pg_wal")] {
            let mut request = request(&pgdata, RecoveryTarget::End);
            request.tablespace_map.insert(16385, target.path().join("ts"));
            request.wal_directory = Some(wal.clone());
            let err = restore(&repo, runtime.handle(), &request, &mut |_| {}).unwrap_err().to_string();
            assert!(err.contains("overlaps"), "{}: {err}", wal.display());
            assert!(!pgdata.exists(), "nothing written");
        }
    }

    #[test]
    fn the_manifest_must_match_its_own_checksum() {
        let text = manifest_of(&[Crafted::File("PG_VERSION", b"15\n")]);
        assert!(manifest_files(text.as_bytes()).is_ok());
        let tampered = text.replace("\"Size\": 3", "\"Size\": 4");
        let err = manifest_files(tampered.as_bytes()).unwrap_err();
        assert!(err.contains("fails its own checksum"), "{err}");
    }

    /// A repository in a temporary directory holding one backup, `20261125T020000`, with
    /// `members` as its data archive, taken by pgops (or Barman) and ending at 02:00:05 UTC.
    fn repository_with(
        members: &[Crafted],
        by_pgops: bool,
    ) -> (tempfile::TempDir, Repository, tokio::runtime::Runtime) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let store = tempfile::tempdir().unwrap();
        let repo = Repository::new(Arc::new(LocalStore::new(store.path())), "main");
        let label = if by_pgops { "pgops backup 20261125T020000" } else { "Barman backup cloud 20261125T020000" };
        let info = format!(
            "backup_label='START WAL LOCATION: 0/2000028\\nLABEL: {label}\\n'\nend_time=2026-11-25 02:00:05.000000+00:00\n\
             end_xlog=0/2000100\nstatus=DONE\ntimeline=1\n"
        );
        let dir = "base/20261125T020000";
        runtime.block_on(repo.put(&format!("{dir}/backup.info"), info.into())).unwrap();
        runtime.block_on(repo.put(&format!("{dir}/data.tar"), tar_of(members).into())).unwrap();
        if by_pgops {
            runtime.block_on(repo.put(&format!("{dir}/backup_manifest"), manifest_of(members).into())).unwrap();
            runtime.block_on(repo.put(&format!("{dir}/{PGOPS_METADATA}"), "{}".into())).unwrap();
        }
        (store, repo, runtime)
    }

    const CLUSTER: &[Crafted<'static>] = &[
        Crafted::File("PG_VERSION", b"15\n"),
        Crafted::File("postgresql.conf", b"timezone = 'America/New_York'\n"),
        Crafted::Dir("pg_wal/"),
    ];

    #[test]
    fn a_pgops_backup_without_a_sound_manifest_is_refused_unless_told() {
        let (_store, repo, runtime) = repository_with(CLUSTER, true);
        let pgdata = tempfile::tempdir().unwrap();
        let restored = pgdata.path().join("restored");
        let report = restore(&repo, runtime.handle(), &request(&restored, RecoveryTarget::End), &mut |_| {}).unwrap();
        assert!(report.verified && report.warnings.is_empty());
        assert!(report.notes.iter().any(|n| n.contains("archiving is off")), "{:?}", report.notes);

        let manifest_key = "base/20261125T020000/backup_manifest";
        let text = runtime.block_on(repo.get(manifest_key)).unwrap().unwrap();
        let tampered = String::from_utf8_lossy(&text).replace("\"Size\": 3", "\"Size\": 4");
        runtime.block_on(repo.put(manifest_key, tampered.into())).unwrap();
        let tampered_into = pgdata.path().join("tampered");
        let err = restore(&repo, runtime.handle(), &request(&tampered_into, RecoveryTarget::End), &mut |_| {})
            .unwrap_err()
            .shown();
        assert!(err.contains("fails its own checksum") && err.contains("--no-verify"), "{err}");
        assert!(!tampered_into.exists(), "refused before writing anything");

        runtime.block_on(repo.store.delete(&repo.key(manifest_key))).unwrap();
        let missing_into = pgdata.path().join("missing");
        let err = restore(&repo, runtime.handle(), &request(&missing_into, RecoveryTarget::End), &mut |_| {})
            .unwrap_err()
            .shown();
        assert!(err.contains("taken by pgops but its backup_manifest is missing"), "{err}");
        assert!(!missing_into.exists());
        let mut unchecked = request(&missing_into, RecoveryTarget::End);
        unchecked.verify = false;
        let report = restore(&repo, runtime.handle(), &unchecked, &mut |_| {}).unwrap();
        assert!(!report.verified && report.warnings[0].contains("--no-verify"), "{report:?}");

        // Barman Cloud's backups have no manifest: restored unchecked, as they always were.
        let (_store, barman, runtime) = repository_with(CLUSTER, false);
        let report = restore(
            &barman,
            runtime.handle(),
            &request(&pgdata.path().join("barman"), RecoveryTarget::End),
            &mut |_| {},
        )
        .unwrap();
        assert!(!report.verified && report.warnings.is_empty());
    }

    /// Barman's backups have no manifest: what the listing shows must be the whole backup.
    #[test]
    fn a_barman_backup_missing_an_archive_or_cut_short_is_refused() {
        let restore_into = |repo: &Repository, runtime: &tokio::runtime::Runtime, into: &Path| {
            restore(repo, runtime.handle(), &request(into, RecoveryTarget::End), &mut |_| {}).map_err(|e| e.shown())
        };
        let pgdata = tempfile::tempdir().unwrap();
        let dir = "base/20261125T020000";

        // A data chunk missing from the middle, or the first one.
        let (_store, repo, runtime) = repository_with(CLUSTER, false);
        runtime.block_on(repo.put(&format!("{dir}/data_0002.tar"), tar_of(CLUSTER).into())).unwrap();
        let err = restore_into(&repo, &runtime, &pgdata.path().join("gap")).unwrap_err();
        assert!(err.contains("archives of data are not whole: found data.tar, data_0002.tar"), "{err}");
        runtime.block_on(repo.put(&format!("{dir}/data_0001.tar"), tar_of(CLUSTER).into())).unwrap();
        runtime.block_on(repo.store.delete(&repo.key(&format!("{dir}/data.tar")))).unwrap();
        let err = restore_into(&repo, &runtime, &pgdata.path().join("first")).unwrap_err();
        assert!(err.contains("found data_0001.tar, data_0002.tar"), "{err}");

        // A tablespace backup.info lists, without its archive.
        let (_store, repo, runtime) = repository_with(CLUSTER, false);
        let info_key = format!("{dir}/backup.info");
        let info = runtime.block_on(repo.get(&info_key)).unwrap().unwrap();
        let info = format!("{}tablespaces=[('fast', 16385, '/mnt/fast')]\n", String::from_utf8_lossy(&info));
        runtime.block_on(repo.put(&info_key, info.into())).unwrap();
        let err = restore_into(&repo, &runtime, &pgdata.path().join("tablespace")).unwrap_err();
        assert!(err.contains("lists tablespace 16385, but the backup has no archive of it"), "{err}");

        // A tablespace only tablespace_map names: never linked to where it was.
        let with_map = [
            Crafted::File("PG_VERSION", b"15\n"),
            Crafted::Dir("pg_wal/"),
            Crafted::File("tablespace_map", b"16385 /srv/production/fast\n"),
        ];
        let (_store, repo, runtime) = repository_with(&with_map, false);
        let into = pgdata.path().join("map");
        let err = restore_into(&repo, &runtime, &into).unwrap_err();
        assert!(err.contains("tablespace_map names tablespace 16385 (at /srv/production/fast)"), "{err}");

        // A data archive cut at a member boundary: no end-of-archive marker.
        let (_store, repo, runtime) = repository_with(CLUSTER, false);
        let whole = tar_of(CLUSTER);
        let cut = &whole[..whole.len() - 1024];
        runtime.block_on(repo.put(&format!("{dir}/data.tar"), Bytes::copy_from_slice(cut))).unwrap();
        let err = restore_into(&repo, &runtime, &pgdata.path().join("cut")).unwrap_err();
        assert!(err.contains("without tar's end-of-archive marker"), "{err}");
        // Whole, it restores.
        runtime.block_on(repo.put(&format!("{dir}/data.tar"), whole.into())).unwrap();
        restore_into(&repo, &runtime, &pgdata.path().join("whole")).unwrap();
    }

    /// A backup of a standby restores as a cluster recovering from the repository, never as
    /// a standby streaming from the original's primary.
    #[test]
    fn a_standby_signal_in_the_backup_is_removed() {
        let from_standby = [
            Crafted::File("PG_VERSION", b"15\n"),
            Crafted::Dir("pg_wal/"),
            Crafted::File("standby.signal", b""),
            Crafted::File("postgresql.auto.conf", b"primary_conninfo = 'host=production'\n"),
        ];
        let (_store, repo, runtime) = repository_with(&from_standby, false);
        let pgdata = tempfile::tempdir().unwrap();
        let into = pgdata.path().join("restored");
        let report = restore(&repo, runtime.handle(), &request(&into, RecoveryTarget::End), &mut |_| {}).unwrap();
        assert!(!into.join("standby.signal").exists() && into.join("recovery.signal").exists());
        assert!(report
            .notes
            .iter()
            .any(|n| n.contains("standby.signal (the backup was taken on a standby) was removed")));
    }

    #[test]
    fn backup_info_tablespaces_are_read_for_their_oids() {
        assert_eq!(info_tablespace_oids(None), BTreeSet::new());
        let listed = "[('fast', 16385, '/mnt/o\\'k'), ('slow', 16390, '/mnt/slow')]";
        assert_eq!(info_tablespace_oids(Some(listed)), BTreeSet::from([16385, 16390]));
    }

    #[test]
    fn a_time_without_offset_is_the_backed_up_servers_local_time() {
        let (_store, repo, runtime) = repository_with(CLUSTER, true);
        let pgdata = tempfile::tempdir().unwrap();
        // 2026-11-24 23:00 in New York is 04:00 UTC on the 25th, after the backup's end at
        // 02:00:05 UTC (read as UTC, it would come before it).
        let restored = pgdata.path().join("restored");
        let report =
            restore(&repo, runtime.handle(), &request(&restored, time("2026-11-24 23:00:00")), &mut |_| {}).unwrap();
        let conf = std::fs::read_to_string(restored.join("postgresql.auto.conf")).unwrap();
        assert!(conf.contains("recovery_target_time = '2026-11-25 04:00:00.000000+00'"), "{conf}");
        assert!(
            report.notes.iter().any(|n| n.contains("America/New_York = 2026-11-25 04:00:00.000000+00 UTC")),
            "{:?}",
            report.notes
        );
        // In Tokyo, 2026-11-25 10:00 is 01:00 UTC, before the backup ended (read as UTC, it
        // would come after): the backup is refused once its timezone is read, and what was
        // written is removed.
        let tokyo =
            [Crafted::File("PG_VERSION", b"15\n"), Crafted::File("postgresql.conf", b"timezone = 'Asia/Tokyo'\n")];
        let (_store, repo, runtime) = repository_with(&tokyo, true);
        let early = pgdata.path().join("early");
        let err = restore(&repo, runtime.handle(), &request(&early, time("2026-11-25 10:00:00")), &mut |_| {})
            .unwrap_err()
            .shown();
        assert!(err.contains("no DONE backup ends before the recovery target"), "{err}");
        assert_eq!(std::fs::read_dir(&early).unwrap().count(), 0);
    }
}
