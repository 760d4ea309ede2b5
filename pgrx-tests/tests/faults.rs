//! The bad day: a store that fails requests, goes down or freezes while Postgres
//! archives, backs up and recovers. Faults come from a proxy of the harness in front of the
//! S3 server (503s, 500s, connections closed without an answer, all requests refused) or
//! from stopping the server process (SIGSTOP: connections accepted and never answered).

use pgops_e2e::*;
use std::process::Output;
use std::time::{Duration, Instant};

fn pgops(endpoint: &str, prefix: &str, args: &[&str]) -> Output {
    let mut pgops = std::process::Command::new(pgops_cli());
    pgops.args(["--repository", &format!("s3://{BUCKET}/{prefix}"), "--s3-endpoint", endpoint]);
    pgops.env("AWS_ACCESS_KEY_ID", ACCESS_KEY).env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    pgops.args(args).output().unwrap()
}

/// A primary with a DONE backup and `batches` WAL segments of rows archived after it;
/// returns it (stopped) with the row count after each batch and the LSN after each batch.
fn primary_with_archived_batches(dir: &std::path::Path, s3: &S3Server, batches: u32) -> (Vec<String>, Vec<String>) {
    let pg = backing_up_cluster(dir, s3, "main", "pgops.backup_fast_checkpoint = on");
    pg.execute("CREATE TABLE ledger(id bigserial PRIMARY KEY, batch int, note text)");
    pg.query_text("SELECT pgops.backup_now()");
    let (mut counts, mut lsns) = (Vec::new(), Vec::new());
    let mut last = String::new();
    for batch in 1..=batches {
        pg.execute(&format!(
            "INSERT INTO ledger(batch, note) SELECT {batch}, md5(g::text) FROM generate_series(1, 5000) g"
        ));
        counts.push(pg.query_text("SELECT count(*) FROM ledger"));
        lsns.push(pg.query_text("SELECT pg_current_wal_insert_lsn()::text"));
        last = pg.query_text("SELECT pg_walfile_name(pg_switch_wal())");
    }
    pg.wait_archived(&last);
    pg.stop();
    (counts, lsns)
}

/// `pgops restore` into `name`, with restore_command going through `endpoint`.
fn restore(dir: &std::path::Path, name: &str, endpoint: &str, args: &[&str]) -> PgCluster {
    let restored = PgCluster::at(dir, name);
    let mut all = vec!["restore", "--pgdata", restored.data.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = pgops(endpoint, "main", &all);
    assert!(out.status.success(), "pgops restore: {}", String::from_utf8_lossy(&out.stderr));
    give_to_postgres(&restored.data);
    restored.configure("archive_mode = off\npgops.repository = ''");
    restored.take_over_config();
    restored
}

#[test]
fn replay_through_a_flaky_then_downed_store_brings_back_every_committed_row() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let (counts, lsns) = primary_with_archived_batches(dir.path(), &s3, 12);
    let proxy = FaultProxy::start(s3.port);

    // To the end: bursts of 6 failures in a row (more than the S3 client's 5 attempts) and then
    // the store down for 15 seconds in the middle of the replay.
    let end = restore(dir.path(), "end", &proxy.endpoint(), &[]);
    proxy.set(Fault::Flaky { period: 9, burst: 6 });
    end.start_with_env(&[
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]);
    wait_for("a few segments replayed", Duration::from_secs(120), || {
        end.log().matches("restored log file").count() >= 4
    });
    proxy.set(Fault::Down);
    std::thread::sleep(Duration::from_secs(15));
    proxy.set(Fault::Flaky { period: 9, burst: 6 });
    wait_for("recovery to end", Duration::from_secs(300), || end.query_text("SELECT pg_is_in_recovery()") == "f");
    assert_eq!(end.query_text("SELECT count(*) FROM ledger"), *counts.last().unwrap(), "{}", end.log());
    // The archive's end ends recovery: one new timeline, no earlier promotion.
    assert_eq!(end.query_text("SELECT timeline_id FROM pg_control_checkpoint()"), "2");
    let log = end.log();
    assert!(log.contains("retrying in"), "the outage was seen and waited out:\n{log}");
    assert!(proxy.failed() > 10, "{} faults injected", proxy.failed());
    end.stop();

    // To a point in time, through the same faults: exactly the rows before the target. The
    // restore itself reads through shorter bursts (its reads are retried too).
    proxy.set(Fault::Flaky { period: 9, burst: 4 });
    let pitr =
        restore(dir.path(), "pitr", &proxy.endpoint(), &["--target-lsn", &lsns[7], "--target-action", "promote"]);
    proxy.set(Fault::Flaky { period: 9, burst: 6 });
    pitr.recover();
    assert_eq!(pitr.query_text("SELECT count(*) FROM ledger"), counts[7]);
    assert_eq!(pitr.query_text("SELECT timeline_id FROM pg_control_checkpoint()"), "2");
}

#[test]
fn wal_fetch_stops_recovery_instead_of_ending_it_when_the_store_stays_down() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let proxy = FaultProxy::start(s3.port);
    proxy.set(Fault::Down);
    let dest = dir.path().join("RECOVERYXLOG");
    let started = Instant::now();
    let out = pgops(
        &proxy.endpoint(),
        "main",
        &["wal-fetch", "--retry-for", "10", "000000010000000000000003", dest.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Above 125: Postgres stops recovery with FATAL instead of taking it for the end of
    // the archive and promoting.
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    assert!(stderr.contains("retrying in") && stderr.contains("gave up after"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(60), "bounded by --retry-for: {:?}", started.elapsed());
    assert!(!dest.exists());
}

/// A WAL segment the listing shows but whose read answers 404 (an eventually consistent
/// store, or a deletion between the listing and the read) is a store inconsistency:
/// retried, then exit 255, which stops recovery. Never exit 1, "not in the archive", on
/// which Postgres would end recovery and promote short of the archive's end.
#[test]
fn wal_fetch_stops_recovery_when_the_listing_shows_a_segment_that_reads_as_missing() {
    const SEGMENT: &str = "000000010000000000000003";
    const OBJECT: &str = "/backups/main/wals/0000000100000000/000000010000000000000003.zst";
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let content = vec![0x5a_u8; 16 << 20];
    let stored = pgops_core::pipeline::Compression::Zstd.compress(&content, 0).unwrap();
    let relative = format!("wals/{}/{SEGMENT}.zst", &SEGMENT[..16]);
    assert_eq!(format!("/{BUCKET}/main/{relative}"), OBJECT);
    block_on(s3.repository("main").put_as_is(&relative, stored.into())).unwrap();
    let proxy = FaultProxy::start(s3.port);
    let dest = dir.path().join("RECOVERYXLOG");
    let fetch =
        || pgops(&proxy.endpoint(), "main", &["wal-fetch", "--retry-for", "6", SEGMENT, dest.to_str().unwrap()]);

    // Untouched, the segment is fetched through the proxy.
    let out = fetch();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(&dest).unwrap() == content);
    std::fs::remove_file(&dest).unwrap();

    // Listed, and every read of it (HEAD, GET) answered 404 NoSuchKey.
    proxy.set(Fault::Missing { matching: OBJECT });
    let out = fetch();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    assert!(stderr.contains("the listing shows the object, but reading it found nothing"), "{stderr}");
    assert!(stderr.contains("retrying in") && stderr.contains("gave up after"), "{stderr}");
    assert!(stderr.contains("recovery stops here (exit status 255)"), "{stderr}");
    assert!(proxy.failed() >= 2, "every attempt read it and was told 404: {} answered", proxy.failed());
    let heads = proxy.request_heads();
    assert!(
        heads.iter().any(|head| head.starts_with("GET /backups") && head.contains("list-type=2")),
        "listed: {heads:?}"
    );
    assert!(!dest.exists());
}

/// pg_stat_progress_basebackup's phase of the running backup, if any.
fn backup_phase(pg: &PgCluster) -> String {
    pg.query_text("SELECT coalesce((SELECT phase FROM pg_stat_progress_basebackup), '')")
}

#[test]
fn a_frozen_store_neither_wedges_shutdown_nor_cancel_and_loses_nothing() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = backing_up_cluster(dir.path(), &s3, "main", "pgops.backup_fast_checkpoint = on");
    // Enough data that the backup is still streaming when the store freezes.
    pg.execute(
        "CREATE TABLE bulk AS SELECT g AS id, repeat(md5(g::text), 8) AS filler FROM generate_series(1, 1000000) g",
    );
    let first = pg.write_and_switch();
    pg.wait_archived(&first);
    let id = pg.query_text("SELECT pgops.backup_now(wait => false)");
    wait_for("the backup to stream", Duration::from_secs(60), || backup_phase(&pg) == "streaming database files");
    s3.freeze();

    // Three segments wait for the frozen store.
    let waiting: Vec<String> = (0..3).map(|_| pg.write_and_switch()).collect();

    // A cancel is answered while pgops.check() waits for the store.
    let mut client = pg.client();
    client.batch_execute("SET statement_timeout = '2s'").unwrap();
    let started = Instant::now();
    let err = client.simple_query("SELECT * FROM pgops.check()").unwrap_err();
    let message = err.as_db_error().map(|e| e.message().to_string()).unwrap_or_default();
    assert!(message.contains("statement timeout"), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "cancel took {:?}", started.elapsed());

    // A fast shutdown finishes whatever the store does.
    let started = Instant::now();
    let mut stop = pg.tool("pg_ctl");
    stop.args(["stop", "-w", "-t", "120", "-m", "fast", "-D"]).arg(&pg.data);
    let out = stop.output().unwrap();
    let took = started.elapsed();
    assert!(out.status.success(), "pg_ctl stop: {}\n{}", String::from_utf8_lossy(&out.stderr), pg.log());
    assert!(took < Duration::from_secs(30), "fast shutdown took {took:?}\n{}", pg.log());

    // Thawed and restarted: every waiting segment is archived, the backup is FAILED.
    s3.thaw();
    pg.start();
    for name in &waiting {
        pg.wait_archived(name);
    }
    let repo = s3.repository("main");
    for name in &waiting {
        let stored = fetch_decompressed(&repo, &format!("wals/{}/{name}.zst", &name[..16])).expect("archived");
        assert_eq!(stored.len(), 16 << 20);
    }
    wait_for("the interrupted backup to be FAILED", Duration::from_secs(60), || {
        pg.query_text(&format!("SELECT status FROM pgops.backup_list WHERE id = '{id}'")) == "FAILED"
    });
    let next = pg.query_text("SELECT pgops.backup_now()");
    assert_eq!(pg.query_text(&format!("SELECT status FROM pgops.backup_list WHERE id = '{next}'")), "DONE");
}

#[test]
fn pgbench_and_backups_through_a_flaky_store_lose_nothing_and_every_done_backup_restores() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let proxy = FaultProxy::start(s3.port);
    let pg = proxied_backing_up_cluster(
        dir.path(),
        &s3,
        &proxy,
        "main",
        "pgops.backup_fast_checkpoint = on\nmax_wal_size = '64MB'",
    );
    let mut init = pg.tool("pgbench");
    init.args(["-i", "-s", "4", "-q", &pg.connstr()]);
    assert!(init.output().unwrap().status.success());

    // Bursts of 4 failed requests in every 9, which the S3 client's 5 attempts ride out
    // unless requests interleave badly: then an archive call fails (Postgres retries it)
    // or a backup fails (FAILED, never DONE).
    proxy.set(Fault::Flaky { period: 9, burst: 4 });
    let mut load = pg.tool("pgbench");
    // Bounded in time, so that it ends by itself (killing runuser would leave pgbench on).
    load.args(["-c", "2", "-T", "30", &pg.connstr()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut load = load.spawn().unwrap();
    let mut failed_backups = 0;
    while load.try_wait().unwrap().is_none() {
        if pg.client().simple_query("SELECT pgops.backup_now()").is_err() {
            failed_backups += 1;
        }
    }
    proxy.set(Fault::Nothing);
    let last = pg.query_text("SELECT pg_walfile_name(pg_switch_wal())");
    pg.wait_archived(&last);
    let expected = pg.query_text("SELECT count(*) || '/' || sum(delta) FROM pgbench_history");
    assert!(proxy.failed() > 20, "{} faults injected", proxy.failed());
    let done: Vec<String> = pg
        .client()
        .query("SELECT id FROM pgops.backup_list WHERE status = 'DONE' ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(!done.is_empty(), "no backup succeeded ({failed_backups} failed)");
    pg.stop();

    let verify = pgops(&s3.endpoint(), "main", &["verify"]);
    assert!(verify.status.success(), "pgops verify: {}", String::from_utf8_lossy(&verify.stdout));

    // Every DONE backup restores to a consistent state; the newest to every committed row.
    for (n, id) in done.iter().enumerate() {
        let newest = n + 1 == done.len();
        let target: &[&str] = if newest { &[] } else { &["--target", "immediate", "--target-action", "promote"] };
        let mut args = vec!["--backup", id.as_str()];
        args.extend_from_slice(target);
        let restored = restore(dir.path(), &format!("restored-{n}"), &s3.endpoint(), &args);
        restored.recover();
        if newest {
            assert_eq!(restored.query_text("SELECT count(*) || '/' || sum(delta) FROM pgbench_history"), expected);
        } else {
            restored.query_text("SELECT count(*) FROM pgbench_accounts");
        }
        restored.stop();
    }
}
