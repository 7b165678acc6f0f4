//! The cluster's certificate authority.
//!
//! One ECDSA P-256 CA signs three kinds of certificates, each naming its
//! holder in a URI SAN that the controller reads back as the identity:
//! - the controller's server certificate (`urn:outpost:controller`, plus the
//!   DNS/IP SANs agents dial), serverAuth;
//! - operator client certificates, clientAuth: full admins
//!   (`urn:outpost:admin:NAME`, the form `init` has always written) and
//!   read-only operators (`urn:outpost:read-only:NAME`, a form older
//!   controllers do not know and so refuse rather than take for an admin);
//! - node client certificates (`urn:outpost:node:NAME`), clientAuth, signed
//!   from an agent's CSR of which only the public key is used: the controller
//!   overwrites subject, SANs, CA flag, usages and validity.

use outpost_proto::AdminRole;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far back `not_before` is set, so a box whose clock runs a little
/// behind the controller's can use a certificate it was just given.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(10 * 60);

/// CA lifetime: ten years, as kubeadm's.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Why a certificate could not be issued or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("certificate signing request rejected: {0}")]
    BadCsr(String),
    #[error("certificate could not be parsed: {0}")]
    BadCertificate(String),
}

/// Who a certificate speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Node(String),
    /// A full admin.
    Admin(String),
    /// An operator that may only read.
    ReadOnly(String),
    Controller,
}

impl Role {
    /// The operator's name and role, for an operator certificate.
    pub fn operator(&self) -> Option<(&str, AdminRole)> {
        match self {
            Role::Admin(n) => Some((n, AdminRole::Admin)),
            Role::ReadOnly(n) => Some((n, AdminRole::ReadOnly)),
            Role::Node(_) | Role::Controller => None,
        }
    }
}

const URN_ADMIN: &str = "urn:outpost:admin:";
const URN_READ_ONLY: &str = "urn:outpost:read-only:";

/// The URI SAN naming operator `name` with `role`.
pub fn operator_urn(name: &str, role: AdminRole) -> String {
    match role {
        AdminRole::Admin => format!("{URN_ADMIN}{name}"),
        AdminRole::ReadOnly => format!("{URN_READ_ONLY}{name}"),
    }
}

/// What the controller learns from a verified peer certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub role: Role,
    /// Hex serial number, the handle for revocation.
    pub serial: String,
    pub not_after_ms: u64,
}

/// A freshly issued certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_der: Vec<u8>,
    pub serial: String,
    pub not_after_ms: u64,
    /// Hex SHA-256 of the certified public key (its raw bits), which
    /// tells a retried enrolment from a new one.
    pub key_sha256: String,
}

/// Hex SHA-256 of a public key's raw bits.
fn key_sha256(key: &impl PublicKeyData) -> String {
    ring::digest::digest(&ring::digest::SHA256, key.der_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The CA: its certificate and signing key.
pub struct Ca {
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

fn millis(t: SystemTime) -> u64 {
    u64::try_from(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(u64::MAX)
}

fn random_serial() -> (SerialNumber, String) {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive INTEGER
    bytes[0] |= 0x01; // no leading zero byte to strip, so the hex form is stable
    let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
    (SerialNumber::from_slice(&bytes), hex)
}

fn leaf_params(
    cn: &str,
    org: &str,
    sans: Vec<SanType>,
    eku: ExtendedKeyUsagePurpose,
    now: SystemTime,
    lifetime: Duration,
) -> (CertificateParams, String, u64) {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, org);
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    // A tenth of the lifetime at most, so short test lifetimes keep their
    // renewal point near two thirds of the real validity.
    params.not_before = to_offset(now - CLOCK_SKEW_ALLOWANCE.min(lifetime / 10));
    let not_after = now + lifetime;
    params.not_after = to_offset(not_after);
    let (serial, hex) = random_serial();
    params.serial_number = Some(serial);
    (params, hex, millis(not_after))
}

fn operator_params(
    name: &str,
    role: AdminRole,
    now: SystemTime,
    lifetime: Duration,
) -> Result<(CertificateParams, String, u64), PkiError> {
    let org = match role {
        AdminRole::Admin => "outpost:admins",
        AdminRole::ReadOnly => "outpost:read-only",
    };
    Ok(leaf_params(
        name,
        org,
        vec![uri(operator_urn(name, role))?],
        ExtendedKeyUsagePurpose::ClientAuth,
        now,
        lifetime,
    ))
}

/// The DNS names and IP addresses a server certificate is for (its URI
/// SAN aside), so a renewal keeps them.
pub fn server_names(cert_der: &[u8]) -> Result<Vec<String>, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    let mut out = Vec::new();
    for name in sans.iter().flat_map(|ext| ext.value.general_names.iter()) {
        match name {
            x509_parser::extensions::GeneralName::DNSName(d) => out.push((*d).to_string()),
            x509_parser::extensions::GeneralName::IPAddress(b) => {
                let ip = match b.len() {
                    4 => <[u8; 4]>::try_from(*b).map(std::net::IpAddr::from).ok(),
                    16 => <[u8; 16]>::try_from(*b).map(std::net::IpAddr::from).ok(),
                    _ => None,
                };
                if let Some(ip) = ip {
                    out.push(ip.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

fn uri(s: String) -> Result<SanType, PkiError> {
    Ok(SanType::URI(s.try_into()?))
}

impl Ca {
    /// Makes a new CA. Returns it with its key in PEM form for storage.
    pub fn generate(cluster_name: &str, now: SystemTime) -> Result<(Ca, String), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("outpost-ca {cluster_name}"));
        dn.push(DnType::OrganizationName, "outpost");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = to_offset(now - CLOCK_SKEW_ALLOWANCE);
        params.not_after = to_offset(now + CA_LIFETIME);
        params.serial_number = Some(random_serial().0);
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        let ca = Ca {
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        };
        Ok((ca, key_pem))
    }

    /// Loads a CA from its DER certificate and PEM key.
    pub fn load(cert_der: &[u8], key_pem: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let cert_der = CertificateDer::from(cert_der.to_vec());
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)?;
        Ok(Ca { cert_der, issuer })
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// `sha256:HEX` pin of the CA certificate.
    pub fn hash(&self) -> String {
        outpost_proto::link::cert_hash(&self.cert_der)
    }

    /// Issues the controller's server certificate for the given DNS names and
    /// IP addresses. Returns the certificate and its new key in PEM.
    pub fn issue_server(
        &self,
        sans: &[String],
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<(Issued, String), PkiError> {
        let key = KeyPair::generate()?;
        let mut san_types = vec![uri("urn:outpost:controller".into())?];
        for s in sans {
            san_types.push(match s.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(s.clone().try_into()?),
            });
        }
        let (params, serial, not_after_ms) = leaf_params(
            "outpost-controller",
            "outpost",
            san_types,
            ExtendedKeyUsagePurpose::ServerAuth,
            now,
            lifetime,
        );
        self.sign_new_key(key, &params, serial, not_after_ms)
    }

    /// Signs `params` for a key generated here; returns it with the key (PEM).
    fn sign_new_key(
        &self,
        key: KeyPair,
        params: &CertificateParams,
        serial: String,
        not_after_ms: u64,
    ) -> Result<(Issued, String), PkiError> {
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((
            Issued {
                cert_der: cert.der().to_vec(),
                serial,
                not_after_ms,
                key_sha256: key_sha256(&key),
            },
            key.serialize_pem(),
        ))
    }

    /// Issues an admin client certificate and key (PEM) for `name`.
    pub fn issue_admin(
        &self,
        name: &str,
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<(Issued, String), PkiError> {
        let key = KeyPair::generate()?;
        let params = operator_params(name, AdminRole::Admin, now, lifetime)?;
        self.sign_new_key(key, &params.0, params.1, params.2)
    }

    /// Signs an operator certificate for `name` with `role` from a CSR; as
    /// with nodes, only the CSR's key is used (its signature must verify).
    pub fn sign_operator_csr(
        &self,
        name: &str,
        role: AdminRole,
        csr_der: &[u8],
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<Issued, PkiError> {
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| PkiError::BadCsr(e.to_string()))?;
        let (params, serial, not_after_ms) = operator_params(name, role, now, lifetime)?;
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(Issued {
            cert_der: cert.der().to_vec(),
            serial,
            not_after_ms,
            key_sha256: key_sha256(&csr.public_key),
        })
    }

    /// Signs a node certificate for `node` from an agent's CSR. The CSR's
    /// signature must verify (proof the agent holds the key); everything else
    /// in it is ignored.
    pub fn sign_node_csr(
        &self,
        node: &str,
        csr_der: &[u8],
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<Issued, PkiError> {
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| PkiError::BadCsr(e.to_string()))?;
        let (params, serial, not_after_ms) = leaf_params(
            node,
            "outpost:nodes",
            vec![uri(format!("urn:outpost:node:{node}"))?],
            ExtendedKeyUsagePurpose::ClientAuth,
            now,
            lifetime,
        );
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(Issued {
            cert_der: cert.der().to_vec(),
            serial,
            not_after_ms,
            key_sha256: key_sha256(&csr.public_key),
        })
    }
}

/// Reads the identity from a certificate TLS has already verified.
pub fn identity(cert_der: &[u8]) -> Result<PeerIdentity, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    let serial = cert
        .tbs_certificate
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let not_after_ms = u64::try_from(cert.validity().not_after.timestamp())
        .unwrap_or(0)
        .saturating_mul(1000);
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    let mut role = None;
    for name in sans.iter().flat_map(|ext| ext.value.general_names.iter()) {
        if let x509_parser::extensions::GeneralName::URI(u) = name {
            role = if let Some(n) = u.strip_prefix("urn:outpost:node:") {
                Some(Role::Node(n.to_string()))
            } else if let Some(n) = u.strip_prefix(URN_ADMIN) {
                Some(Role::Admin(n.to_string()))
            } else if let Some(n) = u.strip_prefix(URN_READ_ONLY) {
                Some(Role::ReadOnly(n.to_string()))
            } else if *u == "urn:outpost:controller" {
                Some(Role::Controller)
            } else {
                continue;
            };
            break;
        }
    }
    let role = role.ok_or_else(|| {
        PkiError::BadCertificate("certificate names no Outpost identity (urn:outpost:...)".into())
    })?;
    Ok(PeerIdentity {
        role,
        serial,
        not_after_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_for(cn: &str) -> (KeyPair, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        let der = p.serialize_request(&key).unwrap().der().to_vec();
        (key, der)
    }

    #[test]
    fn node_certificate_overwrites_everything_in_the_csr() {
        let now = SystemTime::now();
        let (ca, _) = Ca::generate("test", now).unwrap();
        let (_key, csr) = csr_for("admin");
        let issued = ca
            .sign_node_csr("edge-1", &csr, now, Duration::from_secs(3600))
            .unwrap();
        let id = identity(&issued.cert_der).unwrap();
        assert_eq!(id.role, Role::Node("edge-1".into()));
        assert_eq!(id.serial, issued.serial);
        let (_, cert) = x509_parser::parse_x509_certificate(&issued.cert_der).unwrap();
        assert!(!cert.is_ca(), "CA flag from CSR must not survive");
        let sans = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(sans.value.general_names.len(), 1, "only our URI SAN");
        let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(life, 3600 + 360);
    }

    #[test]
    fn tampered_csr_is_rejected() {
        let now = SystemTime::now();
        let (ca, _) = Ca::generate("test", now).unwrap();
        let (_key, mut csr) = csr_for("x");
        let n = csr.len();
        csr[n - 5] ^= 0xff; // inside the signature
        assert!(matches!(
            ca.sign_node_csr("edge-1", &csr, now, Duration::from_secs(60)),
            Err(PkiError::BadCsr(_))
        ));
        assert!(ca
            .sign_node_csr("edge-1", b"not a csr", now, Duration::from_secs(60))
            .is_err());
    }

    #[test]
    fn operator_certificates_carry_their_role_and_nothing_from_the_csr() {
        let now = SystemTime::now();
        let (ca, _) = Ca::generate("test", now).unwrap();
        let (_key, csr) = csr_for("admin");
        let viewer = ca
            .sign_operator_csr(
                "grafana",
                AdminRole::ReadOnly,
                &csr,
                now,
                Duration::from_secs(60),
            )
            .unwrap();
        let id = identity(&viewer.cert_der).unwrap();
        assert_eq!(id.role, Role::ReadOnly("grafana".into()));
        assert_eq!(id.role.operator(), Some(("grafana", AdminRole::ReadOnly)));
        assert_eq!(id.serial, viewer.serial);
        let (_, cert) = x509_parser::parse_x509_certificate(&viewer.cert_der).unwrap();
        assert!(!cert.is_ca());
        let full = ca
            .sign_operator_csr("ops", AdminRole::Admin, &csr, now, Duration::from_secs(60))
            .unwrap();
        // The form `init` writes, so older controllers take it as before.
        assert_eq!(
            identity(&full.cert_der).unwrap().role,
            Role::Admin("ops".into())
        );
        assert!(ca
            .sign_operator_csr(
                "ops",
                AdminRole::Admin,
                b"junk",
                now,
                Duration::from_secs(60)
            )
            .is_err());
    }

    #[test]
    fn server_names_survive_a_renewal() {
        let now = SystemTime::now();
        let (ca, _) = Ca::generate("test", now).unwrap();
        let sans = vec![
            "localhost".to_string(),
            "127.0.0.1".into(),
            "::1".into(),
            "ctl.example".into(),
        ];
        let (server, _) = ca
            .issue_server(&sans, now, Duration::from_secs(60))
            .unwrap();
        assert_eq!(server_names(&server.cert_der).unwrap(), sans);
        assert_eq!(identity(&server.cert_der).unwrap().role, Role::Controller);
    }

    #[test]
    fn ca_reloads_and_keeps_signing() {
        let now = SystemTime::now();
        let (ca, key_pem) = Ca::generate("test", now).unwrap();
        let again = Ca::load(ca.cert_der(), &key_pem).unwrap();
        assert_eq!(again.hash(), ca.hash());
        let (admin, _) = again
            .issue_admin("ops", now, Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            identity(&admin.cert_der).unwrap().role,
            Role::Admin("ops".into())
        );
    }
}
