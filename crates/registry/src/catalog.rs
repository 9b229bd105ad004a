//! The catalog: every repository, in lexical order. Built once by walking
//! the document store (a repository is a path with `_`-prefixed children),
//! then kept current in memory as repositories are written to. On storage
//! other replicas write too, the walk is redone once it is older than
//! [`CATALOG_MIN_AGE`] or the memo age, whichever is longer (a walk lists
//! every repository's folder: too costly to repeat every second).

use std::collections::BTreeSet;

use berth_reference::RepositoryName;
use berth_storage::DocKey;

use crate::{layout, paginate, Page, Registry, Result};

/// The shortest interval between two catalog walks on shared storage.
pub(crate) const CATALOG_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(10);

impl Registry {
    pub(crate) async fn walk_repositories(&self) -> Result<BTreeSet<String>> {
        let mut found = BTreeSet::new();
        let mut stack: Vec<String> = Vec::new();
        for child in self
            .storage
            .doc_list(&DocKey::new([layout::REPOSITORIES])?)
            .await?
        {
            stack.push(child);
        }
        while let Some(path) = stack.pop() {
            let children = self
                .storage
                .doc_list(&DocKey::new([layout::REPOSITORIES, &path])?)
                .await?;
            let mut is_repo = false;
            for child in children {
                if child.starts_with('_') {
                    is_repo |=
                        [layout::LAYERS, layout::MANIFESTS, layout::TAGS].contains(&child.as_str());
                } else {
                    stack.push(format!("{path}/{child}"));
                }
            }
            if is_repo && path.parse::<RepositoryName>().is_ok() {
                found.insert(path);
            }
        }
        Ok(found)
    }

    /// Record that a repository exists (after any write into it).
    pub(crate) async fn note_repository(&self, repo: &RepositoryName) {
        let mut cat = self.catalog.write().await;
        if let Some(set) = cat.as_mut() {
            if !set.contains(repo.as_str()) {
                set.insert(repo.to_string());
            }
        }
    }

    /// Whether the catalog walk must be redone (another replica may have
    /// made repositories since).
    fn catalog_stale(&self) -> bool {
        let Some(age) = self.memo_ttl else {
            return false;
        };
        let walked = *self
            .catalog_walked
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        walked.is_none_or(|at| at.elapsed() > age.max(CATALOG_MIN_AGE))
    }

    pub async fn catalog(&self, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        if !self.catalog_stale() {
            let cat = self.catalog.read().await;
            if let Some(set) = cat.as_ref() {
                return Ok(paginate(set.iter().cloned(), n, last));
            }
        }
        let mut cat = self.catalog.write().await;
        if cat.is_none() || self.catalog_stale() {
            *cat = Some(self.walk_repositories().await?);
            *self
                .catalog_walked
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
        }
        let set = cat
            .as_ref()
            .map(|s| s.iter().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        Ok(paginate(set, n, last))
    }
}
