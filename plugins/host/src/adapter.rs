//! What a WASM plugin's two adapters to `core`'s contracts (`auth` and `transform`) share:
//! the plugin (its slot and the engine); per template version, its instance pool with the
//! call context its config grants, and that config as JSON; and the check of a header the
//! plugin returns.

use std::fmt;
use std::sync::Arc;

use hookgate_core::plugin::BuildContext;
use hookgate_core::template::load::RESERVED_HEADERS;
use http::header::{HeaderName, HeaderValue};

use crate::bindings::hookgate::plugin::types::{Header, OutgoingRequest, TransformOutput};
use crate::engine::{CallError, PluginEngine};
use crate::pool::{InstancePool, Leased};
use crate::slot::PluginSlot;
use crate::state::CallContext;

/// A plugin of the plugins folder, as templates name it.
pub struct WasmPlugin {
    slot: Arc<PluginSlot>,
    engine: Arc<PluginEngine>,
}

impl WasmPlugin {
    pub fn new(slot: Arc<PluginSlot>, engine: Arc<PluginEngine>) -> Self {
        Self { slot, engine }
    }

    pub fn name(&self) -> &str {
        &self.slot.name
    }

    /// The plugin for one template version. Every key of the template's section but
    /// `type` is the plugin's config (as JSON); `allow_hosts`, `sign_keys` and
    /// `sign_active_key` also tell the host what the plugin may do (see [`call_context`]).
    pub fn bind(
        &self,
        ctx: &BuildContext<'_>,
        config: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<BoundPlugin, String> {
        let call = call_context(&self.slot.name, ctx, config)?;
        let config = serde_json::to_string(config).map_err(|e| e.to_string())?;
        Ok(BoundPlugin {
            slot: self.slot.clone(),
            engine: self.engine.clone(),
            pool: self.engine.pool(Arc::new(call)),
            config,
        })
    }
}

/// A plugin bound to one template version: its calls run on the live version of the
/// plugin, on an instance of this pool, with this config.
pub struct BoundPlugin {
    slot: Arc<PluginSlot>,
    engine: Arc<PluginEngine>,
    /// This template version's instances, and the context their calls share.
    pool: InstancePool,
    /// The plugin's config, as JSON.
    config: String,
}

impl BoundPlugin {
    /// The plugin's `authorize` export. The lease keeps the instance for the next call
    /// only if [kept](crate::Lease::keep) (after the caller checked the output).
    pub async fn authorize(&self, request: &OutgoingRequest) -> Result<Leased<'_, Vec<Header>>, CallError> {
        self.engine.authorize_in(&self.slot.current(), &self.pool, request, &self.config).await
    }

    /// The plugin's `transform` export, like [`BoundPlugin::authorize`].
    pub async fn transform(&self, payload: &[u8]) -> Result<Leased<'_, TransformOutput>, CallError> {
        self.engine.transform_in(&self.slot.current(), &self.pool, payload, &self.config).await
    }
}

impl fmt::Debug for BoundPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundPlugin").field("plugin", &self.slot.name).finish_non_exhaustive()
    }
}

/// The shared context of one template's calls, from the plugin's config: `allow_hosts` tells
/// the host which hosts `fetch` may reach; `sign_keys` which keys of the key store `sign`
/// may use, and `sign_active_key: true` whether it may use the active key (`key-id` none).
/// Each key must be in the key store now.
fn call_context(
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

/// Why a header a plugin returned cannot go on a request.
#[derive(Debug)]
pub enum BadHeader {
    /// Not a header name; the name as returned, made safe to quote.
    Name(String),
    /// One of the headers the gateway sets itself.
    Reserved(HeaderName),
    /// Not a header value (for this name).
    Value(HeaderName),
}

/// A header a plugin returned, checked: a valid name the gateway does not set itself, and
/// a valid value.
pub fn checked_header(Header { name, value }: Header) -> Result<(HeaderName, HeaderValue), BadHeader> {
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| BadHeader::Name(crate::text::name(&name)))?;
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(BadHeader::Reserved(name));
    }
    match HeaderValue::from_str(&value) {
        Ok(value) => Ok((name, value)),
        Err(_) => Err(BadHeader::Value(name)),
    }
}
