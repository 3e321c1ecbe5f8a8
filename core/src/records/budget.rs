//! The budget of pending request bodies (`limits.max_pending_bytes`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The budget of pending request bodies (`limits.max_pending_bytes`): bytes are reserved
/// when a dispatch is accepted and released as its requests finish (delivered or failed);
/// restored and requeued requests count too.
#[derive(Debug)]
pub struct PendingBudget {
    limit: u64,
    used: AtomicU64,
}

/// A dispatch's bodies did not fit in the [`PendingBudget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetFull {
    pub wanted: u64,
    pub used: u64,
    pub limit: u64,
}

impl PendingBudget {
    pub fn new(limit: u64) -> Self {
        Self { limit, used: AtomicU64::new(0) }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The bytes of the bodies pending now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Takes `bytes` if they fit; the reservation gives them back when dropped, unless it
    /// is [kept](Reservation::keep).
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Result<Reservation, BudgetFull> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .map(|_| Reservation { budget: self.clone(), bytes })
            .map_err(|used| BudgetFull { wanted: bytes, used, limit: self.limit })
    }

    /// Sets the count to what a shared store holds (other instances accept and finish
    /// requests too): the budget is then the cluster's, within one sync period.
    pub fn sync(&self, pending: u64) {
        self.used.store(pending, Ordering::Release);
    }

    /// Counts bodies that are pending already (restored at start, requeued), even past
    /// the limit: they exist whether or not they fit.
    pub(super) fn add(&self, bytes: u64) {
        let _ = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| Some(u.saturating_add(bytes)));
    }

    pub(super) fn release(&self, bytes: u64) {
        let _ = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| Some(u.saturating_sub(bytes)));
    }
}

/// Bytes taken from a [`PendingBudget`] for a dispatch being accepted.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<PendingBudget>,
    bytes: u64,
}

impl Reservation {
    /// The dispatch was stored: its requests hold the bytes now, and give them back as
    /// they finish.
    pub fn keep(mut self) {
        self.bytes = 0;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}
