//! Durable state: dispatches, their requests (bodies, status, next attempt) and attempts,
//! and idempotency keys. [`Records`](crate::records::Records) writes through to a [`Store`]
//! before it changes its memory, so what the API reports was on disk first; campaign stats
//! are derived from the stored records, so they always add up with them.
//!
//! Backends: [`sqlite::SqliteStore`] (the default: one file in `data_dir`, no server) and
//! [`postgres::PgStore`] (shared by several instances, which then claim jobs from it).

pub mod postgres;
pub mod sqlite;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};

use crate::payload::CampaignId;
use crate::plugin::RequestTarget;
use crate::records::{AttemptRecord, DispatchId, RequestStatus};
use crate::stats::AttemptResult;

#[derive(Debug, Clone, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// A dispatch as it is stored.
#[derive(Debug, Clone)]
pub struct StoredDispatch {
    pub id: DispatchId,
    pub template: String,
    /// The template version the dispatch was accepted with (this process's numbering).
    pub template_version: u64,
    pub campaign: CampaignId,
    pub created_at: SystemTime,
    pub idempotency_key: Option<String>,
    /// Profiles a transform plugin left out on purpose.
    pub skipped: usize,
    pub requests: Vec<StoredRequest>,
}

#[derive(Debug, Clone)]
pub struct StoredRequest {
    pub target: Option<StoredTarget>,
    pub profiles: usize,
    /// Kept while the request is pending or failed (for a replay); `None` once delivered,
    /// or when the body was not asked for.
    pub body: Option<Bytes>,
    pub status: RequestStatus,
    /// The next attempt to make (1 for the first).
    pub attempt: u32,
    /// When that attempt is due.
    pub due: SystemTime,
    pub attempts: Vec<AttemptRecord>,
}

/// A transform plugin's planned request, minus its sensitive header values: secrets are
/// never written to disk. They come back from the template when the request is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTarget {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
}

impl StoredTarget {
    pub fn from_target(target: &RequestTarget) -> Self {
        let headers = target
            .headers
            .iter()
            .filter(|(_, v)| !v.is_sensitive())
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        Self { method: target.method.as_str().to_string(), url: target.url.to_string(), headers }
    }

    /// The target again, with the sensitive headers of `template_headers` (the current
    /// version of the template) put back.
    pub fn to_target(&self, template_headers: &HeaderMap) -> Result<RequestTarget, StoreError> {
        let method = Method::from_bytes(self.method.as_bytes())
            .map_err(|_| StoreError(format!("stored method `{}` is invalid", self.method)))?;
        let url = Url::parse(&self.url).map_err(|e| StoreError(format!("stored URL `{}`: {e}", self.url)))?;
        let mut headers = HeaderMap::new();
        for (name, value) in template_headers.iter().filter(|(_, v)| v.is_sensitive()) {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.headers {
            let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) else {
                return Err(StoreError(format!("stored header `{name}` is invalid")));
            };
            headers.append(name, value);
        }
        Ok(RequestTarget { method, url, headers })
    }
}

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

/// A request's state after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextState {
    Delivered,
    Failed {
        reason: String,
    },
    /// Attempt `attempt` is due at `due`.
    Retry {
        attempt: u32,
        due: SystemTime,
    },
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
    /// (per template) is taken. When this returns, the dispatch is durable.
    async fn insert(&self, dispatch: &StoredDispatch) -> Result<Inserted, StoreError>;

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

    /// The bytes of the bodies of every pending request in the store, for a shared store
    /// (other instances accept and finish requests, so this process's own count drifts);
    /// `None` when this process's count is the truth (the default).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_keep_no_secret_and_get_it_back_from_the_template() {
        let mut headers = HeaderMap::new();
        let mut secret = HeaderValue::from_static("Bearer s3cret");
        secret.set_sensitive(true);
        headers.insert("authorization", secret.clone());
        headers.insert("idempotency-key", HeaderValue::from_static("42-7"));
        let target = RequestTarget {
            method: Method::POST,
            url: Url::parse("https://example.test/api/v2/tickets").unwrap(),
            headers: headers.clone(),
        };
        let stored = StoredTarget::from_target(&target);
        assert_eq!(stored.headers, vec![("idempotency-key".to_string(), "42-7".to_string())]);
        assert!(!serde_json::to_string(&stored).unwrap().contains("s3cret"));
        let back = stored.to_target(&headers).unwrap();
        assert_eq!(back.method, Method::POST);
        assert_eq!(back.headers["authorization"], "Bearer s3cret");
        assert_eq!(back.headers["idempotency-key"], "42-7");
    }
}
