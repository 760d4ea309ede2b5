//! A PostgreSQL backup manifest (the `backup_manifest` file pg_basebackup writes), so that
//! `pg_verifybackup` can check a restored pgops backup: every file with its size and
//! CRC-32C, the WAL range the backup needs, and a SHA-256 over the manifest itself.

use sha2::{Digest, Sha256};
use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// Relative to the data directory (tablespace files under `pg_tblspc/<oid>/`).
    pub path: String,
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub modified: i64,
    pub crc32c: u32,
}

/// The manifest format a server of `server_version_num` reads: version 2 (which adds the
/// system identifier) from PostgreSQL 17, version 1 before; pg_verifybackup of 15 and 16
/// rejects version 2.
pub fn manifest_version(server_version_num: u32) -> u32 {
    if server_version_num >= 170000 {
        2
    } else {
        1
    }
}

#[derive(Debug, Clone)]
pub struct WalRange {
    pub timeline: u32,
    pub start_lsn: String,
    pub end_lsn: String,
}

/// Renders the manifest exactly in the layout PostgreSQL writes (one file per line, the
/// checksum line last), which pg_verifybackup's checksum verification depends on.
pub fn render(version: u32, system_identifier: u64, files: &[ManifestFile], wal: &WalRange) -> String {
    let mut text = format!("{{ \"PostgreSQL-Backup-Manifest-Version\": {version},\n");
    if version >= 2 {
        let _ = writeln!(text, "\"System-Identifier\": {system_identifier},");
    }
    text.push_str("\"Files\": [");
    for (i, file) in files.iter().enumerate() {
        let separator = if i == 0 { "\n" } else { ",\n" };
        let modified =
            chrono::DateTime::from_timestamp(file.modified, 0).unwrap_or_default().format("%Y-%m-%d %H:%M:%S GMT");
        let _ = write!(
            text,
            "{separator}{{ \"Path\": {}, \"Size\": {}, \"Last-Modified\": \"{modified}\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{}\" }}",
            serde_json::Value::String(file.path.clone()),
            file.size,
            hex::encode(file.crc32c.to_le_bytes())
        );
    }
    text.push_str(" ],\n\"WAL-Ranges\": [\n");
    let _ = writeln!(
        text,
        "{{ \"Timeline\": {}, \"Start-LSN\": \"{}\", \"End-LSN\": \"{}\" }}",
        wal.timeline, wal.start_lsn, wal.end_lsn
    );
    text.push_str("],\n");
    let checksum = hex::encode(Sha256::digest(text.as_bytes()));
    let _ = writeln!(text, "\"Manifest-Checksum\": \"{checksum}\"}}");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_self_checksum_as_pg_verifybackup_reads_them() {
        let files = vec![
            ManifestFile { path: "PG_VERSION".into(), size: 3, modified: 0, crc32c: crc32c::crc32c(b"15\n") },
            ManifestFile { path: "base/1/\"odd\"".into(), size: 0, modified: 1_700_000_000, crc32c: 0 },
        ];
        let wal = WalRange { timeline: 1, start_lsn: "0/2000028".into(), end_lsn: "0/2000100".into() };
        let text = render(1, 42, &files, &wal);
        // Valid JSON, with the values where pg_verifybackup looks for them.
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["PostgreSQL-Backup-Manifest-Version"], 1);
        assert!(json.get("System-Identifier").is_none());
        assert_eq!(json["Files"][1]["Path"], "base/1/\"odd\"");
        assert_eq!(json["Files"][1]["Last-Modified"], "2023-11-14 22:13:20 GMT");
        // PostgreSQL stores the CRC in memory order (little-endian) as hex.
        assert_eq!(json["Files"][0]["Checksum"], hex::encode(crc32c::crc32c(b"15\n").to_le_bytes()));
        assert_eq!(json["WAL-Ranges"][0]["Start-LSN"], "0/2000028");
        // The checksum covers everything up to the newline before the last line.
        let body_end = text[..text.len() - 1].rfind('\n').unwrap() + 1;
        assert_eq!(json["Manifest-Checksum"], hex::encode(Sha256::digest(&text.as_bytes()[..body_end])));
        assert!(text.ends_with("\"}\n"));

        let v2: serde_json::Value = serde_json::from_str(&render(2, 42, &files, &wal)).unwrap();
        assert_eq!(v2["System-Identifier"], 42);
        assert_eq!((manifest_version(150004), manifest_version(170000)), (1, 2));
    }
}
