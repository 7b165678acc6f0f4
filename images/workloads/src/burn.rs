//! `outpost-burn`: keeps CPUs busy, for CPU usage, `top` and limit tests.
//!
//! Each of `--threads` threads works in [`PERIOD`] slices: busy for `--duty`
//! percent of the slice, asleep for the rest, so `--threads 2 --duty 50`
//! uses about one CPU. It stops after `--seconds`, or never with 0.

use std::thread;
use std::time::{Duration, Instant};

use crate::cli::{self, Flag, Flags, Parsed, UsageError};

pub const USAGE: &str = "\
outpost-burn: keeps CPUs busy (test workload)

Usage: outpost-burn [--threads N] [--seconds S] [--duty PERCENT]

Options:
  --threads N       busy threads (default 1)
  --seconds S       stop after S seconds; 0 runs until killed (default 0)
  --duty PERCENT    share of each 100 ms slice spent busy, 0-100 (default 100)
  -h, --help        this text
";

/// Length of one busy-then-sleep slice. Short enough that a 100 ms CPU
/// accounting window (the CFS quota period) sees the chosen duty cycle.
pub const PERIOD: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub threads: usize,
    /// 0: until killed.
    pub seconds: u64,
    /// Percent of each slice spent busy, 0-100.
    pub duty: u32,
}

pub fn parse(args: Vec<String>) -> Result<Parsed<Config>, UsageError> {
    let mut threads = 1;
    let mut seconds = 0;
    let mut duty = 100;
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.next_flag()? {
        let Flag::Named { name, inline } = flag else {
            return Ok(Parsed::Help);
        };
        match name.as_str() {
            "threads" => threads = flags.number(&name, inline, 1, 1024)?,
            "seconds" => seconds = flags.number(&name, inline, 0, 365 * 24 * 3600)?,
            "duty" => duty = flags.number(&name, inline, 0, 100)?,
            _ => return Err(cli::unknown(&name)),
        }
    }
    Ok(Parsed::Run(Config {
        threads: usize::try_from(threads).unwrap_or(1),
        seconds,
        duty: u32::try_from(duty).unwrap_or(100),
    }))
}

/// Busy part of one slice at `duty` percent.
pub fn busy_time(duty: u32) -> Duration {
    PERIOD * duty.min(100) / 100
}

/// One burning thread, until `deadline` (or forever).
fn burn(duty: u32, deadline: Option<Instant>) {
    let busy = busy_time(duty);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    loop {
        let start = Instant::now();
        if deadline.is_some_and(|d| start >= d) {
            return;
        }
        while start.elapsed() < busy {
            // A little integer work between clock reads; black_box keeps it.
            for _ in 0..1000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
            }
            std::hint::black_box(x);
        }
        thread::sleep(PERIOD.saturating_sub(start.elapsed()));
    }
}

/// Runs the burners; returns when `--seconds` have passed.
pub fn run(config: &Config) -> Result<(), String> {
    let deadline =
        (config.seconds > 0).then(|| Instant::now() + Duration::from_secs(config.seconds));
    let how_long = match config.seconds {
        0 => "until killed".to_string(),
        s => format!("for {s} s"),
    };
    crate::outln!(
        "outpost-burn: {} thread(s) at {}% duty, {how_long}",
        config.threads,
        config.duty
    );
    let mut handles = Vec::with_capacity(config.threads);
    for i in 0..config.threads {
        let duty = config.duty;
        let handle = thread::Builder::new()
            .name(format!("burn-{i}"))
            .spawn(move || burn(duty, deadline))
            .map_err(|e| format!("cannot start burner thread {}: {e}", i + 1))?;
        handles.push(handle);
    }
    for h in handles {
        let _ = h.join();
    }
    crate::outln!("outpost-burn: done after {} s", config.seconds);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_arguments() {
        let run = |threads, seconds, duty| {
            Ok(Parsed::Run(Config {
                threads,
                seconds,
                duty,
            }))
        };
        let cases: Vec<(&[&str], cli::Expected<Config>)> = vec![
            (&[], run(1, 0, 100)),
            (&["--threads", "4"], run(4, 0, 100)),
            (&["--threads=2", "--seconds=5", "--duty=50"], run(2, 5, 50)),
            (&["--duty", "0"], run(1, 0, 0)),
            (&["--seconds", "0"], run(1, 0, 100)),
            (&["-h"], Ok(Parsed::Help)),
            (
                &["--threads", "0"],
                Err("invalid value '0' for --threads: expected a whole number from 1 to 1024"),
            ),
            (
                &["--duty", "101"],
                Err("invalid value '101' for --duty: expected a whole number from 0 to 100"),
            ),
            (
                &["--seconds", "-1"],
                Err("invalid value '-1' for --seconds: expected a whole number from 0 to 31536000"),
            ),
            (&["--seconds"], Err("--seconds needs a value")),
            (&["--cpus", "2"], Err("unknown flag --cpus")),
            (
                &["2"],
                Err("unexpected argument '2' (every option is a --flag)"),
            ),
        ];
        for (argv, want) in cases {
            let got = parse(argv.iter().map(|s| s.to_string()).collect()).map_err(|e| e.0);
            assert_eq!(got, want.map_err(str::to_string), "{argv:?}");
        }
    }

    #[test]
    fn duty_sets_the_busy_share_of_a_slice() {
        assert_eq!(busy_time(0), Duration::ZERO);
        assert_eq!(busy_time(25), Duration::from_millis(25));
        assert_eq!(busy_time(100), PERIOD);
        assert_eq!(busy_time(500), PERIOD);
    }

    #[test]
    fn stops_at_the_deadline() {
        let start = Instant::now();
        run(&Config {
            threads: 2,
            seconds: 1,
            duty: 10,
        })
        .unwrap();
        let took = start.elapsed();
        assert!(took >= Duration::from_secs(1), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
}
