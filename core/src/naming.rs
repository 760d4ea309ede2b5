//! WAL file names and where Barman Cloud keeps them:
//! `wals/<TLI+log, 16 hex>/<segment>[.partial|.XXXXXXXX.backup]<ext>` and
//! `wals/<TLI>.history<ext>` (see barman/xlog.py `hash_dir`).

use crate::compression::Compression;
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
    if classify(name).ok()? != WalFileKind::Segment || !segment_size.is_power_of_two() {
        return None;
    }
    let field = |range: std::ops::Range<usize>| u32::from_str_radix(&name[range], 16).ok();
    let (tli, log, seg) = (field(0..8)?, field(8..16)?, field(16..24)?);
    let segments_per_log = (1u64 << 32) / segment_size;
    let (log, seg) = if u64::from(seg) + 1 >= segments_per_log { (log.checked_add(1)?, 0) } else { (log, seg + 1) };
    Some(format!("{tli:08X}{log:08X}{seg:08X}"))
}

/// Postgres' archiving order: timeline history files first (a new timeline must be known
/// before its segments are used), then by name, which for segments is WAL order.
pub fn archive_order_key(name: &str) -> (bool, &str) {
    (!name.ends_with(".history"), name)
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
}
