//! `berth runtime-config`: write (or print) the mirror configuration for a
//! container runtime. The formats live in `berth-runtime-config`; this file
//! turns flags into settings, reads files that are merged, and writes or
//! prints the plan.

use std::path::PathBuf;

use anyhow::Context as _;
use berth_runtime_config::{
    containerd, crio, docker, k3s, write, Mirror, Plan, Registries, Settings,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// containerd: DEST/<host>/hosts.toml (default DEST /etc/containerd/certs.d).
    Containerd,
    /// k3s: /etc/rancher/k3s/registries.yaml, merged.
    K3s,
    /// RKE2: /etc/rancher/rke2/registries.yaml, merged.
    Rke2,
    /// k3d: ./registries.yaml for `k3d cluster create --registry-config`, merged.
    K3d,
    /// CRI-O: /etc/containers/registries.conf.d/90-berth-mirror.conf.
    Crio,
    /// Podman (and Buildah, skopeo): the same registries.conf drop-in.
    Podman,
    /// Docker Engine: /etc/docker/daemon.json, merged (Docker Hub only).
    Docker,
}

#[derive(clap::Args)]
#[command(after_help = "\
MIRROR URL: http://HOST:PORT is a plain-HTTP mirror (marked insecure where the runtime needs it); \
https://HOST[:PORT] is TLS; a bare HOST[:PORT] means https, as it does for Docker and containerd.

Existing files are replaced atomically and backed up beside themselves first \
(NAME.berth-backup-<UTC time>); k3s/RKE2/k3d registries.yaml and Docker's daemon.json are merged, \
keeping everything else they hold.

Examples:
  berth runtime-config containerd --mirror http://10.0.0.5:5000
  berth runtime-config k3s --mirror https://mirror.lan:5000 --ca /etc/ssl/mirror-ca.pem --registries '*'
  berth runtime-config crio --mirror http://10.0.0.5:5000 --dry-run
  berth runtime-config containerd --mirror https://harbor.corp --override-path 'airgap/{registry}'
  berth runtime-config containerd --mirror http://10.0.0.5:5000 --apply   # + config_path in /etc/containerd/config.toml
  berth runtime-config containerd --mirror http://10.0.0.5:5000 --apply \\
      --dest /etc/k0s/containerd.d/certs.d --containerd-config /etc/k0s/containerd.d/cri-registry.toml")]
pub struct RuntimeConfigArgs {
    /// Which runtime to configure.
    #[arg(value_enum)]
    target: Target,
    /// The berth mirror as nodes reach it (see MIRROR URL below).
    #[arg(long, value_name = "URL")]
    mirror: String,
    /// Comma-separated registry hosts to route through the mirror; `*` for every registry.
    #[arg(long, value_name = "LIST", default_value = berth_runtime_config::DEFAULT_REGISTRIES)]
    registries: String,
    /// Where to write: a directory for containerd, a file otherwise [default: the runtime's standard location].
    #[arg(long, value_name = "PATH")]
    dest: Option<PathBuf>,
    /// Print the files instead of writing them.
    #[arg(long)]
    dry_run: bool,
    /// CA certificate (path on the node) that signs the mirror's TLS certificate.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Do not verify the mirror's TLS certificate.
    #[arg(long)]
    skip_verify: bool,
    /// Install this CA certificate (PEM, read here) with the configuration:
    /// beside hosts.toml / registries.yaml, or as certs.d/<mirror>/ca.crt
    /// for CRI-O, Podman and Docker.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["tls_auto_root", "ca"])]
    ca_file: Option<PathBuf>,
    /// Install the CA of `berth serve --tls-auto --root ROOT` (ROOT/tls/ca.crt).
    #[arg(long, value_name = "ROOT", conflicts_with = "ca")]
    tls_auto_root: Option<PathBuf>,
    /// The certs.d directory for CRI-O/Podman/Docker [default: /etc/containers/certs.d, /etc/docker/certs.d].
    #[arg(long, value_name = "DIR")]
    certs_dir: Option<PathBuf>,
    /// USER:PASS for the mirror (an API token works as the password):
    /// written to k3s/RKE2/k3d's registries.yaml (`configs.<mirror>.auth`).
    /// Other runtimes take a pull Secret (`berth secret`).
    #[arg(
        long,
        value_name = "USER:PASS",
        env = "BERTH_CREDS",
        hide_env_values = true
    )]
    creds: Option<String>,
    /// The mirror is a plain registry (registry:2, a Harbor project), not
    /// berth: each registry's images are under PREFIX there (none: at its
    /// root); `{registry}` in PREFIX is berth's name of the registry
    /// (`docker.io`, `registry.local__5000`), as `berth bundle load --to
    /// MIRROR/PREFIX` lays them out. containerd gets `override_path`,
    /// CRI-O/Podman a location with the prefix, k3s a `rewrite`.
    #[arg(long, value_name = "PREFIX", num_args = 0..=1, default_missing_value = "")]
    override_path: Option<String>,
    /// containerd: also point containerd's own configuration at the hosts
    /// directory (`config_path` in the CRI plugin's registry table for the
    /// file's version), keeping everything else in it and a backup.
    #[arg(long)]
    apply: bool,
    /// The containerd configuration --apply edits; a file that does not
    /// exist is created as a drop-in (k0s: /etc/k0s/containerd.d/cri-registry.toml).
    #[arg(long, value_name = "FILE", default_value = containerd::CONFIG_TOML, requires = "apply")]
    containerd_config: PathBuf,
}

/// The CA to install, read from `--ca-file` or the `--tls-auto` root.
fn ca_pem(args: &RuntimeConfigArgs) -> anyhow::Result<Option<String>> {
    let path = match (&args.ca_file, &args.tls_auto_root) {
        (Some(f), _) => f.clone(),
        (None, Some(root)) => root.join("tls").join("ca.crt"),
        (None, None) => return Ok(None),
    };
    let pem = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the CA certificate {}", path.display()))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        anyhow::bail!("{} holds no PEM certificate", path.display());
    }
    Ok(Some(pem))
}

fn default_dest(target: Target) -> PathBuf {
    PathBuf::from(match target {
        Target::Containerd => containerd::DEFAULT_DEST,
        Target::K3s => k3s::K3S_DEST,
        Target::Rke2 => k3s::RKE2_DEST,
        Target::K3d => k3s::K3D_DEST,
        Target::Crio | Target::Podman => crio::DEFAULT_DEST,
        Target::Docker => docker::DEFAULT_DEST,
    })
}

pub fn run(args: RuntimeConfigArgs) -> anyhow::Result<()> {
    let mirror = Mirror::parse(&args.mirror)?;
    let registries = Registries::parse(&args.registries)?;
    let ca_pem = ca_pem(&args)?;
    let ca = match args.ca {
        Some(p) => {
            Some(std::path::absolute(&p).with_context(|| format!("resolving {}", p.display()))?)
        }
        None => None,
    };
    if (ca.is_some() || ca_pem.is_some()) && mirror.is_plain_http() {
        anyhow::bail!("--ca is for an https:// mirror; {mirror} is plain HTTP");
    }
    if args.skip_verify && mirror.is_plain_http() {
        anyhow::bail!("--skip-verify is for an https:// mirror; {mirror} is plain HTTP");
    }
    let creds = args
        .creds
        .as_deref()
        .map(berth_runtime_config::secret::Credentials::parse)
        .transpose()?;
    if creds.is_some() && !matches!(args.target, Target::K3s | Target::Rke2 | Target::K3d) {
        anyhow::bail!(
            "--creds goes into k3s/RKE2/k3d's registries.yaml; for {:?} use a pull Secret (berth secret)",
            args.target
        );
    }
    let override_path = args
        .override_path
        .as_deref()
        .map(berth_runtime_config::OverridePath::parse)
        .transpose()?;
    let settings = Settings {
        override_path,
        creds,
        mirror,
        registries,
        ca,
        skip_verify: args.skip_verify,
        ca_pem,
        certs_dir: args
            .certs_dir
            .as_ref()
            .map(std::path::absolute)
            .transpose()
            .context("resolving --certs-dir")?,
    };
    let dest = args.dest.unwrap_or_else(|| default_dest(args.target));
    let dest =
        std::path::absolute(&dest).with_context(|| format!("resolving {}", dest.display()))?;

    let existing = || -> anyhow::Result<Option<String>> { Ok(write::read_existing(&dest)?) };
    let mut plan: Plan = match args.target {
        Target::Containerd => containerd::plan(&settings, &dest)?,
        Target::K3s | Target::Rke2 | Target::K3d => {
            k3s::plan(&settings, &dest, existing()?.as_deref())?
        }
        Target::Crio => crio::plan(&settings, &dest, "crio")?,
        Target::Podman => crio::plan(&settings, &dest, "podman")?,
        Target::Docker => docker::plan(&settings, &dest, existing()?.as_deref())?,
    };

    if args.apply && args.target != Target::Containerd {
        anyhow::bail!(
            "--apply is for containerd: the other runtimes read the file berth writes as it is"
        );
    }
    if args.apply {
        let config = std::path::absolute(&args.containerd_config)
            .with_context(|| format!("resolving {}", args.containerd_config.display()))?;
        let existing = write::read_existing(&config)?;
        let applied = berth_runtime_config::containerd_config::apply_config_path(
            existing.as_deref(),
            &dest,
            &config.display().to_string(),
        )?;
        // The hosts files first: containerd may be restarted the moment its
        // configuration names them.
        plan.files.push(berth_runtime_config::PlannedFile {
            path: config.clone(),
            contents: applied.text,
        });
        plan.instructions = vec![if applied.unchanged {
            format!(
                "{} already points [{}] config_path at {}: later changes there need no restart.",
                config.display(),
                applied.table,
                dest.display()
            )
        } else {
            format!(
                "{} now points [{}] config_path at {}. Restart containerd to apply it (`systemctl restart containerd`, or `k0s restart` for k0s).",
                config.display(),
                applied.table,
                dest.display()
            )
        }];
        plan.warnings
            .retain(|w| !w.starts_with("containerd refuses a CRI registry section"));
    } else if args.target == Target::Containerd {
        if let Some(text) = write::read_existing(std::path::Path::new(containerd::CONFIG_TOML))? {
            plan.warnings
                .extend(containerd::existing_config_warnings(&text, &dest));
        }
    }
    if let Some(ca) = &settings.ca {
        if !ca.exists() {
            plan.warnings.push(format!(
                "{} does not exist on this machine: make sure it does at that path on every node",
                ca.display()
            ));
        }
    }
    for warning in &plan.warnings {
        eprintln!("berth: warning: {warning}");
    }
    if args.dry_run {
        for file in &plan.files {
            println!("# ==> {} <==", file.path.display());
            print!("{}", file.contents);
            println!();
        }
    } else {
        for file in &plan.files {
            let written = write::write_atomic(&file.path, &file.contents)?;
            match (&written.backup, written.unchanged) {
                (_, true) => println!("unchanged {}", written.path.display()),
                (Some(b), _) => println!(
                    "wrote {} (previous version saved as {})",
                    written.path.display(),
                    b.display()
                ),
                (None, _) => println!("wrote {}", written.path.display()),
            }
        }
    }
    // With --dry-run stdout holds only the files; the next steps go to stderr.
    for instruction in &plan.instructions {
        if args.dry_run {
            eprintln!("\n{instruction}");
        } else {
            println!("\n{instruction}");
        }
    }
    Ok(())
}
