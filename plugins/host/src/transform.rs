//! A WASM plugin as a transform plugin of `core`: `transform` plans the requests of a
//! payload; each must stay on the template URL's origin.

use std::sync::Arc;

use async_trait::async_trait;
use hookgate_core::plugin::transform::same_origin;
use hookgate_core::plugin::{
    AuthError, PlannedRequest, RequestTarget, TransformContext, TransformPlugin, Transformed, Transformer,
};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};

use crate::auth::call_context;
use crate::bindings::hookgate::plugin::types::Header;
use crate::engine::PluginEngine;
use crate::source::PluginSlot;
use crate::state::CallContext;

pub struct WasmTransformPlugin {
    slot: Arc<PluginSlot>,
    engine: Arc<PluginEngine>,
}

impl WasmTransformPlugin {
    pub fn new(slot: Arc<PluginSlot>, engine: Arc<PluginEngine>) -> Self {
        Self { slot, engine }
    }
}

impl TransformPlugin for WasmTransformPlugin {
    fn name(&self) -> &str {
        &self.slot.name
    }

    fn build(
        &self,
        ctx: &TransformContext<'_>,
        config: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Arc<dyn Transformer>, String> {
        Ok(Arc::new(WasmTransformer {
            slot: self.slot.clone(),
            engine: self.engine.clone(),
            call: Arc::new(call_context(&self.slot.name, &ctx.build, config)?),
            config: serde_json::to_string(config).map_err(|e| e.to_string())?,
            url: ctx.url.clone(),
            headers: ctx.headers.clone(),
        }))
    }
}

pub struct WasmTransformer {
    slot: Arc<PluginSlot>,
    engine: Arc<PluginEngine>,
    call: Arc<CallContext>,
    config: String,
    /// The template's URL (the allowed origin) and headers (the base of every request's).
    url: Url,
    headers: HeaderMap,
}

impl std::fmt::Debug for WasmTransformer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmTransformer").field("plugin", &self.slot.name).finish_non_exhaustive()
    }
}

#[async_trait]
impl Transformer for WasmTransformer {
    async fn transform(&self, payload: &[u8]) -> Result<Transformed, AuthError> {
        let plugin = self.slot.current();
        let output = self
            .engine
            .transform(&plugin, self.call.clone(), payload, &self.config)
            .await
            .map_err(|e| AuthError { message: e.kind.to_string(), retryable: e.retryable() })?;
        let mut requests = Vec::with_capacity(output.requests.len());
        for (i, r) in output.requests.into_iter().enumerate() {
            let bad = |why: String| AuthError::permanent(format!("request {i}: {why}"));
            let method = Method::from_bytes(r.method.as_bytes())
                .map_err(|_| bad(format!("`{}` is not an HTTP method", r.method)))?;
            let url = Url::parse(&r.url).map_err(|e| bad(format!("not a valid URL: {e}")))?;
            if !same_origin(&self.url, &url) {
                return Err(bad(format!(
                    "{}://{} is not the template URL's origin; a transform may only send there",
                    url.scheme(),
                    url.host_str().unwrap_or_default()
                )));
            }
            let mut headers = self.headers.clone();
            for Header { name, value } in r.headers {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| bad(format!("invalid header name `{}`", name.escape_debug())))?;
                let mut value =
                    HeaderValue::from_str(&value).map_err(|_| bad(format!("invalid value for header `{name}`")))?;
                value.set_sensitive(true);
                headers.insert(name, value);
            }
            requests.push(PlannedRequest {
                target: Arc::new(RequestTarget { method, url, headers }),
                body: r.body.into(),
                profiles: r.profiles as usize,
            });
        }
        Ok(Transformed { requests, skipped: output.skipped as usize })
    }
}
