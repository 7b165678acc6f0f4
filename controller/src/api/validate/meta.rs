//! What every kind shares: `metadata`, label maps and label selectors.

use super::walk::{dns_label, index, join, Harmless, Treat, Walker, MAX_LIST};
use crate::api::meta::{ObjectMeta, OwnerReference};
use crate::api::selector::{LabelSelector, LabelSelectorRequirement, Operator};
use crate::api::{Kind, DEFAULT_NAMESPACE};
use outpost_proto::names::{validate_label_key, validate_label_value};
use outpost_proto::pod::pod_limits::MAX_LABELS;
use serde_json::Value;
use std::collections::BTreeMap;

/// Kubernetes' limit on all annotations of one object together.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// Characters `generateName` may have: the 5-character suffix must fit in
/// a 63-character name.
pub const MAX_GENERATE_NAME: usize = 63 - 5;

/// How an object's name is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 label (at most 63): pods, Services.
    Label,
    /// DNS-1123 subdomain (at most 253): Deployments, ReplicaSets,
    /// PriorityClasses.
    Subdomain,
}

impl NameRule {
    pub fn check(self, s: &str) -> Result<(), String> {
        match self {
            NameRule::Label => dns_label(s),
            NameRule::Subdomain => super::walk::dns_subdomain(s),
        }
    }
}

const SERVER_SET: &str = "set by Outpost";

/// Metadata keys only the server sets; dropped with a warning wherever
/// they appear (an exported manifest carries them all).
const INFORMATIONAL: &[(&str, Treat)] = &[
    (
        "uid",
        Treat::Inform("the uid is given by Outpost on create"),
    ),
    ("creationTimestamp", Treat::Inform(SERVER_SET)),
    ("generation", Treat::Inform(SERVER_SET)),
    ("selfLink", Treat::Inform("Outpost serves no self links")),
    (
        "managedFields",
        Treat::Inform("Outpost does not track field managers"),
    ),
    (
        "deletionTimestamp",
        Treat::Inform("deletion is asked for with delete"),
    ),
    (
        "deletionGracePeriodSeconds",
        Treat::Inform("deletion is asked for with delete"),
    ),
    (
        "finalizers",
        Treat::InformIf(
            Harmless::Empty,
            "Outpost runs no finalizers, so an object with one could never be deleted",
        ),
    ),
];

/// `metadata` of a top-level object of `kind`.
pub fn metadata(w: &mut Walker, v: Option<&Value>, kind: Kind, rule: NameRule) -> ObjectMeta {
    let mut meta = ObjectMeta::default();
    let Some(v) = v else {
        w.err("metadata", "is required");
        return meta;
    };
    let mut keys: Vec<(&str, Treat)> = vec![
        ("name", Treat::Use),
        ("generateName", Treat::Use),
        ("namespace", Treat::Use),
        ("labels", Treat::Use),
        ("annotations", Treat::Use),
        ("ownerReferences", Treat::Use),
        ("resourceVersion", Treat::Use),
    ];
    keys.extend_from_slice(INFORMATIONAL);
    let Some(m) = w.obj("metadata", v, &keys) else {
        return meta;
    };
    if let Some(n) = m.get("name") {
        if let Some(n) = w.string("metadata.name", n) {
            if let Err(e) = rule.check(&n) {
                w.err("metadata.name", e);
            }
            meta.name = n;
        }
    }
    if let Some(g) = m.get("generateName") {
        if kind != Kind::Pod {
            w.err(
                "metadata.generateName",
                format!("not supported for {kind}s; give metadata.name"),
            );
        } else if let Some(g) = w.string("metadata.generateName", g) {
            // The generated name is the prefix plus 5 letters and digits.
            if g.len() > MAX_GENERATE_NAME {
                w.err(
                    "metadata.generateName",
                    format!(
                        "is {} characters; at most {MAX_GENERATE_NAME} (5 are added)",
                        g.len()
                    ),
                );
            } else if let Err(e) = dns_label(&format!("{g}x")) {
                w.err("metadata.generateName", e);
            }
            meta.generate_name = g;
        }
    }
    if !m.has("name") && !m.has("generateName") {
        w.err(
            "metadata.name",
            if kind == Kind::Pod {
                "is required (or give metadata.generateName)"
            } else {
                "is required"
            },
        );
    }
    match m.get("namespace") {
        Some(_) if !kind.namespaced() => {
            w.err(
                "metadata.namespace",
                format!("{kind} is cluster-scoped; remove metadata.namespace"),
            );
        }
        Some(ns) => {
            if let Some(ns) = w.string("metadata.namespace", ns) {
                if let Err(e) = dns_label(&ns) {
                    w.err("metadata.namespace", e);
                }
                meta.namespace = ns;
            }
        }
        None if kind.namespaced() => meta.namespace = DEFAULT_NAMESPACE.to_string(),
        None => {}
    }
    meta.labels = labels(w, "metadata.labels", m.get("labels"));
    meta.annotations = annotations(w, "metadata.annotations", m.get("annotations"));
    meta.owner_references =
        owner_references(w, "metadata.ownerReferences", m.get("ownerReferences"));
    if let Some(rv) = m.get("resourceVersion") {
        if let Some(rv) = w.string("metadata.resourceVersion", rv) {
            if rv.is_empty() || !rv.bytes().all(|b| b.is_ascii_digit()) || rv.len() > 20 {
                w.err(
                    "metadata.resourceVersion",
                    format!(
                        "{rv:?} is not a resourceVersion Outpost gave (a number); leave it out"
                    ),
                );
            } else {
                meta.resource_version = rv;
            }
        }
    }
    meta
}

/// `metadata` of a pod template: labels and annotations; names come from
/// the owner.
pub fn template_metadata(w: &mut Walker, path: &str, v: Option<&Value>) -> ObjectMeta {
    let mut meta = ObjectMeta::default();
    let Some(v) = v else { return meta };
    let mut keys: Vec<(&str, Treat)> = vec![
        ("labels", Treat::Use),
        ("annotations", Treat::Use),
        (
            "name",
            Treat::Inform("a template's pods are named after their ReplicaSet"),
        ),
        (
            "generateName",
            Treat::Inform("a template's pods are named after their ReplicaSet"),
        ),
        (
            "namespace",
            Treat::Inform("a template's pods are in their owner's namespace"),
        ),
    ];
    keys.extend_from_slice(INFORMATIONAL);
    let Some(m) = w.obj(path, v, &keys) else {
        return meta;
    };
    meta.labels = labels(w, &join(path, "labels"), m.get("labels"));
    meta.annotations = annotations(w, &join(path, "annotations"), m.get("annotations"));
    meta
}

/// A label map (`metadata.labels`, `nodeSelector`, `matchLabels`, a
/// Service's selector): valid keys and values, at most 64.
pub fn labels(w: &mut Walker, path: &str, v: Option<&Value>) -> BTreeMap<String, String> {
    w.string_map(path, v, MAX_LABELS, |k, v| {
        validate_label_key(k).and_then(|()| validate_label_value(k, v))
    })
}

fn annotations(w: &mut Walker, path: &str, v: Option<&Value>) -> BTreeMap<String, String> {
    let a = w.string_map(path, v, usize::MAX, |k, _| validate_label_key(k));
    let total: usize = a.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_ANNOTATIONS_BYTES {
        w.err(
            path,
            format!(
                "are {total} bytes together; at most {MAX_ANNOTATIONS_BYTES} (256 KiB) allowed"
            ),
        );
    }
    a
}

fn owner_references(w: &mut Walker, path: &str, v: Option<&Value>) -> Vec<OwnerReference> {
    let mut out = Vec::new();
    for (i, r) in w.list(path, v, 16).iter().enumerate() {
        let p = index(path, i);
        let Some(o) = w.obj(
            &p,
            r,
            &[
                ("apiVersion", Treat::Use),
                ("kind", Treat::Use),
                ("name", Treat::Use),
                ("uid", Treat::Use),
                ("controller", Treat::Use),
                ("blockOwnerDeletion", Treat::Use),
            ],
        ) else {
            continue;
        };
        let text = |w: &mut Walker, key: &str| {
            w.required(&p, &o, key)
                .and_then(|v| w.text(&join(&p, key), v, 253))
        };
        let (api_version, kind, name, uid) = (
            text(w, "apiVersion"),
            text(w, "kind"),
            text(w, "name"),
            text(w, "uid"),
        );
        let controller = w.flag(&p, &o, "controller");
        let block_owner_deletion = w.flag(&p, &o, "blockOwnerDeletion");
        if let (Some(api_version), Some(kind), Some(name), Some(uid)) =
            (api_version, kind, name, uid)
        {
            out.push(OwnerReference {
                api_version,
                kind,
                name,
                uid,
                controller,
                block_owner_deletion,
            });
        }
    }
    if out.iter().filter(|r| r.controller).count() > 1 {
        w.err(path, "at most one owner reference may be the controller");
    }
    out
}

/// A `LabelSelector`: `matchLabels` and `matchExpressions`.
pub fn label_selector(w: &mut Walker, path: &str, v: &Value) -> Option<LabelSelector> {
    let o = w.obj(
        path,
        v,
        &[
            ("matchLabels", Treat::Use),
            ("matchExpressions", Treat::Use),
        ],
    )?;
    let before = w.problems.len();
    let match_labels = labels(w, &join(path, "matchLabels"), o.get("matchLabels"));
    let mut match_expressions = Vec::new();
    let ep = join(path, "matchExpressions");
    for (i, e) in w
        .list(&ep, o.get("matchExpressions"), MAX_LIST)
        .iter()
        .enumerate()
    {
        let p = index(&ep, i);
        let Some(eo) = w.obj(
            &p,
            e,
            &[
                ("key", Treat::Use),
                ("operator", Treat::Use),
                ("values", Treat::Use),
            ],
        ) else {
            continue;
        };
        let key = w
            .required(&p, &eo, "key")
            .and_then(|k| w.string(&join(&p, "key"), k));
        if let Some(k) = &key {
            if let Err(e) = validate_label_key(k) {
                w.err(&join(&p, "key"), e);
            }
        }
        let operator = w
            .required(&p, &eo, "operator")
            .and_then(|v| {
                w.one_of(
                    &join(&p, "operator"),
                    v,
                    &["In", "NotIn", "Exists", "DoesNotExist"],
                )
            })
            .map(|s| match s.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                _ => Operator::DoesNotExist,
            });
        let vp = join(&p, "values");
        let values = w.strings(&vp, eo.get("values"), MAX_LIST, 63);
        for v in &values {
            if let Err(e) = validate_label_value(key.as_deref().unwrap_or("key"), v) {
                w.err(&vp, e);
            }
        }
        if let Some(op) = operator {
            match op {
                Operator::In | Operator::NotIn if values.is_empty() => {
                    w.err(&vp, format!("{} needs at least one value", op.name()));
                }
                Operator::Exists | Operator::DoesNotExist
                    if eo.has("values") && !values.is_empty() =>
                {
                    w.err(&vp, format!("must be empty with {}", op.name()));
                }
                _ => {}
            }
            if let Some(key) = key {
                match_expressions.push(LabelSelectorRequirement {
                    key,
                    operator: op,
                    values,
                });
            }
        }
    }
    (w.problems.len() == before).then_some(LabelSelector {
        match_labels,
        match_expressions,
    })
}
