//! Operator certificates: which certificates may call the admin API, with
//! which role, and which are no longer accepted.
//!
//! Every operator certificate the controller signs (`admin create`,
//! `admin renew`, and the first one `init` writes) is recorded in the store
//! under `/outpost/admins/{serial}` with its name, role, expiry and issuer.
//! A connection with an operator certificate is admitted only if its
//! record is there, unrevoked, and names the same operator and role as the
//! certificate's URI SAN (the role is in both, so neither a stale record
//! nor a forged name can widen it). A full-admin certificate without a
//! record predates the records (a cluster initialised by an older
//! controller): it is admitted and recorded on first use, so it can be
//! listed and revoked like the others. Read-only certificates are new, so
//! one without a record is refused.
//!
//! [`AdminBook`] holds the records and decides (create, revoke, renew,
//! admit) without I/O, taking `now_ms`; [`authorize`] decides per request
//! from the role alone. The controller methods at the end write the
//! decisions through the ordered writer and keep the book in step.

use crate::cluster::{err, now_ms, Controller};
use crate::store::Op;
use outpost_proto::units::rfc3339;
use outpost_proto::{AdminInfo, AdminRequest, AdminRole, ErrorCode, ErrorMsg};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// Store prefix of the records.
pub const PREFIX: &str = "/outpost/admins/";

/// Shortest lifetime `--valid-for` takes: anything shorter expires before
/// it is useful (and before clocks a few seconds apart agree on it).
pub const MIN_VALIDITY: Duration = Duration::from_secs(60);
/// Longest: the CA's own ten years.
pub const MAX_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Default lifetime of a new operator certificate: a year, as kubeadm's
/// client certificates.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Most active operator certificates at once; every admission looks the
/// serial up in memory, and no real cluster has this many operators.
pub const MAX_ACTIVE: usize = 1000;
/// A revoked or replaced certificate's record is dropped this long after
/// the certificate expired: TLS refuses it on its own by then (a month
/// leaves room for a controller clock far behind).
pub const KEEP_EXPIRED: Duration = Duration::from_secs(30 * 24 * 3600);

/// What the issuer of the first certificate is recorded as.
pub const ISSUED_BY_INIT: &str = "init";
/// ... and a certificate recorded on first use.
pub const ISSUED_BY_UNKNOWN: &str = "(before records)";

/// Store key of a record.
pub fn key(serial: &str) -> String {
    format!("{PREFIX}{serial}")
}

/// The record of a certificate as the store keeps it.
pub fn record_op(info: &AdminInfo) -> Result<Op, ErrorMsg> {
    let bytes = serde_json::to_vec(info).map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
    Ok(Op::put(key(&info.serial), bytes))
}

/// `Active`, `Revoked` or `Expired`, as `admin list` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Revoked,
    Expired,
}

impl Status {
    pub fn of(info: &AdminInfo, now_ms: u64) -> Status {
        if info.revoked_ms.is_some() {
            Status::Revoked
        } else if now_ms >= info.not_after_ms {
            Status::Expired
        } else {
            Status::Active
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "Active",
            Status::Revoked => "Revoked",
            Status::Expired => "Expired",
        }
    }
}

/// How a certificate that passed TLS is admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Its record is current.
    Known,
    /// A full-admin certificate from before records: write this record,
    /// then admit it.
    Record(AdminInfo),
}

/// A renewal decided: the record replaced and the new certificate's
/// lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewPlan {
    pub old: AdminInfo,
    pub lifetime: Duration,
}

/// The recorded operator certificates, by serial.
#[derive(Debug, Default, Clone)]
pub struct AdminBook {
    certs: BTreeMap<String, AdminInfo>,
}

fn validity(secs: u64) -> Result<Duration, ErrorMsg> {
    let d = Duration::from_secs(secs);
    if d < MIN_VALIDITY || d > MAX_VALIDITY {
        return Err(err(
            ErrorCode::InvalidRequest,
            format!(
                "--valid-for {secs}s is out of range: between {}s and {}s (10 years)",
                MIN_VALIDITY.as_secs(),
                MAX_VALIDITY.as_secs()
            ),
        ));
    }
    Ok(d)
}

fn who(info: &AdminInfo) -> String {
    format!(
        "{} (role {}, serial {}, expires {})",
        info.name,
        info.role,
        info.serial,
        rfc3339(info.not_after_ms)
    )
}

impl AdminBook {
    pub fn load(records: impl IntoIterator<Item = AdminInfo>) -> AdminBook {
        AdminBook {
            certs: records.into_iter().map(|r| (r.serial.clone(), r)).collect(),
        }
    }

    pub fn get(&self, serial: &str) -> Option<&AdminInfo> {
        self.certs.get(serial)
    }

    /// Every record, by name then issue time.
    pub fn list(&self) -> Vec<AdminInfo> {
        let mut v: Vec<AdminInfo> = self.certs.values().cloned().collect();
        v.sort_by(|a, b| (&a.name, a.issued_ms).cmp(&(&b.name, b.issued_ms)));
        v
    }

    /// Takes a record the store now holds.
    pub fn put(&mut self, info: AdminInfo) {
        self.certs.insert(info.serial.clone(), info);
    }

    pub fn remove(&mut self, serial: &str) {
        self.certs.remove(serial);
    }

    fn active<'a>(&'a self, name: &'a str, now_ms: u64) -> impl Iterator<Item = &'a AdminInfo> {
        self.certs
            .values()
            .filter(move |c| c.name == name && Status::of(c, now_ms) == Status::Active)
    }

    /// Whether a certificate TLS accepted may call: `name` and `role` are
    /// what its URI SAN says.
    pub fn admit(
        &self,
        name: &str,
        role: AdminRole,
        serial: &str,
        not_after_ms: u64,
        now_ms: u64,
    ) -> Result<Admission, ErrorMsg> {
        match self.certs.get(serial) {
            Some(rec) => {
                if let Some(at) = rec.revoked_ms {
                    return Err(err(
                        ErrorCode::Unauthenticated,
                        format!(
                            "the certificate of {} {name} (serial {serial}) was revoked at {}; \
                             ask an admin for a new one (`outpostctl admin create NAME`), or use a current config (--config / OUTPOST_CONFIG)",
                            role,
                            rfc3339(at)
                        ),
                    ));
                }
                if rec.name != name || rec.role != role {
                    return Err(err(
                        ErrorCode::PermissionDenied,
                        format!(
                            "the certificate says {role} {name}, but serial {serial} was issued to {} {}; refused",
                            rec.role, rec.name
                        ),
                    ));
                }
                Ok(Admission::Known)
            }
            None if role == AdminRole::Admin => Ok(Admission::Record(AdminInfo {
                name: name.to_string(),
                role,
                serial: serial.to_string(),
                issued_ms: now_ms,
                not_after_ms,
                issued_by: ISSUED_BY_UNKNOWN.into(),
                revoked_ms: None,
            })),
            None => Err(err(
                ErrorCode::Unauthenticated,
                format!(
                    "the {role} certificate {name} (serial {serial}) is not one this controller issued; \
                     ask an admin for a new one (`outpostctl admin create {name} --role {role}`)"
                ),
            )),
        }
    }

    /// Checks a new certificate for `name`: a valid name, a lifetime in
    /// range, no active certificate of that name, room for one more.
    /// Returns the lifetime.
    pub fn check_create(
        &self,
        name: &str,
        valid_for_secs: u64,
        now_ms: u64,
    ) -> Result<Duration, ErrorMsg> {
        outpost_proto::pod::validate_dns_label("admin name", name)
            .map_err(|e| err(ErrorCode::InvalidRequest, e))?;
        let lifetime = validity(valid_for_secs)?;
        if let Some(dup) = self.active(name, now_ms).next() {
            return Err(err(
                ErrorCode::AlreadyExists,
                format!(
                    "an active certificate named {} already exists; pick another name, \
                     `outpostctl admin renew {name}` for a new certificate of it, or `outpostctl admin revoke {name}` first",
                    who(dup)
                ),
            ));
        }
        let active = self
            .certs
            .values()
            .filter(|c| Status::of(c, now_ms) == Status::Active)
            .count();
        if active >= MAX_ACTIVE {
            return Err(err(
                ErrorCode::InvalidRequest,
                format!("{active} operator certificates are active, the most a cluster keeps; revoke unused ones first"),
            ));
        }
        Ok(lifetime)
    }

    /// The records revoking `name` writes (every active certificate of
    /// it). The last active full admin is never revoked: nobody could
    /// issue, renew or revoke a certificate after it, since the CA key
    /// never leaves the controller.
    pub fn plan_revoke(&self, name: &str, now_ms: u64) -> Result<Vec<AdminInfo>, ErrorMsg> {
        let hit: Vec<&AdminInfo> = self.active(name, now_ms).collect();
        if hit.is_empty() {
            let known = self.certs.values().any(|c| c.name == name);
            return Err(err(
                ErrorCode::NotFound,
                if known {
                    format!("admin certificate {name:?} has no active certificate (already revoked or expired)")
                } else {
                    format!(
                        "admin certificate {name:?} not found (`outpostctl admin list` shows them)"
                    )
                },
            ));
        }
        if hit.iter().any(|c| c.role == AdminRole::Admin) {
            let others = self
                .certs
                .values()
                .filter(|c| {
                    c.name != name
                        && c.role == AdminRole::Admin
                        && Status::of(c, now_ms) == Status::Active
                })
                .count();
            if others == 0 {
                return Err(err(
                    ErrorCode::InvalidRequest,
                    format!(
                        "refusing to revoke {name}: it is the last active full admin, and without one nobody could create, \
                         renew or revoke certificates again (the CA key never leaves the controller); \
                         create another admin first (`outpostctl admin create NAME`), then revoke {name}"
                    ),
                ));
            }
        }
        Ok(hit
            .into_iter()
            .map(|c| AdminInfo {
                revoked_ms: Some(now_ms),
                ..c.clone()
            })
            .collect())
    }

    /// What renewing `name` (or, with `None`, the caller's own certificate
    /// `caller_serial`) replaces, and for how long the new one is valid:
    /// `valid_for_secs`, or as long as the old one was issued for.
    pub fn plan_renew(
        &self,
        name: Option<&str>,
        caller_serial: &str,
        valid_for_secs: Option<u64>,
        now_ms: u64,
    ) -> Result<RenewPlan, ErrorMsg> {
        let old = match name {
            None => self.certs.get(caller_serial).cloned().ok_or_else(|| {
                err(
                    ErrorCode::NotFound,
                    "this connection's certificate has no record; name the certificate to renew",
                )
            })?,
            Some(n) => self
                .active(n, now_ms)
                .max_by_key(|c| c.issued_ms)
                .cloned()
                .ok_or_else(|| {
                    err(
                        ErrorCode::NotFound,
                        format!("admin certificate {n:?} has no active certificate to renew; `outpostctl admin create {n}` issues a new one"),
                    )
                })?,
        };
        if Status::of(&old, now_ms) != Status::Active {
            return Err(err(
                ErrorCode::InvalidRequest,
                format!(
                    "the certificate {} is {}",
                    who(&old),
                    Status::of(&old, now_ms).as_str().to_lowercase()
                ),
            ));
        }
        let lifetime = match valid_for_secs {
            Some(s) => validity(s)?,
            None => Duration::from_millis(old.not_after_ms.saturating_sub(old.issued_ms))
                .clamp(MIN_VALIDITY, MAX_VALIDITY),
        };
        Ok(RenewPlan { old, lifetime })
    }

    /// Records of certificates that expired over [`KEEP_EXPIRED`] ago.
    pub fn expired_long_ago(&self, now_ms: u64) -> Vec<String> {
        let keep = u64::try_from(KEEP_EXPIRED.as_millis()).unwrap_or(u64::MAX);
        self.certs
            .values()
            .filter(|c| c.not_after_ms.saturating_add(keep) <= now_ms)
            .map(|c| c.serial.clone())
            .collect()
    }
}

/// Whether `req` only reads. Exhaustive on purpose: a new request must be
/// classed here before it compiles.
pub fn is_read(req: &AdminRequest) -> bool {
    match req {
        AdminRequest::ListNodes
        | AdminRequest::GetNode { .. }
        | AdminRequest::ListEvents { .. }
        | AdminRequest::ListEventSeries { .. }
        | AdminRequest::ListTokens
        | AdminRequest::ListPods { .. }
        | AdminRequest::GetPod { .. }
        | AdminRequest::Logs(_)
        | AdminRequest::NodeUsage
        | AdminRequest::Get(_)
        | AdminRequest::List(_)
        | AdminRequest::Watch(_)
        | AdminRequest::PodUsage
        | AdminRequest::ListAdmins => true,
        AdminRequest::CreateToken { .. }
        | AdminRequest::RevokeToken { .. }
        | AdminRequest::DeleteNode { .. }
        | AdminRequest::ApplyPod { .. }
        | AdminRequest::DeletePod { .. }
        | AdminRequest::PushImage { .. }
        | AdminRequest::Apply(_)
        | AdminRequest::Delete(_)
        | AdminRequest::Scale(_)
        | AdminRequest::Cordon { .. }
        | AdminRequest::Evict(_)
        | AdminRequest::DeleteWithGrace { .. }
        | AdminRequest::CreateAdmin(_)
        | AdminRequest::RevokeAdmin { .. }
        | AdminRequest::RenewAdmin(_)
        | AdminRequest::RenewServerCert { .. } => false,
    }
}

/// What a request does, for a refusal: `apply`, `delete node`.
pub fn verb(req: &AdminRequest) -> &'static str {
    match req {
        AdminRequest::CreateToken { .. } => "token create",
        AdminRequest::RevokeToken { .. } => "token revoke",
        AdminRequest::DeleteNode { .. } | AdminRequest::DeletePod { .. } => "delete",
        AdminRequest::ApplyPod { .. } | AdminRequest::Apply(_) => "apply",
        AdminRequest::PushImage { .. } => "image push",
        AdminRequest::Delete(_) | AdminRequest::DeleteWithGrace { .. } => "delete",
        AdminRequest::Scale(_) => "scale",
        AdminRequest::Cordon { .. } => "cordon/uncordon",
        AdminRequest::Evict(_) => "evict (drain)",
        AdminRequest::CreateAdmin(_) => "admin create",
        AdminRequest::RevokeAdmin { .. } => "admin revoke",
        AdminRequest::RenewAdmin(_) => "admin renew",
        AdminRequest::RenewServerCert { .. } => "admin renew-server-cert",
        _ => "this request",
    }
}

/// Whether operator `name` with `role` may make `req`: admins anything,
/// read-only operators reads only (Kubernetes' `view` role).
pub fn authorize(name: &str, role: AdminRole, req: &AdminRequest) -> Result<(), ErrorMsg> {
    match role {
        AdminRole::Admin => Ok(()),
        AdminRole::ReadOnly if is_read(req) => Ok(()),
        AdminRole::ReadOnly => Err(err(
            ErrorCode::PermissionDenied,
            format!(
                "{name} has the read-only role, which may get, describe, list, watch and read logs, events and usage, \
                 but not {}: it changes the cluster; use a full admin's config (--config / OUTPOST_CONFIG), \
                 or ask an admin for one (`outpostctl admin create NAME --role admin`)",
                verb(req)
            ),
        )),
    }
}

/// Who is calling, as the server admitted them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: AdminRole,
    pub serial: String,
}

fn internal(e: impl std::fmt::Display) -> ErrorMsg {
    err(ErrorCode::Internal, e.to_string())
}

impl Controller {
    /// Admits an operator certificate (recording one from before records).
    pub async fn admit_operator(
        &self,
        name: &str,
        role: AdminRole,
        serial: &str,
        not_after_ms: u64,
    ) -> Result<(), ErrorMsg> {
        let admission = self
            .admins_lock()
            .admit(name, role, serial, not_after_ms, now_ms())?;
        if let Admission::Record(info) = admission {
            // Serialised with the other writes to the book: a revoke of
            // this name must see this record.
            let _one = self.admin_lock.lock().await;
            if self.admins_lock().get(serial).is_none() {
                self.writer()
                    .commit(vec![record_op(&info)?])
                    .await
                    .map_err(internal)?;
                tracing::info!(admin = %name, %serial, "admin certificate from before records recorded");
                self.admins_lock().put(info);
            }
        }
        Ok(())
    }

    /// Checks, for each call, that the caller's certificate is still
    /// current (revoked since the connection was opened?).
    pub fn still_admitted(&self, caller: &Caller) -> Result<(), ErrorMsg> {
        match self.admins_lock().admit(
            &caller.name,
            caller.role,
            &caller.serial,
            u64::MAX,
            now_ms(),
        )? {
            Admission::Known => Ok(()),
            Admission::Record(_) => Err(err(
                ErrorCode::Unauthenticated,
                "this certificate's record is gone; reconnect",
            )),
        }
    }

    pub fn list_admins(&self) -> Vec<AdminInfo> {
        self.admins_lock().list()
    }

    /// `admin create`: signs the caller's CSR for a new operator.
    pub async fn create_admin(
        &self,
        caller: &Caller,
        req: outpost_proto::AdminCertRequest,
    ) -> Result<outpost_proto::AdminIssued, ErrorMsg> {
        let _one = self.admin_lock.lock().await;
        let now = now_ms();
        let lifetime = self
            .admins_lock()
            .check_create(&req.name, req.valid_for_secs, now)?;
        let issued = self
            .ca()
            .sign_operator_csr(
                &req.name,
                req.role,
                &req.csr_der,
                SystemTime::now(),
                lifetime,
            )
            .map_err(|e| err(ErrorCode::InvalidRequest, e.to_string()))?;
        let info = AdminInfo {
            name: req.name.clone(),
            role: req.role,
            serial: issued.serial.clone(),
            issued_ms: now,
            not_after_ms: issued.not_after_ms,
            issued_by: caller.name.clone(),
            revoked_ms: None,
        };
        let mut ops = vec![record_op(&info)?];
        let pruned = self.admins_lock().expired_long_ago(now);
        ops.extend(pruned.iter().map(|s| Op::delete(key(s))));
        self.writer().commit(ops).await.map_err(internal)?;
        {
            let mut book = self.admins_lock();
            for s in &pruned {
                book.remove(s);
            }
            book.put(info.clone());
        }
        self.event(
            outpost_proto::EventType::Normal,
            "AdminCertificateIssued",
            format!("admin/{}", info.name),
            format!(
                "{} certificate {} (serial {}) issued by {}, expires {}",
                info.role,
                info.name,
                info.serial,
                caller.name,
                rfc3339(info.not_after_ms)
            ),
        )
        .await;
        Ok(outpost_proto::AdminIssued {
            info,
            cert_der: issued.cert_der,
        })
    }

    /// `admin revoke`: returns the message and the serials revoked (whose
    /// open connections the server closes).
    pub async fn revoke_admin(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<(String, Vec<String>), ErrorMsg> {
        let _one = self.admin_lock.lock().await;
        let revoked = self.admins_lock().plan_revoke(name, now_ms())?;
        let ops = revoked
            .iter()
            .map(record_op)
            .collect::<Result<Vec<_>, _>>()?;
        self.writer().commit(ops).await.map_err(internal)?;
        let serials: Vec<String> = revoked.iter().map(|r| r.serial.clone()).collect();
        {
            let mut book = self.admins_lock();
            for r in revoked {
                book.put(r);
            }
        }
        self.event(
            outpost_proto::EventType::Normal,
            "AdminCertificateRevoked",
            format!("admin/{name}"),
            format!(
                "certificate {name} (serial {}) revoked by {}",
                serials.join(", "),
                caller.name
            ),
        )
        .await;
        Ok((
            format!(
                "admin certificate {name} revoked (serial {}); it is refused from now on",
                serials.join(", ")
            ),
            serials,
        ))
    }

    /// `admin renew`: a new certificate for the same name and role; the
    /// old one is revoked in the same write. Returns the new certificate
    /// and the serial replaced.
    pub async fn renew_admin(
        &self,
        caller: &Caller,
        req: outpost_proto::AdminRenewRequest,
    ) -> Result<(outpost_proto::AdminIssued, String), ErrorMsg> {
        let _one = self.admin_lock.lock().await;
        let now = now_ms();
        let plan = self.admins_lock().plan_renew(
            req.name.as_deref(),
            &caller.serial,
            req.valid_for_secs,
            now,
        )?;
        let old = plan.old;
        let issued = self
            .ca()
            .sign_operator_csr(
                &old.name,
                old.role,
                &req.csr_der,
                SystemTime::now(),
                plan.lifetime,
            )
            .map_err(|e| err(ErrorCode::InvalidRequest, e.to_string()))?;
        let info = AdminInfo {
            name: old.name.clone(),
            role: old.role,
            serial: issued.serial.clone(),
            issued_ms: now,
            not_after_ms: issued.not_after_ms,
            issued_by: caller.name.clone(),
            revoked_ms: None,
        };
        let replaced = AdminInfo {
            revoked_ms: Some(now),
            ..old.clone()
        };
        let mut ops = vec![record_op(&info)?, record_op(&replaced)?];
        let pruned = self.admins_lock().expired_long_ago(now);
        ops.extend(pruned.iter().map(|s| Op::delete(key(s))));
        self.writer().commit(ops).await.map_err(internal)?;
        {
            let mut book = self.admins_lock();
            for s in &pruned {
                book.remove(s);
            }
            book.put(replaced);
            book.put(info.clone());
        }
        self.event(
            outpost_proto::EventType::Normal,
            "AdminCertificateRenewed",
            format!("admin/{}", info.name),
            format!(
                "certificate {} renewed by {}: serial {} replaces {}, expires {}",
                info.name,
                caller.name,
                info.serial,
                old.serial,
                rfc3339(info.not_after_ms)
            ),
        )
        .await;
        Ok((
            outpost_proto::AdminIssued {
                info,
                cert_der: issued.cert_der,
            },
            old.serial,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_proto::{
        AdminCertRequest, AdminRenewRequest, ApplyRequest, DeleteRequest, EvictRequest,
        ListRequest, LogsRequest, ObjectRef, Propagation, ScaleRequest, WatchRequest,
    };
    use proptest::prelude::*;

    const DAY: u64 = 86_400_000;

    fn cert(name: &str, role: AdminRole, serial: &str, now: u64) -> AdminInfo {
        AdminInfo {
            name: name.into(),
            role,
            serial: serial.into(),
            issued_ms: now,
            not_after_ms: now + 365 * DAY,
            issued_by: "admin".into(),
            revoked_ms: None,
        }
    }

    #[test]
    fn admission_follows_the_record() {
        let now = 1_000 * DAY;
        let mut book = AdminBook::load([
            cert("admin", AdminRole::Admin, "01", now),
            cert("grafana", AdminRole::ReadOnly, "02", now),
        ]);
        assert_eq!(
            book.admit("grafana", AdminRole::ReadOnly, "02", 0, now),
            Ok(Admission::Known)
        );
        // The certificate's role and name must be the record's.
        let e = book
            .admit("grafana", AdminRole::Admin, "02", 0, now)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::PermissionDenied);
        assert!(
            e.message.contains("issued to read-only grafana"),
            "{}",
            e.message
        );
        // An unknown read-only certificate is refused; an unknown full
        // admin one predates records and is recorded.
        let e = book
            .admit("x", AdminRole::ReadOnly, "03", 0, now)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthenticated);
        match book.admit("old", AdminRole::Admin, "04", now + DAY, now) {
            Ok(Admission::Record(r)) => {
                assert_eq!(
                    (r.name.as_str(), r.role, r.not_after_ms),
                    ("old", AdminRole::Admin, now + DAY)
                );
                assert_eq!(r.issued_by, ISSUED_BY_UNKNOWN);
            }
            other => panic!("{other:?}"),
        }
        let revoked = book.plan_revoke("grafana", now + 1).unwrap();
        for r in revoked {
            book.put(r);
        }
        let e = book
            .admit("grafana", AdminRole::ReadOnly, "02", 0, now + 2)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthenticated);
        assert!(e.message.contains("was revoked at"), "{}", e.message);
    }

    #[test]
    fn duplicate_active_names_and_bad_lifetimes_are_refused() {
        let now = 1_000 * DAY;
        let mut book = AdminBook::load([cert("ops", AdminRole::Admin, "01", now)]);
        let e = book.check_create("ops", 3600, now).unwrap_err();
        assert_eq!(e.code, ErrorCode::AlreadyExists);
        assert!(e.message.contains("admin renew ops"), "{}", e.message);
        assert_eq!(
            book.check_create("dash", 3600, now),
            Ok(Duration::from_secs(3600))
        );
        assert!(book.check_create("Dash", 3600, now).is_err());
        assert!(book
            .check_create("dash", 10, now)
            .unwrap_err()
            .message
            .contains("between 60s"));
        assert!(book.check_create("dash", u64::MAX, now).is_err());
        // Once expired, the name is free again.
        let mut old = cert("gone", AdminRole::ReadOnly, "02", now - 400 * DAY);
        old.not_after_ms = now - DAY;
        book.put(old);
        assert!(book.check_create("gone", 3600, now).is_ok());
        assert_eq!(book.expired_long_ago(now), Vec::<String>::new());
        assert_eq!(
            book.expired_long_ago(now + 30 * DAY),
            vec!["02".to_string()]
        );
    }

    #[test]
    fn the_last_full_admin_is_never_revoked() {
        let now = 1_000 * DAY;
        let mut book = AdminBook::load([
            cert("admin", AdminRole::Admin, "01", now),
            cert("viewer", AdminRole::ReadOnly, "02", now),
        ]);
        let e = book.plan_revoke("admin", now).unwrap_err();
        assert!(
            e.message.contains("last active full admin"),
            "{}",
            e.message
        );
        // Read-only operators do not count as the admin that remains.
        assert!(book.plan_revoke("viewer", now).is_ok());
        // An expired admin does not count either.
        let mut expired = cert("old", AdminRole::Admin, "03", now - 400 * DAY);
        expired.not_after_ms = now - 1;
        book.put(expired);
        assert!(book.plan_revoke("admin", now).is_err());
        book.put(cert("second", AdminRole::Admin, "04", now));
        let revoked = book.plan_revoke("admin", now).unwrap();
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].revoked_ms, Some(now));
        assert_eq!(
            book.plan_revoke("nobody", now).unwrap_err().code,
            ErrorCode::NotFound
        );
    }

    #[test]
    fn renewal_keeps_name_role_and_lifetime() {
        let now = 1_000 * DAY;
        let mut viewer = cert("viewer", AdminRole::ReadOnly, "02", now - DAY);
        viewer.not_after_ms = now + 6 * DAY; // issued for 7 days
        let book = AdminBook::load([cert("admin", AdminRole::Admin, "01", now), viewer]);
        let plan = book.plan_renew(Some("viewer"), "01", None, now).unwrap();
        assert_eq!(plan.old.serial, "02");
        assert_eq!(plan.lifetime, Duration::from_secs(7 * 86_400));
        let own = book.plan_renew(None, "01", Some(3600), now).unwrap();
        assert_eq!(
            (own.old.name.as_str(), own.lifetime),
            ("admin", Duration::from_secs(3600))
        );
        assert_eq!(
            book.plan_renew(Some("x"), "01", None, now)
                .unwrap_err()
                .code,
            ErrorCode::NotFound
        );
    }

    fn object() -> ObjectRef {
        ObjectRef {
            kind: "deployment".into(),
            namespace: String::new(),
            name: "web".into(),
        }
    }

    /// Every request, one of each variant.
    fn every_request() -> Vec<AdminRequest> {
        let delete = DeleteRequest {
            object: object(),
            propagation: Propagation::Background,
            dry_run: false,
        };
        vec![
            AdminRequest::ListNodes,
            AdminRequest::GetNode { name: "n".into() },
            AdminRequest::ListEvents {
                object: None,
                limit: 1,
            },
            AdminRequest::ListEventSeries {
                object: None,
                limit: 1,
            },
            AdminRequest::CreateToken {
                ttl_secs: 1,
                uses: None,
                labels: Default::default(),
                description: String::new(),
            },
            AdminRequest::ListTokens,
            AdminRequest::RevokeToken { id: "t".into() },
            AdminRequest::DeleteNode { name: "n".into() },
            AdminRequest::DeletePod { name: "p".into() },
            AdminRequest::ListPods { node: None },
            AdminRequest::GetPod { name: "p".into() },
            AdminRequest::Logs(LogsRequest {
                pod: "p".into(),
                container: None,
                follow: false,
                tail: None,
                previous: false,
            }),
            AdminRequest::PushImage {
                node: None,
                site: None,
                size: 1,
                name: "i".into(),
            },
            AdminRequest::NodeUsage,
            AdminRequest::Apply(ApplyRequest {
                documents: vec![],
                dry_run: true,
            }),
            AdminRequest::Get(object()),
            AdminRequest::List(ListRequest {
                kind: "pods".into(),
                namespace: None,
                selector: String::new(),
                node: None,
                limit: 0,
                continue_from: String::new(),
            }),
            AdminRequest::Delete(delete.clone()),
            AdminRequest::Watch(WatchRequest {
                kind: "pods".into(),
                namespace: None,
                selector: String::new(),
                resource_version: 0,
            }),
            AdminRequest::Scale(ScaleRequest {
                object: object(),
                replicas: 1,
            }),
            AdminRequest::Cordon {
                node: "n".into(),
                unschedulable: true,
            },
            AdminRequest::PodUsage,
            AdminRequest::Evict(EvictRequest {
                namespace: "default".into(),
                name: "p".into(),
                grace_period_seconds: None,
            }),
            AdminRequest::DeleteWithGrace {
                request: delete,
                grace_period_seconds: 1,
            },
            AdminRequest::CreateAdmin(AdminCertRequest {
                name: "a".into(),
                role: AdminRole::ReadOnly,
                valid_for_secs: 60,
                csr_der: vec![],
            }),
            AdminRequest::ListAdmins,
            AdminRequest::RevokeAdmin { name: "a".into() },
            AdminRequest::RenewAdmin(AdminRenewRequest {
                name: None,
                valid_for_secs: None,
                csr_der: vec![],
            }),
            AdminRequest::RenewServerCert {
                extra_sans: vec![],
                valid_for_secs: None,
            },
        ]
    }

    /// The request kinds a read-only operator may make, and nothing else.
    #[test]
    fn read_only_may_only_read() {
        let allowed: Vec<String> = every_request()
            .iter()
            .filter(|r| authorize("viewer", AdminRole::ReadOnly, r).is_ok())
            .map(|r| {
                let name = format!("{r:?}");
                name.split(['(', ' ', '{']).next().unwrap().to_string()
            })
            .collect();
        assert_eq!(
            allowed,
            [
                "ListNodes",
                "GetNode",
                "ListEvents",
                "ListEventSeries",
                "ListTokens",
                "ListPods",
                "GetPod",
                "Logs",
                "NodeUsage",
                "Get",
                "List",
                "Watch",
                "PodUsage",
                "ListAdmins"
            ]
        );
        for r in every_request() {
            assert!(authorize("root", AdminRole::Admin, &r).is_ok());
        }
        let apply = every_request()
            .into_iter()
            .find(|r| matches!(r, AdminRequest::Apply(_)))
            .expect("an apply request in the table");
        let e = authorize("viewer", AdminRole::ReadOnly, &apply).unwrap_err();
        assert_eq!(e.code, ErrorCode::PermissionDenied);
        assert!(
            e.message.starts_with("viewer has the read-only role")
                && e.message.contains("not apply"),
            "{}",
            e.message
        );
    }

    /// Postcard bytes that decode to a request, so the property covers
    /// every variant with arbitrary contents.
    fn arb_request() -> impl Strategy<Value = AdminRequest> {
        let all = every_request();
        (0..all.len(), any::<u64>(), "[a-z]{0,8}").prop_map(move |(i, n, s)| {
            let mut r = all[i].clone();
            match &mut r {
                AdminRequest::Apply(a) => a.dry_run = n % 2 == 0,
                AdminRequest::Delete(d) => {
                    d.dry_run = n % 2 == 0;
                    d.object.name = s;
                }
                AdminRequest::Scale(sc) => sc.replicas = u32::try_from(n % 100).unwrap(),
                AdminRequest::Cordon { unschedulable, .. } => *unschedulable = n % 2 == 0,
                AdminRequest::RenewAdmin(req) => req.name = (n % 2 == 0).then_some(s),
                AdminRequest::RevokeAdmin { name } => *name = s,
                _ => {}
            }
            r
        })
    }

    /// The requests that change something (every mutating kind, whatever
    /// its contents, dry runs included) as the refusal names them.
    fn mutates(r: &AdminRequest) -> bool {
        !matches!(
            r,
            AdminRequest::ListNodes
                | AdminRequest::GetNode { .. }
                | AdminRequest::ListEvents { .. }
                | AdminRequest::ListEventSeries { .. }
                | AdminRequest::ListTokens
                | AdminRequest::ListPods { .. }
                | AdminRequest::GetPod { .. }
                | AdminRequest::Logs(_)
                | AdminRequest::NodeUsage
                | AdminRequest::Get(_)
                | AdminRequest::List(_)
                | AdminRequest::Watch(_)
                | AdminRequest::PodUsage
                | AdminRequest::ListAdmins
        )
    }

    proptest! {
        #[test]
        fn no_mutating_request_is_allowed_read_only(r in arb_request(), name in "[a-z]{1,12}") {
            let verdict = authorize(&name, AdminRole::ReadOnly, &r);
            if mutates(&r) {
                let e = verdict.unwrap_err();
                prop_assert_eq!(e.code, ErrorCode::PermissionDenied);
                prop_assert!(e.message.contains("read-only"));
                prop_assert!(e.message.contains(verb(&r)));
            } else {
                prop_assert!(verdict.is_ok());
            }
            prop_assert!(authorize(&name, AdminRole::Admin, &r).is_ok());
        }

        /// Whatever sequence of creates, revokes and renewals, at least
        /// one full admin stays active.
        #[test]
        fn a_full_admin_always_remains(ops in proptest::collection::vec((0u8..3, 0usize..4, any::<bool>()), 1..40)) {
            let now = 1_000 * DAY;
            let names = ["a", "b", "c", "d"];
            let mut book = AdminBook::load([cert("a", AdminRole::Admin, "s0", now)]);
            let mut serial = 1;
            for (op, i, admin) in ops {
                let name = names[i];
                let role = if admin { AdminRole::Admin } else { AdminRole::ReadOnly };
                match op {
                    0 => if book.check_create(name, 3600, now).is_ok() {
                        book.put(cert(name, role, &format!("s{serial}"), now));
                        serial += 1;
                    },
                    1 => if let Ok(revoked) = book.plan_revoke(name, now) {
                        for r in revoked { book.put(r); }
                    },
                    _ => if let Ok(plan) = book.plan_renew(Some(name), "", None, now) {
                        book.put(AdminInfo { revoked_ms: Some(now), ..plan.old.clone() });
                        book.put(cert(name, plan.old.role, &format!("s{serial}"), now));
                        serial += 1;
                    },
                }
                let admins = book
                    .list()
                    .iter()
                    .filter(|c| c.role == AdminRole::Admin && Status::of(c, now) == Status::Active)
                    .count();
                prop_assert!(admins >= 1);
            }
        }
    }
}
