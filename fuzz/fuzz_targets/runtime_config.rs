//! The runtime-config readers and merges that take a user's existing file
//! (berth-runtime-config): k3s/RKE2 `registries.yaml` and Docker's
//! `daemon.json` (parsed and merged), CRI-O's `registries.conf`,
//! containerd's `hosts.toml` and `config.toml` (parsed by the generators
//! and the doctor). Every input is tried as each format: a file the user
//! wrote is an error, never a panic, and a merge that succeeds renders a
//! file that parses back with the mirror in it.
#![no_main]

use berth_runtime_config::containerd::{
    existing_config_warnings, read_registry_section, HostsToml,
};
use berth_runtime_config::crio::RegistriesConf;
use berth_runtime_config::k3s::RegistriesYaml;
use berth_runtime_config::{docker, k3s, Mirror, Registries, Settings};
use libfuzzer_sys::fuzz_target;

fn settings(mirror: &str, registries: &str, skip_verify: bool) -> Option<Settings> {
    Some(Settings {
        mirror: Mirror::parse(mirror).ok()?,
        registries: Registries::parse(registries).ok()?,
        ca: Some("/etc/berth/ca.crt".into()),
        skip_verify,
        ca_pem: None,
        certs_dir: None,
        creds: None,
            override_path: None,
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    // What users type on the command line.
    let first = text.lines().next().unwrap_or_default();
    let _ = Mirror::parse(first).map(|m| (m.url(), m.authority().to_string()));
    let _ = Registries::parse(first);

    let fixed = [
        settings("http://127.0.0.1:5000", "docker.io,quay.io", false),
        settings("https://mirror.lan:5443", "*", true),
    ];
    for s in fixed.iter().flatten() {
        if let Ok(out) = k3s::render(s, Some(text), "registries.yaml") {
            let doc = RegistriesYaml::parse(&out)
                .unwrap_or_else(|e| panic!("merged registries.yaml does not parse: {e}\n{out}"));
            for host in &s.registries.hosts {
                let entry = doc
                    .mirrors
                    .get(host)
                    .unwrap_or_else(|| panic!("{host} lost"));
                assert_eq!(entry.endpoint.first(), Some(&s.mirror.url()));
            }
        }
        if let Ok(out) = docker::render(s, Some(text), "daemon.json") {
            let doc = docker::parse(&out)
                .unwrap_or_else(|e| panic!("merged daemon.json does not parse: {e}\n{out}"));
            if s.registries.includes_docker_hub() {
                let mirrors = doc
                    .get("registry-mirrors")
                    .and_then(|v| v.as_array())
                    .unwrap_or_else(|| panic!("registry-mirrors lost\n{out}"));
                assert!(mirrors.iter().any(|m| m.as_str() == Some(&s.mirror.url())));
            }
        }
    }

    if let Ok(conf) = RegistriesConf::parse(text) {
        for e in &conf.registry {
            let _ = e.effective_prefix();
        }
    }
    if let Ok(hosts) = HostsToml::parse(text) {
        let _ = toml::to_string(&hosts);
    }
    let _ = read_registry_section(text);
    let _ = existing_config_warnings(text, std::path::Path::new("/etc/containerd/certs.d"));
    let _ = serde_json::from_str::<serde_json::Value>(text);
});
