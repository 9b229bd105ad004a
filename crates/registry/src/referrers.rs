//! The referrers API: for each subject digest, the manifests that name it as
//! their `subject`, served as an OCI image index of descriptors.

use berth_manifest::{media_type, Manifest};
use berth_reference::{Digest, RepositoryName};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{layout, Registry, Result};

/// One entry of the referrers index, stored when the referrer is pushed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReferrerEntry {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    #[serde(skip_serializing_if = "std::collections::HashMap::is_empty", default)]
    annotations: std::collections::HashMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReferrersIndex<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: Vec<ReferrerEntry>,
}

impl Registry {
    pub(crate) async fn referrer_add(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        referrer: &Digest,
        size: u64,
        manifest: &Manifest,
    ) -> Result<()> {
        let entry = ReferrerEntry {
            media_type: manifest.media_type.clone(),
            digest: referrer.to_string(),
            size,
            artifact_type: manifest.artifact_type.clone(),
            annotations: manifest.annotations.clone(),
        };
        let json = serde_json::to_vec(&entry)
            .map_err(|e| crate::RegistryError::ManifestInvalid(e.to_string()))?;
        self.storage
            .doc_put(
                &layout::referrer(repo, subject, referrer)?,
                Bytes::from(json),
            )
            .await?;
        Ok(())
    }

    /// The referrers index of `subject`, optionally filtered by artifact
    /// type. Always a valid (possibly empty) index, even for an unknown subject.
    pub async fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Bytes> {
        let dir = layout::referrers(repo, subject)?;
        let mut manifests = Vec::new();
        for name in self.storage.doc_list(&dir).await? {
            let Some(raw) = self.storage.doc_get(&dir.join(&name)?).await? else {
                continue;
            };
            match serde_json::from_slice::<ReferrerEntry>(&raw) {
                Ok(e) if artifact_type.is_none_or(|a| e.artifact_type.as_deref() == Some(a)) => {
                    manifests.push(e)
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(repository = %repo, entry = %name, %err, "skipping corrupt referrer entry")
                }
            }
        }
        let index = ReferrersIndex {
            schema_version: 2,
            media_type: media_type::OCI_INDEX,
            manifests,
        };
        let json = serde_json::to_vec(&index)
            .map_err(|e| crate::RegistryError::ManifestInvalid(e.to_string()))?;
        Ok(Bytes::from(json))
    }
}
