//! Blob GETs sent by `sendfile` (zero-copy) over plain HTTP/1.1: the bytes
//! are exactly the blob's, for whole blobs and ranges, on kept-alive and
//! pipelined connections mixing blobs with other answers, after a client
//! dropped mid-body, and for a cache hit; HTTP/2 and TLS, which cannot use
//! it, stream the same bytes. `berth_blob_sendfile_bytes_total` tells which
//! path each GET took.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;

/// Over a MiB a few times, and not a multiple of the placeholder frame.
const BLOB_LEN: usize = 5 * 1024 * 1024 + 12_345;

fn sendfile_bytes(server: &Server) -> u64 {
    let resp = curl("GET", &format!("{}/metrics", server.url())).send();
    resp.expect_status(200);
    resp.body_str()
        .lines()
        .find_map(|l| l.strip_prefix("berth_blob_sendfile_bytes_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no sendfile counter in /metrics:\n{}", resp.body_str()))
}

fn get(url: &str, range: Option<&str>) -> Resp {
    let mut req = curl("GET", url);
    if let Some(r) = range {
        req = req.header("Range", r);
    }
    req.send()
}

#[test]
fn whole_blobs_and_ranges_go_by_sendfile_and_arrive_exact() {
    let server = Server::start();
    let blob = pseudo_random(BLOB_LEN, 7);
    let digest = push_blob(&server, "zc/app", &blob);
    let url = format!("{}/v2/zc/app/blobs/{digest}", server.url());
    let before = sendfile_bytes(&server);

    let whole = get(&url, None);
    whole.expect_status(200);
    assert_eq!(whole.body.len(), blob.len());
    assert!(whole.body == blob, "the whole blob differs");
    whole.expect_header("content-length", &blob.len().to_string());
    let mut sent = blob.len() as u64;

    let last = blob.len() - 1;
    let mib = 1024 * 1024;
    for (start, end) in [
        (0, 0),
        (0, mib - 1),
        (mib - 1, mib),
        (1000, 3_000_000),
        (last, last),
        (mib, last),
    ] {
        let resp = get(&url, Some(&format!("bytes={start}-{end}")));
        resp.expect_status(206);
        resp.expect_header(
            "content-range",
            &format!("bytes {start}-{end}/{}", blob.len()),
        );
        assert!(
            resp.body == blob[start..=end],
            "range {start}-{end}: {} bytes, not the blob's",
            resp.body.len()
        );
        sent += (end - start + 1) as u64;
    }
    let suffix = get(&url, Some("bytes=-100"));
    suffix.expect_status(206);
    assert!(suffix.body == blob[blob.len() - 100..]);
    sent += 100;
    assert_eq!(
        sendfile_bytes(&server) - before,
        sent,
        "every byte of these GETs went by sendfile"
    );

    // HTTP/2 (prior knowledge on plain TCP) frames its own data: streamed.
    let before = sendfile_bytes(&server);
    let scratch = tempfile::tempdir().unwrap();
    let out = scratch.path().join("h2");
    let h2 = run(Command::new("curl")
        .args(["-sS", "--noproxy", "*", "--http2-prior-knowledge"])
        .args(["-w", "%{http_version} %{http_code}", "-o"])
        .arg(&out)
        .arg(&url));
    assert_eq!(h2.stdout_str().trim(), "2 200");
    assert!(std::fs::read(&out).unwrap() == blob, "HTTP/2 bytes differ");
    assert_eq!(sendfile_bytes(&server), before, "HTTP/2 used sendfile");
}

/// Requests one after another on one kept-alive connection, blobs mixed
/// with a range, a HEAD, a manifest and an error: each answer is whole and
/// in its place (the placeholder bytes of one response never leak into the
/// next).
#[test]
fn one_connection_mixes_sendfile_bodies_with_other_answers() {
    let server = Server::start();
    let blob = pseudo_random(BLOB_LEN, 8);
    let digest = push_blob(&server, "zc/mixed", &blob);
    let (manifest_digest, manifest) = push_small_image(&server, "zc/mixed", "v1", 3);
    let base = format!("{}/v2/zc/mixed", server.url());
    let scratch = tempfile::tempdir().unwrap();
    let out = |n: usize| scratch.path().join(format!("out{n}"));
    let missing = format!("sha256:{}", "0".repeat(64));
    let transfers: Vec<(Vec<String>, String)> = vec![
        (vec![], format!("{base}/blobs/{digest}")),
        (
            vec!["-r".into(), "10-20".into()],
            format!("{base}/blobs/{digest}"),
        ),
        (
            vec![
                "-H".into(),
                "Accept: application/vnd.oci.image.manifest.v1+json".into(),
            ],
            format!("{base}/manifests/v1"),
        ),
        (vec!["-I".into()], format!("{base}/blobs/{digest}")),
        (vec![], format!("{base}/blobs/{missing}")),
        (vec![], format!("{base}/blobs/{digest}")),
    ];
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--noproxy", "*", "--http1.1"]);
    for (i, (args, url)) in transfers.iter().enumerate() {
        if i > 0 {
            cmd.arg("--next");
        }
        cmd.args(args)
            .args(["-w", "%{num_connects} %{http_code}\\n", "-o"])
            .arg(out(i))
            .arg(url);
    }
    let o = run(&mut cmd);
    let lines: Vec<String> = o.stdout_str().lines().map(str::to_string).collect();
    assert_eq!(
        lines,
        ["1 200", "0 206", "0 200", "0 200", "0 404", "0 200"],
        "one connection, each status in order"
    );
    let read = |i: usize| std::fs::read(out(i)).unwrap();
    assert!(read(0) == blob && read(5) == blob, "a whole blob differs");
    assert_eq!(read(1), &blob[10..=20]);
    assert_eq!(read(2), manifest);
    assert_eq!(sha256(&read(2)), manifest_digest);
    assert!(String::from_utf8_lossy(&read(4)).contains("BLOB_UNKNOWN"));
}

/// Several requests written at once (HTTP/1.1 pipelining): the answers come
/// back in order, each exactly its length.
#[test]
fn pipelined_requests_get_their_own_bytes() {
    let server = Server::start();
    let blob = pseudo_random(BLOB_LEN, 9);
    let digest = push_blob(&server, "zc/pipe", &blob);
    let path = format!("/v2/zc/pipe/blobs/{digest}");
    let host = server.host();
    let requests = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nRange: bytes=100-199\r\n\r\n\
         GET /v2/ HTTP/1.1\r\nHost: {host}\r\n\r\n\
         GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n\
         GET {path} HTTP/1.1\r\nHost: {host}\r\nRange: bytes=4000000-\r\nConnection: close\r\n\r\n"
    );
    let mut tcp = TcpStream::connect(server.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    tcp.write_all(requests.as_bytes()).unwrap();
    let mut got = Vec::new();
    tcp.read_to_end(&mut got).unwrap();

    let mut rest = &got[..];
    let mut bodies = Vec::new();
    while !rest.is_empty() {
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head");
        let head = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .expect("content-length");
        let status = head.get(9..12).unwrap_or_default().to_string();
        bodies.push((status, rest[end + 4..end + 4 + len].to_vec()));
        rest = &rest[end + 4 + len..];
    }
    assert_eq!(bodies.len(), 4, "four answers");
    assert_eq!(bodies[0].0, "206");
    assert_eq!(bodies[0].1, &blob[100..200]);
    assert_eq!(
        (bodies[1].0.as_str(), &bodies[1].1[..]),
        ("200", &b"{}"[..])
    );
    assert_eq!(bodies[2].0, "200");
    assert!(bodies[2].1 == blob);
    assert_eq!(bodies[3].0, "206");
    assert!(bodies[3].1 == blob[4_000_000..]);
}

/// A client that hangs up mid-body costs nothing but its connection: the
/// server goes on sending the blob, whole, to the next.
#[test]
fn a_client_dropping_mid_body_leaves_the_next_one_whole() {
    let server = Server::start();
    let blob = pseudo_random(BLOB_LEN, 10);
    let digest = push_blob(&server, "zc/drop", &blob);
    let path = format!("/v2/zc/drop/blobs/{digest}");
    for _ in 0..5 {
        let mut tcp = TcpStream::connect(server.addr()).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            tcp,
            "GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n",
            server.host()
        )
        .unwrap();
        let mut buf = vec![0u8; 200_000];
        let mut n = 0;
        while n < buf.len() {
            match tcp.read(&mut buf[n..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        assert!(n > 0, "nothing received");
        drop(tcp);
    }
    let resp = get(&format!("{}{path}", server.url()), None);
    resp.expect_status(200);
    assert!(
        resp.body == blob,
        "the blob after the dropped clients differs"
    );
}

/// A blob the cache holds goes by sendfile too, and so do the bytes of one
/// still being downloaded, to every client following the fill as they land
/// (two whole GETs and two ranges started together on a cold 24 MiB blob).
#[test]
fn cache_fills_and_hits_go_by_sendfile() {
    const UP: &str = "registry.upstream.test";
    let up = Server::start();
    let blob = pseudo_random(24 << 20, 11);
    let digest = push_blob(&up, "team/app", &blob);
    let mirror = Server::start_with(&[format!("--upstream={UP}={}", up.url())]);
    let url = format!("{}/v2/{UP}/team/app/blobs/{digest}", mirror.url());

    let before = sendfile_bytes(&mirror);
    let ranges: [Option<(usize, usize)>; 4] = [
        None,
        Some((3, 9_000_000)),
        None,
        Some((20 << 20, (24 << 20) - 1)),
    ];
    let results: Vec<Resp> = std::thread::scope(|s| {
        let handles: Vec<_> = ranges
            .iter()
            .map(|r| {
                let url = url.clone();
                s.spawn(move || get(&url, r.map(|(a, b)| format!("bytes={a}-{b}")).as_deref()))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client"))
            .collect()
    });
    let mut expected = 0u64;
    for (r, resp) in ranges.iter().zip(&results) {
        match r {
            None => {
                resp.expect_status(200);
                assert!(resp.body == blob, "a whole GET during the fill differs");
            }
            Some((a, b)) => {
                resp.expect_status(206);
                assert!(
                    resp.body == blob[*a..=*b],
                    "range {a}-{b} during the fill differs"
                );
            }
        }
        expected += resp.body.len() as u64;
    }
    let after_fill = sendfile_bytes(&mirror);
    assert_eq!(
        after_fill - before,
        expected,
        "the fill's clients were not sent by sendfile"
    );
    assert_eq!(
        mirror.metric("berth_cache_upstream_requests_total"),
        1.0,
        "one upstream GET"
    );

    let hit = get(&url, Some("bytes=1-1048576"));
    hit.expect_status(206);
    assert!(hit.body == blob[1..=1_048_576]);
    let hit = get(&url, None);
    hit.expect_status(200);
    assert!(hit.body == blob, "the cached blob's bytes differ");
    assert_eq!(
        sendfile_bytes(&mirror) - after_fill,
        1_048_576 + blob.len() as u64,
        "the hits went by sendfile"
    );
}

/// TLS encrypts in user space: the same bytes, streamed, no sendfile.
#[test]
fn over_tls_the_same_bytes_are_streamed() {
    let server = Server::start_tls_user();
    let blob = pseudo_random(BLOB_LEN, 12);
    let digest = push_blob(&server, "zc/tls", &blob);
    let url = format!("{}/v2/zc/tls/blobs/{digest}", server.url());
    let whole = get(&url, None);
    whole.expect_status(200);
    assert!(whole.body == blob);
    let part = get(&url, Some("bytes=5-5000000"));
    part.expect_status(206);
    assert!(part.body == blob[5..=5_000_000]);
    assert_eq!(sendfile_bytes(&server), 0, "TLS used sendfile");
}
