//! Retention against real processes: the `pgops` CLI and the extension on real PostgreSQL
//! (each supported major) over a real S3 server (s3s-fs), and Barman Cloud's tools on the
//! same repository. Time is moved by writing backups whose `backup.info` says they ended
//! days ago, never by sleeping.

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use pgops_core::retention::Policy;
use pgops_core::store::Repository;
use pgops_e2e::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::Duration;

/// A fake backup's `backup.info`: what retention reads of a DONE backup.
fn done_info(begin: u32, end: u32, ended: DateTime<Utc>) -> String {
    format!(
        "begin_wal={}\nend_time={}\nend_wal={}\nstatus=DONE\n",
        segment(begin),
        ended.format("%Y-%m-%d %H:%M:%S%.6f%:z"),
        segment(end)
    )
}

/// The timeline-1 segment at position `p` (256 segments a log file).
fn segment(p: u32) -> String {
    format!("00000001{:08X}{:08X}", p / 256, p % 256)
}

fn put(repo: &Repository, key: &str, body: impl Into<Bytes>) {
    block_on(repo.put(key, body.into())).unwrap();
}

/// A backup id `days` ago (ids sort as their start times).
fn id_days_ago(days: i64) -> (String, DateTime<Utc>) {
    let ended = Utc::now() - TimeDelta::days(days);
    (ended.format("%Y%m%dT%H%M%S").to_string(), ended)
}

/// Writes a DONE backup `days` ago beginning at WAL position `begin`, with a data object.
fn fake_backup(repo: &Repository, days: i64, begin: u32) -> String {
    let (id, ended) = id_days_ago(days);
    put(repo, &format!("base/{id}/data.tar"), vec![0u8; 512]);
    put(repo, &format!("base/{id}/backup.info"), done_info(begin, begin + 1, ended));
    id
}

/// Writes timeline-1 WAL segments at positions `range` (a few bytes each).
fn fake_wal(repo: &Repository, range: std::ops::Range<u32>) {
    block_on(async {
        for p in range {
            let name = segment(p);
            repo.put(&format!("wals/{}/{name}", &name[..16]), Bytes::from_static(b"wal")).await.unwrap();
        }
    });
}

fn keys(repo: &Repository, prefix: &str) -> BTreeSet<String> {
    block_on(repo.list(prefix)).unwrap().into_iter().map(|o| repo.relative(&o.key).unwrap().to_string()).collect()
}

fn expire(s3: &S3Server, prefix: &str, args: &[&str]) -> Output {
    s3.pgops(&format!("s3://{BUCKET}/{prefix}")).arg("expire").args(args).output().unwrap()
}

/// `pgops expire --dry-run --json` rows.
fn dry_run_rows(s3: &S3Server, prefix: &str, args: &[&str]) -> Vec<Value> {
    let out = expire(s3, prefix, &[&["--dry-run", "--json"], args].concat());
    assert!(out.status.success(), "pgops expire: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn obsolete_ids(rows: &[Value]) -> BTreeSet<String> {
    rows.iter()
        .filter(|r| r["kind"] == "backup" && r["kept"] == false)
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// A 30-day window over 1,200 WAL objects: the newest backup that ended before the
/// window and everything newer stay; older DONE backups, a FAILED one and an unfinished
/// one go, with every WAL object before the oldest kept backup's begin (more than one
/// listing page and one DeleteObjects batch).
#[test]
fn a_window_expires_old_backups_leftovers_and_more_than_a_page_of_wal() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let repo = s3.repository("window");
    fake_wal(&repo, 0..1200);
    let oldest = fake_backup(&repo, 60, 10);
    let old = fake_backup(&repo, 45, 500);
    let (failed, _) = id_days_ago(40);
    put(&repo, &format!("base/{failed}/backup.info"), "status=FAILED\nerror=boom\n");
    put(&repo, &format!("base/{failed}/data.tar"), vec![0u8; 64]);
    let window_start = fake_backup(&repo, 35, 1150);
    let (unfinished, started) = id_days_ago(33);
    put(&repo, &format!("base/{unfinished}/data.tar"), vec![0u8; 64]);
    // Written 33 days ago, as its id says (a directory written now may be a backup still
    // uploading, and is left alone for pgops.retention_incomplete_grace).
    let data = s3.root.join(BUCKET).join("window/base").join(&unfinished).join("data.tar");
    std::fs::File::options().write(true).open(data).unwrap().set_modified(started.into()).unwrap();
    let newest = fake_backup(&repo, 5, 1180);
    // barman-cloud-backup uploading now: data.tar without backup.info (written last), under
    // an id that sorts before every DONE backup (ids are its host's local time).
    let uploading = "20000101T000000".to_string();
    put(&repo, &format!("base/{uploading}/data.tar"), vec![0u8; 64]);
    put(&repo, "wals/00000002.history", "1\t0/10000000\tno recovery target specified\n");

    let rows = dry_run_rows(&s3, "window", &["--policy", "30d", "--timeline", "1"]);
    assert_eq!(obsolete_ids(&rows), BTreeSet::from([oldest.clone(), old.clone(), failed.clone(), unfinished.clone()]));
    let row = rows.iter().find(|r| r["id"] == uploading.as_str()).unwrap();
    assert!(row["kept"] == true && row["why"].as_str().unwrap().contains("perhaps a backup still uploading"), "{row}");
    let wal: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "wal").collect();
    assert_eq!(wal.len(), 1, "{rows:?}");
    assert_eq!((wal[0]["objects"].as_u64(), wal[0]["first_wal"].as_str()), (Some(1150), Some(segment(0).as_str())));
    assert_eq!(wal[0]["last_wal"], segment(1149));
    assert_eq!(keys(&repo, "wals/").len(), 1201, "a dry run deletes nothing");
    // pgops list says the same with the policy given, and nothing without one.
    let list = |args: &[&str]| -> Vec<(String, Value)> {
        let out = s3.pgops(&format!("s3://{BUCKET}/window")).args(["list", "--json"]).args(args).output().unwrap();
        assert!(out.status.success(), "pgops list: {}", String::from_utf8_lossy(&out.stderr));
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        rows.into_iter().map(|r| (r["id"].as_str().unwrap().to_string(), r["kept_by_policy"].clone())).collect()
    };
    let listed = list(&["--policy", "30d", "--timeline", "1"]);
    let listed_obsolete: BTreeSet<String> =
        listed.iter().filter(|(_, kept)| *kept == false).map(|(id, _)| id.clone()).collect();
    assert_eq!(listed_obsolete, BTreeSet::from([oldest.clone(), old.clone(), failed.clone()]), "{listed:?}");
    assert!(list(&[]).iter().all(|(_, kept)| kept.is_null()));

    let out = expire(&s3, "window", &["--policy", "RECOVERY WINDOW OF 30 DAYS", "--timeline", "1"]);
    assert!(out.status.success(), "pgops expire: {}", String::from_utf8_lossy(&out.stderr));
    let wals = keys(&repo, "wals/");
    assert_eq!(wals.len(), 51, "every segment before {} went, the history file stayed", segment(1150));
    assert!(
        wals.contains("wals/00000002.history") && wals.contains(&format!("wals/0000000100000004/{}", segment(1150)))
    );
    let dirs: BTreeSet<String> =
        keys(&repo, "base/").iter().map(|k| k.split('/').nth(1).unwrap().to_string()).collect();
    assert_eq!(dirs, BTreeSet::from([uploading, window_start, newest]));
    // Nothing left to do.
    let rows = dry_run_rows(&s3, "window", &["--policy", "30d", "--timeline", "1"]);
    assert!(obsolete_ids(&rows).is_empty() && !rows.iter().any(|r| r["kind"] == "wal"), "{rows:?}");
}

/// minimum_redundancy keeps more than the window would; and a kept (annotated) backup
/// older than the window survives with the WAL from its begin.
#[test]
fn minimum_redundancy_and_keep_marks_win_over_a_window() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let repo = s3.repository("minimum");
    fake_wal(&repo, 0..40);
    let older = fake_backup(&repo, 60, 5);
    let newer = fake_backup(&repo, 50, 20);
    assert_eq!(obsolete_ids(&dry_run_rows(&s3, "minimum", &["--policy", "7d"])), BTreeSet::from([older.clone()]));
    let rows = dry_run_rows(&s3, "minimum", &["--policy", "7d", "--minimum-redundancy", "2"]);
    assert!(obsolete_ids(&rows).is_empty(), "{rows:?}");
    let wal: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "wal").collect();
    assert_eq!(wal.len(), 1, "{rows:?}");
    assert_eq!(
        (wal[0]["objects"].as_u64(), wal[0]["last_wal"].as_str()),
        (Some(5), Some(segment(4).as_str())),
        "only the WAL before the oldest kept backup's begin (5) goes"
    );

    // Barman's keep mark, as barman-cloud-backup-keep writes it.
    put(&repo, &format!("base/{older}/annotations/keep"), "full");
    let out = expire(&s3, "minimum", &["--policy", "7d"]);
    assert!(out.status.success(), "pgops expire: {}", String::from_utf8_lossy(&out.stderr));
    assert!(keys(&repo, &format!("base/{older}/")).contains(&format!("base/{older}/backup.info")));
    assert!(keys(&repo, &format!("base/{newer}/")).contains(&format!("base/{newer}/backup.info")));
    assert_eq!(keys(&repo, "wals/").len(), 35, "WAL from the kept backup's begin (5) on stays");

    // pgops keep --release takes the mark away (the window decides again), pgops keep puts
    // it back; an unknown backup is refused (4).
    let keep = |args: &[&str]| s3.pgops(&format!("s3://{BUCKET}/minimum")).arg("keep").args(args).output().unwrap();
    let out = keep(&["--release", older.as_str()]);
    assert!(out.status.success(), "pgops keep --release: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(obsolete_ids(&dry_run_rows(&s3, "minimum", &["--policy", "7d"])), BTreeSet::from([older.clone()]));
    let out = keep(&[older.as_str()]);
    assert!(out.status.success(), "pgops keep: {}", String::from_utf8_lossy(&out.stderr));
    assert!(obsolete_ids(&dry_run_rows(&s3, "minimum", &["--policy", "7d"])).is_empty());
    let out = keep(&["20000101T000000"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("backup 20000101T000000 is not in the repository"), "{stderr}");
}

/// A backup.info that does not parse: nothing is deleted, and the error names it.
#[test]
fn a_corrupt_backup_info_stops_everything_and_is_named() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let repo = s3.repository("corrupt");
    fake_wal(&repo, 0..20);
    fake_backup(&repo, 60, 2);
    let (broken, _) = id_days_ago(50);
    put(&repo, &format!("base/{broken}/backup.info"), "status=DONE\nend_time=yesterday\n");
    fake_backup(&repo, 1, 15);
    let before = (keys(&repo, "base/"), keys(&repo, "wals/"));
    let out = expire(&s3, "corrupt", &["--policy", "REDUNDANCY 1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains(&format!("base/{broken}/backup.info")) && stderr.contains("end_time"), "{stderr}");
    assert!(stderr.contains("hint: pgops deletes nothing"), "{stderr}");
    assert_eq!((keys(&repo, "base/"), keys(&repo, "wals/")), before, "nothing deleted");
}

/// The S3 server stops in the middle of a deletion run: the run fails with the store's
/// status, nothing a kept backup needs is gone, and the next run completes.
#[test]
fn an_s3_outage_mid_run_loses_nothing_kept_and_the_next_run_finishes() {
    let dir = scratch_dir();
    let mut s3 = S3Server::start(dir.path());
    let repo = s3.repository("outage");
    fake_wal(&repo, 0..300);
    let obsolete: Vec<String> = (0..60).map(|i| fake_backup(&repo, 200 - i, i as u32)).collect();
    let kept = [fake_backup(&repo, 2, 250), fake_backup(&repo, 1, 260)];
    let kept_objects: BTreeSet<String> = kept.iter().flat_map(|id| keys(&repo, &format!("base/{id}/"))).collect();

    let first_info = s3.root.join(BUCKET).join("outage/base").join(&obsolete[0]).join("backup.info");
    let mut run = s3.pgops(&format!("s3://{BUCKET}/outage"));
    run.args(["expire", "--policy", "REDUNDANCY 2"]);
    let child = run.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // Polled tightly (not wait_for's 200 ms): the server must stop while the run is young.
    let started = std::time::Instant::now();
    while first_info.exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "the run deleted nothing");
        std::thread::sleep(Duration::from_millis(1));
    }
    s3.stop();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "the run was cut: {stderr}");
    assert!(stderr.contains("hint:"), "{stderr}");

    s3.resume();
    let kept_now: BTreeSet<String> = kept.iter().flat_map(|id| keys(&repo, &format!("base/{id}/"))).collect();
    assert_eq!(kept_now, kept_objects);
    assert!(keys(&repo, "base/").len() > kept_objects.len(), "the outage stopped the run half-way");
    let wals = keys(&repo, "wals/");
    assert!((250..300).all(|p| wals.contains(&format!("wals/{}/{}", &segment(p)[..16], segment(p)))));

    let out = expire(&s3, "outage", &["--policy", "REDUNDANCY 2"]);
    assert!(out.status.success(), "pgops expire: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(keys(&repo, "base/"), kept_objects);
    assert_eq!(keys(&repo, "wals/").len(), 50);
}

fn barman(s3: &S3Server, tool: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(barman_bin(tool));
    cmd.args(["--endpoint-url", &s3.endpoint()]).args(args);
    s3.barman_env(&mut cmd);
    cmd.output().unwrap()
}

/// Real backups of a running cluster: pgops.expire() and barman-cloud-backup-delete agree
/// on the obsolete DONE backups; keep_backup() keeps one; a real run removes the rest and
/// its WAL; Barman still lists and restores the kept ones; the oldest kept backup restores
/// and replays to a point in time after it, and `pgops verify` passes.
#[test]
fn redundancy_expires_real_backups_as_barman_would_and_the_oldest_kept_restores() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    // gzip: a codec barman-cloud-restore reads.
    let pg = backing_up_cluster(
        dir.path(),
        &s3,
        "main",
        "pgops.backup_fast_checkpoint = on\npgops.backup_compression = 'gzip'",
    );
    pg.execute("CREATE TABLE marks(id int)");
    let mut ids = Vec::new();
    for batch in 0..3 {
        ids.push(pg.query_text("SELECT pgops.backup_now()"));
        pg.execute(&format!("INSERT INTO marks SELECT generate_series({}, {})", batch * 100 + 1, batch * 100 + 100));
        pg.query_text("SELECT pg_switch_wal()");
        // Backup ids are seconds.
        std::thread::sleep(Duration::from_millis(1100));
    }
    let target = pg.query_text("SELECT now()::text");
    std::thread::sleep(Duration::from_millis(1100));
    pg.execute("INSERT INTO marks SELECT generate_series(1001, 1100)");
    let last = pg.query_text("SELECT pg_walfile_name(pg_switch_wal())");
    pg.wait_archived(&last);
    let repo = s3.repository("main");
    let (failed, _) = id_days_ago(400);
    let systemid = pg.query_text("SELECT system_identifier::text FROM pg_control_system()");
    put(&repo, &format!("base/{failed}/backup.info"), format!("status=FAILED\nerror=boom\nsystemid={systemid}\n"));

    pg.execute("ALTER SYSTEM SET pgops.retention_policy = 'REDUNDANCY 2'");
    pg.execute("SELECT pg_reload_conf()");
    // Too soon for the worker's interval (30 min), right after its start-up run.
    std::thread::sleep(Duration::from_millis(500));
    let obsolete = |pg: &PgCluster| -> BTreeSet<String> {
        pg.client()
            .query("SELECT id FROM pgops.expire() WHERE kind = 'backup' AND NOT kept", &[])
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    };
    assert_eq!(obsolete(&pg), BTreeSet::from([failed.clone(), ids[0].clone()]));
    let listed: Vec<(String, Option<bool>)> = pg
        .client()
        .query("SELECT id, kept_by_policy FROM pgops.backup_list WHERE status = 'DONE' ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(listed, vec![(ids[0].clone(), Some(false)), (ids[1].clone(), Some(true)), (ids[2].clone(), Some(true))]);

    // Barman, same repository and policy, names the same obsolete DONE backup.
    let out = barman(
        &s3,
        "barman-cloud-backup-delete",
        &[
            "--retention-policy",
            &Policy::parse("redundancy 2").unwrap().unwrap().to_string(),
            "--dry-run",
            &format!("s3://{BUCKET}"),
            "main",
        ],
    );
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "barman-cloud-backup-delete: {said}");
    let named_by_barman: BTreeSet<String> =
        said.split("/base/").skip(1).filter_map(|rest| rest.split_once('/').map(|(id, _)| id.to_string())).collect();
    assert_eq!(named_by_barman, BTreeSet::from([ids[0].clone()]), "{said}");

    // A keep mark (Barman's format) keeps the oldest; removing it makes it obsolete again.
    pg.execute(&format!("SELECT pgops.keep_backup('{}')", ids[0]));
    assert_eq!(fetch_decompressed(&repo, &format!("base/{}/annotations/keep", ids[0])).unwrap(), b"full");
    assert_eq!(obsolete(&pg), BTreeSet::from([failed.clone()]));
    pg.execute(&format!("SELECT pgops.keep_backup('{}', false)", ids[0]));
    assert_eq!(obsolete(&pg), BTreeSet::from([failed.clone(), ids[0].clone()]));

    let begin_kept = pg.query_text(&format!("SELECT begin_wal FROM pgops.backup_list WHERE id = '{}'", ids[1]));
    let wal_rows = pg.query_text("SELECT sum(objects) FROM pgops.expire() WHERE kind = 'wal'");
    assert!(wal_rows.parse::<u64>().unwrap() > 0, "WAL before {begin_kept} goes");
    pg.execute("SELECT count(*) FROM pgops.expire(dry_run => false)");
    assert!(keys(&repo, &format!("base/{}/", ids[0])).is_empty() && keys(&repo, &format!("base/{failed}/")).is_empty());
    let segments: Vec<String> = keys(&repo, "wals/")
        .into_iter()
        .filter_map(|k| k.rsplit('/').next().map(|f| f[..24.min(f.len())].to_string()))
        .filter(|name| name.len() == 24 && !name.contains('.'))
        .collect();
    assert!(segments.iter().all(|name| name.as_str() >= begin_kept.as_str()), "{segments:?} before {begin_kept}");
    assert!(segments.contains(&begin_kept));
    assert!(pg.log().contains("pgops: retention run by pgops.expire(): removed 2 backup(s)"), "{}", pg.log());
    let (first_point, last_end): (Option<std::time::SystemTime>, Option<std::time::SystemTime>) = {
        let row = pg
            .client()
            .query_one("SELECT first_recoverability_point, last_done_backup_ended FROM pgops.recoverability()", &[])
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(first_point.is_some() && first_point < last_end);

    // Barman lists the kept backups only, and restores the oldest kept one.
    let out = barman(&s3, "barman-cloud-backup-list", &["--format", "json", &format!("s3://{BUCKET}"), "main"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "barman-cloud-backup-list: {}", String::from_utf8_lossy(&out.stderr));
    assert!(listing.contains(&ids[1]) && listing.contains(&ids[2]) && !listing.contains(&ids[0]), "{listing}");
    let by_barman = dir.path().join("by-barman");
    let out =
        barman(&s3, "barman-cloud-restore", &[&format!("s3://{BUCKET}"), "main", &ids[1], by_barman.to_str().unwrap()]);
    assert!(out.status.success(), "barman-cloud-restore: {}", String::from_utf8_lossy(&out.stderr));
    assert!(by_barman.join("backup_label").exists());

    // The oldest kept backup replays to a point in time after it.
    pg.stop();
    let verify = s3.pgops(&format!("s3://{BUCKET}/main")).arg("verify").output().unwrap();
    assert!(verify.status.success(), "pgops verify: {}", String::from_utf8_lossy(&verify.stdout));
    let pitr = PgCluster::at(dir.path(), "pitr");
    restore_clone(&s3, "main", &pitr, &["--backup", &ids[1], "--target-time", &target, "--target-action", "promote"]);
    pitr.configure("archive_mode = off\npgops.repository = ''");
    pitr.recover();
    assert_eq!(pitr.query_text("SELECT count(*) FROM marks"), "300");
}

/// Moves backup `id`'s end `days` into the past by rewriting its `backup.info`.
fn age_backup(repo: &Repository, id: &str, days: i64) {
    let key = format!("base/{id}/backup.info");
    let info = String::from_utf8(block_on(repo.get(&key)).unwrap().unwrap().to_vec()).unwrap();
    let ended = (Utc::now() - TimeDelta::days(days)).format("%Y-%m-%d %H:%M:%S%.6f%:z");
    let aged: String = info
        .lines()
        .map(|line| if line.starts_with("end_time=") { format!("end_time={ended}\n") } else { format!("{line}\n") })
        .collect();
    assert_ne!(aged, info);
    put(repo, &key, aged);
}

/// The stored WAL segments (names without suffix) of `timeline`, as 8 hex digits.
fn segments_of(repo: &Repository, timeline: &str) -> BTreeSet<String> {
    keys(repo, "wals/")
        .into_iter()
        .filter_map(|key| key.rsplit('/').next().map(str::to_string))
        .filter(|file| file.len() >= 24 && file.starts_with(timeline) && !file.contains(".history"))
        .map(|file| file[..24].to_string())
        .collect()
}

/// Two backups on timeline 1, a promotion, one on timeline 2, WAL between them all. A
/// 30-day window (the timeline-1 backups aged 60 and 40 days) removes exactly the oldest
/// backup and the timeline-1 WAL before the next one, as Barman would; the oldest kept
/// backup then restores across the timeline switch to a point in time after the newest;
/// and the worker, with REDUNDANCY 2, expires the next one by itself after a new backup.
#[test]
fn across_two_timelines_a_window_and_the_worker_expire_exactly_what_no_kept_backup_needs() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = backing_up_cluster(dir.path(), &s3, "tl", "pgops.backup_fast_checkpoint = on");
    pg.execute("CREATE TABLE marks(id int)");
    let a = pg.query_text("SELECT pgops.backup_now()");
    pg.execute("INSERT INTO marks SELECT generate_series(1, 100)");
    pg.query_text("SELECT pg_switch_wal()");
    std::thread::sleep(Duration::from_millis(1100));
    let b = pg.query_text("SELECT pgops.backup_now()");
    pg.execute("INSERT INTO marks SELECT generate_series(101, 200)");
    let last = pg.query_text("SELECT pg_walfile_name(pg_switch_wal())");
    pg.wait_archived(&last);
    pg.stop();

    // Timeline 2: restored from b and promoted, archiving and backing up to the same place.
    let promoted = PgCluster::at(dir.path(), "promoted");
    restore_clone(&s3, "tl", &promoted, &["--archive", "keep"]);
    promoted.configure(&format!("{ARCHIVING}{}", s3.pgops_settings("tl")));
    promoted.recover();
    promoted.execute("INSERT INTO marks SELECT generate_series(201, 300)");
    promoted.query_text("SELECT pg_switch_wal()");
    let c = promoted.query_text("SELECT pgops.backup_now()");
    promoted.execute("INSERT INTO marks SELECT generate_series(301, 400)");
    std::thread::sleep(Duration::from_millis(1100));
    let target = promoted.query_text("SELECT now()::text");
    std::thread::sleep(Duration::from_millis(1100));
    promoted.execute("INSERT INTO marks SELECT generate_series(401, 500)");
    let last = promoted.query_text("SELECT pg_walfile_name(pg_switch_wal())");
    assert!(last.starts_with("00000002"), "{last}");
    promoted.wait_archived(&last);

    let repo = s3.repository("tl");
    age_backup(&repo, &a, 60);
    age_backup(&repo, &b, 40);
    let begin = |id: &str| promoted.query_text(&format!("SELECT begin_wal FROM pgops.backup_list WHERE id = '{id}'"));
    let (begin_b, begin_c) = (begin(&b), begin(&c));
    assert!(begin_b.starts_with("00000001") && begin_c.starts_with("00000002"));
    let (timeline_1, timeline_2) = (segments_of(&repo, "00000001"), segments_of(&repo, "00000002"));
    assert!(timeline_1.iter().any(|s| *s < begin_b), "WAL of backup a's time is there: {timeline_1:?}");

    promoted.execute("ALTER SYSTEM SET pgops.retention_policy = '30d'");
    promoted.execute("SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(500));
    let rows = promoted
        .client()
        .query("SELECT kind, id, kept, timeline, last_wal FROM pgops.expire() ORDER BY kind, id", &[])
        .unwrap();
    let obsolete: BTreeSet<String> =
        rows.iter().filter(|r| r.get::<_, String>(0) == "backup" && !r.get::<_, bool>(2)).map(|r| r.get(1)).collect();
    assert_eq!(obsolete, BTreeSet::from([a.clone()]));
    let wal: Vec<(i64, String)> =
        rows.iter().filter(|r| r.get::<_, String>(0) == "wal").map(|r| (r.get(3), r.get(4))).collect();
    assert_eq!(wal.len(), 1, "timeline 1 only: {wal:?}");
    assert!(wal[0].0 == 1 && wal[0].1 < begin_b, "{wal:?}");

    // Barman, given the same policy in its words (the policy's Display), names the same
    // obsolete backup.
    let policy = Policy::parse("30d").unwrap().unwrap().to_string();
    assert_eq!(policy, "RECOVERY WINDOW OF 30 DAYS");
    let out = barman(
        &s3,
        "barman-cloud-backup-delete",
        &["--retention-policy", &policy, "--dry-run", &format!("s3://{BUCKET}"), "tl"],
    );
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "barman-cloud-backup-delete: {said}");
    let named_by_barman: BTreeSet<String> =
        said.split("/base/").skip(1).filter_map(|rest| rest.split_once('/').map(|(id, _)| id.to_string())).collect();
    assert_eq!(named_by_barman, BTreeSet::from([a.clone()]), "{said}");

    promoted.execute("SELECT count(*) FROM pgops.expire(dry_run => false)");
    assert!(keys(&repo, &format!("base/{a}/")).is_empty());
    assert!(!keys(&repo, &format!("base/{b}/")).is_empty() && !keys(&repo, &format!("base/{c}/")).is_empty());
    let expected_1: BTreeSet<String> = timeline_1.iter().filter(|s| **s >= begin_b).cloned().collect();
    assert_eq!(segments_of(&repo, "00000001"), expected_1, "timeline 1 from {begin_b} on stays");
    assert!(segments_of(&repo, "00000002").is_superset(&timeline_2), "timeline 2 stays");
    assert!(block_on(repo.head("wals/00000002.history.zst")).unwrap().is_some(), "history files stay");

    // The oldest kept backup (b, timeline 1) replays onto timeline 2 to the target.
    let pitr = PgCluster::at(dir.path(), "pitr");
    restore_clone(
        &s3,
        "tl",
        &pitr,
        &["--backup", &b, "--target-time", &target, "--target-timeline", "latest", "--target-action", "promote"],
    );
    pitr.configure("archive_mode = off\npgops.repository = ''");
    pitr.recover();
    assert_eq!(pitr.query_text("SELECT count(*) FROM marks"), "400");
    pitr.stop();
    let verify = s3.pgops(&format!("s3://{BUCKET}/tl")).arg("verify").output().unwrap();
    assert!(verify.status.success(), "pgops verify: {}", String::from_utf8_lossy(&verify.stdout));

    // The worker applies the policy after a DONE backup: REDUNDANCY 2 keeps c and d.
    promoted.execute("ALTER SYSTEM SET pgops.retention_policy = 'REDUNDANCY 2'");
    promoted.execute("SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(500));
    let d = promoted.query_text("SELECT pgops.backup_now()");
    let logged = format!("pgops: retention (REDUNDANCY 2, minimum_redundancy 1): removed 1 backup(s) ({b})");
    wait_for("the worker's retention run", Duration::from_secs(30), || promoted.log().contains(&logged));
    assert!(keys(&repo, &format!("base/{b}/")).is_empty());
    assert!(!keys(&repo, &format!("base/{c}/")).is_empty() && !keys(&repo, &format!("base/{d}/")).is_empty());
    assert_eq!(
        segments_of(&repo, "00000001"),
        BTreeSet::new(),
        "no kept backup needs timeline 1 any more: {}",
        promoted.log()
    );
}

fn db_error(pg: &PgCluster, sql: &str) -> (String, String) {
    let err = pg.client().batch_execute(sql).expect_err(sql);
    let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
    (db.message().to_string(), db.hint().unwrap_or_default().to_string())
}

/// The settings are checked when set (ERROR + HINT), reload-only, and unit-aware; deleting
/// and marking need superuser or pgops_operator; keep_backup() names what is wrong.
#[test]
fn retention_settings_privileges_and_keep_marks_are_checked() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = backing_up_cluster(dir.path(), &s3, "checks", "pgops.backup_fast_checkpoint = on");
    let (message, hint) = db_error(&pg, "ALTER SYSTEM SET pgops.retention_policy = 'REDUNDANCY seven'");
    assert!(message.contains("invalid retention policy \"REDUNDANCY seven\""), "{message}");
    assert!(hint.contains("RECOVERY WINDOW OF <n> DAYS") && hint.contains("'30d'"), "{hint}");
    let (message, _) = db_error(&pg, "SET pgops.retention_policy = '4w'");
    assert!(message.contains("cannot be changed now"), "{message}");
    let (message, hint) = db_error(&pg, "ALTER SYSTEM SET pgops.retention_policy = 'REDUNDANCY 0'");
    assert!(message.contains("REDUNDANCY 0 would keep no backup"), "{message}");
    assert!(hint.contains("'REDUNDANCY <n>'"), "{hint}");
    for never_below_one in ["-1", "0"] {
        let (message, _) = db_error(&pg, &format!("ALTER SYSTEM SET pgops.minimum_redundancy = {never_below_one}"));
        assert!(message.contains("is outside the valid range"), "{message}");
    }
    let zero = expire(&s3, "checks", &["--dry-run", "--policy", "REDUNDANCY 2", "--minimum-redundancy", "0"]);
    assert_eq!(zero.status.code(), Some(3), "{}", String::from_utf8_lossy(&zero.stderr));
    assert_eq!(pg.query_text("SHOW pgops.minimum_redundancy"), "1");
    assert_eq!(pg.query_text("SHOW pgops.retention_interval"), "30min");
    pg.execute("ALTER SYSTEM SET pgops.retention_interval = '2h'");
    pg.execute("ALTER SYSTEM SET pgops.retention_policy = 'recovery window of 6 months'");
    pg.execute("SELECT pg_reload_conf()");
    wait_for("the reload", Duration::from_secs(10), || pg.query_text("SHOW pgops.retention_interval") == "2h");
    assert_eq!(
        pg.query_text("SELECT retention_policy FROM pgops.recoverability()"),
        "RECOVERY WINDOW OF 6 MONTHS",
        "Barman's canonical form"
    );

    let (message, hint) = db_error(&pg, "SELECT pgops.keep_backup('20000101T000000')");
    assert!(message.contains("backup 20000101T000000 is not in the repository"), "{message}");
    assert!(hint.contains("pgops.backup_list"), "{hint}");
    let repo = s3.repository("checks");
    put(&repo, "base/20000101T000000/backup.info", "status=FAILED\n");
    let (message, _) = db_error(&pg, "SELECT pgops.keep_backup('20000101T000000')");
    assert!(message.contains("is FAILED, not DONE"), "{message}");
    let (message, _) = db_error(&pg, "SELECT pgops.keep_backup('../x')");
    assert!(message.contains("is not a backup id"), "{message}");

    pg.execute("CREATE ROLE watcher; CREATE ROLE operator IN ROLE pgops_operator");
    for function in ["pgops.expire(dry_run => false)", "pgops.keep_backup('20000101T000000')", "pgops.recoverability()"]
    {
        let (message, _) = db_error(&pg, &format!("SET ROLE watcher; SELECT * FROM {function}"));
        assert!(message.contains("permission denied for function"), "{function}: {message}");
    }
    let operator = pg.client().batch_execute("SET ROLE operator; SELECT * FROM pgops.expire(dry_run => false)");
    assert!(operator.is_ok(), "{operator:?}");
    // They read this server's files and settings: never in a parallel worker.
    assert_eq!(
        pg.query_text(
            "SELECT string_agg(proparallel::text, '') FROM pg_proc WHERE proname IN ('recoverability', 'backups_text')"
        ),
        "rr"
    );

    // A repository another cluster owns: nothing is decided, let alone deleted.
    put(
        &repo,
        "pgops.json",
        r#"{"system_identifier":"1","pg_version_num":150000,"wal_segment_size":16777216,"created_by":"pgops"}"#,
    );
    let (message, hint) = db_error(&pg, "SELECT * FROM pgops.expire(dry_run => false)");
    assert!(message.contains("names system identifier 1 as the repository's owner"), "{message}");
    assert!(hint.contains("Point pgops.repository at this cluster's own repository"), "{hint}");
}

/// Without any new backup the worker applies the policy every retention_interval; a
/// catalog it cannot read is a WARNING naming the object, with a HINT, and nothing goes.
#[test]
fn the_worker_applies_the_policy_every_interval_and_warns_when_it_cannot() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = backing_up_cluster(dir.path(), &s3, "interval", "pgops.backup_fast_checkpoint = on");
    let older = pg.query_text("SELECT pgops.backup_now()");
    std::thread::sleep(Duration::from_millis(1100));
    let newer = pg.query_text("SELECT pgops.backup_now()");
    let repo = s3.repository("interval");
    put(&repo, "base/20000101T000000/backup.info", "status=DONE\nbegin_wal=000000010000000000000001\n");

    pg.execute("ALTER SYSTEM SET pgops.retention_policy = 'REDUNDANCY 1'");
    pg.execute("ALTER SYSTEM SET pgops.retention_interval = '1s'");
    pg.execute("SELECT pg_reload_conf()");
    wait_for("the worker's warning", Duration::from_secs(30), || {
        pg.log().contains("WARNING:  pgops: retention (REDUNDANCY 1) failed:")
    });
    let log = pg.log();
    assert!(log.contains("s3://backups/interval/base/20000101T000000/backup.info at "), "{log}");
    assert!(log.contains("cannot be used: the backup is DONE but has no end_time"), "{log}");
    assert!(log.contains("HINT:  pgops deletes nothing while the catalog cannot be read completely"), "{log}");
    assert!(!keys(&repo, &format!("base/{older}/")).is_empty(), "nothing deleted");

    block_on(repo.delete("base/20000101T000000/backup.info")).unwrap();
    let logged = format!("pgops: retention (REDUNDANCY 1, minimum_redundancy 1): removed 1 backup(s) ({older})");
    wait_for("the next run", Duration::from_secs(30), || pg.log().contains(&logged));
    assert!(keys(&repo, &format!("base/{older}/")).is_empty());
    assert!(!keys(&repo, &format!("base/{newer}/")).is_empty());
}

/// A STARTED backup of another instance (a clone's, another host's) may be running there:
/// never touched. One this instance started and whose worker is gone is a leftover.
#[test]
fn started_backups_of_other_instances_are_left_alone_and_our_interrupted_ones_go() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = backing_up_cluster(dir.path(), &s3, "started", "pgops.backup_fast_checkpoint = on");
    let done = pg.query_text("SELECT pgops.backup_now()");
    let repo = s3.repository("started");
    let ours = block_on(repo.get(&format!("base/{done}/pgops-owner.json"))).unwrap().expect("the owner is recorded");
    let theirs = r#"{"instance_id":"0123456789abcdef0123456789abcdef","timeline":1}"#;
    let systemid = pg.query_text("SELECT system_identifier::text FROM pg_control_system()");
    for (id, owner) in [("20000101T000000", Bytes::from(theirs)), ("20000101T000001", ours)] {
        put(&repo, &format!("base/{id}/backup.info"), format!("status=STARTED\nsystemid={systemid}\n"));
        put(&repo, &format!("base/{id}/pgops-owner.json"), owner);
    }
    pg.execute("ALTER SYSTEM SET pgops.retention_policy = 'REDUNDANCY 1'");
    pg.execute("SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(500));
    let rows: Vec<(String, bool, String)> = pg
        .client()
        .query("SELECT id, kept, why FROM pgops.expire() WHERE kind = 'backup' ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("20000101T000000".into(), true, "being taken by a running worker".into()),
            (
                "20000101T000001".into(),
                false,
                "STARTED by a worker that is gone, and a newer DONE backup is kept".into()
            ),
            (done.clone(), true, "one of the newest 1 DONE backups".into()),
        ]
    );
}

/// Finding 1, a failover in the middle of a backup: the primary dies with its backup
/// STARTED and a copy of it takes over on timeline 2. While the dead owner's heartbeat is
/// fresh the backup may be running somewhere and is left alone; once it is older than the
/// limit (30 minutes, aged here by rewriting the owner record, never by sleeping) the new
/// primary's retention marks it FAILED, expires it by the normal rules, and it pins no WAL.
#[test]
fn a_backup_left_started_by_a_dead_primary_goes_once_its_heartbeat_is_stale() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = backing_up_cluster(dir.path(), &s3, "failover", "checkpoint_completion_target = 0.9");
    let earlier = pg.query_text("SELECT pgops.backup_now(fast => true)");
    pg.wait_archived(&pg.write_and_switch());
    // A spread checkpoint (0.9 × 1 h) keeps the next backup STARTED.
    pg.execute("CREATE TABLE dirt AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
    let running = pg.query_text("SELECT pgops.backup_now(wait => false)");
    wait_for("the backup to wait for its checkpoint", Duration::from_secs(60), || {
        pg.query_text("SELECT phase FROM pg_stat_progress_basebackup") == "waiting for checkpoint to finish"
    });
    pg.wait_archived(&pg.write_and_switch());
    let mut crash = pg.tool("pg_ctl");
    crash.args(["stop", "-m", "immediate", "-D"]).arg(&pg.data);
    assert!(crash.status().unwrap().success());

    let promoted = PgCluster::at(dir.path(), "promoted");
    restore_clone(&s3, "failover", &promoted, &["--backup", &earlier, "--archive", "keep"]);
    promoted.configure(&format!(
        "{ARCHIVING}{}pgops.backup_fast_checkpoint = on\npgops.retention_policy = 'REDUNDANCY 1'\n",
        s3.pgops_settings("failover")
    ));
    promoted.recover();
    assert_eq!(promoted.query_text("SELECT timeline_id FROM pg_control_checkpoint()"), "2");
    let verdict = |id: &str| -> (bool, String) {
        let row = promoted
            .client()
            .query_one("SELECT kept, why FROM pgops.expire() WHERE kind = 'backup' AND id = $1", &[&id])
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(verdict(&running), (true, "being taken by a running worker".to_string()));

    // Thirty-one minutes later, as far as the owner record says.
    let repo = s3.repository("failover");
    let owner_key = format!("base/{running}/pgops-owner.json");
    let mut owner: Value = serde_json::from_slice(&block_on(repo.get(&owner_key)).unwrap().unwrap()).unwrap();
    owner["heartbeat"] = Value::String((Utc::now() - TimeDelta::minutes(31)).to_rfc3339());
    put(&repo, &owner_key, owner.to_string());
    // No newer DONE backup yet: kept, but no longer for running.
    let (kept, why) = verdict(&running);
    assert!(kept && why.contains("no worker can be taking it (its owner's last heartbeat"), "{why}");
    assert!(why.contains("marked FAILED, kept until a newer DONE backup is"), "{why}");

    let newest = promoted.query_text("SELECT pgops.backup_now()");
    // The run that removes it: the worker's first run, at its start, may already have
    // marked it FAILED (its heartbeat was aged by then) and named it for that alone.
    let removes_running = |line: &str| {
        line.contains("pgops: retention")
            && line.split_once(" backup object(s)").is_some_and(|(removed, _)| removed.contains(&running))
    };
    wait_for("the worker's retention run", Duration::from_secs(30), || promoted.log().lines().any(removes_running));
    assert!(keys(&repo, &format!("base/{running}/")).is_empty(), "{}", promoted.log());
    assert!(keys(&repo, &format!("base/{earlier}/")).is_empty(), "{}", promoted.log());
    let begin_newest = promoted.query_text(&format!("SELECT begin_wal FROM pgops.backup_list WHERE id = '{newest}'"));
    for timeline in ["00000001", "00000002"] {
        let left = segments_of(&repo, timeline);
        assert!(left.iter().all(|segment| *segment >= begin_newest), "{timeline}: {left:?}\n{}", promoted.log());
    }
    // And what the newest backup needs is all there.
    assert!(segments_of(&repo, "00000002").contains(&begin_newest), "{begin_newest}\n{}", promoted.log());
}

/// A standby (a restored clone kept in recovery) shares the repository: it may show the
/// plan, but only the primary deletes.
#[test]
fn a_standby_shows_the_plan_but_only_the_primary_deletes() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = backing_up_cluster(dir.path(), &s3, "standby", "pgops.backup_fast_checkpoint = on");
    let older = pg.query_text("SELECT pgops.backup_now()");
    std::thread::sleep(Duration::from_millis(1100));
    pg.query_text("SELECT pgops.backup_now()");

    let standby = PgCluster::at(dir.path(), "standby");
    // Keeps the repository settings (a standby does not archive with archive_mode = on).
    restore_clone(&s3, "standby", &standby, &["--archive", "keep"]);
    standby.configure("pgops.retention_policy = 'REDUNDANCY 1'");
    standby.touch("standby.signal");
    standby.start_with_env(&[
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]);
    wait_for("hot standby", Duration::from_secs(60), || {
        standby.client().simple_query("SELECT pg_is_in_recovery()").is_ok()
    });
    assert_eq!(standby.query_text("SELECT pg_is_in_recovery()"), "t");
    assert_eq!(standby.query_text("SELECT id FROM pgops.expire() WHERE kind = 'backup' AND NOT kept"), older);
    let (message, hint) = db_error(&standby, "SELECT * FROM pgops.expire(dry_run => false)");
    assert!(message.contains("deletes only on the primary"), "{message}");
    assert!(hint.contains("Run it on the primary"), "{hint}");
    let repo = s3.repository("standby");
    assert!(!keys(&repo, &format!("base/{older}/")).is_empty());
}

/// A retention run against a store that hangs never holds up the worker's other duties:
/// the roles file is still reconciled on a reload within seconds, and the run finishes
/// once the store answers again.
#[test]
fn a_hung_store_holds_up_the_retention_run_not_the_worker() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let roles_file = dir.path().join("roles.json");
    let declare = |role: &str| {
        std::fs::write(&roles_file, format!(r#"{{"roles": [{{"name": "{role}", "login": false}}]}}"#)).unwrap();
        give_to_postgres(&roles_file);
    };
    declare("first");
    let conf = format!(
        "pgops.backup_fast_checkpoint = on\npgops.roles_file = '{}'\npgops.retention_policy = 'REDUNDANCY 1'\npgops.retention_interval = '1s'",
        roles_file.display()
    );
    let pg = backing_up_cluster(dir.path(), &s3, "hung", &conf);
    pg.query_text("SELECT pgops.backup_now()");
    let runs =
        |pg: &PgCluster| pg.log().matches("pgops: retention (REDUNDANCY 1, minimum_redundancy 1): removed").count();
    wait_for("a retention run", Duration::from_secs(30), || runs(&pg) >= 1);

    s3.freeze();
    // Long enough for a run to start and hang.
    std::thread::sleep(Duration::from_secs(2));
    let before = runs(&pg);
    declare("second");
    pg.execute("SELECT pg_reload_conf()");
    wait_for("the roles file, while the store hangs", Duration::from_secs(10), || {
        pg.query_text("SELECT count(*) FROM pg_roles WHERE rolname = 'second'") == "1"
    });
    assert_eq!(runs(&pg), before, "the store hangs: no run finished meanwhile");
    s3.thaw();
    wait_for("the hung run to finish", Duration::from_secs(60), || runs(&pg) > before);
}

/// A point-in-time restore in place: the cluster restored from its oldest backup to a
/// moment before the newer ones and promoted onto timeline 2. The newer timeline-1
/// backups are of the abandoned branch: they never push out the backup timeline 2 came
/// from, and they stay (another clone may need them).
#[test]
fn after_a_restore_in_place_only_backups_on_this_timelines_history_count() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = backing_up_cluster(dir.path(), &s3, "pitr", "pgops.backup_fast_checkpoint = on");
    pg.execute("CREATE TABLE marks(id int)");
    let a = pg.query_text("SELECT pgops.backup_now()");
    pg.execute("INSERT INTO marks SELECT generate_series(1, 100)");
    std::thread::sleep(Duration::from_millis(1100));
    let target = pg.query_text("SELECT now()::text");
    std::thread::sleep(Duration::from_millis(1100));
    pg.execute("INSERT INTO marks SELECT generate_series(101, 200)");
    pg.query_text("SELECT pg_switch_wal()");
    let b = pg.query_text("SELECT pgops.backup_now()");
    std::thread::sleep(Duration::from_millis(1100));
    let c = pg.query_text("SELECT pgops.backup_now()");
    let last = pg.query_text("SELECT pg_walfile_name(pg_switch_wal())");
    pg.wait_archived(&last);
    pg.stop();

    let promoted = PgCluster::at(dir.path(), "promoted");
    restore_clone(
        &s3,
        "pitr",
        &promoted,
        &["--backup", &a, "--target-time", &target, "--target-action", "promote", "--archive", "keep"],
    );
    promoted.configure(&format!("{ARCHIVING}{}pgops.backup_fast_checkpoint = on\n", s3.pgops_settings("pitr")));
    promoted.recover();
    assert_eq!(promoted.query_text("SELECT count(*) FROM marks"), "100");
    assert_eq!(promoted.query_text("SELECT timeline_id FROM pg_control_checkpoint()"), "2");

    // Finding 8a: a restore without --backup or --target-timeline follows timeline 2
    // (Postgres' `latest`, from the history files), so it takes a, the newest backup that
    // reaches it, not c, the newest of the abandoned branch (which could not get there).
    promoted.execute("INSERT INTO marks SELECT generate_series(1001, 2000)");
    promoted.wait_archived(&promoted.query_text("SELECT pg_walfile_name(pg_switch_wal())"));
    let latest = PgCluster::at(dir.path(), "latest");
    restore_clone(&s3, "pitr", &latest, &[]);
    latest.configure("archive_mode = off\npgops.repository = ''");
    latest.recover();
    assert_eq!(latest.query_text("SELECT count(*) FROM marks"), "1100");
    assert_eq!(latest.query_text("SELECT timeline_id FROM pg_control_checkpoint()"), "3");
    latest.stop();

    promoted.execute("ALTER SYSTEM SET pgops.retention_policy = 'REDUNDANCY 1'");
    promoted.execute("SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(500));
    let verdicts = || -> Vec<(String, bool, String)> {
        promoted
            .client()
            .query("SELECT id, kept, why FROM pgops.expire() WHERE kind = 'backup' ORDER BY id", &[])
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect()
    };
    let rows = verdicts();
    assert_eq!(rows[0], (a.clone(), true, "one of the newest 1 DONE backups".to_string()), "{rows:?}");
    for (id, kept, why) in &rows[1..] {
        assert!(*kept && why.starts_with("not on this server's timeline history ("), "{id}: {why}");
    }
    assert_eq!(rows.len(), 3);
    // The command line cannot tell the live branch: with DONE backups on two timelines it
    // refuses (nothing deleted) until told the timeline, then counts only that history.
    let untold = expire(&s3, "pitr", &["--policy", "REDUNDANCY 1"]);
    let said = String::from_utf8_lossy(&untold.stderr);
    assert_eq!(untold.status.code(), Some(4), "{said}");
    assert!(said.contains("more than one timeline") && said.contains("--timeline N"), "{said}");
    let cli_obsolete =
        |args: &[&str]| obsolete_ids(&dry_run_rows(&s3, "pitr", &[&["--policy", "REDUNDANCY 1"], args].concat()));
    assert_eq!(cli_obsolete(&["--timeline", "2"]), BTreeSet::new());
    assert_eq!(verdicts().len(), 3, "nothing was deleted");
    let unknown = expire(&s3, "pitr", &["--dry-run", "--policy", "REDUNDANCY 1", "--timeline", "9"]);
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(4), "{said}");
    assert!(
        said.contains("the history of timeline 9 cannot be read") && said.contains("hint: Name a timeline"),
        "{said}"
    );

    // The worker's run after a backup on timeline 2: a goes, b and c stay.
    let d = promoted.query_text("SELECT pgops.backup_now()");
    let logged = format!("pgops: retention (REDUNDANCY 1, minimum_redundancy 1): removed 1 backup(s) ({a})");
    wait_for("the worker's retention run", Duration::from_secs(30), || promoted.log().contains(&logged));
    let repo = s3.repository("pitr");
    assert!(keys(&repo, &format!("base/{a}/")).is_empty());
    for kept in [&b, &c, &d] {
        assert!(!keys(&repo, &format!("base/{kept}/")).is_empty(), "{kept}: {}", promoted.log());
    }

    // Finding 2: b and c, of the abandoned branch, begin on timeline 1 after timeline 2
    // left it; they keep their own WAL but never pin timeline 2's. Another backup on
    // timeline 2: d goes, and with it timeline 2's WAL before e.
    promoted.wait_archived(&promoted.write_and_switch());
    std::thread::sleep(Duration::from_millis(1100));
    let e = promoted.query_text("SELECT pgops.backup_now()");
    let logged = format!("pgops: retention (REDUNDANCY 1, minimum_redundancy 1): removed 1 backup(s) ({d})");
    wait_for("the worker's run after e", Duration::from_secs(30), || promoted.log().contains(&logged));
    let begin = |id: &str| promoted.query_text(&format!("SELECT begin_wal FROM pgops.backup_list WHERE id = '{id}'"));
    let (begin_b, begin_e) = (begin(&b), begin(&e));
    let timeline_2 = segments_of(&repo, "00000002");
    assert!(
        !timeline_2.is_empty() && timeline_2.iter().all(|segment| *segment >= begin_e),
        "timeline 2 before {begin_e} is gone: {timeline_2:?}\n{}",
        promoted.log()
    );
    assert!(segments_of(&repo, "00000001").contains(&begin_b), "b's WAL stays");
}

/// A run that waits on the store is dropped by a reload: what the old settings planned is
/// not carried out once they changed.
#[test]
fn a_reload_drops_the_pending_run_and_plans_with_the_new_settings() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = backing_up_cluster(
        dir.path(),
        &s3,
        "reload",
        "pgops.backup_fast_checkpoint = on\npgops.retention_interval = '1s'",
    );
    let older = pg.query_text("SELECT pgops.backup_now()");
    std::thread::sleep(Duration::from_millis(1100));
    let newer = pg.query_text("SELECT pgops.backup_now()");

    s3.freeze();
    pg.execute("ALTER SYSTEM SET pgops.retention_policy = 'REDUNDANCY 1'");
    pg.execute("SELECT pg_reload_conf()");
    // Long enough for a run of REDUNDANCY 1 to start and hang.
    std::thread::sleep(Duration::from_millis(2500));
    pg.execute("ALTER SYSTEM SET pgops.retention_policy = 'REDUNDANCY 2'");
    pg.execute("SELECT pg_reload_conf()");
    wait_for("the stale run dropped", Duration::from_secs(10), || {
        pg.log().contains("pgops: retention (REDUNDANCY 1) run dropped: the configuration was reloaded")
    });
    s3.thaw();
    let logged = "pgops: retention (REDUNDANCY 2, minimum_redundancy 1): removed 0 backup(s)";
    wait_for("a run with the new settings", Duration::from_secs(60), || pg.log().contains(logged));
    let repo = s3.repository("reload");
    assert!(!keys(&repo, &format!("base/{older}/")).is_empty(), "{}", pg.log());
    assert!(!keys(&repo, &format!("base/{newer}/")).is_empty());
    assert!(!pg.log().contains("(REDUNDANCY 1, minimum_redundancy 1): removed"), "{}", pg.log());
}
