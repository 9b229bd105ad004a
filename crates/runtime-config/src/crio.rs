//! `registries.conf` (version 2 TOML) for CRI-O, Podman, Buildah and skopeo,
//! written as a drop-in in `registries.conf.d`. Each registry gets a
//! `[[registry]]` with the berth mirror as a `[[registry.mirror]]`. These
//! tools send no `?ns=`, so the mirror's location uses berth's path-prefix
//! form, `mirror:5000/<host>`: the registry host becomes the first component
//! of the repository name, which berth routes to that upstream.

use std::path::Path;

use serde::{Deserialize, Serialize};

use berth_reference::mirror_component;

use crate::{generated_header, ConfigError, Plan, PlannedFile, Settings};

/// Drop-ins are read in name order and later ones win; 90 keeps ours after
/// distribution defaults.
pub const DEFAULT_DEST: &str = "/etc/containers/registries.conf.d/90-berth-mirror.conf";
/// Where containers/image (CRI-O, Podman, skopeo) looks for `<host>/ca.crt`.
pub const DEFAULT_CERTS_DIR: &str = "/etc/containers/certs.d";

/// A `registries.conf` file (only the parts berth writes or reads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RegistriesConf {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registry: Vec<RegistryEntry>,
}

/// One `[[registry]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RegistryEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirror: Vec<MirrorEntry>,
}

/// One `[[registry.mirror]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MirrorEntry {
    pub location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
}

impl RegistryEntry {
    /// The prefix this entry matches (`prefix`, or `location` without one).
    pub fn effective_prefix(&self) -> Option<&str> {
        self.prefix.as_deref().or(self.location.as_deref())
    }
}

impl RegistriesConf {
    pub fn parse(text: &str) -> Result<RegistriesConf, toml::de::Error> {
        toml::from_str(text)
    }

    /// One entry per registry, mirrored through `settings.mirror`.
    pub fn for_mirror(settings: &Settings) -> Result<RegistriesConf, ConfigError> {
        if settings.registries.all {
            return Err(ConfigError::Unsupported(
                "registries.conf has no catch-all entry (only `*.domain` prefixes): list the registries to mirror"
                    .to_string(),
            ));
        }
        let insecure = settings.insecure().then_some(true);
        let registry = settings
            .registries
            .hosts
            .iter()
            .map(|host| {
                Ok(RegistryEntry {
                    prefix: Some(host.clone()),
                    location: Some(host.clone()),
                    insecure: None,
                    blocked: None,
                    mirror: vec![MirrorEntry {
                        location: mirror_location(settings, host)?,
                        insecure,
                    }],
                })
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(RegistriesConf { registry })
    }
}

/// `mirror-authority/<host>`: berth's path-prefix form of a mirror, with a
/// port spelled `__PORT` (`127.0.0.1:5000/registry.local__5000`), since a
/// `:` there is not a valid reference. With `override_path`, the plain
/// registry's prefix instead (`mirror-authority/PREFIX`, or the bare
/// authority for its root).
pub fn mirror_location(settings: &Settings, host: &str) -> Result<String, ConfigError> {
    let authority = settings.mirror.authority();
    let path = match &settings.override_path {
        Some(o) => o.for_registry(Some(host))?,
        None => mirror_component(host).unwrap_or_else(|| host.to_string()),
    };
    Ok(if path.is_empty() {
        authority.to_string()
    } else {
        format!("{authority}/{path}")
    })
}

pub fn render(settings: &Settings) -> Result<String, ConfigError> {
    let body = toml::to_string(&RegistriesConf::for_mirror(settings)?).map_err(|e| {
        ConfigError::Generate {
            what: "registries.conf".to_string(),
            reason: e.to_string(),
        }
    })?;
    Ok(format!(
        "{}# Image pulls try the berth mirror first, then the registry itself.\n\n{body}",
        generated_header("#", "crio")
    ))
}

/// The drop-in at `dest`. `runtime` names the tool in instructions.
pub fn plan(settings: &Settings, dest: &Path, runtime: &str) -> Result<Plan, ConfigError> {
    let mut plan = Plan {
        files: vec![PlannedFile {
            path: dest.to_path_buf(),
            contents: render(settings)?,
        }],
        ..Plan::default()
    };
    if runtime == "crio" {
        plan.instructions
            .push("Reload CRI-O to apply it: `systemctl reload crio` (or restart it).".to_string());
    } else {
        plan.instructions.push(
            "Podman, Buildah and skopeo read it on their next run; nothing to restart.".to_string(),
        );
    }
    // registries.conf cannot name a CA: containers/image reads
    // certs.d/<host>/ca.crt.
    if let Some(pem) = &settings.ca_pem {
        plan.files.push(PlannedFile {
            path: settings.certs_d_file(DEFAULT_CERTS_DIR),
            contents: pem.clone(),
        });
    } else if settings.ca.is_some() {
        plan.instructions.push(format!(
            "registries.conf cannot name a CA: copy the CA file to {} on every node.",
            settings.certs_d_file(DEFAULT_CERTS_DIR).display()
        ));
    }
    if settings.mirror.is_plain_http() {
        plan.warnings.push(format!(
            "the mirror {} is plain HTTP, so it is marked `insecure = true`.",
            settings.mirror
        ));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mirror, Registries};

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
    fn path_prefix_mirrors_marked_insecure_for_http() {
        let s = settings("http://127.0.0.1:5000", "docker.io,quay.io");
        let text = render(&s).unwrap();
        assert!(
            text.contains("[[registry]]") && text.contains("[[registry.mirror]]"),
            "{text}"
        );
        let conf = RegistriesConf::parse(&text).unwrap();
        assert_eq!(conf.registry.len(), 2);
        let hub = &conf.registry[0];
        assert_eq!(hub.prefix.as_deref(), Some("docker.io"));
        assert_eq!(hub.location.as_deref(), Some("docker.io"));
        assert_eq!(hub.insecure, None);
        assert_eq!(hub.mirror[0].location, "127.0.0.1:5000/docker.io");
        assert_eq!(hub.mirror[0].insecure, Some(true));
        assert_eq!(
            conf.registry[1].mirror[0].location,
            "127.0.0.1:5000/quay.io"
        );
    }

    #[test]
    fn https_mirror_is_secure_unless_skip_verify() {
        let mut s = settings("https://mirror.example", "ghcr.io");
        let conf = RegistriesConf::parse(&render(&s).unwrap()).unwrap();
        assert_eq!(
            conf.registry[0].mirror[0].location,
            "mirror.example/ghcr.io"
        );
        assert_eq!(conf.registry[0].mirror[0].insecure, None);
        s.skip_verify = true;
        let conf = RegistriesConf::parse(&render(&s).unwrap()).unwrap();
        assert_eq!(conf.registry[0].mirror[0].insecure, Some(true));
    }

    #[test]
    fn every_registry_is_refused_and_ca_explained() {
        let s = settings("https://mirror.example", "*");
        assert!(matches!(render(&s), Err(ConfigError::Unsupported(_))));
        let mut s = settings("https://mirror.example:5443", "quay.io");
        s.ca = Some("/ca.pem".into());
        let plan = plan(&s, Path::new(DEFAULT_DEST), "podman").unwrap();
        assert!(plan
            .instructions
            .iter()
            .any(|i| i.contains("/etc/containers/certs.d/mirror.example:5443/ca.crt")));
    }
}
