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
use crate::model::{DispatchId, StoreError};
use crate::store::postgres::PgStore;
use crate::store::{from_millis, millis};

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
        self.store
            .pool
            .query(
                "UPDATE requests SET attempt = $3, due = $4, lease_owner = NULL, lease_until = NULL
                 WHERE dispatch = $1 AND idx = $2 AND status = 0",
                &[&job.dispatch.as_uuid(), &(job.request as i32), &(job.attempt as i32), &millis(job.due)],
            )
            .await?;
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

async fn claim(store: &PgStore, owner: Uuid, lease: Duration, limit: i64) -> Result<Vec<Job>, StoreError> {
    let now = SystemTime::now();
    let rows = store
        .pool
        .query(
            "UPDATE requests r SET lease_owner = $1, lease_until = $2
             FROM (SELECT dispatch, idx FROM requests
                   WHERE status = 0 AND due <= $3 AND (lease_until IS NULL OR lease_until < $3)
                   ORDER BY due LIMIT $4
                   FOR UPDATE SKIP LOCKED) c
             WHERE r.dispatch = c.dispatch AND r.idx = c.idx
             RETURNING r.dispatch, r.idx, r.attempt, r.due",
            &[&owner, &millis(now + lease), &millis(now), &limit],
        )
        .await?;
    let mut jobs: Vec<Job> = rows
        .iter()
        .map(|r| Job {
            dispatch: DispatchId::from_uuid(r.get(0)),
            request: r.get::<_, i32>(1) as u32,
            attempt: r.get::<_, i32>(2) as u32,
            due: from_millis(r.get(3)),
        })
        .collect();
    jobs.sort_by_key(|j| j.due);
    Ok(jobs)
}

async fn claim_loop(store: Arc<PgStore>, owner: Uuid, lease: Duration, tx: mpsc::Sender<Job>, wake: Arc<Notify>) {
    loop {
        // Claim only what the buffer can take now: a claimed job waits with a lease.
        let Ok(permit) = tx.reserve().await else { return };
        let room = (tx.capacity() + 1).min(CLAIM_BATCH as usize) as i64;
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match claim(&store, owner, lease, room).await {
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
        let until = millis(SystemTime::now() + lease);
        if let Err(e) = store
            .pool
            .query("UPDATE requests SET lease_until = $2 WHERE lease_owner = $1 AND status = 0", &[&owner, &until])
            .await
        {
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
        let rows = self.store.pool.query("SELECT count(*) FROM requests WHERE status = 0", &[]).await?;
        Ok(rows.first().map(|r| r.get::<_, i64>(0) as usize).unwrap_or(0))
    }

    /// Stops claiming and gives back every job this instance holds, to be claimed again
    /// at once rather than when the lease runs out.
    async fn close(&self) -> Result<(), QueueError> {
        for task in &self.tasks {
            task.abort();
        }
        self.store
            .pool
            .query(
                "UPDATE requests SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1 AND status = 0",
                &[&self.owner],
            )
            .await?;
        Ok(())
    }

    async fn ready(&self) -> bool {
        self.store.pool.query("SELECT 1", &[]).await.is_ok()
    }
}
