//! The transform plugin contract: a plugin that turns a campaign payload into the requests
//! to send (one Zendesk ticket per low rating, say), instead of the template's batches.
//! Each request is then sent like a batch: with the template's auth, timeout and retries.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use http::header::HeaderMap;
use url::Url;

use super::auth::BuildContext;

/// Where and how one planned request goes (its body is kept beside it).
#[derive(Debug, Clone)]
pub struct RequestTarget {
    pub method: Method,
    pub url: Url,
    /// The template's headers with the plugin's on top; values marked sensitive.
    pub headers: HeaderMap,
}

/// One request a transform plans.
#[derive(Debug, Clone)]
pub struct PlannedRequest {
    pub target: Arc<RequestTarget>,
    pub body: Bytes,
    /// How many profiles it carries.
    pub profiles: usize,
}

/// What a transform makes of a payload.
#[derive(Debug, Clone, Default)]
pub struct Transformed {
    pub requests: Vec<PlannedRequest>,
    /// Profiles left out on purpose (counted, not failed).
    pub skipped: usize,
}

/// Plans the requests of one template's payloads. Built once per template version.
#[async_trait]
pub trait Transformer: Send + Sync + fmt::Debug {
    /// `payload` is the dispatch payload as JSON. A payload that cannot be transformed is
    /// refused (a dispatch answers 422; verification fails).
    async fn transform(&self, payload: &[u8]) -> Result<Transformed, TransformFailure>;
}

/// What went wrong in a transform. Its text never holds a secret: it is shown in API
/// answers and verification reasons.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformFailure {
    /// The plugin's call failed: it returned an error, trapped, or a limit stopped it.
    #[error("{0}")]
    Call(String),
    /// What it returned does not add up (the profiles its requests claim, say).
    #[error("returned bad output: {0}")]
    Output(String),
    /// One planned request cannot be sent as planned (0 is the first).
    #[error("request {index}: {why}")]
    Request { index: usize, why: String },
    /// It planned no request for the test payload, so verification has nothing to send.
    #[error("it plans no request for the test payload, so there is nothing to verify (set `verify: false`)")]
    NothingToVerify,
}

impl TransformFailure {
    /// The failure with its text passed through `clean` (redaction of the template's
    /// secrets, say).
    pub fn map_text(self, clean: impl Fn(String) -> String) -> Self {
        match self {
            Self::Call(why) => Self::Call(clean(why)),
            Self::Output(why) => Self::Output(clean(why)),
            Self::Request { index, why } => Self::Request { index, why: clean(why) },
            Self::NothingToVerify => Self::NothingToVerify,
        }
    }
}

/// Why a template's transform plugin could not plan a payload's requests: the plugin and
/// what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transform plugin `{plugin}`: {failure}")]
pub struct TransformError {
    pub plugin: String,
    pub failure: TransformFailure,
}

/// A named transform plugin: builds a [`Transformer`] from the template's `transform`
/// section (every key but `type`, references resolved).
pub trait TransformPlugin: Send + Sync {
    fn name(&self) -> &str;

    fn build(
        &self,
        ctx: &TransformContext<'_>,
        config: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Arc<dyn Transformer>, String>;
}

/// What a transform plugin gets besides its config: the plugin context, and the template's
/// URL and headers, which planned requests start from and must stay on (same scheme, host
/// and port).
#[derive(Debug, Clone)]
pub struct TransformContext<'a> {
    pub build: BuildContext<'a>,
    pub url: &'a Url,
    pub headers: &'a HeaderMap,
}

/// Whether `url` is on the template's origin (scheme, host, port).
pub fn same_origin(template: &Url, url: &Url) -> bool {
    template.scheme() == url.scheme()
        && template.host_str() == url.host_str()
        && template.port_or_known_default() == url.port_or_known_default()
}
