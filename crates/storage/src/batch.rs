//! Shaping upload bytes into large, block-aligned batches.
//!
//! A request body arrives as frames of whatever size the connection
//! delivered. Writing and hashing both want few, large pieces: the local-disk
//! backend writes a batch that starts on a block boundary of both memory and
//! file straight to the device (`O_DIRECT`, no page-cache copy), and a
//! hashing job per batch costs one thread hand-off instead of hundreds. The
//! registry copies each frame once into a [`Batcher`]; the frame's memory can
//! then go back to the connection at once, and the batch is shared (not
//! copied) between the hasher and the writer.

use bytes::{Bytes, BytesMut};

/// The block size direct I/O needs the buffer address, the length and the
/// file offset to be multiples of; 4096 covers every common device.
pub const BLOCK: usize = 4096;

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
#[derive(Debug)]
pub struct Batcher {
    size: usize,
    /// The file offset the next batch starts at.
    offset: u64,
    /// The batch being filled, from `pad` on (`pad` bytes of alignment before).
    buf: BytesMut,
    pad: usize,
}

impl Batcher {
    /// A batcher for bytes that land at file `offset` onwards. `size` is
    /// rounded up to a whole number of blocks.
    pub fn new(offset: u64, size: usize) -> Self {
        Batcher {
            size: size.max(1).div_ceil(BLOCK) * BLOCK,
            offset,
            buf: BytesMut::new(),
            pad: 0,
        }
    }

    /// How many bytes the current batch holds when full.
    fn limit(&self) -> usize {
        match (self.offset % BLOCK as u64) as usize {
            0 => self.size,
            misaligned => BLOCK - misaligned,
        }
    }

    fn len(&self) -> usize {
        self.buf.len() - self.pad
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_full(&self) -> bool {
        self.len() >= self.limit()
    }

    /// Copy as much of `data` as the current batch takes; returns how much.
    pub fn fill(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.limit() - self.len());
        if n == 0 {
            return 0;
        }
        if self.buf.capacity() == 0 {
            // Allocated on first use, with room to start on a block boundary;
            // the capacity never grows, so the buffer never moves.
            self.buf = BytesMut::with_capacity(self.limit() + BLOCK);
            self.pad = self.buf.as_ptr().align_offset(BLOCK).min(BLOCK);
            self.buf.resize(self.pad, 0);
        }
        self.buf.extend_from_slice(&data[..n]);
        n
    }

    /// The batch collected so far (`None` if empty); the next one starts
    /// where it ends.
    pub fn take(&mut self) -> Option<Bytes> {
        if self.is_empty() {
            return None;
        }
        let pad = self.pad;
        let batch = std::mem::take(&mut self.buf).freeze().slice(pad..);
        self.pad = 0;
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
                let n = b.fill(rest);
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
