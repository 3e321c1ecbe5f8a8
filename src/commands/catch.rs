//! `hookgate catch`: a local request catcher (stands in for requestcatcher.com).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;

struct Catcher {
    status: StatusCode,
    seen: AtomicU64,
}

pub async fn run(listen: SocketAddr, status: u16) -> anyhow::Result<ExitCode> {
    let status =
        StatusCode::from_u16(status).map_err(|_| anyhow::anyhow!("--status {status} is not an HTTP status"))?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let catcher = Arc::new(Catcher { status, seen: AtomicU64::new(0) });
    let app = axum::Router::new().fallback(catch).with_state(catcher);
    println!("catching requests on http://{} (answering {}); Ctrl-C to stop", listener.local_addr()?, status);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(ExitCode::SUCCESS)
}

async fn catch(
    State(catcher): State<Arc<Catcher>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let n = catcher.seen.fetch_add(1, Ordering::Relaxed) + 1;
    let mut out = format!("--- #{n} {method} {uri} from {peer} ({} bytes)\n", body.len());
    for (name, value) in &headers {
        out.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())));
    }
    out.push('\n');
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(json) => out.push_str(&serde_json::to_string_pretty(&json).unwrap_or_default()),
        Err(_) => out.push_str(&String::from_utf8_lossy(&body)),
    }
    println!("{out}\n");
    (catcher.status, axum::Json(serde_json::json!({"caught": n})))
}
