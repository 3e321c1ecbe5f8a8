//! The token cache of one template's credentials: one token request per token lifetime
//! however many deliveries run at once (single flight), renewed ahead of expiry, dropped
//! when the destination rejects it, and no stampede when the token endpoint fails.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hookgate_core::plugin::AuthError;
use http::header::HeaderValue;
use tracing::{info, warn};

use super::config::Grant;
use super::endpoint::{Endpoint, RefreshError, Token};

/// The longest a failed token request keeps later ones from being made.
const MAX_FAILURE_HOLD: Duration = Duration::from_secs(30);
/// The most a token is renewed ahead of its expiry.
const MAX_SKEW: Duration = Duration::from_secs(30);

struct Cached {
    token: Arc<Token>,
    /// The destination answered 401 to it.
    rejected: bool,
}

#[derive(Default)]
struct Flight {
    /// The last failure, answered to every caller until `until`.
    failure: Option<(Instant, AuthError)>,
    failures: u32,
}

pub struct TokenCache {
    pub endpoint: Endpoint,
    template: String,
    current: RwLock<Option<Cached>>,
    /// Held while a token request runs: the single flight.
    flight: tokio::sync::Mutex<Flight>,
}

impl TokenCache {
    pub fn new(endpoint: Endpoint, template: &str) -> Self {
        Self {
            endpoint,
            template: template.to_string(),
            current: RwLock::new(None),
            flight: tokio::sync::Mutex::new(Flight::default()),
        }
    }

    /// The cached token if it is usable for a while yet: renewal starts `skew` before
    /// expiry, a tenth of the lifetime but at most 30 s.
    fn fresh(&self) -> Option<Arc<Token>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        let cached = current.as_ref()?;
        let skew = (cached.token.lifetime / 10).min(MAX_SKEW);
        let renew_at = cached.token.obtained + cached.token.lifetime.saturating_sub(skew);
        (!cached.rejected && Instant::now() < renew_at).then(|| cached.token.clone())
    }

    /// A usable token: the cached one, or one new token request shared by every caller.
    pub async fn get(&self) -> Result<Arc<Token>, AuthError> {
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let mut flight = self.flight.lock().await;
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        if let Some((until, error)) = &flight.failure
            && Instant::now() < *until
        {
            return Err(error.clone());
        }
        self.renew(&mut flight).await
    }

    /// A new token now, whatever is cached ("Generate").
    pub async fn fetch_now(&self) -> Result<Arc<Token>, AuthError> {
        let mut flight = self.flight.lock().await;
        self.renew(&mut flight).await
    }

    async fn renew(&self, flight: &mut Flight) -> Result<Arc<Token>, AuthError> {
        let result = self.request().await;
        match result {
            Ok(token) => {
                let token = Arc::new(token);
                info!(template = %self.template, expires_in_s = token.lifetime.as_secs(), "obtained an access token");
                *flight = Flight::default();
                *self.current.write().unwrap_or_else(|e| e.into_inner()) =
                    Some(Cached { token: token.clone(), rejected: false });
                Ok(token)
            }
            Err(error) => {
                flight.failures += 1;
                let hold = Duration::from_secs(1 << (flight.failures - 1).min(5)).min(MAX_FAILURE_HOLD);
                warn!(template = %self.template, "{error}");
                flight.failure = Some((Instant::now() + hold, error.clone()));
                Err(error)
            }
        }
    }

    /// The password grant renews with its refresh token when it has one, and falls back to
    /// the password if the server refuses it; other grants simply run again.
    async fn request(&self) -> Result<Token, AuthError> {
        let refresh = match self.endpoint.grant {
            Grant::Password => {
                self.current.read().unwrap_or_else(|e| e.into_inner()).as_ref().and_then(|c| c.token.refresh.clone())
            }
            _ => None,
        };
        if let Some(refresh_token) = refresh {
            match self.endpoint.refresh(&refresh_token).await {
                Ok(mut token) => {
                    // A response without a new refresh token keeps the old one.
                    token.refresh.get_or_insert(refresh_token);
                    return Ok(token);
                }
                Err(RefreshError::InvalidGrant) => {
                    info!(template = %self.template, "the refresh token was refused (invalid_grant); using the password grant");
                }
                Err(RefreshError::Failed(error)) => return Err(error),
            }
        }
        self.endpoint.obtain().await
    }

    /// The destination answered 401 to `sent`: if that is still the cached token, it is not
    /// used again (its refresh token still is).
    pub fn reject(&self, sent: &HeaderValue) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if let Some(cached) = current.as_mut()
            && cached.token.header_value == sent
        {
            cached.rejected = true;
        }
    }
}
