//! A WASM plugin as an auth plugin of `core`: `authorize` runs the plugin's `authorize`
//! export, with fresh limits for every request, on an instance of the template version's
//! pool (see [`crate::pool`]).

use std::sync::Arc;

use async_trait::async_trait;
use hookgate_core::plugin::{AuthError, AuthHeaders, AuthPlugin, Authorizer, BuildContext, OutgoingRequest};

use crate::adapter::{BadHeader, BoundPlugin, WasmPlugin, checked_header};
use crate::bindings::hookgate::plugin::types::{self, Header};
use crate::pool::Leased;

pub struct WasmAuthPlugin(WasmPlugin);

impl WasmAuthPlugin {
    pub fn new(plugin: WasmPlugin) -> Self {
        Self(plugin)
    }
}

impl AuthPlugin for WasmAuthPlugin {
    fn name(&self) -> &str {
        self.0.name()
    }

    /// See [`WasmPlugin::bind`].
    fn build(
        &self,
        ctx: &BuildContext<'_>,
        config: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Arc<dyn Authorizer>, String> {
        Ok(Arc::new(WasmAuthorizer(self.0.bind(ctx, config)?)))
    }
}

#[derive(Debug)]
pub struct WasmAuthorizer(BoundPlugin);

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
        let Leased { output: headers, lease } = (self.0.authorize(&outgoing).await)
            .map_err(|e| AuthError { message: e.kind.to_string(), retryable: e.retryable() })?;
        // Headers the gateway cannot use are the plugin's error: the instance is dropped
        // with the lease (it is kept only after a clean call).
        let mut out = AuthHeaders::new();
        for header in headers {
            let (name, value) = checked_header(header).map_err(|bad| {
                AuthError::permanent(match bad {
                    BadHeader::Name(name) => format!("returned an invalid header name `{name}`"),
                    BadHeader::Reserved(name) => {
                        format!("returned header `{name}`, which the gateway sets itself; a plugin may not")
                    }
                    BadHeader::Value(name) => format!("returned an invalid value for header `{name}`"),
                })
            })?;
            out.insert(name, value);
        }
        lease.keep();
        Ok(out)
    }
}
