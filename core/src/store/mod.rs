//! Durable state: dispatches, their requests (bodies, status, next attempt) and attempts,
//! and idempotency keys. [`Records`](crate::records::Records) writes through to a [`Store`]
//! before it changes its memory, so what the API reports was on disk first; campaign stats
//! are derived from the stored records, so they always add up with them.
//!
//! Backends: [`sqlite::SqliteStore`] (the default: one file in `data_dir`, no server) and
//! [`postgres::PgStore`] (shared by several instances, which then claim jobs from it). Both
//! keep the one schema of [`schema`], run the statements of [`sql`] (written once, rendered
//! per dialect) and decode rows with [`rows`]; `core/tests/conformance.rs` runs the same
//! tests on both.

mod group_commit;
pub mod postgres;
mod postgres_pool;
mod postgres_tls;
mod postgres_writers;
mod rows;
mod schema;
mod sql;
pub mod sqlite;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::model::{
    AttemptRecord, AttemptResult, DispatchId, NextState, RequestStatus, StoreError, StoredDispatch, StoredRequest,
    StoredTarget,
};
use crate::payload::CampaignId;

/// One request of a dispatch, with what it takes to send it.
#[derive(Debug, Clone)]
pub struct StoredWork {
    pub template: String,
    pub campaign: CampaignId,
    /// Without its attempts.
    pub request: StoredRequest,
}

/// What inserting a dispatch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    Created,
    /// The idempotency key belongs to this earlier dispatch; nothing was stored.
    Existing(DispatchId),
}

/// One attempt of one request, and what follows from it.
#[derive(Debug, Clone)]
pub struct Settlement {
    pub dispatch: DispatchId,
    pub request: u32,
    /// `None` when no attempt could be made (its template is gone).
    pub attempt: Option<AttemptRecord>,
    pub next: NextState,
}

/// A failed request made pending again by a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requeued {
    pub request: u32,
    pub profiles: usize,
    /// Its last failure reason.
    pub reason: String,
    /// The size of its body, which is pending again.
    pub body_bytes: u64,
}

/// Which dispatches to read.
#[derive(Debug, Clone, Copy)]
pub enum Filter<'a> {
    /// Every retained dispatch, oldest first.
    All,
    Id(DispatchId),
    Campaign(&'a str),
    Template(&'a str),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a new dispatch with its requests, all due now, unless its idempotency key
    /// (per template) is taken. When this returns, the dispatch is durable. It takes the
    /// dispatch whole, so that a store writing it on another thread need not copy it (a
    /// dispatch of 100,000 requests is a few tens of MB besides its bodies).
    async fn insert(&self, dispatch: StoredDispatch) -> Result<Inserted, StoreError>;

    /// Records an attempt and the request's next state. When this returns, it is durable.
    async fn settle(&self, settlement: &Settlement) -> Result<(), StoreError>;

    /// Makes the failed requests of a dispatch that still have their body pending again,
    /// due now at attempt 1. `None` for an unknown dispatch.
    async fn requeue_failed(&self, id: DispatchId) -> Result<Option<Vec<Requeued>>, StoreError>;

    /// The dispatch an idempotency key belongs to.
    async fn by_idempotency_key(&self, template: &str, key: &str) -> Result<Option<DispatchId>, StoreError>;

    /// One request with its body, its dispatch's template name and campaign: what a worker
    /// needs when memory does not hold the dispatch. `None` for an unknown request.
    async fn work(&self, id: DispatchId, request: u32) -> Result<Option<StoredWork>, StoreError>;

    /// Dispatches with their requests and attempts, oldest first; request bodies only
    /// with `bodies`.
    async fn select(&self, filter: Filter<'_>, bodies: bool) -> Result<Vec<StoredDispatch>, StoreError>;

    /// Deletes finished dispatches created before `before`; returns how many.
    async fn prune(&self, before: SystemTime) -> Result<u64, StoreError>;

    /// As [`Store::prune`], returning the deleted dispatches with their requests and
    /// attempts (no bodies): what they counted for in the campaign stats, which drop them.
    /// The backends implement it; the default (for wrappers) prunes and returns nothing.
    async fn prune_dispatches(&self, before: SystemTime) -> Result<Vec<StoredDispatch>, StoreError> {
        self.prune(before).await.map(|_| Vec::new())
    }

    /// The bytes of the bodies of every pending request in the store: what a shared store's
    /// instances use (the others accept and finish requests, so this process's own count
    /// drifts). Both backends answer; `None` from a wrapper that does not (the default).
    async fn pending_body_bytes(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    /// Whether other gateway instances share this store (and its queue): then its rows,
    /// not this process's memory, answer for dispatches and campaign stats.
    fn shared(&self) -> bool {
        false
    }
}

// ---------------------------------------------------------------- encodings shared by the backends

pub(crate) fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub(crate) fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// `0` pending, `1` delivered, `2` failed.
pub(crate) fn status_code(status: &RequestStatus) -> i16 {
    match status {
        RequestStatus::Pending => 0,
        RequestStatus::Delivered => 1,
        RequestStatus::Failed { .. } => 2,
    }
}

pub(crate) fn status_from(code: i16, reason: Option<String>) -> RequestStatus {
    match code {
        1 => RequestStatus::Delivered,
        2 => RequestStatus::Failed { reason: reason.unwrap_or_default() },
        _ => RequestStatus::Pending,
    }
}

pub(crate) fn result_code(result: AttemptResult) -> i16 {
    match result {
        AttemptResult::Success => 0,
        AttemptResult::Retry => 1,
        AttemptResult::Failure => 2,
    }
}

pub(crate) fn result_from(code: i16) -> AttemptResult {
    match code {
        0 => AttemptResult::Success,
        2 => AttemptResult::Failure,
        _ => AttemptResult::Retry,
    }
}

pub(crate) fn target_json(target: &Option<StoredTarget>) -> Option<String> {
    target.as_ref().map(|t| serde_json::to_string(t).expect("a target serializes"))
}

pub(crate) fn target_from_json(json: Option<String>) -> Result<Option<StoredTarget>, StoreError> {
    json.map(|j| serde_json::from_str(&j).map_err(|e| StoreError(format!("stored target: {e}")))).transpose()
}

/// The state columns a settlement writes: status, reason, next attempt, due (ms).
pub(crate) fn next_columns(next: &NextState) -> (i16, Option<&str>, Option<i64>, Option<i64>) {
    match next {
        NextState::Delivered => (1, None, None, None),
        NextState::Failed { reason } => (2, Some(reason.as_str()), None, None),
        NextState::Retry { attempt, due } => (0, None, Some(i64::from(*attempt)), Some(millis(*due))),
    }
}
