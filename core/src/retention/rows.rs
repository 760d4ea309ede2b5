//! A plan as rows, the same for `pgops.expire()` and `pgops expire`: one per backup
//! (kept or obsolete, and why), then one per timeline for the WAL that goes.

use super::catalog::EntryState;
use super::plan::Plan;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// What a row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RowKind {
    Backup,
    Wal,
}

impl RowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RowKind::Backup => "backup",
            RowKind::Wal => "wal",
        }
    }
}

/// One line of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpireRow {
    pub kind: RowKind,
    /// The backup id (backup rows).
    pub id: Option<String>,
    /// The backup's status, `INCOMPLETE` without `backup.info` (backup rows).
    pub status: Option<String>,
    /// When the backup ended (backup rows that say so).
    pub ended: Option<DateTime<Utc>>,
    /// The timeline (WAL rows; a DONE backup's begin timeline for backup rows).
    pub timeline: Option<u32>,
    /// The first and last segment that go (WAL rows).
    pub first_wal: Option<String>,
    pub last_wal: Option<String>,
    /// Objects and bytes: the backup's directory, or the WAL that goes.
    pub objects: u64,
    pub bytes: u64,
    pub kept: bool,
    pub why: String,
}

impl Plan {
    /// The plan as rows: backups oldest first, then the WAL that goes per timeline.
    pub fn rows(&self) -> Vec<ExpireRow> {
        let backups = self.backups.iter().map(|decision| {
            let backup = &decision.backup;
            ExpireRow {
                kind: RowKind::Backup,
                id: Some(backup.id.as_str().to_string()),
                status: Some(backup.state.status().to_string()),
                ended: backup.ended,
                timeline: match &backup.state {
                    EntryState::Done(done) => Some(done.begin_wal.timeline.0),
                    _ => None,
                },
                first_wal: None,
                last_wal: None,
                objects: backup.objects,
                bytes: backup.bytes,
                kept: decision.kept(),
                why: decision.why.to_string(),
            }
        });
        let wal = self.wal.iter().map(|range| ExpireRow {
            kind: RowKind::Wal,
            id: None,
            status: None,
            ended: None,
            timeline: Some(range.timeline.0),
            first_wal: Some(range.first.to_string()),
            last_wal: Some(range.last.to_string()),
            objects: range.objects,
            bytes: range.bytes,
            kept: false,
            why: format!("positioned before {}: no kept backup needs it", range.before),
        });
        backups.chain(wal).collect()
    }
}
