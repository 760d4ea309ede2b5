//! `run_backup` against a scripted host, a small data directory and the local store.

use super::catalog::{fail_interrupted, list_backups};
use super::*;
use crate::pipeline::Compression;
use crate::store::LocalStore;
use chrono::TimeZone;
use std::collections::BTreeMap;
use std::io::Read;

struct ScriptedHost {
    fail_stop: bool,
    /// Tablespaces created while pg_backup_start waited for its checkpoint: the catalog
    /// has them once it returned, not before.
    tablespaces: Vec<Tablespace>,
    started: bool,
    calls: Vec<String>,
    phases: Vec<Phase>,
}

fn position(lsn: &str, wal: &str, second: u32) -> WalPosition {
    WalPosition {
        lsn: lsn.into(),
        wal: wal.into(),
        offset: 40,
        timeline: 1,
        time: Utc.with_ymd_and_hms(2026, 11, 25, 2, 0, second).unwrap(),
    }
}

impl BackupHost for ScriptedHost {
    fn start_backup(&mut self, label: &str) -> Result<WalPosition, HostError> {
        self.calls.push(format!("start {label}"));
        self.started = true;
        Ok(position("0/2000028", "000000010000000000000002", 0))
    }
    fn tablespaces(&mut self) -> Result<Vec<Tablespace>, HostError> {
        self.calls.push("tablespaces".into());
        Ok(if self.started { self.tablespaces.clone() } else { vec![] })
    }
    fn stop_backup(&mut self) -> Result<BackupStop, HostError> {
        self.calls.push("stop".into());
        if self.fail_stop {
            return Err(HostError::Failed("still waiting for WAL archiving".into()));
        }
        Ok(BackupStop {
            end: position("0/2000100", "000000010000000000000002", 5),
            backup_label: "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n".into(),
            tablespace_map: String::new(),
            end_snapshot: Some("740:745:742".into()),
        })
    }
    fn abort_backup(&mut self) {
        self.calls.push("abort".into());
    }
    fn progress(&mut self, phase: Phase, _: Progress) {
        if self.phases.last() != Some(&phase) {
            self.phases.push(phase);
        }
    }
    fn wait(&mut self) -> Result<(), HostError> {
        std::thread::sleep(std::time::Duration::from_millis(5));
        Ok(())
    }
}

/// An archive of a backup, read back from the store and decompressed.
fn read_archive(repo: &Repository, runtime: &Handle, backup_id: &str, name: &str) -> Vec<u8> {
    let stored = runtime.block_on(repo.get(&format!("{}/{name}", backup_dir(backup_id)))).unwrap().unwrap();
    let (_, compression) = Compression::split_file_name(name);
    let mut out = Vec::new();
    compression.reader(&stored[..]).unwrap().read_to_end(&mut out).unwrap();
    out
}

fn data_directory() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [
        ("PG_VERSION", &b"15\n"[..]),
        ("global/pg_control", &[7u8; 8192][..]),
        ("base/1/1259", &[1u8; 20000][..]),
        ("postmaster.pid", &b"123\n"[..]),
        ("pg_wal/000000010000000000000001", &[0u8; 100][..]),
    ] {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

/// A repository in `dir` that has the WAL segment the scripted backups end in.
fn archived_repository(runtime: &tokio::runtime::Runtime, dir: &std::path::Path) -> Repository {
    let repo = Repository::new(Arc::new(LocalStore::new(dir)), "main");
    let key = "wals/0000000100000000/000000010000000000000002.zst";
    runtime.block_on(repo.put_as_is(key, bytes::Bytes::from_static(b"segment"))).unwrap();
    repo
}

fn this_instance() -> owner::BackupOwner {
    owner::BackupOwner { instance_id: "a1".into(), timeline: 1 }
}

fn job(runtime: &tokio::runtime::Runtime, data: &std::path::Path, backup_id: &str) -> BackupJob {
    BackupJob {
        backup_id: backup_id.into(),
        server_name: "main".into(),
        cluster: ClusterInfo {
            system_identifier: 7300,
            server_version_num: 150004,
            data_directory: data.to_path_buf(),
            config_file: String::new(),
            hba_file: String::new(),
            ident_file: String::new(),
            segment_size: 16 << 20,
            data_checksums: false,
            cluster_size: 0,
        },
        upload: UploadSettings::new(Compression::Zstd, 3),
        owner: this_instance(),
        archive_timeout: Duration::from_secs(5),
        runtime: runtime.handle().clone(),
        thread_start: crate::signals::block_all,
    }
}

#[test]
fn a_backup_is_barman_layout_with_label_and_control_file_last_and_a_manifest() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let repo = archived_repository(&runtime, store_dir.path());
    let data = data_directory();
    let mut host =
        ScriptedHost { fail_stop: false, tablespaces: vec![], started: false, calls: vec![], phases: vec![] };
    let info = run_backup(&mut host, &repo, &job(&runtime, data.path(), "20261125T020000")).unwrap();
    assert_eq!(host.calls, ["start pgops backup 20261125T020000", "tablespaces", "stop"]);
    assert_eq!(host.phases, [Phase::WaitCheckpoint, Phase::EstimateSize, Phase::Stream, Phase::WaitWalArchive]);
    assert_eq!(info.status, Some(BackupStatus::Done));

    let tar = read_archive(&repo, runtime.handle(), "20261125T020000", "data.tar.zst");
    let mut archive = tar::Archive::new(&tar[..]);
    let mut members = BTreeMap::new();
    let mut order = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        order.push(name.clone());
        members.insert(name, content);
    }
    assert_eq!(order[order.len() - 2..], ["global/pg_control", "backup_label"]);
    assert!(!members.contains_key("postmaster.pid"));
    assert!(members.contains_key("pg_wal/archive_status/"));
    assert!(!members.contains_key("pg_wal/000000010000000000000001"));
    assert_eq!(members["base/1/1259"], vec![1u8; 20000]);

    let manifest = runtime.block_on(repo.get("base/20261125T020000/backup_manifest")).unwrap().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let files = manifest["Files"].as_array().unwrap();
    assert_eq!(files.len(), 4, "{files:?}"); // PG_VERSION, base/1/1259, pg_control, backup_label
    for file in files {
        let content = &members[file["Path"].as_str().unwrap()];
        assert_eq!(file["Checksum"], hex::encode(crc32c::crc32c(content).to_le_bytes()));
        assert_eq!(file["Size"], content.len());
    }
    assert_eq!(manifest["WAL-Ranges"][0]["End-LSN"], "0/2000100");
    let metadata = runtime.block_on(repo.get(&format!("base/20261125T020000/{PGOPS_METADATA}"))).unwrap().unwrap();
    let metadata: serde_json::Value = serde_json::from_slice(&metadata).unwrap();
    assert_eq!(metadata["end_snapshot"], "740:745:742", "what --target-xid chooses by");

    let listed = runtime.block_on(list_backups(&repo)).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status(), "DONE");
    assert_eq!(listed[0].record.text("begin_wal"), Some("000000010000000000000002"));
    assert_eq!(listed[0].record.text("end_time"), Some("2026-11-25 02:00:05.000000+00:00"));
    assert!(listed[0].stored_bytes > 0);
}

#[test]
fn a_failed_backup_is_stopped_and_recorded_failed_and_crash_leftovers_are_marked() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let repo = archived_repository(&runtime, store_dir.path());
    let data = data_directory();
    let mut host = ScriptedHost { fail_stop: true, tablespaces: vec![], started: false, calls: vec![], phases: vec![] };
    let failure = run_backup(&mut host, &repo, &job(&runtime, data.path(), "20261125T020000")).unwrap_err();
    assert!(failure.error.to_string().contains("still waiting for WAL archiving"), "{}", failure.error);
    assert!(failure.unrecorded.is_none());
    // pg_backup_stop ran (and failed): no second stop.
    assert_eq!(host.calls, ["start pgops backup 20261125T020000", "tablespaces", "stop"]);
    let listed = runtime.block_on(list_backups(&repo)).unwrap();
    assert_eq!(listed[0].status(), "FAILED");
    assert!(listed[0].record.error.as_deref().unwrap().contains("still waiting"));
    // The data archive's upload was dropped, not completed.
    assert!(runtime.block_on(repo.head("base/20261125T020000/data.tar.zst")).unwrap().is_none());

    // A STARTED backup.info (a worker killed mid-backup) is marked FAILED, the running one
    // not; nor those another instance started (a clone shares the system identifier: same
    // instance id after promotion on a new timeline, or another instance id) or of no
    // recorded owner.
    let started = BackupInfo { status: Some(BackupStatus::Started), systemid: "7300".into(), ..Default::default() };
    let promoted_clone = owner::BackupOwner { timeline: 2, ..this_instance() };
    let other_instance = owner::BackupOwner { instance_id: "b2".into(), ..this_instance() };
    let owners = [
        ("20261125T030000", Some(this_instance())),
        ("20261125T040000", Some(this_instance())),
        ("20261125T050000", Some(promoted_clone)),
        ("20261125T060000", Some(other_instance)),
        ("20261125T070000", None),
    ];
    for (id, owner) in &owners {
        record(&repo, runtime.handle(), id, &started).unwrap();
        if let Some(owner) = owner {
            let (key, body) = owner::owner_object(id, owner);
            runtime.block_on(repo.put(&key, body)).unwrap();
        }
    }
    let marked = runtime
        .block_on(fail_interrupted(&repo, 7300, &this_instance(), Some("20261125T040000"), "interrupted"))
        .unwrap();
    assert_eq!(marked, ["20261125T030000"]);
    let statuses: Vec<_> = runtime
        .block_on(list_backups(&repo))
        .unwrap()
        .iter()
        .map(|b| (b.backup_id.clone(), b.status().to_string()))
        .collect();
    assert_eq!(statuses[1], ("20261125T030000".to_string(), "FAILED".to_string()));
    for started in &statuses[2..] {
        assert_eq!(started.1, "STARTED", "{started:?}");
    }
    // The backup taken above recorded its owner.
    let recorded = runtime.block_on(owner::owner_of(&repo, "20261125T020000")).unwrap();
    assert_eq!(recorded.map(|record| record.owner), Some(this_instance()));
}

#[test]
fn an_archive_past_the_maximum_size_continues_in_data_0001() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let repo = archived_repository(&runtime, store_dir.path());
    let data = data_directory();
    let mut job = job(&runtime, data.path(), "20261125T020000");
    job.upload = UploadSettings { max_archive_size: 1, ..UploadSettings::new(Compression::None, 0) };
    let mut host =
        ScriptedHost { fail_stop: false, tablespaces: vec![], started: false, calls: vec![], phases: vec![] };
    run_backup(&mut host, &repo, &job).unwrap();
    let names: Vec<String> = runtime
        .block_on(repo.list("base/20261125T020000/"))
        .unwrap()
        .into_iter()
        .map(|o| o.key.rsplit('/').next().unwrap().to_string())
        .filter(|name| name.contains(".tar"))
        .collect();
    assert_eq!(names[..2], ["data.tar", "data_0001.tar"]);
    // Every file is in exactly one archive; pg_control and backup_label end the last one.
    let mut seen = Vec::new();
    for name in &names {
        let tar = read_archive(&repo, runtime.handle(), "20261125T020000", name);
        for entry in tar::Archive::new(&tar[..]).entries().unwrap() {
            seen.push(entry.unwrap().path().unwrap().display().to_string());
        }
    }
    let files: Vec<_> = seen.iter().filter(|n| !n.ends_with('/')).cloned().collect();
    assert_eq!(files, ["PG_VERSION", "base/1/1259", "global/pg_control", "backup_label"]);
}

#[test]
fn a_tablespace_created_during_the_start_checkpoint_gets_its_archive() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let repo = archived_repository(&runtime, store_dir.path());
    let data = data_directory();
    // Created while pg_backup_start waited for its checkpoint: the catalog has it after.
    let location = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(location.path().join("PG_15_202209061/5")).unwrap();
    std::fs::write(location.path().join("PG_15_202209061/5/16390"), [3u8; 100]).unwrap();
    let created = Tablespace { name: "late".into(), oid: 16389, location: location.path().display().to_string() };
    let mut host =
        ScriptedHost { fail_stop: false, tablespaces: vec![created], started: false, calls: vec![], phases: vec![] };
    let info = run_backup(&mut host, &repo, &job(&runtime, data.path(), "20261125T020000")).unwrap();
    assert_eq!(info.tablespaces.len(), 1);
    let tar = read_archive(&repo, runtime.handle(), "20261125T020000", "16389.tar.zst");
    let names: Vec<String> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.contains(&"PG_15_202209061/5/16390".to_string()), "{names:?}");
}

/// `pg_backup_stop` returned, but the backup's last segment never reaches the repository
/// (archiving stuck, the store refusing it): the backup fails within its archive timeout,
/// naming the segment, instead of waiting forever as `pg_backup_stop(true)` would.
#[test]
fn a_backup_whose_end_segment_is_never_archived_fails_within_the_archive_timeout() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let repo = Repository::new(Arc::new(LocalStore::new(store_dir.path())), "main");
    let data = data_directory();
    let mut job = job(&runtime, data.path(), "20261125T020000");
    job.archive_timeout = Duration::from_millis(300);
    let mut host =
        ScriptedHost { fail_stop: false, tablespaces: vec![], started: false, calls: vec![], phases: vec![] };
    let started = std::time::Instant::now();
    let failure = run_backup(&mut host, &repo, &job).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(
        failure
            .error
            .to_string()
            .contains("WAL segment 000000010000000000000002, the last this backup needs, was not archived"),
        "{}",
        failure.error
    );
    let backups = runtime.block_on(list_backups(&repo)).unwrap();
    assert_eq!(backups[0].status(), "FAILED");
    assert!(backups[0].record.error.as_deref().unwrap().contains("pgops.backup_archive_timeout"));
}

/// Every writer of a status is admitted first: an encrypting writer on a repository claimed
/// plain (or with keys its ring lacks) records nothing.
#[test]
fn a_status_is_recorded_only_by_a_writer_the_repository_admits() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = archived_repository(&runtime, dir.path());
    let identity = ClusterIdentity { system_identifier: 7300, pg_version_num: 150000, wal_segment_size: 16 << 20 };
    runtime.block_on(ownership::claim(&repo, &identity)).unwrap();
    let key_file = dir.path().join("key");
    crate::pipeline::KeyRing::create_file(&key_file).unwrap();
    let keys = Some(Arc::new(crate::pipeline::KeyRing::load(&key_file).unwrap()));
    let encrypting = repo.clone().with_keys(keys);
    let info = BackupInfo { status: Some(BackupStatus::Failed), ..BackupInfo::default() };
    let err = record(&encrypting, runtime.handle(), "20261125T020000", &info).unwrap_err();
    assert!(matches!(err, BackupError::Refused(_)) && err.to_string().contains("plain"), "{err}");
    assert!(runtime.block_on(repo.get("base/20261125T020000/backup.info")).unwrap().is_none());
    record(&repo, runtime.handle(), "20261125T020000", &info).unwrap();
    assert!(runtime.block_on(repo.get("base/20261125T020000/backup.info")).unwrap().is_some());
}
