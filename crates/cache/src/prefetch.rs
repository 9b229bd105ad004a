//! Server-side prefetch: the cache fetches a whole image (every platform,
//! or the ones asked for) from its upstream itself, so that `berth cache`
//! need not pull every byte through the client to warm it. It walks the
//! image as a pull would — the manifest, an index's children, each
//! image's config and layers — through the same single-flight fills, and
//! reports each step as an [`Event`].

use std::time::Duration;

use berth_manifest::{Kind, Manifest};
use berth_reference::{Digest, ManifestRef, RepositoryName};
use berth_registry::RegistryError;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::{BlobLocation, Cache};

/// Most manifests one prefetch walks (an index of indexes is bounded too).
const MAX_MANIFESTS: usize = 10_000;
/// How often a long blob fill reports that it is still going, so that the
/// client can tell a slow upstream from a dead connection.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// One step of a prefetch, as the NDJSON line the API sends.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    Manifest {
        digest: String,
        #[serde(rename = "mediaType")]
        media_type: String,
    },
    /// A blob is held now; `fetched` is false when it was already.
    Blob {
        digest: String,
        size: u64,
        fetched: bool,
    },
    /// Still fetching this blob.
    Waiting {
        digest: String,
        bytes: u64,
    },
    Done {
        digest: String,
        manifests: usize,
        blobs: usize,
        fetched: usize,
        bytes: u64,
    },
    Error {
        message: String,
    },
}

/// Which platforms of an index to fetch (`os/arch[/variant]`); empty: all.
#[derive(Debug, Clone, Default)]
pub struct Platforms(pub Vec<String>);

impl Platforms {
    fn keeps(&self, child: Option<&serde_json::Value>) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let Some(p) = child.and_then(|c| c.get("platform")) else {
            // Entries without a platform (attestations) go with any image.
            return true;
        };
        let field = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("");
        let (os, arch, variant) = (field("os"), field("architecture"), field("variant"));
        self.0.iter().any(|want| {
            let mut w = want.split('/');
            w.next() == Some(os) && w.next() == Some(arch) && w.next().is_none_or(|v| v == variant)
        })
    }
}

impl Cache {
    /// Fetch `reference` of the mirrored `repo` and everything it needs;
    /// every step is sent on `events`, the last being `Done` or `Error`.
    /// Stops early when the receiver goes away (the client disconnected).
    pub async fn prefetch(
        &self,
        repo: RepositoryName,
        reference: ManifestRef,
        platforms: Platforms,
        events: mpsc::Sender<Event>,
    ) {
        let last = match self.walk(&repo, &reference, &platforms, &events).await {
            Ok(done) => done,
            Err(e) => Event::Error {
                message: e.to_string(),
            },
        };
        let _ = events.send(last).await;
    }

    async fn walk(
        &self,
        repo: &RepositoryName,
        reference: &ManifestRef,
        platforms: &Platforms,
        events: &mpsc::Sender<Event>,
    ) -> Result<Event, RegistryError> {
        let gone = || {
            RegistryError::Storage(berth_storage::StorageError::Io(std::io::Error::other(
                "the client went away",
            )))
        };
        let root = self.manifest(repo, reference).await?;
        let root_digest = root.digest.clone();
        let mut stack = vec![root];
        let (mut manifests, mut blobs, mut fetched, mut bytes) = (0usize, 0usize, 0usize, 0u64);
        let mut seen = std::collections::HashSet::new();
        while let Some(m) = stack.pop() {
            manifests += 1;
            if manifests > MAX_MANIFESTS {
                return Err(RegistryError::ManifestInvalid(format!(
                    "more than {MAX_MANIFESTS} manifests"
                )));
            }
            events
                .send(Event::Manifest {
                    digest: m.digest.to_string(),
                    media_type: m.media_type.clone(),
                })
                .await
                .map_err(|_| gone())?;
            let parsed = Manifest::parse(&m.bytes, Some(&m.media_type))
                .map_err(|e| RegistryError::ManifestInvalid(e.to_string()))?;
            match parsed.kind {
                Kind::Index => {
                    let json: serde_json::Value =
                        serde_json::from_slice(&m.bytes).unwrap_or_default();
                    let listed = json.get("manifests").and_then(|l| l.as_array());
                    for (i, child) in parsed.manifests.iter().enumerate() {
                        if !platforms.keeps(listed.and_then(|l| l.get(i))) {
                            continue;
                        }
                        if seen.insert(child.digest.clone()) {
                            let c = self
                                .manifest(repo, &ManifestRef::Digest(child.digest.clone()))
                                .await?;
                            stack.push(c);
                        }
                    }
                }
                Kind::Image => {
                    for b in parsed.blobs {
                        if !seen.insert(b.digest.clone()) {
                            continue;
                        }
                        let (size, was_fetched) = self.fetch_blob(repo, &b.digest, events).await?;
                        blobs += 1;
                        if was_fetched {
                            fetched += 1;
                            bytes += size;
                        }
                        events
                            .send(Event::Blob {
                                digest: b.digest.to_string(),
                                size,
                                fetched: was_fetched,
                            })
                            .await
                            .map_err(|_| gone())?;
                    }
                }
            }
        }
        Ok(Event::Done {
            digest: root_digest.to_string(),
            manifests,
            blobs,
            fetched,
            bytes,
        })
    }

    /// Make the cache hold one blob: (its size, whether it was fetched now).
    async fn fetch_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        events: &mpsc::Sender<Event>,
    ) -> Result<(u64, bool), RegistryError> {
        let location = self.blob_locate(repo, digest).await?;
        match location {
            BlobLocation::Local { size } => Ok((size, false)),
            // Storage is full: nothing can be kept.
            BlobLocation::Uncached { .. } => Err(RegistryError::StorageFull),
            filling @ (BlobLocation::Filling { .. } | BlobLocation::Forwarded { .. }) => {
                // Following the fill (here, or at the owner replica) to its
                // end is what stores it; the bytes read here are dropped.
                let mut stream = self.blob_stream(digest, filling, None).await?;
                let mut read = 0u64;
                let mut beat = tokio::time::interval(HEARTBEAT);
                beat.tick().await;
                loop {
                    tokio::select! {
                        chunk = stream.next() => match chunk {
                            Some(Ok(c)) => read += c.len() as u64,
                            Some(Err(e)) => return Err(RegistryError::Storage(e.into())),
                            None => break,
                        },
                        _ = beat.tick() => {
                            let _ = events
                                .send(Event::Waiting { digest: digest.to_string(), bytes: read })
                                .await;
                        }
                    }
                }
                Ok((read, true))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_filter() {
        let amd = serde_json::json!({"platform": {"os": "linux", "architecture": "amd64"}});
        let arm = serde_json::json!({"platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}});
        let p = Platforms(vec!["linux/amd64".into()]);
        assert!(p.keeps(Some(&amd)) && !p.keeps(Some(&arm)));
        assert!(Platforms(vec!["linux/arm64".into()]).keeps(Some(&arm)));
        assert!(!Platforms(vec!["linux/arm64/v7".into()]).keeps(Some(&arm)));
        assert!(Platforms::default().keeps(Some(&arm)));
        assert!(p.keeps(Some(&serde_json::json!({}))));
    }
}
