//! Label selectors: the `matchLabels`/`matchExpressions` form objects carry
//! (`spec.selector` of a ReplicaSet, pod affinity terms, spread
//! constraints) and the string form operators type (`-l app=web,tier!=db`).
//!
//! Both turn into one [`Selector`], a conjunction of requirements, which is
//! what everything else matches with.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Operators of a label requirement.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Operator {
    pub fn name(self) -> &'static str {
        match self {
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
        }
    }
}

/// One `matchExpressions` entry.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl LabelSelectorRequirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.key);
        match self.operator {
            Operator::In => v.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => v.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => v.is_some(),
            Operator::DoesNotExist => v.is_none(),
        }
    }
}

/// Kubernetes' `LabelSelector`. An empty selector matches everything (as in
/// Kubernetes, where callers that must not match everything check
/// [`LabelSelector::is_empty`] themselves).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

impl LabelSelector {
    pub fn from_labels(labels: BTreeMap<String, String>) -> LabelSelector {
        LabelSelector {
            match_labels: labels,
            match_expressions: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// The string form, as kubectl prints selectors (`app=web,tier in (a,b)`).
    pub fn to_query(&self) -> String {
        Selector::from(self).to_string()
    }
}

/// A conjunction of requirements: the one matcher behind both forms.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector(pub Vec<LabelSelectorRequirement>);

impl From<&LabelSelector> for Selector {
    fn from(s: &LabelSelector) -> Selector {
        let mut reqs: Vec<LabelSelectorRequirement> = s
            .match_labels
            .iter()
            .map(|(k, v)| LabelSelectorRequirement {
                key: k.clone(),
                operator: Operator::In,
                values: vec![v.clone()],
            })
            .collect();
        reqs.extend(s.match_expressions.iter().cloned());
        Selector(reqs)
    }
}

impl Selector {
    pub fn everything() -> Selector {
        Selector(Vec::new())
    }

    pub fn is_everything(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }

    /// Parses kubectl's selector syntax: `k=v`, `k==v`, `k!=v`,
    /// `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, joined by commas.
    pub fn parse(s: &str) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        let s = s.trim();
        if s.is_empty() {
            return Ok(Selector::everything());
        }
        for part in split_top_level(s)? {
            let part = part.trim();
            let bad = || {
                format!("selector {part:?}: expected k=v, k!=v, k in (a,b), k notin (a,b), k or !k")
            };
            if part.is_empty() {
                return Err(bad());
            }
            let req = if let Some(k) = part.strip_prefix('!') {
                LabelSelectorRequirement {
                    key: key(k.trim()).map_err(|_| bad())?,
                    operator: Operator::DoesNotExist,
                    values: Vec::new(),
                }
            } else if let Some((k, v)) = part.split_once("!=") {
                LabelSelectorRequirement {
                    key: key(k.trim()).map_err(|_| bad())?,
                    operator: Operator::NotIn,
                    values: vec![v.trim().to_string()],
                }
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                LabelSelectorRequirement {
                    key: key(k.trim()).map_err(|_| bad())?,
                    operator: Operator::In,
                    values: vec![v.trim().to_string()],
                }
            } else if let Some((k, rest)) = split_word(part, " notin ") {
                LabelSelectorRequirement {
                    key: key(k).map_err(|_| bad())?,
                    operator: Operator::NotIn,
                    values: set(rest).ok_or_else(bad)?,
                }
            } else if let Some((k, rest)) = split_word(part, " in ") {
                LabelSelectorRequirement {
                    key: key(k).map_err(|_| bad())?,
                    operator: Operator::In,
                    values: set(rest).ok_or_else(bad)?,
                }
            } else {
                LabelSelectorRequirement {
                    key: key(part).map_err(|_| bad())?,
                    operator: Operator::Exists,
                    values: Vec::new(),
                }
            };
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|r| match (r.operator, r.values.len()) {
                (Operator::In, 1) => format!("{}={}", r.key, r.values[0]),
                (Operator::NotIn, 1) => format!("{}!={}", r.key, r.values[0]),
                (Operator::In, _) => format!("{} in ({})", r.key, r.values.join(",")),
                (Operator::NotIn, _) => format!("{} notin ({})", r.key, r.values.join(",")),
                (Operator::Exists, _) => r.key.clone(),
                (Operator::DoesNotExist, _) => format!("!{}", r.key),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

fn key(k: &str) -> Result<String, ()> {
    if k.is_empty() || k.contains([' ', ',', '(', ')', '=', '!']) {
        Err(())
    } else {
        Ok(k.to_string())
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(s: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("selector {s:?}: unbalanced parentheses"));
                }
            }
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("selector {s:?}: unbalanced parentheses"));
    }
    out.push(&s[start..]);
    Ok(out)
}

fn split_word<'a>(s: &'a str, word: &str) -> Option<(&'a str, &'a str)> {
    let i = s.find(word)?;
    Some((s[..i].trim(), s[i + word.len()..].trim()))
}

fn set(s: &str) -> Option<Vec<String>> {
    let inner = s.strip_prefix('(')?.strip_suffix(')')?;
    let v: Vec<String> = inner
        .split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect();
    (!v.is_empty()).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn string_selectors_parse_and_match() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let db = labels(&[("app", "db")]);
        let cases: &[(&str, bool, bool)] = &[
            ("app=web", true, false),
            ("app==web", true, false),
            ("app!=web", false, true),
            ("app in (web, db)", true, true),
            ("app notin (web)", false, true),
            ("tier", true, false),
            ("!tier", false, true),
            ("app=web,tier=front", true, false),
            ("", true, true),
        ];
        for (s, w, d) in cases {
            let sel = Selector::parse(s).unwrap();
            assert_eq!(sel.matches(&web), *w, "{s} on web");
            assert_eq!(sel.matches(&db), *d, "{s} on db");
            // The printed form parses back to the same selector.
            assert_eq!(Selector::parse(&sel.to_string()).unwrap(), sel, "{s}");
        }
        for bad in ["app in web", "a,,b", "(", "app in ()", "=x"] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_selectors_match_like_kubernetes() {
        let sel = LabelSelector {
            match_labels: labels(&[("app", "web")]),
            match_expressions: vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: Operator::NotIn,
                values: vec!["dev".into()],
            }],
        };
        assert!(sel.matches(&labels(&[("app", "web")])));
        assert!(sel.matches(&labels(&[("app", "web"), ("env", "prod")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("env", "dev")])));
        assert!(!sel.matches(&labels(&[("app", "db")])));
        assert_eq!(sel.to_query(), "app=web,env!=dev");
        assert!(LabelSelector::default().matches(&labels(&[])));
    }
}
