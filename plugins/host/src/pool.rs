//! Plugin instances kept between calls (`plugins.reuse`).
//!
//! Every authorizer and transformer (one template version's use of a plugin) has an
//! [`InstancePool`]; the instances it keeps idle live in the engine's one [`IdleSet`], keyed
//! by the pool and the plugin version that made them, so an instance serves only the pool
//! that made it, and only while the plugin file it came from is the live one.
//!
//! An instance, busy or idle, holds one of the engine's `plugins.max_instances` permits, and
//! so one slot of the pooling allocator (its memories, tables, core instances). Idle
//! instances never make a call wait for one: a call that finds no free permit evicts the
//! oldest idle instance (of any template) instead, and an instance is not kept idle while a
//! call is waiting. So at most `plugins.max_instances` instances are alive, busy or idle, and
//! only busy ones make calls wait.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use wasmtime::Store;
use wasmtime::component::Instance;

use crate::state::{CallContext, CallState};

/// A fresh number, for a pool or a loaded plugin version.
pub(crate) fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A live instance of a plugin version: its store and instance, and the permit it holds.
pub(crate) struct Live {
    // Fields drop in this order: the store (and its allocator slot) before the permit, so a
    // call that gets the permit also finds the slot free.
    pub store: Store<CallState>,
    pub instance: Instance,
    /// The [`crate::LoadedPlugin`] version it was made from.
    pub plugin: u64,
    /// Calls it has served.
    pub calls: u32,
    _permit: OwnedSemaphorePermit,
}

impl Live {
    pub fn new(store: Store<CallState>, instance: Instance, plugin: u64, permit: OwnedSemaphorePermit) -> Self {
        Self { store, instance, plugin, calls: 0, _permit: permit }
    }
}

/// The idle instances of every pool, and the permits of the instances alive.
pub(crate) struct IdleSet {
    state: Mutex<IdleState>,
    permits: Arc<Semaphore>,
}

struct IdleState {
    /// Calls waiting for a permit.
    waiting: usize,
    /// (pool, instance), oldest first.
    idle: Vec<(u64, Live)>,
}

impl IdleSet {
    pub fn new(instances: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(IdleState { waiting: 0, idle: Vec::new() }),
            permits: Arc::new(Semaphore::new(instances)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, IdleState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle instance of `pool` made from plugin version `plugin`.
    /// The pool's instances of another version (the file was replaced) are dropped.
    fn take(&self, pool: u64, plugin: u64) -> Option<Live> {
        let mut state = self.lock();
        let mut stale = false;
        let mut found = None;
        for (i, (p, live)) in state.idle.iter().enumerate().rev() {
            if *p == pool {
                if live.plugin == plugin {
                    found = Some(i);
                    break;
                }
                stale = true;
            }
        }
        let live = found.map(|i| state.idle.remove(i).1);
        let stale: Vec<_> = if stale {
            state.idle.extract_if(.., |(p, live)| *p == pool && live.plugin != plugin).collect()
        } else {
            Vec::new()
        };
        drop(state);
        drop(stale);
        live
    }

    /// A permit for a new instance: a free one, or one an idle instance frees (the oldest is
    /// evicted), or else the next one a busy instance releases.
    pub async fn permit(&self) -> Result<OwnedSemaphorePermit, String> {
        if let Some(permit) = self.try_permit()? {
            return Ok(permit);
        }
        let _waiting = Waiting(self);
        self.permits.clone().acquire_owned().await.map_err(|e| e.to_string())
    }

    /// A free permit, or one an idle instance frees; none when every instance is busy, and
    /// then this call is counted as waiting (by the caller's [`Waiting`] from then on).
    fn try_permit(&self) -> Result<Option<OwnedSemaphorePermit>, String> {
        loop {
            let mut state = self.lock();
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => return Ok(Some(permit)),
                Err(TryAcquireError::Closed) => return Err("the plugin engine is shutting down".into()),
                Err(TryAcquireError::NoPermits) => {}
            }
            if state.idle.is_empty() {
                // Counted under the lock, so an instance given back from now on is dropped
                // (its permit freed for this call) rather than kept idle.
                state.waiting += 1;
                return Ok(None);
            }
            let evicted = state.idle.remove(0);
            drop(state);
            drop(evicted);
        }
    }

    /// Keeps `live` idle for `pool`, unless a call is waiting for a permit.
    fn put(&self, pool: u64, live: Live) {
        let mut state = self.lock();
        if state.waiting > 0 {
            drop(state);
            drop(live);
            return;
        }
        state.idle.push((pool, live));
    }

    /// Drops every idle instance of `pool`.
    fn forget(&self, pool: u64) {
        let mut state = self.lock();
        let gone: Vec<_> = state.idle.extract_if(.., |(p, _)| *p == pool).collect();
        drop(state);
        drop(gone);
    }

    /// Idle instances of `pool`, for tests.
    #[cfg(test)]
    pub fn idle(&self, pool: u64) -> usize {
        self.lock().idle.iter().filter(|(p, _)| *p == pool).count()
    }
}

/// One waiting call, counted until it has its permit or is cancelled.
struct Waiting<'a>(&'a IdleSet);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().waiting -= 1;
    }
}

/// The instances of one template version's use of a plugin (one authorizer or
/// transformer): each serves up to `reuse` calls, then is dropped. Its idle instances are
/// dropped with it.
pub struct InstancePool {
    id: u64,
    ctx: Arc<CallContext>,
    reuse: u32,
    idle: Arc<IdleSet>,
}

impl InstancePool {
    pub(crate) fn new(idle: Arc<IdleSet>, ctx: Arc<CallContext>, reuse: u32) -> Self {
        Self { id: next_id(), ctx, reuse: reuse.max(1), idle }
    }

    /// What its calls share: the template's cache, grants and client.
    pub fn ctx(&self) -> &Arc<CallContext> {
        &self.ctx
    }

    /// An idle instance of plugin version `plugin`, if one is kept.
    pub(crate) fn take(&self, plugin: u64) -> Option<Live> {
        if self.reuse == 1 { None } else { self.idle.take(self.id, plugin) }
    }

    /// An instance after a clean call: kept idle if it may serve more.
    pub(crate) fn give_back(&self, mut live: Live) {
        live.calls += 1;
        if live.calls < self.reuse {
            self.idle.put(self.id, live);
        }
    }

    #[cfg(test)]
    pub(crate) fn idle_count(&self) -> usize {
        self.idle.idle(self.id)
    }
}

impl Drop for InstancePool {
    fn drop(&mut self) {
        if self.reuse > 1 {
            self.idle.forget(self.id);
        }
    }
}

/// The instance a call ran on, until the caller has checked what it returned: [`Lease::keep`]
/// after a clean call gives it back to its pool; dropped, it is thrown away.
#[must_use = "an instance is reused only when kept"]
pub struct Lease<'p> {
    pool: &'p InstancePool,
    live: Option<Live>,
}

impl<'p> Lease<'p> {
    pub(crate) fn new(pool: &'p InstancePool, live: Live) -> Self {
        Self { pool, live: Some(live) }
    }

    /// Bytes of the largest linear memory the call's instance has had.
    pub fn memory_bytes(&self) -> Option<usize> {
        self.live.as_ref().map(|live| live.store.data().limits.peak_memory())
    }

    /// The call was clean: its instance may serve the pool's next call.
    pub fn keep(mut self) {
        if let Some(live) = self.live.take() {
            self.pool.give_back(live);
        }
    }
}

/// What a call returned, with the instance it ran on.
pub struct Leased<'p, T> {
    pub output: T,
    pub lease: Lease<'p>,
}

impl<T> Leased<'_, T> {
    /// The output, the instance kept for the next call.
    pub fn keep(self) -> T {
        self.lease.keep();
        self.output
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::timeout;
    use wasmtime::component::{Component, Linker};
    use wasmtime::{Engine, StoreLimits};

    use super::*;

    /// The smallest component: instantiating it is all these tests need.
    const EMPTY: &[u8] = b"\0asm\x0d\x00\x01\x00";

    struct Fixture {
        engine: Engine,
        component: Component,
        set: Arc<IdleSet>,
        ctx: Arc<CallContext>,
    }

    impl Fixture {
        fn new(instances: usize) -> Self {
            let engine = Engine::default();
            let component = Component::new(&engine, EMPTY).unwrap();
            let ctx = Arc::new(CallContext::new("counter", "a"));
            Self { engine, component, set: IdleSet::new(instances), ctx }
        }

        fn pool(&self, reuse: u32) -> InstancePool {
            InstancePool::new(self.set.clone(), self.ctx.clone(), reuse)
        }

        /// A new instance of plugin version `plugin`, holding a permit.
        async fn live(&self, plugin: u64) -> Live {
            let permit = timeout(Duration::from_secs(5), self.set.permit()).await.expect("a permit").unwrap();
            let state = CallState::new(StoreLimits::default(), self.ctx.clone(), Duration::from_secs(1));
            let mut store = Store::new(&self.engine, state);
            let instance = Linker::new(&self.engine).instantiate(&mut store, &self.component).unwrap();
            Live::new(store, instance, plugin, permit)
        }

        fn idle(&self) -> usize {
            self.set.lock().idle.len()
        }
    }

    #[tokio::test]
    async fn an_instance_serves_its_pool_up_to_reuse_calls() {
        let f = Fixture::new(4);
        let (a, b) = (f.pool(2), f.pool(2));
        a.give_back(f.live(1).await);
        assert!(b.take(1).is_none(), "not another pool's");
        let live = a.take(1).expect("kept after its first call");
        assert_eq!(live.calls, 1);
        a.give_back(live);
        assert!(a.take(1).is_none(), "not kept after its second (plugins.reuse: 2)");

        let single = f.pool(1);
        single.give_back(f.live(1).await);
        assert_eq!(f.idle(), 0, "plugins.reuse: 1 keeps nothing");
    }

    #[tokio::test]
    async fn instances_of_a_replaced_plugin_or_a_dropped_pool_are_dropped() {
        let f = Fixture::new(4);
        let a = f.pool(10);
        a.give_back(f.live(1).await);
        a.give_back(f.live(1).await);
        assert!(a.take(2).is_none(), "not from another plugin version");
        assert_eq!(a.idle_count(), 0, "the old version's instances are dropped");
        a.give_back(f.live(2).await);
        drop(a);
        assert_eq!(f.idle(), 0, "a dropped pool's instances are dropped");
        assert_eq!(f.set.permits.available_permits(), 4, "and their permits free");
    }

    /// Idle instances hold permits (and allocator slots) but never make a call wait: a call
    /// that finds none free evicts the oldest idle one, and none is kept idle while a call
    /// waits for a busy one.
    #[tokio::test]
    async fn idle_instances_never_make_a_call_wait() {
        let f = Fixture::new(2);
        let (a, b) = (f.pool(10), f.pool(10));
        let (first, second) = (f.live(1).await, f.live(1).await);
        a.give_back(first);
        a.give_back(second);
        assert_eq!(f.set.permits.available_permits(), 0, "the idle instances hold every permit");
        let other = f.live(1).await;
        assert_eq!(a.idle_count(), 1, "the oldest idle instance made room for another template's call");
        b.give_back(other);

        // Both permits busy: a call waits, and an instance given back meanwhile is dropped
        // for it rather than kept idle.
        let (x, y) = (a.take(1).unwrap(), b.take(1).unwrap());
        assert_eq!(f.idle(), 0);
        let set = f.set.clone();
        let waiter = tokio::spawn(async move { set.permit().await });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while f.set.lock().waiting == 0 {
            assert!(std::time::Instant::now() < deadline, "the call never waited");
            tokio::task::yield_now().await;
        }
        a.give_back(x);
        assert_eq!(f.idle(), 0, "not kept while a call waits");
        let permit = timeout(Duration::from_secs(5), waiter).await.expect("the waiting call got a permit");
        assert!(permit.unwrap().is_ok());
        assert_eq!(f.set.lock().waiting, 0);
        b.give_back(y);
        assert_eq!(b.idle_count(), 1, "kept again once nobody waits");
    }
}
