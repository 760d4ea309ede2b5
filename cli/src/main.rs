//! `pgops`: the command-line side of pgops. It reads the same repository as the extension,
//! configured by flags or environment (`PGOPS_REPOSITORY`, `PGOPS_S3_ENDPOINT`,
//! `PGOPS_S3_REGION`; credentials from the AWS chain: `AWS_ACCESS_KEY_ID` /
//! `AWS_SECRET_ACCESS_KEY`, profile, web identity).

use clap::{Parser, Subcommand};
use pgops_core::backup::catalog::{list_backups, BackupRow};
use pgops_core::repository::RepositoryUrl;
use pgops_core::store::{Repository, S3Options};
use pgops_core::verify::{self, VerifyReport};
use pgops_core::InvalidSetting;
use std::collections::BTreeMap;
use std::process::ExitCode;

mod expire;
mod restore;
mod wal_fetch;

/// Exit statuses. Those of list, restore and verify are Barman Cloud's
/// (barman-cloud-wal-restore), so scripts written for it keep working. wal-fetch follows
/// Postgres' restore_command rules instead: 1 to 125 means "not in the archive" (recovery
/// ends there and the server promotes), above 125 stops recovery with FATAL (a restart
/// resumes where it was). So wal-fetch exits 1 only when the store said the file is not
/// there, and [`exit::STOP_RECOVERY`] for every error.
mod exit {
    /// wal-fetch: not in the repository; verify: problems found.
    pub const NOT_FOUND: u8 = 1;
    pub const STORE: u8 = 2;
    pub const USAGE: u8 = 3;
    pub const OTHER: u8 = 4;
    /// wal-fetch: an error (store still failing after the retries, corrupt or conflicting
    /// objects, a local write error, bad usage). Postgres stops recovery with FATAL.
    pub const STOP_RECOVERY: u8 = 255;
}

#[derive(Parser)]
#[command(
    name = "pgops",
    version,
    about = "Restore side of pgops: list and restore backups, fetch WAL, from a pgops (or Barman Cloud) repository"
)]
struct Cli {
    /// Repository: s3://bucket/prefix or file:///absolute/path
    #[arg(long, env = "PGOPS_REPOSITORY", global = true)]
    repository: Option<String>,
    /// S3 endpoint of an S3-compatible store (path-style addressing); empty for AWS S3
    #[arg(long, env = "PGOPS_S3_ENDPOINT", global = true)]
    s3_endpoint: Option<String>,
    /// S3 region
    #[arg(long, env = "PGOPS_S3_REGION", default_value = "us-east-1", global = true)]
    s3_region: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch one WAL file: restore_command = 'pgops wal-fetch %f %p'.
    ///
    /// Store errors (down, timeouts, 5xx, throttling, resets) are retried with backoff for
    /// --retry-for seconds. Exit status: 0 fetched; 1 not in the repository (recovery ends
    /// there); 255 any error once retries are exhausted, a corrupt or conflicting object, a
    /// local write error or bad usage (Postgres stops recovery with FATAL; restarting the
    /// server resumes recovery where it stopped).
    WalFetch(wal_fetch::WalFetchArgs),
    /// Restore a base backup into an empty data directory, set up to recover from the WAL
    /// archive (recovery.signal, restore_command = pgops wal-fetch, the recovery target).
    ///
    /// Every file is checked against the backup's manifest (size, CRC-32C); a mismatch
    /// stops the restore, and a pgops backup whose manifest is missing or damaged is
    /// refused (--no-verify overrides). Nothing is written unless the directory is empty
    /// (or new). The restored cluster does not archive unless --archive keep.
    ///
    /// Exit status: 0 restored; 3 bad usage; 4 the restore failed or was refused.
    Restore(restore::RestoreArgs),
    /// Check that the repository is restorable: every DONE backup's files against its
    /// manifest, the WAL archive free of gaps on every timeline, each backup's WAL present.
    ///
    /// Exit status: 0 all good; 1 problems found (each one printed); 2 the store could not
    /// be read.
    Verify {
        /// A JSON report instead of text
        #[arg(long)]
        json: bool,
    },
    /// Apply a retention policy: delete obsolete backups (backup.info first, then their
    /// objects) and the WAL no kept backup needs; the same rows as pgops.expire().
    ///
    /// Nothing is deleted when the catalog cannot be read completely. Exit status: 0 done
    /// (or planned, with --dry-run); 2 the store failed or refused a deletion (what was
    /// deleted is printed; a new run finishes the job); 3 bad usage; 4 the catalog cannot
    /// be read completely (nothing deleted).
    Expire(expire::ExpireArgs),
    /// List the backups in the repository (pgops' and Barman Cloud's), oldest first; with
    /// --policy, whether that policy keeps each one (kept_by_policy).
    List {
        /// One JSON array instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        policy: expire::PolicyArgs,
    },
}

/// `pgops verify`: one line per backup and timeline, then the verdict.
fn print_verify_report(report: &VerifyReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(report).expect("the report serializes"));
        return;
    }
    for b in &report.backups {
        let checked = if b.manifest { "checked against its manifest" } else { "read (no manifest)" };
        match b.problems.is_empty() {
            true => println!("backup {}: ok, {} files {checked}", b.id, b.files_checked),
            false => println!("backup {}: {}", b.id, b.problems.join("; ")),
        }
    }
    for t in &report.timelines {
        let gaps = if t.gaps.is_empty() { "no gaps".to_string() } else { format!("missing {}", t.gaps.join(", ")) };
        println!("timeline {}: WAL {} to {} ({} segments), {gaps}", t.timeline, t.first, t.last, t.segments);
    }
    for problem in &report.problems {
        println!("problem: {problem}");
    }
    println!("{}", if report.ok { "repository ok" } else { "repository has problems" });
}

/// One backup of `pgops list`, and whether the policy given keeps it.
#[derive(serde::Serialize)]
struct ListedBackup {
    #[serde(flatten)]
    row: BackupRow,
    /// `None` without a policy, or when the catalog cannot be read completely.
    kept_by_policy: Option<bool>,
}

/// `pgops list`: a table for people, JSON for programs. The kept column only with a policy.
fn print_backups(backups: &[ListedBackup], json: bool, with_policy: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(backups).expect("rows serialize"));
        return;
    }
    let kept_header = if with_policy { format!(" {:<8}", "kept") } else { String::new() };
    println!(
        "{:<16} {:<8}{kept_header} {:<24} {:<24} {:>14} {:>14}  error",
        "id", "status", "begin_wal", "end_wal", "size_bytes", "stored_bytes"
    );
    for ListedBackup { row: r, kept_by_policy } in backups {
        let kept = match (with_policy, kept_by_policy) {
            (false, _) => String::new(),
            (true, Some(true)) => format!(" {:<8}", "kept"),
            (true, Some(false)) => format!(" {:<8}", "obsolete"),
            (true, None) => format!(" {:<8}", "-"),
        };
        println!(
            "{:<16} {:<8}{kept} {:<24} {:<24} {:>14} {:>14}  {}",
            r.id,
            r.status,
            r.begin_wal.as_deref().unwrap_or("-"),
            r.end_wal.as_deref().unwrap_or("-"),
            r.size_bytes.map_or("-".to_string(), |s| s.to_string()),
            r.stored_bytes,
            r.error.as_deref().unwrap_or("")
        );
    }
}

/// The restore_command a restore writes: this binary, with the repository it restored from.
fn wal_fetch_command(url: &RepositoryUrl, s3: &S3Options) -> String {
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
    command + &format!(" --s3-region {} wal-fetch %f %p", quote(&s3.region))
}

/// The exit status of bad usage: for wal-fetch one that stops recovery, since a
/// restore_command that cannot run must not look like the end of the archive.
fn usage_status() -> ExitCode {
    ExitCode::from(if wal_fetch::invoked() { exit::STOP_RECOVERY } else { exit::USAGE })
}

fn usage_error(invalid: InvalidSetting) -> ExitCode {
    eprintln!("pgops: {}\nhint: {}", invalid.message, invalid.hint);
    usage_status()
}

fn main() -> ExitCode {
    if wal_fetch::invoked() {
        wal_fetch::stop_recovery_on_panic();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { usage_status() } else { ExitCode::SUCCESS };
        }
    };
    let Some(repository) = cli.repository.as_deref().filter(|r| !r.is_empty()) else {
        return usage_error(InvalidSetting::new(
            "no repository given",
            "Pass --repository s3://bucket/prefix (or file:///path), or set PGOPS_REPOSITORY.",
        ));
    };
    let url: RepositoryUrl = match repository.parse() {
        Ok(url) => url,
        Err(invalid) => return usage_error(invalid),
    };
    let endpoint = cli.s3_endpoint.filter(|e| !e.is_empty());
    if let Some(Err(invalid)) = endpoint.as_deref().map(pgops_core::setting::validate_endpoint) {
        return usage_error(invalid);
    }
    if let Err(invalid) = pgops_core::setting::validate_region(&cli.s3_region) {
        return usage_error(invalid);
    }
    let s3 = S3Options { endpoint, region: cli.s3_region, credentials: None, sse: None };
    // Multi-threaded: restore reads objects from a blocking thread while tasks fetch ahead.
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pgops: could not start the I/O runtime: {e}");
            return ExitCode::from(if wal_fetch::invoked() { exit::STOP_RECOVERY } else { exit::OTHER });
        }
    };
    match cli.command {
        Command::WalFetch(args) => wal_fetch::run(args, &url, &s3, &runtime),
        Command::Restore(args) => restore::run(args, &url, &s3, &runtime),
        Command::Expire(args) => expire::run(args, &runtime.block_on(Repository::open(&url, &s3)), &runtime),
        Command::Verify { json } => {
            let repo = runtime.block_on(Repository::open(&url, &s3));
            match verify::verify(&repo, runtime.handle()) {
                Ok(report) => {
                    print_verify_report(&report, json);
                    if report.ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(exit::NOT_FOUND)
                    }
                }
                Err(e) => {
                    eprintln!("pgops verify: {e}");
                    ExitCode::from(exit::STORE)
                }
            }
        }
        Command::List { json, policy } => runtime.block_on(async {
            let repo = Repository::open(&url, &s3).await;
            let backups = match list_backups(&repo).await {
                Ok(backups) => backups,
                Err(e) => {
                    eprintln!("pgops list: {e}\nhint: {}", e.hint());
                    return ExitCode::from(exit::STORE);
                }
            };
            // The listing stands without the policy's verdicts, as pgops.backup_list does.
            let kept = policy.kept(&repo).await.unwrap_or_else(|e| {
                eprintln!("pgops list: warning: the policy cannot be applied: {e}\nhint: {}", e.hint());
                Some(BTreeMap::new())
            });
            let listed: Vec<ListedBackup> = backups
                .iter()
                .map(|backup| {
                    let row = backup.row();
                    let kept_by_policy = kept.as_ref().and_then(|kept| kept.get(&row.id).copied());
                    ListedBackup { row, kept_by_policy }
                })
                .collect();
            print_backups(&listed, json, kept.is_some());
            ExitCode::SUCCESS
        }),
    }
}
