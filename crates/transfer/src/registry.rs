//! `docker://`: images in a registry, through `berth-upstream` (which does
//! the auth flows, streaming and verification). This module decides how to
//! reach a registry: credentials (`--creds`, else the Docker/Podman auth
//! files), unverified HTTPS falling back to plain HTTP for loopback hosts
//! and `--tls-verify=false` (Docker's insecure registries), extra CA
//! certificates (`--cert-dir`, `--ca-file`, the containers/docker `certs.d`
//! directories), and `--upstream HOST=URL` overrides.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use berth_manifest::Reference;
use berth_reference::{Digest, ImageReference, ManifestRef, RepositoryName};
use berth_upstream::{
    credentials_from_default_files, AuthFile, ByteRange, Credentials, MountOutcome, UploadSession,
    UpstreamClient, UpstreamConfig, UpstreamError,
};
use futures::{StreamExt, TryStreamExt};
use url::Url;

use crate::error::{Result, TransferError};
use crate::source::{BlobRead, Destination, ManifestBlob, Source};

/// How long the HTTPS probe of an insecure registry may take.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Tags listed when a tag is unknown.
const TAGS_SHOWN: usize = 20;

/// Blobs this large or larger are uploaded in resumable chunks.
const CHUNKED_FROM: u64 = 32 << 20;
/// Their chunk size (raised to a registry's minimum).
const CHUNK_SIZE: usize = 16 << 20;

/// Attempts at one blob upload when the failure may pass.
const BLOB_ATTEMPTS: usize = 3;

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// `--creds USER:PASS`; wins over the auth files.
    pub credentials: Option<Credentials>,
    /// `--authfile FILE`, looked at before the default files.
    pub auth_file: Option<PathBuf>,
    /// `--tls-verify`: `Some(false)` skips verification (and allows plain HTTP).
    pub tls_verify: Option<bool>,
    /// `--cert-dir DIR`: `*.crt` files are trusted CAs.
    pub cert_dir: Option<PathBuf>,
    /// `--ca-file FILE`: a PEM bundle of trusted CAs.
    pub ca_file: Option<PathBuf>,
    /// `--upstream HOST=URL`: where a registry host really answers.
    pub upstreams: Vec<(String, Url)>,
}

/// Whether a registry host is on this machine (served over plain HTTP).
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
}

/// A registry named by `--to`: `HOST[:PORT]`, `docker://HOST[:PORT]` or an
/// `http(s)://` URL. Returns the registry name and, for a URL, its base.
pub fn parse_registry_target(s: &str) -> Result<(String, Option<Url>)> {
    match parse_registry_prefix(s)? {
        (name, base, None) => Ok((name, base)),
        (_, _, Some(_)) => Err(TransferError::Invalid(format!(
            "{s:?} is not a registry: give HOST[:PORT] or an http(s):// URL, without a path"
        ))),
    }
}

/// [`parse_registry_target`] with an optional repository path after the
/// registry (`harbor.corp/airgap`, `http://127.0.0.1:5000/mirror`): a
/// Harbor project or any prefix under which images are pushed.
pub fn parse_registry_prefix(s: &str) -> Result<(String, Option<Url>, Option<RepositoryName>)> {
    let s = s.trim().trim_end_matches('/');
    let prefix = |p: &str| -> Result<Option<RepositoryName>> {
        let p = p.trim_matches('/');
        if p.is_empty() {
            return Ok(None);
        }
        p.parse()
            .map(Some)
            .map_err(|e| TransferError::Invalid(format!("{s:?}: the path after the registry: {e}")))
    };
    if s.starts_with("http://") || s.starts_with("https://") {
        let mut url = Url::parse(s).map_err(|e| TransferError::Invalid(format!("{s:?}: {e}")))?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(TransferError::Invalid(format!(
                "{s:?}: a registry URL has no query or fragment"
            )));
        }
        let host = url
            .host_str()
            .ok_or_else(|| TransferError::Invalid(format!("{s:?} has no host")))?;
        let name = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let path = prefix(url.path())?;
        url.set_path("/");
        return Ok((name, Some(url), path));
    }
    let s = s.strip_prefix("docker://").unwrap_or(s);
    let (host, path) = s.split_once('/').unwrap_or((s, ""));
    if host.is_empty() || s.contains(char::is_whitespace) {
        return Err(TransferError::Invalid(format!(
            "{s:?} is not a registry: give HOST[:PORT][/PREFIX] or an http(s):// URL"
        )));
    }
    Ok((host.to_ascii_lowercase(), None, prefix(path)?))
}

impl RegistryOptions {
    fn credentials_for(&self, registry: &str, repo: Option<&str>) -> Result<Option<Credentials>> {
        if let Some(c) = &self.credentials {
            return Ok(Some(c.clone()));
        }
        let auth_err = |e: berth_upstream::AuthFileError| {
            TransferError::Invalid(format!("reading credentials: {e}"))
        };
        if let Some(p) = &self.auth_file {
            let f = AuthFile::load(p).map_err(auth_err)?;
            let found = match repo {
                Some(r) => f.credentials_for_repository(registry, r),
                None => f.credentials_for(registry),
            };
            if found.is_some() {
                return Ok(found);
            }
        }
        credentials_from_default_files(registry, repo).map_err(auth_err)
    }

    /// A PEM file of the CAs to trust for `registry`, if any were given or
    /// are installed in the usual `certs.d` directories. The returned temp
    /// file (when one was needed) must live until the client is built.
    fn ca_bundle(
        &self,
        registry: &str,
    ) -> Result<(Option<PathBuf>, Option<tempfile::NamedTempFile>)> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(d) = &self.cert_dir {
            dirs.push(d.clone());
        } else {
            for base in ["/etc/containers/certs.d", "/etc/docker/certs.d"] {
                let d = Path::new(base).join(registry);
                if d.is_dir() {
                    dirs.push(d);
                }
            }
        }
        let mut pem = Vec::new();
        if let Some(f) = &self.ca_file {
            pem.extend(std::fs::read(f).map_err(|e| TransferError::io(f, e))?);
            pem.push(b'\n');
        }
        for d in &dirs {
            let rd = std::fs::read_dir(d).map_err(|e| TransferError::io(d, e))?;
            let mut files: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "crt"))
                .collect();
            files.sort();
            for f in files {
                pem.extend(std::fs::read(&f).map_err(|e| TransferError::io(&f, e))?);
                pem.push(b'\n');
            }
        }
        if pem.iter().all(u8::is_ascii_whitespace) {
            if let Some(d) = &self.cert_dir {
                return Err(TransferError::Invalid(format!(
                    "--cert-dir {}: no *.crt file in it",
                    d.display()
                )));
            }
            return Ok((None, None));
        }
        let mut tmp = tempfile::NamedTempFile::new()
            .map_err(|e| TransferError::io(std::env::temp_dir(), e))?;
        std::io::Write::write_all(&mut tmp, &pem).map_err(|e| TransferError::io(tmp.path(), e))?;
        Ok((Some(tmp.path().to_path_buf()), Some(tmp)))
    }

    /// A client for `registry` (credentials looked up for `repo`).
    pub async fn client(&self, registry: &str, repo: Option<&str>) -> Result<UpstreamClient> {
        let ctx = |e| TransferError::registry(format!("registry {registry}"), e);
        let mut config = UpstreamConfig::for_registry(registry).map_err(ctx)?;
        let explicit = self
            .upstreams
            .iter()
            .find(|(h, _)| h == &config.registry)
            .map(|(_, u)| u.clone());
        let creds = self.credentials_for(&config.registry, repo)?;
        config = config.with_credentials(creds);
        let (ca, _keep) = self.ca_bundle(&config.registry)?;
        let has_ca = ca.is_some();
        config = config.with_ca_file(ca);
        if let Some(url) = explicit {
            let insecure = self.tls_verify == Some(false);
            config = config
                .with_base_url(url)
                .with_insecure(insecure)
                .map_err(ctx)?;
            return UpstreamClient::new(config).map_err(ctx);
        }
        // Loopback registries are insecure registries by default, as in
        // Docker: HTTPS without verification when spoken, else plain HTTP.
        // `--tls-verify=false` makes any registry one.
        let insecure = match self.tls_verify {
            Some(v) => !v,
            None => is_loopback(&config.registry) && !has_ca,
        };
        if !insecure {
            return UpstreamClient::new(config).map_err(ctx);
        }
        let https = Url::parse(&format!("https://{}/", host_of(&config)))
            .map_err(|e| TransferError::Invalid(e.to_string()))?;
        let tls_config = config
            .clone()
            .with_base_url(https)
            .with_insecure(true)
            .map_err(ctx)?;
        // A short probe: something that is not TLS may not answer at all.
        let mut probe_config = tls_config.clone();
        probe_config.connect_timeout = PROBE_TIMEOUT;
        probe_config.read_timeout = PROBE_TIMEOUT;
        probe_config.request_timeout = PROBE_TIMEOUT;
        let probe = UpstreamClient::new(probe_config).map_err(ctx)?;
        match probe.ping().await {
            Err(UpstreamError::Transport { .. }) => {
                let http = Url::parse(&format!("http://{}/", host_of(&config)))
                    .map_err(|e| TransferError::Invalid(e.to_string()))?;
                UpstreamClient::new(
                    config
                        .with_base_url(http)
                        .with_insecure(true)
                        .map_err(ctx)?,
                )
                .map_err(ctx)
            }
            _ => UpstreamClient::new(tls_config).map_err(ctx),
        }
    }
}

fn host_of(config: &UpstreamConfig) -> String {
    let u = &config.base_url;
    match (u.host_str(), u.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => config.registry.clone(),
    }
}

fn repo_of(r: &ImageReference) -> RepositoryName {
    r.repository.clone()
}

/// An image in a registry, for reading.
pub struct RegistrySource {
    pub(crate) client: UpstreamClient,
    pub(crate) repo: RepositoryName,
    pub(crate) reference: ImageReference,
}

impl RegistrySource {
    pub async fn open(reference: &ImageReference, opts: &RegistryOptions) -> Result<Self> {
        let client = opts
            .client(&reference.registry, Some(reference.repository.as_str()))
            .await?;
        Ok(Self::with_client(client, reference.clone()))
    }

    pub fn with_client(client: UpstreamClient, reference: ImageReference) -> Self {
        RegistrySource {
            client,
            repo: repo_of(&reference),
            reference,
        }
    }

    pub fn client(&self) -> &UpstreamClient {
        &self.client
    }

    /// The image this source reads.
    pub fn reference(&self) -> &ImageReference {
        &self.reference
    }

    fn manifest_ref(&self) -> Result<ManifestRef> {
        let s = self.reference.reference_str();
        s.parse()
            .map_err(|e| TransferError::Invalid(format!("reference {s:?}: {e}")))
    }
}

#[async_trait]
impl Source for RegistrySource {
    fn describe(&self) -> String {
        format!("docker://{}", self.reference)
    }

    async fn root(&self) -> Result<ManifestBlob> {
        let r = self.manifest_ref()?;
        let m = match self.client.manifest_get(&self.repo, &r, &[]).await {
            Ok(m) => m,
            Err(e) if e.is_not_found() && matches!(r, ManifestRef::Tag(_)) => {
                // An unknown tag: say which tags there are.
                let note = match self
                    .client
                    .tags_page(&self.repo, Some(TAGS_SHOWN), None)
                    .await
                {
                    Ok(p) if p.items.is_empty() => " (the repository has no tags)".to_string(),
                    Ok(p) => format!(
                        " (its tags{}: {})",
                        if p.next.is_some() { " include" } else { " are" },
                        p.items.join(", ")
                    ),
                    Err(t) if t.is_not_found() => " (no such repository)".to_string(),
                    Err(_) => String::new(),
                };
                return Err(TransferError::registry(
                    format!("reading {}{note}", self.describe()),
                    e,
                ));
            }
            Err(e) => {
                return Err(TransferError::registry(
                    format!("reading {}", self.describe()),
                    e,
                ))
            }
        };
        Ok(ManifestBlob {
            bytes: m.bytes,
            media_type: m.media_type,
            digest: m.digest,
        })
    }

    async fn manifest(&self, desc: &Reference) -> Result<ManifestBlob> {
        let m = self
            .client
            .manifest_get(&self.repo, &ManifestRef::Digest(desc.digest.clone()), &[])
            .await
            .map_err(|e| {
                TransferError::registry(
                    format!("reading manifest {} of {}", desc.digest, self.describe()),
                    e,
                )
            })?;
        let media_type = if desc.media_type.is_empty() {
            m.media_type
        } else {
            desc.media_type.clone()
        };
        Ok(ManifestBlob {
            bytes: m.bytes,
            media_type,
            digest: m.digest,
        })
    }

    async fn blob(&self, desc: &Reference, offset: u64) -> Result<BlobRead> {
        let range = (offset > 0).then_some(ByteRange {
            start: offset,
            end: None,
        });
        let what = format!("blob {} of {}", desc.digest, self.describe());
        let body = self
            .client
            .blob_get(&self.repo, &desc.digest, range)
            .await
            .map_err(|e| TransferError::registry(format!("reading {what}"), e))?;
        let start = match (body.partial, body.content_range) {
            (true, Some(cr)) => cr.start,
            _ => 0,
        };
        let stream = body
            .stream
            .map_err(move |e| TransferError::registry(format!("reading {what}"), e));
        Ok(BlobRead {
            offset: start,
            stream: Box::pin(stream),
        })
    }

    fn as_registry(&self) -> Option<&RegistrySource> {
        Some(self)
    }
}

/// An image in a registry, for writing.
pub struct RegistryDest {
    client: UpstreamClient,
    repo: RepositoryName,
    reference: ImageReference,
}

impl RegistryDest {
    pub async fn open(reference: &ImageReference, opts: &RegistryOptions) -> Result<Self> {
        let client = opts
            .client(&reference.registry, Some(reference.repository.as_str()))
            .await?;
        Ok(Self::with_client(client, reference.clone()))
    }

    pub fn with_client(client: UpstreamClient, reference: ImageReference) -> Self {
        RegistryDest {
            client,
            repo: repo_of(&reference),
            reference,
        }
    }

    async fn upload_once(
        &self,
        desc: &Reference,
        source: &dyn Source,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        let read = source.blob(desc, 0).await?;
        let (tx, rx) = futures::channel::mpsc::channel::<Result<bytes::Bytes>>(4);
        let upload = self
            .client
            .blob_upload(&self.repo, &desc.digest, desc.size, rx);
        let mut stream = read.stream;
        // Reading the source may fail; the upload then sees a stand-in
        // error, and the source's own error is the one reported.
        let pump = async move {
            let mut tx = tx;
            while let Some(item) = stream.next().await {
                let item = match item {
                    Ok(b) => {
                        progress(b.len() as u64);
                        Ok(b)
                    }
                    Err(e) => {
                        let stand_in = TransferError::Corrupt(format!("source failed: {e}"));
                        let _ = futures::SinkExt::send(&mut tx, Err(stand_in)).await;
                        return Some(e);
                    }
                };
                if futures::SinkExt::send(&mut tx, item).await.is_err() {
                    break;
                }
            }
            None
        };
        let (result, source_error) = futures::join!(upload, pump);
        if let Some(e) = source_error {
            return Err(e);
        }
        result.map_err(self.ctx(format!("uploading blob {}", desc.digest)))
    }

    /// Upload a large blob in chunks; after a transient failure, ask the
    /// registry how much it holds and go on from there (the spec's
    /// resumable upload), reading the source from that offset.
    async fn upload_chunked(
        &self,
        desc: &Reference,
        source: &dyn Source,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        let what = format!("uploading blob {}", desc.digest);
        let mut session = self
            .client
            .upload_start(&self.repo)
            .await
            .map_err(self.ctx(&what))?;
        let chunk_size = session
            .min_chunk()
            .and_then(|m| usize::try_from(m).ok())
            .unwrap_or(0)
            .max(CHUNK_SIZE);
        let mut failures = 0;
        loop {
            match self
                .send_chunks(&mut session, desc, source, progress, chunk_size)
                .await
            {
                Ok(()) => break,
                Err(e) if e.is_transient() && failures + 1 < BLOB_ATTEMPTS => {
                    failures += 1;
                    tracing::warn!(digest = %desc.digest, error = %e, "blob upload interrupted; resuming");
                    tokio::time::sleep(std::time::Duration::from_millis(500 << failures)).await;
                    match self.client.upload_status(&mut session).await {
                        Ok(offset) => {
                            tracing::info!(digest = %desc.digest, offset, "the registry holds part of the upload; resuming there")
                        }
                        Err(e) => {
                            tracing::warn!(digest = %desc.digest, error = %e, "upload status unavailable; starting the blob again");
                            session = self
                                .client
                                .upload_start(&self.repo)
                                .await
                                .map_err(self.ctx(&what))?;
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.client
            .upload_complete(session, &desc.digest)
            .await
            .map_err(self.ctx(&what))
    }

    /// Send the blob from the session's offset to its end, in chunks.
    async fn send_chunks(
        &self,
        session: &mut UploadSession,
        desc: &Reference,
        source: &dyn Source,
        progress: &(dyn Fn(u64) + Send + Sync),
        chunk_size: usize,
    ) -> Result<()> {
        let what = format!("uploading blob {}", desc.digest);
        let offset = session.offset();
        let read = source.blob(desc, offset).await?;
        if read.offset > offset {
            return Err(TransferError::Corrupt(format!(
                "{what}: the source started at {} instead of {offset}",
                read.offset
            )));
        }
        let mut skip = offset - read.offset;
        let mut stream = read.stream;
        let mut buf = bytes::BytesMut::with_capacity(chunk_size);
        while let Some(chunk) = stream.next().await {
            let mut chunk = chunk?;
            if skip > 0 {
                let n = skip.min(chunk.len() as u64) as usize;
                chunk = chunk.slice(n..);
                skip -= n as u64;
            }
            buf.extend_from_slice(&chunk);
            while buf.len() >= chunk_size {
                let part = buf.split_to(chunk_size).freeze();
                let n = part.len() as u64;
                self.client
                    .upload_chunk(session, part)
                    .await
                    .map_err(self.ctx(&what))?;
                progress(n);
            }
        }
        if !buf.is_empty() {
            let n = buf.len() as u64;
            self.client
                .upload_chunk(session, buf.freeze())
                .await
                .map_err(self.ctx(&what))?;
            progress(n);
        }
        if session.offset() != desc.size {
            return Err(TransferError::Corrupt(format!(
                "{what}: sent {} of {} bytes",
                session.offset(),
                desc.size
            )));
        }
        Ok(())
    }

    /// Mount `digest` into this repository from `from` in the same
    /// registry: whether it is there now. A refusal (the registry lacks it
    /// there, or mounts nothing) is no error: the caller uploads instead.
    pub(crate) async fn mount_from(&self, digest: &Digest, from: &RepositoryName) -> bool {
        if *from == self.repo {
            return false;
        }
        match self.client.blob_mount(&self.repo, digest, from).await {
            Ok(MountOutcome::Mounted) => true,
            Ok(MountOutcome::Upload(session)) => {
                let _ = self.client.upload_cancel(session).await;
                false
            }
            Err(e) => {
                tracing::debug!(%digest, %from, error = %e, "mount refused");
                false
            }
        }
    }

    fn ctx(&self, what: impl std::fmt::Display) -> impl FnOnce(UpstreamError) -> TransferError {
        let c = format!("{what} to docker://{}", self.reference);
        move |e| TransferError::registry(c, e)
    }
}

#[async_trait]
impl Destination for RegistryDest {
    fn describe(&self) -> String {
        format!("docker://{}", self.reference)
    }

    async fn has_blob(&self, desc: &Reference) -> Result<bool> {
        self.client
            .blob_exists(&self.repo, &desc.digest)
            .await
            .map_err(self.ctx(format!("checking blob {}", desc.digest)))
    }

    async fn mount_blob(&self, desc: &Reference, source: &dyn Source) -> Result<bool> {
        let Some(src) = source.as_registry() else {
            return Ok(false);
        };
        if src.client.base_url() != self.client.base_url() {
            return Ok(false);
        }
        Ok(self.mount_from(&desc.digest, &src.repo).await)
    }

    async fn put_blob(
        &self,
        desc: &Reference,
        source: &dyn Source,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        // Small blobs go in one streamed PUT, started again on a transient
        // failure; large ones in chunks, resumed where the registry stands.
        if desc.size >= CHUNKED_FROM {
            return self.upload_chunked(desc, source, progress).await;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.upload_once(desc, source, progress).await {
                Err(e) if e.is_transient() && attempt < BLOB_ATTEMPTS => {
                    tracing::warn!(digest = %desc.digest, error = %e, "blob upload interrupted; starting it again");
                    tokio::time::sleep(std::time::Duration::from_millis(500 << attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn put_manifest(&self, manifest: &ManifestBlob, root: bool) -> Result<()> {
        let reference = match (root, &self.reference.tag, &self.reference.digest) {
            (true, Some(t), _) => ManifestRef::Tag(t.clone()),
            (true, None, Some(d)) if d != &manifest.digest => {
                return Err(TransferError::Invalid(format!(
                    "destination names digest {d}, but the image is {}",
                    manifest.digest
                )))
            }
            _ => ManifestRef::Digest(manifest.digest.clone()),
        };
        self.client
            .manifest_put(
                &self.repo,
                &reference,
                &manifest.media_type,
                manifest.bytes.clone(),
            )
            .await
            .map_err(self.ctx(format!("writing manifest {}", manifest.digest)))?;
        Ok(())
    }
}

/// A destination that keeps nothing: every blob and manifest is read in
/// full (and so verified) and dropped. `berth cache` uses it to make a
/// pull-through berth fetch an image from its upstream.
pub struct NullDest {
    pub name: String,
}

#[async_trait]
impl Destination for NullDest {
    fn describe(&self) -> String {
        self.name.clone()
    }

    async fn has_blob(&self, _desc: &Reference) -> Result<bool> {
        Ok(false)
    }

    async fn put_blob(
        &self,
        desc: &Reference,
        source: &dyn Source,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        let mut read = source.blob(desc, 0).await?;
        let mut hasher = desc.digest.algorithm().hasher();
        let mut n = 0u64;
        while let Some(chunk) = read.stream.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            n += chunk.len() as u64;
            progress(chunk.len() as u64);
        }
        let actual: Digest = hasher.finish();
        if actual != desc.digest || n != desc.size {
            return Err(TransferError::DigestMismatch {
                what: format!("blob {} ({n} bytes, {} expected)", desc.digest, desc.size),
                expected: desc.digest.clone(),
                actual,
            });
        }
        Ok(())
    }

    async fn put_manifest(&self, _manifest: &ManifestBlob, _root: bool) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:80",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["docker.io", "10.0.0.1:5000", "registry.local"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn registry_targets() {
        assert_eq!(
            parse_registry_target("127.0.0.1:5000").unwrap().0,
            "127.0.0.1:5000"
        );
        let (n, u) = parse_registry_target("http://127.0.0.1:5000/").unwrap();
        assert_eq!(n, "127.0.0.1:5000");
        assert_eq!(u.unwrap().scheme(), "http");
        assert!(parse_registry_target("a/b").is_err());
        let (n, u, p) = parse_registry_prefix("harbor.corp/airgap/edge").unwrap();
        assert_eq!(
            (n.as_str(), u, p.unwrap().as_str()),
            ("harbor.corp", None, "airgap/edge")
        );
        let (n, u, p) = parse_registry_prefix("http://127.0.0.1:5000/airgap/").unwrap();
        assert_eq!(n, "127.0.0.1:5000");
        assert_eq!(u.unwrap().as_str(), "http://127.0.0.1:5000/");
        assert_eq!(p.unwrap().as_str(), "airgap");
        for bad in ["h/UPPER", "h/a//b", "h/../x", "http://h/x?y", "/x", ""] {
            assert!(parse_registry_prefix(bad).is_err(), "{bad}");
        }
    }
}
