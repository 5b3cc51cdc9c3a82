//! Durations written as `"90m"`, `"2h"`, `"1h30m"` or `"45s"`.

use std::time::Duration;

pub(super) const DEFAULT_MAX_SESSION: Duration = Duration::from_secs(2 * 60 * 60);
pub(super) const MAX_SESSION_LIMIT: Duration = Duration::from_secs(24 * 60 * 60);

pub(super) use proto::duration::parse_duration;

#[cfg(test)]
pub(super) use proto::duration::format_duration;

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
            "1w",
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
