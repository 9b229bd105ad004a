//! Property tests: what berth writes for each runtime, parsed back the way
//! the runtime (and berth's own doctor) reads it, says what berth was asked
//! to write — for generated mirrors, registry lists, CA paths and
//! credentials with characters that need quoting in TOML, YAML and JSON —
//! and merging into a file berth wrote itself changes nothing.

use std::path::PathBuf;

use berth_runtime_config::containerd::{self, CaFiles, HostsToml};
use berth_runtime_config::crio::{self, RegistriesConf};
use berth_runtime_config::k3s::{self, RegistriesYaml};
use berth_runtime_config::secret::Credentials;
use berth_runtime_config::{docker, upstream_url, Mirror, Registries, Settings};
use proptest::prelude::*;

fn mirror() -> impl Strategy<Value = Mirror> {
    (
        prop_oneof![Just("http"), Just("https")],
        prop_oneof![
            // A last label of digits would be an IPv4 address.
            "([a-z0-9]{1,8}\\.){0,2}[a-z][a-z0-9]{0,7}",
            Just("127.0.0.1".to_string()),
            Just("[::1]".to_string()),
        ],
        proptest::option::of(1u16..),
    )
        .prop_map(|(scheme, host, port)| {
            let url = match port {
                Some(p) => format!("{scheme}://{host}:{p}"),
                None => format!("{scheme}://{host}"),
            };
            Mirror::parse(&url).unwrap_or_else(|e| panic!("{url}: {e}"))
        })
}

fn registries() -> impl Strategy<Value = Registries> {
    prop_oneof![
        4 => proptest::collection::vec(
            prop_oneof![
                Just("docker.io".to_string()),
                Just("index.docker.io".to_string()),
                Just("registry.k8s.io".to_string()),
                "[a-z0-9]{1,8}\\.[a-z]{2,4}",
                "[a-z0-9]{1,8}\\.[a-z]{2,4}:[1-9][0-9]{0,3}",
            ],
            1..4,
        )
        .prop_map(|v| v.join(",")),
        1 => Just("*".to_string()),
    ]
    .prop_map(|list| Registries::parse(&list).unwrap_or_else(|e| panic!("{list}: {e}")))
}

/// Printable ASCII, quotes, `#`, `:` and YAML's special words included.
fn awkward() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{1,16}",
        Just("yes".to_string()),
        Just("null".to_string()),
        Just("~".to_string()),
        Just("1e3".to_string()),
        Just("'\"#: -".to_string()),
    ]
}

fn settings() -> impl Strategy<Value = Settings> {
    (
        mirror(),
        registries(),
        proptest::option::of(awkward().prop_map(|p| PathBuf::from(format!("/etc/{p}/ca.crt")))),
        any::<bool>(),
        proptest::option::of(("[a-zA-Z0-9._-]{1,12}", awkward())),
    )
        .prop_map(|(mirror, registries, ca, skip_verify, creds)| Settings {
            mirror,
            registries,
            ca,
            skip_verify,
            ca_pem: None,
            certs_dir: None,
            creds: creds.map(|(username, password)| Credentials { username, password }),
            override_path: None,
        })
}

proptest! {
    // Failures are reported, not written into the source tree.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn hosts_toml_round_trips(s in settings()) {
        let mut targets: Vec<Option<&str>> = s.registries.hosts.iter().map(|h| Some(h.as_str())).collect();
        if s.registries.all {
            targets.push(None);
        }
        for registry in targets {
            let text = containerd::render(&s, registry).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back = HostsToml::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(back.server.clone(), registry.map(upstream_url));
            prop_assert_eq!(back.host.len(), 1);
            let entry = back.host.get(&s.mirror.url()).ok_or_else(|| TestCaseError::fail(format!("no mirror host\n{text}")))?;
            prop_assert_eq!(&entry.capabilities, &["pull".to_string(), "resolve".to_string()]);
            let ca = s.ca.as_ref().map(|p| CaFiles::One(p.to_string_lossy().into_owned()));
            prop_assert_eq!(&entry.ca, &ca);
            prop_assert_eq!(entry.skip_verify, s.skip_verify.then_some(true));
            prop_assert_eq!(back, HostsToml::for_mirror(&s, registry).unwrap());
        }
    }

    #[test]
    fn registries_conf_round_trips(s in settings()) {
        let Ok(text) = crio::render(&s) else {
            // Only a catch-all cannot be written.
            prop_assert!(s.registries.all);
            return Ok(());
        };
        let back = RegistriesConf::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(back.registry.len(), s.registries.hosts.len());
        for (entry, host) in back.registry.iter().zip(&s.registries.hosts) {
            prop_assert_eq!(entry.effective_prefix(), Some(host.as_str()));
            prop_assert_eq!(entry.location.as_deref(), Some(host.as_str()));
            prop_assert_eq!(entry.mirror.len(), 1);
            prop_assert_eq!(&entry.mirror[0].location, &crio::mirror_location(&s, host).unwrap());
            prop_assert_eq!(entry.mirror[0].insecure, s.insecure().then_some(true));
        }
    }

    #[test]
    fn registries_yaml_round_trips_and_merges_idempotently(s in settings()) {
        let text = k3s::render(&s, None, "registries.yaml").map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = RegistriesYaml::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let mut keys: Vec<String> = s.registries.hosts.clone();
        if s.registries.all {
            keys.push("*".to_string());
        }
        prop_assert_eq!(back.mirrors.keys().cloned().collect::<Vec<_>>(), keys);
        for entry in back.mirrors.values() {
            prop_assert_eq!(&entry.endpoint, &vec![s.mirror.url()]);
        }
        let config = back.configs.get(s.mirror.authority());
        let tls = config.and_then(|c| c.tls.as_ref());
        prop_assert_eq!(
            tls.and_then(|t| t.ca_file.clone()),
            s.ca.as_ref().map(|p| p.to_string_lossy().into_owned())
        );
        prop_assert_eq!(tls.and_then(|t| t.insecure_skip_verify), s.skip_verify.then_some(true));
        if let Some(creds) = &s.creds {
            let auth = config
                .and_then(|c| c.other.get("auth"))
                .ok_or_else(|| TestCaseError::fail(format!("no auth\n{text}")))?;
            prop_assert_eq!(auth.get("username").and_then(|v| v.as_str()), Some(creds.username.as_str()));
            prop_assert_eq!(auth.get("password").and_then(|v| v.as_str()), Some(creds.password.as_str()));
        }
        let again = k3s::render(&s, Some(&text), "registries.yaml").map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(again, text);
    }

    #[test]
    fn daemon_json_round_trips_and_merges_idempotently(s in settings()) {
        let text = docker::render(&s, None, "daemon.json").map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = docker::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let list = |key: &str| -> Vec<String> {
            back.get(key)
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        };
        let mirrors: Vec<String> = if s.registries.includes_docker_hub() { vec![s.mirror.url()] } else { vec![] };
        prop_assert_eq!(list("registry-mirrors"), mirrors);
        let insecure: Vec<String> = if s.insecure() { vec![s.mirror.authority().to_string()] } else { vec![] };
        prop_assert_eq!(list("insecure-registries"), insecure);
        let again = docker::render(&s, Some(&text), "daemon.json").map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(again, text);
    }
}
