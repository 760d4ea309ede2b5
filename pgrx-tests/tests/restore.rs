//! The restore side: `pgops wal-fetch %f %p` as restore_command brings a base backup up to
//! the newest archived WAL, proven by starting Postgres on the restored data.

use pgops_core::pipeline::Compression;
use pgops_e2e::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// wal-fetch with a short retry time: a store that is down is waited for 8 seconds.
fn wal_fetch(s3: &S3Server, repository: &str, wal: &str, dest: &std::path::Path) -> Output {
    let mut wal_fetch = s3.pgops(repository);
    wal_fetch.env("PGOPS_WAL_FETCH_RETRY_FOR", "8").args(["wal-fetch", wal]).arg(dest).output().unwrap()
}

#[test]
fn a_base_backup_replays_archived_wal_through_pgops_wal_fetch() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let primary = archiving_cluster(dir.path(), "primary", &s3, "main");
    primary.execute("CREATE TABLE orders(id int PRIMARY KEY, note text)");

    // A base backup without WAL: everything it needs to become consistent, and every row
    // written after it, can only come from the archive.
    let restored = PgCluster::at(dir.path(), "restored");
    let mut basebackup = restored.tool("pg_basebackup");
    basebackup.args(["-X", "none", "--no-sync", "-d", &primary.connstr(), "-D"]).arg(&restored.data);
    let out = basebackup.output().unwrap();
    assert!(out.status.success(), "pg_basebackup: {}", String::from_utf8_lossy(&out.stderr));

    primary.execute("INSERT INTO orders SELECT g, 'after the backup ' || g FROM generate_series(1, 5000) g");
    primary.write_and_switch();
    primary.execute("INSERT INTO orders SELECT g, 'in the last segment' FROM generate_series(5001, 5100) g");
    let last = primary.write_and_switch();
    primary.wait_archived(&last);
    let expected = primary.query_text("SELECT count(*) || '/' || sum(id) FROM orders");
    primary.stop();

    restored.take_over_config();
    restored.configure(&format!(
        "archive_mode = off\nrestore_command = '{} --repository s3://{BUCKET}/main --s3-endpoint {} wal-fetch %f %p'",
        pgops_cli().display(),
        s3.endpoint()
    ));
    restored.touch("recovery.signal");
    restored.recover();
    assert_eq!(restored.query_text("SELECT count(*) || '/' || sum(id) FROM orders"), expected);
    let log = restored.log();
    assert!(log.contains(&format!("restored log file \"{last}\" from archive")), "{log}");
    assert!(restored.pg_wal().join("pgops-prefetch").is_dir(), "replay went through the prefetch spool");
}

#[test]
fn wal_fetch_exit_statuses_tell_missing_from_broken() {
    let dir = scratch_dir();
    let mut s3 = S3Server::start(dir.path());
    let repo = s3.repository("srv");
    let segment: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let name = "000000010000000000000007";
    block_on(
        repo.put(&format!("wals/0000000100000000/{name}.zst"), Compression::Zstd.compress(&segment, 3).unwrap().into()),
    )
    .unwrap();
    block_on(repo.put("wals/0000000100000000/000000010000000000000008.zst", b"corrupt".to_vec().into())).unwrap();
    let repository = format!("s3://{BUCKET}/srv");
    let dest = dir.path().join("RECOVERYXLOG");

    let found = wal_fetch(&s3, &repository, name, &dest);
    assert_eq!(found.status.code(), Some(0), "{}", String::from_utf8_lossy(&found.stderr));
    assert!(std::fs::read(&dest).unwrap() == segment);
    std::fs::remove_file(&dest).unwrap();

    let missing = wal_fetch(&s3, &repository, "000000010000000000000009", &dest);
    assert_eq!(missing.status.code(), Some(1));
    assert!(!dest.exists());

    let corrupt = wal_fetch(&s3, &repository, "000000010000000000000008", &dest);
    // A corrupt object is never "not found" (1..=125 would end recovery): it stops it.
    assert_eq!(corrupt.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&corrupt.stderr).contains("corrupt"));
    assert!(!dest.exists());

    let bad_usage = wal_fetch(&s3, "ftp://nowhere", name, &dest);
    assert_eq!(bad_usage.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&bad_usage.stderr).contains("unsupported scheme"));

    s3.stop();
    let down = wal_fetch(&s3, &repository, name, &dest);
    assert_eq!(down.status.code(), Some(255));
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(stderr.contains(&s3.endpoint()) && stderr.contains("Connection refused"), "{stderr}");
    assert!(!dest.exists());
}

/// Runs `pgops <subcommand> <args>` against `s3://backups/<prefix>`.
fn pgops(s3: &S3Server, prefix: &str, subcommand: &str, args: &[&str]) -> Output {
    s3.pgops(&format!("s3://{BUCKET}/{prefix}")).arg(subcommand).args(args).output().unwrap()
}

fn pgops_restore(s3: &S3Server, prefix: &str, args: &[&str]) -> Output {
    pgops(s3, prefix, "restore", args)
}

/// `pgops restore --pgdata <restored's> <args>` run under strace: its output, and every path
/// it called fsync(2) on.
fn restore_tracing_fsync(
    s3: &S3Server,
    prefix: &str,
    restored: &PgCluster,
    args: &[&str],
) -> (Output, BTreeSet<PathBuf>) {
    let trace = restored.data.with_extension("fsync-trace");
    let mut restore = Command::new("strace");
    restore.args(["-f", "-qq", "-y", "-e", "trace=fsync", "-o"]).arg(&trace).arg(pgops_cli());
    restore.args(["--repository", &format!("s3://{BUCKET}/{prefix}"), "--s3-endpoint", &s3.endpoint()]);
    restore.env("AWS_ACCESS_KEY_ID", ACCESS_KEY).env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    restore.args(["restore", "--pgdata"]).arg(&restored.data).args(args);
    let out = restore.output().expect("strace runs (.ci/install installs it)");
    let traced = std::fs::read_to_string(&trace).unwrap();
    // `1234 fsync(7</path/to/file>) = 0`, or with threads `1234 fsync(7</path/to/file> <unfinished ...>`
    // and later `1234 <... fsync resumed>) = 0`: a failed fsync fails the restore, so a call is
    // counted from its first line, unless that line says it failed.
    let synced = traced
        .lines()
        .filter(|line| line.contains("fsync(") && !line.contains("= -1"))
        .filter_map(|line| Some(PathBuf::from(line.split_once('<')?.1.split_once('>')?.0)))
        .collect();
    (out, synced)
}

/// Every file and directory under `root`, `root` included.
fn tree(root: &Path) -> Vec<PathBuf> {
    let mut paths = vec![root.to_path_buf()];
    if root.is_dir() && !root.is_symlink() {
        for entry in std::fs::read_dir(root).unwrap() {
            paths.extend(tree(&entry.unwrap().path()));
        }
    }
    paths
}

/// Starts Postgres on a directory `pgops restore` wrote, as `postgres`, not archiving, and
/// waits for recovery to end.
fn start_restored(restored: &PgCluster) {
    start_restored_with(restored, "archive_mode = off\npgops.repository = ''");
}

fn start_restored_with(restored: &PgCluster, settings: &str) {
    give_to_postgres(&restored.data);
    restored.configure(settings);
    restored.take_over_config();
    restored.recover();
}

#[test]
fn pgops_restore_to_a_point_in_time_and_to_the_end() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = backing_up_cluster(dir.path(), &s3, "main", "pgops.backup_fast_checkpoint = on");
    let mut init = pg.tool("pgbench");
    init.args(["-i", "-s", "2", "-q", &pg.connstr()]);
    assert!(init.output().unwrap().status.success());
    let mut load = pg.tool("pgbench");
    // Bounded in time, so that it ends by itself (killing runuser would leave pgbench on).
    load.args(["-c", "2", "-T", "8", &pg.connstr()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut load = load.spawn().unwrap();
    let backup = pg.query_text("SELECT pgops.backup_now()");
    assert!(load.try_wait().unwrap().is_none(), "the backup ran while pgbench wrote");
    load.wait().unwrap();

    // Committed work with recorded times: 100 rows before the target, 100 after.
    pg.execute("CREATE TABLE marks(id int); INSERT INTO marks SELECT generate_series(1, 100)");
    std::thread::sleep(Duration::from_millis(1100));
    let target = pg.query_text("SELECT now()::text");
    std::thread::sleep(Duration::from_millis(1100));
    pg.execute("INSERT INTO marks SELECT generate_series(101, 200)");
    let last = pg.query_text("SELECT pg_walfile_name(pg_switch_wal())");
    pg.wait_archived(&last);
    let accounts = pg.query_text("SELECT sum(abalance) FROM pgbench_accounts");

    // Bad input first: nothing written.
    let busy = dir.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("keep"), "x").unwrap();
    let out = pgops_restore(&s3, "main", &["--pgdata", busy.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);
    let nowhere = dir.path().join("nowhere");
    let out = pgops_restore(&s3, "main", &["--pgdata", nowhere.to_str().unwrap(), "--backup", "20000101T000000"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no backup 20000101T000000"), "{out:?}");
    let out =
        pgops_restore(&s3, "main", &["--pgdata", nowhere.to_str().unwrap(), "--target-time", "2000-01-01 00:00:00+00"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no DONE backup ends before"), "{out:?}");
    assert!(!nowhere.exists());

    // Point in time: exactly the rows committed before the target.
    let pitr = PgCluster::at(dir.path(), "pitr");
    let data = pitr.data.to_str().unwrap();
    let out = pgops_restore(&s3, "main", &["--pgdata", data, "--target-time", &target, "--target-action", "promote"]);
    assert!(out.status.success(), "pgops restore: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&backup));
    // The restored directory passes pg_verifybackup before Postgres touches it.
    give_to_postgres(&pitr.data);
    let mut verify = pitr.tool("pg_verifybackup");
    verify.arg("-n").arg(&pitr.data);
    let verified = verify.output().unwrap();
    assert!(verified.status.success(), "pg_verifybackup: {}", String::from_utf8_lossy(&verified.stderr));
    start_restored(&pitr);
    assert_eq!(pitr.query_text("SELECT count(*) FROM marks"), "100");

    // To the end: every committed row.
    let end = PgCluster::at(dir.path(), "end");
    let out = pgops_restore(&s3, "main", &["--pgdata", end.data.to_str().unwrap()]);
    assert!(out.status.success(), "pgops restore: {}", String::from_utf8_lossy(&out.stderr));
    start_restored(&end);
    assert_eq!(end.query_text("SELECT count(*) FROM marks"), "200");
    assert_eq!(end.query_text("SELECT sum(abalance) FROM pgbench_accounts"), accounts);
    // PostgreSQL 18's initdb turns data checksums on: every restored page must pass them.
    let checksums = end.query_text("SHOW data_checksums");
    assert_eq!(checksums == "on", server_major() >= 18, "data_checksums = {checksums}");
    if checksums == "on" {
        end.stop();
        let mut check = end.tool("pg_checksums");
        let out = check.arg("--check").arg("-D").arg(&end.data).output().unwrap();
        assert!(
            out.status.success(),
            "pg_checksums: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // pgops verify: the backup's files against its manifest, and the WAL archive.
    let out = pgops(&s3, "main", "verify", &[]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "pgops verify: {report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(report.contains(&format!("backup {backup}: ok")) && report.contains("no gaps"), "{report}");

    // Wrong credentials: a clear message, a non-zero exit, nothing written.
    let denied = dir.path().join("denied");
    let mut restore = s3.pgops(&format!("s3://{BUCKET}/main"));
    let out =
        restore.args(["restore", "--pgdata"]).arg(&denied).env("AWS_SECRET_ACCESS_KEY", "wrong").output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HTTP 403") && stderr.contains("pgops.s3_secret_access_key"), "{stderr}");
    assert!(!denied.exists());

    // A file changed in the stored archive (same length, so only its checksum tells) stops
    // the restore.
    let repo = s3.repository("main");
    let key = format!("base/{backup}/data.tar.zst");
    let mut tar = fetch_decompressed(&repo, &key).unwrap();
    let (version, other) = (format!("{}\n", server_major()), format!("{}\n", server_major() - 1));
    let at = tar.windows(3).position(|w| w == version.as_bytes()).expect("PG_VERSION in data.tar");
    tar[at..at + 3].copy_from_slice(other.as_bytes());
    let recompressed = pgops_core::pipeline::Compression::Zstd.compress(&tar, 3).unwrap();
    block_on(repo.put(&key, recompressed.into())).unwrap();
    let out = pgops_restore(&s3, "main", &["--pgdata", dir.path().join("tampered").to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not match the backup's manifest"), "{out:?}");
    let out = pgops(&s3, "main", "verify", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("does not match the backup's manifest"), "{out:?}");

    // A WAL segment missing from the archive is a gap that verify names.
    let segments: Vec<String> = block_on(repo.list("wals/0000000100000000/"))
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .filter(|key| key.rsplit('/').next().unwrap().len() == "000000010000000000000001.zst".len())
        .collect();
    let removed = &segments[segments.len() / 2];
    block_on(repo.store.delete(removed)).unwrap();
    let out = pgops(&s3, "main", "verify", &["--json"]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{report}");
    let name = removed.rsplit('/').next().unwrap().trim_end_matches(".zst");
    assert!(report.contains("\"gaps\"") && report.contains(name), "{name} not named in {report}");
}

#[test]
fn pgops_restore_follows_a_timeline_switch() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = backing_up_cluster(dir.path(), &s3, "main", "pgops.backup_fast_checkpoint = on");
    pg.query_text("SELECT pgops.backup_now()");
    pg.execute("CREATE TABLE marks(id int); INSERT INTO marks SELECT generate_series(1, 100)");
    let last = pg.query_text("SELECT pg_walfile_name(pg_switch_wal())");
    pg.wait_archived(&last);
    pg.stop();

    // Restored and promoted: timeline 2, archiving to the same repository.
    let promoted = PgCluster::at(dir.path(), "promoted");
    let out = pgops_restore(&s3, "main", &["--pgdata", promoted.data.to_str().unwrap(), "--archive", "keep"]);
    assert!(out.status.success(), "pgops restore: {}", String::from_utf8_lossy(&out.stderr));
    start_restored_with(&promoted, &format!("{ARCHIVING}{}", s3.pgops_settings("main")));
    assert_eq!(promoted.query_text("SELECT count(*) FROM marks"), "100");
    promoted.execute("INSERT INTO marks SELECT generate_series(101, 150)");
    let last = promoted.query_text("SELECT pg_walfile_name(pg_switch_wal())");
    assert!(last.starts_with("00000002"), "{last}");
    promoted.wait_archived(&last);
    let repo = s3.repository("main");
    assert!(block_on(repo.head("wals/00000002.history.zst")).unwrap().is_some());
    promoted.stop();

    // The backup is on timeline 1; recovery follows the history file onto timeline 2.
    // Finding 8b: before it says "restored", every restored file and directory is synced.
    let again = PgCluster::at(dir.path(), "again");
    let (out, synced) = restore_tracing_fsync(&s3, "main", &again, &["--target-timeline", "latest"]);
    assert!(out.status.success(), "pgops restore: {}", String::from_utf8_lossy(&out.stderr));
    let unsynced: Vec<PathBuf> = tree(&again.data).into_iter().filter(|path| !synced.contains(path)).collect();
    assert!(unsynced.is_empty(), "restored but never fsynced: {unsynced:?}");
    // With --no-sync, nothing is, and the restore says so.
    let unsynced_copy = PgCluster::at(dir.path(), "unsynced");
    let (out, synced) = restore_tracing_fsync(&s3, "main", &unsynced_copy, &["--no-sync"]);
    assert!(out.status.success(), "pgops restore --no-sync: {}", String::from_utf8_lossy(&out.stderr));
    assert!(synced.iter().all(|path| !path.starts_with(&unsynced_copy.data)), "{synced:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-sync: the restored files were not synced"));
    start_restored(&again);
    assert_eq!(again.query_text("SELECT count(*) FROM marks"), "150");
    assert!(again.log().contains("restored log file \"00000002.history\" from archive"), "{}", again.log());
}

#[test]
fn pgops_restores_a_barman_cloud_backup_with_barman_archived_wal() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = PgCluster::init(dir.path(), "barman-primary");
    let credentials =
        format!("AWS_ACCESS_KEY_ID={ACCESS_KEY} AWS_SECRET_ACCESS_KEY={SECRET_KEY} AWS_DEFAULT_REGION=us-east-1");
    pg.configure(&format!(
        "archive_mode = on\narchive_command = 'env {credentials} {} --endpoint-url {} s3://{BUCKET} barman-srv %p'",
        barman_bin("barman-cloud-wal-archive").display(),
        s3.endpoint()
    ));
    pg.start();
    pg.execute("CREATE TABLE marks(id int); INSERT INTO marks SELECT generate_series(1, 100)");
    let connstr = pg.connstr();
    let host = connstr.split_whitespace().find_map(|kv| kv.strip_prefix("host=")).unwrap();
    let mut backup = Command::new(barman_bin("barman-cloud-backup"));
    backup.args(["--immediate-checkpoint", "--endpoint-url", &s3.endpoint(), "-h", host, "-p", &pg.port.to_string()]);
    backup.args(["-U", "postgres", &format!("s3://{BUCKET}"), "barman-srv"]);
    s3.barman_env(&mut backup);
    let out = backup.output().unwrap();
    assert!(out.status.success(), "barman-cloud-backup: {}", String::from_utf8_lossy(&out.stderr));
    pg.execute("INSERT INTO marks SELECT generate_series(101, 150)");
    let last = pg.query_text("SELECT pg_walfile_name(pg_switch_wal())");
    pg.wait_archived(&last);
    pg.stop();

    let restored = PgCluster::at(dir.path(), "restored");
    let out = pgops_restore(&s3, "barman-srv", &["--pgdata", restored.data.to_str().unwrap()]);
    assert!(out.status.success(), "pgops restore: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no manifest"), "Barman backups carry no manifest");
    start_restored(&restored);
    assert_eq!(restored.query_text("SELECT count(*) FROM marks"), "150");
}
