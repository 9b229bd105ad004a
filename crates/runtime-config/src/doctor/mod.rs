//! `berth doctor`: on a node, read each container runtime's registry
//! configuration (containerd, k3s/RKE2, CRI-O/Podman, Docker), say for every
//! registry whether pulls are routed to a mirror, then resolve a tag through
//! each mirror found the way that runtime would ask for it. Every finding that
//! is not fine carries the command or edit that fixes it.
//!
//! Reading is synchronous and confined to a root directory (`/` on a real
//! node), so tests can point it at a fake filesystem; probing is async HTTP.
//!
//! Submodules: one per runtime read (`containerd`, `k3s` for k3s and RKE2,
//! `crio` for CRI-O/Podman, `docker`), and `probe` for the HTTP side. This
//! file holds the shared vocabulary (findings, routes, options), the
//! per-registry verdict every runtime but Docker shares, and the report.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_reference::ImageReference;
use serde::Serialize;

use crate::{Mirror, Registries};

mod containerd;
mod crio;
mod docker;
mod k3s;
mod probe;
#[cfg(test)]
mod tests;

pub use probe::{client, manifest_path, ping, resolve, ProbeSetupError};

/// The image resolved when none is named: every Kubernetes node needs it.
pub const DEFAULT_PROBE_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// The runtimes the doctor knows how to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Containerd,
    K3s,
    Rke2,
    /// CRI-O and Podman share `registries.conf`.
    Crio,
    Docker,
}

impl Runtime {
    pub const ALL: [Runtime; 5] = [
        Runtime::Containerd,
        Runtime::K3s,
        Runtime::Rke2,
        Runtime::Crio,
        Runtime::Docker,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::K3s => "k3s",
            Runtime::Rke2 => "rke2",
            Runtime::Crio => "crio",
            Runtime::Docker => "docker",
        }
    }

    /// The file whose presence says this runtime is configured on the node.
    pub fn main_config(self) -> &'static str {
        match self {
            Runtime::Containerd => "/etc/containerd/config.toml",
            Runtime::K3s => crate::k3s::K3S_DEST,
            Runtime::Rke2 => crate::k3s::RKE2_DEST,
            Runtime::Crio => "/etc/containers/registries.conf",
            Runtime::Docker => crate::docker::DEFAULT_DEST,
        }
    }

    /// How reports head this runtime's section.
    pub fn label(self) -> &'static str {
        match self {
            Runtime::Crio => "cri-o/podman (registries.conf)",
            other => other.name(),
        }
    }

    pub fn parse(s: &str) -> Option<Runtime> {
        match s {
            "containerd" => Some(Runtime::Containerd),
            "k3s" | "k3d" => Some(Runtime::K3s),
            "rke2" => Some(Runtime::Rke2),
            "crio" | "cri-o" | "podman" => Some(Runtime::Crio),
            "docker" => Some(Runtime::Docker),
            _ => None,
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Info,
    Warn,
    Fail,
}

impl Level {
    pub fn label(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Info => "info",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        }
    }
}

/// One thing the doctor found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub level: Level,
    pub message: String,
    pub fix: Option<String>,
}

impl Finding {
    fn new(level: Level, message: impl Into<String>) -> Finding {
        Finding {
            level,
            message: message.into(),
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Finding {
        self.fix = Some(fix.into());
        self
    }
}

/// How a runtime asks a mirror for `registry/name`: which base URL, and
/// whether the registry goes in a `?ns=` query (containerd), in front of the
/// name (registries.conf path-prefix mirrors), or nowhere (Docker).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct MirrorRoute {
    /// `scheme://host[:port]`.
    pub base: String,
    pub style: RequestStyle,
    /// Where this route was configured.
    pub source: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStyle {
    /// `/v2/<name>/manifests/<ref>?ns=<registry>`.
    NsQuery,
    /// `/v2/<prefix>/<name>/manifests/<ref>`.
    PathPrefix(String),
    /// `/v2/<name>/manifests/<ref>`.
    Bare,
}

/// What the doctor read for one runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuntimeReport {
    pub runtime: Runtime,
    pub findings: Vec<Finding>,
    /// Registry (`*` for every registry) → mirrors pulls go to, in order.
    pub routes: BTreeMap<String, Vec<MirrorRoute>>,
}

/// What to check.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// The filesystem root the runtime's files are read under (`/`).
    pub root: PathBuf,
    /// Runtimes to check; empty means every runtime configured on the node.
    pub runtimes: Vec<Runtime>,
    pub mirror: Option<Mirror>,
    pub registries: Registries,
    pub images: Vec<ImageReference>,
    /// Trust this CA (a PEM file on this machine) when probing.
    pub ca: Option<PathBuf>,
    pub skip_verify: bool,
    pub timeout: Duration,
}

/// Map an absolute node path under the root.
fn under(root: &Path, path: &Path) -> PathBuf {
    match path.strip_prefix("/") {
        Ok(rel) => root.join(rel),
        Err(_) => root.join(path),
    }
}

fn fix_command(runtime: &str, mirror: Option<&Mirror>, registries: &str) -> String {
    let mirror = mirror.map_or_else(|| "URL".to_string(), Mirror::url);
    format!("berth runtime-config {runtime} --mirror {mirror} --registries {registries}")
}

/// The registries to check: the named ones, plus `*` when asked.
fn registry_keys(registries: &Registries) -> Vec<String> {
    let mut keys = registries.hosts.clone();
    if registries.all {
        keys.push("*".to_string());
    }
    keys
}

/// Which runtimes have configuration under `root`.
pub fn detect(root: &Path) -> Vec<Runtime> {
    Runtime::ALL
        .into_iter()
        .filter(|r| {
            under(root, Path::new(r.main_config())).exists()
                || (*r == Runtime::Containerd
                    && under(root, Path::new(crate::containerd::DEFAULT_DEST)).is_dir())
                || (*r == Runtime::Crio
                    && under(root, Path::new("/etc/containers/registries.conf.d")).is_dir())
        })
        .collect()
}

/// Read one runtime's configuration.
pub fn inspect(runtime: Runtime, opts: &DoctorOptions) -> RuntimeReport {
    let mut report = RuntimeReport {
        runtime,
        findings: Vec::new(),
        routes: BTreeMap::new(),
    };
    match runtime {
        Runtime::Containerd => containerd::inspect_containerd(opts, &mut report),
        Runtime::K3s | Runtime::Rke2 => k3s::inspect_k3s(opts, &mut report),
        Runtime::Crio => crio::inspect_crio(opts, &mut report),
        Runtime::Docker => docker::inspect_docker(opts, &mut report),
    }
    judge_routes(opts, &mut report);
    report
}

/// Turn routes into per-registry findings.
fn judge_routes(opts: &DoctorOptions, report: &mut RuntimeReport) {
    let runtime = report.runtime;
    if runtime == Runtime::Docker {
        return; // judged in inspect_docker: only Docker Hub can be routed
    }
    let mut unrouted = Vec::new();
    for key in registry_keys(&opts.registries) {
        let routes = report.routes.get(&key).or_else(|| {
            if key != "*" {
                report.routes.get("*")
            } else {
                None
            }
        });
        let Some(routes) = routes else {
            unrouted.push(key);
            continue;
        };
        let bases = routes
            .iter()
            .map(|r| r.base.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let finding = match &opts.mirror {
            Some(m) if !routes.iter().any(|r| r.base == m.url()) => {
                Finding::new(Level::Fail, format!("{key}: routed to {bases}, not to {m}"))
                    .fix(fix_command(runtime.name(), opts.mirror.as_ref(), &key))
            }
            _ => Finding::new(
                Level::Ok,
                format!(
                    "{key}: routed to {bases} ({})",
                    routes
                        .first()
                        .map(|r| r.source.display().to_string())
                        .unwrap_or_default()
                ),
            ),
        };
        report.findings.push(finding);
    }
    if !unrouted.is_empty() {
        let list = unrouted.join(",");
        report.findings.push(
            Finding::new(
                Level::Fail,
                format!(
                    "not routed to a mirror, pulls go to the registry itself: {}",
                    unrouted.join(", ")
                ),
            )
            .fix(fix_command(runtime.name(), opts.mirror.as_ref(), &list)),
        );
    }
}

fn read(path: &Path) -> Result<Option<String>, String> {
    crate::write::read_existing(path).map_err(|e| e.to_string())
}

/// The doctor's whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub runtimes: Vec<RuntimeReport>,
    /// Mirror base URL → findings from talking to it.
    pub probes: BTreeMap<String, Vec<Finding>>,
    /// Findings not tied to a runtime or mirror.
    pub general: Vec<Finding>,
}

impl Report {
    pub fn worst(&self) -> Level {
        self.runtimes
            .iter()
            .flat_map(|r| &r.findings)
            .chain(self.probes.values().flatten())
            .chain(&self.general)
            .map(|f| f.level)
            .max()
            .unwrap_or(Level::Ok)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let write_findings = |f: &mut fmt::Formatter<'_>, findings: &[Finding]| -> fmt::Result {
            for finding in findings {
                writeln!(f, "  {:<5} {}", finding.level.label(), finding.message)?;
                if let Some(fix) = &finding.fix {
                    writeln!(f, "        fix: {fix}")?;
                }
            }
            Ok(())
        };
        for r in &self.runtimes {
            writeln!(f, "{}", r.runtime.label())?;
            write_findings(f, &r.findings)?;
        }
        for (base, findings) in &self.probes {
            writeln!(f, "mirror {base}")?;
            write_findings(f, findings)?;
        }
        if !self.general.is_empty() {
            writeln!(f, "node")?;
            write_findings(f, &self.general)?;
        }
        Ok(())
    }
}

/// Read the node's configuration and probe every mirror it routes to.
pub async fn run(opts: &DoctorOptions) -> Result<Report, ProbeSetupError> {
    let mut report = Report {
        runtimes: Vec::new(),
        probes: BTreeMap::new(),
        general: Vec::new(),
    };
    let runtimes = if opts.runtimes.is_empty() {
        detect(&opts.root)
    } else {
        opts.runtimes.clone()
    };
    if runtimes.is_empty() {
        report.general.push(
            Finding::new(
                Level::Fail,
                format!(
                    "no container runtime configuration found under {} (looked for {})",
                    opts.root.display(),
                    Runtime::ALL.map(Runtime::main_config).join(", ")
                ),
            )
            .fix("name the runtime with --runtime, or generate its configuration with `berth runtime-config`"),
        );
    }
    report.runtimes = runtimes.iter().map(|r| inspect(*r, opts)).collect();

    let client = client(opts)?;
    let images: Vec<ImageReference> = if opts.images.is_empty() {
        DEFAULT_PROBE_IMAGE.parse().into_iter().collect()
    } else {
        opts.images.clone()
    };
    // Every (mirror, request style) a runtime would use for each image.
    let mut probes: Vec<(ImageReference, MirrorRoute)> = Vec::new();
    for image in &images {
        for r in &report.runtimes {
            let routes = r.routes.get(&image.registry).or_else(|| r.routes.get("*"));
            for route in routes.into_iter().flatten() {
                if !probes
                    .iter()
                    .any(|(i, p)| i == image && p.base == route.base && p.style == route.style)
                {
                    probes.push((image.clone(), route.clone()));
                }
            }
        }
        if let Some(m) = &opts.mirror {
            if !probes.iter().any(|(i, p)| i == image && p.base == m.url()) {
                probes.push((
                    image.clone(),
                    MirrorRoute {
                        base: m.url(),
                        style: RequestStyle::NsQuery,
                        source: PathBuf::from("--mirror"),
                    },
                ));
            }
        }
    }
    let mut bases: Vec<String> = probes.iter().map(|(_, r)| r.base.clone()).collect();
    bases.sort();
    bases.dedup();
    for base in bases {
        let reachable = ping(&client, &base).await;
        let ok = reachable.level == Level::Ok;
        let mut findings = vec![reachable];
        if ok {
            for (image, route) in probes.iter().filter(|(_, r)| r.base == base) {
                findings.push(resolve(&client, image, route).await);
            }
        }
        report.probes.insert(base, findings);
    }
    if report.probes.is_empty() && !report.runtimes.is_empty() {
        report.general.push(
            Finding::new(
                Level::Warn,
                format!(
                    "no mirror to resolve {} through",
                    images
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .fix("route the registry to berth (see above), or name the mirror with --mirror"),
        );
    }
    Ok(report)
}
