//! `hookgate test TEMPLATE`: send the test payload and show the answer.

use std::path::Path;
use std::process::ExitCode;

use hookgate_core::delivery::retry::status_reason;
use hookgate_core::template::State;

pub async fn run(dir: &Path, name: &str) -> anyhow::Result<ExitCode> {
    let engine = super::one_shot_engine(dir).await?;
    let snapshot = engine.registry.snapshot();
    let Some(entry) = snapshot.entries.get(name) else {
        anyhow::bail!("no template named `{name}` in {}", engine.registry.dir().display());
    };
    if entry.active.is_none() && entry.candidate.is_none() {
        let reason = match &entry.state {
            State::Invalid { error } => error.to_string(),
            State::Unverified { reason, .. } => reason.clone(),
            State::Active => "no version is loaded".into(),
        };
        anyhow::bail!("template `{name}` does not load: {reason}");
    }
    let Some((template, outcome)) = engine.registry.test(name).await else {
        anyhow::bail!("template `{name}` has no loaded version");
    };
    println!(
        "{} {} (template `{}`, version {})",
        template.method,
        template.display_url(),
        template.name,
        template.version
    );
    match outcome {
        Ok(response) => {
            println!("{} in {:.1} ms", status_reason(response.status), response.latency.as_secs_f64() * 1000.0);
            if !response.body.is_empty() {
                println!("{}", String::from_utf8_lossy(&response.body));
            }
            Ok(if response.status.is_success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Err(error) => {
            println!("failed: {error}");
            Ok(ExitCode::FAILURE)
        }
    }
}
