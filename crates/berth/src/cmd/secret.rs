//! `berth secret`: print a Kubernetes `kubernetes.io/dockerconfigjson`
//! Secret for a registry, for `imagePullSecrets`, KubeVirt and CDI.

use std::io::BufRead as _;

use berth_runtime_config::secret::{self, Credentials};

#[derive(clap::Args)]
#[command(after_help = "\
The Secret also carries accessKeyId/secretKey, which CDI's registry importer reads from a \
DataVolume's secretRef. Apply it with `berth secret ... | kubectl apply -f -`.")]
pub struct SecretArgs {
    /// Registry host the credentials are for (e.g. mirror.lan:5000, docker.io).
    #[arg(long, value_name = "HOST")]
    registry: String,
    /// USER:PASS; `-` reads one line from stdin.
    #[arg(
        long,
        value_name = "USER:PASS",
        env = "BERTH_CREDS",
        hide_env_values = true
    )]
    creds: String,
    /// Secret name.
    #[arg(long, value_name = "N", default_value = secret::DEFAULT_NAME)]
    name: String,
    /// Namespace (omitted: kubectl's current namespace).
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
}

pub fn run(args: SecretArgs) -> anyhow::Result<()> {
    let raw = if args.creds == "-" {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line
    } else {
        args.creds
    };
    let creds = Credentials::parse(&raw)?;
    let secret = secret::build(
        &args.registry,
        &creds,
        Some(&args.name),
        args.namespace.as_deref(),
    )?;
    print!("{}", secret::render(&secret)?);
    Ok(())
}
