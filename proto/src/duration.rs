//! Durations as people write them in policies and on command lines: `90m`, `2h`, `1h30m`,
//! `45s`, `3d`. Both ends parse them the same way, so a duration a technician types means what the
//! hospital's policy means.

use std::time::Duration;

/// Parses one or more `<digits><unit>` parts with units `d`, `h`, `m`, `s`, each at most once
/// and in that order. `None` when the text is not of that form (including overflow); zero is
/// accepted here and refused by callers that need more, with their own message.
pub fn parse_duration(text: &str) -> Option<Duration> {
    const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3600), ('m', 60), ('s', 1)];
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
        let position = UNITS
            .get(next_unit..)?
            .iter()
            .position(|&(symbol, _)| symbol == unit)?;
        let (_, seconds) = UNITS[next_unit + position];
        next_unit += position + 1;
        total = total.checked_add(number.checked_mul(seconds)?)?;
        rest = &rest[digits + unit.len_utf8()..];
    }
    Some(Duration::from_secs(total))
}

/// Renders whole seconds in the same syntax: `1h30m`, `45m`, `2h`, `30s`, `0s` (hours are not
/// folded into days: `72h`).
pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
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

    #[test]
    fn every_documented_form_parses_and_renders_back() {
        for (text, secs) in [
            ("90m", 5400),
            ("2h", 7200),
            ("1h30m", 5400),
            ("45s", 45),
            ("1h2m3s", 3723),
            ("0m", 0),
            ("3d", 259_200),
            ("1d12h", 129_600),
        ] {
            assert_eq!(
                parse_duration(text),
                Some(Duration::from_secs(secs)),
                "{text}"
            );
            assert_eq!(
                parse_duration(&format_duration(Duration::from_secs(secs))),
                Some(Duration::from_secs(secs))
            );
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for text in [
            "",
            "h",
            "2",
            "two hours",
            "30m1h",
            "1h1h",
            "1h1d",
            "-1h",
            "1.5h",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_duration(text), None, "{text:?}");
        }
    }
}
