//! Tags: resolution to a digest, listing, and the reverse lookup used when a
//! manifest is deleted.

use std::collections::BTreeSet;
use std::sync::Arc;

use berth_reference::{Digest, RepositoryName, Tag};

use crate::memo::key;
use crate::{layout, paginate, Page, Registry, RegistryError, Result};

impl Registry {
    /// The digest a tag points at, if the tag exists.
    pub async fn tag_resolve(&self, repo: &RepositoryName, tag: &Tag) -> Result<Option<Digest>> {
        self.note_tag_pulled(repo, tag).await;
        self.tag_lookup(repo, tag).await
    }

    /// [`Registry::tag_resolve`] without counting a pull (for listings and
    /// the lifecycle jobs).
    pub(crate) async fn tag_lookup(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<Digest>> {
        let k = key(repo.as_str(), tag.as_str());
        if let Some(digest) = self.tag_memo.get(&k) {
            return Ok(Some(digest));
        }
        let token = self.tag_memo.token();
        let Some(value) = self.storage.doc_get(&layout::tag(repo, tag)?).await? else {
            return Ok(None);
        };
        // `<digest> <seconds pushed>`; older stores hold the digest alone.
        let digest = std::str::from_utf8(&value)
            .ok()
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse::<Digest>().ok())
            .ok_or_else(|| {
                tracing::error!(repository = %repo, %tag, "tag document is corrupt");
                RegistryError::ManifestUnknown(tag.to_string())
            })?;
        self.tag_memo.fill(token, k, digest.clone());
        Ok(Some(digest))
    }

    /// Point `tag` at `digest` in storage, keeping the memos right.
    pub(crate) async fn tag_write(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<()> {
        let doc = layout::tag(repo, tag)?;
        let written = self
            .storage
            .doc_put(&doc, crate::inventory::tag_record(digest))
            .await;
        let k = key(repo.as_str(), tag.as_str());
        if written.is_ok() {
            self.tag_memo.set(k, digest.clone());
            self.tag_list_memo.update(repo.as_str(), |set| {
                Arc::make_mut(set).insert(tag.to_string());
            });
        } else {
            // What storage holds now is unknown: read it again next time.
            self.tag_memo.remove(&k);
            self.tag_list_memo.remove(repo.as_str());
        }
        Ok(written?)
    }

    /// Remove a tag from storage, keeping the memos right; `false` if it
    /// was not there.
    pub(crate) async fn tag_remove(&self, repo: &RepositoryName, tag: &Tag) -> Result<bool> {
        let doc = layout::tag(repo, tag)?;
        let removed = self.storage.doc_delete(&doc).await;
        self.tag_memo.remove(&key(repo.as_str(), tag.as_str()));
        if removed.is_ok() {
            self.tag_list_memo.update(repo.as_str(), |set| {
                Arc::make_mut(set).remove(tag.as_str());
            });
        } else {
            self.tag_list_memo.remove(repo.as_str());
        }
        Ok(removed?)
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
        self.tag_write(repo, tag, digest).await
    }

    /// Tags of a repository in lexical order; `NAME_UNKNOWN` if the
    /// repository does not exist.
    pub async fn tags_list(
        &self,
        repo: &RepositoryName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page> {
        let tags = match self.tag_list_memo.get(repo.as_str()) {
            // A repository with tags exists.
            Some(tags) if !tags.is_empty() => tags,
            _ => {
                if !self.repository_exists(repo).await? {
                    return Err(RegistryError::NameUnknown(repo.to_string()));
                }
                let token = self.tag_list_memo.token();
                let listed = self.storage.doc_list(&layout::tags(repo)?).await?;
                let tags: Arc<BTreeSet<String>> = Arc::new(listed.into_iter().collect());
                self.tag_list_memo
                    .fill(token, repo.as_str().to_string(), tags.clone());
                tags
            }
        };
        Ok(paginate(tags.iter().cloned(), n, last))
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
            if self.tag_lookup(repo, &tag).await.ok().flatten().as_ref() == Some(digest) {
                out.push(tag);
            }
        }
        Ok(out)
    }
}
