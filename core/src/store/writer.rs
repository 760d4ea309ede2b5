//! The streaming object writer: an object written as `std::io::Write`, cut into the parts
//! of a multipart upload and sent as they fill, a fixed number in flight, so that memory
//! stays bounded (part size × (parts in flight + 1)) whatever the object's size. An object
//! that fits in one part is one plain PUT. Backups' tar archives and WAL segments (up to
//! 1 GiB with `initdb --wal-segsize`) both go through it.

use crate::pipeline::EncodeWriter;
use crate::store::{
    check_stored, MultipartUpload, Repository, SentObject, StoreError, StoreErrorKind, StoredMismatch, UploadedPart,
    MAX_PARTS, MIN_PART_SIZE,
};
use bytes::Bytes;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// The write end of one object at a repository-relative path. Blocking: written from a
/// thread outside the runtime (`spawn_blocking`, a streaming thread), which `runtime`
/// drives the uploads on.
pub(crate) struct ObjectWriter {
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
    /// The store error behind a failed write, kept whole for the caller (who may hold the
    /// writer only through the pipeline's writers).
    failure: Arc<Mutex<Option<StoreError>>>,
}

/// Where the store error behind a failed [`ObjectWriter`] write is kept.
pub(crate) type WriteFailure = Arc<Mutex<Option<StoreError>>>;

/// The store error recorded in `failure`, if a write failed on one.
pub(crate) fn take_failure(failure: &WriteFailure) -> Option<StoreError> {
    failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
}

impl ObjectWriter {
    /// `part_size` is raised to S3's smallest part; `parts_in_flight` to one.
    pub(crate) fn new(
        repo: &Repository,
        relative: String,
        runtime: Handle,
        part_size: usize,
        parts_in_flight: usize,
    ) -> Self {
        let part_size = part_size.max(MIN_PART_SIZE);
        ObjectWriter {
            repo: repo.clone(),
            relative,
            runtime,
            part_size,
            parts_in_flight: parts_in_flight.max(1),
            upload: None,
            buffer: Vec::new(),
            next_part: 1,
            in_flight: VecDeque::new(),
            uploaded: Vec::new(),
            written: 0,
            failure: Arc::default(),
        }
    }

    /// Where a failed write leaves its store error.
    pub(crate) fn failure(&self) -> WriteFailure {
        self.failure.clone()
    }

    fn error(&self, operation: &'static str, kind: StoreErrorKind, cause: String) -> StoreError {
        StoreError { operation, location: self.repo.location(&self.relative), kind, cause }
    }

    fn fail(&mut self, error: StoreError) -> io::Error {
        let io_error = io::Error::other(error.to_string());
        *self.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(error);
        io_error
    }

    fn wait_oldest(&mut self) -> Result<(), StoreError> {
        if let Some(task) = self.in_flight.pop_front() {
            let part = self.runtime.block_on(task).unwrap_or_else(|e| {
                Err(self.error("UploadPart", StoreErrorKind::Other, format!("upload task failed: {e}")))
            })?;
            self.uploaded.push(part);
        }
        Ok(())
    }

    fn send_part(&mut self) -> Result<(), StoreError> {
        if self.next_part > MAX_PARTS {
            return Err(self.error(
                "UploadPart",
                StoreErrorKind::Other,
                format!("more than {MAX_PARTS} parts: lower the maximum archive size"),
            ));
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

    /// Uploads what is left, makes the object and checks what the store then holds; returns
    /// the bytes stored. A one-part object is a plain PUT, compared with what was sent
    /// (size, and MD5 / SHA-256 where the store gives them); a multipart object is
    /// compared by size, each part having been checked on receipt (Content-MD5).
    pub(crate) fn finish(mut self) -> Result<u64, StoreError> {
        let sent = match self.upload.clone() {
            None => {
                let body = Bytes::from(std::mem::take(&mut self.buffer));
                let sent = SentObject::of(&body);
                // Already encoded (compressed, encrypted): stored as it is.
                self.runtime.block_on(self.repo.put_as_is(&self.relative, body))?;
                Some(sent)
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
                None
            }
        };
        let stored = self.runtime.block_on(self.repo.head(&self.relative))?;
        let checked = match (&stored, sent) {
            (None, _) => Err(StoredMismatch::Missing),
            (Some(meta), Some(sent)) => check_stored(&sent, meta),
            (Some(meta), None) if meta.size != self.written => {
                Err(StoredMismatch::Size { stored: meta.size, sent: self.written })
            }
            (Some(_), None) => Ok(()),
        };
        checked.map_err(|mismatch| self.error("verify", StoreErrorKind::Integrity, mismatch.to_string()))?;
        Ok(self.written)
    }

    /// Drops the object: parts in flight are cancelled and a multipart upload is aborted.
    pub(crate) fn abort(&mut self) {
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

impl Write for ObjectWriter {
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

/// Drops an object written through the pipeline's encoder: what the encoder holds back is
/// let go, and the object's multipart upload, if one started, is aborted.
pub(crate) fn abandon(encoder: EncodeWriter<ObjectWriter>) {
    if let Ok(mut sink) = encoder.finish() {
        sink.abort();
    }
}
