//! The `oauth2` plugin's template keys (every key as the reference document's forms name it).

use std::collections::BTreeMap;
use std::time::Duration;

use hookgate_core::Secret;
use hookgate_core::duration::parse_duration;
use hookgate_core::plugin::SigningAlg;
use serde::{Deserialize, Deserializer};

/// The "Grant Type" list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// Password Credentials (RFC 6749 §4.3).
    Password,
    /// Client Credentials without JWT (RFC 6749 §4.4).
    ClientCredentials,
    /// Client Credentials with JWT: `private_key_jwt` (RFC 7523 §2.2).
    ClientCredentialsJwt,
}

/// "Client Authentication Type": how the client proves itself on a token request. The
/// reference document's two options are accepted as written, beside the short names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `Authorization: Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1): the
    /// reference's "Send Basic Authentication in Header".
    #[default]
    #[serde(alias = "Send Basic Authentication in Header")]
    Basic,
    /// `client_id` and `client_secret` as form fields. The reference's "Send Bearer
    /// Authentication in Header" describes the webhook's `Authorization: Bearer` header, which
    /// every choice sends (`header`, `prefix`); what it leaves to choose is the token request,
    /// whose credentials then go in the body, RFC 6749 §2.3.1's other way.
    #[serde(alias = "Send Bearer Authentication in Header")]
    Body,
}

/// The "Expiry" option.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Expiry {
    /// From the response's expiry field (`expires_in`), else [`DEFAULT_LIFETIME`].
    #[default]
    Auto,
    Fixed(Duration),
}

/// The lifetime of a token whose response has no expiry field, with `expiry: auto`.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

impl schemars::JsonSchema for ClientAuth {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ClientAuth".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "\"Client Authentication Type\": `basic` (Authorization: Basic on the token request, the default) or `body` (client_id and client_secret as form fields); the reference document's option names are accepted as written.",
            "enum": ["basic", "body", "Send Basic Authentication in Header", "Send Bearer Authentication in Header"],
            "default": "basic",
        })
    }
}

impl schemars::JsonSchema for Expiry {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Expiry".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let duration = generator.subschema_for::<hookgate_core::duration::Text>();
        schemars::json_schema!({
            "description": "The \"Expiry\" option: `auto` (the token response's `expires_in`, else 1h) or a duration such as `30m`.",
            "anyOf": [{"const": "auto"}, duration],
            "default": "auto",
        })
    }
}

/// `RS256`, `RS384` or `RS512`, as an assertion's `alg` is written.
struct AlgText;

impl schemars::JsonSchema for AlgText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SigningAlg".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"enum": ["RS256", "RS384", "RS512"]})
    }
}

impl<'de> Deserialize<'de> for Expiry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "auto" {
            return Ok(Self::Auto);
        }
        parse_duration(&text)
            .map(Self::Fixed)
            .map_err(|e| serde::de::Error::custom(format!("`expiry` must be `auto` or a duration: {e}")))
    }
}

fn default_token_field() -> String {
    "access_token".into()
}
fn default_refresh_field() -> String {
    "refresh_token".into()
}
fn default_expires_field() -> String {
    "expires_in".into()
}
fn default_header() -> String {
    "Authorization".into()
}
fn default_prefix() -> String {
    "Bearer ".into()
}
fn default_lifetime() -> Duration {
    Duration::from_secs(300)
}
fn default_true() -> bool {
    true
}

/// `auth: {type: oauth2, ...}`: OAuth 2.0 (password, client credentials, or client
/// credentials with a JWT assertion), every key as the reference document's forms name it.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    /// The "Grant Type".
    pub grant: Grant,
    /// "Access Token URL".
    pub token_url: String,
    /// "Refresh Token URL" (password grant); default `token_url`.
    #[serde(default)]
    pub refresh_url: Option<String>,
    pub client_id: String,
    /// The client secret (not with `client_credentials_jwt`).
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// The resource owner (password grant only).
    #[serde(default)]
    pub username: Option<String>,
    /// The resource owner's password (password grant only).
    #[serde(default)]
    pub password: Option<Secret>,
    /// The scopes asked for.
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub client_auth: ClientAuth,
    #[serde(default)]
    pub expiry: Expiry,
    /// Where the access token sits in the token response (a dotted path: `data.token`).
    #[serde(default = "default_token_field")]
    pub token_field: String,
    /// Where the refresh token sits in the token response.
    #[serde(default = "default_refresh_field")]
    pub refresh_token_field: String,
    /// Where the lifetime in seconds sits (with `expiry: auto`).
    #[serde(default = "default_expires_field")]
    pub expires_in_field: String,
    /// The webhook request header that carries the token.
    #[serde(default = "default_header")]
    pub header: String,
    /// What goes before the token in that header.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The JWT client assertion (`client_credentials_jwt` only).
    #[serde(default)]
    pub assertion: Option<AssertionConfig>,
}

/// `assertion:` — the JWT client assertion (client_credentials_jwt only).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AssertionConfig {
    /// A key in the key store; default the active key.
    #[serde(default)]
    pub key: Option<String>,
    /// RS256 | RS384 | RS512; default the key's algorithm.
    #[serde(default, deserialize_with = "deserialize_alg")]
    #[schemars(with = "Option<AlgText>")]
    pub alg: Option<SigningAlg>,
    /// `exp = iat + lifetime`; default 5m.
    #[serde(default = "default_lifetime", deserialize_with = "hookgate_core::duration::deserialize")]
    #[schemars(with = "hookgate_core::duration::Text")]
    pub lifetime: Duration,
    /// The reference document's "Use Issued At".
    #[serde(default = "default_true")]
    pub include_iat: bool,
    /// Extra header fields: `typ`, `kid` (default the key's id), `cty`, `crit`, and private
    /// names that `crit` may list.
    #[serde(default)]
    pub header: BTreeMap<String, serde_json::Value>,
    /// Overrides of `iss`, `sub` (default client_id), `aud` (default token_url), `jti`
    /// (default random and unique), and extra claims.
    #[serde(default)]
    pub claims: BTreeMap<String, serde_json::Value>,
}

fn deserialize_alg<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SigningAlg>, D::Error> {
    Option::<String>::deserialize(d)?.map(|s| s.parse().map_err(serde::de::Error::custom)).transpose()
}

impl Default for AssertionConfig {
    /// What a template without an `assertion` section gets.
    fn default() -> Self {
        Self {
            key: None,
            alg: None,
            lifetime: default_lifetime(),
            include_iat: default_true(),
            header: BTreeMap::new(),
            claims: BTreeMap::new(),
        }
    }
}

/// Header names RFC 7515/7519 register: `crit` may not list them (RFC 7515 §4.1.11).
pub const REGISTERED_HEADER_NAMES: &[&str] =
    &["alg", "jku", "jwk", "kid", "x5u", "x5c", "x5t", "x5t#S256", "typ", "cty", "crit", "enc", "zip", "b64"];

impl OAuth2Config {
    /// Checks what serde cannot: keys each grant needs or refuses, and `crit`.
    pub fn validate(&self) -> Result<(), String> {
        if self.client_id.is_empty() {
            return Err("`client_id` must not be empty".into());
        }
        match self.grant {
            Grant::Password => {
                if self.username.as_deref().is_none_or(str::is_empty) {
                    return Err("`username` is required with `grant: password`".into());
                }
                if self.password.is_none() {
                    return Err("`password` is required with `grant: password`".into());
                }
            }
            Grant::ClientCredentials | Grant::ClientCredentialsJwt => {
                if self.username.is_some() || self.password.is_some() {
                    let key = if self.username.is_some() { "username" } else { "password" };
                    return Err(format!("`{key}` is only for `grant: password`"));
                }
                if self.refresh_url.is_some() {
                    return Err("`refresh_url` is only for `grant: password`".into());
                }
            }
        }
        match self.grant {
            Grant::Password | Grant::ClientCredentials => {
                if self.client_secret.is_none() {
                    return Err("`client_secret` is required with this grant".into());
                }
                if self.assertion.is_some() {
                    return Err("`assertion` is only for `grant: client_credentials_jwt`".into());
                }
            }
            Grant::ClientCredentialsJwt => {
                if self.client_secret.is_some() {
                    return Err("`client_secret` is not used with `grant: client_credentials_jwt`: the signed assertion authenticates the client".into());
                }
            }
        }
        if let Some(a) = &self.assertion {
            validate_assertion_header(&a.header)?;
            if a.lifetime.is_zero() {
                return Err("`assertion`: `lifetime` must be more than 0".into());
            }
            for key in a.claims.keys() {
                if matches!(key.as_str(), "exp" | "iat") {
                    return Err(format!("`assertion`: claim `{key}` is computed (use `lifetime` and `include_iat`)"));
                }
            }
        }
        if self.header.is_empty() || http::header::HeaderName::from_bytes(self.header.as_bytes()).is_err() {
            return Err("`header` is not a valid header name".into());
        }
        for (key, path) in [
            ("token_field", &self.token_field),
            ("refresh_token_field", &self.refresh_token_field),
            ("expires_in_field", &self.expires_in_field),
        ] {
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(format!("`{key}` must be a field name or a dotted path such as `data.token`"));
            }
        }
        Ok(())
    }
}

/// `typ`, `kid` and `cty` are strings; `alg` is set by `assertion.alg`; `crit` must list
/// only names present in the header that are not registered ones (RFC 7515 §4.1.11).
pub fn validate_assertion_header(header: &BTreeMap<String, serde_json::Value>) -> Result<(), String> {
    for (key, value) in header {
        match key.as_str() {
            "alg" => {
                return Err("`assertion`: set the algorithm with `alg`, not `header.alg`".into());
            }
            "typ" | "kid" | "cty" if !value.is_string() => {
                return Err(format!("`assertion`: header `{key}` must be a string"));
            }
            "jku" | "jwk" | "x5u" | "x5c" | "x5t" | "x5t#S256" | "enc" | "zip" | "b64" => {
                return Err(format!("`assertion`: header `{key}` is not supported"));
            }
            _ => {}
        }
    }
    if let Some(crit) = header.get("crit") {
        let names = crit
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or("`assertion`: header `crit` must be a non-empty list of header names")?;
        for name in names {
            let name = name.as_str().ok_or("`assertion`: header `crit` must list names (strings)")?;
            if REGISTERED_HEADER_NAMES.contains(&name) {
                return Err(format!(
                    "`assertion`: header `crit` lists `{name}`, a registered header name (RFC 7515 §4.1.11 forbids it)"
                ));
            }
            if !header.contains_key(name) {
                return Err(format!(
                    "`assertion`: header `crit` lists `{name}`, which is not in the header (RFC 7515 §4.1.11)"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn header(v: serde_json::Value) -> BTreeMap<String, serde_json::Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn crit_rules() {
        assert!(validate_assertion_header(&header(json!({"typ": "JWT", "kid": "k1", "cty": "JWT"}))).is_ok());
        assert!(validate_assertion_header(&header(json!({"crit": ["acme"], "acme": 1}))).is_ok());
        let e = validate_assertion_header(&header(json!({"crit": ["exp", "aud"]}))).unwrap_err();
        assert!(e.contains("`exp`, which is not in the header"), "{e}");
        let e = validate_assertion_header(&header(json!({"crit": ["kid"], "kid": "x"}))).unwrap_err();
        assert!(e.contains("registered"), "{e}");
        assert!(validate_assertion_header(&header(json!({"crit": []}))).is_err());
        assert!(validate_assertion_header(&header(json!({"alg": "none"}))).is_err());
    }

    /// The reference document's words for "Client Authentication Type" are values too.
    #[test]
    fn client_auth_takes_the_reference_documents_words() {
        let client_auth = |value: &str| serde_json::from_value::<ClientAuth>(json!(value));
        assert_eq!(client_auth("basic").unwrap(), ClientAuth::Basic);
        assert_eq!(client_auth("body").unwrap(), ClientAuth::Body);
        assert_eq!(client_auth("Send Basic Authentication in Header").unwrap(), ClientAuth::Basic);
        assert_eq!(client_auth("Send Bearer Authentication in Header").unwrap(), ClientAuth::Body);
        let wrong = client_auth("Send Digest Authentication in Header").unwrap_err().to_string();
        assert!(wrong.contains("basic") && wrong.contains("body"), "{wrong}");
    }
}
