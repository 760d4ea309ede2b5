//! Carrying a plan out, in an order that leaves a repository from which every kept backup
//! restores at every step: per obsolete backup (oldest first) its `backup.info` (it stops
//! being offered for restore), then the rest of its directory; then the WAL. Each step is
//! idempotent, so a run that stops anywhere leaves work the next run's plan finishes (a
//! directory without `backup.info` is an obsolete leftover; WAL before a cutoff still
//! goes).

use super::catalog::{read_keep, EXPIRING_MARKER};
use super::plan::{archived_wal, Plan, Why};
use super::RetentionError;
use crate::backup::catalog::mark_failed;
use crate::backup::{backup_dir, BackupId};
use crate::store::{ObjectMeta, Repository};
use serde::Serialize;
use std::fmt;

/// What a run removed, for its LOG line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExpireReport {
    pub backups_removed: Vec<BackupId>,
    /// Objects of the removed backups' directories.
    pub backup_objects_removed: u64,
    pub wal_objects_removed: u64,
    pub bytes_freed: u64,
    /// Obsolete by the plan, but marked keep since: left alone.
    pub kept_since_plan: Vec<BackupId>,
    /// STARTED backups no worker can be taking, marked FAILED (kept for now).
    pub marked_failed: Vec<BackupId>,
}

impl fmt::Display for ExpireReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.backups_removed.iter().map(BackupId::as_str).collect();
        write!(
            f,
            "removed {} backup(s){}, {} backup object(s) and {} WAL object(s); {} bytes freed",
            ids.len(),
            if ids.is_empty() { String::new() } else { format!(" ({})", ids.join(", ")) },
            self.backup_objects_removed,
            self.wal_objects_removed,
            self.bytes_freed
        )?;
        if !self.kept_since_plan.is_empty() {
            let ids: Vec<&str> = self.kept_since_plan.iter().map(BackupId::as_str).collect();
            write!(f, "; marked keep since the plan, so left alone: {}", ids.join(", "))?;
        }
        if !self.marked_failed.is_empty() {
            let ids: Vec<&str> = self.marked_failed.iter().map(BackupId::as_str).collect();
            write!(f, "; abandoned STARTED backups marked FAILED: {}", ids.join(", "))?;
        }
        Ok(())
    }
}

/// A run that stopped: why, and what it had removed by then.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error} (before it stopped, the run {done})")]
pub struct ExpireFailure {
    pub error: RetentionError,
    pub done: ExpireReport,
}

/// Deletes what `plan` marks obsolete. The first error stops the run.
pub async fn execute(repo: &Repository, plan: &Plan) -> Result<ExpireReport, ExpireFailure> {
    let mut done = ExpireReport::default();
    match run(repo, plan, &mut done).await {
        Ok(()) => Ok(done),
        Err(error) => Err(ExpireFailure { error, done }),
    }
}

async fn run(repo: &Repository, plan: &Plan, done: &mut ExpireReport) -> Result<(), RetentionError> {
    let writes = plan.obsolete().next().is_some()
        || plan.backups.iter().any(|d| matches!(d.why, Why::Abandoned { superseded: false, .. }));
    if writes {
        crate::ownership::admit_writer(repo).await?;
    }
    for decision in &plan.backups {
        if let Why::Abandoned { reason, superseded: false } = &decision.why {
            if mark_failed(repo, decision.backup.id.as_str(), &format!("abandoned: {reason}")).await? {
                done.marked_failed.push(decision.backup.id.clone());
            }
        }
    }
    for decision in plan.obsolete() {
        let backup = &decision.backup;
        // A keep mark written since the plan was made (pgops.keep_backup(),
        // barman-cloud-backup-keep) wins over it.
        if read_keep(repo, &backup.id).await?.is_some() {
            done.kept_since_plan.push(backup.id.clone());
            continue;
        }
        let dir = backup_dir(backup.id.as_str());
        // Says "being deleted" to the next run should this one stop half-way: without
        // backup.info the directory would look like a backup still uploading.
        let marker = format!("{dir}/{EXPIRING_MARKER}");
        if !backup.expiring {
            repo.put(&marker, bytes::Bytes::from_static(b"deleted by pgops retention\n")).await?;
        }
        if let Some(size) = backup.info_bytes {
            repo.delete(&format!("{dir}/backup.info")).await?;
            done.backup_objects_removed += 1;
            done.bytes_freed += size;
        }
        let marker_key = repo.key(&marker);
        let mut listing = repo.listing(&format!("{dir}/"));
        while let Some(page) = listing.next_page().await? {
            let page = page.into_iter().filter(|object| object.key != marker_key).collect();
            let (objects, bytes) = delete_objects(repo, page).await?;
            done.backup_objects_removed += objects;
            done.bytes_freed += bytes;
        }
        repo.delete(&marker).await?;
        done.backups_removed.push(backup.id.clone());
    }
    // The plan's WAL rule did not count a backup kept since: its WAL waits for the next
    // run's plan.
    if plan.wal_rule.deletes_nothing() || !done.kept_since_plan.is_empty() {
        return Ok(());
    }
    // The rule, not the plan's ranges: WAL archived since the plan is after every cutoff.
    let mut listing = repo.listing("wals/");
    while let Some(page) = listing.next_page().await? {
        let going = page
            .into_iter()
            .filter(|object| archived_wal(repo, &object.key).is_some_and(|wal| plan.wal_rule.deletes(wal)))
            .collect();
        let (objects, bytes) = delete_objects(repo, going).await?;
        done.wal_objects_removed += objects;
        done.bytes_freed += bytes;
    }
    Ok(())
}

/// Deletes `objects` (a page at most); their count and bytes, or the first refusal.
async fn delete_objects(repo: &Repository, objects: Vec<ObjectMeta>) -> Result<(u64, u64), RetentionError> {
    if objects.is_empty() {
        return Ok((0, 0));
    }
    let keys: Vec<String> = objects.iter().map(|object| object.key.clone()).collect();
    let refused = repo.delete_many(&keys).await?;
    match refused.first() {
        None => Ok((objects.len() as u64, objects.iter().map(|object| object.size).sum())),
        Some(first) => Err(RetentionError::Refused {
            location: repo.store.location(&first.key),
            cause: first.cause.clone(),
            others: refused.len() - 1,
        }),
    }
}
