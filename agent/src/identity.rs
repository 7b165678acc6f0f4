//! The node's identity on disk: its private key and certificate, and the
//! cluster CA it pinned at enrolment.
//!
//! The key is generated here and never leaves the box; only a CSR goes to the
//! controller. Key and certificate live together in one file
//! (`identity.pem`, mode 0600) so a renewal replaces both with one atomic
//! rename: a crash can never pair a new key with an old certificate.

use outpost_proto::files::{read_bounded, write_private};
use rcgen::{CertificateParams, KeyPair};
use std::path::{Path, PathBuf};
use std::time::Duration;

const IDENTITY_FILE: &str = "identity.pem";
const CA_FILE: &str = "ca.pem";
/// The ID (the public half) of the token this data directory enrolled
/// with, so a different `--token` is recognised as a request to enrol again.
const TOKEN_ID_FILE: &str = "enrolled-token-id";
/// Identity files are a few KiB; anything larger is not ours.
const MAX_FILE: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("reading {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path} is damaged: {message}; move it away and enrol again with a new token")]
    Damaged { path: PathBuf, message: String },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("generating a key: {0}")]
    Keygen(#[from] rcgen::Error),
    #[error("the certificate from the controller is unusable: {0}")]
    BadCertificate(String),
}

/// A node's key and certificate.
#[derive(Clone)]
pub struct Identity {
    pub node: String,
    pub cert_der: Vec<u8>,
    /// PKCS#8 DER of the private key.
    pub key_der: Vec<u8>,
    pub not_before_ms: u64,
    pub not_after_ms: u64,
    pub serial: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("node", &self.node)
            .field("serial", &self.serial)
            .field("not_after_ms", &self.not_after_ms)
            .finish_non_exhaustive()
    }
}

/// A fresh key and a CSR for it.
pub struct Pending {
    key: KeyPair,
    pub csr_der: Vec<u8>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

/// Generates a key pair and a CSR naming `node` (the controller ignores
/// everything in it but the public key; the name only helps people reading it).
pub fn new_key(node: &str) -> Result<Pending, IdentityError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, node);
    let csr_der = params.serialize_request(&key)?.der().to_vec();
    Ok(Pending { key, csr_der })
}

impl Pending {
    /// Pairs the key with the certificate the controller issued for it.
    pub fn complete(self, cert_der: Vec<u8>) -> Result<Identity, IdentityError> {
        Identity::from_parts(cert_der, self.key.serialize_der())
    }
}

fn to_ms(secs: i64) -> u64 {
    u64::try_from(secs).unwrap_or(0).saturating_mul(1000)
}

impl Identity {
    fn from_parts(cert_der: Vec<u8>, key_der: Vec<u8>) -> Result<Identity, IdentityError> {
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        let node = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .into_iter()
            .flat_map(|ext| ext.value.general_names.iter())
            .find_map(|n| match n {
                x509_parser::extensions::GeneralName::URI(u) => {
                    u.strip_prefix("urn:outpost:node:").map(str::to_string)
                }
                _ => None,
            })
            .ok_or_else(|| {
                IdentityError::BadCertificate("no node name in the certificate".into())
            })?;
        let serial = cert
            .tbs_certificate
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Identity {
            node,
            not_before_ms: to_ms(cert.validity().not_before.timestamp()),
            not_after_ms: to_ms(cert.validity().not_after.timestamp()),
            serial,
            cert_der,
            key_der,
        })
    }

    /// When to renew: two thirds into the certificate's validity window, as
    /// measured at `now_ms`, the controller's clock as this box knows it.
    pub fn renew_in(&self, now_ms: u64) -> Duration {
        let window = self.not_after_ms.saturating_sub(self.not_before_ms);
        let at = self.not_before_ms + window / 3 * 2;
        Duration::from_millis(at.saturating_sub(now_ms))
    }

    /// True when the certificate has expired at `now_ms`, the controller's
    /// clock as this box knows it.
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms >= self.not_after_ms
    }

    /// TLS client credentials.
    pub fn tls(
        &self,
    ) -> (
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ) {
        (
            vec![self.cert_der.clone().into()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into()),
        )
    }
}

fn pem_block(tag: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(tag, der.to_vec()))
}

fn read_pem(path: &Path) -> Result<Option<Vec<pem::Pem>>, IdentityError> {
    match read_bounded(path, MAX_FILE) {
        Ok(text) => pem::parse_many(text)
            .map(Some)
            .map_err(|e| IdentityError::Damaged {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        Err(outpost_proto::files::BoundedReadError::Io(e))
            if e.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(e) => Err(IdentityError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

/// The agent's data directory.
#[derive(Debug, Clone)]
pub struct DataDir(pub PathBuf);

impl DataDir {
    /// Loads the identity, if the node has enrolled.
    pub fn identity(&self) -> Result<Option<Identity>, IdentityError> {
        let path = self.0.join(IDENTITY_FILE);
        let Some(blocks) = read_pem(&path)? else {
            return Ok(None);
        };
        let find = |tag: &str| {
            blocks
                .iter()
                .find(|b| b.tag() == tag)
                .map(|b| b.contents().to_vec())
                .ok_or_else(|| IdentityError::Damaged {
                    path: path.clone(),
                    message: format!("no {tag} block"),
                })
        };
        let id = Identity::from_parts(find("CERTIFICATE")?, find("PRIVATE KEY")?).map_err(|e| {
            IdentityError::Damaged {
                path: path.clone(),
                message: e.to_string(),
            }
        })?;
        Ok(Some(id))
    }

    /// Writes key and certificate in one atomic step (mode 0600).
    pub fn save_identity(&self, id: &Identity) -> Result<(), IdentityError> {
        let path = self.0.join(IDENTITY_FILE);
        let text = pem_block("CERTIFICATE", &id.cert_der) + &pem_block("PRIVATE KEY", &id.key_der);
        write_private(&path, text.as_bytes())
            .map_err(|source| IdentityError::Write { path, source })
    }

    /// The pinned cluster CA certificate.
    pub fn ca(&self) -> Result<Option<Vec<u8>>, IdentityError> {
        let path = self.0.join(CA_FILE);
        Ok(read_pem(&path)?.and_then(|blocks| {
            blocks
                .into_iter()
                .find(|b| b.tag() == "CERTIFICATE")
                .map(|b| b.into_contents())
        }))
    }

    /// The ID of the token the identity was issued for, if recorded (data
    /// directories enrolled before it was kept have none; an unreadable
    /// one counts as none).
    pub fn enrolled_token_id(&self) -> Option<String> {
        let text = read_bounded(&self.0.join(TOKEN_ID_FILE), 64).ok()?;
        let id = text.trim();
        (!id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        .then(|| id.to_string())
    }

    /// Records the ID of the token the identity was just issued for.
    pub fn save_enrolled_token_id(&self, id: &str) -> Result<(), IdentityError> {
        let path = self.0.join(TOKEN_ID_FILE);
        write_private(&path, format!("{id}\n").as_bytes())
            .map_err(|source| IdentityError::Write { path, source })
    }

    pub fn save_ca(&self, der: &[u8]) -> Result<(), IdentityError> {
        let path = self.0.join(CA_FILE);
        write_private(&path, pem_block("CERTIFICATE", der).as_bytes())
            .map_err(|source| IdentityError::Write { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(pending: &Pending, node: &str, secs: i64) -> Vec<u8> {
        // Stand-in CA, signing the pending key the way the controller does.
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![rcgen::SanType::URI(
            format!("urn:outpost:node:{node}").try_into().unwrap(),
        )];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::seconds(secs / 10);
        p.not_after = now + time::Duration::seconds(secs);
        p.signed_by(&pending.key, &issuer).unwrap().der().to_vec()
    }

    #[test]
    fn save_load_round_trip_with_private_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir(dir.path().join("agent"));
        assert!(data.identity().unwrap().is_none());
        let pending = new_key("edge-1").unwrap();
        let cert = issue(&pending, "edge-1", 3000);
        let id = pending.complete(cert).unwrap();
        data.save_identity(&id).unwrap();
        let back = data.identity().unwrap().unwrap();
        assert_eq!(back.node, "edge-1");
        assert_eq!(back.serial, id.serial);
        assert_eq!(back.key_der, id.key_der);
        let mode = std::fs::metadata(dir.path().join("agent/identity.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn renewal_is_two_thirds_into_the_window_and_honours_skew() {
        let pending = new_key("n").unwrap();
        let id = pending
            .complete(issue(&new_key("n").unwrap(), "n", 3000))
            .unwrap();
        use outpost_proto::clock::now_ms;
        let controller = |skew_ms: i64| now_ms().saturating_add_signed(skew_ms);
        // Window is 3300 s starting 300 s ago: renew 2200 s after its start.
        let left = id.renew_in(controller(0)).as_secs();
        assert!((1895..=1900).contains(&left), "{left}");
        // The controller's clock is 1000 s ahead: renew 1000 s sooner.
        let left = id.renew_in(controller(1_000_000)).as_secs();
        assert!((895..=900).contains(&left), "{left}");
        assert_eq!(id.renew_in(controller(1_000_000_000)), Duration::ZERO);
        assert!(!id.expired(controller(0)));
        // Valid for 3000 s more: a box 400 days ahead knows it from the
        // controller's clock; 1000 s past the end by the controller's, it
        // has expired.
        assert!(!id.expired(controller(-400 * 86_400_000)));
        assert!(id.expired(controller(4_000_000)));
    }

    #[test]
    fn damaged_file_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("identity.pem"),
            "-----BEGIN CERTIFICATE-----\nnope\n",
        )
        .unwrap();
        let err = DataDir(dir.path().to_path_buf())
            .identity()
            .unwrap_err()
            .to_string();
        assert!(err.contains("enrol again"), "{err}");
    }
}
