//! Tablespaces: restored where tablespace_map (or --tablespace-map) says, linked from
//! pg_tblspc.

use super::extract::{extract, ArchiveKind, ManifestFiles};
use super::stored::{tablespace_oid, StoredBackup};
use super::*;
use crate::store::Repository;
use std::collections::{BTreeMap, BTreeSet};
use tokio::runtime::Handle;

/// Tablespaces: where tablespace_map says (or --tablespace-map), linked from pg_tblspc.
pub(super) fn restore_tablespaces(
    repo: &Repository,
    runtime: &Handle,
    request: &RestoreRequest,
    stored: &StoredBackup,
    manifest: &mut Option<ManifestFiles>,
    report: &mut RestoreReport,
    on_file: &mut dyn FnMut(u64),
) -> Result<(), RestoreError> {
    let map_path = request.pgdata.join("tablespace_map");
    // Where the backup says each tablespace was: only a suggestion. Whoever can write the
    // repository writes this file, so writing there could put files anywhere the restoring
    // user may write; every location comes from --tablespace-map.
    let backed_up: BTreeMap<u32, String> = std::fs::read_to_string(&map_path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' ').and_then(|(oid, path)| Some((oid.parse().ok()?, path.to_string()))))
        .collect();
    let locations = request.tablespace_map.clone();
    let archived: BTreeSet<u32> =
        stored.tablespaces.iter().map(|o| tablespace_oid(&o.name)).collect::<Result<_, _>>()?;
    if let Some((oid, path)) = backed_up.iter().find(|(oid, _)| !archived.contains(oid)) {
        return Err(RestoreError::corrupt(
            &stored.location,
            format!(
                "the backup's tablespace_map names tablespace {oid} (at {path}), but backup {} has no archive of it: \
                 restored without it, the database would come back without that tablespace's data, and Postgres would \
                 link {path} itself",
                stored.backup_id
            ),
        ));
    }
    let mut restored = BTreeMap::new();
    for stored_archive in &stored.tablespaces {
        let oid = tablespace_oid(&stored_archive.name)?;
        let location = locations.get(&oid).ok_or_else(|| match backed_up.get(&oid) {
            Some(path) => RestoreError::refused(
                format!(
                    "tablespace {oid} was at {path} (the backup's tablespace_map says so, and the repository is not trusted to choose where files go)"
                ),
                format!("Pass --tablespace-map {oid}=DIR, with {path} or another directory."),
            ),
            None => RestoreError::refused(
                format!("no location for tablespace {oid}"),
                format!("Pass --tablespace-map {oid}=DIR."),
            ),
        })?;
        if !location.is_absolute() {
            return Err(RestoreError::refused(
                format!("tablespace {oid}'s location {} is not absolute", location.display()),
                format!("Pass --tablespace-map {oid}=/absolute/dir."),
            ));
        }
        // The first archive of a tablespace (they come in order: `<oid>.tar` before its chunks).
        if restored.insert(oid, location.clone()).is_none() {
            ensure_empty(location)?;
            create_private_dir(location)?;
        }
        let dir = SafeDir::open_root(location).map_err(RestoreError::io(location))?;
        let archive = StoredBackup::open(repo, runtime, &stored.backup_id, stored_archive)?;
        let object = StoredBackup::location(repo, &stored.backup_id, &stored_archive.name);
        let extracted = extract(&object, archive, Some(&dir), ArchiveKind::Tablespace(oid), manifest, on_file)?;
        report.files += extracted.files;
        report.bytes += extracted.bytes;
        let links = request.pgdata.join("pg_tblspc");
        std::fs::create_dir_all(&links).map_err(RestoreError::io(&links))?;
        let link = links.join(oid.to_string());
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(location, &link).map_err(RestoreError::io(&link))?;
    }
    // Postgres makes the links tablespace_map names: it names only the locations given
    // here, never one the repository said (on a clone next to production, that would be
    // production's tablespace).
    if map_path.exists() {
        match restored.is_empty() {
            true => std::fs::remove_file(&map_path).map_err(RestoreError::io(&map_path))?,
            false => {
                let map: String = restored.iter().map(|(oid, path)| format!("{oid} {}\n", path.display())).collect();
                std::fs::write(&map_path, map).map_err(RestoreError::io(&map_path))?;
            }
        }
    }
    Ok(())
}
