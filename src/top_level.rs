//! Statements that cannot run inside a transaction block (CREATE and DROP DATABASE), run on
//! behalf of a SQL caller: a dynamic background worker (like pg_cron's background-worker
//! mode) connects to the caller's database, takes the caller's role, runs the statement as
//! a top-level command and hands back its error, which the caller raises as its own.

use crate::fixed_text::FixedText;
use crate::transaction::{in_transaction, Failure};
use crate::worker_signals;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgTryBuilder;
use std::ffi::CString;

/// The request and its result, in a dynamic shared memory segment both processes map.
#[repr(C)]
struct Request {
    database: pg_sys::Oid,
    role: pg_sys::Oid,
    sql: FixedText<2048>,
    finished: bool,
    failed: bool,
    code: i32,
    message: FixedText<1024>,
    detail: FixedText<1024>,
    hint: FixedText<1024>,
}

/// Runs `sql` as a top-level statement of this process (in a transaction started by
/// StartTransactionCommand, which is not a transaction block).
pub fn execute_here(sql: &str) {
    let text = CString::new(sql).expect("planned statements hold no NUL");
    // SAFETY: called on a worker's main thread inside in_transaction (a transaction started
    // by StartTransactionCommand, not a transaction block), as PROCESS_UTILITY_TOPLEVEL
    // needs. `text` is NUL-terminated and outlives every call that takes it as the query
    // string. The Lists are the ones Postgres just built in the transaction's memory: the
    // parser's RawStmts, then each one's PlannedStmts. `sql` is a CREATE or DROP DATABASE
    // the core planned to run top-level, so every PlannedStmt is a utility statement, the
    // only kind ProcessUtility takes; the null params, query environment and completion tag
    // are allowed, and None_Receiver discards any output.
    unsafe {
        let parsed = pg_sys::pg_parse_query(text.as_ptr());
        for raw in list_items::<pg_sys::RawStmt>(parsed) {
            let queries = pg_sys::pg_analyze_and_rewrite_fixedparams(
                raw,
                text.as_ptr(),
                std::ptr::null_mut(),
                0,
                std::ptr::null_mut(),
            );
            let plans = pg_sys::pg_plan_queries(
                queries,
                text.as_ptr(),
                pg_sys::CURSOR_OPT_PARALLEL_OK as i32,
                std::ptr::null_mut(),
            );
            for planned in list_items::<pg_sys::PlannedStmt>(plans) {
                pg_sys::ProcessUtility(
                    planned,
                    text.as_ptr(),
                    false,
                    pg_sys::ProcessUtilityContext::PROCESS_UTILITY_TOPLEVEL,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    pg_sys::None_Receiver,
                    std::ptr::null_mut(),
                );
            }
        }
    }
}

/// The pointers in `list`, a Postgres List of `T` nodes.
///
/// # Safety
///
/// `list` is NIL (NULL) or a valid pointer List (T_List) whose cells point to `T`s.
unsafe fn list_items<T>(list: *mut pg_sys::List) -> Vec<*mut T> {
    if list.is_null() {
        return Vec::new();
    }
    // SAFETY: `list` is not NIL, and the caller vouches it is a valid pointer List: since
    // PostgreSQL 13 its `elements` array holds `length` initialized ListCells, each of
    // whose `ptr_value` is a T.
    unsafe { (0..(*list).length as usize).map(|i| (*(*list).elements.add(i)).ptr_value as *mut T).collect() }
}

/// Runs `sql` top-level in a worker as the current role, in the current database; returns
/// its error. A cancel of the caller stops the worker.
pub fn run_in_worker(sql: &str) -> Result<(), Failure> {
    // The worker starts only once recovery has finished: on a standby it would never run.
    // SAFETY: RecoveryInProgress reads the recovery state in shared memory (or this
    // process' cached answer); the backend's main thread, inside pgops.ensure_database().
    if unsafe { pg_sys::RecoveryInProgress() } {
        return Err(Failure::new(
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            "the server is in recovery: databases cannot be created or dropped here",
            "Run it on the primary.",
        ));
    }
    let mut text = FixedText::<2048>::EMPTY;
    if sql.len() >= 2048 {
        return Err(Failure::new(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("statement too long for the statement worker ({} bytes)", sql.len()),
            "Shorten the template, encoding or locale given.",
        ));
    }
    text.set(sql);
    // SAFETY: on the backend's main thread, inside pgops.ensure_database()'s transaction.
    // dsm_create with flags 0 raises an ERROR rather than return NULL, and ties the segment
    // to the current resource owner, so an ERROR below detaches it. Its address is at least
    // MAXALIGNed (Request needs 4) and maps size_of::<Request>() bytes, which `write` fills
    // without reading the old contents; Request is repr(C) and holds no pointers, so the
    // worker (the same library) reads it as written. RegisterDynamicBackgroundWorker gets
    // pointers to locals and copies the worker struct into shared memory;
    // WaitForBackgroundWorkerShutdown needs bgw_notify_pid = MyProcPid, which is set. The
    // worker is the only writer of the segment while it runs, and once
    // WaitForBackgroundWorkerShutdown returned BGWH_STOPPED it has exited, so `&*request`
    // reads what it finished writing; on any other answer (the postmaster died) the
    // segment is not read. The segment is detached once, after the last read.
    unsafe {
        let segment = pg_sys::dsm_create(std::mem::size_of::<Request>(), 0);
        let request = pg_sys::dsm_segment_address(segment) as *mut Request;
        request.write(Request {
            database: pg_sys::MyDatabaseId,
            role: pg_sys::GetUserId(),
            sql: text,
            finished: false,
            failed: false,
            code: 0,
            message: FixedText::EMPTY,
            detail: FixedText::EMPTY,
            hint: FixedText::EMPTY,
        });
        let builder = BackgroundWorkerBuilder::new("pgops statement")
            .set_type("pgops statement")
            .set_library("pgops")
            .set_function("pgops_statement_main")
            .set_argument(Some(pg_sys::Datum::from(pg_sys::dsm_segment_handle(segment))))
            .enable_spi_access()
            .set_start_time(BgWorkerStartTime::RecoveryFinished)
            .set_restart_time(None)
            .set_notify_pid(pg_sys::MyProcPid);
        let mut worker = pg_sys::BackgroundWorker::from(&builder);
        let mut handle: *mut pg_sys::BackgroundWorkerHandle = std::ptr::null_mut();
        if !pg_sys::RegisterDynamicBackgroundWorker(&mut worker, &mut handle) {
            return Err(Failure::new(
                PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
                "no background worker slot free to run the statement",
                "Raise max_worker_processes (a restart is needed), or try again when other workers have finished.",
            ));
        }
        let stopped = PgTryBuilder::new(|| pg_sys::WaitForBackgroundWorkerShutdown(handle))
            .catch_others(|caught| {
                // Cancelled or terminated while waiting: the statement must not outlive the call.
                pg_sys::TerminateBackgroundWorker(handle);
                caught.rethrow()
            })
            .execute();
        if stopped != pg_sys::BgwHandleStatus::BGWH_STOPPED {
            // The postmaster died: the worker may still be writing the segment.
            pg_sys::dsm_detach(segment);
            return Err(Failure::new(
                PgSqlErrorCode::ERRCODE_ADMIN_SHUTDOWN,
                format!("the server went down while a worker ran \"{sql}\""),
                "Check whether the statement took effect once the server is back, and run it again if not.",
            ));
        }
        let request = &*request;
        let result = if !request.finished {
            Err(Failure::new(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("the worker running \"{sql}\" stopped without a result"),
                "See the server log for why it stopped.",
            ))
        } else if request.failed {
            Err(Failure {
                code: PgSqlErrorCode::from(request.code),
                message: request.message.get().unwrap_or_default(),
                detail: request.detail.get(),
                hint: request.hint.get(),
            })
        } else {
            Ok(())
        };
        pg_sys::dsm_detach(segment);
        result
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pgops_statement_main(argument: pg_sys::Datum) {
    worker_signals::install();
    // SAFETY: the worker's main thread. dsm_attach returns NULL when the caller's segment
    // is gone (checked); otherwise it maps the Request run_in_worker wrote before
    // registering this worker, and the caller does not touch it until this worker has
    // exited (it waits in WaitForBackgroundWorkerShutdown, and a cancelled caller
    // terminates us and never reads it), so `&mut *` is the only reference. The user switch
    // is Postgres' own Get/SetUserIdAndSecContext pair with SECURITY_LOCAL_USERID_CHANGE,
    // undone by hand on success and by AbortTransaction on an ERROR. The segment is
    // detached once, at the end.
    unsafe {
        let segment = pg_sys::dsm_attach(argument.value() as pg_sys::dsm_handle);
        if segment.is_null() {
            log!("pgops statement worker: the caller is gone");
            return;
        }
        let request = &mut *(pg_sys::dsm_segment_address(segment) as *mut Request);
        BackgroundWorker::connect_worker_to_spi_by_oid(Some(request.database), None);
        let sql = request.sql.get().unwrap_or_default();
        let role = request.role;
        let outcome = in_transaction(|| {
            // The caller's privileges, not the bootstrap superuser's the worker connected as;
            // the transaction's end restores the user.
            let (mut user, mut context) = (pg_sys::InvalidOid, 0);
            pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
            pg_sys::SetUserIdAndSecContext(role, context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32);
            execute_here(&sql);
            pg_sys::SetUserIdAndSecContext(user, context);
        });
        if let Err(failure) = outcome {
            request.failed = true;
            request.code = failure.code as i32;
            request.message.set(&failure.message);
            request.detail.set(failure.detail.as_deref().unwrap_or_default());
            request.hint.set(failure.hint.as_deref().unwrap_or_default());
        }
        request.finished = true;
        pg_sys::dsm_detach(segment);
    }
}
