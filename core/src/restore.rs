//! `pgops restore`: a base backup into an empty data directory, every file checked against
//! the backup's manifest (size and CRC-32C), then set up for recovery from the WAL archive
//! (recovery.signal, restore_command, recovery target).

use crate::backup::backup_dir;
use crate::backup::catalog::{list_backups, BackupSummary};
use crate::compression::Compression;
use crate::store::{Repository, StoreError};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// Replay every archived WAL file.
    End,
    /// As typed (Postgres parses it), and as understood here, to choose the backup.
    Time(String, DateTime<Utc>),
    Lsn(String),
    Xid(String),
    Name(String),
    Immediate,
}

#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub pgdata: PathBuf,
    /// `None`: the newest DONE backup that ends before the target.
    pub backup: Option<String>,
    pub target: RecoveryTarget,
    pub target_action: Option<String>,
    pub target_timeline: Option<String>,
    /// Tablespace OID → directory, instead of the location it had.
    pub tablespace_map: BTreeMap<u32, PathBuf>,
    /// restore_command to write (`pgops … wal-fetch %f %p` with the repository settings).
    pub restore_command: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    pub backup_id: String,
    pub files: u64,
    pub bytes: u64,
    /// Files checked against a manifest (Barman Cloud backups have none).
    pub verified: bool,
}

/// Parses a `--target-time` the way a DBA types it: `2026-11-25 07:00:00+00`, with or
/// without fractions, `T` or a space, an offset or `Z` (UTC when none is given).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let normalized = text.trim().replace('T', " ");
    let with_zone = ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.fZ"];
    with_zone.iter().find_map(|f| DateTime::parse_from_str(&normalized, f).ok().map(|t| t.with_timezone(&Utc))).or_else(
        || chrono::NaiveDateTime::parse_from_str(&normalized, "%Y-%m-%d %H:%M:%S%.f").ok().map(|t| t.and_utc()),
    )
}

/// `X/Y` as a number.
fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.split_once('/')?;
    Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
}

/// The backup to restore: the named one (which must be DONE), or the newest DONE one that
/// ended before the target time or LSN.
pub fn choose_backup<'a>(
    backups: &'a [BackupSummary],
    requested: Option<&str>,
    target: &RecoveryTarget,
) -> Result<&'a BackupSummary, String> {
    if let Some(id) = requested.filter(|id| *id != "latest") {
        let backup = backups
            .iter()
            .find(|b| b.backup_id == id)
            .ok_or_else(|| format!("no backup {id} in the repository (pgops list shows the backups there)"))?;
        if backup.status() != "DONE" {
            return Err(format!("backup {id} is {}, not DONE: it cannot be restored", backup.status()));
        }
        return Ok(backup);
    }
    let done: Vec<&BackupSummary> = backups.iter().filter(|b| b.status() == "DONE").collect();
    let ends_before = |b: &BackupSummary| match target {
        RecoveryTarget::Time(_, at) => b.fields.get("end_time").and_then(parse_time).is_some_and(|end| end <= *at),
        RecoveryTarget::Lsn(lsn) => match (b.fields.get("end_xlog").and_then(parse_lsn), parse_lsn(lsn)) {
            (Some(end), Some(target)) => end <= target,
            _ => false,
        },
        _ => true,
    };
    done.iter().rev().find(|b| ends_before(b)).copied().ok_or_else(|| match done.first() {
        None => "the repository has no DONE backup".to_string(),
        Some(oldest) => format!(
            "no DONE backup ends before the recovery target; the oldest ends at {} ({})",
            oldest.fields.get("end_time").unwrap_or("?"),
            oldest.fields.get("end_xlog").unwrap_or("?")
        ),
    })
}

/// Reads an object piece by piece: 8 MiB ranges, several fetched ahead of the one being
/// read, so that download and extraction overlap and memory stays bounded (at most
/// `RANGES_IN_FLIGHT + 1` ranges) whatever the object's size.
struct ObjectReader {
    repo: Repository,
    key: String,
    size: u64,
    runtime: Handle,
    chunk: Bytes,
    next_offset: u64,
    in_flight: VecDeque<JoinHandle<Result<Bytes, StoreError>>>,
}

const RANGE: u64 = 8 * 1024 * 1024;
const RANGES_IN_FLIGHT: usize = 4;

impl ObjectReader {
    fn new(repo: &Repository, key: String, size: u64, runtime: Handle) -> Self {
        let mut reader = ObjectReader {
            repo: repo.clone(),
            key,
            size,
            runtime,
            chunk: Bytes::new(),
            next_offset: 0,
            in_flight: VecDeque::new(),
        };
        reader.fetch_ahead();
        reader
    }

    fn fetch_ahead(&mut self) {
        while self.in_flight.len() < RANGES_IN_FLIGHT && self.next_offset < self.size {
            let (store, key, offset) = (self.repo.store.clone(), self.repo.key(&self.key), self.next_offset);
            let length = RANGE.min(self.size - offset);
            self.next_offset += length;
            self.in_flight.push_back(self.runtime.spawn(async move { store.get_range(&key, offset, length).await }));
        }
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.chunk.is_empty() {
            let Some(next) = self.in_flight.pop_front() else { return Ok(0) };
            self.chunk = self.runtime.block_on(next).map_err(io::Error::other)?.map_err(io::Error::other)?;
            self.fetch_ahead();
            if self.chunk.is_empty() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{} ended early", self.key)));
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// Files a manifest lists: path → (size, CRC-32C as PostgreSQL prints it).
type ManifestFiles = HashMap<String, (u64, String)>;

fn manifest_files(manifest: &[u8]) -> Result<ManifestFiles, String> {
    let json: serde_json::Value =
        serde_json::from_slice(manifest).map_err(|e| format!("backup_manifest is not valid JSON: {e}"))?;
    let files = json["Files"].as_array().ok_or("backup_manifest has no Files")?;
    Ok(files
        .iter()
        .filter_map(|f| {
            Some((
                f["Path"].as_str()?.to_string(),
                (f["Size"].as_u64()?, f["Checksum"].as_str().unwrap_or_default().to_string()),
            ))
        })
        .collect())
}

/// A relative, `..`-free path inside the archive, or an error.
fn safe_relative(path: &Path) -> io::Result<PathBuf> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            _ => return Err(io::Error::other(format!("unsafe path in archive: {}", path.display()))),
        }
    }
    Ok(clean)
}

struct Extracted {
    files: u64,
    bytes: u64,
}

/// Extracts one archive into `dir` (or only reads it when `dir` is `None`), checking each
/// file against `manifest` (paths there start with `manifest_prefix`), and removing the
/// checked ones from it.
fn extract(
    archive: impl Read,
    dir: Option<&Path>,
    manifest_prefix: &str,
    manifest: &mut Option<ManifestFiles>,
    on_file: &mut dyn FnMut(u64),
) -> Result<Extracted, String> {
    let mut done = Extracted { files: 0, bytes: 0 };
    let mut tar = tar::Archive::new(archive);
    for entry in tar.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| format!("reading the archive: {e}"))?;
        let relative = safe_relative(&entry.path().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        let name = relative.to_string_lossy().into_owned();
        let target = dir.map(|d| d.join(&relative));
        match (entry.header().entry_type(), &target) {
            (tar::EntryType::Directory, Some(target)) => {
                std::fs::create_dir_all(target).map_err(|e| format!("{}: {e}", target.display()))?;
            }
            // Tablespace links are made from tablespace_map, where the restore puts them.
            (tar::EntryType::Symlink, Some(target)) if !name.starts_with("pg_tblspc/") => {
                let link = entry.link_name().map_err(|e| e.to_string())?.ok_or("symlink without target")?;
                std::os::unix::fs::symlink(&link, target).map_err(|e| format!("{}: {e}", target.display()))?;
            }
            (tar::EntryType::Regular, target) => {
                let (size, crc) = match target {
                    Some(target) => {
                        if let Some(parent) = target.parent() {
                            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
                        }
                        let mut file =
                            std::fs::File::create(target).map_err(|e| format!("{}: {e}", target.display()))?;
                        checksum_entry(&mut entry, &name, &mut file)?
                    }
                    None => checksum_entry(&mut entry, &name, &mut io::sink())?,
                };
                check_against_manifest(manifest, manifest_prefix, &name, size, crc)?;
                done.files += 1;
                done.bytes += size;
                on_file(size);
            }
            _ => {}
        }
    }
    Ok(done)
}

/// Copies an archive member to `out`; returns its size and CRC-32C.
fn checksum_entry(entry: &mut impl Read, name: &str, out: &mut impl Write) -> Result<(u64, u32), String> {
    let (mut crc, mut size, mut buf) = (0u32, 0u64, vec![0u8; 256 * 1024]);
    loop {
        let n = entry.read(&mut buf).map_err(|e| format!("reading {name} from the archive: {e}"))?;
        if n == 0 {
            return Ok((size, crc));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        size += n as u64;
        out.write_all(&buf[..n]).map_err(|e| format!("writing {name}: {e}"))?;
    }
}

/// Checks a file against the manifest (when there is one) and strikes it off.
fn check_against_manifest(
    manifest: &mut Option<ManifestFiles>,
    manifest_prefix: &str,
    name: &str,
    size: u64,
    crc: u32,
) -> Result<(), String> {
    let Some(expected) = manifest.as_mut() else { return Ok(()) };
    let key = format!("{manifest_prefix}{name}");
    let (want_size, want_crc) =
        expected.remove(&key).ok_or_else(|| format!("{key} is in the archive but not in the backup's manifest"))?;
    let got_crc = hex::encode(crc.to_le_bytes());
    if size != want_size || got_crc != want_crc {
        return Err(format!(
            "{key} does not match the backup's manifest: {size} bytes with CRC-32C {got_crc}, expected {want_size} bytes with {want_crc}"
        ));
    }
    Ok(())
}

/// A backup's archives and manifest, as stored.
pub(crate) struct StoredBackup {
    pub data: Vec<(String, u64)>,
    pub tablespaces: Vec<(String, u64)>,
    pub manifest_bytes: Option<Bytes>,
}

impl StoredBackup {
    pub(crate) fn load(repo: &Repository, runtime: &Handle, backup_id: &str) -> Result<StoredBackup, String> {
        let dir = backup_dir(backup_id);
        let objects = runtime.block_on(repo.list(&format!("{dir}/"))).map_err(|e| e.to_string())?;
        let manifest_bytes =
            runtime.block_on(repo.get(&format!("{dir}/backup_manifest"))).map_err(|e| e.to_string())?;
        let prefix = repo.key(&format!("{dir}/"));
        let mut archives: Vec<(String, u64)> = objects
            .iter()
            .filter_map(|o| Some((o.key.strip_prefix(&prefix)?.to_string(), o.size)))
            .filter(|(name, _)| name.contains(".tar"))
            .collect();
        archives.sort();
        let (data, tablespaces): (Vec<_>, Vec<_>) =
            archives.into_iter().partition(|(name, _)| name.starts_with("data"));
        if data.is_empty() {
            return Err(format!("backup {backup_id} has no data archive in {}", repo.location(&dir)));
        }
        Ok(StoredBackup { data, tablespaces, manifest_bytes })
    }

    pub(crate) fn manifest(&self) -> Result<Option<ManifestFiles>, String> {
        self.manifest_bytes.as_deref().map(manifest_files).transpose()
    }

    /// A decompressing reader over one of the archives.
    pub(crate) fn open(
        repo: &Repository,
        runtime: &Handle,
        backup_id: &str,
        name: &str,
        size: u64,
    ) -> Result<Box<dyn Read>, String> {
        let (_, codec) = Compression::split_file_name(name);
        let reader = ObjectReader::new(repo, format!("{}/{name}", backup_dir(backup_id)), size, runtime.clone());
        codec.reader(reader).map_err(|e| format!("{name}: {e}"))
    }
}

/// The tablespace a `<oid>.tar…` / `<oid>_0001.tar…` archive holds.
fn tablespace_oid(archive: &str) -> Result<u32, String> {
    archive.split(['.', '_']).next().and_then(|o| o.parse().ok()).ok_or_else(|| format!("unexpected archive {archive}"))
}

/// Reads every archive of a backup and checks each file against its manifest, writing
/// nothing. Returns the number of files read and whether there was a manifest.
pub fn verify_backup(repo: &Repository, runtime: &Handle, backup_id: &str) -> Result<(u64, bool), String> {
    let stored = StoredBackup::load(repo, runtime, backup_id)?;
    let mut manifest = stored.manifest()?;
    let verified = manifest.is_some();
    let mut files = 0;
    for (name, size) in &stored.data {
        let archive = StoredBackup::open(repo, runtime, backup_id, name, *size)?;
        files += extract(archive, None, "", &mut manifest, &mut |_| {}).map_err(|e| format!("{name}: {e}"))?.files;
    }
    for (name, size) in &stored.tablespaces {
        let oid = tablespace_oid(name)?;
        let archive = StoredBackup::open(repo, runtime, backup_id, name, *size)?;
        files += extract(archive, None, &format!("pg_tblspc/{oid}/"), &mut manifest, &mut |_| {})
            .map_err(|e| format!("{name}: {e}"))?
            .files;
    }
    if let Some(missing) = manifest.as_ref().and_then(|m| m.keys().min()) {
        return Err(format!("{missing} is in the backup's manifest but in no archive"));
    }
    Ok((files, verified))
}

/// Whether `dir` can receive a restore: missing, or an empty directory.
fn ensure_empty(dir: &Path) -> Result<(), String> {
    match std::fs::read_dir(dir).map(|mut entries| entries.next().is_some()) {
        Ok(true) => {
            Err(format!("{} is not empty: pgops restore writes only into an empty (or new) directory", dir.display()))
        }
        Ok(false) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| format!("{}: {e}", dir.display()))
}

/// `recovery_target_*` and friends for postgresql.auto.conf.
fn recovery_settings(request: &RestoreRequest) -> String {
    let quote = |v: &str| format!("'{}'", v.replace('\'', "''"));
    let mut lines = vec![format!("restore_command = {}", quote(&request.restore_command))];
    match &request.target {
        RecoveryTarget::End => {}
        RecoveryTarget::Time(text, _) => lines.push(format!("recovery_target_time = {}", quote(text))),
        RecoveryTarget::Lsn(lsn) => lines.push(format!("recovery_target_lsn = {}", quote(lsn))),
        RecoveryTarget::Xid(xid) => lines.push(format!("recovery_target_xid = {}", quote(xid))),
        RecoveryTarget::Name(name) => lines.push(format!("recovery_target_name = {}", quote(name))),
        RecoveryTarget::Immediate => lines.push("recovery_target = 'immediate'".into()),
    }
    if let Some(action) = &request.target_action {
        lines.push(format!("recovery_target_action = {}", quote(action)));
    }
    if let Some(timeline) = &request.target_timeline {
        lines.push(format!("recovery_target_timeline = {}", quote(timeline)));
    }
    format!("# Added by pgops restore\n{}\n", lines.join("\n"))
}

/// Restores a backup as `request` says. Nothing is written before the checks that can
/// refuse it (directory not empty, unknown backup, no backup before the target) passed.
/// `on_file` is called with each restored file's size, for progress display.
pub fn restore(
    repo: &Repository,
    runtime: &Handle,
    request: &RestoreRequest,
    on_file: &mut dyn FnMut(u64),
) -> Result<RestoreReport, String> {
    ensure_empty(&request.pgdata)?;
    let backups = runtime.block_on(list_backups(repo)).map_err(|e| format!("{e}. {}", e.hint()))?;
    let backup = choose_backup(&backups, request.backup.as_deref(), &request.target)?;
    let stored = StoredBackup::load(repo, runtime, &backup.backup_id)?;
    let mut manifest = stored.manifest()?;

    create_private_dir(&request.pgdata)?;
    let mut report =
        RestoreReport { backup_id: backup.backup_id.clone(), files: 0, bytes: 0, verified: manifest.is_some() };
    let open = |name: &str, size: u64| StoredBackup::open(repo, runtime, &backup.backup_id, name, size);
    for (name, size) in &stored.data {
        let extracted = extract(open(name, *size)?, Some(&request.pgdata), "", &mut manifest, on_file)
            .map_err(|e| format!("{name}: {e}"))?;
        report.files += extracted.files;
        report.bytes += extracted.bytes;
    }

    // Tablespaces: where tablespace_map says (or --tablespace-map), linked from pg_tblspc.
    let map_path = request.pgdata.join("tablespace_map");
    let mut locations: BTreeMap<u32, PathBuf> = std::fs::read_to_string(&map_path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' ').and_then(|(oid, path)| Some((oid.parse().ok()?, PathBuf::from(path)))))
        .collect();
    locations.extend(request.tablespace_map.clone());
    for (name, size) in &stored.tablespaces {
        let oid = tablespace_oid(name)?;
        let location = locations
            .get(&oid)
            .ok_or_else(|| format!("no location for tablespace {oid}: pass --tablespace-map {oid}=DIR"))?;
        ensure_empty(location)?;
        create_private_dir(location)?;
        let extracted =
            extract(open(name, *size)?, Some(location), &format!("pg_tblspc/{oid}/"), &mut manifest, on_file)
                .map_err(|e| format!("{name}: {e}"))?;
        report.files += extracted.files;
        report.bytes += extracted.bytes;
        let link = request.pgdata.join("pg_tblspc").join(oid.to_string());
        std::fs::create_dir_all(request.pgdata.join("pg_tblspc")).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(location, &link).map_err(|e| format!("{}: {e}", link.display()))?;
    }
    if !locations.is_empty() && map_path.exists() {
        let map: String = locations.iter().map(|(oid, path)| format!("{oid} {}\n", path.display())).collect();
        std::fs::write(&map_path, map).map_err(|e| format!("{}: {e}", map_path.display()))?;
    }
    if let Some(missing) = manifest.as_ref().and_then(|m| m.keys().min()) {
        return Err(format!("{missing} is in the backup's manifest but in no archive"));
    }

    if let Some(bytes) = &stored.manifest_bytes {
        std::fs::write(request.pgdata.join("backup_manifest"), bytes).map_err(|e| e.to_string())?;
    }
    let auto_conf = request.pgdata.join("postgresql.auto.conf");
    let mut conf = std::fs::OpenOptions::new().append(true).create(true).open(&auto_conf).map_err(|e| e.to_string())?;
    conf.write_all(recovery_settings(request).as_bytes()).map_err(|e| e.to_string())?;
    std::fs::write(request.pgdata.join("recovery.signal"), "").map_err(|e| e.to_string())?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::info::InfoFields;

    fn backup(id: &str, status: &str, end_time: &str, end_lsn: &str) -> BackupSummary {
        BackupSummary {
            backup_id: id.into(),
            fields: InfoFields::parse(&format!("status={status}\nend_time={end_time}\nend_xlog={end_lsn}\n")),
            stored_bytes: 1,
        }
    }

    #[test]
    fn chooses_the_newest_done_backup_before_the_target() {
        let backups = [
            backup("20261125T010000", "DONE", "2026-11-25 01:00:05.000000+00:00", "0/3000000"),
            backup("20261125T020000", "DONE", "2026-11-25 02:00:05.000000+00:00", "0/5000000"),
            backup("20261125T030000", "FAILED", "None", "None"),
        ];
        let at = |t: &str| RecoveryTarget::Time(t.into(), parse_time(t).unwrap());
        assert_eq!(choose_backup(&backups, None, &RecoveryTarget::End).unwrap().backup_id, "20261125T020000");
        assert_eq!(choose_backup(&backups, None, &at("2026-11-25 01:30:00+00")).unwrap().backup_id, "20261125T010000");
        assert_eq!(choose_backup(&backups, None, &at("2026-11-25T03:00:00Z")).unwrap().backup_id, "20261125T020000");
        let lsn = RecoveryTarget::Lsn("0/4000000".into());
        assert_eq!(choose_backup(&backups, Some("latest"), &lsn).unwrap().backup_id, "20261125T010000");
        assert!(choose_backup(&backups, None, &at("2026-11-25 00:59:00")).unwrap_err().contains("the oldest ends at"));
        assert!(choose_backup(&backups, Some("20261125T030000"), &RecoveryTarget::End).unwrap_err().contains("FAILED"));
        assert!(choose_backup(&backups, Some("nope"), &RecoveryTarget::End).unwrap_err().contains("no backup nope"));
        assert_eq!(parse_time("2026-11-25 07:00:00.5+01:00").unwrap().to_rfc3339(), "2026-11-25T06:00:00.500+00:00");
    }

    #[test]
    fn recovery_settings_quote_values() {
        let request = RestoreRequest {
            pgdata: "/x".into(),
            backup: None,
            target: RecoveryTarget::Name("before 'drop'".into()),
            target_action: Some("promote".into()),
            target_timeline: None,
            tablespace_map: BTreeMap::new(),
            restore_command: "pgops wal-fetch %f %p".into(),
        };
        assert_eq!(
            recovery_settings(&request),
            "# Added by pgops restore\nrestore_command = 'pgops wal-fetch %f %p'\nrecovery_target_name = 'before ''drop'''\nrecovery_target_action = 'promote'\n"
        );
    }

    #[test]
    fn unsafe_archive_paths_are_refused() {
        assert!(safe_relative(Path::new("../etc/passwd")).is_err());
        assert!(safe_relative(Path::new("/etc/passwd")).is_err());
        assert_eq!(safe_relative(Path::new("./base/1/1259")).unwrap(), PathBuf::from("base/1/1259"));
    }
}
