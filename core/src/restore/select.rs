//! Choosing the backup a restore uses: the newest DONE backup that can reach the target,
//! on the timeline recovery follows.

use super::*;
use crate::backup::catalog::BackupSummary;
use crate::backup::{backup_dir, PGOPS_METADATA};
use crate::naming::{Lsn, Timeline};
use crate::ownership::OwnershipError;
use crate::store::Repository;
use crate::timeline::{stored_timeline_history, TimelineHistory};
use std::collections::HashMap;
use tokio::runtime::Handle;

/// Where a backup ended (`end_xlog`); `None` for one that did not end.
pub(super) fn end_lsn(backup: &BackupSummary) -> Option<Lsn> {
    backup.record.end_lsn
}

/// The backup a restore uses, and why it is that one.
#[derive(Debug)]
pub struct Choice<'a> {
    pub backup: &'a BackupSummary,
    pub reason: String,
}

/// A transaction snapshot as `pg_current_snapshot()` prints it, `xmin:xmax:xip,…`, with
/// full (64-bit) transaction ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    xmax: u64,
    running: Vec<u64>,
}

impl Snapshot {
    pub fn parse(text: &str) -> Option<Snapshot> {
        let mut parts = text.trim().split(':');
        let _xmin: u64 = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let running = match parts.next()? {
            "" => Vec::new(),
            list => list.split(',').map(|xid| xid.parse().ok()).collect::<Option<_>>()?,
        };
        parts.next().is_none().then_some(Snapshot { xmax, running })
    }

    /// Whether transaction `xid` had not completed in this snapshot (running, or not yet
    /// started): its commit, if it commits, comes later. A 32-bit id (as `xid` columns
    /// show) is taken in the epoch nearest to the snapshot's.
    pub(super) fn not_completed(&self, xid: u64) -> bool {
        let full = match u32::try_from(xid) {
            Ok(short) => {
                let distance = short.wrapping_sub(self.xmax as u32) as i32;
                self.xmax.checked_add_signed(distance.into()).unwrap_or(0)
            }
            Err(_) => xid,
        };
        full >= self.xmax || self.running.contains(&full)
    }
}

/// What choosing a backup can use beyond `backup.info`.
#[derive(Debug, Clone, Default)]
pub struct ChoiceContext {
    /// `--target-timeline N` (a number): only backups that can follow onto N.
    pub timeline: Option<TimelineHistory>,
    /// Backup id → the snapshot pgops recorded right after its `pg_backup_stop`.
    pub end_snapshots: HashMap<String, Snapshot>,
}

/// The hint for a key file that does not fit the repository, for the command line.
pub(super) fn restore_key_hint(e: &OwnershipError) -> String {
    match e {
        OwnershipError::Encryption { repository_encrypted: true, .. } => {
            "Give the repository's key file: --encryption-key-file FILE or PGOPS_ENCRYPTION_KEY_FILE.".into()
        }
        OwnershipError::Encryption { repository_encrypted: false, .. } => {
            "The repository is not encrypted: leave out --encryption-key-file.".into()
        }
        OwnershipError::WrongKey { .. } => {
            "Give a key file holding every key the repository lists (the current key first, older ones below it)."
                .into()
        }
        e => e.hint(),
    }
}

pub(super) const UNREADABLE_HINT: &str = "An encrypted repository needs its key file (--encryption-key-file or PGOPS_ENCRYPTION_KEY_FILE, with every key it lists); otherwise the backup.info is damaged: pgops verify names every object affected.";

/// The backup to restore: the named one (which must be DONE), or among the DONE backups
/// that can follow onto `--target-timeline`: for a time or LSN the newest that ended before
/// it; for a transaction the newest whose end snapshot shows it not yet completed (the
/// oldest when none tells); for a restore point the oldest (its position is not known);
/// otherwise the newest.
pub fn choose_backup<'a>(
    backups: &'a [BackupSummary],
    requested: &BackupChoice,
    target: &RecoveryTarget,
    context: &ChoiceContext,
) -> Result<Choice<'a>, RestoreError> {
    if let BackupChoice::Id(id) = requested {
        let backup = backups.iter().find(|b| b.backup_id == id.as_str()).ok_or_else(|| {
            RestoreError::refused(
                format!("no backup {id} in the repository"),
                "pgops list shows the backups there; --backup latest takes the one that can reach the target.",
            )
        })?;
        if let Some(why) = backup.unreadable() {
            return Err(RestoreError::refused(format!("backup {id}: {why}"), UNREADABLE_HINT));
        }
        if !backup.is_done() {
            return Err(RestoreError::refused(
                format!("backup {id} is {}, not DONE: it cannot be restored", backup.status()),
                "Name a DONE backup (pgops list shows their status), or --backup latest.",
            ));
        }
        return Ok(Choice { backup, reason: "named by --backup".into() });
    }
    let done: Vec<&BackupSummary> = backups
        .iter()
        .filter(|b| b.is_done())
        .filter(|b| context.timeline.as_ref().is_none_or(|t| t.reachable_from(b.record.timeline, end_lsn(b))))
        .collect();
    let on_timeline = context.timeline.as_ref().map_or(String::new(), |t| {
        format!(
            " that can follow onto timeline {} (on it, or on one it descends from before it branched off)",
            t.timeline
        )
    });
    // Backups whose backup.info cannot be read are passed over, and said.
    let passed_over: Vec<String> =
        backups.iter().filter_map(|b| b.unreadable().map(|why| format!("backup {}: {why}", b.backup_id))).collect();
    let (Some(oldest), Some(newest)) = (done.first().copied(), done.last().copied()) else {
        if let Some(first) = passed_over.first() {
            return Err(RestoreError::refused(
                format!("the repository has no readable DONE backup{on_timeline}; {first}"),
                UNREADABLE_HINT,
            ));
        }
        return Err(RestoreError::refused(
            format!("the repository has no DONE backup{on_timeline}"),
            "pgops list shows the backups there and their status; take a backup (pgops.backup_now()) first.",
        ));
    };
    let passed_over =
        if passed_over.is_empty() { String::new() } else { format!(" (passed over: {})", passed_over.join("; ")) };
    let chosen = |backup, reason: &str| Ok(Choice { backup, reason: format!("{reason}{on_timeline}{passed_over}") });
    match target {
        RecoveryTarget::Time(_) | RecoveryTarget::Lsn(_) => {
            let ends_before = |b: &BackupSummary| match target {
                RecoveryTarget::Time(at) => {
                    b.record.end_time.is_some_and(|end| end <= at.estimate())
                }
                RecoveryTarget::Lsn(lsn) => end_lsn(b).is_some_and(|end| end <= *lsn),
                _ => unreachable!("matched above"),
            };
            match done.iter().rev().find(|b| ends_before(b)) {
                Some(backup) => chosen(backup, "the newest DONE backup that ended before the recovery target"),
                None => Err(RestoreError::refused(
                    format!(
                        "no DONE backup{on_timeline} ends before the recovery target; the oldest ends at {} ({})",
                        oldest.record.text("end_time").unwrap_or("?"),
                        oldest.record.text("end_xlog").unwrap_or("?")
                    ),
                    "Recovery can only stop after the end of the backup it starts from: choose a later target.",
                )),
            }
        }
        RecoveryTarget::Xid(xid) => {
            let reaches = |b: &BackupSummary| context.end_snapshots.get(&b.backup_id).map(|s| s.not_completed(*xid));
            if let Some(backup) = done.iter().rev().find(|b| reaches(b) == Some(true)) {
                return chosen(
                    backup,
                    &format!("the newest DONE backup whose end snapshot shows transaction {xid} not yet completed"),
                );
            }
            if reaches(oldest) == Some(false) {
                return Err(RestoreError::refused(
                    format!(
                        "transaction {xid} had completed before the oldest DONE backup{on_timeline} ({}) ended: no backup can recover to it",
                        oldest.backup_id
                    ),
                    "Recovery can only stop after the end of the backup it starts from: choose a later target.",
                ));
            }
            chosen(
                oldest,
                &format!(
                    "the oldest DONE backup: no backup records that transaction {xid} was still running when it ended, and the oldest can reach it if any can"
                ),
            )
        }
        RecoveryTarget::Name(name) => chosen(
            oldest,
            &format!(
                "the oldest DONE backup: where restore point '{name}' lies is not recorded, and the oldest can reach it if any can"
            ),
        ),
        RecoveryTarget::End | RecoveryTarget::Immediate => chosen(newest, "the newest DONE backup"),
    }
}

/// What choosing a backup needs from the repository beyond backup.info: the history of a
/// numbered `--target-timeline` and, for a transaction target, the end snapshots pgops
/// recorded in its metadata objects.
pub(super) fn choice_context(
    repo: &Repository,
    runtime: &Handle,
    request: &RestoreRequest,
    backups: &[BackupSummary],
) -> Result<ChoiceContext, RestoreError> {
    let mut context = ChoiceContext::default();
    match request.target_timeline {
        Some(TargetTimeline::Number(timeline)) => context.timeline = Some(timeline_history(repo, runtime, timeline)?),
        Some(TargetTimeline::Current) => {}
        // Postgres' default: from the backup's timeline, the newest one whose history file
        // the archive has; a backup of a branch that timeline does not descend from fails
        // at startup ("not a child of this server's history"), after the whole download.
        None | Some(TargetTimeline::Latest) => {
            let oldest = backups.iter().filter(|b| b.is_done()).filter_map(|b| b.record.timeline).min();
            if let Some(Timeline(oldest)) = oldest {
                let newest = runtime.block_on(newest_timeline(repo, oldest))?;
                if newest.timeline > 1 {
                    context.timeline = Some(newest);
                }
            }
        }
    }
    if matches!(request.target, RecoveryTarget::Xid(_)) {
        for backup in backups.iter().filter(|b| b.is_done()) {
            let key = format!("{}/{PGOPS_METADATA}", backup_dir(&backup.backup_id));
            let Some(metadata) = runtime.block_on(repo.get(&key))? else {
                continue; // not a pgops backup
            };
            let snapshot = serde_json::from_slice::<serde_json::Value>(&metadata)
                .ok()
                .and_then(|m| m["end_snapshot"].as_str().and_then(Snapshot::parse));
            if let Some(snapshot) = snapshot {
                context.end_snapshots.insert(backup.backup_id.clone(), snapshot);
            }
        }
    }
    Ok(context)
}

/// The newest timeline recovery from a backup on `from` follows with
/// `recovery_target_timeline = 'latest'`, as Postgres finds it (`findNewestTimeLine`):
/// the history files of `from + 1`, `from + 2`, … while the repository has them.
pub(super) async fn newest_timeline(repo: &Repository, from: u32) -> Result<TimelineHistory, RestoreError> {
    let own = stored_timeline_history(repo, from).await?;
    let mut newest = own.unwrap_or(TimelineHistory { timeline: from, ancestors: Vec::new() });
    while let Some(next) = newest.timeline.checked_add(1) {
        match stored_timeline_history(repo, next).await? {
            Some(history) => newest = history,
            None => break,
        }
    }
    Ok(newest)
}

/// Timeline `timeline`'s history, from its history file in the repository.
pub(super) fn timeline_history(
    repo: &Repository,
    runtime: &Handle,
    timeline: u32,
) -> Result<TimelineHistory, RestoreError> {
    runtime.block_on(stored_timeline_history(repo, timeline))?.ok_or_else(|| {
        RestoreError::refused(
            format!(
                "--target-timeline {timeline}: the repository has no history file {timeline:08X}.history, so recovery cannot follow onto that timeline"
            ),
            "pgops verify lists the timelines the repository holds; give one of them, latest or current.",
        )
    })
}
