//! The status console at `GET /`: one page of plain HTML, CSS and JavaScript shipped inside
//! the binary (no CDN, no build step). It asks for the admin token once, keeps it in the
//! tab's `sessionStorage` and sends it only as `Authorization: Bearer` on its `fetch`es of
//! the `/v1` API; the page itself holds no data and no token, so it is served to anyone.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::AppState;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// Only this origin's script and style, no frames, no inline code: the page cannot be made
/// to run anything but `console.js`, nor to send data elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn page(content_type: &'static str, body: String) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The console. The page says whether the gateway has an admin token (so whether to ask
/// for one); it never contains the token or any data.
#[utoipa::path(get, path = "/", tag = "console",
    responses((status = 200, description = "The console's page", body = String, content_type = "text/html")))]
pub async fn index(State(engine): State<AppState>) -> Response {
    let required = engine.settings.config.admin_token.as_ref().is_some_and(|t| !t.is_empty());
    page("text/html; charset=utf-8", INDEX.replace("{{token_required}}", if required { "true" } else { "false" }))
}

/// The console's script.
#[utoipa::path(get, path = "/console.js", tag = "console",
    responses((status = 200, description = "The console's script", body = String, content_type = "text/javascript")))]
pub async fn script() -> Response {
    page("text/javascript; charset=utf-8", SCRIPT.to_string())
}

/// The console's style sheet.
#[utoipa::path(get, path = "/console.css", tag = "console",
    responses((status = 200, description = "The console's style sheet", body = String, content_type = "text/css")))]
pub async fn style() -> Response {
    page("text/css; charset=utf-8", STYLE.to_string())
}
