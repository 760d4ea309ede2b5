//! The pgops background worker: takes base backups on `pgops.backup_schedule` and when
//! `pgops.backup_now()` asks, and applies `pgops.retention_policy` after each DONE backup
//! and every `pgops.retention_interval`. It talks to Postgres from its main thread only;
//! the core reads, uploads and deletes on threads of its own.

use crate::retention::{self, Liveness, ServerPosition};
use crate::roles_file::Reconciler;
use crate::runtime::NotDone;
use crate::transaction::in_transaction;
use crate::{archive_module, backup_control, guc, runtime, worker_signals};
use chrono::{DateTime, Utc};
use pgops_core::backup::catalog::fail_interrupted;
use pgops_core::backup::info::{BackupInfo, Tablespace};
use pgops_core::backup::owner::{self, BackupOwner};
use pgops_core::backup::{
    self, queries, BackupError, BackupHost, BackupId, BackupJob, BackupStop, ClusterInfo, HostError, Phase, Progress,
    WalPosition,
};
use pgops_core::repository::RepositoryUrl;
use pgops_core::retention::{execute, plan, ExpireReport, PlanRequest, Policy};
use pgops_core::store::Repository;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::Spi;
use serde::Deserialize;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

const INTERRUPTED: &str = "interrupted: the pgops worker stopped before the backup finished";

pub fn register() {
    BackgroundWorkerBuilder::new("pgops worker")
        .set_type("pgops worker")
        .set_function("pgops_worker_main")
        .set_library("pgops")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

#[pg_guard]
unsafe extern "C-unwind" fn on_worker_exit(_code: i32, _arg: pg_sys::Datum) {
    backup_control::worker_stopped();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pgops_worker_main(_arg: pg_sys::Datum) {
    // SIGTERM ends any wait inside Postgres (pg_backup_stop waiting for WAL archiving), and
    // pg_backup_start's exit hook ends the backup.
    worker_signals::install();
    BackgroundWorker::connect_worker_to_spi(Some(&guc::database()), None);
    // SAFETY: adds a callback of the pg_on_exit_callback signature to this process' exit
    // list, once per worker process (this main function runs once), on its main thread.
    unsafe { pg_sys::before_shmem_exit(Some(on_worker_exit), pg_sys::Datum::from(0)) };
    if let Some(id) = backup_control::worker_started() {
        warning!("pgops: backup {id} did not finish: the previous pgops worker stopped during it");
    }
    log!("pgops worker started");
    let mut worker = Worker {
        unrecorded: Vec::new(),
        swept: false,
        owner: None,
        next_tidy: Instant::now(),
        schedule: None,
        roles: Reconciler::new(),
        // A policy set while the worker was down applies at once.
        retention: RetentionDue::Now,
        retention_run: None,
    };
    loop {
        pgrx::check_for_interrupts!();
        if worker_signals::reload_if_asked() {
            worker.roles.reloaded();
            worker.drop_retention_run("the configuration was reloaded");
        }
        worker.roles.reconcile_if_due();
        worker.tidy_store();
        if let Some(request) = backup_control::take_request() {
            worker.backup(&request.backup_id, request.fast);
            continue;
        }
        if let Some(id) = worker.scheduled_backup_due() {
            if backup_control::start_scheduled(&id) {
                worker.backup(&id, None);
            }
            continue;
        }
        worker.advance_retention();
        wait(worker.sleep());
    }
}

/// Sleeps until woken (a request), the timeout, or postmaster death (exits).
fn wait(timeout: Duration) {
    // SAFETY: MyLatch is the worker's own process latch; waiting on it and resetting it is
    // Postgres' standard wait loop, on the worker's main thread with no LWLock held.
    unsafe {
        let events = (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32;
        pg_sys::WaitLatch(pg_sys::MyLatch, events, timeout.as_millis() as i64, pg_sys::PG_WAIT_EXTENSION);
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
}

/// The longest the worker's main loop waits for the store while tidying it.
const TIDY_TIME: Duration = Duration::from_secs(5);

struct Worker {
    /// FAILED statuses that could not be written yet (the store was down), retried.
    unrecorded: Vec<(String, BackupInfo)>,
    /// Whether STARTED leftovers of an earlier worker were marked FAILED.
    swept: bool,
    /// This cluster instance, once known.
    owner: Option<BackupOwner>,
    next_tidy: Instant,
    /// The schedule's text and its next firing.
    schedule: Option<(String, DateTime<Utc>)>,
    roles: Reconciler,
    retention: RetentionDue,
    retention_run: Option<RetentionRun>,
}

/// When retention runs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RetentionDue {
    /// The worker started, or a backup just ended DONE.
    Now,
    /// `pgops.retention_interval` after this run started (read when due: a reload applies).
    IntervalAfter(Instant),
}

/// What a retention run ends with: the plan's warnings and what was removed, or the error
/// and its hint.
type RetentionOutcome = Result<(Vec<String>, ExpireReport), (String, &'static str)>;

/// A retention run in progress, advanced a slice at a time between the worker's other
/// duties: the policy it applies and its future (which owns what it uses).
struct RetentionRun {
    policy: Policy,
    minimum_redundancy: u32,
    future: Pin<Box<dyn Future<Output = RetentionOutcome>>>,
}

/// How long the worker advances a retention run before it looks at its other duties
/// (backups asked for or scheduled, reloads, the roles file, shutdown).
const RETENTION_SLICE: Duration = Duration::from_secs(1);

impl Worker {
    /// The repository in the settings, and its URL.
    fn repository(&self) -> Result<(RepositoryUrl, Repository), String> {
        let (url, s3) = guc::repository_settings().map_err(|e| format!("{} {}", e.message, e.hint))?;
        let keys = guc::encryption_keys().map_err(|e| format!("{} {}", e.message, e.hint))?;
        let repo = runtime::runtime()?.block_on(Repository::open(&url, &s3)).with_keys(keys);
        Ok((url, repo))
    }

    /// This cluster instance: its instance id (made on first use) and timeline.
    fn owner(&mut self) -> Result<BackupOwner, String> {
        if let Some(owner) = &self.owner {
            return Ok(owner.clone());
        }
        let data_directory = guc::data_directory().ok_or("the data directory is not known yet")?;
        let instance_id = owner::instance_id(&data_directory, &owner::host_name()).map_err(|e| {
            format!("could not keep this instance's id in {}: {e}", data_directory.join(owner::INSTANCE_FILE).display())
        })?;
        // The timeline WAL is written on now (the worker runs once recovery has ended).
        let wal: String = query_json("SELECT to_json(pg_walfile_name(pg_current_wal_lsn()))::text")?;
        let owner = BackupOwner { instance_id, timeline: timeline_of(&wal) };
        self.owner = Some(owner.clone());
        Ok(owner)
    }

    /// Marks crash leftovers FAILED and writes FAILED statuses the store refused earlier;
    /// retried every 10 seconds until it works.
    fn tidy_store(&mut self) {
        if (self.swept && self.unrecorded.is_empty()) || Instant::now() < self.next_tidy {
            return;
        }
        self.next_tidy = Instant::now() + Duration::from_secs(10);
        let (Ok((_, repo)), Ok(rt)) = (self.repository(), runtime::runtime()) else { return };
        if !self.swept {
            let system_identifier = archive_module::cluster_identity().system_identifier;
            // Interruptible, and bounded: a store that does not answer must not delay a
            // shutdown, nor the worker's other duties (the roles file, reloads, backup
            // requests); the sweep is tried again in 10 seconds.
            let swept = self.owner().and_then(|owner| {
                let deadline = Instant::now() + TIDY_TIME;
                let sweep = fail_interrupted(&repo, system_identifier, &owner, None, INTERRUPTED);
                let sweep = runtime::block_on_until(sweep, || Instant::now() >= deadline);
                sweep
                    .map_err(|_| format!("the store did not answer within {} s", TIDY_TIME.as_secs()))?
                    .map_err(|e| e.to_string())
            });
            match swept {
                Ok(marked) => {
                    for id in &marked {
                        log!("pgops: backup {id} marked FAILED: {INTERRUPTED}");
                    }
                    log!("pgops: checked for backups this instance left unfinished: {} marked FAILED", marked.len());
                    self.swept = true;
                }
                Err(e) => log!("pgops: could not check for interrupted backups yet: {e}"),
            }
        }
        self.unrecorded.retain(|(id, info)| match backup::record(&repo, rt.handle(), id, info) {
            Ok(()) => {
                log!("pgops: backup {id} recorded as FAILED");
                false
            }
            Err(_) => true,
        });
    }

    /// Starts a retention run when one is due (on the primary, with a policy set) and
    /// advances the run in progress by [`RETENTION_SLICE`] at most, less when a backup
    /// is asked for.
    fn advance_retention(&mut self) {
        if self.retention_run.is_none() {
            self.retention_run = self.start_retention_if_due();
        }
        let Some(mut run) = self.retention_run.take() else { return };
        let slice_end = Instant::now() + RETENTION_SLICE;
        let outcome = match runtime::block_on_until(&mut run.future, || {
            Instant::now() >= slice_end || backup_control::requested()
        }) {
            // Not done yet (or a shutdown, which the loop serves): continued next pass.
            Err(NotDone::Interrupted) => {
                self.retention_run = Some(run);
                return;
            }
            Err(NotDone::NoRuntime(e)) => Err((e, "See the server log.")),
            Ok(outcome) => outcome,
        };
        let RetentionRun { policy, minimum_redundancy, .. } = run;
        match outcome {
            Ok((warnings, report)) => {
                for warning in warnings {
                    warning!("pgops: {warning}");
                }
                log!("pgops: retention ({policy}, minimum_redundancy {minimum_redundancy}): {report}");
            }
            Err((error, hint)) => retention_warning(format!("retention ({policy}) failed: {error}"), hint),
        }
    }

    /// Drops the retention run in progress, whose plan `reason` makes stale (a backup
    /// changes the catalog, a reload the settings), and plans anew at once. Safe at any
    /// point: every step of a run leaves the repository restorable.
    fn drop_retention_run(&mut self, reason: &str) {
        if let Some(run) = self.retention_run.take() {
            log!("pgops: retention ({}) run dropped: {reason}; a new run plans again", run.policy);
            self.retention = RetentionDue::Now;
        }
    }

    /// A new retention run, when one is due.
    fn start_retention_if_due(&mut self) -> Option<RetentionRun> {
        let due = match self.retention {
            RetentionDue::Now => true,
            RetentionDue::IntervalAfter(last) => last.elapsed() >= guc::retention_interval(),
        };
        // SAFETY: RecoveryInProgress reads the recovery state in shared memory (or this
        // process' cached answer); the worker's main thread.
        if !due || unsafe { pg_sys::RecoveryInProgress() } {
            return None;
        }
        self.retention = RetentionDue::IntervalAfter(Instant::now());
        let (policy, minimum_redundancy) = match retention::settings() {
            // Without a policy every backup is kept: nothing to run.
            Ok((policy, minimum_redundancy)) => (policy?, minimum_redundancy),
            Err(invalid) => {
                retention_warning(format!("retention skipped: {}", invalid.message), &invalid.hint);
                return None;
            }
        };
        let repo = match self.repository() {
            Ok((_, repo)) => repo,
            Err(e) => {
                retention_warning(format!("retention skipped: {e}"), "Check pgops.repository and the S3 settings.");
                return None;
            }
        };
        let position = match ServerPosition::now() {
            Ok(position) => position,
            Err((message, hint)) => {
                retention_warning(format!("retention skipped: {message}"), hint);
                return None;
            }
        };
        let liveness = Liveness::now();
        let incomplete_grace = guc::incomplete_grace();
        let future = async move {
            let started_is_live = |id: &BackupId, owner: Option<&BackupOwner>| liveness.is_live(id, owner);
            let request = PlanRequest {
                policy: Some(policy),
                minimum_redundancy,
                now: Utc::now(),
                started_is_live: &started_is_live,
                system_identifier: Some(position.system_identifier),
                lineage: Some(position.lineage),
                incomplete_grace,
            };
            let plan = plan(&repo, &request).await.map_err(|e| (e.to_string(), e.hint()))?;
            let report = execute(&repo, &plan).await.map_err(|f| (f.to_string(), f.error.hint()))?;
            Ok((plan.warnings, report))
        };
        Some(RetentionRun { policy, minimum_redundancy, future: Box::pin(future) })
    }

    /// The id of a scheduled backup due now, if one is.
    fn scheduled_backup_due(&mut self) -> Option<String> {
        let schedule = match guc::backup_schedule() {
            Ok(Some(schedule)) => schedule,
            Ok(None) => {
                self.schedule = None;
                return None;
            }
            Err(e) => {
                // Checked when set; a time zone and expression changed together land here.
                warning!("pgops: backup schedule ignored: {} {}", e.message, e.hint);
                self.schedule = None;
                return None;
            }
        };
        let text = guc::backup_schedule_text();
        let now = Utc::now();
        match &self.schedule {
            Some((current, next)) if *current == text => {
                if now < *next {
                    return None;
                }
                // Fire once, however many slots a long backup skipped.
                self.schedule = schedule.next_after(now).map(|next| (text, next));
                Some(backup::backup_id(now))
            }
            _ => {
                self.schedule = schedule.next_after(now).map(|next| (text, next));
                None
            }
        }
    }

    /// How long to sleep: until the next scheduled backup, at most a second; not at all
    /// while a retention run is in progress.
    fn sleep(&self) -> Duration {
        if self.retention_run.is_some() {
            return Duration::ZERO;
        }
        let until_next = self.schedule.as_ref().map(|(_, next)| (*next - Utc::now()).to_std().unwrap_or_default());
        until_next.unwrap_or(Duration::from_secs(1)).min(Duration::from_secs(1))
    }

    /// Takes backup `id`; `fast` asks for an immediate checkpoint (None: as
    /// pgops.backup_fast_checkpoint says).
    fn backup(&mut self, id: &str, fast: Option<bool>) {
        self.drop_retention_run("a backup starts");
        log!("pgops: backup {id} starting");
        let result = self.take_backup(id, fast.unwrap_or_else(guc::backup_fast_checkpoint));
        match &result {
            Ok(info) => {
                log!(
                    "pgops: backup {id} DONE: WAL {} to {}, {} bytes",
                    info.begin_wal,
                    info.end_wal.as_deref().unwrap_or("?"),
                    info.size.unwrap_or(0)
                );
                self.retention = RetentionDue::Now;
            }
            Err(e) => warning!("pgops: backup {id} FAILED: {e}"),
        }
        backup_control::finish(id, result.as_ref().map(drop).map_err(String::as_str));
    }

    fn take_backup(&mut self, id: &str, fast_checkpoint: bool) -> Result<BackupInfo, String> {
        let (url, repo) = self.repository()?;
        let owner = self.owner()?;
        let rt = runtime::runtime()?;
        let (cluster, archive_mode) = cluster_info()?;
        let segment_size = cluster.segment_size;
        let job = BackupJob {
            backup_id: id.to_string(),
            server_name: url.server_name(),
            cluster,
            upload: guc::backup_upload_settings(),
            owner,
            archive_timeout: guc::backup_archive_timeout(),
            runtime: rt.handle().clone(),
            thread_start: pgops_core::signals::block_all,
        };
        let mut host = PgHost { fast_checkpoint, archive_mode, segment_size, roles: &mut self.roles };
        // SAFETY: starts progress reporting in this process' own PgBackendStatus slot (a
        // no-op without one or with track_activities off), on the worker's main thread;
        // ended right after the backup.
        unsafe {
            pg_sys::pgstat_progress_start_command(
                pg_sys::ProgressCommandType::PROGRESS_COMMAND_BASEBACKUP,
                pg_sys::InvalidOid,
            )
        };
        let result = backup::run_backup(&mut host, &repo, &job);
        // SAFETY: ends the progress reporting started above, in this process' own slot.
        unsafe { pg_sys::pgstat_progress_end_command() };
        result.map_err(|failure| {
            if let Some(info) = failure.unrecorded {
                self.unrecorded.push((id.to_string(), *info));
            }
            match failure.error {
                // The extension's own words for what to do.
                BackupError::Refused(e) => format!("{e}. {}", e.hint()),
                e => e.to_string(),
            }
        })
    }
}

fn retention_warning(message: String, hint: &str) {
    ErrorReport::new(PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, format!("pgops: {message}"), "retention")
        .set_hint(hint)
        .report(PgLogLevel::WARNING);
}

/// One row of JSON text from a query, in a transaction of its own.
fn query_text(query: &str) -> Result<String, String> {
    in_transaction(|| Spi::get_one::<String>(query))
        .map_err(|f| f.to_string())?
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no result from: {query}"))
}

/// One row of JSON from a query, in a transaction of its own.
fn query_json<T: for<'de> Deserialize<'de>>(query: &str) -> Result<T, String> {
    let text = query_text(query)?;
    serde_json::from_str(&text).map_err(|e| format!("unexpected result {text}: {e}"))
}

fn cluster_info() -> Result<(ClusterInfo, String), String> {
    let (cluster, state) = queries::cluster(&query_text(queries::CLUSTER)?).map_err(|e| e.to_string())?;
    Ok((cluster, state.archive_mode))
}

/// pg_backup_start/stop and progress, in the worker's own session.
struct PgHost<'a> {
    fast_checkpoint: bool,
    archive_mode: String,
    segment_size: u64,
    /// Served between backup steps too: a backup can take hours.
    roles: &'a mut Reconciler,
}

fn timeline_of(wal: &str) -> u32 {
    u32::from_str_radix(wal.get(..8).unwrap_or("1"), 16).unwrap_or(1)
}

fn shutting_down() -> bool {
    // SAFETY: a read of ProcDiePending, the `volatile sig_atomic_t` flag Postgres' die()
    // handler sets in this process; main thread.
    unsafe { pg_sys::ProcDiePending != 0 }
}

impl BackupHost for PgHost<'_> {
    fn start_backup(&mut self, label: &str) -> Result<WalPosition, HostError> {
        if self.archive_mode == "off" {
            return Err(HostError::Failed("archive_mode is off: the WAL this backup needs would not be archived, so it could not be restored. Set archive_mode = on and archive_library = 'pgops'".into()));
        }
        // backup_now() callers are told while a spread checkpoint keeps them waiting.
        backup_control::set_waiting_for_spread_checkpoint(!self.fast_checkpoint);
        let started = query_text(&queries::start(label, self.fast_checkpoint));
        backup_control::set_waiting_for_spread_checkpoint(false);
        Ok(queries::started(&started.map_err(HostError::Failed)?, self.segment_size)?)
    }

    fn tablespaces(&mut self) -> Result<Vec<Tablespace>, HostError> {
        Ok(queries::tablespaces(&query_text(queries::TABLESPACES).map_err(HostError::Failed)?)?)
    }

    fn stop_backup(&mut self) -> Result<BackupStop, HostError> {
        let stopped = query_text(&queries::stop()).map_err(HostError::Failed)?;
        // Without the snapshot a restore just knows less (--target-xid then takes the
        // oldest backup).
        Ok(queries::stopped(&stopped, self.segment_size, query_text(queries::END_SNAPSHOT).ok())?)
    }

    fn abort_backup(&mut self) {
        // When the worker is stopping, SQL cannot run; pg_backup_start's exit hook ends it.
        if !shutting_down() {
            if let Err(e) = in_transaction(|| Spi::run(queries::ABORT)) {
                warning!("pgops: could not end the failed backup: {e}");
            }
        }
    }

    fn progress(&mut self, phase: Phase, progress: Progress) {
        let values = [
            (pg_sys::PROGRESS_BASEBACKUP_PHASE, phase as i64),
            (pg_sys::PROGRESS_BASEBACKUP_BACKUP_TOTAL, progress.total.map_or(-1, |t| t as i64)),
            (pg_sys::PROGRESS_BASEBACKUP_BACKUP_STREAMED, progress.streamed as i64),
            (pg_sys::PROGRESS_BASEBACKUP_TBLSPC_TOTAL, progress.tablespaces_total as i64),
            (pg_sys::PROGRESS_BASEBACKUP_TBLSPC_STREAMED, progress.tablespaces_streamed as i64),
        ];
        for (index, value) in values {
            // SAFETY: called by run_backup on the worker's main thread between
            // pgstat_progress_start_command and _end_command; every index is a
            // PROGRESS_BASEBACKUP_* parameter, below PGSTAT_NUM_PROGRESS_PARAM.
            unsafe { pg_sys::pgstat_progress_update_param(index as i32, value) };
        }
    }

    fn wait(&mut self) -> Result<(), HostError> {
        wait(Duration::from_millis(200));
        if worker_signals::reload_if_asked() {
            self.roles.reloaded();
        }
        if shutting_down() {
            return Err(HostError::Stop(INTERRUPTED.into()));
        }
        self.roles.reconcile_if_due();
        if shutting_down() {
            return Err(HostError::Stop(INTERRUPTED.into()));
        }
        Ok(())
    }
}
