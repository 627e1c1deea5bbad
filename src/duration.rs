//! Go durations (`time.ParseDuration`), as Kubernetes users write them: one parser for the
//! command line's flags and the `jetstreamkv.io/ttl` annotation, so both accept the same text.

use std::fmt::Write as _;
use std::time::Duration;

/// Parses a Go duration (`time.ParseDuration`): a sequence of decimal numbers, each with an
/// optional fraction and a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), e.g. `1h30m` or `1.5s`;
/// `0` alone is zero. Negative durations are refused (a TTL cannot be negative), and like Go,
/// durations beyond about 292 years (`i64` nanoseconds, which NATS uses too) are refused.
pub fn parse(text: &str) -> Option<Duration> {
    const UNITS: [(&str, u128); 8] = [
        ("ns", 1),
        ("us", 1_000),
        ("µs", 1_000), // U+00B5 micro sign
        ("μs", 1_000), // U+03BC Greek mu
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
    ];
    let text = text.strip_prefix('+').unwrap_or(text);
    if text == "0" {
        return Some(Duration::ZERO);
    }
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(after) => {
                let len = after.bytes().take_while(u8::is_ascii_digit).count();
                after.split_at(len)
            }
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        // The longest unit that matches, so that `ms` is not read as `m` followed by `s`.
        let (unit, scale) = UNITS
            .iter()
            .filter(|(u, _)| after.starts_with(u))
            .max_by_key(|(u, _)| u.len())?;
        rest = &after[unit.len()..];

        let whole = if int.is_empty() {
            0
        } else {
            int.parse::<u128>().ok()?
        };
        let mut nanos = whole.checked_mul(*scale)?;
        // Digits of the fraction beyond nanosecond precision of the hour cannot matter.
        let mut place = *scale;
        for digit in frac.bytes().take(20) {
            place /= 10;
            nanos = nanos.checked_add(u128::from(digit - b'0') * place)?;
        }
        total = total.checked_add(nanos)?;
    }
    let nanos = u64::try_from(total)
        .ok()
        .filter(|n| *n <= i64::MAX as u64)?;
    Some(Duration::from_nanos(nanos))
}

/// Formats a duration the way Go writes one, without zero parts: `1h30m`, `90s` as `1m30s`,
/// `24h`, `1.5s`, `250ms`, `0s`. [`parse`] reads it back to the same value.
pub fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    if d < Duration::from_secs(1) {
        let nanos = u64::from(d.subsec_nanos());
        return if nanos >= 1_000_000 {
            decimal(nanos, 1_000_000, "ms")
        } else if nanos >= 1_000 {
            decimal(nanos, 1_000, "µs")
        } else {
            format!("{nanos}ns")
        };
    }
    let secs = d.as_secs();
    let (hours, minutes, seconds) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    if seconds > 0 || d.subsec_nanos() > 0 {
        let nanos = seconds * 1_000_000_000 + u64::from(d.subsec_nanos());
        out.push_str(&decimal(nanos, 1_000_000_000, "s"));
    }
    out
}

/// `value / unit` with the fraction's trailing zeros dropped, then the unit name.
fn decimal(value: u64, unit: u64, name: &str) -> String {
    let (whole, frac) = (value / unit, value % unit);
    if frac == 0 {
        return format!("{whole}{name}");
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}{name}", digits.trim_end_matches('0'))
}

/// Parses a duration flag (`--resync-interval 1.5m`): a Go duration that is more than zero. A
/// zero or overflowing duration is an error that says what to write, never a panic.
pub fn parse_flag(text: &str) -> Result<Duration, String> {
    match parse(text.trim()) {
        Some(d) if !d.is_zero() => Ok(d),
        Some(_) => Err(format!(
            "{text:?} is zero: use a duration above zero, e.g. 90s, 5m, 1.5m or 250ms"
        )),
        None => Err(format!(
            "{text:?} is not a duration: use e.g. 90s, 5m, 1.5m, 1h30m or 250ms (units ns, us, \
             ms, s, m, h; at most about 292 years)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_duration_follows_go() {
        let cases = [
            ("0", Some(0)),
            ("1ns", Some(1)),
            ("1us", Some(1_000)),
            ("1µs", Some(1_000)),
            ("1μs", Some(1_000)),
            ("1.5ms", Some(1_500_000)),
            (".5s", Some(500_000_000)),
            ("5.s", Some(5_000_000_000)),
            ("1m1s", Some(61_000_000_000)),
            ("1s1m", Some(61_000_000_000)),
            ("2h45m30.5s", Some(9_930_500_000_000)),
            ("2562047h47m16.854775807s", Some(i64::MAX as u64)),
            ("2562047h47m16.854775808s", None),
            ("", None),
            ("5", None),
            ("-1s", None),
            ("1x", None),
            ("1S", None),
            ("1h-1m", None),
        ];
        for (text, nanos) in cases {
            assert_eq!(parse(text), nanos.map(Duration::from_nanos), "{text}");
        }
    }

    #[test]
    fn format_duration_is_go_style_without_zero_parts() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(5), "5ns"),
            (Duration::from_nanos(1_500), "1.5µs"),
            (Duration::from_millis(100), "100ms"),
            (Duration::from_micros(2_250), "2.25ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(1800), "30m"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_secs(86_400), "24h"),
            (Duration::from_secs(3601), "1h1s"),
            (Duration::from_millis(3_600_500), "1h0.5s"),
        ];
        for (d, want) in cases {
            let text = format(d);
            assert_eq!(text, want, "{d:?}");
            assert_eq!(parse(&text), Some(d), "{text} reads back");
        }
    }

    #[test]
    fn flags_take_go_durations_above_zero() {
        assert_eq!(parse_flag("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_flag("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_flag("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_flag("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "0", "0s", "5", "m", "5x", "-1s", "99999999999h"] {
            let e = parse_flag(bad).expect_err(bad);
            assert!(e.contains("use"), "{bad:?}: {e}");
        }
    }
}
