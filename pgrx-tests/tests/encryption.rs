//! Client-side encryption end to end: with `pgops.encryption = on`, the WAL and base
//! backups reach the store as age streams (no plaintext, no readable codec), restore with
//! the key file to an exact point in time, and every way of getting the key wrong (none,
//! another one, a damaged object, a rotation) is refused with a message that says what
//! to do, while WAL stays in pg_wal.

use pgops_core::pipeline::Compression;
use pgops_core::store::Repository;
use pgops_e2e::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// `pgops keygen dir/name`, the file handed to `postgres` (the server reads it, mode 0600);
/// returns its path and key id.
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = Command::new(pgops_cli()).arg("keygen").arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "pgops keygen: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let id =
        stdout.split("key id ").nth(1).and_then(|rest| rest.split(',').next()).unwrap_or_else(|| panic!("{stdout}"));
    give_to_postgres(&path);
    (path, id.to_string())
}

/// postgresql.conf lines encrypting to the key file `key`.
fn encryption_settings(key: &Path) -> String {
    format!("pgops.encryption = on\npgops.encryption_key_file = '{}'", key.display())
}

/// `pgops <args>` against `s3://backups/<prefix>`, with `--encryption-key-file key` when
/// given (and never a key file from the environment).
fn pgops(s3: &S3Server, prefix: &str, key: Option<&Path>, args: &[&str]) -> Output {
    let mut pgops = s3.pgops(&format!("s3://{BUCKET}/{prefix}"));
    pgops.env_remove("PGOPS_ENCRYPTION_KEY_FILE").env("PGOPS_WAL_FETCH_RETRY_FOR", "4");
    if let Some(key) = key {
        pgops.arg("--encryption-key-file").arg(key);
    }
    pgops.args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Starts Postgres on a directory `pgops restore` wrote, not archiving, and waits for
/// recovery to end (its restore_command reads the key file as `postgres`).
fn start_restored(restored: &PgCluster) {
    give_to_postgres(&restored.data);
    restored.configure("archive_mode = off\npgops.repository = ''");
    restored.take_over_config();
    restored.recover();
}

/// Every regular file below `dir` (none when it does not exist).
fn files_below(dir: &Path) -> Vec<PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    tree_listing(dir).into_iter().filter(|(path, _)| path.is_file()).map(|(path, _)| path).collect()
}

/// Where s3s-fs keeps object `relative` of `s3://backups/<prefix>` on its disk.
fn object_file(s3: &S3Server, prefix: &str, relative: &str) -> PathBuf {
    s3.root.join(BUCKET).join(prefix).join(relative)
}

/// The WAL and base backup data objects of `s3://backups/<prefix>` on the server's disk.
fn wal_and_data_objects(s3: &S3Server, prefix: &str) -> Vec<PathBuf> {
    let root = s3.root.join(BUCKET).join(prefix);
    let mut objects = files_below(&root.join("wals"));
    objects.extend(
        files_below(&root.join("base"))
            .into_iter()
            .filter(|path| path.file_name().unwrap().to_string_lossy().starts_with("data")),
    );
    objects
}

/// The first line of a stored object: an encrypted object's pgops header.
fn header_of(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let end = bytes.iter().position(|b| *b == b'\n').unwrap_or(bytes.len().min(80));
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// The `encryption` record of the repository's ownership record, as stored.
fn encryption_record(s3: &S3Server, prefix: &str) -> serde_json::Value {
    let text = std::fs::read(object_file(s3, prefix, "pgops.json")).unwrap();
    let record: serde_json::Value = serde_json::from_slice(&text).unwrap();
    record["encryption"].clone()
}

/// Flips one bit of the byte in the middle of a file.
fn flip_middle_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

/// A marker no other test or file holds.
fn unique_marker() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("PGOPS-PLAINTEXT-MARKER-{:x}", nanos ^ ((std::process::id() as u128) << 64))
}

#[test]
fn encrypted_wal_and_backup_restore_to_a_pitr_target_with_exact_rows() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let (key, key_id) = keygen(dir.path(), "repository.key");
    let pg = backing_up_cluster(
        dir.path(),
        &s3,
        "main",
        &format!("pgops.backup_fast_checkpoint = on\n{}", encryption_settings(&key)),
    );
    let marker = unique_marker();
    let insert_marked = |from: u32, to: u32| {
        pg.execute(&format!("INSERT INTO marked SELECT g, '{marker} row ' || g FROM generate_series({from}, {to}) g"))
    };
    pg.execute("CREATE TABLE marked(id int PRIMARY KEY, note text)");
    insert_marked(1, 5000);

    let mut init = pg.tool("pgbench");
    init.args(["-i", "-s", "1", "-q", &pg.connstr()]);
    assert!(init.output().unwrap().status.success());
    let mut load = pg.tool("pgbench");
    // Bounded in time, so that it ends by itself (killing runuser would leave pgbench on).
    load.args(["-c", "2", "-T", "12", &pg.connstr()]).stdout(Stdio::null()).stderr(Stdio::null());
    let mut load = load.spawn().unwrap();
    let backup = pg.query_text("SELECT pgops.backup_now()");
    assert!(load.try_wait().unwrap().is_none(), "the backup ran while pgbench wrote");
    assert!(load.wait().unwrap().success());
    let status = pg.query_text(&format!("SELECT status FROM pgops.backup_list WHERE id = '{backup}'"));
    assert_eq!(status, "DONE", "{}", pg.log());

    // 300 rows before the target, 200 after it.
    insert_marked(5001, 5300);
    pg.execute("SELECT pg_switch_wal()");
    let target = pg.query_text("SELECT pg_current_wal_lsn()");
    insert_marked(5301, 5500);
    let last = pg.query_text("SELECT pg_walfile_name(pg_switch_wal())");
    pg.wait_archived(&last);
    // The marker is in the WAL as Postgres wrote it: only encryption keeps it off the store.
    assert!(
        files_below(&pg.pg_wal()).iter().any(|wal| contains(&std::fs::read(wal).unwrap(), marker.as_bytes())),
        "the marker is in pg_wal"
    );

    let pitr = PgCluster::at(dir.path(), "pitr");
    let data = pitr.data.to_str().unwrap();
    let key_arg = Some(key.as_path());
    let args = ["restore", "--pgdata", data, "--target-lsn", &target, "--target-action", "promote"];
    let out = pgops(&s3, "main", key_arg, &args);
    assert!(out.status.success(), "pgops restore: {}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&backup));
    let auto_conf = std::fs::read_to_string(pitr.data.join("postgresql.auto.conf")).unwrap();
    assert!(auto_conf.contains(&format!("--encryption-key-file {}", key.display())), "{auto_conf}");
    start_restored(&pitr);
    assert_eq!(pitr.query_text("SELECT count(*) || '/' || max(id) FROM marked"), "5300/5300");
    assert_eq!(pitr.query_text(&format!("SELECT count(*) FROM marked WHERE note LIKE '{marker}%'")), "5300");
    let log = pitr.log();
    assert!(log.contains("restored log file") && log.contains("from archive"), "WAL came from the archive: {log}");

    let out = pgops(&s3, "main", key_arg, &["verify"]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "pgops verify: {report}{}", stderr(&out));
    assert!(report.contains(&format!("backup {backup}: ok")), "{report}");

    // On the store's disk: no file holds the plaintext, and no WAL or backup object reads as
    // a codec, with or without its header line.
    let stored = files_below(&s3.root);
    assert!(stored.len() > 5, "{stored:?}");
    for file in &stored {
        assert!(!contains(&std::fs::read(file).unwrap(), marker.as_bytes()), "{} holds the plaintext", file.display());
    }
    let objects = wal_and_data_objects(&s3, "main");
    assert!(objects.iter().any(|o| o.to_string_lossy().contains(&last)), "{objects:?}");
    assert!(objects.iter().any(|o| o.to_string_lossy().contains("data.tar")), "{objects:?}");
    for object in &objects {
        let header = header_of(object);
        assert!(
            header.starts_with(&format!("pgops-encrypted v1 key={key_id} codec=")),
            "{}: {header}",
            object.display()
        );
        let bytes = std::fs::read(object).unwrap();
        let body = &bytes[header.len() + 1..];
        for codec in [Compression::Zstd, Compression::Snappy] {
            for content in [&bytes[..], body] {
                assert!(codec.decompress(content).is_err(), "{} reads as {}", object.display(), codec.name());
            }
        }
    }
    let record = encryption_record(&s3, "main");
    assert_eq!(record["scheme"], "age", "{record}");
    assert_eq!(record["key_ids"], serde_json::json!([key_id]), "{record}");
}

/// Objects in the repository (the bucket under its prefix).
fn object_count(repo: &Repository) -> usize {
    block_on(repo.list("")).unwrap().len()
}

/// Sets `setting` with ALTER SYSTEM and reloads; returns once a new session sees it, and
/// the archiver has had time to take the SIGHUP.
fn set_and_reload(pg: &PgCluster, setting: &str, value: &str) {
    pg.execute(&format!("ALTER SYSTEM SET {setting} = '{value}'"));
    pg.execute("SELECT pg_reload_conf()");
    wait_for(&format!("{setting} = {value:?}"), Duration::from_secs(10), || {
        pg.query_text(&format!("SHOW {setting}")) == value
    });
    std::thread::sleep(Duration::from_millis(500));
}

/// Completes a WAL segment and waits for the archiver to refuse it with a WARNING holding
/// `warning` and a HINT holding `hint`; checks it stays `.ready` and nothing was stored.
/// Returns the segment.
fn assert_refused(pg: &PgCluster, repo: &Repository, warning: &str, hint: &str) -> String {
    let objects = object_count(repo);
    let log_start = pg.log().len();
    let segment = pg.write_and_switch();
    let is_refusal = |line: &&str| line.contains("WARNING:  pgops: ") && line.contains(warning);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !pg.log()[log_start..].lines().any(|line| is_refusal(&line)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = pg.log()[log_start..].to_string();
    let lines: Vec<&str> = log.lines().collect();
    let at = lines.iter().position(is_refusal).unwrap_or_else(|| panic!("no WARNING {warning:?} for {segment}: {log}"));
    let hint_line = lines.get(at + 1).copied().unwrap_or_default();
    assert!(hint_line.contains("HINT:  ") && hint_line.contains(hint), "expected HINT {hint:?}: {log}");
    assert!(pg.wal_with_status("ready").contains(&segment), "{segment} stays .ready");
    assert_eq!(object_count(repo), objects, "nothing was stored");
    segment
}

/// After the setting was fixed: `segment` is archived (its object is there).
fn assert_archived(pg: &PgCluster, repo: &Repository, segment: &str) {
    pg.wait_archived(segment);
    let keys: Vec<String> = block_on(repo.list("wals/")).unwrap().into_iter().map(|o| o.key).collect();
    assert!(keys.iter().any(|key| key.contains(segment)), "{segment} not in {keys:?}");
}

#[test]
fn a_missing_or_wrong_key_refuses_to_archive_and_keeps_the_wal() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let (key_a, id_a) = keygen(dir.path(), "a.key");
    let (key_b, _) = keygen(dir.path(), "b.key");
    let (key_a, key_b) = (key_a.to_str().unwrap(), key_b.to_str().unwrap());
    let pg = PgCluster::init(dir.path(), "primary");
    pg.configure(ARCHIVING);
    pg.configure(&s3.pgops_settings("main"));
    pg.configure("pgops.encryption = on");
    pg.start();
    let repo = s3.repository("main");

    // (a) Encryption on without a key file, on an empty repository.
    let segment =
        assert_refused(&pg, &repo, "pgops.encryption is on but pgops.encryption_key_file is not set", "pgops keygen");
    assert_eq!(object_count(&repo), 0);
    set_and_reload(&pg, "pgops.encryption_key_file", key_a);
    assert_archived(&pg, &repo, &segment);
    assert_eq!(encryption_record(&s3, "main")["key_ids"], serde_json::json!([id_a]));

    // (b) The repository is encrypted with A; the key file holds only B.
    set_and_reload(&pg, "pgops.encryption_key_file", key_b);
    let segment = assert_refused(
        &pg,
        &repo,
        &format!("the encryption key file lacks key {id_a}"),
        "Check pgops.encryption_key_file",
    );
    set_and_reload(&pg, "pgops.encryption_key_file", key_a);
    assert_archived(&pg, &repo, &segment);

    // (c) Encryption off against the encrypted repository.
    set_and_reload(&pg, "pgops.encryption", "off");
    let segment = assert_refused(
        &pg,
        &repo,
        "repository is encrypted",
        "Set pgops.encryption = on and pgops.encryption_key_file to the repository's key file",
    );
    set_and_reload(&pg, "pgops.encryption", "on");
    assert_archived(&pg, &repo, &segment);
    // The record still names A only: no plain object and no other key got in.
    assert_eq!(encryption_record(&s3, "main")["key_ids"], serde_json::json!([id_a]));
    for object in wal_and_data_objects(&s3, "main") {
        assert!(header_of(&object).contains(&format!("key={id_a} ")), "{}", object.display());
    }
}

/// An encrypted repository `main` holding a DONE backup and archived WAL, written with
/// `key`; returns the running cluster, the backup id and the last archived segment.
fn encrypted_repository(dir: &Path, s3: &S3Server, key: &Path) -> (PgCluster, String, String) {
    let pg = backing_up_cluster(
        dir,
        s3,
        "main",
        &format!("pgops.backup_fast_checkpoint = on\n{}", encryption_settings(key)),
    );
    let backup = pg.query_text("SELECT pgops.backup_now()");
    let status = pg.query_text(&format!("SELECT status FROM pgops.backup_list WHERE id = '{backup}'"));
    assert_eq!(status, "DONE", "{}", pg.log());
    let segment = pg.write_and_switch();
    pg.wait_archived(&segment);
    (pg, backup, segment)
}

#[test]
fn restore_and_wal_fetch_without_the_key_fail_clearly() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let (key_a, id_a) = keygen(dir.path(), "a.key");
    let (key_b, _) = keygen(dir.path(), "b.key");
    let (pg, _, segment) = encrypted_repository(dir.path(), &s3, &key_a);

    let target = dir.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let out = pgops(&s3, "main", None, &["restore", "--pgdata", target.to_str().unwrap()]);
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{message}");
    assert!(message.contains("encrypt") && message.contains("key"), "{message}");
    assert!(message.lines().any(|line| line.starts_with("hint: ")), "{message}");
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0, "nothing written into {}", target.display());

    let dest = dir.path().join("RECOVERYXLOG");
    let dest_arg = dest.to_str().unwrap();
    let out = pgops(&s3, "main", None, &["wal-fetch", &segment, dest_arg]);
    assert_eq!(out.status.code(), Some(255), "without a key: {}", stderr(&out));
    assert!(stderr(&out).contains("no encryption key file"), "{}", stderr(&out));
    assert!(!dest.exists());
    let out = pgops(&s3, "main", Some(&key_b), &["wal-fetch", &segment, dest_arg]);
    assert_eq!(out.status.code(), Some(255), "with another key: {}", stderr(&out));
    assert!(stderr(&out).contains(&id_a), "names the key it needs: {}", stderr(&out));
    assert!(!dest.exists());

    let out = pgops(&s3, "main", Some(&key_a), &["wal-fetch", &segment, dest_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(pg.pg_wal().join(&segment)).unwrap());
}

#[test]
fn a_flipped_byte_in_an_encrypted_object_is_detected_and_named() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let (key, _) = keygen(dir.path(), "repository.key");
    let (pg, backup, segment) = encrypted_repository(dir.path(), &s3, &key);
    pg.stop();
    let key = Some(key.as_path());

    let wal_object = format!("wals/{}/{segment}.zst", &segment[..16]);
    flip_middle_byte(&object_file(&s3, "main", &wal_object));
    let dest = dir.path().join("RECOVERYXLOG");
    let out = pgops(&s3, "main", key, &["wal-fetch", &segment, dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(stderr(&out).contains(&wal_object), "names {wal_object}: {}", stderr(&out));
    assert!(!dest.exists());

    let data_object = format!("base/{backup}/data.tar.zst");
    flip_middle_byte(&object_file(&s3, "main", &data_object));
    let restored = dir.path().join("restored");
    let out = pgops(&s3, "main", key, &["restore", "--pgdata", restored.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains(&data_object), "names {data_object}: {}", stderr(&out));

    let out = pgops(&s3, "main", key, &["verify"]);
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert_ne!(out.status.code(), Some(0), "{report}");
    assert!(report.contains(&data_object), "names {data_object}: {report}");
}

#[test]
fn key_rotation_keeps_old_objects_readable() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let (key_a, id_a) = keygen(dir.path(), "a.key");
    let (key_b, id_b) = keygen(dir.path(), "b.key");
    let (pg, backup, old_segment) = encrypted_repository(dir.path(), &s3, &key_a);
    pg.execute("CREATE TABLE marks(id int); INSERT INTO marks SELECT generate_series(1, 1000)");
    let segment = pg.write_and_switch();
    pg.wait_archived(&segment);

    // The ring: B first (new objects), A below it (old objects).
    let ring = dir.path().join("ring.key");
    let text = std::fs::read_to_string(&key_b).unwrap() + &std::fs::read_to_string(&key_a).unwrap();
    std::fs::write(&ring, text).unwrap();
    std::fs::set_permissions(&ring, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    give_to_postgres(&ring);
    set_and_reload(&pg, "pgops.encryption_key_file", ring.to_str().unwrap());
    pg.execute("INSERT INTO marks SELECT generate_series(1001, 2500)");
    let new_segment = pg.write_and_switch();
    pg.wait_archived(&new_segment);
    let rows = pg.query_text("SELECT count(*) || '/' || sum(id) FROM marks");
    assert_standby_told_of_the_newest_key(dir.path(), &pg, &key_a, &ring, &id_b);
    pg.stop();

    let wal_header = |name: &str| header_of(&object_file(&s3, "main", &format!("wals/{}/{name}.zst", &name[..16])));
    assert!(
        wal_header(&old_segment).starts_with(&format!("pgops-encrypted v1 key={id_a} ")),
        "{}",
        wal_header(&old_segment)
    );
    assert!(
        wal_header(&new_segment).starts_with(&format!("pgops-encrypted v1 key={id_b} ")),
        "{}",
        wal_header(&new_segment)
    );
    assert_eq!(encryption_record(&s3, "main")["key_ids"], serde_json::json!([id_a, id_b]), "the rotation is recorded");

    // The backup (key A) replays WAL under A and then B, read with the ring.
    let restored = PgCluster::at(dir.path(), "restored");
    let args = ["restore", "--backup", &backup, "--pgdata", restored.data.to_str().unwrap()];
    let out = pgops(&s3, "main", Some(&ring), &args);
    assert!(out.status.success(), "pgops restore: {}", stderr(&out));
    start_restored(&restored);
    assert_eq!(restored.query_text("SELECT count(*) || '/' || sum(id) FROM marks"), rows);
    assert!(
        restored.log().contains(&format!("restored log file \"{new_segment}\" from archive")),
        "{}",
        restored.log()
    );

    // B alone cannot read the backup, written with A, and says so.
    let only_b = dir.path().join("only-b");
    let out = pgops(&s3, "main", Some(&key_b), &["restore", "--backup", &backup, "--pgdata", only_b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains(&id_a), "names key {id_a}: {}", stderr(&out));

    let out = pgops(&s3, "main", Some(&ring), &["verify"]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "pgops verify: {report}{}", stderr(&out));
    assert!(report.contains(&format!("backup {backup}: ok")), "{report}");
}

/// A standby of `primary` whose key file is still `stale` (it lacks `newest`, the key the
/// primary writes with since its rotation): `pgops.check()` fails its `keys` row and warns,
/// naming the key; given `ring`, it passes without a warning.
fn assert_standby_told_of_the_newest_key(dir: &Path, primary: &PgCluster, stale: &Path, ring: &Path, newest: &str) {
    let standby = PgCluster::at(dir, "standby");
    let mut basebackup = standby.tool("pg_basebackup");
    basebackup
        .args(["-c", "fast", "-X", "stream", "-R", "--no-sync", "-d", &primary.connstr(), "-D"])
        .arg(&standby.data);
    let out = basebackup.output().unwrap();
    assert!(out.status.success(), "pg_basebackup: {}", String::from_utf8_lossy(&out.stderr));
    // postgresql.auto.conf has the primary's ALTER SYSTEM settings: later lines win.
    let use_key = |key: &Path| {
        use std::io::Write;
        let mut auto =
            std::fs::OpenOptions::new().append(true).open(standby.data.join("postgresql.auto.conf")).unwrap();
        writeln!(auto, "pgops.encryption_key_file = '{}'", key.display()).unwrap();
    };
    use_key(stale);
    standby.take_over_config();
    standby.start();
    assert_eq!(standby.query_text("SELECT pg_is_in_recovery()"), "t");
    let keys_row = |standby: &PgCluster| {
        let (mut client, notices) = client_keeping_notices(standby);
        let row = client.query_one("SELECT ok, detail FROM pgops.check() WHERE \"check\" = 'keys'", &[]).unwrap();
        let warnings: Vec<_> = notices.lock().unwrap().iter().filter(|n| n.severity() == "WARNING").cloned().collect();
        (row.get::<_, bool>(0), row.get::<_, String>(1), warnings)
    };
    let (ok, detail, warnings) = keys_row(&standby);
    assert!(!ok, "{detail}");
    assert!(detail.contains(&format!("lacks key {newest}, the repository's newest")), "{detail}");
    assert!(detail.contains("wal-fetch stops recovery"), "{detail}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].message().contains("this standby's key file") && warnings[0].message().contains(newest),
        "{warnings:?}"
    );
    assert!(warnings[0].hint().unwrap_or_default().contains("before the primary uses a new key"), "{warnings:?}");

    use_key(ring);
    standby.execute("SELECT pg_reload_conf()");
    let ring_setting = ring.display().to_string();
    wait_for("the standby's new key file", Duration::from_secs(10), || {
        standby.query_text("SHOW pgops.encryption_key_file") == ring_setting
    });
    let (ok, detail, warnings) = keys_row(&standby);
    assert!(ok && detail.contains(&format!("its newest {newest} included")), "{detail}");
    assert!(warnings.is_empty(), "{warnings:?}");
    standby.stop();
}

/// Encryption through the bad day: archiving and a backup through a flaky store (503s,
/// resets), then a restore started while the store is frozen, which waits it out: every
/// committed row comes back, decrypted and authenticated.
#[test]
fn an_encrypted_repository_through_a_flaky_then_frozen_store_restores_every_row() {
    let dir = scratch_dir();
    let s3 = S3Server::start(dir.path());
    let proxy = FaultProxy::start(s3.port);
    let (key, _) = keygen(dir.path(), "repository.key");
    let conf = format!("pgops.backup_fast_checkpoint = on\n{}", encryption_settings(&key));
    let pg = proxied_backing_up_cluster(dir.path(), &s3, &proxy, "main", &conf);
    pg.execute("CREATE TABLE ledger(id int PRIMARY KEY, note text)");
    proxy.set(Fault::Flaky { period: 9, burst: 4 });
    pg.execute("INSERT INTO ledger SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
    // A backup may fail through the faults (FAILED, never DONE): the next one is tried.
    let backup = (0..5)
        .find_map(|_| {
            let id = pg.client().query_one("SELECT pgops.backup_now()", &[]).ok()?.get::<_, String>(0);
            let status = pg.query_text(&format!("SELECT status FROM pgops.backup_list WHERE id = '{id}'"));
            (status == "DONE").then_some(id)
        })
        .expect("a DONE backup through the flaky store");
    pg.execute("INSERT INTO ledger SELECT g, md5(g::text) FROM generate_series(20001, 30000) g");
    let last = pg.query_text("SELECT pg_walfile_name(pg_switch_wal())");
    pg.wait_archived(&last);
    assert!(proxy.failed() > 5, "{} faults injected", proxy.failed());
    proxy.set(Fault::Nothing);
    pg.stop();

    s3.freeze();
    let restored = PgCluster::at(dir.path(), "restored");
    let mut restore = s3.pgops(&format!("s3://{BUCKET}/main"));
    restore.env_remove("PGOPS_ENCRYPTION_KEY_FILE").arg("--encryption-key-file").arg(&key);
    restore.args(["restore", "--backup", &backup, "--pgdata"]).arg(&restored.data);
    let mut child = restore.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let waiting = child.try_wait().unwrap().is_none();
    s3.thaw();
    let out = child.wait_with_output().unwrap();
    assert!(waiting, "the restore did not wait for the frozen store: {}", stderr(&out));
    assert!(out.status.success(), "pgops restore: {}", stderr(&out));
    start_restored(&restored);
    assert_eq!(restored.query_text("SELECT count(*) FROM ledger"), "30000");
}
