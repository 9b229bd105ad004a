//! Tags: resolution to a digest, listing, and the reverse lookup used when a
//! manifest is deleted.

use berth_reference::{Digest, RepositoryName, Tag};

use crate::{layout, paginate, Page, Registry, RegistryError, Result};

impl Registry {
    /// The digest a tag points at, if the tag exists.
    pub async fn tag_resolve(&self, repo: &RepositoryName, tag: &Tag) -> Result<Option<Digest>> {
        let Some(value) = self.storage.doc_get(&layout::tag(repo, tag)?).await? else {
            return Ok(None);
        };
        let digest = std::str::from_utf8(&value)
            .ok()
            .and_then(|s| s.trim().parse::<Digest>().ok())
            .ok_or_else(|| {
                tracing::error!(repository = %repo, %tag, "tag document is corrupt");
                RegistryError::ManifestUnknown(tag.to_string())
            })?;
        Ok(Some(digest))
    }

    /// Whether anything (a blob, manifest or tag) was ever put in `repo`.
    /// A name that is only a path prefix of other repositories (`a` when
    /// `a/b` exists) is not a repository.
    pub async fn repository_exists(&self, repo: &RepositoryName) -> Result<bool> {
        Ok(self
            .storage
            .doc_list(&layout::repository(repo)?)
            .await?
            .iter()
            .any(|child| {
                [layout::LAYERS, layout::MANIFESTS, layout::TAGS].contains(&child.as_str())
            }))
    }

    /// Point a tag at a manifest already in the repository.
    pub async fn tag_set(&self, repo: &RepositoryName, tag: &Tag, digest: &Digest) -> Result<()> {
        if self
            .storage
            .doc_get(&layout::manifest_revision(repo, digest)?)
            .await?
            .is_none()
        {
            return Err(RegistryError::ManifestUnknown(digest.to_string()));
        }
        self.storage
            .doc_put(
                &layout::tag(repo, tag)?,
                bytes::Bytes::from(digest.to_string()),
            )
            .await?;
        Ok(())
    }

    /// Tags of a repository in lexical order; `NAME_UNKNOWN` if the
    /// repository does not exist.
    pub async fn tags_list(
        &self,
        repo: &RepositoryName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page> {
        if !self.repository_exists(repo).await? {
            return Err(RegistryError::NameUnknown(repo.to_string()));
        }
        let tags = self.storage.doc_list(&layout::tags(repo)?).await?;
        Ok(paginate(tags, n, last))
    }

    pub(crate) async fn tags_pointing_at(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Vec<Tag>> {
        let mut out = Vec::new();
        for name in self.storage.doc_list(&layout::tags(repo)?).await? {
            let Ok(tag) = name.parse::<Tag>() else {
                continue;
            };
            if self.tag_resolve(repo, &tag).await.ok().flatten().as_ref() == Some(digest) {
                out.push(tag);
            }
        }
        Ok(out)
    }
}
