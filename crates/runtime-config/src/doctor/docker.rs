//! Docker: `registry-mirrors` in daemon.json. Docker mirrors only Docker
//! Hub, so it is judged here rather than by the shared per-registry verdict.

use std::path::Path;

use berth_reference::DOCKER_HUB;

use crate::{docker, Mirror, Scheme};

use super::{
    fix_command, read, under, DoctorOptions, Finding, Level, MirrorRoute, RequestStyle,
    RuntimeReport,
};

pub(super) fn inspect_docker(opts: &DoctorOptions, report: &mut RuntimeReport) {
    let path = Path::new(docker::DEFAULT_DEST);
    let fix = fix_command("docker", opts.mirror.as_ref(), DOCKER_HUB);
    let doc = match read(&under(&opts.root, path)) {
        Ok(Some(t)) => match docker::parse(&t) {
            Ok(d) => d,
            Err(e) => {
                report.findings.push(Finding::new(
                    Level::Fail,
                    format!("{} is not valid JSON: {e}", path.display()),
                ));
                return;
            }
        },
        Ok(None) => docker::DaemonJson::new(),
        Err(e) => {
            report.findings.push(Finding::new(Level::Fail, e));
            return;
        }
    };
    let mirrors: Vec<MirrorRoute> = doc
        .get("registry-mirrors")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .filter_map(|s| Mirror::parse(s.trim_end_matches('/')).ok())
        .map(|m| MirrorRoute {
            base: m.url(),
            style: RequestStyle::Bare,
            source: path.to_path_buf(),
        })
        .collect();
    if opts.registries.includes_docker_hub() {
        let finding = match &opts.mirror {
            _ if mirrors.is_empty() => {
                Finding::new(Level::Fail, "docker.io: no registry-mirrors in daemon.json")
                    .fix(fix.clone())
            }
            Some(m) if !mirrors.iter().any(|r| r.base == m.url()) => Finding::new(
                Level::Fail,
                format!("docker.io: registry-mirrors does not list {m}"),
            )
            .fix(fix.clone()),
            _ => Finding::new(
                Level::Ok,
                format!(
                    "docker.io: routed to {}",
                    mirrors
                        .iter()
                        .map(|r| r.base.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        };
        report.findings.push(finding);
    }
    let others: Vec<&str> = opts
        .registries
        .hosts
        .iter()
        .map(String::as_str)
        .filter(|h| *h != DOCKER_HUB)
        .collect();
    if !others.is_empty() {
        report.findings.push(Finding::new(
            Level::Info,
            format!(
                "{}: Docker mirrors only Docker Hub; pull these through the mirror by name (MIRROR/{}/...)",
                others.join(", "),
                others.first().copied().unwrap_or_default()
            ),
        ));
    }
    if let Some(m) = &opts.mirror {
        let insecure: Vec<&str> = doc
            .get("insecure-registries")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect();
        if m.scheme() == Scheme::Http && !insecure.contains(&m.authority()) {
            report.findings.push(
                Finding::new(
                    Level::Warn,
                    format!(
                        "{m} is plain HTTP but {} is not in insecure-registries",
                        m.authority()
                    ),
                )
                .fix(fix),
            );
        }
    }
    if !mirrors.is_empty() {
        report.routes.insert(DOCKER_HUB.to_string(), mirrors);
    }
}
