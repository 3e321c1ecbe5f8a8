//! `hookgate plugin check FILE.wasm`: a plugin author's first test.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use hookgate_core::payload::test_payload;
use hookgate_plugin_host::PluginEngine;
use hookgate_plugin_host::bindings::hookgate::plugin::types::{Header, OutgoingRequest};
use hookgate_plugin_host::state::CallContext;

use crate::cli::PluginAction;

pub async fn run(action: PluginAction) -> anyhow::Result<ExitCode> {
    let PluginAction::Check { file, with, config } = action;
    let settings = super::load_settings(&config.config)?;
    let plugin_config: serde_json::Value =
        serde_json::from_str(&with).context("--with must be a JSON object (the plugin's config)")?;
    anyhow::ensure!(plugin_config.is_object(), "--with must be a JSON object (the plugin's config)");
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin").to_string();
    let engine = PluginEngine::new(settings.config.plugins.clone(), None).map_err(|e| anyhow::anyhow!(e))?;

    let started = std::time::Instant::now();
    let plugin = match engine.load(&name, &bytes) {
        Ok(p) => p,
        Err(why) => {
            println!("{}: does not load: {why}", file.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("{}: a component implementing hookgate:plugin@0.1.0 (world `plugin`)", file.display());
    println!("  sha256:   {}", plugin.sha256);
    println!("  compiled: {:.0} ms", started.elapsed().as_secs_f64() * 1000.0);
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
    if info.capabilities.iter().any(|c| c == "authorize") {
        let request = OutgoingRequest {
            template: "sample".into(),
            method: "POST".into(),
            url: "https://partner.example/hooks".into(),
            headers: vec![Header { name: "content-type".into(), value: "application/json".into() }],
            body: body.clone(),
        };
        let ctx = Arc::new(CallContext::new(&name, "sample"));
        let started = std::time::Instant::now();
        match engine.authorize(&plugin, ctx, &request, &config_json).await {
            Ok(headers) => {
                println!("  authorize (sample request, {:.2} ms):", started.elapsed().as_secs_f64() * 1000.0);
                for h in headers {
                    println!("    {}: {}", h.name, mask(&h.value));
                }
            }
            Err(e) => {
                ok = false;
                println!("  authorize: failed: {e}");
            }
        }
    }
    if info.capabilities.iter().any(|c| c == "transform") {
        let ctx = Arc::new(CallContext::new(&name, "sample"));
        match engine.transform(&plugin, ctx, &body, &config_json).await {
            Ok(output) => {
                let (requests, skipped) = (output.requests, output.skipped);
                println!("  transform (the test payload): {} request(s), {skipped} profile(s) skipped", requests.len());
                for r in requests.iter().take(5) {
                    println!("    {} {} ({} bytes)", r.method, r.url, r.body.len());
                }
            }
            Err(e) => {
                ok = false;
                println!("  transform: failed: {e}");
            }
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Header values can be credentials: show their beginning only.
fn mask(value: &str) -> String {
    let shown: String = value.chars().take(12).collect();
    if shown.len() < value.len() { format!("{shown}… ({} characters)", value.chars().count()) } else { shown }
}
