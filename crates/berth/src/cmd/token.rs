//! `berth token create|list|revoke`: revocable API tokens kept (hashed)
//! under `ROOT/auth/tokens/`, or in the bucket when replicas share S3
//! storage, used as the password with Basic credentials or at the token
//! endpoint. While a server holds the root, through its admin socket (the
//! only way to the bucket; a revoked token stops working on its next
//! request, at every replica); on a stopped root, on its files directly.

use std::path::PathBuf;

use anyhow::Context;
use berth_auth::apitoken::{Record, TokenStore};
use berth_storage::root_lock;

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
    fn root(&self) -> PathBuf {
        self.root
            .clone()
            .unwrap_or_else(|| PathBuf::from("berth-data"))
    }
}

/// Where the command works: the server holding the root, or its files.
enum Place {
    Server(PathBuf),
    /// The root's lock, held while the files are changed.
    Files(TokenStore, Option<root_lock::RootLock>),
}

fn place(root: &RootArg) -> anyhow::Result<Place> {
    let root = root.root();
    if !root.exists() {
        // Nothing serves it yet: the records are made for its first server.
        return Ok(Place::Files(
            TokenStore::new(&berth_auth::auth_dir(&root)),
            None,
        ));
    }
    match root_lock::try_lock(&root)
        .with_context(|| format!("locking storage root {}", root.display()))?
    {
        Some(lock) => Ok(Place::Files(
            TokenStore::new(&berth_auth::auth_dir(&root)),
            Some(lock),
        )),
        None => Ok(Place::Server(root)),
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
    super::admin::runtime()?.block_on(run_async(args))
}

async fn run_async(args: TokenArgs) -> anyhow::Result<()> {
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
            let (record, secret) = match place(&root)? {
                Place::Files(store, _lock) => store
                    .create(&user, &scopes, expires)
                    .await
                    .context("creating the token")?,
                Place::Server(root) => {
                    #[derive(serde::Deserialize)]
                    struct Created {
                        record: Record,
                        token: String,
                    }
                    let body = serde_json::json!({
                        "user": user,
                        "scopes": scopes,
                        "expires_secs": expires.map(|d| d.as_secs()),
                    });
                    let c: Created = super::admin::call_with(&root, "/tokens/create", Some(body))
                        .await
                        .context("creating the token")?;
                    (c.record, c.token)
                }
            };
            eprintln!("{}", describe(&record));
            eprintln!("The token is shown only now; use it as the password for user {user:?}.");
            println!("{secret}");
        }
        TokenCommand::List { root } => {
            let records: Vec<Record> = match place(&root)? {
                Place::Files(store, _lock) => store.list().await.context("listing tokens")?,
                Place::Server(root) => super::admin::call(&root, "/tokens/list")
                    .await
                    .context("listing tokens")?,
            };
            for r in records {
                println!("{}", describe(&r));
            }
        }
        TokenCommand::Revoke { id, root } => {
            let revoked = match place(&root)? {
                Place::Files(store, _lock) => {
                    store.revoke(&id).await.context("revoking the token")?
                }
                Place::Server(root) => {
                    #[derive(serde::Deserialize)]
                    struct Revoked {
                        revoked: bool,
                    }
                    // Ids are 16 hex digits; anything else is no token.
                    if !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                        anyhow::bail!("no token with id {id:?}");
                    }
                    let r: Revoked = super::admin::call(&root, &format!("/tokens/revoke?id={id}"))
                        .await
                        .context("revoking the token")?;
                    r.revoked
                }
            };
            if !revoked {
                anyhow::bail!("no token with id {id:?}");
            }
            eprintln!("revoked {id}");
        }
    }
    Ok(())
}
