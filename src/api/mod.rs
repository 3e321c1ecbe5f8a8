//! The HTTP API (DESIGN.md): health and metrics at the root, everything else under `/v1`
//! behind the admin token (or, without one, open only to programs on this machine) and
//! with typed bodies (see `admin`).

mod admin;
mod dispatches;
mod error;
mod health;
mod templates;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use hookgate_core::Engine;

pub use error::ApiError;

pub type AppState = Arc<Engine>;

pub fn router(engine: Arc<Engine>) -> Router {
    let max_body = engine.settings.config.limits.max_payload_bytes;
    let v1 = Router::new()
        .route("/templates", get(templates::list))
        .route("/templates/{name}", get(templates::get).put(templates::put))
        .route("/templates/{name}/test", post(templates::test))
        .route("/templates/{name}/token", post(templates::token))
        .route("/templates/{name}/dispatch", post(dispatches::dispatch))
        .route("/plugins", get(templates::plugins))
        .route("/dispatches/{id}", get(dispatches::get))
        .route("/dispatches/{id}/retry", post(dispatches::retry))
        .route("/campaigns/{target_id}", get(dispatches::campaign))
        // Layers run last-added first: who is calling (401/403), then what they send (415).
        .route_layer(axum::middleware::from_fn(admin::require_content_type))
        .route_layer(axum::middleware::from_fn_with_state(engine.clone(), admin::require_token));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/.well-known/jwks.json", get(health::jwks))
        .nest("/v1", v1)
        .fallback(|| async { ApiError::not_found("no such route; see DESIGN.md or README.md for the API") })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(engine)
}
