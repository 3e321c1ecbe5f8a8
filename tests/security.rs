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

/// The network policy binds a plugin's `fetch` as it binds destinations: a host the
/// template's `allow_hosts` lists but `network.allow` does not cover is refused, and nothing
/// reaches it; with the policy opened, the same plugin reaches the same server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_fetch_obeys_the_network_policy() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let destination = Mock::answering(200).await;
    // What the plugin fetches: a server on 127.0.0.2, counting what reaches it.
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let fetched = listener.local_addr().unwrap();
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { "internal" }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });

    let template = format!(
        "url: {}\nverify: false\nretries: 0\nauth:\n  type: hostile\n  mode: fetch\n  url: http://{fetched}/internal\n  allow_hosts: [\"127.0.0.2\"]\n",
        destination.url("/in")
    );
    let outcome = async |allow: &str| {
        let config = ConfigDir::new(&TEST_CONFIG.replace("allow: [loopback]", allow));
        let dir = config.path().join("plugins");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(common::wasm::guest("hookgate_test_plugin"), dir.join("hostile.wasm")).unwrap();
        config.write_template("fetching.yaml", &template);
        let gw = Gateway::start(&config, &[]).await;
        gw.wait_state("fetching", "active", Duration::from_secs(20)).await;
        let id = gw.dispatch("fetching", &payload(82, 1)).await;
        gw.wait_dispatch(&id, Duration::from_secs(20)).await
    };

    // Only the destination's address is open: the fetch is refused before any connection.
    let refused = outcome("allow: [127.0.0.1/32]").await;
    assert_eq!(refused["state"], "failed", "{refused}");
    let reason = refused["requests"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("fetch failed") && reason.contains("127.0.0.2"), "{reason}");
    assert!(reason.contains("loopback address"), "{reason}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the fetch reached a host the policy refuses");
    assert!(destination.requests().is_empty(), "a failed authorization sends nothing");

    // Loopback opened: the same fetch gets through (the setup could reach the server).
    let allowed = outcome("allow: [loopback]").await;
    assert_eq!(allowed["state"], "delivered", "{allowed}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(destination.deliveries()[0].header("x-fetched-status").as_deref(), Some("200"));
}

// ---------------------------------------------------------------- confined references

/// The first line the API writes into every template file (core's `refs::API_MARKER`).
const API_MARKER: &str = hookgate_core::template::refs::API_MARKER;

/// Acceptance 2: a template written through `PUT` may reference only what `secrets.api`
/// exposes. Everything else (a variable not listed, the key store, an absolute path, a file
/// outside `secrets.dir` that exists or not) is refused with the same message before the
/// template is verified, so the caller's endpoint never hears of it; and the written file
/// keeps those limits when it is reloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_templates_reference_only_what_the_operator_exposed() {
    let sink = Mock::answering(200).await;
    let config = ConfigDir::new(&format!(
        "{TEST_CONFIG}secrets:\n  dir: secrets\n  api:\n    env: [PARTNER_*]\n    files: true\n"
    ));
    let root = config.path();
    std::fs::create_dir_all(root.join("secrets")).unwrap();
    std::fs::write(root.join("secrets/partner.txt"), "exposed-file-value\n").unwrap();
    std::fs::create_dir_all(root.join("data/keys")).unwrap();
    std::fs::write(root.join("data/keys/default.pem"), "-----BEGIN PRIVATE KEY-----\n").unwrap();
    std::fs::write(root.join("outside.txt"), "operator-only-value\n").unwrap();
    let env = [("LEAKY_SECRET", "leaky-value-do-not-send"), ("PARTNER_TOKEN", "exposed-env-value")];
    let gw = Gateway::start(&config, &env).await;
    let template = |reference: &str| format!("url: {}\nheaders:\n  X-Leak: \"{reference}\"\n", sink.url("/leak"));

    let refused = [
        "${env:LEAKY_SECRET}".to_string(),
        "${env:HOOKGATE_ADMIN_TOKEN}".into(),
        "${file:../data/keys/default.pem}".into(),
        "${file:data/keys/default.pem}".into(),
        "${file:/etc/passwd}".into(),
        format!("${{file:{}}}", root.join("outside.txt").display()),
        format!("${{file:{}}}", root.join("missing.txt").display()),
        "${file:outside.txt}".into(),
        "${file:missing.txt}".into(),
        "${file:secrets/../outside.txt}".into(),
    ];
    let mut messages = Vec::new();
    for reference in &refused {
        let (status, body) = gw.put_text("/v1/templates/x", &template(reference)).await;
        assert_eq!(status, 422, "{reference}: {body}");
        assert_eq!(body["error"]["code"], "invalid_template", "{reference}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("`{reference}` is not allowed in a template written through the API")),
            "{reference}: {message}"
        );
        assert!(!message.contains("os error") && !message.contains("No such file"), "{message}");
        messages.push(message.replace(reference.as_str(), "REF"));
    }
    let (env_messages, file_messages) = messages.split_at(2);
    assert!(env_messages.iter().all(|m| *m == env_messages[0]), "{env_messages:#?}");
    assert!(file_messages.iter().all(|m| *m == file_messages[0]), "one message, existing or not: {file_messages:#?}");
    assert!(env_messages[0].contains("secrets.api.env"), "says what would allow it: {}", env_messages[0]);
    assert!(file_messages[0].contains("secrets.api.files"), "{}", file_messages[0]);
    assert!(sink.requests().is_empty(), "nothing reached the caller's endpoint: {:?}", sink.requests());
    assert!(!config.template_path("x.yaml").exists());

    // What the operator exposed works, and the file is written with the API's marker.
    let exposed = template("${env:PARTNER_TOKEN} ${file:secrets/partner.txt}");
    let (status, body) = gw.put_text("/v1/templates/x", &exposed).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(sink.requests()[0].header("x-leak").as_deref(), Some("exposed-env-value exposed-file-value"));
    let written = std::fs::read_to_string(config.template_path("x.yaml")).unwrap();
    assert_eq!(written, format!("{API_MARKER}\n{exposed}"));

    // The file keeps the API's limits when it is loaded again: edited on disk with a
    // reference the API may not make, it does not load.
    config.write_template("x.yaml", &format!("{API_MARKER}\n{}", template("${env:LEAKY_SECRET}")));
    let body = gw.wait_state("x", "invalid", Duration::from_secs(10)).await;
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("`${env:LEAKY_SECRET}` is not allowed in a template written through the API"), "{error}");
    assert_eq!(sink.requests().len(), 1, "only the verification of the exposed values");
    let logs = gw.output();
    for secret in ["leaky-value-do-not-send", "operator-only-value", "BEGIN PRIVATE KEY"] {
        assert!(sink.requests().iter().all(|r| !format!("{:?}", r.headers).contains(secret)), "{secret}");
        assert!(!logs.contains(secret), "{secret} in the logs");
    }

    // Without the marker the same file is the operator's, who may read any variable.
    config.write_template("x.yaml", &template("${env:LEAKY_SECRET}").replace("url:", "verify: false\nurl:"));
    gw.wait_state("x", "active", Duration::from_secs(10)).await;
}

/// Acceptance 2, the config folder: `${file:..}` reads inside the config folder (and
/// `secrets.dir`), never outside it, never in `data_dir`; one message whether the target
/// exists or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_folder_templates_read_only_inside_it() {
    let config = ConfigDir::new(TEST_CONFIG);
    std::fs::create_dir_all(config.path().join("data/keys")).unwrap();
    std::fs::write(config.path().join("data/keys/default.pem"), "-----BEGIN PRIVATE KEY-----\n").unwrap();
    std::fs::write(config.path().join("partner.txt"), "inside\n").unwrap();
    let exe = std::env::current_exe().unwrap();
    let refused = [
        ("up", "../outside".to_string()),
        ("absolute", exe.display().to_string()),
        ("keys", "data/keys/default.pem".into()),
        ("missing-key", "data/keys/missing.pem".into()),
    ];
    for (name, path) in &refused {
        config.write_template(
            &format!("{name}.yaml"),
            &format!("url: http://127.0.0.1:9/\nverify: false\nheaders:\n  X-A: \"${{file:{path}}}\"\n"),
        );
    }
    config.write_template(
        "inside.yaml",
        "url: http://127.0.0.1:9/\nverify: false\nheaders: {X-A: \"${file:partner.txt}\"}\n",
    );
    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("inside", "active", Duration::from_secs(10)).await;
    let mut messages = Vec::new();
    for (name, path) in &refused {
        let body = gw.wait_state(name, "invalid", Duration::from_secs(10)).await;
        let error = body["error"].as_str().unwrap();
        let reference = format!("${{file:{path}}}");
        assert!(error.contains(&format!("`{reference}` is not allowed: ")), "{name}: {error}");
        assert!(error.contains("yaml:4:"), "located at the reference: {error}");
        let message = error.split_once(": ").unwrap().1.replace(&reference, "REF").replace(name, "NAME");
        messages.push(message);
    }
    assert!(messages.iter().all(|m| *m == messages[0]), "{messages:#?}");
    assert!(!gw.output().contains("BEGIN PRIVATE KEY"));
}

// ---------------------------------------------------------------- the API without a token

/// Acceptance 5: without an admin token, `/v1` refuses what a web page can send: another
/// `Origin`, `Sec-Fetch-Site: cross-site`, a `Host` that is not loopback (DNS rebinding);
/// and every caller must send JSON (YAML for `PUT`). With the proper headers it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_web_pages_cannot_use_the_api() {
    let mock = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template("orders.yaml", &format!("url: {}\nverify: false\n", mock.url("/")));
    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("orders", "active", Duration::from_secs(10)).await;
    let port = gw.addr.port();
    let dispatch_url = format!("{}/v1/templates/orders/dispatch", gw.base);
    let body = payload(91, 1).to_string();
    let send = async |rb: reqwest::RequestBuilder| {
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        (status, serde_json::from_str::<serde_json::Value>(&r.text().await.unwrap()).unwrap_or_default())
    };

    let evil_host = format!("evil.example:{port}");
    let web_pages: [(&str, &str); 5] = [
        ("origin", "http://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
        ("host", "evil.example"),
        ("host", &evil_host),
    ];
    for (header, value) in web_pages {
        let json = gw.http.post(&dispatch_url).header("content-type", "application/json").body(body.clone());
        let (status, answer) = send(json.header(header, value)).await;
        assert_eq!(status, 403, "{header}: {value}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("without an admin token") && message.contains("admin_token"), "{message}");
        let (status, _) = send(gw.http.get(format!("{}/v1/templates", gw.base)).header(header, value)).await;
        assert_eq!(status, 403, "GET with {header}: {value}");
    }
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let (status, answer) =
            send(gw.http.post(&dispatch_url).header("content-type", content_type).body(body.clone())).await;
        assert_eq!(status, 415, "{content_type}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("Content-Type: application/json"), "{message}");
    }
    let (status, _) = send(gw.http.post(&dispatch_url).body(body.clone())).await;
    assert_eq!(status, 415, "a body without a Content-Type");
    let (status, answer) = send(
        gw.http.put(format!("{}/v1/templates/other", gw.base)).header("content-type", "text/plain").body("url: x"),
    )
    .await;
    assert_eq!(status, 415, "{answer}");
    assert!(mock.requests().is_empty(), "nothing was dispatched");

    // The proper headers: a program on this machine, or the gateway's own origin.
    let own_origin = format!("http://127.0.0.1:{port}");
    let proper = gw
        .http
        .post(&dispatch_url)
        .header("content-type", "application/json; charset=utf-8")
        .header("origin", &own_origin)
        .header("sec-fetch-site", "same-origin")
        .body(body.clone());
    let (status, answer) = send(proper).await;
    assert_eq!(status, 202, "{answer}");
    gw.wait_dispatch(answer["dispatch_id"].as_str().unwrap(), Duration::from_secs(10)).await;
    assert_eq!(mock.deliveries().len(), 1);
    let (status, _) =
        send(gw.http.get(format!("{}/v1/templates", gw.base)).header("host", format!("localhost:{port}"))).await;
    assert_eq!(status, 200);
    let (status, answer) = send(
        gw.http
            .put(format!("{}/v1/templates/json", gw.base))
            .header("content-type", "application/json")
            .body(json!({"url": mock.url("/json"), "verify": false}).to_string()),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let (status, _) = send(gw.http.post(format!("{}/v1/templates/orders/test", gw.base))).await;
    assert_eq!(status, 200, "a POST without a body needs no Content-Type");
    assert!(!gw.output().contains("`network.allow` opens"), "no warning on loopback");
}

/// With a token, the Content-Type rule holds too (after the token check: no 415 to strangers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_bodies_must_be_json_too() {
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template("orders.yaml", "url: http://127.0.0.1:9/\nverify: false\n");
    let token = "admin-token-for-tests";
    let gw = Gateway::start(&config, &[("HOOKGATE_ADMIN_TOKEN", token)]).await;
    let url = format!("{}/v1/templates/orders/dispatch", gw.base);
    let plain = || gw.http.post(&url).header("content-type", "text/plain").body(payload(92, 1).to_string());
    assert_eq!(plain().send().await.unwrap().status(), 401);
    assert_eq!(plain().bearer_auth(token).send().await.unwrap().status(), 415);
    // A token holder may call from anywhere: the Origin and Host rules are for the tokenless API.
    let r = gw.http.get(format!("{}/v1/templates", gw.base)).bearer_auth(token).header("origin", "http://tool.example");
    assert_eq!(r.send().await.unwrap().status(), 200);
}

/// A short admin token is refused at start, without printing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_short_admin_token() {
    for token in ["short-token", ""] {
        let config = ConfigDir::new("listen: 127.0.0.1:0\n");
        let mut child = std::process::Command::new(bin())
            .arg("serve")
            .arg("--config")
            .arg(config.path())
            .env("HOOKGATE_ADMIN_TOKEN", token)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Polled with a deadline; a gateway that starts instead is stopped, and the test fails.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let exited = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(exited.is_some_and(|status| !status.success()), "serve must refuse {token:?} at start");
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        let chars = token.len();
        assert!(stderr.contains(&format!("has {chars} characters; it needs at least 16")), "{stderr}");
        assert!(token.is_empty() || !stderr.contains(token), "{stderr}");
    }
}

// ---------------------------------------------------------------- file modes

/// Acceptance 6: `data_dir` is 0700 (tightened when it was looser), the database and its WAL
/// 0600, a template written by `PUT` 0600, whatever the umask.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_written_templates_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let mock = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    let data = config.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let gw = Gateway::start(&config, &[]).await;
    assert_eq!(mode(&data), 0o700);
    assert!(gw.output().contains("had mode 0755; tightened to 0700"), "{}", gw.output());

    let (status, body) = gw.put_text("/v1/templates/put", &format!("url: {}\n", mock.url("/"))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(mode(&config.template_path("put.yaml")), 0o600);
    let id = gw.dispatch("put", &payload(93, 1)).await;
    gw.wait_dispatch(&id, Duration::from_secs(10)).await;
    let db = data.join("hookgate.db");
    assert_eq!(mode(&db), 0o600);
    for suffix in ["-wal", "-shm"] {
        let file = data.join(format!("hookgate.db{suffix}"));
        if file.exists() {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
    }
    assert!(data.join("hookgate.db-wal").exists(), "the WAL is there to check");
}

// ---------------------------------------------------------------- destinations vs. listen

/// `serve` warns when `network.allow` opens internal destinations and the API is reachable
/// from other machines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_warns_about_internal_destinations_on_a_public_listen() {
    let config = ConfigDir::new("listen: 0.0.0.0:0\nnetwork:\n  allow: [loopback, 10.1.0.0/16, 93.184.216.34]\n");
    let gw = Gateway::start(&config, &[("HOOKGATE_ADMIN_TOKEN", "admin-token-for-tests")]).await;
    let logs = gw.output();
    assert!(
        logs.contains("`network.allow` opens loopback or private destinations (loopback, 10.1.0.0/16) while the API listens on 0.0.0.0:0"),
        "{logs}"
    );
}

/// The shipped config folder opens no more than `hookgate catch` needs.
#[test]
fn the_shipped_config_allows_only_the_catcher() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let settings = hookgate_core::config::Settings::load(&dir).unwrap();
    let network = &settings.config.network;
    assert!(network.check("127.0.0.1".parse().unwrap()).is_ok(), "the catcher");
    for other in ["127.0.0.2", "::1", "10.0.0.1", "192.168.1.1", "169.254.169.254"] {
        assert!(network.check(other.parse().unwrap()).is_err(), "{other}");
    }
    let example = std::fs::read_to_string(dir.join("templates/example.yaml")).unwrap();
    assert!(example.contains("url: http://127.0.0.1:9000/"), "{example}");
}
