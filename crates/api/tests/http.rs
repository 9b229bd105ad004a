//! The OCI Distribution v1.1 HTTP API, in process: every endpoint and every
//! error path, checked for status, headers and the JSON error `code`.

mod common;

use common::*;
use http::Method;
use serde_json::{json, Value};

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

// ---------------------------------------------------------------------------
// Base, health

#[tokio::test]
async fn base_and_health_endpoints() {
    let h = Harness::new().await;
    for uri in ["/v2/", "/v2"] {
        let r = h.get(uri).await;
        r.expect(200);
        assert_eq!(r.h("docker-distribution-api-version"), "registry/2.0");
    }
    let r = h.head("/v2/").await;
    r.expect(200);
    assert_eq!(r.h("docker-distribution-api-version"), "registry/2.0");

    let r = h.get("/healthz").await;
    r.expect(200);
    let r = h.get("/readyz").await;
    r.expect(200);

    // Not registry URLs: a plain 404, still with the API version header.
    for uri in ["/v3/x", "/v2/x/unknown", "/nothing", "/v2x"] {
        let r = h.get(uri).await;
        r.expect(404);
        json_error_code(&r);
    }
    // Errors carry the API version header too.
    let r = h.get(&format!("/v2/x/blobs/{EMPTY_SHA256}")).await;
    r.expect_error(404, "BLOB_UNKNOWN");
    assert_eq!(r.h("docker-distribution-api-version"), "registry/2.0");
}

// ---------------------------------------------------------------------------
// Monolithic uploads

#[tokio::test]
async fn post_session_reports_location_range_and_uuid() {
    let h = Harness::new().await;
    for uri in ["/v2/a/b/blobs/uploads/", "/v2/a/b/blobs/uploads"] {
        let r = h
            .request(Method::POST, uri)
            .header("content-length", "0")
            .send()
            .await;
        r.expect(202);
        let loc = r.h("location");
        let id = loc
            .strip_prefix("/v2/a/b/blobs/uploads/")
            .unwrap_or_else(|| panic!("location {loc}"));
        assert!(uuid_like(id), "{id}");
        assert_eq!(r.h("docker-upload-uuid"), id);
        assert_eq!(r.h("range"), "0-0");
        // The session exists.
        let s = h.get(loc).await;
        s.expect(204);
        assert_eq!(s.h("location"), loc);
        assert_eq!(s.h("docker-upload-uuid"), id);
    }
}

#[tokio::test]
async fn single_post_monolithic_upload() {
    let h = Harness::new().await;
    let data = pseudo_random(70_000, 1);
    let d = sha256(&data);
    let r = h
        .request(Method::POST, &format!("/v2/repo/blobs/uploads/?digest={d}"))
        .header("content-type", "application/octet-stream")
        .sized_body(data.clone())
        .send()
        .await;
    r.expect(201);
    assert_eq!(r.h("location"), format!("/v2/repo/blobs/{d}"));
    assert_eq!(r.h("docker-content-digest"), d.to_string());
    let g = h.get(r.h("location")).await;
    g.expect(200);
    assert_eq!(&g.body[..], &data[..]);
    // No upload session is left behind.
    assert!(h.files_under("uploads").is_empty());
    h.assert_store_contained();
}

#[tokio::test]
async fn single_post_with_wrong_digest_is_400_and_nothing_visible() {
    let h = Harness::new().await;
    let data = b"the actual bytes".to_vec();
    let claimed = sha256(b"other bytes");
    let r = h
        .request(
            Method::POST,
            &format!("/v2/repo/blobs/uploads/?digest={claimed}"),
        )
        .sized_body(data.clone())
        .send()
        .await;
    r.expect_error(400, "DIGEST_INVALID");
    h.get(&format!("/v2/repo/blobs/{claimed}"))
        .await
        .expect_error(404, "BLOB_UNKNOWN");
    h.head(&format!("/v2/repo/blobs/{}", sha256(&data)))
        .await
        .expect(404);
    assert!(h.files_under("blobs").is_empty(), "a blob was published");
    assert!(h.files_under("uploads").is_empty(), "the upload was kept");
    assert!(
        h.files_under("docs/uploads").is_empty(),
        "the session record was kept"
    );
}

#[tokio::test]
async fn malformed_and_unsupported_digests_are_400_digest_invalid() {
    let h = Harness::new().await;
    let bad = [
        "sha256:zz",
        "sha256:abc",
        "nocolon",
        "sha256:",
        &format!("sha256:{}", "A".repeat(64)),
        &format!("md5:{}", "a".repeat(32)),
        &format!("sha384:{}", "a".repeat(96)),
    ];
    for d in bad {
        let r = h
            .request(Method::POST, &format!("/v2/repo/blobs/uploads/?digest={d}"))
            .sized_body(&b"x"[..])
            .send()
            .await;
        r.expect_error(400, "DIGEST_INVALID");
        // In the path too.
        let r = h.get(&format!("/v2/repo/blobs/{d}")).await;
        r.expect_error(400, "DIGEST_INVALID");
        // And when closing a session.
        let loc = h.start_upload("repo").await;
        let r = h
            .request(Method::PUT, &format!("{loc}?digest={d}"))
            .sized_body(&b"x"[..])
            .send()
            .await;
        r.expect_error(400, "DIGEST_INVALID");
    }
    assert!(h.files_under("blobs").is_empty());
}

#[tokio::test]
async fn sha512_digests_are_accepted() {
    let h = Harness::new().await;
    let data = pseudo_random(5000, 7);
    let d = sha512(&data);
    // Single POST.
    let r = h
        .request(Method::POST, &format!("/v2/repo/blobs/uploads/?digest={d}"))
        .sized_body(data.clone())
        .send()
        .await;
    r.expect(201);
    assert_eq!(r.h("docker-content-digest"), d.to_string());
    let g = h.get(&format!("/v2/repo/blobs/{d}")).await;
    g.expect(200);
    assert_eq!(g.h("docker-content-digest"), d.to_string());
    assert_eq!(&g.body[..], &data[..]);

    // A chunked session announced with digest-algorithm=sha512.
    let data2 = pseudo_random(9000, 8);
    let d2 = sha512(&data2);
    let r = h
        .post("/v2/repo/blobs/uploads/?digest-algorithm=sha512")
        .await;
    r.expect(202);
    let loc = r.h("location").to_string();
    let r = h
        .request(Method::PATCH, &loc)
        .header("content-range", "0-3999")
        .sized_body(data2[..4000].to_vec())
        .send()
        .await;
    r.expect(202);
    let r = h
        .request(Method::PUT, &format!("{}?digest={d2}", r.h("location")))
        .sized_body(data2[4000..].to_vec())
        .send()
        .await;
    r.expect(201);
    assert_eq!(r.h("docker-content-digest"), d2.to_string());
    let g = h.get(&format!("/v2/repo/blobs/{d2}")).await;
    g.expect(200);
    assert_eq!(&g.body[..], &data2[..]);

    // An algorithm berth cannot verify is refused up front.
    for alg in ["md5", "sha384", "SHA256", ""] {
        h.post(&format!("/v2/repo/blobs/uploads/?digest-algorithm={alg}"))
            .await
            .expect_error(400, "DIGEST_INVALID");
    }
    h.post("/v2/repo/blobs/uploads/?digest-algorithm=sha256")
        .await
        .expect(202);

    // A wrong sha512 is refused like a wrong sha256.
    let r = h
        .request(
            Method::POST,
            &format!("/v2/repo/blobs/uploads/?digest={}", sha512(b"nope")),
        )
        .sized_body(data.clone())
        .send()
        .await;
    r.expect_error(400, "DIGEST_INVALID");
}

#[tokio::test]
async fn the_empty_blob() {
    let h = Harness::new().await;
    let r = h
        .request(
            Method::POST,
            &format!("/v2/repo/blobs/uploads/?digest={EMPTY_SHA256}"),
        )
        .header("content-length", "0")
        .send()
        .await;
    r.expect(201);
    let g = h.get(&format!("/v2/repo/blobs/{EMPTY_SHA256}")).await;
    g.expect(200);
    assert_eq!(g.h("content-length"), "0");
    assert!(g.body.is_empty());
    let g = h.head(&format!("/v2/repo/blobs/{EMPTY_SHA256}")).await;
    g.expect(200);
    assert_eq!(g.h("content-length"), "0");
    assert_eq!(g.h("docker-content-digest"), EMPTY_SHA256);
    // A range of nothing cannot be satisfied.
    let g = h
        .request(Method::GET, &format!("/v2/repo/blobs/{EMPTY_SHA256}"))
        .header("range", "bytes=0-0")
        .send()
        .await;
    g.expect(416);
    assert_eq!(g.h("content-range"), "bytes */0");

    // Through a session closed with no bytes at all.
    let loc = h.start_upload("other").await;
    let r = h
        .request(Method::PUT, &format!("{loc}?digest={EMPTY_SHA256}"))
        .header("content-length", "0")
        .send()
        .await;
    r.expect(201);
    h.get(&format!("/v2/other/blobs/{EMPTY_SHA256}"))
        .await
        .expect(200);
}

// ---------------------------------------------------------------------------
// Chunked uploads

#[tokio::test]
async fn chunked_upload_in_order() {
    let h = Harness::new().await;
    let data = pseudo_random(30_000, 2);
    let d = sha256(&data);
    let mut loc = h.start_upload("team/app").await;
    let mut offset = 0usize;
    for size in [10_000usize, 15_000, 5_000] {
        let end = offset + size - 1;
        let r = h
            .request(Method::PATCH, &loc)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{offset}-{end}"))
            .sized_body(data[offset..=end].to_vec())
            .send()
            .await;
        r.expect(202);
        assert_eq!(r.h("range"), format!("0-{end}"));
        assert!(r.h("location").starts_with("/v2/team/app/blobs/uploads/"));
        assert!(uuid_like(r.h("docker-upload-uuid")));
        loc = r.h("location").to_string();
        offset = end + 1;

        let s = h.get(&loc).await;
        s.expect(204);
        assert_eq!(s.h("range"), format!("0-{end}"));
        assert_eq!(s.h("location"), loc);
    }
    // Close without a body.
    let r = h
        .request(Method::PUT, &format!("{loc}?digest={d}"))
        .header("content-length", "0")
        .send()
        .await;
    r.expect(201);
    assert_eq!(r.h("location"), format!("/v2/team/app/blobs/{d}"));
    assert_eq!(r.h("docker-content-digest"), d.to_string());
    let g = h.get(&format!("/v2/team/app/blobs/{d}")).await;
    g.expect(200);
    assert_eq!(&g.body[..], &data[..]);
    // The session is over.
    h.get(&loc).await.expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    assert!(h.files_under("uploads").is_empty());
}

#[tokio::test]
async fn out_of_order_or_repeated_chunk_is_416() {
    let h = Harness::new().await;
    let data = pseudo_random(300, 3);
    let loc = h.start_upload("repo").await;
    let r = h
        .request(Method::PATCH, &loc)
        .header("content-range", "0-99")
        .sized_body(data[..100].to_vec())
        .send()
        .await;
    r.expect(202);
    let loc = r.h("location").to_string();
    // Repeated.
    let r = h
        .request(Method::PATCH, &loc)
        .header("content-range", "0-99")
        .sized_body(data[..100].to_vec())
        .send()
        .await;
    r.expect_error(416, "BLOB_UPLOAD_INVALID");
    // A gap.
    let r = h
        .request(Method::PATCH, &loc)
        .header("content-range", "150-199")
        .sized_body(data[150..200].to_vec())
        .send()
        .await;
    r.expect_error(416, "BLOB_UPLOAD_INVALID");
    // Overlapping.
    let r = h
        .request(Method::PATCH, &loc)
        .header("content-range", "50-149")
        .sized_body(data[50..150].to_vec())
        .send()
        .await;
    r.expect_error(416, "BLOB_UPLOAD_INVALID");
    // The session is unharmed: GET tells where to resume.
    let s = h.get(&loc).await;
    s.expect(204);
    assert_eq!(s.h("range"), "0-99");
    let r = h
        .request(Method::PATCH, &loc)
        .header("content-range", "100-299")
        .sized_body(data[100..].to_vec())
        .send()
        .await;
    r.expect(202);
    assert_eq!(r.h("range"), "0-299");
    let d = sha256(&data);
    h.request(Method::PUT, &format!("{loc}?digest={d}"))
        .send()
        .await
        .expect(201);
    let g = h.get(&format!("/v2/repo/blobs/{d}")).await;
    assert_eq!(&g.body[..], &data[..]);
}

#[tokio::test]
async fn final_chunk_out_of_order_in_put_is_416() {
    let h = Harness::new().await;
    let data = pseudo_random(200, 4);
    let d = sha256(&data);
    let loc = h.start_upload("repo").await;
    h.request(Method::PATCH, &loc)
        .header("content-range", "0-99")
        .sized_body(data[..100].to_vec())
        .send()
        .await
        .expect(202);
    // The final chunk claims to start at 50: out of order.
    let r = h
        .request(Method::PUT, &format!("{loc}?digest={d}"))
        .header("content-range", "50-149")
        .sized_body(data[50..150].to_vec())
        .send()
        .await;
    r.expect_error(416, "BLOB_UPLOAD_INVALID");
    h.head(&format!("/v2/repo/blobs/{d}")).await.expect(404);
    // The session survived and did not take the refused bytes.
    let s = h.get(&loc).await;
    s.expect(204);
    assert_eq!(s.h("range"), "0-99");
    // A Content-Range that disagrees with Content-Length.
    let r = h
        .request(Method::PUT, &format!("{loc}?digest={d}"))
        .header("content-range", "100-199")
        .header("content-length", "10")
        .body(data[100..110].to_vec())
        .send()
        .await;
    r.expect_error(400, "BLOB_UPLOAD_INVALID");
    // In order, it completes the blob.
    let r = h
        .request(Method::PUT, &format!("{loc}?digest={d}"))
        .header("content-range", "100-199")
        .sized_body(data[100..].to_vec())
        .send()
        .await;
    r.expect(201);
    let g = h.get(&format!("/v2/repo/blobs/{d}")).await;
    assert_eq!(&g.body[..], &data[..]);
}

#[tokio::test]
async fn streamed_patch_without_content_range() {
    let h = Harness::new().await;
    let data = pseudo_random(50_000, 5);
    let d = sha256(&data);
    let loc = h.start_upload("repo").await;
    let r = h
        .request(Method::PATCH, &loc)
        .body(data[..20_000].to_vec())
        .send()
        .await;
    r.expect(202);
    assert_eq!(r.h("range"), "0-19999");
    let r = h
        .request(Method::PATCH, r.h("location"))
        .body(data[20_000..].to_vec())
        .send()
        .await;
    r.expect(202);
    assert_eq!(r.h("range"), "0-49999");
    h.request(Method::PUT, &format!("{}?digest={d}", r.h("location")))
        .send()
        .await
        .expect(201);
    let g = h.get(&format!("/v2/repo/blobs/{d}")).await;
    assert_eq!(&g.body[..], &data[..]);
}

#[tokio::test]
async fn content_range_and_length_must_agree() {
    let h = Harness::new().await;
    let loc = h.start_upload("repo").await;
    let r = h
        .request(Method::PATCH, &loc)
        .header("content-range", "0-9")
        .header("content-length", "5")
        .body(&b"12345"[..])
        .send()
        .await;
    r.expect_error(400, "BLOB_UPLOAD_INVALID");
    // A range whose length overflows u64 matches no Content-Length (it once
    // wrapped to 0 and an empty body was accepted).
    let r = h
        .request(Method::PATCH, &loc)
        .header("content-range", "0-18446744073709551615")
        .header("content-length", "0")
        .send()
        .await;
    r.expect_error(400, "BLOB_UPLOAD_INVALID");
    for bad in ["abc", "9-0", "-5", "0-"] {
        let r = h
            .request(Method::PATCH, &loc)
            .header("content-range", bad)
            .sized_body(&b"12345"[..])
            .send()
            .await;
        assert_eq!(r.status.as_u16(), 400, "Content-Range {bad:?}: {r:?}");
        json_error_code(&r);
    }
    // Nothing was written.
    let s = h.get(&loc).await;
    s.expect(204);
    assert_eq!(s.h("range"), "0-0");
}

#[tokio::test]
async fn put_with_final_chunk() {
    let h = Harness::new().await;
    let data = pseudo_random(10_000, 6);
    let d = sha256(&data);
    // POST then PUT with the whole body.
    let loc = h.start_upload("repo").await;
    let r = h
        .request(Method::PUT, &format!("{loc}?digest={d}"))
        .header("content-type", "application/octet-stream")
        .sized_body(data.clone())
        .send()
        .await;
    r.expect(201);
    assert_eq!(r.h("location"), format!("/v2/repo/blobs/{d}"));
    assert_eq!(r.h("docker-content-digest"), d.to_string());

    // PATCH a part, PUT the rest.
    let data = pseudo_random(10_000, 66);
    let d = sha256(&data);
    let loc = h.start_upload("repo").await;
    let r = h
        .request(Method::PATCH, &loc)
        .header("content-range", "0-4999")
        .sized_body(data[..5000].to_vec())
        .send()
        .await;
    r.expect(202);
    let r = h
        .request(Method::PUT, &format!("{}?digest={d}", r.h("location")))
        .sized_body(data[5000..].to_vec())
        .send()
        .await;
    r.expect(201);
    let g = h.get(&format!("/v2/repo/blobs/{d}")).await;
    assert_eq!(&g.body[..], &data[..]);
}

#[tokio::test]
async fn put_without_digest_is_400_and_keeps_the_session() {
    let h = Harness::new().await;
    let loc = h.start_upload("repo").await;
    h.request(Method::PATCH, &loc)
        .header("content-range", "0-2")
        .sized_body(&b"abc"[..])
        .send()
        .await
        .expect(202);
    let r = h.request(Method::PUT, &loc).send().await;
    r.expect_error(400, "DIGEST_INVALID");
    let s = h.get(&loc).await;
    s.expect(204);
    assert_eq!(s.h("range"), "0-2");
    h.request(Method::PUT, &format!("{loc}?digest={}", sha256(b"abc")))
        .send()
        .await
        .expect(201);
}

#[tokio::test]
async fn put_with_wrong_digest_is_400_and_nothing_visible() {
    let h = Harness::new().await;
    let data = pseudo_random(4000, 9);
    let wrong = sha256(b"something else");
    let loc = h.start_upload("repo").await;
    h.request(Method::PATCH, &loc)
        .header("content-range", "0-1999")
        .sized_body(data[..2000].to_vec())
        .send()
        .await
        .expect(202);
    let r = h
        .request(Method::PUT, &format!("{loc}?digest={wrong}"))
        .sized_body(data[2000..].to_vec())
        .send()
        .await;
    r.expect_error(400, "DIGEST_INVALID");
    for d in [wrong, sha256(&data)] {
        h.get(&format!("/v2/repo/blobs/{d}"))
            .await
            .expect_error(404, "BLOB_UNKNOWN");
    }
    assert!(h.files_under("blobs").is_empty());
}

#[tokio::test]
async fn cancelled_upload_is_gone() {
    let h = Harness::new().await;
    let loc = h.start_upload("repo").await;
    h.request(Method::PATCH, &loc)
        .body(&b"partial"[..])
        .send()
        .await
        .expect(202);
    let r = h
        .request(Method::DELETE, &loc)
        .header("content-length", "0")
        .send()
        .await;
    r.expect(204);
    h.get(&loc).await.expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    h.request(Method::PATCH, &loc)
        .body(&b"more"[..])
        .send()
        .await
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    h.request(Method::PUT, &format!("{loc}?digest={}", sha256(b"partial")))
        .send()
        .await
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    h.delete(&loc)
        .await
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    assert!(h.files_under("uploads").is_empty());
    assert!(h.files_under("docs/uploads").is_empty());
}

#[tokio::test]
async fn unknown_and_garbage_upload_ids_are_404() {
    let h = Harness::new().await;
    let d = sha256(b"x");
    for id in [
        "3f1c2a4e-0000-4000-8000-000000000000",
        "garbage",
        "..",
        "%2e%2e",
        "..%2f..%2fetc",
        &"f".repeat(300),
    ] {
        let loc = format!("/v2/repo/blobs/uploads/{id}");
        h.get(&loc).await.expect_error(404, "BLOB_UPLOAD_UNKNOWN");
        h.request(Method::PATCH, &loc)
            .body(&b"x"[..])
            .send()
            .await
            .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
        h.request(Method::PUT, &format!("{loc}?digest={d}"))
            .body(&b"x"[..])
            .send()
            .await
            .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
        h.delete(&loc)
            .await
            .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    }
    h.assert_store_contained();
}

#[tokio::test]
async fn upload_id_is_bound_to_its_repository() {
    let h = Harness::new().await;
    let loc = h.start_upload("owner/repo").await;
    let id = loc.rsplit('/').next().unwrap().to_string();
    let elsewhere = format!("/v2/intruder/repo/blobs/uploads/{id}");
    let d = sha256(b"evil");
    h.get(&elsewhere)
        .await
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    h.request(Method::PATCH, &elsewhere)
        .body(&b"evil"[..])
        .send()
        .await
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    h.request(Method::PUT, &format!("{elsewhere}?digest={d}"))
        .body(&b"evil"[..])
        .send()
        .await
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    h.delete(&elsewhere)
        .await
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    // The owner's session is untouched.
    let s = h.get(&loc).await;
    s.expect(204);
    assert_eq!(s.h("range"), "0-0");
    let d = sha256(b"good");
    h.request(Method::PUT, &format!("{loc}?digest={d}"))
        .body(&b"good"[..])
        .send()
        .await
        .expect(201);
    h.head(&format!("/v2/intruder/repo/blobs/{d}"))
        .await
        .expect(404);
}

// ---------------------------------------------------------------------------
// Mount

#[tokio::test]
async fn cross_repository_mount() {
    let h = Harness::new().await;
    let data = pseudo_random(2048, 10);
    let d = h.push_blob("src/repo", &data).await;

    let r = h
        .post(&format!(
            "/v2/dst/repo/blobs/uploads/?mount={d}&from=src/repo"
        ))
        .await;
    r.expect(201);
    assert_eq!(r.h("location"), format!("/v2/dst/repo/blobs/{d}"));
    assert_eq!(r.h("docker-content-digest"), d.to_string());
    let g = h.get(&format!("/v2/dst/repo/blobs/{d}")).await;
    g.expect(200);
    assert_eq!(&g.body[..], &data[..]);

    // Not in `from`: an ordinary session instead.
    let missing = sha256(b"not pushed anywhere");
    for uri in [
        format!("/v2/dst/repo/blobs/uploads/?mount={missing}&from=src/repo"),
        format!("/v2/dst/repo/blobs/uploads/?mount={d}&from=empty/repo"),
        format!("/v2/dst/repo/blobs/uploads/?mount={missing}"),
    ] {
        let r = h.post(&uri).await;
        r.expect(202);
        assert!(r.h("location").starts_with("/v2/dst/repo/blobs/uploads/"));
        assert_eq!(r.h("range"), "0-0");
        h.get(r.h("location")).await.expect(204);
    }
    h.head(&format!("/v2/dst/repo/blobs/{missing}"))
        .await
        .expect(404);

    // An empty `from` is no `from`.
    let r = h
        .post(&format!(
            "/v2/dst/repo/blobs/uploads/?mount={missing}&from="
        ))
        .await;
    r.expect(202);
    // `from` resolves like a pull of that name: Docker Hub aliases included.
    let hub = h.push_blob("docker.io/library/alpine", b"hub layer").await;
    for from in [
        "docker.io/alpine",
        "docker.io/library/alpine",
        "index.docker.io/library/alpine",
    ] {
        let r = h
            .post(&format!("/v2/mine/blobs/uploads/?mount={hub}&from={from}"))
            .await;
        r.expect(201);
        assert_eq!(r.h("location"), format!("/v2/mine/blobs/{hub}"));
    }

    // Invalid `from`.
    for from in ["UPPER", "..", "a//b", "%2e%2e"] {
        let r = h
            .post(&format!(
                "/v2/dst/repo/blobs/uploads/?mount={d}&from={from}"
            ))
            .await;
        r.expect_error(400, "NAME_INVALID");
    }
    // Invalid mount digest.
    let r = h
        .post("/v2/dst/repo/blobs/uploads/?mount=sha256:nope&from=src/repo")
        .await;
    r.expect_error(400, "DIGEST_INVALID");
    h.assert_store_contained();
}

// ---------------------------------------------------------------------------
// Blob reads and deletes

#[tokio::test]
async fn blob_get_and_head() {
    let h = Harness::new().await;
    let data = pseudo_random(100_000, 11);
    let d = h.push_blob("repo", &data).await;
    let uri = format!("/v2/repo/blobs/{d}");
    let g = h.get(&uri).await;
    g.expect(200);
    assert_eq!(g.h("content-length"), data.len().to_string());
    assert_eq!(g.h("docker-content-digest"), d.to_string());
    assert_eq!(&g.body[..], &data[..]);
    let hd = h.head(&uri).await;
    hd.expect(200);
    assert_eq!(hd.h("content-length"), data.len().to_string());
    assert_eq!(hd.h("docker-content-digest"), d.to_string());
    assert!(hd.body.is_empty());

    // Unknown blob.
    let unknown = sha256(b"unknown");
    h.get(&format!("/v2/repo/blobs/{unknown}"))
        .await
        .expect_error(404, "BLOB_UNKNOWN");
    h.head(&format!("/v2/repo/blobs/{unknown}"))
        .await
        .expect(404);
    // Another repository's blob is not visible here, nor in an unknown repo.
    for repo in ["other", "never/pushed"] {
        h.get(&format!("/v2/{repo}/blobs/{d}"))
            .await
            .expect_error(404, "BLOB_UNKNOWN");
        h.head(&format!("/v2/{repo}/blobs/{d}")).await.expect(404);
    }
}

#[tokio::test]
async fn blob_range_requests() {
    let h = Harness::new().await;
    let data = pseudo_random(1000, 12);
    let d = h.push_blob("repo", &data).await;
    let uri = format!("/v2/repo/blobs/{d}");
    let range = |r: &'static str| {
        let h = &h;
        let uri = uri.clone();
        async move { h.request(Method::GET, &uri).header("range", r).send().await }
    };
    let cases: [(&str, usize, usize); 5] = [
        ("bytes=0-99", 0, 99),
        ("bytes=100-199", 100, 199),
        ("bytes=900-", 900, 999),
        ("bytes=-10", 990, 999),
        ("bytes=990-5000", 990, 999),
    ];
    for (header, start, end) in cases {
        let r = range(header).await;
        r.expect(206);
        assert_eq!(r.h("content-range"), format!("bytes {start}-{end}/1000"));
        assert_eq!(r.h("content-length"), (end - start + 1).to_string());
        assert_eq!(&r.body[..], &data[start..=end], "{header}");
        assert_eq!(r.h("docker-content-digest"), d.to_string());
    }
    // A suffix longer than the blob is the whole blob.
    let r = range("bytes=-5000").await;
    r.expect(206);
    assert_eq!(r.h("content-range"), "bytes 0-999/1000");
    assert_eq!(&r.body[..], &data[..]);
    // Unsatisfiable.
    for header in ["bytes=1000-", "bytes=5000-6000", "bytes=-0"] {
        let r = range(header).await;
        r.expect(416);
        assert_eq!(r.h("content-range"), "bytes */1000", "{header}");
    }
    // Ignored (served whole).
    for header in ["items=0-1", "bytes=0-1,5-6"] {
        let r = range(header).await;
        r.expect(200);
        assert_eq!(r.body.len(), 1000);
    }
}

#[tokio::test]
async fn blob_delete() {
    let h = Harness::new().await;
    let d = h.push_blob("repo", b"delete me").await;
    h.push_blob("other", b"delete me").await;
    let uri = format!("/v2/repo/blobs/{d}");
    h.delete(&uri).await.expect(202);
    h.get(&uri).await.expect_error(404, "BLOB_UNKNOWN");
    h.head(&uri).await.expect(404);
    h.delete(&uri).await.expect_error(404, "BLOB_UNKNOWN");
    // Still in the other repository.
    h.get(&format!("/v2/other/blobs/{d}")).await.expect(200);
    // Unknown.
    h.delete(&format!("/v2/repo/blobs/{}", sha256(b"never")))
        .await
        .expect_error(404, "BLOB_UNKNOWN");
    h.delete(&format!("/v2/nobody/blobs/{d}"))
        .await
        .expect_error(404, "BLOB_UNKNOWN");
    h.delete("/v2/repo/blobs/sha256:bad")
        .await
        .expect_error(400, "DIGEST_INVALID");
}

// ---------------------------------------------------------------------------
// Manifests

async fn check_served(h: &Harness, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
    let uri = format!("/v2/{repo}/manifests/{reference}");
    let g = h.get(&uri).await;
    g.expect(200);
    assert_eq!(&g.body[..], bytes, "bytes of {uri}");
    assert_eq!(g.h("content-type"), media_type);
    assert_eq!(g.h("content-length"), bytes.len().to_string());
    assert_eq!(g.h("docker-content-digest"), sha256(bytes).to_string());
    let hd = h.head(&uri).await;
    hd.expect(200);
    assert!(hd.body.is_empty());
    assert_eq!(hd.h("content-type"), media_type);
    assert_eq!(hd.h("content-length"), bytes.len().to_string());
    assert_eq!(hd.h("docker-content-digest"), sha256(bytes).to_string());
}

#[tokio::test]
async fn oci_manifest_by_tag_and_by_digest() {
    let h = Harness::new().await;
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer = pseudo_random(500, 13);
    h.push_blob("lib/app", &config).await;
    h.push_blob("lib/app", &layer).await;
    // Odd whitespace and key order: served back byte for byte.
    let manifest = format!(
        "{{\n   \"layers\" : [ {{\"size\":{}, \"digest\":\"{}\",\"mediaType\":\"{OCI_LAYER}\"}} ],\n\t\"config\":{{\"mediaType\":\"{OCI_CONFIG}\",\"digest\":\"{}\",\"size\":{}}},\n \"mediaType\":\"{OCI_MANIFEST}\", \"schemaVersion\" : 2 }}\n\n",
        layer.len(),
        sha256(&layer),
        sha256(&config),
        config.len()
    )
    .into_bytes();
    let d = sha256(&manifest);
    let r = h
        .put_manifest("lib/app", "v1", OCI_MANIFEST, &manifest)
        .await;
    r.expect(201);
    assert_eq!(r.h("location"), format!("/v2/lib/app/manifests/{d}"));
    assert_eq!(r.h("docker-content-digest"), d.to_string());
    assert!(r.header("oci-subject").is_none());
    check_served(&h, "lib/app", "v1", OCI_MANIFEST, &manifest).await;
    check_served(&h, "lib/app", &d.to_string(), OCI_MANIFEST, &manifest).await;

    // By digest.
    let other = image_manifest(OCI_MANIFEST, &config, &[], json!({}));
    let od = sha256(&other);
    let r = h
        .put_manifest("lib/app", &od.to_string(), OCI_MANIFEST, &other)
        .await;
    r.expect(201);
    assert_eq!(r.h("location"), format!("/v2/lib/app/manifests/{od}"));
    assert_eq!(r.h("docker-content-digest"), od.to_string());
    check_served(&h, "lib/app", &od.to_string(), OCI_MANIFEST, &other).await;
    // Pushing by digest created no tag.
    let t = h.get("/v2/lib/app/tags/list").await;
    t.expect(200);
    assert_eq!(t.json()["tags"], json!(["v1"]));

    // A manifest is also readable as a blob of its repository.
    let g = h.get(&format!("/v2/lib/app/blobs/{d}")).await;
    g.expect(200);
    assert_eq!(&g.body[..], &manifest[..]);

    // Content-Type parameters are ignored; without a Content-Type the
    // body's mediaType is the type.
    let r = h
        .put_manifest(
            "lib/app",
            "params",
            &format!("{OCI_MANIFEST}; charset=utf-8"),
            &manifest,
        )
        .await;
    r.expect(201);
    check_served(&h, "lib/app", "params", OCI_MANIFEST, &manifest).await;
    h.request(Method::PUT, "/v2/lib/app/manifests/untyped")
        .sized_body(manifest.clone())
        .send()
        .await
        .expect(201);
    check_served(&h, "lib/app", "untyped", OCI_MANIFEST, &manifest).await;

    // Re-pushing the same tag with the same bytes is fine.
    h.put_manifest("lib/app", "v1", OCI_MANIFEST, &manifest)
        .await
        .expect(201);
}

#[tokio::test]
async fn oci_index_and_docker_media_types_are_kept() {
    let h = Harness::new().await;
    let a = h.push_image("multi", "amd64", OCI_MANIFEST, 20).await;
    let b = h.push_image("multi", "arm64", OCI_MANIFEST, 21).await;
    let index = index_manifest(
        OCI_INDEX,
        &[(OCI_MANIFEST, &a.manifest), (OCI_MANIFEST, &b.manifest)],
        json!({"annotations": {"org.example": "x"}}),
    );
    h.put_manifest("multi", "latest", OCI_INDEX, &index)
        .await
        .expect(201);
    check_served(&h, "multi", "latest", OCI_INDEX, &index).await;
    check_served(&h, "multi", "amd64", OCI_MANIFEST, &a.manifest).await;

    let c = h.push_image("docker", "amd64", DOCKER_MANIFEST, 22).await;
    let dd = h.push_image("docker", "arm64", DOCKER_MANIFEST, 23).await;
    check_served(&h, "docker", "amd64", DOCKER_MANIFEST, &c.manifest).await;
    let list = index_manifest(
        DOCKER_LIST,
        &[
            (DOCKER_MANIFEST, &c.manifest),
            (DOCKER_MANIFEST, &dd.manifest),
        ],
        json!({}),
    );
    h.put_manifest("docker", "latest", DOCKER_LIST, &list)
        .await
        .expect(201);
    check_served(&h, "docker", "latest", DOCKER_LIST, &list).await;
    check_served(&h, "docker", &sha256(&list).to_string(), DOCKER_LIST, &list).await;
}

#[tokio::test]
async fn manifest_referencing_missing_content_is_400_manifest_blob_unknown() {
    let h = Harness::new().await;
    let config = b"{}".to_vec();
    let layer = pseudo_random(100, 30);
    h.push_blob("repo", &config).await;
    // The layer is missing.
    let m = image_manifest(
        OCI_MANIFEST,
        &config,
        std::slice::from_ref(&layer),
        json!({}),
    );
    let r = h.put_manifest("repo", "t", OCI_MANIFEST, &m).await;
    r.expect_error(400, "MANIFEST_BLOB_UNKNOWN");
    // The layer exists, but in another repository only.
    h.push_blob("elsewhere", &layer).await;
    let r = h.put_manifest("repo", "t", OCI_MANIFEST, &m).await;
    r.expect_error(400, "MANIFEST_BLOB_UNKNOWN");
    // The config is missing.
    let m2 = image_manifest(OCI_MANIFEST, b"missing config", &[], json!({}));
    h.put_manifest("repo", "t", OCI_MANIFEST, &m2)
        .await
        .expect_error(400, "MANIFEST_BLOB_UNKNOWN");
    // An index whose child manifest is missing.
    let child = image_manifest(OCI_MANIFEST, &config, &[], json!({}));
    let idx = index_manifest(OCI_INDEX, &[(OCI_MANIFEST, &child)], json!({}));
    h.put_manifest("repo", "idx", OCI_INDEX, &idx)
        .await
        .expect_error(400, "MANIFEST_BLOB_UNKNOWN");
    // Nothing was tagged.
    h.get("/v2/repo/manifests/t")
        .await
        .expect_error(404, "MANIFEST_UNKNOWN");
    h.get("/v2/repo/manifests/idx")
        .await
        .expect_error(404, "MANIFEST_UNKNOWN");
    // Once the child exists, the index is accepted.
    h.put_manifest("repo", "child", OCI_MANIFEST, &child)
        .await
        .expect(201);
    h.put_manifest("repo", "idx", OCI_INDEX, &idx)
        .await
        .expect(201);
}

#[tokio::test]
async fn invalid_manifests_are_400_manifest_invalid() {
    let h = Harness::new().await;
    let config = b"{}".to_vec();
    h.push_blob("repo", &config).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (OCI_MANIFEST, b"{not json".to_vec()),
        (OCI_MANIFEST, b"".to_vec()),
        (OCI_MANIFEST, b"[]".to_vec()),
        (OCI_MANIFEST, br#"{"schemaVersion":3,"config":{}}"#.to_vec()),
        (
            SCHEMA1,
            br#"{"schemaVersion":1,"name":"repo","tag":"t","architecture":"amd64","fsLayers":[],"history":[],"signatures":[]}"#
                .to_vec(),
        ),
        (
            "application/vnd.docker.distribution.manifest.v1+json",
            br#"{"schemaVersion":1,"name":"repo","tag":"t","fsLayers":[]}"#.to_vec(),
        ),
        (
            OCI_MANIFEST,
            br#"{"schemaVersion":1,"name":"repo","tag":"t","fsLayers":[]}"#.to_vec(),
        ),
        // The descriptor's size disagrees with the blob.
        (
            OCI_MANIFEST,
            serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": sha256(&config).to_string(), "size": 999},
                "layers": [],
            }))
            .unwrap(),
        ),
        // Content-Type contradicts the body's mediaType.
        (
            DOCKER_MANIFEST,
            image_manifest(OCI_MANIFEST, &config, &[], json!({})),
        ),
    ];
    for (ct, body) in cases {
        let r = h.put_manifest("repo", "bad", ct, &body).await;
        r.expect_error(400, "MANIFEST_INVALID");
    }
    h.get("/v2/repo/manifests/bad")
        .await
        .expect_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn put_by_digest_with_mismatched_digest_is_400_digest_invalid() {
    let h = Harness::new().await;
    let config = b"{}".to_vec();
    h.push_blob("repo", &config).await;
    let m = image_manifest(OCI_MANIFEST, &config, &[], json!({}));
    let wrong = sha256(b"not the manifest");
    let r = h
        .put_manifest("repo", &wrong.to_string(), OCI_MANIFEST, &m)
        .await;
    r.expect_error(400, "DIGEST_INVALID");
    h.get(&format!("/v2/repo/manifests/{wrong}"))
        .await
        .expect_error(404, "MANIFEST_UNKNOWN");
    h.get(&format!("/v2/repo/manifests/{}", sha256(&m)))
        .await
        .expect_error(404, "MANIFEST_UNKNOWN");
    // A sha512 reference is checked with sha512.
    let d512 = sha512(&m);
    let r = h
        .put_manifest("repo", &d512.to_string(), OCI_MANIFEST, &m)
        .await;
    r.expect(201);
    assert_eq!(r.h("docker-content-digest"), d512.to_string());
    let g = h.get(&format!("/v2/repo/manifests/{d512}")).await;
    g.expect(200);
    assert_eq!(&g.body[..], &m[..]);
}

#[tokio::test]
async fn manifest_over_4_mib_is_413_size_invalid() {
    let h = Harness::new().await;
    let config = b"{}".to_vec();
    h.push_blob("repo", &config).await;
    let big = image_manifest(
        OCI_MANIFEST,
        &config,
        &[],
        json!({"annotations": {"pad": "x".repeat(4 * 1024 * 1024)}}),
    );
    assert!(big.len() > 4 * 1024 * 1024);
    // Announced by Content-Length.
    h.put_manifest("repo", "big", OCI_MANIFEST, &big)
        .await
        .expect_error(413, "SIZE_INVALID");
    // Not announced: found while reading.
    h.request(Method::PUT, "/v2/repo/manifests/big")
        .header("content-type", OCI_MANIFEST)
        .body(big)
        .send()
        .await
        .expect_error(413, "SIZE_INVALID");
    // Just under the limit is fine.
    let mut fits = image_manifest(
        OCI_MANIFEST,
        &config,
        &[],
        json!({"annotations": {"pad": ""}}),
    );
    let pad = 4 * 1024 * 1024 - fits.len();
    fits = image_manifest(
        OCI_MANIFEST,
        &config,
        &[],
        json!({"annotations": {"pad": "y".repeat(pad)}}),
    );
    assert_eq!(fits.len(), 4 * 1024 * 1024);
    h.put_manifest("repo", "fits", OCI_MANIFEST, &fits)
        .await
        .expect(201);
    h.get("/v2/repo/manifests/big")
        .await
        .expect_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn invalid_tags_are_400() {
    let h = Harness::new().await;
    let config = b"{}".to_vec();
    h.push_blob("repo", &config).await;
    let m = image_manifest(OCI_MANIFEST, &config, &[], json!({}));
    let long = "t".repeat(129);
    for tag in [
        "-bad",
        ".bad",
        "..",
        "a%2fb",
        "t@x",
        "%2e%2e",
        long.as_str(),
    ] {
        let r = h.put_manifest("repo", tag, OCI_MANIFEST, &m).await;
        r.expect(400);
        let code = json_error_code(&r);
        assert!(
            ["MANIFEST_INVALID", "NAME_INVALID", "TAG_INVALID"].contains(&code.as_str()),
            "tag {tag:?}: {code}"
        );
        // Reads of a name that cannot be a tag find nothing: 404, as the
        // conformance suite requires for `.INVALID_MANIFEST_NAME`.
        let r = h.get(&format!("/v2/repo/manifests/{tag}")).await;
        r.expect(404);
        assert_eq!(json_error_code(&r), "MANIFEST_UNKNOWN", "tag {tag:?}");
    }
    // The longest valid tag works.
    let ok = "t".repeat(128);
    h.put_manifest("repo", &ok, OCI_MANIFEST, &m)
        .await
        .expect(201);
    h.assert_store_contained();
}

#[tokio::test]
async fn unknown_manifests_are_404_manifest_unknown() {
    let h = Harness::new().await;
    h.push_image("repo", "exists", OCI_MANIFEST, 40).await;
    let unknown_digest = sha256(b"unknown manifest");
    for uri in [
        "/v2/repo/manifests/missing".to_string(),
        format!("/v2/repo/manifests/{unknown_digest}"),
        "/v2/never/pushed/manifests/latest".to_string(),
        format!("/v2/never/pushed/manifests/{unknown_digest}"),
    ] {
        h.get(&uri).await.expect_error(404, "MANIFEST_UNKNOWN");
        h.head(&uri).await.expect(404);
    }
    // A blob digest is not a manifest.
    let blob = h.push_blob("repo", b"a layer").await;
    h.get(&format!("/v2/repo/manifests/{blob}"))
        .await
        .expect_error(404, "MANIFEST_UNKNOWN");
    // A manifest of another repository is not visible.
    let img = h.push_image("other", "exists", OCI_MANIFEST, 41).await;
    h.get(&format!("/v2/repo/manifests/{}", img.digest))
        .await
        .expect_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn delete_manifest_by_digest_removes_its_tags() {
    let h = Harness::new().await;
    let img = h.push_image("repo", "v1", OCI_MANIFEST, 50).await;
    h.put_manifest("repo", "latest", OCI_MANIFEST, &img.manifest)
        .await
        .expect(201);
    let keep = h.push_image("repo", "keep", OCI_MANIFEST, 51).await;
    let uri = format!("/v2/repo/manifests/{}", img.digest);
    h.delete(&uri).await.expect(202);
    h.get(&uri).await.expect_error(404, "MANIFEST_UNKNOWN");
    h.head(&uri).await.expect(404);
    for tag in ["v1", "latest"] {
        h.get(&format!("/v2/repo/manifests/{tag}"))
            .await
            .expect_error(404, "MANIFEST_UNKNOWN");
    }
    let t = h.get("/v2/repo/tags/list").await;
    t.expect(200);
    assert_eq!(t.json()["tags"], json!(["keep"]));
    check_served(&h, "repo", "keep", OCI_MANIFEST, &keep.manifest).await;
    h.delete(&uri).await.expect_error(404, "MANIFEST_UNKNOWN");
    h.delete(&format!("/v2/nobody/manifests/{}", img.digest))
        .await
        .expect_error(404, "MANIFEST_UNKNOWN");
    // Pushing it again brings it back.
    h.put_manifest("repo", "v1", OCI_MANIFEST, &img.manifest)
        .await
        .expect(201);
    h.get(&uri).await.expect(200);
}

#[tokio::test]
async fn delete_by_tag_keeps_the_manifest() {
    let h = Harness::new().await;
    let img = h.push_image("repo", "v1", OCI_MANIFEST, 52).await;
    h.delete("/v2/repo/manifests/v1").await.expect(202);
    h.get("/v2/repo/manifests/v1")
        .await
        .expect_error(404, "MANIFEST_UNKNOWN");
    check_served(
        &h,
        "repo",
        &img.digest.to_string(),
        OCI_MANIFEST,
        &img.manifest,
    )
    .await;
    h.delete("/v2/repo/manifests/v1")
        .await
        .expect_error(404, "MANIFEST_UNKNOWN");
    h.delete("/v2/repo/manifests/never")
        .await
        .expect_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn manifest_with_subject_gets_oci_subject() {
    let h = Harness::new().await;
    let config = b"{}".to_vec();
    h.push_blob("repo", &config).await;
    // The subject need not exist yet.
    let subject = sha256(b"a manifest pushed later");
    let m = image_manifest(
        OCI_MANIFEST,
        &config,
        &[],
        json!({
            "artifactType": "application/vnd.example.sig",
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject.to_string(), "size": 123},
        }),
    );
    let r = h
        .put_manifest("repo", &sha256(&m).to_string(), OCI_MANIFEST, &m)
        .await;
    r.expect(201);
    assert_eq!(r.h("oci-subject"), subject.to_string());
    // By tag too.
    let r = h.put_manifest("repo", "sig", OCI_MANIFEST, &m).await;
    r.expect(201);
    assert_eq!(r.h("oci-subject"), subject.to_string());
    // Listed for its subject even though the subject is still missing.
    let v = h.get(&format!("/v2/repo/referrers/{subject}")).await.json();
    assert_eq!(v["manifests"][0]["digest"], sha256(&m).to_string());
    assert_eq!(
        v["manifests"][0]["artifactType"],
        "application/vnd.example.sig"
    );
}

// ---------------------------------------------------------------------------
// Tags and catalog

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The path of a `Link: <path>; rel="next"` header.
fn next_link(r: &Resp) -> Option<String> {
    let link = r.header("link")?;
    assert!(link.ends_with("; rel=\"next\""), "{link}");
    let path = link
        .strip_prefix('<')
        .and_then(|l| l.split_once('>'))
        .map(|(p, _)| p.to_string())
        .unwrap_or_else(|| panic!("malformed Link {link}"));
    Some(path)
}

#[tokio::test]
async fn tags_list_sorted_and_paginated() {
    let h = Harness::new().await;
    let img = h.push_image("org/repo", "c", OCI_MANIFEST, 60).await;
    for tag in ["b", "a", "d", "B", "1.0", "e"] {
        h.put_manifest("org/repo", tag, OCI_MANIFEST, &img.manifest)
            .await
            .expect(201);
    }
    let all = ["1.0", "B", "a", "b", "c", "d", "e"];
    let r = h.get("/v2/org/repo/tags/list").await;
    r.expect(200);
    assert!(r.h("content-type").starts_with("application/json"));
    assert_eq!(r.json()["name"], "org/repo");
    assert_eq!(strings(&r.json()["tags"]), all);
    assert!(r.header("link").is_none());

    // n=2 with the Link header the spec describes.
    let r = h.get("/v2/org/repo/tags/list?n=2&last=a").await;
    r.expect(200);
    assert_eq!(strings(&r.json()["tags"]), ["b", "c"]);
    assert_eq!(
        r.h("link"),
        "</v2/org/repo/tags/list?n=2&last=c>; rel=\"next\""
    );
    let r = h.get("/v2/org/repo/tags/list?n=2").await;
    assert_eq!(
        r.h("link"),
        "</v2/org/repo/tags/list?n=2&last=B>; rel=\"next\""
    );

    // Following the links visits every tag once.
    let mut seen = Vec::new();
    let mut uri = Some("/v2/org/repo/tags/list?n=3".to_string());
    let mut pages = 0;
    while let Some(u) = uri {
        let r = h.get(&u).await;
        r.expect(200);
        let page = strings(&r.json()["tags"]);
        assert!(page.len() <= 3);
        seen.extend(page);
        uri = next_link(&r);
        pages += 1;
        assert!(pages < 10);
    }
    assert_eq!(seen, all);

    // `last` alone, and past the end.
    let r = h.get("/v2/org/repo/tags/list?last=c").await;
    assert_eq!(strings(&r.json()["tags"]), ["d", "e"]);
    let r = h.get("/v2/org/repo/tags/list?n=5&last=e").await;
    r.expect(200);
    assert!(strings(&r.json()["tags"]).is_empty());
    assert!(r.header("link").is_none());
    // The exact last page has no Link.
    let r = h.get("/v2/org/repo/tags/list?n=2&last=c").await;
    assert_eq!(strings(&r.json()["tags"]), ["d", "e"]);
    assert!(r.header("link").is_none());

    // n=0: an empty list and no Link.
    let r = h.get("/v2/org/repo/tags/list?n=0").await;
    r.expect(200);
    assert!(strings(&r.json()["tags"]).is_empty());
    assert!(r.header("link").is_none());

    // A bad n.
    let r = h.get("/v2/org/repo/tags/list?n=abc").await;
    r.expect(400);
    json_error_code(&r);

    // Unknown repository, including a mere prefix of a repository's name.
    h.get("/v2/no/such/repo/tags/list")
        .await
        .expect_error(404, "NAME_UNKNOWN");
    h.get("/v2/org/tags/list")
        .await
        .expect_error(404, "NAME_UNKNOWN");
}

#[tokio::test]
async fn tags_list_of_a_repo_without_tags() {
    let h = Harness::new().await;
    h.push_blob("blobs/only", b"x").await;
    let r = h.get("/v2/blobs/only/tags/list").await;
    r.expect(200);
    assert!(strings(&r.json()["tags"]).is_empty());
}

#[tokio::test]
async fn catalog_sorted_paginated_nested() {
    let h = Harness::new().await;
    let r = h.get("/v2/_catalog").await;
    r.expect(200);
    assert!(strings(&r.json()["repositories"]).is_empty());

    let names = [
        "zeta",
        "alpha",
        "alpha/beta",
        "alpha/beta/gamma",
        "docker.io/library/alpine",
        "m-1/x_y",
    ];
    for (i, n) in names.iter().enumerate() {
        h.push_image(n, "latest", OCI_MANIFEST, 70 + i as u64).await;
    }
    let mut sorted: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    sorted.sort();
    let r = h.get("/v2/_catalog").await;
    r.expect(200);
    assert_eq!(strings(&r.json()["repositories"]), sorted);

    let r = h.get("/v2/_catalog?n=2").await;
    assert_eq!(strings(&r.json()["repositories"]), sorted[..2]);
    assert_eq!(
        r.h("link"),
        format!("</v2/_catalog?n=2&last={}>; rel=\"next\"", sorted[1])
    );
    let mut seen = Vec::new();
    let mut uri = Some("/v2/_catalog?n=4".to_string());
    while let Some(u) = uri {
        let r = h.get(&u).await;
        r.expect(200);
        seen.extend(strings(&r.json()["repositories"]));
        uri = next_link(&r);
    }
    assert_eq!(seen, sorted);
    let r = h.get("/v2/_catalog?n=0").await;
    assert!(strings(&r.json()["repositories"]).is_empty());
    assert!(r.header("link").is_none());
    let r = h.get("/v2/_catalog?n=-1").await;
    r.expect(400);
    json_error_code(&r);

    // A fresh router over the same store finds the same repositories on disk.
    let storage = berth_storage::fs::FsStorage::open(&h.root).await.unwrap();
    let registry = std::sync::Arc::new(berth_registry::Registry::new(std::sync::Arc::new(storage)));
    let again = Harness {
        dir: tempfile::tempdir().unwrap(),
        root: h.root.clone(),
        app: berth_api::router(berth_api::ApiState::new(registry)),
    };
    let r = again.get("/v2/_catalog").await;
    assert_eq!(strings(&r.json()["repositories"]), sorted);
}

// ---------------------------------------------------------------------------
// Referrers

#[tokio::test]
async fn referrers_api() {
    let h = Harness::new().await;
    let subject = h.push_image("repo", "v1", OCI_MANIFEST, 80).await;
    let uri = format!("/v2/repo/referrers/{}", subject.digest);

    // No referrers yet (and an unknown subject, and an unknown repo): an empty index.
    for u in [
        uri.clone(),
        format!("/v2/repo/referrers/{}", sha256(b"unknown")),
        format!("/v2/nobody/referrers/{}", subject.digest),
    ] {
        let r = h.get(&u).await;
        r.expect(200);
        assert_eq!(r.h("content-type"), OCI_INDEX);
        let v = r.json();
        assert_eq!(v["schemaVersion"], 2);
        assert_eq!(v["mediaType"], OCI_INDEX);
        assert_eq!(v["manifests"], json!([]));
    }

    let subject_desc = json!({
        "mediaType": OCI_MANIFEST,
        "digest": subject.digest.to_string(),
        "size": subject.manifest.len(),
    });
    let empty = b"{}".to_vec();
    h.push_blob("repo", &empty).await;
    let sbom_layer = b"an sbom".to_vec();
    h.push_blob("repo", &sbom_layer).await;
    // An artifact with artifactType and annotations.
    let sbom = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1",
        "config": descriptor(OCI_EMPTY, &empty),
        "layers": [descriptor("application/spdx+json", &sbom_layer)],
        "subject": subject_desc,
        "annotations": {"org.example.format": "spdx", "org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }))
    .unwrap();
    // A signature without artifactType: its config media type stands in.
    let sig_config = b"{\"sig\":true}".to_vec();
    h.push_blob("repo", &sig_config).await;
    let sig = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.example.signature.v1", &sig_config),
        "layers": [],
        "subject": subject_desc,
    }))
    .unwrap();
    // An index referrer without artifactType: none is reported.
    let idx = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [],
        "subject": subject_desc,
        "annotations": {"kind": "index"},
    }))
    .unwrap();
    for (mt, m) in [
        (OCI_MANIFEST, &sbom),
        (OCI_MANIFEST, &sig),
        (OCI_INDEX, &idx),
    ] {
        let r = h.put_manifest("repo", &sha256(m).to_string(), mt, m).await;
        r.expect(201);
        assert_eq!(r.h("oci-subject"), subject.digest.to_string());
    }

    let r = h.get(&uri).await;
    r.expect(200);
    assert_eq!(r.h("content-type"), OCI_INDEX);
    assert!(r.header("oci-filters-applied").is_none());
    let v = r.json();
    let entries = v["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{v}");
    let find = |d: &[u8]| {
        entries
            .iter()
            .find(|e| e["digest"] == sha256(d).to_string())
            .unwrap_or_else(|| panic!("{} missing from {v}", sha256(d)))
            .clone()
    };
    let e = find(&sbom);
    assert_eq!(e["mediaType"], OCI_MANIFEST);
    assert_eq!(e["size"], sbom.len());
    assert_eq!(e["artifactType"], "application/vnd.example.sbom.v1");
    assert_eq!(e["annotations"]["org.example.format"], "spdx");
    assert_eq!(
        e["annotations"]["org.opencontainers.image.created"],
        "2024-01-01T00:00:00Z"
    );
    let e = find(&sig);
    assert_eq!(e["artifactType"], "application/vnd.example.signature.v1");
    let e = find(&idx);
    assert_eq!(e["mediaType"], OCI_INDEX);
    assert!(e.get("artifactType").is_none(), "{e}");
    assert_eq!(e["annotations"]["kind"], "index");

    // Filtered.
    let r = h
        .get(&format!(
            "{uri}?artifactType=application/vnd.example.sbom.v1"
        ))
        .await;
    r.expect(200);
    assert_eq!(r.h("oci-filters-applied"), "artifactType");
    let v = r.json();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(v["manifests"][0]["digest"], sha256(&sbom).to_string());
    let r = h
        .get(&format!("{uri}?artifactType=application/vnd.nothing"))
        .await;
    r.expect(200);
    assert_eq!(r.h("oci-filters-applied"), "artifactType");
    assert_eq!(r.json()["manifests"], json!([]));

    // Referrers are per repository.
    let r = h
        .get(&format!("/v2/other/referrers/{}", subject.digest))
        .await;
    assert_eq!(r.json()["manifests"], json!([]));

    // Deleting a referrer removes it from the list.
    h.delete(&format!("/v2/repo/manifests/{}", sha256(&sbom)))
        .await
        .expect(202);
    let v = h.get(&uri).await.json();
    let digests: Vec<_> = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(digests.len(), 2);
    assert!(!digests.contains(&sha256(&sbom).to_string()));

    // Invalid digest.
    for bad in ["sha256:nope", "latest", "md5:abc"] {
        h.get(&format!("/v2/repo/referrers/{bad}"))
            .await
            .expect_error(400, "DIGEST_INVALID");
    }
}

// ---------------------------------------------------------------------------
// Hostile names

#[tokio::test]
async fn hostile_names_are_refused_and_stay_inside_the_root() {
    let h = Harness::new().await;
    let d = sha256(b"x");
    let long = format!("{}/{}", "a".repeat(200), "b".repeat(55)); // 256 chars
    assert_eq!(long.len(), 256);
    let names = [
        "..",
        "../etc",
        "a/../../etc",
        "%2e%2e",
        "%2e%2e/%2e%2e/etc",
        "a/%2e%2e/b",
        "..%2f..%2fetc",
        "UPPER",
        "Mixed/case",
        "a//b",
        "a/",
        "/a",
        "a/./b",
        ".hidden",
        "a_",
        "-a",
        "a b",
        "a%20b",
        "a\\b",
        "_layers",
        "a/_tags",
        long.as_str(),
    ];
    for name in names {
        let uris = [
            (Method::GET, format!("/v2/{name}/tags/list")),
            (Method::GET, format!("/v2/{name}/manifests/latest")),
            (Method::PUT, format!("/v2/{name}/manifests/latest")),
            (Method::DELETE, format!("/v2/{name}/manifests/latest")),
            (Method::GET, format!("/v2/{name}/blobs/{d}")),
            (Method::DELETE, format!("/v2/{name}/blobs/{d}")),
            (Method::POST, format!("/v2/{name}/blobs/uploads/")),
            (
                Method::POST,
                format!("/v2/{name}/blobs/uploads/?digest={d}"),
            ),
            (Method::GET, format!("/v2/{name}/referrers/{d}")),
        ];
        for (method, uri) in uris {
            let Ok(parsed) = uri.parse::<http::Uri>() else {
                // Not even a URI a client could send.
                continue;
            };
            let r = h
                .request(method.clone(), &parsed.to_string())
                .header("content-type", OCI_MANIFEST)
                .body(&b"x"[..])
                .send()
                .await;
            let status = r.status.as_u16();
            assert!(
                status == 400 || status == 404,
                "{method} {uri}: {status} {}",
                r.text()
            );
            if status == 400 {
                assert_eq!(json_error_code(&r), "NAME_INVALID", "{method} {uri}");
            } else {
                // Only a path that is not a registry URL at all may be a 404.
                assert!(
                    !["BLOB_UNKNOWN", "MANIFEST_UNKNOWN", "NAME_UNKNOWN"]
                        .contains(&json_error_code(&r).as_str()),
                    "{method} {uri} was looked up: {}",
                    r.text()
                );
            }
        }
    }
    // A 255-character name is valid.
    let ok = format!("{}/{}", "a".repeat(200), "b".repeat(54));
    assert_eq!(ok.len(), 255);
    h.push_image(&ok, "latest", OCI_MANIFEST, 90).await;
    h.get(&format!("/v2/{ok}/manifests/latest"))
        .await
        .expect(200);

    // Hostile `ns` values.
    for ns in [
        "..",
        "../..",
        "%2e%2e",
        "a/../b",
        "-bad.io",
        "bad%20host",
        "x.io/../../y",
    ] {
        let r = h.get(&format!("/v2/alpine/manifests/latest?ns={ns}")).await;
        r.expect_error(400, "NAME_INVALID");
    }
    h.assert_store_contained();
}

// ---------------------------------------------------------------------------
// Mirror routing

#[tokio::test]
async fn ns_parameter_and_path_prefix_forms() {
    let h = Harness::new().await;
    let img = h
        .push_image("docker.io/library/alpine", "3.20", OCI_MANIFEST, 100)
        .await;
    let layer = sha256(&img.layers[0]);
    for uri in [
        "/v2/alpine/manifests/3.20?ns=docker.io",
        "/v2/library/alpine/manifests/3.20?ns=docker.io",
        "/v2/alpine/manifests/3.20?ns=index.docker.io",
        "/v2/alpine/manifests/3.20?ns=registry-1.docker.io",
        "/v2/docker.io/library/alpine/manifests/3.20",
        "/v2/docker.io/alpine/manifests/3.20",
        "/v2/docker.io/library/alpine/manifests/3.20?ns=docker.io",
    ] {
        let r = h.get(uri).await;
        r.expect(200);
        assert_eq!(&r.body[..], &img.manifest[..], "{uri}");
        assert_eq!(r.h("docker-content-digest"), img.digest.to_string());
    }
    let r = h
        .get(&format!("/v2/alpine/blobs/{layer}?ns=docker.io"))
        .await;
    r.expect(200);
    assert_eq!(&r.body[..], &img.layers[0][..]);
    let r = h.get("/v2/alpine/tags/list?ns=docker.io").await;
    r.expect(200);
    assert_eq!(r.json()["name"], "docker.io/library/alpine");
    assert_eq!(r.json()["tags"], json!(["3.20"]));
    // Without ns it is the local repository `alpine`, which does not exist.
    h.get("/v2/alpine/manifests/3.20")
        .await
        .expect_error(404, "MANIFEST_UNKNOWN");
    // Another upstream keeps its names as they are.
    let other = h
        .push_image("registry.k8s.io/pause", "3.9", OCI_MANIFEST, 101)
        .await;
    let r = h.get("/v2/pause/manifests/3.9?ns=registry.k8s.io").await;
    r.expect(200);
    assert_eq!(&r.body[..], &other.manifest[..]);
    h.get("/v2/pause/manifests/3.9?ns=docker.io")
        .await
        .expect_error(404, "MANIFEST_UNKNOWN");

    let cat = h.get("/v2/_catalog").await.json();
    assert_eq!(
        strings(&cat["repositories"]),
        ["docker.io/library/alpine", "registry.k8s.io/pause"]
    );
}

// ---------------------------------------------------------------------------
// Concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_of_the_same_blob() {
    let h = std::sync::Arc::new(Harness::new().await);
    let data = pseudo_random(300_000, 110);
    let d = sha256(&data);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let h = h.clone();
        let data = data.clone();
        let d = d.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                h.request(Method::POST, &format!("/v2/repo/blobs/uploads/?digest={d}"))
                    .sized_body(data)
                    .send()
                    .await
                    .status
                    .as_u16()
            } else {
                let loc = h.start_upload("repo").await;
                let r = h
                    .request(Method::PATCH, &loc)
                    .header("content-range", format!("0-{}", 150_000 - 1))
                    .sized_body(data[..150_000].to_vec())
                    .send()
                    .await;
                assert_eq!(r.status.as_u16(), 202);
                h.request(Method::PUT, &format!("{}?digest={d}", r.h("location")))
                    .sized_body(data[150_000..].to_vec())
                    .send()
                    .await
                    .status
                    .as_u16()
            }
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 201);
    }
    let g = h.get(&format!("/v2/repo/blobs/{d}")).await;
    g.expect(200);
    assert_eq!(&g.body[..], &data[..]);
    assert_eq!(h.files_under("blobs").len(), 1);
    assert!(h.files_under("uploads").is_empty());
    assert!(h.files_under("docs/uploads").is_empty());
    h.assert_store_contained();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_of_the_same_tag() {
    let h = std::sync::Arc::new(Harness::new().await);
    let layer = pseudo_random(1000, 120);
    h.push_blob("repo", &layer).await;
    let mut manifests = Vec::new();
    for i in 0..16u64 {
        let config = format!("{{\"n\":{i}}}").into_bytes();
        h.push_blob("repo", &config).await;
        manifests.push(image_manifest(
            OCI_MANIFEST,
            &config,
            std::slice::from_ref(&layer),
            json!({}),
        ));
    }
    let mut tasks = Vec::new();
    for m in manifests.clone() {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.put_manifest("repo", "latest", OCI_MANIFEST, &m)
                .await
                .status
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 201);
    }
    let g = h.get("/v2/repo/manifests/latest").await;
    g.expect(200);
    let served_digest = g.h("docker-content-digest").to_string();
    assert_eq!(sha256(&g.body).to_string(), served_digest);
    assert!(manifests.iter().any(|m| m[..] == g.body[..]));
    // Every revision is still there by digest.
    for m in &manifests {
        h.get(&format!("/v2/repo/manifests/{}", sha256(m)))
            .await
            .expect(200);
    }
    let t = h.get("/v2/repo/tags/list").await.json();
    assert_eq!(t["tags"], json!(["latest"]));
    h.assert_store_contained();
}

// ---------------------------------------------------------------------------
// Methods

#[tokio::test]
async fn unsupported_methods_are_405_unsupported() {
    let h = Harness::new().await;
    let d = sha256(b"x");
    let loc = h.start_upload("repo").await;
    let manifest = "GET, HEAD, PUT, DELETE";
    let blob = "GET, HEAD, DELETE";
    let upload = "GET, PATCH, PUT, DELETE";
    let cases = [
        (Method::DELETE, "/v2/".to_string(), "GET, HEAD"),
        (Method::POST, "/v2/".to_string(), "GET, HEAD"),
        (Method::POST, "/v2/_catalog".to_string(), "GET"),
        (Method::DELETE, "/v2/_catalog".to_string(), "GET"),
        (
            Method::POST,
            "/v2/repo/manifests/latest".to_string(),
            manifest,
        ),
        (
            Method::PATCH,
            "/v2/repo/manifests/latest".to_string(),
            manifest,
        ),
        (Method::PUT, format!("/v2/repo/blobs/{d}"), blob),
        (Method::POST, format!("/v2/repo/blobs/{d}"), blob),
        (Method::PATCH, format!("/v2/repo/blobs/{d}"), blob),
        (Method::PUT, "/v2/repo/tags/list".to_string(), "GET"),
        (Method::DELETE, "/v2/repo/tags/list".to_string(), "GET"),
        (Method::GET, "/v2/repo/blobs/uploads/".to_string(), "POST"),
        (Method::PUT, "/v2/repo/blobs/uploads/".to_string(), "POST"),
        (
            Method::DELETE,
            "/v2/repo/blobs/uploads/".to_string(),
            "POST",
        ),
        (Method::POST, loc.clone(), upload),
        (Method::PUT, format!("/v2/repo/referrers/{d}"), "GET"),
        (Method::DELETE, format!("/v2/repo/referrers/{d}"), "GET"),
    ];
    for (method, uri, allow) in cases {
        let r = h.request(method.clone(), &uri).send().await;
        assert_eq!(r.status.as_u16(), 405, "{method} {uri}: {}", r.text());
        assert_eq!(json_error_code(&r), "UNSUPPORTED", "{method} {uri}");
        // RFC 9110: a 405 names the methods the resource does support.
        assert_eq!(r.h("allow"), allow, "{method} {uri}");
    }
    // The session survived the stray POST.
    h.get(&loc).await.expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_chunks_at_the_same_offset_one_wins() {
    let h = std::sync::Arc::new(Harness::new().await);
    let loc = h.start_upload("repo").await;
    let data = pseudo_random(100, 130);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let h = h.clone();
        let loc = loc.clone();
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            h.request(Method::PATCH, &loc)
                .header("content-range", "0-99")
                .sized_body(data)
                .send()
                .await
                .status
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [202, 416, 416, 416, 416, 416, 416, 416]);
    let s = h.get(&loc).await;
    assert_eq!(s.h("range"), "0-99");
    h.request(Method::PUT, &format!("{loc}?digest={}", sha256(&data)))
        .send()
        .await
        .expect(201);
}

#[tokio::test]
async fn foreign_layers_need_not_be_pushed() {
    let h = Harness::new().await;
    let config = b"{\"os\":\"windows\"}".to_vec();
    h.push_blob("win", &config).await;
    let foreign = pseudo_random(64, 140);
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, &config),
        "layers": [{
            "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "digest": sha256(&foreign).to_string(),
            "size": foreign.len(),
            "urls": ["https://mcr.example/layer"],
        }],
    }))
    .unwrap();
    h.put_manifest("win", "ltsc", DOCKER_MANIFEST, &m)
        .await
        .expect(201);
    check_served(&h, "win", "ltsc", DOCKER_MANIFEST, &m).await;
}

#[tokio::test]
async fn referrers_artifact_type_falls_back_when_empty() {
    let h = Harness::new().await;
    let subject = h.push_image("repo", "v1", OCI_MANIFEST, 150).await;
    let subject_desc = json!({
        "mediaType": OCI_MANIFEST,
        "digest": subject.digest.to_string(),
        "size": subject.manifest.len(),
    });
    let config = b"{\"x\":1}".to_vec();
    h.push_blob("repo", &config).await;
    // An empty artifactType in an image manifest: the config's media type stands in.
    let image = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "",
        "config": descriptor("application/vnd.example.config.v1+json", &config),
        "layers": [],
        "subject": subject_desc,
    }))
    .unwrap();
    // An empty artifactType in an index: omitted.
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "",
        "manifests": [],
        "subject": subject_desc,
    }))
    .unwrap();
    for (mt, m) in [(OCI_MANIFEST, &image), (OCI_INDEX, &index)] {
        let r = h.put_manifest("repo", &sha256(m).to_string(), mt, m).await;
        r.expect(201);
        assert_eq!(r.h("oci-subject"), subject.digest.to_string());
    }
    let v = h
        .get(&format!("/v2/repo/referrers/{}", subject.digest))
        .await
        .json();
    let entries = v["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{v}");
    for e in entries {
        if e["digest"] == sha256(&image).to_string() {
            assert_eq!(e["artifactType"], "application/vnd.example.config.v1+json");
        } else {
            assert!(e.get("artifactType").is_none(), "{e}");
        }
    }
}

#[tokio::test]
async fn name_grammar_edges_are_accepted() {
    let h = Harness::new().await;
    for (i, name) in [
        "a__b/c--d",
        "a.b_c-d/e---f",
        "0/1/2/3/4/5/6/7/8/9",
        "localhost__5000/app",
        "blobs/manifests/tags",
        "x/referrers/uploads",
    ]
    .iter()
    .enumerate()
    {
        let img = h
            .push_image(name, "latest", OCI_MANIFEST, 160 + i as u64)
            .await;
        check_served(&h, name, "latest", OCI_MANIFEST, &img.manifest).await;
        let t = h.get(&format!("/v2/{name}/tags/list")).await;
        t.expect(200);
        assert_eq!(t.json()["name"], *name);
    }
    // `host:port` in a path (older berth's spelling) is that mirror.
    let t = h.get("/v2/localhost:5000/app/tags/list").await;
    t.expect(200);
    assert_eq!(t.json()["name"], "localhost__5000/app");
    for bad in ["a___b", "a_-b", "a..b"] {
        h.get(&format!("/v2/{bad}/tags/list"))
            .await
            .expect_error(400, "NAME_INVALID");
    }
    h.assert_store_contained();
}

#[tokio::test]
async fn conformance_shaped_manifests_are_accepted() {
    let h = Harness::new().await;
    let repo = "conf/shapes";
    let config = b"{\"architecture\":\"amd64\",\"os\":\"linux\",\"x-custom\":1}".to_vec();
    let layer = pseudo_random(256, 170);
    h.push_blob(repo, &config).await;
    h.push_blob(repo, &layer).await;

    // Unknown fields everywhere, and a descriptor carrying its `data`.
    let mut cfg = descriptor(OCI_CONFIG, &config);
    cfg["data"] = json!(base64(&config));
    cfg["x-unknown"] = json!({"nested": true});
    let custom = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": cfg,
        "layers": [descriptor(OCI_LAYER, &layer)],
        "annotations": {"a": "b"},
        "org.example.custom": ["anything", 1, null],
    }))
    .unwrap();
    h.put_manifest(repo, "custom", OCI_MANIFEST, &custom)
        .await
        .expect(201);
    check_served(&h, repo, "custom", OCI_MANIFEST, &custom).await;

    // No mediaType in the body: the Content-Type says what it is.
    let untyped = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": [],
    }))
    .unwrap();
    h.put_manifest(repo, "untyped", OCI_MANIFEST, &untyped)
        .await
        .expect(201);
    check_served(&h, repo, "untyped", OCI_MANIFEST, &untyped).await;

    // An empty index, and an index of indexes.
    let empty = index_manifest(OCI_INDEX, &[], json!({}));
    h.put_manifest(repo, "empty-index", OCI_INDEX, &empty)
        .await
        .expect(201);
    let inner = index_manifest(OCI_INDEX, &[(OCI_MANIFEST, &custom)], json!({}));
    h.put_manifest(repo, &sha256(&inner).to_string(), OCI_INDEX, &inner)
        .await
        .expect(201);
    let outer = index_manifest(
        OCI_INDEX,
        &[(OCI_INDEX, &inner), (OCI_INDEX, &empty)],
        json!({"artifactType": "application/vnd.example.bundle"}),
    );
    h.put_manifest(repo, "nested", OCI_INDEX, &outer)
        .await
        .expect(201);
    check_served(&h, repo, "nested", OCI_INDEX, &outer).await;

    // Non-distributable layers with URLs need not be pushed.
    let nd = pseudo_random(64, 171);
    let nondist = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                "digest": sha256(&nd).to_string(),
                "size": 123456,
                "urls": ["https://store.example.com/blobs/x"],
            },
            descriptor(OCI_LAYER, &layer),
        ],
    }))
    .unwrap();
    h.put_manifest(repo, "nondist", OCI_MANIFEST, &nondist)
        .await
        .expect(201);

    // A ~3.9 MB manifest of annotations, as the conformance suite pushes.
    let mut annotations = serde_json::Map::new();
    for i in 0..390 {
        annotations.insert(format!("large-annotation-{i}"), json!("A".repeat(10_000)));
    }
    let large = image_manifest(
        OCI_MANIFEST,
        &config,
        std::slice::from_ref(&layer),
        json!({ "annotations": annotations }),
    );
    assert!(large.len() > 3_900_000 && large.len() < 4 * 1024 * 1024);
    h.put_manifest(repo, "large", OCI_MANIFEST, &large)
        .await
        .expect(201);
    check_served(&h, repo, "large", OCI_MANIFEST, &large).await;
}

/// Standard base64 with padding (for a descriptor's `data`).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn default_upstream_serves_missing_local_repositories() {
    let mut h = Harness::new().await;
    let storage = berth_storage::fs::FsStorage::open(&h.root).await.unwrap();
    let registry = std::sync::Arc::new(berth_registry::Registry::new(std::sync::Arc::new(storage)));
    let mut state = berth_api::ApiState::new(registry.clone());
    state.resolver = std::sync::Arc::new(berth_api::MirrorResolver::new(
        registry,
        Some("docker.io".to_string()),
    ));
    h.app = berth_api::router(state);

    let hub = h
        .push_image("docker.io/library/alpine", "3", OCI_MANIFEST, 180)
        .await;
    let team = h.push_image("team/app", "1", OCI_MANIFEST, 181).await;
    // A read of a name with no local repository goes to the default upstream.
    let r = h.get("/v2/alpine/manifests/3").await;
    r.expect(200);
    assert_eq!(&r.body[..], &hub.manifest[..]);
    let r = h.get("/v2/library/alpine/manifests/3").await;
    r.expect(200);
    // A local repository wins, and a mere prefix of one is not one.
    let r = h.get("/v2/team/app/manifests/1").await;
    assert_eq!(&r.body[..], &team.manifest[..]);
    h.get("/v2/team/tags/list").await.expect(404);
    // Writes stay local: once `alpine` exists locally, reads see it.
    let local = h.push_image("alpine", "3", OCI_MANIFEST, 182).await;
    let r = h.get("/v2/alpine/manifests/3").await;
    assert_eq!(&r.body[..], &local.manifest[..]);
}

/// A request body that delivers `bytes` and then fails, like a client
/// whose connection drops mid-upload.
fn broken_body(bytes: Vec<u8>) -> axum::body::Body {
    let items: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
        Ok(bytes::Bytes::from(bytes)),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ];
    axum::body::Body::from_stream(futures::stream::iter(items))
}

#[tokio::test]
async fn interrupted_chunk_can_be_resumed() {
    let h = Harness::new().await;
    let data = pseudo_random(40_000, 190);
    let d = sha256(&data);
    let loc = h.start_upload("repo").await;
    let r = h
        .request(Method::PATCH, &loc)
        .raw_body(broken_body(data[..15_000].to_vec()))
        .send()
        .await;
    assert!(
        r.status.is_client_error() || r.status.is_server_error(),
        "{r:?}"
    );
    assert_ne!(r.status.as_u16(), 202);
    // What arrived is kept: the client asks where to resume, and does.
    let s = h.get(&loc).await;
    s.expect(204);
    let end: usize = s.h("range").strip_prefix("0-").unwrap().parse().unwrap();
    assert_eq!(end, 14_999);
    let r = h
        .request(Method::PATCH, &loc)
        .header("content-range", format!("{}-39999", end + 1))
        .sized_body(data[end + 1..].to_vec())
        .send()
        .await;
    r.expect(202);
    h.request(Method::PUT, &format!("{loc}?digest={d}"))
        .send()
        .await
        .expect(201);
    let g = h.get(&format!("/v2/repo/blobs/{d}")).await;
    assert_eq!(&g.body[..], &data[..]);
}

#[tokio::test]
async fn interrupted_monolithic_upload_leaves_nothing() {
    let h = Harness::new().await;
    let data = pseudo_random(20_000, 191);
    let d = sha256(&data);
    let r = h
        .request(Method::POST, &format!("/v2/repo/blobs/uploads/?digest={d}"))
        .raw_body(broken_body(data[..5_000].to_vec()))
        .send()
        .await;
    assert!(
        r.status.is_client_error() || r.status.is_server_error(),
        "{r:?}"
    );
    json_error_code(&r);
    h.head(&format!("/v2/repo/blobs/{d}")).await.expect(404);
    assert!(h.files_under("blobs").is_empty());
    assert!(h.files_under("uploads").is_empty());
    assert!(h.files_under("docs/uploads").is_empty());
    assert!(h.files_under("tmp").is_empty());
    // An interrupted manifest push changes nothing either.
    let r = h
        .request(Method::PUT, "/v2/repo/manifests/t")
        .header("content-type", OCI_MANIFEST)
        .raw_body(broken_body(b"{\"schemaVersion\":2".to_vec()))
        .send()
        .await;
    assert!(
        r.status.is_client_error() || r.status.is_server_error(),
        "{r:?}"
    );
    h.get("/v2/repo/manifests/t").await.expect(404);
}

/// Denies every access to repositories under `secret/`.
struct DenySecret;

#[async_trait::async_trait]
impl berth_api::auth::Authorizer for DenySecret {
    async fn authorize(
        &self,
        _headers: &http::HeaderMap,
        access: &berth_api::auth::Access<'_>,
    ) -> Result<(), berth_api::error::ApiError> {
        match access.repository {
            Some(r) if r.as_str().starts_with("secret/") => Err(berth_api::error::ApiError::Denied),
            _ => Ok(()),
        }
    }
}

#[tokio::test]
async fn mount_needs_pull_access_to_from() {
    let mut h = Harness::new().await;
    let storage = berth_storage::fs::FsStorage::open(&h.root).await.unwrap();
    let registry = std::sync::Arc::new(berth_registry::Registry::new(std::sync::Arc::new(storage)));
    // Seed the secret repository directly through the registry.
    let data = b"secret layer".to_vec();
    let d = sha256(&data);
    let secret: berth_reference::RepositoryName = "secret/app".parse().unwrap();
    let body: berth_registry::ByteStream = Box::pin(futures::stream::iter(vec![Ok(
        bytes::Bytes::from(data.clone()),
    )]));
    registry.blob_put(&secret, &d, body).await.unwrap();
    let mut state = berth_api::ApiState::new(registry);
    state.authorizer = std::sync::Arc::new(DenySecret);
    h.app = berth_api::router(state);

    h.get(&format!("/v2/secret/app/blobs/{d}"))
        .await
        .expect_error(403, "DENIED");
    // The mount is not made: a session is opened instead.
    let r = h
        .post(&format!(
            "/v2/mine/blobs/uploads/?mount={d}&from=secret/app"
        ))
        .await;
    r.expect(202);
    h.head(&format!("/v2/mine/blobs/{d}")).await.expect(404);
    // Uploading the bytes themselves is, of course, fine.
    h.push_blob("mine", &data).await;
    h.get(&format!("/v2/mine/blobs/{d}")).await.expect(200);
}

#[tokio::test]
async fn metrics_count_requests_by_method_and_status() {
    let h = Harness::new().await;
    h.get("/v2/").await.expect(200);
    h.get(&format!("/v2/x/blobs/{EMPTY_SHA256}"))
        .await
        .expect(404);
    // Without an Accept for OpenMetrics: the classic text format 0.0.4.
    let r = h.get("/metrics").await;
    r.expect(200);
    let text = r.text();
    assert!(
        r.h("content-type").starts_with("text/plain; version=0.0.4"),
        "{r:?}"
    );
    for needle in [
        "# TYPE berth_http_requests_total counter",
        "# TYPE process_cpu_seconds_total counter",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "berth_http_requests_total{",
        "status=\"200\"",
        "status=\"404\"",
        "berth_http_response_head_seconds",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert!(!text.contains("# EOF"), "{text}");
    // What Prometheus asks for first: OpenMetrics.
    let r = h
        .request(http::Method::GET, "/metrics")
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3",
        )
        .send()
        .await;
    r.expect(200);
    assert!(
        r.h("content-type")
            .starts_with("application/openmetrics-text"),
        "{r:?}"
    );
    let text = r.text();
    assert!(
        text.contains("# TYPE berth_http_requests counter"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
}

#[tokio::test]
async fn large_blob_chunks_and_ranges_across_buffer_boundaries() {
    let h = Harness::new().await;
    let len = 3 * 1024 * 1024 + 12_345;
    let data = pseudo_random(len, 210);
    let d = sha256(&data);
    let mut loc = h.start_upload("big").await;
    let chunk = 700_001;
    let mut start = 0;
    while start < len {
        let end = (start + chunk).min(len) - 1;
        let r = h
            .request(Method::PATCH, &loc)
            .header("content-range", format!("{start}-{end}"))
            .sized_body(data[start..=end].to_vec())
            .send()
            .await;
        r.expect(202);
        assert_eq!(r.h("range"), format!("0-{end}"));
        loc = r.h("location").to_string();
        start = end + 1;
    }
    h.request(Method::PUT, &format!("{loc}?digest={d}"))
        .send()
        .await
        .expect(201);
    let g = h.get(&format!("/v2/big/blobs/{d}")).await;
    g.expect(200);
    assert!(g.body[..] == data[..], "whole blob differs");
    for (a, b) in [
        (0usize, 0usize),
        (262_143, 262_144),
        (262_100, 524_400),
        (1_048_575, 2_097_152),
        (len - 1, len - 1),
        (1, len - 2),
    ] {
        let r = h
            .request(Method::GET, &format!("/v2/big/blobs/{d}"))
            .header("range", format!("bytes={a}-{b}"))
            .send()
            .await;
        r.expect(206);
        assert_eq!(r.h("content-range"), format!("bytes {a}-{b}/{len}"));
        assert!(r.body[..] == data[a..=b], "range {a}-{b} differs");
    }
}
