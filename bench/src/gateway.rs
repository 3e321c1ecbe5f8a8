//! The gateway under test: the release `hookgate serve` on a config folder generated in a
//! temp dir (a free port, loopback destinations allowed, no verification on load), one fresh
//! process per row so that its CPU and peak RSS are the row's.

use std::collections::VecDeque;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::raw::{self, Conn};

/// The queue backend of a row.
#[derive(Debug, Clone)]
pub enum Queue {
    Sqlite,
    Memory,
    Postgres(String),
}

impl Queue {
    pub fn name(&self) -> &'static str {
        match self {
            Queue::Sqlite => "sqlite",
            Queue::Memory => "memory",
            Queue::Postgres(_) => "postgres",
        }
    }
}

/// The template's auth of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    Basic,
    /// OAuth 2.0 client credentials against the sink's token endpoint (the token is cached).
    OAuth2,
    /// Client credentials with a JWT assertion signed by a key of the gateway's key store.
    Jwt,
    /// The Standard Webhooks example plugin (`examples/standard-webhooks`).
    Wasm,
}

impl Auth {
    pub fn name(self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::Basic => "basic",
            Auth::OAuth2 => "oauth2",
            Auth::Jwt => "jwt",
            Auth::Wasm => "standard-webhooks",
        }
    }

    fn yaml(self, sink: SocketAddr) -> String {
        match self {
            Auth::None => String::new(),
            Auth::Basic => "auth:\n  type: basic\n  username: bench\n  password: bench-password\n".into(),
            Auth::OAuth2 => format!(
                "auth:\n  type: oauth2\n  grant: client_credentials\n  token_url: http://{sink}/oauth/token\n  client_id: hookgate\n  client_secret: bench-secret\n"
            ),
            Auth::Jwt => format!(
                "auth:\n  type: oauth2\n  grant: client_credentials_jwt\n  token_url: http://{sink}/oauth/token\n  client_id: hookgate\n"
            ),
            Auth::Wasm => "auth:\n  type: standard-webhooks\n  secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n".into(),
        }
    }
}

/// How a row's gateway is set up.
pub struct Spec<'a> {
    pub queue: &'a Queue,
    pub auth: Auth,
    /// `workers`, `destinations.max_concurrency`, and the ceiling's connections.
    pub concurrency: usize,
    /// The template's per-attempt timeout.
    pub timeout: &'a str,
    /// The built Standard Webhooks plugin, for [`Auth::Wasm`].
    pub wasm: Option<&'a Path>,
}

/// The template every row of this run dispatches through: named for the run, so that the
/// template's stats, which a gateway on PostgreSQL reads from every retained dispatch of
/// it, leave out what earlier runs left in the database.
pub fn template() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| format!("bench-{}", std::process::id()))
}

pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    output: Arc<Mutex<VecDeque<String>>>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    pub async fn start(bin: &Path, spec: &Spec<'_>, sink: SocketAddr) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let c = spec.concurrency;
        std::fs::write(
            dir.path().join("hookgate.yaml"),
            format!(
                "listen: 127.0.0.1:0\nqueue: {queue}\nworkers: {c}\ndestinations:\n  max_concurrency: {c}\nnetwork:\n  allow: [loopback]\nlimits:\n  max_payload_bytes: 1073741824\n",
                queue = match spec.queue {
                    Queue::Postgres(_) => "memory", // the URL goes in HOOKGATE_QUEUE, not in a file
                    q => q.name(),
                }
            ),
        )?;
        std::fs::create_dir_all(dir.path().join("templates"))?;
        std::fs::write(
            dir.path().join("templates").join(format!("{}.yaml", template())),
            format!(
                "url: http://{sink}/hook\nverify: false\nbatch_size: 1\ntimeout: {}\nretries: 2\n{}",
                spec.timeout,
                spec.auth.yaml(sink)
            ),
        )?;
        if spec.auth == Auth::Jwt {
            let out = Command::new(bin).args(["keys", "generate", "--config"]).arg(dir.path()).output()?;
            if !out.status.success() {
                bail!("`hookgate keys generate` failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        if spec.auth == Auth::Wasm {
            let wasm = spec.wasm.context("the standard-webhooks row needs the built plugin")?;
            std::fs::create_dir_all(dir.path().join("plugins"))?;
            std::fs::copy(wasm, dir.path().join("plugins").join("standard-webhooks.wasm"))?;
        }
        let mut cmd = Command::new(bin);
        cmd.arg("serve").arg("--config").arg(dir.path()).env("NO_COLOR", "1").env_remove("RUST_LOG");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        if let Queue::Postgres(url) = spec.queue {
            cmd.env("HOOKGATE_QUEUE", url);
        }
        let mut child = cmd.spawn().with_context(|| format!("start {}", bin.display()))?;
        let output = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let output = output.clone();
            let stderr = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(addr) = line.split("listening on http://").nth(1) {
                        let _ = tx.send(addr.split_whitespace().next().unwrap_or_default().to_string());
                    }
                    let mut out = output.lock().unwrap();
                    if out.len() == 40 {
                        out.pop_front();
                    }
                    out.push_back(line);
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a.parse().with_context(|| format!("the gateway's address `{a}`"))?,
            Err(_) => {
                let _ = child.kill();
                bail!(
                    "the gateway did not start:\n{}",
                    output.lock().unwrap().iter().cloned().collect::<Vec<_>>().join("\n")
                );
            }
        };
        let gateway = Self { child, addr, output, _dir: dir };
        gateway
            .wait_json(
                "the template to be active",
                Duration::from_secs(60),
                &format!("/v1/templates/{}", template()),
                |v| v["state"] == "active",
            )
            .await?;
        Ok(gateway)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines the gateway logged.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().iter().cloned().collect::<Vec<_>>().join("\n")
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let answer = Conn::connect(self.addr).await?.send(&raw::request("GET", path, &[], b"")).await?;
        Ok((answer.status, serde_json::from_slice(&answer.body).unwrap_or(Value::Null)))
    }

    /// Polls `GET path` until `check` holds for its JSON, or fails after `deadline`.
    pub async fn wait_json(
        &self,
        what: &str,
        deadline: Duration,
        path: &str,
        check: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let end = Instant::now() + deadline;
        loop {
            let (status, body) = self.get(path).await?;
            if status == 200 && check(&body) {
                return Ok(body);
            }
            if Instant::now() > end {
                bail!("timed out after {deadline:?} waiting for {what}: {status} {body}\n{}", self.output());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the campaign's stats show `n` requests delivered and none pending.
    pub async fn wait_delivered(&self, target: &str, n: u64, deadline: Duration) -> anyhow::Result<()> {
        let body = self
            .wait_json(
                &format!("{n} deliveries of campaign {target}"),
                deadline,
                &format!("/v1/campaigns/{target}"),
                |v| {
                    v["requests"]["pending"] == 0
                        && v["requests"]["delivered"].as_u64().unwrap_or(0)
                            + v["requests"]["failed"].as_u64().unwrap_or(0)
                            >= n
                },
            )
            .await?;
        let delivered = body["requests"]["delivered"].as_u64().unwrap_or(0);
        if delivered != n {
            bail!("campaign {target}: {delivered} of {n} requests delivered: {body}");
        }
        Ok(())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The workspace's root (the bench crate's parent folder).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}
