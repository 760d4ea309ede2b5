//! The SQL interface: thin wrappers over the core, in schema `pgops`.

use crate::backup_control::{self, RequestRefused};
use crate::retention::{self, Liveness, ServerPosition, UnknownPosition};
use crate::runtime::NotDone;
use crate::transaction::Failure;
use crate::{archive_module, archive_stats, databases, guc, role_status, roles, runtime, sqlstate, top_level};
use chrono::{DateTime, Utc};
use pgops_core::backup;
use pgops_core::backup::catalog::list_backups;
use pgops_core::backup::owner::BackupOwner;
use pgops_core::backup::{BackupId, NotABackupId};
use pgops_core::check::{check_repository, CheckResult};
use pgops_core::error::Kinded;
use pgops_core::retention::{
    assess, execute, keep_backup as keep_backup_in, last_done_ended, plan, recoverable_from, KeepError, PlanRequest,
    Policy, RetentionError, StartedIsLive,
};
use pgops_core::roles::{DatabaseSpec, Flag, RoleSpec, Timestamp};
use pgops_core::store::Repository;
use pgrx::prelude::*;
use pgrx::Spi;
use std::collections::BTreeMap;
use std::ffi::CStr;
use std::path::Path;

fn config_option(name: &CStr) -> String {
    // SAFETY: `name` is NUL-terminated; with missing_ok GetConfigOption returns NULL for an
    // unknown setting instead of raising. Called from pgops.check() on the backend's main
    // thread.
    let value = unsafe { pg_sys::GetConfigOption(name.as_ptr(), true, false) };
    if value.is_null() {
        String::new()
    } else {
        // SAFETY: a non-NULL result is the setting's NUL-terminated value, owned by the GUC
        // machinery and valid until the next GUC call; it is copied into a String at once.
        unsafe { CStr::from_ptr(value) }.to_string_lossy().into_owned()
    }
}

/// Whether the server hands WAL to pgops at all.
fn archiving_row() -> CheckResult {
    let (mode, library) = (config_option(c"archive_mode"), config_option(c"archive_library"));
    let ok = mode != "off" && library == "pgops";
    let detail = if ok {
        format!("archive_mode = {mode}, archive_library = {library}")
    } else {
        format!("archive_mode = {mode}, archive_library = '{library}': WAL is not archived by pgops; set archive_mode = on and archive_library = 'pgops'")
    };
    CheckResult { check: "archiving", ok, detail }
}

fn run_checks() -> Vec<CheckResult> {
    let mut results = vec![archiving_row()];
    let settings = match guc::archive_settings() {
        Ok(settings) => settings,
        Err(invalid) => {
            results.push(CheckResult {
                check: "settings",
                ok: false,
                detail: format!("{}. {}", invalid.message, invalid.hint),
            });
            return results;
        }
    };
    let credentials =
        if settings.s3.credentials.is_some() { "static credentials" } else { "AWS default credential chain" };
    let endpoint = settings.s3.endpoint.as_deref().unwrap_or("AWS S3");
    results.push(CheckResult {
        check: "settings",
        ok: true,
        detail: format!(
            "repository {}, endpoint {endpoint}, region {}, {credentials}, s3_sse {}, wal_compression {} level {}, archive_parallel {}, encryption {}",
            settings.repository,
            settings.s3.region,
            settings.s3.sse.as_ref().map_or("off".to_string(), ToString::to_string),
            settings.compression.name(),
            settings.level,
            settings.parallel,
            settings.encryption.as_ref().map_or("off".to_string(), |ring| format!(
                "on (key {}, {} in the key file)",
                ring.current(),
                ring.key_ids().count()
            ))
        ),
    });
    let cluster = archive_module::cluster_identity();
    let probe =
        // SAFETY: GetCurrentTimestamp only reads the clock (gettimeofday) and converts it;
        // it needs no backend state.
        format!("{}-{}-{}", cluster.system_identifier, std::process::id(), unsafe { pg_sys::GetCurrentTimestamp() });
    results.extend(wait_for_store(async {
        let repo = Repository::open(&settings.repository, &settings.s3).await.with_keys(settings.encryption.clone());
        check_repository(&repo, &cluster, &probe).await
    }));
    results
}

/// Waits for a store call from a SQL function, answering a cancel, statement_timeout or
/// terminate within 100 ms however long the store takes.
fn wait_for_store<F: std::future::Future>(future: F) -> F::Output {
    match runtime::block_on(future) {
        Ok(output) => output,
        Err(NotDone::NoRuntime(e)) => raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e, "See the server log."),
        Err(NotDone::Interrupted) => {
            pgrx::check_for_interrupts!();
            // Not served above: the postmaster died.
            raise(
                PgSqlErrorCode::ERRCODE_ADMIN_SHUTDOWN,
                "stopped waiting for the object store: the server is shutting down".into(),
                "Run the function again once the server is back.",
            )
        }
    }
}

/// Is the repository reachable, writable and this cluster's? One row per check.
#[pg_extern(volatile, parallel_unsafe)]
fn check() -> TableIterator<'static, (name!(check, String), name!(ok, bool), name!(detail, String))> {
    let results = run_checks();
    if let Some(keys) = results.iter().find(|r| r.check == "keys" && !r.ok && !r.skipped()) {
        warn_about_keys(&keys.detail);
    }
    TableIterator::new(results.into_iter().map(|r| (r.check.to_string(), r.ok, r.detail)))
}

/// A WARNING besides the failed `keys` row: a standby whose key file lacks the repository's
/// newest key stops recovery at the first WAL segment encrypted to it.
fn warn_about_keys(detail: &str) {
    // SAFETY: RecoveryInProgress reads the recovery state in shared memory (or this
    // process' cached answer); the backend's main thread.
    let server = if unsafe { pg_sys::RecoveryInProgress() } { "this standby's" } else { "this server's" };
    pgrx::pg_sys::panic::ErrorReport::new(
        PgSqlErrorCode::ERRCODE_WARNING,
        format!("pgops: {server} key file does not read the repository: {detail}"),
        "check",
    )
    .set_hint(
        "Give every reader (standbys' restore_command --encryption-key-file and pgops.encryption_key_file, restore hosts) the key file the primary writes with before the primary uses a new key: the newest key first, the older ones below it.",
    )
    .report(PgLogLevel::WARNING);
}

fn timestamp(value: pg_sys::TimestampTz) -> Option<TimestampWithTimeZone> {
    (value != 0).then(|| TimestampWithTimeZone::try_from(value).ok()).flatten()
}

/// What the archiver did since the server started.
#[pg_extern(volatile, parallel_safe)]
#[allow(clippy::type_complexity)]
fn archive_status() -> TableIterator<
    'static,
    (
        name!(last_archived_wal, Option<String>),
        name!(last_archived_time, Option<TimestampWithTimeZone>),
        name!(last_failed_wal, Option<String>),
        name!(last_failed_time, Option<TimestampWithTimeZone>),
        name!(last_failure, Option<String>),
        name!(archived_count, i64),
        name!(failed_count, i64),
        name!(archived_bytes, i64),
        name!(stored_bytes, i64),
        name!(in_flight, i32),
    ),
> {
    let Some(s) = archive_stats::snapshot() else {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pgops.archive_status() needs pgops in shared_preload_libraries".into(),
            PRELOAD_HINT,
        );
    };
    TableIterator::once((
        s.last_archived_wal.get(),
        timestamp(s.last_archived_at),
        s.last_failed_wal.get(),
        timestamp(s.last_failed_at),
        s.last_failure.get(),
        s.archived_count,
        s.failed_count,
        s.raw_bytes,
        s.stored_bytes,
        s.in_flight,
    ))
}

const PRELOAD_HINT: &str = "Add pgops to shared_preload_libraries in postgresql.conf and restart the server.";

fn raise(code: PgSqlErrorCode, message: String, hint: &str) -> ! {
    Failure::new(code, message, hint).raise()
}

/// Asks the pgops worker for a base backup and returns its id; with `wait`, returns when
/// it is DONE and raises its error if it FAILED. `fast` starts it with an immediate
/// checkpoint (NULL: as pgops.backup_fast_checkpoint says).
#[pg_extern(volatile, parallel_unsafe)]
fn backup_now(wait: default!(bool, true), fast: default!(Option<bool>, "NULL")) -> String {
    if !backup_control::available() {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pgops.backup_now() needs pgops in shared_preload_libraries".into(),
            PRELOAD_HINT,
        );
    }
    // The worker starts after the server accepts connections and is restarted 5 s after it
    // stops: a call in that gap waits for it (cancel ends the wait) rather than failing.
    let worker_deadline = std::time::Instant::now() + WORKER_START_GRACE;
    let backup_id = loop {
        let backup_id = backup::backup_id(chrono::Utc::now());
        match backup_control::request(&backup_id, fast) {
            Ok(()) => break backup_id,
            Err(RequestRefused::SameSecond) => sleep_interruptibly(100),
            Err(RequestRefused::WorkerNotRunning) if std::time::Instant::now() < worker_deadline => {
                sleep_interruptibly(100)
            }
            Err(RequestRefused::WorkerNotRunning) => raise(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("the pgops worker is not running (waited {} s for it)", WORKER_START_GRACE.as_secs()),
                "It starts with the server when pgops is in shared_preload_libraries; see the server log for why it stopped.",
            ),
            Err(RequestRefused::Busy(running)) => raise(
                PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE,
                format!("backup {running} is already running"),
                "pgops takes one backup at a time: wait for it to finish (SELECT * FROM pgops.backup_list) and try again.",
            ),
        }
    };
    if wait {
        let mut told_about_checkpoint = false;
        loop {
            if !told_about_checkpoint && backup_control::waiting_for_spread_checkpoint(&backup_id) {
                told_about_checkpoint = true;
                tell_spread_checkpoint(&backup_id);
            }
            match backup_control::outcome(&backup_id) {
                Some(Ok(())) => break,
                Some(Err(error)) => raise(
                    PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
                    format!("backup {backup_id} failed: {error}"),
                    "The server log has the details; pgops.backup_list shows the backup as FAILED once it was recorded.",
                ),
                None => sleep_interruptibly(200),
            }
        }
    }
    backup_id
}

/// A NOTICE: the backup waits for a spread checkpoint, which on a quiet server takes up to
/// checkpoint_completion_target × checkpoint_timeout.
fn tell_spread_checkpoint(backup_id: &str) {
    // As SHOW spells them (with units).
    let setting = |name: &str| {
        Spi::get_one_with_args::<String>("SELECT pg_catalog.current_setting($1)", &[name.into()])
            .ok()
            .flatten()
            .unwrap_or_default()
    };
    let (target, timeout) = (setting("checkpoint_completion_target"), setting("checkpoint_timeout"));
    pgrx::pg_sys::panic::ErrorReport::new(
        PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
        format!(
            "backup {backup_id} waits for a spread checkpoint: up to checkpoint_completion_target ({target}) × checkpoint_timeout ({timeout})"
        ),
        "backup_now",
    )
    .set_hint(
        "For an immediate checkpoint call pgops.backup_now(fast => true) (or run CHECKPOINT now); pgops.backup_fast_checkpoint = on starts every backup with one.",
    )
    .report(PgLogLevel::NOTICE);
}

/// Waits on this backend's latch, so that a cancel or terminate is served at once.
/// How long `backup_now()` waits for a worker that is starting or restarting.
const WORKER_START_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

fn sleep_interruptibly(milliseconds: i64) {
    // SAFETY: MyLatch is this backend's own process latch, set up when it started; waiting
    // on it and resetting it is Postgres' standard wait loop, on the backend's main thread
    // and with no LWLock held (backup_control's guards are dropped before we sleep).
    unsafe {
        let events = (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32;
        pg_sys::WaitLatch(pg_sys::MyLatch, events, milliseconds, pg_sys::PG_WAIT_EXTENSION);
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    pgrx::check_for_interrupts!();
}

/// The backups in the repository as text; `pgops.backups()` gives them their SQL types.
#[pg_extern(volatile, parallel_restricted, name = "backups_text")]
#[allow(clippy::type_complexity)]
fn backups_text() -> TableIterator<
    'static,
    (
        name!(id, String),
        name!(status, String),
        name!(started_at, Option<String>),
        name!(finished_at, Option<String>),
        name!(begin_lsn, Option<String>),
        name!(end_lsn, Option<String>),
        name!(begin_wal, Option<String>),
        name!(end_wal, Option<String>),
        name!(timeline, Option<i32>),
        name!(size_bytes, Option<i64>),
        name!(stored_bytes, i64),
        name!(compression, Option<String>),
        name!(error, Option<String>),
        name!(kept_by_policy, Option<bool>),
    ),
> {
    let repo = open_repository();
    let backups =
        wait_for_store(list_backups(&repo)).unwrap_or_else(|e| raise(sqlstate::of(e.kind()), e.to_string(), e.hint()));
    // NULL where the policy cannot be applied (a catalog retention cannot read completely,
    // as pgops.expire() would say): the listing itself still works.
    let liveness = Liveness::now();
    let started_is_live = |id: &BackupId, owner: Option<&BackupOwner>| liveness.is_live(id, owner);
    let kept: BTreeMap<String, bool> = retention::settings()
        .ok()
        .and_then(|(policy, minimum_redundancy)| {
            let request = plan_request(policy, minimum_redundancy, &started_is_live).ok()?;
            wait_for_store(assess(&repo, &request)).ok()
        })
        .into_iter()
        .flatten()
        .map(|decision| (decision.backup.id.as_str().to_string(), decision.kept()))
        .collect();
    TableIterator::new(backups.into_iter().map(move |backup| {
        let r = backup.row();
        let kept_by_policy = kept.get(&r.id).copied();
        (
            r.id,
            r.status,
            r.started_at,
            r.finished_at,
            r.begin_lsn,
            r.end_lsn,
            r.begin_wal,
            r.end_wal,
            r.timeline.map(|t| t as i32),
            r.size_bytes.map(|s| s as i64),
            r.stored_bytes as i64,
            r.compression,
            r.error,
            kept_by_policy,
        )
    }))
}

/// The repository the settings name, or the settings' error.
fn open_repository() -> Repository {
    let (url, s3) = guc::repository_settings().unwrap_or_else(|invalid| {
        raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, invalid.message, &invalid.hint)
    });
    let keys = guc::encryption_keys().unwrap_or_else(|invalid| {
        raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, invalid.message, &invalid.hint)
    });
    wait_for_store(Repository::open(&url, &s3)).with_keys(keys)
}

/// The retention settings in force, or their error.
fn retention_settings() -> (Option<Policy>, u32) {
    retention::settings().unwrap_or_else(|invalid| {
        raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, invalid.message, &invalid.hint)
    })
}

/// What retention decides from as this server stands: its settings, and the backups on
/// its timeline history (or why its position is not known).
fn plan_request<'a>(
    policy: Option<Policy>,
    minimum_redundancy: u32,
    started_is_live: &'a StartedIsLive<'a>,
) -> Result<PlanRequest<'a>, UnknownPosition> {
    let position = ServerPosition::now()?;
    Ok(PlanRequest {
        policy,
        minimum_redundancy,
        now: chrono::Utc::now(),
        started_is_live,
        system_identifier: Some(position.system_identifier),
        lineage: Some(position.lineage),
        incomplete_grace: guc::incomplete_grace(),
    })
}

/// [`plan_request`], or its error raised.
fn plan_request_or_raise<'a>(
    policy: Option<Policy>,
    minimum_redundancy: u32,
    started_is_live: &'a StartedIsLive<'a>,
) -> PlanRequest<'a> {
    plan_request(policy, minimum_redundancy, started_is_live).unwrap_or_else(|(message, hint)| {
        raise(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, message, hint)
    })
}

fn retention_failed(error: &RetentionError) -> ! {
    raise(sqlstate::of(error.kind()), error.to_string(), error.hint())
}

/// A time as Postgres keeps it (microseconds since 2000-01-01 UTC).
fn pg_time(time: DateTime<Utc>) -> Option<TimestampWithTimeZone> {
    const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;
    TimestampWithTimeZone::try_from(time.timestamp_micros() - POSTGRES_EPOCH_MICROS).ok()
}

/// What pgops.retention_policy keeps and deletes: a row per backup, then a row per
/// timeline for the WAL that goes. `dry_run => false` deletes it (backup.info first, then
/// the backup's objects, then the WAL), on the primary only.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)]
fn expire(
    dry_run: default!(bool, true),
) -> TableIterator<
    'static,
    (
        name!(kind, String),
        name!(id, Option<String>),
        name!(status, Option<String>),
        name!(ended, Option<TimestampWithTimeZone>),
        name!(timeline, Option<i64>),
        name!(first_wal, Option<String>),
        name!(last_wal, Option<String>),
        name!(objects, i64),
        name!(bytes, i64),
        name!(kept, bool),
        name!(why, String),
    ),
> {
    // SAFETY: RecoveryInProgress reads the recovery state in shared memory (XLogCtl), or
    // this process' cached answer once recovery has ended; any process attached to shared
    // memory may call it, here the backend's main thread.
    if !dry_run && unsafe { pg_sys::RecoveryInProgress() } {
        raise(
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            "pgops.expire(dry_run => false) deletes only on the primary".into(),
            "Run it on the primary, whose worker also applies pgops.retention_policy; a dry run works here.",
        );
    }
    let (policy, minimum_redundancy) = retention_settings();
    let repo = open_repository();
    let liveness = Liveness::now();
    let started_is_live = |id: &BackupId, owner: Option<&BackupOwner>| liveness.is_live(id, owner);
    let plan = wait_for_store(plan(&repo, &plan_request_or_raise(policy, minimum_redundancy, &started_is_live)))
        .unwrap_or_else(|e| retention_failed(&e));
    for warning in &plan.warnings {
        warning!("pgops: {warning}");
    }
    if !dry_run {
        match wait_for_store(execute(&repo, &plan)) {
            Ok(report) => log!("pgops: retention run by pgops.expire(): {report}"),
            Err(failure) => {
                raise(sqlstate::of(failure.error.kind()), format!("retention stopped: {failure}"), failure.error.hint())
            }
        }
    }
    TableIterator::new(plan.rows().into_iter().map(|row| {
        (
            row.kind.as_str().to_string(),
            row.id,
            row.status,
            row.ended.and_then(pg_time),
            row.timeline.map(i64::from),
            row.first_wal,
            row.last_wal,
            row.objects as i64,
            row.bytes as i64,
            row.kept,
            row.why,
        )
    }))
}

/// Marks DONE backup `id` kept forever, whatever the policy (`keep => false` removes the
/// mark): Barman's `base/<id>/annotations/keep` holding `full`, as
/// `barman-cloud-backup-keep` writes it.
#[pg_extern(volatile, parallel_unsafe)]
fn keep_backup(id: &str, keep: default!(bool, true)) {
    let backup_id: BackupId = id.parse().unwrap_or_else(|e: NotABackupId| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            e.to_string(),
            "SELECT id FROM pgops.backup_list shows the backups.",
        )
    });
    let repo = open_repository();
    if let Err(e) = wait_for_store(keep_backup_in(&repo, &backup_id, keep)) {
        let code = sqlstate::of(e.kind());
        let hint = match &e {
            KeepError::NotFound { .. } => "SELECT id FROM pgops.backup_list shows the backups.".into(),
            KeepError::NotDone { .. } => {
                "Keep a DONE backup: SELECT id FROM pgops.backup_list WHERE status = 'DONE'.".into()
            }
            KeepError::Ownership(_) | KeepError::Store(_) => e.hint(),
        };
        raise(code, e.to_string(), &hint)
    }
}

/// For monitoring: the oldest time one can restore to once the policy is applied (the
/// end of the oldest DONE backup it keeps) and the end of the newest DONE backup.
#[pg_extern(volatile, parallel_restricted)]
#[allow(clippy::type_complexity)]
fn recoverability() -> TableIterator<
    'static,
    (
        name!(retention_policy, Option<String>),
        name!(first_recoverability_point, Option<TimestampWithTimeZone>),
        name!(last_done_backup_ended, Option<TimestampWithTimeZone>),
        name!(kept_backups, i64),
        name!(obsolete_backups, i64),
    ),
> {
    let (policy, minimum_redundancy) = retention_settings();
    let repo = open_repository();
    let liveness = Liveness::now();
    let started_is_live = |id: &BackupId, owner: Option<&BackupOwner>| liveness.is_live(id, owner);
    let decisions = wait_for_store(assess(&repo, &plan_request_or_raise(policy, minimum_redundancy, &started_is_live)))
        .unwrap_or_else(|e| retention_failed(&e));
    let kept = decisions.iter().filter(|decision| decision.kept()).count() as i64;
    TableIterator::once((
        policy.map(|policy| policy.to_string()),
        recoverable_from(&decisions).and_then(pg_time),
        last_done_ended(&decisions).and_then(pg_time),
        kept,
        decisions.len() as i64 - kept,
    ))
}

/// Makes a role as declared: `created`, `updated`, `unchanged` or `dropped`. Unset
/// attributes are not managed; passwords reach Postgres only as SCRAM-SHA-256 secrets.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments)]
fn ensure_role(
    name: &str,
    password: default!(Option<&str>, "NULL"),
    password_file: default!(Option<&str>, "NULL"),
    login: default!(bool, true),
    superuser: default!(Option<bool>, "NULL"),
    createdb: default!(Option<bool>, "NULL"),
    createrole: default!(Option<bool>, "NULL"),
    inherit: default!(Option<bool>, "NULL"),
    replication: default!(Option<bool>, "NULL"),
    bypassrls: default!(Option<bool>, "NULL"),
    connection_limit: default!(i32, -1),
    valid_until: default!(Option<TimestampWithTimeZone>, "NULL"),
    in_roles: default!(Option<Vec<String>>, "NULL"),
    comment: default!(Option<&str>, "NULL"),
    ensure: default!(&str, "'present'"),
    password_update: default!(&str, "'always'"),
) -> String {
    let flags = [
        (Flag::Login, Some(login)),
        (Flag::Superuser, superuser),
        (Flag::Createdb, createdb),
        (Flag::Createrole, createrole),
        (Flag::Inherit, inherit),
        (Flag::Replication, replication),
        (Flag::Bypassrls, bypassrls),
    ];
    let spec = RoleSpec {
        name: name.to_string(),
        flags: flags.into_iter().filter_map(|(flag, on)| Some((flag, on?))).collect(),
        connection_limit,
        valid_until: valid_until.map(|t| Timestamp(pg_sys::TimestampTz::from(t))),
        in_roles,
        comment: comment.map(str::to_string),
        ensure: ensure.parse().unwrap_or_else(|r| roles::refuse(r)),
        password_update: password_update.parse().unwrap_or_else(|r| roles::refuse(r)),
    };
    let password = match (password, password_file) {
        (None, None) => roles::Password::Unmanaged,
        (Some(text), None) => roles::Password::Given(text),
        (None, Some(path)) => roles::Password::File(Path::new(path)),
        (Some(_), Some(_)) => raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "give password or password_file, not both".into(),
            "password_file (a mounted secret) keeps the password out of your SQL and its logs.",
        ),
    };
    roles::ensure_role(&spec, password).outcome.to_string()
}

/// Makes a database as declared: `created`, `updated` (owner), `unchanged` or `dropped`.
/// CREATE and DROP DATABASE run in a statement worker as the caller, so this works inside
/// a transaction block too (they are not undone by its rollback).
#[pg_extern(volatile, parallel_unsafe)]
fn ensure_database(
    name: &str,
    owner: default!(Option<&str>, "NULL"),
    template: default!(Option<&str>, "NULL"),
    encoding: default!(Option<&str>, "NULL"),
    locale: default!(Option<&str>, "NULL"),
    ensure: default!(&str, "'present'"),
) -> String {
    let spec = DatabaseSpec {
        name: name.to_string(),
        owner: owner.map(str::to_string),
        template: template.map(str::to_string),
        encoding: encoding.map(str::to_string),
        locale: locale.map(str::to_string),
        ensure: ensure.parse().unwrap_or_else(|r| roles::refuse(r)),
    };
    databases::ensure_database(&spec, top_level::run_in_worker).to_string()
}

/// The roles file's reconciliation, a row per declared object and one for the file.
#[pg_extern(volatile, parallel_safe)]
#[allow(clippy::type_complexity)]
fn role_status_rows() -> TableIterator<
    'static,
    (
        name!(kind, String),
        name!(name, String),
        name!(state, String),
        name!(message, Option<String>),
        name!(last_attempt, Option<TimestampWithTimeZone>),
    ),
> {
    let Some(rows) = role_status::snapshot() else {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pgops.role_status needs pgops in shared_preload_libraries".into(),
            PRELOAD_HINT,
        );
    };
    TableIterator::new(rows.into_iter().map(|row| {
        (
            row.kind.get().unwrap_or_default(),
            row.name.get().unwrap_or_default(),
            row.state.get().unwrap_or_default(),
            row.message.get(),
            timestamp(row.last_attempt),
        )
    }))
}

extension_sql_file!(
    "../sql/catalog.sql",
    name = "catalog",
    requires = [backups_text, role_status_rows, expire, recoverability]
);
extension_sql_file!("../sql/privileges.sql", name = "privileges", finalize);
