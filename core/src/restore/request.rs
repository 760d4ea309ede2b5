//! What a restore is asked (backup, target, directories) and what it reports.

use super::*;
use crate::backup::{BackupId, NotABackupId};
use crate::naming::Lsn;
use std::collections::BTreeMap;
use std::path::PathBuf;

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
