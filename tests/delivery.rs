//! Dispatch end to end: batching, method, headers, Basic auth, timeouts, retries, stats.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// Acceptance 1: PUT, two custom headers and basic auth; 250 profiles with batch_size 100
/// arrive as exactly 3 PUT requests of 100, 100 and 50 profiles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_with_headers_and_basic_auth_is_batched() {
    let mock = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template(
        "orders.yaml",
        &format!(
            "url: {}\nmethod: PUT\nheaders:\n  X-Team: growth\n  X-Version: 2\nbatch_size: 100\nverify: true\nauth:\n  type: basic\n  username: svc\n  password: ${{env:SVC_PASSWORD}}\n",
            mock.url("/hooks/orders")
        ),
    );
    let gw = Gateway::start(&config, &[("SVC_PASSWORD", "open sesame")]).await;
    gw.wait_state("orders", "active", Duration::from_secs(10)).await;
    // Verification sent the test payload, with the same method, headers and auth.
    let test = &mock.requests()[0];
    assert!(test.is_test());
    assert_eq!(test.json()["targetId"], 1234);
    assert_eq!(test.json()["profiles"].as_array().unwrap().len(), 5);

    let id = gw.dispatch("orders", &payload(777, 250)).await;
    let view = gw.wait_dispatch(&id, Duration::from_secs(10)).await;
    assert_eq!(view["state"], "delivered");

    let deliveries = mock.deliveries();
    assert_eq!(deliveries.len(), 3, "exactly 3 requests");
    let mut sizes: Vec<usize> = deliveries.iter().map(|r| r.json()["profiles"].as_array().unwrap().len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![50, 100, 100]);
    let mut identities: Vec<String> = deliveries
        .iter()
        .flat_map(|r| {
            r.json()["profiles"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["Identity"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    identities.sort();
    identities.dedup();
    assert_eq!(identities.len(), 250, "every profile exactly once");
    for r in &deliveries {
        assert_eq!(r.method, "PUT");
        assert_eq!(r.path, "/hooks/orders");
        assert_eq!(r.header("x-team").as_deref(), Some("growth"));
        assert_eq!(r.header("x-version").as_deref(), Some("2"));
        // base64("svc:open sesame")
        assert_eq!(r.header("authorization").as_deref(), Some("Basic c3ZjOm9wZW4gc2VzYW1l"));
        assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
        assert_eq!(r.json()["targetId"], 777);
        assert_eq!(r.json()["key_values"]["campaign"], "spring");
    }

    let (status, stats) = gw.get("/v1/campaigns/777").await;
    assert_eq!(status, 200);
    assert_eq!(stats["requests"], json!({"delivered": 3, "failed": 0, "pending": 0}));
    assert_eq!(stats["profiles"], json!({"delivered": 250, "failed": 0, "pending": 0}));
    assert_eq!(stats["templates"]["orders"]["requests"]["delivered"], 3);
}

/// Acceptance 2: an endpoint that never answers gets 1 + retries attempts, each cut at the
/// timeout, and the campaign shows "Webhook Dispatch Failed" with a timeout reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_endpoint_times_out_each_attempt_and_fails() {
    let mock = Mock::start(|_, _| Reply::Hang).await;
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template("slow.yaml", &format!("url: {}\ntimeout: 300ms\nretries: 2\nverify: false\n", mock.url("/")));
    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("slow", "active", Duration::from_secs(10)).await;

    let id = gw.dispatch("slow", &payload(9001, 1)).await;
    let view = gw.wait_dispatch(&id, Duration::from_secs(20)).await;
    assert_eq!(view["state"], "failed");
    let request = &view["requests"][0];
    assert_eq!(request["error"], "Webhook Dispatch Failed");
    assert!(request["reason"].as_str().unwrap().contains("timeout"), "{request}");
    let attempts = request["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    for a in attempts {
        let ms = a["latency_ms"].as_f64().unwrap();
        assert!((300.0..2000.0).contains(&ms), "each attempt is cut at the timeout: {ms} ms");
        assert!(a["error"].as_str().unwrap().contains("timeout"));
    }
    assert_eq!(mock.requests().len(), 3, "three attempts reached the endpoint");

    let (_, stats) = gw.get("/v1/campaigns/9001").await;
    assert_eq!(stats["requests"]["failed"], 1);
    assert_eq!(stats["profiles"]["failed"], 1);
    assert_eq!(stats["errors"][0]["error"], "Webhook Dispatch Failed");
    assert_eq!(stats["errors"][0]["reason"], "timeout: no answer within 300ms");
    assert_eq!(stats["errors"][0]["count"], 1);
}

/// Acceptance 3: 503 then 200 is delivered on the second attempt; 429 with
/// `Retry-After: 1` is retried no sooner than 1 s later; 400 is not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_the_status() {
    let flaky = Mock::start(|n, _| Reply::Status(if n == 0 { 503 } else { 200 })).await;
    let limited = Mock::start(|n, _| {
        if n == 0 { Reply::StatusWith(429, vec![("retry-after", "1".into())]) } else { Reply::Status(200) }
    })
    .await;
    let bad = Mock::answering(400).await;
    let config = ConfigDir::new(TEST_CONFIG);
    for (name, mock) in [("flaky", &flaky), ("limited", &limited), ("bad", &bad)] {
        config.write_template(&format!("{name}.yaml"), &format!("url: {}\nverify: false\n", mock.url("/")));
    }
    let gw = Gateway::start(&config, &[]).await;
    for name in ["flaky", "limited", "bad"] {
        gw.wait_state(name, "active", Duration::from_secs(10)).await;
    }

    let flaky_id = gw.dispatch("flaky", &payload(1, 3)).await;
    let limited_id = gw.dispatch("limited", &payload(2, 3)).await;
    let bad_id = gw.dispatch("bad", &payload(3, 3)).await;

    let v = gw.wait_dispatch(&flaky_id, Duration::from_secs(10)).await;
    assert_eq!(v["state"], "delivered");
    let attempts = v["requests"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["status"], 503);
    assert_eq!(attempts[0]["error"], "HTTP 503 Service Unavailable");
    assert_eq!(attempts[1]["status"], 200);

    let v = gw.wait_dispatch(&limited_id, Duration::from_secs(10)).await;
    assert_eq!(v["state"], "delivered");
    let seen = limited.requests();
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_secs(1), "Retry-After: 1 honoured, retried after {gap:?}");

    let v = gw.wait_dispatch(&bad_id, Duration::from_secs(10)).await;
    assert_eq!(v["state"], "failed");
    assert_eq!(v["requests"][0]["reason"], "HTTP 400 Bad Request");
    assert_eq!(v["requests"][0]["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(bad.requests().len(), 1, "a 400 is final");
    let (_, stats) = gw.get("/v1/campaigns/3").await;
    assert_eq!(stats["errors"][0]["reason"], "HTTP 400 Bad Request");
}

/// `hookgate send` dispatches without a server, waits, and prints the stats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_command_delivers_and_prints_stats() {
    let mock = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template("orders.yaml", &format!("url: {}\nbatch_size: 40\n", mock.url("/in")));
    let payload_file = config.path().join("payload.json");
    std::fs::write(&payload_file, serde_json::to_vec(&payload(55, 100)).unwrap()).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin())
            .arg("send")
            .arg("orders")
            .arg(&payload_file)
            .arg("--config")
            .arg(payload_file.parent().unwrap())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("requests: 3 delivered, 0 failed, 0 pending"), "{stdout}");
    assert!(stdout.contains("profiles: 100 delivered"), "{stdout}");
    // `send` does not verify: only the three batches arrive.
    assert_eq!(mock.requests().len(), 3);
}

/// Every attempt of a request carries the same delivery id, so receivers can deduplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_id_is_stable_across_retries() {
    let mock = Mock::start(|n, _| Reply::Status(if n == 0 { 503 } else { 200 })).await;
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template("ids.yaml", &format!("url: {}\nverify: false\nbatch_size: 1\n", mock.url("/")));
    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("ids", "active", Duration::from_secs(10)).await;
    let id = gw.dispatch("ids", &payload(70, 2)).await;
    gw.wait_dispatch(&id, Duration::from_secs(10)).await;
    let ids: Vec<String> = mock.requests().iter().map(|r| r.header("x-hookgate-delivery-id").unwrap()).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let first = ids[0].clone();
    assert!(first == format!("{id}.0") || first == format!("{id}.1"), "{first}");
    assert_eq!(ids.iter().filter(|i| **i == first).count(), 2, "the retry carries the first attempt's id: {ids:?}");
    assert_ne!(ids.iter().collect::<std::collections::BTreeSet<_>>().len(), 1, "two requests, two ids");
}

/// Isolation: a destination that hangs holds at most `destinations.max_concurrency`
/// workers, so a healthy destination is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_destination_does_not_hold_up_a_healthy_one() {
    let hanging = Mock::start(|_, _| Reply::Hang).await;
    let healthy = Mock::answering(200).await;
    let config = ConfigDir::new(&format!("{TEST_CONFIG}workers: 8\ndestinations:\n  max_concurrency: 2\n"));
    config.write_template(
        "stuck.yaml",
        &format!("url: {}\nverify: false\nbatch_size: 1\nretries: 0\ntimeout: 6s\n", hanging.url("/")),
    );
    config.write_template("fine.yaml", &format!("url: {}\nverify: false\nbatch_size: 1\n", healthy.url("/")));
    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("stuck", "active", Duration::from_secs(10)).await;
    gw.wait_state("fine", "active", Duration::from_secs(10)).await;
    let stuck = gw.dispatch("stuck", &payload(71, 20)).await;
    wait_for("the hanging endpoint to hold its requests", Duration::from_secs(5), async || {
        (hanging.requests().len() >= 2).then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    let fine = gw.dispatch("fine", &payload(72, 20)).await;
    // Well inside the 6 s the stuck requests take: without the per-destination limit all 8
    // workers would be waiting on the hanging endpoint.
    let view = gw.wait_dispatch(&fine, Duration::from_secs(3)).await;
    assert_eq!(view["state"], "delivered");
    eprintln!("healthy campaign delivered in {:?} beside a hanging one", started.elapsed());
    assert_eq!(hanging.requests().len(), 2, "at most 2 requests in flight to the hanging destination");
    assert_eq!(gw.get(&format!("/v1/dispatches/{stuck}")).await.1["state"], "pending");
}

/// Dead letters: a failed request keeps its body and attempts; `POST /v1/dispatches/{id}/retry`
/// sends it again and the stats follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_requests_can_be_replayed() {
    let mock = Mock::answering(400).await;
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template("dead.yaml", &format!("url: {}\nverify: false\n", mock.url("/")));
    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("dead", "active", Duration::from_secs(10)).await;
    let id = gw.dispatch("dead", &payload(73, 3)).await;
    assert_eq!(gw.wait_dispatch(&id, Duration::from_secs(10)).await["state"], "failed");
    let (_, stats) = gw.get("/v1/campaigns/73").await;
    assert_eq!(stats["requests"]["failed"], 1);

    mock.set_behavior(|_, _| Reply::Status(200));
    let (status, body) = gw.post_json(&format!("/v1/dispatches/{id}/retry"), &json!({}), &[]).await;
    assert_eq!((status, body["requeued"].clone()), (202, json!(1)), "{body}");
    let view = gw.wait_dispatch(&id, Duration::from_secs(10)).await;
    assert_eq!(view["state"], "delivered", "{view}");
    assert_eq!(view["requests"][0]["attempts"].as_array().unwrap().len(), 2, "the history is kept");
    let (_, stats) = gw.get("/v1/campaigns/73").await;
    assert_eq!(stats["requests"], json!({"delivered": 1, "failed": 0, "pending": 0}));
    assert_eq!(stats["profiles"]["delivered"], 3);
    assert_eq!(stats["errors"], json!([]));
    let requests = mock.requests();
    assert_eq!(requests[0].body, requests[1].body);
    assert_eq!(requests[0].header("x-hookgate-delivery-id"), requests[1].header("x-hookgate-delivery-id"));
    let (status, _) = gw.post_json(&format!("/v1/dispatches/{id}/retry"), &json!({}), &[]).await;
    assert_eq!(status, 202, "nothing left to retry is not an error");
}

/// The value of one series in `/metrics` (0 when it is absent).
async fn metric(gw: &Gateway, series: &str) -> u64 {
    let (_, metrics) = gw.get("/metrics").await;
    let text = metrics.as_str().unwrap_or_default();
    let value = text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' '));
    value.map_or(0, |v| v.parse().unwrap())
}

/// `/metrics` counters only grow (Prometheus reads a decrease as a counter reset): a replay
/// takes no failure back from `hookgate_requests_total{outcome="failed"}` and is counted in
/// `hookgate_requests_replayed_total`; the campaign's stats show the state now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_never_decreases_the_exported_failed_counter() {
    let mock = Mock::answering(400).await;
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template("again.yaml", &format!("url: {}\nverify: false\n", mock.url("/")));
    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("again", "active", Duration::from_secs(10)).await;
    let failed = r#"hookgate_requests_total{template="again",outcome="failed"}"#;
    let delivered = r#"hookgate_requests_total{template="again",outcome="delivered"}"#;
    let replayed = r#"hookgate_requests_replayed_total{template="again"}"#;
    let id = gw.dispatch("again", &payload(74, 2)).await;
    assert_eq!(gw.wait_dispatch(&id, Duration::from_secs(10)).await["state"], "failed");
    assert_eq!((metric(&gw, failed).await, metric(&gw, replayed).await), (1, 0));

    mock.set_behavior(|_, _| Reply::Status(200));
    let (status, _) = gw.post_json(&format!("/v1/dispatches/{id}/retry"), &json!({}), &[]).await;
    assert_eq!(status, 202);
    assert_eq!(metric(&gw, failed).await, 1, "the replay took the failure back");
    assert_eq!(metric(&gw, replayed).await, 1);
    assert_eq!(gw.wait_dispatch(&id, Duration::from_secs(10)).await["state"], "delivered");
    assert_eq!((metric(&gw, failed).await, metric(&gw, delivered).await, metric(&gw, replayed).await), (1, 1, 1));
    let (_, stats) = gw.get("/v1/campaigns/74").await;
    assert_eq!(stats["requests"], json!({"delivered": 1, "failed": 0, "pending": 0}), "a view of now");
}
