//! Revocable API tokens for CI and nodes, used as the password with Basic
//! credentials or at the token endpoint.
//!
//! A token is `berth_<id>_<secret>`: a 16-hex-digit id and 32 random bytes
//! (base64url). Only the SHA-256 of the whole text is kept, with its user,
//! scopes, creation and expiry: in `ROOT/auth/tokens/<id>.json` (mode 0600)
//! on local storage, or as the document `_auth/tokens/<id>` in the bucket
//! replicas share (so a token made through one replica is good at all of
//! them). Revoking deletes the record, which takes effect on the next
//! request made with the token (bearer tokens already issued from it run
//! out within the token TTL).
//!
//! Scopes narrow what the token may do below its user's own policy rights:
//! `ACTIONS:GLOB` with comma-separated actions, e.g. `push:team/**` or
//! `pull,delete:ci/*`. `push` includes `pull` (a pushing client reads what
//! is already there); with no scope the token has its user's rights.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_storage::{DocKey, Storage};
use bytes::Bytes;

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

/// Where the token records live.
#[derive(Clone)]
pub struct TokenStore {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    /// `ROOT/auth/tokens`, one file a token.
    Dir(PathBuf),
    /// Documents under `_auth/tokens` in storage other replicas share.
    Shared(Arc<dyn Storage>),
}

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.place())
    }
}

fn shared_dir() -> Result<DocKey, AuthError> {
    DocKey::new(["_auth", "tokens"]).map_err(|e| AuthError::Internal(e.to_string()))
}

fn store_error(what: &str, e: berth_storage::StorageError) -> AuthError {
    AuthError::Internal(format!("{what} API tokens in shared storage: {e}"))
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
            backend: Backend::Dir(auth_dir.join("tokens")),
        }
    }

    /// The store of replicas sharing `storage`: every replica sees every
    /// token at once (records are read on each use, never remembered).
    pub fn shared(storage: Arc<dyn Storage>) -> TokenStore {
        TokenStore {
            backend: Backend::Shared(storage),
        }
    }

    /// Whether the records are in storage other replicas share.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Shared(_))
    }

    /// Where the records are, for messages.
    pub fn place(&self) -> String {
        match &self.backend {
            Backend::Dir(dir) => dir.display().to_string(),
            Backend::Shared(_) => "_auth/tokens in shared storage".into(),
        }
    }

    /// Store a new record (its id never used before).
    async fn put(&self, id: &str, json: &[u8]) -> Result<(), AuthError> {
        match &self.backend {
            Backend::Dir(dir) => {
                let io = |e| AuthError::Io(format!("storing API token in {}", dir.display()), e);
                std::fs::create_dir_all(dir).map_err(io)?;
                let tmp = dir.join(format!(".{id}.tmp"));
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(io)?;
                f.write_all(json).and_then(|_| f.sync_all()).map_err(io)?;
                drop(f);
                std::fs::rename(&tmp, dir.join(format!("{id}.json"))).map_err(io)
            }
            Backend::Shared(storage) => {
                let key = shared_dir()?
                    .join(id)
                    .map_err(|e| AuthError::Internal(e.to_string()))?;
                storage
                    .doc_put(&key, Bytes::copy_from_slice(json))
                    .await
                    .map_err(|e| store_error("storing", e))
            }
        }
    }

    /// A record's bytes (`None`: no such token, or revoked).
    async fn read(&self, id: &str) -> Result<Option<Vec<u8>>, AuthError> {
        match &self.backend {
            Backend::Dir(dir) => {
                let path = dir.join(format!("{id}.json"));
                match std::fs::read(&path) {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(AuthError::Io(format!("reading {}", path.display()), e)),
                }
            }
            Backend::Shared(storage) => {
                let key = shared_dir()?
                    .join(id)
                    .map_err(|e| AuthError::Internal(e.to_string()))?;
                Ok(storage
                    .doc_get(&key)
                    .await
                    .map_err(|e| store_error("reading", e))?
                    .map(|b| b.to_vec()))
            }
        }
    }

    /// The ids of every record.
    async fn ids(&self) -> Result<Vec<String>, AuthError> {
        match &self.backend {
            Backend::Dir(dir) => {
                let listing = |e| AuthError::Io(format!("listing {}", dir.display()), e);
                let rd = match std::fs::read_dir(dir) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(listing(e)),
                };
                let mut out = Vec::new();
                for entry in rd {
                    let name = entry
                        .map_err(listing)?
                        .file_name()
                        .to_string_lossy()
                        .into_owned();
                    if let Some(id) = name.strip_suffix(".json") {
                        out.push(id.to_string());
                    }
                }
                Ok(out)
            }
            Backend::Shared(storage) => storage
                .doc_list(&shared_dir()?)
                .await
                .map_err(|e| store_error("listing", e)),
        }
    }

    /// Delete a record; false when there was none.
    async fn remove(&self, id: &str) -> Result<bool, AuthError> {
        match &self.backend {
            Backend::Dir(dir) => match std::fs::remove_file(dir.join(format!("{id}.json"))) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(AuthError::Io(format!("revoking {id}"), e)),
            },
            Backend::Shared(storage) => {
                let key = shared_dir()?
                    .join(id)
                    .map_err(|e| AuthError::Internal(e.to_string()))?;
                storage
                    .doc_delete(&key)
                    .await
                    .map_err(|e| store_error("revoking", e))
            }
        }
    }

    /// Whether `text` looks like one of our tokens (so it is checked here
    /// rather than against the htpasswd file).
    pub fn is_token_text(text: &str) -> bool {
        text.strip_prefix(PREFIX)
            .and_then(|r| r.split_once('_'))
            .is_some_and(|(id, _)| valid_id(id))
    }

    /// Create a token; the secret text is returned once and never stored.
    pub async fn create(
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
        let json =
            serde_json::to_vec_pretty(&record).map_err(|e| AuthError::Internal(e.to_string()))?;
        self.put(&id, &json).await?;
        Ok((record, text))
    }

    /// The record of a genuine, unexpired token.
    pub async fn verify(&self, text: &str) -> Result<Record, AuthError> {
        let invalid = || AuthError::InvalidCredentials;
        let (id, _) = text
            .strip_prefix(PREFIX)
            .and_then(|r| r.split_once('_'))
            .ok_or_else(invalid)?;
        if !valid_id(id) {
            return Err(invalid());
        }
        let record = match self.get(id).await {
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
    pub async fn get(&self, id: &str) -> Result<Option<Record>, AuthError> {
        if !valid_id(id) {
            return Ok(None);
        }
        match self.read(id).await? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| AuthError::Config(format!("API token {id} in {}: {e}", self.place()))),
            None => Ok(None),
        }
    }

    /// Every token, oldest first.
    pub async fn list(&self) -> Result<Vec<Record>, AuthError> {
        let mut out = Vec::new();
        for id in self.ids().await? {
            if let Some(r) = self.get(&id).await? {
                out.push(r);
            }
        }
        out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(out)
    }

    /// Revoke a token; false when there was none with that id.
    pub async fn revoke(&self, id: &str) -> Result<bool, AuthError> {
        if !valid_id(id) {
            return Ok(false);
        }
        self.remove(id).await
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

    /// Both backends: files under the root, documents in (here local)
    /// storage as replicas share it.
    async fn stores(dir: &Path) -> Vec<TokenStore> {
        let storage = berth_storage::fs::FsStorage::open(&dir.join("storage"))
            .await
            .unwrap();
        vec![TokenStore::new(dir), TokenStore::shared(Arc::new(storage))]
    }

    #[tokio::test]
    async fn create_verify_list_revoke() {
        let dir = tempfile::tempdir().unwrap();
        for store in stores(dir.path()).await {
            let (rec, text) = store
                .create(
                    "ci",
                    &["push:team/**".into()],
                    Some(Duration::from_secs(3600)),
                )
                .await
                .unwrap();
            assert!(TokenStore::is_token_text(&text));
            // The secret is not stored. (It is base64url, which may itself
            // contain '_'.)
            let stored = store.read(&rec.id).await.unwrap().unwrap();
            let secret = text.splitn(3, '_').nth(2).unwrap();
            assert!(!String::from_utf8_lossy(&stored).contains(secret));
            assert_eq!(store.verify(&text).await.unwrap().user, "ci");
            let mut wrong = text.clone();
            wrong.pop();
            wrong.push('A');
            assert!(store.verify(&wrong).await.is_err() || wrong == text);
            assert!(store.verify("berth_../../etc_x").await.is_err());
            assert!(store.verify("berth_0123456789abcdef_x").await.is_err());
            assert_eq!(store.list().await.unwrap().len(), 1);
            assert!(store.revoke(&rec.id).await.unwrap());
            assert!(!store.revoke(&rec.id).await.unwrap());
            assert!(store.verify(&text).await.is_err());
            assert!(store.list().await.unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn on_disk_a_record_is_private_to_the_owner() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        let (rec, _) = store.create("ci", &[], None).await.unwrap();
        let path = dir.path().join("tokens").join(format!("{}.json", rec.id));
        let mode = std::fs::metadata(path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[tokio::test]
    async fn expired_tokens_fail() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        let (rec, text) = store
            .create("ci", &[], Some(Duration::from_secs(1)))
            .await
            .unwrap();
        let path = dir.path().join("tokens").join(format!("{}.json", rec.id));
        let mut r: Record = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        r.expires = Some(now_secs() - 1);
        std::fs::write(&path, serde_json::to_vec(&r).unwrap()).unwrap();
        assert!(store.verify(&text).await.is_err());
    }
}
