//! `berth serve`: the registry and pull-through cache server.
//!
//! Settings come from, in increasing precedence: built-in defaults, the TOML
//! file given by `--config`, `BERTH_<KEY>` environment variables, and flags.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_api::{router, ApiState};
use berth_cache::{Cache, CacheConfig, TtlPolicy, UpstreamAllowList, UpstreamSettings};
use berth_lifecycle::{Lifecycle, LifecycleConfig};
use berth_reference::normalise_registry;
use berth_registry::Registry;
use berth_storage::fs::FsStorage;
use berth_storage::root_lock;
use berth_upstream::{parse_upstream_override, AuthFile, Credentials, UpstreamConfig};
use serde::Deserialize;

/// How long in-flight requests may run on after SIGTERM/SIGINT.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on [default: 0.0.0.0:5000]
    #[arg(long, env = "BERTH_LISTEN")]
    listen: Option<SocketAddr>,
    /// Storage root directory [default: ./berth-data]
    #[arg(long, env = "BERTH_ROOT")]
    root: Option<PathBuf>,
    /// TOML configuration file; flags and BERTH_* variables override it.
    #[arg(long, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// Log format: text or json [default: text]
    #[arg(long, env = "BERTH_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Point an upstream registry host at another URL, e.g.
    /// `docker.io=https://mirror.corp.example` (repeatable).
    #[arg(
        long = "upstream",
        env = "BERTH_UPSTREAM",
        value_name = "HOST=URL",
        value_delimiter = ','
    )]
    upstreams: Vec<String>,
    /// Also contact upstream hosts matching this glob (`*` within one DNS
    /// label, `**` across labels), e.g. `*.corp.example` (repeatable). Any
    /// other host in a repository name or `?ns=` is NAME_UNKNOWN.
    #[arg(
        long = "allow-upstream",
        env = "BERTH_ALLOW_UPSTREAMS",
        value_name = "GLOB",
        value_delimiter = ','
    )]
    allow_upstreams: Vec<String>,
    /// Upstream for names that carry no registry host and are not local
    /// repositories (for Docker's `registry-mirrors`), e.g. `docker.io`.
    #[arg(long, env = "BERTH_DEFAULT_UPSTREAM", value_name = "HOST")]
    default_upstream: Option<String>,
    /// Never contact an upstream: serve only what is held (air-gapped sites).
    #[arg(long, env = "BERTH_OFFLINE")]
    offline: bool,
    /// How long a cached tag is served before it is revalidated upstream
    /// (e.g. `90s`, `5m`, `2h`) [default: 5m]
    #[arg(long, env = "BERTH_TAG_TTL", value_name = "DURATION")]
    tag_ttl: Option<String>,
    /// How often garbage collection and upload expiry run (`0` or `off`:
    /// never; `berth gc` still runs them on demand) [default: 1h]
    #[arg(long, env = "BERTH_GC_INTERVAL", value_name = "DURATION")]
    gc_interval: Option<String>,
    /// Upload sessions idle this long are ended and their bytes freed
    /// [default: 24h]
    #[arg(long, env = "BERTH_UPLOAD_TTL", value_name = "DURATION")]
    upload_ttl: Option<String>,
    /// Content younger than this is never garbage collected: a push
    /// uploads its blobs before the manifest that references them
    /// [default: 1h]
    #[arg(long, env = "BERTH_GC_GRACE", value_name = "DURATION")]
    gc_grace: Option<String>,
    /// Cap on stored bytes (e.g. `200GiB`): past it, the mirrored images
    /// pulled least recently are evicted; pushed content is never evicted
    #[arg(long, env = "BERTH_CACHE_MAX_SIZE", value_name = "SIZE")]
    cache_max_size: Option<String>,
    /// Images pulled this recently are never evicted [default: 5m]
    #[arg(long, env = "BERTH_CACHE_MIN_AGE", value_name = "DURATION")]
    cache_min_age: Option<String>,
    /// Device usage (a fraction such as 0.9, or `off`) past which cached
    /// images are evicted, whoever filled the device [default: 0.9]
    #[arg(long, env = "BERTH_CACHE_HIGH_WATERMARK", value_name = "FRACTION|off")]
    cache_high_watermark: Option<String>,
    /// Serve HTTPS with this PEM certificate chain (re-read when it changes).
    #[arg(
        long,
        env = "BERTH_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(
        long,
        env = "BERTH_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Serve HTTPS with a certificate from a private CA kept under ROOT/tls/
    /// (`berth ca export` prints the CA).
    #[arg(long, env = "BERTH_TLS_AUTO", conflicts_with_all = ["tls_cert", "tls_key"])]
    tls_auto: bool,
    /// Extra names or addresses for the --tls-auto certificate (repeatable).
    #[arg(
        long = "tls-san",
        env = "BERTH_TLS_SAN",
        value_name = "NAME|IP",
        value_delimiter = ','
    )]
    tls_sans: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, clap::ValueEnum, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The configuration file. Unknown keys are errors, so typos don't pass silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    root: Option<PathBuf>,
    log_format: Option<LogFormat>,
    default_upstream: Option<String>,
    offline: Option<bool>,
    tag_ttl: Option<String>,
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
    }))
}

/// How the server speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TlsMode {
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
    tag_ttl: Option<String>,
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
struct Settings {
    listen: SocketAddr,
    root: PathBuf,
    log_format: LogFormat,
    default_upstream: Option<String>,
    cache: CacheConfig,
    lifecycle: LifecycleConfig,
    auth: Option<berth_auth::AuthConfig>,
    tls: TlsMode,
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
fn parse_size(s: &str) -> Option<u64> {
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

/// Build the cache configuration: file upstreams first, then `--upstream`
/// overrides of their URLs.
fn cache_config(file: &mut FileConfig, args: &ServeArgs) -> anyhow::Result<CacheConfig> {
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
        let mut client = UpstreamConfig::for_registry(&host)?;
        if let Some(url) = &u.url {
            let (_, url) = parse_upstream_override(&format!("{host}={url}"))?;
            client = client.with_base_url(url);
        }
        client = client
            .with_insecure(u.insecure)?
            .with_ca_file(u.ca_file.clone());
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
                client: UpstreamConfig::for_registry(&host)?,
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
    fn resolve(args: ServeArgs) -> anyhow::Result<Settings> {
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
        Ok(Settings {
            lifecycle,
            auth,
            tls,
            default_upstream: args
                .default_upstream
                .clone()
                .or(file.default_upstream.clone()),
            cache,
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 5000))),
            root: args
                .root
                .or(file.root)
                .unwrap_or_else(|| PathBuf::from("berth-data")),
            log_format: args
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
        })
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colour only for a person at a terminal; log files and journald get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(args)?;
    init_logging(settings.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(settings))
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.root)
        .with_context(|| format!("creating storage root {}", settings.root.display()))?;
    // Held until exit: no second server, and no `berth gc` working on the
    // files directly, while this one serves them.
    let _lock = root_lock::try_lock(&settings.root)
        .with_context(|| format!("locking storage root {}", settings.root.display()))?
        .with_context(|| {
            format!(
                "another berth process is using the storage root {}",
                settings.root.display()
            )
        })?;
    let storage = FsStorage::open(&settings.root)
        .await
        .with_context(|| format!("opening storage at {}", settings.root.display()))?;
    let registry =
        Arc::new(Registry::new(Arc::new(storage)).with_gc_grace(settings.lifecycle.gc_grace));
    if settings.cache.offline {
        tracing::info!("offline: no upstream will be contacted");
    }
    let lifecycle = Lifecycle::new(registry.clone(), settings.lifecycle.clone());
    let _schedule = lifecycle.spawn_schedule().map(AbortOnDrop);
    let _evictor = lifecycle.spawn_evictor().map(AbortOnDrop);
    let _admin = serve_admin(&settings.root, lifecycle.clone()).await?;
    let root = settings.root.clone();
    let cache = Cache::new(registry.clone(), settings.cache);
    let mut state = ApiState::with_cache(registry, cache, settings.default_upstream)
        .with_lifecycle_metrics(&lifecycle);
    if let Some(auth) = settings.auth {
        let auth =
            berth_auth::Auth::open(auth, &settings.root).context("access control ([auth])")?;
        if !settings.listen.ip().is_loopback() && matches!(settings.tls, TlsMode::Plain) {
            tracing::warn!(
                address = %settings.listen,
                "access control is on but berth speaks plain HTTP on a non-loopback address: \
                 passwords and tokens cross the network readable; use TLS in front of it or listen on loopback"
            );
        }
        tracing::info!(service = auth.service(), "access control is on");
        state = state.with_auth(Arc::new(auth));
    }
    let app = router(state);
    let tls = tls_config(&settings.tls, &settings.root, settings.listen)?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("listening on {}", settings.listen))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(address = %local, %scheme, root = %settings.root.display(), "berth is serving");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop = async move {
        let mut rx = stop_rx;
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let server = tokio::spawn(crate::listen::serve(
        listener,
        app,
        tls,
        stop,
        SHUTDOWN_GRACE,
    ));
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = stop_tx.send(true);
    let _ = std::fs::remove_file(admin_socket(&root));
    if !server.await.context("server task")? {
        tracing::warn!("in-flight requests still running after {SHUTDOWN_GRACE:?}; exiting")
    }
    Ok(())
}

/// Aborts a background task when dropped (at the end of `serve`).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The admin API on `ROOT/run/admin.sock` (see `berth_api::admin`). The
/// root's lock is held, so a socket file left there is a dead server's.
async fn serve_admin(root: &std::path::Path, lifecycle: Lifecycle) -> anyhow::Result<AbortOnDrop> {
    use std::os::unix::fs::PermissionsExt;
    let path = admin_socket(root);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing stale {}", path.display()))
        }
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("binding the admin socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    let app = berth_api::admin::router(lifecycle);
    Ok(AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("admin socket stopped: {e}");
        }
    })))
}

/// Where a server on `root` answers admin requests.
pub fn admin_socket(root: &std::path::Path) -> std::path::PathBuf {
    root_lock::run_dir(root).join("admin.sock")
}

/// How often `--tls-auto` looks whether its server certificate is due.
const RENEW_CHECK: Duration = Duration::from_secs(24 * 3600);

/// The TLS server configuration, if any. For `--tls-auto`, the CA and a
/// current server certificate are made now, and a daily task renews it.
fn tls_config(
    mode: &TlsMode,
    root: &std::path::Path,
    listen: SocketAddr,
) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    let (cert, key) = match mode {
        TlsMode::Plain => return Ok(None),
        TlsMode::Files { cert, key } => (cert.clone(), key.clone()),
        TlsMode::Auto { sans } => {
            let sans = crate::tls::auto::default_sans(Some(listen.ip()), sans);
            let (paths, _) = crate::tls::auto::ensure(root, &sans)
                .context("preparing the --tls-auto certificates")?;
            let root = root.to_path_buf();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(RENEW_CHECK);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let (root, sans) = (root.clone(), sans.clone());
                    match tokio::task::spawn_blocking(move || {
                        crate::tls::auto::ensure(&root, &sans)
                    })
                    .await
                    {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "renewing the --tls-auto certificate failed")
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "renewing the --tls-auto certificate failed")
                        }
                    }
                }
            });
            (paths.server_cert, paths.server_key)
        }
    };
    let resolver =
        crate::tls::ReloadingCert::open(&cert, &key).context("loading the TLS certificate")?;
    let config = crate::tls::server_config(Arc::new(resolver))?;
    Ok(Some(Arc::new(config)))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
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
