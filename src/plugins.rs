//! The plugins this build knows.

use hookgate_core::plugin::PluginRegistry;

pub fn registry() -> PluginRegistry {
    let mut registry = PluginRegistry::new();
    hookgate_auth::register_builtins(&mut registry);
    registry
}
