//! `berth sync` (issue 12): whole repositories by tag pattern, in text and
//! in skopeo sync's YAML, into a berth and into a plain registry under a
//! prefix; incremental (a second run moves no blob, and a moved tag is all
//! a third run copies), a dry run copies nothing, and a repository that
//! fails does not stop the others. The source is Debian's Distribution
//! 2.8, whose access log counts what really crossed the wire.

mod common;

use std::process::Command;

use common::*;

const SOURCE: &str = "registry.sync.test";

fn berth_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.args(args);
    c
}

fn tags(server_url: &str, repo: &str) -> Vec<String> {
    let r = curl("GET", &format!("{server_url}/v2/{repo}/tags/list")).send();
    r.expect_status(200);
    let mut t: Vec<String> = r.json()["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    t.sort();
    t
}

fn blob_gets(up: &Distribution) -> usize {
    up.request_lines()
        .iter()
        .filter(|l| l.starts_with("GET /v2/") && l.contains("/blobs/"))
        .count()
}

#[test]
fn sync_copies_matching_tags_incrementally() {
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let up = Distribution::start();
    let layout = Layout::create(&s.join("layout"));
    for (i, tag) in ["v1", "v2", "edge", "v3"].iter().enumerate() {
        layout.add_image(
            tag,
            "amd64",
            &[tar_layer(&[TarEntry {
                name: "f",
                data: format!("content {i}\n").as_bytes(),
            }])],
        );
    }
    for tag in ["v1", "v2", "edge"] {
        up.push(s, &layout.oci_ref(tag), &format!("team/app:{tag}"), None);
    }
    let dest = Server::start();
    let list = s.join("list.txt");
    std::fs::write(
        &list,
        format!("# what the site needs\n{SOURCE}/team/app:v*\n"),
    )
    .unwrap();
    let upstream = format!("{SOURCE}={}", up.url());
    let sync = |extra: &[&str]| {
        let mut args = vec!["sync", list.to_str().unwrap(), "--to"];
        let to = dest.host();
        args.push(&to);
        args.extend(["--upstream", &upstream]);
        args.extend(extra);
        run(&mut berth_cmd(&args))
    };

    let dry = sync(&["--dry-run"]);
    assert!(dry.stderr.contains("2 to copy"), "{}", dry.describe());
    let r = curl("GET", &format!("{}/v2/_catalog", dest.url())).send();
    assert_eq!(r.json()["repositories"], serde_json::json!([]));

    let first = sync(&[]);
    assert!(
        first.stderr.contains("2 copied, 0 unchanged"),
        "{}",
        first.describe()
    );
    let repo = format!("{SOURCE}/team/app");
    assert_eq!(tags(&dest.url(), &repo), ["v1", "v2"]);

    let before = blob_gets(&up);
    assert!(before > 0, "the first sync read no blob?");
    let second = sync(&[]);
    assert!(
        second.stderr.contains("0 copied, 2 unchanged"),
        "{}",
        second.describe()
    );
    assert_eq!(blob_gets(&up), before, "an unchanged sync read blobs");

    // v2 moves to another image and v3 appears: only those two are copied.
    up.push(s, &layout.oci_ref("v3"), "team/app:v2", None);
    up.push(s, &layout.oci_ref("v3"), "team/app:v3", None);
    let third = sync(&["--output", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&third.stdout).unwrap();
    let outcome = |tag: &str| {
        report
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["source"] == format!("{SOURCE}/team/app:{tag}"))
            .map(|t| t["outcome"].as_str().unwrap().to_string())
    };
    assert_eq!(outcome("v1").as_deref(), Some("unchanged"), "{report}");
    assert_eq!(outcome("v2").as_deref(), Some("copied"), "{report}");
    assert_eq!(outcome("v3").as_deref(), Some("copied"), "{report}");
    let v2 = curl("GET", &format!("{}/v2/{repo}/manifests/v2", dest.url()))
        .header("Accept", OCI_MANIFEST)
        .send();
    v2.expect_header("Docker-Content-Digest", &layout.manifest("v3").0);

    // skopeo's YAML, into a plain registry under a prefix; a repository
    // that does not exist fails alone.
    let plain = Distribution::start();
    let yaml = s.join("sync.yaml");
    std::fs::write(
        &yaml,
        format!(
            "{SOURCE}:\n  images:\n    team/app: [\"edge\"]\n    team/missing: []\n  images-by-tag-regex:\n    team/app: ^v[12]$\n"
        ),
    )
    .unwrap();
    let out = run_unchecked(&mut berth_cmd(&[
        "sync",
        yaml.to_str().unwrap(),
        "--to",
        &format!("{}/mirror", plain.host()),
        "--upstream",
        &upstream,
    ]));
    assert_eq!(out.status.code(), Some(8), "{}", out.describe());
    assert!(out.stderr.contains("FAILED"), "{}", out.describe());
    assert!(out.stderr.contains("3 copied"), "{}", out.describe());
    assert_eq!(
        tags(&plain.url(), &format!("mirror/{SOURCE}/team/app")),
        ["edge", "v1", "v2"]
    );
}
