//! A WASM plugin as an auth plugin of `core`: `authorize` runs the plugin's `authorize`
//! export, with fresh limits for every request, on an instance of the template version's
//! pool (see [`crate::pool`]).

use std::sync::Arc;

use async_trait::async_trait;
use hookgate_core::plugin::{AuthError, AuthHeaders, AuthPlugin, Authorizer, BuildContext, OutgoingRequest};
use hookgate_core::template::load::RESERVED_HEADERS;
use reqwest::header::{HeaderName, HeaderValue};

use crate::bindings::hookgate::plugin::types::{self, Header};
use crate::engine::PluginEngine;
use crate::pool::{InstancePool, Leased};
use crate::source::PluginSlot;
use crate::state::CallContext;
use crate::text;

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
    /// JSON); `allow_hosts`, `sign_keys` and `sign_active_key` also tell the host what the
    /// plugin may do (see [`call_context`]).
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
            pool: self.engine.pool(Arc::new(call)),
            config,
        }))
    }
}

/// The shared context of one template's calls, from the plugin's config: `allow_hosts` tells
/// the host which hosts `fetch` may reach; `sign_keys` which keys of the key store `sign`
/// may use, and `sign_active_key: true` whether it may use the active key (`key-id` none).
/// Each key must be in the key store now.
pub(crate) fn call_context(
    plugin: &str,
    ctx: &BuildContext<'_>,
    config: &serde_json::Map<String, serde_json::Value>,
) -> Result<CallContext, String> {
    let allow_hosts =
        string_list(config, "allow_hosts", "host names")?.into_iter().map(|h| h.to_ascii_lowercase()).collect();
    let sign_keys = string_list(config, "sign_keys", "key ids")?;
    let sign_active_key = match config.get("sign_active_key") {
        None => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => return Err("`sign_active_key` must be `true` or `false`".into()),
    };
    if !sign_keys.is_empty() || sign_active_key {
        let what = if sign_keys.is_empty() { "sign_active_key" } else { "sign_keys" };
        let keys = ctx.keys.ok_or_else(|| format!("`{what}`: this gateway has no key store"))?;
        for kid in &sign_keys {
            keys.key(kid).map_err(|e| format!("`sign_keys`: {e}"))?;
        }
        if sign_active_key {
            keys.active().map_err(|e| format!("`sign_active_key`: {e}"))?;
        }
    }
    let mut call = CallContext::new(plugin, ctx.template);
    call.keys = ctx.keys.cloned();
    call.sign_keys = sign_keys;
    call.sign_active_key = sign_active_key;
    call.http = Some(ctx.client.clone());
    call.allow_hosts = allow_hosts;
    call.timeout = ctx.timeout;
    Ok(call)
}

/// The list of strings under `key` (none when absent).
fn string_list(
    config: &serde_json::Map<String, serde_json::Value>,
    key: &str,
    what: &str,
) -> Result<Vec<String>, String> {
    let wrong = || format!("`{key}` must be a list of {what}");
    match config.get(key) {
        None => Ok(Vec::new()),
        Some(serde_json::Value::Array(items)) => {
            items.iter().map(|item| item.as_str().map(str::to_string).ok_or_else(wrong)).collect()
        }
        Some(_) => Err(wrong()),
    }
}

pub struct WasmAuthorizer {
    slot: Arc<PluginSlot>,
    engine: Arc<PluginEngine>,
    /// This template version's instances, and the context their calls share.
    pool: InstancePool,
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
        let Leased { output: headers, lease } = self
            .engine
            .authorize_in(&plugin, &self.pool, &outgoing, &self.config)
            .await
            .map_err(|e| AuthError { message: e.kind.to_string(), retryable: e.retryable() })?;
        // Headers the gateway cannot use are the plugin's error: the instance is dropped
        // with the lease (it is kept only after a clean call).
        let mut out = AuthHeaders::new();
        for Header { name, value } in headers {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                AuthError::permanent(format!("returned an invalid header name `{}`", text::name(&name)))
            })?;
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Err(AuthError::permanent(format!(
                    "returned header `{header}`, which the gateway sets itself; a plugin may not"
                )));
            }
            let value = HeaderValue::from_str(&value)
                .map_err(|_| AuthError::permanent(format!("returned an invalid value for header `{header}`")))?;
            out.insert(header, value);
        }
        lease.keep();
        Ok(out)
    }
}
