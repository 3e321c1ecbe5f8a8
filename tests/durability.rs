//! Durable delivery with the default SQLite store: nothing accepted is lost to a crash
//! or a restart, and records, stats and idempotency keys survive it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn config(workers: usize, extra: &str) -> ConfigDir {
    ConfigDir::new(&format!("{TEST_CONFIG}workers: {workers}\n{extra}"))
}

/// Acceptance 1: SIGKILL in the middle of a 10,000-request campaign, then a restart: every
/// request is delivered; a request delivered twice was in flight at the kill, and both
/// copies carry the same delivery id and body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_midway_loses_nothing() {
    const REQUESTS: usize = 10_000;
    const WORKERS: usize = 16;
    let mock = Mock::start(|_, _| Reply::After(Duration::from_millis(2), 200)).await;
    let config = config(WORKERS, "");
    config.write_template("bulk.yaml", &format!("url: {}\nverify: false\nbatch_size: 1\n", mock.url("/in")));
    let mut gw = Gateway::start(&config, &[]).await;
    gw.wait_state("bulk", "active", Duration::from_secs(10)).await;
    let id = gw.dispatch("bulk", &payload(7001, REQUESTS)).await;

    mock.wait_deliveries(REQUESTS / 4, Duration::from_secs(60)).await;
    gw.kill();
    let killed_at = Instant::now();
    let before = mock.deliveries().len();
    assert!(before < REQUESTS, "the campaign was finished before the kill; the test proves nothing");

    let gw = Gateway::start(&config, &[]).await;
    assert!(gw.output().contains("restored from the store"), "{}", gw.output());
    let by_id = mock.wait_distinct(REQUESTS, Duration::from_secs(120)).await;
    let done = gw.wait_dispatch(&id, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "delivered", "{done}");

    for i in 0..REQUESTS {
        assert!(by_id.contains_key(&format!("{id}.{i}")), "request {i} was never delivered");
    }
    let duplicates: Vec<&Vec<Recorded>> = by_id.values().filter(|c| c.len() > 1).collect();
    for copies in &duplicates {
        assert_eq!(copies.len(), 2, "delivered more than twice");
        assert!(copies[0].at <= killed_at, "the first copy of a duplicate came before the kill");
        assert_eq!(copies[0].body, copies[1].body, "a duplicate carries the same body");
    }
    // In flight at the kill: at most one request per worker, plus outcomes not yet committed.
    assert!(duplicates.len() <= 2 * WORKERS, "{} duplicates", duplicates.len());
    eprintln!("{before} delivered before the kill, {} duplicates after the restart", duplicates.len());

    let (status, stats) = gw.get("/v1/campaigns/7001").await;
    assert_eq!(status, 200);
    assert_eq!(stats["requests"], json!({"delivered": REQUESTS, "failed": 0, "pending": 0}), "{stats}");
}

/// Acceptance 4: SIGTERM during a campaign stops claiming, lets deliveries in progress
/// finish, exits 0 and leaves the rest queued; the restart finishes the campaign with no
/// request lost and none sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_the_rest_queued_for_the_restart() {
    const REQUESTS: usize = 400;
    let mock = Mock::start(|_, _| Reply::After(Duration::from_millis(50), 200)).await;
    let config = config(4, "");
    config.write_template("slow.yaml", &format!("url: {}\nverify: false\nbatch_size: 1\n", mock.url("/in")));
    let mut gw = Gateway::start(&config, &[]).await;
    gw.wait_state("slow", "active", Duration::from_secs(10)).await;
    let id = gw.dispatch("slow", &payload(7002, REQUESTS)).await;
    mock.wait_deliveries(40, Duration::from_secs(30)).await;

    let status = gw.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "exit status {status}");
    let at_exit = mock.deliveries().len();
    assert!(at_exit < REQUESTS, "the campaign was finished before SIGTERM; the test proves nothing");
    // Nothing is delivered once the process is gone.
    assert_eq!(mock.deliveries().len(), at_exit);

    let gw = Gateway::start(&config, &[]).await;
    let by_id = mock.wait_distinct(REQUESTS, Duration::from_secs(60)).await;
    let duplicates = by_id.values().filter(|c| c.len() > 1).count();
    assert_eq!(duplicates, 0, "a graceful stop sends nothing twice");
    let done = gw.wait_dispatch(&id, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "delivered");
    let (_, stats) = gw.get("/v1/campaigns/7002").await;
    assert_eq!(stats["requests"], json!({"delivered": REQUESTS, "failed": 0, "pending": 0}), "{stats}");
}

/// SIGTERM with a delivery that will not end within `shutdown_grace`: the gateway cuts it
/// off and exits; the next start sends that request again, with the same delivery id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_longer_than_the_grace_period_is_cut_off_and_sent_again() {
    let mock = Mock::start(|n, _| if n == 0 { Reply::Hang } else { Reply::Status(200) }).await;
    let config = config(2, "shutdown_grace: 500ms\n");
    config.write_template("stuck.yaml", &format!("url: {}\nverify: false\ntimeout: 60s\n", mock.url("/")));
    let mut gw = Gateway::start(&config, &[]).await;
    gw.wait_state("stuck", "active", Duration::from_secs(10)).await;
    let id = gw.dispatch("stuck", &payload(7006, 1)).await;
    mock.wait_deliveries(1, Duration::from_secs(10)).await;

    // Far sooner than the 60 s timeout the delivery would otherwise wait out.
    let status = gw.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");
    assert!(gw.output().contains("were cut off"), "{}", gw.output());

    let gw = Gateway::start(&config, &[]).await;
    let done = gw.wait_dispatch(&id, Duration::from_secs(20)).await;
    assert_eq!(done["state"], "delivered", "{done}");
    let copies = mock.by_delivery_id();
    assert_eq!(copies[&format!("{id}.0")].len(), 2, "sent again after the restart, with the same id");
}

/// Dispatch records (with their attempts), campaign stats, dead letters and idempotency
/// keys are the same after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_stats_and_idempotency_keys_survive_a_restart() {
    // The second batch is refused for good; the others are delivered.
    let mock = Mock::start(|_, r| {
        if r.json()["profiles"][0]["Identity"] == "user-100" { Reply::Status(400) } else { Reply::Status(200) }
    })
    .await;
    let config = config(4, "");
    config.write_template("orders.yaml", &format!("url: {}\nverify: false\nbatch_size: 100\n", mock.url("/o")));
    let mut gw = Gateway::start(&config, &[]).await;
    gw.wait_state("orders", "active", Duration::from_secs(10)).await;
    let (status, first) =
        gw.post_json("/v1/templates/orders/dispatch", &payload(7003, 250), &[("idempotency-key", "k-1")]).await;
    assert_eq!(status, 202);
    let id = first["dispatch_id"].as_str().unwrap().to_string();
    let before = gw.wait_dispatch(&id, Duration::from_secs(20)).await;
    assert_eq!(before["state"], "partial", "{before}");
    let (_, stats_before) = gw.get("/v1/campaigns/7003").await;
    gw.terminate(Duration::from_secs(20)).await;

    let gw = Gateway::start(&config, &[]).await;
    let (status, after) = gw.get(&format!("/v1/dispatches/{id}")).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after, before, "the record reads the same after the restart");
    let (_, stats_after) = gw.get("/v1/campaigns/7003").await;
    assert_eq!(stats_after, stats_before);
    assert_eq!(stats_after["requests"], json!({"delivered": 2, "failed": 1, "pending": 0}));

    // The same key is the same dispatch: nothing is sent again.
    let sent = mock.deliveries().len();
    let (status, again) =
        gw.post_json("/v1/templates/orders/dispatch", &payload(7003, 250), &[("idempotency-key", "k-1")]).await;
    assert_eq!(status, 202);
    assert_eq!(again["dispatch_id"], first["dispatch_id"]);
    assert_eq!(again["requests"], 3);

    // The dead letter kept its body: a replay delivers it.
    mock.set_behavior(|_, _| Reply::Status(200));
    let (status, body) = gw.post_json(&format!("/v1/dispatches/{id}/retry"), &json!({}), &[]).await;
    assert_eq!((status, body["requeued"].clone()), (202, json!(1)), "{body}");
    wait_for("the replay", Duration::from_secs(20), async || {
        let (_, d) = gw.get(&format!("/v1/dispatches/{id}")).await;
        (d["state"] == "delivered").then_some(())
    })
    .await;
    assert_eq!(mock.deliveries().len(), sent + 1, "only the replayed request was sent");
    let (_, stats) = gw.get("/v1/campaigns/7003").await;
    assert_eq!(stats["requests"], json!({"delivered": 3, "failed": 0, "pending": 0}));
}

/// A request accepted before a restart whose template was deleted meanwhile fails with a
/// reason that says so, instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_template_is_gone_after_a_restart_fails_clearly() {
    let mock = Mock::start(|_, _| Reply::Hang).await;
    let config = config(1, "");
    config.write_template("gone.yaml", &format!("url: {}\nverify: false\ntimeout: 30s\n", mock.url("/")));
    let mut gw = Gateway::start(&config, &[]).await;
    gw.wait_state("gone", "active", Duration::from_secs(10)).await;
    let id = gw.dispatch("gone", &payload(7004, 1)).await;
    mock.wait_deliveries(1, Duration::from_secs(10)).await;
    gw.kill();
    std::fs::remove_file(config.template_path("gone.yaml")).unwrap();

    let gw = Gateway::start(&config, &[]).await;
    let done = gw.wait_dispatch(&id, Duration::from_secs(10)).await;
    assert_eq!(done["state"], "failed");
    assert_eq!(done["requests"][0]["reason"], "template `gone` no longer exists", "{done}");
}

/// One gateway per data_dir: a second one refuses to start and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_on_the_same_data_dir_refuses_to_start() {
    let config = config(1, "");
    let _gw = Gateway::start(&config, &[]).await;
    let out = std::process::Command::new(bin())
        .args(["serve", "--config"])
        .arg(config.path())
        .env("HOOKGATE_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is in use by another hookgate"), "{stderr}");
}

/// Finished dispatches are deleted after the retention period, from disk and memory;
/// pending ones never are (tests/store: pruning keeps pending work).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_dispatches_are_deleted_after_the_retention_period() {
    let mock = Mock::answering(200).await;
    let config = config(2, "retention: 1s\nlimits:\n  dispatch_records: 1\n");
    config.write_template("short.yaml", &format!("url: {}\nverify: false\n", mock.url("/")));
    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("short", "active", Duration::from_secs(10)).await;
    let first = gw.dispatch("short", &payload(7005, 1)).await;
    gw.wait_dispatch(&first, Duration::from_secs(10)).await;
    // Memory holds one finished dispatch: the first is read back from disk.
    let second = gw.dispatch("short", &payload(7005, 1)).await;
    gw.wait_dispatch(&second, Duration::from_secs(10)).await;
    let (status, _) = gw.get(&format!("/v1/dispatches/{first}")).await;
    assert_eq!(status, 200, "a dispatch evicted from memory is read from the store");
    // Past the retention period both are gone: from disk, and the second from memory too.
    wait_for("the retention period to delete both dispatches", Duration::from_secs(10), async || {
        let first_gone = gw.get(&format!("/v1/dispatches/{first}")).await.0 == 404;
        let second_gone = gw.get(&format!("/v1/dispatches/{second}")).await.0 == 404;
        (first_gone && second_gone).then_some(())
    })
    .await;
}
