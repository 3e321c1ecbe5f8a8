//! The auth plugins a template can name.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::auth::AuthPlugin;

/// Auth plugins by name. Built-ins are registered at start; WASM plugins join later.
#[derive(Clone, Default)]
pub struct PluginRegistry {
    auth: BTreeMap<String, Arc<dyn AuthPlugin>>,
}

impl PluginRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register_auth(&mut self, plugin: Arc<dyn AuthPlugin>) {
        self.auth.insert(plugin.name().to_string(), plugin);
    }

    pub fn auth(&self, name: &str) -> Option<&Arc<dyn AuthPlugin>> {
        self.auth.get(name)
    }

    pub fn auth_names(&self) -> impl Iterator<Item = &str> {
        self.auth.keys().map(String::as_str)
    }
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRegistry")
            .field("auth", &self.auth.keys().collect::<Vec<_>>())
            .finish()
    }
}
