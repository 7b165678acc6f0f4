//! Bootstrap tokens: short-lived, scoped (labels), revocable secrets that buy
//! one node certificate each use.
//!
//! Format `ID.SECRET` like kubeadm's (6 + 16 lowercase alphanumerics). The ID is
//! public (it names the token in listings and events); only a SHA-256 of the
//! secret is stored. Decisions here take `now` and return results; the caller
//! persists.

use outpost_proto::TokenInfo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A token as stored.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    /// Hex SHA-256 of the secret part.
    pub secret_sha256: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub uses_left: Option<u32>,
    pub used: u32,
    pub labels: BTreeMap<String, String>,
    pub revoked: bool,
    pub description: String,
}

impl TokenRecord {
    pub fn info(&self) -> TokenInfo {
        TokenInfo {
            id: self.id.clone(),
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            uses_left: self.uses_left,
            used: self.used,
            labels: self.labels.clone(),
            revoked: self.revoked,
            description: self.description.clone(),
        }
    }
}

/// Why a token was refused. The messages go back to the agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not of the form ID.SECRET (6 and 16 lowercase letters or digits)")]
    Malformed,
    #[error("the token is not valid for this cluster; create one with `outpostctl token create`")]
    Unknown,
    #[error("token {0} was revoked; create a new one with `outpostctl token create`")]
    Revoked(String),
    #[error("token {0} expired; create a new one with `outpostctl token create`")]
    Expired(String),
    #[error(
        "token {0} has no uses left; create a new one with `outpostctl token create --uses N`"
    )]
    UsedUp(String),
}

fn random_string(n: usize) -> String {
    (0..n)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compares without an early exit, so timing does not reveal a prefix match.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn split(token: &str) -> Result<(&str, &str), TokenError> {
    let (id, secret) = token.trim().split_once('.').ok_or(TokenError::Malformed)?;
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| ALPHABET.contains(&b));
    if ok(id, 6) && ok(secret, 16) {
        Ok((id, secret))
    } else {
        Err(TokenError::Malformed)
    }
}

/// Parameters of a new token.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub ttl_ms: u64,
    pub uses: Option<u32>,
    pub labels: BTreeMap<String, String>,
    pub description: String,
}

/// Makes a token; returns the clear text (shown once) and the record to store.
pub fn create(new: NewToken, now_ms: u64) -> (String, TokenRecord) {
    let id = random_string(6);
    let secret = random_string(16);
    let record = TokenRecord {
        secret_sha256: sha256_hex(&secret),
        id: id.clone(),
        created_ms: now_ms,
        expires_ms: now_ms.saturating_add(new.ttl_ms),
        uses_left: new.uses,
        used: 0,
        labels: new.labels,
        revoked: false,
        description: new.description,
    };
    (format!("{id}.{secret}"), record)
}

/// The ID part of a token, for looking its record up.
pub fn id_of(token: &str) -> Result<&str, TokenError> {
    split(token).map(|(id, _)| id)
}

/// Checks that `token` is genuine and not revoked, without counting a use
/// or looking at expiry and uses left: enough for a retried enrolment,
/// which the same token already paid for ([`crate::registry::Enrolment::Retry`]).
pub fn authenticate(token: &str, record: Option<&TokenRecord>) -> Result<(), TokenError> {
    let (_, secret) = split(token)?;
    let record = record.ok_or(TokenError::Unknown)?;
    if !constant_time_eq(
        sha256_hex(secret).as_bytes(),
        record.secret_sha256.as_bytes(),
    ) {
        return Err(TokenError::Unknown);
    }
    if record.revoked {
        return Err(TokenError::Revoked(record.id.clone()));
    }
    Ok(())
}

/// Checks `token` against its record and, when valid, returns the record
/// with this use counted. The secret is checked first, so a caller without
/// it learns nothing about the token's state.
pub fn redeem(
    token: &str,
    record: Option<&TokenRecord>,
    now_ms: u64,
) -> Result<TokenRecord, TokenError> {
    authenticate(token, record)?;
    let record = record.ok_or(TokenError::Unknown)?;
    if now_ms >= record.expires_ms {
        return Err(TokenError::Expired(record.id.clone()));
    }
    let mut next = record.clone();
    match next.uses_left {
        Some(0) => return Err(TokenError::UsedUp(record.id.clone())),
        Some(n) => next.uses_left = Some(n - 1),
        None => {}
    }
    next.used = next.used.saturating_add(1);
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(uses: Option<u32>) -> (String, TokenRecord) {
        create(
            NewToken {
                ttl_ms: 1000,
                uses,
                labels: BTreeMap::new(),
                description: String::new(),
            },
            10_000,
        )
    }

    #[test]
    fn authenticate_ignores_uses_and_expiry_but_not_secret_or_revocation() {
        let (t, rec) = token(Some(1));
        let spent = redeem(&t, Some(&rec), 10_500).unwrap();
        assert_eq!(
            redeem(&t, Some(&spent), 10_600),
            Err(TokenError::UsedUp(rec.id.clone()))
        );
        assert_eq!(authenticate(&t, Some(&spent)), Ok(()));
        // Long expired: still genuine.
        assert_eq!(
            redeem(&t, Some(&rec), 99_000),
            Err(TokenError::Expired(rec.id.clone()))
        );
        assert_eq!(authenticate(&t, Some(&rec)), Ok(()));
        let wrong = format!("{}.{}", rec.id, "a".repeat(16));
        assert_eq!(authenticate(&wrong, Some(&rec)), Err(TokenError::Unknown));
        assert_eq!(authenticate(&t, None), Err(TokenError::Unknown));
        let revoked = TokenRecord {
            revoked: true,
            ..rec.clone()
        };
        assert_eq!(
            authenticate(&t, Some(&revoked)),
            Err(TokenError::Revoked(rec.id))
        );
    }

    #[test]
    fn redeem_table() {
        let (t, rec) = token(Some(1));
        let used = redeem(&t, Some(&rec), 10_500).unwrap();
        assert_eq!(used.uses_left, Some(0));
        assert_eq!(used.used, 1);
        assert_eq!(
            redeem(&t, Some(&used), 10_600),
            Err(TokenError::UsedUp(rec.id.clone()))
        );
        assert_eq!(
            redeem(&t, Some(&rec), 11_000),
            Err(TokenError::Expired(rec.id.clone()))
        );
        let revoked = TokenRecord {
            revoked: true,
            ..rec.clone()
        };
        assert_eq!(
            redeem(&t, Some(&revoked), 10_100),
            Err(TokenError::Revoked(rec.id.clone()))
        );
        assert_eq!(redeem(&t, None, 10_100), Err(TokenError::Unknown));
        let wrong = format!("{}.{}", rec.id, "a".repeat(16));
        assert_eq!(
            redeem(&wrong, Some(&revoked), 10_100),
            Err(TokenError::Unknown)
        );
        for bad in [
            "",
            "abc",
            "abcdef.short",
            "ABCDEF.0123456789abcdef",
            "abcdef0123456789abcdefx",
        ] {
            assert_eq!(
                redeem(bad, Some(&rec), 10_100),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn unlimited_uses_until_expiry() {
        let (t, mut rec) = token(None);
        for _ in 0..5 {
            rec = redeem(&t, Some(&rec), 10_001).unwrap();
        }
        assert_eq!(rec.used, 5);
        assert_eq!(id_of(&t).unwrap(), rec.id);
    }
}
