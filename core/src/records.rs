//! Dispatch records: each dispatch's requests and their attempts, for
//! `GET /v1/dispatches/{id}`, plus the idempotency keys that map a resend to its first
//! dispatch. Records hold the template version the dispatch started with (the current
//! version once read back from the store).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;

use crate::clock::rfc3339;
use crate::model::{
    AttemptRecord, DISPATCH_FAILED, DispatchId, NextState, RequestStatus, StoreError, StoredDispatch, StoredRequest,
    StoredTarget,
};
use crate::payload::CampaignId;
use crate::plugin::RequestTarget;
use crate::stats::Stats;
use crate::store::{Filter, Inserted, Requeued, Settlement, Store};
use crate::template::Template;

#[derive(Debug)]
pub struct RequestRecord {
    /// Where it goes when a transform planned it; `None`: the template's method, URL and headers.
    pub target: Option<Arc<RequestTarget>>,
    pub profiles: usize,
    /// The body to send; dropped once the request is delivered (a failed one keeps it for a replay).
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
    pub template_name: String,
    /// The version the dispatch was accepted with.
    pub template_version: u64,
    /// The version its requests are sent with: the one it was accepted with, or after a
    /// restart the template's current version; `None` when the template is gone.
    pub template: Option<Arc<Template>>,
    pub campaign: CampaignId,
    pub created_at: SystemTime,
    /// Profiles a transform plugin left out on purpose.
    pub skipped: usize,
    pub requests: Vec<Mutex<RequestRecord>>,
    /// Requests not yet delivered or failed.
    pending: AtomicUsize,
}

impl DispatchRecord {
    pub fn new(
        id: DispatchId,
        template: Arc<Template>,
        campaign: CampaignId,
        requests: Vec<RequestRecord>,
        skipped: usize,
    ) -> Self {
        let pending = requests.iter().filter(|r| r.status == RequestStatus::Pending).count();
        Self {
            id,
            template_name: template.name.clone(),
            template_version: template.version,
            template: Some(template),
            campaign,
            created_at: SystemTime::now(),
            skipped,
            requests: requests.into_iter().map(Mutex::new).collect(),
            pending: AtomicUsize::new(pending),
        }
    }

    /// A stored dispatch, to be sent with `template` (its current version).
    pub fn from_stored(stored: StoredDispatch, template: Option<Arc<Template>>) -> Result<Self, StoreError> {
        let mut requests = Vec::with_capacity(stored.requests.len());
        for r in stored.requests {
            let target = match (&r.target, &template) {
                (Some(t), Some(tpl)) => Some(Arc::new(t.to_target(&tpl.headers)?)),
                (Some(t), None) => Some(Arc::new(t.to_target(&Default::default())?)),
                (None, _) => None,
            };
            requests.push(RequestRecord {
                target,
                profiles: r.profiles,
                body: r.body,
                status: r.status,
                attempts: r.attempts,
            });
        }
        let pending = requests.iter().filter(|r| r.status == RequestStatus::Pending).count();
        Ok(Self {
            id: stored.id,
            template_name: stored.template,
            template_version: stored.template_version,
            template,
            campaign: stored.campaign,
            created_at: stored.created_at,
            skipped: stored.skipped,
            requests: requests.into_iter().map(Mutex::new).collect(),
            pending: AtomicUsize::new(pending),
        })
    }

    /// What the store keeps of a new dispatch (every request due now, at attempt 1).
    pub fn to_stored(&self, idempotency_key: Option<String>) -> StoredDispatch {
        let requests = self
            .requests
            .iter()
            .map(|r| {
                let r = r.lock().unwrap_or_else(|e| e.into_inner());
                StoredRequest {
                    target: r.target.as_deref().map(StoredTarget::from_target),
                    profiles: r.profiles,
                    body: r.body.clone(),
                    status: r.status.clone(),
                    attempt: 1,
                    due: self.created_at,
                    attempts: Vec::new(),
                }
            })
            .collect();
        StoredDispatch { idempotency_key, requests, ..self.to_stored_head() }
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

    /// The dispatch with its requests' outcomes and attempts, without bodies: what it
    /// counts for in the stats.
    pub fn summary(&self) -> StoredDispatch {
        let requests = (self.requests.iter())
            .map(|r| {
                let r = r.lock().unwrap_or_else(|e| e.into_inner());
                StoredRequest {
                    target: None,
                    profiles: r.profiles,
                    body: None,
                    status: r.status.clone(),
                    attempt: 1,
                    due: self.created_at,
                    attempts: r.attempts.clone(),
                }
            })
            .collect();
        StoredDispatch { requests, ..self.to_stored_head() }
    }

    fn to_stored_head(&self) -> StoredDispatch {
        StoredDispatch {
            id: self.id,
            template: self.template_name.clone(),
            template_version: self.template_version,
            campaign: self.campaign.clone(),
            created_at: self.created_at,
            idempotency_key: None,
            skipped: self.skipped,
            requests: Vec::new(),
        }
    }

    /// The bytes of the bodies of the requests still pending.
    pub fn pending_body_bytes(&self) -> u64 {
        (self.requests.iter())
            .map(|r| r.lock().unwrap_or_else(|e| e.into_inner()))
            .filter(|r| r.status == RequestStatus::Pending)
            .map(|r| r.body.as_ref().map_or(0, |b| b.len() as u64))
            .sum()
    }
}

/// Finds the current version of a template by name (after a restart, or for a dispatch
/// another instance accepted).
pub type TemplateSource = Arc<dyn Fn(&str) -> Option<Arc<Template>> + Send + Sync>;

/// The budget of pending request bodies (`limits.max_pending_bytes`): bytes are reserved
/// when a dispatch is accepted and released as its requests finish (delivered or failed);
/// restored and requeued requests count too.
#[derive(Debug)]
pub struct PendingBudget {
    limit: u64,
    used: AtomicU64,
}

/// A dispatch's bodies did not fit in the [`PendingBudget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetFull {
    pub wanted: u64,
    pub used: u64,
    pub limit: u64,
}

impl PendingBudget {
    pub fn new(limit: u64) -> Self {
        Self { limit, used: AtomicU64::new(0) }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The bytes of the bodies pending now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Takes `bytes` if they fit; the reservation gives them back when dropped, unless it
    /// is [kept](Reservation::keep).
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Result<Reservation, BudgetFull> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .map(|_| Reservation { budget: self.clone(), bytes })
            .map_err(|used| BudgetFull { wanted: bytes, used, limit: self.limit })
    }

    /// Sets the count to what a shared store holds (other instances accept and finish
    /// requests too): the budget is then the cluster's, within one sync period.
    pub fn sync(&self, pending: u64) {
        self.used.store(pending, Ordering::Release);
    }

    /// Counts bodies that are pending already (restored at start, requeued), even past
    /// the limit: they exist whether or not they fit.
    fn add(&self, bytes: u64) {
        let _ = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| Some(u.saturating_add(bytes)));
    }

    fn release(&self, bytes: u64) {
        let _ = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| Some(u.saturating_sub(bytes)));
    }
}

/// Bytes taken from a [`PendingBudget`] for a dispatch being accepted.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<PendingBudget>,
    bytes: u64,
}

impl Reservation {
    /// The dispatch was stored: its requests hold the bytes now, and give them back as
    /// they finish.
    pub fn keep(mut self) {
        self.bytes = 0;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// The dispatch records: in memory, written through to the [`Store`] first when there is
/// one. Memory is bounded: past `limit` finished dispatches the oldest are dropped from it
/// (with their idempotency keys); the store keeps them until the retention period ends.
/// With a shared store, memory holds nothing: the rows are the record, and other
/// instances change them.
pub struct Records {
    inner: RwLock<Inner>,
    limit: usize,
    /// Woken whenever a dispatch finishes.
    finished: tokio::sync::Notify,
    store: Option<Arc<dyn Store>>,
    templates: TemplateSource,
    /// Derived from the records: updated with them, after the store.
    stats: Arc<Stats>,
    /// The bytes of the pending requests' bodies.
    budget: Arc<PendingBudget>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<DispatchId, Arc<DispatchRecord>>,
    idempotency: HashMap<(String, String), DispatchId>,
    keys_of: HashMap<DispatchId, (String, String)>,
    /// Finished dispatches, oldest first: the ones memory may drop.
    evictable: VecDeque<DispatchId>,
}

impl Inner {
    /// Drops the oldest finished dispatches past `limit` from memory.
    fn evict_past(&mut self, limit: usize) {
        while self.evictable.len() > limit {
            if let Some(old) = self.evictable.pop_front() {
                self.forget(old);
            }
        }
    }

    /// Drops a dispatch and its idempotency key from memory.
    fn forget(&mut self, id: DispatchId) -> Option<Arc<DispatchRecord>> {
        if let Some(k) = self.keys_of.remove(&id) {
            self.idempotency.remove(&k);
        }
        self.by_id.remove(&id)
    }
}

/// What a worker needs to send one request.
pub struct Work {
    pub template_name: String,
    /// `None`: the template is gone.
    pub template: Option<Arc<Template>>,
    pub target: Option<Arc<RequestTarget>>,
    pub campaign: CampaignId,
    pub body: Bytes,
    pub profiles: usize,
}

impl Records {
    /// Records in memory only.
    pub fn new(limit: usize, stats: Arc<Stats>) -> Self {
        Self::with_store(limit, None, Arc::new(|_| None), stats)
    }

    pub fn with_store(
        limit: usize,
        store: Option<Arc<dyn Store>>,
        templates: TemplateSource,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            limit: limit.max(1),
            finished: tokio::sync::Notify::new(),
            store,
            templates,
            stats,
            budget: Arc::new(PendingBudget::new(u64::MAX)),
        }
    }

    /// Bounds the pending bodies to `limit` bytes (none by default).
    pub fn with_pending_budget(mut self, limit: u64) -> Self {
        self.budget = Arc::new(PendingBudget::new(limit));
        self
    }

    /// The budget of the pending bodies; a dispatch reserves its bytes here before it is
    /// inserted.
    pub fn budget(&self) -> &Arc<PendingBudget> {
        &self.budget
    }

    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    fn shared(&self) -> bool {
        self.store.as_ref().is_some_and(|s| s.shared())
    }

    /// Stores a new dispatch, unless `idempotency_key` was seen for this template: then
    /// returns the first dispatch's id and `false`. With a store, the dispatch is durable
    /// when this returns.
    pub async fn insert(
        &self,
        record: DispatchRecord,
        idempotency_key: Option<String>,
    ) -> Result<(DispatchId, bool), StoreError> {
        let key = idempotency_key.map(|k| (record.template_name.clone(), k));
        if let Some(k) = &key
            && let Some(existing) = self.inner.read().unwrap_or_else(|e| e.into_inner()).idempotency.get(k)
        {
            return Ok((*existing, false));
        }
        if let Some(store) = &self.store
            && let Inserted::Existing(id) = store.insert(&record.to_stored(key.as_ref().map(|k| k.1.clone()))).await?
        {
            return Ok((id, false));
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = key
            && !self.shared()
        {
            if let Some(existing) = inner.idempotency.get(&k) {
                return Ok((*existing, false));
            }
            inner.idempotency.insert(k.clone(), record.id);
            inner.keys_of.insert(record.id, k);
        }
        let id = record.id;
        let (requests, profiles) = (record.requests.len() as u64, record.profiles() as u64);
        self.stats.accepted(&record.campaign, &record.template_name, requests, profiles);
        if record.skipped > 0 {
            self.stats.skipped(&record.campaign, &record.template_name, record.skipped as u64);
        }
        // A shared store's rows are the record: other instances change them.
        if !self.shared() {
            inner.by_id.insert(id, Arc::new(record));
        }
        Ok((id, true))
    }

    /// Puts a dispatch read from the store back in memory (at start).
    pub fn restore(&self, record: DispatchRecord, idempotency_key: Option<String>) {
        self.budget.add(record.pending_body_bytes());
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let id = record.id;
        if let Some(key) = idempotency_key {
            let k = (record.template_name.clone(), key);
            inner.idempotency.insert(k.clone(), id);
            inner.keys_of.insert(id, k);
        }
        let finished = record.is_finished();
        inner.by_id.insert(id, Arc::new(record));
        if finished {
            inner.evictable.push_back(id);
            // Past `limits.dispatch_records`, memory lets go of the oldest records; what they
            // counted stays in the campaign stats (the retention period takes only the
            // records memory still holds out of them).
            inner.evict_past(self.limit);
        }
    }

    /// Without a store, a dispatch the retention period drops from memory is gone: its
    /// campaign stats go with it. (With a store, they go when the store prunes it.)
    fn dropped(&self, records: Vec<Arc<DispatchRecord>>) {
        if self.store.is_none() {
            for record in records {
                self.stats.forget(&record.summary());
            }
        }
    }

    /// Drops from memory the finished dispatches created before `before` (the retention
    /// period, which the store applies to its rows).
    pub fn forget_finished_before(&self, before: SystemTime) {
        let mut guard = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        let old: Vec<DispatchId> = (inner.evictable.iter())
            .filter(|id| inner.by_id.get(id).is_some_and(|r| r.is_finished() && r.created_at < before))
            .copied()
            .collect();
        let forgotten: Vec<Arc<DispatchRecord>> = old.into_iter().filter_map(|id| inner.forget(id)).collect();
        let by_id = &inner.by_id;
        inner.evictable.retain(|id| by_id.contains_key(id));
        drop(guard);
        self.dropped(forgotten);
    }

    /// The dispatch an idempotency key maps to.
    pub async fn by_idempotency_key(&self, template: &str, key: &str) -> Result<Option<DispatchId>, StoreError> {
        let k = (template.to_string(), key.to_string());
        if let Some(id) = self.inner.read().unwrap_or_else(|e| e.into_inner()).idempotency.get(&k) {
            return Ok(Some(*id));
        }
        match &self.store {
            Some(store) => store.by_idempotency_key(template, key).await,
            None => Ok(None),
        }
    }

    /// The dispatch as this process holds it in memory.
    pub fn get(&self, id: DispatchId) -> Option<Arc<DispatchRecord>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).by_id.get(&id).cloned()
    }

    /// The dispatch as it stands: from the store when it is shared (other instances update
    /// it) or when memory no longer holds it.
    pub async fn find(&self, id: DispatchId) -> Result<Option<Arc<DispatchRecord>>, StoreError> {
        if !self.shared()
            && let Some(record) = self.get(id)
        {
            return Ok(Some(record));
        }
        match &self.store {
            Some(store) => self.load(store, id).await,
            None => Ok(None),
        }
    }

    async fn load(&self, store: &Arc<dyn Store>, id: DispatchId) -> Result<Option<Arc<DispatchRecord>>, StoreError> {
        let Some(stored) = store.select(Filter::Id(id), false).await?.pop() else { return Ok(None) };
        let template = (self.templates)(&stored.template);
        Ok(Some(Arc::new(DispatchRecord::from_stored(stored, template)?)))
    }

    /// The template version, body and campaign of a pending request: from memory, or from
    /// the store (a shared store's dispatch, or one evicted from memory).
    pub async fn work(&self, id: DispatchId, request: u32) -> Result<Option<Work>, StoreError> {
        if let Some(record) = self.get(id) {
            let Some(req) = record.request(request) else { return Ok(None) };
            let Some(body) = req.body.clone() else { return Ok(None) };
            return Ok(Some(Work {
                template_name: record.template_name.clone(),
                template: record.template.clone(),
                target: req.target.clone(),
                campaign: record.campaign.clone(),
                body,
                profiles: req.profiles,
            }));
        }
        let Some(store) = &self.store else { return Ok(None) };
        let Some(stored) = store.work(id, request).await? else { return Ok(None) };
        let (Some(body), RequestStatus::Pending) = (stored.request.body, &stored.request.status) else {
            return Ok(None);
        };
        let template = (self.templates)(&stored.template);
        let target = match &stored.request.target {
            Some(t) => {
                Some(Arc::new(t.to_target(template.as_ref().map(|t| &t.headers).unwrap_or(&Default::default()))?))
            }
            None => None,
        };
        Ok(Some(Work {
            template_name: stored.template,
            template,
            target,
            campaign: stored.campaign,
            body,
            profiles: stored.request.profiles,
        }))
    }

    /// Waits until every request of the dispatch is finished (or the record is gone), and
    /// calls `progress` with (finished, total) requests when that changes, at most every
    /// 100 ms. Waiters are woken when a dispatch finishes, not on every request; with a
    /// shared store, the store is asked every 100 ms.
    pub async fn wait_finished(&self, id: DispatchId, mut progress: impl FnMut(usize, usize)) {
        let mut last = usize::MAX;
        loop {
            let notified = self.finished.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let record = if self.shared() { self.find(id).await.ok().flatten() } else { self.get(id) };
            let Some(record) = record else { return };
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

    /// Records an attempt and the request's next state of `work`: in the store first, then
    /// in memory and in the stats. Waiters on the dispatch hear of it last.
    pub async fn settle(&self, settlement: Settlement, work: &Work) -> Result<(), StoreError> {
        if let Some(store) = &self.store {
            store.settle(&settlement).await?;
        }
        let Settlement { dispatch, request, attempt, next } = settlement;
        let (campaign, template, profiles) = (&work.campaign, &work.template_name, work.profiles as u64);
        if let Some(attempt) = &attempt {
            self.stats.attempt(campaign, template, attempt.latency, attempt.result);
        }
        let record = self.get(dispatch);
        let was_pending = match record.as_deref().and_then(|r| r.request(request)) {
            Some(mut req) => {
                if let Some(attempt) = attempt {
                    req.attempts.push(attempt);
                }
                let was_pending = req.status == RequestStatus::Pending;
                match &next {
                    NextState::Retry { .. } => {}
                    NextState::Delivered => {
                        // A delivered body is not needed again; a failed one is kept for a replay.
                        req.body = None;
                        req.status = RequestStatus::Delivered;
                    }
                    NextState::Failed { reason } => req.status = RequestStatus::Failed { reason: reason.clone() },
                }
                was_pending
            }
            // Not in memory (evicted meanwhile): the store has it.
            None => true,
        };
        match &next {
            NextState::Retry { .. } => return Ok(()),
            _ if !was_pending => return Ok(()),
            NextState::Delivered => self.stats.delivered(campaign, template, profiles),
            NextState::Failed { reason } => self.stats.failed(campaign, template, profiles, reason),
        }
        self.budget.release(work.body.len() as u64);
        let Some(record) = record else { return Ok(()) };
        if record.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
            return Ok(());
        }
        self.finished.notify_waiters();
        if !self.shared() {
            let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
            inner.evictable.push_back(dispatch);
            inner.evict_past(self.limit);
        }
        Ok(())
    }

    /// Makes the failed requests of a dispatch pending again (a dead-letter replay) and
    /// returns them; `None` for an unknown dispatch.
    pub async fn requeue_failed(&self, id: DispatchId) -> Result<Option<Vec<Requeued>>, StoreError> {
        let requeued = match &self.store {
            Some(store) => match store.requeue_failed(id).await? {
                Some(requeued) => requeued,
                None => return Ok(None),
            },
            None => {
                let Some(record) = self.get(id) else { return Ok(None) };
                let mut requeued = Vec::new();
                for (index, request) in record.requests.iter().enumerate() {
                    let req = request.lock().unwrap_or_else(|e| e.into_inner());
                    if let (RequestStatus::Failed { reason }, Some(_)) = (&req.status, &req.body) {
                        requeued.push(Requeued {
                            request: index as u32,
                            profiles: req.profiles,
                            reason: reason.clone(),
                            body_bytes: req.body.as_ref().map_or(0, |b| b.len() as u64),
                        });
                    }
                }
                requeued
            }
        };
        // Pending again: their bodies count again (even past the budget: they exist).
        self.budget.add(requeued.iter().map(|r| r.body_bytes).sum());
        if let Some(record) = self.find(id).await? {
            for r in &requeued {
                self.stats.requeued(&record.campaign, &record.template_name, r.profiles as u64, &r.reason);
            }
        }
        if let Some(record) = self.get(id) {
            let mut made_pending = 0;
            for r in &requeued {
                if let Some(mut req) = record.request(r.request)
                    && matches!(req.status, RequestStatus::Failed { .. })
                {
                    req.status = RequestStatus::Pending;
                    made_pending += 1;
                }
            }
            if made_pending > 0 && record.pending.fetch_add(made_pending, Ordering::AcqRel) == 0 && !self.shared() {
                // Pending again: it must not be evicted as a finished dispatch.
                self.inner.write().unwrap_or_else(|e| e.into_inner()).evictable.retain(|f| *f != id);
            }
        }
        Ok(Some(requeued))
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
            template: self.template_name.clone(),
            template_version: self.template_version,
            campaign: self.campaign.clone(),
            created_at: rfc3339(self.created_at),
            state,
            requests,
        }
    }
}
