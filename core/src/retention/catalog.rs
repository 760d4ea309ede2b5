//! The backups as retention sees them: every directory under `base/`, its `backup.info`
//! read and checked (a DONE backup must say when it ended and which WAL it needs), its
//! keep mark and what it stores. Read completely or not at all: retention decides nothing
//! on a partial catalog.

use super::RetentionError;
use crate::backup::info::{BackupRecord, BackupStatus};
use crate::backup::owner::{owner_of, BackupOwner};
use crate::backup::{backup_dir, BackupId};
use crate::naming::Lsn;
use crate::naming::WalSegment;
use crate::store::Repository;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// What pgops' retention writes into a backup's directory before it deletes it, and
/// removes last: a directory that has it is what an interrupted run left, obsolete
/// however young (one without `backup.info` may otherwise be a backup still uploading).
pub const EXPIRING_MARKER: &str = "pgops-expiring";

/// Barman's keep annotation of a backup, `base/<id>/annotations/keep`
/// (`barman-cloud-backup-keep`), relative to the backup's directory.
pub const KEEP_ANNOTATION: &str = "annotations/keep";

/// What a keep annotation asks to keep (Barman's `KeepManager` targets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepTarget {
    /// The backup and the WAL to restore it to any later point.
    Full,
    /// The backup and the WAL from its begin to its end segment: restorable to its end.
    Standalone,
}

impl KeepTarget {
    /// Barman reads the annotation's first line, line break included, and takes anything
    /// but exactly `standalone` for `full`, "for safety"; so does pgops.
    pub fn from_annotation(content: &[u8]) -> KeepTarget {
        match content {
            b"standalone" => KeepTarget::Standalone,
            _ => KeepTarget::Full,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeepTarget::Full => "full",
            KeepTarget::Standalone => "standalone",
        }
    }
}

/// What a DONE backup's `backup.info` must say for retention to decide on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoneBackup {
    pub ended: DateTime<Utc>,
    pub begin_wal: WalSegment,
    pub end_wal: WalSegment,
    /// `end_xlog`, the LSN it ended at (Barman always writes it; `None` places the backup
    /// on no timeline's history).
    pub end_lsn: Option<Lsn>,
    /// `begin_xlog`, the LSN it began at (`None`: counted wherever it might be needed).
    pub begin_lsn: Option<Lsn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryState {
    Done(DoneBackup),
    Failed,
    /// Running, or left behind by a worker that stopped. `live`: a worker that is running
    /// may be taking it (the caller's answer); `begin_wal` once the backup has started;
    /// `heartbeat`, when its owner last said it was alive (pgops' owner record).
    Started {
        live: bool,
        begin_wal: Option<WalSegment>,
        begin_lsn: Option<Lsn>,
        heartbeat: Option<DateTime<Utc>>,
    },
    /// A status pgops never writes (Barman's `EMPTY`, `WAITING_FOR_WALS`, `SYNCING`).
    Other(String),
    /// Objects without a `backup.info`: a backup that never got as far as writing one, or
    /// one whose deletion stopped half-way.
    Incomplete,
}

impl EntryState {
    /// The status as `backup.info` names it; `INCOMPLETE` when there is none.
    pub fn status(&self) -> &str {
        match self {
            EntryState::Done(_) => BackupStatus::Done.as_str(),
            EntryState::Failed => BackupStatus::Failed.as_str(),
            EntryState::Started { .. } => BackupStatus::Started.as_str(),
            EntryState::Other(status) => status,
            EntryState::Incomplete => "INCOMPLETE",
        }
    }
}

/// One directory under `base/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub id: BackupId,
    pub state: EntryState,
    /// `end_time` of `backup.info`, when it has one.
    pub ended: Option<DateTime<Utc>>,
    pub keep: Option<KeepTarget>,
    /// `systemid` of `backup.info`: the cluster the backup is of.
    pub system_identifier: Option<String>,
    /// Objects (and their bytes) under `base/<id>/`, `backup.info` included.
    pub objects: u64,
    pub bytes: u64,
    /// The size of `backup.info`, when there is one.
    pub info_bytes: Option<u64>,
    /// When the youngest of those objects was written, as the store says (`None` when it
    /// does not say): a directory another tool is still filling is young.
    pub last_written: Option<DateTime<Utc>>,
    /// It holds [`EXPIRING_MARKER`]: a retention run was deleting it.
    pub expiring: bool,
}

/// Says whether the STARTED backup `id` (started by `owner`, when recorded) is being
/// taken by a worker that is running. The worker answers for its own backups; a backup
/// of an unknown or other instance may be running elsewhere: answer `true` unless known
/// otherwise (the CLI, for a repository whose cluster is gone, may answer `false`).
pub type StartedIsLive<'a> = dyn Fn(&BackupId, Option<&BackupOwner>) -> bool + Sync + 'a;

/// What the listing of one backup directory says.
#[derive(Debug, Default)]
struct Directory {
    objects: u64,
    bytes: u64,
    info_bytes: Option<u64>,
    keep: bool,
    expiring: bool,
    last_written: Option<DateTime<Utc>>,
}

/// Every directory under `base/`, oldest id first. Any listing or read error, and any
/// `backup.info` that does not say what retention needs, is an error naming the object.
pub async fn read_catalog(
    repo: &Repository,
    started_is_live: &StartedIsLive<'_>,
) -> Result<Vec<CatalogEntry>, RetentionError> {
    let mut directories: BTreeMap<BackupId, Directory> = BTreeMap::new();
    let mut listing = repo.listing("base/");
    while let Some(page) = listing.next_page().await? {
        for object in page {
            let Some((id, name)) = repo.relative(&object.key).and_then(|k| k.strip_prefix("base/")?.split_once('/'))
            else {
                continue;
            };
            let Ok(id) = id.parse::<BackupId>() else { continue };
            let directory = directories.entry(id).or_default();
            directory.objects += 1;
            directory.bytes += object.size;
            directory.last_written = directory.last_written.max(object.modified);
            match name {
                "backup.info" => directory.info_bytes = Some(object.size),
                KEEP_ANNOTATION => directory.keep = true,
                EXPIRING_MARKER => directory.expiring = true,
                _ => {}
            }
        }
    }
    let mut entries = Vec::with_capacity(directories.len());
    for (id, directory) in directories {
        let dir = backup_dir(id.as_str());
        let info_key = format!("{dir}/backup.info");
        let info = match directory.info_bytes {
            Some(_) => {
                let text = repo.get_metadata(&info_key).await?.ok_or_else(|| vanished(repo, &info_key))?;
                Some(BackupRecord::parse(&String::from_utf8_lossy(&text)))
            }
            None => None,
        };
        let (state, ended) = match &info {
            // Without backup.info.
            None => (EntryState::Incomplete, None),
            Some(record) => {
                let state = entry_state(record).map_err(|problem| RetentionError::Unreadable {
                    location: repo.location(&info_key),
                    problem: problem.to_string(),
                })?;
                (state, record.end_time)
            }
        };
        let state = match state {
            EntryState::Started { begin_wal, begin_lsn, .. } => {
                let record = owner_of(repo, id.as_str()).await?;
                EntryState::Started {
                    live: started_is_live(&id, record.as_ref().map(|record| &record.owner)),
                    begin_wal,
                    begin_lsn,
                    heartbeat: record.and_then(|record| record.heartbeat),
                }
            }
            state => state,
        };
        let keep = match directory.keep {
            true => {
                Some(read_keep(repo, &id).await?.ok_or_else(|| vanished(repo, &format!("{dir}/{KEEP_ANNOTATION}")))?)
            }
            false => None,
        };
        // As text, as the repository's ownership record holds it.
        let system_identifier = info.as_ref().and_then(|record| record.text("systemid")).map(str::to_string);
        entries.push(CatalogEntry {
            id,
            state,
            ended,
            keep,
            system_identifier,
            objects: directory.objects,
            bytes: directory.bytes,
            info_bytes: directory.info_bytes.filter(|_| info.is_some()),
            last_written: directory.last_written,
            expiring: directory.expiring,
        });
    }
    Ok(entries)
}

/// The keep mark of backup `id` as it is now (`None`: not marked).
pub(crate) async fn read_keep(repo: &Repository, id: &BackupId) -> Result<Option<KeepTarget>, RetentionError> {
    let annotation = format!("{}/{KEEP_ANNOTATION}", backup_dir(id.as_str()));
    Ok(repo.get_metadata(&annotation).await?.map(|content| KeepTarget::from_annotation(&content)))
}

/// An object the listing showed that could not be read: whatever it says (a DONE
/// backup, a keep mark) is unknown, so nothing is decided.
fn vanished(repo: &Repository, key: &str) -> RetentionError {
    RetentionError::Unreadable {
        location: repo.location(key),
        problem: "the listing shows it, but reading it found nothing (deleted or not yet visible)".into(),
    }
}

/// What makes a `backup.info` one retention cannot plan on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum RecordProblem {
    #[error("{0}")]
    Malformed(String),
    #[error("it has no status")]
    NoStatus,
    #[error("the backup is DONE but has no {0}")]
    DoneWithout(&'static str),
}

/// The state `backup.info` describes, or what it lacks: a field it needs that is
/// malformed makes it unreadable, as retention must not guess. STARTED backups are taken
/// for live here; [`read_catalog`] asks.
fn entry_state(record: &BackupRecord) -> Result<EntryState, RecordProblem> {
    let checked = |key: &str| record.malformed(key).map_or(Ok(()), |problem| Err(RecordProblem::Malformed(problem)));
    checked("end_time")?;
    let status = record.status_text().ok_or(RecordProblem::NoStatus)?;
    let done_needs = RecordProblem::DoneWithout;
    Ok(match record.status {
        Some(BackupStatus::Done) => {
            for key in ["begin_wal", "end_wal", "end_xlog", "begin_xlog"] {
                checked(key)?;
            }
            EntryState::Done(DoneBackup {
                ended: record.end_time.ok_or_else(|| done_needs("end_time"))?,
                begin_wal: record.begin_wal.ok_or_else(|| done_needs("begin_wal"))?,
                end_wal: record.end_wal.ok_or_else(|| done_needs("end_wal"))?,
                end_lsn: record.end_lsn,
                begin_lsn: record.begin_lsn,
            })
        }
        Some(BackupStatus::Failed) => EntryState::Failed,
        Some(BackupStatus::Started) => {
            checked("begin_wal")?;
            checked("begin_xlog")?;
            EntryState::Started {
                live: true,
                begin_wal: record.begin_wal,
                begin_lsn: record.begin_lsn,
                heartbeat: None,
            }
        }
        None => EntryState::Other(status.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_annotations_are_read_as_barman_reads_them() {
        assert_eq!(KeepTarget::from_annotation(b"standalone"), KeepTarget::Standalone);
        assert_eq!(KeepTarget::from_annotation(b"full"), KeepTarget::Full);
        // Anything else keeps the most, as Barman does.
        assert_eq!(KeepTarget::from_annotation(b""), KeepTarget::Full);
        assert_eq!(KeepTarget::from_annotation(b"standalone\n"), KeepTarget::Full);
        assert_eq!(KeepTarget::from_annotation(b"STANDALONE"), KeepTarget::Full);
    }

    #[test]
    fn a_done_backup_must_say_when_it_ended_and_which_wal_it_needs() {
        let state = |text: &str| entry_state(&BackupRecord::parse(text));
        let done = "status=DONE\nend_time=2026-11-25 02:00:05.000000+00:00\nbegin_wal=000000010000000000000002\n\
                    end_wal=000000010000000000000003\n";
        assert!(matches!(state(done), Ok(EntryState::Done(_))));
        assert_eq!(
            state("status=DONE\nbegin_wal=000000010000000000000002\n").unwrap_err().to_string(),
            "the backup is DONE but has no end_time"
        );
        assert!(state(&done.replace("end_wal=000000010000000000000003", "end_wal=None"))
            .unwrap_err()
            .to_string()
            .contains("no end_wal"));
        assert!(state(&done.replace("000000010000000000000002", "0/2000028"))
            .unwrap_err()
            .to_string()
            .contains("begin_wal \"0/2000028\""));
        assert_eq!(state("end_time=2026-11-25 02:00:05+00:00\n").unwrap_err().to_string(), "it has no status");
        assert_eq!(state("status=FAILED\n").unwrap(), EntryState::Failed);
        assert_eq!(
            state("status=STARTED\n").unwrap(),
            EntryState::Started { live: true, begin_wal: None, begin_lsn: None, heartbeat: None }
        );
        assert_eq!(state("status=WAITING_FOR_WALS\n").unwrap(), EntryState::Other("WAITING_FOR_WALS".into()));
    }
}
