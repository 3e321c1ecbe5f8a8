//! The outgoing HTTP client: one connection pool for all deliveries (and one per distinct
//! template TLS setting), no redirects, a hard per-attempt timeout, and the destination
//! network policy enforced on every connection.
//!
//! Every request the gateway makes — deliveries, verification, token requests, plugin
//! `fetch` — goes through [`HttpClient::send`]; the underlying client is not reachable from
//! outside this module. The policy is applied in three places, all here:
//! - [`NetworkPolicy::check_url`] before sending: scheme, `https_only`, and an IP-literal
//!   host (which no resolver sees);
//! - the DNS resolver: every address a hostname resolves to, before connecting;
//! - the connector: the peer address of every new connection, before a byte of the
//!   request is written. This is the check nothing can go around; the two before it make
//!   sure a refused address is normally not even connected to.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, HOST, HeaderMap, HeaderValue, RETRY_AFTER, USER_AGENT};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::{Connection, HttpConnector, HttpInfo};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use url::Url;

use crate::body::{RequestBody, WireBody};
use crate::network::NetworkPolicy;
use crate::secret::Secret;

/// How much of a response body is read (and kept for `hookgate test`). The rest is dropped.
pub const MAX_BODY: usize = 64 * 1024;

type BoxError = Box<dyn StdError + Send + Sync>;

/// One attempt to send.
#[derive(Debug)]
pub struct SendRequest<'a> {
    pub method: &'a Method,
    pub url: &'a Url,
    pub headers: HeaderMap,
    pub body: RequestBody,
    pub timeout: Duration,
}

/// The destination answered.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    /// The answer's headers (for plugin `fetch`).
    pub headers: HeaderMap,
    /// `Retry-After`, as a delay from now.
    pub retry_after: Option<Duration>,
    /// The first bytes of the body (up to 64 KiB), for `hookgate test` and verification.
    pub body: Bytes,
    pub latency: Duration,
}

/// The attempt got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// No complete answer within the template's timeout.
    Timeout(Duration),
    /// The network policy refused the destination; no request was sent.
    Refused(String),
    /// The TCP or TLS connection failed.
    Connect(String),
    /// Anything else (the connection broke mid-answer, a protocol error).
    Other(String),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(d) => write!(f, "timeout: no answer within {}", crate::duration::format_duration(*d)),
            Self::Refused(why) => write!(f, "destination refused: {why}"),
            Self::Connect(why) => write!(f, "{why}"),
            Self::Other(why) => write!(f, "request failed: {why}"),
        }
    }
}

impl SendError {
    /// Whether another attempt may get a different result.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Refused(_))
    }
}

/// A template's `tls` section, parsed and checked: what to trust and how to authenticate.
#[derive(Clone)]
pub struct TlsSettings {
    /// Trust these CA certificates instead of the system's roots.
    ca: Vec<CertificateDer<'static>>,
    /// The client certificate chain and its private key (mTLS).
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    /// Identifies equal settings, so templates that share them share a connection pool.
    digest: [u8; 32],
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("ca_certificates", &self.ca.len())
            .field("client_cert", &self.identity.as_ref().map(|(chain, _)| chain.len()))
            .field("client_key", &self.identity.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// What is wrong with a `tls` section: the key (`ca`, `client_cert`, `client_key`) and why.
/// The message never quotes a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    pub key: &'static str,
    pub message: String,
}

impl TlsSettings {
    /// Parses PEM text (already resolved from `${file:..}` / `${env:..}`). `client_cert` and
    /// `client_key` go together; the key must belong to the certificate.
    pub fn from_pem(
        ca: Option<&str>,
        client_cert: Option<&str>,
        client_key: Option<&Secret>,
    ) -> Result<Self, TlsError> {
        let error = |key: &'static str, message: String| TlsError { key, message };
        let certificates = |key: &'static str, pem: &str| -> Result<Vec<CertificateDer<'static>>, TlsError> {
            let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| error(key, format!("`tls.{key}` is not valid PEM: {}", pem_problem(&e))))?;
            if certs.is_empty() {
                return Err(error(
                    key,
                    format!("`tls.{key}` holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)"),
                ));
            }
            Ok(certs)
        };
        let ca = match ca {
            Some(pem) => {
                let certs = certificates("ca", pem)?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in &certs {
                    roots
                        .add(cert.clone())
                        .map_err(|e| error("ca", format!("`tls.ca`: a certificate cannot be used as a CA: {e}")))?;
                }
                certs
            }
            None => Vec::new(),
        };
        let identity = match (client_cert, client_key) {
            (None, None) => None,
            (Some(_), None) => return Err(error("client_cert", "`tls.client_cert` needs `tls.client_key`".into())),
            (None, Some(_)) => return Err(error("client_key", "`tls.client_key` needs `tls.client_cert`".into())),
            (Some(cert), Some(key)) => {
                let chain = certificates("client_cert", cert)?;
                // The key's text is a secret: the message says what is wrong, never what is there.
                let key = PrivateKeyDer::from_pem_slice(key.expose().as_bytes()).map_err(|e| {
                    error(
                        "client_key",
                        format!(
                            "`tls.client_key` is not a PEM private key (PKCS#8, PKCS#1 or SEC1): {}",
                            pem_problem(&e)
                        ),
                    )
                })?;
                let provider = rustls::crypto::ring::default_provider();
                rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(|e| {
                    error(
                        "client_key",
                        format!("`tls.client_key` cannot be used with `tls.client_cert`: {}", key_problem(&e)),
                    )
                })?;
                Some((chain, Arc::new(key)))
            }
        };
        let mut hasher = Sha256::new();
        for cert in &ca {
            hasher.update(b"ca");
            hasher.update((cert.len() as u64).to_be_bytes());
            hasher.update(cert);
        }
        if let Some((chain, key)) = &identity {
            for cert in chain {
                hasher.update(b"cert");
                hasher.update((cert.len() as u64).to_be_bytes());
                hasher.update(cert);
            }
            hasher.update(b"key");
            hasher.update(key.secret_der());
        }
        Ok(Self { ca, identity, digest: hasher.finalize().into() })
    }

    /// No `tls` section: the system's roots and no client certificate.
    fn system_roots() -> Self {
        Self { ca: Vec::new(), identity: None, digest: Sha256::digest(b"").into() }
    }

    fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = if self.ca.is_empty() {
            use rustls_platform_verifier::BuilderVerifierExt;
            builder.with_platform_verifier().map_err(|e| format!("TLS: the system's roots: {e}"))?
        } else {
            let mut roots = rustls::RootCertStore::empty();
            for cert in &self.ca {
                roots.add(cert.clone()).map_err(|e| format!("`tls.ca`: {e}"))?;
            }
            builder.with_root_certificates(roots)
        };
        // ALPN (h2, then http/1.1) is the connector's to set.
        match &self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| format!("`tls.client_key`: {}", key_problem(&e))),
            None => Ok(builder.with_no_client_auth()),
        }
    }
}

fn pem_problem(e: &rustls::pki_types::pem::Error) -> &'static str {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::NoItemsFound => "no PEM section of the right kind was found",
        E::Base64Decode(_) => "a PEM section is not valid base64",
        E::MissingSectionEnd { .. } | E::IllegalSectionStart { .. } => "a PEM section is not closed",
        _ => "it cannot be read",
    }
}

/// A key error without any detail that could come from the key's bytes.
fn key_problem(e: &rustls::Error) -> &'static str {
    match e {
        rustls::Error::InconsistentKeys(_) => "the key does not belong to the certificate",
        _ => "the key or certificate is not supported (RSA, ECDSA P-256/P-384 or Ed25519)",
    }
}

/// The connection stack under every request: TCP through the policy's resolver, the peer
/// check on the connected address, then TLS for `https://` (ALPN: HTTP/2 or HTTP/1.1).
type Connector = HttpsConnector<PeerCheck<HttpConnector<PolicyResolver>>>;

/// A connection pool and the connections it makes.
type Pool = hyper_util::client::legacy::Client<Connector, Full<WireBody>>;

/// What the gateway says it is, unless a request names itself.
const USER_AGENT_VALUE: HeaderValue = HeaderValue::from_static(concat!("hookgate/", env!("CARGO_PKG_VERSION")));

/// The gateway's HTTP client. Cheap to clone; all clones share one connection pool.
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Pool>,
    policy: Arc<NetworkPolicy>,
    /// Whether this client has its own TLS settings (a template's `tls`).
    custom_tls: bool,
    /// The clients built for TLS settings, by digest, while some template uses them.
    tls_clients: Arc<Mutex<HashMap<[u8; 32], Weak<Pool>>>>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient").field("policy", &self.policy).field("custom_tls", &self.custom_tls).finish()
    }
}

impl HttpClient {
    pub fn new(policy: NetworkPolicy) -> Result<Self, String> {
        install_crypto_provider();
        let policy = Arc::new(policy);
        let inner = build_client(&policy, TlsSettings::system_roots().client_config()?, &[]);
        Ok(Self { inner: Arc::new(inner), policy, custom_tls: false, tls_clients: Arc::default() })
    }

    pub fn policy(&self) -> &NetworkPolicy {
        &self.policy
    }

    /// A client with the same policy and the given TLS settings. Templates with equal
    /// settings share one client (and its connection pool) while any of them is loaded.
    pub fn with_tls(&self, tls: &TlsSettings) -> Result<Self, String> {
        let mut clients = self.tls_clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.retain(|_, client| client.strong_count() > 0);
        let inner = match clients.get(&tls.digest).and_then(Weak::upgrade) {
            Some(inner) => inner,
            None => {
                let inner = Arc::new(build_client(&self.policy, tls.client_config()?, &[]));
                clients.insert(tls.digest, Arc::downgrade(&inner));
                inner
            }
        };
        Ok(Self { inner, policy: self.policy.clone(), custom_tls: true, tls_clients: self.tls_clients.clone() })
    }

    /// Sends one request and reads the beginning of the answer, all within `timeout`. The
    /// only way the gateway sends anything: the network policy applies to every call.
    pub async fn send(&self, request: SendRequest<'_>) -> Result<Response, SendError> {
        self.policy.check_url(request.url).map_err(SendError::Refused)?;
        let started = Instant::now();
        let timeout = request.timeout;
        let request = http_request(request)?;
        let call = async {
            let response = self.inner.request(request).await.map_err(describe)?;
            let (parts, body) = response.into_parts();
            let retry_after = parts
                .headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            let body = read_bounded(body).await;
            Ok(Response { status: parts.status, headers: parts.headers, retry_after, body, latency: started.elapsed() })
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Timeout(timeout)),
        }
    }
}

/// The request as it goes on the wire: the URL's credentials, if it has any, as Basic
/// authorization (unless the request already has an `Authorization`) and never in the
/// request line or `Host`; `Host`, `Accept: */*` and hookgate's `User-Agent` unless the
/// request has its own.
fn http_request(request: SendRequest<'_>) -> Result<http::Request<Full<WireBody>>, SendError> {
    let SendRequest { method, url, mut headers, body, .. } = request;
    let credentials = !url.username().is_empty() || url.password().is_some();
    let uri: http::Uri = if credentials {
        let mut bare = url.clone();
        let _ = bare.set_username("");
        let _ = bare.set_password(None);
        bare[..url::Position::AfterQuery].parse()
    } else {
        url[..url::Position::AfterQuery].parse()
    }
    .map_err(|e| SendError::Refused(format!("the URL cannot be sent: {e}")))?;
    if credentials && !headers.contains_key(AUTHORIZATION) {
        headers.insert(AUTHORIZATION, basic_authorization(url));
    }
    if !headers.contains_key(HOST) {
        // The URL's `host[:port]` as it stands (the port only when not the scheme's default,
        // as the parser keeps it): what hyper would otherwise format for every request.
        if let Ok(host) = HeaderValue::from_str(&url[url::Position::BeforeHost..url::Position::AfterPort]) {
            headers.insert(HOST, host);
        }
    }
    if !headers.contains_key(ACCEPT) {
        headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
    }
    if !headers.contains_key(USER_AGENT) {
        headers.insert(USER_AGENT, USER_AGENT_VALUE);
    }
    let mut request = http::Request::new(Full::new(body.into_wire()));
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok(request)
}

/// `Basic` of a URL's user name and password, percent-decoded, marked sensitive.
fn basic_authorization(url: &Url) -> HeaderValue {
    use base64::Engine as _;
    let decode = |part| percent_encoding::percent_decode_str(part).decode_utf8_lossy();
    let pair = format!("{}:{}", decode(url.username()), decode(url.password().unwrap_or("")));
    let mut value = HeaderValue::try_from(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)))
        .expect("base64 is a valid header value");
    value.set_sensitive(true);
    value
}

/// The one place a connection pool is built: no redirects (nothing follows them), no proxy,
/// the policy in the resolver and on the connected peer. `overrides` pins host names to
/// addresses past the resolver (tests).
fn build_client(policy: &Arc<NetworkPolicy>, tls: rustls::ClientConfig, overrides: &[(&str, SocketAddr)]) -> Pool {
    let resolver = PolicyResolver {
        policy: policy.clone(),
        pinned: Arc::new(overrides.iter().map(|(host, addr)| (host.to_string(), *addr)).collect()),
    };
    let mut tcp = HttpConnector::new_with_resolver(resolver);
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(PeerCheck { inner: tcp, policy: policy.clone() });
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

/// rustls is built without a process-wide default crypto provider; ring is hookgate's. The
/// TLS configs here name it; the PostgreSQL client and tests take the installed default.
/// Calling this twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads at most 64 KiB of a response body.
async fn read_bounded(mut body: hyper::body::Incoming) -> Bytes {
    let mut read = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(chunk) = frame.into_data() else { continue };
        let room = MAX_BODY - read.len();
        read.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if read.len() >= MAX_BODY {
            break;
        }
    }
    Bytes::from(read)
}

/// A reason that names what failed without the URL (URLs can carry credentials; none of
/// these errors quotes one).
fn describe(error: hyper_util::client::legacy::Error) -> SendError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(&error);
    while let Some(e) = source {
        if let Some(refusal) = e.downcast_ref::<PolicyRefusal>() {
            return SendError::Refused(refusal.0.clone());
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            let what = match io.kind() {
                ConnectionRefused => Some("connection refused"),
                ConnectionReset => Some("connection reset"),
                ConnectionAborted => Some("connection aborted"),
                TimedOut => Some("connection timed out"),
                HostUnreachable | NetworkUnreachable => Some("destination unreachable"),
                _ => None,
            };
            if let Some(what) = what {
                return SendError::Connect(what.into());
            }
        }
        source = e.source();
    }
    let innermost = innermost_message(&error);
    if error.is_connect() {
        SendError::Connect(format!("connection failed: {innermost}"))
    } else {
        SendError::Other(innermost)
    }
}

fn innermost_message(error: &(dyn StdError + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3: IMF-fixdate, and
/// the obsolete RFC 850 and asctime forms a recipient must accept). A date in the past is no
/// wait; anything else (garbage, a year past 9999) is no `Retry-After` at all.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The network policy, applied to every address a hostname resolves to. `pinned` names
/// resolve to their address without a lookup or a check (tests: a path past this check,
/// which the peer check must still stop).
#[derive(Clone)]
struct PolicyResolver {
    policy: Arc<NetworkPolicy>,
    pinned: Arc<HashMap<String, SocketAddr>>,
}

#[derive(Debug)]
struct PolicyRefusal(String);

impl fmt::Display for PolicyRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for PolicyRefusal {}

impl tower_service::Service<Name> for PolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        let pinned = self.pinned.get(&host).copied();
        Box::pin(async move {
            if let Some(addr) = pinned {
                return Ok(vec![addr].into_iter());
            }
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match policy.check(addr.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refusal.get_or_insert(why);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), refusal) {
                (true, Some(why)) => Err(Box::new(PolicyRefusal(format!("{host} resolves to {why}"))) as _),
                (true, None) => Err(Box::new(PolicyRefusal(format!("{host} resolves to no address"))) as _),
                (false, _) => Ok(allowed.into_iter()),
            }
        })
    }
}

/// The connector that applies the policy to the peer address of every connection the
/// client opens, whatever led to that address (an IP literal, any resolver, a pinned
/// address), and drops the connection before the request is written if it is refused.
#[derive(Clone)]
struct PeerCheck<S> {
    inner: S,
    policy: Arc<NetworkPolicy>,
}

impl<S, R> tower_service::Service<R> for PeerCheck<S>
where
    S: tower_service::Service<R>,
    S::Response: Connection + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let connecting = self.inner.call(request);
        let policy = self.policy.clone();
        Box::pin(async move {
            let connection = connecting.await.map_err(Into::into)?;
            check_peer(&policy, &connection)?;
            Ok(connection)
        })
    }
}

/// Refuses a connection whose peer the policy refuses, or whose peer is unknown.
fn check_peer(policy: &NetworkPolicy, connection: &impl Connection) -> Result<(), BoxError> {
    let mut extensions = http::Extensions::new();
    connection.connected().get_extras(&mut extensions);
    let peer = extensions.get::<HttpInfo>().map(HttpInfo::remote_addr);
    match peer {
        Some(addr) => policy
            .check(addr.ip())
            .map_err(|why| Box::new(PolicyRefusal(format!("the connection reached {why}"))) as BoxError),
        None => Err(Box::new(PolicyRefusal("the connection's peer address is unknown".into()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("soon", now), None);
        // The obsolete forms, and a date in the past.
        assert_eq!(parse_retry_after("Sunday, 06-Nov-94 08:50:37 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Sun Nov  6 08:50:37 1994", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("18446744073709551615", now), Some(Duration::from_secs(u64::MAX)));
    }

    #[test]
    fn retry_after_garbage_and_huge_years_are_no_wait() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        for value in [
            // Overflowed the hand-written parser (days × 86 400 past i64).
            "Sun, 06 Nov 999999999999999999 08:49:37 GMT",
            "Sun, 06 Nov 99999 08:49:37 GMT",
            "Sun, 06 Nov -1994 08:49:37 GMT",
            "Sun, 06 Nov 1969 08:49:37 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Mon, 06 Nov 1994 08:49:37 GMT",
            "-1",
            "1.5",
            "99999999999999999999999",
            "",
            ", ",
            "Sun, 06 Nov 1994 08:49:37 GMT\u{0}",
            "Sun, 06 Növ 1994 08:49:37 GMT",
            "\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}",
        ] {
            assert_eq!(parse_retry_after(value, now), None, "{value:?}");
        }
        assert_eq!(parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now).map(|d| d > Duration::ZERO), Some(true));
    }

    fn get(url: &Url) -> SendRequest<'_> {
        SendRequest {
            method: &Method::GET,
            url,
            headers: HeaderMap::new(),
            body: RequestBody::default(),
            timeout: Duration::from_secs(5),
        }
    }

    /// A server on 127.0.0.1 that counts the HTTP requests it receives.
    async fn counting_server() -> (SocketAddr, Arc<AtomicUsize>) {
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        let app = axum::Router::new().fallback(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                "ok"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, seen)
    }

    /// A client whose `name` is pinned to `addr`, past the policy resolver: what any path
    /// that reaches an address without the resolver's check would do.
    fn pinned(policy: NetworkPolicy, name: &str, addr: SocketAddr) -> HttpClient {
        install_crypto_provider();
        let policy = Arc::new(policy);
        let inner = build_client(&policy, TlsSettings::system_roots().client_config().unwrap(), &[(name, addr)]);
        HttpClient { inner: Arc::new(inner), policy, custom_tls: false, tls_clients: Arc::default() }
    }

    #[tokio::test]
    async fn ip_literals_are_refused_before_connecting() {
        let (addr, seen) = counting_server().await;
        let client = HttpClient::new(NetworkPolicy::default()).unwrap();
        let url: Url = format!("http://{addr}/").parse().unwrap();
        let err = client.send(get(&url)).await.unwrap_err();
        assert!(matches!(err, SendError::Refused(ref why) if why.contains("loopback")), "{err}");
        assert!(!err.is_retryable());
        let mapped: Url = format!("http://[::ffff:127.0.0.1]:{}/", addr.port()).parse().unwrap();
        assert!(matches!(client.send(get(&mapped)).await, Err(SendError::Refused(_))));
        let ftp: Url = "ftp://example.com/".parse().unwrap();
        assert!(matches!(client.send(get(&ftp)).await, Err(SendError::Refused(_))));
        assert_eq!(seen.load(Ordering::SeqCst), 0);
    }

    /// Acceptance 4: the policy is applied to the address the connection reached. Only
    /// 127.0.0.2 is allowed; `sink.test` is pinned to 127.0.0.1 where the server listens,
    /// so no resolver check runs. The connection is dropped before the request is written.
    #[tokio::test]
    async fn the_policy_applies_to_the_connected_peer() {
        let (addr, seen) = counting_server().await;
        let url: Url = format!("http://sink.test:{}/", addr.port()).parse().unwrap();

        let only_127_0_0_2 = NetworkPolicy { allow: vec!["127.0.0.2".parse().unwrap()], ..Default::default() };
        let err = pinned(only_127_0_0_2, "sink.test", addr).send(get(&url)).await.unwrap_err();
        match &err {
            SendError::Refused(why) => {
                assert!(why.contains("the connection reached 127.0.0.1 is a loopback address"), "{why}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(!err.is_retryable());
        assert_eq!(seen.load(Ordering::SeqCst), 0, "no request reached the server");

        // The same path with 127.0.0.1 allowed reaches it: the refusal was the peer check.
        let only_127_0_0_1 = NetworkPolicy { allow: vec!["127.0.0.1".parse().unwrap()], ..Default::default() };
        let response = pinned(only_127_0_0_1, "sink.test", addr).send(get(&url)).await.unwrap();
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }

    /// What a request looked like on arrival: its request line's target and its headers.
    async fn recording_server() -> (SocketAddr, Arc<Mutex<Vec<(String, HeaderMap)>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |uri: http::Uri, headers: HeaderMap| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push((uri.to_string(), headers));
                "ok"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, seen)
    }

    /// A URL's user name and password are sent as Basic authorization (decoded), never in
    /// the request line; a request's own `Authorization`, `Accept` and `User-Agent` win.
    #[tokio::test]
    async fn url_credentials_become_basic_authorization_and_defaults_yield() {
        let (addr, seen) = recording_server().await;
        let client = HttpClient::new(NetworkPolicy::allow_loopback()).unwrap();
        let url: Url = format!("http://svc%40acme:p%3Ass@{addr}/hooks?x=1#frag").parse().unwrap();
        assert_eq!(client.send(get(&url)).await.unwrap().status, StatusCode::OK);
        let mut own = get(&url);
        own.headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        own.headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        own.headers.insert(USER_AGENT, HeaderValue::from_static("partner/1"));
        assert_eq!(client.send(own).await.unwrap().status, StatusCode::OK);

        let seen = seen.lock().unwrap();
        let (target, headers) = &seen[0];
        assert_eq!(target, "/hooks?x=1");
        // base64("svc@acme:p:ss")
        assert_eq!(headers[AUTHORIZATION], "Basic c3ZjQGFjbWU6cDpzcw==");
        assert_eq!(headers[ACCEPT], "*/*");
        assert_eq!(headers[USER_AGENT], concat!("hookgate/", env!("CARGO_PKG_VERSION")));
        assert_eq!(headers[http::header::HOST], addr.to_string());
        let (_, headers) = &seen[1];
        assert_eq!(headers[AUTHORIZATION], "Bearer t");
        assert_eq!(headers[ACCEPT], "application/json");
        assert_eq!(headers[USER_AGENT], "partner/1");
    }

    #[tokio::test]
    async fn https_only_is_enforced_on_send() {
        let (addr, seen) = counting_server().await;
        let policy = NetworkPolicy { https_only: true, ..NetworkPolicy::allow_loopback() };
        let client = HttpClient::new(policy).unwrap();
        let url: Url = format!("http://{addr}/").parse().unwrap();
        let err = client.send(get(&url)).await.unwrap_err();
        assert!(matches!(err, SendError::Refused(ref why) if why.contains("https_only")), "{err}");
        assert_eq!(seen.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn tls_settings_explain_what_is_wrong_without_quoting_the_key() {
        let key = Secret::new("-----BEGIN PRIVATE KEY-----\nbm90LWEta2V5LXNlY3JldA==\n-----END PRIVATE KEY-----\n");
        let e = TlsSettings::from_pem(Some("not pem"), None, None).unwrap_err();
        assert_eq!(e.key, "ca");
        assert!(e.message.contains("no PEM certificate"), "{}", e.message);
        let e = TlsSettings::from_pem(None, None, Some(&key)).unwrap_err();
        assert_eq!((e.key, e.message.as_str()), ("client_key", "`tls.client_key` needs `tls.client_cert`"));
        let e = TlsSettings::from_pem(None, Some("x"), None).unwrap_err();
        assert_eq!(e.key, "client_cert");
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let e = TlsSettings::from_pem(Some(garbage), None, None).unwrap_err();
        assert_eq!(e.key, "ca");
        let e = TlsSettings::from_pem(None, Some(garbage), Some(&key)).unwrap_err();
        assert_eq!(e.key, "client_key", "{}", e.message);
        assert!(!e.message.contains("bm90"), "{}", e.message);
        assert!(!format!("{e:?}").contains("bm90"));
    }
}
