//! The archive module (`archive_library = 'pgops'`): Postgres' archiver calls
//! `archive_file` for each WAL file, on its main thread; uploads run on this process'
//! tokio runtime, and every Postgres call (settings, logging, statistics) stays on the main
//! thread. No panic crosses back into Postgres: a failure is a WARNING and `false`, and
//! Postgres keeps the file and retries.

use crate::runtime::NotDone;
use crate::{archive_stats, guc, runtime};
use pgops_core::archive::{ArchiveError, ArchiveSettings, Archived, WalArchiver};
use pgops_core::ownership::ClusterIdentity;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::ffi::CStr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The archiver process' state, rebuilt when the settings change.
static ARCHIVER: Mutex<Option<WalArchiver>> = Mutex::new(None);

pub fn cluster_identity() -> ClusterIdentity {
    // SAFETY: GetSystemIdentifier reads ControlFile, which points into shared memory from
    // startup on, and wal_segment_size is a plain int the postmaster set from the control
    // file before forking; both are only read. Called on the main thread of a Postgres
    // process (the archiver, a backend, the pgops worker), never from the tokio threads.
    unsafe {
        ClusterIdentity {
            system_identifier: pg_sys::GetSystemIdentifier(),
            pg_version_num: pg_sys::PG_VERSION_NUM,
            wal_segment_size: pg_sys::wal_segment_size as u32,
        }
    }
}

fn check_configured() -> bool {
    match guc::archive_settings() {
        Ok(_) => true,
        Err(invalid) => {
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("pgops: WAL archiving is not configured: {}", invalid.message),
                "check_configured",
            )
            .set_hint(invalid.hint)
            // A WARNING, as a failed archive attempt is: the HINT says how to get WAL
            // archived again, and must not sit on a line filtered out as routine.
            .report(PgLogLevel::WARNING);
            false
        }
    }
}

/// How long archiving may still try once Postgres asked the archiver to stop: at shutdown
/// Postgres archives what is left (attempts of three, a second apart) and waits for it; a
/// store that does not answer must not hold the shutdown longer than this, all calls
/// together.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// When this archiver first saw the request to stop.
static STOP_SEEN: OnceLock<Instant> = OnceLock::new();

/// Whether the shutdown grace is over.
fn grace_over() -> bool {
    runtime::archiver_stopping() && STOP_SEEN.get_or_init(Instant::now).elapsed() >= SHUTDOWN_GRACE
}

/// Runs on the archiver's main thread; Postgres is not called from here.
fn upload(
    settings: ArchiveSettings,
    cluster: ClusterIdentity,
    file: &str,
    path: &Path,
) -> (Result<Archived, ArchiveError>, usize) {
    let mut archiver = ARCHIVER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if archiver.as_ref().is_none_or(|a| a.settings() != &settings) {
        // Builds a client; no request is sent.
        match runtime::runtime() {
            Ok(rt) => *archiver = Some(rt.block_on(WalArchiver::open(settings, cluster))),
            Err(e) => return (Err(ArchiveError::Task(e)), 0),
        }
    }
    let archiver = archiver.as_mut().expect("set above");
    let result = match runtime::block_on_until(archiver.archive(file, path), grace_over) {
        Ok(result) => result,
        Err(NotDone::NoRuntime(e)) => Err(ArchiveError::Task(e)),
        Err(NotDone::Interrupted) => Err(ArchiveError::Task(
            "stopped waiting for the store because the server is shutting down; the WAL file is kept and archived after the restart".into(),
        )),
    };
    (result, archiver.in_flight())
}

/// Postgres' SIGUSR2 handler of the archiver (set before the archive library is loaded).
static POSTGRES_SIGUSR2: Mutex<Option<libc::sigaction>> = Mutex::new(None);

/// Chains to Postgres' handler after noting that the archiver is asked to stop, which
/// Postgres keeps in a variable of its own that a module cannot read.
extern "C" fn on_sigusr2(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    runtime::note_archiver_stopping();
    // try_lock: never block in a signal handler; the handler is stored before ours runs.
    let Ok(previous) = POSTGRES_SIGUSR2.try_lock() else { return };
    let Some(previous) = previous.as_ref() else { return };
    if previous.sa_sigaction == libc::SIG_DFL || previous.sa_sigaction == libc::SIG_IGN {
        return;
    }
    // SAFETY: sa_sigaction is neither SIG_DFL nor SIG_IGN (checked above), so it is the
    // address of the function Postgres installed, of the shape its SA_SIGINFO flag says;
    // calling it with the arguments this handler got, with sa_mask blocked as ours has it,
    // is what the kernel would have done.
    unsafe {
        if previous.sa_flags & libc::SA_SIGINFO != 0 {
            let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(previous.sa_sigaction);
            handler(signal, info, context);
        } else {
            let handler: extern "C" fn(libc::c_int) = std::mem::transmute(previous.sa_sigaction);
            handler(signal);
        }
    }
}

/// Puts [`on_sigusr2`] in front of Postgres' SIGUSR2 handler; called once, by the archiver.
fn watch_for_stop() {
    // SAFETY: sigset_t and struct sigaction are plain C structs, valid all-zero; every
    // pointer passed is to one of these live locals or null where the call allows it. The
    // old action is stored before the new handler can run: SIGUSR2 is blocked on this (the
    // archiver's main) thread while the handler is swapped, and the tokio threads block
    // every signal.
    unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        let mut old_mask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, libc::SIGUSR2);
        libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old_mask);
        let mut previous: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGUSR2, std::ptr::null(), &mut previous) == 0 {
            let mut ours: libc::sigaction = std::mem::zeroed();
            ours.sa_sigaction = on_sigusr2 as *const () as usize;
            ours.sa_mask = previous.sa_mask;
            ours.sa_flags = (previous.sa_flags | libc::SA_SIGINFO) & !libc::SA_RESETHAND;
            *POSTGRES_SIGUSR2.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(previous);
            libc::sigaction(libc::SIGUSR2, &ours, std::ptr::null_mut());
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut());
    }
}

fn warn(file: &str, message: &str, hint: &str) {
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_IO_ERROR,
        format!("pgops: could not archive \"{file}\": {message}"),
        "archive_file",
    )
    .set_hint(hint)
    .report(PgLogLevel::WARNING);
}

fn archive_file(file: &CStr, path: &CStr) -> bool {
    let file = file.to_string_lossy();
    let settings = match guc::archive_settings() {
        Ok(settings) => settings,
        Err(invalid) => {
            warn(&file, &invalid.message, &invalid.hint);
            archive_stats::record_failure(&file, &invalid.message, 0);
            return false;
        }
    };
    let path = Path::new(path.to_str().unwrap_or_default());
    let outcome = catch_unwind(AssertUnwindSafe(|| upload(settings, cluster_identity(), &file, path)));
    match outcome {
        Ok((Ok(archived), in_flight)) => {
            if archived.already_present {
                log!(
                    "pgops: \"{file}\" was already archived with identical content at {}; not uploaded again",
                    archived.location
                );
            } else {
                debug1!(
                    "pgops: archived \"{file}\" to {} ({} -> {} bytes)",
                    archived.location,
                    archived.raw_bytes,
                    archived.stored_bytes
                );
            }
            archive_stats::record_success(&file, archived.raw_bytes, archived.stored_bytes, in_flight);
            true
        }
        Ok((Err(error), in_flight)) => {
            let message = error.to_string();
            warn(&file, &message, &error.hint());
            archive_stats::record_failure(&file, &message, in_flight);
            false
        }
        Err(panic) => {
            let cause = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            let message = format!("internal error: {cause}");
            warn(&file, &message, "This is a bug in pgops; please report it. Postgres will retry.");
            archive_stats::record_failure(&file, &message, 0);
            // The archiver state may be half-updated: start afresh on the next call.
            ARCHIVER.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
            false
        }
    }
}

fn shutdown() {
    ARCHIVER.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
}

#[cfg(feature = "pg15")]
mod entry {
    use pgrx::prelude::*;
    use std::ffi::{c_char, CStr};

    #[pg_guard]
    #[no_mangle]
    pub unsafe extern "C-unwind" fn _PG_archive_module_init(callbacks: *mut pg_sys::ArchiveModuleCallbacks) {
        super::watch_for_stop();
        // SAFETY: PostgreSQL 15's archiver calls this once, on its main thread, with a
        // pointer to its own zeroed static ArchiveModuleCallbacks (pgarch.c), to be filled
        // in.
        unsafe {
            (*callbacks).check_configured_cb = Some(check_configured);
            (*callbacks).archive_file_cb = Some(archive_file);
            (*callbacks).shutdown_cb = Some(shutdown);
        }
    }

    #[pg_guard]
    unsafe extern "C-unwind" fn check_configured() -> bool {
        super::check_configured()
    }

    #[pg_guard]
    unsafe extern "C-unwind" fn archive_file(file: *const c_char, path: *const c_char) -> bool {
        // SAFETY: pgarch_archiveXlog passes the WAL file's name and path as NUL-terminated
        // buffers of its own that outlive this call; the CStrs are not kept past it.
        unsafe { super::archive_file(CStr::from_ptr(file), CStr::from_ptr(path)) }
    }

    #[pg_guard]
    unsafe extern "C-unwind" fn shutdown() {
        super::shutdown()
    }
}

/// PostgreSQL 16 changed the archive-module API: the init function returns the callbacks
/// and each callback takes an `ArchiveModuleState *`. pgrx has no bindings for it, so the
/// C structs are declared here (src/include/archive/archive_module.h).
#[cfg(any(feature = "pg16", feature = "pg17", feature = "pg18"))]
mod entry {
    use pgrx::prelude::*;
    use std::ffi::{c_char, c_void, CStr};

    #[repr(C)]
    pub struct ArchiveModuleState {
        private_data: *mut c_void,
    }

    #[repr(C)]
    pub struct ArchiveModuleCallbacks {
        startup_cb: Option<unsafe extern "C-unwind" fn(*mut ArchiveModuleState)>,
        check_configured_cb: Option<unsafe extern "C-unwind" fn(*mut ArchiveModuleState) -> bool>,
        archive_file_cb:
            Option<unsafe extern "C-unwind" fn(*mut ArchiveModuleState, *const c_char, *const c_char) -> bool>,
        shutdown_cb: Option<unsafe extern "C-unwind" fn(*mut ArchiveModuleState)>,
    }

    static CALLBACKS: ArchiveModuleCallbacks = ArchiveModuleCallbacks {
        startup_cb: None,
        check_configured_cb: Some(check_configured),
        archive_file_cb: Some(archive_file),
        shutdown_cb: Some(shutdown),
    };

    #[no_mangle]
    pub extern "C-unwind" fn _PG_archive_module_init() -> *const ArchiveModuleCallbacks {
        super::watch_for_stop();
        &CALLBACKS
    }

    #[pg_guard]
    unsafe extern "C-unwind" fn check_configured(_state: *mut ArchiveModuleState) -> bool {
        super::check_configured()
    }

    #[pg_guard]
    unsafe extern "C-unwind" fn archive_file(
        _state: *mut ArchiveModuleState,
        file: *const c_char,
        path: *const c_char,
    ) -> bool {
        // SAFETY: pgarch_archiveXlog passes the WAL file's name and path as NUL-terminated
        // buffers of its own that outlive this call; the CStrs are not kept past it.
        unsafe { super::archive_file(CStr::from_ptr(file), CStr::from_ptr(path)) }
    }

    #[pg_guard]
    unsafe extern "C-unwind" fn shutdown(_state: *mut ArchiveModuleState) {
        super::shutdown()
    }
}
