//! Retention policies in Barman's words (barman/retention_policies.py: `REDUNDANCY n`,
//! `RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS`, case-insensitive, any spacing, the unit's
//! final `S` optional, a month being 31 days) plus the short forms CloudNativePG users
//! write (`30d`, `4w`, `6m`). [`Policy`]'s `Display` is Barman's canonical form, which
//! `barman-cloud-backup-delete --retention-policy` reads.

use crate::InvalidSetting;
use chrono::TimeDelta;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowUnit {
    Days,
    Weeks,
    /// 31 days, as Barman counts a month.
    Months,
}

impl WindowUnit {
    fn days(self) -> i64 {
        match self {
            WindowUnit::Days => 1,
            WindowUnit::Weeks => 7,
            WindowUnit::Months => 31,
        }
    }

    fn barman_word(self) -> &'static str {
        match self {
            WindowUnit::Days => "DAYS",
            WindowUnit::Weeks => "WEEKS",
            WindowUnit::Months => "MONTHS",
        }
    }

    /// Barman's `(day|month|week)s?`, already lowercased.
    fn from_word(word: &str) -> Option<WindowUnit> {
        match word.strip_suffix('s').unwrap_or(word) {
            "day" => Some(WindowUnit::Days),
            "week" => Some(WindowUnit::Weeks),
            "month" => Some(WindowUnit::Months),
            _ => None,
        }
    }

    /// CloudNativePG's short-form letters.
    fn from_letter(letter: char) -> Option<WindowUnit> {
        match letter {
            'd' => Some(WindowUnit::Days),
            'w' => Some(WindowUnit::Weeks),
            'm' => Some(WindowUnit::Months),
            _ => None,
        }
    }
}

/// Which backups (and so which WAL) retention keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Keep what restoring to any point of the last `count` units needs: the newest DONE
    /// backup that ended before the window began, and everything newer.
    RecoveryWindow { count: u32, unit: WindowUnit },
    /// Keep the newest `count` DONE backups.
    Redundancy(u32),
}

const HINT: &str = "Use 'RECOVERY WINDOW OF <n> DAYS' (or WEEKS, MONTHS), 'REDUNDANCY <n>', \
                    the short forms '<n>d', '<n>w', '<n>m' (such as '30d'), or '' to keep every backup.";

/// Why a policy's count is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum BadCount {
    #[error("\"{0}\" is not a number")]
    NotANumber(String),
    #[error("{0} is too large (at most {max})", max = u32::MAX)]
    TooLarge(String),
}

/// A number as Barman's `\d+` reads it: digits only, no sign.
fn number(text: &str) -> Result<u32, BadCount> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadCount::NotANumber(text.to_string()));
    }
    text.parse().map_err(|_| BadCount::TooLarge(text.to_string()))
}

impl Policy {
    /// Reads a policy; an empty (or all-space) text is `None`: keep everything.
    pub fn parse(text: &str) -> Result<Option<Policy>, InvalidSetting> {
        let invalid = |why: String| InvalidSetting::new(format!("invalid retention policy \"{text}\": {why}"), HINT);
        let words: Vec<String> = text.split_whitespace().map(str::to_ascii_lowercase).collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let policy = match words.as_slice() {
            [] => return Ok(None),
            ["redundancy", count] => match number(count).map_err(|bad| invalid(bad.to_string()))? {
                // Barman accepts it and leans on minimum_redundancy; pgops never plans to
                // delete every backup.
                0 => return Err(invalid("REDUNDANCY 0 would keep no backup (pgops refuses it, unlike Barman)".into())),
                count => Policy::Redundancy(count),
            },
            ["recovery", "window", "of", count, unit] => Policy::RecoveryWindow {
                count: number(count).map_err(|bad| invalid(bad.to_string()))?,
                unit: WindowUnit::from_word(unit)
                    .ok_or_else(|| invalid(format!("\"{unit}\" is not DAYS, WEEKS or MONTHS")))?,
            },
            [short] => {
                let (count, letter) = short.split_at(short.len() - short.chars().last().map_or(0, char::len_utf8));
                let unit = letter
                    .chars()
                    .next()
                    .and_then(WindowUnit::from_letter)
                    .ok_or_else(|| invalid("a short form ends in d, w or m".into()))?;
                let count = number(count).map_err(|bad| invalid(bad.to_string()))?;
                if count == 0 {
                    return Err(invalid("a short form's window is at least 1".into()));
                }
                Policy::RecoveryWindow { count, unit }
            }
            _ => return Err(invalid("not a policy pgops knows".into())),
        };
        Ok(Some(policy))
    }

    /// The length of a recovery window; `None` for a redundancy policy or a window too
    /// long to compute with (which keeps every backup).
    pub fn window(&self) -> Option<TimeDelta> {
        match self {
            Policy::RecoveryWindow { count, unit } => TimeDelta::try_days(i64::from(*count) * unit.days()),
            Policy::Redundancy(_) => None,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::RecoveryWindow { count, unit } => write!(f, "RECOVERY WINDOW OF {count} {}", unit.barman_word()),
            Policy::Redundancy(count) => write!(f, "REDUNDANCY {count}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Policy {
        Policy::parse(text).unwrap().unwrap_or_else(|| panic!("{text}: no policy"))
    }

    #[test]
    fn barman_forms_in_any_case_and_spacing() {
        let window = |count, unit| Policy::RecoveryWindow { count, unit };
        assert_eq!(parse("RECOVERY WINDOW OF 30 DAYS"), window(30, WindowUnit::Days));
        assert_eq!(parse("  recovery   Window of\t4 weeks "), window(4, WindowUnit::Weeks));
        assert_eq!(parse("RECOVERY WINDOW OF 6 MONTHS"), window(6, WindowUnit::Months));
        // Barman's `(day|month|week)s?`: the singular too.
        assert_eq!(parse("RECOVERY WINDOW OF 1 DAY"), window(1, WindowUnit::Days));
        assert_eq!(parse("recovery window of 1 month"), window(1, WindowUnit::Months));
        assert_eq!(parse("REDUNDANCY 7"), Policy::Redundancy(7));
        assert_eq!(parse(" redundancy  7 "), Policy::Redundancy(7));
    }

    #[test]
    fn short_forms() {
        assert_eq!(parse("30d"), Policy::RecoveryWindow { count: 30, unit: WindowUnit::Days });
        assert_eq!(parse("4w"), Policy::RecoveryWindow { count: 4, unit: WindowUnit::Weeks });
        assert_eq!(parse(" 6M "), Policy::RecoveryWindow { count: 6, unit: WindowUnit::Months });
    }

    #[test]
    fn empty_keeps_everything() {
        assert_eq!(Policy::parse("").unwrap(), None);
        assert_eq!(Policy::parse("   ").unwrap(), None);
    }

    #[test]
    fn display_is_barmans_canonical_form() {
        for (text, canonical) in [
            ("30d", "RECOVERY WINDOW OF 30 DAYS"),
            ("4w", "RECOVERY WINDOW OF 4 WEEKS"),
            ("6m", "RECOVERY WINDOW OF 6 MONTHS"),
            ("recovery window of 1 day", "RECOVERY WINDOW OF 1 DAYS"),
            (" redundancy 7", "REDUNDANCY 7"),
        ] {
            assert_eq!(parse(text).to_string(), canonical);
            assert_eq!(parse(canonical), parse(text), "the canonical form reads back");
        }
    }

    #[test]
    fn windows_count_a_month_as_31_days_as_barman_does() {
        assert_eq!(parse("6m").window(), Some(TimeDelta::days(186)));
        assert_eq!(parse("2w").window(), Some(TimeDelta::days(14)));
        assert_eq!(parse("RECOVERY WINDOW OF 30 DAYS").window(), Some(TimeDelta::days(30)));
        assert_eq!(parse("REDUNDANCY 3").window(), None);
    }

    #[test]
    fn anything_else_is_an_error_saying_what_is_accepted() {
        for bad in [
            "30",
            "30 days",
            "30x",
            "0d",
            "d",
            "-5d",
            "REDUNDANCY",
            "REDUNDANCY 0",
            "REDUNDANCY +5",
            "REDUNDANCY -1",
            "REDUNDANCY 5 backups",
            "REDUNDANCY 99999999999",
            "RECOVERY WINDOW OF 30 YEARS",
            "RECOVERY WINDOW 30 DAYS",
            "RECOVERY WINDOW OF 30DAYS",
            "keep 7",
        ] {
            let err = Policy::parse(bad).unwrap_err();
            assert!(err.message.contains(&format!("\"{bad}\"")), "{bad}: {}", err.message);
            assert!(err.hint.contains("RECOVERY WINDOW OF") && err.hint.contains("30d"), "{bad}: {}", err.hint);
        }
        let err = Policy::parse("RECOVERY WINDOW OF 3 YEARS").unwrap_err();
        assert!(err.message.contains("\"years\" is not DAYS, WEEKS or MONTHS"), "{}", err.message);
    }
}
