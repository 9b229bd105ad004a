//! `runtime-config containerd --apply`: pointing containerd's own
//! `config.toml` at the hosts directory, so that nobody edits it by hand.
//! The file is edited in place with `toml_edit`, which keeps the user's
//! other settings, comments and layout; only the CRI plugin's
//! `registry.config_path` changes. The table depends on the configuration's
//! `version`: 1 `[plugins.cri.registry]`, 2 (containerd 1.6/1.7)
//! `[plugins."io.containerd.grpc.v1.cri".registry]`, 3 (2.x)
//! `[plugins."io.containerd.cri.v1.images".registry]`. A file that does not
//! exist is created as a version 2 drop-in, which is what k0s reads from
//! `/etc/k0s/containerd.d/cri-registry.toml` (and what containerd 2.x
//! migrates on load).

use std::path::Path;

use toml_edit::{DocumentMut, Item, Table, Value};

use crate::containerd::{CRI_V2_PLUGIN, CRI_V3_PLUGIN};
use crate::ConfigError;

/// The edited file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub text: String,
    /// The dotted name of the table that holds `config_path`, for messages.
    pub table: String,
    /// `config_path` named `dest` already: nothing to restart for.
    pub unchanged: bool,
}

/// `existing` (the file's text, if it exists) with `dest` as the first
/// `config_path` (containerd reads several, separated by `:`; the user's
/// own are kept after it).
pub fn apply_config_path(
    existing: Option<&str>,
    dest: &Path,
    path_for_errors: &str,
) -> Result<Applied, ConfigError> {
    let refuse = |reason: String| ConfigError::Existing {
        path: path_for_errors.to_string(),
        reason,
    };
    let mut doc: DocumentMut = match existing {
        Some(text) => text
            .parse()
            .map_err(|e: toml_edit::TomlError| refuse(e.to_string()))?,
        None => {
            let mut d = DocumentMut::new();
            d["version"] = toml_edit::value(2);
            d
        }
    };
    // containerd reads a file without `version` as version 1.
    let version = match doc.get("version") {
        None => 1,
        Some(v) => v
            .as_integer()
            .ok_or_else(|| refuse("`version` is not an integer".to_string()))?,
    };
    let plugin = match version {
        1 => "cri",
        2 => CRI_V2_PLUGIN,
        3 => CRI_V3_PLUGIN,
        v => {
            return Err(refuse(format!(
                "configuration version {v} is not one containerd 1.x or 2.x reads"
            )))
        }
    };
    let table = format!("plugins.\"{plugin}\".registry");
    let registry = table_at(doc.as_table_mut(), &["plugins", plugin, "registry"])
        .ok_or_else(|| refuse(format!("[{table}] is not a table")))?;
    if registry.contains_key("mirrors") {
        return Err(refuse(format!(
            "[{table}] has `mirrors`, which containerd refuses beside `config_path`: move each mirror to a hosts.toml (berth runtime-config writes them) and remove the table"
        )));
    }
    if let Some(configs) = registry.get("configs").and_then(Item::as_table_like) {
        if let Some((host, _)) = configs
            .iter()
            .find(|(_, c)| c.as_table_like().is_some_and(|c| c.contains_key("tls")))
        {
            return Err(refuse(format!(
                "[{table}.configs.\"{host}\".tls] is refused by containerd beside `config_path`: put the CA in that registry's hosts.toml (`ca`) and remove it"
            )));
        }
    }
    let dest = dest.to_string_lossy().into_owned();
    let current: Vec<String> = match registry.get("config_path") {
        None => Vec::new(),
        Some(item) => item
            .as_str()
            .ok_or_else(|| refuse(format!("[{table}] config_path is not a string")))?
            .split(':')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect(),
    };
    let unchanged = current.first() == Some(&dest);
    if !unchanged {
        let mut paths = vec![dest.clone()];
        paths.extend(current.into_iter().filter(|p| *p != dest));
        registry.insert("config_path", toml_edit::value(paths.join(":")));
    }
    Ok(Applied {
        text: doc.to_string(),
        table,
        unchanged,
    })
}

/// The table at `path` under `root`, made where missing (as implicit
/// tables for the parents, so the file gains one `[a."b".c]` header).
fn table_at<'a>(root: &'a mut Table, path: &[&str]) -> Option<&'a mut Table> {
    let (first, rest) = path.split_first()?;
    let last = rest.is_empty();
    let item = root.entry(first).or_insert_with(|| {
        let mut t = Table::new();
        t.set_implicit(!last);
        Item::Table(t)
    });
    // `plugins = { ... }` written inline is read the same way.
    if let Item::Value(Value::InlineTable(inline)) = item {
        let t = std::mem::take(inline).into_table();
        *item = Item::Table(t);
    }
    let table = item.as_table_mut()?;
    if last {
        Some(table)
    } else {
        table_at(table, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(existing: Option<&str>) -> Result<Applied, ConfigError> {
        apply_config_path(
            existing,
            Path::new("/etc/containerd/certs.d"),
            "config.toml",
        )
    }

    fn config_path(text: &str, plugin: &str) -> String {
        let t: toml::Table = toml::from_str(text).unwrap();
        t["plugins"][plugin]["registry"]["config_path"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn versions_and_their_tables() {
        let v2 = "# my node\nversion = 2\nroot = \"/data/containerd\" # big disk\n\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"registry.k8s.io/pause:3.9\"\n";
        let a = apply(Some(v2)).unwrap();
        assert_eq!(
            config_path(&a.text, CRI_V2_PLUGIN),
            "/etc/containerd/certs.d"
        );
        // The user's settings and comments stay.
        assert!(
            a.text.contains("# my node") && a.text.contains("# big disk"),
            "{}",
            a.text
        );
        assert!(a
            .text
            .contains("sandbox_image = \"registry.k8s.io/pause:3.9\""));
        assert!(!a.unchanged);
        let again = apply(Some(&a.text)).unwrap();
        assert!(again.unchanged);
        assert_eq!(again.text, a.text);

        let v3 = apply(Some("version = 3\n")).unwrap();
        assert_eq!(
            config_path(&v3.text, CRI_V3_PLUGIN),
            "/etc/containerd/certs.d"
        );
        let v1 = apply(Some("[plugins.cri]\n  stream_server_port = \"0\"\n")).unwrap();
        assert_eq!(config_path(&v1.text, "cri"), "/etc/containerd/certs.d");
        // A new file is a version 2 drop-in with the one stanza (k0s).
        let new = apply(None).unwrap();
        assert_eq!(
            new.text,
            "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/etc/containerd/certs.d\"\n"
        );
        assert!(apply(Some("version = 9\n")).is_err());
    }

    #[test]
    fn existing_paths_are_kept_after_ours() {
        let a = apply(Some(
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/opt/hosts:/etc/containerd/certs.d\"\n",
        ))
        .unwrap();
        assert_eq!(
            config_path(&a.text, CRI_V2_PLUGIN),
            "/etc/containerd/certs.d:/opt/hosts"
        );
        let inline = apply(Some("version = 2\nplugins = { \"io.containerd.grpc.v1.cri\" = { sandbox_image = \"p\" } }\n")).unwrap();
        assert_eq!(
            config_path(&inline.text, CRI_V2_PLUGIN),
            "/etc/containerd/certs.d"
        );
    }

    #[test]
    fn what_containerd_would_refuse_is_refused() {
        for bad in [
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\nendpoint = [\"https://m\"]\n",
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"m\".tls]\nca_file = \"/ca\"\n",
            "version = 2\nplugins = 3\n",
            "not toml = = =\n",
        ] {
            assert!(apply(Some(bad)).is_err(), "{bad}");
        }
        // Credentials there are still allowed by containerd.
        assert!(apply(Some(
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"m\".auth]\nusername = \"u\"\n"
        ))
        .is_ok());
    }
}
