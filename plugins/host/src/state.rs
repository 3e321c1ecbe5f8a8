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
use wasmtime::{ResourceLimiter, StoreLimits};

use crate::bindings::hookgate::plugin::host::{self, FetchRequest, FetchResponse, LogLevel, Signature};
use crate::bindings::hookgate::plugin::types::Header;
use crate::text;

const MAX_RANDOM: u32 = 1024;
const MAX_CACHE_ENTRIES: usize = 256;
const MAX_CACHE_VALUE: usize = 64 * 1024;
/// Bytes of one `log` line (after escaping); longer ones are cut.
pub const MAX_LOG_LINE: usize = 2048;
/// `log` lines one call may write; past this, or past [`MAX_LOG_BYTES`], lines are dropped
/// and one note at the end of the call says how many.
pub const MAX_LOG_LINES: u32 = 32;
/// Bytes of `log` lines one call may write.
pub const MAX_LOG_BYTES: usize = 16 * 1024;
const MAX_FETCHES: u32 = 8;
/// Wall-clock time a fresh instance may take to start, before its call's `plugins.timeout`
/// begins: laying out an interpreter's memory (an 18 MB Python component's) takes
/// milliseconds on an idle machine and many times that on a busy one. Its fuel counts
/// against the call's, so guest code run at the start is bounded by `plugins.fuel` too.
pub const START_TIMEOUT: Duration = Duration::from_secs(2);

/// What a plugin's calls for one template share: its cache, the keys it may sign with, the
/// HTTP client and the hosts it may fetch from.
pub struct CallContext {
    pub plugin: String,
    pub template: String,
    pub cache: Mutex<HashMap<String, (Vec<u8>, Instant)>>,
    pub keys: Option<Arc<dyn KeyStore>>,
    /// Keys `sign` may use (the template's `sign_keys` for this plugin); none by default.
    pub sign_keys: Vec<String>,
    /// Whether `sign` may use the active key (`key-id` none): the template's
    /// `sign_active_key: true`. Off by default: the active key is also the default key of
    /// every OAuth JWT assertion.
    pub sign_active_key: bool,
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
            sign_keys: Vec::new(),
            sign_active_key: false,
            http: None,
            allow_hosts: Vec::new(),
            timeout: Duration::from_secs(5),
        }
    }
}

/// The store data of one instance: its context, and the state of the call it is in. An
/// instance may serve several calls of one template version (`plugins.reuse`): everything
/// counted per call is reset by [`CallState::begin`] and the call's note written by
/// [`CallState::end`].
pub struct CallState {
    pub limits: InstanceLimits,
    pub ctx: Arc<CallContext>,
    started: Instant,
    /// Time spent in `fetch`, which the wall-clock limit does not count.
    host_time: Duration,
    budget: Duration,
    /// Whether the instance is starting: [`START_TIMEOUT`] is its limit then.
    starting: bool,
    fetches: u32,
    /// `log` lines written and dropped, and bytes written, in this call.
    log_lines: u32,
    log_bytes: usize,
    log_dropped: u32,
    /// Why the plugin was refused something that fails the call whatever the plugin does
    /// with the error it got (a `sign` with a key its template does not grant).
    pub refused: Option<String>,
}

impl CallState {
    pub fn new(limits: StoreLimits, ctx: Arc<CallContext>, budget: Duration) -> Self {
        Self {
            limits: InstanceLimits { limits, peak_memory: 0 },
            ctx,
            started: Instant::now(),
            host_time: Duration::ZERO,
            budget,
            starting: false,
            fetches: 0,
            log_lines: 0,
            log_bytes: 0,
            log_dropped: 0,
            refused: None,
        }
    }

    /// The key `sign` may use for `key_id`, or why not (naming the key and the template).
    fn granted_key(&self, keys: &dyn KeyStore, key_id: Option<String>) -> Result<String, String> {
        let ctx = &self.ctx;
        match key_id {
            Some(kid) if ctx.sign_keys.contains(&kid) => Ok(kid),
            Some(kid) => Err(format!(
                "key `{}` is not granted to template `{}` (grant it in the template's plugin section: `sign_keys: [{}]`)",
                text::name(&kid),
                ctx.template,
                text::name(&kid)
            )),
            None if ctx.sign_active_key => keys.active().map(|k| k.kid).map_err(|e| e.to_string()),
            None => Err(format!(
                "the active key is not granted to template `{}` (name a granted key, or set `sign_active_key: true` in the template's plugin section)",
                ctx.template
            )),
        }
    }

    /// A new call starts: its clock, and every per-call count (fetches, `log` lines and
    /// bytes, a refusal) from zero, as for a fresh instance.
    pub fn begin(&mut self) {
        self.started = Instant::now();
        self.starting = false;
        self.host_time = Duration::ZERO;
        self.fetches = 0;
        self.log_lines = 0;
        self.log_bytes = 0;
        self.log_dropped = 0;
        self.refused = None;
    }

    /// The call is over: the one note about the `log` lines it could not write.
    pub fn end(&mut self) {
        if self.log_dropped > 0 {
            let (plugin, template) = (&self.ctx.plugin, &self.ctx.template);
            tracing::warn!(
                plugin,
                template,
                "{} log lines dropped: a plugin call may log at most {MAX_LOG_LINES} lines and {MAX_LOG_BYTES} bytes",
                self.log_dropped
            );
            self.log_dropped = 0;
        }
    }

    /// A fresh instance starts: until the call [`CallState::begin`]s, its limit is
    /// [`START_TIMEOUT`].
    pub fn begin_start(&mut self) {
        self.begin();
        self.starting = true;
    }

    /// The guest has run longer than its budget.
    pub fn overdue(&self) -> bool {
        let budget = if self.starting { START_TIMEOUT.max(self.budget) } else { self.budget };
        self.started.elapsed().saturating_sub(self.host_time) > budget
    }
}

/// An instance's memory and table limits, and the largest linear memory it has had (its
/// pooled slot's use, which `hookgate plugin check` reports).
pub struct InstanceLimits {
    limits: StoreLimits,
    peak_memory: usize,
}

impl InstanceLimits {
    /// Bytes of the largest linear memory the instance has had.
    pub fn peak_memory(&self) -> usize {
        self.peak_memory
    }
}

impl ResourceLimiter for InstanceLimits {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.peak_memory = self.peak_memory.max(desired);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl Drop for CallState {
    /// The note of a call that did not end (it was cancelled).
    fn drop(&mut self) {
        self.end();
    }
}

impl host::Host for CallState {
    /// Escaped (a `\n` cannot start a forged line) and capped per line and per call.
    fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        let message = text::sanitize(&message, MAX_LOG_LINE);
        if self.log_lines >= MAX_LOG_LINES || self.log_bytes + message.len() > MAX_LOG_BYTES {
            self.log_dropped += 1;
            return Ok(());
        }
        self.log_lines += 1;
        self.log_bytes += message.len();
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
        let Some(keys) = self.ctx.keys.clone() else {
            return Ok(Err("this gateway has no key store".into()));
        };
        // Only the keys the template grants: a plugin must not sign as another partner
        // (a JWT assertion for another template's token URL). A refusal fails the call even
        // if the plugin goes on without the signature.
        let kid = match self.granted_key(keys.as_ref(), key_id) {
            Ok(kid) => kid,
            Err(why) => {
                self.refused.get_or_insert_with(|| format!("sign: {why}"));
                return Ok(Err(why));
            }
        };
        let alg = match alg {
            host::SigningAlg::Rs256 => SigningAlg::RS256,
            host::SigningAlg::Rs384 => SigningAlg::RS384,
            host::SigningAlg::Rs512 => SigningAlg::RS512,
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
        let url: url::Url = request.url.parse().map_err(|e| format!("not a URL: {e}"))?;
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        if !self.ctx.allow_hosts.contains(&host) {
            return Err(format!(
                "host `{host}` is not allowed: list it in the template's `allow_hosts` for this plugin"
            ));
        }
        let method =
            http::Method::from_bytes(request.method.as_bytes()).map_err(|_| "not an HTTP method".to_string())?;
        let mut headers = http::header::HeaderMap::new();
        for Header { name, value } in request.headers {
            let header_name = http::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`{name}` is not a header name"))?;
            let header_value = http::header::HeaderValue::from_str(&value)
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

#[cfg(test)]
mod tests {
    use hookgate_core::plugin::{KeyError, KeyInfo};

    use super::*;

    /// Two keys, `a` (active) and `b`; signs with a fixed signature.
    #[derive(Debug)]
    struct TwoKeys;

    impl KeyStore for TwoKeys {
        fn active(&self) -> Result<KeyInfo, KeyError> {
            self.key("a")
        }
        fn key(&self, kid: &str) -> Result<KeyInfo, KeyError> {
            match kid {
                "a" | "b" => Ok(KeyInfo { kid: kid.into(), alg: SigningAlg::RS256, bits: 2048 }),
                _ => Err(KeyError(format!("no key `{kid}`"))),
            }
        }
        fn sign(&self, kid: &str, _: SigningAlg, _: &[u8]) -> Result<String, KeyError> {
            self.key(kid).map(|_| URL_SAFE_NO_PAD.encode(kid))
        }
        fn jwks(&self) -> serde_json::Value {
            serde_json::json!({"keys": []})
        }
    }

    fn state(grant: &[&str], active: bool) -> CallState {
        let mut ctx = CallContext::new("signer", "partner-a");
        ctx.keys = Some(Arc::new(TwoKeys));
        ctx.sign_keys = grant.iter().map(|k| k.to_string()).collect();
        ctx.sign_active_key = active;
        CallState::new(StoreLimits::default(), Arc::new(ctx), Duration::from_secs(1))
    }

    fn sign(state: &mut CallState, key: Option<&str>) -> Result<String, String> {
        host::Host::sign(state, key.map(str::to_string), host::SigningAlg::Rs256, b"m".to_vec())
            .unwrap()
            .map(|s| s.key_id)
    }

    #[test]
    fn sign_uses_only_the_keys_the_template_grants() {
        let mut none = state(&[], false);
        let why = sign(&mut none, Some("b")).unwrap_err();
        assert!(why.contains("key `b` is not granted to template `partner-a`"), "{why}");
        assert_eq!(none.refused.as_deref(), Some(format!("sign: {why}").as_str()), "the call fails too");

        let mut granted = state(&["b"], false);
        assert_eq!(sign(&mut granted, Some("b")).unwrap(), "b");
        assert!(granted.refused.is_none());
        let why = sign(&mut granted, Some("a")).unwrap_err();
        assert!(why.contains("key `a` is not granted"), "{why}");
        assert!(granted.refused.is_some());
    }

    #[test]
    fn the_active_key_needs_its_own_grant() {
        // `a` is active, and granted by name: `key-id` none still is not.
        let mut by_name = state(&["a"], false);
        let why = sign(&mut by_name, None).unwrap_err();
        assert!(why.contains("the active key is not granted to template `partner-a`"), "{why}");
        assert!(why.contains("sign_active_key: true"), "{why}");
        assert!(by_name.refused.is_some());

        let mut active = state(&[], true);
        assert_eq!(sign(&mut active, None).unwrap(), "a");
        assert!(active.refused.is_none());
        // The active grant is not a grant of the other keys.
        assert!(sign(&mut active, Some("b")).is_err());
    }

    #[test]
    fn a_huge_key_id_is_cut_in_the_error() {
        let mut none = state(&[], false);
        let why = sign(&mut none, Some(&format!("{}\n", "k".repeat(100_000)))).unwrap_err();
        assert!(why.len() < 400 && !why.contains('\n'), "{why}");
    }

    #[test]
    fn log_lines_are_capped_per_call() {
        let mut calls = state(&[], false);
        for _ in 0..100 {
            host::Host::log(&mut calls, LogLevel::Info, "line\nforged".into()).unwrap();
        }
        assert_eq!((calls.log_lines, calls.log_dropped), (MAX_LOG_LINES, 100 - MAX_LOG_LINES));

        let mut bytes = state(&[], false);
        for _ in 0..20 {
            host::Host::log(&mut bytes, LogLevel::Info, "x".repeat(10_000)).unwrap();
        }
        assert!(bytes.log_bytes <= MAX_LOG_BYTES);
        assert_eq!(bytes.log_lines as usize, MAX_LOG_BYTES / MAX_LOG_LINE);
        assert_eq!(bytes.log_lines + bytes.log_dropped, 20);
    }

    /// A fresh instance's start has its own time limit; its call's starts after it.
    #[test]
    fn an_instance_start_has_its_own_time_limit() {
        let mut calls = state(&[], false);
        calls.begin_start();
        calls.started -= Duration::from_millis(1500);
        assert!(!calls.overdue(), "starting: within START_TIMEOUT");
        calls.started -= START_TIMEOUT;
        assert!(calls.overdue());
        calls.begin();
        assert!(!calls.overdue());
        calls.started -= Duration::from_millis(1500);
        assert!(calls.overdue(), "the call has its own budget (1 s here)");
    }

    /// A reused instance's next call starts with every per-call count at zero.
    #[test]
    fn each_call_starts_afresh() {
        let mut calls = state(&[], false);
        for _ in 0..100 {
            host::Host::log(&mut calls, LogLevel::Info, "line".into()).unwrap();
        }
        assert!(sign(&mut calls, Some("b")).is_err());
        calls.fetches = MAX_FETCHES + 1;
        calls.host_time = Duration::from_secs(5);
        calls.started -= Duration::from_secs(10);
        assert!(calls.overdue());
        calls.end();
        assert_eq!(calls.log_dropped, 0, "the note is written once");
        calls.begin();
        assert_eq!((calls.log_lines, calls.log_bytes, calls.log_dropped, calls.fetches), (0, 0, 0, 0));
        assert!(calls.refused.is_none());
        assert_eq!(calls.host_time, Duration::ZERO);
        assert!(!calls.overdue());
        host::Host::log(&mut calls, LogLevel::Info, "line".into()).unwrap();
        assert_eq!(calls.log_lines, 1, "the cap counts this call only");
    }
}
