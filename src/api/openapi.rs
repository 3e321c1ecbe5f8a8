//! The OpenAPI 3.1 document of the HTTP API (`GET /openapi.json`, `hookgate schema
//! openapi`, committed as `schemas/openapi.json`), generated from the handlers'
//! `#[utoipa::path]` attributes and the answer types of `views`.

use axum::Json;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi};

use super::views::ErrorBody;
use super::{console, dispatches, health, templates};

/// 401 `unauthorized`: `admin_token` is set and the request does not carry it as
/// `Authorization: Bearer <admin_token>`.
#[derive(IntoResponses)]
#[response(status = 401, headers(("WWW-Authenticate" = String, description = "`Bearer`")))]
#[allow(dead_code)]
pub struct Unauthorized(ErrorBody);

/// 403 `forbidden`: the gateway runs without `admin_token`, and the request comes from a web
/// page of another origin or is addressed by a name other than localhost, 127.0.0.0/8 or [::1].
#[derive(IntoResponses)]
#[response(status = 403)]
#[allow(dead_code)]
pub struct Forbidden(ErrorBody);

/// 415 `unsupported_media_type`: a `POST` body that is not `application/json` (or a `PUT`
/// body that is not YAML or JSON).
#[derive(IntoResponses)]
#[response(status = 415)]
#[allow(dead_code)]
pub struct Unsupported(ErrorBody);

/// 503 `queue_unavailable`: the store does not answer (PostgreSQL away); nothing was changed.
#[derive(IntoResponses)]
#[response(status = 503)]
#[allow(dead_code)]
pub struct Unavailable(ErrorBody);

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hookgate",
        description = "The HTTP API of hookgate, a webhook dispatch gateway. Every `/v1` route needs \
            `Authorization: Bearer <admin_token>` when `admin_token` is set; without one (`listen` is then a loopback \
            address) `/v1` answers only programs on this machine. Errors are `{\"error\": {\"code\", \"message\"}}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        health::healthz, health::readyz, health::metrics, health::jwks, spec, console::index, console::script,
        console::style, templates::list, templates::get, templates::put, templates::test, templates::token,
        templates::plugins, dispatches::dispatch, dispatches::list, dispatches::get, dispatches::retry,
        dispatches::campaigns, dispatches::campaign,
    ),
    modifiers(&AdminToken),
    tags(
        (name = "health", description = "Liveness, readiness and metrics"),
        (name = "console", description = "The status console (a web page that asks for the admin token)"),
        (name = "templates", description = "Webhook templates: state, create, test, token"),
        (name = "plugins", description = "Auth and transform plugins"),
        (name = "dispatches", description = "Dispatching payloads, their requests and attempts, dead letters"),
        (name = "campaigns", description = "Per-campaign delivery stats"),
        (name = "keys", description = "The key store's public keys"),
    ),
)]
pub struct ApiDoc;

/// The bearer scheme, required by every `/v1` route.
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`admin_token` from hookgate.yaml (or HOOKGATE_ADMIN_TOKEN)"))
                    .build(),
            ),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            for operation in [&mut item.get, &mut item.put, &mut item.post, &mut item.delete].into_iter().flatten() {
                operation.security = Some(vec![SecurityRequirement::new("admin_token", Vec::<String>::new())]);
            }
        }
        // Handlers of different modules share names (`list`, `get`): ids are `tag_name`.
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.put, &mut item.post, &mut item.delete].into_iter().flatten() {
                if let (Some(tag), Some(id)) =
                    (operation.tags.as_ref().and_then(|t| t.first()), &operation.operation_id)
                    && !id.starts_with(tag.as_str())
                {
                    operation.operation_id = Some(format!("{tag}_{id}"));
                }
            }
        }
    }
}

/// The document as JSON, pretty-printed, as committed in `schemas/openapi.json`.
pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serializes")
}

/// This document (OpenAPI 3.1). Open to all: it describes the API, not its data.
#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
pub async fn spec() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], Json(ApiDoc::openapi()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every route the router serves is documented, and every documented route is served.
    #[test]
    fn the_document_lists_the_routers_routes() {
        let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                    documented.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let served: BTreeSet<(String, String)> =
            super::super::routes().into_iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        assert_eq!(served, documented, "the router and the OpenAPI document differ");
    }
}
