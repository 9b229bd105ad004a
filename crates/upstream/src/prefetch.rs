//! Asking a berth mirror to fetch an image from its own upstream
//! (`POST /v2/<name>/prefetch/<reference>`, berth's extension): the answer
//! is one JSON line per step, read here as it arrives. A registry without
//! the endpoint (not berth, or an older one) answers 404 or 405, which is
//! reported as such so the caller can pull through it instead.

use std::time::Duration;

use berth_reference::{ManifestRef, RepositoryName};
use reqwest::Method;

use crate::auth::Scope;
use crate::client::{check, UpstreamClient};
use crate::error::UpstreamError;

/// Longer than the server's heartbeat (10 s) with room for a busy server.
const LINE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest line accepted.
const MAX_LINE: usize = 64 << 10;

impl UpstreamClient {
    /// Have the mirror fetch `reference` of `repo` (every platform, or
    /// those in `platforms`), calling `on_event` with each line. `Ok(false)`
    /// when the registry has no prefetch endpoint; `Ok(true)` once the
    /// server said `done`. A server `error` line is an error.
    pub async fn prefetch(
        &self,
        repo: &RepositoryName,
        reference: &ManifestRef,
        platforms: &[String],
        on_event: &mut (dyn FnMut(&serde_json::Value) + Send),
    ) -> Result<bool, UpstreamError> {
        let mut url = self.repo_url(repo, &format!("prefetch/{reference}"))?;
        if !platforms.is_empty() {
            url.query_pairs_mut()
                .append_pair("platform", &platforms.join(","));
        }
        let what = format!("POST {}", url.path());
        let mut req = self.req(
            Method::POST,
            url,
            vec![Scope::push(&self.remote_name(repo))],
        );
        // The walk takes as long as the image does; lines bound the silence.
        req.timeout = None;
        let resp = self.execute(req).await?;
        let status = resp.status().as_u16();
        if status == 404 || status == 405 {
            return Ok(false);
        }
        let mut resp = check(resp, &what).await?;
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let chunk = tokio::time::timeout(LINE_TIMEOUT, resp.chunk())
                .await
                .map_err(|_| {
                    UpstreamError::Protocol(format!("{what}: no progress for {LINE_TIMEOUT:?}"))
                })?
                .map_err(|e| UpstreamError::Protocol(format!("{what}: {e}")))?;
            let Some(chunk) = chunk else {
                return Err(UpstreamError::Protocol(format!(
                    "{what}: the answer ended before the prefetch did"
                )));
            };
            buf.extend_from_slice(&chunk);
            while let Some(end) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                let v: serde_json::Value = serde_json::from_slice(&line)
                    .map_err(|e| UpstreamError::Protocol(format!("{what}: {e}")))?;
                on_event(&v);
                match v.get("event").and_then(|e| e.as_str()) {
                    Some("done") => return Ok(true),
                    Some("error") => {
                        let message = v.get("message").and_then(|m| m.as_str()).unwrap_or("?");
                        return Err(UpstreamError::Protocol(format!("{what}: {message}")));
                    }
                    _ => {}
                }
            }
            if buf.len() > MAX_LINE {
                return Err(UpstreamError::Protocol(format!(
                    "{what}: a line over {MAX_LINE} bytes"
                )));
            }
        }
    }
}
