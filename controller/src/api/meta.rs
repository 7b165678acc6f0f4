//! Object metadata in Kubernetes' shape: what every kind carries.
//!
//! `ObjectMeta` is serialised exactly as Kubernetes' `metadata` is (camelCase,
//! RFC 3339 times), because JSON in Kubernetes shape is the stable form of
//! every object: in the store, on the operator API and in `-o json`.
//! `resourceVersion` is the store's `mod_revision` of the object; the store
//! fills it in on read, so what is stored never carries a stale one.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

/// The namespace of objects that name none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A wall-clock instant in milliseconds since the Unix epoch, written as
/// RFC 3339 with milliseconds (`2026-12-02T06:36:18.123Z`), as Kubernetes'
/// `metav1.MicroTime` is. Controllers take `now` as one of these, so a
/// virtual clock drives them the same way the real one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(pub u64);

impl Time {
    pub fn ms(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating.
    pub fn plus(self, d: std::time::Duration) -> Time {
        Time(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    /// Time elapsed from `earlier` to `self` (zero if `earlier` is later).
    pub fn since(self, earlier: Time) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&outpost_proto::units::rfc3339(self.0))
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&outpost_proto::units::rfc3339(self.0))
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Time, D::Error> {
        let s = String::deserialize(d)?;
        parse_rfc3339(&s)
            .map(Time)
            .map_err(serde::de::Error::custom)
    }
}

pub use outpost_proto::units::parse_rfc3339;

/// A reference from a dependent to its owner (a Pod to its ReplicaSet, a
/// ReplicaSet to its Deployment). The garbage collector deletes dependents
/// whose owners are gone, unless they were orphaned.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub controller: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub block_owner_deletion: bool,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Kubernetes object metadata.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub generate_name: String,
    /// Empty for cluster-scoped kinds.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// The store's mod_revision of this object, as a decimal string.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    /// Bumped by the API on every change of `spec` (never of `status`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<Time>,
    /// Set when deletion was requested and the object waits for something
    /// (a node stopping the pod's containers, finalizers) before it goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
}

impl ObjectMeta {
    /// Metadata naming `namespace/name` (empty namespace: cluster-scoped).
    pub fn named(namespace: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: name.to_string(),
            namespace: namespace.to_string(),
            ..ObjectMeta::default()
        }
    }

    /// The owner reference marked `controller: true`, if any.
    pub fn controller_ref(&self) -> Option<&OwnerReference> {
        self.owner_references.iter().find(|r| r.controller)
    }

    /// The store revision this copy was read at (0 if never stored).
    pub fn revision(&self) -> u64 {
        self.resource_version.parse().unwrap_or(0)
    }

    pub fn is_deleting(&self) -> bool {
        self.deletion_timestamp.is_some()
    }
}

/// `True` / `False` / `Unknown`, as in every Kubernetes condition.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConditionStatus {
    True,
    False,
    #[default]
    Unknown,
}

impl ConditionStatus {
    pub fn from_bool(b: bool) -> ConditionStatus {
        if b {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// An integer or a percentage (`maxSurge: 25%`, `targetPort: http`): kept
/// as written, resolved where it is used.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl IntOrString {
    /// Resolves a count or percentage against `total`, rounding up or down
    /// as Kubernetes' `GetScaledValueFromIntOrPercent` does.
    pub fn scaled(&self, total: i64, round_up: bool) -> Result<i64, String> {
        match self {
            IntOrString::Int(n) => Ok(*n),
            IntOrString::String(s) => {
                let p = s
                    .strip_suffix('%')
                    .and_then(|p| p.parse::<i64>().ok())
                    .ok_or_else(|| format!("{s:?} is neither a number nor a percentage"))?;
                let v = total.saturating_mul(p);
                Ok(if round_up {
                    (v + 99).div_euclid(100)
                } else {
                    v.div_euclid(100)
                })
            }
        }
    }
}

impl std::fmt::Display for IntOrString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IntOrString::Int(n) => write!(f, "{n}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        for ms in [1u64, 1_000, 1_764_657_378_123, 4_102_444_800_000] {
            let s = outpost_proto::units::rfc3339(ms);
            assert_eq!(parse_rfc3339(&s), Ok(ms), "{s}");
        }
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Ok(0));
        assert_eq!(parse_rfc3339("2026-12-02T06:36:18Z"), Ok(1_796_193_378_000));
        assert_eq!(
            parse_rfc3339("2026-12-02T06:36:18.5Z"),
            Ok(1_796_193_378_500)
        );
        for bad in [
            "",
            "2026-13-02T06:36:18Z",
            "2026-12-02",
            "2026-12-02T06:36:18",
            "x026-12-02T06:36:18Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percentages_scale_like_kubernetes() {
        let p = IntOrString::String("25%".into());
        assert_eq!(p.scaled(10, true), Ok(3));
        assert_eq!(p.scaled(10, false), Ok(2));
        assert_eq!(IntOrString::Int(2).scaled(10, true), Ok(2));
        assert!(IntOrString::String("x".into()).scaled(10, true).is_err());
    }

    #[test]
    fn metadata_serialises_in_kubernetes_shape() {
        let mut m = ObjectMeta::named("default", "web");
        m.creation_timestamp = Some(Time(1_000));
        m.labels.insert("app".into(), "web".into());
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name": "web", "namespace": "default", "creationTimestamp": "1970-01-01T00:00:01.000Z", "labels": {"app": "web"}})
        );
        let back: ObjectMeta = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }
}
