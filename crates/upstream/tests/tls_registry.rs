//! TLS settings against a real Distribution registry serving HTTPS with a
//! certificate from a private CA (made with `openssl`): trusted through a CA
//! file, refused without it, accepted unverified when `insecure`.

mod common;

use berth_reference::{ManifestRef, RepositoryName};
use berth_upstream::{UpstreamClient, UpstreamConfig, UpstreamError};
use common::{Layout, Registry, RegistryAuth};
use url::Url;

fn config(reg: &Registry) -> UpstreamConfig {
    UpstreamConfig::for_registry(&reg.host())
        .expect("config")
        .with_base_url(Url::parse(&reg.url()).expect("url"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_ca_file_insecure_and_refusal() {
    let pki = common::make_pki();
    let reg = tokio::task::block_in_place(|| {
        let reg = Registry::start(
            RegistryAuth::None,
            Some(common::ServerTls {
                cert: pki.server.cert.clone(),
                key: pki.server.key.clone(),
            }),
        );
        Layout::build(4096, 21).push("single", &reg, "tls/app", "v1", None);
        reg
    });
    assert!(reg.url().starts_with("https://"));
    let app: RepositoryName = "tls/app".parse().expect("name");
    let v1: ManifestRef = "v1".parse().expect("tag");

    // Without the CA: the certificate is not trusted; that is "unavailable".
    let plain = UpstreamClient::new(config(&reg)).expect("client");
    let e = plain.manifest_head(&app, &v1, &[]).await.unwrap_err();
    assert!(matches!(e, UpstreamError::Transport { .. }), "{e:?}");
    assert!(e.is_unavailable());
    let text = e.to_string().to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("issuer"),
        "{e}"
    );

    // With the CA file: verified TLS works.
    let with_ca =
        UpstreamClient::new(config(&reg).with_ca_file(Some(pki.ca_cert.clone()))).expect("client");
    with_ca.ping().await.expect("ping over verified TLS");
    let m = with_ca
        .manifest_get(&app, &v1, &[])
        .await
        .expect("manifest over TLS");
    assert!(!m.bytes.is_empty());

    // Insecure: verification off.
    let insecure =
        UpstreamClient::new(config(&reg).with_insecure(true).expect("insecure")).expect("client");
    assert_eq!(
        insecure.base_url().scheme(),
        "https",
        "an explicit https URL stays https"
    );
    insecure
        .manifest_head(&app, &v1, &[])
        .await
        .expect("unverified TLS");

    // Plain HTTP to a TLS port is a transport/protocol failure, not a 404.
    let http_url = Url::parse(&format!("http://{}/", reg.host())).expect("url");
    let wrong = UpstreamClient::new(config(&reg).with_base_url(http_url)).expect("client");
    let e = wrong.manifest_head(&app, &v1, &[]).await.unwrap_err();
    assert!(!e.is_not_found(), "{e:?}");
}
