//! `Authorization: Bearer <admin_token>` on every `/v1` route, compared in constant time.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hookgate_core::secret::constant_time_eq;

use super::{ApiError, AppState};

pub async fn require_token(State(engine): State<AppState>, request: Request, next: Next) -> Response {
    let Some(token) = engine.settings.config.admin_token.as_ref().filter(|t| !t.is_empty()) else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(p) if constant_time_eq(p.as_bytes(), token.expose().as_bytes()) => next.run(request).await,
        Some(_) => unauthorized("the bearer token is not the admin token"),
        None => unauthorized(
            "this route needs `Authorization: Bearer <admin_token>` (admin_token is set in hookgate.yaml or HOOKGATE_ADMIN_TOKEN)",
        ),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response.headers_mut().insert(WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
    response
}
