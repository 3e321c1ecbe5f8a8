//! `/v1/templates`: list, show, create or replace (the reference document's "Create"), test.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hookgate_core::clock::rfc3339;
use hookgate_core::delivery::retry::status_reason;
use hookgate_core::duration::format_duration;
use hookgate_core::template::registry::PutError;
use hookgate_core::template::{Entry, State as TemplateState, Template};
use serde_json::{Value, json};

use super::{ApiError, AppState};

/// A template version as the API shows it: no header values, no auth config, and the URL
/// without user info or query (any of them can carry a credential).
fn template_json(t: &Template) -> Value {
    json!({
        "version": t.version,
        "url": t.display_url(),
        "method": t.method.as_str(),
        "headers": t.headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        "timeout": format_duration(t.timeout),
        "retries": t.retries,
        "batch_size": t.batch_size,
        "verify": t.verify,
        "auth": t.auth_type,
    })
}

fn entry_json(entry: &Entry) -> Value {
    let mut v = json!({
        "name": entry.name,
        "file": entry.file.display().to_string(),
        "state": entry.state.label(),
        "version": entry.active.as_ref().map(|t| t.version),
        "updated_at": rfc3339(entry.updated_at),
        "active": entry.active.as_deref().map(template_json),
    });
    let obj = v.as_object_mut().expect("object");
    match &entry.state {
        TemplateState::Active => {}
        TemplateState::Unverified { reason, .. } => {
            obj.insert("reason".into(), json!(reason));
            obj.insert("pending".into(), json!(entry.candidate.as_deref().map(template_json)));
        }
        TemplateState::Invalid { error } => {
            obj.insert("error".into(), json!(error.to_string()));
            obj.insert(
                "location".into(),
                json!({"file": error.file.display().to_string(), "line": error.line, "column": error.column}),
            );
        }
    }
    v
}

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

pub async fn list(State(engine): State<AppState>) -> Json<Value> {
    let snapshot = engine.registry.snapshot();
    Json(json!({"templates": snapshot.entries.values().map(entry_json).collect::<Vec<_>>()}))
}

pub async fn get(State(engine): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let entry = find(&engine, &name)?;
    let mut v = entry_json(&entry);
    let stats = engine
        .template_stats(&name)
        .await
        .map_err(|e| ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "queue_unavailable", e.to_string()))?;
    if let Some(stats) = stats {
        v["stats"] = json!(stats);
    }
    Ok(Json(v))
}

/// Creates or replaces `templates/NAME.yaml` from a YAML (or JSON) body: validate, verify
/// (when the template asks for it), then write. Nothing is written on failure.
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
            let entry = snapshot.entries.get(&name).map(entry_json).unwrap_or(Value::Null);
            Ok((if existed { StatusCode::OK } else { StatusCode::CREATED }, Json(entry)))
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
pub async fn test(State(engine): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let (template, outcome) = engine
        .registry
        .test(&name)
        .await
        .ok_or_else(|| ApiError::not_found(format!("no loaded version of a template named `{name}`")))?;
    let state = engine.registry.snapshot().entries.get(&name).map(|e| e.state.label()).unwrap_or("removed");
    Ok(Json(match outcome {
        Ok(r) => json!({
            "template": name,
            "version": template.version,
            "ok": r.status.is_success(),
            "status": r.status.as_u16(),
            "answer": status_reason(r.status),
            "latency_ms": (r.latency.as_secs_f64() * 1e6).round() / 1e3,
            "body": String::from_utf8_lossy(&r.body[..r.body.len().min(4096)]),
            "state": state,
        }),
        Err(e) => json!({
            "template": name,
            "version": template.version,
            "ok": false,
            "error": e.to_string(),
            "state": state,
        }),
    }))
}

/// Obtains a token now (the reference document's "Generate"): expiry, scopes and a masked
/// token, never the token.
pub async fn token(State(engine): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
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
        Ok(info) => Ok(Json(json!({"template": name, "version": template.version, "token": info}))),
        Err(error) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "token_request_failed",
            format!("auth plugin `{}`: {error}", template.auth_type),
        )),
    }
}

/// The plugins templates can name: built-ins and WASM plugins, with load errors.
pub async fn plugins(State(engine): State<AppState>) -> Json<Value> {
    Json(json!({"plugins": engine.registry.loader().plugins.statuses()}))
}
