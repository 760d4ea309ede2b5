//! Base backups taken by the pgops worker, against real PostgreSQL (each supported major) and s3s-fs
//! processes.

use pgops_e2e::*;
use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

const FAST: &str = "pgops.backup_fast_checkpoint = on";

/// `(status, error)` of a backup in `pgops.backup_list`.
fn status_of(pg: &PgCluster, id: &str) -> (String, String) {
    let row = pg
        .client()
        .query_one("SELECT status, coalesce(error, '') FROM pgops.backup_list WHERE id = $1", &[&id])
        .unwrap_or_else(|e| panic!("backup {id} not listed: {e}"));
    (row.get(0), row.get(1))
}

fn wait_for_phase(pg: &PgCluster, phase: &str) {
    wait_for(&format!("pg_stat_progress_basebackup phase '{phase}'"), Duration::from_secs(60), || {
        pg.query_text("SELECT phase FROM pg_stat_progress_basebackup") == phase
    });
}

/// The members of a tar archive and their contents.
fn tar_members(tar: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut members = BTreeMap::new();
    for entry in tar::Archive::new(tar).entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        members.insert(name, content);
    }
    members
}

#[test]
fn backup_now_under_pgbench_load_is_done_complete_and_verifiable() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    // PostgreSQL 17+ can summarize WAL for incremental backups: the summarizer runs beside
    // pgops' backups and must not disturb them.
    let summarize = if server_major() >= 17 { "summarize_wal = on" } else { "" };
    let pg = backing_up_cluster(dir.path(), &s3, "main", &format!("{FAST}\n{summarize}"));
    let mut init = pg.tool("pgbench");
    init.args(["-i", "-s", "5", "-q", &pg.connstr()]);
    assert!(init.output().unwrap().status.success());

    let mut load = pg.tool("pgbench");
    // Bounded in time, so that it ends by itself (killing runuser would leave pgbench on).
    load.args(["-c", "2", "-T", "8", &pg.connstr()]).stdout(Stdio::null()).stderr(Stdio::null());
    let mut load = load.spawn().unwrap();
    let id = pg.query_text("SELECT pgops.backup_now()");
    assert!(load.try_wait().unwrap().is_none(), "the backup ran while pgbench wrote");
    load.wait().unwrap();

    let row = pg
        .client()
        .query_one(
            "SELECT status, begin_lsn::text, end_lsn::text, begin_wal, end_wal, size_bytes, stored_bytes, compression,
                    finished_at >= started_at FROM pgops.backup_list WHERE id = $1",
            &[&id],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "DONE");
    assert!(row.get::<_, Option<String>>(1).is_some() && row.get::<_, Option<String>>(2).is_some());
    let end_wal: String = row.get(4);
    assert!(row.get::<_, i64>(5) > 50_000_000, "pgbench scale 5 is ~75 MB");
    assert!(row.get::<_, i64>(6) < row.get::<_, i64>(5), "zstd-compressed");
    assert_eq!(row.get::<_, String>(7), "zstd");
    assert!(row.get::<_, bool>(8));
    // The end segment was archived before the backup was DONE.
    let repo = s3.repository("main");
    assert!(fetch_decompressed(&repo, &format!("wals/{}/{end_wal}.zst", &end_wal[..16])).is_some());

    let tar = fetch_decompressed(&repo, &format!("base/{id}/data.tar.zst")).unwrap();
    let members = tar_members(&tar);
    for needed in ["backup_label", "global/pg_control", "PG_VERSION", "pg_wal/"] {
        assert!(members.contains_key(needed), "{needed} missing from data.tar.zst");
    }
    // pg_wal/summaries (17+) as a directory without its contents, as pg_basebackup sends it.
    let summaries = members.keys().filter(|name| name.starts_with("pg_wal/summaries/")).collect::<Vec<_>>();
    assert_eq!(summaries.len(), usize::from(server_major() >= 17), "{summaries:?}");
    assert!(String::from_utf8_lossy(&members["backup_label"]).contains(&format!("LABEL: pgops backup {id}")));
    assert!(!members.contains_key("postmaster.pid"));
    let relation_files = pg
        .client()
        .query(
            "SELECT pg_relation_filepath(oid) FROM pg_class
              WHERE relpersistence = 'p' AND relkind IN ('r', 'i', 't', 'm', 'S') AND pg_relation_filepath(oid) IS NOT NULL",
            &[],
        )
        .unwrap();
    assert!(relation_files.len() > 100);
    for file in relation_files {
        let path: String = file.get(0);
        assert!(members.contains_key(&path), "relation file {path} missing from the backup");
    }

    // pg_verifybackup checks every file against the manifest (sizes, CRC-32C) and the
    // manifest's own checksum.
    let unpacked = dir.path().join("unpacked");
    tar::Archive::new(&tar[..]).unpack(&unpacked).unwrap();
    let manifest = block_on(repo.get(&format!("base/{id}/backup_manifest"))).unwrap().unwrap();
    // The manifest version this major's pg_verifybackup expects: 2 from 17 on, which
    // carries the system identifier (and is checked against pg_control).
    let json: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    if server_major() >= 17 {
        assert_eq!(json["PostgreSQL-Backup-Manifest-Version"], 2);
        assert_eq!(json["System-Identifier"].to_string(), pg.system_identifier());
        // The summarizer writes summaries in its own time: it was on, it did its work.
        wait_for("the WAL summarizer to summarize the WAL written under load", Duration::from_secs(60), || {
            pg.query_text("SELECT count(*) > 0 FROM pg_available_wal_summaries()") == "t"
        });
    } else {
        assert_eq!(json["PostgreSQL-Backup-Manifest-Version"], 1);
        assert!(json.get("System-Identifier").is_none());
    }
    std::fs::write(unpacked.join("backup_manifest"), &manifest).unwrap();
    give_to_postgres(&unpacked);
    let mut verify = pg.tool("pg_verifybackup");
    verify.arg("-n").arg(&unpacked);
    let out = verify.output().unwrap();
    assert!(
        out.status.success(),
        "pg_verifybackup: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // And it notices a change.
    std::fs::write(unpacked.join("PG_VERSION"), "14\n").unwrap();
    assert!(!verify.output().unwrap().status.success(), "pg_verifybackup must reject a changed file");
}

#[test]
fn one_backup_at_a_time_with_progress_in_pg_stat_progress_basebackup() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    // A spread checkpoint (checkpoint_timeout is 1h here) holds the backup in its first
    // phase until a CHECKPOINT hurries it.
    let pg = backing_up_cluster(dir.path(), &s3, "main", "");
    let id = pg.query_text("SELECT pgops.backup_now(wait => false)");
    wait_for_phase(&pg, "waiting for checkpoint to finish");
    let pid = pg.query_text("SELECT pid FROM pg_stat_progress_basebackup");
    let worker = pg.query_text(&format!("SELECT backend_type FROM pg_stat_activity WHERE pid = {pid}"));
    assert_eq!(worker, "pgops worker");

    let err = pg.client().simple_query("SELECT pgops.backup_now()").unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.message(), format!("backup {id} is already running"));
    assert!(db.hint().unwrap().contains("one backup at a time"));
    assert_eq!(status_of(&pg, &id).0, "STARTED", "the running backup is listed");

    pg.execute("CHECKPOINT");
    wait_for("the backup to finish", Duration::from_secs(60), || status_of(&pg, &id).0 == "DONE");
    assert_eq!(pg.query_text("SELECT count(*) FROM pg_stat_progress_basebackup"), "0");
    let second = pg.query_text("SELECT pgops.backup_now()");
    assert!(second > id);
}

#[test]
fn a_schedule_takes_backups_without_a_call() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = backing_up_cluster(dir.path(), &s3, "main", FAST);
    pg.execute("ALTER SYSTEM SET pgops.backup_schedule = '*/4 * * * * *'");
    pg.execute("SELECT pg_reload_conf()");
    wait_for("two scheduled backups", Duration::from_secs(90), || {
        pg.query_text("SELECT count(*) FROM pgops.backup_list WHERE status = 'DONE'").parse::<i32>().unwrap() >= 2
    });
    pg.execute("ALTER SYSTEM RESET pgops.backup_schedule");
    pg.execute("SELECT pg_reload_conf()");
    assert!(pg.log().contains("pgops: backup"), "the worker logs its backups");
}

#[test]
fn bad_schedules_and_unprivileged_callers_are_refused() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = backing_up_cluster(dir.path(), &s3, "main", FAST);
    let mut client = pg.client();
    for bad in ["0 0 25 * * *", "every night", "0 0 2 * * * * *"] {
        let err = client.batch_execute(&format!("SET pgops.backup_schedule = '{bad}'")).unwrap_err();
        let db = err.as_db_error().unwrap();
        assert!(db.message().contains("invalid backup schedule"), "{bad}: {}", db.message());
        assert!(db.hint().unwrap().contains("'0 0 2 * * *'"), "{bad}");
    }
    let err = client.batch_execute("SET pgops.schedule_timezone = 'Mars/Olympus'").unwrap_err();
    assert!(err.as_db_error().unwrap().message().contains("unknown time zone"));
    client
        .batch_execute("SET pgops.backup_schedule = '0 0 2 * * *'; SET pgops.backup_schedule = '30 2 * * *'")
        .unwrap();

    client.batch_execute("CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN IN ROLE pgops_operator").unwrap();
    for call in ["SELECT pgops.backup_now()", "SELECT * FROM pgops.backup_list"] {
        let err = client.batch_execute(&format!("SET ROLE alice; {call}")).unwrap_err();
        assert!(err.as_db_error().unwrap().message().contains("permission denied"), "{call}: {err}");
        client.batch_execute("RESET ROLE").unwrap();
    }
    client.batch_execute("SET ROLE bob").unwrap();
    let id: String = client.query_one("SELECT pgops.backup_now()", &[]).unwrap().get(0);
    let status: String = client.query_one("SELECT status FROM pgops.backup_list WHERE id = $1", &[&id]).unwrap().get(0);
    assert_eq!(status, "DONE");
}

#[test]
fn an_s3_outage_mid_backup_fails_it_with_the_cause_and_the_next_one_succeeds() {
    let dir = scratch_dir();
    let mut s3 = S3Server::start(dir.path());
    // Spread checkpoint: the backup waits in its first phase until the outage is set up.
    let pg = backing_up_cluster(dir.path(), &s3, "main", "pgops.backup_compression = 'none'");
    let mut init = pg.tool("pgbench");
    init.args(["-i", "-s", "20", "-q", &pg.connstr()]);
    assert!(init.output().unwrap().status.success());
    let id = pg.query_text("SELECT pgops.backup_now(wait => false)");
    wait_for_phase(&pg, "waiting for checkpoint to finish");
    pg.execute("CHECKPOINT");
    wait_for_phase(&pg, "streaming database files");
    s3.stop();

    let failed = format!("pgops: backup {id} FAILED");
    wait_for("the backup to fail", Duration::from_secs(120), || pg.log().contains(&failed));
    assert_eq!(pg.query_text("SELECT 1"), "1", "the database is unaffected");
    assert_eq!(pg.query_text("SELECT count(*) FROM pg_stat_progress_basebackup"), "0");

    s3.resume();
    // The worker records the FAILED status once the store is back.
    wait_for("the failed backup to be recorded", Duration::from_secs(60), || {
        pg.query_text(&format!("SELECT status FROM pgops.backup_list WHERE id = '{id}'")) == "FAILED"
    });
    let (_, error) = status_of(&pg, &id);
    assert!(
        error.contains(&s3.endpoint()) || error.contains("Connection refused") || error.contains("dispatch"),
        "{error}"
    );
    // Nothing of it is restorable: no completed data archive.
    assert!(block_on(s3.repository("main").head(&format!("base/{id}/data.tar"))).unwrap().is_none());

    pg.execute("ALTER SYSTEM SET pgops.backup_fast_checkpoint = on");
    pg.execute("SELECT pg_reload_conf()");
    let next = pg.query_text("SELECT pgops.backup_now()");
    assert_eq!(status_of(&pg, &next).0, "DONE");
}

#[test]
fn barman_cloud_lists_and_restores_a_snappy_backup_that_postgres_then_runs() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = backing_up_cluster(
        dir.path(),
        &s3,
        "cnpg-main",
        "pgops.backup_compression = 'snappy'\npgops.backup_fast_checkpoint = on",
    );
    pg.execute("CREATE TABLE orders(id int PRIMARY KEY); INSERT INTO orders SELECT generate_series(1, 1000)");
    let id = pg.query_text("SELECT pgops.backup_now()");
    let begin_wal = pg.query_text(&format!("SELECT begin_wal FROM pgops.backup_list WHERE id = '{id}'"));
    pg.execute("INSERT INTO orders SELECT generate_series(1001, 1500)");
    let last = pg.query_text("SELECT pg_walfile_name(pg_switch_wal())");
    pg.wait_archived(&last);

    let mut list = Command::new(barman_bin("barman-cloud-backup-list"));
    list.args(["--endpoint-url", &s3.endpoint(), "--format", "json", &format!("s3://{BUCKET}"), "cnpg-main"]);
    s3.barman_env(&mut list);
    let out = list.output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "barman-cloud-backup-list: {}", String::from_utf8_lossy(&out.stderr));
    assert!(listing.contains(&format!("\"backup_id\": \"{id}\"")), "{listing}");
    assert!(listing.contains(&format!("\"begin_wal\": \"{begin_wal}\"")), "{listing}");
    assert!(listing.contains("\"status\": \"DONE\""), "{listing}");

    // pgops' own CLI lists the same backup.
    let out = s3.pgops(&format!("s3://{BUCKET}/cnpg-main")).args(["list", "--json"]).output().unwrap();
    assert!(out.status.success(), "pgops list: {}", String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains(&format!("\"id\": \"{id}\"")) && listing.contains("\"status\": \"DONE\""), "{listing}");
    assert!(listing.contains(&format!("\"begin_wal\": \"{begin_wal}\"")), "{listing}");

    let restored = PgCluster::at(dir.path(), "restored");
    let mut restore = Command::new(barman_bin("barman-cloud-restore"));
    restore.args(["--endpoint-url", &s3.endpoint(), &format!("s3://{BUCKET}"), "cnpg-main", &id]).arg(&restored.data);
    s3.barman_env(&mut restore);
    let out = restore.output().unwrap();
    assert!(out.status.success(), "barman-cloud-restore: {}", String::from_utf8_lossy(&out.stderr));
    assert!(restored.data.join("backup_label").exists() && restored.data.join("global/pg_control").exists());
    give_to_postgres(&restored.data);
    assert!(Command::new("chmod").args(["700"]).arg(&restored.data).status().unwrap().success());

    // Postgres starts on what Barman restored and replays the archive.
    pg.stop();
    restored.take_over_config();
    // Barman all the way: its own WAL restore tool reads the WAL pgops archived.
    restored.configure(&format!(
        "archive_mode = off\npgops.repository = ''\nrestore_command = 'env AWS_DEFAULT_REGION=us-east-1 {} --endpoint-url {} s3://{BUCKET} cnpg-main %f %p'",
        barman_bin("barman-cloud-wal-restore").display(),
        s3.endpoint()
    ));
    restored.touch("recovery.signal");
    restored.recover();
    assert_eq!(restored.query_text("SELECT count(*) FROM orders"), "1500");
}

#[test]
fn a_killed_worker_is_restarted_and_its_backup_marked_failed() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = backing_up_cluster(dir.path(), &s3, "main", "");
    // Spread checkpoint: the backup is still running when the worker is terminated.
    let id = pg.query_text("SELECT pgops.backup_now(wait => false)");
    wait_for_phase(&pg, "waiting for checkpoint to finish");
    assert_eq!(status_of(&pg, &id).0, "STARTED");
    let pid = pg.query_text("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pgops worker'");
    assert_eq!(pg.query_text(&format!("SELECT pg_terminate_backend({pid})")), "t");

    wait_for("a new pgops worker", Duration::from_secs(60), || {
        let now = pg.query_text("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pgops worker'");
        !now.is_empty() && now != pid
    });
    wait_for("the interrupted backup to be marked FAILED", Duration::from_secs(60), || {
        status_of(&pg, &id).0 == "FAILED"
    });
    assert!(status_of(&pg, &id).1.contains("interrupted"));
    // The server is fine and the new worker takes backups.
    pg.execute("CHECKPOINT");
    pg.execute("ALTER SYSTEM SET pgops.backup_fast_checkpoint = on");
    pg.execute("SELECT pg_reload_conf()");
    let next = pg.query_text("SELECT pgops.backup_now()");
    assert_eq!(status_of(&pg, &next).0, "DONE");
}

#[test]
fn tablespaces_go_to_their_own_archive_with_a_tablespace_map() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = backing_up_cluster(dir.path(), &s3, "main", FAST);
    let (location, oid, file) = pg.tablespace_with_rows(dir.path(), "fast", "hot");
    let id = pg.query_text("SELECT pgops.backup_now()");

    let repo = s3.repository("main");
    let tablespace = tar_members(&fetch_decompressed(&repo, &format!("base/{id}/{oid}.tar.zst")).unwrap());
    // pg_relation_filepath says pg_tblspc/<oid>/PG_15_…/<db>/<relfilenode>.
    let inside = file.strip_prefix(&format!("pg_tblspc/{oid}/")).unwrap();
    assert!(tablespace.contains_key(inside), "{inside} missing from {oid}.tar.zst: {:?}", tablespace.keys());
    let data = tar_members(&fetch_decompressed(&repo, &format!("base/{id}/data.tar.zst")).unwrap());
    let map = String::from_utf8_lossy(&data["tablespace_map"]).into_owned();
    assert!(map.contains(&format!("{oid} {}", location.display())), "{map}");
    let info =
        String::from_utf8(block_on(repo.get(&format!("base/{id}/backup.info"))).unwrap().unwrap().to_vec()).unwrap();
    assert!(info.contains(&format!("tablespaces=[('fast', {oid}, '{}')]", location.display())), "{info}");
    let manifest =
        String::from_utf8(block_on(repo.get(&format!("base/{id}/backup_manifest"))).unwrap().unwrap().to_vec())
            .unwrap();
    assert!(
        manifest.contains(&format!("\"Path\": \"{file}\"")),
        "the manifest names tablespace files by their data directory path"
    );

    // The location in the backup's tablespace_map is the repository's word, not trusted:
    // without --tablespace-map the restore stops, naming it, and writes nothing there.
    pg.stop();
    let refused = PgCluster::at(dir.path(), "refused");
    let mut restore = s3.pgops(&format!("s3://{BUCKET}/main"));
    let out = restore.args(["restore", "--pgdata"]).arg(&refused.data).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains(&format!("--tablespace-map {oid}=DIR")) && stderr.contains(&location.display().to_string()),
        "{stderr}"
    );

    // pgops restore puts the tablespace where --tablespace-map says, linked from pg_tblspc.
    let restored = PgCluster::at(dir.path(), "restored");
    let moved = dir.path().join("moved-disk");
    let mut restore = s3.pgops(&format!("s3://{BUCKET}/main"));
    restore.args(["restore", "--pgdata"]).arg(&restored.data);
    let out = restore.arg("--tablespace-map").arg(format!("{oid}={}", moved.display())).output().unwrap();
    assert!(out.status.success(), "pgops restore: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_link(restored.data.join(format!("pg_tblspc/{oid}"))).unwrap(), moved);
    give_to_postgres(&restored.data);
    give_to_postgres(&moved);
    restored.configure("archive_mode = off\npgops.repository = ''");
    restored.take_over_config();
    restored.recover();
    assert_eq!(restored.query_text("SELECT count(*) FROM hot"), "1000");
    assert_eq!(
        restored.query_text("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'fast'"),
        moved.display().to_string()
    );
}

/// Finding 9a of the third trust round: a backup whose last WAL segment never reaches the
/// repository (archiving broken: `archive_command = '/bin/false'`) ends FAILED after
/// `pgops.backup_archive_timeout`, naming the segment, instead of waiting as long as
/// `pg_backup_stop(wait_for_archive)` would (forever).
#[test]
fn a_backup_whose_last_segment_is_never_archived_fails_after_the_archive_timeout() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let conf =
        format!("{FAST}\npgops.backup_archive_timeout = '5s'\narchive_library = ''\narchive_command = '/bin/false'\n");
    let pg = backing_up_cluster(dir.path(), &s3, "unarchived", &conf);
    let started = std::time::Instant::now();
    let id = pg.query_text("SELECT pgops.backup_now(wait => false)");
    let listed_as = |status: &str| {
        let rows = pg.client().query("SELECT 1 FROM pgops.backup_list WHERE id = $1 AND status = $2", &[&id, &status]);
        !rows.unwrap().is_empty()
    };
    wait_for("the backup to end", Duration::from_secs(60), || listed_as("FAILED") || listed_as("DONE"));
    let took = started.elapsed();
    let (status, error) = status_of(&pg, &id);
    assert_eq!(status, "FAILED", "{error}");
    assert!(
        error.contains("was not archived within 5 s of pg_backup_stop") && error.contains("the last this backup needs"),
        "{error}"
    );
    assert!(took < Duration::from_secs(40), "{took:?}");
    let info = block_on(s3.repository("unarchived").get(&format!("base/{id}/backup.info"))).unwrap().unwrap();
    assert!(String::from_utf8_lossy(&info).contains("status=FAILED"), "the repository says FAILED too");
}
