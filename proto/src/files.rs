//! Small file helpers for the I/O edge: bounded reads of files an operator
//! or a peer could make arbitrarily large, and atomic writes of secrets.

use std::path::Path;

/// Why a bounded read failed.
#[derive(Debug)]
pub enum BoundedReadError {
    Io(std::io::Error),
    /// The file's length and the most that was allowed.
    TooLarge {
        len: u64,
        max: u64,
    },
}

impl BoundedReadError {
    /// The file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, BoundedReadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Reads a whole UTF-8 file, refusing files larger than `max` bytes.
pub fn read_bounded(path: &Path, max: u64) -> Result<String, BoundedReadError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(BoundedReadError::Io)?;
    let len = f.metadata().map_err(BoundedReadError::Io)?.len();
    if len > max {
        return Err(BoundedReadError::TooLarge { len, max });
    }
    let mut s = String::new();
    f.take(max + 1)
        .read_to_string(&mut s)
        .map_err(BoundedReadError::Io)?;
    Ok(s)
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename) with mode
/// 0600, creating parent directories (0700).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl std::fmt::Display for BoundedReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BoundedReadError::Io(e) => write!(f, "{e}"),
            BoundedReadError::TooLarge { len, max } => {
                write!(
                    f,
                    "file is {len} bytes, larger than the {max} bytes allowed"
                )
            }
        }
    }
}

impl std::error::Error for BoundedReadError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_too_large_says_the_limit() {
        let path = std::env::temp_dir().join(format!("outpost-bounded-{}", std::process::id()));
        std::fs::write(&path, "x".repeat(100)).unwrap();
        let e = read_bounded(&path, 64).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert!(matches!(
            e,
            BoundedReadError::TooLarge { len: 100, max: 64 }
        ));
        assert_eq!(
            e.to_string(),
            "file is 100 bytes, larger than the 64 bytes allowed"
        );
    }
}
