//! `outpostctl` output: kubectl's tables and descriptions, and the machine
//! forms (`-o json|yaml|name`).
//!
//! Flow: the CLI fetches objects as the operator API serves them
//! (Kubernetes JSON, the stable form), looks up the kind's [`Printer`] in
//! [`printer`] and hands each object to it: the printer decodes the JSON
//! into the `api` types and returns one [`Row`] (cells for every column,
//! wide ones included) or a description. [`Table`] lays rows out as kubectl
//! does, adding `NAMESPACE` for `-A` and dropping wide columns unless
//! `-o wide`. Nodes are the one exception to "from the JSON": their rows
//! and description come from the registry's live view
//! ([`outpost_proto::NodeView`]), which the caller passes in [`Context`].
//!
//! A new kind is one row function and one describe function in its
//! family's file, plus its entry (columns, extra data) in [`printer`].

pub mod admins;
pub mod events;
pub mod input;
pub mod nodes;
pub mod pods;
pub mod policy;
pub mod rollout;
pub mod scheduling;
pub mod services;
pub mod sites;
pub mod tokens;
pub mod workloads;

pub use events::event_json;
pub use nodes::node_json;
pub use outpost_proto::units::rfc3339;
pub use tokens::token_json;

use crate::api::{Kind, ObjectMeta, Time};
use outpost_proto::pod::Usage;
use outpost_proto::{Event, NodeView};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Output format of `get` (and of `describe` with `-o json|yaml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// kubectl's columns.
    Table,
    /// The table with the extra columns kubectl shows for `-o wide`.
    Wide,
    /// Kubernetes JSON (the stable machine form).
    Json,
    Yaml,
    /// `kind.group/name`, one a line.
    Name,
}

impl Format {
    /// Table or wide.
    pub fn is_table(self) -> bool {
        matches!(self, Format::Table | Format::Wide)
    }
}

/// Why an object could not be printed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot read {what} as the controller sent it: {source} (is this outpostctl older than the controller?)")]
    Decode {
        what: String,
        source: serde_json::Error,
    },
    #[error("node {0:?} is not in the registry's view any more")]
    NodeGone(String),
}

/// Decodes an object's JSON into its `api` type.
pub fn decode<T: serde::de::DeserializeOwned>(kind: Kind, v: &Value) -> Result<T, RenderError> {
    T::deserialize(v).map_err(|source| RenderError::Decode {
        what: format!("{}/{}", kind.qualified(), name_of(v)),
        source,
    })
}

/// `metadata.name` of an object's JSON.
pub fn name_of(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or_default()
}

/// `metadata.namespace` of an object's JSON.
pub fn namespace_of(v: &Value) -> &str {
    v["metadata"]["namespace"].as_str().unwrap_or_default()
}

/// `-o name`: `deployment.apps/web`.
pub fn qualified_name(kind: Kind, v: &Value) -> String {
    format!("{}/{}", kind.qualified(), name_of(v))
}

/// Age as kubectl prints it (apimachinery's `HumanDuration`): `45s`,
/// `3m12s`, `25m`, `5h2m`, `30h`, `3d4h`, `12d`, `2y30d`.
pub fn age(since_ms: u64, now_ms: u64) -> String {
    if since_ms == 0 {
        return "<unknown>".into();
    }
    human_duration(Duration::from_millis(now_ms.saturating_sub(since_ms)))
}

/// [`age`] of an optional time.
pub fn age_of(t: Option<Time>, now_ms: u64) -> String {
    age(t.map_or(0, Time::ms), now_ms)
}

/// apimachinery's `HumanDuration`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        return format!("{s}s");
    }
    let m = s / 60;
    if m < 10 {
        return match s % 60 {
            0 => format!("{m}m"),
            r => format!("{m}m{r}s"),
        };
    }
    if m < 180 {
        return format!("{m}m");
    }
    let h = s / 3600;
    if h < 8 {
        return match m % 60 {
            0 => format!("{h}h"),
            r => format!("{h}h{r}m"),
        };
    }
    if h < 48 {
        return format!("{h}h");
    }
    if h < 24 * 8 {
        return match h % 24 {
            0 => format!("{}d", h / 24),
            r => format!("{}d{r}h", h / 24),
        };
    }
    if h < 24 * 365 * 2 {
        return format!("{}d", h / 24);
    }
    if h < 24 * 365 * 8 {
        let (y, d) = (h / 24 / 365, (h / 24) % 365);
        return if d == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{d}d")
        };
    }
    format!("{}y", h / 24 / 365)
}

/// Wraps items as a `List`.
pub fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// Renders a JSON value in the chosen machine format (JSON for the table
/// formats, which have no machine form).
pub fn render(v: &Value, format: Format) -> String {
    match format {
        Format::Yaml => serde_yaml::to_string(v).unwrap_or_default(),
        _ => serde_json::to_string_pretty(v).unwrap_or_default() + "\n",
    }
}

/// Columns laid out as kubectl's tab writer does: left-aligned, three
/// spaces apart, the last column unpadded. Widths only grow, so rows
/// added later (`get -w`) stay under the header when they fit.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<String>,
    widths: Vec<usize>,
}

impl Table {
    pub fn new(header: Vec<String>) -> Table {
        let widths = header.iter().map(|h| h.chars().count()).collect();
        Table { header, widths }
    }

    /// The rows as text, after the header when `with_header`.
    pub fn render(&mut self, rows: &[Vec<String>], with_header: bool) -> String {
        for r in rows {
            for (i, c) in r.iter().enumerate() {
                if i >= self.widths.len() {
                    self.widths.push(0);
                }
                self.widths[i] = self.widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        if with_header {
            let header = self.header.clone();
            self.line(&mut out, &header);
        }
        for r in rows {
            self.line(&mut out, r);
        }
        out
    }

    fn line(&self, out: &mut String, cells: &[String]) {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}   ", w = self.widths[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    }
}

/// A table in one go.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    Table::new(header.iter().map(|h| h.to_string()).collect()).render(rows, true)
}

/// `a=b` lines of labels (`<none>` when there are none).
pub fn labels_text(m: &BTreeMap<String, String>, sep: &str) -> Vec<String> {
    m.iter().map(|(k, v)| format!("{k}{sep}{v}")).collect()
}

/// One column of a kind's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// Shown only with `-o wide`.
    pub wide: bool,
}

const fn col(name: &'static str) -> Column {
    Column { name, wide: false }
}

const fn wide(name: &'static str) -> Column {
    Column { name, wide: true }
}

/// One object's line: NAME (and NAMESPACE with `-A`) are added by the
/// table; `cells` has one entry per column of the kind, wide ones included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub namespace: String,
    pub name: String,
    pub cells: Vec<String>,
}

impl Row {
    /// The row of the object `v` with these cells.
    pub fn of(v: &Value, cells: Vec<String>) -> Row {
        Row {
            namespace: namespace_of(v).to_string(),
            name: name_of(v).to_string(),
            cells,
        }
    }
}

/// What a row is printed with.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub now_ms: u64,
    /// `-o wide` (a few cells say more then, as kubectl's do).
    pub wide: bool,
    /// The registry's live view of nodes, by name (rows and descriptions
    /// of nodes are made from it).
    pub nodes: &'a BTreeMap<String, NodeView>,
}

/// What a description is printed from.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub object: &'a Value,
    /// The objects the kind's [`Extra`] names (a Deployment's
    /// ReplicaSets, a ReplicaSet's pods, a Service's Endpoints).
    pub related: &'a [Value],
    /// Events about the object, oldest first.
    pub events: &'a [Event],
    /// A pod's measured usage.
    pub usage: Option<&'a Usage>,
    /// A node's live view.
    pub node: Option<&'a NodeView>,
    pub now_ms: u64,
}

/// What `describe` fetches beside the object and its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    Nothing,
    /// Objects of this kind in the object's namespace whose owner
    /// references name the object's uid.
    Owned(Kind),
    /// The object of this kind with the same namespace and name.
    Named(Kind),
    /// The pod's cpu and memory in use.
    PodUsage,
    /// The node's live view.
    NodeView,
}

/// Makes one row of a kind's table.
pub type RowFn = fn(&Value, &Context<'_>) -> Result<Row, RenderError>;
/// Makes a kind's description.
pub type DescribeFn = fn(&Subject<'_>) -> Result<String, RenderError>;

/// How one kind is printed.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub kind: Kind,
    /// The columns after NAME, as kubectl orders them.
    pub columns: &'static [Column],
    pub row: RowFn,
    pub describe: DescribeFn,
    pub extra: Extra,
}

const POD_COLUMNS: &[Column] = &[
    col("READY"),
    col("STATUS"),
    col("RESTARTS"),
    col("AGE"),
    wide("IP"),
    col("NODE"),
    wide("NOMINATED NODE"),
];
const DEPLOYMENT_COLUMNS: &[Column] = &[
    col("READY"),
    col("UP-TO-DATE"),
    col("AVAILABLE"),
    col("AGE"),
    wide("CONTAINERS"),
    wide("IMAGES"),
    wide("SELECTOR"),
];
const REPLICASET_COLUMNS: &[Column] = &[
    col("DESIRED"),
    col("CURRENT"),
    col("READY"),
    col("AGE"),
    wide("CONTAINERS"),
    wide("IMAGES"),
    wide("SELECTOR"),
];
const SERVICE_COLUMNS: &[Column] = &[
    col("TYPE"),
    col("CLUSTER-IP"),
    col("EXTERNAL-IP"),
    col("PORT(S)"),
    col("AGE"),
    wide("SELECTOR"),
];
const ENDPOINTS_COLUMNS: &[Column] = &[col("ENDPOINTS"), col("AGE"), wide("NODES"), wide("SITES")];
const PRIORITYCLASS_COLUMNS: &[Column] = &[
    col("VALUE"),
    col("GLOBAL-DEFAULT"),
    col("AGE"),
    wide("PREEMPTIONPOLICY"),
];
const PDB_COLUMNS: &[Column] = &[
    col("MIN AVAILABLE"),
    col("MAX UNAVAILABLE"),
    col("ALLOWED DISRUPTIONS"),
    col("AGE"),
];
const NODE_COLUMNS: &[Column] = &[
    col("STATUS"),
    col("PRESSURE"),
    col("SITE"),
    col("ARCH"),
    col("CPU"),
    col("MEMORY"),
    col("AGE"),
    col("VERSION"),
    wide("INTERNAL-IP"),
    wide("OS-IMAGE"),
    wide("KERNEL-VERSION"),
    wide("CONTAINER-RUNTIME"),
];

/// The kind table: columns, row and describe functions of every kind.
pub fn printer(kind: Kind) -> Printer {
    let (columns, row, describe, extra): (&'static [Column], RowFn, DescribeFn, Extra) = match kind
    {
        Kind::Pod => (POD_COLUMNS, pods::row, pods::describe, Extra::PodUsage),
        Kind::Deployment => (
            DEPLOYMENT_COLUMNS,
            workloads::deployment_row,
            workloads::describe_deployment,
            Extra::Owned(Kind::ReplicaSet),
        ),
        Kind::ReplicaSet => (
            REPLICASET_COLUMNS,
            workloads::replicaset_row,
            workloads::describe_replicaset,
            Extra::Owned(Kind::Pod),
        ),
        Kind::Service => (
            SERVICE_COLUMNS,
            services::service_row,
            services::describe_service,
            Extra::Named(Kind::Endpoints),
        ),
        Kind::Endpoints => (
            ENDPOINTS_COLUMNS,
            services::endpoints_row,
            services::describe_endpoints,
            Extra::Nothing,
        ),
        Kind::PriorityClass => (
            PRIORITYCLASS_COLUMNS,
            scheduling::row,
            scheduling::describe,
            Extra::Nothing,
        ),
        Kind::Node => (NODE_COLUMNS, nodes::row, nodes::describe, Extra::NodeView),
        Kind::PodDisruptionBudget => (PDB_COLUMNS, policy::row, policy::describe, Extra::Nothing),
    };
    Printer {
        kind,
        columns,
        row,
        describe,
        extra,
    }
}

/// How a kind's table is laid out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Layout {
    /// `-o wide`.
    pub wide: bool,
    /// `-A`: a NAMESPACE column first (namespaced kinds only).
    pub namespaces: bool,
    /// Names as `kind.group/name` (several kinds in one `get`).
    pub qualified: bool,
}

impl Printer {
    /// The header of this kind's table.
    pub fn header(&self, layout: Layout) -> Vec<String> {
        let mut h = Vec::new();
        if layout.namespaces && self.kind.namespaced() {
            h.push("NAMESPACE".to_string());
        }
        h.push("NAME".to_string());
        h.extend(
            self.columns
                .iter()
                .filter(|c| layout.wide || !c.wide)
                .map(|c| c.name.to_string()),
        );
        h
    }

    /// A row's cells in the layout's columns.
    pub fn cells(&self, row: &Row, layout: Layout) -> Vec<String> {
        let mut out = Vec::new();
        if layout.namespaces && self.kind.namespaced() {
            out.push(row.namespace.clone());
        }
        out.push(if layout.qualified {
            format!("{}/{}", self.kind.qualified(), row.name)
        } else {
            row.name.clone()
        });
        out.extend(
            self.columns
                .iter()
                .zip(&row.cells)
                .filter(|(c, _)| layout.wide || !c.wide)
                .map(|(_, v)| v.clone()),
        );
        out
    }

    /// The table of these objects.
    pub fn table(
        &self,
        objects: &[Value],
        ctx: &Context<'_>,
        layout: Layout,
    ) -> Result<String, RenderError> {
        let mut rows = Vec::with_capacity(objects.len());
        for v in objects {
            let ctx = Context {
                wide: layout.wide,
                ..*ctx
            };
            rows.push(self.cells(&(self.row)(v, &ctx)?, layout));
        }
        Ok(Table::new(self.header(layout)).render(&rows, true))
    }
}

/// kubectl's describe layout: `Label:` padded to a column, values of
/// several lines continued under the first.
#[derive(Debug, Clone)]
pub struct Describe {
    out: String,
    width: usize,
}

impl Describe {
    /// Values start at column `width`.
    pub fn new(width: usize) -> Describe {
        Describe {
            out: String::new(),
            width,
        }
    }

    /// `Label:  value`; a value of several lines is continued under itself.
    pub fn field(&mut self, label: &str, value: impl std::fmt::Display) -> &mut Self {
        let value = value.to_string();
        let head = format!("{label}:");
        let mut lines = value.lines();
        let first = lines.next().unwrap_or_default();
        let w = self.width.max(head.len() + 1);
        let _ = writeln!(self.out, "{}", format!("{head:<w$}{first}").trim_end());
        for l in lines {
            let _ = writeln!(self.out, "{:w$}{l}", "");
        }
        self
    }

    /// `Label:  a` then `b`, ... under it; `<none>` when empty.
    pub fn list(&mut self, label: &str, items: &[String]) -> &mut Self {
        if items.is_empty() {
            self.field(label, "<none>")
        } else {
            self.field(label, items.join("\n"))
        }
    }

    /// A line as it is.
    pub fn line(&mut self, s: impl std::fmt::Display) -> &mut Self {
        let _ = writeln!(self.out, "{s}");
        self
    }

    /// Text already laid out (a sub-table), indented by `indent` spaces.
    pub fn block(&mut self, indent: usize, text: &str) -> &mut Self {
        for l in text.lines() {
            let _ = writeln!(self.out, "{}", format!("{:indent$}{l}", "").trim_end());
        }
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Name, namespace, creation time, labels and annotations, as every
/// description starts.
pub fn meta_fields(d: &mut Describe, m: &ObjectMeta, now_ms: u64) {
    d.field("Name", &m.name);
    if !m.namespace.is_empty() {
        d.field("Namespace", &m.namespace);
    }
    if let Some(t) = m.creation_timestamp {
        d.field(
            "CreationTimestamp",
            format!("{} ({} ago)", rfc3339(t.ms()), age_of(Some(t), now_ms)),
        );
    }
    d.list("Labels", &labels_text(&m.labels, "="));
    d.list("Annotations", &labels_text(&m.annotations, ": "));
}

/// `<none>` for an empty string.
pub fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod fixtures;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_and_trims() {
        let t = table(
            &["A", "BB"],
            &[vec!["xyz".into(), "1".into()], vec!["q".into(), "".into()]],
        );
        assert_eq!(t, "A     BB\nxyz   1\nq\n");
    }

    #[test]
    fn later_rows_keep_the_widths() {
        let mut t = Table::new(vec!["NAME".into(), "AGE".into()]);
        assert_eq!(
            t.render(&[vec!["web".into(), "1s".into()]], true),
            "NAME   AGE\nweb    1s\n"
        );
        assert_eq!(
            t.render(&[vec!["a".into(), "2s".into()]], false),
            "a      2s\n"
        );
    }

    #[test]
    fn ages_read_like_kubectl() {
        for (secs, want) in [
            (0, "0s"),
            (60, "60s"),
            (119, "119s"),
            (120, "2m"),
            (192, "3m12s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (5 * 3600 + 120, "5h2m"),
            (30 * 3600, "30h"),
            (3 * 86_400 + 4 * 3600, "3d4h"),
            (7 * 86_400, "7d"),
            (12 * 86_400, "12d"),
            (800 * 86_400, "2y70d"),
            (9 * 365 * 86_400, "9y"),
        ] {
            assert_eq!(human_duration(Duration::from_secs(secs)), want, "{secs}s");
        }
        assert_eq!(age(1000, 61_000), "60s");
        assert_eq!(age(0, 61_000), "<unknown>");
        assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn describe_aligns_values() {
        let mut d = Describe::new(10);
        d.field("Name", "web")
            .list("Labels", &["a=1".into(), "b=2".into()])
            .list("Taints", &[])
            .field("AVeryLongLabel", "x");
        assert_eq!(
            d.finish(),
            "Name:     web\nLabels:   a=1\n          b=2\nTaints:   <none>\nAVeryLongLabel: x\n"
        );
    }

    #[test]
    fn layouts_add_namespace_and_wide_columns() {
        let p = printer(Kind::Pod);
        assert_eq!(
            p.header(Layout::default()),
            ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "NODE"]
        );
        assert_eq!(
            p.header(Layout {
                wide: true,
                namespaces: true,
                qualified: false
            }),
            [
                "NAMESPACE",
                "NAME",
                "READY",
                "STATUS",
                "RESTARTS",
                "AGE",
                "IP",
                "NODE",
                "NOMINATED NODE"
            ]
        );
        // Cluster-scoped kinds never get a NAMESPACE column.
        let pc = printer(Kind::PriorityClass);
        assert_eq!(
            pc.header(Layout {
                namespaces: true,
                ..Layout::default()
            }),
            ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE"]
        );
        let row = Row {
            namespace: String::new(),
            name: "high".into(),
            cells: vec!["1000".into(), "false".into(), "5s".into(), "Never".into()],
        };
        assert_eq!(
            pc.cells(
                &row,
                Layout {
                    qualified: true,
                    ..Layout::default()
                }
            ),
            [
                "priorityclass.scheduling.k8s.io/high",
                "1000",
                "false",
                "5s"
            ]
        );
    }
}
