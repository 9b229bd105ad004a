//! Listing and bulk deletion in the bucket: every page of a listing is
//! followed, deletions go a thousand keys a request (S3's limit).

use std::time::{Duration, SystemTime};

use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use super::{io_error, sdk_failure, Inner};
use crate::Result;

/// One object of a listing.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub key: String,
    pub size: u64,
    pub modified: SystemTime,
}

impl Inner {
    /// Every object whose key starts with `prefix`, in key order.
    pub(crate) async fn list_all(&self, prefix: &str) -> Result<Vec<Listed>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_failure("LIST", e))?;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                out.push(Listed {
                    key: key.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    modified: o
                        .last_modified()
                        .and_then(|t| SystemTime::try_from(*t).ok())
                        .unwrap_or(std::time::UNIX_EPOCH),
                });
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated().unwrap_or(false) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Names of the immediate children of `prefix` (which ends in `/`):
    /// objects directly beneath it and the next component of deeper ones.
    pub(crate) async fn list_children(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .delimiter("/")
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_failure("LIST", e))?;
            for o in page.contents() {
                if let Some(name) = o.key().and_then(|k| k.strip_prefix(prefix)) {
                    if !name.is_empty() {
                        out.push(name.to_string());
                    }
                }
            }
            for p in page.common_prefixes() {
                if let Some(name) = p.prefix().and_then(|k| k.strip_prefix(prefix)) {
                    let name = name.trim_end_matches('/');
                    if !name.is_empty() {
                        out.push(name.to_string());
                    }
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated().unwrap_or(false) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Delete these keys; absent ones are no error.
    pub(crate) async fn delete_many(&self, keys: Vec<String>) -> Result<()> {
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| io_error(format!("S3 DELETE request: {e}")))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| io_error(format!("S3 DELETE request: {e}")))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| sdk_failure("DELETE", e))?;
            if let Some(err) = out.errors().first() {
                return Err(io_error(format!(
                    "S3 DELETE {}: {}",
                    err.key().unwrap_or("?"),
                    err.message().or(err.code()).unwrap_or("refused")
                )));
            }
        }
        Ok(())
    }

    pub(crate) async fn abort_stale_multipart(&self, older_than: Duration) -> Result<usize> {
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(std::time::UNIX_EPOCH);
        let mut aborted = 0;
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| sdk_failure("LIST multipart", e))?;
            for u in page.uploads() {
                let started = u
                    .initiated()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .unwrap_or(std::time::UNIX_EPOCH);
                let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                if started > cutoff {
                    continue;
                }
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await
                    .map_err(|e| sdk_failure("ABORT multipart", e))?;
                aborted += 1;
            }
            if !page.is_truncated().unwrap_or(false) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() {
                break;
            }
        }
        Ok(aborted)
    }
}
