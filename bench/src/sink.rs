//! The sink: a lean HTTP server on 127.0.0.1 in its own process (`hookgate-bench sink`) that
//! answers every webhook 200 at once and records its `x-hookgate-delivery-id` and arrival
//! time. It also serves a mock OAuth token endpoint, can hold its answers (a destination that
//! stops answering), and reports what it saw on `/_bench/...` routes. It exits when its
//! standard input closes, so it never outlives the bench.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::serve::ListenerExt;

use crate::procfs::now_ns;
use crate::raw::{self, Conn};

/// The header whose value the sink records.
pub const DELIVERY_ID: &str = "x-hookgate-delivery-id";

struct SinkState {
    /// (delivery id, arrival in ns of `CLOCK_MONOTONIC`), in arrival order.
    records: Mutex<Vec<(Box<str>, u64)>>,
    /// Deliveries that carried credentials (`authorization` or `webhook-signature`).
    authed: AtomicU64,
    /// Token requests answered.
    tokens: AtomicU64,
    /// Requests waiting for `/_bench/release`.
    held: AtomicU64,
    hold: tokio::sync::watch::Sender<bool>,
}

/// Runs the sink on `listen` until standard input closes; prints `listening on ADDR` first.
pub fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("bind {listen}"))?;
        println!("listening on {}", listener.local_addr()?);
        std::thread::spawn(|| {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            std::process::exit(0);
        });
        let state: &'static SinkState = Box::leak(Box::new(SinkState {
            records: Mutex::new(Vec::with_capacity(1 << 20)),
            authed: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            held: AtomicU64::new(0),
            hold: tokio::sync::watch::channel(false).0,
        }));
        let app = Router::new()
            .route("/oauth/token", post(token))
            .route("/_bench/count", get(count))
            .route("/_bench/take", post(take))
            .route("/_bench/hold", post(hold))
            .route("/_bench/release", post(release))
            .fallback(deliver)
            .with_state(state);
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await?;
        Ok(())
    })
}

async fn deliver(State(state): State<&'static SinkState>, headers: HeaderMap, _body: Bytes) -> &'static str {
    let at = now_ns();
    if let Some(id) = headers.get(DELIVERY_ID).and_then(|v| v.to_str().ok()) {
        state.records.lock().unwrap().push((id.into(), at));
        if headers.contains_key("authorization") || headers.contains_key("webhook-signature") {
            state.authed.fetch_add(1, Ordering::Relaxed);
        }
    }
    let mut hold = state.hold.subscribe();
    if *hold.borrow() {
        state.held.fetch_add(1, Ordering::Relaxed);
        let _ = hold.wait_for(|held| !held).await;
        state.held.fetch_sub(1, Ordering::Relaxed);
    }
    ""
}

async fn token(State(state): State<&'static SinkState>, _body: Bytes) -> ([(&'static str, &'static str); 1], String) {
    let n = state.tokens.fetch_add(1, Ordering::Relaxed);
    (
        [("content-type", "application/json")],
        format!(r#"{{"access_token":"bench-token-{n}-0123456789abcdef","token_type":"Bearer","expires_in":3600}}"#),
    )
}

async fn count(State(state): State<&'static SinkState>) -> String {
    format!(
        "{} {} {} {}",
        state.records.lock().unwrap().len(),
        state.authed.load(Ordering::Relaxed),
        state.tokens.load(Ordering::Relaxed),
        state.held.load(Ordering::Relaxed)
    )
}

/// Every record as `id ns` lines; the records and counters start again from zero.
async fn take(State(state): State<&'static SinkState>) -> String {
    let records = std::mem::take(&mut *state.records.lock().unwrap());
    state.authed.store(0, Ordering::Relaxed);
    state.tokens.store(0, Ordering::Relaxed);
    let mut out = String::with_capacity(records.len() * 48);
    for (id, at) in records {
        out.push_str(&id);
        out.push(' ');
        out.push_str(&at.to_string());
        out.push('\n');
    }
    out
}

async fn hold(State(state): State<&'static SinkState>) -> &'static str {
    state.hold.send_replace(true);
    ""
}

async fn release(State(state): State<&'static SinkState>) -> &'static str {
    state.hold.send_replace(false);
    ""
}

// ---------------------------------------------------------------- the bench's side

/// What the sink counted since the last [`Sink::take`].
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    pub records: u64,
    pub authed: u64,
    pub tokens: u64,
    pub held: u64,
}

/// The sink process, started by the bench.
pub struct Sink {
    child: Child,
    pub addr: SocketAddr,
}

impl Sink {
    /// Starts `hookgate-bench sink` (this executable again) on a free port of 127.0.0.1.
    pub fn start() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("find the bench executable")?;
        let mut child = Command::new(exe)
            .args(["sink", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("start the sink")?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("the sink said `{}` instead of its address", line.trim()))?;
        Ok(Self { child, addr })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn call(&self, method: &str, path: &str) -> anyhow::Result<Vec<u8>> {
        let answer = Conn::connect(self.addr).await?.send(&raw::request(method, path, &[], b"")).await?;
        if answer.status != 200 {
            bail!("the sink answered {method} {path} with {}", answer.status);
        }
        Ok(answer.body)
    }

    pub async fn counts(&self) -> anyhow::Result<Counts> {
        let body = String::from_utf8(self.call("GET", "/_bench/count").await?)?;
        let n: Vec<u64> = body.split(' ').map(str::parse).collect::<Result<_, _>>()?;
        Ok(Counts { records: n[0], authed: n[1], tokens: n[2], held: n[3] })
    }

    /// Every (delivery id, arrival ns) since the last take; the sink starts again from zero.
    pub async fn take(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let body = String::from_utf8(self.call("POST", "/_bench/take").await?)?;
        body.lines()
            .map(|l| {
                let (id, at) = l.rsplit_once(' ').context("bad record line")?;
                Ok((id.to_string(), at.parse()?))
            })
            .collect()
    }

    pub async fn hold(&self) -> anyhow::Result<()> {
        self.call("POST", "/_bench/hold").await.map(drop)
    }

    pub async fn release(&self) -> anyhow::Result<()> {
        self.call("POST", "/_bench/release").await.map(drop)
    }

    /// Waits until `check` holds for the sink's counts, or fails after `deadline`.
    pub async fn wait(
        &self,
        what: &str,
        deadline: Duration,
        check: impl Fn(&Counts) -> bool,
    ) -> anyhow::Result<Counts> {
        let end = Instant::now() + deadline;
        loop {
            let counts = self.counts().await?;
            if check(&counts) {
                return Ok(counts);
            }
            if Instant::now() > end {
                bail!("timed out after {deadline:?} waiting for {what} (the sink counted {counts:?})");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
