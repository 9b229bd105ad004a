//! The auth flow against one registry: which `Authorization` header a request
//! carries before it is sent, and what to do with a 401's challenges.
//!
//! It owns the token cache, because tokens are the state that makes Docker
//! Hub usable: one token per scope set, reused until shortly before it
//! expires, so a pull of many layers costs one token request, not one per
//! blob. Once a registry has answered with a challenge, its scheme is
//! remembered and later requests authenticate up front (which also lets a
//! streamed upload body, which cannot be sent twice, go out authenticated).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use url::Url;

use crate::auth_file::Credentials;
use crate::challenge::Challenge;
use crate::error::UpstreamError;

/// Token lifetime assumed when the token server does not say (the token spec's default).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Largest number of cached tokens before expired ones are swept.
const TOKEN_CACHE_SWEEP_AT: usize = 1024;
/// Largest token response read.
const MAX_TOKEN_RESPONSE: usize = 1 << 20;

/// An access request for the token server: `repository:library/alpine:pull`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    pub resource_type: String,
    pub name: String,
    pub actions: BTreeSet<String>,
}

impl Scope {
    pub fn repository(name: &str, actions: &[&str]) -> Scope {
        Scope {
            resource_type: "repository".to_string(),
            name: name.to_string(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    pub fn pull(name: &str) -> Scope {
        Self::repository(name, &["pull"])
    }

    pub fn push(name: &str) -> Scope {
        Self::repository(name, &["pull", "push"])
    }

    /// What `/v2/_catalog` needs.
    pub fn catalog() -> Scope {
        Scope {
            resource_type: "registry".to_string(),
            name: "catalog".to_string(),
            actions: ["*".to_string()].into_iter().collect(),
        }
    }

    /// Parse `type:name:action,action` (the name may itself contain ':',
    /// as in `repository:localhost:5000/x:pull`).
    pub fn parse(s: &str) -> Option<Scope> {
        let (rest, actions) = s.rsplit_once(':')?;
        let (resource_type, name) = rest.split_once(':')?;
        if resource_type.is_empty() || name.is_empty() {
            return None;
        }
        Some(Scope {
            resource_type: resource_type.to_string(),
            name: name.to_string(),
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let actions: Vec<&str> = self.actions.iter().map(String::as_str).collect();
        write!(
            f,
            "{}:{}:{}",
            self.resource_type,
            self.name,
            actions.join(",")
        )
    }
}

/// Merge scope lists: one entry per (type, name), actions united, sorted.
pub fn merge_scopes<'a>(scopes: impl IntoIterator<Item = &'a Scope>) -> Vec<Scope> {
    let mut by_resource: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for s in scopes {
        by_resource
            .entry((s.resource_type.clone(), s.name.clone()))
            .or_default()
            .extend(s.actions.iter().cloned());
    }
    by_resource
        .into_iter()
        .map(|((resource_type, name), actions)| Scope {
            resource_type,
            name,
            actions,
        })
        .collect()
}

/// A token as cached: its value and when to stop using it.
#[derive(Debug, Clone)]
pub struct CachedToken {
    pub token: String,
    /// Shortly before the server's expiry, so a request never leaves with a
    /// token that dies in flight.
    pub use_until: Instant,
}

/// How much earlier than its expiry a token is dropped: a quarter of its
/// lifetime, at most 30 s.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 4).min(Duration::from_secs(30))
}

/// Tokens by (realm, service, scope set). Time is passed in so that expiry is
/// testable without sleeping.
#[derive(Debug, Default)]
pub struct TokenCache {
    tokens: HashMap<String, CachedToken>,
}

impl TokenCache {
    pub fn key(realm: &str, service: Option<&str>, scopes: &[Scope]) -> String {
        let scopes: Vec<String> = merge_scopes(scopes).iter().map(Scope::to_string).collect();
        format!("{realm}\n{}\n{}", service.unwrap_or(""), scopes.join(" "))
    }

    pub fn get(&self, key: &str, now: Instant) -> Option<&CachedToken> {
        self.tokens.get(key).filter(|t| now < t.use_until)
    }

    /// Store a token obtained at `obtained` (when the request was sent) and
    /// valid for `lifetime`.
    pub fn insert(&mut self, key: String, token: String, lifetime: Duration, obtained: Instant) {
        if self.tokens.len() >= TOKEN_CACHE_SWEEP_AT {
            self.tokens.retain(|_, t| obtained < t.use_until);
            if self.tokens.len() >= TOKEN_CACHE_SWEEP_AT {
                self.tokens.clear();
            }
        }
        let use_until = obtained + lifetime.saturating_sub(refresh_margin(lifetime));
        self.tokens.insert(key, CachedToken { token, use_until });
    }

    pub fn remove(&mut self, key: &str) {
        self.tokens.remove(key);
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// The token server's answer. Docker's spec names the field `token`; OAuth2
/// servers send `access_token`; some send both.
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    pub fn parse(body: &[u8]) -> Result<(String, Duration), UpstreamError> {
        let r: TokenResponse = serde_json::from_slice(body).map_err(|e| {
            UpstreamError::Protocol(format!("token server answered with unparsable JSON: {e}"))
        })?;
        let token = r
            .token
            .filter(|t| !t.is_empty())
            .or(r.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| {
                UpstreamError::Protocol("token server answered without a token".to_string())
            })?;
        let lifetime = match r.expires_in {
            Some(s) if s > 0 => Duration::from_secs(s),
            _ => DEFAULT_TOKEN_LIFETIME,
        };
        Ok((token, lifetime))
    }
}

/// What a registry has shown it wants.
#[derive(Debug, Clone)]
enum Scheme {
    /// No challenge seen yet: send requests anonymously.
    Unknown,
    Basic,
    Bearer {
        realm: Url,
        service: Option<String>,
    },
}

/// Per-registry auth state: credentials, learned scheme, token cache.
#[derive(Debug)]
pub(crate) struct Authenticator {
    credentials: Option<Credentials>,
    base_url: Url,
    state: Mutex<(Scheme, TokenCache)>,
}

/// What to do about authentication for one request.
pub(crate) enum Plan {
    /// Send as is.
    Anonymous,
    Header(String),
    /// Fetch a Bearer token first.
    FetchToken {
        realm: Url,
        service: Option<String>,
        scopes: Vec<Scope>,
    },
}

impl Authenticator {
    pub(crate) fn new(credentials: Option<Credentials>, base_url: Url) -> Self {
        Authenticator {
            credentials,
            base_url,
            state: Mutex::new((Scheme::Unknown, TokenCache::default())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Scheme, TokenCache)> {
        // A panic while holding this lock cannot leave the cache inconsistent
        // (every update is one insert/remove), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The header to send before any challenge for this request is seen.
    pub(crate) fn plan(&self, scopes: &[Scope]) -> Plan {
        let state = self.lock();
        match &state.0 {
            Scheme::Unknown => Plan::Anonymous,
            Scheme::Basic => match &self.credentials {
                Some(c) => Plan::Header(c.basic_header()),
                None => Plan::Anonymous,
            },
            Scheme::Bearer { realm, service } => {
                let key = TokenCache::key(realm.as_str(), service.as_deref(), scopes);
                match state.1.get(&key, Instant::now()) {
                    Some(t) => Plan::Header(format!("Bearer {}", t.token)),
                    None => Plan::FetchToken {
                        realm: realm.clone(),
                        service: service.clone(),
                        scopes: scopes.to_vec(),
                    },
                }
            }
        }
    }

    /// React to a 401's challenges: learn the scheme and say how to retry.
    /// `refused` says the challenger saw our `Authorization` and rejected it
    /// (false when there was none, or a redirect to another host dropped
    /// it: then a cached token is still good). `Err` when nothing we hold
    /// can answer the challenge.
    pub(crate) fn plan_after_challenge(
        &self,
        challenges: &[Challenge],
        scopes: &[Scope],
        refused: bool,
    ) -> Result<Plan, UpstreamError> {
        let scopes_of_request = scopes;
        if let Some(b) = challenges.iter().find_map(Challenge::bearer) {
            // The realm is normally absolute; a relative one is taken against the registry.
            let realm = self.base_url.join(&b.realm).map_err(|e| {
                UpstreamError::Protocol(format!("Bearer realm {:?} is not a URL: {e}", b.realm))
            })?;
            if !matches!(realm.scheme(), "http" | "https") {
                return Err(UpstreamError::Protocol(format!(
                    "Bearer realm {realm} is not http(s)"
                )));
            }
            let wanted: Vec<Scope> = b.scopes.iter().filter_map(|s| Scope::parse(s)).collect();
            let scopes = merge_scopes(scopes.iter().chain(wanted.iter()));
            let mut state = self.lock();
            state.0 = Scheme::Bearer {
                realm: realm.clone(),
                service: b.service.clone(),
            };
            for s in [&scopes[..], scopes_of_request] {
                let key = TokenCache::key(realm.as_str(), b.service.as_deref(), s);
                if refused {
                    // A token we sent was refused: do not offer it again.
                    state.1.remove(&key);
                } else if let Some(t) = state.1.get(&key, Instant::now()) {
                    return Ok(Plan::Header(format!("Bearer {}", t.token)));
                }
            }
            return Ok(Plan::FetchToken {
                realm,
                service: b.service,
                scopes,
            });
        }
        if challenges.iter().any(Challenge::is_basic) {
            self.lock().0 = Scheme::Basic;
            return match &self.credentials {
                Some(c) => Ok(Plan::Header(c.basic_header())),
                None => Err(UpstreamError::Unauthorized {
                    status: 401,
                    message: "the registry requires Basic credentials and none are configured"
                        .to_string(),
                }),
            };
        }
        let schemes: Vec<&str> = challenges.iter().map(|c| c.scheme.as_str()).collect();
        Err(UpstreamError::Unauthorized {
            status: 401,
            message: if schemes.is_empty() {
                "the registry answered 401 without a usable WWW-Authenticate challenge".to_string()
            } else {
                format!(
                    "the registry asks for unsupported auth scheme(s): {}",
                    schemes.join(", ")
                )
            },
        })
    }

    /// A cached, still usable token for exactly these scopes, as a header.
    pub(crate) fn cached_header(
        &self,
        realm: &Url,
        service: Option<&str>,
        scopes: &[Scope],
    ) -> Option<String> {
        let key = TokenCache::key(realm.as_str(), service, scopes);
        self.lock()
            .1
            .get(&key, Instant::now())
            .map(|t| format!("Bearer {}", t.token))
    }

    pub(crate) fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// Remember a token fetched for `scopes` (the scopes of the request that
    /// will use it, which is what later lookups key on) and for `also` (the
    /// merged set actually requested).
    pub(crate) fn store_token(
        &self,
        realm: &Url,
        service: Option<&str>,
        keys: &[&[Scope]],
        token: &str,
        lifetime: Duration,
        obtained: Instant,
    ) {
        let mut state = self.lock();
        for scopes in keys {
            let key = TokenCache::key(realm.as_str(), service, scopes);
            state.1.insert(key, token.to_string(), lifetime, obtained);
        }
    }

    #[cfg(test)]
    pub(crate) fn cached_tokens(&self) -> usize {
        self.lock().1.len()
    }
}

/// The token request URL: `realm?service=…&scope=…&scope=…`.
pub(crate) fn token_url(realm: &Url, service: Option<&str>, scopes: &[Scope]) -> Url {
    let mut url = realm.clone();
    {
        let mut q = url.query_pairs_mut();
        if let Some(s) = service {
            q.append_pair("service", s);
        }
        for s in scopes {
            q.append_pair("scope", &s.to_string());
        }
    }
    url
}

pub(crate) const fn max_token_response() -> usize {
    MAX_TOKEN_RESPONSE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::challenge::parse_www_authenticate;

    #[test]
    fn scopes_parse_print_merge() {
        let s = Scope::parse("repository:library/alpine:pull").unwrap();
        assert_eq!(s, Scope::pull("library/alpine"));
        assert_eq!(s.to_string(), "repository:library/alpine:pull");
        let s = Scope::parse("repository:localhost:5000/x:push,pull").unwrap();
        assert_eq!(s.name, "localhost:5000/x");
        assert_eq!(s.to_string(), "repository:localhost:5000/x:pull,push");
        assert_eq!(Scope::catalog().to_string(), "registry:catalog:*");
        assert!(Scope::parse("nocolons").is_none());
        let merged = merge_scopes(&[
            Scope::pull("b"),
            Scope::push("a"),
            Scope::repository("b", &["delete"]),
        ]);
        let text: Vec<String> = merged.iter().map(Scope::to_string).collect();
        assert_eq!(
            text,
            vec!["repository:a:pull,push", "repository:b:delete,pull"]
        );
    }

    #[test]
    fn token_response_fields() {
        let (t, l) = TokenResponse::parse(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!((t.as_str(), l), ("abc", Duration::from_secs(300)));
        let (t, l) = TokenResponse::parse(br#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!((t.as_str(), l), ("xyz", DEFAULT_TOKEN_LIFETIME));
        let (t, _) = TokenResponse::parse(br#"{"token":"","access_token":"o"}"#).unwrap();
        assert_eq!(t, "o");
        let (_, l) = TokenResponse::parse(
            br#"{"token":"a","expires_in":0,"issued_at":"2024-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(l, DEFAULT_TOKEN_LIFETIME);
        assert!(TokenResponse::parse(br#"{"expires_in":5}"#).is_err());
        assert!(TokenResponse::parse(b"<html>").is_err());
    }

    #[test]
    fn token_expiry_with_margin() {
        let mut cache = TokenCache::default();
        let t0 = Instant::now();
        let key = TokenCache::key("https://auth/token", Some("svc"), &[Scope::pull("a")]);
        cache.insert(key.clone(), "tok".into(), Duration::from_secs(60), t0);
        // 60 s lifetime: used for 45 s.
        assert!(cache.get(&key, t0 + Duration::from_secs(44)).is_some());
        assert!(cache.get(&key, t0 + Duration::from_secs(45)).is_none());
        // 300 s lifetime (Docker Hub): dropped 30 s early.
        cache.insert(key.clone(), "tok2".into(), Duration::from_secs(300), t0);
        assert_eq!(
            cache
                .get(&key, t0 + Duration::from_secs(269))
                .map(|t| t.token.as_str()),
            Some("tok2")
        );
        assert!(cache.get(&key, t0 + Duration::from_secs(270)).is_none());
        // Scope order and duplicates do not change the key.
        let k1 = TokenCache::key("r", None, &[Scope::pull("a"), Scope::pull("b")]);
        let k2 = TokenCache::key(
            "r",
            None,
            &[Scope::pull("b"), Scope::pull("a"), Scope::pull("a")],
        );
        assert_eq!(k1, k2);
        assert_ne!(
            k1,
            TokenCache::key("r", None, &[Scope::push("a"), Scope::pull("b")])
        );
    }

    #[test]
    fn token_cache_is_bounded() {
        let mut cache = TokenCache::default();
        let t0 = Instant::now();
        for i in 0..(TOKEN_CACHE_SWEEP_AT + 10) {
            cache.insert(format!("k{i}"), "t".into(), Duration::from_secs(1), t0);
        }
        assert!(cache.len() <= TOKEN_CACHE_SWEEP_AT);
    }

    #[test]
    fn challenge_drives_plan() {
        let base = Url::parse("http://127.0.0.1:5000/").unwrap();
        let auth = Authenticator::new(None, base.clone());
        assert!(matches!(auth.plan(&[Scope::pull("a")]), Plan::Anonymous));
        let ch = parse_www_authenticate(
            r#"Bearer realm="/token",service="reg",scope="repository:a:pull,push""#,
        );
        match auth
            .plan_after_challenge(&ch, &[Scope::pull("a")], false)
            .unwrap()
        {
            Plan::FetchToken {
                realm,
                service,
                scopes,
            } => {
                assert_eq!(realm.as_str(), "http://127.0.0.1:5000/token");
                assert_eq!(service.as_deref(), Some("reg"));
                assert_eq!(scopes, vec![Scope::push("a")]);
            }
            _ => panic!("expected a token fetch"),
        }
        // Now known to be Bearer: later requests fetch up front.
        assert!(matches!(
            auth.plan(&[Scope::pull("b")]),
            Plan::FetchToken { .. }
        ));
        let realm = Url::parse("http://127.0.0.1:5000/token").unwrap();
        auth.store_token(
            &realm,
            Some("reg"),
            &[&[Scope::pull("b")]],
            "T",
            Duration::from_secs(60),
            Instant::now(),
        );
        assert!(matches!(auth.plan(&[Scope::pull("b")]), Plan::Header(h) if h == "Bearer T"));
        assert_eq!(auth.cached_tokens(), 1);

        // Basic without credentials is a clear refusal; with them, a header.
        let basic = parse_www_authenticate(r#"Basic realm="r""#);
        assert!(matches!(
            auth.plan_after_challenge(&basic, &[], false),
            Err(UpstreamError::Unauthorized { .. })
        ));
        let auth = Authenticator::new(Some(Credentials::new("u", "p")), base);
        assert!(
            matches!(auth.plan_after_challenge(&basic, &[], false), Ok(Plan::Header(h)) if h.starts_with("Basic "))
        );
        assert!(matches!(auth.plan(&[]), Plan::Header(_)));
        assert!(auth
            .plan_after_challenge(&parse_www_authenticate("Negotiate"), &[], false)
            .is_err());
    }

    #[test]
    fn token_url_has_service_and_scopes() {
        let realm = Url::parse("https://auth.docker.io/token?x=1").unwrap();
        let u = token_url(
            &realm,
            Some("registry.docker.io"),
            &[Scope::pull("library/alpine")],
        );
        assert_eq!(
            u.as_str(),
            "https://auth.docker.io/token?x=1&service=registry.docker.io&scope=repository%3Alibrary%2Falpine%3Apull"
        );
    }
}
