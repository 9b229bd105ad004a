//! The repository pages: the list (local repositories, then mirrors by
//! upstream), one repository's tags, and one manifest (platforms, layers,
//! annotations, referrers and signatures, pull commands). What is shown is
//! what berth holds: a mirror's page lists what was cached, and nothing
//! here asks an upstream.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use berth_reference::{Digest, ManifestRef, RepositoryName, Tag};
use berth_registry::{Registry, RegistryError};
use http::StatusCode;
use maud::html;
use serde::Deserialize;

use super::layout::{self, bytes, pull_commands, short_digest, Section};
use super::{page_response, Viewer};
use crate::ApiState;

/// Most repositories one list page shows.
const REPOS_PER_PAGE: usize = 500;
/// Most repository names one list request looks at.
const SCANNED_PER_PAGE: usize = 5000;
/// Tag counts on the list stop here ("1000+").
const TAGS_COUNTED: usize = 1000;
/// Most referrers a manifest page lists.
const REFERRERS_SHOWN: usize = 100;
/// Most tags one repository page shows.
const TAGS_PER_PAGE: usize = 100;
/// Largest image config read for its platform and creation time.
const MAX_CONFIG: u64 = 1 << 20;

#[derive(Deserialize, Default)]
pub struct ListQuery {
    /// Only names containing this.
    q: Option<String>,
    /// The page after this name.
    last: Option<String>,
}

/// `/ui`: the repositories the caller may pull.
pub async fn home(
    State(state): State<ApiState>,
    Query(query): Query<ListQuery>,
    viewer: Viewer,
) -> Response {
    let filter = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let (names, next) =
        match visible_repositories(&state, &viewer, filter, query.last.clone()).await {
            Ok(found) => found,
            Err(e) => return failure(&viewer, &e),
        };
    let mut local = Vec::new();
    let mut mirrors: BTreeMap<String, Vec<(RepositoryName, String)>> = BTreeMap::new();
    for name in names {
        let tags = match state
            .registry
            .tags_list(&name, Some(TAGS_COUNTED), None)
            .await
        {
            Ok(p) if p.next_last.is_some() => format!("{TAGS_COUNTED}+"),
            Ok(p) => p.items.len().to_string(),
            Err(_) => "0".to_string(),
        };
        match name.mirror_parts() {
            Some((host, path)) => {
                let (host, path) = (host.to_string(), path.to_string());
                mirrors
                    .entry(host)
                    .or_default()
                    .push((name, format!("{path} · {tags} tags")));
            }
            None => local.push((name, tags)),
        }
    }
    let body = html! {
        @if viewer.auth_on && viewer.user().is_none() {
            p.note { "Showing what anonymous clients may pull. " a href="/ui/login" { "Sign in" } " to see more." }
        }
        form.search method="get" action="/ui/" {
            label for="q" { "Filter" }
            input #q type="search" name="q" value=[filter] placeholder="name contains…";
            button type="submit" { "Filter" }
        }
        section #local {
            h2 { "Local repositories" }
            @if local.is_empty() { p.empty { "None." } } @else {
                table.repos {
                    thead { tr { th { "Repository" } th.num { "Tags" } } }
                    tbody {
                        @for (name, tags) in &local {
                            tr { td { a href=(repo_href(name)) { (name.as_str()) } } td.num { (tags) } }
                        }
                    }
                }
            }
        }
        section #mirrors {
            h2 { "Mirrors" }
            @if mirrors.is_empty() { p.empty { "Nothing cached yet." } }
            @for (host, repos) in &mirrors {
                h3.upstream { (host) }
                ul.repos {
                    @for (name, label) in repos {
                        li { a href=(repo_href(name)) { (name.as_str()) } " " span.muted { (label) } }
                    }
                }
            }
        }
        @if let Some(last) = next {
            p.more { a href=(format!("/ui/?last={}{}", enc(&last), filter.map(|q| format!("&q={}", enc(q))).unwrap_or_default())) { "More repositories →" } }
        }
    };
    page_response(
        StatusCode::OK,
        layout::page(&viewer, Section::Repositories, "Repositories", body),
    )
}

/// Up to [`REPOS_PER_PAGE`] repositories after `last` that the caller may
/// pull (and whose name contains `filter`), and where the next page starts.
/// At most [`SCANNED_PER_PAGE`] names are looked at per request, however
/// few of them are shown: a caller who may see little pages through a big
/// catalog ("more") instead of making one request walk all of it.
async fn visible_repositories(
    state: &ApiState,
    viewer: &Viewer,
    filter: Option<&str>,
    mut last: Option<String>,
) -> Result<(Vec<RepositoryName>, Option<String>), RegistryError> {
    let mut shown = Vec::new();
    let mut scanned = 0;
    loop {
        let page = state.registry.catalog(Some(1000), last.as_deref()).await?;
        if page.items.is_empty() {
            return Ok((shown, None));
        }
        for item in page.items {
            last = Some(item.clone());
            scanned += 1;
            if viewer.caller.may_pull(&item) && filter.is_none_or(|f| item.contains(f)) {
                if let Ok(name) = item.parse::<RepositoryName>() {
                    shown.push(name);
                }
            }
            if shown.len() == REPOS_PER_PAGE || scanned == SCANNED_PER_PAGE {
                return Ok((shown, last));
            }
        }
        if page.next_last.is_none() {
            return Ok((shown, None));
        }
    }
}

/// `/ui/repo/<name>` (its tags) and `/ui/repo/<name>/-/manifest/<ref>`.
pub async fn repository(
    State(state): State<ApiState>,
    Path(path): Path<String>,
    Query(query): Query<ListQuery>,
    viewer: Viewer,
) -> Response {
    let (name, reference) = match path.split_once("/-/manifest/") {
        Some((name, reference)) => (name, Some(reference)),
        None => (path.trim_end_matches('/'), None),
    };
    // Not allowed and not there look the same.
    let Ok(repo) = name.parse::<RepositoryName>() else {
        return not_found(&viewer);
    };
    if !viewer.caller.may_pull(repo.as_str()) {
        return not_found(&viewer);
    }
    match reference {
        None => tags_page(&state, &viewer, &repo, query.last.as_deref()).await,
        Some(r) => match r.parse::<ManifestRef>() {
            Ok(r) => manifest_page(&state, &viewer, &repo, &r).await,
            Err(_) => not_found(&viewer),
        },
    }
}

async fn tags_page(
    state: &ApiState,
    viewer: &Viewer,
    repo: &RepositoryName,
    last: Option<&str>,
) -> Response {
    let page = match state
        .registry
        .tags_list(repo, Some(TAGS_PER_PAGE), last)
        .await
    {
        Ok(p) => p,
        Err(RegistryError::NameUnknown(_)) => return not_found(viewer),
        Err(e) => return failure(viewer, &e),
    };
    let mut rows = Vec::new();
    for tag in &page.items {
        let Ok(t) = tag.parse::<Tag>() else { continue };
        match state
            .registry
            .manifest_get(repo, &ManifestRef::Tag(t))
            .await
        {
            Ok(m) => rows.push((
                tag.clone(),
                Some(Summary::of(&state.registry, repo, &m.digest, &m.media_type, &m.bytes).await),
            )),
            Err(_) => rows.push((tag.clone(), None)),
        }
    }
    let first = page.items.first().map(|t| format!(":{t}"));
    let body = html! {
        p.breadcrumb { a href="/ui/" { "Repositories" } " / " (repo.as_str()) }
        @if let Some((host, _)) = repo.mirror_parts() {
            p.note { "A mirror of " strong { (host) } ": the tags cached here." }
        }
        table.tags {
            thead { tr { th { "Tag" } th { "Digest" } th { "Kind" } th { "Platforms" } th.num { "Size" } } }
            tbody {
                @for (tag, summary) in &rows {
                    tr {
                        td { a href=(format!("{}/-/manifest/{tag}", repo_href(repo))) { (tag) } }
                        @match summary {
                            Some(s) => {
                                td { (short_digest(&s.digest)) }
                                td { (cosign_kind(tag).unwrap_or(s.kind)) }
                                td { (s.platforms.join(", ")) }
                                td.num { (bytes(s.size)) }
                            }
                            None => { td colspan="4" { span.muted { "manifest not readable" } } }
                        }
                    }
                }
            }
        }
        @if rows.is_empty() { p.empty { "No tags." } }
        @if let Some(next) = &page.next_last {
            p.more { a href=(format!("{}?last={}", repo_href(repo), enc(next))) { "More tags →" } }
        }
        @if let Some(first) = &first { (pull_commands(viewer, "Pull", repo.as_str(), first)) }
    };
    page_response(
        StatusCode::OK,
        layout::page(viewer, Section::Repositories, repo.as_str(), body),
    )
}

/// What a tag row says of its manifest.
struct Summary {
    digest: String,
    kind: &'static str,
    platforms: Vec<String>,
    /// The manifest and everything it references (an index: its own
    /// children's manifests, as listed).
    size: u64,
}

impl Summary {
    async fn of(
        registry: &Registry,
        repo: &RepositoryName,
        digest: &Digest,
        media_type: &str,
        raw: &[u8],
    ) -> Summary {
        let doc: Document = serde_json::from_slice(raw).unwrap_or_default();
        let kind = kind_of(media_type, &doc);
        let mut platforms: Vec<String> = doc
            .manifests
            .iter()
            .filter_map(|m| m.platform.as_ref().map(Platform::label))
            .collect();
        if doc.config.is_some() {
            if let Some(p) = image_platform(registry, repo, &doc).await {
                platforms.push(p.label());
            }
        }
        let size = raw.len() as u64
            + doc.config.iter().map(|c| c.size).sum::<u64>()
            + doc.layers.iter().map(|l| l.size).sum::<u64>()
            + doc.manifests.iter().map(|m| m.size).sum::<u64>();
        Summary {
            digest: digest.to_string(),
            kind,
            platforms,
            size,
        }
    }
}

fn kind_of(media_type: &str, doc: &Document) -> &'static str {
    if doc.artifact_type.is_some()
        || doc
            .config
            .as_ref()
            .is_some_and(|c| c.media_type.as_deref() == Some(berth_manifest::media_type::OCI_EMPTY))
    {
        "artifact"
    } else if berth_manifest::media_type::is_index(media_type) {
        "multi-platform index"
    } else {
        "image"
    }
}

/// The parts of a manifest or index the pages show.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Document {
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    subject: Option<Descriptor>,
    artifact_type: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    size: u64,
    platform: Option<Platform>,
    artifact_type: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    variant: Option<String>,
}

impl Platform {
    fn label(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

/// An image config's platform and creation time.
#[derive(Deserialize, Default)]
struct ImageConfig {
    #[serde(flatten)]
    platform: Platform,
    created: Option<String>,
}

async fn read_config(
    registry: &Registry,
    repo: &RepositoryName,
    doc: &Document,
) -> Option<ImageConfig> {
    let config = doc.config.as_ref()?;
    if config.size > MAX_CONFIG
        || config.media_type.as_deref() == Some(berth_manifest::media_type::OCI_EMPTY)
    {
        return None;
    }
    let digest: Digest = config.digest.parse().ok()?;
    // The stored size, not the manifest's word for it (a mirrored manifest
    // is the upstream's). Stored blobs were verified when they were stored.
    let blob = registry.blob_open(repo, &digest).await.ok()?;
    if blob.size > MAX_CONFIG {
        return None;
    }
    let stream = registry.blob_stream(&blob, None).await.ok()?;
    let raw = berth_storage::fs::collect(stream).await.ok()?;
    serde_json::from_slice(&raw).ok()
}

async fn image_platform(
    registry: &Registry,
    repo: &RepositoryName,
    doc: &Document,
) -> Option<Platform> {
    read_config(registry, repo, doc)
        .await
        .map(|c| c.platform)
        .filter(|p| !p.os.is_empty())
}

/// What a tag in cosign's scheme (`sha256-<hex>.sig`, `.att`, `.sbom`)
/// holds for the image of that digest.
fn cosign_kind(tag: &str) -> Option<&'static str> {
    let rest = tag.strip_prefix("sha256-")?;
    let (hex, suffix) = rest.split_once('.')?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match suffix {
        "sig" => Some("signature (cosign)"),
        "att" => Some("attestation (cosign)"),
        "sbom" => Some("SBOM (cosign)"),
        _ => None,
    }
}

/// What a referrer is, by its artifact type.
fn referrer_kind(artifact_type: &str) -> &'static str {
    let t = artifact_type.to_ascii_lowercase();
    if t.contains("signature") || t.contains(".sig") || t.contains("sigstore.bundle") {
        "signature"
    } else if t.contains("spdx") || t.contains("cyclonedx") || t.contains("sbom") {
        "SBOM"
    } else if t.contains("in-toto") || t.contains("attestation") || t.contains("provenance") {
        "attestation"
    } else {
        "artifact"
    }
}

async fn manifest_page(
    state: &ApiState,
    viewer: &Viewer,
    repo: &RepositoryName,
    reference: &ManifestRef,
) -> Response {
    let stored = match state.registry.manifest_get(repo, reference).await {
        Ok(m) => m,
        Err(RegistryError::ManifestUnknown(_) | RegistryError::NameUnknown(_)) => {
            return not_found(viewer)
        }
        Err(e) => return failure(viewer, &e),
    };
    let doc: Document = serde_json::from_slice(&stored.bytes).unwrap_or_default();
    let digest = stored.digest.to_string();
    let config = read_config(&state.registry, repo, &doc).await;
    let referrers: Vec<Descriptor> = state
        .registry
        .referrers(repo, &stored.digest, None)
        .await
        .ok()
        .and_then(|raw| serde_json::from_slice::<Document>(&raw).ok())
        .map(|d| d.manifests.into_iter().take(REFERRERS_SHOWN).collect())
        .unwrap_or_default();
    // cosign's tag scheme: `sha256-<hex>.sig` beside the image.
    let cosign_tag = format!(
        "{}-{}.sig",
        stored.digest.algorithm().as_str(),
        stored.digest.hex()
    );
    let cosign = match cosign_tag.parse::<Tag>() {
        Ok(t) => state
            .registry
            .tag_resolve(repo, &t)
            .await
            .ok()
            .flatten()
            .map(|d| (cosign_tag.clone(), d)),
        Err(_) => None,
    };
    let base = repo_href(repo);
    let (title, by_tag) = match reference {
        ManifestRef::Tag(t) => (
            format!("{}:{}", repo.as_str(), t.as_str()),
            Some(format!(":{}", t.as_str())),
        ),
        ManifestRef::Digest(_) => (format!("{}@{}", repo.as_str(), short(&digest)), None),
    };
    let total: u64 =
        doc.layers.iter().map(|l| l.size).sum::<u64>() + doc.config.as_ref().map_or(0, |c| c.size);
    let body = html! {
        p.breadcrumb { a href="/ui/" { "Repositories" } " / " a href=(base) { (repo.as_str()) } " / " (reference.to_string()) }
        table.facts {
            tr { th scope="row" { "Digest" } td { code #digest { (digest) } } }
            tr { th scope="row" { "Media type" } td { code { (stored.media_type) } } }
            tr { th scope="row" { "Kind" } td { (kind_of(&stored.media_type, &doc)) } }
            @if let Some(t) = &doc.artifact_type { tr { th scope="row" { "Artifact type" } td { code { (t) } } } }
            tr { th scope="row" { "Manifest size" } td { (bytes(stored.bytes.len() as u64)) } }
            @if doc.config.is_some() { tr { th scope="row" { "Content size" } td { (bytes(total)) " in " (doc.layers.len()) " layers" } } }
            @if let Some(c) = &config {
                @if !c.platform.os.is_empty() { tr { th scope="row" { "Platform" } td { (c.platform.label()) } } }
                @if let Some(created) = &c.created { tr { th scope="row" { "Created" } td { (created) } } }
            }
            @if let Some(s) = &doc.subject {
                tr { th scope="row" { "Refers to" } td { a href=(format!("{base}/-/manifest/{}", s.digest)) { (short_digest(&s.digest)) } } }
            }
        }
        @if !doc.manifests.is_empty() {
            section #platforms {
                h2 { "Platforms" }
                table {
                    thead { tr { th { "Platform" } th { "Digest" } th { "Media type" } th.num { "Size" } } }
                    tbody {
                        @for m in &doc.manifests {
                            tr {
                                td { (m.platform.as_ref().map(Platform::label).unwrap_or_else(|| "–".into())) }
                                td { a href=(format!("{base}/-/manifest/{}", m.digest)) { (short_digest(&m.digest)) } }
                                td { code { (m.media_type.as_deref().unwrap_or("")) } }
                                td.num { (bytes(m.size)) }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(c) = &doc.config {
            section #layers {
                h2 { "Config and layers" }
                table {
                    thead { tr { th { "#" } th { "Digest" } th { "Media type" } th.num { "Size" } } }
                    tbody {
                        tr { td { "config" } td { (short_digest(&c.digest)) } td { code { (c.media_type.as_deref().unwrap_or("")) } } td.num { (bytes(c.size)) } }
                        @for (i, l) in doc.layers.iter().enumerate() {
                            tr { td { (i + 1) } td { (short_digest(&l.digest)) } td { code { (l.media_type.as_deref().unwrap_or("")) } } td.num { (bytes(l.size)) } }
                        }
                    }
                }
            }
        }
        @if !doc.annotations.is_empty() {
            section #annotations {
                h2 { "Annotations" }
                table { tbody { @for (k, v) in &doc.annotations { tr { th scope="row" { code { (k) } } td { (v) } } } } }
            }
        }
        section #referrers {
            h2 { "Referrers and signatures" }
            @if referrers.is_empty() && cosign.is_none() { p.empty { "None." } }
            @if !referrers.is_empty() || cosign.is_some() {
                table {
                    thead { tr { th { "Kind" } th { "Artifact type" } th { "Digest" } th.num { "Size" } } }
                    tbody {
                        @for r in &referrers {
                            @let t = r.artifact_type.clone().unwrap_or_default();
                            tr {
                                td.kind { (referrer_kind(&t)) }
                                td { code { (t) } }
                                td { a href=(format!("{base}/-/manifest/{}", r.digest)) { (short_digest(&r.digest)) } }
                                td.num { (bytes(r.size)) }
                            }
                        }
                        @if let Some((tag, d)) = &cosign {
                            tr {
                                td.kind { "signature" }
                                td { "cosign tag " code { (tag) } }
                                td { a href=(format!("{base}/-/manifest/{d}")) { (short_digest(&d.to_string())) } }
                                td.num { "" }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(t) = &by_tag { (pull_commands(viewer, "Pull by tag", repo.as_str(), t)) }
        (pull_commands(viewer, "Pull by digest", repo.as_str(), &format!("@{digest}")))
    };
    page_response(
        StatusCode::OK,
        layout::page(viewer, Section::Repositories, &title, body),
    )
}

fn short(digest: &str) -> String {
    digest.get(..19).unwrap_or(digest).to_string()
}

fn repo_href(repo: &RepositoryName) -> String {
    format!("/ui/repo/{}", repo.as_str())
}

/// A query value, percent-encoded.
fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn not_found(viewer: &Viewer) -> Response {
    let body = html! { p.message { "No such repository or manifest, or you may not see it." } p { a href="/ui/" { "Repositories" } } };
    page_response(
        StatusCode::NOT_FOUND,
        layout::page(viewer, Section::Repositories, "Not found", body),
    )
}

fn failure(viewer: &Viewer, e: &RegistryError) -> Response {
    tracing::error!(error = %e, "web UI: reading the registry failed");
    let body = html! { p.message { "Reading the registry failed; the server log says why." } };
    page_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        layout::page(viewer, Section::Repositories, "Error", body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_and_sboms_are_named() {
        let hex = "ab".repeat(32);
        assert_eq!(
            cosign_kind(&format!("sha256-{hex}.sig")),
            Some("signature (cosign)")
        );
        assert_eq!(
            cosign_kind(&format!("sha256-{hex}.att")),
            Some("attestation (cosign)")
        );
        assert_eq!(cosign_kind("sha256-abc.sig"), None);
        assert_eq!(cosign_kind("v1.sig"), None);
        assert_eq!(
            referrer_kind("application/vnd.dev.cosign.artifact.sig.v1+json"),
            "signature"
        );
        assert_eq!(
            referrer_kind("application/vnd.cncf.notary.signature"),
            "signature"
        );
        assert_eq!(referrer_kind("application/spdx+json"), "SBOM");
        assert_eq!(referrer_kind("application/vnd.cyclonedx+json"), "SBOM");
        assert_eq!(referrer_kind("application/vnd.in-toto+json"), "attestation");
        assert_eq!(referrer_kind("application/vnd.example.thing"), "artifact");
    }
}
