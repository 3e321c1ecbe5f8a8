//! What the API answers, one type per body: the handlers build these and the OpenAPI
//! document (`openapi.rs`) is generated from them, so the two cannot drift. Nothing here
//! holds a secret: no header value, auth setting, body or token.

use hookgate_core::clock::rfc3339;
use hookgate_core::duration::format_duration;
use hookgate_core::model::{AttemptRecord, DISPATCH_FAILED, RequestStatus};
use hookgate_core::records::{DispatchRecord, RequestRecord};
use hookgate_core::stats::{CampaignView, Counts, StatsView};
use hookgate_core::template::registry::LastTest;
use hookgate_core::template::{Entry, State as TemplateState, Template};
use serde::Serialize;
use utoipa::ToSchema;

/// An error: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code (`not_found`, `unauthorized`, `invalid_template`, ...).
    pub code: String,
    /// What failed and what to do, for a person.
    pub message: String,
    /// Where an invalid template body is wrong (`invalid_template` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<BodyLocation>,
}

/// A line and column in the body that was sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct BodyLocation {
    pub line: usize,
    pub column: usize,
}

/// `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// Templates loaded and queue reachable.
    pub ready: bool,
    /// The first scan of the templates folder has finished.
    pub templates_loaded: bool,
    /// The queue answers.
    pub queue: bool,
}

/// The key store's public keys (RFC 7517 JWK Set).
#[derive(Debug, Serialize, ToSchema)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

/// One RSA public key.
#[derive(Debug, Serialize, ToSchema)]
pub struct Jwk {
    /// `RSA`.
    pub kty: String,
    pub kid: String,
    /// `RS256`, `RS384` or `RS512`.
    pub alg: String,
    /// `sig`.
    #[serde(rename = "use")]
    pub use_: String,
    /// The modulus, base64url.
    pub n: String,
    /// The exponent, base64url.
    pub e: String,
}

/// `GET /v1/templates`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateList {
    pub templates: Vec<TemplateView>,
}

/// A template's state.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TemplateStateView {
    /// The latest version of the file is live.
    Active,
    /// The latest version loaded and waits for (or failed) verification; `reason` says why.
    Unverified,
    /// The latest version does not load; `error` and `location` say where.
    Invalid,
}

/// A template: its state, live version and, by state, the reason or error.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateView {
    pub name: String,
    /// The template's file.
    pub file: String,
    pub state: TemplateStateView,
    /// The live version, if one is live.
    pub version: Option<u64>,
    /// When the state last changed (RFC 3339).
    pub updated_at: String,
    /// The live version.
    pub active: Option<VersionView>,
    /// Why the latest version is not active yet (`unverified`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The version waiting for verification (`unverified`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<VersionView>,
    /// `file:line:col: message` (`invalid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where the file is wrong (`invalid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<FileLocation>,
    /// The last test payload sent through it since start (on load, by a rescan or on
    /// request), and the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_test: Option<LastTest>,
    /// Its delivery stats (`GET /v1/templates/{name}` only, once it has dispatches).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<StatsView>,
}

/// A position in a template file.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileLocation {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

/// A template version as the API shows it: header names but no values, no auth config, and
/// the URL without user info or query (any of them can carry a credential).
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionView {
    pub version: u64,
    pub url: String,
    pub method: String,
    /// Header names only.
    pub headers: Vec<String>,
    /// Per-attempt timeout (`5s`).
    pub timeout: String,
    pub retries: u32,
    pub batch_size: usize,
    pub verify: bool,
    /// The auth plugin's name (`none`, `basic`, `oauth2`, a WASM plugin's).
    pub auth: String,
}

impl VersionView {
    pub fn of(t: &Template) -> Self {
        Self {
            version: t.version,
            url: t.display_url(),
            method: t.method.as_str().to_string(),
            headers: t.headers.keys().map(|k| k.as_str().to_string()).collect(),
            timeout: format_duration(t.timeout),
            retries: t.retries,
            batch_size: t.batch_size,
            verify: t.verify,
            auth: t.auth_type.clone(),
        }
    }
}

impl TemplateView {
    pub fn of(entry: &Entry, last_test: Option<LastTest>) -> Self {
        let mut view = Self {
            name: entry.name.clone(),
            file: entry.file.display().to_string(),
            state: TemplateStateView::Active,
            version: entry.active.as_ref().map(|t| t.version),
            updated_at: rfc3339(entry.updated_at),
            active: entry.active.as_deref().map(VersionView::of),
            reason: None,
            pending: None,
            error: None,
            location: None,
            last_test,
            stats: None,
        };
        match &entry.state {
            TemplateState::Active => {}
            TemplateState::Unverified { reason, .. } => {
                view.state = TemplateStateView::Unverified;
                view.reason = Some(reason.clone());
                view.pending = entry.candidate.as_deref().map(VersionView::of);
            }
            TemplateState::Invalid { error } => {
                view.state = TemplateStateView::Invalid;
                view.error = Some(error.to_string());
                view.location = Some(FileLocation {
                    file: error.file.display().to_string(),
                    line: error.line,
                    column: error.column,
                });
            }
        }
        view
    }
}

/// `POST /v1/templates/{name}/test`: the answer to the test payload.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestAnswer {
    pub template: String,
    pub version: u64,
    /// A 2xx came back.
    pub ok: bool,
    /// The answer's status (when there was an answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `200 OK`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// The start of the answer's body (4 KiB at most).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Why no answer came (timeout, connection refused, a plugin's error), redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The template's state after the test (`removed` if it is gone).
    pub state: String,
}

/// `POST /v1/templates/{name}/token`: what "Generate" shows, never the token.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenAnswer {
    pub template: String,
    pub version: u64,
    pub token: hookgate_core::plugin::TokenInfo,
}

/// `GET /v1/plugins`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginList {
    pub plugins: Vec<hookgate_core::plugin::PluginStatus>,
}

/// `202` of `POST /v1/templates/{name}/dispatch`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DispatchAccepted {
    pub dispatch_id: String,
    pub template: String,
    /// Requests the payload became.
    pub requests: usize,
    pub profiles: usize,
    /// Profiles a transform plugin left out on purpose.
    pub skipped_profiles: usize,
    /// `/v1/dispatches/{id}`.
    pub status_url: String,
}

/// `202` of `POST /v1/dispatches/{id}/retry`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Requeued {
    pub dispatch_id: String,
    /// Failed requests sent again.
    pub requeued: usize,
}

/// `GET /v1/campaigns`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignList {
    pub campaigns: Vec<CampaignView>,
}

/// `GET /v1/dispatches`: a page of dispatches, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DispatchList {
    /// Dispatches the query matched in all.
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub dispatches: Vec<DispatchSummary>,
}

/// A dispatch without its requests.
#[derive(Debug, Serialize, ToSchema)]
pub struct DispatchSummary {
    pub dispatch_id: String,
    pub template: String,
    pub template_version: u64,
    /// Its campaign's `targetId`.
    pub campaign: String,
    pub created_at: String,
    pub state: DispatchState,
    pub requests: Counts,
    pub profiles: Counts,
}

/// `pending` while any request is; then `delivered`, `failed`, or `partial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DispatchState {
    Pending,
    Delivered,
    Failed,
    Partial,
}

impl DispatchState {
    fn of(requests: &[RequestView]) -> Self {
        let count = |s: RequestState| requests.iter().filter(|r| r.status == s).count();
        if count(RequestState::Pending) > 0 {
            Self::Pending
        } else if count(RequestState::Failed) == 0 {
            Self::Delivered
        } else if count(RequestState::Delivered) == 0 {
            Self::Failed
        } else {
            Self::Partial
        }
    }
}

impl DispatchSummary {
    pub fn of(record: &DispatchRecord) -> Self {
        let view = DispatchView::of(record);
        let (mut requests, mut profiles) = (Counts::default(), Counts::default());
        for r in &view.requests {
            let (req, prof) = match r.status {
                RequestState::Pending => (&mut requests.pending, &mut profiles.pending),
                RequestState::Delivered => (&mut requests.delivered, &mut profiles.delivered),
                RequestState::Failed => (&mut requests.failed, &mut profiles.failed),
            };
            *req += 1;
            *prof += r.profiles as u64;
        }
        Self {
            dispatch_id: view.dispatch_id,
            template: view.template,
            template_version: view.template_version,
            campaign: view.campaign,
            created_at: view.created_at,
            state: view.state,
            requests,
            profiles,
        }
    }
}

/// `GET /v1/dispatches/{id}`: a dispatch's requests and their attempts (status, time,
/// latency, error; never a body or a header).
#[derive(Debug, Serialize, ToSchema)]
pub struct DispatchView {
    pub dispatch_id: String,
    pub template: String,
    /// The template version it was accepted with.
    pub template_version: u64,
    /// Its campaign's `targetId`.
    pub campaign: String,
    pub created_at: String,
    pub state: DispatchState,
    pub requests: Vec<RequestView>,
}

/// A request's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    Pending,
    Delivered,
    Failed,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RequestView {
    /// Its place in the dispatch; the delivery id is `<dispatch_id>.<index>`.
    pub index: usize,
    pub profiles: usize,
    pub status: RequestState,
    /// `Webhook Dispatch Failed` (failed requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub error: Option<&'static str>,
    /// The last reason (failed requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub attempts: Vec<AttemptView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    /// 1 for the first.
    pub attempt: u32,
    /// RFC 3339.
    pub at: String,
    pub latency_ms: f64,
    /// The answer's status, when there was an answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it did not succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DispatchView {
    pub fn of(record: &DispatchRecord) -> Self {
        let requests: Vec<RequestView> = (record.requests.iter().enumerate())
            .map(|(index, r)| RequestView::of(index, &r.lock().unwrap_or_else(|e| e.into_inner())))
            .collect();
        Self {
            dispatch_id: record.id.to_string(),
            template: record.template_name.clone(),
            template_version: record.template_version,
            campaign: record.campaign.clone(),
            created_at: rfc3339(record.created_at),
            state: DispatchState::of(&requests),
            requests,
        }
    }
}

impl RequestView {
    fn of(index: usize, r: &RequestRecord) -> Self {
        let (status, error, reason) = match &r.status {
            RequestStatus::Pending => (RequestState::Pending, None, None),
            RequestStatus::Delivered => (RequestState::Delivered, None, None),
            RequestStatus::Failed { reason } => (RequestState::Failed, Some(DISPATCH_FAILED), Some(reason.clone())),
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
            latency_ms: hookgate_core::duration::millis(a.latency),
            status: a.status,
            error: a.error.clone(),
        }
    }
}
