//! The shared queue: due requests are claimed from PostgreSQL's `requests` table with
//! `FOR UPDATE SKIP LOCKED`, so instances never take the same job, and each claim is a
//! lease: this instance renews the leases of the jobs it holds, and a job whose lease ran
//! out (its instance died) is claimed again by another. Its delivery id is the same, so
//! the receiver can tell the duplicate.
//!
//! One claimer task per instance fills a small buffer that the workers take from; when
//! nothing is due it waits for a local dispatch or polls.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::{Mutex, Notify, mpsc};
use tracing::warn;
use uuid::Uuid;

use super::{Job, Queue, QueueError};
use crate::model::StoreError;
use crate::store::postgres::PgStore;

/// How often an idle instance looks for jobs other instances made due.
const POLL: Duration = Duration::from_millis(100);

/// Jobs claimed at once, at most.
const CLAIM_BATCH: i64 = 64;

pub struct PgQueue {
    store: Arc<PgStore>,
    /// This instance, as the owner of its leases.
    owner: Uuid,
    jobs: Mutex<mpsc::Receiver<Job>>,
    /// The claimer's side of `jobs`: a job this instance holds that is due again at once
    /// (it waited for room at its destination) goes back here, keeping its lease.
    local: mpsc::Sender<Job>,
    wake: Arc<Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl From<StoreError> for QueueError {
    fn from(e: StoreError) -> Self {
        QueueError(e.0)
    }
}

impl PgQueue {
    /// Starts the claimer (which keeps up to `buffer` claimed jobs ready) and the lease renewer.
    pub fn start(store: Arc<PgStore>, lease: Duration, buffer: usize) -> Self {
        let owner = Uuid::now_v7();
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let wake = Arc::new(Notify::new());
        let claimer = tokio::spawn(claim_loop(store.clone(), owner, lease, tx.clone(), wake.clone()));
        let renewer = tokio::spawn(renew_loop(store.clone(), owner, lease));
        Self { store, owner, jobs: Mutex::new(rx), local: tx, wake, tasks: vec![claimer, renewer] }
    }

    async fn release(&self, job: &Job) -> Result<(), QueueError> {
        self.store.release(job).await?;
        self.wake.notify_one();
        Ok(())
    }
}

impl Drop for PgQueue {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn claim_loop(store: Arc<PgStore>, owner: Uuid, lease: Duration, tx: mpsc::Sender<Job>, wake: Arc<Notify>) {
    loop {
        // Claim only what the buffer can take now: a claimed job waits with a lease.
        let Ok(permit) = tx.reserve().await else { return };
        let room = (tx.capacity() + 1).min(CLAIM_BATCH as usize) as i64;
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match store.claim(owner, lease, room).await {
            Ok(jobs) if !jobs.is_empty() => {
                let mut jobs = jobs.into_iter();
                permit.send(jobs.next().expect("not empty"));
                for job in jobs {
                    if tx.send(job).await.is_err() {
                        return;
                    }
                }
            }
            Ok(_) => {
                drop(permit);
                let _ = tokio::time::timeout(POLL, notified).await;
            }
            Err(e) => {
                drop(permit);
                warn!("{e}; claiming again in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Renews this instance's leases at a third of their length.
async fn renew_loop(store: Arc<PgStore>, owner: Uuid, lease: Duration) {
    loop {
        tokio::time::sleep(lease / 3).await;
        if let Err(e) = store.renew(owner, lease).await {
            warn!("{e}; this instance's claims may be taken over");
        }
    }
}

#[async_trait]
impl Queue for PgQueue {
    /// The jobs' rows were inserted with their dispatch: this only wakes the claimer.
    async fn push(&self, _jobs: Vec<Job>) -> Result<(), QueueError> {
        self.wake.notify_one();
        Ok(())
    }

    async fn next(&self) -> Result<Job, QueueError> {
        self.jobs.lock().await.recv().await.ok_or_else(|| QueueError("the PostgreSQL claimer has stopped".into()))
    }

    /// A job due now stays with this instance when its buffer has room; any other goes
    /// back to the table for whichever instance claims it when it is due.
    async fn retry(&self, job: Job) -> Result<(), QueueError> {
        if job.due <= SystemTime::now() {
            match self.local.try_send(job) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) => {
                    return self.release(&job).await;
                }
            }
        }
        self.release(&job).await
    }

    /// The outcome is already in the request's row.
    async fn complete(&self, _job: &Job) -> Result<(), QueueError> {
        Ok(())
    }

    async fn len(&self) -> Result<usize, QueueError> {
        Ok(self.store.pending_requests().await?)
    }

    /// Stops claiming and gives back every job this instance holds, to be claimed again
    /// at once rather than when the lease runs out.
    async fn close(&self) -> Result<(), QueueError> {
        for task in &self.tasks {
            task.abort();
        }
        Ok(self.store.give_back(self.owner).await?)
    }

    async fn ready(&self) -> bool {
        self.store.ping().await.is_ok()
    }
}
