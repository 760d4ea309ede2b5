//! The backup schedule: a cron expression with seconds (`0 0 2 * * *`, the form
//! CloudNativePG's ScheduledBackup uses; the classic 5-field form is accepted too),
//! evaluated in a time zone (UTC unless told otherwise).

use crate::InvalidSetting;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;

const FORM_HINT: &str = "Use six fields: second minute hour day-of-month month day-of-week, for example '0 0 2 * * *' (every day at 02:00:00); the five-field form without seconds is accepted too. An empty value disables the schedule.";

#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    zone: Tz,
}

/// The time zone named by `pgops.schedule_timezone`.
pub fn parse_zone(name: &str) -> Result<Tz, InvalidSetting> {
    name.parse::<Tz>().map_err(|_| {
        InvalidSetting::new(
            format!("unknown time zone \"{name}\""),
            "Use an IANA time zone name such as 'UTC' or 'Europe/Paris'.",
        )
    })
}

/// Parses a schedule; `None` for an empty expression (no schedule).
pub fn parse(expression: &str, zone: &str) -> Result<Option<Schedule>, InvalidSetting> {
    let expression = expression.trim();
    if expression.is_empty() {
        return Ok(None);
    }
    let fields = expression.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(InvalidSetting::new(
            format!("invalid backup schedule \"{expression}\": {fields} fields"),
            FORM_HINT,
        ));
    }
    let cron = CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(expression)
        .map_err(|e| InvalidSetting::new(format!("invalid backup schedule \"{expression}\": {e}"), FORM_HINT))?;
    Ok(Some(Schedule { cron, zone: parse_zone(zone)? }))
}

impl Schedule {
    /// The first time strictly after `after` that the schedule fires.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.zone);
        self.cron.find_next_occurrence(&local, false).ok().map(|t| t.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn six_and_five_fields_in_a_time_zone() {
        let at = Utc.with_ymd_and_hms(2026, 11, 25, 1, 59, 59).unwrap();
        let daily = parse("0 0 2 * * *", "UTC").unwrap().unwrap();
        assert_eq!(daily.next_after(at), Some(Utc.with_ymd_and_hms(2026, 11, 25, 2, 0, 0).unwrap()));
        // Strictly after: firing time itself is not the next one.
        let fired = Utc.with_ymd_and_hms(2026, 11, 25, 2, 0, 0).unwrap();
        assert_eq!(daily.next_after(fired), Some(Utc.with_ymd_and_hms(2026, 11, 26, 2, 0, 0).unwrap()));
        let five = parse("30 3 * * *", "UTC").unwrap().unwrap();
        assert_eq!(five.next_after(at), Some(Utc.with_ymd_and_hms(2026, 11, 25, 3, 30, 0).unwrap()));
        let every_3s = parse("*/3 * * * * *", "UTC").unwrap().unwrap();
        assert_eq!(every_3s.next_after(at), Some(Utc.with_ymd_and_hms(2026, 11, 25, 2, 0, 0).unwrap()));
        // 02:00 in Paris (UTC+1 in November) is 01:00 UTC.
        let paris = parse("0 0 2 * * *", "Europe/Paris").unwrap().unwrap();
        assert_eq!(paris.next_after(at), Some(Utc.with_ymd_and_hms(2026, 11, 26, 1, 0, 0).unwrap()));
        assert!(parse("  ", "UTC").unwrap().is_none());
    }

    #[test]
    fn bad_expressions_say_the_expected_form() {
        for bad in ["0 0 2 * *  * 2026", "61 * * * * *", "every day", "0 0 25 * * *"] {
            let err = parse(bad, "UTC").unwrap_err();
            assert!(err.message.contains("invalid backup schedule"), "{bad}: {}", err.message);
            assert!(err.hint.contains("'0 0 2 * * *'"), "{bad}");
        }
        assert!(parse("0 0 2 * * *", "Mars/Olympus").unwrap_err().message.contains("unknown time zone"));
    }
}
