//! The delivery model: what a dispatch is made of (ids, requests, their status and
//! attempts) and the shape the store keeps it in. Types only, shared by the stages above
//! (`dispatch`, `delivery::worker`, `records`, `stats`, `store`, `queue`); this module
//! imports none of them.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use http::Method;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use url::Url;
use uuid::Uuid;

use crate::payload::CampaignId;
use crate::plugin::RequestTarget;

/// The campaign-stats error of a request that exhausted its attempts.
pub const DISPATCH_FAILED: &str = "Webhook Dispatch Failed";

/// Ordered by creation time (a UUIDv7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DispatchId(Uuid);

impl DispatchId {
    /// A new, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }
}

impl Default for DispatchId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for DispatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for DispatchId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self).map_err(|_| format!("`{s}` is not a dispatch id"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestStatus {
    Pending,
    Delivered,
    /// Exhausted its attempts or got a final answer; `reason` is the last one.
    Failed {
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub at: SystemTime,
    pub latency: Duration,
    /// The HTTP status, when the destination answered.
    pub status: Option<u16>,
    /// Why it did not succeed (never a secret: built from statuses and error kinds).
    pub error: Option<String>,
    /// What the attempt meant for its request.
    pub result: AttemptResult,
}

/// Attempt outcomes, for the attempt counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttemptResult {
    Success,
    Retry,
    Failure,
}

impl AttemptResult {
    pub fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Retry => "retry",
            Self::Failure => "failure",
        }
    }
}

/// A request's state after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextState {
    Delivered,
    Failed {
        reason: String,
    },
    /// Attempt `attempt` is due at `due`.
    Retry {
        attempt: u32,
        due: SystemTime,
    },
}

/// A store backend failed, or a stored value does not decode.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// A dispatch as it is stored.
#[derive(Debug, Clone)]
pub struct StoredDispatch {
    pub id: DispatchId,
    pub template: String,
    /// The template version the dispatch was accepted with (this process's numbering).
    pub template_version: u64,
    pub campaign: CampaignId,
    pub created_at: SystemTime,
    pub idempotency_key: Option<String>,
    /// Profiles a transform plugin left out on purpose.
    pub skipped: usize,
    pub requests: Vec<StoredRequest>,
}

#[derive(Debug, Clone)]
pub struct StoredRequest {
    pub target: Option<StoredTarget>,
    pub profiles: usize,
    /// Kept while the request is pending or failed (for a replay); `None` once delivered,
    /// or when the body was not asked for.
    pub body: Option<crate::body::RequestBody>,
    pub status: RequestStatus,
    /// The next attempt to make (1 for the first).
    pub attempt: u32,
    /// When that attempt is due.
    pub due: SystemTime,
    pub attempts: Vec<AttemptRecord>,
}

/// A transform plugin's planned request, minus its sensitive header values: secrets are
/// never written to disk. They come back from the template when the request is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTarget {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
}

impl StoredTarget {
    pub fn from_target(target: &RequestTarget) -> Self {
        let headers = target
            .headers
            .iter()
            .filter(|(_, v)| !v.is_sensitive())
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        Self { method: target.method.as_str().to_string(), url: target.url.to_string(), headers }
    }

    /// The target again, with the sensitive headers of `template_headers` (the current
    /// version of the template) put back.
    pub fn to_target(&self, template_headers: &HeaderMap) -> Result<RequestTarget, StoreError> {
        let method = Method::from_bytes(self.method.as_bytes())
            .map_err(|_| StoreError(format!("stored method `{}` is invalid", self.method)))?;
        let url = Url::parse(&self.url).map_err(|e| StoreError(format!("stored URL `{}`: {e}", self.url)))?;
        let mut headers = HeaderMap::new();
        for (name, value) in template_headers.iter().filter(|(_, v)| v.is_sensitive()) {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.headers {
            let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) else {
                return Err(StoreError(format!("stored header `{name}` is invalid")));
            };
            headers.append(name, value);
        }
        Ok(RequestTarget { method, url, headers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_keep_no_secret_and_get_it_back_from_the_template() {
        let mut headers = HeaderMap::new();
        let mut secret = HeaderValue::from_static("Bearer s3cret");
        secret.set_sensitive(true);
        headers.insert("authorization", secret.clone());
        headers.insert("idempotency-key", HeaderValue::from_static("42-7"));
        let target = RequestTarget {
            method: Method::POST,
            url: Url::parse("https://example.test/api/v2/tickets").unwrap(),
            headers: headers.clone(),
        };
        let stored = StoredTarget::from_target(&target);
        assert_eq!(stored.headers, vec![("idempotency-key".to_string(), "42-7".to_string())]);
        assert!(!serde_json::to_string(&stored).unwrap().contains("s3cret"));
        let back = stored.to_target(&headers).unwrap();
        assert_eq!(back.method, Method::POST);
        assert_eq!(back.headers["authorization"], "Bearer s3cret");
        assert_eq!(back.headers["idempotency-key"], "42-7");
    }
}
