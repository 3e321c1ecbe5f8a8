//! One attempt: authorize with the template's plugin, send, and on a 401 let the plugin
//! drop the credential and resend once. What comes back (the answer's body, an error's
//! text) is outside text: it leaves here with the request's secrets redacted.

use std::fmt;

use bytes::Bytes;
use http::StatusCode;
use http::header::{HeaderName, HeaderValue};

use super::client::{HttpClient, MAX_BODY, Response, SendError, SendRequest};
use crate::body::RequestBody;
use crate::plugin::{AuthError, AuthHeaders, OutgoingRequest, RequestTarget, TransformError, Unauthorized};
use crate::redact::{Ending, REASON_CHARS, Redactor};
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
    Transform(TransformError),
    Send(SendError),
}

impl AttemptError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Auth { error, .. } => error.retryable,
            Self::Transform(_) => false,
            Self::Send(e) => e.is_retryable(),
        }
    }
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auth { plugin, error } => write!(f, "auth plugin `{plugin}`: {error}"),
            Self::Transform(e) => e.fmt(f),
            Self::Send(e) => e.fmt(f),
        }
    }
}

/// The header that carries a request's delivery id: the same on every attempt of that
/// request, so receivers can deduplicate.
pub const DELIVERY_ID_HEADER: &str = "x-hookgate-delivery-id";

impl AttemptError {
    /// The error with `secrets` redacted from its text, control characters escaped and its
    /// length capped: an auth plugin's message can quote a token endpoint's answer, and a
    /// transport error the server's words.
    pub fn redacted(self, secrets: &Redactor) -> Self {
        let clean = |text: String| secrets.clean(&text, REASON_CHARS);
        let clean_auth = |error: AuthError| AuthError { message: clean(error.message), ..error };
        match self {
            Self::Auth { plugin, error } => Self::Auth { plugin, error: clean_auth(error) },
            Self::Transform(TransformError { plugin, failure }) => {
                Self::Transform(TransformError { plugin, failure: failure.map_text(clean) })
            }
            Self::Send(SendError::Refused(why)) => Self::Send(SendError::Refused(clean(why))),
            Self::Send(SendError::Connect(why)) => Self::Send(SendError::Connect(clean(why))),
            Self::Send(SendError::Other(why)) => Self::Send(SendError::Other(clean(why))),
            Self::Send(timeout @ SendError::Timeout(_)) => Self::Send(timeout),
        }
    }
}

/// The secrets a request carried: the template's resolved references and every sensitive
/// header value sent (template headers, the auth plugin's).
fn request_secrets<'a>(
    template: &Template,
    headers: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    auth: Option<&AuthHeaders>,
) -> Redactor {
    let mut secrets = template.secrets.clone();
    secrets.add_headers(headers);
    if let Some(auth) = auth {
        secrets.add_headers(auth.iter());
    }
    secrets
}

/// Sends `body` with the template's auth to `target` (a transform's planned request), or
/// with the template's method, URL and headers. `delivery_id`, when given, goes in
/// [`DELIVERY_ID_HEADER`] (auth plugins see it, so a signature can cover it).
///
/// The answer's body and an error's text come back with the request's secrets replaced by
/// `[redacted]` (an endpoint that echoes the request would otherwise put its credentials
/// in reasons, records and logs).
pub async fn attempt(
    client: &HttpClient,
    template: &Template,
    target: Option<&RequestTarget>,
    body: &RequestBody,
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
        let auth = template.auth.authorize(&request).await.map_err(|error| {
            AttemptError::Auth { plugin: template.auth_type.clone(), error }.redacted(&request_secrets(
                template,
                base_headers,
                None,
            ))
        })?;
        let mut headers = base_headers.clone();
        for (name, value) in auth.iter() {
            headers.insert(name.clone(), value.clone());
        }
        let sent = SendRequest { method, url, headers, body: body.clone(), timeout: template.timeout };
        let mut response = template
            .client(client)
            .send(sent)
            .await
            .map_err(|e| AttemptError::Send(e).redacted(&request_secrets(template, base_headers, Some(&auth))))?;
        if response.status == StatusCode::UNAUTHORIZED
            && !resent
            && template.auth.unauthorized(&auth).await == Unauthorized::ResendOnce
        {
            resent = true;
            continue;
        }
        if !response.body.is_empty() {
            let secrets = request_secrets(template, base_headers, Some(&auth));
            let ending = if response.body.len() >= MAX_BODY { Ending::Cut } else { Ending::Whole };
            response.body = Bytes::from(secrets.redact_bytes(&response.body, ending));
        }
        return Ok(response);
    }
}
