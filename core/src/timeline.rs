//! Timeline histories: a timeline and where it left each of its ancestors, read from the
//! repository's `.history` files as Postgres reads them.

use crate::naming::{Lsn, Timeline};
use crate::pipeline::Compression;
use crate::restore::RestoreError;
use crate::store::{Repository, METADATA_LIMIT};
use std::path::Path;

/// A timeline and those it descends from, each with the LSN where it was left (its
/// history file): what `--target-timeline N` can follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineHistory {
    pub timeline: u32,
    pub ancestors: Vec<(u32, Lsn)>,
}

impl TimelineHistory {
    /// From the text of `<timeline>.history` (`parent<TAB>X/Y<TAB>reason` lines).
    pub fn parse(timeline: u32, history: &str) -> TimelineHistory {
        let ancestors = history
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
            })
            .collect();
        TimelineHistory { timeline, ancestors }
    }

    /// The history of `timeline` as the server with data directory `data_directory` keeps
    /// it (`pg_wal/<timeline>.history`; timeline 1 has none). Errors are (message, hint).
    pub fn of_server(data_directory: &Path, timeline: u32) -> Result<TimelineHistory, (String, &'static str)> {
        const HINT: &str = "Retention counts only the backups on this server's timeline history and deletes nothing \
                            without it: restore the history file into pg_wal (pgops wal-fetch can fetch it from the \
                            repository), or expire with pgops expire --timeline N (N: this server's timeline).";
        if timeline <= 1 {
            return Ok(TimelineHistory { timeline, ancestors: Vec::new() });
        }
        let path = data_directory.join("pg_wal").join(format!("{timeline:08X}.history"));
        let text = std::fs::read_to_string(&path).map_err(|e| {
            (format!("could not read the history of this server's timeline {timeline}, {}: {e}", path.display()), HINT)
        })?;
        let lineage = TimelineHistory::parse(timeline, &text);
        if lineage.ancestors.is_empty() {
            return Err((format!("{} names no parent timeline", path.display()), HINT));
        }
        Ok(lineage)
    }

    /// Whether recovery from a backup on `timeline` that ended at `end` can follow onto
    /// this timeline: it is this one, or one it descends from, left after the backup ended.
    pub(crate) fn reachable_from(&self, timeline: Option<Timeline>, end: Option<Lsn>) -> bool {
        let Some(Timeline(timeline)) = timeline else { return false };
        timeline == self.timeline
            || self
                .ancestors
                .iter()
                .any(|(ancestor, left_at)| *ancestor == timeline && end.is_some_and(|end| end <= *left_at))
    }
}

/// Timeline `timeline`'s history, from its history file in the repository (`None`: the
/// repository has none; timeline 1 needs none).
pub async fn stored_timeline_history(
    repo: &Repository,
    timeline: u32,
) -> Result<Option<TimelineHistory>, RestoreError> {
    if timeline == 1 {
        return Ok(Some(TimelineHistory { timeline, ancestors: Vec::new() }));
    }
    let name = format!("{timeline:08X}.history");
    let copies = repo.wal_copies("wals/", &name).await?;
    let Some(object) = copies.into_iter().next() else { return Ok(None) };
    let relative = object.key.strip_prefix(&repo.key("")).unwrap_or(&object.key).to_string();
    let location = repo.location(&relative);
    let file = relative.rsplit('/').next().unwrap_or_default();
    let codec = Compression::of_copy(file, &name)
        .ok_or_else(|| RestoreError::corrupt(&location, "stored with a compression pgops cannot read"))?;
    let text = repo
        .read_object(&object.key, codec, METADATA_LIMIT)
        .await?
        .ok_or_else(|| RestoreError::corrupt(&location, "vanished while it was read (deleted meanwhile)"))?;
    Ok(Some(TimelineHistory::parse(timeline, &String::from_utf8_lossy(&text))))
}
