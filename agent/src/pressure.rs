//! Node pressure with the kubelet's eviction-manager semantics, without I/O.
//!
//! Every housekeeping interval the agent measures its [`Observations`]
//! (`probe.rs`) and hands them, with the current time, to
//! [`PressureTracker::observe`]. The tracker compares them with the configured
//! thresholds and returns a [`PressureOutcome`]: the three pressure
//! conditions, one [`SignalObservation`] per measured signal, the signals
//! that would drive eviction now and how much each needs to free. Nothing here
//! reads a clock or a file, so whole scenarios run on a virtual clock.
//!
//! The rules follow kubelet's `pkg/kubelet/eviction` (`synchronize` in
//! `eviction_manager.go` and the helpers in `helpers.go`); the flag parsers
//! accept kubelet's `--eviction-*` syntax.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use heapless::HistoryBuf;
use outpost_proto::units::{format_bytes, go_duration, parse_duration, parse_quantity};
use outpost_proto::{
    Condition, ConditionStatus, ConditionType, Signal, SignalObservation, ThresholdState,
};

/// Samples kept per signal for [`SignalObservation::window_min`]: 32 samples
/// at the default 10 s housekeeping interval cover about five minutes, the
/// same span as the default transition period.
pub const HISTORY_LEN: usize = 32;

/// Kubelet's default `--eviction-pressure-transition-period`.
pub const DEFAULT_TRANSITION_PERIOD: Duration = Duration::from_secs(5 * 60);

/// A threshold amount: absolute, or a share of the signal's capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdValue {
    /// Bytes for byte signals, a count for inodes and pids.
    Quantity(u64),
    /// Percent of capacity, `0..=100`.
    Percentage(f64),
}

impl ThresholdValue {
    /// The amount this value stands for on a signal with `capacity`.
    pub fn resolve(&self, capacity: u64) -> u64 {
        match *self {
            ThresholdValue::Quantity(q) => q,
            ThresholdValue::Percentage(p) => {
                let p = if p.is_finite() {
                    p.clamp(0.0, 100.0)
                } else {
                    0.0
                };
                // Kubelet truncates `float64(capacity) * percentage` to an
                // integer; the product lies in 0..=capacity and `as` saturates,
                // so nothing is lost beyond the fraction.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let amount = (capacity as f64 * p / 100.0) as u64;
                amount.min(capacity)
            }
        }
    }
}

/// One eviction threshold: the signal is under pressure while `available < value`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    /// The signal compared.
    pub signal: Signal,
    /// The level it must not fall below.
    pub value: ThresholdValue,
}

/// A soft threshold: conditions react at once, eviction only after `grace`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoftThreshold {
    /// The threshold itself.
    pub threshold: Threshold,
    /// How long it must stay met before it drives eviction.
    pub grace: Duration,
}

/// Validated pressure configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PressureConfig {
    /// Thresholds that drive eviction as soon as they are met.
    pub hard: Vec<Threshold>,
    /// Thresholds that drive eviction after their grace period.
    pub soft: Vec<SoftThreshold>,
    /// Per signal: how far above its threshold a signal must climb before a
    /// threshold that drove eviction counts as resolved.
    pub min_reclaim: Vec<Threshold>,
    /// How long a condition stays true after its last met threshold.
    pub transition_period: Duration,
}

impl Default for PressureConfig {
    /// Kubelet's defaults (`DefaultEvictionHard` on Linux, plus
    /// `pid.available<10%` as in DESIGN.md): no soft thresholds, no
    /// min-reclaim, 5m transition period.
    fn default() -> Self {
        use Signal::*;
        use ThresholdValue::*;
        let t = |signal, value| Threshold { signal, value };
        PressureConfig {
            hard: vec![
                t(MemoryAvailable, Quantity(100 * MI)),
                t(NodefsAvailable, Percentage(10.0)),
                t(NodefsInodesFree, Percentage(5.0)),
                t(ImagefsAvailable, Percentage(15.0)),
                t(PidAvailable, Percentage(10.0)),
            ],
            soft: Vec::new(),
            min_reclaim: Vec::new(),
            transition_period: DEFAULT_TRANSITION_PERIOD,
        }
    }
}

/// The eviction settings as given, in kubelet flag syntax, before validation.
///
/// Field names follow the kubelet flags (`--eviction-hard`, ...). As in the
/// kubelet, giving `eviction_hard` replaces the default hard thresholds
/// entirely rather than merging with them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PressureFlags {
    /// e.g. `memory.available<100Mi,nodefs.available<10%`.
    pub eviction_hard: Option<String>,
    /// e.g. `memory.available<300Mi`.
    pub eviction_soft: Option<String>,
    /// e.g. `memory.available=1m30s`.
    pub eviction_soft_grace_period: Option<String>,
    /// e.g. `memory.available=0Mi,nodefs.available=500Mi`.
    pub eviction_minimum_reclaim: Option<String>,
    /// e.g. `5m`.
    pub eviction_pressure_transition_period: Option<String>,
}

impl PressureFlags {
    /// Validate every flag, reporting all problems of all flags at once.
    pub fn validate(&self) -> Result<PressureConfig, String> {
        let mut errors = Vec::new();
        let mut cfg = PressureConfig::default();
        let mut note = |flag: &str, e: String| errors.push(format!("--{flag}: {e}"));

        if let Some(spec) = &self.eviction_hard {
            match parse_thresholds(spec) {
                Ok(hard) => cfg.hard = hard,
                Err(e) => note("eviction-hard", e),
            }
        }
        let soft = match self.eviction_soft.as_deref().map(parse_thresholds) {
            Some(Ok(soft)) => soft,
            Some(Err(e)) => {
                note("eviction-soft", e);
                Vec::new()
            }
            None => Vec::new(),
        };
        let graces = match self
            .eviction_soft_grace_period
            .as_deref()
            .map(parse_grace_periods)
        {
            Some(Ok(graces)) => Some(graces),
            Some(Err(e)) => {
                note("eviction-soft-grace-period", e);
                None
            }
            None => Some(Vec::new()),
        };
        // Without valid grace periods the "missing grace" check would only
        // repeat the grace flag's own error.
        if let Some(graces) = graces {
            match build_soft(soft, &graces) {
                Ok(soft) => cfg.soft = soft,
                Err(e) => note("eviction-soft", e),
            }
        }
        if let Some(spec) = &self.eviction_minimum_reclaim {
            match parse_min_reclaim(spec) {
                Ok(min_reclaim) => cfg.min_reclaim = min_reclaim,
                Err(e) => note("eviction-minimum-reclaim", e),
            }
        }
        if let Some(spec) = &self.eviction_pressure_transition_period {
            match parse_duration(spec) {
                Ok(period) => cfg.transition_period = period,
                Err(e) => note("eviction-pressure-transition-period", e),
            }
        }
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(errors.join("\n"))
        }
    }
}

const MI: u64 = 1 << 20;

/// Parse kubelet `--eviction-hard`/`--eviction-soft` syntax, e.g.
/// `memory.available<100Mi,nodefs.available<10%`.
///
/// As in the kubelet, `0%` and `100%` disable a signal: such entries yield no
/// threshold. Every bad entry is reported in the one error.
pub fn parse_thresholds(spec: &str) -> Result<Vec<Threshold>, String> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut seen = Vec::new();
    for entry in entries(spec) {
        match parse_threshold_entry(entry) {
            Ok((signal, value)) => {
                if seen.contains(&signal) {
                    errors.push(format!(
                        "`{entry}`: {} is given more than once",
                        signal.name()
                    ));
                    continue;
                }
                seen.push(signal);
                if let Some(value) = value {
                    out.push(Threshold { signal, value });
                }
            }
            Err(e) => errors.push(format!("`{entry}`: {e}")),
        }
    }
    finish(out, errors, "threshold")
}

/// Parse kubelet `--eviction-soft-grace-period` syntax, e.g.
/// `memory.available=1m30s,nodefs.available=2m`.
pub fn parse_grace_periods(spec: &str) -> Result<Vec<(Signal, Duration)>, String> {
    parse_assignments(
        spec,
        "grace period",
        "memory.available=1m30s",
        parse_duration,
    )
}

/// Parse kubelet `--eviction-minimum-reclaim` syntax, e.g.
/// `memory.available=0Mi,nodefs.available=500Mi` or `nodefs.available=2%`.
pub fn parse_min_reclaim(spec: &str) -> Result<Vec<Threshold>, String> {
    let pairs = parse_assignments(spec, "minimum reclaim", "nodefs.available=500Mi", |v| {
        if let Some(p) = v.strip_suffix('%') {
            // Kubelet: "eviction percentage minimum reclaim must be positive".
            let p = parse_percentage(p)?;
            if p <= 0.0 {
                return Err("a percentage minimum reclaim must be above 0%".to_string());
            }
            Ok(ThresholdValue::Percentage(p))
        } else {
            // Zero is allowed: it switches the hysteresis off for that signal.
            parse_quantity(v).map(ThresholdValue::Quantity)
        }
    })?;
    Ok(pairs
        .into_iter()
        .map(|(signal, value)| Threshold { signal, value })
        .collect())
}

/// Attach grace periods to soft thresholds; every soft threshold needs one
/// (kubelet refuses a soft threshold without a grace period). Grace periods
/// for signals without a soft threshold are ignored, as in the kubelet.
pub fn build_soft(
    thresholds: Vec<Threshold>,
    graces: &[(Signal, Duration)],
) -> Result<Vec<SoftThreshold>, String> {
    let mut out = Vec::with_capacity(thresholds.len());
    let mut missing = Vec::new();
    for threshold in thresholds {
        match graces.iter().find(|(s, _)| *s == threshold.signal) {
            Some(&(_, grace)) => out.push(SoftThreshold { threshold, grace }),
            None => missing.push(threshold.signal.name()),
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(format!(
            "soft threshold(s) without a grace period: {}; give one per signal in \
             --eviction-soft-grace-period, e.g. {}=1m30s",
            missing.join(", "),
            missing[0]
        ))
    }
}

/// One measured signal: what is left and what there is in total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observation {
    /// Amount still available (bytes or count).
    pub available: u64,
    /// Total amount (bytes or count); percentages resolve against it.
    pub capacity: u64,
}

/// One round of measurements; `None` where a signal could not be measured
/// (no separate imagefs, a filesystem without inode counts, ...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observations {
    /// `memory.available`.
    pub memory_available: Option<Observation>,
    /// `nodefs.available`.
    pub nodefs_available: Option<Observation>,
    /// `nodefs.inodesFree`.
    pub nodefs_inodes_free: Option<Observation>,
    /// `imagefs.available`.
    pub imagefs_available: Option<Observation>,
    /// `pid.available`.
    pub pid_available: Option<Observation>,
}

impl Observations {
    /// The observation for `signal`, if measured.
    pub fn get(&self, signal: Signal) -> Option<Observation> {
        match signal {
            Signal::MemoryAvailable => self.memory_available,
            Signal::NodefsAvailable => self.nodefs_available,
            Signal::NodefsInodesFree => self.nodefs_inodes_free,
            Signal::ImagefsAvailable => self.imagefs_available,
            Signal::PidAvailable => self.pid_available,
        }
    }

    /// Record (or clear, with `None`) the observation for `signal`.
    pub fn set(&mut self, signal: Signal, obs: Option<Observation>) {
        let slot = match signal {
            Signal::MemoryAvailable => &mut self.memory_available,
            Signal::NodefsAvailable => &mut self.nodefs_available,
            Signal::NodefsInodesFree => &mut self.nodefs_inodes_free,
            Signal::ImagefsAvailable => &mut self.imagefs_available,
            Signal::PidAvailable => &mut self.pid_available,
        };
        *slot = obs;
    }

    /// Builder form of [`Observations::set`].
    pub fn with(mut self, signal: Signal, available: u64, capacity: u64) -> Self {
        self.set(
            signal,
            Some(Observation {
                available,
                capacity,
            }),
        );
        self
    }
}

/// What one call of [`PressureTracker::observe`] concluded.
#[derive(Debug, Clone, PartialEq)]
pub struct PressureOutcome {
    /// MemoryPressure, DiskPressure, PIDPressure, in that order.
    pub conditions: Vec<Condition>,
    /// One per measured signal, in [`Signal::ALL`] order.
    pub signals: Vec<SignalObservation>,
    /// Signals with a threshold met for at least its grace period (hard
    /// thresholds have none): what would drive reclaim and eviction now.
    /// Memory first, as in kubelet's eviction priority.
    pub eviction_signals: Vec<Signal>,
    /// Per eviction signal, the amount to free to get back to its threshold
    /// plus min-reclaim.
    pub reclaim: Vec<(Signal, u64)>,
    /// Conditions whose status changed in this call. The first call reports
    /// all three, as kubelet records an event when it first sets a condition.
    pub transitions: Vec<(ConditionType, ConditionStatus)>,
}

/// One threshold as the tracker evaluates it (hard ones have zero grace).
#[derive(Debug, Clone, Copy)]
struct Rule {
    signal: Signal,
    value: ThresholdValue,
    grace: Duration,
    soft: bool,
    min_reclaim: Option<ThresholdValue>,
}

/// Per-rule memory between calls.
#[derive(Debug, Clone, Copy, Default)]
struct RuleState {
    /// When the rule was first seen met in the current unbroken run
    /// (monotonic, and wall clock for reporting).
    first_observed: Option<(Instant, u64)>,
    /// It drove eviction in the previous call (kubelet's `m.thresholdsMet`);
    /// only those keep their min-reclaim hysteresis.
    evicting: bool,
}

/// Why a rule counts as met in this call.
#[derive(Debug, Clone, Copy)]
struct Met {
    available: u64,
    threshold: u64,
    min_reclaim: u64,
    /// Met only because it has not yet recovered by `min_reclaim`.
    hysteresis: bool,
}

#[derive(Debug, Clone, Copy)]
struct CondState {
    last_observed: Option<Instant>,
    status: ConditionStatus,
    last_transition_ms: u64,
}

/// The eviction manager's bookkeeping, fed one [`Observations`] per interval.
#[derive(Debug, Clone)]
pub struct PressureTracker {
    rules: Vec<Rule>,
    states: Vec<RuleState>,
    transition_period: Duration,
    conditions: [CondState; 3],
    history: [HistoryBuf<u64, HISTORY_LEN>; 5],
}

impl PressureTracker {
    /// A tracker with no history; every condition starts Unknown.
    pub fn new(cfg: PressureConfig) -> Self {
        let min_reclaim = |signal: Signal| {
            cfg.min_reclaim
                .iter()
                .find(|t| t.signal == signal)
                .map(|t| t.value)
        };
        // Hard rules first so that per-signal lookups prefer them.
        let hard = cfg.hard.iter().map(|t| Rule {
            signal: t.signal,
            value: t.value,
            grace: Duration::ZERO,
            soft: false,
            min_reclaim: min_reclaim(t.signal),
        });
        let soft = cfg.soft.iter().map(|s| Rule {
            signal: s.threshold.signal,
            value: s.threshold.value,
            grace: s.grace,
            soft: true,
            min_reclaim: min_reclaim(s.threshold.signal),
        });
        let rules: Vec<Rule> = hard.chain(soft).collect();
        let unknown = CondState {
            last_observed: None,
            status: ConditionStatus::Unknown,
            last_transition_ms: 0,
        };
        PressureTracker {
            states: vec![RuleState::default(); rules.len()],
            rules,
            transition_period: cfg.transition_period,
            conditions: [unknown; 3],
            history: std::array::from_fn(|_| HistoryBuf::new()),
        }
    }

    /// Evaluate one round of measurements taken at `now` (`wall_ms` is the
    /// same instant as Unix milliseconds, used only for reporting).
    pub fn observe(&mut self, obs: &Observations, now: Instant, wall_ms: u64) -> PressureOutcome {
        // Thresholds met now, merged with those that drove eviction last time
        // and have not yet recovered by their min-reclaim (kubelet:
        // thresholdsMet + mergeThresholds). Unmeasured signals meet nothing.
        let met: Vec<Option<Met>> = self
            .rules
            .iter()
            .zip(&self.states)
            .map(|(rule, state)| {
                obs.get(rule.signal)
                    .and_then(|o| rule.met(o, state.evicting))
            })
            .collect();

        // First-observed times survive only while the rule stays met, so a
        // soft threshold that clears before its grace period starts over.
        for ((rule, state), m) in self.rules.iter().zip(&mut self.states).zip(&met) {
            if m.is_some() {
                let (since, _) = *state.first_observed.get_or_insert((now, wall_ms));
                state.evicting = now.saturating_duration_since(since) >= rule.grace;
            } else {
                state.first_observed = None;
                state.evicting = false;
            }
        }

        for signal in Signal::ALL {
            if let Some(o) = obs.get(signal) {
                self.history[signal_index(signal)].write(o.available);
            }
        }

        let signals = Signal::ALL
            .into_iter()
            .filter_map(|signal| Some(self.signal_observation(signal, obs.get(signal)?)))
            .collect();

        let mut eviction_signals = Vec::new();
        let mut reclaim = Vec::new();
        for signal in Signal::ALL {
            let need = self
                .rules
                .iter()
                .zip(&self.states)
                .zip(&met)
                .filter(|((rule, state), _)| rule.signal == signal && state.evicting)
                .filter_map(|(_, m)| *m)
                .map(|m| (m.threshold.saturating_add(m.min_reclaim)).saturating_sub(m.available))
                .max();
            if let Some(need) = need {
                eviction_signals.push(signal);
                reclaim.push((signal, need));
            }
        }

        let mut conditions = Vec::with_capacity(3);
        let mut transitions = Vec::new();
        for (k, kind) in ConditionType::PRESSURE.into_iter().enumerate() {
            let observed_now = self
                .rules
                .iter()
                .zip(&met)
                .any(|(rule, m)| m.is_some() && rule.signal.condition() == kind);
            let cond = &mut self.conditions[k];
            if observed_now {
                cond.last_observed = Some(now);
            }
            // Kubelet keeps a condition while it was last observed within the
            // transition period (nodeConditionsObservedSince). A condition met
            // in this very call is on even with a zero period.
            let within = cond
                .last_observed
                .is_some_and(|at| now.saturating_duration_since(at) < self.transition_period);
            let status = if observed_now || within {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            };
            if cond.status != status {
                cond.status = status;
                cond.last_transition_ms = wall_ms;
                transitions.push((kind, status));
            }
            let cond = *cond;
            conditions.push(Condition {
                kind,
                status,
                reason: kind.reason(status == ConditionStatus::True).to_string(),
                message: self.condition_message(kind, obs, &met, now, cond),
                last_transition_ms: cond.last_transition_ms,
            });
        }

        PressureOutcome {
            conditions,
            signals,
            eviction_signals,
            reclaim,
            transitions,
        }
    }

    fn signal_observation(&self, signal: Signal, o: Observation) -> SignalObservation {
        let resolved = |soft: bool| {
            self.rules
                .iter()
                .find(|r| r.signal == signal && r.soft == soft)
                .map(|r| r.value.resolve(o.capacity))
        };
        let mut state = ThresholdState::Clear;
        for (rule, st) in self.rules.iter().zip(&self.states) {
            if rule.signal != signal {
                continue;
            }
            match st.first_observed {
                Some(_) if st.evicting => {
                    state = ThresholdState::Met;
                    break;
                }
                Some((_, since_ms)) if state == ThresholdState::Clear => {
                    state = ThresholdState::SoftMet {
                        since_ms,
                        grace_secs: rule.grace.as_secs(),
                    };
                }
                _ => {}
            }
        }
        let window_min = self.history[signal_index(signal)]
            .oldest_ordered()
            .copied()
            .min()
            .unwrap_or(o.available);
        SignalObservation {
            signal,
            available: o.available,
            capacity: o.capacity,
            hard_threshold: resolved(false),
            soft_threshold: resolved(true),
            state,
            window_min,
        }
    }

    fn condition_message(
        &self,
        kind: ConditionType,
        obs: &Observations,
        met: &[Option<Met>],
        now: Instant,
        cond: CondState,
    ) -> String {
        let signals = Signal::ALL.into_iter().filter(|s| s.condition() == kind);
        let mut parts = Vec::new();
        for signal in signals.clone() {
            // The most pressing met rule for this signal: evicting ones first,
            // and among those the hard one (hard rules come first).
            let pick = |want_evicting: bool| {
                (0..self.rules.len()).find_map(|i| {
                    let m = met[i]?;
                    (self.rules[i].signal == signal && self.states[i].evicting == want_evicting)
                        .then_some((i, m))
                })
            };
            if let Some((i, m)) = pick(true).or_else(|| pick(false)) {
                parts.push(self.describe_met(i, m, now));
            }
        }
        if !parts.is_empty() {
            return parts.join("; ");
        }

        let values: Vec<String> = signals
            .filter_map(|signal| {
                let o = obs.get(signal)?;
                let level = self
                    .rules
                    .iter()
                    .filter(|r| r.signal == signal)
                    .map(|r| r.value.resolve(o.capacity))
                    .max();
                Some(match level {
                    Some(level) => format!(
                        "{} {} >= {}",
                        signal.name(),
                        amount(signal, o.available),
                        amount(signal, level)
                    ),
                    None => format!(
                        "{} {}, no threshold",
                        signal.name(),
                        amount(signal, o.available)
                    ),
                })
            })
            .collect();
        let mut msg = if values.is_empty() {
            "no signal measured".to_string()
        } else {
            values.join("; ")
        };
        if cond.status == ConditionStatus::True {
            let since = cond
                .last_observed
                .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
            let _ = write!(
                msg,
                "; no threshold met for {}, clears after {} (pressure transition period)",
                go_duration(since),
                go_duration(self.transition_period)
            );
        }
        msg
    }

    fn describe_met(&self, i: usize, m: Met, now: Instant) -> String {
        let rule = &self.rules[i];
        let state = &self.states[i];
        let s = rule.signal;
        let mut out = if m.hysteresis {
            format!(
                "{} {} < {} ({} threshold + {} min-reclaim)",
                s.name(),
                amount(s, m.available),
                amount(s, m.threshold.saturating_add(m.min_reclaim)),
                amount(s, m.threshold),
                amount(s, m.min_reclaim)
            )
        } else {
            format!(
                "{} {} < {}",
                s.name(),
                amount(s, m.available),
                amount(s, m.threshold)
            )
        };
        if rule.soft {
            let elapsed = state
                .first_observed
                .map_or(Duration::ZERO, |(at, _)| now.saturating_duration_since(at));
            if state.evicting {
                let _ = write!(
                    out,
                    " (soft, {} grace period passed)",
                    go_duration(rule.grace)
                );
            } else {
                let _ = write!(
                    out,
                    " (soft, {} of {} grace period)",
                    go_duration(elapsed),
                    go_duration(rule.grace)
                );
            }
        }
        out
    }
}

impl Rule {
    fn met(&self, o: Observation, was_evicting: bool) -> Option<Met> {
        let threshold = self.value.resolve(o.capacity);
        let min_reclaim = self.min_reclaim.map_or(0, |v| v.resolve(o.capacity));
        let m = |hysteresis| Met {
            available: o.available,
            threshold,
            min_reclaim,
            hysteresis,
        };
        if o.available < threshold {
            Some(m(false))
        } else if was_evicting && o.available < threshold.saturating_add(min_reclaim) {
            Some(m(true))
        } else {
            None
        }
    }
}

fn signal_index(signal: Signal) -> usize {
    match signal {
        Signal::MemoryAvailable => 0,
        Signal::NodefsAvailable => 1,
        Signal::NodefsInodesFree => 2,
        Signal::ImagefsAvailable => 3,
        Signal::PidAvailable => 4,
    }
}

/// Format an amount of `signal`: binary units for bytes, plain for counts.
pub fn amount(signal: Signal, v: u64) -> String {
    if signal.is_bytes() {
        format_bytes(v)
    } else {
        v.to_string()
    }
}

fn entries(spec: &str) -> impl Iterator<Item = &str> {
    spec.split(',').map(str::trim).filter(|e| !e.is_empty())
}

fn finish<T>(out: Vec<T>, errors: Vec<String>, what: &str) -> Result<Vec<T>, String> {
    match errors.len() {
        0 => Ok(out),
        1 => Err(format!("invalid eviction {what}: {}", errors[0])),
        n => Err(format!(
            "{n} invalid eviction {what}s: {}",
            errors.join("; ")
        )),
    }
}

fn parse_signal(name: &str) -> Result<Signal, String> {
    if let Some(s) = Signal::from_name(name) {
        return Ok(s);
    }
    let valid: Vec<&str> = Signal::ALL.iter().map(|s| s.name()).collect();
    match Signal::ALL
        .into_iter()
        .find(|s| s.name().eq_ignore_ascii_case(name))
    {
        Some(s) => Err(format!(
            "unknown signal `{name}`; signal names are case-sensitive, did you mean {}?",
            s.name()
        )),
        None => Err(format!(
            "unknown signal `{name}` (valid: {})",
            valid.join(", ")
        )),
    }
}

/// Split `SIGNAL<VALUE`, reporting every problem of the entry together.
/// `Ok((signal, None))` is kubelet's "0%/100% disables this signal".
fn parse_threshold_entry(entry: &str) -> Result<(Signal, Option<ThresholdValue>), String> {
    const OPS: [char; 4] = ['<', '>', '=', '!'];
    let Some(at) = entry.find(OPS) else {
        return Err("expected SIGNAL<VALUE, e.g. memory.available<100Mi".to_string());
    };
    let (name, rest) = entry.split_at(at);
    let op_len = rest.find(|c| !OPS.contains(&c)).unwrap_or(rest.len());
    let (op, value) = rest.split_at(op_len);
    let (name, value) = (name.trim(), value.trim());

    let mut problems = Vec::new();
    let signal = parse_signal(name).map_err(|e| problems.push(e)).ok();
    if op != "<" {
        problems.push(format!(
            "operator `{op}` is not supported; thresholds use `<` (pressure when the signal \
             falls below the value)"
        ));
    }
    let value = parse_threshold_value(value)
        .map_err(|e| problems.push(e))
        .ok();
    match (signal, value) {
        (Some(signal), Some(value)) if problems.is_empty() => Ok((signal, value)),
        _ => Err(problems.join(", ")),
    }
}

fn parse_threshold_value(v: &str) -> Result<Option<ThresholdValue>, String> {
    if v.is_empty() {
        return Err("missing value after `<`".to_string());
    }
    // Kubelet ignores exactly these two spellings, as a way to disable a signal.
    if v == "0%" || v == "100%" {
        return Ok(None);
    }
    if let Some(p) = v.strip_suffix('%') {
        return parse_percentage(p).map(|p| Some(ThresholdValue::Percentage(p)));
    }
    match parse_quantity(v)? {
        0 => Err(format!(
            "threshold `{v}` must be positive (use 0% to disable a signal)"
        )),
        q => Ok(Some(ThresholdValue::Quantity(q))),
    }
}

fn parse_percentage(p: &str) -> Result<f64, String> {
    let p = p.trim();
    // Only plain decimals: no exponents, signs, `inf` or `NaN`.
    let plain = !p.is_empty()
        && p.chars().all(|c| c.is_ascii_digit() || c == '.')
        && p.chars().filter(|&c| c == '.').count() <= 1
        && p != ".";
    let value: f64 = match p.parse() {
        Ok(v) if plain => v,
        _ => {
            return Err(format!(
                "`{p}%` is not a percentage; expected e.g. 10% or 7.5%"
            ))
        }
    };
    if value > 100.0 {
        return Err(format!("`{p}%` is above 100%"));
    }
    Ok(value)
}

fn parse_assignments<T>(
    spec: &str,
    what: &str,
    example: &str,
    parse_value: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<(Signal, T)>, String> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for entry in entries(spec) {
        let Some((name, value)) = entry.split_once('=') else {
            errors.push(format!("`{entry}`: expected SIGNAL=VALUE, e.g. {example}"));
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        let mut problems = Vec::new();
        let signal = parse_signal(name).map_err(|e| problems.push(e)).ok();
        let value = if value.is_empty() {
            problems.push("missing value after `=`".to_string());
            None
        } else {
            parse_value(value).map_err(|e| problems.push(e)).ok()
        };
        match (signal, value) {
            (Some(signal), Some(value)) if problems.is_empty() => {
                if out.iter().any(|(s, _)| *s == signal) {
                    errors.push(format!(
                        "`{entry}`: {} is given more than once",
                        signal.name()
                    ));
                } else {
                    out.push((signal, value));
                }
            }
            _ => errors.push(format!("`{entry}`: {}", problems.join(", "))),
        }
    }
    finish(out, errors, what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConditionStatus::{False, True};
    use Signal::*;

    const KI: u64 = 1 << 10;
    const GI: u64 = 1 << 30;
    const WALL0: u64 = 1_700_000_000_000;

    /// Virtual clock: one real base instant plus offsets in seconds.
    struct Clock(Instant);

    impl Clock {
        fn new() -> Self {
            Clock(Instant::now())
        }
        fn at(&self, secs: u64) -> (Instant, u64) {
            (self.0 + Duration::from_secs(secs), WALL0 + secs * 1000)
        }
    }

    fn mem(available: u64) -> Observations {
        Observations::default().with(MemoryAvailable, available, 4 * GI)
    }

    fn status(out: &PressureOutcome, kind: ConditionType) -> ConditionStatus {
        out.conditions
            .iter()
            .find(|c| c.kind == kind)
            .unwrap()
            .status
    }

    fn state(out: &PressureOutcome, signal: Signal) -> ThresholdState {
        out.signals
            .iter()
            .find(|s| s.signal == signal)
            .unwrap()
            .state
    }

    fn cfg(hard: &str, soft: &str, grace: &str, min_reclaim: &str) -> PressureConfig {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        PressureFlags {
            eviction_hard: Some(hard.to_string()),
            eviction_soft: some(soft),
            eviction_soft_grace_period: some(grace),
            eviction_minimum_reclaim: some(min_reclaim),
            eviction_pressure_transition_period: None,
        }
        .validate()
        .unwrap()
    }

    /// One step of a scenario: at `t` seconds, memory.available is `avail`
    /// MiB (None: unmeasured); then MemoryPressure, eviction and the signal
    /// state are as given.
    struct Step {
        t: u64,
        avail_mi: Option<u64>,
        cond: ConditionStatus,
        evict: bool,
        state: Option<ThresholdState>,
    }

    fn step(t: u64, avail_mi: u64, cond: ConditionStatus, evict: bool) -> Step {
        Step {
            t,
            avail_mi: Some(avail_mi),
            cond,
            evict,
            state: None,
        }
    }

    fn run(name: &str, cfg: PressureConfig, steps: &[Step]) -> Vec<PressureOutcome> {
        let clock = Clock::new();
        let mut tracker = PressureTracker::new(cfg);
        let mut outs = Vec::new();
        for s in steps {
            let obs = match s.avail_mi {
                Some(mi) => mem(mi * MI),
                None => Observations::default(),
            };
            let (now, wall) = clock.at(s.t);
            let out = tracker.observe(&obs, now, wall);
            let ctx = format!("{name} at t={}s: {:#?}", s.t, out.conditions[0]);
            assert_eq!(status(&out, ConditionType::MemoryPressure), s.cond, "{ctx}");
            assert_eq!(
                out.eviction_signals.contains(&MemoryAvailable),
                s.evict,
                "{ctx}"
            );
            if let Some(want) = s.state {
                assert_eq!(state(&out, MemoryAvailable), want, "{ctx}");
            }
            outs.push(out);
        }
        outs
    }

    #[test]
    fn hard_threshold_turns_condition_on_at_once() {
        let clock = Clock::new();
        let mut tracker = PressureTracker::new(PressureConfig::default());
        let (now, wall) = clock.at(0);
        let out = tracker.observe(&mem(80 * MI), now, wall);

        let c = &out.conditions[0];
        assert_eq!(c.kind, ConditionType::MemoryPressure);
        assert_eq!(c.status, True);
        assert_eq!(c.reason, "NodeHasInsufficientMemory");
        assert_eq!(c.message, "memory.available 80Mi < 100Mi");
        assert_eq!(c.last_transition_ms, wall);
        assert_eq!(out.eviction_signals, vec![MemoryAvailable]);
        assert_eq!(out.reclaim, vec![(MemoryAvailable, 20 * MI)]);
        assert_eq!(state(&out, MemoryAvailable), ThresholdState::Met);
        assert_eq!(out.signals.len(), 1, "only memory was measured");
        assert_eq!(out.signals[0].hard_threshold, Some(100 * MI));
        assert_eq!(out.signals[0].soft_threshold, None);
    }

    #[test]
    fn conditions_are_always_three_in_order_and_first_call_sets_them() {
        let clock = Clock::new();
        let mut tracker = PressureTracker::new(PressureConfig::default());
        let (now, wall) = clock.at(0);
        let out = tracker.observe(&mem(GI), now, wall);
        let kinds: Vec<_> = out.conditions.iter().map(|c| c.kind).collect();
        assert_eq!(kinds, ConditionType::PRESSURE.to_vec());
        for c in &out.conditions {
            assert_eq!(c.status, False);
            assert_eq!(c.last_transition_ms, wall, "{c:?}");
        }
        let reasons: Vec<_> = out.conditions.iter().map(|c| c.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "NodeHasSufficientMemory",
                "NodeHasNoDiskPressure",
                "NodeHasSufficientPID"
            ]
        );
        assert_eq!(out.conditions[0].message, "memory.available 1Gi >= 100Mi");
        assert_eq!(out.conditions[1].message, "no signal measured");
        assert_eq!(
            out.transitions,
            vec![
                (ConditionType::MemoryPressure, False),
                (ConditionType::DiskPressure, False),
                (ConditionType::PidPressure, False),
            ]
        );

        let (now, wall2) = clock.at(10);
        let out = tracker.observe(&mem(GI), now, wall2);
        assert!(out.transitions.is_empty());
        assert_eq!(
            out.conditions[0].last_transition_ms, wall,
            "no change, no new time"
        );
    }

    #[test]
    fn soft_threshold_scenarios() {
        let soft = || {
            cfg(
                "memory.available<100Mi",
                "memory.available<200Mi",
                "memory.available=60s",
                "",
            )
        };
        let since = |t: u64| {
            Some(ThresholdState::SoftMet {
                since_ms: WALL0 + t * 1000,
                grace_secs: 60,
            })
        };
        let with_state = |mut s: Step, st| {
            s.state = st;
            s
        };
        let cases: Vec<(&str, Vec<Step>)> = vec![
            (
                "condition at once, eviction only after grace",
                vec![
                    with_state(step(0, 150, True, false), since(0)),
                    with_state(step(30, 150, True, false), since(0)),
                    with_state(step(59, 150, True, false), since(0)),
                    with_state(step(60, 150, True, true), Some(ThresholdState::Met)),
                    with_state(step(70, 150, True, true), Some(ThresholdState::Met)),
                ],
            ),
            (
                "grace restarts when the threshold clears before it passes",
                vec![
                    with_state(step(0, 150, True, false), since(0)),
                    with_state(step(30, 250, True, false), Some(ThresholdState::Clear)),
                    with_state(step(40, 150, True, false), since(40)),
                    step(90, 150, True, false),
                    with_state(step(100, 150, True, true), Some(ThresholdState::Met)),
                ],
            ),
            (
                "an unmeasured round also restarts grace",
                vec![
                    step(0, 150, True, false),
                    Step {
                        t: 50,
                        avail_mi: None,
                        cond: True,
                        evict: false,
                        state: None,
                    },
                    with_state(step(60, 150, True, false), since(60)),
                    step(120, 150, True, true),
                ],
            ),
            (
                "a hard threshold below the soft one evicts at once",
                vec![
                    with_state(step(0, 150, True, false), since(0)),
                    with_state(step(10, 90, True, true), Some(ThresholdState::Met)),
                ],
            ),
        ];
        for (name, steps) in cases {
            run(name, soft(), &steps);
        }
    }

    #[test]
    fn soft_message_names_grace_progress() {
        let clock = Clock::new();
        let mut tracker = PressureTracker::new(cfg(
            "memory.available<100Mi",
            "memory.available<200Mi",
            "memory.available=1m30s",
            "",
        ));
        let (now, wall) = clock.at(0);
        tracker.observe(&mem(150 * MI), now, wall);
        let (now, wall) = clock.at(30);
        let out = tracker.observe(&mem(150 * MI), now, wall);
        assert_eq!(
            out.conditions[0].message,
            "memory.available 150Mi < 200Mi (soft, 30s of 1m30s grace period)"
        );
        assert_eq!(out.signals[0].soft_threshold, Some(200 * MI));
        assert_eq!(out.signals[0].hard_threshold, Some(100 * MI));
        assert!(out.reclaim.is_empty(), "nothing to reclaim before grace");
    }

    #[test]
    fn transition_period_holds_condition_after_recovery() {
        // The period runs from the last call that met a threshold (t=10),
        // as kubelet's nodeConditionsLastObservedAt does.
        let outs = run(
            "transition",
            PressureConfig::default(),
            &[
                step(0, 80, True, true),
                step(10, 80, True, true),
                step(20, 500, True, false),
                step(10 + 299, 500, True, false),
                step(10 + 300, 500, False, false),
                step(400, 500, False, false),
            ],
        );
        assert_eq!(
            outs[0].transitions[0],
            (ConditionType::MemoryPressure, True)
        );
        assert!(outs[1].transitions.is_empty(), "{:?}", outs[1].transitions);
        assert!(outs[2].transitions.is_empty(), "{:?}", outs[2].transitions);
        assert_eq!(
            outs[3].conditions[0].message,
            "memory.available 500Mi >= 100Mi; no threshold met for 4m59s, clears after 5m0s \
             (pressure transition period)"
        );
        assert_eq!(outs[3].conditions[0].reason, "NodeHasInsufficientMemory");
        assert_eq!(
            outs[3].conditions[0].last_transition_ms, WALL0,
            "held since t=0"
        );
        assert_eq!(
            outs[4].transitions,
            vec![(ConditionType::MemoryPressure, False)]
        );
        assert_eq!(outs[4].conditions[0].last_transition_ms, WALL0 + 310 * 1000);
        assert_eq!(outs[4].conditions[0].reason, "NodeHasSufficientMemory");
        assert!(outs[5].transitions.is_empty());
    }

    #[test]
    fn pressure_within_transition_period_restarts_it() {
        run(
            "re-pressure",
            PressureConfig::default(),
            &[
                step(0, 80, True, true),
                step(100, 500, True, false),
                step(200, 80, True, true),
                step(210, 500, True, false),
                // 300s after t=0 but only 100s after the last pressure.
                step(300, 500, True, false),
                step(499, 500, True, false),
                step(500, 500, False, false),
            ],
        );
    }

    #[test]
    fn custom_transition_period() {
        let c = PressureConfig {
            transition_period: Duration::from_secs(30),
            ..PressureConfig::default()
        };
        run(
            "30s",
            c,
            &[
                step(0, 80, True, true),
                step(29, 500, True, false),
                step(30, 500, False, false),
            ],
        );
        let c = PressureConfig {
            transition_period: Duration::ZERO,
            ..PressureConfig::default()
        };
        run(
            "zero period: on while met, off at once",
            c,
            &[step(0, 80, True, true), step(10, 500, False, false)],
        );
    }

    #[test]
    fn min_reclaim_hysteresis() {
        let c = || cfg("memory.available<100Mi", "", "", "memory.available=50Mi");
        let outs = run(
            "hard with min-reclaim",
            c(),
            &[
                // Not yet met: hysteresis only applies after a threshold drove eviction.
                step(0, 120, False, false),
                step(10, 80, True, true),
                // Above the threshold but below threshold + min-reclaim: still met.
                step(20, 120, True, true),
                step(30, 149, True, true),
                // Recovered by min-reclaim.
                step(40, 150, True, false),
                // Back between threshold and threshold + min-reclaim: not met again.
                step(50, 120, True, false),
            ],
        );
        assert_eq!(outs[1].reclaim, vec![(MemoryAvailable, 70 * MI)]);
        assert_eq!(outs[2].reclaim, vec![(MemoryAvailable, 30 * MI)]);
        assert_eq!(
            outs[2].conditions[0].message,
            "memory.available 120Mi < 150Mi (100Mi threshold + 50Mi min-reclaim)"
        );
        assert!(outs[4].reclaim.is_empty());
    }

    #[test]
    fn min_reclaim_does_not_hold_soft_threshold_within_grace() {
        // Kubelet only carries thresholds that drove eviction (m.thresholdsMet
        // is set after the grace filter), so a soft threshold still in grace
        // clears as soon as the signal is back above it.
        run(
            "soft in grace",
            cfg(
                "memory.available<50Mi",
                "memory.available<200Mi",
                "memory.available=60s",
                "memory.available=100Mi",
            ),
            &[
                step(0, 150, True, false),
                step(10, 250, True, false),
                Step {
                    state: Some(ThresholdState::Clear),
                    ..step(20, 250, True, false)
                },
                step(30, 150, True, false),
                step(90, 150, True, true),
                // Past grace it drove eviction, so min-reclaim now holds it.
                step(100, 250, True, true),
                step(110, 300, True, false),
            ],
        );
    }

    #[test]
    fn percentage_resolution() {
        let cases: &[(ThresholdValue, u64, u64)] = &[
            (ThresholdValue::Percentage(10.0), 1000, 100),
            (ThresholdValue::Percentage(12.5), 800, 100),
            (ThresholdValue::Percentage(5.0), 1_000_000, 50_000),
            (ThresholdValue::Percentage(15.0), 100 * GI, 15 * GI),
            // Truncated like kubelet's int64(...) conversion.
            (ThresholdValue::Percentage(10.0), 999, 99),
            (ThresholdValue::Percentage(0.0), 1000, 0),
            (ThresholdValue::Percentage(100.0), 1000, 1000),
            (ThresholdValue::Percentage(250.0), 1000, 1000),
            (ThresholdValue::Percentage(f64::NAN), 1000, 0),
            (ThresholdValue::Percentage(10.0), 0, 0),
            (ThresholdValue::Percentage(100.0), u64::MAX, u64::MAX),
            (ThresholdValue::Quantity(100), 10, 100),
        ];
        for (value, capacity, want) in cases {
            assert_eq!(value.resolve(*capacity), *want, "{value:?} of {capacity}");
        }
    }

    #[test]
    fn percentage_thresholds_track_capacity_and_all_disk_signals_drive_disk_pressure() {
        let clock = Clock::new();
        // (signal, available, capacity, pressure?) against the defaults:
        // nodefs 10%, inodes 5%, imagefs 15%, pid 10%.
        let cases = [
            (NodefsAvailable, 99, 1000, true),
            (NodefsAvailable, 100, 1000, false),
            (NodefsInodesFree, 4_999, 100_000, true),
            (NodefsInodesFree, 5_000, 100_000, false),
            (ImagefsAvailable, 149, 1000, true),
            (ImagefsAvailable, 150, 1000, false),
            // 10% of 32768 is 3276.8, truncated to 3276.
            (PidAvailable, 3_275, 32_768, true),
            (PidAvailable, 3_276, 32_768, false),
        ];
        for (signal, available, capacity, pressure) in cases {
            let mut tracker = PressureTracker::new(PressureConfig::default());
            let obs = Observations::default().with(signal, available, capacity);
            let (now, wall) = clock.at(0);
            let out = tracker.observe(&obs, now, wall);
            let want = if pressure { True } else { False };
            assert_eq!(
                status(&out, signal.condition()),
                want,
                "{signal:?} {available}/{capacity}"
            );
            assert_eq!(out.eviction_signals.contains(&signal), pressure);
            for other in ConditionType::PRESSURE {
                if other != signal.condition() {
                    assert_eq!(
                        status(&out, other),
                        False,
                        "{signal:?} leaks into {other:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn pid_and_disk_messages() {
        let clock = Clock::new();
        let mut tracker = PressureTracker::new(PressureConfig::default());
        let obs = Observations::default()
            .with(PidAvailable, 1000, 32_768)
            .with(NodefsAvailable, 5 * GI, 100 * GI)
            .with(ImagefsAvailable, 5 * GI, 100 * GI);
        let (now, wall) = clock.at(0);
        let out = tracker.observe(&obs, now, wall);
        assert_eq!(out.conditions[1].reason, "NodeHasDiskPressure");
        assert_eq!(
            out.conditions[1].message,
            "nodefs.available 5Gi < 10Gi; imagefs.available 5Gi < 15Gi"
        );
        assert_eq!(out.conditions[2].reason, "NodeHasInsufficientPID");
        assert_eq!(out.conditions[2].message, "pid.available 1000 < 3276");
        assert_eq!(
            out.eviction_signals,
            vec![NodefsAvailable, ImagefsAvailable, PidAvailable]
        );
        assert_eq!(
            out.reclaim,
            vec![
                (NodefsAvailable, 5 * GI),
                (ImagefsAvailable, 10 * GI),
                (PidAvailable, 2276)
            ]
        );
    }

    #[test]
    fn unmeasured_signal_is_ignored() {
        let clock = Clock::new();
        let mut tracker = PressureTracker::new(PressureConfig::default());
        // No imagefs and no inode counts; nodefs is fine.
        let obs = Observations::default()
            .with(MemoryAvailable, GI, 4 * GI)
            .with(NodefsAvailable, 50 * GI, 100 * GI);
        let (now, wall) = clock.at(0);
        let out = tracker.observe(&obs, now, wall);
        let measured: Vec<_> = out.signals.iter().map(|s| s.signal).collect();
        assert_eq!(measured, vec![MemoryAvailable, NodefsAvailable]);
        assert_eq!(status(&out, ConditionType::DiskPressure), False);
        assert_eq!(out.conditions[1].message, "nodefs.available 50Gi >= 10Gi");
        assert!(out.eviction_signals.is_empty());
    }

    #[test]
    fn window_min_covers_recent_samples_only() {
        let clock = Clock::new();
        let mut tracker = PressureTracker::new(PressureConfig::default());
        let (now, wall) = clock.at(0);
        let out = tracker.observe(&mem(GI), now, wall);
        assert_eq!(out.signals[0].window_min, GI);
        let (now, wall) = clock.at(10);
        tracker.observe(&mem(300 * MI), now, wall);
        for i in 0..HISTORY_LEN - 1 {
            let (now, wall) = clock.at(20 + 10 * i as u64);
            let out = tracker.observe(&mem(2 * GI), now, wall);
            assert_eq!(out.signals[0].window_min, 300 * MI, "sample {i}");
        }
        let (now, wall) = clock.at(1000);
        let out = tracker.observe(&mem(2 * GI), now, wall);
        assert_eq!(
            out.signals[0].window_min,
            2 * GI,
            "the 300Mi sample aged out"
        );
    }

    #[test]
    fn parse_thresholds_accepts() {
        use ThresholdValue::*;
        let cases: &[(&str, &[(Signal, ThresholdValue)])] = &[
            ("", &[]),
            (
                "memory.available<100Mi",
                &[(MemoryAvailable, Quantity(100 * MI))],
            ),
            (
                " memory.available < 1.5Gi , nodefs.available<10%,",
                &[
                    (MemoryAvailable, Quantity(3 * GI / 2)),
                    (NodefsAvailable, Percentage(10.0)),
                ],
            ),
            (
                "nodefs.inodesFree<7.5%",
                &[(NodefsInodesFree, Percentage(7.5))],
            ),
            ("pid.available<1k", &[(PidAvailable, Quantity(1000))]),
            ("pid.available<4096", &[(PidAvailable, Quantity(4096))]),
            (
                "imagefs.available<2G",
                &[(ImagefsAvailable, Quantity(2_000_000_000))],
            ),
            (
                "imagefs.available<1Ti",
                &[(ImagefsAvailable, Quantity(1 << 40))],
            ),
            (
                "memory.available<512Ki",
                &[(MemoryAvailable, Quantity(512 * KI))],
            ),
            // Kubelet: 0% and 100% disable the signal.
            ("imagefs.available<0%,pid.available<100%", &[]),
        ];
        for (spec, want) in cases {
            let got = parse_thresholds(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
            let got: Vec<_> = got.iter().map(|t| (t.signal, t.value)).collect();
            assert_eq!(got, want.to_vec(), "{spec}");
        }
    }

    #[test]
    fn parse_thresholds_rejects() {
        let cases: &[(&str, &str)] = &[
            ("memory.availble<100Mi", "unknown signal `memory.availble` (valid: memory.available, nodefs.available, nodefs.inodesFree, imagefs.available, pid.available)"),
            ("nodefs.inodesfree<5%", "did you mean nodefs.inodesFree?"),
            ("memory.available>100Mi", "operator `>` is not supported"),
            ("memory.available<=100Mi", "operator `<=` is not supported"),
            ("memory.available=100Mi", "operator `=` is not supported"),
            ("memory.available", "expected SIGNAL<VALUE"),
            ("memory.available<", "missing value"),
            ("memory.available<100MB", "not a Kubernetes unit"),
            ("memory.available<100m", "did you mean M or Mi?"),
            ("memory.available<100Xi", "unknown unit `Xi`"),
            ("memory.available<-1Gi", "negative"),
            ("memory.available<0", "must be positive"),
            ("memory.available<0Mi", "must be positive"),
            ("nodefs.available<101%", "above 100%"),
            ("nodefs.available<-5%", "not a percentage"),
            ("nodefs.available<1e1%", "not a percentage"),
            ("nodefs.available<%", "not a percentage"),
            ("memory.available<99999999999Ei", "too large"),
            ("memory.available<1Gi,memory.available<2Gi", "memory.available is given more than once"),
        ];
        for (spec, want) in cases {
            let err = parse_thresholds(spec).expect_err(spec);
            assert!(err.contains(want), "{spec}: {err}");
        }
    }

    #[test]
    fn parse_errors_are_all_reported_at_once() {
        let err = parse_thresholds(
            "memory.availble<100Mi,nodefs.available>10%,pid.available<1k,imagefs.available<200%",
        )
        .unwrap_err();
        assert!(err.starts_with("3 invalid eviction thresholds: "), "{err}");
        for part in [
            "memory.availble",
            "`nodefs.available>10%`",
            "`imagefs.available<200%`",
        ] {
            assert!(err.contains(part), "missing {part}: {err}");
        }
        assert!(!err.contains("pid.available<1k"), "{err}");

        // Both problems of one entry are named too.
        let err = parse_thresholds("foo>1Xi").unwrap_err();
        for part in ["unknown signal `foo`", "operator `>`", "unknown unit `Xi`"] {
            assert!(err.contains(part), "missing {part}: {err}");
        }

        // And across flags.
        let err = PressureFlags {
            eviction_hard: Some("memory.available>1Gi".into()),
            eviction_soft: Some("memory.available<2Gi,nodefs.available<20%".into()),
            eviction_soft_grace_period: Some("memory.available=1m".into()),
            eviction_minimum_reclaim: Some("pid.available=0%".into()),
            eviction_pressure_transition_period: Some("5 minutes".into()),
        }
        .validate()
        .unwrap_err();
        for part in [
            "--eviction-hard: ",
            "--eviction-soft: soft threshold(s) without a grace period: nodefs.available",
            "--eviction-minimum-reclaim: ",
            "--eviction-pressure-transition-period: ",
        ] {
            assert!(err.contains(part), "missing {part}: {err}");
        }
        assert_eq!(err.lines().count(), 4, "{err}");
    }

    #[test]
    fn parse_grace_periods_and_min_reclaim() {
        assert_eq!(
            parse_grace_periods("memory.available=1m30s, nodefs.available=2h").unwrap(),
            vec![
                (MemoryAvailable, Duration::from_secs(90)),
                (NodefsAvailable, Duration::from_secs(7200))
            ]
        );
        let rejects: &[(&str, &str)] = &[
            ("memory.available<1m", "expected SIGNAL=VALUE"),
            ("memory.available=", "missing value"),
            ("memory.available=90", "lacks a unit"),
            ("memory.available=-1s", "negative"),
            (
                "memory.available=1m,memory.available=2m",
                "given more than once",
            ),
            ("mem=1m", "unknown signal `mem`"),
        ];
        for (spec, want) in rejects {
            let err = parse_grace_periods(spec).expect_err(spec);
            assert!(err.contains(want), "{spec}: {err}");
        }

        let got =
            parse_min_reclaim("memory.available=0Mi,nodefs.available=500Mi,imagefs.available=2%")
                .unwrap();
        assert_eq!(
            got,
            vec![
                Threshold {
                    signal: MemoryAvailable,
                    value: ThresholdValue::Quantity(0)
                },
                Threshold {
                    signal: NodefsAvailable,
                    value: ThresholdValue::Quantity(500 * MI)
                },
                Threshold {
                    signal: ImagefsAvailable,
                    value: ThresholdValue::Percentage(2.0)
                },
            ]
        );
        let rejects: &[(&str, &str)] = &[
            ("nodefs.available=0%", "above 0%"),
            ("nodefs.available=-1Mi", "negative"),
            ("nodefs.available=150%", "above 100%"),
            ("nodefs.available<1Gi", "expected SIGNAL=VALUE"),
        ];
        for (spec, want) in rejects {
            let err = parse_min_reclaim(spec).expect_err(spec);
            assert!(err.contains(want), "{spec}: {err}");
        }
    }

    #[test]
    fn build_soft_requires_a_grace_for_every_soft_threshold() {
        let soft = parse_thresholds("memory.available<1Gi,nodefs.available<15%,pid.available<20%")
            .unwrap();
        let graces = parse_grace_periods("memory.available=1m,imagefs.available=5m").unwrap();
        let err = build_soft(soft.clone(), &graces).unwrap_err();
        assert!(err.contains("nodefs.available, pid.available"), "{err}");
        assert!(!err.contains("memory.available,"), "{err}");

        let graces =
            parse_grace_periods("memory.available=1m,nodefs.available=2m,pid.available=3m")
                .unwrap();
        let built = build_soft(soft, &graces).unwrap();
        let got: Vec<_> = built
            .iter()
            .map(|s| (s.threshold.signal, s.grace.as_secs()))
            .collect();
        assert_eq!(
            got,
            vec![
                (MemoryAvailable, 60),
                (NodefsAvailable, 120),
                (PidAvailable, 180)
            ]
        );
    }

    #[test]
    fn amount_formats_bytes_and_counts() {
        let cases: &[(Signal, u64, &str)] = &[
            (MemoryAvailable, 100 * MI, "100Mi"),
            (MemoryAvailable, 512, "512"),
            (NodefsAvailable, 1 << 40, "1Ti"),
            (ImagefsAvailable, 3 * GI / 2, "1.5Gi"),
            (PidAvailable, 32_768, "32768"),
            (NodefsInodesFree, 5 * MI, "5242880"),
        ];
        for (signal, v, want) in cases {
            assert_eq!(amount(*signal, *v), *want, "{signal:?} {v}");
        }
    }

    #[test]
    fn default_config_matches_design() {
        let c = PressureConfig::default();
        let want = parse_thresholds(
            "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,\
             imagefs.available<15%,pid.available<10%",
        )
        .unwrap();
        assert_eq!(c.hard, want);
        assert!(c.soft.is_empty() && c.min_reclaim.is_empty());
        assert_eq!(c.transition_period, Duration::from_secs(300));
        assert_eq!(PressureFlags::default().validate().unwrap(), c);
    }
}
