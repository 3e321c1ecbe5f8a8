//! Verify on load: send the test payload and accept the template only on a 2xx answer
//! (the reference document: "saves the template if your endpoint responds with 200 OK").
//! What the endpoint or a plugin says comes back redacted (see [`attempt`]) and escaped.

use bytes::Bytes;

use super::attempt::{AttemptError, attempt};
use super::client::{HttpClient, Response};
use super::retry::status_reason;
use crate::payload::test_payload;
use crate::plugin::{TransformError, TransformFailure};
use crate::redact::{REASON_CHARS, sanitize};
use crate::template::Template;

/// Sends the test payload once and returns the answer. With a transform plugin, sends the
/// requests it plans for the test payload (a credential check, say) and returns the first
/// answer that is not a 2xx, or the last one.
pub async fn send_test(client: &HttpClient, template: &Template) -> Result<Response, AttemptError> {
    let body = Bytes::from(serde_json::to_vec(&test_payload()).unwrap_or_default());
    let Some((plugin, transformer)) = &template.transform else {
        return attempt(client, template, None, &body.into(), None).await;
    };
    // A plugin's error text can quote what it was given: the template's secrets go.
    let transform_error = |failure| {
        let mut secrets = template.secrets.clone();
        secrets.add_headers(&template.headers);
        AttemptError::Transform(TransformError { plugin: plugin.clone(), failure }).redacted(&secrets)
    };
    let planned = transformer.transform(&body).await.map_err(transform_error)?;
    let mut last = None;
    for request in planned.requests {
        let response = attempt(client, template, Some(&request.target), &request.body.into(), None).await?;
        if !response.status.is_success() {
            return Ok(response);
        }
        last = Some(response);
    }
    last.ok_or_else(|| transform_error(TransformFailure::NothingToVerify))
}

/// `Ok` when the destination accepts the test payload with a 2xx; otherwise why not.
pub async fn verify(client: &HttpClient, template: &Template) -> Result<(), String> {
    verdict(&send_test(client, template).await)
}

/// What a test send means for verification: `Ok` on a 2xx, otherwise the reason.
pub fn verdict(outcome: &Result<Response, AttemptError>) -> Result<(), String> {
    match outcome {
        Ok(response) if response.status.is_success() => Ok(()),
        Ok(response) => Err(format!(
            "verification failed: the endpoint answered the test payload with {}; the template becomes active on a 2xx answer",
            status_reason(response.status)
        )),
        Err(error) => Err(format!(
            "verification failed: {}; the template becomes active when the endpoint answers the test payload with 2xx",
            sanitize(&error.to_string(), REASON_CHARS)
        )),
    }
}
