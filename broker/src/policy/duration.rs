//! Durations written as `"90m"`, `"2h"`, `"1h30m"` or `"45s"`.

use std::time::Duration;

pub(super) const DEFAULT_MAX_SESSION: Duration = Duration::from_secs(2 * 60 * 60);
pub(super) const MAX_SESSION_LIMIT: Duration = Duration::from_secs(24 * 60 * 60);

/// Parses one or more `<digits><unit>` parts with units `h`, `m`, `s`, each at most once and
/// in that order. `None` when the text is not of that form (including overflow); zero is
/// accepted here and refused by the caller with its own message.
pub(super) fn parse_duration(text: &str) -> Option<Duration> {
    const UNITS: [(char, u64); 3] = [('h', 3600), ('m', 60), ('s', 1)];
    let mut rest = text;
    let mut next_unit = 0;
    let mut total: u64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        let unit = rest[digits..].chars().next()?;
        let position = UNITS[next_unit..]
            .iter()
            .position(|&(symbol, _)| symbol == unit)?;
        let (_, seconds) = UNITS[next_unit + position];
        next_unit += position + 1;
        total = total.checked_add(number.checked_mul(seconds)?)?;
        rest = &rest[digits + unit.len_utf8()..];
    }
    Some(Duration::from_secs(total))
}

/// Renders a duration in the syntax [`parse_duration`] accepts (whole seconds).
#[cfg(test)]
pub(super) fn format_duration(duration: Duration) -> String {
    let total = duration.as_secs();
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n))
    }

    #[test]
    fn durations_in_each_documented_form_parse() {
        assert_eq!(parse_duration("90m"), secs(5400));
        assert_eq!(parse_duration("2h"), secs(7200));
        assert_eq!(parse_duration("1h30m"), secs(5400));
        assert_eq!(parse_duration("45s"), secs(45));
        assert_eq!(parse_duration("1h2m3s"), secs(3723));
        assert_eq!(parse_duration("0m"), secs(0));
    }

    #[test]
    fn durations_that_are_not_of_the_form_are_refused() {
        for text in [
            "",
            "two hours",
            "2",
            "h",
            "2 h",
            "2H",
            "30m1h",
            "1h1h",
            "1d",
            "1h30",
            " 2h",
            "-2h",
            "2h ",
            "1.5h",
            "99999999999999999999h",
            "9999999999999999h",
        ] {
            assert_eq!(parse_duration(text), None, "{text:?}");
        }
    }

    #[test]
    fn formatted_durations_parse_back() {
        for n in [1, 45, 60, 5400, 7200, 3723, 86400] {
            let duration = Duration::from_secs(n);
            assert_eq!(parse_duration(&format_duration(duration)), Some(duration));
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }
}
