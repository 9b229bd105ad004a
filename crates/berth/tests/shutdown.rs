//! Graceful shutdown: SIGTERM lets an upload in flight finish, then berth
//! exits cleanly, and what it received is there after a restart.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn sigterm_lets_an_upload_in_flight_finish() {
    require_tool("curl");
    let mut server = Server::start();
    let base = server.url();
    let started = curl("POST", &format!("{base}/v2/team/slow/blobs/uploads/")).send();
    started.expect_status(202);
    let location = started.location(&base);

    let body = pseudo_random(3 << 20, 7);
    let digest = sha256(&body);
    let scratch = tempfile::tempdir().expect("scratch");
    let file = scratch.path().join("chunk");
    std::fs::write(&file, &body).expect("write chunk");
    // 3 MiB at 1 MiB/s: the request is mid-flight when SIGTERM arrives.
    let upload = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--limit-rate",
            "1M",
            "-X",
            "PATCH",
        ])
        .args([
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
        ])
        .arg(format!("@{}", file.display()))
        .arg(&location)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn curl");
    std::thread::sleep(Duration::from_millis(800));
    let status = server.terminate(Duration::from_secs(25));
    let out = upload.wait_with_output().expect("curl finished");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "202",
        "the in-flight PATCH completed"
    );
    assert!(
        status.success(),
        "berth exited cleanly after SIGTERM: {status}"
    );

    let root = server.root.clone();
    let restarted = Server::start_on(&root);
    let moved = absolute(&restarted.url(), &location.replace(&base, ""));
    let status = curl("GET", &moved).send();
    status
        .expect_status(204)
        .expect_header("range", &format!("0-{}", body.len() - 1));
    curl("PUT", &with_query(&moved, &format!("digest={digest}")))
        .send()
        .expect_status(201);
    let blob = curl(
        "GET",
        &format!("{}/v2/team/slow/blobs/{digest}", restarted.url()),
    )
    .send();
    blob.expect_status(200);
    assert_eq!(sha256(&blob.body), digest);
}
