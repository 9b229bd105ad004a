//! `berth ca export`: print the `--tls-auto` private CA certificate, for
//! nodes and clients to trust (`certs.d/<host>/ca.crt`, `--cacert`, …).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct CaArgs {
    #[command(subcommand)]
    command: CaCommand,
}

#[derive(clap::Subcommand, Debug)]
enum CaCommand {
    /// Print the CA certificate (PEM) that `berth serve --tls-auto` made.
    Export {
        /// The server's storage root [default: ./berth-data]
        #[arg(long, env = "BERTH_ROOT")]
        root: Option<PathBuf>,
    },
}

pub fn run(args: CaArgs) -> anyhow::Result<()> {
    match args.command {
        CaCommand::Export { root } => {
            let root = root.unwrap_or_else(|| PathBuf::from("berth-data"));
            let paths = crate::tls::auto::AutoPaths::under(&root);
            let pem = std::fs::read(&paths.ca_cert).with_context(|| {
                format!(
                    "no --tls-auto CA at {} (start `berth serve --tls-auto --root {}` once)",
                    paths.ca_cert.display(),
                    root.display()
                )
            })?;
            std::io::stdout()
                .write_all(&pem)
                .context("writing the CA to stdout")?;
            Ok(())
        }
    }
}
