//! Container `resources`: quantities read exactly (no overflow, no
//! clamping), bounded per resource, and the sanity rules Kubernetes and
//! the Docker engine apply.
//!
//! Quantities are Kubernetes' (`250m`, `0.5`, `64Mi`, `1G`, `129e6`) and
//! are rounded up to the unit Outpost keeps (millicores, bytes), as
//! Kubernetes rounds them. Each resource has a stated range; a value
//! outside it (`memory: 18446744073709551616`) is refused with the field's
//! path and the range, never wrapped, clamped, or described in terms of how
//! it is stored:
//! `spec.containers[0].resources.limits.memory: 18446744073709551616 is out
//! of range: must be from 6Mi to 4Pi`. Ranges (requests from 0):
//!
//! | resource | limit |
//! |---|---|
//! | `cpu` | 10m to 8192 |
//! | `memory` | 6Mi to 4Pi |
//! | `ephemeral-storage` | 1 to 1Ei |
//! | `outpost.dev/pids` | 1 to 4194304 |
//! | `nvidia.com/gpu` | 0 to 1024 |
//!
//! Rules:
//! - a request above its limit is refused (Kubernetes);
//! - a request not given defaults to its limit (Kubernetes);
//! - a memory limit below 6Mi and a cpu limit below 10m are refused: the
//!   Docker engine refuses them when the container is created, which is
//!   far too late to tell the operator (the agent would retry forever);
//! - a pids or ephemeral-storage limit of 0 is refused: leave it out for
//!   no limit;
//! - GPUs and pids are whole numbers; a GPU request must equal its limit
//!   when both are given (Kubernetes: extended resources are not
//!   overcommitted).

use super::walk::{join, show, Obj, Treat, Walker};
use crate::api::pod::ResourceRequirements;
use crate::api::resources::{
    format_bytes_exact, format_cpu, ResourceList, CPU, EPHEMERAL_STORAGE, GPU, MEMORY, NAMES, PIDS,
};
use serde_json::Value;

/// CPU: no Linux kernel runs more than 8192 CPUs (`NR_CPUS` at most 8192).
pub const MAX_CPU_MILLIS: u64 = 8192 * 1000;
/// Memory: 4Pi, all a 64-bit CPU can address with 52-bit physical
/// addresses.
pub const MAX_MEMORY: u64 = 4 << 50;
/// Ephemeral storage: 1Ei, beyond any node's disks.
pub const MAX_STORAGE: u64 = 1 << 60;
/// Pids: Linux's `PID_MAX_LIMIT` on 64-bit kernels.
pub const MAX_PIDS: u64 = 4 * 1024 * 1024;
/// GPUs in one container.
pub const MAX_GPUS: u64 = 1024;
/// The Docker engine's smallest memory limit (`linuxMinMemory`, 6 MiB).
pub const MIN_MEMORY_LIMIT: u64 = 6 << 20;
/// The Docker engine's smallest CPU limit (0.01 CPU).
pub const MIN_CPU_LIMIT_MILLIS: u64 = 10;

/// One resource Outpost schedules and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Res {
    Cpu,
    Memory,
    Storage,
    Pids,
    Gpu,
}

impl Res {
    const ALL: [Res; 5] = [Res::Cpu, Res::Memory, Res::Storage, Res::Pids, Res::Gpu];

    fn name(self) -> &'static str {
        match self {
            Res::Cpu => CPU,
            Res::Memory => MEMORY,
            Res::Storage => EPHEMERAL_STORAGE,
            Res::Pids => PIDS,
            Res::Gpu => GPU,
        }
    }

    fn max(self) -> u64 {
        match self {
            Res::Cpu => MAX_CPU_MILLIS,
            Res::Memory => MAX_MEMORY,
            Res::Storage => MAX_STORAGE,
            Res::Pids => MAX_PIDS,
            Res::Gpu => MAX_GPUS,
        }
    }

    /// Smallest limit accepted, and why.
    fn min_limit(self) -> (u64, &'static str) {
        match self {
            Res::Memory => (
                MIN_MEMORY_LIMIT,
                "the Docker engine refuses a smaller memory limit",
            ),
            Res::Cpu => (
                MIN_CPU_LIMIT_MILLIS,
                "the Docker engine refuses a smaller CPU limit",
            ),
            Res::Pids | Res::Storage => (1, "leave it out for no limit"),
            Res::Gpu => (0, ""),
        }
    }

    /// `from 6Mi to 4Pi`: the values a limit (or a request) may take.
    fn range(self, limit: bool) -> String {
        let min = if limit { self.min_limit().0 } else { 0 };
        format!("from {} to {}", self.show(min), self.show(self.max()))
    }

    /// A value as Kubernetes would write it back.
    fn show(self, n: u64) -> String {
        match self {
            Res::Cpu => format_cpu(n),
            Res::Memory | Res::Storage => bytes(n),
            Res::Pids | Res::Gpu => n.to_string(),
        }
    }

    fn get(self, r: &ResourceList) -> u64 {
        let r = &r.0;
        match self {
            Res::Cpu => r.cpu_millis,
            Res::Memory => r.memory_bytes,
            Res::Storage => r.ephemeral_storage_bytes,
            Res::Pids => r.pids,
            Res::Gpu => u64::from(r.gpus),
        }
    }

    fn set(self, r: &mut ResourceList, n: u64) {
        let r = &mut r.0;
        match self {
            Res::Cpu => r.cpu_millis = n,
            Res::Memory => r.memory_bytes = n,
            Res::Storage => r.ephemeral_storage_bytes = n,
            Res::Pids => r.pids = n,
            Res::Gpu => r.gpus = u32::try_from(n).unwrap_or(u32::MAX),
        }
    }
}

/// `resources` of a container.
pub fn requirements(w: &mut Walker, path: &str, v: Option<&Value>) -> ResourceRequirements {
    let mut out = ResourceRequirements::default();
    let Some(v) = v else { return out };
    let Some(o) = w.obj(path, v, &[("requests", Treat::Use), ("limits", Treat::Use)]) else {
        return out;
    };
    let (rp, lp) = (join(path, "requests"), join(path, "limits"));
    let (requests, given_requests) = list(w, &rp, o.get("requests"), false);
    let (limits, given_limits) = list(w, &lp, o.get("limits"), true);
    out.requests = requests;
    out.limits = limits;
    for r in Res::ALL {
        let limit = given_limits[idx(r)].then(|| r.get(&limits));
        let request = given_requests[idx(r)].then(|| r.get(&requests));
        let lpath = join(&lp, r.name());
        if let Some(l) = limit {
            let (min, why) = r.min_limit();
            if l < min {
                w.err(
                    &lpath,
                    format!(
                        "{} is out of range: must be {} ({why})",
                        r.show(l),
                        r.range(true)
                    ),
                );
            }
        }
        match (request, limit) {
            (Some(q), Some(l)) if q > l => w.err(
                &join(&rp, r.name()),
                format!(
                    "{} is more than the limit {} (a request may not exceed its limit)",
                    r.show(q),
                    r.show(l)
                ),
            ),
            (Some(q), Some(l)) if r == Res::Gpu && q != l => w.err(
                &join(&rp, r.name()),
                format!(
                    "{} must equal the limit {} (GPUs are not shared)",
                    r.show(q),
                    r.show(l)
                ),
            ),
            // Kubernetes: a limit without a request requests the limit.
            (None, Some(l)) => r.set(&mut out.requests, l),
            _ => {}
        }
    }
    out
}

/// Bytes in the largest binary unit that divides them (`64Mi`, `4Pi`).
fn bytes(n: u64) -> String {
    for (unit, size) in [("Ei", 1u64 << 60), ("Pi", 1 << 50)] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{}{unit}", n / size);
        }
    }
    format_bytes_exact(n)
}

fn idx(r: Res) -> usize {
    Res::ALL.iter().position(|x| *x == r).unwrap_or(0)
}

/// One `requests` or `limits` (`limits` true) map; also which resources
/// were given.
fn list(w: &mut Walker, path: &str, v: Option<&Value>, limits: bool) -> (ResourceList, [bool; 5]) {
    let mut out = ResourceList::default();
    let mut given = [false; 5];
    let Some(v) = v else { return (out, given) };
    let Value::Object(m) = v else {
        w.err(path, format!("must be a mapping, not {}", show(v)));
        return (out, given);
    };
    let o = Obj { map: m };
    for (k, _) in m {
        if !NAMES.contains(&k.as_str()) {
            w.err(
                &join(path, k),
                format!("not supported by Outpost (resources: {})", NAMES.join(", ")),
            );
        }
    }
    for r in Res::ALL {
        let Some(q) = o.get(r.name()) else { continue };
        let p = join(path, r.name());
        if let Some(n) = quantity(w, &p, r, q, limits) {
            r.set(&mut out, n);
            given[idx(r)] = true;
        }
    }
    (out, given)
}

/// Reads one quantity of `r` (a string, or a number as YAML writes
/// `cpu: 2`), at most `r.max()`; the message states the range of a limit
/// when `limit` (its lower bound is checked by [`requirements`]).
fn quantity(w: &mut Walker, path: &str, r: Res, v: &Value, limit: bool) -> Option<u64> {
    let text = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => u.to_string(),
            // Rust prints floats in full decimal (1e42 as 1000...0), so a
            // huge YAML number is read as the number it is.
            (None, Some(f)) if f.is_finite() => format!("{f}"),
            _ => n.to_string(),
        },
        other => {
            w.err(
                path,
                format!(
                    "must be a quantity such as 250m, 64Mi or 2, not {}",
                    show(other)
                ),
            );
            return None;
        }
    };
    let range = r.range(limit);
    let scale = if r == Res::Cpu { 1000 } else { 1 };
    match parse(&text, r) {
        Err(e) => {
            w.err(path, e);
            None
        }
        Ok(q) => {
            if matches!(r, Res::Pids | Res::Gpu) && !q.whole() {
                w.err(path, format!("{text} must be a whole number"));
                return None;
            }
            match q.scaled(scale) {
                Some(n) if n <= u128::from(r.max()) => u64::try_from(n).ok(),
                _ => {
                    w.err(path, format!("{text} is out of range: must be {range}"));
                    None
                }
            }
        }
    }
}

/// A parsed quantity: `digits × 2^pow2 × 10^exp10`, exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parsed {
    /// Saturates at u128::MAX (then the value is out of every range).
    digits: u128,
    pow2: u32,
    exp10: i64,
}

impl Parsed {
    /// `self × scale`, rounded up to a whole number; None past u128.
    fn scaled(self, scale: u128) -> Option<u128> {
        if self.digits == 0 {
            return Some(0);
        }
        if self.digits == u128::MAX {
            return None;
        }
        let mut n = self.digits.checked_mul(scale)?;
        n = n.checked_mul(1u128.checked_shl(self.pow2)?)?;
        if self.exp10 >= 0 {
            let e = u32::try_from(self.exp10).ok()?;
            n.checked_mul(10u128.checked_pow(e)?)
        } else {
            let e = u32::try_from(-self.exp10).unwrap_or(u32::MAX);
            // Below 10^-38 of a unit: rounds up to one.
            Some(match 10u128.checked_pow(e) {
                Some(d) => n.div_ceil(d),
                None => 1,
            })
        }
    }

    fn whole(self) -> bool {
        self.scaled(1) == self.scaled_exact()
    }

    /// The value when it is a whole number, without rounding.
    fn scaled_exact(self) -> Option<u128> {
        if self.exp10 >= 0 {
            return self.scaled(1);
        }
        let d = 10u128.checked_pow(u32::try_from(-self.exp10).ok()?)?;
        let n = self.digits.checked_mul(1u128.checked_shl(self.pow2)?)?;
        (n % d == 0).then_some(n / d)
    }
}

/// Kubernetes' quantity syntax: a number (`1`, `1.5`, `.5`), then a binary
/// suffix (`Ki` .. `Ei`), a decimal one (`m`, `k`, `M` .. `E`) or an
/// exponent (`e3`, `E-2`).
fn parse(text: &str, r: Res) -> Result<Parsed, String> {
    let bad = || {
        format!(
            "{text:?} is not a quantity (e.g. {})",
            match r {
                Res::Cpu => "250m, 0.5, 2",
                Res::Memory | Res::Storage => "64Mi, 1Gi, 500M",
                Res::Pids | Res::Gpu => "1, 100",
            }
        )
    };
    let body = text.strip_prefix('+').unwrap_or(text);
    if body.starts_with('-') {
        return Err(format!("{text} is negative; quantities are at least 0"));
    }
    let int_end = body
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(body.len());
    let (int, rest) = body.split_at(int_end);
    let (frac, suffix) = match rest.strip_prefix('.') {
        Some(r) => {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            r.split_at(end)
        }
        None => ("", rest),
    };
    if int.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    let (pow2, exp10): (u32, i64) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        "m" | "u" | "n" if r == Res::Cpu => (
            0,
            match suffix {
                "m" => -3,
                "u" => -6,
                _ => -9,
            },
        ),
        "m" => return Err(format!("{text:?}: `m` means thousandths; did you mean M or Mi?")),
        "K" | "KB" | "kB" | "MB" | "GB" | "TB" | "KiB" | "MiB" | "GiB" | "TiB" => {
            return Err(format!(
                "{text:?}: `{suffix}` is not a Kubernetes unit; use k M G T (decimal) or Ki Mi Gi Ti (binary)"
            ))
        }
        s if s.starts_with(['e', 'E']) => {
            let e = &s[1..];
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            (0, e.parse::<i64>().map_err(|_| bad())?)
        }
        _ => {
            return Err(format!(
                "{text:?} has an unknown unit (units: Ki Mi Gi Ti Pi Ei, k M G T P E{})",
                if r == Res::Cpu { ", m" } else { "" }
            ))
        }
    };
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    // 38 digits fit u128; more are out of every range.
    let all = format!("{int}{frac}");
    let digits = if all.len() > 38 {
        u128::MAX
    } else if all.is_empty() {
        0
    } else {
        all.parse::<u128>().map_err(|_| bad())?
    };
    let frac_len = i64::try_from(frac.len()).unwrap_or(i64::MAX);
    Ok(Parsed {
        digits,
        pow2,
        exp10: exp10.saturating_sub(frac_len),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(r: Res, v: Value) -> Result<u64, String> {
        let mut w = Walker::default();
        quantity(&mut w, "q", r, &v, false).ok_or_else(|| w.problems[0].to_string())
    }

    #[test]
    fn quantities_read_exactly() {
        let cases: &[(Res, Value, u64)] = &[
            (Res::Cpu, json!("250m"), 250),
            (Res::Cpu, json!("0.5"), 500),
            (Res::Cpu, json!(".1"), 100),
            (Res::Cpu, json!(2), 2000),
            (Res::Cpu, json!(1.5), 1500),
            (Res::Cpu, json!("1.2345"), 1235),
            (Res::Cpu, json!("100000n"), 1),
            (Res::Cpu, json!("1e3"), 1_000_000),
            (Res::Memory, json!("64Mi"), 64 << 20),
            (Res::Memory, json!("1.5Gi"), 3 << 29),
            (Res::Memory, json!("500M"), 500_000_000),
            (Res::Memory, json!("129e6"), 129_000_000),
            (Res::Memory, json!(1000), 1000),
            (Res::Memory, json!("0"), 0),
            (Res::Memory, json!("4Pi"), MAX_MEMORY),
            (Res::Pids, json!("100"), 100),
            (Res::Pids, json!("4Mi"), MAX_PIDS),
            (Res::Gpu, json!(1), 1),
            (Res::Storage, json!("1Ei"), MAX_STORAGE),
        ];
        for (r, v, want) in cases {
            assert_eq!(one(*r, v.clone()), Ok(*want), "{r:?} {v}");
        }
    }

    #[test]
    fn overflow_is_refused_with_the_range() {
        let cases: &[(Res, Value, &str)] = &[
            (Res::Memory, json!(18_446_744_073_709_551_615u64), "q: 18446744073709551615 is out of range: must be from 0 to 4Pi"),
            (Res::Memory, json!(1.8446744073709552e19), "q: 18446744073709552000 is out of range: must be from 0 to 4Pi"),
            (Res::Memory, json!("18446744073709551616"), "q: 18446744073709551616 is out of range: must be from 0 to 4Pi"),
            (Res::Memory, json!("16Ei"), "q: 16Ei is out of range: must be from 0 to 4Pi"),
            (Res::Memory, json!("1e400"), "q: 1e400 is out of range: must be from 0 to 4Pi"),
            (Res::Memory, json!("1e"), "q: \"1e\" is not a quantity (e.g. 64Mi, 1Gi, 500M)"),
            (Res::Memory, json!("1e300"), "q: 1e300 is out of range: must be from 0 to 4Pi"),
            (Res::Memory, json!("9".repeat(60)), &format!("q: {} is out of range: must be from 0 to 4Pi", "9".repeat(60))),
            (Res::Pids, json!("18446744073709551616"), "q: 18446744073709551616 is out of range: must be from 0 to 4194304"),
            (Res::Pids, json!("4194305"), "q: 4194305 is out of range: must be from 0 to 4194304"),
            (Res::Cpu, json!("8193"), "q: 8193 is out of range: must be from 0 to 8192"),
            (Res::Gpu, json!("4294967296"), "q: 4294967296 is out of range: must be from 0 to 1024"),
            (Res::Gpu, json!("0.5"), "q: 0.5 must be a whole number"),
            (Res::Memory, json!("-1"), "q: -1 is negative; quantities are at least 0"),
            (Res::Memory, json!("500m"), "q: \"500m\": `m` means thousandths; did you mean M or Mi?"),
            (Res::Memory, json!("1GB"), "q: \"1GB\": `GB` is not a Kubernetes unit; use k M G T (decimal) or Ki Mi Gi Ti (binary)"),
            (Res::Cpu, json!("lots"), "q: \"lots\" is not a quantity (e.g. 250m, 0.5, 2)"),
            (Res::Cpu, json!(true), "q: must be a quantity such as 250m, 64Mi or 2, not true"),
        ];
        for (r, v, want) in cases {
            assert_eq!(one(*r, v.clone()).unwrap_err(), *want, "{r:?} {v}");
        }
    }

    fn reqs(v: Value) -> (ResourceRequirements, Vec<String>) {
        let mut w = Walker::default();
        let r = requirements(&mut w, "r", Some(&v));
        (r, w.problems.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn requests_limits_and_the_engines_minimums() {
        let (r, p) = reqs(
            json!({"limits": {"cpu": "1", "memory": "64Mi", "nvidia.com/gpu": 1}, "requests": {"cpu": "250m"}}),
        );
        assert!(p.is_empty(), "{p:?}");
        // A limit without a request requests the limit.
        assert_eq!(r.requests.0.memory_bytes, 64 << 20);
        assert_eq!(r.requests.0.gpus, 1);
        assert_eq!(r.requests.0.cpu_millis, 250);
        let (_, p) = reqs(json!({
            "requests": {"cpu": "2", "memory": "1Gi", "nvidia.com/gpu": 1, "hugepages-2Mi": "1Gi"},
            "limits": {"cpu": "1", "memory": "4Mi", "nvidia.com/gpu": 2, "outpost.dev/pids": 0},
            "claims": []
        }));
        assert_eq!(
            p,
            [
                "r.claims: not supported by Outpost",
                "r.requests.hugepages-2Mi: not supported by Outpost (resources: cpu, memory, ephemeral-storage, outpost.dev/pids, nvidia.com/gpu)",
                "r.requests.cpu: 2 is more than the limit 1 (a request may not exceed its limit)",
                "r.limits.memory: 4Mi is out of range: must be from 6Mi to 4Pi (the Docker engine refuses a smaller memory limit)",
                "r.requests.memory: 1Gi is more than the limit 4Mi (a request may not exceed its limit)",
                "r.limits.outpost.dev/pids: 0 is out of range: must be from 1 to 4194304 (leave it out for no limit)",
                "r.requests.nvidia.com/gpu: 1 must equal the limit 2 (GPUs are not shared)",
            ]
        );
        let (_, p) = reqs(json!({"limits": {"cpu": "5m"}}));
        assert_eq!(
            p,
            ["r.limits.cpu: 5m is out of range: must be from 10m to 8192 (the Docker engine refuses a smaller CPU limit)"]
        );
    }

    /// Every resource named in both requests and limits is compared, and a
    /// limit's message states the range a limit may take (its lower bound
    /// is the engine's, not 0).
    #[test]
    fn limits_state_their_own_range() {
        let (_, p) = reqs(json!({
            "requests": {"cpu": "2", "memory": "2Gi", "ephemeral-storage": "2Gi", "outpost.dev/pids": 200},
            "limits": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "1Gi", "outpost.dev/pids": 100},
        }));
        assert_eq!(
            p,
            [
                "r.requests.cpu: 2 is more than the limit 1 (a request may not exceed its limit)",
                "r.requests.memory: 2Gi is more than the limit 1Gi (a request may not exceed its limit)",
                "r.requests.ephemeral-storage: 2Gi is more than the limit 1Gi (a request may not exceed its limit)",
                "r.requests.outpost.dev/pids: 200 is more than the limit 100 (a request may not exceed its limit)",
            ]
        );
        let cases: &[(Value, &str)] = &[
            // One byte below the engine's 6 MiB.
            (json!({"memory": 6_291_455}), "r.limits.memory: 6291455 is out of range: must be from 6Mi to 4Pi (the Docker engine refuses a smaller memory limit)"),
            (json!({"memory": 18_446_744_073_709_551_615u64}), "r.limits.memory: 18446744073709551615 is out of range: must be from 6Mi to 4Pi"),
            (json!({"memory": "0"}), "r.limits.memory: 0 is out of range: must be from 6Mi to 4Pi (the Docker engine refuses a smaller memory limit)"),
            (json!({"outpost.dev/pids": "18446744073709551616"}), "r.limits.outpost.dev/pids: 18446744073709551616 is out of range: must be from 1 to 4194304"),
            (json!({"ephemeral-storage": "2Ei"}), "r.limits.ephemeral-storage: 2Ei is out of range: must be from 1 to 1Ei"),
            (json!({"cpu": "8193"}), "r.limits.cpu: 8193 is out of range: must be from 10m to 8192"),
            (json!({"nvidia.com/gpu": 1025}), "r.limits.nvidia.com/gpu: 1025 is out of range: must be from 0 to 1024"),
        ];
        for (limits, want) in cases {
            let (_, p) = reqs(json!({ "limits": limits }));
            assert_eq!(p, [*want], "{limits}");
        }
        // The bounds themselves are accepted.
        let (r, p) =
            reqs(json!({"limits": {"memory": "6Mi", "cpu": "10m", "outpost.dev/pids": 1}}));
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(r.limits.0.memory_bytes, MIN_MEMORY_LIMIT);
        assert_eq!(
            r.limits.0.memory_bytes, 6_291_456,
            "the Docker engine's linuxMinMemory"
        );
    }
}
