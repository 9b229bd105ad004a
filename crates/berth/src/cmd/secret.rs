//! `berth secret`: print a Kubernetes `kubernetes.io/dockerconfigjson`
//! Secret for a registry, for `imagePullSecrets`, KubeVirt and CDI.

use std::io::BufRead as _;

use berth_runtime_config::secret::{self, Credentials};

#[derive(clap::Args)]
#[command(after_help = "\
The Secret also carries accessKeyId/secretKey, which CDI's registry importer reads from a \
DataVolume's secretRef. With --ca-file or --tls-auto-root, a ConfigMap NAME-ca holding \
ca.crt follows it: a DataVolume's certConfigMap. Apply with `berth secret ... | kubectl apply -f -`.")]
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
    /// Also print a ConfigMap NAME-ca with this CA certificate (PEM), for
    /// CDI's `certConfigMap` when the registry's certificate is private.
    #[arg(long, value_name = "FILE", conflicts_with = "tls_auto_root")]
    ca_file: Option<std::path::PathBuf>,
    /// Like --ca-file, with the CA of `berth serve --tls-auto` on ROOT.
    #[arg(long, value_name = "ROOT")]
    tls_auto_root: Option<std::path::PathBuf>,
    /// CDI's own format instead: an Opaque Secret with only accessKeyId
    /// and secretKey (a DataVolume's `source.registry.secretRef`).
    #[arg(long)]
    cdi: bool,
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
    let build = if args.cdi {
        secret::build_cdi
    } else {
        secret::build
    };
    let secret = build(
        &args.registry,
        &creds,
        Some(&args.name),
        args.namespace.as_deref(),
    )?;
    print!("{}", secret::render(&secret)?);
    let ca = match (&args.ca_file, &args.tls_auto_root) {
        (Some(f), _) => Some(f.clone()),
        (None, Some(root)) => Some(root.join("tls").join("ca.crt")),
        (None, None) => None,
    };
    if let Some(path) = ca {
        use anyhow::Context;
        let pem = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the CA certificate {}", path.display()))?;
        let map = secret::ca_config_map(
            &format!("{}-ca", args.name),
            args.namespace.as_deref(),
            &pem,
        )?;
        print!("---\n{}", secret::render_config_map(&map)?);
    }
    Ok(())
}
