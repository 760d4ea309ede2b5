//! Signal handling for pgops' background workers: a normal backend's SIGTERM (`die`: any
//! wait inside Postgres ends, then the process exits at the next interrupt check) and
//! SIGHUP (reload the configuration file when the worker next looks).

use pgrx::pg_sys;

// Postgres' own handlers, by their C symbols (pgrx's wrappers are Rust functions).
// SAFETY: both are `void handler(SIGNAL_ARGS)` in Postgres (SIGNAL_ARGS is `int
// postgres_signal_arg`), exported by the postgres binary this library is loaded into.
unsafe extern "C-unwind" {
    /// A backend's SIGTERM handler: sets ProcDiePending, wakes the latch.
    fn die(signal: i32);
    /// Sets ConfigReloadPending, wakes the latch.
    fn SignalHandlerForConfigReload(signal: i32);
}

fn set_signal_handler(signal: u32, handler: unsafe extern "C-unwind" fn(i32)) {
    // SAFETY: pqsignal (pqsignal_be in PostgreSQL 18's backend) makes `handler` the
    // process' handler of `signal` (sigaction underneath); `handler` is one of Postgres' own
    // handlers above, of the pqsigfunc shape `void (*)(int)`. Called from install() on the worker's main thread, before
    // BackgroundWorkerUnblockSignals(): a background worker starts with signals blocked,
    // so none is delivered while its handler is being replaced.
    unsafe {
        #[cfg(not(feature = "pg18"))]
        pg_sys::pqsignal(signal as i32, Some(handler));
        #[cfg(feature = "pg18")]
        pg_sys::pqsignal_be(signal as i32, Some(handler));
    }
}

/// Installs the handlers and unblocks signals; first thing in a worker's main function.
pub fn install() {
    set_signal_handler(pg_sys::SIGHUP, SignalHandlerForConfigReload);
    set_signal_handler(pg_sys::SIGTERM, die);
    // SAFETY: sets this process' signal mask to Postgres' UnBlockSig, as a background
    // worker's main function must once its handlers are in place; main thread.
    unsafe { pg_sys::BackgroundWorkerUnblockSignals() };
}

/// Re-reads the configuration file if SIGHUP asked for it; true when it did.
pub fn reload_if_asked() -> bool {
    // SAFETY: ConfigReloadPending is the `volatile sig_atomic_t`
    // SignalHandlerForConfigReload sets; testing and clearing it, then
    // ProcessConfigFile(PGC_SIGHUP), is what Postgres' HandleMainLoopInterrupts does.
    // Called by the pgops worker on its main thread between transactions (its loop and
    // PgHost::wait), where a reload is allowed.
    unsafe {
        if pg_sys::ConfigReloadPending == 0 {
            return false;
        }
        pg_sys::ConfigReloadPending = 0;
        pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP);
    }
    true
}
