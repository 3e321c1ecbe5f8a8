//! `auth: {type: basic, username: .., password: ..}`: every request carries
//! `Authorization: Basic base64(username:password)` (RFC 7617), computed once at load.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hookgate_core::Secret;
use hookgate_core::plugin::auth::BuildContext;
use hookgate_core::plugin::{AuthError, AuthHeaders, AuthPlugin, Authorizer, OutgoingRequest};
use http::header::{AUTHORIZATION, HeaderValue};
use serde::Deserialize;

pub struct BasicPlugin;

/// `auth: {type: basic, username, password}`: `Authorization: Basic base64(username:password)`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BasicConfig {
    /// The user name; it cannot contain `:`.
    username: String,
    /// The password (a `${env:..}` or `${file:..}` reference).
    password: Secret,
}

/// The Basic authorizer: the header value is built once and marked sensitive.
#[derive(Debug)]
pub struct BasicAuth {
    header: HeaderValue,
}

impl BasicAuth {
    pub fn new(username: &str, password: &Secret) -> Result<Self, String> {
        if username.contains(':') {
            return Err("`username` cannot contain `:` (RFC 7617: the first `:` separates it from the password)".into());
        }
        let encoded = STANDARD.encode(format!("{username}:{}", password.expose()));
        let mut header = HeaderValue::from_str(&format!("Basic {encoded}"))
            .map_err(|_| "`password`: cannot be encoded".to_string())?;
        header.set_sensitive(true);
        Ok(Self { header })
    }
}

#[async_trait]
impl Authorizer for BasicAuth {
    async fn authorize(&self, _request: &OutgoingRequest<'_>) -> Result<AuthHeaders, AuthError> {
        let mut headers = AuthHeaders::new();
        headers.insert(AUTHORIZATION, self.header.clone());
        Ok(headers)
    }
}

impl AuthPlugin for BasicPlugin {
    fn name(&self) -> &str {
        "basic"
    }

    fn build(
        &self,
        _ctx: &BuildContext<'_>,
        config: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Arc<dyn Authorizer>, String> {
        let config: BasicConfig = crate::parse_config(config)?;
        if config.username.is_empty() {
            return Err("`username` must not be empty".into());
        }
        Ok(Arc::new(BasicAuth::new(&config.username, &config.password)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookgate_core::delivery::client::HttpClient;
    use hookgate_core::network::NetworkPolicy;
    use serde_json::json;

    fn build(config: serde_json::Value) -> Result<Arc<dyn Authorizer>, String> {
        let client = HttpClient::new(NetworkPolicy::default()).unwrap();
        let ctx =
            BuildContext { template: "t", client: &client, timeout: std::time::Duration::from_secs(5), keys: None };
        BasicPlugin.build(&ctx, config.as_object().unwrap())
    }

    #[tokio::test]
    async fn header_is_base64_of_user_colon_password() {
        // RFC 7617 §2's example.
        let auth = build(json!({"username": "Aladdin", "password": "open sesame"})).unwrap();
        let (method, url, headers, body) =
            (http::Method::POST, "http://x/".parse().unwrap(), Default::default(), Default::default());
        let request = OutgoingRequest { template: "t", method: &method, url: &url, headers: &headers, body: &body };
        let headers = auth.authorize(&request).await.unwrap();
        let (name, value) = headers.iter().next().unwrap();
        assert_eq!(name, AUTHORIZATION);
        assert_eq!(value.to_str().unwrap(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(value.is_sensitive());
        assert!(!format!("{headers:?}").contains("QWxh"));
        assert!(!format!("{auth:?}").contains("QWxh"));
    }

    #[test]
    fn config_errors_name_the_key_not_the_value() {
        let e = build(json!({"username": "u"})).unwrap_err();
        assert_eq!(e, "`password` is required");
        let e = build(json!({"username": "u", "password": "hunter22", "pasword": "x"})).unwrap_err();
        assert!(e.starts_with("`pasword` is not a key"), "{e}");
        let e = build(json!({"username": "u", "password": 12345678})).unwrap_err();
        assert!(!e.contains("12345678"), "{e}");
        assert!(build(json!({"username": "a:b", "password": "p"})).unwrap_err().contains("`:`"));
    }
}
