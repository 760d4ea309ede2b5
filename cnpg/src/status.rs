//! Core errors as gRPC statuses, decided here once for the plugin. The code follows what
//! the failure means to the caller (`Unavailable`: the store, try again; `NotFound`: not in
//! the repository; `FailedPrecondition`: refused until someone changes something;
//! `DataLoss`: an object is damaged), and the message says what failed, where, and what to
//! do, in the plugin's own words (its parameters, not the extension's settings).

use pgops_core::archive::ArchiveError;
use pgops_core::backup::BackupError;
use pgops_core::control_file::ControlFileError;
use pgops_core::ownership::OwnershipError;
use pgops_core::restore::RestoreError;
use pgops_core::store::{StoreError, StoreErrorKind, UndecodableReason};
use pgops_core::wal_fetch::FetchError;
use tonic::{Code, Status};

/// What to do about a store failure of `kind`, worded for a CNPG user.
fn store_hint(kind: &StoreErrorKind) -> &'static str {
    match kind {
        StoreErrorKind::NoSuchBucket => "Create the bucket, or correct the parameter repository.",
        StoreErrorKind::AccessDenied => {
            "Check the Secret behind credentialsFile (or the pod's cloud identity) and its permissions on the bucket."
        }
        StoreErrorKind::Unreachable | StoreErrorKind::Other => {
            "Check that the store is up and that the parameter endpoint reaches it from the pod; the call is retried."
        }
        StoreErrorKind::Integrity => {
            "The store did not keep what was sent; check the store's health. The call is retried."
        }
        StoreErrorKind::Undecodable(UndecodableReason::Key) => {
            "The object is encrypted to a key missing from encryptionKeyFile: mount the key file that holds it."
        }
        StoreErrorKind::Undecodable(UndecodableReason::Corrupt) => {
            "The object is damaged: inspect it; restore it from a copy if there is one."
        }
        StoreErrorKind::Changed => {
            "Another writer replaced the object while it was read: find out what rewrites it, then run again."
        }
    }
}

fn store_code(error: &StoreError) -> Code {
    match error.kind {
        StoreErrorKind::Undecodable(UndecodableReason::Corrupt) => Code::DataLoss,
        StoreErrorKind::Undecodable(UndecodableReason::Key) | StoreErrorKind::AccessDenied => Code::FailedPrecondition,
        StoreErrorKind::NoSuchBucket => Code::FailedPrecondition,
        StoreErrorKind::Changed => Code::Aborted,
        _ => Code::Unavailable,
    }
}

pub fn store(error: &StoreError) -> Status {
    Status::new(store_code(error), format!("{error}. {}", store_hint(&error.kind)))
}

pub fn ownership(error: &OwnershipError) -> Status {
    match error {
        OwnershipError::Store(e) => store(e),
        OwnershipError::Foreign { .. } => Status::failed_precondition(format!(
            "{error}. Point the parameter repository at a folder of this cluster's own; WAL stays in pg_wal until it succeeds."
        )),
        _ => Status::failed_precondition(format!("{error}. {}", error.hint())),
    }
}

/// A failed Backup call.
pub fn backup(error: &BackupError) -> Status {
    let status = match error {
        BackupError::Store(e) => store(e),
        BackupError::Refused(e) => ownership(e),
        BackupError::Stopped(_) => Status::cancelled(error.to_string()),
        BackupError::Postgres { .. } => Status::failed_precondition(format!(
            "{error}. Check the server's log in the postgres container; the sidecar connects with PGHOST/PGPORT/PGUSER."
        )),
        BackupError::NoAnswer { .. } | BackupError::HeartbeatLost { .. } => {
            Status::unavailable(format!("{error}. {}", store_hint(&StoreErrorKind::Unreachable)))
        }
        BackupError::EndSegmentNotArchived { .. } => Status::failed_precondition(error.to_string()),
        BackupError::Local(_) => Status::internal(error.to_string()),
    };
    prefixed("backup failed", status)
}

/// `status` with `what` in front of its message.
fn prefixed(what: &str, status: Status) -> Status {
    Status::new(status.code(), format!("{what}: {}", status.message()))
}

pub fn archive(file: &str, error: &ArchiveError) -> Status {
    let named = |code: Code, hint: &str| Status::new(code, format!("could not archive {file}: {error}. {hint}"));
    match error {
        ArchiveError::Store(e) => prefixed(&format!("could not archive {file}"), store(e)),
        ArchiveError::Ownership(e) => prefixed(&format!("could not archive {file}"), ownership(e)),
        ArchiveError::NotAWalFile(_) => named(Code::InvalidArgument, "source_file_name must name a WAL file in pg_wal."),
        ArchiveError::Read { .. } => named(Code::NotFound, "The file must exist in pg_wal on the volume the sidecar shares."),
        ArchiveError::Conflict { .. } => named(
            Code::FailedPrecondition,
            "Another cluster or tool wrote this WAL name: check that the repository is not shared, and inspect the object before removing it.",
        ),
        ArchiveError::Verification { .. } => named(Code::DataLoss, "The upload is retried; check the store's health."),
        ArchiveError::Compress(_) | ArchiveError::Task(_) => named(Code::Internal, "The call is retried."),
    }
}

pub fn fetch(name: &str, error: &FetchError) -> Status {
    let (code, hint) = match error {
        FetchError::NotAWalFile(_) => (Code::InvalidArgument, "source_wal_name must be a WAL file name."),
        FetchError::Store(e) | FetchError::Key(e) => (store_code(e), store_hint(&e.kind)),
        FetchError::GaveUp { .. } => (Code::Unavailable, store_hint(&StoreErrorKind::Unreachable)),
        FetchError::Corrupt { .. } => {
            (Code::DataLoss, store_hint(&StoreErrorKind::Undecodable(UndecodableReason::Corrupt)))
        }
        FetchError::Conflict { .. } => (Code::FailedPrecondition, "Remove the copy that is not this cluster's."),
        FetchError::Write { .. } => (Code::Internal, "Check that pg_wal is writable and has free space."),
    };
    Status::new(code, format!("could not restore {name}: {error}. {hint}"))
}

pub fn restore(error: &RestoreError) -> Status {
    let code = match error {
        RestoreError::Store(e) => store_code(e),
        RestoreError::Refused { .. } => Code::FailedPrecondition,
        RestoreError::Corrupt { .. } => Code::DataLoss,
        RestoreError::Io { .. } => Code::Internal,
    };
    let hint = match error {
        RestoreError::Store(e) => store_hint(&e.kind),
        // The core's hints speak of pgops restore's options; here the Cluster says it.
        RestoreError::Refused { .. } | RestoreError::Corrupt { .. } => {
            "Correct spec.bootstrap.recovery (recoveryTarget.backupID, the target) or the source's parameters; `pgops list` shows the backups."
        }
        RestoreError::Io { .. } => "Check that PGDATA is on the recovery Job's data volume, writable, with free space.",
    };
    Status::new(code, format!("restore failed: {error}. {hint}"))
}

pub fn control_file(error: &ControlFileError) -> Status {
    Status::failed_precondition(format!(
        "{error}. Set PGDATA in the sidecar to the data directory of the postgres container, on the volume they share."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_error(kind: StoreErrorKind) -> StoreError {
        StoreError { operation: "GetObject", location: "s3://b/db/wals/x".into(), kind, cause: "503".into() }
    }

    #[test]
    fn codes_follow_what_the_failure_means() {
        assert_eq!(store(&store_error(StoreErrorKind::Unreachable)).code(), Code::Unavailable);
        assert_eq!(store(&store_error(StoreErrorKind::AccessDenied)).code(), Code::FailedPrecondition);
        let corrupt = store(&store_error(StoreErrorKind::Undecodable(UndecodableReason::Corrupt)));
        assert_eq!(corrupt.code(), Code::DataLoss);
        assert!(
            corrupt.message().contains("s3://b/db/wals/x") && corrupt.message().contains("damaged"),
            "{}",
            corrupt.message()
        );
    }

    #[test]
    fn a_failed_backup_says_by_its_kind_whether_to_retry() {
        let status = |error: BackupError| backup(&error);
        let down = status(BackupError::Store(store_error(StoreErrorKind::Unreachable)));
        assert_eq!(down.code(), Code::Unavailable);
        assert!(down.message().starts_with("backup failed: ") && down.message().contains("503"), "{}", down.message());
        let foreign = OwnershipError::Foreign {
            location: "s3://b/db/pgops.json".into(),
            repository_system_identifier: "1".into(),
            cluster_system_identifier: 2,
        };
        let refused = status(BackupError::Refused(foreign));
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert!(refused.message().contains("parameter repository"), "{}", refused.message());
        assert_eq!(status(BackupError::Stopped("cancelled".into())).code(), Code::Cancelled);
        let not_archived = BackupError::EndSegmentNotArchived {
            segment: "000000010000000000000003".into(),
            within: std::time::Duration::from_secs(300),
            cause: "the repository does not have it".into(),
        };
        assert_eq!(status(not_archived).code(), Code::FailedPrecondition);
    }
}
