//! The cost of a WASM auth plugin on the delivery path, beside the built-in `basic`:
//!
//! - per call: `authorize` of the Standard Webhooks example (a fresh limited instance per
//!   call) and of `basic`, p50 and p99;
//! - end to end: deliveries per second through the engine (dispatch, queue, workers, HTTP)
//!   to one local endpoint, for a template using each.
//!
//! Run: `cargo bench --bench plugins` (builds the example for wasm32-wasip2 first).
//! Targets (issue 4): p50 under 50 µs per plugin call; plugin throughput at least 80% of basic's.

#[path = "../tests/common/wasm.rs"]
mod wasm;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hookgate_core::config::{PluginLimits, Settings};
use hookgate_core::engine::{Engine, EngineOptions};
use hookgate_core::payload::Payload;
use hookgate_core::plugin::{Authorizer, OutgoingRequest, PluginRegistry};
use hookgate_plugin_host::bindings::hookgate::plugin::types;
use hookgate_plugin_host::state::CallContext;
use hookgate_plugin_host::{PluginEngine, WasmPlugins};

const CALLS: usize = 20_000;
const DELIVERIES: usize = 20_000;
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    let p50 = percentile(&samples, 0.5);
    println!(
        "  {name:<28} p50 {:>8.1} µs   p99 {:>8.1} µs   ({} calls)",
        p50.as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6,
        samples.len()
    );
    p50
}

async fn per_call() -> Duration {
    println!("per call (authorize of one 2 KiB request):");
    let body: Vec<u8> = serde_json::to_vec(&serde_json::json!({"targetId": 1, "profiles": vec![serde_json::json!({"Identity": "user", "Email": "user@example.com"}); 40]})).unwrap();
    let engine = PluginEngine::new(PluginLimits::default(), None).unwrap();
    let plugin = engine.load("standard-webhooks", &std::fs::read(wasm::guest("standard_webhooks")).unwrap()).unwrap();
    let ctx = Arc::new(CallContext::new("standard-webhooks", "bench"));
    let request = types::OutgoingRequest {
        template: "bench".into(),
        method: "POST".into(),
        url: "http://127.0.0.1/".into(),
        headers: vec![types::Header { name: "content-type".into(), value: "application/json".into() }],
        body: body.clone(),
    };
    let config = format!(r#"{{"secret":"{SECRET}"}}"#);
    for _ in 0..500 {
        engine.authorize(&plugin, ctx.clone(), &request, &config).await.unwrap();
    }
    let mut samples = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let t = Instant::now();
        engine.authorize(&plugin, ctx.clone(), &request, &config).await.unwrap();
        samples.push(t.elapsed());
    }
    let wasm_p50 = report("standard-webhooks (WASM)", samples);

    let basic = hookgate_auth::BasicAuth::new("svc", &hookgate_core::Secret::new("password")).unwrap();
    let (method, url, headers, body) = (
        reqwest::Method::POST,
        reqwest::Url::parse("http://127.0.0.1/").unwrap(),
        reqwest::header::HeaderMap::new(),
        Bytes::from(body),
    );
    let outgoing = OutgoingRequest { template: "bench", method: &method, url: &url, headers: &headers, body: &body };
    let mut samples = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let t = Instant::now();
        basic.authorize(&outgoing).await.unwrap();
        samples.push(t.elapsed());
    }
    report("basic (built-in)", samples);
    wasm_p50
}

async fn endpoint() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async { "ok" });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn throughput() -> (f64, f64) {
    println!("end to end ({DELIVERIES} deliveries of one profile each, to one local endpoint):");
    let addr = endpoint().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hookgate.yaml"),
        "network: {allow: [loopback]}\nworkers: 64\nlimits: {dispatch_records: 100}\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    std::fs::copy(wasm::guest("standard_webhooks"), dir.path().join("plugins/standard-webhooks.wasm")).unwrap();
    let common = format!("url: http://{addr}/hook\nverify: false\nbatch_size: 1\n");
    std::fs::write(
        dir.path().join("templates/basic.yaml"),
        format!("{common}auth: {{type: basic, username: svc, password: pw}}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("templates/wasm.yaml"),
        format!("{common}auth: {{type: standard-webhooks, secret: \"{SECRET}\"}}\n"),
    )
    .unwrap();

    let settings = Settings::load(dir.path()).unwrap();
    let plugin_engine = PluginEngine::new(settings.config.plugins.clone(), None).unwrap();
    let wasm_plugins = WasmPlugins::new(Arc::new(plugin_engine), &settings.plugins_dir());
    wasm_plugins.rescan().await;
    let mut plugins = PluginRegistry::new();
    hookgate_auth::register_builtins(&mut plugins);
    plugins.add_source(wasm_plugins);
    let (engine, report) =
        Engine::start(settings, plugins, None, EngineOptions { watch: false, verify: false, persist: false })
            .await
            .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);

    let profiles: Vec<serde_json::Value> =
        (0..DELIVERIES).map(|i| serde_json::json!({"Identity": i, "Email": "user@example.com"})).collect();
    let mut rates = Vec::new();
    for (round, name) in ["basic", "wasm", "basic", "wasm"].iter().enumerate() {
        let payload = Payload::from_value(serde_json::json!({"targetId": round, "profiles": profiles})).unwrap();
        let started = Instant::now();
        let accepted = engine.dispatcher.dispatch(name, payload, None).await.unwrap();
        engine.records.wait_finished(accepted.dispatch_id, |_, _| {}).await;
        let rate = DELIVERIES as f64 / started.elapsed().as_secs_f64();
        let stats = engine.stats.campaign(&round.to_string()).unwrap();
        assert_eq!(stats.total.requests.delivered as usize, DELIVERIES, "{name}: every request delivered");
        rates.push((name.to_string(), rate));
    }
    // The second round of each, after warm-up.
    let basic = rates[2].1;
    let wasm = rates[3].1;
    println!("  {:<28} {basic:>10.0} deliveries/s", "basic (built-in)");
    println!("  {:<28} {wasm:>10.0} deliveries/s", "standard-webhooks (WASM)");
    engine.shutdown(std::time::Duration::from_secs(5)).await;
    (basic, wasm)
}

/// The binary's allocator (src/main.rs), so the figures are the gateway's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    hookgate_core::delivery::client::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let p50 = per_call().await;
        let (basic, wasm) = throughput().await;
        let ratio = wasm / basic;
        println!("result:");
        println!(
            "  plugin call p50 {:.1} µs (target < 50 µs: {}); plugin throughput {:.0}% of basic (target >= 80%: {})",
            p50.as_secs_f64() * 1e6,
            if p50 < Duration::from_micros(50) { "met" } else { "NOT met" },
            ratio * 100.0,
            if ratio >= 0.8 { "met" } else { "NOT met" }
        );
    });
}
