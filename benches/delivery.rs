//! Delivery throughput by queue backend, and isolation between destinations:
//!
//! - deliveries per second through the engine (dispatch, store, queue, workers, HTTP) to
//!   one local endpoint, with the in-memory queue, the durable SQLite default, and (when
//!   `HOOKGATE_BENCH_POSTGRES_URL` names a server) PostgreSQL;
//! - a healthy destination's deliveries per second alone, and while another destination
//!   hangs every request until its timeout.
//!
//! Run: `cargo bench --bench delivery`.
//! Targets (issue 6): the durable default at least 60% of in-memory; a hanging destination
//! slows a healthy one by at most 10%.

use std::time::{Duration, Instant};

mod common;

use common::endpoint;
use hookgate_core::config::Settings;
use hookgate_core::engine::{Engine, EngineOptions};
use hookgate_core::payload::Payload;
use hookgate_core::plugin::PluginRegistry;

const DELIVERIES: usize = 20_000;

/// An engine on a config folder of its own with `hookgate.yaml` and the given templates.
async fn engine(config: &str, templates: &[(&str, String)]) -> (Engine, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hookgate.yaml"), config).unwrap();
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    for (name, text) in templates {
        std::fs::write(dir.path().join("templates").join(format!("{name}.yaml")), text).unwrap();
    }
    let settings = Settings::load(dir.path()).unwrap();
    let mut plugins = PluginRegistry::new();
    hookgate_auth::register_builtins(&mut plugins);
    let (engine, report) =
        Engine::start(settings, plugins, None, EngineOptions { watch: false, verify: false, persist: true })
            .await
            .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    (engine, dir)
}

/// A campaign id unique to this run and `n` (a PostgreSQL database may hold earlier runs).
fn campaign_id(n: usize) -> String {
    static RUN: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap().as_nanos());
    format!("bench-{run}-{n}")
}

fn payload(target: usize, n: usize) -> Payload {
    let profiles: Vec<serde_json::Value> =
        (0..n).map(|i| serde_json::json!({"Identity": i, "Email": "user@example.com"})).collect();
    Payload::from_value(serde_json::json!({"targetId": campaign_id(target), "profiles": profiles})).unwrap()
}

/// Deliveries per second of one `n`-request campaign through `template`, from the dispatch
/// to its last request finishing (the campaign stats must show every request delivered).
async fn campaign(engine: &Engine, template: &str, target: usize, n: usize) -> f64 {
    let started = Instant::now();
    let accepted = engine.dispatcher.dispatch(template, payload(target, n), None).await.unwrap();
    engine.records.wait_finished(accepted.dispatch_id, |_, _| {}).await;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let stats = engine.campaign_stats(&campaign_id(target)).await.unwrap().unwrap();
    assert_eq!(stats.total.requests.delivered as usize, n, "{template}: every request delivered");
    rate
}

async fn backends() -> (f64, f64) {
    println!(
        "end to end by queue backend ({DELIVERIES} deliveries of one profile each, 64 workers, one local endpoint):"
    );
    let addr = endpoint(None, false).await;
    let template = [("hook", format!("url: http://{addr}/hook\nverify: false\nbatch_size: 1\n"))];
    let mut queues = vec![("memory", "memory".to_string()), ("sqlite (default)", "sqlite".to_string())];
    match std::env::var("HOOKGATE_BENCH_POSTGRES_URL") {
        Ok(url) => queues.push(("postgres", url)),
        Err(_) => println!("  (postgres: set HOOKGATE_BENCH_POSTGRES_URL to a database to include it)"),
    }
    let mut rates = Vec::new();
    for (name, queue) in queues {
        let config = format!("network: {{allow: [loopback]}}\nworkers: 64\nqueue: {queue}\n");
        let (engine, _dir) = engine(&config, &template).await;
        // A warm-up round, then the measured one.
        campaign(&engine, "hook", 1, DELIVERIES / 4).await;
        let rate = campaign(&engine, "hook", 2, DELIVERIES).await;
        println!("  {name:<28} {rate:>10.0} deliveries/s");
        engine.shutdown(Duration::from_secs(5)).await;
        rates.push(rate);
    }
    (rates[0], rates[1])
}

async fn isolation() -> (f64, f64) {
    const HEALTHY: usize = 5_000;
    println!(
        "isolation ({HEALTHY} deliveries to a healthy endpoint answering in 5 ms, 64 workers, sqlite; \
         the other destination never answers, 2s timeout):"
    );
    let healthy = endpoint(Some(Duration::from_millis(5)), false).await;
    let hanging = endpoint(None, true).await;
    let templates = [
        ("healthy", format!("url: http://{healthy}/\nverify: false\nbatch_size: 1\n")),
        ("hanging", format!("url: http://{hanging}/\nverify: false\nbatch_size: 1\ntimeout: 2s\nretries: 0\n")),
    ];
    let (engine, _dir) = engine("network: {allow: [loopback]}\nworkers: 64\n", &templates).await;
    campaign(&engine, "healthy", 1, HEALTHY / 5).await;
    let alone = campaign(&engine, "healthy", 2, HEALTHY).await;
    println!("  {:<28} {alone:>10.0} deliveries/s", "healthy, alone");
    // Far more hanging requests than the destination may have in flight.
    engine.dispatcher.dispatch("hanging", payload(3, 2_000), None).await.unwrap();
    let beside = campaign(&engine, "healthy", 4, HEALTHY).await;
    println!("  {:<28} {beside:>10.0} deliveries/s", "healthy, beside the hanging");
    engine.shutdown(Duration::from_millis(100)).await;
    (alone, beside)
}

fn main() {
    hookgate_core::delivery::client::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (memory, durable) = backends().await;
        let (alone, beside) = isolation().await;
        let ratio = durable / memory;
        let slowdown = 1.0 - beside / alone;
        println!("result:");
        println!(
            "  durable default {:.0}% of in-memory (target >= 60%: {}); hanging destination slows a healthy one by {:.1}% (target <= 10%: {})",
            ratio * 100.0,
            if ratio >= 0.6 { "met" } else { "NOT met" },
            slowdown * 100.0,
            if slowdown <= 0.10 { "met" } else { "NOT met" }
        );
    });
}
