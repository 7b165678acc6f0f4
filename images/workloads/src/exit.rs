//! `outpost-exit`: waits, then exits with a chosen code, for restart-policy,
//! back-off and phase tests (`--code 0` succeeds, anything else fails).

use std::time::Duration;

use crate::cli::{self, Flag, Flags, Parsed, UsageError};

pub const USAGE: &str = "\
outpost-exit: waits, then exits with a chosen code (test workload)

Usage: outpost-exit [--after-ms T] [--code C]

Options:
  --after-ms T   wait T milliseconds first (default 0)
  --code C       exit code, 0-255 (default 0)
  -h, --help     this text
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub after: Duration,
    pub code: u8,
}

pub fn parse(args: Vec<String>) -> Result<Parsed<Config>, UsageError> {
    let mut after_ms = 0;
    let mut code = 0;
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.next_flag()? {
        let Flag::Named { name, inline } = flag else {
            return Ok(Parsed::Help);
        };
        match name.as_str() {
            "after-ms" => after_ms = flags.number(&name, inline, 0, 365 * 24 * 3600 * 1000)?,
            "code" => code = flags.number(&name, inline, 0, 255)?,
            _ => return Err(cli::unknown(&name)),
        }
    }
    Ok(Parsed::Run(Config {
        after: Duration::from_millis(after_ms),
        code: u8::try_from(code).unwrap_or(u8::MAX),
    }))
}

/// Waits and returns the code to exit with, saying what it does.
pub fn run(config: &Config) -> u8 {
    crate::outln!(
        "outpost-exit: exiting with code {} after {} ms",
        config.code,
        config.after.as_millis()
    );
    std::thread::sleep(config.after);
    crate::outln!("outpost-exit: exit {}", config.code);
    config.code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_arguments() {
        let run = |ms, code| {
            Ok(Parsed::Run(Config {
                after: Duration::from_millis(ms),
                code,
            }))
        };
        let cases: Vec<(&[&str], cli::Expected<Config>)> = vec![
            (&[], run(0, 0)),
            (&["--code", "3"], run(0, 3)),
            (&["--after-ms=1500", "--code=255"], run(1500, 255)),
            (&["--code", "0", "--code", "7"], run(0, 7)),
            (&["--help", "--nonsense"], Ok(Parsed::Help)),
            (&["--code", "256"], Err("invalid value '256' for --code: expected a whole number from 0 to 255")),
            (&["--code", "-1"], Err("invalid value '-1' for --code: expected a whole number from 0 to 255")),
            (&["--after-ms", "1s"], Err("invalid value '1s' for --after-ms: expected a whole number from 0 to 31536000000")),
            (&["--code"], Err("--code needs a value")),
            (&["--signal", "9"], Err("unknown flag --signal")),
            (&["3"], Err("unexpected argument '3' (every option is a --flag)")),
        ];
        for (argv, want) in cases {
            let got = parse(argv.iter().map(|s| s.to_string()).collect()).map_err(|e| e.0);
            assert_eq!(got, want.map_err(str::to_string), "{argv:?}");
        }
    }

    #[test]
    fn returns_the_code_after_the_wait() {
        let start = std::time::Instant::now();
        let code = run(&Config {
            after: Duration::from_millis(50),
            code: 3,
        });
        assert_eq!(code, 3);
        assert!(start.elapsed() >= Duration::from_millis(50));
    }
}
