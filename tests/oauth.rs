//! OAuth 2.0 end to end against a strict mock authorization server (tests/common/oauth.rs):
//! each grant, client authentication, JWT assertions, the token cache, 401 handling, key
//! rotation, and secrets kept out of logs and answers.

mod common;

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::oauth::{ClientAuth, OAuthMock, OAuthSettings};
use common::*;
use serde_json::{Value, json};

const CLIENT_SECRET: &str = "cs-5c0a9e-do-not-leak";
const PASSWORD: &str = "pw-7d21f3-do-not-leak";

fn template(webhook: &str, auth: &str) -> String {
    format!("url: {webhook}\nverify: false\nauth:\n{auth}")
}

/// A webhook endpoint that accepts only live tokens of `oauth` (as a resource server).
async fn resource(oauth: &OAuthMock) -> Mock {
    let o = oauth.clone();
    Mock::start(move |_, r| Reply::Status(if o.is_valid(r.header("authorization").as_deref()) { 200 } else { 401 }))
        .await
}

fn keys(config: &ConfigDir, args: &[&str]) -> String {
    let out = Command::new(bin()).arg("keys").args(args).arg("--config").arg(config.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "hookgate keys {args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn token_requests(oauth: &OAuthMock) -> usize {
    oauth.requests().len()
}

/// Acceptance 1: each grant obtains a token and the webhook carries it in the configured
/// header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_and_client_credentials_grants_put_tokens_on_webhooks() {
    let body_server =
        OAuthMock::start(OAuthSettings { client_secret: CLIENT_SECRET.into(), ..Default::default() }).await;
    let basic_server = OAuthMock::start(OAuthSettings {
        client_secret: CLIENT_SECRET.into(),
        password: PASSWORD.into(),
        client_auth: ClientAuth::Basic,
        required_scope: Some("profiles.read profiles.write".into()),
        ..Default::default()
    })
    .await;
    let webhook = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template(
        "cc.yaml",
        &template(
            &webhook.url("/cc"),
            &format!(
                "  type: oauth2\n  grant: client_credentials\n  token_url: {}\n  client_id: hookgate\n  client_secret: ${{env:CLIENT_SECRET}}\n  client_auth: body\n  header: X-Partner-Auth\n  prefix: \"Token \"\n",
                body_server.token_url()
            ),
        ),
    );
    config.write_template(
        "pw.yaml",
        &template(
            &webhook.url("/pw"),
            &format!(
                "  type: oauth2\n  grant: password\n  token_url: {}\n  client_id: hookgate\n  client_secret: ${{env:CLIENT_SECRET}}\n  username: svc\n  password: ${{env:PARTNER_PASSWORD}}\n  scopes: [profiles.read, profiles.write]\n  client_auth: basic\n",
                basic_server.token_url()
            ),
        ),
    );
    let gw = Gateway::start(&config, &[("CLIENT_SECRET", CLIENT_SECRET), ("PARTNER_PASSWORD", PASSWORD)]).await;
    for name in ["cc", "pw"] {
        gw.wait_state(name, "active", Duration::from_secs(10)).await;
        let id = gw.dispatch(name, &payload(100, 2)).await;
        let view = gw.wait_dispatch(&id, Duration::from_secs(10)).await;
        assert_eq!(view["state"], "delivered", "{name}: {view}");
    }

    let cc = &body_server.requests()[0];
    assert_eq!(cc.grant_type.as_deref(), Some("client_credentials"));
    assert_eq!(cc.field("client_id"), Some("hookgate"));
    assert!(cc.authorization.is_none(), "body client auth sends no Authorization header");
    let cc_token = cc.outcome.clone().unwrap();
    let delivered = webhook.requests().into_iter().find(|r| r.path == "/cc").unwrap();
    assert_eq!(delivered.header("x-partner-auth"), Some(format!("Token {cc_token}")));
    assert_eq!(delivered.header("authorization"), None);

    let pw = &basic_server.requests()[0];
    assert_eq!(pw.grant_type.as_deref(), Some("password"));
    assert_eq!(pw.field("username"), Some("svc"));
    assert_eq!(pw.field("scope"), Some("profiles.read profiles.write"));
    assert_eq!(pw.field("client_secret"), None, "Basic client auth keeps the secret out of the body");
    assert_eq!(pw.basic_credentials, Some(("hookgate".to_string(), CLIENT_SECRET.to_string())));
    let delivered = webhook.requests().into_iter().find(|r| r.path == "/pw").unwrap();
    assert_eq!(delivered.header("authorization"), Some(format!("Bearer {}", pw.outcome.clone().unwrap())));
}

/// Acceptance 1: the server's refusals (wrong secret, wrong client authentication, wrong
/// password, wrong scope) each surface as a clear delivery error, without a stampede of
/// token requests across the retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_refusals_are_clear_delivery_errors() {
    let server = OAuthMock::start(OAuthSettings { client_secret: CLIENT_SECRET.into(), ..Default::default() }).await;
    let scoped = OAuthMock::start(OAuthSettings {
        client_secret: CLIENT_SECRET.into(),
        required_scope: Some("profiles.read".into()),
        ..Default::default()
    })
    .await;
    let webhook = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    let cases = [
        (
            "wrong-secret",
            &server,
            "grant: client_credentials\n  client_secret: nope\n  client_auth: body\n",
            "HTTP 400 Bad Request: invalid_client",
        ),
        (
            "wrong-method",
            &server,
            &*format!("grant: client_credentials\n  client_secret: {CLIENT_SECRET}\n  client_auth: basic\n"),
            "invalid_client",
        ),
        (
            "wrong-password",
            &server,
            &*format!(
                "grant: password\n  client_secret: {CLIENT_SECRET}\n  client_auth: body\n  username: svc\n  password: wrong\n"
            ),
            "invalid_grant",
        ),
        (
            "wrong-scope",
            &scoped,
            &*format!(
                "grant: client_credentials\n  client_secret: {CLIENT_SECRET}\n  client_auth: body\n  scopes: [admin]\n"
            ),
            "invalid_scope",
        ),
    ];
    for (name, oauth, auth, _) in &cases {
        config.write_template(
            &format!("{name}.yaml"),
            &template(
                &webhook.url("/"),
                &format!("  type: oauth2\n  token_url: {}\n  client_id: hookgate\n  {auth}", oauth.token_url()),
            ),
        );
    }
    let gw = Gateway::start(&config, &[]).await;
    for (name, _, _, expected) in &cases {
        gw.wait_state(name, "active", Duration::from_secs(10)).await;
        let id = gw.dispatch(name, &payload(200, 1)).await;
        let view = gw.wait_dispatch(&id, Duration::from_secs(10)).await;
        assert_eq!(view["state"], "failed", "{name}: {view}");
        let reason = view["requests"][0]["reason"].as_str().unwrap();
        assert!(reason.starts_with("auth plugin `oauth2`: token endpoint answered HTTP 40"), "{name}: {reason}");
        assert!(reason.contains(expected), "{name}: {reason}");
        assert_eq!(view["requests"][0]["attempts"].as_array().unwrap().len(), 3, "{name}: retried");
    }
    assert!(webhook.requests().is_empty(), "no webhook is sent without a token");
    // Three attempts of each failing template, but the failure is held: one token request each.
    assert_eq!(server.requests().len(), 3);
    assert_eq!(scoped.requests().len(), 1);
}

/// Acceptance 2: Basic client authentication encodes id and secret per RFC 6749 §2.3.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_client_auth_encodes_special_characters() {
    let id = "partner:id%2 +x";
    let secret = "s:e%c+r e t";
    let server = OAuthMock::start(OAuthSettings {
        client_id: id.into(),
        client_secret: secret.into(),
        client_auth: ClientAuth::Basic,
        ..Default::default()
    })
    .await;
    let webhook = resource(&server).await;
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template(
        "odd.yaml",
        &template(
            &webhook.url("/"),
            &format!(
                "  type: oauth2\n  grant: client_credentials\n  token_url: {}\n  client_id: \"{id}\"\n  client_secret: \"{secret}\"\n",
                server.token_url()
            ),
        ),
    );
    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("odd", "active", Duration::from_secs(10)).await;
    let id_ = gw.dispatch("odd", &payload(300, 1)).await;
    assert_eq!(gw.wait_dispatch(&id_, Duration::from_secs(10)).await["state"], "delivered");
    let request = &server.requests()[0];
    assert!(request.outcome.is_ok(), "{:?}", request.outcome);
    assert_eq!(request.basic_credentials, Some((id.to_string(), secret.to_string())));
    let expected = base64::engine::general_purpose::STANDARD.encode("partner%3Aid%252%20%2Bx:s%3Ae%25c%2Br%20e%20t");
    assert_eq!(request.authorization, Some(format!("Basic {expected}")));
}

/// Acceptance 3: JWT client assertions verify against the gateway's JWKS, carry the
/// configured claims and header, never reuse a `jti`, and work with RS256, RS384, RS512.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_assertions_verify_against_the_jwks() {
    let config = ConfigDir::new(TEST_CONFIG);
    keys(&config, &["generate", "--id", "k256"]);
    keys(&config, &["generate", "--id", "k384", "--alg", "RS384", "--bits", "3072"]);
    keys(&config, &["generate", "--id", "k512", "--alg", "RS512"]);
    let aud = "https://auth.partner.example/";
    let s256 = OAuthMock::start(OAuthSettings { client_auth: ClientAuth::Jwt, ..Default::default() }).await;
    let s384 = OAuthMock::start(OAuthSettings { client_auth: ClientAuth::Jwt, ..Default::default() }).await;
    let s512 = OAuthMock::start(OAuthSettings {
        client_auth: ClientAuth::Jwt,
        audience: Some(aud.into()),
        ..Default::default()
    })
    .await;
    let webhook = Mock::answering(200).await;
    let jwt = |server: &OAuthMock, assertion: &str| {
        template(
            &webhook.url("/"),
            &format!(
                "  type: oauth2\n  grant: client_credentials_jwt\n  token_url: {}\n  client_id: hookgate\n  assertion:\n{assertion}",
                server.token_url()
            ),
        )
    };
    config.write_template("j256.yaml", &jwt(&s256, "    key: k256\n    lifetime: 2m\n"));
    config.write_template(
        "j384.yaml",
        &jwt(&s384, "    key: k384\n    alg: RS384\n    include_iat: false\n    header: {typ: JWT, cty: JWT}\n"),
    );
    config.write_template("j512.yaml", &jwt(&s512, &format!("    key: k512\n    claims: {{aud: \"{aud}\"}}\n")));
    let gw = Gateway::start(&config, &[]).await;
    let jwks_url = format!("{}/.well-known/jwks.json", gw.base);
    for s in [&s256, &s384, &s512] {
        s.set_jwks_url(Some(jwks_url.clone()));
    }
    let (_, jwks) = gw.get("/.well-known/jwks.json").await;
    let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids, vec!["k256", "k384", "k512"]);
    for k in jwks["keys"].as_array().unwrap() {
        assert_eq!(k["kty"], "RSA");
        assert_eq!(k["use"], "sig");
        assert!(k["n"].as_str().unwrap().len() > 300 && k["e"] == "AQAB", "{k}");
    }

    for name in ["j256", "j384", "j512"] {
        gw.wait_state(name, "active", Duration::from_secs(10)).await;
        let id = gw.dispatch(name, &payload(400, 1)).await;
        assert_eq!(gw.wait_dispatch(&id, Duration::from_secs(10)).await["state"], "delivered", "{name}");
    }
    // Two more token requests through "Generate": every assertion has a new jti.
    for _ in 0..2 {
        let (status, body) = gw.post_json("/v1/templates/j256/token", &json!({}), &[]).await;
        assert_eq!(status, 200, "{body}");
    }

    let r = s256.requests();
    assert_eq!(r.len(), 3);
    assert!(r.iter().all(|r| r.outcome.is_ok()), "{r:?}");
    let (header, claims) = (r[0].assertion_header.clone().unwrap(), r[0].assertion_claims.clone().unwrap());
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], "k256");
    assert_eq!(claims["iss"], "hookgate");
    assert_eq!(claims["sub"], "hookgate");
    assert_eq!(claims["aud"], s256.token_url());
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 120);
    assert_eq!(r[0].field("client_assertion_type"), Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"));
    assert_eq!(r[0].field("grant_type"), Some("client_credentials"));
    assert_eq!(r[0].field("client_secret"), None);
    let mut jtis: Vec<String> =
        r.iter().map(|r| r.assertion_claims.as_ref().unwrap()["jti"].as_str().unwrap().to_string()).collect();
    jtis.sort();
    jtis.dedup();
    assert_eq!(jtis.len(), 3, "no jti is reused");

    let r384 = &s384.requests()[0];
    assert!(r384.outcome.is_ok(), "{:?}", r384.outcome);
    let h = r384.assertion_header.as_ref().unwrap();
    assert_eq!((h["alg"].as_str(), h["kid"].as_str(), h["cty"].as_str()), (Some("RS384"), Some("k384"), Some("JWT")));
    assert!(r384.assertion_claims.as_ref().unwrap().get("iat").is_none(), "include_iat: false leaves iat out");

    let r512 = &s512.requests()[0];
    assert!(r512.outcome.is_ok(), "{:?}", r512.outcome);
    assert_eq!(r512.assertion_header.as_ref().unwrap()["alg"], "RS512");
    assert_eq!(r512.assertion_claims.as_ref().unwrap()["aud"], aud);
}

/// Acceptance 4: 500 deliveries at once cause one token request; after expiry the next
/// delivery causes exactly one more, a refresh at `refresh_url` with the refresh token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_request_per_lifetime_and_refresh_at_refresh_url() {
    let long = OAuthMock::start(OAuthSettings { client_secret: CLIENT_SECRET.into(), ..Default::default() }).await;
    let short = OAuthMock::start(OAuthSettings {
        client_secret: CLIENT_SECRET.into(),
        expires_in: Some(1),
        ..Default::default()
    })
    .await;
    let long_hook = resource(&long).await;
    let short_hook = resource(&short).await;
    let config = ConfigDir::new(TEST_CONFIG);
    let password = |server: &OAuthMock| {
        format!(
            "  type: oauth2\n  grant: password\n  token_url: {}\n  refresh_url: {}\n  client_id: hookgate\n  client_secret: {CLIENT_SECRET}\n  client_auth: body\n  username: svc\n  password: pw\n",
            server.token_url(),
            server.refresh_url()
        )
    };
    config.write_template(
        "many.yaml",
        &template(&long_hook.url("/"), &password(&long)).replace("verify: false\n", "verify: false\nbatch_size: 1\n"),
    );
    config.write_template("short.yaml", &template(&short_hook.url("/"), &password(&short)));
    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("many", "active", Duration::from_secs(10)).await;
    gw.wait_state("short", "active", Duration::from_secs(10)).await;

    let id = gw.dispatch("many", &payload(500, 500)).await;
    let view = gw.wait_dispatch(&id, Duration::from_secs(60)).await;
    assert_eq!(view["state"], "delivered");
    assert_eq!(view["requests"].as_array().unwrap().len(), 500);
    assert_eq!(long_hook.requests().len(), 500);
    assert_eq!(token_requests(&long), 1, "500 concurrent deliveries share one token request");

    let id = gw.dispatch("short", &payload(501, 1)).await;
    gw.wait_dispatch(&id, Duration::from_secs(10)).await;
    assert_eq!(token_requests(&short), 1);
    let first = short.requests()[0].outcome.clone().unwrap();
    let bearer = format!("Bearer {first}");
    wait_for("the 1 s token to expire", Duration::from_secs(5), async || {
        (!short.is_valid(Some(&bearer))).then_some(())
    })
    .await;
    let id = gw.dispatch("short", &payload(501, 1)).await;
    assert_eq!(gw.wait_dispatch(&id, Duration::from_secs(10)).await["state"], "delivered");
    let requests = short.requests();
    assert_eq!(requests.len(), 2, "exactly one more token request after expiry");
    assert_eq!(requests[1].path, "/oauth/refresh");
    assert_eq!(requests[1].grant_type.as_deref(), Some("refresh_token"));
    assert!(requests[1].field("refresh_token").is_some_and(|t| !t.is_empty()));
    assert!(requests[1].outcome.is_ok(), "{:?}", requests[1].outcome);
}

/// Acceptance 5: a 401 once makes the gateway fetch a new token and the delivery succeeds;
/// a 401 always fails the delivery without a loop of token requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_refreshes_once() {
    let server = OAuthMock::start(OAuthSettings {
        client_secret: CLIENT_SECRET.into(),
        issue_refresh_token: false,
        ..Default::default()
    })
    .await;
    let webhook = resource(&server).await;
    let always = Mock::answering(401).await;
    let config = ConfigDir::new(TEST_CONFIG);
    let cc = format!(
        "  type: oauth2\n  grant: client_credentials\n  token_url: {}\n  client_id: hookgate\n  client_secret: {CLIENT_SECRET}\n  client_auth: body\n",
        server.token_url()
    );
    config.write_template("api.yaml", &template(&webhook.url("/"), &cc));
    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("api", "active", Duration::from_secs(10)).await;

    let id = gw.dispatch("api", &payload(600, 1)).await;
    gw.wait_dispatch(&id, Duration::from_secs(10)).await;
    assert_eq!(token_requests(&server), 1);
    server.revoke_all();
    let id = gw.dispatch("api", &payload(600, 1)).await;
    let view = gw.wait_dispatch(&id, Duration::from_secs(10)).await;
    assert_eq!(view["state"], "delivered", "{view}");
    assert_eq!(token_requests(&server), 2, "one new token after the 401");
    let statuses: Vec<u16> = webhook
        .requests()
        .iter()
        .map(|r| if server.is_valid(r.header("authorization").as_deref()) { 200 } else { 401 })
        .collect();
    assert_eq!(statuses, vec![401, 401, 200], "the first token is revoked now; the resend carried the new one");

    config.write_template(
        "always.yaml",
        &template(&always.url("/"), &cc).replace("verify: false\n", "verify: false\nretries: 0\n"),
    );
    gw.wait_state("always", "active", Duration::from_secs(10)).await;
    let before = token_requests(&server);
    let id = gw.dispatch("always", &payload(601, 1)).await;
    let view = gw.wait_dispatch(&id, Duration::from_secs(10)).await;
    assert_eq!(view["state"], "failed");
    assert_eq!(view["requests"][0]["reason"], "HTTP 401 Unauthorized");
    assert_eq!(always.requests().len(), 2, "sent, then resent once with a new token");
    assert!(token_requests(&server) - before <= 2, "no loop of token requests");
}

/// Acceptance 6: after `rotate`, new assertions carry the new `kid`; the JWKS holds both
/// keys until the grace period ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_keeps_the_old_key_for_the_grace_period() {
    let config = ConfigDir::new(&format!("{TEST_CONFIG}keys:\n  grace: 3s\n"));
    keys(&config, &["generate", "--id", "k1"]);
    let server = OAuthMock::start(OAuthSettings { client_auth: ClientAuth::Jwt, ..Default::default() }).await;
    let webhook = Mock::answering(200).await;
    config.write_template(
        "jwt.yaml",
        &template(
            &webhook.url("/"),
            &format!(
                "  type: oauth2\n  grant: client_credentials_jwt\n  token_url: {}\n  client_id: hookgate\n",
                server.token_url()
            ),
        ),
    );
    let gw = Gateway::start(&config, &[]).await;
    server.set_jwks_url(Some(format!("{}/.well-known/jwks.json", gw.base)));
    gw.wait_state("jwt", "active", Duration::from_secs(10)).await;
    let kids = async || -> Vec<String> {
        let (_, jwks) = gw.get("/.well-known/jwks.json").await;
        jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect()
    };

    let (status, body) = gw.post_json("/v1/templates/jwt/token", &json!({}), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.requests()[0].assertion_header.as_ref().unwrap()["kid"], "k1");

    let out = keys(&config, &["rotate", "--id", "k2"]);
    assert!(out.contains("key `k2` (2048 bits, RS256) is now active"), "{out}");
    assert_eq!(kids().await, vec!["k1", "k2"]);
    let (status, body) = gw.post_json("/v1/templates/jwt/token", &json!({}), &[]).await;
    assert_eq!(status, 200, "{body}");
    let last = server.requests().last().cloned().unwrap();
    assert_eq!(last.assertion_header.unwrap()["kid"], "k2");
    assert!(last.outcome.is_ok());

    wait_for("the grace period to end", Duration::from_secs(10), async || (kids().await == vec!["k2"]).then_some(()))
        .await;
    let listed = keys(&config, &["list"]);
    assert!(listed.contains("k1\tRS256\t2048 bits") && listed.contains("expired"), "{listed}");
}

/// Acceptance 7: no client secret, password, refresh token, access token or private key
/// appears in the gateway's logs (at debug level), API answers or stats; "Generate" shows
/// a masked token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_secrets_stay_out_of_logs_and_answers() {
    let config = ConfigDir::new(TEST_CONFIG);
    keys(&config, &["generate", "--id", "k1"]);
    let pw_server = OAuthMock::start(OAuthSettings {
        client_secret: CLIENT_SECRET.into(),
        password: PASSWORD.into(),
        client_auth: ClientAuth::Basic,
        expires_in: Some(1),
        ..Default::default()
    })
    .await;
    let jwt_server = OAuthMock::start(OAuthSettings { client_auth: ClientAuth::Jwt, ..Default::default() }).await;
    let pw_hook = resource(&pw_server).await;
    let failing = Mock::answering(503).await;
    config.write_template(
        "pw.yaml",
        &template(
            &pw_hook.url("/"),
            &format!("  type: oauth2\n  grant: password\n  token_url: {}\n  client_id: hookgate\n  client_secret: ${{env:CLIENT_SECRET}}\n  username: svc\n  password: ${{env:PARTNER_PASSWORD}}\n", pw_server.token_url()),
        ),
    );
    config.write_template(
        "jwt.yaml",
        &template(
            &failing.url("/"),
            &format!(
                "  type: oauth2\n  grant: client_credentials_jwt\n  token_url: {}\n  client_id: hookgate\n",
                jwt_server.token_url()
            ),
        )
        .replace("verify: false\n", "verify: false\nretries: 0\n"),
    );
    let gw = Gateway::start(&config, &[("CLIENT_SECRET", CLIENT_SECRET), ("PARTNER_PASSWORD", PASSWORD)]).await;
    jwt_server.set_jwks_url(Some(format!("{}/.well-known/jwks.json", gw.base)));
    gw.wait_state("pw", "active", Duration::from_secs(10)).await;
    gw.wait_state("jwt", "active", Duration::from_secs(10)).await;

    let first = gw.dispatch("pw", &payload(700, 1)).await;
    gw.wait_dispatch(&first, Duration::from_secs(10)).await;
    let issued = pw_server.issued();
    let bearer = format!("Bearer {}", issued[0]);
    wait_for("the token to expire", Duration::from_secs(5), async || {
        (!pw_server.is_valid(Some(&bearer))).then_some(())
    })
    .await;
    let second = gw.dispatch("pw", &payload(700, 1)).await; // refreshes
    gw.wait_dispatch(&second, Duration::from_secs(10)).await;
    let failed = gw.dispatch("jwt", &payload(701, 1)).await;
    gw.wait_dispatch(&failed, Duration::from_secs(10)).await;

    let mut answers = String::new();
    let (status, generated) = gw.post_json("/v1/templates/pw/token", &json!({}), &[]).await;
    assert_eq!(status, 200, "{generated}");
    assert!(generated["token"]["masked"].as_str().unwrap().contains('…'), "{generated}");
    assert_eq!(generated["token"]["expires_in_secs"], 1);
    answers.push_str(&generated.to_string());
    for path in [
        "/v1/templates".to_string(),
        "/v1/templates/pw".into(),
        "/v1/templates/jwt".into(),
        format!("/v1/dispatches/{first}"),
        format!("/v1/dispatches/{second}"),
        format!("/v1/dispatches/{failed}"),
        "/v1/campaigns/700".into(),
        "/v1/campaigns/701".into(),
        "/metrics".into(),
        "/.well-known/jwks.json".into(),
    ] {
        let (status, body) = gw.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        answers.push_str(&body.to_string());
    }
    let cli = Command::new(bin())
        .args(["token", "pw", "--config"])
        .arg(config.path())
        .env("CLIENT_SECRET", CLIENT_SECRET)
        .env("PARTNER_PASSWORD", PASSWORD)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let cli_out = format!("{}{}", String::from_utf8_lossy(&cli.stdout), String::from_utf8_lossy(&cli.stderr));
    assert!(cli.status.success(), "{cli_out}");
    assert!(cli_out.contains("token:") && cli_out.contains("expires in: 1 s"), "{cli_out}");

    let refresh_tokens: Vec<String> =
        pw_server.requests().iter().filter_map(|r| r.field("refresh_token").map(str::to_string)).collect();
    assert!(!refresh_tokens.is_empty(), "a refresh happened");
    let private_key = std::fs::read_to_string(config.path().join("data/keys/k1.pem")).unwrap();
    let key_lines: Vec<&str> = private_key.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut secrets: Vec<String> = vec![CLIENT_SECRET.into(), PASSWORD.into()];
    secrets.extend(pw_server.issued());
    secrets.extend(jwt_server.issued());
    secrets.extend(refresh_tokens);
    secrets.extend(key_lines.iter().map(|l| l.to_string()));
    let logs = gw.output();
    assert!(logs.contains("obtained an access token"), "debug logs were captured:\n{logs}");
    for secret in &secrets {
        assert!(!answers.contains(secret.as_str()), "an API answer leaks {secret}");
        assert!(!logs.contains(secret.as_str()), "the logs leak {secret}");
        assert!(!cli_out.contains(secret.as_str()), "`hookgate token` leaks {secret}");
    }
}

/// Template keys are checked at load with the key named and without echoing values.
#[test]
fn oauth_config_errors_are_located() {
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template("a.yaml", "url: http://127.0.0.1:9/\nauth:\n  type: oauth2\n  grant: password\n  token_url: http://127.0.0.1:9/t\n  client_id: c\n  client_secret: s3cr3t-value\n");
    config.write_template("b.yaml", "url: http://127.0.0.1:9/\nauth:\n  type: oauth2\n  grant: client_credentials_jwt\n  token_url: http://127.0.0.1:9/t\n  client_id: c\n  assertion:\n    header: {crit: [exp, aud]}\n");
    config.write_template("c.yaml", "url: http://127.0.0.1:9/\nauth:\n  type: oauth2\n  grant: client_credentials_jwt\n  token_url: http://127.0.0.1:9/t\n  client_id: c\n");
    let out = config.validate();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("a.yaml:2:1: auth plugin `oauth2`: `username` is required with `grant: password`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("b.yaml:") && stdout.contains("`crit` lists `exp`, which is not in the header"),
        "{stdout}"
    );
    assert!(stdout.contains("c.yaml:") && stdout.contains("hookgate keys generate"), "{stdout}");
    assert!(!stdout.contains("s3cr3t-value"));
    let _ = Value::Null;
}

/// Token mapping: dotted paths into a nested response; `expiry` overrides; a response
/// without an expiry uses the documented default (1h). Token requests follow no redirects
/// and obey the template's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mapping_expiry_redirects_and_timeouts() {
    let nested =
        OAuthMock::start(OAuthSettings { client_secret: CLIENT_SECRET.into(), nested: true, ..Default::default() })
            .await;
    let no_expiry =
        OAuthMock::start(OAuthSettings { client_secret: CLIENT_SECRET.into(), expires_in: None, ..Default::default() })
            .await;
    let slow = OAuthMock::start(OAuthSettings {
        client_secret: CLIENT_SECRET.into(),
        delay: Some(Duration::from_secs(3)),
        ..Default::default()
    })
    .await;
    let redirecting =
        Mock::start(|_, _| Reply::StatusWith(302, vec![("location", "http://127.0.0.1:9/elsewhere".into())])).await;
    let webhook = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    let cc = |url: String, extra: &str| {
        template(
            &webhook.url("/"),
            &format!(
                "  type: oauth2\n  grant: client_credentials\n  token_url: {url}\n  client_id: hookgate\n  client_secret: {CLIENT_SECRET}\n  client_auth: body\n{extra}"
            ),
        )
    };
    config.write_template(
        "nested.yaml",
        &cc(
            nested.token_url(),
            "  token_field: data.token\n  refresh_token_field: data.refresh\n  expires_in_field: data.ttl\n",
        ),
    );
    config.write_template("fixed.yaml", &cc(nested.token_url(), "  token_field: data.token\n  expiry: 30m\n"));
    config.write_template("default.yaml", &cc(no_expiry.token_url(), ""));
    config.write_template(
        "slow.yaml",
        &cc(slow.token_url(), "").replace("verify: false\n", "verify: false\ntimeout: 500ms\n"),
    );
    config.write_template("redirect.yaml", &cc(redirecting.url("/token"), ""));
    let gw = Gateway::start(&config, &[]).await;
    let generate = async |name: &str| {
        gw.wait_state(name, "active", Duration::from_secs(10)).await;
        gw.post_json(&format!("/v1/templates/{name}/token"), &json!({}), &[]).await
    };

    let (status, body) = generate("nested").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token"]["expires_in_secs"], 3600, "from data.ttl");
    assert_eq!(body["token"]["has_refresh_token"], true, "from data.refresh");
    let id = gw.dispatch("nested", &payload(800, 1)).await;
    gw.wait_dispatch(&id, Duration::from_secs(10)).await;
    let sent = webhook.requests()[0].header("authorization").unwrap();
    assert!(nested.issued().iter().any(|t| sent == format!("Bearer {t}")), "the token from data.token is sent");

    assert_eq!(generate("fixed").await.1["token"]["expires_in_secs"], 1800);
    assert_eq!(generate("default").await.1["token"]["expires_in_secs"], 3600);

    let (status, body) = generate("slow").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["message"], "auth plugin `oauth2`: token endpoint: timeout: no answer within 500ms");

    let (status, body) = generate("redirect").await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("token endpoint answered HTTP 302 Found"), "{body}");
    assert_eq!(redirecting.requests().len(), 1, "the redirect is not followed");
}
