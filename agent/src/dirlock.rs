//! One agent per data directory.
//!
//! Two agents started on one data directory share one identity: each
//! session the controller accepts replaces the other's (`close::REPLACED`),
//! so they take the session from each other about twice a second, and both
//! write `pods.json`. At start the agent takes an exclusive lock on
//! `agent.lock` in the data directory (`flock(LOCK_EX | LOCK_NB)` through
//! std's [`File::try_lock`]) and keeps the file open for the life of the
//! process; the kernel drops the lock when the process ends however it
//! ends, so a crashed agent never leaves a stale lock behind. The holder's
//! pid is written into the file so a second agent can say whom it met.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file, in the data directory.
pub const LOCK_FILE: &str = "agent.lock";

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("data directory {} is in use by another outpost-agent ({}); stop it, or give this one its own --data-dir", dir.display(), holder_text(*pid))]
    InUse { dir: PathBuf, pid: Option<u32> },
    #[error("cannot lock data directory {} ({}): {source}; check that the agent may write there", dir.display(), file.display())]
    Io {
        dir: PathBuf,
        file: PathBuf,
        source: std::io::Error,
    },
}

fn holder_text(pid: Option<u32>) -> String {
    match pid {
        Some(p) => format!("pid {p}"),
        None => "pid unknown".into(),
    }
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock on `dir`, which must exist, and writes this
    /// process's pid into the lock file.
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            dir: dir.to_path_buf(),
            file: path.clone(),
            source,
        };
        // Not truncated on open: the holder's pid is what a loser reads.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                // The holder may not have written its pid yet: unknown then.
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(LockError::InUse {
                    dir: dir.to_path_buf(),
                    pid,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_directory_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        // A second open file description conflicts even in this process
        // (flock semantics), which is what a second agent would hold.
        let e = DirLock::acquire(dir.path()).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(e, LockError::InUse { pid: Some(p), .. } if p == std::process::id()),
            "{e:?}"
        );
        assert_eq!(
            text,
            format!(
                "data directory {} is in use by another outpost-agent (pid {}); stop it, or give this one its own --data-dir",
                dir.path().display(),
                std::process::id()
            )
        );
        // Released with the holder: the next agent may start.
        drop(first);
        let again = DirLock::acquire(dir.path()).unwrap();
        let pid = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        drop(again);
    }

    #[test]
    fn a_stale_pid_from_a_dead_agent_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), "99999999999\n").unwrap();
        let _held = DirLock::acquire(dir.path()).unwrap();
        let pid = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(pid, format!("{}\n", std::process::id()), "rewritten whole");
    }

    #[test]
    fn an_unwritable_directory_says_so() {
        let e = DirLock::acquire(Path::new("/nonexistent/outpost")).unwrap_err();
        assert!(matches!(e, LockError::Io { .. }), "{e:?}");
        assert!(e.to_string().contains("agent.lock"), "{e}");
    }
}
