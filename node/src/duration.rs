//! The one duration grammar of the CLI, the HTTP API and the benchmark: humantime's (`500ms`,
//! `30s`, `5m`, `2h`, `1h 30m`, `3days`), plus a bare number meaning seconds (as TTLs in etcd's
//! API are). Callers add their own bounds.

use std::time::Duration;

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        return text
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("{text:?} is too many seconds"));
    }
    humantime::parse_duration(text)
        .map_err(|error| format!("{text:?} is not a duration like 500ms, 30s, 5m or 2h ({error})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration(" 2m "), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("3days"), Ok(Duration::from_secs(3 * 86_400)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn garbage_is_refused_with_the_text() {
        for text in ["", "s", "ten seconds", "5 parsecs", "-3s", "99999999999999999999"] {
            let error = parse_duration(text).expect_err(text);
            assert!(error.contains(&format!("{:?}", text.trim())), "{error}");
        }
    }
}
