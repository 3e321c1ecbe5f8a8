//! Deliveries stay correct at full speed: thousands of deliveries dispatched as fast as the
//! API takes them (one batch and many single-profile dispatches at once, 64 workers) reach
//! the endpoint once each — every delivery id exactly once, none missing, none extra — with
//! the in-memory queue and the durable SQLite default.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{ConfigDir, Gateway, Mock, TEST_CONFIG, payload, wait_for};

/// Profiles of the one batch dispatch (`batch_size: 1`: one request each).
const BATCH: usize = 2_000;
/// Single-profile dispatches, sent from `LANES` connections at once.
const SINGLES: usize = 1_024;
const LANES: usize = 16;

async fn every_delivery_arrives_exactly_once(queue: &str) {
    let mock = Mock::answering(200).await;
    let config =
        ConfigDir::new(&format!("{TEST_CONFIG}queue: {queue}\nworkers: 64\ndestinations:\n  max_concurrency: 64\n"));
    config.write_template("fast.yaml", &format!("url: {}\nverify: false\nbatch_size: 1\n", mock.url("/hook")));
    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("fast", "active", Duration::from_secs(20)).await;

    // The singles go out from their own tasks while the batch is being delivered.
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..LANES {
        let (http, url) = (gw.http.clone(), format!("{}/v1/templates/fast/dispatch", gw.base));
        lanes.spawn(async move {
            let mut ids = Vec::new();
            for i in (lane..SINGLES).step_by(LANES) {
                let mut body = payload(8, 1);
                body["profiles"][0]["Identity"] = format!("single-{i}").into();
                let r = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&body).unwrap())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                let answer: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
                ids.push(format!("{}.0", answer["dispatch_id"].as_str().unwrap()));
            }
            ids
        });
    }
    let batch = gw.dispatch("fast", &payload(7, BATCH)).await;
    let mut expected: HashSet<String> = (0..BATCH).map(|i| format!("{batch}.{i}")).collect();
    while let Some(ids) = lanes.join_next().await {
        expected.extend(ids.unwrap());
    }
    assert_eq!(expected.len(), BATCH + SINGLES, "every dispatch has its own delivery ids");

    // Both campaigns finished: nothing pending, so nothing more can arrive.
    for (campaign, n) in [(7, BATCH), (8, SINGLES)] {
        let stats = wait_for(&format!("campaign {campaign} to finish"), Duration::from_secs(120), async || {
            let (status, stats) = gw.get(&format!("/v1/campaigns/{campaign}")).await;
            (status == 200 && stats["requests"]["pending"] == 0).then_some(stats)
        })
        .await;
        assert_eq!(stats["requests"]["delivered"], n as u64, "campaign {campaign}: {stats}");
        assert_eq!(stats["requests"]["failed"], 0, "campaign {campaign}: {stats}");
    }

    let by_id = mock.by_delivery_id();
    let twice: Vec<_> = by_id.iter().filter(|(_, copies)| copies.len() > 1).map(|(id, c)| (id, c.len())).collect();
    assert!(twice.is_empty(), "{queue}: delivery ids seen more than once: {twice:?}");
    let seen: HashSet<String> = by_id.into_keys().collect();
    let missing: Vec<_> = expected.difference(&seen).take(5).collect();
    let extra: Vec<_> = seen.difference(&expected).take(5).collect();
    assert!(missing.is_empty() && extra.is_empty(), "{queue}: missing {missing:?}, unexpected {extra:?}");
    assert_eq!(mock.deliveries().len(), BATCH + SINGLES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_queue_delivers_every_id_exactly_once_at_full_speed() {
    every_delivery_arrives_exactly_once("memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_queue_delivers_every_id_exactly_once_at_full_speed() {
    every_delivery_arrives_exactly_once("sqlite").await;
}
