//! The one data pipeline every object goes through, in the manner of pgBackRest's filter
//! groups and WAL-G's writer wrappers. Nothing outside this module compresses, encrypts,
//! decompresses or decrypts.
//!
//! ```text
//! write: plain bytes → compress → encrypt (when a key ring is set) → store (PUT or parts;
//!        the driver adds Content-MD5 and the pgops-sha256 metadata)
//! read:  fetch (whole, or ranged and prefetched) → authenticate + decrypt → decompress
//! ```
//!
//! A plain object is exactly what Barman Cloud writes: its codec is the suffix of its
//! name (`.zst`, `.gz`, …), so Barman's tools read it. An encrypted object starts with a
//! one-line header saying what it is, followed by an age stream:
//!
//! ```text
//! pgops-encrypted v1 key=<key id> codec=<zstd|gzip|lz4|snappy|none>\n<age file>
//! ```
//!
//! The header decides how the object is read, not the suffix: an object whose header and
//! suffix disagree was renamed or tampered with and is refused. Inside the encryption the
//! first line repeats the codec and names the object (its path in the repository), so an
//! edited header or an object moved to another name is refused too. A reader with a key ring
//! (an encrypted repository) refuses plain objects, so that objects cannot be swapped for
//! unencrypted ones by whoever administers the store.

pub mod cipher;
pub mod compression;

pub use cipher::{KeyError, KeyId, KeyRing};
pub use compression::Compression;

use bytes::Bytes;
use compression::CompressWriter;
use std::io::{self, BufRead, BufReader, Read, Write};

const MAGIC: &str = "pgops-encrypted v1 ";
/// The first line inside the encryption: what the object is and its name, so that the
/// unauthenticated header cannot be edited, nor an object swapped for another one
/// encrypted to the same key, without the reader noticing.
const INNER_MAGIC: &str = "pgops-object v1";
/// Longer than the age header pgops writes (one X25519 recipient): a longer one is not
/// pgops', and is refused before the age parser reads it.
const MAX_AGE_HEADER: usize = 4096;
/// Longer than any header pgops writes; a reader gives up looking for its end there.
const MAX_HEADER: usize = 128;

/// What an object is, as its header (or, for a plain object, its name) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectFormat {
    pub compression: Compression,
    /// The key it is encrypted to; `None` for a plain object.
    pub key: Option<KeyId>,
}

impl ObjectFormat {
    fn header(compression: Compression, key: KeyId) -> String {
        format!("{MAGIC}key={key} codec={}\n", compression.name())
    }

    /// Reads the header at the start of `stored`. `Ok(None)`: a plain object.
    fn parse_header(stored: &[u8]) -> Result<Option<(ObjectFormat, usize)>, DecodeError> {
        if !stored.starts_with(MAGIC.as_bytes()) {
            return Ok(None);
        }
        let corrupt = || DecodeError::Corrupt("its pgops-encrypted header is malformed".into());
        let end = stored.iter().take(MAX_HEADER).position(|b| *b == b'\n').ok_or_else(corrupt)?;
        let line = std::str::from_utf8(&stored[MAGIC.len()..end]).map_err(|_| corrupt())?;
        let mut key = None;
        let mut compression = None;
        for field in line.split(' ') {
            match field.split_once('=') {
                Some(("key", id)) => key = Some(id.parse::<KeyId>().map_err(|_| corrupt())?),
                Some(("codec", name)) => compression = Some(Compression::from_name(name).map_err(|_| corrupt())?),
                _ => return Err(corrupt()),
            }
        }
        let (Some(key), Some(compression)) = (key, compression) else { return Err(corrupt()) };
        Ok(Some((ObjectFormat { compression, key: Some(key) }, end + 1)))
    }
}

/// Why a stored object cannot be turned back into what was written.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Encrypted to a key the reader's key ring does not hold.
    #[error("it is encrypted with key {0}, which is not in the key ring")]
    KeyMissing(KeyId),
    /// Encrypted, and the reader has no key ring at all.
    #[error("it is encrypted (key {0}) and no encryption key file is configured")]
    KeyNeeded(KeyId),
    /// A plain object in a repository read with a key ring: not what pgops wrote there.
    #[error("it is not encrypted, but the repository is read with an encryption key: pgops never writes plain objects into an encrypted repository")]
    NotEncrypted,
    /// Damaged: authentication, framing or decompression failed.
    #[error("it is damaged: {0}")]
    Corrupt(String),
    /// Reading the stored bytes failed (the store, not the object).
    #[error("{0}")]
    Source(io::Error),
}

/// Compresses and (with `keys`) encrypts a whole object. `level` must come from
/// [`Compression::effective_level`].
/// `name` is the object's path in the repository (`wals/…`, `base/…`).
pub fn encode(
    plain: &[u8],
    name: &str,
    compression: Compression,
    level: i32,
    keys: Option<&KeyRing>,
) -> io::Result<Vec<u8>> {
    let mut writer = EncodeWriter::new(Vec::with_capacity(plain.len() / 4 + 256), name, compression, level, 0, keys)?;
    writer.write_all(plain)?;
    writer.finish()
}

/// The plaintext of the whole stored object at repository path `name`, whose suffix says
/// codec `named` ([`Compression::None`] for objects without codec suffixes).
pub fn decode(stored: Bytes, name: &str, named: Compression, keys: Option<&KeyRing>) -> Result<Bytes, DecodeError> {
    if named == Compression::None && keys.is_none() && ObjectFormat::parse_header(&stored)?.is_none() {
        return Ok(stored);
    }
    let mut plain = Vec::with_capacity(stored.len().saturating_mul(2).min(WHOLE_OBJECT_LIMIT as usize));
    decode_reader(&stored[..], name, named, keys)?.take(WHOLE_OBJECT_LIMIT + 1).read_to_end(&mut plain).map_err(
        |e| match keys {
            None => DecodeError::Corrupt(format!("it does not decompress as {}: {e}", named.name())),
            Some(_) => DecodeError::Corrupt(format!("it does not decrypt and decompress: {e}")),
        },
    )?;
    if plain.len() as u64 > WHOLE_OBJECT_LIMIT {
        return Err(DecodeError::Corrupt(format!(
            "it decodes to more than {} MiB, more than any WAL segment or metadata object pgops reads whole",
            WHOLE_OBJECT_LIMIT >> 20
        )));
    }
    Ok(Bytes::from(plain))
}

/// The most a whole object may decode to: PostgreSQL's largest WAL segment (1 GiB). A
/// crafted object (a zstd bomb) is refused at that size instead of exhausting memory.
pub const WHOLE_OBJECT_LIMIT: u64 = 1 << 30;

/// A reader of the plaintext of a stored object read from `stored`, for objects too large
/// to hold whole. Damage found later while reading is an `io::Error` of the reader.
pub fn decode_reader<'a, R: Read + 'a>(
    stored: R,
    name: &str,
    named: Compression,
    keys: Option<&KeyRing>,
) -> Result<Box<dyn Read + 'a>, DecodeError> {
    let mut stored = BufReader::with_capacity(256 * 1024, stored);
    let start = stored.fill_buf().map_err(DecodeError::Source)?;
    let Some((format, header_len)) = ObjectFormat::parse_header(start)? else {
        if keys.is_some() {
            return Err(DecodeError::NotEncrypted);
        }
        return named.reader(stored).map_err(|e| DecodeError::Corrupt(e.to_string()));
    };
    if format.compression != named {
        return Err(DecodeError::Corrupt(format!(
            "its header says {} but its name says {}",
            format.compression.name(),
            named.name()
        )));
    }
    stored.consume(header_len);
    let key = format.key.expect("a header names its key");
    let keys = keys.ok_or(DecodeError::KeyNeeded(key))?;
    let age_start = stored.fill_buf().map_err(DecodeError::Source)?;
    if age_start.len() >= MAX_AGE_HEADER && !age_start[..MAX_AGE_HEADER].windows(5).any(|w| w == b"\n--- ") {
        return Err(DecodeError::Corrupt("its age header is longer than any pgops writes".into()));
    }
    let decrypted = keys
        .decrypt(key, stored)
        .ok_or(DecodeError::KeyMissing(key))?
        .map_err(|e| DecodeError::Corrupt(format!("decryption failed: {e}")))?;
    let mut plain = BufReader::new(decrypted);
    let mut line = Vec::new();
    (&mut plain)
        .take(MAX_HEADER as u64 + name.len() as u64)
        .read_until(b'\n', &mut line)
        .map_err(|e| DecodeError::Corrupt(format!("decryption failed: {e}")))?;
    let expected = inner_line(format.compression, name);
    if line != expected.as_bytes() {
        let found = String::from_utf8_lossy(&line);
        return Err(DecodeError::Corrupt(format!(
            "it was written as {:?}, not as {:?}: moved or swapped in the store",
            found.trim_end(),
            expected.trim_end()
        )));
    }
    format.compression.reader(plain).map_err(|e| DecodeError::Corrupt(e.to_string()))
}

/// The first line inside the encryption of object `name`.
fn inner_line(compression: Compression, name: &str) -> String {
    format!("{INNER_MAGIC} codec={} name={name}\n", compression.name())
}

/// The key an object is encrypted to, from the first bytes of the object (at least
/// [`HEADER_PEEK`] of them, or all if shorter): `Ok(None)` for a plain object.
pub fn key_of(start: &[u8]) -> Result<Option<KeyId>, DecodeError> {
    Ok(ObjectFormat::parse_header(start)?.and_then(|(format, _)| format.key))
}

/// How many bytes [`key_of`] needs.
pub const HEADER_PEEK: u64 = MAX_HEADER as u64;

/// The encrypting end of the pipeline: an age stream, or the bytes as they are.
enum Sealing<W: Write> {
    Plain(W),
    Encrypted(age::stream::StreamWriter<W>),
}

impl<W: Write> Sealing<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            Sealing::Plain(w) => Ok(w),
            Sealing::Encrypted(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for Sealing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sealing::Plain(w) => w.write(buf),
            Sealing::Encrypted(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sealing::Plain(w) => w.flush(),
            Sealing::Encrypted(w) => w.flush(),
        }
    }
}

/// The writing half of the pipeline as a `Write`: what is written is compressed, then
/// encrypted, then handed to `W` (a buffer, or the parts of a multipart upload).
pub struct EncodeWriter<W: Write> {
    inner: CompressWriter<Counted<Sealing<W>>>,
    /// Bytes written in, before compression.
    plain: u64,
}

/// Counts the bytes handed to the sink, header and encryption overhead included.
struct Counted<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> EncodeWriter<W> {
    /// `workers`: zstd threads (0 compresses on the calling thread). With `keys`, the
    /// header goes out first and the rest is encrypted to the ring's current key.
    pub fn new(
        mut sink: W,
        name: &str,
        compression: Compression,
        level: i32,
        workers: u32,
        keys: Option<&KeyRing>,
    ) -> io::Result<EncodeWriter<W>> {
        let sealing = match keys {
            None => Sealing::Plain(sink),
            Some(keys) => {
                let header = ObjectFormat::header(compression, keys.current());
                sink.write_all(header.as_bytes())?;
                let mut sealed = keys.encrypt(sink)?;
                sealed.write_all(inner_line(compression, name).as_bytes())?;
                Sealing::Encrypted(sealed)
            }
        };
        let inner = compression.parallel_writer(Counted { inner: sealing, count: 0 }, level, workers)?;
        Ok(EncodeWriter { inner, plain: 0 })
    }

    /// Ends compression and encryption and returns the sink.
    pub fn finish(self) -> io::Result<W> {
        self.inner.finish()?.inner.finish()
    }

    /// Bytes handed to the sink so far, after compression (excluding the header and what
    /// the encryption holds back until its chunk is full).
    pub fn encoded_bytes(&self) -> u64 {
        self.inner.get_ref().count
    }

    /// Bytes written in so far (before compression).
    pub fn plain_bytes(&self) -> u64 {
        self.plain
    }
}

impl<W: Write> Write for EncodeWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.plain += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "wals/0000000100000000/000000010000000000000001.zst";

    use cipher::test_ring as ring;

    fn sample() -> Vec<u8> {
        let mut data = b"PLAINTEXT-MARKER ".repeat(20_000);
        data.extend((0..200_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
        data
    }

    #[test]
    fn every_codec_round_trips_plain_and_encrypted() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ring(dir.path(), "k");
        let data = sample();
        for codec in Compression::ALL {
            let level = codec.effective_level(0).unwrap();
            for keys in [None, Some(&keys)] {
                let stored = encode(&data, NAME, codec, level, keys).unwrap();
                assert_eq!(decode(Bytes::from(stored), NAME, codec, keys).unwrap(), data, "{}", codec.name());
            }
        }
    }

    #[test]
    fn plain_objects_are_exactly_barman_codecs() {
        let data = sample();
        let stored = encode(&data, NAME, Compression::Gzip, 6, None).unwrap();
        assert_eq!(Compression::Gzip.decompress(&stored).unwrap(), data);
        assert_eq!(encode(&data, NAME, Compression::None, 0, None).unwrap(), data);
    }

    #[test]
    fn encrypted_objects_hide_the_plaintext_and_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ring(dir.path(), "k");
        let stored = encode(&sample(), NAME, Compression::Zstd, 3, Some(&keys)).unwrap();
        assert!(!stored.windows(16).any(|w| w == b"PLAINTEXT-MARKER"));
        assert!(Compression::Zstd.decompress(&stored).is_err(), "must not read as zstd");
        assert_eq!(key_of(&stored[..HEADER_PEEK as usize]).unwrap(), Some(keys.current()));
        let stored = encode(b"", NAME, Compression::None, 0, Some(&keys)).unwrap();
        assert_eq!(decode(Bytes::from(stored), NAME, Compression::None, Some(&keys)).unwrap(), Bytes::new());
    }

    #[test]
    fn wrong_missing_or_no_key_is_said() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, other) = (ring(dir.path(), "k"), ring(dir.path(), "other"));
        let stored = Bytes::from(encode(b"wal", NAME, Compression::Zstd, 3, Some(&keys)).unwrap());
        let missing = decode(stored.clone(), NAME, Compression::Zstd, Some(&other)).unwrap_err();
        assert!(matches!(missing, DecodeError::KeyMissing(id) if id == keys.current()), "{missing}");
        let needed = decode(stored.clone(), NAME, Compression::Zstd, None).unwrap_err();
        assert!(matches!(needed, DecodeError::KeyNeeded(_)), "{needed}");
        let plain = Bytes::from(encode(b"wal", NAME, Compression::Zstd, 3, None).unwrap());
        assert!(matches!(decode(plain, NAME, Compression::Zstd, Some(&keys)), Err(DecodeError::NotEncrypted)));
        let renamed = decode(stored, NAME, Compression::Gzip, Some(&keys)).unwrap_err();
        assert!(matches!(renamed, DecodeError::Corrupt(_)), "{renamed}");
    }

    #[test]
    fn an_edited_header_or_a_swapped_object_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ring(dir.path(), "k");
        let stored = encode(b"segment one", NAME, Compression::Zstd, 3, Some(&keys)).unwrap();
        let elsewhere = "wals/0000000100000000/000000010000000000000002.zst";
        let swapped = decode(Bytes::from(stored.clone()), elsewhere, Compression::Zstd, Some(&keys)).unwrap_err();
        assert!(swapped.to_string().contains("moved or swapped"), "{swapped}");
        // The header says codec=none, the name loses its suffix: the inner line disagrees.
        let text = String::from_utf8_lossy(&stored[..HEADER_PEEK as usize]).into_owned();
        let header_len = text.find('\n').unwrap() + 1;
        let edited_header = text[..header_len].replace("codec=zstd", "codec=none");
        let mut edited = edited_header.into_bytes();
        edited.extend_from_slice(&stored[header_len..]);
        let unsuffixed = NAME.trim_end_matches(".zst");
        let err = decode(Bytes::from(edited), unsuffixed, Compression::None, Some(&keys)).unwrap_err();
        assert!(matches!(err, DecodeError::Corrupt(_)), "{err}");
        // An age header far longer than pgops writes is refused before it is parsed.
        let mut bloated = stored[..header_len].to_vec();
        bloated.extend(std::iter::repeat_n(b'x', 2 * MAX_AGE_HEADER));
        let err = decode(Bytes::from(bloated), NAME, Compression::Zstd, Some(&keys)).unwrap_err();
        assert!(err.to_string().contains("longer than any pgops writes"), "{err}");
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ring(dir.path(), "k");
        let stored = encode(&sample()[..70_000], NAME, Compression::None, 0, Some(&keys)).unwrap();
        for position in (0..stored.len()).step_by(97).chain([stored.len() - 1]) {
            let mut damaged = stored.clone();
            damaged[position] ^= 0x01;
            assert!(decode(Bytes::from(damaged), NAME, Compression::None, Some(&keys)).is_err(), "byte {position}");
        }
        let truncated = Bytes::copy_from_slice(&stored[..stored.len() - 1]);
        assert!(decode(truncated, NAME, Compression::None, Some(&keys)).is_err(), "truncation");
    }

    #[test]
    fn objects_stay_readable_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let old = ring(dir.path(), "old");
        let stored_old = Bytes::from(encode(b"before", NAME, Compression::Lz4, 0, Some(&old)).unwrap());
        let new_path = dir.path().join("new");
        KeyRing::create_file(&new_path).unwrap();
        let ring_path = dir.path().join("ring");
        let text =
            std::fs::read_to_string(&new_path).unwrap() + &std::fs::read_to_string(dir.path().join("old")).unwrap();
        std::fs::write(&ring_path, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ring_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let rotated = KeyRing::load(&ring_path).unwrap();
        let stored_new = Bytes::from(encode(b"after", NAME, Compression::Lz4, 0, Some(&rotated)).unwrap());
        assert_eq!(key_of(&stored_new).unwrap(), Some(rotated.current()));
        assert_ne!(rotated.current(), old.current());
        assert_eq!(decode(stored_old, NAME, Compression::Lz4, Some(&rotated)).unwrap(), &b"before"[..]);
        assert_eq!(decode(stored_new.clone(), NAME, Compression::Lz4, Some(&rotated)).unwrap(), &b"after"[..]);
        assert!(matches!(decode(stored_new, NAME, Compression::Lz4, Some(&old)), Err(DecodeError::KeyMissing(_))));
    }
}
