//! containerd's registry host configuration: one `DEST/<host>/hosts.toml` per
//! mirrored registry (`_default` for every registry), read through the CRI
//! plugin's `config_path`. The upstream stays the `server`, so a node falls
//! back to it when the mirror cannot answer; the mirror is a `[host]` entry,
//! and containerd adds `?ns=<host>` to every request it sends there, which is
//! how berth knows which upstream a request is for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{generated_header, upstream_url, ConfigError, Plan, PlannedFile, Settings};

/// Where containerd packages conventionally keep host directories.
pub const DEFAULT_DEST: &str = "/etc/containerd/certs.d";
/// The host directory consulted for registries without one of their own.
pub const DEFAULT_HOST_DIR: &str = "_default";
/// The CRI plugin table holding `config_path` in a containerd 1.x
/// (`version = 2`) configuration.
pub const CRI_V2_PLUGIN: &str = "io.containerd.grpc.v1.cri";
/// The same table in containerd 2.x (`version = 3`).
pub const CRI_V3_PLUGIN: &str = "io.containerd.cri.v1.images";

/// A `hosts.toml` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HostsToml {
    /// The registry itself; omitted for `_default`, where containerd uses the
    /// host being pulled from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Hosts tried before `server`, in order, keyed by URL.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub host: BTreeMap<String, HostEntry>,
}

/// One `[host."URL"]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HostEntry {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaFiles>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_verify: Option<bool>,
    /// Anything else (client certificates, headers, override_path) a user
    /// wrote; only read by the doctor.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other: BTreeMap<String, toml::Value>,
}

/// `ca` is a path or a list of paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CaFiles {
    One(String),
    Many(Vec<String>),
}

impl HostsToml {
    /// The `hosts.toml` that puts `settings.mirror` in front of `registry`
    /// (`None` for `_default`).
    ///
    /// With `override_path` the mirror is a plain registry: the `[host]` URL
    /// is its API root for this registry's images (`MIRROR/v2/PREFIX`) and
    /// containerd requests `<that>/<name>/manifests/...` as it stands.
    pub fn for_mirror(
        settings: &Settings,
        registry: Option<&str>,
    ) -> Result<HostsToml, ConfigError> {
        let mut entry = HostEntry {
            capabilities: vec!["pull".to_string(), "resolve".to_string()],
            ca: settings
                .ca
                .as_ref()
                .map(|p| CaFiles::One(p.to_string_lossy().into_owned())),
            skip_verify: settings.skip_verify.then_some(true),
            other: BTreeMap::new(),
        };
        let mut url = settings.mirror.url();
        if let Some(o) = &settings.override_path {
            let prefix = o.for_registry(registry)?;
            url = if prefix.is_empty() {
                format!("{url}/v2")
            } else {
                format!("{url}/v2/{prefix}")
            };
            entry
                .other
                .insert("override_path".to_string(), toml::Value::Boolean(true));
        }
        Ok(HostsToml {
            server: registry.map(upstream_url),
            host: BTreeMap::from([(url, entry)]),
        })
    }

    pub fn parse(text: &str) -> Result<HostsToml, toml::de::Error> {
        toml::from_str(text)
    }
}

/// The host directory name containerd looks up for a registry.
pub fn host_dir_name(registry: Option<&str>) -> &str {
    registry.unwrap_or(DEFAULT_HOST_DIR)
}

/// Render one `hosts.toml`.
pub fn render(settings: &Settings, registry: Option<&str>) -> Result<String, ConfigError> {
    let body = toml::to_string(&HostsToml::for_mirror(settings, registry)?).map_err(|e| {
        ConfigError::Generate {
            what: "hosts.toml".to_string(),
            reason: e.to_string(),
        }
    })?;
    let what = registry.unwrap_or("every registry");
    Ok(format!(
        "{}# Pulls for {what} try the berth mirror first, then the registry itself.\n\n{body}",
        generated_header("#", "containerd")
    ))
}

/// Every `hosts.toml` under `dest`, plus the `config.toml` instructions.
pub fn plan(settings: &Settings, dest: &Path) -> Result<Plan, ConfigError> {
    let mut plan = Plan::default();
    let mut targets: Vec<Option<&str>> = settings
        .registries
        .hosts
        .iter()
        .map(|h| Some(h.as_str()))
        .collect();
    if settings.registries.all {
        targets.push(None);
    }
    for registry in targets {
        let dir = dest.join(host_dir_name(registry));
        // The CA goes beside each hosts.toml, which names it by path.
        let with_ca;
        let settings = match &settings.ca_pem {
            Some(pem) => {
                let ca = dir.join(crate::CA_FILE_NAME);
                with_ca = settings.with_installed_ca(&ca);
                plan.files.push(PlannedFile {
                    path: ca,
                    contents: pem.clone(),
                });
                &with_ca
            }
            None => settings,
        };
        plan.files.push(PlannedFile {
            path: dir.join("hosts.toml"),
            contents: render(settings, registry)?,
        });
    }
    plan.instructions.push(config_instructions(dest)?);
    plan.warnings.push(
        "containerd refuses a CRI registry section that sets both `mirrors` and `config_path`: \
         remove any `[plugins.\"...\".registry.mirrors]` (and `configs`) tables when adding `config_path`."
            .to_string(),
    );
    if settings.mirror.is_plain_http() {
        plan.warnings.push(format!(
            "the mirror {} is plain HTTP: anyone on the path can alter images; use https:// with --ca outside a trusted network.",
            settings.mirror
        ));
    }
    Ok(plan)
}

/// The `config_path` stanzas for containerd 1.x and 2.x, with how to apply them.
pub fn config_instructions(dest: &Path) -> Result<String, ConfigError> {
    let v2 = config_stanza(2, dest)?;
    let v3 = config_stanza(3, dest)?;
    Ok(format!(
        "Point containerd at these files in /etc/containerd/config.toml, then restart containerd \
         (later changes under {dest} need no restart).\n\
         containerd 1.6/1.7 (config `version = 2`):\n\n{v2}\n\
         containerd 2.x (config `version = 3`):\n\n{v3}",
        dest = dest.display()
    ))
}

/// The smallest `config.toml` fragment setting `config_path` for a
/// configuration of the given version (2 for containerd 1.x, 3 for 2.x).
pub fn config_stanza(version: u8, dest: &Path) -> Result<String, ConfigError> {
    let plugin = if version >= 3 {
        CRI_V3_PLUGIN
    } else {
        CRI_V2_PLUGIN
    };
    let mut registry = toml::Table::new();
    registry.insert(
        "config_path".to_string(),
        toml::Value::String(dest.to_string_lossy().into_owned()),
    );
    let mut plugin_table = toml::Table::new();
    plugin_table.insert("registry".to_string(), toml::Value::Table(registry));
    let mut plugins = toml::Table::new();
    plugins.insert(plugin.to_string(), toml::Value::Table(plugin_table));
    let mut root = toml::Table::new();
    root.insert(
        "version".to_string(),
        toml::Value::Integer(i64::from(version)),
    );
    root.insert("plugins".to_string(), toml::Value::Table(plugins));
    toml::to_string(&root).map_err(|e| ConfigError::Generate {
        what: "config.toml stanza".to_string(),
        reason: e.to_string(),
    })
}

/// What a containerd `config.toml` says about registries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistrySection {
    /// The configuration's `version` (1 when absent, as containerd reads it).
    pub version: i64,
    /// `config_path`, split on `:` as containerd does.
    pub config_paths: Vec<PathBuf>,
    /// Whether the deprecated `mirrors` table is set.
    pub has_mirrors: bool,
}

/// Read the registry section of a `config.toml`, whichever version it is.
pub fn read_registry_section(config_toml: &str) -> Result<RegistrySection, toml::de::Error> {
    let root: toml::Table = toml::from_str(config_toml)?;
    let version = root
        .get("version")
        .and_then(toml::Value::as_integer)
        .unwrap_or(1);
    let mut out = RegistrySection {
        version,
        ..RegistrySection::default()
    };
    let plugins = root.get("plugins").and_then(toml::Value::as_table);
    for plugin in [CRI_V2_PLUGIN, CRI_V3_PLUGIN, "cri"] {
        let Some(registry) = plugins
            .and_then(|p| p.get(plugin))
            .and_then(|p| p.get("registry"))
            .and_then(toml::Value::as_table)
        else {
            continue;
        };
        if let Some(path) = registry.get("config_path").and_then(toml::Value::as_str) {
            out.config_paths
                .extend(path.split(':').filter(|p| !p.is_empty()).map(PathBuf::from));
        }
        if registry
            .get("mirrors")
            .and_then(toml::Value::as_table)
            .is_some_and(|m| !m.is_empty())
        {
            out.has_mirrors = true;
        }
    }
    Ok(out)
}

/// Where containerd reads its own configuration.
pub const CONFIG_TOML: &str = "/etc/containerd/config.toml";

/// Warnings about the node's current `config.toml` for host files written
/// to `dest`: a `mirrors` table (which cannot coexist with `config_path`), or
/// a `config_path` that points elsewhere.
pub fn existing_config_warnings(config_toml: &str, dest: &Path) -> Vec<String> {
    let section = match read_registry_section(config_toml) {
        Ok(s) => s,
        Err(e) => return vec![format!("{CONFIG_TOML} could not be read as TOML: {e}")],
    };
    let mut out = Vec::new();
    if section.has_mirrors {
        out.push(format!(
            "{CONFIG_TOML} sets registry `mirrors`: delete them before adding `config_path`, or containerd will not start its CRI plugin"
        ));
    }
    if !section.config_paths.is_empty() && !section.config_paths.iter().any(|p| p == dest) {
        out.push(format!(
            "{CONFIG_TOML} has config_path = {:?}, so containerd will not read {}: point config_path there, or write with --dest {}",
            section
                .config_paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
            dest.display(),
            section.config_paths[0].display()
        ));
    }
    out
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
    fn plain_registry_mirrors_get_override_path() {
        let mut s = settings("http://10.0.0.5:5000", "registry.local:5000,quay.io");
        s.override_path = Some(crate::OverridePath::parse("airgap/{registry}").unwrap());
        let p = plan(&s, Path::new("/c")).unwrap();
        let local: toml::Table = toml::from_str(&p.files[0].contents).unwrap();
        let host = local["host"]["http://10.0.0.5:5000/v2/airgap/registry.local__5000"]
            .as_table()
            .unwrap();
        assert_eq!(host["override_path"].as_bool(), Some(true));
        s.override_path = Some(crate::OverridePath::parse("").unwrap());
        let p = plan(&s, Path::new("/c")).unwrap();
        let quay: toml::Table = toml::from_str(&p.files[1].contents).unwrap();
        assert!(
            quay["host"].get("http://10.0.0.5:5000/v2").is_some(),
            "{quay}"
        );
        // `*` cannot fill {registry}.
        let mut s = settings("http://10.0.0.5:5000", "*");
        s.override_path = Some(crate::OverridePath::parse("p/{registry}").unwrap());
        assert!(plan(&s, Path::new("/c")).is_err());
    }

    #[test]
    fn one_hosts_toml_per_registry_with_upstream_server() {
        let s = settings("http://127.0.0.1:5000", "docker.io,quay.io");
        let plan = plan(&s, Path::new("/etc/containerd/certs.d")).unwrap();
        let paths: Vec<_> = plan
            .files
            .iter()
            .map(|f| f.path.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            paths,
            [
                "/etc/containerd/certs.d/docker.io/hosts.toml",
                "/etc/containerd/certs.d/quay.io/hosts.toml"
            ]
        );
        let hub: toml::Table = toml::from_str(&plan.files[0].contents).unwrap();
        assert_eq!(hub["server"].as_str(), Some("https://registry-1.docker.io"));
        let host = hub["host"]["http://127.0.0.1:5000"].as_table().unwrap();
        assert_eq!(
            host["capabilities"].as_array().unwrap(),
            &vec![toml::Value::from("pull"), toml::Value::from("resolve")]
        );
        assert!(!host.contains_key("skip_verify"));
        assert!(!host.contains_key("ca"));
        let quay = HostsToml::parse(&plan.files[1].contents).unwrap();
        assert_eq!(quay.server.as_deref(), Some("https://quay.io"));
        assert!(plan.files[0]
            .contents
            .contains("[host.\"http://127.0.0.1:5000\"]"));
    }

    #[test]
    fn every_registry_uses_default_dir_without_server() {
        let s = settings("https://mirror.example", "*");
        let plan = plan(&s, Path::new("/d")).unwrap();
        assert_eq!(plan.files.len(), 1);
        assert_eq!(plan.files[0].path, Path::new("/d/_default/hosts.toml"));
        let parsed = HostsToml::parse(&plan.files[0].contents).unwrap();
        assert_eq!(parsed.server, None);
        // containerd 1.6/1.7 ignores a hosts.toml without a [host] table.
        assert_eq!(parsed.host.len(), 1);
        assert!(parsed.host.contains_key("https://mirror.example"));
    }

    #[test]
    fn tls_options() {
        let mut s = settings("https://mirror.example:5443", "ghcr.io");
        s.ca = Some(PathBuf::from("/etc/berth/ca.pem"));
        s.skip_verify = true;
        let text = render(&s, Some("ghcr.io")).unwrap();
        let parsed = HostsToml::parse(&text).unwrap();
        let entry = &parsed.host["https://mirror.example:5443"];
        assert_eq!(
            entry.ca,
            Some(CaFiles::One("/etc/berth/ca.pem".to_string()))
        );
        assert_eq!(entry.skip_verify, Some(true));
    }

    #[test]
    fn stanzas_for_both_major_versions() {
        let v2 = config_stanza(2, Path::new("/etc/containerd/certs.d")).unwrap();
        let section = read_registry_section(&v2).unwrap();
        assert_eq!(section.version, 2);
        assert_eq!(
            section.config_paths,
            [PathBuf::from("/etc/containerd/certs.d")]
        );
        assert!(
            v2.contains("[plugins.\"io.containerd.grpc.v1.cri\".registry]"),
            "{v2}"
        );
        let v3 = config_stanza(3, Path::new("/x")).unwrap();
        let root: toml::Table = toml::from_str(&v3).unwrap();
        assert_eq!(root["version"].as_integer(), Some(3));
        assert_eq!(
            root["plugins"]["io.containerd.cri.v1.images"]["registry"]["config_path"].as_str(),
            Some("/x")
        );
        let instructions = config_instructions(Path::new("/x")).unwrap();
        assert!(instructions.contains("version = 2") && instructions.contains("version = 3"));
    }

    #[test]
    fn warns_about_the_nodes_config() {
        let dest = Path::new("/etc/containerd/certs.d");
        let ok = config_stanza(2, dest).unwrap();
        assert!(existing_config_warnings(&ok, dest).is_empty());
        let elsewhere = config_stanza(3, Path::new("/other")).unwrap();
        let w = existing_config_warnings(&elsewhere, dest);
        assert!(w.len() == 1 && w[0].contains("--dest /other"), "{w:?}");
        let mirrors = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\nendpoint = [\"https://x\"]\n";
        assert!(existing_config_warnings(mirrors, dest)[0].contains("`mirrors`"));
        assert_eq!(existing_config_warnings("not = [toml", dest).len(), 1);
    }

    #[test]
    fn reads_mirrors_and_multiple_config_paths() {
        let text = r#"
version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/a:/b"
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
  endpoint = ["https://x"]
"#;
        let s = read_registry_section(text).unwrap();
        assert_eq!(s.config_paths, [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert!(s.has_mirrors);
        assert_eq!(read_registry_section("").unwrap().version, 1);
    }
}
