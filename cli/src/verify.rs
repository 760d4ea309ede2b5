//! `pgops verify`: is the repository restorable? One line per backup and timeline, then
//! the verdict (the checks are `pgops_core::verify`).

use crate::{exit, failed};
use pgops_core::error::Kinded;
use pgops_core::store::{Repository, StoreError};
use pgops_core::verify::{verify, VerifyReport};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// A JSON report instead of text
    #[arg(long)]
    json: bool,
}

/// The exit status of each outcome: 0 all good; 1 problems found; otherwise by the kind of
/// the store's failure (2 the store could not be read, 4 corrupt; the table in main.rs).
fn exit_status(outcome: &Result<VerifyReport, StoreError>) -> u8 {
    match outcome {
        Ok(report) if report.ok => 0,
        Ok(_) => exit::NOT_FOUND,
        Err(e) => exit::of(e.kind()),
    }
}

/// Runs `pgops verify` (statuses: [`exit_status`]).
pub fn run(args: VerifyArgs, repo: &Repository, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let outcome = verify(repo, runtime.handle());
    let status = exit_status(&outcome);
    match outcome {
        Ok(report) => {
            print_report(&report, args.json);
            ExitCode::from(status)
        }
        Err(e) => failed("verify", &e, e.hint(), status),
    }
}

fn print_report(report: &VerifyReport, json: bool) {
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
    let names = |segments: &[pgops_core::naming::WalSegment]| {
        segments.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    };
    for t in &report.timelines {
        let gaps = match (t.missing_needed.is_empty(), t.gaps.is_empty()) {
            (false, _) => format!("missing {} (needed)", names(&t.missing_needed)),
            (true, false) => format!("gaps at {}, where no backup needs WAL", names(&t.gaps)),
            (true, true) => "no gaps".to_string(),
        };
        println!("timeline {}: WAL {} to {} ({} segments), {gaps}", t.timeline, t.first, t.last, t.segments);
    }
    for problem in &report.problems {
        println!("problem: {problem}");
    }
    let by_key: Vec<String> = report.objects_by_key.iter().map(|(key, count)| format!("{key} {count}")).collect();
    println!("objects by encryption key: {}", if by_key.is_empty() { "none".to_string() } else { by_key.join(", ") });
    println!("{}", if report.ok { "repository ok" } else { "repository has problems" });
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgops_core::store::StoreErrorKind;

    #[test]
    fn problems_exit_1_and_an_unreadable_store_2() {
        let report = |ok| VerifyReport {
            ok,
            backups: vec![],
            timelines: vec![],
            problems: vec![],
            objects_by_key: Default::default(),
        };
        assert_eq!(exit_status(&Ok(report(true))), 0);
        assert_eq!(exit_status(&Ok(report(false))), exit::NOT_FOUND);
        let denied = StoreError {
            operation: "ListObjectsV2",
            location: "s3://b/main/base/".into(),
            kind: StoreErrorKind::AccessDenied,
            cause: "HTTP 403".into(),
        };
        assert_eq!(exit_status(&Err(denied)), exit::STORE);
    }
}
