//! Retention: which backups (and which archived WAL) a policy keeps, and deleting the rest
//! in an order that leaves every kept backup restorable at every step (as pgBackRest's
//! `expire` and `barman-cloud-backup-delete` do).
//!
//! [`plan`] reads the catalog completely (or fails naming the object it could not read,
//! and nothing is deleted) and decides; [`execute`] deletes what the plan marks obsolete.
//! A dry run is a plan alone.
//!
//! The rules:
//! - Recovery window (Barman's): DONE backups are taken newest first; those that ended
//!   inside the window are kept, and so is the newest one that ended before it began (a
//!   restore to the window's first moments starts from it); older DONE backups are
//!   obsolete. Redundancy N: the newest N DONE backups are kept, older ones are obsolete.
//!   Backups marked keep count among the N, as in Barman.
//! - `minimum_redundancy` wins: never fewer DONE backups are kept than it (the newest).
//! - A keep mark (Barman's `base/<id>/annotations/keep`) keeps a backup whatever the
//!   policy; `full` with the WAL to restore it to any later point, `standalone` with the
//!   WAL from its begin to its end segment.
//! - Only DONE backups of the repository's owner (`systemid`) count, and, when the
//!   server that expires gives its timeline history, only those on it (on its timeline,
//!   or ended strictly before the history left theirs); the others are kept, restorable.
//!   A server that does not own the repository decides nothing.
//! - A FAILED backup, a STARTED one whose worker is gone, and the objects of a backup
//!   without `backup.info` (one that never finished) are obsolete once a kept DONE backup
//!   ended after their last object was written (by time, never by id: Barman's ids are
//!   local time, pgops' UTC). A directory without `backup.info` is left alone for a grace
//!   period after its last write (another tool may still be uploading it: Barman writes
//!   `backup.info` last). A STARTED backup of a running worker is never touched; one no
//!   worker can be taking (begun on a timeline this server's history left before that
//!   point, or whose owner's heartbeat is stale) is marked FAILED and goes by those rules.
//! - WAL: on each timeline, segments (and their `.partial` and `.backup` files) positioned
//!   before the begin segment of the oldest backup kept (restorable to any later point) on
//!   that timeline or on one it descends from go; on a timeline with no such backup on its
//!   lineage, or whose history file is missing or unreadable, only those before the oldest
//!   such backup anywhere (no kept backup's restore reads WAL before its own begin). The
//!   segments of backups kept standalone stay; timeline history files always stay.
//!   Without a policy, or without any backup restorable from its begin, no WAL goes.

mod catalog;
mod execute;
mod keep;
mod plan;
mod policy;
mod rows;
#[cfg(test)]
mod tests;

pub(crate) use catalog::read_keep;
pub use catalog::{read_catalog, CatalogEntry, DoneBackup, EntryState, KeepTarget, StartedIsLive, KEEP_ANNOTATION};
pub use execute::{execute, ExpireFailure, ExpireReport};
pub use keep::{keep_backup, KeepError};
pub use plan::{
    assess, decide, last_done_ended, one_timeline_or_refuse, plan, recoverable_from, BackupDecision, Plan, PlanRequest,
    Scope, WalRange, Why, DEFAULT_INCOMPLETE_GRACE,
};
pub use policy::{Policy, WindowUnit};
pub use rows::{ExpireRow, RowKind};

use crate::ownership::OwnershipError;
use crate::store::StoreError;

impl From<OwnershipError> for RetentionError {
    fn from(e: OwnershipError) -> Self {
        match e {
            OwnershipError::Store(e) => RetentionError::Store(e),
            e => RetentionError::NotAdmitted { problem: format!("{e} ({})", e.hint()) },
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RetentionError {
    /// A listing, read or delete request failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// An object of the catalog does not say what retention needs.
    #[error("{location} cannot be used: {problem}")]
    Unreadable { location: String, problem: String },
    /// The repository belongs to another cluster than the server that expires.
    #[error("{location} names system identifier {owner} as the repository's owner, this server's is {server}: retention deletes nothing here")]
    NotOwner { location: String, owner: String, server: String },
    /// The history of the timeline the caller named cannot be read.
    #[error("the history of timeline {timeline} cannot be read from {location}: {problem}")]
    NoHistory { timeline: u32, location: String, problem: String },
    /// The repository holds more than one timeline and the caller named none to count on.
    #[error("{found}: without the timeline of the cluster the backups are for, retention cannot tell live backups from an abandoned branch's")]
    TimelineNeeded { found: String },
    /// The repository's ownership record does not admit what this run would write (its
    /// marks are encrypted with a key the record must list); the message says why.
    #[error("{problem}")]
    NotAdmitted { problem: String },
    /// The store refused to delete objects (a batch delete's errors per key).
    #[error("the store refused to delete {location}: {cause}{}", match others { 0 => String::new(), n => format!(" (and {n} other objects)") })]
    Refused { location: String, cause: String, others: usize },
}

impl RetentionError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            RetentionError::Store(e) => e.hint(),
            RetentionError::Unreadable { .. } => {
                "pgops deletes nothing while the catalog cannot be read completely: repair that backup.info, or move \
                 the backup's directory out of base/ if it is not needed, then run again."
            }
            RetentionError::NotOwner { .. } => {
                "Point pgops.repository at this cluster's own repository; expire the other cluster's backups from that \
                 cluster, or with the pgops expire command."
            }
            RetentionError::NoHistory { .. } => {
                "Name a timeline whose history file is in the repository's wals/ (every timeline after the first has \
                 one), or leave --timeline out to count every DONE backup."
            }
            RetentionError::TimelineNeeded { .. } => {
                "Pass --timeline N: the timeline of the cluster these backups are for (its newest after a failover); \
                 only DONE backups on that timeline's history count, the others are kept."
            }
            RetentionError::NotAdmitted { .. } => {
                "Give the run the repository's key file (every key its pgops.json lists, the current one first); \
                 nothing was deleted."
            }
            RetentionError::Refused { .. } => {
                "Check that the credentials may delete objects and that no object lock or retention holds them; kept \
                 backups were not touched, and the next run finishes the job."
            }
        }
    }
}
