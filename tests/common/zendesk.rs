//! A Zendesk API mock that checks each request as Zendesk's API reference describes:
//! paths, JSON shape, the `Authorization` header of an API token, idempotency keys, rate
//! limits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

/// A ticket request as the mock saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: Value,
    pub idempotency_key: Option<String>,
    pub status: u16,
    pub at: Instant,
}

struct ZState {
    authorization: String,
    tickets: Mutex<Vec<Value>>,
    seen: Mutex<Vec<Seen>>,
    /// Idempotency-Key -> (request body, the 201 answer).
    idempotency: Mutex<HashMap<String, (Value, Value)>>,
    /// Requester emails whose next ticket request gets a 429 with this Retry-After.
    rate_limited: Mutex<HashMap<String, Option<u64>>>,
}

#[derive(Clone)]
pub struct ZendeskMock {
    pub addr: SocketAddr,
    state: Arc<ZState>,
}

impl ZendeskMock {
    /// Accepts `email/token:api_token` (Zendesk's API token authentication).
    pub async fn start(email: &str, api_token: &str) -> Self {
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{email}/token:{api_token}"));
        let state = Arc::new(ZState {
            authorization: format!("Basic {credentials}"),
            tickets: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
            idempotency: Mutex::new(HashMap::new()),
            rate_limited: Mutex::new(HashMap::new()),
        });
        let addr = super::spawn_server(axum::Router::new().fallback(handle).with_state(state.clone())).await;
        Self { addr, state }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Tickets created (each request body's `ticket`).
    pub fn tickets(&self) -> Vec<Value> {
        self.state.tickets.lock().unwrap().clone()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The next ticket for `email` is answered 429 (with `Retry-After` when given).
    pub fn rate_limit_once(&self, email: &str, retry_after: Option<u64>) {
        self.state.rate_limited.lock().unwrap().insert(email.to_string(), retry_after);
    }
}

fn error(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn handle(
    State(state): State<Arc<ZState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let idempotency_key = headers.get("idempotency-key").map(|v| v.to_str().unwrap().to_string());
    let response = answer(&state, &method, uri.path(), &headers, &json_body, idempotency_key.as_deref());
    state.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: uri.path().to_string(),
        body: json_body,
        idempotency_key,
        status: response.status().as_u16(),
        at: Instant::now(),
    });
    response
}

fn answer(
    state: &ZState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
    key: Option<&str>,
) -> Response {
    let authorized = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(state.authorization.as_str());
    match (method.as_str(), path) {
        ("GET", "/api/v2/users/me.json") => {
            if !authorized {
                return error(StatusCode::UNAUTHORIZED, json!({"error": "Couldn't authenticate you"}));
            }
            error(StatusCode::OK, json!({"user": {"id": 1, "role": "admin", "email": "agent@acme.test"}}))
        }
        ("POST", "/api/v2/tickets.json") => {
            if !authorized {
                return error(StatusCode::UNAUTHORIZED, json!({"error": "Couldn't authenticate you"}));
            }
            if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
                return error(StatusCode::BAD_REQUEST, json!({"error": "Unsupported Content-Type"}));
            }
            let ticket = &body["ticket"];
            let mut details = serde_json::Map::new();
            let email = ticket["requester"]["email"].as_str().unwrap_or_default();
            if !email.contains('@') {
                details.insert(
                    "requester".into(),
                    json!([{"description": "Requester: Email is invalid", "error": "InvalidValue"}]),
                );
            }
            if ticket["subject"].as_str().is_none_or(str::is_empty) {
                details.insert("subject".into(), json!([{"description": "Subject: cannot be blank"}]));
            }
            if ticket["comment"]["body"].as_str().is_none_or(str::is_empty) {
                details.insert("description".into(), json!([{"description": "Description: cannot be blank"}]));
            }
            if !matches!(ticket["priority"].as_str(), Some("urgent" | "high" | "normal" | "low")) {
                details.insert("priority".into(), json!([{"description": "Priority: is invalid"}]));
            }
            if !ticket["tags"].as_array().is_some_and(|t| t.iter().all(Value::is_string)) {
                details.insert("tags".into(), json!([{"description": "Tags: must be a list"}]));
            }
            if !details.is_empty() {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"error": "RecordInvalid", "description": "Record validation errors", "details": details}),
                );
            }
            if let Some(retry_after) = state.rate_limited.lock().unwrap().remove(email) {
                let mut r = error(StatusCode::TOO_MANY_REQUESTS, json!({"error": "TooManyRequests"}));
                if let Some(s) = retry_after {
                    r.headers_mut().insert("retry-after", s.to_string().parse().unwrap());
                }
                return r;
            }
            if let Some(key) = key
                && let Some((first_body, first_answer)) = state.idempotency.lock().unwrap().get(key).cloned()
            {
                {
                    if first_body != *body {
                        return error(
                            StatusCode::BAD_REQUEST,
                            json!({"error": "IdempotentRequestError", "description": "Idempotency key has been used with a different request"}),
                        );
                    }
                    let mut r = error(StatusCode::CREATED, first_answer);
                    r.headers_mut().insert("x-idempotency-lookup", "hit".parse().unwrap());
                    return r;
                }
            }
            let mut tickets = state.tickets.lock().unwrap();
            tickets.push(ticket.clone());
            let mut created = ticket.clone();
            created["id"] = json!(tickets.len());
            let answer = json!({"ticket": created});
            if let Some(key) = key {
                state.idempotency.lock().unwrap().insert(key.to_string(), (body.clone(), answer.clone()));
            }
            let mut r = error(StatusCode::CREATED, answer);
            r.headers_mut().insert("x-idempotency-lookup", "miss".parse().unwrap());
            r
        }
        _ => error(StatusCode::NOT_FOUND, json!({"error": "InvalidEndpoint"})),
    }
}
