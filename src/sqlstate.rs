//! The SQLSTATE of each kind of core failure, decided here once for the extension (the
//! CLI's exit statuses and the plugin's gRPC codes are decided in their own crates).

use pgops_core::error::ErrorKind;
use pgops_core::roles::RefusalKind;
use pgrx::PgSqlErrorCode;

pub fn of(kind: ErrorKind) -> PgSqlErrorCode {
    match kind {
        ErrorKind::Store => PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
        ErrorKind::NotFound => PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
        ErrorKind::Refused => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        ErrorKind::Corrupt => PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
        ErrorKind::BadInput => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        ErrorKind::LocalIo => PgSqlErrorCode::ERRCODE_IO_ERROR,
        ErrorKind::Stopped => PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
    }
}

/// A role or database declaration pgops refuses, by why.
pub fn of_refusal(kind: RefusalKind) -> PgSqlErrorCode {
    match kind {
        RefusalKind::Reserved => PgSqlErrorCode::ERRCODE_RESERVED_NAME,
        RefusalKind::InvalidValue => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        RefusalKind::Conflict => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
    }
}
