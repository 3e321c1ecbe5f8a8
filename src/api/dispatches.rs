//! `/v1/templates/{name}/dispatch`, `/v1/dispatches`, `/v1/dispatches/{id}`, `/v1/campaigns`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use hookgate_core::dispatch::DispatchError;
use hookgate_core::model::DispatchId;
use hookgate_core::payload::Payload;
use hookgate_core::records::ListQuery;
use hookgate_core::stats::CampaignView;
use serde::Deserialize;

use super::body::WholeBody;
use super::openapi::{Forbidden, Unauthorized, Unavailable, Unsupported};
use super::views::{CampaignList, DispatchAccepted, DispatchList, DispatchSummary, DispatchView, ErrorBody, Requeued};
use super::{ApiError, AppState};

/// The most dispatches one page of `GET /v1/dispatches` holds.
const MAX_PAGE: usize = 500;

const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The `Retry-After` of a dispatch refused because the pending bodies' budget is full.
const BUSY_RETRY_AFTER_SECS: u64 = 5;

/// Enqueues a payload: `202 {"dispatch_id": ...}`. With `Idempotency-Key`, a resend with
/// the same key returns the first dispatch (and `Idempotent-Replayed: true`) instead of
/// sending twice.
#[utoipa::path(post, path = "/v1/templates/{name}/dispatch", tag = "dispatches",
    params(("name" = String, Path, description = "The template's name"),
        ("Idempotency-Key" = Option<String>, Header, description = "A resend with the same key (per template) returns the first dispatch")),
    request_body(content = Object, content_type = "application/json",
        description = "The payload: `{\"is_test\": false, \"targetId\": 1234, \"key_values\": {...}, \"profiles\": [{...}]}`"),
    responses(
        (status = 202, description = "Accepted (on disk with the durable queues)", body = DispatchAccepted,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the first dispatch of the key, sent again"))),
        (status = 400, description = "`invalid_idempotency_key`", body = ErrorBody),
        Unauthorized, Forbidden,
        (status = 404, description = "No template of that name", body = ErrorBody),
        (status = 409, description = "`template_inactive`: no active version", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is past `limits.max_payload_bytes`; `dispatch_too_large`: past `limits.max_dispatch_bytes` or `limits.max_dispatch_requests`; nothing stored", body = ErrorBody),
        Unsupported,
        (status = 422, description = "`invalid_payload` or `transform_failed`", body = ErrorBody),
        (status = 503, description = "`pending_budget_full` (with `Retry-After`) or `queue_unavailable`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds")))))]
pub async fn dispatch(
    State(engine): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    WholeBody(body): WholeBody,
) -> Result<impl IntoResponse, ApiError> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v.to_str().ok().map(str::trim).filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY);
            Some(
                key.ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_idempotency_key",
                        "`Idempotency-Key` must be 1 to 255 visible ASCII characters",
                    )
                })?
                .to_string(),
            )
        }
    };
    let payload = Payload::from_bytes(body)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_payload", e.to_string()))?;
    let accepted = engine.dispatcher.dispatch(&name, payload, key).await.map_err(|e| match e {
        DispatchError::UnknownTemplate(_) => ApiError::not_found(e.to_string()),
        DispatchError::Inactive { .. } => ApiError::new(StatusCode::CONFLICT, "template_inactive", e.to_string()),
        DispatchError::Payload(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_payload", e.to_string()),
        DispatchError::Transform(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "transform_failed", e.to_string())
        }
        DispatchError::TooLarge(_) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "dispatch_too_large", e.to_string()),
        DispatchError::Busy(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "pending_budget_full", e.to_string())
            .retry_after(BUSY_RETRY_AFTER_SECS),
        DispatchError::Queue(_) | DispatchError::Store(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "queue_unavailable", e.to_string())
        }
    })?;
    let mut response = (
        StatusCode::ACCEPTED,
        Json(DispatchAccepted {
            dispatch_id: accepted.dispatch_id.to_string(),
            template: name,
            requests: accepted.requests,
            profiles: accepted.profiles,
            skipped_profiles: accepted.skipped,
            status_url: format!("/v1/dispatches/{}", accepted.dispatch_id),
        }),
    )
        .into_response();
    if !accepted.created {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// What `GET /v1/dispatches` lists.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this campaign's (`targetId`).
    campaign: Option<String>,
    /// Only this template's.
    template: Option<String>,
    /// `true`: only dispatches with a failed request (what a replay sends again).
    failed: Option<bool>,
    /// Skip this many of the newest; default 0.
    offset: Option<usize>,
    /// At most this many; default 50, at most 500.
    limit: Option<usize>,
}

/// Recent dispatches, newest first: with `queue: memory` or `sqlite`, those this instance
/// holds in memory (every pending one and the last `limits.dispatch_records` finished ones);
/// with PostgreSQL, every retained one of the cluster.
#[utoipa::path(get, path = "/v1/dispatches", tag = "dispatches", params(ListParams),
    responses((status = 200, description = "A page of dispatches", body = DispatchList),
        (status = 400, description = "`invalid_query`", body = ErrorBody), Unauthorized, Forbidden, Unavailable))]
pub async fn list(
    State(engine): State<AppState>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DispatchList>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let limit = params.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let query = ListQuery {
        campaign: params.campaign,
        template: params.template,
        failed: params.failed.unwrap_or(false),
        offset: params.offset.unwrap_or(0),
        limit,
    };
    let page = engine.records.list(&query).await.map_err(unavailable)?;
    Ok(Json(DispatchList {
        total: page.total,
        offset: query.offset,
        limit,
        dispatches: page.dispatches.iter().map(|d| DispatchSummary::of(d)).collect(),
    }))
}

/// A dispatch's requests and their attempts.
#[utoipa::path(get, path = "/v1/dispatches/{id}", tag = "dispatches",
    params(("id" = String, Path, description = "The dispatch id")),
    responses((status = 200, description = "The dispatch", body = DispatchView), Unauthorized, Forbidden,
        (status = 404, description = "Unknown, or past the retention period", body = ErrorBody), Unavailable))]
pub async fn get(State(engine): State<AppState>, Path(id): Path<String>) -> Result<Json<DispatchView>, ApiError> {
    let id = dispatch_id(&id)?;
    let record = engine.records.find(id).await.map_err(unavailable)?.ok_or_else(|| no_dispatch(id))?;
    Ok(Json(DispatchView::of(&record)))
}

/// Dead letters: sends the failed requests of a dispatch again.
#[utoipa::path(post, path = "/v1/dispatches/{id}/retry", tag = "dispatches",
    params(("id" = String, Path, description = "The dispatch id")),
    responses((status = 202, description = "Its failed requests are pending again", body = Requeued), Unauthorized, Forbidden,
        (status = 404, description = "Unknown, or past the retention period", body = ErrorBody), Unsupported, Unavailable))]
pub async fn retry(State(engine): State<AppState>, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let id = dispatch_id(&id)?;
    let requeued = engine.dispatcher.retry_failed(id).await.map_err(unavailable)?.ok_or_else(|| no_dispatch(id))?;
    Ok((StatusCode::ACCEPTED, Json(Requeued { dispatch_id: id.to_string(), requeued })))
}

/// The `{id}` of a `/v1/dispatches/{id}` route: one that is not a dispatch id is not found.
fn dispatch_id(id: &str) -> Result<DispatchId, ApiError> {
    id.parse().map_err(|e: String| ApiError::not_found(e))
}

fn no_dispatch(id: DispatchId) -> ApiError {
    ApiError::not_found(format!("no dispatch {id} (unknown, or past the retention period)"))
}

/// Every campaign that has dispatches, with its stats.
#[utoipa::path(get, path = "/v1/campaigns", tag = "campaigns",
    responses((status = 200, description = "Every campaign", body = CampaignList), Unauthorized, Forbidden, Unavailable))]
pub async fn campaigns(State(engine): State<AppState>) -> Result<Json<CampaignList>, ApiError> {
    Ok(Json(CampaignList { campaigns: engine.records.campaigns().await.map_err(unavailable)? }))
}

/// A campaign's stats: requests and profiles delivered, failed, pending; errors with counts;
/// attempts and latency; the same per template.
#[utoipa::path(get, path = "/v1/campaigns/{target_id}", tag = "campaigns",
    params(("target_id" = String, Path, description = "The campaign's `targetId`")),
    responses((status = 200, description = "The campaign's stats", body = CampaignView), Unauthorized, Forbidden,
        (status = 404, description = "No dispatch has been made for it (or all are past the retention period)", body = ErrorBody),
        Unavailable))]
pub async fn campaign(
    State(engine): State<AppState>,
    Path(target_id): Path<String>,
) -> Result<Json<CampaignView>, ApiError> {
    let stats = engine.campaign_stats(&target_id).await.map_err(unavailable)?.ok_or_else(|| {
        ApiError::not_found(format!("no dispatch has been made for campaign (targetId) `{target_id}`"))
    })?;
    Ok(Json(stats))
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "queue_unavailable", e.to_string())
}
