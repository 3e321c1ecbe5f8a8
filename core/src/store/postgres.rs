//! The shared store: PostgreSQL, for several `hookgate serve` instances on one queue.
//! Dispatches and requests are rows every instance reads and writes; the queue
//! ([`crate::queue::postgres::PgQueue`]) claims due requests from the same table through
//! the methods at the end of this file (its SQL is in [`super::sql`] with the store's).
//!
//! It works in sets: the dispatches waiting at a moment are written, with all their
//! requests, by one statement, and so are the settlements waiting ([`super::postgres_writers`]);
//! a claim takes many jobs with what it takes to send them (kept for [`Store::work`], so a
//! delivery reads nothing more). Every write is one statement, so it is atomic without a
//! transaction. The
//! connections are [`super::postgres_pool`]'s, with TLS as [`super::postgres_tls`] reads the
//! URL. Migrations run on start, under an advisory lock so instances starting together
//! apply them once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio_postgres::Row;
use uuid::Uuid;

use super::group_commit::{self, Submit};
use super::postgres_pool::{Pool, pg};
use super::postgres_tls::ConnectOptions;
use super::postgres_writers::{NewDispatch, insert_loop, release_loop, settle_loop};
use super::rows::{Columns as _, Dispatches, requeued_from, work_from};
use super::schema;
use super::sql::{self, Dialect};
use super::{Filter, Inserted, Requeued, Settlement, Store, StoredWork, from_millis, millis};
use crate::model::{DispatchId, StoreError, StoredDispatch};
use crate::queue::Job;
use crate::secret::Secret;

/// An arbitrary, fixed key for the migrations' advisory lock.
const MIGRATION_LOCK: i64 = 0x686f_6f6b_6761_7465; // "hookgate"

/// Brings the database to the current [schema] under an advisory lock, so instances
/// starting together migrate it once; then reads whether [`schema::SHARED_BODIES`] is
/// enabled, on the same connection.
async fn migrate(pool: &Pool) -> Result<bool, StoreError> {
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
    result?;
    let row = client
        .query_one(sql::FEATURE_ENABLED.get(Dialect::Postgres), &[&schema::SHARED_BODIES])
        .await
        .map_err(pg("features"))?;
    Ok(row.get(0))
}

pub struct PgStore {
    pool: Arc<Pool>,
    shared_bodies: SharedBodies,
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
        let shared_bodies = SharedBodies::new(migrate(&pool).await?);
        let (inserter, inserts) = group_commit::channel();
        let (settler, settlements) = group_commit::channel();
        let (releaser, releases) = group_commit::channel();
        let writers = [
            tokio::spawn(insert_loop(pool.clone(), inserts)),
            tokio::spawn(settle_loop(pool.clone(), settlements)),
            tokio::spawn(release_loop(pool.clone(), releases)),
        ];
        Ok(Arc::new(Self { pool, shared_bodies, inserter, settler, releaser, prefetched: Mutex::default(), writers }))
    }

    fn prefetched(&self) -> std::sync::MutexGuard<'_, HashMap<(DispatchId, u32), StoredWork>> {
        self.prefetched.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether this instance writes a dispatch's bodies in chunks ([`schema::SHARED_BODIES`]):
/// read at start and, while it is not enabled, again at most once a minute when a dispatch
/// comes, so that enabling it reaches every instance without a restart.
struct SharedBodies {
    enabled: AtomicBool,
    /// When the table was last read.
    read_at: Mutex<Instant>,
}

impl SharedBodies {
    const REREAD: Duration = Duration::from_secs(60);

    fn new(enabled: bool) -> Self {
        if !enabled {
            tracing::info!(
                "each request of a dispatch keeps its own body, as instances of schema version 3 read them; once \
                 none runs, let dispatches share chunks of bodies (less to write and store): \
                 INSERT INTO hookgate_features (name) VALUES ('{}')",
                schema::SHARED_BODIES
            );
        }
        Self { enabled: AtomicBool::new(enabled), read_at: Mutex::new(Instant::now()) }
    }

    async fn enabled_in(pool: &Pool) -> Result<bool, StoreError> {
        let rows = pool.query(&sql::FEATURE_ENABLED, &[&schema::SHARED_BODIES]).await?;
        Ok(rows.first().is_some_and(|r| r.get::<_, bool>(0)))
    }

    /// Whether a dispatch is written now with shared bodies.
    async fn now(&self, pool: &Pool) -> bool {
        if self.enabled.load(Ordering::Relaxed) {
            return true;
        }
        {
            let mut read_at = self.read_at.lock().unwrap_or_else(|e| e.into_inner());
            if read_at.elapsed() < Self::REREAD {
                return false;
            }
            *read_at = Instant::now();
        }
        match Self::enabled_in(pool).await {
            Ok(true) => {
                tracing::info!("dispatches now share chunks of bodies");
                self.enabled.store(true, Ordering::Relaxed);
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the enabled features; bodies are kept per request");
                false
            }
        }
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
    async fn insert(&self, d: StoredDispatch) -> Result<Inserted, StoreError> {
        let stopped = || StoreError("postgres: the dispatch writer has stopped".into());
        let share = self.shared_bodies.now(&self.pool).await;
        if self.inserter.call(NewDispatch::of(&d, share)).await.ok_or_else(stopped)?? {
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
        // The chunks of bodies they leave unused: UUIDv7s below the cut-off time's.
        let written_before = Uuid::from_u128((before.max(0) as u128) << 80);
        self.pool.query(&sql::DELETE_UNUSED_BODIES, &[&written_before]).await?;
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
