//! `hookgate validate`: check the config folder without running the gateway.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use hookgate_core::delivery::client::HttpClient;
use hookgate_core::delivery::verify::verify;
use hookgate_core::template::{Loader, Registry};

pub async fn run(dir: &Path, with_verify: bool) -> anyhow::Result<ExitCode> {
    let settings = match hookgate_core::config::Settings::load(dir) {
        Ok(s) => s,
        Err(e) => {
            println!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let templates_dir = settings.templates_dir();
    if !templates_dir.is_dir() {
        println!("{}: the templates folder does not exist", templates_dir.display());
        return Ok(ExitCode::FAILURE);
    }
    let client = HttpClient::new(settings.config.network.clone()).map_err(|e| anyhow::anyhow!(e))?;
    let (plugins, wasm) = crate::plugins::load(&settings).await?;
    let mut problems = 0;
    for (name, why) in wasm.errors() {
        problems += 1;
        println!("{}:1:1: plugin `{name}` does not load: {why}", wasm.dir().join(format!("{name}.wasm")).display());
    }
    let loader = Loader {
        refs: settings.confinement(),
        defaults: settings.config.defaults.clone(),
        plugins: std::sync::Arc::new(plugins),
        client: client.clone(),
        keys: Some(super::key_store(&settings)),
    };
    // The same registry `serve` uses, without verification, so validate reports exactly
    // what serve would refuse (including two files claiming one name).
    let registry = Registry::new(loader, templates_dir, false, Duration::MAX);
    let report = registry.rescan().await;
    problems += report.errors.len();
    for error in &report.errors {
        println!("{error}");
    }
    let snapshot = registry.snapshot();
    let valid: Vec<_> = snapshot.entries.values().filter_map(|e| e.active.clone()).collect();
    if with_verify {
        for template in &valid {
            match verify(&client, template).await {
                Ok(()) => {
                    println!("{}: verified ({} {})", template.file.display(), template.method, template.display_url())
                }
                Err(reason) => {
                    problems += 1;
                    println!("{}:1:1: {reason}", template.file.display());
                }
            }
        }
    }
    if problems == 0 {
        println!("ok: {} template(s) valid", valid.len());
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{problems} problem(s) found");
        Ok(ExitCode::FAILURE)
    }
}
