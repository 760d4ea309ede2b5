//! WAL file names and where Barman Cloud keeps them:
//! `wals/<TLI+log, 16 hex>/<segment>[.partial|.XXXXXXXX.backup]<ext>` and
//! `wals/<TLI>.history<ext>` (see barman/xlog.py `hash_dir`).

use crate::pipeline::Compression;
use serde::Serialize;
use std::fmt;

/// The kinds of file Postgres hands to an archive module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalFileKind {
    Segment,
    /// The last, incomplete segment of an old timeline, archived at promotion.
    Partial,
    /// A backup history file `<segment>.<offset>.backup`.
    BackupHistory,
    /// A timeline history file `<TLI>.history`.
    TimelineHistory,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAWalFile(pub String);

impl fmt::Display for NotAWalFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\" is not a WAL segment, backup history or timeline history file name", self.0)
    }
}

impl std::error::Error for NotAWalFile {}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What kind of WAL file `name` is, or an error for anything else.
pub fn classify(name: &str) -> Result<WalFileKind, NotAWalFile> {
    let bad = || NotAWalFile(name.to_string());
    if let Some(tli) = name.strip_suffix(".history") {
        return if tli.len() == 8 && is_hex(tli) { Ok(WalFileKind::TimelineHistory) } else { Err(bad()) };
    }
    if name.len() < 24 || !is_hex(&name[..24]) {
        return Err(bad());
    }
    match &name[24..] {
        "" => Ok(WalFileKind::Segment),
        ".partial" => Ok(WalFileKind::Partial),
        rest => match rest.strip_prefix('.').and_then(|r| r.strip_suffix(".backup")) {
            Some(offset) if offset.len() == 8 && is_hex(offset) => Ok(WalFileKind::BackupHistory),
            _ => Err(bad()),
        },
    }
}

/// Barman's `hash_dir`: the timeline and log id of a segment-like name; history files
/// live at the root of `wals/`.
pub fn hash_dir(name: &str) -> Result<Option<&str>, NotAWalFile> {
    Ok(match classify(name)? {
        WalFileKind::TimelineHistory => None,
        _ => Some(&name[..16]),
    })
}

/// The directory of `name` relative to the repository: `wals/<hash>/` or `wals/`.
pub fn wal_dir(name: &str) -> Result<String, NotAWalFile> {
    Ok(match hash_dir(name)? {
        Some(dir) => format!("wals/{dir}/"),
        None => "wals/".to_string(),
    })
}

/// Whether `suffix`, after a WAL file's name, makes the name of another WAL file rather
/// than a compression suffix: `.partial` (the segment's partial copy) or
/// `.XXXXXXXX.backup` (a backup history file), each with or without a suffix of its own.
pub fn continues_another_name(suffix: &str) -> bool {
    suffix.starts_with(".partial")
        || suffix
            .strip_prefix('.')
            .and_then(|rest| rest.get(..15))
            .is_some_and(|head| is_hex(&head[..8]) && &head[8..] == ".backup")
}

/// The object key of `name` relative to the repository, stored with `compression`.
pub fn wal_key(name: &str, compression: Compression) -> Result<String, NotAWalFile> {
    Ok(format!("{}{name}{}", wal_dir(name)?, compression.extension()))
}

/// The segment after `name` on the same timeline, for segments of `segment_size` bytes
/// (a segment file's size); `None` when `name` is not a plain segment.
pub fn next_segment(name: &str, segment_size: u64) -> Option<String> {
    Some(WalSegment::parse(name).ok()?.next(segment_size)?.to_string())
}

/// Postgres' archiving order: timeline history files first (a new timeline must be known
/// before its segments are used), then by name, which for segments is WAL order.
pub fn archive_order_key(name: &str) -> (bool, &str) {
    (!name.ends_with(".history"), name)
}

/// A timeline id (`1` for a cluster's first history, one more at each promotion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Timeline(pub u32);

impl fmt::Display for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A WAL location (`pg_lsn`): a byte position in the WAL stream, the same on every
/// timeline. Written as Postgres writes it, `X/Y`: the high and low 32 bits in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

/// Text that is not an LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not an LSN: write it as Postgres shows one, X/Y in hexadecimal (e.g. 0/3000060)")]
pub struct NotAnLsn(pub String);

impl std::str::FromStr for Lsn {
    type Err = NotAnLsn;

    /// As Postgres' `pg_lsn` input: 1 to 8 hex digits, `/`, 1 to 8 hex digits.
    fn from_str(text: &str) -> Result<Lsn, NotAnLsn> {
        let half = |digits: &str| {
            (!digits.is_empty() && digits.len() <= 8 && is_hex(digits))
                .then(|| u64::from_str_radix(digits, 16).ok())
                .flatten()
        };
        text.split_once('/')
            .and_then(|(high, low)| Some(Lsn((half(high)? << 32) | half(low)?)))
            .ok_or_else(|| NotAnLsn(text.to_string()))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Where a segment lies in the WAL, whatever its timeline: the log and segment fields of
/// its name. A new timeline continues the numbering of the one it branched from, so
/// positions of segments on different timelines compare as their WAL positions do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentPosition {
    pub log: u32,
    pub seg: u32,
}

impl SegmentPosition {
    /// The segment holding `lsn`, for segments of `segment_size` bytes (a power of two).
    pub fn of(lsn: Lsn, segment_size: u64) -> SegmentPosition {
        SegmentPosition { log: (lsn.0 >> 32) as u32, seg: ((lsn.0 & 0xFFFF_FFFF) / segment_size.max(1)) as u32 }
    }

    /// The segment before this one; `None` before the first.
    pub fn previous(self, segment_size: u64) -> Option<SegmentPosition> {
        match self.seg {
            0 => Some(SegmentPosition {
                log: self.log.checked_sub(1)?,
                seg: ((1u64 << 32) / segment_size.max(1)).saturating_sub(1) as u32,
            }),
            seg => Some(SegmentPosition { log: self.log, seg: seg - 1 }),
        }
    }
}

/// A WAL segment, named `TTTTTTTTLLLLLLLLSSSSSSSS` (timeline, log, segment; hex).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WalSegment {
    pub timeline: Timeline,
    pub position: SegmentPosition,
}

impl WalSegment {
    /// The segment `name` (exactly 24 hex digits) names.
    pub fn parse(name: &str) -> Result<WalSegment, NotAWalFile> {
        let field = |range: std::ops::Range<usize>| u32::from_str_radix(&name[range], 16).ok();
        match (name.len() == 24 && is_hex(name)).then(|| (field(0..8), field(8..16), field(16..24))) {
            Some((Some(timeline), Some(log), Some(seg))) => {
                Ok(WalSegment { timeline: Timeline(timeline), position: SegmentPosition { log, seg } })
            }
            _ => Err(NotAWalFile(name.to_string())),
        }
    }

    /// The segment after this one on the same timeline, for segments of `segment_size`
    /// bytes (a segment file's size, a power of two); `None` past the end of the WAL.
    pub fn next(self, segment_size: u64) -> Option<WalSegment> {
        if !segment_size.is_power_of_two() {
            return None;
        }
        let segments_per_log = (1u64 << 32) / segment_size;
        let SegmentPosition { log, seg } = self.position;
        let (log, seg) = if u64::from(seg) + 1 >= segments_per_log { (log.checked_add(1)?, 0) } else { (log, seg + 1) };
        Some(WalSegment { timeline: self.timeline, position: SegmentPosition { log, seg } })
    }
}

impl fmt::Display for WalSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}{:08X}{:08X}", self.timeline.0, self.position.log, self.position.seg)
    }
}

impl Serialize for WalSegment {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A stored object of the WAL archive, told by its file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredWal {
    /// A segment, its `.partial` copy or a backup history file `<segment>.<offset>.backup`:
    /// all three belong to `segment`.
    Segment { segment: WalSegment, kind: WalFileKind },
    /// A timeline history file `<TLI>.history`.
    History(Timeline),
}

/// Suffixes Barman Cloud compresses WAL with that pgops does not read, on top of
/// [`Compression`]'s.
const BARMAN_ONLY_SUFFIXES: [&str; 2] = [".bz2", ".xz"];

/// What the stored file `file_name` (a WAL file name plus the suffix of any compression
/// pgops or Barman Cloud uses) holds; `None` for any other name.
pub fn stored_wal(file_name: &str) -> Option<StoredWal> {
    let name = BARMAN_ONLY_SUFFIXES
        .iter()
        .find_map(|suffix| file_name.strip_suffix(suffix))
        .unwrap_or_else(|| Compression::split_file_name(file_name).0);
    match classify(name).ok()? {
        WalFileKind::TimelineHistory => Some(StoredWal::History(Timeline(u32::from_str_radix(&name[..8], 16).ok()?))),
        kind => Some(StoredWal::Segment { segment: WalSegment::parse(&name[..24]).ok()?, kind }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_what_postgres_archives() {
        assert_eq!(classify("000000010000000000000001").unwrap(), WalFileKind::Segment);
        assert_eq!(classify("0000000100000000000000A1.partial").unwrap(), WalFileKind::Partial);
        assert_eq!(classify("000000010000000000000002.00000028.backup").unwrap(), WalFileKind::BackupHistory);
        assert_eq!(classify("00000002.history").unwrap(), WalFileKind::TimelineHistory);
        for bad in
            ["", "00000001", "0000000100000000000000G1", "000000010000000000000001.tmp", "x.history", "0000002.history"]
        {
            assert!(classify(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_follow_barman_layout() {
        assert_eq!(
            wal_key("000000010000000A000000FF", Compression::Zstd).unwrap(),
            "wals/000000010000000A/000000010000000A000000FF.zst"
        );
        assert_eq!(wal_key("00000002.history", Compression::Zstd).unwrap(), "wals/00000002.history.zst");
        assert_eq!(
            wal_key("000000010000000000000002.00000028.backup", Compression::None).unwrap(),
            "wals/0000000100000000/000000010000000000000002.00000028.backup"
        );
        assert_eq!(
            wal_key("000000010000000000000005.partial", Compression::Gzip).unwrap(),
            "wals/0000000100000000/000000010000000000000005.partial.gz"
        );
        assert!(wal_key("../../etc/passwd", Compression::None).is_err());
    }

    #[test]
    fn next_segments_wrap_at_the_log_boundary() {
        let mb16 = 16 << 20;
        assert_eq!(next_segment("000000010000000000000001", mb16).unwrap(), "000000010000000000000002");
        assert_eq!(next_segment("0000000100000000000000FF", mb16).unwrap(), "000000010000000100000000");
        assert_eq!(next_segment("000000020000000A00000FFF", 1 << 20).unwrap(), "000000020000000B00000000");
        assert_eq!(next_segment("00000002.history", mb16), None);
        assert_eq!(next_segment("000000010000000000000001", 1000), None);
    }

    #[test]
    fn history_files_sort_first() {
        let mut names = vec!["000000020000000000000003", "00000002.history", "000000010000000000000002"];
        names.sort_by_key(|n| archive_order_key(n));
        assert_eq!(names, ["00000002.history", "000000010000000000000002", "000000020000000000000003"]);
    }

    #[test]
    fn segments_parse_print_and_order_by_position() {
        let segment = WalSegment::parse("0000000200000001000000FE").unwrap();
        assert_eq!(segment.timeline, Timeline(2));
        assert_eq!(segment.position, SegmentPosition { log: 1, seg: 0xFE });
        assert_eq!(segment.to_string(), "0000000200000001000000FE");
        assert_eq!(WalSegment::parse("0000000200000001000000fe").unwrap(), segment);
        let later_on_timeline_1 = WalSegment::parse("000000010000000200000000").unwrap();
        assert!(later_on_timeline_1.position > segment.position, "positions ignore the timeline");
        for bad in ["", "0000000200000001000000F", "0000000200000001000000FG", "0000000200000001000000FE0"] {
            assert!(WalSegment::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stored_wal_files_are_told_under_every_suffix() {
        let segment = |name: &str| WalSegment::parse(name).unwrap();
        assert_eq!(
            stored_wal("000000010000000000000003.zst"),
            Some(StoredWal::Segment { segment: segment("000000010000000000000003"), kind: WalFileKind::Segment })
        );
        assert_eq!(
            stored_wal("000000010000000000000003.bz2"),
            Some(StoredWal::Segment { segment: segment("000000010000000000000003"), kind: WalFileKind::Segment })
        );
        assert_eq!(
            stored_wal("000000010000000000000003.partial.gz"),
            Some(StoredWal::Segment { segment: segment("000000010000000000000003"), kind: WalFileKind::Partial })
        );
        assert_eq!(
            stored_wal("000000010000000000000003.00000028.backup"),
            Some(StoredWal::Segment { segment: segment("000000010000000000000003"), kind: WalFileKind::BackupHistory })
        );
        assert_eq!(stored_wal("0000000A.history.xz"), Some(StoredWal::History(Timeline(10))));
        for other in ["000000010000000000000003.tmp", "pgops.json", ".000000010000000000000003.zst.pgops-tmp.1.2"] {
            assert_eq!(stored_wal(other), None, "{other}");
        }
    }

    #[test]
    fn lsns_read_and_print_as_postgres_does_and_order_by_position() {
        let lsn = |text: &str| text.parse::<Lsn>();
        assert_eq!(lsn("0/3000060"), Ok(Lsn(0x3000060)));
        assert_eq!(lsn("16/b374d848"), Ok(Lsn(0x16_B374_D848)));
        assert_eq!(lsn("FFFFFFFF/FFFFFFFF"), Ok(Lsn(u64::MAX)));
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert!(lsn("0/5000000").unwrap() > lsn("0/4FFFFFF").unwrap());
        assert!(lsn("1/0").unwrap() > lsn("0/FFFFFFFF").unwrap(), "the high half counts first");
        for bad in ["", "0", "/1", "1/", "0/+1", "1/2/3", "0/123456789", "x/1", " 0/1"] {
            let err = lsn(bad).unwrap_err();
            assert_eq!(err, NotAnLsn(bad.to_string()));
            assert!(err.to_string().contains("X/Y in hexadecimal"), "{err}");
        }
    }
}
