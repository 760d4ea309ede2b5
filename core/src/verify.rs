//! `pgops verify`: is what the repository holds restorable? Every DONE backup's archives
//! are read and each file checked against the backup's manifest; the WAL archive is
//! checked for the history file of every timeline after the first, for the WAL each
//! backup needs to be consistent (begin to end segment) and, for every backup not kept
//! `standalone`, for the WAL to restore it to the newest point: from its begin through its
//! timeline up to the newest segment or the point a later timeline left it (read from the
//! history files), and on through those later timelines. A gap nobody needs (before every
//! backup, or between a standalone backup's WAL and the rest) is listed, not a problem.

use crate::backup::catalog::list_backups;
use crate::naming::{self, Lsn, SegmentPosition, Timeline, WalFileKind, WalSegment};
use crate::ownership::{self, OwnershipError};
use crate::pipeline::{self, Compression};
use crate::restore::verify_backup;
use crate::retention::{read_keep, KeepTarget};
use crate::store::reader::{decode_into, DecodeIntoError};
use crate::store::{ObjectMeta, Repository, StoreError, StoreErrorKind};
use crate::timeline::{stored_timeline_history, TimelineHistory};
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
    /// Missing segments between `first` and `last` (at most 20 named), needed or not.
    pub gaps: Vec<WalSegment>,
    /// From where kept backups need this timeline's WAL (to its newest segment, or to the
    /// point a later timeline left it); `None`: no backup needs it.
    pub needed_from: Option<WalSegment>,
    /// Segments of that range missing (at most 20 named): each one a problem.
    pub missing_needed: Vec<WalSegment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub backups: Vec<BackupCheck>,
    pub timelines: Vec<TimelineCheck>,
    pub problems: Vec<String>,
    /// Objects under `wals/` and `base/` per encryption key id (`plain`: not encrypted),
    /// so that a rotation shows which keys are still needed.
    pub objects_by_key: BTreeMap<String, u64>,
}

/// WAL objects read at the same time.
const WAL_READS_IN_FLIGHT: usize = 8;

/// The key an object's header names, or `plain`.
fn key_label(start: &[u8]) -> String {
    match pipeline::key_of(start) {
        Ok(Some(id)) => id.to_string(),
        Ok(None) => "plain".to_string(),
        Err(_) => "unreadable header".to_string(),
    }
}

/// Reads every WAL object whose codec pgops reads, as a restore would (authenticated,
/// decrypted, decompressed; a segment must be a whole segment). Returns the problems and
/// the objects per key.
async fn read_wal(
    repo: &Repository,
    objects: Vec<ObjectMeta>,
    segment_size: u64,
) -> Result<(Vec<String>, BTreeMap<String, u64>), StoreError> {
    let mut problems = Vec::new();
    let mut by_key = BTreeMap::new();
    let mut reads = tokio::task::JoinSet::new();
    let mut pending = objects.into_iter();
    loop {
        while reads.len() < WAL_READS_IN_FLIGHT {
            let Some(object) = pending.next() else { break };
            let repo = repo.clone();
            reads.spawn(async move { read_one_wal(&repo, object, segment_size).await });
        }
        let Some(done) = reads.join_next().await else { break };
        let (key, problem) = done.map_err(|e| StoreError {
            operation: "verify",
            location: repo.location("wals/"),
            kind: StoreErrorKind::Other,
            cause: format!("a read task failed: {e}"),
        })??;
        if let Some(key) = key {
            *by_key.entry(key).or_insert(0) += 1;
        }
        problems.extend(problem);
    }
    problems.sort();
    Ok((problems, by_key))
}

/// One WAL object: its key label (`None` when it was removed since the listing) and what
/// is wrong with it, if anything. Read piece by piece and refused past a segment's size,
/// never held whole.
async fn read_one_wal(
    repo: &Repository,
    object: ObjectMeta,
    segment_size: u64,
) -> Result<(Option<String>, Option<String>), StoreError> {
    let location = repo.store.location(&object.key);
    let Some(start) = object_start(repo, &object).await? else {
        // Removed since the listing (retention): nothing to check.
        return Ok((None, None));
    };
    let (repo, runtime) = (repo.clone(), Handle::current());
    let decoded = tokio::task::spawn_blocking(move || {
        let file = object.key.rsplit('/').next().unwrap_or_default();
        let (name, codec) = Compression::split_file_name(file);
        let relative = repo.relative(&object.key).unwrap_or(&object.key);
        let decoded = decode_into(&repo, &runtime, relative, codec, segment_size, &mut std::io::sink());
        (matches!(naming::classify(name), Ok(WalFileKind::Segment)), decoded)
    });
    let (is_segment, decoded) = decoded.await.map_err(|e| StoreError {
        operation: "verify",
        location: location.clone(),
        kind: StoreErrorKind::Other,
        cause: format!("a read task failed: {e}"),
    })?;
    let problem = match decoded {
        Ok(None) => return Ok((None, None)),
        Err(DecodeIntoError::Store(e)) if matches!(e.kind, StoreErrorKind::Undecodable(_)) => {
            Some(format!("WAL {location}: {}", e.cause))
        }
        Err(DecodeIntoError::Store(e)) => return Err(e),
        Err(DecodeIntoError::Sink(e)) => Some(format!("WAL {location}: {e}")),
        Ok(Some(bytes)) if is_segment && bytes != segment_size => {
            Some(format!("WAL {location}: {bytes} bytes, not a whole {segment_size}-byte segment"))
        }
        Ok(Some(_)) => None,
    };
    Ok((Some(key_label(&start)), problem))
}

/// The first bytes of `object`, enough for [`key_label`]; `None` when it was removed since
/// the listing.
async fn object_start(repo: &Repository, object: &ObjectMeta) -> Result<Option<bytes::Bytes>, StoreError> {
    if object.size == 0 {
        return Ok(Some(bytes::Bytes::new()));
    }
    match repo.store.get_range(&object.key, 0, pipeline::HEADER_PEEK.min(object.size), None).await {
        Ok(start) => Ok(Some(start)),
        Err(_) if repo.store.head(&object.key).await?.is_none() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The key of every object under `base/`, from the first bytes of each.
async fn backup_object_keys(repo: &Repository, by_key: &mut BTreeMap<String, u64>) -> Result<(), StoreError> {
    for object in repo.list("base/").await?.into_iter().filter(|object| object.size > 0) {
        // Removed since the listing (retention): not counted.
        let Some(start) = object_start(repo, &object).await? else { continue };
        *by_key.entry(key_label(&start)).or_insert(0) += 1;
    }
    Ok(())
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
    // A whole segment's size: from the repository's owner record, else from a backup.
    let owner_segment_size = match runtime.block_on(ownership::owner(repo)) {
        Ok(owner) => owner.map(|owner| u64::from(owner.wal_segment_size)),
        Err(OwnershipError::Store(e)) => return Err(e),
        Err(_) => None,
    };
    let segment_size =
        owner_segment_size.or_else(|| backups.iter().find_map(|b| b.record.segment_size)).unwrap_or(16 << 20);

    // The archived WAL, per timeline.
    let mut segments: BTreeMap<Timeline, BTreeSet<SegmentPosition>> = BTreeMap::new();
    let mut histories = BTreeSet::new();
    let wal_prefix = repo.key("wals/");
    let wal_objects = runtime.block_on(repo.list("wals/"))?;
    let (wal_problems, mut objects_by_key) = runtime.block_on(read_wal(
        repo,
        wal_objects.iter().filter(|o| readable_wal(o)).cloned().collect(),
        segment_size,
    ))?;
    runtime.block_on(backup_object_keys(repo, &mut objects_by_key))?;
    for object in wal_objects {
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
    let mut problems = wal_problems;
    // A key file that does not fit the repository is the first thing to fix.
    match runtime.block_on(ownership::check_keys(repo)) {
        Ok(()) => {}
        Err(OwnershipError::Store(e)) => return Err(e),
        Err(e) => problems.insert(0, format!("{e} ({})", e.hint())),
    }
    // Where each timeline branched off its parent, from the history files.
    let mut children: BTreeMap<Timeline, Vec<(Timeline, Lsn)>> = BTreeMap::new();
    for &timeline in &histories {
        match runtime.block_on(stored_timeline_history(repo, timeline.0)) {
            Ok(Some(TimelineHistory { ancestors, .. })) => match ancestors.last() {
                // A parent always has a smaller number: anything else is not followed.
                Some(&(parent, left_at)) if parent < timeline.0 => {
                    children.entry(Timeline(parent)).or_default().push((timeline, left_at))
                }
                _ => problems.push(format!("{:08X}.history names no parent timeline before it", timeline.0)),
            },
            Ok(None) => {}
            Err(e) => problems.push(format!("{:08X}.history cannot be read: {e}", timeline.0)),
        }
    }
    let mut needs = WalNeeds { children: &children, segment_size, from: BTreeMap::new() };
    for backup in backups.iter().filter(|b| b.is_done()) {
        let id = backup.backup_id.parse::<crate::backup::BackupId>();
        let standalone = match &id {
            Ok(id) => {
                runtime.block_on(read_keep(repo, id)).map_err(|e| StoreError {
                    operation: "verify",
                    location: repo.location("base/"),
                    kind: StoreErrorKind::Other,
                    cause: e.to_string(),
                })? == Some(KeepTarget::Standalone)
            }
            Err(_) => false,
        };
        if let (Some(begin), false) = (backup.record.begin_wal, standalone) {
            needs.add(begin.timeline, begin.position, backup.record.end_lsn);
        }
    }

    let mut timelines = Vec::new();
    for &timeline in segments.keys().chain(needs.from.keys()).collect::<BTreeSet<_>>() {
        let none = BTreeSet::new();
        let present = segments.get(&timeline).unwrap_or(&none);
        let needed_from = needs.from.get(&timeline).map(|&position| WalSegment { timeline, position });
        let missing_needed = match needed_from {
            Some(from) => {
                let to = needs.end_of(timeline, from.position, present.last().copied());
                let mut missing = missing_segments(from, WalSegment { timeline, position: to }, present, segment_size);
                if !present.contains(&from.position) {
                    missing.insert(0, from);
                }
                missing.truncate(MAX_GAPS_NAMED);
                missing
            }
            None => Vec::new(),
        };
        if !missing_needed.is_empty() {
            problems.push(format!(
                "WAL missing on timeline {timeline} that backups need to restore to its newest point: {} (first {})",
                if missing_needed.len() >= MAX_GAPS_NAMED {
                    format!("{MAX_GAPS_NAMED} or more")
                } else {
                    missing_needed.len().to_string()
                },
                missing_needed[0]
            ));
        }
        let (Some(&first), Some(&last)) = (present.first(), present.last()) else { continue };
        let (first, last) = (WalSegment { timeline, position: first }, WalSegment { timeline, position: last });
        let gaps = missing_segments(first, last, present, segment_size);
        if timeline > Timeline(1) && !histories.contains(&timeline) {
            problems.push(format!("timeline {timeline} has WAL but no {:08X}.history", timeline.0));
        }
        timelines.push(TimelineCheck {
            timeline,
            first,
            last,
            segments: present.len() as u64,
            gaps,
            needed_from,
            missing_needed,
        });
    }

    for backup in backups.iter().filter(|b| b.record.status_text().is_none()) {
        let why = backup.record.error.as_deref().unwrap_or("its backup.info has no status");
        problems.push(format!("backup {}: {why}", backup.backup_id));
    }
    let mut checks = Vec::new();
    for backup in backups.iter().filter(|b| b.is_done()) {
        let mut check =
            BackupCheck { id: backup.backup_id.clone(), files_checked: 0, manifest: false, problems: vec![] };
        match verify_backup(repo, runtime, &backup.backup_id) {
            Ok((files, manifest)) => (check.files_checked, check.manifest) = (files, manifest),
            Err(e) => check.problems.push(e.to_string()),
        }
        let malformed: Vec<String> =
            ["begin_wal", "end_wal"].into_iter().filter_map(|key| backup.record.malformed(key)).collect();
        match (backup.record.begin_wal, backup.record.end_wal) {
            _ if !malformed.is_empty() => check.problems.push(format!("backup.info: {}", malformed.join("; "))),
            (Some(begin), Some(end)) => {
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
            _ => {}
        }
        checks.push(check);
    }
    let ok = problems.is_empty() && checks.iter().all(|c| c.problems.is_empty());
    Ok(VerifyReport { ok, backups: checks, timelines, problems, objects_by_key })
}

/// What the DONE backups need of the WAL to restore to the newest point: per timeline, the
/// position from which its segments must all be there.
struct WalNeeds<'a> {
    children: &'a BTreeMap<Timeline, Vec<(Timeline, Lsn)>>,
    segment_size: u64,
    from: BTreeMap<Timeline, SegmentPosition>,
}

impl WalNeeds<'_> {
    /// `timeline` is needed from `from`, by a restore that has reached `reached` on it
    /// (`None`: unknown, taken as early as can be): and so is every later timeline that
    /// left this one at or after that point, from the segment it branched in.
    fn add(&mut self, timeline: Timeline, from: SegmentPosition, reached: Option<Lsn>) {
        let earliest = self.from.entry(timeline).or_insert(from);
        if from < *earliest {
            *earliest = from;
        }
        let followed: Vec<(Timeline, Lsn)> = self
            .children
            .get(&timeline)
            .into_iter()
            .flatten()
            .filter(|(child, left_at)| *child > timeline && reached.is_none_or(|reached| reached <= *left_at))
            .copied()
            .collect();
        for (child, left_at) in followed {
            self.add(child, SegmentPosition::of(left_at, self.segment_size), Some(left_at));
        }
    }

    /// The last segment of `timeline` needed from `from`: its newest one (`last`), and at
    /// least the one before the segment each later timeline branched in (recovery reads
    /// that one from the later timeline).
    fn end_of(&self, timeline: Timeline, from: SegmentPosition, last: Option<SegmentPosition>) -> SegmentPosition {
        let before_branches =
            self.children.get(&timeline).into_iter().flatten().filter_map(|(_, left_at)| {
                SegmentPosition::of(*left_at, self.segment_size).previous(self.segment_size)
            });
        last.into_iter().chain(before_branches).filter(|end| *end >= from).max().unwrap_or(from)
    }
}

/// A WAL object pgops reads: a WAL file name under a codec suffix it knows.
fn readable_wal(object: &ObjectMeta) -> bool {
    let file = object.key.rsplit('/').next().unwrap_or_default();
    let (name, _) = Compression::split_file_name(file);
    naming::classify(name).is_ok() && Compression::of_copy(file, name).is_some()
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
            problems.iter().any(|p| p.contains("end_wal \"0000000100000000000000zz\" is not a WAL segment")),
            "{problems:?}"
        );
    }

    #[test]
    fn every_wal_object_is_read_and_counted_by_key() {
        use crate::ownership::{claim, ClusterIdentity};
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let root = tempfile::tempdir().unwrap();
        let keys = std::sync::Arc::new(crate::pipeline::cipher::test_ring(root.path(), "key"));
        let store = std::sync::Arc::new(crate::store::LocalStore::new(root.path()));
        let repo = Repository::new(store, "main").with_keys(Some(keys.clone()));
        std::fs::create_dir_all(root.path().join("main")).unwrap();
        let segment_size = 1u32 << 20;
        let cluster = ClusterIdentity { system_identifier: 7, pg_version_num: 150000, wal_segment_size: segment_size };
        runtime.block_on(claim(&repo, &cluster)).unwrap();
        let names = ["000000010000000000000001", "000000010000000000000002", "000000010000000000000003"];
        for name in names {
            let key = naming::wal_key(name, Compression::Zstd).unwrap();
            let content = vec![7u8; segment_size as usize];
            let stored = pipeline::encode(&content, &key, Compression::Zstd, 3, Some(&keys)).unwrap();
            runtime.block_on(repo.store.put(&repo.key(&key), stored.into())).unwrap();
        }
        let report = verify(&repo, runtime.handle()).unwrap();
        assert!(report.ok, "{report:?}");
        assert_eq!(report.objects_by_key, BTreeMap::from([(keys.current().to_string(), 3)]));

        let damaged = root.path().join("main").join(naming::wal_key(names[1], Compression::Zstd).unwrap());
        let mut bytes = std::fs::read(&damaged).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&damaged, bytes).unwrap();
        let report = verify(&repo, runtime.handle()).unwrap();
        assert!(!report.ok);
        assert!(report.problems.iter().any(|p| p.contains(names[1]) && p.contains("damaged")), "{:?}", report.problems);

        // A segment that decodes past the repository's segment size (a bomb): named after
        // one segment's worth is read, never decoded whole.
        let bomb_name = "000000010000000000000004";
        let key = naming::wal_key(bomb_name, Compression::Zstd).unwrap();
        let bomb = pipeline::encode(&vec![0u8; 64 << 20], &key, Compression::Zstd, 3, Some(&keys)).unwrap();
        runtime.block_on(repo.store.put(&repo.key(&key), bomb.into())).unwrap();
        let report = verify(&repo, runtime.handle()).unwrap();
        assert!(
            report.problems.iter().any(|p| p.contains(bomb_name) && p.contains("decodes to more than 1048576 bytes")),
            "{:?}",
            report.problems
        );
        std::fs::remove_file(root.path().join("main").join(&key)).unwrap();

        // A plain backup.info slipped into the encrypted repository: named, not fatal.
        let info = repo.key("base/20261129T000000/backup.info");
        runtime.block_on(repo.store.put(&info, bytes::Bytes::from_static(b"status=DONE\n"))).unwrap();
        let report = verify(&repo, runtime.handle()).unwrap();
        assert!(
            report.problems.iter().any(|p| p.starts_with("backup 20261129T000000: backup.info cannot be read")),
            "{:?}",
            report.problems
        );

        let plain = Repository::new(std::sync::Arc::new(crate::store::LocalStore::new(root.path())), "main");
        let report = verify(&plain, runtime.handle()).unwrap();
        assert!(report.problems.iter().any(|p| p.contains("no encryption key file")), "{:?}", report.problems);
    }

    /// A repository of 1 MiB segments: WAL `segments` of timeline `timeline` archived
    /// (whole, zstd), and DONE backups (no archives: only their WAL needs matter here).
    struct Repo {
        _root: tempfile::TempDir,
        repo: Repository,
        runtime: tokio::runtime::Runtime,
    }

    const MIB: usize = 1 << 20;

    impl Repo {
        fn new() -> Repo {
            let root = tempfile::tempdir().unwrap();
            let repo = Repository::new(std::sync::Arc::new(crate::store::LocalStore::new(root.path())), "main");
            Repo { _root: root, repo, runtime: tokio::runtime::Runtime::new().unwrap() }
        }

        fn wal(&self, timeline: u32, segments: impl IntoIterator<Item = u32>) {
            for seg in segments {
                let name = format!("{timeline:08X}00000000{seg:08X}");
                let key = naming::wal_key(&name, Compression::Zstd).unwrap();
                let stored = Compression::Zstd.compress(&vec![0u8; MIB], 3).unwrap();
                self.runtime.block_on(self.repo.put_as_is(&key, stored.into())).unwrap();
            }
        }

        fn history(&self, timeline: u32, text: &str) {
            let key = format!("wals/{timeline:08X}.history");
            self.runtime.block_on(self.repo.put_as_is(&key, text.to_string().into())).unwrap();
        }

        fn done(&self, id: &str, begin_seg: u32, end_lsn: &str) {
            let info = format!(
                "begin_wal=00000001000000000000{begin_seg:04X}\nend_wal=00000001000000000000{begin_seg:04X}\n\
                 end_xlog={end_lsn}\nstatus=DONE\nxlog_segment_size={MIB}\n"
            );
            self.runtime.block_on(self.repo.put(&format!("base/{id}/backup.info"), info.into())).unwrap();
        }

        fn verify(&self) -> VerifyReport {
            verify(&self.repo, self.runtime.handle()).unwrap()
        }
    }

    fn timeline(report: &VerifyReport, timeline: u32) -> &TimelineCheck {
        report.timelines.iter().find(|t| t.timeline == Timeline(timeline)).unwrap()
    }

    /// The primary died with segments 6 and 7 of timeline 1 unarchived; its standby took
    /// over at 0/800000 (segment 8, timeline 2). Timeline 1's archived WAL has no gap, yet
    /// a restore of the backup on it stops at 5 and promotes short.
    #[test]
    fn wal_missing_before_a_switch_point_is_a_problem() {
        let repo = Repo::new();
        repo.wal(1, 1..=5);
        repo.history(2, "1\t0/800000\tno recovery target specified\n");
        repo.wal(2, 8..=9);
        repo.done("20261125T020000", 2, "0/300000");
        let report = repo.verify();
        let tl1 = timeline(&report, 1);
        assert!(tl1.gaps.is_empty());
        assert_eq!(names(&tl1.missing_needed), "000000010000000000000006, 000000010000000000000007");
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("WAL missing on timeline 1") && p.contains("(first 000000010000000000000006)")),
            "{:?}",
            report.problems
        );
        assert!(timeline(&report, 2).missing_needed.is_empty(), "{report:?}");
        // Archived after all: no problem left.
        repo.wal(1, 6..=7);
        let report = repo.verify();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }

    /// Retention with a backup kept standalone keeps its WAL (2–3) and deletes what only
    /// older backups needed (4–7): a healthy repository, whose gap nobody needs.
    #[test]
    fn a_gap_no_backup_needs_is_listed_not_a_problem() {
        let repo = Repo::new();
        repo.wal(1, (2..=3).chain(8..=10));
        repo.done("20261101T020000", 2, "0/300000");
        repo.runtime
            .block_on(repo.repo.put_as_is("base/20261101T020000/annotations/keep", "standalone".into()))
            .unwrap();
        repo.done("20261125T020000", 8, "0/900000");
        let report = repo.verify();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let tl1 = timeline(&report, 1);
        assert_eq!(tl1.gaps.len(), 4);
        assert_eq!(tl1.needed_from.unwrap().to_string(), "000000010000000000000008");
        // Without the keep mark, the older backup needs 4–7 to restore to the newest point.
        repo.runtime.block_on(repo.repo.delete("base/20261101T020000/annotations/keep")).unwrap();
        let report = repo.verify();
        assert_eq!(names(&timeline(&report, 1).missing_needed).matches(", ").count(), 3, "{report:?}");
    }
}
