//! `hookgate token TEMPLATE`: obtain an access token now (the reference document's "Generate").

use std::path::Path;
use std::process::ExitCode;

use hookgate_core::template::State;

pub async fn run(dir: &Path, name: &str) -> anyhow::Result<ExitCode> {
    let engine = super::one_shot_engine(dir).await?;
    let snapshot = engine.registry.snapshot();
    let entry = snapshot.entries.get(name).ok_or_else(|| anyhow::anyhow!("no template named `{name}`"))?;
    let Some(template) = entry.active.clone() else {
        if let State::Invalid { error } = &entry.state {
            anyhow::bail!("template `{name}` does not load: {error}");
        }
        anyhow::bail!("template `{name}` has no loaded version");
    };
    let Some(result) = template.auth.fetch_token().await else {
        anyhow::bail!("template `{name}` uses auth `{}`, which has no tokens", template.auth_type);
    };
    match result {
        Ok(info) => {
            println!("token:      {}", info.masked);
            println!("type:       {}", info.token_type.as_deref().unwrap_or("(not given)"));
            println!("scopes:     {}", info.scopes.as_deref().unwrap_or("(none)"));
            println!("expires in: {} s (at {})", info.expires_in_secs, info.expires_at);
            println!(
                "refresh:    {}",
                if info.has_refresh_token { "a refresh token was issued" } else { "no refresh token" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            println!("failed: auth plugin `{}`: {error}", template.auth_type);
            Ok(ExitCode::FAILURE)
        }
    }
}
