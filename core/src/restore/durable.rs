//! Making a restore durable before it says "restored", as pg_basebackup and pgBackRest
//! do: every file and directory of the restored tree fsynced, so that a power loss after
//! the restore returned cannot leave a data directory with files missing or empty.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Fsyncs every regular file and directory below `root` (and `root` itself), children
/// before their directory; returns how many. Symbolic links are not followed (tablespace
/// links lead to directories the caller syncs on their own).
pub(super) fn sync_tree(root: &Path) -> Result<u64, (PathBuf, io::Error)> {
    let at = |path: &Path| {
        let path = path.to_path_buf();
        move |e| (path, e)
    };
    let meta = std::fs::symlink_metadata(root).map_err(at(root))?;
    let mut synced = 0;
    if meta.is_dir() {
        for entry in std::fs::read_dir(root).map_err(at(root))? {
            synced += sync_tree(&entry.map_err(at(root))?.path())?;
        }
    } else if !meta.is_file() {
        return Ok(0);
    }
    // Read-only is enough for fsync on Linux, and works on the 0600 files of the restore.
    File::open(root).and_then(|file| file.sync_all()).map_err(at(root))?;
    Ok(synced + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_and_directory_is_synced_and_links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("base/1")).unwrap();
        std::fs::write(dir.path().join("base/1/1259"), b"page").unwrap();
        std::os::unix::fs::symlink("/nonexistent/tablespace", dir.path().join("16385")).unwrap();
        // The root, base, base/1 and the file; not the link.
        assert_eq!(sync_tree(dir.path()).unwrap(), 4);
        let (path, _) = sync_tree(&dir.path().join("missing")).unwrap_err();
        assert!(path.ends_with("missing"));
    }
}
