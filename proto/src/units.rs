//! Durations and quantities as operators write and read them: Go-style
//! durations (`1m30s`), Kubernetes quantities (`100Mi`, `2G`), and the
//! matching formatters.

use std::time::Duration;

/// Parses a Go-style duration: one or more `<number><unit>` with units `ns`,
/// `us` (or `µs`), `ms`, `s`, `m`, `h`, decimals allowed (`90s`, `1m30s`,
/// `500ms`, `1.5h`). A bare `0` is zero; a leading `+` is accepted, a
/// negative duration is not.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const HINT: &str = "expected a duration such as 90s, 1m30s, 500ms or 2h";
    let text = s.trim();
    let body = text.strip_prefix('+').unwrap_or(text);
    if body.is_empty() {
        return Err(format!("empty duration; {HINT}"));
    }
    if body.starts_with('-') {
        return Err(format!(
            "duration `{text}` is negative; it must be zero or more"
        ));
    }
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: u128 = 0;
    let mut rest = body;
    while !rest.is_empty() {
        let (int, r) = split_digits(rest);
        let (frac, r) = match r.strip_prefix('.') {
            Some(r) => split_digits(r),
            None => ("", r),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(format!("`{text}` is not a duration; {HINT}"));
        }
        let unit_len = r
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(r.len());
        let (unit, r) = r.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => {
                return Err(format!(
                    "`{text}` lacks a unit (ns, us, ms, s, m, h); {HINT}"
                ))
            }
            other => {
                return Err(format!(
                    "`{text}` has unknown unit `{other}` (valid: ns, us, ms, s, m, h)"
                ))
            }
        };
        let too_long = || format!("duration `{text}` is too long");
        let whole = parse_digits(int).ok_or_else(too_long)?;
        // Beyond 18 fractional digits only sub-nanosecond precision is lost.
        let frac = &frac[..frac.len().min(18)];
        let frac_val = parse_digits(frac).ok_or_else(too_long)?;
        let scale = 10u128.pow(u32::try_from(frac.len()).unwrap_or(18));
        let part = whole
            .checked_mul(unit_ns)
            .and_then(|w| w.checked_add(frac_val * unit_ns / scale))
            .ok_or_else(too_long)?;
        total = total.checked_add(part).ok_or_else(too_long)?;
        rest = r;
    }
    u64::try_from(total)
        .map(Duration::from_nanos)
        .map_err(|_| format!("duration `{text}` is too long"))
}

/// Formats a duration compactly, the way kubectl shows ages: `45s`, `3m12s`,
/// `5h2m`, `12d`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d", s / 86_400),
    }
}

/// Formats a duration the way Go prints it (`5m0s`, `1m30s`, `500ms`), since
/// operators write them that way in flags.
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return if d.is_zero() {
            "0s".to_string()
        } else {
            format!("{}ms", d.subsec_millis())
        };
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// Parses a Kubernetes-style quantity: plain, `Ki Mi Gi Ti Pi Ei` (binary) or
/// `k M G T P E` (decimal), with optional decimals (`1.5Gi`). Fractions of a
/// unit round up, as `resource.Quantity.Value()` does.
pub fn parse_quantity(s: &str) -> Result<u64, String> {
    let text = s.trim();
    let body = text.strip_prefix('+').unwrap_or(text);
    if body.starts_with('-') {
        return Err(format!("`{text}` is negative"));
    }
    let (int, r) = split_digits(body);
    let (frac, suffix) = match r.strip_prefix('.') {
        Some(r) => split_digits(r),
        None => ("", r),
    };
    if int.is_empty() && frac.is_empty() {
        return Err(format!(
            "`{text}` is not a quantity; expected e.g. 100Mi, 1.5Gi, 500M or 1000"
        ));
    }
    let mult: u128 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "m" => return Err(format!("`{text}`: `m` means milli; did you mean M or Mi?")),
        "K" | "KB" | "kB" | "MB" | "GB" | "TB" | "KiB" | "MiB" | "GiB" | "TiB" => {
            return Err(format!(
                "`{text}`: unit `{suffix}` is not a Kubernetes unit; use k M G T (decimal) \
                 or Ki Mi Gi Ti (binary)"
            ))
        }
        other => {
            return Err(format!(
                "`{text}` has unknown unit `{other}` (valid: Ki Mi Gi Ti Pi Ei, k M G T P E)"
            ))
        }
    };
    let too_big = || format!("`{text}` is too large");
    let whole = parse_digits(int).ok_or_else(too_big)?;
    let frac = &frac[..frac.len().min(18)];
    let frac_val = parse_digits(frac).ok_or_else(too_big)?;
    let scale = 10u128.pow(u32::try_from(frac.len()).unwrap_or(18));
    let total = whole
        .checked_mul(mult)
        .and_then(|w| w.checked_add((frac_val * mult).div_ceil(scale)))
        .ok_or_else(too_big)?;
    u64::try_from(total).map_err(|_| too_big())
}

/// Formats bytes with the largest binary unit that fits, keeping one decimal
/// (truncated) when it is not zero: `512Mi`, `1.5Gi`, `118Gi`; below 1Ki the
/// plain number.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 6] = [
        ("Ei", 1 << 60),
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if n >= size {
            let whole = n / size;
            let tenths = u128::from(n % size) * 10 / u128::from(size);
            return if tenths == 0 {
                format!("{whole}{unit}")
            } else {
                format!("{whole}.{tenths}{unit}")
            };
        }
    }
    n.to_string()
}

/// Splits `s` after its leading ASCII digits.
fn split_digits(s: &str) -> (&str, &str) {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    s.split_at(n)
}

/// Decimal digits to a number; `None` on overflow. Empty is zero.
fn parse_digits(d: &str) -> Option<u128> {
    d.bytes().try_fold(0u128, |acc, b| {
        acc.checked_mul(10)?.checked_add(u128::from(b - b'0'))
    })
}

/// Formats unix milliseconds as RFC 3339 UTC (`2026-11-23T16:50:37.123Z`);
/// empty for 0, which means "never" throughout the protocol.
pub fn rfc3339(ms: u64) -> String {
    if ms == 0 {
        return String::new();
    }
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm), valid for all u64 days
    // we can meet here.
    let z = i128::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i128::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Parses an RFC 3339 UTC or offset time (`2026-12-02T06:36:18Z`,
/// `...18.5+01:00`) into unix milliseconds. Times before 1970 are refused.
pub fn parse_rfc3339(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not an RFC 3339 time (e.g. 2026-12-02T06:36:18Z)");
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let part = s.get(r).ok_or_else(bad)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse::<i64>().map_err(|_| bad())
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return Err(bad());
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        let frac = &s[start..i.min(start + 3)];
        millis = format!("{frac:0<3}").parse().map_err(|_| bad())?;
    }
    let offset_secs = match &s[i..] {
        "Z" | "z" => 0,
        tz if tz.len() == 6
            && matches!(tz.as_bytes()[0], b'+' | b'-')
            && tz.as_bytes()[3] == b':' =>
        {
            let h = num(i + 1..i + 3)?;
            let m = num(i + 4..i + 6)?;
            let v = h * 3600 + m * 60;
            if tz.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return Err(bad()),
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_secs;
    let ms = secs * 1000 + millis;
    u64::try_from(ms).map_err(|_| format!("{s:?} is before 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KI: u64 = 1 << 10;
    const MI: u64 = 1 << 20;
    const GI: u64 = 1 << 30;

    #[test]
    fn parse_duration_accepts() {
        let ok: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("10s", Duration::from_secs(10)),
            ("1m30s", Duration::from_secs(90)),
            ("500ms", Duration::from_millis(500)),
            ("2h", Duration::from_secs(7200)),
            ("1h1m1s", Duration::from_secs(3661)),
            ("1h2m3s", Duration::from_secs(3723)),
            // Fractions are accepted, as in Go.
            ("1.5h", Duration::from_secs(5400)),
            ("1.5s", Duration::from_millis(1500)),
            (".5s", Duration::from_millis(500)),
            ("+5m", Duration::from_secs(300)),
            (" 5m ", Duration::from_secs(300)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
        ];
        for (s, want) in ok {
            assert_eq!(
                parse_duration(s).unwrap_or_else(|e| panic!("{s}: {e}")),
                *want,
                "{s}"
            );
        }
    }

    #[test]
    fn parse_duration_rejects() {
        let bad: &[(&str, &str)] = &[
            ("", "empty"),
            ("10", "lacks a unit"),
            ("1m30", "lacks a unit"),
            ("1x", "unknown unit `x`"),
            ("1m 30s", "unknown unit"),
            ("5 minutes", "unknown unit"),
            ("5d", "unknown unit `d`"),
            ("-1s", "negative"),
            ("s", "not a duration"),
            (".s", "not a duration"),
            ("99999999999999999999h", "too long"),
        ];
        for (s, want) in bad {
            let err = parse_duration(s).expect_err(s);
            assert!(err.contains(want), "{s}: {err}");
        }
    }

    #[test]
    fn format_durations() {
        let kubectl: &[(Duration, &str)] = &[
            (Duration::from_secs(45), "45s"),
            (Duration::from_secs(192), "3m12s"),
            (Duration::from_secs(18_120), "5h2m"),
            (Duration::from_secs(86_400 * 12), "12d"),
        ];
        for (d, want) in kubectl {
            assert_eq!(format_duration(*d), *want, "{d:?}");
        }
        let go: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(45), "45s"),
            (Duration::from_secs(300), "5m0s"),
            (Duration::from_secs(3723), "1h2m3s"),
        ];
        for (d, want) in go {
            assert_eq!(go_duration(*d), *want, "{d:?}");
        }
    }

    #[test]
    fn parse_quantity_accepts() {
        let cases: &[(&str, u64)] = &[
            ("1", 1),
            ("1024", 1024),
            ("1k", 1000),
            ("0.1k", 100),
            ("0.5M", 500_000),
            ("2G", 2_000_000_000),
            ("512Ki", 512 * KI),
            ("100Mi", 100 * MI),
            ("1.5Gi", 3 * GI / 2),
            ("1Ti", 1 << 40),
            ("+1k", 1000),
            // Fractions of a unit round up.
            ("1.5", 2),
            ("1.0001Ki", 1025),
            ("18446744073709551615", u64::MAX),
        ];
        for (s, want) in cases {
            assert_eq!(
                parse_quantity(s).unwrap_or_else(|e| panic!("{s}: {e}")),
                *want,
                "{s}"
            );
        }
    }

    #[test]
    fn parse_quantity_rejects() {
        let bad: &[(&str, &str)] = &[
            ("", "not a quantity"),
            ("Mi", "not a quantity"),
            ("10X", "unknown unit `X`"),
            ("1.2.3Mi", "unknown unit `.3Mi`"),
            ("100MB", "not a Kubernetes unit"),
            ("100m", "did you mean M or Mi?"),
            ("-1Gi", "negative"),
            ("99999999999999999999", "too large"),
            ("18446744073709551616", "too large"),
            ("99999999999Ei", "too large"),
        ];
        for (s, want) in bad {
            let err = parse_quantity(s).expect_err(s);
            assert!(err.contains(want), "{s}: {err}");
        }
    }

    #[test]
    fn format_bytes_table() {
        let cases: &[(u64, &str)] = &[
            (0, "0"),
            (512, "512"),
            (1000, "1000"),
            (KI, "1Ki"),
            (512 * MI, "512Mi"),
            (100 * MI, "100Mi"),
            (3 * GI / 2, "1.5Gi"),
            (118 * GI, "118Gi"),
            (1 << 40, "1Ti"),
            (u64::MAX, "15.9Ei"),
        ];
        for (n, want) in cases {
            assert_eq!(format_bytes(*n), *want, "{n}");
        }
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "");
        assert_eq!(rfc3339(1), "1970-01-01T00:00:00.001Z");
        assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }
}
