//! The conformance suite of the stores and queues: every test below runs on SQLite (with the
//! in-memory queue a SQLite gateway uses) and on PostgreSQL (with its shared queue), so a
//! backend that drifts from the other fails here. The PostgreSQL runs use the server
//! `HOOKGATE_TEST_POSTGRES_URL` names, a database of their own each, and print `SKIPPED ...`
//! when it is not set. Claims and leases, which only the shared queue has, are the
//! `postgres_only` tests at the end.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hookgate_core::model::{
    AttemptRecord, AttemptResult, DispatchId, NextState, RequestStatus, StoredDispatch, StoredRequest, StoredTarget,
};
use hookgate_core::queue::memory::MemoryQueue;
use hookgate_core::queue::postgres::PgQueue;
use hookgate_core::queue::{Job, Queue};
use hookgate_core::secret::Secret;
use hookgate_core::store::postgres::PgStore;
use hookgate_core::store::sqlite::SqliteStore;
use hookgate_core::store::{Filter, Inserted, Requeued, Settlement, Store};
use hookgate_core::testing::postgres::TestDb;

// ---------------------------------------------------------------- the backends

/// A store and the queue that goes with it; dropped in this order.
struct Backend {
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
    /// PostgreSQL: the database (another instance may connect to it), dropped last.
    db: Option<TestDb>,
    _dir: Option<tempfile::TempDir>,
}

const LEASE: Duration = Duration::from_secs(1);
/// Longer than any wait of these tests: wake-ups, not polls, hand the jobs out.
const POLL: Duration = Duration::from_secs(3600);

impl Backend {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("hookgate.db")).unwrap());
        Self { store, queue: Arc::new(MemoryQueue::new()), db: None, _dir: Some(dir) }
    }

    async fn postgres(test: &str) -> Option<Self> {
        let db = TestDb::create(&format!("postgres::{test}")).await?;
        let (store, queue) = instance(&db).await;
        Some(Self { store, queue, db: Some(db), _dir: None })
    }
}

/// One gateway instance's store and queue on `db`.
async fn instance(db: &TestDb) -> (Arc<dyn Store>, Arc<dyn Queue>) {
    let store = PgStore::connect(&Secret::new(db.url.clone())).await.unwrap();
    let queue = Arc::new(PgQueue::start(store.clone(), LEASE, POLL, 4));
    (store, queue)
}

/// Each test, once per backend: `sqlite::NAME` and `postgres::NAME`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::Backend::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(backend) = super::Backend::postgres(stringify!($name)).await else { return };
                    super::$name(&backend).await;
                }
            )*
        }
    };
}

conformance!(
    a_dispatch_round_trips_with_its_requests,
    bodies_are_read_only_when_asked_for,
    an_idempotency_key_maps_a_resend_to_the_first_dispatch,
    dispatches_inserted_at_once_each_get_their_own_answer,
    a_large_dispatch_is_stored_whole,
    outcomes_are_recorded_with_their_attempts,
    failed_requests_are_requeued_with_their_bodies,
    work_is_what_a_worker_needs_to_send_a_pending_request,
    select_filters_by_id_campaign_and_template,
    pruning_deletes_finished_dispatches_only,
    pending_body_bytes_follow_the_requests,
    the_queue_hands_out_due_jobs_once_until_they_finish,
    a_job_retried_later_is_not_handed_out_before_it_is_due,
    jobs_given_back_at_once_come_back_each_as_its_next_attempt,
);

// ---------------------------------------------------------------- fixtures

fn request(i: usize, now: SystemTime) -> StoredRequest {
    StoredRequest {
        target: (i == 0).then(|| StoredTarget {
            method: "POST".into(),
            url: "https://example.test/t".into(),
            headers: vec![("x-a".into(), "1".into())],
        }),
        profiles: 10 + i,
        // 2 KB: two requests' bodies are enough for PostgreSQL to keep them in a chunk.
        body: Some(format!("{{\"body\":{i},\"pad\":\"{}\"}}", "abcdefghij".repeat(200)).into()),
        status: RequestStatus::Pending,
        attempt: 1,
        due: now,
        attempts: Vec::new(),
    }
}

fn dispatch(template: &str, campaign: &str, key: Option<&str>, requests: usize) -> StoredDispatch {
    // Whole milliseconds: what the stores keep.
    let now = SystemTime::UNIX_EPOCH + Duration::from_millis(millis(SystemTime::now()) as u64);
    StoredDispatch {
        id: DispatchId::new(),
        template: template.into(),
        template_version: 3,
        campaign: campaign.into(),
        created_at: now,
        idempotency_key: key.map(str::to_string),
        skipped: 1,
        requests: (0..requests).map(|i| request(i, now)).collect(),
    }
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn tried(attempt: u32, result: AttemptResult, status: Option<u16>) -> AttemptRecord {
    AttemptRecord {
        attempt,
        at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        latency: Duration::from_micros(1234),
        status,
        error: (status != Some(200)).then(|| format!("HTTP {status:?}")),
        result,
    }
}

fn settlement(d: &StoredDispatch, request: u32, attempt: Option<AttemptRecord>, next: NextState) -> Settlement {
    Settlement { dispatch: d.id, request, attempt, next }
}

/// A plain connection to the test database at `url`, for what a test reads or writes
/// behind the store's back.
async fn sql_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

async fn one(store: &Arc<dyn Store>, id: DispatchId) -> StoredDispatch {
    let mut found = store.select(Filter::Id(id), true).await.unwrap();
    assert_eq!(found.len(), 1, "dispatch {id}");
    found.pop().unwrap()
}

/// The next job the queue hands out, within `within`.
async fn next_job(queue: &Arc<dyn Queue>, within: Duration) -> Job {
    tokio::time::timeout(within, queue.next()).await.expect("a job within the deadline").unwrap()
}

// ---------------------------------------------------------------- the store

async fn a_dispatch_round_trips_with_its_requests(b: &Backend) {
    let d = dispatch("orders", "42", Some("k"), 3);
    assert_eq!(b.store.insert(d.clone()).await.unwrap(), Inserted::Created);
    let got = one(&b.store, d.id).await;
    assert_eq!(
        (got.template.as_str(), got.template_version, got.campaign.as_str(), got.skipped),
        ("orders", 3, "42", 1)
    );
    assert_eq!((got.created_at, got.idempotency_key.as_deref()), (d.created_at, Some("k")));
    assert_eq!(got.requests.len(), 3);
    for (stored, sent) in got.requests.iter().zip(&d.requests) {
        assert_eq!((stored.profiles, stored.attempt, stored.due), (sent.profiles, 1, d.created_at));
        assert_eq!((&stored.target, &stored.body, &stored.status), (&sent.target, &sent.body, &RequestStatus::Pending));
        assert!(stored.attempts.is_empty());
    }
    // A dispatch whose transform planned no request at all.
    let empty = dispatch("orders", "42", None, 0);
    assert_eq!(b.store.insert(empty.clone()).await.unwrap(), Inserted::Created);
    assert!(one(&b.store, empty.id).await.requests.is_empty());
}

async fn bodies_are_read_only_when_asked_for(b: &Backend) {
    let d = dispatch("orders", "42", None, 2);
    b.store.insert(d.clone()).await.unwrap();
    let without = b.store.select(Filter::Id(d.id), false).await.unwrap();
    assert!(without[0].requests.iter().all(|r| r.body.is_none()), "no bodies unless asked");
    assert!(one(&b.store, d.id).await.requests.iter().all(|r| r.body.is_some()));
}

async fn an_idempotency_key_maps_a_resend_to_the_first_dispatch(b: &Backend) {
    let first = dispatch("orders", "42", Some("k"), 2);
    assert_eq!(b.store.insert(first.clone()).await.unwrap(), Inserted::Created);
    let resend = dispatch("orders", "42", Some("k"), 1);
    assert_eq!(b.store.insert(resend.clone()).await.unwrap(), Inserted::Existing(first.id));
    assert!(b.store.select(Filter::Id(resend.id), false).await.unwrap().is_empty(), "nothing of the resend stored");
    assert_eq!(b.store.by_idempotency_key("orders", "k").await.unwrap(), Some(first.id));
    assert_eq!(b.store.by_idempotency_key("orders", "other").await.unwrap(), None);
    // Keys are per template; dispatches without a key never collide.
    let elsewhere = dispatch("invoices", "42", Some("k"), 1);
    assert_eq!(b.store.insert(elsewhere.clone()).await.unwrap(), Inserted::Created);
    assert_eq!(b.store.by_idempotency_key("invoices", "k").await.unwrap(), Some(elsewhere.id));
    for _ in 0..2 {
        assert_eq!(b.store.insert(dispatch("orders", "42", None, 1)).await.unwrap(), Inserted::Created);
    }
}

/// Inserts every dispatch at once, each from a task of its own (they meet in the stores'
/// group commit); the answers in the order of `dispatches`.
async fn insert_at_once(
    store: &Arc<dyn Store>,
    dispatches: &[StoredDispatch],
) -> Vec<Result<Inserted, hookgate_core::model::StoreError>> {
    let tasks: Vec<_> = dispatches
        .iter()
        .map(|d| {
            let (store, d) = (store.clone(), d.clone());
            tokio::spawn(async move { store.insert(d).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

/// Dispatches inserted at the same moment are written together, and each still gets its
/// own answer: all are stored with their requests, except that of two with one idempotency
/// key, one is stored and the other answered with it.
async fn dispatches_inserted_at_once_each_get_their_own_answer(b: &Backend) {
    let mut all: Vec<StoredDispatch> = (0..40).map(|i| dispatch("orders", &format!("c{i}"), None, 1 + i % 3)).collect();
    all.push(dispatch("orders", "k1", Some("same"), 1));
    all.push(dispatch("orders", "k2", Some("same"), 2));
    let answers: Vec<Inserted> = insert_at_once(&b.store, &all).await.into_iter().map(Result::unwrap).collect();
    assert!(answers[..40].iter().all(|a| *a == Inserted::Created), "{answers:?}");
    let (first, second) = (&all[40], &all[41]);
    let (kept, answered) = match (answers[40], answers[41]) {
        (Inserted::Created, Inserted::Existing(id)) if id == first.id => (first, second),
        (Inserted::Existing(id), Inserted::Created) if id == second.id => (second, first),
        other => panic!("one of the two with key `same` is stored, the other finds it: {other:?}"),
    };
    assert_eq!(b.store.by_idempotency_key("orders", "same").await.unwrap(), Some(kept.id));
    assert!(b.store.select(Filter::Id(answered.id), false).await.unwrap().is_empty());
    for d in all.iter().filter(|d| d.id != answered.id) {
        let stored = one(&b.store, d.id).await;
        assert_eq!(stored.campaign, d.campaign);
        assert_eq!(stored.requests.len(), d.requests.len(), "the requests of {}", d.campaign);
        let bodies: Vec<_> = stored.requests.iter().map(|r| r.body.clone()).collect();
        assert_eq!(bodies, d.requests.iter().map(|r| r.body.clone()).collect::<Vec<_>>());
    }
}

/// A dispatch of many requests (PostgreSQL streams a big one with `COPY`) is stored whole,
/// each request as it was sent; a resend with its idempotency key stores nothing; its jobs
/// are handed out.
async fn a_large_dispatch_is_stored_whole(b: &Backend) {
    let d = dispatch("orders", "42", Some("big"), 1500);
    assert_eq!(b.store.insert(d.clone()).await.unwrap(), Inserted::Created);
    let resend = dispatch("orders", "42", Some("big"), 1200);
    assert_eq!(b.store.insert(resend.clone()).await.unwrap(), Inserted::Existing(d.id));
    assert!(b.store.select(Filter::Id(resend.id), false).await.unwrap().is_empty());
    let got = one(&b.store, d.id).await;
    assert_eq!(got.requests.len(), d.requests.len());
    for (i, (stored, sent)) in got.requests.iter().zip(&d.requests).enumerate() {
        let as_sent = (&sent.target, sent.profiles, &sent.body, &sent.status, sent.attempt, sent.due);
        assert_eq!(
            (&stored.target, stored.profiles, &stored.body, &stored.status, stored.attempt, stored.due),
            as_sent,
            "request {i}"
        );
    }
    b.queue.push(jobs(&d)).await.unwrap();
    let job = next_job(&b.queue, Duration::from_secs(5)).await;
    assert_eq!(job.dispatch, d.id);
}

async fn outcomes_are_recorded_with_their_attempts(b: &Backend) {
    let d = dispatch("orders", "42", None, 4);
    b.store.insert(d.clone()).await.unwrap();
    let due = SystemTime::UNIX_EPOCH + Duration::from_millis(millis(SystemTime::now()) as u64 + 60_000);
    let delivered = tried(2, AttemptResult::Success, Some(200));
    let failed = NextState::Failed { reason: "HTTP 400 Bad Request".into() };
    for s in [
        settlement(&d, 0, Some(tried(1, AttemptResult::Retry, Some(503))), NextState::Retry { attempt: 2, due }),
        settlement(&d, 0, Some(delivered.clone()), NextState::Delivered),
        settlement(&d, 1, Some(tried(1, AttemptResult::Retry, None)), NextState::Retry { attempt: 2, due }),
        settlement(&d, 2, Some(tried(1, AttemptResult::Failure, Some(400))), failed),
        // No attempt could be made (its template is gone).
        settlement(&d, 3, None, NextState::Failed { reason: "template `orders` no longer exists".into() }),
    ] {
        b.store.settle(&s).await.unwrap();
    }
    let got = one(&b.store, d.id).await;
    let [ok, retrying, dead, gone] = &got.requests[..] else { panic!("four requests") };
    assert_eq!((&ok.status, &ok.body), (&RequestStatus::Delivered, &None), "a delivered body is dropped");
    assert_eq!(ok.attempts.len(), 2, "attempts in the order they were made");
    assert_eq!(ok.attempts[0].result, AttemptResult::Retry);
    let last = &ok.attempts[1];
    assert_eq!((last.attempt, last.at, last.latency), (2, delivered.at, Duration::from_micros(1234)));
    assert_eq!((last.status, &last.error, last.result), (Some(200), &None, AttemptResult::Success));
    assert_eq!((&retrying.status, retrying.attempt, retrying.due), (&RequestStatus::Pending, 2, due));
    assert_eq!(retrying.body, d.requests[1].body, "a request due again keeps its body");
    assert_eq!((retrying.attempts[0].status, retrying.attempts[0].error.as_deref()), (None, Some("HTTP None")));
    assert_eq!(dead.status, RequestStatus::Failed { reason: "HTTP 400 Bad Request".into() });
    assert_eq!(dead.body, d.requests[2].body, "a dead letter keeps its body");
    assert_eq!(dead.attempts[0].result, AttemptResult::Failure);
    assert!(matches!(gone.status, RequestStatus::Failed { .. }));
    assert!(gone.attempts.is_empty(), "no attempt, none recorded");
}

async fn failed_requests_are_requeued_with_their_bodies(b: &Backend) {
    let d = dispatch("orders", "42", None, 3);
    b.store.insert(d.clone()).await.unwrap();
    let failed = NextState::Failed { reason: "HTTP 400".into() };
    b.store
        .settle(&settlement(&d, 0, Some(tried(1, AttemptResult::Success, Some(200))), NextState::Delivered))
        .await
        .unwrap();
    b.store.settle(&settlement(&d, 2, Some(tried(3, AttemptResult::Failure, Some(400))), failed)).await.unwrap();
    let before = SystemTime::now() - Duration::from_millis(5);
    let requeued = b.store.requeue_failed(d.id).await.unwrap().unwrap();
    let body_bytes = d.requests[2].body.as_ref().unwrap().len() as u64;
    assert_eq!(requeued, vec![Requeued { request: 2, profiles: 12, reason: "HTTP 400".into(), body_bytes }]);
    let again = &one(&b.store, d.id).await.requests[2];
    assert_eq!((&again.status, again.attempt), (&RequestStatus::Pending, 1));
    assert!(again.due >= before && again.due <= SystemTime::now() + Duration::from_millis(5), "due now");
    assert_eq!(again.attempts.len(), 1, "the earlier attempts stay on record");
    assert_eq!(b.store.requeue_failed(d.id).await.unwrap().unwrap(), vec![], "nothing failed any more");
    assert_eq!(b.store.requeue_failed(DispatchId::new()).await.unwrap(), None, "an unknown dispatch");
}

async fn work_is_what_a_worker_needs_to_send_a_pending_request(b: &Backend) {
    let d = dispatch("orders", "campaign-7", None, 2);
    b.store.insert(d.clone()).await.unwrap();
    let work = b.store.work(d.id, 0).await.unwrap().unwrap();
    assert_eq!((work.template.as_str(), work.campaign.as_str()), ("orders", "campaign-7"));
    assert_eq!((&work.request.body, &work.request.target), (&d.requests[0].body, &d.requests[0].target));
    assert_eq!((work.request.profiles, &work.request.status), (10, &RequestStatus::Pending));
    b.store
        .settle(&settlement(&d, 1, Some(tried(1, AttemptResult::Success, Some(200))), NextState::Delivered))
        .await
        .unwrap();
    let done = b.store.work(d.id, 1).await.unwrap().unwrap();
    assert_eq!((&done.request.status, &done.request.body), (&RequestStatus::Delivered, &None));
    assert!(b.store.work(d.id, 2).await.unwrap().is_none(), "no such request");
    assert!(b.store.work(DispatchId::new(), 0).await.unwrap().is_none(), "no such dispatch");
}

async fn select_filters_by_id_campaign_and_template(b: &Backend) {
    let a = dispatch("orders", "1", None, 1);
    let c = dispatch("invoices", "1", None, 2);
    let e = dispatch("orders", "2", None, 1);
    for d in [&a, &c, &e] {
        b.store.insert(d.clone()).await.unwrap();
    }
    let ids = |found: Vec<StoredDispatch>| found.iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(ids(b.store.select(Filter::All, false).await.unwrap()), vec![a.id, c.id, e.id], "oldest first");
    assert_eq!(ids(b.store.select(Filter::Campaign("1"), false).await.unwrap()), vec![a.id, c.id]);
    assert_eq!(ids(b.store.select(Filter::Template("orders"), false).await.unwrap()), vec![a.id, e.id]);
    assert_eq!(ids(b.store.select(Filter::Id(c.id), false).await.unwrap()), vec![c.id]);
    assert_eq!(b.store.select(Filter::Id(c.id), false).await.unwrap()[0].requests.len(), 2);
    assert!(b.store.select(Filter::Campaign("none"), false).await.unwrap().is_empty());
    assert!(b.store.select(Filter::Id(DispatchId::new()), true).await.unwrap().is_empty());
}

async fn pruning_deletes_finished_dispatches_only(b: &Backend) {
    let (finished, pending, partly) =
        (dispatch("orders", "9", None, 2), dispatch("orders", "9", None, 1), dispatch("orders", "9", None, 2));
    for d in [&finished, &pending, &partly] {
        b.store.insert(d.clone()).await.unwrap();
    }
    let ok = |d: &StoredDispatch, i| {
        settlement(d, i, Some(tried(1, AttemptResult::Success, Some(200))), NextState::Delivered)
    };
    b.store.settle(&ok(&finished, 0)).await.unwrap();
    b.store.settle(&settlement(&finished, 1, None, NextState::Failed { reason: "gone".into() })).await.unwrap();
    b.store.settle(&ok(&partly, 0)).await.unwrap();

    assert!(b.store.prune_dispatches(finished.created_at).await.unwrap().is_empty(), "none created before");
    let pruned = b.store.prune_dispatches(SystemTime::now() + Duration::from_secs(1)).await.unwrap();
    assert_eq!(pruned.iter().map(|d| d.id).collect::<Vec<_>>(), vec![finished.id]);
    let [delivered, failed] = &pruned[0].requests[..] else { panic!("returned with its requests, for the stats") };
    assert_eq!((&delivered.status, delivered.attempts.len()), (&RequestStatus::Delivered, 1));
    assert!(matches!(failed.status, RequestStatus::Failed { .. }));
    assert!(pruned[0].requests.iter().all(|r| r.body.is_none()), "without bodies");
    let left: Vec<DispatchId> = b.store.select(Filter::All, false).await.unwrap().iter().map(|d| d.id).collect();
    assert_eq!(left, vec![pending.id, partly.id], "pending work is never pruned");
    assert!(b.store.work(finished.id, 1).await.unwrap().is_none(), "its requests went with it");
    assert_eq!(b.store.requeue_failed(finished.id).await.unwrap(), None);
    assert_eq!(b.store.prune(SystemTime::now() + Duration::from_secs(1)).await.unwrap(), 0, "nothing left to prune");
}

async fn pending_body_bytes_follow_the_requests(b: &Backend) {
    let d = dispatch("orders", "42", None, 3);
    b.store.insert(d.clone()).await.unwrap();
    let size = |i: usize| d.requests[i].body.as_ref().unwrap().len() as u64;
    let pending = async || b.store.pending_body_bytes().await.unwrap().expect("both backends count");
    assert_eq!(pending().await, size(0) + size(1) + size(2));
    b.store
        .settle(&settlement(&d, 0, Some(tried(1, AttemptResult::Success, Some(200))), NextState::Delivered))
        .await
        .unwrap();
    let due = SystemTime::now() + Duration::from_secs(60);
    b.store
        .settle(&settlement(
            &d,
            1,
            Some(tried(1, AttemptResult::Retry, Some(503))),
            NextState::Retry { attempt: 2, due },
        ))
        .await
        .unwrap();
    b.store.settle(&settlement(&d, 2, None, NextState::Failed { reason: "HTTP 400".into() })).await.unwrap();
    assert_eq!(pending().await, size(1), "a failed body is kept, but not pending");
    b.store.requeue_failed(d.id).await.unwrap();
    assert_eq!(pending().await, size(1) + size(2), "requeued: pending again");
}

// ---------------------------------------------------------------- the queue

/// Jobs of a dispatch the store holds, due at the dispatch's creation.
fn jobs(d: &StoredDispatch) -> Vec<Job> {
    (0..d.requests.len() as u32).map(|request| Job { dispatch: d.id, request, attempt: 1, due: d.created_at }).collect()
}

async fn the_queue_hands_out_due_jobs_once_until_they_finish(b: &Backend) {
    let d = dispatch("orders", "42", None, 3);
    b.store.insert(d.clone()).await.unwrap();
    b.queue.push(jobs(&d)).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next_job(&b.queue, Duration::from_secs(5)).await);
    }
    got.sort_by_key(|j| j.request);
    assert_eq!(got, jobs(&d), "each job once, as pushed");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), b.queue.next()).await.is_err(),
        "no job is handed out twice while it is worked on"
    );
    assert_eq!(b.queue.len().await.unwrap(), 3, "being worked on counts");
    for job in &got {
        let ok = settlement(&d, job.request, Some(tried(1, AttemptResult::Success, Some(200))), NextState::Delivered);
        b.store.settle(&ok).await.unwrap();
        b.queue.complete(job).await.unwrap();
    }
    assert_eq!(b.queue.len().await.unwrap(), 0);
    assert!(b.queue.is_empty().await.unwrap());
    assert!(b.queue.ready().await);
}

async fn a_job_retried_later_is_not_handed_out_before_it_is_due(b: &Backend) {
    let d = dispatch("orders", "42", None, 1);
    b.store.insert(d.clone()).await.unwrap();
    b.queue.push(jobs(&d)).await.unwrap();
    let job = next_job(&b.queue, Duration::from_secs(5)).await;
    // What a worker does with an attempt to retry: the outcome first, then the queue.
    let wait = Duration::from_millis(700);
    let due = SystemTime::now() + wait;
    let retry =
        settlement(&d, 0, Some(tried(1, AttemptResult::Retry, Some(503))), NextState::Retry { attempt: 2, due });
    b.store.settle(&retry).await.unwrap();
    let started = Instant::now();
    b.queue.retry(Job { attempt: 2, due, ..job }).await.unwrap();
    let again = next_job(&b.queue, Duration::from_secs(5)).await;
    assert!(started.elapsed() >= wait - Duration::from_millis(50), "handed out after {:?}", started.elapsed());
    assert_eq!((again.dispatch, again.request, again.attempt), (d.id, 0, 2));
    assert_eq!(b.queue.len().await.unwrap(), 1);
}

// ---------------------------------------------------------------- what only the shared queue has

mod postgres_only {
    use super::*;

    /// A job one instance holds is not handed to another while its lease is renewed; when
    /// that instance stops without giving it back, another takes it once the lease runs out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_claim_is_a_lease_taken_over_when_it_runs_out() {
        let Some(a) = Backend::postgres("a_claim_is_a_lease").await else { return };
        let db = a.db.as_ref().unwrap();
        let d = dispatch("orders", "42", None, 1);
        a.store.insert(d.clone()).await.unwrap();
        a.queue.push(jobs(&d)).await.unwrap();
        let held = next_job(&a.queue, Duration::from_secs(5)).await;
        let (_, other) = instance(db).await;
        assert!(
            tokio::time::timeout(LEASE * 2, other.next()).await.is_err(),
            "another instance took a job whose lease is being renewed"
        );
        // Instance A dies (its tasks stop, nothing is given back).
        let Backend { queue, store, .. } = a;
        drop((queue, store));
        let taken = next_job(&other, LEASE * 5).await;
        assert_eq!((taken.dispatch, taken.request, taken.attempt), (held.dispatch, held.request, held.attempt));
    }

    /// At shutdown an instance gives its claims back: another takes them at once, not
    /// when the lease would have run out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closing_gives_claims_back_at_once() {
        let Some(db) = TestDb::create("postgres::closing_gives_claims_back").await else { return };
        let store = PgStore::connect(&Secret::new(db.url.clone())).await.unwrap();
        let long: Arc<dyn Queue> = Arc::new(PgQueue::start(store.clone(), Duration::from_secs(600), POLL, 4));
        let d = dispatch("orders", "42", None, 2);
        store.insert(d.clone()).await.unwrap();
        long.push(jobs(&d)).await.unwrap();
        next_job(&long, Duration::from_secs(5)).await;
        let (_, other) = instance(&db).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(500), other.next()).await.is_err(),
            "both jobs are held by the first instance"
        );
        long.close().await.unwrap();
        let mut taken =
            [next_job(&other, Duration::from_secs(5)).await, next_job(&other, Duration::from_secs(5)).await];
        taken.sort_by_key(|j| j.request);
        assert_eq!(taken.iter().map(|j| j.request).collect::<Vec<_>>(), vec![0, 1]);
    }

    /// A big dispatch the server refuses fails with the server's reason, and the next one
    /// is stored (the refused one's transaction was rolled back).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_dispatch_the_server_refuses_fails_and_the_next_is_stored() {
        let Some(b) = Backend::postgres("a_large_dispatch_the_server_refuses").await else { return };
        let bad = dispatch("orders", "bad\u{0}campaign", None, 1100);
        let e = b.store.insert(bad.clone()).await.expect_err("PostgreSQL refuses a NUL in text");
        assert!(e.0.contains("0x00"), "{e}");
        let good = dispatch("orders", "42", None, 1100);
        assert_eq!(b.store.insert(good.clone()).await.unwrap(), Inserted::Created);
        assert_eq!(one(&b.store, good.id).await.requests.len(), 1100);
        let all = b.store.select(Filter::All, false).await.unwrap();
        assert_eq!(all.iter().map(|d| d.id).collect::<Vec<_>>(), vec![good.id], "nothing of the refused one");
    }

    /// Of dispatches written together, one the server refuses (a NUL character, which
    /// PostgreSQL's text does not take) fails alone: the others are stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dispatch_the_server_refuses_fails_alone() {
        let Some(b) = Backend::postgres("a_dispatch_the_server_refuses").await else { return };
        let mut all: Vec<StoredDispatch> = (0..20).map(|i| dispatch("orders", &format!("c{i}"), None, 2)).collect();
        all.insert(10, dispatch("orders", "bad\u{0}campaign", None, 1));
        let answers = insert_at_once(&b.store, &all).await;
        for (d, answer) in all.iter().zip(&answers) {
            if d.campaign.contains('\0') {
                let e = answer.as_ref().expect_err("PostgreSQL refuses a NUL in text");
                assert!(e.0.contains("0x00"), "{e}");
            } else {
                assert_eq!(answer.as_ref().unwrap(), &Inserted::Created, "{}", d.campaign);
                assert_eq!(one(&b.store, d.id).await.requests.len(), 2);
            }
        }
    }

    /// A claim (and a lease renewal) changes no indexed column and finds room on its page
    /// (the schema keeps half of each page free), so PostgreSQL updates the row in place: a heap-only tuple update,
    /// with no index entry and only the changed bytes in its WAL. The server counts them
    /// once the instance's connections have closed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn claims_are_heap_only_updates() {
        const N: usize = 30;
        let Some(db) = TestDb::create("postgres::claims_are_heap_only_updates").await else { return };
        let (store, queue) = instance(&db).await;
        let d = dispatch("orders", "42", None, N);
        store.insert(d.clone()).await.unwrap();
        queue.push(jobs(&d)).await.unwrap();
        for _ in 0..N {
            next_job(&queue, Duration::from_secs(5)).await;
        }
        drop((queue, store));
        let client = sql_client(&db.url).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let (updates, hot) = loop {
            let row = client
                .query_one("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'requests'", &[])
                .await
                .unwrap();
            let counts: (i64, i64) = (row.get(0), row.get(1));
            if counts.0 >= N as i64 || Instant::now() > deadline {
                break counts;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // The claims, and the renewals of the leases while the jobs were held.
        assert!(updates >= N as i64, "{updates} updates of {N} requests claimed");
        assert_eq!(hot, updates, "every claim and renewal a heap-only update");
    }

    /// Two instances claiming from one table never hold the same job at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_instances_never_claim_the_same_job() {
        const N: usize = 200;
        let Some(a) = Backend::postgres("two_instances_never_claim").await else { return };
        let (_, other) = instance(a.db.as_ref().unwrap()).await;
        let d = dispatch("orders", "42", None, N);
        a.store.insert(d.clone()).await.unwrap();
        a.queue.push(jobs(&d)).await.unwrap();
        let take = |queue: Arc<dyn Queue>, store: Arc<dyn Store>, d: StoredDispatch| async move {
            let mut mine = Vec::new();
            while let Ok(Ok(job)) = tokio::time::timeout(Duration::from_secs(2), queue.next()).await {
                let ok = settlement(&d, job.request, None, NextState::Delivered);
                store.settle(&ok).await.unwrap();
                queue.complete(&job).await.unwrap();
                mine.push(job.request);
            }
            mine
        };
        let (x, y) = tokio::join!(
            take(a.queue.clone(), a.store.clone(), d.clone()),
            take(other.clone(), a.store.clone(), d.clone())
        );
        let mut all: Vec<u32> = x.iter().chain(&y).copied().collect();
        all.sort();
        assert_eq!(all, (0..N as u32).collect::<Vec<_>>(), "each job once: A took {}, B {}", x.len(), y.len());
    }

    /// A database made by the first release (attempts as rows of their own table) is
    /// migrated while an instance of that release keeps writing: what it wrote before and
    /// what it writes after both show up as the request's attempts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_version_1_database_is_migrated_while_an_old_instance_writes() {
        let Some(db) = TestDb::create("postgres::a_version_1_database_is_migrated").await else { return };
        let old = sql_client(&db.url).await;
        old.batch_execute(V1_SCHEMA).await.unwrap();
        let d = dispatch("orders", "42", Some("k"), 1);
        let id = d.id.as_uuid();
        // What the first release wrote: a dispatch, its request, an attempt row.
        old.execute("INSERT INTO dispatches VALUES ($1, 'orders', 3, '42', $2, 'k', 1)", &[&id, &millis(d.created_at)])
            .await
            .unwrap();
        old.execute(
            "INSERT INTO requests (dispatch, idx, profiles, target, body, status, attempt, due)
             VALUES ($1, 0, 10, NULL, '\\x7b7d', 0, 1, $2)",
            &[&id, &millis(d.created_at)],
        )
        .await
        .unwrap();
        let old_settle = |attempt: i32, status: i16| {
            let old = &old;
            async move {
                old.execute(
                    "WITH u AS (
                        UPDATE requests SET status = $2::smallint, attempt = $3::int + 1 WHERE dispatch = $1 AND idx = 0
                        RETURNING 1)
                     INSERT INTO attempts (dispatch, idx, attempt, at, latency_us, status, error, result)
                     SELECT $1, 0, $3::int, 1700000000000, 1234, 503, 'HTTP 503', 1",
                    &[&id, &status, &attempt],
                )
                .await
                .unwrap();
            }
        };
        old_settle(1, 0).await;

        let store = PgStore::connect(&Secret::new(db.url.clone())).await.unwrap();
        let got = one(&(store.clone() as Arc<dyn Store>), d.id).await;
        assert_eq!(got.requests[0].attempts.len(), 1, "the attempt written before the migration");
        // The old instance keeps settling through its own statement after the migration.
        old_settle(2, 0).await;
        let new = settlement(&d, 0, Some(tried(3, AttemptResult::Success, Some(200))), NextState::Delivered);
        store.settle(&new).await.unwrap();
        let got = one(&(store.clone() as Arc<dyn Store>), d.id).await;
        let attempts: Vec<(u32, Option<u16>)> =
            got.requests[0].attempts.iter().map(|a| (a.attempt, a.status)).collect();
        assert_eq!(attempts, vec![(1, Some(503)), (2, Some(503)), (3, Some(200))]);
        assert_eq!(got.requests[0].status, RequestStatus::Delivered);
        assert_eq!(store.by_idempotency_key("orders", "k").await.unwrap(), Some(d.id));
        // A second start finds the schema current.
        PgStore::connect(&Secret::new(db.url.clone())).await.unwrap();
        let versions = old.query("SELECT version FROM hookgate_migrations ORDER BY version", &[]).await.unwrap();
        assert_eq!(versions.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        // An instance of an earlier version may still run: bodies stay in their requests.
        let features = old.query_one("SELECT count(*) FROM hookgate_features", &[]).await.unwrap();
        assert_eq!(features.get::<_, i64>(0), 0);
        // Version 3: no index on the lease columns or of templates alone; room for updates.
        let dropped = old
            .query_one(
                "SELECT count(*) FROM pg_indexes WHERE indexname IN ('requests_lease', 'dispatches_template')",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(dropped.get::<_, i64>(0), 0);
        let options = old.query_one("SELECT reloptions FROM pg_class WHERE relname = 'requests'", &[]).await.unwrap();
        assert_eq!(options.get::<_, Option<Vec<String>>>(0), Some(vec!["fillfactor=50".to_string()]));
    }

    /// A database of schema version 3 (the last release's), where instances of that
    /// version may still run: the migration enables nothing, so a dispatch's requests keep
    /// their bodies in their rows, where version 3 reads them; once the operator enables
    /// shared bodies, a new dispatch keeps them in chunks, and every request reads back as
    /// it was sent, from either.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shared_bodies_wait_until_no_instance_of_version_3_runs() {
        let Some(db) = TestDb::create("postgres::shared_bodies_wait").await else { return };
        let sql = sql_client(&db.url).await;
        sql.batch_execute(V3_SCHEMA).await.unwrap();
        let in_rows = |id: DispatchId| {
            let sql = &sql;
            async move {
                let (rows, chunks) = (
                    "SELECT count(*) FROM requests WHERE dispatch = $1 AND body IS NOT NULL",
                    "SELECT count(*) FROM bodies WHERE $1 = ANY (dispatches)",
                );
                let count = async |q| sql.query_one(q, &[&id.as_uuid()]).await.unwrap().get::<_, i64>(0);
                (count(rows).await, count(chunks).await)
            }
        };
        let store: Arc<dyn Store> = PgStore::connect(&Secret::new(db.url.clone())).await.unwrap();
        let before = dispatch("orders", "42", None, 40);
        store.insert(before.clone()).await.unwrap();
        assert_eq!(in_rows(before.id).await, (40, 0), "version 3 finds every body in its request's row");

        sql.execute("INSERT INTO hookgate_features (name) VALUES ('shared_bodies')", &[]).await.unwrap();
        let store: Arc<dyn Store> = PgStore::connect(&Secret::new(db.url.clone())).await.unwrap();
        let after = dispatch("orders", "42", None, 40);
        store.insert(after.clone()).await.unwrap();
        let (rows, chunks) = in_rows(after.id).await;
        assert_eq!(rows, 0, "no request keeps a body of its own");
        assert!((2..40).contains(&chunks), "40 bodies of 2 KB share a few chunks, not {chunks}");

        for d in [&before, &after] {
            let got = one(&store, d.id).await;
            let bodies: Vec<_> = got.requests.iter().map(|r| r.body.clone()).collect();
            assert_eq!(bodies, d.requests.iter().map(|r| r.body.clone()).collect::<Vec<_>>());
            for i in [0, 17, 39] {
                let work = store.work(d.id, i).await.unwrap().unwrap();
                assert_eq!(work.request.body, d.requests[i as usize].body, "request {i}");
            }
        }
        assert_eq!(
            store.pending_body_bytes().await.unwrap(),
            Some(2 * before.requests.iter().map(|r| r.body.as_ref().unwrap().len() as u64).sum::<u64>())
        );
    }

    /// A database this version makes has no instance of an earlier one: dispatches share
    /// chunks of bodies from the start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_database_shares_bodies() {
        let Some(b) = Backend::postgres("a_new_database_shares_bodies").await else { return };
        let d = dispatch("orders", "42", None, 12);
        b.store.insert(d.clone()).await.unwrap();
        let sql = sql_client(&b.db.as_ref().unwrap().url).await;
        let chunks = sql.query_one("SELECT count(*) FROM bodies", &[]).await.unwrap().get::<_, i64>(0);
        assert_eq!(chunks, 2, "12 bodies of 2 KB, in chunks of up to 16 KB");
        let got = one(&b.store, d.id).await;
        assert_eq!(
            got.requests.iter().map(|r| r.body.clone()).collect::<Vec<_>>(),
            d.requests.iter().map(|r| r.body.clone()).collect::<Vec<_>>()
        );
    }

    /// A chunk of bodies is kept while one of its requests may still be sent (pending, or
    /// failed and so replayable) and goes with the delivery of the last of them, whether
    /// the others were delivered before or in the same statement.
    /// (On one thread, settlements made at once wait for the writer together: one statement.)
    #[tokio::test(flavor = "current_thread")]
    async fn a_chunk_of_bodies_goes_once_its_requests_are_delivered() {
        let Some(b) = Backend::postgres("a_chunk_goes_once_delivered").await else { return };
        let d = dispatch("orders", "42", None, 12);
        b.store.insert(d.clone()).await.unwrap();
        let sql = sql_client(&b.db.as_ref().unwrap().url).await;
        let chunks = async || {
            let rows = sql.query("SELECT firsts, lasts FROM bodies ORDER BY id", &[]).await.unwrap();
            rows.iter().map(|row| (row.get::<_, Vec<i32>>(0)[0], row.get::<_, Vec<i32>>(1)[0])).collect::<Vec<_>>()
        };
        assert_eq!(chunks().await, [(0, 7), (8, 11)], "12 bodies of 2 KB, in chunks of up to 16 KB");
        let delivered = |i| settlement(&d, i, Some(tried(1, AttemptResult::Success, Some(200))), NextState::Delivered);
        let failed = |i| settlement(&d, i, None, NextState::Failed { reason: "HTTP 400".into() });
        let settle_at_once = async |[x, y, z]: [Settlement; 3]| {
            let (x, y, z) = tokio::join!(b.store.settle(&x), b.store.settle(&y), b.store.settle(&z));
            for settled in [x, y, z] {
                settled.unwrap();
            }
        };

        for i in 0..7 {
            b.store.settle(&delivered(i)).await.unwrap();
        }
        b.store.settle(&failed(7)).await.unwrap();
        settle_at_once([delivered(8), delivered(9), failed(11)]).await;
        b.store.settle(&delivered(10)).await.unwrap();
        assert_eq!(chunks().await, [(0, 7), (8, 11)], "requests 7 and 11 failed: a replay sends them again");

        let requeued = b.store.requeue_failed(d.id).await.unwrap().unwrap();
        assert_eq!(requeued.iter().map(|r| r.request).collect::<Vec<_>>(), [7, 11]);
        for i in [7, 11] {
            let work = b.store.work(d.id, i).await.unwrap().unwrap();
            assert_eq!(work.request.body, d.requests[i as usize].body, "request {i}, replayed");
        }
        b.store.settle(&delivered(7)).await.unwrap();
        assert_eq!(chunks().await, [(8, 11)], "the first chunk's requests are all delivered");
        b.store.settle(&delivered(11)).await.unwrap();
        assert_eq!(chunks().await, [], "so are the second's");
        assert_eq!(b.store.pending_body_bytes().await.unwrap(), Some(0));

        // Every request of a chunk delivered by one statement.
        let d = dispatch("orders", "43", None, 3);
        b.store.insert(d.clone()).await.unwrap();
        assert_eq!(chunks().await, [(0, 2)]);
        settle_at_once([0, 1, 2].map(|i| settlement(&d, i, None, NextState::Delivered))).await;
        assert_eq!(chunks().await, [], "the chunk of requests delivered together");
    }

    /// Two instances delivering the last requests of a chunk at the same moment: whichever
    /// checks last sees both deliveries, so the chunk goes (each time, not only when they
    /// happen not to overlap).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_instances_delivering_a_chunks_last_requests_at_once_delete_it() {
        let Some(a) = Backend::postgres("two_instances_free_a_chunk").await else { return };
        let url = a.db.as_ref().unwrap().url.clone();
        let other: Arc<dyn Store> = PgStore::connect(&Secret::new(url.clone())).await.unwrap();
        let sql = sql_client(&url).await;
        for round in 0..10 {
            let d = dispatch("orders", "42", None, 4);
            a.store.insert(d.clone()).await.unwrap();
            let chunks = async || sql.query_one("SELECT count(*) FROM bodies", &[]).await.unwrap().get::<_, i64>(0);
            assert_eq!(chunks().await, 1, "round {round}: 4 bodies of 2 KB, one chunk");
            let delivered = |i| settlement(&d, i, None, NextState::Delivered);
            let (x, y) = tokio::join!(
                async { a.store.settle(&delivered(0)).await.and(a.store.settle(&delivered(1)).await) },
                async { other.settle(&delivered(2)).await.and(other.settle(&delivered(3)).await) },
            );
            x.unwrap();
            y.unwrap();
            assert_eq!(chunks().await, 0, "round {round}: every request of the chunk is delivered");
        }
    }

    /// Single-request dispatches accepted at the same moment (one group commit) share a
    /// chunk of bodies: each reads back its own; the chunk stays while one of them is
    /// pending, whatever becomes of the others, and goes with the last of them: delivered,
    /// or pruned once all are finished.
    /// (On one thread, inserts made at once wait for the writer together: one statement.)
    #[tokio::test(flavor = "current_thread")]
    async fn dispatches_accepted_together_share_a_chunk_of_bodies() {
        let Some(b) = Backend::postgres("dispatches_share_a_chunk").await else { return };
        let sql = sql_client(&b.db.as_ref().unwrap().url).await;
        let chunks = async || {
            let rows = sql.query("SELECT dispatches FROM bodies ORDER BY id", &[]).await.unwrap();
            rows.iter().map(|row| row.get::<_, Vec<uuid::Uuid>>(0)).collect::<Vec<_>>()
        };
        let own_bodies = async || {
            let row = sql.query_one("SELECT count(*) FROM requests WHERE body IS NOT NULL", &[]).await.unwrap();
            row.get::<_, i64>(0)
        };
        let insert_at_once = async || {
            let [x, y, z] = [0, 1, 2].map(|_| dispatch("orders", "42", None, 1));
            let (a, b2, c) =
                tokio::join!(b.store.insert(x.clone()), b.store.insert(y.clone()), b.store.insert(z.clone()));
            for inserted in [a, b2, c] {
                assert_eq!(inserted.unwrap(), Inserted::Created);
            }
            [x, y, z]
        };
        let delivered = |d: &StoredDispatch| settlement(d, 0, None, NextState::Delivered);
        let in_a_day = SystemTime::now() + Duration::from_secs(86_400);

        let [x, y, z] = insert_at_once().await;
        assert_eq!(chunks().await, [vec![x.id.as_uuid(), y.id.as_uuid(), z.id.as_uuid()]], "one chunk, in order");
        assert_eq!(own_bodies().await, 0);
        for d in [&x, &y, &z] {
            let work = b.store.work(d.id, 0).await.unwrap().unwrap();
            assert_eq!(work.request.body, d.requests[0].body, "dispatch {}", d.id);
        }
        b.store.settle(&delivered(&x)).await.unwrap();
        b.store.settle(&settlement(&z, 0, None, NextState::Failed { reason: "HTTP 400".into() })).await.unwrap();
        let pruned = b.store.prune_dispatches(in_a_day).await.unwrap();
        assert_eq!(pruned.iter().map(|d| d.id).collect::<Vec<_>>(), [x.id, z.id]);
        assert_eq!(chunks().await.len(), 1, "dispatch y is pending: its body stays");
        let work = b.store.work(y.id, 0).await.unwrap().unwrap();
        assert_eq!(work.request.body, y.requests[0].body, "y's body, its companions pruned");
        b.store.settle(&delivered(&y)).await.unwrap();
        assert_eq!(chunks().await.len(), 0, "y's delivery leaves the chunk unused");

        // All finished, one failed: the chunk goes when the prune takes them.
        let [x, y, z] = insert_at_once().await;
        b.store.settle(&delivered(&x)).await.unwrap();
        b.store.settle(&settlement(&y, 0, None, NextState::Failed { reason: "HTTP 400".into() })).await.unwrap();
        b.store.settle(&delivered(&z)).await.unwrap();
        assert_eq!(chunks().await.len(), 1, "y failed: a replay may send it again");
        assert_eq!(b.store.prune_dispatches(in_a_day).await.unwrap().len(), 4, "these 3, and the first y");
        assert_eq!(chunks().await.len(), 0, "the chunk of pruned dispatches");
    }

    /// The schema of the last release (version 3), as it made a new database.
    const V3_SCHEMA: &str = "
        CREATE TABLE hookgate_migrations (version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
        INSERT INTO hookgate_migrations (version) VALUES (1), (2), (3);
        CREATE TABLE dispatches (
            id UUID PRIMARY KEY, template TEXT NOT NULL, template_version BIGINT NOT NULL, campaign TEXT NOT NULL,
            created_at BIGINT NOT NULL, idempotency_key TEXT, skipped BIGINT NOT NULL,
            UNIQUE (template, idempotency_key));
        CREATE INDEX dispatches_campaign ON dispatches (campaign);
        CREATE INDEX dispatches_created ON dispatches (created_at);
        CREATE TABLE requests (
            dispatch UUID NOT NULL REFERENCES dispatches (id) ON DELETE CASCADE, idx INT NOT NULL,
            profiles BIGINT NOT NULL, target TEXT, body BYTEA, status SMALLINT NOT NULL, reason TEXT,
            attempt INT NOT NULL, due BIGINT NOT NULL, attempts JSONB NOT NULL DEFAULT '[]', lease_owner UUID,
            lease_until BIGINT, PRIMARY KEY (dispatch, idx)) WITH (fillfactor = 50);
        CREATE INDEX requests_due ON requests (due) WHERE status = 0;";

    /// The schema of the first release, as it migrated a new database.
    const V1_SCHEMA: &str = "
        CREATE TABLE hookgate_migrations (version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
        INSERT INTO hookgate_migrations (version) VALUES (1);
        CREATE TABLE dispatches (
            id UUID PRIMARY KEY, template TEXT NOT NULL, template_version BIGINT NOT NULL, campaign TEXT NOT NULL,
            created_at BIGINT NOT NULL, idempotency_key TEXT, skipped BIGINT NOT NULL,
            UNIQUE (template, idempotency_key));
        CREATE INDEX dispatches_campaign ON dispatches (campaign);
        CREATE INDEX dispatches_template ON dispatches (template);
        CREATE INDEX dispatches_created ON dispatches (created_at);
        CREATE TABLE requests (
            dispatch UUID NOT NULL REFERENCES dispatches (id) ON DELETE CASCADE, idx INT NOT NULL,
            profiles BIGINT NOT NULL, target TEXT, body BYTEA, status SMALLINT NOT NULL, reason TEXT,
            attempt INT NOT NULL, due BIGINT NOT NULL, lease_owner UUID, lease_until BIGINT,
            PRIMARY KEY (dispatch, idx));
        CREATE INDEX requests_due ON requests (due) WHERE status = 0;
        CREATE INDEX requests_lease ON requests (lease_owner) WHERE status = 0;
        CREATE TABLE attempts (
            id BIGSERIAL PRIMARY KEY, dispatch UUID NOT NULL REFERENCES dispatches (id) ON DELETE CASCADE,
            idx INT NOT NULL, attempt INT NOT NULL, at BIGINT NOT NULL, latency_us BIGINT NOT NULL, status INT,
            error TEXT, result SMALLINT NOT NULL);
        CREATE INDEX attempts_request ON attempts (dispatch, idx);";
}

/// Many jobs given back at the same moment (PostgreSQL writes them in one statement) come
/// back each once, as the attempt it was given back as.
async fn jobs_given_back_at_once_come_back_each_as_its_next_attempt(b: &Backend) {
    const N: usize = 24;
    let d = dispatch("orders", "42", None, N);
    b.store.insert(d.clone()).await.unwrap();
    b.queue.push(jobs(&d)).await.unwrap();
    let mut taken = Vec::new();
    for _ in 0..N {
        taken.push(next_job(&b.queue, Duration::from_secs(5)).await);
    }
    let due = SystemTime::now() + Duration::from_millis(300);
    let retries: Vec<_> = taken
        .into_iter()
        .map(|job| {
            let queue = b.queue.clone();
            let attempt = 2 + job.request;
            tokio::spawn(async move { queue.retry(Job { attempt, due, ..job }).await })
        })
        .collect();
    for retry in retries {
        retry.await.unwrap().unwrap();
    }
    let mut again = Vec::new();
    for _ in 0..N {
        let job = next_job(&b.queue, Duration::from_secs(5)).await;
        again.push((job.request, job.attempt));
    }
    again.sort();
    assert_eq!(again, (0..N as u32).map(|r| (r, 2 + r)).collect::<Vec<_>>());
    assert!(tokio::time::timeout(Duration::from_millis(300), b.queue.next()).await.is_err(), "each came back once");
}
