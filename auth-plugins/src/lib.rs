//! hookgate's built-in auth plugins: `none` (the template's custom headers only), `basic`
//! (`Authorization: Basic base64(username:password)`) and `oauth2` (password, client
//! credentials and JWT-assertion grants, with a token cache), and the RSA key store.

mod basic;
pub mod keys;
mod none;
pub mod oauth2;

use std::sync::Arc;

use hookgate_core::plugin::PluginRegistry;

pub use basic::{BasicAuth, BasicPlugin};
pub use none::NonePlugin;
pub use oauth2::OAuth2Plugin;

/// The JSON Schema of each built-in plugin's keys (besides `type`), by plugin name, for the
/// template schema (`hookgate schema template`). `none` takes no keys.
pub fn config_schemas() -> Vec<(&'static str, serde_json::Value)> {
    let schema = |s: schemars::Schema| s.to_value();
    let generator = || schemars::generate::SchemaSettings::draft2020_12().into_generator();
    vec![
        (
            "none",
            serde_json::json!({"type": "object", "additionalProperties": false, "description": "No auth header; credentials, if any, go in the template's `headers`."}),
        ),
        ("basic", schema(generator().into_root_schema_for::<basic::BasicConfig>())),
        ("oauth2", schema(generator().into_root_schema_for::<oauth2::config::OAuth2Config>())),
    ]
}

/// Registers every built-in auth plugin.
pub fn register_builtins(registry: &mut PluginRegistry) {
    registry.register_auth(Arc::new(NonePlugin));
    registry.register_auth(Arc::new(BasicPlugin));
    registry.register_auth(Arc::new(OAuth2Plugin::new()));
}

/// Deserializes a plugin's config, turning serde's message into one that names the key
/// but never repeats a value (values can be secrets).
pub(crate) fn parse_config<T: serde::de::DeserializeOwned>(
    config: &serde_json::Map<String, serde_json::Value>,
) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::Object(config.clone())).map_err(|e| {
        let message = e.to_string();
        if let Some(rest) = message.strip_prefix("unknown field `") {
            let key = rest.split('`').next().unwrap_or_default();
            format!(
                "`{key}` is not a key of this plugin; {}",
                rest.split_once(", ").map(|x| x.1).unwrap_or("see the README")
            )
        } else if let Some(rest) = message.strip_prefix("missing field `") {
            let key = rest.split('`').next().unwrap_or_default();
            format!("`{key}` is required")
        } else if message.starts_with("invalid type") {
            let expected = message.split(", expected ").nth(1).unwrap_or("another type");
            format!("a value has the wrong type: expected {expected}")
        } else {
            message
        }
    })
}
