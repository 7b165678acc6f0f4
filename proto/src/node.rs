//! What a node is made of on the wire: identity facts, resources, pressure
//! signals and conditions, plus the operator's view of a node.
//!
//! Times are milliseconds since the Unix epoch (wall clock of the sender);
//! quantities are bytes, millicores or counts.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Resource amounts (capacity, allocatable).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub pids: u64,
    pub ephemeral_storage_bytes: u64,
    pub gpus: u32,
}

/// Facts about the box that change rarely.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Architecture in Go/Kubernetes spelling: `amd64`, `arm64`, `arm`.
    pub arch: String,
    pub os: String,
    pub os_image: String,
    pub kernel_version: String,
    pub agent_version: String,
    pub hostname: String,
    pub runtime: RuntimeInfo,
    pub addresses: Vec<String>,
    /// Boot time of the box (ms); a change means the box rebooted.
    pub boot_time_ms: u64,
}

/// The container runtime as the agent sees it.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeInfo {
    /// `docker` when the engine answered.
    pub name: String,
    /// Engine version, empty when unavailable.
    pub version: String,
    pub available: bool,
    /// Why it is unavailable, for the operator.
    pub message: String,
}

/// Eviction signals, named as the kubelet names them.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    MemoryAvailable,
    NodefsAvailable,
    NodefsInodesFree,
    ImagefsAvailable,
    PidAvailable,
}

impl Signal {
    pub const ALL: [Signal; 5] = [
        Signal::MemoryAvailable,
        Signal::NodefsAvailable,
        Signal::NodefsInodesFree,
        Signal::ImagefsAvailable,
        Signal::PidAvailable,
    ];

    /// Kubelet spelling, e.g. `memory.available`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodefsAvailable => "nodefs.available",
            Signal::NodefsInodesFree => "nodefs.inodesFree",
            Signal::ImagefsAvailable => "imagefs.available",
            Signal::PidAvailable => "pid.available",
        }
    }

    pub fn from_name(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The node condition this signal drives.
    pub fn condition(self) -> ConditionType {
        match self {
            Signal::MemoryAvailable => ConditionType::MemoryPressure,
            Signal::NodefsAvailable | Signal::NodefsInodesFree | Signal::ImagefsAvailable => {
                ConditionType::DiskPressure
            }
            Signal::PidAvailable => ConditionType::PidPressure,
        }
    }

    /// True when the signal counts bytes (shown with binary units).
    pub fn is_bytes(self) -> bool {
        !matches!(self, Signal::NodefsInodesFree | Signal::PidAvailable)
    }
}

/// Where a signal stands against its thresholds.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThresholdState {
    /// No threshold met.
    Clear,
    /// A soft threshold is met; eviction is allowed once the grace period has
    /// passed (`since_ms` is when it was first observed).
    SoftMet { since_ms: u64, grace_secs: u64 },
    /// A hard threshold is met, or a soft one past its grace period.
    Met,
}

/// One observation of one signal.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SignalObservation {
    pub signal: Signal,
    pub available: u64,
    pub capacity: u64,
    /// The hard threshold resolved to an amount, if one is configured.
    pub hard_threshold: Option<u64>,
    /// The soft threshold resolved to an amount, if one is configured.
    pub soft_threshold: Option<u64>,
    pub state: ThresholdState,
    /// Lowest value seen over the recent sample window.
    pub window_min: u64,
}

/// Node condition types (kubelet's, plus Ready: the controller owns
/// Ready=True from the lease; the agent may only say Ready=False).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConditionType {
    Ready,
    MemoryPressure,
    DiskPressure,
    PidPressure,
}

impl ConditionType {
    pub fn name(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::MemoryPressure => "MemoryPressure",
            ConditionType::DiskPressure => "DiskPressure",
            ConditionType::PidPressure => "PIDPressure",
        }
    }

    /// Taint key placed on a node while this pressure condition is true.
    pub fn taint_key(self) -> Option<&'static str> {
        match self {
            ConditionType::Ready => None,
            ConditionType::MemoryPressure => Some("node.outpost.dev/memory-pressure"),
            ConditionType::DiskPressure => Some("node.outpost.dev/disk-pressure"),
            ConditionType::PidPressure => Some("node.outpost.dev/pid-pressure"),
        }
    }

    /// The kubelet's reason (and event reason) for this condition being on
    /// or off, e.g. `NodeHasInsufficientMemory` / `NodeHasSufficientMemory`.
    pub fn reason(self, on: bool) -> &'static str {
        match (self, on) {
            (ConditionType::MemoryPressure, true) => "NodeHasInsufficientMemory",
            (ConditionType::MemoryPressure, false) => "NodeHasSufficientMemory",
            (ConditionType::DiskPressure, true) => "NodeHasDiskPressure",
            (ConditionType::DiskPressure, false) => "NodeHasNoDiskPressure",
            (ConditionType::PidPressure, true) => "NodeHasInsufficientPID",
            (ConditionType::PidPressure, false) => "NodeHasSufficientPID",
            (ConditionType::Ready, true) => "NodeReady",
            (ConditionType::Ready, false) => "NodeNotReady",
        }
    }

    pub const PRESSURE: [ConditionType; 3] = [
        ConditionType::MemoryPressure,
        ConditionType::DiskPressure,
        ConditionType::PidPressure,
    ];
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn name(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// A node condition with the kubelet's bookkeeping.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub kind: ConditionType,
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
    pub last_transition_ms: u64,
}

/// Most images one report lists (the most recently created first).
pub const MAX_IMAGES: usize = 256;
/// Most names (repo tags, then repo digests) listed per image.
pub const MAX_IMAGE_NAMES: usize = 8;
/// Longest image name listed, in bytes (the pod spec's bound on an image
/// reference); a longer one is left out, never cut.
pub const MAX_IMAGE_NAME: usize = 512;
/// Most bytes of image names in one report, all images together. The
/// per-image bounds alone would allow 1 MiB (256 x 8 x 512), the whole
/// frame; real names are 20 to 100 bytes, so a full list of 256 images
/// with a tag and a digest each takes about 50 KiB.
pub const MAX_IMAGE_NAME_BYTES: usize = 256 * 1024;
/// Longest architecture or OS name (`amd64`, `linux`; Go has none over 8).
pub const MAX_PLATFORM_NAME: usize = 32;

/// One image the node's engine holds, for the scheduler: image locality,
/// and which architectures an image exists for.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSummary {
    /// Repo tags, then repo digests (`repo@sha256:...`); at most
    /// [`MAX_IMAGE_NAMES`], each at most [`MAX_IMAGE_NAME`] bytes.
    pub names: Vec<String>,
    pub size_bytes: u64,
    /// Go spelling, as the image config has it: `amd64`, `arm64`, `arm`.
    /// Empty when the engine did not say.
    pub architecture: String,
    /// `linux`, `windows`; empty when the engine did not say.
    pub os: String,
}

/// What the agent reports about its node; sent after the hello and whenever
/// something in it changes.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeReport {
    pub info: NodeInfo,
    pub capacity: Resources,
    pub allocatable: Resources,
    /// Pressure conditions, and from protocol 4 on `Ready=False` when the
    /// agent cannot run pods (its runtime was lost). The agent never says
    /// Ready=True: the controller derives that from the lease.
    pub conditions: Vec<Condition>,
    pub signals: Vec<SignalObservation>,
    /// Labels the agent asserts (from its flags or config file).
    pub labels: BTreeMap<String, String>,
    /// Images the engine holds, the most recently created first; at most
    /// [`MAX_IMAGES`].
    pub images: Vec<ImageSummary>,
}

/// Taint effects, as in Kubernetes.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub effect: TaintEffect,
    pub since_ms: u64,
}

/// The operator's view of one node.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub created_ms: u64,
    /// All conditions, Ready first.
    pub conditions: Vec<Condition>,
    pub taints: Vec<Taint>,
    pub capacity: Resources,
    pub allocatable: Resources,
    pub info: NodeInfo,
    pub signals: Vec<SignalObservation>,
    pub connected: bool,
    pub remote_addr: String,
    pub last_heartbeat_ms: u64,
    pub cert_serial: String,
    pub cert_not_after_ms: u64,
    pub unschedulable: bool,
}

/// Event severity.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// Something worth telling the operator, kept in the store (bounded).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    pub time_ms: u64,
    pub kind: EventType,
    /// CamelCase reason, e.g. `NodeNotReady`.
    pub reason: String,
    /// `node/NAME`, `token/ID`, ...
    pub object: String,
    pub message: String,
    /// Occurrences in this series (Kubernetes' `count`): a repeat of the
    /// same object, type, reason and message updates this event. Peers
    /// from before series send none: one.
    #[serde(default = "one")]
    pub count: u32,
    /// When the series began (`firstTimestamp`); `time_ms` is the last
    /// occurrence. Zero from older peers: read it through `first_ms`.
    #[serde(default)]
    pub first_time_ms: u64,
}

fn one() -> u32 {
    1
}

/// An event as the operators' `ListEvents` answer carries it: the layout
/// from before series. postcard is not self-describing, so an older
/// `outpostctl` cannot skip fields it does not know; a newer one asks
/// `ListEventSeries` for [`Event`]s with their count and first time.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PlainEvent {
    pub seq: u64,
    pub time_ms: u64,
    pub kind: EventType,
    pub reason: String,
    pub object: String,
    pub message: String,
}

impl From<&Event> for PlainEvent {
    fn from(e: &Event) -> PlainEvent {
        PlainEvent {
            seq: e.seq,
            time_ms: e.time_ms,
            kind: e.kind,
            reason: e.reason.clone(),
            object: e.object.clone(),
            message: e.message.clone(),
        }
    }
}

impl From<PlainEvent> for Event {
    /// From an older controller: one occurrence.
    fn from(e: PlainEvent) -> Event {
        Event {
            seq: e.seq,
            time_ms: e.time_ms,
            kind: e.kind,
            reason: e.reason,
            object: e.object,
            message: e.message,
            count: 1,
            first_time_ms: 0,
        }
    }
}

impl Event {
    /// When the series began; an event from an older peer began when it
    /// was last seen.
    pub fn first_ms(&self) -> u64 {
        if self.first_time_ms == 0 {
            self.time_ms
        } else {
            self.first_time_ms.min(self.time_ms)
        }
    }
}

/// A bootstrap token as listed to operators (never the secret).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// Remaining uses; `None` is unlimited until expiry.
    pub uses_left: Option<u32>,
    pub used: u32,
    pub labels: BTreeMap<String, String>,
    pub revoked: bool,
    pub description: String,
}

/// Bounds on a report from a peer, so one agent cannot make the controller
/// hold or persist more than a few KiB on its behalf.
pub mod limits {
    pub const MAX_CONDITIONS: usize = 8;
    pub const MAX_SIGNALS: usize = 16;
    pub const MAX_ADDRESSES: usize = 32;
    pub const MAX_TEXT: usize = 512;
}

/// Longest reason of an agent's Ready=False (kubelet's are under 32).
pub const MAX_READY_REASON: usize = 64;

fn is_camel_case(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_READY_REASON
        && s.bytes().all(|b| b.is_ascii_alphanumeric())
        && s.as_bytes()[0].is_ascii_uppercase()
}

fn check_text(field: &str, s: &str) -> Result<(), String> {
    if s.len() > limits::MAX_TEXT {
        return Err(format!(
            "{field} is {} bytes, at most {} allowed",
            s.len(),
            limits::MAX_TEXT
        ));
    }
    Ok(())
}

impl NodeReport {
    /// The report as a controller speaking protocol `version` may be sent
    /// it: before [`crate::version::AGENT_READY`] without the agent's
    /// Ready (such a controller refuses a report that has one).
    pub fn for_protocol(&self, version: u32) -> std::borrow::Cow<'_, NodeReport> {
        if crate::version::has(version, crate::version::AGENT_READY)
            || !self
                .conditions
                .iter()
                .any(|c| c.kind == ConditionType::Ready)
        {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut r = self.clone();
        r.conditions.retain(|c| c.kind != ConditionType::Ready);
        std::borrow::Cow::Owned(r)
    }

    /// Checks every bound; returns all problems at once.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let i = &self.info;
        for (field, s) in [
            ("info.arch", &i.arch),
            ("info.os", &i.os),
            ("info.os_image", &i.os_image),
            ("info.kernel_version", &i.kernel_version),
            ("info.agent_version", &i.agent_version),
            ("info.hostname", &i.hostname),
            ("info.runtime.name", &i.runtime.name),
            ("info.runtime.version", &i.runtime.version),
            ("info.runtime.message", &i.runtime.message),
        ] {
            if let Err(e) = check_text(field, s) {
                problems.push(e);
            }
        }
        if i.addresses.len() > limits::MAX_ADDRESSES {
            problems.push(format!(
                "{} addresses, at most {}",
                i.addresses.len(),
                limits::MAX_ADDRESSES
            ));
        }
        for a in &i.addresses {
            if a.parse::<std::net::IpAddr>().is_err() {
                problems.push(format!(
                    "address {:?} is not an IP address",
                    a.chars().take(64).collect::<String>()
                ));
            }
        }
        if self.conditions.len() > limits::MAX_CONDITIONS {
            problems.push(format!(
                "{} conditions, at most {}",
                self.conditions.len(),
                limits::MAX_CONDITIONS
            ));
        }
        let mut ready = 0;
        for c in &self.conditions {
            if c.kind == ConditionType::Ready {
                ready += 1;
                if c.status != ConditionStatus::False {
                    problems.push(format!(
                        "an agent reports Ready only as False (it cannot run pods), not {}; the controller owns Ready=True",
                        c.status.name()
                    ));
                }
                if !is_camel_case(&c.reason) {
                    problems.push(format!(
                        "Ready=False needs a CamelCase reason of 1 to {MAX_READY_REASON} letters and digits, not {:?}",
                        c.reason.chars().take(64).collect::<String>()
                    ));
                }
            }
            for (field, s) in [
                ("condition reason", &c.reason),
                ("condition message", &c.message),
            ] {
                if let Err(e) = check_text(field, s) {
                    problems.push(e);
                }
            }
        }
        if ready > 1 {
            problems.push(format!("{ready} Ready conditions, at most one"));
        }
        if self.signals.len() > limits::MAX_SIGNALS {
            problems.push(format!(
                "{} signals, at most {}",
                self.signals.len(),
                limits::MAX_SIGNALS
            ));
        }
        if let Err(e) = crate::names::validate_labels(&self.labels) {
            problems.push(e);
        }
        validate_images(&self.images, &mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

fn validate_images(images: &[ImageSummary], problems: &mut Vec<String>) {
    if images.len() > MAX_IMAGES {
        problems.push(format!("{} images, at most {MAX_IMAGES}", images.len()));
    }
    let mut total = 0usize;
    for (i, image) in images.iter().enumerate() {
        if image.names.len() > MAX_IMAGE_NAMES {
            problems.push(format!(
                "image {i} has {} names, at most {MAX_IMAGE_NAMES}",
                image.names.len()
            ));
        }
        for n in &image.names {
            total = total.saturating_add(n.len());
            if n.is_empty() || n.len() > MAX_IMAGE_NAME {
                problems.push(format!(
                    "image {i}: a name of {} bytes; names are 1 to {MAX_IMAGE_NAME} bytes",
                    n.len()
                ));
            }
        }
        for (field, s) in [("architecture", &image.architecture), ("os", &image.os)] {
            if s.len() > MAX_PLATFORM_NAME {
                problems.push(format!(
                    "image {i}: {field} is {} bytes, at most {MAX_PLATFORM_NAME}",
                    s.len()
                ));
            }
        }
    }
    if total > MAX_IMAGE_NAME_BYTES {
        problems.push(format!(
            "image names take {total} bytes, at most {MAX_IMAGE_NAME_BYTES}"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(names: &[&str]) -> ImageSummary {
        ImageSummary {
            names: names.iter().map(|n| (*n).to_string()).collect(),
            size_bytes: 1,
            architecture: "arm64".into(),
            os: "linux".into(),
        }
    }

    #[test]
    fn image_bounds() {
        let ok = NodeReport {
            images: vec![image(&["a:1", "a@sha256:00"]); MAX_IMAGES],
            ..NodeReport::default()
        };
        assert!(ok.validate().is_ok(), "{:?}", ok.validate());
        let long = "x".repeat(MAX_IMAGE_NAME + 1);
        let longest = "y".repeat(MAX_IMAGE_NAME);
        let too_many_names: Vec<String> = (0..=MAX_IMAGE_NAMES).map(|i| format!("n:{i}")).collect();
        let names: Vec<&str> = too_many_names.iter().map(String::as_str).collect();
        let mut odd = image(&["a:1"]);
        odd.architecture = "a".repeat(MAX_PLATFORM_NAME + 1);
        let table: Vec<(Vec<ImageSummary>, &str)> = vec![
            (vec![image(&["a:1"]); MAX_IMAGES + 1], "257 images"),
            (vec![image(&names)], "9 names"),
            (vec![image(&[long.as_str()])], "bytes; names are 1 to 512"),
            (vec![image(&[""])], "a name of 0 bytes"),
            (vec![odd], "architecture is 33 bytes"),
            (
                vec![image(&[longest.as_str(); 8]); 100],
                "image names take 409600 bytes",
            ),
        ];
        for (images, want) in table {
            let r = NodeReport {
                images,
                ..NodeReport::default()
            };
            let e = r.validate().unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    fn ready(status: ConditionStatus, reason: &str) -> Condition {
        Condition {
            kind: ConditionType::Ready,
            status,
            reason: reason.into(),
            message: "container runtime is down".into(),
            last_transition_ms: 1,
        }
    }

    #[test]
    fn agent_ready_is_false_only_once_with_a_reason() {
        let with = |conditions: Vec<Condition>| NodeReport {
            conditions,
            ..NodeReport::default()
        };
        let ok = with(vec![ready(ConditionStatus::False, "KubeletNotReady")]);
        assert!(ok.validate().is_ok(), "{:?}", ok.validate());
        let table: Vec<(Vec<Condition>, &str)> = vec![
            (
                vec![ready(ConditionStatus::True, "KubeletReady")],
                "not True; the controller owns Ready=True",
            ),
            (
                vec![ready(ConditionStatus::Unknown, "KubeletNotReady")],
                "not Unknown",
            ),
            (
                vec![ready(ConditionStatus::False, "")],
                "needs a CamelCase reason",
            ),
            (
                vec![ready(ConditionStatus::False, "not ready")],
                "needs a CamelCase reason",
            ),
            (
                vec![ready(
                    ConditionStatus::False,
                    &"R".repeat(MAX_READY_REASON + 1),
                )],
                "needs a CamelCase reason",
            ),
            (
                vec![
                    ready(ConditionStatus::False, "KubeletNotReady"),
                    ready(ConditionStatus::False, "KubeletNotReady"),
                ],
                "2 Ready conditions, at most one",
            ),
        ];
        for (conditions, want) in table {
            let e = with(conditions).validate().unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
        let mut long = ready(ConditionStatus::False, "KubeletNotReady");
        long.message = "m".repeat(limits::MAX_TEXT + 1);
        assert!(with(vec![long]).validate().is_err(), "message bounded");
    }

    #[test]
    fn an_older_controller_is_not_sent_the_agents_ready() {
        let pressure = Condition {
            kind: ConditionType::MemoryPressure,
            status: ConditionStatus::False,
            reason: "NodeHasSufficientMemory".into(),
            message: String::new(),
            last_transition_ms: 1,
        };
        let r = NodeReport {
            conditions: vec![
                ready(ConditionStatus::False, "KubeletNotReady"),
                pressure.clone(),
            ],
            ..NodeReport::default()
        };
        assert_eq!(r.for_protocol(crate::PROTOCOL_VERSION).as_ref(), &r);
        let old = r.for_protocol(crate::MIN_PROTOCOL_VERSION);
        assert_eq!(
            old.conditions,
            vec![pressure],
            "Ready left out, the rest kept"
        );
        assert!(matches!(
            NodeReport::default().for_protocol(3),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_full_image_list_fits_in_a_frame() {
        let name = "y".repeat(MAX_IMAGE_NAME);
        let per_image = MAX_IMAGE_NAME_BYTES / MAX_IMAGES / MAX_IMAGE_NAME;
        let r = NodeReport {
            images: vec![image(&vec![name.as_str(); per_image.max(1)]); MAX_IMAGES],
            ..NodeReport::default()
        };
        assert!(r.validate().is_ok(), "{:?}", r.validate());
        let bytes = crate::frame::encode(&crate::Message::Report(Box::new(r))).unwrap();
        assert!(bytes.len() < crate::MAX_FRAME, "{}", bytes.len());
    }

    #[test]
    fn an_older_outpostctl_decodes_the_event_listing_it_asks_for() {
        // The Event struct as outpostctl had it before series.
        #[derive(Deserialize, Debug, PartialEq)]
        struct OldEvent {
            seq: u64,
            time_ms: u64,
            kind: EventType,
            reason: String,
            object: String,
            message: String,
        }
        #[derive(Deserialize, Debug)]
        enum OldResponse {
            _Nodes(()),
            _Node(()),
            Events(Vec<OldEvent>),
        }
        let e = Event {
            seq: 7,
            time_ms: 9_000,
            kind: EventType::Warning,
            reason: "FailedSync".into(),
            object: "node/a".into(),
            message: "disk full".into(),
            count: 173,
            first_time_ms: 1_000,
        };
        let two = vec![e.clone(), e.clone()];
        let old_answer = crate::AdminResponse::Events(two.iter().map(PlainEvent::from).collect());
        let bytes = postcard::to_allocvec(&old_answer).unwrap();
        let OldResponse::Events(got) = postcard::from_bytes::<OldResponse>(&bytes).unwrap() else {
            panic!("not an event listing")
        };
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[1].seq, got[1].time_ms, got[1].message.as_str()),
            (7, 9_000, "disk full")
        );
        // The series answer is another variant, at the end, whole.
        let series = crate::AdminResponse::EventSeries(two.clone());
        let bytes = postcard::to_allocvec(&series).unwrap();
        assert!(postcard::from_bytes::<OldResponse>(&bytes).is_err());
        assert_eq!(
            postcard::from_bytes::<crate::AdminResponse>(&bytes).unwrap(),
            series
        );
        // From an older controller's answer: one occurrence each.
        let back = Event::from(PlainEvent::from(&e));
        assert_eq!((back.count, back.first_ms()), (1, 9_000));
    }

    #[test]
    fn an_event_from_before_series_decodes_as_one_occurrence() {
        let old = r#"{"seq":3,"time_ms":9000,"kind":"Warning","reason":"FailedSync","object":"node/a","message":"disk full"}"#;
        let e: Event = serde_json::from_str(old).unwrap();
        assert_eq!(e.count, 1);
        assert_eq!(e.first_ms(), 9000);
        let back: Event = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }
}
