//! pgops as a CloudNativePG plugin, CNPG played by the test: real Postgres archiving
//! through `cnpg-manager wal-archive %p` to the plugin's sidecar over its unix socket, and
//! a recovery whose `restore_command` is `cnpg-manager wal-restore %f %p`; rows counted on
//! the recovered server. Then the bad day: the store flaky and down during recovery, and
//! hostile requests.

use pgops_e2e::cnpg::{cluster, Sidecar};
use pgops_e2e::*;
use serde_json::json;
use std::time::Duration;

const ROWS_PER_BATCH: i64 = 20000;

/// A primary archiving through its sidecar to `s3://backups/<prefix>`, with a table.
fn archiving_primary(dir: &std::path::Path, endpoint: &str, prefix: &str) -> (PgCluster, Sidecar) {
    archiving_primary_with(dir, endpoint, prefix, json!({}))
}

/// [`archiving_primary`] with `extra` plugin parameters.
fn archiving_primary_with(
    dir: &std::path::Path,
    endpoint: &str,
    prefix: &str,
    extra: serde_json::Value,
) -> (PgCluster, Sidecar) {
    let pg = PgCluster::init(dir, "db-1");
    let mut parameters = pgops_e2e::cnpg::parameters(dir, endpoint, prefix);
    for (key, value) in extra.as_object().cloned().unwrap_or_default() {
        parameters[key] = value;
    }
    let definition = cluster("db", parameters, json!({}), json!({"currentPrimary": "db-1", "targetPrimary": "db-1"}));
    let sidecar = Sidecar::start(dir, "db-1", &pg, &definition, "db-1");
    pg.configure(&sidecar.archive_settings());
    // CNPG marks a new cluster's first archive (concludeRestore, initdb).
    pg.touch(".check-empty-wal-archive");
    pg.start();
    (pg, sidecar)
}

/// A base backup of `primary` without WAL (`-X none`): every segment recovery needs must
/// come through the plugin.
fn base_backup_without_wal(primary: &PgCluster, clone: &PgCluster) {
    let out = primary
        .tool("pg_basebackup")
        .args(["-X", "none", "-c", "fast", "-d", &primary.connstr(), "-D"])
        .arg(&clone.data)
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_basebackup: {}", String::from_utf8_lossy(&out.stderr));
}

/// The Cluster CNPG creates to recover from `source`'s repository: no primary yet.
fn recovering_cluster(dir: &std::path::Path, endpoint: &str, prefix: &str) -> serde_json::Value {
    let source = pgops_e2e::cnpg::parameters(dir, endpoint, prefix);
    let mut own = source.clone();
    own["repository"] = json!(format!("s3://{BUCKET}/restored"));
    cluster(
        "db-restored",
        own,
        json!({
            "bootstrap": {"recovery": {"source": "db"}},
            "externalClusters": [{"name": "db", "plugin": {"name": "pgops.io", "parameters": source}}],
        }),
        json!({}),
    )
}

/// A primary archiving through its sidecar, a base backup of it without WAL taken after
/// one batch of rows, then `batches` more, the last segment archived.
fn primary_and_walless_clone(
    dir: &std::path::Path,
    s3: &S3Server,
    batches: usize,
) -> (PgCluster, Sidecar, PgCluster, String) {
    let (primary, sidecar) = archiving_primary(dir, &s3.endpoint(), "db");
    primary.write_and_switch();
    let clone = PgCluster::at(dir, "db-restored-1");
    base_backup_without_wal(&primary, &clone);
    for _ in 1..batches {
        primary.write_and_switch();
    }
    let last = primary.write_and_switch();
    primary.wait_archived(&last);
    (primary, sidecar, clone, last)
}

/// The clone set up as CNPG sets up a recovery through the plugin, its sidecar started.
fn recovering_through(dir: &std::path::Path, clone: &PgCluster, endpoint: &str) -> Sidecar {
    let restored = recovering_cluster(dir, endpoint, "db");
    let sidecar = Sidecar::start(dir, "db-restored-1", clone, &restored, "db-restored-1");
    give_to_postgres(&clone.data);
    clone.take_over_config();
    clone.configure(&format!("archive_mode = off\n{}", sidecar.restore_settings()));
    clone.touch("recovery.signal");
    sidecar
}

fn count_rows(pg: &PgCluster) -> i64 {
    pg.query_text("SELECT count(*) FROM e2e_data").parse().unwrap()
}

#[test]
fn wal_archived_through_the_plugin_recovers_every_row_through_the_plugin() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let (primary, sidecar, clone, last) = primary_and_walless_clone(dir.path(), &s3, 4);
    let rows = count_rows(&primary);
    assert_eq!(rows, 5 * ROWS_PER_BATCH);

    // What the plugin stored is what Postgres wrote, at Barman's path, and the repository
    // is claimed for this cluster.
    let repo = s3.repository("db");
    let stored = fetch_decompressed(&repo, &format!("wals/{}/{last}.zst", &last[..16])).expect("the last segment");
    assert_eq!(stored, std::fs::read(primary.pg_wal().join(&last)).unwrap());
    let owner = fetch_decompressed(&repo, "pgops.json").unwrap();
    assert!(String::from_utf8_lossy(&owner).contains(&primary.system_identifier()));
    assert_eq!(primary.archiver_counts().1, 0, "no failed archive attempt: {}", sidecar.log());
    assert!(!primary.data.join(".check-empty-wal-archive").exists(), "the first archive removes CNPG's marker");

    let recovery_sidecar = recovering_through(dir.path(), &clone, &s3.endpoint());
    clone.recover();
    assert_eq!(count_rows(&clone), rows, "sidecar log:\n{}", recovery_sidecar.log());
    assert!(clone.log().contains(&format!("restored log file \"{last}\" from archive")), "{}", clone.log());
}

#[test]
fn archiving_and_recovery_through_a_flaky_then_down_store_lose_nothing_and_never_promote_short() {
    let dir = scratch_dir();
    let mut s3 = S3Server::start(dir.path());
    // Everything goes through the fault proxy: 503s, 500s and resets in bursts longer than
    // the SDK's own retries.
    let proxy = FaultProxy::start(s3.port);
    proxy.set(Fault::Flaky { period: 8, burst: 4 });
    let (primary, _sidecar) = archiving_primary(dir.path(), &proxy.endpoint(), "db");
    primary.write_and_switch();
    let clone = PgCluster::at(dir.path(), "db-restored-1");
    base_backup_without_wal(&primary, &clone);
    primary.write_and_switch();
    // The store goes down while WAL is archived: every attempt fails, the segment waits.
    s3.stop();
    let during = primary.write_and_switch();
    wait_for("a failed archive attempt", Duration::from_secs(60), || primary.archiver_counts().1 > 0);
    assert!(primary.wal_with_status("ready").contains(&during));
    s3.resume();
    primary.write_and_switch();
    let last = primary.write_and_switch();
    primary.wait_archived(&last);
    let rows = count_rows(&primary);
    assert_eq!(rows, 5 * ROWS_PER_BATCH);
    primary.stop();

    // Recovery starts while the store is down, then goes on through the flaky proxy.
    let recovery_sidecar = recovering_through(dir.path(), &clone, &proxy.endpoint());
    s3.stop();
    clone.start_in_background();
    std::thread::sleep(Duration::from_secs(10));
    assert!(!clone.log().contains("selected new timeline"), "promoted while the store was down:\n{}", clone.log());
    assert!(recovery_sidecar.log().contains("trying again"), "{}", recovery_sidecar.log());
    s3.resume();
    wait_for("recovery to end", Duration::from_secs(240), || {
        clone.log().contains("database system is ready to accept connections")
    });
    assert_eq!(count_rows(&clone), rows, "sidecar log:\n{}", recovery_sidecar.log());
    assert!(proxy.failed() > 3);
}

#[test]
fn hostile_requests_and_foreign_repositories_are_refused_with_the_parameter_or_object_named() {
    let dir = scratch_dir();
    let mut s3 = S3Server::start(dir.path());
    let (primary, mut sidecar) = archiving_primary(dir.path(), &s3.endpoint(), "db");
    let segment = primary.write_and_switch();
    primary.wait_archived(&segment);

    // A path outside pg_wal, a relative escape for a restore, a name that is not WAL.
    let (status, _, err) = sidecar.call(&["wal-archive", "/etc/passwd"]);
    assert_eq!(status, 1);
    assert!(err.contains("InvalidArgument") && err.contains("source_file_name \"/etc/passwd\""), "{err}");
    let outside = dir.path().join(&segment);
    std::fs::copy(primary.pg_wal().join(&segment), &outside).unwrap();
    let (status, _, err) = sidecar.call(&["wal-archive", outside.to_str().unwrap()]);
    assert_eq!(status, 1);
    assert!(err.contains("is outside pg_wal"), "{err}");
    // Restores outside archive recovery (no recovery.signal): an error is answered.
    let as_replica = cluster(
        "db",
        pgops_e2e::cnpg::parameters(dir.path(), &s3.endpoint(), "db"),
        json!({}),
        json!({"currentPrimary": "db-2"}),
    );
    sidecar.set_cluster(&as_replica);
    let (status, _, err) = sidecar.call(&["wal-restore", &segment, "../../escaped"]);
    assert_eq!(status, 1);
    assert!(err.contains("destination_file_name") && err.contains("is outside pg_wal"), "{err}");
    assert!(!dir.path().join("escaped").exists());
    // Recovery restores into its own temporary names only.
    let (status, _, err) = sidecar.call(&["wal-restore", &segment, &format!("pg_wal/{segment}")]);
    assert_eq!(status, 1);
    assert!(err.contains("not over"), "{err}");

    // Bad parameters: the status names the parameter and says what to write; nothing is
    // archived meanwhile and the segment stays .ready.
    let bad = cluster("db", json!({"repository": "s3://backups/db", "walCompression": "brotli"}), json!({}), json!({}));
    sidecar.set_cluster(&bad);
    let next = primary.write_and_switch();
    wait_for("a failed archive attempt", Duration::from_secs(60), || primary.archiver_counts().1 > 0);
    let (status, _, err) = sidecar.call(&["wal-archive", &format!("pg_wal/{next}")]);
    assert_eq!(status, 1);
    assert!(err.contains("parameter walCompression") && err.contains("Available values"), "{err}");
    assert!(primary.wal_with_status("ready").contains(&next));

    // A repository claimed by another cluster is refused, and says so.
    let other = PgCluster::init(dir.path(), "other");
    let other_parameters = pgops_e2e::cnpg::parameters(dir.path(), &s3.endpoint(), "db");
    let other_sidecar = Sidecar::start(
        dir.path(),
        "other",
        &other,
        &cluster("other", other_parameters, json!({}), json!({"currentPrimary": "other"})),
        "other",
    );
    other.start();
    let foreign = other.write_and_switch();
    let (status, _, err) = other_sidecar.call(&["wal-archive", &format!("pg_wal/{foreign}")]);
    assert_eq!(status, 1);
    assert!(err.contains("FailedPrecondition") && err.contains("belongs to another cluster"), "{err}");
    // The same name may hold the primary's segment; never the other cluster's.
    let stored = fetch_decompressed(&s3.repository("db"), &format!("wals/{}/{foreign}.zst", &foreign[..16]));
    assert_ne!(stored, Some(std::fs::read(other.pg_wal().join(&foreign)).unwrap()));

    // A new cluster's first archive (CNPG's .check-empty-wal-archive marker) into a
    // repository that already holds WAL is refused.
    sidecar.set_cluster(&cluster(
        "db",
        pgops_e2e::cnpg::parameters(dir.path(), &s3.endpoint(), "db"),
        json!({}),
        json!({"currentPrimary": "db-1"}),
    ));
    primary.touch(".check-empty-wal-archive");
    let (status, _, err) = sidecar.call(&["wal-archive", &format!("pg_wal/{next}")]);
    assert_eq!(status, 1);
    assert!(err.contains("already holds WAL") && err.contains("skipEmptyWalArchiveCheck"), "{err}");
    // The operator's way out: the annotation the message names.
    let mut skipping = cluster(
        "db",
        pgops_e2e::cnpg::parameters(dir.path(), &s3.endpoint(), "db"),
        json!({}),
        json!({"currentPrimary": "db-1"}),
    );
    skipping["metadata"]["annotations"] = json!({"cnpg.io/skipEmptyWalArchiveCheck": "enabled"});
    sidecar.set_cluster(&skipping);
    let (status, _, err) = sidecar.call(&["wal-archive", &format!("pg_wal/{next}")]);
    assert_eq!(status, 0, "{err}");
    let stored = fetch_decompressed(&s3.repository("db"), &format!("wals/{}/{next}.zst", &next[..16]));
    assert_eq!(stored, Some(std::fs::read(primary.pg_wal().join(&next)).unwrap()));

    // A Restore on the primary holds out while the store is down; asked to stop, the
    // sidecar cuts it off within its shutdown grace instead of waiting for the store.
    // (The sidecar tells archive recovery by PGDATA's signal files; the running server
    // reads them only at its next start.)
    primary.touch("recovery.signal");
    s3.stop();
    let held = sidecar.call_in_background(&["wal-restore", &next, "pg_wal/RECOVERYXLOG"]);
    std::thread::sleep(pgops_cnpg::wal::REPLICA_PATIENCE + Duration::from_secs(5));
    assert!(!held.is_finished(), "a replica's patience, not a hold: {}", sidecar.log());
    assert!(sidecar.log().contains("trying again"), "{}", sidecar.log());
    let stopping = std::time::Instant::now();
    sidecar.stop();
    assert!(
        stopping.elapsed() < pgops_cnpg::instance::SHUTDOWN_GRACE + Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
    let (status, _, _) = held.join().unwrap();
    assert_eq!(status, 1);
    assert!(!primary.pg_wal().join("RECOVERYXLOG").exists());
}

#[test]
fn backups_through_the_plugin_on_the_primary_and_on_a_streaming_standby_restore_every_row() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let (primary, sidecar) = archiving_primary(dir.path(), &s3.endpoint(), "db");
    primary.write_and_switch();
    let (status, out, err) = sidecar.call(&["backup", "backup-on-primary"]);
    assert_eq!(status, 0, "{err}\n{}", sidecar.log());
    let on_primary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(on_primary["backupName"], "backup-on-primary");
    assert!(on_primary["backupLabelFile"].as_str().unwrap().contains("START WAL LOCATION"), "{out}");
    assert_eq!((on_primary["instanceID"].as_str(), on_primary["online"].as_bool()), (Some("db-1"), Some(true)));
    assert!(
        on_primary["startedAt"].as_i64().unwrap() > 0 && on_primary["endWal"].as_str().unwrap().len() == 24,
        "{out}"
    );

    // A streaming standby, CNPG's default backup target, backs up through its own sidecar;
    // its last segment reaches the repository through the primary's archiving.
    primary.write_and_switch();
    let standby = PgCluster::at(dir.path(), "db-2");
    let out = primary
        .tool("pg_basebackup")
        .args(["-R", "-X", "stream", "-d", &primary.connstr(), "-D"])
        .arg(&standby.data)
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_basebackup: {}", String::from_utf8_lossy(&out.stderr));
    standby.take_over_config();
    let definition = cluster(
        "db",
        pgops_e2e::cnpg::parameters(dir.path(), &s3.endpoint(), "db"),
        json!({}),
        json!({"currentPrimary": "db-1", "targetPrimary": "db-1"}),
    );
    let standby_sidecar = Sidecar::start(dir.path(), "db-2", &standby, &definition, "db-2");
    standby.start();
    let rows = count_rows(&primary);
    wait_for("the standby to replay", Duration::from_secs(60), || count_rows(&standby) == rows);
    let backing_up = standby_sidecar.call_in_background(&["backup", "backup-on-standby"]);
    primary.execute("CREATE TABLE ticks(at timestamptz)");
    while !backing_up.is_finished() {
        primary.execute("INSERT INTO ticks VALUES (now()); SELECT pg_switch_wal()");
        std::thread::sleep(Duration::from_secs(1));
    }
    let (status, out, err) = backing_up.join().unwrap();
    assert_eq!(status, 0, "{err}\n{}", standby_sidecar.log());
    let on_standby: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(on_standby["instanceID"], "db-2");
    let ids = [on_primary["backupId"].as_str().unwrap(), on_standby["backupId"].as_str().unwrap()];
    let last = primary.write_and_switch();
    primary.wait_archived(&last);
    let rows = count_rows(&primary);

    // Each backup restores (pgops restore, WAL from the repository) to every row.
    for (n, id) in ids.iter().enumerate() {
        let clone = PgCluster::at(dir.path(), &format!("restored-{n}"));
        restore_clone(&s3, "db", &clone, &["--backup", id]);
        clone.recover();
        assert_eq!(count_rows(&clone), rows, "backup {id}: {}", clone.log());
    }
}

/// CNPG's recovery Job: `manager instance restore` asks the plugin's RestoreJobHooks to
/// restore the data, then writes the recovery target, recovery.signal and the answered
/// restore_config itself and starts Postgres, whose restore_command reaches the same
/// sidecar. Played here step by step, to a point in time.
#[test]
fn a_recovery_job_restores_through_the_plugin_to_a_point_in_time() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let redundancy = json!({"retentionPolicy": "REDUNDANCY 1"});
    let (primary, sidecar) = archiving_primary_with(dir.path(), &s3.endpoint(), "db", redundancy);
    primary.write_and_switch();
    let (status, first, err) = sidecar.call(&["backup", "older"]);
    assert_eq!(status, 0, "{err}");
    primary.write_and_switch();
    let (status, second, err) = sidecar.call(&["backup", "before-the-mistake"]);
    assert_eq!(status, 0, "{err}");
    // REDUNDANCY 1 after a DONE backup on the primary: the older backup goes.
    let backup_id =
        |out: &str| serde_json::from_str::<serde_json::Value>(out).unwrap()["backupId"].as_str().unwrap().to_string();
    let repo = s3.repository("db");
    let kept = |id: &str| !block_on(repo.list(&format!("base/{id}/"))).unwrap().is_empty();
    assert!(!kept(&backup_id(&first)) && kept(&backup_id(&second)), "sidecar log:\n{}", sidecar.log());
    primary.write_and_switch();
    let rows = count_rows(&primary);
    let target = primary.query_text("SELECT pg_current_wal_insert_lsn()");
    primary.write_and_switch();
    let last = primary.write_and_switch();
    primary.wait_archived(&last);
    assert_eq!(count_rows(&primary), rows + 2 * ROWS_PER_BATCH);
    assert_eq!(rows, 3 * ROWS_PER_BATCH);

    let job = PgCluster::at(dir.path(), "db-restored-1");
    let mut restored = recovering_cluster(dir.path(), &s3.endpoint(), "db");
    restored["spec"]["bootstrap"]["recovery"]["recoveryTarget"] = json!({"targetLSN": target});
    restored["spec"]["walStorage"] = json!({"size": "1Gi"});
    let job_sidecar = Sidecar::start_as("restore", dir.path(), "job", &job, &restored, "db-restored-1-full-recovery");
    let (status, restore_config, err) = job_sidecar.call(&["restore"]);
    assert_eq!(status, 0, "{err}\n{}", job_sidecar.log());
    assert_eq!(restore_config, pgops_cnpg::restore_job::RESTORE_CONFIG);
    assert!(!job.data.join("recovery.signal").exists(), "recovery is CNPG's to set up");
    assert!(job.data.join("backup_manifest").exists() && job.data.join("PG_VERSION").exists());
    // walStorage: pg_wal on the WAL volume, as CNPG's pods have it.
    assert_eq!(std::fs::read_link(job.data.join("pg_wal")).unwrap(), job_sidecar.waldir);

    // What CNPG writes (writeRecoveryConfiguration), then the server.
    job.take_over_config();
    job.configure(&format!(
        "archive_command = 'false'\n{}recovery_target_lsn = '{target}'\nrecovery_target_inclusive = 'true'\n",
        job_sidecar.localized(&restore_config)
    ));
    job.touch("recovery.signal");
    job.start();
    wait_for("promotion at the target", Duration::from_secs(120), || {
        job.query_text("SELECT pg_is_in_recovery()") == "f"
    });
    assert_eq!(count_rows(&job), rows, "sidecar log:\n{}", job_sidecar.log());
    let recovered_wal = std::fs::read_dir(&job_sidecar.waldir).unwrap().count();
    assert!(recovered_wal > 1, "the recovered server writes its WAL on the WAL volume");

    // A restore into a data directory that is not empty is refused, nothing touched.
    let (status, _, err) = job_sidecar.call(&["restore"]);
    assert_eq!(status, 1);
    assert!(err.contains("FailedPrecondition") && err.contains("is not empty"), "{err}");
}
