//! `pgops restore`: arguments and output of the restore subcommand (the work is
//! `pgops_core::restore`).

use crate::{exit, failed, Source};
use pgops_core::error::Kinded;
use pgops_core::naming::Lsn;
use pgops_core::restore::{
    self, ArchiveAfterRestore, BackupChoice, RecoveryTarget, RestoreError, RestoreRequest, TargetAction, TargetTime,
    TargetTimeline,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The data directory to create (or an empty one)
    #[arg(long)]
    pgdata: PathBuf,
    /// Backup id, or latest: the backup that can reach the target (the newest that ended
    /// before a time or LSN; the output says which and why)
    #[arg(long, default_value = "latest")]
    backup: BackupChoice,
    #[command(flatten)]
    target: TargetArgs,
    /// What Postgres does at the target (its default: pause)
    #[arg(long, value_enum)]
    target_action: Option<Action>,
    /// recovery_target_timeline (latest, current or a number)
    #[arg(long)]
    target_timeline: Option<TargetTimeline>,
    /// Restore tablespace OID into DIR (an absolute path) instead of its original location
    /// (repeatable)
    #[arg(long = "tablespace-map", value_name = "OID=DIR")]
    tablespace_map: Vec<TablespaceMapping>,
    /// Make pg_wal a link to DIR (an absolute path, missing or empty), as initdb --waldir
    /// makes it: pg_wal on a volume of its own
    #[arg(long, value_name = "DIR")]
    waldir: Option<PathBuf>,
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
    /// Do not fsync the restored files and directories before saying restored (faster;
    /// a crash of the machine soon after may lose some)
    #[arg(long)]
    no_sync: bool,
}

/// The recovery target flags, each read into its type by clap, which lets at most one
/// through.
#[derive(clap::Args)]
#[group(multiple = false)]
struct TargetArgs {
    /// Recover until this time: '2026-11-25 07:00:00+00' (an offset or Z: that instant), or
    /// '2026-11-25 07:00:00' (no offset: local time of the backed-up server's timezone
    /// setting, as psql on it shows times)
    #[arg(long)]
    target_time: Option<TargetTime>,
    /// Recover until this LSN (X/Y, as pg_current_wal_lsn() shows it)
    #[arg(long)]
    target_lsn: Option<Lsn>,
    /// Recover until this transaction id (as txid_current() shows it)
    #[arg(long)]
    target_xid: Option<u64>,
    /// Recover until this restore point (pg_create_restore_point)
    #[arg(long)]
    target_name: Option<String>,
    /// Stop as soon as the backup is consistent
    #[arg(long, value_enum)]
    target: Option<Immediate>,
}

/// `--target immediate`, the one value Postgres' `recovery_target` takes.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Immediate {
    Immediate,
}

impl From<TargetArgs> for RecoveryTarget {
    fn from(flags: TargetArgs) -> RecoveryTarget {
        match flags {
            TargetArgs { target_time: Some(time), .. } => RecoveryTarget::Time(time),
            TargetArgs { target_lsn: Some(lsn), .. } => RecoveryTarget::Lsn(lsn),
            TargetArgs { target_xid: Some(xid), .. } => RecoveryTarget::Xid(xid),
            TargetArgs { target_name: Some(name), .. } => RecoveryTarget::Name(name),
            TargetArgs { target: Some(Immediate::Immediate), .. } => RecoveryTarget::Immediate,
            _ => RecoveryTarget::End,
        }
    }
}

/// `--target-action`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Action {
    Pause,
    Promote,
    Shutdown,
}

impl From<Action> for TargetAction {
    fn from(action: Action) -> TargetAction {
        match action {
            Action::Pause => TargetAction::Pause,
            Action::Promote => TargetAction::Promote,
            Action::Shutdown => TargetAction::Shutdown,
        }
    }
}

/// `--archive`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Archive {
    Off,
    Keep,
}

/// `--tablespace-map OID=DIR`: where tablespace OID is restored.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TablespaceMapping {
    oid: u32,
    dir: PathBuf,
}

impl FromStr for TablespaceMapping {
    type Err = String;

    fn from_str(text: &str) -> Result<TablespaceMapping, String> {
        let usage = "write it as OID=/absolute/dir, the tablespace's OID (a number, as pg_tablespace and the \
                     restore's messages show it) and the directory to restore it into";
        let (oid, dir) = text.split_once('=').ok_or_else(|| format!("no '=' in it: {usage}"))?;
        let oid = oid.parse().map_err(|_| format!("\"{oid}\" is not a tablespace OID: {usage}"))?;
        let dir = PathBuf::from(dir);
        if !dir.is_absolute() {
            return Err(format!("\"{}\" is not an absolute path: {usage}", dir.display()));
        }
        Ok(TablespaceMapping { oid, dir })
    }
}

/// The exit status of a failed restore (the table in main.rs): 2 the store failed, 4 the
/// restore was refused or failed otherwise (an object that does not decode or was
/// rewritten while it was read: waiting does not help); bad usage (3) never gets this far.
fn exit_status(error: &RestoreError) -> u8 {
    exit::of(error.kind())
}

/// Runs `pgops restore`. Exit status: 0 restored; 2 the store failed; 3 bad usage; 4 the
/// restore was refused or failed otherwise (message and hint on stderr).
pub fn run(args: RestoreArgs, source: &Source, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let request = RestoreRequest {
        pgdata: args.pgdata,
        backup: args.backup,
        target: args.target.into(),
        target_action: args.target_action.map(TargetAction::from),
        target_timeline: args.target_timeline,
        tablespace_map: args.tablespace_map.into_iter().map(|TablespaceMapping { oid, dir }| (oid, dir)).collect(),
        wal_directory: args.waldir,
        restore_command: Some(wal_fetch_command(source)),
        archive: match args.archive {
            Archive::Off => ArchiveAfterRestore::Off,
            Archive::Keep => ArchiveAfterRestore::Keep,
        },
        verify: !args.no_verify,
        sync: !args.no_sync,
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
        Err(e) => failed("restore", &e, e.hint(), exit_status(&e)),
    }
}

/// The restore_command a restore writes: this binary, with the repository it restored from.
fn wal_fetch_command(source: &Source) -> String {
    let Source { url, s3, keys } = source;
    // Shell-quoted only when needed, to keep the setting readable.
    let quote = |s: &str| {
        if s.chars().all(|c| c.is_ascii_alphanumeric() || "/._:-".contains(c)) {
            s.to_string()
        } else {
            format!("'{}'", s.replace('\'', "'\\''"))
        }
    };
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "pgops".into());
    let mut command = format!("{} --repository {}", quote(&exe), quote(&url.to_string()));
    if let Some(endpoint) = &s3.endpoint {
        command += &format!(" --s3-endpoint {}", quote(endpoint));
    }
    if let Some(keys) = keys {
        command += &format!(" --encryption-key-file {}", quote(&keys.source().display().to_string()));
    }
    command + &format!(" --s3-region {} wal-fetch %f %p", quote(&s3.region))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Command};
    use clap::error::ErrorKind;
    use clap::Parser;
    use pgops_core::store::{StoreError, StoreErrorKind, UndecodableReason};

    fn parse(flags: &[&str]) -> Result<RestoreArgs, clap::Error> {
        let args = ["pgops", "restore", "--pgdata", "/restored"].iter().chain(flags);
        match Cli::try_parse_from(args)?.command {
            Command::Restore(args) => Ok(args),
            _ => unreachable!("parsed as restore"),
        }
    }

    fn target(flags: &[&str]) -> RecoveryTarget {
        parse(flags).map(|args| args.target.into()).unwrap()
    }

    #[test]
    fn each_recovery_target_flag_is_read_into_its_type() {
        assert_eq!(target(&[]), RecoveryTarget::End);
        assert_eq!(target(&["--target-lsn", "16/B374D848"]), RecoveryTarget::Lsn(Lsn(0x16_B374_D848)));
        assert_eq!(target(&["--target-xid", "4294968000"]), RecoveryTarget::Xid(4_294_968_000));
        assert_eq!(target(&["--target-name", "before 'drop'"]), RecoveryTarget::Name("before 'drop'".into()));
        assert_eq!(target(&["--target", "immediate"]), RecoveryTarget::Immediate);
        assert_eq!(
            target(&["--target-time", "2026-11-25 07:00:00+01"]),
            RecoveryTarget::Time(TargetTime::parse("2026-11-25 06:00:00Z").unwrap())
        );
    }

    #[test]
    fn a_target_that_does_not_read_is_a_usage_error_naming_the_form() {
        for (flags, form) in [
            (["--target-lsn", "3000060"], "X/Y in hexadecimal"),
            (["--target-lsn", "0/3000060 "], "X/Y in hexadecimal"),
            (["--target-time", "25/11/2026 07:00"], "YYYY-MM-DD HH:MM:SS"),
            (["--target-xid", "abc"], "invalid digit"),
            (["--target", "latest"], "immediate"),
            (["--target-action", "resume"], "promote"),
            (["--target-timeline", "newest"], "latest, current or a timeline number"),
        ] {
            let err = parse(&flags).err().unwrap_or_else(|| panic!("{flags:?} accepted"));
            assert!(matches!(err.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue), "{flags:?}: {err}");
            assert!(err.to_string().contains(form), "{flags:?}: {err}");
        }
        let two = parse(&["--target-lsn", "0/1", "--target-name", "x"]).err().expect("two targets refused");
        assert_eq!(two.kind(), ErrorKind::ArgumentConflict, "{two}");
    }

    #[test]
    fn tablespace_maps_are_an_oid_and_an_absolute_directory() {
        let args = parse(&["--tablespace-map", "16385=/mnt/fast", "--tablespace-map", "16386=/mnt/a=b"]).unwrap();
        assert_eq!(
            args.tablespace_map,
            [
                TablespaceMapping { oid: 16385, dir: "/mnt/fast".into() },
                TablespaceMapping { oid: 16386, dir: "/mnt/a=b".into() }
            ]
        );
        for (mapping, problem) in [
            ("16385", "no '=' in it"),
            ("fast=/mnt/fast", "\"fast\" is not a tablespace OID"),
            ("4294967296=/mnt/fast", "\"4294967296\" is not a tablespace OID"),
            ("16385=mnt/fast", "\"mnt/fast\" is not an absolute path"),
            ("16385=", "\"\" is not an absolute path"),
        ] {
            let err = parse(&["--tablespace-map", mapping]).err().unwrap_or_else(|| panic!("{mapping} accepted"));
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{mapping}: {err}");
            assert!(err.to_string().contains(problem) && err.to_string().contains("OID=/absolute/dir"), "{err}");
        }
    }

    #[test]
    fn a_store_failure_exits_2_and_every_other_failure_4() {
        let store = StoreError {
            operation: "GetObject",
            location: "s3://b/x".into(),
            kind: StoreErrorKind::Unreachable,
            cause: "connection refused".into(),
        };
        assert_eq!(exit_status(&RestoreError::Store(store.clone())), exit::STORE);
        for kind in [StoreErrorKind::Undecodable(UndecodableReason::Corrupt), StoreErrorKind::Changed] {
            assert_eq!(exit_status(&RestoreError::Store(StoreError { kind, ..store.clone() })), exit::OTHER);
        }
        let errors = [
            RestoreError::Refused { what: "no backup x".into(), hint: "pgops list".into() },
            RestoreError::Corrupt { location: "data.tar".into(), cause: "a symbolic link".into() },
            RestoreError::Io { path: "/restored".into(), cause: std::io::ErrorKind::StorageFull.into() },
        ];
        for error in &errors {
            assert_eq!(exit_status(error), exit::OTHER, "{error}");
        }
    }
}
