//! The referrers API for mirrors: what the upstream lists for a subject
//! (its signatures, attestations, SBOMs), merged with what berth holds
//! itself (referrers pushed or loaded into the mirror, or cached from it).
//! The manifests listed are then fetched by digest through the mirror like
//! any other. Offline, with the upstream refused or failing, the answer is
//! berth's own list: a referrers query never fails because an upstream did.

use berth_manifest::media_type;
use berth_reference::{Digest, RepositoryName};
use berth_registry::RegistryError;
use bytes::Bytes;

use crate::Cache;

impl Cache {
    /// The referrers index of `subject` in the mirrored `repo`.
    pub async fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Bytes, RegistryError> {
        let local = self
            .inner
            .registry
            .referrers(repo, subject, artifact_type)
            .await?;
        let Some((host, remote)) = Cache::upstream_of(repo) else {
            return Ok(local);
        };
        let Ok(client) = self.inner.client(&host) else {
            return Ok(local);
        };
        let upstream = match client.referrers(&remote, subject).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(upstream = %host, repository = %repo, %subject, error = %e,
                    "listing the upstream's referrers failed; answering with berth's own");
                return Ok(local);
            }
        };
        let Ok(mut index) = serde_json::from_slice::<serde_json::Value>(&local) else {
            return Ok(local);
        };
        let Some(list) = index.get_mut("manifests").and_then(|m| m.as_array_mut()) else {
            return Ok(local);
        };
        let mut added = false;
        for r in upstream {
            if artifact_type.is_some_and(|a| r.artifact_type.as_deref() != Some(a)) {
                continue;
            }
            let digest = r.digest.to_string();
            if list.iter().any(|d| d["digest"] == digest.as_str()) {
                continue;
            }
            let mut d = serde_json::json!({
                "mediaType": r.media_type,
                "digest": digest,
                "size": r.size,
            });
            if let Some(a) = r.artifact_type {
                d["artifactType"] = a.into();
            }
            list.push(d);
            added = true;
        }
        if !added {
            return Ok(local);
        }
        index["mediaType"] = media_type::OCI_INDEX.into();
        serde_json::to_vec(&index)
            .map(Bytes::from)
            .map_err(|e| RegistryError::ManifestInvalid(e.to_string()))
    }
}
