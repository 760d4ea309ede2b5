//! Backup requests and their outcome, in shared memory: `pgops.backup_now()` (any backend)
//! asks, the pgops worker takes backups and reports. One backup at a time.

use crate::fixed_text::FixedText;
use pgrx::lwlock::PgLwLock;
use pgrx::pg_sys;
use pgrx::shmem::PGRXSharedMemory;
use std::sync::atomic::{AtomicBool, Ordering};

type BackupIdText = FixedText<32>;

#[derive(Copy, Clone)]
pub struct BackupControl {
    /// The worker's pid, 0 while it is not running.
    worker_pid: i32,
    /// The worker's process latch (in shared memory, the same address in every process).
    worker_latch: usize,
    /// A backup asked for and not yet started.
    requested: BackupIdText,
    /// Its checkpoint: immediate, spread, or as pgops.backup_fast_checkpoint says (None).
    requested_fast: Option<bool>,
    running: BackupIdText,
    /// The running backup waits for a spread checkpoint (pg_backup_start).
    waiting_for_spread_checkpoint: bool,
    /// The newest id handed out, so that two backups never share one (ids are seconds).
    newest: BackupIdText,
    finished: BackupIdText,
    finished_ok: bool,
    finished_error: FixedText<1024>,
}

// SAFETY: BackupControl is Copy plain data (integers, bools, byte arrays) with no pointer
// into any process' private memory, so every process can read and write it in shared
// memory; worker_latch is an address inside the main shared memory segment, mapped at the
// same address in every process forked from the postmaster, and is only passed to
// SetLatch.
unsafe impl PGRXSharedMemory for BackupControl {}

impl BackupControl {
    const fn new() -> Self {
        BackupControl {
            worker_pid: 0,
            worker_latch: 0,
            requested: FixedText::EMPTY,
            requested_fast: None,
            running: FixedText::EMPTY,
            waiting_for_spread_checkpoint: false,
            newest: FixedText::EMPTY,
            finished: FixedText::EMPTY,
            finished_ok: false,
            finished_error: FixedText::EMPTY,
        }
    }
}

// SAFETY: PgLwLock::new asks that no other shared memory struct or LWLock tranche has this
// name: it keys ShmemInitStruct and RequestNamedLWLockTranche. "pgops_backup_control" is
// pgops' own prefix, and pgops' other two (pgops_archive_stats, pgops_role_status) differ.
static CONTROL: PgLwLock<BackupControl> = unsafe { PgLwLock::new(c"pgops_backup_control") };
static IN_SHARED_MEMORY: AtomicBool = AtomicBool::new(false);

/// From `_PG_init`, while shared_preload_libraries loads.
#[allow(unexpected_cfgs)] // the macro tests for pg13/pg14, which pgops does not build for
pub fn init() {
    use pgrx::pg_guard;
    pgrx::pg_shmem_init!(CONTROL = BackupControl::new());
    IN_SHARED_MEMORY.store(true, Ordering::Relaxed);
}

pub fn available() -> bool {
    IN_SHARED_MEMORY.load(Ordering::Relaxed)
}

/// Why a request was not accepted.
pub enum RequestRefused {
    WorkerNotRunning,
    Busy(String),
    /// An id for this second was handed out already: ask again in a moment.
    SameSecond,
}

/// Asks the worker for backup `backup_id`, starting with an immediate checkpoint when
/// `fast` says so (None: as pgops.backup_fast_checkpoint says).
pub fn request(backup_id: &str, fast: Option<bool>) -> Result<(), RequestRefused> {
    let latch = {
        let mut control = CONTROL.exclusive();
        if control.worker_pid == 0 {
            return Err(RequestRefused::WorkerNotRunning);
        }
        if let Some(busy) = control.running.get().or_else(|| control.requested.get()) {
            return Err(RequestRefused::Busy(busy));
        }
        if control.newest.get().is_some_and(|newest| newest.as_str() >= backup_id) {
            return Err(RequestRefused::SameSecond);
        }
        control.requested.set(backup_id);
        control.requested_fast = fast;
        control.newest.set(backup_id);
        control.worker_latch
    };
    // SAFETY: worker_pid was not 0, so worker_started() set `latch` to the worker's PGPROC
    // procLatch, in shared memory for the server's life: SetLatch on it is valid from any
    // process even if the worker has exited meanwhile (at worst a spurious wakeup of the
    // PGPROC's next owner). Called with CONTROL's LWLock released.
    unsafe { pg_sys::SetLatch(latch as *mut pg_sys::Latch) };
    Ok(())
}

/// The outcome of `backup_id`, once it finished: `Ok` or the error.
pub fn outcome(backup_id: &str) -> Option<Result<(), String>> {
    let control = CONTROL.share();
    (control.finished.get().as_deref() == Some(backup_id)).then(|| {
        if control.finished_ok {
            Ok(())
        } else {
            Err(control.finished_error.get().unwrap_or_default())
        }
    })
}

/// The worker starts: it can be woken from now on. A backup the previous worker was
/// running is over (it died with it); returns its id.
pub fn worker_started() -> Option<String> {
    let mut control = CONTROL.exclusive();
    // SAFETY: a read of this process' MyProcPid, set when it started.
    control.worker_pid = unsafe { pg_sys::MyProcPid };
    // SAFETY: called by the pgops worker after it connected, so MyProc points at its PGPROC
    // in shared memory; `&raw mut` only computes the field's address, making no reference.
    control.worker_latch = unsafe { &raw mut (*pg_sys::MyProc).procLatch } as usize;
    let interrupted = control.running.get();
    if let Some(id) = &interrupted {
        control.finished.set(id);
        control.finished_ok = false;
        control.finished_error.set("the pgops worker stopped during the backup");
        control.running = FixedText::EMPTY;
        control.waiting_for_spread_checkpoint = false;
    }
    interrupted
}

pub fn worker_stopped() {
    let mut control = CONTROL.exclusive();
    control.worker_pid = 0;
    control.worker_latch = 0;
}

/// A backup request taken by the worker.
pub struct Request {
    pub backup_id: String,
    /// Immediate checkpoint asked for (None: as the setting says).
    pub fast: Option<bool>,
}

/// The worker takes the pending request, if any: it is now running.
pub fn take_request() -> Option<Request> {
    let mut control = CONTROL.exclusive();
    let backup_id = control.requested.get()?;
    control.requested = FixedText::EMPTY;
    control.running.set(&backup_id);
    Some(Request { backup_id, fast: control.requested_fast.take() })
}

/// The backup the worker is taking now, if any (`None` without shared memory).
pub fn running() -> Option<String> {
    if !available() {
        return None;
    }
    CONTROL.share().running.get()
}

/// Whether a backup was asked for and the worker has not taken it yet.
pub fn requested() -> bool {
    available() && CONTROL.share().requested.get().is_some()
}

/// The worker says whether the running backup waits for a spread checkpoint now.
pub fn set_waiting_for_spread_checkpoint(waiting: bool) {
    CONTROL.exclusive().waiting_for_spread_checkpoint = waiting;
}

/// Whether `backup_id` is running and waiting for a spread checkpoint.
pub fn waiting_for_spread_checkpoint(backup_id: &str) -> bool {
    let control = CONTROL.share();
    control.waiting_for_spread_checkpoint && control.running.get().as_deref() == Some(backup_id)
}

/// The worker starts a scheduled backup, unless one was requested meanwhile or the id was
/// handed out already.
pub fn start_scheduled(backup_id: &str) -> bool {
    let mut control = CONTROL.exclusive();
    let taken = control.newest.get().is_some_and(|newest| newest.as_str() >= backup_id);
    if control.requested.get().is_some() || control.running.get().is_some() || taken {
        return false;
    }
    control.newest.set(backup_id);
    control.running.set(backup_id);
    true
}

pub fn finish(backup_id: &str, result: Result<(), &str>) {
    let mut control = CONTROL.exclusive();
    control.running = FixedText::EMPTY;
    control.waiting_for_spread_checkpoint = false;
    control.finished.set(backup_id);
    control.finished_ok = result.is_ok();
    control.finished_error.set(result.err().unwrap_or(""));
}
