//! The RestoreJobHooks service (`pgops cnpg restore`, the sidecar of CNPG's recovery Job):
//! restores the backup `spec.bootstrap.recovery` asks for into PGDATA, chosen exactly as
//! `pgops restore` chooses it (`recoveryTarget.backupID`, or the newest backup that can
//! reach the target on the target timeline), every file checked against its manifest.
//! CNPG then writes the recovery target, `recovery.signal` and the `restore_config` this
//! answers into the configuration itself (cloudnative-pg
//! `pkg/management/postgres/restore.go`, `writeCustomRestoreWalConfig`): so the restore
//! writes no recovery settings of its own.

use crate::cluster::{Cluster, RecoveryTarget as CnpgTarget};
use crate::config::PluginConfig;
use crate::proto::wal::restore_job_hooks_capability::Kind;
use crate::proto::wal::restore_job_hooks_server::RestoreJobHooks;
use crate::proto::wal::*;
use crate::{status, wal};
use pgops_core::restore::{
    self as core_restore, ArchiveAfterRestore, BackupChoice, RecoveryTarget, TargetTime, TargetTimeline,
};
use std::path::{Path, PathBuf};
use tonic::{Request, Response, Status};

/// What CNPG appends to the restored cluster's configuration: its own `manager
/// wal-restore` as restore_command (the plugin answers it through the WAL service), and
/// promotion at the target, as plugin-barman-cloud answers (`getRestoreWalConfig`).
pub const RESTORE_CONFIG: &str = "recovery_target_action = promote\n\
restore_command = '/controller/manager wal-restore --log-destination /controller/log/postgres.json %f %p'\n";

pub struct RestoreJobService {
    data_directory: PathBuf,
    /// pg_wal's place when the Cluster has `walStorage`, as plugin-barman-cloud links it
    /// (`internal/cnpgi/restore/restore.go`, restoreCustomWalDir).
    wal_directory: PathBuf,
}

impl RestoreJobService {
    pub fn new(data_directory: PathBuf, wal_directory: PathBuf) -> RestoreJobService {
        RestoreJobService { data_directory, wal_directory }
    }
}

fn bad_target(field: &str, error: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("spec.bootstrap.recovery.recoveryTarget.{field}: {error}"))
}

/// The backup to take, the target it must reach and the timeline, from CNPG's fields.
fn target_of(target: Option<&CnpgTarget>) -> Result<(BackupChoice, RecoveryTarget, Option<TargetTimeline>), Status> {
    let Some(t) = target else { return Ok((BackupChoice::Latest, RecoveryTarget::End, None)) };
    let backup = match t.backup_id.as_str() {
        "" => BackupChoice::Latest,
        id => BackupChoice::Id(id.parse().map_err(|e| bad_target("backupID", e))?),
    };
    let recovery = if !t.target_time.is_empty() {
        RecoveryTarget::Time(t.target_time.parse::<TargetTime>().map_err(|e| bad_target("targetTime", e))?)
    } else if !t.target_lsn.is_empty() {
        RecoveryTarget::Lsn(t.target_lsn.parse().map_err(|e| bad_target("targetLSN", e))?)
    } else if !t.target_xid.is_empty() {
        RecoveryTarget::Xid(t.target_xid.parse().map_err(|_| bad_target("targetXID", "not a transaction id"))?)
    } else if !t.target_name.is_empty() {
        RecoveryTarget::Name(t.target_name.clone())
    } else if t.target_immediate == Some(true) {
        RecoveryTarget::Immediate
    } else {
        RecoveryTarget::End
    };
    let timeline = match t.target_tli.as_str() {
        "" => None,
        tli => Some(tli.parse::<TargetTimeline>().map_err(|e| bad_target("targetTLI", e))?),
    };
    Ok((backup, recovery, timeline))
}

#[tonic::async_trait]
impl RestoreJobHooks for RestoreJobService {
    async fn get_capabilities(
        &self,
        _: Request<RestoreJobHooksCapabilitiesRequest>,
    ) -> Result<Response<RestoreJobHooksCapabilitiesResult>, Status> {
        let capabilities = vec![RestoreJobHooksCapability { kind: Kind::Restore as i32 }];
        Ok(Response::new(RestoreJobHooksCapabilitiesResult { capabilities }))
    }

    async fn restore(&self, request: Request<RestoreRequest>) -> Result<Response<RestoreResponse>, Status> {
        let request = request.into_inner();
        let cluster = Cluster::decode(&request.cluster_definition)?;
        let recovery = cluster.recovery().ok_or_else(|| {
            Status::failed_precondition("the Cluster has no spec.bootstrap.recovery: there is nothing to restore")
        })?;
        let source = PluginConfig::from_parameters(cluster.restore_parameters()?, &self.data_directory)?;
        let wal_directory = cluster.spec.wal_storage.is_some().then(|| self.wal_directory.clone());
        // The WAL volume's mount point, as Postgres' container sees it: made here, pg_wal
        // would lead Postgres nowhere.
        if let Some(volume) = wal_directory.as_deref().and_then(Path::parent).filter(|volume| !volume.is_dir()) {
            return Err(Status::failed_precondition(format!(
                "the Cluster has spec.walStorage, but {} (the WAL volume) is not mounted in the pgops container: mount the WAL volume there as in the postgres container, or point --waldir at pg_wal's directory on it",
                volume.display()
            )));
        }
        // The new cluster's own repository must not hold another cluster's WAL (CNPG's
        // check, as for the first archive).
        if request.check_empty_wal_archive == Some(true) {
            if let Ok(own) = cluster.own_parameters() {
                let own = PluginConfig::from_parameters(own, &self.data_directory)?;
                wal::require_empty_wal_archive(&own.open().await?).await?;
            }
        }
        let (backup, target, target_timeline) = target_of(recovery.recovery_target.as_ref())?;
        let restore_request = core_restore::RestoreRequest {
            pgdata: self.data_directory.clone(),
            backup,
            target,
            target_action: None,
            target_timeline,
            tablespace_map: Default::default(),
            wal_directory,
            restore_command: None,
            // Unused without a restore_command: CNPG sets archiving up (archive_command =
            // 'false' during the recovery, then the Cluster's).
            archive: ArchiveAfterRestore::Keep,
            verify: true,
            sync: true,
        };
        let repo = source.open().await?;
        let runtime = tokio::runtime::Handle::current();
        let report =
            tokio::task::spawn_blocking(move || core_restore::restore(&repo, &runtime, &restore_request, &mut |_| {}))
                .await
                .map_err(|e| Status::internal(format!("the restore thread failed: {e}")))?
                .map_err(|e| status::restore(&e))?;
        for line in report.notes.iter().chain(&report.warnings) {
            eprintln!("pgops cnpg: restore: {line}");
        }
        eprintln!("pgops cnpg: restored backup {} ({} files, {} bytes)", report.backup_id, report.files, report.bytes);
        Ok(Response::new(RestoreResponse { restore_config: RESTORE_CONFIG.into(), envs: vec![] }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cnpg_targets_become_restore_targets() {
        assert!(matches!(target_of(None), Ok((BackupChoice::Latest, RecoveryTarget::End, None))));
        let t = CnpgTarget { target_lsn: "0/3000060".into(), target_tli: "2".into(), ..Default::default() };
        let (_, target, timeline) = target_of(Some(&t)).unwrap();
        assert_eq!(
            (target, timeline),
            (RecoveryTarget::Lsn("0/3000060".parse().unwrap()), Some(TargetTimeline::Number(2)))
        );
        let t = CnpgTarget { target_time: "2026-11-25T07:00:00Z".into(), ..Default::default() };
        assert!(matches!(target_of(Some(&t)), Ok((_, RecoveryTarget::Time(TargetTime::At(_)), None))));
        let bad = CnpgTarget { target_time: "yesterday".into(), ..Default::default() };
        assert!(target_of(Some(&bad))
            .unwrap_err()
            .message()
            .starts_with("spec.bootstrap.recovery.recoveryTarget.targetTime: "));
        let bad = CnpgTarget { backup_id: "../x".into(), ..Default::default() };
        assert!(target_of(Some(&bad)).unwrap_err().message().contains("backupID"));
    }

    #[tokio::test]
    async fn a_wal_volume_missing_from_the_sidecar_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("pgdata");
        let service = RestoreJobService::new(pgdata.clone(), dir.path().join("wal/pg_wal"));
        let cluster = serde_json::json!({
            "metadata": {"name": "db"},
            "spec": {
                "walStorage": {"size": "1Gi"},
                "bootstrap": {"recovery": {"source": "old"}},
                "externalClusters": [{"name": "old", "plugin": {"name": "pgops.io", "parameters": {"repository": "s3://backups/old"}}}]
            }
        });
        let request = RestoreRequest {
            cluster_definition: serde_json::to_vec(&cluster).unwrap(),
            check_empty_wal_archive: Some(false),
        };
        let status = service.restore(Request::new(request)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{}", status.message());
        assert!(status.message().contains("/wal (the WAL volume) is not mounted"), "{}", status.message());
        assert!(!pgdata.exists() && !dir.path().join("wal").exists());
    }
}
