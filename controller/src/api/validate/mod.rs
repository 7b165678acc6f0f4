//! TEMPORARY shim until the validation module lands: decodes a document
//! by its kind without checking fields. Replaced by the real validation
//! (same API) before this work is merged.

use crate::api::{Kind, Object};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, Clone)]
pub struct Validated {
    pub object: Object,
    pub warnings: Vec<String>,
}

pub fn validate(doc: &serde_json::Value) -> Result<Validated, Vec<Problem>> {
    let p = |m: String| {
        vec![Problem {
            path: String::new(),
            message: m,
        }]
    };
    let api = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    let k = Kind::of_manifest(api, kind).ok_or_else(|| p(format!("{api} {kind} unknown")))?;
    let mut v = doc.clone();
    if let serde_json::Value::Object(m) = &mut v {
        m.remove("apiVersion");
        m.remove("kind");
        m.remove("status");
    }
    let bytes = serde_json::to_vec(&v).map_err(|e| p(e.to_string()))?;
    let object = Object::decode(k, &bytes, 0).map_err(p)?;
    Ok(Validated {
        object,
        warnings: Vec::new(),
    })
}
