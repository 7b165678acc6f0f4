//! The agent's clock: the system clock, never read below a floor learnt
//! from the controller.
//!
//! Boxes without a battery-backed clock boot in the past (1970, or the
//! image's build date) and keep that time until NTP, which may need the
//! very link the agent cannot bring up. The agent records the
//! controller's time from each successful session in its data directory
//! (`clock-floor`) and reads "now" as the later of the system clock and
//! that floor, moved on by the monotonic time elapsed since it was learnt.
//! That "now" is what certificate validity is judged at (so a box back in
//! 1970 cannot be shown a controller certificate that expired before its
//! last contact) and what the timestamps the agent reports are taken from.
//!
//! The floor only keeps the clock from going back: it is a time the
//! controller's clock has already passed, moved on by no more than the
//! time that has passed here since, so it never puts the clock ahead of the
//! controller's. Trust still rests on the CA the agent pinned; the floor
//! decides nothing about who is trusted.
//!
//! [`Floor`] is the rule, without I/O; [`AgentClock`] reads the system and
//! monotonic clocks and keeps the file, written at most once per
//! [`FLOOR_WRITE_INTERVAL`].

use outpost_proto::files::{read_bounded, write_private, BoundedReadError};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::warn;

/// The floor's file in the data directory: one line, milliseconds since
/// the Unix epoch.
pub const FLOOR_FILE: &str = "clock-floor";
/// The file is a number; anything larger is not ours.
const MAX_FLOOR_FILE: u64 = 64;
/// Latest floor believed: the end of the year 9999.
pub const MAX_FLOOR_MS: u64 = 253_402_300_799_999;
/// Least time between two writes of the floor file.
pub const FLOOR_WRITE_INTERVAL: Duration = Duration::from_secs(3600);

/// Lowest the wall clock may read: `base_ms` as of the monotonic time
/// `at_ms`, moving on with monotonic time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Floor {
    base_ms: u64,
    at_ms: u64,
}

impl Floor {
    /// The floor `stored_ms` (read from the file; 0 for none) as of the
    /// monotonic time `mono_ms`.
    pub fn new(stored_ms: u64, mono_ms: u64) -> Floor {
        Floor {
            base_ms: stored_ms,
            at_ms: mono_ms,
        }
    }

    /// The floor at monotonic time `mono_ms` (not before the one it was
    /// last moved at: a monotonic time from before counts as that one).
    pub fn at(&self, mono_ms: u64) -> u64 {
        self.base_ms
            .saturating_add(mono_ms.saturating_sub(self.at_ms))
    }

    /// The controller's clock read `controller_ms` at monotonic time
    /// `mono_ms`: the floor rises to it, and never falls (a controller
    /// time below the floor, say after its clock was set back, is ignored).
    pub fn observe(&mut self, controller_ms: u64, mono_ms: u64) {
        let controller_ms = controller_ms.min(MAX_FLOOR_MS);
        if controller_ms > self.at(mono_ms) {
            *self = Floor::new(controller_ms, mono_ms.max(self.at_ms));
        }
    }

    /// "Now": the later of the system clock and the floor.
    pub fn now(&self, system_ms: u64, mono_ms: u64) -> u64 {
        system_ms.max(self.at(mono_ms))
    }
}

/// Reads the floor file's text: one number of milliseconds, at most
/// [`MAX_FLOOR_MS`] and, when the node has a certificate, not past its
/// expiry (`not_after_ms`): a session, which writes the floor, needs a
/// certificate that is still valid, so a later floor is not one this
/// agent wrote, and believing it could lock the box out (every
/// certificate would look expired).
pub fn parse_floor(text: &str, not_after_ms: Option<u64>) -> Result<u64, String> {
    let t = text.trim();
    if t.is_empty() || t.len() > 20 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "expected one number of milliseconds, found {:?}",
            t.chars().take(32).collect::<String>()
        ));
    }
    let ms: u64 = t
        .parse()
        .map_err(|e| format!("{t} is not a number of milliseconds: {e}"))?;
    if ms > MAX_FLOOR_MS {
        return Err(format!("{ms} ms is past the year 9999"));
    }
    if let Some(na) = not_after_ms.filter(|&na| ms > na) {
        return Err(format!(
            "{} is after the node certificate's expiry ({})",
            outpost_proto::units::rfc3339(ms),
            outpost_proto::units::rfc3339(na)
        ));
    }
    Ok(ms)
}

/// Whether the floor `floor_ms` is worth writing at monotonic time
/// `mono_ms`, given the last write of this process (floor written,
/// monotonic time of the write): only once the controller's time was
/// learnt (`learnt`); then at once the first time, and after that when
/// the floor moved and never twice within `interval`.
pub fn write_due(
    learnt: bool,
    last: Option<(u64, u64)>,
    floor_ms: u64,
    mono_ms: u64,
    interval: Duration,
) -> bool {
    let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
    learnt
        && match last {
            None => true,
            Some((written, at)) => floor_ms > written && mono_ms.saturating_sub(at) >= interval_ms,
        }
}

#[derive(Debug)]
struct State {
    floor: Floor,
    /// The last floor written, and when (monotonic).
    written: Option<(u64, u64)>,
    /// A controller's time was learnt in this process.
    learnt: bool,
}

/// The agent's clock (see the module's documentation), shared by the
/// session, housekeeping and the TLS verifier.
#[derive(Debug)]
pub struct AgentClock {
    origin: Instant,
    state: Mutex<State>,
    path: Option<PathBuf>,
}

impl AgentClock {
    /// The clock of data directory `dir`: its floor file read, bounded and
    /// validated (against the node certificate's expiry, if it has one);
    /// a file that is not a valid floor is ignored with a warning and
    /// rewritten after the next session starts.
    pub fn load(dir: &Path, not_after_ms: Option<u64>) -> AgentClock {
        let path = dir.join(FLOOR_FILE);
        let stored = match read_bounded(&path, MAX_FLOOR_FILE) {
            Ok(text) => parse_floor(&text, not_after_ms).map_err(|e| e.to_string()),
            Err(e) if e.is_not_found() => Ok(0),
            Err(BoundedReadError::TooLarge { len, max }) => {
                Err(format!("{len} bytes, at most {max}"))
            }
            Err(BoundedReadError::Io(e)) => Err(e.to_string()),
        };
        let stored_ms = stored.unwrap_or_else(|e| {
            warn!(
                "ignoring the clock floor {}: {e}; the system clock is used until the controller is reached, and the file is rewritten then",
                path.display()
            );
            0
        });
        AgentClock {
            origin: Instant::now(),
            state: Mutex::new(State {
                floor: Floor::new(stored_ms, 0),
                written: None,
                learnt: false,
            }),
            path: Some(path),
        }
    }

    /// A clock with no file (tests, tools).
    pub fn in_memory() -> AgentClock {
        AgentClock {
            origin: Instant::now(),
            state: Mutex::new(State {
                floor: Floor::new(0, 0),
                written: None,
                learnt: false,
            }),
            path: None,
        }
    }

    fn mono_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Now (ms since the epoch): the system clock, or the floor if that
    /// is later.
    pub fn now_ms(&self) -> u64 {
        let mono = self.mono_ms();
        self.state().floor.now(outpost_proto::clock::now_ms(), mono)
    }

    /// The floor now: the lowest the clock reads.
    pub fn floor_ms(&self) -> u64 {
        let mono = self.mono_ms();
        self.state().floor.at(mono)
    }

    /// A session's welcome said the controller's time.
    pub fn observe_controller(&self, controller_ms: u64) {
        let mono = self.mono_ms();
        let mut s = self.state();
        s.floor.observe(controller_ms, mono);
        s.learnt = true;
    }

    /// Writes the floor file if it is due ([`write_due`]); a failure is
    /// logged (the floor is a help, not a need) and retried at the next
    /// interval.
    pub fn save_if_due(&self) {
        let Some(path) = &self.path else { return };
        let mono = self.mono_ms();
        let floor = {
            let mut s = self.state();
            let floor = s.floor.at(mono);
            if !write_due(s.learnt, s.written, floor, mono, FLOOR_WRITE_INTERVAL) {
                return;
            }
            // Counted as written even if the write fails: the rate bound
            // holds for failures too.
            s.written = Some((floor, mono));
            floor
        };
        if let Err(e) = write_private(path, format!("{floor}\n").as_bytes()) {
            warn!(
                "could not record the clock floor in {}: {e}",
                path.display()
            );
        }
    }
}

impl rustls::time_provider::TimeProvider for AgentClock {
    fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
        Some(rustls::pki_types::UnixTime::since_unix_epoch(
            Duration::from_millis(self.now_ms()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: u64 = 86_400_000;
    /// Some day in 2026.
    const T: u64 = 1_780_000_000_000;

    #[test]
    fn a_box_back_in_1970_reads_the_floor() {
        // Last contact said T; the box rebooted into 1970.
        let mut f = Floor::new(T, 0);
        assert_eq!(f.now(0, 0), T);
        // An hour on (monotonic), still 1970 by the system: T + 1 h.
        assert_eq!(f.now(3_600_000, 3_600_000), T + 3_600_000);
        // NTP comes up: the system clock wins once it is later.
        assert_eq!(f.now(T + 2 * DAY, 3_600_000), T + 2 * DAY);
        // The controller's welcome moves the floor on.
        f.observe(T + DAY, 3_600_000);
        assert_eq!(f.now(0, 3_600_000), T + DAY);
        assert_eq!(f.now(0, 3_700_000), T + DAY + 100_000);
    }

    #[test]
    fn the_floor_never_falls_and_never_leads_the_controller() {
        let mut f = Floor::new(T, 0);
        // A controller whose clock reads earlier (set back): ignored.
        f.observe(T - DAY, 1_000);
        assert_eq!(f.at(1_000), T + 1_000);
        // No file: the system clock as it is.
        let none = Floor::new(0, 0);
        assert_eq!(none.now(42, 0), 42);
        // A box ahead keeps its own clock: the floor never moves it back,
        // nor forward.
        let mut ahead = Floor::new(0, 0);
        ahead.observe(T, 0);
        assert_eq!(ahead.now(T + 400 * DAY, 0), T + 400 * DAY);
        // Extremes neither overflow nor go past the year 9999.
        let mut wild = Floor::new(u64::MAX, 0);
        assert_eq!(wild.at(u64::MAX), u64::MAX);
        wild = Floor::new(0, 0);
        wild.observe(u64::MAX, 5);
        assert_eq!(wild.at(5), MAX_FLOOR_MS);
        // A monotonic time before the last move counts as that move.
        assert_eq!(wild.at(0), MAX_FLOOR_MS);
    }

    #[test]
    fn a_floor_file_is_bounded_and_validated() {
        assert_eq!(parse_floor(&format!("{T}\n"), None), Ok(T));
        assert_eq!(parse_floor(&format!(" {T} "), Some(T)), Ok(T));
        for bad in ["", "\n", "-5", "12a", "1.5", "0x10", &"9".repeat(21)] {
            assert!(parse_floor(bad, None).is_err(), "{bad:?}");
        }
        let e = parse_floor(&(MAX_FLOOR_MS + 1).to_string(), None).unwrap_err();
        assert!(e.contains("9999"), "{e}");
        let e = parse_floor(&(T + 1).to_string(), Some(T)).unwrap_err();
        assert!(e.contains("after the node certificate's expiry"), "{e}");
        let e = parse_floor("18446744073709551616", None).unwrap_err();
        assert!(e.contains("not a number"), "{e}");
    }

    #[test]
    fn a_damaged_or_oversized_file_is_ignored_and_a_good_one_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FLOOR_FILE);
        assert_eq!(AgentClock::load(dir.path(), None).floor_ms(), 0, "no file");
        std::fs::write(&path, "x".repeat(10_000)).unwrap();
        assert_eq!(
            AgentClock::load(dir.path(), None).floor_ms(),
            0,
            "oversized"
        );
        std::fs::write(&path, "garbage\n").unwrap();
        assert_eq!(AgentClock::load(dir.path(), None).floor_ms(), 0, "damaged");
        std::fs::write(&path, format!("{T}\n")).unwrap();
        let c = AgentClock::load(dir.path(), Some(T + DAY));
        assert!(c.floor_ms() >= T);
        assert!(c.now_ms() >= T);
        // Past the node certificate's expiry: not believed.
        assert_eq!(AgentClock::load(dir.path(), Some(T - 1)).floor_ms(), 0);
    }

    #[test]
    fn the_file_is_written_when_the_floor_moved_and_at_a_bounded_rate() {
        let hour = FLOOR_WRITE_INTERVAL;
        let h = u64::try_from(hour.as_millis()).unwrap();
        assert!(write_due(true, None, T, 0, hour));
        assert!(!write_due(false, None, T, 0, hour), "nothing learnt yet");
        assert!(
            !write_due(true, Some((T, 0)), T + 10, 10, hour),
            "within the interval"
        );
        assert!(write_due(true, Some((T, 0)), T + h, h, hour));
        assert!(!write_due(true, Some((T, 0)), T, h, hour), "did not move");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FLOOR_FILE);
        let c = AgentClock::load(dir.path(), None);
        c.save_if_due();
        assert!(!path.exists(), "nothing learnt, nothing written");
        c.observe_controller(T);
        c.save_if_due();
        let first = std::fs::read_to_string(&path).unwrap();
        assert!(parse_floor(&first, None).unwrap() >= T);
        // A reconnect storm: many welcomes, one write per interval.
        for i in 1..100 {
            c.observe_controller(T + i * 1_000);
            c.save_if_due();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
        // A restart reads it back, and does not write it again unmoved.
        let again = AgentClock::load(dir.path(), None);
        assert!(again.floor_ms() >= T);
        std::fs::remove_file(&path).unwrap();
        again.save_if_due();
        assert!(!path.exists(), "no controller reached since the start");
        // The TLS verifier reads the same clock.
        use rustls::time_provider::TimeProvider;
        let at = again.current_time().unwrap().as_secs();
        assert!(at >= T / 1000, "{at}");
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// Monotonic time passes.
        Wait(u64),
        /// A welcome says the controller's time.
        Welcome(u64),
        /// The system clock is read (any value: NTP steps, 1970, ahead).
        Read(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u64..10 * DAY).prop_map(Step::Wait),
            (0u64..2 * T).prop_map(Step::Welcome),
            prop_oneof![Just(0u64), 0u64..2 * T].prop_map(Step::Read),
        ]
    }

    proptest! {
        /// Whatever the system clock and the controller say: the floor
        /// never decreases, "now" is never below it nor the system clock,
        /// and never above the later of the system clock and the latest
        /// of (a controller time, or the stored floor) plus the monotonic
        /// time elapsed since it was learnt.
        #[test]
        fn never_decreases_and_never_leads(stored in prop_oneof![Just(0u64), 0u64..2 * T],
                                           steps in prop::collection::vec(step(), 1..60)) {
            let mut f = Floor::new(stored, 0);
            let mut mono = 0u64;
            let mut learnt: Vec<(u64, u64)> = vec![(stored, 0)];
            let mut last_floor = f.at(0);
            for s in steps {
                match s {
                    Step::Wait(d) => mono += d,
                    Step::Welcome(c) => {
                        f.observe(c, mono);
                        learnt.push((c, mono));
                    }
                    Step::Read(system) => {
                        let now = f.now(system, mono);
                        let bound = learnt.iter().map(|&(c, at)| c + (mono - at)).max().unwrap();
                        prop_assert!(now >= system);
                        prop_assert!(now >= f.at(mono));
                        prop_assert!(now <= system.max(bound), "{now} > max({system}, {bound})");
                        prop_assert_eq!(f.at(mono), bound, "the floor is the latest learnt time, moved on");
                    }
                }
                let floor = f.at(mono);
                prop_assert!(floor >= last_floor, "floor fell from {last_floor} to {floor}");
                last_floor = floor;
            }
        }
    }
}
