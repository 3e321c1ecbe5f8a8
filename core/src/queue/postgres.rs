//! The shared queue: due requests are claimed from PostgreSQL's `requests` table with
//! `FOR UPDATE SKIP LOCKED`, so instances never take the same job, and each claim is a
//! lease: this instance renews the leases of the jobs it holds, and a job whose lease ran
//! out (its instance died) is claimed again by another. Its delivery id is the same, so
//! the receiver can tell the duplicate.
//!
//! One claimer task per instance fills a small buffer that the workers take from, claiming
//! as many jobs at once as the buffer has room for (with their bodies: a worker reads
//! nothing more). When nothing is due it sleeps until the next job is, or until an instance
//! makes work due now (`LISTEN/NOTIFY`: a new dispatch, a replay, a job given back), or at
//! most `queue_poll`: an idle instance costs the database a few queries a minute. The leases
//! of the jobs held are renewed together, in one statement that finds them by their keys
//! (however many other requests are pending), and not at all when none is.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::{Mutex, Notify, mpsc};
use tracing::warn;
use uuid::Uuid;

use super::{Job, Queue, QueueError};
use crate::model::{DispatchId, StoreError};
use crate::store::postgres::PgStore;

/// The shortest wait between two claims that found nothing: a job due now that another
/// instance is locking while it claims.
const MIN_WAIT: Duration = Duration::from_millis(50);

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
    held: Arc<Held>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl From<StoreError> for QueueError {
    fn from(e: StoreError) -> Self {
        QueueError(e.0)
    }
}

impl PgQueue {
    /// Starts the claimer (which keeps up to `buffer` claimed jobs ready, and looks for work
    /// at least every `poll`), the listener that wakes it, and the lease renewer.
    pub fn start(store: Arc<PgStore>, lease: Duration, poll: Duration, buffer: usize) -> Self {
        let owner = Uuid::now_v7();
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let wake = Arc::new(Notify::new());
        let held = Arc::new(Held::default());
        let claimer = Claimer { store: store.clone(), owner, lease, poll, held: held.clone() };
        let tasks = vec![
            tokio::spawn(claimer.run(tx.clone(), wake.clone())),
            store.listen(wake.clone()),
            tokio::spawn(renew_loop(store.clone(), owner, lease, held.clone())),
        ];
        Self { store, owner, jobs: Mutex::new(rx), local: tx, wake, held, tasks }
    }

    async fn release(&self, job: &Job) -> Result<(), QueueError> {
        self.held.remove(job);
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

struct Claimer {
    store: Arc<PgStore>,
    owner: Uuid,
    lease: Duration,
    poll: Duration,
    held: Arc<Held>,
}

/// The jobs this instance holds a lease on (claimed, not yet finished or given back).
#[derive(Default)]
struct Held(std::sync::Mutex<HashSet<(DispatchId, u32)>>);

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(DispatchId, u32)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove(&self, job: &Job) {
        self.lock().remove(&(job.dispatch, job.request));
    }
}

impl Claimer {
    async fn run(self, tx: mpsc::Sender<Job>, wake: Arc<Notify>) {
        loop {
            // Claim only what the buffer can take now: a claimed job waits with a lease.
            let Ok(permit) = tx.reserve().await else { return };
            let room = (tx.capacity() + 1).min(CLAIM_BATCH as usize) as i64;
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.store.claim(self.owner, self.lease, room).await {
                Ok(jobs) if !jobs.is_empty() => {
                    self.held.lock().extend(jobs.iter().map(|j| (j.dispatch, j.request)));
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
                    let _ = tokio::time::timeout(self.idle_wait().await, notified).await;
                }
                Err(e) => {
                    drop(permit);
                    warn!("{e}; claiming again in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// How long to wait for a wake-up when nothing is due: until the next job is, within `poll`.
    async fn idle_wait(&self) -> Duration {
        match self.store.next_due().await {
            Ok(Some(due)) => due.duration_since(SystemTime::now()).unwrap_or_default().clamp(MIN_WAIT, self.poll),
            Ok(None) => self.poll,
            Err(e) => {
                warn!("{e}");
                self.poll.min(Duration::from_secs(1))
            }
        }
    }
}

/// Renews this instance's leases at a third of their length, while it holds any.
async fn renew_loop(store: Arc<PgStore>, owner: Uuid, lease: Duration, held: Arc<Held>) {
    loop {
        tokio::time::sleep(lease / 3).await;
        let jobs: Vec<(DispatchId, u32)> = held.lock().iter().copied().collect();
        if jobs.is_empty() {
            continue;
        }
        if let Err(e) = store.renew(owner, &jobs, lease).await {
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
    async fn complete(&self, job: &Job) -> Result<(), QueueError> {
        self.held.remove(job);
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
        self.held.lock().clear();
        Ok(self.store.give_back(self.owner).await?)
    }

    /// The database answers, within 2 s.
    async fn ready(&self) -> bool {
        matches!(tokio::time::timeout(Duration::from_secs(2), self.store.ping()).await, Ok(Ok(())))
    }
}
