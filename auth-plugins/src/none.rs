//! `auth: {type: none}`: no auth header; credentials, if any, go in the template's headers
//! (the reference document's "No authentication").

use std::sync::Arc;

use async_trait::async_trait;
use hookgate_core::plugin::auth::BuildContext;
use hookgate_core::plugin::{AuthError, AuthHeaders, AuthPlugin, Authorizer, OutgoingRequest};

pub struct NonePlugin;

#[derive(Debug)]
struct NoAuth;

#[async_trait]
impl Authorizer for NoAuth {
    async fn authorize(&self, _request: &OutgoingRequest<'_>) -> Result<AuthHeaders, AuthError> {
        Ok(AuthHeaders::new())
    }
}

impl AuthPlugin for NonePlugin {
    fn name(&self) -> &str {
        "none"
    }

    fn build(
        &self,
        _ctx: &BuildContext<'_>,
        config: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Arc<dyn Authorizer>, String> {
        if let Some(key) = config.keys().next() {
            return Err(format!(
                "`{key}` is not a key of the `none` plugin, which takes no keys (put credentials in `headers`)"
            ));
        }
        Ok(Arc::new(NoAuth))
    }
}
