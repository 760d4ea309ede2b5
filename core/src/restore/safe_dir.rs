//! A directory the restore writes into, held open: everything below it is created through
//! its descriptor one path component at a time (`openat`, `mkdirat`, `renameat2`), and no
//! component is ever followed if it is a symbolic link. An archive member's path can then
//! only name something inside the directory, whatever an earlier member (or anyone else)
//! put there.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Mode of directories the restore creates (Postgres wants its data directory private).
const DIRECTORY_MODE: libc::mode_t = 0o700;
const FILE_MODE: libc::c_uint = 0o600;

#[derive(Debug)]
pub(super) struct SafeDir {
    fd: OwnedFd,
    /// For messages only; never used to reach the directory.
    path: PathBuf,
}

fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::other("a file name with a NUL byte"))
}

/// The descriptor a libc call returned, or the error it set.
fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor the caller's libc call just opened and nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl SafeDir {
    /// The directory the user named (it may be reached through links of theirs: it is
    /// theirs to choose).
    pub(super) fn open_root(path: &Path) -> io::Result<SafeDir> {
        let name = c_name(path.as_os_str())?;
        // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
        let fd = owned(unsafe { libc::open(name.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) })?;
        Ok(SafeDir { fd, path: path.to_path_buf() })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The directory `name` in this one, created (private) if missing. A symbolic link or
    /// anything else that is not a directory is refused.
    pub(super) fn subdir(&self, name: &OsStr) -> io::Result<SafeDir> {
        let c = c_name(name)?;
        let path = self.path.join(name);
        // SAFETY: `self.fd` is an open directory and `c` a valid NUL-terminated name.
        match check(unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), DIRECTORY_MODE) }) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(io::Error::new(e.kind(), format!("could not create directory {}: {e}", path.display())))
            }
            _ => {}
        }
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: as above; O_NOFOLLOW makes the call fail on a symbolic link.
        let fd = owned(unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), flags) }).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{} is not a directory the restore made (a symbolic link or a file?): {e}", path.display()),
            )
        })?;
        Ok(SafeDir { fd, path })
    }

    /// Creates the file `name`, which must not exist yet (not even as a link).
    pub(super) fn create_file(&self, name: &OsStr) -> io::Result<File> {
        let c = c_name(name)?;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: `self.fd` is an open directory and `c` a valid NUL-terminated name.
        let fd = owned(unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), flags, FILE_MODE) }).map_err(|e| {
            io::Error::new(e.kind(), format!("could not create {}: {e}", self.path.join(name).display()))
        })?;
        Ok(File::from(fd))
    }

    /// Renames `from` to `to` in this directory; `to` must not exist.
    pub(super) fn rename_new(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        let (c_from, c_to) = (c_name(from)?, c_name(to)?);
        let dir = self.fd.as_raw_fd();
        // SAFETY: `dir` is an open directory; both names are valid NUL-terminated strings.
        check(unsafe { libc::renameat2(dir, c_from.as_ptr(), dir, c_to.as_ptr(), libc::RENAME_NOREPLACE) })
            .map_err(|e| io::Error::new(e.kind(), format!("could not rename to {}: {e}", self.path.join(to).display())))
    }

    /// Removes the file `name` (not a directory), if it is there.
    pub(super) fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        let c = c_name(name)?;
        // SAFETY: `self.fd` is an open directory and `c` a valid NUL-terminated name.
        match check(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) }) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_goes_through_a_symbolic_link() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("evil")).unwrap();
        let dir = SafeDir::open_root(root.path()).unwrap();
        let err = dir.subdir(OsStr::new("evil")).unwrap_err();
        assert!(err.to_string().contains("evil is not a directory the restore made"), "{err}");
        std::os::unix::fs::symlink(outside.path().join("file"), root.path().join("link")).unwrap();
        assert!(dir.create_file(OsStr::new("link")).is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);

        let sub = dir.subdir(OsStr::new("base")).unwrap();
        sub.create_file(OsStr::new("tmp")).unwrap();
        std::fs::write(root.path().join("base/taken"), "x").unwrap();
        assert!(sub.rename_new(OsStr::new("tmp"), OsStr::new("taken")).is_err(), "never replaces");
        sub.rename_new(OsStr::new("tmp"), OsStr::new("1259")).unwrap();
        assert!(root.path().join("base/1259").is_file());
        sub.remove_file(OsStr::new("1259")).unwrap();
        sub.remove_file(OsStr::new("1259")).unwrap();
    }
}
