//! Workers: take a due job, send it, and decide: delivered, retry at T, or failed.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::watch;
use tracing::{Instrument, debug, info, warn};

use super::attempt::attempt;
use super::client::HttpClient;
use super::destinations::{Admission, DestinationLimits};
use super::retry::{RetryAction, classify};
use crate::config::Backoff;
use crate::queue::{Job, Queue};
use crate::records::{AttemptRecord, DISPATCH_FAILED, Records, RequestStatus};
use crate::stats::{AttemptResult, Stats};

/// What every worker shares.
pub struct WorkerContext {
    pub client: HttpClient,
    pub queue: Arc<dyn Queue>,
    pub records: Arc<Records>,
    pub stats: Arc<Stats>,
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

/// One attempt of one job, and what follows from it.
pub async fn deliver(ctx: &WorkerContext, job: Job) {
    let Some(work) = ctx.records.work(job.dispatch, job.request) else {
        warn!("no record for this job (already finished or evicted); dropping it");
        let _ = ctx.queue.complete(&job).await;
        return;
    };
    let template = &work.template;
    let url = work.target.as_ref().map(|t| &t.url).unwrap_or(&template.url);
    let _permit = match ctx.destinations.admit(url).await {
        Admission::Go(permit) => permit,
        Admission::Later(wait) => {
            // The destination is at its limit: not an attempt, just later.
            if let Err(e) = ctx.queue.retry(Job { due: SystemTime::now() + wait, ..job }).await {
                warn!("{e}");
            }
            return;
        }
    };
    let at = SystemTime::now();
    let started = Instant::now();
    let delivery_id = format!("{}.{}", job.dispatch, job.request);
    let outcome = attempt(&ctx.client, template, work.target.as_deref(), &work.body, Some(&delivery_id)).await;
    let latency = started.elapsed();
    let action = classify(&outcome);
    let (status, error) = match (&outcome, &action) {
        (_, RetryAction::Success) => (outcome.as_ref().ok().map(|r| r.status.as_u16()), None),
        (Ok(r), RetryAction::Retry { reason, .. } | RetryAction::DontRetry { reason }) => {
            (Some(r.status.as_u16()), Some(reason.clone()))
        }
        (Err(_), RetryAction::Retry { reason, .. } | RetryAction::DontRetry { reason }) => (None, Some(reason.clone())),
    };
    ctx.records.record_attempt(
        job.dispatch,
        job.request,
        AttemptRecord { attempt: job.attempt, at, latency, status, error },
    );
    let (campaign, name, profiles) = (work.campaign.as_str(), template.name.as_str(), work.profiles as u64);

    let result = match action {
        RetryAction::Success => {
            ctx.stats.attempt(campaign, name, latency, AttemptResult::Success);
            ctx.stats.delivered(campaign, name, profiles);
            ctx.records.finish(job.dispatch, job.request, RequestStatus::Delivered);
            debug!(template = name, campaign, "delivered");
            ctx.queue.complete(&job).await
        }
        RetryAction::Retry { reason, not_before } if job.attempt < template.max_attempts() => {
            ctx.stats.attempt(campaign, name, latency, AttemptResult::Retry);
            let next = job.attempt + 1;
            let delay = ctx.backoff.delay(next, not_before);
            info!(template = name, campaign, %reason, retry_in_ms = delay.as_millis() as u64, "attempt failed; will retry");
            ctx.queue.retry(Job { attempt: next, due: SystemTime::now() + delay, ..job.clone() }).await
        }
        RetryAction::Retry { reason, .. } | RetryAction::DontRetry { reason } => {
            ctx.stats.attempt(campaign, name, latency, AttemptResult::Failure);
            ctx.stats.failed(campaign, name, profiles, &reason);
            ctx.records.finish(job.dispatch, job.request, RequestStatus::Failed { reason: reason.clone() });
            warn!(template = name, campaign, %reason, attempts = job.attempt, "{DISPATCH_FAILED}");
            ctx.queue.complete(&job).await
        }
    };
    if let Err(e) = result {
        warn!("{e}");
    }
}
