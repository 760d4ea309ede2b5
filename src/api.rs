//! The SQL interface: thin wrappers over the core, in schema `pgops`.

use crate::{archive_module, archive_stats, guc, runtime};
use pgops_core::check::{check_repository, CheckResult};
use pgops_core::store::Repository;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::ffi::CStr;

fn config_option(name: &CStr) -> String {
    let value = unsafe { pg_sys::GetConfigOption(name.as_ptr(), true, false) };
    if value.is_null() {
        String::new()
    } else {
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
            "repository {}, endpoint {endpoint}, region {}, {credentials}, wal_compression {} level {}, archive_parallel {}",
            settings.repository,
            settings.s3.region,
            settings.compression.name(),
            settings.level,
            settings.parallel
        ),
    });
    let cluster = archive_module::cluster_identity();
    let probe =
        format!("{}-{}-{}", cluster.system_identifier, std::process::id(), unsafe { pg_sys::GetCurrentTimestamp() });
    match runtime::runtime() {
        Ok(rt) => results.extend(rt.block_on(async {
            let repo = Repository::open(&settings.repository, &settings.s3).await;
            check_repository(&repo, &cluster, &probe).await
        })),
        Err(e) => results.push(CheckResult { check: "reachable", ok: false, detail: e }),
    }
    results
}

/// Is the repository reachable, writable and this cluster's? One row per check.
#[pg_extern(volatile, parallel_unsafe)]
fn check() -> TableIterator<'static, (name!(check, String), name!(ok, bool), name!(detail, String))> {
    TableIterator::new(run_checks().into_iter().map(|r| (r.check.to_string(), r.ok, r.detail)))
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
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pgops.archive_status() needs pgops in shared_preload_libraries",
            "archive_status",
        )
        .set_hint("Add pgops to shared_preload_libraries in postgresql.conf and restart the server.")
        .report(PgLogLevel::ERROR);
        unreachable!("ERROR does not return");
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

extension_sql_file!("../sql/privileges.sql", name = "privileges", finalize);
