//! A stored backup: its archives and manifest as the repository holds them, checked whole
//! before anything is written (and by `pgops verify`).

use super::extract::{extract, manifest_files, ArchiveKind, ManifestFiles};
use super::*;
use crate::backup::info::BackupRecord;
use crate::backup::{backup_dir, PGOPS_METADATA};
use crate::pipeline::{self, Compression, DecodeError};
use crate::store::reader::ObjectReader;
use crate::store::{Repository, StoreError, StoreErrorKind};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use tokio::runtime::Handle;

/// A backup's archives and manifest, as stored.
pub(crate) struct StoredBackup {
    pub backup_id: String,
    pub data: Vec<StoredArchive>,
    pub tablespaces: Vec<StoredArchive>,
    pub manifest_bytes: Option<Bytes>,
    /// Taken by pgops (it has pgops' metadata object, or pgops' backup label), which
    /// always writes a manifest: one without is damaged.
    pub by_pgops: bool,
    /// Where the backup is, for messages.
    pub(super) location: String,
}

/// One object of a stored backup, as listed.
#[derive(Debug, Clone)]
pub(crate) struct StoredArchive {
    /// Its name in the backup's directory (`data.tar.zst`, `16385_0001.tar`).
    pub name: String,
    /// Its size as listed; read back, it must still be that (else it was rewritten).
    pub size: u64,
}

/// The label pgops gives its backups (`pg_backup_start`), in backup.info's backup_label.
pub(super) const PGOPS_BACKUP_LABEL: &str = "LABEL: pgops backup ";

impl StoredBackup {
    pub(crate) fn load(repo: &Repository, runtime: &Handle, backup_id: &str) -> Result<StoredBackup, RestoreError> {
        let dir = backup_dir(backup_id);
        let objects = runtime.block_on(repo.list(&format!("{dir}/")))?;
        let manifest_bytes = runtime.block_on(repo.get(&format!("{dir}/backup_manifest")))?;
        let info = runtime.block_on(repo.get_metadata(&format!("{dir}/backup.info")))?;
        let record = info.map(|text| BackupRecord::parse(&String::from_utf8_lossy(&text)));
        let labelled_by_pgops = record
            .as_ref()
            .is_some_and(|record| record.text("backup_label").is_some_and(|label| label.contains(PGOPS_BACKUP_LABEL)));
        let prefix = repo.key(&format!("{dir}/"));
        let names: Vec<StoredArchive> = objects
            .into_iter()
            .filter_map(|o| {
                let name = o.key.strip_prefix(&prefix)?.to_string();
                Some(StoredArchive { name, size: o.size })
            })
            .collect();
        let by_pgops = labelled_by_pgops || names.iter().any(|archive| archive.name == PGOPS_METADATA);
        let mut archives: Vec<StoredArchive> = names.into_iter().filter(|o| o.name.contains(".tar")).collect();
        archives.sort_by(|a, b| a.name.cmp(&b.name));
        let (data, tablespaces): (Vec<_>, Vec<_>) = archives.into_iter().partition(|o| o.name.starts_with("data"));
        if data.is_empty() {
            return Err(RestoreError::corrupt(repo.location(&dir), format!("backup {backup_id} has no data archive")));
        }
        check_chunks(&repo.location(&dir), backup_id, data.iter().chain(&tablespaces).map(|o| o.name.as_str()))?;
        let archived: BTreeSet<u32> = tablespaces.iter().map(|o| tablespace_oid(&o.name)).collect::<Result<_, _>>()?;
        let listed = info_tablespace_oids(record.as_ref().and_then(|record| record.text("tablespaces")));
        if let Some(missing) = listed.difference(&archived).next() {
            return Err(RestoreError::corrupt(
                repo.location(&dir),
                format!(
                    "backup {backup_id}'s backup.info lists tablespace {missing}, but the backup has no archive of it \
                     ({missing}.tar…): restored without it, the database would come back without that tablespace's data"
                ),
            ));
        }
        Ok(StoredBackup {
            backup_id: backup_id.to_string(),
            data,
            tablespaces,
            manifest_bytes,
            by_pgops,
            location: repo.location(&dir),
        })
    }

    /// The files to check the archives against: `None` for a backup without a manifest
    /// (Barman Cloud's); an error for a pgops backup whose manifest is missing or fails its
    /// own checksum.
    pub(crate) fn manifest(&self) -> Result<Option<ManifestFiles>, RestoreError> {
        let id = &self.backup_id;
        match &self.manifest_bytes {
            Some(bytes) => {
                manifest_files(bytes).map(Some).map_err(|cause| RestoreError::corrupt(format!("backup {id}"), cause))
            }
            None if self.by_pgops => Err(RestoreError::corrupt(
                &self.location,
                format!(
                    "backup {id} was taken by pgops but its backup_manifest is missing: its files cannot be checked"
                ),
            )),
            None => Ok(None),
        }
    }

    /// Where archive `name` of backup `backup_id` is stored, as messages name it: damage
    /// found while reading an archive is reported against the object, not a bare name
    /// that every backup shares.
    pub(super) fn location(repo: &Repository, backup_id: &str, name: &str) -> String {
        repo.location(&format!("{}/{name}", backup_dir(backup_id)))
    }

    /// A decompressing reader over one of the archives: every range of the version the
    /// store serves when it is opened, which must have the size listed.
    pub(crate) fn open(
        repo: &Repository,
        runtime: &Handle,
        backup_id: &str,
        archive: &StoredArchive,
    ) -> Result<Box<dyn Read>, RestoreError> {
        let name = archive.name.as_str();
        let (_, codec) = Compression::split_file_name(name);
        let relative = format!("{}/{name}", backup_dir(backup_id));
        let location = repo.location(&relative);
        let reader = runtime.block_on(ObjectReader::open(repo, relative.clone(), runtime.clone()))?;
        let reader = match reader {
            Some(reader) if reader.size() == archive.size => reader,
            found => {
                return Err(RestoreError::Store(StoreError {
                    operation: "HeadObject",
                    location,
                    kind: StoreErrorKind::Changed,
                    cause: match found {
                        Some(reader) => format!("{} bytes, not the {} listed", reader.size(), archive.size),
                        None => "deleted since it was listed".into(),
                    },
                }))
            }
        };
        pipeline::decode_reader(reader, &relative, codec, repo.keys()).map_err(|e| match e {
            DecodeError::Source(e) => RestoreError::reading(&repo.location(&relative), "opening the archive", e),
            e => RestoreError::Store(StoreError::undecodable(StoredBackup::location(repo, backup_id, name), e)),
        })
    }
}

/// Whether the archives of a backup are whole: for `data` and each tablespace, the first
/// archive (`data.tar…`, `<oid>.tar…`) and then, past Barman's maximum archive size,
/// `data_0001.tar…`, `data_0002.tar…` without a gap, each once (one compression). A chunk
/// missing from the middle or the start would restore short without a word, for a backup
/// without a manifest (Barman's).
pub(super) fn check_chunks<'a>(
    location: &str,
    backup_id: &str,
    names: impl Iterator<Item = &'a str>,
) -> Result<(), RestoreError> {
    let mut chunks: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for name in names {
        let stem = &name[..name.find(".tar").unwrap_or(name.len())];
        let (base, number) = match stem.split_once('_') {
            Some((base, number)) => match number.parse::<u32>() {
                Ok(number) if number > 0 => (base, number),
                _ => {
                    return Err(RestoreError::corrupt(
                        location,
                        format!("archive {name} is not named as Barman names chunks"),
                    ))
                }
            },
            None => (stem, 0),
        };
        chunks.entry(base).or_default().push(number);
    }
    for (base, mut numbers) in chunks {
        numbers.sort_unstable();
        let expected: Vec<u32> = (0..numbers.len() as u32).collect();
        if numbers != expected {
            let found: Vec<String> = numbers
                .iter()
                .map(|n| if *n == 0 { format!("{base}.tar") } else { format!("{base}_{n:04}.tar") })
                .collect();
            return Err(RestoreError::corrupt(
                location,
                format!(
                    "backup {backup_id}'s archives of {base} are not whole: found {} where {base}.tar and then \
                     {base}_0001.tar, {base}_0002.tar… follow without a gap, each once",
                    found.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The tablespace oids a backup's `backup.info` lists (Barman's
/// `tablespaces=[('name', oid, 'location'), …]`).
pub(super) fn info_tablespace_oids(tablespaces: Option<&str>) -> BTreeSet<u32> {
    let Some(text) = tablespaces else { return BTreeSet::new() };
    // Every `, <digits>, '` is an oid between a name and a location; a name holding that
    // text adds an oid without an archive, which refuses the restore: the careful way.
    text.match_indices(", ")
        .filter_map(|(at, _)| {
            let rest = &text[at + 2..];
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            (digits > 0 && rest[digits..].starts_with(", '")).then(|| rest[..digits].parse().ok()).flatten()
        })
        .collect()
}

/// The tablespace a `<oid>.tar…` / `<oid>_0001.tar…` archive holds.
pub(super) fn tablespace_oid(archive: &str) -> Result<u32, RestoreError> {
    archive.split(['.', '_']).next().and_then(|o| o.parse().ok()).ok_or_else(|| {
        RestoreError::corrupt(archive, "not an archive name pgops knows (data.tar… or <tablespace oid>.tar…)")
    })
}

/// Reads every archive of a backup and checks each file against its manifest, writing
/// nothing. Returns the number of files read and whether there was a manifest.
pub fn verify_backup(repo: &Repository, runtime: &Handle, backup_id: &str) -> Result<(u64, bool), RestoreError> {
    let stored = StoredBackup::load(repo, runtime, backup_id)?;
    let mut manifest = stored.manifest()?;
    let verified = manifest.is_some();
    let mut files = 0;
    for stored_archive in &stored.data {
        let archive = StoredBackup::open(repo, runtime, backup_id, stored_archive)?;
        let location = StoredBackup::location(repo, backup_id, &stored_archive.name);
        files += extract(&location, archive, None, ArchiveKind::Data, &mut manifest, &mut |_| {})?.files;
    }
    for stored_archive in &stored.tablespaces {
        let kind = ArchiveKind::Tablespace(tablespace_oid(&stored_archive.name)?);
        let archive = StoredBackup::open(repo, runtime, backup_id, stored_archive)?;
        let location = StoredBackup::location(repo, backup_id, &stored_archive.name);
        files += extract(&location, archive, None, kind, &mut manifest, &mut |_| {})?.files;
    }
    all_archived(backup_id, &manifest)?;
    Ok((files, verified))
}

/// Whether every file of the manifest came in an archive (each extracted one was struck
/// off).
pub(super) fn all_archived(backup_id: &str, manifest: &Option<ManifestFiles>) -> Result<(), RestoreError> {
    match manifest.as_ref().and_then(|m| m.keys().min()) {
        Some(missing) => Err(RestoreError::corrupt(
            format!("backup {backup_id}"),
            format!("{missing} is in the backup's manifest but in no archive"),
        )),
        None => Ok(()),
    }
}
