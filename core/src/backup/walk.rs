//! Which files of a data directory or tablespace go into a base backup: everything except
//! what `pg_basebackup` leaves out (PostgreSQL's basebackup.c), for the same reasons: the
//! contents are rebuilt at startup, belong to the running server only, or come from
//! `pg_backup_stop` instead.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

/// Directories kept in the backup, empty: their contents are reset at startup.
const EXCLUDED_DIRECTORY_CONTENTS: &[&str] =
    &["pg_stat_tmp", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots", "pg_subtrans"];

/// Files never copied: server-private state, or written from `pg_backup_stop`'s result.
const EXCLUDED_FILES: &[&str] = &[
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "backup_label",
    "tablespace_map",
    "backup_manifest",
    "postmaster.pid",
    "postmaster.opts",
    // A backup taken on a standby must not restore as a standby of the original's primary
    // (pgBackRest leaves them out too); a restore writes the signal it needs.
    "standby.signal",
    "recovery.signal",
    crate::backup::owner::INSTANCE_FILE, // this instance's id: a restored copy is another instance
];

/// Relation cache init files start with this; they are rebuilt on startup.
const RELCACHE_INIT_FILE: &str = "pg_internal.init";
/// Temporary files and directories (sorts, hashes) start with this.
const TEMP_FILE_PREFIX: &str = "pgsql_tmp";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    Symlink(PathBuf),
}

/// One entry to back up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where it is on disk.
    pub path: PathBuf,
    /// Its name inside the archive: relative, `/`-separated.
    pub name: String,
    pub kind: EntryKind,
    /// Size when walked (files only): the estimate shown as progress; the archive takes
    /// the size at the time the file is read.
    pub size: u64,
}

/// Walks `root` (a data directory, or a tablespace's version directory) and returns what
/// to back up, in a stable order (directories before their contents, names sorted).
/// Archive names are `prefix` followed by the path below `root`; `skip` lists archive
/// names left out entirely (e.g. `global/pg_control`, sent last).
pub fn walk(root: &Path, prefix: &str, skip: &[&str]) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    walk_dir(root, prefix, skip, &mut entries)?;
    Ok(entries)
}

fn walk_dir(dir: &Path, prefix: &str, skip: &[&str], out: &mut Vec<Entry>) -> io::Result<()> {
    let mut children: Vec<_> = match std::fs::read_dir(dir) {
        Ok(read) => read.collect::<io::Result<_>>()?,
        // Dropped while we walk (a database, a temp directory): nothing to back up.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io::Error::new(e.kind(), format!("could not read directory {}: {e}", dir.display()))),
    };
    children.sort_by_key(|c| c.file_name());
    let names: HashSet<String> = children.iter().map(|c| c.file_name().to_string_lossy().into_owned()).collect();
    let unlogged = unlogged_relations(&names);
    for child in children {
        let file_name = child.file_name().to_string_lossy().into_owned();
        let name = format!("{prefix}{file_name}");
        if is_excluded_file(&file_name) || skip.contains(&name.as_str()) || is_unlogged_fork(&file_name, &unlogged) {
            continue;
        }
        let path = child.path();
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("could not stat {}: {e}", path.display()))),
        };
        let file_type = meta.file_type();
        if name == "pg_wal" {
            // WAL comes from the archive; keep the directory layout Postgres expects, as
            // directories even when pg_wal is a link (`initdb --waldir`), as pg_basebackup
            // does: a restore must never write into the original cluster's WAL directory.
            // PostgreSQL 17+ keeps WAL summaries in pg_wal/summaries: its directory goes too
            // (as pg_basebackup sends it), its contents do not.
            let mut directories =
                vec![("pg_wal", path.clone()), ("pg_wal/archive_status", path.join("archive_status"))];
            if path.join("summaries").is_dir() {
                directories.push(("pg_wal/summaries", path.join("summaries")));
            }
            for (name, path) in directories {
                out.push(Entry { path, name: name.into(), kind: EntryKind::Directory, size: 0 });
            }
        } else if file_type.is_symlink() {
            // Only pg_tblspc holds symlinks that matter; the tablespaces are archived apart.
            let target = std::fs::read_link(&path)?;
            out.push(Entry { path, name, kind: EntryKind::Symlink(target), size: 0 });
        } else if file_type.is_dir() {
            out.push(Entry { path: path.clone(), name: name.clone(), kind: EntryKind::Directory, size: 0 });
            if !EXCLUDED_DIRECTORY_CONTENTS.contains(&file_name.as_str()) {
                walk_dir(&path, &format!("{name}/"), skip, out)?;
            }
        } else if file_type.is_file() {
            out.push(Entry { path, name, kind: EntryKind::File, size: meta.len() });
        }
        // Sockets, FIFOs and devices are not data.
    }
    Ok(())
}

fn is_excluded_file(file_name: &str) -> bool {
    EXCLUDED_FILES.contains(&file_name)
        || file_name.starts_with(RELCACHE_INIT_FILE)
        || file_name.starts_with(TEMP_FILE_PREFIX)
        || is_temp_relation(file_name)
}

/// `t<backend>_<relfilenode>[_fork][.segment]`: a temporary table's file.
fn is_temp_relation(file_name: &str) -> bool {
    let Some(rest) = file_name.strip_prefix('t') else { return false };
    let Some((backend, relation)) = rest.split_once('_') else { return false };
    !backend.is_empty()
        && backend.bytes().all(|b| b.is_ascii_digit())
        && relation.bytes().next().is_some_and(|b| b.is_ascii_digit())
}

/// Splits a relation file name `<relfilenode>[_<fork>][.<segment>]`.
fn relation_file(file_name: &str) -> Option<(&str, Option<&str>)> {
    let base = file_name.split_once('.').map_or(file_name, |(base, segment)| {
        if segment.bytes().all(|b| b.is_ascii_digit()) {
            base
        } else {
            file_name
        }
    });
    let (number, fork) = match base.split_once('_') {
        Some((number, fork)) => (number, Some(fork)),
        None => (base, None),
    };
    (!number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())).then_some((number, fork))
}

/// Relations with an init fork (`<relfilenode>_init`) in this directory: unlogged ones.
fn unlogged_relations(names: &HashSet<String>) -> HashSet<String> {
    names
        .iter()
        .filter_map(|n| n.strip_suffix("_init"))
        .filter(|n| relation_file(n).is_some())
        .map(String::from)
        .collect()
}

/// An unlogged relation's forks other than `_init` are reset from it at startup, as
/// pg_basebackup knows: they are not copied.
fn is_unlogged_fork(file_name: &str, unlogged: &HashSet<String>) -> bool {
    match relation_file(file_name) {
        Some((number, fork)) => fork != Some("init") && unlogged.contains(number),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, name: &str, content: &[u8]) {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    #[test]
    fn leaves_out_what_pg_basebackup_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for name in [
            "PG_VERSION",
            "global/pg_control",
            "global/1262",
            "base/5/1259",
            "base/5/1259.1",
            "base/5/1259_fsm",
            "base/5/16384",
            "base/5/16384_init",
            "base/5/16384_fsm",
            "base/5/16384.1",
            "base/5/t3_16390",
            "base/5/pg_internal.init",
            "base/pgsql_tmp/pgsql_tmp123.0",
            "pg_wal/000000010000000000000001",
            "pg_wal/archive_status/000000010000000000000001.done",
            "pg_wal/summaries/0000000100000000010000280000000001000058.summary",
            "pg_replslot/slot/state",
            "pg_stat_tmp/global.stat",
            "postmaster.pid",
            "postmaster.opts",
            "backup_label",
            "standby.signal",
            "recovery.signal",
            "postgresql.auto.conf",
        ] {
            touch(root, name, b"x");
        }
        std::os::unix::fs::symlink("/somewhere/else", root.join("pg_tblspc_link")).unwrap();
        let entries = walk(root, "", &["global/pg_control"]).unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "PG_VERSION",
                "base",
                "base/5",
                "base/5/1259",
                "base/5/1259.1",
                "base/5/1259_fsm",
                "base/5/16384_init",
                "global",
                "global/1262",
                "pg_replslot",
                "pg_stat_tmp",
                "pg_tblspc_link",
                "pg_wal",
                "pg_wal/archive_status",
                "pg_wal/summaries",
                "postgresql.auto.conf",
            ]
        );
        let link = entries.iter().find(|e| e.name == "pg_tblspc_link").unwrap();
        assert_eq!(link.kind, EntryKind::Symlink("/somewhere/else".into()));
        assert_eq!(entries[0].size, 1);
    }

    #[test]
    fn pg_wal_elsewhere_is_backed_up_as_directories() {
        let dir = tempfile::tempdir().unwrap();
        let wal = tempfile::tempdir().unwrap();
        touch(wal.path(), "archive_status/000000010000000000000001.done", b"");
        touch(wal.path(), "000000010000000000000001", b"x");
        touch(dir.path(), "PG_VERSION", b"15\n");
        std::os::unix::fs::symlink(wal.path(), dir.path().join("pg_wal")).unwrap();
        let entries = walk(dir.path(), "", &[]).unwrap();
        let kinds: Vec<_> = entries.iter().map(|e| (e.name.as_str(), &e.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("PG_VERSION", &EntryKind::File),
                ("pg_wal", &EntryKind::Directory),
                ("pg_wal/archive_status", &EntryKind::Directory)
            ]
        );
    }
}
