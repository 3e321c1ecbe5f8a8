//! A WASM plugin as an auth plugin of `core`: `authorize` runs the plugin's `authorize`
//! export in a fresh, limited instance for every request.

use std::sync::Arc;

use async_trait::async_trait;
use hookgate_core::plugin::{AuthError, AuthHeaders, AuthPlugin, Authorizer, BuildContext, OutgoingRequest};
use reqwest::header::{HeaderName, HeaderValue};

use crate::bindings::hookgate::plugin::types::{self, Header};
use crate::engine::PluginEngine;
use crate::source::PluginSlot;
use crate::state::CallContext;

pub struct WasmAuthPlugin {
    slot: Arc<PluginSlot>,
    engine: Arc<PluginEngine>,
}

impl WasmAuthPlugin {
    pub fn new(slot: Arc<PluginSlot>, engine: Arc<PluginEngine>) -> Self {
        Self { slot, engine }
    }
}

impl AuthPlugin for WasmAuthPlugin {
    fn name(&self) -> &str {
        &self.slot.name
    }

    /// Every key of the template's `auth` section but `type` is the plugin's config (as
    /// JSON); `allow_hosts` also tells the host which hosts `fetch` may reach.
    fn build(
        &self,
        ctx: &BuildContext<'_>,
        config: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Arc<dyn Authorizer>, String> {
        let call = call_context(&self.slot.name, ctx, config)?;
        let config = serde_json::to_string(config).map_err(|e| e.to_string())?;
        Ok(Arc::new(WasmAuthorizer {
            slot: self.slot.clone(),
            engine: self.engine.clone(),
            call: Arc::new(call),
            config,
        }))
    }
}

/// The shared context of one template's calls: `allow_hosts` from the plugin's config tells
/// the host which hosts `fetch` may reach.
pub(crate) fn call_context(
    plugin: &str,
    ctx: &BuildContext<'_>,
    config: &serde_json::Map<String, serde_json::Value>,
) -> Result<CallContext, String> {
    let allow_hosts = match config.get("allow_hosts") {
        None => Vec::new(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|h| {
                h.as_str().map(str::to_ascii_lowercase).ok_or("`allow_hosts` must be a list of host names".to_string())
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("`allow_hosts` must be a list of host names".into()),
    };
    let mut call = CallContext::new(plugin, ctx.template);
    call.keys = ctx.keys.cloned();
    call.http = Some(ctx.client.clone());
    call.allow_hosts = allow_hosts;
    call.timeout = ctx.timeout;
    Ok(call)
}

pub struct WasmAuthorizer {
    slot: Arc<PluginSlot>,
    engine: Arc<PluginEngine>,
    call: Arc<CallContext>,
    /// The plugin's config, as JSON.
    config: String,
}

impl std::fmt::Debug for WasmAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmAuthorizer").field("plugin", &self.slot.name).finish_non_exhaustive()
    }
}

#[async_trait]
impl Authorizer for WasmAuthorizer {
    async fn authorize(&self, request: &OutgoingRequest<'_>) -> Result<AuthHeaders, AuthError> {
        let outgoing = types::OutgoingRequest {
            template: request.template.to_string(),
            method: request.method.to_string(),
            url: request.url.to_string(),
            headers: request
                .headers
                .iter()
                .map(|(n, v)| Header { name: n.to_string(), value: String::from_utf8_lossy(v.as_bytes()).into_owned() })
                .collect(),
            body: request.body.to_vec(),
        };
        let plugin = self.slot.current();
        let headers = self
            .engine
            .authorize(&plugin, self.call.clone(), &outgoing, &self.config)
            .await
            .map_err(|e| AuthError { message: e.kind.to_string(), retryable: e.retryable() })?;
        let mut out = AuthHeaders::new();
        for Header { name, value } in headers {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                AuthError::permanent(format!("returned an invalid header name `{}`", name.escape_debug()))
            })?;
            let value = HeaderValue::from_str(&value)
                .map_err(|_| AuthError::permanent(format!("returned an invalid value for header `{header}`")))?;
            out.insert(header, value);
        }
        Ok(out)
    }
}
