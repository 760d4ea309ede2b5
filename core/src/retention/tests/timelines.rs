//! Retention across timelines: lineage, abandoned branches, interrupted backups of a
//! promoted primary.

use super::*;
use crate::backup::owner::BackupOwner;
use crate::backup::BackupId;
use crate::naming::Lsn;
use crate::store::testing::Outage;
use crate::store::Repository;
use std::sync::Arc;

/// A timeline whose history file is gone: its ancestry is unknown, so its WAL is kept from
/// the oldest kept backup's begin on (anywhere), which no kept backup's restore reads
/// before.
#[tokio::test]
async fn a_timeline_without_its_history_file_keeps_more() {
    let fixture = two_timelines();
    std::fs::remove_file(fixture.dir.path().join("srv/wals/00000002.history.zst")).unwrap();
    let repo = fixture.repo();
    let plan = plan_with(&repo, "RECOVERY WINDOW OF 2 WEEKS", 1).await.unwrap();
    // B (timeline 1, 0xA) is the oldest kept restorable from its begin: timeline 2 keeps
    // everything from 0xA, i.e. all of it, as when its history says it descends from 1.
    assert_eq!(plan.wal.iter().map(|r| r.timeline.0).collect::<Vec<_>>(), [1]);
}

async fn plan_for(
    repo: &Repository,
    policy: &str,
    system_identifier: Option<u64>,
    lineage: Option<crate::timeline::TimelineHistory>,
) -> Result<Plan, RetentionError> {
    let request = PlanRequest {
        policy: Policy::parse(policy).unwrap(),
        minimum_redundancy: 1,
        now: at(NOW),
        started_is_live: NOBODY_RUNNING,
        system_identifier,
        lineage,
        incomplete_grace: DEFAULT_INCOMPLETE_GRACE,
    };
    plan(repo, &request).await
}

/// A DONE backup on `timeline`, segments `begin`–`end`, that ended at the start of
/// segment `end` + 1 (`end_xlog`), of cluster `systemid`.
fn done_at(fixture: &Fixture, id: &str, ended: &str, timeline: u32, (begin, end): (u32, u32), systemid: &str) {
    let info = format!(
        "{}end_xlog=0/{:X}\nsystemid={systemid}\n",
        backup_info("DONE", ended, timeline, begin, end),
        (end + 1) << 24
    );
    fixture.backup(id, Some(info));
}

#[tokio::test]
async fn only_backups_on_the_servers_timeline_history_count() {
    // A (1 November, TL1 2–3) is the backup a point-in-time restore started from; the
    // server was promoted to TL2 branching from TL1 at segment 5. B and C (TL1, 8 and 15
    // November) are on the abandoned branch; D (TL2, 22 November) is the live one's.
    let fixture = Fixture::new();
    done_at(&fixture, "20261101T020000", "2026-11-01 02:10:00.000000+00:00", 1, (2, 3), "7");
    done_at(&fixture, "20261108T020000", "2026-11-08 02:10:00.000000+00:00", 1, (8, 9), "7");
    done_at(&fixture, "20261115T020000", "2026-11-15 02:10:00.000000+00:00", 1, (0xC, 0xD), "7");
    done_at(&fixture, "20261122T020000", "2026-11-22 02:10:00.000000+00:00", 2, (0x10, 0x11), "7");
    fixture.wal(1, 1..=0xE);
    fixture.history(2, 1, 5);
    fixture.wal(2, 5..=0x12);
    let repo = fixture.repo();
    let lineage = crate::timeline::TimelineHistory { timeline: 2, ancestors: vec![(1, Lsn(5 << 24))] };
    let plan = plan_for(&repo, "REDUNDANCY 2", Some(7), Some(lineage)).await.unwrap();
    let whys = verdicts(&plan);
    assert_eq!(whys[0].1, Why::Redundancy { count: 2 }, "A is where timeline 2 came from: {whys:?}");
    assert_eq!(whys[3].1, Why::Redundancy { count: 2 });
    for (id, why) in &whys[1..3] {
        let Why::OffLineage(detail) = why else { panic!("{id}: {why:?}") };
        assert!(why.keeps() && why.to_string().starts_with("not on this server's timeline history"), "{detail}");
    }
    assert!(plan.obsolete().next().is_none());
    // Timeline 2's WAL all stays (A's restore reads it), and timeline 1's from A's begin.
    let going: Vec<_> = plan.wal.iter().map(|r| (r.timeline.0, r.first.to_string(), r.last.to_string())).collect();
    assert_eq!(going, [(1, segment(1, 1), segment(1, 1))]);
    // A backup ending exactly where the lineage left its timeline is on it, as restore and
    // Postgres follow the switch; one ending a byte after is not.
    let lineage = crate::timeline::TimelineHistory { timeline: 2, ancestors: vec![(1, Lsn(4 << 24))] };
    let plan = plan_for(&repo, "REDUNDANCY 2", Some(7), Some(lineage)).await.unwrap();
    assert_eq!(verdicts(&plan)[0].1, Why::Redundancy { count: 2 }, "{:?}", verdicts(&plan));
    let lineage = crate::timeline::TimelineHistory { timeline: 2, ancestors: vec![(1, Lsn((4 << 24) - 1))] };
    let plan = plan_for(&repo, "REDUNDANCY 2", Some(7), Some(lineage)).await.unwrap();
    assert!(matches!(verdicts(&plan)[0].1, Why::OffLineage(_)), "{:?}", verdicts(&plan));
    // Without a lineage (the command line) every DONE backup counts.
    let plan = plan_for(&repo, "REDUNDANCY 2", Some(7), None).await.unwrap();
    assert_eq!(obsolete_ids(&plan), ["20261101T020000", "20261108T020000"]);
}

#[tokio::test]
async fn another_clusters_backups_are_never_counted_nor_deleted() {
    let fixture = Fixture::new();
    fixture.write(
        crate::ownership::METADATA_OBJECT,
        br#"{"system_identifier":"7","pg_version_num":150000,"wal_segment_size":16777216,"created_by":"pgops"}"#,
    );
    done_at(&fixture, "20261101T020000", "2026-11-01 02:10:00.000000+00:00", 1, (2, 3), "7");
    done_at(&fixture, "20261108T020000", "2026-11-08 02:10:00.000000+00:00", 1, (8, 9), "7");
    done_at(&fixture, "20261115T020000", "2026-11-15 02:10:00.000000+00:00", 1, (0xC, 0xD), "99");
    fixture.backup("20261116T020000", Some("status=FAILED\nsystemid=99\n".into()));
    fixture.wal(1, 1..=0xE);
    let repo = fixture.repo();
    // The command line (no server) checks against pgops.json.
    let plan = plan_for(&repo, "REDUNDANCY 1", None, None).await.unwrap();
    let whys = verdicts(&plan);
    assert_eq!(whys[2].1, Why::OtherCluster(Some("99".into())));
    assert_eq!(whys[2].1.to_string(), "another cluster's backup (system identifier 99)");
    assert_eq!(whys[3].1, Why::OtherCluster(Some("99".into())));
    assert_eq!(whys[1].1, Why::Redundancy { count: 1 });
    assert_eq!(obsolete_ids(&plan), ["20261101T020000"]);
    // A server that does not own the repository deletes nothing.
    let refused = plan_for(&repo, "REDUNDANCY 1", Some(8), None).await.unwrap_err();
    assert!(matches!(refused, RetentionError::NotOwner { .. }), "{refused}");
    assert!(refused.to_string().contains("system identifier 7"), "{refused}");
    // Without pgops.json, the server's own identifier decides.
    std::fs::remove_file(fixture.dir.path().join("srv").join(crate::ownership::METADATA_OBJECT)).unwrap();
    let plan = plan_for(&repo, "REDUNDANCY 1", Some(99), None).await.unwrap();
    assert_eq!(verdicts(&plan)[0].1, Why::OtherCluster(Some("7".into())));
    assert_eq!(verdicts(&plan)[2].1, Why::Redundancy { count: 1 });
}

#[tokio::test]
async fn a_listed_backup_info_or_keep_mark_that_cannot_be_read_stops_the_run() {
    let fixture = two_timelines();
    fixture.keep("20261108T020000", "full");
    let outage = Arc::new(Outage::new(fixture.dir.path()));
    outage.failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let repo = fixture.repo_over(outage.clone());
    for hidden in ["20261122T020000/backup.info", "20261108T020000/annotations/keep"] {
        *outage.hidden.lock().unwrap() = vec![hidden.to_string()];
        let error = plan_with(&repo, "REDUNDANCY 1", 1).await.unwrap_err();
        assert!(
            matches!(&error, RetentionError::Unreadable { location, .. } if location.ends_with(hidden)),
            "{hidden}: {error}"
        );
    }
}

#[tokio::test]
async fn the_newest_done_backup_is_never_planned_away() {
    let fixture = two_timelines();
    let repo = fixture.repo();
    // REDUNDANCY 0 does not parse; built directly, with minimum_redundancy 0, the newest
    // DONE backup still stays.
    let request = PlanRequest {
        policy: Some(Policy::Redundancy(0)),
        minimum_redundancy: 0,
        now: at(NOW),
        started_is_live: NOBODY_RUNNING,
        system_identifier: None,
        lineage: None,
        incomplete_grace: DEFAULT_INCOMPLETE_GRACE,
    };
    let plan = plan(&repo, &request).await.unwrap();
    let whys = verdicts(&plan);
    assert_eq!(whys[5], ("20261122T020000".into(), Why::MinimumRedundancy { minimum: 1 }), "{whys:?}");
    assert!(Policy::parse("REDUNDANCY 0").unwrap_err().message.contains("pgops refuses it"));
}

#[tokio::test]
async fn a_backup_marked_keep_after_the_plan_is_left_alone() {
    let fixture = two_timelines();
    let repo = fixture.repo();
    let plan = plan_with(&repo, "REDUNDANCY 2", 1).await.unwrap();
    assert!(obsolete_ids(&plan).contains(&"20261108T020000".to_string()));
    fixture.keep("20261108T020000", "full");
    let before = fixture.objects();
    let report = execute(&repo, &plan).await.unwrap();
    let after = fixture.objects();
    assert_eq!(of_backup(&after, "20261108T020000"), of_backup(&before, "20261108T020000"));
    assert_eq!(report.kept_since_plan, ["20261108T020000".parse::<BackupId>().unwrap()]);
    assert_eq!(report.wal_objects_removed, 0, "the plan's WAL rule did not count it");
    assert!(after.contains(&wal_key(1, 0xA)));
    assert!(!report.backups_removed.iter().any(|id| id.as_str() == "20261108T020000"), "{report}");
    assert!(report.to_string().contains("marked keep since the plan, so left alone: 20261108T020000"), "{report}");
}

#[tokio::test]
async fn done_backups_are_ranked_by_when_they_ended_not_by_id() {
    let fixture = Fixture::new();
    // A backup started at 03:00 local time (its id) that ended before one started at
    // 02:00 after a time zone change.
    fixture.done("20261110T030000", "2026-11-10 02:10:00.000000+00:00", 1, 2, 3);
    fixture.done("20261110T020000", "2026-11-10 04:10:00.000000+00:00", 1, 5, 6);
    fixture.wal(1, 1..=7);
    let plan = plan_with(&fixture.repo(), "REDUNDANCY 1", 1).await.unwrap();
    assert_eq!(obsolete_ids(&plan), ["20261110T030000"], "{:?}", verdicts(&plan));
}

#[tokio::test]
async fn without_a_timeline_done_backups_on_several_are_refused() {
    let fixture = two_timelines();
    let repo = fixture.repo();
    let plan = plan_with(&repo, "REDUNDANCY 1", 1).await.unwrap();
    match one_timeline_or_refuse(&repo, &plan.backups).await {
        Err(RetentionError::TimelineNeeded { found }) => assert_eq!(found, "DONE backups ended on timelines {1, 2}"),
        other => panic!("{other:?}"),
    }
    // Every DONE backup on timeline 1, but timeline 2 exists: an abandoned branch may
    // hold the newest of them.
    let branched = Fixture::new();
    branched.done("20261101T020000", "2026-11-01 02:10:00.000000+00:00", 1, 2, 3);
    branched.done("20261108T020000", "2026-11-08 02:10:00.000000+00:00", 1, 0xA, 0xB);
    let single_repo = branched.repo();
    let plan = plan_with(&single_repo, "REDUNDANCY 1", 1).await.unwrap();
    assert!(one_timeline_or_refuse(&single_repo, &plan.backups).await.is_ok());
    branched.history(2, 1, 0x5);
    match one_timeline_or_refuse(&single_repo, &plan.backups).await {
        Err(RetentionError::TimelineNeeded { found }) => assert!(found.contains("00000002.history"), "{found}"),
        other => panic!("{other:?}"),
    }
}

/// A DONE backup on `timeline`, segments `begin`–`end`, begun and ended at the start of
/// its begin and end segments' successor (`begin_xlog`, `end_xlog`).
fn done_with_lsns(fixture: &Fixture, id: &str, ended: &str, timeline: u32, (begin, end): (u32, u32)) {
    let info = format!(
        "{}begin_xlog=0/{:X}\nend_xlog=0/{:X}\n",
        backup_info("DONE", ended, timeline, begin, end),
        (begin << 24) + 0x28,
        (end + 1) << 24
    );
    fixture.backup(id, Some(info));
}

const EVERYONE_RUNNING: &StartedIsLive<'static> = &|_: &BackupId, _: Option<&BackupOwner>| true;

async fn plan_on(
    repo: &Repository,
    policy: &str,
    lineage: Option<crate::timeline::TimelineHistory>,
    incomplete_grace: chrono::Duration,
) -> Plan {
    let request = PlanRequest {
        policy: Policy::parse(policy).unwrap(),
        minimum_redundancy: 1,
        now: at(NOW),
        started_is_live: EVERYONE_RUNNING,
        system_identifier: None,
        lineage,
        incomplete_grace,
    };
    plan(repo, &request).await.unwrap()
}

fn going(plan: &Plan) -> Vec<(u32, u32, u32)> {
    plan.wal.iter().map(|r| (r.timeline.0, r.first.position.seg, r.last.position.seg)).collect()
}

/// barman-cloud-backup writes `data.tar` (and `data_0001.tar`… past its maximum archive
/// size) long before `backup.info`, and names backups by local time: such a directory is
/// never deleted while young, and never because a pgops id sorts after it.
#[tokio::test]
async fn a_backup_still_uploading_without_backup_info_is_never_deleted() {
    let fixture = Fixture::new();
    fixture.done("20261120T020000", "2026-11-20 02:10:00.000000+00:00", 1, 8, 9);
    fixture.done("20261124T020000", "2026-11-24 02:10:00.000000+00:00", 1, 0xC, 0xD);
    // Barman, started an hour ago on a host at UTC-10: its id sorts before both.
    fixture.backup("20261125T010000", None);
    fixture.touch_backup("20261125T010000", at("2026-11-25T11:00:00Z"));
    let uploading = "20261115T010000";
    fixture.backup(uploading, None);
    fixture.touch_backup(uploading, at("2026-11-25T11:30:00Z"));
    // What a run that stopped half-way through deleting left two weeks ago.
    fixture.backup("20261110T020000", None);
    fixture.wal(1, 1..=0xE);
    let repo = fixture.repo();

    let plan = plan_on(&repo, "REDUNDANCY 1", None, DEFAULT_INCOMPLETE_GRACE).await;
    let whys: std::collections::BTreeMap<String, Why> = verdicts(&plan).into_iter().collect();
    assert_eq!(whys[uploading], Why::MaybeUploading { grace_seconds: 7 * 86_400 });
    assert!(whys[uploading].to_string().contains("Barman writes backup.info last"), "{}", whys[uploading]);
    assert_eq!(whys["20261125T010000"], Why::MaybeUploading { grace_seconds: 7 * 86_400 });
    assert_eq!(whys["20261110T020000"], Why::Incomplete);
    assert_eq!(obsolete_ids(&plan), ["20261110T020000", "20261120T020000"]);
    execute(&repo, &plan).await.unwrap();
    let after = fixture.objects();
    assert_eq!(of_backup(&after, uploading).len(), 2, "{after:?}");
    assert!(of_backup(&after, "20261110T020000").is_empty());

    // With no grace at all, still not by id: written after the newest DONE backup ended.
    let plan = plan_on(&repo, "REDUNDANCY 1", None, chrono::Duration::zero()).await;
    assert!(plan.obsolete().next().is_none(), "{:?}", verdicts(&plan));
    // Once a DONE backup ends after its last write (and the grace is over), it goes.
    fixture.touch_backup(uploading, at("2026-11-23T00:00:00Z"));
    let plan = plan_on(&repo, "REDUNDANCY 1", None, chrono::Duration::days(1)).await;
    assert_eq!(obsolete_ids(&plan), ["20261115T010000"]);
}

/// An in-place point-in-time restore from A (timeline 1) branched timeline 2 at 0x10; B
/// and C, taken on timeline 1 after that point, are the abandoned branch's and kept.
/// Timeline 2's WAL is needed only from D, its own oldest kept backup: B and C begin after
/// the point timeline 2 left timeline 1, so no restore of theirs ever reads timeline 2.
#[tokio::test]
async fn an_abandoned_branchs_backups_do_not_pin_the_live_timelines_wal() {
    let fixture = Fixture::new();
    done_with_lsns(&fixture, "20261101T020000", "2026-11-01 02:10:00.000000+00:00", 1, (2, 3));
    done_with_lsns(&fixture, "20261108T020000", "2026-11-08 02:10:00.000000+00:00", 1, (0x20, 0x21));
    done_with_lsns(&fixture, "20261110T020000", "2026-11-10 02:10:00.000000+00:00", 1, (0x30, 0x31));
    done_with_lsns(&fixture, "20261120T020000", "2026-11-20 02:10:00.000000+00:00", 2, (0x40, 0x41));
    done_with_lsns(&fixture, "20261122T020000", "2026-11-22 02:10:00.000000+00:00", 2, (0x50, 0x51));
    fixture.wal(1, 1..=0x32);
    fixture.history(2, 1, 0x10);
    fixture.wal(2, 0x10..=0x52);
    let repo = fixture.repo();
    let lineage = crate::timeline::TimelineHistory { timeline: 2, ancestors: vec![(1, Lsn(0x10 << 24))] };
    let plan = plan_on(&repo, "REDUNDANCY 2", Some(lineage), DEFAULT_INCOMPLETE_GRACE).await;
    let whys = verdicts(&plan);
    assert!(matches!(whys[1].1, Why::OffLineage(_)) && matches!(whys[2].1, Why::OffLineage(_)), "{whys:?}");
    assert_eq!(obsolete_ids(&plan), ["20261101T020000"]);
    // Timeline 1 keeps from B's begin (B and C restore from it); timeline 2 from D's.
    assert_eq!(going(&plan), [(1, 1, 0x1F), (2, 0x10, 0x3F)]);
}

/// The primary died during a backup; its standby, promoted to timeline 2 at 0x30, takes
/// backups of its own. The dead primary's STARTED backup began on timeline 1 before that
/// point: it can never finish on this lineage, so it pins no WAL and goes by the rules of
/// a backup that did not finish. So does one whose owner stopped beating.
#[tokio::test]
async fn a_started_backup_that_cannot_finish_pins_no_wal_and_is_marked_failed() {
    let fixture = Fixture::new();
    let owner = |beat: &str| format!(r#"{{"instance_id":"b2","timeline":1,"heartbeat":"{beat}"}}"#);
    let dead = "20261120T020000";
    fixture.backup(
        dead,
        Some("status=STARTED\nbegin_wal=000000010000000000000020\nbegin_xlog=0/20000028\ntimeline=1\n".into()),
    );
    fixture.write(&format!("base/{dead}/pgops-owner.json"), owner("2026-11-20T02:30:00Z").as_bytes());
    fixture.touch_backup(dead, at("2026-11-20T02:30:00Z"));
    done_with_lsns(&fixture, "20261124T020000", "2026-11-24 02:10:00.000000+00:00", 2, (0x40, 0x41));
    fixture.wal(1, 0x1E..=0x30);
    fixture.history(2, 1, 0x30);
    fixture.wal(2, 0x30..=0x42);
    let repo = fixture.repo();
    let lineage = || Some(crate::timeline::TimelineHistory { timeline: 2, ancestors: vec![(1, Lsn(0x30 << 24))] });
    let plan = plan_on(&repo, "REDUNDANCY 1", lineage(), DEFAULT_INCOMPLETE_GRACE).await;
    let Why::Abandoned { reason, superseded: true } = &verdicts(&plan)[0].1 else { panic!("{:?}", verdicts(&plan)) };
    assert!(reason.contains("began at 0/20000028 on timeline 1") && reason.contains("left at 0/30000000"), "{reason}");
    assert_eq!(going(&plan), [(1, 0x1E, 0x30), (2, 0x30, 0x3F)]);
    execute(&repo, &plan).await.unwrap();
    assert!(of_backup(&fixture.objects(), dead).is_empty());

    // On the server's own timeline, a backup of another instance that beats is running;
    // one that stopped beating half an hour ago is not, and with no newer DONE backup it
    // is kept and marked FAILED.
    let running = "20261125T110000";
    fixture.backup(running, Some("status=STARTED\nbegin_wal=000000020000000000000041\ntimeline=2\n".into()));
    fixture.write(&format!("base/{running}/pgops-owner.json"), owner("2026-11-25T11:59:00Z").as_bytes());
    let plan = plan_on(&repo, "REDUNDANCY 1", lineage(), DEFAULT_INCOMPLETE_GRACE).await;
    assert_eq!(verdicts(&plan)[1].1, Why::Running);
    fixture.write(&format!("base/{running}/pgops-owner.json"), owner("2026-11-25T11:25:00Z").as_bytes());
    let plan = plan_on(&repo, "REDUNDANCY 1", lineage(), DEFAULT_INCOMPLETE_GRACE).await;
    let Why::Abandoned { reason, superseded: false } = &verdicts(&plan)[1].1 else { panic!("{:?}", verdicts(&plan)) };
    assert!(reason.contains("last heartbeat was at 2026-11-25 11:25:00"), "{reason}");
    assert!(plan.obsolete().next().is_none());
    let report = execute(&repo, &plan).await.unwrap();
    assert_eq!(report.marked_failed, [running.parse::<BackupId>().unwrap()]);
    let info = std::fs::read_to_string(fixture.dir.path().join(format!("srv/base/{running}/backup.info"))).unwrap();
    assert!(info.contains("status=FAILED\n") && info.contains("error=abandoned: its owner's last heartbeat"), "{info}");
    let plan = plan_on(&repo, "REDUNDANCY 1", lineage(), DEFAULT_INCOMPLETE_GRACE).await;
    assert_eq!(verdicts(&plan)[1].1, Why::NoNewerDone);
}
