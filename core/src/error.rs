//! What a failure means to whoever must act on it, whatever the surface. Each core error
//! says its [`ErrorKind`]; each surface maps the kind once (the extension to a SQLSTATE in
//! `src/sqlstate.rs`, the CLI to an exit status in `cli/src/main.rs`, the CNPG plugin to a
//! gRPC code in `cnpg/src/status.rs`) and words its own hint.

use crate::archive::ArchiveError;
use crate::backup::BackupError;
use crate::ownership::OwnershipError;
use crate::restore::RestoreError;
use crate::retention::{KeepError, RetentionError};
use crate::store::{StoreError, StoreErrorKind, UndecodableReason};
use crate::wal_fetch::FetchError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The store failed, did not answer, or refused a request: trying again later may
    /// succeed.
    Store,
    /// What was asked for is not in the repository.
    NotFound,
    /// Cannot be done safely as things are (another cluster's repository, a missing key,
    /// a backup that is not DONE): someone must change something first.
    Refused,
    /// An object is damaged, altered, or was rewritten while it was read.
    Corrupt,
    /// The caller's input is wrong (a name, an argument).
    BadInput,
    /// A local file or directory could not be read or written.
    LocalIo,
    /// Stopped by a shutdown or a cancel.
    Stopped,
}

/// An error that says its kind.
pub trait Kinded: std::fmt::Display {
    fn kind(&self) -> ErrorKind;
}

impl Kinded for StoreError {
    fn kind(&self) -> ErrorKind {
        match self.kind {
            StoreErrorKind::Undecodable(UndecodableReason::Corrupt) | StoreErrorKind::Changed => ErrorKind::Corrupt,
            // Encrypted to a key the reader lacks: not damage, a key file to fix.
            StoreErrorKind::Undecodable(UndecodableReason::Key) => ErrorKind::Refused,
            StoreErrorKind::NoSuchBucket
            | StoreErrorKind::AccessDenied
            | StoreErrorKind::Unreachable
            | StoreErrorKind::Integrity
            | StoreErrorKind::Other => ErrorKind::Store,
        }
    }
}

impl Kinded for OwnershipError {
    fn kind(&self) -> ErrorKind {
        match self {
            OwnershipError::Store(e) => e.kind(),
            OwnershipError::Unreadable { .. } => ErrorKind::Corrupt,
            OwnershipError::Foreign { .. } | OwnershipError::Encryption { .. } | OwnershipError::WrongKey { .. } => {
                ErrorKind::Refused
            }
        }
    }
}

impl Kinded for RestoreError {
    fn kind(&self) -> ErrorKind {
        match self {
            RestoreError::Store(e) => e.kind(),
            RestoreError::Refused { .. } => ErrorKind::Refused,
            RestoreError::Corrupt { .. } => ErrorKind::Corrupt,
            RestoreError::Io { .. } => ErrorKind::LocalIo,
        }
    }
}

impl Kinded for RetentionError {
    fn kind(&self) -> ErrorKind {
        match self {
            RetentionError::Store(e) => e.kind(),
            // A deletion the store refused: its permissions, or a lock, may change.
            RetentionError::Refused { .. } => ErrorKind::Store,
            RetentionError::Unreadable { .. } => ErrorKind::Corrupt,
            RetentionError::NotOwner { .. }
            | RetentionError::NoHistory { .. }
            | RetentionError::TimelineNeeded { .. }
            | RetentionError::NotAdmitted { .. } => ErrorKind::Refused,
        }
    }
}

impl Kinded for KeepError {
    fn kind(&self) -> ErrorKind {
        match self {
            KeepError::Store(e) => e.kind(),
            KeepError::Ownership(e) => e.kind(),
            KeepError::NotFound { .. } => ErrorKind::NotFound,
            KeepError::NotDone { .. } => ErrorKind::Refused,
        }
    }
}

impl Kinded for FetchError {
    fn kind(&self) -> ErrorKind {
        match self {
            FetchError::NotAWalFile(_) => ErrorKind::BadInput,
            FetchError::Store(e) => e.kind(),
            FetchError::Corrupt { .. } | FetchError::Conflict { .. } => ErrorKind::Corrupt,
            FetchError::Key(_) => ErrorKind::Refused,
            FetchError::Write { .. } => ErrorKind::LocalIo,
            FetchError::GaveUp { last, .. } => last.kind(),
        }
    }
}

impl Kinded for ArchiveError {
    fn kind(&self) -> ErrorKind {
        match self {
            ArchiveError::NotAWalFile(_) => ErrorKind::BadInput,
            ArchiveError::Read { .. } | ArchiveError::Compress(_) | ArchiveError::Task(_) => ErrorKind::LocalIo,
            ArchiveError::Store(e) => e.kind(),
            ArchiveError::Ownership(e) => e.kind(),
            ArchiveError::Conflict { .. } => ErrorKind::Refused,
            ArchiveError::Verification { .. } => ErrorKind::Store,
        }
    }
}

impl Kinded for BackupError {
    fn kind(&self) -> ErrorKind {
        match self {
            BackupError::Stopped(_) => ErrorKind::Stopped,
            BackupError::Postgres { .. } => ErrorKind::Refused,
            BackupError::Refused(e) => e.kind(),
            BackupError::Store(e) => e.kind(),
            BackupError::NoAnswer { .. } | BackupError::HeartbeatLost { .. } => ErrorKind::Store,
            BackupError::EndSegmentNotArchived { .. } => ErrorKind::Refused,
            BackupError::Local(_) => ErrorKind::LocalIo,
        }
    }
}
