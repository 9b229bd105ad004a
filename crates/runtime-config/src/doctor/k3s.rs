//! k3s and RKE2: the `mirrors` of `registries.yaml`, which only take effect
//! when the service restarts.

use std::path::Path;

use crate::k3s::RegistriesYaml;
use crate::Mirror;

use super::{
    fix_command, read, under, DoctorOptions, Finding, Level, MirrorRoute, RequestStyle,
    RuntimeReport,
};

pub(super) fn inspect_k3s(opts: &DoctorOptions, report: &mut RuntimeReport) {
    let path = Path::new(report.runtime.main_config());
    let text = match read(&under(&opts.root, path)) {
        Ok(Some(t)) => t,
        Ok(None) => {
            report
                .findings
                .push(Finding::new(Level::Info, format!("no {}", path.display())));
            return;
        }
        Err(e) => {
            report.findings.push(Finding::new(Level::Fail, e));
            return;
        }
    };
    let doc = match RegistriesYaml::parse(&text) {
        Ok(d) => d,
        Err(e) => {
            report.findings.push(
                Finding::new(Level::Fail, format!("{} is not valid: {e}", path.display())).fix(
                    fix_command(report.runtime.name(), opts.mirror.as_ref(), "..."),
                ),
            );
            return;
        }
    };
    for (host, entry) in &doc.mirrors {
        let routes: Vec<MirrorRoute> = entry
            .endpoint
            .iter()
            .filter_map(|e| Mirror::parse(e.trim_end_matches('/').trim_end_matches("/v2")).ok())
            .map(|m| MirrorRoute {
                base: m.url(),
                style: RequestStyle::NsQuery,
                source: path.to_path_buf(),
            })
            .collect();
        if !routes.is_empty() {
            report.routes.insert(host.clone(), routes);
        }
    }
    report.findings.push(Finding::new(
        Level::Info,
        format!(
            "{} is applied when k3s/RKE2 starts: restart it after changes",
            path.display()
        ),
    ));
}
