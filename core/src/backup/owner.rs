//! Who started a backup. A worker marks FAILED only the STARTED backups that this very
//! cluster instance started and could not finish (it died with them). The system
//! identifier is not enough: a clone (a restored backup, a pg_basebackup or volume-snapshot
//! copy) shares it, and its worker must never touch the running backup of the production
//! cluster next to it.
//!
//! The owner is recorded in the backup's directory as `pgops-owner.json` (pgops-only:
//! Barman's `backup.info` loader rejects unknown keys) and is:
//! - an instance id kept in `PGDATA/pgops_instance`, which pgops' base backups leave out
//!   (a restored backup makes a new one) and which is made anew when the file was written
//!   on another host or for another data directory (a pg_basebackup or volume-snapshot copy
//!   started elsewhere);
//! - the timeline the instance runs on: a promoted copy runs on a new one;
//! - a heartbeat: the record is written again every [`HEARTBEAT_INTERVAL`] while the backup
//!   runs, so that a STARTED backup whose owner died with it (a failover mid-backup, a host
//!   renamed) is known for abandoned once the heartbeat is older than [`HEARTBEAT_STALE`],
//!   wherever retention runs.

use super::{BackupError, BackupId};
use crate::store::{Repository, StoreResult};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The instance id's file in the data directory (left out of pgops' base backups).
pub const INSTANCE_FILE: &str = "pgops_instance";
/// The owner object in a backup's directory.
pub const OWNER_OBJECT: &str = "pgops-owner.json";

/// The cluster instance that started a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupOwner {
    pub instance_id: String,
    pub timeline: u32,
}

/// Whether a STARTED backup `id` (owned by `owner`, if the record says) may be running, as
/// an instance with id `instance_id`, now taking backup `running`, sees it: the one it
/// takes, and any of another instance (or of an unknown one), which may be running there.
/// The heartbeat and lineage rules of retention decide about those.
pub fn started_is_live(
    running: Option<&str>,
    instance_id: Option<&str>,
    id: &BackupId,
    owner: Option<&BackupOwner>,
) -> bool {
    let ours = |owner: &BackupOwner| instance_id == Some(owner.instance_id.as_str());
    running == Some(id.as_str()) || !owner.is_some_and(ours)
}

/// How often a running backup writes its owner record again.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);

/// How old a heartbeat may be before its STARTED backup is taken for abandoned. Thirty
/// missed heartbeats: a store briefly down does not make a running backup look dead, and
/// a backup that cannot write its heartbeat for half of this fails itself
/// ([`Heartbeat::check`]) before anyone else may call it abandoned.
pub const HEARTBEAT_STALE: Duration = Duration::from_secs(30 * 60);

/// The owner object as stored: the owner and when it last said it was alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRecord {
    #[serde(flatten)]
    pub owner: BackupOwner,
    /// `None` in records of pgops before heartbeats.
    #[serde(default)]
    pub heartbeat: Option<DateTime<Utc>>,
}

/// What `pgops_instance` holds: the id, and where it was made.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct InstanceRecord {
    instance_id: String,
    host: String,
    data_directory: String,
}

/// This instance's id, from `data_directory/pgops_instance`: made (random) and written
/// when the file is missing, unreadable, or was written on another host or for another
/// data directory.
pub fn instance_id(data_directory: &Path, host: &str) -> io::Result<String> {
    let path = data_directory.join(INSTANCE_FILE);
    let here = data_directory.display().to_string();
    let kept = std::fs::read(&path)
        .ok()
        .and_then(|text| serde_json::from_slice::<InstanceRecord>(&text).ok())
        .filter(|record| record.host == host && record.data_directory == here);
    if let Some(record) = kept {
        return Ok(record.instance_id);
    }
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|e| io::Error::other(format!("no random source: {e}")))?;
    let record = InstanceRecord { instance_id: hex::encode(random), host: host.to_string(), data_directory: here };
    // Written whole and renamed: a crash leaves the old file or the new one.
    let partial = data_directory.join(format!("{INSTANCE_FILE}.tmp"));
    std::fs::write(&partial, serde_json::to_vec(&record).map_err(io::Error::other)?)?;
    std::fs::rename(&partial, &path)?;
    Ok(record.instance_id)
}

/// The host name, as the kernel has it.
pub fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length, which is what we pass.
    let status = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if status != 0 {
        return String::new();
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

fn owner_key(backup_id: &str) -> String {
    format!("{}/{OWNER_OBJECT}", super::backup_dir(backup_id))
}

/// The key and content of `backup_id`'s owner record, with a heartbeat of now.
pub(crate) fn owner_object(backup_id: &str, owner: &BackupOwner) -> (String, bytes::Bytes) {
    let record = OwnerRecord { owner: owner.clone(), heartbeat: Some(Utc::now()) };
    (owner_key(backup_id), serde_json::to_vec(&record).expect("the owner serializes").into())
}

/// Who started `backup_id`; `None` when not recorded (another tool, or an older pgops).
pub async fn owner_of(repo: &Repository, backup_id: &str) -> StoreResult<Option<OwnerRecord>> {
    Ok(repo.get_metadata(&owner_key(backup_id)).await?.and_then(|body| serde_json::from_slice(&body).ok()))
}

/// The heartbeat of a running backup: a task on the runtime writing the owner record
/// again every [`HEARTBEAT_INTERVAL`] (each write bounded by that interval), stopped when
/// this is dropped.
pub struct Heartbeat {
    task: tokio::task::JoinHandle<()>,
    /// When a heartbeat last reached the store.
    last_written: Arc<Mutex<Instant>>,
}

impl Heartbeat {
    /// Starts beating for `backup_id`, whose owner record was just written.
    pub fn start(
        repo: &Repository,
        runtime: &tokio::runtime::Handle,
        backup_id: &str,
        owner: &BackupOwner,
    ) -> Heartbeat {
        let last_written = Arc::new(Mutex::new(Instant::now()));
        let (repo, backup_id, owner, written) =
            (repo.clone(), backup_id.to_string(), owner.clone(), last_written.clone());
        let task = runtime.spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT_INTERVAL).await;
                let (key, body) = owner_object(&backup_id, &owner);
                if let Ok(Ok(())) = tokio::time::timeout(HEARTBEAT_INTERVAL, repo.put(&key, body)).await {
                    *written.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Instant::now();
                }
            }
        });
        Heartbeat { task, last_written }
    }

    /// `Err` when no heartbeat has reached the store for half of [`HEARTBEAT_STALE`]:
    /// the backup must fail now rather than risk being found abandoned (and its objects
    /// deleted) by another server's retention while it goes on.
    pub fn check(&self) -> Result<(), BackupError> {
        let since = self.last_written.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).elapsed();
        if since < HEARTBEAT_STALE / 2 {
            return Ok(());
        }
        Err(BackupError::HeartbeatLost { since, stale: HEARTBEAT_STALE })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_id_is_kept_here_and_made_anew_for_a_copy_elsewhere() {
        let data = tempfile::tempdir().unwrap();
        let first = instance_id(data.path(), "db-1").unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(instance_id(data.path(), "db-1").unwrap(), first, "a restart keeps the id");

        // A volume snapshot or pg_basebackup copy started on another host.
        assert_ne!(instance_id(data.path(), "clone-host").unwrap(), first);

        // The same copy in another directory on the same host.
        let copy = tempfile::tempdir().unwrap();
        std::fs::copy(data.path().join(INSTANCE_FILE), copy.path().join(INSTANCE_FILE)).unwrap();
        let copied = instance_id(copy.path(), "clone-host").unwrap();
        assert_ne!(copied, instance_id(data.path(), "clone-host").unwrap());

        // A damaged file is replaced, not an error.
        std::fs::write(data.path().join(INSTANCE_FILE), b"{not json").unwrap();
        assert_eq!(instance_id(data.path(), "db-1").unwrap().len(), 32);
    }
}
