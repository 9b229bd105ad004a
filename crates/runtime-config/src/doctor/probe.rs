//! Probing over HTTP: the client, whether a mirror answers `/v2/`, and
//! resolving a tag through a route with the request the runtime would send.

use std::path::PathBuf;

use berth_reference::{ImageReference, DOCKER_HUB};

use super::{DoctorOptions, Finding, Level, MirrorRoute, RequestStyle};

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
