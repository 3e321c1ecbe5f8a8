//! A plugin whose config picks its behaviour, so the tests can check that each kind of
//! hostility fails only its own delivery:
//! `calm` (the default: adds `x-test-plugin: calm`), `loop`, `memory`, `recursion`, `trap`, `huge`,
//! `fetch` (to `url`), `jwt` (signs a JWT with key `key` of the host's key store, or the active
//! key), `sign-quiet` (signs with `key` and goes on without the signature if refused), `log`
//! (floods the log with lines that try to forge others), `cache`, `count` (counts its calls in
//! a global and reports the count in `x-count`, so a test sees whether its instance was
//! reused; a request body holding `count:trap`, `count:loop`, `count:memory`, `count:error` or
//! `count:huge` makes that call trap, loop, exhaust memory, return an error or too many
//! headers, after counting it).
//!
//! As a transform (`transform: {type: ..., mode: ...}`, requests to `url`): `calm` (one request
//! per profile), `long-error` (a huge error with newlines), `empty` (many empty requests),
//! `profiles` (one request claiming 1000 profiles), `double` (every profile counted twice).

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hookgate_plugin_sdk::host::{self, FetchRequest, SigningAlg};
use hookgate_plugin_sdk::{
    Header, OutgoingRequest, Plugin, PluginError, PluginInfo, Request, TransformOutput, export_plugin, parse_config,
};
use serde::Deserialize;

/// Calls of this instance in mode `count`: a global, so it lives as long as the instance.
static CALLS: AtomicU64 = AtomicU64::new(0);

/// Unknown keys are ignored, so the same template can name this plugin or another.
#[derive(Deserialize)]
struct Config {
    #[serde(default = "calm")]
    mode: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

fn calm() -> String {
    "calm".into()
}

struct TestPlugin;

#[inline(never)]
fn recurse(depth: u64, trail: &mut Vec<u64>) -> u64 {
    let mut local = [depth; 64];
    local[(depth % 64) as usize] = std::hint::black_box(depth);
    trail.push(local[0]);
    if std::hint::black_box(true) { recurse(depth + 1, trail) + local[3] } else { 0 }
}

impl Plugin for TestPlugin {
    fn info() -> PluginInfo {
        PluginInfo::auth("hookgate-test-plugin", env!("CARGO_PKG_VERSION"))
    }

    fn authorize(request: OutgoingRequest, config: &str) -> Result<Vec<Header>, PluginError> {
        let config: Config = parse_config(config)?;
        let mode = match config.mode.as_str() {
            "count" => {
                let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
                let body = String::from_utf8_lossy(&request.body);
                match ["trap", "loop", "memory", "error", "huge"]
                    .into_iter()
                    .find(|m| body.contains(&format!("count:{m}")))
                {
                    Some("error") => return Err(PluginError::permanent("count: an error on purpose")),
                    Some(mode) => mode,
                    None => return Ok(vec![Header::new("x-count", &calls.to_string())]),
                }
            }
            mode => mode,
        };
        match mode {
            "calm" => Ok(vec![Header::new("x-test-plugin", "calm"), Header::new("x-template", &request.template)]),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recursion" => {
                let mut trail = Vec::new();
                let n = recurse(0, &mut trail);
                Ok(vec![Header::new("x-depth", &n.to_string())])
            }
            "trap" => panic!("the test plugin panics on purpose"),
            "huge" => Ok((0..2000).map(|i| Header::new(&format!("x-huge-{i}"), &"h".repeat(1000))).collect()),
            "fetch" => {
                let url = config.url.unwrap_or_else(|| "http://not-allowed.invalid/".into());
                let response = host::fetch(&FetchRequest { method: "GET".into(), url, headers: vec![], body: vec![] })
                    .map_err(|e| PluginError::permanent(format!("fetch failed: {e}")))?;
                Ok(vec![Header::new("x-fetched-status", &response.status.to_string())])
            }
            "jwt" => {
                let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
                let now = host::now_millis() / 1000;
                let claims = URL_SAFE_NO_PAD.encode(format!(
                    r#"{{"iss":"test-plugin","sub":"{}","iat":{now},"exp":{}}}"#,
                    request.template,
                    now + 300
                ));
                let input = format!("{header}.{claims}");
                let signature = host::sign(config.key.as_deref(), SigningAlg::Rs256, input.as_bytes())
                    .map_err(|e| PluginError::permanent(format!("sign failed: {e}")))?;
                let jwt = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&signature.value));
                Ok(vec![Header::new("x-jwt", &jwt), Header::new("x-jwt-kid", &signature.key_id)])
            }
            "sign-quiet" => {
                let signed = host::sign(config.key.as_deref(), SigningAlg::Rs256, b"anything").is_ok();
                Ok(vec![Header::new("x-signed", if signed { "yes" } else { "no" })])
            }
            "log" => {
                for i in 0..100 {
                    host::log(
                        host::LogLevel::Info,
                        &format!("line {i}\n2030-01-01T00:00:00.000000Z ERROR hookgate: forged admin_token=leaked"),
                    );
                }
                Ok(vec![Header::new("x-test-plugin", "logged")])
            }
            "cache" => {
                let hits = match host::cache_get("count") {
                    Some(v) => u64::from_le_bytes(v.try_into().unwrap_or_default()) + 1,
                    None => 0,
                };
                host::cache_set("count", &hits.to_le_bytes(), 60_000);
                Ok(vec![Header::new("x-cache-hits", &hits.to_string())])
            }
            other => Err(PluginError::permanent(format!("unknown mode `{other}`"))),
        }
    }

    fn transform(payload: &[u8], config: &str) -> Result<TransformOutput, PluginError> {
        let config: Config = parse_config(config)?;
        let url = config.url.unwrap_or_default();
        let payload: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| PluginError::permanent(format!("payload: {e}")))?;
        let profiles = payload["profiles"].as_array().map(Vec::len).unwrap_or(0) as u32;
        let one = |n: u32| Request::json("POST", &url, &serde_json::json!({"n": n}), n);
        let requests = match config.mode.as_str() {
            "calm" => (0..profiles).map(|_| one(1)).collect(),
            "long-error" => {
                let line = "no\n2030-01-01T00:00:00.000000Z ERROR hookgate: forged\u{1b}[2J ";
                return Err(PluginError::permanent(line.repeat(20_000)));
            }
            "empty" => (0..50_000)
                .map(|_| Request { method: "GET".into(), url: url.clone(), headers: vec![], body: vec![], profiles: 0 })
                .collect(),
            "profiles" => vec![one(1000)],
            "double" => (0..profiles).flat_map(|_| [one(1), one(1)]).collect(),
            other => return Err(PluginError::permanent(format!("unknown mode `{other}`"))),
        };
        Ok(TransformOutput { requests, skipped: 0 })
    }
}

export_plugin!(TestPlugin);
