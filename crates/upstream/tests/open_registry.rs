//! The client against a real Distribution 2.8 registry without auth: pulls
//! (manifests by tag and digest, OCI and Docker media types, streamed and
//! ranged blobs), listings with pagination, pushes (monolithic, chunked,
//! mount, manifest put/delete) checked back with skopeo, and the error
//! mapping for missing content and an unreachable upstream.

mod common;

use berth_reference::{Digest, ManifestRef, RepositoryName};
use berth_upstream::{
    ByteRange, MountOutcome, UpstreamClient, UpstreamConfig, UpstreamError, DOCKER_MANIFEST,
    OCI_INDEX, OCI_MANIFEST,
};
use bytes::Bytes;
use common::{Layout, Registry, RegistryAuth};
use futures::StreamExt;
use url::Url;

fn client_for(reg: &Registry) -> UpstreamClient {
    let cfg = UpstreamConfig::for_registry(&reg.host())
        .expect("config")
        .with_base_url(Url::parse(&reg.url()).expect("url"));
    UpstreamClient::new(cfg).expect("client")
}

fn repo(s: &str) -> RepositoryName {
    s.parse().expect("repository name")
}

fn tag(s: &str) -> ManifestRef {
    s.parse().expect("tag")
}

fn by_digest(d: &Digest) -> ManifestRef {
    ManifestRef::Digest(d.clone())
}

async fn collect(mut s: berth_upstream::BlobStream) -> Result<Vec<u8>, UpstreamError> {
    let mut out = Vec::new();
    // Bounded by the body: the registry sends a finite blob.
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_manifests_and_blobs() {
    let reg = Registry::start(RegistryAuth::None, None);
    let layout = Layout::build(3 << 20, 1);
    layout.push("single", &reg, "team/app", "v1", None);
    layout.push("multi", &reg, "team/app", "multi", None);
    let c = client_for(&reg);
    let app = repo("team/app");

    // HEAD by tag: digest, media type and size as pushed.
    let meta = c.manifest_head(&app, &tag("v1"), &[]).await.expect("head");
    assert_eq!(meta.digest, layout.manifest.digest);
    assert_eq!(meta.media_type, OCI_MANIFEST);
    assert_eq!(meta.size, layout.manifest.bytes.len() as u64);

    // GET by tag and by digest: the exact bytes.
    let m = c
        .manifest_get(&app, &tag("v1"), &[])
        .await
        .expect("get by tag");
    assert_eq!(m.bytes.as_ref(), layout.manifest.bytes.as_slice());
    assert_eq!(m.digest, layout.manifest.digest);
    assert_eq!(m.media_type, OCI_MANIFEST);
    let m = c
        .manifest_get(&app, &by_digest(&layout.manifest.digest), &[])
        .await
        .expect("get by digest");
    assert_eq!(m.digest, layout.manifest.digest);

    // The multi-arch index, and a child manifest by digest.
    let idx = c
        .manifest_get(&app, &tag("multi"), &[])
        .await
        .expect("index");
    assert_eq!(idx.media_type, OCI_INDEX);
    assert_eq!(idx.digest, layout.index.digest);
    let meta = c
        .manifest_head(&app, &by_digest(&layout.arm_manifest.digest), &[])
        .await
        .expect("arm head");
    assert_eq!(meta.size, layout.arm_manifest.bytes.len() as u64);

    // Blobs: HEAD size, streamed GET verified, ranged GET.
    let big = &layout.layers[1];
    let bm = c.blob_head(&app, &big.digest).await.expect("blob head");
    assert_eq!(bm.size, big.bytes.len() as u64);
    let body = c.blob_get(&app, &big.digest, None).await.expect("blob get");
    assert_eq!(body.length, Some(big.bytes.len() as u64));
    assert!(!body.partial);
    let got = collect(body.stream).await.expect("verified body");
    assert_eq!(got, big.bytes);

    let range = ByteRange {
        start: 1000,
        end: Some(1999),
    };
    let part = c
        .blob_get(&app, &big.digest, Some(range))
        .await
        .expect("range");
    assert!(part.partial, "Distribution serves ranges with 206");
    let cr = part.content_range.expect("content range");
    assert_eq!(
        (cr.start, cr.end, cr.total),
        (1000, 1999, Some(big.bytes.len() as u64))
    );
    assert_eq!(part.length, Some(1000));
    assert_eq!(
        collect(part.stream).await.expect("part"),
        &big.bytes[1000..2000]
    );
    let tail = c
        .blob_get(
            &app,
            &big.digest,
            Some(ByteRange {
                start: 5,
                end: None,
            }),
        )
        .await
        .expect("open range");
    assert_eq!(collect(tail.stream).await.expect("tail"), &big.bytes[5..]);
    assert!(c
        .blob_exists(&app, &layout.config.digest)
        .await
        .expect("exists"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_content_is_a_definitive_not_found() {
    let reg = Registry::start(RegistryAuth::None, None);
    let layout = Layout::build(1024, 2);
    layout.push("single", &reg, "present", "v1", None);
    let c = client_for(&reg);
    let absent = Digest::sha256_of(b"never pushed");

    let e = c
        .manifest_get(&repo("present"), &tag("nope"), &[])
        .await
        .unwrap_err();
    assert!(e.is_not_found() && !e.is_unavailable(), "{e:?}");
    assert_eq!(e.spec_code(), Some("MANIFEST_UNKNOWN"), "{e}");
    let e = c
        .manifest_head(&repo("present"), &tag("nope"), &[])
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert_eq!(e.spec_code(), Some("MANIFEST_UNKNOWN"));
    let e = c
        .manifest_get(&repo("present"), &by_digest(&absent), &[])
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    let e = c
        .manifest_get(&repo("no/such/repo"), &tag("latest"), &[])
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    let e = c.blob_head(&repo("present"), &absent).await.unwrap_err();
    assert_eq!(e.spec_code(), Some("BLOB_UNKNOWN"), "{e:?}");
    let e = c
        .blob_get(&repo("present"), &absent, None)
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert!(!c
        .blob_exists(&repo("present"), &absent)
        .await
        .expect("exists"));
    let e = c.tags_list(&repo("no/such/repo"), None).await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert_eq!(e.spec_code(), Some("NAME_UNKNOWN"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_unavailable() {
    let closed = common::ClosedPort::new();
    let port = closed.port();
    let cfg = UpstreamConfig::for_registry(&format!("127.0.0.1:{port}"))
        .expect("config")
        .with_base_url(Url::parse(&format!("http://127.0.0.1:{port}/")).expect("url"));
    let c = UpstreamClient::new(cfg).expect("client");
    let e = c
        .manifest_head(&repo("a"), &tag("latest"), &[])
        .await
        .unwrap_err();
    assert!(matches!(e, UpstreamError::Transport { .. }), "{e:?}");
    assert!(e.is_unavailable() && !e.is_not_found());
    assert!(e.to_string().to_lowercase().contains("refused"), "{e}");
    assert!(c.ping().await.unwrap_err().is_unavailable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_follow_pagination() {
    let reg = Registry::start(RegistryAuth::None, None);
    let layout = Layout::build(1024, 3);
    for r in ["alpha", "beta/one", "gamma"] {
        layout.push("single", &reg, r, "v1", None);
    }
    let c = client_for(&reg);
    // More tags, put by this client: the same manifest under several names.
    let m = c
        .manifest_get(&repo("alpha"), &tag("v1"), &[])
        .await
        .expect("manifest");
    for t in ["v2", "v3", "v4", "latest"] {
        let d = c
            .manifest_put(&repo("alpha"), &tag(t), &m.media_type, m.bytes.clone())
            .await
            .expect("tag");
        assert_eq!(d, m.digest);
    }
    let mut tags = c.tags_list(&repo("alpha"), None).await.expect("tags");
    tags.sort();
    assert_eq!(tags, vec!["latest", "v1", "v2", "v3", "v4"]);
    // Distribution 2.8 ignores `n` on tags (one page); the Link-following
    // path is exercised through the catalog below.

    let page = c.catalog_page(Some(2), None).await.expect("catalog page");
    assert_eq!(page.items, vec!["alpha", "beta/one"]);
    assert!(page.next.is_some(), "Distribution sends a Link for more");
    let all = c.catalog(None).await.expect("catalog");
    assert_eq!(all, vec!["alpha", "beta/one", "gamma"]);
    // One repository per page: three pages joined through Link headers.
    let all = c.catalog(Some(1)).await.expect("catalog page by page");
    assert_eq!(all, vec!["alpha", "beta/one", "gamma"]);
    let page = c
        .catalog_page(Some(2), Some("beta/one"))
        .await
        .expect("page 2");
    assert_eq!(page.items, vec!["gamma"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_read_back_by_skopeo() {
    let reg = Registry::start(RegistryAuth::None, None);
    let layout = Layout::build(2 << 20, 4);
    layout.push("single", &reg, "source/img", "v1", None);
    let c = client_for(&reg);
    let dst = repo("dest/img");

    // Config monolithically from memory; the big layer streamed in chunks;
    // the small layer mounted from the source repository.
    c.blob_upload_bytes(
        &dst,
        &layout.config.digest,
        Bytes::from(layout.config.bytes.clone()),
    )
    .await
    .expect("config upload");
    let big = layout.layers[1].clone();
    let chunks: Vec<Result<Bytes, std::io::Error>> = big
        .bytes
        .chunks(300_000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    c.blob_upload_chunked(&dst, &big.digest, futures::stream::iter(chunks), 1 << 20)
        .await
        .expect("chunked upload");
    match c
        .blob_mount(&dst, &layout.layers[0].digest, &repo("source/img"))
        .await
        .expect("mount")
    {
        MountOutcome::Mounted => {}
        MountOutcome::Upload(_) => panic!("Distribution mounts blobs it has"),
    }
    // A mount of something absent opens an upload instead; cancel it.
    match c
        .blob_mount(&dst, &Digest::sha256_of(b"absent"), &repo("source/img"))
        .await
        .expect("mount attempt")
    {
        MountOutcome::Upload(s) => c.upload_cancel(s).await.expect("cancel"),
        MountOutcome::Mounted => panic!("mounted a blob that does not exist"),
    }
    // A wrong digest is refused by the registry, definitively.
    let e = c
        .blob_upload_bytes(
            &dst,
            &Digest::sha256_of(b"other"),
            Bytes::from_static(b"content"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, UpstreamError::Rejected { status: 400, .. }),
        "{e:?}"
    );
    assert_eq!(e.spec_code(), Some("DIGEST_INVALID"));

    let d = c
        .manifest_put(
            &dst,
            &tag("copied"),
            OCI_MANIFEST,
            Bytes::from(layout.manifest.bytes.clone()),
        )
        .await
        .expect("manifest put");
    assert_eq!(d, layout.manifest.digest);

    // An independent client reads what we pushed.
    let out = common::run(std::process::Command::new("skopeo").args([
        "--insecure-policy",
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{}/dest/img:copied", reg.host()),
    ]));
    assert_eq!(out.as_bytes(), layout.manifest.bytes.as_slice());
    let oci_out = tempfile::tempdir().expect("tempdir");
    common::run(std::process::Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/dest/img:copied", reg.host()),
        &format!("oci:{}:x", oci_out.path().display()),
    ]));
    let copied = std::fs::read(oci_out.path().join("blobs/sha256").join(big.digest.hex()))
        .expect("layer copied");
    assert_eq!(copied, big.bytes);

    // Docker schema2, converted by skopeo, is read with its own media type.
    common::run(std::process::Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        "--format=v2s2",
        "--dest-tls-verify=false",
        &format!("oci:{}:single", layout.dir.path().display()),
        &format!("docker://{}/dockerfmt:v1", reg.host()),
    ]));
    let dm = c
        .manifest_get(&repo("dockerfmt"), &tag("v1"), &[])
        .await
        .expect("schema2");
    assert_eq!(dm.media_type, DOCKER_MANIFEST);
    let head = c
        .manifest_head(&repo("dockerfmt"), &tag("v1"), &[])
        .await
        .expect("schema2 head");
    assert_eq!(head.digest, dm.digest);

    // Delete by digest; then it is gone.
    c.manifest_delete(&dst, &by_digest(&d))
        .await
        .expect("delete");
    let e = c
        .manifest_head(&dst, &by_digest(&d), &[])
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monolithic_streamed_upload_is_not_buffered_whole() {
    let reg = Registry::start(RegistryAuth::None, None);
    let c = client_for(&reg);
    // 24 MiB produced lazily in 64 KiB pieces.
    let total: usize = 24 << 20;
    let piece = 64 << 10;
    let mut hasher = berth_reference::Algorithm::Sha256.hasher();
    for i in 0..(total / piece) {
        hasher.update(&common::pseudo_random(piece, i as u64));
    }
    let digest = hasher.finish();
    let body = futures::stream::iter(0..(total / piece))
        .map(move |i| Ok::<_, std::io::Error>(Bytes::from(common::pseudo_random(piece, i as u64))));
    c.blob_upload(&repo("big/blob"), &digest, total as u64, body)
        .await
        .expect("streamed upload");
    let meta = c.blob_head(&repo("big/blob"), &digest).await.expect("head");
    assert_eq!(meta.size, total as u64);
    let body = c
        .blob_get(&repo("big/blob"), &digest, None)
        .await
        .expect("get");
    let mut n = 0u64;
    let mut s = body.stream;
    while let Some(chunk) = s.next().await {
        n += chunk.expect("verified chunk").len() as u64;
    }
    assert_eq!(n, total as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_dying_mid_blob_is_a_transport_error() {
    let mut reg = Registry::start(RegistryAuth::None, None);
    let c = client_for(&reg);
    let total: usize = 48 << 20;
    let data = Bytes::from(common::pseudo_random(total, 99));
    let digest = Digest::sha256_of(&data);
    c.blob_upload_bytes(&repo("dying"), &digest, data)
        .await
        .expect("upload");
    let body = c
        .blob_get(&repo("dying"), &digest, None)
        .await
        .expect("get");
    let mut s = body.stream;
    let first = s.next().await.expect("a first chunk").expect("ok chunk");
    assert!(!first.is_empty());
    reg.kill();
    // Whatever was buffered drains, then the body fails; never a clean end.
    let mut received = first.len();
    let mut outcome = None;
    while let Some(item) = s.next().await {
        match item {
            Ok(b) => received += b.len(),
            Err(e) => {
                outcome = Some(e);
                break;
            }
        }
    }
    let e =
        outcome.unwrap_or_else(|| panic!("stream ended cleanly after {received} of {total} bytes"));
    assert!(matches!(e, UpstreamError::Transport { .. }), "{e:?}");
    assert!(e.is_unavailable());
    assert!(received < total);
    let e = c
        .manifest_head(&repo("dying"), &tag("x"), &[])
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
}
