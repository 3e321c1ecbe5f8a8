//! The plugins this gateway knows: the built-ins and the WASM plugins of `config/plugins/`.

use std::sync::Arc;

use hookgate_core::config::Settings;
use hookgate_core::plugin::PluginRegistry;
use hookgate_plugin_host::{PluginEngine, WasmPlugins};

/// The built-in plugins only.
pub fn builtins() -> PluginRegistry {
    let mut registry = PluginRegistry::new();
    hookgate_auth::register_builtins(&mut registry);
    registry
}

/// The built-ins plus the WASM plugins folder, loaded once (compiled plugins are cached
/// in `data_dir/plugin-cache/`).
pub async fn load(settings: &Settings) -> anyhow::Result<(PluginRegistry, Arc<WasmPlugins>)> {
    let engine = PluginEngine::new(settings.config.plugins.clone(), Some(settings.plugin_cache_dir()))
        .map_err(|e| anyhow::anyhow!(e))?;
    let wasm = WasmPlugins::new(Arc::new(engine), &settings.plugins_dir());
    wasm.rescan().await;
    let mut registry = builtins();
    registry.add_source(wasm.clone());
    Ok((registry, wasm))
}
