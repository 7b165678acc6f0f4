//! What the operator typed, made into requests: resource types
//! (`deploy,rs,po`, `deployments.apps`, `all`) and `TYPE/NAME` arguments;
//! manifest files and directories (`-f`, `-R`) read into documents; and
//! documents cut into chunks that each fit in one frame.

use crate::api::Kind;
use crate::manifest::{self, MAX_MANIFEST};
use outpost_proto::Document;
use std::io::Read;
use std::path::{Path, PathBuf};

/// What `get` can list: an object kind of the API, or one of the two
/// listings the controller keeps beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Object(Kind),
    Events,
    Tokens,
    /// Sites, from the nodes' site labels (`ctl::sites`).
    Sites,
}

/// What `get all` lists, in kubectl's order.
pub const ALL: [Kind; 4] = [Kind::Pod, Kind::Service, Kind::Deployment, Kind::ReplicaSet];

impl Target {
    pub fn parse(s: &str) -> Option<Target> {
        match s.to_ascii_lowercase().as_str() {
            "events" | "event" | "ev" => Some(Target::Events),
            "tokens" | "token" | "bootstraptokens" | "bootstraptoken" => Some(Target::Tokens),
            "sites" | "site" => Some(Target::Sites),
            _ => Kind::parse(s).map(Target::Object),
        }
    }

    /// `deployment.apps`, `event`, `bootstraptoken.outpost.dev` (for
    /// `-o name` and prefixed names).
    pub fn qualified(self) -> String {
        match self {
            Target::Object(k) => k.qualified(),
            Target::Events => "event".into(),
            Target::Tokens => "bootstraptoken.outpost.dev".into(),
            Target::Sites => "site.outpost.dev".into(),
        }
    }
}

/// Why the operator's input cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("the server doesn't have a resource type {0:?}; known types: {types}", types = known_types())]
    UnknownType(String),
    #[error(
        "you must specify the type of resource, e.g. `pods` or `deployment/web`; known types: {}",
        known_types()
    )]
    NoType,
    #[error("{0:?}: there is no need to name a resource type as a separate argument when passing arguments in TYPE/NAME form (e.g. `deployment/web`, not `deployment deployment/web`)")]
    MixedForms(String),
    #[error("{0:?} is not TYPE/NAME (e.g. deployment/web)")]
    BadTypeName(String),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} is {}, larger than the {} allowed for one manifest; split it into several files",
        manifest::size(*len),
        manifest::size(MAX_MANIFEST as u64)
    )]
    TooBig { path: String, len: u64 },
    #[error("{}", .0.join("\n"))]
    Manifest(Vec<String>),
    #[error("{0} holds no objects")]
    Empty(String),
    #[error("{document}: {len} bytes as JSON; at most {max} fit in one request")]
    DocumentTooLarge {
        document: String,
        len: usize,
        max: usize,
    },
}

fn known_types() -> String {
    let mut names: Vec<String> = Kind::ALL
        .iter()
        .map(|k| format!("{} ({})", k.resource(), k.short_names().join(", ")))
        .collect();
    names.extend([
        "events (ev)".into(),
        "tokens".into(),
        "sites".into(),
        "all".into(),
    ]);
    names.join(", ")
}

/// `deploy,rs,po` or `all` into targets, each once, in the order given.
pub fn parse_types(s: &str) -> Result<Vec<Target>, InputError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        if part.is_empty() {
            continue;
        }
        let add: Vec<Target> = if part.eq_ignore_ascii_case("all") {
            ALL.iter().copied().map(Target::Object).collect()
        } else {
            vec![Target::parse(part).ok_or_else(|| InputError::UnknownType(part.to_string()))?]
        };
        for t in add {
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    if out.is_empty() {
        return Err(InputError::NoType);
    }
    Ok(out)
}

/// Positional arguments of `get`, `describe` and `delete`: either
/// `TYPE[,TYPE...] [NAME...]` or `TYPE/NAME...`; returns each target
/// with the names asked for it (none: every object).
pub fn parse_args(args: &[String]) -> Result<Vec<(Target, Vec<String>)>, InputError> {
    let Some(first) = args.first() else {
        return Err(InputError::NoType);
    };
    if first.contains('/') {
        let mut out: Vec<(Target, Vec<String>)> = Vec::new();
        for a in args {
            let (t, name) = a
                .split_once('/')
                .filter(|(t, n)| !t.is_empty() && !n.is_empty() && !n.contains('/'))
                .ok_or_else(|| InputError::BadTypeName(a.clone()))?;
            let t = Target::parse(t).ok_or_else(|| InputError::UnknownType(t.to_string()))?;
            match out.iter_mut().find(|(x, _)| *x == t) {
                Some((_, names)) => names.push(name.to_string()),
                None => out.push((t, vec![name.to_string()])),
            }
        }
        return Ok(out);
    }
    if let Some(mixed) = args[1..].iter().find(|a| a.contains('/')) {
        return Err(InputError::MixedForms(mixed.clone()));
    }
    let names = args[1..].to_vec();
    Ok(parse_types(first)?
        .into_iter()
        .map(|t| (t, names.clone()))
        .collect())
}

/// Where manifests come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Stdin,
    File(PathBuf),
}

impl Source {
    fn label(&self) -> String {
        match self {
            Source::Stdin => "<stdin>".into(),
            Source::File(p) => p.display().to_string(),
        }
    }
}

fn is_manifest(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn walk(dir: &Path, recursive: bool, out: &mut Vec<Source>) -> Result<(), InputError> {
    let read = |e| InputError::Read {
        path: dir.display().to_string(),
        source: e,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(read)?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if recursive {
                walk(&p, recursive, out)?;
            }
        } else if is_manifest(&p) {
            out.push(Source::File(p));
        }
    }
    Ok(())
}

/// The files `-f` names: `-` is standard input, a directory gives its
/// `.yaml`, `.yml` and `.json` files in name order (its subdirectories'
/// too with `recursive`, as kubectl's `-R`).
pub fn manifest_sources(paths: &[PathBuf], recursive: bool) -> Result<Vec<Source>, InputError> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            out.push(Source::Stdin);
        } else if p.is_dir() {
            let before = out.len();
            walk(p, recursive, &mut out)?;
            if out.len() == before {
                return Err(InputError::Empty(format!(
                    "{} (no .yaml, .yml or .json files{})",
                    p.display(),
                    if recursive {
                        ""
                    } else {
                        "; -R reads subdirectories"
                    }
                )));
            }
        } else {
            out.push(Source::File(p.clone()));
        }
    }
    Ok(out)
}

fn read_source(s: &Source, stdin: &mut dyn Read) -> Result<String, InputError> {
    let path = s.label();
    let mut text = String::new();
    match s {
        Source::Stdin => {
            stdin
                .take(MAX_MANIFEST as u64 + 1)
                .read_to_string(&mut text)
                .map_err(|source| InputError::Read {
                    path: path.clone(),
                    source,
                })?;
            if text.len() > MAX_MANIFEST {
                return Err(InputError::TooBig {
                    path,
                    len: text.len() as u64,
                });
            }
        }
        Source::File(p) => {
            let len = std::fs::metadata(p)
                .map_err(|source| InputError::Read {
                    path: path.clone(),
                    source,
                })?
                .len();
            if len > MAX_MANIFEST as u64 {
                return Err(InputError::TooBig { path, len });
            }
            text = outpost_proto::files::read_bounded(p, MAX_MANIFEST as u64).map_err(|e| {
                InputError::Read {
                    path: path.clone(),
                    source: std::io::Error::other(e.to_string()),
                }
            })?;
        }
    }
    Ok(text)
}

/// Every document of every source, as JSON, each named
/// `FILE: document N`. Problems of every file are reported together,
/// each line starting with its file.
pub fn read_documents(
    sources: &[Source],
    stdin: &mut dyn Read,
) -> Result<Vec<(String, serde_json::Value)>, InputError> {
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    for s in sources {
        let label = s.label();
        let text = match read_source(s, stdin) {
            Ok(t) => t,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        match manifest::documents(&text) {
            Ok(vs) => {
                for (i, v) in vs.into_iter().enumerate() {
                    docs.push((format!("{label}: document {}", i + 1), v));
                }
            }
            Err(e) => problems.extend(e.0.into_iter().map(|l| format!("{label}: {l}"))),
        }
    }
    if !problems.is_empty() {
        return Err(InputError::Manifest(problems));
    }
    if docs.is_empty() {
        let names: Vec<String> = sources.iter().map(Source::label).collect();
        return Err(InputError::Empty(names.join(", ")));
    }
    Ok(docs)
}

/// Bytes a frame needs beside the documents of an apply (message tags,
/// lengths, the dry-run flag), with room to spare.
const APPLY_OVERHEAD: usize = 1024;
/// Bytes each document needs beside its JSON and source (two lengths).
const DOCUMENT_OVERHEAD: usize = 16;

/// Cuts documents into groups whose `Apply` request fits in a frame of
/// `max_frame` bytes, keeping their order.
pub fn chunks(docs: Vec<Document>, max_frame: usize) -> Result<Vec<Vec<Document>>, InputError> {
    let budget = max_frame.saturating_sub(APPLY_OVERHEAD);
    let mut out: Vec<Vec<Document>> = Vec::new();
    let mut used = 0usize;
    for d in docs {
        let size = d.json.len() + d.source.len() + DOCUMENT_OVERHEAD;
        if size > budget {
            return Err(InputError::DocumentTooLarge {
                document: d.source,
                len: d.json.len(),
                max: budget - DOCUMENT_OVERHEAD,
            });
        }
        match out.last_mut() {
            Some(last) if used + size <= budget => {
                last.push(d);
                used += size;
            }
            _ => {
                out.push(vec![d]);
                used = size;
            }
        }
    }
    Ok(out)
}

/// A `delete --grace-period` / `--now` that cannot be honoured.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GraceError {
    #[error("--now and --grace-period cannot be specified together")]
    NowAndGrace,
    #[error("--grace-period {0} is more than a day ({max}s); pods are stopped sooner", max = outpost_proto::MAX_REMOVAL_GRACE_SECS)]
    TooLong(i64),
}

/// The grace period `delete --grace-period G [--now]` asks for, with
/// kubectl's rules: negative is the pod's own (`None`); 0 becomes 1 (only a
/// forced deletion may skip the node's confirmation, and Outpost has none);
/// `--now` is 1 and cannot be combined with a grace period.
pub fn delete_grace(grace_period: i64, now: bool) -> Result<Option<u32>, GraceError> {
    if now {
        if grace_period >= 0 {
            return Err(GraceError::NowAndGrace);
        }
        return Ok(Some(1));
    }
    if grace_period < 0 {
        return Ok(None);
    }
    u32::try_from(grace_period.max(1))
        .ok()
        .filter(|g| *g <= outpost_proto::MAX_REMOVAL_GRACE_SECS)
        .map(Some)
        .ok_or(GraceError::TooLong(grace_period))
}

#[cfg(test)]
mod tests {
    #[test]
    fn delete_grace_follows_kubectl() {
        use super::{delete_grace, GraceError};
        for (grace, now, want) in [
            (-1, false, Ok(None)),
            (-1, true, Ok(Some(1))),
            (0, false, Ok(Some(1))),
            (2, false, Ok(Some(2))),
            (86_400, false, Ok(Some(86_400))),
            (86_401, false, Err(GraceError::TooLong(86_401))),
            (i64::MAX, false, Err(GraceError::TooLong(i64::MAX))),
            (0, true, Err(GraceError::NowAndGrace)),
            (5, true, Err(GraceError::NowAndGrace)),
        ] {
            assert_eq!(
                delete_grace(grace, now),
                want,
                "--grace-period {grace} --now={now}"
            );
        }
    }

    use super::*;
    use outpost_proto::{AdminRequest, ApplyRequest, Message};

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn resource_types_parse_like_kubectl() {
        use Target::*;
        for (input, want) in [
            ("po", vec![Object(Kind::Pod)]),
            ("deployments.apps", vec![Object(Kind::Deployment)]),
            (
                "deploy,rs,po",
                vec![
                    Object(Kind::Deployment),
                    Object(Kind::ReplicaSet),
                    Object(Kind::Pod),
                ],
            ),
            ("ev", vec![Events]),
            ("tokens", vec![Tokens]),
            (
                "all,pods",
                ALL.iter().copied().map(Object).collect::<Vec<_>>(),
            ),
        ] {
            assert_eq!(parse_types(input).unwrap(), want, "{input}");
        }
        let e = parse_types("statefulsets").unwrap_err().to_string();
        assert!(
            e.contains("\"statefulsets\"") && e.contains("deployments (deploy)"),
            "{e}"
        );
        assert!(matches!(parse_types(","), Err(InputError::NoType)));
    }

    #[test]
    fn names_come_either_way() {
        let got = parse_args(&strings(&["deploy,svc", "web", "api"])).unwrap();
        assert_eq!(
            got,
            vec![
                (Target::Object(Kind::Deployment), strings(&["web", "api"])),
                (Target::Object(Kind::Service), strings(&["web", "api"])),
            ]
        );
        let got = parse_args(&strings(&["deployment/web", "pod/a", "deploy/api"])).unwrap();
        assert_eq!(
            got,
            vec![
                (Target::Object(Kind::Deployment), strings(&["web", "api"])),
                (Target::Object(Kind::Pod), strings(&["a"])),
            ]
        );
        assert!(matches!(
            parse_args(&strings(&["deployment", "deployment/web"])),
            Err(InputError::MixedForms(_))
        ));
        for bad in ["pod/", "/web", "pod/a/b"] {
            assert!(
                matches!(
                    parse_args(&strings(&[bad])),
                    Err(InputError::BadTypeName(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(parse_args(&[]), Err(InputError::NoType)));
    }

    #[test]
    fn directories_give_their_manifests_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("b.yaml"), "kind: B\n").unwrap();
        std::fs::write(p.join("a.json"), r#"{"kind": "A"}"#).unwrap();
        std::fs::write(p.join("notes.txt"), "not a manifest").unwrap();
        std::fs::create_dir(p.join("sub")).unwrap();
        std::fs::write(p.join("sub/c.yml"), "kind: C\n---\nkind: D\n").unwrap();
        let flat = manifest_sources(&[p.to_path_buf()], false).unwrap();
        assert_eq!(
            flat,
            vec![
                Source::File(p.join("a.json")),
                Source::File(p.join("b.yaml"))
            ]
        );
        let deep = manifest_sources(&[p.to_path_buf()], true).unwrap();
        assert_eq!(deep.len(), 3);
        let docs = read_documents(&deep, &mut std::io::empty()).unwrap();
        let kinds: Vec<&str> = docs
            .iter()
            .map(|(_, v)| v["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["A", "B", "C", "D"]);
        assert_eq!(
            docs[3].0,
            format!("{}: document 2", p.join("sub/c.yml").display())
        );
        // Standard input, and an empty directory.
        let docs = read_documents(&[Source::Stdin], &mut "kind: S\n".as_bytes()).unwrap();
        assert_eq!(docs[0].0, "<stdin>: document 1");
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            manifest_sources(&[empty.path().to_path_buf()], true),
            Err(InputError::Empty(_))
        ));
    }

    #[test]
    fn manifest_errors_name_file_and_document() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.yaml");
        let bad = dir.path().join("web.yaml");
        std::fs::write(&good, "kind: A\n").unwrap();
        std::fs::write(&bad, "kind: A\n---\nkind: [unclosed\n").unwrap();
        let e = read_documents(
            &[Source::File(good), Source::File(bad.clone())],
            &mut std::io::empty(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(&format!("{}: document 2: ", bad.display())),
            "{e}"
        );
        let missing = dir.path().join("missing.yaml");
        let e = read_documents(&[Source::File(missing)], &mut std::io::empty())
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.yaml"), "{e}");
        // A file or standard input over the limit: the message says the limit.
        let huge = dir.path().join("huge.yaml");
        std::fs::write(&huge, "a: 1\n".repeat(700_000)).unwrap();
        let e = read_documents(&[Source::File(huge.clone())], &mut std::io::empty())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "{} is 3.3Mi (3500000 bytes), larger than the 1Mi (1048576 bytes) allowed for one manifest; split it into several files",
                huge.display()
            )
        );
        let e = read_documents(&[Source::Stdin], &mut "a: 1\n".repeat(300_000).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "<stdin> is 1Mi (1048577 bytes), larger than the 1Mi (1048576 bytes) allowed"
            ),
            "{e}"
        );
        let blank = dir.path().join("blank.yaml");
        std::fs::write(&blank, "# nothing\n").unwrap();
        assert!(matches!(
            read_documents(&[Source::File(blank)], &mut std::io::empty()),
            Err(InputError::Empty(_))
        ));
    }

    #[test]
    fn chunks_fit_one_frame_each_and_keep_order() {
        let doc = |i: usize, len: usize| Document {
            source: format!("f.yaml: document {i}"),
            json: vec![b'x'; len],
        };
        let max = outpost_proto::MAX_FRAME;
        let docs: Vec<Document> = (0..40).map(|i| doc(i, 100_000)).collect();
        let cut = chunks(docs.clone(), max).unwrap();
        assert!(cut.len() > 1, "4 MB of documents need several frames");
        assert_eq!(cut.concat(), docs, "nothing lost, order kept");
        for c in cut {
            let req = Message::Request(AdminRequest::Apply(ApplyRequest {
                documents: c,
                dry_run: true,
            }));
            outpost_proto::frame::encode(&req).expect("every chunk fits a frame");
        }
        assert_eq!(chunks(vec![doc(1, 10)], max).unwrap().len(), 1);
        assert!(matches!(
            chunks(vec![doc(1, max)], max),
            Err(InputError::DocumentTooLarge { .. })
        ));
    }
}
