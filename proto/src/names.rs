//! Names and labels as operators type them, validated the Kubernetes way so
//! manifests and selectors behave as people expect.

use std::collections::BTreeMap;

/// Label key that places a node in a site.
pub const SITE_LABEL: &str = "topology.outpost.dev/site";
/// Well-known labels the agent sets itself.
pub const ARCH_LABEL: &str = "kubernetes.io/arch";
pub const OS_LABEL: &str = "kubernetes.io/os";
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// Most labels a node may carry; keeps a report bounded.
pub const MAX_LABELS: usize = 64;

/// Turns a host name into a valid node name: lowercase, every other
/// character to '-', at most 63 characters, trimmed of '-'; `fallback` when
/// nothing is left.
pub fn node_name_from_hostname(host: &str, fallback: &str) -> String {
    let name: String = host
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    let name = name.trim_matches('-');
    if name.is_empty() {
        fallback.to_string()
    } else {
        name.to_string()
    }
}

/// Checks a node name: an RFC 1123 DNS label (lowercase alphanumerics and
/// '-', starting and ending alphanumeric, at most 63 characters).
pub fn validate_node_name(name: &str) -> Result<(), String> {
    validate_dns_label(name).map_err(|why| format!("invalid node name {name:?}: {why}"))
}

fn validate_dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 63 {
        return Err(format!("must be at most 63 characters, not {}", s.len()));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("may contain only lowercase letters, digits and '-'".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

fn validate_label_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err("name part must be 1 to 63 characters".into());
    }
    let ok_inner = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let bytes = s.as_bytes();
    if !bytes.iter().all(|&b| ok_inner(b))
        || !bytes[0].is_ascii_alphanumeric()
        || !bytes[bytes.len() - 1].is_ascii_alphanumeric()
    {
        return Err(
            "name part must be alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
                .into(),
        );
    }
    Ok(())
}

/// Checks a label key (`[prefix/]name`, prefix a DNS subdomain).
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() || p.len() > 253 {
            return Err(format!(
                "label key {key:?}: prefix must be 1 to 253 characters"
            ));
        }
        for part in p.split('.') {
            validate_dns_label(part).map_err(|why| format!("label key {key:?}: prefix {why}"))?;
        }
    }
    validate_label_name(name).map_err(|why| format!("label key {key:?}: {why}"))
}

/// Checks a label value (empty, or like a label name).
pub fn validate_label_value(key: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    validate_label_name(value).map_err(|why| format!("label {key}={value:?}: value {why}"))
}

/// Parses `k=v,k2=v2` into labels, reporting every bad entry at once.
/// The short key `site` stands for [`SITE_LABEL`].
pub fn parse_labels(spec: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            problems.push(format!("{item:?} is not key=value"));
            continue;
        };
        let k = if k == "site" { SITE_LABEL } else { k };
        match validate_label_key(k).and_then(|()| validate_label_value(k, v)) {
            Ok(()) => {
                out.insert(k.to_string(), v.to_string());
            }
            Err(e) => problems.push(e),
        }
    }
    if out.len() > MAX_LABELS {
        problems.push(format!(
            "{} labels given, at most {MAX_LABELS} allowed",
            out.len()
        ));
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems.join("; "))
    }
}

/// Validates a whole label map received from a peer.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!(
            "{} labels, at most {MAX_LABELS} allowed",
            labels.len()
        ));
    }
    let problems: Vec<String> = labels
        .iter()
        .filter_map(|(k, v)| {
            validate_label_key(k)
                .and_then(|()| validate_label_value(k, v))
                .err()
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        for ok in ["a", "edge-01", "x".repeat(63).as_str()] {
            assert!(validate_node_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Edge", "a_b", "a.b", &"x".repeat(64)] {
            assert!(validate_node_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostnames_become_node_names() {
        assert_eq!(
            node_name_from_hostname("Pi-Shop_12.local\n", "edge"),
            "pi-shop-12-local"
        );
        assert_eq!(node_name_from_hostname("--", "edge"), "edge");
        assert!(validate_node_name(&node_name_from_hostname(&"A".repeat(100), "x")).is_ok());
    }

    #[test]
    fn labels_parse_and_report_all_problems() {
        let l = parse_labels("site=shop-12, tier=edge").unwrap();
        assert_eq!(l[SITE_LABEL], "shop-12");
        assert_eq!(l["tier"], "edge");
        let err = parse_labels("nokey,bad/=x,ok=fine,k=-v").unwrap_err();
        assert!(err.contains("\"nokey\" is not key=value"), "{err}");
        assert!(err.contains("bad/"), "{err}");
        assert!(err.contains("-v"), "{err}");
        assert!(!err.contains("\"fine\""), "{err}");
    }
}
