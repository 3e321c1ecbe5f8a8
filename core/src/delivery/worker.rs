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
use crate::queue::{Job, Queue};
use crate::records::{AttemptRecord, DISPATCH_FAILED, Records, Work};
use crate::stats::AttemptResult;
use crate::store::{NextState, Settlement};

/// What every worker shares.
pub struct WorkerContext {
    pub client: HttpClient,
    pub queue: Arc<dyn Queue>,
    pub records: Arc<Records>,
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
                let span = tracing::info_span!("deliver", dispatch = %job.dispatch, request = job.request, attempt = job.attempt);
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
        if settle(ctx, &job, &work, None, next).await {
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
            if !settle(ctx, &job, &work, Some(record(AttemptResult::Success, None)), NextState::Delivered).await {
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
            if !settle(ctx, &job, &work, Some(record(AttemptResult::Retry, Some(reason.clone()))), retry).await {
                return;
            }
            info!(template = name, campaign, %reason, retry_in_ms = delay.as_millis() as u64, "attempt failed; will retry");
            ctx.queue.retry(Job { attempt: next, due, ..job.clone() }).await
        }
        RetryAction::Retry { reason, .. } | RetryAction::DontRetry { reason } => {
            let failed = NextState::Failed { reason: reason.clone() };
            if !settle(ctx, &job, &work, Some(record(AttemptResult::Failure, Some(reason.clone()))), failed).await {
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
/// and is sent again later: a duplicate is better than a loss. Returns whether it was written.
async fn settle(ctx: &WorkerContext, job: &Job, work: &Work, attempt: Option<AttemptRecord>, next: NextState) -> bool {
    let settlement = Settlement { dispatch: job.dispatch, request: job.request, attempt, next };
    let mut wait = Duration::from_millis(100);
    loop {
        match ctx.records.settle(settlement.clone(), work).await {
            Ok(()) => return true,
            Err(e) if wait <= Duration::from_secs(2) => {
                warn!("{e}; writing this outcome again in {wait:?}");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => {
                error!("{e}; the outcome of this attempt is not recorded, the request will be sent again");
                later(ctx, job.clone(), Duration::from_secs(1)).await;
                return false;
            }
        }
    }
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
