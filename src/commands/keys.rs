//! `hookgate keys generate|rotate|list|jwks|public`: the signing keys of JWT client assertions.

use std::path::Path;
use std::process::ExitCode;

use hookgate_auth::keys::FileKeyStore;
use hookgate_core::clock::rfc3339;
use hookgate_core::plugin::{KeyStore, SigningAlg};

use crate::cli::KeysAction;

pub fn run(dir: &Path, action: KeysAction) -> anyhow::Result<ExitCode> {
    let settings = super::load_settings(dir)?;
    let store = FileKeyStore::open(&settings.keys_dir(), settings.config.keys.grace);
    let when = |secs: u64| rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
    match action {
        KeysAction::Generate { key } => {
            let alg: SigningAlg = key.alg.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let made = store.generate(key.id.as_deref(), key.bits, alg, false).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("generated key `{}` ({} bits, {}), {}", made.kid, made.bits, made.alg, made.status);
            println!("its public key: hookgate keys public {}", made.kid);
        }
        KeysAction::Rotate { key } => {
            let alg: SigningAlg = key.alg.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let previous = store.active().ok();
            let made = store.generate(key.id.as_deref(), key.bits, alg, true).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("key `{}` ({} bits, {}) is now active", made.kid, made.bits, made.alg);
            if let Some(previous) = previous {
                let grace = hookgate_core::duration::format_duration(settings.config.keys.grace);
                println!("key `{}` stays in the JWKS and may still sign for {grace}", previous.kid);
            }
        }
        KeysAction::List => {
            let keys = store.list().map_err(|e| anyhow::anyhow!("{e}"))?;
            if keys.is_empty() {
                println!("no keys in {}; create one with `hookgate keys generate`", store.dir().display());
            }
            for k in keys {
                let until = k.jwks_until.map(|u| format!(" (in the JWKS until {})", when(u))).unwrap_or_default();
                println!("{}\t{}\t{} bits\tcreated {}\t{}{until}", k.kid, k.alg, k.bits, when(k.created_at), k.status);
            }
        }
        KeysAction::Jwks => {
            println!("{}", serde_json::to_string_pretty(&store.jwks())?);
        }
        KeysAction::Public { id } => {
            let kid = match id {
                Some(id) => id,
                None => store.active().map_err(|e| anyhow::anyhow!("{e}"))?.kid,
            };
            print!("{}", store.public_pem(&kid).map_err(|e| anyhow::anyhow!("{e}"))?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
