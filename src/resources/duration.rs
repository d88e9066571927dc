//! Go-style duration strings ("500ms", "30s", "5m", "1h30m"), the form Consul and
//! consul-template users already write. The schema pattern refuses malformed strings at
//! admission; `parse_duration` turns them into `std::time::Duration`.
use std::time::Duration;

/// The pattern the API server checks duration fields against.
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";

/// A duration string that does not match [`DURATION_PATTERN`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: expected a sequence like 500ms, 30s, 5m or 1h30m")]
pub struct InvalidDuration {
    pub input: String,
}

/// Parses "1h30m", "250ms", "10s" into a Duration.
pub fn parse_duration(input: &str) -> Result<Duration, InvalidDuration> {
    let invalid = || InvalidDuration { input: input.to_string() };
    let mut rest = input;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
        if digits == 0 {
            return Err(invalid());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else {
            return Err(invalid());
        };
        rest = &rest[len..];
        let part = unit.checked_mul(u32::try_from(n).map_err(|_| invalid())?).ok_or_else(invalid)?;
        total = total.checked_add(part).ok_or_else(invalid)?;
    }
    Ok(total)
}

/// Schema for a duration string field.
pub fn duration_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "pattern": DURATION_PATTERN,
        "maxLength": 32,
    })
}

/// Schema for an optional duration string field.
pub fn optional_duration_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut s = duration_schema(g);
    s.insert("nullable".into(), true.into());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1m500ms"), Ok(Duration::from_millis(60_500)));
    }

    #[test]
    fn refuses_what_the_pattern_refuses() {
        for bad in ["", "5", "m", "1d", "1.5s", "-1s", "1 s", "s5"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
