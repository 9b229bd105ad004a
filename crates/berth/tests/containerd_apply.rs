//! `berth runtime-config containerd --apply` (issue 12, item 5): the user's
//! own containerd configuration (CRI plugin settings, comments) is edited to
//! point `config_path` at the hosts directory, with a backup, and
//! containerd 1.6's CRI plugin (the path kubelet uses) then pulls through
//! berth. For a registry name that resolves nowhere, so only berth can
//! answer.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const REGISTRY: &str = "registry.apply.test";

#[test]
fn apply_points_containerds_own_config_at_the_hosts_directory() {
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let berth = Server::start();
    // An image containerd can unpack, preloaded under its mirror name.
    let layout = Layout::create(&s.join("layout"));
    layout.add_image(
        "v1",
        "amd64",
        &[tar_layer(&[TarEntry {
            name: "hello.txt",
            data: b"applied\n",
        }])],
    );
    run(skopeo(s).args([
        "copy",
        "--dest-tls-verify=false",
        &layout.oci_ref("v1"),
        &format!("docker://{}/{REGISTRY}/team/app:v1", berth.host()),
    ]));
    let hosts = s.join("certs.d");

    let containerd = Containerd::start_with_cri_prepared(|config| {
        let before = std::fs::read_to_string(config).unwrap();
        let with_comment = format!("# the node's own settings\n{before}");
        std::fs::write(config, &with_comment).unwrap();
        let out = run(Command::new(env!("CARGO_BIN_EXE_berth")).args([
            "runtime-config",
            "containerd",
            "--mirror",
            &berth.url(),
            "--registries",
            REGISTRY,
            "--dest",
            hosts.to_str().unwrap(),
            "--apply",
            "--containerd-config",
            config.to_str().unwrap(),
        ]));
        assert!(
            out.stdout_str().contains("Restart containerd"),
            "{}",
            out.describe()
        );
        let after = std::fs::read_to_string(config).unwrap();
        // Everything the user had is still there, plus the one setting.
        assert!(after.starts_with("# the node's own settings\n"), "{after}");
        let doc: toml::Table = toml::from_str(&after).unwrap();
        let cri = &doc["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(cri["disable_tcp_service"].as_bool(), Some(true));
        assert_eq!(cri["containerd"]["snapshotter"].as_str(), Some("native"));
        assert_eq!(
            cri["registry"]["config_path"].as_str(),
            Some(hosts.to_str().unwrap())
        );
        let backups: Vec<_> = std::fs::read_dir(config.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("berth-backup"))
            .collect();
        assert_eq!(backups.len(), 1, "no backup of the config");
        assert_eq!(
            std::fs::read_to_string(backups[0].path()).unwrap(),
            with_comment
        );
    });

    // The CRI service answers "not initialized" for a moment after start.
    let image = format!("{REGISTRY}/team/app:v1");
    let deadline = Instant::now() + Duration::from_secs(30);
    let result = loop {
        match cri_pull_image(&containerd.socket, &image) {
            Err(e) if e.contains("not initialized") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            other => break other,
        }
    };
    let pulled = result.unwrap_or_else(|e| {
        panic!(
            "CRI PullImage failed: {e}\n--- containerd\n{}\n--- berth\n{}",
            containerd.log(),
            berth.log()
        )
    });
    assert!(pulled.starts_with("sha256:"), "{pulled}");
    assert!(
        berth
            .log()
            .lines()
            .any(|l| l.contains("path=/v2/team/app/manifests/")
                && l.contains(&format!("ns=\"{REGISTRY}\""))
                && l.contains("status=200")),
        "containerd did not pull through berth\n{}",
        berth.log()
    );
}
