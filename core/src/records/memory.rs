//! The dispatch records this instance holds in memory: by id, with their idempotency keys,
//! bounded (the oldest finished dispatches are dropped past the limit), and the waiters
//! woken when a dispatch finishes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use tokio::sync::Notify;

use super::record::DispatchRecord;
use crate::model::DispatchId;

/// A template's name and an idempotency key given with one of its dispatches.
type Key = (String, String);

pub struct Memory {
    inner: RwLock<Inner>,
    /// How many finished dispatches it keeps (`limits.dispatch_records`).
    limit: usize,
    /// Woken whenever a dispatch finishes.
    finished: Notify,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<DispatchId, Arc<DispatchRecord>>,
    idempotency: HashMap<Key, DispatchId>,
    keys_of: HashMap<DispatchId, Key>,
    /// Finished dispatches, oldest first: the ones memory may drop.
    evictable: VecDeque<DispatchId>,
}

impl Inner {
    /// Drops the oldest finished dispatches past `limit`.
    fn evict_past(&mut self, limit: usize) {
        while self.evictable.len() > limit {
            if let Some(old) = self.evictable.pop_front() {
                self.forget(old);
            }
        }
    }

    /// Drops a dispatch and its idempotency key.
    fn forget(&mut self, id: DispatchId) -> Option<Arc<DispatchRecord>> {
        if let Some(k) = self.keys_of.remove(&id) {
            self.idempotency.remove(&k);
        }
        self.by_id.remove(&id)
    }

    fn add(&mut self, record: DispatchRecord, key: Option<Key>) -> Arc<DispatchRecord> {
        if let Some(k) = key {
            self.idempotency.insert(k.clone(), record.id);
            self.keys_of.insert(record.id, k);
        }
        let record = Arc::new(record);
        self.by_id.insert(record.id, record.clone());
        record
    }
}

impl Memory {
    /// Keeps at most `limit` finished dispatches (at least one).
    pub fn new(limit: usize) -> Self {
        Self { inner: RwLock::default(), limit: limit.max(1), finished: Notify::new() }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: DispatchId) -> Option<Arc<DispatchRecord>> {
        self.read().by_id.get(&id).cloned()
    }

    /// The dispatch an idempotency key of `template` maps to.
    pub fn by_idempotency_key(&self, template: &str, key: &str) -> Option<DispatchId> {
        self.read().idempotency.get(&(template.to_string(), key.to_string())).copied()
    }

    /// Holds a new dispatch, unless its idempotency key maps to a dispatch already (a
    /// concurrent resend won the race): then that one's id.
    pub fn insert(&self, record: DispatchRecord, key: Option<String>) -> Result<Arc<DispatchRecord>, DispatchId> {
        let key = key.map(|k| (record.template_name.clone(), k));
        let mut inner = self.write();
        if let Some(existing) = key.as_ref().and_then(|k| inner.idempotency.get(k)) {
            return Err(*existing);
        }
        Ok(inner.add(record, key))
    }

    /// Holds a dispatch read from the store (at start). Past the limit, the oldest
    /// finished ones are let go.
    pub fn restore(&self, record: DispatchRecord, key: Option<String>) {
        let key = key.map(|k| (record.template_name.clone(), k));
        let (id, finished) = (record.id, record.is_finished());
        let mut inner = self.write();
        inner.add(record, key);
        if finished {
            inner.evictable.push_back(id);
            inner.evict_past(self.limit);
        }
    }

    /// The dispatch's last request finished: waiters hear of it, and it may be dropped
    /// once `limit` newer dispatches have finished.
    pub fn finished(&self, id: DispatchId) {
        self.finished.notify_waiters();
        let mut inner = self.write();
        inner.evictable.push_back(id);
        inner.evict_past(self.limit);
    }

    /// A finished dispatch is pending again (a replay): it must not be dropped as finished.
    pub fn pending_again(&self, id: DispatchId) {
        self.write().evictable.retain(|f| *f != id);
    }

    /// Every dispatch it holds, in no order.
    pub fn all(&self) -> Vec<Arc<DispatchRecord>> {
        self.read().by_id.values().cloned().collect()
    }

    /// Woken whenever a dispatch finishes.
    pub fn waiters(&self) -> &Notify {
        &self.finished
    }

    /// Drops the finished dispatches created before `before` (the retention period) and
    /// returns them.
    pub fn forget_finished_before(&self, before: SystemTime) -> Vec<Arc<DispatchRecord>> {
        let mut guard = self.write();
        let inner = &mut *guard;
        let old: Vec<DispatchId> = (inner.evictable.iter())
            .filter(|id| inner.by_id.get(id).is_some_and(|r| r.is_finished() && r.created_at < before))
            .copied()
            .collect();
        let forgotten = old.into_iter().filter_map(|id| inner.forget(id)).collect();
        let by_id = &inner.by_id;
        inner.evictable.retain(|id| by_id.contains_key(id));
        forgotten
    }
}
