//! JWT client assertions (RFC 7523 §2.2, §3): a fresh signed JWT for every token request,
//! signed by the key store, so the private key never leaves it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hookgate_core::plugin::{AuthError, KeyInfo, KeyStore, SigningAlg};
use serde_json::{Map, Value, json};

use super::config::AssertionConfig;
use crate::keys::random_hex;

pub struct AssertionSigner {
    keys: Arc<dyn KeyStore>,
    key: Option<String>,
    alg: Option<SigningAlg>,
    lifetime: Duration,
    include_iat: bool,
    header: BTreeMap<String, Value>,
    claims: BTreeMap<String, Value>,
    client_id: String,
    audience: String,
}

impl AssertionSigner {
    /// Checks the key now, so a template naming a missing key fails at load.
    pub fn new(
        keys: Arc<dyn KeyStore>,
        config: AssertionConfig,
        client_id: &str,
        token_url: &str,
    ) -> Result<Self, String> {
        let signer = Self {
            keys,
            key: config.key,
            alg: config.alg,
            lifetime: config.lifetime,
            include_iat: config.include_iat,
            header: config.header,
            claims: config.claims,
            client_id: client_id.to_string(),
            audience: token_url.to_string(),
        };
        let key = signer.key_info().map_err(|e| format!("`assertion`: {e}"))?;
        signer.alg_for(&key).map_err(|e| format!("`assertion`: {e}"))?;
        Ok(signer)
    }

    fn key_info(&self) -> Result<KeyInfo, AuthError> {
        match &self.key {
            Some(kid) => self.keys.key(kid),
            None => self.keys.active(),
        }
        .map_err(|e| AuthError::permanent(e.to_string()))
    }

    /// The template's algorithm must be the one the key is published for (its JWK `alg`).
    fn alg_for(&self, key: &KeyInfo) -> Result<SigningAlg, AuthError> {
        match self.alg {
            Some(alg) if alg != key.alg => Err(AuthError::permanent(format!(
                "key `{}` is published for {} but `alg` is {alg}; create a key for {alg} (`hookgate keys generate --alg {alg}`)",
                key.kid, key.alg
            ))),
            Some(alg) => Ok(alg),
            None => Ok(key.alg),
        }
    }

    /// A new signed assertion: `header.claims.signature`, each base64url.
    pub fn sign(&self) -> Result<String, AuthError> {
        let key = self.key_info()?;
        let alg = self.alg_for(&key)?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();

        let mut header = Map::new();
        header.insert("alg".into(), json!(alg.as_str()));
        header.insert("typ".into(), json!("JWT"));
        header.insert("kid".into(), json!(key.kid));
        for (k, v) in &self.header {
            header.insert(k.clone(), v.clone());
        }

        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.client_id));
        claims.insert("sub".into(), json!(self.client_id));
        claims.insert("aud".into(), json!(self.audience));
        claims.insert("exp".into(), json!(now + self.lifetime.as_secs().max(1)));
        if self.include_iat {
            claims.insert("iat".into(), json!(now));
        }
        for (k, v) in &self.claims {
            if k != "jti" {
                claims.insert(k.clone(), v.clone());
            }
        }
        // Unique per assertion: a configured `jti` is a prefix of a random one.
        let random = random_hex(16);
        let jti = match self.claims.get("jti").and_then(Value::as_str) {
            Some(prefix) => format!("{prefix}-{random}"),
            None => random,
        };
        claims.insert("jti".into(), json!(jti));

        let encode = |v: &Map<String, Value>| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap_or_default());
        let signing_input = format!("{}.{}", encode(&header), encode(&claims));
        let signature =
            self.keys.sign(&key.kid, alg, signing_input.as_bytes()).map_err(|e| AuthError::permanent(e.to_string()))?;
        Ok(format!("{signing_input}.{signature}"))
    }
}
