//! The signing-key contract: plugins sign with a key by id and never see it.
//!
//! The key store itself (RSA keys on disk, rotation, JWKS) lives in `hookgate-auth`; OAuth's
//! JWT client assertions and WASM plugins' `sign` import reach it through [`KeyStore`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The JWS algorithms hookgate signs with (RSASSA-PKCS1-v1_5, RFC 7518 §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SigningAlg {
    RS256,
    RS384,
    RS512,
}

impl SigningAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
        }
    }
}

impl fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SigningAlg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "RS256" => Ok(Self::RS256),
            "RS384" => Ok(Self::RS384),
            "RS512" => Ok(Self::RS512),
            other => Err(format!("`{other}` is not a supported algorithm; use RS256, RS384 or RS512")),
        }
    }
}

/// Why a key operation failed (never containing key material).
#[derive(Debug, Clone, thiserror::Error)]
#[error("key store: {0}")]
pub struct KeyError(pub String);

/// A public description of a signing key.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: SigningAlg,
    pub bits: usize,
}

/// Signs with keys the caller names but never holds.
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// The key new signatures should use.
    fn active(&self) -> Result<KeyInfo, KeyError>;

    /// A key by id, if it exists and may still sign (not retired past its grace period).
    fn key(&self, kid: &str) -> Result<KeyInfo, KeyError>;

    /// Signs `message` with key `kid`; returns the signature, base64url without padding
    /// (the JWS encoding).
    fn sign(&self, kid: &str, alg: SigningAlg, message: &[u8]) -> Result<String, KeyError>;

    /// The public keys partners may verify with, as a JWK Set (RFC 7517 §5).
    fn jwks(&self) -> serde_json::Value;
}
