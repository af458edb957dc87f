//! Times as the command line reads and shows them: UTC, to the second.

use fsm_core::store::Millis;

pub(crate) use fsm_console::time::{age, days_from_civil, now, show};

/// A time given on the command line: `2026-12-01`, `2026-12-01T10:30:00Z` (UTC), Unix
/// milliseconds, or a time ago (`90s`, `30m`, `2h`, `7d`).
pub(crate) fn parse(text: &str) -> Result<Millis, String> {
    let bad = || {
        format!(
            "{text:?} is not a time: 2026-12-01, 2026-12-01T10:30:00Z, Unix milliseconds, \
             or 30m, 2h, 7d ago"
        )
    };
    if let Some(unit) = text.chars().last().filter(|c| "smhd".contains(*c)) {
        let n: u64 = text[..text.len() - 1].parse().map_err(|_| bad())?;
        let secs = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => 86_400,
        };
        return Ok(now().saturating_sub(n.saturating_mul(secs * 1000)));
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| bad());
    }
    let (date, clock) = match text.split_once('T') {
        Some((date, clock)) => (date, Some(clock.trim_end_matches('Z'))),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let (y, m, d): (i64, u32, u32) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return Err(bad());
    }
    let mut secs = days_from_civil(y, m, d) * 86_400;
    if let Some(clock) = clock {
        let mut hms = clock.split(':').map(|p| p.parse::<i64>());
        let h = hms.next().ok_or_else(bad)?.map_err(|_| bad())?;
        let min = hms.next().unwrap_or(Ok(0)).map_err(|_| bad())?;
        let s = hms.next().unwrap_or(Ok(0)).map_err(|_| bad())?;
        if !(0..24).contains(&h) || !(0..60).contains(&min) || !(0..61).contains(&s) {
            return Err(bad());
        }
        secs += h * 3600 + min * 60 + s;
    }
    Ok(secs as Millis * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_and_show_back() {
        assert_eq!(parse("1970-01-01").unwrap(), 0);
        let t = parse("2026-12-02T16:09:39Z").unwrap();
        assert_eq!(show(t), "2026-12-02 16:09:39");
        assert_eq!(show(parse("2024-02-29").unwrap()), "2024-02-29 00:00:00");
        assert_eq!(parse("1700000000000").unwrap(), 1_700_000_000_000);
        let ago = now() - parse("2h").unwrap();
        assert!((7_199_000..=7_201_000).contains(&ago), "{ago}");
        for bad in ["", "yesterday", "2026-13-01", "2026-12-01T25:00", "5w"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(age(3_723_000), "1h02m");
    }
}
