//! The operator's client configuration (what `outpostctl` reads).
//!
//! One self-contained TOML file, like a kubeconfig: controller address, the
//! TLS server name to verify, and the CA, admin certificate and key in PEM.
//! Written with mode 0600 because it holds a private key.

use outpost_proto::files::{read_bounded, write_private, BoundedReadError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "OUTPOST_CONFIG";

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// `host:port` of the controller's QUIC endpoint.
    pub controller: String,
    /// Name the controller's certificate must carry (a DNS SAN or IP).
    pub server_name: String,
    /// Cluster CA certificate (PEM).
    pub ca: String,
    /// Admin client certificate (PEM).
    pub cert: String,
    /// Admin private key (PEM).
    pub key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no outpostctl config found at {0}; run `outpost-controller init` or pass --config / set OUTPOST_CONFIG")]
    Missing(PathBuf),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid outpostctl config: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path} is {len} bytes; a config file is at most 64 KiB")]
    TooLarge { path: PathBuf, len: u64 },
}

/// Default location: `$HOME/.outpost/config`.
pub fn default_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".outpost").join("config"))
}

/// Resolves the config path: explicit flag, then `OUTPOST_CONFIG`, then the default.
pub fn resolve_path(flag: Option<&Path>) -> Option<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
        .or_else(default_path)
}

impl ClientConfig {
    pub fn load(path: &Path) -> Result<ClientConfig, ConfigError> {
        let text = read_bounded(path, 64 * 1024).map_err(|e| match e {
            BoundedReadError::Io(source) if source.kind() == std::io::ErrorKind::NotFound => {
                ConfigError::Missing(path.to_path_buf())
            }
            BoundedReadError::Io(source) => ConfigError::Read {
                path: path.to_path_buf(),
                source,
            },
            BoundedReadError::TooLarge { len, .. } => ConfigError::TooLarge {
                path: path.to_path_buf(),
                len,
            },
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Writes the file atomically with mode 0600.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = toml::to_string(self).map_err(std::io::Error::other)?;
        write_private(path, text.as_bytes())
    }
}

/// PEM-encodes a DER certificate.
pub fn cert_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// Decodes the first PEM block with the given tag.
pub fn pem_der(text: &str, tag: &str) -> Result<Vec<u8>, String> {
    pem::parse_many(text)
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|p| p.tag() == tag)
        .map(|p| p.into_contents())
        .ok_or_else(|| format!("no {tag} PEM block"))
}
