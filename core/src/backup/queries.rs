//! The SQL a backup runs in its session and how its answers are read, shared by every
//! [`super::BackupHost`]: the extension's worker (SPI) and the CloudNativePG sidecar
//! (libpq). Each query returns one row of one JSON text column.
//!
//! They work on a primary and on a hot standby alike: WAL file names are computed here
//! from the LSN, the timeline and the segment size, since `pg_walfile_name()` refuses to
//! run during recovery.

use super::info::Tablespace;
use super::AnswerError;
use super::{BackupStop, ClusterInfo, WalPosition};
use crate::naming::{Lsn, NotAnLsn, SegmentPosition, Timeline, WalSegment};
use crate::roles::quote;
use chrono::Utc;
use serde::Deserialize;

/// The cluster's facts, and `archive_mode`.
pub const CLUSTER: &str = "SELECT json_build_object(
    'system_identifier', (SELECT system_identifier::text FROM pg_control_system()),
    'server_version_num', current_setting('server_version_num')::int,
    'data_directory', current_setting('data_directory'),
    'config_file', current_setting('config_file'),
    'hba_file', current_setting('hba_file'),
    'ident_file', current_setting('ident_file'),
    'segment_size', (SELECT bytes_per_wal_segment FROM pg_control_init()),
    'data_checksums', current_setting('data_checksums') = 'on',
    'cluster_size', (SELECT sum(pg_database_size(oid))::bigint FROM pg_database),
    'archive_mode', current_setting('archive_mode'),
    'in_recovery', pg_is_in_recovery()
)::text";

/// The tablespaces other than the two built-in ones.
pub const TABLESPACES: &str = "SELECT coalesce(json_agg(json_build_object(
        'name', spcname, 'oid', oid::bigint, 'location', pg_tablespace_location(oid)) ORDER BY oid), '[]')::text
   FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')";

/// The timeline a position of this backup is on: the last checkpoint's (pg_backup_start
/// checkpoints on a primary; on a standby the backup starts at the last restartpoint), or
/// during recovery the one replay must reach.
const TIMELINE: &str = "CASE WHEN pg_is_in_recovery()
        THEN (SELECT min_recovery_end_timeline FROM pg_control_recovery())
        ELSE (SELECT timeline_id FROM pg_control_checkpoint()) END";

/// Non-exclusive `pg_backup_start` with `label`.
pub fn start(label: &str, fast_checkpoint: bool) -> String {
    format!(
        "SELECT json_build_object('lsn', lsn::text, 'timeline', (SELECT timeline_id FROM pg_control_checkpoint()))::text
           FROM pg_backup_start({}, {fast_checkpoint}) AS lsn",
        quote::literal(label)
    )
}

/// `pg_backup_stop` without waiting for WAL archiving (the core waits, bounded).
pub fn stop() -> String {
    format!(
        "SELECT json_build_object('lsn', s.lsn::text, 'timeline', {TIMELINE}, 'label', s.labelfile, 'spcmap', s.spcmapfile)::text
           FROM pg_backup_stop(wait_for_archive => false) AS s"
    )
}

/// Ends a failed backup.
pub const ABORT: &str = "SELECT pg_backup_stop(wait_for_archive => false)";

/// Taken right after `pg_backup_stop` in a statement of its own: see
/// [`BackupStop::end_snapshot`].
pub const END_SNAPSHOT: &str = "SELECT pg_current_snapshot()::text";

fn parse<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, AnswerError> {
    serde_json::from_str(text).map_err(|e| AnswerError { answer: text.to_string(), cause: e.to_string() })
}

#[derive(Deserialize)]
struct ClusterRow {
    system_identifier: String,
    server_version_num: u32,
    data_directory: String,
    config_file: String,
    hba_file: String,
    ident_file: String,
    segment_size: u64,
    data_checksums: bool,
    cluster_size: u64,
    archive_mode: String,
    in_recovery: bool,
}

/// What [`CLUSTER`] says beside the [`ClusterInfo`].
pub struct ServerState {
    pub archive_mode: String,
    pub in_recovery: bool,
}

pub fn cluster(text: &str) -> Result<(ClusterInfo, ServerState), AnswerError> {
    let row: ClusterRow = parse(text)?;
    let cluster = ClusterInfo {
        system_identifier: row
            .system_identifier
            .parse()
            .map_err(|e| AnswerError { answer: text.to_string(), cause: format!("system identifier: {e}") })?,
        server_version_num: row.server_version_num,
        data_directory: row.data_directory.into(),
        config_file: row.config_file,
        hba_file: row.hba_file,
        ident_file: row.ident_file,
        segment_size: row.segment_size,
        data_checksums: row.data_checksums,
        cluster_size: row.cluster_size,
    };
    Ok((cluster, ServerState { archive_mode: row.archive_mode, in_recovery: row.in_recovery }))
}

#[derive(Deserialize)]
struct TablespaceRow {
    name: String,
    oid: u32,
    location: String,
}

pub fn tablespaces(text: &str) -> Result<Vec<Tablespace>, AnswerError> {
    let rows: Vec<TablespaceRow> = parse(text)?;
    Ok(rows.into_iter().map(|t| Tablespace { name: t.name, oid: t.oid, location: t.location }).collect())
}

#[derive(Deserialize)]
struct PositionRow {
    lsn: String,
    timeline: u32,
}

/// `lsn` on `timeline` with its segment file and offset in it.
fn position(row: PositionRow, segment_size: u64) -> Result<WalPosition, AnswerError> {
    let lsn: Lsn =
        row.lsn.parse().map_err(|e: NotAnLsn| AnswerError { answer: row.lsn.clone(), cause: e.to_string() })?;
    let segment = WalSegment { timeline: Timeline(row.timeline), position: SegmentPosition::of(lsn, segment_size) };
    Ok(WalPosition {
        lsn: row.lsn,
        wal: segment.to_string(),
        offset: lsn.0 % segment_size.max(1),
        timeline: row.timeline,
        time: Utc::now(),
    })
}

pub fn started(text: &str, segment_size: u64) -> Result<WalPosition, AnswerError> {
    position(parse(text)?, segment_size)
}

#[derive(Deserialize)]
struct StopRow {
    lsn: String,
    timeline: u32,
    label: String,
    spcmap: Option<String>,
}

/// The stop's answer, `end_snapshot` as [`END_SNAPSHOT`] gave it (if it could).
pub fn stopped(text: &str, segment_size: u64, end_snapshot: Option<String>) -> Result<BackupStop, AnswerError> {
    let row: StopRow = parse(text)?;
    let end = position(PositionRow { lsn: row.lsn, timeline: row.timeline }, segment_size)?;
    Ok(BackupStop { end, backup_label: row.label, tablespace_map: row.spcmap.unwrap_or_default(), end_snapshot })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_name_their_segment_as_postgres_does() {
        let start = started(r#"{"lsn": "1/A2000028", "timeline": 3}"#, 16 << 20).unwrap();
        assert_eq!((start.wal.as_str(), start.offset, start.timeline), ("0000000300000001000000A2", 0x28, 3));
        let stop =
            stopped(r#"{"lsn": "0/3000100", "timeline": 1, "label": "L", "spcmap": null}"#, 1 << 20, None).unwrap();
        assert_eq!((stop.end.wal.as_str(), stop.end.offset), ("000000010000000000000030", 0x100));
        assert!(started(r#"{"lsn": "x", "timeline": 1}"#, 16 << 20).unwrap_err().to_string().contains("not an LSN"));
    }

    #[test]
    fn the_label_is_quoted() {
        assert!(start("it's", true).contains("pg_backup_start('it''s', true)"));
    }
}
