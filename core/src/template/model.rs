//! The runtime template: validated once at load, immutable, shared by `Arc`.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http::header::HeaderMap;
use url::Url;

use crate::delivery::client::HttpClient;
use crate::plugin::{Authorizer, Transformer};
use crate::redact::Redactor;

/// One version of a template, ready to send. Deliveries hold an `Arc` to the version they
/// started with, so a reload never changes a delivery in flight.
pub struct Template {
    pub name: String,
    /// The file it was loaded from.
    pub file: PathBuf,
    /// Increases with every load of any template; identifies this version.
    pub version: u64,
    /// A hash of the file's text and its resolved references: equal digests, same template.
    pub digest: u64,
    pub url: Url,
    pub method: Method,
    /// Custom headers plus `Content-Type`; values are marked sensitive.
    pub headers: HeaderMap,
    pub timeout: Duration,
    pub retries: u32,
    pub batch_size: usize,
    pub verify: bool,
    /// The auth plugin's name (`none`, `basic`, ...).
    pub auth_type: String,
    pub auth: Arc<dyn Authorizer>,
    /// The transform plugin's name and transformer, when the template has one.
    pub transform: Option<(String, Arc<dyn Transformer>)>,
    /// The client built for the template's `tls` settings (its CA, its client certificate);
    /// `None` sends through the gateway's shared client.
    pub tls_client: Option<HttpClient>,
    /// The values of its `${..}` references: replaced by `[redacted]` in the outside text
    /// (a destination's answer) that its deliveries' reasons quote.
    pub secrets: Redactor,
}

impl Template {
    /// `1 + retries`.
    pub fn max_attempts(&self) -> u32 {
        self.retries.saturating_add(1)
    }

    /// The client this template's requests go through: its own when it has `tls`
    /// settings, otherwise `shared`.
    pub fn client<'a>(&'a self, shared: &'a HttpClient) -> &'a HttpClient {
        self.tls_client.as_ref().unwrap_or(shared)
    }

    /// The URL without user info and with its query masked: either can carry a credential
    /// (`${env:..}` in a query string), so this is the only form shown in answers and logs.
    pub fn display_url(&self) -> String {
        let mut shown = self.url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        let had_query = shown.query().is_some();
        shown.set_query(None);
        shown.set_fragment(None);
        if had_query { format!("{shown}?[redacted]") } else { shown.to_string() }
    }
}

#[cfg(test)]
impl Template {
    /// Version 1 of a template `name` sending to `url` with the defaults (POST, 5 s, 2
    /// retries, batches of 100), no auth header and no verification: for tests of what
    /// surrounds templates.
    pub(crate) fn for_tests(name: &str, url: Url) -> Self {
        Self {
            name: name.into(),
            file: PathBuf::from(format!("templates/{name}.yaml")),
            version: 1,
            digest: 0,
            url,
            method: Method::POST,
            headers: HeaderMap::new(),
            timeout: Duration::from_secs(5),
            retries: 2,
            batch_size: 100,
            verify: false,
            auth_type: "none".into(),
            auth: Arc::new(crate::plugin::auth::NoHeaders),
            transform: None,
            tls_client: None,
            secrets: Default::default(),
        }
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("method", &self.method)
            .field("url", &self.display_url())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("batch_size", &self.batch_size)
            .field("auth", &self.auth_type)
            .field("transform", &self.transform.as_ref().map(|(name, _)| name))
            .field("tls", &self.tls_client.is_some())
            .finish()
    }
}
