//! The OCI 1.1 referrers of a manifest: the signatures, attestations and
//! SBOMs attached to it. A registry with the API answers
//! `GET /v2/<name>/referrers/<digest>` with an image index of them; one
//! without (Distribution 2.8) answers 404, and the tools that attach
//! artifacts to such a registry keep the same index under the tag
//! `<alg>-<hex>` (the spec's referrers tag schema), which is read instead.

use berth_reference::{Digest, ManifestRef, RepositoryName, Tag};
use reqwest::header::{HeaderValue, ACCEPT};
use reqwest::Method;

use crate::auth::Scope;
use crate::client::{check, read_bounded, UpstreamClient};
use crate::error::UpstreamError;

/// Longest referrers index read.
const MAX_REFERRERS_INDEX: usize = 4 << 20;
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// One manifest that names the subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
}

/// The tag the referrers tag schema keeps `subject`'s referrers under.
pub fn referrers_tag(subject: &Digest) -> Option<Tag> {
    format!("{}-{}", subject.algorithm().as_str(), subject.hex())
        .parse()
        .ok()
}

impl UpstreamClient {
    /// What refers to `subject` in `repo`: from the referrers API, or the
    /// referrers tag where the API is missing; empty when neither is there.
    pub async fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
    ) -> Result<Vec<Referrer>, UpstreamError> {
        let url = self.repo_url(repo, &format!("referrers/{subject}"))?;
        let what = format!("GET {}", url.path());
        let mut req = self.req(Method::GET, url, vec![Scope::pull(&self.remote_name(repo))]);
        req.headers
            .insert(ACCEPT, HeaderValue::from_static(OCI_INDEX));
        let resp = self.execute(req).await?;
        let body = match check(resp, &what).await {
            Ok(resp) => read_bounded(resp, MAX_REFERRERS_INDEX).await?,
            // No API here (404, or a 400/405 from registries that route
            // the path elsewhere): the tag schema is what clients use then.
            Err(e) if e.is_not_found() || matches!(e, UpstreamError::Rejected { .. }) => {
                let Some(tag) = referrers_tag(subject) else {
                    return Ok(Vec::new());
                };
                match self
                    .manifest_get(repo, &ManifestRef::Tag(tag), &[OCI_INDEX])
                    .await
                {
                    Ok(m) => m.bytes,
                    Err(e) if e.is_not_found() => return Ok(Vec::new()),
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        parse_index(&body, &what)
    }
}

/// The descriptors of a referrers index.
fn parse_index(body: &[u8], what: &str) -> Result<Vec<Referrer>, UpstreamError> {
    let bad = |why: String| UpstreamError::Protocol(format!("{what}: {why}"));
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
    let Some(list) = v.get("manifests") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| bad("`manifests` is not a list".to_string()))?;
    let mut out = Vec::new();
    for d in list {
        let digest = d
            .get("digest")
            .and_then(|x| x.as_str())
            .and_then(|x| x.parse::<Digest>().ok())
            .ok_or_else(|| bad("a descriptor without a valid digest".to_string()))?;
        let media_type = d
            .get("mediaType")
            .and_then(|x| x.as_str())
            .ok_or_else(|| bad(format!("{digest} has no mediaType")))?
            .to_string();
        let size = d
            .get("size")
            .and_then(|x| x.as_u64())
            .ok_or_else(|| bad(format!("{digest} has no size")))?;
        let artifact_type = d
            .get("artifactType")
            .and_then(|x| x.as_str())
            .map(str::to_string);
        if !out.iter().any(|r: &Referrer| r.digest == digest) {
            out.push(Referrer {
                digest,
                media_type,
                size,
                artifact_type,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_and_tags() {
        let d = format!("sha256:{}", "a".repeat(64));
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":5,"artifactType":"application/spdx+json"}},{{"mediaType":"x","digest":"{d}","size":5}}]}}"#
        );
        let r = parse_index(body.as_bytes(), "t").unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].artifact_type.as_deref(), Some("application/spdx+json"));
        assert!(parse_index(br#"{"manifests":[{"digest":"nope"}]}"#, "t").is_err());
        assert!(parse_index(b"{}", "t").unwrap().is_empty());
        let subject: Digest = d.parse().unwrap();
        assert_eq!(
            referrers_tag(&subject).unwrap().as_str(),
            format!("sha256-{}", "a".repeat(64))
        );
    }
}
