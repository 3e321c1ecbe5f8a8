//! `auth: {type: oauth2, grant: ...}`: OAuth 2.0 access tokens on every webhook (the
//! reference document's "OAuth 2.0": password credentials, client credentials, and client
//! credentials with a signed JWT assertion).
//!
//! `config` holds the template keys, `endpoint` the token requests, `assertion` the JWT
//! client assertions, `cache` the per-template token cache.

mod assertion;
pub mod cache;
pub mod config;
pub mod endpoint;

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use hookgate_core::clock::rfc3339;
use hookgate_core::plugin::auth::mask_token;
use hookgate_core::plugin::{
    AuthError, AuthHeaders, AuthPlugin, Authorizer, BuildContext, OutgoingRequest, TokenInfo, Unauthorized,
};
use http::header::HeaderName;
use url::Url;

use self::assertion::AssertionSigner;
use self::cache::TokenCache;
use self::config::{Grant, OAuth2Config};
use self::endpoint::Endpoint;

/// The `oauth2` plugin. Token caches are shared by the versions of a template that have
/// the same credentials, so editing a template's URL or headers keeps its token, and
/// changing its credentials starts a new cache.
#[derive(Default)]
pub struct OAuth2Plugin {
    caches: Mutex<HashMap<(String, u64), Weak<TokenCache>>>,
}

impl OAuth2Plugin {
    pub fn new() -> Self {
        Self::default()
    }
}

#[derive(Debug)]
struct OAuth2Authorizer {
    cache: Arc<TokenCache>,
    header: HeaderName,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache").finish_non_exhaustive()
    }
}

#[async_trait]
impl Authorizer for OAuth2Authorizer {
    async fn authorize(&self, _request: &OutgoingRequest<'_>) -> Result<AuthHeaders, AuthError> {
        let token = self.cache.get().await?;
        let mut headers = AuthHeaders::new();
        headers.insert(self.header.clone(), token.header_value.clone());
        Ok(headers)
    }

    async fn unauthorized(&self, sent: &AuthHeaders) -> Unauthorized {
        if let Some(value) = sent.get(&self.header) {
            self.cache.reject(value);
        }
        Unauthorized::ResendOnce
    }

    async fn fetch_token(&self) -> Option<Result<TokenInfo, AuthError>> {
        Some(self.cache.fetch_now().await.map(|t| TokenInfo {
            masked: mask_token(t.access.expose()),
            token_type: t.token_type.clone(),
            scopes: t.scope.clone().or_else(|| self.cache.endpoint.scope.clone()),
            expires_in_secs: t.lifetime.as_secs(),
            expires_at: rfc3339(t.expires_at_wall),
            has_refresh_token: t.refresh.is_some(),
        }))
    }
}

impl AuthPlugin for OAuth2Plugin {
    fn name(&self) -> &str {
        "oauth2"
    }

    fn build(
        &self,
        ctx: &BuildContext<'_>,
        raw: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Arc<dyn Authorizer>, String> {
        let config: OAuth2Config = crate::parse_config(raw)?;
        config.validate()?;
        let parse_url = |key: &str, text: &str| -> Result<Url, String> {
            let url = Url::parse(text).map_err(|e| format!("`{key}` is not a valid URL: {e}"))?;
            ctx.client.policy().check_url(&url).map_err(|e| format!("`{key}`: destination refused: {e}"))?;
            Ok(url)
        };
        let token_url = parse_url("token_url", &config.token_url)?;
        let refresh_url = match &config.refresh_url {
            Some(u) => parse_url("refresh_url", u)?,
            None => token_url.clone(),
        };
        let header = HeaderName::from_bytes(config.header.as_bytes())
            .map_err(|_| "`header` is not a valid header name".to_string())?;
        let assertion = match config.grant {
            Grant::ClientCredentialsJwt => {
                let keys = ctx
                    .keys
                    .cloned()
                    .ok_or("`grant: client_credentials_jwt` needs the key store, which this gateway does not have")?;
                let assertion_config = config.assertion.unwrap_or_default();
                Some(AssertionSigner::new(keys, assertion_config, &config.client_id, token_url.as_str())?)
            }
            _ => None,
        };

        // The cache key: the template and everything that shapes its tokens.
        let mut hasher = DefaultHasher::new();
        serde_json::to_string(raw).unwrap_or_default().hash(&mut hasher);
        ctx.timeout.hash(&mut hasher);
        let key = (ctx.template.to_string(), hasher.finish());

        let endpoint = Endpoint {
            http: ctx.client.clone(),
            timeout: ctx.timeout,
            grant: config.grant,
            token_url,
            refresh_url,
            client_id: config.client_id,
            client_secret: config.client_secret,
            client_auth: config.client_auth,
            username: config.username,
            password: config.password,
            scope: (!config.scopes.is_empty()).then(|| config.scopes.join(" ")),
            expiry: config.expiry,
            token_field: config.token_field,
            refresh_token_field: config.refresh_token_field,
            expires_in_field: config.expires_in_field,
            prefix: config.prefix,
            assertion,
        };
        let mut caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        caches.retain(|_, weak| weak.strong_count() > 0);
        let cache = match caches.get(&key).and_then(Weak::upgrade) {
            Some(existing) => existing,
            None => {
                let cache = Arc::new(TokenCache::new(endpoint, ctx.template));
                caches.insert(key, Arc::downgrade(&cache));
                cache
            }
        };
        Ok(Arc::new(OAuth2Authorizer { cache, header }))
    }
}
