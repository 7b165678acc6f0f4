//! Resource lists (`requests`, `limits`, `capacity`, `allocatable`) as
//! Kubernetes writes them: a map of resource names to quantity strings.
//! Inside they are numbers ([`Resources`]), so the scheduler adds and
//! compares without parsing.

use outpost_proto::units::parse_quantity;
use outpost_proto::Resources;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

/// Resource names Outpost schedules and limits.
pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
pub const PIDS: &str = "outpost.dev/pids";
pub const GPU: &str = "nvidia.com/gpu";
pub const NAMES: [&str; 5] = [CPU, MEMORY, EPHEMERAL_STORAGE, PIDS, GPU];

/// A resource list; zero means "not set".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResourceList(pub Resources);

/// `250m`, `1`, `1500m`.
pub fn format_cpu(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// Bytes in the largest binary unit that divides them exactly (`64Mi`,
/// `1536Ki`, `1000`), so the string reads back to the same number.
pub fn format_bytes_exact(b: u64) -> String {
    for (unit, size) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if b >= size && b.is_multiple_of(size) {
            return format!("{}{unit}", b / size);
        }
    }
    b.to_string()
}

/// Parses a CPU quantity into millicores: `250m`, `0.5`, `2`.
pub fn parse_cpu(s: &str) -> Result<u64, String> {
    let hint = || format!("{s:?} is not a CPU quantity (e.g. 250m, 0.5, 2)");
    let s = s.trim();
    match s.strip_suffix('m') {
        Some(m) => m.parse::<u64>().map_err(|_| hint()),
        None => {
            let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
            if (whole.is_empty() && frac.is_empty())
                || frac.len() > 3
                || !frac.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(hint());
            }
            let whole: u64 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| hint())?
            };
            let frac_m: u64 = format!("{frac:0<3}").parse().unwrap_or(0);
            whole
                .checked_mul(1000)
                .and_then(|w| w.checked_add(frac_m))
                .ok_or_else(hint)
        }
    }
}

impl ResourceList {
    /// The non-zero entries, by name.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let r = &self.0;
        let mut out = Vec::new();
        if r.cpu_millis > 0 {
            out.push((CPU, format_cpu(r.cpu_millis)));
        }
        if r.memory_bytes > 0 {
            out.push((MEMORY, format_bytes_exact(r.memory_bytes)));
        }
        if r.ephemeral_storage_bytes > 0 {
            out.push((
                EPHEMERAL_STORAGE,
                format_bytes_exact(r.ephemeral_storage_bytes),
            ));
        }
        if r.pids > 0 {
            out.push((PIDS, r.pids.to_string()));
        }
        if r.gpus > 0 {
            out.push((GPU, r.gpus.to_string()));
        }
        out
    }

    /// Sets one resource from its quantity string.
    pub fn set(&mut self, name: &str, quantity: &str) -> Result<(), String> {
        let r = &mut self.0;
        match name {
            CPU => r.cpu_millis = parse_cpu(quantity)?,
            MEMORY => r.memory_bytes = parse_quantity(quantity)?,
            EPHEMERAL_STORAGE => r.ephemeral_storage_bytes = parse_quantity(quantity)?,
            PIDS => r.pids = parse_quantity(quantity)?,
            GPU => {
                let n = parse_quantity(quantity)?;
                r.gpus = u32::try_from(n).map_err(|_| format!("{quantity:?} GPUs is too many"))?;
            }
            other => {
                return Err(format!(
                    "resource {other:?} is not supported by Outpost (supported: {})",
                    NAMES.join(", ")
                ))
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.0 == Resources::default()
    }
}

impl Serialize for ResourceList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m: BTreeMap<&str, String> = self.entries().into_iter().collect();
        m.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ResourceList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ResourceList, D::Error> {
        let m = BTreeMap::<String, String>::deserialize(d)?;
        let mut r = ResourceList::default();
        for (k, v) in m {
            r.set(&k, &v).map_err(serde::de::Error::custom)?;
        }
        Ok(r)
    }
}

/// `a + b` per resource, saturating.
pub fn add(a: &Resources, b: &Resources) -> Resources {
    Resources {
        cpu_millis: a.cpu_millis.saturating_add(b.cpu_millis),
        memory_bytes: a.memory_bytes.saturating_add(b.memory_bytes),
        pids: a.pids.saturating_add(b.pids),
        ephemeral_storage_bytes: a
            .ephemeral_storage_bytes
            .saturating_add(b.ephemeral_storage_bytes),
        gpus: a.gpus.saturating_add(b.gpus),
    }
}

/// `a - b` per resource, saturating at zero.
pub fn sub(a: &Resources, b: &Resources) -> Resources {
    Resources {
        cpu_millis: a.cpu_millis.saturating_sub(b.cpu_millis),
        memory_bytes: a.memory_bytes.saturating_sub(b.memory_bytes),
        pids: a.pids.saturating_sub(b.pids),
        ephemeral_storage_bytes: a
            .ephemeral_storage_bytes
            .saturating_sub(b.ephemeral_storage_bytes),
        gpus: a.gpus.saturating_sub(b.gpus),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_round_trip_through_json() {
        let mut r = ResourceList::default();
        r.set(CPU, "250m").unwrap();
        r.set(MEMORY, "64Mi").unwrap();
        r.set(PIDS, "100").unwrap();
        r.set(GPU, "1").unwrap();
        let v = serde_json::to_value(r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cpu": "250m", "memory": "64Mi", "outpost.dev/pids": "100", "nvidia.com/gpu": "1"})
        );
        let back: ResourceList = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        assert_eq!(parse_cpu("0.5"), Ok(500));
        assert_eq!(parse_cpu("2"), Ok(2000));
        assert!(parse_cpu("1.2345").is_err());
        assert!(r
            .set("example.com/foo", "1")
            .unwrap_err()
            .contains("not supported"));
        assert_eq!(format_bytes_exact(1536 * 1024), "1536Ki");
        assert_eq!(format_bytes_exact(1000), "1000");
    }
}
