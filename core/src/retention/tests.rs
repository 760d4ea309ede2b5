//! Retention against a repository in a temporary directory: what each rule keeps and
//! deletes, and runs that stop half-way.

use super::*;
use crate::backup::owner::BackupOwner;
use crate::backup::BackupId;
use crate::store::testing::{FailingDeletes, Outage};
use crate::store::{LocalStore, ObjectStore, Repository};
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;
use std::sync::Arc;

mod timelines;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

fn segment(timeline: u32, number: u32) -> String {
    format!("{timeline:08X}00000000{number:08X}")
}

fn wal_key(timeline: u32, number: u32) -> String {
    format!("wals/{timeline:08X}00000000/{}.zst", segment(timeline, number))
}

fn backup_info(status: &str, ended: &str, timeline: u32, begin: u32, end: u32) -> String {
    format!(
        "begin_wal={}\nend_time={ended}\nend_wal={}\nstatus={status}\ntimeline={timeline}\n",
        segment(timeline, begin),
        segment(timeline, end)
    )
}

const NOBODY_RUNNING: &StartedIsLive<'static> = &|_: &BackupId, _: Option<&BackupOwner>| false;

/// A repository on a local directory, reached through `store` (a plain local store, or
/// one that fails).
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture { dir: tempfile::tempdir().unwrap() }
    }

    fn repo(&self) -> Repository {
        Repository::new(Arc::new(LocalStore::new(self.dir.path())), "srv")
    }

    fn repo_over(&self, store: Arc<dyn ObjectStore>) -> Repository {
        Repository::new(store, "srv")
    }

    fn write(&self, relative: &str, content: &[u8]) {
        let path = self.dir.path().join("srv").join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// A backup directory: backup.info (unless `info` is `None`), data and manifest, all
    /// written five minutes after the time its id names.
    fn backup(&self, id: &str, info: Option<String>) {
        if let Some(info) = info {
            self.write(&format!("base/{id}/backup.info"), info.as_bytes());
        }
        self.write(&format!("base/{id}/data.tar.zst"), b"tar");
        self.write(&format!("base/{id}/backup_manifest"), b"{}");
        let started = chrono::NaiveDateTime::parse_from_str(id, "%Y%m%dT%H%M%S").unwrap().and_utc();
        self.touch_backup(id, started + chrono::Duration::minutes(5));
    }

    /// Sets the modification time of every file of backup `id` to `at`.
    fn touch_backup(&self, id: &str, at: DateTime<Utc>) {
        for entry in std::fs::read_dir(self.dir.path().join("srv/base").join(id)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::File::options().write(true).open(&path).unwrap().set_modified(at.into()).unwrap();
            }
        }
    }

    fn done(&self, id: &str, ended: &str, timeline: u32, begin: u32, end: u32) {
        self.backup(id, Some(backup_info("DONE", ended, timeline, begin, end)));
    }

    fn wal(&self, timeline: u32, numbers: std::ops::RangeInclusive<u32>) {
        for number in numbers {
            self.write(&wal_key(timeline, number), b"segment");
        }
    }

    /// `timeline`'s history file: branched from `parent` at the start of segment `at`.
    fn history(&self, timeline: u32, parent: u32, at: u32) {
        let text = format!("{parent}\t0/{:X}\tno recovery target specified\n", at << 24);
        let compressed = crate::pipeline::Compression::Zstd.compress(text.as_bytes(), 0).unwrap();
        self.write(&format!("wals/{timeline:08X}.history.zst"), &compressed);
    }

    fn keep(&self, id: &str, target: &str) {
        self.write(&format!("base/{id}/{KEEP_ANNOTATION}"), target.as_bytes());
    }

    /// Every object, relative to the repository.
    fn objects(&self) -> BTreeSet<String> {
        let root = self.dir.path().join("srv");
        let mut found = BTreeSet::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    found.insert(path.strip_prefix(&root).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        found
    }
}

/// Two timelines, WAL throughout, and every kind of backup:
/// - timeline 1, WAL segments 1 to 0x14 and its `.partial`: A (DONE, marked keep
///   standalone, 2–3, ended 1 November), B (DONE, 0xA–0xB, 8 November), C (FAILED, 9
///   November), F (objects without backup.info, 10 November);
/// - timeline 2, branched from 1 at 0x14, WAL 0x14 to 0x24: D (DONE, 0x16–0x17, 15
///   November), E (DONE, 0x20–0x21, 22 November).
fn two_timelines() -> Fixture {
    let fixture = Fixture::new();
    fixture.done("20261101T020000", "2026-11-01 02:10:00.000000+00:00", 1, 2, 3);
    fixture.keep("20261101T020000", "standalone");
    fixture.done("20261108T020000", "2026-11-08 02:10:00.000000+00:00", 1, 0xA, 0xB);
    fixture.backup("20261109T020000", Some("status=FAILED\nerror=store down\n".into()));
    fixture.backup("20261110T020000", None);
    fixture.done("20261115T020000", "2026-11-15 02:10:00.000000+00:00", 2, 0x16, 0x17);
    fixture.done("20261122T020000", "2026-11-22 02:10:00.000000+00:00", 2, 0x20, 0x21);
    fixture.wal(1, 1..=0x14);
    fixture.write(&format!("wals/0000000100000000/{}.partial.zst", segment(1, 0x14)), b"partial");
    fixture.write(&format!("wals/0000000100000000/{}.00000028.backup.zst", segment(1, 0xA)), b"label");
    fixture.history(2, 1, 0x14);
    fixture.wal(2, 0x14..=0x24);
    fixture
}

const NOW: &str = "2026-11-25T12:00:00Z";

async fn plan_with(repo: &Repository, policy: &str, minimum_redundancy: u32) -> Result<Plan, RetentionError> {
    let request = PlanRequest {
        policy: Policy::parse(policy).unwrap(),
        minimum_redundancy,
        now: at(NOW),
        started_is_live: NOBODY_RUNNING,
        system_identifier: None,
        lineage: None,
        incomplete_grace: DEFAULT_INCOMPLETE_GRACE,
    };
    plan(repo, &request).await
}

fn verdicts(plan: &Plan) -> Vec<(String, Why)> {
    plan.backups.iter().map(|d| (d.backup.id.to_string(), d.why.clone())).collect()
}

fn obsolete_ids(plan: &Plan) -> Vec<String> {
    plan.obsolete().map(|d| d.backup.id.to_string()).collect()
}

/// The objects of `id` in `objects`.
fn of_backup<'a>(objects: &'a BTreeSet<String>, id: &str) -> Vec<&'a str> {
    objects.iter().filter(|k| k.starts_with(&format!("base/{id}/"))).map(String::as_str).collect()
}

#[tokio::test]
async fn redundancy_keeps_the_newest_n_done_backups_and_the_wal_they_need() {
    let fixture = two_timelines();
    let repo = fixture.repo();
    let plan = plan_with(&repo, "REDUNDANCY 2", 1).await.unwrap();
    assert_eq!(
        verdicts(&plan),
        [
            ("20261101T020000".into(), Why::Keep(KeepTarget::Standalone)),
            ("20261108T020000".into(), Why::BeyondRedundancy { count: 2 }),
            ("20261109T020000".into(), Why::Failed),
            ("20261110T020000".into(), Why::Incomplete),
            ("20261115T020000".into(), Why::Redundancy { count: 2 }),
            ("20261122T020000".into(), Why::Redundancy { count: 2 }),
        ]
    );
    // Timeline 1 leads to no kept backup restorable from its begin: all of it goes but
    // the standalone backup's 2–3. Timeline 2 keeps from D's begin, 0x16.
    let ranges: Vec<_> =
        plan.wal.iter().map(|r| (r.timeline.0, r.first.to_string(), r.last.to_string(), r.objects)).collect();
    assert_eq!(
        ranges,
        [(1, segment(1, 1), segment(1, 0x14), 0x14 - 2 + 2), (2, segment(2, 0x14), segment(2, 0x15), 2)],
        "timeline 1: 0x14 segments less the kept 2, plus the .partial and .backup files"
    );
    let before = fixture.objects();
    let report = execute(&repo, &plan).await.unwrap();
    let after = fixture.objects();
    let gone: BTreeSet<_> = before.difference(&after).cloned().collect();
    let expected_gone: BTreeSet<String> = ["20261108T020000", "20261109T020000", "20261110T020000"]
        .iter()
        .flat_map(|id| of_backup(&before, id))
        .map(str::to_string)
        .chain((1..=0x14).filter(|n| !(2..=3).contains(n)).map(|n| wal_key(1, n)))
        .chain([
            format!("wals/0000000100000000/{}.partial.zst", segment(1, 0x14)),
            format!("wals/0000000100000000/{}.00000028.backup.zst", segment(1, 0xA)),
            wal_key(2, 0x14),
            wal_key(2, 0x15),
        ])
        .collect();
    assert_eq!(gone, expected_gone);
    assert!(after.contains("wals/00000002.history.zst"), "history files always stay");
    assert_eq!(report.backups_removed.len(), 3);
    assert_eq!(report.wal_objects_removed, plan.wal.iter().map(|r| r.objects).sum::<u64>());
    assert_eq!(report.backup_objects_removed + report.wal_objects_removed, gone.len() as u64);
    // Run again: nothing more goes.
    let again = plan_with(&repo, "REDUNDANCY 2", 1).await.unwrap();
    assert!(again.obsolete().next().is_none() && again.wal.is_empty(), "{again:?}");
}

#[tokio::test]
async fn a_recovery_window_keeps_the_newest_backup_that_ended_before_it_and_everything_newer() {
    let fixture = two_timelines();
    let repo = fixture.repo();
    // 14 days before 25 November 12:00 is 11 November 12:00: B (8 November) is the
    // newest that ended before; D and E are inside.
    let plan = plan_with(&repo, "RECOVERY WINDOW OF 2 WEEKS", 1).await.unwrap();
    assert_eq!(
        verdicts(&plan)[1..]
            .iter()
            .filter(|(_, why)| matches!(why, Why::RecoveryWindowStart | Why::WithinRecoveryWindow))
            .count(),
        3
    );
    assert_eq!(verdicts(&plan)[1], ("20261108T020000".into(), Why::RecoveryWindowStart));
    assert_eq!(verdicts(&plan)[4], ("20261115T020000".into(), Why::WithinRecoveryWindow));
    assert_eq!(obsolete_ids(&plan), ["20261109T020000", "20261110T020000"]);
    // B on timeline 1 is restorable onto timeline 2: timeline 2's WAL all stays (it
    // leads from B's range), timeline 1 keeps from B's begin.
    let ranges: Vec<_> = plan.wal.iter().map(|r| (r.timeline.0, r.first.to_string(), r.last.to_string())).collect();
    assert_eq!(ranges, [(1, segment(1, 1), segment(1, 9))]);
    assert_eq!(plan.wal[0].objects, 9 - 2, "A's 2 and 3 stay (keep standalone)");

    // 7 days: D (15 November) ended before the window and is its start; B is outside.
    let plan = plan_with(&repo, "7d", 1).await.unwrap();
    assert_eq!(obsolete_ids(&plan), ["20261108T020000", "20261109T020000", "20261110T020000"]);
    assert_eq!(verdicts(&plan)[4].1, Why::RecoveryWindowStart);
    assert_eq!(verdicts(&plan)[5].1, Why::WithinRecoveryWindow);
    // A is kept standalone: restorable to its end only, not a point-in-time start; D is.
    assert_eq!(plan.recoverable_from(), Some(at("2026-11-15T02:10:00Z")));
    std::fs::remove_file(fixture.dir.path().join(format!("srv/base/20261101T020000/{KEEP_ANNOTATION}"))).unwrap();
    let plan = plan_with(&repo, "7d", 1).await.unwrap();
    assert_eq!(plan.recoverable_from(), Some(at("2026-11-15T02:10:00Z")), "D, the window's start");
    // Without the WAL survey (what monitoring reads), the same answers.
    let request = PlanRequest {
        policy: Policy::parse("7d").unwrap(),
        minimum_redundancy: 1,
        now: plan.now,
        started_is_live: NOBODY_RUNNING,
        system_identifier: None,
        lineage: None,
        incomplete_grace: DEFAULT_INCOMPLETE_GRACE,
    };
    let decisions = assess(&repo, &request).await.unwrap();
    assert_eq!(decisions, plan.backups);
    assert_eq!(recoverable_from(&decisions), plan.recoverable_from());
    assert_eq!(last_done_ended(&decisions), Some(at("2026-11-22T02:10:00Z")), "E, the newest DONE backup");
    // The rows pgops.expire() and pgops expire show: the backups, then the WAL per timeline.
    let rows = plan.rows();
    assert_eq!(rows.len(), plan.backups.len() + plan.wal.len());
    let first = &rows[0];
    assert_eq!(
        (first.kind, first.id.as_deref(), first.status.as_deref()),
        (RowKind::Backup, Some("20261101T020000"), Some("DONE"))
    );
    // Its keep mark is gone: outside the window now.
    assert!(!first.kept && first.why.contains("ended before the recovery window began"), "{first:?}");
    assert_eq!(rows[2].status.as_deref(), Some("FAILED"));
    assert!(!rows[2].kept);
    for (row, range) in rows[plan.backups.len()..].iter().zip(&plan.wal) {
        assert_eq!(row.kind, RowKind::Wal);
        assert_eq!((row.timeline, row.objects, row.bytes), (Some(range.timeline.0), range.objects, range.bytes));
        assert_eq!(row.first_wal.as_deref(), Some(range.first.to_string().as_str()));
        assert!(!row.kept && row.why.contains(&range.before.to_string()));
    }
}

#[tokio::test]
async fn minimum_redundancy_wins_over_the_policy() {
    let fixture = two_timelines();
    let repo = fixture.repo();
    // A 1-day window keeps E alone (it ended before the window began); 3 are wanted.
    let plan = plan_with(&repo, "1d", 3).await.unwrap();
    assert_eq!(verdicts(&plan)[5].1, Why::RecoveryWindowStart);
    assert_eq!(verdicts(&plan)[4].1, Why::MinimumRedundancy { minimum: 3 });
    assert_eq!(verdicts(&plan)[1].1, Why::MinimumRedundancy { minimum: 3 });
    assert_eq!(obsolete_ids(&plan), ["20261109T020000", "20261110T020000"]);
    let plan = plan_with(&repo, "REDUNDANCY 1", 3).await.unwrap();
    assert_eq!(verdicts(&plan)[5].1, Why::Redundancy { count: 1 });
    assert_eq!(verdicts(&plan)[4].1, Why::MinimumRedundancy { minimum: 3 });
    assert_eq!(verdicts(&plan)[1].1, Why::MinimumRedundancy { minimum: 3 });
}

/// Barman counts a backup marked keep among the newest N, and a keep mark on an old
/// backup keeps it (full: with all WAL after its begin).
#[tokio::test]
async fn kept_backups_stay_with_their_wal_and_count_among_the_newest_n() {
    let fixture = two_timelines();
    fixture.keep("20261122T020000", "full");
    fixture.keep("20261108T020000", "full");
    let repo = fixture.repo();
    let plan = plan_with(&repo, "REDUNDANCY 1", 0).await.unwrap();
    let whys = verdicts(&plan);
    assert_eq!(whys[5].1, Why::Keep(KeepTarget::Full), "the newest, kept, is the one of REDUNDANCY 1");
    assert_eq!(whys[4].1, Why::BeyondRedundancy { count: 1 });
    assert_eq!(whys[1].1, Why::Keep(KeepTarget::Full));
    assert_eq!(whys[0].1, Why::Keep(KeepTarget::Standalone));
    execute(&repo, &plan).await.unwrap();
    let after = fixture.objects();
    // B kept full: every segment from its begin on, on both timelines.
    for number in 0xA..=0x14 {
        assert!(after.contains(&wal_key(1, number)), "{number:X}");
    }
    for number in 0x14..=0x24 {
        assert!(after.contains(&wal_key(2, number)), "{number:X}");
    }
    // A kept standalone: its begin to end segment, nothing around it.
    assert!(after.contains(&wal_key(1, 2)) && after.contains(&wal_key(1, 3)));
    assert!(!after.contains(&wal_key(1, 1)) && !after.contains(&wal_key(1, 4)));
    assert!(after.contains("base/20261101T020000/backup.info") && after.contains("base/20261101T020000/data.tar.zst"));
    assert!(!after.iter().any(|k| k.starts_with("base/20261115T020000/")), "D went");
}

#[tokio::test]
async fn failed_and_unfinished_backups_go_only_once_a_newer_done_backup_is_kept() {
    let fixture = Fixture::new();
    fixture.done("20261101T020000", "2026-11-01 02:10:00+00:00", 1, 2, 3);
    fixture.backup("20261102T020000", Some("status=FAILED\n".into()));
    fixture.backup("20261103T020000", Some("status=STARTED\nbegin_wal=000000010000000000000005\n".into()));
    fixture.backup("20261104T020000", None);
    fixture.done("20261105T020000", "2026-11-05 02:10:00+00:00", 1, 8, 9);
    fixture.backup("20261106T020000", Some("status=FAILED\n".into()));
    fixture.backup("20261107T020000", None);
    fixture.backup("20261108T020000", Some("status=STARTED\n".into()));
    fixture.backup("20261109T020000", Some("status=WAITING_FOR_WALS\n".into()));
    let repo = fixture.repo();
    let plan = plan_with(&repo, "REDUNDANCY 2", 1).await.unwrap();
    let whys: Vec<Why> = verdicts(&plan).into_iter().map(|(_, why)| why).collect();
    assert_eq!(
        whys,
        [
            Why::Redundancy { count: 2 },
            Why::Failed,
            Why::Interrupted,
            Why::Incomplete,
            Why::Redundancy { count: 2 },
            Why::NoNewerDone,
            Why::NoNewerDone,
            Why::NoNewerDone,
            Why::UnknownStatus("WAITING_FOR_WALS".into()),
        ]
    );
}

#[tokio::test]
async fn a_started_backup_of_a_live_worker_is_never_touched() {
    let fixture = Fixture::new();
    fixture.backup("20261101T010000", Some("status=STARTED\nbegin_wal=000000010000000000000001\n".into()));
    // Its worker beats (a minute ago).
    fixture.write(
        "base/20261101T010000/pgops-owner.json",
        br#"{"instance_id":"a1","timeline":1,"heartbeat":"2026-11-25T11:59:00Z"}"#,
    );
    fixture.touch_backup("20261101T010000", at("2026-11-01T01:05:00Z"));
    fixture.done("20261101T020000", "2026-11-01 02:10:00+00:00", 1, 2, 3);
    fixture.done("20261105T020000", "2026-11-05 02:10:00+00:00", 1, 8, 9);
    fixture.wal(1, 1..=9);
    let repo = fixture.repo();
    let live: &StartedIsLive<'_> = &|id: &BackupId, _: Option<&BackupOwner>| id.as_str() == "20261101T010000";
    let request = PlanRequest {
        policy: Policy::parse("REDUNDANCY 1").unwrap(),
        minimum_redundancy: 1,
        now: at(NOW),
        started_is_live: live,
        system_identifier: None,
        lineage: None,
        incomplete_grace: DEFAULT_INCOMPLETE_GRACE,
    };
    let plan = plan(&repo, &request).await.unwrap();
    assert_eq!(verdicts(&plan)[0].1, Why::Running);
    assert_eq!(obsolete_ids(&plan), ["20261101T020000"]);
    assert!(plan.wal.is_empty(), "the running backup needs the WAL from its begin on: {:?}", plan.wal);
    execute(&repo, &plan).await.unwrap();
    let after = fixture.objects();
    assert_eq!(of_backup(&after, "20261101T010000").len(), 4);
    assert!((1..=9).all(|n| after.contains(&wal_key(1, n))));
    // Once its worker is gone, it goes.
    let plan = plan_with(&repo, "REDUNDANCY 1", 1).await.unwrap();
    assert_eq!(verdicts(&plan)[0].1, Why::Interrupted);
}

#[tokio::test]
async fn without_a_policy_nothing_goes() {
    let fixture = two_timelines();
    let repo = fixture.repo();
    let plan = plan_with(&repo, "", 1).await.unwrap();
    assert!(plan.backups.iter().all(|d| d.why == Why::NoPolicy));
    assert!(plan.wal.is_empty());
    let before = fixture.objects();
    assert_eq!(execute(&repo, &plan).await.unwrap(), ExpireReport::default());
    assert_eq!(fixture.objects(), before);
}

#[tokio::test]
async fn a_catalog_that_cannot_be_read_completely_deletes_nothing() {
    let fixture = two_timelines();
    fixture.write("base/20261115T020000/backup.info", b"status=DONE\nbegin_wal=000000020000000000000016\n");
    let repo = fixture.repo();
    let err = plan_with(&repo, "REDUNDANCY 1", 1).await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("base/20261115T020000/backup.info"), "{message}");
    assert!(message.contains("no end_time"), "{message}");
    assert!(err.hint().contains("deletes nothing"), "{}", err.hint());

    fixture.write("base/20261115T020000/backup.info", backup_info("DONE", "yesterday", 2, 0x16, 0x17).as_bytes());
    let message = plan_with(&repo, "REDUNDANCY 1", 1).await.unwrap_err().to_string();
    assert!(message.contains("end_time \"yesterday\""), "{message}");

    // A store that cannot list.
    let outage = Arc::new(Outage::new(fixture.dir.path()));
    let err = plan_with(&fixture.repo_over(outage), "REDUNDANCY 1", 1).await.unwrap_err();
    assert!(matches!(err, RetentionError::Store(_)) && err.to_string().contains("srv/pgops.json"), "{err}");
}

/// Stopped after any number of deletions, a run leaves every object a complete run keeps
/// (so every kept backup restores), never data of a backup still offered for restore
/// (its backup.info goes first); the next run finishes the job.
#[tokio::test]
async fn an_interrupted_run_keeps_what_kept_backups_need_and_the_next_run_finishes() {
    let complete = two_timelines();
    execute(&complete.repo(), &plan_with(&complete.repo(), "REDUNDANCY 2", 1).await.unwrap()).await.unwrap();
    let kept = complete.objects();
    let deletions = two_timelines().objects().len() - kept.len();
    assert!(deletions > 20, "{deletions}");

    for allowed in 0..deletions as u64 {
        let fixture = two_timelines();
        let before = fixture.objects();
        let failing = fixture.repo_over(Arc::new(FailingDeletes::new(fixture.dir.path(), allowed)));
        let plan = plan_with(&failing, "REDUNDANCY 2", 1).await.unwrap();
        let failure = execute(&failing, &plan).await.unwrap_err();
        assert!(failure.to_string().contains("connection refused"), "{failure}");
        let left = fixture.objects();
        // The run marks each backup it deletes first (EXPIRING_MARKER, removed last).
        let markers = left.iter().filter(|key| key.ends_with(super::catalog::EXPIRING_MARKER)).count();
        assert!(markers <= 1, "{left:?}");
        // Each of the three obsolete backups spends one delete on its marker.
        let deleted = before.len() + markers - left.len();
        assert!(deleted <= allowed as usize && allowed as usize - deleted <= 3, "the failure stopped the run");
        assert!(
            kept.is_subset(&left),
            "after {allowed} deletions: {:?} lost",
            kept.difference(&left).collect::<Vec<_>>()
        );
        for id in ["20261108T020000", "20261109T020000", "20261110T020000"] {
            let mut objects = of_backup(&left, id);
            objects.retain(|key| !key.ends_with(super::catalog::EXPIRING_MARKER));
            let info = format!("base/{id}/backup.info");
            assert!(
                !objects.contains(&info.as_str()) || objects.len() == of_backup(&before, id).len(),
                "after {allowed} deletions, {id} is offered for restore without all its data: {objects:?}"
            );
        }
        let resumed = plan_with(&fixture.repo(), "REDUNDANCY 2", 1).await.unwrap();
        execute(&fixture.repo(), &resumed).await.unwrap();
        assert_eq!(fixture.objects(), kept, "after {allowed} deletions, the next run finishes");
    }
}

/// More than a page of WAL (2,500 segments): listed page by page, deleted in batches of
/// at most 1,000 keys, completely.
#[tokio::test]
async fn more_than_a_page_of_wal_is_expired_completely() {
    let fixture = Fixture::new();
    fixture.wal(1, 1..=2600);
    fixture.done("20261101T020000", "2026-11-01 02:10:00+00:00", 1, 2, 3);
    fixture.done("20261120T020000", "2026-11-20 02:10:00+00:00", 1, 2501, 2502);
    let store = Arc::new(FailingDeletes::new(fixture.dir.path(), u64::MAX));
    let repo = fixture.repo_over(store.clone());
    let plan = plan_with(&repo, "REDUNDANCY 1", 1).await.unwrap();
    assert_eq!(plan.wal.len(), 1);
    assert_eq!((plan.wal[0].first.to_string(), plan.wal[0].last.to_string()), (segment(1, 1), segment(1, 2500)));
    assert_eq!(plan.wal[0].objects, 2500);
    assert_eq!(plan.wal[0].bytes, 2500 * b"segment".len() as u64);
    let report = execute(&repo, &plan).await.unwrap();
    assert_eq!(report.wal_objects_removed, 2500);
    let left = fixture.objects();
    assert!((1..=2500).all(|n| !left.contains(&wal_key(1, n))));
    assert!((2501..=2600).all(|n| left.contains(&wal_key(1, n))));
    let batches = store.batches.lock().unwrap().clone();
    assert!(batches.iter().all(|&size| size <= 1000), "{batches:?}");
    assert!(batches.iter().filter(|&&size| size > 0).count() >= 3, "{batches:?}");
}
