//! The tokio runtime of this process, made on first use in the process that needs it
//! (archiver or backend), never in the postmaster: threads do not survive fork().
//!
//! Every wait on the store from a Postgres process goes through [`block_on`], which
//! answers interrupts: a store that accepts connections and never answers must not keep a
//! backend from its cancel, a worker from its SIGTERM or the archiver from shutting down.

use once_cell::sync::OnceCell;
use pgrx::pg_sys;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::runtime::Runtime;

static RUNTIME: OnceCell<Runtime> = OnceCell::new();

pub fn runtime() -> Result<&'static Runtime, String> {
    RUNTIME.get_or_try_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pgops-io")
            .enable_all()
            // Postgres' signal handlers must run on the main thread only.
            .on_thread_start(pgops_core::signals::block_all)
            .build()
            .map_err(|e| format!("could not start the I/O runtime: {e}"))
    })
}

/// Why [`block_on`] returned without the future's output.
#[derive(Debug)]
pub enum NotDone {
    /// The runtime could not be started.
    NoRuntime(String),
    /// Postgres asked this process to stop what it does (cancel, terminate, shutdown,
    /// postmaster death); the future was dropped, which cancels its requests.
    Interrupted,
}

/// Set by the archiver's SIGUSR2 (Postgres' "archive what is left, then exit").
static ARCHIVER_STOPPING: AtomicBool = AtomicBool::new(false);

pub fn note_archiver_stopping() {
    ARCHIVER_STOPPING.store(true, Ordering::SeqCst);
}

pub fn archiver_stopping() -> bool {
    ARCHIVER_STOPPING.load(Ordering::SeqCst)
}

// SAFETY: Postgres declares it `bool PostmasterIsAliveInternal(void)` (storage/pmsignal.h);
// the postgres binary this library is loaded into exports it.
unsafe extern "C-unwind" {
    /// PostmasterIsAlive() is a macro over this (not in pgrx's bindings): reads the
    /// postmaster-death pipe without blocking.
    fn PostmasterIsAliveInternal() -> bool;
}

/// Whether an interrupt is pending that ends the current work. Reads the flags Postgres'
/// signal handlers set; called on the main thread only.
fn stop_pending() -> bool {
    // SAFETY: plain reads of Postgres' `volatile sig_atomic_t` flags, which this process'
    // own signal handlers set (read_volatile because they change asynchronously; `&raw
    // const` makes no reference to the mutable statics). PostmasterIsAliveInternal only
    // does a non-blocking read() of the postmaster-death pipe every child inherits. Called
    // on the main thread only: Runtime::block_on polls its future on the calling thread.
    unsafe {
        std::ptr::read_volatile(&raw const pg_sys::QueryCancelPending) != 0
            || std::ptr::read_volatile(&raw const pg_sys::ProcDiePending) != 0
            || std::ptr::read_volatile(&raw const pg_sys::ShutdownRequestPending) != 0
            || !PostmasterIsAliveInternal()
    }
}

/// Runs `future` on this process' runtime, polling it from the calling (main) thread, and
/// gives up within 100 ms of an interrupt. The caller serves the interrupt afterwards
/// (`check_for_interrupts!`, or the archiver's and worker's own exits).
pub fn block_on<F: Future>(future: F) -> Result<F::Output, NotDone> {
    block_on_until(future, stop_pending)
}

/// [`block_on`] that also stops when `stop` says so.
pub fn block_on_until<F: Future>(future: F, stop: impl Fn() -> bool) -> Result<F::Output, NotDone> {
    let runtime = runtime().map_err(NotDone::NoRuntime)?;
    runtime.block_on(async {
        tokio::pin!(future);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                output = &mut future => return Ok(output),
                _ = tick.tick() => if stop() || stop_pending() { return Err(NotDone::Interrupted) },
            }
        }
    })
}
