//! The engine: the registry, the dispatcher, the queue and its workers, wired together.

use std::sync::Arc;

use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::{QueueBackend, Settings};
use crate::delivery::client::HttpClient;
use crate::delivery::worker::{self, WorkerContext};
use crate::dispatch::{DispatchLimits, Dispatcher};
use crate::model::{RequestStatus, StoreError};
use crate::plugin::{KeyStore, PluginRegistry};
use crate::queue::memory::MemoryQueue;
use crate::queue::postgres::PgQueue;
use crate::queue::{Job, Queue};
use crate::records::{DispatchRecord, Records, TemplateSource};
use crate::stats::{CampaignView, Stats, StatsView};
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Filter, Store};
use crate::template::registry::ReloadReport;
use crate::template::{Loader, Registry};

/// How the engine runs.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Watch the templates folder for changes (`serve`); otherwise load it once.
    pub watch: bool,
    /// Verify templates that ask for it before activating them (`serve`); `send` and `test`
    /// act on the template as it is.
    pub verify: bool,
    /// Use the configured queue backend (`serve`). Otherwise the queue is in memory, so a
    /// one-off command neither touches nor competes for a running gateway's state.
    pub persist: bool,
}

pub struct Engine {
    pub settings: Settings,
    pub client: HttpClient,
    pub registry: Arc<Registry>,
    pub dispatcher: Dispatcher,
    pub queue: Arc<dyn Queue>,
    pub records: Arc<Records>,
    pub stats: Arc<Stats>,
    /// The signing keys (`/.well-known/jwks.json`), when the gateway has a key store.
    pub keys: Option<Arc<dyn KeyStore>>,
    shutdown: watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EngineError(String);

impl Engine {
    /// Loads the templates, starts the workers and (with `watch`) the folder watcher.
    pub async fn start(
        settings: Settings,
        plugins: PluginRegistry,
        keys: Option<Arc<dyn KeyStore>>,
        options: EngineOptions,
    ) -> Result<(Self, ReloadReport), EngineError> {
        let config = &settings.config;
        let client = HttpClient::new(config.network.clone()).map_err(EngineError)?;
        let loader = Loader {
            refs: settings.confinement(),
            defaults: config.defaults.clone(),
            plugins: Arc::new(plugins),
            client: client.clone(),
            keys: keys.clone(),
        };
        let templates_dir = settings.templates_dir();
        if options.watch {
            std::fs::create_dir_all(&templates_dir)
                .map_err(|e| EngineError(format!("cannot create {}: {e}", templates_dir.display())))?;
        }
        let registry = Registry::new(loader, templates_dir.clone(), options.verify, config.reload.rescan);
        let backend = if options.persist { config.queue.clone() } else { QueueBackend::Memory };
        let (store, queue): (Option<Arc<dyn Store>>, Arc<dyn Queue>) = match &backend {
            QueueBackend::Memory => (None, Arc::new(MemoryQueue::new())),
            QueueBackend::Sqlite => {
                let store = SqliteStore::open(&settings.database_path()).map_err(|e| EngineError(e.to_string()))?;
                (Some(Arc::new(store)), Arc::new(MemoryQueue::new()))
            }
            QueueBackend::Postgres(url) => {
                let store = PgStore::connect(url).await.map_err(|e| EngineError(e.to_string()))?;
                let queue = PgQueue::start(store.clone(), config.queue_lease, config.queue_poll, config.workers);
                (Some(store), Arc::new(queue))
            }
        };
        let templates: TemplateSource = {
            let registry = registry.clone();
            Arc::new(move |name| registry.current(name))
        };
        // With a shared store, campaign stats are derived from its rows on every read.
        let shared = store.as_ref().is_some_and(|s| s.shared());
        let stats = Arc::new(if shared { Stats::templates_only() } else { Stats::new() });
        let records = Arc::new(
            Records::with_store(config.limits.dispatch_records, store.clone(), templates.clone(), stats.clone())
                .with_pending_budget(config.limits.max_pending_bytes),
        );
        let (shutdown, shutdown_rx) = watch::channel(false);

        let report = registry.rescan().await;
        if let Some(store) = &store
            && !store.shared()
        {
            restore(store, &records, &stats, &queue, &templates).await?;
        }
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(prune(
            store.clone(),
            records.clone(),
            stats.clone(),
            config.retention,
            shutdown_rx.clone(),
        )));
        if let Some(store) = store.clone().filter(|s| s.shared()) {
            tasks.push(tokio::spawn(sync_pending_budget(store, records.clone(), shutdown_rx.clone())));
        }
        if options.watch {
            let watched = registry.clone();
            let rescan: crate::watch::Rescan = Arc::new(move || {
                let registry = watched.clone();
                Box::pin(async move {
                    registry.rescan().await;
                })
            });
            let handle = crate::watch::spawn(
                &templates_dir,
                config.reload.debounce,
                config.reload.rescan,
                shutdown_rx.clone(),
                rescan,
            )
            .map_err(|e| EngineError(format!("cannot watch {}: {e}", templates_dir.display())))?;
            tasks.push(handle);
        }
        let (destinations, released) =
            crate::delivery::destinations::DestinationLimits::new(config.destinations.clone());
        tasks.push(tokio::spawn(worker::unpark(queue.clone(), released)));
        let ctx = Arc::new(WorkerContext {
            client: client.clone(),
            queue: queue.clone(),
            records: records.clone(),
            backoff: config.backoff.clone(),
            destinations,
        });
        for _ in 0..config.workers {
            tasks.push(tokio::spawn(worker::run(ctx.clone(), shutdown_rx.clone())));
        }
        info!(
            templates = report.loaded.len(),
            errors = report.errors.len(),
            workers = config.workers,
            queue = backend.name(),
            "engine started"
        );
        let limits = DispatchLimits {
            max_bytes: config.limits.max_dispatch_bytes,
            max_requests: config.limits.max_dispatch_requests,
        };
        let dispatcher =
            Dispatcher { registry: registry.clone(), queue: queue.clone(), records: records.clone(), limits };
        Ok((
            Self {
                settings,
                client,
                registry,
                dispatcher,
                queue,
                records,
                stats,
                keys,
                shutdown,
                tasks: std::sync::Mutex::new(tasks),
            },
            report,
        ))
    }

    /// Watches another folder (WASM plugins) like the templates folder, with the same
    /// debounce and rescan period, until shutdown.
    pub fn watch_folder(&self, dir: &std::path::Path, rescan: crate::watch::Rescan) -> Result<(), EngineError> {
        let reload = &self.settings.config.reload;
        let handle = crate::watch::spawn(dir, reload.debounce, reload.rescan, self.shutdown.subscribe(), rescan)
            .map_err(|e| EngineError(format!("cannot watch {}: {e}", dir.display())))?;
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(handle);
        Ok(())
    }

    /// The stats of a campaign: this process's, or with a shared store every instance's,
    /// derived from the store's rows.
    pub async fn campaign_stats(&self, campaign: &str) -> Result<Option<CampaignView>, StoreError> {
        match self.shared_store() {
            Some(store) => Ok(Self::derive(store, Filter::Campaign(campaign)).await?.campaign(campaign)),
            None => Ok(self.stats.campaign(campaign)),
        }
    }

    /// The stats of a template, like [`Engine::campaign_stats`].
    pub async fn template_stats(&self, template: &str) -> Result<Option<StatsView>, StoreError> {
        match self.shared_store() {
            Some(store) => Ok(Self::derive(store, Filter::Template(template)).await?.template(template)),
            None => Ok(self.stats.template(template)),
        }
    }

    fn shared_store(&self) -> Option<&Arc<dyn Store>> {
        self.records.store().filter(|s| s.shared())
    }

    async fn derive(store: &Arc<dyn Store>, filter: Filter<'_>) -> Result<Stats, StoreError> {
        let stats = Stats::new();
        for d in store.select(filter, false).await? {
            stats.replay(&d);
        }
        Ok(stats)
    }

    /// Stops taking jobs and watching files; returns when the deliveries in progress have
    /// finished, or after `grace`: deliveries still going then are cut off (their
    /// requests are still pending in the store, so the next start sends them again).
    /// Jobs still queued stay in the queue.
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let all = async {
            for task in &mut tasks {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            let cut = tasks.iter().filter(|t| !t.is_finished()).count();
            warn!(
                deliveries = cut,
                "deliveries still in progress after the {grace:?} grace period were cut off; they stay queued"
            );
            for task in &tasks {
                task.abort();
            }
        }
        if let Err(e) = self.queue.close().await {
            warn!("{e}");
        }
    }
}

/// Rebuilds memory from the store at start: dispatch records (the finished ones up to the
/// memory limit), the stats derived from every retained dispatch, and a job for every
/// pending request, due when it was due. Requests are sent with the current version of
/// their template.
async fn restore(
    store: &Arc<dyn Store>,
    records: &Records,
    stats: &Stats,
    queue: &Arc<dyn Queue>,
    templates: &TemplateSource,
) -> Result<(), EngineError> {
    let dispatches = store.select(Filter::All, true).await.map_err(|e| EngineError(e.to_string()))?;
    let count = dispatches.len();
    let mut jobs = Vec::new();
    for d in dispatches {
        stats.replay(&d);
        let pending: Vec<Job> = (d.requests.iter().enumerate())
            .filter(|(_, r)| r.status == RequestStatus::Pending)
            .map(|(i, r)| Job { dispatch: d.id, request: i as u32, attempt: r.attempt, due: r.due })
            .collect();
        let (id, key) = (d.id, d.idempotency_key.clone());
        let template = templates(&d.template);
        match DispatchRecord::from_stored(d, template) {
            Ok(record) => {
                records.restore(record, key);
                jobs.extend(pending);
            }
            Err(e) => error!(dispatch = %id, "cannot restore this dispatch: {e}"),
        }
    }
    let pending = jobs.len();
    queue.push(jobs).await.map_err(|e| EngineError(e.to_string()))?;
    if count > 0 {
        info!(dispatches = count, pending_requests = pending, "restored from the store");
    }
    Ok(())
}

/// With a shared store, other instances accept and finish requests too, so this instance's
/// count of pending bodies would drift (up, for bodies it accepted and another delivered,
/// until every dispatch here answered 503): it is set to the store's sum every second while
/// this instance counts any, every minute otherwise (an idle instance costs the database
/// little), which makes `limits.max_pending_bytes` the cluster's budget.
async fn sync_pending_budget(store: Arc<dyn Store>, records: Arc<Records>, mut shutdown: watch::Receiver<bool>) {
    const IDLE: Duration = Duration::from_secs(60);
    let mut last: Option<tokio::time::Instant> = None;
    loop {
        if records.budget().used() > 0 || last.is_none_or(|t| t.elapsed() >= IDLE) {
            match store.pending_body_bytes().await {
                Ok(Some(pending)) => records.budget().sync(pending),
                Ok(None) => return,
                Err(e) => warn!("cannot read the pending bodies' size from the store: {e}"),
            }
            last = Some(tokio::time::Instant::now());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Deletes finished dispatches past the retention period, now and then, from the store
/// and from memory; what they counted for leaves the campaign stats (a campaign with no
/// dispatch left is dropped).
async fn prune(
    store: Option<Arc<dyn Store>>,
    records: Arc<Records>,
    stats: Arc<Stats>,
    retention: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
    loop {
        let before = SystemTime::now().checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH);
        if let Some(store) = &store {
            match store.prune_dispatches(before).await {
                Ok(pruned) if pruned.is_empty() => {}
                Ok(pruned) => {
                    for d in &pruned {
                        stats.forget(d);
                    }
                    info!(dispatches = pruned.len(), "deleted finished dispatches past the retention period");
                }
                Err(e) => warn!("{e}"),
            }
        }
        records.forget_finished_before(before);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}
