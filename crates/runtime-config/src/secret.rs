//! Kubernetes pull Secrets for a registry (a berth mirror, usually): type
//! `kubernetes.io/dockerconfigjson`, so it works as a Pod's
//! `imagePullSecret` (and so for KubeVirt container disks), plus the
//! `accessKeyId`/`secretKey` pair CDI's registry importer reads from a
//! DataVolume's `secretRef`. Extra keys are allowed in this Secret type.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use berth_reference::{normalise_registry, DOCKER_HUB};
use serde::{Deserialize, Serialize};

use crate::{is_registry_host_name, ConfigError};

/// The key `docker login` and kubelet use for Docker Hub.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";
pub const DEFAULT_NAME: &str = "berth-pull-secret";
pub const SECRET_TYPE: &str = "kubernetes.io/dockerconfigjson";

/// `USER:PASS`, split at the first colon (passwords may contain colons).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    pub fn parse(s: &str) -> Result<Credentials, ConfigError> {
        let s = s.trim_end_matches(['\r', '\n']);
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() => Ok(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            }),
            _ => Err(ConfigError::Unsupported(
                "credentials must be USER:PASS with a non-empty user".to_string(),
            )),
        }
    }
}

/// The `.dockerconfigjson` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DockerConfigJson {
    pub auths: BTreeMap<String, AuthEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthEntry {
    pub username: String,
    pub password: String,
    /// base64 of `username:password`, which older consumers read instead.
    pub auth: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Secret {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    #[serde(rename = "type")]
    pub secret_type: String,
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The `auths` key for a registry: Docker Hub's historical URL for Hub,
/// `host[:port]` for everything else.
pub fn auth_key(registry: &str) -> Result<String, ConfigError> {
    let lower = registry.trim().to_ascii_lowercase();
    let without_scheme = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .unwrap_or(&lower);
    let host = normalise_registry(without_scheme.split('/').next().unwrap_or_default());
    if host == DOCKER_HUB {
        return Ok(DOCKER_HUB_AUTH_KEY.to_string());
    }
    if !is_registry_host_name(&host) {
        return Err(ConfigError::Registry(registry.to_string()));
    }
    Ok(host)
}

/// Kubernetes object names: DNS-1123 subdomain (namespaces: label).
fn valid_dns_name(s: &str, max: usize, dots: bool) -> bool {
    !s.is_empty()
        && s.len() <= max
        && (dots || !s.contains('.'))
        && s.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Build the Secret.
pub fn build(
    registry: &str,
    creds: &Credentials,
    name: Option<&str>,
    namespace: Option<&str>,
) -> Result<Secret, ConfigError> {
    let name = name.unwrap_or(DEFAULT_NAME);
    if !valid_dns_name(name, 253, true) {
        return Err(ConfigError::Unsupported(format!(
            "{name:?} is not a valid Secret name (lowercase letters, digits, '-' and '.')"
        )));
    }
    if let Some(ns) = namespace {
        if !valid_dns_name(ns, 63, false) {
            return Err(ConfigError::Unsupported(format!(
                "{ns:?} is not a valid namespace (lowercase letters, digits and '-')"
            )));
        }
    }
    let key = auth_key(registry)?;
    let auth = BASE64.encode(format!("{}:{}", creds.username, creds.password));
    let config = DockerConfigJson {
        auths: BTreeMap::from([(
            key,
            AuthEntry {
                username: creds.username.clone(),
                password: creds.password.clone(),
                auth,
            },
        )]),
    };
    let json = serde_json::to_string(&config).map_err(|e| ConfigError::Generate {
        what: ".dockerconfigjson".to_string(),
        reason: e.to_string(),
    })?;
    let data = BTreeMap::from([
        (".dockerconfigjson".to_string(), BASE64.encode(json)),
        ("accessKeyId".to_string(), BASE64.encode(&creds.username)),
        ("secretKey".to_string(), BASE64.encode(&creds.password)),
    ]);
    Ok(Secret {
        api_version: "v1".to_string(),
        kind: "Secret".to_string(),
        metadata: Metadata {
            name: name.to_string(),
            namespace: namespace.map(str::to_string),
            labels: BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "berth".to_string(),
            )]),
        },
        secret_type: SECRET_TYPE.to_string(),
        data,
    })
}

/// A ConfigMap carrying a registry's CA certificate under `ca.crt`: what
/// CDI's registry importer takes as a DataVolume's `certConfigMap` (and
/// KubeVirt's import of a containerDisk from a private-CA registry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigMap {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub data: BTreeMap<String, String>,
}

/// The CA ConfigMap for `pem` (one or more PEM certificates).
pub fn ca_config_map(
    name: &str,
    namespace: Option<&str>,
    pem: &str,
) -> Result<ConfigMap, ConfigError> {
    if !valid_dns_name(name, 253, true) {
        return Err(ConfigError::Unsupported(format!(
            "{name:?} is not a valid ConfigMap name (lowercase letters, digits, '-' and '.')"
        )));
    }
    if !pem.contains("-----BEGIN CERTIFICATE-----") || !pem.contains("-----END CERTIFICATE-----") {
        return Err(ConfigError::Unsupported(
            "the CA file holds no PEM certificate".to_string(),
        ));
    }
    Ok(ConfigMap {
        api_version: "v1".to_string(),
        kind: "ConfigMap".to_string(),
        metadata: Metadata {
            name: name.to_string(),
            namespace: namespace.map(str::to_string),
            labels: BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "berth".to_string(),
            )]),
        },
        data: BTreeMap::from([("ca.crt".to_string(), pem.trim_end().to_string() + "\n")]),
    })
}

/// The ConfigMap as a YAML document.
pub fn render_config_map(map: &ConfigMap) -> Result<String, ConfigError> {
    serde_norway::to_string(map).map_err(|e| ConfigError::Generate {
        what: "ConfigMap".to_string(),
        reason: e.to_string(),
    })
}

/// CDI's own registry-credentials Secret: `Opaque`, holding only
/// `accessKeyId` (the user) and `secretKey` (the password), as a
/// DataVolume's `source.registry.secretRef` names it.
pub fn build_cdi(
    registry: &str,
    creds: &Credentials,
    name: Option<&str>,
    namespace: Option<&str>,
) -> Result<Secret, ConfigError> {
    let mut secret = build(registry, creds, name, namespace)?;
    secret.secret_type = "Opaque".to_string();
    secret.data.remove(".dockerconfigjson");
    Ok(secret)
}

/// The Secret as a YAML document.
pub fn render(secret: &Secret) -> Result<String, ConfigError> {
    serde_norway::to_string(secret).map_err(|e| ConfigError::Generate {
        what: "Secret".to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials::parse("robot:pa:ss").unwrap()
    }

    fn decode(secret: &Secret) -> DockerConfigJson {
        let raw = BASE64.decode(&secret.data[".dockerconfigjson"]).unwrap();
        serde_json::from_slice(&raw).unwrap()
    }

    #[test]
    fn dockerconfigjson_round_trip() {
        let s = build(
            "mirror.example:5000",
            &creds(),
            Some("pull"),
            Some("kubevirt"),
        )
        .unwrap();
        let yaml = render(&s).unwrap();
        let back: Secret = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.secret_type, "kubernetes.io/dockerconfigjson");
        assert_eq!(back.metadata.namespace.as_deref(), Some("kubevirt"));
        let cfg = decode(&back);
        let entry = &cfg.auths["mirror.example:5000"];
        assert_eq!(entry.username, "robot");
        assert_eq!(entry.password, "pa:ss");
        assert_eq!(BASE64.decode(&entry.auth).unwrap(), b"robot:pa:ss");
        assert_eq!(BASE64.decode(&back.data["accessKeyId"]).unwrap(), b"robot");
        assert_eq!(BASE64.decode(&back.data["secretKey"]).unwrap(), b"pa:ss");
    }

    #[test]
    fn docker_hub_and_url_spellings() {
        for r in [
            "docker.io",
            "index.docker.io",
            "https://index.docker.io/v1/",
        ] {
            let key = auth_key(r).unwrap_or_else(|e| panic!("{r}: {e}"));
            assert_eq!(key, DOCKER_HUB_AUTH_KEY, "{r}");
        }
        assert_eq!(auth_key("http://127.0.0.1:5000").unwrap(), "127.0.0.1:5000");
        assert!(auth_key("not a host").is_err());
    }

    #[test]
    fn cdi_secret_holds_only_its_two_keys() {
        let s = build_cdi("mirror.example:5000", &creds(), Some("cdi-pull"), None).unwrap();
        assert_eq!(s.secret_type, "Opaque");
        let keys: Vec<&str> = s.data.keys().map(String::as_str).collect();
        assert_eq!(keys, ["accessKeyId", "secretKey"]);
        assert_eq!(BASE64.decode(&s.data["secretKey"]).unwrap(), b"pa:ss");
    }

    #[test]
    fn ca_config_map_for_cdi() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let m = ca_config_map("pull-ca", Some("vms"), pem).unwrap();
        let yaml = render_config_map(&m).unwrap();
        let back: ConfigMap = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(back.kind, "ConfigMap");
        assert_eq!(back.data["ca.crt"], pem);
        assert_eq!(back.metadata.namespace.as_deref(), Some("vms"));
        assert!(ca_config_map("pull-ca", None, "not a cert").is_err());
        assert!(ca_config_map("Bad_Name", None, pem).is_err());
    }

    #[test]
    fn rejects_bad_input() {
        assert!(Credentials::parse("nopass").is_err());
        assert!(Credentials::parse(":pass").is_err());
        assert_eq!(Credentials::parse("u:\n").unwrap().password, "");
        assert!(build("quay.io", &creds(), Some("Bad_Name"), None).is_err());
        assert!(build("quay.io", &creds(), None, Some("a.b")).is_err());
        let s = build("quay.io", &creds(), None, None).unwrap();
        assert_eq!(s.metadata.name, DEFAULT_NAME);
        assert!(!render(&s).unwrap().contains("namespace"));
        assert!(!format!("{:?}", creds()).contains("pa:ss"));
    }
}
