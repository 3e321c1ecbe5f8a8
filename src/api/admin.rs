//! Who may call `/v1`, and with what bodies.
//!
//! - With an admin token: `Authorization: Bearer <admin_token>`, compared in constant time.
//! - Without one (the gateway then listens on loopback only): requests from this machine that
//!   do not come from a web page. A page the operator visits could otherwise drive the API:
//!   directly (refused by its `Origin` or `Sec-Fetch-Site: cross-site`), or through a DNS name
//!   it rebinds to 127.0.0.1 (refused because its `Host` is not a loopback name or address).
//! - For every caller: a body of the right type, `application/json` (or YAML for `PUT`), so
//!   that an HTML form (which can only send `text/plain`, form or multipart bodies) never
//!   reaches a handler.

use axum::extract::{Request, State};
use axum::http::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, ORIGIN, TRANSFER_ENCODING, WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hookgate_core::secret::constant_time_eq;

use super::{ApiError, AppState};

/// The bodies `POST` routes take.
const JSON: &[&str] = &["application/json"];
/// The bodies `PUT /v1/templates/{name}` takes.
const YAML_OR_JSON: &[&str] =
    &["application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "application/json"];

pub async fn require_token(State(engine): State<AppState>, request: Request, next: Next) -> Response {
    let Some(token) = engine.settings.config.admin_token.as_ref().filter(|t| !t.is_empty()) else {
        return match from_this_machine(request.headers()) {
            Ok(()) => next.run(request).await,
            Err(why) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", why).into_response(),
        };
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

/// `Ok` for a request addressed to a loopback name or address that no web page sent: its
/// `Host` is `localhost`, a 127.0.0.0/8 address or `[::1]` (with any port); it has no
/// `Origin` other than the gateway's own; and its `Sec-Fetch-Site`, if any, is `same-origin`
/// or `none` (typed in the address bar).
fn from_this_machine(headers: &HeaderMap) -> Result<(), String> {
    const NO_TOKEN: &str = "the gateway runs without an admin token, so /v1 answers only programs on this machine";
    const HINT: &str = "set `admin_token` (or HOOKGATE_ADMIN_TOKEN) to use the API otherwise";
    let host = headers.get(HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !is_loopback_host(host) {
        return Err(format!(
            "{NO_TOKEN}, addressed as localhost, 127.0.0.1 or [::1]; this request's `Host` is not one of them \
             (a web page can rebind a DNS name to this machine); {HINT}"
        ));
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let own = format!("http://{host}");
        if !origin.to_str().is_ok_and(|o| o.eq_ignore_ascii_case(&own)) {
            return Err(format!(
                "{NO_TOKEN}, not web pages; this request comes from another origin (`Origin`); {HINT}"
            ));
        }
    }
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.to_str().unwrap_or_default(), "same-origin" | "none")
    {
        return Err(format!(
            "{NO_TOKEN}, not web pages; this request comes from another site (`Sec-Fetch-Site`); {HINT}"
        ));
    }
    Ok(())
}

/// `localhost`, an address in 127.0.0.0/8 or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((ip, port)) if port.is_empty() || port.strip_prefix(':').is_some_and(is_port) => ip,
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        },
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// `POST` bodies must be `application/json`, `PUT` bodies YAML or JSON, for every caller:
/// anything else is 415 before a handler runs. A `POST` without a body needs no type.
pub async fn require_content_type(request: Request, next: Next) -> Response {
    let accepted = match *request.method() {
        Method::POST => JSON,
        Method::PUT => YAML_OR_JSON,
        _ => return next.run(request).await,
    };
    let headers = request.headers();
    let media_type = headers
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("?").split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
    let ok = match &media_type {
        Some(t) => accepted.contains(&t.as_str()),
        None => *request.method() == Method::POST && has_no_body(headers),
    };
    if ok {
        return next.run(request).await;
    }
    let wanted = if accepted == JSON {
        "a JSON body, sent with `Content-Type: application/json`".to_string()
    } else {
        "a YAML or JSON body, sent with `Content-Type: application/yaml` (or `text/yaml`, `application/json`)".into()
    };
    let got = match media_type.as_deref() {
        None => "it has no Content-Type".to_string(),
        Some(t) if t.len() <= 80 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"/+-.!#$&^_".contains(&b)) => {
            format!("it has `Content-Type: {t}`")
        }
        Some(_) => "its Content-Type is not one of those".into(),
    };
    let route = format!("{} {}", request.method(), request.uri().path());
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("`{route}` takes {wanted}; {got}"),
    )
    .into_response()
}

fn has_no_body(headers: &HeaderMap) -> bool {
    match headers.get(CONTENT_LENGTH) {
        Some(length) => length.as_bytes() == b"0",
        None => !headers.contains_key(TRANSFER_ENCODING),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in
            ["localhost", "localhost:8080", "LOCALHOST.:1", "127.0.0.1:8080", "127.1.2.3", "[::1]:8080", "[::1]"]
        {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1:8080",
            "0.0.0.0:8080",
            "[::2]:80",
            "[::1]x",
            "127.0.0.1:80:80",
            "localhost:http",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn web_pages_are_told_apart() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            h
        };
        assert!(from_this_machine(&headers(&[("host", "127.0.0.1:8080")])).is_ok());
        assert!(
            from_this_machine(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")])).is_ok()
        );
        assert!(from_this_machine(&headers(&[("host", "localhost:1"), ("sec-fetch-site", "none")])).is_ok());
        assert!(from_this_machine(&headers(&[])).unwrap_err().contains("`Host`"));
        let e = from_this_machine(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://evil.example")]));
        assert!(e.unwrap_err().contains("`Origin`"));
        assert!(from_this_machine(&headers(&[("host", "127.0.0.1:8080"), ("origin", "null")])).is_err());
        for site in ["cross-site", "same-site"] {
            let e = from_this_machine(&headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", site)]));
            assert!(e.unwrap_err().contains("`Sec-Fetch-Site`"), "{site}");
        }
    }
}
