//! Retention from inside Postgres: the plan request the settings make, which STARTED
//! backups are live as this server sees them, and where this server stands (system
//! identifier, timeline history). Runs on the main thread; the store is
//! reached through the interruptible `runtime::block_on` by the callers.

use crate::{archive_module, backup_control, guc};
use pgops_core::backup::owner::{self, BackupOwner};
use pgops_core::backup::BackupId;
use pgops_core::retention::Policy;
use pgops_core::timeline::TimelineHistory;
use pgops_core::InvalidSetting;
use pgrx::pg_sys;

/// Which STARTED backups are being taken: the one this server's worker is taking now, and
/// any backup of another instance (or of an unknown one), which may be running there.
pub struct Liveness {
    running: Option<String>,
    instance_id: Option<String>,
}

impl Liveness {
    /// As this server sees it now.
    pub fn now() -> Liveness {
        let instance_id = guc::data_directory()
            .and_then(|data_directory| owner::instance_id(&data_directory, &owner::host_name()).ok());
        Liveness { running: backup_control::running(), instance_id }
    }

    pub fn is_live(&self, id: &BackupId, owner: Option<&BackupOwner>) -> bool {
        owner::started_is_live(self.running.as_deref(), self.instance_id.as_deref(), id, owner)
    }
}

/// The policy and minimum redundancy in force.
pub fn settings() -> Result<(Option<Policy>, u32), InvalidSetting> {
    Ok((guc::retention_policy()?, guc::minimum_redundancy()))
}

/// Where this server stands, for retention to count only its own backups: its system
/// identifier and its current timeline with that timeline's history.
pub struct ServerPosition {
    pub system_identifier: u64,
    pub lineage: TimelineHistory,
}

/// Why this server's position is not known (message, hint).
pub type UnknownPosition = (String, &'static str);

impl ServerPosition {
    /// As this server stands now: the timeline WAL is written on (on a standby, the one
    /// replayed), and its history file from the local `pg_wal` (timeline 1 has none).
    /// Main thread.
    pub fn now() -> Result<ServerPosition, UnknownPosition> {
        // SAFETY: these read recovery and WAL state in shared memory, on the main thread of
        // a backend or the pgops worker. GetXLogReplayRecPtr writes the replayed timeline
        // into the local it is given; GetWALInsertionTimeLine, which may be called only
        // once recovery is over, is called only when RecoveryInProgress() said so (recovery
        // never restarts in a running server).
        let timeline = unsafe {
            match pg_sys::RecoveryInProgress() {
                true => {
                    let mut replayed: pg_sys::TimeLineID = 0;
                    pg_sys::GetXLogReplayRecPtr(&mut replayed);
                    replayed
                }
                false => pg_sys::GetWALInsertionTimeLine(),
            }
        };
        let system_identifier = archive_module::cluster_identity().system_identifier;
        let data_directory = guc::data_directory().ok_or((
            "the data directory is not known".to_string(),
            "Retention runs once the server has started; it is retried.",
        ))?;
        let lineage = TimelineHistory::of_server(&data_directory, timeline)?;
        Ok(ServerPosition { system_identifier, lineage })
    }
}
