//! {{name}}: a hookgate auth plugin. It signs every webhook so the receiver can check that
//! it comes from you and was not changed:
//!
//! - `x-signature-timestamp`: seconds since the Unix epoch (the host's clock);
//! - `x-signature-256`: `sha256=` + hex(HMAC-SHA256(secret, "{timestamp}.{body}")) (the host's
//!   HMAC), the secret being the template's `secret`.
//!
//! Change `authorize` to add the headers your partner expects; see the SDK's documentation
//! (`hookgate-plugin-sdk/src/lib.rs`) and hookgate's guide to plugins (docs/plugins.md).

use hookgate_plugin_sdk::{
    Header, OutgoingRequest, Plugin, PluginError, PluginInfo, export_plugin, host, parse_config, serde_json,
};

struct Signer;

impl Plugin for Signer {
    fn info() -> PluginInfo {
        PluginInfo::auth("{{name}}", env!("CARGO_PKG_VERSION"))
    }

    fn authorize(request: OutgoingRequest, config: &str) -> Result<Vec<Header>, PluginError> {
        let config: serde_json::Value = parse_config(config)?;
        let secret = config["secret"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| PluginError::permanent("bad config: `secret` must be a non-empty string"))?;
        let timestamp = (host::now_millis() / 1000).to_string();
        let mut signed = format!("{timestamp}.").into_bytes();
        signed.extend_from_slice(&request.body);
        let signature: String =
            host::hmac_sha256(secret.as_bytes(), &signed).iter().map(|b| format!("{b:02x}")).collect();
        Ok(vec![
            Header::new("x-signature-timestamp", &timestamp),
            Header::new("x-signature-256", &format!("sha256={signature}")),
        ])
    }
}

export_plugin!(Signer);
