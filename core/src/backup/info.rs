//! `backup.info`, Barman's metadata file, with Barman's own keys only: its loader rejects
//! any key it does not know, so anything pgops-specific goes into a separate object.

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

/// A `backup.info` read back: its fields as text, `None` and empty values left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InfoFields(pub BTreeMap<String, String>);

impl InfoFields {
    pub fn parse(text: &str) -> InfoFields {
        InfoFields(
            text.lines()
                .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .filter(|(_, v)| v != "None" && !v.is_empty())
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn number(&self, key: &str) -> Option<u64> {
        self.get(key)?.parse().ok()
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
        let fields = InfoFields::parse(&text);
        assert_eq!(fields.get("status"), Some("DONE"));
        assert_eq!(fields.number("size"), Some(1234));
        assert_eq!(fields.get("error"), Some("line one line two"));
        assert_eq!(fields.get("end_time"), None);
    }
}
