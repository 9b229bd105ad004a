//! `berth serve`'s settings: the configuration file's shape and how it,
//! `BERTH_<KEY>` variables and flags merge (in increasing precedence) into
//! [`Settings`] — upstreams and the closed proxy, TLS, access control, and
//! the storage lifecycle (GC, eviction, retention).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use berth_cache::{CacheConfig, TtlPolicy, UpstreamAllowList, UpstreamSettings};
use berth_lifecycle::LifecycleConfig;
use berth_reference::normalise_registry;
use berth_upstream::{
    parse_upstream_override, AuthFile, Credentials, UpstreamConfig, UpstreamTimeouts,
};
use serde::Deserialize;

use super::{LogFormat, ServeArgs};

/// The configuration file. Unknown keys are errors, so typos don't pass silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// As `--listen` takes it (see [`parse_listen`]).
    listen: Option<String>,
    root: Option<PathBuf>,
    log_format: Option<LogFormat>,
    /// As `--log-level` takes it.
    log_level: Option<String>,
    default_upstream: Option<String>,
    offline: Option<bool>,
    /// Route requests whose Host names a known or configured upstream to
    /// its mirror [true].
    host_routing: Option<bool>,
    tag_ttl: Option<String>,
    /// Upstream timeouts (`BERTH_UPSTREAM_*_TIMEOUT` override them): see
    /// [`upstream_timeouts`].
    upstream_connect_timeout: Option<String>,
    upstream_first_byte_timeout: Option<String>,
    upstream_stall_timeout: Option<String>,
    gc_interval: Option<String>,
    upload_ttl: Option<String>,
    gc_grace: Option<String>,
    cache_max_size: Option<String>,
    cache_min_age: Option<String>,
    /// Device usage (a fraction, or `off`) at which eviction starts [0.9].
    cache_high_watermark: Option<toml::Value>,
    /// Device usage eviction brings it down to [0.8].
    cache_low_watermark: Option<f64>,
    #[serde(default)]
    upstreams: HashMap<String, FileUpstream>,
    /// `[[retention]]` rules, first match per repository.
    #[serde(default)]
    retention: Vec<FileRetention>,
    /// Access control: with this table, what no `[[policy]]` allows is denied.
    auth: Option<FileAuth>,
    #[serde(default)]
    policy: Vec<berth_auth::RuleConfig>,
    /// Replaces the built-in list of public registries contacted without
    /// configuration (`[]`: only configured and allowed upstreams).
    known_upstreams: Option<Vec<String>>,
    /// Host globs that may be contacted besides known and configured upstreams.
    #[serde(default)]
    allow_upstreams: Vec<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_auto: Option<bool>,
    #[serde(default)]
    tls_san: Vec<String>,
    /// Timeouts, connection limits and the memory budget.
    limits: Option<super::limits::FileLimits>,
    /// Where blobs and metadata live: the local disk or an S3 bucket.
    storage: Option<super::storage::FileStorage>,
    /// `[cluster]`: the replicas sharing that storage.
    cluster: Option<super::storage::FileCluster>,
}

/// `[[retention]]` in the configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRetention {
    repositories: Vec<String>,
    keep_last: Option<usize>,
    #[serde(default)]
    keep_tags: Vec<String>,
    pulled_within: Option<String>,
    #[serde(default)]
    delete_untagged: bool,
}

/// `[auth]` in the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    /// bcrypt entries, as `htpasswd -B` writes them.
    htpasswd: Option<PathBuf>,
    /// Lifetime of bearer tokens from `/token` [default: 5m, at least 60s].
    token_ttl: Option<String>,
    #[serde(default)]
    groups: HashMap<String, Vec<String>>,
    /// The token endpoint's URL as clients reach it [default: from each
    /// request's Host and X-Forwarded-Proto, path `/token`].
    realm: Option<String>,
    /// The service name in challenges and tokens [default: berth].
    service: Option<String>,
    /// Failed logins per client address per minute before 429 [default: 10].
    max_login_failures: Option<u32>,
    /// The token signing key (32 bytes, base64), the same file for every
    /// replica so that a token from one is good at all [default: made
    /// under the root].
    signing_key_file: Option<PathBuf>,
}

fn auth_config(file: &mut FileConfig) -> anyhow::Result<Option<berth_auth::AuthConfig>> {
    let policy = std::mem::take(&mut file.policy);
    let Some(mut a) = file.auth.take() else {
        anyhow::ensure!(
            policy.is_empty(),
            "[[policy]] rules need an [auth] table (without one, access control is off)"
        );
        return Ok(None);
    };
    // `BERTH_AUTH_<KEY>` overrides a scalar key of the table (the table
    // itself is what turns access control on).
    let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
    if let Some(v) = env("BERTH_AUTH_HTPASSWD") {
        a.htpasswd = Some(v.into());
    }
    if let Some(v) = env("BERTH_AUTH_TOKEN_TTL") {
        a.token_ttl = Some(v);
    }
    if let Some(v) = env("BERTH_AUTH_REALM") {
        a.realm = Some(v);
    }
    if let Some(v) = env("BERTH_AUTH_SERVICE") {
        a.service = Some(v);
    }
    if let Some(v) = env("BERTH_AUTH_MAX_LOGIN_FAILURES") {
        a.max_login_failures = Some(
            v.parse()
                .with_context(|| format!("BERTH_AUTH_MAX_LOGIN_FAILURES={v:?}: a number"))?,
        );
    }
    let token_ttl = match &a.token_ttl {
        Some(s) => duration("auth.token_ttl", s)?,
        None => berth_auth::DEFAULT_TOKEN_TTL,
    };
    anyhow::ensure!(
        token_ttl >= berth_auth::MIN_TOKEN_TTL,
        "auth.token_ttl: {} is shorter than the minimum of {} s",
        a.token_ttl.as_deref().unwrap_or_default(),
        berth_auth::MIN_TOKEN_TTL.as_secs()
    );
    Ok(Some(berth_auth::AuthConfig {
        htpasswd: a.htpasswd,
        token_ttl,
        groups: a.groups,
        rules: policy,
        realm: a.realm,
        service: a.service.unwrap_or_else(|| "berth".into()),
        max_login_failures: a
            .max_login_failures
            .unwrap_or(berth_auth::DEFAULT_MAX_LOGIN_FAILURES),
        signing_key_file: env("BERTH_AUTH_SIGNING_KEY_FILE")
            .map(PathBuf::from)
            .or(a.signing_key_file),
    }))
}

/// How the server speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TlsMode {
    Plain,
    Files { cert: PathBuf, key: PathBuf },
    Auto { sans: Vec<String> },
}

/// `[upstreams."HOST"]` in the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUpstream {
    /// Where the registry's API answers (a corporate mirror, a test registry).
    url: Option<String>,
    username: Option<String>,
    password: Option<String>,
    /// A Docker `config.json` / Podman `auth.json` to take credentials from.
    auth_file: Option<PathBuf>,
    /// PEM file of extra CA certificates to trust for this upstream.
    ca_file: Option<PathBuf>,
    /// Plain HTTP (for a host without a URL) or unverified TLS.
    #[serde(default)]
    insecure: bool,
    /// Other hosts of this registry its redirects and token realm may point
    /// at even on a private address (a separate token service).
    #[serde(default)]
    trusted_hosts: Vec<String>,
    tag_ttl: Option<String>,
    /// This upstream's own timeouts, over the `upstream_*_timeout` keys.
    connect_timeout: Option<String>,
    first_byte_timeout: Option<String>,
    stall_timeout: Option<String>,
    /// Per-tag TTLs, first match wins: `[{ pattern = "v*", ttl = "24h" }]`.
    #[serde(default)]
    tag_ttls: Vec<FileTagTtl>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTagTtl {
    pattern: String,
    ttl: String,
}

/// Settings after every source is merged.
#[derive(Debug)]
pub(super) struct Settings {
    pub(super) listen: SocketAddr,
    pub(super) root: PathBuf,
    /// The backend; with S3, `root` keeps only this process's own state
    /// (its lock, admin socket, TLS and token keys).
    pub(super) storage: super::storage::StorageChoice,
    /// Other replicas on the same bucket (cross-replica single flight).
    pub(super) replicas: Option<berth_cache::peers::PeerConfig>,
    pub(super) log_format: LogFormat,
    /// The tracing filter (`RUST_LOG` wins over it).
    pub(super) log_level: String,
    pub(super) default_upstream: Option<String>,
    pub(super) cache: CacheConfig,
    pub(super) lifecycle: LifecycleConfig,
    pub(super) auth: Option<berth_auth::AuthConfig>,
    pub(super) tls: TlsMode,
    pub(super) limits: crate::listen::Limits,
    /// Bytes of buffers all clients share (`None`: the built-in default).
    pub(super) memory_budget: Option<u64>,
    /// Found while resolving, logged once logging is set up.
    pub(super) warnings: Vec<String>,
}

/// The lifecycle jobs' settings: flags (and `BERTH_*`) over the file.
fn lifecycle_config(file: &FileConfig, args: &ServeArgs) -> anyhow::Result<LifecycleConfig> {
    let pick = |flag: &Option<String>, key: &Option<String>| flag.clone().or(key.clone());
    let mut config = LifecycleConfig::default();
    if let Some(s) = pick(&args.gc_interval, &file.gc_interval) {
        config.gc_interval = match s.trim() {
            "off" | "never" => None,
            other => Some(duration("gc_interval", other)?).filter(|d| !d.is_zero()),
        };
    }
    if let Some(s) = pick(&args.upload_ttl, &file.upload_ttl) {
        config.upload_ttl = duration("upload_ttl", &s)?;
    }
    if let Some(s) = pick(&args.gc_grace, &file.gc_grace) {
        config.gc_grace = duration("gc_grace", &s)?;
    }
    for (i, r) in file.retention.iter().enumerate() {
        let what = format!("retention rule {}", i + 1);
        anyhow::ensure!(!r.repositories.is_empty(), "{what}: repositories is empty");
        config.retention.push(berth_lifecycle::RetentionRule {
            repositories: r
                .repositories
                .iter()
                .map(|p| p.parse().with_context(|| what.clone()))
                .collect::<anyhow::Result<_>>()?,
            keep_last: r.keep_last,
            keep_tags: r.keep_tags.clone(),
            pulled_within: r
                .pulled_within
                .as_deref()
                .map(|d| duration(&format!("{what} pulled_within"), d))
                .transpose()?,
            delete_untagged: r.delete_untagged,
        });
    }
    let eviction = &mut config.eviction;
    if let Some(s) = pick(&args.cache_max_size, &file.cache_max_size) {
        eviction.max_size = Some(parse_size(&s).with_context(|| {
            format!("cache_max_size: {s:?} is not a size like 500MiB, 200GiB or 1TB")
        })?);
    }
    if let Some(s) = pick(&args.cache_min_age, &file.cache_min_age) {
        eviction.min_age = duration("cache_min_age", &s)?;
    }
    let from_flag = match args.cache_high_watermark.as_deref().map(str::trim) {
        None => None,
        Some("off") => Some(toml::Value::String("off".into())),
        Some(v) => Some(toml::Value::Float(v.parse().with_context(|| {
            format!("--cache-high-watermark: {v:?} is not a fraction like 0.9, or off")
        })?)),
    };
    match from_flag.as_ref().or(file.cache_high_watermark.as_ref()) {
        None => {}
        Some(toml::Value::String(s)) if s == "off" => eviction.high_watermark = None,
        Some(toml::Value::Float(f)) if *f > 0.0 && *f <= 1.0 => eviction.high_watermark = Some(*f),
        Some(other) => {
            anyhow::bail!("cache_high_watermark: {other} is not a fraction like 0.9, or \"off\"")
        }
    }
    if let Some(f) = file.cache_low_watermark {
        anyhow::ensure!(
            f > 0.0 && eviction.high_watermark.is_none_or(|h| f < h),
            "cache_low_watermark: {f} must be above 0 and below cache_high_watermark"
        );
        eviction.low_watermark = f;
    }
    Ok(config)
}

/// `500MiB`, `200GiB`, `1TB`, `1048576`: binary (KiB, MiB, GiB, TiB) and
/// decimal (KB, MB, GB, TB) units, or bytes.
pub(super) fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// A duration setting (`90s`, `5m`, `2h`, `7d`), named in the error.
pub fn parse_duration(what: &str, s: &str) -> anyhow::Result<Duration> {
    duration(what, s)
}

fn duration(what: &str, s: &str) -> anyhow::Result<Duration> {
    berth_cache::ttl::parse_duration(s)
        .with_context(|| format!("{what}: {s:?} is not a duration like 90s, 5m or 2h"))
}

/// A timeout setting: a duration of at least a second.
fn timeout(what: &str, s: &str) -> anyhow::Result<std::time::Duration> {
    let d = duration(what, s)?;
    anyhow::ensure!(!d.is_zero(), "{what}: a timeout must be at least 1s");
    Ok(d)
}

/// The upstream timeouts: `BERTH_UPSTREAM_CONNECT_TIMEOUT` (and
/// `_FIRST_BYTE_`, `_STALL_`) over the file's `upstream_connect_timeout`,
/// `upstream_first_byte_timeout`, `upstream_stall_timeout` over the
/// defaults (10s, 30s, 20s). Per-upstream keys override them in turn.
fn upstream_timeouts(
    file: &FileConfig,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<UpstreamTimeouts> {
    let mut t = UpstreamTimeouts::default();
    for (key, value, slot) in [
        (
            "upstream_connect_timeout",
            &file.upstream_connect_timeout,
            &mut t.connect,
        ),
        (
            "upstream_first_byte_timeout",
            &file.upstream_first_byte_timeout,
            &mut t.first_byte,
        ),
        (
            "upstream_stall_timeout",
            &file.upstream_stall_timeout,
            &mut t.stall,
        ),
    ] {
        let var = format!("BERTH_{}", key.to_ascii_uppercase());
        if let Some(v) = env(&var) {
            *slot = timeout(&var, &v)?;
        } else if let Some(v) = value {
            *slot = timeout(key, v)?;
        }
    }
    Ok(t)
}

/// One upstream's timeouts: its own keys over the global ones.
fn own_timeouts(
    host: &str,
    u: &FileUpstream,
    global: UpstreamTimeouts,
) -> anyhow::Result<UpstreamTimeouts> {
    let mut t = global;
    for (key, value, slot) in [
        ("connect_timeout", &u.connect_timeout, &mut t.connect),
        (
            "first_byte_timeout",
            &u.first_byte_timeout,
            &mut t.first_byte,
        ),
        ("stall_timeout", &u.stall_timeout, &mut t.stall),
    ] {
        if let Some(v) = value {
            *slot = timeout(&format!("upstream {host} {key}"), v)?;
        }
    }
    Ok(t)
}

/// Build the cache configuration: file upstreams first, then `--upstream`
/// overrides of their URLs.
fn cache_config(file: &mut FileConfig, args: &ServeArgs) -> anyhow::Result<CacheConfig> {
    let timeouts = upstream_timeouts(file, |key| {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    })?;
    let default_ttl = TtlPolicy {
        default: match args.tag_ttl.as_ref().or(file.tag_ttl.as_ref()) {
            Some(s) => duration("tag_ttl", s)?,
            None => berth_cache::ttl::DEFAULT_TAG_TTL,
        },
        patterns: Vec::new(),
    };
    let mut upstreams = HashMap::new();
    for (host, u) in std::mem::take(&mut file.upstreams) {
        let host = normalise_registry(&host);
        let mut client =
            UpstreamConfig::for_registry(&host)?.with_timeouts(own_timeouts(&host, &u, timeouts)?);
        if let Some(url) = &u.url {
            let (_, url) = parse_upstream_override(&format!("{host}={url}"))?;
            client = client.with_base_url(url);
        }
        client = client
            .with_insecure(u.insecure)?
            .with_ca_file(u.ca_file.clone())
            .with_trusted_hosts(&u.trusted_hosts);
        let credentials = match (&u.username, &u.password, &u.auth_file) {
            (Some(user), Some(pass), _) => Some(Credentials::new(user.clone(), pass.clone())),
            (None, None, Some(path)) => AuthFile::load(path)
                .with_context(|| format!("upstream {host}: reading {}", path.display()))?
                .credentials_for(&host),
            (None, None, None) => None,
            _ => anyhow::bail!("upstream {host}: give both username and password, or auth_file"),
        };
        client = client.with_credentials(credentials);
        let ttl = TtlPolicy {
            default: match &u.tag_ttl {
                Some(s) => duration(&format!("upstream {host} tag_ttl"), s)?,
                None => default_ttl.default,
            },
            patterns: u
                .tag_ttls
                .iter()
                .map(|t| {
                    Ok((
                        t.pattern.clone(),
                        duration(&format!("upstream {host} tag_ttls"), &t.ttl)?,
                    ))
                })
                .collect::<anyhow::Result<_>>()?,
        };
        upstreams.insert(host, UpstreamSettings { client, ttl });
    }
    for spec in &args.upstreams {
        let (host, url) = parse_upstream_override(spec)?;
        let settings = match upstreams.remove(&host) {
            Some(s) => s,
            None => UpstreamSettings {
                client: UpstreamConfig::for_registry(&host)?.with_timeouts(timeouts),
                ttl: default_ttl.clone(),
            },
        };
        let client = settings.client.with_base_url(url);
        upstreams.insert(
            host,
            UpstreamSettings {
                client,
                ttl: settings.ttl,
            },
        );
    }
    let mut allowed = std::mem::take(&mut file.allow_upstreams);
    allowed.extend(args.allow_upstreams.iter().cloned());
    Ok(CacheConfig {
        upstreams,
        default_ttl,
        offline: args.offline || file.offline.unwrap_or(false),
        allow: UpstreamAllowList::new(file.known_upstreams.as_deref(), &allowed),
        timeouts,
        host_routing: !args.no_host_routing && file.host_routing.unwrap_or(true),
    })
}

fn tls_mode(file: &FileConfig, args: &ServeArgs) -> anyhow::Result<TlsMode> {
    let from_flags = args.tls_cert.is_some() || args.tls_auto;
    let (cert, key, auto) = if from_flags {
        (args.tls_cert.clone(), args.tls_key.clone(), args.tls_auto)
    } else {
        (
            file.tls_cert.clone(),
            file.tls_key.clone(),
            file.tls_auto.unwrap_or(false),
        )
    };
    let mut sans = file.tls_san.clone();
    sans.extend(args.tls_sans.iter().cloned());
    match (cert, key, auto) {
        (None, None, false) => {
            if !sans.is_empty() {
                anyhow::bail!("--tls-san is for --tls-auto");
            }
            Ok(TlsMode::Plain)
        }
        (None, None, true) => Ok(TlsMode::Auto { sans }),
        (Some(cert), Some(key), false) => Ok(TlsMode::Files { cert, key }),
        (Some(_), Some(_), true) => {
            anyhow::bail!("give --tls-cert/--tls-key or --tls-auto, not both")
        }
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    }
}

impl Settings {
    pub(super) fn resolve(args: ServeArgs) -> anyhow::Result<Settings> {
        let mut file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        // The default upstream is one the operator named: it may be contacted.
        if let Some(h) = args
            .default_upstream
            .as_ref()
            .or(file.default_upstream.as_ref())
        {
            file.allow_upstreams.push(normalise_registry(h));
        }
        let cache = cache_config(&mut file, &args)?;
        let lifecycle = lifecycle_config(&file, &args)?;
        let auth = auth_config(&mut file)?;
        let tls = tls_mode(&file, &args)?;
        let (storage, storage_root) =
            super::storage::resolve(file.storage.take(), args.storage.as_deref())?;
        let replicas = super::storage::replicas(file.cluster.take(), &storage)?;
        let mut warnings = open_upstream_credentials(&cache, auth.is_some());
        let (limits, memory_budget) = super::limits::resolve(file.limits.as_ref(), &mut warnings)?;
        Ok(Settings {
            warnings,
            limits,
            memory_budget,
            lifecycle,
            auth,
            tls,
            default_upstream: args
                .default_upstream
                .clone()
                .or(file.default_upstream.clone()),
            cache,
            listen: match (args.listen, &file.listen) {
                (Some(a), _) => a,
                (None, Some(s)) => parse_listen(s).map_err(|e| anyhow::anyhow!("listen: {e}"))?,
                (None, None) => SocketAddr::from(([0, 0, 0, 0], 5000)),
            },
            storage,
            replicas,
            root: args
                .root
                .or(storage_root)
                .or(file.root)
                .unwrap_or_else(|| PathBuf::from("berth-data")),
            log_format: args
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            log_level: args
                .log_level
                .clone()
                .or(file.log_level.clone())
                .unwrap_or_else(|| "info".to_string()),
        })
    }
}

/// One warning per upstream that has credentials while access control is
/// off: berth pulls with them for whoever asks, so anyone who reaches berth
/// reads what they reach (a private registry made public by accident).
/// Names the upstream and its URL's host, never the credentials.
fn open_upstream_credentials(cache: &CacheConfig, auth_on: bool) -> Vec<String> {
    if auth_on {
        return Vec::new();
    }
    let mut hosts: Vec<(&String, &UpstreamSettings)> = cache
        .upstreams
        .iter()
        .filter(|(_, u)| u.client.credentials.is_some())
        .collect();
    // Stable order in the log (the map's is random).
    hosts.sort_by(|a, b| a.0.cmp(b.0));
    hosts
        .into_iter()
        .map(|(host, u)| {
            // Host and port only: a URL's user info could hold a secret.
            let url = &u.client.base_url;
            let at = match (url.host_str(), url.port()) {
                (Some(h), Some(p)) => format!(" (at {h}:{p})"),
                (Some(h), None) if h != host => format!(" (at {h})"),
                _ => String::new(),
            };
            format!(
                "upstream {host}{at} has credentials but there is no [auth] table: \
                 anyone who reaches berth can pull what those credentials reach through \
                 /v2/{host}/...; add an [auth] table and [[policy]] rules for {host}/**"
            )
        })
        .collect()
}

/// A listen address: `IP:PORT`, `[IPv6]:PORT`, `HOST:PORT` (a name is
/// resolved and its first address taken: `localhost:5012` is 127.0.0.1 where
/// the resolver lists that first) or `:PORT` (every IPv4 address).
pub(super) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bad = || format!("{s:?} is not IP:PORT, HOST:PORT or :PORT");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{s:?}: cannot resolve {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s:?}: {host:?} has no address"))
}

#[cfg(test)]
mod timeout_tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timeouts_from_defaults_file_env_and_upstream() {
        let none = |_: &str| None;
        let t = upstream_timeouts(&FileConfig::default(), none).unwrap();
        assert_eq!(t, UpstreamTimeouts::default());
        assert_eq!(t.connect, Duration::from_secs(10));
        assert_eq!(t.first_byte, Duration::from_secs(30));
        assert_eq!(t.stall, Duration::from_secs(20));

        let file: FileConfig = toml::from_str(
            r#"
            upstream_connect_timeout = "3s"
            upstream_stall_timeout = "1m"
            [upstreams."r.example"]
            first_byte_timeout = "2s"
            "#,
        )
        .unwrap();
        let env = |k: &str| (k == "BERTH_UPSTREAM_STALL_TIMEOUT").then(|| "7s".to_string());
        let t = upstream_timeouts(&file, env).unwrap();
        assert_eq!(t.connect, Duration::from_secs(3));
        assert_eq!(t.first_byte, Duration::from_secs(30));
        assert_eq!(t.stall, Duration::from_secs(7));
        let own = own_timeouts("r.example", &file.upstreams["r.example"], t).unwrap();
        assert_eq!(own.first_byte, Duration::from_secs(2));
        assert_eq!(own.connect, Duration::from_secs(3));

        let zero: FileConfig = toml::from_str(r#"upstream_stall_timeout = "0s""#).unwrap();
        assert!(upstream_timeouts(&zero, none).is_err());
        let bad: FileConfig = toml::from_str(r#"upstream_first_byte_timeout = "soon""#).unwrap();
        assert!(upstream_timeouts(&bad, none).is_err());
    }
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("200GiB"), Some(200 << 30));
        assert_eq!(super::parse_size("100 MiB"), Some(100 << 20));
        assert_eq!(super::parse_size("1TB"), Some(1_000_000_000_000));
        assert_eq!(super::parse_size("4096"), Some(4096));
        assert_eq!(super::parse_size("12 parsecs"), None);
        assert_eq!(super::parse_size("99999999999TiB"), None);
    }
}

#[cfg(test)]
mod listen_tests {
    use super::parse_listen;

    #[test]
    fn ports_names_and_addresses() {
        assert_eq!(parse_listen(":5012").unwrap().to_string(), "0.0.0.0:5012");
        assert_eq!(
            parse_listen("127.0.0.1:80").unwrap().to_string(),
            "127.0.0.1:80"
        );
        assert_eq!(parse_listen("[::]:5000").unwrap().to_string(), "[::]:5000");
        assert!(parse_listen("localhost:5012").unwrap().ip().is_loopback());
        for bad in ["5012", "host:", ":99999", ""] {
            assert!(parse_listen(bad).is_err(), "{bad} accepted");
        }
    }
}
