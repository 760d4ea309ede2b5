//! pgops: PostgreSQL backups to object storage, from inside Postgres.
//!
//! This crate is the Postgres-facing layer (settings, archive module, SQL functions); the
//! logic lives in `pgops-core`.

mod api;
mod archive_module;
mod archive_stats;
mod backup_control;
mod backup_worker;
mod databases;
mod fixed_text;
mod guc;
mod retention;
mod role_status;
mod roles;
mod roles_file;
mod runtime;
mod sqlstate;
mod top_level;
mod transaction;
mod worker_signals;

::pgrx::pg_module_magic!();

#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::register();
    // SAFETY: a plain read of a `bool` global of this process, which Postgres' own
    // process_shared_preload_libraries() sets around loading the preloaded libraries;
    // _PG_init runs on the main thread, the only one that writes it.
    if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        archive_stats::init();
        backup_control::init();
        role_status::init();
        backup_worker::register();
    }
}
