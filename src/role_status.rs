//! `pgops.role_status`: how the pgops worker's reconciliation of the roles file went, in
//! shared memory so that every backend can read it.

use crate::fixed_text::FixedText;
use pgrx::lwlock::PgLwLock;
use pgrx::pg_sys;
use pgrx::shmem::PGRXSharedMemory;
use std::sync::atomic::{AtomicBool, Ordering};

/// Rows kept; a larger file is reconciled all the same, the view shows the first ones.
pub const CAPACITY: usize = 256;

#[derive(Copy, Clone)]
pub struct Row {
    pub kind: FixedText<16>,
    pub name: FixedText<128>,
    pub state: FixedText<16>,
    pub message: FixedText<512>,
    /// 0 when never attempted.
    pub last_attempt: pg_sys::TimestampTz,
}

impl Row {
    const EMPTY: Row = Row {
        kind: FixedText::EMPTY,
        name: FixedText::EMPTY,
        state: FixedText::EMPTY,
        message: FixedText::EMPTY,
        last_attempt: 0,
    };
}

#[derive(Copy, Clone)]
pub struct Table {
    count: usize,
    rows: [Row; CAPACITY],
}

// SAFETY: Table is Copy plain data (a count, byte arrays and timestamps) with no pointer,
// so every process can read and write it in shared memory.
unsafe impl PGRXSharedMemory for Table {}

// SAFETY: PgLwLock::new asks that no other shared memory struct or LWLock tranche has this
// name: it keys ShmemInitStruct and RequestNamedLWLockTranche. "pgops_role_status" is
// pgops' own prefix, and pgops' other two (pgops_archive_stats, pgops_backup_control)
// differ.
static TABLE: PgLwLock<Table> = unsafe { PgLwLock::new(c"pgops_role_status") };
static IN_SHARED_MEMORY: AtomicBool = AtomicBool::new(false);

/// From `_PG_init`, while shared_preload_libraries loads.
#[allow(unexpected_cfgs)] // the macro tests for pg13/pg14, which pgops does not build for
pub fn init() {
    use pgrx::pg_guard;
    pgrx::pg_shmem_init!(TABLE = Table { count: 0, rows: [Row::EMPTY; CAPACITY] });
    IN_SHARED_MEMORY.store(true, Ordering::Relaxed);
}

/// One row as the worker keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub kind: String,
    pub name: String,
    pub state: &'static str,
    pub message: String,
    pub last_attempt: pg_sys::TimestampTz,
}

/// Replaces what the view shows.
pub fn publish(statuses: &[Status]) {
    let mut table = TABLE.exclusive();
    table.count = statuses.len().min(CAPACITY);
    for (row, status) in table.rows.iter_mut().zip(statuses) {
        row.kind.set(&status.kind);
        row.name.set(&status.name);
        row.state.set(status.state);
        row.message.set(&status.message);
        row.last_attempt = status.last_attempt;
    }
}

/// What the view shows; None when pgops is not preloaded (no worker, no table).
pub fn snapshot() -> Option<Vec<Row>> {
    if !IN_SHARED_MEMORY.load(Ordering::Relaxed) {
        return None;
    }
    let table = TABLE.share();
    Some(table.rows[..table.count].to_vec())
}
