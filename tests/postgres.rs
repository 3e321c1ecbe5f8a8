//! Several gateways on one PostgreSQL queue (`queue: postgres://...`). Each test makes a
//! database of its own on the server `HOOKGATE_TEST_POSTGRES_URL` names, and is skipped
//! (saying so) when that is not set.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hookgate_core::testing::postgres::TestDb;
use serde_json::{Value, json};

const REQUESTS: usize = 10_000;

/// A config folder for one instance on `db`, with the bulk template (one profile per request).
fn instance(db: &TestDb, mock: &Mock, extra: &str) -> ConfigDir {
    let config = ConfigDir::new(&format!("{TEST_CONFIG}workers: 16\nqueue: {}\n{extra}", db.url));
    config.write_template("bulk.yaml", &format!("url: {}\nverify: false\nbatch_size: 1\n", mock.url("/in")));
    config
}

/// This instance's own count of delivered requests (`/metrics` is per instance).
async fn delivered_here(gw: &Gateway) -> u64 {
    let (_, metrics) = gw.get("/metrics").await;
    let text = metrics.as_str().unwrap_or_default().to_string();
    text.lines()
        .find(|l| l.starts_with("hookgate_requests_total{template=\"bulk\",outcome=\"delivered\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

async fn campaign(gw: &Gateway, target: u64) -> Value {
    let (status, stats) = gw.get(&format!("/v1/campaigns/{target}")).await;
    assert_eq!(status, 200, "{stats}");
    stats
}

/// Acceptance 2: two instances deliver a 10,000-request campaign from one queue, each
/// request exactly once, and either instance reports stats that add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_queue_and_deliver_each_request_once() {
    let Some(db) = TestDb::create("two_instances_share_one_queue").await else { return };
    let mock = Mock::start(|_, _| Reply::After(Duration::from_millis(1), 200)).await;
    let (ca, cb) = (instance(&db, &mock, ""), instance(&db, &mock, ""));
    let a = Gateway::start(&ca, &[]).await;
    let b = Gateway::start(&cb, &[]).await;
    for gw in [&a, &b] {
        gw.wait_state("bulk", "active", Duration::from_secs(10)).await;
    }
    // Half the campaign through each instance's API.
    let first = a.dispatch("bulk", &payload(8001, REQUESTS / 2)).await;
    let second = b.dispatch("bulk", &payload(8001, REQUESTS / 2)).await;

    wait_for("the campaign to finish", Duration::from_secs(120), async || {
        let stats = campaign(&a, 8001).await;
        (stats["requests"]["pending"] == 0).then_some(())
    })
    .await;
    let by_id = mock.by_delivery_id();
    assert_eq!(by_id.len(), REQUESTS);
    let twice: Vec<&String> = by_id.iter().filter(|(_, c)| c.len() > 1).map(|(id, _)| id).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    for (id, n) in [(&first, REQUESTS / 2), (&second, REQUESTS / 2)] {
        for i in 0..n {
            assert!(by_id.contains_key(&format!("{id}.{i}")), "request {id}.{i} was never delivered");
        }
    }
    let expected = json!({"delivered": REQUESTS, "failed": 0, "pending": 0});
    for gw in [&a, &b] {
        let stats = campaign(gw, 8001).await;
        assert_eq!(stats["requests"], expected, "{stats}");
        assert_eq!(stats["profiles"], expected);
        assert_eq!(stats["attempts"]["success"], REQUESTS);
    }
    // Both did part of the work, and their parts add up to the campaign.
    let (da, db_) = (delivered_here(&a).await, delivered_here(&b).await);
    assert!(da > 0 && db_ > 0, "instance A delivered {da}, B {db_}");
    assert_eq!(da + db_, REQUESTS as u64);
    // Either instance answers for a dispatch the other accepted.
    let (status, view) = a.get(&format!("/v1/dispatches/{second}")).await;
    assert_eq!((status, view["state"].clone()), (200, json!("delivered")));
    eprintln!("instance A delivered {da}, instance B {db_}");
}

/// Acceptance 2: killing one of two instances midway loses nothing: the survivor takes over
/// its claims when their lease runs out; only requests in flight at the kill are sent
/// twice, with the same delivery id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_instance_loses_nothing() {
    let Some(db) = TestDb::create("killing_one_instance_loses_nothing").await else { return };
    let mock = Mock::start(|_, _| Reply::After(Duration::from_millis(2), 200)).await;
    let (ca, cb) = (instance(&db, &mock, "queue_lease: 2s\n"), instance(&db, &mock, "queue_lease: 2s\n"));
    let mut a = Gateway::start(&ca, &[]).await;
    let b = Gateway::start(&cb, &[]).await;
    for gw in [&a, &b] {
        gw.wait_state("bulk", "active", Duration::from_secs(10)).await;
    }
    let id = a.dispatch("bulk", &payload(8002, REQUESTS)).await;
    mock.wait_deliveries(REQUESTS / 5, Duration::from_secs(60)).await;
    a.kill();
    let killed_at = Instant::now();
    assert!(mock.deliveries().len() < REQUESTS, "finished before the kill; the test proves nothing");

    let by_id = mock.wait_distinct(REQUESTS, Duration::from_secs(120)).await;
    for i in 0..REQUESTS {
        assert!(by_id.contains_key(&format!("{id}.{i}")), "request {i} was never delivered");
    }
    let duplicates: Vec<&Vec<Recorded>> = by_id.values().filter(|c| c.len() > 1).collect();
    for copies in &duplicates {
        assert_eq!(copies.len(), 2);
        assert!(copies[0].at <= killed_at, "the first copy of a duplicate came before the kill");
    }
    // In flight at the kill: at most one per worker of the killed instance.
    assert!(duplicates.len() <= 16, "{} duplicates", duplicates.len());
    let stats = wait_for("the survivor's stats to settle", Duration::from_secs(30), async || {
        let stats = campaign(&b, 8002).await;
        (stats["requests"]["pending"] == 0).then_some(stats)
    })
    .await;
    assert_eq!(stats["requests"], json!({"delivered": REQUESTS, "failed": 0, "pending": 0}), "{stats}");
    eprintln!("{} duplicates after the kill", duplicates.len());
}

/// Idempotency keys and dead-letter replay work across instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_and_replay_across_instances() {
    let Some(db) = TestDb::create("idempotency_and_replay_across_instances").await else { return };
    let mock = Mock::answering(400).await;
    let (ca, cb) = (instance(&db, &mock, ""), instance(&db, &mock, ""));
    let a = Gateway::start(&ca, &[]).await;
    let b = Gateway::start(&cb, &[]).await;
    for gw in [&a, &b] {
        gw.wait_state("bulk", "active", Duration::from_secs(10)).await;
    }
    let key = [("idempotency-key", "campaign-8003")];
    let (status, first) = a.post_json("/v1/templates/bulk/dispatch", &payload(8003, 3), &key).await;
    assert_eq!(status, 202);
    let (status, again) = b.post_json("/v1/templates/bulk/dispatch", &payload(8003, 3), &key).await;
    assert_eq!(status, 202);
    assert_eq!(again["dispatch_id"], first["dispatch_id"], "the other instance knows the key");
    let id = first["dispatch_id"].as_str().unwrap().to_string();
    let failed = b.wait_dispatch(&id, Duration::from_secs(20)).await;
    assert_eq!(failed["state"], "failed", "{failed}");

    mock.set_behavior(|_, _| Reply::Status(200));
    let (status, body) = b.post_json(&format!("/v1/dispatches/{id}/retry"), &json!({}), &[]).await;
    assert_eq!((status, body["requeued"].clone()), (202, json!(3)), "{body}");
    let done = a.wait_dispatch(&id, Duration::from_secs(20)).await;
    assert_eq!(done["state"], "delivered", "{done}");
    assert_eq!(mock.deliveries().len(), 6, "3 refused, then 3 replayed");
    let stats = campaign(&a, 8003).await;
    assert_eq!(stats["requests"], json!({"delivered": 3, "failed": 0, "pending": 0}), "{stats}");
}

/// On a shared store the pending bodies' budget is the cluster's: bytes of requests that
/// instance A accepted and instance B delivered are given back to A (its count follows the
/// store's), so A does not answer 503 for good once B has done part of its work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pending_budget_follows_requests_another_instance_delivered() {
    let Some(db) = TestDb::create("pending_budget_is_the_clusters").await else { return };
    // Slow answers and one worker on A: B (16 workers, polling) takes most of A's requests.
    let mock = Mock::start(|_, _| Reply::After(Duration::from_millis(30), 200)).await;
    // A dispatch of 20 one-profile requests is about 2.6 KB of bodies: one fits, two do not.
    let ca = ConfigDir::new(&format!(
        "{TEST_CONFIG}workers: 1\nqueue: {}\nlimits:\n  max_pending_bytes: 4096\n  max_dispatch_bytes: 4096\n",
        db.url
    ));
    ca.write_template("bulk.yaml", &format!("url: {}\nverify: false\nbatch_size: 1\n", mock.url("/in")));
    let cb = instance(&db, &mock, "");
    let a = Gateway::start(&ca, &[]).await;
    let b = Gateway::start(&cb, &[]).await;
    for gw in [&a, &b] {
        gw.wait_state("bulk", "active", Duration::from_secs(10)).await;
    }
    for round in 0..3u64 {
        let body = payload(8100 + round, 20);
        let id = wait_for("room in A's pending budget", Duration::from_secs(20), async || {
            let (status, answer) = a.post_json("/v1/templates/bulk/dispatch", &body, &[]).await;
            match status {
                202 => Some(answer["dispatch_id"].as_str().unwrap().to_string()),
                503 => None,
                other => panic!("dispatch answered {other}: {answer}"),
            }
        })
        .await;
        a.wait_dispatch(&id, Duration::from_secs(30)).await;
    }
    assert!(delivered_here(&b).await > 0, "B delivered none of A's requests: the test proves nothing");
    assert_eq!(mock.deliveries().len(), 60);
}

/// Table scans (sequential and by index) of the database's own tables: what queries of an
/// instance cost, without autovacuum's transactions, which `xact_commit` counts too.
async fn scans(db: &TestDb) -> i64 {
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT (COALESCE(sum(seq_scan), 0) + COALESCE(sum(idx_scan), 0))::int8 FROM pg_stat_user_tables",
            &[],
        )
        .await
        .unwrap();
    row.get(0)
}

/// Issue 14, acceptance 3: an idle instance (the default `queue_poll`) costs the database a
/// few queries a minute: no polling while nothing happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_instance_makes_a_few_queries_a_minute() {
    let Some(db) = TestDb::create("idle_instance_queries").await else { return };
    let mock = Mock::answering(200).await;
    let gw = Gateway::start(&instance(&db, &mock, ""), &[]).await;
    gw.wait_state("bulk", "active", Duration::from_secs(10)).await;
    // Counted as table scans, not transactions: the server's transaction count has
    // autovacuum's in it too, which other tests' databases coming and going make frequent.
    // Once start-up has been reported, the count stays put. (An idle backend reports its
    // counts up to 10 s late: unchanged over 12 s, they are all in.)
    let mut last = scans(&db).await;
    wait_for("the instance to be idle", Duration::from_secs(60), async || {
        tokio::time::sleep(Duration::from_secs(12)).await;
        let now = scans(&db).await;
        let idle = now == last;
        last = now;
        idle.then_some(())
    })
    .await;
    let window = Duration::from_secs(30);
    // The window, and the time the last of it takes to be reported.
    tokio::time::sleep(window + Duration::from_secs(11)).await;
    let queries = scans(&db).await - last;
    eprintln!("an idle instance scanned its tables {queries} times in {window:?}");
    assert!(queries <= 4, "an idle instance scanned its tables {queries} times in {window:?}");
}

/// Issue 14, acceptance 3: a dispatch accepted by instance A is picked up by an idle
/// instance B at once (`LISTEN/NOTIFY`), not at B's next poll (an hour away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_instance_is_woken_by_a_dispatch_to_another() {
    let Some(db) = TestDb::create("idle_instance_woken").await else { return };
    // `/slow` never answers: A's one worker, and the one job it keeps ready, stay taken.
    let mock = Mock::start(|_, r| if r.path == "/slow" { Reply::Hang } else { Reply::Status(200) }).await;
    let slow = format!("url: {}\nverify: false\nbatch_size: 1\ntimeout: 5m\nretries: 0\n", mock.url("/slow"));
    let ca = instance(&db, &mock, "queue_poll: 1h\n");
    std::fs::write(ca.path().join("hookgate.yaml"), {
        let text = std::fs::read_to_string(ca.path().join("hookgate.yaml")).unwrap();
        text.replace("workers: 16", "workers: 1")
    })
    .unwrap();
    ca.write_template("slow.yaml", &slow);
    let a = Gateway::start(&ca, &[]).await;
    a.wait_state("slow", "active", Duration::from_secs(10)).await;
    a.dispatch("slow", &payload(8200, 2)).await;
    let admin = {
        let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    };
    wait_for("A to hold both slow requests", Duration::from_secs(10), async || {
        let row = admin.query_one("SELECT count(*) FROM requests WHERE lease_owner IS NOT NULL", &[]).await.unwrap();
        (row.get::<_, i64>(0) == 2 && !mock.requests().is_empty()).then_some(())
    })
    .await;

    let cb = instance(&db, &mock, "queue_poll: 1h\n");
    cb.write_template("slow.yaml", &slow);
    let b = Gateway::start(&cb, &[]).await;
    b.wait_state("bulk", "active", Duration::from_secs(10)).await;
    let started = Instant::now();
    let id = a.dispatch("bulk", &payload(8201, 1)).await;
    let arrived = mock.wait_deliveries(2, Duration::from_secs(3)).await;
    let waited = started.elapsed();
    assert!(arrived.iter().any(|r| r.path == "/in"), "the bulk request arrived");
    wait_for("B to count the delivery", Duration::from_secs(5), async || (delivered_here(&b).await == 1).then_some(()))
        .await;
    assert_eq!(delivered_here(&a).await, 0, "A could not deliver it: B did");
    eprintln!("dispatched through A, delivered by B {waited:?} later");
    let done = a.wait_dispatch(&id, Duration::from_secs(5)).await;
    assert_eq!(done["state"], "delivered", "{done}");
}

/// Issue 14, acceptance 1: the database goes away in the middle of a 10,000-request campaign
/// (every connection cut and new ones refused, through a proxy, as in a restart). Meanwhile
/// `/readyz` says not ready and a dispatch is answered 503, not 500; when the database is
/// back, delivery resumes by itself and every request of the campaign arrives, a copy only
/// ever with its own delivery id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_going_away_mid_campaign_loses_nothing() {
    let Some(db) = TestDb::create("database_goes_away_mid_campaign").await else { return };
    let mut url = url::Url::parse(&db.url).unwrap();
    let upstream = (url.host_str().unwrap().to_string(), url.port().unwrap_or(5432));
    let upstream = tokio::net::lookup_host(upstream).await.unwrap().find(|a| a.ip().is_loopback()).unwrap();
    let proxy = common::proxy::Proxy::start(upstream).await;
    url.set_port(Some(proxy.addr.port())).unwrap();
    let mock = Mock::start(|_, _| Reply::After(Duration::from_millis(1), 200)).await;
    let config = ConfigDir::new(&format!("{TEST_CONFIG}workers: 16\nqueue: {url}\nqueue_lease: 3s\n"));
    config.write_template("bulk.yaml", &format!("url: {}\nverify: false\nbatch_size: 1\n", mock.url("/in")));
    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("bulk", "active", Duration::from_secs(10)).await;
    let (status, ready) = gw.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");

    let id = gw.dispatch("bulk", &payload(8300, REQUESTS)).await;
    mock.wait_deliveries(REQUESTS / 5, Duration::from_secs(60)).await;
    proxy.cut();
    let cut_at = Instant::now();
    assert!(mock.deliveries().len() < REQUESTS, "finished before the cut; the test proves nothing");

    let ready = wait_for("/readyz to say not ready", Duration::from_secs(30), async || {
        let (status, body) = gw.get("/readyz").await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(ready["queue"], false, "{ready}");
    let (status, refused) = gw.post_json("/v1/templates/bulk/dispatch", &payload(8301, 3), &[]).await;
    assert_eq!(status, 503, "a dispatch while the database is away: {refused}");
    assert_eq!(refused["error"]["code"], "queue_unavailable", "{refused}");
    let during = mock.deliveries().len();
    eprintln!("cut after {during} deliveries; not ready {:?} after the cut", cut_at.elapsed());

    proxy.restore();
    let by_id = mock.wait_distinct(REQUESTS, Duration::from_secs(180)).await;
    for i in 0..REQUESTS {
        assert!(by_id.contains_key(&format!("{id}.{i}")), "request {i} was never delivered");
    }
    assert_eq!(by_id.len(), REQUESTS, "deliveries under ids the campaign does not have");
    let twice = by_id.values().filter(|copies| copies.len() > 1).count();
    let stats = wait_for("the stats to settle", Duration::from_secs(30), async || {
        let stats = campaign(&gw, 8300).await;
        (stats["requests"]["pending"] == 0).then_some(stats)
    })
    .await;
    assert_eq!(stats["requests"], json!({"delivered": REQUESTS, "failed": 0, "pending": 0}), "{stats}");
    let (status, ready) = gw.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    let (status, refused) = gw.get("/v1/campaigns/8301").await;
    assert!(status == 404 || refused["requests"]["delivered"] == 0, "the refused dispatch was delivered: {refused}");
    eprintln!("{twice} requests delivered twice (same id) across the outage");
}
