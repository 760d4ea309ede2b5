//! Extracting a backup's tar archives into the target directories, each member checked
//! against the backup's manifest (size and CRC-32C) as it is written.

use super::safe_dir::SafeDir;
use super::*;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

/// Files a manifest lists: path → (size, CRC-32C as PostgreSQL prints it).
pub(super) type ManifestFiles = HashMap<String, (u64, String)>;

/// What is wrong with a `backup_manifest`, or with a file against it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum ManifestProblem {
    #[error("backup_manifest is not valid JSON: {0}")]
    NotJson(String),
    #[error("backup_manifest has no Manifest-Checksum")]
    NoChecksum,
    #[error(
        "backup_manifest fails its own checksum: Manifest-Checksum is {stated}, its text hashes to {computed} (SHA-256); \
         the manifest was changed or damaged, so the files cannot be checked against it"
    )]
    FailsItsChecksum { stated: String, computed: String },
    #[error("backup_manifest has no Files")]
    NoFiles,
    #[error("{0} is in the archive but not in the backup's manifest")]
    NotListed(String),
    #[error(
        "{path} does not match the backup's manifest: {size} bytes with CRC-32C {crc}, expected {want_size} bytes with {want_crc}"
    )]
    Differs { path: String, size: u64, crc: String, want_size: u64, want_crc: String },
}

/// The files of a `backup_manifest`, once its own checksum (`Manifest-Checksum`: SHA-256
/// of the text up to and including the newline before that last line, as pg_verifybackup
/// computes it) matches. The error is the cause, for the caller to say whose manifest.
pub(super) fn manifest_files(manifest: &[u8]) -> Result<ManifestFiles, ManifestProblem> {
    let json: serde_json::Value =
        serde_json::from_slice(manifest).map_err(|e| ManifestProblem::NotJson(e.to_string()))?;
    let stated = json["Manifest-Checksum"].as_str().ok_or(ManifestProblem::NoChecksum)?;
    let penultimate_newline =
        manifest.iter().rposition(|b| *b == b'\n').and_then(|last| manifest[..last].iter().rposition(|b| *b == b'\n'));
    let body = penultimate_newline.map_or(&manifest[..0], |at| &manifest[..=at]);
    let computed = hex::encode(Sha256::digest(body));
    if !computed.eq_ignore_ascii_case(stated) {
        return Err(ManifestProblem::FailsItsChecksum { stated: stated.to_string(), computed });
    }
    let files = json["Files"].as_array().ok_or(ManifestProblem::NoFiles)?;
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

/// A relative, `..`-free path inside `archive` (empty for the archive's root, `./`), or
/// an error.
pub(super) fn safe_relative(archive: &str, path: &Path) -> Result<PathBuf, RestoreError> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            _ => return Err(RestoreError::corrupt(archive, format!("unsafe path in archive: {}", path.display()))),
        }
    }
    Ok(clean)
}

/// Which archive of a backup: the data directory's, or a tablespace's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ArchiveKind {
    Data,
    Tablespace(u32),
}

impl ArchiveKind {
    /// How the manifest names the archive's files.
    fn manifest_prefix(self) -> String {
        match self {
            ArchiveKind::Data => String::new(),
            ArchiveKind::Tablespace(oid) => format!("pg_tblspc/{oid}/"),
        }
    }
}

/// What an archive member becomes on disk.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Member {
    Directory,
    File,
    /// `pg_wal` stored as a link (`initdb --waldir`): a directory of the restored cluster's
    /// own, never a link to the original cluster's WAL.
    WalDirectory,
    /// A tablespace link: the restore makes it from tablespace_map.
    TablespaceLink,
    /// Archive metadata (a pax global header), nothing on disk.
    Nothing,
}

/// What `entry` of `archive` may become; links other than pg_wal and tablespace links,
/// hard links, devices, FIFOs and anything else are refused.
pub(super) fn member(
    archive: &str,
    entry: &tar::Entry<impl Read>,
    relative: &Path,
    kind: ArchiveKind,
) -> Result<Member, RestoreError> {
    let name = relative.display();
    let entry_type = entry.header().entry_type();
    let refused = |cause: String| Err(RestoreError::corrupt(archive, cause));
    if relative.as_os_str().is_empty() {
        // The archive's root (`./`, as Barman's archives begin) is the directory itself.
        return match entry_type {
            tar::EntryType::Directory => Ok(Member::Nothing),
            other => {
                refused(format!("archive member \"{}\" is a {other:?} entry at the archive's root", relative.display()))
            }
        };
    }
    match entry_type {
        tar::EntryType::Directory => Ok(Member::Directory),
        tar::EntryType::Regular => Ok(Member::File),
        tar::EntryType::XGlobalHeader => Ok(Member::Nothing),
        tar::EntryType::Symlink if kind == ArchiveKind::Data && relative == Path::new("pg_wal") => {
            Ok(Member::WalDirectory)
        }
        tar::EntryType::Symlink
            if kind == ArchiveKind::Data
                && relative.parent() == Some(Path::new("pg_tblspc"))
                && relative.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.parse::<u32>().is_ok()) =>
        {
            Ok(Member::TablespaceLink)
        }
        tar::EntryType::Symlink => {
            let target = entry.link_name().ok().flatten().map_or_else(|| "?".into(), |t| t.display().to_string());
            refused(format!(
                "archive member {name} is a symbolic link to {target}: pgops restore makes no link from an archive's \
                 members, so that none can lead outside the target (tablespace links come from tablespace_map, pg_wal \
                 becomes a directory); the backup is refused. If you trust it, restore it with barman-cloud-restore \
                 and check the link yourself"
            ))
        }
        other => refused(format!(
            "archive member {name} is a {other:?} entry: pgops restore writes only directories and regular files \
             (no hard links, devices or FIFOs, which no PostgreSQL backup holds); the backup is refused"
        )),
    }
}

/// The directories of the restore, opened below the root one component at a time (see
/// [`SafeDir`]); the last one is kept, since an archive's files come directory by
/// directory.
pub(super) struct Directories<'a> {
    root: &'a SafeDir,
    last: Option<(PathBuf, SafeDir)>,
}

impl Directories<'_> {
    /// `relative` below the root, created where missing.
    fn open(&mut self, relative: &Path) -> Result<&SafeDir, RestoreError> {
        if relative.as_os_str().is_empty() {
            return Ok(self.root);
        }
        if self.last.as_ref().is_none_or(|(path, _)| path != relative) {
            let mut dir: Option<SafeDir> = None;
            for part in relative.iter() {
                let parent = dir.as_ref().unwrap_or(self.root);
                let next = parent.subdir(part).map_err(RestoreError::io(parent.path()))?;
                dir = Some(next);
            }
            self.last = dir.map(|dir| (relative.to_path_buf(), dir));
        }
        Ok(&self.last.as_ref().expect("opened above").1)
    }
}

#[derive(Debug)]
pub(super) struct Extracted {
    pub(super) files: u64,
    pub(super) bytes: u64,
}

/// Extracts one archive (named `archive_name`, for messages) into `dir` (or only reads it
/// when `dir` is `None`), checking each file against `manifest` and removing the checked
/// ones from it. A file is written under a temporary name and gets its own only once it
/// matched the manifest.
pub(super) fn extract(
    archive_name: &str,
    archive: impl Read,
    dir: Option<&SafeDir>,
    kind: ArchiveKind,
    manifest: &mut Option<ManifestFiles>,
    on_file: &mut dyn FnMut(u64),
) -> Result<Extracted, RestoreError> {
    let mut done = Extracted { files: 0, bytes: 0 };
    let manifest_prefix = kind.manifest_prefix();
    let mut directories = dir.map(|root| Directories { root, last: None });
    let mut tar = tar::Archive::new(EndWatch { inner: archive, ended: false });
    let reading = |e| RestoreError::reading(archive_name, "reading the archive", e);
    for entry in tar.entries().map_err(reading)? {
        let mut entry = entry.map_err(reading)?;
        let relative = safe_relative(archive_name, &entry.path().map_err(reading)?)?;
        let name = relative.to_string_lossy().into_owned();
        let check = |manifest: &mut Option<ManifestFiles>, size, crc| {
            check_against_manifest(manifest, &manifest_prefix, &name, size, crc)
                .map_err(|cause| RestoreError::corrupt(archive_name, cause))
        };
        match (member(archive_name, &entry, &relative, kind)?, directories.as_mut()) {
            (Member::Directory, Some(directories)) => {
                directories.open(&relative)?;
            }
            (Member::WalDirectory, Some(directories)) => {
                directories.open(&Path::new("pg_wal").join("archive_status"))?;
            }
            (Member::File, directories) => {
                let size = match directories {
                    Some(directories) => {
                        let parent = directories.open(relative.parent().unwrap_or(Path::new("")))?;
                        let file_name = relative.file_name().expect("a safe relative path ends with a name");
                        write_checked(archive_name, &mut entry, parent, file_name, &name, |size, crc| {
                            check(manifest, size, crc)
                        })?
                    }
                    None => {
                        let (size, crc) =
                            checksum_entry(archive_name, &mut entry, &name, Path::new(""), &mut io::sink())?;
                        check(manifest, size, crc)?;
                        size
                    }
                };
                done.files += 1;
                done.bytes += size;
                on_file(size);
            }
            _ => {}
        }
    }
    // The tar reader stops at the end-of-archive marker (a zero block) and also, silently,
    // where the stream ends at a member boundary: an archive cut short there (or inside a
    // member, which a backup without a manifest could not tell) would restore short.
    let mut rest = tar.into_inner();
    if rest.ended {
        return Err(RestoreError::corrupt(
            archive_name,
            "the archive ends without tar's end-of-archive marker: it was cut short, and files after the cut are missing",
        ));
    }
    // Read to the end, so that whatever the stream carries after the marker is decoded
    // (and, encrypted, authenticated) too.
    io::copy(&mut rest, &mut io::sink())
        .map_err(|e| RestoreError::reading(archive_name, "reading the archive's end", e))?;
    Ok(done)
}

/// A reader that notes when its source ended (a read returned nothing).
pub(super) struct EndWatch<R> {
    inner: R,
    ended: bool,
}

impl<R: Read> Read for EndWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ended |= n == 0 && !buf.is_empty();
        Ok(n)
    }
}

/// Writes an archive member as `.<file_name>.pgops-partial` in `parent`, lets `check`
/// judge its size and CRC-32C, and only then renames it to `file_name` (which must not
/// exist); a file that fails is removed and never appears under its name. Returns the size.
pub(super) fn write_checked(
    archive_name: &str,
    entry: &mut impl Read,
    parent: &SafeDir,
    file_name: &OsStr,
    name: &str,
    check: impl FnOnce(u64, u32) -> Result<(), RestoreError>,
) -> Result<u64, RestoreError> {
    let mut partial = OsString::from(".");
    partial.push(file_name);
    partial.push(".pgops-partial");
    let partial_path = parent.path().join(&partial);
    let mut file = parent.create_file(&partial).map_err(RestoreError::io(&partial_path))?;
    let written = checksum_entry(archive_name, entry, name, &partial_path, &mut file)
        .and_then(|(size, crc)| check(size, crc).map(|()| size));
    drop(file);
    match written {
        Ok(size) => {
            parent.rename_new(&partial, file_name).map_err(RestoreError::io(&partial_path))?;
            Ok(size)
        }
        Err(e) => match parent.remove_file(&partial) {
            Err(remove) => Err(RestoreError::Io {
                path: partial_path,
                cause: io::Error::new(remove.kind(), format!("could not be removed ({remove}) after: {e}")),
            }),
            Ok(()) => Err(e),
        },
    }
}

/// Copies member `name` of `archive_name` to `out` (the file `out_path`); returns its size
/// and CRC-32C.
pub(super) fn checksum_entry(
    archive_name: &str,
    entry: &mut impl Read,
    name: &str,
    out_path: &Path,
    out: &mut impl Write,
) -> Result<(u64, u32), RestoreError> {
    let (mut crc, mut size, mut buf) = (0u32, 0u64, vec![0u8; 256 * 1024]);
    loop {
        let n = entry
            .read(&mut buf)
            .map_err(|e| RestoreError::reading(archive_name, &format!("reading {name} from the archive"), e))?;
        if n == 0 {
            return Ok((size, crc));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        size += n as u64;
        out.write_all(&buf[..n]).map_err(RestoreError::io(out_path))?;
    }
}

/// Checks a file against the manifest (when there is one) and strikes it off; the error
/// is the mismatch, for the caller to say in which archive.
pub(super) fn check_against_manifest(
    manifest: &mut Option<ManifestFiles>,
    manifest_prefix: &str,
    name: &str,
    size: u64,
    crc: u32,
) -> Result<(), ManifestProblem> {
    let Some(expected) = manifest.as_mut() else { return Ok(()) };
    let key = format!("{manifest_prefix}{name}");
    let Some((want_size, want_crc)) = expected.remove(&key) else { return Err(ManifestProblem::NotListed(key)) };
    let got_crc = hex::encode(crc.to_le_bytes());
    if size != want_size || got_crc != want_crc {
        return Err(ManifestProblem::Differs { path: key, size, crc: got_crc, want_size, want_crc });
    }
    Ok(())
}
