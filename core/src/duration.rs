//! Human durations in config and templates: `300ms`, `5s`, `2m`, `1h`, `7d`, or combined (`1m30s`).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The longest duration anything accepts: 100 years. Longer ones are refused as written
/// (they would overflow clocks and timers), whatever the key; each key has its own,
/// tighter range on top.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Parses `300ms`, `5s`, `1.5s`, `2m`, `1h`, `1m30s`. A bare number is refused: the unit is
/// what tells a reader whether `5` meant seconds or milliseconds. So is anything longer
/// than [`MAX_DURATION`] (never a panic: the arithmetic is checked).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; write it like `5s` or `300ms`".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("`{text}` has no unit; write it like `5s` or `300ms`"))?;
        if number_len == 0 {
            return Err(format!("`{text}` is not a duration; write it like `5s` or `300ms`"));
        }
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| format!("`{text}` is not a duration; write it like `5s` or `300ms`"))?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => number / 1000.0,
            "s" => number,
            "m" => number * 60.0,
            "h" => number * 3600.0,
            "d" => number * 86_400.0,
            other => {
                return Err(format!(
                    "`{text}` is not a duration: unknown unit `{other}`; write it like `5s` or `300ms` (units: ms, s, m, h, d)"
                ));
            }
        };
        rest = &rest[unit_len..];
        let too_long = || format!("`{text}` is too long; a duration must be at most 36500d (100 years)");
        let part = Duration::try_from_secs_f64(seconds).map_err(|_| too_long())?;
        total = total.checked_add(part).filter(|t| *t <= MAX_DURATION).ok_or_else(too_long)?;
    }
    Ok(total)
}

/// `d` in milliseconds to the microsecond: how the API shows a latency (`latency_ms`).
pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) || ms == 0 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(86_400_000) {
        format!("{}d", ms / 86_400_000)
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

/// The JSON Schema of a duration as written (`#[schemars(with = "duration::Text")]`): what
/// [`parse_duration`] reads, numbers with a unit each.
pub struct Text;

/// The pattern of [`Text`]: one or more numbers, each with its unit.
pub const PATTERN: &str =
    r"^\s*([0-9]+(\.[0-9]*)?|\.[0-9]+)(ms|s|m|h|d)(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ms|s|m|h|d))*\s*$";

impl schemars::JsonSchema for Text {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": PATTERN,
            "description": "A duration: a number and a unit (ms, s, m, h, d), or several (`1m30s`); at most 36500d.",
            "examples": ["300ms", "5s", "1m30s", "7d"],
        })
    }
}

/// `#[serde(deserialize_with = "duration::deserialize")]` for a `Duration` field.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// As [`deserialize`], for an `Option<Duration>` field.
pub fn deserialize_option<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    Option::<String>::deserialize(deserializer)?
        .map(|text| parse_duration(&text).map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse_duration("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
    }

    #[test]
    fn refuses_bare_numbers_and_unknown_units() {
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(parse_duration("5w").unwrap_err().starts_with("`5w` is not a duration: unknown unit `w`"));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
    }

    /// Values that overflowed `Duration::from_secs_f64` (a panic) are refused with a message.
    #[test]
    fn huge_durations_are_refused_not_panics() {
        for text in ["99999999999999999999d", "1e400s", "36501d", "36500d1ms", "584942417356y"] {
            let e = parse_duration(text).unwrap_err();
            assert!(
                e.contains("too long") || e.contains("not a duration") || e.contains("unknown unit"),
                "{text}: {e}"
            );
        }
        assert!(parse_duration("99999999999999999999d").unwrap_err().contains("at most 36500d"));
        let digits = "9".repeat(400) + "s";
        assert!(parse_duration(&digits).unwrap_err().contains("too long"));
        assert_eq!(parse_duration("36500d").unwrap(), MAX_DURATION);
        assert_eq!(parse_duration("0.0000000001ms").unwrap(), Duration::ZERO, "tiny rounds down");
        for text in ["1..5s", ".s", "-5s", "nan s", "inf", "NaNs"] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
    }

    #[test]
    fn formats_back() {
        assert_eq!(format_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::from_secs(7 * 86_400)), "7d");
    }
}
