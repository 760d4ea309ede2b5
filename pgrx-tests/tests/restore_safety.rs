//! `pgops restore` under hostile or unusual input, against real PostgreSQL (each supported major) and s3s-fs
//! processes: a crafted backup, pg_wal outside the data directory, a target time without
//! an offset, and a clone next to the production cluster.

use pgops_core::backup::manifest::{self, ManifestFile, WalRange};
use pgops_e2e::*;
use std::process::Output;
use std::time::Duration;

const FAST: &str = "pgops.backup_fast_checkpoint = on";

fn pgops_restore(s3: &S3Server, prefix: &str, args: &[&str]) -> Output {
    s3.pgops(&format!("s3://{BUCKET}/{prefix}")).arg("restore").args(args).output().unwrap()
}

fn succeeded(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts Postgres on a directory `pgops restore` wrote, with the settings it restored
/// (archiving included), and waits for recovery to end.
fn start_as_restored(restored: &PgCluster) {
    give_to_postgres(&restored.data);
    restored.take_over_config();
    restored.recover();
}

#[test]
fn a_crafted_backup_cannot_write_outside_the_target_directory() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let outside = dir.path().join("outside-dir");
    std::fs::create_dir(&outside).unwrap();

    // A data archive that plants a link to a directory outside, then writes through it,
    // with a manifest and backup.info that match.
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_mode(0o777);
    header.set_size(0);
    tar.append_link(&mut header, "evil", &outside).unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o600);
    header.set_size(0);
    tar.append_data(&mut header, "evil/pwned", std::io::empty()).unwrap();
    let tar = tar.into_inner().unwrap();
    let files = [ManifestFile { path: "evil/pwned".into(), size: 0, modified: 0, crc32c: 0 }];
    let wal = WalRange { timeline: 1, start_lsn: "0/2000028".into(), end_lsn: "0/2000100".into() };
    let repo = s3.repository("crafted");
    let backup = "base/20261125T020000";
    let info = "backup_label='START WAL LOCATION: 0/2000028\\nLABEL: pgops backup 20261125T020000\\n'\n\
                end_time=2026-11-25 02:00:05.000000+00:00\nend_xlog=0/2000100\nstatus=DONE\ntimeline=1\n";
    block_on(repo.put(&format!("{backup}/backup.info"), info.into())).unwrap();
    block_on(repo.put(&format!("{backup}/data.tar"), tar.into())).unwrap();
    block_on(repo.put(&format!("{backup}/backup_manifest"), manifest::render(1, 7300, &files, &wal).into())).unwrap();

    let restored = dir.path().join("restored");
    let out = pgops_restore(&s3, "crafted", &["--pgdata", restored.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("archive member evil is a symbolic link"), "{stderr}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing written outside the target");
    assert!(std::fs::symlink_metadata(restored.join("evil")).is_err(), "no link made");
}

#[test]
fn a_cluster_with_pg_wal_elsewhere_restores_into_a_pg_wal_of_its_own() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let waldir = dir.path().join("primary-wal");
    let pg = PgCluster::init_with_waldir(dir.path(), "primary", &waldir);
    pg.configure(ARCHIVING);
    pg.configure(&s3.pgops_settings("main"));
    pg.configure(FAST);
    pg.start();
    pg.execute("CREATE EXTENSION pgops");
    pg.execute("CREATE TABLE marks(id int); INSERT INTO marks SELECT generate_series(1, 100)");
    pg.query_text("SELECT pgops.backup_now()");
    pg.execute("INSERT INTO marks SELECT generate_series(101, 250)");
    let last = pg.query_text("SELECT pg_walfile_name(pg_switch_wal())");
    pg.wait_archived(&last);
    pg.stop();
    let before = tree_listing(&waldir);

    let restored = PgCluster::at(dir.path(), "restored");
    succeeded("pgops restore", &pgops_restore(&s3, "main", &["--pgdata", restored.data.to_str().unwrap()]));
    let pg_wal = std::fs::symlink_metadata(restored.pg_wal()).unwrap();
    assert!(pg_wal.is_dir(), "pg_wal of the restored cluster is a directory, not a link");
    start_as_restored(&restored);
    assert_eq!(restored.query_text("SELECT count(*) FROM marks"), "250");
    restored.execute("INSERT INTO marks SELECT generate_series(251, 300)");
    restored.query_text("SELECT pg_switch_wal()");
    restored.stop();
    assert_eq!(tree_listing(&waldir), before, "the original cluster's WAL directory was not touched");
}

/// `now()` as the session shows it, and the same without its offset.
fn now_with_and_without_offset(pg: &PgCluster) -> (String, String) {
    let now = pg.query_text("SELECT now()::text");
    let (local, offset) = now.split_at(now.len() - 3);
    assert!(offset == "-05" || offset == "-04", "New York time expected: {now}");
    (now.clone(), local.to_string())
}

#[test]
fn a_target_time_without_offset_is_read_in_the_servers_timezone() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = backing_up_cluster(dir.path(), &s3, "main", &format!("{FAST}\ntimezone = 'America/New_York'"));
    pg.query_text("SELECT pgops.backup_now()");
    let pause = || std::thread::sleep(Duration::from_millis(1100));
    pg.execute("CREATE TABLE marks(id int); INSERT INTO marks SELECT generate_series(1, 100)");
    pause();
    let (_, first_local) = now_with_and_without_offset(&pg);
    pause();
    pg.execute("INSERT INTO marks SELECT generate_series(101, 200)");
    pause();
    let (second, _) = now_with_and_without_offset(&pg);
    pause();
    pg.execute("INSERT INTO marks SELECT generate_series(201, 300)");
    let last = pg.query_text("SELECT pg_walfile_name(pg_switch_wal())");
    pg.wait_archived(&last);

    // Typed as psql on the server shows New York time, without the offset.
    let local = PgCluster::at(dir.path(), "local");
    let args = ["--pgdata", local.data.to_str().unwrap(), "--target-time", &first_local, "--target-action", "promote"];
    let stdout = succeeded("pgops restore", &pgops_restore(&s3, "main", &args));
    assert!(stdout.contains("America/New_York =") && stdout.contains("UTC"), "{stdout}");
    start_as_restored(&local);
    assert_eq!(local.query_text("SELECT count(*) FROM marks"), "100");

    // With an offset: that instant.
    let offset = PgCluster::at(dir.path(), "offset");
    let args = ["--pgdata", offset.data.to_str().unwrap(), "--target-time", &second, "--target-action", "promote"];
    succeeded("pgops restore", &pgops_restore(&s3, "main", &args));
    start_as_restored(&offset);
    assert_eq!(offset.query_text("SELECT count(*) FROM marks"), "200");
}

/// Whether the repository holds WAL of timeline 2 (a history file or a segment).
fn timeline_2_archived(s3: &S3Server) -> bool {
    let objects = block_on(s3.repository("main").list("wals/")).unwrap();
    objects.iter().any(|o| o.key.rsplit('/').next().unwrap().starts_with("00000002"))
}

/// Status of backup `id` in the repository, as `pgops.backup_list` shows it.
fn backup_status(pg: &PgCluster, id: &str) -> String {
    pg.query_text(&format!("SELECT status FROM pgops.backup_list WHERE id = '{id}'"))
}

#[test]
fn a_restored_clone_does_not_write_into_the_production_repository() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    // Spread checkpoints (checkpoint_timeout is 1h): a backup waits in its first phase
    // until a CHECKPOINT hurries it.
    let pg = backing_up_cluster(dir.path(), &s3, "main", "");
    let checkpoint_wait = || {
        wait_for("a backup waiting for its checkpoint", Duration::from_secs(60), || {
            pg.query_text("SELECT phase FROM pg_stat_progress_basebackup") == "waiting for checkpoint to finish"
        })
    };
    let done = pg.query_text("SELECT pgops.backup_now(wait => false)");
    checkpoint_wait();
    pg.execute("CHECKPOINT");
    wait_for("the backup to finish", Duration::from_secs(60), || backup_status(&pg, &done) == "DONE");
    pg.execute("CREATE TABLE marks(id int); INSERT INTO marks SELECT generate_series(1, 100)");
    // Dirty buffers enough for the next spread checkpoint to last minutes.
    pg.execute("CREATE TABLE ballast AS SELECT g, md5(g::text) FROM generate_series(1, 300000) g");
    let last = pg.query_text("SELECT pg_walfile_name(pg_switch_wal())");
    pg.wait_archived(&last);
    // A production backup is running while the clones start.
    std::thread::sleep(Duration::from_millis(1100));
    let running = pg.query_text("SELECT pgops.backup_now(wait => false)");
    checkpoint_wait();

    // The clone ends recovery at the end of the archive (timeline 2) and writes.
    let clone = PgCluster::at(dir.path(), "clone");
    let stdout = succeeded("pgops restore", &pgops_restore(&s3, "main", &["--pgdata", clone.data.to_str().unwrap()]));
    start_as_restored(&clone);
    assert_eq!(clone.query_text("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), "00000002");
    clone.execute("INSERT INTO marks SELECT generate_series(101, 200)");
    clone.query_text("SELECT pg_switch_wal()");
    std::thread::sleep(Duration::from_secs(5));
    assert!(!timeline_2_archived(&s3), "the clone archived into the production repository");
    assert_eq!(backup_status(&pg, &running), "STARTED", "the clone's worker marked production's backup");
    assert!(stdout.contains("archiving is off") && stdout.contains("ALTER SYSTEM RESET archive_mode"), "{stdout}");
    clone.stop();

    // Kept as backed up, it does both (so the checks above can fail).
    let kept = PgCluster::at(dir.path(), "kept");
    let args = ["--pgdata", kept.data.to_str().unwrap(), "--archive", "keep"];
    let stdout = succeeded("pgops restore", &pgops_restore(&s3, "main", &args));
    assert!(stdout.contains("--archive keep"), "{stdout}");
    start_as_restored(&kept);
    kept.query_text("SELECT pg_switch_wal()");
    wait_for("the kept clone to archive timeline 2", Duration::from_secs(60), || timeline_2_archived(&s3));
    // Even a clone that reaches the repository leaves production's running backup alone:
    // it was started by another instance (pgops-owner.json; worker_safety.rs tests that).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(backup_status(&pg, &running), "STARTED");
    assert_eq!(pg.query_text("SELECT count(*) FROM marks"), "100", "the primary ran beside it all along");
}

#[test]
fn a_target_xid_takes_a_backup_that_ended_before_the_transaction_committed() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = backing_up_cluster(dir.path(), &s3, "main", FAST);
    pg.execute("CREATE TABLE marks(id int)");
    let first = pg.query_text("SELECT pgops.backup_now()");
    let mut client = pg.client();
    let mut transaction = client.transaction().unwrap();
    transaction.batch_execute("INSERT INTO marks SELECT generate_series(1, 100)").unwrap();
    let xid: i64 = transaction.query_one("SELECT txid_current()", &[]).unwrap().get(0);
    transaction.commit().unwrap();
    pg.execute("INSERT INTO marks SELECT generate_series(101, 200)");
    // Backup ids are start times in seconds.
    std::thread::sleep(Duration::from_millis(1100));
    let second = pg.query_text("SELECT pgops.backup_now()");
    let metadata = block_on(s3.repository("main").get(&format!("base/{second}/pgops-backup.json"))).unwrap().unwrap();
    assert!(String::from_utf8_lossy(&metadata).contains("\"end_snapshot\": \""), "the end snapshot is recorded");
    pg.execute("INSERT INTO marks SELECT generate_series(201, 300)");
    let last = pg.query_text("SELECT pg_walfile_name(pg_switch_wal())");
    pg.wait_archived(&last);

    // The newest backup ended after the transaction committed: recovery from it could never
    // stop there. The first one can.
    let restored = PgCluster::at(dir.path(), "restored");
    let xid = xid.to_string();
    let args = ["--pgdata", restored.data.to_str().unwrap(), "--target-xid", &xid, "--target-action", "promote"];
    let stdout = succeeded("pgops restore", &pgops_restore(&s3, "main", &args));
    start_as_restored(&restored);
    assert_eq!(restored.query_text("SELECT count(*) FROM marks"), "100");
    assert!(stdout.contains(&format!("backup {first}: the newest DONE backup whose end snapshot")), "{stdout}");
}

#[test]
fn a_pgops_backup_without_a_sound_manifest_is_refused_unless_no_verify() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = backing_up_cluster(dir.path(), &s3, "main", FAST);
    let id = pg.query_text("SELECT pgops.backup_now()");
    pg.stop();
    let repo = s3.repository("main");
    let key = format!("base/{id}/backup_manifest");
    let manifest = String::from_utf8(block_on(repo.get(&key)).unwrap().unwrap().to_vec()).unwrap();

    // The manifest deleted.
    block_on(repo.store.delete(&repo.key(&key))).unwrap();
    let target = dir.path().join("refused");
    let out = pgops_restore(&s3, "main", &["--pgdata", target.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains(&format!("backup {id} was taken by pgops but its backup_manifest is missing")), "{stderr}");
    assert!(!target.exists(), "refused before writing anything");

    // A file's size changed in the manifest's text: its own checksum tells.
    let tampered = manifest.replacen("\"Size\": ", "\"Size\": 1", 1);
    block_on(repo.put(&key, tampered.into())).unwrap();
    let out = pgops_restore(&s3, "main", &["--pgdata", target.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("backup_manifest fails its own checksum") && stderr.contains("--no-verify"), "{stderr}");
    assert!(!target.exists());

    // --no-verify restores it, saying it is unchecked.
    let out = pgops_restore(&s3, "main", &["--pgdata", target.to_str().unwrap(), "--no-verify"]);
    let stdout = succeeded("pgops restore --no-verify", &out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: --no-verify"), "{out:?}");
    assert!(stdout.contains("not checked: --no-verify") && target.join("global/pg_control").exists(), "{stdout}");
}
