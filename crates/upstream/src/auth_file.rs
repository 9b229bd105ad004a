//! Registry credentials, and reading them from the files the ecosystem keeps
//! them in: Docker's `config.json` and Podman/skopeo's `auth.json`.
//!
//! Both files share one shape: `{"auths": {"<registry>": {"auth": base64(user:pass)}}}`
//! (some tools write `username`/`password` instead). Keys are spelled many
//! ways (`https://index.docker.io/v1/`, `docker.io`, `quay.io/org/repo`), so
//! lookups normalise them here, once, rather than in every caller.
//!
//! Credential helpers (`credsStore`, `credHelpers`) run external programs and
//! are not supported; entries that only name a helper are ignored.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use berth_reference::normalise_registry;
use serde::Deserialize;

/// A username and password (or token used as a password). `Debug` never
/// prints the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// An OAuth2 refresh token (`identitytoken` in `config.json`, what
    /// `docker login` keeps for registries such as ACR). When set, Bearer
    /// tokens are obtained with it (`POST` to the realm) instead of with
    /// the password.
    pub identity_token: Option<String>,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
            identity_token: None,
        }
    }

    /// Credentials that hold an OAuth2 refresh token.
    pub fn with_identity_token(username: impl Into<String>, token: impl Into<String>) -> Self {
        Credentials {
            identity_token: Some(token.into()),
            ..Credentials::new(username, "")
        }
    }

    /// Parse `user:password` (as given to `--creds`); the password may contain ':'.
    pub fn parse_user_pass(s: &str) -> Option<Credentials> {
        let (u, p) = s.split_once(':')?;
        (!u.is_empty()).then(|| Credentials::new(u, p))
    }

    /// The `Authorization: Basic …` value.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field(
                "identity_token",
                &self.identity_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid auth file: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    auths: HashMap<String, RawEntry>,
}

#[derive(Deserialize, Default)]
struct RawEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The `auths` of one parsed Docker `config.json` or Podman `auth.json`.
#[derive(Debug, Clone, Default)]
pub struct AuthFile {
    /// (normalised key: `host` or `host/path`, credentials)
    entries: Vec<(String, Credentials)>,
}

/// `https://index.docker.io/v1/` → `docker.io`; `quay.io/org/` → `quay.io/org`.
fn normalise_key(key: &str) -> String {
    let k = key.trim();
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let k = k.trim_end_matches('/');
    let (host, path) = match k.split_once('/') {
        Some((h, p)) => (h, p),
        None => (k, ""),
    };
    // Docker's legacy key carries an API version path, not a namespace.
    let path = match path {
        "v1" | "v2" => "",
        p => p,
    };
    let host = normalise_registry(host);
    if path.is_empty() {
        host
    } else {
        format!("{host}/{path}")
    }
}

impl AuthFile {
    /// Parse the JSON text of a `config.json`/`auth.json`. `origin` names the
    /// file in errors.
    pub fn parse(json: &[u8], origin: &Path) -> Result<AuthFile, AuthFileError> {
        let invalid = |message: String| AuthFileError::Invalid {
            path: origin.to_path_buf(),
            message,
        };
        let raw: RawFile = serde_json::from_slice(json).map_err(|e| invalid(e.to_string()))?;
        let mut entries = Vec::new();
        for (key, entry) in raw.auths {
            let creds = match (&entry.auth, &entry.username, &entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .map_err(|_| invalid(format!("the \"auth\" of {key:?} is not base64")))?;
                    let text = String::from_utf8(decoded)
                        .map_err(|_| invalid(format!("the \"auth\" of {key:?} is not UTF-8")))?;
                    Credentials::parse_user_pass(&text).ok_or_else(|| {
                        invalid(format!("the \"auth\" of {key:?} is not user:password"))
                    })?
                }
                (_, Some(u), Some(p)) if !u.is_empty() => Credentials::new(u.clone(), p.clone()),
                // An identity token alone (the username is informational then).
                (_, u, _)
                    if entry
                        .identitytoken
                        .as_deref()
                        .is_some_and(|t| !t.is_empty()) =>
                {
                    Credentials::new(u.clone().unwrap_or_default(), "")
                }
                // Empty entries are what `docker login` leaves when a helper holds the secret.
                _ => continue,
            };
            let creds = Credentials {
                identity_token: entry.identitytoken.filter(|t| !t.is_empty()),
                ..creds
            };
            entries.push((normalise_key(&key), creds));
        }
        // Deterministic: most specific key first, then by name.
        entries.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Ok(AuthFile { entries })
    }

    /// Read and parse one file.
    pub fn load(path: &Path) -> Result<AuthFile, AuthFileError> {
        let bytes = std::fs::read(path).map_err(|source| AuthFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&bytes, path)
    }

    /// Credentials for a registry host (`docker.io`, `localhost:5000`).
    pub fn credentials_for(&self, registry: &str) -> Option<Credentials> {
        let host = normalise_registry(registry);
        self.entries
            .iter()
            .find(|(k, _)| *k == host)
            .map(|(_, c)| c.clone())
    }

    /// Credentials for a repository on a registry: the most specific key wins
    /// (`quay.io/org/repo`, then `quay.io/org`, then `quay.io`), as Podman does.
    pub fn credentials_for_repository(
        &self,
        registry: &str,
        repository: &str,
    ) -> Option<Credentials> {
        let host = normalise_registry(registry);
        let full = format!("{host}/{repository}");
        self.entries
            .iter()
            .find(|(k, _)| *k == host || full == *k || full.starts_with(&format!("{k}/")))
            .map(|(_, c)| c.clone())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Where Podman, skopeo and Docker look for credentials, in that order of
/// preference, given an environment lookup (`std::env::var` in real use).
pub fn default_auth_file_paths(env: impl Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let nonempty = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(p) = nonempty("REGISTRY_AUTH_FILE") {
        out.push(PathBuf::from(p));
    }
    if let Some(d) = nonempty("XDG_RUNTIME_DIR") {
        out.push(Path::new(&d).join("containers/auth.json"));
    }
    let home = nonempty("HOME");
    match (nonempty("XDG_CONFIG_HOME"), &home) {
        (Some(x), _) => out.push(Path::new(&x).join("containers/auth.json")),
        (None, Some(h)) => out.push(Path::new(h).join(".config/containers/auth.json")),
        (None, None) => {}
    }
    match (nonempty("DOCKER_CONFIG"), &home) {
        (Some(d), _) => out.push(Path::new(&d).join("config.json")),
        (None, Some(h)) => out.push(Path::new(h).join(".docker/config.json")),
        (None, None) => {}
    }
    out
}

/// Look a registry (and repository) up in the default auth files: the first
/// file that has an entry wins. Missing files are skipped; unreadable or
/// malformed ones are errors (silently pulling anonymously would hide them).
pub fn credentials_from_default_files(
    registry: &str,
    repository: Option<&str>,
) -> Result<Option<Credentials>, AuthFileError> {
    for path in default_auth_file_paths(|k| std::env::var(k).ok()) {
        if !path.is_file() {
            continue;
        }
        let file = AuthFile::load(&path)?;
        let found = match repository {
            Some(r) => file.credentials_for_repository(registry, r),
            None => file.credentials_for(registry),
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn docker_config_json() {
        let json = format!(
            r#"{{
              "auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "localhost:5000": {{"auth": "{}"}},
                "ghcr.io": {{}},
                "quay.io": {{"username": "qu", "password": "qp"}}
              }},
              "credsStore": "desktop",
              "HttpHeaders": {{"User-Agent": "x"}}
            }}"#,
            b64("hubuser:hub:pass:with:colons"),
            b64("local:secret")
        );
        let f = AuthFile::parse(json.as_bytes(), Path::new("config.json")).unwrap();
        let hub = f.credentials_for("docker.io").unwrap();
        assert_eq!(hub.username, "hubuser");
        assert_eq!(hub.password, "hub:pass:with:colons");
        assert_eq!(f.credentials_for("index.docker.io"), Some(hub.clone()));
        assert_eq!(f.credentials_for("registry-1.docker.io"), Some(hub));
        assert_eq!(
            f.credentials_for("localhost:5000").unwrap().password,
            "secret"
        );
        assert_eq!(
            f.credentials_for("quay.io"),
            Some(Credentials::new("qu", "qp"))
        );
        assert_eq!(
            f.credentials_for("ghcr.io"),
            None,
            "helper-only entries are skipped"
        );
        assert_eq!(f.credentials_for("localhost:5001"), None);
    }

    #[test]
    fn podman_auth_json_namespaced_keys() {
        let json = format!(
            r#"{{"auths": {{"quay.io": {{"auth": "{}"}}, "quay.io/team": {{"auth": "{}"}}, "quay.io/team/app": {{"auth": "{}"}}}}}}"#,
            b64("host:h"),
            b64("team:t"),
            b64("app:a")
        );
        let f = AuthFile::parse(json.as_bytes(), Path::new("auth.json")).unwrap();
        let who = |repo: &str| {
            f.credentials_for_repository("quay.io", repo)
                .unwrap()
                .username
        };
        assert_eq!(who("team/app"), "app");
        assert_eq!(who("team/other"), "team");
        assert_eq!(who("teamx/other"), "host");
        assert_eq!(who("else"), "host");
        assert_eq!(f.credentials_for("quay.io").unwrap().username, "host");
    }

    #[test]
    fn bad_auth_fields_are_errors_without_secrets() {
        let bad = br#"{"auths": {"r.example": {"auth": "!!!not base64"}}}"#;
        let e = AuthFile::parse(bad, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.example") && e.contains("base64"), "{e}");
        let no_colon = format!(
            r#"{{"auths": {{"r.example": {{"auth": "{}"}}}}}}"#,
            b64("justuser")
        );
        assert!(AuthFile::parse(no_colon.as_bytes(), Path::new("c.json")).is_err());
        assert!(AuthFile::parse(br#"{"auths": []}"#, Path::new("c.json")).is_err());
        assert!(AuthFile::parse(b"not json", Path::new("c.json")).is_err());
        // No "auths" at all is a valid, empty file.
        assert!(AuthFile::parse(b"{}", Path::new("c.json"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn identity_tokens() {
        let json = format!(
            r#"{{"auths": {{
                "acr.example.io": {{"auth": "{}", "identitytoken": "refresh-me"}},
                "only.example.io": {{"identitytoken": "tok2"}}
            }}}}"#,
            b64("00000000-0000-0000-0000-000000000000:")
        );
        let f = AuthFile::parse(json.as_bytes(), Path::new("config.json")).unwrap();
        let c = f.credentials_for("acr.example.io").unwrap();
        assert_eq!(c.username, "00000000-0000-0000-0000-000000000000");
        assert_eq!(c.identity_token.as_deref(), Some("refresh-me"));
        let c = f.credentials_for("only.example.io").unwrap();
        assert_eq!(c.identity_token.as_deref(), Some("tok2"));
        assert!(!format!("{c:?}").contains("tok2"));
    }

    #[test]
    fn debug_redacts_password() {
        let c = Credentials::new("u", "hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.basic_header(), format!("Basic {}", b64("u:hunter2")));
    }

    #[test]
    fn default_paths_follow_env() {
        let env = |k: &str| match k {
            "REGISTRY_AUTH_FILE" => Some("/x/auth.json".to_string()),
            "XDG_RUNTIME_DIR" => Some("/run/user/1".to_string()),
            "HOME" => Some("/home/u".to_string()),
            "DOCKER_CONFIG" => Some("/d".to_string()),
            _ => None,
        };
        let p = default_auth_file_paths(env);
        assert_eq!(
            p,
            vec![
                PathBuf::from("/x/auth.json"),
                PathBuf::from("/run/user/1/containers/auth.json"),
                PathBuf::from("/home/u/.config/containers/auth.json"),
                PathBuf::from("/d/config.json"),
            ]
        );
        let p = default_auth_file_paths(|k| (k == "HOME").then(|| "/h".to_string()));
        assert_eq!(
            p,
            vec![
                PathBuf::from("/h/.config/containers/auth.json"),
                PathBuf::from("/h/.docker/config.json")
            ]
        );
    }
}
