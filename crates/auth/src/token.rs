//! berth's own signed bearer tokens: JWTs (HS256) carrying the subject, the
//! granted `(repository, actions)` entries, `iat` and `exp`, signed with a
//! key generated at first start and kept in `ROOT/auth/token.key` (mode
//! 0600), so tokens survive restarts and replicas on one root agree.
//!
//! Only berth issues and checks these tokens, so a shared secret (HMAC) is
//! enough; the header must say exactly `HS256` (no `none`, no algorithm
//! confusion), and the signature is checked in constant time before the
//! payload is even parsed. Access and refresh tokens differ in `kind`, so a
//! refresh token is never accepted as an access token or the reverse.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::policy::Actions;
use crate::AuthError;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The issuer every berth token names.
pub const ISSUER: &str = "berth";
/// Longest token text looked at; anything longer is not ours.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Clock skew tolerated for `iat` (replicas' clocks differ a little).
const SKEW: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Access,
    Refresh,
}

/// One granted entry, in the token spec's `access` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl AccessEntry {
    pub fn repository(name: &str, actions: Actions) -> AccessEntry {
        AccessEntry {
            kind: "repository".into(),
            name: name.to_string(),
            actions: actions.names().into_iter().map(String::from).collect(),
        }
    }

    pub fn actions(&self) -> Actions {
        self.actions
            .iter()
            .filter_map(|a| Actions::parse_one(a))
            .fold(Actions::NONE, Actions::union)
    }
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user name; empty for an anonymous caller.
    pub sub: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
    pub kind: Kind,
    #[serde(default)]
    pub access: Vec<AccessEntry>,
    /// The API token the caller logged in with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    /// That API token's scopes (they narrow what the caller may do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scp: Option<Vec<String>>,
    /// Refresh tokens of htpasswd users: a fingerprint of the password hash,
    /// so that a changed password ends them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pwf: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs and verifies tokens with one key.
pub struct Signer {
    key: [u8; 32],
    audience: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub fn new(key: [u8; 32], audience: &str) -> Signer {
        Signer {
            key,
            audience: audience.to_string(),
        }
    }

    /// The key in `dir/token.key`, created (0600) when missing. Two servers
    /// starting at once agree: the file appears whole or not at all.
    pub fn open_key(dir: &Path) -> Result<[u8; 32], AuthError> {
        let path = dir.join("token.key");
        let io = |what: &str, e| AuthError::Io(format!("{what} {}", path.display()), e);
        std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
        // Only berth's own user reads what lives here.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("restricting the directory of", e))?;
        if !path.exists() {
            let key: [u8; 32] = crate::random_bytes()?;
            let tmp = dir.join(format!(
                "token.key.{}.tmp",
                hex::encode(crate::random_bytes::<8>()?)
            ));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| io("creating", e))?;
            f.write_all(B64.encode(key).as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| io("writing", e))?;
            drop(f);
            // hard_link never replaces: whoever links first wins, the other reads it.
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => return Ok(key),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io("storing", e)),
            }
        }
        let meta = std::fs::metadata(&path).map_err(|e| io("reading", e))?;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "token signing key was readable by others; setting mode 0600");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| io("restricting", e))?;
        }
        Signer::read_key_file(&path)
    }

    /// A signing key from a file the operator provides (`signing_key_file`:
    /// 32 random bytes in base64, e.g. `head -c 32 /dev/urandom | base64`),
    /// which replicas share so that a token from one is good at all.
    pub fn read_key_file(path: &Path) -> Result<[u8; 32], AuthError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthError::Io(format!("reading {}", path.display()), e))?;
        // Either alphabet: berth writes the URL-safe one, `base64` the standard.
        let text = text.trim();
        let bytes = B64
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(text))
            .map_err(|_| {
                AuthError::Config(format!(
                    "{} is not a berth signing key (32 bytes in base64)",
                    path.display()
                ))
            })?;
        bytes.try_into().map_err(|_| {
            AuthError::Config(format!(
                "{} is not a berth signing key (32 bytes in base64)",
                path.display()
            ))
        })
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; this arm is never taken.
        HmacSha256::new_from_slice(&self.key)
            .unwrap_or_else(|_| HmacSha256::new(&Default::default()))
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        let header = serde_json::to_vec(&Header {
            alg: "HS256".into(),
            typ: "JWT".into(),
        })
        .map_err(|e| AuthError::Internal(e.to_string()))?;
        let payload = serde_json::to_vec(claims).map_err(|e| AuthError::Internal(e.to_string()))?;
        let signing_input = format!("{}.{}", B64.encode(header), B64.encode(payload));
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = mac.finalize().into_bytes();
        Ok(format!("{signing_input}.{}", B64.encode(sig)))
    }

    /// Claims of a genuine, current token of `kind`; every failure is
    /// [`AuthError::InvalidToken`] with a reason safe to show the client.
    pub fn verify(&self, token: &str, kind: Kind) -> Result<Claims, AuthError> {
        let bad = |why: &str| AuthError::InvalidToken(why.to_string());
        if token.len() > MAX_TOKEN_LEN {
            return Err(bad("token too long"));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("malformed token"));
        };
        let header: Header = B64
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| bad("malformed token"))?;
        if header.alg != "HS256" {
            return Err(bad("token not issued by this registry"));
        }
        let sig = B64.decode(s).map_err(|_| bad("malformed token"))?;
        let mut mac = self.mac();
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| bad("token signature invalid"))?;
        let claims: Claims = B64
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| bad("malformed token"))?;
        let now = now_secs();
        if claims.iss != ISSUER || claims.aud != self.audience {
            return Err(bad("token not issued for this registry"));
        }
        if claims.kind != kind {
            return Err(bad("wrong kind of token"));
        }
        if claims.exp <= now {
            return Err(bad("token expired"));
        }
        if claims.iat > now + SKEW {
            return Err(bad("token issued in the future"));
        }
        Ok(claims)
    }

    /// Claims for a new token valid `ttl` from now.
    pub fn claims(&self, sub: &str, kind: Kind, ttl: Duration) -> Result<Claims, AuthError> {
        let iat = now_secs();
        Ok(Claims {
            iss: ISSUER.into(),
            sub: sub.to_string(),
            aud: self.audience.clone(),
            iat,
            exp: iat + ttl.as_secs(),
            jti: hex::encode(crate::random_bytes::<12>()?),
            kind,
            access: Vec::new(),
            tid: None,
            scp: None,
            pwf: None,
        })
    }
}

/// RFC 3339 in UTC (`2026-12-01T09:41:26Z`) for a Unix time.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::new([7; 32], "berth")
    }

    #[test]
    fn round_trip_and_tampering() {
        let s = signer();
        let mut c = s
            .claims("alice", Kind::Access, Duration::from_secs(300))
            .unwrap();
        c.access.push(AccessEntry::repository(
            "team/app",
            Actions::PULL.union(Actions::PUSH),
        ));
        let t = s.sign(&c).unwrap();
        let back = s.verify(&t, Kind::Access).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.access[0].actions, vec!["pull", "push"]);
        assert!(s.verify(&t, Kind::Refresh).is_err());
        // Another key: a foreign token.
        assert!(Signer::new([8; 32], "berth")
            .verify(&t, Kind::Access)
            .is_err());
        // Another audience.
        assert!(Signer::new([7; 32], "other")
            .verify(&t, Kind::Access)
            .is_err());
        // A payload swapped for one granting more keeps the old signature.
        let (h, rest) = t.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let mut more = c.clone();
        more.access[0].actions.push("delete".into());
        let forged = format!(
            "{h}.{}.{sig}",
            B64.encode(serde_json::to_vec(&more).unwrap())
        );
        assert!(s.verify(&forged, Kind::Access).is_err());
        // alg none.
        let none = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let p = rest.split_once('.').unwrap().0;
        assert!(s.verify(&format!("{none}.{p}."), Kind::Access).is_err());
        for junk in [
            "",
            ".",
            "..",
            "a.b.c",
            "a.b.c.d",
            "\u{0}\u{1}",
            &"x".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(s.verify(junk, Kind::Access).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn expired_tokens_are_refused() {
        let s = signer();
        let mut c = s
            .claims("alice", Kind::Access, Duration::from_secs(300))
            .unwrap();
        c.exp = now_secs() - 1;
        let t = s.sign(&c).unwrap();
        let e = s.verify(&t, Kind::Access).unwrap_err().to_string();
        assert!(e.contains("expired"), "{e}");
    }

    #[test]
    fn key_file_is_created_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = Signer::open_key(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join("token.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let k2 = Signer::open_key(dir.path()).unwrap();
        assert_eq!(k1, k2);
        std::fs::write(dir.path().join("token.key"), "short").unwrap();
        assert!(Signer::open_key(dir.path()).is_err());
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_796_486), "2027-01-01T09:41:26Z");
    }
}
