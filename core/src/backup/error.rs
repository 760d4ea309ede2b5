//! Why a backup failed, by kind. The message is the one the DBA reads (in `backup.info`'s
//! `error`, `pgops.backup_now()`'s ERROR, the CNPG Backup's status); the kind is what each
//! surface maps, once, to its own code.

use super::upload::UploadError;
use crate::ownership::OwnershipError;
use crate::store::StoreError;
use std::time::Duration;

/// Why a [`super::BackupHost`] call cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The backup must stop now: a shutdown, or its caller went away.
    #[error("{0}")]
    Stop(String),
    /// Postgres refused or failed the call (its message), or answered what pgops cannot
    /// read.
    #[error("{0}")]
    Failed(String),
}

impl From<AnswerError> for HostError {
    fn from(e: AnswerError) -> HostError {
        HostError::Failed(e.to_string())
    }
}

/// An answer of Postgres to one of [`super::queries`]' queries that pgops cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected answer {answer}: {cause}")]
pub struct AnswerError {
    pub answer: String,
    pub cause: String,
}

/// Why a backup failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackupError {
    /// The host had to stop (shutdown, cancel): Postgres ends the backup itself.
    #[error("{0}")]
    Stopped(String),
    /// Postgres failed a step; `step` says which ("pg_backup_start failed").
    #[error("{step}: {cause}")]
    Postgres { step: &'static str, cause: HostError },
    /// The repository is not this cluster's to write, or not with these keys: the
    /// ownership record's refusal (never its `Store` case, which is [`BackupError::Store`]),
    /// whose hint each surface words.
    #[error("{0}")]
    Refused(OwnershipError),
    /// The store failed, or holds what was not sent.
    #[error("{0}")]
    Store(StoreError),
    /// A store request got no answer in time; `what` names it.
    #[error("{what} got no answer within {}s", .within.as_secs())]
    NoAnswer { what: String, within: Duration },
    /// The backup's owner record could not be written for `since`: a backup not seen
    /// alive for `stale` is taken for abandoned by retention elsewhere.
    #[error(
        "the backup's owner record (its heartbeat) could not be written for {} s: the store is unreachable or \
         refuses writes, and a backup not seen alive for {} s is taken for abandoned",
        .since.as_secs(),
        .stale.as_secs()
    )]
    HeartbeatLost { since: Duration, stale: Duration },
    /// The last WAL segment the backup needs did not reach the repository in time.
    #[error(
        "WAL segment {segment}, the last this backup needs, was not archived within {} s of pg_backup_stop \
         ({cause}): without it the backup cannot be restored. Check archiving (pgops.archive_status(), \
         the archiver's WARNINGs, the store); pgops.backup_archive_timeout sets the wait",
        .within.as_secs()
    )]
    EndSegmentNotArchived { segment: String, within: Duration, cause: String },
    /// Reading the data directory, or a thread of this process, failed.
    #[error("{0}")]
    Local(String),
}

impl From<UploadError> for BackupError {
    fn from(e: UploadError) -> BackupError {
        match e {
            UploadError::Io(e) => BackupError::Local(e.to_string()),
            UploadError::Store(e) => BackupError::Store(e),
        }
    }
}

impl From<OwnershipError> for BackupError {
    fn from(e: OwnershipError) -> BackupError {
        match e {
            OwnershipError::Store(e) => BackupError::Store(e),
            e => BackupError::Refused(e),
        }
    }
}

impl From<StoreError> for BackupError {
    fn from(e: StoreError) -> BackupError {
        BackupError::Store(e)
    }
}
