//! Key layout in the store, after Kubernetes' etcd layout:
//!
//! | key | value |
//! |---|---|
//! | `/registry/{resource}/{namespace}/{name}` | a namespaced object (JSON) |
//! | `/registry/{resource}/{name}` | a cluster-scoped object (JSON) |
//! | `/outpost/pki/{file}` | CA and server certificate material |
//! | `/outpost/tokens/{id}` | bootstrap tokens (hashed secret) |
//! | `/outpost/events/{seq:020}` | the event log |
//! | `/outpost/meta/{name}` | controller bookkeeping |

/// Prefix of every object.
pub const REGISTRY: &str = "/registry/";
pub const PKI: &str = "/outpost/pki/";
pub const TOKENS: &str = "/outpost/tokens/";
pub const EVENTS: &str = "/outpost/events/";
pub const META: &str = "/outpost/meta/";

/// The first key after every key that starts with `prefix` (etcd's
/// `clientv3.GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &str) -> String {
    let mut b = prefix.as_bytes().to_vec();
    while let Some(last) = b.pop() {
        if last < 0x7f {
            b.push(last + 1);
            // Keys are ASCII here (names are DNS labels), so this stays UTF-8.
            return String::from_utf8(b).unwrap_or_default();
        }
    }
    // Everything: an empty end means "to the end" only for range callers
    // that ask for it; use the highest ASCII instead.
    "\u{7f}".to_string()
}

/// Key of an object of `resource` (plural, e.g. `pods`).
pub fn object(resource: &str, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("{REGISTRY}{resource}/{name}")
    } else {
        format!("{REGISTRY}{resource}/{namespace}/{name}")
    }
}

/// Prefix of all objects of `resource`, or of those in `namespace`.
pub fn objects(resource: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{REGISTRY}{resource}/{ns}/"),
        _ => format!("{REGISTRY}{resource}/"),
    }
}

/// Splits an object key into (resource, namespace, name); the namespace is
/// empty for cluster-scoped keys.
pub fn parse_object(key: &str) -> Option<(&str, &str, &str)> {
    let rest = key.strip_prefix(REGISTRY)?;
    let mut parts = rest.splitn(3, '/');
    let resource = parts.next()?;
    let a = parts.next()?;
    match parts.next() {
        Some(name) => Some((resource, a, name)),
        None => Some((resource, "", a)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(
            object("pods", "default", "web"),
            "/registry/pods/default/web"
        );
        assert_eq!(object("nodes", "", "edge-1"), "/registry/nodes/edge-1");
        assert_eq!(
            parse_object("/registry/pods/default/web"),
            Some(("pods", "default", "web"))
        );
        assert_eq!(
            parse_object("/registry/nodes/edge-1"),
            Some(("nodes", "", "edge-1"))
        );
        assert_eq!(prefix_end("/registry/pods/"), "/registry/pods0");
        assert!("/registry/pods/zzz" < prefix_end("/registry/pods/").as_str());
        assert!("/registry/podsa" > prefix_end("/registry/pods/").as_str());
    }
}
