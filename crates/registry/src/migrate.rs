//! Moving what older versions of berth stored under names no client can
//! address: mirrors of a registry with a port were kept as
//! `repositories/registry.local:5000/...`, and are now
//! `repositories/registry.local__5000/...` (see `berth_reference::mirror`).
//!
//! Runs when a process opens the storage root, before it serves anything,
//! so nothing writes beside it. Each document is copied to the new name
//! unless it is there already, then the old tree is deleted: killed at any
//! point, the next start finishes the move and loses nothing (a copy made
//! before the kill equals its source, and what the new name already held
//! is kept rather than overwritten).

use berth_reference::RepositoryName;
use berth_storage::DocKey;

use crate::{layout, Registry, Result};

/// One repository tree moved to its new name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renamed {
    pub from: String,
    pub to: String,
}

impl Registry {
    /// Move every repository stored under a `host:port` first component to
    /// berth's spelling, with the upload sessions it owns. Returns what was
    /// moved; an empty list on a root that needs nothing.
    pub async fn migrate_port_names(&self) -> Result<Vec<Renamed>> {
        let top = DocKey::new([layout::REPOSITORIES])?;
        let mut moved = Vec::new();
        for first in self.storage.doc_list(&top).await? {
            if !first.contains(':') {
                continue;
            }
            // `x:y/app` parses as the mirror `x__y/app`; a first component
            // that names no host with a port is left alone (and invisible,
            // as no repository name can contain it).
            let Ok(renamed) = RepositoryName::parse_lenient(&format!("{first}/x")) else {
                tracing::warn!("left {first:?} in storage: it names no registry host and port");
                continue;
            };
            let Some((to, _)) = renamed.as_str().split_once('/') else {
                continue;
            };
            let to = to.to_string();
            self.copy_tree(&[first.as_str()], &[to.as_str()]).await?;
            self.move_upload_owners(&first, &to).await?;
            self.storage
                .doc_delete(&DocKey::new([layout::REPOSITORIES, &first])?)
                .await?;
            moved.push(Renamed { from: first, to });
        }
        if !moved.is_empty() {
            // The catalog may have been walked before the move.
            *self.catalog.write().await = None;
        }
        Ok(moved)
    }

    /// Copy the documents under `repositories/<from...>` to
    /// `repositories/<to...>`, keeping any that exist there already.
    async fn copy_tree(&self, from: &[&str], to: &[&str]) -> Result<()> {
        let mut stack: Vec<(Vec<String>, Vec<String>)> = vec![(
            from.iter().map(|s| s.to_string()).collect(),
            to.iter().map(|s| s.to_string()).collect(),
        )];
        while let Some((src, dst)) = stack.pop() {
            let src_key = key(&src)?;
            if let Some(value) = self.storage.doc_get(&src_key).await? {
                let dst_key = key(&dst)?;
                if self.storage.doc_get(&dst_key).await?.is_none() {
                    self.storage.doc_put(&dst_key, value).await?;
                }
                continue;
            }
            for child in self.storage.doc_list(&src_key).await? {
                // What no key may name (a backend's temporary file) is not
                // a document.
                if DocKey::new([child.as_str()]).is_err() {
                    continue;
                }
                let mut s = src.clone();
                s.push(child.clone());
                let mut d = dst.clone();
                d.push(child);
                stack.push((s, d));
            }
        }
        Ok(())
    }

    /// Upload sessions record the repository they belong to: those of a
    /// moved repository now belong to its new name.
    async fn move_upload_owners(&self, from: &str, to: &str) -> Result<()> {
        let uploads = DocKey::new(["uploads"])?;
        let prefix = format!("{from}/");
        for id in self.storage.doc_list(&uploads).await? {
            let Ok(record) = uploads.join(&id) else {
                continue;
            };
            let Some(owner) = self.storage.doc_get(&record).await? else {
                continue;
            };
            let Some(rest) = std::str::from_utf8(&owner)
                .ok()
                .and_then(|o| o.strip_prefix(&prefix))
            else {
                continue;
            };
            let owner = format!("{to}/{rest}");
            self.storage
                .doc_put(&record, owner.into_bytes().into())
                .await?;
        }
        Ok(())
    }
}

fn key(parts: &[String]) -> Result<DocKey> {
    let mut all = vec![layout::REPOSITORIES.to_string()];
    all.extend(parts.iter().cloned());
    Ok(DocKey::new(all)?)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use berth_storage::{fs::FsStorage, Storage};
    use bytes::Bytes;

    use super::*;

    async fn put(s: &FsStorage, parts: &[&str], v: &str) {
        s.doc_put(&DocKey::new(parts).unwrap(), Bytes::from(v.to_string()))
            .await
            .unwrap();
    }

    async fn get(s: &FsStorage, parts: &[&str]) -> Option<String> {
        s.doc_get(&DocKey::new(parts).unwrap())
            .await
            .unwrap()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn port_names_move_and_a_second_run_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(FsStorage::open(dir.path()).await.unwrap());
        let d = "a".repeat(64);
        let old = "registry.local:5000/demo/app";
        put(&storage, &["repositories", old, "_tags", "v1"], "sha256:x").await;
        put(
            &storage,
            &["repositories", old, "_layers", "sha256", &d],
            "",
        )
        .await;
        put(
            &storage,
            &["repositories", "team/app", "_tags", "v1"],
            "sha256:y",
        )
        .await;
        // A half-finished earlier run: the new name holds a newer tag.
        let new = "registry.local__5000/demo/app";
        put(&storage, &["repositories", new, "_tags", "v2"], "sha256:z").await;
        put(
            &storage,
            &["repositories", old, "_tags", "v2"],
            "sha256:old",
        )
        .await;
        let id = storage.upload_create().await.unwrap().to_string();
        put(&storage, &["uploads", &id], old).await;

        let registry = Registry::new(storage.clone());
        let before = registry.catalog(None, None).await.unwrap();
        assert!(!before.items.iter().any(|n| n.contains(':')));
        let moved = registry.migrate_port_names().await.unwrap();
        assert_eq!(
            moved,
            vec![Renamed {
                from: "registry.local:5000".into(),
                to: "registry.local__5000".into()
            }]
        );
        assert_eq!(
            get(&storage, &["repositories", new, "_tags", "v1"])
                .await
                .as_deref(),
            Some("sha256:x")
        );
        assert_eq!(
            get(&storage, &["repositories", new, "_tags", "v2"])
                .await
                .as_deref(),
            Some("sha256:z")
        );
        assert!(
            get(&storage, &["repositories", new, "_layers", "sha256", &d])
                .await
                .is_some()
        );
        assert_eq!(
            get(&storage, &["repositories", old, "_tags", "v1"]).await,
            None
        );
        assert_eq!(get(&storage, &["uploads", &id]).await.as_deref(), Some(new));
        let names = registry.catalog(None, None).await.unwrap().items;
        assert_eq!(names, vec![new.to_string(), "team/app".to_string()]);
        assert!(registry.migrate_port_names().await.unwrap().is_empty());
    }
}
