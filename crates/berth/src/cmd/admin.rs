//! What the maintenance verbs (`gc`, `scrub`, `du`) share: finding the
//! storage root, opening it directly when no server holds it, and otherwise
//! calling the running server's admin API over `ROOT/run/admin.sock`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use berth_registry::Registry;
use berth_storage::fs::FsStorage;

/// `--root`, or `./berth-data`, checked to be a storage root.
pub fn storage_root(root: Option<&Path>) -> anyhow::Result<PathBuf> {
    let root = root.map_or_else(|| PathBuf::from("berth-data"), Path::to_path_buf);
    ensure_storage_root(&root)?;
    Ok(root)
}

/// A root holds blobs on local disk, or is the state directory of a server
/// (its storage elsewhere, in S3) whose admin socket is there.
pub fn ensure_storage_root(root: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        root.join("blobs").is_dir() || super::serve::admin_socket(root).exists(),
        "{} is not a berth storage root (no blobs/ in it, and no server's admin socket)",
        root.display()
    );
    Ok(())
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The registry over a root this process has locked.
pub async fn open_registry(root: &Path) -> anyhow::Result<Arc<Registry>> {
    anyhow::ensure!(
        root.join("blobs").is_dir(),
        "no server is running on {}, and its storage is not on this disk: \
         with S3 storage, run this while a server on the root serves",
        root.display()
    );
    let storage = FsStorage::open(root)
        .await
        .with_context(|| format!("opening storage at {}", root.display()))?;
    let registry = Arc::new(Registry::new(Arc::new(storage)));
    migrate(&registry).await?;
    Ok(registry)
}

/// Move what an older berth stored under names no client can address
/// (mirrors of `host:port`), before anything reads the root.
pub async fn migrate(registry: &Registry) -> anyhow::Result<()> {
    let moved = registry
        .migrate_port_names()
        .await
        .context("renaming mirrors of registries with a port")?;
    for m in moved {
        tracing::info!("storage: mirror {} renamed {}", m.from, m.to);
    }
    Ok(())
}

/// `POST path` on the admin socket of the server holding `root`; the JSON
/// answer.
pub async fn call<T: serde::de::DeserializeOwned>(root: &Path, path: &str) -> anyhow::Result<T> {
    call_with(root, path, None).await
}

/// [`call`] with a JSON request body.
pub async fn call_with<T: serde::de::DeserializeOwned>(
    root: &Path,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<T> {
    use http_body_util::BodyExt;
    let socket = super::serve::admin_socket(root);
    let stream = tokio::net::UnixStream::connect(&socket)
        .await
        .with_context(|| {
            format!(
                "a server holds {} but its admin socket {} does not answer",
                root.display(),
                socket.display()
            )
        })?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .context("talking to the server's admin socket")?;
    tokio::spawn(conn);
    let body = match body {
        Some(v) => {
            bytes::Bytes::from(serde_json::to_vec(&v).context("encoding the admin request")?)
        }
        None => bytes::Bytes::new(),
    };
    let request = http::Request::post(path)
        .header(http::header::HOST, "berth-admin")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(body))
        .context("building the admin request")?;
    let response = sender
        .send_request(request)
        .await
        .context("sending the admin request")?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading the admin response")?
        .to_bytes();
    if !status.is_success() {
        anyhow::bail!(
            "the server refused ({status}): {}",
            String::from_utf8_lossy(&body)
        );
    }
    serde_json::from_slice(&body).context("parsing the server's report")
}
