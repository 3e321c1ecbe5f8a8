//! The template file as written: strict, documented, parsed once.
//!
//! ```yaml
//! name: orders                 # optional; defaults to the file stem
//! url: https://partner.example.com/hooks
//! method: POST                 # POST | PUT | GET | DELETE
//! headers: {X-Team: growth, X-Api-Key: "${env:ORDERS_API_KEY}"}
//! timeout: 5s
//! retries: 2
//! batch_size: 100
//! verify: true
//! auth: {type: basic, username: svc, password: "${env:SVC_PASSWORD}"}
//! tls: {ca: "${file:partner-ca.pem}", client_cert: "${file:client.pem}", client_key: "${file:client.key}"}
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::duration;

/// A webhook template (`templates/NAME.yaml`): where a campaign's payload goes, how, and
/// with which auth. Every key a template may have; unknown keys are errors.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// The template's name; defaults to the file stem.
    #[serde(default)]
    pub name: Option<String>,
    /// The destination URL (`${env:..}` references allowed).
    pub url: String,
    /// The HTTP method; default POST.
    #[serde(default)]
    pub method: MethodSpec,
    /// Custom headers (the reference document's "+ Key-Value Pair").
    #[serde(default)]
    pub headers: BTreeMap<String, Scalar>,
    /// Per-attempt timeout; default `defaults.timeout` (5s).
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    #[schemars(with = "Option<duration::Text>")]
    pub timeout: Option<Duration>,
    /// Retries after the first attempt; default `defaults.retries` (2).
    #[serde(default)]
    pub retries: Option<u32>,
    /// Profiles per outgoing request; default `defaults.batch_size` (100).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Send the test payload on load and activate only on a 2xx answer; default true.
    #[serde(default)]
    pub verify: Option<bool>,
    /// The auth plugin and its config; default `{type: none}`.
    #[serde(default)]
    pub auth: Option<PluginSpec>,
    /// A transform plugin that turns the payload into requests.
    #[serde(default)]
    pub transform: Option<PluginSpec>,
    /// TLS settings for the destination and the auth plugin's token requests.
    #[serde(default)]
    pub tls: Option<TlsSpec>,
}

/// `tls: {ca, client_cert, client_key}`: PEM text, usually through `${file:..}` references.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// CA certificate(s) to trust instead of the system's roots (PEM; a bundle may hold
    /// several).
    #[serde(default)]
    pub ca: Option<String>,
    /// The client certificate chain for mTLS (PEM, the leaf first); needs `client_key`.
    #[serde(default)]
    pub client_cert: Option<String>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1). A secret.
    #[serde(default)]
    pub client_key: Option<String>,
}

impl fmt::Debug for TlsSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSpec")
            .field("ca", &self.ca.is_some())
            .field("client_cert", &self.client_cert.is_some())
            .field("client_key", &self.client_key.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// The four methods of the reference document (written in any case).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MethodSpec {
    #[default]
    POST,
    PUT,
    GET,
    DELETE,
}

impl<'de> Deserialize<'de> for MethodSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.to_ascii_uppercase().as_str() {
            "POST" => Ok(Self::POST),
            "PUT" => Ok(Self::PUT),
            "GET" => Ok(Self::GET),
            "DELETE" => Ok(Self::DELETE),
            _ => Err(de::Error::custom(format!("unknown method `{text}`; use POST, PUT, GET or DELETE"))),
        }
    }
}

impl JsonSchema for MethodSpec {
    fn schema_name() -> Cow<'static, str> {
        "Method".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // Any case, as the loader reads it; editors suggest the upper-case names.
        json_schema!({
            "type": "string",
            "pattern": "^([Pp][Oo][Ss][Tt]|[Pp][Uu][Tt]|[Gg][Ee][Tt]|[Dd][Ee][Ll][Ee][Tt][Ee])$",
            "examples": ["POST", "PUT", "GET", "DELETE"],
            "default": "POST",
        })
    }
}

impl From<MethodSpec> for http::Method {
    fn from(m: MethodSpec) -> Self {
        match m {
            MethodSpec::POST => Self::POST,
            MethodSpec::PUT => Self::PUT,
            MethodSpec::GET => Self::GET,
            MethodSpec::DELETE => Self::DELETE,
        }
    }
}

/// `{type: NAME, ...config}`: a plugin reference with the plugin's own keys.
#[derive(Debug, Deserialize)]
pub struct PluginSpec {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub config: BTreeMap<String, serde_json::Value>,
}

/// The plugin's keys are its own: the schema requires `type` and leaves the rest to the
/// plugin (the built-in auth plugins' keys are added by the binary, which knows them).
impl JsonSchema for PluginSpec {
    fn schema_name() -> Cow<'static, str> {
        "PluginSpec".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "description": "A plugin and its config: `type` names it (a built-in such as `none`, `basic`, `oauth2`, or a WASM plugin's file stem); every other key is the plugin's config.",
            "required": ["type"],
            "properties": {"type": {"type": "string", "minLength": 1}},
        })
    }
}

/// A header value: any YAML scalar, kept as text (`X-Version: 2` is the string "2").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar(pub String);

impl JsonSchema for Scalar {
    fn schema_name() -> Cow<'static, str> {
        "HeaderValue".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": ["string", "number", "boolean"],
            "description": "A header value: text (`${env:NAME}` and `${file:PATH}` references allowed), a number or a boolean.",
        })
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}
