//! `pgops restore`: a base backup into an empty data directory, every file checked against
//! the backup's manifest (size and CRC-32C), then set up for recovery from the WAL archive
//! (recovery.signal, restore_command, recovery target).

mod config;
mod durable;
mod error;
mod extract;
mod request;
mod safe_dir;
mod select;
mod stored;
mod tablespaces;
mod target_time;
#[cfg(test)]
mod tests;
mod wal_directory;

pub use error::RestoreError;
pub use request::{
    ArchiveAfterRestore, BackupChoice, NotATimeline, RecoveryTarget, RestoreReport, RestoreRequest, TargetAction,
    TargetTimeline,
};
pub use select::{choose_backup, Choice, ChoiceContext, Snapshot};
pub use stored::verify_backup;
pub use target_time::{NotATime, TargetTime};

use config::recovery_settings;
use extract::{extract, ArchiveKind};
use select::{choice_context, restore_key_hint};
use stored::{all_archived, StoredBackup};
use tablespaces::restore_tablespaces;
use wal_directory::{link_wal_directory, overlap};

use crate::backup::catalog::list_backups;
use crate::ownership::{self, OwnershipError};
use crate::store::Repository;
use chrono::{DateTime, Utc};
use safe_dir::SafeDir;
use std::io::{self, Write};
use std::path::Path;
use tokio::runtime::Handle;

/// Whether `dir` can receive a restore: missing, or an empty directory.
fn ensure_empty(dir: &Path) -> Result<(), RestoreError> {
    match std::fs::read_dir(dir).map(|mut entries| entries.next().is_some()) {
        Ok(true) => Err(RestoreError::refused(
            format!("{} is not empty: pgops restore writes only into an empty (or new) directory", dir.display()),
            "Give a new or empty directory; nothing was written.",
        )),
        Ok(false) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RestoreError::io(dir)(e)),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), RestoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(RestoreError::io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(RestoreError::io(dir))
}

/// Empties a directory this restore filled (to restore another backup into it).
fn remove_contents(dir: &Path) -> Result<(), RestoreError> {
    for entry in std::fs::read_dir(dir).map_err(RestoreError::io(dir))? {
        let path = entry.map_err(RestoreError::io(dir))?.path();
        let removed = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        removed.map_err(RestoreError::io(&path))?;
    }
    Ok(())
}

/// A target time without an offset, read in the zone of the restored configuration.
struct ResolvedTime {
    at: DateTime<Utc>,
    zone: String,
}

/// Restores a backup as `request` says. Nothing is written before the checks that can
/// refuse it (directory not empty, unknown backup, no backup before the target, a pgops
/// backup without a sound manifest) passed. `on_file` is called with each restored file's
/// size, for progress display.
pub fn restore(
    repo: &Repository,
    runtime: &Handle,
    request: &RestoreRequest,
    on_file: &mut dyn FnMut(u64),
) -> Result<RestoreReport, RestoreError> {
    ensure_empty(&request.pgdata)?;
    if let Some(dir) = &request.wal_directory {
        if !dir.is_absolute() {
            return Err(RestoreError::refused(
                format!("the WAL directory \"{}\" is not an absolute path", dir.display()),
                "Give pg_wal's directory as an absolute path; nothing was written.",
            ));
        }
        let tablespaces = request.tablespace_map.values();
        if let Some(other) = std::iter::once(&request.pgdata).chain(tablespaces).find(|other| overlap(dir, other)) {
            return Err(RestoreError::refused(
                format!(
                    "the WAL directory \"{}\" overlaps \"{}\", a directory this restore fills",
                    dir.display(),
                    other.display()
                ),
                "Give pg_wal a directory outside the data and tablespace directories (and not above them); nothing was written.",
            ));
        }
        ensure_empty(dir)?;
    }
    runtime.block_on(ownership::check_keys(repo)).map_err(|e| match e {
        OwnershipError::Store(e) => RestoreError::Store(e),
        e => RestoreError::refused(e.to_string(), restore_key_hint(&e)),
    })?;
    let backups = runtime.block_on(list_backups(repo))?;
    let context = choice_context(repo, runtime, request, &backups)?;
    let mut target = request.target.clone();
    loop {
        let choice = choose_backup(&backups, &request.backup, &target, &context)?;
        let backup = choice.backup;
        let stored = StoredBackup::load(repo, runtime, &backup.backup_id)?;
        let mut warnings = Vec::new();
        let mut manifest = if request.verify {
            stored.manifest().map_err(|e| {
                RestoreError::refused(
                    format!("{e}; pgops restore refuses it"),
                    "Restore another backup (--backup ID), or pass --no-verify to restore this one unchecked.",
                )
            })?
        } else {
            warnings.push(format!(
                "--no-verify: the files of backup {} are not checked against its backup_manifest",
                backup.backup_id
            ));
            None
        };

        create_private_dir(&request.pgdata)?;
        let root = SafeDir::open_root(&request.pgdata).map_err(RestoreError::io(&request.pgdata))?;
        let mut report = RestoreReport {
            backup_id: backup.backup_id.clone(),
            files: 0,
            bytes: 0,
            verified: manifest.is_some(),
            notes: vec![format!("backup {}: {}", backup.backup_id, choice.reason)],
            warnings,
        };
        for stored_archive in &stored.data {
            let location = StoredBackup::location(repo, &backup.backup_id, &stored_archive.name);
            let archive = StoredBackup::open(repo, runtime, &backup.backup_id, stored_archive)?;
            let extracted = extract(&location, archive, Some(&root), ArchiveKind::Data, &mut manifest, on_file)?;
            report.files += extracted.files;
            report.bytes += extracted.bytes;
        }

        // A time without an offset is read in the restored configuration's timezone; the
        // backup was chosen by the latest instant the time can be, so it may end after the
        // real one: then an older one, chosen by the instant, replaces it.
        let resolved = match request.target {
            RecoveryTarget::Time(TargetTime::Local(local)) => {
                let (zone, tz) = target_time::server_timezone(&request.pgdata)?;
                let at = target_time::instant_in(local, tz);
                let ends_after = backup.record.end_time.is_none_or(|end| end > at);
                if ends_after {
                    let first_guess = target == request.target;
                    if matches!(request.backup, BackupChoice::Id(_)) || !first_guess {
                        return Err(RestoreError::refused(
                            format!(
                                "backup {} ends at {}, after the recovery target {local} {zone} ({} UTC): recovery from it cannot stop there",
                                backup.backup_id,
                                backup.record.text("end_time").unwrap_or("?"),
                                target_time::postgres_time(at)
                            ),
                            "Choose an older backup (--backup ID), or --backup latest.",
                        ));
                    }
                    remove_contents(&request.pgdata)?;
                    target = RecoveryTarget::Time(TargetTime::At(at));
                    continue;
                }
                Some(ResolvedTime { at, zone })
            }
            _ => None,
        };
        match (&request.target, &resolved) {
            (RecoveryTarget::Time(TargetTime::Local(local)), Some(resolved)) => report.notes.push(format!(
                "recovery target: {local} in the backup's timezone {} = {} UTC (recovery_target_time)",
                resolved.zone,
                target_time::postgres_time(resolved.at)
            )),
            (RecoveryTarget::Time(typed), _) => report.notes.push(format!(
                "recovery target: {} UTC (recovery_target_time)",
                target_time::postgres_time(typed.estimate())
            )),
            _ => {}
        }

        restore_tablespaces(repo, runtime, request, &stored, &mut manifest, &mut report, on_file)?;
        all_archived(&backup.backup_id, &manifest)?;
        if let (Some(bytes), true) = (&stored.manifest_bytes, report.verified) {
            let path = request.pgdata.join("backup_manifest");
            std::fs::write(&path, bytes).map_err(RestoreError::io(path))?;
        }
        if let Some(restore_command) = &request.restore_command {
            let auto_conf = request.pgdata.join("postgresql.auto.conf");
            let mut conf = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&auto_conf)
                .map_err(RestoreError::io(&auto_conf))?;
            conf.write_all(recovery_settings(request, restore_command, resolved.map(|r| r.at)).as_bytes())
                .map_err(RestoreError::io(&auto_conf))?;
            let signal = request.pgdata.join("recovery.signal");
            std::fs::write(&signal, "").map_err(RestoreError::io(signal))?;
        }
        // Backups of a standby by other tools (or older pgops) hold its standby.signal: kept,
        // the restored cluster would stream from the original's primary instead of
        // recovering from the repository.
        let standby_signal = request.pgdata.join("standby.signal");
        if standby_signal.exists() {
            std::fs::remove_file(&standby_signal).map_err(RestoreError::io(&standby_signal))?;
            report.notes.push("standby.signal (the backup was taken on a standby) was removed: the restored cluster recovers from the repository, not as a standby of the original's primary".into());
        }
        if let Some(dir) = &request.wal_directory {
            link_wal_directory(&request.pgdata, dir)?;
        }
        match request.sync {
            true => {
                let tablespaces = request.tablespace_map.values().filter(|dir| dir.exists());
                let elsewhere = tablespaces.chain(&request.wal_directory);
                for dir in std::iter::once(&request.pgdata).chain(elsewhere) {
                    durable::sync_tree(dir).map_err(|(path, cause)| RestoreError::Io { path, cause })?;
                }
            }
            false => report.warnings.push(
                "--no-sync: the restored files were not synced to disk; a crash of this machine may lose or empty some"
                    .into(),
            ),
        }
        report.notes.push(match request.archive {
            ArchiveAfterRestore::Off => format!(
                "archiving is off in the restored cluster (archive_mode = 'off', pgops.backup_schedule = '', pgops.repository = '' \
                 appended to postgresql.auto.conf), so that it writes nothing into {}; to archive from it, \
                 ALTER SYSTEM SET pgops.repository = '<a repository of its own>'; ALTER SYSTEM RESET archive_mode; \
                 ALTER SYSTEM RESET pgops.backup_schedule; and restart",
                repo.location("")
            ),
            ArchiveAfterRestore::Keep => format!(
                "archiving settings kept as backed up (--archive keep): once recovery ends, the restored cluster archives WAL \
                 and takes scheduled backups where its configuration says, which may be {}",
                repo.location("")
            ),
        });
        return Ok(report);
    }
}
