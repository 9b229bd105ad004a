//! containerd: `config_path` in config.toml, then the `hosts.toml` of each
//! registry under it, read in the order containerd searches them.

use std::path::{Path, PathBuf};

use crate::containerd::{read_registry_section, HostsToml};

use super::{
    fix_command, read, registry_keys, under, DoctorOptions, Finding, Level, MirrorRoute,
    RequestStyle, RuntimeReport,
};

pub(super) fn inspect_containerd(opts: &DoctorOptions, report: &mut RuntimeReport) {
    let config = Path::new("/etc/containerd/config.toml");
    let stanza_fix = format!(
        "add `config_path` to {}: run `{}` and follow what it prints",
        config.display(),
        fix_command("containerd", opts.mirror.as_ref(), "...")
    );
    let section = match read(&under(&opts.root, config)) {
        Err(e) => {
            report.findings.push(Finding::new(Level::Fail, e));
            return;
        }
        Ok(None) => {
            report.findings.push(
                Finding::new(
                    Level::Warn,
                    format!(
                        "no {}: containerd 2.x reads /etc/containerd/certs.d by default, containerd 1.x reads no hosts.toml at all",
                        config.display()
                    ),
                )
                .fix(stanza_fix.clone()),
            );
            crate::containerd::RegistrySection {
                version: 3,
                config_paths: vec![PathBuf::from(crate::containerd::DEFAULT_DEST)],
                has_mirrors: false,
            }
        }
        Ok(Some(text)) => match read_registry_section(&text) {
            Ok(s) => s,
            Err(e) => {
                report.findings.push(Finding::new(
                    Level::Fail,
                    format!("{} is not valid TOML: {e}", config.display()),
                ));
                return;
            }
        },
    };
    if section.has_mirrors && !section.config_paths.is_empty() {
        report.findings.push(
            Finding::new(
                Level::Fail,
                "config.toml sets both registry `mirrors` and `config_path`: containerd refuses that combination",
            )
            .fix("delete the `registry.mirrors` (and `registry.configs`) tables from config.toml and restart containerd"),
        );
    } else if section.has_mirrors {
        report.findings.push(
            Finding::new(
                Level::Warn,
                "config.toml uses the deprecated registry `mirrors` table, which this doctor does not follow",
            )
            .fix(format!("replace it with hosts.toml files: {stanza_fix}")),
        );
    }
    if section.config_paths.is_empty() {
        report.findings.push(
            Finding::new(
                Level::Fail,
                "config.toml sets no registry `config_path`: hosts.toml files are not read",
            )
            .fix(stanza_fix),
        );
        return;
    }
    report.findings.push(Finding::new(
        Level::Info,
        format!(
            "config_path = {}",
            section
                .config_paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        ),
    ));
    for key in registry_keys(&opts.registries) {
        let dir_name = if key == "*" { "_default" } else { key.as_str() };
        for base in &section.config_paths {
            let node_path = base.join(dir_name).join("hosts.toml");
            let text = match read(&under(&opts.root, &node_path)) {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(e) => {
                    report.findings.push(Finding::new(Level::Fail, e));
                    continue;
                }
            };
            match HostsToml::parse(&text) {
                Err(e) => report.findings.push(
                    Finding::new(
                        Level::Fail,
                        format!("{} is not valid: {e}", node_path.display()),
                    )
                    .fix(fix_command("containerd", opts.mirror.as_ref(), &key)),
                ),
                Ok(hosts) if hosts.host.is_empty() => report.findings.push(
                    Finding::new(
                        Level::Warn,
                        format!(
                            "{} has no [host] table: containerd 1.6/1.7 ignores it",
                            node_path.display()
                        ),
                    )
                    .fix(fix_command("containerd", opts.mirror.as_ref(), &key)),
                ),
                Ok(hosts) => {
                    let routes: Vec<MirrorRoute> = hosts
                        .host
                        .iter()
                        .filter(|(_, h)| {
                            h.capabilities.is_empty() || h.capabilities.iter().any(|c| c == "pull")
                        })
                        .map(|(url, _)| MirrorRoute {
                            base: url
                                .trim_end_matches('/')
                                .trim_end_matches("/v2")
                                .to_string(),
                            style: RequestStyle::NsQuery,
                            source: node_path.clone(),
                        })
                        .collect();
                    if !routes.is_empty() {
                        report.routes.insert(key.clone(), routes);
                    }
                }
            }
            break; // containerd uses the first directory that has the host
        }
    }
}
