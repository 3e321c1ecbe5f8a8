//! `/healthz`, `/readyz` and `/metrics`.

use std::fmt::Write as _;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use hookgate_core::stats::family;

use super::AppState;
use super::views::{JwkSet, Readiness};

/// Liveness: `ok`.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is up", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the templates folder has been read and the queue answers.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready yet, or the queue does not answer", body = Readiness)))]
pub async fn readyz(State(engine): State<AppState>) -> impl IntoResponse {
    let loaded = engine.registry.snapshot().loaded;
    let queue = engine.queue.ready().await;
    let status = if loaded && queue { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Readiness { ready: loaded && queue, templates_loaded: loaded, queue }))
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "The metrics", body = String, content_type = "text/plain; version=0.0.4")))]
pub async fn metrics(State(engine): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    let snapshot = engine.registry.snapshot();
    family(&mut out, "hookgate_templates", "gauge", "Templates by state.");
    for state in ["active", "unverified", "invalid"] {
        let n = snapshot.entries.values().filter(|e| e.state.label() == state).count();
        let _ = writeln!(out, "hookgate_templates{{state=\"{state}\"}} {n}");
    }
    family(&mut out, "hookgate_template_reload_errors_total", "counter", "Template files that failed to load.");
    let _ = writeln!(out, "hookgate_template_reload_errors_total {}", engine.registry.reload_errors());
    family(&mut out, "hookgate_template_rescans_total", "counter", "Rescans of the templates folder.");
    let _ = writeln!(out, "hookgate_template_rescans_total {}", engine.registry.rescans());
    family(&mut out, "hookgate_queue_jobs", "gauge", "Jobs waiting or in progress.");
    let _ = writeln!(out, "hookgate_queue_jobs {}", engine.queue.len().await.unwrap_or(0));
    engine.stats.render_prometheus(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

/// The public keys of the key store (RFC 7517 JWK Set), for partners' auth servers.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "keys",
    responses((status = 200, description = "The JWK Set", body = JwkSet)))]
pub async fn jwks(State(engine): State<AppState>) -> impl IntoResponse {
    let jwks = engine.keys.as_ref().map(|k| k.jwks()).unwrap_or_else(|| json!({"keys": []}));
    ([(header::CACHE_CONTROL, "max-age=60")], Json(jwks))
}
