//! Weekly access hours such as `"Mon-Fri 08:00-20:00; Sat 10:00-12:00"`.

use std::fmt;
use std::str::FromStr;

const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MINUTES_PER_DAY: u16 = 24 * 60;

/// Weekly windows in the hospital's local time, e.g. `"Mon-Fri 08:00-20:00"`.
///
/// Syntax: windows separated by `;`. Each window is a day spec and a time range separated
/// by whitespace. The day spec is `any`, or a comma-separated list of days (`Mon` … `Sun`)
/// and forward day ranges (`Mon-Fri`). The time range is `HH:MM-HH:MM`, start inclusive,
/// end exclusive, `24:00` allowed as an end. A window never crosses midnight; write
/// `Mon 22:00-24:00; Tue 00:00-02:00` instead. Day names are matched case-insensitively and
/// rendered back as `Mon`, so `Display` output parses back to an equal value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeeklyHours {
    /// Never empty.
    windows: Vec<Window>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Window {
    days: Days,
    /// Minute of day, `start < end <= 1440`.
    start: u16,
    end: u16,
}

/// Kept as written (rather than as a set of weekdays) so that `Display` gives back the
/// administrator's own spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Days {
    Any,
    /// Never empty.
    List(Vec<DayItem>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DayItem {
    /// 0 = Monday.
    One(u8),
    /// Inclusive, `first < last`.
    Range(u8, u8),
}

impl WeeklyHours {
    /// Whether the moment is inside one of the windows. `weekday` 0 = Monday … 6 = Sunday,
    /// `minute_of_day` 0..1440, both in the hospital timezone; anything out of range is
    /// outside.
    pub fn contains(&self, weekday: u8, minute_of_day: u16) -> bool {
        weekday < 7
            && minute_of_day < MINUTES_PER_DAY
            && self.windows.iter().any(|window| {
                window.days.contains(weekday)
                    && window.start <= minute_of_day
                    && minute_of_day < window.end
            })
    }
}

impl Days {
    fn contains(&self, weekday: u8) -> bool {
        match self {
            Days::Any => true,
            Days::List(items) => items.iter().any(|item| match *item {
                DayItem::One(day) => day == weekday,
                DayItem::Range(first, last) => first <= weekday && weekday <= last,
            }),
        }
    }
}

/// Why a `hours` value was refused: a sentence fragment about the value, e.g.
/// ``"`Mun` is not a day; use Mon, Tue, Wed, Thu, Fri, Sat, Sun or any"``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseHoursError(String);

impl FromStr for WeeklyHours {
    type Err = ParseHoursError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().is_empty() {
            return Err(ParseHoursError(
                "is empty; leave `hours` out to allow any time".to_owned(),
            ));
        }
        let windows = text
            .split(';')
            .map(parse_window)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(WeeklyHours { windows })
    }
}

fn parse_window(text: &str) -> Result<Window, ParseHoursError> {
    if text.trim().is_empty() {
        return Err(ParseHoursError(
            "has an empty window; separate windows with a single \";\"".to_owned(),
        ));
    }
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [days, times] = parts[..] else {
        return Err(ParseHoursError(format!(
            "has the window `{}`, but a window is days and times like \"Mon-Fri 08:00-20:00\"",
            text.trim()
        )));
    };
    let days = parse_days(days)?;
    let (start, end) = parse_time_range(times)?;
    Ok(Window { days, start, end })
}

fn parse_days(text: &str) -> Result<Days, ParseHoursError> {
    if text.eq_ignore_ascii_case("any") {
        return Ok(Days::Any);
    }
    let items = text
        .split(',')
        .map(|item| match item.split_once('-') {
            None => parse_day(item).map(DayItem::One),
            Some((first, last)) => {
                let (first, last) = (parse_day(first)?, parse_day(last)?);
                if first < last {
                    Ok(DayItem::Range(first, last))
                } else {
                    Err(ParseHoursError(format!(
                        "has the day range `{item}`, which does not run forward from Mon to Sun; \
                         write it like \"Fri-Sun,Mon\""
                    )))
                }
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Days::List(items))
}

fn parse_day(text: &str) -> Result<u8, ParseHoursError> {
    (0u8..)
        .zip(DAY_NAMES)
        .find(|(_, name)| name.eq_ignore_ascii_case(text))
        .map(|(day, _)| day)
        .ok_or_else(|| {
            ParseHoursError(format!(
                "has `{text}`, which is not a day; use Mon, Tue, Wed, Thu, Fri, Sat, Sun or any"
            ))
        })
}

fn parse_time_range(text: &str) -> Result<(u16, u16), ParseHoursError> {
    let Some((start, end)) = text.split_once('-') else {
        return Err(ParseHoursError(format!(
            "has `{text}`, but times are a range like \"08:00-20:00\""
        )));
    };
    let (start, end) = (parse_time(start, text)?, parse_time(end, text)?);
    if start == MINUTES_PER_DAY {
        return Err(ParseHoursError(format!(
            "has `{text}`, which starts at 24:00; a window starts before midnight"
        )));
    }
    if start == end {
        return Err(ParseHoursError(format!(
            "has `{text}`, which is empty; the end must be after the start"
        )));
    }
    if start > end {
        return Err(ParseHoursError(format!(
            "has `{text}`, which crosses midnight; split it like \"Mon 22:00-24:00; Tue 00:00-02:00\""
        )));
    }
    Ok((start, end))
}

/// `H:MM` or `HH:MM`, 00:00 to 24:00, as a minute of day. `range` is what the error shows
/// when `text` is empty (as in `-1:00-02:00`).
fn parse_time(text: &str, range: &str) -> Result<u16, ParseHoursError> {
    let minute_of_day = || {
        let (hours, minutes) = text.split_once(':')?;
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !(all_digits(hours) && hours.len() <= 2 && all_digits(minutes) && minutes.len() == 2) {
            return None;
        }
        let (hours, minutes): (u16, u16) = (hours.parse().ok()?, minutes.parse().ok()?);
        let total = hours * 60 + minutes;
        (minutes < 60 && total <= MINUTES_PER_DAY).then_some(total)
    };
    minute_of_day().ok_or_else(|| {
        let text = if text.is_empty() { range } else { text };
        ParseHoursError(format!(
            "has `{text}`, which is not a time of day from 00:00 to 24:00 like \"08:00\""
        ))
    })
}

impl fmt::Display for WeeklyHours {
    /// The input syntax, windows separated by `"; "`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, window) in self.windows.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "{} {}-{}",
                window.days,
                Clock(window.start),
                Clock(window.end)
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Days {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items = match self {
            Days::Any => return f.write_str("any"),
            Days::List(items) => items,
        };
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match *item {
                DayItem::One(day) => f.write_str(day_name(day))?,
                DayItem::Range(first, last) => write!(f, "{}-{}", day_name(first), day_name(last))?,
            }
        }
        Ok(())
    }
}

fn day_name(day: u8) -> &'static str {
    DAY_NAMES.get(usize::from(day)).copied().unwrap_or("?")
}

/// A minute of day as `HH:MM`.
struct Clock(u16);

impl fmt::Display for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MON: u8 = 0;
    const WED: u8 = 2;
    const FRI: u8 = 4;
    const SAT: u8 = 5;
    const SUN: u8 = 6;

    fn hours(text: &str) -> WeeklyHours {
        text.parse().unwrap()
    }

    fn at(h: u16, m: u16) -> u16 {
        h * 60 + m
    }

    #[test]
    fn start_is_inclusive_and_end_is_exclusive() {
        let office = hours("Mon-Fri 08:00-20:00");
        assert!(!office.contains(MON, at(7, 59)));
        assert!(office.contains(MON, at(8, 0)));
        assert!(office.contains(MON, at(19, 59)));
        assert!(!office.contains(MON, at(20, 0)));
    }

    #[test]
    fn a_day_range_includes_both_ends_and_nothing_else() {
        let office = hours("Mon-Fri 08:00-20:00");
        assert!(office.contains(MON, at(12, 0)));
        assert!(office.contains(FRI, at(12, 0)));
        assert!(!office.contains(SAT, at(12, 0)));
        assert!(!office.contains(SUN, at(12, 0)));
    }

    #[test]
    fn day_lists_include_only_the_listed_days() {
        let h = hours("Mon,Wed,Fri 09:00-17:00");
        for (day, expected) in [
            (0, true),
            (1, false),
            (2, true),
            (3, false),
            (4, true),
            (5, false),
            (6, false),
        ] {
            assert_eq!(h.contains(day, at(9, 0)), expected, "day {day}");
        }
    }

    #[test]
    fn lists_may_mix_days_and_ranges() {
        let h = hours("Mon-Tue,Thu,Sat-Sun 10:00-11:00");
        let days: Vec<u8> = (0..7).filter(|&d| h.contains(d, at(10, 30))).collect();
        assert_eq!(days, [0, 1, 3, 5, 6]);
    }

    #[test]
    fn a_window_ending_at_24_00_covers_the_last_minute_of_the_day() {
        let h = hours("Sat 22:00-24:00");
        assert!(h.contains(SAT, 1439));
        assert!(!h.contains(SUN, 0));
        let always = hours("any 00:00-24:00");
        for day in 0..7 {
            assert!(always.contains(day, 0));
            assert!(always.contains(day, 1439));
        }
    }

    #[test]
    fn out_of_range_moments_are_outside() {
        let always = hours("any 00:00-24:00");
        assert!(!always.contains(7, 0));
        assert!(!always.contains(0, 1440));
        assert!(!always.contains(u8::MAX, u16::MAX));
    }

    #[test]
    fn several_windows_are_each_honoured() {
        let h = hours("Mon-Fri 08:00-12:00; Mon-Fri 13:00-17:00;Sat 10:00-12:00");
        assert!(h.contains(WED, at(11, 59)));
        assert!(!h.contains(WED, at(12, 30)));
        assert!(h.contains(WED, at(13, 0)));
        assert!(h.contains(SAT, at(10, 0)));
        assert!(!h.contains(SAT, at(12, 0)));
        assert!(!h.contains(SUN, at(11, 0)));
    }

    #[test]
    fn display_renders_the_input_syntax_and_parses_back() {
        for text in [
            "Mon-Fri 08:00-20:00",
            "Mon,Wed,Fri 09:00-17:00",
            "Sat 10:00-12:00",
            "any 00:00-24:00",
            "Mon-Tue,Thu,Sat-Sun 00:01-23:59",
            "Mon-Fri 08:00-12:00; Sat 10:00-12:00",
        ] {
            let parsed = hours(text);
            assert_eq!(parsed.to_string(), text);
            assert_eq!(hours(&parsed.to_string()), parsed);
        }
    }

    #[test]
    fn display_normalises_spelling_and_spacing() {
        assert_eq!(
            hours("  mon-FRI   8:00-20:00 ;ANY 00:00-01:00").to_string(),
            "Mon-Fri 08:00-20:00; any 00:00-01:00"
        );
    }

    #[test]
    fn malformed_hours_are_refused_with_a_reason() {
        let err = |text: &str| text.parse::<WeeklyHours>().unwrap_err().to_string();
        assert_eq!(err(""), "is empty; leave `hours` out to allow any time");
        assert_eq!(
            err("Mon-Fri"),
            "has the window `Mon-Fri`, but a window is days and times like \"Mon-Fri 08:00-20:00\""
        );
        assert_eq!(
            err("Mon - Fri 08:00-20:00"),
            "has the window `Mon - Fri 08:00-20:00`, but a window is days and times like \"Mon-Fri 08:00-20:00\""
        );
        assert_eq!(
            err("Mon 08:00-10:00;"),
            "has an empty window; separate windows with a single \";\""
        );
        assert_eq!(
            err("Mun 08:00-20:00"),
            "has `Mun`, which is not a day; use Mon, Tue, Wed, Thu, Fri, Sat, Sun or any"
        );
        assert_eq!(
            err("Mon,,Tue 08:00-20:00"),
            "has ``, which is not a day; use Mon, Tue, Wed, Thu, Fri, Sat, Sun or any"
        );
        assert_eq!(
            err("Fri-Mon 08:00-20:00"),
            "has the day range `Fri-Mon`, which does not run forward from Mon to Sun; write it like \"Fri-Sun,Mon\""
        );
        assert_eq!(
            err("Mon-Mon 08:00-20:00"),
            "has the day range `Mon-Mon`, which does not run forward from Mon to Sun; write it like \"Fri-Sun,Mon\""
        );
        assert_eq!(
            err("Mon 08:00"),
            "has `08:00`, but times are a range like \"08:00-20:00\""
        );
        for time in [
            "8", "08:0", "08:60", "25:00", "24:01", "123:00", "08:00:00", "+8:00",
        ] {
            assert_eq!(
                err(&format!("Mon {time}-23:00")),
                format!(
                    "has `{time}`, which is not a time of day from 00:00 to 24:00 like \"08:00\""
                ),
                "{time}"
            );
        }
        assert_eq!(
            err("Mon -1:00-02:00"),
            "has `-1:00-02:00`, which is not a time of day from 00:00 to 24:00 like \"08:00\""
        );
        assert_eq!(
            err("Mon 24:00-24:00"),
            "has `24:00-24:00`, which starts at 24:00; a window starts before midnight"
        );
        assert_eq!(
            err("Mon 10:00-10:00"),
            "has `10:00-10:00`, which is empty; the end must be after the start"
        );
        assert_eq!(
            err("Mon 22:00-02:00"),
            "has `22:00-02:00`, which crosses midnight; split it like \"Mon 22:00-24:00; Tue 00:00-02:00\""
        );
    }
}
