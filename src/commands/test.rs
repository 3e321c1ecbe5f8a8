//! `hookgate test TEMPLATE`: send the test payload and show the answer. The answer is the
//! endpoint's text: it comes with the request's secrets redacted, and is printed with its
//! control characters escaped (line breaks kept), so it cannot drive the terminal.

use std::path::Path;
use std::process::ExitCode;

use hookgate_core::delivery::retry::status_reason;
use hookgate_core::redact::{Lines, REASON_CHARS, escape_controls, sanitize};
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
        anyhow::bail!("template `{name}` does not load: {}", escape_controls(&reason, Lines::Keep));
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
                println!("{}", escape_controls(&String::from_utf8_lossy(&response.body), Lines::Keep));
            }
            Ok(if response.status.is_success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Err(error) => {
            println!("failed: {}", sanitize(&error.to_string(), REASON_CHARS));
            Ok(ExitCode::FAILURE)
        }
    }
}
