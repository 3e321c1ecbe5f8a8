//! The Zendesk integration: a ticket for every low in-app rating, through the `zendesk`
//! transform plugin built from source, against a Zendesk API mock.

mod common;

use std::time::Duration;

use common::wasm::guest;
use common::zendesk::ZendeskMock;
use common::*;
use serde_json::{Value, json};

const AGENT: &str = "agent@acme.test";
const TOKEN: &str = "zd-6f1c2a-do-not-leak";

fn setup(config: &ConfigDir) {
    let dir = config.path().join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(guest("zendesk"), dir.join("zendesk.wasm")).unwrap();
}

fn template(zendesk: &ZendeskMock, extra: &str) -> String {
    format!(
        "url: {base}/api/v2/tickets.json\nretries: 2\nauth:\n  type: basic\n  username: {AGENT}/token\n  password: ${{env:ZENDESK_API_TOKEN}}\ntransform:\n  type: zendesk\n  base_url: {base}\n  tags: [cx, low-rating]\n{extra}",
        base = zendesk.base_url()
    )
}

/// Ten profiles, ratings 1 to 5 twice each.
fn ratings_campaign(target: u64) -> Value {
    let profiles: Vec<Value> = (0..10)
        .map(|i| {
            let rating = i % 5 + 1;
            json!({"Identity": format!("u{i}"), "Name": format!("User {i}"), "Email": format!("u{i}@example.com"), "Rating": rating, "Feedback": format!("feedback {i}")})
        })
        .collect();
    json!({"targetId": target, "key_values": {"campaign": "rating"}, "profiles": profiles})
}

/// Acceptance 1, 2 and 4: loading runs the credential check and opens no ticket; 10 ratings
/// open exactly the 6 tickets of ratings ≤ 3, each with requester, priority, tags and text;
/// sending the same campaign again opens none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_ratings_open_tickets_once() {
    let zendesk = ZendeskMock::start(AGENT, TOKEN).await;
    let config = ConfigDir::new(TEST_CONFIG);
    setup(&config);
    config.write_template("ratings.yaml", &template(&zendesk, ""));
    let gw = Gateway::start(&config, &[("ZENDESK_API_TOKEN", TOKEN)]).await;
    gw.wait_state("ratings", "active", Duration::from_secs(20)).await;
    let seen = zendesk.seen();
    assert_eq!(
        (seen.len(), seen[0].method.as_str(), seen[0].path.as_str()),
        (1, "GET", "/api/v2/users/me.json"),
        "the credential check"
    );
    assert!(zendesk.tickets().is_empty(), "verification opens no ticket");

    let (status, accepted) = gw.post_json("/v1/templates/ratings/dispatch", &ratings_campaign(501), &[]).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["requests"], 6);
    let view = gw.wait_dispatch(accepted["dispatch_id"].as_str().unwrap(), Duration::from_secs(20)).await;
    assert_eq!(view["state"], "delivered", "{view}");

    let tickets = zendesk.tickets();
    assert_eq!(tickets.len(), 6);
    let mut by_email: Vec<(String, Value)> =
        tickets.iter().map(|t| (t["requester"]["email"].as_str().unwrap().to_string(), t.clone())).collect();
    by_email.sort_by(|a, b| a.0.cmp(&b.0));
    let expected = [
        ("u0", 1, "urgent"),
        ("u1", 2, "high"),
        ("u2", 3, "normal"),
        ("u5", 1, "urgent"),
        ("u6", 2, "high"),
        ("u7", 3, "normal"),
    ];
    for ((email, t), (user, rating, priority)) in by_email.iter().zip(expected) {
        assert_eq!(email, &format!("{user}@example.com"));
        let n = &user[1..];
        assert_eq!(t["requester"]["name"], format!("User {n}"));
        assert_eq!(t["priority"], priority, "{t}");
        assert_eq!(t["tags"], json!(["cx", "low-rating", format!("rating-{rating}")]));
        assert_eq!(t["external_id"], format!("hookgate-501-{user}"));
        assert!(t["subject"].as_str().unwrap().contains(&format!("{rating}/5")), "{t}");
        let body = t["comment"]["body"].as_str().unwrap();
        assert!(
            body.contains(&format!("rated the app {rating}/5 in campaign 501"))
                && body.contains(&format!("feedback {n}")),
            "{body}"
        );
    }
    let (_, stats) = gw.get("/v1/campaigns/501").await;
    assert_eq!(stats["requests"]["delivered"], 6);
    assert_eq!(stats["profiles"]["delivered"], 6);

    // The same campaign again: the same idempotency keys, no new ticket.
    let again = gw.dispatch("ratings", &ratings_campaign(501)).await;
    assert_eq!(gw.wait_dispatch(&again, Duration::from_secs(20)).await["state"], "delivered");
    assert_eq!(zendesk.tickets().len(), 6, "a resent campaign opens no second ticket");
    let keys: Vec<Option<String>> =
        zendesk.seen().iter().filter(|s| s.method == "POST").map(|s| s.idempotency_key.clone()).collect();
    assert_eq!(keys.len(), 12);
    assert!(keys.iter().all(Option::is_some));
    assert_eq!(keys[..6].iter().collect::<std::collections::BTreeSet<_>>(), keys[6..].iter().collect());
    assert!(!gw.output().contains(TOKEN));
}

/// Acceptance 3: a 429 with `Retry-After: 2` delays that ticket's retry by at least 2 s and
/// it then succeeds; a 422 is final, with Zendesk's details in the reason; profiles without
/// an email or a rating are skipped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_validation_errors_and_skipped_profiles() {
    let zendesk = ZendeskMock::start(AGENT, TOKEN).await;
    let config = ConfigDir::new(TEST_CONFIG);
    setup(&config);
    config.write_template("ratings.yaml", &template(&zendesk, ""));
    let gw = Gateway::start(&config, &[("ZENDESK_API_TOKEN", TOKEN)]).await;
    gw.wait_state("ratings", "active", Duration::from_secs(20)).await;
    zendesk.rate_limit_once("slow@example.com", Some(2));
    let payload = json!({"targetId": 502, "profiles": [
        {"Identity": "s", "Email": "slow@example.com", "Rating": 1},
        {"Identity": "b", "Email": "not-an-email", "Rating": 2},
        {"Identity": "n", "Rating": 1},
        {"Identity": "r", "Email": "r@example.com"},
    ]});
    let (status, accepted) = gw.post_json("/v1/templates/ratings/dispatch", &payload, &[]).await;
    assert_eq!(status, 202);
    assert_eq!(accepted["skipped_profiles"], 2);
    let view = gw.wait_dispatch(accepted["dispatch_id"].as_str().unwrap(), Duration::from_secs(20)).await;
    assert_eq!(view["state"], "partial", "{view}");

    let slow: Vec<_> =
        zendesk.seen().into_iter().filter(|s| s.body["ticket"]["requester"]["email"] == "slow@example.com").collect();
    assert_eq!(slow.iter().map(|s| s.status).collect::<Vec<_>>(), vec![429, 201]);
    let gap = slow[1].at - slow[0].at;
    assert!(gap >= Duration::from_secs(2), "Retry-After: 2 honoured ({gap:?})");

    let failed = view["requests"].as_array().unwrap().iter().find(|r| r["status"] == "failed").unwrap();
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("HTTP 422 Unprocessable Entity: ") && reason.contains("Requester: Email is invalid"),
        "{reason}"
    );
    assert_eq!(failed["attempts"].as_array().unwrap().len(), 1, "a 422 is final");
    let (_, stats) = gw.get("/v1/campaigns/502").await;
    assert_eq!(stats["skipped_profiles"], 2);
    assert_eq!(stats["profiles"]["delivered"], 1);
    assert_eq!(stats["profiles"]["failed"], 1);
}

/// Acceptance 4 and 5: wrong credentials keep the template inactive with a clear reason;
/// changing the threshold (hot reload) changes which profiles become tickets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked_and_the_threshold_reloads() {
    let zendesk = ZendeskMock::start(AGENT, TOKEN).await;
    let config = ConfigDir::new(TEST_CONFIG);
    setup(&config);
    config.write_template("ratings.yaml", &template(&zendesk, ""));
    let gw = Gateway::start(&config, &[("ZENDESK_API_TOKEN", "wrong-token")]).await;
    let body = wait_for("the failed credential check", Duration::from_secs(20), async || {
        let (_, body) = gw.get("/v1/templates/ratings").await;
        body["reason"].as_str().is_some_and(|r| r.contains("HTTP 401")).then_some(body)
    })
    .await;
    assert_eq!(body["state"], "unverified");
    assert!(body["active"].is_null());
    assert!(zendesk.tickets().is_empty());
    drop(gw);

    let gw = Gateway::start(&config, &[("ZENDESK_API_TOKEN", TOKEN)]).await;
    let v1 = gw.wait_state("ratings", "active", Duration::from_secs(20)).await["version"].as_u64().unwrap();
    config.write_template("ratings.yaml", &template(&zendesk, "  threshold: 1\n"));
    wait_for("the new threshold to load", Duration::from_secs(20), async || {
        let (_, body) = gw.get("/v1/templates/ratings").await;
        (body["state"] == "active" && body["version"].as_u64() > Some(v1)).then_some(())
    })
    .await;
    let id = gw.dispatch("ratings", &ratings_campaign(503)).await;
    assert_eq!(gw.wait_dispatch(&id, Duration::from_secs(20)).await["state"], "delivered");
    let ratings: Vec<String> = zendesk.tickets().iter().map(|t| t["tags"][2].as_str().unwrap().to_string()).collect();
    assert_eq!(ratings, vec!["rating-1", "rating-1"], "only ratings at or below 1");
}

/// The ready templates of `examples/` load as shipped (with their plugins and variables).
#[test]
fn example_templates_are_valid() {
    let config = ConfigDir::new(TEST_CONFIG);
    setup(&config);
    std::fs::copy(guest("standard_webhooks"), config.path().join("plugins/standard-webhooks.wasm")).unwrap();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    std::fs::copy(examples.join("zendesk/zendesk.yaml"), config.template_path("zendesk.yaml")).unwrap();
    std::fs::copy(examples.join("standard-webhooks/template.yaml"), config.template_path("signed.yaml")).unwrap();
    let out = std::process::Command::new(bin())
        .arg("validate")
        .arg("--config")
        .arg(config.path())
        .env("ZENDESK_SUBDOMAIN", "acme")
        .env("ZENDESK_EMAIL", AGENT)
        .env("ZENDESK_API_TOKEN", TOKEN)
        .env("WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("ok: 2 template(s) valid"), "{stdout}");
}
