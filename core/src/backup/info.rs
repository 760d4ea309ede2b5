//! `backup.info`, Barman's metadata file, with Barman's own keys only: its loader rejects
//! any key it does not know, so anything pgops-specific goes into a separate object.

use crate::naming::{Lsn, Timeline, WalSegment};
use crate::restore::TargetTime;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupStatus {
    /// Running, or left behind by a crash until the worker marks it failed.
    Started,
    Done,
    Failed,
}

impl BackupStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupStatus::Started => "STARTED",
            BackupStatus::Done => "DONE",
            BackupStatus::Failed => "FAILED",
        }
    }

    /// The status `backup.info` names; `None` for Barman's others (`EMPTY`,
    /// `WAITING_FOR_WALS`, `SYNCING`), which pgops never writes.
    pub fn from_barman(text: &str) -> Option<BackupStatus> {
        [BackupStatus::Started, BackupStatus::Done, BackupStatus::Failed].into_iter().find(|s| s.as_str() == text)
    }
}

/// One tablespace: Barman's `(name, oid, location)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tablespace {
    pub name: String,
    pub oid: u32,
    pub location: String,
}

/// What pgops records about a backup, in Barman's terms.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackupInfo {
    pub status: Option<BackupStatus>,
    pub server_name: String,
    pub systemid: String,
    /// `server_version_num`.
    pub version: u32,
    pub pgdata: String,
    pub config_file: String,
    pub hba_file: String,
    pub ident_file: String,
    pub tablespaces: Vec<Tablespace>,
    pub timeline: u32,
    pub xlog_segment_size: u64,
    pub data_checksums: bool,
    pub cluster_size: u64,
    /// Barman's timestamp form, `2026-11-25 02:00:00.123456+00:00`.
    pub begin_time: String,
    pub begin_xlog: String,
    pub begin_wal: String,
    pub begin_offset: u64,
    pub end_time: Option<String>,
    pub end_xlog: Option<String>,
    pub end_wal: Option<String>,
    pub end_offset: Option<u64>,
    pub backup_label: Option<String>,
    /// Uncompressed size of the archives.
    pub size: Option<u64>,
    pub compression: Option<String>,
    pub error: Option<String>,
}

/// Python's `repr()` of a str, which Barman reads back with `ast.literal_eval`.
fn python_repr(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn optional<T: ToString>(value: &Option<T>) -> String {
    value.as_ref().map_or_else(|| "None".to_string(), T::to_string)
}

impl BackupInfo {
    /// The file as Barman writes it: every field, sorted by name, `None` when unset.
    pub fn to_barman(&self) -> String {
        let tablespaces = if self.tablespaces.is_empty() {
            "None".to_string()
        } else {
            let items: Vec<String> = self
                .tablespaces
                .iter()
                .map(|t| format!("({}, {}, {})", python_repr(&t.name), t.oid, python_repr(&t.location)))
                .collect();
            format!("[{}]", items.join(", "))
        };
        let fields: BTreeMap<&str, String> = BTreeMap::from([
            ("backup_label", self.backup_label.as_deref().map_or("None".into(), python_repr)),
            ("begin_offset", self.begin_offset.to_string()),
            ("begin_time", self.begin_time.clone()),
            ("begin_wal", self.begin_wal.clone()),
            ("begin_xlog", self.begin_xlog.clone()),
            ("children_backup_ids", "None".into()),
            ("cluster_size", self.cluster_size.to_string()),
            ("compression", optional(&self.compression)),
            ("config_file", self.config_file.clone()),
            ("copy_stats", "None".into()),
            ("data_checksums", if self.data_checksums { "on" } else { "off" }.into()),
            ("deduplicated_size", optional(&self.size)),
            ("encryption", "None".into()),
            ("end_offset", optional(&self.end_offset)),
            ("end_time", optional(&self.end_time)),
            ("end_wal", optional(&self.end_wal)),
            ("end_xlog", optional(&self.end_xlog)),
            // Barman stores one line per field: keep a multi-line error on one.
            ("error", optional(&self.error.as_ref().map(|e| e.replace('\n', " ")))),
            ("hba_file", self.hba_file.clone()),
            ("ident_file", self.ident_file.clone()),
            ("included_files", "None".into()),
            ("mode", "concurrent".into()),
            ("parent_backup_id", "None".into()),
            ("pgdata", self.pgdata.clone()),
            ("server_name", self.server_name.clone()),
            ("size", optional(&self.size)),
            ("status", self.status.map_or("EMPTY", BackupStatus::as_str).into()),
            ("summarize_wal", "None".into()),
            ("systemid", self.systemid.clone()),
            ("tablespaces", tablespaces),
            ("timeline", self.timeline.to_string()),
            ("version", self.version.to_string()),
            ("xlog_segment_size", self.xlog_segment_size.to_string()),
        ]);
        fields.into_iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    }
}

/// A `backup.info` read back, parsed once: the fields pgops decides on, typed; the text of
/// every field as written (Barman's other fields and statuses included) for display; and
/// which fields hold text that is not of their type, which each reader judges for itself
/// (retention will not plan on them, verify reports them, a listing shows the text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupRecord {
    /// `None` when absent or one of Barman's statuses pgops never writes (see
    /// [`BackupRecord::status_text`]).
    pub status: Option<BackupStatus>,
    pub system_identifier: Option<u64>,
    pub timeline: Option<Timeline>,
    pub segment_size: Option<u64>,
    pub begin_wal: Option<WalSegment>,
    pub end_wal: Option<WalSegment>,
    pub begin_lsn: Option<Lsn>,
    pub end_lsn: Option<Lsn>,
    pub end_time: Option<DateTime<Utc>>,
    /// Uncompressed size of the archives.
    pub size: Option<u64>,
    pub error: Option<String>,
    /// Every field's text, `None` and empty values left out.
    text: BTreeMap<String, String>,
    /// Fields present whose text is not of their type, with what it should be.
    malformed: BTreeMap<&'static str, &'static str>,
}

impl BackupRecord {
    pub fn parse(text: &str) -> BackupRecord {
        let text: BTreeMap<String, String> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .filter(|(_, v)| v != "None" && !v.is_empty())
            .collect();
        let mut malformed = BTreeMap::new();
        // A field's value as type T, parsed once; text that is not one is noted as `what`.
        fn typed<T>(
            text: &BTreeMap<String, String>,
            malformed: &mut BTreeMap<&'static str, &'static str>,
            key: &'static str,
            what: &'static str,
            parse: impl Fn(&str) -> Option<T>,
        ) -> Option<T> {
            let value = parse(text.get(key)?);
            if value.is_none() {
                malformed.insert(key, what);
            }
            value
        }
        let number = |value: &str| value.parse::<u64>().ok();
        let system_identifier = typed(&text, &mut malformed, "systemid", "a system identifier", number);
        let segment_size = typed(&text, &mut malformed, "xlog_segment_size", "a number", number);
        let size = typed(&text, &mut malformed, "size", "a number", number);
        let wal = |name: &str| WalSegment::parse(name).ok();
        let begin_wal = typed(&text, &mut malformed, "begin_wal", "a WAL segment name", wal);
        let end_wal = typed(&text, &mut malformed, "end_wal", "a WAL segment name", wal);
        let begin_lsn = typed(&text, &mut malformed, "begin_xlog", "an LSN", |v| v.parse::<Lsn>().ok());
        let end_lsn = typed(&text, &mut malformed, "end_xlog", "an LSN", |v| v.parse::<Lsn>().ok());
        let end_time = typed(&text, &mut malformed, "end_time", "a time with a UTC offset", barman_instant);
        let timeline =
            typed(&text, &mut malformed, "timeline", "a timeline number", |v| v.parse::<u32>().ok().map(Timeline));
        BackupRecord {
            status: text.get("status").and_then(|status| BackupStatus::from_barman(status)),
            system_identifier,
            timeline,
            segment_size,
            begin_wal,
            end_wal,
            begin_lsn,
            end_lsn,
            end_time,
            size,
            error: text.get("error").cloned(),
            text,
            malformed,
        }
    }

    /// The record of a backup whose `backup.info` could not be read: no status, `error`
    /// saying why.
    pub fn unreadable(error: String) -> BackupRecord {
        BackupRecord {
            error: Some(error.clone()),
            text: BTreeMap::from([("error".to_string(), error)]),
            ..BackupRecord::default()
        }
    }

    /// A field's text as written; `None` when absent, `None` or empty.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.text.get(key).map(String::as_str)
    }

    /// The status as written, Barman's others (`WAITING_FOR_WALS`, ...) included.
    pub fn status_text(&self) -> Option<&str> {
        self.text("status")
    }

    /// What is wrong with field `key`, when its text is not of its type.
    pub fn malformed(&self, key: &str) -> Option<String> {
        let what = self.malformed.get(key)?;
        Some(format!("{key} \"{}\" is not {what}", self.text.get(key).map_or("", String::as_str)))
    }
}

/// Rewrites a `backup.info` still STARTED with status FAILED and `reason` as its error,
/// every other line kept as it is (a field pgops does not know included); `None` when it
/// is no longer STARTED.
pub fn marked_failed(text: &str, reason: &str) -> Option<String> {
    if BackupRecord::parse(text).status != Some(BackupStatus::Started) {
        return None;
    }
    let error = format!("error={}", reason.replace('\n', " "));
    let mut lines: Vec<String> = text
        .lines()
        .filter(|line| !line.starts_with("error="))
        .map(|line| match line.split_once('=') {
            Some(("status", _)) => "status=FAILED".to_string(),
            _ => line.to_string(),
        })
        .collect();
    // Barman writes its keys sorted.
    let at = lines.iter().position(|line| line.as_str() > error.as_str()).unwrap_or(lines.len());
    lines.insert(at, error);
    Some(lines.into_iter().map(|line| line + "\n").collect())
}

/// An instant in `backup.info`'s form (`2026-11-25 02:00:05.000000+00:00`); `None` for text
/// that is not one, or has no UTC offset.
pub fn barman_instant(text: &str) -> Option<DateTime<Utc>> {
    match TargetTime::parse(text)? {
        TargetTime::At(at) => Some(at),
        TargetTime::Local(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barman_layout_round_trips() {
        let info = BackupInfo {
            status: Some(BackupStatus::Done),
            server_name: "cnpg-main".into(),
            systemid: "7300000000000000001".into(),
            version: 150004,
            tablespaces: vec![Tablespace { name: "fast".into(), oid: 16385, location: "/mnt/o'k".into() }],
            timeline: 1,
            begin_xlog: "0/2000028".into(),
            backup_label: Some("START WAL LOCATION: 0/2000028\nLABEL: x\n".into()),
            size: Some(1234),
            error: Some("line one\nline two".into()),
            ..Default::default()
        };
        let text = info.to_barman();
        let keys: Vec<_> = text.lines().map(|l| l.split_once('=').unwrap().0).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "Barman writes keys sorted");
        assert!(text.contains("backup_label='START WAL LOCATION: 0/2000028\\nLABEL: x\\n'\n"), "{text}");
        assert!(text.contains("tablespaces=[('fast', 16385, '/mnt/o\\'k')]\n"), "{text}");
        assert!(text.contains("end_time=None\n"));
        let record = BackupRecord::parse(&text);
        assert_eq!(record.status, Some(BackupStatus::Done));
        assert_eq!(record.size, Some(1234));
        assert_eq!(record.error.as_deref(), Some("line one line two"));
        assert_eq!(record.end_time, None);
        assert_eq!(record.begin_lsn, Some(Lsn(0x2000028)));
        assert_eq!(record.timeline, Some(Timeline(1)));
        assert_eq!(record.system_identifier, Some(7300000000000000001));
    }

    #[test]
    fn a_record_types_what_it_can_and_names_what_it_cannot() {
        let record = BackupRecord::parse(
            "status=WAITING_FOR_WALS\nbegin_wal=0/2000028\nend_xlog=0/3000060\ntimeline=x\nend_time=None\nfuture_key=kept\n",
        );
        assert_eq!(record.status, None);
        assert_eq!(record.status_text(), Some("WAITING_FOR_WALS"));
        assert_eq!(record.begin_wal, None);
        assert_eq!(record.malformed("begin_wal").unwrap(), "begin_wal \"0/2000028\" is not a WAL segment name");
        assert_eq!(record.end_lsn, Some(Lsn(0x3000060)));
        assert_eq!(record.malformed("end_xlog"), None);
        assert!(record.malformed("timeline").is_some());
        assert_eq!((record.end_time, record.malformed("end_time")), (None, None));
        assert_eq!(record.text("future_key"), Some("kept"));
    }

    #[test]
    fn marking_failed_keeps_every_other_line_and_only_rewrites_a_started_backup() {
        let started = "begin_wal=000000010000000000000002\nfuture_key=kept\nstatus=STARTED\n";
        let failed = marked_failed(started, "the worker\nstopped").unwrap();
        assert_eq!(
            failed,
            "begin_wal=000000010000000000000002\nerror=the worker stopped\nfuture_key=kept\nstatus=FAILED\n"
        );
        assert_eq!(marked_failed(&failed, "again"), None);
        assert_eq!(marked_failed("status=DONE\n", "no"), None);
    }
}
