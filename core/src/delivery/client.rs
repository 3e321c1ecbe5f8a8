//! The outgoing HTTP client: one connection pool for all deliveries, the destination
//! network policy enforced after DNS, no redirects, a hard per-attempt timeout.

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};

use crate::network::NetworkPolicy;

/// How much of a response body is read (and kept for `hookgate test`). The rest is dropped.
pub const MAX_BODY: usize = 64 * 1024;

/// One attempt to send.
#[derive(Debug)]
pub struct SendRequest<'a> {
    pub method: &'a Method,
    pub url: &'a Url,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub timeout: Duration,
}

/// The destination answered.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
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
    /// The network policy refused the destination; no connection was made.
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

/// The gateway's HTTP client. Cheap to clone; all clones share one connection pool.
#[derive(Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    policy: Arc<NetworkPolicy>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient").field("policy", &self.policy).finish()
    }
}

impl HttpClient {
    pub fn new(policy: NetworkPolicy) -> Result<Self, String> {
        install_crypto_provider();
        let policy = Arc::new(policy);
        let inner = reqwest::Client::builder()
            .user_agent(concat!("hookgate/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(PolicyResolver { policy: policy.clone() })
            .no_proxy()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self { inner, policy })
    }

    pub fn policy(&self) -> &NetworkPolicy {
        &self.policy
    }

    /// The underlying client, for plugins that make their own requests (token endpoints).
    /// Its DNS resolver enforces the network policy; use [`HttpClient::check_url`] first for
    /// URLs whose host is an IP literal.
    pub fn reqwest(&self) -> &reqwest::Client {
        &self.inner
    }

    /// Refuses URLs that are not http(s) or whose IP-literal host the policy refuses.
    /// (Hostnames are checked after DNS, by the resolver.)
    pub fn check_url(&self, url: &Url) -> Result<(), SendError> {
        match url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(SendError::Refused(format!("scheme `{other}` is not http or https")));
            }
        }
        let ip: Option<IpAddr> = match url.host() {
            Some(url::Host::Ipv4(v4)) => Some(v4.into()),
            Some(url::Host::Ipv6(v6)) => Some(v6.into()),
            Some(url::Host::Domain(_)) => None,
            None => return Err(SendError::Refused("the URL has no host".into())),
        };
        match ip {
            Some(ip) => self.policy.check(ip).map_err(SendError::Refused),
            None => Ok(()),
        }
    }

    /// Sends one attempt and reads the beginning of the answer, all within `timeout`.
    pub async fn send(&self, request: SendRequest<'_>) -> Result<Response, SendError> {
        self.check_url(request.url)?;
        let started = Instant::now();
        let timeout = request.timeout;
        let call = async {
            let response = self
                .inner
                .request(request.method.clone(), request.url.clone())
                .headers(request.headers)
                .body(request.body)
                .send()
                .await
                .map_err(describe)?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            let body = read_bounded(response).await;
            Ok(Response { status, retry_after, body, latency: started.elapsed() })
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Timeout(timeout)),
        }
    }
}

/// reqwest is built without a bundled TLS crypto provider; ring is hookgate's. Every
/// `reqwest::Client` in the process needs it installed first. Calling this twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads at most 64 KiB of a response body.
pub async fn read_bounded(mut response: reqwest::Response) -> Bytes {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_BODY - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_BODY {
            break;
        }
    }
    Bytes::from(body)
}

/// A reason that names what failed without the URL (URLs can carry credentials). For
/// plugins that send their own requests through [`HttpClient::reqwest`].
pub fn describe(error: reqwest::Error) -> SendError {
    let error = error.without_url();
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

/// The network policy, applied to every address a hostname resolves to.
struct PolicyResolver {
    policy: Arc<NetworkPolicy>,
}

#[derive(Debug)]
struct PolicyRefusal(String);

impl fmt::Display for PolicyRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for PolicyRefusal {}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
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
                (false, _) => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn ip_literals_are_checked_before_connecting() {
        let client = HttpClient::new(NetworkPolicy::default()).unwrap();
        let err = client.check_url(&"http://127.0.0.1:1/".parse().unwrap()).unwrap_err();
        assert!(matches!(err, SendError::Refused(ref why) if why.contains("loopback")), "{err}");
        assert!(!err.is_retryable());
        assert!(client.check_url(&"ftp://example.com/".parse().unwrap()).is_err());
    }
}
