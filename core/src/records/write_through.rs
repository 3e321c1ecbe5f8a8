//! The store behind the records: what they write through to before they change memory (so
//! what the API reports is durable first), and read back as records when memory does not
//! hold a dispatch (evicted, accepted before a restart, or accepted by another instance).

use std::sync::Arc;
use std::time::SystemTime;

use super::contract::TemplateSource;
use super::record::{DispatchRecord, Work};
use crate::model::{DispatchId, RequestStatus, StoreError, StoredDispatch};
use crate::store::{Filter, Inserted, Requeued, Settlement, Store};
use crate::template::Template;

pub struct WriteThrough {
    store: Arc<dyn Store>,
    /// The current version of a template by name: what a dispatch read back is sent with.
    templates: TemplateSource,
}

impl WriteThrough {
    pub fn new(store: Arc<dyn Store>, templates: TemplateSource) -> Self {
        Self { store, templates }
    }

    /// Stores a new dispatch (durable when this returns), unless its idempotency key is
    /// taken.
    pub async fn insert(
        &self,
        record: &DispatchRecord,
        idempotency_key: Option<String>,
    ) -> Result<Inserted, StoreError> {
        self.store.insert(record.to_stored(idempotency_key)).await
    }

    pub async fn settle(&self, settlement: &Settlement) -> Result<(), StoreError> {
        self.store.settle(settlement).await
    }

    pub async fn requeue_failed(&self, id: DispatchId) -> Result<Option<Vec<Requeued>>, StoreError> {
        self.store.requeue_failed(id).await
    }

    pub async fn by_idempotency_key(&self, template: &str, key: &str) -> Result<Option<DispatchId>, StoreError> {
        self.store.by_idempotency_key(template, key).await
    }

    /// The dispatch as the store has it, to be sent with its template's current version.
    pub async fn find(&self, id: DispatchId) -> Result<Option<Arc<DispatchRecord>>, StoreError> {
        let Some(stored) = self.store.select(Filter::Id(id), false).await?.pop() else { return Ok(None) };
        let template = self.template(&stored.template);
        Ok(Some(Arc::new(DispatchRecord::from_stored(stored, template)?)))
    }

    /// A pending request as the store has it, with its template's current version.
    pub async fn work(&self, id: DispatchId, request: u32) -> Result<Option<Work>, StoreError> {
        let Some(stored) = self.store.work(id, request).await? else { return Ok(None) };
        let (Some(body), RequestStatus::Pending) = (stored.request.body, &stored.request.status) else {
            return Ok(None);
        };
        let template = self.template(&stored.template);
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

    /// Every retained dispatch with its bodies, oldest first.
    pub async fn all(&self) -> Result<Vec<StoredDispatch>, StoreError> {
        self.store.select(Filter::All, true).await
    }

    /// The current version of a template; `None` when it is gone.
    pub fn template(&self, name: &str) -> Option<Arc<Template>> {
        (self.templates)(name)
    }

    /// Dispatches with their requests and attempts, without bodies.
    pub async fn select(&self, filter: Filter<'_>) -> Result<Vec<StoredDispatch>, StoreError> {
        self.store.select(filter, false).await
    }

    /// Deletes the finished dispatches created before `before` and returns them.
    pub async fn prune(&self, before: SystemTime) -> Result<Vec<StoredDispatch>, StoreError> {
        self.store.prune_dispatches(before).await
    }

    /// The bytes of every pending body in the store, when the store is shared.
    pub async fn pending_body_bytes(&self) -> Result<Option<u64>, StoreError> {
        self.store.pending_body_bytes().await
    }
}
