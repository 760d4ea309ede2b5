//! Running code in a transaction of its own and catching its ERROR, for the background
//! workers (which have no client to report to), and raising errors with a HINT.

use pgrx::pg_sys;
use pgrx::pg_sys::panic::{CaughtError, ErrorReport, ErrorReportWithLevel};
use pgrx::prelude::*;
use pgrx::PgTryBuilder;
use std::fmt;

/// A Postgres ERROR, kept to report later (in a view, the log, or as another backend's error).
#[derive(Debug, Clone)]
pub struct Failure {
    pub code: PgSqlErrorCode,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl Failure {
    pub fn new(code: PgSqlErrorCode, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Failure { code, message: message.into(), detail: None, hint: Some(hint.into()) }
    }

    /// An ERROR caught from Postgres.
    pub fn caught(report: &ErrorReportWithLevel) -> Self {
        Failure {
            code: report.sql_error_code(),
            message: report.message().to_string(),
            detail: report.detail().map(str::to_string),
            hint: report.hint().map(str::to_string),
        }
    }

    /// Raises it as an ERROR of this backend.
    pub fn raise(self) -> ! {
        let mut report = ErrorReport::new(self.code, self.message, "pgops");
        if let Some(detail) = self.detail {
            report = report.set_detail(detail);
        }
        if let Some(hint) = self.hint {
            report = report.set_hint(hint);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("ERROR does not return");
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, " Hint: {hint}")?;
        }
        Ok(())
    }
}

/// Runs `body` in a transaction of its own; a Postgres ERROR aborts the transaction and
/// comes back as a [`Failure`].
pub fn in_transaction<R>(body: impl FnOnce() -> R) -> Result<R, Failure> {
    // SAFETY: called only by the background workers (pgops worker, statement worker), on
    // their main thread after they connected to a database, and never with a transaction
    // already open (no caller nests it): StartTransactionCommand then starts one, and the
    // snapshot pushed here is popped or released below.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let body = std::panic::AssertUnwindSafe(body);
    let outcome = PgTryBuilder::new(move || Ok(body()))
        .catch_others(|caught| {
            Err(match caught {
                CaughtError::PostgresError(report)
                | CaughtError::ErrorReport(report)
                | CaughtError::RustPanic { ereport: report, .. } => Failure::caught(&report),
            })
        })
        .execute();
    // SAFETY: ends the transaction started above, on the same thread. On success the body
    // returned normally (PopActiveSnapshot only if a snapshot is still active); after a
    // caught ERROR or panic, AbortCurrentTransaction is what Postgres' own error recovery
    // calls: it aborts from any state and releases the snapshot and the body's resources.
    unsafe {
        if outcome.is_ok() {
            if pg_sys::ActiveSnapshotSet() {
                pg_sys::PopActiveSnapshot();
            }
            pg_sys::CommitTransactionCommand();
        } else {
            pg_sys::AbortCurrentTransaction();
        }
    }
    outcome
}
