//! berth on an S3 endpoint served over HTTPS with a certificate from a
//! private CA (as an in-house MinIO or Ceph RGW is): nginx terminates TLS
//! in front of the test Garage. Without `ca_file` berth refuses to start,
//! saying why; with it, pushes (a multipart blob among them) and pulls go
//! through. Everything listens on 127.0.0.1; every wait is bounded.

mod common;

use std::time::Duration;

use common::*;

/// nginx on `tls_port` with `cert`/`key`, passing every request to Garage
/// untouched (the Host header too: it is part of the SigV4 signature).
fn tls_front(tls_port: u16, cert: &std::path::Path, key: &std::path::Path) -> Nginx {
    let garage = garage().endpoint();
    Nginx::start(&format!(
        "    listen 127.0.0.1:{tls_port} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    \
         location = /nginx-ready {{ return 200; }}\n    location / {{\n      proxy_pass {garage};\n      \
         proxy_http_version 1.1;\n      proxy_set_header Host $http_host;\n      \
         proxy_request_buffering off;\n      proxy_buffering off;\n      client_max_body_size 0;\n    }}\n",
        cert.display(),
        key.display()
    ))
}

/// A configuration file for the test Garage under a fresh prefix, reached
/// at `endpoint`, with `extra` added to `[storage.s3]`.
fn config(dir: &std::path::Path, endpoint: &str, extra: &str) -> std::path::PathBuf {
    let plain = s3_storage_toml(dir, &fresh_s3_prefix());
    let garage = garage().endpoint();
    assert!(plain.contains(&garage));
    let toml = format!(
        "{}{extra}\n",
        plain.replace(&format!("\"{garage}\""), &format!("\"{endpoint}\""))
    );
    let path = dir.join(format!("berth-{}.toml", unique()));
    std::fs::write(&path, toml).expect("write berth.toml");
    path
}

#[test]
fn an_https_endpoint_with_a_private_ca_needs_ca_file_and_then_works() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = make_ca(dir.path(), "store-ca");
    let (cert, key) = make_server_cert(dir.path(), &ca, "store");
    let tls_port = free_port();
    let _front = tls_front(tls_port, &cert, &key);
    let endpoint = format!("https://127.0.0.1:{tls_port}");

    // Without the CA: berth does not start, and says it is the store's
    // certificate it cannot trust.
    let untrusted = config(dir.path(), &endpoint, "");
    let out = run_unchecked_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("serve")
            .arg("--listen=127.0.0.1:0")
            .arg("--root")
            .arg(dir.path().join("root-untrusted"))
            .arg(format!("--config={}", untrusted.display()))
            .env_remove("BERTH_S3_CA_FILE"),
        Duration::from_secs(60),
    );
    assert!(
        !out.status.success(),
        "started against an untrusted store\n{}",
        out.describe()
    );
    let said = out.describe().to_lowercase();
    assert!(
        said.contains(&garage().bucket.to_lowercase()) && said.contains("certificate"),
        "the refusal names neither the bucket nor the certificate\n{}",
        out.describe()
    );

    // With it: a push (one blob of three 5 MiB parts) and pulls go through.
    let trusted = config(
        dir.path(),
        &endpoint,
        &format!("ca_file = \"{}\"", ca.cert.display()),
    );
    let server = Server::start_with(&[format!("--config={}", trusted.display())]);
    let (digest, manifest) = push_small_image(&server, "team/app", "v1", 21);
    let big = pseudo_random(12 << 20, 22);
    let big_digest = push_blob(&server, "team/app", &big);
    let got = curl("GET", &format!("{}/v2/team/app/manifests/v1", server.url()))
        .header("Accept", OCI_MANIFEST)
        .send();
    got.expect_status(200);
    assert_eq!(got.body, manifest);
    assert_eq!(got.header("docker-content-digest"), Some(digest.as_str()));
    let blob = curl(
        "GET",
        &format!("{}/v2/team/app/blobs/{big_digest}", server.url()),
    )
    .send();
    blob.expect_status(200);
    assert!(blob.body == big, "the 12 MiB blob came back different");
    let part = curl(
        "GET",
        &format!("{}/v2/team/app/blobs/{big_digest}", server.url()),
    )
    .header("Range", "bytes=6291456-6291465")
    .send();
    part.expect_status(206);
    assert_eq!(part.body, &big[6291456..6291466]);
}
