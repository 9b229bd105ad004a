//! `registries.yaml` for k3s, RKE2 and k3d: `mirrors.<host>.endpoint` lists
//! the berth mirror first (k3s still falls back to the registry itself), and
//! `configs.<mirror>.tls` carries a CA or skip-verify when asked, and
//! `configs.<mirror>.auth` the mirror's credentials (`--creds`). An existing
//! file is merged, not replaced: other mirrors, credentials and keys the user
//! wrote stay as they were.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_norway::Mapping;

use crate::{generated_header, ConfigError, Plan, PlannedFile, Settings};

pub const K3S_DEST: &str = "/etc/rancher/k3s/registries.yaml";
pub const RKE2_DEST: &str = "/etc/rancher/rke2/registries.yaml";
/// k3d takes the file on its command line (`--registry-config`).
pub const K3D_DEST: &str = "registries.yaml";

/// A `registries.yaml` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RegistriesYaml {
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub mirrors: IndexMap<String, MirrorEntry>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub configs: IndexMap<String, ConfigEntry>,
    #[serde(flatten)]
    pub other: Mapping,
}

/// `mirrors.<host>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MirrorEntry {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoint: Vec<String>,
    /// `rewrite` and anything else.
    #[serde(flatten)]
    pub other: Mapping,
}

/// `configs.<host>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ConfigEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// `auth` and anything else.
    #[serde(flatten)]
    pub other: Mapping,
}

/// `configs.<host>.tls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TlsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    /// `cert_file`, `key_file` and anything else.
    #[serde(flatten)]
    pub other: Mapping,
}

impl RegistriesYaml {
    pub fn parse(text: &str) -> Result<RegistriesYaml, serde_norway::Error> {
        if text.trim().is_empty() {
            return Ok(RegistriesYaml::default());
        }
        serde_norway::from_str(text)
    }

    /// Route the settings' registries through the mirror, keeping everything
    /// else. With `override_path`, a `rewrite` puts each name under the
    /// plain registry's prefix (`^(.*)$` → `PREFIX/$1`).
    pub fn apply(&mut self, settings: &Settings) -> Result<(), ConfigError> {
        let mirror = settings.mirror.url();
        let mut hosts: Vec<&str> = settings
            .registries
            .hosts
            .iter()
            .map(String::as_str)
            .collect();
        if settings.registries.all {
            hosts.push("*");
        }
        for host in hosts {
            let prefix = match &settings.override_path {
                Some(o) => Some(o.for_registry((host != "*").then_some(host))?),
                None => None,
            };
            let entry = self.mirrors.entry(host.to_string()).or_default();
            entry.endpoint.retain(|e| e.trim_end_matches('/') != mirror);
            entry.endpoint.insert(0, mirror.clone());
            if let Some(prefix) = prefix.filter(|p| !p.is_empty()) {
                let mut rewrite = Mapping::new();
                rewrite.insert("^(.*)$".into(), format!("{prefix}/$1").into());
                entry.other.insert("rewrite".into(), rewrite.into());
            }
        }
        if let Some(creds) = &settings.creds {
            let config = self
                .configs
                .entry(settings.mirror.authority().to_string())
                .or_default();
            let mut auth = Mapping::new();
            auth.insert("username".into(), creds.username.clone().into());
            auth.insert("password".into(), creds.password.clone().into());
            config.other.insert("auth".into(), auth.into());
        }
        if settings.ca.is_some() || settings.skip_verify {
            let config = self
                .configs
                .entry(settings.mirror.authority().to_string())
                .or_default();
            let tls = config.tls.get_or_insert_with(TlsConfig::default);
            if let Some(ca) = &settings.ca {
                tls.ca_file = Some(ca.to_string_lossy().into_owned());
            }
            if settings.skip_verify {
                tls.insecure_skip_verify = Some(true);
            }
        }
        Ok(())
    }
}

/// Merge into `existing` (the file's current text, if any) and render.
pub fn render(
    settings: &Settings,
    existing: Option<&str>,
    path_for_errors: &str,
) -> Result<String, ConfigError> {
    let mut doc = match existing {
        Some(text) => RegistriesYaml::parse(text).map_err(|e| ConfigError::Existing {
            path: path_for_errors.to_string(),
            reason: e.to_string(),
        })?,
        None => RegistriesYaml::default(),
    };
    doc.apply(settings)?;
    let body = serde_norway::to_string(&doc).map_err(|e| ConfigError::Generate {
        what: "registries.yaml".to_string(),
        reason: e.to_string(),
    })?;
    Ok(format!("{}{body}", generated_header("#", "k3s")))
}

/// The merged `registries.yaml` at `dest`.
pub fn plan(
    settings: &Settings,
    dest: &std::path::Path,
    existing: Option<&str>,
) -> Result<Plan, ConfigError> {
    // An installed CA goes beside registries.yaml, which names it.
    let mut files = Vec::new();
    let with_ca;
    let settings = match &settings.ca_pem {
        Some(pem) => {
            let ca = dest
                .parent()
                .unwrap_or(std::path::Path::new("/"))
                .join(crate::CA_FILE_NAME);
            with_ca = settings.with_installed_ca(&ca);
            files.push(PlannedFile {
                path: ca,
                contents: pem.clone(),
            });
            &with_ca
        }
        None => settings,
    };
    let contents = render(settings, existing, &dest.display().to_string())?;
    files.push(PlannedFile {
        path: dest.to_path_buf(),
        contents,
    });
    let mut plan = Plan {
        files,
        ..Plan::default()
    };
    plan.instructions.push(
        "Restart k3s (`systemctl restart k3s`, or `k3s-agent` on agents; `rke2-server`/`rke2-agent` for RKE2) \
         on every node to apply it; for k3d pass the file as `k3d cluster create --registry-config FILE`."
            .to_string(),
    );
    if settings.registries.all {
        plan.warnings
            .push("older k3s/RKE2 releases ignore the `*` mirror entry: list the registries explicitly if unsure.".to_string());
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mirror, Registries};
    use std::path::{Path, PathBuf};

    fn settings(mirror: &str, registries: &str) -> Settings {
        Settings {
            mirror: Mirror::parse(mirror).unwrap(),
            registries: Registries::parse(registries).unwrap(),
            ca: None,
            skip_verify: false,
            ca_pem: None,
            certs_dir: None,
            creds: None,
            override_path: None,
        }
    }

    #[test]
    fn plain_registry_mirrors_get_a_rewrite() {
        let mut s = settings("https://harbor.corp", "docker.io,registry.local:5000");
        s.override_path = Some(crate::OverridePath::parse("airgap/{registry}").unwrap());
        let p = plan(&s, Path::new(K3S_DEST), None).unwrap();
        let doc = RegistriesYaml::parse(&p.files[0].contents).unwrap();
        let local = &doc.mirrors["registry.local:5000"];
        assert_eq!(local.endpoint, ["https://harbor.corp"]);
        assert_eq!(
            local.other["rewrite"]["^(.*)$"].as_str(),
            Some("airgap/registry.local__5000/$1")
        );
        s.override_path = Some(crate::OverridePath::parse("").unwrap());
        let p = plan(&s, Path::new(K3S_DEST), None).unwrap();
        let doc = RegistriesYaml::parse(&p.files[0].contents).unwrap();
        assert!(doc.mirrors["docker.io"].other.get("rewrite").is_none());
    }

    #[test]
    fn credentials_for_the_mirror() {
        let mut s = settings("https://mirror.lan:5000", "docker.io");
        s.creds = Some(crate::secret::Credentials::parse("node:s3cret").unwrap());
        let plan = plan(&s, Path::new(K3S_DEST), None).unwrap();
        let doc = RegistriesYaml::parse(&plan.files[0].contents).unwrap();
        let auth = &doc.configs["mirror.lan:5000"].other["auth"];
        assert_eq!(auth["username"].as_str(), Some("node"));
        assert_eq!(auth["password"].as_str(), Some("s3cret"));
    }

    #[test]
    fn plain_http_mirror_needs_no_configs() {
        let s = settings("http://10.0.0.5:5000", "docker.io,registry.k8s.io");
        let plan = plan(&s, Path::new(K3S_DEST), None).unwrap();
        let text = &plan.files[0].contents;
        let v: serde_norway::Value = serde_norway::from_str(text).unwrap();
        assert_eq!(
            v["mirrors"]["docker.io"]["endpoint"][0].as_str(),
            Some("http://10.0.0.5:5000")
        );
        assert_eq!(
            v["mirrors"]["registry.k8s.io"]["endpoint"][0].as_str(),
            Some("http://10.0.0.5:5000")
        );
        assert!(v.get("configs").is_none(), "{text}");
    }

    #[test]
    fn tls_configs_keyed_by_mirror_host() {
        let mut s = settings("https://mirror.example:5443", "*");
        s.ca = Some(PathBuf::from("/etc/ssl/berth-ca.pem"));
        s.skip_verify = true;
        let text = render(&s, None, "x").unwrap();
        let doc = RegistriesYaml::parse(&text).unwrap();
        assert_eq!(doc.mirrors["*"].endpoint, ["https://mirror.example:5443"]);
        let tls = doc.configs["mirror.example:5443"].tls.as_ref().unwrap();
        assert_eq!(tls.ca_file.as_deref(), Some("/etc/ssl/berth-ca.pem"));
        assert_eq!(tls.insecure_skip_verify, Some(true));
    }

    #[test]
    fn merges_keeping_user_entries() {
        let existing = r#"
mirrors:
  docker.io:
    endpoint:
      - https://old-mirror.example
    rewrite:
      "^library/(.*)": "mirrored/$1"
  my.company.registry:
    endpoint:
      - http://my.company.registry
configs:
  my.company.registry:
    auth:
      username: aladin
      password: abracadabra
"#;
        let s = settings("http://127.0.0.1:5000", "docker.io");
        let text = render(&s, Some(existing), "x").unwrap();
        let doc = RegistriesYaml::parse(&text).unwrap();
        assert_eq!(
            doc.mirrors["docker.io"].endpoint,
            ["http://127.0.0.1:5000", "https://old-mirror.example"]
        );
        assert!(doc.mirrors["docker.io"].other.contains_key("rewrite"));
        assert_eq!(
            doc.mirrors["my.company.registry"].endpoint,
            ["http://my.company.registry"]
        );
        let v: serde_norway::Value = serde_norway::from_str(&text).unwrap();
        assert_eq!(
            v["configs"]["my.company.registry"]["auth"]["password"].as_str(),
            Some("abracadabra")
        );
        // Applying twice changes nothing.
        assert_eq!(render(&s, Some(&text), "x").unwrap(), text);
    }

    #[test]
    fn bad_existing_file_is_an_error() {
        let s = settings("http://127.0.0.1:5000", "docker.io");
        assert!(render(&s, Some("mirrors: [unclosed"), "x").is_err());
        assert!(render(&s, Some(""), "x").is_ok());
    }
}
