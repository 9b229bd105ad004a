//! Hashing a fill's download on another core. The upstream's body arrives
//! in small chunks (tens of KiB); they are gathered into batches of about
//! 256 KiB, and each batch goes through a short queue to a hashing job on the
//! blocking pool (`berth_storage::worker`), so the download, the writing and
//! the digest go on at once instead of one after another on the fill's task.

use berth_reference::DigestHasher;
use berth_storage::worker::Worker;
use bytes::Bytes;

/// Bytes gathered before a batch is handed to the hashing job. The chunks
/// stay alive until hashed, outside the memory budget: with the queue, a
/// fill holds at most about four batches (~1 MiB) this way, whatever the
/// blob's size.
const BATCH: usize = 256 * 1024;
/// Batches waiting for the hashing job besides the one it hashes.
const QUEUE: usize = 2;

fn hash(h: &mut DigestHasher, batch: Vec<Bytes>) -> bool {
    for chunk in &batch {
        h.update(chunk);
    }
    true
}

pub(crate) struct HashJob {
    worker: Worker<DigestHasher, Vec<Bytes>>,
    batch: Vec<Bytes>,
    len: usize,
}

impl HashJob {
    pub(crate) fn new(hasher: DigestHasher) -> Self {
        HashJob {
            worker: Worker::new(hasher, QUEUE, hash),
            batch: Vec::new(),
            len: 0,
        }
    }

    /// Add the next bytes; `false` when the hashing job is gone.
    pub(crate) async fn update(&mut self, chunk: Bytes) -> bool {
        self.len += chunk.len();
        self.batch.push(chunk);
        if self.len < BATCH {
            return true;
        }
        self.len = 0;
        let batch = std::mem::take(&mut self.batch);
        matches!(self.worker.send(batch).await, Ok(true))
    }

    /// The hasher, once it has taken every byte; `None` if the job was lost.
    pub(crate) async fn finish(mut self) -> Option<DigestHasher> {
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            if !matches!(self.worker.send(batch).await, Ok(true)) {
                return None;
            }
        }
        self.worker.finish().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_reference::Algorithm;

    #[tokio::test]
    async fn same_digest_as_hashing_inline() {
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        for piece in [16 * 1024, 1024 * 1024, 3_000_000, data.len()] {
            let mut job = HashJob::new(Algorithm::Sha256.hasher());
            for c in data.chunks(piece) {
                assert!(job.update(Bytes::copy_from_slice(c)).await);
            }
            let mut inline = Algorithm::Sha256.hasher();
            inline.update(&data);
            let got = job.finish().await.expect("hasher").finish();
            assert_eq!(got, inline.finish(), "pieces of {piece}");
        }
        let empty = HashJob::new(Algorithm::Sha256.hasher()).finish().await;
        assert_eq!(
            empty.expect("hasher").finish(),
            Algorithm::Sha256.hasher().finish()
        );
    }
}
