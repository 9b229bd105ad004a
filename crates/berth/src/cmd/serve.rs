//! `berth serve`: the registry and pull-through cache server.
//!
//! Settings come from, in increasing precedence: built-in defaults, the TOML
//! file given by `--config`, `BERTH_<KEY>` environment variables, and flags.

mod limits;
mod reload;
mod settings;
mod storage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_api::{router, ApiState};
use berth_cache::Cache;
use berth_lifecycle::Lifecycle;
use berth_registry::Registry;
use berth_storage::root_lock;
use serde::Deserialize;

pub use settings::parse_duration;
use settings::{Settings, TlsMode};

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on: IP:PORT, [IPv6]:PORT, HOST:PORT (a name, its
    /// first address) or :PORT (every IPv4 address) [default: 0.0.0.0:5000]
    #[arg(long, env = "BERTH_LISTEN", value_parser = settings::parse_listen)]
    listen: Option<SocketAddr>,
    /// Storage root directory [default: ./berth-data]
    #[arg(long, env = "BERTH_ROOT")]
    root: Option<PathBuf>,
    /// Where blobs and metadata live: a directory (as --root), or
    /// `s3://BUCKET[/PREFIX]` with the rest of the bucket's settings in the
    /// `[storage]` table or `BERTH_S3_*` variables [default: the root]
    #[arg(long, env = "BERTH_STORAGE", value_name = "DIR|s3://BUCKET/PREFIX")]
    storage: Option<String>,
    /// TOML configuration file; flags and BERTH_* variables override it.
    #[arg(long, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// Log format: text or json [default: text]
    #[arg(long, env = "BERTH_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// What is logged: a level (`error`, `warn`, `info`, `debug`) or
    /// per-target directives (`info,berth::request=warn` drops the request
    /// lines); `RUST_LOG`, when set, wins [default: info]
    #[arg(long, env = "BERTH_LOG_LEVEL", value_name = "FILTER")]
    log_level: Option<String>,
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
    /// Do not route a request whose Host header names a known or configured
    /// upstream (`registry-1.docker.io`, where /etc/hosts points it at berth)
    /// to that upstream's mirror.
    #[arg(long, env = "BERTH_NO_HOST_ROUTING")]
    no_host_routing: bool,
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

fn init_logging(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            tracing_subscriber::EnvFilter::try_new(&v).with_context(|| format!("RUST_LOG={v:?}"))?
        }
        _ => tracing_subscriber::EnvFilter::try_new(level)
            .with_context(|| format!("--log-level {level:?}"))?,
    };
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
    Ok(())
}

/// Threads for blocking file work (tokio's default is 512).
const MAX_BLOCKING_THREADS: usize = 64;

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(args.clone())?;
    init_logging(settings.log_format, &settings.log_level)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // File reads and writes wait in a queue beyond this many threads
        // instead of each starting one: 1,000 downloads at once had made
        // hundreds, whose stacks and heaps were most of the memory they held.
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(serve(settings, args));
    // Dropping a runtime waits for every blocking task; one stuck on a slow
    // disk must not hold the exit past the shutdown grace period.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn serve(settings: Settings, args: ServeArgs) -> anyhow::Result<()> {
    for w in &settings.warnings {
        tracing::warn!("{w}");
    }
    let budget = settings
        .memory_budget
        .unwrap_or(berth_storage::DEFAULT_MEMORY_BUDGET);
    // The budget covers connections too: a part of it (what the connection
    // limit could hold, at most half) is theirs, the rest is for buffers.
    let l = &settings.limits;
    let for_connections = (l.max_connections as u64 * l.connection_memory as u64).min(budget / 2);
    berth_storage::set_connection_budget(for_connections);
    berth_storage::set_memory_budget(budget - for_connections);
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
    let storage = settings.storage.open(&settings.root).await?;
    let mut registry = Registry::new(storage).with_gc_grace(settings.lifecycle.gc_grace);
    if let storage::StorageChoice::S3 { memo_ttl, .. } = &settings.storage {
        // Other replicas write the same bucket: what this one remembers of
        // tags and listings is re-read once older than this.
        registry = registry.with_memo_ttl(*memo_ttl);
    }
    let registry = Arc::new(registry);
    super::admin::migrate(&registry).await?;
    let tokens = api_tokens(&registry, &settings.root);
    if settings.cache.offline {
        tracing::info!("offline: no upstream will be contacted");
    }
    let lifecycle = Lifecycle::new(registry.clone(), settings.lifecycle.clone());
    let _schedule = lifecycle.spawn_schedule().map(AbortOnDrop);
    let _evictor = lifecycle.spawn_evictor().map(AbortOnDrop);
    // Without the socket (a root path longer than a socket address allows,
    // say) berth still serves; only `berth gc` & co. against it are refused.
    let _admin = match serve_admin(&settings.root, lifecycle.clone(), tokens.clone()).await {
        Ok(task) => Some(task),
        Err(e) => {
            tracing::warn!(
                "no admin socket: {e:#}; berth gc, scrub and du cannot reach this server"
            );
            None
        }
    };
    let root = settings.root.clone();
    let mut cache = Cache::new(registry.clone(), settings.cache);
    if let Some(replicas) = settings.replicas {
        tracing::info!(me = %replicas.me, peers = replicas.peers.len(), dns = ?replicas.dns, "replicas: cold blobs are fetched by their owner replica");
        cache = cache.with_peers(berth_cache::peers::Peers::new(replicas)?);
    }
    // Only with `peers_dns`: a fixed list never changes.
    let _discovery = cache
        .spawn_peer_refresh(Duration::from_secs(10))
        .map(AbortOnDrop);
    let mut state = ApiState::with_cache(registry, cache.clone(), settings.default_upstream)
        .with_lifecycle_metrics(&lifecycle);
    let mut reloadable = reload::Reloadable {
        args,
        cache,
        auth: None,
    };
    if let Some(auth) = settings.auth {
        let auth = Arc::new(
            berth_auth::Auth::open(auth, &settings.root)
                .context("access control ([auth])")?
                .with_tokens(tokens),
        );
        if !settings.listen.ip().is_loopback() && matches!(settings.tls, TlsMode::Plain) {
            tracing::warn!(
                address = %settings.listen,
                "access control is on but berth speaks plain HTTP on a non-loopback address: \
                 passwords and tokens cross the network readable; use TLS in front of it or listen on loopback"
            );
        }
        tracing::info!(service = auth.service(), "access control is on");
        reloadable.auth = Some(auth.clone());
        state = state.with_auth(auth);
    }
    let _reload = AbortOnDrop(tokio::spawn(reloadable.run()));
    let app = router(state);
    let tls = tls_config(&settings.tls, &settings.root, settings.listen)?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("listening on {}", settings.listen))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        address = %local,
        %scheme,
        root = %settings.root.display(),
        storage = %settings.storage.describe(&settings.root),
        "berth is serving"
    );
    let l = &settings.limits;
    tracing::info!(
        max_connections = l.max_connections,
        header_timeout = ?l.header_timeout,
        idle_timeout = ?l.idle_timeout,
        send_timeout = ?l.send_timeout,
        body_timeout = ?l.body_timeout,
        memory_budget = budget,
        connection_memory = l.connection_memory,
        connections_by_memory = for_connections / l.connection_memory.max(1) as u64,
        "limits"
    );

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
        settings.limits,
    ));
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = stop_tx.send(true);
    let _ = std::fs::remove_file(admin_socket(&root));
    if !server.await.context("server task")? {
        tracing::warn!(
            grace = ?settings.limits.shutdown_grace,
            "requests still running after the shutdown grace period were ended"
        )
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
async fn serve_admin(
    root: &std::path::Path,
    lifecycle: Lifecycle,
    tokens: berth_auth::apitoken::TokenStore,
) -> anyhow::Result<AbortOnDrop> {
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
    let app = berth_api::admin::router(lifecycle, tokens);
    Ok(AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("admin socket stopped: {e}");
        }
    })))
}

/// Where API tokens live: under the root, or in the bucket when replicas
/// share the storage (so that a token made through one is good at all).
/// Records left under the root of a replica are not used: say so.
fn api_tokens(
    registry: &Arc<Registry>,
    root: &std::path::Path,
) -> berth_auth::apitoken::TokenStore {
    use berth_auth::apitoken::TokenStore;
    let local_dir = berth_auth::auth_dir(root).join("tokens");
    if !registry.is_shared() {
        return TokenStore::new(&berth_auth::auth_dir(root));
    }
    let left = std::fs::read_dir(&local_dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0);
    if left > 0 {
        tracing::warn!(dir = %local_dir.display(), tokens = left,
            "API tokens under the root are not used with shared storage (they live in the bucket): \
             create them again with `berth token create` while this replica runs");
    }
    TokenStore::shared(registry.storage().clone())
}

/// Where a server on `root` answers admin requests.
pub fn admin_socket(root: &std::path::Path) -> std::path::PathBuf {
    root_lock::run_dir(root).join("admin.sock")
}

/// `--tls-auto` looks at its server certificate at least this often (and
/// when it falls due), so one replaced by hand is judged within a day.
const RENEW_CHECK: Duration = Duration::from_secs(24 * 3600);
/// After a failed renewal, the next try.
const RENEW_RETRY: Duration = Duration::from_secs(600);

/// The TLS server configuration, if any. For `--tls-auto`, the CA and a
/// current server certificate are made now, and a task renews it when due.
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
            let ensured = crate::tls::auto::ensure(root, &sans)
                .context("preparing the --tls-auto certificates")?;
            tokio::spawn(keep_renewing(root.to_path_buf(), sans, ensured.renew_at));
            let paths = ensured.paths;
            (paths.server_cert, paths.server_key)
        }
    };
    let resolver =
        crate::tls::ReloadingCert::open(&cert, &key).context("loading the TLS certificate")?;
    let config = crate::tls::server_config(Arc::new(resolver))?;
    Ok(Some(Arc::new(config)))
}

/// Issues the `--tls-auto` server certificate again whenever it falls due
/// (first at `renew_at`), looking at least daily.
async fn keep_renewing(root: PathBuf, sans: Vec<String>, mut renew_at: std::time::SystemTime) {
    loop {
        let wait = renew_at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
            .min(RENEW_CHECK);
        tokio::time::sleep(wait).await;
        let (r, s) = (root.clone(), sans.clone());
        let outcome = tokio::task::spawn_blocking(move || crate::tls::auto::ensure(&r, &s))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        renew_at = match outcome {
            Ok(ensured) => {
                if !ensured.issued {
                    tracing::debug!("the --tls-auto server certificate is not due yet");
                }
                ensured.renew_at
            }
            Err(e) => {
                tracing::error!(error = %e, "renewing the --tls-auto certificate failed");
                std::time::SystemTime::now() + RENEW_RETRY
            }
        };
    }
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
