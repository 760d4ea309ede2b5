//! Trust under faults, the extension and worker side: a clone next to production, archiving
//! without preloading, credentials out of the data directory, spread checkpoints that
//! keep a caller waiting, privilege checks before any work. Real PostgreSQL (each supported major) and s3s-fs
//! processes.

use pgops_e2e::*;
use std::time::{Duration, Instant};

/// `(status, error)` of a backup in `pgops.backup_list`.
fn status_of(pg: &PgCluster, id: &str) -> (String, String) {
    let row = pg
        .client()
        .query_one("SELECT status, coalesce(error, '') FROM pgops.backup_list WHERE id = $1", &[&id])
        .unwrap_or_else(|e| panic!("backup {id} not listed: {e}"));
    (row.get(0), row.get(1))
}

/// Dirty buffers, so that a spread checkpoint has something to spread (over 0.9 × 1 h).
fn dirty_some_buffers(pg: &PgCluster) {
    pg.execute(
        "CREATE TABLE IF NOT EXISTS dirt(id int, payload text); INSERT INTO dirt SELECT g, md5(g::text) FROM generate_series(1, 20000) g",
    );
}

fn wait_for_spread_checkpoint(pg: &PgCluster) {
    wait_for("the backup to wait for its checkpoint", Duration::from_secs(60), || {
        pg.query_text("SELECT phase FROM pg_stat_progress_basebackup") == "waiting for checkpoint to finish"
    });
}

const SPREAD: &str = "checkpoint_completion_target = 0.9";

#[test]
fn a_restored_clone_leaves_the_running_backup_of_production_alone() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let primary = backing_up_cluster(dir.path(), &s3, "main", SPREAD);
    let earlier = primary.query_text("SELECT pgops.backup_now(fast => true)");
    primary.wait_archived(&primary.write_and_switch());

    // Production's backup waits for a spread checkpoint (0.9 × 1 h): it stays STARTED.
    dirty_some_buffers(&primary);
    let running = primary.query_text("SELECT pgops.backup_now(wait => false)");
    wait_for_spread_checkpoint(&primary);
    assert_eq!(status_of(&primary, &running).0, "STARTED");

    // A clone restored from the earlier backup, with the same system identifier and
    // repository (kept: by default a restore clears it), starts its own worker, which
    // looks for unfinished backups.
    let clone = PgCluster::at(dir.path(), "clone");
    restore_clone(&s3, "main", &clone, &["--backup", &earlier, "--archive", "keep"]);
    clone.recover();
    assert_eq!(clone.system_identifier(), primary.system_identifier());
    assert_running_backup_left_alone(&clone, &primary, &running);
}

/// Waits until `neighbour`'s worker has looked for unfinished backups and checks that it
/// left production's running backup alone; then lets that backup finish: it ends DONE.
fn assert_running_backup_left_alone(neighbour: &PgCluster, primary: &PgCluster, running: &str) {
    wait_for("the neighbour's worker to look for unfinished backups", Duration::from_secs(60), || {
        let log = neighbour.log();
        log.contains("backups this instance left unfinished") || log.contains("marked FAILED")
    });
    assert!(!neighbour.log().contains(&format!("backup {running} marked FAILED")), "{}", neighbour.log());
    assert_eq!(status_of(primary, running).0, "STARTED");
    primary.execute("CHECKPOINT");
    wait_for("production's backup to finish", Duration::from_secs(120), || status_of(primary, running).0 != "STARTED");
    assert_eq!(status_of(primary, running), ("DONE".to_string(), String::new()));
}

#[test]
fn a_pg_basebackup_copy_started_beside_production_leaves_its_running_backup_alone() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let primary = backing_up_cluster(dir.path(), &s3, "main", SPREAD);
    // The copy carries production's instance file (pg_basebackup copies it) and, started
    // without recovery, production's timeline: only where it runs tells it apart.
    let instance_file = primary.data.join("pgops_instance");
    wait_for("production's instance id", Duration::from_secs(60), || instance_file.exists());
    let copy = PgCluster::at(dir.path(), "copy");
    let mut basebackup = copy.tool("pg_basebackup");
    basebackup.args(["-c", "fast", "-X", "stream", "--no-sync", "-d", &primary.connstr(), "-D"]).arg(&copy.data);
    let out = basebackup.output().unwrap();
    assert!(out.status.success(), "pg_basebackup: {}", String::from_utf8_lossy(&out.stderr));
    assert!(copy.data.join("pgops_instance").exists());

    dirty_some_buffers(&primary);
    let running = primary.query_text("SELECT pgops.backup_now(wait => false)");
    wait_for_spread_checkpoint(&primary);
    copy.take_over_config();
    // Not archiving: its timeline-1 WAL must not meet production's in the repository.
    copy.configure("archive_mode = off");
    copy.start();
    assert_eq!(copy.query_text("SELECT timeline_id FROM pg_control_checkpoint()"), "1");
    assert_running_backup_left_alone(&copy, &primary, &running);
}

#[test]
fn backup_now_fast_skips_the_spread_checkpoint_and_without_it_the_caller_is_told() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = backing_up_cluster(dir.path(), &s3, "main", SPREAD);

    dirty_some_buffers(&pg);
    let started = Instant::now();
    let fast = pg.query_text("SELECT pgops.backup_now(fast => true)");
    assert!(started.elapsed() < Duration::from_secs(30), "backup_now(fast => true) took {:?}", started.elapsed());
    assert_eq!(status_of(&pg, &fast).0, "DONE");

    // Without: a NOTICE while the caller waits for the spread checkpoint.
    dirty_some_buffers(&pg);
    let (mut client, notices) = client_keeping_notices(&pg);
    let caller =
        std::thread::spawn(move || client.query_one("SELECT pgops.backup_now()", &[]).map(|r| r.get::<_, String>(0)));
    wait_for("the spread-checkpoint NOTICE", Duration::from_secs(60), || !notices.lock().unwrap().is_empty());
    {
        let notices = notices.lock().unwrap();
        let notice = &notices[0];
        assert_eq!(notice.severity(), "NOTICE");
        assert!(notice.message().contains("waits for a spread checkpoint"), "{notice:?}");
        assert!(notice.message().contains("checkpoint_timeout (1h)"), "{notice:?}");
        assert!(notice.hint().unwrap_or_default().contains("fast => true"), "{notice:?}");
    }
    pg.execute("CHECKPOINT");
    let spread = caller.join().unwrap().unwrap_or_else(|e| panic!("backup_now(): {e:?}"));
    assert_eq!(status_of(&pg, &spread).0, "DONE");
}

#[test]
fn archive_library_alone_archives_and_what_needs_preloading_says_so() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = PgCluster::init(dir.path(), "main");
    pg.configure(ARCHIVING);
    pg.configure(&s3.pgops_settings("main"));
    pg.configure("shared_preload_libraries = ''\npgops.database = 'postgres'");
    pg.start();
    assert_eq!(pg.query_text("SHOW shared_preload_libraries"), "");

    let segment = pg.write_and_switch();
    pg.wait_archived(&segment);

    pg.execute("CREATE EXTENSION pgops");
    assert_eq!(pg.query_text("SELECT count(*) FROM pgops.backup_list"), "0");
    // A statement worker is a dynamic background worker: no preloading needed.
    assert_eq!(pg.query_text("SELECT pgops.ensure_database('made_without_preload')"), "created");
    for call in ["pgops.backup_now()", "pgops.archive_status()", "pgops.role_status"] {
        let error = pg.client().query(&format!("SELECT * FROM {call}"), &[]).expect_err(call);
        let db = error.as_db_error().unwrap_or_else(|| panic!("{call}: {error}"));
        assert_eq!(db.code().code(), "55000", "{call}: {db:?}");
        assert!(db.hint().unwrap_or_default().contains("shared_preload_libraries"), "{call}: {db:?}");
    }
    let log = pg.log();
    assert!(!log.contains("FATAL"), "{log}");
}

fn write_credentials(path: &std::path::Path, secret: &str) {
    std::fs::write(path, format!("[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {secret}\n"))
        .unwrap();
}

#[test]
fn credentials_from_a_file_outside_pgdata_are_reread_when_rotated_and_never_logged() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let credentials = dir.path().join("credentials");
    write_credentials(&credentials, SECRET_KEY);
    let pg = PgCluster::init(dir.path(), "main");
    pg.configure(ARCHIVING);
    pg.configure(&format!(
        "pgops.repository = 's3://{BUCKET}/main'\npgops.s3_endpoint = '{}'\npgops.s3_credentials_file = '{}'",
        s3.endpoint(),
        credentials.display()
    ));
    // The AWS chain must not be what works.
    pg.start_with_env(&[("AWS_EC2_METADATA_DISABLED", "true")]);
    pg.wait_archived(&pg.write_and_switch());

    // Rotated to a wrong secret: archiving fails, without a reload, and says why but not
    // the secret.
    let wrong = "wrong-secret-0123456789abcdef";
    let (_, failed_before) = pg.archiver_counts();
    write_credentials(&credentials, wrong);
    let segment = pg.write_and_switch();
    wait_for("archiving to fail with the wrong secret", Duration::from_secs(60), || {
        pg.log().contains(&format!("could not archive \"{segment}\"")) && pg.archiver_counts().1 > failed_before
    });
    assert!(!pg.wal_with_status("done").contains(&segment));

    // Rotated back: archiving resumes, again without a reload or restart.
    write_credentials(&credentials, SECRET_KEY);
    pg.write_and_switch(); // wakes the archiver, which waits a minute after failures
    pg.wait_archived(&segment);
    let log = pg.log();
    assert!(!log.contains(wrong) && !log.contains(SECRET_KEY), "{log}");

    // A file inside the data directory would be in every base backup: refused.
    let inside = pg.data.join("credentials");
    let error = pg
        .client()
        .batch_execute(&format!("ALTER SYSTEM SET pgops.s3_credentials_file = '{}'", inside.display()))
        .expect_err("a credentials file inside PGDATA");
    let db = error.as_db_error().unwrap();
    assert!(db.message().contains("inside the data directory"), "{db:?}");
    assert!(db.hint().unwrap_or_default().contains("outside the data directory"), "{db:?}");
}

#[test]
fn ensure_database_checks_createdb_before_starting_a_worker() {
    let dir = scratch_dir();
    let pg = PgCluster::init(dir.path(), "main");
    // The postmaster logs each background worker it starts at DEBUG1.
    pg.configure("log_min_messages = debug1");
    pg.start();
    pg.execute("CREATE EXTENSION pgops; CREATE ROLE app LOGIN; CREATE ROLE creator LOGIN CREATEDB");

    let error = pg.client_as("app", "postgres").query_one("SELECT pgops.ensure_database('appdb')", &[]).unwrap_err();
    let db = error.as_db_error().unwrap();
    assert_eq!(db.code().code(), "42501", "{db:?}");
    assert!(db.message().contains("permission denied to create database \"appdb\""), "{db:?}");
    assert!(db.hint().unwrap_or_default().contains("CREATEDB"), "{db:?}");
    assert!(!pg.log().contains("\"pgops statement\""), "a statement worker was started:\n{}", pg.log());

    // A role with CREATEDB gets its database, from a statement worker the log shows.
    let created: String =
        pg.client_as("creator", "postgres").query_one("SELECT pgops.ensure_database('appdb')", &[]).unwrap().get(0);
    assert_eq!(created, "created");
    assert!(pg.log().contains("\"pgops statement\""));
    // Dropping needs ownership.
    let error =
        pg.client_as("app", "postgres").query_one("SELECT pgops.ensure_database('appdb', ensure => 'absent')", &[]);
    assert_eq!(error.unwrap_err().as_db_error().unwrap().code().code(), "42501");
}

#[test]
fn a_tablespace_created_while_the_backup_waits_for_its_checkpoint_is_archived() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = backing_up_cluster(dir.path(), &s3, "main", SPREAD);
    dirty_some_buffers(&pg);
    let id = pg.query_text("SELECT pgops.backup_now(wait => false)");
    wait_for_spread_checkpoint(&pg);

    // pg_backup_start lists the tablespaces for tablespace_map after its checkpoint.
    let (location, oid, file) = pg.tablespace_with_rows(dir.path(), "late", "late_rows");
    pg.execute("CHECKPOINT");
    wait_for("the backup to finish", Duration::from_secs(120), || status_of(&pg, &id).0 != "STARTED");
    assert_eq!(status_of(&pg, &id), ("DONE".to_string(), String::new()));

    let repo = s3.repository("main");
    let data = fetch_decompressed(&repo, &format!("base/{id}/data.tar.zst")).unwrap();
    let mut map = String::new();
    for entry in tar::Archive::new(&data[..]).entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some("tablespace_map") {
            std::io::Read::read_to_string(&mut entry, &mut map).unwrap();
        }
    }
    assert!(map.contains(&format!("{oid} {}", location.display())), "tablespace_map: {map}");
    let archive = fetch_decompressed(&repo, &format!("base/{id}/{oid}.tar.zst"))
        .unwrap_or_else(|| panic!("no archive for tablespace {oid}, which tablespace_map names"));
    let inside = file.strip_prefix(&format!("pg_tblspc/{oid}/")).unwrap();
    let names: Vec<String> = tar::Archive::new(&archive[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.iter().any(|n| n == inside), "{inside} missing from {oid}.tar.zst: {names:?}");
}

/// pg_stat_progress_basebackup's phase of the running backup, if any.
fn backup_phase(pg: &PgCluster) -> String {
    pg.query_text("SELECT coalesce((SELECT phase FROM pg_stat_progress_basebackup), '')")
}

/// Polls the backup's phase every 20 ms until it is `phase` (a phase can be short).
fn wait_for_phase(pg: &PgCluster, phase: &str) {
    let mut client = pg.client();
    let started = Instant::now();
    loop {
        let row = client.query_one("SELECT coalesce((SELECT phase FROM pg_stat_progress_basebackup), '')", &[]);
        if row.unwrap().get::<_, String>(0) == phase {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the backup never reached {phase:?}:\n{}", pg.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The status of backup `id` in `pgops.backup_list`, `None` when it is not listed.
fn listed_status(pg: &PgCluster, id: &str) -> Option<(String, String)> {
    let row = pg
        .client()
        .query_opt("SELECT status, coalesce(error, '') FROM pgops.backup_list WHERE id = $1", &[&id])
        .unwrap_or_else(|e| panic!("backup_list: {e}"));
    row.map(|row| (row.get(0), row.get(1)))
}

/// The log line of a worker whose start-up sweep for unfinished backups ran.
const SWEPT: &str = "checked for backups this instance left unfinished";

/// The error of a backup its worker's stop interrupted, as the next worker records it.
const INTERRUPTED: &str = "interrupted: the pgops worker stopped before the backup finished";

/// Stops `pg` with `pg_ctl stop -m fast`; returns how long it took, after checking it
/// succeeded.
fn fast_shutdown(pg: &PgCluster, what: &str) -> Duration {
    let started = Instant::now();
    let mut stop = pg.tool("pg_ctl");
    stop.args(["stop", "-w", "-t", "120", "-m", "fast", "-D"]).arg(&pg.data);
    let out = stop.output().unwrap();
    let took = started.elapsed();
    assert!(out.status.success(), "{what}: pg_ctl stop: {}\n{}", String::from_utf8_lossy(&out.stderr), pg.log());
    took
}

/// A fast shutdown, on default settings (a spread checkpoint), is bounded whenever the
/// store freezes: before the backup starts (claiming the repository, writing its status),
/// while pg_backup_start waits for its checkpoint, mid-stream, and after pg_backup_stop
/// while the backup waits for its last WAL segment to reach the repository. Thawed and
/// restarted, nothing is lost: the WAL that waited is archived, and the backup is FAILED
/// as interrupted (marked by the next worker), or was never recorded when the store froze
/// before its first write; never left STARTED.
#[test]
fn a_fast_shutdown_is_bounded_on_default_settings_whenever_the_store_freezes() {
    for moment in ["before the backup starts", "during its spread checkpoint", "mid-stream", "at pg_backup_stop"] {
        let dir = scratch_dir();
        let s3 = S3Server::start(dir.path());
        // Every request goes through the proxy, which can refuse archiving alone.
        let proxy = FaultProxy::start(s3.port);
        let pg = proxied_backing_up_cluster(dir.path(), &s3, &proxy, "main", SPREAD);
        if moment == "mid-stream" {
            // Enough data (300 MB) that the backup streams for a few seconds.
            pg.execute(
                "CREATE TABLE bulk AS SELECT g AS id, repeat(md5(g::text), 8) AS filler FROM generate_series(1, 1000000) g",
            );
        }
        let first = pg.write_and_switch();
        pg.wait_archived(&first);
        dirty_some_buffers(&pg);
        if moment == "before the backup starts" {
            s3.freeze();
        }
        let id = pg.query_text("SELECT pgops.backup_now(wait => false)");
        match moment {
            "before the backup starts" => {}
            "during its spread checkpoint" => {
                wait_for_spread_checkpoint(&pg);
                s3.freeze();
            }
            "mid-stream" => {
                wait_for_spread_checkpoint(&pg);
                pg.execute("CHECKPOINT"); // ends the spread checkpoint: the backup streams
                wait_for_phase(&pg, "streaming database files");
                s3.freeze();
            }
            _ => {
                wait_for_spread_checkpoint(&pg);
                // The backup's last segment is not archived: it waits for it after
                // pg_backup_stop (pgops.backup_archive_timeout, 5 min).
                proxy.set(Fault::Refuse { matching: "PUT /backups/main/wals/" });
                pg.execute("CHECKPOINT");
                wait_for_phase(&pg, "waiting for wal archiving to finish");
                std::thread::sleep(Duration::from_secs(1));
                s3.freeze();
            }
        }
        // Three segments wait for the frozen store.
        let waiting: Vec<String> = (0..3).map(|_| pg.write_and_switch()).collect();
        std::thread::sleep(Duration::from_secs(2));
        // Still where it froze: the frozen store holds it there.
        let phase = backup_phase(&pg);
        match moment {
            "mid-stream" => assert_eq!(phase, "streaming database files", "{moment}"),
            "at pg_backup_stop" => {
                assert_eq!(phase, "waiting for wal archiving to finish", "{moment}");
                assert!(proxy.failed() > 0, "{moment}: archiving was refused");
            }
            "during its spread checkpoint" => assert_eq!(phase, "waiting for checkpoint to finish", "{moment}"),
            // Claiming the repository, before any phase of its own.
            _ => assert_eq!(phase, "initializing", "{moment}"),
        }
        let took = fast_shutdown(&pg, moment);
        s3.thaw();
        assert!(took < Duration::from_secs(30), "{moment}: fast shutdown took {took:?}\n{}", pg.log());

        // Thawed and restarted: every waiting segment is archived, the backup is not left
        // STARTED.
        proxy.set(Fault::Nothing);
        let log_start = pg.log().len();
        pg.start();
        for name in &waiting {
            pg.wait_archived(name);
        }
        wait_for(&format!("{moment}: the worker's sweep"), Duration::from_secs(60), || {
            pg.log()[log_start..].contains(SWEPT)
        });
        let status = listed_status(&pg, &id);
        if moment == "before the backup starts" {
            // Frozen before its first write: nothing of it reached the repository.
            assert_eq!(status, None, "{moment}\n{}", pg.log());
        } else {
            assert_eq!(status, Some(("FAILED".to_string(), INTERRUPTED.to_string())), "{moment}\n{}", pg.log());
        }
        pg.stop();
    }
}

/// A roles file declaring `roles` (no login, no password), readable by `postgres`.
fn declare_roles(path: &std::path::Path, roles: &[&str]) {
    let entries: Vec<String> = roles.iter().map(|name| format!("{{\"name\": \"{name}\", \"login\": false}}")).collect();
    std::fs::write(path, format!("{{\"roles\": [{}]}}", entries.join(", "))).unwrap();
    give_to_postgres(path);
}

fn role_exists(pg: &PgCluster, role: &str) -> bool {
    pg.query_text(&format!("SELECT count(*) FROM pg_roles WHERE rolname = '{role}'")) == "1"
}

/// The worker's first duty at start, marking the backups an earlier worker left STARTED as
/// FAILED, meets a store frozen before the server started: the sweep gives up within 5 s
/// and is tried again later, while the worker goes on serving: a reload (the roles file
/// applied) and a backup request are taken at once, and a fast shutdown is bounded.
#[test]
fn a_store_frozen_when_the_worker_starts_holds_up_neither_its_duties_nor_a_shutdown() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let roles_file = dir.path().join("roles.json");
    declare_roles(&roles_file, &["early"]);
    let pg = PgCluster::init(dir.path(), "primary");
    pg.configure(ARCHIVING);
    pg.configure(&s3.pgops_settings("main"));
    pg.configure(&format!("{SPREAD}\npgops.roles_file = '{}'", roles_file.display()));
    s3.freeze();
    pg.start();

    // The roles file is reconciled at start, right before the sweep; then the sweep waits
    // for the frozen store, and gives up.
    wait_for("the roles file at start", Duration::from_secs(60), || role_exists(&pg, "early"));
    declare_roles(&roles_file, &["early", "late"]);
    pg.execute("SELECT pg_reload_conf()");
    let reloaded = Instant::now();
    wait_for("the reload to be applied", Duration::from_secs(60), || role_exists(&pg, "late"));
    let applied = reloaded.elapsed();
    assert!(applied < Duration::from_secs(20), "the reload waited {applied:?} for the frozen store\n{}", pg.log());
    wait_for("the sweep to give up", Duration::from_secs(60), || {
        pg.log().contains("could not check for interrupted backups yet: the store did not answer within 5 s")
    });
    assert!(!pg.log().contains(SWEPT), "the store is frozen, yet the sweep ran:\n{}", pg.log());

    // A backup request is taken (and waits for the store off the worker's main thread).
    pg.execute("CREATE EXTENSION pgops");
    let id = pg.query_text("SELECT pgops.backup_now(wait => false)");
    wait_for("the worker to take the backup request", Duration::from_secs(30), || {
        pg.log().contains(&format!("pgops: backup {id} starting"))
    });
    let took = fast_shutdown(&pg, "frozen since start");
    s3.thaw();
    assert!(took < Duration::from_secs(30), "fast shutdown took {took:?}\n{}", pg.log());

    // Thawed: the next worker's sweep runs, and the backup, frozen before its first write,
    // is not in the repository, so not left STARTED either.
    let log_start = pg.log().len();
    pg.start();
    wait_for("the sweep", Duration::from_secs(60), || pg.log()[log_start..].contains(SWEPT));
    assert_eq!(listed_status(&pg, &id), None, "{}", pg.log());
}
