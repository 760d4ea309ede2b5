//! The backups in a repository, read from the store: Barman's `backup.info` of each
//! `base/<backup_id>/`, so that backups taken by any cluster or tool that writes the
//! layout are listed, the running one (STARTED) included.

use super::info::{marked_failed, BackupRecord, BackupStatus};
use super::owner::{owner_of, BackupOwner};
use crate::ownership::OwnershipError;
use crate::store::{Repository, StoreResult};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub backup_id: String,
    pub record: BackupRecord,
    /// Bytes of every object under the backup's directory.
    pub stored_bytes: u64,
}

impl BackupSummary {
    pub fn status(&self) -> &str {
        match self.record.status_text() {
            Some(status) => status,
            None if self.unreadable().is_some() => "UNREADABLE",
            None => "EMPTY",
        }
    }

    /// Whether it finished: only those can be restored.
    pub fn is_done(&self) -> bool {
        self.record.status == Some(BackupStatus::Done)
    }

    /// Why its backup.info could not be read, if so ([`list_backups`] lists such a backup
    /// with that error and no status).
    pub fn unreadable(&self) -> Option<&str> {
        let error = self.record.error.as_deref()?;
        (self.record.status_text().is_none() && error.starts_with(UNREADABLE_INFO)).then_some(error)
    }

    /// The backup as `pgops.backups()` and `pgops list` show it.
    pub fn row(&self) -> BackupRow {
        let text = |key: &str| self.record.text(key).map(str::to_string);
        BackupRow {
            id: self.backup_id.clone(),
            status: self.status().to_string(),
            started_at: text("begin_time"),
            finished_at: text("end_time"),
            begin_lsn: text("begin_xlog"),
            end_lsn: text("end_xlog"),
            begin_wal: text("begin_wal"),
            end_wal: text("end_wal"),
            timeline: self.record.timeline.map(|timeline| timeline.0),
            size_bytes: self.record.size,
            stored_bytes: self.stored_bytes,
            compression: text("compression"),
            error: text("error"),
        }
    }
}

/// One backup, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupRow {
    pub id: String,
    pub status: String,
    /// Barman's timestamps (`2026-11-25 02:00:00.000000+00:00`).
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub begin_lsn: Option<String>,
    pub end_lsn: Option<String>,
    pub begin_wal: Option<String>,
    pub end_wal: Option<String>,
    pub timeline: Option<u32>,
    /// Tar bytes before compression.
    pub size_bytes: Option<u64>,
    /// Bytes of every object of the backup in the store.
    pub stored_bytes: u64,
    pub compression: Option<String>,
    pub error: Option<String>,
}

/// How the error of a backup whose `backup.info` cannot be read begins.
pub const UNREADABLE_INFO: &str = "backup.info cannot be read";

/// Every backup with a `backup.info`, oldest first. One whose `backup.info` cannot be
/// decrypted or decompressed is listed without a status, its error starting with
/// [`UNREADABLE_INFO`].
pub async fn list_backups(repo: &Repository) -> StoreResult<Vec<BackupSummary>> {
    let mut stored: BTreeMap<String, u64> = BTreeMap::new();
    let mut with_info = Vec::new();
    let base = repo.key("base/");
    for object in repo.list("base/").await? {
        let Some((backup_id, name)) = object.key.strip_prefix(&base).and_then(|rest| rest.split_once('/')) else {
            continue;
        };
        *stored.entry(backup_id.to_string()).or_default() += object.size;
        if name == "backup.info" {
            with_info.push(backup_id.to_string());
        }
    }
    let mut backups = Vec::with_capacity(with_info.len());
    for backup_id in with_info {
        let record = match repo.get_metadata(&format!("base/{backup_id}/backup.info")).await {
            Ok(Some(text)) => BackupRecord::parse(&String::from_utf8_lossy(&text)),
            Ok(None) => continue, // deleted since the listing
            // One backup.info that cannot be decrypted or decompressed must not hide the
            // others: it is listed without a status, and its error says why.
            Err(e) if !e.is_transient() => BackupRecord::unreadable(format!("{UNREADABLE_INFO}: {}", e.cause)),
            Err(e) => return Err(e),
        };
        backups.push(BackupSummary { record, stored_bytes: stored[&backup_id], backup_id });
    }
    Ok(backups)
}

/// Marks FAILED, with `reason`, every STARTED backup of cluster `system_identifier` that
/// this instance (`owner`) started, other than `running`: they were left by a worker of
/// this instance that stopped mid-backup. A backup another instance started (a clone's
/// production cluster, which shares the system identifier) or of unknown owner is left
/// alone. Returns the ids marked.
pub async fn fail_interrupted(
    repo: &Repository,
    system_identifier: u64,
    owner: &BackupOwner,
    running: Option<&str>,
    reason: &str,
) -> Result<Vec<String>, OwnershipError> {
    let mut marked = Vec::new();
    for backup in list_backups(repo).await? {
        let same_cluster = backup.record.system_identifier == Some(system_identifier);
        if backup.record.status != Some(BackupStatus::Started)
            || !same_cluster
            || Some(backup.backup_id.as_str()) == running
        {
            continue;
        }
        if owner_of(repo, &backup.backup_id).await?.map(|record| record.owner).as_ref() != Some(owner) {
            continue;
        }
        if mark_failed(repo, &backup.backup_id, reason).await? {
            marked.push(backup.backup_id);
        }
    }
    Ok(marked)
}

/// Rewrites the `backup.info` of `backup_id` with status FAILED and `reason` as its
/// error, every other line kept as it is; `false` when it is gone.
pub async fn mark_failed(repo: &Repository, backup_id: &str, reason: &str) -> Result<bool, OwnershipError> {
    let key = format!("base/{backup_id}/backup.info");
    let Some(text) = repo.get_metadata(&key).await? else { return Ok(false) };
    // Only a backup still STARTED: one that ended since the caller looked stays as it is.
    let Some(rewritten) = marked_failed(&String::from_utf8_lossy(&text), reason) else { return Ok(false) };
    // Encrypted with a key the repository's record lists, as every writer's objects are.
    crate::ownership::admit_writer(repo).await?;
    repo.put(&key, rewritten.into()).await?;
    Ok(true)
}
