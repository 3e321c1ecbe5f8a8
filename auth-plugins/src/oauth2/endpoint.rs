//! Token requests: the grant's form, client authentication, and reading the response
//! through the template's token mapping. Requests follow no redirects, obey the template's
//! timeout and the destination network policy.

use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hookgate_core::Secret;
use hookgate_core::delivery::client::{HttpClient, SendError, SendRequest};
use hookgate_core::delivery::retry::status_reason;
use hookgate_core::plugin::AuthError;
use hookgate_core::redact::Redactor;
use http::Method;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::Value;
use url::Url;

use super::assertion::AssertionSigner;
use super::config::{ClientAuth, DEFAULT_LIFETIME, Expiry, Grant};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An access token and what came with it.
pub struct Token {
    pub access: Secret,
    pub refresh: Option<Secret>,
    pub token_type: Option<String>,
    pub scope: Option<String>,
    pub obtained: Instant,
    pub lifetime: Duration,
    pub expires_at_wall: SystemTime,
    /// `prefix + token`, marked sensitive: what goes on the webhook.
    pub header_value: HeaderValue,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("lifetime", &self.lifetime).field("scope", &self.scope).finish_non_exhaustive()
    }
}

/// Why a refresh did not give a token.
pub enum RefreshError {
    /// The server refused the refresh token (`invalid_grant`): fall back to the grant.
    InvalidGrant,
    Failed(AuthError),
}

/// Where a token comes from, for one template's credentials.
pub struct Endpoint {
    pub http: HttpClient,
    pub timeout: Duration,
    pub grant: Grant,
    pub token_url: Url,
    pub refresh_url: Url,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub client_auth: ClientAuth,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Space-separated, or `None` when no scopes are configured.
    pub scope: Option<String>,
    pub expiry: Expiry,
    pub token_field: String,
    pub refresh_token_field: String,
    pub expires_in_field: String,
    pub prefix: String,
    pub assertion: Option<AssertionSigner>,
}

/// An OAuth error answer, or a transport failure.
struct Failure {
    /// The `error` code of an RFC 6749 §5.2 answer.
    code: Option<String>,
    error: AuthError,
}

impl Endpoint {
    /// Runs the template's grant.
    pub async fn obtain(&self) -> Result<Token, AuthError> {
        let mut form: Vec<(&str, String)> = Vec::new();
        match self.grant {
            Grant::Password => {
                form.push(("grant_type", "password".into()));
                form.push(("username", self.username.clone().unwrap_or_default()));
                form.push(("password", self.password.as_ref().map(|p| p.expose().to_string()).unwrap_or_default()));
            }
            Grant::ClientCredentials | Grant::ClientCredentialsJwt => {
                form.push(("grant_type", "client_credentials".into()));
            }
        }
        if let Some(scope) = &self.scope {
            form.push(("scope", scope.clone()));
        }
        self.post(&self.token_url, form).await.map_err(|f| f.error)
    }

    /// Exchanges a refresh token at `refresh_url` (RFC 6749 §6).
    pub async fn refresh(&self, refresh_token: &Secret) -> Result<Token, RefreshError> {
        let mut form: Vec<(&str, String)> =
            vec![("grant_type", "refresh_token".into()), ("refresh_token", refresh_token.expose().to_string())];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope.clone()));
        }
        match self.post(&self.refresh_url, form).await {
            Ok(token) => Ok(token),
            Err(Failure { code: Some(code), .. }) if code == "invalid_grant" => Err(RefreshError::InvalidGrant),
            Err(f) => Err(RefreshError::Failed(f.error)),
        }
    }

    /// Adds client authentication, posts the form, reads the token.
    async fn post(&self, url: &Url, mut form: Vec<(&str, String)>) -> Result<Token, Failure> {
        let transport =
            |e: SendError| Failure { code: None, error: AuthError::retryable(format!("token endpoint: {e}")) };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let mut authorization = None;
        match (self.grant, self.client_auth) {
            (Grant::ClientCredentialsJwt, _) => {
                let assertion = self
                    .assertion
                    .as_ref()
                    .ok_or_else(|| Failure { code: None, error: AuthError::permanent("no assertion signer") })?
                    .sign()
                    .map_err(|error| Failure { code: None, error })?;
                // client_id is optional with an assertion (RFC 7521 §4.2): the assertion's
                // `sub` names the client.
                form.push(("client_assertion_type", JWT_BEARER.into()));
                form.push(("client_assertion", assertion));
            }
            (_, ClientAuth::Basic) => {
                let secret = self.client_secret.as_ref().map(Secret::expose).unwrap_or_default();
                let credentials = STANDARD.encode(format!("{}:{}", urlencode(&self.client_id), urlencode(secret)));
                let mut value = HeaderValue::from_str(&format!("Basic {credentials}")).map_err(|_| Failure {
                    code: None,
                    error: AuthError::permanent("client credentials cannot be encoded"),
                })?;
                value.set_sensitive(true);
                authorization = Some(value.clone());
                headers.insert(AUTHORIZATION, value);
            }
            (_, ClientAuth::Body) => {
                form.push(("client_id", self.client_id.clone()));
                form.push((
                    "client_secret",
                    self.client_secret.as_ref().map(|s| s.expose().to_string()).unwrap_or_default(),
                ));
            }
        }
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        // The gateway's one request path: the network policy, no redirects, the timeout.
        let response = self
            .http
            .send(SendRequest { method: &Method::POST, url, headers, body: body.into(), timeout: self.timeout })
            .await
            .map_err(transport)?;
        let (status, bytes) = (response.status, response.body);
        let json: Option<Value> = serde_json::from_slice(&bytes).ok();
        if !status.is_success() {
            let code = json.as_ref().and_then(|j| j["error"].as_str()).map(str::to_string);
            let description = json.as_ref().and_then(|j| j["error_description"].as_str());
            // The server's words, quoted in a reason: without the credentials this request
            // carried (a server may echo them), on one line, bounded.
            let secrets = form_secrets(&form, authorization.as_ref());
            let detail = match (&code, description) {
                (Some(c), Some(d)) => format!(": {} ({})", secrets.clean(c, 64), secrets.clean(d, 200)),
                (Some(c), None) => format!(": {}", secrets.clean(c, 64)),
                _ => String::new(),
            };
            return Err(Failure {
                code,
                error: AuthError::retryable(format!("token endpoint answered {}{detail}", status_reason(status))),
            });
        }
        let json = json.ok_or_else(|| Failure {
            code: None,
            error: AuthError::retryable("token endpoint answered 2xx with a body that is not JSON"),
        })?;
        self.read_token(&json).map_err(|error| Failure { code: None, error })
    }

    /// Reads a token response through the token mapping.
    fn read_token(&self, json: &Value) -> Result<Token, AuthError> {
        let access =
            lookup(json, &self.token_field).and_then(Value::as_str).filter(|t| !t.is_empty()).ok_or_else(|| {
                AuthError::permanent(format!("the token response has no `{}` (see `token_field`)", self.token_field))
            })?;
        let refresh = lookup(json, &self.refresh_token_field).and_then(Value::as_str).map(Secret::new);
        let lifetime = match self.expiry {
            Expiry::Fixed(d) => d,
            Expiry::Auto => lookup(json, &self.expires_in_field)
                .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())))
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_LIFETIME),
        };
        let mut header_value = HeaderValue::from_str(&format!("{}{access}", self.prefix))
            .map_err(|_| AuthError::permanent("the access token has characters a header cannot carry"))?;
        header_value.set_sensitive(true);
        Ok(Token {
            access: Secret::new(access),
            refresh,
            token_type: json["token_type"].as_str().map(str::to_string),
            scope: json["scope"].as_str().map(str::to_string),
            obtained: Instant::now(),
            lifetime,
            expires_at_wall: SystemTime::now() + lifetime,
            header_value,
        })
    }
}

/// A value at a dotted path (`data.token`) in a JSON document.
pub fn lookup<'a>(json: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(json, |v, key| v.get(key))
}

/// RFC 6749 Appendix B: each of client id and secret is form-urlencoded before Basic
/// encoding. Everything but unreserved characters is percent-encoded, a space as `%20` (so
/// servers that decode with a plain percent-decoder read it right).
pub fn urlencode(text: &str) -> String {
    hookgate_core::redact::percent_encode(text)
}

/// The form fields that carry a credential.
const SECRET_FIELDS: &[&str] = &["password", "client_secret", "refresh_token", "client_assertion"];

/// The credentials a token request carried: its secret form fields and its Basic header.
fn form_secrets(form: &[(&str, String)], authorization: Option<&HeaderValue>) -> Redactor {
    let mut secrets: Redactor =
        form.iter().filter(|(key, _)| SECRET_FIELDS.contains(key)).map(|(_, value)| value.as_str()).collect();
    if let Some(value) = authorization {
        secrets.add_header_value(value);
    }
    secrets
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn basic_client_credentials_per_rfc6749_2_3_1() {
        // The RFC's example, from shared/test-vectors.md.
        let header = STANDARD.encode(format!("{}:{}", urlencode("s6BhdRkqt3"), urlencode("7Fjfp0ZBr1KtDRbnfVdmIw")));
        assert_eq!(header, "czZCaGRSa3F0Mzo3RmpmcDBaQnIxS3REUmJuZlZkbUl3");
        assert_eq!(urlencode("a:b%c+d e"), "a%3Ab%25c%2Bd%20e");
    }

    #[test]
    fn dotted_paths() {
        let j = json!({"data": {"token": "t", "ttl": 60}, "access_token": "flat"});
        assert_eq!(lookup(&j, "data.token"), Some(&json!("t")));
        assert_eq!(lookup(&j, "access_token"), Some(&json!("flat")));
        assert_eq!(lookup(&j, "data.missing"), None);
    }
}
