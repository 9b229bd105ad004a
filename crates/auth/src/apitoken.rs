//! Revocable API tokens for CI and nodes, used as the password with Basic
//! credentials or at the token endpoint.
//!
//! A token is `berth_<id>_<secret>`: a 16-hex-digit id and 32 random bytes
//! (base64url). Only the SHA-256 of the whole text is kept, in
//! `ROOT/auth/tokens/<id>.json` (mode 0600) with its user, scopes, creation
//! and expiry; revoking deletes that file, which takes effect on the next
//! request made with the token (bearer tokens already issued from it run out
//! within the token TTL).
//!
//! Scopes narrow what the token may do below its user's own policy rights:
//! `ACTIONS:GLOB` with comma-separated actions, e.g. `push:team/**` or
//! `pull,delete:ci/*`. `push` includes `pull` (a pushing client reads what
//! is already there); with no scope the token has its user's rights.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::policy::{Actions, RepoGlob};
use crate::token::now_secs;
use crate::AuthError;

const PREFIX: &str = "berth_";

/// One scope: actions on repositories matching a glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub actions: Actions,
    pub glob: RepoGlob,
}

impl Scope {
    pub fn parse(s: &str) -> Result<Scope, AuthError> {
        let bad = || {
            AuthError::Config(format!(
                "scope {s:?}: expected ACTIONS:GLOB such as push:team/** (actions pull, push, delete)"
            ))
        };
        let (actions, glob) = s.split_once(':').ok_or_else(bad)?;
        let mut set = Actions::NONE;
        for a in actions.split(',') {
            let one = Actions::parse_one(a).ok_or_else(bad)?;
            set = set.union(one);
            if one == Actions::PUSH {
                set = set.union(Actions::PULL);
            }
        }
        Ok(Scope {
            actions: set,
            glob: RepoGlob::parse(glob)?,
        })
    }

    /// What scopes allow in `repo`.
    pub fn allowed(scopes: &[Scope], repo: &str) -> Actions {
        scopes
            .iter()
            .filter(|s| s.glob.matches(repo))
            .fold(Actions::NONE, |a, s| a.union(s.actions))
    }
}

/// What is stored of one token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub id: String,
    pub user: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub created: u64,
    pub expires: Option<u64>,
    /// SHA-256 (hex) of the token text.
    pub sha256: String,
}

impl Record {
    pub fn expired(&self) -> bool {
        self.expires.is_some_and(|e| e <= now_secs())
    }

    pub fn parsed_scopes(&self) -> Result<Vec<Scope>, AuthError> {
        self.scopes.iter().map(|s| Scope::parse(s)).collect()
    }
}

/// The tokens under one root.
#[derive(Debug, Clone)]
pub struct TokenStore {
    dir: PathBuf,
}

fn valid_id(id: &str) -> bool {
    id.len() == 16
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn digest_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Equal without an early exit, so timing tells nothing about the stored hash.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl TokenStore {
    /// The store for `ROOT/auth/tokens`.
    pub fn new(auth_dir: &Path) -> TokenStore {
        TokenStore {
            dir: auth_dir.join("tokens"),
        }
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Whether `text` looks like one of our tokens (so it is checked here
    /// rather than against the htpasswd file).
    pub fn is_token_text(text: &str) -> bool {
        text.strip_prefix(PREFIX)
            .and_then(|r| r.split_once('_'))
            .is_some_and(|(id, _)| valid_id(id))
    }

    /// Create a token; the secret text is returned once and never stored.
    pub fn create(
        &self,
        user: &str,
        scopes: &[String],
        expires_in: Option<Duration>,
    ) -> Result<(Record, String), AuthError> {
        if user.is_empty() || user.contains(':') {
            return Err(AuthError::Config(format!(
                "user {user:?}: a user name is not empty and has no ':'"
            )));
        }
        for s in scopes {
            Scope::parse(s)?;
        }
        let id = hex::encode(crate::random_bytes::<8>()?);
        let secret = B64.encode(crate::random_bytes::<32>()?);
        let text = format!("{PREFIX}{id}_{secret}");
        let now = now_secs();
        let record = Record {
            id: id.clone(),
            user: user.to_string(),
            scopes: scopes.to_vec(),
            created: now,
            expires: expires_in.map(|d| now + d.as_secs().max(1)),
            sha256: digest_hex(&text),
        };
        let io = |e| AuthError::Io(format!("storing API token in {}", self.dir.display()), e);
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let json =
            serde_json::to_vec_pretty(&record).map_err(|e| AuthError::Internal(e.to_string()))?;
        let tmp = self.dir.join(format!(".{id}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(&json).and_then(|_| f.sync_all()).map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, self.path(&id)).map_err(io)?;
        Ok((record, text))
    }

    /// The record of a genuine, unexpired token.
    pub fn verify(&self, text: &str) -> Result<Record, AuthError> {
        let invalid = || AuthError::InvalidCredentials;
        let (id, _) = text
            .strip_prefix(PREFIX)
            .and_then(|r| r.split_once('_'))
            .ok_or_else(invalid)?;
        if !valid_id(id) {
            return Err(invalid());
        }
        let record = match self.get(id) {
            Ok(Some(r)) => r,
            Ok(None) => return Err(invalid()),
            Err(e) => {
                tracing::error!(error = %e, "reading an API token record");
                return Err(invalid());
            }
        };
        if !same(record.sha256.as_bytes(), digest_hex(text).as_bytes()) || record.expired() {
            return Err(invalid());
        }
        Ok(record)
    }

    /// One record by id (`None`: no such token, or revoked).
    pub fn get(&self, id: &str) -> Result<Option<Record>, AuthError> {
        if !valid_id(id) {
            return Ok(None);
        }
        let path = self.path(id);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| AuthError::Config(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AuthError::Io(format!("reading {}", path.display()), e)),
        }
    }

    /// Every token, oldest first.
    pub fn list(&self) -> Result<Vec<Record>, AuthError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(AuthError::Io(format!("listing {}", self.dir.display()), e)),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry =
                entry.map_err(|e| AuthError::Io(format!("listing {}", self.dir.display()), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json") {
                if let Some(r) = self.get(id)? {
                    out.push(r);
                }
            }
        }
        out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(out)
    }

    /// Revoke a token; false when there was none with that id.
    pub fn revoke(&self, id: &str) -> Result<bool, AuthError> {
        if !valid_id(id) {
            return Ok(false);
        }
        match std::fs::remove_file(self.path(id)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(AuthError::Io(format!("revoking {id}"), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let s = Scope::parse("push:team/**").unwrap();
        assert_eq!(s.actions, Actions::PULL.union(Actions::PUSH));
        let s = Scope::parse("pull,delete:ci/*").unwrap();
        assert_eq!(s.actions, Actions::PULL.union(Actions::DELETE));
        assert!(Scope::parse("team/**").is_err());
        assert!(Scope::parse("write:team/**").is_err());
        assert!(Scope::parse("pull:").is_err());
        let scopes = vec![Scope::parse("push:team/**").unwrap()];
        assert_eq!(Scope::allowed(&scopes, "other/x"), Actions::NONE);
        assert!(Scope::allowed(&scopes, "team/x").contains(Actions::PUSH));
    }

    #[test]
    fn create_verify_list_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        let (rec, text) = store
            .create(
                "ci",
                &["push:team/**".into()],
                Some(Duration::from_secs(3600)),
            )
            .unwrap();
        assert!(TokenStore::is_token_text(&text));
        // The secret is not on disk.
        let stored =
            std::fs::read_to_string(dir.path().join("tokens").join(format!("{}.json", rec.id)))
                .unwrap();
        // The secret is base64url, which may itself contain '_'.
        assert!(!stored.contains(text.splitn(3, '_').nth(2).unwrap()));
        assert_eq!(store.verify(&text).unwrap().user, "ci");
        let mut wrong = text.clone();
        wrong.pop();
        wrong.push('A');
        assert!(store.verify(&wrong).is_err() || wrong == text);
        assert!(store.verify("berth_../../etc_x").is_err());
        assert!(store.verify("berth_0123456789abcdef_x").is_err());
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(store.revoke(&rec.id).unwrap());
        assert!(!store.revoke(&rec.id).unwrap());
        assert!(store.verify(&text).is_err());
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn expired_tokens_fail() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        let (rec, text) = store
            .create("ci", &[], Some(Duration::from_secs(1)))
            .unwrap();
        let path = dir.path().join("tokens").join(format!("{}.json", rec.id));
        let mut r: Record = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        r.expires = Some(now_secs() - 1);
        std::fs::write(&path, serde_json::to_vec(&r).unwrap()).unwrap();
        assert!(store.verify(&text).is_err());
    }
}
