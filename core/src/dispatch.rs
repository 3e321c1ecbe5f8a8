//! Accepting a dispatch: snapshot the template, split the profiles into requests, record
//! them, and queue one job per request.

use std::sync::Arc;
use std::time::SystemTime;

use crate::payload::{Payload, PayloadError};
use crate::queue::{Job, Queue, QueueError};
use crate::records::{DispatchId, DispatchRecord, Records, RequestRecord};
use crate::store::StoreError;
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
    #[error("transform plugin `{plugin}`: {message}")]
    Transform { plugin: String, message: String },
}

#[derive(Clone)]
pub struct Dispatcher {
    pub registry: Arc<Registry>,
    pub queue: Arc<dyn Queue>,
    pub records: Arc<Records>,
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
        // The requests: the transform plugin's plan, or the payload in batches.
        let (requests, skipped): (Vec<RequestRecord>, usize) = match &template.transform {
            Some((plugin, transformer)) => {
                let out = transformer
                    .transform(&payload.to_json())
                    .await
                    .map_err(|e| DispatchError::Transform { plugin: plugin.clone(), message: e.message })?;
                let planned = out.requests.into_iter().map(|r| RequestRecord::new(Some(r.target), r.body, r.profiles));
                (planned.collect(), out.skipped)
            }
            None => {
                let batches = payload.batches(template.batch_size).into_iter();
                (batches.map(|b| RequestRecord::new(None, b.body, b.profiles)).collect(), 0)
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
