//! The status console in a real browser: headless Chromium driven over WebDriver
//! (chromedriver), through a recording proxy in front of the gateway, so the test sees every
//! request the page makes.
//!
//! Given a gateway with an admin token, an active template, a failing one and a broken one:
//! the page asks for the token and requests no data before it has it; then it shows the
//! template active, the broken one's `file:line:col`, a dispatch made through the API with
//! its counts, and a failed request whose "Replay" sends it again (the endpoint sees it).
//! The token is never in a URL the page requests, in the page, or in the gateway's logs.
//! Screenshots go to target/console-screenshots/.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use common::{ConfigDir, Gateway, Mock, Reply, TEST_CONFIG, wait_for};
use serde_json::{Value, json};

const TOKEN: &str = "console-test-admin-token-9a8b7c6d5e4f";
const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- a recording proxy

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    authorization: Option<String>,
}

struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    seen: Mutex<Vec<Seen>>,
}

async fn forward(
    State(state): State<Arc<ProxyState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers.get("authorization").map(|v| v.to_str().unwrap_or("?").to_string());
    state.seen.lock().unwrap().push(Seen { method: method.to_string(), uri: uri.to_string(), authorization });
    let mut rb = state.http.request(method, format!("{}{}", state.upstream, uri));
    for (name, value) in &headers {
        if !["host", "connection", "content-length"].contains(&name.as_str()) {
            rb = rb.header(name, value);
        }
    }
    let answer = rb.body(body).send().await.unwrap();
    let status = answer.status();
    let mut out = HeaderMap::new();
    for (name, value) in answer.headers() {
        if !["transfer-encoding", "connection", "content-length"].contains(&name.as_str()) {
            out.insert(name, value.clone());
        }
    }
    let bytes = answer.bytes().await.unwrap();
    (status, out, bytes).into_response()
}

struct Proxy {
    base: String,
    state: Arc<ProxyState>,
}

impl Proxy {
    async fn start(upstream: &str) -> Self {
        let state =
            Arc::new(ProxyState { upstream: upstream.into(), http: reqwest::Client::new(), seen: Mutex::default() });
        let addr = common::spawn_server(axum::Router::new().fallback(forward).with_state(state.clone())).await;
        Self { base: format!("http://{addr}"), state }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------- WebDriver

struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
    session: String,
    screenshots: PathBuf,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browser and its driver, or why they cannot run here.
fn programs() -> Result<(PathBuf, PathBuf), String> {
    let find = |names: &[&str]| {
        names.iter().map(|n| Path::new("/usr/bin").join(n)).find(|p| p.exists()).or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path).flat_map(|d| names.iter().map(move |n| d.join(n))).find(|p| p.exists())
        })
    };
    let browser = find(&["chromium", "chromium-browser", "google-chrome"]).ok_or("no chromium")?;
    let driver = find(&["chromedriver"]).ok_or("no chromedriver")?;
    Ok((browser, driver))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Driver {
    async fn start(browser: &Path, driver: &Path) -> Self {
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let status = format!("{base}/status");
        wait_for("chromedriver to be ready", DEADLINE, async || {
            let r = http.get(&status).send().await.ok()?;
            let v: Value = serde_json::from_str(&r.text().await.ok()?).ok()?;
            (v["value"]["ready"] == true).then_some(())
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": browser,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1800", "--no-first-run", "--no-default-browser-check",
                         format!("--user-data-dir={}", profile.path().display())],
            },
        }}});
        let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("console-screenshots");
        std::fs::create_dir_all(&screenshots).unwrap();
        let mut d = Self { child, base, http, session: String::new(), screenshots, _profile: profile };
        let answer = d.send("POST", "/session", capabilities).await;
        d.session = answer["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {answer}")).to_string();
        d
    }

    async fn send(&self, method: &str, path: &str, body: Value) -> Value {
        let v = self.answer(method, path, body).await;
        if path != "/session" {
            assert!(v["value"]["error"].is_null(), "WebDriver {method} {path}: {v}");
        }
        v["value"].clone()
    }

    /// WebDriver's whole answer, an error included.
    async fn answer(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let rb = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).header("content-type", "application/json").body(body.to_string()),
        };
        let text = rb.send().await.unwrap().text().await.unwrap();
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("WebDriver answered: {text}"))
    }

    async fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        self.send(method, &format!("/session/{}{path}", self.session), body).await
    }

    async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({"url": url})).await;
    }

    /// Runs `script` (a function body) in the page.
    async fn js(&self, script: &str, args: Value) -> Value {
        self.cmd("POST", "/execute/sync", json!({"script": script, "args": args})).await
    }

    /// Waits until `script` returns something truthy, and returns it.
    async fn until(&self, what: &str, script: &str, args: Value) -> Value {
        wait_for(what, DEADLINE, async || {
            let v = self.js(script, args.clone()).await;
            (!(v.is_null() || v == false || v == "")).then_some(v)
        })
        .await
    }

    async fn element(&self, css: &str) -> String {
        let v = self.cmd("POST", "/element", json!({"using": "css selector", "value": css})).await;
        v.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).unwrap().to_string()
    }

    /// Clicks the element `css` selects.
    async fn click(&self, css: &str) {
        self.act(css, "click", json!({})).await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        self.act(css, "value", json!({"text": text})).await;
    }

    /// Does `action` on the element `css` selects. The console renders again as it polls,
    /// so the element found may be replaced before the action reaches it (WebDriver then
    /// does nothing and says so): it is found again.
    async fn act(&self, css: &str, action: &str, body: Value) {
        wait_for(&format!("`{action}` on `{css}`"), DEADLINE, async || {
            let id = self.element(css).await;
            let path = format!("/session/{}/element/{id}/{action}", self.session);
            let v = self.answer("POST", &path, body.clone()).await;
            match v["value"]["error"].as_str() {
                None => Some(()),
                Some("stale element reference") => None,
                Some(_) => panic!("WebDriver POST {path}: {v}"),
            }
        })
        .await;
    }

    async fn screenshot(&self, name: &str) {
        let png = self.cmd("GET", "/screenshot", Value::Null).await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        let path = self.screenshots.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        println!("screenshot: {}", path.display());
    }

    async fn quit(&self) {
        self.send("DELETE", &format!("/session/{}", self.session), Value::Null).await;
    }
}

/// The text of the first element `css` matches, or null.
const TEXT: &str = "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;";
/// Whether `css` matches a displayed element.
const VISIBLE: &str = "const e = document.querySelector(arguments[0]); return !!e && e.offsetParent !== null;";

#[tokio::test]
async fn the_console_shows_the_gateway_and_replays_a_failed_request() {
    let (browser, driver) = match programs() {
        Ok(found) => found,
        Err(why) => {
            println!("SKIPPED: {why}; install them with `apt-get install -y chromium chromium-driver` (CI does)");
            return;
        }
    };
    let ok = Mock::answering(200).await;
    let flaky = Mock::answering(500).await;
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template("orders.yaml", &format!("url: {}\n", ok.url("/hook")));
    config.write_template("flaky.yaml", &format!("url: {}\nretries: 0\nverify: false\n", flaky.url("/hook")));
    config.write_template("broken.yaml", &format!("url: {}\ntimout: 5s\n", ok.url("/hook")));
    let gateway = Gateway::start(&config, &[("HOOKGATE_ADMIN_TOKEN", TOKEN)]).await;
    gateway.wait_state("orders", "active", DEADLINE).await;
    let proxy = Proxy::start(&gateway.base).await;
    let d = Driver::start(&browser, &driver).await;

    // Without the token: the form, and no data request.
    d.goto(&format!("{}/", proxy.base)).await;
    d.until("the token form", VISIBLE, json!(["#token"])).await;
    for hidden in ["#console", "#controls", "#templates-table"] {
        assert_eq!(d.js(VISIBLE, json!([hidden])).await, false, "{hidden} shown without the token");
    }
    d.js("return new Promise(r => setTimeout(r, 2500));", json!([])).await; // a polling period
    d.screenshot("01-token-form").await;
    let early: Vec<String> = proxy.seen().iter().map(|s| s.uri.clone()).collect();
    assert!(
        early.iter().all(|u| ["/", "/console.js", "/console.css", "/favicon.ico"].contains(&u.as_str())),
        "requests before the token: {early:?}"
    );
    assert!(early.contains(&"/console.js".to_string()), "{early:?}");

    // A wrong token is refused and the form stays.
    d.type_into("#token", "not-the-admin-token-at-all").await;
    d.click("#login-submit").await;
    d.until("the refusal", TEXT, json!(["#login-error"])).await;
    assert_eq!(d.js(VISIBLE, json!(["#console"])).await, false);

    // With the token: the templates, the active one and the broken one's position.
    d.type_into("#token", TOKEN).await;
    d.click("#login-submit").await;
    let state = d.until("orders in the table", TEXT, json!(["tr[data-template='orders'] td:nth-of-type(1)"])).await;
    assert_eq!(state, "active");
    let error =
        d.until("the broken template's error", TEXT, json!(["tr[data-template='broken'] td.detail-cell"])).await;
    let error = error.as_str().unwrap();
    assert!(error.contains("broken.yaml:2:1:") && error.contains("timout"), "{error}");
    assert_eq!(d.js(TEXT, json!(["tr[data-template='broken'] td:nth-of-type(1)"])).await, "invalid");
    let last_test = d.js(TEXT, json!(["tr[data-template='orders'] td:nth-of-type(5)"])).await;
    assert!(last_test.as_str().unwrap().contains("200 OK"), "{last_test}");
    d.screenshot("02-templates").await;

    // A dispatch made through the API appears with its counts, live.
    let id = gateway.dispatch("orders", &common::payload(4242, 3)).await;
    let row = format!("tr[data-dispatch='{id}']");
    d.until("the dispatch, delivered", "const r = document.querySelector(arguments[0]); return r && r.textContent.includes('delivered') && r.textContent.includes('1 / 0 / 0');", json!([format!("#dispatches-table {row}")])).await;
    let campaign = d.until("the campaign's counts", TEXT, json!(["tr[data-campaign='4242']"])).await;
    let campaign = campaign.as_str().unwrap();
    assert!(campaign.contains("1 / 0 / 0") && campaign.contains("3 / 0 / 0"), "{campaign}");
    d.click(&format!("#dispatches-table {row} button")).await;
    let detail = d.until("the dispatch's requests and attempts", TEXT, json!(["#detail-table tbody"])).await;
    assert!(detail.as_str().unwrap().contains(&format!("{id}.0")), "{detail}");
    d.screenshot("03-dispatch").await;

    // A failed request, replayed from the console, reaches the endpoint again.
    let failed = gateway.dispatch("flaky", &common::payload(77, 1)).await;
    gateway.wait_dispatch(&failed, DEADLINE).await;
    let failed_row = format!("#failed-table tr[data-dispatch='{failed}']");
    let reason = d.until("the failed request", TEXT, json!([failed_row])).await;
    assert!(reason.as_str().unwrap().contains("Webhook Dispatch Failed"), "{reason}");
    assert!(reason.as_str().unwrap().contains("HTTP 500"), "{reason}");
    d.screenshot("04-failed").await;
    flaky.set_behavior(|_, _| Reply::Status(200));
    d.click(&format!("{failed_row} button")).await;
    let delivery = format!("{failed}.0");
    wait_for("the replay to reach the endpoint", DEADLINE, async || {
        let sent = flaky
            .requests()
            .iter()
            .filter(|r| r.header("x-hookgate-delivery-id").as_deref() == Some(&delivery))
            .count();
        (sent == 2).then_some(())
    })
    .await;
    d.until("the failed list to empty", "return !document.querySelector(arguments[0]);", json!([failed_row])).await;
    let result = d.js(TEXT, json!(["#failed-result"])).await;
    assert!(result.as_str().unwrap().contains("1 request(s) sent again"), "{result}");

    // The buttons of a template row.
    d.click("tr[data-template='orders'] button[data-action='test']").await;
    d.until(
        "the test's answer",
        "return (document.querySelector('#templates-result').textContent || '').includes('200 OK');",
        json!([]),
    )
    .await;
    d.click("tr[data-template='orders'] button[data-action='token']").await;
    d.until(
        "the token's answer",
        "return (document.querySelector('#templates-result').textContent || '').includes('no tokens');",
        json!([]),
    )
    .await;
    let plugins = d.js(TEXT, json!(["#plugins-table tbody"])).await;
    assert!(plugins.as_str().unwrap().contains("basic"), "{plugins}");
    d.screenshot("05-after-replay").await;

    // The token: never in a URL, the page or the logs; sent on every /v1 request.
    let html = d.js("return document.documentElement.outerHTML;", json!([])).await;
    assert!(!html.as_str().unwrap().contains(TOKEN), "the token is in the page");
    let seen = proxy.seen();
    assert!(seen.iter().any(|s| s.uri.starts_with("/v1/dispatches")), "{seen:?}");
    for s in &seen {
        assert!(!s.uri.contains(TOKEN), "the token is in a URL: {}", s.uri);
        if s.uri.starts_with("/v1/") && s.authorization.is_some() {
            let a = s.authorization.as_deref().unwrap();
            assert!(a == format!("Bearer {TOKEN}") || a == "Bearer not-the-admin-token-at-all", "{s:?}");
        } else {
            assert!(!s.uri.starts_with("/v1/"), "a /v1 request without the token: {s:?}");
        }
    }
    assert!(seen.iter().any(|s| s.method == "POST" && s.uri == format!("/v1/dispatches/{failed}/retry")));
    assert!(!gateway.output().contains(TOKEN), "the token is in the gateway's logs");

    // Forgetting the token shows the form again, and the page stops asking for data.
    d.click("#forget").await;
    d.until("the token form again", VISIBLE, json!(["#token"])).await;
    let before = proxy.seen().len();
    d.js("return new Promise(r => setTimeout(r, 2500));", json!([])).await;
    let after: Vec<Seen> = proxy.seen().split_off(before);
    assert!(after.iter().all(|s| !s.uri.starts_with("/v1/")), "requests after forgetting the token: {after:?}");
    d.quit().await;
}

/// Without an admin token (a loopback `listen`), the console opens directly: its requests
/// are same-origin, which `/v1` accepts from this machine.
#[tokio::test]
async fn without_an_admin_token_the_console_opens_directly() {
    let Ok((browser, driver)) = programs() else {
        println!(
            "SKIPPED: no chromium or chromedriver; install them with `apt-get install -y chromium chromium-driver`"
        );
        return;
    };
    let ok = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template("orders.yaml", &format!("url: {}\n", ok.url("/hook")));
    let gateway = Gateway::start(&config, &[]).await;
    gateway.wait_state("orders", "active", DEADLINE).await;
    let d = Driver::start(&browser, &driver).await;
    d.goto(&format!("{}/", gateway.base)).await;
    let state = d.until("orders in the table", TEXT, json!(["tr[data-template='orders'] td:nth-of-type(1)"])).await;
    assert_eq!(state, "active");
    assert_eq!(d.js(VISIBLE, json!(["#token"])).await, false, "no token to ask for");
    assert_eq!(d.js(VISIBLE, json!(["#forget"])).await, false);
    // The page's POSTs pass the origin checks too.
    d.click("tr[data-template='orders'] button[data-action='test']").await;
    d.until(
        "the test's answer",
        "return (document.querySelector('#templates-result').textContent || '').includes('200 OK');",
        json!([]),
    )
    .await;
    d.screenshot("06-no-admin-token").await;
    d.quit().await;
}
