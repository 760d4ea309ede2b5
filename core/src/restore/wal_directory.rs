//! pg_wal on a volume of its own (`--waldir`, CNPG's walStorage).

use super::*;
use std::io::{self};
use std::path::{Path, PathBuf};

/// Whether one of two directories is the other or lies below it: made absolute and their
/// `.` and `..` taken lexically (they may not exist yet, so links are not resolved).
pub(super) fn overlap(a: &Path, b: &Path) -> bool {
    let (a, b) = (lexically_absolute(a), lexically_absolute(b));
    a.starts_with(&b) || b.starts_with(&a)
}

fn lexically_absolute(path: &Path) -> PathBuf {
    use std::path::Component;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut normal = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other),
        }
    }
    normal
}

/// pg_wal on its own volume: the restored pg_wal, which holds only an empty
/// archive_status (pgops and Barman leave pg_wal's contents out of a backup; a
/// pg_basebackup `-X fetch` backup holds WAL there, and is refused), becomes a link to
/// `dir`, as `initdb --waldir` makes it. `dir` is made first, so that no moment leaves the
/// data directory without a pg_wal it can use only after the link is there.
pub(super) fn link_wal_directory(pgdata: &Path, dir: &Path) -> Result<(), RestoreError> {
    let pg_wal = pgdata.join("pg_wal");
    // The directories Postgres keeps in pg_wal (summaries: PostgreSQL 17+), made again in
    // `dir`; each must be empty, and nothing else may be there.
    let kept = ["archive_status", "summaries"];
    let entries = |dir: &Path| -> Result<Vec<PathBuf>, RestoreError> {
        match std::fs::read_dir(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            listed => listed
                .map_err(RestoreError::io(dir))?
                .map(|entry| entry.map(|entry| entry.path()).map_err(RestoreError::io(dir)))
                .collect(),
        }
    };
    let mut subdirectories = Vec::new();
    let mut stray = None;
    for path in entries(&pg_wal)? {
        let is_kept = path.file_name().is_some_and(|name| kept.iter().any(|kept| name == *kept)) && path.is_dir();
        match is_kept {
            true => match entries(&path)?.into_iter().next() {
                Some(inside) => stray = stray.or(Some(inside)),
                None => subdirectories.push(path),
            },
            false => stray = stray.or(Some(path)),
        }
    }
    if let Some(path) = stray {
        return Err(RestoreError::refused(
            format!(
                "the restored pg_wal holds {}, which a restore into a WAL directory of its own ({}) does not move",
                path.display(),
                dir.display()
            ),
            "Empty the data directory, then restore without a WAL directory of its own and move pg_wal's contents yourself.",
        ));
    }
    // Checked empty before the restore began; checked again, as hours may have passed.
    ensure_empty(dir)?;
    create_private_dir(&dir.join("archive_status"))?;
    for subdirectory in &subdirectories {
        create_private_dir(&dir.join(subdirectory.file_name().unwrap_or_default()))?;
    }
    create_private_dir(dir)?;
    if let Some(parent) = dir.parent() {
        // The new directory's own entry made durable (sync_tree syncs what lies below dir).
        std::fs::File::open(parent).and_then(|parent| parent.sync_all()).map_err(RestoreError::io(parent))?;
    }
    for empty in subdirectories.iter().chain([&pg_wal]) {
        match std::fs::remove_dir(empty) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(RestoreError::io(empty)(e)),
            _ => {}
        }
    }
    std::os::unix::fs::symlink(dir, &pg_wal).map_err(RestoreError::io(&pg_wal))
}
