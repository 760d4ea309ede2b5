//! `pgops keep`: keep a DONE backup whatever the retention policy (Barman's keep mark,
//! `full`, as `barman-cloud-backup-keep` writes it), or `--release` it; as
//! pgops.keep_backup().

use crate::{exit, failed};
use pgops_core::backup::BackupId;
use pgops_core::error::Kinded;
use pgops_core::retention::{keep_backup, KeepError};
use pgops_core::store::Repository;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct KeepArgs {
    /// The backup's id (pgops list shows them)
    backup_id: BackupId,
    /// Remove the keep mark instead: the policy decides again
    #[arg(long)]
    release: bool,
}

/// The exit status of each kind of failure (the table in main.rs).
fn exit_status(error: &KeepError) -> u8 {
    exit::of(error.kind())
}

/// Runs `pgops keep`. Exit status: 0 kept (or released); 2 the store failed; 3 bad usage;
/// 4 no such backup, not DONE, or a key the repository's record does not list.
pub fn run(args: KeepArgs, repo: &Repository, runtime: &tokio::runtime::Runtime) -> ExitCode {
    match runtime.block_on(keep_backup(repo, &args.backup_id, !args.release)) {
        Ok(()) => {
            let done = if args.release { "no longer kept: the policy decides" } else { "kept whatever the policy" };
            println!("backup {}: {done}", args.backup_id);
            ExitCode::SUCCESS
        }
        Err(e) => failed("keep", &e, &e.hint(), exit_status(&e)),
    }
}
