//! `outpost-hog`: grows memory, disk and task use at a chosen rate, then holds.
//!
//! Each resource follows a ramp: `rate × elapsed time`, capped at its max
//! ([`target`]). Every [`TICK`] the hog catches up with its ramps:
//! - memory: 1 MiB blocks filled with a non-zero byte, so every page is
//!   touched and counts in RSS (a zeroed allocation would stay virtual);
//! - disk: 1 MiB blocks of pseudo-random data appended to `--disk-path`,
//!   then `fsync`ed, so the bytes are really on the file system;
//! - procs: threads that sleep forever (a pids limit counts tasks, and a
//!   thread is a task).
//!
//! A resource that cannot grow (a refused allocation, a full disk, a refused
//! thread) stops there with a message; the others go on. When all are done
//! the hog prints `holding until killed` and sleeps. Progress goes to stdout
//! once a second. Under a memory limit the kernel's OOM killer ends it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use crate::cli::{self, Flag, Flags, Parsed, UsageError};

pub const USAGE: &str = "\
outpost-hog: grows memory, disk and task use at a chosen rate, then holds (test workload)

Usage: outpost-hog [--memory-mib-per-sec R --memory-max-mib M]
                   [--disk-mib-per-sec R --disk-max-mib M [--disk-path P]]
                   [--procs-per-sec R --procs-max M]

Options:
  --memory-mib-per-sec R   allocate and touch R MiB of memory per second
  --memory-max-mib M       ... up to M MiB
  --disk-mib-per-sec R     write and fsync R MiB per second to the disk file
  --disk-max-mib M         ... up to M MiB
  --disk-path P            the disk file (default outpost-hog.data in the
                           working directory; missing directories are created)
  --procs-per-sec R        start R sleeping threads per second
  --procs-max M            ... up to M threads
  -h, --help               this text

At least one resource is required; each needs both its rate and its max.
When every resource has reached its max (or could not grow further) the hog
holds what it has until killed.
";

const MIB: usize = 1024 * 1024;
/// How often the hog catches up with its ramps: fine enough that 1 MiB/s
/// grows in visible steps, coarse enough to cost nothing.
pub const TICK: Duration = Duration::from_millis(50);
/// Sleeping threads need almost no stack; the default 2 MiB would make
/// `--procs-max 1000` reserve 2 GiB of address space.
const PROC_STACK: usize = 64 * 1024;

/// Grow at `per_sec` units per second up to `max` units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ramp {
    pub per_sec: u64,
    pub max: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// MiB.
    pub memory: Option<Ramp>,
    /// MiB.
    pub disk: Option<Ramp>,
    pub disk_path: PathBuf,
    /// Threads.
    pub procs: Option<Ramp>,
}

pub fn parse(args: Vec<String>) -> Result<Parsed<Config>, UsageError> {
    const RATE_MAX: u64 = 100_000;
    const SIZE_MAX_MIB: u64 = 1024 * 1024;
    let (mut mem_rate, mut mem_max, mut disk_rate, mut disk_max) = (None, None, None, None);
    let (mut procs_rate, mut procs_max, mut disk_path) = (None, None, None);
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.next_flag()? {
        let Flag::Named { name, inline } = flag else {
            return Ok(Parsed::Help);
        };
        match name.as_str() {
            "memory-mib-per-sec" => mem_rate = Some(flags.number(&name, inline, 1, RATE_MAX)?),
            "memory-max-mib" => mem_max = Some(flags.number(&name, inline, 1, SIZE_MAX_MIB)?),
            "disk-mib-per-sec" => disk_rate = Some(flags.number(&name, inline, 1, RATE_MAX)?),
            "disk-max-mib" => disk_max = Some(flags.number(&name, inline, 1, SIZE_MAX_MIB)?),
            "disk-path" => disk_path = Some(flags.value(&name, inline)?),
            "procs-per-sec" => procs_rate = Some(flags.number(&name, inline, 1, RATE_MAX)?),
            "procs-max" => procs_max = Some(flags.number(&name, inline, 1, RATE_MAX)?),
            _ => return Err(cli::unknown(&name)),
        }
    }
    let memory = ramp("memory-mib-per-sec", mem_rate, "memory-max-mib", mem_max)?;
    let disk = ramp("disk-mib-per-sec", disk_rate, "disk-max-mib", disk_max)?;
    let procs = ramp("procs-per-sec", procs_rate, "procs-max", procs_max)?;
    if disk.is_none() && disk_path.is_some() {
        return Err(UsageError(
            "--disk-path needs --disk-mib-per-sec and --disk-max-mib".into(),
        ));
    }
    if disk_path.as_deref() == Some("") {
        return Err(UsageError("--disk-path is empty".into()));
    }
    if memory.is_none() && disk.is_none() && procs.is_none() {
        return Err(UsageError(
            "nothing to hog: give --memory-mib-per-sec and --memory-max-mib, \
             --disk-mib-per-sec and --disk-max-mib, or --procs-per-sec and --procs-max"
                .into(),
        ));
    }
    Ok(Parsed::Run(Config {
        memory,
        disk,
        disk_path: PathBuf::from(disk_path.unwrap_or_else(|| "outpost-hog.data".into())),
        procs,
    }))
}

fn ramp(
    rate_flag: &str,
    rate: Option<u64>,
    max_flag: &str,
    max: Option<u64>,
) -> Result<Option<Ramp>, UsageError> {
    match (rate, max) {
        (Some(per_sec), Some(max)) => Ok(Some(Ramp { per_sec, max })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(UsageError(format!(
            "--{rate_flag} needs --{max_flag} (where the hog stops growing)"
        ))),
        (None, Some(_)) => Err(UsageError(format!(
            "--{max_flag} needs --{rate_flag} (how fast the hog grows)"
        ))),
    }
}

/// How much the ramp asks for `elapsed` after the start.
pub fn target(ramp: Ramp, elapsed: Duration) -> u64 {
    let by_now = u128::from(ramp.per_sec).saturating_mul(elapsed.as_millis()) / 1000;
    u64::try_from(by_now).unwrap_or(u64::MAX).min(ramp.max)
}

/// What one resource holds so far.
enum Held {
    /// 1 MiB blocks.
    Memory(Vec<Vec<u8>>),
    Disk {
        file: File,
        written_mib: u64,
        block: Vec<u8>,
    },
    /// Sleeping threads started.
    Procs(u64),
}

struct Resource {
    name: &'static str,
    unit: &'static str,
    ramp: Ramp,
    held: Held,
    /// Why it stopped short of its max.
    stopped: Option<String>,
}

impl Resource {
    fn amount(&self) -> u64 {
        match &self.held {
            Held::Memory(blocks) => u64::try_from(blocks.len()).unwrap_or(u64::MAX),
            Held::Disk { written_mib, .. } => *written_mib,
            Held::Procs(n) => *n,
        }
    }

    fn done(&self) -> bool {
        self.stopped.is_some() || self.amount() >= self.ramp.max
    }

    /// Grows to `want` units; on failure keeps what it got.
    fn grow_to(&mut self, want: u64) -> Result<(), String> {
        match &mut self.held {
            Held::Memory(blocks) => {
                while u64::try_from(blocks.len()).unwrap_or(u64::MAX) < want {
                    let mut block = Vec::new();
                    block
                        .try_reserve_exact(MIB)
                        .map_err(|e| format!("allocation refused: {e}"))?;
                    block.resize(MIB, 0x5A);
                    blocks.push(std::hint::black_box(block));
                }
                Ok(())
            }
            Held::Disk {
                file,
                written_mib,
                block,
            } => {
                if *written_mib >= want {
                    return Ok(());
                }
                while *written_mib < want {
                    // Blocks differ from one another, so no file system can
                    // deduplicate them away.
                    block[..8].copy_from_slice(&written_mib.to_le_bytes());
                    file.write_all(block)
                        .map_err(|e| format!("write failed: {e}"))?;
                    *written_mib += 1;
                }
                file.sync_data().map_err(|e| format!("fsync failed: {e}"))
            }
            Held::Procs(started) => {
                while *started < want {
                    thread::Builder::new()
                        .stack_size(PROC_STACK)
                        .spawn(|| loop {
                            thread::park();
                        })
                        .map_err(|e| {
                            format!(
                                "cannot start thread {} (task {} with the main thread): {e}",
                                *started + 1,
                                *started + 2
                            )
                        })?;
                    *started += 1;
                }
                Ok(())
            }
        }
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "{} {}/{} {}",
            self.name,
            self.amount(),
            self.ramp.max,
            self.unit
        );
        if self.stopped.is_some() {
            s.push_str(" (stopped)");
        }
        s
    }
}

/// One MiB of pseudo-random bytes (xorshift; nothing here needs real randomness).
fn random_block() -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut block = Vec::with_capacity(MIB);
    while block.len() < MIB {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        block.extend_from_slice(&x.to_le_bytes());
    }
    block
}

fn resources(config: &Config) -> Result<Vec<Resource>, String> {
    let mut out = Vec::new();
    if let Some(ramp) = config.memory {
        out.push(Resource {
            name: "memory",
            unit: "MiB",
            ramp,
            held: Held::Memory(Vec::new()),
            stopped: None,
        });
    }
    if let Some(ramp) = config.disk {
        let path = &config.disk_path;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)
            .map_err(|e| format!("cannot open {} for writing: {e}", path.display()))?;
        out.push(Resource {
            name: "disk",
            unit: "MiB",
            ramp,
            held: Held::Disk {
                file,
                written_mib: 0,
                block: random_block(),
            },
            stopped: None,
        });
    }
    if let Some(ramp) = config.procs {
        out.push(Resource {
            name: "procs",
            unit: "threads",
            ramp,
            held: Held::Procs(0),
            stopped: None,
        });
    }
    Ok(out)
}

/// Grows every resource along its ramp, then holds until killed. Returns
/// only if the disk file cannot be opened.
pub fn run(config: &Config) -> Result<(), String> {
    let mut resources = resources(config)?;
    for r in &resources {
        let extra = match r.held {
            Held::Disk { .. } => format!(" into {}", config.disk_path.display()),
            _ => String::new(),
        };
        crate::outln!(
            "outpost-hog: {} at {} {}/s up to {} {}{extra}",
            r.name,
            r.ramp.per_sec,
            r.unit,
            r.ramp.max,
            r.unit
        );
    }
    let start = Instant::now();
    let mut last_report = start;
    loop {
        let elapsed = start.elapsed();
        for r in resources.iter_mut().filter(|r| !r.done()) {
            if let Err(e) = r.grow_to(target(r.ramp, elapsed)) {
                crate::outln!(
                    "outpost-hog: {} stopped at {} {}: {e}",
                    r.name,
                    r.amount(),
                    r.unit
                );
                r.stopped = Some(e);
            }
        }
        let all_done = resources.iter().all(Resource::done);
        if all_done || last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            let parts: Vec<String> = resources.iter().map(Resource::describe).collect();
            crate::outln!(
                "outpost-hog: {:.1}s {}",
                elapsed.as_secs_f64(),
                parts.join(", ")
            );
        }
        if all_done {
            break;
        }
        thread::sleep(TICK);
    }
    crate::outln!("outpost-hog: holding until killed");
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(per_sec: u64, max: u64) -> Option<Ramp> {
        Some(Ramp { per_sec, max })
    }

    #[test]
    fn parses_arguments() {
        let default_path = PathBuf::from("outpost-hog.data");
        let run = |memory, disk, disk_path: &PathBuf, procs| {
            Ok(Parsed::Run(Config {
                memory,
                disk,
                disk_path: disk_path.clone(),
                procs,
            }))
        };
        let cases: Vec<(&[&str], cli::Expected<Config>)> = vec![
            (
                &["--memory-mib-per-sec", "50", "--memory-max-mib", "200"],
                run(ramp(50, 200), None, &default_path, None),
            ),
            (
                &["--disk-mib-per-sec=5", "--disk-max-mib=10", "--disk-path", "/x/y"],
                run(None, ramp(5, 10), &PathBuf::from("/x/y"), None),
            ),
            (
                &["--procs-per-sec", "50", "--procs-max", "100"],
                run(None, None, &default_path, ramp(50, 100)),
            ),
            (
                &[
                    "--procs-per-sec", "1", "--procs-max", "2", "--memory-mib-per-sec", "3",
                    "--memory-max-mib", "4", "--disk-mib-per-sec", "5", "--disk-max-mib", "6",
                ],
                run(ramp(3, 4), ramp(5, 6), &default_path, ramp(1, 2)),
            ),
            (&["--help"], Ok(Parsed::Help)),
            (&[], Err("nothing to hog: give --memory-mib-per-sec and --memory-max-mib, --disk-mib-per-sec and --disk-max-mib, or --procs-per-sec and --procs-max")),
            (&["--memory-mib-per-sec", "5"], Err("--memory-mib-per-sec needs --memory-max-mib (where the hog stops growing)")),
            (&["--procs-max", "5"], Err("--procs-max needs --procs-per-sec (how fast the hog grows)")),
            (&["--disk-path", "/d", "--procs-per-sec", "1", "--procs-max", "1"], Err("--disk-path needs --disk-mib-per-sec and --disk-max-mib")),
            (&["--disk-path=", "--disk-mib-per-sec", "1", "--disk-max-mib", "1"], Err("--disk-path is empty")),
            (&["--memory-mib-per-sec", "0", "--memory-max-mib", "1"], Err("invalid value '0' for --memory-mib-per-sec: expected a whole number from 1 to 100000")),
            (&["--memory-max-mib", "lots"], Err("invalid value 'lots' for --memory-max-mib: expected a whole number from 1 to 1048576")),
            (&["--procs-max"], Err("--procs-max needs a value")),
            (&["--cpu", "1"], Err("unknown flag --cpu")),
        ];
        for (argv, want) in cases {
            let got = parse(argv.iter().map(|s| s.to_string()).collect()).map_err(|e| e.0);
            assert_eq!(got, want.map_err(str::to_string), "{argv:?}");
        }
    }

    #[test]
    fn ramps_grow_with_time_up_to_their_max() {
        let r = Ramp {
            per_sec: 50,
            max: 200,
        };
        let cases = [
            (0, 0),
            (10, 0),
            (20, 1),
            (100, 5),
            (1000, 50),
            (3999, 199),
            (4000, 200),
            (60_000, 200),
        ];
        for (ms, want) in cases {
            assert_eq!(target(r, Duration::from_millis(ms)), want, "{ms} ms");
        }
        let huge = Ramp {
            per_sec: u64::MAX,
            max: u64::MAX,
        };
        assert_eq!(target(huge, Duration::from_secs(u64::MAX)), u64::MAX);
    }

    #[test]
    fn grows_each_resource() {
        let path =
            std::env::temp_dir().join(format!("outpost-hog-test-{}/d.data", std::process::id()));
        let config = Config {
            memory: ramp(1, 3),
            disk: ramp(1, 2),
            disk_path: path.clone(),
            procs: ramp(1, 2),
        };
        let mut resources = resources(&config).unwrap();
        for r in &mut resources {
            r.grow_to(r.ramp.max).unwrap();
            assert!(r.done(), "{}", r.describe());
        }
        let described: Vec<String> = resources.iter().map(Resource::describe).collect();
        assert_eq!(
            described,
            ["memory 3/3 MiB", "disk 2/2 MiB", "procs 2/2 threads"]
        );
        let Held::Memory(blocks) = &resources[0].held else {
            panic!("memory first");
        };
        assert!(blocks
            .iter()
            .all(|b| b.len() == MIB && b.iter().all(|&x| x == 0x5A)));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * MIB as u64);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
