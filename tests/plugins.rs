//! WASM plugins end to end: the Standard Webhooks example, hostile plugins, signing through
//! the host, hot reload, the compiled cache, and `hookgate plugin check`.

mod common;

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::standard_webhooks::{SECRET, verify as verify_standard_webhook};
use common::wasm::guest;
use common::*;

fn install(config: &ConfigDir, artifact: &str, name: &str) {
    let dir = config.path().join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::copy(guest(artifact), &tmp).unwrap();
    std::fs::rename(tmp, dir.join(format!("{name}.wasm"))).unwrap();
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
    // A time limit the memory bomb cannot reach before the memory limit on a busy machine
    // (the endless loop is stopped by its fuel or by this limit: both are "stopped: ").
    let config = ConfigDir::new(&format!("{TEST_CONFIG}plugins:\n  timeout: 5s\n"));
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

fn generate_key(config: &ConfigDir, id: &str) {
    let out =
        Command::new(bin()).args(["keys", "generate", "--id", id, "--config"]).arg(config.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Acceptance 3, and signing granted per template: a plugin makes an RS256 JWT through the
/// host's `sign` with a key its template grants, and it verifies against the JWKS; a key the
/// template does not grant (another partner's, or the active key without
/// `sign_active_key: true`) fails that delivery with a reason naming the key, even when the
/// plugin goes on without the signature; a grant of a key the store lacks fails at load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_sign_only_with_the_keys_their_template_grants() {
    let mock = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    generate_key(&config, "partner-a"); // the first key: the active one
    generate_key(&config, "partner-b");
    install(&config, "hookgate_test_plugin", "signer");
    let template = |name: &str, auth: &str| {
        config.write_template(
            &format!("{name}.yaml"),
            &format!(
                "url: {}\nverify: false\nretries: 0\nauth: {{type: signer, {auth}}}\n",
                mock.url(&format!("/{name}"))
            ),
        );
    };
    template("granted", "mode: jwt, key: partner-a, sign_keys: [partner-a]");
    template("other", "mode: jwt, key: partner-b, sign_keys: [partner-a]");
    template("quiet", "mode: sign-quiet, key: partner-b, sign_keys: [partner-a]");
    template("ungranted", "mode: jwt, key: partner-a");
    template("implicit", "mode: jwt, sign_keys: [partner-a]");
    template("bare", "mode: jwt");
    template("active", "mode: jwt, sign_active_key: true");
    config.write_template(
        "unknown.yaml",
        &format!(
            "url: {}\nverify: false\nauth:\n  type: signer\n  mode: jwt\n  sign_keys: [partner-c]\n",
            mock.url("/u")
        ),
    );
    let gw = Gateway::start(&config, &[]).await;
    for name in ["granted", "other", "quiet", "ungranted", "implicit", "bare", "active"] {
        gw.wait_state(name, "active", Duration::from_secs(20)).await;
    }
    let unknown = gw.wait_state("unknown", "invalid", Duration::from_secs(20)).await;
    let error = unknown["error"].as_str().unwrap();
    assert!(error.contains("unknown.yaml:6:3: ") && error.contains("`sign_keys`"), "{error}");
    assert!(error.contains("no key `partner-c`"), "{error}");

    let (_, jwks) = gw.get("/.well-known/jwks.json").await;
    let verify = |jwt: &str, kid: &str, sub: &str| {
        let key = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid).expect("the key is in the JWKS");
        let decoding =
            jsonwebtoken::DecodingKey::from_rsa_components(key["n"].as_str().unwrap(), key["e"].as_str().unwrap())
                .unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.set_issuer(&["test-plugin"]);
        let token = jsonwebtoken::decode::<serde_json::Value>(jwt, &decoding, &validation).expect("the JWT verifies");
        assert_eq!(token.claims["sub"], sub);
        // A changed payload does not verify.
        let mut parts: Vec<&str> = jwt.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"iss":"test-plugin","sub":"other","exp":9999999999}"#);
        parts[1] = &forged;
        assert!(jsonwebtoken::decode::<serde_json::Value>(&parts.join("."), &decoding, &validation).is_err());
    };

    for (name, kid) in [("granted", "partner-a"), ("active", "partner-a")] {
        let id = gw.dispatch(name, &payload(920, 1)).await;
        assert_eq!(gw.wait_dispatch(&id, Duration::from_secs(10)).await["state"], "delivered", "{name}");
        let request = mock.requests().into_iter().find(|r| r.path == format!("/{name}")).unwrap();
        assert_eq!(request.header("x-jwt-kid").as_deref(), Some(kid), "{name}");
        verify(&request.header("x-jwt").unwrap(), kid, name);
    }

    for (name, expected) in [
        ("other", "refused: sign: key `partner-b` is not granted to template `other`"),
        ("quiet", "refused: sign: key `partner-b` is not granted to template `quiet`"),
        ("ungranted", "refused: sign: key `partner-a` is not granted to template `ungranted`"),
        ("bare", "refused: sign: the active key is not granted to template `bare`"),
        ("implicit", "refused: sign: the active key is not granted to template `implicit`"),
    ] {
        let id = gw.dispatch(name, &payload(921, 1)).await;
        let view = gw.wait_dispatch(&id, Duration::from_secs(10)).await;
        assert_eq!(view["state"], "failed", "{name}: {view}");
        let reason = view["requests"][0]["reason"].as_str().unwrap();
        assert!(reason.starts_with("auth plugin `signer`: "), "{name}: {reason}");
        assert!(reason.contains(expected), "{name}: {reason}");
    }
    let paths: Vec<String> = mock.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/granted", "/active"], "a refused signature sends nothing");
}

/// A plugin's `log` lines are escaped (a `\n` cannot start a forged line) and capped per call,
/// with one note saying how many were dropped; the caps count each call of a reused instance
/// afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_log_lines_are_escaped_and_capped_per_call() {
    let mock = Mock::answering(200).await;
    let config = ConfigDir::new(&format!("{TEST_CONFIG}plugins:\n  reuse: 10\n"));
    install(&config, "hookgate_test_plugin", "hostile");
    config.write_template(
        "log.yaml",
        &format!("url: {}\nverify: false\nauth: {{type: hostile, mode: log}}\n", mock.url("/log")),
    );
    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("log", "active", Duration::from_secs(20)).await;
    // Two calls, one instance (the second reuses the first's): each may log its 32 lines.
    for call in 1..=2 {
        let id = gw.dispatch("log", &payload(940, 1)).await;
        assert_eq!(gw.wait_dispatch(&id, Duration::from_secs(10)).await["state"], "delivered");
        let logs = wait_for("the dropped-lines note", Duration::from_secs(10), async || {
            let logs = gw.output();
            (logs.matches("log lines dropped").count() == call).then_some(logs)
        })
        .await;
        assert!(!logs.lines().any(|l| l.starts_with("2030-01-01")), "a forged line: {logs}");
        assert!(logs.contains(r"line 0\n2030-01-01T00:00:00.000000Z ERROR"), "{logs}");
        assert_eq!(logs.matches("ERROR hookgate: forged").count(), 32 * call, "32 lines a call");
        assert_eq!(
            logs.matches("68 log lines dropped: a plugin call may log at most 32 lines").count(),
            call,
            "one note a call: {logs}"
        );
    }
}

/// The `x-count` the test plugin's `count` mode reports for one delivery of `template`
/// (`then` goes into the body: `count:trap` and the like make the plugin fail after counting),
/// or the delivery's failure reason.
async fn count_call(gw: &Gateway, mock: &Mock, template: &str, then: &str) -> Result<u64, String> {
    let mut body = payload(970, 1);
    body["key_values"]["then"] = then.into();
    let id = gw.dispatch(template, &body).await;
    let view = gw.wait_dispatch(&id, Duration::from_secs(20)).await;
    if view["state"] != "delivered" {
        return Err(view["requests"][0]["reason"].as_str().unwrap_or_default().to_string());
    }
    let request = mock.requests().into_iter().rev().find(|r| r.path == format!("/{template}")).unwrap();
    Ok(request.header("x-count").expect("the count header").parse().unwrap())
}

fn count_template(config: &ConfigDir, mock: &Mock, name: &str, extra: &str) {
    config.write_template(
        &format!("{name}.yaml"),
        &format!(
            "url: {}\nverify: false\nretries: 0\n{extra}auth: {{type: counter, mode: count}}\n",
            mock.url(&format!("/{name}"))
        ),
    );
}

/// Acceptance 3 of issue 13: an instance serves up to `plugins.reuse` calls of one template
/// version, and its globals survive between them; it is thrown away after a trap, a limit
/// (time or fuel, memory, output caps) or an error (the next call starts at 1 again), and is
/// never shared with another template, a new version of its template or a new version of
/// the plugin file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_instances_are_reused_within_a_template_version_only() {
    let mock = Mock::answering(200).await;
    let config = ConfigDir::new(&format!("{TEST_CONFIG}plugins:\n  reuse: 1000\n"));
    install(&config, "hookgate_test_plugin", "counter");
    count_template(&config, &mock, "a", "");
    count_template(&config, &mock, "b", "");
    let gw = Gateway::start(&config, &[]).await;
    for name in ["a", "b"] {
        gw.wait_state(name, "active", Duration::from_secs(20)).await;
    }
    let call = async |template: &str, then: &str| count_call(&gw, &mock, template, then).await;
    assert_eq!(call("a", "").await, Ok(1));
    assert_eq!(call("a", "").await, Ok(2), "the instance was reused, its global kept");
    assert_eq!(call("a", "").await, Ok(3));
    assert_eq!(call("b", "").await, Ok(1), "another template, another instance");
    assert_eq!(call("a", "").await, Ok(4));

    for (then, reason) in [
        ("count:trap", "trapped: "),
        ("count:loop", "stopped: "),
        ("count:memory", "stopped: asked for more than"),
        ("count:error", "count: an error on purpose"),
        ("count:huge", "stopped: returned 2000 headers"),
    ] {
        let failed = call("a", then).await.unwrap_err();
        assert!(failed.starts_with("auth plugin `counter`: ") && failed.contains(reason), "{then}: {failed}");
        assert_eq!(call("a", "").await, Ok(1), "after {then}, a fresh instance");
        assert_eq!(call("a", "").await, Ok(2), "{then}: and that one is reused");
    }
    assert_eq!(call("b", "").await, Ok(2), "b's instance was untouched by a's failures");

    // A new version of template `a` (a changed header): a fresh instance; b keeps its own.
    let version = gw.wait_state("a", "active", Duration::from_secs(5)).await["version"].clone();
    count_template(&config, &mock, "a", "headers: {x-version: '2'}\n");
    wait_for("template a's new version", Duration::from_secs(20), async || {
        let (_, body) = gw.get("/v1/templates/a").await;
        (body["state"] == "active" && body["version"] != version).then_some(())
    })
    .await;
    assert_eq!(call("a", "").await, Ok(1), "a new template version, a fresh instance");
    assert_eq!(call("a", "").await, Ok(2));
    assert_eq!(call("b", "").await, Ok(3));

    // A new version of the plugin file (the same code, another file): fresh instances for all.
    let mut wasm = std::fs::read(guest("hookgate_test_plugin")).unwrap();
    wasm.extend_from_slice(b"\x00\x08\x07version");
    let dir = config.path().join("plugins");
    std::fs::write(dir.join(".counter.tmp"), &wasm).unwrap();
    std::fs::rename(dir.join(".counter.tmp"), dir.join("counter.wasm")).unwrap();
    wait_for("the plugin to reload", Duration::from_secs(20), async || {
        (gw.output().matches("plugin loaded").count() == 2).then_some(())
    })
    .await;
    assert_eq!(call("a", "").await, Ok(1), "a new plugin version, a fresh instance");
    assert_eq!(call("b", "").await, Ok(1), "a new plugin version, a fresh instance");
    assert_eq!(call("b", "").await, Ok(2));
}

/// `plugins.reuse` bounds the calls of one instance; `plugins.reuse: 1` gives every call a
/// fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_reuse_bounds_the_calls_of_an_instance() {
    let mock = Mock::answering(200).await;
    for (reuse, expected) in [(1, [1, 1, 1, 1]), (3, [1, 2, 3, 1])] {
        let config = ConfigDir::new(&format!("{TEST_CONFIG}plugins:\n  reuse: {reuse}\n"));
        install(&config, "hookgate_test_plugin", "counter");
        count_template(&config, &mock, "a", "");
        let gw = Gateway::start(&config, &[]).await;
        gw.wait_state("a", "active", Duration::from_secs(20)).await;
        let mut counts = Vec::new();
        for _ in 0..4 {
            counts.push(count_call(&gw, &mock, "a", "").await.unwrap());
        }
        assert_eq!(counts, expected, "plugins.reuse: {reuse}");
    }
}

/// What a transform returns is bounded and checked: its error text is escaped and capped,
/// empty requests count against `plugins.max_output_bytes`, and the profiles its requests
/// claim must add up to no more than the payload has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_output_is_capped_and_its_profile_counts_checked() {
    let mock = Mock::answering(200).await;
    // Not a test of the time limit: building 50,000 requests must not hit it on a busy machine.
    let config = ConfigDir::new(&format!("{TEST_CONFIG}plugins:\n  timeout: 10s\n"));
    install(&config, "hookgate_test_plugin", "hostile");
    for mode in ["calm", "long-error", "empty", "profiles", "double"] {
        config.write_template(
            &format!("t-{mode}.yaml"),
            &format!(
                "url: {url}\nverify: false\ntransform: {{type: hostile, mode: {mode}, url: {url}}}\n",
                url = mock.url("/t")
            ),
        );
    }
    let gw = Gateway::start(&config, &[]).await;
    for mode in ["calm", "long-error", "empty", "profiles", "double"] {
        gw.wait_state(&format!("t-{mode}"), "active", Duration::from_secs(20)).await;
    }
    let id = gw.dispatch("t-calm", &payload(950, 3)).await;
    assert_eq!(gw.wait_dispatch(&id, Duration::from_secs(10)).await["state"], "delivered");
    let (_, stats) = gw.get("/v1/campaigns/950").await;
    assert_eq!(stats["profiles"]["delivered"], 3, "{stats}");

    for (mode, expected) in [
        (
            "long-error",
            "transform plugin `hostile`: no\\n2030-01-01T00:00:00.000000Z ERROR hookgate: forged\\u{1b}[2J no",
        ),
        ("empty", "transform plugin `hostile`: stopped: returned 50000 requests of"),
        ("profiles", "returned bad output: request 0 claims 1000 profiles; the payload has 3"),
        ("double", "returned bad output: its requests claim 6 profiles and it skipped 0, more than the payload's 3"),
    ] {
        let (status, body) = gw.post_json(&format!("/v1/templates/t-{mode}/dispatch"), &payload(951, 3), &[]).await;
        assert_eq!(status, 422, "{mode}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{mode}: {message}");
        assert!(message.len() < 1200 && !message.contains('\n'), "{mode}: {} bytes", message.len());
    }
    assert_eq!(mock.requests().len(), 3, "only the calm transform's requests were sent");
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

/// Where the process may not map 4 GiB of address space per plugin memory (here `ulimit -v`
/// of 48 GiB, against the 1 TiB the default pool reserves), plugins still load and run,
/// with bounds-checked code, and a warning says so.
#[test]
fn plugins_run_where_address_space_is_limited() {
    let config = ConfigDir::new(TEST_CONFIG);
    let out = Command::new("sh")
        .args(["-c", "ulimit -v 50331648 && exec \"$0\" \"$@\""])
        .arg(bin())
        .args(["plugin", "check"])
        .arg(guest("standard_webhooks"))
        .args(["--with", &format!(r#"{{"secret": "{SECRET}"}}"#), "--config"])
        .arg(config.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("webhook-signature: v1,"), "{stdout}");
    assert!(stderr.contains("cannot reserve 4 GiB of address space per plugin memory"), "{stderr}");
}

/// Acceptance 6 (the cache): a compiled artefact that is not the one this install wrote for
/// that plugin — here a genuine artefact of another plugin put under its name, which wasmtime
/// itself would load — is compiled again, not loaded; the plugin keeps its own behaviour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_compiled_artefact_is_not_loaded() {
    use sha2::Digest;
    let mock = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    install(&config, "hookgate_test_plugin", "calm");
    install(&config, "standard_webhooks", "signing");
    config.write_template("calm.yaml", &format!("url: {}\nverify: false\nauth: {{type: calm}}\n", mock.url("/")));
    let hash = |artifact: &str| -> String {
        sha2::Sha256::digest(std::fs::read(guest(artifact)).unwrap()).iter().map(|b| format!("{b:02x}")).collect()
    };
    let cache = config.path().join("data/plugin-cache");
    let artefact = |artifact: &str| {
        let prefix = hash(artifact);
        std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&prefix))
            .unwrap_or_else(|| panic!("no artefact of {artifact} in {}", cache.display()))
    };
    {
        let gw = Gateway::start(&config, &[]).await;
        gw.wait_state("calm", "active", Duration::from_secs(20)).await;
        wait_for("both plugins to load", Duration::from_secs(20), async || {
            (gw.output().matches("plugin loaded (compiled)").count() == 2).then_some(())
        })
        .await;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the cache folder is private");
    }
    std::fs::copy(artefact("standard_webhooks"), artefact("hookgate_test_plugin")).unwrap();

    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("calm", "active", Duration::from_secs(20)).await;
    let logs = wait_for("both plugins to load", Duration::from_secs(20), async || {
        let logs = gw.output();
        (logs.matches("plugin loaded").count() == 2).then_some(logs)
    })
    .await;
    assert!(logs.contains("its tag does not match its content"), "{logs}");
    assert_eq!(logs.matches("plugin loaded (compiled)").count(), 1, "the tampered one is compiled again: {logs}");
    assert_eq!(logs.matches("plugin loaded (from the compiled cache)").count(), 1, "{logs}");
    let id = gw.dispatch("calm", &payload(960, 1)).await;
    assert_eq!(gw.wait_dispatch(&id, Duration::from_secs(10)).await["state"], "delivered");
    let request = mock.requests().pop().unwrap();
    assert_eq!(request.header("x-test-plugin").as_deref(), Some("calm"), "its own code ran");
    assert!(request.header("webhook-signature").is_none(), "not the other plugin's");
}
