//! The shared store: PostgreSQL, for several `hookgate serve` instances on one queue.
//! Dispatches and requests are rows every instance reads and writes; the queue
//! ([`crate::queue::postgres::PgQueue`]) claims due requests from the same table through
//! the methods at the end of this file (its SQL is in [`super::sql`] with the store's).
//! Every write is one statement, so it is atomic without a transaction. Migrations run on
//! start, under an advisory lock so instances starting together apply them once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};
use tracing::warn;
use uuid::Uuid;

use super::rows::{Columns as _, Dispatches, attempt_json, requeued_from, work_from};
use super::schema;
use super::sql::{self, Dialect, Sql};
use super::{
    Filter, Inserted, Requeued, Settlement, Store, StoredWork, from_millis, millis, next_columns, status_code,
    target_json,
};
use crate::model::{DispatchId, StoreError, StoredDispatch};
use crate::queue::Job;
use crate::secret::Secret;

/// Connections the pool keeps (each pipelines many queries).
const CONNECTIONS: usize = 4;

/// An arbitrary, fixed key for the migrations' advisory lock.
const MIGRATION_LOCK: i64 = 0x686f_6f6b_6761_7465; // "hookgate"

pub(crate) fn pg(context: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| match e.as_db_error() {
        // The server's own message says what is wrong ("db error" alone does not).
        Some(db) => StoreError(format!("postgres: {context}: {} ({})", db.message(), db.code().code())),
        None => StoreError(format!("postgres: {context}: {e}")),
    }
}

/// One connection and its prepared statements.
struct Conn {
    client: Client,
    /// By the address of their [`Sql`].
    statements: std::sync::Mutex<HashMap<usize, Statement>>,
}

/// A few connections, used round-robin; a broken one is replaced on next use.
struct Pool {
    config: tokio_postgres::Config,
    slots: Vec<tokio::sync::Mutex<Option<Arc<Conn>>>>,
    next: AtomicUsize,
}

impl Pool {
    fn new(url: &Secret) -> Result<Self, StoreError> {
        // The URL may hold a password: the error names the setting, not the value.
        let config: tokio_postgres::Config =
            url.expose().parse().map_err(|e| StoreError(format!("`queue` is not a valid PostgreSQL URL: {e}")))?;
        Ok(Self {
            config,
            slots: (0..CONNECTIONS).map(|_| tokio::sync::Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        })
    }

    async fn connect(&self) -> Result<Client, StoreError> {
        let (client, connection) = self.config.connect(NoTls).await.map_err(pg("connect"))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                warn!("postgres connection closed: {e}");
            }
        });
        Ok(client)
    }

    async fn conn(&self) -> Result<Arc<Conn>, StoreError> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let mut slot = slot.lock().await;
        if let Some(conn) = &*slot
            && !conn.client.is_closed()
        {
            return Ok(conn.clone());
        }
        let conn = Arc::new(Conn { client: self.connect().await?, statements: Default::default() });
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `sql` (prepared once per connection) and returns its rows.
    async fn query(&self, sql: &'static Sql, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let conn = self.conn().await?;
        let key = sql as *const Sql as usize;
        let cached = conn.statements.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
        let statement = match cached {
            Some(s) => s,
            None => {
                let s = conn.client.prepare(sql.get(Dialect::Postgres)).await.map_err(pg("prepare"))?;
                conn.statements.lock().unwrap_or_else(|e| e.into_inner()).insert(key, s.clone());
                s
            }
        };
        conn.client.query(&statement, params).await.map_err(pg("query"))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.connect().await?;
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
            let upgrade = match applied {
                0 => schema::create(Dialect::Postgres),
                1 => schema::POSTGRES_FROM_V1.to_string(),
                _ => return Ok(()),
            };
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
}

pub struct PgStore {
    pool: Pool,
}

impl PgStore {
    /// Connects and runs the migrations.
    pub async fn connect(url: &Secret) -> Result<Arc<Self>, StoreError> {
        let pool = Pool::new(url)?;
        pool.migrate().await?;
        Ok(Arc::new(Self { pool }))
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
    async fn insert(&self, d: &StoredDispatch) -> Result<Inserted, StoreError> {
        let id = d.id.as_uuid();
        let indexes: Vec<i32> = (0..d.requests.len() as i32).collect();
        let profiles: Vec<i64> = d.requests.iter().map(|r| r.profiles as i64).collect();
        let targets: Vec<Option<String>> = d.requests.iter().map(|r| target_json(&r.target)).collect();
        let bodies: Vec<Option<&[u8]>> = d.requests.iter().map(|r| r.body.as_deref()).collect();
        let statuses: Vec<i16> = d.requests.iter().map(|r| status_code(&r.status)).collect();
        let attempts: Vec<i32> = d.requests.iter().map(|r| r.attempt as i32).collect();
        let dues: Vec<i64> = d.requests.iter().map(|r| millis(r.due)).collect();
        let (version, created, skipped) = (d.template_version as i64, millis(d.created_at), d.skipped as i64);
        let rows = self
            .pool
            .query(
                &sql::INSERT_DISPATCH_WITH_REQUESTS,
                &[
                    &id,
                    &d.template,
                    &version,
                    &d.campaign,
                    &created,
                    &d.idempotency_key,
                    &skipped,
                    &indexes,
                    &profiles,
                    &targets,
                    &bodies,
                    &statuses,
                    &attempts,
                    &dues,
                ],
            )
            .await?;
        if rows.first().is_some_and(|r| r.get::<_, bool>(0)) {
            return Ok(Inserted::Created);
        }
        let key = d.idempotency_key.as_deref().unwrap_or_default();
        match self.by_idempotency_key(&d.template, key).await? {
            Some(existing) => Ok(Inserted::Existing(existing)),
            None => Err(StoreError("the dispatch was neither stored nor found by its idempotency key".into())),
        }
    }

    async fn settle(&self, s: &Settlement) -> Result<(), StoreError> {
        let (status, reason, attempt, due) = next_columns(&s.next);
        let attempt = attempt.map(|a| a as i32);
        let tried = s.attempt.as_ref().map(attempt_json);
        self.pool
            .query(
                &sql::SETTLE,
                &[&s.dispatch.as_uuid(), &(s.request as i32), &status, &reason, &attempt, &due, &tried],
            )
            .await?;
        Ok(())
    }

    async fn requeue_failed(&self, id: DispatchId) -> Result<Option<Vec<Requeued>>, StoreError> {
        let uuid = id.as_uuid();
        if self.pool.query(&sql::DISPATCH_EXISTS, &[&uuid]).await?.is_empty() {
            return Ok(None);
        }
        let rows = self.pool.query(&sql::REQUEUE_FAILED, &[&uuid, &millis(SystemTime::now())]).await?;
        let mut requeued = rows.iter().map(|r| requeued_from(r)).collect::<Result<Vec<_>, _>>()?;
        requeued.sort_by_key(|r| r.request);
        Ok(Some(requeued))
    }

    async fn by_idempotency_key(&self, template: &str, key: &str) -> Result<Option<DispatchId>, StoreError> {
        let rows = self.pool.query(&sql::BY_IDEMPOTENCY_KEY, &[&template, &key]).await?;
        rows.first().map(|r| r.id_at(0)).transpose()
    }

    async fn work(&self, id: DispatchId, request: u32) -> Result<Option<StoredWork>, StoreError> {
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

/// What the shared queue asks of the table: claims, leases, counts.
impl PgStore {
    /// Claims up to `limit` due jobs for `owner`, leased until `now + lease`, by due time.
    pub(crate) async fn claim(&self, owner: Uuid, lease: Duration, limit: i64) -> Result<Vec<Job>, StoreError> {
        let now = SystemTime::now();
        let rows = self.pool.query(&sql::CLAIM, &[&owner, &millis(now + lease), &millis(now), &limit]).await?;
        let mut jobs = rows
            .iter()
            .map(|r| {
                Ok(Job {
                    dispatch: r.id_at(0)?,
                    request: r.int_at(1)? as u32,
                    attempt: r.int_at(2)? as u32,
                    due: from_millis(r.int_at(3)?),
                })
            })
            .collect::<Result<Vec<Job>, StoreError>>()?;
        jobs.sort_by_key(|j| j.due);
        Ok(jobs)
    }

    /// Gives a held job back to the table as it is now (its attempt and due time).
    pub(crate) async fn release(&self, job: &Job) -> Result<(), StoreError> {
        let params: [&(dyn ToSql + Sync); 4] =
            [&job.dispatch.as_uuid(), &(job.request as i32), &(job.attempt as i32), &millis(job.due)];
        self.pool.query(&sql::RELEASE, &params).await.map(drop)
    }

    /// Extends every lease `owner` holds to `lease` from now.
    pub(crate) async fn renew(&self, owner: Uuid, lease: Duration) -> Result<(), StoreError> {
        self.pool.query(&sql::RENEW, &[&owner, &millis(SystemTime::now() + lease)]).await.map(drop)
    }

    /// Gives back every job `owner` holds, to be claimed again at once.
    pub(crate) async fn give_back(&self, owner: Uuid) -> Result<(), StoreError> {
        self.pool.query(&sql::GIVE_BACK, &[&owner]).await.map(drop)
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
