//! Signs each webhook the way the Standard Webhooks spec does
//! (<https://www.standardwebhooks.com/>):
//!
//! - `webhook-id`: `msg_` + hookgate's delivery id: unique per request, the same on every
//!   attempt of it;
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
    let timestamp = timestamp.to_string();
    let mut content = Vec::with_capacity(id.len() + timestamp.len() + 2 + body.len());
    for part in [id.as_bytes(), b".", timestamp.as_bytes(), b".", body] {
        content.extend_from_slice(part);
    }
    let mut signature = String::with_capacity(48);
    signature.push_str("v1,");
    STANDARD.encode_string(hmac(key, &content), &mut signature);
    signature
}

/// The message id: `prefix` + the request's delivery id, which is unique per request and the
/// same on every attempt of it, so receivers can deduplicate. A request without one (the
/// test payload sent when a template loads) gets an id derived from its body.
pub fn message_id(
    prefix: &str,
    delivery_id: Option<&str>,
    body: &[u8],
    hmac: impl Fn(&[u8], &[u8]) -> Vec<u8>,
) -> String {
    let mut id = String::from(prefix);
    match delivery_id {
        Some(delivery) => id.push_str(delivery),
        None => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for byte in &hmac(b"webhook-id", body)[..12] {
                id.push(HEX[usize::from(byte >> 4)] as char);
                id.push(HEX[usize::from(byte & 15)] as char);
            }
        }
    }
    id
}

struct StandardWebhooks;

impl Plugin for StandardWebhooks {
    fn info() -> PluginInfo {
        PluginInfo::auth("standard-webhooks", env!("CARGO_PKG_VERSION"))
    }

    fn authorize(request: OutgoingRequest, config: &str) -> Result<Vec<Header>, PluginError> {
        let config: Config = parse_config(config)?;
        let key = secret_key(&config.secret).map_err(PluginError::permanent)?;
        let id = message_id(&config.id_prefix, request.delivery_id(), &request.body, host::hmac_sha256);
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
    fn the_message_id_is_the_delivery_id_or_derived_from_the_body() {
        assert_eq!(message_id("msg_", Some("0193-7"), b"{}", hmac_sha256), "msg_0193-7");
        let derived = message_id("msg_", None, b"{}", hmac_sha256);
        assert_eq!(derived.len(), 4 + 24, "{derived}");
        assert!(derived[4..].bytes().all(|b| b.is_ascii_hexdigit()), "{derived}");
        assert_eq!(derived, message_id("msg_", None, b"{}", hmac_sha256), "the same body, the same id");
        assert_ne!(derived, message_id("msg_", None, b"[]", hmac_sha256));
    }

    #[test]
    fn secrets_need_the_prefix() {
        assert!(secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(secret_key("whsec_***").is_err());
    }
}
