//! The engine: the registry, the dispatcher, the queue and its workers, wired together.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::config::{QueueBackend, Settings};
use crate::delivery::client::HttpClient;
use crate::delivery::worker::{self, WorkerContext};
use crate::dispatch::Dispatcher;
use crate::plugin::{KeyStore, PluginRegistry};
use crate::queue::Queue;
use crate::queue::memory::MemoryQueue;
use crate::records::Records;
use crate::stats::Stats;
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
            config_dir: settings.dir.clone(),
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
        let queue: Arc<dyn Queue> = match config.queue {
            QueueBackend::Memory => Arc::new(MemoryQueue::new()),
        };
        let records = Arc::new(Records::new(config.limits.dispatch_records));
        let stats = Arc::new(Stats::new());
        let (shutdown, shutdown_rx) = watch::channel(false);

        let report = registry.rescan().await;
        let mut tasks = Vec::new();
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
        let ctx = Arc::new(WorkerContext {
            client: client.clone(),
            queue: queue.clone(),
            records: records.clone(),
            stats: stats.clone(),
            backoff: config.backoff.clone(),
            destinations: crate::delivery::destinations::DestinationLimits::new(config.destinations.clone()),
        });
        for _ in 0..config.workers {
            tasks.push(tokio::spawn(worker::run(ctx.clone(), shutdown_rx.clone())));
        }
        info!(
            templates = report.loaded.len(),
            errors = report.errors.len(),
            workers = config.workers,
            "engine started"
        );
        let dispatcher = Dispatcher {
            registry: registry.clone(),
            queue: queue.clone(),
            records: records.clone(),
            stats: stats.clone(),
        };
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

    /// Stops taking jobs and watching files; returns when the deliveries in progress have
    /// finished. Jobs still queued stay in the queue.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }
}
