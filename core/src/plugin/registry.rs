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

    /// Each plugin of this source and its state, for `GET /v1/plugins`.
    fn statuses(&self) -> Vec<PluginStatus> {
        Vec::new()
    }
}

/// A plugin as `GET /v1/plugins` shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PluginStatus {
    pub name: String,
    /// `built-in` or `wasm`.
    #[schema(value_type = String, examples("built-in", "wasm"))]
    pub kind: &'static str,
    /// `active`, or `invalid` when the latest file did not load (`error` says why; a
    /// previous version may still be live: `sha256` is that version's).
    #[schema(value_type = String, examples("active", "invalid"))]
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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

    /// Every plugin and its state: the built-ins, then each source's.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        let mut all: Vec<PluginStatus> = self
            .auth
            .keys()
            .map(|name| PluginStatus {
                name: name.clone(),
                kind: "built-in",
                state: "active",
                sha256: None,
                error: None,
            })
            .collect();
        for source in &self.sources {
            all.extend(source.statuses());
        }
        all
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
