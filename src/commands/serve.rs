//! `hookgate serve`: the gateway.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use hookgate_core::engine::{Engine, EngineOptions};
use tracing::info;

pub async fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    let settings = super::load_settings(dir)?;
    crate::logging::init(&settings.config.log);
    let listen = settings.config.listen;
    if !listen.ip().is_loopback() && settings.config.admin_token.as_ref().is_none_or(|t| t.is_empty()) {
        anyhow::bail!(
            "refusing to listen on {listen} without an admin token: set `admin_token` in {} \
             (or HOOKGATE_ADMIN_TOKEN), or listen on a loopback address such as 127.0.0.1",
            dir.join("hookgate.yaml").display()
        );
    }
    let data_dir = settings.data_dir();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;

    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let key_store = super::key_store(&settings);
    let plugins_dir = settings.plugins_dir();
    std::fs::create_dir_all(&plugins_dir).with_context(|| format!("cannot create {}", plugins_dir.display()))?;
    let (plugins, wasm) = crate::plugins::load(&settings).await?;
    let (engine, _report) =
        Engine::start(settings, plugins, Some(key_store), EngineOptions { watch: true, verify: true, persist: true })
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    // A plugin file that changes is reloaded; templates that did not load (perhaps for a
    // plugin that was missing) are tried again.
    let registry = engine.registry.clone();
    engine
        .watch_folder(
            &plugins_dir,
            Arc::new(move || {
                let (wasm, registry) = (wasm.clone(), registry.clone());
                Box::pin(async move {
                    wasm.rescan().await;
                    registry.retry_invalid().await;
                })
            }),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let engine = Arc::new(engine);
    let app = crate::api::router(engine.clone());
    info!("listening on http://{}", listener.local_addr()?);
    // On SIGTERM the API stops taking requests and the workers stop claiming jobs at once;
    // deliveries in progress get the grace period, and what is left stays queued.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(until_stopped(stopped.clone()));
    let grace = engine.settings.config.shutdown_grace;
    let drain = async {
        until_stopped(stopped).await;
        info!("shutting down: finishing deliveries in progress (grace {grace:?}); the rest stays queued");
        engine.shutdown(grace).await;
    };
    let (served, ()) = tokio::join!(server, drain);
    served?;
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
