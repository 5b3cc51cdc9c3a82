//! Times as the technician reads them. The wire carries Unix seconds (UTC); the technician sees
//! their own local time (`HH:MM`) and how far away it is ("in 59m", "2m10s ago").

use std::time::{SystemTime, UNIX_EPOCH};

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// Now, in Unix seconds.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `unix` as local `HH:MM`, with the date in front when it is not today's.
pub(crate) fn clock(unix: u64, now: u64) -> String {
    clock_in(unix, now, TimeZone::system())
}

fn clock_in(unix: u64, now: u64, zone: TimeZone) -> String {
    let at = |seconds: u64| {
        i64::try_from(seconds)
            .ok()
            .and_then(|seconds| Timestamp::from_second(seconds).ok())
            .map(|timestamp| timestamp.to_zoned(zone.clone()))
    };
    match (at(unix), at(now)) {
        (Some(time), Some(today)) if time.date() == today.date() => {
            time.strftime("%H:%M").to_string()
        }
        (Some(time), _) => time.strftime("%Y-%m-%d %H:%M").to_string(),
        // Beyond what a calendar can show: say it in seconds rather than nothing.
        (None, _) => format!("@{unix}"),
    }
}

/// How far ahead `unix` is: `in 59m`, `in 1h05m`, `in 45s`, `now`.
pub(crate) fn until(unix: u64, now: u64) -> String {
    match unix.saturating_sub(now) {
        0 => "now".to_owned(),
        left => format!("in {}", coarse(left)),
    }
}

/// How long ago `unix` was: `2m10s ago`, `just now`.
pub(crate) fn ago(unix: u64, now: u64) -> String {
    match now.saturating_sub(unix) {
        0 => "just now".to_owned(),
        past => format!("{} ago", precise(past)),
    }
}

/// `45s`, `2m10s`, `1h02m`: to the second under an hour.
pub(crate) fn precise(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s:02}s"),
        _ => format!("{h}h{m:02}m"),
    }
}

/// `45s`, `59m`, `1h`, `1h05m`: whole minutes once past a minute.
pub(crate) fn coarse(seconds: u64) -> String {
    let (h, m) = (seconds / 3600, (seconds % 3600) / 60);
    match (h, m) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{m}m"),
        (_, 0) => format!("{h}h"),
        _ => format!("{h}h{m:02}m"),
    }
}

/// A length as asked for: `1h`, `1h30m`, `45m`, `90s` as `1m30s`.
pub(crate) fn length(seconds: u64) -> String {
    proto::duration::format_duration(std::time::Duration::from_secs(seconds))
}

/// A countdown: `58:12`, `1:02:03`.
pub(crate) fn countdown(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m:02}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_of_today_are_hours_and_minutes_others_carry_the_date() {
        // 2025-03-04 05:06:07 UTC.
        let now = 1_741_064_767;
        assert_eq!(clock_in(now + 3600, now, TimeZone::UTC), "06:06");
        assert_eq!(
            clock_in(now - 86_400, now, TimeZone::UTC),
            "2025-03-03 05:06"
        );
        let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
        assert_eq!(clock_in(now, now, tokyo), "14:06");
        assert_eq!(
            clock_in(u64::MAX, now, TimeZone::UTC),
            format!("@{}", u64::MAX)
        );
    }

    #[test]
    fn distances_read_naturally() {
        assert_eq!(until(100 + 3599, 100), "in 59m");
        assert_eq!(until(100 + 3600, 100), "in 1h");
        assert_eq!(until(100 + 3900, 100), "in 1h05m");
        assert_eq!(until(145, 100), "in 45s");
        assert_eq!(until(50, 100), "now");
        assert_eq!(ago(100, 230), "2m10s ago");
        assert_eq!(ago(100, 100), "just now");
        assert_eq!(ago(100, 100 + 3725), "1h02m ago");
        assert_eq!(ago(200, 100), "just now");
    }

    #[test]
    fn lengths_and_countdowns() {
        assert_eq!(length(3600), "1h");
        assert_eq!(length(5400), "1h30m");
        assert_eq!(length(90), "1m30s");
        assert_eq!(length(0), "0s");
        assert_eq!(countdown(58 * 60 + 12), "58:12");
        assert_eq!(countdown(3723), "1:02:03");
        assert_eq!(countdown(0), "00:00");
    }
}
