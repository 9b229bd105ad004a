//! Who may do what, without HTTP: users (htpasswd) and API tokens prove who
//! a caller is, the policy says what they may do, and signed bearer tokens
//! carry that to the registry API. The HTTP side (challenges, the `/token`
//! endpoint) is in `berth-api`; this crate decides.
//!
//! - [`htpasswd`]: users and their bcrypt hashes, reloaded on change;
//! - [`policy`]: groups and `[[policy]]` rules, mirror namespaces pull-only;
//! - [`token`]: berth's own signed bearer and refresh tokens;
//! - [`apitoken`]: revocable, scoped, expiring tokens used as passwords;
//! - [`ratelimit`]: failed logins per client address.
#![forbid(unsafe_code)]

pub mod apitoken;
pub mod htpasswd;
pub mod policy;
pub mod ratelimit;
pub mod token;
mod verified;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::apitoken::{Scope, TokenStore};
use crate::htpasswd::Htpasswd;
pub use crate::policy::{Actions, Policy, Principal, RuleConfig};
use crate::ratelimit::FailureLimiter;
use crate::token::{AccessEntry, Claims, Kind, Signer};

/// The shortest bearer-token lifetime the product allows.
pub const MIN_TOKEN_TTL: Duration = Duration::from_secs(60);
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);
/// How long refresh tokens (`offline_token=true`, password grants) live.
pub const REFRESH_TTL: Duration = Duration::from_secs(30 * 86_400);
/// Failed logins per address per minute before 429.
pub const DEFAULT_MAX_LOGIN_FAILURES: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Config(String),
    #[error("{file}, line {line}: {why}", file = file.display())]
    Htpasswd {
        file: PathBuf,
        line: usize,
        why: String,
    },
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("the system random source failed: {0}")]
    Random(String),
    #[error("{0}")]
    Internal(String),
    /// Wrong user name, password or API token (which one is not said).
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("too many failed logins from this address; retry in {0} s")]
    TooManyAttempts(u64),
    #[error("invalid token: {0}")]
    InvalidToken(String),
}

/// `N` bytes from the operating system's random source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(b)
}

/// The `[auth]` table, after the binary parsed it.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub htpasswd: Option<PathBuf>,
    pub token_ttl: Duration,
    pub groups: HashMap<String, Vec<String>>,
    pub rules: Vec<RuleConfig>,
    /// The token endpoint's URL as clients reach it; `None`: from each
    /// request's Host (and X-Forwarded-Proto).
    pub realm: Option<String>,
    pub service: String,
    pub max_login_failures: u32,
    /// The token signing key, shared by replicas; `None`: one made and
    /// kept under the root (`ROOT/auth/token.key`).
    pub signing_key_file: Option<PathBuf>,
}

/// The directory under a storage root where auth state lives.
pub fn auth_dir(root: &Path) -> PathBuf {
    root.join("auth")
}

/// Who a caller proved to be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// `None`: anonymous.
    pub user: Option<String>,
    /// The API token used, with its scopes (which narrow the user's rights).
    pub token_id: Option<String>,
    pub scopes: Option<Vec<String>>,
    /// For htpasswd users: the fingerprint of their current password hash.
    pub password_fingerprint: Option<String>,
}

impl Identity {
    pub fn anonymous() -> Identity {
        Identity::default()
    }
}

/// A verified bearer token.
#[derive(Debug, Clone)]
pub struct Granted {
    pub identity: Identity,
    pub access: HashMap<String, Actions>,
}

impl Granted {
    /// A login's identity, granting nothing beyond what the policy gives it.
    pub fn of(identity: Identity) -> std::sync::Arc<Granted> {
        std::sync::Arc::new(Granted {
            identity,
            access: HashMap::new(),
        })
    }
}

/// A token issued by the token endpoint.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub expires_in: u64,
    pub issued_at: u64,
}

/// What a configuration reload replaces: who the users are (the htpasswd
/// file), what they may do, and how long tokens live.
struct Live {
    htpasswd: Option<Arc<Htpasswd>>,
    policy: Policy,
    token_ttl: Duration,
}

impl Live {
    fn load(config: &AuthConfig) -> Result<Live, AuthError> {
        if config.token_ttl < MIN_TOKEN_TTL {
            return Err(AuthError::Config(format!(
                "token_ttl must be at least {} s",
                MIN_TOKEN_TTL.as_secs()
            )));
        }
        Ok(Live {
            htpasswd: config
                .htpasswd
                .as_deref()
                .map(Htpasswd::load)
                .transpose()?
                .map(Arc::new),
            policy: Policy::new(&config.rules, &config.groups)?,
            token_ttl: config.token_ttl,
        })
    }
}

/// Everything that decides, built at start; [`Auth::reload`] replaces the
/// users, the policy and the token lifetime.
pub struct Auth {
    config: AuthConfig,
    live: std::sync::RwLock<Arc<Live>>,
    signer: Signer,
    tokens: TokenStore,
    limiter: FailureLimiter,
    /// Bearer tokens already verified (see `verified`).
    verified: verified::Verified,
}

impl Auth {
    /// Load htpasswd and the signing key under `root`; any error is final.
    pub fn open(config: AuthConfig, root: &Path) -> Result<Auth, AuthError> {
        let live = Live::load(&config)?;
        let dir = auth_dir(root);
        let key = match &config.signing_key_file {
            Some(path) => Signer::read_key_file(path)?,
            None => Signer::open_key(&dir)?,
        };
        Ok(Auth {
            signer: Signer::new(key, &config.service),
            tokens: TokenStore::new(&dir),
            limiter: FailureLimiter::new(config.max_login_failures, Duration::from_secs(60)),
            verified: Default::default(),
            live: std::sync::RwLock::new(Arc::new(live)),
            config,
        })
    }

    /// Keep API tokens in `tokens` instead of under the root (replicas on
    /// shared storage keep them in the bucket, see `apitoken`).
    pub fn with_tokens(mut self, tokens: TokenStore) -> Auth {
        self.tokens = tokens;
        self
    }

    /// Where API tokens are kept.
    pub fn tokens(&self) -> &TokenStore {
        &self.tokens
    }

    /// Take the users (htpasswd file), groups, policy and token lifetime
    /// of `config`; on an error nothing changes. Tokens issued before keep
    /// what they were issued with until they expire. What cannot change
    /// without a restart (the service name, which tokens are signed for,
    /// and the realm) is returned, by name, when `config` changes it.
    pub fn reload(&self, config: &AuthConfig) -> Result<Vec<&'static str>, AuthError> {
        let live = Live::load(config)?;
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
        let mut fixed = Vec::new();
        if config.service != self.config.service {
            fixed.push("service");
        }
        if config.realm != self.config.realm {
            fixed.push("realm");
        }
        Ok(fixed)
    }

    fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn service(&self) -> &str {
        &self.config.service
    }

    pub fn realm(&self) -> Option<&str> {
        self.config.realm.as_deref()
    }

    pub fn token_ttl(&self) -> Duration {
        self.live().token_ttl
    }

    /// `Err(TooManyAttempts)` when `client` failed too often lately.
    pub fn check_rate(&self, client: Option<IpAddr>) -> Result<(), AuthError> {
        match client.map(|c| self.limiter.check(c)) {
            Some(Err(wait)) => Err(AuthError::TooManyAttempts(wait.as_secs().max(1))),
            _ => Ok(()),
        }
    }

    /// Count a failed login (a wrong password or API token, malformed
    /// credentials, a refresh token that no longer holds).
    pub fn record_failure(&self, client: Option<IpAddr>) {
        if let Some(c) = client {
            self.limiter.fail(c);
        }
    }

    /// Check a user name and password (or API token as password).
    pub async fn login(
        &self,
        user: &str,
        password: &[u8],
        client: Option<IpAddr>,
    ) -> Result<Identity, AuthError> {
        self.check_rate(client)?;
        let result = self.login_unlimited(user, password).await;
        if result.is_err() {
            self.record_failure(client);
        }
        result
    }

    async fn login_unlimited(&self, user: &str, password: &[u8]) -> Result<Identity, AuthError> {
        if let Ok(text) = std::str::from_utf8(password) {
            if TokenStore::is_token_text(text) {
                let record = self.tokens.verify(text).await?;
                if record.user != user {
                    return Err(AuthError::InvalidCredentials);
                }
                return Ok(Identity {
                    user: Some(record.user),
                    token_id: Some(record.id),
                    scopes: Some(record.scopes),
                    password_fingerprint: None,
                });
            }
        }
        let live = self.live();
        let Some(h) = &live.htpasswd else {
            return Err(AuthError::InvalidCredentials);
        };
        if !h.verify(user, password).await {
            return Err(AuthError::InvalidCredentials);
        }
        Ok(Identity {
            user: Some(user.to_string()),
            token_id: None,
            scopes: None,
            password_fingerprint: h.entries().fingerprint(user),
        })
    }

    /// What `who` may do in `repo` (a resolved repository name): the policy's
    /// grant, narrowed by an API token's scopes.
    pub fn rights(&self, who: &Identity, repo: &str) -> Actions {
        let principal = match &who.user {
            Some(u) => Principal::User(u),
            None => Principal::Anonymous,
        };
        let granted = self.live().policy.rights(&principal, repo);
        match &who.scopes {
            None => granted,
            Some(scopes) if scopes.is_empty() => granted,
            Some(scopes) => {
                // Scopes were checked when the token was made; one that no
                // longer parses grants nothing.
                let parsed: Vec<Scope> =
                    scopes.iter().filter_map(|s| Scope::parse(s).ok()).collect();
                granted.intersect(Scope::allowed(&parsed, repo))
            }
        }
    }

    fn identity_claims(
        &self,
        who: &Identity,
        kind: Kind,
        ttl: Duration,
    ) -> Result<Claims, AuthError> {
        let mut c = self
            .signer
            .claims(who.user.as_deref().unwrap_or(""), kind, ttl)?;
        c.tid = who.token_id.clone();
        c.scp = who.scopes.clone();
        Ok(c)
    }

    /// An access token granting `grants` (already intersected with rights).
    pub fn issue(&self, who: &Identity, grants: &[(String, Actions)]) -> Result<Issued, AuthError> {
        let mut c = self.identity_claims(who, Kind::Access, self.live().token_ttl)?;
        c.access = grants
            .iter()
            .filter(|(_, a)| !a.is_empty())
            .map(|(n, a)| AccessEntry::repository(n, *a))
            .collect();
        Ok(Issued {
            token: self.signer.sign(&c)?,
            expires_in: c.exp - c.iat,
            issued_at: c.iat,
        })
    }

    /// A refresh token for an authenticated caller (`None` for anonymous).
    pub fn refresh_token(&self, who: &Identity) -> Result<Option<String>, AuthError> {
        if who.user.is_none() {
            return Ok(None);
        }
        let mut c = self.identity_claims(who, Kind::Refresh, REFRESH_TTL)?;
        c.pwf = who.password_fingerprint.clone();
        self.signer.sign(&c).map(Some)
    }

    /// A bearer token's identity and grants.
    pub fn verify_access(&self, token: &str) -> Result<std::sync::Arc<Granted>, AuthError> {
        let now = token::now_secs();
        if let Some(g) = self.verified.get(token, now) {
            return Ok(g);
        }
        let c = self.signer.verify(token, Kind::Access)?;
        let exp = c.exp;
        let mut access: HashMap<String, Actions> = HashMap::new();
        for e in &c.access {
            if e.kind == "repository" {
                let a = access.entry(e.name.clone()).or_default();
                *a = a.union(e.actions());
            }
        }
        let granted = std::sync::Arc::new(Granted {
            identity: Identity {
                user: (!c.sub.is_empty()).then(|| c.sub.clone()),
                token_id: c.tid,
                scopes: c.scp,
                password_fingerprint: None,
            },
            access,
        });
        self.verified.insert(token, granted.clone(), exp);
        Ok(granted)
    }

    /// The identity behind a refresh token, if it still holds: its API token
    /// not revoked or expired, its user's password unchanged.
    pub async fn verify_refresh(&self, token: &str) -> Result<Identity, AuthError> {
        let c = self.signer.verify(token, Kind::Refresh)?;
        let gone = || AuthError::InvalidToken("the login behind this token no longer holds".into());
        if c.sub.is_empty() {
            return Err(gone());
        }
        match &c.tid {
            Some(id) => {
                let record = self.tokens.get(id).await?.ok_or_else(gone)?;
                if record.expired() || record.user != c.sub {
                    return Err(gone());
                }
                Ok(Identity {
                    user: Some(c.sub),
                    token_id: Some(record.id),
                    scopes: Some(record.scopes),
                    password_fingerprint: None,
                })
            }
            None => {
                let live = self.live();
                let h = live.htpasswd.as_ref().ok_or_else(gone)?;
                let fp = h.entries().fingerprint(&c.sub);
                if fp.is_none() || fp != c.pwf {
                    return Err(gone());
                }
                Ok(Identity {
                    user: Some(c.sub),
                    token_id: None,
                    scopes: None,
                    password_fingerprint: fp,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(repos: &[&str], subjects: &[&str], actions: &[&str]) -> RuleConfig {
        RuleConfig {
            repositories: repos.iter().map(|s| s.to_string()).collect(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            actions: actions.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn setup(dir: &Path) -> Auth {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let ht = dir.join("htpasswd");
        std::fs::write(&ht, format!("alice:{hash}\n")).unwrap();
        Auth::open(
            AuthConfig {
                signing_key_file: None,
                htpasswd: Some(ht),
                token_ttl: DEFAULT_TOKEN_TTL,
                groups: HashMap::new(),
                rules: vec![
                    rule(&["team/**"], &["alice", "ci"], &["pull", "push", "delete"]),
                    rule(&["pub/**"], &["anonymous"], &["pull"]),
                ],
                realm: None,
                service: "berth".into(),
                max_login_failures: 3,
            },
            dir,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn login_rights_tokens_and_scopes() {
        let dir = tempfile::tempdir().unwrap();
        let auth = setup(dir.path());
        let me = auth.login("alice", b"pw", None).await.unwrap();
        assert_eq!(auth.rights(&me, "team/app"), Actions::ALL);
        assert_eq!(auth.rights(&me, "pub/x"), Actions::PULL);
        assert_eq!(auth.rights(&me, "other"), Actions::NONE);
        let store = TokenStore::new(&auth_dir(dir.path()));
        let (_, text) = store
            .create("ci", &["pull:team/a".into()], None)
            .await
            .unwrap();
        assert!(
            auth.login("alice", text.as_bytes(), None).await.is_err(),
            "another user's token"
        );
        let ci = auth.login("ci", text.as_bytes(), None).await.unwrap();
        assert_eq!(auth.rights(&ci, "team/a"), Actions::PULL);
        assert_eq!(auth.rights(&ci, "team/b"), Actions::NONE);
        // Tokens carry the identity and only what was granted.
        let issued = auth
            .issue(
                &ci,
                &[
                    ("team/a".into(), Actions::PULL),
                    ("team/b".into(), Actions::NONE),
                ],
            )
            .unwrap();
        let g = auth.verify_access(&issued.token).unwrap();
        assert_eq!(g.identity.user.as_deref(), Some("ci"));
        assert_eq!(g.access.len(), 1);
        assert_eq!(g.access["team/a"], Actions::PULL);
        assert_eq!(auth.rights(&g.identity, "team/b"), Actions::NONE);
        // Refresh tokens end with the API token.
        let r = auth.refresh_token(&ci).unwrap().unwrap();
        assert!(auth.verify_refresh(&r).await.is_ok());
        assert!(auth.verify_access(&r).is_err());
        store.revoke(ci.token_id.as_deref().unwrap()).await.unwrap();
        assert!(auth.verify_refresh(&r).await.is_err());
        // ...and with a changed password.
        let r = auth.refresh_token(&me).unwrap().unwrap();
        assert!(auth.verify_refresh(&r).await.is_ok());
        assert!(auth
            .refresh_token(&Identity::anonymous())
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn failed_logins_are_limited_per_address() {
        let dir = tempfile::tempdir().unwrap();
        let auth = setup(dir.path());
        let a: IpAddr = [192, 0, 2, 1].into();
        for _ in 0..3 {
            assert!(matches!(
                auth.login("alice", b"wrong", Some(a)).await,
                Err(AuthError::InvalidCredentials)
            ));
        }
        assert!(matches!(
            auth.login("alice", b"pw", Some(a)).await,
            Err(AuthError::TooManyAttempts(_))
        ));
        assert!(auth
            .login("alice", b"pw", Some([192, 0, 2, 2].into()))
            .await
            .is_ok());
    }

    #[test]
    fn short_ttl_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = Auth::open(
            AuthConfig {
                signing_key_file: None,
                htpasswd: None,
                token_ttl: Duration::from_secs(10),
                groups: HashMap::new(),
                rules: vec![],
                realm: None,
                service: "berth".into(),
                max_login_failures: 3,
            },
            dir.path(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("token_ttl"));
    }
}
