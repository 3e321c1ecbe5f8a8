//! Bounded work: a dispatch's expansion and request count are checked before anything is
//! stored, pending bodies have a global budget, and no config or template value can panic
//! the gateway or stop its reloads.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::*;
use serde_json::{Value, json};

/// A payload whose `key_values` carry `kv_bytes` of text, with `n` small profiles.
fn heavy(target_id: &str, kv_bytes: usize, n: usize) -> Value {
    let profiles: Vec<Value> = (0..n).map(|i| json!({"Identity": i})).collect();
    json!({"targetId": target_id, "key_values": {"blob": "x".repeat(kv_bytes)}, "profiles": profiles})
}

/// POSTs a dispatch; returns the status, the `Retry-After` header and the JSON body.
async fn post_dispatch(gw: &Gateway, template: &str, payload: &Value) -> (u16, Option<String>, Value) {
    let r = gw
        .http
        .post(format!("{}/v1/templates/{template}/dispatch", gw.base))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(payload).unwrap())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let text = r.text().await.unwrap();
    (status, retry_after, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A body past `limits.max_payload_bytes` is refused with a JSON error naming the setting,
/// whether its `Content-Length` says so or it comes in chunks; one within it is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_past_the_payload_limit_is_refused_by_name() {
    let mock = Mock::answering(200).await;
    let config = ConfigDir::new(&format!("{TEST_CONFIG}limits:\n  max_payload_bytes: 4096\n"));
    config.write_template("one.yaml", &format!("url: {}\nverify: false\n", mock.url("/one")));
    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("one", "active", Duration::from_secs(10)).await;

    let (status, _, declared) = post_dispatch(&gw, "one", &heavy("big-2", 5000, 1)).await;
    assert_eq!(status, 413, "{declared}");
    // The same body in chunks, without a length: refused once the chunks pass the limit.
    let mut raw = b"POST /v1/templates/one/dispatch HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
    for chunk in serde_json::to_vec(&heavy("big-2", 5000, 1)).unwrap().chunks(1000) {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let mut conn = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    conn.write_all(&raw).await.unwrap();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let streamed: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap_or_default()).unwrap();
    for body in [declared, streamed] {
        assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("`limits.max_payload_bytes` (4096 (4 KiB))"), "{message}");
    }
    let (status, _, body) = post_dispatch(&gw, "one", &heavy("big-2", 3000, 1)).await;
    assert_eq!(status, 202, "{body}");
}

/// Acceptance 3: a dispatch whose requests would pass `limits.max_dispatch_bytes` (a
/// 20 KB `key_values` copied into each of 20 one-profile requests) or
/// `limits.max_dispatch_requests` is answered 413 with the limit, and nothing of it is
/// stored, queued or sent: the campaign does not exist afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_past_its_limits_is_refused_before_anything_is_stored() {
    let mock = Mock::answering(200).await;
    let config =
        ConfigDir::new(&format!("{TEST_CONFIG}limits:\n  max_dispatch_bytes: 200000\n  max_dispatch_requests: 50\n"));
    config.write_template("one.yaml", &format!("url: {}\nbatch_size: 1\nverify: false\n", mock.url("/one")));
    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("one", "active", Duration::from_secs(10)).await;

    // 20 requests of ~20 KB each: 400 KB from a 20 KB payload.
    let (status, _, body) = post_dispatch(&gw, "one", &heavy("big-1", 20_000, 20)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "dispatch_too_large");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("`limits.max_dispatch_bytes` (200000)"), "{message}");
    assert!(message.contains("in 20 requests"), "{message}");

    let (status, _, body) = post_dispatch(&gw, "one", &heavy("big-1", 10, 51)).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("51 requests, more than `limits.max_dispatch_requests` (50)"),
        "{body}"
    );

    let (status, body) = gw.get("/v1/campaigns/big-1").await;
    assert_eq!(status, 404, "nothing of the refused dispatches is stored: {body}");

    // Within the limits, the same campaign goes through, and its stats are only its own.
    let id = gw.dispatch("one", &heavy("big-1", 20_000, 3)).await;
    assert_eq!(gw.wait_dispatch(&id, Duration::from_secs(10)).await["state"], "delivered");
    let (_, stats) = gw.get("/v1/campaigns/big-1").await;
    assert_eq!(stats["requests"], json!({"delivered": 3, "failed": 0, "pending": 0}));
    assert_eq!(mock.deliveries().len(), 3, "nothing of the refused dispatches was sent");

    // `targetId` is bounded too.
    let (status, _, body) = post_dispatch(&gw, "one", &heavy(&"c".repeat(129), 1, 1)).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("`targetId` must be"), "{body}");
}

/// Acceptance 3: with the pending bodies' budget full, a dispatch is answered 503 with
/// `Retry-After`, and nothing is stored; once the pending requests finish (here: fail), the
/// budget is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pending_budget_answers_503_until_requests_finish() {
    let mock = Mock::start(|_, _| Reply::Hang).await;
    let config =
        ConfigDir::new(&format!("{TEST_CONFIG}limits:\n  max_dispatch_bytes: 4096\n  max_pending_bytes: 4096\n"));
    config.write_template("slow.yaml", &format!("url: {}\ntimeout: 1s\nretries: 0\nverify: false\n", mock.url("/")));
    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("slow", "active", Duration::from_secs(10)).await;

    let first = gw.dispatch("slow", &heavy("held", 3000, 1)).await;
    let (status, retry_after, body) = post_dispatch(&gw, "slow", &heavy("second", 3000, 1)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry_after.as_deref(), Some("5"));
    assert_eq!(body["error"]["code"], "pending_budget_full");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("`limits.max_pending_bytes` (4096 (4 KiB))"), "{message}");
    assert_eq!(gw.get("/v1/campaigns/second").await.0, 404, "nothing stored");

    // The held request times out and fails: its body no longer counts.
    assert_eq!(gw.wait_dispatch(&first, Duration::from_secs(10)).await["state"], "failed");
    mock.set_behavior(|_, _| Reply::Status(200));
    let (status, _, body) = post_dispatch(&gw, "slow", &heavy("second", 3000, 1)).await;
    assert_eq!(status, 202, "{body}");
    let id = body["dispatch_id"].as_str().unwrap();
    assert_eq!(gw.wait_dispatch(id, Duration::from_secs(10)).await["state"], "delivered");
    // ... and a delivered one's neither.
    let (status, _, body) = post_dispatch(&gw, "slow", &heavy("third", 3000, 1)).await;
    assert_eq!(status, 202, "{body}");
}

/// The budget counts the pending requests restored from the store at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_pending_requests_count_against_the_budget() {
    let mock = Mock::start(|_, _| Reply::Hang).await;
    let config =
        ConfigDir::new(&format!("{TEST_CONFIG}limits:\n  max_dispatch_bytes: 4096\n  max_pending_bytes: 4096\n"));
    config.write_template("slow.yaml", &format!("url: {}\ntimeout: 5m\nretries: 0\nverify: false\n", mock.url("/")));
    let mut gw = Gateway::start(&config, &[]).await;
    gw.wait_state("slow", "active", Duration::from_secs(10)).await;
    gw.dispatch("slow", &heavy("held", 3000, 1)).await;
    mock.wait_deliveries(1, Duration::from_secs(10)).await;
    gw.kill();

    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("slow", "active", Duration::from_secs(10)).await;
    let (status, retry_after, body) = post_dispatch(&gw, "slow", &heavy("second", 3000, 1)).await;
    assert_eq!(status, 503, "the restored request still holds its bytes: {body}");
    assert!(retry_after.is_some());
}

/// `hookgate validate` on values that used to panic (or made no sense) exits 1 with the
/// line and column of each key; one set by a `HOOKGATE_*` variable names the variable.
#[test]
fn validate_refuses_extreme_config_values_with_their_line() {
    let validate = |yaml: &str, env: &[(&str, &str)]| {
        let config = ConfigDir::new(yaml);
        let mut cmd = Command::new(bin());
        cmd.arg("validate").arg("--config").arg(config.path()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text, config.path().join("hookgate.yaml").display().to_string())
    };

    let (code, out, file) = validate("listen: 127.0.0.1:0\ndefaults:\n  timeout: 99999999999999999999d\n", &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("{file}:3:3: `defaults.timeout`: ")), "{out}");
    assert!(out.contains("at most 36500d"), "{out}");
    assert!(!out.contains("panicked"), "{out}");

    let (code, out, file) = validate("destinations:\n  max_concurrency: 4\n  rate_limit: 1e-300\n", &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("{file}:3:3: `destinations.rate_limit` must be 0 (no limit) or between")), "{out}");

    let (code, out, file) = validate("reload:\n  rescan: 0s\nworkers: 0\n", &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("{file}:2:3: `reload.rescan` must be between 100ms and 1d")), "{out}");
    assert!(out.contains(&format!("{file}:3:1: `workers` must be between 1 and 10000")), "{out}");

    let (code, out, _) = validate("", &[("HOOKGATE_DESTINATIONS__RATE_LIMIT", "-1")]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("environment variable HOOKGATE_DESTINATIONS__RATE_LIMIT: `destinations.rate_limit`"), "{out}");
    let (code, out, _) = validate("", &[("HOOKGATE_DEFAULTS__TIMEOUT", "99999999999999999999d")]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("environment variable HOOKGATE_DEFAULTS__TIMEOUT: `defaults.timeout`: "), "{out}");
}

/// `serve` refuses such a config at start, with the line, instead of panicking later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_an_extreme_config_with_its_line() {
    let config = ConfigDir::new("listen: 127.0.0.1:0\nbackoff:\n  max: 99999999999999999999d\n");
    let mut child = Command::new(bin())
        .arg("serve")
        .arg("--config")
        .arg(config.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for("serve to exit", Duration::from_secs(20), async || child.try_wait().unwrap()).await;
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!status.success());
    assert_ne!(status.code(), Some(101), "not a panic: {text}");
    assert!(text.contains(&format!("{}:3:3: `backoff.max`", config.path().join("hookgate.yaml").display())), "{text}");
}

/// Acceptance 3: a template file with a value that used to panic the reload (and with it
/// the watcher: no reload ever again) is reported invalid with its line, the other
/// templates keep delivering, and reloads go on: fixed, it becomes active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extreme_template_value_is_reported_and_reloads_go_on() {
    let mock = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template("good.yaml", &format!("url: {}\nverify: false\n", mock.url("/good")));
    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("good", "active", Duration::from_secs(10)).await;

    config.write_template(
        "bad.yaml",
        &format!("url: {}\nverify: false\ntimeout: 99999999999999999999d\n", mock.url("/bad")),
    );
    let bad = gw.wait_state("bad", "invalid", Duration::from_secs(10)).await;
    let error = bad["error"].as_str().unwrap();
    assert!(error.contains("bad.yaml:3:"), "{error}");
    assert!(error.contains("at most 36500d"), "{error}");

    let id = gw.dispatch("good", &payload(5, 3)).await;
    assert_eq!(gw.wait_dispatch(&id, Duration::from_secs(10)).await["state"], "delivered");

    config.write_template("bad.yaml", &format!("url: {}\nverify: false\ntimeout: 2s\n", mock.url("/bad")));
    gw.wait_state("bad", "active", Duration::from_secs(10)).await;
    let id = gw.dispatch("bad", &payload(6, 1)).await;
    assert_eq!(gw.wait_dispatch(&id, Duration::from_secs(10)).await["state"], "delivered");
    assert!(!gw.output().contains("panicked"), "{}", gw.output());
}

/// With `queue: memory`, `limits.dispatch_records` bounds the records memory keeps, not the
/// campaign stats: a campaign sent as many single dispatches counts every one of them (the
/// stats leave with the retention period).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_keeps_counting_dispatches_it_no_longer_holds() {
    let mock = Mock::answering(200).await;
    let config = ConfigDir::new(&format!("{TEST_CONFIG}queue: memory\nlimits:\n  dispatch_records: 2\n"));
    config.write_template("single.yaml", &format!("url: {}\nverify: false\n", mock.url("/in")));
    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("single", "active", Duration::from_secs(10)).await;
    for _ in 0..5 {
        let id = gw.dispatch("single", &payload(8200, 1)).await;
        gw.wait_dispatch(&id, Duration::from_secs(10)).await;
    }
    let (status, stats) = gw.get("/v1/campaigns/8200").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["requests"], json!({"delivered": 5, "failed": 0, "pending": 0}), "{stats}");
    assert_eq!(mock.deliveries().len(), 5);
}
