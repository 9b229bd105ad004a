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
use berth_reference::normalise_registry;
use berth_registry::Registry;
use berth_storage::fs::FsStorage;
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
    #[serde(default)]
    upstreams: HashMap<String, FileUpstream>,
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
    tls: TlsMode,
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
        let tls = tls_mode(&file, &args)?;
        Ok(Settings {
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
    let storage = FsStorage::open(&settings.root)
        .await
        .with_context(|| format!("opening storage at {}", settings.root.display()))?;
    let registry = Arc::new(Registry::new(Arc::new(storage)));
    if settings.cache.offline {
        tracing::info!("offline: no upstream will be contacted");
    }
    let cache = Cache::new(registry.clone(), settings.cache);
    let uploads = registry.clone();
    let app = router(ApiState::with_cache(
        registry,
        cache,
        settings.default_upstream,
    ));
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
    if !server.await.context("server task")? {
        tracing::warn!("in-flight requests still running after {SHUTDOWN_GRACE:?}; exiting")
    }
    // Chunks already answered must reach the disk. A request still running
    // past the grace period holds its session, so this wait is bounded too.
    if tokio::time::timeout(SHUTDOWN_GRACE, uploads.settle_uploads())
        .await
        .is_err()
    {
        tracing::warn!("uploads' last writes still pending after {SHUTDOWN_GRACE:?}; exiting");
    }
    Ok(())
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
