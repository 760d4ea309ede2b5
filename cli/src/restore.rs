//! `pgops restore`: arguments and output of the restore subcommand (the work is
//! `pgops_core::restore`).

use crate::{exit, usage_error, wal_fetch_command, Source};
use pgops_core::restore::{self, ArchiveAfterRestore, RecoveryTarget, RestoreRequest, TargetTime};
use pgops_core::InvalidSetting;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("recovery_target").multiple(false)))]
pub struct RestoreArgs {
    /// The data directory to create (or an empty one)
    #[arg(long)]
    pgdata: PathBuf,
    /// Backup id, or latest: the backup that can reach the target (the newest that ended
    /// before a time or LSN; the output says which and why)
    #[arg(long, default_value = "latest")]
    backup: String,
    /// Recover until this time: '2026-11-25 07:00:00+00' (an offset or Z: that instant), or
    /// '2026-11-25 07:00:00' (no offset: local time of the backed-up server's timezone
    /// setting, as psql on it shows times)
    #[arg(long, group = "recovery_target")]
    target_time: Option<String>,
    /// Recover until this LSN
    #[arg(long, group = "recovery_target")]
    target_lsn: Option<String>,
    /// Recover until this transaction id
    #[arg(long, group = "recovery_target")]
    target_xid: Option<String>,
    /// Recover until this restore point (pg_create_restore_point)
    #[arg(long, group = "recovery_target")]
    target_name: Option<String>,
    /// Stop as soon as the backup is consistent
    #[arg(long, group = "recovery_target", value_parser = ["immediate"])]
    target: Option<String>,
    /// What Postgres does at the target (its default: pause)
    #[arg(long, value_parser = ["pause", "promote", "shutdown"])]
    target_action: Option<String>,
    /// recovery_target_timeline (latest, current or a number)
    #[arg(long)]
    target_timeline: Option<String>,
    /// Restore tablespace OID into DIR instead of its original location (repeatable)
    #[arg(long = "tablespace-map", value_name = "OID=DIR")]
    tablespace_map: Vec<String>,
    /// off: the restored cluster does not archive WAL, take scheduled backups or use the
    /// repository (archive_mode = 'off', pgops.backup_schedule = '', pgops.repository = ''
    /// in postgresql.auto.conf), so a clone never writes into the repository it came from;
    /// keep: as backed up
    #[arg(long, value_enum, default_value_t = Archive::Off)]
    archive: Archive,
    /// Restore without checking files against the backup's manifest, even when a pgops
    /// backup's manifest is missing or fails its own checksum
    #[arg(long)]
    no_verify: bool,
}

/// `--archive`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Archive {
    Off,
    Keep,
}

/// The recovery target the flags name (clap lets at most one through).
fn recovery_target(args: &RestoreArgs) -> Result<RecoveryTarget, InvalidSetting> {
    Ok(if let Some(time) = &args.target_time {
        RecoveryTarget::Time(TargetTime::parse(time).ok_or_else(|| {
            InvalidSetting::new(
                format!("cannot read --target-time \"{time}\""),
                "Use 'YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM]|Z]'; without an offset the time is read in the backed-up server's timezone.",
            )
        })?)
    } else if let Some(lsn) = &args.target_lsn {
        RecoveryTarget::Lsn(lsn.clone())
    } else if let Some(xid) = &args.target_xid {
        RecoveryTarget::Xid(xid.clone())
    } else if let Some(name) = &args.target_name {
        RecoveryTarget::Name(name.clone())
    } else if args.target.is_some() {
        RecoveryTarget::Immediate
    } else {
        RecoveryTarget::End
    })
}

fn tablespace_overrides(mappings: &[String]) -> Result<BTreeMap<u32, PathBuf>, InvalidSetting> {
    mappings
        .iter()
        .map(|mapping| {
            mapping
                .split_once('=')
                .and_then(|(oid, dir)| Some((oid.parse::<u32>().ok()?, PathBuf::from(dir))))
                .ok_or_else(|| {
                    InvalidSetting::new(
                        format!("cannot read --tablespace-map {mapping}"),
                        "Use --tablespace-map OID=/absolute/dir.",
                    )
                })
        })
        .collect()
}

/// Runs `pgops restore`. Exit status: 0 restored; 3 bad usage; 4 the restore failed or
/// was refused (message on stderr).
pub fn run(args: RestoreArgs, source: &Source, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let target = match recovery_target(&args) {
        Ok(target) => target,
        Err(invalid) => return usage_error(invalid),
    };
    let tablespace_map = match tablespace_overrides(&args.tablespace_map) {
        Ok(map) => map,
        Err(invalid) => return usage_error(invalid),
    };
    let request = RestoreRequest {
        pgdata: args.pgdata,
        backup: Some(args.backup),
        target,
        target_action: args.target_action,
        target_timeline: args.target_timeline,
        tablespace_map,
        restore_command: wal_fetch_command(source),
        archive: match args.archive {
            Archive::Off => ArchiveAfterRestore::Off,
            Archive::Keep => ArchiveAfterRestore::Keep,
        },
        verify: !args.no_verify,
    };
    let repo = runtime.block_on(source.open());
    // Drawn on a terminal only (indicatif hides it otherwise).
    let progress = indicatif::ProgressBar::new_spinner().with_style(
        indicatif::ProgressStyle::with_template("{spinner} {binary_bytes} in {msg} files, {binary_bytes_per_sec}")
            .expect("a valid template"),
    );
    progress.enable_steady_tick(std::time::Duration::from_millis(200));
    let mut files = 0u64;
    let mut on_file = |size: u64| {
        files += 1;
        progress.inc(size);
        progress.set_message(files.to_string());
    };
    let result = restore::restore(&repo, runtime.handle(), &request, &mut on_file);
    progress.finish_and_clear();
    match result {
        Ok(report) => {
            for warning in &report.warnings {
                eprintln!("pgops restore: warning: {warning}");
            }
            for note in &report.notes {
                println!("{note}");
            }
            println!(
                "restored backup {} into {}: {} files, {} bytes{}; start PostgreSQL on it to recover",
                report.backup_id,
                request.pgdata.display(),
                report.files,
                report.bytes,
                if report.verified {
                    ", each checked against backup_manifest"
                } else if request.verify {
                    " (no manifest: not a pgops backup)"
                } else {
                    " (not checked: --no-verify)"
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pgops restore: {e}");
            ExitCode::from(exit::OTHER)
        }
    }
}
