//! The catalog: every repository, in lexical order. Built once by walking
//! the document store (a repository is a path with `_`-prefixed children),
//! then kept current in memory as repositories are written to.

use std::collections::BTreeSet;

use berth_reference::RepositoryName;
use berth_storage::DocKey;

use crate::{layout, paginate, Page, Registry, Result};

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

    pub async fn catalog(&self, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        {
            let cat = self.catalog.read().await;
            if let Some(set) = cat.as_ref() {
                return Ok(paginate(set.iter().cloned(), n, last));
            }
        }
        let mut cat = self.catalog.write().await;
        if cat.is_none() {
            *cat = Some(self.walk_repositories().await?);
        }
        let set = cat
            .as_ref()
            .map(|s| s.iter().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        Ok(paginate(set, n, last))
    }
}
