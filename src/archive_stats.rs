//! Archiver statistics in shared memory, written by the archiver and read by
//! `pgops.archive_status()`. Needs pgops in shared_preload_libraries.

use crate::fixed_text::FixedText;
use pgrx::lwlock::PgLwLock;
use pgrx::pg_sys;
use pgrx::shmem::PGRXSharedMemory;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Copy, Clone)]
pub struct ArchiveStats {
    pub last_archived_wal: FixedText<64>,
    pub last_archived_at: pg_sys::TimestampTz,
    pub last_failed_wal: FixedText<64>,
    pub last_failed_at: pg_sys::TimestampTz,
    pub last_failure: FixedText<1024>,
    pub archived_count: i64,
    pub failed_count: i64,
    pub raw_bytes: i64,
    pub stored_bytes: i64,
    pub in_flight: i32,
}

// SAFETY: ArchiveStats is Copy plain data (integers and byte arrays) with no pointer, so
// every process can read and write it in shared memory.
unsafe impl PGRXSharedMemory for ArchiveStats {}

impl ArchiveStats {
    pub const fn new() -> Self {
        ArchiveStats {
            last_archived_wal: FixedText::EMPTY,
            last_archived_at: 0,
            last_failed_wal: FixedText::EMPTY,
            last_failed_at: 0,
            last_failure: FixedText::EMPTY,
            archived_count: 0,
            failed_count: 0,
            raw_bytes: 0,
            stored_bytes: 0,
            in_flight: 0,
        }
    }
}

// SAFETY: PgLwLock::new asks that no other shared memory struct or LWLock tranche has this
// name: it keys ShmemInitStruct and RequestNamedLWLockTranche. "pgops_archive_stats" is
// pgops' own prefix, and pgops' other two (pgops_backup_control, pgops_role_status) differ.
pub static STATS: PgLwLock<ArchiveStats> = unsafe { PgLwLock::new(c"pgops_archive_stats") };

/// Whether `STATS` was set up (pgops in shared_preload_libraries).
static IN_SHARED_MEMORY: AtomicBool = AtomicBool::new(false);

/// From `_PG_init`, while shared_preload_libraries loads.
#[allow(unexpected_cfgs)] // the macro tests for pg13/pg14, which pgops does not build for
pub fn init() {
    use pgrx::pg_guard;
    pgrx::pg_shmem_init!(STATS = ArchiveStats::new());
    IN_SHARED_MEMORY.store(true, Ordering::Relaxed);
}

pub fn available() -> bool {
    IN_SHARED_MEMORY.load(Ordering::Relaxed)
}

fn update(change: impl FnOnce(&mut ArchiveStats)) {
    if available() {
        change(&mut STATS.exclusive());
    }
}

pub fn record_success(wal: &str, raw_bytes: u64, stored_bytes: u64, in_flight: usize) {
    // SAFETY: GetCurrentTimestamp only reads the clock (gettimeofday) and converts it; it
    // needs no backend state.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    update(|s| {
        s.last_archived_wal.set(wal);
        s.last_archived_at = now;
        s.archived_count += 1;
        s.raw_bytes += raw_bytes as i64;
        s.stored_bytes += stored_bytes as i64;
        s.in_flight = in_flight as i32;
    });
}

pub fn record_failure(wal: &str, message: &str, in_flight: usize) {
    // SAFETY: GetCurrentTimestamp only reads the clock (gettimeofday) and converts it; it
    // needs no backend state.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    update(|s| {
        s.last_failed_wal.set(wal);
        s.last_failed_at = now;
        s.last_failure.set(message);
        s.failed_count += 1;
        s.in_flight = in_flight as i32;
    });
}

pub fn snapshot() -> Option<ArchiveStats> {
    available().then(|| *STATS.share())
}
