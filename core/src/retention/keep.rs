//! Keeping a backup whatever the policy: Barman's `base/<id>/annotations/keep` holding
//! `full`, as `barman-cloud-backup-keep` writes it (pgops.keep_backup(), `pgops keep`).

use super::{KeepTarget, KEEP_ANNOTATION};
use crate::backup::info::{BackupRecord, BackupStatus};
use crate::backup::{backup_dir, BackupId};
use crate::ownership::{self, OwnershipError};
use crate::store::{Repository, StoreError};

/// Why a backup's keep mark was not written or removed.
#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    /// The repository's ownership record does not admit this writer (another cluster's,
    /// or a key it does not list).
    #[error("{0}")]
    Ownership(OwnershipError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("backup {backup_id} is not in the repository (no readable {location})")]
    NotFound { backup_id: BackupId, location: String },
    #[error("backup {backup_id} is {status}, not DONE: only a DONE backup can be kept")]
    NotDone { backup_id: BackupId, status: String },
}

impl KeepError {
    /// What to do, in the words of the core; each surface may word its own.
    pub fn hint(&self) -> String {
        match self {
            KeepError::Ownership(e) => e.hint(),
            KeepError::Store(e) => e.hint().to_string(),
            KeepError::NotFound { .. } => {
                "List the backups (pgops.backup_list, pgops list) and give one of their ids.".into()
            }
            KeepError::NotDone { .. } => {
                "Keep a DONE backup (pgops.backup_list, pgops list show each one's status).".into()
            }
        }
    }
}

/// Marks DONE backup `backup_id` kept (`keep`), or removes its mark. The mark is encrypted
/// like every object, so the writer must be admitted by the repository's record first.
pub async fn keep_backup(repo: &Repository, backup_id: &BackupId, keep: bool) -> Result<(), KeepError> {
    ownership::admit_writer(repo).await.map_err(|e| match e {
        OwnershipError::Store(e) => KeepError::Store(e),
        e => KeepError::Ownership(e),
    })?;
    let dir = backup_dir(backup_id.as_str());
    let annotation = format!("{dir}/{KEEP_ANNOTATION}");
    if !keep {
        return Ok(repo.delete(&annotation).await?);
    }
    let info_key = format!("{dir}/backup.info");
    let Some(info) = repo.get_metadata(&info_key).await? else {
        return Err(KeepError::NotFound { backup_id: backup_id.clone(), location: repo.location(&info_key) });
    };
    let record = BackupRecord::parse(&String::from_utf8_lossy(&info));
    match record.status {
        Some(BackupStatus::Done) => Ok(repo.put(&annotation, KeepTarget::Full.as_str().into()).await?),
        _ => Err(KeepError::NotDone {
            backup_id: backup_id.clone(),
            status: record.status_text().unwrap_or("without a status").to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;
    use std::sync::Arc;

    #[tokio::test]
    async fn only_a_done_backup_is_kept_and_the_mark_can_go() {
        let root = tempfile::tempdir().unwrap();
        let repo = Repository::new(Arc::new(LocalStore::new(root.path())), "main");
        let done: BackupId = "20261125T020000".parse().unwrap();
        let started: BackupId = "20261126T020000".parse().unwrap();
        let missing: BackupId = "20261127T020000".parse().unwrap();
        repo.put(&format!("base/{done}/backup.info"), "status=DONE\n".into()).await.unwrap();
        repo.put(&format!("base/{started}/backup.info"), "status=STARTED\n".into()).await.unwrap();
        let mark = format!("base/{done}/{KEEP_ANNOTATION}");

        keep_backup(&repo, &done, true).await.unwrap();
        assert_eq!(repo.get(&mark).await.unwrap().unwrap(), "full");
        let err = keep_backup(&repo, &started, true).await.unwrap_err();
        assert!(matches!(&err, KeepError::NotDone { status, .. } if status == "STARTED"), "{err}");
        assert!(!root.path().join(format!("main/base/{started}/{KEEP_ANNOTATION}")).exists());
        let err = keep_backup(&repo, &missing, true).await.unwrap_err();
        assert!(matches!(err, KeepError::NotFound { .. }), "{err}");
        keep_backup(&repo, &done, false).await.unwrap();
        assert!(repo.get(&mark).await.unwrap().is_none());
    }
}
