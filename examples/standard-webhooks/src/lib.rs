//! Signs each webhook the way the Standard Webhooks spec does
//! (<https://www.standardwebhooks.com/>):
//!
//! - `webhook-id`: the message id, the same on every attempt of a request;
//! - `webhook-timestamp`: seconds since the Unix epoch;
//! - `webhook-signature`: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")),
//!   where the key is the base64 after the secret's `whsec_` prefix.
//!
//! Template: `auth: {type: standard-webhooks, secret: "${env:WEBHOOK_SECRET}"}`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hookgate_plugin_sdk::{
    Header, OutgoingRequest, Plugin, PluginError, PluginInfo, export_plugin, host, parse_config,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// `whsec_` + base64 key.
    secret: String,
    /// Prefix of message ids; default `msg_`.
    #[serde(default = "default_prefix")]
    id_prefix: String,
}

fn default_prefix() -> String {
    "msg_".into()
}

/// The key of a `whsec_` secret.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret.strip_prefix("whsec_").ok_or("`secret` must start with `whsec_`")?;
    STANDARD.decode(encoded).map_err(|_| "`secret` is not `whsec_` followed by base64".to_string())
}

/// `v1,<base64 signature>` of `{id}.{timestamp}.{body}`.
pub fn signature(key: &[u8], id: &str, timestamp: u64, body: &[u8], hmac: impl Fn(&[u8], &[u8]) -> Vec<u8>) -> String {
    let mut content = format!("{id}.{timestamp}.").into_bytes();
    content.extend_from_slice(body);
    format!("v1,{}", STANDARD.encode(hmac(key, &content)))
}

struct StandardWebhooks;

impl Plugin for StandardWebhooks {
    fn info() -> PluginInfo {
        PluginInfo::auth("standard-webhooks", env!("CARGO_PKG_VERSION"))
    }

    fn authorize(request: OutgoingRequest, config: &str) -> Result<Vec<Header>, PluginError> {
        let config: Config = parse_config(config)?;
        let key = secret_key(&config.secret).map_err(PluginError::permanent)?;
        // The id is derived from the body, so every attempt of a request carries the same id
        // and receivers can deduplicate.
        let digest = host::hmac_sha256(b"webhook-id", &request.body);
        let id: String =
            format!("{}{}", config.id_prefix, digest[..12].iter().map(|b| format!("{b:02x}")).collect::<String>());
        let timestamp = host::now_millis() / 1000;
        let signature = signature(&key, &id, timestamp, &request.body, host::hmac_sha256);
        Ok(vec![
            Header::new("webhook-id", &id),
            Header::new("webhook-timestamp", &timestamp.to_string()),
            Header::new("webhook-signature", &signature),
        ])
    }
}

export_plugin!(StandardWebhooks);

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{KeyInit, Mac};

    fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap();
        mac.update(message);
        mac.finalize().into_bytes().to_vec()
    }

    /// The spec's test vector (shared/test-vectors.md).
    #[test]
    fn signs_the_spec_test_vector() {
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#, hmac_sha256);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_need_the_prefix() {
        assert!(secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(secret_key("whsec_***").is_err());
    }
}
