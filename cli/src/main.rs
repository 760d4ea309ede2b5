//! `pgops`: the command-line side of pgops. It reads the same repository as the extension,
//! configured by flags or environment (`PGOPS_REPOSITORY`, `PGOPS_S3_ENDPOINT`,
//! `PGOPS_S3_REGION`; credentials from the AWS chain: `AWS_ACCESS_KEY_ID` /
//! `AWS_SECRET_ACCESS_KEY`, profile, web identity).

use clap::{Parser, Subcommand};
use pgops_core::pipeline::KeyRing;
use pgops_core::repository::RepositoryUrl;
use pgops_core::store::{Repository, S3Options};
use pgops_core::InvalidSetting;
use std::fmt::Display;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

mod cnpg;
mod expire;
mod keep;
mod keygen;
mod list;
mod restore;
mod verify;
mod wal_fetch;

/// Exit statuses, the same for every subcommand (README "Exit statuses"), and Barman
/// Cloud's (2 a connectivity error, 3 bad arguments), so scripts written for it keep
/// working. wal-fetch follows Postgres' restore_command rules instead: 1 to 125 means "not
/// in the archive" (recovery ends there and the server promotes), above 125 stops recovery
/// with FATAL (a restart resumes where it was). So wal-fetch exits 1 only when the store
/// said the file is not there, and [`exit::STOP_RECOVERY`] for every error.
mod exit {
    /// wal-fetch: not in the repository; verify: problems found.
    pub const NOT_FOUND: u8 = 1;
    /// The store could not be reached or read, or refused a request.
    pub const STORE: u8 = 2;
    pub const USAGE: u8 = 3;
    /// Refused (what was asked cannot be done safely: the message says why), corrupt
    /// objects, local I/O.
    pub const OTHER: u8 = 4;
    /// wal-fetch: an error (store still failing after the retries, corrupt or conflicting
    /// objects, a local write error, bad usage). Postgres stops recovery with FATAL.
    pub const STOP_RECOVERY: u8 = 255;

    /// The status of a failure of `kind`, for every subcommand but wal-fetch: 2 the store,
    /// 3 bad usage, 4 the rest (refused, corrupt, not found, local I/O, stopped).
    pub fn of(kind: pgops_core::error::ErrorKind) -> u8 {
        use pgops_core::error::ErrorKind;
        match kind {
            ErrorKind::Store => STORE,
            ErrorKind::BadInput => USAGE,
            ErrorKind::NotFound | ErrorKind::Refused | ErrorKind::Corrupt | ErrorKind::LocalIo | ErrorKind::Stopped => {
                OTHER
            }
        }
    }
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
    /// Key file of an encrypted repository (age secret keys, as `pgops keygen` writes
    /// them; older keys below the current one). Needed to read anything in it.
    #[arg(long, env = "PGOPS_ENCRYPTION_KEY_FILE", global = true)]
    encryption_key_file: Option<PathBuf>,
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
    /// Exit status: 0 restored; 2 the store failed; 3 bad usage; 4 the restore was refused
    /// or failed otherwise.
    Restore(restore::RestoreArgs),
    /// Check that the repository is restorable: every DONE backup's files against its
    /// manifest, the WAL archive free of gaps on every timeline, each backup's WAL present.
    ///
    /// Exit status: 0 all good; 1 problems found (each one printed); 2 the store could not
    /// be read; 4 what it read back is corrupt or encrypted to a key the key file lacks.
    Verify(verify::VerifyArgs),
    /// Apply a retention policy: delete obsolete backups (backup.info first, then their
    /// objects) and the WAL no kept backup needs; the same rows as pgops.expire().
    ///
    /// Nothing is deleted when the catalog cannot be read completely. Exit status: 0 done
    /// (or planned, with --dry-run); 2 the store failed or refused a deletion (what was
    /// deleted is printed; a new run finishes the job); 3 bad usage; 4 the catalog cannot
    /// be read completely (nothing deleted).
    Expire(expire::ExpireArgs),
    /// Keep a DONE backup whatever the retention policy (Barman's keep mark, as
    /// barman-cloud-backup-keep writes it), or --release it; as pgops.keep_backup().
    ///
    /// Exit status: 0 kept (or released); 2 the store failed; 3 bad usage; 4 no such
    /// backup, not DONE, or a key the repository's record does not list.
    Keep(keep::KeepArgs),
    /// Write a new encryption key file (mode 0600; an existing file is never replaced) and
    /// print its key id and public key. Exit status: 0 written; 4 not written.
    Keygen(keygen::KeygenArgs),
    /// List the backups in the repository (pgops' and Barman Cloud's), oldest first; with
    /// --policy, whether that policy keeps each one (kept_by_policy).
    ///
    /// Exit status: 0 listed; 2 the store could not be read; 4 what it read back is corrupt
    /// or encrypted to a key the key file lacks.
    List(list::ListArgs),
    /// Run as a CloudNativePG plugin (CNPG-I): `pgops cnpg instance` is the instance pod's
    /// sidecar. Its repository comes from the Cluster's spec.plugins[name=pgops.io]
    /// parameters, not from --repository.
    Cnpg(cnpg::CnpgArgs),
}

/// The repository the global options name, and the keys to read it with.
pub struct Source {
    url: RepositoryUrl,
    s3: S3Options,
    keys: Option<Arc<KeyRing>>,
}

impl Source {
    pub async fn open(&self) -> Repository {
        Repository::open(&self.url, &self.s3).await.with_keys(self.keys.clone())
    }
}

/// Prints a failed subcommand's error, `pgops <command>: <message>` and its hint, as every
/// subcommand does, and gives `status`.
fn failed(command: &str, error: &dyn Display, hint: &str, status: u8) -> ExitCode {
    eprintln!("pgops {command}: {error}\nhint: {hint}");
    ExitCode::from(status)
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
    let command = match cli.command {
        Command::Keygen(args) => return keygen::run(&args),
        Command::Cnpg(args) => return cnpg::run(args),
        command => command,
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
    let keys = match cli.encryption_key_file.as_deref().map(KeyRing::load).transpose() {
        Ok(keys) => keys.map(Arc::new),
        Err(e) => return usage_error(InvalidSetting::new(e.to_string(), e.hint())),
    };
    let source = Source { url, s3: S3Options { endpoint, region: cli.s3_region, credentials: None, sse: None }, keys };
    // Multi-threaded: restore reads objects from a blocking thread while tasks fetch ahead.
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pgops: could not start the I/O runtime: {e}");
            return ExitCode::from(if wal_fetch::invoked() { exit::STOP_RECOVERY } else { exit::OTHER });
        }
    };
    let status = match command {
        Command::Keygen(_) | Command::Cnpg(_) => unreachable!("they run before the repository is read"),
        Command::WalFetch(args) => wal_fetch::run(args, &source, &runtime),
        Command::Restore(args) => restore::run(args, &source, &runtime),
        Command::Expire(args) => expire::run(args, &runtime.block_on(source.open()), &runtime),
        Command::Verify(args) => verify::run(args, &runtime.block_on(source.open()), &runtime),
        Command::List(args) => list::run(args, &runtime.block_on(source.open()), &runtime),
        Command::Keep(args) => keep::run(args, &runtime.block_on(source.open()), &runtime),
    };
    // Not dropped: dropping waits for every blocking thread, and one a deadline gave up on
    // (a read still retrying a store that stopped answering) would hold the exit for as
    // long as its own patience, or panic on the runtime shutting down under it. The
    // outcome is decided; the process exit ends such threads.
    std::mem::forget(runtime);
    status
}
