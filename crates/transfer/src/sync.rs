//! `berth sync`: whole repositories kept up to date in another registry,
//! under their mirror names (`registry.local:5000/app` lands in
//! `registry.local__5000/app`, below a prefix if one is given), as a berth
//! mirror or an air-gap registry wants them.
//!
//! The list says which repositories and which of their tags:
//!
//! - text, one per line: `REPO` (every tag), `REPO:TAG`, or `REPO:GLOB`
//!   with `*` and `?` (`docker.io/library/alpine:3.*`); `#` comments;
//! - or skopeo sync's YAML: registries, each with `images` (a repository
//!   and its tags, `[]` for every tag) and `images-by-tag-regex`.
//!
//! Incremental: a tag whose digest the destination already holds under
//! the same tag is left alone, so a second run moves only what changed.
//! Each tag is copied whole (every platform), with its referrers.

use std::collections::BTreeMap;

use berth_reference::{glob_match, ImageReference, ManifestRef, RepositoryName, Tag};
use berth_upstream::UpstreamClient;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::bundle::mirror_target;
use crate::copy::{copy, CopyOptions, Selection};
use crate::error::{Result, TransferError};
use crate::registry::{RegistryDest, RegistryOptions, RegistrySource};

/// Most tags one repository may expand to.
const MAX_TAGS: usize = 100_000;

/// Which tags of a repository to sync.
#[derive(Debug, Clone)]
pub enum TagFilter {
    All,
    Exact(Vec<Tag>),
    Glob(String),
    Regex(regex::Regex),
}

impl TagFilter {
    fn keeps(&self, tag: &str) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::Exact(t) => t.iter().any(|t| t.as_str() == tag),
            TagFilter::Glob(g) => glob_match(g, tag),
            TagFilter::Regex(r) => r.is_match(tag),
        }
    }
}

/// One repository of the list (its reference carries no tag).
#[derive(Debug, Clone)]
pub struct SyncSpec {
    pub repository: ImageReference,
    pub filter: TagFilter,
}

/// skopeo sync's YAML, per registry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlRegistry {
    #[serde(default)]
    images: BTreeMap<String, Vec<String>>,
    #[serde(default, rename = "images-by-tag-regex")]
    images_by_tag_regex: BTreeMap<String, String>,
}

fn repository(s: &str, line: &str) -> Result<ImageReference> {
    let mut r: ImageReference = s
        .parse()
        .map_err(|e| TransferError::Invalid(format!("{line}: {e}")))?;
    if r.digest.is_some() {
        return Err(TransferError::Invalid(format!(
            "{line}: sync copies tags; name a repository, a tag or a tag pattern"
        )));
    }
    r.tag = None;
    Ok(r)
}

/// Read a sync list (text or skopeo's YAML; see the module comment).
pub fn parse_sync_list(text: &str) -> Result<Vec<SyncSpec>> {
    let looks_like_yaml = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim_end())
        .any(|l| l.ends_with(':'));
    let yaml = match serde_norway::from_str::<BTreeMap<String, YamlRegistry>>(text) {
        Ok(y) => Some(y),
        Err(e) if looks_like_yaml => {
            return Err(TransferError::Invalid(format!(
                "not a sync list in skopeo's YAML form (registries with `images` and `images-by-tag-regex`): {e}"
            )))
        }
        Err(_) => None,
    };
    if let Some(yaml) = yaml {
        let mut out = Vec::new();
        for (registry, r) in yaml {
            for (repo, tags) in r.images {
                let line = format!("{registry}/{repo}");
                let filter = if tags.is_empty() {
                    TagFilter::All
                } else {
                    TagFilter::Exact(
                        tags.iter()
                            .map(|t| {
                                t.parse()
                                    .map_err(|e| TransferError::Invalid(format!("{line}: {e}")))
                            })
                            .collect::<Result<_>>()?,
                    )
                };
                out.push(SyncSpec {
                    repository: repository(&line, &line)?,
                    filter,
                });
            }
            for (repo, pattern) in r.images_by_tag_regex {
                let line = format!("{registry}/{repo}");
                let re = regex::Regex::new(&pattern)
                    .map_err(|e| TransferError::Invalid(format!("{line}: {e}")))?;
                out.push(SyncSpec {
                    repository: repository(&line, &line)?,
                    filter: TagFilter::Regex(re),
                });
            }
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let what = format!("line {}", n + 1);
        let line = line.strip_prefix("docker://").unwrap_or(line);
        // A ':' after the last '/' starts the tag or its pattern.
        let last_slash = line.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match line[last_slash..].find(':') {
            Some(i) => (&line[..last_slash + i], Some(&line[last_slash + i + 1..])),
            None => (line, None),
        };
        let filter = match tag {
            None => TagFilter::All,
            Some(t) if t.contains(['*', '?']) => TagFilter::Glob(t.to_string()),
            Some(t) => TagFilter::Exact(vec![t
                .parse()
                .map_err(|e| TransferError::Invalid(format!("{what}: {e}")))?]),
        };
        out.push(SyncSpec {
            repository: repository(name, &what)?,
            filter,
        });
    }
    Ok(out)
}

/// What happened to one tag.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncedTag {
    pub source: String,
    pub target: String,
    /// `copied`, `unchanged` (the destination had it), `would-copy`
    /// (dry run) or `failed`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub bytes: u64,
}

/// Where and how to sync.
pub struct SyncTarget<'a> {
    pub registry: &'a str,
    pub base: Option<Url>,
    pub prefix: Option<&'a RepositoryName>,
    pub dry_run: bool,
    pub with_referrers: bool,
}

/// Sync every spec's tags into `to`; `on_tag` is told of each as it is
/// done. A repository or tag that fails is reported and the rest go on.
pub async fn sync(
    specs: &[SyncSpec],
    to: &SyncTarget<'_>,
    options: &RegistryOptions,
    opts: &CopyOptions,
    on_tag: &(dyn Fn(&SyncedTag) + Send + Sync),
) -> Result<Vec<SyncedTag>> {
    let mut dest_options = options.clone();
    if let Some(u) = &to.base {
        dest_options
            .upstreams
            .push((to.registry.to_string(), u.clone()));
    }
    let dest = dest_options.client(to.registry, None).await?;
    let mut all = opts.clone();
    all.selection = Selection::All;
    let mut done = Vec::new();
    for spec in specs {
        let repo = &spec.repository;
        let tags = match tags_of(spec, options).await {
            Ok(t) => t,
            Err((client_err, e)) => {
                let t = SyncedTag {
                    source: repo.to_string(),
                    target: String::new(),
                    outcome: "failed",
                    digest: None,
                    error: Some(format!("{client_err}: {e}")),
                    bytes: 0,
                };
                on_tag(&t);
                done.push(t);
                continue;
            }
        };
        let client = options
            .client(&repo.registry, Some(repo.repository.as_str()))
            .await?;
        for tag in tags {
            let source = ImageReference {
                tag: Some(tag.clone()),
                ..repo.clone()
            };
            let t = match sync_tag(&client, &dest, &source, to, &all).await {
                Ok(t) => t,
                Err(e) => SyncedTag {
                    source: source.to_string(),
                    target: String::new(),
                    outcome: "failed",
                    digest: None,
                    error: Some(e.to_string()),
                    bytes: 0,
                },
            };
            on_tag(&t);
            done.push(t);
        }
    }
    Ok(done)
}

/// The tags of `spec` to sync, sorted.
async fn tags_of(
    spec: &SyncSpec,
    options: &RegistryOptions,
) -> std::result::Result<Vec<Tag>, (String, TransferError)> {
    let repo = &spec.repository;
    let what = format!("listing the tags of {repo}");
    if let TagFilter::Exact(tags) = &spec.filter {
        return Ok(tags.clone());
    }
    let client = options
        .client(&repo.registry, Some(repo.repository.as_str()))
        .await
        .map_err(|e| (what.clone(), e))?;
    let listed = client
        .tags_list(&repo.repository, None)
        .await
        .map_err(|e| (what.clone(), TransferError::registry(repo.to_string(), e)))?;
    if listed.len() > MAX_TAGS {
        return Err((
            what,
            TransferError::Invalid(format!("more than {MAX_TAGS} tags")),
        ));
    }
    let mut tags: Vec<Tag> = listed
        .iter()
        .filter(|t| spec.filter.keeps(t))
        .filter_map(|t| t.parse().ok())
        .collect();
    tags.sort();
    Ok(tags)
}

async fn sync_tag(
    client: &UpstreamClient,
    dest: &UpstreamClient,
    source: &ImageReference,
    to: &SyncTarget<'_>,
    opts: &CopyOptions,
) -> Result<SyncedTag> {
    let target = mirror_target(source, to.registry, to.prefix)?;
    let tag = source
        .tag
        .clone()
        .ok_or_else(|| TransferError::Invalid(format!("{source}: no tag")))?;
    let have = client
        .manifest_head(
            &source.repository,
            &ManifestRef::Tag(tag.clone()),
            &berth_manifest::media_type::ALL,
        )
        .await
        .map_err(|e| TransferError::registry(format!("reading {source}"), e))?;
    let there = dest
        .manifest_head(
            &target.repository,
            &ManifestRef::Tag(tag),
            &berth_manifest::media_type::ALL,
        )
        .await;
    let mut out = SyncedTag {
        source: source.to_string(),
        target: target.to_string(),
        outcome: "unchanged",
        digest: Some(have.digest.to_string()),
        error: None,
        bytes: 0,
    };
    match there {
        Ok(m) if m.digest == have.digest => return Ok(out),
        Ok(_) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(TransferError::registry(format!("reading {target}"), e)),
    }
    if to.dry_run {
        out.outcome = "would-copy";
        return Ok(out);
    }
    let src = RegistrySource::with_client(client.clone(), source.clone());
    let dst = RegistryDest::with_client(dest.clone(), target.clone());
    let report = copy(&src, &dst, opts).await?;
    out.bytes = report.bytes_copied;
    if to.with_referrers {
        for r in src.referrer_refs(&report.digest).await? {
            let rt = ImageReference {
                tag: r.tag.clone(),
                digest: r.digest.clone(),
                ..target.clone()
            };
            let rd = RegistryDest::with_client(dest.clone(), rt);
            out.bytes += copy(&src.sibling(r), &rd, opts).await?.bytes_copied;
        }
    }
    out.outcome = "copied";
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lists() {
        let specs = parse_sync_list(
            "# mirror these\ndocker.io/library/alpine:3.*\nquay.io/org/app\nregistry.local:5000/team/x:v1 # one tag\nnginx:1.2?\n",
        )
        .unwrap();
        assert_eq!(specs.len(), 4);
        assert_eq!(specs[0].repository.to_string(), "docker.io/library/alpine");
        assert!(specs[0].filter.keeps("3.20") && !specs[0].filter.keeps("edge"));
        assert!(matches!(specs[1].filter, TagFilter::All));
        assert_eq!(specs[2].repository.registry, "registry.local:5000");
        assert!(specs[2].filter.keeps("v1") && !specs[2].filter.keeps("v2"));
        assert_eq!(specs[3].repository.to_string(), "docker.io/library/nginx");
        assert!(specs[3].filter.keeps("1.25") && !specs[3].filter.keeps("1.250"));
        for bad in ["UPPER/x", "a@sha256:abc", "x:bad tag"] {
            assert!(parse_sync_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn skopeo_yaml() {
        let specs = parse_sync_list(
            "docker.io:\n  images:\n    alpine: [\"3.20\", \"3.19\"]\n    busybox: []\n  images-by-tag-regex:\n    nginx: ^1\\.2[0-9]$\n",
        )
        .unwrap();
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[0].repository.to_string(), "docker.io/library/alpine");
        assert!(specs[0].filter.keeps("3.19") && !specs[0].filter.keeps("3.18"));
        assert!(matches!(specs[1].filter, TagFilter::All));
        assert!(specs[2].filter.keeps("1.25") && !specs[2].filter.keeps("1.3"));
        assert!(parse_sync_list("docker.io:\n  images-by-tag-regex:\n    x: \"(\"\n").is_err());
        assert!(parse_sync_list("docker.io:\n  credentials: {username: u}\n").is_err());
    }
}
