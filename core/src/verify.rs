//! `pgops verify`: is what the repository holds restorable? Every DONE backup's archives
//! are read and each file checked against the backup's manifest; the WAL archive is
//! checked for gaps on every timeline, for the history file of every timeline after the
//! first, and for the WAL each backup needs (begin to end segment).

use crate::backup::catalog::list_backups;
use crate::naming::{self, SegmentPosition, Timeline, WalFileKind, WalSegment};
use crate::pipeline::Compression;
use crate::restore::{is_done, verify_backup};
use crate::store::{Repository, StoreError};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use tokio::runtime::Handle;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupCheck {
    pub id: String,
    pub files_checked: u64,
    /// Whether a manifest was there to check against (Barman Cloud backups have none).
    pub manifest: bool,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineCheck {
    pub timeline: Timeline,
    pub first: WalSegment,
    pub last: WalSegment,
    pub segments: u64,
    /// Missing segments between `first` and `last` (at most 20 named).
    pub gaps: Vec<WalSegment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub backups: Vec<BackupCheck>,
    pub timelines: Vec<TimelineCheck>,
    pub problems: Vec<String>,
}

const MAX_GAPS_NAMED: usize = 20;

/// Segments after `first` up to `last` (on `first`'s timeline) not in `present`.
fn missing_segments(
    first: WalSegment,
    last: WalSegment,
    present: &BTreeSet<SegmentPosition>,
    segment_size: u64,
) -> Vec<WalSegment> {
    let mut missing = Vec::new();
    let mut current = first;
    while current.position < last.position {
        match current.next(segment_size) {
            Some(next) => current = next,
            None => break,
        }
        if !present.contains(&current.position) {
            missing.push(current);
            if missing.len() >= MAX_GAPS_NAMED {
                break;
            }
        }
    }
    missing
}

/// Segment names, for messages.
fn names(segments: &[WalSegment]) -> String {
    segments.iter().map(WalSegment::to_string).collect::<Vec<_>>().join(", ")
}

/// Checks the repository. An error only when the store cannot be read (listing the backups
/// or the WAL); every problem with what it holds is in the report.
pub fn verify(repo: &Repository, runtime: &Handle) -> Result<VerifyReport, StoreError> {
    let backups = runtime.block_on(list_backups(repo))?;
    let segment_size = backups.iter().find_map(|b| b.fields.number("xlog_segment_size")).unwrap_or(16 << 20);

    // The archived WAL, per timeline.
    let mut segments: BTreeMap<Timeline, BTreeSet<SegmentPosition>> = BTreeMap::new();
    let mut histories = BTreeSet::new();
    let wal_prefix = repo.key("wals/");
    for object in runtime.block_on(repo.list("wals/"))? {
        let file_name = object.key.strip_prefix(&wal_prefix).and_then(|k| k.rsplit('/').next()).unwrap_or_default();
        let (name, _) = Compression::split_file_name(file_name);
        match naming::classify(name) {
            Ok(WalFileKind::Segment) => {
                if let Ok(segment) = WalSegment::parse(name) {
                    segments.entry(segment.timeline).or_default().insert(segment.position);
                }
            }
            Ok(WalFileKind::TimelineHistory) => {
                histories.insert(Timeline(u32::from_str_radix(&name[..8], 16).unwrap_or(0)));
            }
            _ => {}
        }
    }
    let mut problems = Vec::new();
    let mut timelines = Vec::new();
    for (&timeline, present) in &segments {
        let (Some(&first), Some(&last)) = (present.first(), present.last()) else { continue };
        let (first, last) = (WalSegment { timeline, position: first }, WalSegment { timeline, position: last });
        let gaps = missing_segments(first, last, present, segment_size);
        if !gaps.is_empty() {
            problems.push(format!("WAL gap on timeline {timeline}: {} missing (first {})", gaps.len(), gaps[0]));
        }
        if timeline > Timeline(1) && !histories.contains(&timeline) {
            problems.push(format!("timeline {timeline} has WAL but no {:08X}.history", timeline.0));
        }
        timelines.push(TimelineCheck { timeline, first, last, segments: present.len() as u64, gaps });
    }

    let mut checks = Vec::new();
    for backup in backups.iter().filter(|b| is_done(b)) {
        let mut check =
            BackupCheck { id: backup.backup_id.clone(), files_checked: 0, manifest: false, problems: vec![] };
        match verify_backup(repo, runtime, &backup.backup_id) {
            Ok((files, manifest)) => (check.files_checked, check.manifest) = (files, manifest),
            Err(e) => check.problems.push(e.to_string()),
        }
        let wal = |key| backup.fields.get(key).map(|name| WalSegment::parse(name).map_err(|e| format!("{key}: {e}")));
        match (wal("begin_wal"), wal("end_wal")) {
            (Some(Ok(begin)), Some(Ok(end))) => {
                let none = BTreeSet::new();
                let present = segments.get(&begin.timeline).unwrap_or(&none);
                let mut needed = missing_segments(begin, end, present, segment_size);
                if !present.contains(&begin.position) {
                    needed.insert(0, begin);
                }
                if !needed.is_empty() {
                    check.problems.push(format!("WAL it needs is missing from the archive: {}", names(&needed)));
                }
            }
            (Some(Err(e)), _) | (_, Some(Err(e))) => check.problems.push(format!("backup.info: {e}")),
            _ => {}
        }
        checks.push(check);
    }
    let ok = problems.is_empty() && checks.iter().all(|c| c.problems.is_empty());
    Ok(VerifyReport { ok, backups: checks, timelines, problems })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_the_missing_segments_between_first_and_last() {
        let segment = |name| WalSegment::parse(name).unwrap();
        let present: BTreeSet<SegmentPosition> =
            ["000000010000000000000001", "000000010000000000000002", "000000010000000000000005"]
                .map(|name| segment(name).position)
                .into();
        let gaps = missing_segments(
            segment("000000010000000000000001"),
            segment("000000010000000000000005"),
            &present,
            16 << 20,
        );
        assert_eq!(names(&gaps), "000000010000000000000003, 000000010000000000000004");
        let first_two = missing_segments(
            segment("000000010000000000000001"),
            segment("000000010000000000000002"),
            &present,
            16 << 20,
        );
        assert!(first_two.is_empty());
    }

    #[test]
    fn a_backup_whose_wal_names_do_not_read_is_a_problem_named_so() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let root = tempfile::tempdir().unwrap();
        let repo = Repository::new(std::sync::Arc::new(crate::store::LocalStore::new(root.path())), "main");
        let info = "status=DONE\nbegin_wal=000000010000000000000002\nend_wal=0000000100000000000000zz\n";
        runtime.block_on(repo.put("base/20261125T020000/backup.info", info.into())).unwrap();
        let report = verify(&repo, runtime.handle()).unwrap();
        assert!(!report.ok);
        let problems = &report.backups[0].problems;
        assert!(
            problems.iter().any(|p| p.contains("end_wal: \"0000000100000000000000zz\" is not a WAL segment")),
            "{problems:?}"
        );
    }
}
