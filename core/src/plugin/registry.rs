//! The auth plugins a template can name: built-ins, registered at start, and plugin
//! sources whose set changes at run time (WASM plugins in `plugins/`).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::auth::AuthPlugin;
use super::transform::TransformPlugin;

/// A set of plugins that can change while the gateway runs.
pub trait PluginSource: Send + Sync {
    /// The auth plugin named `name`, if this source has one now.
    fn auth(&self, name: &str) -> Option<Arc<dyn AuthPlugin>>;

    /// The transform plugin named `name`, if this source has one now.
    fn transform(&self, name: &str) -> Option<Arc<dyn TransformPlugin>>;

    /// The names this source has now.
    fn names(&self) -> Vec<String>;
}

/// Auth plugins by name. A built-in wins over a source's plugin of the same name.
#[derive(Clone, Default)]
pub struct PluginRegistry {
    auth: BTreeMap<String, Arc<dyn AuthPlugin>>,
    sources: Vec<Arc<dyn PluginSource>>,
}

impl PluginRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register_auth(&mut self, plugin: Arc<dyn AuthPlugin>) {
        self.auth.insert(plugin.name().to_string(), plugin);
    }

    pub fn add_source(&mut self, source: Arc<dyn PluginSource>) {
        self.sources.push(source);
    }

    pub fn transform(&self, name: &str) -> Option<Arc<dyn TransformPlugin>> {
        self.sources.iter().find_map(|s| s.transform(name))
    }

    pub fn auth(&self, name: &str) -> Option<Arc<dyn AuthPlugin>> {
        self.auth.get(name).cloned().or_else(|| self.sources.iter().find_map(|s| s.auth(name)))
    }

    /// Every name a template can use now, sorted.
    pub fn auth_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.auth.keys().cloned().collect();
        for source in &self.sources {
            names.extend(source.names());
        }
        names.sort();
        names.dedup();
        names
    }
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRegistry").field("auth", &self.auth_names()).finish()
    }
}
