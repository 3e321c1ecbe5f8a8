//! One module per subcommand.

mod catch;
mod keys;
mod plugin;
mod schema;
mod send;
mod serve;
mod test;
mod token;
mod validate;

use std::path::Path;
use std::process::ExitCode;

use std::sync::Arc;

use hookgate_auth::keys::FileKeyStore;
use hookgate_core::config::Settings;
use hookgate_core::engine::{Engine, EngineOptions};
use hookgate_core::plugin::KeyStore;

use crate::cli::Command;

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { config } => serve::run(&config.config).await,
        Command::Validate { config, verify } => validate::run(&config.config, verify).await,
        Command::Send { template, payload, config } => send::run(&config.config, &template, &payload).await,
        Command::Test { template, config } => test::run(&config.config, &template).await,
        Command::Token { template, config } => token::run(&config.config, &template).await,
        Command::Keys { action, config } => keys::run(&config.config, action),
        Command::Plugin { action } => plugin::run(action).await,
        Command::Catch { listen, status } => catch::run(listen, status).await,
        Command::Schema { of } => schema::run(of),
    }
}

/// Loads the settings or says what is wrong with them.
fn load_settings(dir: &Path) -> anyhow::Result<Settings> {
    Settings::load(dir).map_err(|e| anyhow::anyhow!("{e}"))
}

/// An engine for one-shot commands (`send`, `test`): no watcher, no on-load verification.
async fn one_shot_engine(dir: &Path) -> anyhow::Result<Engine> {
    let settings = load_settings(dir)?;
    crate::logging::init(&settings.config.log, settings.config.log_format);
    let key_store = key_store(&settings);
    let (plugins, _wasm) = crate::plugins::load(&settings).await?;
    let (engine, _report) = Engine::start(
        settings,
        plugins,
        Some(key_store),
        EngineOptions { watch: false, verify: false, persist: false },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(engine)
}

/// The key store in `data_dir/keys/`.
fn key_store(settings: &Settings) -> Arc<dyn KeyStore> {
    Arc::new(FileKeyStore::open(&settings.keys_dir(), settings.config.keys.grace))
}
