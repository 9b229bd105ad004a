//! Hashing upload bytes off the async task. Batches of an upload's bytes go
//! to a hashing job on the blocking pool through a short queue, so that
//! hashing runs on one core, never waiting for the next batch while the
//! request body is received (and written) on the other. Bodies smaller than
//! one batch are hashed inline: a thread hop would cost more than it saves.

use berth_reference::DigestHasher;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Bytes below which an upload is hashed inline.
const INLINE: usize = 1024 * 1024;
/// Batches waiting for the hashing job. With one being hashed and one being
/// filled, two queued let the hasher run on while receiving stalls briefly
/// (a 256 MiB push ran at 1,312-1,450 MiB/s without writing with a queue of
/// one; hashing alone takes 150 ms, 1,700 MiB/s).
const QUEUE: usize = 2;

pub(crate) struct BackgroundHasher {
    state: State,
}

enum State {
    /// Hashing inline, before the first large batch.
    Inline(Box<DigestHasher>),
    /// Resumed while the previous request's job still hashes its last
    /// batches: the next job takes over from it without this request
    /// waiting (in a chunked push, waiting cost each chunk a batch's hashing).
    After(JoinHandle<Option<DigestHasher>>),
    /// A job owns the hasher; the queue feeds it.
    Job {
        queue: mpsc::Sender<Bytes>,
        job: JoinHandle<Option<DigestHasher>>,
    },
    /// A job did not come back (the runtime is shutting down).
    Lost,
}

impl BackgroundHasher {
    pub fn new(hasher: DigestHasher) -> Self {
        BackgroundHasher {
            state: State::Inline(Box::new(hasher)),
        }
    }

    /// Go on from a hasher a previous request detached.
    pub fn resume(pending: PendingHash) -> Self {
        BackgroundHasher {
            state: match pending {
                PendingHash::Ready(h) => State::Inline(h),
                PendingHash::Running(job) => State::After(job),
                PendingHash::Lost => State::Lost,
            },
        }
    }

    /// Start a job that hashes what the queue brings, after `previous` (a
    /// job still finishing) hands over the hasher.
    fn spawn(start: Start) -> (mpsc::Sender<Bytes>, JoinHandle<Option<DigestHasher>>) {
        let (queue, mut rx) = mpsc::channel::<Bytes>(QUEUE);
        let runtime = tokio::runtime::Handle::current();
        let job = tokio::task::spawn_blocking(move || {
            let mut h = match start {
                Start::With(h) => *h,
                // A lost hasher is lost for this job too.
                Start::After(previous) => runtime.block_on(previous).ok().flatten()?,
            };
            while let Some(batch) = rx.blocking_recv() {
                h.update(&batch);
            }
            Some(h)
        });
        (queue, job)
    }

    /// Add the next bytes of the upload.
    pub async fn update(&mut self, chunk: Bytes) {
        match std::mem::replace(&mut self.state, State::Lost) {
            State::Inline(mut h) if chunk.len() < INLINE => {
                h.update(&chunk);
                self.state = State::Inline(h);
            }
            State::Inline(h) => self.start(Start::With(h), chunk).await,
            State::After(previous) => self.start(Start::After(previous), chunk).await,
            State::Job { queue, job } => {
                if queue.send(chunk).await.is_ok() {
                    self.state = State::Job { queue, job };
                }
            }
            State::Lost => {}
        }
    }

    async fn start(&mut self, start: Start, chunk: Bytes) {
        let (queue, job) = Self::spawn(start);
        if queue.send(chunk).await.is_ok() {
            self.state = State::Job { queue, job };
        }
    }

    /// Stop feeding the hasher without waiting for it: the job hashes what
    /// is queued and ends, so a chunk's response need not wait for its last
    /// batch to be hashed, and no thread stays behind with an idle session.
    pub fn detach(self) -> PendingHash {
        match self.state {
            State::Inline(h) => PendingHash::Ready(h),
            State::After(job) => PendingHash::Running(job),
            State::Job { queue, job } => {
                drop(queue);
                PendingHash::Running(job)
            }
            State::Lost => PendingHash::Lost,
        }
    }
}

enum Start {
    With(Box<DigestHasher>),
    After(JoinHandle<Option<DigestHasher>>),
}

/// A hasher whose job may still be working through its last batches.
pub(crate) enum PendingHash {
    Ready(Box<DigestHasher>),
    Running(JoinHandle<Option<DigestHasher>>),
    Lost,
}

impl PendingHash {
    /// The hasher, once it has taken every byte it was given.
    pub async fn resolve(self) -> Option<DigestHasher> {
        match self {
            PendingHash::Ready(h) => Some(*h),
            PendingHash::Running(job) => job.await.ok().flatten(),
            PendingHash::Lost => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_reference::{Algorithm, Digest};

    #[tokio::test]
    async fn same_digest_as_hashing_inline() {
        for (len, piece) in [
            (0usize, 100_000usize),
            (10, 100_000),
            (INLINE - 1, 100_000),
            (INLINE, INLINE),
            (3 * INLINE + 17, 100_000),
            (5 * INLINE + 3, INLINE),
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut bg = BackgroundHasher::new(Algorithm::Sha256.hasher());
            for piece in data.chunks(piece) {
                bg.update(Bytes::copy_from_slice(piece)).await;
            }
            let got = bg.detach().resolve().await.unwrap().finish();
            assert_eq!(got, Digest::sha256_of(&data), "length {len}");
        }
    }

    /// A chunked upload: each request detaches its hasher while the job may
    /// still be hashing, and the next request resumes from it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resumed_across_requests_gives_the_same_digest() {
        let data: Vec<u8> = (0..9 * INLINE + 5).map(|i| (i % 253) as u8).collect();
        let mut pending = PendingHash::Ready(Box::new(Algorithm::Sha256.hasher()));
        for request in data.chunks(2 * INLINE + 1) {
            let mut bg = BackgroundHasher::resume(pending);
            for piece in request.chunks(INLINE) {
                bg.update(Bytes::copy_from_slice(piece)).await;
            }
            pending = bg.detach();
        }
        let got = pending.resolve().await.unwrap().finish();
        assert_eq!(got, Digest::sha256_of(&data));
    }
}
