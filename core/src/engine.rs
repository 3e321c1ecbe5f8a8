//! The engine: the registry, the dispatcher, the queue and its workers, wired together.

use std::sync::Arc;

use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::{QueueBackend, Settings};
use crate::delivery::client::HttpClient;
use crate::delivery::worker::{self, WorkerContext};
use crate::dispatch::{DispatchLimits, Dispatcher};
use crate::model::StoreError;
use crate::plugin::{KeyStore, PluginRegistry};
use crate::queue::Queue;
use crate::queue::memory::MemoryQueue;
use crate::queue::postgres::PgQueue;
use crate::records::{LocalRecords, Records, SharedRecords, TemplateSource, WriteThrough};
use crate::stats::{CampaignView, Stats, StatsView};
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
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
    pub records: Arc<dyn Records>,
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
        let templates: TemplateSource = {
            let registry = registry.clone();
            Arc::new(move |name| registry.current(name))
        };
        let (limit, max_pending) = (config.limits.dispatch_records, config.limits.max_pending_bytes);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        // The records this instance owns (restored from the store once the templates are
        // read), or else the shared store's.
        let mut local: Option<Arc<LocalRecords>> = None;
        let (records, queue): (Arc<dyn Records>, Arc<dyn Queue>) = match &backend {
            QueueBackend::Memory => {
                let records = local.insert(Arc::new(LocalRecords::new(limit, None, max_pending)));
                (records.clone(), Arc::new(MemoryQueue::new()))
            }
            QueueBackend::Sqlite => {
                let store = SqliteStore::open(&settings.database_path()).map_err(|e| EngineError(e.to_string()))?;
                let store = WriteThrough::new(Arc::new(store), templates);
                let records = local.insert(Arc::new(LocalRecords::new(limit, Some(store), max_pending)));
                (records.clone(), Arc::new(MemoryQueue::new()))
            }
            QueueBackend::Postgres(url) => {
                let store = PgStore::connect(url).await.map_err(|e| EngineError(e.to_string()))?;
                let queue = PgQueue::start(store.clone(), config.queue_lease, config.queue_poll, config.workers);
                let shared = Arc::new(SharedRecords::new(WriteThrough::new(store, templates), max_pending));
                tasks.push(tokio::spawn(shared.clone().sync_pending_budget(shutdown_rx.clone())));
                (shared, Arc::new(queue))
            }
        };
        let stats = records.stats().clone();

        let report = registry.rescan().await;
        if let Some(local) = &local {
            let restored = local.restore().await.map_err(|e| EngineError(e.to_string()))?;
            let pending = restored.jobs.len();
            queue.push(restored.jobs).await.map_err(|e| EngineError(e.to_string()))?;
            if restored.dispatches > 0 {
                info!(dispatches = restored.dispatches, pending_requests = pending, "restored from the store");
            }
        }
        tasks.push(tokio::spawn(prune(records.clone(), config.retention, shutdown_rx.clone())));
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
        self.records.campaign_stats(campaign).await
    }

    /// The stats of a template, like [`Engine::campaign_stats`].
    pub async fn template_stats(&self, template: &str) -> Result<Option<StatsView>, StoreError> {
        self.records.template_stats(template).await
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

/// Deletes finished dispatches past the retention period, now and then, from the store
/// and from memory; what they counted for leaves the campaign stats (a campaign with no
/// dispatch left is dropped).
async fn prune(records: Arc<dyn Records>, retention: Duration, mut shutdown: watch::Receiver<bool>) {
    let every = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
    loop {
        let before = SystemTime::now().checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH);
        match records.prune(before).await {
            Ok(0) => {}
            Ok(pruned) => info!(dispatches = pruned, "deleted finished dispatches past the retention period"),
            Err(e) => warn!("{e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}
