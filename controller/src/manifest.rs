//! Kubernetes-style YAML manifests into JSON documents, one per YAML
//! document, for the operator API to validate (`api::validate`) and apply.
//!
//! This module only reads YAML; what a document means is decided on the
//! controller. A file is split at its document markers (`---` and `...` at
//! the start of a line, which YAML forbids inside any scalar, so the split
//! is exact), and each document is parsed on its own with
//! [`serde_saphyr`]: block and flow style, comments, anchors and aliases,
//! JSON-like flow mappings and sequences with trailing commas
//! (`ports: [{containerPort: 80, }]`, as the Kubernetes documentation
//! writes them). Empty documents (`---` alone, comments only, `null`) are
//! skipped. Scalars are read the way Kubernetes' YAML 1.1 reader reads them
//! (`0755` is octal, `yes` is a boolean), so a manifest means here what it
//! means to `kubectl`.
//!
//! Everything is bounded before or while parsing: the file size
//! ([`MAX_MANIFEST`]: `manifest is 3.1Mi (3345728 bytes), larger than the
//! 1Mi (1048576 bytes) allowed`), the documents in it ([`MAX_DOCUMENTS`]),
//! how deeply values nest ([`MAX_DEPTH`], block and flow alike: the
//! parser's budget stops at the 33rd level as it reads, so 100,000 nested
//! `[` are refused in well under a millisecond, with no quadratic
//! rescanning) and how many values the whole file holds ([`MAX_NODES`],
//! aliases expanded, so an alias bomb stops early). Every error names the
//! document and the line: `document 2: line 14, column 3: not valid YAML:
//! unclosed quote`; a syntax error in one document does not hide those of
//! the next.
//!
//! The controller does not trust the client to have done this: the JSON
//! documents of an apply are checked against [`MAX_DEPTH`] by
//! [`json_too_deep`], a linear scan, before they are parsed.

use serde_json::Value;
use serde_saphyr::{budget::BudgetBreach, MessageFormatter as _};

/// Largest manifest file accepted (1 MiB, as a Kubernetes object stored in
/// etcd may be at most 1.5 MiB, and a manifest is rarely more than a few
/// KiB).
pub const MAX_MANIFEST: usize = 1 << 20;

/// Most non-empty documents in one manifest.
pub const MAX_DOCUMENTS: usize = 1000;

/// Deepest nesting of mappings and sequences. Kubernetes objects nest at
/// most 13 levels (a Deployment's pod anti-affinity term's values); 32
/// leaves room without letting a parser recurse without end.
pub const MAX_DEPTH: usize = 32;

/// Most values (scalars, mappings, sequences; aliases counted expanded) in
/// one manifest. A Deployment with 16 containers of 256 env entries each
/// is about 13,000.
pub const MAX_NODES: usize = 200_000;

/// Most anchors and most aliases per document.
const MAX_ANCHORS: usize = 1000;

/// Every problem found in a manifest, one line each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ManifestErrors(pub Vec<String>);

/// What a manifest declared, in the runtime form `outpostctl` sends with
/// `AdminRequest::ApplyPod`.
///
/// Deprecated: kept only until `outpostctl apply` sends documents
/// (`AdminRequest::Apply`); new code uses [`documents`] and
/// [`crate::api::validate::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Pod(outpost_proto::pod::PodSpec),
}

/// Deprecated shim over [`documents`] and [`crate::api::validate::validate`]
/// for `outpostctl`: pods only, in their runtime form, problems prefixed
/// with the object (`pod/web: spec.hostNetwork: ...`); warnings dropped.
pub fn parse(text: &str) -> Result<Vec<Object>, ManifestErrors> {
    use crate::api::validate::{document_name, validate};
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for d in numbered_documents(text)? {
        let name = document_name(&d.value);
        match validate(&d.value) {
            Ok(v) => match v.object {
                crate::api::Object::Pod(p) if p.metadata.name.is_empty() => errors.push(format!(
                    "{name}: metadata.generateName needs the object API; give metadata.name"
                )),
                crate::api::Object::Pod(p) => out.push(Object::Pod(p.to_wire())),
                other => errors.push(format!(
                    "{name}: {} cannot be applied by this outpostctl yet (pods only)",
                    other.kind()
                )),
            },
            Err(problems) => errors.extend(problems.iter().map(|p| format!("{name}: {p}"))),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ManifestErrors(errors))
    }
}

/// A document of a manifest and its number in the file (1-based; empty
/// documents count, so the number is what a reader counting `---` gets).
#[derive(Debug, Clone, PartialEq)]
pub struct NumberedDocument {
    pub number: usize,
    /// Line of the file the document starts on (1-based).
    pub line: usize,
    pub value: Value,
}

/// The non-empty documents of a (multi-document) YAML manifest.
pub fn documents(text: &str) -> Result<Vec<Value>, ManifestErrors> {
    Ok(numbered_documents(text)?
        .into_iter()
        .map(|d| d.value)
        .collect())
}

/// The non-empty documents of a manifest with their numbers, for messages
/// such as `web.yaml: document 2`.
pub fn numbered_documents(text: &str) -> Result<Vec<NumberedDocument>, ManifestErrors> {
    if text.len() > MAX_MANIFEST {
        return Err(ManifestErrors(vec![format!(
            "manifest is {}, larger than the {} allowed; split it into several files",
            size(text.len() as u64),
            size(MAX_MANIFEST as u64)
        )]));
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut nodes_left = MAX_NODES;
    for chunk in split(text) {
        if out.len() == MAX_DOCUMENTS {
            errors.push(format!(
                "document {}: more than {MAX_DOCUMENTS} documents in one manifest; split it",
                chunk.number
            ));
            break;
        }
        if nodes_left == 0 {
            errors.push(format!(
                "document {}: the manifest holds more than {MAX_NODES} values; split it",
                chunk.number
            ));
            break;
        }
        match parse_one(&text[chunk.start..chunk.end], nodes_left) {
            Ok(Value::Null) => {}
            Ok(value) => {
                nodes_left = nodes_left.saturating_sub(count_nodes(&value));
                out.push(NumberedDocument {
                    number: chunk.number,
                    line: chunk.line,
                    value,
                });
            }
            Err(e) => errors.push(describe(&e, &chunk, nodes_left)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ManifestErrors(errors))
    }
}

fn parse_one(text: &str, max_nodes: usize) -> Result<Value, serde_saphyr::Error> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            flow_nesting_limit: MAX_DEPTH,
            max_nodes: max_nodes,
            max_anchors: MAX_ANCHORS,
            max_aliases: MAX_ANCHORS,
            max_documents: 1,
        },
        legacy_octal_numbers: true,
    };
    serde_saphyr::from_str_with_options(text, options)
}

/// A document's error, located in the whole file.
fn describe(e: &serde_saphyr::Error, chunk: &Chunk, nodes_left: usize) -> String {
    let mut inner = e.without_snippet();
    while let serde_saphyr::Error::AliasError { error, .. }
    | serde_saphyr::Error::WithSnippet { error, .. } = inner
    {
        inner = error;
    }
    let message = match inner {
        serde_saphyr::Error::Budget { breach, .. } => match breach {
            BudgetBreach::Depth { .. } => format!("nested more than {MAX_DEPTH} levels deep"),
            BudgetBreach::Nodes { .. } => format!(
                "too many values: the manifest may hold at most {MAX_NODES} \
                 ({nodes_left} were left for this document; aliases count expanded)"
            ),
            BudgetBreach::Aliases { .. } | BudgetBreach::Anchors { .. } => {
                format!("more than {MAX_ANCHORS} anchors or aliases")
            }
            other => format!("too large or too complex ({other:?})"),
        },
        other => {
            let m = serde_saphyr::UserMessageFormatter.format_message(other);
            if m.contains("recursion limit") {
                format!("nested more than {MAX_DEPTH} levels deep")
            } else {
                format!("not valid YAML: {m}")
            }
        }
    };
    match e.location() {
        Some(l) => format!(
            "document {}: line {}, column {}: {message}",
            chunk.number,
            u64::try_from(chunk.line).unwrap_or(0) + l.line().saturating_sub(1),
            l.column()
        ),
        None => format!(
            "document {} (from line {}): {message}",
            chunk.number, chunk.line
        ),
    }
}

/// `3.1Mi (3345728 bytes)`: readable, and exact where rounding would
/// hide by how much a limit was passed.
pub fn size(bytes: u64) -> String {
    let short = outpost_proto::units::format_bytes(bytes);
    if short == bytes.to_string() {
        format!("{bytes} bytes")
    } else {
        format!("{short} ({bytes} bytes)")
    }
}

/// Whether a JSON text nests arrays and objects more than `max` deep, by
/// one linear pass that allocates nothing and stops at the first level too
/// deep (strings and their escapes are skipped, so brackets inside them do
/// not count). Malformed JSON is left to the parser.
pub fn json_too_deep(json: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Values in a parsed document (what [`MAX_NODES`] counts).
fn count_nodes(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(count_nodes).sum::<usize>(),
        Value::Object(m) => 1 + m.values().map(|v| 1 + count_nodes(v)).sum::<usize>(),
        _ => 1,
    }
}

/// One document's bytes in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Chunk {
    number: usize,
    /// 1-based line of `start`.
    line: usize,
    start: usize,
    end: usize,
}

/// `---` or `...` at the start of a line, followed by a blank or the end
/// of the line: YAML's document markers (`c-forbidden` inside scalars).
fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
}

/// Splits a stream into its documents. A document starts at a `---` line
/// or, outside a document, at the first line with content; comments,
/// blank lines and directives (`%YAML`) before it belong to it. `...`
/// ends a document.
fn split(text: &str) -> Vec<Chunk> {
    let mut starts: Vec<(usize, usize)> = Vec::new();
    let mut prefix: Option<(usize, usize)> = None;
    let mut in_doc = false;
    let mut offset = 0;
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        let line_no = i + 1;
        let line = raw.trim_end_matches(['\n', '\r']);
        if is_marker(line, "---") {
            starts.push(prefix.take().unwrap_or((offset, line_no)));
            in_doc = true;
        } else if is_marker(line, "...") {
            in_doc = false;
        } else if !in_doc {
            let t = line.trim_start();
            if t.is_empty() || t.starts_with('#') || line.starts_with('%') {
                prefix.get_or_insert((offset, line_no));
            } else {
                starts.push(prefix.take().unwrap_or((offset, line_no)));
                in_doc = true;
            }
        }
        offset += raw.len();
    }
    starts
        .iter()
        .enumerate()
        .map(|(i, &(start, line))| Chunk {
            number: i + 1,
            line,
            start,
            end: starts.get(i + 1).map_or(text.len(), |s| s.0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_split_at_markers() {
        let text = "# leading comment\n---\na: 1 # trailing comment\n---\n---\n# only a comment\n---\nb: [1, 2,]\n...\n# after the end\nc: {d: e, }\n";
        let docs = numbered_documents(text).unwrap();
        let got: Vec<(usize, usize, Value)> = docs
            .into_iter()
            .map(|d| (d.number, d.line, d.value))
            .collect();
        assert_eq!(
            got,
            [
                (1, 1, json!({"a": 1})),
                (4, 7, json!({"b": [1, 2]})),
                (5, 10, json!({"c": {"d": "e"}})),
            ]
        );
        assert_eq!(documents("").unwrap(), Vec::<Value>::new());
        assert_eq!(documents("---\n---\n~\n").unwrap(), Vec::<Value>::new());
        assert_eq!(documents("a: 1\n").unwrap(), [json!({"a": 1})]);
        assert_eq!(
            documents("--- {a: 1}\n--- [2]\n").unwrap(),
            [json!({"a": 1}), json!([2])]
        );
        assert_eq!(
            documents("%YAML 1.2\n---\na: 1\n").unwrap(),
            [json!({"a": 1})]
        );
        // An indented `---` is content, not a marker.
        assert_eq!(
            documents("a: |\n  ---\n  x\n").unwrap(),
            [json!({"a": "---\nx\n"})]
        );
    }

    #[test]
    fn kubernetes_documentation_flow_style() {
        let text = r#"
apiVersion: v1
kind: Pod
metadata: {name: nginx, labels: {app: web, }}
spec:
  containers:
  - name: nginx
    image: nginx:1.14.2
    ports: [{containerPort: 80, }]
    args: ["--a", '--b', plain]
"#;
        let d = documents(text).unwrap();
        assert_eq!(
            d[0]["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80}])
        );
        assert_eq!(d[0]["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(
            d[0]["spec"]["containers"][0]["args"],
            json!(["--a", "--b", "plain"])
        );
        // JSON is YAML.
        let j =
            documents(r#"{"apiVersion": "v1", "kind": "Pod", "x": [1, 2.5, true, null]}"#).unwrap();
        assert_eq!(j[0]["x"], json!([1, 2.5, true, null]));
        // Kubernetes' YAML 1.1 scalars.
        let s = documents("a: 0755\nb: yes\nc: \"0755\"\nd: 18446744073709551615\n").unwrap();
        assert_eq!(
            s[0],
            json!({"a": 493, "b": true, "c": "0755", "d": 18_446_744_073_709_551_615u64})
        );
        // Anchors and merge keys.
        let m = documents("a: &x {b: 1}\nc:\n  <<: *x\n  d: 2\n").unwrap();
        assert_eq!(m[0]["c"], json!({"b": 1, "d": 2}));
    }

    #[test]
    fn syntax_errors_name_document_and_line() {
        let text = "a: 1\n---\nb: [1, 2\nc: 3\n---\nd: 'open\n---\ne: 1\ne: 2\n";
        let err = numbered_documents(text).unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
        assert!(
            err.0[0].starts_with("document 2: line 4, column 2: not valid YAML"),
            "{err}"
        );
        assert!(
            err.0[1].starts_with("document 3: line 6, column 4: not valid YAML: unclosed quote"),
            "{err}"
        );
        assert!(
            err.0[2]
                .starts_with("document 4: line 9, column 1: not valid YAML: duplicate mapping key"),
            "{err}"
        );
        let tab = documents("a:\n\tb: 1\n").unwrap_err().to_string();
        assert!(tab.starts_with("document 1: line 2"), "{tab}");
    }

    #[test]
    fn bounds_are_enforced_while_parsing() {
        let too_big = "x".repeat(MAX_MANIFEST + 1);
        let e = documents(&too_big).unwrap_err().to_string();
        assert_eq!(
            e,
            "manifest is 1Mi (1048577 bytes), larger than the 1Mi (1048576 bytes) allowed; split it into several files"
        );
        let e = documents(&"x".repeat(3_345_728)).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "manifest is 3.1Mi (3345728 bytes), larger than the 1Mi (1048576 bytes) allowed"
            ),
            "{e}"
        );

        // 100,000 nested `[` in 200 KB: refused at the depth limit, at once.
        for deep in ["[ ".repeat(100_000), "{a: ".repeat(50_000), {
            let mut s = String::new();
            for i in 0..100 {
                s.push_str(&" ".repeat(i));
                s.push_str("k:\n");
            }
            s
        }] {
            let t = std::time::Instant::now();
            let e = documents(&deep).unwrap_err().to_string();
            assert!(
                e.contains(&format!("nested more than {MAX_DEPTH} levels deep")),
                "{e}"
            );
            assert!(e.starts_with("document 1: line "), "{e}");
            // Not a timing assertion: just what a reader of the output sees.
            eprintln!("refused {} bytes in {:?}", deep.len(), t.elapsed());
        }
        let ok_depth = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(documents(&ok_depth).is_ok());

        // An alias bomb stops at the value budget.
        let mut bomb = String::from("a: &a [1,1,1,1,1,1,1,1,1,1]\n");
        for (prev, name) in ["a", "b", "c", "d", "e", "f", "g"]
            .iter()
            .zip(["b", "c", "d", "e", "f", "g", "h"])
        {
            bomb.push_str(&format!(
                "{name}: &{name} [{}]\n",
                vec![format!("*{prev}"); 10].join(",")
            ));
        }
        let e = documents(&bomb).unwrap_err().to_string();
        assert!(e.contains("too many values"), "{e}");

        // The value budget is for the whole file, not per document.
        let doc = format!("a: [{}]\n", vec!["1"; 60_000].join(","));
        let many = vec![doc; 4].join("---\n");
        let e = documents(&many).unwrap_err().to_string();
        assert!(e.contains("document 4"), "{e}");

        let docs = "a: 1\n---\n".repeat(MAX_DOCUMENTS + 1);
        let e = documents(&docs).unwrap_err().to_string();
        assert!(e.contains("more than 1000 documents"), "{e}");
    }

    #[test]
    fn json_depth_is_scanned_without_parsing() {
        let deep = |n: usize| "[".repeat(n) + &"]".repeat(n);
        assert!(!json_too_deep(deep(MAX_DEPTH).as_bytes(), MAX_DEPTH));
        assert!(json_too_deep(deep(MAX_DEPTH + 1).as_bytes(), MAX_DEPTH));
        assert!(json_too_deep(
            "{\"a\": ".repeat(100_000).as_bytes(),
            MAX_DEPTH
        ));
        // Brackets in strings, escaped quotes included, do not count.
        let quoted = format!(
            r#"{{"a": "{}\"{}", "b": [1]}}"#,
            "[".repeat(100),
            "{".repeat(100)
        );
        assert!(serde_json::from_str::<Value>(&quoted).is_ok());
        assert!(!json_too_deep(quoted.as_bytes(), 2));
        assert!(json_too_deep(quoted.as_bytes(), 1));
        // What `documents` accepts, re-encoded, passes the controller's scan.
        let ok = documents(&deep(MAX_DEPTH)).unwrap();
        assert!(!json_too_deep(
            &serde_json::to_vec(&ok[0]).unwrap(),
            MAX_DEPTH
        ));
        assert_eq!(size(512), "512 bytes");
    }

    #[test]
    fn the_pod_shim_gives_runtime_specs() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  nodeName: edge-1\n  containers: [{name: c, image: 'i:1'}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: Bad}\nspec: {hostNetwork: true, containers: [{name: c, image: i}]}\n";
        let err = parse(text).unwrap_err().to_string();
        assert_eq!(
            err,
            "pod/Bad: metadata.name: name \"Bad\" is not a valid name: use at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit\n\
             pod/Bad: spec.hostNetwork: not supported by Outpost (pods have their own network)"
        );
        let ok = parse(text.split("---").next().unwrap()).unwrap();
        let [Object::Pod(p)] = ok.as_slice() else {
            panic!("{ok:?}")
        };
        assert_eq!(
            (
                p.name.as_str(),
                p.namespace.as_str(),
                p.node_name.as_deref()
            ),
            ("web", "default", Some("edge-1"))
        );
        assert_eq!(p.validate(), Ok(()));
        let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n";
        assert!(parse(svc)
            .unwrap_err()
            .to_string()
            .contains("service/s: Service cannot be applied by this outpostctl yet"));
    }

    #[test]
    fn garbage_never_panics() {
        for text in [
            "",
            "---\n---\n",
            "[1,2",
            "42",
            "\u{feff}a: 1",
            "...\n...\n",
            "%\n",
            "? [a]\n: 1\n",
            "a: *nope\n",
            "\r\n---\r\na: 1\r\n",
        ] {
            let _ = documents(text);
        }
        assert_eq!(documents("\r\n---\r\na: 1\r\n").unwrap(), [json!({"a": 1})]);
    }

    proptest::proptest! {
        /// Any text is answered, never a panic, and every error names its
        /// document.
        #[test]
        fn any_text_is_answered(text in "[-a-z0-9:{}\\[\\],.&*!|>'\"#% \n\t]{0,200}") {
            if let Err(e) = numbered_documents(&text) {
                for line in &e.0 {
                    proptest::prop_assert!(line.starts_with("document "), "{}", line);
                }
            }
        }
    }
}
