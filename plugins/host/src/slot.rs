//! One plugin name and its live version, which the plugins folder (`source`) replaces when
//! the file changes and every adapter built from it (`auth`, `transform`) reads at each call.

use std::sync::{Arc, RwLock};

use crate::engine::LoadedPlugin;

/// One plugin name and its live version. Authorizers and transformers hold the slot, so
/// replacing the file changes their behaviour without rebuilding templates.
pub struct PluginSlot {
    pub name: String,
    current: RwLock<Arc<LoadedPlugin>>,
}

impl PluginSlot {
    pub fn new(name: String, plugin: Arc<LoadedPlugin>) -> Self {
        Self { name, current: RwLock::new(plugin) }
    }

    pub fn current(&self) -> Arc<LoadedPlugin> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes `plugin` the live version.
    pub fn replace(&self, plugin: Arc<LoadedPlugin>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = plugin;
    }
}
