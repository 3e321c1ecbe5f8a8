//! Records when the store is shared (`queue: postgres`): its rows are the truth, and other
//! gateway instances accept, settle and replay dispatches in it too. Memory holds no
//! dispatch; campaign stats are derived from the rows on every read, and the pending
//! bodies' budget is set to the store's sum every second.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::{Notify, watch};
use tracing::warn;

use super::contract::{ListPage, ListQuery, Records};
use super::record::{DispatchRecord, Work};
use super::tally::{Tally, derive};
use super::write_through::WriteThrough;
use crate::model::{DispatchId, StoreError};
use crate::stats::{CampaignView, Stats, StatsView};
use crate::store::{Filter, Inserted, Requeued, Settlement};

pub struct SharedRecords {
    store: WriteThrough,
    /// This instance's counters per template (`/metrics`); no campaign's.
    tally: Tally,
}

impl SharedRecords {
    /// Records in `store`, with a budget of `max_pending_bytes` for the pending bodies of
    /// every instance.
    pub fn new(store: WriteThrough, max_pending_bytes: u64) -> Self {
        Self { store, tally: Tally::new(Stats::templates_only(), max_pending_bytes) }
    }

    /// Other instances accept and finish requests too, so this instance's count of pending
    /// bodies would drift (up, for bodies it accepted and another delivered, until every
    /// dispatch here answered 503): it is set to the store's sum every second while this
    /// instance counts any, every minute otherwise (an idle instance costs the database
    /// little), until `shutdown`, which makes `limits.max_pending_bytes` the cluster's budget.
    /// The sum reads every pending request: when there are so many that it takes long, it
    /// is read less often ([`sync_interval`]), so that it never costs the database more
    /// than a tenth of one connection's time.
    pub async fn sync_pending_budget(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        const IDLE: Duration = Duration::from_secs(60);
        let mut last: Option<(tokio::time::Instant, Duration)> = None;
        loop {
            let due = match last {
                None => true,
                Some((at, took)) => {
                    let every = if self.tally.budget().used() > 0 { sync_interval(took) } else { IDLE };
                    at.elapsed() >= every
                }
            };
            if due {
                let start = tokio::time::Instant::now();
                match self.store.pending_body_bytes().await {
                    Ok(Some(pending)) => self.tally.budget().sync(pending),
                    Ok(None) => return,
                    Err(e) => warn!("cannot read the pending bodies' size from the store: {e}"),
                }
                last = Some((start, start.elapsed()));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// How often to read the pending bodies' sum while this instance counts some, when the
/// last read took `took`: every second, or ten times as long as a read takes, whichever is
/// longer.
fn sync_interval(took: Duration) -> Duration {
    (took * 10).max(Duration::from_secs(1))
}

#[async_trait]
impl Records for SharedRecords {
    fn tally(&self) -> &Tally {
        &self.tally
    }

    async fn insert(
        &self,
        record: DispatchRecord,
        idempotency_key: Option<String>,
    ) -> Result<(DispatchId, bool), StoreError> {
        if let Inserted::Existing(id) = self.store.insert(&record, idempotency_key).await? {
            return Ok((id, false));
        }
        self.tally.accepted(&record);
        Ok((record.id, true))
    }

    async fn by_idempotency_key(&self, template: &str, key: &str) -> Result<Option<DispatchId>, StoreError> {
        self.store.by_idempotency_key(template, key).await
    }

    async fn find(&self, id: DispatchId) -> Result<Option<Arc<DispatchRecord>>, StoreError> {
        self.store.find(id).await
    }

    async fn work(&self, id: DispatchId, request: u32) -> Result<Option<Work>, StoreError> {
        self.store.work(id, request).await
    }

    /// Only the instance holding the job settles a request, so it was pending.
    async fn settle(&self, settlement: Settlement, work: &Work) -> Result<(), StoreError> {
        self.store.settle(&settlement).await?;
        if let Some(attempt) = &settlement.attempt {
            self.tally.attempted(work, attempt);
        }
        self.tally.settled(work, &settlement.next, true);
        Ok(())
    }

    async fn requeue_failed(&self, id: DispatchId) -> Result<Option<Vec<Requeued>>, StoreError> {
        let Some(requeued) = self.store.requeue_failed(id).await? else { return Ok(None) };
        self.tally.pending_bodies(requeued.iter().map(|r| r.body_bytes).sum());
        if let Some(record) = self.store.find(id).await? {
            self.tally.replayed(&record, &requeued);
        }
        Ok(Some(requeued))
    }

    /// Every retained dispatch of the cluster, read from the store's rows.
    async fn list(&self, query: &ListQuery) -> Result<ListPage, StoreError> {
        let filter = match (&query.campaign, &query.template) {
            (Some(c), _) => Filter::Campaign(c),
            (None, Some(t)) => Filter::Template(t),
            (None, None) => Filter::All,
        };
        let mut records = Vec::new();
        for stored in self.store.select(filter).await? {
            let template = self.store.template(&stored.template);
            records.push(Arc::new(DispatchRecord::from_stored(stored, template)?));
        }
        Ok(query.page(records))
    }

    /// Every instance's, derived from the store's rows.
    async fn campaigns(&self) -> Result<Vec<CampaignView>, StoreError> {
        Ok(derive(&self.store.select(Filter::All).await?).campaigns())
    }

    /// Every instance's, derived from the store's rows.
    async fn campaign_stats(&self, campaign: &str) -> Result<Option<CampaignView>, StoreError> {
        Ok(derive(&self.store.select(Filter::Campaign(campaign)).await?).campaign(campaign))
    }

    /// Every instance's, derived from the store's rows.
    async fn template_stats(&self, template: &str) -> Result<Option<StatsView>, StoreError> {
        Ok(derive(&self.store.select(Filter::Template(template)).await?).template(template))
    }

    async fn prune(&self, before: SystemTime) -> Result<usize, StoreError> {
        let pruned = self.store.prune(before).await?;
        for d in &pruned {
            self.tally.pruned(d);
        }
        Ok(pruned.len())
    }

    /// Asks the store (another instance may be delivering the dispatch).
    async fn progress(&self, id: DispatchId) -> Option<(usize, usize)> {
        let record = self.store.find(id).await.ok().flatten()?;
        let total = record.requests.len();
        Some((total - record.pending(), total))
    }

    /// Nothing here tells when a dispatch finishes: other instances settle it too.
    fn finished(&self) -> Option<&Notify> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_read_at_most_a_tenth_of_the_time() {
        assert_eq!(sync_interval(Duration::from_millis(5)), Duration::from_secs(1));
        assert_eq!(sync_interval(Duration::from_millis(150)), Duration::from_millis(1500));
        assert_eq!(sync_interval(Duration::from_secs(3)), Duration::from_secs(30));
    }
}
