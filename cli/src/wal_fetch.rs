//! `pgops wal-fetch %f %p`: the restore_command. Postgres reads its exit status: 1 to 125
//! is "not in the archive" (recovery ends there and the server promotes), above 125 stops
//! recovery with FATAL. So this exits 1 only when the store said the file is not there, and
//! [`exit::STOP_RECOVERY`] for everything else, panics and a runtime that cannot start
//! included.

use crate::{exit, Source};
use pgops_core::wal_fetch::{fetch_wal_prefetching, FetchError, FetchOptions, Fetched, Patience};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct WalFetchArgs {
    /// The WAL file name (%f)
    wal_name: String,
    /// Where to write it (%p)
    destination: PathBuf,
    /// Segments to fetch ahead, concurrently, when the requested one is not spooled
    #[arg(long, default_value_t = 4)]
    prefetch: usize,
    /// Where prefetched segments wait (default: pgops-prefetch beside the destination, i.e.
    /// in pg_wal, so that handing one over is a rename)
    #[arg(long)]
    spool: Option<PathBuf>,
    /// How long to keep retrying while the store fails, in seconds
    #[arg(long, env = "PGOPS_WAL_FETCH_RETRY_FOR", default_value_t = 300)]
    retry_for: u64,
}

/// Whether this process runs `wal-fetch` (known before the arguments are parsed, so that
/// even a usage error gets the status that stops recovery).
pub fn invoked() -> bool {
    std::env::args().any(|arg| arg == "wal-fetch")
}

/// Makes any panic, on any thread, exit with [`exit::STOP_RECOVERY`] instead of Rust's
/// 101, which Postgres would read as "not in the archive".
pub fn stop_recovery_on_panic() {
    std::panic::set_hook(Box::new(|panic| {
        let _ = writeln!(std::io::stderr(), "pgops wal-fetch: internal error: {panic}");
        std::process::exit(i32::from(exit::STOP_RECOVERY));
    }));
}

/// Writes a line to stderr, which Postgres puts in its log; a log that cannot be written
/// must not fail the fetch.
fn say(line: std::fmt::Arguments) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

pub fn run(args: WalFetchArgs, source: &Source, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let WalFetchArgs { wal_name, destination, prefetch, spool, retry_for } = args;
    runtime.block_on(async {
        let repo = source.open().await;
        let options = FetchOptions {
            spool: spool.unwrap_or_else(|| destination.with_file_name("pgops-prefetch")),
            prefetch,
            patience: Patience::new(Duration::from_secs(retry_for)),
        };
        let mut on_retry = |e: &FetchError, wait: Duration| {
            say(format_args!("pgops wal-fetch: {wal_name}: {e}; retrying in {:.1}s", wait.as_secs_f64()))
        };
        match fetch_wal_prefetching(&repo, &wal_name, &destination, &options, &mut on_retry).await {
            Ok(Fetched::Written { .. }) => ExitCode::SUCCESS,
            Ok(Fetched::NotFound) => ExitCode::from(exit::NOT_FOUND),
            Err(e) => {
                say(format_args!(
                    "pgops wal-fetch: {wal_name}: {e}\nhint: recovery stops here (exit status {}); fix the cause and start the server again to resume",
                    exit::STOP_RECOVERY
                ));
                ExitCode::from(exit::STOP_RECOVERY)
            }
        }
    })
}
