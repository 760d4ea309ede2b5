//! Retention from inside Postgres: the plan request the settings make, and which STARTED
//! backups are live as this server sees them. Runs on the main thread; the store is
//! reached through the interruptible `runtime::block_on` by the callers.

use crate::{backup_control, guc};
use pgops_core::backup::owner::{self, BackupOwner};
use pgops_core::backup::BackupId;
use pgops_core::retention::Policy;
use pgops_core::InvalidSetting;

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
        let ours = |owner: &BackupOwner| self.instance_id.as_deref() == Some(owner.instance_id.as_str());
        self.running.as_deref() == Some(id.as_str()) || !owner.is_some_and(ours)
    }
}

/// The policy and minimum redundancy in force.
pub fn settings() -> Result<(Option<Policy>, u32), InvalidSetting> {
    Ok((guc::retention_policy()?, guc::minimum_redundancy()))
}
