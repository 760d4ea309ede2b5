//! Streams tar archives to the store: tar → compression → parts of a multipart upload,
//! with a fixed number of parts in flight, so that memory stays bounded whatever the size
//! of the database (part size × (parts in flight + 1), plus the codec's window).

use crate::pipeline::{Compression, EncodeWriter};
use crate::store::{MultipartUpload, Repository, StoreError, UploadedPart, MAX_PARTS, MIN_PART_SIZE};
use bytes::Bytes;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

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

/// The write end of one object: fills parts and uploads each as it fills.
struct PartSink {
    repo: Repository,
    relative: String,
    runtime: Handle,
    part_size: usize,
    parts_in_flight: usize,
    upload: Option<MultipartUpload>,
    buffer: Vec<u8>,
    next_part: u32,
    in_flight: VecDeque<JoinHandle<Result<UploadedPart, StoreError>>>,
    uploaded: Vec<UploadedPart>,
    written: u64,
    /// The store error behind a failed write, kept whole for the caller (who holds the
    /// sink only through the pipeline's writers).
    failure: Arc<Mutex<Option<StoreError>>>,
}

impl PartSink {
    fn new(repo: &Repository, relative: String, runtime: Handle, settings: &UploadSettings) -> Self {
        PartSink {
            repo: repo.clone(),
            relative,
            runtime,
            part_size: settings.part_size.max(MIN_PART_SIZE),
            parts_in_flight: settings.parts_in_flight.max(1),
            upload: None,
            buffer: Vec::new(),
            next_part: 1,
            in_flight: VecDeque::new(),
            uploaded: Vec::new(),
            written: 0,
            failure: Arc::default(),
        }
    }

    fn fail(&mut self, error: StoreError) -> io::Error {
        let io_error = io::Error::other(error.to_string());
        *self.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(error);
        io_error
    }

    fn wait_oldest(&mut self) -> Result<(), StoreError> {
        if let Some(task) = self.in_flight.pop_front() {
            let part = self.runtime.block_on(task).unwrap_or_else(|e| {
                Err(StoreError {
                    operation: "UploadPart",
                    location: self.repo.location(&self.relative),
                    kind: crate::store::StoreErrorKind::Other,
                    cause: format!("upload task failed: {e}"),
                })
            })?;
            self.uploaded.push(part);
        }
        Ok(())
    }

    fn send_part(&mut self) -> Result<(), StoreError> {
        if self.next_part > MAX_PARTS {
            return Err(StoreError {
                operation: "UploadPart",
                location: self.repo.location(&self.relative),
                kind: crate::store::StoreErrorKind::Other,
                cause: format!("more than {MAX_PARTS} parts: lower the maximum archive size"),
            });
        }
        let upload = match &self.upload {
            Some(upload) => upload.clone(),
            None => {
                let upload = self.runtime.block_on(self.repo.start_multipart(&self.relative))?;
                self.upload = Some(upload.clone());
                upload
            }
        };
        let body = Bytes::from(std::mem::replace(&mut self.buffer, Vec::with_capacity(self.part_size)));
        let store = self.repo.store.clone();
        let number = self.next_part;
        self.next_part += 1;
        self.in_flight.push_back(self.runtime.spawn(async move { store.put_part(&upload, number, body).await }));
        while self.in_flight.len() >= self.parts_in_flight {
            self.wait_oldest()?;
        }
        Ok(())
    }

    /// Uploads what is left and makes the object; a small object is one plain PUT.
    fn finish(mut self) -> Result<u64, StoreError> {
        match self.upload.clone() {
            None => {
                // Already encoded (compressed, encrypted): stored as it is.
                let body = Bytes::from(std::mem::take(&mut self.buffer));
                self.runtime.block_on(self.repo.put_as_is(&self.relative, body))?;
            }
            Some(upload) => {
                let result = (|| {
                    if !self.buffer.is_empty() {
                        self.send_part()?;
                    }
                    while !self.in_flight.is_empty() {
                        self.wait_oldest()?;
                    }
                    self.runtime.block_on(self.repo.store.complete_multipart(&upload, &self.uploaded))
                })();
                if let Err(e) = result {
                    self.abort();
                    return Err(e);
                }
            }
        }
        let stored = self.runtime.block_on(self.repo.head(&self.relative))?;
        match stored {
            Some(meta) if meta.size == self.written => Ok(self.written),
            other => Err(StoreError {
                operation: "verify",
                location: self.repo.location(&self.relative),
                kind: crate::store::StoreErrorKind::Integrity,
                cause: format!(
                    "wrote {} bytes but the store has {}",
                    self.written,
                    other.map_or("no object".to_string(), |m| format!("{} bytes", m.size))
                ),
            }),
        }
    }

    fn abort(&mut self) {
        for task in self.in_flight.drain(..) {
            task.abort();
        }
        if let Some(upload) = self.upload.take() {
            // Best effort: an upload left behind costs storage, not correctness (bucket
            // lifecycle rules clean them; the object never appears).
            let _ = self.runtime.block_on(self.repo.store.abort_multipart(&upload));
        }
    }
}

impl Write for PartSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.part_size - self.buffer.len();
        let taken = room.min(data.len());
        self.buffer.extend_from_slice(&data[..taken]);
        self.written += taken as u64;
        if self.buffer.len() == self.part_size {
            self.send_part().map_err(|e| self.fail(e))?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A tar archive being written to the store.
pub struct TarUpload {
    name: String,
    builder: tar::Builder<EncodeWriter<PartSink>>,
    failure: Arc<Mutex<Option<StoreError>>>,
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
        let sink = PartSink::new(repo, format!("{dir}/{name}"), runtime, settings);
        let failure = sink.failure.clone();
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
            if let Ok(mut sink) = encoder.finish() {
                sink.abort();
            }
        }
    }

    /// The store error behind a failed write, if that is what failed.
    pub fn store_failure(&mut self) -> Option<StoreError> {
        self.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
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
