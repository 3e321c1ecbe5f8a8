//! What the benchmarks share: the gateway's allocator and a local endpoint.

use std::net::SocketAddr;
use std::time::Duration;

/// The binary's allocator (src/main.rs), so the figures are the gateway's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An endpoint on 127.0.0.1 that answers 200 after `latency` (none: at once), or never.
pub async fn endpoint(latency: Option<Duration>, hang: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move || async move {
        if hang {
            std::future::pending::<()>().await;
        }
        if let Some(latency) = latency {
            tokio::time::sleep(latency).await;
        }
        "ok"
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}
