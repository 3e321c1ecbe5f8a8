//! Records when this instance owns the truth (`queue: memory`, or `sqlite`): memory is
//! authoritative, written through to the store first when there is one; the store is read
//! only for what memory no longer holds, and at start to rebuild memory.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use tokio::sync::Notify;
use tracing::error;

use super::contract::{ListPage, ListQuery, Records};
use super::memory::Memory;
use super::record::{DispatchRecord, Work};
use super::tally::Tally;
use super::write_through::WriteThrough;
use crate::model::{DispatchId, RequestStatus, StoreError};
use crate::queue::Job;
use crate::stats::{CampaignView, Stats, StatsView};
use crate::store::{Inserted, Requeued, Settlement};

/// Memory holds every dispatch until it finishes, then up to `limits.dispatch_records`
/// finished ones (with their idempotency keys), the oldest dropped first; the store keeps
/// them until the retention period ends.
pub struct LocalRecords {
    memory: Memory,
    store: Option<WriteThrough>,
    tally: Tally,
}

/// What [`LocalRecords::restore`] read back from the store.
#[derive(Debug, Default)]
pub struct Restored {
    pub dispatches: usize,
    /// A job for every pending request, due when it was due.
    pub jobs: Vec<Job>,
}

impl LocalRecords {
    /// Records keeping `limit` finished dispatches in memory, written through to `store`
    /// when given, with a budget of `max_pending_bytes` for the pending bodies.
    pub fn new(limit: usize, store: Option<WriteThrough>, max_pending_bytes: u64) -> Self {
        Self { memory: Memory::new(limit), store, tally: Tally::new(Stats::new(), max_pending_bytes) }
    }

    /// The dispatch as this process holds it in memory.
    pub fn get(&self, id: DispatchId) -> Option<Arc<DispatchRecord>> {
        self.memory.get(id)
    }

    /// Rebuilds memory from the store (at start): dispatch records (the finished ones up
    /// to the memory limit), the stats derived from every retained dispatch, and the jobs
    /// of the pending requests. Requests are sent with the current version of their
    /// template.
    pub async fn restore(&self) -> Result<Restored, StoreError> {
        let Some(store) = &self.store else { return Ok(Restored::default()) };
        let dispatches = store.all().await?;
        let mut restored = Restored { dispatches: dispatches.len(), jobs: Vec::new() };
        for d in dispatches {
            self.tally.restored(&d);
            let pending = (d.requests.iter().enumerate())
                .filter(|(_, r)| r.status == RequestStatus::Pending)
                .map(|(i, r)| Job { dispatch: d.id, request: i as u32, attempt: r.attempt, due: r.due });
            let pending: Vec<Job> = pending.collect();
            let (id, key) = (d.id, d.idempotency_key.clone());
            let template = store.template(&d.template);
            match DispatchRecord::from_stored(d, template) {
                Ok(record) => {
                    self.tally.pending_bodies(record.pending_body_bytes());
                    // Past `limits.dispatch_records`, memory lets go of the oldest records;
                    // what they counted stays in the campaign stats (the retention period
                    // takes only the records memory still holds out of them).
                    self.memory.restore(record, key);
                    restored.jobs.extend(pending);
                }
                Err(e) => error!(dispatch = %id, "cannot restore this dispatch: {e}"),
            }
        }
        Ok(restored)
    }
}

#[async_trait]
impl Records for LocalRecords {
    fn tally(&self) -> &Tally {
        &self.tally
    }

    async fn insert(
        &self,
        record: DispatchRecord,
        idempotency_key: Option<String>,
    ) -> Result<(DispatchId, bool), StoreError> {
        if let Some(key) = &idempotency_key
            && let Some(existing) = self.memory.by_idempotency_key(&record.template_name, key)
        {
            return Ok((existing, false));
        }
        if let Some(store) = &self.store
            && let Inserted::Existing(id) = store.insert(&record, idempotency_key.clone()).await?
        {
            return Ok((id, false));
        }
        match self.memory.insert(record, idempotency_key) {
            Ok(record) => {
                self.tally.accepted(&record);
                Ok((record.id, true))
            }
            // A concurrent resend with the same key won the race.
            Err(existing) => Ok((existing, false)),
        }
    }

    async fn by_idempotency_key(&self, template: &str, key: &str) -> Result<Option<DispatchId>, StoreError> {
        if let Some(id) = self.memory.by_idempotency_key(template, key) {
            return Ok(Some(id));
        }
        match &self.store {
            Some(store) => store.by_idempotency_key(template, key).await,
            None => Ok(None),
        }
    }

    /// From memory, or from the store when memory no longer holds it.
    async fn find(&self, id: DispatchId) -> Result<Option<Arc<DispatchRecord>>, StoreError> {
        if let Some(record) = self.memory.get(id) {
            return Ok(Some(record));
        }
        match &self.store {
            Some(store) => store.find(id).await,
            None => Ok(None),
        }
    }

    /// From memory, or from the store (a dispatch evicted from memory).
    async fn work(&self, id: DispatchId, request: u32) -> Result<Option<Work>, StoreError> {
        if let Some(record) = self.memory.get(id) {
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
        match &self.store {
            Some(store) => store.work(id, request).await,
            None => Ok(None),
        }
    }

    async fn settle(&self, settlement: Settlement, work: &Work) -> Result<(), StoreError> {
        if let Some(store) = &self.store {
            store.settle(&settlement).await?;
        }
        let Settlement { dispatch, request, attempt, next } = settlement;
        if let Some(attempt) = &attempt {
            self.tally.attempted(work, attempt);
        }
        let record = self.memory.get(dispatch);
        // Not in memory (evicted meanwhile): the store has it, and it was pending.
        let was_pending = record.as_deref().and_then(|r| r.settle(request, attempt, &next)).unwrap_or(true);
        if !self.tally.settled(work, &next, was_pending) {
            return Ok(());
        }
        if let Some(record) = record
            && record.request_finished()
        {
            self.memory.finished(dispatch);
        }
        Ok(())
    }

    async fn requeue_failed(&self, id: DispatchId) -> Result<Option<Vec<Requeued>>, StoreError> {
        let requeued = match &self.store {
            Some(store) => match store.requeue_failed(id).await? {
                Some(requeued) => requeued,
                None => return Ok(None),
            },
            None => match self.memory.get(id) {
                Some(record) => record.replayable(),
                None => return Ok(None),
            },
        };
        self.tally.pending_bodies(requeued.iter().map(|r| r.body_bytes).sum());
        if let Some(record) = self.find(id).await? {
            self.tally.replayed(&record, &requeued);
        }
        if let Some(record) = self.memory.get(id)
            && record.pending_again(&requeued)
        {
            self.memory.pending_again(id);
        }
        Ok(Some(requeued))
    }

    /// The dispatches memory holds: every pending one and the last
    /// `limits.dispatch_records` finished ones.
    async fn list(&self, query: &ListQuery) -> Result<ListPage, StoreError> {
        Ok(query.page(self.memory.all()))
    }

    async fn campaigns(&self) -> Result<Vec<CampaignView>, StoreError> {
        Ok(self.tally.stats().campaigns())
    }

    async fn campaign_stats(&self, campaign: &str) -> Result<Option<CampaignView>, StoreError> {
        Ok(self.tally.stats().campaign(campaign))
    }

    async fn template_stats(&self, template: &str) -> Result<Option<StatsView>, StoreError> {
        Ok(self.tally.stats().template(template))
    }

    /// Without a store, a dispatch the retention period drops from memory is gone: its
    /// campaign stats go with it. (With a store, they go when the store prunes it.)
    async fn prune(&self, before: SystemTime) -> Result<usize, StoreError> {
        let pruned = match &self.store {
            Some(store) => store.prune(before).await.inspect(|pruned| pruned.iter().for_each(|d| self.tally.pruned(d))),
            None => Ok(Vec::new()),
        };
        let forgotten = self.memory.forget_finished_before(before);
        if self.store.is_none() {
            for record in forgotten {
                self.tally.pruned(&record.summary());
            }
        }
        pruned.map(|p| p.len())
    }

    async fn progress(&self, id: DispatchId) -> Option<(usize, usize)> {
        let record = self.memory.get(id)?;
        let total = record.requests.len();
        Some((total - record.pending(), total))
    }

    fn finished(&self) -> Option<&Notify> {
        Some(self.memory.waiters())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{AttemptRecord, AttemptResult, NextState};
    use crate::records::RequestRecord;
    use crate::stats::Counts;
    use crate::template::Template;

    /// A dispatch of campaign 42 through `orders`: `requests` requests of 2 profiles, each
    /// with a 2-byte body.
    fn dispatch(requests: usize) -> DispatchRecord {
        let template = Template::for_tests("orders", "http://127.0.0.1:9/hook".parse().unwrap());
        let planned = (0..requests).map(|_| RequestRecord::new(None, "{}".into(), 2)).collect();
        DispatchRecord::new(DispatchId::new(), Arc::new(template), "42".into(), planned, 0)
    }

    /// One attempt of request `request` of `id`, and the request's next state.
    async fn settle(records: &dyn Records, id: DispatchId, request: u32, next: NextState) {
        let work = records.work(id, request).await.unwrap().expect("a pending request");
        let failed = matches!(next, NextState::Failed { .. });
        let attempt = AttemptRecord {
            attempt: 1,
            at: SystemTime::now(),
            latency: Duration::from_millis(5),
            status: Some(if failed { 400 } else { 200 }),
            error: failed.then(|| "HTTP 400 Bad Request".to_string()),
            result: if failed { AttemptResult::Failure } else { AttemptResult::Success },
        };
        records.settle(Settlement { dispatch: id, request, attempt: Some(attempt), next }, &work).await.unwrap();
    }

    fn failed() -> NextState {
        NextState::Failed { reason: "HTTP 400 Bad Request".into() }
    }

    async fn requests(records: &dyn Records) -> Counts {
        records.campaign_stats("42").await.unwrap().unwrap().total.requests
    }

    /// Bodies framed in their dispatch's text hold it only while their first attempt is
    /// coming: a request due again later, or failed and kept for a replay, holds its own copy.
    #[tokio::test]
    async fn a_body_that_waits_lets_go_of_its_dispatch_text() {
        let payload =
            crate::payload::Payload::from_slice(br#"{"targetId":42,"profiles":[{"a":1},{"b":2},{"c":3}]}"#).unwrap();
        let template = Template::for_tests("orders", "http://127.0.0.1:9/hook".parse().unwrap());
        let planned = payload.batches(1).into_iter().map(|b| RequestRecord::new(None, b.body, b.profiles)).collect();
        let record = DispatchRecord::new(DispatchId::new(), Arc::new(template), "42".into(), planned, 0);
        let (id, records) = (record.id, LocalRecords::new(10, None, u64::MAX));
        records.insert(record, None).await.unwrap();
        let body = |i: usize| records.get(id).unwrap().requests[i].lock().unwrap().body.clone();
        let sent = body(0).unwrap().to_vec();
        assert!(body(0).unwrap().is_framed() && body(1).unwrap().is_framed());
        let later = NextState::Retry { attempt: 2, due: SystemTime::now() + Duration::from_secs(60) };
        settle(&records, id, 0, later).await;
        settle(&records, id, 1, failed()).await;
        assert!(!body(0).unwrap().is_framed(), "a request due again later holds its own copy");
        assert_eq!(body(0).unwrap().to_vec(), sent, "of the same bytes");
        assert!(!body(1).unwrap().is_framed(), "so does a failed one kept for a replay");
        assert!(body(2).unwrap().is_framed(), "a request still on its first attempt shares the text");
    }

    /// A resend with the same key gets the first dispatch while memory holds it; past
    /// `limit` finished dispatches memory lets the oldest go, key and all, and what it
    /// counted stays in the campaign's stats.
    #[tokio::test]
    async fn memory_keeps_the_newest_finished_dispatches_and_their_keys() {
        let records = LocalRecords::new(1, None, u64::MAX);
        let first = dispatch(1);
        let id = first.id;
        assert_eq!(records.insert(first, Some("k".into())).await.unwrap(), (id, true));
        assert_eq!(records.insert(dispatch(1), Some("k".into())).await.unwrap(), (id, false), "the first dispatch");
        settle(&records, id, 0, NextState::Delivered).await;
        assert!(records.get(id).unwrap().is_finished());
        assert!(records.get(id).unwrap().requests[0].lock().unwrap().body.is_none(), "a delivered body is dropped");

        let next = dispatch(1);
        let next_id = next.id;
        records.insert(next, None).await.unwrap();
        assert!(records.get(id).is_some(), "a pending dispatch does not push a finished one out");
        settle(&records, next_id, 0, NextState::Delivered).await;
        assert!(records.get(id).is_none(), "the oldest finished dispatch past the limit is let go");
        assert_eq!(records.by_idempotency_key("orders", "k").await.unwrap(), None, "with its key");
        assert!(records.get(next_id).is_some());
        assert_eq!(requests(&records).await, Counts { delivered: 2, failed: 0, pending: 0 });
    }

    /// A replay makes the failed requests pending again: their bodies count in the budget
    /// again, the campaign's stats show them pending, and the exported failure counter
    /// keeps the failure.
    #[tokio::test]
    async fn a_replay_makes_failed_requests_pending_again() {
        let records: Arc<dyn Records> = Arc::new(LocalRecords::new(10, None, 100));
        records.budget().reserve(4).unwrap().keep();
        let d = dispatch(2);
        let id = d.id;
        records.insert(d, None).await.unwrap();
        let waiter = {
            let records = records.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                records.wait_finished(id, |done, total| seen.push((done, total))).await;
                seen
            })
        };
        settle(&*records, id, 0, failed()).await;
        settle(&*records, id, 1, NextState::Delivered).await;
        let seen = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").unwrap();
        assert_eq!(seen.last(), Some(&(2, 2)), "{seen:?}");
        assert_eq!(records.budget().used(), 0, "finished requests gave their bodies back");
        assert_eq!(requests(&*records).await, Counts { delivered: 1, failed: 1, pending: 0 });

        let requeued = records.requeue_failed(id).await.unwrap().unwrap();
        assert_eq!((requeued.len(), requeued[0].request, requeued[0].body_bytes), (1, 0, 2));
        assert_eq!(records.budget().used(), 2);
        assert_eq!(records.find(id).await.unwrap().unwrap().pending(), 1);
        assert_eq!(requests(&*records).await, Counts { delivered: 1, failed: 0, pending: 1 });
        let mut metrics = String::new();
        records.stats().render_prometheus(&mut metrics);
        assert!(metrics.contains("hookgate_requests_total{template=\"orders\",outcome=\"failed\"} 1"), "{metrics}");

        settle(&*records, id, 0, NextState::Delivered).await;
        assert_eq!(requests(&*records).await, Counts { delivered: 2, failed: 0, pending: 0 });
        assert_eq!(records.requeue_failed(DispatchId::new()).await.unwrap(), None, "an unknown dispatch");
    }

    /// Without a store, a dispatch past the retention period is gone, and so is what it
    /// counted in its campaign's stats; pending ones stay.
    #[tokio::test]
    async fn without_a_store_the_retention_period_takes_the_campaign_stats() {
        let records = LocalRecords::new(10, None, u64::MAX);
        let (done, waiting) = (dispatch(1), dispatch(1));
        let (done_id, waiting_id) = (done.id, waiting.id);
        records.insert(done, None).await.unwrap();
        records.insert(waiting, None).await.unwrap();
        settle(&records, done_id, 0, NextState::Delivered).await;
        assert_eq!(records.prune(SystemTime::now() + Duration::from_secs(1)).await.unwrap(), 0, "no store");
        assert!(records.get(done_id).is_none());
        assert!(records.get(waiting_id).is_some(), "a pending dispatch stays");
        assert_eq!(requests(&records).await, Counts { delivered: 0, failed: 0, pending: 1 });
    }

    /// `list` pages the dispatches memory holds, newest first, by campaign, template or
    /// failure.
    #[tokio::test]
    async fn lists_newest_first_by_campaign_and_failure() {
        let records = LocalRecords::new(100, None, u64::MAX);
        let mut ids = Vec::new();
        for _ in 0..3 {
            let d = dispatch(1);
            ids.push(d.id);
            records.insert(d, None).await.unwrap();
        }
        settle(&records, ids[1], 0, NextState::Failed { reason: "HTTP 500".into() }).await;
        let all = records.list(&ListQuery { limit: 2, ..Default::default() }).await.unwrap();
        assert_eq!(all.total, 3);
        assert_eq!(all.dispatches.iter().map(|d| d.id).collect::<Vec<_>>(), vec![ids[2], ids[1]]);
        let next = records.list(&ListQuery { limit: 2, offset: 2, ..Default::default() }).await.unwrap();
        assert_eq!(next.dispatches.iter().map(|d| d.id).collect::<Vec<_>>(), vec![ids[0]]);
        let failed = records.list(&ListQuery { limit: 10, failed: true, ..Default::default() }).await.unwrap();
        assert_eq!((failed.total, failed.dispatches[0].id), (1, ids[1]));
        let other =
            records.list(&ListQuery { limit: 10, campaign: Some("7".into()), ..Default::default() }).await.unwrap();
        assert_eq!(other.total, 0);
        let campaigns = records.campaigns().await.unwrap();
        assert_eq!(campaigns.len(), 1);
        assert_eq!(campaigns[0].target_id, "42");
    }
}
