//! `hookgate plugin check FILE.wasm`: a plugin author's first test. It loads the file against
//! the contract, runs it on a sample request and reports what it costs: the component's size,
//! its compile time, the memory an instance starts with and the time of a call.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hookgate_core::payload::test_payload;
use hookgate_plugin_host::bindings::hookgate::plugin::types::{Header, OutgoingRequest};
use hookgate_plugin_host::state::CallContext;
use hookgate_plugin_host::{CallError, PluginEngine};

/// Calls timed for the per-call cost, after the first.
const TIMED_CALLS: usize = 200;
/// Untimed calls before them: an interpreter's caches (QuickJS's shapes, CPython's
/// specialised bytecode) warm up over its first calls, as they do in a running gateway.
const WARM_UP_CALLS: usize = 100;

pub async fn run(file: &Path, with: &str, config_dir: &Path) -> anyhow::Result<ExitCode> {
    let settings = crate::commands::load_settings(config_dir)?;
    // Warnings (the compiled cache, the engine's address space) go to standard error; the
    // report is standard output.
    crate::logging::init(&settings.config.log, settings.config.log_format);
    let plugin_config: serde_json::Value =
        serde_json::from_str(with).context("--with must be a JSON object (the plugin's config)")?;
    anyhow::ensure!(plugin_config.is_object(), "--with must be a JSON object (the plugin's config)");
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin").to_string();
    // A cache of its own, as a gateway's `data_dir/plugin-cache`, to show what a restart costs.
    let cache = tempfile::tempdir().context("cannot create a temporary folder for the compiled cache")?;
    let engine = PluginEngine::new(settings.config.plugins.clone(), Some(cache.path().join("plugin-cache")))
        .map_err(|e| anyhow::anyhow!(e))?;

    let started = Instant::now();
    let plugin = match engine.load(&name, &bytes) {
        Ok(p) => p,
        Err(why) => {
            println!("{}: does not load: {why}", file.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    let compiled = started.elapsed();
    println!("{}: a component implementing hookgate:plugin@0.1.0 (world `plugin`)", file.display());
    println!("  sha256:   {}", plugin.sha256);
    println!("  size:     {} ({} bytes)", size(bytes.len()), bytes.len());
    print!("  compiled: {}", ms(compiled));
    let started = Instant::now();
    match engine.load(&name, &bytes) {
        Ok(cached) if cached.from_cache => {
            println!("; a restart loads it from the compiled cache in {}", ms(started.elapsed()))
        }
        _ => println!(),
    }
    println!("  exports:  describe, authorize, transform");
    let info = match engine.describe(&plugin).await {
        Ok(info) => info,
        Err(e) => {
            println!("  describe: failed: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("  name:     {} {}", info.name, info.version);
    println!("  does:     {}", info.capabilities.join(", "));

    let mut ok = true;
    let body = serde_json::to_vec(&test_payload())?;
    let config_json = plugin_config.to_string();
    let reuse = settings.config.plugins.reuse;
    if info.capabilities.iter().any(|c| c == "authorize") {
        let request = OutgoingRequest {
            template: "sample".into(),
            method: "POST".into(),
            url: "https://partner.example/hooks".into(),
            headers: vec![Header { name: "content-type".into(), value: "application/json".into() }],
            body: body.clone(),
        };
        // One template's instances, as a gateway keeps them.
        let pool = engine.pool(Arc::new(CallContext::new(&name, "sample")));
        let started = Instant::now();
        match engine.authorize_in(&plugin, &pool, &request, &config_json).await {
            Ok(leased) => {
                let elapsed = started.elapsed();
                let memory = leased.lease.memory_bytes();
                println!("  authorize (sample request, {} on a fresh instance):", ms(elapsed));
                for h in leased.keep() {
                    println!("    {}: {}", h.name, mask(&h.value));
                }
                println!("  memory:   {}", memory_line(memory, settings.config.plugins.memory_bytes));
                let calls = timed(async || {
                    engine.authorize_in(&plugin, &pool, &request, &config_json).await.map(|leased| leased.lease.keep())
                });
                ok &= report_cost("authorize", calls.await, reuse);
            }
            Err(e) => {
                ok = false;
                println!("  authorize: failed: {e}");
            }
        }
    }
    if info.capabilities.iter().any(|c| c == "transform") {
        let pool = engine.pool(Arc::new(CallContext::new(&name, "sample")));
        let started = Instant::now();
        match engine.transform_in(&plugin, &pool, &body, &config_json).await {
            Ok(leased) => {
                let elapsed = started.elapsed();
                let memory = leased.lease.memory_bytes();
                let output = leased.keep();
                let (requests, skipped) = (output.requests, output.skipped);
                println!(
                    "  transform (the test payload, {} on a fresh instance): {} request(s), {skipped} profile(s) skipped",
                    ms(elapsed),
                    requests.len()
                );
                for r in requests.iter().take(5) {
                    println!("    {} {} ({} bytes)", r.method, r.url, r.body.len());
                }
                println!("  memory:   {}", memory_line(memory, settings.config.plugins.memory_bytes));
                let calls = timed(async || {
                    engine.transform_in(&plugin, &pool, &body, &config_json).await.map(|leased| leased.lease.keep())
                });
                ok &= report_cost("transform", calls.await, reuse);
            }
            Err(e) => {
                ok = false;
                println!("  transform: failed: {e}");
            }
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// [`WARM_UP_CALLS`] calls, then [`TIMED_CALLS`] calls, each timed; the first error stops
/// them.
async fn timed(mut call: impl AsyncFnMut() -> Result<(), CallError>) -> Result<Vec<Duration>, CallError> {
    for _ in 0..WARM_UP_CALLS {
        call().await?;
    }
    let mut samples = Vec::with_capacity(TIMED_CALLS);
    for _ in 0..TIMED_CALLS {
        let started = Instant::now();
        call().await?;
        samples.push(started.elapsed());
    }
    samples.sort_unstable();
    Ok(samples)
}

/// Prints the p50 and p99 of the calls after the first; whether they all succeeded.
fn report_cost(export: &str, calls: Result<Vec<Duration>, CallError>, reuse: u32) -> bool {
    match calls {
        Ok(samples) => {
            let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
            let instances = if reuse > 1 {
                format!("an instance serves up to {reuse} calls (plugins.reuse)")
            } else {
                "a fresh instance each (plugins.reuse: 1)".to_string()
            };
            println!(
                "  per call: p50 {}, p99 {} ({} more {export} calls, after {WARM_UP_CALLS} untimed; {instances})",
                micros(at(0.5)),
                micros(at(0.99)),
                samples.len()
            );
            true
        }
        Err(e) => {
            println!("  per call: failed on a repeated call: {e}");
            false
        }
    }
}

fn memory_line(bytes: Option<usize>, limit: usize) -> String {
    match bytes {
        Some(bytes) => {
            format!("{} of linear memory after the call (plugins.memory_bytes: {})", size(bytes), size(limit))
        }
        None => "unknown".into(),
    }
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 { format!("{ms:.2} ms") } else { format!("{ms:.0} ms") }
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// Bytes in MiB (or KiB below one MiB).
fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// Header values can be credentials: show their beginning only.
fn mask(value: &str) -> String {
    let shown: String = value.chars().take(12).collect();
    if shown.len() < value.len() { format!("{shown}… ({} characters)", value.chars().count()) } else { shown }
}
