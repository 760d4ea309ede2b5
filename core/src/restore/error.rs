//! Why a restore (or the check of a backup) failed, by kind: the command line decides its
//! exit status and the hint from the kind, never from the wording.

use crate::store::StoreError;
use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The store failed or refused: unreachable, denied, missing bucket.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The restore cannot be done as asked (no such backup, none before the target, a
    /// directory that is not empty, a tablespace without a location, …); nothing was
    /// written, and `hint` says what to ask instead.
    #[error("{what}")]
    Refused { what: String, hint: String },
    /// What the repository holds is damaged or unsafe to restore: a file that fails the
    /// backup's manifest, a bad manifest, a link or device in an archive, an archive that
    /// does not decompress. `location` is the object (or archive) it was found in.
    #[error("{location}: {cause}")]
    Corrupt { location: String, cause: String },
    /// A local file or directory could not be read or written.
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: io::Error },
}

impl RestoreError {
    /// What the operator can do about it.
    pub fn hint(&self) -> &str {
        match self {
            RestoreError::Store(e) => e.hint(),
            RestoreError::Refused { hint, .. } => hint,
            RestoreError::Corrupt { .. } => {
                "The backup's stored objects are damaged or were changed: restore another backup (--backup ID); \
                 pgops verify names every backup and WAL file that is affected."
            }
            RestoreError::Io { .. } => {
                "Check that the directory is on a mounted, writable file system with free space, owned by the user \
                 running pgops."
            }
        }
    }

    /// The error as the command line shows it: the message, then the hint.
    #[cfg(test)]
    pub(crate) fn shown(&self) -> String {
        format!("{self}\nhint: {}", self.hint())
    }

    pub(crate) fn refused(what: impl Into<String>, hint: impl Into<String>) -> RestoreError {
        RestoreError::Refused { what: what.into(), hint: hint.into() }
    }

    pub(crate) fn corrupt(location: impl Into<String>, cause: impl ToString) -> RestoreError {
        RestoreError::Corrupt { location: location.into(), cause: cause.to_string() }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> RestoreError {
        let path = path.into();
        move |cause| RestoreError::Io { path, cause }
    }

    /// An error reading archive `archive` from the store: the store's own error when it is
    /// one ([`ObjectReader`](super::ObjectReader) passes those through the `Read`
    /// interface), otherwise data that does not read as an archive.
    pub(crate) fn reading(archive: &str, what: &str, e: io::Error) -> RestoreError {
        match e.get_ref().and_then(|inner| inner.downcast_ref::<StoreError>()) {
            Some(store) => RestoreError::Store(store.clone()),
            None => RestoreError::corrupt(archive, format!("{what}: {e}")),
        }
    }
}
