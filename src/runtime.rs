//! The tokio runtime of this process, made on first use in the process that needs it
//! (archiver or backend), never in the postmaster: threads do not survive fork().

use once_cell::sync::OnceCell;
use tokio::runtime::Runtime;

static RUNTIME: OnceCell<Runtime> = OnceCell::new();

/// Runtime threads block every signal, so that Postgres' handlers run on the main thread
/// only.
fn block_signals() {
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
}

pub fn runtime() -> Result<&'static Runtime, String> {
    RUNTIME.get_or_try_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pgops-io")
            .enable_all()
            .on_thread_start(block_signals)
            .build()
            .map_err(|e| format!("could not start the I/O runtime: {e}"))
    })
}
