//! Allowed hours over a span of time, in the hospital's time zone.

use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::policy::WeeklyHours;

/// The hospital's time zone, resolved from its IANA name.
#[derive(Debug, Clone)]
pub struct HospitalZone {
    name: String,
    zone: TimeZone,
}

impl HospitalZone {
    /// Resolves an IANA name such as `Asia/Tokyo` from the bundled time-zone database.
    pub fn resolve(name: &str) -> Result<HospitalZone, String> {
        TimeZone::get(name)
            .map(|zone| HospitalZone {
                name: name.to_owned(),
                zone,
            })
            .map_err(|_| format!("`{name}` is not a time zone name this broker knows (e.g. \"Asia/Tokyo\", \"UTC\")"))
    }

    /// The IANA name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Day of week (0 = Monday) and minute of the day at `time`, in this zone.
    pub fn weekday_and_minute(&self, time: SystemTime) -> Option<(u8, u16)> {
        let zoned = Timestamp::try_from(time).ok()?.to_zoned(self.zone.clone());
        let weekday = u8::try_from(zoned.weekday().to_monday_zero_offset()).ok()?;
        let minute =
            u16::try_from(i32::from(zoned.hour()) * 60 + i32::from(zoned.minute())).ok()?;
        Some((weekday, minute))
    }

    /// The calendar date at `time`, in this zone.
    pub fn date(&self, time: SystemTime) -> Option<jiff::civil::Date> {
        Some(
            Timestamp::try_from(time)
                .ok()?
                .to_zoned(self.zone.clone())
                .date(),
        )
    }

    /// `2026-11-21 14:30 (Sat)`, in this zone.
    pub fn format(&self, time: SystemTime) -> String {
        match Timestamp::try_from(time) {
            Ok(timestamp) => timestamp
                .to_zoned(self.zone.clone())
                .strftime("%Y-%m-%d %H:%M (%a)")
                .to_string(),
            Err(_) => "?".to_owned(),
        }
    }

    /// The zone itself, for parsing times typed in it.
    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }
}

/// Checks that every minute of `[start, end)` lies within `hours`; otherwise describes the
/// first minute outside them.
pub fn check_hours(
    hours: &WeeklyHours,
    zone: &HospitalZone,
    start: SystemTime,
    end: SystemTime,
) -> Result<(), String> {
    const MINUTE: Duration = Duration::from_secs(60);
    let mut at = start;
    loop {
        let inside = zone
            .weekday_and_minute(at)
            .is_some_and(|(weekday, minute)| hours.contains(weekday, minute));
        if !inside {
            return Err(if at == start {
                format!("now, {},", zone.format(at))
            } else {
                zone.format(at)
            });
        }
        // Step a minute at a time (at most 1,440 steps for the longest session), and check
        // the last minute before the end as well.
        let next = at + MINUTE;
        if next >= end {
            let last = end.checked_sub(Duration::from_secs(1)).unwrap_or(end);
            if last > at {
                at = last;
                let inside = zone
                    .weekday_and_minute(at)
                    .is_some_and(|(weekday, minute)| hours.contains(weekday, minute));
                if !inside {
                    return Err(format!("the end time {}", zone.format(end)));
                }
            }
            return Ok(());
        }
        at = next;
    }
}

/// The first minute of `[from, to)` that `access` no longer allows (outside its hours, or on
/// one of its holidays), if any: where a live session must end when a reload tightens them.
/// `from` itself when it is already outside.
pub fn first_disallowed(
    access: &crate::policy::Access,
    zone: &HospitalZone,
    from: SystemTime,
    to: SystemTime,
) -> Option<SystemTime> {
    const MINUTE: Duration = Duration::from_secs(60);
    if access.hours.is_none() && access.holidays.is_empty() {
        return None;
    }
    let allowed = |at: SystemTime| {
        let in_hours = access.hours.as_ref().is_none_or(|hours| {
            zone.weekday_and_minute(at)
                .is_some_and(|(weekday, minute)| hours.contains(weekday, minute))
        });
        let holiday = zone.date(at).is_some_and(|date| access.is_holiday(date));
        in_hours && !holiday
    };
    // A minute at a time, from the start of `from`'s minute: at most 1,440 steps for the
    // longest session.
    let mut at = from;
    while at < to {
        if !allowed(at) {
            return Some(at);
        }
        let seconds = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() % 60)
            .unwrap_or(0);
        at += MINUTE - Duration::from_secs(seconds);
    }
    None
}

/// Checks that no day of `[start, end)` is one of `holidays` (in the hospital's zone);
/// otherwise names the first one.
pub fn check_holidays(
    holidays: &[jiff::civil::Date],
    zone: &HospitalZone,
    start: SystemTime,
    end: SystemTime,
) -> Result<(), jiff::civil::Date> {
    if holidays.is_empty() {
        return Ok(());
    }
    let last = end
        .checked_sub(Duration::from_secs(1))
        .unwrap_or(end)
        .max(start);
    let (Some(mut day), Some(last_day)) = (zone.date(start), zone.date(last)) else {
        return Ok(());
    };
    loop {
        if holidays.binary_search(&day).is_ok() {
            return Err(day);
        }
        match day.tomorrow() {
            Ok(next) if next <= last_day => day = next,
            _ => return Ok(()),
        }
    }
}
