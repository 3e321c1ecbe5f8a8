//! Dispatch records: each dispatch's requests and their attempts, for
//! `GET /v1/dispatches/{id}`, plus the idempotency keys that map a resend to its first
//! dispatch. Records hold the template version the dispatch started with.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::rfc3339;
use crate::payload::CampaignId;
use crate::plugin::RequestTarget;
use crate::template::Template;

/// The campaign-stats error of a request that exhausted its attempts.
pub const DISPATCH_FAILED: &str = "Webhook Dispatch Failed";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DispatchId(Uuid);

impl DispatchId {
    /// A new, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for DispatchId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for DispatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for DispatchId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self).map_err(|_| format!("`{s}` is not a dispatch id"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestStatus {
    Pending,
    Delivered,
    /// Exhausted its attempts or got a final answer; `reason` is the last one.
    Failed {
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub at: SystemTime,
    pub latency: Duration,
    /// The HTTP status, when the destination answered.
    pub status: Option<u16>,
    /// Why it did not succeed (never a secret: built from statuses and error kinds).
    pub error: Option<String>,
}

#[derive(Debug)]
pub struct RequestRecord {
    /// Where it goes when a transform planned it; `None`: the template's method, URL and headers.
    pub target: Option<Arc<RequestTarget>>,
    pub profiles: usize,
    /// The body to send; dropped once the request is finished.
    pub body: Option<Bytes>,
    pub status: RequestStatus,
    pub attempts: Vec<AttemptRecord>,
}

impl RequestRecord {
    /// A request waiting for its first attempt.
    pub fn new(target: Option<Arc<RequestTarget>>, body: Bytes, profiles: usize) -> Self {
        Self { target, profiles, body: Some(body), status: RequestStatus::Pending, attempts: Vec::new() }
    }
}

/// A dispatch: immutable facts plus one lock per request, so workers delivering the
/// requests of one big dispatch do not contend on a shared lock.
#[derive(Debug)]
pub struct DispatchRecord {
    pub id: DispatchId,
    pub template: Arc<Template>,
    pub campaign: CampaignId,
    pub created_at: SystemTime,
    pub requests: Vec<Mutex<RequestRecord>>,
    /// Requests not yet delivered or failed.
    pending: AtomicUsize,
}

impl DispatchRecord {
    pub fn new(id: DispatchId, template: Arc<Template>, campaign: CampaignId, requests: Vec<RequestRecord>) -> Self {
        let pending = requests.iter().filter(|r| r.status == RequestStatus::Pending).count();
        Self {
            id,
            template,
            campaign,
            created_at: SystemTime::now(),
            requests: requests.into_iter().map(Mutex::new).collect(),
            pending: AtomicUsize::new(pending),
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    pub fn is_finished(&self) -> bool {
        self.pending() == 0
    }

    fn request(&self, index: u32) -> Option<MutexGuard<'_, RequestRecord>> {
        self.requests.get(index as usize).map(|r| r.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn profiles(&self) -> usize {
        self.requests.iter().map(|r| r.lock().unwrap_or_else(|e| e.into_inner()).profiles).sum()
    }
}

/// The dispatch records, bounded: past `limit` finished dispatches the oldest are dropped
/// (with their idempotency keys).
pub struct Records {
    inner: RwLock<Inner>,
    limit: usize,
    /// Woken whenever a dispatch finishes.
    finished: tokio::sync::Notify,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<DispatchId, Arc<DispatchRecord>>,
    idempotency: HashMap<(String, String), DispatchId>,
    keys_of: HashMap<DispatchId, (String, String)>,
    finished: VecDeque<DispatchId>,
}

/// What a worker needs to send one request.
pub struct Work {
    pub template: Arc<Template>,
    pub target: Option<Arc<RequestTarget>>,
    pub campaign: CampaignId,
    pub body: Bytes,
    pub profiles: usize,
}

impl Records {
    pub fn new(limit: usize) -> Self {
        Self { inner: RwLock::new(Inner::default()), limit: limit.max(1), finished: tokio::sync::Notify::new() }
    }

    /// Stores a new dispatch, unless `idempotency_key` was seen for this template: then
    /// returns the first dispatch's id and `false`.
    pub fn insert(&self, record: DispatchRecord, idempotency_key: Option<String>) -> (DispatchId, bool) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = &idempotency_key {
            let k = (record.template.name.clone(), key.clone());
            if let Some(existing) = inner.idempotency.get(&k) {
                return (*existing, false);
            }
            inner.idempotency.insert(k.clone(), record.id);
            inner.keys_of.insert(record.id, k);
        }
        let id = record.id;
        inner.by_id.insert(id, Arc::new(record));
        (id, true)
    }

    /// The dispatch an idempotency key maps to.
    pub fn by_idempotency_key(&self, template: &str, key: &str) -> Option<DispatchId> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.idempotency.get(&(template.to_string(), key.to_string())).copied()
    }

    pub fn get(&self, id: DispatchId) -> Option<Arc<DispatchRecord>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).by_id.get(&id).cloned()
    }

    /// The template version, body and campaign of a pending request.
    pub fn work(&self, id: DispatchId, request: u32) -> Option<Work> {
        let record = self.get(id)?;
        let req = record.request(request)?;
        Some(Work {
            template: record.template.clone(),
            target: req.target.clone(),
            campaign: record.campaign.clone(),
            body: req.body.clone()?,
            profiles: req.profiles,
        })
    }

    /// Waits until every request of the dispatch is finished (or the record is gone), and
    /// calls `progress` with (finished, total) requests when that changes, at most every
    /// 100 ms. Waiters are woken when a dispatch finishes, not on every request.
    pub async fn wait_finished(&self, id: DispatchId, mut progress: impl FnMut(usize, usize)) {
        let mut last = usize::MAX;
        loop {
            let notified = self.finished.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let Some(record) = self.get(id) else { return };
            let (pending, total) = (record.pending(), record.requests.len());
            let done = total - pending;
            if done != last {
                progress(done, total);
                last = done;
            }
            if pending == 0 {
                return;
            }
            let _ = tokio::time::timeout(std::time::Duration::from_millis(100), notified).await;
        }
    }

    pub fn record_attempt(&self, id: DispatchId, request: u32, attempt: AttemptRecord) {
        if let Some(mut req) = self.get(id).as_deref().and_then(|r| r.request(request)) {
            req.attempts.push(attempt);
        }
    }

    /// Makes the failed requests of a dispatch pending again (a dead-letter replay) and
    /// returns (request, profiles, last reason) of each.
    pub fn requeue_failed(&self, id: DispatchId) -> Option<Vec<(u32, usize, String)>> {
        let record = self.get(id)?;
        let mut requeued = Vec::new();
        for (index, request) in record.requests.iter().enumerate() {
            let mut req = request.lock().unwrap_or_else(|e| e.into_inner());
            if let (RequestStatus::Failed { reason }, Some(_)) = (&req.status, &req.body) {
                requeued.push((index as u32, req.profiles, reason.clone()));
                req.status = RequestStatus::Pending;
            }
        }
        if !requeued.is_empty() {
            let was_finished = record.pending.fetch_add(requeued.len(), Ordering::AcqRel) == 0;
            if was_finished {
                // Pending again: it must not be evicted as a finished dispatch.
                self.inner.write().unwrap_or_else(|e| e.into_inner()).finished.retain(|f| *f != id);
            }
        }
        Some(requeued)
    }

    /// Marks a request delivered or failed; evicts old finished dispatches past the limit.
    pub fn finish(&self, id: DispatchId, request: u32, status: RequestStatus) {
        let Some(record) = self.get(id) else { return };
        let was_pending = match record.request(request) {
            Some(mut req) => {
                let was_pending = req.status == RequestStatus::Pending;
                // A delivered body is not needed again; a failed one is kept for a retry.
                if status == RequestStatus::Delivered {
                    req.body = None;
                }
                req.status = status;
                was_pending
            }
            None => false,
        };
        if !was_pending || record.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        self.finished.notify_waiters();
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.finished.push_back(id);
        while inner.finished.len() > self.limit {
            if let Some(old) = inner.finished.pop_front() {
                inner.by_id.remove(&old);
                if let Some(k) = inner.keys_of.remove(&old) {
                    inner.idempotency.remove(&k);
                }
            }
        }
    }
}

/// The API's view of a dispatch.
#[derive(Debug, Serialize)]
pub struct DispatchView {
    pub dispatch_id: String,
    pub template: String,
    pub template_version: u64,
    pub campaign: String,
    pub created_at: String,
    /// `pending` while any request is; then `delivered`, `failed`, or `partial`.
    pub state: &'static str,
    pub requests: Vec<RequestView>,
}

#[derive(Debug, Serialize)]
pub struct RequestView {
    pub index: usize,
    pub profiles: usize,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub attempts: Vec<AttemptView>,
}

#[derive(Debug, Serialize)]
pub struct AttemptView {
    pub attempt: u32,
    pub at: String,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DispatchRecord {
    pub fn view(&self) -> DispatchView {
        let requests: Vec<RequestView> = self
            .requests
            .iter()
            .enumerate()
            .map(|(index, r)| {
                let r = r.lock().unwrap_or_else(|e| e.into_inner());
                let (status, error, reason) = match &r.status {
                    RequestStatus::Pending => ("pending", None, None),
                    RequestStatus::Delivered => ("delivered", None, None),
                    RequestStatus::Failed { reason } => ("failed", Some(DISPATCH_FAILED), Some(reason.clone())),
                };
                RequestView {
                    index,
                    profiles: r.profiles,
                    status,
                    error,
                    reason,
                    attempts: r
                        .attempts
                        .iter()
                        .map(|a| AttemptView {
                            attempt: a.attempt,
                            at: rfc3339(a.at),
                            latency_ms: (a.latency.as_secs_f64() * 1e6).round() / 1e3,
                            status: a.status,
                            error: a.error.clone(),
                        })
                        .collect(),
                }
            })
            .collect();
        let count = |s: &str| requests.iter().filter(|r| r.status == s).count();
        let state = if count("pending") > 0 {
            "pending"
        } else if count("failed") == 0 {
            "delivered"
        } else if count("delivered") == 0 {
            "failed"
        } else {
            "partial"
        };
        DispatchView {
            dispatch_id: self.id.to_string(),
            template: self.template.name.clone(),
            template_version: self.template.version,
            campaign: self.campaign.clone(),
            created_at: rfc3339(self.created_at),
            state,
            requests,
        }
    }
}
