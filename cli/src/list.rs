//! `pgops list`: the backups in the repository (pgops' and Barman Cloud's), oldest first;
//! with --policy, whether that policy keeps each one.

use crate::{exit, expire, failed};
use pgops_core::backup::catalog::{list_backups, BackupRow};
use pgops_core::error::Kinded;
use pgops_core::store::Repository;
use std::collections::BTreeMap;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ListArgs {
    /// One JSON array instead of a table
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    policy: expire::PolicyArgs,
}

/// One backup of `pgops list`, and whether the policy given keeps it.
#[derive(serde::Serialize)]
struct ListedBackup {
    #[serde(flatten)]
    row: BackupRow,
    /// `None` without a policy, or when the catalog cannot be read completely.
    kept_by_policy: Option<bool>,
}

/// Runs `pgops list`. Exit status: 0 listed; 2 the store could not be read; 4 a listing
/// that reads back corrupt (the table in main.rs).
pub fn run(args: ListArgs, repo: &Repository, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let ListArgs { json, policy } = args;
    runtime.block_on(async {
        let backups = match list_backups(repo).await {
            Ok(backups) => backups,
            Err(e) => return failed("list", &e, e.hint(), exit::of(e.kind())),
        };
        // The listing stands without the policy's verdicts, as pgops.backup_list does.
        let kept = policy.kept(repo).await.unwrap_or_else(|e| {
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
    })
}

/// A table for people, JSON for programs. The kept column only with a policy.
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
