//! Workers: take a due job, send it, and decide: delivered, retry at T, or failed.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tracing::{Instrument, debug, error, info, warn};

use super::attempt::attempt;
use super::client::HttpClient;
use super::destinations::{Admission, DestinationLimits};
use super::retry::{RetryAction, classify};
use crate::config::Backoff;
use crate::model::{AttemptRecord, AttemptResult, DISPATCH_FAILED, NextState};
use crate::queue::{Job, Queue};
use crate::records::{Records, Work};
use crate::store::Settlement;

/// What every worker shares.
pub struct WorkerContext {
    pub client: HttpClient,
    pub queue: Arc<dyn Queue>,
    pub records: Arc<dyn Records>,
    pub backoff: Backoff,
    pub destinations: DestinationLimits,
}

/// Takes jobs until `shutdown` turns true. A delivery in progress is finished first.
pub async fn run(ctx: Arc<WorkerContext>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let job = tokio::select! {
            job = ctx.queue.next() => job,
            _ = shutdown.changed() => return,
        };
        match job {
            Ok(job) => {
                let delivery_id = format!("{}.{}", job.dispatch, job.request);
                let span = tracing::info_span!("deliver", dispatch = %job.dispatch, request = job.request, delivery_id, attempt = job.attempt);
                deliver(&ctx, job).instrument(span).await;
            }
            Err(e) => {
                warn!("{e}; retrying in 1s");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// One attempt of one job, and what follows from it: the outcome is written to the
/// records (the store first, when there is one; then memory and the stats it derives)
/// before the queue hears of it.
pub async fn deliver(ctx: &WorkerContext, job: Job) {
    let work = match ctx.records.work(job.dispatch, job.request).await {
        Ok(Some(work)) => work,
        Ok(None) => {
            warn!("no pending request for this job (finished, or past the retention period); dropping it");
            let _ = ctx.queue.complete(&job).await;
            return;
        }
        Err(e) => {
            warn!("{e}; trying this job again in 1s");
            later(ctx, job, Duration::from_secs(1)).await;
            return;
        }
    };
    let campaign = work.campaign.as_str();
    let Some(template) = work.template.as_deref() else {
        // Accepted before a restart, and its template has been deleted since.
        let reason = format!("template `{}` no longer exists", work.template_name);
        let next = NextState::Failed { reason: reason.clone() };
        if settle(ctx, &job, &work, None, next).await == Settled::Written {
            warn!(template = work.template_name, campaign, %reason, "{DISPATCH_FAILED}");
            let _ = ctx.queue.complete(&job).await;
        }
        return;
    };
    let url = work.target.as_ref().map(|t| &t.url).unwrap_or(&template.url);
    let _permit = match ctx.destinations.admit(url, &job) {
        Admission::Go(permit) => permit,
        // The destination is full: the job waits beside it until a request to it ends.
        Admission::Parked => return,
        Admission::Later(wait) => {
            // The destination's rate limit: not an attempt, just later.
            later(ctx, job, wait).await;
            return;
        }
    };
    let at = SystemTime::now();
    let started = Instant::now();
    let delivery_id = format!("{}.{}", job.dispatch, job.request);
    let outcome = attempt(&ctx.client, template, work.target.as_deref(), &work.body, Some(&delivery_id)).await;
    // Microseconds: what the store keeps, so a record reads the same after a restart.
    let latency = Duration::from_micros(started.elapsed().as_micros() as u64);
    let action = classify(&outcome);
    let status = outcome.as_ref().ok().map(|r| r.status.as_u16());
    let name = template.name.as_str();
    let record = |result, error| AttemptRecord { attempt: job.attempt, at, latency, status, error, result };

    let result = match action {
        RetryAction::Success => {
            if settle(ctx, &job, &work, Some(record(AttemptResult::Success, None)), NextState::Delivered).await
                == Settled::Requeued
            {
                return;
            }
            debug!(template = name, campaign, "delivered");
            ctx.queue.complete(&job).await
        }
        RetryAction::Retry { reason, not_before } if job.attempt < template.max_attempts() => {
            let next = job.attempt + 1;
            let delay = ctx.backoff.delay(next, not_before);
            let due = SystemTime::now() + delay;
            let retry = NextState::Retry { attempt: next, due };
            if settle(ctx, &job, &work, Some(record(AttemptResult::Retry, Some(reason.clone()))), retry).await
                == Settled::Requeued
            {
                return;
            }
            info!(template = name, campaign, %reason, retry_in_ms = delay.as_millis() as u64, "attempt failed; will retry");
            ctx.queue.retry(Job { attempt: next, due, ..job.clone() }).await
        }
        RetryAction::Retry { reason, .. } | RetryAction::DontRetry { reason } => {
            let failed = NextState::Failed { reason: reason.clone() };
            if settle(ctx, &job, &work, Some(record(AttemptResult::Failure, Some(reason.clone()))), failed).await
                == Settled::Requeued
            {
                return;
            }
            warn!(template = name, campaign, %reason, attempts = job.attempt, "{DISPATCH_FAILED}");
            ctx.queue.complete(&job).await
        }
    };
    if let Err(e) = result {
        warn!("{e}");
    }
}

/// Writes an outcome to the records, trying again for a few seconds if the store fails
/// (the outcome is known: sending again would only make a duplicate). If it still fails,
/// the job goes back to the queue as it was (the request is still pending in the store)
/// and is sent again later: a duplicate is better than a loss.
async fn settle(
    ctx: &WorkerContext,
    job: &Job,
    work: &Work,
    attempt: Option<AttemptRecord>,
    next: NextState,
) -> Settled {
    let settlement = Settlement { dispatch: job.dispatch, request: job.request, attempt, next };
    let mut wait = Duration::from_millis(100);
    loop {
        match ctx.records.settle(settlement.clone(), work).await {
            Ok(()) => return Settled::Written,
            Err(e) if wait <= Duration::from_secs(2) => {
                warn!("{e}; writing this outcome again in {wait:?}");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => {
                error!("{e}; the outcome of this attempt is not recorded, the request will be sent again");
                later(ctx, job.clone(), Duration::from_secs(1)).await;
                return Settled::Requeued;
            }
        }
    }
}

/// What [`settle`] did with an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
enum Settled {
    /// Written to the records: the caller tells the queue what follows.
    Written,
    /// Not written: the job is back in the queue as it was, to be sent again; the caller
    /// leaves the queue alone.
    Requeued,
}

/// Puts the jobs the destination limits release from parking back in the queue, due now.
pub async fn unpark(queue: Arc<dyn Queue>, mut released: tokio::sync::mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = released.recv().await {
        if let Err(e) = queue.retry(Job { due: SystemTime::now(), ..job }).await {
            warn!("{e}");
        }
    }
}

/// Puts a job back, unchanged, to be handed out again after `wait`.
async fn later(ctx: &WorkerContext, job: Job, wait: Duration) {
    if let Err(e) = ctx.queue.retry(Job { due: SystemTime::now() + wait, ..job }).await {
        warn!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::config::Destinations;
    use crate::model::{DispatchId, RequestStatus, StoreError, StoredDispatch};
    use crate::network::NetworkPolicy;
    use crate::queue::memory::MemoryQueue;
    use crate::records::{DispatchRecord, LocalRecords, RequestRecord, WriteThrough};
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Filter, Inserted, Requeued, Store, StoredWork};
    use crate::template::Template;

    /// A SQLite store whose next `failures` outcome writes fail.
    struct FlakyStore {
        inner: SqliteStore,
        failures: AtomicU32,
    }

    #[async_trait]
    impl Store for FlakyStore {
        async fn insert(&self, dispatch: StoredDispatch) -> Result<Inserted, StoreError> {
            self.inner.insert(dispatch).await
        }
        async fn settle(&self, settlement: &Settlement) -> Result<(), StoreError> {
            if self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                return Err(StoreError("disk I/O error (on purpose)".into()));
            }
            self.inner.settle(settlement).await
        }
        async fn requeue_failed(&self, id: DispatchId) -> Result<Option<Vec<Requeued>>, StoreError> {
            self.inner.requeue_failed(id).await
        }
        async fn by_idempotency_key(&self, template: &str, key: &str) -> Result<Option<DispatchId>, StoreError> {
            self.inner.by_idempotency_key(template, key).await
        }
        async fn work(&self, id: DispatchId, request: u32) -> Result<Option<StoredWork>, StoreError> {
            self.inner.work(id, request).await
        }
        async fn select(&self, filter: Filter<'_>, bodies: bool) -> Result<Vec<StoredDispatch>, StoreError> {
            self.inner.select(filter, bodies).await
        }
        async fn prune(&self, before: SystemTime) -> Result<u64, StoreError> {
            self.inner.prune(before).await
        }
    }

    /// An endpoint on 127.0.0.1 answering 200, keeping the delivery id of every request.
    async fn endpoint() -> (url::Url, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = seen.clone();
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let kept = kept.clone();
            async move {
                let id =
                    headers.get(super::super::attempt::DELIVERY_ID_HEADER).map(|v| v.to_str().unwrap().to_string());
                kept.lock().unwrap().push(id.unwrap_or_default());
                "ok"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap()).parse().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, seen)
    }

    /// A worker context over a flaky store holding one pending request of one dispatch.
    struct Fixture {
        ctx: WorkerContext,
        records: Arc<LocalRecords>,
        id: DispatchId,
        store: Arc<FlakyStore>,
        /// The delivery ids the endpoint received.
        seen: Arc<Mutex<Vec<String>>>,
        _dir: tempfile::TempDir,
    }

    impl Fixture {
        fn status(&self) -> RequestStatus {
            self.records.get(self.id).unwrap().requests[0].lock().unwrap().status.clone()
        }

        /// The request as the store has it: its status and how many attempts it recorded.
        async fn stored(&self) -> (RequestStatus, usize) {
            let mut stored = self.store.select(Filter::Id(self.id), false).await.unwrap();
            let request = stored.pop().unwrap().requests.remove(0);
            (request.status, request.attempts.len())
        }

        fn job(&self) -> Job {
            Job { dispatch: self.id, request: 0, attempt: 1, due: SystemTime::now() }
        }
    }

    async fn one_request(failures: u32) -> Fixture {
        crate::delivery::client::install_crypto_provider();
        let (url, seen) = endpoint().await;
        let template = Arc::new(Template::for_tests("orders", url));
        let dir = tempfile::tempdir().unwrap();
        let inner = SqliteStore::open(&dir.path().join("h.db")).unwrap();
        let store = Arc::new(FlakyStore { inner, failures: AtomicU32::new(failures) });
        let through = WriteThrough::new(store.clone(), Arc::new(|_| None));
        let records = Arc::new(LocalRecords::new(100, Some(through), u64::MAX));
        let id = DispatchId::new();
        let request = RequestRecord::new(None, r#"{"profiles":[{}]}"#.into(), 1);
        records.insert(DispatchRecord::new(id, template, "42".into(), vec![request], 0), None).await.unwrap();
        let ctx = WorkerContext {
            client: HttpClient::new(NetworkPolicy::allow_loopback()).unwrap(),
            queue: Arc::new(MemoryQueue::new()),
            records: records.clone(),
            backoff: Backoff::default(),
            destinations: DestinationLimits::new(Destinations::default()).0,
        };
        Fixture { ctx, records, id, store, seen, _dir: dir }
    }

    /// A store that fails for a moment: the outcome is written again, and the request is
    /// not sent twice.
    #[tokio::test]
    async fn an_outcome_write_that_fails_for_a_moment_is_written_again() {
        let f = one_request(2).await;
        deliver(&f.ctx, f.job()).await;
        assert_eq!(f.status(), RequestStatus::Delivered);
        assert_eq!(f.stored().await, (RequestStatus::Delivered, 1), "written, with its one attempt");
        assert_eq!(f.seen.lock().unwrap().len(), 1, "sent once");
    }

    /// A store that keeps failing (~3 s): the outcome is not recorded, so the job goes back
    /// to the queue and the request is sent again, with the same delivery id — a duplicate
    /// the receiver can recognise, never a loss.
    #[tokio::test]
    async fn an_outcome_that_cannot_be_written_is_sent_again() {
        let f = one_request(6).await;
        deliver(&f.ctx, f.job()).await;
        assert_eq!(f.status(), RequestStatus::Pending, "not recorded as delivered");
        assert_eq!(f.stored().await, (RequestStatus::Pending, 0));
        let again = tokio::time::timeout(Duration::from_secs(10), f.ctx.queue.next()).await.unwrap().unwrap();
        assert_eq!((again.dispatch, again.request, again.attempt), (f.id, 0, 1), "the same job, unchanged");
        deliver(&f.ctx, again).await;
        assert_eq!(f.status(), RequestStatus::Delivered);
        assert_eq!(f.stored().await, (RequestStatus::Delivered, 1));
        let seen = f.seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "sent again");
        assert_eq!(seen[0], seen[1], "with the same delivery id");
        assert_eq!(seen[0], format!("{}.0", f.id));
    }
}
