//! What `GET /v1/dispatches/{id}` answers: a dispatch's requests and their attempts
//! (status, time, latency, error; never a body or a header).

use hookgate_core::clock::rfc3339;
use hookgate_core::model::{AttemptRecord, DISPATCH_FAILED, RequestStatus};
use hookgate_core::records::{DispatchRecord, RequestRecord};
use serde::Serialize;

/// The API's view of a dispatch.
#[derive(Debug, Serialize)]
pub struct DispatchView {
    pub dispatch_id: String,
    pub template: String,
    pub template_version: u64,
    pub campaign: String,
    pub created_at: String,
    /// `pending` while any request is; then `delivered`, `failed`, or `partial`.
    pub state: &'static str,
    pub requests: Vec<RequestView>,
}

#[derive(Debug, Serialize)]
pub struct RequestView {
    pub index: usize,
    pub profiles: usize,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub attempts: Vec<AttemptView>,
}

#[derive(Debug, Serialize)]
pub struct AttemptView {
    pub attempt: u32,
    pub at: String,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DispatchView {
    pub fn of(record: &DispatchRecord) -> Self {
        let requests: Vec<RequestView> = (record.requests.iter().enumerate())
            .map(|(index, r)| RequestView::of(index, &r.lock().unwrap_or_else(|e| e.into_inner())))
            .collect();
        let count = |s: &str| requests.iter().filter(|r| r.status == s).count();
        let state = if count("pending") > 0 {
            "pending"
        } else if count("failed") == 0 {
            "delivered"
        } else if count("delivered") == 0 {
            "failed"
        } else {
            "partial"
        };
        Self {
            dispatch_id: record.id.to_string(),
            template: record.template_name.clone(),
            template_version: record.template_version,
            campaign: record.campaign.clone(),
            created_at: rfc3339(record.created_at),
            state,
            requests,
        }
    }
}

impl RequestView {
    fn of(index: usize, r: &RequestRecord) -> Self {
        let (status, error, reason) = match &r.status {
            RequestStatus::Pending => ("pending", None, None),
            RequestStatus::Delivered => ("delivered", None, None),
            RequestStatus::Failed { reason } => ("failed", Some(DISPATCH_FAILED), Some(reason.clone())),
        };
        Self {
            index,
            profiles: r.profiles,
            status,
            error,
            reason,
            attempts: r.attempts.iter().map(AttemptView::of).collect(),
        }
    }
}

impl AttemptView {
    fn of(a: &AttemptRecord) -> Self {
        Self {
            attempt: a.attempt,
            at: rfc3339(a.at),
            latency_ms: (a.latency.as_secs_f64() * 1e6).round() / 1e3,
            status: a.status,
            error: a.error.clone(),
        }
    }
}
