//! A blocking job fed through a short queue, holding a thread only while
//! there is work.
//!
//! Uploads hash and write on the blocking pool while the request body keeps
//! arriving. A job that waited on its queue for the next batch would hold a
//! pool thread for as long as the client took to send, and a few hundred
//! slow uploads would take every thread blob reads need. So a [`Worker`]'s
//! job runs while batches are queued and ends when the queue is empty,
//! handing its state back; the next batch starts a new job. A fast upload
//! keeps one job busy; a slow one costs a thread hop per batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio::task::JoinHandle;

/// Processes one message; `false` stops the worker (after an error the
/// state keeps).
pub type Work<S, M> = fn(&mut S, M) -> bool;

pub struct Worker<S, M> {
    queue: mpsc::Sender<M>,
    /// The state and the queue's receiving end while no job runs.
    idle: Option<(S, mpsc::Receiver<M>)>,
    job: Option<JoinHandle<Finished<S, M>>>,
    /// Whether a job is taking messages. A job that finds the queue empty
    /// clears it before leaving, and the sender sets it after queueing:
    /// whichever of them flips it back takes the message (see `start`).
    running: Arc<AtomicBool>,
    work: Work<S, M>,
    stopped: bool,
}

struct Finished<S, M> {
    state: S,
    rx: mpsc::Receiver<M>,
    stopped: bool,
}

/// The worker's job panicked or was cancelled: its state is gone.
#[derive(Debug)]
pub struct Lost;

impl<S: Send + 'static, M: Send + 'static> Worker<S, M> {
    /// A worker owning `state`, with room for `depth` queued messages.
    pub fn new(state: S, depth: usize, work: Work<S, M>) -> Self {
        let (queue, rx) = mpsc::channel(depth.max(1));
        Worker {
            queue,
            idle: Some((state, rx)),
            job: None,
            running: Arc::new(AtomicBool::new(false)),
            work,
            stopped: false,
        }
    }

    /// Start a job (`running` is already set by the caller).
    fn start(&mut self) {
        let Some((mut state, mut rx)) = self.idle.take() else {
            return;
        };
        let work = self.work;
        let running = self.running.clone();
        self.job = Some(tokio::task::spawn_blocking(move || loop {
            match rx.try_recv() {
                Ok(msg) => {
                    if !work(&mut state, msg) {
                        running.store(false, Ordering::Release);
                        return Finished {
                            state,
                            rx,
                            stopped: true,
                        };
                    }
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                    running.store(false, Ordering::SeqCst);
                    // A message queued just now: take it, unless the sender
                    // already claimed it for a new job.
                    if !rx.is_empty()
                        && running
                            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                            .is_ok()
                    {
                        continue;
                    }
                    return Finished {
                        state,
                        rx,
                        stopped: false,
                    };
                }
            }
        }));
    }

    /// Collect a job that ended.
    fn finished(
        &mut self,
        done: Result<Finished<S, M>, tokio::task::JoinError>,
    ) -> Result<(), Lost> {
        let done = done.map_err(|_| Lost)?;
        self.stopped |= done.stopped;
        self.idle = Some((done.state, done.rx));
        Ok(())
    }

    /// Queue `msg`, waiting while the queue is full. `Ok(false)` if the
    /// worker stopped (the message is dropped; see [`Worker::settle`]).
    pub async fn send(&mut self, msg: M) -> Result<bool, Lost> {
        if self.stopped {
            return Ok(false);
        }
        let queue = self.queue.clone();
        let permit = loop {
            match queue.try_reserve() {
                Ok(permit) => break permit,
                Err(mpsc::error::TrySendError::Closed(())) => return Err(Lost),
                // Full: a job is working through it, or one stopped.
                Err(mpsc::error::TrySendError::Full(())) => {
                    let Some(job) = self.job.as_mut() else {
                        return Err(Lost);
                    };
                    let ended = tokio::select! {
                        permit = queue.reserve() => match permit {
                            Ok(permit) => break permit,
                            Err(_) => return Err(Lost),
                        },
                        done = job => done,
                    };
                    self.job = None;
                    self.finished(ended)?;
                    if self.stopped {
                        return Ok(false);
                    }
                    self.running.store(true, Ordering::SeqCst);
                    self.start();
                }
            }
        };
        permit.send(msg);
        if !self.running.swap(true, Ordering::SeqCst) {
            // No job is taking messages: collect the one that left, if any,
            // and start one for this message.
            if let Some(job) = self.job.take() {
                let done = job.await;
                self.finished(done)?;
            }
            if self.stopped {
                return Ok(false);
            }
            self.start();
        }
        Ok(true)
    }

    /// Wait until everything queued has been processed (or the worker
    /// stopped), and lend the state.
    pub async fn settle(&mut self) -> Result<&mut S, Lost> {
        loop {
            if let Some(job) = self.job.take() {
                let done = job.await;
                self.finished(done)?;
            }
            let pending = match &self.idle {
                Some((_, rx)) => !rx.is_empty(),
                None => return Err(Lost),
            };
            if pending && !self.stopped {
                self.running.store(true, Ordering::SeqCst);
                self.start();
                continue;
            }
            return match &mut self.idle {
                Some((state, _)) => Ok(state),
                None => Err(Lost),
            };
        }
    }

    /// Settle and take the state.
    pub async fn finish(mut self) -> Result<S, Lost> {
        self.settle().await?;
        self.idle.take().map(|(state, _)| state).ok_or(Lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(sum: &mut u64, n: u64) -> bool {
        if n == 0 {
            return false;
        }
        *sum += n;
        true
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_message_is_processed_in_order_through_idle_gaps() {
        let mut w = Worker::new(0u64, 2, add);
        for i in 1..=200u64 {
            assert!(w.send(i).await.unwrap());
            if i % 17 == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            if i % 50 == 0 {
                assert_eq!(*w.settle().await.unwrap(), i * (i + 1) / 2);
            }
        }
        assert_eq!(w.finish().await.unwrap(), 200 * 201 / 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_worker_refuses_more_and_keeps_its_state() {
        let mut w = Worker::new(0u64, 2, add);
        assert!(w.send(5).await.unwrap());
        w.send(0).await.unwrap();
        assert_eq!(*w.settle().await.unwrap(), 5);
        assert!(!w.send(7).await.unwrap());
        assert_eq!(w.finish().await.unwrap(), 5);
    }
}
