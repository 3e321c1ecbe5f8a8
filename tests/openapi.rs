//! `GET /openapi.json`: a valid OpenAPI 3.1 document, open to all, the same as
//! `hookgate schema openapi`; every route it lists is served; and what the handlers answer
//! to sample calls is what it documents: a documented status, and a body of the documented
//! shape (no undocumented key). That the router serves no route the document misses is
//! checked where the router's route table is (`src/api/openapi.rs`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{ConfigDir, Gateway, Mock, TEST_CONFIG, validators};
use serde_json::{Value, json};

const TOKEN: &str = "openapi-test-admin-token-0123456789";

/// The documented operation of `method` on `path` (a template such as `/v1/dispatches/{id}`).
fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    let op = &doc["paths"][path][method.to_lowercase()];
    assert!(op.is_object(), "{method} {path} is not in the document");
    op
}

/// The components, with every object schema closed (`additionalProperties: false`) unless
/// it takes part in an `allOf` (a flattened type): a key the document does not name fails.
fn strict_components(doc: &Value) -> Value {
    let mut components = doc["components"].clone();
    let text = components.to_string();
    let in_all_of: BTreeSet<String> = components["schemas"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|s| s["allOf"].as_array())
        .flatten()
        .filter_map(|s| s["$ref"].as_str().map(|r| r.rsplit('/').next().unwrap().to_string()))
        .collect();
    assert!(text.contains("\"schemas\""));
    for (name, schema) in components["schemas"].as_object_mut().unwrap() {
        if schema.get("properties").is_some() && !in_all_of.contains(name) {
            schema["additionalProperties"] = json!(false);
        }
    }
    components
}

struct Checker {
    doc: Value,
    components: Value,
    /// (method, path template) → statuses seen.
    seen: BTreeMap<(String, String), BTreeSet<u16>>,
    /// (status, body, schema) of JSON answers, validated at the end in one go.
    bodies: Vec<(String, Value, Value)>,
}

impl Checker {
    /// Checks the status of an answer now, and keeps its body to validate.
    fn answer(&mut self, method: &str, template: &str, status: u16, content_type: &str, body: &str) {
        let op = operation(&self.doc, method, template).clone();
        let what = format!("{method} {template} → {status}");
        let response = &op["responses"][status.to_string()];
        assert!(response.is_object(), "{what} is not documented: {}", op["responses"]);
        self.seen.entry((method.into(), template.into())).or_default().insert(status);
        let content = response["content"].as_object();
        let Some(content) = content else {
            assert!(body.is_empty(), "{what}: documented without content, answered {body}");
            return;
        };
        let media = content_type.split(';').next().unwrap().trim();
        let documented: Vec<&String> = content.keys().collect();
        let entry = content
            .iter()
            .find(|(k, _)| k.split(';').next().unwrap().trim() == media)
            .unwrap_or_else(|| panic!("{what}: answered `{content_type}`, documented {documented:?}"));
        if media == "application/json" {
            let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body}"));
            let mut schema = entry.1["schema"].clone();
            schema["components"] = self.components.clone();
            self.bodies.push((what, body, schema));
        } else {
            assert!(!body.is_empty(), "{what}: empty");
        }
    }

    fn validate(&self) -> Option<()> {
        for (what, body, schema) in &self.bodies {
            let errors = validators::schema_errors(schema, std::slice::from_ref(body))?;
            assert!(
                errors[0].is_empty(),
                "{what}: the answer is not what the document says: {:#?}\n{body:#}",
                errors[0]
            );
        }
        Some(())
    }
}

struct Client<'a> {
    gateway: &'a Gateway,
    http: reqwest::Client,
}

impl Client<'_> {
    async fn call(
        &self,
        checker: &mut Checker,
        method: &str,
        template: &str,
        path: &str,
        body: Option<(&str, String)>,
        token: bool,
    ) -> (u16, Value) {
        let mut rb = self.http.request(method.parse().unwrap(), format!("{}{path}", self.gateway.base));
        if token {
            rb = rb.bearer_auth(TOKEN);
        }
        if let Some((content_type, text)) = body {
            rb = rb.header("content-type", content_type).body(text);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let content_type = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let text = r.text().await.unwrap();
        assert!(!text.contains("no such route"), "{method} {path} is documented but not served: {text}");
        assert_ne!(status, 405, "{method} {path} is documented but not served for {method}");
        checker.answer(method, template, status, &content_type, &text);
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

#[tokio::test]
async fn the_document_is_valid_and_the_handlers_answer_what_it_says() {
    let ok = Mock::answering(200).await;
    let failing = Mock::answering(500).await;
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template("orders.yaml", &format!("url: {}\nretries: 0\n", ok.url("/hook")));
    config.write_template("flaky.yaml", &format!("url: {}\nretries: 0\nverify: false\n", failing.url("/hook")));
    config.write_template("broken.yaml", "url: [not, a, url]\n");
    let gateway = Gateway::start(&config, &[("HOOKGATE_ADMIN_TOKEN", TOKEN)]).await;
    gateway.wait_state("orders", "active", Duration::from_secs(20)).await;
    let http = reqwest::Client::new();

    // Open to all, the same document as the command's, and valid OpenAPI 3.1.
    let served = http.get(format!("{}/openapi.json", gateway.base)).send().await.unwrap();
    assert_eq!(served.status(), 200);
    let doc: Value = serde_json::from_str(&served.text().await.unwrap()).unwrap();
    let printed = std::process::Command::new(common::bin()).args(["schema", "openapi"]).output().unwrap();
    assert_eq!(
        doc,
        serde_json::from_slice::<Value>(&printed.stdout).unwrap(),
        "GET /openapi.json and `hookgate schema openapi` differ"
    );
    assert_eq!(doc["openapi"], "3.1.0");
    match validators::openapi(&doc) {
        Some(result) => result.unwrap_or_else(|e| panic!("/openapi.json is not valid OpenAPI 3.1: {e}")),
        None => println!("SKIPPED the OpenAPI validation: {} (CI installs it)", validators::INSTALL),
    }
    // Every /v1 route needs the token; the others are open.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let secured = op["security"].to_string().contains("admin_token");
            assert_eq!(secured, path.starts_with("/v1/"), "{method} {path}: security {}", op["security"]);
        }
    }

    let mut checker = Checker { components: strict_components(&doc), doc, seen: BTreeMap::new(), bodies: Vec::new() };
    let c = Client { gateway: &gateway, http };
    let json_body = |v: Value| Some(("application/json", v.to_string()));
    let yaml = |t: String| Some(("application/yaml", t));

    c.call(&mut checker, "GET", "/healthz", "/healthz", None, false).await;
    c.call(&mut checker, "GET", "/readyz", "/readyz", None, false).await;
    c.call(&mut checker, "GET", "/metrics", "/metrics", None, false).await;
    c.call(&mut checker, "GET", "/openapi.json", "/openapi.json", None, false).await;
    c.call(&mut checker, "GET", "/.well-known/jwks.json", "/.well-known/jwks.json", None, false).await;
    c.call(&mut checker, "GET", "/", "/", None, false).await;
    c.call(&mut checker, "GET", "/console.js", "/console.js", None, false).await;
    c.call(&mut checker, "GET", "/console.css", "/console.css", None, false).await;

    let (status, _) = c.call(&mut checker, "GET", "/v1/templates", "/v1/templates", None, false).await;
    assert_eq!(status, 401);
    let (_, list) = c.call(&mut checker, "GET", "/v1/templates", "/v1/templates", None, true).await;
    let broken = list["templates"].as_array().unwrap().iter().find(|t| t["name"] == "broken").unwrap();
    assert_eq!(broken["state"], "invalid");
    assert_eq!(broken["location"]["line"], 1, "{broken}");
    let (_, orders) = c.call(&mut checker, "GET", "/v1/templates/{name}", "/v1/templates/orders", None, true).await;
    assert_eq!(orders["last_test"]["ok"], true, "{orders}");
    c.call(&mut checker, "GET", "/v1/templates/{name}", "/v1/templates/nope", None, true).await;
    let put = format!("url: {}\nverify: false\n", ok.url("/new"));
    let (status, _) =
        c.call(&mut checker, "PUT", "/v1/templates/{name}", "/v1/templates/made", yaml(put.clone()), true).await;
    assert_eq!(status, 201);
    let (status, _) = c.call(&mut checker, "PUT", "/v1/templates/{name}", "/v1/templates/made", yaml(put), true).await;
    assert_eq!(status, 200);
    let (status, e) = c
        .call(&mut checker, "PUT", "/v1/templates/{name}", "/v1/templates/made", yaml("url: 1\nnope: 2\n".into()), true)
        .await;
    assert_eq!(status, 422, "{e}");
    let (status, _) = c
        .call(&mut checker, "PUT", "/v1/templates/{name}", "/v1/templates/made", Some(("text/plain", "x".into())), true)
        .await;
    assert_eq!(status, 415);
    c.call(&mut checker, "POST", "/v1/templates/{name}/test", "/v1/templates/orders/test", None, true).await;
    c.call(&mut checker, "POST", "/v1/templates/{name}/test", "/v1/templates/flaky/test", None, true).await;
    c.call(&mut checker, "POST", "/v1/templates/{name}/test", "/v1/templates/nope/test", None, true).await;
    let (status, _) =
        c.call(&mut checker, "POST", "/v1/templates/{name}/token", "/v1/templates/orders/token", None, true).await;
    assert_eq!(status, 422, "auth none has no tokens");
    c.call(&mut checker, "POST", "/v1/templates/{name}/token", "/v1/templates/nope/token", None, true).await;
    c.call(&mut checker, "GET", "/v1/plugins", "/v1/plugins", None, true).await;

    let dispatch = "/v1/templates/{name}/dispatch";
    let (status, accepted) = c
        .call(&mut checker, "POST", dispatch, "/v1/templates/orders/dispatch", json_body(common::payload(7, 3)), true)
        .await;
    assert_eq!(status, 202);
    let (status, failed) = c
        .call(&mut checker, "POST", dispatch, "/v1/templates/flaky/dispatch", json_body(common::payload(8, 1)), true)
        .await;
    assert_eq!(status, 202);
    c.call(&mut checker, "POST", dispatch, "/v1/templates/nope/dispatch", json_body(common::payload(7, 1)), true).await;
    c.call(&mut checker, "POST", dispatch, "/v1/templates/broken/dispatch", json_body(common::payload(7, 1)), true)
        .await;
    c.call(&mut checker, "POST", dispatch, "/v1/templates/orders/dispatch", json_body(json!({"profiles": 1})), true)
        .await;
    c.call(&mut checker, "POST", dispatch, "/v1/templates/orders/dispatch", Some(("text/plain", "{}".into())), true)
        .await;
    let (id, failed_id) = (accepted["dispatch_id"].as_str().unwrap(), failed["dispatch_id"].as_str().unwrap());
    gateway.wait_dispatch(id, Duration::from_secs(20)).await;
    gateway.wait_dispatch(failed_id, Duration::from_secs(20)).await;

    let (_, page) = c.call(&mut checker, "GET", "/v1/dispatches", "/v1/dispatches?limit=1", None, true).await;
    assert_eq!((page["total"].as_u64(), page["dispatches"].as_array().unwrap().len()), (Some(2), 1), "{page}");
    let (_, page) = c.call(&mut checker, "GET", "/v1/dispatches", "/v1/dispatches?failed=true", None, true).await;
    assert_eq!(page["dispatches"][0]["dispatch_id"], failed_id, "{page}");
    let (status, _) = c.call(&mut checker, "GET", "/v1/dispatches", "/v1/dispatches?limit=many", None, true).await;
    assert_eq!(status, 400);
    c.call(&mut checker, "GET", "/v1/dispatches/{id}", &format!("/v1/dispatches/{id}"), None, true).await;
    c.call(&mut checker, "GET", "/v1/dispatches/{id}", &format!("/v1/dispatches/{failed_id}"), None, true).await;
    c.call(&mut checker, "GET", "/v1/dispatches/{id}", "/v1/dispatches/not-an-id", None, true).await;
    let (status, requeued) = c
        .call(
            &mut checker,
            "POST",
            "/v1/dispatches/{id}/retry",
            &format!("/v1/dispatches/{failed_id}/retry"),
            None,
            true,
        )
        .await;
    assert_eq!((status, requeued["requeued"].as_u64()), (202, Some(1)));
    c.call(
        &mut checker,
        "POST",
        "/v1/dispatches/{id}/retry",
        "/v1/dispatches/0190aaaa-0000-7000-8000-000000000000/retry",
        None,
        true,
    )
    .await;
    let (_, campaigns) = c.call(&mut checker, "GET", "/v1/campaigns", "/v1/campaigns", None, true).await;
    assert_eq!(campaigns["campaigns"].as_array().unwrap().len(), 2, "{campaigns}");
    c.call(&mut checker, "GET", "/v1/campaigns/{target_id}", "/v1/campaigns/7", None, true).await;
    c.call(&mut checker, "GET", "/v1/campaigns/{target_id}", "/v1/campaigns/404", None, true).await;

    // Every documented operation was called.
    for (path, item) in checker.doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            assert!(
                checker.seen.contains_key(&(method.to_uppercase(), path.clone())),
                "{method} {path} has no sample call in this test"
            );
        }
    }
    if checker.validate().is_none() {
        println!("SKIPPED the answers' shapes: {} (CI installs it)", validators::INSTALL);
    }
    println!("sample calls: {:?}", checker.seen);
}
