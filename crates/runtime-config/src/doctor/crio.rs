//! CRI-O and Podman: `registries.conf` and its drop-ins, later files
//! replacing earlier entries for the same prefix as containers/image does.

use std::path::{Path, PathBuf};

use crate::crio::RegistriesConf;
use crate::Mirror;

use super::{read, under, DoctorOptions, Finding, Level, MirrorRoute, RequestStyle, RuntimeReport};

/// `registries.conf` plus its drop-ins, in the order c/image reads them.
fn crio_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("/etc/containers/registries.conf")];
    let dir = Path::new("/etc/containers/registries.conf.d");
    if let Ok(entries) = std::fs::read_dir(under(root, dir)) {
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".conf"))
            .collect();
        names.sort();
        files.extend(names.into_iter().map(|n| dir.join(n)));
    }
    files
}

/// A mirror location whose path holds a `host:port` (what berth wrote
/// before it spelled ports `__PORT`): containers/image refuses the rewritten
/// reference, so every pull through it fails over to the registry itself.
fn port_in_location(location: &str, file: &Path) -> Option<Finding> {
    let (_, path) = location.split_once('/')?;
    let first = path.split('/').next()?;
    let spelled = berth_reference::mirror_component(first).filter(|s| s != first)?;
    Some(Finding::new(
        Level::Fail,
        format!(
            "{}: mirror location {location:?} is not a valid reference (a ':' in its path); berth names that mirror {spelled:?}: run `berth runtime-config crio` again",
            file.display()
        ),
    ))
}

pub(super) fn inspect_crio(opts: &DoctorOptions, report: &mut RuntimeReport) {
    let mut any = false;
    for path in crio_files(&opts.root) {
        let text = match read(&under(&opts.root, &path)) {
            Ok(Some(t)) => t,
            Ok(None) => continue,
            Err(e) => {
                report.findings.push(Finding::new(Level::Fail, e));
                continue;
            }
        };
        any = true;
        let conf = match RegistriesConf::parse(&text) {
            Ok(c) => c,
            Err(e) => {
                report.findings.push(Finding::new(
                    Level::Fail,
                    format!("{} is not a valid registries.conf: {e}", path.display()),
                ));
                continue;
            }
        };
        for entry in &conf.registry {
            let Some(prefix) = entry.effective_prefix() else {
                continue;
            };
            for m in &entry.mirror {
                report.findings.extend(port_in_location(&m.location, &path));
            }
            let routes: Vec<MirrorRoute> = entry
                .mirror
                .iter()
                .filter_map(|m| {
                    let (authority, rest) = m.location.split_once('/').unwrap_or((&m.location, ""));
                    let scheme = if m.insecure == Some(true) {
                        "http"
                    } else {
                        "https"
                    };
                    let mirror = Mirror::parse(&format!("{scheme}://{authority}")).ok()?;
                    let style = if rest.is_empty() {
                        RequestStyle::Bare
                    } else {
                        RequestStyle::PathPrefix(rest.to_string())
                    };
                    Some(MirrorRoute {
                        base: mirror.url(),
                        style,
                        source: path.clone(),
                    })
                })
                .collect();
            // A later file's entry for the same prefix replaces an earlier one.
            if routes.is_empty() {
                report.routes.remove(prefix);
            } else {
                report.routes.insert(prefix.to_string(), routes);
            }
        }
    }
    if !any {
        report.findings.push(Finding::new(
            Level::Info,
            "no registries.conf or drop-ins found",
        ));
    }
}
