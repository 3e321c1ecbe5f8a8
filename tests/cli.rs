//! The one-shot commands: `test`, `catch`, and `serve`'s graceful stop.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_command_sends_the_test_payload() {
    let mock = Mock::answering(202).await;
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template("orders.yaml", &format!("url: {}\nmethod: PUT\n", mock.url("/t")));
    let dir = config.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin()).args(["test", "orders", "--config"]).arg(dir).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("PUT http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("HTTP 202 Accepted"), "{stdout}");
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].is_test());
    assert_eq!(requests[0].method, "PUT");

    let failing = Mock::answering(500).await;
    config.write_template("orders.yaml", &format!("url: {}\n", failing.url("/t")));
    let dir = config.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin()).args(["test", "orders", "--config"]).arg(dir).output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("HTTP 500 Internal Server Error"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_prints_requests_and_answers_the_chosen_status() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(bin())
        .args(["catch", "--listen", &format!("127.0.0.1:{port}"), "--status", "201"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().contains("catching requests on"));
    hookgate_core::delivery::client::install_crypto_provider();
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/hooks/x"))
        .header("X-Probe", "yes")
        .body(r#"{"targetId": 5}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let printed: Vec<String> =
        lines.by_ref().take_while(|l| l.as_ref().is_ok_and(|l| !l.starts_with('}'))).map(Result::unwrap).collect();
    let printed = printed.join("\n");
    assert!(printed.contains("POST /hooks/x"), "{printed}");
    assert!(printed.contains("x-probe: yes"), "{printed}");
    assert!(printed.contains("\"targetId\": 5"), "{printed}");
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGTERM: the gateway stops taking work, lets the delivery in progress finish, and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_delivery_in_progress_finish() {
    let mock = Mock::start(|_, _| Reply::After(Duration::from_secs(2), 200)).await;
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template("slow.yaml", &format!("url: {}\nverify: false\ntimeout: 20s\n", mock.url("/")));
    let mut gw = Gateway::start(&config, &[]).await;
    gw.wait_state("slow", "active", Duration::from_secs(10)).await;
    gw.dispatch("slow", &payload(90, 1)).await;
    mock.wait_deliveries(1, Duration::from_secs(5)).await;

    let pid = gw.pid().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = wait_for("the gateway to exit", Duration::from_secs(15), async || gw.try_wait()).await;
    assert!(status.success(), "exit status {status}");
    let logs = gw.output();
    let stopping = logs.find("shutting down").expect("the shutdown is logged");
    let delivered = logs.find("delivered template").expect("the delivery in progress finished");
    assert!(stopping < delivered, "the delivery finished after the signal:\n{logs}");
}
