//! What one plugin call carries (`CallState`, the wasmtime store's data), and the host
//! functions of the WIT `host` interface.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};
use hookgate_core::delivery::client::{HttpClient, SendError, SendRequest};
use hookgate_core::plugin::{KeyStore, SigningAlg};
use wasmtime::StoreLimits;

use crate::bindings::hookgate::plugin::host::{self, FetchRequest, FetchResponse, LogLevel, Signature};
use crate::bindings::hookgate::plugin::types::Header;

const MAX_RANDOM: u32 = 1024;
const MAX_CACHE_ENTRIES: usize = 256;
const MAX_CACHE_VALUE: usize = 64 * 1024;
const MAX_LOG: usize = 2048;
const MAX_FETCHES: u32 = 8;

/// What a plugin's calls for one template share: its cache, the keys, the HTTP client and
/// the hosts it may fetch from.
pub struct CallContext {
    pub plugin: String,
    pub template: String,
    pub cache: Mutex<HashMap<String, (Vec<u8>, Instant)>>,
    pub keys: Option<Arc<dyn KeyStore>>,
    pub http: Option<HttpClient>,
    /// Hosts `fetch` may reach (the template's `allow_hosts` for this plugin), lowercase.
    pub allow_hosts: Vec<String>,
    /// The template's timeout: the limit of one fetch.
    pub timeout: Duration,
}

impl CallContext {
    pub fn new(plugin: &str, template: &str) -> Self {
        Self {
            plugin: plugin.to_string(),
            template: template.to_string(),
            cache: Mutex::new(HashMap::new()),
            keys: None,
            http: None,
            allow_hosts: Vec::new(),
            timeout: Duration::from_secs(5),
        }
    }
}

/// The store data of one call.
pub struct CallState {
    pub limits: StoreLimits,
    pub ctx: Arc<CallContext>,
    started: Instant,
    /// Time spent in `fetch`, which the wall-clock limit does not count.
    host_time: Duration,
    budget: Duration,
    fetches: u32,
}

impl CallState {
    pub fn new(limits: StoreLimits, ctx: Arc<CallContext>, budget: Duration) -> Self {
        Self { limits, ctx, started: Instant::now(), host_time: Duration::ZERO, budget, fetches: 0 }
    }

    /// The guest has run longer than its budget.
    pub fn overdue(&self) -> bool {
        self.started.elapsed().saturating_sub(self.host_time) > self.budget
    }
}

impl host::Host for CallState {
    fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        let message: String = message.chars().take(MAX_LOG).collect();
        let (plugin, template) = (&self.ctx.plugin, &self.ctx.template);
        match level {
            LogLevel::Trace => tracing::trace!(plugin, template, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, template, "{message}"),
            LogLevel::Info => tracing::info!(plugin, template, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, template, "{message}"),
            LogLevel::Error => tracing::error!(plugin, template, "{message}"),
        }
        Ok(())
    }

    fn now_millis(&mut self) -> wasmtime::Result<u64> {
        Ok(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0))
    }

    fn random_bytes(&mut self, len: u32) -> wasmtime::Result<Vec<u8>> {
        let mut buf = vec![0u8; len.min(MAX_RANDOM) as usize];
        getrandom::fill(&mut buf).map_err(|e| wasmtime::format_err!("random source: {e}"))?;
        Ok(buf)
    }

    fn cache_get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        let mut cache = self.ctx.cache.lock().unwrap_or_else(|e| e.into_inner());
        match cache.get(&key) {
            Some((value, until)) if Instant::now() < *until => Ok(Some(value.clone())),
            Some(_) => {
                cache.remove(&key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    fn cache_set(&mut self, key: String, value: Vec<u8>, ttl_ms: u64) -> wasmtime::Result<()> {
        if value.len() > MAX_CACHE_VALUE || key.len() > 1024 {
            return Ok(());
        }
        let mut cache = self.ctx.cache.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        cache.retain(|_, (_, until)| *until > now);
        if cache.len() >= MAX_CACHE_ENTRIES && !cache.contains_key(&key) {
            return Ok(());
        }
        cache.insert(key, (value, now + Duration::from_millis(ttl_ms)));
        Ok(())
    }

    fn hmac_sha256(&mut self, key: Vec<u8>, message: Vec<u8>) -> wasmtime::Result<Vec<u8>> {
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key)
            .map_err(|e| wasmtime::format_err!("hmac: {e}"))?;
        mac.update(&message);
        Ok(mac.finalize().into_bytes().to_vec())
    }

    fn sign(
        &mut self,
        key_id: Option<String>,
        alg: host::SigningAlg,
        message: Vec<u8>,
    ) -> wasmtime::Result<Result<Signature, String>> {
        let Some(keys) = &self.ctx.keys else {
            return Ok(Err("this gateway has no key store".into()));
        };
        let alg = match alg {
            host::SigningAlg::Rs256 => SigningAlg::RS256,
            host::SigningAlg::Rs384 => SigningAlg::RS384,
            host::SigningAlg::Rs512 => SigningAlg::RS512,
        };
        let kid = match key_id {
            Some(k) => k,
            None => match keys.active() {
                Ok(k) => k.kid,
                Err(e) => return Ok(Err(e.to_string())),
            },
        };
        Ok(keys
            .sign(&kid, alg, &message)
            .map_err(|e| e.to_string())
            .and_then(|b64| URL_SAFE_NO_PAD.decode(b64).map_err(|e| e.to_string()))
            .map(|value| Signature { key_id: kid, value }))
    }

    async fn fetch(&mut self, request: FetchRequest) -> wasmtime::Result<Result<FetchResponse, String>> {
        let started = Instant::now();
        let result = self.fetch_inner(request).await;
        self.host_time += started.elapsed();
        Ok(result)
    }
}

impl CallState {
    async fn fetch_inner(&mut self, request: FetchRequest) -> Result<FetchResponse, String> {
        self.fetches += 1;
        if self.fetches > MAX_FETCHES {
            return Err(format!("at most {MAX_FETCHES} fetches per call"));
        }
        let http = self.ctx.http.clone().ok_or("fetch is not available here")?;
        let url: reqwest::Url = request.url.parse().map_err(|e| format!("not a URL: {e}"))?;
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        if !self.ctx.allow_hosts.contains(&host) {
            return Err(format!(
                "host `{host}` is not allowed: list it in the template's `allow_hosts` for this plugin"
            ));
        }
        let method =
            reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|_| "not an HTTP method".to_string())?;
        let mut headers = reqwest::header::HeaderMap::new();
        for Header { name, value } in request.headers {
            let header_name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`{name}` is not a header name"))?;
            let header_value = reqwest::header::HeaderValue::from_str(&value)
                .map_err(|_| format!("the value of header `{name}` has characters a header cannot carry"))?;
            headers.append(header_name, header_value);
        }
        // The gateway's one request path: the network policy (on the connected address
        // too), no redirects, the template's timeout, a bounded body.
        let timeout = self.ctx.timeout;
        let sent =
            http.send(SendRequest { method: &method, url: &url, headers, body: request.body.into(), timeout }).await;
        let response = match sent {
            Ok(response) => response,
            Err(SendError::Timeout(limit)) => {
                return Err(format!("no answer within {}", hookgate_core::duration::format_duration(limit)));
            }
            Err(e) => return Err(e.to_string()),
        };
        let headers = response
            .headers
            .iter()
            .map(|(n, v)| Header { name: n.to_string(), value: String::from_utf8_lossy(v.as_bytes()).into_owned() })
            .collect();
        Ok(FetchResponse { status: response.status.as_u16(), headers, body: response.body.to_vec() })
    }
}

impl crate::bindings::hookgate::plugin::types::Host for CallState {}
