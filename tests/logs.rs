//! `log_format: json`: every line the gateway writes in a full run (start, verification,
//! a delivered dispatch, a failed one and its replay, shutdown) is one JSON object with a
//! timestamp, a level and a message; delivery lines carry the dispatch and delivery ids; no
//! secret appears.

mod common;

use std::time::Duration;

use common::{ConfigDir, Gateway, Mock, TEST_CONFIG};
use serde_json::Value;

const ADMIN_TOKEN: &str = "logs-test-admin-token-5f0e1d2c3b4a";
const HEADER_SECRET: &str = "header-secret-7c1d9e2f4a";
const PASSWORD: &str = "basic-password-3e8b6a0d1f";

#[tokio::test]
async fn every_line_of_a_full_run_is_json_with_the_ids_and_no_secret() {
    let ok = Mock::answering(200).await;
    let failing = Mock::answering(503).await;
    let config = ConfigDir::new(&format!("{TEST_CONFIG}log_format: json\n"));
    config.write_template(
        "orders.yaml",
        &format!(
            "url: {}\nheaders:\n  X-Api-Key: ${{env:LOGS_HEADER_SECRET}}\nauth:\n  type: basic\n  username: svc\n  password: ${{env:LOGS_PASSWORD}}\nretries: 0\n",
            ok.url("/hook")
        ),
    );
    config.write_template(
        "flaky.yaml",
        &format!(
            "url: {}\nheaders:\n  X-Api-Key: ${{env:LOGS_HEADER_SECRET}}\nretries: 1\nverify: false\n",
            failing.url("/hook")
        ),
    );
    let env =
        [("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN), ("LOGS_HEADER_SECRET", HEADER_SECRET), ("LOGS_PASSWORD", PASSWORD)];
    let mut gateway = Gateway::start(&config, &env).await;
    gateway.wait_state("orders", "active", Duration::from_secs(20)).await;
    let delivered = gateway.dispatch("orders", &common::payload(11, 2)).await;
    let failed = gateway.dispatch("flaky", &common::payload(12, 1)).await;
    gateway.wait_dispatch(&delivered, Duration::from_secs(20)).await;
    gateway.wait_dispatch(&failed, Duration::from_secs(20)).await;
    let (status, _) = gateway.post_json(&format!("/v1/dispatches/{failed}/retry"), &serde_json::json!({}), &[]).await;
    assert_eq!(status, 202);
    common::wait_for("the replay to fail again", Duration::from_secs(20), async || {
        (failing.requests().len() >= 4).then_some(())
    })
    .await;
    gateway.wait_dispatch(&failed, Duration::from_secs(20)).await;
    assert!(gateway.terminate(Duration::from_secs(20)).await.success());

    let output = gateway.output();
    let mut lines = Vec::new();
    for line in output.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for key in ["timestamp", "level", "message"] {
            assert!(v.get(key).is_some_and(|k| k.is_string()), "no `{key}` in {line}");
        }
        lines.push(v);
    }
    assert!(lines.len() > 10, "too few lines:\n{output}");
    let message = |v: &Value| v["message"].as_str().unwrap().to_string();
    assert!(lines.iter().any(|v| message(v).starts_with("listening on http://")), "{output}");
    assert!(lines.iter().any(|v| message(v).contains("verified") && v["template"] == "orders"), "{output}");

    // Delivery lines say which dispatch, request and delivery they are about.
    let failures: Vec<&Value> = lines.iter().filter(|v| message(v) == "Webhook Dispatch Failed").collect();
    assert!(failures.len() >= 2, "the failure and the replay's failure:\n{output}");
    for v in &failures {
        assert_eq!(v["template"], "flaky", "{v}");
        assert_eq!(v["campaign"], "12", "{v}");
        assert_eq!(v["span"]["dispatch"], failed.as_str(), "{v}");
        assert_eq!(v["span"]["delivery_id"], format!("{failed}.0"), "{v}");
        assert_eq!(v["level"], "WARN");
    }
    let ok_lines: Vec<&Value> = lines.iter().filter(|v| message(v) == "delivered").collect();
    assert_eq!(ok_lines.len(), 1, "one request delivered:\n{output}");
    assert_eq!(ok_lines[0]["span"]["delivery_id"], format!("{delivered}.0"));
    assert_eq!(ok_lines[0]["template"], "orders");

    for secret in [ADMIN_TOKEN, HEADER_SECRET, PASSWORD] {
        assert!(!output.contains(secret), "a secret is in the logs");
    }
    // Basic's header value is a secret too.
    let basic = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("svc:{PASSWORD}"));
    assert!(!output.contains(&basic), "the Basic credentials are in the logs");
}
