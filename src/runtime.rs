//! The tokio runtime of this process, made on first use in the process that needs it
//! (archiver or backend), never in the postmaster: threads do not survive fork().

use once_cell::sync::OnceCell;
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
