//! The restore side: `pgops wal-fetch %f %p` as restore_command brings a base backup up to
//! the newest archived WAL, proven by starting Postgres on the restored data.

use pgops_core::compression::Compression;
use pgops_e2e::*;
use std::process::{Command, Output};
use std::time::Duration;

fn wal_fetch(s3: &S3Server, repository: &str, wal: &str, dest: &std::path::Path) -> Output {
    let mut fetch = Command::new(pgops_cli());
    fetch.args(["--repository", repository, "--s3-endpoint", &s3.endpoint(), "wal-fetch", wal]).arg(dest);
    fetch.env("AWS_ACCESS_KEY_ID", ACCESS_KEY).env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    fetch.output().unwrap()
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
    restored.start_with_env(&[
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]);
    wait_for("recovery to reach the end of the archive", Duration::from_secs(120), || {
        restored.query_text("SELECT pg_is_in_recovery()") == "f"
    });
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
    assert_eq!(corrupt.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&corrupt.stderr).contains("corrupt"));
    assert!(!dest.exists());

    let bad_usage = wal_fetch(&s3, "ftp://nowhere", name, &dest);
    assert_eq!(bad_usage.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&bad_usage.stderr).contains("unsupported scheme"));

    s3.stop();
    let down = wal_fetch(&s3, &repository, name, &dest);
    assert_eq!(down.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(stderr.contains(&s3.endpoint()) && stderr.contains("Connection refused"), "{stderr}");
    assert!(!dest.exists());
}
