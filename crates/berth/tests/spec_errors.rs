//! The OCI distribution spec (v1.1) over the wire, with curl: status codes,
//! headers and error codes, including what the OCI conformance suite checks
//! (pull, push, content discovery, content management).

//!
//! Every check runs twice: as its own test against a plain-HTTP server
//! without auth, and inside [`every_spec_check_over_tls_with_a_user`]
//! against a server with `--tls-cert/--tls-key` and an `[auth]` table, where
//! curl trusts the CA and sends a user's Basic credentials (see
//! [`Server::start_tls_user`]; [`spec_server`] picks the kind), and a third
//! time inside [`every_spec_check_on_s3`] against a server whose storage is
//! an S3 bucket on a real Garage.

mod common;

use std::cell::Cell;

use common::*;
use serde_json::json;

/// How [`spec_server`] starts the server of a check.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Plain,
    /// TLS with a user; curl speaks HTTP/1.1 when true, else HTTP/2.
    TlsWithAUser {
        http1: bool,
    },
    /// Plain HTTP, storage in the test Garage under a prefix of its own.
    S3,
}

thread_local! {
    /// Set while [`every_spec_check_over_tls_with_a_user`] runs the checks.
    static MODE: Cell<Mode> = const { Cell::new(Mode::Plain) };
}

/// The server a check runs against: plain HTTP without auth, or TLS with a
/// user allowed everything when the check runs inside the TLS entry point.
fn spec_server() -> Server {
    match MODE.with(Cell::get) {
        Mode::Plain => Server::start(),
        Mode::TlsWithAUser { http1 } => Server::start_tls_user_http(http1),
        Mode::S3 => Server::start_s3(&fresh_s3_prefix(), "", &[]),
    }
}

fn url(server: &Server, path: &str) -> String {
    format!("{}{path}", server.url())
}

/// The digest used for "certainly not there" (sha256 of "hello world").
const DUMMY: &str = "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";

// ---------------------------------------------------------------------------
// Base and pull

#[test]
fn base_endpoint_answers_200() {
    let server = spec_server();
    curl("GET", &url(&server, "/v2/")).send().expect_status(200);
    // Without the trailing slash too (docker and containerd use both forms).
    let r = curl("GET", &url(&server, "/v2/")).send();
    // Docker clients look for this header on the base endpoint.
    r.expect_header("Docker-Distribution-API-Version", "registry/2.0");
    let r = curl("GET", &url(&server, "/v2")).send();
    assert!(matches!(r.status, 200 | 301 | 308), "{}", r.describe());
}

#[test]
fn unknown_blob_is_404_blob_unknown() {
    let server = spec_server();
    push_small_image(&server, "team/app", "v1", 1);
    let r = curl("GET", &url(&server, &format!("/v2/team/app/blobs/{DUMMY}"))).send();
    r.expect_error(404, "BLOB_UNKNOWN");
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("application/json"),
        "{}",
        r.describe()
    );
    curl(
        "HEAD",
        &url(&server, &format!("/v2/team/app/blobs/{DUMMY}")),
    )
    .send()
    .expect_status(404);
    // In a repository that does not exist at all.
    let r = curl(
        "GET",
        &url(&server, &format!("/v2/no/such/repo/blobs/{DUMMY}")),
    )
    .send();
    assert_eq!(r.status, 404, "{}", r.describe());
    let codes = r.error_codes();
    assert!(
        codes
            .iter()
            .any(|c| c == "BLOB_UNKNOWN" || c == "NAME_UNKNOWN"),
        "{}",
        r.describe()
    );
}

#[test]
fn unknown_manifest_is_404_manifest_unknown() {
    let server = spec_server();
    push_small_image(&server, "team/app", "v1", 2);
    for reference in ["nope", DUMMY] {
        curl(
            "GET",
            &url(&server, &format!("/v2/team/app/manifests/{reference}")),
        )
        .header("Accept", OCI_MANIFEST)
        .send()
        .expect_error(404, "MANIFEST_UNKNOWN");
        curl(
            "HEAD",
            &url(&server, &format!("/v2/team/app/manifests/{reference}")),
        )
        .send()
        .expect_status(404);
    }
    // A malformed digest: 400 or 404, and if 400 then a spec error code.
    let r = curl(
        "GET",
        &url(&server, "/v2/team/app/manifests/sha256:totallywrong"),
    )
    .send();
    assert!(matches!(r.status, 400 | 404), "{}", r.describe());
    if r.status == 400 {
        let codes = r.error_codes();
        assert!(
            codes.iter().any(|c| [
                "DIGEST_INVALID",
                "MANIFEST_INVALID",
                "MANIFEST_UNKNOWN",
                "TAG_INVALID"
            ]
            .contains(&c.as_str())),
            "{}",
            r.describe()
        );
    }
}

/// The conformance suite's "nonexistent manifest" is `.INVALID_MANIFEST_NAME`,
/// which is not even a valid tag, and its pull workflow expects 404 for both
/// HEAD and GET (not 400).
#[test]
fn conformance_nonexistent_manifest_name_is_404() {
    let server = spec_server();
    push_small_image(&server, "team/app", "v1", 2);
    for method in ["GET", "HEAD"] {
        let r = curl(
            method,
            &url(&server, "/v2/team/app/manifests/.INVALID_MANIFEST_NAME"),
        )
        .send();
        r.expect_status(404);
        if method == "GET" {
            r.expect_error(404, "MANIFEST_UNKNOWN");
        }
    }
}

#[test]
fn invalid_names_are_rejected() {
    let server = spec_server();
    // The route parses (name + /tags/list), the name does not: NAME_INVALID.
    curl("GET", &url(&server, "/v2/UPPER/tags/list"))
        .send()
        .expect_error(400, "NAME_INVALID");
    curl("POST", &url(&server, "/v2/Team/App/blobs/uploads/"))
        .send()
        .expect_error(400, "NAME_INVALID");
    curl("GET", &url(&server, "/v2/a___b/tags/list"))
        .send()
        .expect_error(400, "NAME_INVALID");
    // Path traversal: never 2xx, and nothing written outside the root.
    for path in [
        "/v2/../x/tags/list",
        "/v2/x/../../y/tags/list",
        "/v2/%2e%2e/x/tags/list",
    ] {
        let r = curl("GET", &url(&server, path)).send();
        assert!(matches!(r.status, 400 | 404), "{}", r.describe());
        if r.status == 400 {
            assert!(
                r.error_codes().contains(&"NAME_INVALID".to_string()),
                "{}",
                r.describe()
            );
        }
    }
    let r = curl(
        "POST",
        &url(&server, "/v2/x/../../../escape/blobs/uploads/"),
    )
    .send();
    assert!(matches!(r.status, 400 | 404), "{}", r.describe());
    let parent = server.root.parent().unwrap();
    assert!(!parent.join("escape").exists());
    assert!(!server.root.join("escape").exists());
}

#[test]
fn blob_get_and_head_carry_digest_and_length() {
    let server = spec_server();
    let data = pseudo_random(5000, 3);
    let digest = push_blob(&server, "team/app", &data);
    let get = curl(
        "GET",
        &url(&server, &format!("/v2/team/app/blobs/{digest}")),
    )
    .send();
    get.expect_status(200)
        .expect_header("Docker-Content-Digest", &digest)
        .expect_header("Content-Length", "5000");
    assert_eq!(get.body, data);
    let head = curl(
        "HEAD",
        &url(&server, &format!("/v2/team/app/blobs/{digest}")),
    )
    .send();
    head.expect_status(200)
        .expect_header("Docker-Content-Digest", &digest)
        .expect_header("Content-Length", "5000");
}

#[test]
fn manifest_get_and_head_carry_digest_type_and_length() {
    let server = spec_server();
    let (digest, bytes) = push_small_image(&server, "team/app", "v1", 4);
    let len = bytes.len().to_string();
    for reference in ["v1", digest.as_str()] {
        for method in ["GET", "HEAD"] {
            let r = curl(
                method,
                &url(&server, &format!("/v2/team/app/manifests/{reference}")),
            )
            .header("Accept", OCI_MANIFEST)
            .send();
            r.expect_status(200)
                .expect_header("Docker-Content-Digest", &digest)
                .expect_header("Content-Type", OCI_MANIFEST)
                .expect_header("Content-Length", &len);
            if method == "GET" {
                assert_eq!(r.body, bytes);
            }
        }
    }
    // A manifest is also readable as a blob of its repository? Not required;
    // but the tag must not be readable from another repository.
    curl("GET", &url(&server, "/v2/team/other/manifests/v1"))
        .send()
        .expect_status(404);
}

#[test]
fn range_get_of_a_blob_is_206_with_exact_bytes() {
    let server = spec_server();
    let data = pseudo_random(100_000, 5);
    let digest = push_blob(&server, "team/app", &data);
    let r = curl(
        "GET",
        &url(&server, &format!("/v2/team/app/blobs/{digest}")),
    )
    .header("Range", "bytes=1000-1999")
    .send();
    r.expect_status(206)
        .expect_header("Content-Range", "bytes 1000-1999/100000")
        .expect_header("Content-Length", "1000");
    assert_eq!(r.body, &data[1000..2000]);
    // Open-ended.
    let r = curl(
        "GET",
        &url(&server, &format!("/v2/team/app/blobs/{digest}")),
    )
    .header("Range", "bytes=99990-")
    .send();
    r.expect_status(206)
        .expect_header("Content-Range", "bytes 99990-99999/100000");
    assert_eq!(r.body, &data[99990..]);
    // Unsatisfiable.
    let r = curl(
        "GET",
        &url(&server, &format!("/v2/team/app/blobs/{digest}")),
    )
    .header("Range", "bytes=200000-300000")
    .send();
    r.expect_status(416);
}

// ---------------------------------------------------------------------------
// Push: uploads

#[test]
fn monolithic_post_then_put_and_single_post() {
    let server = spec_server();
    let data = pseudo_random(3000, 6);
    let digest = sha256(&data);
    // POST then PUT: 202 with a Location, then 201 with a Location to the blob.
    let post = curl("POST", &url(&server, "/v2/team/app/blobs/uploads/")).send();
    post.expect_status(202);
    let loc = post.location(&server.url());
    assert!(
        loc.contains("/v2/team/app/blobs/uploads/"),
        "{}",
        post.describe()
    );
    let put = curl("PUT", &with_query(&loc, &format!("digest={digest}")))
        .body(data.clone())
        .send();
    put.expect_status(201)
        .expect_header("Docker-Content-Digest", &digest);
    let blob_url = put.location(&server.url());
    let get = curl("GET", &blob_url).send();
    get.expect_status(200);
    assert_eq!(get.body, data);

    // Single POST with ?digest: 201 (or 202 and a session, which berth does not do).
    let data2 = pseudo_random(2000, 7);
    let digest2 = sha256(&data2);
    let r = curl(
        "POST",
        &url(
            &server,
            &format!("/v2/team/app/blobs/uploads/?digest={digest2}"),
        ),
    )
    .body(data2.clone())
    .send();
    r.expect_status(201)
        .expect_header("Docker-Content-Digest", &digest2);
    assert!(r.header("location").is_some(), "{}", r.describe());
    curl(
        "GET",
        &url(&server, &format!("/v2/team/app/blobs/{digest2}")),
    )
    .send()
    .expect_status(200);
}

#[test]
fn wrong_digest_on_put_is_400_digest_invalid_and_nothing_visible() {
    let server = spec_server();
    let data = pseudo_random(1000, 8);
    let claimed = sha256(b"something else");
    let post = curl("POST", &url(&server, "/v2/team/app/blobs/uploads/")).send();
    post.expect_status(202);
    let loc = post.location(&server.url());
    curl("PUT", &with_query(&loc, &format!("digest={claimed}")))
        .body(data.clone())
        .send()
        .expect_error(400, "DIGEST_INVALID");
    for digest in [claimed, sha256(&data)] {
        curl(
            "HEAD",
            &url(&server, &format!("/v2/team/app/blobs/{digest}")),
        )
        .send()
        .expect_status(404);
    }
    // Single-POST form too.
    let claimed = sha256(b"not this");
    curl(
        "POST",
        &url(
            &server,
            &format!("/v2/team/app/blobs/uploads/?digest={claimed}"),
        ),
    )
    .body(data)
    .send()
    .expect_error(400, "DIGEST_INVALID");
    // A digest that does not even parse.
    let post = curl("POST", &url(&server, "/v2/team/app/blobs/uploads/")).send();
    let loc = post.location(&server.url());
    let r = curl("PUT", &with_query(&loc, "digest=sha256:xyz"))
        .body(b"x".to_vec())
        .send();
    r.expect_error(400, "DIGEST_INVALID");
}

#[test]
fn streamed_patch_then_put_without_body() {
    // The conformance suite's "Blob Upload Streamed": PATCH without
    // Content-Range, then PUT ?digest with no body.
    let server = spec_server();
    let data = pseudo_random(42, 9);
    let digest = sha256(&data);
    let post = curl("POST", &url(&server, "/v2/team/app/blobs/uploads/")).send();
    post.expect_status(202);
    let patch = curl("PATCH", &post.location(&server.url()))
        .body(data.clone())
        .send();
    patch.expect_status(202).expect_header("Range", "0-41");
    let put = curl(
        "PUT",
        &with_query(&patch.location(&server.url()), &format!("digest={digest}")),
    )
    .header("Content-Length", "0")
    .send();
    put.expect_status(201);
    assert!(put.header("location").is_some(), "{}", put.describe());
    let get = curl(
        "GET",
        &url(&server, &format!("/v2/team/app/blobs/{digest}")),
    )
    .send();
    get.expect_status(200);
    assert_eq!(get.body, data);
}

#[test]
fn chunked_upload_follows_the_conformance_flow() {
    let server = spec_server();
    let data = pseudo_random(42, 10);
    let digest = sha256(&data);
    let (c1, c2) = data.split_at(22);

    // Out-of-order first chunk: 416.
    let post = curl("POST", &url(&server, "/v2/team/app/blobs/uploads/"))
        .header("Content-Length", "0")
        .send();
    post.expect_status(202);
    curl("PATCH", &post.location(&server.url()))
        .header("Content-Range", "22-41")
        .body(c2.to_vec())
        .send()
        .expect_status(416);

    // In order: 202 with Range and Location.
    let post = curl("POST", &url(&server, "/v2/team/app/blobs/uploads/"))
        .header("Content-Length", "0")
        .send();
    post.expect_status(202);
    let session = post.location(&server.url());
    let p1 = curl("PATCH", &session)
        .header("Content-Range", "0-21")
        .body(c1.to_vec())
        .send();
    p1.expect_status(202).expect_header("Range", "0-21");
    assert!(p1.header("location").is_some());

    // Retrying the same chunk: 416.
    curl("PATCH", &session)
        .header("Content-Range", "0-21")
        .body(c1.to_vec())
        .send()
        .expect_status(416);

    // Status of the session: 204, Range, Location.
    let status = curl("GET", &session).send();
    status.expect_status(204).expect_header("Range", "0-21");
    let next = status.location(&server.url());

    let p2 = curl("PATCH", &next)
        .header("Content-Range", "22-41")
        .body(c2.to_vec())
        .send();
    p2.expect_status(202).expect_header("Range", "0-41");

    let put = curl(
        "PUT",
        &with_query(&p2.location(&server.url()), &format!("digest={digest}")),
    )
    .header("Content-Length", "0")
    .send();
    put.expect_status(201)
        .expect_header("Docker-Content-Digest", &digest);
    let get = curl("GET", &put.location(&server.url())).send();
    get.expect_status(200);
    assert_eq!(get.body, data);
    // A finished session is gone.
    curl("GET", &session)
        .send()
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn final_chunk_in_the_put() {
    let server = spec_server();
    let data = pseudo_random(3000, 11);
    let digest = sha256(&data);
    let post = curl("POST", &url(&server, "/v2/team/app/blobs/uploads/")).send();
    let p1 = curl("PATCH", &post.location(&server.url()))
        .header("Content-Range", "0-999")
        .body(data[..1000].to_vec())
        .send();
    p1.expect_status(202).expect_header("Range", "0-999");
    let put = curl(
        "PUT",
        &with_query(&p1.location(&server.url()), &format!("digest={digest}")),
    )
    .header("Content-Range", "1000-2999")
    .body(data[1000..].to_vec())
    .send();
    put.expect_status(201);
    let get = curl(
        "GET",
        &url(&server, &format!("/v2/team/app/blobs/{digest}")),
    )
    .send();
    assert_eq!(get.body, data);
}

#[test]
fn upload_status_reports_offset_and_location() {
    let server = spec_server();
    let post = curl("POST", &url(&server, "/v2/team/app/blobs/uploads/")).send();
    post.expect_status(202);
    let session = post.location(&server.url());
    let p = curl("PATCH", &session).body(pseudo_random(1234, 12)).send();
    p.expect_status(202).expect_header("Range", "0-1233");
    let s = curl("GET", &session).send();
    s.expect_status(204).expect_header("Range", "0-1233");
    assert!(s.header("location").is_some(), "{}", s.describe());
    // The session belongs to its repository.
    let foreign = session.replace("/v2/team/app/", "/v2/team/other/");
    curl("GET", &foreign)
        .send()
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn unknown_upload_is_404_blob_upload_unknown() {
    let server = spec_server();
    push_small_image(&server, "team/app", "v1", 13);
    let bogus = url(
        &server,
        "/v2/team/app/blobs/uploads/0b5c7e0e-4a4f-4d0e-9c38-1e5b2b7c9d11",
    );
    curl("GET", &bogus)
        .send()
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    curl("PATCH", &bogus)
        .body(b"abc".to_vec())
        .send()
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    curl(
        "PUT",
        &with_query(&bogus, &format!("digest={}", sha256(b"abc"))),
    )
    .body(b"abc".to_vec())
    .send()
    .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    curl("DELETE", &bogus)
        .send()
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    // Not a UUID at all.
    curl("GET", &url(&server, "/v2/team/app/blobs/uploads/not-an-id"))
        .send()
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn cancelled_upload_is_gone() {
    let server = spec_server();
    let post = curl("POST", &url(&server, "/v2/team/app/blobs/uploads/")).send();
    let session = post.location(&server.url());
    curl("PATCH", &session)
        .body(b"partial".to_vec())
        .send()
        .expect_status(202);
    curl("DELETE", &session).send().expect_status(204);
    curl("GET", &session)
        .send()
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn empty_blob_can_be_pushed_and_pulled() {
    let server = spec_server();
    let digest = push_blob(&server, "team/app", b"");
    assert_eq!(
        digest,
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let r = curl(
        "GET",
        &url(&server, &format!("/v2/team/app/blobs/{digest}")),
    )
    .send();
    r.expect_status(200).expect_header("Content-Length", "0");
    assert!(r.body.is_empty());
    // The empty JSON descriptor's blob, as artifacts use it.
    let digest = push_blob(&server, "team/app", b"{}");
    assert_eq!(
        digest,
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
}

#[test]
fn cross_repo_mount() {
    let server = spec_server();
    let data = pseudo_random(777, 14);
    let digest = push_blob(&server, "team/a", &data);
    // Present in `from`: 201, Location of the blob in the target repository.
    let r = curl(
        "POST",
        &url(
            &server,
            &format!("/v2/team/b/blobs/uploads/?mount={digest}&from=team/a"),
        ),
    )
    .send();
    r.expect_status(201)
        .expect_header("Docker-Content-Digest", &digest);
    let loc = r.location(&server.url());
    assert!(
        loc.ends_with(&format!("/v2/team/b/blobs/{digest}")),
        "{}",
        r.describe()
    );
    let get = curl("GET", &loc).send();
    get.expect_status(200);
    assert_eq!(get.body, data);

    // Not present: 202 and an upload session in the target repository.
    let r = curl(
        "POST",
        &url(
            &server,
            &format!("/v2/team/c/blobs/uploads/?mount={DUMMY}&from=team/a"),
        ),
    )
    .send();
    r.expect_status(202);
    assert!(
        r.location(&server.url())
            .contains("/v2/team/c/blobs/uploads/"),
        "{}",
        r.describe()
    );
    // Without `from`: a session (202) or a mount (201), never an error.
    let r = curl(
        "POST",
        &url(&server, &format!("/v2/team/d/blobs/uploads/?mount={DUMMY}")),
    )
    .send();
    r.expect_status(202);
    let r = curl(
        "POST",
        &url(
            &server,
            &format!("/v2/team/d/blobs/uploads/?mount={digest}"),
        ),
    )
    .send();
    assert!(matches!(r.status, 201 | 202), "{}", r.describe());
    // A blob is only readable from repositories it was pushed or mounted into.
    curl("GET", &url(&server, &format!("/v2/team/e/blobs/{digest}")))
        .send()
        .expect_status(404);
}

// ---------------------------------------------------------------------------
// Push: manifests

#[test]
fn manifest_put_returns_201_location_and_digest() {
    let server = spec_server();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = pseudo_random(500, 15);
    push_blob(&server, "team/app", config);
    push_blob(&server, "team/app", &layer);
    let m = image_manifest(
        descriptor(OCI_CONFIG, config),
        vec![descriptor(OCI_LAYER, &layer)],
        None,
    );
    let digest = sha256(&m);
    let r = put_manifest(&server, "team/app", "v1", OCI_MANIFEST, &m);
    r.expect_status(201)
        .expect_header("Docker-Content-Digest", &digest);
    let loc = r.location(&server.url());
    let get = curl("GET", &loc).header("Accept", OCI_MANIFEST).send();
    get.expect_status(200);
    assert_eq!(get.body, m);
    // By digest.
    put_manifest(&server, "team/app", &digest, OCI_MANIFEST, &m).expect_status(201);
    // The same manifest under several tags (the push workflow does this).
    for i in 0..4 {
        put_manifest(&server, "team/app", &format!("test{i}"), OCI_MANIFEST, &m).expect_status(201);
    }
    // Parameters on Content-Type are ignored.
    put_manifest(
        &server,
        "team/app",
        "with-params",
        &format!("{OCI_MANIFEST}; charset=utf-8"),
        &m,
    )
    .expect_status(201);
}

#[test]
fn manifest_with_conformance_quirks_is_accepted() {
    // The suite's manifests carry `data` and an unknown field in the config
    // descriptor, are indented with tabs, and one has no layers and no mediaType.
    let server = spec_server();
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"author":"x"}"#;
    let layer = pseudo_random(300, 16);
    push_blob(&server, "team/app", config);
    push_blob(&server, "team/app", &layer);
    let mut config_desc = descriptor(OCI_CONFIG, config);
    config_desc["data"] = json!("eyJhcmNoaXRlY3R1cmUiOiJhbWQ2NCJ9");
    config_desc["newUnspecifiedField"] = json!("aGVsbG8gd29ybGQ=");
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_desc,
        "layers": [descriptor(OCI_LAYER, &layer)],
    });
    // Tab-indented, as Go's json.MarshalIndent(.., "", "\t") writes it.
    let body: Vec<u8> = serde_json::to_string_pretty(&m)
        .unwrap()
        .lines()
        .map(|l| {
            let trimmed = l.trim_start_matches(' ');
            let depth = (l.len() - trimmed.len()) / 2;
            format!("{}{trimmed}\n", "\t".repeat(depth))
        })
        .collect::<String>()
        .into_bytes();
    put_manifest(&server, "team/app", "quirky", OCI_MANIFEST, &body).expect_status(201);

    let empty = json!({"schemaVersion": 2, "config": config_desc, "layers": []});
    let empty = serde_json::to_vec_pretty(&empty).unwrap();
    let r = put_manifest(&server, "team/app", "emptylayer", OCI_MANIFEST, &empty);
    r.expect_status(201);
    let get = curl("GET", &url(&server, "/v2/team/app/manifests/emptylayer"))
        .header("Accept", OCI_MANIFEST)
        .send();
    get.expect_status(200);
    assert_eq!(get.body, empty);
}

#[test]
fn manifest_referencing_missing_blob_is_400_manifest_blob_unknown() {
    let server = spec_server();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    push_blob(&server, "team/app", config);
    let missing = pseudo_random(100, 17);
    let m = image_manifest(
        descriptor(OCI_CONFIG, config),
        vec![descriptor(OCI_LAYER, &missing)],
        None,
    );
    put_manifest(&server, "team/app", "v1", OCI_MANIFEST, &m)
        .expect_error(400, "MANIFEST_BLOB_UNKNOWN");
    curl("GET", &url(&server, "/v2/team/app/manifests/v1"))
        .send()
        .expect_status(404);
    // An index whose child manifest is missing.
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": DUMMY, "size": 11}],
    }))
    .unwrap();
    put_manifest(&server, "team/app", "idx", OCI_INDEX, &index)
        .expect_error(400, "MANIFEST_BLOB_UNKNOWN");
}

#[test]
fn malformed_manifest_is_400_manifest_invalid() {
    let server = spec_server();
    put_manifest(&server, "team/app", "v1", OCI_MANIFEST, b"blablabla")
        .expect_error(400, "MANIFEST_INVALID");
    put_manifest(
        &server,
        "team/app",
        "v1",
        OCI_MANIFEST,
        b"{\"schemaVersion\":2,",
    )
    .expect_error(400, "MANIFEST_INVALID");
    // Valid JSON, not a manifest.
    put_manifest(
        &server,
        "team/app",
        "v1",
        OCI_MANIFEST,
        b"{\"schemaVersion\":2,\"config\":42}",
    )
    .expect_error(400, "MANIFEST_INVALID");
    // The digest in the URL does not match the body.
    let (_, m) = push_small_image(&server, "team/app", "ok", 18);
    put_manifest(&server, "team/app", DUMMY, OCI_MANIFEST, &m).expect_error(400, "DIGEST_INVALID");
}

#[test]
fn large_manifests_up_to_4mib_are_accepted_and_larger_rejected() {
    let server = spec_server();
    let (_, base) = push_small_image(&server, "team/app", "base", 19);
    let mut m: serde_json::Value = serde_json::from_slice(&base).unwrap();

    // 3.5 MiB: the spec says registries should accept at least 4 MB, which
    // catches a web framework's default 2 MiB body limit.
    m["annotations"] = json!({"pad": "x".repeat(3_500_000)});
    let big = serde_json::to_vec(&m).unwrap();
    let r = put_manifest(&server, "team/app", "big", OCI_MANIFEST, &big);
    r.expect_status(201);
    let get = curl("GET", &url(&server, "/v2/team/app/manifests/big"))
        .header("Accept", OCI_MANIFEST)
        .send();
    get.expect_status(200);
    assert_eq!(sha256(&get.body), sha256(&big));

    // Over 4 MiB: 413 (or 400) with a spec error body.
    m["annotations"] = json!({"pad": "x".repeat(4 * 1024 * 1024 + 10)});
    let huge = serde_json::to_vec(&m).unwrap();
    let r = put_manifest(&server, "team/app", "huge", OCI_MANIFEST, &huge);
    assert!(matches!(r.status, 413 | 400), "{}", r.describe());
    let codes = r.error_codes();
    assert!(
        codes
            .iter()
            .any(|c| c == "SIZE_INVALID" || c == "MANIFEST_INVALID"),
        "a too-large manifest must get a spec error body\n{}",
        r.describe()
    );
    curl("GET", &url(&server, "/v2/team/app/manifests/huge"))
        .send()
        .expect_status(404);
}

// ---------------------------------------------------------------------------
// Content discovery

fn tags(r: &Resp) -> Vec<String> {
    r.json()["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The `Link: <...>; rel="next"` target made absolute.
fn next_link(server: &Server, r: &Resp) -> Option<String> {
    let link = r.header("link")?;
    assert!(link.contains("rel=\"next\""), "{}", r.describe());
    let start = link.find('<').expect("Link has <") + 1;
    let end = link.find('>').expect("Link has >");
    Some(absolute(&server.url(), &link[start..end]))
}

#[test]
fn tags_list_is_sorted_and_paginates_with_n_last_and_link() {
    let server = spec_server();
    let (digest, m) = push_small_image(&server, "team/app", "c", 20);
    for tag in ["b", "e", "a", "d"] {
        put_manifest(&server, "team/app", tag, OCI_MANIFEST, &m).expect_status(201);
    }
    let all = curl("GET", &url(&server, "/v2/team/app/tags/list")).send();
    all.expect_status(200);
    assert_eq!(all.json()["name"], "team/app");
    assert_eq!(tags(&all), ["a", "b", "c", "d", "e"]);
    assert!(all.header("link").is_none(), "{}", all.describe());

    let p1 = curl("GET", &url(&server, "/v2/team/app/tags/list?n=2")).send();
    p1.expect_status(200);
    assert_eq!(tags(&p1), ["a", "b"]);
    let next = next_link(&server, &p1).expect("Link header on a partial page");
    assert!(next.contains("/v2/team/app/tags/list?"), "{next}");
    assert!(next.contains("last=b"), "{next}");
    assert!(next.contains("n=2"), "{next}");

    let p2 = curl("GET", &next).send();
    assert_eq!(tags(&p2), ["c", "d"]);
    let p3 = curl("GET", &next_link(&server, &p2).expect("Link on page 2")).send();
    assert_eq!(tags(&p3), ["e"]);
    assert!(p3.header("link").is_none(), "{}", p3.describe());

    // `last` alone, `n` larger than what is left, `last` past the end.
    assert_eq!(
        tags(&curl("GET", &url(&server, "/v2/team/app/tags/list?last=c")).send()),
        ["d", "e"]
    );
    assert_eq!(
        tags(&curl("GET", &url(&server, "/v2/team/app/tags/list?n=10&last=b")).send()),
        ["c", "d", "e"]
    );
    let past = curl("GET", &url(&server, "/v2/team/app/tags/list?n=2&last=zzz")).send();
    past.expect_status(200);
    assert!(tags(&past).is_empty());

    // n=0: an empty list and no Link header.
    let zero = curl("GET", &url(&server, "/v2/team/app/tags/list?n=0")).send();
    zero.expect_status(200);
    assert!(tags(&zero).is_empty(), "{}", zero.describe());
    assert!(zero.header("link").is_none(), "{}", zero.describe());

    // Unknown repository.
    curl("GET", &url(&server, "/v2/team/nothing/tags/list"))
        .send()
        .expect_error(404, "NAME_UNKNOWN");
    let _ = digest;
}

#[test]
fn catalog_paginates_with_n_last_and_link() {
    let server = spec_server();
    for (i, repo) in ["zeta", "alpha/one", "mid/x/y", "beta"].iter().enumerate() {
        push_small_image(&server, repo, "v1", 30 + i as u64);
    }
    let all = curl("GET", &url(&server, "/v2/_catalog")).send();
    all.expect_status(200);
    assert_eq!(
        all.json()["repositories"],
        json!(["alpha/one", "beta", "mid/x/y", "zeta"])
    );
    let p1 = curl("GET", &url(&server, "/v2/_catalog?n=3")).send();
    assert_eq!(
        p1.json()["repositories"],
        json!(["alpha/one", "beta", "mid/x/y"])
    );
    let next = next_link(&server, &p1).expect("Link on a partial catalog page");
    assert!(next.contains("/v2/_catalog?"), "{next}");
    let p2 = curl("GET", &next).send();
    assert_eq!(p2.json()["repositories"], json!(["zeta"]));
    assert!(p2.header("link").is_none());
    let zero = curl("GET", &url(&server, "/v2/_catalog?n=0")).send();
    zero.expect_status(200);
    assert_eq!(
        zero.json()["repositories"].as_array().map(Vec::len),
        Some(0)
    );
    assert!(zero.header("link").is_none());
}

#[test]
fn referrers_api_lists_filters_and_reports_subject() {
    let server = spec_server();
    let repo = "team/app";
    let (subject, subject_bytes) = push_small_image(&server, repo, "v1", 40);
    let subject_desc =
        json!({"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_bytes.len()});
    let empty = push_blob(&server, repo, b"{}");
    let empty_desc = json!({"mediaType": OCI_EMPTY, "digest": empty, "size": 2});
    let sbom = b"an sbom";
    push_blob(&server, repo, sbom);
    let sig = b"a signature";
    push_blob(&server, repo, sig);

    // (1) artifactType set, config is the empty descriptor.
    let a = image_manifest(
        empty_desc.clone(),
        vec![descriptor("application/vnd.example.sbom", sbom)],
        Some(json!({
            "artifactType": "application/vnd.example.sbom",
            "subject": subject_desc,
            "annotations": {"org.example.kind": "sbom"},
        })),
    );
    // (2) no artifactType: the config's media type stands for it.
    let b = image_manifest(
        descriptor("application/vnd.example.sig", sig),
        vec![empty_desc.clone()],
        Some(json!({"subject": subject_desc, "annotations": {"org.example.kind": "sig"}})),
    );
    for m in [&a, &b] {
        let r = put_manifest(&server, repo, &sha256(m), OCI_MANIFEST, m);
        r.expect_status(201).expect_header("OCI-Subject", &subject);
    }
    // (3) an index with a subject and an artifactType.
    let idx = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "application/vnd.example.bundle",
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(&a), "size": a.len()}],
        "subject": subject_desc,
        "annotations": {"org.example.kind": "bundle"},
    }))
    .unwrap();
    put_manifest(&server, repo, &sha256(&idx), OCI_INDEX, &idx)
        .expect_status(201)
        .expect_header("OCI-Subject", &subject);
    // (4) a referrer to a subject that was never pushed is accepted.
    let ghost = json!({"mediaType": OCI_MANIFEST, "digest": DUMMY, "size": 11});
    let c = image_manifest(
        empty_desc.clone(),
        vec![descriptor("application/vnd.example.sig", sig)],
        Some(json!({"artifactType": "application/vnd.example.sig", "subject": ghost})),
    );
    put_manifest(&server, repo, &sha256(&c), OCI_MANIFEST, &c)
        .expect_status(201)
        .expect_header("OCI-Subject", DUMMY);
    // A manifest without subject gets no OCI-Subject header.
    let (_, plain) = push_small_image(&server, repo, "plain", 41);
    let r = put_manifest(&server, repo, "plain2", OCI_MANIFEST, &plain);
    assert!(r.header("oci-subject").is_none(), "{}", r.describe());

    let list = curl(
        "GET",
        &url(&server, &format!("/v2/{repo}/referrers/{subject}")),
    )
    .send();
    list.expect_status(200)
        .expect_header("Content-Type", OCI_INDEX);
    let v = list.json();
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], OCI_INDEX);
    let entries = v["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{v}");
    let find = |d: &str| {
        entries
            .iter()
            .find(|e| e["digest"] == d)
            .unwrap_or_else(|| panic!("{d} not in {v}"))
    };
    let ea = find(&sha256(&a));
    assert_eq!(ea["artifactType"], "application/vnd.example.sbom");
    assert_eq!(ea["mediaType"], OCI_MANIFEST);
    assert_eq!(ea["size"], a.len());
    assert_eq!(ea["annotations"], json!({"org.example.kind": "sbom"}));
    let eb = find(&sha256(&b));
    assert_eq!(eb["artifactType"], "application/vnd.example.sig");
    assert_eq!(eb["annotations"], json!({"org.example.kind": "sig"}));
    let ei = find(&sha256(&idx));
    assert_eq!(ei["mediaType"], OCI_INDEX);
    assert_eq!(ei["artifactType"], "application/vnd.example.bundle");
    assert_eq!(ei["annotations"], json!({"org.example.kind": "bundle"}));

    // Filtered: only matches, and the header says a filter was applied.
    let f = curl(
        "GET",
        &url(
            &server,
            &format!("/v2/{repo}/referrers/{subject}?artifactType=application/vnd.example.sig"),
        ),
    )
    .send();
    f.expect_status(200)
        .expect_header("Content-Type", OCI_INDEX)
        .expect_header("OCI-Filters-Applied", "artifactType");
    let fv = f.json();
    let fe = fv["manifests"].as_array().unwrap();
    assert_eq!(fe.len(), 1, "{fv}");
    assert_eq!(fe[0]["digest"], sha256(&b));
    // Without a filter, no OCI-Filters-Applied.
    assert!(
        list.header("oci-filters-applied").is_none(),
        "{}",
        list.describe()
    );

    // Unknown subject: 200 and an empty index, never 404.
    let none = curl(
        "GET",
        &url(
            &server,
            &format!("/v2/{repo}/referrers/{}", sha256(b"nothing")),
        ),
    )
    .send();
    none.expect_status(200)
        .expect_header("Content-Type", OCI_INDEX);
    assert_eq!(none.json()["manifests"].as_array().map(Vec::len), Some(0));
    // The never-pushed subject lists its referrer.
    let ghost_list = curl(
        "GET",
        &url(&server, &format!("/v2/{repo}/referrers/{DUMMY}")),
    )
    .send();
    ghost_list.expect_status(200);
    assert_eq!(ghost_list.json()["manifests"][0]["digest"], sha256(&c));
    // Malformed digest: 400.
    curl(
        "GET",
        &url(&server, &format!("/v2/{repo}/referrers/sha256:nothex")),
    )
    .send()
    .expect_status(400);

    // Deleting a referrer removes it from the list.
    curl(
        "DELETE",
        &url(&server, &format!("/v2/{repo}/manifests/{}", sha256(&b))),
    )
    .send()
    .expect_status(202);
    let after = curl(
        "GET",
        &url(&server, &format!("/v2/{repo}/referrers/{subject}")),
    )
    .send();
    let after = after.json();
    let digests: Vec<&str> = after["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["digest"].as_str().unwrap())
        .collect();
    assert!(!digests.contains(&sha256(&b).as_str()), "{after}");
    assert_eq!(digests.len(), 2);
}

// ---------------------------------------------------------------------------
// Content management

#[test]
fn delete_tag_manifest_and_blob() {
    let server = spec_server();
    let (digest, m) = push_small_image(&server, "team/app", "keep", 50);
    put_manifest(&server, "team/app", "tagtest0", OCI_MANIFEST, &m).expect_status(201);
    let before = tags(&curl("GET", &url(&server, "/v2/team/app/tags/list")).send());
    assert_eq!(before, ["keep", "tagtest0"]);

    // Deleting a tag: 202; the tag is gone, the manifest stays.
    curl("DELETE", &url(&server, "/v2/team/app/manifests/tagtest0"))
        .send()
        .expect_status(202);
    curl("GET", &url(&server, "/v2/team/app/manifests/tagtest0"))
        .send()
        .expect_error(404, "MANIFEST_UNKNOWN");
    assert_eq!(
        tags(&curl("GET", &url(&server, "/v2/team/app/tags/list")).send()),
        ["keep"]
    );
    curl(
        "GET",
        &url(&server, &format!("/v2/team/app/manifests/{digest}")),
    )
    .header("Accept", OCI_MANIFEST)
    .send()
    .expect_status(200);
    curl("DELETE", &url(&server, "/v2/team/app/manifests/tagtest0"))
        .send()
        .expect_error(404, "MANIFEST_UNKNOWN");

    // Deleting by digest: 202; the manifest and every tag on it are gone.
    curl(
        "DELETE",
        &url(&server, &format!("/v2/team/app/manifests/{digest}")),
    )
    .send()
    .expect_status(202);
    curl(
        "GET",
        &url(&server, &format!("/v2/team/app/manifests/{digest}")),
    )
    .send()
    .expect_error(404, "MANIFEST_UNKNOWN");
    curl("GET", &url(&server, "/v2/team/app/manifests/keep"))
        .send()
        .expect_error(404, "MANIFEST_UNKNOWN");
    let after = curl("GET", &url(&server, "/v2/team/app/tags/list")).send();
    assert!(matches!(after.status, 200 | 404), "{}", after.describe());
    if after.status == 200 {
        assert!(tags(&after).is_empty(), "{}", after.describe());
    }
    curl(
        "DELETE",
        &url(&server, &format!("/v2/team/app/manifests/{digest}")),
    )
    .send()
    .expect_error(404, "MANIFEST_UNKNOWN");

    // Deleting a blob: 202, then 404.
    let manifest: serde_json::Value = serde_json::from_slice(&m).unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap();
    curl(
        "DELETE",
        &url(&server, &format!("/v2/team/app/blobs/{config}")),
    )
    .send()
    .expect_status(202);
    curl(
        "GET",
        &url(&server, &format!("/v2/team/app/blobs/{config}")),
    )
    .send()
    .expect_error(404, "BLOB_UNKNOWN");
    curl(
        "DELETE",
        &url(&server, &format!("/v2/team/app/blobs/{config}")),
    )
    .send()
    .expect_error(404, "BLOB_UNKNOWN");
}

#[test]
fn docker_schema2_manifest_and_list_media_types_are_kept() {
    let server = spec_server();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = pseudo_random(400, 60);
    push_blob(&server, "team/d", config);
    push_blob(&server, "team/d", &layer);
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": sha256(config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": sha256(&layer), "size": layer.len()}],
    }))
    .unwrap();
    put_manifest(&server, "team/d", "v1", DOCKER_MANIFEST, &m).expect_status(201);
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [{"mediaType": DOCKER_MANIFEST, "digest": sha256(&m), "size": m.len(),
                        "platform": {"architecture": "amd64", "os": "linux"}}],
    }))
    .unwrap();
    put_manifest(&server, "team/d", "list", DOCKER_LIST, &list).expect_status(201);
    for (tag, mt, body) in [("v1", DOCKER_MANIFEST, &m), ("list", DOCKER_LIST, &list)] {
        let r = curl("GET", &url(&server, &format!("/v2/team/d/manifests/{tag}")))
            .header(
                "Accept",
                &format!("{DOCKER_MANIFEST}, {DOCKER_LIST}, {OCI_MANIFEST}, {OCI_INDEX}"),
            )
            .send();
        r.expect_status(200)
            .expect_header("Content-Type", mt)
            .expect_header("Docker-Content-Digest", &sha256(body));
        assert_eq!(&r.body, body);
    }
}

/// Repository names may contain the route keywords (`manifests`, `blobs`,
/// `uploads`, `tags`, `list`, `referrers`) as components; routing must split
/// at the last one, and the catalog must list nested and parent repositories.
#[test]
fn repository_names_containing_route_keywords() {
    let server = spec_server();
    let repos = [
        "team",
        "team/manifests",
        "a/blobs/uploads",
        "x/tags/list",
        "team/referrers",
    ];
    let mut digests = Vec::new();
    for (i, repo) in repos.iter().enumerate() {
        let (digest, _) = push_small_image(&server, repo, "v1", 90 + i as u64);
        digests.push(digest);
    }
    for (repo, digest) in repos.iter().zip(&digests) {
        curl("GET", &url(&server, &format!("/v2/{repo}/manifests/v1")))
            .header("Accept", OCI_MANIFEST)
            .send()
            .expect_status(200)
            .expect_header("Docker-Content-Digest", digest);
        let t = curl("GET", &url(&server, &format!("/v2/{repo}/tags/list"))).send();
        t.expect_status(200);
        assert_eq!(t.json()["name"], *repo);
        curl(
            "GET",
            &url(&server, &format!("/v2/{repo}/referrers/{digest}")),
        )
        .send()
        .expect_status(200);
    }
    let cat = curl("GET", &url(&server, "/v2/_catalog")).send();
    let mut sorted = repos.to_vec();
    sorted.sort();
    assert_eq!(cat.json()["repositories"], json!(sorted));
}

/// Many clients pushing the same blob (and the same manifest) at once, as
/// parallel CI jobs do: every push succeeds and the stored bytes are whole.
#[test]
fn concurrent_pushes_of_the_same_content() {
    let server = std::sync::Arc::new(spec_server());
    let data = std::sync::Arc::new(pseudo_random(2 * 1024 * 1024, 95));
    let digest = sha256(&data);
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let server = server.clone();
            let data = data.clone();
            std::thread::spawn(move || {
                let repo = if i % 2 == 0 {
                    "team/same"
                } else {
                    "team/other"
                };
                push_blob(&server, repo, &data)
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().expect("pusher thread"), digest);
    }
    for repo in ["team/same", "team/other"] {
        let r = curl("GET", &url(&server, &format!("/v2/{repo}/blobs/{digest}"))).send();
        r.expect_status(200);
        assert!(r.body == *data, "blob corrupted by concurrent pushes");
    }
    let (_, m) = push_small_image(&server, "team/same", "v1", 96);
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let server = server.clone();
            let m = m.clone();
            std::thread::spawn(move || {
                put_manifest(&server, "team/same", &format!("t{i}"), OCI_MANIFEST, &m).status
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().expect("tagger thread"), 201);
    }
    let t = curl("GET", &url(&server, "/v2/team/same/tags/list")).send();
    assert_eq!(
        t.json()["tags"],
        json!(["t0", "t1", "t2", "t3", "t4", "t5", "v1"])
    );
}

// ---------------------------------------------------------------------------
// The same checks over TLS with a user

/// Every check of this file, for the TLS run.
const CHECKS: &[(&str, fn())] = &[
    ("base_endpoint_answers_200", base_endpoint_answers_200),
    (
        "unknown_blob_is_404_blob_unknown",
        unknown_blob_is_404_blob_unknown,
    ),
    (
        "unknown_manifest_is_404_manifest_unknown",
        unknown_manifest_is_404_manifest_unknown,
    ),
    (
        "conformance_nonexistent_manifest_name_is_404",
        conformance_nonexistent_manifest_name_is_404,
    ),
    ("invalid_names_are_rejected", invalid_names_are_rejected),
    (
        "blob_get_and_head_carry_digest_and_length",
        blob_get_and_head_carry_digest_and_length,
    ),
    (
        "manifest_get_and_head_carry_digest_type_and_length",
        manifest_get_and_head_carry_digest_type_and_length,
    ),
    (
        "range_get_of_a_blob_is_206_with_exact_bytes",
        range_get_of_a_blob_is_206_with_exact_bytes,
    ),
    (
        "monolithic_post_then_put_and_single_post",
        monolithic_post_then_put_and_single_post,
    ),
    (
        "wrong_digest_on_put_is_400_digest_invalid_and_nothing_visible",
        wrong_digest_on_put_is_400_digest_invalid_and_nothing_visible,
    ),
    (
        "streamed_patch_then_put_without_body",
        streamed_patch_then_put_without_body,
    ),
    (
        "chunked_upload_follows_the_conformance_flow",
        chunked_upload_follows_the_conformance_flow,
    ),
    ("final_chunk_in_the_put", final_chunk_in_the_put),
    (
        "upload_status_reports_offset_and_location",
        upload_status_reports_offset_and_location,
    ),
    (
        "unknown_upload_is_404_blob_upload_unknown",
        unknown_upload_is_404_blob_upload_unknown,
    ),
    ("cancelled_upload_is_gone", cancelled_upload_is_gone),
    (
        "empty_blob_can_be_pushed_and_pulled",
        empty_blob_can_be_pushed_and_pulled,
    ),
    ("cross_repo_mount", cross_repo_mount),
    (
        "manifest_put_returns_201_location_and_digest",
        manifest_put_returns_201_location_and_digest,
    ),
    (
        "manifest_with_conformance_quirks_is_accepted",
        manifest_with_conformance_quirks_is_accepted,
    ),
    (
        "manifest_referencing_missing_blob_is_400_manifest_blob_unknown",
        manifest_referencing_missing_blob_is_400_manifest_blob_unknown,
    ),
    (
        "malformed_manifest_is_400_manifest_invalid",
        malformed_manifest_is_400_manifest_invalid,
    ),
    (
        "large_manifests_up_to_4mib_are_accepted_and_larger_rejected",
        large_manifests_up_to_4mib_are_accepted_and_larger_rejected,
    ),
    (
        "tags_list_is_sorted_and_paginates_with_n_last_and_link",
        tags_list_is_sorted_and_paginates_with_n_last_and_link,
    ),
    (
        "catalog_paginates_with_n_last_and_link",
        catalog_paginates_with_n_last_and_link,
    ),
    (
        "referrers_api_lists_filters_and_reports_subject",
        referrers_api_lists_filters_and_reports_subject,
    ),
    ("delete_tag_manifest_and_blob", delete_tag_manifest_and_blob),
    (
        "docker_schema2_manifest_and_list_media_types_are_kept",
        docker_schema2_manifest_and_list_media_types_are_kept,
    ),
    (
        "repository_names_containing_route_keywords",
        repository_names_containing_route_keywords,
    ),
    (
        "concurrent_pushes_of_the_same_content",
        concurrent_pushes_of_the_same_content,
    ),
];

/// Checks in which berth refuses an upload before reading all of its body
/// (416 for a chunk out of order, 404 for an unknown upload session, 400 for
/// a wrong digest, 413 for a manifest announced too large). berth reads the
/// rest of a refused body before answering (`refused_body` in berth-api), so
/// a client still sending gets the answer: without that, curl 7.88 over TLS
/// failed these with "Stream error in the HTTP/2 framing layer" (HTTP/2) or
/// "Send failure: Broken pipe" (HTTP/1.1). They run over HTTP/1.1 as well as
/// HTTP/2, neither with `Expect: 100-continue`.
const EARLY_ANSWERS: &[&str] = &[
    "wrong_digest_on_put_is_400_digest_invalid_and_nothing_visible",
    "chunked_upload_follows_the_conformance_flow",
    "unknown_upload_is_404_blob_upload_unknown",
    "large_manifests_up_to_4mib_are_accepted_and_larger_rejected",
];

/// Runs `checks` over TLS with a user, curl speaking HTTP/1.1 or HTTP/2;
/// the names of those that failed.
fn run_over_tls(checks: &[(&'static str, fn())], http1: bool) -> Vec<String> {
    let mut failed = Vec::new();
    for (name, check) in checks {
        MODE.with(|c| c.set(Mode::TlsWithAUser { http1 }));
        let version = if http1 { "1.1" } else { "2" };
        eprintln!("--- over TLS with a user (HTTP/{version}): {name}");
        if std::panic::catch_unwind(check).is_err() {
            failed.push(format!("{name} (HTTP/{version})"));
        }
    }
    MODE.with(|c| c.set(Mode::Plain));
    failed
}

/// The spec checks above against `berth serve --tls-cert/--tls-key` with an
/// `[auth]` table: curl verifies the certificate against an openssl CA and
/// sends Basic credentials of a user a policy allows everything. Each check
/// gets its own server; every failure is reported, not only the first.
#[test]
fn every_spec_check_over_tls_with_a_user() {
    // The server really is TLS-only and closed to anonymous clients.
    let server = Server::start_tls_user();
    assert!(server.url().starts_with("https://127.0.0.1:"));
    assert_eq!(
        raw_status(server.addr(), "GET", "/v2/"),
        None,
        "plain HTTP answered"
    );
    let anonymous = curl("GET", &url(&server, "/v2/team/app/tags/list"))
        // An empty value: curl sends no Authorization (and no user's).
        .header("Authorization", "")
        .send();
    anonymous.expect_status(401);
    let challenge = anonymous.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with(&format!("Bearer realm=\"{}/token\"", server.url())),
        "{}",
        anonymous.describe()
    );
    drop(server);

    let mut failed = run_over_tls(CHECKS, false);
    let early: Vec<_> = CHECKS
        .iter()
        .filter(|(name, _)| EARLY_ANSWERS.contains(name))
        .copied()
        .collect();
    assert_eq!(
        early.len(),
        EARLY_ANSWERS.len(),
        "EARLY_ANSWERS names a check CHECKS lacks"
    );
    failed.extend(run_over_tls(&early, true));
    assert!(
        failed.is_empty(),
        "{} of {} spec check runs failed over TLS with a user: {failed:?}",
        failed.len(),
        CHECKS.len() + early.len()
    );
}

/// The spec checks above, unchanged, against `berth serve` storing into an
/// S3 bucket (Garage) instead of the local disk.
#[test]
fn every_spec_check_on_s3() {
    let server = Server::start_s3(&fresh_s3_prefix(), "", &[]);
    assert!(server.log().contains("storage=s3://"), "{}", server.log());
    drop(server);
    let mut failed = Vec::new();
    for (name, check) in CHECKS {
        MODE.with(|c| c.set(Mode::S3));
        eprintln!("--- on S3: {name}");
        if std::panic::catch_unwind(check).is_err() {
            failed.push(name.to_string());
        }
    }
    MODE.with(|c| c.set(Mode::Plain));
    assert!(
        failed.is_empty(),
        "{} of {} spec checks failed on S3: {failed:?}",
        failed.len(),
        CHECKS.len()
    );
}

/// [`CHECKS`] names every test of this file (a new check runs over TLS too).
#[test]
fn every_check_is_in_the_tls_run() {
    let source = include_str!("spec_errors.rs");
    let mut tests = Vec::new();
    let mut lines = source.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "#[test]" {
            let next = lines.next().unwrap_or_default();
            if let Some(name) = next
                .strip_prefix("fn ")
                .and_then(|rest| rest.split('(').next())
            {
                tests.push(name.to_string());
            }
        }
    }
    tests.retain(|t| {
        t != "every_spec_check_over_tls_with_a_user"
            && t != "every_check_is_in_the_tls_run"
            && t != "every_spec_check_on_s3"
    });
    let listed: Vec<String> = CHECKS.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(listed, tests);
}
