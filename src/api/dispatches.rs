//! `/v1/templates/{name}/dispatch`, `/v1/dispatches/{id}`, `/v1/campaigns/{targetId}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use hookgate_core::dispatch::DispatchError;
use hookgate_core::model::DispatchId;
use hookgate_core::payload::Payload;
use serde_json::{Value, json};

use super::views::DispatchView;
use super::{ApiError, AppState};

const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The `Retry-After` of a dispatch refused because the pending bodies' budget is full.
const BUSY_RETRY_AFTER_SECS: u64 = 5;

/// Enqueues a payload: `202 {"dispatch_id": ...}`. With `Idempotency-Key`, a resend with
/// the same key returns the first dispatch (and `Idempotent-Replayed: true`) instead of
/// sending twice.
pub async fn dispatch(
    State(engine): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
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
    let payload = Payload::from_slice(&body)
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
        Json(json!({
            "dispatch_id": accepted.dispatch_id.to_string(),
            "template": name,
            "requests": accepted.requests,
            "profiles": accepted.profiles,
            "skipped_profiles": accepted.skipped,
            "status_url": format!("/v1/dispatches/{}", accepted.dispatch_id),
        })),
    )
        .into_response();
    if !accepted.created {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

pub async fn get(State(engine): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = dispatch_id(&id)?;
    let record = engine.records.find(id).await.map_err(unavailable)?.ok_or_else(|| no_dispatch(id))?;
    let view = DispatchView::of(&record);
    Ok(Json(json!(view)))
}

/// Dead letters: sends the failed requests of a dispatch again.
pub async fn retry(State(engine): State<AppState>, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let id = dispatch_id(&id)?;
    let requeued = engine.dispatcher.retry_failed(id).await.map_err(unavailable)?.ok_or_else(|| no_dispatch(id))?;
    Ok((StatusCode::ACCEPTED, Json(json!({"dispatch_id": id.to_string(), "requeued": requeued}))))
}

/// The `{id}` of a `/v1/dispatches/{id}` route: one that is not a dispatch id is not found.
fn dispatch_id(id: &str) -> Result<DispatchId, ApiError> {
    id.parse().map_err(|e: String| ApiError::not_found(e))
}

fn no_dispatch(id: DispatchId) -> ApiError {
    ApiError::not_found(format!("no dispatch {id} (unknown, or past the retention period)"))
}

pub async fn campaign(State(engine): State<AppState>, Path(target_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let stats = engine.campaign_stats(&target_id).await.map_err(unavailable)?.ok_or_else(|| {
        ApiError::not_found(format!("no dispatch has been made for campaign (targetId) `{target_id}`"))
    })?;
    Ok(Json(json!(stats)))
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "queue_unavailable", e.to_string())
}
