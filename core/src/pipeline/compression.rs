//! Compression codecs, named and suffixed the way Barman Cloud names them, so that its
//! restore tools (which detect compression by file extension only) read what pgops writes.

use crate::InvalidSetting;
use std::io::{self, Read, Write};

/// Input per zstd job when compressing with worker threads.
const PARALLEL_JOB_SIZE: u32 = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Zstd,
    Gzip,
    Lz4,
    Snappy,
}

impl Compression {
    pub const ALL: [Compression; 5] =
        [Compression::Zstd, Compression::Gzip, Compression::Lz4, Compression::Snappy, Compression::None];

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::Lz4 => "lz4",
            Compression::Snappy => "snappy",
        }
    }

    /// The file-name suffix Barman uses for this codec.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd => ".zst",
            Compression::Gzip => ".gz",
            Compression::Lz4 => ".lz4",
            Compression::Snappy => ".snappy",
        }
    }

    pub fn from_name(name: &str) -> Result<Self, InvalidSetting> {
        Self::ALL.into_iter().find(|c| c.name() == name).ok_or_else(|| {
            let names: Vec<_> = Self::ALL.iter().map(|c| c.name()).collect();
            InvalidSetting::new(
                format!("unknown compression \"{name}\""),
                format!("Available values: {}.", names.join(", ")),
            )
        })
    }

    /// Splits a stored file name into the plain name and the codec its suffix names.
    /// A name without a known suffix is uncompressed.
    /// The codec of `file_name`, a stored copy of the file `name`: `None` when its suffix is
    /// not one pgops reads (Barman's `.bz2` or `.xz`, anything else).
    pub fn of_copy(file_name: &str, name: &str) -> Option<Compression> {
        let suffix = file_name.strip_prefix(name)?;
        Self::ALL.into_iter().find(|c| c.extension() == suffix)
    }

    pub fn split_file_name(file_name: &str) -> (&str, Compression) {
        Self::ALL
            .into_iter()
            .filter(|c| *c != Compression::None)
            .find_map(|c| file_name.strip_suffix(c.extension()).map(|base| (base, c)))
            .unwrap_or((file_name, Compression::None))
    }

    /// The level to use: `requested` 0 means the codec's default. Codecs without levels
    /// accept only 0, so that a level that would be ignored is said, not silently dropped.
    pub fn effective_level(self, requested: i32) -> Result<i32, InvalidSetting> {
        let (range, default) = match self {
            Compression::Zstd => (1..=22, 3),
            Compression::Gzip => (1..=9, 6),
            Compression::None | Compression::Lz4 | Compression::Snappy => (0..=0, 0),
        };
        match requested {
            0 => Ok(default),
            level if range.contains(&level) && *range.end() > 0 => Ok(level),
            level if *range.end() == 0 => Err(InvalidSetting::new(
                format!("compression level {level} does not apply to {}", self.name()),
                format!("Set pgops.compression_level to 0: {} has no levels.", self.name()),
            )),
            level => Err(InvalidSetting::new(
                format!("compression level {level} is out of range for {}", self.name()),
                format!("Use 0 (the default, {default}) or {} to {}.", range.start(), range.end()),
            )),
        }
    }

    /// Compresses a whole buffer. `level` must come from [`Compression::effective_level`].
    pub fn compress(self, data: &[u8], level: i32) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(data.len() / 4 + 64);
        let mut writer = self.writer(&mut out, level)?;
        writer.write_all(data)?;
        writer.finish()?;
        Ok(out)
    }

    pub fn decompress(self, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(data.len() * 4);
        self.reader(data)?.read_to_end(&mut out)?;
        Ok(out)
    }

    /// A streaming encoder over `inner`; call [`CompressWriter::finish`] to end the stream.
    pub fn writer<W: Write>(self, inner: W, level: i32) -> io::Result<CompressWriter<W>> {
        self.parallel_writer(inner, level, 0)
    }

    /// Like [`Compression::writer`], with `workers` zstd threads (0: compress on the
    /// calling thread). Only zstd compresses in parallel; other codecs ignore `workers`.
    pub fn parallel_writer<W: Write>(self, inner: W, level: i32, workers: u32) -> io::Result<CompressWriter<W>> {
        Ok(match self {
            Compression::None => CompressWriter::None(inner),
            Compression::Zstd => {
                let mut encoder = zstd::Encoder::new(inner, level)?;
                if workers > 0 {
                    encoder.multithread(workers)?;
                    // zstd's default job is 4 windows (8 MiB at level 3) and it keeps a
                    // few per worker, in and out: 1 MiB jobs bound that to ~8 MiB.
                    encoder.set_parameter(zstd::zstd_safe::CParameter::JobSize(PARALLEL_JOB_SIZE))?;
                }
                CompressWriter::Zstd(encoder)
            }
            Compression::Gzip => {
                CompressWriter::Gzip(flate2::write::GzEncoder::new(inner, flate2::Compression::new(level as u32)))
            }
            Compression::Lz4 => CompressWriter::Lz4(Box::new(lz4_flex::frame::FrameEncoder::new(inner))),
            Compression::Snappy => CompressWriter::Snappy(Box::new(snap::write::FrameEncoder::new(inner))),
        })
    }

    /// A streaming decoder over `inner`.
    pub fn reader<'a, R: Read + 'a>(self, inner: R) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(inner),
            Compression::Zstd => Box::new(zstd::Decoder::new(inner)?),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(inner)),
            Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(inner)),
            Compression::Snappy => Box::new(snap::read::FrameDecoder::new(inner)),
        })
    }
}

/// A streaming encoder for one of the codecs.
pub enum CompressWriter<W: Write> {
    None(W),
    Zstd(zstd::Encoder<'static, W>),
    Gzip(flate2::write::GzEncoder<W>),
    // Boxed: their buffers are inline and much larger than the other encoders.
    Lz4(Box<lz4_flex::frame::FrameEncoder<W>>),
    Snappy(Box<snap::write::FrameEncoder<W>>),
}

impl<W: Write> CompressWriter<W> {
    /// Ends the compressed stream and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            CompressWriter::None(w) => Ok(w),
            CompressWriter::Zstd(e) => e.finish(),
            CompressWriter::Gzip(e) => e.finish(),
            CompressWriter::Lz4(e) => e.finish().map_err(io::Error::other),
            CompressWriter::Snappy(e) => e.into_inner().map_err(|e| e.into_error()),
        }
    }
}

impl<W: Write> CompressWriter<W> {
    /// The writer the compressed bytes go to.
    pub fn get_ref(&self) -> &W {
        match self {
            CompressWriter::None(w) => w,
            CompressWriter::Zstd(e) => e.get_ref(),
            CompressWriter::Gzip(e) => e.get_ref(),
            CompressWriter::Lz4(e) => e.get_ref(),
            CompressWriter::Snappy(e) => e.get_ref(),
        }
    }

    pub fn get_mut(&mut self) -> &mut W {
        match self {
            CompressWriter::None(w) => w,
            CompressWriter::Zstd(e) => e.get_mut(),
            CompressWriter::Gzip(e) => e.get_mut(),
            CompressWriter::Lz4(e) => e.get_mut(),
            CompressWriter::Snappy(e) => e.get_mut(),
        }
    }
}

impl<W: Write> Write for CompressWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            CompressWriter::None(w) => w.write(buf),
            CompressWriter::Zstd(e) => e.write(buf),
            CompressWriter::Gzip(e) => e.write(buf),
            CompressWriter::Lz4(e) => e.write(buf),
            CompressWriter::Snappy(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            CompressWriter::None(w) => w.flush(),
            CompressWriter::Zstd(e) => e.flush(),
            CompressWriter::Gzip(e) => e.flush(),
            CompressWriter::Lz4(e) => e.flush(),
            CompressWriter::Snappy(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        // WAL-like: runs of zeros, some structure, some noise.
        let mut data = vec![0u8; 1 << 20];
        for (i, b) in data.iter_mut().enumerate().take(300_000) {
            *b = (i.wrapping_mul(2654435761) >> 13) as u8;
        }
        data
    }

    #[test]
    fn round_trip_every_codec() {
        let data = sample();
        for c in Compression::ALL {
            let level = c.effective_level(0).unwrap();
            let packed = c.compress(&data, level).unwrap();
            assert_eq!(c.decompress(&packed).unwrap(), data, "{}", c.name());
            if c != Compression::None {
                assert!(packed.len() < data.len(), "{} did not compress", c.name());
            }
        }
    }

    #[test]
    fn corrupt_input_is_an_error() {
        for c in [Compression::Zstd, Compression::Gzip, Compression::Lz4, Compression::Snappy] {
            assert!(c.decompress(b"definitely not compressed data").is_err(), "{}", c.name());
        }
    }

    #[test]
    fn names_and_suffixes_match_barman() {
        assert_eq!(Compression::from_name("zstd").unwrap().extension(), ".zst");
        assert_eq!(
            Compression::split_file_name("000000010000000000000001.zst"),
            ("000000010000000000000001", Compression::Zstd)
        );
        assert_eq!(Compression::split_file_name("00000002.history.gz"), ("00000002.history", Compression::Gzip));
        assert_eq!(
            Compression::split_file_name("000000010000000000000001"),
            ("000000010000000000000001", Compression::None)
        );
        let err = Compression::from_name("brotli").unwrap_err();
        assert!(err.hint.contains("zstd, gzip, lz4, snappy, none"), "{}", err.hint);
    }

    #[test]
    fn levels() {
        assert_eq!(Compression::Zstd.effective_level(0).unwrap(), 3);
        assert_eq!(Compression::Zstd.effective_level(19).unwrap(), 19);
        assert!(Compression::Gzip.effective_level(15).unwrap_err().message.contains("out of range"));
        assert!(Compression::Lz4.effective_level(3).unwrap_err().message.contains("does not apply"));
        assert_eq!(Compression::None.effective_level(0).unwrap(), 0);
    }
}
