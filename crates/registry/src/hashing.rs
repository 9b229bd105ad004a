//! Hashing upload bytes off the async task. An upload's bytes are hashed in
//! batches on the blocking pool, one batch in flight while the next one
//! fills, so that hashing runs on one core while the request body is
//! received (and written) on another. Bodies smaller than one batch are
//! hashed inline: a thread hop would cost more than it saves.

use berth_reference::DigestHasher;
use bytes::Bytes;
use tokio::task::JoinHandle;

/// Bytes collected before they are handed to a hashing job.
const BATCH: usize = 1024 * 1024;

pub(crate) struct BackgroundHasher {
    /// `None` while a job owns it, or if a job was lost.
    hasher: Option<DigestHasher>,
    pending: Vec<Bytes>,
    pending_len: usize,
    job: Option<JoinHandle<DigestHasher>>,
}

impl BackgroundHasher {
    pub fn new(hasher: DigestHasher) -> Self {
        BackgroundHasher {
            hasher: Some(hasher),
            pending: Vec::new(),
            pending_len: 0,
            job: None,
        }
    }

    /// Add the next bytes of the upload.
    pub async fn update(&mut self, chunk: Bytes) {
        self.pending_len += chunk.len();
        self.pending.push(chunk);
        if self.pending_len >= BATCH {
            self.wait().await;
            if let Some(mut h) = self.hasher.take() {
                let batch = std::mem::take(&mut self.pending);
                self.pending_len = 0;
                self.job = Some(tokio::task::spawn_blocking(move || {
                    for b in &batch {
                        h.update(b);
                    }
                    h
                }));
            }
        }
    }

    async fn wait(&mut self) {
        if let Some(job) = self.job.take() {
            // A job that did not come back (the runtime is shutting down)
            // leaves no hasher: the upload is re-hashed from storage instead.
            self.hasher = job.await.ok();
        }
    }

    /// The hasher over every byte given, or `None` if it was lost.
    pub async fn finish(mut self) -> Option<DigestHasher> {
        self.wait().await;
        let mut h = self.hasher.take()?;
        for b in &self.pending {
            h.update(b);
        }
        Some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_reference::{Algorithm, Digest};

    #[tokio::test]
    async fn same_digest_as_hashing_inline() {
        for len in [0usize, 10, BATCH - 1, BATCH, 3 * BATCH + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut bg = BackgroundHasher::new(Algorithm::Sha256.hasher());
            for piece in data.chunks(100_000) {
                bg.update(Bytes::copy_from_slice(piece)).await;
            }
            let got = bg.finish().await.unwrap().finish();
            assert_eq!(got, Digest::sha256_of(&data), "length {len}");
        }
    }
}
