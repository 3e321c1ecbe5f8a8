//! `/v1/templates`: list, show, create or replace (the reference document's "Create"), test.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hookgate_core::delivery::retry::status_reason;
use hookgate_core::template::Entry;
use hookgate_core::template::registry::PutError;
use serde_json::json;

use super::openapi::{Forbidden, Unauthorized, Unavailable, Unsupported};
use super::views::{ErrorBody, PluginList, TemplateList, TemplateView, TestAnswer, TokenAnswer};
use super::{ApiError, AppState};

/// The template `name` in the current snapshot.
fn find(engine: &AppState, name: &str) -> Result<Entry, ApiError> {
    engine
        .registry
        .snapshot()
        .entries
        .get(name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no template named `{name}`")))
}

fn view(engine: &AppState, entry: &Entry) -> TemplateView {
    TemplateView::of(entry, engine.registry.last_test(&entry.name))
}

/// Every template: its state, live version, error or reason, and last test.
#[utoipa::path(get, path = "/v1/templates", tag = "templates",
    responses((status = 200, description = "Every template", body = TemplateList), Unauthorized, Forbidden))]
pub async fn list(State(engine): State<AppState>) -> Json<TemplateList> {
    let snapshot = engine.registry.snapshot();
    Json(TemplateList { templates: snapshot.entries.values().map(|e| view(&engine, e)).collect() })
}

/// One template, with its delivery stats.
#[utoipa::path(get, path = "/v1/templates/{name}", tag = "templates", params(("name" = String, Path, description = "The template's name")),
    responses((status = 200, description = "The template", body = TemplateView), Unauthorized, Forbidden,
        (status = 404, description = "No template of that name", body = ErrorBody), Unavailable))]
pub async fn get(State(engine): State<AppState>, Path(name): Path<String>) -> Result<Json<TemplateView>, ApiError> {
    let entry = find(&engine, &name)?;
    let mut v = view(&engine, &entry);
    v.stats = engine
        .template_stats(&name)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "queue_unavailable", e.to_string()))?;
    Ok(Json(v))
}

/// Creates or replaces `templates/NAME.yaml` from a YAML (or JSON) body: validate, verify
/// (when the template asks for it), then write. Nothing is written on failure.
#[utoipa::path(put, path = "/v1/templates/{name}", tag = "templates", params(("name" = String, Path, description = "The template's name")),
    request_body(description = "A template file (see `hookgate schema template`)", content(
        (String = "application/yaml"), (String = "text/yaml"), (String = "application/x-yaml"), (Object = "application/json"))),
    responses(
        (status = 200, description = "Replaced and active", body = TemplateView),
        (status = 201, description = "Created and active", body = TemplateView),
        (status = 400, description = "The body is not UTF-8", body = ErrorBody),
        Unauthorized, Forbidden,
        (status = 409, description = "The name is defined by another file", body = ErrorBody),
        Unsupported,
        (status = 422, description = "`invalid_template` (with the body's `location`) or `verification_failed`", body = ErrorBody),
        (status = 500, description = "The file could not be written", body = ErrorBody)))]
pub async fn put(
    State(engine): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", "the body must be UTF-8 YAML or JSON"))?;
    let existed = engine.registry.snapshot().entries.contains_key(&name);
    match engine.registry.put(&name, text).await {
        Ok(_) => {
            let snapshot = engine.registry.snapshot();
            let entry = snapshot
                .entries
                .get(&name)
                .ok_or_else(|| ApiError::not_found(format!("template `{name}` was removed meanwhile")))?;
            Ok((if existed { StatusCode::OK } else { StatusCode::CREATED }, Json(view(&engine, entry))))
        }
        Err(PutError::Invalid(error)) => {
            Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_template", error.to_string())
                .with(json!({"location": {"line": error.line, "column": error.column}})))
        }
        Err(PutError::Verification(reason)) => {
            Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "verification_failed", reason))
        }
        Err(PutError::Conflict(message)) => Err(ApiError::new(StatusCode::CONFLICT, "conflict", message)),
        Err(PutError::Io(e)) => {
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "io", format!("cannot write the template file: {e}")))
        }
    }
}

/// Sends the test payload now; a template waiting for verification becomes active on 2xx.
#[utoipa::path(post, path = "/v1/templates/{name}/test", tag = "templates", params(("name" = String, Path, description = "The template's name")),
    responses((status = 200, description = "The endpoint's answer, or why none came (`ok` false)", body = TestAnswer),
        Unauthorized, Forbidden, (status = 404, description = "No loaded version of that name", body = ErrorBody), Unsupported))]
pub async fn test(State(engine): State<AppState>, Path(name): Path<String>) -> Result<Json<TestAnswer>, ApiError> {
    let (template, outcome) = engine
        .registry
        .test(&name)
        .await
        .ok_or_else(|| ApiError::not_found(format!("no loaded version of a template named `{name}`")))?;
    let state = engine.registry.snapshot().entries.get(&name).map(|e| e.state.label()).unwrap_or("removed");
    let state = state.to_string();
    Ok(Json(match outcome {
        Ok(r) => TestAnswer {
            template: name,
            version: template.version,
            ok: r.status.is_success(),
            status: Some(r.status.as_u16()),
            answer: Some(status_reason(r.status)),
            latency_ms: Some(hookgate_core::duration::millis(r.latency)),
            body: Some(String::from_utf8_lossy(&r.body[..r.body.len().min(4096)]).into_owned()),
            error: None,
            state,
        },
        Err(e) => TestAnswer {
            template: name,
            version: template.version,
            ok: false,
            status: None,
            answer: None,
            latency_ms: None,
            body: None,
            error: Some(e.to_string()),
            state,
        },
    }))
}

/// Obtains a token now (the reference document's "Generate"): expiry, scopes and a masked
/// token, never the token.
#[utoipa::path(post, path = "/v1/templates/{name}/token", tag = "templates", params(("name" = String, Path, description = "The template's name")),
    responses((status = 200, description = "A token was obtained; it is shown masked", body = TokenAnswer),
        Unauthorized, Forbidden, (status = 404, description = "No template of that name", body = ErrorBody),
        (status = 409, description = "`template_inactive`: no loaded version", body = ErrorBody), Unsupported,
        (status = 422, description = "`no_tokens`: its auth plugin has no tokens", body = ErrorBody),
        (status = 502, description = "`token_request_failed`: the token endpoint refused, with its reason", body = ErrorBody)))]
pub async fn token(State(engine): State<AppState>, Path(name): Path<String>) -> Result<Json<TokenAnswer>, ApiError> {
    let entry = find(&engine, &name)?;
    let template = entry.active.clone().or_else(|| entry.candidate.clone()).ok_or_else(|| {
        ApiError::new(StatusCode::CONFLICT, "template_inactive", format!("template `{name}` has no loaded version"))
    })?;
    let result = template.auth.fetch_token().await.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_tokens",
            format!("template `{name}` uses auth `{}`, which has no tokens", template.auth_type),
        )
    })?;
    match result {
        Ok(info) => Ok(Json(TokenAnswer { template: name, version: template.version, token: info })),
        Err(error) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "token_request_failed",
            format!("auth plugin `{}`: {error}", template.auth_type),
        )),
    }
}

/// The plugins templates can name: built-ins and WASM plugins, with load errors.
#[utoipa::path(get, path = "/v1/plugins", tag = "plugins",
    responses((status = 200, description = "Every plugin", body = PluginList), Unauthorized, Forbidden))]
pub async fn plugins(State(engine): State<AppState>) -> Json<PluginList> {
    Json(PluginList { plugins: engine.registry.loader().plugins.statuses() })
}
