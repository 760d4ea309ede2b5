//! `pgops verify`: is what the repository holds restorable? Every DONE backup's archives
//! are read and each file checked against the backup's manifest; the WAL archive is
//! checked for gaps on every timeline, for the history file of every timeline after the
//! first, and for the WAL each backup needs (begin to end segment).

use crate::backup::catalog::list_backups;
use crate::naming::{self, WalFileKind};
use crate::pipeline::Compression;
use crate::restore::verify_backup;
use crate::store::Repository;
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
    pub timeline: u32,
    pub first: String,
    pub last: String,
    pub segments: u64,
    /// Missing segments between `first` and `last` (at most 20 named).
    pub gaps: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub backups: Vec<BackupCheck>,
    pub timelines: Vec<TimelineCheck>,
    pub problems: Vec<String>,
}

const MAX_GAPS_NAMED: usize = 20;

/// Segments between `first` and `last` (inclusive) not in `present`.
fn missing_segments(first: &str, last: &str, present: &BTreeSet<String>, segment_size: u64) -> Vec<String> {
    let mut missing = Vec::new();
    let mut current = first.to_string();
    while current.as_str() < last {
        match naming::next_segment(&current, segment_size) {
            Some(next) => current = next,
            None => break,
        }
        if !present.contains(&current) {
            missing.push(current.clone());
            if missing.len() >= MAX_GAPS_NAMED {
                break;
            }
        }
    }
    missing
}

pub fn verify(repo: &Repository, runtime: &Handle) -> Result<VerifyReport, String> {
    let backups = runtime.block_on(list_backups(repo)).map_err(|e| format!("{e}. {}", e.hint()))?;
    let segment_size = backups.iter().find_map(|b| b.fields.number("xlog_segment_size")).unwrap_or(16 << 20);

    // The archived WAL, per timeline.
    let mut segments: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    let mut histories = BTreeSet::new();
    let wal_prefix = repo.key("wals/");
    for object in runtime.block_on(repo.list("wals/")).map_err(|e| e.to_string())? {
        let file_name = object.key.strip_prefix(&wal_prefix).and_then(|k| k.rsplit('/').next()).unwrap_or_default();
        let (name, _) = Compression::split_file_name(file_name);
        match naming::classify(name) {
            Ok(WalFileKind::Segment) => {
                let timeline = u32::from_str_radix(&name[..8], 16).unwrap_or(0);
                segments.entry(timeline).or_default().insert(name.to_string());
            }
            Ok(WalFileKind::TimelineHistory) => {
                histories.insert(u32::from_str_radix(&name[..8], 16).unwrap_or(0));
            }
            _ => {}
        }
    }
    let mut problems = Vec::new();
    let mut timelines = Vec::new();
    for (timeline, present) in &segments {
        let (first, last) = (present.first().cloned().unwrap_or_default(), present.last().cloned().unwrap_or_default());
        let gaps = missing_segments(&first, &last, present, segment_size);
        if !gaps.is_empty() {
            problems.push(format!("WAL gap on timeline {timeline}: {} missing (first {})", gaps.len(), gaps[0]));
        }
        if *timeline > 1 && !histories.contains(timeline) {
            problems.push(format!("timeline {timeline} has WAL but no {timeline:08X}.history"));
        }
        timelines.push(TimelineCheck { timeline: *timeline, first, last, segments: present.len() as u64, gaps });
    }

    let mut checks = Vec::new();
    for backup in backups.iter().filter(|b| b.status() == "DONE") {
        let mut check =
            BackupCheck { id: backup.backup_id.clone(), files_checked: 0, manifest: false, problems: vec![] };
        match verify_backup(repo, runtime, &backup.backup_id) {
            Ok((files, manifest)) => (check.files_checked, check.manifest) = (files, manifest),
            Err(e) => check.problems.push(e),
        }
        if let (Some(begin), Some(end)) = (backup.fields.get("begin_wal"), backup.fields.get("end_wal")) {
            let timeline = u32::from_str_radix(begin.get(..8).unwrap_or("0"), 16).unwrap_or(0);
            let none = BTreeSet::new();
            let present = segments.get(&timeline).unwrap_or(&none);
            let mut needed = missing_segments(begin, end, present, segment_size);
            if !present.contains(begin) {
                needed.insert(0, begin.to_string());
            }
            if !needed.is_empty() {
                check.problems.push(format!("WAL it needs is missing from the archive: {}", needed.join(", ")));
            }
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
        let present: BTreeSet<String> =
            ["000000010000000000000001", "000000010000000000000002", "000000010000000000000005"]
                .map(String::from)
                .into();
        let gaps = missing_segments("000000010000000000000001", "000000010000000000000005", &present, 16 << 20);
        assert_eq!(gaps, ["000000010000000000000003", "000000010000000000000004"]);
        assert!(missing_segments("000000010000000000000001", "000000010000000000000002", &present, 16 << 20).is_empty());
    }
}
