//! `kill -9` in the middle of large uploads, then a restart on the same root:
//! nothing partial becomes visible, the blob store holds only complete,
//! verified blobs, upload sessions survive with their offsets, and the
//! uploads can be finished (resumed or redone) afterwards.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const BIG: usize = 64 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;

/// Every file under `root/blobs` must be complete: its bytes hash to its name.
fn assert_blob_store_complete(root: &Path) {
    let blobs = root.join("blobs");
    let mut stack = vec![blobs.clone()];
    let mut checked = 0;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&blobs).unwrap();
            let alg = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .into_owned();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert_eq!(
                alg,
                "sha256",
                "unexpected file in the blob store: {}",
                path.display()
            );
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(
                sha256(&bytes),
                format!("sha256:{name}"),
                "partial or corrupt blob in the store: {}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked < 10_000);
    // Temporary files are never left behind after a (re)start.
    let tmp = root.join("tmp");
    if tmp.exists() {
        let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
        assert!(left.is_empty(), "files left in {}: {left:?}", tmp.display());
    }
}

fn blob_file(root: &Path, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    root.join("blobs").join("sha256").join(&hex[..2]).join(hex)
}

/// Parse `Range: 0-N` into the number of bytes received (N+1).
fn received(r: &Resp) -> u64 {
    let range = r
        .header("range")
        .unwrap_or_else(|| panic!("no Range header\n{}", r.describe()));
    let end: u64 = range
        .strip_prefix("0-")
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| panic!("bad Range {range:?}\n{}", r.describe()));
    end + 1
}

/// Start sending `method path` with a body of `data.len()` bytes over a raw
/// socket, but stop after `send` bytes and hold the connection open until told
/// to stop (or 120 s pass). Returns the stop signal and the writer thread.
fn start_partial_request(
    server: &Server,
    method: &str,
    path_and_query: &str,
    data: std::sync::Arc<Vec<u8>>,
    send: usize,
) -> (mpsc::Sender<()>, std::thread::JoinHandle<usize>) {
    let mut stream = TcpStream::connect(server.addr()).expect("connect to berth");
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        server.host(),
        data.len()
    );
    stream
        .write_all(head.as_bytes())
        .expect("send request head");
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let handle = std::thread::spawn(move || {
        let mut sent = 0;
        for chunk in data[..send].chunks(256 * 1024) {
            if stream.write_all(chunk).is_err() {
                return sent;
            }
            sent += chunk.len();
        }
        let _ = stream.flush();
        // Hold the request open, unfinished, until the server is killed.
        let _ = stop_rx.recv_timeout(Duration::from_secs(120));
        sent
    });
    (stop_tx, handle)
}

fn path_of(server: &Server, url: &str) -> String {
    url.strip_prefix(&server.url())
        .expect("URL on this server")
        .to_string()
}

/// Poll the upload status until at least `min` bytes are on disk (bounded).
fn wait_for_offset(session: &str, min: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    for _ in 0..2400 {
        let r = curl("GET", session).send();
        r.expect_status(204);
        let got = received(&r);
        if got >= min {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "upload never reached {min} bytes (at {got})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("upload never reached {min} bytes");
}

#[test]
fn kill9_mid_patch_then_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let data = std::sync::Arc::new(pseudo_random(BIG, 77));
    let digest = sha256(&data);
    let small = pseudo_random(3 * MIB as usize, 78);
    let small_digest = sha256(&small);

    let mut server = Server::start_on(&root);
    let base = server.url();

    // Session A: one complete 1 MiB chunk before the crash.
    let post = curl("POST", &format!("{base}/v2/team/app/blobs/uploads/")).send();
    post.expect_status(202);
    let session_a = post.location(&base);
    let p = curl("PATCH", &session_a)
        .header("Content-Range", &format!("0-{}", MIB - 1))
        .body(small[..MIB as usize].to_vec())
        .send();
    p.expect_status(202);
    assert_eq!(received(&p), MIB);

    // Session B: a 64 MiB PATCH, killed half-way.
    let post = curl("POST", &format!("{base}/v2/team/app/blobs/uploads/")).send();
    post.expect_status(202);
    let session_b = post.location(&base);
    let (stop, writer) = start_partial_request(
        &server,
        "PATCH",
        &path_of(&server, &session_b),
        data.clone(),
        BIG / 2,
    );
    wait_for_offset(&session_b, 8 * MIB);
    server.kill9();
    let _ = stop.send(());
    let sent = writer.join().unwrap();
    assert!(sent >= 8 * MIB as usize);

    drop(server);
    let server = Server::start_on(&root);
    let base = server.url();

    // Nothing of the interrupted blob is visible, and nothing partial is stored.
    curl("HEAD", &format!("{base}/v2/team/app/blobs/{digest}"))
        .send()
        .expect_status(404);
    curl("GET", &format!("{base}/v2/team/app/blobs/{digest}"))
        .send()
        .expect_error(404, "BLOB_UNKNOWN");
    assert!(!blob_file(&root, &digest).exists());
    assert_blob_store_complete(&root);

    // Session A survived with its offset and can be finished.
    let session_a = session_a.replace(&post_base(&session_a), &base);
    let s = curl("GET", &session_a).send();
    s.expect_status(204);
    assert_eq!(
        received(&s),
        MIB,
        "session A lost its offset across the restart"
    );
    let next = s.location(&base);
    let put = curl("PUT", &with_query(&next, &format!("digest={small_digest}")))
        .header("Content-Range", &format!("{}-{}", MIB, small.len() - 1))
        .body(small[MIB as usize..].to_vec())
        .send();
    put.expect_status(201);
    let got = curl("GET", &format!("{base}/v2/team/app/blobs/{small_digest}")).send();
    got.expect_status(200);
    assert!(got.body == small, "resumed blob differs");

    // Session B survived too, with a prefix of what was sent.
    let session_b = session_b.replace(&post_base(&session_b), &base);
    let s = curl("GET", &session_b).send();
    s.expect_status(204);
    let offset = received(&s);
    assert!(
        offset as usize <= sent,
        "server claims {offset} bytes, only {sent} were sent"
    );

    // The same upload redone from scratch succeeds.
    let r = curl(
        "POST",
        &format!("{base}/v2/team/app/blobs/uploads/?digest={digest}"),
    )
    .body(data.to_vec())
    .send();
    r.expect_status(201)
        .expect_header("Docker-Content-Digest", &digest);
    let head = curl("HEAD", &format!("{base}/v2/team/app/blobs/{digest}")).send();
    head.expect_status(200)
        .expect_header("Content-Length", &BIG.to_string());

    // And the interrupted session can be resumed from its offset to the same blob.
    let resume = curl("PATCH", &s.location(&base))
        .header("Content-Range", &format!("{offset}-{}", BIG - 1))
        .body(data[offset as usize..].to_vec())
        .send();
    resume.expect_status(202);
    assert_eq!(received(&resume), BIG as u64);
    curl(
        "PUT",
        &with_query(&resume.location(&base), &format!("digest={digest}")),
    )
    .send()
    .expect_status(201);
    assert_blob_store_complete(&root);
}

/// `http://127.0.0.1:PORT` of an absolute URL.
fn post_base(url: &str) -> String {
    let rest = url.strip_prefix("http://").expect("http URL");
    let host = rest.split('/').next().unwrap();
    format!("http://{host}")
}

#[test]
fn kill9_mid_monolithic_put_then_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let data = std::sync::Arc::new(pseudo_random(BIG, 79));
    let digest = sha256(&data);

    let mut server = Server::start_on(&root);
    let base = server.url();
    let post = curl("POST", &format!("{base}/v2/team/mono/blobs/uploads/")).send();
    post.expect_status(202);
    let session = post.location(&base);
    let put_path = with_query(&path_of(&server, &session), &format!("digest={digest}"));
    let (stop, writer) = start_partial_request(&server, "PUT", &put_path, data.clone(), BIG - 4096);
    wait_for_offset(&session, 16 * MIB);
    server.kill9();
    let _ = stop.send(());
    writer.join().unwrap();

    drop(server);
    let server = Server::start_on(&root);
    let base = server.url();
    curl("HEAD", &format!("{base}/v2/team/mono/blobs/{digest}"))
        .send()
        .expect_status(404);
    assert!(!blob_file(&root, &digest).exists());
    assert_blob_store_complete(&root);
    // Nothing was published into the repository either.
    let r = curl("GET", &format!("{base}/v2/_catalog")).send();
    r.expect_status(200);

    // Redo from scratch with POST then PUT.
    push_blob(&server, "team/mono", &data);
    let got = curl("GET", &format!("{base}/v2/team/mono/blobs/{digest}")).send();
    got.expect_status(200);
    assert!(got.body == *data);
    assert_blob_store_complete(&root);
}

#[test]
fn restart_keeps_pushed_content() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut server = Server::start_on(&root);
    let (digest, bytes) = push_small_image(&server, "team/keep", "v1", 80);
    server.kill9();
    drop(server);
    let server = Server::start_on(&root);
    let r = curl(
        "GET",
        &format!("{}/v2/team/keep/manifests/v1", server.url()),
    )
    .header("Accept", OCI_MANIFEST)
    .send();
    r.expect_status(200)
        .expect_header("Docker-Content-Digest", &digest);
    assert_eq!(r.body, bytes);
    let cat = curl("GET", &format!("{}/v2/_catalog", server.url())).send();
    assert_eq!(cat.json()["repositories"], serde_json::json!(["team/keep"]));
    assert_eq!(
        curl("GET", &format!("{}/v2/team/keep/tags/list", server.url()))
            .send()
            .json()["tags"],
        serde_json::json!(["v1"])
    );
}

/// `kill -9` the instant a PATCH is answered 202, 20 times: after each
/// restart the session holds every acknowledged byte (status says so), and
/// the upload completes to the right digest. Before a 202 waited for the
/// chunk's writes, this lost acknowledged bytes in 18 of 20 trials.
#[test]
fn kill9_right_after_a_202_loses_no_acknowledged_byte() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let deadline = Instant::now() + Duration::from_secs(240);
    for trial in 0..20u64 {
        assert!(Instant::now() < deadline, "20 trials took over 240 s");
        let mut server = Server::start_on(&root);
        let chunk = (3 * MIB) as usize;
        let data = pseudo_random(2 * chunk, 5000 + trial);
        let post = curl(
            "POST",
            &format!("{}/v2/team/ack/blobs/uploads/", server.url()),
        )
        .send();
        post.expect_status(202);
        let session = post.location(&server.url());
        let path = path_of(&server, &session);
        curl("PATCH", &session)
            .header("Content-Range", &format!("0-{}", chunk - 1))
            .body(data[..chunk].to_vec())
            .send()
            .expect_status(202);
        server.kill9();

        let server = Server::start_on(&root);
        let session = format!("{}{path}", server.url());
        let status = curl("GET", &session).send();
        status.expect_status(204);
        assert_eq!(
            received(&status),
            chunk as u64,
            "trial {trial}: acknowledged bytes lost across kill -9"
        );
        let put = with_query(&session, &format!("digest={}", sha256(&data)));
        curl("PUT", &put)
            .header("Content-Range", &format!("{chunk}-{}", data.len() - 1))
            .body(data[chunk..].to_vec())
            .send()
            .expect_status(201);
        drop(server);
    }
    assert_blob_store_complete(&root);
}
