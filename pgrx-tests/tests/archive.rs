//! End-to-end tests of WAL archiving: real PostgreSQL (each supported major) with `archive_library = 'pgops'`
//! and a real S3 server process.

use pgops_core::naming;
use pgops_e2e::*;
use std::process::Command;
use std::time::Duration;

/// The archived object of `name` decompresses to exactly the file Postgres archived.
fn assert_archived_identical(pg: &PgCluster, repo: &pgops_core::store::Repository, name: &str) {
    let key = naming::wal_key(name, pgops_core::pipeline::Compression::Zstd).unwrap();
    let stored = fetch_decompressed(repo, &key).unwrap_or_else(|| panic!("{key} is not in the repository"));
    let original = std::fs::read(pg.pg_wal().join(name)).unwrap();
    assert!(stored == original, "{key} differs from pg_wal/{name}");
}

#[test]
fn wal_lands_at_barman_paths_compressed_and_byte_identical() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = archiving_cluster(dir.path(), "main", &s3, "cnpg-main");
    let segments: Vec<String> = (0..3).map(|_| pg.write_and_switch()).collect();
    pg.wait_archived(segments.last().unwrap());

    let repo = s3.repository("cnpg-main");
    for name in &segments {
        let key = format!("wals/{}/{name}.zst", &name[..16]);
        let head = block_on(repo.head(&key)).unwrap().unwrap_or_else(|| panic!("{key} missing"));
        assert!(head.size < 16 << 20, "{key} is not compressed: {} bytes", head.size);
        assert_archived_identical(&pg, &repo, name);
    }
    // The repository was claimed for this cluster.
    let metadata = fetch_decompressed(&repo, "pgops.json").unwrap();
    assert!(String::from_utf8(metadata).unwrap().contains(&pg.system_identifier()));

    let (archived, failed) = pg.archiver_counts();
    assert!(archived >= 3 && failed == 0, "pg_stat_archiver: {archived} archived, {failed} failed");
    pg.execute("CREATE EXTENSION pgops");
    let row = pg
        .client()
        .query_one("SELECT last_archived_wal, archived_count, archived_bytes, stored_bytes, last_failed_wal FROM pgops.archive_status()", &[])
        .unwrap();
    let (last, count, raw, stored): (String, i64, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(count, archived);
    assert_eq!(raw, count * (16 << 20));
    assert!(stored > 0 && stored < raw, "stored {stored} of {raw}");
    assert!(last >= *segments.last().unwrap());
    assert_eq!(row.get::<_, Option<String>>(4), None);
}

/// Runs `barman-cloud-wal-restore` for `s3://backups`, server `server_name`.
fn barman_wal_restore(s3: &S3Server, server_name: &str, wal: &str, dest: &std::path::Path) -> std::process::Output {
    let mut restore = Command::new(barman_bin("barman-cloud-wal-restore"));
    restore.args(["--endpoint-url", &s3.endpoint(), &format!("s3://{BUCKET}"), server_name, wal]).arg(dest);
    s3.barman_env(&mut restore);
    restore.output().unwrap()
}

#[test]
fn barman_cloud_wal_restore_fetches_pgops_segments_byte_identical() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = archiving_cluster(dir.path(), "main", &s3, "cnpg-main");
    let name = pg.write_and_switch();
    pg.wait_archived(&name);

    let dest = dir.path().join("restored-by-barman");
    let out = barman_wal_restore(&s3, "cnpg-main", &name, &dest);
    assert!(out.status.success(), "barman-cloud-wal-restore: {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        std::fs::read(&dest).unwrap() == std::fs::read(pg.pg_wal().join(&name)).unwrap(),
        "barman restored different bytes"
    );

    // And a segment that was never archived is "not found" (exit 1), not another error.
    let missing = barman_wal_restore(&s3, "cnpg-main", "0000000100000000000000FF", &dir.path().join("never"));
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn timeline_history_and_partial_files_are_archived_after_promotion() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let primary = archiving_cluster(dir.path(), "primary", &s3, "ha");
    primary.execute("ALTER SYSTEM SET wal_level = 'replica'");
    let first = primary.write_and_switch();
    primary.wait_archived(&first);

    let standby = PgCluster::at(dir.path(), "standby");
    let mut basebackup = standby.tool("pg_basebackup");
    basebackup.args(["-R", "-X", "stream", "--no-sync", "-d", &primary.connstr(), "-D"]).arg(&standby.data);
    let out = basebackup.output().unwrap();
    assert!(out.status.success(), "pg_basebackup: {}", String::from_utf8_lossy(&out.stderr));
    standby.take_over_config();
    standby.start();
    primary.execute("INSERT INTO e2e_data(payload) VALUES ('before failover')");
    wait_for("the standby to replay", Duration::from_secs(60), || {
        standby.query_text("SELECT count(*) FROM e2e_data WHERE payload = 'before failover'") == "1"
    });
    primary.stop();

    let mut promote = standby.tool("pg_ctl");
    promote.args(["promote", "-w", "-D"]).arg(&standby.data);
    assert!(promote.status().unwrap().success());
    let on_new_timeline = standby.write_and_switch();
    assert!(on_new_timeline.starts_with("00000002"), "{on_new_timeline}");
    standby.wait_archived(&on_new_timeline);
    standby.wait_archived("00000002.history");

    let repo = s3.repository("ha");
    let history =
        fetch_decompressed(&repo, "wals/00000002.history.zst").expect("history file at wals/<TLI>.history.zst");
    assert_eq!(history, std::fs::read(standby.pg_wal().join("00000002.history")).unwrap());
    assert_archived_identical(&standby, &repo, &on_new_timeline);
    let partial =
        standby.wal_with_status("done").into_iter().find(|n| n.ends_with(".partial")).expect("a .partial was archived");
    assert!(block_on(repo.head(&format!("wals/{}/{partial}.zst", &partial[..16]))).unwrap().is_some());
}

/// Makes Postgres archive `name` again, as after a crash between upload and `.done`.
fn mark_ready_again(pg: &PgCluster, name: &str) {
    let status = pg.pg_wal().join("archive_status");
    std::fs::rename(status.join(format!("{name}.done")), status.join(format!("{name}.ready"))).unwrap();
    // A WAL switch wakes the archiver, which then rescans archive_status.
    pg.write_and_switch();
}

#[test]
fn identical_rearchive_succeeds_and_a_tampered_object_is_never_overwritten() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = archiving_cluster(dir.path(), "main", &s3, "main");
    let name = pg.write_and_switch();
    pg.wait_archived(&name);
    let repo = s3.repository("main");
    let key = naming::wal_key(&name, pgops_core::pipeline::Compression::Zstd).unwrap();

    let (_, failed_before) = pg.archiver_counts();
    mark_ready_again(&pg, &name);
    pg.wait_archived(&name);
    assert_eq!(pg.archiver_counts().1, failed_before, "an identical re-archive must not fail");
    assert!(pg.log().contains(&format!("\"{name}\" was already archived with identical content")), "{}", pg.log());

    // Replace the object with valid zstd of other content.
    let tampered = pgops_core::pipeline::Compression::Zstd.compress(b"not the segment", 3).unwrap();
    block_on(repo.put(&key, tampered.clone().into())).unwrap();
    mark_ready_again(&pg, &name);
    wait_for("archiving of the tampered name to fail", Duration::from_secs(120), || {
        pg.archiver_counts().1 > failed_before
    });
    assert!(pg.wal_with_status("ready").contains(&name), "the segment must stay .ready");
    assert_eq!(block_on(repo.get(&key)).unwrap().unwrap().as_ref(), tampered.as_slice(), "the object was overwritten");
    let log = pg.log();
    assert!(
        log.contains(&format!("WARNING:  pgops: could not archive \"{name}\"")) && log.contains("different content"),
        "{log}"
    );
    pg.execute("CREATE EXTENSION pgops");
    let failure = pg.query_text("SELECT last_failed_wal || ': ' || last_failure FROM pgops.archive_status()");
    assert!(failure.starts_with(&name) && failure.contains("not overwritten"), "{failure}");
}

#[test]
fn a_second_cluster_is_refused_naming_both_system_identifiers() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let owner = archiving_cluster(dir.path(), "owner", &s3, "shared");
    let first = owner.write_and_switch();
    owner.wait_archived(&first);
    let stranger = archiving_cluster(dir.path(), "stranger", &s3, "shared");
    stranger.write_and_switch();
    wait_for("the stranger's archiving to fail", Duration::from_secs(60), || stranger.archiver_counts().1 > 0);
    std::thread::sleep(Duration::from_secs(2));
    let (archived, _) = stranger.archiver_counts();
    assert_eq!(archived, 0, "nothing of the stranger's may be archived");
    let log = stranger.log();
    assert!(log.contains("belongs to another cluster"), "{log}");
    assert!(log.contains(&owner.system_identifier()) && log.contains(&stranger.system_identifier()), "{log}");
    // The owner's segment is untouched.
    assert_archived_identical(&owner, &s3.repository("shared"), &first);
}

#[test]
fn s3_outage_loses_nothing_and_archiving_resumes_by_itself() {
    let dir = scratch_dir();
    let mut s3 = S3Server::start(dir.path());
    let pg = archiving_cluster(dir.path(), "main", &s3, "main");
    let before = pg.write_and_switch();
    pg.wait_archived(&before);

    s3.stop();
    let during: Vec<String> = (0..3).map(|_| pg.write_and_switch()).collect();
    wait_for("archiving to fail while S3 is down", Duration::from_secs(60), || pg.archiver_counts().1 > 0);
    let waiting = pg.wal_with_status("ready");
    for name in &during {
        assert!(waiting.contains(name) || pg.wal_with_status("done").contains(name), "{name} lost its status");
    }
    assert!(waiting.contains(&during[0]), "nothing can be archived while S3 is down");
    assert!(pg.log().contains("Connection refused"), "the cause is logged: {}", pg.log());

    s3.resume();
    // No new WAL, no signal: Postgres' own retry (at most a minute later) must drain it.
    for name in &during {
        pg.wait_archived(name);
    }
    let repo = s3.repository("main");
    for name in &during {
        assert_archived_identical(&pg, &repo, name);
    }
    assert!(pg.wal_with_status("ready").is_empty());
}

#[test]
fn file_repositories_work_the_same_way() {
    let dir = scratch_dir();
    let repo_dir = dir.path().join("repo");
    std::fs::create_dir(&repo_dir).unwrap();
    std::fs::set_permissions(&repo_dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let pg = PgCluster::init(dir.path(), "main");
    pg.configure(ARCHIVING);
    pg.configure(&format!("pgops.repository = 'file://{}'", repo_dir.display()));
    pg.start();
    let names: Vec<String> = (0..2).map(|_| pg.write_and_switch()).collect();
    pg.wait_archived(&names[1]);
    for name in &names {
        let path = repo_dir.join(naming::wal_key(name, pgops_core::pipeline::Compression::Zstd).unwrap());
        let stored = pgops_core::pipeline::Compression::Zstd.decompress(&std::fs::read(&path).unwrap()).unwrap();
        assert!(stored == std::fs::read(pg.pg_wal().join(name)).unwrap(), "{} differs", path.display());
    }
    assert!(repo_dir.join("pgops.json").exists());
    mark_ready_again(&pg, &names[0]);
    pg.wait_archived(&names[0]);
    assert_eq!(pg.archiver_counts().1, 0);

    pg.execute("CREATE EXTENSION pgops");
    let failing: i64 = pg.client().query_one("SELECT count(*) FROM pgops.check() WHERE NOT ok", &[]).unwrap().get(0);
    assert_eq!(failing, 0);
}

#[test]
fn archiving_waits_while_unconfigured_and_drains_once_configured() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = PgCluster::init(dir.path(), "main");
    pg.configure(ARCHIVING);
    pg.start();
    let name = pg.write_and_switch();
    wait_for("the LOG line saying what is missing", Duration::from_secs(60), || {
        pg.log().contains("pgops: WAL archiving is not configured: pgops.repository is not set")
    });
    assert!(pg.wal_with_status("ready").contains(&name), "{name} must wait, not be dropped");

    // One statement at a time: ALTER SYSTEM refuses to run inside a (implicit) transaction.
    for line in s3.pgops_settings("late").lines() {
        pg.execute(&format!("ALTER SYSTEM SET {line}"));
    }
    pg.execute("SELECT pg_reload_conf()");
    pg.wait_archived(&name);
    assert_archived_identical(&pg, &s3.repository("late"), &name);
}

/// The peak resident memory of process `pid` (VmHWM), in MiB.
fn peak_rss_mib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmHWM:")).expect("VmHWM in /proc/PID/status");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
}

/// Whether two files hold the same bytes, read a piece at a time.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::io::Read;
    let (mut a, mut b) = (std::fs::File::open(a).unwrap(), std::fs::File::open(b).unwrap());
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x).unwrap();
        if n == 0 {
            return b.read(&mut y[..1]).unwrap() == 0;
        }
        if b.read_exact(&mut y[..n]).is_err() || x[..n] != y[..n] {
            return false;
        }
    }
}

/// 1 GiB segments (`initdb --wal-segsize=1024`, finding 5 of the third trust round): a
/// segment is streamed up in parts, never held whole — the archiver's peak memory stays a
/// fraction of one segment — and `pgops wal-fetch` brings it back whole, streaming too.
#[test]
fn one_gib_segments_are_archived_and_fetched_in_a_fraction_of_a_segment_of_memory() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let pg = PgCluster::init_with(dir.path(), "big", &pg_bindir(), &["--wal-segsize=1024"]);
    pg.configure(ARCHIVING);
    pg.configure(&s3.pgops_settings("big"));
    pg.configure("min_wal_size = '2GB'\nmax_wal_size = '8GB'\nwal_keep_size = '8GB'\n");
    pg.start();
    // About 60 MB of WAL that compresses to more than one 8 MiB part.
    pg.execute(
        "CREATE TABLE noise AS SELECT g, md5(random()::text) || md5(random()::text) AS a FROM generate_series(1, 400000) g",
    );
    let name = pg.query_text("SELECT pg_walfile_name(pg_switch_wal())");
    pg.wait_archived(&name);
    let archiver = pg.query_text("SELECT pid FROM pg_stat_activity WHERE backend_type = 'archiver'");
    let archiver_peak = peak_rss_mib(&archiver);
    eprintln!("archiver peak RSS with 1 GiB segments: {archiver_peak} MiB");
    assert!(archiver_peak < 400, "the archiver held {archiver_peak} MiB at its peak for a 1024 MiB segment");

    let repo = s3.repository("big");
    let key = naming::wal_key(&name, pgops_core::pipeline::Compression::Zstd).unwrap();
    let stored = block_on(repo.head(&key)).unwrap().expect("the segment is stored");
    assert!(stored.size > 8 << 20, "{} stored bytes: more than one part was sent", stored.size);

    let dest = dir.path().join("fetched");
    let mut fetch = s3.pgops("s3://backups/big");
    fetch.args(["wal-fetch", &name]).arg(&dest);
    let child = fetch.spawn().unwrap();
    let (status, rusage) = wait_with_rusage(child);
    assert_eq!(status, 0, "wal-fetch exit status");
    let fetch_peak = rusage / 1024;
    eprintln!("wal-fetch peak RSS with 1 GiB segments: {fetch_peak} MiB");
    assert!(fetch_peak < 400, "wal-fetch held {fetch_peak} MiB at its peak for a 1024 MiB segment");
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), 1 << 30);
    assert!(same_file(&dest, &pg.pg_wal().join(&name)), "wal-fetch brought back pg_wal/{name} byte for byte");
}

/// Waits for `child` and returns its exit status and peak resident memory (KiB), as the
/// kernel accounts them (`wait4`).
fn wait_with_rusage(child: std::process::Child) -> (i32, u64) {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet waited for (the Child is consumed here, and
    // dropping a Child neither waits nor kills); both pointers are to live locals.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    drop(child);
    (libc::WEXITSTATUS(status), usage.ru_maxrss as u64)
}
