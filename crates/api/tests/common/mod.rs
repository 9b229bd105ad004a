//! In-process harness for the HTTP API tests: a [`berth_api::router`] over an
//! [`FsStorage`] in a temporary directory, driven with `tower::ServiceExt::oneshot`
//! (no sockets), plus helpers that build images by hand.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::Router;
use berth_api::ApiState;
use berth_reference::{Algorithm, Digest};
use berth_registry::Registry;
use berth_storage::fs::FsStorage;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tempfile::TempDir;
use tower::ServiceExt;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The digest of zero bytes.
pub const EMPTY_SHA256: &str =
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// A router over a fresh store. The store's root is `dir/store`, so that
/// anything written beside it (an escape from the root) can be seen.
pub struct Harness {
    pub dir: TempDir,
    pub root: PathBuf,
    pub app: Router,
}

/// A response with its body collected.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A header that must be present.
    pub fn h(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name} header in {self:?}"))
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Assert the status, with the whole response in the failure message.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}; headers: {:?}",
            self.text(),
            self.headers
        );
        self
    }

    /// Assert a spec error: the status, a JSON body and its first `code`.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Self {
        self.expect(status);
        assert_eq!(json_error_code(self), code, "body: {}", self.text());
        self
    }
}

/// The `code` of the first entry of a spec error body, checking its shape.
#[track_caller]
pub fn json_error_code(resp: &Resp) -> String {
    assert!(
        resp.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "error without a JSON Content-Type: {resp:?}"
    );
    let v = resp.json();
    let errors = v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array in {v}"));
    assert!(!errors.is_empty(), "empty errors array");
    for e in errors {
        let code = e["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no code in {e}"));
        assert!(
            code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
            "code {code:?} is not uppercase letters and underscores"
        );
        assert!(e["message"].is_string(), "no message in {e}");
    }
    errors[0]["code"].as_str().unwrap_or_default().to_string()
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> Digest {
    Digest::sha256_of(bytes)
}

pub fn sha512(bytes: &[u8]) -> Digest {
    Digest::of_bytes(Algorithm::Sha512, bytes)
}

/// Deterministic pseudo-random bytes (xorshift), different for each seed.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A descriptor as JSON.
pub fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({
        "mediaType": media_type,
        "digest": sha256(bytes).to_string(),
        "size": bytes.len(),
    })
}

/// An image pushed by [`Harness::push_image`].
#[derive(Debug, Clone)]
pub struct Image {
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    pub manifest: Vec<u8>,
    pub digest: Digest,
    pub media_type: String,
}

/// An image manifest (OCI or Docker schema2, by `media_type`) over
/// `config` and `layers`, with `extra` fields merged into the top level.
pub fn image_manifest(
    media_type: &str,
    config: &[u8],
    layers: &[Vec<u8>],
    extra: Value,
) -> Vec<u8> {
    let (config_type, layer_type) = if media_type == DOCKER_MANIFEST {
        (DOCKER_CONFIG, DOCKER_LAYER)
    } else {
        (OCI_CONFIG, OCI_LAYER)
    };
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(config_type, config),
        "layers": layers.iter().map(|l| descriptor(layer_type, l)).collect::<Vec<_>>(),
    });
    if let (Some(obj), Value::Object(more)) = (m.as_object_mut(), extra) {
        obj.extend(more);
    }
    serde_json::to_vec_pretty(&m).unwrap()
}

/// An index (OCI or Docker list, by `media_type`) of `children`
/// (each `(media type, bytes)`).
pub fn index_manifest(media_type: &str, children: &[(&str, &[u8])], extra: Value) -> Vec<u8> {
    let manifests: Vec<Value> = children
        .iter()
        .enumerate()
        .map(|(i, (mt, bytes))| {
            let mut d = descriptor(mt, bytes);
            d["platform"] = json!({
                "architecture": if i % 2 == 0 { "amd64" } else { "arm64" },
                "os": "linux",
            });
            d
        })
        .collect();
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": manifests,
    });
    if let (Some(obj), Value::Object(more)) = (m.as_object_mut(), extra) {
        obj.extend(more);
    }
    serde_json::to_vec_pretty(&m).unwrap()
}

pub struct RequestBuilder<'a> {
    harness: &'a Harness,
    req: http::request::Builder,
    body: Body,
}

impl RequestBuilder<'_> {
    pub fn header(mut self, name: &str, value: impl AsRef<str>) -> Self {
        self.req = self.req.header(name, value.as_ref());
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Body::from(body.into());
        self
    }

    /// A body with a matching `Content-Length`, as a real client sends it.
    pub fn sized_body(self, body: impl Into<Bytes>) -> Self {
        let body = body.into();
        self.header("content-length", body.len().to_string())
            .body(body)
    }

    pub fn raw_body(mut self, body: Body) -> Self {
        self.body = body;
        self
    }

    pub async fn send(self) -> Resp {
        let req = self.req.body(self.body).expect("request builds");
        self.harness.send(req).await
    }
}

impl Harness {
    pub async fn new() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("store");
        let storage = FsStorage::open(&root).await.expect("open store");
        let registry = Arc::new(Registry::new(Arc::new(storage)));
        let app = berth_api::router(ApiState::new(registry));
        Harness { dir, root, app }
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.app.clone().oneshot(req).await.expect("infallible");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub fn request(&self, method: Method, uri: &str) -> RequestBuilder<'_> {
        RequestBuilder {
            harness: self,
            req: Request::builder().method(method).uri(uri),
            body: Body::empty(),
        }
    }

    pub async fn get(&self, uri: &str) -> Resp {
        self.request(Method::GET, uri).send().await
    }

    pub async fn head(&self, uri: &str) -> Resp {
        self.request(Method::HEAD, uri).send().await
    }

    pub async fn delete(&self, uri: &str) -> Resp {
        self.request(Method::DELETE, uri).send().await
    }

    pub async fn post(&self, uri: &str) -> Resp {
        self.request(Method::POST, uri).send().await
    }

    /// Push a blob monolithically (`POST ?digest=`); asserts 201.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let digest = sha256(bytes);
        let r = self
            .request(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            )
            .header("content-type", "application/octet-stream")
            .sized_body(bytes.to_vec())
            .send()
            .await;
        r.expect(201);
        digest
    }

    /// Open an upload session; returns its `Location`.
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = self.post(&format!("/v2/{repo}/blobs/uploads/")).await;
        r.expect(202);
        r.h("location").to_string()
    }

    /// `PUT /v2/<repo>/manifests/<reference>` with a Content-Type.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Resp {
        self.request(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .sized_body(bytes.to_vec())
            .send()
            .await
    }

    /// Push a small image (its blobs, then its manifest under `reference`).
    /// `seed` makes the content unique.
    pub async fn push_image(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        seed: u64,
    ) -> Image {
        let config = format!(
            "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed},\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[]}}}}"
        )
        .into_bytes();
        let layers = vec![pseudo_random(1000, seed), pseudo_random(3000, seed + 1000)];
        self.push_blob(repo, &config).await;
        for l in &layers {
            self.push_blob(repo, l).await;
        }
        let manifest = image_manifest(media_type, &config, &layers, json!({}));
        let r = self
            .put_manifest(repo, reference, media_type, &manifest)
            .await;
        r.expect(201);
        let digest = sha256(&manifest);
        assert_eq!(r.h("docker-content-digest"), digest.to_string());
        Image {
            config,
            layers,
            manifest,
            digest,
            media_type: media_type.to_string(),
        }
    }

    /// Assert that nothing exists beside the store root, and that the root
    /// holds only the backend's own directories with well-formed names.
    pub fn assert_store_contained(&self) {
        let beside: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            beside,
            vec!["store".to_string()],
            "written outside the root"
        );
        let mut top: Vec<_> = std::fs::read_dir(&self.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        assert_eq!(
            top,
            ["blobs", "docs", "tmp", "uploads"],
            "unexpected entries in the root"
        );
        walk_names(&self.root, &mut |p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                !name.is_empty()
                    && name != ".."
                    && name != "."
                    && name.bytes().all(|b| b.is_ascii_alphanumeric()
                        || matches!(b, b'.' | b'_' | b'-' | b':' | b'+' | b'=')),
                "odd file name in the store: {}",
                p.display()
            );
        });
    }

    /// Files under `<root>/<sub>` (recursively).
    pub fn files_under(&self, sub: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk_names(&self.root.join(sub), &mut |p| {
            if p.is_file() {
                out.push(p.to_path_buf());
            }
        });
        out
    }
}

fn walk_names(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let p = e.unwrap().path();
        f(&p);
        if p.is_dir() {
            walk_names(&p, f);
        }
    }
}
