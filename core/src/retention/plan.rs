//! What retention keeps and what goes: first the backups (from the typed catalog, by the
//! policy, as Barman decides), then the WAL nobody kept needs, read from the WAL listing
//! page by page with only per-timeline aggregates kept.

use super::catalog::{read_catalog, CatalogEntry, EntryState, KeepTarget, StartedIsLive};
use super::{Policy, RetentionError};
use crate::backup::owner::HEARTBEAT_STALE;
use crate::backup::BackupId;
use crate::naming::{self, Lsn, SegmentPosition, StoredWal, Timeline, WalSegment};
use crate::ownership::{self, OwnershipError};
use crate::pipeline::Compression;
use crate::store::{Repository, METADATA_LIMIT};
use crate::timeline::TimelineHistory;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Why a backup is kept or obsolete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    // Kept.
    /// No retention policy is set.
    NoPolicy,
    /// DONE, ended inside the recovery window.
    WithinRecoveryWindow,
    /// DONE, the newest that ended before the recovery window began: restoring to the
    /// window's first moments starts from it.
    RecoveryWindowStart,
    /// DONE, one of the newest `count` (`REDUNDANCY count`).
    Redundancy { count: u32 },
    /// DONE, kept so that `minimum` DONE backups remain (minimum_redundancy).
    MinimumRedundancy { minimum: u32 },
    /// Barman's keep annotation.
    Keep(KeepTarget),
    /// STARTED by a worker that is running.
    Running,
    /// FAILED or never finished, but no newer DONE backup is kept yet.
    NoNewerDone,
    /// Objects without a `backup.info` written within the grace period (or at a time the
    /// store does not tell): perhaps another tool's backup still uploading (Barman writes
    /// `backup.info` last).
    MaybeUploading { grace_seconds: i64 },
    /// STARTED, and no worker can be taking it (why); `superseded`: a newer DONE backup is
    /// kept, and it goes. A kept one is marked FAILED by the run.
    Abandoned { reason: String, superseded: bool },
    /// A status pgops never expires.
    UnknownStatus(String),
    /// DONE, but not on the timeline history of the server that expires (why not): it
    /// may be another clone's, restored from the same repository.
    OffLineage(String),
    /// `systemid` of its `backup.info` is not the repository owner's (the value, if any).
    OtherCluster(Option<String>),
    // Obsolete.
    /// DONE, older than the newest backup that ended before the recovery window.
    OutsideRecoveryWindow,
    /// DONE, older than the newest `count`.
    BeyondRedundancy { count: u32 },
    /// FAILED, and a newer DONE backup is kept.
    Failed,
    /// STARTED by a worker that is gone, and a newer DONE backup is kept.
    Interrupted,
    /// Objects without a `backup.info`, and a newer DONE backup is kept.
    Incomplete,
}

impl Why {
    pub fn keeps(&self) -> bool {
        !matches!(
            self,
            Why::OutsideRecoveryWindow
                | Why::BeyondRedundancy { .. }
                | Why::Failed
                | Why::Interrupted
                | Why::Incomplete
                | Why::Abandoned { superseded: true, .. }
        )
    }
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::NoPolicy => write!(f, "no retention policy is set: every backup is kept"),
            Why::WithinRecoveryWindow => write!(f, "ended inside the recovery window"),
            Why::RecoveryWindowStart => {
                write!(f, "the newest backup that ended before the recovery window began: restores to its start")
            }
            Why::Redundancy { count } => write!(f, "one of the newest {count} DONE backups"),
            Why::MinimumRedundancy { minimum } => {
                write!(f, "kept so that at least {minimum} DONE backups remain (minimum_redundancy)")
            }
            Why::Keep(KeepTarget::Full) => {
                write!(f, "marked keep (full): kept with the WAL to restore to any later point")
            }
            Why::Keep(KeepTarget::Standalone) => {
                write!(f, "marked keep (standalone): kept with the WAL from its begin to its end segment")
            }
            Why::Running => write!(f, "being taken by a running worker"),
            Why::NoNewerDone => write!(f, "did not finish, but no newer DONE backup is kept yet"),
            Why::MaybeUploading { grace_seconds } => write!(
                f,
                "objects without a backup.info written less than {grace_seconds} s ago (or at a time the store does \
                 not say): perhaps a backup still uploading, Barman writes backup.info last"
            ),
            Why::Abandoned { reason, superseded: true } => {
                write!(f, "STARTED, but no worker can be taking it ({reason}), and a newer DONE backup is kept")
            }
            Why::Abandoned { reason, superseded: false } => write!(
                f,
                "STARTED, but no worker can be taking it ({reason}): marked FAILED, kept until a newer DONE backup is"
            ),
            Why::UnknownStatus(status) => write!(f, "status {status} is not one pgops expires"),
            Why::OffLineage(detail) => write!(f, "not on this server's timeline history ({detail})"),
            Why::OtherCluster(Some(id)) => write!(f, "another cluster's backup (system identifier {id})"),
            Why::OtherCluster(None) => {
                write!(f, "another cluster's backup (its backup.info names no system identifier)")
            }
            Why::OutsideRecoveryWindow => {
                write!(f, "older than the newest backup that ended before the recovery window began")
            }
            Why::BeyondRedundancy { count } => write!(f, "older than the newest {count} DONE backups"),
            Why::Failed => write!(f, "FAILED, and a newer DONE backup is kept"),
            Why::Interrupted => write!(f, "STARTED by a worker that is gone, and a newer DONE backup is kept"),
            Why::Incomplete => {
                write!(
                    f,
                    "objects without a backup.info (a backup that never finished), and a newer DONE backup is kept"
                )
            }
        }
    }
}

/// What a kept backup needs of the archived WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WalNeed {
    Nothing,
    /// Everything from its begin segment on, on its timeline and those after it: it is
    /// restorable to any later point.
    FromBegin(Anchor),
    /// Its begin to end segment: restorable to its end only.
    BeginToEnd(WalSegment, WalSegment),
}

/// Where a backup kept restorable to any later point begins: its segment, and its LSN
/// when `backup.info` says (placing it before or after the point a later timeline left
/// its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Anchor {
    segment: WalSegment,
    lsn: Option<Lsn>,
}

impl Anchor {
    fn of(done: &super::catalog::DoneBackup) -> Anchor {
        Anchor { segment: done.begin_wal, lsn: done.begin_lsn }
    }
}

/// A backup, and whether (and why) it stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupDecision {
    pub backup: CatalogEntry,
    pub why: Why,
    wal_need: WalNeed,
}

impl BackupDecision {
    pub fn kept(&self) -> bool {
        self.why.keeps()
    }
}

/// The verdict on each DONE backup, newest first, as Barman's `RetentionPolicy`
/// `_backup_report` gives it, and whether the policy itself retains it (which makes it
/// restorable to any later point, keep annotation or not).
fn done_verdicts(
    newest_first: &[(DoneBackupRef<'_>, Option<KeepTarget>)],
    policy: Policy,
    minimum_redundancy: u32,
    now: DateTime<Utc>,
) -> Vec<(Why, bool)> {
    let mut verdicts = Vec::with_capacity(newest_first.len());
    match policy {
        Policy::Redundancy(count) => {
            // Barman enforces minimum_redundancy when it is the larger, and counts
            // backups marked keep among the newest `count`.
            let retained = count.max(minimum_redundancy) as usize;
            for (rank, (_, keep)) in newest_first.iter().enumerate() {
                let by_policy = rank < retained;
                let why = match (keep, by_policy) {
                    (Some(target), _) => Why::Keep(*target),
                    (None, true) if rank < count as usize => Why::Redundancy { count },
                    (None, true) => Why::MinimumRedundancy { minimum: minimum_redundancy },
                    (None, false) => Why::BeyondRedundancy { count },
                };
                verdicts.push((why, by_policy));
            }
        }
        Policy::RecoveryWindow { .. } => {
            // A window too long to compute with reaches before every backup.
            let window_start = policy.window().and_then(|window| now.checked_sub_signed(window));
            let mut found_window_start = false;
            let mut retained = 0u32;
            for (backup, keep) in newest_first {
                let verdict = if !found_window_start {
                    found_window_start = window_start.is_some_and(|start| backup.done.ended < start);
                    let why = match found_window_start {
                        true => Why::RecoveryWindowStart,
                        false => Why::WithinRecoveryWindow,
                    };
                    (why, true)
                } else if retained < minimum_redundancy {
                    (Why::MinimumRedundancy { minimum: minimum_redundancy }, true)
                } else {
                    (Why::OutsideRecoveryWindow, false)
                };
                retained += u32::from(verdict.1);
                verdicts.push((keep.map_or(verdict.0, Why::Keep), verdict.1));
            }
        }
    }
    verdicts
}

/// A DONE backup of the catalog, with its id.
struct DoneBackupRef<'a> {
    id: &'a BackupId,
    done: &'a super::catalog::DoneBackup,
}

/// Which backups a run counts: those of the repository's owner and, when the server that
/// expires says where it stands, those on its timeline history.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    /// The system identifier backups must carry (`None`: any).
    pub system_identifier: Option<&'a str>,
    pub lineage: Option<&'a TimelineHistory>,
}

impl Scope<'_> {
    /// Why `entry` is not counted (and never deleted), or `None` when it is.
    fn excludes(&self, entry: &CatalogEntry) -> Option<Why> {
        if let Some(owner) = self.system_identifier {
            if entry.system_identifier.as_deref() != Some(owner) && entry.state != EntryState::Incomplete {
                return Some(Why::OtherCluster(entry.system_identifier.clone()));
            }
        }
        match (&entry.state, self.lineage) {
            (EntryState::Done(done), Some(lineage)) => off_lineage(lineage, done).map(Why::OffLineage),
            _ => None,
        }
    }
}

/// Why DONE backup `done` is not on `lineage`: on its timeline, or on an ancestor left
/// only after the backup ended (a restore from it can follow onto the current timeline).
fn off_lineage(lineage: &TimelineHistory, done: &super::catalog::DoneBackup) -> Option<String> {
    let timeline = done.end_wal.timeline.0;
    if timeline == lineage.timeline {
        return None;
    }
    let Some((_, left_at)) = lineage.ancestors.iter().find(|(ancestor, _)| *ancestor == timeline) else {
        return Some(format!("timeline {timeline} is neither timeline {} nor one it descends from", lineage.timeline));
    };
    // As restore and Postgres follow a timeline switch: a backup that ended at the switch
    // point itself is on the new timeline's history.
    match done.end_lsn {
        Some(end) if end <= *left_at => None,
        Some(end) => Some(format!(
            "it ended at {end} on timeline {timeline}, which timeline {}'s history left at {left_at}",
            lineage.timeline
        )),
        None => Some(format!("its backup.info has no end_xlog to place it before timeline {timeline} was left")),
    }
}

/// Decides on every backup of `catalog` (oldest first, as read): see the module
/// [`super`] for the rules.
pub fn decide(
    catalog: Vec<CatalogEntry>,
    policy: Option<Policy>,
    minimum_redundancy: u32,
    now: DateTime<Utc>,
    scope: Scope<'_>,
    incomplete_grace: chrono::Duration,
) -> Vec<BackupDecision> {
    let Some(policy) = policy else {
        return catalog
            .into_iter()
            .map(|backup| BackupDecision { backup, why: Why::NoPolicy, wal_need: WalNeed::Nothing })
            .collect();
    };
    // Whatever the caller passed, the newest DONE backup is never planned away.
    let minimum_redundancy = minimum_redundancy.max(1);
    let excluded: BTreeMap<BackupId, Why> =
        catalog.iter().filter_map(|entry| Some((entry.id.clone(), scope.excludes(entry)?))).collect();
    let mut done: Vec<(DoneBackupRef<'_>, Option<KeepTarget>)> = catalog
        .iter()
        .filter(|entry| !excluded.contains_key(&entry.id))
        .filter_map(|entry| match &entry.state {
            EntryState::Done(done) => Some((DoneBackupRef { id: &entry.id, done }, entry.keep)),
            _ => None,
        })
        .collect();
    // Newest first by when they ended: Barman Cloud's ids are the local start time, which
    // a long backup or a time zone change puts out of order.
    done.sort_by(|a, b| (b.0.done.ended, b.0.id).cmp(&(a.0.done.ended, a.0.id)));
    let verdicts: BTreeMap<BackupId, (Why, WalNeed)> = done
        .iter()
        .zip(done_verdicts(&done, policy, minimum_redundancy, now))
        .map(|((backup, keep), (why, by_policy))| {
            let need = match (by_policy, keep) {
                (true, _) | (false, Some(KeepTarget::Full)) => WalNeed::FromBegin(Anchor::of(backup.done)),
                (false, Some(KeepTarget::Standalone)) => {
                    WalNeed::BeginToEnd(backup.done.begin_wal, backup.done.end_wal)
                }
                (false, None) => WalNeed::Nothing,
            };
            (backup.id.clone(), (why, need))
        })
        .collect();
    // A FAILED or STARTED backup has a backup.info, written by the tool that took it: by id
    // against the newest kept DONE one (harmless across tools: it restores nothing).
    let newest_kept_done = verdicts.iter().filter(|(_, (why, _))| why.keeps()).map(|(id, _)| id.clone()).max();
    let superseded = |id: &BackupId| newest_kept_done.as_ref().is_some_and(|newest| newest > id);
    // A directory without one may be another tool's backup uploading (Barman writes
    // backup.info last, and its ids are local time, pgops' UTC): by time, never by id,
    // superseded once a kept DONE backup ended after its last object was written.
    let newest_kept_done_ended =
        done.iter().filter(|(backup, _)| verdicts[backup.id].0.keeps()).map(|(backup, _)| backup.done.ended).max();
    let written_before_newest_done =
        |entry: &CatalogEntry| entry.last_written.zip(newest_kept_done_ended).is_some_and(|(last, done)| done > last);
    catalog
        .into_iter()
        .map(|backup| {
            let young = |entry: &CatalogEntry| entry.last_written.is_none_or(|last| now - last < incomplete_grace);
            let (why, wal_need) = match (&backup.state, excluded.get(&backup.id)) {
                // Kept, and (when DONE) restorable to any later point, as it may be needed.
                (EntryState::Done(done), Some(why)) => (why.clone(), WalNeed::FromBegin(Anchor::of(done))),
                (_, Some(why)) => (why.clone(), WalNeed::Nothing),
                (state, None) => match state {
                    EntryState::Done(_) => verdicts[&backup.id].clone(),
                    EntryState::Started { live: true, begin_wal, begin_lsn, heartbeat } => {
                        match abandoned(&backup, *begin_wal, *begin_lsn, *heartbeat, now, scope, incomplete_grace) {
                            Some(reason) => {
                                (Why::Abandoned { reason, superseded: superseded(&backup.id) }, WalNeed::Nothing)
                            }
                            None => (
                                Why::Running,
                                begin_wal.map_or(WalNeed::Nothing, |segment| {
                                    WalNeed::FromBegin(Anchor { segment, lsn: *begin_lsn })
                                }),
                            ),
                        }
                    }
                    EntryState::Started { live: false, .. } if superseded(&backup.id) => {
                        (Why::Interrupted, WalNeed::Nothing)
                    }
                    EntryState::Failed if superseded(&backup.id) => (Why::Failed, WalNeed::Nothing),
                    // What an interrupted run of pgops' own retention left: it goes now.
                    EntryState::Incomplete if backup.expiring => (Why::Incomplete, WalNeed::Nothing),
                    EntryState::Incomplete if young(&backup) => {
                        (Why::MaybeUploading { grace_seconds: incomplete_grace.num_seconds() }, WalNeed::Nothing)
                    }
                    EntryState::Incomplete if written_before_newest_done(&backup) => {
                        (Why::Incomplete, WalNeed::Nothing)
                    }
                    EntryState::Started { .. } | EntryState::Failed | EntryState::Incomplete => {
                        (Why::NoNewerDone, WalNeed::Nothing)
                    }
                    EntryState::Other(status) => (Why::UnknownStatus(status.clone()), WalNeed::Nothing),
                },
            };
            // A keep mark wins over anything that would delete (a DONE backup's verdict
            // says so already).
            let why = match backup.keep {
                Some(target) if !why.keeps() => Why::Keep(target),
                _ => why,
            };
            BackupDecision { backup, why, wal_need }
        })
        .collect()
}

/// Why a STARTED backup that may be another server's cannot be running, if it cannot:
/// - it began on a timeline this server's history left before (at) that point: a failover
///   or a point-in-time restore happened while it ran, and it can never finish on this
///   lineage;
/// - its owner's heartbeat is older than [`HEARTBEAT_STALE`];
/// - without a heartbeat (another tool, an older pgops), nothing in its directory was
///   written within `grace`.
fn abandoned(
    entry: &CatalogEntry,
    begin_wal: Option<WalSegment>,
    begin_lsn: Option<Lsn>,
    heartbeat: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    scope: Scope<'_>,
    grace: chrono::Duration,
) -> Option<String> {
    let stale = chrono::Duration::from_std(HEARTBEAT_STALE).unwrap_or(chrono::Duration::MAX);
    // A fresh heartbeat is a running backup, wherever it is (a clone's, another branch's).
    if heartbeat.is_some_and(|beat| now - beat <= stale) {
        return None;
    }
    if let (Some(lineage), Some(begin_wal), Some(begin_lsn)) = (scope.lineage, begin_wal, begin_lsn) {
        let timeline = begin_wal.timeline.0;
        let left = lineage.ancestors.iter().find(|(ancestor, _)| *ancestor == timeline);
        if let Some((_, left_at)) = left.filter(|(_, left_at)| begin_lsn < *left_at) {
            return Some(format!(
                "it began at {begin_lsn} on timeline {timeline}, which this server's timeline {} left at {left_at}",
                lineage.timeline
            ));
        }
    }
    match (heartbeat, entry.last_written) {
        (Some(beat), _) if now - beat > stale => Some(format!("its owner's last heartbeat was at {beat}")),
        (Some(_), _) => None,
        (None, Some(last)) if now - last > grace => {
            Some(format!("it has no heartbeat and nothing in its directory was written since {last}"))
        }
        (None, _) => None,
    }
}

/// Which WAL objects go: on each timeline those positioned before the timeline's
/// cutoff, except the segments of backups kept standalone; history files never.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct WalRule {
    cutoffs: BTreeMap<Timeline, SegmentPosition>,
    protected: Vec<(WalSegment, WalSegment)>,
}

impl WalRule {
    pub(crate) fn deletes(&self, wal: StoredWal) -> bool {
        let StoredWal::Segment { segment, .. } = wal else { return false };
        let protected = |(begin, end): &(WalSegment, WalSegment)| {
            (segment.timeline == begin.timeline || segment.timeline == end.timeline)
                && (begin.position..=end.position).contains(&segment.position)
        };
        self.cutoffs.get(&segment.timeline).is_some_and(|cutoff| segment.position < *cutoff)
            && !self.protected.iter().any(protected)
    }

    pub(crate) fn deletes_nothing(&self) -> bool {
        self.cutoffs.is_empty()
    }
}

/// The WAL that goes on one timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalRange {
    pub timeline: Timeline,
    /// Segments positioned before this one go (those of backups kept standalone stay).
    pub before: WalSegment,
    /// The first and last segment that go.
    pub first: WalSegment,
    pub last: WalSegment,
    /// Objects that go (segments, `.partial` and `.backup` files) and their bytes.
    pub objects: u64,
    pub bytes: u64,
}

/// The WAL listing, read in key order, against what the kept backups need. A timeline's
/// cutoff is fixed when its first segment is seen: its history file sorts just before
/// its segments (`wals/00000002.history` < `wals/0000000200000000/`), so its ancestry is
/// known by then; when it is not, the cutoff is the most careful one.
#[derive(Debug)]
pub(crate) struct WalSurvey {
    /// Where the backups kept restorable to any later point begin.
    anchors: Vec<Anchor>,
    /// Each timeline's ancestors, and where it (or the timeline between) left each.
    ancestors: BTreeMap<Timeline, Vec<(Timeline, Lsn)>>,
    seen: BTreeSet<Timeline>,
    rule: WalRule,
    ranges: BTreeMap<Timeline, WalRange>,
}

impl WalSurvey {
    pub(crate) fn new(decisions: &[BackupDecision]) -> WalSurvey {
        let mut anchors = Vec::new();
        let mut protected = Vec::new();
        for decision in decisions {
            match decision.wal_need {
                WalNeed::Nothing => {}
                WalNeed::FromBegin(anchor) => anchors.push(anchor),
                WalNeed::BeginToEnd(begin, end) => protected.push((begin, end)),
            }
        }
        WalSurvey {
            anchors,
            ancestors: BTreeMap::new(),
            seen: BTreeSet::new(),
            rule: WalRule { cutoffs: BTreeMap::new(), protected },
            ranges: BTreeMap::new(),
        }
    }

    /// Whether any WAL can go: not without a backup restorable from its begin on.
    pub(crate) fn may_delete(&self) -> bool {
        !self.anchors.is_empty()
    }

    /// Whether the ancestry of `timeline` is still wanted (from its history file).
    pub(crate) fn needs_history(&self, timeline: Timeline) -> bool {
        timeline > Timeline(1) && !self.seen.contains(&timeline) && !self.ancestors.contains_key(&timeline)
    }

    /// The timelines `timeline` descends from and where its history left each, from its
    /// history file. A history that names none tells nothing (every timeline after the
    /// first has a parent).
    pub(crate) fn learn_history(&mut self, timeline: Timeline, ancestors: Vec<(Timeline, Lsn)>) {
        if !ancestors.is_empty() {
            self.ancestors.insert(timeline, ancestors);
        }
    }

    /// Before which position segments of `timeline` go: before the oldest begin of a
    /// backup kept on it or on a timeline it descends from, begun before (at) the point its
    /// history left that timeline (one begun after is on an abandoned branch, whose
    /// restore never reads this timeline). With none there, or with its ancestry unknown,
    /// before the oldest begin of any backup kept: no kept backup's restore reads WAL
    /// positioned before its own begin, on any timeline.
    fn cutoff(&self, timeline: Timeline) -> Option<SegmentPosition> {
        let oldest = self.anchors.iter().map(|anchor| anchor.segment.position).min()?;
        let ancestors = match timeline {
            Timeline(1) => &[][..],
            _ => match self.ancestors.get(&timeline) {
                Some(ancestors) => ancestors.as_slice(),
                None => return Some(oldest),
            },
        };
        let on_lineage = |anchor: &&Anchor| {
            anchor.segment.timeline == timeline
                || ancestors.iter().any(|(ancestor, left_at)| {
                    *ancestor == anchor.segment.timeline && anchor.lsn.is_none_or(|begin| begin <= *left_at)
                })
        };
        let on_lineage = self.anchors.iter().filter(on_lineage).map(|anchor| anchor.segment.position).min();
        Some(on_lineage.unwrap_or(oldest))
    }

    /// One object of the listing, `bytes` long.
    pub(crate) fn observe(&mut self, wal: StoredWal, bytes: u64) {
        let StoredWal::Segment { segment, .. } = wal else { return };
        if self.seen.insert(segment.timeline) {
            if let Some(cutoff) = self.cutoff(segment.timeline) {
                self.rule.cutoffs.insert(segment.timeline, cutoff);
            }
        }
        if !self.rule.deletes(wal) {
            return;
        }
        let before = WalSegment { timeline: segment.timeline, position: self.rule.cutoffs[&segment.timeline] };
        let range = self.ranges.entry(segment.timeline).or_insert(WalRange {
            timeline: segment.timeline,
            before,
            first: segment,
            last: segment,
            objects: 0,
            bytes: 0,
        });
        range.first = if segment.position < range.first.position { segment } else { range.first };
        range.last = if segment.position > range.last.position { segment } else { range.last };
        range.objects += 1;
        range.bytes += bytes;
    }

    pub(crate) fn finish(self) -> (WalRule, Vec<WalRange>) {
        (self.rule, self.ranges.into_values().collect())
    }
}

/// The WAL file a store key of the repository holds, when it is where Barman's layout puts
/// that file (`wals/<TLI+log>/<segment>…`, `wals/<TLI>.history…`); objects anywhere else
/// are not retention's.
pub(crate) fn archived_wal(repo: &Repository, key: &str) -> Option<StoredWal> {
    let (dir, file) = repo.relative(key)?.rsplit_once('/')?;
    let wal = naming::stored_wal(file)?;
    let expected = match wal {
        StoredWal::History(_) => "wals".to_string(),
        StoredWal::Segment { segment, .. } => format!("wals/{:08X}{:08X}", segment.timeline.0, segment.position.log),
    };
    dir.eq_ignore_ascii_case(&expected).then_some(wal)
}

/// Everything a plan needs besides the repository.
pub struct PlanRequest<'a> {
    /// `None`: keep everything (the plan deletes nothing).
    pub policy: Option<Policy>,
    pub minimum_redundancy: u32,
    pub now: DateTime<Utc>,
    pub started_is_live: &'a StartedIsLive<'a>,
    /// The system identifier of the server that expires (`None`: the command line). When
    /// the repository's `pgops.json` names another, nothing is decided.
    pub system_identifier: Option<u64>,
    /// The current timeline of the server that expires and its history: only DONE backups
    /// on it count (`None`: every DONE backup of the owner counts).
    pub lineage: Option<TimelineHistory>,
    /// How long a directory without `backup.info` (and a STARTED backup without a
    /// heartbeat) is left alone after its last object was written: another tool may still
    /// be uploading it ([`DEFAULT_INCOMPLETE_GRACE`]).
    pub incomplete_grace: chrono::Duration,
}

/// The default grace period of directories without `backup.info`: seven days, longer
/// than any backup upload runs.
pub const DEFAULT_INCOMPLETE_GRACE: chrono::Duration = chrono::Duration::days(7);

/// What a retention run keeps and deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub policy: Option<Policy>,
    pub minimum_redundancy: u32,
    pub now: DateTime<Utc>,
    /// Every directory under `base/`, oldest first.
    pub backups: Vec<BackupDecision>,
    /// The WAL that goes, per timeline.
    pub wal: Vec<WalRange>,
    /// What the operator should know (a history file that could not be read, and so WAL
    /// kept that might have gone).
    pub warnings: Vec<String>,
    pub(crate) wal_rule: WalRule,
}

impl Plan {
    pub fn obsolete(&self) -> impl Iterator<Item = &BackupDecision> {
        self.backups.iter().filter(|decision| !decision.kept())
    }

    /// The oldest time one can restore to once the plan is carried out: the end of the
    /// oldest DONE backup kept (`None` without one).
    pub fn recoverable_from(&self) -> Option<DateTime<Utc>> {
        recoverable_from(&self.backups)
    }
}

/// The oldest time one can restore to once `decisions` are carried out: the end of the
/// oldest DONE backup kept for point-in-time recovery (not one kept `standalone`, not
/// another cluster's or another timeline's; `None` without one).
pub fn recoverable_from(decisions: &[BackupDecision]) -> Option<DateTime<Utc>> {
    decisions
        .iter()
        .filter(|decision| {
            decision.kept()
                && !matches!(
                    decision.why,
                    Why::Keep(KeepTarget::Standalone) | Why::OffLineage(_) | Why::OtherCluster(_)
                )
        })
        .filter_map(|decision| match decision.backup.state {
            EntryState::Done(done) => Some(done.ended),
            _ => None,
        })
        .min()
}

/// The end of the newest DONE backup of `decisions`, kept or not.
pub fn last_done_ended(decisions: &[BackupDecision]) -> Option<DateTime<Utc>> {
    decisions
        .iter()
        .filter_map(|decision| match decision.backup.state {
            EntryState::Done(done) => Some(done.ended),
            _ => None,
        })
        .max()
}

/// The decision on every backup without the WAL survey (cheap enough for listings and
/// monitoring): the catalog read completely, or the error naming what could not be read.
pub async fn assess(repo: &Repository, request: &PlanRequest<'_>) -> Result<Vec<BackupDecision>, RetentionError> {
    let owner = repository_owner(repo, request.system_identifier).await?;
    let catalog = read_catalog(repo, request.started_is_live).await?;
    let scope = Scope { system_identifier: owner.as_deref(), lineage: request.lineage.as_ref() };
    Ok(decide(catalog, request.policy, request.minimum_redundancy, request.now, scope, request.incomplete_grace))
}

/// Without a lineage to count on (the command line without `--timeline`), every DONE
/// backup counts: right only on a repository of one timeline. With more (a failover, or a
/// point-in-time restore in place, whose abandoned branch may hold newer backups than the
/// one the live timeline came from, even on the same timeline), it is refused: the
/// repository has timeline 2's history file, or DONE backups ended on several timelines.
pub async fn one_timeline_or_refuse(repo: &Repository, decisions: &[BackupDecision]) -> Result<(), RetentionError> {
    let timelines: std::collections::BTreeSet<u32> = decisions
        .iter()
        .filter(|decision| !matches!(decision.why, Why::OtherCluster(_)))
        .filter_map(|decision| match &decision.backup.state {
            EntryState::Done(done) => Some(done.end_wal.timeline.0),
            _ => None,
        })
        .collect();
    if timelines.len() > 1 {
        return Err(RetentionError::TimelineNeeded { found: format!("DONE backups ended on timelines {timelines:?}") });
    }
    if let Some(history) = repo.list("wals/00000002.history").await?.first() {
        return Err(RetentionError::TimelineNeeded {
            found: format!("the repository holds more than one timeline ({})", repo.store.location(&history.key)),
        });
    }
    Ok(())
}

/// The system identifier backups must carry: the repository owner's (`pgops.json`), else
/// the server's. A server that does not own the repository decides nothing.
async fn repository_owner(repo: &Repository, server: Option<u64>) -> Result<Option<String>, RetentionError> {
    let owner = ownership::owner(repo).await.map_err(|e| match e {
        OwnershipError::Store(e) => RetentionError::Store(e),
        e => RetentionError::Unreadable { location: repo.location(ownership::METADATA_OBJECT), problem: e.to_string() },
    })?;
    let server = server.map(|id| id.to_string());
    match (owner, server) {
        (Some(owner), Some(server)) if owner.system_identifier != server => Err(RetentionError::NotOwner {
            location: repo.location(ownership::METADATA_OBJECT),
            owner: owner.system_identifier,
            server,
        }),
        (owner, server) => Ok(owner.map(|owner| owner.system_identifier).or(server)),
    }
}

/// Reads the catalog and the WAL listing and decides. Any listing or read error, and any
/// `backup.info` that does not say what retention needs, is an error naming the object:
/// nothing is decided on a partial catalog.
pub async fn plan(repo: &Repository, request: &PlanRequest<'_>) -> Result<Plan, RetentionError> {
    let backups = assess(repo, request).await?;
    let mut survey = WalSurvey::new(&backups);
    let mut warnings = Vec::new();
    if request.policy.is_some() && survey.may_delete() {
        let mut listing = repo.listing("wals/");
        while let Some(page) = listing.next_page().await? {
            for object in page {
                let Some(wal) = archived_wal(repo, &object.key) else { continue };
                match wal {
                    StoredWal::History(timeline) if survey.needs_history(timeline) => {
                        match history_ancestors(repo, &object.key, timeline).await? {
                            Ok(ancestors) => survey.learn_history(timeline, ancestors),
                            Err(problem) => warnings.push(format!(
                                "{}: {problem}; the WAL of timeline {timeline} is kept as if its ancestry were unknown",
                                repo.store.location(&object.key)
                            )),
                        }
                    }
                    _ => survey.observe(wal, object.size),
                }
            }
        }
    }
    let (wal_rule, wal) = survey.finish();
    Ok(Plan {
        policy: request.policy,
        minimum_redundancy: request.minimum_redundancy,
        now: request.now,
        backups,
        wal,
        warnings,
        wal_rule,
    })
}

/// Why a history file tells retention nothing, which only keeps more WAL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum UnreadHistory {
    #[error("stored with a compression pgops does not read")]
    Compression,
    #[error("deleted while it was read")]
    Vanished,
    /// It does not decode (corrupt, or a key the reader lacks): the store's cause.
    #[error("{0}")]
    Undecodable(String),
}

/// The timelines `timeline` descends from, read from its history file at store key
/// `key`; an inner `Err` says why the file tells nothing.
async fn history_ancestors(
    repo: &Repository,
    key: &str,
    timeline: Timeline,
) -> Result<Result<Vec<(Timeline, Lsn)>, UnreadHistory>, RetentionError> {
    let file = key.rsplit('/').next().unwrap_or(key);
    let name = &file[..file.find(".history").map_or(file.len(), |at| at + ".history".len())];
    let Some(codec) = Compression::of_copy(file, name) else {
        return Ok(Err(UnreadHistory::Compression));
    };
    let text = match repo.read_object(key, codec, METADATA_LIMIT).await {
        Ok(Some(text)) => text,
        Ok(None) => return Ok(Err(UnreadHistory::Vanished)),
        Err(e) if !e.is_transient() => return Ok(Err(UnreadHistory::Undecodable(e.cause))),
        Err(e) => return Err(e.into()),
    };
    let history = TimelineHistory::parse(timeline.0, &String::from_utf8_lossy(&text));
    Ok(Ok(history.ancestors.into_iter().map(|(ancestor, left_at)| (Timeline(ancestor), left_at)).collect()))
}

#[cfg(test)]
mod tests;
