//! The shared store: PostgreSQL, for several `hookgate serve` instances on one queue.
//! Dispatches and requests are rows every instance reads and writes; the queue
//! ([`crate::queue::postgres::PgQueue`]) claims due requests from the same table through
//! the methods at the end of this file (its SQL is in [`super::sql`] with the store's).
//!
//! It works in sets: the dispatches waiting at a moment are written, with all their
//! requests, by one statement, and so are the settlements waiting ([`super::group_commit`]);
//! a claim takes many jobs with what it takes to send them (kept for [`Store::work`], so a
//! delivery reads nothing more). Every write is one statement, so it is atomic without a
//! transaction. The
//! connections are [`super::postgres_pool`]'s, with TLS as [`super::postgres_tls`] reads the
//! URL. Migrations run on start, under an advisory lock so instances starting together
//! apply them once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};
use uuid::Uuid;

use super::group_commit::{self, Groups, Submit};
use super::postgres_pool::{MAX_AGE, Pool, QUERY_TIMEOUT, QueryError, pg};
use super::postgres_tls::ConnectOptions;
use super::rows::{Columns as _, Dispatches, attempt_json, requeued_from, work_from};
use super::schema;
use super::sql::{self, Dialect};
use super::{
    Filter, Inserted, Requeued, Settlement, Store, StoredWork, from_millis, millis, next_columns, status_code,
    target_json,
};
use crate::model::{DispatchId, StoreError, StoredDispatch};
use crate::queue::Job;
use crate::secret::Secret;

/// An arbitrary, fixed key for the migrations' advisory lock.
const MIGRATION_LOCK: i64 = 0x686f_6f6b_6761_7465; // "hookgate"

/// Settlements written in one statement at most.
const MAX_SETTLE_BATCH: usize = 1024;

/// Requests of the dispatches inserted in one statement at most (a bigger dispatch goes alone).
const MAX_INSERT_REQUESTS: usize = 4096;

/// A group of this many requests or more is streamed with `COPY` rather than inserted.
const COPY_FROM: usize = 1024;

/// Brings the database to the current [schema] under an advisory lock, so instances
/// starting together migrate it once.
async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.connect().await?;
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg("migrations lock"))?;
    let result = async {
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS hookgate_migrations (
                    version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            )
            .await
            .map_err(pg("migrations"))?;
        let row = client
            .query_one("SELECT COALESCE(MAX(version), 0) FROM hookgate_migrations", &[])
            .await
            .map_err(pg("migrations"))?;
        let applied = row.get::<_, i32>(0) as u32;
        let Some(upgrade) = schema::upgrade(Dialect::Postgres, applied) else { return Ok(()) };
        let txn = client.transaction().await.map_err(pg("migrations"))?;
        txn.batch_execute(&upgrade).await.map_err(pg("migration"))?;
        for version in applied + 1..=schema::VERSION {
            txn.execute("INSERT INTO hookgate_migrations (version) VALUES ($1)", &[&(version as i32)])
                .await
                .map_err(pg("migration"))?;
        }
        txn.commit().await.map_err(pg("migration"))?;
        tracing::info!(from = applied, to = schema::VERSION, "migrated the PostgreSQL schema");
        Ok(())
    }
    .await;
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
    result
}

/// Writes the settlements waiting in one statement (one transaction), answers them all,
/// and starts again: outcomes are group-committed, as SQLite's writer does. A request
/// appears once a statement; a second settlement of it waits for the next.
async fn settle_loop(pool: Arc<Pool>, mut groups: Groups<Settlement, Result<(), StoreError>>) {
    loop {
        let mut seen = HashSet::new();
        let group = groups.next(|s| seen.len() < MAX_SETTLE_BATCH && seen.insert((s.dispatch, s.request)));
        let Some(group) = group.await else { return };
        let result = settle_many(&pool, group.iter().map(|w| &w.item)).await;
        for waiting in group {
            waiting.answer(result.clone());
        }
    }
}

/// A dispatch's row and its requests' columns, as the group insert takes them.
struct NewDispatch {
    id: Uuid,
    template: String,
    version: i64,
    campaign: String,
    created: i64,
    key: Option<String>,
    skipped: i64,
    requests: RequestColumns,
}

/// Requests as columns, each naming its dispatch.
#[derive(Default)]
struct RequestColumns {
    dispatches: Vec<Uuid>,
    indexes: Vec<i32>,
    profiles: Vec<i64>,
    targets: Vec<Option<String>>,
    bodies: Vec<Option<Bytes>>,
    statuses: Vec<i16>,
    attempts: Vec<i32>,
    dues: Vec<i64>,
}

impl NewDispatch {
    fn of(d: &StoredDispatch) -> Self {
        let id = d.id.as_uuid();
        let n = d.requests.len();
        let requests = RequestColumns {
            dispatches: vec![id; n],
            indexes: (0..n as i32).collect(),
            profiles: d.requests.iter().map(|r| r.profiles as i64).collect(),
            targets: d.requests.iter().map(|r| target_json(&r.target)).collect(),
            bodies: d.requests.iter().map(|r| r.body.clone()).collect(),
            statuses: d.requests.iter().map(|r| status_code(&r.status)).collect(),
            attempts: d.requests.iter().map(|r| r.attempt as i32).collect(),
            dues: d.requests.iter().map(|r| millis(r.due)).collect(),
        };
        Self {
            id,
            template: d.template.clone(),
            version: d.template_version as i64,
            campaign: d.campaign.clone(),
            created: millis(d.created_at),
            key: d.idempotency_key.clone(),
            skipped: d.skipped as i64,
            requests,
        }
    }
}

impl RequestColumns {
    fn extend(&mut self, other: &Self) {
        self.dispatches.extend_from_slice(&other.dispatches);
        self.indexes.extend_from_slice(&other.indexes);
        self.profiles.extend_from_slice(&other.profiles);
        self.targets.extend_from_slice(&other.targets);
        self.bodies.extend_from_slice(&other.bodies);
        self.statuses.extend_from_slice(&other.statuses);
        self.attempts.extend_from_slice(&other.attempts);
        self.dues.extend_from_slice(&other.dues);
    }
}

/// Inserts the dispatches waiting in one statement (group commit: under load, many
/// single-profile dispatches share a transaction), and answers each whether it was stored.
/// A group of [`COPY_FROM`] requests or more streams them instead ([`copy_many`]), on a
/// connection of this writer's own. Should the server refuse the statement, each dispatch
/// is tried alone, so that only the one it refuses fails.
async fn insert_loop(pool: Arc<Pool>, mut groups: Groups<NewDispatch, Result<bool, StoreError>>) {
    let mut copier: Option<(Client, Instant)> = None;
    loop {
        let (mut keys, mut requests) = (HashSet::new(), 0);
        let group = groups.next(|d| {
            let n = d.requests.indexes.len();
            let fits = requests + n <= MAX_INSERT_REQUESTS
                && d.key.as_ref().is_none_or(|key| keys.insert((d.template.clone(), key.clone())));
            requests += if fits { n } else { 0 };
            fits
        });
        let Some(group) = group.await else { return };
        let items: Vec<&NewDispatch> = group.iter().map(|w| &w.item).collect();
        match insert_group(&pool, &mut copier, &items).await {
            Ok(stored) => {
                for waiting in group {
                    let created = stored.contains(&waiting.item.id);
                    waiting.answer(Ok(created));
                }
            }
            Err(QueryError::Refused(_)) if group.len() > 1 => {
                for waiting in group {
                    let alone = insert_group(&pool, &mut copier, &[&waiting.item]).await;
                    waiting.answer(alone.map(|stored| !stored.is_empty()).map_err(QueryError::into_store));
                }
            }
            Err(e) => {
                let e = e.into_store();
                for waiting in group {
                    waiting.answer(Err(e.clone()));
                }
            }
        }
    }
}

/// Stores a group of dispatches: by [`copy_many`] when it is big, else by [`insert_many`].
async fn insert_group(
    pool: &Pool,
    copier: &mut Option<(Client, Instant)>,
    dispatches: &[&NewDispatch],
) -> Result<HashSet<Uuid>, QueryError> {
    if dispatches.iter().map(|d| d.requests.indexes.len()).sum::<usize>() < COPY_FROM {
        return insert_many(pool, dispatches).await;
    }
    // Replaced when it broke, and recycled as the pool's are.
    let client = match copier {
        Some((client, born)) if !client.is_closed() && born.elapsed() < MAX_AGE => client,
        _ => &mut copier.insert((pool.connect().await.map_err(QueryError::Unanswered)?, Instant::now())).0,
    };
    match tokio::time::timeout(QUERY_TIMEOUT, copy_many(client, dispatches)).await {
        Ok(Ok(stored)) => Ok(stored),
        Ok(Err(e)) => {
            if matches!(e, QueryError::Unanswered(_)) {
                *copier = None;
            }
            Err(e)
        }
        Err(_) => {
            *copier = None;
            Err(QueryError::Unanswered(StoreError(format!("postgres: no answer within {QUERY_TIMEOUT:?}"))))
        }
    }
}

/// Stores `dispatches` in one transaction: their rows by one statement, then the requests
/// of those stored streamed with binary `COPY`. Measured for 50,000 requests of 1 KB, the
/// server spends 0.76 s on it instead of 1.34 s for the multi-row insert, and writes a WAL
/// record a page rather than a row (1,249 bytes a request instead of 1,281).
async fn copy_many(client: &mut Client, dispatches: &[&NewDispatch]) -> Result<HashSet<Uuid>, QueryError> {
    let txn = client.transaction().await.map_err(QueryError::from_pg("begin"))?;
    let rows = {
        let c = DispatchColumns::of(dispatches);
        let params: [&(dyn ToSql + Sync); 7] =
            [&c.ids, &c.templates, &c.versions, &c.campaigns, &c.created, &c.keys, &c.skipped];
        txn.query(sql::INSERT_DISPATCH_ROWS.get(Dialect::Postgres), &params)
            .await
            .map_err(QueryError::from_pg("query"))?
    };
    let stored: HashSet<Uuid> = rows.iter().map(|row| row.get::<_, Uuid>(0)).collect();
    if !stored.is_empty() {
        let sink = txn.copy_in(sql::COPY_REQUESTS.get(Dialect::Postgres)).await.map_err(QueryError::from_pg("copy"))?;
        let writer = BinaryCopyInWriter::new(sink, &sql::COPY_REQUEST_TYPES);
        tokio::pin!(writer);
        for d in dispatches.iter().filter(|d| stored.contains(&d.id)) {
            let r = &d.requests;
            for i in 0..r.indexes.len() {
                let body = r.bodies[i].as_deref();
                let row: [&(dyn ToSql + Sync); 8] = [
                    &r.dispatches[i],
                    &r.indexes[i],
                    &r.profiles[i],
                    &r.targets[i],
                    &body,
                    &r.statuses[i],
                    &r.attempts[i],
                    &r.dues[i],
                ];
                writer.as_mut().write(&row).await.map_err(QueryError::from_pg("copy"))?;
            }
        }
        writer.as_mut().finish().await.map_err(QueryError::from_pg("copy"))?;
        txn.batch_execute("SELECT pg_notify('hookgate_jobs', '')").await.map_err(QueryError::from_pg("notify"))?;
    }
    txn.commit().await.map_err(QueryError::from_pg("commit"))?;
    Ok(stored)
}

/// The dispatches' own columns, as the inserts take them.
struct DispatchColumns<'a> {
    ids: Vec<Uuid>,
    templates: Vec<&'a str>,
    versions: Vec<i64>,
    campaigns: Vec<&'a str>,
    created: Vec<i64>,
    keys: Vec<Option<&'a str>>,
    skipped: Vec<i64>,
}

impl<'a> DispatchColumns<'a> {
    fn of(dispatches: &[&'a NewDispatch]) -> Self {
        Self {
            ids: dispatches.iter().map(|d| d.id).collect(),
            templates: dispatches.iter().map(|d| d.template.as_str()).collect(),
            versions: dispatches.iter().map(|d| d.version).collect(),
            campaigns: dispatches.iter().map(|d| d.campaign.as_str()).collect(),
            created: dispatches.iter().map(|d| d.created).collect(),
            keys: dispatches.iter().map(|d| d.key.as_deref()).collect(),
            skipped: dispatches.iter().map(|d| d.skipped).collect(),
        }
    }
}

/// Stores `dispatches` with their requests in one statement; returns the ids stored (a
/// dispatch whose idempotency key is taken is not).
async fn insert_many(pool: &Pool, dispatches: &[&NewDispatch]) -> Result<HashSet<Uuid>, QueryError> {
    let c = DispatchColumns::of(dispatches);
    let merged;
    let r = match dispatches {
        [one] => &one.requests,
        _ => {
            let mut all = RequestColumns::default();
            for d in dispatches {
                all.extend(&d.requests);
            }
            merged = all;
            &merged
        }
    };
    let bodies: Vec<Option<&[u8]>> = r.bodies.iter().map(|b| b.as_deref()).collect();
    let params: [&(dyn ToSql + Sync); 15] = [
        &c.ids,
        &c.templates,
        &c.versions,
        &c.campaigns,
        &c.created,
        &c.keys,
        &c.skipped,
        &r.dispatches,
        &r.indexes,
        &r.profiles,
        &r.targets,
        &bodies,
        &r.statuses,
        &r.attempts,
        &r.dues,
    ];
    let rows = pool.try_query(&sql::INSERT_DISPATCHES, &params).await?;
    Ok(rows.iter().map(|row| row.get::<_, Uuid>(0)).collect())
}

/// Gives back the held jobs waiting in one statement, as [`settle_loop`] writes outcomes.
async fn release_loop(pool: Arc<Pool>, mut groups: Groups<Job, Result<(), StoreError>>) {
    loop {
        let mut seen = HashSet::new();
        let group = groups.next(|j| seen.len() < MAX_SETTLE_BATCH && seen.insert((j.dispatch, j.request)));
        let Some(group) = group.await else { return };
        let jobs = group.iter().map(|w| &w.item);
        let dispatches: Vec<Uuid> = jobs.clone().map(|j| j.dispatch.as_uuid()).collect();
        let indexes: Vec<i32> = jobs.clone().map(|j| j.request as i32).collect();
        let attempts: Vec<i32> = jobs.clone().map(|j| j.attempt as i32).collect();
        let dues: Vec<i64> = jobs.map(|j| millis(j.due)).collect();
        let now = millis(SystemTime::now());
        let params: [&(dyn ToSql + Sync); 5] = [&dispatches, &indexes, &attempts, &dues, &now];
        let result = pool.query(&sql::RELEASE_MANY, &params).await.map(drop);
        for waiting in group {
            waiting.answer(result.clone());
        }
    }
}

async fn settle_many<'a>(pool: &Pool, settlements: impl Iterator<Item = &'a Settlement>) -> Result<(), StoreError> {
    let (mut dispatches, mut indexes, mut statuses, mut reasons, mut attempts, mut dues, mut tried) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for s in settlements {
        let (status, reason, attempt, due) = next_columns(&s.next);
        dispatches.push(s.dispatch.as_uuid());
        indexes.push(s.request as i32);
        statuses.push(status);
        reasons.push(reason.map(str::to_string));
        attempts.push(attempt.map(|a| a as i32));
        dues.push(due);
        tried.push(s.attempt.as_ref().map(attempt_json));
    }
    let params: [&(dyn ToSql + Sync); 7] = [&dispatches, &indexes, &statuses, &reasons, &attempts, &dues, &tried];
    pool.query(&sql::SETTLE_MANY, &params).await.map(drop)
}

pub struct PgStore {
    pool: Arc<Pool>,
    inserter: Submit<NewDispatch, Result<bool, StoreError>>,
    settler: Submit<Settlement, Result<(), StoreError>>,
    releaser: Submit<Job, Result<(), StoreError>>,
    /// What a claim read of the jobs it took, until a worker asks for it ([`Store::work`]);
    /// dropped when this instance changes the request (settles, requeues or prunes it).
    prefetched: Mutex<HashMap<(DispatchId, u32), StoredWork>>,
    /// The group-commit writers of inserts, settlements and releases.
    writers: [tokio::task::JoinHandle<()>; 3],
}

impl Drop for PgStore {
    fn drop(&mut self) {
        for writer in &self.writers {
            writer.abort();
        }
    }
}

impl PgStore {
    /// Connects (as the URL's `sslmode` says) and runs the migrations.
    pub async fn connect(url: &Secret) -> Result<Arc<Self>, StoreError> {
        let pool = Arc::new(Pool::new(ConnectOptions::parse(url)?));
        migrate(&pool).await?;
        let (inserter, inserts) = group_commit::channel();
        let (settler, settlements) = group_commit::channel();
        let (releaser, releases) = group_commit::channel();
        let writers = [
            tokio::spawn(insert_loop(pool.clone(), inserts)),
            tokio::spawn(settle_loop(pool.clone(), settlements)),
            tokio::spawn(release_loop(pool.clone(), releases)),
        ];
        Ok(Arc::new(Self { pool, inserter, settler, releaser, prefetched: Mutex::default(), writers }))
    }

    fn prefetched(&self) -> std::sync::MutexGuard<'_, HashMap<(DispatchId, u32), StoredWork>> {
        self.prefetched.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The dispatches a dispatch select returned.
fn dispatches(rows: &[Row]) -> Result<Vec<StoredDispatch>, StoreError> {
    let mut found = Dispatches::default();
    for row in rows {
        found.push(row)?;
    }
    Ok(found.done())
}

#[async_trait]
impl Store for PgStore {
    /// Waits for the next group commit of the dispatches waiting.
    async fn insert(&self, d: &StoredDispatch) -> Result<Inserted, StoreError> {
        let stopped = || StoreError("postgres: the dispatch writer has stopped".into());
        if self.inserter.call(NewDispatch::of(d)).await.ok_or_else(stopped)?? {
            return Ok(Inserted::Created);
        }
        let key = d.idempotency_key.as_deref().unwrap_or_default();
        match self.by_idempotency_key(&d.template, key).await? {
            Some(existing) => Ok(Inserted::Existing(existing)),
            None => Err(StoreError("the dispatch was neither stored nor found by its idempotency key".into())),
        }
    }

    /// Waits for the next group commit of the settlements waiting.
    async fn settle(&self, s: &Settlement) -> Result<(), StoreError> {
        let stopped = || StoreError("postgres: the settlement writer has stopped".into());
        let written = self.settler.call(s.clone()).await.ok_or_else(stopped)?;
        // After the write: a claim that read the row before it may have kept it meanwhile.
        self.prefetched().remove(&(s.dispatch, s.request));
        written
    }

    async fn requeue_failed(&self, id: DispatchId) -> Result<Option<Vec<Requeued>>, StoreError> {
        let uuid = id.as_uuid();
        if self.pool.query(&sql::DISPATCH_EXISTS, &[&uuid]).await?.is_empty() {
            return Ok(None);
        }
        let rows = self.pool.query(&sql::REQUEUE_FAILED, &[&uuid, &millis(SystemTime::now())]).await?;
        let mut requeued = rows.iter().map(|r| requeued_from(r)).collect::<Result<Vec<_>, _>>()?;
        requeued.sort_by_key(|r| r.request);
        if !requeued.is_empty() {
            self.prefetched().retain(|(dispatch, _), _| *dispatch != id);
            self.pool.query(&sql::NOTIFY_JOBS, &[]).await?;
        }
        Ok(Some(requeued))
    }

    async fn by_idempotency_key(&self, template: &str, key: &str) -> Result<Option<DispatchId>, StoreError> {
        let rows = self.pool.query(&sql::BY_IDEMPOTENCY_KEY, &[&template, &key]).await?;
        rows.first().map(|r| r.id_at(0)).transpose()
    }

    /// What the claim of the job read, or else a query.
    async fn work(&self, id: DispatchId, request: u32) -> Result<Option<StoredWork>, StoreError> {
        if let Some(work) = self.prefetched().remove(&(id, request)) {
            return Ok(Some(work));
        }
        let rows = self.pool.query(&sql::WORK, &[&id.as_uuid(), &(request as i32)]).await?;
        rows.first().map(|r| work_from(r, 0)).transpose()
    }

    async fn select(&self, filter: Filter<'_>, bodies: bool) -> Result<Vec<StoredDispatch>, StoreError> {
        let statement = &sql::select(&filter)[usize::from(bodies)];
        let rows = match filter {
            Filter::All => self.pool.query(statement, &[]).await?,
            Filter::Id(id) => self.pool.query(statement, &[&id.as_uuid()]).await?,
            Filter::Campaign(c) => self.pool.query(statement, &[&c]).await?,
            Filter::Template(t) => self.pool.query(statement, &[&t]).await?,
        };
        dispatches(&rows)
    }

    async fn prune(&self, before: SystemTime) -> Result<u64, StoreError> {
        Ok(self.prune_dispatches(before).await?.len() as u64)
    }

    async fn prune_dispatches(&self, before: SystemTime) -> Result<Vec<StoredDispatch>, StoreError> {
        let before = millis(before);
        let found = dispatches(&self.pool.query(&sql::SELECT_FINISHED_BEFORE, &[&before]).await?)?;
        if found.is_empty() {
            return Ok(found);
        }
        // Another instance may have pruned some meanwhile, or requeued one: only what this
        // delete removed is returned.
        let deleted: HashSet<Uuid> =
            (self.pool.query(&sql::DELETE_FINISHED_BEFORE, &[&before]).await?.iter()).map(|r| r.get(0)).collect();
        self.prefetched().retain(|(dispatch, _), _| !deleted.contains(&dispatch.as_uuid()));
        Ok(found.into_iter().filter(|d| deleted.contains(&d.id.as_uuid())).collect())
    }

    async fn pending_body_bytes(&self) -> Result<Option<u64>, StoreError> {
        let rows = self.pool.query(&sql::PENDING_BODY_BYTES, &[]).await?;
        Ok(Some(rows.first().map(|r| r.int_at(0)).transpose()?.unwrap_or(0).max(0) as u64))
    }

    fn shared(&self) -> bool {
        true
    }
}

/// What the shared queue asks of the table: claims, leases, counts, wake-ups.
impl PgStore {
    /// Claims up to `limit` due jobs for `owner`, leased until `now + lease`, by due time;
    /// what it takes to send them is read in the same statement and kept for [`Store::work`].
    pub(crate) async fn claim(&self, owner: Uuid, lease: Duration, limit: i64) -> Result<Vec<Job>, StoreError> {
        let now = SystemTime::now();
        let rows = self.pool.query(&sql::CLAIM, &[&owner, &millis(now + lease), &millis(now), &limit]).await?;
        let mut jobs = Vec::with_capacity(rows.len());
        let mut prefetched = Vec::with_capacity(rows.len());
        for r in &rows {
            let job = Job {
                dispatch: r.id_at(0)?,
                request: r.int_at(1)? as u32,
                attempt: r.int_at(2)? as u32,
                due: from_millis(r.int_at(3)?),
            };
            prefetched.push(((job.dispatch, job.request), work_from(r, 4)?));
            jobs.push(job);
        }
        self.prefetched().extend(prefetched);
        jobs.sort_by_key(|j| j.due);
        Ok(jobs)
    }

    /// Gives a held job back to the table as it is now (its attempt and due time), with
    /// the others given back at the same moment (group commit); other instances hear of it
    /// when it is due now.
    pub(crate) async fn release(&self, job: &Job) -> Result<(), StoreError> {
        self.prefetched().remove(&(job.dispatch, job.request));
        let stopped = || StoreError("postgres: the release writer has stopped".into());
        self.releaser.call(job.clone()).await.ok_or_else(stopped)?
    }

    /// Extends the leases `owner` holds on `jobs` to `lease` from now.
    pub(crate) async fn renew(
        &self,
        owner: Uuid,
        jobs: &[(DispatchId, u32)],
        lease: Duration,
    ) -> Result<(), StoreError> {
        let dispatches: Vec<Uuid> = jobs.iter().map(|(d, _)| d.as_uuid()).collect();
        let indexes: Vec<i32> = jobs.iter().map(|(_, i)| *i as i32).collect();
        let until = millis(SystemTime::now() + lease);
        self.pool.query(&sql::RENEW, &[&owner, &until, &dispatches, &indexes]).await.map(drop)
    }

    /// Gives back every job `owner` holds, to be claimed again at once.
    pub(crate) async fn give_back(&self, owner: Uuid) -> Result<(), StoreError> {
        self.prefetched().clear();
        self.pool.query(&sql::GIVE_BACK, &[&owner]).await?;
        self.pool.query(&sql::NOTIFY_JOBS, &[]).await.map(drop)
    }

    /// When the next job may be claimed (due, or its lease run out); `None` when nothing is pending.
    pub(crate) async fn next_due(&self) -> Result<Option<SystemTime>, StoreError> {
        let rows = self.pool.query(&sql::NEXT_DUE, &[]).await?;
        Ok(rows.first().map(|r| r.int(0)).transpose()?.flatten().map(from_millis))
    }

    /// Wakes `wake` whenever an instance makes work due now, until the store is dropped.
    pub(crate) fn listen(&self, wake: Arc<Notify>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.pool.clone().listen(wake))
    }

    /// Requests pending in the whole cluster (waiting or being sent).
    pub(crate) async fn pending_requests(&self) -> Result<usize, StoreError> {
        let rows = self.pool.query(&sql::PENDING_REQUESTS, &[]).await?;
        Ok(rows.first().map(|r| r.int_at(0)).transpose()?.unwrap_or(0).max(0) as usize)
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        self.pool.query(&sql::PING, &[]).await.map(drop)
    }
}
