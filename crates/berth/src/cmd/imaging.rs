//! What the image verbs (`copy`, `inspect`, `ls`, `tags`, `rm`, `cache`,
//! `bundle`) share on the command line: registry flags, `--output`,
//! progress bars on a terminal, and turning a failure into advice and an
//! exit code that scripts can rely on:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | any other failure |
//! | 2 | usage: bad flags, bad reference, unsupported combination |
//! | 3 | not found: image, tag, repository, file |
//! | 4 | authentication or authorization failed |
//! | 5 | TLS verification failed |
//! | 6 | registry unreachable or failing |
//! | 7 | integrity: content does not match its digest |
//! | 8 | partial: some of several images failed (`cache`) |

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use berth_reference::Digest;
use berth_transfer::{
    BlobOutcome, ErrorKind, NoProgress, Platform, Progress, RegistryOptions, Selection,
    TransferError,
};
use berth_upstream::{parse_upstream_override, Credentials};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Exit code for a partial failure.
pub const EXIT_PARTIAL: u8 = 8;

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

/// How to reach registries (shared by every image verb).
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Credentials USER:PASSWORD (otherwise from the Docker/Podman auth files).
    #[arg(long, value_name = "USER:PASS")]
    pub creds: Option<String>,
    /// An auth.json/config.json to read credentials from first.
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Verify TLS certificates (default). `--tls-verify=false` also allows
    /// plain HTTP. Loopback registries are spoken to over plain HTTP.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub tls_verify: Option<bool>,
    /// A directory of CA certificates (*.crt) to trust.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// A PEM file of CA certificates to trust.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Reach registry HOST at URL instead (repeatable), e.g.
    /// docker.io=https://mirror.example.
    #[arg(long = "upstream", value_name = "HOST=URL")]
    pub upstreams: Vec<String>,
}

impl RegistryArgs {
    pub fn options(&self) -> anyhow::Result<RegistryOptions> {
        let credentials = match &self.creds {
            Some(c) => Some(
                Credentials::parse_user_pass(c)
                    .ok_or_else(|| usage("--creds must be USER:PASSWORD"))?,
            ),
            None => None,
        };
        let mut upstreams = Vec::new();
        for u in &self.upstreams {
            upstreams.push(parse_upstream_override(u).map_err(|e| usage(e.to_string()))?);
        }
        Ok(RegistryOptions {
            credentials,
            auth_file: self.authfile.clone(),
            tls_verify: self.tls_verify,
            cert_dir: self.cert_dir.clone(),
            ca_file: self.ca_file.clone(),
            upstreams,
        })
    }
}

/// `--all` / `--platform`.
#[derive(Debug, Clone, clap::Args)]
pub struct SelectArgs {
    /// Copy every platform of a multi-arch index (its exact bytes).
    #[arg(long, conflicts_with = "platform")]
    pub all: bool,
    /// Copy one platform's image out of an index: OS/ARCH[/VARIANT].
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
}

impl SelectArgs {
    /// The selection, with `default` when neither flag is given.
    pub fn selection(&self, default: Selection) -> anyhow::Result<Selection> {
        if self.all {
            return Ok(Selection::All);
        }
        match &self.platform {
            Some(p) => Ok(Selection::Platform(p.parse::<Platform>().map_err(fail)?)),
            None => Ok(default),
        }
    }
}

/// How many blobs a transfer moves at once.
#[derive(Debug, clap::Args)]
pub struct ParallelArgs {
    /// Blobs transferred at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub parallel: u16,
}

impl ParallelArgs {
    pub fn count(&self) -> usize {
        usize::from(self.parallel)
    }
}

/// A usage error (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

/// A failure that already said what to do; carries its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}\nhint: {hint}")]
pub struct Advised {
    pub message: String,
    pub hint: String,
    pub code: u8,
}

/// Partial failure of a multi-image verb (exit code 8).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Partial(pub String);

fn code_of(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Other => 1,
        ErrorKind::Usage => 2,
        ErrorKind::NotFound => 3,
        ErrorKind::Auth => 4,
        ErrorKind::Tls => 5,
        ErrorKind::Network => 6,
        ErrorKind::Integrity => 7,
    }
}

fn hint_of(kind: ErrorKind, registry: bool) -> Option<&'static str> {
    Some(match kind {
        ErrorKind::NotFound if !registry => "check the path, and the image name after it (oci:DIR:NAME, oci-archive:FILE:NAME, docker-archive:FILE:REPO:TAG)",
        ErrorKind::NotFound => "check the name and tag; `berth tags REPO` lists a repository's tags, `berth ls REGISTRY` its repositories",
        ErrorKind::Auth => "the registry wants credentials: pass --creds USER:PASSWORD, or log in with `docker login`/`podman login` (berth reads ~/.docker/config.json and $XDG_RUNTIME_DIR/containers/auth.json)",
        ErrorKind::Tls => "TLS failed: trust the registry's CA with --cert-dir DIR (*.crt files) or --ca-file FILE; for a registry without TLS or with an untrusted certificate, --tls-verify=false",
        ErrorKind::Network => "the registry could not be reached or failed; check the address and that it is up (a registry without TLS needs --tls-verify=false unless it is on loopback)",
        ErrorKind::Integrity => "content does not match its digest: the source is corrupt or was modified; fetch it again",
        ErrorKind::Usage | ErrorKind::Other => return None,
    })
}

/// Turn a transfer failure into an error with advice and an exit code.
pub fn fail(e: TransferError) -> anyhow::Error {
    let kind = e.kind();
    let message = e.to_string();
    match hint_of(kind, e.is_registry()) {
        Some(h) => anyhow::Error::new(Advised {
            message,
            hint: h.to_string(),
            code: code_of(kind),
        }),
        None if kind == ErrorKind::Usage => usage(message),
        None => anyhow::Error::new(e),
    }
}

/// The exit code for a failed verb.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(a) = cause.downcast_ref::<Advised>() {
            return a.code;
        }
        if cause.downcast_ref::<Usage>().is_some() {
            return 2;
        }
        if cause.downcast_ref::<Partial>().is_some() {
            return EXIT_PARTIAL;
        }
        if let Some(t) = cause.downcast_ref::<TransferError>() {
            return code_of(t.kind());
        }
    }
    1
}

/// The exit code for a failed verb; with `--output json`, the failure is
/// also printed on stdout as `{"error":{"message","hint","exitCode"}}`.
pub fn report_failure(e: &anyhow::Error) -> u8 {
    let code = exit_code(e);
    let args: Vec<String> = std::env::args().collect();
    let json = args
        .windows(2)
        .any(|w| w[0] == "--output" && w[1] == "json")
        || args.iter().any(|a| a == "--output=json");
    if json {
        let (message, hint) = match e.chain().find_map(|c| c.downcast_ref::<Advised>()) {
            Some(a) => (a.message.clone(), Some(a.hint.clone())),
            None => (format!("{e:#}"), None),
        };
        let v = serde_json::json!({"error": {"message": message, "hint": hint, "exitCode": code}});
        println!("{v}");
    }
    code
}

/// A runtime for one verb; warnings (a resumed or restarted transfer) go
/// to stderr, more with `RUST_LOG`.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .try_init();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Print JSON to stdout.
pub fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Human-readable bytes (one spelling everywhere: berth-lifecycle's).
pub use berth_lifecycle::human_bytes as human;

/// Progress bars (per blob and overall) when stderr is a terminal and the
/// output is text; otherwise nothing.
pub fn progress(format: OutputFormat) -> Arc<dyn Progress> {
    if format == OutputFormat::Text && std::io::stderr().is_terminal() {
        Arc::new(Bars::new())
    } else {
        Arc::new(NoProgress)
    }
}

struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    blobs: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Bars {
    fn new() -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        overall.set_prefix("total");
        Bars {
            multi,
            overall,
            blobs: Mutex::new(HashMap::new()),
        }
    }
}

impl Progress for Bars {
    fn plan(&self, _blobs: usize, bytes: u64) {
        self.overall.inc_length(bytes);
    }

    fn blob_started(&self, digest: &Digest, size: u64) {
        let bar = self
            .multi
            .insert_before(&self.overall, ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:40}] {bytes}/{total_bytes}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(digest.hex().chars().take(12).collect::<String>());
        if let Ok(mut m) = self.blobs.lock() {
            m.insert(digest.clone(), bar);
        }
    }

    fn blob_progress(&self, digest: &Digest, bytes: u64) {
        self.overall.inc(bytes);
        if let Ok(m) = self.blobs.lock() {
            if let Some(b) = m.get(digest) {
                b.inc(bytes);
            }
        }
    }

    fn blob_finished(&self, digest: &Digest, size: u64, outcome: BlobOutcome) {
        if outcome != BlobOutcome::Copied {
            self.overall.inc(size);
        }
        if let Ok(mut m) = self.blobs.lock() {
            if let Some(b) = m.remove(digest) {
                b.finish_and_clear();
                self.multi.remove(&b);
            }
        }
        let _ = self.multi.println(format!(
            "{} {}",
            match outcome {
                BlobOutcome::Copied => "copied ",
                BlobOutcome::Skipped => "exists ",
                BlobOutcome::Mounted => "mounted",
            },
            digest
        ));
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.overall.finish_and_clear();
    }
}

/// A list named on the command line: the file's text, or stdin's for `-`.
pub fn read_list(name: &str) -> anyhow::Result<String> {
    use std::io::Read as _;
    if name == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the list from stdin")?;
        Ok(s)
    } else {
        std::fs::read_to_string(name).with_context(|| format!("reading {name}"))
    }
}
