//! `berth cache` makes the server fetch the images itself (issue 12): the
//! prefetch endpoint walks the image from the upstream (Debian's
//! Distribution 2.8), no blob crosses the client's connection, the
//! progress is printed, `--platform` fetches one platform, the cache then
//! serves skopeo with the upstream gone, and with access control only who
//! may push into the mirror namespace may prefetch. `--through-client`
//! keeps the old way (every blob read through the client).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const UP: &str = "registry.pre.test";

fn blob_requests(server: &Server) -> usize {
    server
        .log()
        .lines()
        .filter(|l| l.contains("berth::request") && l.contains("/blobs/"))
        .count()
}

fn multi_arch_upstream(s: &Path) -> (Distribution, Layout, ImageInfo, ImageInfo, String) {
    let up = Distribution::start();
    let layout = Layout::create(&s.join("layout"));
    let layer = |seed: u64| {
        tar_layer(&[TarEntry {
            name: "data.bin",
            data: &pseudo_random(200_000, seed),
        }])
    };
    let amd = layout.add_image("amd", "amd64", &[layer(1), layer(2)]);
    let arm = layout.add_image("arm", "arm64", &[layer(3)]);
    let (index, _) = layout.make_index("multi", &[("amd", "amd64"), ("arm", "arm64")]);
    up.push(s, &layout.oci_ref("multi"), "team/app:multi", None);
    (up, layout, amd, arm, index)
}

#[test]
fn the_server_fetches_what_berth_cache_asks_for() {
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let (mut up, _layout, amd, arm, index) = multi_arch_upstream(s);
    let flag = format!("--upstream={UP}={}", up.url());
    let mirror = Server::start_with(std::slice::from_ref(&flag));
    let out = run(Command::new(env!("CARGO_BIN_EXE_berth")).args([
        "cache",
        &format!("{UP}/team/app:multi"),
        "--to",
        &mirror.host(),
    ]));
    assert!(out.stderr.contains("cached 1 of 1"), "{}", out.describe());
    assert!(
        out.stderr.contains("  fetched sha256:"),
        "{}",
        out.describe()
    );
    assert!(
        mirror.log().contains(&format!(
            "method=POST path=/v2/{UP}/team/app/prefetch/multi status=200"
        )),
        "{}",
        mirror.log()
    );
    assert_eq!(blob_requests(&mirror), 0, "blobs went through the client");
    for d in amd.blobs().iter().chain(arm.blobs().iter()) {
        assert!(mirror.holds_blob(d), "{d} not cached");
    }
    // Per-upstream metrics, in Prometheus' text format.
    let metrics = curl("GET", &format!("{}/metrics", mirror.url()))
        .header("Accept", "text/plain;version=0.0.4")
        .send();
    let text = metrics.body_str();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    let labels = format!(r#"{{upstream="{UP}",kind="blob"}}"#);
    assert!(value(&format!("berth_upstream_requests_total{labels}")) >= 5.0);
    assert_eq!(
        value(&format!("berth_upstream_failures_total{labels}")),
        0.0
    );
    assert!(value(&format!("berth_upstream_request_seconds_count{labels}")) >= 5.0);
    assert!(value(&format!(r#"berth_upstream_bytes_total{{upstream="{UP}"}}"#)) >= 600_000.0);
    // Every series the Grafana dashboard in the repo plots is one berth
    // exports (histograms as their _bucket series).
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/berth-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let exported: std::collections::HashSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let mut plotted = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("berth_") || word.starts_with("process_") {
                    assert!(
                        exported.contains(word),
                        "the dashboard plots {word}, which is not exported"
                    );
                    plotted += 1;
                }
            }
        }
    }
    assert!(plotted >= 20, "{plotted}");

    // One platform only.
    let one = Server::start_with(std::slice::from_ref(&flag));
    run(Command::new(env!("CARGO_BIN_EXE_berth")).args([
        "cache",
        "--platform",
        "linux/arm64",
        &format!("{UP}/team/app:multi"),
        "--to",
        &one.host(),
    ]));
    for d in arm.blobs() {
        assert!(one.holds_blob(&d), "{d} not cached");
    }
    for d in &amd.layer_digests {
        assert!(!one.holds_blob(d), "{d} is not of that platform");
    }

    // The old way still works, and does read every blob through here.
    let old = Server::start_with(std::slice::from_ref(&flag));
    run(Command::new(env!("CARGO_BIN_EXE_berth")).args([
        "cache",
        "--through-client",
        &format!("{UP}/team/app:multi"),
        "--to",
        &old.host(),
    ]));
    assert!(blob_requests(&old) > 0);

    // With the upstream gone, the cache alone serves every platform.
    up.stop();
    let pulled = s.join("pulled");
    run(skopeo(s).args([
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{}/{UP}/team/app:multi", mirror.host()),
        &format!("oci:{}:x", pulled.display()),
    ]));
    assert_eq!(Layout { dir: pulled }.manifest("x").0, index);

    // A local repository has no upstream: the endpoint says so.
    curl(
        "POST",
        &format!("{}/v2/team/local/prefetch/v1", mirror.url()),
    )
    .send()
    .expect_error(405, "UNSUPPORTED");
}

#[test]
fn only_who_may_fill_the_mirror_may_prefetch() {
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let (_up, _layout, _amd, _arm, _index) = multi_arch_upstream(s);
    let up_url = _up.url();
    require_tool("htpasswd");
    let ht = s.join("htpasswd");
    for (i, user) in ["reader", "ops"].iter().enumerate() {
        let mut cmd = Command::new("htpasswd");
        cmd.args(["-B", "-b"]);
        if i == 0 {
            cmd.arg("-c");
        }
        run(cmd.arg(&ht).arg(user).arg("pw-12345"));
    }
    let config = s.join("berth.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[auth]
htpasswd = "{}"

[[policy]]
repositories = ["**"]
subjects = ["reader", "ops"]
actions = ["pull"]

[[policy]]
repositories = ["{UP}/**"]
subjects = ["ops"]
actions = ["push"]

[upstreams."{UP}"]
url = "{up_url}"
"#,
            ht.display()
        ),
    )
    .unwrap();
    let mirror = Server::start_with(&["--config".into(), config.display().to_string()]);
    let cache_as = |user: &str| {
        run_unchecked(Command::new(env!("CARGO_BIN_EXE_berth")).args([
            "cache",
            &format!("{UP}/team/app:multi"),
            "--to",
            &mirror.host(),
            "--creds",
            &format!("{user}:pw-12345"),
        ]))
    };
    let denied = cache_as("reader");
    assert!(!denied.status.success(), "{}", denied.describe());
    assert!(
        mirror
            .log()
            .contains(r#"user="reader" client=127.0.0.1 repository="registry.pre.test/team/app" action="push" outcome="denied""#),
        "{}",
        mirror.log()
    );
    let ok = cache_as("ops");
    assert!(ok.status.success(), "{}\n{}", ok.describe(), mirror.log());
    assert!(ok.stderr.contains("cached 1 of 1"), "{}", ok.describe());
}
