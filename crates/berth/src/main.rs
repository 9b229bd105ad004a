//! The `berth` binary: one command-line entry point for the server and every
//! client-side verb. Each verb lives in its own module under `cmd/`; this file
//! only parses arguments, sets up logging and dispatches.
#![forbid(unsafe_code)]

mod cmd;

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
    /// Write the mirror configuration for a container runtime.
    RuntimeConfig(cmd::runtime_config::RuntimeConfigArgs),
    /// Print a Kubernetes dockerconfigjson Secret for a registry.
    Secret(cmd::secret::SecretArgs),
    /// Check that this node's runtime is routed through a berth mirror.
    Doctor(cmd::doctor::DoctorArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => cmd::serve::run(args),
        Command::RuntimeConfig(args) => cmd::runtime_config::run(args),
        Command::Secret(args) => cmd::secret::run(args),
        Command::Doctor(args) => cmd::doctor::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
