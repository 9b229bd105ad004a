//! `berth doctor`: check, on a node, that the container runtime is routed
//! through a berth mirror and that a tag resolves through it. The checks live
//! in `berth_runtime_config::doctor`; this file parses flags and prints.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use berth_reference::ImageReference;
use berth_runtime_config::doctor::{self, DoctorOptions, Level, Runtime};
use berth_runtime_config::{Mirror, Registries};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(clap::Args)]
#[command(after_help = "\
Exits 0 when everything checked is fine (warnings included), 1 when something fails. \
Each finding that is not fine is followed by its fix.")]
pub struct DoctorArgs {
    /// The berth mirror the node should use; also probed directly.
    #[arg(long, value_name = "URL")]
    mirror: Option<String>,
    /// Comma-separated registries that should be routed; `*` for every registry.
    #[arg(long, value_name = "LIST", default_value = berth_runtime_config::DEFAULT_REGISTRIES)]
    registries: String,
    /// Runtime to check: containerd, k3s, rke2, crio, podman, docker (repeatable) [default: every one configured].
    #[arg(long, value_name = "NAME")]
    runtime: Vec<String>,
    /// Image to resolve through the mirror (repeatable) [default: registry.k8s.io/pause:3.10].
    #[arg(long, value_name = "REF")]
    image: Vec<String>,
    /// Read the node's files under this directory instead of /.
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// CA certificate to trust the mirror's TLS certificate with.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Do not verify the mirror's TLS certificate.
    #[arg(long)]
    skip_verify: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Seconds to wait for the mirror on each request.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    timeout: u64,
}

pub fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let mirror = args.mirror.as_deref().map(Mirror::parse).transpose()?;
    let registries = Registries::parse(&args.registries)?;
    let runtimes = args
        .runtime
        .iter()
        .map(|r| Runtime::parse(r).with_context(|| format!("unknown runtime {r:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let images = args
        .image
        .iter()
        .map(|i| {
            i.parse::<ImageReference>()
                .with_context(|| format!("--image {i:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let output = args.output;
    let opts = DoctorOptions {
        root: args.root,
        runtimes,
        mirror,
        registries,
        images,
        ca: args.ca,
        skip_verify: args.skip_verify,
        timeout: Duration::from_secs(args.timeout.max(1)),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(doctor::run(&opts))?;
    match output {
        Output::Text => print!("{report}"),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    if report.worst() == Level::Fail {
        return Err(super::AlreadyReported("some checks failed; see the fixes above").into());
    }
    Ok(())
}
