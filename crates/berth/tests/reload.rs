//! SIGHUP reloads the configuration (issue 14): an upstream moved to
//! another registry, a policy that now lets a user push, both in effect
//! without a restart and without dropping an open connection; a
//! configuration that does not load changes nothing. Upstreams are two
//! Distribution registries on loopback; the client of the policy check is
//! skopeo.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const UP: &str = "registry.reload.test";

fn config(up: &str, htpasswd: &Path, writer_may_push: bool, extra: &str) -> String {
    let push = if writer_may_push {
        "[[policy]]\nrepositories = [\"team/**\"]\nsubjects = [\"writer\"]\nactions = [\"push\"]\n"
    } else {
        ""
    };
    format!(
        r#"{extra}
[auth]
htpasswd = "{}"

[[policy]]
repositories = ["**"]
subjects = ["anonymous"]
actions = ["pull"]

{push}
[upstreams."{UP}"]
url = "{up}"
"#,
        htpasswd.display()
    )
}

/// Send SIGHUP and wait for the server to say what became of it.
fn hup(server: &Server, expect: &str) {
    let before = server.log().matches(expect).count();
    run(Command::new("kill").args(["-HUP", &server.pid().to_string()]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.log().matches(expect).count() == before {
        assert!(
            Instant::now() < deadline,
            "no {expect:?} after SIGHUP\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One `GET /v2/` on an open keep-alive connection: the status (401, the
/// challenge, since access control is on).
fn get_base(conn: &mut BufReader<TcpStream>, host: &str) -> u16 {
    write!(conn.get_mut(), "GET /v2/ HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    let mut status = String::new();
    conn.read_line(&mut status).unwrap();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    conn.read_exact(&mut body).unwrap();
    status.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn sighup_reloads_upstreams_and_policies_without_dropping_connections() {
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let (first, second) = (Distribution::start(), Distribution::start());
    let layout = Layout::create(&s.join("layout"));
    let only_second = layout.add_image(
        "v1",
        "amd64",
        &[tar_layer(&[TarEntry {
            name: "f",
            data: b"on the second registry only\n",
        }])],
    );
    second.push(s, &layout.oci_ref("v1"), "team/moved:v1", None);
    require_tool("htpasswd");
    let ht = s.join("htpasswd");
    run(Command::new("htpasswd")
        .args(["-Bbc"])
        .arg(&ht)
        .args(["writer", "pw-12345"]));
    let file = s.join("berth.toml");
    std::fs::write(&file, config(&first.url(), &ht, false, "")).unwrap();
    let server = Server::start_with(&["--config".into(), file.display().to_string()]);

    let mut conn = BufReader::new(TcpStream::connect(server.addr()).unwrap());
    assert_eq!(get_base(&mut conn, &server.host()), 401);
    let manifest = format!("{}/v2/{UP}/team/moved/manifests/v1", server.url());
    let ask = || curl("GET", &manifest).header("Accept", OCI_MANIFEST).send();
    assert_eq!(ask().status, 404, "the first upstream has no such image");
    let push = |tag: &str| {
        run_unchecked(skopeo(s).args([
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "writer:pw-12345",
            &layout.oci_ref("v1"),
            &format!("docker://{}/team/app:{tag}", server.host()),
        ]))
    };
    assert!(!push("before").status.success(), "pushed without the rule");

    std::fs::write(&file, config(&second.url(), &ht, true, "")).unwrap();
    hup(&server, "configuration reloaded");
    let r = ask();
    r.expect_status(200);
    r.expect_header("Docker-Content-Digest", &only_second.manifest_digest);
    let out = push("after");
    assert!(out.status.success(), "{}\n{}", out.describe(), server.log());
    // The connection opened before the reload still answers.
    assert_eq!(get_base(&mut conn, &server.host()), 401);

    // A configuration that does not load: logged, and nothing changes.
    std::fs::write(
        &file,
        config(&first.url(), &ht, false, "tag_ttl = \"soon\""),
    )
    .unwrap();
    hup(&server, "configuration not reloaded");
    assert!(push("still").status.success(), "the old policy was lost");
    assert_eq!(get_base(&mut conn, &server.host()), 401);
}
