//! The walker every kind's validation is written with: it opens mappings
//! against the keys a kind knows, reads typed values, and collects every
//! problem and warning with its path, so one pass reports everything.
//!
//! JSON `null` is "not given", as in Kubernetes (`creationTimestamp: null`
//! is in every exported manifest). Strings must be strings: a number or a
//! boolean in a string field is refused with a hint to quote it, as
//! Kubernetes refuses it, because reading `yes` as `"true"` or `0755` as
//! `"493"` would silently change what the author meant.

use super::Problem;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Most entries of the lists the scheduler reads (tolerations, affinity
/// terms, match expressions, their values, node selectors): generous for
/// any real manifest, small enough that one pod stays cheap to schedule.
pub const MAX_LIST: usize = 64;

/// How a kind treats one of its keys.
#[derive(Debug, Clone, Copy)]
pub enum Treat {
    /// Read by the kind's validation.
    Use,
    /// Only informs (status, server-set metadata): accepted, dropped, and
    /// reported as a warning saying why.
    Inform(&'static str),
    /// Accepted with a warning when its value is what Outpost does anyway;
    /// any other value is an error.
    InformIf(Harmless, &'static str),
}

/// Values of an [`Treat::InformIf`] key that change nothing.
#[derive(Debug, Clone, Copy)]
pub enum Harmless {
    False,
    /// `{}` or `[]`.
    Empty,
    /// One of these strings.
    OneOf(&'static [&'static str]),
}

impl Harmless {
    fn accepts(self, v: &Value) -> bool {
        match self {
            Harmless::False => v == &Value::Bool(false),
            Harmless::Empty => match v {
                Value::Object(m) => m.is_empty(),
                Value::Array(a) => a.is_empty(),
                _ => false,
            },
            Harmless::OneOf(allowed) => v.as_str().is_some_and(|s| allowed.contains(&s)),
        }
    }
}

/// `path.key` (or `key` at the top).
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `path[i]`.
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// A short rendering of a value for messages.
pub fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        let mut cut = 77;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &s[..cut])
    } else {
        s
    }
}

/// An opened mapping: its path and its keys (nulls read as absent).
#[derive(Debug, Clone, Copy)]
pub struct Obj<'v> {
    pub map: &'v Map<String, Value>,
}

impl<'v> Obj<'v> {
    pub fn get(&self, key: &str) -> Option<&'v Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

/// Collects problems and warnings.
#[derive(Debug, Default)]
pub struct Walker {
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
}

impl Walker {
    pub fn err(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    pub fn warn(&mut self, path: &str, message: impl std::fmt::Display) {
        self.warnings.push(if path.is_empty() {
            message.to_string()
        } else {
            format!("{path}: {message}")
        });
    }

    /// Opens the mapping at `path`, checking its keys against `keys`:
    /// unknown keys are errors, informational ones warnings.
    pub fn obj<'v>(&mut self, path: &str, v: &'v Value, keys: &[(&str, Treat)]) -> Option<Obj<'v>> {
        self.obj_hint(path, v, keys, "")
    }

    /// [`Walker::obj`], with `hint` appended to "not supported" errors
    /// (` (volume types: hostPath, emptyDir)`).
    pub fn obj_hint<'v>(
        &mut self,
        path: &str,
        v: &'v Value,
        keys: &[(&str, Treat)],
        hint: &str,
    ) -> Option<Obj<'v>> {
        let Value::Object(map) = v else {
            self.err(path, format!("must be a mapping, not {}", show(v)));
            return None;
        };
        for (k, val) in map {
            if val.is_null() {
                continue;
            }
            let p = join(path, k);
            match keys.iter().find(|(name, _)| name == k).map(|(_, t)| *t) {
                Some(Treat::Use) => {}
                Some(Treat::Inform(why)) => self.warn(&p, format_args!("ignored: {why}")),
                Some(Treat::InformIf(harmless, why)) => {
                    if harmless.accepts(val) {
                        self.warn(&p, format_args!("ignored: {why}"));
                    } else if let Harmless::OneOf(allowed) = harmless {
                        self.err(
                            &p,
                            format!(
                                "{} is not supported by Outpost ({why}; accepted: {})",
                                show(val),
                                allowed.join(", ")
                            ),
                        );
                    } else {
                        self.err(&p, format!("not supported by Outpost ({why})"));
                    }
                }
                None => self.err(&p, format!("not supported by Outpost{hint}")),
            }
        }
        Some(Obj { map })
    }

    /// The value at `key`, or an "is required" problem.
    pub fn required<'v>(&mut self, path: &str, o: &Obj<'v>, key: &str) -> Option<&'v Value> {
        let v = o.get(key);
        if v.is_none() {
            self.err(&join(path, key), "is required");
        }
        v
    }

    pub fn string(&mut self, path: &str, v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(_) | Value::Bool(_) => {
                self.err(
                    path,
                    format!("must be a string, not {v} (quote it: \"{v}\")"),
                );
                None
            }
            other => {
                self.err(path, format!("must be a string, not {}", show(other)));
                None
            }
        }
    }

    /// A string of at most `max` bytes.
    pub fn text(&mut self, path: &str, v: &Value, max: usize) -> Option<String> {
        let s = self.string(path, v)?;
        if s.len() > max {
            self.err(path, format!("is {} bytes; at most {max} allowed", s.len()));
            return None;
        }
        Some(s)
    }

    /// An optional string field of `o`.
    pub fn opt_text(&mut self, path: &str, o: &Obj<'_>, key: &str, max: usize) -> Option<String> {
        let v = o.get(key)?;
        self.text(&join(path, key), v, max)
    }

    /// One of `allowed`, by its exact spelling.
    pub fn one_of(&mut self, path: &str, v: &Value, allowed: &[&str]) -> Option<String> {
        let s = self.string(path, v)?;
        if allowed.contains(&s.as_str()) {
            Some(s)
        } else {
            self.err(
                path,
                format!("{} is not one of {}", show(v), allowed.join(", ")),
            );
            None
        }
    }

    /// A whole number in `min..=max`.
    pub fn int(&mut self, path: &str, v: &Value, min: i64, max: i64) -> Option<i64> {
        let n = match v {
            Value::Number(n) => n.as_i64().or_else(|| n.as_u64().map(|_| i64::MAX)),
            _ => None,
        };
        let range = if max == i64::MAX {
            format!("at least {min}")
        } else {
            format!("from {min} to {max}")
        };
        match n {
            Some(n) if n >= min && n <= max && !is_saturated(v) => Some(n),
            Some(_) => {
                self.err(
                    path,
                    format!("{} is out of range: must be {range}", show(v)),
                );
                None
            }
            None => {
                self.err(
                    path,
                    format!("must be a whole number {range}, not {}", show(v)),
                );
                None
            }
        }
    }

    /// An optional whole-number field of `o`.
    pub fn opt_int(
        &mut self,
        path: &str,
        o: &Obj<'_>,
        key: &str,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        let v = o.get(key)?;
        self.int(&join(path, key), v, min, max)
    }

    /// A port number, 1 to 65535.
    pub fn port(&mut self, path: &str, v: &Value) -> Option<u16> {
        self.int(path, v, 1, 65535)
            .and_then(|n| u16::try_from(n).ok())
    }

    pub fn bool(&mut self, path: &str, v: &Value) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                self.err(path, format!("must be true or false, not {}", show(other)));
                None
            }
        }
    }

    /// An optional boolean field of `o` (false when absent or wrong).
    pub fn flag(&mut self, path: &str, o: &Obj<'_>, key: &str) -> bool {
        o.get(key)
            .and_then(|v| self.bool(&join(path, key), v))
            .unwrap_or(false)
    }

    /// The entries of a list, at most `max` of them (the rest are reported
    /// once and not read).
    pub fn list<'v>(&mut self, path: &str, v: Option<&'v Value>, max: usize) -> &'v [Value] {
        match v {
            None => &[],
            Some(Value::Array(a)) => {
                if a.len() > max {
                    self.err(
                        path,
                        format!("has {} entries; at most {max} allowed", a.len()),
                    );
                    &a[..max]
                } else {
                    a
                }
            }
            Some(other) => {
                self.err(path, format!("must be a list, not {}", show(other)));
                &[]
            }
        }
    }

    /// A list of strings, each at most `max_len` bytes.
    pub fn strings(
        &mut self,
        path: &str,
        v: Option<&Value>,
        max: usize,
        max_len: usize,
    ) -> Vec<String> {
        let items = self.list(path, v, max);
        items
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.text(&index(path, i), s, max_len))
            .collect()
    }

    /// A mapping of strings to strings, each pair checked by `check`.
    pub fn string_map(
        &mut self,
        path: &str,
        v: Option<&Value>,
        max: usize,
        check: impl Fn(&str, &str) -> Result<(), String>,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(v) = v else { return out };
        let Value::Object(m) = v else {
            self.err(path, format!("must be a mapping, not {}", show(v)));
            return out;
        };
        if m.len() > max {
            self.err(
                path,
                format!("has {} entries; at most {max} allowed", m.len()),
            );
            return out;
        }
        for (k, val) in m {
            let p = format!("{path}[{k:?}]");
            let Some(val) = self.string(&p, val) else {
                continue;
            };
            match check(k, &val) {
                Ok(()) => {
                    out.insert(k.clone(), val);
                }
                Err(e) => self.err(path, e),
            }
        }
        out
    }
}

/// A JSON number beyond i64 (read as `i64::MAX` above) is out of range.
fn is_saturated(v: &Value) -> bool {
    matches!(v, Value::Number(n) if n.as_i64().is_none())
}

// ---- names ----

/// An RFC 1123 DNS label: pods, Services, namespaces, containers, volumes,
/// nodes.
pub fn dns_label(s: &str) -> Result<(), String> {
    outpost_proto::pod::validate_dns_label("name", s).map(|_| ())
}

/// An RFC 1123 DNS subdomain (at most 253 characters of dot-separated
/// labels, each lowercase alphanumerics and '-'): Deployments,
/// ReplicaSets, PriorityClasses.
pub fn dns_subdomain(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a valid name: use at most 253 lower-case letters, digits, '-' and '.', \
             starting and ending with a letter or digit",
            s.chars().take(80).collect::<String>()
        ))
    }
}

/// An IANA service name (named ports): at most 15 lower-case letters,
/// digits and '-', at least one letter, no '-' at either end or twice in a
/// row.
pub fn port_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid port name: use at most 15 lower-case letters, digits and '-', \
             with at least one letter"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        for ok in ["a", "web-1", "a.b.c", &"x".repeat(253)] {
            assert!(dns_subdomain(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "a..b", "-a", "a-", "a_b", &"x".repeat(254)] {
            assert!(dns_subdomain(bad).is_err(), "{bad}");
        }
        for ok in ["http", "h2", "web-api", "a23456789012345"] {
            assert!(port_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "80", "a--b", "-a", "Http", "a234567890123456"] {
            assert!(port_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_checked_and_informational_ones_warned() {
        let mut w = Walker::default();
        let v = json!({"a": 1, "b": 2, "c": false, "d": true, "e": "x", "f": null, "g": 1});
        let o = w
            .obj(
                "spec",
                &v,
                &[
                    ("a", Treat::Use),
                    ("b", Treat::Inform("b informs")),
                    ("c", Treat::InformIf(Harmless::False, "no c")),
                    ("d", Treat::InformIf(Harmless::False, "no d")),
                    ("e", Treat::InformIf(Harmless::OneOf(&["y"]), "only y")),
                ],
            )
            .unwrap();
        assert!(o.get("f").is_none());
        let problems: Vec<String> = w.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "spec.d: not supported by Outpost (no d)",
                "spec.e: \"x\" is not supported by Outpost (only y; accepted: y)",
                "spec.g: not supported by Outpost",
            ]
        );
        assert_eq!(
            w.warnings,
            ["spec.b: ignored: b informs", "spec.c: ignored: no c"]
        );
    }

    #[test]
    fn typed_reads() {
        let mut w = Walker::default();
        assert_eq!(w.int("n", &json!(5), 0, 10), Some(5));
        assert_eq!(w.int("n", &json!(11), 0, 10), None);
        assert_eq!(
            w.int("n", &json!(18_446_744_073_709_551_615u64), 0, i64::MAX),
            None
        );
        assert_eq!(w.int("n", &json!(1.5), 0, 10), None);
        assert_eq!(w.string("s", &json!(8080)), None);
        assert_eq!(w.list("l", Some(&json!([1, 2, 3])), 2).len(), 2);
        let p: Vec<String> = w.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            p,
            [
                "n: 11 is out of range: must be from 0 to 10",
                "n: 18446744073709551615 is out of range: must be at least 0",
                "n: must be a whole number from 0 to 10, not 1.5",
                "s: must be a string, not 8080 (quote it: \"8080\")",
                "l: has 3 entries; at most 2 allowed",
            ]
        );
    }
}
