//! The HTTP API (DESIGN.md): health, metrics, the key store's public keys, the OpenAPI
//! document and the status console at the root; everything else under `/v1` behind the
//! admin token (or, without one, open only to programs on this machine) and with typed
//! bodies (see `admin`).
//!
//! Every route is one row of [`table`]: the router is built from it, and a test checks that
//! the OpenAPI document (`openapi`) lists exactly its routes.

mod admin;
mod body;
mod console;
mod dispatches;
mod error;
mod health;
pub mod openapi;
mod templates;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, get, post, put};
use hookgate_core::Engine;

pub use error::ApiError;

pub type AppState = Arc<Engine>;

/// Who may call a route.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Anyone who reaches `listen`.
    Open,
    /// Under `/v1`: the admin token (see `admin`).
    Admin,
}

/// Every route: method, path, who may call it, and its handler.
fn table() -> Vec<(&'static str, &'static str, Access, MethodRouter<AppState>)> {
    use Access::{Admin, Open};
    vec![
        ("GET", "/", Open, get(console::index)),
        ("GET", "/console.js", Open, get(console::script)),
        ("GET", "/console.css", Open, get(console::style)),
        ("GET", "/healthz", Open, get(health::healthz)),
        ("GET", "/readyz", Open, get(health::readyz)),
        ("GET", "/metrics", Open, get(health::metrics)),
        ("GET", "/openapi.json", Open, get(openapi::spec)),
        ("GET", "/.well-known/jwks.json", Open, get(health::jwks)),
        ("GET", "/v1/templates", Admin, get(templates::list)),
        ("GET", "/v1/templates/{name}", Admin, get(templates::get)),
        ("PUT", "/v1/templates/{name}", Admin, put(templates::put)),
        ("POST", "/v1/templates/{name}/test", Admin, post(templates::test)),
        ("POST", "/v1/templates/{name}/token", Admin, post(templates::token)),
        ("POST", "/v1/templates/{name}/dispatch", Admin, post(dispatches::dispatch)),
        ("GET", "/v1/plugins", Admin, get(templates::plugins)),
        ("GET", "/v1/dispatches", Admin, get(dispatches::list)),
        ("GET", "/v1/dispatches/{id}", Admin, get(dispatches::get)),
        ("POST", "/v1/dispatches/{id}/retry", Admin, post(dispatches::retry)),
        ("GET", "/v1/campaigns", Admin, get(dispatches::campaigns)),
        ("GET", "/v1/campaigns/{target_id}", Admin, get(dispatches::campaign)),
    ]
}

/// The routes the router serves: (method, path).
#[cfg(test)]
pub fn routes() -> Vec<(&'static str, &'static str)> {
    table().into_iter().map(|(method, path, _, _)| (method, path)).collect()
}

pub fn router(engine: Arc<Engine>) -> Router {
    let max_body = engine.settings.config.limits.max_payload_bytes;
    let (mut open, mut v1) = (Router::new(), Router::new());
    for (_, path, access, handler) in table() {
        match access {
            Access::Open => open = open.route(path, handler),
            Access::Admin => v1 = v1.route(path.strip_prefix("/v1").expect("admin routes are under /v1"), handler),
        }
    }
    // Layers run last-added first: who is calling (401/403), then what they send (415).
    let v1 = v1
        .route_layer(axum::middleware::from_fn(admin::require_content_type))
        .route_layer(axum::middleware::from_fn_with_state(engine.clone(), admin::require_token));
    open.nest("/v1", v1)
        .fallback(|| async { ApiError::not_found("no such route; see GET /openapi.json or README.md for the API") })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(engine)
}
