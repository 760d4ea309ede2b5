//! The restored cluster's recovery configuration (postgresql.auto.conf).

use super::*;
use chrono::{DateTime, Utc};

/// postgresql.auto.conf lines: recovery (`restore_command`, `recovery_target_*`, with a
/// target time as the instant `target_time`) and, unless kept, archiving turned off.
pub(super) fn recovery_settings(
    request: &RestoreRequest,
    restore_command: &str,
    target_time: Option<DateTime<Utc>>,
) -> String {
    // Postgres reads backslash escapes in quoted configuration values: double them too.
    let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"));
    let mut lines = vec![format!("restore_command = {}", quote(restore_command))];
    match &request.target {
        RecoveryTarget::End => {}
        RecoveryTarget::Time(typed) => {
            let at = target_time.unwrap_or_else(|| typed.estimate());
            lines.push(format!("recovery_target_time = {}", quote(&target_time::postgres_time(at))));
        }
        RecoveryTarget::Lsn(lsn) => lines.push(format!("recovery_target_lsn = {}", quote(&lsn.to_string()))),
        RecoveryTarget::Xid(xid) => lines.push(format!("recovery_target_xid = {}", quote(&xid.to_string()))),
        RecoveryTarget::Name(name) => lines.push(format!("recovery_target_name = {}", quote(name))),
        RecoveryTarget::Immediate => lines.push("recovery_target = 'immediate'".into()),
    }
    if let Some(action) = &request.target_action {
        lines.push(format!("recovery_target_action = {}", quote(action.as_str())));
    }
    if let Some(timeline) = &request.target_timeline {
        lines.push(format!("recovery_target_timeline = {}", quote(&timeline.to_string())));
    }
    if request.archive == ArchiveAfterRestore::Off {
        lines.push("archive_mode = 'off'".into());
        lines.push("pgops.backup_schedule = ''".into());
        // The pgops worker writes into the repository too (it marks backups left STARTED
        // by its cluster FAILED when it starts): a production backup running then is ours.
        lines.push("pgops.repository = ''".into());
    }
    format!("# Added by pgops restore\n{}\n", lines.join("\n"))
}
