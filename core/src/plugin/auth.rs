//! The auth plugin contract.
//!
//! A plugin is a factory ([`AuthPlugin`]) that turns a template's `auth` section into an
//! [`Authorizer`] once, when the template loads. The authorizer is then called for every
//! outgoing request and may keep state across calls (a token cache), so that OAuth and WASM
//! plugins fit without changes here:
//! - [`Authorizer::authorize`] is async and may do network I/O (fetch a token);
//! - it sees the whole request, body included (so a plugin can sign it);
//! - [`Authorizer::unauthorized`] tells the plugin that the destination answered 401 to the
//!   headers it produced, so it can drop a cached token and ask for one resend.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use http::Method;
use http::header::{HeaderName, HeaderValue};
use url::Url;

/// The request a template is about to send, as an auth plugin sees it.
#[derive(Debug)]
pub struct OutgoingRequest<'a> {
    pub template: &'a str,
    pub method: &'a Method,
    pub url: &'a Url,
    /// The template's own headers (custom headers, `Content-Type`).
    pub headers: &'a http::header::HeaderMap,
    pub body: &'a crate::body::RequestBody,
}

/// Headers an authorizer adds to a request. Values are marked sensitive, so `Debug` and
/// HTTP/2 header compression treat them as secrets.
#[derive(Clone, Default)]
pub struct AuthHeaders(Vec<(HeaderName, HeaderValue)>);

impl AuthHeaders {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a header; the value is marked sensitive.
    pub fn insert(&mut self, name: HeaderName, mut value: HeaderValue) {
        value.set_sensitive(true);
        self.0.push((name, value));
    }

    pub fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.0.iter().map(|(n, v)| (n, v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for AuthHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(n, _)| format!("{n}: [redacted]"))).finish()
    }
}

/// Why an authorizer could not produce headers. The message must never contain a secret:
/// it becomes a delivery's failure reason and is shown in stats and the API.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AuthError {
    pub message: String,
    /// Whether trying again later can help (a token endpoint that timed out: yes; a
    /// rejected client secret: no).
    pub retryable: bool,
}

impl AuthError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false }
    }
}

/// What to do after the destination answered 401 to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthorized {
    /// Nothing the plugin can change: the 401 is the delivery's answer.
    Final,
    /// The plugin dropped the credential that was sent; authorize again and resend once.
    ResendOnce,
}

/// Produces the auth headers of one template's requests. Built once per template version.
#[async_trait]
pub trait Authorizer: Send + Sync + fmt::Debug {
    async fn authorize(&self, request: &OutgoingRequest<'_>) -> Result<AuthHeaders, AuthError>;

    /// The destination answered 401 to a request that carried `sent`.
    async fn unauthorized(&self, sent: &AuthHeaders) -> Unauthorized {
        let _ = sent;
        Unauthorized::Final
    }

    /// Obtains a new token now (the reference document's "Generate"), for plugins that
    /// use tokens; `None` for those that do not.
    async fn fetch_token(&self) -> Option<Result<TokenInfo, AuthError>> {
        None
    }
}

/// An authorizer that adds no header: for tests of what surrounds auth.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct NoHeaders;

#[cfg(test)]
#[async_trait]
impl Authorizer for NoHeaders {
    async fn authorize(&self, _: &OutgoingRequest<'_>) -> Result<AuthHeaders, AuthError> {
        Ok(AuthHeaders::new())
    }
}

/// What "Generate" shows of a token: never the token itself.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    /// The first and last characters only (`eyJh…x9Qk`), or `****` for short tokens.
    pub masked: String,
    pub token_type: Option<String>,
    pub scopes: Option<String>,
    pub expires_in_secs: u64,
    /// RFC 3339.
    pub expires_at: String,
    pub has_refresh_token: bool,
}

/// `eyJh…x9Qk`: enough to tell tokens apart, not enough to use one.
pub fn mask_token(token: &str) -> String {
    let chars: Vec<char> = token.chars().collect();
    if chars.len() < 16 {
        return "****".into();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail} ({} characters)", chars.len())
}

/// Everything a plugin gets besides its own config when a template is built.
#[derive(Debug, Clone)]
pub struct BuildContext<'a> {
    /// The template's name.
    pub template: &'a str,
    /// The shared outgoing HTTP client (token requests go through it, so the network policy
    /// applies to them too; it follows no redirects).
    pub client: &'a crate::delivery::client::HttpClient,
    /// The template's per-attempt timeout; a plugin's own requests obey it too.
    pub timeout: std::time::Duration,
    /// The signing-key store, when the gateway has one.
    pub keys: Option<&'a Arc<dyn super::keys::KeyStore>>,
}

/// A named auth plugin: builds an [`Authorizer`] from the template's `auth` section
/// (every key but `type`, with `${env:..}`/`${file:..}` references already resolved).
pub trait AuthPlugin: Send + Sync {
    fn name(&self) -> &str;

    /// Builds the authorizer, or explains what is wrong with the config. The explanation
    /// names the key; it must not repeat a value (values can be secrets).
    fn build(
        &self,
        ctx: &BuildContext<'_>,
        config: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Arc<dyn Authorizer>, String>;
}
