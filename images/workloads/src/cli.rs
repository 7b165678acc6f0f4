//! Command-line flags shared by the workload binaries.
//!
//! Each binary hands its arguments to its own `parse` function (in the
//! workload's module), which walks them with [`Flags`] and builds its config.
//! Accepted forms: `--name value`, `--name=value`, `-h`/`--help`. Anything
//! else (an unknown flag, a positional argument, a bad number) is a
//! [`UsageError`]; [`run`] prints it and exits with code 2, the convention for
//! "wrong invocation" that scenario tests can assert on.

use std::fmt;

/// What a command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    /// Run the workload with this config.
    Run(T),
    /// Print the usage text and exit 0.
    Help,
}

/// A command line that cannot be run. The message names the flag and what is
/// wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// One flag from the command line, before its value is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flag {
    /// `-h` or `--help`.
    Help,
    /// `--name` (stored without the dashes), with the value given after `=` if any.
    Named {
        name: String,
        inline: Option<String>,
    },
}

/// Walks a command line flag by flag.
#[derive(Debug)]
pub struct Flags {
    args: std::vec::IntoIter<String>,
}

impl Flags {
    /// The arguments after the program name.
    pub fn new(args: impl IntoIterator<Item = String>) -> Self {
        Flags {
            args: args.into_iter().collect::<Vec<_>>().into_iter(),
        }
    }

    /// The next flag, `None` at the end, an error for a positional argument.
    pub fn next_flag(&mut self) -> Result<Option<Flag>, UsageError> {
        let Some(arg) = self.args.next() else {
            return Ok(None);
        };
        if arg == "-h" || arg == "--help" {
            return Ok(Some(Flag::Help));
        }
        match arg.strip_prefix("--") {
            Some(rest) if !rest.is_empty() => {
                let (name, inline) = match rest.split_once('=') {
                    Some((name, value)) => (name.to_string(), Some(value.to_string())),
                    None => (rest.to_string(), None),
                };
                Ok(Some(Flag::Named { name, inline }))
            }
            _ => Err(UsageError(format!(
                "unexpected argument '{arg}' (every option is a --flag)"
            ))),
        }
    }

    /// The value of `--name`: after `=`, or the next argument.
    pub fn value(&mut self, name: &str, inline: Option<String>) -> Result<String, UsageError> {
        if let Some(v) = inline {
            return Ok(v);
        }
        match self.args.next() {
            Some(v) if !v.starts_with("--") => Ok(v),
            _ => Err(UsageError(format!("--{name} needs a value"))),
        }
    }

    /// The value of `--name` as a whole number in `min..=max`.
    pub fn number(
        &mut self,
        name: &str,
        inline: Option<String>,
        min: u64,
        max: u64,
    ) -> Result<u64, UsageError> {
        let raw = self.value(name, inline)?;
        number(&format!("--{name}"), &raw, min, max)
    }
}

/// `raw` as a whole number in `min..=max`; `what` names its source in the error.
pub fn number(what: &str, raw: &str, min: u64, max: u64) -> Result<u64, UsageError> {
    match raw.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(UsageError(format!(
            "invalid value '{raw}' for {what}: expected a whole number from {min} to {max}"
        ))),
    }
}

/// The error for a flag the workload does not know.
pub fn unknown(name: &str) -> UsageError {
    UsageError(format!("unknown flag --{name}"))
}

/// `println!` that never panics. A workload must not die because whoever
/// read its stdout went away (with `panic = "abort"`, a failed `println!`
/// aborts the process).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that never panics; see [`outln!`](crate::outln).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr(), $($arg)*);
    }};
}

/// Parses the process's arguments with `parse`: prints `usage` and exits 0
/// for `--help`, prints the problem and exits 2 for a bad command line,
/// otherwise returns the config.
pub fn run<T>(
    program: &str,
    usage: &str,
    parse: impl FnOnce(Vec<String>) -> Result<Parsed<T>, UsageError>,
) -> T {
    match parse(std::env::args().skip(1).collect()) {
        Ok(Parsed::Run(config)) => config,
        Ok(Parsed::Help) => {
            let _ = std::io::Write::write_all(&mut std::io::stdout(), usage.as_bytes());
            std::process::exit(0);
        }
        Err(e) => {
            crate::errln!("{program}: {e}\nRun '{program} --help' for usage.");
            std::process::exit(2);
        }
    }
}

/// What a table-driven parse test expects: a config, help, or an error message.
#[cfg(test)]
pub(crate) type Expected<T> = Result<Parsed<T>, &'static str>;

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        Flags::new(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn walks_flags_and_values() {
        let mut f = flags(&["--a", "1", "--b=2", "-h", "--help"]);
        let Some(Flag::Named { name, inline }) = f.next_flag().unwrap() else {
            panic!("expected --a");
        };
        assert_eq!((name.as_str(), inline.clone()), ("a", None));
        assert_eq!(f.value(&name, inline).unwrap(), "1");
        let Some(Flag::Named { name, inline }) = f.next_flag().unwrap() else {
            panic!("expected --b");
        };
        assert_eq!(f.number(&name, inline, 0, 5).unwrap(), 2);
        assert_eq!(f.next_flag().unwrap(), Some(Flag::Help));
        assert_eq!(f.next_flag().unwrap(), Some(Flag::Help));
        assert_eq!(f.next_flag().unwrap(), None);
    }

    #[test]
    fn rejects_what_is_not_a_flag() {
        for arg in ["x", "-x", "--", "-"] {
            let err = flags(&[arg]).next_flag().unwrap_err();
            assert!(err.0.contains("unexpected argument"), "{arg}: {err}");
        }
    }

    #[test]
    fn missing_value_is_an_error() {
        assert_eq!(
            flags(&[]).value("x", None).unwrap_err().0,
            "--x needs a value"
        );
        assert_eq!(
            flags(&["--y"]).value("x", None).unwrap_err().0,
            "--x needs a value"
        );
    }

    #[test]
    fn numbers_are_checked_against_their_range() {
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("10", Some(10)),
            (" 7 ", Some(7)),
            ("11", None),
            ("-1", None),
            ("1.5", None),
            ("", None),
            ("ten", None),
            ("99999999999999999999999", None),
        ];
        for (raw, want) in cases {
            let got = number("--n", raw, 0, 10).ok();
            assert_eq!(got, *want, "{raw:?}");
        }
        assert_eq!(
            number("--n", "11", 0, 10).unwrap_err().0,
            "invalid value '11' for --n: expected a whole number from 0 to 10"
        );
    }
}
