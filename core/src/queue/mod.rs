//! The delivery queue: jobs are data (which request, which attempt, when it is due), so a
//! retry that waits minutes is a row in a queue, not a sleeping task. Backends implement
//! [`Queue`]; [`memory::MemoryQueue`] is the in-process one (behind the SQLite store too,
//! which refills it at start), [`postgres::PgQueue`] the one several instances share.

pub mod memory;
pub mod postgres;

use std::time::SystemTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::model::DispatchId;

/// One attempt of one outgoing request, waiting for its time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub dispatch: DispatchId,
    /// The request's index within its dispatch.
    pub request: u32,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Not to be handed out before this time.
    pub due: SystemTime,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("queue: {0}")]
pub struct QueueError(pub String);

/// A queue of [`Job`]s ordered by due time.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Adds new jobs (one dispatch's requests).
    async fn push(&self, jobs: Vec<Job>) -> Result<(), QueueError>;

    /// Waits for the next due job and hands it to the caller, who must `complete` it or
    /// `retry` it.
    async fn next(&self) -> Result<Job, QueueError>;

    /// Puts a job that was handed out back, as its next attempt (`attempt` and `due` set).
    async fn retry(&self, job: Job) -> Result<(), QueueError>;

    /// The job is finished (delivered or failed for good).
    async fn complete(&self, job: &Job) -> Result<(), QueueError>;

    /// Jobs waiting or being worked on.
    async fn len(&self) -> Result<usize, QueueError>;

    async fn is_empty(&self) -> Result<bool, QueueError> {
        Ok(self.len().await? == 0)
    }

    /// Gives back what this process holds (a shared queue's claims), at shutdown.
    async fn close(&self) -> Result<(), QueueError> {
        Ok(())
    }

    /// Whether the backend can take work (for `/readyz`).
    async fn ready(&self) -> bool {
        true
    }
}
