//! Times as the console and the `fsm` command line show them: UTC, to the second.

use std::time::{SystemTime, UNIX_EPOCH};

use fsm_core::store::Millis;

/// Now, in Unix milliseconds.
pub fn now() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `t` as `2026-12-02 16:09:39` (UTC).
pub fn show(t: Millis) -> String {
    let secs = (t / 1000) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// A length of time as a person reads it: `45s`, `12m`, `3h05m`, `2d04h`.
pub fn age(ms: Millis) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A time a person typed, in UTC: `2026-12-02`, `2026-12-02 16:09`, `2026-12-02T16:09:39`
/// (as a `datetime-local` field sends it). `None` if it is none of these.
pub fn parse(text: &str) -> Option<Millis> {
    let text = text.trim();
    let (date, clock) = match text.split_once(['T', ' ']) {
        Some((d, c)) => (d, Some(c)),
        None => (text, None),
    };
    let mut date = date.splitn(3, '-');
    let y: i64 = date.next()?.parse().ok()?;
    let m: u32 = date.next()?.parse().ok()?;
    let d: u32 = date.next()?.parse().ok()?;
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = 0u64;
    if let Some(clock) = clock {
        let parts: Vec<&str> = clock.split(':').collect();
        if !(2..=3).contains(&parts.len()) {
            return None;
        }
        let limits = [24, 60, 60];
        for (part, limit) in parts.iter().zip(limits) {
            let v: u64 = part.parse().ok().filter(|v| *v < limit)?;
            secs = secs * 60 + v;
        }
        if parts.len() == 2 {
            secs *= 60;
        }
    }
    let days = u64::try_from(days_from_civil(y, m, d)).ok()?;
    Some((days * 86_400 + secs) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_times_read_back_as_shown() {
        let t = 1_764_691_779_000; // 2025-12-02 16:09:39
        assert_eq!(show(t), "2025-12-02 16:09:39");
        assert_eq!(parse("2025-12-02 16:09:39"), Some(t));
        assert_eq!(parse("2025-12-02T16:09"), Some(t - 39_000));
        assert_eq!(parse("2025-12-02"), Some(t - 58_179_000));
        for bad in [
            "",
            "yesterday",
            "2025-13-01",
            "2025-12-02 24:00",
            "2025-12-02 1",
            "12-02",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
