//! End times as approvers type them: `--for 1h30m`, `--until 14:30`,
//! `--until "2026-11-21 14:30"` (the hospital's time zone) or `--until 2026-11-21T14:30:00+09:00`.

use std::time::SystemTime;

use jiff::Timestamp;
use jiff::civil::{DateTime, Time};

use super::CliError;
use crate::approval::Until;
use crate::session::HospitalZone;

pub use proto::duration::parse_duration;

/// Parses an end time typed by an approver, in the hospital's zone:
///
/// - `HH:MM`: today; refused if that time has passed.
/// - `YYYY-MM-DD HH:MM` (or with `T`, or with seconds).
/// - RFC 3339 with an offset: `2026-11-21T14:30:00+09:00`, `2026-11-21T05:30:00Z`.
pub fn parse_end_time(
    text: &str,
    zone: &HospitalZone,
    now: SystemTime,
) -> Result<SystemTime, CliError> {
    let text = text.trim();
    let not_a_time = || {
        CliError::Input(format!(
            "`{}` is not a time; write HH:MM (today), \"YYYY-MM-DD HH:MM\" (both in {}) or an RFC 3339 time such as 2026-11-21T14:30:00+09:00.",
            super::clean(text),
            zone.name()
        ))
    };
    if let Ok(time) = Time::strptime("%H:%M", text) {
        let today = Timestamp::try_from(now)
            .map_err(|_| not_a_time())?
            .to_zoned(zone.zone().clone())
            .date();
        let at = today
            .to_datetime(time)
            .to_zoned(zone.zone().clone())
            .map_err(|_| not_a_time())?;
        let at = SystemTime::from(at.timestamp());
        if at <= now {
            return Err(CliError::Input(format!(
                "{text} today ({}) has already passed; give a later time, or a date and time as \"YYYY-MM-DD HH:MM\".",
                zone.name()
            )));
        }
        return Ok(at);
    }
    if let Ok(timestamp) = text.parse::<Timestamp>() {
        return Ok(SystemTime::from(timestamp));
    }
    // A date alone would mean midnight, which nobody means by an end time.
    if !text.contains(':') {
        return Err(not_a_time());
    }
    let civil = text.parse::<DateTime>().map_err(|_| not_a_time())?;
    let zoned = civil
        .to_zoned(zone.zone().clone())
        .map_err(|_| not_a_time())?;
    Ok(SystemTime::from(zoned.timestamp()))
}

/// The longest `--for`: a day, the longest `max_session` a policy may give. Checked here, so
/// that no later arithmetic on the time meets an absurd duration.
pub(super) const MAX_FOR: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The end time given with `--for DURATION` or `--until TIME` (exactly one of them).
pub fn end_time(
    for_duration: Option<&str>,
    until: Option<&str>,
    zone: &HospitalZone,
    now: SystemTime,
) -> Result<Until, CliError> {
    match (for_duration, until) {
        (Some(text), None) => match parse_duration(text.trim()) {
            Some(duration) if duration > MAX_FOR => Err(CliError::Input(format!(
                "--for {} is longer than any session may last; give at most 24h.",
                super::clean(text.trim())
            ))),
            Some(duration) if !duration.is_zero() => Ok(Until::For(duration)),
            Some(_) => Err(CliError::Input(
                "--for must be longer than zero, e.g. 30m or 1h.".to_owned(),
            )),
            None => Err(CliError::Input(format!(
                "`{}` is not a duration; write it like 30m, 1h30m or 2h.",
                super::clean(text)
            ))),
        },
        (None, Some(text)) => parse_end_time(text, zone, now).map(Until::At),
        _ => Err(CliError::Input(
            "Give the end time with either --for DURATION or --until TIME.".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokyo() -> HospitalZone {
        HospitalZone::resolve("Asia/Tokyo").unwrap()
    }

    /// 2026-11-21 10:00 Asia/Tokyo (a Saturday), as a system time.
    fn saturday_ten() -> SystemTime {
        SystemTime::from("2026-11-21T01:00:00Z".parse::<Timestamp>().unwrap())
    }

    fn minutes(n: u64) -> std::time::Duration {
        std::time::Duration::from_secs(n * 60)
    }

    #[test]
    fn durations_in_each_documented_form_parse() {
        assert_eq!(parse_duration("30m"), Some(minutes(30)));
        assert_eq!(parse_duration("1h30m"), Some(minutes(90)));
        assert_eq!(parse_duration("2h"), Some(minutes(120)));
        assert_eq!(
            parse_duration("45s"),
            Some(std::time::Duration::from_secs(45))
        );
        for refused in [
            "",
            "2",
            "h",
            "1h1h",
            "30m1h",
            "1.5h",
            "2 h",
            "-1h",
            "1w",
            "9".repeat(30).as_str(),
        ] {
            assert_eq!(parse_duration(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn a_clock_time_means_today_in_the_hospital_zone() {
        let now = saturday_ten();
        let at = parse_end_time("14:30", &tokyo(), now).unwrap();
        assert_eq!(at.duration_since(now).unwrap(), minutes(270));
        assert_eq!(tokyo().format(at), "2026-11-21 14:30 (Sat)");
    }

    #[test]
    fn a_clock_time_that_has_passed_today_is_refused() {
        let error = parse_end_time("09:59", &tokyo(), saturday_ten()).unwrap_err();
        assert!(error.to_string().contains("already passed"), "{error}");
        assert!(parse_end_time("10:00", &tokyo(), saturday_ten()).is_err());
    }

    #[test]
    fn dates_are_read_in_the_hospital_zone_and_offsets_are_respected() {
        let now = saturday_ten();
        let expected = now + minutes(270);
        for text in [
            "2026-11-21 14:30",
            "2026-11-21T14:30",
            "2026-11-21 14:30:00",
            "2026-11-21T14:30:00+09:00",
            "2026-11-21T05:30:00Z",
        ] {
            assert_eq!(
                parse_end_time(text, &tokyo(), now).unwrap(),
                expected,
                "{text}"
            );
        }
    }

    #[test]
    fn things_that_are_not_times_are_refused_with_the_forms_that_work() {
        for text in ["tomorrow", "2026-11-21", "25:00", "14h30", ""] {
            let error = parse_end_time(text, &tokyo(), saturday_ten()).unwrap_err();
            assert!(error.to_string().contains("HH:MM"), "{text}: {error}");
        }
    }

    #[test]
    fn exactly_one_of_for_and_until_gives_the_end() {
        let now = saturday_ten();
        assert_eq!(
            end_time(Some("1h"), None, &tokyo(), now).unwrap(),
            Until::For(minutes(60))
        );
        assert_eq!(
            end_time(None, Some("14:30"), &tokyo(), now).unwrap(),
            Until::At(now + minutes(270))
        );
        assert!(end_time(Some("0m"), None, &tokyo(), now).is_err());
        assert!(end_time(Some("24h"), None, &tokyo(), now).is_ok());
        for absurd in ["24h1m", "99999999999h", "5124095576030431h"] {
            let error = end_time(Some(absurd), None, &tokyo(), now).unwrap_err();
            assert!(
                error.to_string().contains("at most 24h"),
                "{absurd}: {error}"
            );
        }
        assert!(end_time(Some("3 hours"), None, &tokyo(), now).is_err());
        assert!(end_time(None, None, &tokyo(), now).is_err());
        assert!(end_time(Some("1h"), Some("14:30"), &tokyo(), now).is_err());
    }
}
