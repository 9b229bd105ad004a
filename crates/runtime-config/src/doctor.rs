//! `berth doctor`: on a node, read each container runtime's registry
//! configuration (containerd, k3s/RKE2, CRI-O/Podman, Docker), say for every
//! registry whether pulls are routed to a mirror, then resolve a tag through
//! each mirror found the way that runtime would ask for it. Every finding that
//! is not fine carries the command or edit that fixes it.
//!
//! Reading is synchronous and confined to a root directory (`/` on a real
//! node), so tests can point it at a fake filesystem; probing is async HTTP.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_reference::{ImageReference, DOCKER_HUB};
use serde::Serialize;

use crate::containerd::{read_registry_section, HostsToml};
use crate::crio::RegistriesConf;
use crate::k3s::RegistriesYaml;
use crate::{docker, Mirror, Registries, Scheme};

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
            Runtime::Docker => docker::DEFAULT_DEST,
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
        Runtime::Containerd => inspect_containerd(opts, &mut report),
        Runtime::K3s | Runtime::Rke2 => inspect_k3s(opts, &mut report),
        Runtime::Crio => inspect_crio(opts, &mut report),
        Runtime::Docker => inspect_docker(opts, &mut report),
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

fn inspect_containerd(opts: &DoctorOptions, report: &mut RuntimeReport) {
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

fn inspect_k3s(opts: &DoctorOptions, report: &mut RuntimeReport) {
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

fn inspect_crio(opts: &DoctorOptions, report: &mut RuntimeReport) {
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

fn inspect_docker(opts: &DoctorOptions, report: &mut RuntimeReport) {
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

/// The request path (and query) a runtime sends to resolve `image`.
pub fn manifest_path(image: &ImageReference, style: &RequestStyle) -> String {
    let reference = image.reference_str();
    match style {
        RequestStyle::NsQuery => format!(
            "/v2/{}/manifests/{reference}?ns={}",
            image.repository, image.registry
        ),
        RequestStyle::PathPrefix(prefix) => {
            format!("/v2/{prefix}/{}/manifests/{reference}", image.repository)
        }
        RequestStyle::Bare => format!("/v2/{}/manifests/{reference}", image.repository),
    }
}

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum ProbeSetupError {
    #[error("reading CA file {path}: {source}")]
    Ca {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CA file {path} is not PEM: {source}")]
    CaPem {
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("building the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// An HTTP client for probing mirrors.
pub fn client(opts: &DoctorOptions) -> Result<reqwest::Client, ProbeSetupError> {
    let mut builder = reqwest::Client::builder()
        .timeout(opts.timeout)
        .connect_timeout(opts.timeout)
        .redirect(reqwest::redirect::Policy::limited(5));
    if let Some(path) = &opts.ca {
        let pem = std::fs::read(path).map_err(|source| ProbeSetupError::Ca {
            path: path.clone(),
            source,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
            ProbeSetupError::CaPem {
                path: path.clone(),
                source,
            }
        })?;
        builder = builder.tls_certs_merge(certs);
    }
    if opts.skip_verify {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    builder.build().map_err(ProbeSetupError::Client)
}

fn describe_error(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn unreachable_fix(base: &str) -> String {
    format!("make sure `berth serve` is running and {base} is reachable from this node (address, port, firewall)")
}

/// Check that a mirror answers `/v2/`.
pub async fn ping(client: &reqwest::Client, base: &str) -> Finding {
    match client.get(format!("{base}/v2/")).send().await {
        Ok(r) if r.status().is_success() || r.status() == reqwest::StatusCode::UNAUTHORIZED => {
            Finding::new(
                Level::Ok,
                format!("{base}/v2/ answers ({})", r.status().as_u16()),
            )
        }
        Ok(r) => Finding::new(
            Level::Fail,
            format!("{base}/v2/ answers {}: this is not a registry", r.status()),
        )
        .fix("point the runtime at berth's own address (the mirror URL has no path)"),
        Err(e) => {
            let text = describe_error(&e);
            let fix = if text.to_ascii_lowercase().contains("certificate") {
                "the mirror's TLS certificate is not trusted: pass --ca FILE (and configure the runtime with --ca), \
                 or --skip-verify"
                    .to_string()
            } else {
                unreachable_fix(base)
            };
            Finding::new(Level::Fail, format!("{base} cannot be reached: {text}")).fix(fix)
        }
    }
}

/// Resolve `image` through one mirror route, as the runtime would.
pub async fn resolve(
    client: &reqwest::Client,
    image: &ImageReference,
    route: &MirrorRoute,
) -> Finding {
    let url = format!("{}{}", route.base, manifest_path(image, &route.style));
    let response = client
        .head(&url)
        .header(reqwest::header::ACCEPT, MANIFEST_ACCEPT)
        .send()
        .await;
    let cache_fix = format!(
        "preload it with `berth cache {image} --to {}`, or let berth reach {} (not --offline; --upstream/credentials)",
        route.base.split_once("://").map_or(route.base.as_str(), |(_, a)| a),
        image.registry
    );
    match response {
        Ok(r) if r.status().is_success() => {
            let digest = r
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            Finding::new(Level::Ok, format!("{image} resolves through {}{digest}", route.base))
        }
        Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {
            let mut f = Finding::new(
                Level::Fail,
                format!("{image}: {} answers 404 for {url}", route.base),
            );
            f = if route.style == RequestStyle::Bare && image.registry == DOCKER_HUB {
                f.fix(format!(
                    "Docker names no registry when it asks a mirror: run berth with `--default-upstream docker.io`, or {cache_fix}"
                ))
            } else {
                f.fix(cache_fix)
            };
            f
        }
        Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED || r.status() == reqwest::StatusCode::FORBIDDEN => {
            Finding::new(Level::Fail, format!("{image}: {} answers {}", route.base, r.status())).fix(
                "the mirror wants credentials: give the runtime a pull secret (`berth secret --registry MIRROR --creds USER:PASS`) or configure its auth",
            )
        }
        Ok(r) => Finding::new(Level::Fail, format!("{image}: {} answers {} for {url}", route.base, r.status()))
            .fix("see the berth server's log for the upstream error"),
        Err(e) => Finding::new(Level::Fail, format!("{image}: {} cannot be reached: {}", route.base, describe_error(&e)))
            .fix(unreachable_fix(&route.base)),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(root: &Path, mirror: Option<&str>, registries: &str) -> DoctorOptions {
        DoctorOptions {
            root: root.to_path_buf(),
            runtimes: Vec::new(),
            mirror: mirror.map(|m| Mirror::parse(m).unwrap()),
            registries: Registries::parse(registries).unwrap(),
            images: Vec::new(),
            ca: None,
            skip_verify: false,
            timeout: Duration::from_secs(2),
        }
    }

    fn put(root: &Path, path: &str, text: &str) {
        let p = under(root, Path::new(path));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn levels(r: &RuntimeReport) -> Vec<(Level, String)> {
        r.findings
            .iter()
            .map(|f| (f.level, f.message.clone()))
            .collect()
    }

    #[test]
    fn containerd_routes_from_generated_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(
            root,
            "/etc/containerd/config.toml",
            &crate::containerd::config_stanza(2, Path::new("/etc/containerd/certs.d")).unwrap(),
        );
        let o = opts(root, Some("http://127.0.0.1:5000"), "docker.io,quay.io");
        let settings = crate::Settings {
            mirror: Mirror::parse("http://127.0.0.1:5000").unwrap(),
            registries: Registries::parse("docker.io").unwrap(),
            ca: None,
            skip_verify: false,
            ca_pem: None,
            certs_dir: None,
            creds: None,
            override_path: None,
        };
        for file in crate::containerd::plan(&settings, &root.join("etc/containerd/certs.d"))
            .unwrap()
            .files
        {
            std::fs::create_dir_all(file.path.parent().unwrap()).unwrap();
            std::fs::write(&file.path, file.contents).unwrap();
        }
        assert_eq!(detect(root), [Runtime::Containerd]);
        let r = inspect(Runtime::Containerd, &o);
        let l = levels(&r);
        assert!(
            l.iter().any(|(lv, m)| *lv == Level::Ok
                && m.starts_with("docker.io: routed to http://127.0.0.1:5000")),
            "{l:?}"
        );
        let quay = r
            .findings
            .iter()
            .find(|f| f.message.starts_with("not routed") && f.message.ends_with("quay.io"))
            .unwrap();
        assert_eq!(quay.level, Level::Fail);
        assert!(quay
            .fix
            .as_deref()
            .unwrap()
            .contains("--registries quay.io"));
        assert_eq!(r.routes["docker.io"][0].style, RequestStyle::NsQuery);
    }

    #[test]
    fn containerd_without_config_path_or_with_mirrors() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(root, "/etc/containerd/config.toml", "version = 2\n");
        let r = inspect(Runtime::Containerd, &opts(root, None, "docker.io"));
        assert!(r
            .findings
            .iter()
            .any(|f| f.level == Level::Fail && f.message.contains("no registry `config_path`")));
        put(
            root,
            "/etc/containerd/config.toml",
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/c\"\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\nendpoint = [\"https://m\"]\n",
        );
        put(root, "/c/_default/hosts.toml", "server = \"https://x\"\n");
        let r = inspect(Runtime::Containerd, &opts(root, None, "*"));
        assert!(r
            .findings
            .iter()
            .any(|f| f.level == Level::Fail && f.message.contains("both")));
        assert!(r
            .findings
            .iter()
            .any(|f| f.level == Level::Warn && f.message.contains("no [host] table")));
    }

    #[test]
    fn k3s_crio_docker_routes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(
            root,
            "/etc/rancher/k3s/registries.yaml",
            "mirrors:\n  \"*\":\n    endpoint: [\"https://m.example:5000\"]\n",
        );
        put(
            root,
            "/etc/containers/registries.conf.d/90-berth-mirror.conf",
            "[[registry]]\nprefix = \"quay.io\"\nlocation = \"quay.io\"\n[[registry.mirror]]\nlocation = \"127.0.0.1:5000/quay.io\"\ninsecure = true\n",
        );
        put(
            root,
            "/etc/docker/daemon.json",
            r#"{"registry-mirrors": ["http://127.0.0.1:5000"]}"#,
        );
        assert_eq!(detect(root), [Runtime::K3s, Runtime::Crio, Runtime::Docker]);

        let k3s = inspect(
            Runtime::K3s,
            &opts(root, Some("https://m.example:5000"), "ghcr.io"),
        );
        assert!(levels(&k3s)
            .iter()
            .any(|(l, m)| *l == Level::Ok && m.starts_with("ghcr.io: routed")));

        let crio = inspect(
            Runtime::Crio,
            &opts(root, Some("http://127.0.0.1:5000"), "quay.io,ghcr.io"),
        );
        assert_eq!(
            crio.routes["quay.io"][0].style,
            RequestStyle::PathPrefix("quay.io".to_string())
        );
        assert_eq!(crio.routes["quay.io"][0].base, "http://127.0.0.1:5000");
        assert!(levels(&crio).iter().any(|(l, m)| *l == Level::Fail
            && m.starts_with("not routed")
            && m.contains("ghcr.io")));
        // What berth wrote before it spelled ports `__PORT`.
        put(
            root,
            "/etc/containers/registries.conf.d/91-old.conf",
            "[[registry]]\nprefix = \"registry.local:5000\"\n[[registry.mirror]]\nlocation = \"127.0.0.1:5000/registry.local:5000\"\n",
        );
        let crio = inspect(
            Runtime::Crio,
            &opts(root, Some("http://127.0.0.1:5000"), "quay.io"),
        );
        assert!(levels(&crio).iter().any(|(l, m)| *l == Level::Fail
            && m.contains("not a valid reference")
            && m.contains("registry.local__5000")));

        let docker = inspect(
            Runtime::Docker,
            &opts(root, Some("http://127.0.0.1:5000"), "docker.io"),
        );
        let l = levels(&docker);
        assert!(
            l.iter()
                .any(|(lv, m)| *lv == Level::Ok && m.starts_with("docker.io: routed")),
            "{l:?}"
        );
        assert!(
            l.iter()
                .any(|(lv, m)| *lv == Level::Warn && m.contains("insecure-registries")),
            "{l:?}"
        );
    }

    #[test]
    fn request_paths() {
        let image: ImageReference = "alpine:3".parse().unwrap();
        assert_eq!(
            manifest_path(&image, &RequestStyle::NsQuery),
            "/v2/library/alpine/manifests/3?ns=docker.io"
        );
        assert_eq!(
            manifest_path(&image, &RequestStyle::PathPrefix("docker.io".into())),
            "/v2/docker.io/library/alpine/manifests/3"
        );
        assert_eq!(
            manifest_path(&image, &RequestStyle::Bare),
            "/v2/library/alpine/manifests/3"
        );
    }

    #[tokio::test]
    async fn unreachable_mirror_is_reported_with_a_fix() {
        // Bind then drop a listener so the port is (almost certainly) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(
            dir.path(),
            Some(&format!("http://127.0.0.1:{port}")),
            "docker.io",
        );
        o.runtimes = vec![Runtime::Docker];
        let report = run(&o).await.unwrap();
        assert_eq!(report.worst(), Level::Fail);
        let probe = &report.probes[&format!("http://127.0.0.1:{port}")];
        assert_eq!(probe[0].level, Level::Fail);
        assert!(probe[0].fix.as_deref().unwrap().contains("berth serve"));
        let text = report.to_string();
        assert!(text.contains("fix: "), "{text}");
    }
}
