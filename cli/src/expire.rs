//! `pgops expire`: retention from the command line, for a repository whose cluster is gone
//! (or to see what the worker would do): the same plan and rows as `pgops.expire()`.
//! STARTED backups are taken for running (never touched): this command cannot know.

use crate::exit;
use clap::Args;
use pgops_core::backup::owner::BackupOwner;
use pgops_core::backup::BackupId;
use pgops_core::error::Kinded;
use pgops_core::retention::{
    assess, execute, one_timeline_or_refuse, plan, ExpireRow, Plan, PlanRequest, Policy, RetentionError,
};
use pgops_core::store::Repository;
use pgops_core::timeline::stored_timeline_history;
use std::collections::BTreeMap;
use std::process::ExitCode;

#[derive(Args)]
pub struct ExpireArgs {
    /// Show what would go; delete nothing
    #[arg(long)]
    dry_run: bool,
    /// One JSON array of rows instead of a table
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    policy: PolicyArgs,
}

/// The retention settings on the command line, shared by `pgops expire` and `pgops list`.
#[derive(Args)]
pub struct PolicyArgs {
    /// 'RECOVERY WINDOW OF 30 DAYS', 'REDUNDANCY 7', '30d', '4w', '6m' (as pgops.retention_policy)
    #[arg(long, env = "PGOPS_RETENTION_POLICY", value_parser = parse_policy)]
    pub policy: Option<Policy>,
    /// Never fewer DONE backups kept than this (as pgops.minimum_redundancy)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub minimum_redundancy: u32,
    /// Count only DONE backups on timeline N's history (read from the repository), as the
    /// worker does for its own timeline; needed when DONE backups ended on several timelines
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub timeline: Option<u32>,
    /// Leave a backup directory without backup.info alone for this long after its last
    /// write: another tool may still be uploading it (as pgops.retention_incomplete_grace;
    /// seconds, or with s, min, h or d)
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_duration)]
    pub incomplete_grace: chrono::Duration,
}

/// A STARTED backup may be running wherever its cluster is: the command line never
/// touches one.
fn started_is_live(_: &BackupId, _: Option<&BackupOwner>) -> bool {
    true
}

impl PolicyArgs {
    /// What to plan with; `None` without a policy.
    async fn request(&self, repo: &Repository) -> Result<Option<PlanRequest<'static>>, RetentionError> {
        let Some(policy) = self.policy else { return Ok(None) };
        let lineage = match self.timeline {
            None => None,
            Some(timeline) => {
                let no_history = |problem: String| RetentionError::NoHistory {
                    timeline,
                    location: repo.location(&format!("wals/{timeline:08X}.history")),
                    problem,
                };
                let history = stored_timeline_history(repo, timeline).await.map_err(|e| no_history(e.to_string()))?;
                Some(history.ok_or_else(|| no_history("the repository has no such history file".into()))?)
            }
        };
        Ok(Some(PlanRequest {
            policy: Some(policy),
            minimum_redundancy: self.minimum_redundancy,
            now: chrono::Utc::now(),
            started_is_live: &started_is_live,
            system_identifier: None,
            lineage,
            incomplete_grace: self.incomplete_grace,
        }))
    }

    /// Whether the policy keeps each backup, by id; `None` without a policy.
    pub async fn kept(&self, repo: &Repository) -> Result<Option<BTreeMap<String, bool>>, RetentionError> {
        let Some(request) = self.request(repo).await? else { return Ok(None) };
        let decisions = assess(repo, &request).await?;
        if self.timeline.is_none() {
            one_timeline_or_refuse(repo, &decisions).await?;
        }
        Ok(Some(decisions.iter().map(|d| (d.backup.id.as_str().to_string(), d.kept())).collect()))
    }
}

/// A duration as Postgres reads a time setting: a whole number of seconds, or followed by
/// `s`, `min`, `h` or `d`.
fn parse_duration(text: &str) -> Result<chrono::Duration, String> {
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let seconds_per: i64 = match unit.trim() {
        "" | "s" => 1,
        "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("\"{text}\" is not a duration: write seconds, or a number with s, min, h or d (7d)")),
    };
    number
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(seconds_per))
        .map(chrono::Duration::seconds)
        .ok_or_else(|| format!("\"{text}\" is not a duration: write seconds, or a number with s, min, h or d (7d)"))
}

fn parse_policy(text: &str) -> Result<Policy, String> {
    match Policy::parse(text) {
        Ok(Some(policy)) => Ok(policy),
        Ok(None) => Err("an empty policy keeps every backup: there is nothing to expire".into()),
        Err(invalid) => Err(format!("{}\nhint: {}", invalid.message, invalid.hint)),
    }
}

/// Exit status: 0 planned (dry run) or done; 2 the store failed or refused a deletion;
/// 4 the catalog cannot be read completely (nothing was deleted); 3 bad usage.
pub fn run(args: ExpireArgs, repo: &Repository, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let ExpireArgs { dry_run, json, policy } = args;
    let request = match runtime.block_on(policy.request(repo)) {
        Ok(Some(request)) => request,
        Ok(None) => {
            eprintln!(
                "pgops expire: no policy given\nhint: Pass --policy 'RECOVERY WINDOW OF 30 DAYS' (or 'REDUNDANCY 7', '30d'), or set PGOPS_RETENTION_POLICY."
            );
            return ExitCode::from(exit::USAGE);
        }
        Err(e) => {
            eprintln!("pgops expire: {e}\nhint: {}", e.hint());
            return ExitCode::from(status_of(&e));
        }
    };
    let counted = async {
        let plan = plan(repo, &request).await?;
        if policy.timeline.is_none() {
            one_timeline_or_refuse(repo, &plan.backups).await?;
        }
        Ok::<Plan, RetentionError>(plan)
    };
    let plan = match runtime.block_on(counted) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("pgops expire: {e}\nhint: {}", e.hint());
            return ExitCode::from(status_of(&e));
        }
    };
    for warning in &plan.warnings {
        eprintln!("pgops expire: warning: {warning}");
    }
    print_rows(&plan.rows(), json);
    if dry_run {
        return ExitCode::SUCCESS;
    }
    match runtime.block_on(execute(repo, &plan)) {
        Ok(report) => {
            eprintln!("pgops expire: {report}");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("pgops expire: {failure}\nhint: {}", failure.error.hint());
            ExitCode::from(status_of(&failure.error))
        }
    }
}

fn status_of(error: &RetentionError) -> u8 {
    exit::of(error.kind())
}

fn print_rows(rows: &[ExpireRow], json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(rows).expect("rows serialize"));
        return;
    }
    println!(
        "{:<7} {:<16} {:<10} {:<51} {:<8} {:>8} {:>14}  why",
        "kind", "id/timeline", "status", "ended/WAL", "verdict", "objects", "bytes"
    );
    for row in rows {
        let (name, status, when) = match (&row.id, &row.first_wal, &row.last_wal) {
            (Some(id), _, _) => (
                id.clone(),
                row.status.clone().unwrap_or_default(),
                row.ended.map_or("-".to_string(), |ended| ended.format("%Y-%m-%d %H:%M:%S%:z").to_string()),
            ),
            (None, Some(first), Some(last)) => (
                row.timeline.map_or("-".to_string(), |timeline| timeline.to_string()),
                "-".to_string(),
                format!("{first}..{last}"),
            ),
            _ => ("-".into(), "-".into(), "-".into()),
        };
        let verdict = if row.kept { "kept" } else { "obsolete" };
        println!(
            "{:<7} {:<16} {:<10} {:<51} {:<8} {:>8} {:>14}  {}",
            row.kind.as_str(),
            name,
            status,
            when,
            verdict,
            row.objects,
            row.bytes,
            row.why
        );
    }
}
