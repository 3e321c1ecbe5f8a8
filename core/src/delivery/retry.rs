//! What an attempt's outcome means: success, retry later, or a final failure.

use std::time::Duration;

use http::StatusCode;

use super::attempt::AttemptError;
use super::client::Response;
use crate::config::Backoff;
use crate::redact::{REASON_CHARS, sanitize};

/// The decision about one attempt, kept apart from when a retry happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryAction {
    /// A 2xx answer.
    Success,
    /// Worth another attempt; `not_before` is the destination's `Retry-After`, if it gave one.
    Retry { reason: String, not_before: Option<Duration> },
    /// Another attempt would get the same answer.
    DontRetry { reason: String },
}

/// 2xx succeeds; 408, 429, 5xx, timeouts and connection errors are retried; every other
/// answer (3xx: redirects are not followed; other 4xx) is final.
///
/// A reason is one line: what it quotes of the destination's answer or of an error has its
/// control characters escaped (see [`crate::redact`]); secrets are redacted by
/// [`super::attempt::attempt`] before the outcome gets here.
pub fn classify(outcome: &Result<Response, AttemptError>) -> RetryAction {
    match outcome {
        Ok(response) => match classify_status(response.status, response.retry_after) {
            // A final refusal says why in its body (a validation error, say): keep the start.
            RetryAction::DontRetry { reason } if response.status.is_client_error() && !response.body.is_empty() => {
                RetryAction::DontRetry { reason: format!("{reason}: {}", excerpt(&response.body)) }
            }
            action => action,
        },
        Err(error) if error.is_retryable() => {
            RetryAction::Retry { reason: sanitize(&error.to_string(), REASON_CHARS), not_before: None }
        }
        Err(error) => RetryAction::DontRetry { reason: sanitize(&error.to_string(), REASON_CHARS) },
    }
}

pub fn classify_status(status: StatusCode, retry_after: Option<Duration>) -> RetryAction {
    if status.is_success() {
        return RetryAction::Success;
    }
    let reason = status_reason(status);
    if status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        RetryAction::Retry { reason, not_before: retry_after }
    } else if status.is_redirection() {
        RetryAction::DontRetry { reason: format!("{reason} (redirects are not followed)") }
    } else {
        RetryAction::DontRetry { reason }
    }
}

/// How much of a refusal's body a reason quotes, in characters.
const EXCERPT_CHARS: usize = 300;

/// The beginning of a response body, on one line: runs of white space (line breaks
/// included) become one space, other control characters are escaped, at most 300
/// characters. The whole body is read (not its first bytes), so that a secret the attempt
/// redacted is never cut in two here.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut one_line = String::new();
    for word in text.split_whitespace() {
        if one_line.len() > EXCERPT_CHARS * 4 {
            break;
        }
        if !one_line.is_empty() {
            one_line.push(' ');
        }
        one_line.push_str(word);
    }
    sanitize(&one_line, EXCERPT_CHARS)
}

/// `HTTP 503 Service Unavailable`.
pub fn status_reason(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(text) => format!("HTTP {} {text}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

impl Backoff {
    /// The wait before attempt `next_attempt` (2 = the first retry): exponential from `base`,
    /// capped at `max`, with "equal jitter" (half fixed, half random) so that retries of a
    /// burst spread out but never come back at once. A `Retry-After` is a lower bound,
    /// itself capped at `max_retry_after`.
    pub fn delay(&self, next_attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exponent = next_attempt.saturating_sub(2).min(30);
        let full = self.base.saturating_mul(1u32 << exponent).min(self.max);
        let half = full / 2;
        let jitter = half.mul_f64(fastrand::f64());
        let backoff = half + jitter;
        match retry_after {
            Some(after) => backoff.max(after.min(self.max_retry_after)),
            None => backoff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::client::SendError;
    use bytes::Bytes;

    #[test]
    fn status_classes() {
        assert_eq!(classify_status(StatusCode::OK, None), RetryAction::Success);
        assert_eq!(classify_status(StatusCode::NO_CONTENT, None), RetryAction::Success);
        for s in [408u16, 429, 500, 502, 503, 504] {
            assert!(
                matches!(classify_status(StatusCode::from_u16(s).unwrap(), None), RetryAction::Retry { .. }),
                "{s}"
            );
        }
        for s in [400u16, 401, 403, 404, 410, 422, 301] {
            assert!(
                matches!(classify_status(StatusCode::from_u16(s).unwrap(), None), RetryAction::DontRetry { .. }),
                "{s}"
            );
        }
        assert_eq!(
            classify_status(StatusCode::SERVICE_UNAVAILABLE, Some(Duration::from_secs(3))),
            RetryAction::Retry {
                reason: "HTTP 503 Service Unavailable".into(),
                not_before: Some(Duration::from_secs(3))
            }
        );
    }

    #[test]
    fn a_refusal_quotes_the_start_of_its_body_on_one_line() {
        let refusal = |body: &str| {
            let response = Response {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                headers: Default::default(),
                retry_after: None,
                body: Bytes::from(body.to_string()),
                latency: Duration::ZERO,
            };
            match classify(&Ok(response)) {
                RetryAction::DontRetry { reason } => reason,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            refusal("bad\n2026-01-01T00:00:00Z ERROR forged\r\n\u{1b}[2K\u{2028}x\u{85}y"),
            "HTTP 422 Unprocessable Entity: bad 2026-01-01T00:00:00Z ERROR forged \\u{1b}[2K x y"
        );
        let long = refusal(&format!("{}{}", " \n".repeat(2000), "é".repeat(400)));
        assert_eq!(long, format!("HTTP 422 Unprocessable Entity: {}…", "é".repeat(300)), "capped, past leading space");
        let error = |why: &str| classify(&Err(AttemptError::Send(SendError::Other(why.into()))));
        assert_eq!(
            error("broken\nERROR forged"),
            RetryAction::Retry { reason: "request failed: broken\\nERROR forged".into(), not_before: None }
        );
    }

    #[test]
    fn errors_retry_except_policy_refusals() {
        let send = |e: SendError| classify(&Err(AttemptError::Send(e)));
        assert!(matches!(send(SendError::Timeout(Duration::from_secs(5))), RetryAction::Retry { .. }));
        assert!(matches!(send(SendError::Connect("connection refused".into())), RetryAction::Retry { .. }));
        assert!(matches!(send(SendError::Refused("loopback".into())), RetryAction::DontRetry { .. }));
        let auth =
            |e: crate::plugin::AuthError| classify(&Err(AttemptError::Auth { plugin: "oauth2".into(), error: e }));
        assert!(matches!(
            auth(crate::plugin::AuthError::retryable("token endpoint timed out")),
            RetryAction::Retry { .. }
        ));
        assert!(matches!(auth(crate::plugin::AuthError::permanent("invalid_client")), RetryAction::DontRetry { .. }));
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        };
        for _ in 0..100 {
            let d2 = b.delay(2, None);
            assert!(d2 >= Duration::from_millis(500) && d2 <= Duration::from_secs(1), "{d2:?}");
            let d3 = b.delay(3, None);
            assert!(d3 >= Duration::from_secs(1) && d3 <= Duration::from_secs(2), "{d3:?}");
            assert!(b.delay(20, None) <= Duration::from_secs(10));
            assert!(b.delay(2, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
            assert_eq!(b.delay(2, Some(Duration::from_secs(3600))), Duration::from_secs(60));
        }
    }
}
