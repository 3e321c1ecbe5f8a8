//! Accepting a dispatch: snapshot the template, split the profiles into requests, record
//! them, and queue one job per request.

use std::sync::Arc;
use std::time::SystemTime;

use crate::config::bytes_text;
use crate::model::{DispatchId, StoreError};
use crate::payload::{Payload, PayloadError};
use crate::plugin::TransformError;
use crate::queue::{Job, Queue, QueueError};
use crate::records::{BudgetFull, DispatchRecord, Records, RequestRecord};
use crate::template::registry::{Lookup, Registry};

/// A dispatch that was accepted (or found again by its idempotency key).
#[derive(Debug, Clone)]
pub struct Accepted {
    pub dispatch_id: DispatchId,
    pub requests: usize,
    pub profiles: usize,
    /// Profiles a transform plugin left out on purpose.
    pub skipped: usize,
    /// False when an `Idempotency-Key` matched an earlier dispatch, which is returned instead.
    pub created: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("no template named `{0}`")]
    UnknownTemplate(String),
    #[error("template `{name}` is not active: {reason}")]
    Inactive { name: String, reason: String },
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Transform(#[from] TransformError),
    /// The dispatch would become more (or larger) requests than the limits allow. Nothing
    /// was stored.
    #[error("{0}")]
    TooLarge(String),
    /// The pending bodies' budget cannot take this dispatch now. Nothing was stored.
    #[error(
        "the gateway is holding {} of request bodies not yet delivered and this dispatch needs {} more, past `limits.max_pending_bytes` ({}); try again once some are delivered",
        bytes_text(.0.used), bytes_text(.0.wanted), bytes_text(.0.limit)
    )]
    Busy(BudgetFull),
}

/// `limits.max_dispatch_bytes` and `limits.max_dispatch_requests`.
#[derive(Debug, Clone, Copy)]
pub struct DispatchLimits {
    pub max_bytes: u64,
    pub max_requests: usize,
}

impl DispatchLimits {
    /// Whether `requests` requests of `bytes` bytes in all may be accepted; if not, says
    /// which limit and by how much.
    pub fn check(&self, requests: usize, bytes: u64) -> Result<(), DispatchError> {
        if requests > self.max_requests {
            return Err(DispatchError::TooLarge(format!(
                "this dispatch would become {requests} requests, more than `limits.max_dispatch_requests` ({}); send fewer profiles per dispatch or raise the template's `batch_size`",
                self.max_requests
            )));
        }
        if bytes > self.max_bytes {
            return Err(DispatchError::TooLarge(format!(
                "this dispatch would send {bytes} bytes in {requests} requests (every request carries the payload's other keys, `key_values` included), more than `limits.max_dispatch_bytes` ({}); send fewer profiles, a smaller `key_values`, or raise the template's `batch_size`",
                bytes_text(self.max_bytes)
            )));
        }
        Ok(())
    }
}

impl Default for DispatchLimits {
    fn default() -> Self {
        let limits = crate::config::Limits::default();
        Self { max_bytes: limits.max_dispatch_bytes, max_requests: limits.max_dispatch_requests }
    }
}

#[derive(Clone)]
pub struct Dispatcher {
    pub registry: Arc<Registry>,
    pub queue: Arc<dyn Queue>,
    pub records: Arc<dyn Records>,
    pub limits: DispatchLimits,
}

impl Dispatcher {
    pub async fn dispatch(
        &self,
        template: &str,
        payload: Payload,
        idempotency_key: Option<String>,
    ) -> Result<Accepted, DispatchError> {
        if let Some(key) = &idempotency_key
            && let Some(accepted) = self.replay(template, key).await?
        {
            return Ok(accepted);
        }
        let template = match self.registry.lookup(template) {
            Lookup::Active(t) => t,
            Lookup::Inactive(reason) => {
                return Err(DispatchError::Inactive { name: template.to_string(), reason });
            }
            Lookup::Unknown => return Err(DispatchError::UnknownTemplate(template.to_string())),
        };
        // The requests: the transform plugin's plan, or the payload in batches. Their number
        // and total size are checked before anything is stored, and for batches before
        // any body is built.
        let budget = self.records.budget();
        let (requests, skipped, reservation) = match &template.transform {
            Some((plugin, transformer)) => {
                let out = transformer
                    .transform(&payload.to_json())
                    .await
                    .map_err(|failure| TransformError { plugin: plugin.clone(), failure })?;
                let bytes = out.requests.iter().map(|r| r.body.len() as u64).sum();
                self.limits.check(out.requests.len(), bytes)?;
                let reservation = budget.reserve(bytes).map_err(DispatchError::Busy)?;
                let planned =
                    out.requests.into_iter().map(|r| RequestRecord::new(Some(r.target), r.body.into(), r.profiles));
                (planned.collect::<Vec<_>>(), out.skipped, reservation)
            }
            None => {
                let split = payload.split(template.batch_size);
                self.limits.check(split.requests(), split.body_bytes())?;
                let reservation = budget.reserve(split.body_bytes()).map_err(DispatchError::Busy)?;
                let batches = split.batches().into_iter();
                (batches.map(|b| RequestRecord::new(None, b.body, b.profiles)).collect(), 0, reservation)
            }
        };
        let count = requests.len();
        let profiles: usize = requests.iter().map(|r| r.profiles).sum();
        let record =
            DispatchRecord::new(DispatchId::new(), template.clone(), payload.campaign.clone(), requests, skipped);
        let (dispatch_id, created) = self.records.insert(record, idempotency_key.clone()).await?;
        if !created {
            // A concurrent request with the same key won the race.
            return Ok(self
                .replay(&template.name, idempotency_key.as_deref().unwrap_or_default())
                .await?
                .unwrap_or(Accepted { dispatch_id, requests: count, profiles, skipped, created: false }));
        }
        reservation.keep();
        let now = SystemTime::now();
        let jobs =
            (0..count as u32).map(|request| Job { dispatch: dispatch_id, request, attempt: 1, due: now }).collect();
        self.queue.push(jobs).await?;
        Ok(Accepted { dispatch_id, requests: count, profiles, skipped, created: true })
    }

    /// Sends the failed requests of a dispatch again (dead-letter replay), with the
    /// template version its record holds (see [`DispatchRecord::template`]). Returns how
    /// many, or `None` for an unknown dispatch.
    pub async fn retry_failed(&self, id: DispatchId) -> Result<Option<usize>, DispatchError> {
        let Some(requeued) = self.records.requeue_failed(id).await? else { return Ok(None) };
        let now = SystemTime::now();
        let jobs = requeued.iter().map(|r| Job { dispatch: id, request: r.request, attempt: 1, due: now }).collect();
        self.queue.push(jobs).await?;
        Ok(Some(requeued.len()))
    }

    /// The earlier dispatch an idempotency key belongs to.
    async fn replay(&self, template: &str, key: &str) -> Result<Option<Accepted>, StoreError> {
        let Some(id) = self.records.by_idempotency_key(template, key).await? else { return Ok(None) };
        let Some(record) = self.records.find(id).await? else { return Ok(None) };
        Ok(Some(Accepted {
            dispatch_id: id,
            requests: record.requests.len(),
            profiles: record.profiles(),
            skipped: record.skipped,
            created: false,
        }))
    }
}
