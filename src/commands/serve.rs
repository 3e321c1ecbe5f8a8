//! `hookgate serve`: the gateway.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use hookgate_core::config::Config;
use hookgate_core::engine::{Engine, EngineOptions};
use hookgate_core::network::{AddressClass, AllowRule, NetworkPolicy, classify};
use tracing::{info, warn};

/// The shortest admin token `serve` accepts: 16 characters. A random one of 32 hex digits
/// (`openssl rand -hex 32` gives 64) is far out of reach of guessing over HTTP; a short,
/// human-chosen one is not.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 16;

pub async fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    let settings = super::load_settings(dir)?;
    crate::logging::init(&settings.config.log, settings.config.log_format);
    let listen = settings.config.listen;
    if !listen.ip().is_loopback() && settings.config.admin_token.as_ref().is_none_or(|t| t.is_empty()) {
        anyhow::bail!(
            "refusing to listen on {listen} without an admin token: set `admin_token` in {} \
             (or HOOKGATE_ADMIN_TOKEN), or listen on a loopback address such as 127.0.0.1",
            dir.join("hookgate.yaml").display()
        );
    }
    if let Some(token) = &settings.config.admin_token {
        let chars = token.expose().chars().count();
        if chars < MIN_ADMIN_TOKEN_CHARS {
            anyhow::bail!(
                "refusing to start: `admin_token` (in {} or HOOKGATE_ADMIN_TOKEN) has {chars} characters; it needs at \
                 least {MIN_ADMIN_TOKEN_CHARS} (make a random one with `openssl rand -hex 32`), or remove it to run \
                 without a token on a loopback address",
                dir.join("hookgate.yaml").display()
            );
        }
    }
    if let Some(warning) = internal_destinations_warning(&settings.config) {
        warn!("{warning}");
    }
    let data_dir = settings.data_dir();
    create_private_dir(&data_dir)?;

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

/// Creates `dir` (and missing parents) with mode 0700: it holds the signing keys and the
/// database. An existing `dir` that others may read or enter is tightened to 0700, with a
/// warning; if that is not possible (not its owner), the warning says so and `serve` goes on.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).with_context(|| format!("cannot create data_dir {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir)
            .with_context(|| format!("cannot read data_dir {}", dir.display()))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
                Ok(()) => warn!(
                    "data_dir {} had mode {mode:04o}; tightened to 0700 (it holds the signing keys and the database)",
                    dir.display()
                ),
                Err(e) => warn!(
                    "data_dir {} has mode {mode:04o}, so other users may read the signing keys and the database, \
                     and it cannot be changed to 0700: {e}",
                    dir.display()
                ),
            }
        }
    }
    Ok(())
}

/// A warning when `network.allow` opens loopback, private or link-local destinations while
/// the API listens beyond loopback: whoever can write a template through the API can then
/// make the gateway send requests to this machine's or the internal network's services.
fn internal_destinations_warning(config: &Config) -> Option<String> {
    if config.listen.ip().is_loopback() {
        return None;
    }
    let opened: Vec<String> = config
        .network
        .allow
        .iter()
        .filter(|rule| {
            let mut one = config.network.clone();
            one.allow = vec![(*rule).clone()];
            opens_internal(&one)
        })
        .map(describe)
        .collect();
    (!opened.is_empty()).then(|| {
        format!(
            "`network.allow` opens loopback or private destinations ({}) while the API listens on {}: anyone who \
             can write a template through the API can make the gateway send requests to services on this machine \
             or the internal network; allow only the addresses your destinations use",
            opened.join(", "),
            config.listen
        )
    })
}

/// A `network.allow` entry as it is written in hookgate.yaml.
fn describe(rule: &AllowRule) -> String {
    match rule {
        AllowRule::Loopback => "loopback".into(),
        AllowRule::Private => "private".into(),
        AllowRule::LinkLocal => "link-local".into(),
        AllowRule::Cidr { net, prefix } => format!("{net}/{prefix}"),
        #[allow(unreachable_patterns)]
        other => format!("{other:?}"),
    }
}

/// Whether `policy` allows any loopback, private or link-local address.
fn opens_internal(policy: &NetworkPolicy) -> bool {
    let samples = [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.0.1",
        "100.64.0.1",
        "169.254.169.254",
        "::1",
        "fc00::1",
        "fe80::1",
    ];
    let named = policy.allow.iter().filter_map(|rule| match rule {
        AllowRule::Cidr { net, .. } => Some(*net),
        _ => None,
    });
    samples
        .iter()
        .filter_map(|s| s.parse().ok())
        .chain(named)
        .any(|ip| classify(ip) != AddressClass::Public && policy.check(ip).is_ok())
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
