//! A strict mock OAuth 2.0 authorization server on 127.0.0.1: it checks every token
//! request the way RFC 6749 (and RFC 7523 for JWT client assertions) says a server must,
//! answers errors as RFC 6749 §5.2, and records every request so tests can assert on it.
//! Also a tiny JWKS endpoint (`JwksMock`) for the client's public keys.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

/// RFC 7523 §2.2 `client_assertion_type`.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Header parameters registered by RFC 7515 §4.1 / RFC 7516 §4.1 / RFC 7519 §5, which
/// `crit` must not list (RFC 7515 §4.1.11).
const REGISTERED_HEADERS: &[&str] = &[
    "alg", "jku", "jwk", "kid", "x5u", "x5c", "x5t", "x5t#S256", "typ", "cty", "crit", "enc", "zip", "epk", "apu",
    "apv", "iv", "tag", "p2s", "p2c",
];

/// Parameters that must travel in the body, never in the token URL's query (RFC 6749 §2.3.1).
const BODY_ONLY: &[&str] = &[
    "grant_type",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "username",
    "password",
    "refresh_token",
    "scope",
];

/// Which client authentication the server requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic` (RFC 6749 §2.3.1).
    Basic,
    /// `client_id` + `client_secret` in the body (RFC 6749 §2.3.1).
    Body,
    /// `private_key_jwt`: a signed client assertion (RFC 7523 §2.2).
    Jwt,
}

#[derive(Debug, Clone)]
pub struct OAuthSettings {
    pub client_id: String,
    /// For `Basic` / `Body`.
    pub client_secret: String,
    /// The resource owner, for `grant_type=password`.
    pub username: String,
    pub password: String,
    pub client_auth: ClientAuth,
    /// `None`: the response has no `expires_in` (and tokens never expire).
    pub expires_in: Option<u64>,
    pub issue_refresh_token: bool,
    /// Answer `{"data": {"token", "refresh", "ttl"}}` instead of the flat RFC fields.
    pub nested: bool,
    /// If set, `scope` must equal it.
    pub required_scope: Option<String>,
    /// For `Jwt`: the client's JWKS, fetched on every assertion.
    pub jwks_url: Option<String>,
    /// For `Jwt`: the required `aud` (default: the token URL).
    pub audience: Option<String>,
    /// Answer token requests after this (without blocking a thread).
    pub delay: Option<Duration>,
}

impl Default for OAuthSettings {
    fn default() -> Self {
        Self {
            client_id: "hookgate".into(),
            client_secret: "s3cret".into(),
            username: "svc".into(),
            password: "pw".into(),
            client_auth: ClientAuth::Body,
            expires_in: Some(3600),
            issue_refresh_token: true,
            nested: false,
            required_scope: None,
            jwks_url: None,
            audience: None,
            delay: None,
        }
    }
}

/// One request to /oauth/token or /oauth/refresh, as received and judged.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub path: String,
    pub grant_type: Option<String>,
    /// Decoded body fields (the first value when a name was repeated).
    pub form: BTreeMap<String, String>,
    /// The raw `Authorization` header.
    pub authorization: Option<String>,
    /// `Authorization: Basic` decoded per RFC 6749 §2.3.1 (base64, split at the first ':',
    /// each half form-urldecoded).
    pub basic_credentials: Option<(String, String)>,
    /// The decoded JOSE header and claims of `client_assertion`, when one was sent (even if
    /// rejected).
    pub assertion_header: Option<Value>,
    pub assertion_claims: Option<Value>,
    /// `Ok(access token issued)` or `Err(OAuth error code)`.
    pub outcome: Result<String, String>,
    pub at: Instant,
}

impl TokenRequest {
    /// The body field `name`, if sent.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form.get(name).map(String::as_str)
    }
}

struct OAuthState {
    settings: Mutex<OAuthSettings>,
    token_url: String,
    refresh_url: String,
    requests: Mutex<Vec<TokenRequest>>,
    /// Access token -> when it stops being valid (`None`: never).
    access: Mutex<HashMap<String, Option<Instant>>>,
    /// Refresh tokens issued and not yet used.
    refresh: Mutex<HashSet<String>>,
    /// Every `jti` of an accepted client assertion.
    jtis: Mutex<HashSet<String>>,
    http: reqwest::Client,
    random: RandomState,
    counter: AtomicU64,
}

/// The mock authorization server. `token_url()` accepts every grant (password,
/// client_credentials, refresh_token); `refresh_url()` only refresh_token.
#[derive(Clone)]
pub struct OAuthMock {
    pub addr: SocketAddr,
    state: Arc<OAuthState>,
}

impl OAuthMock {
    /// Binds 127.0.0.1:0 and serves until the test's runtime ends.
    pub async fn start(settings: OAuthSettings) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        hookgate_core::delivery::client::install_crypto_provider();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let state = Arc::new(OAuthState {
            settings: Mutex::new(settings),
            token_url: format!("http://{addr}/oauth/token"),
            refresh_url: format!("http://{addr}/oauth/refresh"),
            requests: Mutex::new(Vec::new()),
            access: Mutex::new(HashMap::new()),
            refresh: Mutex::new(HashSet::new()),
            jtis: Mutex::new(HashSet::new()),
            http,
            random: RandomState::new(),
            counter: AtomicU64::new(0),
        });
        let app = axum::Router::new().fallback(handle_token).with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state }
    }

    /// `http://ADDR/oauth/token`
    pub fn token_url(&self) -> String {
        self.state.token_url.clone()
    }

    /// `http://ADDR/oauth/refresh` (only `grant_type=refresh_token` is accepted there).
    pub fn refresh_url(&self) -> String {
        self.state.refresh_url.clone()
    }

    /// Every request to either path, in order.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The access tokens issued so far, in order.
    pub fn issued(&self) -> Vec<String> {
        self.requests().into_iter().filter_map(|r| r.outcome.ok()).collect()
    }

    pub fn set_expires_in(&self, v: Option<u64>) {
        self.state.settings.lock().unwrap().expires_in = v;
    }

    pub fn set_delay(&self, v: Option<Duration>) {
        self.state.settings.lock().unwrap().delay = v;
    }

    /// Where to fetch the client's JWKS from now on (e.g. a gateway started after the mock).
    pub fn set_jwks_url(&self, v: Option<String>) {
        self.state.settings.lock().unwrap().jwks_url = v;
    }

    /// Resource-server check: `Bearer <t>` where `t` was issued, is not revoked and has
    /// not expired (per the `expires_in` it was issued with, counted from the response).
    pub fn is_valid(&self, authorization_header: Option<&str>) -> bool {
        let Some(token) = authorization_header.and_then(bearer_token) else {
            return false;
        };
        match self.state.access.lock().unwrap().get(token) {
            Some(None) => true,
            Some(Some(deadline)) => Instant::now() < *deadline,
            None => false,
        }
    }

    /// Makes every access token issued so far invalid (refresh tokens stay usable).
    pub fn revoke_all(&self) {
        self.state.access.lock().unwrap().clear();
    }
}

// ---------------------------------------------------------------- request handling

/// An RFC 6749 §5.2 error.
struct Fail {
    code: &'static str,
    description: String,
}

fn fail(code: &'static str, description: impl Into<String>) -> Fail {
    Fail { code, description: description.into() }
}

/// The request's body fields; RFC 6749 §3.2: a parameter sent without a value is
/// treated as omitted.
struct Form<'a>(&'a BTreeMap<String, String>);

impl Form<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }
}

async fn handle_token(
    State(state): State<Arc<OAuthState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    if path != "/oauth/token" && path != "/oauth/refresh" {
        return (StatusCode::NOT_FOUND, "no such path at the OAuth mock").into_response();
    }
    let settings = state.settings.lock().unwrap().clone();
    let mut rec = TokenRequest {
        path,
        grant_type: None,
        form: BTreeMap::new(),
        authorization: headers.get(header::AUTHORIZATION).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        basic_credentials: None,
        assertion_header: None,
        assertion_claims: None,
        outcome: Err(String::new()),
        at: Instant::now(),
    };
    let result = state.check(&settings, &method, &uri, &headers, &body, &mut rec).await;
    let basic_attempted = rec.authorization.as_deref().is_some_and(|a| auth_scheme(a).eq_ignore_ascii_case("basic"));
    rec.outcome = match &result {
        Ok((access, _)) => Ok(access.clone()),
        Err(f) => Err(f.code.to_string()),
    };
    state.requests.lock().unwrap().push(rec);
    if let Some(wait) = settings.delay {
        tokio::time::sleep(wait).await;
    }
    match result {
        Ok((_, body)) => no_store(StatusCode::OK, &body),
        Err(f) => {
            let body = json!({"error": f.code, "error_description": f.description});
            if f.code == "invalid_client" && basic_attempted {
                let mut r = no_store(StatusCode::UNAUTHORIZED, &body);
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"oauth-mock\""));
                r
            } else {
                no_store(StatusCode::BAD_REQUEST, &body)
            }
        }
    }
}

impl OAuthState {
    /// Judges one request; on success returns the access token and the response body.
    async fn check(
        &self,
        s: &OAuthSettings,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        rec: &mut TokenRequest,
    ) -> Result<(String, Value), Fail> {
        // Record everything decodable first, so even rejected requests can be inspected.
        let mut duplicate = None;
        for (k, v) in form_urlencoded::parse(body) {
            if rec.form.contains_key(k.as_ref()) {
                duplicate.get_or_insert_with(|| k.to_string());
            } else {
                rec.form.insert(k.into_owned(), v.into_owned());
            }
        }
        rec.grant_type = rec.form.get("grant_type").cloned();
        if let Some(Ok(creds)) = rec.authorization.as_deref().and_then(parse_basic) {
            rec.basic_credentials = Some(creds);
        }
        if let Some(jwt) = rec.form.get("client_assertion") {
            let mut parts = jwt.split('.');
            rec.assertion_header = parts.next().and_then(decode_json_part);
            rec.assertion_claims = parts.next().and_then(decode_json_part);
        }

        if method != Method::POST {
            return Err(fail("invalid_request", format!("the token endpoint only accepts POST, got {method}")));
        }
        check_content_type(headers)?;
        if let Some(query) = uri.query() {
            for (k, _) in form_urlencoded::parse(query.as_bytes()) {
                if BODY_ONLY.contains(&k.as_ref()) {
                    return Err(fail(
                        "invalid_request",
                        format!("parameter {k} must be sent in the request body, not the URL"),
                    ));
                }
            }
        }
        if let Some(name) = duplicate {
            return Err(fail("invalid_request", format!("parameter {name} was sent more than once")));
        }
        let form = Form(&rec.form);

        // ---- client authentication (RFC 6749 §2.3, RFC 7523 §2.2)
        if headers.get_all(header::AUTHORIZATION).iter().count() > 1 {
            return Err(fail("invalid_request", "more than one Authorization header"));
        }
        let basic = match rec.authorization.as_deref() {
            Some(a) if auth_scheme(a).eq_ignore_ascii_case("basic") => Some(a),
            Some(a) => {
                return Err(fail(
                    "invalid_client",
                    format!("unsupported Authorization scheme {:?} at the token endpoint", auth_scheme(a)),
                ));
            }
            None => None,
        };
        let body_secret = form.get("client_secret").is_some();
        let jwt = form.get("client_assertion").is_some() || form.get("client_assertion_type").is_some();
        let used: Vec<ClientAuth> =
            [(basic.is_some(), ClientAuth::Basic), (body_secret, ClientAuth::Body), (jwt, ClientAuth::Jwt)]
                .into_iter()
                .filter_map(|(on, m)| on.then_some(m))
                .collect();
        match used.as_slice() {
            [] => {
                return Err(fail(
                    "invalid_client",
                    format!("no client authentication (the server requires {:?})", s.client_auth),
                ));
            }
            [m] if *m != s.client_auth => {
                return Err(fail(
                    "invalid_client",
                    format!("client authenticated with {m:?}, the server requires {:?}", s.client_auth),
                ));
            }
            [_] => {}
            many => {
                return Err(fail(
                    "invalid_request",
                    format!("more than one client authentication method used ({many:?}); RFC 6749 §2.3 allows one"),
                ));
            }
        }
        match s.client_auth {
            ClientAuth::Basic => {
                let (id, secret) = match basic.and_then(parse_basic) {
                    Some(Ok(c)) => c,
                    Some(Err(e)) => return Err(fail("invalid_client", e)),
                    None => unreachable!("Basic was detected above"),
                };
                if id != s.client_id {
                    return Err(fail("invalid_client", format!("unknown client_id {id:?} in the Basic credentials")));
                }
                if secret != s.client_secret {
                    return Err(fail("invalid_client", "wrong client secret in the Basic credentials"));
                }
                if let Some(body_id) = form.get("client_id")
                    && body_id != id
                {
                    return Err(fail(
                        "invalid_client",
                        format!("client_id {body_id:?} in the body differs from the Basic one"),
                    ));
                }
            }
            ClientAuth::Body => {
                let Some(id) = form.get("client_id") else {
                    return Err(fail("invalid_client", "client_secret sent without client_id"));
                };
                if id != s.client_id {
                    return Err(fail("invalid_client", format!("unknown client_id {id:?}")));
                }
                if form.get("client_secret") != Some(s.client_secret.as_str()) {
                    return Err(fail("invalid_client", "wrong client_secret"));
                }
            }
            ClientAuth::Jwt => self.check_assertion(s, &form, rec).await?,
        }

        // ---- the grant (RFC 6749 §4.3, §4.4, §6)
        let Some(grant) = form.get("grant_type") else {
            return Err(fail("invalid_request", "grant_type missing"));
        };
        let on_refresh_path = rec.path == "/oauth/refresh";
        let mut used_refresh = None;
        match grant {
            "refresh_token" => {
                let Some(rt) = form.get("refresh_token") else {
                    return Err(fail("invalid_request", "refresh_token missing"));
                };
                if !self.refresh.lock().unwrap().contains(rt) {
                    return Err(fail("invalid_grant", "refresh_token unknown or already used"));
                }
                used_refresh = Some(rt.to_string());
            }
            _ if on_refresh_path => {
                return Err(fail(
                    "unsupported_grant_type",
                    format!("{grant:?}: only refresh_token is accepted at /oauth/refresh"),
                ));
            }
            "password" => {
                let (Some(user), Some(pass)) = (form.get("username"), form.get("password")) else {
                    return Err(fail("invalid_request", "grant_type=password needs username and password"));
                };
                if user != s.username || pass != s.password {
                    return Err(fail("invalid_grant", "wrong resource owner username or password"));
                }
            }
            "client_credentials" => {
                if form.get("username").is_some() || form.get("password").is_some() {
                    return Err(fail(
                        "invalid_request",
                        "grant_type=client_credentials must not carry username/password",
                    ));
                }
            }
            other => {
                return Err(fail("unsupported_grant_type", format!("grant_type {other:?} is not supported")));
            }
        }

        // ---- scope (RFC 6749 §3.3; on refresh it may be omitted, §6)
        let scope = form.get("scope");
        if let Some(required) = &s.required_scope {
            match scope {
                Some(sc) if sc == required => {}
                None if used_refresh.is_some() => {}
                Some(sc) => {
                    return Err(fail("invalid_scope", format!("scope {sc:?} is not the required {required:?}")));
                }
                None => {
                    return Err(fail("invalid_scope", format!("scope missing, {required:?} is required")));
                }
            }
        }

        // ---- commit: rotate the refresh token, issue new tokens
        if let Some(old) = &used_refresh
            && !self.refresh.lock().unwrap().remove(old)
        {
            return Err(fail("invalid_grant", "refresh_token unknown or already used"));
        }
        let access = self.new_token("at_");
        let refresh = s.issue_refresh_token.then(|| self.new_token("rt_"));
        let valid_from = Instant::now() + s.delay.unwrap_or_default();
        self.access.lock().unwrap().insert(access.clone(), s.expires_in.map(|e| valid_from + Duration::from_secs(e)));
        if let Some(rt) = &refresh {
            self.refresh.lock().unwrap().insert(rt.clone());
        }
        let body = if s.nested {
            let mut data = json!({"token": access});
            if let Some(rt) = &refresh {
                data["refresh"] = json!(rt);
            }
            if let Some(e) = s.expires_in {
                data["ttl"] = json!(e);
            }
            json!({"data": data})
        } else {
            let mut b = json!({"access_token": access, "token_type": "Bearer"});
            if let Some(e) = s.expires_in {
                b["expires_in"] = json!(e);
            }
            if let Some(rt) = &refresh {
                b["refresh_token"] = json!(rt);
            }
            if let Some(sc) = scope {
                b["scope"] = json!(sc);
            }
            b
        };
        Ok((access, body))
    }

    /// RFC 7523 §2.2 / §3 client assertion, verified against the client's JWKS.
    async fn check_assertion(&self, s: &OAuthSettings, form: &Form<'_>, rec: &TokenRequest) -> Result<(), Fail> {
        let Some(kind) = form.get("client_assertion_type") else {
            return Err(fail("invalid_request", "client_assertion_type missing"));
        };
        let Some(assertion) = form.get("client_assertion") else {
            return Err(fail("invalid_request", "client_assertion missing"));
        };
        if kind != JWT_BEARER {
            return Err(fail("invalid_client", format!("client_assertion_type must be {JWT_BEARER:?}, got {kind:?}")));
        }
        let parts: Vec<&str> = assertion.split('.').collect();
        let base64url =
            |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if parts.len() != 3 || !parts.iter().all(|p| base64url(p)) {
            return Err(fail("invalid_client", "client_assertion is not a single compact-serialized JWT"));
        }
        let Some(Value::Object(jose)) = &rec.assertion_header else {
            return Err(fail("invalid_client", "client_assertion header is not a JSON object"));
        };
        let Some(Value::Object(claims)) = &rec.assertion_claims else {
            return Err(fail("invalid_client", "client_assertion claims are not a JSON object"));
        };

        // RFC 7515 §4.1.11
        let crit = jose.get("crit");
        if let Some(crit) = crit {
            let Some(names) = crit.as_array().filter(|a| !a.is_empty()) else {
                return Err(fail("invalid_client", "crit must be a non-empty array of header parameter names"));
            };
            let mut seen = HashSet::new();
            for name in names {
                let Some(name) = name.as_str() else {
                    return Err(fail("invalid_client", "crit lists a non-string"));
                };
                if !seen.insert(name) {
                    return Err(fail("invalid_client", format!("crit lists {name:?} twice")));
                }
                if REGISTERED_HEADERS.contains(&name) {
                    return Err(fail("invalid_client", format!("crit lists the registered header parameter {name:?}")));
                }
                if !jose.contains_key(name) {
                    return Err(fail("invalid_client", format!("crit lists {name:?}, which is not in the header")));
                }
            }
        }

        let alg_name = jose.get("alg").and_then(Value::as_str).unwrap_or("");
        let alg = match alg_name {
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            other => {
                return Err(fail("invalid_client", format!("alg {other:?} not allowed (RS256, RS384, RS512)")));
            }
        };
        let Some(kid) = jose.get("kid").and_then(Value::as_str) else {
            return Err(fail("invalid_client", "client_assertion header has no kid"));
        };

        // The client's keys, fetched now so rotation is seen.
        let Some(jwks_url) = &s.jwks_url else {
            return Err(fail("invalid_client", "the mock has no jwks_url configured"));
        };
        let jwks = self
            .fetch_jwks(jwks_url)
            .await
            .map_err(|e| fail("invalid_client", format!("could not fetch the JWKS at {jwks_url}: {e}")))?;
        let matching: Vec<&Value> = jwks["keys"]
            .as_array()
            .map(|keys| keys.iter().filter(|k| k["kid"].as_str() == Some(kid)).collect())
            .unwrap_or_default();
        let jwk = match matching.as_slice() {
            [k] => *k,
            [] => {
                return Err(fail("invalid_client", format!("kid {kid:?} is not in the client's JWKS")));
            }
            _ => {
                return Err(fail("invalid_client", format!("kid {kid:?} is ambiguous in the client's JWKS")));
            }
        };
        if jwk["kty"] != "RSA" {
            return Err(fail("invalid_client", format!("key {kid:?} is not an RSA key")));
        }
        if let Some(u) = jwk.get("use")
            && u != "sig"
        {
            return Err(fail("invalid_client", format!("key {kid:?} has use {u}, not \"sig\"")));
        }
        if let Some(a) = jwk.get("alg")
            && a != alg_name
        {
            return Err(fail("invalid_client", format!("key {kid:?} is for alg {a}, the assertion uses {alg_name:?}")));
        }
        let (Some(n), Some(e)) = (jwk["n"].as_str(), jwk["e"].as_str()) else {
            return Err(fail("invalid_client", format!("key {kid:?} has no n/e")));
        };
        let key = DecodingKey::from_rsa_components(n, e)
            .map_err(|e| fail("invalid_client", format!("key {kid:?} is unusable: {e}")))?;

        let audience = s.audience.clone().unwrap_or_else(|| self.token_url.clone());
        if crit.is_none() {
            let mut v = Validation::new(alg);
            v.leeway = 0;
            v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
            v.set_audience(&[&audience]);
            v.set_issuer(&[&s.client_id]);
            v.sub = Some(s.client_id.clone());
            v.validate_nbf = false;
            jsonwebtoken::decode::<Value>(assertion, &key, &v)
                .map_err(|e| fail("invalid_client", format!("client_assertion rejected: {e}")))?;
        } else {
            // jsonwebtoken's decode refuses every `crit` but "b64"; the header was
            // checked above, so verify the signature on its own.
            let message = &assertion[..parts[0].len() + 1 + parts[1].len()];
            let ok = jsonwebtoken::crypto::verify(parts[2], message.as_bytes(), &key, alg).unwrap_or(false);
            if !ok {
                return Err(fail("invalid_client", "client_assertion signature invalid"));
            }
        }

        // RFC 7523 §3, checked explicitly (also for the `crit` path).
        let iss = claims.get("iss").and_then(Value::as_str);
        let sub = claims.get("sub").and_then(Value::as_str);
        if iss != Some(s.client_id.as_str()) {
            return Err(fail("invalid_client", format!("iss {iss:?} is not the client_id {:?}", s.client_id)));
        }
        if sub != Some(s.client_id.as_str()) {
            return Err(fail("invalid_client", format!("sub {sub:?} is not the client_id {:?}", s.client_id)));
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => *a == audience,
            Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(audience.as_str())),
            _ => false,
        };
        if !aud_ok {
            return Err(fail("invalid_client", format!("aud {:?} does not name {audience:?}", claims.get("aud"))));
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        match claims.get("exp").and_then(Value::as_f64) {
            Some(exp) if exp > now => {}
            Some(exp) => {
                return Err(fail("invalid_client", format!("client_assertion expired (exp {exp}, now {now:.0})")));
            }
            None => {
                return Err(fail("invalid_client", "client_assertion has no numeric exp"));
            }
        }
        if let Some(id) = form.get("client_id")
            && Some(id) != sub
        {
            return Err(fail(
                "invalid_client",
                format!("client_id {id:?} differs from the assertion's sub {:?}", s.client_id),
            ));
        }
        let Some(jti) = claims.get("jti").and_then(Value::as_str).filter(|j| !j.is_empty()) else {
            return Err(fail("invalid_client", "client_assertion has no jti"));
        };
        if !self.jtis.lock().unwrap().insert(jti.to_string()) {
            return Err(fail("invalid_grant", "jti reused"));
        }
        Ok(())
    }

    async fn fetch_jwks(&self, url: &str) -> Result<Value, String> {
        let r = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("status {}", r.status()));
        }
        let body = r.bytes().await.map_err(|e| e.to_string())?;
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    }

    /// A random, unique token: 128 random bits and a counter, in hex.
    fn new_token(&self, prefix: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        let mut out = prefix.to_string();
        for round in 0..2u64 {
            let mut h = self.random.build_hasher();
            h.write_u64(n);
            h.write_u64(round);
            h.write_u128(nanos);
            out.push_str(&format!("{:016x}", h.finish()));
        }
        out.push_str(&format!("{n:04x}"));
        out
    }
}

// ---------------------------------------------------------------- a JWKS endpoint

struct JwksState {
    jwks: Mutex<Value>,
    fetches: AtomicUsize,
}

/// Serves a JWKS document (any path) that can be replaced mid-test (key rotation).
#[derive(Clone)]
pub struct JwksMock {
    pub addr: SocketAddr,
    state: Arc<JwksState>,
}

impl JwksMock {
    pub async fn start(jwks: Value) -> Self {
        let state = Arc::new(JwksState { jwks: Mutex::new(jwks), fetches: AtomicUsize::new(0) });
        let addr = super::spawn_server(axum::Router::new().fallback(handle_jwks).with_state(state.clone())).await;
        Self { addr, state }
    }

    /// `http://ADDR/jwks.json`
    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    pub fn set(&self, jwks: Value) {
        *self.state.jwks.lock().unwrap() = jwks;
    }

    /// How many times the JWKS was fetched.
    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }
}

async fn handle_jwks(State(state): State<Arc<JwksState>>) -> Response {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    let jwks = state.jwks.lock().unwrap().clone();
    axum::Json(jwks).into_response()
}

/// The public JWK (`{"kty":"RSA","kid","alg","use":"sig","n","e"}`) of an RSA private key
/// in PEM; wrap it as `json!({"keys": [jwk]})` for `JwksMock`.
pub fn rsa_jwk(private_key_pem: &[u8], kid: &str, alg: &str) -> Value {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key_pem).unwrap();
    let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    let jwk = serde_json::to_value(jwk).unwrap();
    json!({"kty": "RSA", "kid": kid, "alg": alg, "use": "sig", "n": jwk["n"], "e": jwk["e"]})
}

// ---------------------------------------------------------------- helpers

/// An RFC 6749 §5.1/§5.2 JSON answer: `Cache-Control: no-store`, `Pragma: no-cache`.
fn no_store(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, axum::Json(body.clone())).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// Exactly one `Content-Type: application/x-www-form-urlencoded` (a `charset` parameter
/// is allowed only as UTF-8).
fn check_content_type(headers: &HeaderMap) -> Result<(), Fail> {
    let values: Vec<&HeaderValue> = headers.get_all(header::CONTENT_TYPE).iter().collect();
    let [value] = values.as_slice() else {
        return Err(fail(
            "invalid_request",
            format!("expected one Content-Type: application/x-www-form-urlencoded, got {}", values.len()),
        ));
    };
    let value = String::from_utf8_lossy(value.as_bytes());
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(fail(
            "invalid_request",
            format!("Content-Type must be application/x-www-form-urlencoded, got {value:?}"),
        ));
    }
    for param in parts {
        let (name, v) = param.split_once('=').unwrap_or((param, ""));
        let v = v.trim().trim_matches('"');
        if !(name.trim().eq_ignore_ascii_case("charset")
            && (v.eq_ignore_ascii_case("utf-8") || v.eq_ignore_ascii_case("utf8")))
        {
            return Err(fail("invalid_request", format!("unexpected Content-Type parameter {:?}", param.trim())));
        }
    }
    Ok(())
}

/// The scheme of an Authorization header value.
fn auth_scheme(value: &str) -> &str {
    value.split(' ').next().unwrap_or("")
}

/// `Bearer <token>` -> the token.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))` decoded per RFC 6749 §2.3.1.
/// `None` if the scheme is not Basic; `Err` if the credentials are malformed.
fn parse_basic(value: &str) -> Option<Result<(String, String), String>> {
    let (scheme, creds) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = match STANDARD.decode(creds) {
        Ok(d) => d,
        Err(e) => return Some(Err(format!("Basic credentials are not base64: {e}"))),
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return Some(Err("Basic credentials are not UTF-8".into()));
    };
    let Some((id, secret)) = decoded.split_once(':') else {
        return Some(Err("Basic credentials have no ':'".into()));
    };
    Some(Ok((form_urldecode(id), form_urldecode(secret))))
}

/// application/x-www-form-urlencoded decoding of one component: `+` is a space, `%XX` a
/// byte (an invalid escape is kept as is).
fn form_urldecode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// A base64url JWT part as JSON.
fn decode_json_part(part: &str) -> Option<Value> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
}
