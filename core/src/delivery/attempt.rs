//! One attempt: authorize with the template's plugin, send, and on a 401 let the plugin
//! drop the credential and resend once.

use std::fmt;

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{HeaderName, HeaderValue};

use super::client::{HttpClient, Response, SendError, SendRequest};
use crate::plugin::{AuthError, OutgoingRequest, RequestTarget, Unauthorized};
use crate::template::Template;

/// Why an attempt got no answer to classify.
#[derive(Debug, Clone)]
pub enum AttemptError {
    /// The auth plugin could not produce headers (a token endpoint refused or timed out).
    Auth {
        plugin: String,
        error: AuthError,
    },
    /// The transform plugin could not plan the requests (verification only: a dispatch
    /// refuses such a payload up front).
    Transform {
        plugin: String,
        error: AuthError,
    },
    Send(SendError),
}

impl AttemptError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Auth { error, .. } => error.retryable,
            Self::Transform { .. } => false,
            Self::Send(e) => e.is_retryable(),
        }
    }
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auth { plugin, error } => write!(f, "auth plugin `{plugin}`: {error}"),
            Self::Transform { plugin, error } => write!(f, "transform plugin `{plugin}`: {error}"),
            Self::Send(e) => e.fmt(f),
        }
    }
}

/// The header that carries a request's delivery id: the same on every attempt of that
/// request, so receivers can deduplicate.
pub const DELIVERY_ID_HEADER: &str = "x-hookgate-delivery-id";

/// Sends `body` with the template's auth to `target` (a transform's planned request), or
/// with the template's method, URL and headers. `delivery_id`, when given, goes in
/// [`DELIVERY_ID_HEADER`] (auth plugins see it, so a signature can cover it).
pub async fn attempt(
    client: &HttpClient,
    template: &Template,
    target: Option<&RequestTarget>,
    body: &Bytes,
    delivery_id: Option<&str>,
) -> Result<Response, AttemptError> {
    let (method, url, template_headers) = match target {
        Some(t) => (&t.method, &t.url, &t.headers),
        None => (&template.method, &template.url, &template.headers),
    };
    let with_id;
    let base_headers = match delivery_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        Some(value) => {
            let mut headers = template_headers.clone();
            headers.insert(HeaderName::from_static(DELIVERY_ID_HEADER), value);
            with_id = headers;
            &with_id
        }
        None => template_headers,
    };
    let mut resent = false;
    loop {
        let request = OutgoingRequest { template: &template.name, method, url, headers: base_headers, body };
        let auth = template
            .auth
            .authorize(&request)
            .await
            .map_err(|error| AttemptError::Auth { plugin: template.auth_type.clone(), error })?;
        let mut headers = base_headers.clone();
        for (name, value) in auth.iter() {
            headers.insert(name.clone(), value.clone());
        }
        let response = template
            .client(client)
            .send(SendRequest { method, url, headers, body: body.clone(), timeout: template.timeout })
            .await
            .map_err(AttemptError::Send)?;
        if response.status == StatusCode::UNAUTHORIZED
            && !resent
            && template.auth.unauthorized(&auth).await == Unauthorized::ResendOnce
        {
            resent = true;
            continue;
        }
        return Ok(response);
    }
}
