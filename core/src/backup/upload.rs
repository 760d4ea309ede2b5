//! Streams tar archives to the store: tar → compression → parts of a multipart upload,
//! with a fixed number of parts in flight, so that memory stays bounded whatever the size
//! of the database (part size × (parts in flight + 1), plus the codec's window).

use crate::pipeline::{Compression, EncodeWriter};
use crate::store::writer::{self, ObjectWriter, WriteFailure};
use crate::store::{Repository, StoreError, MIN_PART_SIZE};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::runtime::Handle;

/// How archives are written.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    pub compression: Compression,
    pub level: i32,
    /// zstd worker threads; 0 compresses on the streaming thread itself.
    pub compression_workers: u32,
    pub part_size: usize,
    pub parts_in_flight: usize,
    /// An archive past this many stored bytes is closed and the next file starts a new
    /// one (`data_0001.tar…`), like Barman Cloud's `--max-archive-size`.
    pub max_archive_size: u64,
}

impl UploadSettings {
    pub fn new(compression: Compression, level: i32) -> Self {
        UploadSettings {
            compression,
            level,
            compression_workers: 0,
            // S3's smallest part, two in flight: ~15 MiB of buffers in all.
            part_size: MIN_PART_SIZE,
            parts_in_flight: 2,
            // 5 MiB parts × 10,000 parts is ~48 GiB, S3's limit for one object this way.
            max_archive_size: 40 << 30,
        }
    }
}

/// Shared between the streaming thread and the one that watches it.
#[derive(Debug, Default)]
pub struct StreamControl {
    /// Bytes of files read so far.
    pub streamed: AtomicU64,
    /// Set to stop the streaming at the next read.
    pub cancel: AtomicBool,
}

/// A stored archive object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// Relative to the backup's directory, e.g. `data.tar.zst`.
    pub name: String,
    pub stored_bytes: u64,
    /// Tar bytes before compression.
    pub tar_bytes: u64,
}

/// A tar archive being written to the store.
pub struct TarUpload {
    name: String,
    builder: tar::Builder<EncodeWriter<ObjectWriter>>,
    failure: WriteFailure,
}

impl TarUpload {
    /// Starts `<base>.tar<ext>` (or `<base>_NNNN.tar<ext>` for `index` > 0) under `dir`.
    pub fn start(
        repo: &Repository,
        dir: &str,
        base: &str,
        index: u32,
        runtime: Handle,
        settings: &UploadSettings,
    ) -> io::Result<TarUpload> {
        let name = archive_name(base, index, settings.compression);
        let sink =
            ObjectWriter::new(repo, format!("{dir}/{name}"), runtime, settings.part_size, settings.parts_in_flight);
        let failure = sink.failure();
        let encoder = EncodeWriter::new(
            sink,
            &format!("{dir}/{name}"),
            settings.compression,
            settings.level,
            settings.compression_workers,
            repo.keys(),
        )?;
        let mut builder = tar::Builder::new(encoder);
        builder.mode(tar::HeaderMode::Complete);
        builder.follow_symlinks(false);
        Ok(TarUpload { name, builder, failure })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes compressed so far: about what the store holds (encryption adds a header and
    /// 16 bytes per 64 KiB).
    pub fn stored_bytes(&self) -> u64 {
        self.builder.get_ref().encoded_bytes()
    }

    pub fn builder(&mut self) -> &mut tar::Builder<impl Write> {
        &mut self.builder
    }

    /// Ends the archive and the object; `Err` carries the store's error when it failed.
    pub fn finish(self) -> Result<StoredObject, UploadError> {
        let mut encoder = self.builder.into_inner().map_err(UploadError::Io)?;
        encoder.flush().map_err(UploadError::Io)?;
        let tar_bytes = encoder.plain_bytes();
        let sink = encoder.finish().map_err(UploadError::Io)?;
        let stored_bytes = sink.finish().map_err(UploadError::Store)?;
        Ok(StoredObject { name: self.name, stored_bytes, tar_bytes })
    }

    /// Drops the archive; a multipart upload in progress is aborted.
    pub fn abort(self) {
        if let Ok(encoder) = self.builder.into_inner() {
            writer::abandon(encoder);
        }
    }

    /// The store error behind a failed write, if that is what failed.
    pub fn store_failure(&mut self) -> Option<StoreError> {
        writer::take_failure(&self.failure)
    }
}

#[derive(Debug)]
pub enum UploadError {
    Io(io::Error),
    Store(StoreError),
}

impl std::fmt::Display for UploadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadError::Io(e) => e.fmt(f),
            UploadError::Store(e) => e.fmt(f),
        }
    }
}

/// Barman Cloud's archive names: `data.tar.gz`, `data_0001.tar.gz`, `16385.tar.gz`.
pub fn archive_name(base: &str, index: u32, compression: Compression) -> String {
    let split = if index > 0 { format!("_{index:04}") } else { String::new() };
    format!("{base}{split}.tar{}", compression.extension())
}

/// Reads a file for the archive: exactly `size` bytes (zero-padded if the file shrank
/// meanwhile, as pg_basebackup does: WAL replay rewrites those pages), computing CRC-32C
/// and counting progress; stops when cancelled.
pub struct BackupFileReader<'a, R> {
    inner: R,
    remaining: u64,
    pub crc32c: u32,
    control: &'a StreamControl,
}

impl<'a, R: Read> BackupFileReader<'a, R> {
    pub fn new(inner: R, size: u64, control: &'a StreamControl) -> Self {
        BackupFileReader { inner, remaining: size, crc32c: 0, control }
    }
}

impl<R: Read> Read for BackupFileReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.control.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("the backup was cancelled"));
        }
        let want = (buf.len() as u64).min(self.remaining) as usize;
        if want == 0 {
            return Ok(0);
        }
        let mut n = loop {
            match self.inner.read(&mut buf[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n == 0 {
            buf[..want].fill(0);
            n = want;
        }
        self.crc32c = crc32c::crc32c_append(self.crc32c, &buf[..n]);
        self.remaining -= n as u64;
        self.control.streamed.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;
    use std::sync::Arc;

    #[test]
    fn names_follow_barman_cloud() {
        assert_eq!(archive_name("data", 0, Compression::Gzip), "data.tar.gz");
        assert_eq!(archive_name("data", 1, Compression::Snappy), "data_0001.tar.snappy");
        assert_eq!(archive_name("16385", 0, Compression::None), "16385.tar");
        assert_eq!(archive_name("data", 0, Compression::Zstd), "data.tar.zst");
    }

    #[test]
    fn reader_pads_a_shrunk_file_and_checksums_what_it_sends() {
        let control = StreamControl::default();
        let mut reader = BackupFileReader::new(&b"abc"[..], 5, &control);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc\0\0");
        assert_eq!(reader.crc32c, crc32c::crc32c(b"abc\0\0"));
        assert_eq!(control.streamed.load(Ordering::Relaxed), 5);
        control.cancel.store(true, Ordering::Relaxed);
        let mut reader = BackupFileReader::new(&b"abc"[..], 3, &control);
        assert!(reader.read_to_end(&mut Vec::new()).is_err());
    }

    /// Several parts, uploaded with parts in flight, assemble into one object that reads
    /// back as the tar that was written.
    #[test]
    fn a_large_archive_goes_up_in_parts_and_reads_back() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::new(Arc::new(LocalStore::new(dir.path())), "repo");
        let settings = UploadSettings { part_size: MIN_PART_SIZE, ..UploadSettings::new(Compression::None, 0) };
        let mut upload = TarUpload::start(&repo, "base/x", "data", 0, runtime.handle().clone(), &settings).unwrap();
        let content: Vec<u8> = (0..(3 * MIN_PART_SIZE + 1234)).map(|i| (i * 7 % 251) as u8).collect();
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o600);
        upload.builder().append_data(&mut header, "big", &content[..]).unwrap();
        let stored = upload.finish().unwrap();
        assert_eq!(stored.name, "data.tar");
        assert_eq!(stored.stored_bytes, stored.tar_bytes);
        let object = std::fs::read(dir.path().join("repo/base/x/data.tar")).unwrap();
        assert_eq!(object.len() as u64, stored.stored_bytes);
        let mut archive = tar::Archive::new(&object[..]);
        let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
        let mut read_back = Vec::new();
        entry.read_to_end(&mut read_back).unwrap();
        assert_eq!(read_back, content);
        // No part files are left next to the object.
        assert_eq!(std::fs::read_dir(dir.path().join("repo/base/x")).unwrap().count(), 1);
    }

    /// Encrypted archives, one PUT (small) or parts (large), are encrypted once and read
    /// back through the pipeline as the tar that was written.
    #[test]
    fn encrypted_archives_small_and_large_read_back() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(crate::pipeline::cipher::test_ring(dir.path(), "key"));
        let repo = Repository::new(Arc::new(LocalStore::new(dir.path())), "repo").with_keys(Some(keys.clone()));
        let settings = UploadSettings::new(Compression::None, 0);
        for (base, size) in [("small", 1000), ("large", 2 * MIN_PART_SIZE + 99)] {
            let mut upload = TarUpload::start(&repo, "base/x", base, 0, runtime.handle().clone(), &settings).unwrap();
            let content: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o600);
            upload.builder().append_data(&mut header, "file", &content[..]).unwrap();
            let stored = upload.finish().unwrap_or_else(|e| panic!("{base}: {e}"));
            let object = std::fs::read(dir.path().join(format!("repo/base/x/{}", stored.name))).unwrap();
            assert_eq!(crate::pipeline::key_of(&object).unwrap(), Some(keys.current()), "{base}");
            let plain = crate::pipeline::decode_reader(
                &object[..],
                &format!("base/x/{}", stored.name),
                Compression::None,
                Some(&keys),
            )
            .unwrap();
            let mut archive = tar::Archive::new(plain);
            let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
            let mut read_back = Vec::new();
            entry.read_to_end(&mut read_back).unwrap();
            assert_eq!(read_back, content, "{base}");
        }
    }
}
