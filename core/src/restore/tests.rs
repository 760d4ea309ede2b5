use super::config::*;
use super::extract::*;
use super::safe_dir::SafeDir;
use super::select::*;
use super::stored::*;
use super::wal_directory::*;
use super::*;
use crate::backup::catalog::BackupSummary;
use crate::backup::info::BackupRecord;
use crate::backup::{NotABackupId, PGOPS_METADATA};
use crate::naming::Lsn;
use crate::store::{Repository, StoreError, StoreErrorKind};
use crate::timeline::*;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backup::manifest::{self, ManifestFile, WalRange};
use crate::store::LocalStore;

fn backup(id: &str, status: &str, end_time: &str, end_lsn: &str) -> BackupSummary {
    BackupSummary {
        backup_id: id.into(),
        record: BackupRecord::parse(&format!("status={status}\nend_time={end_time}\nend_xlog={end_lsn}\n")),
        stored_bytes: 1,
    }
}

fn time(text: &str) -> RecoveryTarget {
    RecoveryTarget::Time(TargetTime::parse(text).unwrap())
}

#[test]
fn chooses_the_newest_done_backup_before_the_target() {
    let backups = [
        backup("20261125T010000", "DONE", "2026-11-25 01:00:05.000000+00:00", "0/3000000"),
        backup("20261125T020000", "DONE", "2026-11-25 02:00:05.000000+00:00", "0/5000000"),
        backup("20261125T030000", "FAILED", "None", "None"),
    ];
    let chosen = |requested: Option<&str>, target: &RecoveryTarget| {
        let requested = requested.map_or(BackupChoice::Latest, |text| text.parse().unwrap());
        choose_backup(&backups, &requested, target, &ChoiceContext::default()).map(|c| c.backup.backup_id.clone())
    };
    assert_eq!(chosen(None, &RecoveryTarget::End).unwrap(), "20261125T020000");
    assert_eq!(chosen(None, &time("2026-11-25 01:30:00+00")).unwrap(), "20261125T010000");
    assert_eq!(chosen(None, &time("2026-11-25T03:00:00Z")).unwrap(), "20261125T020000");
    let lsn = RecoveryTarget::Lsn(Lsn(0x4000000));
    assert_eq!(chosen(Some("latest"), &lsn).unwrap(), "20261125T010000");
    assert!(chosen(None, &time("2026-11-25 00:59:00+00")).unwrap_err().shown().contains("the oldest ends at"));
    // Without an offset, first by the latest instant the time can be (UTC-12).
    assert_eq!(chosen(None, &time("2026-11-24 14:30:00")).unwrap(), "20261125T020000");
    assert!(chosen(Some("20261125T030000"), &RecoveryTarget::End).unwrap_err().shown().contains("FAILED"));
    assert!(chosen(Some("nope"), &RecoveryTarget::End).unwrap_err().shown().contains("no backup nope"));
}

fn on_timeline(id: &str, end_lsn: &str, timeline: u32) -> BackupSummary {
    BackupSummary {
        backup_id: id.into(),
        record: BackupRecord::parse(&format!("status=DONE\nend_xlog={end_lsn}\ntimeline={timeline}\n")),
        stored_bytes: 1,
    }
}

/// An in-place point-in-time restore from A branched timeline 2 off timeline 1 at
/// 0/7000000; B, taken on timeline 1 after that point, is the abandoned branch's.
/// Without --target-timeline Postgres follows the newest timeline (latest), which B
/// cannot reach: A is chosen, as with --target-timeline latest; current takes B.
#[test]
fn without_a_target_timeline_the_backup_can_follow_onto_the_newest_timeline() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = tempfile::tempdir().unwrap();
    let repo = Repository::new(Arc::new(LocalStore::new(store.path())), "main");
    let history = Bytes::from_static(b"1\t0/7000000\tbefore 2026-11-25 02:30:00+00\n");
    runtime.block_on(repo.put("wals/00000002.history", history)).unwrap();
    let backups = [on_timeline("20261125T010000", "0/5000000", 1), on_timeline("20261125T030000", "0/9000000", 1)];
    let pgdata = tempfile::tempdir().unwrap();
    let chosen = |timeline: Option<TargetTimeline>| {
        let request = RestoreRequest { target_timeline: timeline, ..request(pgdata.path(), RecoveryTarget::End) };
        let context = choice_context(&repo, runtime.handle(), &request, &backups).unwrap();
        choose_backup(&backups, &BackupChoice::Latest, &RecoveryTarget::End, &context).unwrap().backup.backup_id.clone()
    };
    assert_eq!(chosen(None), "20261125T010000");
    assert_eq!(chosen(Some(TargetTimeline::Latest)), "20261125T010000");
    assert_eq!(chosen(Some(TargetTimeline::Current)), "20261125T030000");
    // A third timeline off the second: still A (B is on no part of timeline 3's history).
    let history = Bytes::from_static(b"1\t0/7000000\tx\n2\t0/B000000\ty\n");
    runtime.block_on(repo.put("wals/00000003.history", history)).unwrap();
    assert_eq!(chosen(None), "20261125T010000");
}

#[test]
fn a_transaction_or_restore_point_target_takes_a_backup_that_can_reach_it() {
    let backups = [
        on_timeline("20261125T010000", "0/3000000", 1),
        on_timeline("20261125T020000", "0/5000000", 1),
        on_timeline("20261125T030000", "0/7000000", 1),
    ];
    let xid = |x: &str| RecoveryTarget::Xid(x.parse().unwrap());
    let choose = |target: &RecoveryTarget, context: &ChoiceContext| {
        choose_backup(&backups, &BackupChoice::Latest, target, context).map(|c| (c.backup.backup_id.clone(), c.reason))
    };
    // Nothing recorded (Barman's, older pgops backups): the oldest, and why.
    let (id, reason) = choose(&xid("750"), &ChoiceContext::default()).unwrap();
    assert_eq!(id, "20261125T010000");
    assert!(reason.contains("no backup records that transaction 750 was still running"), "{reason}");

    let mut context = ChoiceContext::default();
    for (id, snapshot) in
        [("20261125T010000", "700:720:"), ("20261125T020000", "740:760:750"), ("20261125T030000", "800:810:")]
    {
        context.end_snapshots.insert(id.into(), Snapshot::parse(snapshot).unwrap());
    }
    // 750 was running when the second backup ended, had completed when the third did.
    let (id, reason) = choose(&xid("750"), &context).unwrap();
    assert_eq!(id, "20261125T020000");
    assert!(reason.contains("end snapshot shows transaction 750 not yet completed"), "{reason}");
    assert_eq!(choose(&xid("815"), &context).unwrap().0, "20261125T030000");
    let err = choose(&xid("650"), &context).unwrap_err().shown();
    assert!(err.contains("transaction 650 had completed before the oldest DONE backup"), "{err}");

    // A restore point's position is not recorded: the oldest.
    let (id, reason) = choose(&RecoveryTarget::Name("before upgrade".into()), &context).unwrap();
    assert_eq!(id, "20261125T010000");
    assert!(reason.contains("restore point 'before upgrade' lies is not recorded"), "{reason}");
}

#[test]
fn snapshots_read_32_bit_transaction_ids_in_their_epoch() {
    // Epoch 1: xmax is 2^32 + 714.
    let snapshot = Snapshot::parse("4294967996:4294968010:4294968000").unwrap();
    assert!(snapshot.not_completed(714) && snapshot.not_completed(4294968020));
    assert!(snapshot.not_completed(704), "running");
    assert!(!snapshot.not_completed(700) && !snapshot.not_completed(4294967990));
    assert_eq!(Snapshot::parse("1:2"), None);
    assert_eq!(Snapshot::parse("1:2:x"), None);
}

#[test]
fn a_backup_is_latest_or_an_id() {
    assert_eq!("latest".parse(), Ok(BackupChoice::Latest));
    assert_eq!("20261125T020000".parse(), Ok(BackupChoice::Id("20261125T020000".parse().unwrap())));
    assert_eq!("../x".parse::<BackupChoice>(), Err(NotABackupId("../x".into())));
}

#[test]
fn target_timelines_are_latest_current_or_a_number() {
    let timeline = |text: &str| text.parse::<TargetTimeline>();
    assert_eq!(timeline("latest"), Ok(TargetTimeline::Latest));
    assert_eq!(timeline("current"), Ok(TargetTimeline::Current));
    assert_eq!(timeline("3"), Ok(TargetTimeline::Number(3)));
    assert_eq!(TargetTimeline::Number(3).to_string(), "3");
    for bad in ["0", "+3", "-1", "Latest", "3 ", "", "4294967296"] {
        assert_eq!(timeline(bad), Err(NotATimeline(bad.into())), "{bad:?}");
    }
}

#[test]
fn a_target_timeline_takes_only_backups_that_can_follow_onto_it() {
    let backups = [
        on_timeline("20261125T010000", "0/3000000", 1),
        on_timeline("20261125T020000", "0/5000000", 1),
        on_timeline("20261125T030000", "0/7000000", 2),
        on_timeline("20261125T040000", "0/9000000", 4),
    ];
    // Timeline 3 branched off 1 at 0/4000000 into 2, and off 2 at 0/8000000.
    let history = "1\t0/4000000\tno recovery target specified\n\n2\t0/8000000\tbefore 2026-11-25 03:30:00+00\n";
    let context =
        |timeline| ChoiceContext { timeline: Some(TimelineHistory::parse(timeline, history)), ..Default::default() };
    let choose = |target: &RecoveryTarget, context: &ChoiceContext| {
        choose_backup(&backups, &BackupChoice::Latest, target, context).map(|c| (c.backup.backup_id.clone(), c.reason))
    };
    assert_eq!(choose(&RecoveryTarget::End, &ChoiceContext::default()).unwrap().0, "20261125T040000");
    let (id, reason) = choose(&RecoveryTarget::End, &context(3)).unwrap();
    assert_eq!(id, "20261125T030000", "not timeline 4's, which is not in 3's history");
    assert!(reason.contains("can follow onto timeline 3"), "{reason}");
    // The backup of timeline 1 that ended after 2 branched off cannot follow.
    let name = RecoveryTarget::Name("x".into());
    assert_eq!(choose(&RecoveryTarget::Lsn(Lsn(0x6000000)), &context(3)).unwrap().0, "20261125T010000");
    assert_eq!(choose(&name, &context(3)).unwrap().0, "20261125T010000");
    assert_eq!(choose(&RecoveryTarget::End, &context(4)).unwrap().0, "20261125T040000");
    let only_one = TimelineHistory::parse(1, "");
    let err = choose_backup(
        &backups[2..3],
        &BackupChoice::Latest,
        &RecoveryTarget::End,
        &ChoiceContext { timeline: Some(only_one), ..Default::default() },
    )
    .unwrap_err()
    .shown();
    assert!(err.contains("no DONE backup that can follow onto timeline 1"), "{err}");
}

fn request(pgdata: &Path, target: RecoveryTarget) -> RestoreRequest {
    RestoreRequest {
        pgdata: pgdata.into(),
        backup: BackupChoice::Latest,
        target,
        target_action: None,
        target_timeline: None,
        tablespace_map: BTreeMap::new(),
        wal_directory: None,
        restore_command: Some("pgops wal-fetch %f %p".into()),
        archive: ArchiveAfterRestore::Off,
        verify: true,
        sync: true,
    }
}

#[test]
fn recovery_settings_quote_values_write_an_instant_and_turn_archiving_off() {
    let mut request = request(Path::new("/x"), RecoveryTarget::Name("before 'drop'".into()));
    request.target_action = Some(TargetAction::Promote);
    assert_eq!(
        recovery_settings(&request, "pgops wal-fetch %f %p", None),
        "# Added by pgops restore\nrestore_command = 'pgops wal-fetch %f %p'\nrecovery_target_name = 'before ''drop'''\n\
         recovery_target_action = 'promote'\narchive_mode = 'off'\npgops.backup_schedule = ''\npgops.repository = ''\n"
    );
    request.archive = ArchiveAfterRestore::Keep;
    request.target = time("2026-11-25 07:00:00-05:00");
    assert_eq!(
        recovery_settings(&request, "pgops wal-fetch %f %p", None),
        "# Added by pgops restore\nrestore_command = 'pgops wal-fetch %f %p'\n\
         recovery_target_time = '2026-11-25 12:00:00.000000+00'\nrecovery_target_action = 'promote'\n"
    );
    // A shell-quoted path with a quote in it: Postgres unescapes backslashes in the value.
    request.target = RecoveryTarget::End;
    request.target_action = None;
    assert_eq!(
        recovery_settings(&request, r"'/opt/it'\''s/pgops' wal-fetch %f %p", None),
        concat!("# Added by pgops restore\n", r"restore_command = '''/opt/it''\\''''s/pgops'' wal-fetch %f %p'", "\n")
    );
}

#[test]
fn unsafe_archive_paths_are_refused() {
    assert!(safe_relative("data.tar", Path::new("../etc/passwd")).is_err());
    assert!(safe_relative("data.tar", Path::new("/etc/passwd")).is_err());
    assert_eq!(safe_relative("data.tar", Path::new("./")).unwrap(), PathBuf::new());
    assert_eq!(safe_relative("data.tar", Path::new("./base/1/1259")).unwrap(), PathBuf::from("base/1/1259"));
}

/// One member of a crafted archive.
enum Crafted<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
}

fn tar_of(members: &[Crafted]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for member in members {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o700);
        match member {
            Crafted::Dir(name) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder.append_data(&mut header, name, io::empty()).unwrap();
            }
            Crafted::File(name, content) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(content.len() as u64);
                builder.append_data(&mut header, name, *content).unwrap();
            }
            Crafted::Symlink(name, target) | Crafted::HardLink(name, target) => {
                let kind =
                    if matches!(member, Crafted::Symlink(..)) { tar::EntryType::Symlink } else { tar::EntryType::Link };
                header.set_entry_type(kind);
                header.set_size(0);
                builder.append_link(&mut header, name, target).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

/// The manifest pgops would write for the regular files among `members`.
fn manifest_of(members: &[Crafted]) -> String {
    let files: Vec<ManifestFile> = members
        .iter()
        .filter_map(|m| match m {
            Crafted::File(name, content) => Some(ManifestFile {
                path: name.to_string(),
                size: content.len() as u64,
                modified: 0,
                crc32c: crc32c::crc32c(content),
            }),
            _ => None,
        })
        .collect();
    let wal = WalRange { timeline: 1, start_lsn: "0/2000028".into(), end_lsn: "0/2000100".into() };
    manifest::render(1, 7300, &files, &wal)
}

fn extract_into(dir: &Path, tar: &[u8], manifest: Option<ManifestFiles>) -> Result<Extracted, RestoreError> {
    let root = SafeDir::open_root(dir).unwrap();
    extract("data.tar", tar, Some(&root), ArchiveKind::Data, &mut manifest.clone(), &mut |_| {})
}

#[test]
fn an_archive_cannot_write_outside_the_directory() {
    let target = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let evil = [Crafted::Symlink("evil", outside.path().to_str().unwrap()), Crafted::File("evil/pwned", b"owned")];
    let manifest = manifest_files(manifest_of(&evil).as_bytes()).unwrap();
    let err = extract_into(target.path(), &tar_of(&evil), Some(manifest)).unwrap_err().shown();
    assert!(err.contains("archive member evil is a symbolic link"), "{err}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    assert!(std::fs::symlink_metadata(target.path().join("evil")).is_err(), "no link was made");

    // Nor through a link that is already there.
    std::os::unix::fs::symlink(outside.path(), target.path().join("base")).unwrap();
    let err = extract_into(target.path(), &tar_of(&[Crafted::File("base/1/1259", b"x")]), None).unwrap_err().shown();
    assert!(err.contains("is not a directory the restore made"), "{err}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);

    let err =
        extract_into(target.path(), &tar_of(&[Crafted::HardLink("passwd", "/etc/passwd")]), None).unwrap_err().shown();
    assert!(err.contains("archive member passwd is a Link entry"), "{err}");
    let err = extract_into(target.path(), &tar_of(&[Crafted::Symlink("./", "/")]), None).unwrap_err().shown();
    assert!(err.contains("is a Symlink entry at the archive's root"), "{err}");
    assert!(!target.path().join("passwd").exists());
}

/// Reads as a store that refuses access, as [`ObjectReader`] reports it.
struct Refusing;

impl Read for Refusing {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::other(StoreError {
            operation: "GetObject",
            location: "s3://bucket/main/base/x/data.tar".into(),
            kind: StoreErrorKind::AccessDenied,
            cause: "HTTP 403".into(),
        }))
    }
}

#[test]
fn a_store_failure_while_reading_an_archive_is_a_store_error_and_bad_bytes_are_corruption() {
    let is_denied =
        |err: &RestoreError| matches!(err, RestoreError::Store(e) if e.kind == StoreErrorKind::AccessDenied);
    let err = extract("data.tar", Refusing, None, ArchiveKind::Data, &mut None, &mut |_| {}).unwrap_err();
    assert!(is_denied(&err), "{err:?}");
    assert!(err.hint().contains("pgops.s3_secret_access_key"), "the store's hint: {}", err.hint());
    // In the middle of a member's data.
    let tar = tar_of(&[Crafted::File("PG_VERSION", b"15\n")]);
    let err =
        extract("data.tar", tar[..512].chain(Refusing), None, ArchiveKind::Data, &mut None, &mut |_| {}).unwrap_err();
    assert!(is_denied(&err), "{err:?}");

    let garbage = vec![b'A'; 1024];
    let err = extract("data.tar", &garbage[..], None, ArchiveKind::Data, &mut None, &mut |_| {}).unwrap_err();
    assert!(matches!(&err, RestoreError::Corrupt { location, .. } if location == "data.tar"), "{err:?}");
    assert!(err.hint().contains("restore another backup"), "{}", err.hint());
}

#[test]
fn a_file_that_fails_the_manifest_never_appears_under_its_name() {
    let target = tempfile::tempdir().unwrap();
    let backed_up = [Crafted::Dir("./"), Crafted::Dir("base/"), Crafted::File("PG_VERSION", b"15\n")];
    let manifest = manifest_files(manifest_of(&backed_up).as_bytes()).unwrap();
    let changed = tar_of(&[Crafted::Dir("base/"), Crafted::File("PG_VERSION", b"14\n")]);
    let err = extract_into(target.path(), &changed, Some(manifest.clone())).unwrap_err().shown();
    assert!(err.contains("PG_VERSION does not match the backup's manifest"), "{err}");
    let left: Vec<_> = std::fs::read_dir(target.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["base"], "neither PG_VERSION nor its partial file is left");

    let good = tempfile::tempdir().unwrap();
    let extracted = extract_into(good.path(), &tar_of(&backed_up), Some(manifest)).unwrap();
    assert_eq!((extracted.files, extracted.bytes), (1, 3));
    assert_eq!(std::fs::read(good.path().join("PG_VERSION")).unwrap(), b"15\n");
}

#[test]
fn pg_wal_stored_as_a_link_becomes_a_directory_and_tablespace_links_are_left_to_the_map() {
    let target = tempfile::tempdir().unwrap();
    let old_backup = [
        Crafted::Symlink("pg_wal", "/var/lib/postgresql/wal"),
        Crafted::Dir("pg_tblspc/"),
        Crafted::Symlink("pg_tblspc/16385", "/mnt/fast"),
    ];
    extract_into(target.path(), &tar_of(&old_backup), None).unwrap();
    let pg_wal = std::fs::symlink_metadata(target.path().join("pg_wal")).unwrap();
    assert!(pg_wal.is_dir(), "a directory, not a link");
    assert!(target.path().join("pg_wal/archive_status").is_dir());
    assert!(std::fs::symlink_metadata(target.path().join("pg_tblspc/16385")).is_err());
}

#[test]
fn pg_wal_becomes_a_link_to_its_own_directory_only_when_it_holds_no_wal() {
    let target = tempfile::tempdir().unwrap();
    let (pgdata, wal) = (target.path().join("data"), target.path().join("wal/pg_wal"));
    std::fs::create_dir_all(pgdata.join("pg_wal/archive_status")).unwrap();
    // PostgreSQL 17+: WAL summaries have their directory in pg_wal too.
    std::fs::create_dir_all(pgdata.join("pg_wal/summaries")).unwrap();
    link_wal_directory(&pgdata, &wal).unwrap();
    assert_eq!(std::fs::read_link(pgdata.join("pg_wal")).unwrap(), wal);
    assert!(pgdata.join("pg_wal/archive_status").is_dir() && pgdata.join("pg_wal/summaries").is_dir());

    let other = target.path().join("other");
    std::fs::create_dir_all(other.join("pg_wal/archive_status")).unwrap();
    std::fs::write(other.join("pg_wal/000000010000000000000001"), b"wal").unwrap();
    let err = link_wal_directory(&other, &target.path().join("wal2")).unwrap_err().to_string();
    assert!(err.contains("000000010000000000000001"), "{err}");
    std::fs::remove_file(other.join("pg_wal/000000010000000000000001")).unwrap();
    std::fs::create_dir_all(other.join("pg_wal/summaries")).unwrap();
    std::fs::write(other.join("pg_wal/summaries/0000000100000000010000280000000001000100.summary"), b"s").unwrap();
    let err = link_wal_directory(&other, &target.path().join("wal2")).unwrap_err().to_string();
    assert!(err.contains(".summary"), "a summary is not moved either: {err}");
    assert!(std::fs::symlink_metadata(other.join("pg_wal")).unwrap().is_dir(), "left as it was");
    assert!(!target.path().join("wal2").exists());

    // Filled while the restore ran: refused, pg_wal left as it was.
    let late = target.path().join("late");
    std::fs::create_dir_all(late.join("pg_wal/archive_status")).unwrap();
    std::fs::create_dir_all(target.path().join("wal3")).unwrap();
    std::fs::write(target.path().join("wal3/000000010000000000000001"), b"wal").unwrap();
    let err = link_wal_directory(&late, &target.path().join("wal3")).unwrap_err().to_string();
    assert!(err.contains("is not empty"), "{err}");
    assert!(std::fs::symlink_metadata(late.join("pg_wal")).unwrap().is_dir(), "left as it was");
}

#[test]
fn a_wal_directory_overlapping_the_data_or_a_tablespace_directory_is_refused_before_anything_is_written() {
    let (_store, repo, runtime) = repository_with(CLUSTER, true);
    let target = tempfile::tempdir().unwrap();
    let pgdata = target.path().join("data");
    let sneaky = target.path().join("elsewhere/../data/pg_wal");
    for wal in [pgdata.join("pg_wal"), target.path().to_path_buf(), target.path().join("ts/pg_wal"), sneaky] {
        let mut request = request(&pgdata, RecoveryTarget::End);
        request.tablespace_map.insert(16385, target.path().join("ts"));
        request.wal_directory = Some(wal.clone());
        let err = restore(&repo, runtime.handle(), &request, &mut |_| {}).unwrap_err().to_string();
        assert!(err.contains("overlaps"), "{}: {err}", wal.display());
        assert!(!pgdata.exists(), "nothing written");
    }
}

#[test]
fn the_manifest_must_match_its_own_checksum() {
    let text = manifest_of(&[Crafted::File("PG_VERSION", b"15\n")]);
    assert!(manifest_files(text.as_bytes()).is_ok());
    let tampered = text.replace("\"Size\": 3", "\"Size\": 4");
    let err = manifest_files(tampered.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("fails its own checksum"), "{err}");
}

/// A repository in a temporary directory holding one backup, `20261125T020000`, with
/// `members` as its data archive, taken by pgops (or Barman) and ending at 02:00:05 UTC.
fn repository_with(members: &[Crafted], by_pgops: bool) -> (tempfile::TempDir, Repository, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = tempfile::tempdir().unwrap();
    let repo = Repository::new(Arc::new(LocalStore::new(store.path())), "main");
    let label = if by_pgops { "pgops backup 20261125T020000" } else { "Barman backup cloud 20261125T020000" };
    let info = format!(
        "backup_label='START WAL LOCATION: 0/2000028\\nLABEL: {label}\\n'\nend_time=2026-11-25 02:00:05.000000+00:00\n\
         end_xlog=0/2000100\nstatus=DONE\ntimeline=1\n"
    );
    let dir = "base/20261125T020000";
    runtime.block_on(repo.put(&format!("{dir}/backup.info"), info.into())).unwrap();
    runtime.block_on(repo.put(&format!("{dir}/data.tar"), tar_of(members).into())).unwrap();
    if by_pgops {
        runtime.block_on(repo.put(&format!("{dir}/backup_manifest"), manifest_of(members).into())).unwrap();
        runtime.block_on(repo.put(&format!("{dir}/{PGOPS_METADATA}"), "{}".into())).unwrap();
    }
    (store, repo, runtime)
}

const CLUSTER: &[Crafted<'static>] = &[
    Crafted::File("PG_VERSION", b"15\n"),
    Crafted::File("postgresql.conf", b"timezone = 'America/New_York'\n"),
    Crafted::Dir("pg_wal/"),
];

#[test]
fn a_pgops_backup_without_a_sound_manifest_is_refused_unless_told() {
    let (_store, repo, runtime) = repository_with(CLUSTER, true);
    let pgdata = tempfile::tempdir().unwrap();
    let restored = pgdata.path().join("restored");
    let report = restore(&repo, runtime.handle(), &request(&restored, RecoveryTarget::End), &mut |_| {}).unwrap();
    assert!(report.verified && report.warnings.is_empty());
    assert!(report.notes.iter().any(|n| n.contains("archiving is off")), "{:?}", report.notes);

    let manifest_key = "base/20261125T020000/backup_manifest";
    let text = runtime.block_on(repo.get(manifest_key)).unwrap().unwrap();
    let tampered = String::from_utf8_lossy(&text).replace("\"Size\": 3", "\"Size\": 4");
    runtime.block_on(repo.put(manifest_key, tampered.into())).unwrap();
    let tampered_into = pgdata.path().join("tampered");
    let err = restore(&repo, runtime.handle(), &request(&tampered_into, RecoveryTarget::End), &mut |_| {})
        .unwrap_err()
        .shown();
    assert!(err.contains("fails its own checksum") && err.contains("--no-verify"), "{err}");
    assert!(!tampered_into.exists(), "refused before writing anything");

    runtime.block_on(repo.store.delete(&repo.key(manifest_key))).unwrap();
    let missing_into = pgdata.path().join("missing");
    let err = restore(&repo, runtime.handle(), &request(&missing_into, RecoveryTarget::End), &mut |_| {})
        .unwrap_err()
        .shown();
    assert!(err.contains("taken by pgops but its backup_manifest is missing"), "{err}");
    assert!(!missing_into.exists());
    let mut unchecked = request(&missing_into, RecoveryTarget::End);
    unchecked.verify = false;
    let report = restore(&repo, runtime.handle(), &unchecked, &mut |_| {}).unwrap();
    assert!(!report.verified && report.warnings[0].contains("--no-verify"), "{report:?}");

    // Barman Cloud's backups have no manifest: restored unchecked, as they always were.
    let (_store, barman, runtime) = repository_with(CLUSTER, false);
    let report =
        restore(&barman, runtime.handle(), &request(&pgdata.path().join("barman"), RecoveryTarget::End), &mut |_| {})
            .unwrap();
    assert!(!report.verified && report.warnings.is_empty());
}

/// Barman's backups have no manifest: what the listing shows must be the whole backup.
#[test]
fn a_barman_backup_missing_an_archive_or_cut_short_is_refused() {
    let restore_into = |repo: &Repository, runtime: &tokio::runtime::Runtime, into: &Path| {
        restore(repo, runtime.handle(), &request(into, RecoveryTarget::End), &mut |_| {}).map_err(|e| e.shown())
    };
    let pgdata = tempfile::tempdir().unwrap();
    let dir = "base/20261125T020000";

    // A data chunk missing from the middle, or the first one.
    let (_store, repo, runtime) = repository_with(CLUSTER, false);
    runtime.block_on(repo.put(&format!("{dir}/data_0002.tar"), tar_of(CLUSTER).into())).unwrap();
    let err = restore_into(&repo, &runtime, &pgdata.path().join("gap")).unwrap_err();
    assert!(err.contains("archives of data are not whole: found data.tar, data_0002.tar"), "{err}");
    runtime.block_on(repo.put(&format!("{dir}/data_0001.tar"), tar_of(CLUSTER).into())).unwrap();
    runtime.block_on(repo.store.delete(&repo.key(&format!("{dir}/data.tar")))).unwrap();
    let err = restore_into(&repo, &runtime, &pgdata.path().join("first")).unwrap_err();
    assert!(err.contains("found data_0001.tar, data_0002.tar"), "{err}");

    // A tablespace backup.info lists, without its archive.
    let (_store, repo, runtime) = repository_with(CLUSTER, false);
    let info_key = format!("{dir}/backup.info");
    let info = runtime.block_on(repo.get(&info_key)).unwrap().unwrap();
    let info = format!("{}tablespaces=[('fast', 16385, '/mnt/fast')]\n", String::from_utf8_lossy(&info));
    runtime.block_on(repo.put(&info_key, info.into())).unwrap();
    let err = restore_into(&repo, &runtime, &pgdata.path().join("tablespace")).unwrap_err();
    assert!(err.contains("lists tablespace 16385, but the backup has no archive of it"), "{err}");

    // A tablespace only tablespace_map names: never linked to where it was.
    let with_map = [
        Crafted::File("PG_VERSION", b"15\n"),
        Crafted::Dir("pg_wal/"),
        Crafted::File("tablespace_map", b"16385 /srv/production/fast\n"),
    ];
    let (_store, repo, runtime) = repository_with(&with_map, false);
    let into = pgdata.path().join("map");
    let err = restore_into(&repo, &runtime, &into).unwrap_err();
    assert!(err.contains("tablespace_map names tablespace 16385 (at /srv/production/fast)"), "{err}");

    // A data archive cut at a member boundary: no end-of-archive marker.
    let (_store, repo, runtime) = repository_with(CLUSTER, false);
    let whole = tar_of(CLUSTER);
    let cut = &whole[..whole.len() - 1024];
    runtime.block_on(repo.put(&format!("{dir}/data.tar"), Bytes::copy_from_slice(cut))).unwrap();
    let err = restore_into(&repo, &runtime, &pgdata.path().join("cut")).unwrap_err();
    assert!(err.contains("without tar's end-of-archive marker"), "{err}");
    // Whole, it restores.
    runtime.block_on(repo.put(&format!("{dir}/data.tar"), whole.into())).unwrap();
    restore_into(&repo, &runtime, &pgdata.path().join("whole")).unwrap();
}

/// A backup of a standby restores as a cluster recovering from the repository, never as
/// a standby streaming from the original's primary.
#[test]
fn a_standby_signal_in_the_backup_is_removed() {
    let from_standby = [
        Crafted::File("PG_VERSION", b"15\n"),
        Crafted::Dir("pg_wal/"),
        Crafted::File("standby.signal", b""),
        Crafted::File("postgresql.auto.conf", b"primary_conninfo = 'host=production'\n"),
    ];
    let (_store, repo, runtime) = repository_with(&from_standby, false);
    let pgdata = tempfile::tempdir().unwrap();
    let into = pgdata.path().join("restored");
    let report = restore(&repo, runtime.handle(), &request(&into, RecoveryTarget::End), &mut |_| {}).unwrap();
    assert!(!into.join("standby.signal").exists() && into.join("recovery.signal").exists());
    assert!(report.notes.iter().any(|n| n.contains("standby.signal (the backup was taken on a standby) was removed")));
}

#[test]
fn backup_info_tablespaces_are_read_for_their_oids() {
    assert_eq!(info_tablespace_oids(None), BTreeSet::new());
    let listed = "[('fast', 16385, '/mnt/o\\'k'), ('slow', 16390, '/mnt/slow')]";
    assert_eq!(info_tablespace_oids(Some(listed)), BTreeSet::from([16385, 16390]));
}

#[test]
fn a_time_without_offset_is_the_backed_up_servers_local_time() {
    let (_store, repo, runtime) = repository_with(CLUSTER, true);
    let pgdata = tempfile::tempdir().unwrap();
    // 2026-11-24 23:00 in New York is 04:00 UTC on the 25th, after the backup's end at
    // 02:00:05 UTC (read as UTC, it would come before it).
    let restored = pgdata.path().join("restored");
    let report =
        restore(&repo, runtime.handle(), &request(&restored, time("2026-11-24 23:00:00")), &mut |_| {}).unwrap();
    let conf = std::fs::read_to_string(restored.join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains("recovery_target_time = '2026-11-25 04:00:00.000000+00'"), "{conf}");
    assert!(
        report.notes.iter().any(|n| n.contains("America/New_York = 2026-11-25 04:00:00.000000+00 UTC")),
        "{:?}",
        report.notes
    );
    // In Tokyo, 2026-11-25 10:00 is 01:00 UTC, before the backup ended (read as UTC, it
    // would come after): the backup is refused once its timezone is read, and what was
    // written is removed.
    let tokyo = [Crafted::File("PG_VERSION", b"15\n"), Crafted::File("postgresql.conf", b"timezone = 'Asia/Tokyo'\n")];
    let (_store, repo, runtime) = repository_with(&tokyo, true);
    let early = pgdata.path().join("early");
    let err = restore(&repo, runtime.handle(), &request(&early, time("2026-11-25 10:00:00")), &mut |_| {})
        .unwrap_err()
        .shown();
    assert!(err.contains("no DONE backup ends before the recovery target"), "{err}");
    assert_eq!(std::fs::read_dir(&early).unwrap().count(), 0);
}

/// An archive rewritten after the backup was listed is refused (`Changed`), not read as
/// whatever is there now.
#[test]
fn an_archive_rewritten_since_it_was_listed_is_refused() {
    let (_store, repo, runtime) = repository_with(CLUSTER, true);
    let stored = StoredBackup::load(&repo, runtime.handle(), "20261125T020000").unwrap();
    runtime.block_on(repo.put("base/20261125T020000/data.tar", Bytes::from_static(b"another archive"))).unwrap();
    let err = StoredBackup::open(&repo, runtime.handle(), "20261125T020000", &stored.data[0]).err().unwrap();
    assert!(matches!(&err, RestoreError::Store(e) if e.kind == StoreErrorKind::Changed), "{err}");
    assert!(err.to_string().contains("data.tar"), "{err}");
}
