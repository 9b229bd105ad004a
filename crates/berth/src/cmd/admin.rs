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
    anyhow::ensure!(
        root.join("blobs").is_dir(),
        "{} is not a berth storage root (no blobs/ in it)",
        root.display()
    );
    Ok(root)
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The registry over a root this process has locked.
pub async fn open_registry(root: &Path) -> anyhow::Result<Arc<Registry>> {
    let storage = FsStorage::open(root)
        .await
        .with_context(|| format!("opening storage at {}", root.display()))?;
    Ok(Arc::new(Registry::new(Arc::new(storage))))
}

/// `POST path` on the admin socket of the server holding `root`; the JSON
/// answer.
pub async fn call<T: serde::de::DeserializeOwned>(root: &Path, path: &str) -> anyhow::Result<T> {
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
    let request = http::Request::post(path)
        .header(http::header::HOST, "berth-admin")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
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
