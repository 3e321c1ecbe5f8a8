//! Outside text quoted in reasons is sanitised: a destination or a token endpoint that
//! echoes the request does not put its credentials in records, API answers or logs, and
//! a line break in its answer cannot start a log line.

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;
use serde_json::json;

const API_KEY: &str = "k3y-59c0e1aa-echoed";
const PASSWORD: &str = "pw/e7d1+43 echoed";
const CLIENT_SECRET: &str = "cs-0b9f3e72-echoed";
/// What a forged log line would start with.
const FORGED: &str = "2026-01-01T00:00:00.000000Z ERROR forged";

/// A template for the echo endpoint at `echo` with a secret header and Basic auth, both
/// from the environment (`PARTNER_API_KEY`, `PARTNER_PASSWORD`).
fn echo_template(echo: &impl std::fmt::Display) -> String {
    format!(
        "url: {echo}/in\nverify: false\nheaders:\n  X-Api-Key: ${{env:PARTNER_API_KEY}}\nauth:\n  type: basic\n  username: svc\n  password: ${{env:PARTNER_PASSWORD}}\n"
    )
}

/// Every value of the request the answer should not show, and the forms it takes.
fn leaks(text: &str) -> Vec<&'static str> {
    let basic = Box::leak(STANDARD.encode(format!("svc:{PASSWORD}")).into_boxed_str());
    let client_basic = Box::leak(STANDARD.encode(format!("hookgate:{CLIENT_SECRET}")).into_boxed_str());
    [API_KEY, PASSWORD, CLIENT_SECRET, basic, client_basic, "pw%2Fe7d1%2B43%20echoed", "pw%2Fe7d1%2B43+echoed"]
        .into_iter()
        .filter(|secret| text.contains(secret))
        .collect()
}

/// The API answers about a dispatch and its campaign, as one text.
async fn answers(gw: &Gateway, dispatch: &str, campaign: u64) -> String {
    let mut text = String::new();
    for path in [format!("/v1/dispatches/{dispatch}"), format!("/v1/campaigns/{campaign}"), "/v1/templates".into()] {
        let (status, body) = gw.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        text.push_str(&body.to_string());
    }
    text
}

/// Acceptance 7: an endpoint that answers 422 with the request's headers (Basic auth, a
/// secret header; raw, decoded and percent-encoded): the reason in the dispatch's record,
/// the API and the logs shows `[redacted]` for each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echoed_authorization_is_redacted_in_records_api_and_logs() {
    let echo = spawn_echo(422, |headers, _| {
        let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let authorization = header("authorization");
        let decoded = STANDARD.decode(authorization.trim_start_matches("Basic ")).unwrap_or_default();
        let decoded = String::from_utf8(decoded).unwrap_or_default();
        let password = decoded.split_once(':').map(|(_, p)| p.to_string()).unwrap_or_default();
        let encoded: String = url::form_urlencoded::byte_serialize(password.as_bytes()).collect();
        format!(
            "{{\"error\": \"invalid\",\n \"authorization\": \"{authorization}\",\n \"x-api-key\": \"{}\",\n \"user\": \"{decoded}\", \"form\": \"password={encoded}\"}}",
            header("x-api-key")
        )
    })
    .await;
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template("echo.yaml", &echo_template(&echo));
    let gw = Gateway::start(&config, &[("PARTNER_API_KEY", API_KEY), ("PARTNER_PASSWORD", PASSWORD)]).await;
    gw.wait_state("echo", "active", Duration::from_secs(10)).await;

    let id = gw.dispatch("echo", &payload(71, 1)).await;
    let view = gw.wait_dispatch(&id, Duration::from_secs(10)).await;
    let reason = view["requests"][0]["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.starts_with("HTTP 422 Unprocessable Entity: {\"error\": \"invalid\","), "{view}");
    assert!(reason.contains("\"authorization\": \"[redacted]\""), "{reason}");
    assert!(reason.contains("\"x-api-key\": \"[redacted]\""), "{reason}");
    assert!(reason.contains("\"user\": \"[redacted]\""), "{reason}");
    assert!(reason.contains("\"form\": \"password=[redacted]\""), "{reason}");
    assert_eq!(view["requests"][0]["attempts"][0]["error"], reason.as_str(), "the attempt's record says the same");

    let mut api = answers(&gw, &id, 71).await;
    assert!(api.contains("authorization\\\": \\\"[redacted]"), "{api}");
    let (status, test) = gw.post_json("/v1/templates/echo/test", &json!({}), &[]).await;
    assert_eq!(status, 200, "{test}");
    assert!(test["body"].as_str().unwrap().contains("\"authorization\": \"[redacted]\""), "{test}");
    api.push_str(&test.to_string());
    assert_eq!(leaks(&api), Vec::<&str>::new(), "API answers: {api}");
    let logs = wait_for("the failure in the logs", Duration::from_secs(10), async || {
        let logs = gw.output();
        logs.contains("\"authorization\": \"[redacted]\"").then_some(logs)
    })
    .await;
    assert_eq!(leaks(&logs), Vec::<&str>::new(), "logs:\n{logs}");
}

/// Acceptance 7: a line break in a destination's 4xx body or in a token endpoint's
/// `error_description` cannot start a log line; the token endpoint's echo of the client
/// secret (a literal in the template, not a reference) is redacted by the OAuth plugin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reason_with_a_line_break_cannot_start_a_log_line() {
    let refusing =
        spawn_echo(400, |_, _| format!("rejected\n{FORGED} body\r\n\u{1b}[2K\u{2028}{FORGED} separator")).await;
    let token = spawn_echo(400, |headers, form| {
        let authorization = headers.get("authorization").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        json!({
            "error": "invalid_client",
            "error_description": format!(
                "unknown client\n{FORGED} oauth\nsent {authorization} {}",
                String::from_utf8_lossy(form)
            ),
        })
        .to_string()
    })
    .await;
    let webhook = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template("refusing.yaml", &format!("url: {refusing}/in\nverify: false\nretries: 0\n"));
    for (name, client_auth) in [("basic", "basic"), ("body", "body")] {
        config.write_template(
            &format!("{name}.yaml"),
            &format!(
                "url: {}\nverify: false\nretries: 0\nauth:\n  type: oauth2\n  grant: client_credentials\n  token_url: {token}/token\n  client_id: hookgate\n  client_secret: {CLIENT_SECRET}\n  client_auth: {client_auth}\n",
                webhook.url("/in")
            ),
        );
    }
    let gw = Gateway::start(&config, &[]).await;
    let mut reasons = Vec::new();
    for (name, campaign) in [("refusing", 81), ("basic", 82), ("body", 83)] {
        gw.wait_state(name, "active", Duration::from_secs(10)).await;
        let id = gw.dispatch(name, &payload(campaign, 1)).await;
        let view = gw.wait_dispatch(&id, Duration::from_secs(10)).await;
        assert_eq!(view["state"], "failed", "{view}");
        let reason = view["requests"][0]["reason"].as_str().unwrap().to_string();
        assert!(reason.contains(FORGED), "the answer is quoted: {reason}");
        assert!(!reason.chars().any(|c| c.is_control() || c == '\u{2028}'), "one line: {reason:?}");
        let api = answers(&gw, &id, campaign).await;
        assert_eq!(leaks(&api), Vec::<&str>::new(), "API answers: {api}");
        reasons.push(reason);
    }
    assert!(reasons[0].starts_with("HTTP 400 Bad Request: rejected 2026-01-01T"), "{}", reasons[0]);
    for oauth in &reasons[1..] {
        assert!(oauth.contains("invalid_client (unknown client\\n2026-01-01T"), "escaped, not removed: {oauth}");
        assert!(oauth.contains("[redacted]"), "the echoed client secret: {oauth}");
    }

    let logs = wait_for("the three failures in the logs", Duration::from_secs(10), async || {
        let logs = gw.output();
        (logs.matches("Webhook Dispatch Failed").count() >= 3).then_some(logs)
    })
    .await;
    for line in logs.lines() {
        assert!(!line.trim_start().starts_with(FORGED), "a forged log line:\n{logs}");
        assert!(!line.contains('\u{1b}'), "an escape sequence reached the log:\n{logs}");
    }
    assert_eq!(leaks(&logs), Vec::<&str>::new(), "logs:\n{logs}");
}

/// `hookgate test` prints the endpoint's answer with the request's secrets redacted and
/// terminal control sequences escaped (its line breaks kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hookgate_test_prints_the_answer_redacted_and_escaped() {
    let echo = spawn_echo(422, |headers, _| {
        let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        format!(
            "authorization: {}\nx-api-key: {}\n\u{1b}]0;owned\u{7}\u{1b}[2J",
            header("authorization"),
            header("x-api-key")
        )
    })
    .await;
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template("echo.yaml", &echo_template(&echo));
    let dir = config.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin())
            .args(["test", "echo", "--config"])
            .arg(dir)
            .env("PARTNER_API_KEY", API_KEY)
            .env("PARTNER_PASSWORD", PASSWORD)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a 422 is a failed test");
    assert!(stdout.contains("HTTP 422"), "{stdout}\n{stderr}");
    assert!(stdout.contains("authorization: [redacted]\nx-api-key: [redacted]\n"), "{stdout}");
    assert!(stdout.contains("\\u{1b}]0;owned\\u{7}\\u{1b}[2J"), "{stdout}");
    assert!(!stdout.contains('\u{1b}') && !stderr.contains('\u{1b}'), "{stdout:?}");
    assert_eq!(leaks(&format!("{stdout}{stderr}")), Vec::<&str>::new(), "{stdout}\n{stderr}");
}
