//! `berth token create|list|revoke`: revocable API tokens kept (hashed)
//! under `ROOT/auth/tokens/`, used as the password with Basic credentials or
//! at the token endpoint. Works on the root directly, also while a server
//! serves it: a revoked token stops working on its next request.

use std::path::PathBuf;

use anyhow::Context;
use berth_auth::apitoken::{Record, TokenStore};

#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(clap::Args, Debug)]
struct RootArg {
    /// Storage root of the server [default: ./berth-data]
    #[arg(long, env = "BERTH_ROOT")]
    root: Option<PathBuf>,
}

impl RootArg {
    fn store(&self) -> TokenStore {
        let root = self
            .root
            .clone()
            .unwrap_or_else(|| PathBuf::from("berth-data"));
        TokenStore::new(&berth_auth::auth_dir(&root))
    }
}

#[derive(clap::Subcommand, Debug)]
enum TokenCommand {
    /// Create a token and print it (once: only its hash is kept).
    Create {
        /// The user the token acts as (policies name it); need not be in htpasswd.
        #[arg(long)]
        user: String,
        /// Narrow the token: ACTIONS:GLOB, e.g. `push:team/**` (push includes
        /// pull), `pull,delete:ci/*` (repeatable; none: the user's rights).
        #[arg(long = "scope", value_name = "ACTIONS:GLOB")]
        scopes: Vec<String>,
        /// Lifetime, e.g. `90d`, `12h` [default: never expires]
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
        #[command(flatten)]
        root: RootArg,
    },
    /// List tokens (never their secrets).
    List {
        #[command(flatten)]
        root: RootArg,
    },
    /// Revoke a token by its id.
    Revoke {
        id: String,
        #[command(flatten)]
        root: RootArg,
    },
}

fn when(secs: Option<u64>) -> String {
    secs.map(berth_auth::token::rfc3339)
        .unwrap_or_else(|| "never".into())
}

fn describe(r: &Record) -> String {
    let scopes = if r.scopes.is_empty() {
        "(user's rights)".to_string()
    } else {
        r.scopes.join(" ")
    };
    let state = if r.expired() { " (expired)" } else { "" };
    format!(
        "{}  {}  {}  created {}  expires {}{}",
        r.id,
        r.user,
        scopes,
        when(Some(r.created)),
        when(r.expires),
        state
    )
}

pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    match args.command {
        TokenCommand::Create {
            user,
            scopes,
            expires,
            root,
        } => {
            let expires = match &expires {
                Some(s) => Some(
                    berth_cache::ttl::parse_duration(s)
                        .filter(|d| !d.is_zero())
                        .with_context(|| {
                            format!("--expires {s:?}: a duration like 90d, 12h or 30m")
                        })?,
                ),
                None => None,
            };
            let (record, secret) = root
                .store()
                .create(&user, &scopes, expires)
                .context("creating the token")?;
            eprintln!("{}", describe(&record));
            eprintln!("The token is shown only now; use it as the password for user {user:?}.");
            println!("{secret}");
        }
        TokenCommand::List { root } => {
            for r in root.store().list().context("listing tokens")? {
                println!("{}", describe(&r));
            }
        }
        TokenCommand::Revoke { id, root } => {
            if !root.store().revoke(&id).context("revoking the token")? {
                anyhow::bail!("no token with id {id:?}");
            }
            eprintln!("revoked {id}");
        }
    }
    Ok(())
}
