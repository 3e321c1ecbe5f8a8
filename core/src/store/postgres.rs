//! The shared store: PostgreSQL, for several `hookgate serve` instances on one queue.
//! Dispatches, requests and attempts are rows every instance reads and writes; the queue
//! ([`crate::queue::postgres::PgQueue`]) claims due requests from the same table. Every
//! write is one statement, so it is atomic without a transaction. Migrations run on start,
//! under an advisory lock so instances starting together apply them once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};
use tracing::warn;
use uuid::Uuid;

use super::{
    Filter, Inserted, Requeued, Settlement, Store, StoredWork, from_millis, millis, next_columns, result_code,
    result_from, status_from, target_from_json, target_json,
};
use crate::model::{AttemptRecord, DispatchId, StoreError, StoredDispatch, StoredRequest};
use crate::secret::Secret;

/// Connections the pool keeps (each pipelines many queries).
const CONNECTIONS: usize = 4;

/// An arbitrary, fixed key for the migrations' advisory lock.
const MIGRATION_LOCK: i64 = 0x686f_6f6b_6761_7465; // "hookgate"

const MIGRATIONS: &[&str] = &[
    // 1: the first schema. Times are Unix milliseconds, as the gateway sets them.
    "CREATE TABLE dispatches (
        id UUID PRIMARY KEY,
        template TEXT NOT NULL,
        template_version BIGINT NOT NULL,
        campaign TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        idempotency_key TEXT,
        skipped BIGINT NOT NULL,
        UNIQUE (template, idempotency_key)
    );
    CREATE INDEX dispatches_campaign ON dispatches (campaign);
    CREATE INDEX dispatches_template ON dispatches (template);
    CREATE INDEX dispatches_created ON dispatches (created_at);
    CREATE TABLE requests (
        dispatch UUID NOT NULL REFERENCES dispatches (id) ON DELETE CASCADE,
        idx INT NOT NULL,
        profiles BIGINT NOT NULL,
        target TEXT,
        body BYTEA,
        status SMALLINT NOT NULL,
        reason TEXT,
        attempt INT NOT NULL,
        due BIGINT NOT NULL,
        lease_owner UUID,
        lease_until BIGINT,
        PRIMARY KEY (dispatch, idx)
    );
    CREATE INDEX requests_due ON requests (due) WHERE status = 0;
    CREATE INDEX requests_lease ON requests (lease_owner) WHERE status = 0;
    CREATE TABLE attempts (
        id BIGSERIAL PRIMARY KEY,
        dispatch UUID NOT NULL REFERENCES dispatches (id) ON DELETE CASCADE,
        idx INT NOT NULL,
        attempt INT NOT NULL,
        at BIGINT NOT NULL,
        latency_us BIGINT NOT NULL,
        status INT,
        error TEXT,
        result SMALLINT NOT NULL
    );
    CREATE INDEX attempts_request ON attempts (dispatch, idx);",
];

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
    statements: std::sync::Mutex<HashMap<&'static str, Statement>>,
}

/// A few connections, used round-robin; a broken one is replaced on next use.
pub(crate) struct Pool {
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
    pub(crate) async fn query(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let conn = self.conn().await?;
        let cached = conn.statements.lock().unwrap_or_else(|e| e.into_inner()).get(sql).cloned();
        let statement = match cached {
            Some(s) => s,
            None => {
                let s = conn.client.prepare(sql).await.map_err(pg("prepare"))?;
                conn.statements.lock().unwrap_or_else(|e| e.into_inner()).insert(sql, s.clone());
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
            let applied: i32 = row.get(0);
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
                let txn = client.transaction().await.map_err(pg("migrations"))?;
                txn.batch_execute(sql).await.map_err(pg("migration"))?;
                let version = i as i32 + 1;
                txn.execute("INSERT INTO hookgate_migrations (version) VALUES ($1)", &[&version])
                    .await
                    .map_err(pg("migration"))?;
                txn.commit().await.map_err(pg("migration"))?;
                tracing::info!(version, "applied a PostgreSQL migration");
            }
            Ok(())
        }
        .await;
        let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
        result
    }
}

pub struct PgStore {
    pub(crate) pool: Pool,
}

impl PgStore {
    /// Connects and runs the migrations.
    pub async fn connect(url: &Secret) -> Result<Arc<Self>, StoreError> {
        let pool = Pool::new(url)?;
        pool.migrate().await?;
        Ok(Arc::new(Self { pool }))
    }
}

fn dispatch_from(row: &Row) -> StoredDispatch {
    StoredDispatch {
        id: DispatchId::from_uuid(row.get(0)),
        template: row.get(1),
        template_version: row.get::<_, i64>(2) as u64,
        campaign: row.get(3),
        created_at: from_millis(row.get(4)),
        idempotency_key: row.get(5),
        skipped: row.get::<_, i64>(6) as usize,
        requests: Vec::new(),
    }
}

/// A request (without its attempts) from columns 2 to 8 of a row: profiles, target, body,
/// status, reason, attempt, due.
fn request_from(row: &Row) -> Result<StoredRequest, StoreError> {
    Ok(StoredRequest {
        target: target_from_json(row.get(3))?,
        profiles: row.get::<_, i64>(2) as usize,
        body: row.get::<_, Option<Vec<u8>>>(4).map(Bytes::from),
        status: status_from(row.get(5), row.get(6)),
        attempt: row.get::<_, i32>(7) as u32,
        due: from_millis(row.get(8)),
        attempts: Vec::new(),
    })
}

#[async_trait]
impl Store for PgStore {
    async fn insert(&self, d: &StoredDispatch) -> Result<Inserted, StoreError> {
        let id = d.id.as_uuid();
        let indexes: Vec<i32> = (0..d.requests.len() as i32).collect();
        let profiles: Vec<i64> = d.requests.iter().map(|r| r.profiles as i64).collect();
        let targets: Vec<Option<String>> = d.requests.iter().map(|r| target_json(&r.target)).collect();
        let bodies: Vec<Option<&[u8]>> = d.requests.iter().map(|r| r.body.as_deref()).collect();
        let (version, created, skipped) = (d.template_version as i64, millis(d.created_at), d.skipped as i64);
        let rows = self
            .pool
            .query(
                "WITH d AS (
                    INSERT INTO dispatches (id, template, template_version, campaign, created_at, idempotency_key, skipped)
                    VALUES ($1, $2, $3, $4, $5, $6, $7)
                    ON CONFLICT (template, idempotency_key) DO NOTHING
                    RETURNING id
                 ), r AS (
                    INSERT INTO requests (dispatch, idx, profiles, target, body, status, attempt, due)
                    SELECT d.id, r.idx, r.profiles, r.target, r.body, 0, 1, $5
                    FROM d, unnest($8::int[], $9::bigint[], $10::text[], $11::bytea[]) AS r (idx, profiles, target, body)
                    RETURNING 1
                 )
                 SELECT EXISTS (SELECT 1 FROM d), (SELECT count(*) FROM r)",
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
        let a = s.attempt.as_ref();
        let (number, at, latency, http, error, result) = (
            a.map(|a| a.attempt as i32),
            a.map(|a| millis(a.at)),
            a.map(|a| a.latency.as_micros() as i64),
            a.and_then(|a| a.status.map(i32::from)),
            a.and_then(|a| a.error.clone()),
            a.map(|a| result_code(a.result)),
        );
        self.pool
            .query(
                "WITH u AS (
                    UPDATE requests SET status = $3::smallint, reason = $4::text, attempt = COALESCE($5::int, attempt),
                        due = COALESCE($6::bigint, due), body = CASE WHEN $3::smallint = 1 THEN NULL ELSE body END,
                        lease_owner = CASE WHEN $3::smallint = 0 THEN NULL ELSE lease_owner END
                    WHERE dispatch = $1::uuid AND idx = $2::int
                    RETURNING 1
                 )
                 INSERT INTO attempts (dispatch, idx, attempt, at, latency_us, status, error, result)
                 SELECT $1::uuid, $2::int, $7::int, $8::bigint, $9::bigint, $10::int, $11::text, $12::smallint
                 WHERE $7::int IS NOT NULL",
                &[
                    &s.dispatch.as_uuid(),
                    &(s.request as i32),
                    &status,
                    &reason,
                    &attempt,
                    &due,
                    &number,
                    &at,
                    &latency,
                    &http,
                    &error,
                    &result,
                ],
            )
            .await?;
        Ok(())
    }

    async fn requeue_failed(&self, id: DispatchId) -> Result<Option<Vec<Requeued>>, StoreError> {
        let uuid = id.as_uuid();
        let known = self.pool.query("SELECT 1 FROM dispatches WHERE id = $1", &[&uuid]).await?;
        if known.is_empty() {
            return Ok(None);
        }
        let rows = self
            .pool
            .query(
                "UPDATE requests SET status = 0, attempt = 1, due = $2, lease_owner = NULL, lease_until = NULL
                 WHERE dispatch = $1 AND status = 2 AND body IS NOT NULL
                 RETURNING idx, profiles, reason, octet_length(body)",
                &[&uuid, &millis(SystemTime::now())],
            )
            .await?;
        let mut requeued: Vec<Requeued> = rows
            .iter()
            .map(|r| Requeued {
                request: r.get::<_, i32>(0) as u32,
                profiles: r.get::<_, i64>(1) as usize,
                reason: r.get::<_, Option<String>>(2).unwrap_or_default(),
                body_bytes: r.get::<_, i32>(3).max(0) as u64,
            })
            .collect();
        requeued.sort_by_key(|r| r.request);
        Ok(Some(requeued))
    }

    async fn by_idempotency_key(&self, template: &str, key: &str) -> Result<Option<DispatchId>, StoreError> {
        let rows = self
            .pool
            .query("SELECT id FROM dispatches WHERE template = $1 AND idempotency_key = $2", &[&template, &key])
            .await?;
        Ok(rows.first().map(|r| DispatchId::from_uuid(r.get(0))))
    }

    async fn work(&self, id: DispatchId, request: u32) -> Result<Option<StoredWork>, StoreError> {
        let rows = self
            .pool
            .query(
                "SELECT d.template, d.campaign, r.profiles, r.target, r.body, r.status, r.reason, r.attempt, r.due
                 FROM requests r JOIN dispatches d ON d.id = r.dispatch WHERE r.dispatch = $1 AND r.idx = $2",
                &[&id.as_uuid(), &(request as i32)],
            )
            .await?;
        let Some(row) = rows.first() else { return Ok(None) };
        Ok(Some(StoredWork { template: row.get(0), campaign: row.get(1), request: request_from(row)? }))
    }

    async fn select(&self, filter: Filter<'_>, bodies: bool) -> Result<Vec<StoredDispatch>, StoreError> {
        const ALL: &str = "SELECT id, template, template_version, campaign, created_at, idempotency_key, skipped
                           FROM dispatches ORDER BY created_at, id";
        const BY_ID: &str = "SELECT id, template, template_version, campaign, created_at, idempotency_key, skipped
                             FROM dispatches WHERE id = $1";
        const BY_CAMPAIGN: &str =
            "SELECT id, template, template_version, campaign, created_at, idempotency_key, skipped
                                   FROM dispatches WHERE campaign = $1 ORDER BY created_at, id";
        const BY_TEMPLATE: &str =
            "SELECT id, template, template_version, campaign, created_at, idempotency_key, skipped
                                   FROM dispatches WHERE template = $1 ORDER BY created_at, id";
        let rows = match filter {
            Filter::All => self.pool.query(ALL, &[]).await?,
            Filter::Id(id) => self.pool.query(BY_ID, &[&id.as_uuid()]).await?,
            Filter::Campaign(c) => self.pool.query(BY_CAMPAIGN, &[&c]).await?,
            Filter::Template(t) => self.pool.query(BY_TEMPLATE, &[&t]).await?,
        };
        let dispatches: Vec<StoredDispatch> = rows.iter().map(dispatch_from).collect();
        self.fill(dispatches, bodies).await
    }

    async fn prune(&self, before: SystemTime) -> Result<u64, StoreError> {
        Ok(self.prune_dispatches(before).await?.len() as u64)
    }

    async fn prune_dispatches(&self, before: SystemTime) -> Result<Vec<StoredDispatch>, StoreError> {
        const FINISHED: &str = "SELECT id, template, template_version, campaign, created_at, idempotency_key, skipped
             FROM dispatches d WHERE created_at < $1
             AND NOT EXISTS (SELECT 1 FROM requests r WHERE r.dispatch = d.id AND r.status = 0)";
        let rows = self.pool.query(FINISHED, &[&millis(before)]).await?;
        let found = self.fill(rows.iter().map(dispatch_from).collect(), false).await?;
        if found.is_empty() {
            return Ok(found);
        }
        let ids: Vec<Uuid> = found.iter().map(|d| d.id.as_uuid()).collect();
        // Another instance may have pruned some meanwhile, or requeued one: only what this
        // delete removed is returned.
        let deleted: std::collections::HashSet<Uuid> = self
            .pool
            .query(
                "DELETE FROM dispatches d WHERE id = ANY ($1)
                 AND NOT EXISTS (SELECT 1 FROM requests r WHERE r.dispatch = d.id AND r.status = 0)
                 RETURNING id",
                &[&ids],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok(found.into_iter().filter(|d| deleted.contains(&d.id.as_uuid())).collect())
    }

    async fn pending_body_bytes(&self) -> Result<Option<u64>, StoreError> {
        let rows = self
            .pool
            .query("SELECT COALESCE(SUM(octet_length(body)), 0)::BIGINT FROM requests WHERE status = 0", &[])
            .await?;
        Ok(Some(rows.first().map_or(0, |r| r.get::<_, i64>(0)).max(0) as u64))
    }

    fn shared(&self) -> bool {
        true
    }
}

impl PgStore {
    /// The requests and attempts of `dispatches`, read in two queries.
    async fn fill(&self, mut dispatches: Vec<StoredDispatch>, bodies: bool) -> Result<Vec<StoredDispatch>, StoreError> {
        if dispatches.is_empty() {
            return Ok(dispatches);
        }
        let ids: Vec<Uuid> = dispatches.iter().map(|d| d.id.as_uuid()).collect();
        let position: HashMap<Uuid, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let requests = if bodies {
            "SELECT dispatch, idx, profiles, target, body, status, reason, attempt, due
             FROM requests WHERE dispatch = ANY ($1) ORDER BY dispatch, idx"
        } else {
            "SELECT dispatch, idx, profiles, target, NULL::bytea, status, reason, attempt, due
             FROM requests WHERE dispatch = ANY ($1) ORDER BY dispatch, idx"
        };
        for row in self.pool.query(requests, &[&ids]).await? {
            dispatches[position[&row.get::<_, Uuid>(0)]].requests.push(request_from(&row)?);
        }
        let attempts = "SELECT dispatch, idx, attempt, at, latency_us, status, error, result
                        FROM attempts WHERE dispatch = ANY ($1) ORDER BY id";
        for row in self.pool.query(attempts, &[&ids]).await? {
            let d = &mut dispatches[position[&row.get::<_, Uuid>(0)]];
            if let Some(req) = d.requests.get_mut(row.get::<_, i32>(1) as usize) {
                req.attempts.push(AttemptRecord {
                    attempt: row.get::<_, i32>(2) as u32,
                    at: from_millis(row.get(3)),
                    latency: Duration::from_micros(row.get::<_, i64>(4).max(0) as u64),
                    status: row.get::<_, Option<i32>>(5).map(|s| s as u16),
                    error: row.get(6),
                    result: result_from(row.get(7)),
                });
            }
        }
        Ok(dispatches)
    }
}
