//! Test harness: the `hookgate` binary in a temp config folder, mock endpoints on
//! 127.0.0.1, and waiting on conditions with deadlines.
#![allow(dead_code)]

pub mod oauth;
pub mod proxy;
pub mod standard_webhooks;
pub mod validators;
pub mod wasm;
pub mod zendesk;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// Settings every test gateway gets: loopback destinations allowed (the mocks live there),
/// short backoff and fast reloads so tests do not wait for production defaults.
pub const TEST_CONFIG: &str = "listen: 127.0.0.1:0\nnetwork:\n  allow: [loopback]\nbackoff:\n  base: 50ms\n  max: 200ms\nreload:\n  debounce: 100ms\n  rescan: 1s\n";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hookgate")
}

/// Polls `check` until it returns `Some`, or panics with `what` after `deadline`.
pub async fn wait_for<T>(what: &str, deadline: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- config folders

pub struct ConfigDir {
    pub dir: tempfile::TempDir,
    /// The config folder: the temporary folder, or a folder inside it.
    path: PathBuf,
}

impl ConfigDir {
    pub fn new(hookgate_yaml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        Self::create(dir, path, hookgate_yaml)
    }

    /// A config folder `sub` inside a temporary folder, for a test that puts other things
    /// beside it (a plugin project).
    pub fn new_in(sub: &str, hookgate_yaml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(sub);
        Self::create(dir, path, hookgate_yaml)
    }

    fn create(dir: tempfile::TempDir, path: PathBuf, hookgate_yaml: &str) -> Self {
        std::fs::create_dir_all(path.join("templates")).unwrap();
        std::fs::write(path.join("hookgate.yaml"), hookgate_yaml).unwrap();
        Self { dir, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `hookgate validate --config` on this folder, run to its end.
    pub fn validate(&self) -> std::process::Output {
        std::process::Command::new(bin()).arg("validate").arg("--config").arg(self.path()).output().unwrap()
    }

    pub fn template_path(&self, file: &str) -> PathBuf {
        self.path.join("templates").join(file)
    }

    /// Writes a template the way editors do: a temp file renamed over the original.
    pub fn write_template(&self, file: &str, text: &str) {
        let tmp = self.path.join("templates").join(format!(".{file}.swp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.template_path(file)).unwrap();
    }
}

// ---------------------------------------------------------------- the gateway process

pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    pub base: String,
    output: Arc<Mutex<String>>,
    pub http: reqwest::Client,
    token: Option<String>,
}

impl Gateway {
    pub async fn start(config: &ConfigDir, env: &[(&str, &str)]) -> Self {
        Self::start_within(config, env, Duration::from_secs(20)).await
    }

    /// Starts the gateway, waiting up to `deadline` for it to listen: it compiles its
    /// plugins first, which for a Python one takes a minute or more on a busy machine.
    pub async fn start_within(config: &ConfigDir, env: &[(&str, &str)], deadline: Duration) -> Self {
        let mut cmd = Command::new(bin());
        cmd.arg("serve").arg("--config").arg(config.path()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.env("RUST_LOG", "debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn hookgate");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut out = output.lock().unwrap();
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        let found = output.clone();
        let addr: SocketAddr = wait_for("the gateway to listen", deadline, async || {
            let out = found.lock().unwrap();
            // The address ends where its characters do: a space, an ANSI code, or the quote of
            // a JSON log line.
            out.split("listening on http://").nth(1).and_then(|rest| {
                let end = rest.find(|c: char| !(c.is_ascii_hexdigit() || ".:[]".contains(c))).unwrap_or(rest.len());
                rest[..end].parse().ok()
            })
        })
        .await;
        let token = env.iter().find(|(k, _)| *k == "HOOKGATE_ADMIN_TOKEN").map(|(_, v)| v.to_string());
        hookgate_core::delivery::client::install_crypto_provider();
        Self { child, addr, base: format!("http://{addr}"), output, http: reqwest::Client::new(), token }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// SIGKILL: the process dies at once, with no chance to clean up.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for the process to exit.
    pub async fn terminate(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let pid = self.pid().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        wait_for("the gateway to exit", deadline, async || self.try_wait()).await
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    fn authed(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// GET an API path; returns the status and the JSON (or text as a JSON string).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.authed(self.http.get(format!("{}{path}", self.base))).send().await.unwrap();
        read(r).await
    }

    pub async fn post_json(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut rb = self
            .authed(self.http.post(format!("{}{path}", self.base)))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).unwrap());
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        read(rb.send().await.unwrap()).await
    }

    pub async fn put_text(&self, path: &str, text: &str) -> (u16, Value) {
        let r = self
            .authed(self.http.put(format!("{}{path}", self.base)))
            .header("content-type", "application/yaml")
            .body(text.to_string())
            .send()
            .await
            .unwrap();
        read(r).await
    }

    pub async fn dispatch(&self, template: &str, payload: &Value) -> String {
        let (status, body) = self.post_json(&format!("/v1/templates/{template}/dispatch"), payload, &[]).await;
        assert_eq!(status, 202, "dispatch through {template}: {body}");
        body["dispatch_id"].as_str().unwrap().to_string()
    }

    /// Waits until the template's state is `state` (and returns its JSON).
    pub async fn wait_state(&self, template: &str, state: &str, deadline: Duration) -> Value {
        wait_for(&format!("template {template} to be {state}"), deadline, async || {
            let (status, body) = self.get(&format!("/v1/templates/{template}")).await;
            (status == 200 && body["state"] == state).then_some(body)
        })
        .await
    }

    /// Waits until the dispatch has no pending request.
    pub async fn wait_dispatch(&self, id: &str, deadline: Duration) -> Value {
        wait_for(&format!("dispatch {id} to finish"), deadline, async || {
            let (status, body) = self.get(&format!("/v1/dispatches/{id}")).await;
            (status == 200 && body["state"] != "pending").then_some(body)
        })
        .await
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn read(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A payload in the reference format with `n` profiles.
pub fn payload(target_id: u64, n: usize) -> Value {
    let profiles: Vec<Value> = (0..n)
        .map(|i| serde_json::json!({"Identity": format!("user-{i}"), "Email": format!("user{i}@example.com")}))
        .collect();
    serde_json::json!({"is_test": false, "targetId": target_id, "key_values": {"campaign": "spring"}, "profiles": profiles})
}

// ---------------------------------------------------------------- mock endpoints

/// Serves `app` on a free port of 127.0.0.1 until the test's runtime ends.
pub async fn spawn_server(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn is_test(&self) -> bool {
        self.json()["is_test"] == true
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_string())
    }
}

pub enum Reply {
    Status(u16),
    StatusWith(u16, Vec<(&'static str, String)>),
    /// Answer `status` after waiting (without blocking a thread).
    After(Duration, u16),
    /// Never answer.
    Hang,
}

type Behavior = Box<dyn Fn(usize, &Recorded) -> Reply + Send + Sync>;

struct MockState {
    requests: Mutex<Vec<Recorded>>,
    behavior: Mutex<Behavior>,
}

/// An HTTP endpoint on 127.0.0.1 that records every request. `behavior(n, request)` picks
/// the answer to the n-th (0-based) request.
#[derive(Clone)]
pub struct Mock {
    pub addr: SocketAddr,
    state: Arc<MockState>,
}

impl Mock {
    pub async fn start(behavior: impl Fn(usize, &Recorded) -> Reply + Send + Sync + 'static) -> Self {
        let state = Arc::new(MockState { requests: Mutex::new(Vec::new()), behavior: Mutex::new(Box::new(behavior)) });
        let addr = spawn_server(axum::Router::new().fallback(handle).with_state(state.clone())).await;
        Self { addr, state }
    }

    /// Always answers `status`.
    pub async fn answering(status: u16) -> Self {
        Self::start(move |_, _| Reply::Status(status)).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set_behavior(&self, behavior: impl Fn(usize, &Recorded) -> Reply + Send + Sync + 'static) {
        *self.state.behavior.lock().unwrap() = Box::new(behavior);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Requests that are not the on-load test payload.
    pub fn deliveries(&self) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| !r.is_test()).collect()
    }

    /// The deliveries by `X-Hookgate-Delivery-Id`: each id's copies, in arrival order.
    pub fn by_delivery_id(&self) -> HashMap<String, Vec<Recorded>> {
        let mut by_id: HashMap<String, Vec<Recorded>> = HashMap::new();
        for r in self.deliveries() {
            by_id.entry(r.header("x-hookgate-delivery-id").expect("every delivery has an id")).or_default().push(r);
        }
        by_id
    }

    /// Waits until `n` distinct delivery ids arrived; returns them as [`Mock::by_delivery_id`].
    pub async fn wait_distinct(&self, n: usize, deadline: Duration) -> HashMap<String, Vec<Recorded>> {
        wait_for(&format!("{n} distinct deliveries"), deadline, async || {
            let by_id = self.by_delivery_id();
            (by_id.len() >= n).then_some(by_id)
        })
        .await
    }

    pub async fn wait_deliveries(&self, n: usize, deadline: Duration) -> Vec<Recorded> {
        wait_for(&format!("{n} deliveries at the mock"), deadline, async || {
            let d = self.deliveries();
            (d.len() >= n).then_some(d)
        })
        .await
    }
}

async fn handle(
    State(state): State<Arc<MockState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let recorded =
        Recorded { method: method.to_string(), path: uri.path().to_string(), headers, body, at: Instant::now() };
    let n = {
        let mut requests = state.requests.lock().unwrap();
        requests.push(recorded.clone());
        requests.len() - 1
    };
    let reply = (state.behavior.lock().unwrap())(n, &recorded);
    match reply {
        Reply::Status(s) => StatusCode::from_u16(s).unwrap().into_response(),
        Reply::StatusWith(s, headers) => {
            let mut r = StatusCode::from_u16(s).unwrap().into_response();
            for (k, v) in headers {
                r.headers_mut().insert(k, v.parse().unwrap());
            }
            r
        }
        Reply::After(wait, s) => {
            tokio::time::sleep(wait).await;
            StatusCode::from_u16(s).unwrap().into_response()
        }
        Reply::Hang => std::future::pending().await,
    }
}

// ---------------------------------------------------------------- an endpoint that echoes

/// An endpoint on 127.0.0.1 that answers every request with `status` and the body that
/// `answer(headers, body)` makes of it: a destination that quotes the request (and so its
/// credentials) in its answer. Returns its base URL (`http://127.0.0.1:port`).
pub async fn spawn_echo(
    status: u16,
    answer: impl Fn(&HeaderMap, &Bytes) -> String + Clone + Send + Sync + 'static,
) -> String {
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let answer = answer.clone();
        async move { (StatusCode::from_u16(status).unwrap(), answer(&headers, &body)) }
    });
    format!("http://{}", spawn_server(app).await)
}
