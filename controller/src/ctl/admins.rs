//! Operator certificates: `admin list` and its JSON, and the outpostctl
//! config a new certificate is written into.

use super::{rfc3339, table};
use crate::admins::Status;
use crate::clientconfig::{cert_pem, ClientConfig};
use outpost_proto::AdminInfo;
use serde_json::{json, Value};

pub fn admin_json(a: &AdminInfo, now_ms: u64) -> Value {
    json!({
        "apiVersion": "outpost.dev/v1",
        "kind": "AdminCertificate",
        "metadata": {"name": a.name, "creationTimestamp": rfc3339(a.issued_ms)},
        "spec": {"role": a.role.as_str(), "issuedBy": a.issued_by},
        "status": {
            "serial": a.serial,
            "notAfter": rfc3339(a.not_after_ms),
            "state": Status::of(a, now_ms).as_str(),
            "revoked": a.revoked_ms.map(rfc3339),
        },
    })
}

/// NAME ROLE SERIAL EXPIRES STATUS ISSUED-BY.
pub fn admins_table(admins: &[AdminInfo], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = admins
        .iter()
        .map(|a| {
            vec![
                a.name.clone(),
                a.role.to_string(),
                a.serial.clone(),
                rfc3339(a.not_after_ms),
                Status::of(a, now_ms).as_str().to_string(),
                a.issued_by.clone(),
            ]
        })
        .collect();
    table(
        &["NAME", "ROLE", "SERIAL", "EXPIRES", "STATUS", "ISSUED-BY"],
        &rows,
    )
}

/// A new key and a certificate signing request for it (the controller
/// keeps only the public key; subject and names are its own).
pub fn new_key_and_csr() -> Result<(String, Vec<u8>), rcgen::Error> {
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)?
        .der()
        .to_vec();
    Ok((key.serialize_pem(), csr))
}

/// The outpostctl config of a certificate just issued: `base`'s
/// controller and CA, the new certificate and key.
pub fn config_for(base: &ClientConfig, cert_der: &[u8], key_pem: String) -> ClientConfig {
    ClientConfig {
        controller: base.controller.clone(),
        server_name: base.server_name.clone(),
        ca: base.ca.clone(),
        cert: cert_pem(cert_der),
        key: key_pem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_proto::AdminRole;

    #[test]
    fn listing_shows_state_and_role() {
        let now = 1_700_000_000_000;
        let a = AdminInfo {
            name: "grafana".into(),
            role: AdminRole::ReadOnly,
            serial: "7f01".into(),
            issued_ms: now - 1000,
            not_after_ms: now + 1000,
            issued_by: "admin".into(),
            revoked_ms: None,
        };
        let revoked = AdminInfo {
            revoked_ms: Some(now),
            serial: "7f02".into(),
            ..a.clone()
        };
        let t = admins_table(&[a.clone(), revoked], now);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{t}");
        assert!(
            lines[0].contains("ROLE")
                && lines[0].contains("SERIAL")
                && lines[0].contains("EXPIRES")
                && lines[0].contains("STATUS")
        );
        assert!(
            lines[1].contains("read-only") && lines[1].contains("Active"),
            "{t}"
        );
        assert!(
            lines[2].contains("7f02") && lines[2].contains("Revoked"),
            "{t}"
        );
        let j = admin_json(&a, now + 2000);
        assert_eq!(j["status"]["state"], "Expired");
        assert_eq!(j["spec"]["role"], "read-only");
    }

    #[test]
    fn a_csr_is_signed_into_a_working_config() {
        let now = std::time::SystemTime::now();
        let (ca, _) = crate::pki::Ca::generate("t", now).unwrap();
        let (key, csr) = new_key_and_csr().unwrap();
        let issued = ca
            .sign_operator_csr(
                "dash",
                AdminRole::ReadOnly,
                &csr,
                now,
                std::time::Duration::from_secs(60),
            )
            .unwrap();
        let base = ClientConfig {
            controller: "127.0.0.1:7443".into(),
            server_name: "localhost".into(),
            ca: cert_pem(ca.cert_der()),
            cert: String::new(),
            key: String::new(),
        };
        let cfg = config_for(&base, &issued.cert_der, key);
        assert!(crate::client::quic_config(&cfg).is_ok());
        assert_eq!(cfg.controller, base.controller);
    }
}
