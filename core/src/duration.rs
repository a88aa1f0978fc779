//! Human durations for flags and config: `500ms`, `5s`, `2m`, `1h`, `7d`, or plain seconds.

use std::time::Duration;

/// Parses `500ms`, `5s`, `2m`, `1h`, `7d` or a plain number of seconds.
pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; write e.g. 500ms, 5s, 2m, 1h or 7d"))?;
    let secs = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        other => {
            return Err(format!(
                "`{s}` has unknown unit `{other}`; use ms, s, m, h or d"
            ));
        }
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A span of seconds for people, in its two largest units: `45s`, `3m 20s`, `2h 5m`, `3d 4h`.
pub fn human_secs(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

/// How long before `now_ms` the time `then_ms` was (both ms since the epoch), as `5s ago`; `-`
/// for no time (0).
pub fn ago(then_ms: i64, now_ms: i64) -> String {
    if then_ms <= 0 {
        return "-".into();
    }
    format!("{} ago", human_secs((now_ms - then_ms).max(0) / 1000))
}

/// Writes a duration the way [`parse`] reads it, in its largest whole unit (`7d`, `90s`,
/// `1500ms`).
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s.is_multiple_of(n) {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse("5 parsecs").is_err());
        assert!(parse("").is_err());
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86400)));
        for d in ["7d", "90s", "1500ms", "2h", "3m", "0s"] {
            assert_eq!(format(parse(d).unwrap()), d);
        }
    }
}
