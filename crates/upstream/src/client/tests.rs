//! Tests of the parts that need no registry: header parsing, media type
//! sniffing, URL building and client construction.

use super::listing::parse_link_next;
use super::manifests::{bare_media_type, sniff_media_type};
use super::*;

#[test]
fn link_next() {
    assert_eq!(
        parse_link_next(r#"</v2/_catalog?last=b&n=2>; rel="next""#),
        Some("/v2/_catalog?last=b&n=2")
    );
    assert_eq!(
        parse_link_next(r#"<https://x/a,b>; rel="prev", <https://x/next?x=1,2>; rel=next"#),
        Some("https://x/next?x=1,2")
    );
    assert_eq!(parse_link_next(r#"</p>; rel="prev""#), None);
    assert_eq!(parse_link_next("garbage"), None);
}

#[test]
fn media_type_sniffing() {
    assert_eq!(
        bare_media_type("application/json; charset=utf-8"),
        "application/json"
    );
    assert_eq!(
        sniff_media_type(
            br#"{"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#
        )
        .as_deref(),
        Some(DOCKER_MANIFEST)
    );
    assert_eq!(
        sniff_media_type(br#"{"manifests":[]}"#).as_deref(),
        Some(OCI_INDEX)
    );
    assert_eq!(
        sniff_media_type(br#"{"config":{},"layers":[]}"#).as_deref(),
        Some(OCI_MANIFEST)
    );
    assert_eq!(sniff_media_type(br#"{"schemaVersion":1}"#), None);
    assert_eq!(sniff_media_type(b"nope"), None);
}

#[test]
fn docker_hub_official_images_get_library() {
    let c = UpstreamClient::new(UpstreamConfig::for_registry("docker.io").unwrap()).unwrap();
    let n: RepositoryName = "alpine".parse().unwrap();
    assert_eq!(c.remote_name(&n), "library/alpine");
    assert_eq!(
        c.repo_url(&n, "manifests/latest").unwrap().as_str(),
        "https://registry-1.docker.io/v2/library/alpine/manifests/latest"
    );
    let c = UpstreamClient::new(
        UpstreamConfig::for_registry("quay.io")
            .unwrap()
            .with_base_url(Url::parse("https://mirror.example/quay").unwrap()),
    )
    .unwrap();
    assert_eq!(c.remote_name(&n), "alpine");
    assert_eq!(
        c.repo_url(&n, "tags/list").unwrap().as_str(),
        "https://mirror.example/quay/v2/alpine/tags/list"
    );
}

#[test]
fn bad_ca_file_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ca.pem");
    std::fs::write(&p, "not a certificate").unwrap();
    let cfg = UpstreamConfig::for_registry("r.example")
        .unwrap()
        .with_ca_file(Some(p));
    assert!(matches!(
        UpstreamClient::new(cfg),
        Err(UpstreamError::Config(_))
    ));
    let cfg = UpstreamConfig::for_registry("r.example")
        .unwrap()
        .with_ca_file(Some(dir.path().join("missing.pem")));
    assert!(matches!(
        UpstreamClient::new(cfg),
        Err(UpstreamError::Config(_))
    ));
}
