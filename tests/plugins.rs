//! WASM plugins end to end: the Standard Webhooks example, hostile plugins, signing through
//! the host, hot reload, the compiled cache, and `hookgate plugin check`.

mod common;

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::wasm::guest;
use common::*;
use hmac::{KeyInit, Mac};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn install(config: &ConfigDir, artifact: &str, name: &str) {
    let dir = config.path().join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::copy(guest(artifact), &tmp).unwrap();
    std::fs::rename(tmp, dir.join(format!("{name}.wasm"))).unwrap();
}

/// A verifier written from the Standard Webhooks spec: the signed content is
/// `{id}.{timestamp}.{body}`, the key is the base64 after `whsec_`, and the header holds
/// space-separated `v1,<base64 HMAC-SHA256>` signatures.
fn verify_standard_webhook(
    secret: &str,
    id: &str,
    timestamp: &str,
    body: &[u8],
    signatures: &str,
) -> Result<(), String> {
    let key = STANDARD.decode(secret.strip_prefix("whsec_").ok_or("no whsec_ prefix")?).map_err(|e| e.to_string())?;
    let ts: i64 = timestamp.parse().map_err(|_| "timestamp is not an integer")?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    if (now - ts).abs() > 300 {
        return Err(format!("timestamp {ts} is too far from now {now}"));
    }
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    let ok = signatures.split(' ').any(|s| s.strip_prefix("v1,") == Some(expected.as_str()));
    if ok { Ok(()) } else { Err(format!("no v1 signature matches in `{signatures}`")) }
}

/// Acceptance 1: the example plugin, built from source, signs deliveries that the verifier
/// accepts; retries of a request carry the same `webhook-id` (the delivery id), another
/// delivery of the same body another one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks_example_signs_deliveries() {
    let mock = Mock::start(|n, _| Reply::Status(if n == 1 { 503 } else { 200 })).await;
    let config = ConfigDir::new(TEST_CONFIG);
    install(&config, "standard_webhooks", "standard-webhooks");
    config.write_template(
        "signed.yaml",
        &format!("url: {}\nauth:\n  type: standard-webhooks\n  secret: ${{env:WEBHOOK_SECRET}}\n", mock.url("/hook")),
    );
    let gw = Gateway::start(&config, &[("WEBHOOK_SECRET", SECRET)]).await;
    gw.wait_state("signed", "active", Duration::from_secs(20)).await;
    let id = gw.dispatch("signed", &payload(900, 3)).await;
    assert_eq!(gw.wait_dispatch(&id, Duration::from_secs(10)).await["state"], "delivered");

    let requests = mock.requests();
    assert_eq!(requests.len(), 3, "the test payload, a 503, the retry");
    for r in &requests {
        let (id, ts, sig) = (
            r.header("webhook-id").unwrap(),
            r.header("webhook-timestamp").unwrap(),
            r.header("webhook-signature").unwrap(),
        );
        assert!(id.starts_with("msg_"), "{id}");
        verify_standard_webhook(SECRET, &id, &ts, &r.body, &sig).unwrap_or_else(|e| panic!("{e}"));
        // A tampered body fails.
        let mut tampered = r.body.to_vec();
        tampered.push(b' ');
        assert!(verify_standard_webhook(SECRET, &id, &ts, &tampered, &sig).is_err());
    }
    assert_eq!(requests[1].header("webhook-id"), requests[2].header("webhook-id"), "a retry keeps its id");
    let delivery = requests[1].header("x-hookgate-delivery-id").unwrap();
    assert_eq!(requests[1].header("webhook-id").unwrap(), format!("msg_{delivery}"), "the id is the delivery's");

    // The same payload dispatched again: the same body, but another message, so another id
    // (an id derived from the body would make receivers drop it as a duplicate).
    let again = gw.dispatch("signed", &payload(900, 3)).await;
    assert_eq!(gw.wait_dispatch(&again, Duration::from_secs(10)).await["state"], "delivered");
    let requests = mock.requests();
    let last = requests.last().unwrap();
    assert_eq!(last.body, requests[1].body, "the same body");
    assert_ne!(last.header("webhook-id"), requests[1].header("webhook-id"), "another message, another id");
    verify_standard_webhook(
        SECRET,
        &last.header("webhook-id").unwrap(),
        &last.header("webhook-timestamp").unwrap(),
        &last.body,
        &last.header("webhook-signature").unwrap(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let logs = gw.output();
    assert!(!logs.contains(SECRET) && !logs.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
}

/// Acceptance 2: hostile plugins fail only their own delivery, within the limits, with an
/// error naming the plugin; other templates keep delivering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_fail_only_their_own_delivery() {
    let mock = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    install(&config, "hookgate_test_plugin", "hostile");
    let cases = [
        ("loop", "stopped: ", ""),
        ("memory", "stopped: asked for more than 16777216 bytes of memory", ""),
        ("recursion", "trapped: ", ""),
        ("trap", "trapped: ", ""),
        ("huge", "stopped: returned 2000 headers", ""),
        ("fetch", "host `not-allowed.invalid` is not allowed", "  url: http://not-allowed.invalid/secret\n"),
    ];
    for (mode, _, extra) in &cases {
        config.write_template(
            &format!("{mode}.yaml"),
            &format!(
                "url: {}\nverify: false\nretries: 0\nauth:\n  type: hostile\n  mode: {mode}\n{extra}",
                mock.url(&format!("/{mode}"))
            ),
        );
    }
    config
        .write_template("calm.yaml", &format!("url: {}\nverify: false\nauth: {{type: hostile}}\n", mock.url("/calm")));
    config.write_template(
        "basic.yaml",
        &format!("url: {}\nverify: false\nauth: {{type: basic, username: u, password: p}}\n", mock.url("/basic")),
    );
    let gw = Gateway::start(&config, &[]).await;
    for (mode, _, _) in &cases {
        gw.wait_state(mode, "active", Duration::from_secs(20)).await;
    }
    let ids: Vec<(String, &str, &str)> = {
        let mut ids = Vec::new();
        for (mode, expected, _) in &cases {
            ids.push((gw.dispatch(mode, &payload(910, 1)).await, *mode, *expected));
        }
        ids
    };
    // Other templates deliver meanwhile.
    let calm = gw.dispatch("calm", &payload(911, 1)).await;
    let basic = gw.dispatch("basic", &payload(911, 1)).await;
    for (id, mode, expected) in ids {
        let view = gw.wait_dispatch(&id, Duration::from_secs(20)).await;
        assert_eq!(view["state"], "failed", "{mode}: {view}");
        let reason = view["requests"][0]["reason"].as_str().unwrap();
        assert!(reason.starts_with("auth plugin `hostile`: "), "{mode}: {reason}");
        assert!(reason.contains(expected), "{mode}: {reason}");
        let latency = view["requests"][0]["attempts"][0]["latency_ms"].as_f64().unwrap();
        assert!(latency < 3000.0, "{mode} was stopped within the limits ({latency} ms)");
    }
    assert_eq!(gw.wait_dispatch(&calm, Duration::from_secs(10)).await["state"], "delivered");
    assert_eq!(gw.wait_dispatch(&basic, Duration::from_secs(10)).await["state"], "delivered");
    let paths: Vec<String> = mock.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths.len(), 2, "only the calm and basic templates reached the endpoint: {paths:?}");
    let calm_request = mock.requests().into_iter().find(|r| r.path == "/calm").unwrap();
    assert_eq!(calm_request.header("x-test-plugin").as_deref(), Some("calm"));
    // The gateway is still healthy.
    assert_eq!(gw.get("/healthz").await.0, 200);
}

/// Acceptance 3: a plugin makes an RS256 JWT through the host's `sign`; it verifies with
/// the key store's public key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_sign_jwts_with_the_key_store() {
    let mock = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    let out = Command::new(bin())
        .args(["keys", "generate", "--id", "plugin-key", "--config"])
        .arg(config.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    install(&config, "hookgate_test_plugin", "signer");
    config.write_template(
        "jwt.yaml",
        &format!("url: {}\nverify: false\nauth: {{type: signer, mode: jwt}}\n", mock.url("/")),
    );
    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("jwt", "active", Duration::from_secs(20)).await;
    let id = gw.dispatch("jwt", &payload(920, 1)).await;
    assert_eq!(gw.wait_dispatch(&id, Duration::from_secs(10)).await["state"], "delivered");

    let request = &mock.requests()[0];
    let jwt = request.header("x-jwt").unwrap();
    assert_eq!(request.header("x-jwt-kid").as_deref(), Some("plugin-key"));
    let (_, jwks) = gw.get("/.well-known/jwks.json").await;
    let key = &jwks["keys"][0];
    assert_eq!(key["kid"], "plugin-key");
    let decoding =
        jsonwebtoken::DecodingKey::from_rsa_components(key["n"].as_str().unwrap(), key["e"].as_str().unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    validation.set_issuer(&["test-plugin"]);
    let token = jsonwebtoken::decode::<serde_json::Value>(&jwt, &decoding, &validation).expect("the JWT verifies");
    assert_eq!(token.claims["sub"], "jwt");
    // A changed payload does not verify.
    let mut parts: Vec<&str> = jwt.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(br#"{"iss":"test-plugin","sub":"other","exp":9999999999}"#);
    parts[1] = &forged;
    assert!(jsonwebtoken::decode::<serde_json::Value>(&parts.join("."), &decoding, &validation).is_err());
}

/// Acceptance 4 and 5: replacing a plugin file changes behaviour without a restart; a
/// corrupt file keeps the old version; a restart loads from the compiled cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_hot_reload_keep_the_last_good_version_and_cache_compiled_code() {
    let mock = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    install(&config, "hookgate_test_plugin", "acme");
    config.write_template(
        "acme.yaml",
        &format!("url: {}\nverify: false\nauth:\n  type: acme\n  secret: {SECRET}\n", mock.url("/")),
    );
    let send = async |gw: &Gateway| {
        let id = gw.dispatch("acme", &payload(930, 1)).await;
        assert_eq!(gw.wait_dispatch(&id, Duration::from_secs(10)).await["state"], "delivered");
        mock.requests().last().cloned().unwrap()
    };
    {
        let gw = Gateway::start(&config, &[]).await;
        gw.wait_state("acme", "active", Duration::from_secs(20)).await;
        assert!(gw.output().contains("plugin loaded (compiled)"), "{}", gw.output());
        assert_eq!(send(&gw).await.header("x-test-plugin").as_deref(), Some("calm"));

        install(&config, "standard_webhooks", "acme");
        wait_for("the replaced plugin to load", Duration::from_secs(10), async || {
            (gw.output().matches("plugin loaded").count() >= 2).then_some(())
        })
        .await;
        let signed = send(&gw).await;
        assert!(signed.header("webhook-signature").is_some(), "the new plugin signs");
        assert!(signed.header("x-test-plugin").is_none());

        std::fs::write(config.path().join("plugins/acme.wasm"), b"\0asm garbage").unwrap();
        wait_for("the corrupt file to be reported", Duration::from_secs(10), async || {
            gw.output().contains("plugin `acme` does not load").then_some(())
        })
        .await;
        assert!(gw.output().contains("the previous version stays live"));
        let (_, plugins) = gw.get("/v1/plugins").await;
        let acme = plugins["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "acme").unwrap().clone();
        assert_eq!((acme["kind"].as_str(), acme["state"].as_str()), (Some("wasm"), Some("invalid")), "{acme}");
        assert!(acme["error"].as_str().unwrap().contains("not a valid WebAssembly component"), "{acme}");
        assert!(acme["sha256"].as_str().is_some_and(|h| h.len() == 64), "the live version's hash: {acme}");
        assert!(
            plugins["plugins"].as_array().unwrap().iter().any(|p| p["name"] == "oauth2" && p["kind"] == "built-in")
        );
        assert!(send(&gw).await.header("webhook-signature").is_some(), "the last good version still signs");
        install(&config, "standard_webhooks", "acme");
    }
    // A restart: the compiled code comes from data_dir/plugin-cache, not the compiler.
    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("acme", "active", Duration::from_secs(20)).await;
    let logs = gw.output();
    assert!(logs.contains("plugin loaded (from the compiled cache)"), "{logs}");
    assert!(!logs.contains("plugin loaded (compiled)"), "{logs}");
    assert!(send(&gw).await.header("webhook-signature").is_some());
}

/// `hookgate plugin check` reports the contract, the plugin's info, and a sample run.
#[test]
fn plugin_check_reports_version_exports_and_a_sample_run() {
    let config = ConfigDir::new(TEST_CONFIG);
    let run = |file: std::path::PathBuf, with: &str| {
        let out = Command::new(bin())
            .args(["plugin", "check"])
            .arg(file)
            .args(["--with", with, "--config"])
            .arg(config.path())
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string())
    };
    let (ok, out) = run(guest("standard_webhooks"), &format!(r#"{{"secret": "{SECRET}"}}"#));
    assert!(ok, "{out}");
    assert!(out.contains("implementing hookgate:plugin@0.1.0"), "{out}");
    assert!(out.contains("name:     standard-webhooks 0.1.0"), "{out}");
    assert!(out.contains("does:     authorize"), "{out}");
    assert!(out.contains("webhook-signature: v1,"), "{out}");

    let (ok, out) = run(guest("hookgate_test_plugin"), r#"{"mode": "loop"}"#);
    assert!(!ok);
    assert!(
        out.contains("authorize: failed: plugin `hookgate_test_plugin` stopped")
            || out.contains("authorize: failed: plugin `hookgate_test_plugin`: stopped"),
        "{out}"
    );

    let not_wasm = config.path().join("x.wasm");
    std::fs::write(&not_wasm, b"hello").unwrap();
    let (ok, out) = run(not_wasm, "{}");
    assert!(!ok && out.contains("does not load: not a valid WebAssembly component"), "{out}");
}
