//! Tests: runtimes' files written into a temporary root, and a probe of a
//! closed port.

use super::*;

fn opts(root: &Path, mirror: Option<&str>, registries: &str) -> DoctorOptions {
    DoctorOptions {
        root: root.to_path_buf(),
        runtimes: Vec::new(),
        mirror: mirror.map(|m| Mirror::parse(m).unwrap()),
        registries: Registries::parse(registries).unwrap(),
        images: Vec::new(),
        ca: None,
        skip_verify: false,
        timeout: Duration::from_secs(2),
    }
}

fn put(root: &Path, path: &str, text: &str) {
    let p = under(root, Path::new(path));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn levels(r: &RuntimeReport) -> Vec<(Level, String)> {
    r.findings
        .iter()
        .map(|f| (f.level, f.message.clone()))
        .collect()
}

#[test]
fn containerd_routes_from_generated_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put(
        root,
        "/etc/containerd/config.toml",
        &crate::containerd::config_stanza(2, Path::new("/etc/containerd/certs.d")).unwrap(),
    );
    let o = opts(root, Some("http://127.0.0.1:5000"), "docker.io,quay.io");
    let settings = crate::Settings {
        mirror: Mirror::parse("http://127.0.0.1:5000").unwrap(),
        registries: Registries::parse("docker.io").unwrap(),
        ca: None,
        skip_verify: false,
        ca_pem: None,
        certs_dir: None,
        creds: None,
        override_path: None,
    };
    for file in crate::containerd::plan(&settings, &root.join("etc/containerd/certs.d"))
        .unwrap()
        .files
    {
        std::fs::create_dir_all(file.path.parent().unwrap()).unwrap();
        std::fs::write(&file.path, file.contents).unwrap();
    }
    assert_eq!(detect(root), [Runtime::Containerd]);
    let r = inspect(Runtime::Containerd, &o);
    let l = levels(&r);
    assert!(
        l.iter().any(|(lv, m)| *lv == Level::Ok
            && m.starts_with("docker.io: routed to http://127.0.0.1:5000")),
        "{l:?}"
    );
    let quay = r
        .findings
        .iter()
        .find(|f| f.message.starts_with("not routed") && f.message.ends_with("quay.io"))
        .unwrap();
    assert_eq!(quay.level, Level::Fail);
    assert!(quay
        .fix
        .as_deref()
        .unwrap()
        .contains("--registries quay.io"));
    assert_eq!(r.routes["docker.io"][0].style, RequestStyle::NsQuery);
}

#[test]
fn containerd_without_config_path_or_with_mirrors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put(root, "/etc/containerd/config.toml", "version = 2\n");
    let r = inspect(Runtime::Containerd, &opts(root, None, "docker.io"));
    assert!(r
        .findings
        .iter()
        .any(|f| f.level == Level::Fail && f.message.contains("no registry `config_path`")));
    put(
        root,
        "/etc/containerd/config.toml",
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/c\"\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\nendpoint = [\"https://m\"]\n",
    );
    put(root, "/c/_default/hosts.toml", "server = \"https://x\"\n");
    let r = inspect(Runtime::Containerd, &opts(root, None, "*"));
    assert!(r
        .findings
        .iter()
        .any(|f| f.level == Level::Fail && f.message.contains("both")));
    assert!(r
        .findings
        .iter()
        .any(|f| f.level == Level::Warn && f.message.contains("no [host] table")));
}

#[test]
fn k3s_crio_docker_routes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put(
        root,
        "/etc/rancher/k3s/registries.yaml",
        "mirrors:\n  \"*\":\n    endpoint: [\"https://m.example:5000\"]\n",
    );
    put(
        root,
        "/etc/containers/registries.conf.d/90-berth-mirror.conf",
        "[[registry]]\nprefix = \"quay.io\"\nlocation = \"quay.io\"\n[[registry.mirror]]\nlocation = \"127.0.0.1:5000/quay.io\"\ninsecure = true\n",
    );
    put(
        root,
        "/etc/docker/daemon.json",
        r#"{"registry-mirrors": ["http://127.0.0.1:5000"]}"#,
    );
    assert_eq!(detect(root), [Runtime::K3s, Runtime::Crio, Runtime::Docker]);

    let k3s = inspect(
        Runtime::K3s,
        &opts(root, Some("https://m.example:5000"), "ghcr.io"),
    );
    assert!(levels(&k3s)
        .iter()
        .any(|(l, m)| *l == Level::Ok && m.starts_with("ghcr.io: routed")));

    let crio = inspect(
        Runtime::Crio,
        &opts(root, Some("http://127.0.0.1:5000"), "quay.io,ghcr.io"),
    );
    assert_eq!(
        crio.routes["quay.io"][0].style,
        RequestStyle::PathPrefix("quay.io".to_string())
    );
    assert_eq!(crio.routes["quay.io"][0].base, "http://127.0.0.1:5000");
    assert!(levels(&crio)
        .iter()
        .any(|(l, m)| *l == Level::Fail && m.starts_with("not routed") && m.contains("ghcr.io")));
    // What berth wrote before it spelled ports `__PORT`.
    put(
        root,
        "/etc/containers/registries.conf.d/91-old.conf",
        "[[registry]]\nprefix = \"registry.local:5000\"\n[[registry.mirror]]\nlocation = \"127.0.0.1:5000/registry.local:5000\"\n",
    );
    let crio = inspect(
        Runtime::Crio,
        &opts(root, Some("http://127.0.0.1:5000"), "quay.io"),
    );
    assert!(levels(&crio).iter().any(|(l, m)| *l == Level::Fail
        && m.contains("not a valid reference")
        && m.contains("registry.local__5000")));

    let docker = inspect(
        Runtime::Docker,
        &opts(root, Some("http://127.0.0.1:5000"), "docker.io"),
    );
    let l = levels(&docker);
    assert!(
        l.iter()
            .any(|(lv, m)| *lv == Level::Ok && m.starts_with("docker.io: routed")),
        "{l:?}"
    );
    assert!(
        l.iter()
            .any(|(lv, m)| *lv == Level::Warn && m.contains("insecure-registries")),
        "{l:?}"
    );
}

#[test]
fn request_paths() {
    let image: ImageReference = "alpine:3".parse().unwrap();
    assert_eq!(
        manifest_path(&image, &RequestStyle::NsQuery),
        "/v2/library/alpine/manifests/3?ns=docker.io"
    );
    assert_eq!(
        manifest_path(&image, &RequestStyle::PathPrefix("docker.io".into())),
        "/v2/docker.io/library/alpine/manifests/3"
    );
    assert_eq!(
        manifest_path(&image, &RequestStyle::Bare),
        "/v2/library/alpine/manifests/3"
    );
}

#[tokio::test]
async fn unreachable_mirror_is_reported_with_a_fix() {
    // Bind then drop a listener so the port is (almost certainly) closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(
        dir.path(),
        Some(&format!("http://127.0.0.1:{port}")),
        "docker.io",
    );
    o.runtimes = vec![Runtime::Docker];
    let report = run(&o).await.unwrap();
    assert_eq!(report.worst(), Level::Fail);
    let probe = &report.probes[&format!("http://127.0.0.1:{port}")];
    assert_eq!(probe[0].level, Level::Fail);
    assert!(probe[0].fix.as_deref().unwrap().contains("berth serve"));
    let text = report.to_string();
    assert!(text.contains("fix: "), "{text}");
}
