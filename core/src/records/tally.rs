//! What the records' changes count for: every update of the stats and of the pending
//! bodies' budget that a dispatch's record makes goes through here, for both kinds of
//! records. The stats are derived from settled outcomes only: a dispatch accepted, an
//! attempt and the request's next state, a replay, a dispatch read back from the store.

use std::sync::Arc;

use super::budget::PendingBudget;
use super::record::{DispatchRecord, Work};
use crate::model::{AttemptRecord, NextState, StoredDispatch};
use crate::stats::Stats;
use crate::store::Requeued;

pub struct Tally {
    stats: Arc<Stats>,
    budget: Arc<PendingBudget>,
}

impl Tally {
    /// Counts into `stats`, with a budget of `max_pending_bytes` for the pending bodies.
    pub fn new(stats: Stats, max_pending_bytes: u64) -> Self {
        Self { stats: Arc::new(stats), budget: Arc::new(PendingBudget::new(max_pending_bytes)) }
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    pub fn budget(&self) -> &Arc<PendingBudget> {
        &self.budget
    }

    /// A new dispatch: its requests and profiles are pending (its bodies were reserved in
    /// the budget before it was stored).
    pub fn accepted(&self, record: &DispatchRecord) {
        let (requests, profiles) = (record.requests.len() as u64, record.profiles() as u64);
        self.stats.accepted(&record.campaign, &record.template_name, requests, profiles);
        if record.skipped > 0 {
            self.stats.skipped(&record.campaign, &record.template_name, record.skipped as u64);
        }
    }

    /// An attempt of `work`, settled.
    pub fn attempted(&self, work: &Work, attempt: &AttemptRecord) {
        self.stats.attempt(&work.campaign, &work.template_name, attempt.latency, attempt.result);
    }

    /// The next state of `work`'s request, settled after its attempt. A request that was
    /// pending and is now delivered or failed leaves the pending counts and gives its body
    /// back to the budget: then this returns true.
    pub fn settled(&self, work: &Work, next: &NextState, was_pending: bool) -> bool {
        let (campaign, template, profiles) = (&work.campaign, &work.template_name, work.profiles as u64);
        match next {
            NextState::Retry { .. } => return false,
            _ if !was_pending => return false,
            NextState::Delivered => self.stats.delivered(campaign, template, profiles),
            NextState::Failed { reason } => self.stats.failed(campaign, template, profiles, reason),
        }
        self.budget.release(work.body.len() as u64);
        true
    }

    /// Bodies that are pending again (a replay) or already (restored at start): they count
    /// in the budget even past its limit, since they exist.
    pub fn pending_bodies(&self, bytes: u64) {
        self.budget.add(bytes);
    }

    /// Failed requests of `record` made pending again by a replay.
    pub fn replayed(&self, record: &DispatchRecord, requeued: &[Requeued]) {
        for r in requeued {
            self.stats.requeued(&record.campaign, &record.template_name, r.profiles as u64, &r.reason);
        }
    }

    /// A dispatch read back from the store at start counts as if it had happened here.
    pub fn restored(&self, dispatch: &StoredDispatch) {
        self.stats.replay(dispatch);
    }

    /// A dispatch was deleted past the retention period (or, without a store, dropped from
    /// memory then): it leaves its campaign's stats.
    pub fn pruned(&self, dispatch: &StoredDispatch) {
        self.stats.forget(dispatch);
    }
}

/// The stats of dispatches read from a shared store's rows, counted as if they had
/// happened here: what every instance's records add up to.
pub fn derive(dispatches: &[StoredDispatch]) -> Stats {
    let stats = Stats::new();
    for d in dispatches {
        stats.replay(d);
    }
    stats
}
