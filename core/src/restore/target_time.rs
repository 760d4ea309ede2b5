//! `--target-time`: one instant, whatever the restored server's `timezone`. A time typed
//! with an offset (or `Z`) is that instant; a time without one means what it would mean to
//! `psql` on the backed-up server: local time in the `timezone` of its postgresql.conf /
//! postgresql.auto.conf. The instant goes into `recovery_target_time` with `+00`, so
//! Postgres reads the same instant the backup was chosen by.

use super::RestoreError;
use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use std::path::Path;

/// A recovery target time as typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetTime {
    /// Typed with an offset or `Z`.
    At(DateTime<Utc>),
    /// Typed without an offset: local time of the backed-up server's `timezone`.
    Local(NaiveDateTime),
}

/// Hours behind UTC of the westernmost time zone (Etc/GMT+12).
const WESTERNMOST_UTC_OFFSET_HOURS: i64 = 12;

/// What to do when the backed-up server's zone cannot be known.
const GIVE_AN_OFFSET: &str = "Give --target-time with an offset (e.g. '2026-11-25 07:00:00+00').";

/// PostgreSQL's `timezone` when no configuration file sets it.
const POSTGRES_DEFAULT_TIMEZONE: &str = "GMT";

impl TargetTime {
    /// Reads a time the way a DBA types it: `2026-11-25 07:00:00+00`, with or without
    /// fractions, `T` or a space, with an offset (`+01`, `+0100`, `+01:00`, `Z`) or none.
    pub fn parse(text: &str) -> Option<TargetTime> {
        let normalized = text.trim().replace('T', " ");
        let with_zone = ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.fZ"];
        with_zone
            .iter()
            .find_map(|f| DateTime::parse_from_str(&normalized, f).ok())
            .map(|t| TargetTime::At(t.with_timezone(&Utc)))
            .or_else(|| NaiveDateTime::parse_from_str(&normalized, "%Y-%m-%d %H:%M:%S%.f").ok().map(TargetTime::Local))
    }
}

/// Text that is not a time [`TargetTime::parse`] reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot read \"{0}\" as a time: use 'YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM]|Z]'; without an offset the time is read in the backed-up server's timezone"
)]
pub struct NotATime(pub String);

impl std::str::FromStr for TargetTime {
    type Err = NotATime;

    fn from_str(text: &str) -> Result<TargetTime, NotATime> {
        TargetTime::parse(text).ok_or_else(|| NotATime(text.to_string()))
    }
}

impl TargetTime {
    /// The instant if it is known without the server's zone; otherwise the latest instant
    /// the local time can be in any zone (the westernmost is UTC-12), to choose a first
    /// backup by: no backup that can reach the target is passed over, and the one chosen is
    /// checked (and replaced by an older one) once the restored configuration tells the zone.
    pub(super) fn estimate(&self) -> DateTime<Utc> {
        match self {
            TargetTime::At(at) => *at,
            TargetTime::Local(local) => local.and_utc() + Duration::hours(WESTERNMOST_UTC_OFFSET_HOURS),
        }
    }
}

/// The `timezone` setting a server on `pgdata` starts with: the last `timezone` line of
/// postgresql.conf, then of postgresql.auto.conf (later lines win, as in Postgres;
/// a configuration with `include` directives is refused: the zone may be set there), PostgreSQL's default GMT when none sets it.
/// `Err` when the directory has no postgresql.conf (the configuration lived elsewhere) or
/// the zone is not an IANA name.
pub(super) fn server_timezone(pgdata: &Path) -> Result<(String, Tz), RestoreError> {
    let conf = pgdata.join("postgresql.conf");
    let main = std::fs::read_to_string(&conf).map_err(|e| {
        RestoreError::refused(
            format!("cannot read the backup's timezone setting from {}: {e}", conf.display()),
            GIVE_AN_OFFSET,
        )
    })?;
    let auto = std::fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap_or_default();
    // An included file (CloudNativePG's custom.conf, a conf.d) may set the zone: guessing
    // without it could move the target by hours, so the user gives the offset instead.
    if let Some(include) = [&main, &auto].iter().flat_map(|text| text.lines()).find(|line| is_include(line)) {
        return Err(RestoreError::refused(
            format!(
                "the backup's configuration includes other files (\"{}\"), which may set its timezone",
                include.trim()
            ),
            GIVE_AN_OFFSET,
        ));
    }
    let name = [main, auto]
        .iter()
        .flat_map(|text| text.lines())
        .filter_map(timezone_line)
        .next_back()
        .unwrap_or_else(|| POSTGRES_DEFAULT_TIMEZONE.to_string());
    let zone = name
        .parse::<Tz>()
        .ok()
        .or_else(|| chrono_tz::TZ_VARIANTS.iter().copied().find(|tz| tz.name().eq_ignore_ascii_case(&name)));
    match zone {
        Some(zone) => Ok((name, zone)),
        None => Err(RestoreError::refused(
            format!("the backup's timezone '{name}' (postgresql.conf) is not an IANA time zone name pgops knows"),
            GIVE_AN_OFFSET,
        )),
    }
}

/// Whether a configuration line is an `include`, `include_if_exists` or `include_dir`.
fn is_include(line: &str) -> bool {
    let word = line.trim_start().split(|c: char| c.is_whitespace() || c == '=' || c == '\'').next().unwrap_or("");
    ["include", "include_if_exists", "include_dir"].iter().any(|directive| word.eq_ignore_ascii_case(directive))
}

/// The value of a `timezone = 'value'` (or `timezone value`) configuration line.
fn timezone_line(line: &str) -> Option<String> {
    let line = line.trim_start();
    let name_end = line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(line.len());
    if !line[..name_end].eq_ignore_ascii_case("timezone") {
        return None;
    }
    let rest = line[name_end..].trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    if let Some(quoted) = rest.strip_prefix('\'') {
        let mut value = String::new();
        let mut chars = quoted.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    value.push('\'');
                }
                '\'' => return Some(value),
                c => value.push(c),
            }
        }
        None
    } else {
        let value: String = rest.chars().take_while(|c| !c.is_whitespace() && *c != '#').collect();
        (!value.is_empty()).then_some(value)
    }
}

/// The instant of a local time in `zone`, as Postgres reads it: an ambiguous time (the
/// repeated hour when clocks go back) is standard time, the later instant; a time that
/// does not exist (skipped when clocks go forward) is read with the offset before the jump.
pub(super) fn instant_in(local: NaiveDateTime, zone: Tz) -> DateTime<Utc> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(at) => at.with_timezone(&Utc),
        LocalResult::Ambiguous(_, later) => later.with_timezone(&Utc),
        LocalResult::None => {
            let before = zone.from_utc_datetime(&(local - Duration::hours(3))).offset().fix();
            (local - Duration::seconds(before.local_minus_utc().into())).and_utc()
        }
    }
}

/// `recovery_target_time` as written: the instant in UTC with an explicit offset.
pub(super) fn postgres_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn an_offset_is_an_instant_and_none_is_local_time() {
        let at = |t: &str| match TargetTime::parse(t) {
            Some(TargetTime::At(at)) => at.to_rfc3339(),
            other => panic!("{t}: {other:?}"),
        };
        assert_eq!(at("2026-11-25 07:00:00.5+01:00"), "2026-11-25T06:00:00.500+00:00");
        assert_eq!(at("2026-11-25T07:00:00Z"), "2026-11-25T07:00:00+00:00");
        assert_eq!(at("2026-11-25 07:00:00-05"), "2026-11-25T12:00:00+00:00");
        assert_eq!(
            TargetTime::parse("2026-11-25 07:00:00.25"),
            Some(TargetTime::Local(local("2026-11-25 07:00:00") + Duration::milliseconds(250)))
        );
        assert_eq!(TargetTime::parse("yesterday"), None);
    }

    #[test]
    fn local_time_is_read_in_the_servers_zone_as_postgres_reads_it() {
        let ny: Tz = "America/New_York".parse().unwrap();
        assert_eq!(instant_in(local("2026-11-25 07:00:00"), ny).to_rfc3339(), "2026-11-25T12:00:00+00:00");
        // 2026-11-01 01:30 happens twice in New York: standard time (EST, -05) is meant.
        assert_eq!(instant_in(local("2026-11-01 01:30:00"), ny).to_rfc3339(), "2026-11-01T06:30:00+00:00");
        // 2026-03-08 02:30 does not exist: read with the offset before the jump (-05).
        assert_eq!(instant_in(local("2026-03-08 02:30:00"), ny).to_rfc3339(), "2026-03-08T07:30:00+00:00");
        let at = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap() + Duration::microseconds(5);
        assert_eq!(postgres_time(at), "2026-11-25 12:00:00.000005+00");
    }

    #[test]
    fn the_last_timezone_line_of_the_configuration_wins() {
        let dir = tempfile::tempdir().unwrap();
        assert!(server_timezone(dir.path()).unwrap_err().shown().contains("with an offset"));
        std::fs::write(dir.path().join("postgresql.conf"), "port = 5432\n").unwrap();
        assert_eq!(server_timezone(dir.path()).unwrap().0, "GMT", "Postgres' default");
        std::fs::write(
            dir.path().join("postgresql.conf"),
            "#timezone = 'Asia/Tokyo'\ntimezone = 'Europe/Paris'  # local\nTimeZone America/Chicago\n",
        )
        .unwrap();
        assert_eq!(server_timezone(dir.path()).unwrap().0, "America/Chicago");
        std::fs::write(dir.path().join("postgresql.auto.conf"), "timezone = 'america/new_york'\n").unwrap();
        assert_eq!(server_timezone(dir.path()).unwrap().1, chrono_tz::America::New_York);
        std::fs::write(dir.path().join("postgresql.auto.conf"), "timezone = '<+03>-03'\n").unwrap();
        assert!(server_timezone(dir.path()).unwrap_err().shown().contains("'<+03>-03'"));
        assert_eq!(timezone_line("timezone_abbreviations = 'Default'"), None);
        assert_eq!(timezone_line("timezone='it''s'"), Some("it's".into()));
        // A file an include names may set the zone: no guess, the user gives the offset.
        std::fs::write(dir.path().join("postgresql.auto.conf"), "").unwrap();
        for include in ["include 'custom.conf'", "include_dir = 'conf.d'", "  INCLUDE_IF_EXISTS 'x.conf'"] {
            std::fs::write(dir.path().join("postgresql.conf"), format!("timezone = 'UTC'\n{include}\n")).unwrap();
            let err = server_timezone(dir.path()).unwrap_err().shown();
            assert!(err.contains("includes other files") && err.contains("with an offset"), "{err}");
        }
        assert!(!is_include("include_something_else = 1") && !is_include("#include 'x'"));
    }
}
