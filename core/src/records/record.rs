//! One dispatch's record in memory: its immutable facts, and per request its target, body,
//! status and attempts, each behind its own lock (workers delivering the requests of one big
//! dispatch do not contend); and the [`Work`] of one pending request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::body::RequestBody;
use crate::model::{
    AttemptRecord, DispatchId, NextState, RequestStatus, StoreError, StoredDispatch, StoredRequest, StoredTarget,
};
use crate::payload::CampaignId;
use crate::plugin::RequestTarget;
use crate::store::Requeued;
use crate::template::Template;

/// What a worker needs to send one request.
pub struct Work {
    pub template_name: String,
    /// `None`: the template is gone.
    pub template: Option<Arc<Template>>,
    pub target: Option<Arc<RequestTarget>>,
    pub campaign: CampaignId,
    pub body: RequestBody,
    pub profiles: usize,
}

#[derive(Debug)]
pub struct RequestRecord {
    /// Where it goes when a transform planned it; `None`: the template's method, URL and headers.
    pub target: Option<Arc<RequestTarget>>,
    pub profiles: usize,
    /// The body to send; dropped once the request is delivered (a failed one keeps it for a
    /// replay). Framed in its dispatch's text until its first attempt fails (see [`crate::body`]).
    pub body: Option<RequestBody>,
    pub status: RequestStatus,
    pub attempts: Vec<AttemptRecord>,
}

impl RequestRecord {
    /// A request waiting for its first attempt.
    pub fn new(target: Option<Arc<RequestTarget>>, body: RequestBody, profiles: usize) -> Self {
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

    /// Whether any request failed (a replay would send it again).
    pub fn has_failed(&self) -> bool {
        (self.requests.iter())
            .any(|r| matches!(r.lock().unwrap_or_else(|e| e.into_inner()).status, RequestStatus::Failed { .. }))
    }

    pub(super) fn request(&self, index: u32) -> Option<MutexGuard<'_, RequestRecord>> {
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

    /// Records an attempt of request `index` and its next state: a delivered request drops
    /// its body; one that waits for a later attempt, or failed and keeps it for a replay,
    /// takes its own copy of a framed body. Returns whether the request was pending before;
    /// `None` for no such request.
    pub(super) fn settle(&self, index: u32, attempt: Option<AttemptRecord>, next: &NextState) -> Option<bool> {
        let mut req = self.request(index)?;
        if let Some(attempt) = attempt {
            req.attempts.push(attempt);
        }
        let was_pending = req.status == RequestStatus::Pending;
        match next {
            NextState::Retry { .. } => req.body = req.body.as_ref().map(RequestBody::owned),
            NextState::Delivered => {
                req.body = None;
                req.status = RequestStatus::Delivered;
            }
            NextState::Failed { reason } => {
                req.body = req.body.as_ref().map(RequestBody::owned);
                req.status = RequestStatus::Failed { reason: reason.clone() };
            }
        }
        Some(was_pending)
    }

    /// One of its pending requests is finished (delivered or failed); returns whether that
    /// was the last one.
    pub(super) fn request_finished(&self) -> bool {
        self.pending.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Its failed requests that still have their body: what a replay sends again when
    /// there is no store to ask.
    pub(super) fn replayable(&self) -> Vec<Requeued> {
        let mut requeued = Vec::new();
        for (index, request) in self.requests.iter().enumerate() {
            let req = request.lock().unwrap_or_else(|e| e.into_inner());
            if let (RequestStatus::Failed { reason }, Some(body)) = (&req.status, &req.body) {
                requeued.push(Requeued {
                    request: index as u32,
                    profiles: req.profiles,
                    reason: reason.clone(),
                    body_bytes: body.len() as u64,
                });
            }
        }
        requeued
    }

    /// Makes the `requeued` requests that are failed pending again; returns whether the
    /// dispatch was finished before (and is not now).
    pub(super) fn pending_again(&self, requeued: &[Requeued]) -> bool {
        let mut made_pending = 0;
        for r in requeued {
            if let Some(mut req) = self.request(r.request)
                && matches!(req.status, RequestStatus::Failed { .. })
            {
                req.status = RequestStatus::Pending;
                made_pending += 1;
            }
        }
        made_pending > 0 && self.pending.fetch_add(made_pending, Ordering::AcqRel) == 0
    }
}
