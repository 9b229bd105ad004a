//! Shaping upload bytes into large, block-aligned batches.
//!
//! A request body arrives as frames of whatever size the connection
//! delivered. Writing and hashing both want few, large pieces: the local-disk
//! backend writes a batch that starts on a block boundary of both memory and
//! file straight to the device (`O_DIRECT`, no page-cache copy), and a
//! hashing job per batch costs one thread hand-off instead of hundreds. The
//! registry copies each frame once into a [`Batcher`]; the frame's memory can
//! then go back to the connection at once, and the batch is shared (not
//! copied) between the hasher and the writer. Batch buffers are pooled.

use bytes::Bytes;

use crate::pool::{self, Buffer};

/// The block size direct I/O needs the buffer address, the length and the
/// file offset to be multiples of; 4096 covers every common device.
pub const BLOCK: usize = 4096;

/// The largest batch; every pooled buffer has room for one.
pub const MAX_BATCH: usize = 4 * 1024 * 1024;

/// True when `bytes`, written at file `offset`, is whole aligned blocks.
pub fn is_aligned(bytes: &[u8], offset: u64) -> bool {
    !bytes.is_empty()
        && offset.is_multiple_of(BLOCK as u64)
        && bytes.len().is_multiple_of(BLOCK)
        && bytes.as_ptr().align_offset(BLOCK) == 0
}

/// Collects bytes into batches of `size` whose memory starts on a block
/// boundary. The batches follow the file's block boundaries too: when the
/// upload resumes mid-block, the first batch only fills that block, so every
/// later one is aligned.
pub struct Batcher {
    size: usize,
    /// The file offset the next batch starts at.
    offset: u64,
    /// The batch being filled (its first `len` bytes), once one was taken
    /// from the pool.
    buf: Option<Buffer>,
    len: usize,
}

impl Batcher {
    /// A batcher for bytes that land at file `offset` onwards. `size` is
    /// rounded up to a whole number of blocks, at most [`MAX_BATCH`].
    pub fn new(offset: u64, size: usize) -> Self {
        Batcher {
            size: size.clamp(1, MAX_BATCH).div_ceil(BLOCK) * BLOCK,
            offset,
            buf: None,
            len: 0,
        }
    }

    /// How many bytes the current batch holds when full.
    fn limit(&self) -> usize {
        match (self.offset % BLOCK as u64) as usize {
            0 => self.size,
            misaligned => BLOCK - misaligned,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len >= self.limit()
    }

    /// Take the next batch's buffer against the shared memory budget,
    /// waiting for room (call before [`Batcher::fill`] on a client's bytes;
    /// `fill` alone takes an unbudgeted buffer).
    pub async fn reserve(&mut self) -> std::io::Result<()> {
        if self.buf.is_none() {
            let pool = pool::for_size(self.size);
            let reservation = pool::reserve(self.size).await;
            self.buf = Some(pool.get_reserved(reservation)?);
        }
        Ok(())
    }

    /// Copy as much of `data` as the current batch takes; returns how much.
    /// Fails only if no memory could be mapped for a new batch.
    pub fn fill(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(self.limit().saturating_sub(self.len));
        if n == 0 {
            return Ok(0);
        }
        let buf = match &mut self.buf {
            Some(buf) => buf,
            None => self.buf.insert(pool::for_size(self.size).get()?),
        };
        buf.as_mut_slice()[self.len..self.len + n].copy_from_slice(&data[..n]);
        self.len += n;
        Ok(n)
    }

    /// The batch collected so far (`None` if empty); the next one starts
    /// where it ends.
    pub fn take(&mut self) -> Option<Bytes> {
        if self.is_empty() {
            return None;
        }
        let batch = match self.buf.take() {
            Some(buf) => buf.freeze(self.len),
            None => Bytes::new(),
        };
        self.len = 0;
        self.offset += batch.len() as u64;
        Some(batch)
    }

    /// Skip `n` bytes that reached the file some other way (only while empty).
    pub fn advance(&mut self, n: u64) {
        debug_assert!(self.is_empty());
        self.offset += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(offset: u64, size: usize, pieces: &[usize]) -> Vec<Bytes> {
        let mut b = Batcher::new(offset, size);
        let mut out = Vec::new();
        let mut next = 0u8;
        for &len in pieces {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    next = next.wrapping_add(1);
                    next
                })
                .collect();
            let mut rest = &data[..];
            while !rest.is_empty() {
                let n = b.fill(rest).unwrap();
                rest = &rest[n..];
                if b.is_full() {
                    out.extend(b.take());
                }
            }
        }
        out.extend(b.take());
        out
    }

    #[test]
    fn batches_are_aligned_and_keep_every_byte_in_order() {
        for (offset, pieces) in [
            (0u64, vec![1usize, 8191, 20000, 3]),
            (5000, vec![100_000]),
            (4095, vec![1, 1, 40_000]),
            (12_288, vec![16_384]),
        ] {
            let batches = run(offset, 16_384, &pieces);
            let total: usize = pieces.iter().sum();
            let mut at = offset;
            let mut expected = 0u8;
            for (i, batch) in batches.iter().enumerate() {
                let last = i + 1 == batches.len();
                let boundary = BLOCK as u64;
                if at.is_multiple_of(boundary) {
                    // Every batch but the tail is whole aligned blocks.
                    assert!(last || is_aligned(batch, at), "batch {i} at {at}");
                } else {
                    // Only the head starts mid-block, and it fills just that block.
                    assert_eq!(i, 0);
                    assert!(last || (at + batch.len() as u64).is_multiple_of(boundary));
                }
                for &byte in batch.iter() {
                    expected = expected.wrapping_add(1);
                    assert_eq!(byte, expected);
                }
                at += batch.len() as u64;
            }
            assert_eq!(at - offset, total as u64);
        }
    }

    #[test]
    fn empty_batcher_yields_nothing() {
        assert!(Batcher::new(0, BLOCK).take().is_none());
    }
}
