//! Mirrors of registries with a port (issue 12, item 1), with the names the
//! seeds use: `registry.local:5000`, `10.0.0.100:5000`,
//! `internal-registry.corp:5000`, `my.company.registry:5000`,
//! `localhost:5000`. berth spells such a mirror `HOST__PORT`
//! (`registry.local__5000/demo/app`), since a `:` is not valid in a path
//! component and clients refuse the reference.
//!
//! Every seed name is pointed at one Distribution registry on loopback with
//! `--upstream HOST=URL`, so no test connects anywhere else; the clients are
//! the real ones: skopeo and podman reading the registries.conf
//! `runtime-config crio` writes, containerd's `ctr` reading the hosts.toml `runtime-config
//! containerd` writes (it sends `?ns=HOST:PORT`), and `berth bundle` /
//! `berth cache`. Every name the catalog lists is then read back by skopeo,
//! which refuses any name outside the spec's grammar.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const SEEDS: [&str; 5] = [
    "registry.local:5000",
    "10.0.0.100:5000",
    "internal-registry.corp:5000",
    "my.company.registry:5000",
    "localhost:5000",
];

fn spelled(host: &str) -> String {
    host.replace(':', "__")
}

fn berth(args: &[&str]) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_berth")).args(args))
}

fn upstream_flags(up: &Distribution) -> Vec<String> {
    SEEDS
        .iter()
        .map(|h| format!("--upstream={h}={}", up.url()))
        .collect()
}

/// A one-image upstream: `demo/app:v1`, whose manifest digest is returned.
fn upstream_with_image(scratch: &Path) -> (Distribution, String) {
    let up = Distribution::start();
    let layout = Layout::create(&scratch.join("layout"));
    let image = layout.add_image(
        "v1",
        "amd64",
        &[tar_layer(&[TarEntry {
            name: "hello.txt",
            data: b"hello through a port\n",
        }])],
    );
    up.push(scratch, &layout.oci_ref("v1"), "demo/app:v1", None);
    (up, image.manifest_digest)
}

/// The manifest digest skopeo reads for `reference` (a `docker://` one on a
/// plain-HTTP registry, or through `registries_conf`).
fn skopeo_digest(scratch: &Path, registries_conf: Option<&Path>, reference: &str) -> String {
    let mut cmd = skopeo(scratch);
    if let Some(conf) = registries_conf {
        cmd.arg("--registries-conf").arg(conf);
    }
    cmd.args([
        "inspect",
        "--no-tags",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        reference,
    ]);
    run(&mut cmd).stdout_str().trim().to_string()
}

fn catalog(server: &Server) -> Vec<String> {
    let r = curl("GET", &format!("{}/v2/_catalog", server.url())).send();
    r.expect_status(200);
    r.json()["repositories"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Every listed name is an addressable repository: skopeo (which checks
/// the reference grammar) reads tag `v1` of it through `server`.
fn every_listed_name_is_addressable(scratch: &Path, server: &Server, want: &str) {
    for name in catalog(server) {
        assert!(!name.contains(':'), "the catalog lists {name:?}");
        let got = skopeo_digest(
            scratch,
            None,
            &format!("docker://{}/{name}:v1", server.host()),
        );
        assert_eq!(got, want, "{name}");
    }
}

/// CRI-O's and Podman's registries.conf (read by skopeo) and containerd's
/// hosts.toml (read by ctr) route every seed name through berth; berth
/// stores each as `HOST__PORT/...`; the catalog lists only such names; and
/// the `host:port` path form older berth wrote is still understood.
#[test]
fn seed_names_pull_through_crio_and_containerd_configuration() {
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let (up, digest) = upstream_with_image(s);
    let mirror = Server::start_with(&upstream_flags(&up));

    let conf = s.join("registries.conf");
    berth(&[
        "runtime-config",
        "crio",
        "--mirror",
        &mirror.url(),
        "--registries",
        &SEEDS.join(","),
        "--dest",
        conf.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&conf).unwrap();
    for host in SEEDS {
        let location = format!("location = \"{}/{}\"", mirror.host(), spelled(host));
        assert!(text.contains(&location), "no {location}:\n{text}");
    }
    // registry.local and the .corp/.registry names resolve nowhere, and
    // nothing listens on localhost:5000 here: only the mirror can answer.
    for host in [
        "registry.local:5000",
        "my.company.registry:5000",
        "localhost:5000",
    ] {
        let got = skopeo_digest(s, Some(&conf), &format!("docker://{host}/demo/app:v1"));
        assert_eq!(got, digest, "{host}");
        assert!(
            mirror
                .log()
                .contains(&format!("/v2/{}/demo/app/manifests/v1", spelled(host))),
            "skopeo did not ask berth for {host}\n{}",
            mirror.log()
        );
    }

    // Podman reads the same file (as CRI-O does) and stores the image.
    let pod = s.join("podman");
    std::fs::create_dir_all(&pod).unwrap();
    std::fs::write(pod.join("auth.json"), "{}").unwrap();
    let out = run(podman(&pod)
        .env("CONTAINERS_REGISTRIES_CONF", &conf)
        .args(["pull", "registry.local:5000/demo/app:v1"]));
    let images = run(podman(&pod).args(["images", "--digests", "--format", "{{.Digest}}"]));
    assert!(
        images.stdout_str().contains(&digest),
        "{}
{}",
        out.describe(),
        images.describe()
    );

    // containerd asks the mirror with `?ns=HOST:PORT`. (Only for a name
    // that resolves nowhere: were berth to fail, containerd would fall back
    // to the registry itself, and no test may reach past loopback.)
    let hosts = s.join("certs.d");
    berth(&[
        "runtime-config",
        "containerd",
        "--mirror",
        &mirror.url(),
        "--registries",
        "internal-registry.corp:5000",
        "--dest",
        hosts.to_str().unwrap(),
    ]);
    assert!(hosts
        .join("internal-registry.corp:5000/hosts.toml")
        .is_file());
    let containerd = Containerd::start();
    run(containerd
        .ctr()
        .args(["content", "fetch", "--hosts-dir"])
        .arg(&hosts)
        .arg("internal-registry.corp:5000/demo/app:v1"));
    let listed = run(containerd.ctr().args(["content", "ls", "-q"])).stdout_str();
    assert!(listed.contains(&digest), "{listed}");
    assert!(
        mirror
            .log()
            .contains("path=/v2/demo/app/manifests/v1 ns=\"internal-registry.corp:5000\""),
        "{}",
        mirror.log()
    );
    // The same request for the IP-address seed, as containerd would send it.
    curl(
        "GET",
        &format!(
            "{}/v2/demo/app/manifests/v1?ns=10.0.0.100:5000",
            mirror.url()
        ),
    )
    .header("Accept", "application/vnd.oci.image.manifest.v1+json")
    .send()
    .expect_status(200)
    .expect_header("Docker-Content-Digest", &digest);

    let mut names = catalog(&mirror);
    names.sort();
    let mut want: Vec<String> = [
        "registry.local:5000",
        "my.company.registry:5000",
        "localhost:5000",
        "internal-registry.corp:5000",
        "10.0.0.100:5000",
    ]
    .iter()
    .map(|h| format!("{}/demo/app", spelled(h)))
    .collect();
    want.sort();
    assert_eq!(names, want);
    every_listed_name_is_addressable(s, &mirror, &digest);
    // Each request's line says what the cache did, and which upstream.
    let log = mirror.log();
    let line = |path: &str, outcome: &str| {
        log.lines().any(|l| {
            l.contains(&format!("path={path} "))
                && l.contains(&format!("cache={outcome} upstream=registry.local:5000 "))
        })
    };
    let manifest = "/v2/registry.local__5000/demo/app/manifests/v1";
    assert!(line(manifest, "fill"), "{log}");
    assert!(line(manifest, "hit"), "{log}");

    // The spelling older berth (and hand-written scripts) used in paths.
    let r = curl(
        "GET",
        &format!(
            "{}/v2/registry.local:5000/demo/app/manifests/v1",
            mirror.url()
        ),
    )
    .header("Accept", "application/vnd.oci.image.manifest.v1+json")
    .send();
    r.expect_status(200);
    r.expect_header("Docker-Content-Digest", &digest);
    // `?ns=` with a host berth cannot spell is refused in the spec's format.
    curl(
        "GET",
        &format!(
            "{}/v2/demo/app/manifests/v1?ns=%5B::1%5D:5000",
            mirror.url()
        ),
    )
    .send()
    .expect_error(400, "NAME_INVALID");
    assert_eq!(names.len(), catalog(&mirror).len());
}

/// `bundle create` of seed-named images, `bundle load` into an offline
/// berth, and `berth cache`: both name the images `HOST__PORT/...`, which
/// skopeo pulls by that name and containerd (asking `?ns=HOST:PORT`) finds
/// with the upstream gone.
#[test]
fn bundle_load_and_cache_name_port_registries_the_path_safe_way() {
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let (mut up, digest) = upstream_with_image(s);
    let list = s.join("images.txt");
    std::fs::write(
        &list,
        "registry.local:5000/demo/app:v1\n10.0.0.100:5000/demo/app:v1\n",
    )
    .unwrap();
    let bundle = s.join("bundle.tar");
    let mut create = vec![
        "bundle".to_string(),
        "create".into(),
        list.to_str().unwrap().into(),
        "-o".into(),
        bundle.to_str().unwrap().into(),
    ];
    for h in ["registry.local:5000", "10.0.0.100:5000"] {
        create.push("--upstream".into());
        create.push(format!("{h}={}", up.url()));
    }
    run(Command::new(env!("CARGO_BIN_EXE_berth")).args(&create));

    // The cache fetches through its own upstream configuration.
    let cache = Server::start_with(&[format!("--upstream=localhost:5000={}", up.url())]);
    let out = berth(&["cache", "localhost:5000/demo/app:v1", "--to", &cache.host()]);
    let target = format!("as {}/localhost__5000/demo/app:v1", cache.host());
    assert!(
        out.stderr.contains(&target),
        "no {target}\n{}",
        out.describe()
    );
    up.stop();

    let airgap = Server::start_with(&["--offline".to_string()]);
    let out = berth(&[
        "bundle",
        "load",
        bundle.to_str().unwrap(),
        "--to",
        &airgap.host(),
    ]);
    for host in ["registry.local:5000", "10.0.0.100:5000"] {
        let target = format!("{}/{}/demo/app:v1", airgap.host(), spelled(host));
        assert!(
            out.stderr.contains(&target),
            "no {target}\n{}",
            out.describe()
        );
    }
    every_listed_name_is_addressable(s, &airgap, &digest);
    every_listed_name_is_addressable(s, &cache, &digest);
    assert_eq!(
        catalog(&cache),
        vec!["localhost__5000/demo/app".to_string()]
    );

    let hosts = s.join("certs.d");
    berth(&[
        "runtime-config",
        "containerd",
        "--mirror",
        &airgap.url(),
        "--registries",
        "registry.local:5000",
        "--dest",
        hosts.to_str().unwrap(),
    ]);
    let containerd = Containerd::start();
    run(containerd
        .ctr()
        .args(["content", "fetch", "--hosts-dir"])
        .arg(&hosts)
        .arg("registry.local:5000/demo/app:v1"));
    let listed = run(containerd.ctr().args(["content", "ls", "-q"])).stdout_str();
    assert!(listed.contains(&digest), "{listed}");
}

/// A root written by an older berth, which kept `registry.local:5000/...`
/// as it was: renamed at start, served under the new name, and the name no
/// client can address is gone from the catalog.
#[test]
fn a_root_with_old_port_names_is_migrated_at_start() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("root");
    let mut server = Server::start_on(&root);
    let (digest, _) = push_small_image(&server, "registry.local__5000/demo/app", "v1", 7);
    server.terminate(std::time::Duration::from_secs(20));
    let repos = root.join("docs/repositories");
    let stored: Vec<String> = std::fs::read_dir(&repos)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        stored,
        vec!["registry.local__5000".to_string()],
        "layout changed?"
    );
    std::fs::rename(
        repos.join("registry.local__5000"),
        repos.join("registry.local:5000"),
    )
    .unwrap();

    let server = Server::start_on(&root);
    assert!(
        server
            .log()
            .contains("mirror registry.local:5000 renamed registry.local__5000"),
        "{}",
        server.log()
    );
    assert!(!repos.join("registry.local:5000").exists());
    assert_eq!(
        catalog(&server),
        vec!["registry.local__5000/demo/app".to_string()]
    );
    let got = skopeo_digest(
        scratch.path(),
        None,
        &format!(
            "docker://{}/registry.local__5000/demo/app:v1",
            server.host()
        ),
    );
    assert_eq!(got, digest);
}
