//! The cost of a WASM auth plugin on the delivery path, beside the built-in `basic`:
//!
//! - per call: `authorize` of the Standard Webhooks example in Rust, Python and JavaScript
//!   (fresh limits per call, on an instance reused for `plugins.reuse` calls), of a floor (the test plugin's `calm` mode:
//!   two fixed headers, so its cost is nearly all the host's) and of `basic`, p50 and p99;
//! - end to end: deliveries per second through the engine (dispatch, queue, workers, HTTP)
//!   to one local endpoint, for a template using each, in alternating rounds (the median of
//!   five rounds each), with one profile per request and with 100, and the CPU time each
//!   delivery takes (gateway and endpoint: they share the process).
//!
//! Run: `cargo bench --bench plugins` (builds the examples first: for wasm32-wasip2, and
//! with componentize-py and componentize-qjs when they are installed, see README.md);
//! `-- per-call` or `-- throughput` runs one part; `HOOKGATE_BENCH_REUSE=N` sets
//! `plugins.reuse` (default: its default; `1` is a fresh instance per call).
//! Targets: p50 under 50 µs per plugin call, plugin throughput at least 80% of basic's
//! (issue 4); p50 at most 15 µs in Rust, 200 µs in Python and JavaScript (issue 16).

mod common;
#[path = "../tests/common/wasm.rs"]
mod wasm;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hookgate_core::config::{PluginLimits, Settings};
use hookgate_core::engine::{Engine, EngineOptions};
use hookgate_core::payload::Payload;
use hookgate_core::plugin::{Authorizer, OutgoingRequest, PluginRegistry};
use hookgate_plugin_host::bindings::hookgate::plugin::types;
use hookgate_plugin_host::state::CallContext;
use hookgate_plugin_host::{PluginEngine, WasmPlugins};

/// Calls measured per plugin; `HOOKGATE_BENCH_CALLS` sets another count (more, to profile).
fn calls() -> usize {
    std::env::var("HOOKGATE_BENCH_CALLS").ok().and_then(|n| n.parse().ok()).unwrap_or(20_000)
}
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// `plugins.reuse` of the run: `HOOKGATE_BENCH_REUSE`, or the default.
fn reuse() -> u32 {
    std::env::var("HOOKGATE_BENCH_REUSE").ok().and_then(|n| n.parse().ok()).unwrap_or(PluginLimits::default().reuse)
}

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

/// The p50 of a call of the Standard Webhooks example in each language measured.
async fn per_call() -> Vec<(&'static str, Duration)> {
    println!("per call (authorize of one 2 KiB request; plugins.reuse: {}):", reuse());
    let body: Vec<u8> = serde_json::to_vec(&serde_json::json!({"targetId": 1, "profiles": vec![serde_json::json!({"Identity": "user", "Email": "user@example.com"}); 40]})).unwrap();
    let engine = PluginEngine::new(PluginLimits { reuse: reuse(), ..PluginLimits::default() }, None).unwrap();
    let plugin = engine.load("standard-webhooks", &std::fs::read(wasm::guest("standard_webhooks")).unwrap()).unwrap();
    let request = types::OutgoingRequest {
        template: "bench".into(),
        method: "POST".into(),
        url: "http://127.0.0.1/".into(),
        // The headers of a real delivery: the template's and the delivery id.
        headers: vec![
            types::Header { name: "content-type".into(), value: "application/json".into() },
            types::Header {
                name: hookgate_core::delivery::attempt::DELIVERY_ID_HEADER.into(),
                value: "0193b5a2-7c1e-7d35-9a4f-2b8c61d0e4f7.0".into(),
            },
        ],
        body: body.clone(),
    };
    let config = format!(r#"{{"secret":"{SECRET}"}}"#);
    // One template's pool, as a template's authorizer has.
    let pool = engine.pool(Arc::new(CallContext::new(&plugin.name, "bench")));
    let wasm = time(async || {
        engine.authorize_in(&plugin, &pool, &request, &config).await.unwrap().keep();
    });
    let mut p50s = vec![("Rust", report("standard-webhooks (Rust)", wasm.await))];
    for (lang, label, source) in [
        (wasm::Lang::Python, "Python", "examples/standard-webhooks-py"),
        (wasm::Lang::Js, "JavaScript", "examples/standard-webhooks-js/plugin.js"),
    ] {
        if !lang.available("cargo bench --bench plugins") {
            continue;
        }
        let plugin =
            engine.load("standard-webhooks", &std::fs::read(wasm::polyglot_guest(lang, source)).unwrap()).unwrap();
        let pool = engine.pool(Arc::new(CallContext::new(&plugin.name, "bench")));
        let samples = time(async || {
            engine.authorize_in(&plugin, &pool, &request, &config).await.unwrap().keep();
        });
        p50s.push((label, report(&format!("standard-webhooks ({label})"), samples.await)));
    }
    // The floor: the test plugin's `calm` mode adds two fixed headers, so nearly all of its
    // cost is the host's (an instance, limits, passing the request in and out).
    let calm = engine.load("calm", &std::fs::read(wasm::guest("hookgate_test_plugin")).unwrap()).unwrap();
    let pool = engine.pool(Arc::new(CallContext::new(&calm.name, "bench")));
    let floor = time(async || {
        engine.authorize_in(&calm, &pool, &request, r#"{"mode":"calm"}"#).await.unwrap().keep();
    });
    report("calm test plugin (floor)", floor.await);

    let basic = hookgate_auth::BasicAuth::new("svc", &hookgate_core::Secret::new("password")).unwrap();
    let (method, url, headers, body) = (
        reqwest::Method::POST,
        reqwest::Url::parse("http://127.0.0.1/").unwrap(),
        reqwest::header::HeaderMap::new(),
        hookgate_core::body::RequestBody::from(body),
    );
    let outgoing = OutgoingRequest { template: "bench", method: &method, url: &url, headers: &headers, body: &body };
    let samples = time(async || {
        basic.authorize(&outgoing).await.unwrap();
    });
    report("basic (built-in)", samples.await);
    p50s
}

/// `calls()` timed runs of `call`, after 500 to warm up.
async fn time(mut call: impl AsyncFnMut()) -> Vec<Duration> {
    for _ in 0..500 {
        call().await;
    }
    let mut samples = Vec::with_capacity(calls());
    for _ in 0..calls() {
        let t = Instant::now();
        call().await;
        samples.push(t.elapsed());
    }
    samples
}

/// Paired rounds measured per scenario, after one warm-up pair.
const PAIRS: usize = 5;

/// One end-to-end scenario: `deliveries` requests of `batch` profiles each.
struct Scenario {
    batch: usize,
    deliveries: usize,
}

/// Prints the rounds and their medians; returns the median of the pairs' WASM / basic ratios.
async fn throughput(scenario: &Scenario) -> f64 {
    let Scenario { batch, deliveries } = *scenario;
    println!(
        "end to end ({deliveries} deliveries of {batch} profile{} each, to one local endpoint; basic and WASM \
         rounds alternate with a floor, a WASM plugin that adds two fixed headers; each pair's ratio taken):",
        if batch == 1 { "" } else { "s" }
    );
    let addr = common::endpoint(None, false).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hookgate.yaml"),
        format!(
            "network: {{allow: [loopback]}}\nworkers: 64\nlimits: {{dispatch_records: 100}}\nplugins: {{reuse: {}}}\n",
            reuse()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    std::fs::copy(wasm::guest("standard_webhooks"), dir.path().join("plugins/standard-webhooks.wasm")).unwrap();
    std::fs::copy(wasm::guest("hookgate_test_plugin"), dir.path().join("plugins/calm.wasm")).unwrap();
    let common = format!("url: http://{addr}/hook\nverify: false\nbatch_size: {batch}\n");
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
    std::fs::write(dir.path().join("templates/floor.yaml"), format!("{common}auth: {{type: calm, mode: calm}}\n"))
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
        (0..deliveries * batch).map(|i| serde_json::json!({"Identity": i, "Email": "user@example.com"})).collect();
    let mut round = 0;
    let mut run = async |name: &str| {
        round += 1;
        let payload = Payload::from_value(serde_json::json!({"targetId": round, "profiles": profiles})).unwrap();
        let (started, cpu) = (Instant::now(), cpu_time());
        let accepted = engine.dispatcher.dispatch(name, payload, None).await.unwrap();
        engine.records.wait_finished(accepted.dispatch_id, |_, _| {}).await;
        let rate = deliveries as f64 / started.elapsed().as_secs_f64();
        let cpu = cpu_time().saturating_sub(cpu).as_secs_f64() * 1e6 / deliveries as f64;
        let stats = engine.stats.campaign(&round.to_string()).unwrap();
        assert_eq!(stats.total.requests.delivered as usize, deliveries, "{name}: every request delivered");
        (rate, cpu)
    };
    for name in ["basic", "wasm", "floor"] {
        run(name).await;
    }
    let (mut basic, mut wasm, mut ratios, mut floor) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for pair in 1..=PAIRS {
        let (b, b_cpu) = run("basic").await;
        let (w, w_cpu) = run("wasm").await;
        let (f, f_cpu) = run("floor").await;
        println!(
            "  pair {pair}: basic {b:>7.0}/s ({b_cpu:5.1} µs CPU each), WASM {w:>7.0}/s ({w_cpu:5.1} µs): {:>3.0}%; \
             floor {f:>7.0}/s ({f_cpu:5.1} µs): {:>3.0}%",
            w / b * 100.0,
            f / b * 100.0
        );
        basic.push(b);
        wasm.push(w);
        ratios.push(w / b);
        floor.push(f / b);
    }
    engine.shutdown(Duration::from_secs(5)).await;
    println!("  {:<28} {:>10.0} deliveries/s (median)", "basic (built-in)", median(basic));
    println!("  {:<28} {:>10.0} deliveries/s (median)", "standard-webhooks (WASM)", median(wasm));
    println!(
        "  {:<28} {:>9.0}% of basic (median): what a plugin call costs the host by itself",
        "calm test plugin (floor)",
        median(floor) * 100.0
    );
    median(ratios)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// CPU time used by every thread of this process so far (Linux: the sum of
/// `/proc/self/task/*/schedstat`), zero where that cannot be read.
fn cpu_time() -> Duration {
    let tasks = std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten();
    let nanos = tasks
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

fn main() {
    hookgate_core::delivery::client::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    // `cargo bench --bench plugins -- per-call` (or `-- throughput`) runs one part only.
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let runs = |part: &str| only.as_deref().is_none_or(|only| only == part);
    runtime.block_on(async {
        let p50s = if runs("per-call") { per_call().await } else { Vec::new() };
        // The target's scenario: one profile per request, so the plugin's share of each
        // delivery is largest. Then the design's example batch size (100).
        let scenarios = [Scenario { batch: 1, deliveries: 20_000 }, Scenario { batch: 100, deliveries: 2_000 }];
        let mut results = Vec::new();
        if runs("throughput") {
            for scenario in &scenarios {
                results.push((scenario.batch, throughput(scenario).await));
            }
        }
        println!("result:");
        for (lang, p50) in p50s {
            let target = if lang == "Rust" { 15 } else { 200 };
            let met = if p50 <= Duration::from_micros(target) { "met" } else { "NOT met" };
            println!("  {lang} plugin call p50 {:.1} µs (target <= {target} µs: {met})", p50.as_secs_f64() * 1e6);
        }
        for (batch, ratio) in results {
            let met = if ratio >= 0.8 { "met" } else { "NOT met" };
            println!(
                "  batch_size {batch:>3}: plugin throughput {:.0}% of basic (median of {PAIRS} pairs; target >= 80%: {met})",
                ratio * 100.0
            );
        }
    });
}
