//! Generated blobs: a pseudo-random block repeated up to the blob's size.
//!
//! A 256 MiB blob is never held in memory: its content is one block (at most
//! 1 MiB) repeated, so streaming it out costs the client no copying (each
//! frame is a reference-counted slice of the block), and its digest is
//! computed once, before any timing, by hashing the same sequence the body
//! will send. The server therefore verifies a real SHA-256 of every byte.

use bytes::Bytes;
use http_body_util::BodyExt;
use sha2::Digest as _;

use crate::client::ReqBody;

const BLOCK: u64 = 1024 * 1024;

#[derive(Clone)]
pub struct Blob {
    block: Bytes,
    pub size: u64,
    pub digest: String,
}

/// xorshift64*: fast, deterministic, and enough to make content that no
/// layer of the stack can compress or deduplicate.
fn fill(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

impl Blob {
    /// A blob of `size` bytes whose content depends on `seed`.
    pub fn new(size: u64, seed: u64) -> Blob {
        let block = Bytes::from(fill(seed, size.clamp(1, BLOCK) as usize));
        let mut blob = Blob {
            block,
            size,
            digest: String::new(),
        };
        let mut h = sha2::Sha256::new();
        for chunk in blob.chunks(0, size) {
            h.update(&chunk);
        }
        blob.digest = format!("sha256:{}", hex::encode(h.finalize()));
        blob
    }

    /// A small blob held whole (configs and layers of test manifests).
    pub fn small(content: &[u8]) -> Blob {
        let block = Bytes::copy_from_slice(content);
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(content)));
        Blob {
            size: block.len() as u64,
            block,
            digest,
        }
    }

    /// The bytes `offset..offset+len` as slices of the block.
    fn chunks(&self, offset: u64, len: u64) -> impl Iterator<Item = Bytes> + Send + 'static {
        let block = self.block.clone();
        let b = block.len() as u64;
        let end = offset + len;
        let mut pos = offset;
        std::iter::from_fn(move || {
            if pos >= end || b == 0 {
                return None;
            }
            let start = pos % b;
            let n = (b - start).min(end - pos);
            pos += n;
            Some(block.slice(start as usize..(start + n) as usize))
        })
    }

    /// A request body streaming `offset..offset+len` of the blob.
    pub fn body(&self, offset: u64, len: u64) -> ReqBody {
        let frames = self
            .chunks(offset, len)
            .map(|c| Ok::<_, std::io::Error>(hyper::body::Frame::data(c)));
        FrameIter(frames).boxed_unsync()
    }

    /// Write the blob's bytes to a file (for clients that read a file).
    pub fn write_to(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        for chunk in self.chunks(0, self.size) {
            f.write_all(&chunk)?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()
    }

    /// The hex part of the digest (for paths on disk).
    pub fn hex(&self) -> &str {
        self.digest.trim_start_matches("sha256:")
    }
}

/// An iterator of frames as a request body: every frame is ready at once.
struct FrameIter<I>(I);

impl<I: Iterator + Unpin> hyper::body::Body for FrameIter<I>
where
    I: Iterator<Item = Result<hyper::body::Frame<Bytes>, std::io::Error>>,
{
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(b: ReqBody) -> Vec<u8> {
        b.collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn body_matches_digest_and_slices_line_up() {
        let blob = Blob::new(3 * BLOCK + 12345, 7);
        let all = collect(blob.body(0, blob.size)).await;
        assert_eq!(all.len() as u64, blob.size);
        let want = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&all)));
        assert_eq!(blob.digest, want);
        // Chunks at arbitrary offsets are the same bytes.
        let mid = collect(blob.body(BLOCK - 10, BLOCK + 20)).await;
        assert_eq!(mid, all[(BLOCK - 10) as usize..(2 * BLOCK + 10) as usize]);
        assert_ne!(Blob::new(100, 1).digest, Blob::new(100, 2).digest);
        let s = Blob::small(b"{}");
        assert_eq!(collect(s.body(0, s.size)).await, b"{}");
    }
}
