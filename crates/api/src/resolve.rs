//! Which repository a request is about. This is where the routing rules of
//! PRODUCT.md live, and where the pull-through cache decides a repository is
//! a mirror of an upstream:
//!
//! 1. `?ns=HOST` (what containerd sends to a mirror): `HOST/<name>`, with
//!    Docker Hub's `library/` normalisation and a port spelled `HOST__PORT`;
//! 2. a name whose first component is a registry host is that mirror already;
//! 3. otherwise the local repository `<name>`; for reads, if it does not
//!    exist and a default upstream is configured, `<default>/<name>`.

use std::sync::Arc;

use async_trait::async_trait;
use berth_reference::{mirror_host, normalise_registry, RepositoryName, DOCKER_HUB};
use berth_registry::Registry;

use crate::error::ApiError;

#[async_trait]
pub trait Resolver: Send + Sync {
    /// Resolve the URL's repository `name` (already grammar-checked) given the
    /// `ns` query parameter. `read` is false for pushes and deletes.
    async fn resolve(
        &self,
        name: &str,
        ns: Option<&str>,
        read: bool,
    ) -> Result<RepositoryName, ApiError>;
}

/// The product's routing rules.
pub struct MirrorResolver {
    registry: Arc<Registry>,
    default_upstream: Option<String>,
}

impl MirrorResolver {
    pub fn new(registry: Arc<Registry>, default_upstream: Option<String>) -> Self {
        MirrorResolver {
            registry,
            default_upstream: default_upstream.map(|h| normalise_registry(&h)),
        }
    }
}

/// `HOST/<name>`, normalising Docker Hub's single-component names.
pub fn mirror_name(host: &str, name: &str) -> Result<RepositoryName, ApiError> {
    let host = normalise_registry(host);
    let path = if host == DOCKER_HUB && !name.contains('/') {
        format!("library/{name}")
    } else {
        name.to_string()
    };
    RepositoryName::mirror_of(&host, &path).map_err(|e| ApiError::NameInvalid(e.to_string()))
}

#[async_trait]
impl Resolver for MirrorResolver {
    async fn resolve(
        &self,
        name: &str,
        ns: Option<&str>,
        read: bool,
    ) -> Result<RepositoryName, ApiError> {
        if let Some(ns) = ns.filter(|ns| !ns.is_empty()) {
            // A client that already used the path-prefix form keeps it.
            let first = name.split('/').next().unwrap_or_default();
            if mirror_host(first).is_some_and(|h| normalise_registry(&h) == normalise_registry(ns))
            {
                return name
                    .parse()
                    .map_err(|e: berth_reference::NameError| ApiError::NameInvalid(e.to_string()));
            }
            return mirror_name(ns, name);
        }
        let repo = RepositoryName::parse_lenient(name)
            .map_err(|e| ApiError::NameInvalid(e.to_string()))?;
        if let Some((host, rest)) = repo.mirror_parts() {
            // Docker Hub's aliases all land in one mirror repository.
            if normalise_registry(&host) == DOCKER_HUB {
                return mirror_name(DOCKER_HUB, rest);
            }
            return Ok(repo);
        }
        if read {
            if let Some(upstream) = &self.default_upstream {
                if !self.registry.repository_exists(&repo).await? {
                    return mirror_name(upstream, name);
                }
            }
        }
        Ok(repo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_storage::fs::FsStorage;

    async fn resolver(default: Option<&str>) -> (tempfile::TempDir, MirrorResolver) {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::open(dir.path()).await.unwrap();
        let registry = Arc::new(Registry::new(Arc::new(storage)));
        (
            dir,
            MirrorResolver::new(registry, default.map(String::from)),
        )
    }

    #[tokio::test]
    async fn ns_parameter() {
        let (_d, r) = resolver(None).await;
        let got = r.resolve("alpine", Some("docker.io"), true).await.unwrap();
        assert_eq!(got.as_str(), "docker.io/library/alpine");
        let got = r
            .resolve("pause", Some("registry.k8s.io"), true)
            .await
            .unwrap();
        assert_eq!(got.as_str(), "registry.k8s.io/pause");
        let got = r
            .resolve("library/nginx", Some("index.docker.io"), true)
            .await
            .unwrap();
        assert_eq!(got.as_str(), "docker.io/library/nginx");
        let got = r
            .resolve("quay.io/x/y", Some("quay.io"), true)
            .await
            .unwrap();
        assert_eq!(got.as_str(), "quay.io/x/y");
        // A port: containerd sends `ns=HOST:PORT`.
        for (ns, name) in [
            ("registry.local:5000", "demo/app"),
            ("registry.local:5000", "registry.local__5000/demo/app"),
        ] {
            let got = r.resolve(name, Some(ns), true).await.unwrap();
            assert_eq!(got.as_str(), "registry.local__5000/demo/app");
        }
        assert!(r.resolve("app", Some("[::1]:5000"), true).await.is_err());
        assert!(r.resolve("app", Some("a/../b"), true).await.is_err());
    }

    #[tokio::test]
    async fn path_prefix_and_local() {
        let (_d, r) = resolver(None).await;
        assert_eq!(
            r.resolve("docker.io/alpine", None, true)
                .await
                .unwrap()
                .as_str(),
            "docker.io/library/alpine"
        );
        assert_eq!(
            r.resolve("ghcr.io/o/i", None, true).await.unwrap().as_str(),
            "ghcr.io/o/i"
        );
        assert_eq!(
            r.resolve("team/app", None, true).await.unwrap().as_str(),
            "team/app"
        );
    }

    #[tokio::test]
    async fn default_upstream_for_reads_of_missing_local_repos() {
        let (_d, r) = resolver(Some("docker.io")).await;
        assert_eq!(
            r.resolve("alpine", None, true).await.unwrap().as_str(),
            "docker.io/library/alpine"
        );
        assert_eq!(
            r.resolve("alpine", None, false).await.unwrap().as_str(),
            "alpine"
        );
    }
}
