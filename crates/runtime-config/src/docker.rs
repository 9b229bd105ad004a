//! Docker Engine's `daemon.json`: the mirror joins `registry-mirrors` (Docker
//! only ever mirrors Docker Hub) and, for plain HTTP or unverified TLS,
//! `insecure-registries`. The file is merged: every key the user had stays,
//! in its order, and existing list entries are kept.

use std::path::Path;

use indexmap::IndexMap;
use serde_json::Value;

use crate::{ConfigError, Plan, PlannedFile, Settings};

pub const DEFAULT_DEST: &str = "/etc/docker/daemon.json";
/// Where Docker looks for `<host>/ca.crt`.
pub const DEFAULT_CERTS_DIR: &str = "/etc/docker/certs.d";

/// A parsed `daemon.json`: top-level keys in the user's order.
pub type DaemonJson = IndexMap<String, Value>;

pub fn parse(text: &str) -> Result<DaemonJson, serde_json::Error> {
    if text.trim().is_empty() {
        return Ok(DaemonJson::new());
    }
    serde_json::from_str(text)
}

/// Add `item` to the string list under `key` unless present (comparing
/// without trailing slashes); `first` puts it at the front.
fn add_to_list(
    doc: &mut DaemonJson,
    key: &str,
    item: &str,
    first: bool,
    path: &str,
) -> Result<(), ConfigError> {
    let slot = doc
        .entry(key.to_string())
        .or_insert_with(|| Value::Array(Vec::new()));
    let Value::Array(list) = slot else {
        return Err(ConfigError::Existing {
            path: path.to_string(),
            reason: format!("{key:?} is not a list"),
        });
    };
    let same = |v: &Value| v.as_str().is_some_and(|s| s.trim_end_matches('/') == item);
    if list.iter().any(same) {
        return Ok(());
    }
    if first {
        list.insert(0, Value::String(item.to_string()));
    } else {
        list.push(Value::String(item.to_string()));
    }
    Ok(())
}

/// Merge the mirror into `existing` and render the whole file.
pub fn render(
    settings: &Settings,
    existing: Option<&str>,
    path_for_errors: &str,
) -> Result<String, ConfigError> {
    let mut doc = match existing {
        Some(text) => parse(text).map_err(|e| ConfigError::Existing {
            path: path_for_errors.to_string(),
            reason: e.to_string(),
        })?,
        None => DaemonJson::new(),
    };
    if settings.registries.includes_docker_hub() {
        add_to_list(
            &mut doc,
            "registry-mirrors",
            &settings.mirror.url(),
            true,
            path_for_errors,
        )?;
    }
    if settings.insecure() {
        add_to_list(
            &mut doc,
            "insecure-registries",
            settings.mirror.authority(),
            false,
            path_for_errors,
        )?;
    }
    let mut text = serde_json::to_string_pretty(&doc).map_err(|e| ConfigError::Generate {
        what: "daemon.json".to_string(),
        reason: e.to_string(),
    })?;
    text.push('\n');
    Ok(text)
}

/// The merged `daemon.json` at `dest`, with what Docker cannot do.
pub fn plan(settings: &Settings, dest: &Path, existing: Option<&str>) -> Result<Plan, ConfigError> {
    if settings
        .override_path
        .as_ref()
        .is_some_and(|o| !o.is_root())
    {
        return Err(ConfigError::Unsupported(
            "Docker's registry-mirrors take no path: a plain-registry mirror must hold Hub's images at its root (--override-path without a prefix)".to_string(),
        ));
    }
    let mut plan = Plan {
        files: vec![PlannedFile {
            path: dest.to_path_buf(),
            contents: render(settings, existing, &dest.display().to_string())?,
        }],
        ..Plan::default()
    };
    plan.instructions
        .push("Restart Docker to apply it: `systemctl restart docker`.".to_string());
    if settings.registries.includes_docker_hub() {
        plan.instructions.push(format!(
            "Docker asks a mirror for Hub images without naming the registry (no `?ns=`): run the mirror \
             with `berth serve --default-upstream docker.io` so that {} serves Docker Hub for bare names.",
            settings.mirror
        ));
    }
    let others: Vec<&str> = settings
        .registries
        .hosts
        .iter()
        .map(String::as_str)
        .filter(|h| *h != berth_reference::DOCKER_HUB)
        .collect();
    if settings.registries.all || !others.is_empty() {
        let which = if settings.registries.all {
            "registries other than Docker Hub".to_string()
        } else {
            others.join(", ")
        };
        plan.warnings.push(format!(
            "Docker can only mirror Docker Hub: {which} will still be pulled from the registry itself. \
             Pull them through berth by name instead, e.g. `docker pull {}/quay.io/ORG/IMAGE:TAG`.",
            settings.mirror.authority()
        ));
    }
    if !settings.registries.includes_docker_hub() && !settings.insecure() {
        plan.warnings.push(
            "nothing for Docker to change: Docker Hub is not among the registries.".to_string(),
        );
    }
    // daemon.json cannot name a CA: Docker reads certs.d/<host>/ca.crt.
    if let Some(pem) = &settings.ca_pem {
        plan.files.push(PlannedFile {
            path: settings.certs_d_file(DEFAULT_CERTS_DIR),
            contents: pem.clone(),
        });
    } else if settings.ca.is_some() {
        plan.instructions.push(format!(
            "daemon.json cannot name a CA: copy the CA file to {}.",
            settings.certs_d_file(DEFAULT_CERTS_DIR).display()
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
    fn a_prefix_is_refused_for_docker() {
        let mut s = settings("http://10.0.0.5:5000", "docker.io");
        s.override_path = Some(crate::OverridePath::parse("proxy").unwrap());
        assert!(plan(&s, Path::new("/d.json"), None).is_err());
        s.override_path = Some(crate::OverridePath::parse("").unwrap());
        assert!(plan(&s, Path::new("/d.json"), None).is_ok());
    }

    #[test]
    fn new_file_for_http_mirror() {
        let s = settings("http://10.1.2.3:5000", "docker.io");
        let v: Value = serde_json::from_str(&render(&s, None, "x").unwrap()).unwrap();
        assert_eq!(
            v["registry-mirrors"],
            serde_json::json!(["http://10.1.2.3:5000"])
        );
        assert_eq!(
            v["insecure-registries"],
            serde_json::json!(["10.1.2.3:5000"])
        );
    }

    #[test]
    fn merge_keeps_keys_order_and_entries() {
        let existing = r#"{
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m"},
  "ipv6": true,
  "registry-mirrors": ["https://old.example/"],
  "insecure-registries": ["10.0.0.0/8"]
}"#;
        let s = settings("http://127.0.0.1:5000", "docker.io,quay.io");
        let text = render(&s, Some(existing), "x").unwrap();
        let doc = parse(&text).unwrap();
        let keys: Vec<_> = doc.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "log-driver",
                "log-opts",
                "ipv6",
                "registry-mirrors",
                "insecure-registries"
            ]
        );
        assert_eq!(doc["log-opts"]["max-size"], "10m");
        assert_eq!(
            doc["registry-mirrors"],
            serde_json::json!(["http://127.0.0.1:5000", "https://old.example/"])
        );
        assert_eq!(
            doc["insecure-registries"],
            serde_json::json!(["10.0.0.0/8", "127.0.0.1:5000"])
        );
        assert_eq!(render(&s, Some(&text), "x").unwrap(), text, "idempotent");
        let plan = plan(&s, Path::new(DEFAULT_DEST), Some(existing)).unwrap();
        assert!(plan
            .warnings
            .iter()
            .any(|w| w.contains("only mirror Docker Hub") && w.contains("quay.io")));
    }

    #[test]
    fn https_mirror_is_not_insecure_and_bad_files_are_refused() {
        let s = settings("https://mirror.example", "*");
        let doc = parse(&render(&s, None, "x").unwrap()).unwrap();
        assert!(!doc.contains_key("insecure-registries"));
        assert_eq!(
            doc["registry-mirrors"],
            serde_json::json!(["https://mirror.example"])
        );
        assert!(render(&s, Some("{not json"), "x").is_err());
        assert!(render(&s, Some(r#"{"registry-mirrors": "x"}"#), "x").is_err());
        assert!(render(&s, Some("[]"), "x").is_err());
    }
}
