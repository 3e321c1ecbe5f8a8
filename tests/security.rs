//! Secrets stay out of logs, API answers and errors; the admin token guards `/v1`;
//! idempotency keys; the destination network policy.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const API_KEY: &str = "k3y-4f9a7c1e-do-not-leak";
const PASSWORD: &str = "pw-83b1d2e0-do-not-leak";
/// base64("svc:pw-83b1d2e0-do-not-leak"): the Basic header must not leak either.
const BASIC: &str = "c3ZjOnB3LTgzYjFkMmUwLWRvLW5vdC1sZWFr";

/// Acceptance 6: a secret given as `${env:...}` appears in the outgoing request but in no
/// log line (at debug level), API answer or error message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_secrets_reach_the_endpoint_and_nothing_else() {
    let ok = Mock::answering(200).await;
    let refusing = Mock::answering(401).await;
    let config = ConfigDir::new(TEST_CONFIG);
    let secret_template = |url: String| {
        format!(
            "url: {url}\nheaders:\n  X-Api-Key: ${{env:PARTNER_API_KEY}}\nauth:\n  type: basic\n  username: svc\n  password: ${{env:PARTNER_PASSWORD}}\n"
        )
    };
    config.write_template("secret.yaml", &secret_template(ok.url("/in")));
    config.write_template("refused.yaml", &secret_template(refusing.url("/in")).replace("url:", "verify: false\nurl:"));
    // A header value that cannot be sent: the error must not quote it.
    config.write_template(
        "broken.yaml",
        "url: http://127.0.0.1:9/\nverify: false\nheaders:\n  X-Api-Key: \"${env:PARTNER_API_KEY}\\n\"\n",
    );
    let env = [("PARTNER_API_KEY", API_KEY), ("PARTNER_PASSWORD", PASSWORD)];
    let gw = Gateway::start(&config, &env).await;
    gw.wait_state("secret", "active", Duration::from_secs(10)).await;
    gw.wait_state("refused", "active", Duration::from_secs(10)).await;
    gw.wait_state("broken", "invalid", Duration::from_secs(10)).await;

    let id = gw.dispatch("secret", &payload(61, 2)).await;
    gw.wait_dispatch(&id, Duration::from_secs(10)).await;
    let failed = gw.dispatch("refused", &payload(62, 2)).await;
    gw.wait_dispatch(&failed, Duration::from_secs(10)).await;

    let delivered = &ok.deliveries()[0];
    assert_eq!(delivered.header("x-api-key").as_deref(), Some(API_KEY), "the secret is sent");
    assert_eq!(delivered.header("authorization"), Some(format!("Basic {BASIC}")));

    let mut answers = String::new();
    for path in [
        "/v1/templates".to_string(),
        "/v1/templates/secret".into(),
        "/v1/templates/refused".into(),
        "/v1/templates/broken".into(),
        format!("/v1/dispatches/{id}"),
        format!("/v1/dispatches/{failed}"),
        "/v1/campaigns/61".into(),
        "/v1/campaigns/62".into(),
        "/metrics".into(),
    ] {
        let (status, body) = gw.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        answers.push_str(&body.to_string());
    }
    let (_, test) = gw.post_json("/v1/templates/secret/test", &json!({}), &[]).await;
    answers.push_str(&test.to_string());
    let (_, bad_put) = gw.put_text("/v1/templates/other", "url: http://127.0.0.1:9/\nverify: false\nauth: {type: basic, username: svc, password: \"${env:PARTNER_PASSWORD}\", extra: 1}\n").await;
    answers.push_str(&bad_put.to_string());
    assert!(answers.contains("Webhook Dispatch Failed"), "the failure is reported: {answers}");
    assert!(answers.contains("X-Api-Key") || answers.contains("x-api-key"), "header names are shown");

    let logs = gw.output();
    assert!(logs.contains("Webhook Dispatch Failed"), "the gateway logged at debug level:\n{logs}");
    for secret in [API_KEY, PASSWORD, BASIC] {
        assert!(!answers.contains(secret), "API answers leak {secret}: {answers}");
        assert!(!logs.contains(secret), "logs leak {secret}:\n{logs}");
    }
}

/// Acceptance 7: `/v1` without the admin token is 401 (health and metrics stay open), and
/// the same `Idempotency-Key` twice creates one dispatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_and_idempotency() {
    let mock = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template("orders.yaml", &format!("url: {}\nverify: false\n", mock.url("/")));
    let token = "admin-token-for-tests";
    let gw = Gateway::start(&config, &[("HOOKGATE_ADMIN_TOKEN", token)]).await;
    gw.wait_state("orders", "active", Duration::from_secs(10)).await;

    let http = reqwest::Client::new();
    for path in ["/v1/templates", "/v1/templates/orders", "/v1/campaigns/1"] {
        let r = http.get(format!("{}{path}", gw.base)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without a token");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let r = http.get(format!("{}{path}", gw.base)).bearer_auth("wrong").send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} with a wrong token");
    }
    let r = http
        .post(format!("{}/v1/templates/orders/dispatch", gw.base))
        .body(payload(1, 1).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(http.get(format!("{}{open}", gw.base)).send().await.unwrap().status(), 200, "{open}");
    }

    let key = [("Idempotency-Key", "campaign-71-run-1")];
    let (s1, first) = gw.post_json("/v1/templates/orders/dispatch", &payload(71, 5), &key).await;
    let (s2, second) = gw.post_json("/v1/templates/orders/dispatch", &payload(71, 5), &key).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(first["dispatch_id"], second["dispatch_id"]);
    gw.wait_dispatch(first["dispatch_id"].as_str().unwrap(), Duration::from_secs(10)).await;
    let (_, other) = gw
        .post_json("/v1/templates/orders/dispatch", &payload(71, 5), &[("Idempotency-Key", "campaign-71-run-2")])
        .await;
    assert_ne!(other["dispatch_id"], first["dispatch_id"]);
    gw.wait_dispatch(other["dispatch_id"].as_str().unwrap(), Duration::from_secs(10)).await;
    assert_eq!(mock.deliveries().len(), 2, "one request per distinct key");
    let (_, stats) = gw.get("/v1/campaigns/71").await;
    assert_eq!(stats["requests"]["delivered"], 2);
}

/// `serve` refuses a non-loopback listen address without an admin token.
#[test]
fn serve_refuses_public_listen_without_token() {
    let config = ConfigDir::new("listen: 0.0.0.0:0\n");
    let out = std::process::Command::new(bin()).arg("serve").arg("--config").arg(config.path()).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to listen on 0.0.0.0:0 without an admin token"), "{stderr}");
}

/// Without `network.allow`, a loopback destination is refused before any connection:
/// at load for an IP literal, and after DNS for a hostname.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_destinations_are_refused_by_default() {
    let mock = Mock::answering(200).await;
    let config = ConfigDir::new("listen: 127.0.0.1:0\nbackoff: {base: 50ms, max: 100ms}\n");
    config.write_template("literal.yaml", &format!("url: {}\nverify: false\n", mock.url("/")));
    config.write_template("named.yaml", &format!("url: http://localhost:{}/\nverify: false\n", mock.addr.port()));
    let gw = Gateway::start(&config, &[]).await;
    let body = gw.wait_state("literal", "invalid", Duration::from_secs(10)).await;
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("loopback address, which `network.allow` in hookgate.yaml does not allow"),
        "{body}"
    );

    gw.wait_state("named", "active", Duration::from_secs(10)).await;
    let id = gw.dispatch("named", &payload(81, 1)).await;
    let view = gw.wait_dispatch(&id, Duration::from_secs(10)).await;
    assert_eq!(view["state"], "failed");
    let reason = view["requests"][0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("destination refused: localhost resolves to"), "{reason}");
    assert_eq!(view["requests"][0]["attempts"].as_array().unwrap().len(), 1, "a refusal is not retried");
    assert!(mock.requests().is_empty(), "no request reached the loopback endpoint");
}
