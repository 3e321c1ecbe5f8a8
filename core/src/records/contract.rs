//! The [`Records`] contract: what the dispatcher, the workers, the engine and the API ask
//! of the dispatch records, whichever kind holds them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::budget::PendingBudget;
use super::record::{DispatchRecord, Work};
use super::tally::Tally;
use crate::model::{DispatchId, StoreError};
use crate::stats::{CampaignView, Stats, StatsView};
use crate::store::{Requeued, Settlement};
use crate::template::Template;

/// Finds the current version of a template by name (after a restart, or for a dispatch
/// another instance accepted).
pub type TemplateSource = Arc<dyn Fn(&str) -> Option<Arc<Template>> + Send + Sync>;

/// Which dispatches [`Records::list`] returns.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only this campaign's (`targetId`).
    pub campaign: Option<String>,
    /// Only this template's.
    pub template: Option<String>,
    /// Only dispatches with a failed request (dead letters a replay would send again).
    pub failed: bool,
    /// Skip this many of the newest.
    pub offset: usize,
    /// At most this many.
    pub limit: usize,
}

impl ListQuery {
    /// Whether `record` is one the query asks for.
    pub fn matches(&self, record: &DispatchRecord) -> bool {
        self.campaign.as_ref().is_none_or(|c| *c == record.campaign)
            && self.template.as_ref().is_none_or(|t| *t == record.template_name)
            && (!self.failed || record.has_failed())
    }

    /// The page of `records` (any order) the query asks for, newest first.
    pub fn page(&self, mut records: Vec<Arc<DispatchRecord>>) -> ListPage {
        records.retain(|r| self.matches(r));
        records.sort_by_key(|r| std::cmp::Reverse(r.id));
        let total = records.len();
        let dispatches = records.into_iter().skip(self.offset).take(self.limit).collect();
        ListPage { total, dispatches }
    }
}

/// A page of dispatches, newest first.
#[derive(Debug, Default)]
pub struct ListPage {
    /// How many dispatches the query matched in all.
    pub total: usize,
    pub dispatches: Vec<Arc<DispatchRecord>>,
}

/// The dispatch records, as the dispatcher, the workers, the engine and the API use them.
#[async_trait]
pub trait Records: Send + Sync {
    /// Where the records count what changes: their stats and the pending bodies' budget.
    fn tally(&self) -> &Tally;

    /// The budget of the pending bodies; a dispatch reserves its bytes here before it is
    /// inserted.
    fn budget(&self) -> &Arc<PendingBudget> {
        self.tally().budget()
    }

    /// The stats the records feed: per template (`/metrics`), and per campaign when this
    /// instance owns the truth.
    fn stats(&self) -> &Arc<Stats> {
        self.tally().stats()
    }

    /// Stores a new dispatch, unless `idempotency_key` was seen for this template: then
    /// returns the first dispatch's id and `false`. With a store, the dispatch is durable
    /// when this returns.
    async fn insert(
        &self,
        record: DispatchRecord,
        idempotency_key: Option<String>,
    ) -> Result<(DispatchId, bool), StoreError>;

    /// The dispatch an idempotency key maps to.
    async fn by_idempotency_key(&self, template: &str, key: &str) -> Result<Option<DispatchId>, StoreError>;

    /// The dispatch as it stands.
    async fn find(&self, id: DispatchId) -> Result<Option<Arc<DispatchRecord>>, StoreError>;

    /// The template version, body and campaign of a pending request.
    async fn work(&self, id: DispatchId, request: u32) -> Result<Option<Work>, StoreError>;

    /// Records an attempt and the request's next state of `work`: in the store first, then
    /// in memory and in the stats. Waiters on the dispatch hear of it last.
    async fn settle(&self, settlement: Settlement, work: &Work) -> Result<(), StoreError>;

    /// Makes the failed requests of a dispatch pending again (a dead-letter replay) and
    /// returns them; `None` for an unknown dispatch.
    async fn requeue_failed(&self, id: DispatchId) -> Result<Option<Vec<Requeued>>, StoreError>;

    /// A page of the dispatches `query` asks for, newest first, and how many there are.
    async fn list(&self, query: &ListQuery) -> Result<ListPage, StoreError>;

    /// The stats of every campaign that has dispatches, by target id.
    async fn campaigns(&self) -> Result<Vec<CampaignView>, StoreError>;

    /// The stats of a campaign.
    async fn campaign_stats(&self, campaign: &str) -> Result<Option<CampaignView>, StoreError>;

    /// The stats of a template.
    async fn template_stats(&self, template: &str) -> Result<Option<StatsView>, StoreError>;

    /// Deletes the finished dispatches created before `before` (the retention period) from
    /// the store and from memory; what they counted for leaves the campaign stats. Returns
    /// how many the store deleted.
    async fn prune(&self, before: SystemTime) -> Result<usize, StoreError>;

    /// How many of a dispatch's requests are finished, of how many; `None` when the record
    /// is gone.
    async fn progress(&self, id: DispatchId) -> Option<(usize, usize)>;

    /// Woken when a dispatch finishes here; `None` when only asking [`Records::progress`]
    /// tells.
    fn finished(&self) -> Option<&Notify>;
}

impl dyn Records {
    /// Waits until every request of the dispatch is finished (or the record is gone), and
    /// calls `progress` with (finished, total) requests when that changes, at most every
    /// 100 ms. Waiters are woken when a dispatch finishes, not on every request, and look
    /// again every 100 ms.
    pub async fn wait_finished(&self, id: DispatchId, mut progress: impl FnMut(usize, usize)) {
        let mut last = usize::MAX;
        loop {
            let notified = self.finished().map(Notify::notified);
            tokio::pin!(notified);
            if let Some(notified) = notified.as_mut().as_pin_mut() {
                notified.enable();
            }
            let Some((done, total)) = self.progress(id).await else { return };
            if done != last {
                progress(done, total);
                last = done;
            }
            if done == total {
                return;
            }
            let tick = Duration::from_millis(100);
            match notified.as_pin_mut() {
                Some(notified) => {
                    let _ = tokio::time::timeout(tick, notified).await;
                }
                None => tokio::time::sleep(tick).await,
            }
        }
    }
}
