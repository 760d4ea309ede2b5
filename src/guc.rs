//! The `pgops.*` settings. Each is validated when it is set (SET, ALTER SYSTEM, a reload of
//! postgresql.conf) by a check hook that reports a clear message and a HINT; the archiver
//! and the SQL functions read them through [`archive_settings`], which validates what
//! depends on several settings at once.

use pgops_core::archive::ArchiveSettings;
use pgops_core::backup::upload::UploadSettings;
use pgops_core::pipeline::{Compression, KeyRing};
use pgops_core::repository::RepositoryUrl;
use pgops_core::retention::Policy;
use pgops_core::schedule::{self, Schedule};
use pgops_core::store::{S3Options, ServerSideEncryption};
use pgops_core::InvalidSetting;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};
use pgrx::pg_sys;
use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::Arc;

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum WalCompression {
    #[name = c"zstd"]
    Zstd,
    #[name = c"gzip"]
    Gzip,
    #[name = c"lz4"]
    Lz4,
    #[name = c"snappy"]
    Snappy,
    #[name = c"none"]
    None,
}

impl From<WalCompression> for Compression {
    fn from(value: WalCompression) -> Self {
        match value {
            WalCompression::Zstd => Compression::Zstd,
            WalCompression::Gzip => Compression::Gzip,
            WalCompression::Lz4 => Compression::Lz4,
            WalCompression::Snappy => Compression::Snappy,
            WalCompression::None => Compression::None,
        }
    }
}

/// Codecs for base backups: those Barman Cloud's tools read (tar, tar.gz, tar.snappy),
/// and zstd (`.tar.zst`, as pg_basebackup writes it).
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum BackupCompression {
    #[name = c"zstd"]
    Zstd,
    #[name = c"snappy"]
    Snappy,
    #[name = c"gzip"]
    Gzip,
    #[name = c"none"]
    None,
}

impl From<BackupCompression> for Compression {
    fn from(value: BackupCompression) -> Self {
        match value {
            BackupCompression::Zstd => Compression::Zstd,
            BackupCompression::Snappy => Compression::Snappy,
            BackupCompression::Gzip => Compression::Gzip,
            BackupCompression::None => Compression::None,
        }
    }
}

/// `pgops.s3_sse`: the server-side encryption asked of S3 on every write.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum S3Sse {
    #[name = c"off"]
    Off,
    #[name = c"AES256"]
    Aes256,
    #[name = c"aws:kms"]
    AwsKms,
}

static REPOSITORY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static S3_ENDPOINT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static S3_REGION: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"us-east-1"));
static S3_ACCESS_KEY_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static S3_SECRET_ACCESS_KEY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static S3_CREDENTIALS_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static S3_SSE: GucSetting<S3Sse> = GucSetting::<S3Sse>::new(S3Sse::Off);
static S3_SSE_KMS_KEY_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static WAL_COMPRESSION: GucSetting<WalCompression> = GucSetting::<WalCompression>::new(WalCompression::Zstd);
static COMPRESSION_LEVEL: GucSetting<i32> = GucSetting::<i32>::new(0);
static ARCHIVE_PARALLEL: GucSetting<i32> = GucSetting::<i32>::new(4);
static BACKUP_SCHEDULE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static SCHEDULE_TIMEZONE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"UTC"));
static BACKUP_COMPRESSION: GucSetting<BackupCompression> =
    GucSetting::<BackupCompression>::new(BackupCompression::Zstd);
static BACKUP_COMPRESSION_WORKERS: GucSetting<i32> = GucSetting::<i32>::new(2);
static BACKUP_FAST_CHECKPOINT: GucSetting<bool> = GucSetting::<bool>::new(false);
static ROLES_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"postgres"));
static ENCRYPTION: GucSetting<bool> = GucSetting::<bool>::new(false);
static ENCRYPTION_KEY_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static RETENTION_POLICY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static MINIMUM_REDUNDANCY: GucSetting<i32> = GucSetting::<i32>::new(1);
/// Seconds between the worker's retention runs.
static RETENTION_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(30 * 60);
/// Seconds a backup's last WAL segment may take to be archived after pg_backup_stop.
static BACKUP_ARCHIVE_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(300);
/// Seconds a backup directory without backup.info is left alone after its last write.
static RETENTION_INCOMPLETE_GRACE: GucSetting<i32> =
    GucSetting::<i32>::new(pgops_core::retention::DEFAULT_INCOMPLETE_GRACE.num_seconds() as i32);

pub fn register() {
    // SUSET everywhere but pgops.database: the archiver and the worker read postgresql.conf,
    // and a superuser may try values in a session (SET validates them, pgops.check() uses
    // them) without touching the server's.
    let secret = GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL;
    // SAFETY: check_repository, check_endpoint and check_region are #[pg_guard]
    // (string_check_hook!), and so is check_compression_level, as pgrx asks of hooks so that
    // no panic unwinds into Postgres; no assign or show hooks.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"pgops.repository",
            c"Where WAL and backups go: s3://bucket/prefix or file:///absolute/path.",
            c"The layout below it is Barman Cloud's: wals/ and base/.",
            &REPOSITORY,
            GucContext::Suset,
            GucFlags::default(),
            Some(check_repository),
            None,
            None,
        );
        GucRegistry::define_string_guc_with_hooks(
            c"pgops.s3_endpoint",
            c"S3 endpoint URL for S3-compatible stores (RustFS, MinIO); empty for AWS S3.",
            c"Path-style addressing is used whenever an endpoint is set.",
            &S3_ENDPOINT,
            GucContext::Suset,
            GucFlags::default(),
            Some(check_endpoint),
            None,
            None,
        );
        GucRegistry::define_string_guc_with_hooks(
            c"pgops.s3_region",
            c"S3 region.",
            c"",
            &S3_REGION,
            GucContext::Suset,
            GucFlags::default(),
            Some(check_region),
            None,
            None,
        );
        GucRegistry::define_int_guc_with_hooks(
            c"pgops.compression_level",
            c"Compression level: 0 is the codec's default (zstd 3, gzip 6).",
            c"zstd takes 1 to 22, gzip 1 to 9; lz4, snappy and none take only 0.",
            &COMPRESSION_LEVEL,
            0,
            22,
            GucContext::Suset,
            GucFlags::default(),
            Some(check_compression_level),
            None,
            None,
        );
    }
    // SAFETY: check_backup_schedule and check_schedule_timezone are #[pg_guard]
    // (string_check_hook!), as pgrx asks of hooks so that no panic unwinds into Postgres; no
    // assign or show hooks.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"pgops.backup_schedule",
            c"When the worker takes base backups: cron with seconds, e.g. '0 0 2 * * *'; empty for none.",
            c"Six fields (second minute hour day-of-month month day-of-week) or the five-field form.",
            &BACKUP_SCHEDULE,
            GucContext::Suset,
            GucFlags::default(),
            Some(check_backup_schedule),
            None,
            None,
        );
        GucRegistry::define_string_guc_with_hooks(
            c"pgops.schedule_timezone",
            c"Time zone of pgops.backup_schedule (an IANA name).",
            c"",
            &SCHEDULE_TIMEZONE,
            GucContext::Suset,
            GucFlags::default(),
            Some(check_schedule_timezone),
            None,
            None,
        );
    }
    GucRegistry::define_enum_guc(
        c"pgops.backup_compression",
        c"Compression of base backup archives.",
        c"barman-cloud-restore reads none, gzip and snappy; zstd archives are .tar.zst.",
        &BACKUP_COMPRESSION,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pgops.backup_compression_workers",
        c"zstd threads compressing a base backup; 0 compresses on the reading thread.",
        c"",
        &BACKUP_COMPRESSION_WORKERS,
        0,
        64,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pgops.backup_fast_checkpoint",
        c"Start base backups with an immediate checkpoint instead of a spread one.",
        c"Like pg_basebackup --checkpoint=fast; off spreads the checkpoint's I/O.",
        &BACKUP_FAST_CHECKPOINT,
        GucContext::Suset,
        GucFlags::default(),
    );
    // SAFETY: check_roles_file is #[pg_guard] (string_check_hook!), as pgrx asks of hooks
    // so that no panic unwinds into Postgres; no assign or show hook.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"pgops.roles_file",
            c"JSON file of roles and databases the pgops worker keeps as declared.",
            c"Reconciled when the worker starts and on every reload; see pgops.role_status.",
            &ROLES_FILE,
            GucContext::Suset,
            GucFlags::default(),
            Some(check_roles_file),
            None,
            None,
        );
    }
    // A PGC_POSTMASTER setting can be defined only while shared_preload_libraries loads;
    // loaded later (archive_library alone, CREATE EXTENSION), Postgres would exit FATAL.
    // Without preloading there is no pgops worker to connect anywhere anyway.
    // SAFETY: a plain read of a `bool` global of this process that Postgres sets around
    // loading shared_preload_libraries; register() runs from _PG_init on the main thread.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        GucRegistry::define_string_guc(
            c"pgops.database",
            c"Database the pgops worker connects to.",
            c"",
            &DATABASE,
            GucContext::Postmaster,
            GucFlags::default(),
        );
    }
    // SAFETY: check_credentials_file is #[pg_guard] (string_check_hook!), as pgrx asks of
    // hooks so that no panic unwinds into Postgres; no assign or show hook.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"pgops.s3_credentials_file",
            c"File holding the S3 access key id and secret (AWS credentials format), outside the data directory.",
            c"Re-read when it changes; keeps secrets out of base backups, unlike ALTER SYSTEM.",
            &S3_CREDENTIALS_FILE,
            GucContext::Suset,
            GucFlags::default(),
            Some(check_credentials_file),
            None,
            None,
        );
    }
    // SIGHUP: the archiver, the worker and the SQL functions must agree on whether the
    // repository is encrypted, or the ownership record refuses one of them.
    GucRegistry::define_bool_guc(
        c"pgops.encryption",
        c"Encrypt every object pgops writes (age, to the key in pgops.encryption_key_file).",
        c"An encrypted repository is readable by pgops only; plain and encrypted objects never mix in one repository.",
        &ENCRYPTION,
        GucContext::Sighup,
        GucFlags::default(),
    );
    // SAFETY: check_encryption_key_file is #[pg_guard] (string_check_hook!), as pgrx asks
    // of hooks so that no panic unwinds into Postgres; no assign or show hook.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"pgops.encryption_key_file",
            c"File of age secret keys (from `pgops keygen`), outside the data directory: the first encrypts, all decrypt.",
            c"Mode 0600, readable by the server's operating system user. To rotate, put a new key first and keep the old ones below it.",
            &ENCRYPTION_KEY_FILE,
            GucContext::Sighup,
            GucFlags::default(),
            Some(check_encryption_key_file),
            None,
            None,
        );
    }
    // SIGHUP: the worker applies them; pgops.expire() and the worker must agree.
    // SAFETY: check_retention_policy is #[pg_guard] (string_check_hook!), as pgrx asks of
    // hooks so that no panic unwinds into Postgres; no assign or show hook.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"pgops.retention_policy",
            c"Which backups the worker keeps: 'RECOVERY WINDOW OF 30 DAYS', 'REDUNDANCY 7', '30d', '4w', '6m'; empty keeps every backup.",
            c"Obsolete backups, and the WAL only they need, are deleted after each backup and every pgops.retention_interval.",
            &RETENTION_POLICY,
            GucContext::Sighup,
            GucFlags::default(),
            Some(check_retention_policy),
            None,
            None,
        );
    }
    GucRegistry::define_int_guc(
        c"pgops.minimum_redundancy",
        c"Retention never keeps fewer DONE backups than this, whatever pgops.retention_policy says.",
        c"",
        &MINIMUM_REDUNDANCY,
        1,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pgops.retention_interval",
        c"How often the worker applies pgops.retention_policy, besides after each DONE backup.",
        c"",
        &RETENTION_INTERVAL,
        1,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pgops.backup_archive_timeout",
        c"How long a backup waits after pg_backup_stop for its last WAL segment to be in the repository before it FAILS.",
        c"As pgBackRest's archive-timeout: a backup whose WAL is not archived cannot be restored.",
        &BACKUP_ARCHIVE_TIMEOUT,
        1,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pgops.retention_incomplete_grace",
        c"How long retention leaves a backup directory without backup.info alone after its last object was written.",
        c"Another tool may still be uploading it (barman-cloud-backup writes backup.info last); also how long a STARTED backup without a heartbeat may go unwritten before it is taken for abandoned.",
        &RETENTION_INCOMPLETE_GRACE,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_string_guc(
        c"pgops.s3_access_key_id",
        c"S3 access key id; empty means the AWS default credential chain.",
        c"",
        &S3_ACCESS_KEY_ID,
        GucContext::Suset,
        secret,
    );
    GucRegistry::define_string_guc(
        c"pgops.s3_secret_access_key",
        c"S3 secret access key; empty means the AWS default credential chain.",
        c"",
        &S3_SECRET_ACCESS_KEY,
        GucContext::Suset,
        secret,
    );
    GucRegistry::define_enum_guc(
        c"pgops.s3_sse",
        c"Server-side encryption S3 applies to every object pgops writes: off, AES256 (SSE-S3) or aws:kms (SSE-KMS).",
        c"off leaves it to the bucket's default encryption. The store holds the key: this protects the disks, not against the store.",
        &S3_SSE,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pgops.s3_sse_kms_key_id",
        c"KMS key (id, alias or ARN) for pgops.s3_sse = 'aws:kms'; empty for the account's default key.",
        c"",
        &S3_SSE_KMS_KEY_ID,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"pgops.wal_compression",
        c"Compression of archived WAL files.",
        c"",
        &WAL_COMPRESSION,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pgops.archive_parallel",
        c"WAL uploads in flight at most, the one Postgres asked for included.",
        c"The archiver reads ahead the oldest .ready files.",
        &ARCHIVE_PARALLEL,
        1,
        64,
        GucContext::Suset,
        GucFlags::default(),
    );
}

fn string(setting: &GucSetting<Option<CString>>) -> Option<String> {
    setting.get().map(|s| s.to_string_lossy().into_owned()).filter(|s| !s.is_empty())
}

/// Where the repository is and how to reach it, or what is wrong with the settings.
pub fn repository_settings() -> Result<(RepositoryUrl, S3Options), InvalidSetting> {
    let repository: RepositoryUrl = string(&REPOSITORY)
        .ok_or_else(|| {
            InvalidSetting::new(
                "pgops.repository is not set",
                "Set pgops.repository = 's3://bucket/prefix' (or 'file:///path') in postgresql.conf and reload.",
            )
        })?
        .parse()?;
    let credentials = match (string(&S3_ACCESS_KEY_ID), string(&S3_SECRET_ACCESS_KEY)) {
        (None, None) => match string(&S3_CREDENTIALS_FILE) {
            Some(path) => Some(file_credentials(&path)?),
            None => None,
        },
        (Some(_), _) | (_, Some(_)) if string(&S3_CREDENTIALS_FILE).is_some() => {
            return Err(InvalidSetting::new(
                "pgops.s3_credentials_file and pgops.s3_access_key_id/pgops.s3_secret_access_key are all set",
                "Use one way: reset pgops.s3_access_key_id and pgops.s3_secret_access_key to keep the secret out of the data directory and its backups.",
            ));
        }
        (Some(id), Some(secret)) => Some((id, secret)),
        (id, _) => {
            let (set, unset) = if id.is_some() {
                ("pgops.s3_access_key_id", "pgops.s3_secret_access_key")
            } else {
                ("pgops.s3_secret_access_key", "pgops.s3_access_key_id")
            };
            return Err(InvalidSetting::new(
                format!("{set} is set but {unset} is not"),
                "Set both, or neither to use the AWS default credential chain.",
            ));
        }
    };
    let s3 = S3Options {
        endpoint: string(&S3_ENDPOINT),
        region: string(&S3_REGION).unwrap_or_else(|| "us-east-1".into()),
        credentials,
        sse: server_side_encryption()?,
    };
    Ok((repository, s3))
}

/// `pgops.s3_sse` with its KMS key. Checked here rather than when either is set: both
/// may change in one reload, in any order.
fn server_side_encryption() -> Result<Option<ServerSideEncryption>, InvalidSetting> {
    let key_id = string(&S3_SSE_KMS_KEY_ID);
    match S3_SSE.get() {
        S3Sse::AwsKms => Ok(Some(ServerSideEncryption::Kms { key_id })),
        _ if key_id.is_some() => Err(InvalidSetting::new(
            "pgops.s3_sse_kms_key_id is set but pgops.s3_sse is not 'aws:kms'",
            "Set pgops.s3_sse = 'aws:kms' to encrypt with that KMS key, or reset pgops.s3_sse_kms_key_id.",
        )),
        S3Sse::Aes256 => Ok(Some(ServerSideEncryption::Aes256)),
        S3Sse::Off => Ok(None),
    }
}

/// The data directory, once Postgres knows it.
pub fn data_directory() -> Option<std::path::PathBuf> {
    // SAFETY: DataDir is NULL or a NUL-terminated string Postgres keeps for the process' life.
    let dir = unsafe { pg_sys::DataDir };
    // SAFETY: `dir` is not NULL here, so it is that NUL-terminated string; it is copied.
    (!dir.is_null()).then(|| unsafe { CStr::from_ptr(dir) }.to_string_lossy().into_owned().into())
}

/// The credentials file last read in this process: its identity and what it held.
struct ReadCredentials {
    path: String,
    /// (device, inode, size, modification time): a rotated secret changes one of them.
    version: (u64, u64, u64, i64, i64),
    credentials: (String, String),
}

static CREDENTIALS_READ: std::sync::Mutex<Option<ReadCredentials>> = std::sync::Mutex::new(None);

/// The credentials in file `path`, read again whenever the file changed (a rotated
/// Kubernetes secret needs no reload). Errors never carry a value from the file.
fn file_credentials(path: &str) -> Result<(String, String), InvalidSetting> {
    use std::os::unix::fs::MetadataExt;
    pgops_core::credentials::validate_file_path(path, data_directory().as_deref())?;
    let unreadable = |e: std::io::Error| {
        InvalidSetting::new(
            format!("could not read pgops.s3_credentials_file \"{path}\": {e}"),
            "Check that the secret is mounted at that path and readable by the server's operating system user.",
        )
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    let version = (meta.dev(), meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec());
    let mut read = CREDENTIALS_READ.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(read) = read.as_ref().filter(|r| r.path == path && r.version == version) {
        return Ok(read.credentials.clone());
    }
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
    let parsed = pgops_core::credentials::parse(&text, std::path::Path::new(path))?;
    let credentials = (parsed.access_key_id, parsed.secret_access_key);
    *read = Some(ReadCredentials { path: path.to_string(), version, credentials: credentials.clone() });
    Ok(credentials)
}

/// The key ring when pgops.encryption is on (`None` when off), or what is wrong. The file
/// is read on every call: a rotated key needs no restart.
pub fn encryption_keys() -> Result<Option<Arc<KeyRing>>, InvalidSetting> {
    if !ENCRYPTION.get() {
        return Ok(None);
    }
    let path = string(&ENCRYPTION_KEY_FILE).ok_or_else(|| {
        InvalidSetting::new(
            "pgops.encryption is on but pgops.encryption_key_file is not set",
            "Create a key with `pgops keygen /path/outside/the/data/directory` and set pgops.encryption_key_file to it, or set pgops.encryption = off. WAL stays in pg_wal until archiving succeeds.",
        )
    })?;
    pgops_core::credentials::validate_secret_path("pgops.encryption_key_file", &path, data_directory().as_deref())?;
    KeyRing::load(std::path::Path::new(&path))
        .map(|ring| Some(Arc::new(ring)))
        .map_err(|e| InvalidSetting::new(e.to_string(), e.hint()))
}

/// The archiver's settings, or what is wrong with them.
pub fn archive_settings() -> Result<ArchiveSettings, InvalidSetting> {
    let (repository, s3) = repository_settings()?;
    let compression = Compression::from(WAL_COMPRESSION.get());
    Ok(ArchiveSettings {
        repository,
        s3,
        compression,
        level: compression.effective_level(COMPRESSION_LEVEL.get())?,
        parallel: ARCHIVE_PARALLEL.get() as usize,
        encryption: encryption_keys()?,
    })
}

/// How base backups are written (the codec's default level).
pub fn backup_upload_settings() -> UploadSettings {
    let compression = Compression::from(BACKUP_COMPRESSION.get());
    let level = compression.effective_level(0).expect("0 is every codec's default level");
    UploadSettings {
        compression_workers: BACKUP_COMPRESSION_WORKERS.get() as u32,
        ..UploadSettings::new(compression, level)
    }
}

/// The schedule's settings as written (expression, time zone): a change of either starts
/// the schedule anew.
pub fn backup_schedule_text() -> String {
    format!("{} {}", string(&BACKUP_SCHEDULE).unwrap_or_default(), string(&SCHEDULE_TIMEZONE).unwrap_or_default())
}

/// `pgops.backup_fast_checkpoint`.
pub fn backup_fast_checkpoint() -> bool {
    BACKUP_FAST_CHECKPOINT.get()
}

/// The backup schedule in force, `None` when there is none.
pub fn backup_schedule() -> Result<Option<Schedule>, InvalidSetting> {
    let zone = string(&SCHEDULE_TIMEZONE).unwrap_or_else(|| "UTC".into());
    schedule::parse(&string(&BACKUP_SCHEDULE).unwrap_or_default(), &zone)
}

/// The roles file's path, `None` when unset.
pub fn roles_file() -> Option<String> {
    string(&ROLES_FILE)
}

/// The retention policy in force (checked when set); `None` keeps every backup.
pub fn retention_policy() -> Result<Option<Policy>, InvalidSetting> {
    Policy::parse(&string(&RETENTION_POLICY).unwrap_or_default())
}

pub fn minimum_redundancy() -> u32 {
    MINIMUM_REDUNDANCY.get().max(1) as u32
}

pub fn backup_archive_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(BACKUP_ARCHIVE_TIMEOUT.get().max(1) as u64)
}

pub fn incomplete_grace() -> chrono::Duration {
    chrono::Duration::seconds(i64::from(RETENTION_INCOMPLETE_GRACE.get().max(0)))
}

pub fn retention_interval() -> std::time::Duration {
    std::time::Duration::from_secs(RETENTION_INTERVAL.get().max(1) as u64)
}

pub fn database() -> String {
    string(&DATABASE).unwrap_or_else(|| "postgres".into())
}

/// Hands a validation failure to Postgres, which raises it as the ERROR (or, on a reload,
/// the LOG line) of the failed assignment.
fn reject(invalid: InvalidSetting) -> bool {
    let strings = (CString::new(invalid.message), CString::new(invalid.hint));
    // SAFETY: reject() is called only from the check hooks below, while Postgres runs them
    // on the main thread: it reads GUC_check_errcode_value and the GUC_check_err*_string
    // globals (reset before each hook) right after a hook returns false. pstrdup copies our
    // NUL-terminated strings into the hook's current memory context, which is still alive
    // when Postgres reports them (call_*_check_hook does so as soon as the hook returns).
    unsafe {
        pg_sys::GUC_check_errcode(pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE as i32);
        if let (Ok(message), Ok(hint)) = strings {
            pg_sys::GUC_check_errmsg_string = pg_sys::pstrdup(message.as_ptr());
            pg_sys::GUC_check_errhint_string = pg_sys::pstrdup(hint.as_ptr());
        }
    }
    false
}

/// The new value of a string setting; empty when unset.
///
/// # Safety
///
/// `newval` is the `char **newval` Postgres passed a string check hook; the result must not
/// outlive the hook's call.
unsafe fn new_string<'a>(newval: *mut *mut c_char) -> &'a str {
    // SAFETY: per the contract above, `newval` is NULL or points at Postgres' candidate
    // value, itself NULL (a NULL boot value) or a NUL-terminated string that Postgres keeps
    // unchanged while the hook runs.
    unsafe {
        if newval.is_null() || (*newval).is_null() {
            return "";
        }
        CStr::from_ptr(*newval).to_str().unwrap_or("\u{fffd}")
    }
}

/// Declares a check hook for a string setting around `validate`.
macro_rules! string_check_hook {
    ($hook:ident, $validate:expr) => {
        #[pgrx::pg_guard]
        unsafe extern "C-unwind" fn $hook(
            newval: *mut *mut c_char,
            _extra: *mut *mut c_void,
            _source: pg_sys::GucSource::Type,
        ) -> bool {
            let validate: fn(&str) -> Result<(), InvalidSetting> = $validate;
            // SAFETY: Postgres calls this as a string check hook, with its `char **newval`;
            // the &str is used only by `validate`, within this call.
            validate(unsafe { new_string(newval) }).map(|_| true).unwrap_or_else(reject)
        }
    };
}

// Empty means unset for the repository (archiving waits) and the endpoint (AWS S3).
string_check_hook!(check_repository, |v| if v.is_empty() { Ok(()) } else { v.parse::<RepositoryUrl>().map(drop) });
string_check_hook!(check_endpoint, |v| if v.is_empty() { Ok(()) } else { pgops_core::setting::validate_endpoint(v) });
string_check_hook!(check_region, pgops_core::setting::validate_region);
// The expression's form; the zone is checked by its own setting.
string_check_hook!(check_backup_schedule, |v| schedule::parse(v, "UTC").map(drop));
string_check_hook!(check_roles_file, |v| if v.is_empty() || v.starts_with('/') {
    Ok(())
} else {
    Err(InvalidSetting::new(
        format!("pgops.roles_file must be an absolute path, not \"{v}\""),
        "The worker's working directory is the data directory; give the full path, such as /etc/pgops/roles.json.",
    ))
});
string_check_hook!(check_credentials_file, |v| if v.is_empty() {
    Ok(())
} else {
    pgops_core::credentials::validate_file_path(v, data_directory().as_deref())
});
string_check_hook!(check_encryption_key_file, |v| if v.is_empty() {
    Ok(())
} else {
    pgops_core::credentials::validate_secret_path("pgops.encryption_key_file", v, data_directory().as_deref())
});
string_check_hook!(check_retention_policy, |v| Policy::parse(v).map(drop));
string_check_hook!(check_schedule_timezone, |v| schedule::parse_zone(v).map(drop));

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_compression_level(
    newval: *mut i32,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // Checked against the compression in force now; when both change in one reload the
    // archiver checks the pair again before it uses them.
    let compression = Compression::from(WAL_COMPRESSION.get());
    // SAFETY: Postgres calls this as an int setting's check hook, with `newval` pointing at
    // the candidate value (never NULL for an int setting).
    compression.effective_level(unsafe { *newval }).map(|_| true).unwrap_or_else(reject)
}
