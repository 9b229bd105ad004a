//! The `berth` binary: one command-line entry point for the server and every
//! client-side verb. Each verb lives in its own module under `cmd/`; this file
//! only parses arguments, sets up logging and dispatches.
#![forbid(unsafe_code)]

mod cmd;
mod listen;
mod tls;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "OCI registry, pull-through cache and image tool"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry and pull-through cache.
    Serve(cmd::serve::ServeArgs),
    /// API tokens for CI and nodes: create, list, revoke.
    Token(cmd::token::TokenArgs),
    /// The --tls-auto private CA: `berth ca export` prints its certificate.
    Ca(cmd::ca::CaArgs),
    /// Write the mirror configuration for a container runtime.
    RuntimeConfig(cmd::runtime_config::RuntimeConfigArgs),
    /// Print a Kubernetes dockerconfigjson Secret for a registry.
    Secret(cmd::secret::SecretArgs),
    /// Check that this node's runtime is routed through a berth mirror.
    Doctor(cmd::doctor::DoctorArgs),
    /// Copy an image or a whole multi-arch index between transports.
    Copy(cmd::copy::CopyArgs),
    /// Show an image's digest, platforms, layers and config.
    Inspect(cmd::inspect::InspectArgs),
    /// List a registry's repositories.
    Ls(cmd::ls::LsArgs),
    /// List a repository's tags.
    Tags(cmd::ls::TagsArgs),
    /// Delete a manifest from a registry.
    Rm(cmd::rm::RmArgs),
    /// Make a berth server fetch images into its pull-through cache.
    Cache(cmd::cache::CacheArgs),
    /// Copy whole repositories (tag patterns) into a registry, incrementally.
    Sync(cmd::sync::SyncArgs),
    /// List the image references in Kubernetes YAML.
    Images(cmd::images::ImagesArgs),
    /// Air-gap bundles: many images in one archive.
    Bundle(cmd::bundle::BundleArgs),
    /// Delete what no manifest references and end abandoned uploads.
    Gc(cmd::gc::GcArgs),
    /// Re-hash every stored blob; quarantine any that does not match.
    Scrub(cmd::scrub::ScrubArgs),
    /// Show what is stored: in all, per upstream, pinned and cached.
    Du(cmd::scrub::DuArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => cmd::serve::run(args),
        Command::Token(args) => cmd::token::run(args),
        Command::Ca(args) => cmd::ca::run(args),
        Command::RuntimeConfig(args) => cmd::runtime_config::run(args),
        Command::Secret(args) => cmd::secret::run(args),
        Command::Doctor(args) => cmd::doctor::run(args),
        Command::Copy(args) => cmd::copy::run(args),
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Ls(args) => cmd::ls::run_ls(args),
        Command::Tags(args) => cmd::ls::run_tags(args),
        Command::Rm(args) => cmd::rm::run(args),
        Command::Cache(args) => cmd::cache::run(args),
        Command::Sync(args) => cmd::sync::run(args),
        Command::Images(args) => cmd::images::run(args),
        Command::Bundle(args) => cmd::bundle::run(args),
        Command::Gc(args) => cmd::gc::run(args),
        Command::Scrub(args) => cmd::scrub::run_scrub(args),
        Command::Du(args) => cmd::scrub::run_du(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.is::<cmd::AlreadyReported>() => {
            eprintln!("berth: {e}");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("berth: {e:#}");
            std::process::ExitCode::from(cmd::imaging::report_failure(&e))
        }
    }
}
